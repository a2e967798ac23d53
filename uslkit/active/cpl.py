"""Clustering pseudo-labels (CPL) for NTKCPL (paper 003, Sec. 3.4, Alg. 2).

Constrained K-means (COP-KMeans, Wagstaff et al. 2001) with the constraints the labelled set gives, then the
cluster holding the most "confusing" samples (members whose predicted class differs from the cluster's dominant
prediction) is split in two by K-means, again and again, until the wanted number of clusters: impure clusters
are split, pure ones kept, which keeps over-clustering low.

Which constraints: the paper sets the number of clusters to half the labels "so that each cluster includes two
labelled samples on average", which is possible only if labelled samples of one class may sit in different
clusters. The default (``constraint="cannot-link"``) therefore keeps labelled samples of different classes
apart and nothing more; ``"class"`` also ties each class's labelled samples together (must-link, one cluster
per class, :func:`uslkit.cluster.constrained_kmeans`), under which every cluster beyond the number of classes
has no labelled sample.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_embeddings, check_positive_int, check_seed

__all__ = ["cpl_labels", "cop_kmeans_cannot_link"]


def _sq_dists(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(n, k)`` squared distances, float64, without BLAS (the same bits on any thread count)."""
    out = np.empty((x.shape[0], c.shape[0]))
    for j in range(c.shape[0]):
        out[:, j] = ((x - c[j]) ** 2).sum(1)
    return out


def cop_kmeans_cannot_link(x, n_clusters: int, labeled, labels, *, seed: int = 0, niter: int = 20) -> np.ndarray:
    """COP-KMeans (Wagstaff et al. 2001) with cannot-link constraints between labelled samples of different
    classes: from the kit's seeded K-means, rounds of assigning unlabelled samples to the nearest centroid and
    labelled samples, one at a time, to the nearest centroid whose cluster holds no labelled sample of another
    class; then member means (an empty cluster keeps its centroid), until nothing changes or ``niter`` rounds.
    Labelled samples are visited class by class in turn (the first of every class, then the second, ...), so
    each class finds a free cluster whenever ``n_clusters`` is at least the number of labelled classes (which
    is required). Returns int64 ``(n,)`` cluster ids."""
    from ..cluster import kmeans

    x = check_embeddings(x, name="x", dtype=np.float64)
    k = check_positive_int(n_clusters, name="n_clusters", maximum=x.shape[0])
    lab = np.asarray(labeled, dtype=np.int64)
    y = np.asarray(labels, dtype=np.int64)
    classes = np.unique(y)
    if classes.size > k:
        raise ValueError(f"{classes.size} labelled classes cannot be kept apart in {k} clusters (cannot-link)")
    per_class = [lab[y == c] for c in classes]
    order = [(g[r], c) for r in range(max((g.size for g in per_class), default=0))
             for c, g in zip(classes, per_class) if r < g.size]
    _, cent = kmeans(x.astype(np.float32), k, seed=check_seed(seed), niter=niter)
    cent = cent.astype(np.float64)
    assign = np.full(x.shape[0], -1, dtype=np.int64)
    for _ in range(max(1, niter)):
        d2 = _sq_dists(x, cent)
        new = np.argmin(d2, axis=1)
        owner = np.full(k, -1, dtype=np.int64)
        for i, c in order:
            for j in np.argsort(d2[i], kind="stable"):
                if owner[j] in (-1, c):
                    new[i], owner[j] = j, c
                    break
        if np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                cent[j] = x[members].mean(0)
    return assign


def cpl_labels(x, pred, labeled, labels, *, n_clusters: int, c0: int, seed: int = 0, niter: int = 20,
               constraint: str = "cannot-link") -> np.ndarray:
    """Alg. 2: constrained K-means into ``c0`` clusters (at least one per labelled class), then ``n_clusters - c0``
    times split the cluster with the most confusing samples (size minus the count of its most frequent
    predicted class in ``pred``; ties: lowest cluster id; only clusters of at least 2 samples) with 2-means;
    the half K-means numbers 1 gets the next id. ``n_clusters <= c0`` returns the constrained clustering into
    ``n_clusters``.

    Args:
        x: ``(n, d)`` the features clustered (``f_al``, the head's penultimate features, or ``f_self``).
        pred: int ``(n,)`` the current classifier's predicted classes (``Y_pre``).
        labeled, labels: the labelled set and its classes (the constraints).
        constraint: ``"cannot-link"`` or ``"class"`` (module docstring).

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
    if constraint == "cannot-link":
        cl = cop_kmeans_cannot_link(x, c0, labeled, labels, seed=seed, niter=niter)
    elif constraint == "class":
        cl, _ = constrained_kmeans(x.astype(np.float32), c0, labeled, labeled_clusters=fixed,
                                   seed=check_seed(seed), niter=niter)
    else:
        raise ValueError(f"constraint must be 'cannot-link' or 'class', got {constraint!r}")
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
