"""Validation at the public boundary: clear ``ValueError``s that name the offending value."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_embeddings", "check_budget", "check_seed", "check_positive_int", "check_indices"]


def check_embeddings(emb, *, name: str = "emb", dtype=np.float32) -> np.ndarray:
    """Return ``emb`` as a C-contiguous 2-D float array, or raise ``ValueError`` saying what is wrong.

    Rejects: non-numeric input, anything not 2-D, empty arrays, NaN or infinite values (the error gives
    how many rows are affected and the first one).
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
    arr = np.ascontiguousarray(arr, dtype=dtype)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
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
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0):
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name} must hold integer indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise ValueError(f"{name} has indices outside [0, {n}): e.g. {int(arr[bad][0])}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{name} has duplicate indices: e.g. {int(uniq[counts > 1][0])}")
    return arr
