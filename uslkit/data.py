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

import gzip
import operator
import os
import pickle
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset as _TorchDataset

from ._validate import check_indices

__all__ = [
    "ImageDataset",
    "load_dataset",
    "available_datasets",
    "DatasetNotFoundError",
    "CorruptDatasetError",
    "IMG_EXTENSIONS",
]

# Where Debian's ``dataset-fashion-mnist`` package puts the four idx.gz files (searched after ``root``).
_FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# The ``medmnist`` package's default download folder (searched after ``root``).
_MEDMNIST_HOME = Path("~/.medmnist")

# File extensions torchvision's ImageFolder accepts (case-insensitive); kept identical so indices match.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

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

_FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                          "Bag", "Ankle boot"]
_DIGIT_CLASSES = [str(d) for d in range(10)]
_STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_BLOODMNIST_CLASSES = ["basophil", "eosinophil", "erythroblast",
                       "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                       "monocyte", "neutrophil", "platelet"]

_CIFAR_PIXELS = 3 * 32 * 32
_STL_PIXELS = 3 * 96 * 96
_IDX_UBYTE = 0x08


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


# ----------------------------------------------------------------------------------------------------------
# locating files
# ----------------------------------------------------------------------------------------------------------
def _find(dirs: Sequence[Path], groups: Sequence[Sequence[str]]) -> tuple[Path, list[Path]] | None:
    """First folder in ``dirs`` holding one file of every group (alternatives tried in order)."""
    for d in dirs:
        found = []
        for alternatives in groups:
            hit = next((d / a for a in alternatives if (d / a).is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return d, found
    return None


def _not_found(dataset: str, split: str, dirs: Sequence[Path], groups: Sequence[Sequence[str]],
               howto: str) -> DatasetNotFoundError:
    """A :class:`DatasetNotFoundError` listing each folder searched, what it lacks, and ``howto``."""
    lines = [f"{dataset} ({split} split) not found. Looked for {_describe(groups)} in:"]
    for d in dirs:
        if not d.is_dir():
            lines.append(f"  {d}  (no such folder)")
            continue
        missing = [" or ".join(g) for g in groups if not any((d / a).is_file() for a in g)]
        lines.append(f"  {d}  (missing: {', '.join(missing)})")
    lines.append(f"To get it: {howto}")
    return DatasetNotFoundError("\n".join(lines))


def _describe(groups: Sequence[Sequence[str]]) -> str:
    """``[("a", "a.gz"), ("b",)]`` -> ``"a[.gz], b"``."""
    return ", ".join(f"{g[0]}[.gz]" if tuple(g) == (g[0], g[0] + ".gz") else " or ".join(g) for g in groups)


def _download_with(dataset: str, howto: str, fn: Callable[[], Any]) -> None:
    """Run a torchvision / medmnist download, turning its failure into a :class:`DatasetNotFoundError`."""
    try:
        fn()
    except Exception as e:  # network errors, md5 mismatches, ...: all mean "not available"
        raise DatasetNotFoundError(
            f"downloading {dataset} failed ({type(e).__name__}: {e}).\nTo get it: {howto}"
        ) from e


# ----------------------------------------------------------------------------------------------------------
# format readers (private; each raises CorruptDatasetError naming the file)
# ----------------------------------------------------------------------------------------------------------
def _read_bytes(path: Path) -> bytes:
    """File contents, gunzipped when the name ends in ``.gz`` (truncated or damaged gzip is corrupt)."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise CorruptDatasetError(f"{path}: damaged or truncated gzip file ({e})") from e


def _read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """Parse an idx file (LeCun's MNIST format, big-endian header) of unsigned bytes.

    Layout: 2 zero bytes, type code ``0x08`` (ubyte), number of dims, ``ndim`` big-endian ``uint32`` sizes,
    then the data in C order. The data length must equal the product of the sizes exactly.

    Returns:
        ``uint8`` array of the shape given in the header, e.g. ``(60000, 28, 28)`` or ``(60000,)``.
    """
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise CorruptDatasetError(f"{path}: not an idx file (bad magic number {raw[:4].hex() or 'empty'})")
    if raw[2] != _IDX_UBYTE or raw[3] != ndim:
        raise CorruptDatasetError(f"{path}: idx header says type 0x{raw[2]:02x} with {raw[3]} dims, expected "
                                  f"unsigned bytes (0x08) with {ndim} dims")
    if len(raw) < header:
        raise CorruptDatasetError(f"{path}: truncated idx header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64))
    if len(raw) - header != expected:
        raise CorruptDatasetError(f"{path}: idx header gives shape {dims} = {expected} bytes of data but the "
                                  f"file holds {len(raw) - header} (truncated or wrong file)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler for CIFAR's python pickles that resolves numpy array classes only (no arbitrary code)."""

    def find_class(self, module: str, name: str):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            return getattr(_multiarray(), name)
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            import codecs

            return codecs.encode
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a dataset pickle")


def _multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    return multiarray


def _read_pickle(path: Path) -> dict:
    """A CIFAR python pickle as a dict with ``str`` keys (py2 pickles are decoded as latin-1)."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except Exception as e:  # any parse failure of these bytes means a damaged file
        raise CorruptDatasetError(f"{path}: cannot unpickle ({type(e).__name__}: {e}); truncated or not a "
                                  "CIFAR python pickle") from e
    if not isinstance(obj, dict):
        raise CorruptDatasetError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _require_keys(path: Path, d: dict, keys: Sequence[str]) -> None:
    missing = [k for k in keys if k not in d]
    if missing:
        raise CorruptDatasetError(f"{path}: missing key(s) {missing}; has {sorted(map(str, d))}")


def _read_cifar_batch(path: Path, *, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR batch pickle -> ``(images uint8 (n,32,32,3), labels int64 (n,))``.

    Each ``data`` row is 3072 bytes: the 1024 red values of the 32x32 image in row-major order, then green,
    then blue; it is reshaped to ``(3,32,32)`` and transposed to HWC as torchvision does.
    """
    d = _read_pickle(path)
    _require_keys(path, d, ["data", label_key])
    data = np.asarray(d["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _CIFAR_PIXELS:
        raise CorruptDatasetError(f"{path}: 'data' must be uint8 of shape (n, {_CIFAR_PIXELS}), got "
                                  f"{data.dtype} {data.shape}")
    labels = _check_labels(path, d[label_key], n=data.shape[0], low=0, high=num_classes - 1)
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def _check_labels(path: Path, labels, *, n: int, low: int, high: int) -> np.ndarray:
    """Labels as ``int64 (n,)``; their count must be ``n`` and every value in ``[low, high]``."""
    try:
        arr = np.asarray(labels).astype(np.int64, casting="safe").ravel()
    except (TypeError, ValueError) as e:
        raise CorruptDatasetError(f"{path}: labels are not integers ({e})") from e
    if arr.shape[0] != n:
        raise CorruptDatasetError(f"{path}: {arr.shape[0]} labels for {n} images")
    bad = (arr < low) | (arr > high)
    if bad.any():
        raise CorruptDatasetError(f"{path}: {int(bad.sum())} labels outside [{low}, {high}], e.g. "
                                  f"{int(arr[bad][0])} at index {int(np.flatnonzero(bad)[0])}")
    return arr


def _stl_count(path: Path) -> int:
    """Number of images in an STL-10 ``*_X.bin`` (its size must be a positive multiple of 3*96*96)."""
    size = path.stat().st_size
    if size == 0 or size % _STL_PIXELS:
        raise CorruptDatasetError(f"{path}: size {size} bytes is not a positive multiple of 3*96*96 = "
                                  f"{_STL_PIXELS} (truncated?)")
    return size // _STL_PIXELS


def _read_stl_images(path: Path, out: np.ndarray) -> None:
    """Fill ``out`` (``uint8 (n, 96, 96, 3)``) from an STL-10 ``*_X.bin`` of ``n`` images.

    Each image is 3*96*96 bytes, channel by channel, each channel stored column-major (MATLAB order); the
    result equals torchvision's ``STL10.data`` transposed to HWC. Converted in chunks from a memory map
    into the preallocated output, so the 2.7 GB unlabelled file costs its own size in memory, not twice.
    """
    n = out.shape[0]
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(n, 3, 96, 96))
    chunk = 4096
    for s in range(0, n, chunk):
        out[s : s + chunk] = raw[s : s + chunk].transpose(0, 3, 2, 1)  # (c, col, row) -> (row, col, c)
    del raw


def _read_stl_labels(path: Path, *, n: int) -> np.ndarray:
    """An STL-10 ``*_y.bin`` (one byte per image, classes 1..10) -> ``int64 (n,)`` in 0..9."""
    return _check_labels(path, np.fromfile(path, dtype=np.uint8), n=n, low=1, high=10) - 1


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """An SVHN ``*_32x32.mat`` -> ``(images uint8 (n,32,32,3), labels int64 (n,))``.

    ``X`` is stored ``(32, 32, 3, n)``; ``y`` is ``(n, 1)`` with digits 1..10 where 10 means the digit 0;
    as in torchvision, label 10 becomes 0.
    """
    import scipy.io

    try:
        mat = scipy.io.loadmat(path, variable_names=["X", "y"])
    except Exception as e:  # scipy raises many types for damaged files
        raise CorruptDatasetError(f"{path}: cannot read MATLAB file ({type(e).__name__}: {e})") from e
    _require_keys(path, mat, ["X", "y"])
    x = mat["X"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise CorruptDatasetError(f"{path}: 'X' must be uint8 (32, 32, 3, n), got {x.dtype} {x.shape}")
    labels = _check_labels(path, mat["y"], n=x.shape[3], low=1, high=10)
    labels[labels == 10] = 0
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), labels


def _read_medmnist_npz(path: Path, split: str, *, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A MedMNIST ``.npz`` -> ``(images uint8 (n,28,28[,3]), labels int64 (n,))`` of one split."""
    import zipfile

    keys = [f"{split}_images", f"{split}_labels"]
    try:
        with np.load(path, allow_pickle=False) as z:
            _require_keys(path, dict.fromkeys(z.files), keys)
            images, labels = z[keys[0]], z[keys[1]]
    except CorruptDatasetError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, zlib.error) as e:
        raise CorruptDatasetError(f"{path}: cannot read npz ({type(e).__name__}: {e})") from e
    ok = images.dtype == np.uint8 and (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3))
    if not ok:
        raise CorruptDatasetError(f"{path}: '{keys[0]}' must be uint8 (n,H,W) or (n,H,W,3), got "
                                  f"{images.dtype} {images.shape}")
    return images, _check_labels(path, labels, n=images.shape[0], low=0, high=num_classes - 1)


def _array_dataset(name: str, split: str, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                   root: Path, ids: np.ndarray | None = None) -> ImageDataset:
    if ids is None:
        ids = np.arange(len(labels), dtype=np.int64)
    return ImageDataset(name=name, split=split, images=images, labels=labels.astype(np.int64, copy=False),
                        class_names=list(class_names), ids=ids, root=str(root))


# ----------------------------------------------------------------------------------------------------------
# per-dataset loaders: locate -> (download) -> parse
# ----------------------------------------------------------------------------------------------------------
def _load_digits(split: str, *, root: Path, download: bool) -> ImageDataset:
    """sklearn's bundled 8x8 digits, pixel values 0..16 scaled to 0..255 (``rint(v * 255 / 16)``)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    ids = np.arange(len(labels), dtype=np.int64)
    if split != "train":
        test = np.zeros(len(labels), dtype=bool)
        for c in range(10):
            test[np.flatnonzero(labels == c)[4::5]] = True
        ids = ids[test] if split == "test" else ids[~test]
    return _array_dataset("digits", split, images[ids], labels[ids], _DIGIT_CLASSES,
                          Path("sklearn.datasets.load_digits"), ids)


def _mnist_like(name: str, split: str, *, root: Path, download: bool) -> ImageDataset:
    fashion = name == "fashion_mnist"
    tv_dir = root / ("FashionMNIST" if fashion else "MNIST") / "raw"
    dirs = [tv_dir, root / name] + ([root / "fashion-mnist", _FASHION_MNIST_SYSTEM_DIR] if fashion else [])
    prefix = "train" if split == "train" else "t10k"
    groups = [(f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"),
              (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz")]
    if fashion:
        howto = ("`apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu; installs the four idx.gz files in "
                 f"{_FASHION_MNIST_SYSTEM_DIR}), or load_dataset('fashion_mnist', root={str(root)!r}, "
                 f"download=True) (torchvision, into {tv_dir}), or put the four idx.gz files from "
                 f"https://github.com/zalandoresearch/fashion-mnist in {root / name}")
    else:
        howto = (f"load_dataset('mnist', root={str(root)!r}, download=True) (torchvision, into {tv_dir}), or put "
                 f"the four idx.gz files from https://yann.lecun.com/exdb/mnist/ in {root / name}")
    hit = _find(dirs, groups)
    if hit is None and download:
        import torchvision.datasets as tvd

        cls = tvd.FashionMNIST if fashion else tvd.MNIST
        _download_with(name, howto, lambda: cls(str(root), train=False, download=True))
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found(name, split, dirs, groups, howto)
    folder, (img_path, lab_path) = hit
    images = _read_idx(img_path, ndim=3)
    labels = _check_labels(lab_path, _read_idx(lab_path, ndim=1), n=images.shape[0], low=0, high=9)
    classes = _FASHION_MNIST_CLASSES if fashion else _DIGIT_CLASSES
    return _array_dataset(name, split, images, labels, classes, folder)


def _load_mnist(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _mnist_like("mnist", split, root=root, download=download)


def _load_fashion_mnist(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _mnist_like("fashion_mnist", split, root=root, download=download)


def _cifar(name: str, split: str, *, root: Path, download: bool) -> ImageDataset:
    ten = name == "cifar10"
    folder_name = "cifar-10-batches-py" if ten else "cifar-100-python"
    dirs = [root / folder_name, root / name / folder_name, root / name]
    if ten:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta, meta_key, label_key, n_classes = "batches.meta", "label_names", "labels", 10
    else:
        files = [split]
        meta, meta_key, label_key, n_classes = "meta", "fine_label_names", "fine_labels", 100
    groups = [(f,) for f in files + [meta]]
    archive = "cifar-10-python.tar.gz" if ten else "cifar-100-python.tar.gz"
    howto = (f"load_dataset({name!r}, root={str(root)!r}, download=True) (torchvision, into {dirs[0]}), or "
             f"download https://www.cs.toronto.edu/~kriz/{archive} (see https://www.cs.toronto.edu/~kriz/cifar.html) "
             f"and extract it in {root}")
    hit = _find(dirs, groups)
    if hit is None and download:
        import torchvision.datasets as tvd

        cls = tvd.CIFAR10 if ten else tvd.CIFAR100
        _download_with(name, howto, lambda: cls(str(root), train=False, download=True))
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found(name, split, dirs, groups, howto)
    folder, paths = hit
    meta_d = _read_pickle(paths[-1])
    _require_keys(paths[-1], meta_d, [meta_key])
    class_names = [str(c) for c in meta_d[meta_key]]
    if len(class_names) != n_classes:
        raise CorruptDatasetError(f"{paths[-1]}: {meta_key} has {len(class_names)} names, expected {n_classes}")
    parts = [_read_cifar_batch(p, label_key=label_key, num_classes=n_classes) for p in paths[:-1]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    return _array_dataset(name, split, images, labels, class_names, folder)


def _load_cifar10(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _cifar("cifar10", split, root=root, download=download)


def _load_cifar100(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _cifar("cifar100", split, root=root, download=download)


def _load_stl10(split: str, *, root: Path, download: bool) -> ImageDataset:
    dirs = [root / "stl10_binary", root / "stl10" / "stl10_binary", root / "stl10"]
    parts = {"train": [("train_X.bin", "train_y.bin")], "test": [("test_X.bin", "test_y.bin")],
             "unlabeled": [("unlabeled_X.bin", None)],
             "train+unlabeled": [("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", None)]}[split]
    groups = [(f,) for pair in parts for f in pair if f is not None]
    howto = (f"load_dataset('stl10', root={str(root)!r}, download=True) (torchvision, into {dirs[0]}; 2.6 GB), "
             "or download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz "
             f"(see https://cs.stanford.edu/~acoates/stl10/) and extract it in {root}")
    hit = _find(dirs, groups)
    if hit is None and download:
        import torchvision.datasets as tvd

        _download_with("stl10", howto, lambda: tvd.STL10(str(root), split="test", download=True))
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found("stl10", split, dirs, groups, howto)
    folder = hit[0]
    counts = [_stl_count(folder / x_name) for x_name, _ in parts]
    labels = [np.full(n, -1, dtype=np.int64) if y_name is None else _read_stl_labels(folder / y_name, n=n)
              for (_, y_name), n in zip(parts, counts)]
    images = np.empty((sum(counts), 96, 96, 3), dtype=np.uint8)  # filled in place: no concatenate copy
    for (x_name, _), start, n in zip(parts, np.cumsum([0] + counts), counts):
        _read_stl_images(folder / x_name, images[start : start + n])
    class_file = folder / "class_names.txt"
    class_names = _STL10_CLASSES
    if class_file.is_file():
        class_names = [s for s in class_file.read_text().splitlines() if s.strip()]
        if len(class_names) != 10:
            raise CorruptDatasetError(f"{class_file}: {len(class_names)} class names, expected 10")
    return _array_dataset("stl10", split, images, np.concatenate(labels), class_names, folder)


def _load_svhn(split: str, *, root: Path, download: bool) -> ImageDataset:
    dirs = [root / "svhn", root / "SVHN", root]
    groups = [(f"{split}_32x32.mat",)]
    howto = (f"load_dataset('svhn', {split!r}, root={str(root)!r}, download=True) (torchvision, into "
             f"{dirs[0]}), or download http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat "
             f"(see http://ufldl.stanford.edu/housenumbers/) into {dirs[0]}")
    hit = _find(dirs, groups)
    if hit is None and download:
        import torchvision.datasets as tvd

        _download_with("svhn", howto, lambda: tvd.SVHN(str(dirs[0]), split=split, download=True))
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found("svhn", split, dirs, groups, howto)
    folder, (path,) = hit
    images, labels = _read_svhn_mat(path)
    return _array_dataset("svhn", split, images, labels, _DIGIT_CLASSES, folder)


def _load_bloodmnist(split: str, *, root: Path, download: bool) -> ImageDataset:
    dirs = [root, root / "bloodmnist", root / "medmnist", _MEDMNIST_HOME.expanduser()]
    groups = [("bloodmnist.npz",)]
    howto = (f"pip install 'uslkit[medmnist]' (or pip install medmnist), then load_dataset('bloodmnist', "
             f"root={str(root)!r}, download=True); or download bloodmnist.npz (28x28) from https://medmnist.com/ "
             f"(Zenodo) into {root}")
    hit = _find(dirs, groups)
    if hit is None and download:
        try:
            import medmnist
        except ImportError as e:
            raise DatasetNotFoundError(
                "bloodmnist.npz not found and downloading it needs the optional medmnist package, which is "
                f"not installed ({e}).\nTo get it: {howto}"
            ) from e
        root.mkdir(parents=True, exist_ok=True)  # medmnist refuses a root that does not exist
        _download_with("bloodmnist", howto,
                       lambda: medmnist.BloodMNIST(split=split, root=str(root), download=True))
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found("bloodmnist", split, dirs, groups, howto)
    folder, (path,) = hit
    images, labels = _read_medmnist_npz(path, split, num_classes=len(_BLOODMNIST_CLASSES))
    return _array_dataset("bloodmnist", split, images, labels, _BLOODMNIST_CLASSES, folder)


def _load_imagefolder(split: str, *, root: Path, download: bool) -> ImageDataset:
    """A folder of class sub-folders, indexed exactly as ``torchvision.datasets.ImageFolder`` does.

    Classes are the sorted names of the sub-folders (``os.scandir``, hidden ones included, as torchvision);
    within a class, ``sorted(os.walk(class_dir, followlinks=True))`` then sorted file names, keeping files
    whose lower-cased name ends in :data:`IMG_EXTENSIONS`. So index ``i`` here is index ``i`` of
    ``ImageFolder(split_dir)``. Unlike torchvision, a class folder without images is allowed (it keeps its
    class index).
    """
    if download:
        raise ValueError("imagefolder cannot be downloaded; pass download=False and root=<your image folder>")
    howto = ("pass root=<folder> where <folder>/<class>/<image> holds the images (e.g. ImageNet's wnid "
             "folders), or <folder>/<split>/<class>/<image> for a tree with train/ and val/")
    split_dir = _imagefolder_split_dir(root, split, howto)
    classes = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"imagefolder: no class sub-folders in {split_dir}.\nTo use it: {howto}")
    paths, labels, ids = [], [], []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(split_dir, cls)
        for walk_root, _, fnames in sorted(os.walk(class_dir, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    path = os.path.join(walk_root, fname)
                    paths.append(os.path.abspath(path))
                    labels.append(label)
                    ids.append(Path(os.path.relpath(path, split_dir)).as_posix())
    if not paths:
        raise DatasetNotFoundError(f"imagefolder: no image files ({', '.join(IMG_EXTENSIONS)}) under "
                                   f"{split_dir}.\nTo use it: {howto}")
    return ImageDataset(name="imagefolder", split=split, images=None, labels=np.asarray(labels, dtype=np.int64),
                        class_names=classes, ids=np.asarray(ids, dtype=str), paths=paths, root=str(split_dir))


def _imagefolder_split_dir(root: Path, split: str, howto: str) -> Path:
    """``root/<split>`` if it exists; for ``train``, ``root`` itself when it has no split folders."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"imagefolder: {root} is not a folder.\nTo use it: {howto}")
    if (root / split).is_dir():
        return root / split
    split_like = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    if split == "train" and not split_like:
        return root
    raise DatasetNotFoundError(f"imagefolder: no {split}/ folder in {root} (it has: "
                               f"{', '.join(split_like) or 'no train/val/test folders'}).\nTo use it: {howto}")


_LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "stl10": _load_stl10,
    "svhn": _load_svhn,
    "bloodmnist": _load_bloodmnist,
    "imagefolder": _load_imagefolder,
}
