"""K-means sampling for low-budget active learning (Pourahmadi, Nooralinejad & Pirsiavash 2022).

Single-batch: K = budget clusters, the member closest to each centroid. Multi-batch: the same clustering
of all points, each cluster contributing its nearest UNLABELLED member. Reference code:
UCDvision/low-budget-al (``fast_kmeans``, ``accu_kmeans``).
"""

from __future__ import annotations

import numpy as np

from .._validate import check_positive_int
from ..cluster import kmeans
from ._common import (
    _argmax_per_group,
    _chunk_rows,
    _finish,
    _group_index,
    _kmeans_mppc,
    _kmeans_points_per_centroid,
    _mask,
    _prepare,
)

__all__ = ["select_kmeans", "select_kmeans_multi"]


def select_kmeans(emb, budget, *, seed=0, niter=20, nredo=5, kmeans_points_per_centroid="auto", return_scores=False):
    """Single-batch K-means sampling: K = budget clusters, the point closest to each centre.

    Reference (``fast_kmeans``): ``faiss.Kmeans(niter=20, nredo=5)``, then "among the 200 nearest points
    to the centroid, the first one assigned to that cluster"; empty clusters are dropped, so it can return
    fewer than the budget. Here: :func:`uslkit.cluster.kmeans` (Lloyd from random points as faiss, exact
    assignments, no subsampling, no empty cluster) and the exact nearest MEMBER of each cluster to its
    centroid (= the reference whenever that member is among the 200 nearest points). Above 200,000 points Lloyd
    runs on a seeded sample (``kmeans_points_per_centroid``; faiss' cap of 256 per centroid applies to the
    reference at every size). If a cluster were
    empty, its pick would be the nearest not-yet-picked point to its centroid, so exactly ``budget``
    indices come back.

    Args:
        emb: embeddings ``(n, d)`` (the paper uses L2-normalised SSL features).
        budget: number of clusters = number of picks.
        seed: K-means seed.
        niter, nredo: K-means iterations (at most: it stops at convergence) and restarts (the paper: 20, 5).
        kmeans_points_per_centroid: ``"auto"`` (every point up to 200,000 points, above it a sample of at least
            200,000 and 256 per cluster), ``"all"`` or an int (see :func:`uslkit.cluster.kmeans`).
        return_scores: also return ``-||x - centroid of its cluster||`` (closer = more wanted).

    Returns:
        int64 ``(budget,)`` in cluster order (cluster 0, 1, ..., K-1).
    """
    return select_kmeans_multi(emb, budget, labeled=None, seed=seed, niter=niter, nredo=nredo,
                               kmeans_points_per_centroid=kmeans_points_per_centroid, return_scores=return_scores)


def select_kmeans_multi(emb, budget, *, labeled=None, seed=0, niter=20, nredo=5, kmeans_points_per_centroid="auto",
                        return_scores=False):
    """Multi-batch K-means ("multi K-means", sec. 3 of the paper): add ``budget`` picks to a labelled set.

    The paper "uses the difference of two consecutive budget sizes as the number of clusters and picks
    those nearest examples to centers that have not been labeled previously": all points (labelled
    included) are clustered into K = budget clusters, and each cluster contributes its unlabelled member
    nearest to the centroid. Reference (``accu_kmeans``): same, with the 200-nearest search, and a cluster
    whose members are all labelled is DROPPED (fewer picks than the budget). Here such a cluster takes the
    nearest unlabelled, not-yet-picked point to its centroid, so exactly ``budget`` indices come back.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of new picks (= clusters).
        labeled: indices labelled in earlier rounds (may be empty; then this equals :func:`select_kmeans`).
        seed, niter, nredo, kmeans_points_per_centroid: as :func:`select_kmeans`.
        return_scores: ``-distance to own centroid``; ``NaN`` for labelled samples.

    Returns:
        int64 ``(budget,)`` in cluster order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    niter = check_positive_int(niter, name="niter")
    nredo = check_positive_int(nredo, name="nredo")
    mppc = _kmeans_points_per_centroid(kmeans_points_per_centroid, x.shape[0], budget)
    clusters, centroids = kmeans(x, budget, seed=seed, niter=niter, nredo=nredo,
                                 max_points_per_centroid=_kmeans_mppc(mppc))
    idx, scores = _nearest_member_per_cluster(x, clusters, centroids, lab)
    return _finish(idx, scores, budget, lab, return_scores)


def _nearest_member_per_cluster(x, clusters, centroids, lab):
    """Per cluster, the available member closest to the centroid (ties: lowest index); fallbacks after.

    Returns ``(idx in cluster order, scores = -distance to own centroid, NaN for labelled)``.
    """
    n = x.shape[0]
    k = centroids.shape[0]
    c64 = centroids.astype(np.float64)
    d2 = np.empty(n)
    step = _chunk_rows(x.shape[1])
    for s in range(0, n, step):
        diff = x[s : s + step].astype(np.float64) - c64[clusters[s : s + step]]
        d2[s : s + step] = np.einsum("nd,nd->n", diff, diff)
    scores = -np.sqrt(d2)
    labelled = _mask(n, lab)
    scores[labelled] = np.nan
    groups = _group_index(clusters, k)
    picks = _argmax_per_group(np.where(labelled, -np.inf, scores), groups)
    picks[(picks >= 0) & labelled[np.maximum(picks, 0)]] = -1  # a cluster with only labelled members
    taken = labelled.copy()
    taken[picks[picks >= 0]] = True
    for j in np.flatnonzero(picks < 0):  # fall back: nearest free point to the centroid, any cluster
        diff = x.astype(np.float64) - c64[j]
        dj = np.where(taken, np.inf, np.einsum("nd,nd->n", diff, diff))
        picks[j] = int(np.argmin(dj))
        taken[picks[j]] = True
    return picks, scores
