"""What every selection method shares: the ``_prepare``/``_finish`` contract, group helpers, the kNN density.

``_prepare`` validates the common arguments, the method computes, ``_complete`` fills empty-cluster gaps
with the best-scoring free points, ``_finish`` guarantees exactly ``budget`` distinct unlabelled indices.
Groups (clusters) are indexed once by :func:`_group_index`; :func:`_argmax_per_group` is then O(n).
"""

from __future__ import annotations

import numpy as np

from .._validate import check_budget, check_embeddings, check_indices, check_positive_int, check_seed
from ..knn import AUTO_EXACT_MAX_N, knn_density

#: Upper bound on the number of float64 entries of any (rows x columns) block held at once (32 MB).
_CHUNK_ELEMS = 2**22

_KNN_MODES = ["exact", "ivf", "hnsw", "auto", "ivfpq"]  # lists: error messages show them as before
_VARIANTS = ["paper", "reference"]


#: ``kmeans_points_per_centroid="auto"``: Lloyd on every point up to ``AUTO_EXACT_MAX_N`` points (where the kNN
#: search also stops being exact); above it on a seeded sample of at least that many points and at least this many
#: per centroid (faiss' default subsampling cap).
KMEANS_POINTS_PER_CENTROID = 256


def _kmeans_points_per_centroid(value, n: int, k: int):
    """Resolve a method's ``kmeans_points_per_centroid`` option for ``n`` points and ``k`` clusters: ``"all"``
    (Lloyd on every point), an int ``m >= 1`` (on a seeded sample of ``m k`` points when ``n > m k``:
    :func:`uslkit.cluster.kmeans`' ``max_points_per_centroid``) or ``"auto"``: ``"all"`` up to
    ``AUTO_EXACT_MAX_N`` points, above it ``max(256, ceil(AUTO_EXACT_MAX_N / k))``, so Lloyd sees at least
    200,000 points and each iteration costs at most ``max(200,000, 256 k) k d`` instead of ``n k d``."""
    if isinstance(value, str) and value in ("auto", "all"):
        if value == "all" or n <= AUTO_EXACT_MAX_N:
            return "all"
        return max(KMEANS_POINTS_PER_CENTROID, -(-AUTO_EXACT_MAX_N // k))
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"kmeans_points_per_centroid must be 'auto', 'all' or a positive integer, got {value!r}")
    return int(value)


def _kmeans_mppc(resolved):
    """:func:`uslkit.cluster.kmeans`' ``max_points_per_centroid`` for a resolved option (``"all"`` -> None)."""
    return None if resolved == "all" else resolved


def _chunk_rows(width: int, factor: int = 1) -> int:
    """Rows of ``width`` entries per block of at most ``factor * _CHUNK_ELEMS`` entries (at least 1)."""
    return max(1, (factor * _CHUNK_ELEMS) // max(width, 1))


# --------------------------------------------------------------------------------------------------------
# The contract
# --------------------------------------------------------------------------------------------------------
def _prepare(emb, budget, seed, labeled):
    """Validate the common arguments: ``(x float32, budget, seed, labeled int64)``."""
    x = check_embeddings(emb)
    n = x.shape[0]
    lab = check_indices(labeled, n, name="labeled")
    budget = check_budget(budget, n, n_labeled=lab.size)
    seed = check_seed(seed)
    return x, budget, seed, lab


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    """Boolean ``(n,)`` mask, True at ``idx``."""
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


def _complete(picks: np.ndarray, scores: np.ndarray, budget: int, blocked: np.ndarray) -> np.ndarray:
    """Drop ``-1`` (empty cluster) entries and append the best-scoring free points up to ``budget``."""
    picks = picks[picks >= 0]
    if picks.size >= budget:
        return picks[:budget]
    free = ~blocked
    free[picks] = False
    cand = np.flatnonzero(free)
    key = np.where(np.isnan(scores[cand]), -np.inf, scores[cand])
    extra = cand[np.argsort(-key, kind="stable")[: budget - picks.size]]
    return np.concatenate([picks, extra])


def _finish(idx, scores, budget, lab, return_scores):
    """Check the common contract (exactly ``budget`` distinct, unlabelled indices) and package."""
    idx = np.asarray(idx, dtype=np.int64)
    if idx.shape != (budget,) or np.unique(idx).size != budget or np.isin(idx, lab).any():
        raise RuntimeError(  # pragma: no cover - a bug in a selection method, never a user error
            f"internal error: selection of {idx.size} indices ({np.unique(idx).size} distinct) for budget {budget}"
        )
    if return_scores:
        return idx, np.asarray(scores, dtype=np.float64)
    return idx


# --------------------------------------------------------------------------------------------------------
# Groups (clusters)
# --------------------------------------------------------------------------------------------------------
def _group_index(labels: np.ndarray, n_groups: int):
    """Members of each group in ascending index order: ``(order, starts, sizes, nonempty, n_groups)``."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n_groups)
    starts = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    nonempty = np.flatnonzero(counts)
    return order, starts, counts, nonempty, n_groups


def _members(groups, g: int) -> np.ndarray:
    """Indices in group ``g`` (ascending) of a :func:`_group_index`."""
    order, starts, counts, _, _ = groups
    return order[starts[g] : starts[g] + counts[g]]


def _argmax_per_group(values: np.ndarray, groups) -> np.ndarray:
    """Index of the largest value in each group (ties: lowest index); ``-1`` for empty groups.

    ``values`` must not contain NaN (``-inf`` is fine). O(n).
    """
    order, starts, counts, nonempty, n_groups = groups
    out = np.full(n_groups, -1, dtype=np.int64)
    if nonempty.size == 0:
        return out
    v = values[order]
    st = starts[nonempty]
    best = np.maximum.reduceat(v, st)
    hit = np.flatnonzero(v == np.repeat(best, counts[nonempty]))
    grp = np.searchsorted(st, hit, side="right") - 1
    first = np.ones(hit.size, dtype=bool)
    first[1:] = grp[1:] != grp[:-1]
    out[nonempty[grp[first]]] = order[hit[first]]
    return out


# --------------------------------------------------------------------------------------------------------
# Density
# --------------------------------------------------------------------------------------------------------
def _density(x, k, variant, mode, nprobe, seed, pq_m=None) -> np.ndarray:
    """USL kNN density (eq. 3, or the reference variant): :func:`uslkit.knn.knn_density`."""
    if nprobe is not None:
        nprobe = check_positive_int(nprobe, name="knn_nprobe")
    if pq_m is not None:
        if mode != "ivfpq":
            raise ValueError(f"knn_pq_m={pq_m!r} applies to knn_mode='ivfpq' only, got knn_mode={mode!r}")
        from .._ivfpq import check_pq_m

        pq_m = check_pq_m(pq_m, x.shape[1], name="knn_pq_m")
    return knn_density(x, k, variant=variant, mode=mode, seed=seed, nprobe=nprobe, pq_m=pq_m)
