"""USL: unsupervised selective labeling (Wang, Lian & Yu 2022, sec. 2.2 and Alg. 1).

kNN density, K-means with K = budget, then Alg. 1: the densest point of each cluster, re-picked
``iterations`` times under the inter-cluster regulariser (eqs. 5-7). :func:`select_usl` runs it all;
:func:`usl_regularized_selection` is the last step alone; :func:`usl_config` resolves the hyperparameters.
"""

from __future__ import annotations

import numpy as np

from .._validate import check_choice, check_embeddings, check_float, check_k, check_positive_int
from ..cluster import kmeans
from .._blas import map_blocks, matmul
from .._kernels import inverse_power_sums
from ._common import (
    _KNN_MODES,
    _VARIANTS,
    _argmax_per_group,
    _chunk_rows,
    _complete,
    _density,
    _finish,
    _group_index,
    _kmeans_mppc,
    _kmeans_points_per_centroid,
    _mask,
    _prepare,
)

__all__ = ["USL_PRESETS", "select_usl", "usl_config", "usl_regularized_selection"]

#: Hyperparameters of the USL ImageNet runs (Wang, Lian & Yu 2022, Table 14, "large-scale"; reference
#: configs ``ImageNet_usl_{moco,clip}_0.2.yaml`` and ``config.py``). ``iterations`` counts regularised
#: re-picks as in Alg. 1 (the reference's ``NITERS: 2`` = density pick + 1 re-pick). Table 14 gives
#: horizon 64; the released configs use 128 (MoCo, ``HORIZON_NUM`` default) and 32 (CLIP): we follow the
#: code. MoCo runs WITHOUT same-cluster exclusion in the reference (``EXCLUDE_SAME_CLUSTER: False``).
USL_PRESETS: dict[str, dict] = {
    "imagenet_moco": dict(k=20, horizon=128, momentum=0.0, iterations=1, lam=1.5, alpha=0.5,
                          exclude_same_cluster=False, kmeans_niter=100, kmeans_points_per_centroid="auto"),
    "imagenet_clip": dict(k=20, horizon=32, momentum=0.0, iterations=1, lam=0.05, alpha=1.0,
                          exclude_same_cluster=True, kmeans_niter=100, kmeans_points_per_centroid="auto"),
}

#: Small-scale (CIFAR / MedMNIST) defaults, Table 14 and the CIFAR reference code: k = 400, m_reg 0.9,
#: 10 iterations, alpha = lambda = 0.5 for budgets <= 100 and 1.0 above, 200 Lloyd iterations of K-means (on
#: every point up to 200,000 points, on a sample above: ``_kmeans_points_per_centroid``).
_USL_SMALL = dict(k=400, horizon=None, momentum=0.9, iterations=10, exclude_same_cluster=True, kmeans_niter=200,
                  kmeans_points_per_centroid="auto")
_USL_SMALL_BUDGET = 100  # alpha = lam = 0.5 up to this budget, 1.0 above (Table 14)

#: Squared distances are floored here before 1 / dist^alpha, so an exact duplicate of another cluster's
#: pick gets a huge but finite regulariser instead of a division by zero.
_D2_FLOOR = 1e-24

#: Each term 1 / dist^alpha is capped here so that sums over many picks stay finite for any alpha.
_TERM_CAP = 1e200


def select_usl(emb, budget, *, seed=0, k=None, alpha=None, lam=None, momentum=None, iterations=None,
               horizon=None, density_variant="paper", distance_power="paper", exclude_same_cluster=None,
               kmeans_niter=None, kmeans_points_per_centroid=None, knn_mode="auto", knn_nprobe=None, knn_pq_m=None,
               preset=None, return_scores=False):
    """USL selection (Wang, Lian & Yu 2022, sec. 2.2 and Alg. 1).

    (1) kNN density ``U(v) = 1 / mean_{j in kNN(v)} ||v - v_j||`` (eq. 3 up to constants, which change no
    argmax); (2) K-means with K = budget (seeded, every cluster non-empty); (3) the densest point of each
    cluster; (4) ``iterations`` times: ``Reg(v) = sum over the picks of OTHER clusters of
    1 / ||v - pick||^alpha`` (eq. 5), ``Reg_ema = m * Reg_ema + (1 - m) * Reg`` from 0 (eq. 6),
    ``U'(v) = U(v) - lam * Reg_ema`` (eq. 7), re-pick the argmax of ``U'`` in each cluster. ``U`` is not
    normalised (eq. 7 and the reference code), so ``lam`` is relative to 1 / typical neighbour distance;
    the defaults assume L2-normalised features. Hyperparameters left ``None``: :func:`usl_config`.

    Deviations from the USL reference code, as options (defaults follow the paper; Table 14's lambda and alpha were
    tuned on the reference's formulas, yet measured on Fashion-MNIST neither set of formulas is ahead by more than
    the seed spread, so the paper's stays the default: ``benchmarks/RESULTS.md``, "faithfulness questions"):
    ``density_variant="reference"`` (squared distances, the point itself among its k neighbours, see
    :func:`uslkit.knn.density_from_dists`); ``distance_power="reference"`` (squared distances in
    ``1 / dist^alpha``); the reference's ``NITERS`` is ``iterations + 1`` (it counts the density pick; its
    CIFAR config has 9 re-picks, Alg. 1 and our default 10). Not followed: the reference suppresses
    own-cluster terms by adding 1e10 to the squared distance (changes no argmax) and crashes on exact
    duplicates or empty clusters (here those terms are removed, distances floored at 1e-12, clusters never
    empty); its CIFAR ``HORIZON_DIST`` (ignore picks at squared distance >= 4) never applies to unit-norm
    features. Reg is computed in row chunks, never as an ``n x budget`` matrix. At scale (defaults above 200,000
    points): the kNN search is IVF (``knn_mode``) and Lloyd runs on a seeded sample of at least 200,000 points and
    256 per cluster, then every point joins its nearest centroid (``kmeans_points_per_centroid``, faiss'
    subsampling; the reference runs all points on a GPU).

    Args:
        emb: embeddings ``(n, d)``, preferably L2-normalised.
        budget: number of picks = number of K-means clusters.
        seed: seeds K-means (and IVF training for approximate kNN).
        k, alpha, lam, momentum, iterations, horizon, exclude_same_cluster, kmeans_niter,
            kmeans_points_per_centroid, preset: see
            :func:`usl_config` (``horizon``: only the nearest picks of all clusters count in Reg, then the
            own cluster's is dropped; ``exclude_same_cluster=False``: only the point itself is skipped).
        density_variant, distance_power: ``"paper"`` or ``"reference"`` (above).
        knn_mode: ``"exact"``, ``"ivf"``, ``"hnsw"``, ``"auto"`` (:func:`uslkit.knn.knn`) or ``"ivfpq"``: the density
            from a compressed index, for embeddings larger than memory (a memory map of tens of millions of rows;
            estimated distances, see :func:`uslkit.knn.knn_density`).
        knn_nprobe: IVF lists visited per query (HNSW ``efSearch``); ``None`` = the :func:`uslkit.knn.knn`
            default. Lower is faster and less exact.
        knn_pq_m: ``knn_mode="ivfpq"``: bytes (sub-vectors) per point of the compressed index; ``None`` = ``d / 4``
            (:func:`uslkit.knn.knn_density`'s ``pq_m``).
        return_scores: also return the final utility ``U'`` (``U`` when ``iterations == 0``).

    Returns:
        int64 ``(budget,)`` in cluster order (the pick of cluster 0, 1, ..., K-1), as the reference's
        ``selected_indices_<budget>_<seed>.npy``.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, None)
    n = x.shape[0]
    cfg = usl_config(
        n, budget, preset=preset, k=k, alpha=alpha, lam=lam, momentum=momentum, iterations=iterations,
        horizon=horizon, exclude_same_cluster=exclude_same_cluster, kmeans_niter=kmeans_niter,
        kmeans_points_per_centroid=kmeans_points_per_centroid,
    )
    density_variant = check_choice(density_variant, _VARIANTS, name="density_variant")
    distance_power = check_choice(distance_power, _VARIANTS, name="distance_power")
    knn_mode = check_choice(knn_mode, _KNN_MODES, name="knn_mode")
    if density_variant == "reference" and cfg["k"] < 2:
        raise ValueError(f"density_variant='reference' needs k >= 2 (the point itself is one), got k={cfg['k']}")
    density = _density(x, cfg["k"], density_variant, knn_mode, knn_nprobe, seed, knn_pq_m)
    clusters, _ = kmeans(x, budget, seed=seed, niter=cfg["kmeans_niter"],
                         max_points_per_centroid=_kmeans_mppc(cfg["kmeans_points_per_centroid"]))
    idx, util = _usl_iterate(
        x, density, clusters, budget, lam=cfg["lam"], alpha=cfg["alpha"], momentum=cfg["momentum"],
        iterations=cfg["iterations"], horizon=cfg["horizon"], exclude_same_cluster=cfg["exclude_same_cluster"],
        squared=distance_power == "reference",
    )
    idx = _complete(idx, util, budget, _mask(n, lab))
    return _finish(idx, util, budget, lab, return_scores)


def usl_regularized_selection(emb, density, cluster_labels, *, lam, alpha, momentum, iterations, horizon=None,
                              exclude_same_cluster=True, distance_power="paper", return_scores=False):
    """USL's iterative regularised selection (Alg. 1) on a given density and clustering.

    The step of :func:`select_usl` after the kNN density and K-means, for notebooks that show the stages
    separately. Iteration 0 takes the argmax of ``density`` in every cluster; then ``iterations`` rounds
    of eqs. 5-7 (see :func:`select_usl`). Ties in an argmax go to the lowest index.

    Args:
        emb: ``(n, d)`` embeddings.
        density: ``(n,)`` unregularised utility ``U`` (e.g. :func:`uslkit.knn.knn_density`), finite.
        cluster_labels: ``(n,)`` int cluster ids in ``[0, K)``; K = number of picks (empty ids give none).
        lam, alpha, momentum, iterations, horizon, exclude_same_cluster, distance_power: as
            :func:`select_usl`.
        return_scores: also return the final utility ``U'``.

    Returns:
        int64 picks in cluster order (one per non-empty cluster), or ``(picks, utility float64 (n,))``.
    """
    x = check_embeddings(emb)
    n = x.shape[0]
    dens = np.asarray(density, dtype=np.float64)
    if dens.shape != (n,) or not np.isfinite(dens).all():
        raise ValueError(f"density must be a finite array of shape ({n},), got shape {dens.shape}")
    cl = np.asarray(cluster_labels)
    if cl.shape != (n,) or cl.dtype.kind not in "iu" or (n and cl.min() < 0):
        raise ValueError(f"cluster_labels must be non-negative integers of shape ({n},), got {cl.dtype} {cl.shape}")
    cl = cl.astype(np.int64)
    k = int(cl.max()) + 1
    lam = check_float(lam, name="lam", low=0.0)
    alpha = check_float(alpha, name="alpha", low=0.0, low_open=True)
    momentum = check_float(momentum, name="momentum", low=0.0, high=1.0, high_open=True)
    iterations = check_positive_int(iterations, name="iterations", minimum=0)
    if horizon is not None:
        horizon = check_positive_int(horizon, name="horizon")
    squared = check_choice(distance_power, _VARIANTS, name="distance_power") == "reference"
    picks, util = _usl_iterate(
        x, dens, cl, k, lam=lam, alpha=alpha, momentum=momentum, iterations=iterations, horizon=horizon,
        exclude_same_cluster=bool(exclude_same_cluster), squared=squared,
    )
    picks = picks[picks >= 0]
    return (picks, util) if return_scores else picks


def usl_config(n, budget, *, preset=None, **given) -> dict:
    """USL hyperparameters for ``n`` points and ``budget`` picks, resolved as :func:`select_usl` does.

    Precedence: a value in ``given`` that is not ``None`` > ``preset`` (:data:`USL_PRESETS`) > the
    small-scale defaults (Table 14 and the CIFAR reference code): ``k = min(400, n - 1)``, momentum 0.9,
    10 iterations, ``alpha = lam = 0.5`` if ``budget <= 100`` else 1.0, no horizon, own-cluster picks
    excluded (eq. 5), 200 K-means iterations, K-means on every point up to 200,000 points and on a sample above.

    Args:
        n: number of points (at least 2, for the kNN density).
        budget: number of picks (selects the small-scale alpha and lambda).
        preset: ``None``, ``"imagenet_moco"`` or ``"imagenet_clip"``.
        **given: any of ``k`` (kNN neighbours, ``1 <= k <= n - 1``), ``alpha`` (> 0), ``lam`` (>= 0),
            ``momentum`` (``[0, 1)``), ``iterations`` (re-picks, >= 0), ``horizon`` (picks counted in Reg,
            ``None`` = all), ``exclude_same_cluster`` (bool), ``kmeans_niter`` (Lloyd iterations),
            ``kmeans_points_per_centroid`` (``"auto"``, ``"all"`` or an int: Lloyd on a seeded sample of that many
            points per cluster, see :func:`uslkit.cluster.kmeans`' ``max_points_per_centroid``).

    Returns:
        dict with exactly those nine keys, validated; ``kmeans_points_per_centroid`` resolved for ``n`` and
        ``budget`` (``"all"`` or an int).
    """
    n = check_positive_int(n, name="n")
    budget = check_positive_int(budget, name="budget")
    if preset is None:
        base = dict(_USL_SMALL)
        small = budget <= _USL_SMALL_BUDGET
        base.update(alpha=0.5 if small else 1.0, lam=0.5 if small else 1.0)
    elif isinstance(preset, str) and preset in USL_PRESETS:
        base = dict(USL_PRESETS[preset])
    else:
        raise ValueError(f"unknown USL preset {preset!r}; valid: {[None, *sorted(USL_PRESETS)]}")
    unknown = sorted(set(given) - set(base))
    if unknown:
        raise ValueError(f"unknown USL hyperparameter(s) {unknown}; valid: {sorted(base)}")
    cfg = {key: (given[key] if given.get(key) is not None else base[key]) for key in base}
    if given.get("k") is None:
        cfg["k"] = min(base["k"], n - 1)
    if n < 2:
        raise ValueError(f"USL needs at least 2 samples for the kNN density, got n={n}")
    cfg["k"] = check_k(cfg["k"], n)
    cfg["alpha"] = check_float(cfg["alpha"], name="alpha", low=0.0, low_open=True)
    cfg["lam"] = check_float(cfg["lam"], name="lam", low=0.0)
    cfg["momentum"] = check_float(cfg["momentum"], name="momentum", low=0.0, high=1.0, high_open=True)
    cfg["iterations"] = check_positive_int(cfg["iterations"], name="iterations", minimum=0)
    cfg["kmeans_niter"] = check_positive_int(cfg["kmeans_niter"], name="kmeans_niter")
    cfg["kmeans_points_per_centroid"] = _kmeans_points_per_centroid(cfg["kmeans_points_per_centroid"], n, budget)
    if cfg["horizon"] is not None:
        cfg["horizon"] = check_positive_int(cfg["horizon"], name="horizon")
    if not isinstance(cfg["exclude_same_cluster"], (bool, np.bool_)):
        raise ValueError(f"exclude_same_cluster must be True, False or None, got {cfg['exclude_same_cluster']!r}")
    return cfg


def _usl_iterate(x, density, clusters, k, *, lam, alpha, momentum, iterations, horizon,
                 exclude_same_cluster, squared):
    """Alg. 1. Returns ``(picks (k,) with -1 for empty clusters, final utility (n,))``."""
    groups = _group_index(clusters, k)
    util = np.array(density, dtype=np.float64, copy=True)
    picks = _argmax_per_group(util, groups)  # iteration 0: density peaks
    reg_ema = np.zeros_like(util)
    for _ in range(iterations):
        valid = picks >= 0
        reg = _usl_reg(  # eq. 5
            x, picks[valid], np.flatnonzero(valid), clusters, alpha=alpha, squared=squared, horizon=horizon,
            exclude_same_cluster=exclude_same_cluster,
        )
        reg_ema = momentum * reg_ema + (1.0 - momentum) * reg  # eq. 6
        util = density - lam * reg_ema  # eq. 7
        picks = _argmax_per_group(util, groups)
    return picks, util


def _usl_reg(x, picks, pick_clusters, clusters, *, alpha, squared, horizon, exclude_same_cluster):
    """Eq. 5 for every point, in row chunks: ``sum_j 1 / dist(v, pick_j)^alpha`` over the counted picks.

    Counted picks: the ``horizon`` nearest (all if ``None``), minus the own cluster's pick when
    ``exclude_same_cluster``, minus the point itself otherwise. float64 throughout.
    """
    n = x.shape[0]
    m = picks.size
    p = x[picks].astype(np.float64)
    # |v - p|^2 = [v, |v|^2, 1] . [-2p, 1, |p|^2]: one matmul gives the squared distances
    p_aug = np.concatenate([-2.0 * p, np.ones((m, 1)), np.einsum("md,md->m", p, p)[:, None]], axis=1)
    h = None if horizon is None or horizon >= m else int(horizon)
    expo = alpha if squared else alpha / 2.0  # applied to the squared distance
    # column of the pick that must not count for each row: own cluster's pick, or the row itself
    if exclude_same_cluster:
        col_of_cluster = np.full(int(clusters.max()) + 1, -1, dtype=np.int64)
        col_of_cluster[pick_clusters] = np.arange(m)
        skip_col = col_of_cluster[clusters]
    else:
        skip_col = np.full(n, -1, dtype=np.int64)
        skip_col[picks] = np.arange(m)
    reg = np.empty(n, dtype=np.float64)
    step = _chunk_rows(m)
    if h is None:  # one compiled pass per block of rows, blocks on a pool of threads (single-threaded BLAS each)
        def block(s):
            xs = x[s : s + step].astype(np.float64)
            x_aug = np.concatenate([xs, np.einsum("nd,nd->n", xs, xs)[:, None], np.ones((xs.shape[0], 1))], axis=1)
            inverse_power_sums(x_aug @ p_aug.T, skip_col[s : s + step], _D2_FLOOR, float(expo), _TERM_CAP,
                               reg[s : s + step])

        for _ in map_blocks(block, range(0, n, step)):
            pass
        return reg
    for s in range(0, n, step):
        xs = x[s : s + step].astype(np.float64)
        x_aug = np.concatenate([xs, np.einsum("nd,nd->n", xs, xs)[:, None], np.ones((xs.shape[0], 1))], axis=1)
        d2 = matmul(x_aug, p_aug.T)  # the same bits on any thread count
        np.maximum(d2, _D2_FLOOR, out=d2)
        far = None if h is None else np.argpartition(d2, h - 1, axis=1)[:, h:]
        terms = _inverse_power(d2, expo)  # in place: d2 is consumed
        if far is not None:
            np.put_along_axis(terms, far, 0.0, axis=1)
        sc = skip_col[s : s + step]
        rows = np.flatnonzero(sc >= 0)
        terms[rows, sc[rows]] = 0.0
        reg[s : s + step] = terms.sum(axis=1)
    return reg


def _inverse_power(d2: np.ndarray, expo: float) -> np.ndarray:
    """``d2 ** -expo`` in place, with fast paths for the common exponents; terms capped at ``_TERM_CAP``."""
    if expo == 0.5:
        np.sqrt(d2, out=d2)
        np.divide(1.0, d2, out=d2)
    elif expo == 1.0:
        np.divide(1.0, d2, out=d2)
    elif expo == 0.25:
        np.sqrt(d2, out=d2)
        np.sqrt(d2, out=d2)
        np.divide(1.0, d2, out=d2)
    else:
        with np.errstate(over="ignore"):
            np.power(d2, -expo, out=d2)
    if expo * 24 > 199:  # only then can (floor 1e-24) ** -expo exceed the cap
        np.minimum(d2, _TERM_CAP, out=d2)
    return d2
