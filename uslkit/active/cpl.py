"""Clustering pseudo-labels (CPL) for NTKCPL (paper 003, Sec. 3.4, Alg. 2).

Constrained K-means (COP-KMeans, Wagstaff et al. 2001) with the constraints the labelled set gives: labelled
samples of one class must share a cluster (must-link) and labelled samples of different classes must not
(cannot-link). Then the cluster holding the most "confusing" samples (members whose predicted class differs
from the cluster's dominant prediction) is split in two by K-means, again and again, until the wanted number
of clusters: impure clusters are split, pure ones kept, which keeps over-clustering low.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_embeddings, check_positive_int, check_seed

__all__ = ["constrained_kmeans", "cpl_labels"]


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared distances, float64, without BLAS (the same bits on any thread count)."""
    out = np.empty((x.shape[0], c.shape[0]))
    for j in range(c.shape[0]):
        out[:, j] = ((x - c[j]) ** 2).sum(1)
    return out


def constrained_kmeans(x, n_clusters: int, labeled, labels, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """COP-KMeans with must-link within and cannot-link across the classes of the labelled samples.

    Starts from the kit's seeded K-means (:func:`uslkit.cluster.kmeans`, ``niter`` Lloyd iterations), then runs
    constrained Lloyd iterations: unlabelled samples go to their nearest centroid; each class's labelled
    samples go together to the cluster with the smallest sum of their squared distances among the clusters no
    other class holds (classes in order of decreasing count, ties by class id); centroids are member means (an
    empty cluster keeps its centroid); it stops when no assignment changes or after ``niter`` iterations.

    Args:
        x: ``(n, d)`` features. n_clusters: ``K``, at least the number of distinct labelled classes.
        labeled: int ``(m,)`` labelled indices. labels: int ``(m,)`` their classes.

    Returns:
        int64 ``(n,)`` cluster ids in ``[0, K)``.
    """
    from ..cluster import kmeans

    x = check_embeddings(x, name="x", dtype=np.float64)
    k = check_positive_int(n_clusters, name="n_clusters", maximum=x.shape[0])
    seed = check_seed(seed)
    lab = np.asarray(labeled, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    if lab.shape != y.shape:
        raise ValueError(f"{lab.size} labelled indices for {y.size} labels")
    classes, counts = np.unique(y, return_counts=True)
    if classes.size > k:
        raise ValueError(f"{classes.size} labelled classes cannot be kept apart in {k} clusters (cannot-link)")
    order = classes[np.lexsort((classes, -counts))]
    groups = [lab[y == c] for c in order]
    _, cent = kmeans(x.astype(np.float32), k, seed=seed, niter=niter)
    cent = cent.astype(np.float64)
    assign = np.full(x.shape[0], -1, dtype=np.int64)
    for _ in range(max(1, niter)):
        d2 = _sq_dists(x, cent)
        new = np.argmin(d2, axis=1)
        taken = np.zeros(k, dtype=bool)
        for g in groups:
            cost = np.where(taken, np.inf, d2[g].sum(0))
            j = int(np.argmin(cost))
            new[g] = j
            taken[j] = True
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                cent[j] = x[members].mean(0)
    return assign


def cpl_labels(x, pred, labeled, labels, *, n_clusters: int, c0: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Alg. 2: :func:`constrained_kmeans` into ``c0`` clusters, then ``n_clusters - c0`` times split the cluster
    with the most confusing samples (size minus the count of its most frequent predicted class in ``pred``;
    ties: lowest cluster id; only clusters of at least 2 samples) with 2-means; the second half gets the next
    id. ``n_clusters <= c0`` returns the constrained clustering into ``n_clusters``.

    Args:
        x: ``(n, d)`` the features clustered (``f_al``, the head's penultimate features, or ``f_self``).
        pred: int ``(n,)`` the current classifier's predicted classes (``Y_pre``).
        labeled, labels: the labelled set and its classes (the constraints).

    Returns:
        int64 ``(n,)`` CPL class per sample, in ``[0, max(n_clusters, ...))``.
    """
    from ..cluster import kmeans

    x = check_embeddings(x, name="x", dtype=np.float64)
    pred = np.asarray(pred, dtype=np.int64)
    if pred.shape != (x.shape[0],):
        raise ValueError(f"pred has shape {pred.shape}; x has {x.shape[0]} rows")
    c0 = min(check_positive_int(c0, name="c0"), check_positive_int(n_clusters, name="n_clusters"))
    cl = constrained_kmeans(x, c0, labeled, labels, seed=seed, niter=niter)
    for new_id in range(c0, n_clusters):
        confusing = np.full(new_id, -1)
        for j in range(new_id):
            members = pred[cl == j]
            if members.size >= 2:
                confusing[j] = members.size - np.bincount(members).max()
        j = int(np.argmax(confusing))
        if confusing[j] < 0:
            break  # every cluster has a single sample: nothing left to split
        idx = np.flatnonzero(cl == j)
        half, _ = kmeans(x[idx].astype(np.float32), 2, seed=seed + new_id, niter=niter)
        cl[idx[half == 1]] = new_id
    return cl
