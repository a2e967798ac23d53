"""Validation shared by the evaluation modules: integer label vectors."""

from __future__ import annotations

import numpy as np


def int_1d(values, *, name: str) -> np.ndarray:
    """``values`` as int64 ``(n,)``; integral floats are accepted, anything else non-integer is refused."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def labels_for(labels, n: int, *, name: str, emb_name: str) -> np.ndarray:
    """True labels of the ``n`` rows of ``emb_name``: int64 ``(n,)``, all ``>= 0``."""
    y = int_1d(labels, name=name)
    if y.size != n:
        raise ValueError(f"{name} has {y.size} entries but {emb_name} has {n} rows")
    if (y < 0).any():
        raise ValueError(f"{name} must be >= 0 (no unlabelled -1), got {int(y[y < 0][0])}")
    return y
