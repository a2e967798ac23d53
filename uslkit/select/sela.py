"""Ablation: USL's density peaks inside SeLa's equal-size Sinkhorn clusters (Asano, Rupprecht & Vedaldi 2020)."""

from __future__ import annotations

from .._validate import check_choice, check_float, check_k
from ..cluster import sinkhorn_cluster
from ._common import (
    _KNN_MODES,
    _VARIANTS,
    _argmax_per_group,
    _complete,
    _density,
    _finish,
    _group_index,
    _kmeans_mppc,
    _kmeans_points_per_centroid,
    _mask,
    _prepare,
)

__all__ = ["select_sela"]


def select_sela(emb, budget, *, seed=0, lam=10.0, k=None, density_variant="paper", knn_mode="auto",
                knn_nprobe=None, knn_pq_m=None, kmeans_points_per_centroid="auto", return_scores=False):
    """Densest point of each SeLa cluster: Sinkhorn-Knopp equipartition with K = budget.

    :func:`uslkit.cluster.sinkhorn_cluster` splits the data into ``budget`` clusters of roughly equal size
    (SeLa's equipartition constraint, Asano, Rupprecht & Vedaldi 2020; ``lam`` = its Sinkhorn power, 10 for
    CIFAR and 25 for ImageNet); each cluster contributes its point of highest kNN density (USL eq. 3, as
    :func:`uslkit.select.select_usl` without the regularisation). An ablation comparing equal-size clusters
    with K-means' in USL's pipeline; not a method from the SeLa paper itself.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of picks = clusters.
        seed: seeds the clustering (and IVF training for approximate kNN).
        lam: Sinkhorn lambda (> 0).
        k: kNN neighbours of the density; default ``min(400, n - 1)`` as USL on CIFAR.
        density_variant: ``"paper"`` or ``"reference"`` (see :func:`uslkit.select.select_usl`).
        knn_mode, knn_nprobe, knn_pq_m: kNN search mode, IVF/HNSW effort and compressed code size (see
            :func:`uslkit.select.select_usl`).
        kmeans_points_per_centroid: of the spherical K-means that starts the clustering (``"auto"``: every point
            up to 200,000 points, a seeded sample above; see :func:`uslkit.select.select_usl`).
        return_scores: also return the kNN density.

    Returns:
        int64 ``(budget,)`` in cluster order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, None)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"sela needs at least 2 samples for the kNN density, got n={n}")
    lam = check_float(lam, name="lam", low=0.0, low_open=True)
    k = check_k(min(400, n - 1) if k is None else k, n)
    density_variant = check_choice(density_variant, _VARIANTS, name="density_variant")
    knn_mode = check_choice(knn_mode, _KNN_MODES, name="knn_mode")
    if density_variant == "reference" and k < 2:
        raise ValueError(f"density_variant='reference' needs k >= 2, got k={k}")
    density = _density(x, k, density_variant, knn_mode, knn_nprobe, seed, knn_pq_m)
    mppc = _kmeans_points_per_centroid(kmeans_points_per_centroid, n, budget)
    clusters, _ = sinkhorn_cluster(x, budget, seed=seed, lam=lam, max_points_per_centroid=_kmeans_mppc(mppc))
    picks = _argmax_per_group(density, _group_index(clusters, budget))
    idx = _complete(picks, density, budget, _mask(n, lab))
    return _finish(idx, density, budget, lab, return_scores)
