"""Image datasets with stable sample ids: one loader for every dataset the kit supports.

Every stage after this one refers to a sample by its **id**, never by a row number that could shift: for
the array datasets the id is the sample's index in the official split file (``int64``), for
``imagefolder`` it is the path ``"wnid/filename"`` relative to the split folder (what the USL ImageNet
CSVs list). :meth:`ImageDataset.subset` keeps ids, labels and images aligned, so a selection made on a
subset can always be mapped back.

The official on-disk formats are parsed here with numpy (idx, CIFAR pickles, STL-10 binaries, SVHN
``.mat``, MedMNIST ``.npz``, folders of images); torchvision is used only to *download* (``download=True``),
never to parse. A file that is truncated or inconsistent raises :class:`CorruptDatasetError` naming it;
nothing is half-loaded. A dataset that cannot be found raises :class:`DatasetNotFoundError` whose message
lists the places searched and how to get the data.

Example:
    >>> ds = load_dataset("digits")
    >>> ds.images.shape, ds.labels[:3], ds.ids[:3]
    ((1797, 8, 8), array([0, 1, 2]), array([0, 1, 2]))

See ``data/README.md`` for the folder layouts accepted for each dataset.
"""

from __future__ import annotations

import os
from pathlib import Path

from .dataset import CorruptDatasetError, DatasetNotFoundError, ImageDataset
from .sources import _LOADERS, IMG_EXTENSIONS

__all__ = [
    "ImageDataset",
    "load_dataset",
    "available_datasets",
    "pool_split",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "IMG_EXTENSIONS",
]

_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "stl10", "svhn", "bloodmnist",
             "imagefolder")
_ALIASES = {"fashionmnist": "fashion_mnist", "cifar_10": "cifar10", "cifar_100": "cifar100",
            "stl_10": "stl10", "image_folder": "imagefolder", "blood_mnist": "bloodmnist"}
_SPLITS = {
    "digits": ("train", "test", "fit"),
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    "svhn": ("train", "test", "extra"),
    "bloodmnist": ("train", "val", "test"),
    "imagefolder": None,  # any sub-folder name
}


# ----------------------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------------------
def available_datasets() -> list[str]:
    """Canonical names :func:`load_dataset` accepts (whether or not the files are present)."""
    return list(_DATASETS)


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike = "data",
                 download: bool = False) -> ImageDataset:
    """Load one split of a dataset as an :class:`ImageDataset` with stable sample ids.

    Args:
        name: one of :func:`available_datasets` (``"fashion-mnist"``, ``"CIFAR10"`` etc. are accepted).
        split: the split; per dataset:

            - ``digits`` (no official split exists): ``"train"`` = all 1797 images; ``"test"`` (355) = every
              5th sample of each class in sklearn's order (positions 4, 9, 14, ... within the class), so it
              is *inside* ``train``; ``"fit"`` (1442) = ``train`` minus ``test``. Use ``fit``/``test`` when a
              disjoint evaluation matters. ids are the row in ``sklearn.datasets.load_digits()`` for all.
            - ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``: ``"train"``, ``"test"``.
            - ``stl10``: ``"train"``, ``"test"``, ``"unlabeled"`` (labels ``-1``), ``"train+unlabeled"``
              (torchvision's order: the 5000 train images, ids 0..4999, then the 100000 unlabelled ones,
              ids 5000..104999).
            - ``svhn``: ``"train"``, ``"test"``, ``"extra"``.
            - ``bloodmnist``: ``"train"``, ``"val"``, ``"test"``.
            - ``imagefolder``: ``root/<split>/`` if that folder exists; for ``"train"`` also ``root``
              itself when it holds class folders directly.
        root: data folder (default ``data``, relative to the working directory); for ``imagefolder`` the
            image folder itself; ignored by ``digits``. See ``data/README.md`` for the layouts searched.
        download: when the files are not found, download them with torchvision (``medmnist`` for
            ``bloodmnist``) into ``root`` and then parse them. Files already present are never re-fetched.

    Returns:
        The split, images ``uint8`` ``(N,H,W)`` or ``(N,H,W,3)``, labels ``int64 (N,)``.

    Raises:
        ValueError: unknown ``name`` or ``split``.
        DatasetNotFoundError: the files are missing (and ``download`` is off or failed); the message lists
            the folders searched and how to get the data.
        CorruptDatasetError: a file is truncated or inconsistent; the message names it.
    """
    key = _canonical_name(name)
    _check_split(key, split)
    if not isinstance(download, bool):
        raise ValueError(f"download must be True or False, got {download!r}")
    return _LOADERS[key](split, root=Path(root).expanduser(), download=download)


def pool_split(name: str) -> str:
    """The split to select from and train on: ``"fit"`` for ``digits`` (its ``"test"`` lies inside
    ``"train"``), ``"train"`` for every other dataset."""
    return "fit" if _canonical_name(name) == "digits" else "train"


def _canonical_name(name: str) -> str:
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(_DATASETS)}")
    return key


def _check_split(key: str, split: str) -> None:
    valid = _SPLITS[key]
    if valid is None:
        if not isinstance(split, str) or not split or split in (".", "..") or "/" in split or "\\" in split:
            raise ValueError(f"imagefolder split must be a folder name such as 'train' or 'val', got {split!r}")
    elif split not in valid:
        raise ValueError(f"unknown split {split!r} for {key}; valid splits: {', '.join(valid)}")
