"""TypiClust (Hacohen et al. 2022): the most typical point of the largest uncovered clusters."""

from __future__ import annotations

import numpy as np

from .._validate import check_positive_int
from ..cluster import kmeans
from ..knn import knn_mean_distance
from ._common import _finish, _group_index, _kmeans_mppc, _kmeans_points_per_centroid, _mask, _members, _prepare

__all__ = ["select_typiclust"]


def select_typiclust(emb, budget, *, labeled=None, seed=0, max_clusters=500, min_cluster_size=5, k=20,
                     kmeans_niter=100, kmeans_points_per_centroid="auto", squared=False, return_scores=False):
    """TypiClust (Hacohen et al. 2022; reference code avihu111/TypiClust).

    Cluster all points into ``min(|L| + budget, max_clusters)`` clusters; ignore clusters with
    ``<= min_cluster_size`` points; visit the remaining clusters with the fewest labelled points first,
    then the largest (then the lowest cluster id), round-robin; in the visited cluster pick the unlabelled,
    not yet picked member of highest typicality ``1 / (mean distance to its k' nearest neighbours among
    those members + 1e-5)``, ``k' = min(k, members // 2)`` (recomputed after every pick in the cluster, as
    the reference; a single remaining member is taken directly). When every valid cluster is exhausted
    the selection continues, round-robin in the same order, over the ignored small clusters, so exactly
    ``budget`` indices come back (the reference crashes there).

    Deviations: K-means is :func:`uslkit.cluster.kmeans` (seeded Lloyd, at most ``kmeans_niter`` iterations) for every
    cluster count (above 200,000 points on a seeded sample, ``kmeans_points_per_centroid``); the reference uses
    sklearn ``KMeans`` up to 50 clusters and ``MiniBatchKMeans`` above, unseeded. The paper's typicality uses
    plain L2 distances (default); the reference gets SQUARED ones from faiss ``IndexFlatL2``: ``squared=True``
    reproduces that.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of picks.
        labeled: indices already labelled (they count in cluster sizes and in "fewest labelled").
        seed: K-means seed.
        max_clusters: cap on the number of clusters (reference 500).
        min_cluster_size: clusters with at most this many points are skipped at first (reference 5).
        k: neighbours for typicality (reference 20).
        kmeans_niter: Lloyd iterations.
        kmeans_points_per_centroid: ``"auto"`` (every point up to 200,000 points, above it a seeded sample of at
            least 200,000 and 256 per cluster), ``"all"`` or an int (see :func:`uslkit.cluster.kmeans`).
        squared: squared distances in the typicality (reference behaviour).
        return_scores: also return each unlabelled point's typicality within its cluster before any pick
            (``NaN`` for labelled points and single-point clusters).

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    n = x.shape[0]
    max_clusters = check_positive_int(max_clusters, name="max_clusters")
    min_cluster_size = check_positive_int(min_cluster_size, name="min_cluster_size", minimum=0)
    k = check_positive_int(k, name="k")
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")

    n_clusters = min(lab.size + budget, max_clusters, n)
    mppc = _kmeans_points_per_centroid(kmeans_points_per_centroid, n, n_clusters)
    clusters, _ = kmeans(x, n_clusters, seed=seed, niter=kmeans_niter, max_points_per_centroid=_kmeans_mppc(mppc))
    sizes = np.bincount(clusters, minlength=n_clusters)
    existing = np.bincount(clusters[lab], minlength=n_clusters)
    ids = np.arange(n_clusters)
    order = np.lexsort((ids, -sizes, existing))  # fewest labelled, then largest, then lowest id
    valid = sizes[order] > min_cluster_size
    phases = [order[valid], order[~valid]]

    groups = _group_index(clusters, n_clusters)
    avail = ~_mask(n, lab)
    scores = np.full(n, np.nan)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for c in range(n_clusters):  # typicality of every cluster before any pick (scores; first visits)
        mem = _members(groups, c)
        mem = mem[avail[mem]]
        if mem.size:
            typ = _typicality(x, mem, k, squared)
            cache[c] = (mem, typ)
            scores[mem] = typ

    picks: list[int] = []
    for phase in phases:
        while len(picks) < budget:
            progressed = False
            for c in phase:
                if len(picks) == budget:
                    break
                c = int(c)
                if c not in cache:
                    mem = _members(groups, c)
                    mem = mem[avail[mem]]
                    if mem.size == 0:
                        continue
                    cache[c] = (mem, _typicality(x, mem, k, squared))
                mem, typ = cache.pop(c)
                best = int(mem[0]) if mem.size == 1 else int(mem[int(np.argmax(typ))])
                picks.append(best)
                avail[best] = False
                progressed = True
            if not progressed:
                break
    return _finish(np.array(picks, dtype=np.int64), scores, budget, lab, return_scores)


def _typicality(x, members, k, squared) -> np.ndarray:
    """TypiClust typicality of each member among ``members`` (sorted indices); NaN for one member."""
    kk = min(k, members.size // 2)
    if kk < 1:
        return np.full(members.size, np.nan)
    return 1.0 / (knn_mean_distance(x[members], kk, squared=squared) + 1e-5)
