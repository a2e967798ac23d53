"""Core-set: greedy k-center (Sener & Savarese 2018), the low-budget active-learning baseline."""

from __future__ import annotations

import math

import numpy as np

from .._blas import single_threaded
from ._common import _chunk_rows, _finish, _mask, _prepare

__all__ = ["select_coreset"]


@single_threaded  # BLAS on one thread, set once for the greedy loop: the same picks on any thread count
def select_coreset(emb, budget, *, labeled=None, seed=0, return_scores=False):
    """Greedy k-center core-set (Sener & Savarese 2018; the low-budget AL reference code's ``core_set``).

    Repeatedly pick the unlabelled point farthest (L2) from the labelled set and the picks so far. With no
    labelled set the first pick is a seeded uniformly random point. Ties go to the lowest index; once all
    remaining points coincide with a chosen one (exact duplicates) the lowest-index unpicked point is taken,
    so the picks are always distinct. Distances are updated one centre at a time, O(n d) memory.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of picks.
        labeled: indices already labelled (the initial centres).
        seed: chooses the first centre when ``labeled`` is empty (the only randomness).
        return_scores: also return the distance to the nearest centre at the time of choice (picks; the
            random first pick gets ``inf``) and, for unpicked points, at the end; ``NaN`` for labelled.

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    n = x.shape[0]
    x64 = x.astype(np.float64)
    sq = np.einsum("nd,nd->n", x64, x64)
    blocked = _mask(n, lab)
    mind = np.full(n, np.inf)
    step = _chunk_rows(n)
    for s in range(0, lab.size, step):  # distance to the labelled set, a chunk of centres at a time
        c = x64[lab[s : s + step]]
        d2 = sq[:, None] + np.einsum("md,md->m", c, c)[None, :] - 2.0 * (x64 @ c.T)
        np.minimum(mind, d2.min(axis=1), out=mind)
    scores = np.full(n, np.nan)
    picks = []
    if lab.size == 0:
        first = int(np.random.default_rng(seed).integers(n))
        picks.append(first)
        scores[first] = np.inf
        mind = _update_min_sq(x64, sq, first, mind)
        blocked[first] = True
    while len(picks) < budget:
        cand = np.where(blocked, -1.0, np.maximum(mind, 0.0))
        cur = int(np.argmax(cand))
        picks.append(cur)
        scores[cur] = math.sqrt(cand[cur])
        mind = _update_min_sq(x64, sq, cur, mind)
        blocked[cur] = True
    free = ~blocked
    scores[free] = np.sqrt(np.maximum(mind[free], 0.0))
    return _finish(np.array(picks, dtype=np.int64), scores, budget, lab, return_scores)


def _update_min_sq(x64, sq, j, mind):
    """``min(mind, squared distance to point j)`` in place, with the point itself at exactly 0."""
    d2 = sq + sq[j] - 2.0 * (x64 @ x64[j])
    d2[j] = 0.0
    return np.minimum(mind, d2, out=mind)
