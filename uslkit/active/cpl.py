"""Clustering pseudo-labels (CPL) for NTKCPL (paper 003, Sec. 3.4, Alg. 2).

Constrained K-means (:func:`uslkit.cluster.constrained_kmeans`) with the constraints the labelled set gives:
labelled samples of one class share a cluster (must-link) and labelled samples of different classes do not
(cannot-link), the labelled samples fixed to one cluster per class. Then the cluster holding the most
"confusing" samples (members whose predicted class differs from the cluster's dominant prediction) is split in
two by K-means, again and again, until the wanted number of clusters: impure clusters are split, pure ones
kept, which keeps over-clustering low.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_embeddings, check_positive_int, check_seed

__all__ = ["cpl_labels"]


def cpl_labels(x, pred, labeled, labels, *, n_clusters: int, c0: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Alg. 2: constrained K-means into ``c0`` clusters (at least one per labelled class), then ``n_clusters - c0``
    times split the cluster with the most confusing samples (size minus the count of its most frequent
    predicted class in ``pred``; ties: lowest cluster id; only clusters of at least 2 samples) with 2-means;
    the half K-means numbers 1 gets the next id. ``n_clusters <= c0`` returns the constrained clustering into
    ``n_clusters``.

    Args:
        x: ``(n, d)`` the features clustered (``f_al``, the head's penultimate features, or ``f_self``).
        pred: int ``(n,)`` the current classifier's predicted classes (``Y_pre``).
        labeled, labels: the labelled set and its classes (the constraints).

    Returns:
        int64 ``(n,)`` CPL class per sample, in ``[0, max(n_clusters, ...))``.
    """
    from ..cluster import constrained_kmeans, kmeans

    x = check_embeddings(x, name="x", dtype=np.float64)
    pred = np.asarray(pred, dtype=np.int64)
    if pred.shape != (x.shape[0],):
        raise ValueError(f"pred has shape {pred.shape}; x has {x.shape[0]} rows")
    c0 = min(check_positive_int(c0, name="c0"), check_positive_int(n_clusters, name="n_clusters"))
    classes, fixed = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)
    if classes.size > c0:
        raise ValueError(f"{classes.size} labelled classes cannot be kept apart in {c0} clusters (cannot-link)")
    cl, _ = constrained_kmeans(x.astype(np.float32), c0, labeled, labeled_clusters=fixed, seed=check_seed(seed),
                               niter=niter)
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
