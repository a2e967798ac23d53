"""Matrix products whose bits do not depend on the thread count.

A multi-threaded BLAS splits a product among its threads, and the split changes which micro-kernel (and so
which order of floating-point additions) computes some entries: the same ``a @ b`` can differ in the last bit
between ``OMP_NUM_THREADS=1`` and ``2``, and a selection that compares distances (a radius, an argmin) can then
flip. Here a product is cut into row blocks of a size that depends only on the shapes; each block is one
SINGLE-threaded BLAS call (threadpoolctl), and the blocks run in parallel on a pool of Python threads (as many
as BLAS had threads): a product of several blocks keeps its parallelism, one of a single block runs on one
thread, and every entry has the same bits on any thread count. :func:`single_thread_blas` alone serves code
whose products and solves are too small or too many to cut (NTKCPL, Sinkhorn).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

__all__ = ["BLOCK_ELEMS", "blas_threads", "map_blocks", "matmul", "single_thread_blas", "single_threaded"]

#: entries of one output block (16 MB of float32, 32 MB of float64): blocks of ``max(1, BLOCK_ELEMS // cols)`` rows
BLOCK_ELEMS = 2**22


_LOCK = threading.Lock()
_STATE = {"depth": 0, "limiter": None, "controller": None}


def _controller():
    """One ``threadpoolctl.ThreadpoolController`` per process: building one scans the loaded libraries
    (milliseconds), which a K-means iteration would otherwise pay twice."""
    from threadpoolctl import ThreadpoolController

    with _LOCK:
        if _STATE["controller"] is None:
            _STATE["controller"] = ThreadpoolController()
        return _STATE["controller"]


def blas_threads() -> int:
    """Threads the BLAS libraries loaded in this process would use, capped by the CPUs this process may run on
    (at least 1)."""
    import os

    counts = [int(lib.num_threads or 1) for lib in _controller().select(user_api="blas").lib_controllers]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(max(counts + [1]), cpus))


@contextmanager
def single_thread_blas():
    """Every BLAS call in the process runs on one thread inside this block (threadpoolctl). Re-entrant and safe
    across threads: the first entry sets the limit, the last exit restores the previous one."""
    controller = _controller()
    with _LOCK:
        if _STATE["depth"] == 0:
            _STATE["limiter"] = controller.limit(limits=1, user_api="blas")
        _STATE["depth"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["depth"] -= 1
            if _STATE["depth"] == 0:
                _STATE["limiter"].restore_original_limits()
                _STATE["limiter"] = None


def single_threaded(fn):
    """Decorator: ``fn`` runs inside :func:`single_thread_blas` (the same bits on any thread count, one core)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread_blas():
            return fn(*args, **kwargs)
    return wrapper


def map_blocks(fn, items, *, workers=None):
    """Yield ``fn(item)`` for each item, in order, computed on ``workers`` Python threads (default: the BLAS
    thread count) with single-threaded BLAS. At most ``workers + 1`` results are held at once. ``fn`` must not
    depend on which thread runs it; its BLAS calls then give the same bits on any thread count."""
    items = list(items)
    workers = blas_threads() if workers is None else max(1, int(workers))
    with single_thread_blas():
        if workers == 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
            return
        with ThreadPoolExecutor(max_workers=workers) as pool:
            pending: deque = deque()
            for item in items:
                pending.append(pool.submit(fn, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()


def matmul(a, b, *, out=None, workers=None) -> np.ndarray:
    """``a @ b`` for 2-D ``a (m, k)`` and ``b (k, n)`` (or a vector ``b (k,)``), in row blocks of
    ``max(1, BLOCK_ELEMS // n)`` rows: the same bits on any thread count (module docstring)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 2 or b.ndim not in (1, 2) or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs a (m, k) and b (k, n) or (k,), got {a.shape} and {b.shape}")
    cols = b.shape[1] if b.ndim == 2 else 1
    step = max(1, BLOCK_ELEMS // max(cols, 1))
    shape = (a.shape[0],) + b.shape[1:]
    if out is None:
        out = np.empty(shape, dtype=np.result_type(a, b))

    def block(s):
        np.matmul(a[s:s + step], b, out=out[s:s + step])

    for _ in map_blocks(block, range(0, a.shape[0], step), workers=workers):
        pass
    return out
