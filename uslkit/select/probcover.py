"""ProbCover (Yehuda et al. 2022): greedy maximum coverage of delta-balls, delta chosen by ball purity.

Ball graph by chunked exact range search (float32 ``|x|^2 + |y|^2 - 2 x.y``), stored as int32 CSR plus its
transpose, never a dense ``n x n`` matrix. :func:`purity_delta` is the label-free radius on its own.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from .._validate import check_embeddings, check_float, check_positive_int, check_seed
from ..cluster import kmeans
from .._blas import map_blocks
from ._common import _chunk_rows, _finish, _mask, _prepare

__all__ = ["select_probcover", "purity_delta", "probcover_graph", "probcover_greedy"]

#: Refuse to build a ball graph with more directed edges than this (int32 CSR and its transpose, about
#: 4 GB at peak while building); a delta that large covers nearly everything with a few balls anyway.
_MAX_EDGES = 200_000_000


def select_probcover(emb, budget, *, labeled=None, delta=None, purity_threshold=0.95, num_classes=None,
                     delta_grid=None, seed=0, kmeans_niter=100, return_scores=False):
    """ProbCover (Yehuda et al. 2022; reference code avihu111/TypiClust ``prob_cover.py``).

    Ball graph: ``y`` is in the ball of ``x`` when ``||x - y|| < delta`` (the point itself always). Points
    in the balls of labelled points are covered from the start. Then greedily: pick the point whose ball
    holds the most uncovered points (ties: lowest index), mark them covered. When everything is covered
    the remaining picks are uniformly random among the unpicked unlabelled points, seeded (as the paper;
    the reference code would repeat index 0). ``delta=None``: the paper's label-free radius,
    :func:`purity_delta` with ``num_classes`` (the reference code uses a fixed delta instead). On features whose
    classes are not well separated that radius is small, the balls of a low budget cover few points and the picks
    crowd into the densest classes; a lower ``purity_threshold`` gives larger balls (measured in
    ``benchmarks/RESULTS.md``, "faithfulness questions"). More than
    2e8 edges in the ball graph raises ``ValueError``.

    Args:
        emb: embeddings ``(n, d)`` (the paper: L2-normalised SimCLR features).
        budget: number of picks.
        labeled: indices already labelled.
        delta: ball radius (> 0), or ``None`` to choose it by purity.
        purity_threshold, delta_grid, kmeans_niter: as :func:`purity_delta`.
        num_classes: K-means clusters for the purity (the number of classes); required if ``delta`` is None.
        seed: seeds the purity K-means and the random picks after full coverage.
        return_scores: also return the coverage gain (number of newly covered points) of each pick at the
            time it was chosen, and for unpicked points the number of uncovered points left in their ball
            at the end (both the greedy's marginal utility); ``NaN`` for labelled points.

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    graph = probcover_graph(x, delta=delta, num_classes=num_classes, purity_threshold=purity_threshold,
                            delta_grid=delta_grid, seed=seed, kmeans_niter=kmeans_niter)
    return probcover_greedy(graph, budget, lab, seed, return_scores=return_scores)


def probcover_graph(x, *, delta=None, num_classes=None, purity_threshold=0.95, delta_grid=None, seed=0,
                    kmeans_niter=100):
    """The ball graph of :func:`select_probcover` (radius ``delta``, or by purity w.r.t. a ``seed``-ed K-means
    into ``num_classes`` clusters), built once so that several queries (rounds of active learning) can share
    it: pass it to :func:`probcover_greedy`. ``x`` float32 ``(n, d)``, validated by the caller."""
    n = x.shape[0]
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")
    if delta is None:
        if num_classes is None:
            raise ValueError(
                "probcover needs either delta= (ball radius) or num_classes= (to choose delta as the "
                "largest radius whose balls are purity_threshold-pure w.r.t. K-means, as the ProbCover paper)"
            )
        num_classes, purity_threshold, grid = _check_purity_options(num_classes, n, purity_threshold, delta_grid)
        clusters, _ = kmeans(x, num_classes, seed=seed, niter=kmeans_niter)
        col_order = np.argsort(clusters, kind="stable")
        delta2 = _purity_delta2(x, clusters, purity_threshold, grid)
    else:
        delta2 = check_float(delta, name="delta", low=0.0, low_open=True) ** 2
        col_order = np.arange(n)
    return _ball_graph(x, delta2, col_order) + (n,)


def probcover_greedy(graph, budget, lab, seed, *, return_scores=False):
    """Greedy max coverage on a :func:`probcover_graph` from the labelled indices ``lab`` (int64): ``budget``
    picks in pick order (and the scores of :func:`select_probcover`)."""
    n = graph[-1]
    idx, scores = _probcover_greedy(graph[:-1], n, budget, lab, seed)
    return _finish(idx, scores, budget, lab, return_scores)


def purity_delta(emb, num_classes, *, purity_threshold=0.95, delta_grid=None, seed=0, kmeans_niter=100) -> float:
    """The largest ball radius whose balls are ``purity_threshold``-pure w.r.t. K-means (ProbCover's rule).

    K-means with K = ``num_classes`` (seeded, ``kmeans_niter`` Lloyd iterations); a ball is pure when all
    its points share the K-means cluster of its centre, i.e. when ``delta`` is at most the distance ``r``
    from the centre to the nearest point of another cluster. Purity is a step function of delta, so with
    ``delta_grid=None`` the largest radius is exact: the ``purity_threshold`` quantile of ``r`` from the
    top; with a grid, the largest grid value that keeps the purity. This is the radius
    :func:`select_probcover` uses with ``delta=None`` and the same arguments. O(n^2 d) time in chunks,
    O(n) memory. Warns (and returns 0) when no positive radius is pure enough.

    Args:
        emb: embeddings ``(n, d)``.
        num_classes: K-means clusters (the number of classes), ``2 <= num_classes <= n``.
        purity_threshold: alpha in ``(0, 1]`` (the paper: 0.95).
        delta_grid: optional candidate radii (finite, positive).
        seed: K-means seed.
        kmeans_niter: Lloyd iterations of K-means.

    Returns:
        delta (float), the ball radius.
    """
    x = check_embeddings(emb)
    seed = check_seed(seed)
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")
    num_classes, threshold, grid = _check_purity_options(num_classes, x.shape[0], purity_threshold, delta_grid)
    clusters, _ = kmeans(x, num_classes, seed=seed, niter=kmeans_niter)
    return math.sqrt(_purity_delta2(x, clusters, threshold, grid))


def _check_purity_options(num_classes, n, purity_threshold, delta_grid):
    """``(num_classes, purity_threshold, grid float64 or None)`` validated."""
    num_classes = check_positive_int(num_classes, name="num_classes", minimum=2, maximum=n)
    purity_threshold = check_float(purity_threshold, name="purity_threshold", low=0.0, high=1.0, low_open=True)
    grid = None
    if delta_grid is not None:
        grid = np.asarray(delta_grid, dtype=np.float64).ravel()
        if grid.size == 0 or not np.isfinite(grid).all() or (grid <= 0).any():
            raise ValueError(f"delta_grid must be non-empty, finite and positive, got {delta_grid!r}")
    return num_classes, purity_threshold, grid


def _sq_dist_blocks(x: np.ndarray, col_order: np.ndarray):
    """Yield ``(start, d2)``: float32 squared distances of rows ``start:start+c`` of ``x`` to ``x[col_order]``.

    One matmul of augmented rows ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``, clamped at 0, self-distances set to
    exactly 0. Blocks are identical on every call with the same ``col_order``, so the purity radius and the
    ball graph see the same numbers bit for bit, on any thread count (:func:`uslkit._blas.map_blocks`: blocks in
    parallel, each one single-threaded BLAS call).
    """
    n = x.shape[0]
    sq = np.einsum("nd,nd->n", x, x)
    ones = np.ones((n, 1), dtype=np.float32)
    cols = np.concatenate([-2.0 * x[col_order], ones, sq[col_order, None]], axis=1)
    rows_aug = np.concatenate([x, sq[:, None], ones], axis=1)
    self_pos = np.empty(n, dtype=np.int64)
    self_pos[col_order] = np.arange(n)
    step = _chunk_rows(n, factor=4)  # float32 blocks: 4x the float64 entry bound

    def block(s):
        d2 = rows_aug[s : s + step] @ cols.T  # single-threaded BLAS per block: same bits on any thread count
        np.maximum(d2, 0.0, out=d2)
        r = np.arange(d2.shape[0])
        d2[r, self_pos[s + r]] = 0.0
        return s, d2

    yield from map_blocks(block, range(0, n, step))


def _purity_delta2(x, clusters, threshold, grid) -> float:
    """Squared delta of the purity rule (see :func:`purity_delta`); ``clusters`` from K-means."""
    n = x.shape[0]
    col_order = np.argsort(clusters, kind="stable")
    counts = np.bincount(clusters)
    col_starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    r2 = np.empty(n, dtype=np.float64)  # squared distance to the nearest point of another cluster
    for s, d2 in _sq_dist_blocks(x, col_order):
        per_cluster = np.minimum.reduceat(d2, col_starts, axis=1)  # (rows, K) nearest point per cluster
        rows = np.arange(d2.shape[0])
        per_cluster[rows, clusters[s + rows]] = np.inf
        r2[s : s + d2.shape[0]] = per_cluster.min(axis=1)
    # ball(x, delta) is pure  <=>  r2(x) >= delta^2 (membership is strict: dist < delta)
    need = math.ceil(threshold * n - 1e-9)
    if grid is None:
        delta2 = float(np.sort(r2)[::-1][need - 1])
    else:
        purity = np.array([(r2 >= g * g).mean() for g in grid])
        ok = purity >= threshold
        if not ok.any():
            raise ValueError(
                f"no delta in delta_grid keeps purity >= {threshold}: purity at the smallest "
                f"({grid.min():.4g}) is {purity[np.argmin(grid)]:.3f}"
            )
        delta2 = float(grid[ok].max() ** 2)
    if not delta2 > 0:
        warnings.warn(
            "probcover: no positive delta keeps the purity threshold (exact duplicates in different K-means "
            "clusters); balls hold only their centre", RuntimeWarning, stacklevel=3,
        )
    return delta2


def _ball_graph(x, delta2, col_order):
    """Directed ball graph as CSR ``(indptr, cols)`` and its transpose ``(t_indptr, t_rows)``, int32/64."""
    n = x.shape[0]
    idx_t = np.int32 if n < 2**31 else np.int64
    col_ids = col_order.astype(idx_t)
    self_pos = np.empty(n, dtype=np.int64)
    self_pos[col_order] = np.arange(n)
    cols, counts, total = [], np.zeros(n, dtype=np.int64), 0
    for s, d2 in _sq_dist_blocks(x, col_order):
        inside = d2 < delta2
        r = np.arange(d2.shape[0])
        inside[r, self_pos[s + r]] = True  # the centre, also when delta2 == 0
        flat = np.flatnonzero(inside)
        counts[s : s + d2.shape[0]] = np.bincount(flat // n, minlength=d2.shape[0])
        total += int(counts[s : s + d2.shape[0]].sum())
        if total > _MAX_EDGES:
            raise ValueError(
                f"delta={math.sqrt(delta2):.4g} is too large: the ball graph would exceed {_MAX_EDGES:,} edges "
                f"(mean ball size > {total / (s + d2.shape[0]):.0f}); choose a smaller delta"
            )
        cols.append(col_ids[flat % n])
    cols = np.concatenate(cols)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    rows = np.repeat(np.arange(n, dtype=idx_t), counts)
    t_order = np.argsort(cols, kind="stable")
    t_rows = rows[t_order]
    t_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n), out=t_indptr[1:])
    return indptr, cols, t_indptr, t_rows


def _gather(indptr, values, sel):
    """Concatenate the CSR rows ``sel`` of ``(indptr, values)``."""
    starts = indptr[sel]
    lens = indptr[sel + 1] - starts
    total = int(lens.sum())
    if total == 0:
        return values[:0]
    offs = np.repeat(starts - np.cumsum(lens) + lens, lens) + np.arange(total)
    return values[offs]


def _probcover_greedy(graph, n, budget, lab, seed):
    """Greedy max coverage on the ball graph: ``(picks in pick order, scores (n,))``."""
    indptr, cols, t_indptr, t_rows = graph
    covered = np.zeros(n, dtype=bool)
    degree = np.diff(indptr).astype(np.int64)  # uncovered points in each ball

    def cover(points):
        new = np.unique(_gather(indptr, cols, points))
        new = new[~covered[new]]
        covered[new] = True
        owners = _gather(t_indptr, t_rows, new)
        if owners.size:
            degree[:] -= np.bincount(owners, minlength=n)
        return new.size

    if lab.size:
        cover(lab)
    labelled = _mask(n, lab)
    scores = np.full(n, np.nan)
    picked = np.zeros(n, dtype=bool)
    picks: list[int] = []
    while len(picks) < budget:
        cur = int(np.argmax(degree))
        if degree[cur] <= 0:
            break
        scores[cur] = cover(np.array([cur]))
        picks.append(cur)
        picked[cur] = True
    if len(picks) < budget:  # everything covered: seeded random picks among the rest (the paper)
        rest = np.flatnonzero(~picked & ~labelled)
        extra = np.random.default_rng(seed).choice(rest, size=budget - len(picks), replace=False)
        scores[extra] = 0.0
        picks.extend(int(i) for i in extra)
    free = ~picked & ~labelled
    scores[free] = degree[free]
    return np.array(picks, dtype=np.int64), scores
