"""ProbCover (Yehuda et al. 2022): greedy maximum coverage of delta-balls, delta chosen by ball purity.

Ball membership is a float64 decision (float32 products settle the clear pairs), so the graph is symmetric and the
same from an all-pairs search in blocks or a search pruned by a seeded partition; it is stored as int32 CSR, never
a dense ``n x n`` matrix, or above 2e8 edges not stored at all (the greedy searches the balls it needs).
:func:`purity_delta` is the label-free radius on its own.
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from .._blas import map_blocks
from .._validate import check_choice, check_embeddings, check_float, check_positive_int, check_seed
from ..cluster import kmeans
from ._common import _chunk_rows, _finish, _kmeans_mppc, _kmeans_points_per_centroid, _mask, _prepare

__all__ = ["select_probcover", "purity_delta", "probcover_graph", "probcover_greedy"]

logger = logging.getLogger(__name__)

#: Keep the ball graph only up to this many directed edges (int32 CSR, about 4 GB at peak while building); above,
#: the greedy searches the balls it needs (:class:`_Balls`).
_MAX_EDGES = 200_000_000
_SEARCHES = ("auto", "exact", "pruned")
_OWNER_BLOCK = 65536
_R2_ROWS = 512  # rows per tile of the purity radius
_CHUNK_ELEMS_R2 = 2**22  # entries per tile  # newly covered points whose owners are gathered at a time
#: ``search="auto"`` prunes above this many points.
_PRUNED_MIN_N = 20_000
#: ``purity_sample="auto"``: every row up to this many points, else :data:`PURITY_SAMPLE` seeded rows (the
#: quantile's standard error at 0.95 is then about 0.0015 in purity).
_PURITY_ALL_MAX_N = 200_000
PURITY_SAMPLE = 20_000
_PURITY_STREAM = 0x5052  # seed stream of the purity sample, apart from K-means'


def select_probcover(emb, budget, *, labeled=None, delta=None, purity_threshold=0.95, num_classes=None,
                     delta_grid=None, seed=0, kmeans_niter=100, search="auto", purity_sample="auto",
                     kmeans_points_per_centroid="auto", return_scores=False):
    """ProbCover (Yehuda et al. 2022; reference code avihu111/TypiClust ``prob_cover.py``).

    Ball graph: ``y`` is in the ball of ``x`` when ``||x - y|| < delta`` (the point itself always). Points
    in the balls of labelled points are covered from the start. Then greedily: pick the point whose ball
    holds the most uncovered points (ties: lowest index), mark them covered. When everything is covered
    the remaining picks are uniformly random among the unpicked unlabelled points, seeded (as the paper;
    the reference code would repeat index 0). ``delta=None``: the paper's label-free radius,
    :func:`purity_delta` with ``num_classes`` (the reference code uses a fixed delta instead). On features whose
    classes are not well separated that radius is small, the balls of a low budget cover few points and the picks
    crowd into the densest classes; a lower ``purity_threshold`` gives larger balls (measured in
    ``benchmarks/RESULTS.md``, "faithfulness questions"). Above 2e8 edges the graph is not stored: the greedy
    searches each pick's ball and the balls of the points it covers when it needs them (the same picks, O(n)
    memory, about twice the graph's time).

    Membership is decided on float64 distances (float32 products settle the clear cases), so the graph is
    symmetric and the same whichever search builds it: ``search="exact"`` compares all pairs in blocks,
    ``"pruned"`` skips the lists of a seeded partition that the triangle inequality rules out (exact too: the
    same edges; faster when balls are small against the data's spread); ``"auto"``: pruned above
    20,000 points. Above 200,000 points the purity radius is by default the quantile over a seeded sample of
    rows (``purity_sample``) and its K-means runs on a seeded sample (``kmeans_points_per_centroid``, as USL's).

    Args:
        emb: embeddings ``(n, d)`` (the paper: L2-normalised SimCLR features).
        budget: number of picks.
        labeled: indices already labelled.
        delta: ball radius (> 0), or ``None`` to choose it by purity.
        purity_threshold, delta_grid, kmeans_niter, purity_sample, kmeans_points_per_centroid: as
            :func:`purity_delta`.
        num_classes: K-means clusters for the purity (the number of classes); required if ``delta`` is None.
        seed: seeds the purity K-means, the partition of ``"pruned"`` search, the purity sample and the random
            picks after full coverage.
        search: ``"auto"``, ``"exact"`` or ``"pruned"`` (see above).
        return_scores: also return the coverage gain (number of newly covered points) of each pick at the
            time it was chosen, and for unpicked points the number of uncovered points left in their ball
            at the end (both the greedy's marginal utility); ``NaN`` for labelled points.

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    graph = probcover_graph(x, delta=delta, num_classes=num_classes, purity_threshold=purity_threshold,
                            delta_grid=delta_grid, seed=seed, kmeans_niter=kmeans_niter, search=search,
                            purity_sample=purity_sample, kmeans_points_per_centroid=kmeans_points_per_centroid)
    return probcover_greedy(graph, budget, lab, seed, return_scores=return_scores)


def probcover_graph(x, *, delta=None, num_classes=None, purity_threshold=0.95, delta_grid=None, seed=0,
                    kmeans_niter=100, search="auto", purity_sample="auto", kmeans_points_per_centroid="auto"):
    """The ball graph of :func:`select_probcover` (radius ``delta``, or by purity w.r.t. a ``seed``-ed K-means
    into ``num_classes`` clusters), built once so that several queries (rounds of active learning) can share
    it: pass it to :func:`probcover_greedy`. ``x`` float32 ``(n, d)``, validated by the caller. Returns
    ``(indptr, cols, indptr, cols, n)`` (int32 CSR, twice: it is its own transpose), or above 2e8 edges
    ``(balls, ball sizes, n)`` (a :class:`_Balls` that searches balls on demand)."""
    n = x.shape[0]
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")
    search = check_choice(search, _SEARCHES, name="search")
    if search == "auto":
        search = "pruned" if n > _PRUNED_MIN_N else "exact"
    if delta is None:
        if num_classes is None:
            raise ValueError(
                "probcover needs either delta= (ball radius) or num_classes= (to choose delta as the "
                "largest radius whose balls are purity_threshold-pure w.r.t. K-means, as the ProbCover paper)"
            )
        delta2 = _purity_delta2_of(x, num_classes, purity_threshold, delta_grid, seed, kmeans_niter, purity_sample,
                                   kmeans_points_per_centroid)
    else:
        delta2 = check_float(delta, name="delta", low=0.0, low_open=True) ** 2
    graph = _ball_graph(x, delta2) if search == "exact" else None
    if graph is None:
        graph = _ball_graph_pruned(x, delta2, seed)
    return graph + (n,)


def _purity_delta2_of(x, num_classes, purity_threshold, delta_grid, seed, kmeans_niter, purity_sample, mppc):
    """The squared purity radius with the options validated, K-means and the row sample drawn."""
    n = x.shape[0]
    num_classes, purity_threshold, grid = _check_purity_options(num_classes, n, purity_threshold, delta_grid)
    mppc = _kmeans_points_per_centroid(mppc, n, num_classes)
    rows = _purity_rows(purity_sample, n, seed)
    clusters, _ = kmeans(x, num_classes, seed=seed, niter=kmeans_niter, max_points_per_centroid=_kmeans_mppc(mppc))
    delta2 = _purity_delta2(x, clusters, purity_threshold, grid, rows)
    if rows is not None:
        logger.info("probcover purity radius %.4g from %d of %d rows (the purity threshold's quantile)",
                    math.sqrt(delta2), rows.size, n)
    return delta2


def _purity_rows(purity_sample, n, seed):
    """Rows whose radius gives the purity quantile: ``None`` (all) or a sorted seeded sample."""
    if purity_sample == "auto":
        m = n if n <= _PURITY_ALL_MAX_N else PURITY_SAMPLE
    elif purity_sample == "all":
        m = n
    elif isinstance(purity_sample, str):
        raise ValueError(f"purity_sample must be 'auto', 'all' or a number of rows, got {purity_sample!r}")
    else:
        m = check_positive_int(purity_sample, name="purity_sample")
    if m >= n:
        return None
    return np.sort(np.random.default_rng([seed, _PURITY_STREAM]).choice(n, size=m, replace=False))


def probcover_greedy(graph, budget, lab, seed, *, return_scores=False):
    """Greedy max coverage on a :func:`probcover_graph` from the labelled indices ``lab`` (int64): ``budget``
    picks in pick order (and the scores of :func:`select_probcover`)."""
    n = graph[-1]
    idx, scores = _probcover_greedy(graph[:-1], n, budget, lab, seed)
    return _finish(idx, scores, budget, lab, return_scores)


def purity_delta(emb, num_classes, *, purity_threshold=0.95, delta_grid=None, seed=0, kmeans_niter=100,
                 purity_sample="auto", kmeans_points_per_centroid="auto") -> float:
    """The largest ball radius whose balls are ``purity_threshold``-pure w.r.t. K-means (ProbCover's rule).

    K-means with K = ``num_classes`` (seeded, ``kmeans_niter`` Lloyd iterations); a ball is pure when all
    its points share the K-means cluster of its centre, i.e. when ``delta`` is at most the distance ``r``
    from the centre to the nearest point of another cluster. Purity is a step function of delta, so with
    ``delta_grid=None`` the largest radius is exact: the ``purity_threshold`` quantile of ``r`` from the
    top; with a grid, the largest grid value that keeps the purity. This is the radius
    :func:`select_probcover` uses with ``delta=None`` and the same arguments. ``r`` is a float64 distance (float32
    products find the candidates). O(m n d) time in chunks for ``m`` rows, O(n) memory. Warns (and returns 0)
    when no positive radius is pure enough.

    Args:
        emb: embeddings ``(n, d)``.
        num_classes: K-means clusters (the number of classes), ``2 <= num_classes <= n``.
        purity_threshold: alpha in ``(0, 1]`` (the paper: 0.95).
        delta_grid: optional candidate radii (finite, positive).
        seed: K-means seed (and the row sample's).
        kmeans_niter: Lloyd iterations of K-means.
        purity_sample: rows whose ``r`` give the quantile: ``"all"``, a number of seeded rows, or ``"auto"``
            (every row up to 200,000 points, else 20,000 rows: the purity's standard error is then about 0.0015).
        kmeans_points_per_centroid: K-means on a seeded sample (see :func:`uslkit.select.select_usl`).

    Returns:
        delta (float), the ball radius.
    """
    x = check_embeddings(emb)
    seed = check_seed(seed)
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")
    return math.sqrt(_purity_delta2_of(x, num_classes, purity_threshold, delta_grid, seed, kmeans_niter,
                                       purity_sample, kmeans_points_per_centroid))


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


def _d2_slack(norms: np.ndarray, max_norm: float, d: int) -> np.ndarray:
    """Bound on |float32 ``|a|^2 + |b|^2 - 2 a.b`` - exact| for rows of norms ``norms`` and any ``|b| <= max_norm``:
    ``2 (d + 8) u (|a| + |b|)^2``, about twice the ``(2d + 4) u (...)^2`` of a ``d + 2``-term dot product and the
    float32 squared norms (``u = 2^-24``)."""
    return 2.0 * (d + 8) * 2.0**-24 * (norms.astype(np.float64) + max_norm) ** 2


def _exact_pairs(x, rows, cols) -> np.ndarray:
    """float64 squared distances of the pairs ``(rows[t], cols[t])`` (:func:`uslkit._kernels.pair_sq_dists`)."""
    from .._kernels import pair_sq_dists

    out = np.empty(rows.size, dtype=np.float64)
    if rows.size:
        pair_sq_dists(x, np.ascontiguousarray(rows, dtype=np.int64), np.ascontiguousarray(cols, dtype=np.int64), out)
    return out


def _aug(x):
    """``(rows_aug, cols_aug, norms)``: ``[a, |a|^2, 1]`` and ``[-2a, 1, |a|^2]`` (float32) so that one product gives
    squared distances, and the float64 row norms."""
    n = x.shape[0]
    sq = np.einsum("nd,nd->n", x, x)
    ones = np.ones((n, 1), dtype=np.float32)
    return (np.concatenate([x, sq[:, None], ones], axis=1), np.concatenate([-2.0 * x, ones, sq[:, None]], axis=1),
            np.sqrt(sq.astype(np.float64)))


def _sq_dist_blocks(x: np.ndarray):
    """Yield ``(start, d2)``: float32 squared distances of rows ``start:start+c`` of ``x`` to every row, clamped at 0.
    Blocks in parallel (:func:`uslkit._blas.map_blocks`, each one single-threaded BLAS call). The float32 values only
    sort pairs into sure and unsure ones (within :func:`_d2_slack` of a threshold); unsure pairs are decided by
    :func:`_exact_pairs`, so no result depends on the GEMM's rounding."""
    n = x.shape[0]
    rows_aug, cols_aug, _ = _aug(x)
    step = _chunk_rows(n, factor=4)  # float32 blocks: 4x the float64 entry bound

    def block(s):
        d2 = rows_aug[s : s + step] @ cols_aug.T
        np.maximum(d2, 0.0, out=d2)
        return s, d2

    yield from map_blocks(block, range(0, n, step))


def _purity_r2(x, clusters, rows=None) -> np.ndarray:
    """float64 squared distance from each of ``rows`` (default all) to the nearest point of another cluster.

    Tiles of :data:`_R2_ROWS` rows x ``_CHUNK_ELEMS / _R2_ROWS`` columns (row blocks in parallel, single-threaded
    BLAS): float32 distances keep a running minimum per row over the other clusters' columns, and every pair within
    twice the rounding bound of that running minimum is a candidate, decided in float64 (the true nearest is always
    among them: its float32 value is at most the final float32 minimum plus twice the bound)."""
    n, d = x.shape
    rows = np.arange(n) if rows is None else rows
    rows_aug, cols_aug, norms = _aug(x)
    slack = _d2_slack(norms[rows], float(norms.max()), d)
    step = max(1, _CHUNK_ELEMS_R2 // _R2_ROWS)
    r2 = np.empty(rows.size, dtype=np.float64)

    def block(s):
        from .._kernels import other_cluster_candidates

        ids = rows[s : s + _R2_ROWS]
        own = np.ascontiguousarray(clusters[ids])
        lhs = rows_aug[ids]
        slack2 = 2.0 * slack[s : s + ids.size]
        low = np.full(ids.size, np.inf, dtype=np.float32)
        cand_r, cand_c = [], []
        room = 8 * ids.size
        for c0 in range(0, n, step):
            d2 = lhs @ cols_aug[c0 : c0 + step].T
            col_cl = clusters[c0 : c0 + step]
            out_r, out_c = np.empty(room, dtype=np.int64), np.empty(room, dtype=np.int64)
            m = other_cluster_candidates(d2, own, col_cl, slack2, low, out_r, out_c)
            if m > room:  # more near-ties than room: list them again with enough
                out_r, out_c = np.empty(m, dtype=np.int64), np.empty(m, dtype=np.int64)
                other_cluster_candidates(d2, own, col_cl, slack2, low, out_r, out_c)
            cand_r.append(out_r[:m])
            cand_c.append(out_c[:m] + c0)
        r, c = np.concatenate(cand_r), np.concatenate(cand_c)
        exact = _exact_pairs(x, ids[r], c)
        best = np.full(ids.size, np.inf)
        np.minimum.at(best, r, exact)
        r2[s : s + ids.size] = best

    for _ in map_blocks(block, range(0, rows.size, _R2_ROWS)):
        pass
    return r2


def _purity_delta2(x, clusters, threshold, grid, sample=None) -> float:
    """Squared delta of the purity rule (see :func:`purity_delta`); ``clusters`` from K-means; ``sample``: the
    rows whose radius estimates the quantile (default every row)."""
    r2 = _purity_r2(x, clusters, sample)
    m = r2.size
    # ball(x, delta) is pure  <=>  r2(x) >= delta^2 (membership is strict: dist < delta)
    need = math.ceil(threshold * m - 1e-9)
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


def _inside(x, d2, ids, col_ids, delta2, slack):
    """Boolean ``(rows, cols)``: ``|x[ids[r]] - x[col_ids[c]]|^2 < delta2`` in float64, from the float32 block ``d2``
    and, within ``slack`` of ``delta2``, :func:`_exact_pairs`; a row's own column is always inside."""
    inside = d2 < (delta2 - slack)[:, None]
    r, c = np.nonzero(~inside & (d2 <= (delta2 + slack)[:, None]))
    if r.size:
        inside[r, c] = _exact_pairs(x, ids[r], col_ids[c]) < delta2
    own = ids[:, None] == col_ids[None, :]
    inside |= own
    return inside


def _csr(n, rows, cols):
    """``(indptr, cols)`` of the directed edges ``rows[t] -> cols[t]`` (rows grouped, in row order)."""
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return indptr, cols[order]


def _ball_graph(x, delta2):
    """Ball graph as CSR ``(indptr, cols)``, twice (a graph and its transpose: ``y`` is in the ball of ``x`` exactly
    when ``x`` is in the ball of ``y``, the float64 decision being symmetric bit for bit). All pairs, in blocks;
    ``None`` above :data:`_MAX_EDGES` edges."""
    n, d = x.shape
    idx_t = np.int32 if n < 2**31 else np.int64
    norms = np.sqrt(np.einsum("nd,nd->n", x, x, dtype=np.float64))
    slack = _d2_slack(norms, float(norms.max()), d)
    col_ids = np.arange(n)
    rows_out, cols_out, total = [], [], 0
    for s, d2 in _sq_dist_blocks(x):
        ids = np.arange(s, s + d2.shape[0])
        r, c = np.nonzero(_inside(x, d2, ids, col_ids, delta2, slack[ids]))
        total += r.size
        if total > _MAX_EDGES:  # not kept: the pruned search counts the balls, the greedy searches them
            return None
        rows_out.append(ids[r].astype(idx_t))
        cols_out.append(c.astype(idx_t))
    indptr, cols = _csr(n, np.concatenate(rows_out), np.concatenate(cols_out))
    return indptr, cols, indptr, cols


class _Partition:
    """Exact range search by triangle-inequality pruning: the points are split into lists (the nearest of seeded
    K-means centroids, as the IVF density's); list ``B`` can hold a point within ``delta`` of ``q`` only if
    ``|q - c_B| < delta + rad_B`` (``rad_B``: the farthest member of ``B`` from its centroid), so a query scans
    only those lists and misses nothing. How much it skips depends on the data; the result never does."""

    def __init__(self, x, seed):
        from ..knn import _list_partition

        n = x.shape[0]
        lists, cent, self.order, self.counts, self.starts = _list_partition(x, seed)
        self.lists = lists
        self.nlist = nlist = cent.shape[0]
        c64 = cent.astype(np.float64)
        rad = np.zeros(nlist)
        for s in range(0, n, 65536):
            dif = x[s : s + 65536].astype(np.float64) - c64[lists[s : s + 65536]]
            np.maximum.at(rad, lists[s : s + 65536], np.sqrt(np.einsum("ij,ij->i", dif, dif)))
        self.rad = rad * (1 + 1e-9) + 1e-12
        self.cent32 = cent.astype(np.float32)
        self.cent_norm = float(np.sqrt((c64**2).sum(axis=1)).max())

    def probes(self, q, q_norms, delta):
        """Lists any row of ``q`` may reach within ``delta`` (sorted)."""
        d = q.shape[1]
        d2 = (q.astype(np.float32) @ (-2.0 * self.cent32).T) + np.einsum("nd,nd->n", q, q)[:, None]
        d2 += (self.cent32.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)[None, :]
        low = np.maximum(d2 - _d2_slack(q_norms, self.cent_norm, d)[:, None], 0.0)
        return np.flatnonzero((np.sqrt(low) < delta * (1 + 1e-6) + self.rad[None, :]).any(axis=0))


class _Balls:
    """Ball queries for any rows: ``{j : |x_i - x_j| < delta}`` (float64 decisions, :func:`_inside`; the point itself
    always), scanning only the lists of a :class:`_Partition` that the triangle inequality leaves."""

    def __init__(self, x, delta2, seed):
        n, d = x.shape
        self.x, self.n, self.delta2, self.delta = x, n, delta2, math.sqrt(delta2)
        self.part = _Partition(x, seed)
        self.rows_aug, self.cols_aug, self.norms = _aug(x)
        self.slack = _d2_slack(self.norms, float(self.norms.max()), d)
        self.idx_t = np.int32 if n < 2**31 else np.int64

    def _edges(self, ids):
        """``(rows, cols, pairs scanned)`` of the balls of ``ids`` (one probe set for all of them)."""
        part, x = self.part, self.x
        probes = part.probes(x[ids], self.norms[ids], self.delta)
        col_ids = np.concatenate([part.order[part.starts[b] : part.starts[b + 1]] for b in probes])
        rows_out, cols_out = [], []
        step = _chunk_rows(col_ids.size, factor=4)
        cols = self.cols_aug[col_ids]
        for s in range(0, ids.size, step):
            blk = ids[s : s + step]
            d2 = self.rows_aug[blk] @ cols.T
            np.maximum(d2, 0.0, out=d2)
            r, c = np.nonzero(_inside(x, d2, blk, col_ids, self.delta2, self.slack[blk]))
            rows_out.append(blk[r].astype(self.idx_t))
            cols_out.append(col_ids[c].astype(self.idx_t))
        return np.concatenate(rows_out), np.concatenate(cols_out), ids.size * col_ids.size

    def by_list(self):
        """Yield ``(list, rows, cols, pairs scanned)`` for every list's points, lists in parallel."""
        part = self.part

        def one(lst):
            ids = part.order[part.starts[lst] : part.starts[lst + 1]]
            if ids.size == 0:
                empty = ids.astype(self.idx_t)
                return lst, empty, empty, 0
            return (lst,) + self._edges(ids)

        yield from map_blocks(one, range(part.nlist))

    def members(self, points) -> np.ndarray:
        """The members of the balls of ``points`` (int64 ``(q,)``), concatenated (a multiset), grouped by list."""
        if points.size == 0:
            return np.zeros(0, dtype=np.int64)
        lists = self.part.lists[points]
        order = np.argsort(lists, kind="stable")
        bounds = np.flatnonzero(np.diff(lists[order])) + 1
        groups = np.split(points[order], bounds)
        return np.concatenate([c for _, c, _ in map_blocks(self._edges, groups)]).astype(np.int64)


def _ball_graph_pruned(x, delta2, seed):
    """:func:`_ball_graph` by :class:`_Balls`: the same edges (the same float64 decisions). Above
    :data:`_MAX_EDGES` edges the graph is not kept: ``(balls, ball sizes)`` for :func:`_probcover_greedy`, which
    then searches the balls it needs (the same picks, O(n) memory)."""
    n = x.shape[0]
    balls = _Balls(x, delta2, seed)
    sizes = np.zeros(n, dtype=np.int64)
    rows_out, cols_out, total, scanned, keep = [], [], 0, 0, True
    for _, r, c, pairs in balls.by_list():
        total += r.size
        scanned += pairs
        sizes += np.bincount(r, minlength=n)
        if keep and total > _MAX_EDGES:
            keep = False
            rows_out, cols_out = [], []
            logger.info("probcover: more than %d edges; the ball graph is not kept, balls are searched as the "
                        "greedy needs them", _MAX_EDGES)
        if keep:
            rows_out.append(r)
            cols_out.append(c)
    logger.info("probcover ball graph (%d lists): %.1f%% of all pairs scanned, %d edges (mean ball %.1f)",
                balls.part.nlist, 100.0 * scanned / float(n) ** 2, total, total / n)
    if not keep:
        return balls, sizes
    indptr, cols = _csr(n, np.concatenate(rows_out), np.concatenate(cols_out))
    return indptr, cols, indptr, cols


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
    """Greedy max coverage on the ball graph: ``(picks in pick order, scores (n,))``. ``graph``: CSR and its
    transpose, or ``(balls, ball sizes)`` (a :class:`_Balls`: members searched when needed; by symmetry the balls
    that hold a point are the members of its own ball)."""
    if len(graph) == 2:
        balls, sizes = graph
        degree = sizes.copy()
        members = owners_of = balls.members
    else:
        indptr, cols, t_indptr, t_rows = graph
        degree = np.diff(indptr).astype(np.int64)  # uncovered points in each ball

        def members(points):
            return _gather(indptr, cols, points)

        def owners_of(points):
            return _gather(t_indptr, t_rows, points)

    covered = np.zeros(n, dtype=bool)

    def cover(points):
        new = np.unique(members(points))
        new = new[~covered[new]]
        covered[new] = True
        for s in range(0, new.size, _OWNER_BLOCK):
            owners = owners_of(new[s : s + _OWNER_BLOCK])
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
