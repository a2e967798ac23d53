"""Locating dataset files and parsing the official on-disk formats with numpy (private helpers).

Every reader raises :class:`CorruptDatasetError` naming the file when it is truncated or inconsistent;
:func:`_locate` raises :class:`DatasetNotFoundError` listing the folders searched and how to get the data.
"""

from __future__ import annotations

import gzip
import pickle
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import CorruptDatasetError, DatasetNotFoundError

_CIFAR_PIXELS = 3 * 32 * 32
_STL_PIXELS = 3 * 96 * 96
_IDX_UBYTE = 0x08


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


def _locate(dataset: str, split: str, dirs: Sequence[Path], groups: Sequence[Sequence[str]], howto: str, *,
            fetch: Callable[[], Any] | None) -> tuple[Path, list[Path]]:
    """:func:`_find`, else run the download ``fetch`` (if given) and look again, else raise :func:`_not_found`."""
    hit = _find(dirs, groups)
    if hit is None and fetch is not None:
        _download_with(dataset, howto, fetch)
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found(dataset, split, dirs, groups, howto)
    return hit


def _torchvision(cls_name: str, *args, **kwargs) -> Callable[[], Any]:
    """A download for :func:`_locate`: ``torchvision.datasets.<cls_name>(*args, **kwargs)``, imported when run."""
    def fetch():
        import torchvision.datasets as tvd

        return getattr(tvd, cls_name)(*args, **kwargs)
    return fetch


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
