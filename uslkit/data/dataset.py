"""The dataset container: :class:`ImageDataset` (one split, a stable id per sample) and the two errors."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Dataset as _TorchDataset

from .._validate import check_indices

__all__ = ["ImageDataset", "DatasetNotFoundError", "CorruptDatasetError"]


# ----------------------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------------------
class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not where they were looked for; the message says how to get them."""


class CorruptDatasetError(ValueError):
    """A dataset file exists but is truncated or inconsistent; the message names the file and the fault."""


# ----------------------------------------------------------------------------------------------------------
# the dataset container
# ----------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ImageDataset:
    """One split of an image dataset, with a stable id per sample.

    Attributes:
        name: canonical dataset name, e.g. ``"fashion_mnist"``.
        split: ``"train"``, ``"test"``, ``"unlabeled"``, ...
        images: ``uint8`` pixels, ``(N, H, W)`` grey or ``(N, H, W, 3)`` colour (HWC); ``None`` for
            ``imagefolder`` (files are read on demand from :attr:`paths`).
        labels: ``int64 (N,)`` class indices into :attr:`class_names`; ``-1`` where unlabelled.
        class_names: one name per class; ``num_classes == len(class_names)``.
        ids: ``(N,)`` stable sample ids: ``int64`` index in the official split for array datasets, ``str``
            ``"wnid/filename"`` for ``imagefolder``.
        paths: ``imagefolder`` only: absolute file paths, same order as :attr:`ids`.
        root: the folder (or file) the data was loaded from.
    """

    name: str
    split: str
    images: np.ndarray | None
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray
    paths: list[str] | None = None
    root: str | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.ids = np.asarray(self.ids)
        n = len(self.labels)
        if self.labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {self.labels.shape}")
        if len(self.ids) != n:
            raise ValueError(f"{len(self.ids)} ids for {n} labels")
        if (self.images is None) == (self.paths is None):
            raise ValueError("exactly one of images (array datasets) and paths (imagefolder) must be given")
        if self.images is not None:
            ok_shape = self.images.ndim == 3 or (self.images.ndim == 4 and self.images.shape[-1] == 3)
            if self.images.dtype != np.uint8 or not ok_shape or self.images.shape[0] != n:
                raise ValueError(f"images must be uint8 (N,H,W) or (N,H,W,3) with N={n}, got "
                                 f"{self.images.dtype} {self.images.shape}")
        elif len(self.paths) != n:
            raise ValueError(f"{len(self.paths)} paths for {n} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        pix = "files" if self.images is None else f"images={tuple(self.images.shape)}"
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"num_classes={self.num_classes}, {pix}, root={self.root!r})")

    @property
    def num_classes(self) -> int:
        """Number of classes, ``len(class_names)`` (unlabelled samples do not add one)."""
        return len(self.class_names)

    def get_image(self, i: int):
        """Sample ``i`` as a ``PIL.Image.Image``: mode ``"L"`` for grey arrays, ``"RGB"`` otherwise.

        Files are opened and converted to RGB as torchvision's default ``ImageFolder`` loader does.
        """
        from PIL import Image

        n = len(self)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name}/{self.split} with {n} samples")
        if self.images is not None:
            return Image.fromarray(np.ascontiguousarray(self.images[i]))
        with open(self.paths[i], "rb") as f:
            img = Image.open(f)
            return img.convert("RGB")

    def subset(self, indices) -> ImageDataset:
        """The samples at ``indices`` (in that order), with ids, labels, images and paths kept aligned.

        Args:
            indices: unique integer positions in ``[0, len(self))``, or a boolean mask of length ``N``.

        Returns:
            A new :class:`ImageDataset`; its ``ids`` are the original ids, not ``0..k-1``.
        """
        mask = np.asarray(indices)
        if mask.dtype == bool:
            if mask.shape != (len(self),):
                raise ValueError(f"boolean mask must have shape ({len(self)},), got {mask.shape}")
            idx = np.flatnonzero(mask)
        else:
            idx = check_indices(indices, len(self), name="indices")
        return ImageDataset(
            name=self.name,
            split=self.split,
            images=None if self.images is None else self.images[idx],
            labels=self.labels[idx],
            class_names=list(self.class_names),
            ids=self.ids[idx],
            paths=None if self.paths is None else [self.paths[j] for j in idx],
            root=self.root,
        )

    def to_torch(self, transform: Callable | None = None):
        """A ``torch.utils.data.Dataset`` whose item ``i`` is ``(transform(image), label, i)``.

        ``image`` is :meth:`get_image` ``(i)`` (a PIL image, as torchvision datasets give); with
        ``transform=None`` the PIL image itself is returned. ``label`` is a Python ``int`` (``-1`` for
        unlabelled samples), ``i`` the position in this dataset (``self.ids[i]`` is its stable id).
        """
        return _TorchView(self, transform)


class _TorchView(_TorchDataset):
    """Picklable torch view of an :class:`ImageDataset` (works with ``DataLoader(num_workers>0)``)."""

    def __init__(self, dataset: ImageDataset, transform: Callable | None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[Any, int, int]:
        img = self.dataset.get_image(i)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.dataset.labels[i]), int(i)
