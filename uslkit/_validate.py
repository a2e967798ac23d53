"""Validation at the public boundary: clear ``ValueError``s that name the offending value."""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = [
    "check_embeddings",
    "check_budget",
    "check_seed",
    "check_positive_int",
    "check_positive_float",
    "check_float",
    "check_k",
    "check_indices",
    "check_cluster_ids",
    "check_choice",
]


_CHECK_ELEMS = 2**22  # entries per block of the finite check


def check_embeddings(emb, *, name: str = "emb", dtype=np.float32) -> np.ndarray:
    """Return ``emb`` as a C-contiguous 2-D float array, or raise ``ValueError`` saying what is wrong.

    Rejects: non-numeric input, anything not 2-D, empty arrays, NaN or infinite values (the error gives
    how many rows are affected and the first one). A C-contiguous array of ``dtype``, e.g. a read-only memory
    map of a float32 ``.npy`` (``np.load(path, mmap_mode="r")``), is returned as it is, not copied; the check
    reads it in blocks.
    """
    try:
        arr = np.asarray(emb)
    except Exception as e:  # pragma: no cover - exotic inputs
        raise ValueError(f"{name} could not be converted to an array: {e}") from e
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)  # no copy of a C-contiguous array (or memory map) of that dtype
    step = max(1, _CHECK_ELEMS // arr.shape[1])  # rows checked at a time: no n x d temporary
    bad = [s + np.flatnonzero(~np.isfinite(arr[s : s + step]).all(axis=1)) for s in range(0, arr.shape[0], step)]
    bad = np.concatenate(bad)
    if bad.size:
        raise ValueError(
            f"{name} contains NaN or infinite values in {bad.size} of {arr.shape[0]} rows "
            f"(first bad row: {int(bad[0])})"
        )
    return arr


def check_positive_int(value, *, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]`` or raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_positive_float(value, *, name: str) -> float:
    """Return ``value`` as a finite float ``> 0`` or raise ``ValueError`` naming it."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_float(value, *, name: str, low=None, high=None, low_open: bool = False, high_open: bool = False) -> float:
    """``value`` as a finite float in the given (half-)open or closed range, or ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def check_choice(value, choices, *, name: str):
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError("<name> must be one of ...")``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def check_k(k, n: int, *, exclude_self: bool = True) -> int:
    """Validate a neighbour count ``k`` for ``n`` points: ``1 <= k <= n - 1`` (``<= n`` without ``exclude_self``)."""
    k = check_positive_int(k, name="k")
    k_max = n - 1 if exclude_self else n
    if k > k_max:
        why = " (each point's own index is excluded)" if exclude_self else ""
        raise ValueError(f"k={k} is too large for {n} points: at most {k_max}{why}")
    return k


def check_budget(budget, n: int, *, n_labeled: int = 0) -> int:
    """Validate a labelling budget against a pool of ``n`` samples of which ``n_labeled`` are labelled."""
    if isinstance(budget, bool) or not isinstance(budget, numbers.Integral):
        raise ValueError(f"budget must be an integer, got {budget!r}")
    budget = int(budget)
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    pool = n - n_labeled
    if budget > pool:
        extra = f" ({n} samples, {n_labeled} already labelled)" if n_labeled else ""
        raise ValueError(f"budget {budget} is larger than the unlabelled pool of {pool} samples{extra}")
    return budget


def check_seed(seed) -> int:
    """A seed must be a non-negative integer (it is the only source of randomness)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or int(seed) < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def check_indices(idx, n: int, *, name: str = "labeled") -> np.ndarray:
    """Return ``idx`` as unique int64 indices in ``[0, n)``, or raise ``ValueError``."""
    arr = np.asarray([] if idx is None else idx)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of indices, got shape {arr.shape}")
    arr = _as_int64(arr, name=name, what="indices")
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise ValueError(f"{name} has indices outside [0, {n}): e.g. {int(arr[bad][0])}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{name} has duplicate indices: e.g. {int(uniq[counts > 1][0])}")
    return arr


def check_cluster_ids(labels, n: int, k: int, *, name: str = "labels") -> np.ndarray:
    """Return ``labels`` as int64 ``(n,)`` cluster ids in ``[0, k)``, or raise ``ValueError``."""
    arr = np.asarray(labels)
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {arr.shape}")
    arr = _as_int64(arr, name=name, what="cluster ids")
    bad = (arr < 0) | (arr >= k)
    if bad.any():
        raise ValueError(f"{name} must lie in [0, {k}), got e.g. {int(arr[bad][0])}")
    return arr


def _as_int64(arr: np.ndarray, *, name: str, what: str) -> np.ndarray:
    """Integer (or integral float) ``arr`` as int64; anything else raises ``"<name> must hold integer <what>"``."""
    if arr.size and arr.dtype.kind not in "iu" and not (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0)):
        raise ValueError(f"{name} must hold integer {what}, got dtype {arr.dtype}")
    return arr.astype(np.int64)
