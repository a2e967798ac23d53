"""NTKCPL's first round (paper 003, Alg. 1 with an empty labelled set): the one-shot selection it starts from."""

from __future__ import annotations

import numpy as np

from .._blas import single_threaded
from .._validate import check_positive_int
from ._common import _finish, _prepare

__all__ = ["select_ntkcpl"]


@single_threaded  # BLAS on one thread: the same result on any thread count
def select_ntkcpl(emb, budget, *, seed=0, candidates=10000, hidden=64, reg=0.01, kmeans_niter=20,
                  return_scores=False):
    """NTKCPL's initial selection (paper 003, Alg. 1, lines 3-4 and 9-18 with ``L`` empty).

    The clustering pseudo-labels are K-means of the frozen features ``f_self`` into ``budget`` clusters (line 4);
    the NTK head (:class:`uslkit.active.ntk.InitMLP`, ``hidden`` wide, ``budget`` outputs) starts with no
    training set, so its predictions are ``f0`` and its posterior kernel the NTK itself; then ``budget`` times
    the candidate whose addition with its pseudo-label leaves the fewest candidates mispredicted is added (the
    greedy of :func:`uslkit.active.ntkcpl.greedy_min_risk`). The multi-round strategies ``ntkcpl`` and
    ``ntkcpl_self`` continue from it (``start="ntkcpl"`` in :func:`uslkit.active.run_active`).

    Candidates: a seeded random subset of ``candidates`` pool samples (paper 003: 10,000), on which K-means and
    the risk run. Deviation: the paper's K-means covers the whole pool; here the candidates (as the later
    rounds' clustering, :func:`uslkit.active.ntkcpl.query_ntkcpl`).

    Args:
        emb: embeddings ``(n, d)`` (L2-normalised inside, as the head's input).
        budget: number of picks (and of K-means clusters).
        seed: the candidate subset, K-means and the NTK head's initialisation.
        candidates: size of the candidate subset (``>= n``: the whole pool).
        hidden: the NTK head's width (the active-learning head's, 64).
        reg: ridge, relative to the mean diagonal of the kernel (:data:`uslkit.active.ntkcpl.REG`).
        kmeans_niter: Lloyd iterations.
        return_scores: also return ``NaN`` scores (the greedy has no per-sample utility).

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    from ..active.ntk import InitMLP
    from ..active.ntkcpl import greedy_min_risk
    from ..cluster import kmeans
    from ..embed import l2_normalize

    x, budget, seed, lab = _prepare(emb, budget, seed, None)
    n = x.shape[0]
    candidates = check_positive_int(candidates, name="candidates")
    hidden = check_positive_int(hidden, name="hidden")
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")
    if not (isinstance(reg, (int, float)) and np.isfinite(reg) and reg >= 0):
        raise ValueError(f"reg must be a finite number >= 0, got {reg!r}")
    cand = (np.arange(n) if candidates >= n else
            np.sort(np.random.default_rng(seed).choice(n, size=candidates, replace=False)))
    if cand.size < budget:
        raise ValueError(f"candidates={candidates} is smaller than the budget {budget}")
    xc = l2_normalize(x[cand], dtype=np.float64)
    y_cpl, _ = kmeans(xc.astype(np.float32), budget, seed=seed, niter=kmeans_niter)
    model = InitMLP(xc.shape[1], hidden, budget, seed=seed)
    r = model.kernel(xc)
    ridge = reg * float(np.mean(np.diag(r)))
    picks = greedy_min_risk(model.outputs(xc), r, ridge, np.asarray(y_cpl, dtype=np.int64), budget)
    idx = cand[np.asarray(picks, dtype=np.int64)]
    return _finish(idx, np.full(n, np.nan), budget, lab, return_scores)
