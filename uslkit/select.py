"""Selection methods and one dispatcher: which ``budget`` samples to label, from embeddings alone.

Data flow: embeddings -> (kNN density, clusters) -> **selection** -> labels file. Every method is a pure
function ``select_<name>(emb, budget, *, ...)`` with keyword-only options; :func:`select` dispatches by name
through :data:`METHODS`. Common contract:

- returns int64 ``(budget,)``: exactly ``budget`` DISTINCT indices into ``emb``, none of them in
  ``labeled``, in the order documented per method; whatever the clustering does (empty clusters,
  many exact duplicates, ``budget == n``) the method completes deterministically to exactly ``budget``;
- with ``return_scores=True`` returns ``(indices, scores)`` where ``scores`` is float64 ``(n,)``: the
  method's per-sample utility, HIGHER = MORE WANTED (e.g. to show the most and least wanted samples as
  in USL Fig. 6); ``NaN`` where the method has none (random/stratified everywhere, labelled samples);
- all randomness comes from ``seed``: the same seed gives bit-for-bit the same output on CPU;
- invalid input (NaN/inf, not 2-D, budget < 1 or > pool, k >= n, bad options) raises ``ValueError``
  naming the offending value.

Methods (paper numbers refer to ``papers/``; "notes" = REFERENCE_NOTES.md):

=============== ==========================================================================================
``random``      uniform without replacement from the unlabelled pool
``stratified``  ORACLE baseline: equal number per TRUE class (needs ``labels``), as SSL benchmarks do
``kmeans``      K-means with K = budget, the member closest to each centroid (paper 001)
``kmeans_multi`` multi-batch K-means: as ``kmeans`` but picks the nearest UNLABELLED member (paper 001)
``usl``         USL (paper 000, Alg. 1): kNN density + K-means + iterative inter-cluster regularisation
``typiclust``   TypiClust (notes sec. 4): most typical point of the largest uncovered clusters
``probcover``   ProbCover (notes sec. 4): greedy max coverage of delta-balls
``coreset``     greedy k-center (Sener & Savarese), as the low-budget AL baseline
``sela``        densest point of each SeLa Sinkhorn-equipartitioned cluster (paper 002 + USL density)
=============== ==========================================================================================
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings

import numpy as np

from ._validate import check_budget, check_embeddings, check_indices, check_positive_int, check_seed

__all__ = [
    "select",
    "METHODS",
    "USL_PRESETS",
    "select_random",
    "select_stratified",
    "select_kmeans",
    "select_kmeans_multi",
    "select_usl",
    "usl_regularized_selection",
    "select_typiclust",
    "select_probcover",
    "select_coreset",
    "select_sela",
]

#: Hyperparameters of the USL ImageNet runs (paper 000 Table 14, "large-scale"; reference configs
#: ``ImageNet_usl_{moco,clip}_0.2.yaml`` and ``config.py``). ``iterations`` counts regularised re-picks
#: as in Alg. 1 (the reference's ``NITERS: 2`` = density pick + 1 re-pick). Table 14 gives horizon 64;
#: the released configs use 128 (MoCo, ``HORIZON_NUM`` default) and 32 (CLIP): we follow the code.
#: MoCo runs WITHOUT same-cluster exclusion in the reference (``EXCLUDE_SAME_CLUSTER: False``), CLIP with.
USL_PRESETS: dict[str, dict] = {
    "imagenet_moco": dict(k=20, horizon=128, momentum=0.0, iterations=1, lam=1.5, alpha=0.5,
                          exclude_same_cluster=False, kmeans_niter=100),
    "imagenet_clip": dict(k=20, horizon=32, momentum=0.0, iterations=1, lam=0.05, alpha=1.0,
                          exclude_same_cluster=True, kmeans_niter=100),
}

#: Small-scale (CIFAR / MedMNIST) USL defaults, paper 000 Table 14 and notes sec. 1: k = 400, m_reg 0.9,
#: 10 iterations, alpha = lambda = 0.5 for budgets <= 100 and 1.0 above; the reference runs 200 Lloyd
#: iterations of K-means on CIFAR.
_USL_SMALL = dict(k=400, horizon=None, momentum=0.9, iterations=10, exclude_same_cluster=True, kmeans_niter=200)
_USL_SMALL_BUDGET = 100  # alpha = lam = 0.5 up to this budget, 1.0 above (Table 14)

#: Upper bound on the number of float64 entries of any (rows x columns) block held at once (32 MB).
_CHUNK_ELEMS = 2**22

#: Squared distances are floored here before 1 / dist^alpha, so an exact duplicate of another cluster's
#: pick gets a huge but finite regulariser instead of a division by zero.
_D2_FLOOR = 1e-24

#: Each term 1 / dist^alpha is capped here so that sums over many picks stay finite for any alpha.
_TERM_CAP = 1e200

#: ProbCover: refuse to build a ball graph with more directed edges than this (int32 CSR and its transpose,
#: about 4 GB at peak while building); a delta that large covers nearly everything with a few balls anyway.
_MAX_EDGES = 200_000_000

_KNN_MODES = ("exact", "ivf", "hnsw", "auto")
_VARIANTS = ("paper", "reference")


# ==========================================================================================================
# Dispatcher
# ==========================================================================================================
def select(method: str, emb, budget: int, *, seed=0, labeled=None, labels=None, return_scores=False, **params):
    """Run the selection method ``method`` (a key of :data:`METHODS`).

    Args:
        method: one of ``sorted(METHODS)``.
        emb: embeddings ``(n, d)``.
        budget: number of samples to select, ``1 <= budget <= n - len(labeled)``.
        seed: the only source of randomness.
        labeled: indices already labelled (excluded from the selection); only the methods that add to an
            existing labelled set accept a non-empty one (``random``, ``stratified``, ``kmeans_multi``,
            ``typiclust``, ``probcover``, ``coreset``); the others raise ``ValueError``.
        labels: TRUE class labels ``(n,)``, used only by the oracle ``stratified`` baseline and ignored
            by every other method (no unsupervised method ever sees them).
        return_scores: also return the per-sample utility (see the module docstring).
        **params: method options (see each ``select_<method>``); an unknown name raises ``ValueError``
            listing the valid ones.

    Returns:
        int64 ``(budget,)`` indices, or ``(indices, scores float64 (n,))`` with ``return_scores``.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; valid methods: {sorted(METHODS)}")
    fn = METHODS[method]
    options = _keyword_options(fn)
    own = {"seed", "labeled", "labels", "return_scores"}
    unknown = sorted(set(params) - (options - own))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for method {method!r}; valid: {sorted(options - own)}"
        )
    kwargs = dict(params, seed=seed, return_scores=return_scores)
    if "labeled" in options:
        kwargs["labeled"] = labeled
    elif labeled is not None and np.asarray(labeled).size > 0:
        takes = sorted(m for m, f in METHODS.items() if "labeled" in _keyword_options(f))
        raise ValueError(
            f"method {method!r} selects from scratch and does not take a labelled set "
            f"(got {np.asarray(labeled).size} labelled indices); methods that do: {takes}"
        )
    if "labels" in options:
        kwargs["labels"] = labels
    return fn(emb, budget, **kwargs)


def _keyword_options(fn) -> set[str]:
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}


# ==========================================================================================================
# Baselines: random and the stratified oracle
# ==========================================================================================================
def select_random(emb, budget, *, labeled=None, seed=0, return_scores=False):
    """Uniformly random samples from the unlabelled pool, without replacement.

    Args:
        emb: embeddings ``(n, d)`` (validated, otherwise unused).
        budget: ``1 <= budget <= n - len(labeled)``.
        labeled: indices already labelled, never drawn.
        seed: seeds ``numpy.random.default_rng``.
        return_scores: also return scores (all ``NaN``: random selection has no utility).

    Returns:
        int64 ``(budget,)`` in draw order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    n = x.shape[0]
    pool = np.flatnonzero(~_mask(n, lab))
    idx = np.random.default_rng(seed).choice(pool, size=budget, replace=False)
    return _finish(idx, np.full(n, np.nan), budget, lab, return_scores)


def select_stratified(emb, budget, *, labels=None, labeled=None, seed=0, return_scores=False):
    """ORACLE baseline: the same number of random samples from every TRUE class.

    This is what SSL benchmarks (FixMatch, USB) do to build labelled sets, and what USL's "stratified"
    column reports; it needs the ground truth, so it is an upper reference, not a selection method.
    The quota is ``budget // C`` per class (``C`` = classes present in the unlabelled pool); the remainder
    goes one each to the first classes in ascending class-id order; a class with too few samples gives its
    shortfall to the others in the same order. Negative labels mean "unknown" and are never drawn.

    Args:
        emb: embeddings ``(n, d)`` (validated, otherwise unused).
        budget: number of samples.
        labels: true class labels, integer ``(n,)``. Required.
        labeled: indices already labelled, never drawn.
        seed: seeds the per-class draws.
        return_scores: also return scores (all ``NaN``).

    Returns:
        int64 ``(budget,)``: grouped by ascending class id, draw order within a class.
    """
    if labels is None:
        raise ValueError(
            "method 'stratified' is an oracle baseline and needs the true class labels: pass labels= "
            "(an integer array of shape (n,))"
        )
    x = check_embeddings(emb)
    n = x.shape[0]
    y = _check_class_labels(labels, n)
    lab = check_indices(labeled, n, name="labeled")
    seed = check_seed(seed)
    avail = ~_mask(n, lab) & (y >= 0)
    budget = check_positive_int(budget, name="budget")
    if budget > avail.sum():
        raise ValueError(
            f"budget {budget} is larger than the {int(avail.sum())} unlabelled samples with a known class"
        )
    classes = np.unique(y[avail])
    members = [np.flatnonzero(avail & (y == c)) for c in classes]
    quota = _stratified_quota(budget, np.array([m.size for m in members]))
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(m)[:q] for m, q in zip(members, quota)]
    idx = np.concatenate(parts)
    return _finish(idx, np.full(n, np.nan), budget, lab, return_scores)


def _check_class_labels(labels, n: int) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one class per embedding row), got {y.shape}")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(np.mod(y, 1) == 0):
            raise ValueError("labels must be integer class ids (got non-integer or NaN values)")
    elif y.dtype.kind not in "iu":
        raise ValueError(f"labels must be integer class ids, got dtype {y.dtype}")
    return y.astype(np.int64)


def _stratified_quota(budget: int, capacity: np.ndarray) -> np.ndarray:
    """Equal shares of ``budget`` over classes with ``capacity`` samples each; remainder to the first."""
    quota = np.zeros(capacity.size, dtype=np.int64)
    left = budget
    while left > 0:
        open_ = np.flatnonzero(quota < capacity)
        share, extra = divmod(left, open_.size)
        add = np.full(open_.size, share, dtype=np.int64)
        add[:extra] += 1
        add = np.minimum(add, capacity[open_] - quota[open_])
        quota[open_] += add
        left -= int(add.sum())
    return quota


# ==========================================================================================================
# K-means (low-budget AL, paper 001)
# ==========================================================================================================
def select_kmeans(emb, budget, *, seed=0, niter=20, nredo=5, return_scores=False):
    """Single-batch K-means sampling (paper 001): K = budget clusters, the point closest to each centre.

    Reference (UCDvision/low-budget-al ``fast_kmeans``, notes sec. 3): ``faiss.Kmeans(niter=20, nredo=5)``,
    then "among the 200 nearest points to the centroid, the first one assigned to that cluster"; empty
    clusters are dropped, so it can return fewer than the budget. Here: :func:`uslkit.cluster.kmeans`
    (same faiss K-means, no subsampling, no empty cluster) and the exact nearest MEMBER of each cluster to
    its centroid (= the reference whenever that member is among the 200 nearest points). If a cluster
    were empty, its pick would be the nearest not-yet-picked point to its centroid, so exactly ``budget``
    indices come back.

    Args:
        emb: embeddings ``(n, d)`` (the paper uses L2-normalised SSL features).
        budget: number of clusters = number of picks.
        seed: K-means seed.
        niter, nredo: faiss K-means iterations and restarts (paper 001: 20 and 5).
        return_scores: also return ``-||x - centroid of its cluster||`` (closer = more wanted).

    Returns:
        int64 ``(budget,)`` in cluster order (cluster 0, 1, ..., K-1).
    """
    return select_kmeans_multi(emb, budget, labeled=None, seed=seed, niter=niter, nredo=nredo,
                               return_scores=return_scores)


def select_kmeans_multi(emb, budget, *, labeled=None, seed=0, niter=20, nredo=5, return_scores=False):
    """Multi-batch K-means (paper 001, "multi K-means"): add ``budget`` picks to an existing labelled set.

    Paper 001 sec. 3: "uses the difference of two consecutive budget sizes as the number of clusters and
    picks those nearest examples to centers that have not been labeled previously". So all points
    (labelled included) are clustered into K = budget clusters, and each cluster contributes its
    unlabelled member nearest to the centroid. Reference (``accu_kmeans``): same, with the 200-nearest
    search, and a cluster whose members are all labelled is DROPPED (fewer picks than the budget). Here
    such a cluster instead takes the nearest unlabelled, not-yet-picked point to its centroid, so exactly
    ``budget`` indices come back. (The alternative of clustering into ``|L| + budget`` clusters, or
    :func:`uslkit.cluster.constrained_kmeans`, is not what the paper or its code do.)

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of new picks (= clusters).
        labeled: indices labelled in earlier rounds (may be empty; then this equals :func:`select_kmeans`).
        seed, niter, nredo: as :func:`select_kmeans`.
        return_scores: ``-distance to own centroid``; ``NaN`` for labelled samples.

    Returns:
        int64 ``(budget,)`` in cluster order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    niter = check_positive_int(niter, name="niter")
    nredo = check_positive_int(nredo, name="nredo")
    from .cluster import kmeans

    clusters, centroids = kmeans(x, budget, seed=seed, niter=niter, nredo=nredo)
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
    step = max(1, _CHUNK_ELEMS // x.shape[1])
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


# ==========================================================================================================
# USL (paper 000)
# ==========================================================================================================
def select_usl(
    emb,
    budget,
    *,
    seed=0,
    k=None,
    alpha=None,
    lam=None,
    momentum=None,
    iterations=None,
    horizon=None,
    density_variant="paper",
    distance_power="paper",
    exclude_same_cluster=None,
    kmeans_niter=None,
    knn_mode="auto",
    knn_nprobe=None,
    preset=None,
    return_scores=False,
):
    """USL, training-free unsupervised selective labeling (paper 000, sec. 2.2 and Alg. 1).

    Steps: (1) kNN density ``U(v) = 1 / mean_{j in kNN(v)} ||v - v_j||`` (eq. 3 up to constants, which do
    not change any argmax); (2) K-means with K = budget (seeded, every cluster non-empty); (3) iteration 0
    picks the densest point of each cluster; (4) ``iterations`` times: for every point,
    ``Reg(v) = sum over the picks of OTHER clusters of 1 / ||v - pick||^alpha`` (eq. 5), the moving average
    ``Reg_ema = m * Reg_ema + (1 - m) * Reg`` from 0 (eq. 6), utility ``U'(v) = U(v) - lam * Reg_ema``
    (eq. 7) and re-pick the argmax of ``U'`` in each cluster. See :func:`usl_regularized_selection`.

    Density is NOT normalised before subtracting ``lam * Reg``: the paper writes ``U(V_i) = 1/D(V_i, k)``
    in eq. 7 and the reference code subtracts from ``1 / mean`` directly, so ``lam`` is relative to the
    density's scale (1 / typical neighbour distance; the defaults assume L2-normalised features).

    Defaults (``preset=None``: small-scale, paper 000 Table 14 / notes sec. 1): ``k = min(400, n - 1)``,
    ``momentum 0.9``, ``iterations 10``, ``alpha = lam = 0.5`` if ``budget <= 100`` else ``1.0``, all picks
    considered (no horizon), own-cluster picks excluded (eq. 5), 200 K-means iterations (reference CIFAR).
    ``preset="imagenet_moco"``/``"imagenet_clip"``: :data:`USL_PRESETS` (k 20, horizon 128/32, momentum 0,
    one regularised re-pick, lam 1.5/0.05, alpha 0.5/1.0). Explicit arguments override the preset.

    Reference-code differences, offered as options (defaults follow the paper):

    - ``density_variant="reference"``: squared distances, the point itself counted among its k neighbours
      (:func:`uslkit.knn.density_from_dists`).
    - ``distance_power="reference"``: squared distances inside ``1 / dist^alpha`` (effective exponent
      ``2 alpha`` on the plain norm).
    - iteration count: the reference ``NITERS`` counts the density pick too: ``NITERS = iterations + 1``
      (CIFAR reference: 9 regularised re-picks; paper Alg. 1 / Table 14 and our default: 10).
    - the reference suppresses own-cluster terms by adding 1e10 to the squared distance (a constant
      ~1e-5 per point, which changes no argmax) and crashes on exact duplicates or empty clusters; here
      own-cluster terms are removed, zero distances are floored at 1e-12 and clusters are never empty.
    - the CIFAR reference also ignores picks at squared distance >= 4 (``HORIZON_DIST``), which never
      happens on unit-norm features; not implemented.

    Memory: Reg is computed in row chunks of at most 4M float64 entries, never an ``n x budget`` matrix;
    kNN uses ``knn_mode`` (``"auto"``: exact up to 200k points, IVF above).

    Time, measured on a shared 2-core CPU before the faster kNN re-ranking (see benchmarks/ for current
    figures): 60,000 x 64, budget 40, defaults: about 17 s, of which the exact k = 400 kNN took 15 s,
    K-means 1-2 s and the regularisation under 1 s; raw faiss search alone at k = 400 takes about 7 s on a
    quiet machine. 1,000,000 x 128, budget 1000, ``knn_nprobe=16`` (now the kNN default): 4 min with
    ``preset="imagenet_moco"`` and 9 min with the small-scale defaults (12 GB). On a synthetic Gaussian
    mixture nprobe 16 gave recall@20 of only 0.78 (0.99 with 32): check ``knn(..., return_recall=True)``.

    Args:
        emb: embeddings ``(n, d)``, preferably L2-normalised.
        budget: number of picks = number of K-means clusters.
        seed: seeds K-means (and IVF training for approximate kNN).
        k: kNN neighbours for the density, ``1 <= k <= n - 1``.
        alpha: exponent in ``1 / dist^alpha`` (> 0).
        lam: regularisation weight lambda (>= 0; 0 = density peaks per cluster).
        momentum: EMA momentum ``m_reg`` in ``[0, 1)``.
        iterations: regularised re-picks ``l`` of Alg. 1 (>= 0).
        horizon: only the ``horizon`` nearest picks (of all clusters) count in Reg, own-cluster ones then
            dropped (the reference's order); ``None`` = all picks.
        density_variant: ``"paper"`` or ``"reference"`` (see above).
        distance_power: ``"paper"`` (plain norm) or ``"reference"`` (squared).
        exclude_same_cluster: drop the own cluster's pick from Reg (eq. 5); ``False`` = the reference's
            ImageNet-MoCo behaviour (only the point itself is skipped). ``None`` = True unless the preset
            says otherwise.
        kmeans_niter: Lloyd iterations of K-means.
        knn_mode: ``"exact"``, ``"ivf"``, ``"hnsw"`` or ``"auto"`` (:func:`uslkit.knn.knn`).
        knn_nprobe: IVF lists visited per query (HNSW ``efSearch``) for approximate kNN; ``None`` = the
            :func:`uslkit.knn.knn` default. Lower is faster and less exact.
        preset: ``None``, ``"imagenet_moco"`` or ``"imagenet_clip"``.
        return_scores: also return the final utility ``U'`` (``U`` when ``iterations == 0``).

    Returns:
        int64 ``(budget,)`` in cluster order (the pick of cluster 0, 1, ..., K-1), as the reference's
        ``selected_indices_<budget>_<seed>.npy``.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, None)
    n = x.shape[0]
    cfg = _usl_config(
        n, budget, preset=preset, k=k, alpha=alpha, lam=lam, momentum=momentum, iterations=iterations,
        horizon=horizon, exclude_same_cluster=exclude_same_cluster, kmeans_niter=kmeans_niter,
    )
    density_variant = _check_choice(density_variant, "density_variant", _VARIANTS)
    distance_power = _check_choice(distance_power, "distance_power", _VARIANTS)
    knn_mode = _check_choice(knn_mode, "knn_mode", _KNN_MODES)
    if density_variant == "reference" and cfg["k"] < 2:
        raise ValueError(f"density_variant='reference' needs k >= 2 (the point itself is one), got k={cfg['k']}")
    from .cluster import kmeans

    density = _density(x, cfg["k"], density_variant, knn_mode, knn_nprobe, seed)
    clusters, _ = kmeans(x, budget, seed=seed, niter=cfg["kmeans_niter"])
    idx, util = _usl_iterate(
        x, density, clusters, budget, lam=cfg["lam"], alpha=cfg["alpha"], momentum=cfg["momentum"],
        iterations=cfg["iterations"], horizon=cfg["horizon"], exclude_same_cluster=cfg["exclude_same_cluster"],
        squared=distance_power == "reference",
    )
    idx = _complete(idx, util, budget, _mask(n, lab))
    return _finish(idx, util, budget, lab, return_scores)


def usl_regularized_selection(
    emb,
    density,
    cluster_labels,
    *,
    lam,
    alpha,
    momentum,
    iterations,
    horizon=None,
    exclude_same_cluster=True,
    distance_power="paper",
    return_scores=False,
):
    """USL's iterative regularised selection (paper 000 Alg. 1) on a given density and clustering.

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
    lam = _check_float(lam, "lam", low=0.0)
    alpha = _check_float(alpha, "alpha", low=0.0, low_open=True)
    momentum = _check_float(momentum, "momentum", low=0.0, high=1.0, high_open=True)
    iterations = check_positive_int(iterations, name="iterations", minimum=0)
    if horizon is not None:
        horizon = check_positive_int(horizon, name="horizon")
    squared = _check_choice(distance_power, "distance_power", _VARIANTS) == "reference"
    picks, util = _usl_iterate(
        x, dens, cl, k, lam=lam, alpha=alpha, momentum=momentum, iterations=iterations, horizon=horizon,
        exclude_same_cluster=bool(exclude_same_cluster), squared=squared,
    )
    picks = picks[picks >= 0]
    return (picks, util) if return_scores else picks


def _usl_config(n, budget, *, preset, **given) -> dict:
    """Resolve USL hyperparameters: explicit argument > preset > small-scale default; validate all."""
    if preset is None:
        base = dict(_USL_SMALL)
        small = budget <= _USL_SMALL_BUDGET
        base.update(alpha=0.5 if small else 1.0, lam=0.5 if small else 1.0)
    elif isinstance(preset, str) and preset in USL_PRESETS:
        base = dict(USL_PRESETS[preset])
    else:
        raise ValueError(f"unknown USL preset {preset!r}; valid: {[None, *sorted(USL_PRESETS)]}")
    cfg = {key: (given[key] if given.get(key) is not None else base[key]) for key in base}
    if given.get("k") is None:
        cfg["k"] = min(base["k"], n - 1)
    if n < 2:
        raise ValueError(f"USL needs at least 2 samples for the kNN density, got n={n}")
    cfg["k"] = _check_k(cfg["k"], n)
    cfg["alpha"] = _check_float(cfg["alpha"], "alpha", low=0.0, low_open=True)
    cfg["lam"] = _check_float(cfg["lam"], "lam", low=0.0)
    cfg["momentum"] = _check_float(cfg["momentum"], "momentum", low=0.0, high=1.0, high_open=True)
    cfg["iterations"] = check_positive_int(cfg["iterations"], name="iterations", minimum=0)
    cfg["kmeans_niter"] = check_positive_int(cfg["kmeans_niter"], name="kmeans_niter")
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
    picks = _argmax_per_group(util, groups)
    reg_ema = np.zeros_like(util)
    for _ in range(iterations):
        valid = picks >= 0
        reg = _usl_reg(
            x, picks[valid], np.flatnonzero(valid), clusters, alpha=alpha, squared=squared, horizon=horizon,
            exclude_same_cluster=exclude_same_cluster,
        )
        reg_ema = momentum * reg_ema + (1.0 - momentum) * reg
        util = density - lam * reg_ema
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
    step = max(1, _CHUNK_ELEMS // max(m, 1))
    for s in range(0, n, step):
        xs = x[s : s + step].astype(np.float64)
        x_aug = np.concatenate([xs, np.einsum("nd,nd->n", xs, xs)[:, None], np.ones((xs.shape[0], 1))], axis=1)
        d2 = x_aug @ p_aug.T
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


# ==========================================================================================================
# TypiClust (notes sec. 4)
# ==========================================================================================================
def select_typiclust(
    emb,
    budget,
    *,
    labeled=None,
    seed=0,
    max_clusters=500,
    min_cluster_size=5,
    k=20,
    kmeans_niter=100,
    squared=False,
    return_scores=False,
):
    """TypiClust (Hacohen et al. 2022; reference avihu111/TypiClust, notes sec. 4).

    Cluster all points into ``min(|L| + budget, max_clusters)`` clusters; ignore clusters with
    ``<= min_cluster_size`` points; visit the remaining clusters with the fewest labelled points first,
    then the largest (then the lowest cluster id), round-robin; in the visited cluster pick the unlabelled,
    not yet picked member of highest typicality ``1 / (mean distance to its k' nearest neighbours among
    those members + 1e-5)``, ``k' = min(k, members // 2)`` (recomputed after every pick in the cluster, as
    the reference; a single remaining member is taken directly). When every valid cluster is exhausted
    the selection continues, round-robin in the same order, over the ignored small clusters, so exactly
    ``budget`` indices come back (the reference crashes there).

    Deviations: K-means is :func:`uslkit.cluster.kmeans` (seeded faiss Lloyd, ``kmeans_niter``) for every
    cluster count; the reference uses sklearn ``KMeans`` up to 50 clusters and ``MiniBatchKMeans`` above,
    unseeded. The paper's typicality uses plain L2 distances (default); the reference gets SQUARED ones
    from faiss ``IndexFlatL2``: ``squared=True`` reproduces that.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of picks.
        labeled: indices already labelled (they count in cluster sizes and in "fewest labelled").
        seed: K-means seed.
        max_clusters: cap on the number of clusters (reference 500).
        min_cluster_size: clusters with at most this many points are skipped at first (reference 5).
        k: neighbours for typicality (reference 20).
        kmeans_niter: Lloyd iterations.
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
    from .cluster import kmeans

    n_clusters = min(lab.size + budget, max_clusters, n)
    clusters, _ = kmeans(x, n_clusters, seed=seed, niter=kmeans_niter)
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
    from .knn import knn

    d, _ = knn(x[members], kk, squared=squared, mode="auto")
    return 1.0 / (d.astype(np.float64).mean(axis=1) + 1e-5)


# ==========================================================================================================
# ProbCover (notes sec. 4)
# ==========================================================================================================
def select_probcover(
    emb,
    budget,
    *,
    labeled=None,
    delta=None,
    purity_threshold=0.95,
    num_classes=None,
    delta_grid=None,
    seed=0,
    kmeans_niter=100,
    return_scores=False,
):
    """ProbCover (Yehuda et al. 2022; reference avihu111/TypiClust ``prob_cover.py``, notes sec. 4).

    Ball graph: ``y`` is in the ball of ``x`` when ``||x - y|| < delta`` (the point itself always). Points
    in the balls of labelled points are covered from the start. Then greedily: pick the point whose ball
    holds the most uncovered points (ties: lowest index), mark them covered. When everything is covered
    (every remaining ball empty of uncovered points) the remaining picks are uniformly random among the
    unpicked unlabelled points, seeded (as the paper; the reference code would repeat index 0).

    ``delta=None``: the paper's label-free choice, the largest delta whose balls keep purity
    ``>= purity_threshold`` w.r.t. K-means with K = ``num_classes`` clusters (required then); a ball is pure
    when all its points share the K-means cluster of its centre. The reference repo does not implement
    this (it uses a fixed delta). With ``delta_grid=None`` the largest such delta is found exactly (the
    purity is a step function of delta: ``delta`` = the distance from a centre to the nearest point of
    another cluster, at the ``purity_threshold`` quantile); with a grid, the largest grid value that keeps
    the purity. Purity needs each point's distance to the nearest point of another cluster: O(n^2 d) time
    in chunks, O(n) memory.

    Memory: the graph is built by chunked exact range search (float32 ``|x|^2 + |y|^2 - 2 x.y``), never a
    dense ``n x n`` matrix, and is stored as int32 CSR plus its transpose (O(edges)); more than 2e8 edges
    raises ``ValueError``.

    Args:
        emb: embeddings ``(n, d)`` (the paper: L2-normalised SimCLR features).
        budget: number of picks.
        labeled: indices already labelled.
        delta: ball radius (> 0), or ``None`` to choose it by purity.
        purity_threshold: alpha in ``(0, 1]`` (paper 0.95).
        num_classes: K-means clusters for the purity (the number of classes); required if ``delta`` is None.
        delta_grid: optional candidate radii for the purity rule.
        seed: seeds the purity K-means and the random picks after full coverage.
        kmeans_niter: Lloyd iterations of the purity K-means.
        return_scores: also return the coverage gain (number of newly covered points) of each pick at the
            time it was chosen, and for unpicked points the number of uncovered points left in their ball
            at the end (both the greedy's marginal utility); ``NaN`` for labelled points.

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    n = x.shape[0]
    kmeans_niter = check_positive_int(kmeans_niter, name="kmeans_niter")
    if delta is None:
        if num_classes is None:
            raise ValueError(
                "probcover needs either delta= (ball radius) or num_classes= (to choose delta as the "
                "largest radius whose balls are purity_threshold-pure w.r.t. K-means, as the ProbCover paper)"
            )
        num_classes = check_positive_int(num_classes, name="num_classes", minimum=2, maximum=n)
        purity_threshold = _check_float(purity_threshold, "purity_threshold", low=0.0, high=1.0, low_open=True)
        grid = None
        if delta_grid is not None:
            grid = np.asarray(delta_grid, dtype=np.float64).ravel()
            if grid.size == 0 or not np.isfinite(grid).all() or (grid <= 0).any():
                raise ValueError(f"delta_grid must be non-empty, finite and positive, got {delta_grid!r}")
        from .cluster import kmeans

        clusters, _ = kmeans(x, num_classes, seed=seed, niter=kmeans_niter)
        col_order = np.argsort(clusters, kind="stable")
        delta2 = _purity_delta2(x, clusters, purity_threshold, grid)
    else:
        delta2 = _check_float(delta, "delta", low=0.0, low_open=True) ** 2
        col_order = np.arange(n)
    graph = _ball_graph(x, delta2, col_order)
    idx, scores = _probcover_greedy(graph, n, budget, lab, seed)
    return _finish(idx, scores, budget, lab, return_scores)


def _sq_dist_blocks(x: np.ndarray, col_order: np.ndarray):
    """Yield ``(start, d2)``: float32 squared distances of rows ``start:start+c`` of ``x`` to ``x[col_order]``.

    One matmul of augmented rows ``[a, |a|^2, 1] . [-2b, 1, |b|^2]``, clamped at 0, self-distances set to
    exactly 0. Blocks are identical on every call with the same ``col_order``, so the purity radius and the
    ball graph see the same numbers bit for bit.
    """
    n = x.shape[0]
    sq = np.einsum("nd,nd->n", x, x)
    ones = np.ones((n, 1), dtype=np.float32)
    cols = np.concatenate([-2.0 * x[col_order], ones, sq[col_order, None]], axis=1)
    rows_aug = np.concatenate([x, sq[:, None], ones], axis=1)
    self_pos = np.empty(n, dtype=np.int64)
    self_pos[col_order] = np.arange(n)
    step = max(1, (4 * _CHUNK_ELEMS) // n)
    for s in range(0, n, step):
        d2 = rows_aug[s : s + step] @ cols.T
        np.maximum(d2, 0.0, out=d2)
        r = np.arange(d2.shape[0])
        d2[r, self_pos[s + r]] = 0.0
        yield s, d2


def _purity_delta2(x, clusters, threshold, grid) -> float:
    """Squared delta of the purity rule (see :func:`select_probcover`); ``clusters`` from K-means."""
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
    if len(picks) < budget:  # everything covered: seeded random picks among the rest (paper)
        rest = np.flatnonzero(~picked & ~labelled)
        extra = np.random.default_rng(seed).choice(rest, size=budget - len(picks), replace=False)
        scores[extra] = 0.0
        picks.extend(int(i) for i in extra)
    free = ~picked & ~labelled
    scores[free] = degree[free]
    return np.array(picks, dtype=np.int64), scores


# ==========================================================================================================
# Core-set (greedy k-center)
# ==========================================================================================================
def select_coreset(emb, budget, *, labeled=None, seed=0, return_scores=False):
    """Greedy k-center core-set (Sener & Savarese 2018; the low-budget AL code's ``core_set``).

    Repeatedly pick the unlabelled point farthest (L2) from the labelled set and the picks so far. With no
    labelled set the first pick is a seeded uniformly random point. Ties go to the lowest index; once all
    remaining points coincide with a chosen one (exact duplicates) the lowest-index unpicked point is taken,
    so the picks are always distinct. Distances are updated one centre at a time, O(n d) memory.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of picks.
        labeled: indices already labelled (the initial centres).
        seed: chooses the first centre when ``labeled`` is empty (the only randomness).
        return_scores: also return the distance to the nearest centre at the time of choice (picks; the
            random first pick gets ``inf``) and, for unpicked points, at the end; ``NaN`` for labelled.

    Returns:
        int64 ``(budget,)`` in pick order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, labeled)
    n = x.shape[0]
    x64 = x.astype(np.float64)
    sq = np.einsum("nd,nd->n", x64, x64)
    blocked = _mask(n, lab)
    mind = np.full(n, np.inf)
    step = max(1, _CHUNK_ELEMS // max(n, 1))
    for s in range(0, lab.size, step):  # distance to the labelled set, a chunk of centres at a time
        c = x64[lab[s : s + step]]
        d2 = sq[:, None] + np.einsum("md,md->m", c, c)[None, :] - 2.0 * (x64 @ c.T)
        np.minimum(mind, d2.min(axis=1), out=mind)
    scores = np.full(n, np.nan)
    picks = []
    if lab.size == 0:
        first = int(np.random.default_rng(seed).integers(n))
        picks.append(first)
        scores[first] = np.inf
        mind = _update_min_sq(x64, sq, first, mind)
        blocked[first] = True
    while len(picks) < budget:
        cand = np.where(blocked, -1.0, np.maximum(mind, 0.0))
        cur = int(np.argmax(cand))
        picks.append(cur)
        scores[cur] = math.sqrt(cand[cur])
        mind = _update_min_sq(x64, sq, cur, mind)
        blocked[cur] = True
    free = ~blocked
    scores[free] = np.sqrt(np.maximum(mind[free], 0.0))
    return _finish(np.array(picks, dtype=np.int64), scores, budget, lab, return_scores)


def _update_min_sq(x64, sq, j, mind):
    d2 = sq + sq[j] - 2.0 * (x64 @ x64[j])
    d2[j] = 0.0
    return np.minimum(mind, d2, out=mind)


# ==========================================================================================================
# SeLa clusters + density
# ==========================================================================================================
def select_sela(emb, budget, *, seed=0, lam=10.0, k=None, density_variant="paper", knn_mode="auto",
                knn_nprobe=None, return_scores=False):
    """Densest point of each SeLa cluster: Sinkhorn-Knopp equipartition (paper 002) with K = budget.

    :func:`uslkit.cluster.sinkhorn_cluster` splits the data into ``budget`` clusters of roughly equal size
    (SeLa's equipartition constraint, ``lam`` = its Sinkhorn power, 10 for CIFAR and 25 for ImageNet);
    each cluster contributes its point of highest kNN density (USL eq. 3, as :func:`select_usl` without
    the regularisation). An ablation comparing equal-size clusters with K-means' in USL's pipeline; not a
    method from the SeLa paper itself.

    Args:
        emb: embeddings ``(n, d)``.
        budget: number of picks = clusters.
        seed: seeds the clustering (and IVF training for approximate kNN).
        lam: Sinkhorn lambda (> 0).
        k: kNN neighbours of the density; default ``min(400, n - 1)`` as USL on CIFAR.
        density_variant: ``"paper"`` or ``"reference"`` (see :func:`select_usl`).
        knn_mode, knn_nprobe: kNN search mode and IVF/HNSW effort (see :func:`select_usl`).
        return_scores: also return the kNN density.

    Returns:
        int64 ``(budget,)`` in cluster order.
    """
    x, budget, seed, lab = _prepare(emb, budget, seed, None)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"sela needs at least 2 samples for the kNN density, got n={n}")
    lam = _check_float(lam, "lam", low=0.0, low_open=True)
    k = _check_k(min(400, n - 1) if k is None else k, n)
    density_variant = _check_choice(density_variant, "density_variant", _VARIANTS)
    knn_mode = _check_choice(knn_mode, "knn_mode", _KNN_MODES)
    if density_variant == "reference" and k < 2:
        raise ValueError(f"density_variant='reference' needs k >= 2, got k={k}")
    from .cluster import sinkhorn_cluster

    density = _density(x, k, density_variant, knn_mode, knn_nprobe, seed)
    clusters, _ = sinkhorn_cluster(x, budget, seed=seed, lam=lam)
    picks = _argmax_per_group(density, _group_index(clusters, budget))
    idx = _complete(picks, density, budget, _mask(n, lab))
    return _finish(idx, density, budget, lab, return_scores)


# ==========================================================================================================
# Shared helpers
# ==========================================================================================================
def _density(x, k, variant, mode, nprobe, seed) -> np.ndarray:
    """USL kNN density (eq. 3, or the reference variant): :func:`uslkit.knn.knn` + ``density_from_dists``."""
    from .knn import density_from_dists, knn

    if nprobe is not None:
        nprobe = check_positive_int(nprobe, name="knn_nprobe")
    dists, _ = knn(x, k, mode=mode, seed=seed, nprobe=nprobe)
    return density_from_dists(dists, variant=variant)


def _prepare(emb, budget, seed, labeled):
    """Validate the common arguments: ``(x float32, budget, seed, labeled int64)``."""
    x = check_embeddings(emb)
    n = x.shape[0]
    lab = check_indices(labeled, n, name="labeled")
    budget = check_budget(budget, n, n_labeled=lab.size)
    seed = check_seed(seed)
    return x, budget, seed, lab


def _mask(n: int, idx: np.ndarray) -> np.ndarray:
    m = np.zeros(n, dtype=bool)
    m[idx] = True
    return m


def _check_float(value, name, *, low=None, high=None, low_open=False, high_open=False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if low is not None and (v < low or (low_open and v == low)):
        raise ValueError(f"{name} must be {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and (v > high or (high_open and v == high)):
        raise ValueError(f"{name} must be {'<' if high_open else '<='} {high}, got {value!r}")
    return v


def _check_choice(value, name, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_k(k, n: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k >= n:
        raise ValueError(f"k={k} must be smaller than the number of samples n={n} (each point's own index is excluded)")
    return k


def _group_index(labels: np.ndarray, n_groups: int):
    """Members of each group in ascending index order: ``(order, starts, sizes, nonempty, n_groups)``."""
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=n_groups)
    starts = np.zeros(n_groups, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    nonempty = np.flatnonzero(counts)
    return order, starts, counts, nonempty, n_groups


def _members(groups, g: int) -> np.ndarray:
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
        raise RuntimeError(  # pragma: no cover - a bug in this module, never a user error
            f"internal error: selection of {idx.size} indices ({np.unique(idx).size} distinct) for budget {budget}"
        )
    if return_scores:
        return idx, np.asarray(scores, dtype=np.float64)
    return idx


#: Method name -> function. Every function takes ``(emb, budget, *, seed, return_scores, ...)``.
METHODS = {
    "random": select_random,
    "stratified": select_stratified,
    "kmeans": select_kmeans,
    "kmeans_multi": select_kmeans_multi,
    "usl": select_usl,
    "typiclust": select_typiclust,
    "probcover": select_probcover,
    "coreset": select_coreset,
    "sela": select_sela,
}
