"""splitmix64 (Steele, Lea & Flood, OOPSLA 2014): the one integer hash behind the kit's counter-based seeds.

``splitmix64(x) = mix(x + gamma)`` with ``gamma = 0x9E3779B97F4A7C15`` (2^64 / golden ratio) and ``mix`` its
64-bit finaliser (xor-shift 30, multiply, xor-shift 27, multiply, xor-shift 31), all modulo 2^64. A scalar form
on Python ints and a vectorised form on numpy uint64 arrays, which give the same numbers.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN", "MASK64", "splitmix64", "splitmix64_np"]

MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15  # the splitmix64 increment gamma
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_SHIFTS = (30, 27, 31)


def splitmix64(x: int) -> int:
    """One splitmix64 step on a Python int (taken modulo 2^64); returns an int in ``[0, 2^64)``."""
    x = (int(x) + GOLDEN) & MASK64
    x = ((x ^ (x >> _SHIFTS[0])) * _MIX1) & MASK64
    x = ((x ^ (x >> _SHIFTS[1])) * _MIX2) & MASK64
    return x ^ (x >> _SHIFTS[2])


def splitmix64_np(x: np.ndarray) -> np.ndarray:
    """:func:`splitmix64` elementwise on an integer array, as uint64 with wrapping arithmetic (same shape)."""
    z = np.asarray(x).astype(np.uint64, copy=False) + np.uint64(GOLDEN)
    z = (z ^ (z >> np.uint64(_SHIFTS[0]))) * np.uint64(_MIX1)
    z = (z ^ (z >> np.uint64(_SHIFTS[1]))) * np.uint64(_MIX2)
    return z ^ (z >> np.uint64(_SHIFTS[2]))
