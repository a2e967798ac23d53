"""Baselines: uniform random selection and the stratified ORACLE (equal picks per true class)."""

from __future__ import annotations

import numpy as np

from .._validate import check_embeddings, check_indices, check_positive_int, check_seed
from ._common import _finish, _mask, _prepare

__all__ = ["select_random", "select_stratified"]


def select_random(emb, budget, *, labeled=None, seed=0, return_scores=False):
    """Uniformly random samples from the unlabelled pool, without replacement.

    Args:
        emb: embeddings ``(n, d)`` (validated, otherwise unused).
        budget: ``1 <= budget <= n - len(labeled)``.
        labeled: indices already labelled, never drawn.
        seed: seeds ``numpy.random.default_rng``.
        return_scores: also return scores (all ``NaN``: random selection has no utility).

    Returns:
        int64 ``(budget,)`` in draw order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    n = x.shape[0]
    pool = np.flatnonzero(~_mask(n, lab))
    idx = np.random.default_rng(seed).choice(pool, size=budget, replace=False)
    return _finish(idx, np.full(n, np.nan), budget, lab, return_scores)


def select_stratified(emb, budget, *, labels=None, labeled=None, seed=0, return_scores=False):
    """ORACLE baseline: the same number of random samples from every TRUE class.

    This is what SSL benchmarks (FixMatch, USB) do to build labelled sets, and what USL's "stratified"
    column reports; it needs the ground truth, so it is an upper reference, not a selection method.
    The quota is ``budget // C`` per class (``C`` = classes present in the unlabelled pool); the remainder
    goes one each to the first classes in ascending class-id order; a class with too few samples gives its
    shortfall to the others in the same order. Negative labels mean "unknown" and are never drawn.

    Args:
        emb: embeddings ``(n, d)`` (validated, otherwise unused).
        budget: number of samples.
        labels: true class labels, integer ``(n,)``. Required.
        labeled: indices already labelled, never drawn.
        seed: seeds the per-class draws.
        return_scores: also return scores (all ``NaN``).

    Returns:
        int64 ``(budget,)``: grouped by ascending class id, draw order within a class.
    """
    if labels is None:
        raise ValueError(
            "method 'stratified' is an oracle baseline and needs the true class labels: pass labels= "
            "(an integer array of shape (n,))"
        )
    x = check_embeddings(emb)
    n = x.shape[0]
    y = _check_class_labels(labels, n)
    lab = check_indices(labeled, n, name="labeled")
    seed = check_seed(seed)
    avail = ~_mask(n, lab) & (y >= 0)
    budget = check_positive_int(budget, name="budget")
    if budget > avail.sum():
        raise ValueError(
            f"budget {budget} is larger than the {int(avail.sum())} unlabelled samples with a known class"
        )
    classes = np.unique(y[avail])
    members = [np.flatnonzero(avail & (y == c)) for c in classes]
    quota = _stratified_quota(budget, np.array([m.size for m in members]))
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(m)[:q] for m, q in zip(members, quota)]
    idx = np.concatenate(parts)
    return _finish(idx, np.full(n, np.nan), budget, lab, return_scores)


def _check_class_labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one class per embedding row), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class ids (got non-integer or NaN values)")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}")
    return y.astype(np.int64)


def _stratified_quota(budget: int, capacity: np.ndarray) -> np.ndarray:
    """Equal shares of ``budget`` over classes with ``capacity`` samples each; remainder to the first."""
    quota = np.zeros(capacity.size, dtype=np.int64)
    left = budget
    while left > 0:
        open_ = np.flatnonzero(quota < capacity)
        share, extra = divmod(left, open_.size)
        add = np.full(open_.size, share, dtype=np.int64)
        add[:extra] += 1
        add = np.minimum(add, capacity[open_] - quota[open_])
        quota[open_] += add
        left -= int(add.sum())
    return quota
