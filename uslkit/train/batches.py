"""Step-indexed batches: what a training step sees is a pure function of ``(seed, stream, step)``.

Every loop in :mod:`uslkit.train` draws its batches from :class:`StepStream`: an endless sequence of seeded
epoch permutations of the pool, cut into global batches of ``batch_size``; global batch ``s`` is the
positions ``[s B, (s + 1) B)`` of that sequence. Each position also gets its own augmentation seed, and
:class:`ViewDataset` applies the (random) transform to a sample under that seed. Consequences:

- resuming at step ``s`` needs no sampler or RNG state: the stream is simply started at ``s``, so a run
  killed and resumed ends bit for bit where an uninterrupted one does (on CPU);
- ``DataLoader`` workers change nothing (each item carries its seed);
- under DDP with ``W`` processes, process ``r`` takes rows ``[r B/W, (r+1) B/W)`` of the same global batch,
  so the data seen is the same whatever ``W``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import numpy as np
import torch

from .._rng import GOLDEN, MASK64, splitmix64, splitmix64_np
from .._validate import check_positive_int, check_seed

__all__ = ["StepStream", "ViewDataset", "StepLoader", "mix_seed", "images_as_tensor"]


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 over the parts), stable across runs and platforms."""
    h = GOLDEN
    for p in parts:
        h = splitmix64((h ^ (int(p) & MASK64)) & MASK64)
    return h >> 1


class StepStream:
    """Global batches of an endless stream of seeded permutations of ``range(pool)``.

    Args:
        pool: number of samples to draw from (``>= 1``); positions map to ``indices[...]`` when ``indices``
            is given (e.g. the labelled subset), else to ``0..pool-1``.
        batch_size: GLOBAL batch size ``B`` (all processes together).
        seed: run seed; ``stream``: a small integer separating streams of one run (labelled, unlabelled).
        indices: optional int array of length ``pool`` mapping positions to sample indices.
        shuffle: ``False`` walks the pool in order (evaluation).
        rank, world_size: this process's share of each global batch (``B % world_size == 0``).
    """

    def __init__(self, pool: int, batch_size: int, *, seed: int = 0, stream: int = 0, indices=None,
                 shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.pool = check_positive_int(pool, name="pool")
        self.batch_size = check_positive_int(batch_size, name="batch_size")
        self.seed = check_seed(seed)
        self.stream = int(stream)
        self.world_size = check_positive_int(world_size, name="world_size")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        if self.batch_size % self.world_size:
            raise ValueError(f"global batch size {batch_size} is not divisible by the {world_size} processes")
        self.rank = int(rank)
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        if self.indices is not None and self.indices.shape != (self.pool,):
            raise ValueError(f"indices must have shape ({pool},), got {self.indices.shape}")
        self.shuffle = bool(shuffle)
        self._perms: OrderedDict[int, np.ndarray] = OrderedDict()

    def set_process(self, rank: int, world_size: int) -> None:
        """Take process ``rank``'s share of every global batch (called by the loop under DDP)."""
        world_size = check_positive_int(world_size, name="world_size")
        if self.batch_size % world_size:
            raise ValueError(f"global batch size {self.batch_size} is not divisible by the {world_size} processes")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.rank, self.world_size = int(rank), world_size

    def _perm(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.pool)
        p = self._perms.get(epoch)
        if p is None:
            p = np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.pool)
            self._perms[epoch] = p
            while len(self._perms) > 2:
                self._perms.popitem(last=False)
        return p

    def positions(self, step: int) -> np.ndarray:
        """Stream positions of this process's rows of global batch ``step``."""
        per = self.batch_size // self.world_size
        start = step * self.batch_size + self.rank * per
        return np.arange(start, start + per, dtype=np.int64)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """``(sample indices, augmentation seeds)`` of this process's rows of global batch ``step``."""
        pos = self.positions(step)
        epochs, offsets = np.divmod(pos, self.pool)
        out = np.empty(pos.size, dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[offsets[sel]]
        if self.indices is not None:
            out = self.indices[out]
        base = np.uint64(mix_seed(self.seed, self.stream))
        seeds = (splitmix64_np(pos.astype(np.uint64) ^ base) >> np.uint64(1)).astype(np.int64)
        return out, seeds

    def epoch_of(self, step: int) -> float:
        """Passes over the pool completed after ``step`` global batches."""
        return step * self.batch_size / self.pool


class ViewDataset(torch.utils.data.Dataset):
    """Item ``(i, seed)`` -> ``(transform(image_i) under seed, label_i, i, seed)``.

    ``transform=None`` returns the uint8 image itself: the batched path, where the learner augments whole
    batches on the training device from the per-sample seeds (:class:`uslkit.train.augment.BatchAugment`).

    Args:
        images: ``uint8`` tensor ``(N, C, H, W)`` (see :func:`images_as_tensor`), or an
            :class:`uslkit.data.ImageDataset` read image by image (folders of files).
        labels: int64 ``(N,)`` (``-1`` = unlabelled), or ``None`` for all ``-1``.
        transform: callable on a uint8 ``(C, H, W)`` tensor using torch's global RNG; it may return a tuple
            of views (:class:`uslkit.train.augment.MultiViews`); ``None``: no per-sample transform.
    """

    def __init__(self, images, labels, transform: Callable[[torch.Tensor], Any] | None):
        self.images = images
        n = len(images)
        self.labels = np.full(n, -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        if self.labels.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {self.labels.shape}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> torch.Tensor:
        if isinstance(self.images, torch.Tensor):
            return self.images[i]
        from .augment import to_uint8_tensor

        return to_uint8_tensor(self.images.get_image(int(i)))

    def __getitem__(self, key):
        i, seed = key
        img = self.image(int(i))
        if self.transform is not None:
            from .augment import seeded_call

            img = seeded_call(self.transform, img, int(seed))
        return img, int(self.labels[i]), int(i), int(seed)


class _StepKeys(torch.utils.data.Sampler):
    def __init__(self, stream: StepStream, start: int, stop: int):
        self.stream, self.start, self.stop = stream, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self):
        for step in range(self.start, self.stop):
            idx, seeds = self.stream.batch(step)
            yield list(zip(idx.tolist(), seeds.tolist()))


class StepLoader:
    """Batches of ``dataset`` for steps ``start..stop-1`` of ``stream`` through a ``DataLoader``.

    ``iterate(start, stop)`` yields collated ``(views, labels, indices, seeds)`` batches in step order. A dataset
    of in-memory images without a per-sample transform skips the ``DataLoader``: the batch is one gather.
    """

    def __init__(self, dataset: ViewDataset, stream: StepStream, *, num_workers: int = 0, pin_memory: bool = False):
        self.dataset, self.stream = dataset, stream
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)

    def iterate(self, start: int, stop: int):
        ds = self.dataset
        if ds.transform is None and isinstance(ds.images, torch.Tensor):
            labels = torch.from_numpy(ds.labels)
            for step in range(start, stop):
                idx, seeds = self.stream.batch(step)
                t = torch.from_numpy(idx)
                yield ds.images[t], labels[t], t, torch.from_numpy(seeds)
            return
        loader = torch.utils.data.DataLoader(
            self.dataset, batch_sampler=_StepKeys(self.stream, start, stop), num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=False,
        )
        yield from loader


def images_as_tensor(dataset) -> torch.Tensor | None:
    """The images of an array :class:`uslkit.data.ImageDataset` as a uint8 ``(N, C, H, W)`` tensor (shared,
    no copy for grey images), or ``None`` for file-backed datasets (read on demand by :class:`ViewDataset`)."""
    images = getattr(dataset, "images", None)
    if images is None:
        return None
    t = torch.from_numpy(np.ascontiguousarray(images))
    return t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2).contiguous()


def image_channels(dataset) -> int:
    """Input channels a network needs for ``dataset``: 1 for grey arrays ``(N, H, W)``, else 3 (colour arrays,
    and image folders, which are read as RGB)."""
    images = getattr(dataset, "images", None)
    return 1 if images is not None and images.ndim == 3 else 3


_PER_SAMPLE = {"test": "test_transform", "weak": "weak_transform", "strong": "strong_transform",
               "simclr": "simclr_transform", "crop": "crop_transform"}


def _given(**options) -> dict[str, Any]:
    """The options that are not ``None`` (the rest keep the policy's defaults)."""
    return {k: v for k, v in options.items() if v is not None}


class Views:
    """How a learner turns a stream's batch into its augmented views.

    Small in-memory images (kinds ``grey28``/``rgb32``) are gathered as uint8 batches and augmented as whole
    batches on the training device (:class:`uslkit.train.augment.BatchAugment`, view ``j`` of sample ``i``
    seeded by ``(seed_i, j)``); anything else (image folders, ImageNet-size images) goes through the per-sample
    transforms in the ``DataLoader`` (:class:`ViewDataset`). Either way a view depends only on the sample's
    stream seed.

    Args:
        dataset: :class:`uslkit.data.ImageDataset`.
        policies: one policy per view: ``"test"``, ``"weak"``, ``"strong"``, ``"simclr"``, ``"crop"`` (the simclr
            crop and flip only).
        labels: int64 ``(N,)`` labels the batches carry (``None``: all ``-1``).
        batched: force the batched (``True``) or per-sample (``False``) path; ``None`` = batched when possible.
        crop_scale: area range of the ``"simclr"`` and ``"crop"`` crops (``None``: the kind's default), see
            :func:`uslkit.train.augment.simclr_transform`.
        jitter_strength: colour-jitter strength ``s`` of the ``"simclr"`` views (``None``: 0.5), see
            :func:`uslkit.train.augment.simclr_transform`.
        cutout_side: ``"random"`` or ``"fixed"`` Cutout side of the ``"strong"`` views (``None``: random),
            see :func:`uslkit.train.augment.strong_transform`.
    """

    def __init__(self, dataset, policies: tuple[str, ...], *, labels=None, batched: bool | None = None,
                 crop_scale: tuple[float, float] | None = None, jitter_strength: float | None = None,
                 cutout_side: str | None = None):
        from . import augment

        if not policies or any(p not in _PER_SAMPLE for p in policies):
            raise ValueError(f"policies must be a non-empty tuple of {sorted(_PER_SAMPLE)}, got {policies!r}")
        self.kind = augment.image_kind(dataset)
        images = images_as_tensor(dataset)
        possible = images is not None and self.kind in ("grey28", "rgb32")
        if batched and not possible:
            raise ValueError(f"batched augmentation needs small in-memory images; {getattr(dataset, 'name', '?')} "
                             f"is of kind {self.kind!r}")
        self.batched = possible if batched is None else bool(batched)
        self.policies = tuple(policies)
        opts = {"simclr": _given(crop_scale=crop_scale, jitter_strength=jitter_strength),
                "crop": _given(crop_scale=crop_scale), "strong": _given(cutout_side=cutout_side)}
        augment.simclr_policy(self.kind, **opts["simclr"])  # validates the options whatever the policies
        augment.StrongPolicy(**opts["strong"])
        if self.batched:
            self.augs = [augment.BatchAugment(self.kind, p, **opts.get(p, {})) for p in policies]
            transform = None
        else:
            tfs = [getattr(augment, _PER_SAMPLE[p])(self.kind, **opts.get(p, {})) for p in policies]
            transform = tfs[0] if len(tfs) == 1 else augment.MultiViews(*tfs)
        self.dataset = ViewDataset(images if images is not None else dataset, labels, transform)

    def __call__(self, batch) -> list[torch.Tensor]:
        """``[view_0, view_1, ...]`` float32 ``(B, C, H, W)`` of a ``(images, labels, indices, seeds)`` batch."""
        x, _, _, seeds = batch
        if not self.batched:
            return list(x) if isinstance(x, (tuple, list)) else [x]
        s = np.asarray(seeds.cpu() if torch.is_tensor(seeds) else seeds, dtype=np.int64).astype(np.uint64)
        out = []
        for j, aug in enumerate(self.augs):
            sj = s if j == 0 else (splitmix64_np(s ^ np.uint64(mix_seed(j))) >> np.uint64(1))
            out.append(aug(x, sj.astype(np.int64)))
        return out
