"""Clustering on fixed embeddings: K-means, Sinkhorn-Knopp equipartition, constrained K-means.

Data flow: embeddings -> ``(labels, centroids)``; every public function returns that order, labels int64
``(n,)`` in ``[0, K)`` with EVERY cluster non-empty, centroids float32 ``(K, d)``.

- :func:`kmeans`: seeded Lloyd K-means on all points (USL, Wang, Lian & Yu 2022, sec. 3.1; low-budget AL,
  Pourahmadi et al. 2022) whose every assignment is the exact nearest centroid, so the result is the same on
  any thread count (``backend="faiss"``: ``faiss.Kmeans``, which is not); it stops when no point changes
  cluster, and guarantees no empty cluster (the USL reference code crashes on one, the low-budget AL code
  drops it and returns fewer picks than the budget).
- :func:`sinkhorn_knopp`: SeLa (Asano, Rupprecht & Vedaldi 2020) eqs. 6-8 solved like the reference
  self-label code.
- :func:`sinkhorn_cluster`: SeLa's equipartitioned assignment used as a clustering tool on fixed features.
- :func:`constrained_kmeans`: K-means with labelled points fixed to their clusters (NTKCPL, Wen et al. 2023,
  Alg. 2, after Wagstaff et al. 2001; also the multi-batch K-means of Pourahmadi et al. 2022).
"""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np

from ._blas import map_blocks
from ._kernels import (
    centre_rows,
    dissim_rows,
    exp_shift_rows,
    member_sums,
    nearest_rows,
    plan_argmax_rows,
    plan_col_dots,
    plan_scale_rows,
)
from ._validate import (
    check_cluster_ids,
    check_embeddings,
    check_indices,
    check_positive_float,
    check_positive_int,
    check_seed,
)
from .device import faiss_use_gpu
from .embed import l2_normalize

logger = logging.getLogger(__name__)

__all__ = ["constrained_kmeans", "kmeans", "kmeans_inertia", "sinkhorn_cluster", "sinkhorn_knopp"]

_INITS = {
    "random": "ClusteringInitMethod_RANDOM",
    "k-means++": "ClusteringInitMethod_KMEANS_PLUS_PLUS",
    "afk-mc2": "ClusteringInitMethod_AFK_MC2",
}

#: Rows per block of the exact assignment (one single-threaded GEMM and one compiled pass each).
_ASSIGN_ROWS = 8192

#: ``_Nearest`` keeps a centred float32 copy of the data up to this many entries (512 MB), and centres each block
#: on the fly above it (embeddings larger than memory stay where they are).
_NEAREST_COPY_ELEMS = 2**27
_STREAM_ROWS = 65536  # rows centred at a time while the norms are computed without a copy

#: Second word of the seed sequence that draws the subsample of ``max_points_per_centroid`` (the first is the
#: seed), so the sample and the initial centroids come from different streams.
_SAMPLE_STREAM = 1

#: Rounds of "re-seed empty clusters, then re-assign" before empty clusters are filled by force.
_REPAIR_ROUNDS = 10

#: Entries of P^lambda are floored here so that a cluster whose column underflows to 0 cannot make the
#: Sinkhorn scaling divide by zero (exp(-690) ~ 1e-300; float64 goes down to ~1e-308).
_SK_FLOOR = 1e-300

#: The dense Sinkhorn plan is float32 when its entries ``exp(lam / temperature * (cos - max cos))`` cannot fall
#: below ``exp(-80)`` (~1.8e-35, above float32's smallest normal 1.2e-38); cosines span at most 2.
_SK_F32_SPAN = 80.0

#: An over-relaxed Sinkhorn error this many times the best so far is divergence (see :func:`_sinkhorn_scaling`).
_SK_DIVERGED = 10.0

#: Rows per block of the Sinkhorn passes.
_SK_ROWS = 4096


# --------------------------------------------------------------------------------------------------------
# K-means
# --------------------------------------------------------------------------------------------------------
def kmeans(
    x,
    n_clusters,
    *,
    seed=0,
    niter=20,
    nredo=1,
    spherical=False,
    max_points_per_centroid=None,
    init="random",
    tol=0.0,
    backend="exact",
    device=None,
    verbose=False,
    return_info=False,
):
    """Lloyd's K-means, seeded, on ALL points, with no empty cluster; the same result on any thread count.

    USL (Wang, Lian & Yu 2022) clusters into as many clusters as the budget; the low-budget AL code
    (Pourahmadi et al. 2022) uses ``faiss.Kmeans(niter=20, nredo=5)``. Lloyd (1982): assign every point to its
    nearest centroid, move each centroid to its members' mean, repeat. ``backend="exact"`` (default) assigns each
    point to the centroid at the least float64 distance from the float32 coordinates (ties: lower centroid index;
    a float32 GEMM ranks, near-ties are recomputed in float64, see ``_Nearest``; :func:`uslkit.knn.knn` on a
    GPU), whatever BLAS blocking the thread count brings, and takes means in float64 in a fixed order;
    ``backend="faiss"`` runs ``faiss.Kmeans`` (its float32 GEMM assignment can flip near-ties between 1 and 2
    threads, and a flip changes the trajectory; earlier uslkit versions used it). Both start from ``K`` distinct
    random points (the USL code's and faiss' default; their draws differ) and run at most ``niter`` iterations.
    The exact backend stops when at most ``tol * n`` points changed cluster in an iteration; with ``tol=0`` that
    is the fixed point, so the result equals running all ``niter`` iterations (``tol=None`` does). Empty
    clusters, in every iteration (exact) or after faiss: re-seeded with the point of the largest cluster farthest
    from its centroid (ties: lowest index), then centroids = member means and points re-assigned, up to 10
    rounds; a cluster still empty (only with exact duplicates) keeps its re-seeded point by force.

    Args:
        x: embeddings ``(n, d)`` (converted to float32 C-contiguous).
        n_clusters: ``K``, ``1 <= K <= n``.
        seed: seeds the initial centroids (each redo uses ``seed + redo``).
        niter: maximum Lloyd iterations per run.
        nredo: independent runs; the one with the lowest inertia (highest inner product when spherical)
            is kept.
        spherical: L2-normalise centroids after every update and assign by inner product (as faiss).
        max_points_per_centroid: ``None`` (default): Lloyd runs on every point. An int ``m``: when ``n > m K``,
            Lloyd runs on a seeded sample of ``m K`` points (faiss' subsampling, its default ``m`` is 256) and
            every point is then assigned to the final centroids (exact backend: once, exactly, then the
            empty-cluster repair on all points). Each iteration then costs ``m K^2 d`` instead of ``n K d``.
        init: ``"random"`` (K distinct random points), ``"k-means++"`` (exact D^2 sampling, O(n K d)) or, faiss
            backend only, ``"afk-mc2"``.
        tol: exact backend: stop when the share of points that changed cluster is ``<= tol`` (0: none changed);
            ``None``: always ``niter`` iterations.
        backend: ``"exact"`` or ``"faiss"`` (see above).
        device: ``None``/``"auto"`` (GPU when faiss has one), ``"cpu"`` or ``"cuda"``.
        verbose: log each iteration's changed share (exact) or faiss' per-iteration log.
        return_info: also return ``{"iterations", "converged", "changed", "inertia", "backend", "trained_on"}``
            of the kept run (``iterations``: Lloyd iterations run, each an assignment then a mean update unless it
            converged; ``changed``: share of the points Lloyd ran on that changed cluster in that last
            iteration's assignment; ``inertia``: over all points; ``trained_on``: how many points Lloyd ran on).

    Returns:
        ``(labels, centroids)``: int64 ``(n,)`` cluster of every point, every cluster non-empty; float32
        ``(K, d)`` centroids; then ``info`` when asked. Exact backend: bit-for-bit identical for the same input
        and seed on any CPU thread count.

    Raises:
        ValueError: ``n_clusters > n``, NaN in ``x``, unknown ``init``, ``backend`` or ``device`` and other bad
            values.
    """
    x = check_embeddings(x, name="x")
    n, d = x.shape
    k = check_positive_int(n_clusters, name="n_clusters")
    if k > n:
        raise ValueError(f"n_clusters={k} is larger than the number of points n={n}")
    seed = check_seed(seed)
    niter = check_positive_int(niter, name="niter")
    nredo = check_positive_int(nredo, name="nredo")
    if backend not in ("exact", "faiss"):
        raise ValueError(f"backend must be 'exact' or 'faiss', got {backend!r}")
    if init not in _INITS or (backend == "exact" and init == "afk-mc2"):
        valid = tuple(_INITS) if backend == "faiss" else ("random", "k-means++")
        raise ValueError(f"init must be one of {valid} with backend={backend!r}, got {init!r}")
    if tol is not None and not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 <= tol < 1):
        raise ValueError(f"tol must be a share of points in [0, 1) or None, got {tol!r}")
    if max_points_per_centroid is not None:
        max_points_per_centroid = check_positive_int(max_points_per_centroid, name="max_points_per_centroid")
    use_gpu = faiss_use_gpu(device)
    if backend == "faiss":
        labels, centroids, info = _kmeans_faiss(x, k, seed=seed, niter=niter, nredo=nredo, spherical=spherical,
                                                max_points_per_centroid=max_points_per_centroid, init=init,
                                                use_gpu=use_gpu, verbose=verbose)
    else:
        train = None
        if max_points_per_centroid is not None and n > max_points_per_centroid * k:
            # sorted, so the sample's row order (and every sum over it) follows x's
            rng = np.random.default_rng([seed, _SAMPLE_STREAM])
            train = np.sort(rng.choice(n, size=max_points_per_centroid * k, replace=False))
        xt = x if train is None else np.ascontiguousarray(x[train])
        # every redo assigns all points once: one centred copy of them serves all
        everyone = None if train is None or use_gpu else _Nearest(x, spherical=bool(spherical))
        best = None
        for redo in range(nredo):
            run = _lloyd(xt, k, seed=seed + redo, niter=niter, tol=tol, spherical=bool(spherical), init=init,
                         use_gpu=use_gpu, verbose=bool(verbose))
            if train is not None:  # every point to the sample's centroids, then no empty cluster over all points
                lab, _ = _assign(x, run[1], spherical=bool(spherical), use_gpu=use_gpu, nearest=everyone,
                                 dissim=False)
                lab, cent = _repair_empty(x, lab, run[1], spherical=bool(spherical), use_gpu=use_gpu)
                run = (lab, cent, {**run[2], "inertia": _objective(x, lab, cent, spherical=bool(spherical))})
            if best is None or run[2]["inertia"] < best[2]["inertia"]:
                best = run
        labels, centroids, info = best
        info["trained_on"] = n if train is None else int(train.size)
    return (labels, centroids, info) if return_info else (labels, centroids)


def _kmeans_faiss(x, k, *, seed, niter, nredo, spherical, max_points_per_centroid, init, use_gpu, verbose):
    """``faiss.Kmeans`` on all points, then the exact assignment and the empty-cluster repair."""
    import faiss

    n, d = x.shape
    if max_points_per_centroid is None:
        max_points_per_centroid = -(-n // k)
    max_points_per_centroid = check_positive_int(max_points_per_centroid, name="max_points_per_centroid")
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        spherical=bool(spherical),
        verbose=bool(verbose),
        max_points_per_centroid=max_points_per_centroid,
        min_points_per_centroid=1,
        init_method=getattr(faiss, _INITS[init]),
        gpu=bool(use_gpu),
    )
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    labels, _ = _assign(x, centroids, spherical=bool(spherical), use_gpu=use_gpu)
    labels, centroids = _repair_empty(x, labels, centroids, spherical=bool(spherical), use_gpu=use_gpu)
    return labels, centroids, {"iterations": niter, "converged": None, "changed": None, "backend": "faiss",
                               "inertia": _objective(x, labels, centroids, spherical=bool(spherical)),
                               "trained_on": min(n, max_points_per_centroid * k)}


def _lloyd(x, k, *, seed, niter, tol, spherical, init, use_gpu, verbose):
    """One seeded run of the exact backend (see :func:`kmeans`): ``(labels, float32 centroids, info)``."""
    n = x.shape[0]
    rng = np.random.default_rng(seed)
    if init == "random":
        cent = x[rng.choice(n, k, replace=False)].astype(np.float64)
    else:
        everyone = np.arange(n)
        cent = _constrained_init(x, k, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), everyone, rng)
    if spherical:
        cent = l2_normalize(cent, dtype=np.float64)
    nearest = None if use_gpu else _Nearest(x, spherical=spherical)
    labels, changed, done, converged = None, 1.0, 0, False
    for it in range(niter):
        new, _ = _assign(x, cent.astype(np.float32), spherical=spherical, use_gpu=use_gpu, nearest=nearest,
                         dissim=False)
        done = it + 1
        changed = 1.0 if labels is None else float(np.count_nonzero(new != labels)) / n
        if verbose:
            logger.info("kmeans iteration %d: %.6f of the points changed cluster", done, changed)
        if labels is not None and tol is not None and changed <= tol:
            labels = new
            converged = True
            break
        labels = new
        counts = np.bincount(labels, minlength=k)
        if counts.min() == 0:
            labels, cent = _reseed(x, labels.copy(), cent, counts, np.arange(n), spherical=spherical)
        cent = _member_means(x, labels, k, fallback=cent)
        if spherical:
            cent = l2_normalize(cent, dtype=np.float64)
    cent32 = cent.astype(np.float32)
    if not converged:  # the centroids moved after the last assignment: assign to them
        labels, _ = _assign(x, cent32, spherical=spherical, use_gpu=use_gpu, nearest=nearest, dissim=False)
    labels, cent32 = _repair_empty(x, labels, cent32, spherical=spherical, use_gpu=use_gpu)
    return labels, cent32, {"iterations": done, "converged": converged, "changed": changed, "backend": "exact",
                            "inertia": _objective(x, labels, cent32, spherical=spherical)}


def kmeans_inertia(x, labels, centroids) -> float:
    """K-means objective ``sum_i ||x_i - c_{labels_i}||^2`` (float64 sum of squared L2 distances).

    Args:
        x: ``(n, d)`` points.
        labels: ``(n,)`` integer cluster of each point, in ``[0, K)``.
        centroids: ``(K, d)``.
    """
    x = check_embeddings(x, name="x", dtype=np.float64)
    c = check_embeddings(centroids, name="centroids", dtype=np.float64)
    if c.shape[1] != x.shape[1]:
        raise ValueError(f"centroids have {c.shape[1]} features but x has {x.shape[1]}")
    labels = check_cluster_ids(labels, x.shape[0], c.shape[0])
    diff = x - c[labels]
    return float(np.einsum("nd,nd->", diff, diff))


# --------------------------------------------------------------------------------------------------------
# Sinkhorn-Knopp (SeLa)
# --------------------------------------------------------------------------------------------------------
def sinkhorn_knopp(
    log_p, *, lam=10.0, tol=1e-2, max_iter=1000, check_every=10, omega=1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Equipartitioned soft assignment by Sinkhorn-Knopp (SeLa, Asano et al. 2020, eqs. 6-8).

    Solves ``min_Q <Q, -log P> + 1/lam KL(Q || r c^T)`` over ``Q`` with uniform marginals (eq. 7), whose
    minimiser is ``Q = diag(c) P^lam diag(r)`` (eq. 8, here with samples as rows). As in the reference
    self-label code (``cpu_sk``): ``P^lam = exp(lam * log_p)`` in float64 (each row shifted by its max
    first: a per-row factor is absorbed by ``c``, so ``log_p`` may equally be raw logits), then alternate
    ``r = (1/K) / (P^T c)`` and ``c = (1/N) / (P r)`` from ``r = 1/K, c = 1/N`` until
    ``sum_i |c_i / c_new_i - 1| < tol``, tested every ``check_every`` iterations (the reference uses
    ``tol`` 0.1 on ImageNet, 0.01 on CIFAR; ``lam`` 25 and 10). Entries of ``P^lam`` are floored at
    1e-300 so an underflowing cluster cannot divide by zero. The products are compiled passes over row blocks,
    summed in a fixed order: the same bits on any thread count. ``omega > 1``: over-relaxed Sinkhorn (Thibault,
    Chizat, Dossal & Papadakis 2017): each scaling moves to ``old^(1 - omega) new^omega``; the same fixed point in
    fewer iterations (default 1: the reference's plain iterations); should it diverge, it falls back towards plain
    iterations (see ``_sinkhorn_scaling``).

    Args:
        log_p: ``(N, K)`` log-probabilities (or logits) of N samples over K clusters.
        lam: lambda, the power applied to P (larger = closer to the hard transport problem eq. 6).
        tol: stopping tolerance on the sample scaling.
        max_iter: iteration cap; reaching it emits a ``RuntimeWarning`` and returns the current scaling.
        check_every: convergence test period.
        omega: over-relaxation, ``0 < omega < 2``.

    Returns:
        ``(labels, Q)``: int64 ``(N,)`` hard labels ``argmax_k Q[i, k]`` (ties: lowest k), and float64
        ``(N, K)`` transport plan normalised as the reference code's: the whole matrix sums to 1, every
        row to ``1/N`` (exactly with ``omega=1``: the last update is ``c``), every column to ``1/K`` up to ``tol``.
        Multiply by ``N`` for per-sample assignment probabilities.
    """
    lp = check_embeddings(log_p, name="log_p", dtype=np.float64)
    lam = check_positive_float(lam, name="lam")
    tol = check_positive_float(tol, name="tol")
    max_iter = check_positive_int(max_iter, name="max_iter")
    check_every = check_positive_int(check_every, name="check_every")
    omega = _check_omega(omega)
    p = np.empty_like(lp)
    for _ in map_blocks(lambda sl: exp_shift_rows(lp[sl], lam, _SK_FLOOR, p[sl]), _row_slices(lp.shape[0])):
        pass
    r, c, _ = _sinkhorn_scaling(p, tol=tol, max_iter=max_iter, check_every=check_every, omega=omega)
    q = p * c[:, None] * r[None, :]
    return np.argmax(q, axis=1).astype(np.int64), q


def _check_omega(omega) -> float:
    omega = check_positive_float(omega, name="omega")
    if not omega < 2.0:
        raise ValueError(f"omega must be in (0, 2) (over-relaxed Sinkhorn converges there), got {omega}")
    return omega


def _row_slices(n: int, rows: int | None = None) -> list[slice]:
    """Fixed row blocks of the Sinkhorn passes (their partial sums are added in this order)."""
    rows = _SK_ROWS if rows is None else rows
    return [slice(s, min(s + rows, n)) for s in range(0, n, rows)]


def _sinkhorn_scaling(p, *, tol, max_iter, check_every, r0=None, omega=1.0):
    """Sinkhorn-Knopp scaling of a positive plan ``p (N, K)`` (float32 or float64) to uniform marginals, as
    :func:`sinkhorn_knopp`: ``(r float64 (K,), c float64 (N,), iterations)``. ``r0``: a starting cluster scaling
    (a warm start; the sample scaling starts as ``(1/N) / (P r0)``), default: ``c = 1/N``. One compiled pass over
    the :func:`_row_slices` blocks per iteration computes ``c = (1/N) / (P r)`` and, from it, the next iteration's
    ``P^T c`` (float64 accumulation, block sums added in block order): the same iterates as the two separate
    products, in half the memory traffic, on any thread count.

    Over-relaxation (``omega != 1``) converges only near the fixed point (Thibault et al. 2017; Lehmann et al. 2021
    give a safeguarded global variant); far from it, e.g. from a warm start on a changed plan, it can overshoot
    until the scalings overflow. Safeguard: when the error at a check is at least ``_SK_DIVERGED`` (10) times the
    best so far, or not finite, the iterates go back to that best check and ``omega`` moves halfway to 1 (to 1
    once within 0.1 of it); plain iterations then converge from any positive start. Smaller rises are allowed:
    over-relaxed errors can rise a little on the way (measured: 1.5-fold at the 10th iteration of a run that
    converges). Deterministic, so still the same bits on any thread count."""
    n, k = p.shape
    blocks = _row_slices(n)
    parts = np.empty((len(blocks), k), dtype=np.float64)
    c = np.full(n, 1.0 / n)
    c_new = np.empty(n, dtype=np.float64)
    r = np.full(k, 1.0 / k)
    err = np.inf
    if r0 is None:
        for _ in map_blocks(lambda b: plan_col_dots(p[blocks[b]], c[blocks[b]], parts[b]), range(len(blocks))):
            pass
    else:
        r0 = np.asarray(r0, dtype=np.float64)
        for _ in map_blocks(lambda b: plan_scale_rows(p[blocks[b]], r0, float(n), 1.0, c_new[blocks[b]],
                                                      c[blocks[b]], parts[b]), range(len(blocks))):
            pass
    best, best_c, best_parts = np.inf, c.copy(), parts.copy()  # the state to go back to
    w = float(omega)
    plain_next = True  # the first update of r (and the first after going back) is the plain one

    def step(b):
        plan_scale_rows(p[blocks[b]], r, float(n), w, c[blocks[b]], c_new[blocks[b]], parts[b])

    it = 0
    for it in range(max_iter):
        with np.errstate(all="ignore"):  # a diverging over-relaxed step is caught below
            r_new = (1.0 / k) / parts.sum(axis=0)
            r = r_new if w == 1.0 or plain_next else r ** (1.0 - w) * r_new**w
            plain_next = False
            for _ in map_blocks(step, range(len(blocks))):
                pass
            if it % check_every == 0:
                err = float(np.abs(c / c_new - 1.0).sum())
        if it % check_every == 0:
            if err < best:
                best = err
                best_c[:] = c_new
                best_parts[:] = parts
            elif w != 1.0 and not err < _SK_DIVERGED * best:  # over-relaxation overshoots: go back, relax less
                w_old, w = w, (1.0 if abs(w - 1.0) <= 0.1 else 1.0 + (w - 1.0) / 2.0)
                logger.debug("sinkhorn: iteration %d, error %.3g not below %.3g: back to it, omega %.3g -> %.3g",
                             it, err, best, w_old, w)
                c_new[:] = best_c
                parts[:] = best_parts
                err = best
                plain_next = True
        c, c_new = c_new, c
        if err < tol:
            break
    else:
        warnings.warn(
            f"sinkhorn_knopp did not reach tol={tol} in max_iter={max_iter} iterations (error {err:.3g})",
            RuntimeWarning,
            stacklevel=3,
        )
    return r, c, it + 1


def sinkhorn_cluster(
    x,
    n_clusters,
    *,
    seed=0,
    lam=10.0,
    temperature=0.5,
    n_iter=20,
    tol=1e-2,
    max_sk_iter=1000,
    omega=1.8,
    round_sk_iter=20,
    max_points_per_centroid=None,
    device=None,
    verbose=False,
) -> tuple[np.ndarray, np.ndarray]:
    """Equal-sized clusters on fixed embeddings by alternating SeLa assignment and centroid update.

    SeLa (Asano et al. 2020) learns the features; here the features are fixed and only the prototypes move:
    rows of ``x`` and centroids are L2-normalised, ``log_p = log_softmax(x c^T / temperature)`` (cosine
    similarities, as prototype heads in SeLa/SwAV), labels = :func:`sinkhorn_knopp` ``(log_p, lam)``, then
    each centroid becomes the normalised mean of its members. Starts from spherical :func:`kmeans` with the
    same seed; stops after ``n_iter`` rounds or when labels stop changing. Rounds before the last run at most
    ``round_sk_iter`` Sinkhorn iterations (a few, as SwAV's online assignments: they only move the prototypes);
    the last round's labels, and every round's once the labels have settled, come from a plan converged to
    ``tol`` (``round_sk_iter=None``: every round converged, the plain alternation). The equipartition constraint
    makes cluster sizes roughly ``n / K`` even when the data are imbalanced (unlike K-means).

    At scale: ``P^lam = exp(lam / temperature * (cos - max cos))`` is formed directly (the log-softmax's row
    shift cancels), in float32 when its entries cannot underflow there (``2 lam / temperature <= 80``, as with
    the defaults: 20), else float64; that plan is the only ``n x K`` array. Sinkhorn is over-relaxed
    (``omega``, safeguarded, see :func:`sinkhorn_knopp`) and each round starts from the previous round's cluster
    scaling: neither changes the fixed point, only how many iterations reach it. Cosines are a float32 GEMM in fixed
    single-threaded blocks: the same result on any thread count.

    Args:
        x: embeddings ``(n, d)``; normalised internally.
        n_clusters: ``K``, ``1 <= K <= n``.
        seed: seeds the K-means initialisation (the only randomness).
        lam: Sinkhorn power lambda (SeLa: 10 on CIFAR, 25 on ImageNet).
        temperature: softmax temperature on cosine similarities. With ``lam`` the plan is proportional to
            ``exp(lam / temperature * cos)``; the default 0.5 makes that 20 (SwAV's epsilon 0.05).
        n_iter: assignment / update rounds.
        tol, max_sk_iter: passed to :func:`sinkhorn_knopp` as ``tol``/``max_iter``.
        omega: Sinkhorn over-relaxation in ``(0, 2)``; 1 = the reference's plain iterations.
        round_sk_iter: Sinkhorn iterations of the rounds before the labels settle (each warm-started from the
            previous round's cluster scaling); ``None``: ``max_sk_iter`` and ``tol`` in every round.
        max_points_per_centroid: of the initial :func:`kmeans` (``None``: every point).
        device: for the K-means initialisation.
        verbose: log each round's Sinkhorn iterations and changed labels.

    Returns:
        ``(labels, centroids)``: int64 ``(n,)`` with every cluster non-empty (an empty cluster takes the
        point of the largest cluster with the highest transport mass on it), float32 ``(K, d)`` unit-norm
        centroids in the normalised space.
    """
    x = check_embeddings(x, name="x")
    n = x.shape[0]
    k = check_positive_int(n_clusters, name="n_clusters")
    if k > n:
        raise ValueError(f"n_clusters={k} is larger than the number of points n={n}")
    lam = check_positive_float(lam, name="lam")
    temperature = check_positive_float(temperature, name="temperature")
    n_iter = check_positive_int(n_iter, name="n_iter")
    tol = check_positive_float(tol, name="tol")
    max_sk_iter = check_positive_int(max_sk_iter, name="max_sk_iter")
    if round_sk_iter is not None:
        round_sk_iter = check_positive_int(round_sk_iter, name="round_sk_iter")
    omega = _check_omega(omega)
    xn = l2_normalize(x)
    labels, cent = kmeans(xn, k, seed=seed, spherical=True, device=device,
                          max_points_per_centroid=max_points_per_centroid)
    cent = l2_normalize(cent, dtype=np.float64)
    beta = lam / temperature
    p = np.empty((n, k), dtype=np.float32 if 2.0 * beta <= _SK_F32_SPAN else np.float64)
    floor = 0.0 if p.dtype == np.float32 else _SK_FLOOR
    blocks = _row_slices(n)

    def fill(cent):
        c32 = np.ascontiguousarray(cent.astype(np.float32).T)
        for _ in map_blocks(lambda sl: exp_shift_rows(xn[sl] @ c32, beta, floor, p[sl]), blocks):
            pass

    def solve(r, cap):
        with warnings.catch_warnings():
            if cap < max_sk_iter:  # a capped round is meant to stop early
                warnings.simplefilter("ignore", RuntimeWarning)
            r, c, its = _sinkhorn_scaling(p, tol=tol, max_iter=cap, check_every=10, r0=r, omega=omega)
        new = np.empty(n, dtype=np.int64)
        for _ in map_blocks(lambda sl: plan_argmax_rows(p[sl], r, new[sl]), blocks):
            pass
        return _fill_empty_from_plan(new, p, c), r, its

    cap = max_sk_iter if round_sk_iter is None else min(round_sk_iter, max_sk_iter)
    r = None
    for rnd in range(n_iter):
        fill(cent)
        new, r, its = solve(r, cap)
        if cap < max_sk_iter and (rnd == n_iter - 1 or np.array_equal(new, labels)):
            cap = max_sk_iter  # from here on every round's plan is converged, the last one included
            new, r, its = solve(r, cap)  # the same plan, scaled on from where the short round stopped
        cent = l2_normalize(_member_means(xn, new, k, fallback=cent), dtype=np.float64)
        changed = int(np.count_nonzero(new != labels))
        if verbose:
            logger.info("sinkhorn_cluster round %d: %d Sinkhorn iterations, %d labels changed", rnd + 1, its,
                        changed)
        labels = new
        if changed == 0:
            break
    return labels, cent.astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Constrained K-means (NTKCPL Alg. 2)
# --------------------------------------------------------------------------------------------------------
def constrained_kmeans(
    x, n_clusters, labeled_idx, *, labeled_clusters=None, seed=0, niter=20, device=None
) -> tuple[np.ndarray, np.ndarray]:
    """K-means in which labelled points stay in given clusters (NTKCPL, Wen et al. 2023, Alg. 2).

    NTKCPL's "constrained K-means" cites Wagstaff et al. (2001): must-link / cannot-link pairs from the
    labels. Fixing each labelled point to a cluster id expresses them: ``labeled_clusters`` = class labels
    puts a class's labelled points in one cluster and different classes apart (Basu et al. 2002's seeded,
    constrained K-means); the default, one cluster per labelled point, is the multi-batch K-means of
    Pourahmadi et al. (2022). The fixed-assignment form is our reading; the paper gives no more detail.
    Clusters with labelled members start at their mean, the others by seeded k-means++ over unlabelled
    points; then up to ``niter`` rounds of assigning unlabelled points to the nearest centroid and taking
    member means (labelled included), stopping when nothing changes; empty clusters re-seeded as in
    :func:`kmeans`.

    Args:
        x: embeddings ``(n, d)``.
        n_clusters: ``K``.
        labeled_idx: ``(L,)`` distinct indices of the labelled points.
        labeled_clusters: ``(L,)`` cluster id in ``[0, K)`` of each ``labeled_idx[i]``; default
            ``0..L-1`` (each labelled point its own cluster, needs ``K >= L``).
        seed: seeds the k-means++ initialisation of clusters without labelled points.
        niter: maximum assignment / update rounds.
        device: ``None``/``"auto"``, ``"cpu"`` or ``"cuda"`` for the faiss nearest-centroid search.

    Returns:
        ``(labels, centroids)``: int64 ``(n,)`` with ``labels[labeled_idx] == labeled_clusters`` and every
        cluster non-empty, float32 ``(K, d)`` member means.

    Raises:
        ValueError: bad indices or cluster ids, ``K > n``, or too few unlabelled points to give every
            cluster without labelled points a member.
    """
    x = check_embeddings(x, name="x")
    n = x.shape[0]
    k = check_positive_int(n_clusters, name="n_clusters")
    if k > n:
        raise ValueError(f"n_clusters={k} is larger than the number of points n={n}")
    lab = check_indices(labeled_idx, n, name="labeled_idx")
    if labeled_clusters is None:
        if lab.size > k:
            raise ValueError(
                f"{lab.size} labelled points need n_clusters >= {lab.size} when each is its own cluster "
                f"(labeled_clusters=None), got n_clusters={k}"
            )
        fixed = np.arange(lab.size, dtype=np.int64)
    else:
        fixed = check_cluster_ids(labeled_clusters, lab.size, k, name="labeled_clusters")
    seed = check_seed(seed)
    niter = check_positive_int(niter, name="niter")
    use_gpu = faiss_use_gpu(device)
    n_seeded = np.unique(fixed).size
    free = np.setdiff1d(np.arange(n), lab)
    if k - n_seeded > free.size:
        raise ValueError(
            f"{k - n_seeded} clusters have no labelled point but only {free.size} points are unlabelled: "
            f"reduce n_clusters={k}"
        )
    cent = _constrained_init(x, k, lab, fixed, free, np.random.default_rng(seed))
    labels = np.empty(n, dtype=np.int64)
    labels[lab] = fixed
    prev = None
    for _ in range(niter):
        if free.size:
            labels[free], _ = _assign(x[free], cent.astype(np.float32), spherical=False, use_gpu=use_gpu)
        labels = _fill_empty_constrained(x, labels, cent, free)
        cent = _member_means(x, labels, k, fallback=cent)
        if prev is not None and np.array_equal(prev, labels):
            break
        prev = labels.copy()
    return labels, cent.astype(np.float32)


# --------------------------------------------------------------------------------------------------------
# Private helpers
# --------------------------------------------------------------------------------------------------------
def _assign(x: np.ndarray, centroids: np.ndarray, *, spherical: bool, use_gpu: bool, nearest=None,
            dissim: bool = True):
    """Exact nearest centroid, ties to the lower index: ``(labels int64, dissimilarity float64 or None)``.

    L2 (:class:`_Nearest` on the CPU, :func:`uslkit.knn.knn` on a GPU): the same labels on any thread count.
    ``spherical`` (unit-norm centroids): the maximum inner product, found as the nearest centroid to the
    L2-normalised point (the same order for exactly unit centroids: ``|x/|x| - c|^2 = 2 - 2 x.c / |x|``; float32
    centroids are unit to ~1e-7, so a near-tie may go the other way, deterministically); the dissimilarity is
    then ``-x.c``.
    ``nearest``: a :class:`_Nearest` of these points (and this ``spherical``) to reuse across calls.
    """
    c = np.ascontiguousarray(centroids, dtype=np.float32)
    if use_gpu:
        from .knn import knn

        q = l2_normalize(x) if spherical else x
        lab = knn(c, 1, queries=q, squared=True, device="cuda")[1][:, 0]
    else:
        lab = (nearest or _Nearest(x, spherical=spherical))(c)
    return lab, (_dissim_rows(x, c, lab, spherical=spherical) if dissim else None)


class _Nearest:
    """Nearest centroid of each row of ``x`` (L2-normalised first when ``spherical``) at the least float64 squared
    distance from the float32 coordinates (ties: lower index), whatever the BLAS thread split.

    A float32 GEMM of centred data (``|c|^2 - 2 x.c``) ranks the centroids; a row is settled when its runner-up
    is farther than twice an error bound of that GEMM and of the float32 rounding around it (``4 (2d + 8) u
    (|x| + max|c|)^2``, ``u = 2^-24``, about 4x the ``2 (2d + 4) u (...)^2`` a dot product and the centring
    need), so rounding cannot change its winner; the other rows (near-ties) are decided by float64 distances to
    every centroid, without BLAS. The centred float32 copy of ``x`` is made once and reused by every call; above
    :data:`_NEAREST_COPY_ELEMS` entries (a memory map larger than memory, say) each call centres one block at a time
    instead, with the same bits.
    """

    def __init__(self, x: np.ndarray, *, spherical: bool = False, block_elems: int = 2**22):
        self.x = l2_normalize(x) if spherical else np.ascontiguousarray(x, dtype=np.float32)
        n, d = self.x.shape
        self.block_elems = block_elems
        mu32 = self.x.mean(axis=0, dtype=np.float64).astype(np.float32)  # x and centroids shift by the same mu
        self.mu, self.mu32 = mu32.astype(np.float64), mu32
        norms = np.empty(n, dtype=np.float64)
        self.xc = np.empty((n, d), dtype=np.float32) if n * d <= _NEAREST_COPY_ELEMS else None
        for s in range(0, n, _STREAM_ROWS):
            e = min(s + _STREAM_ROWS, n)
            centre_rows(self.x[s:e], mu32, np.empty((e - s, d), np.float32) if self.xc is None else self.xc[s:e],
                        norms[s:e])
        # a power of two (exact) brings the centred norms near 1, so the GEMM's products neither underflow nor
        # overflow
        top = float(norms.max()) if n else 0.0
        self.scale = 2.0 ** -math.frexp(top)[1] if top > 0 and math.isfinite(top) else 1.0
        if self.xc is not None:
            self.xc *= np.float32(self.scale)
        self.xn = norms * self.scale

    def _centred(self, s: int, e: int) -> np.ndarray:
        """Rows ``s:e`` of the centred, scaled float32 data (the stored copy, or computed with the same bits)."""
        if self.xc is not None:
            return self.xc[s:e]
        block = np.empty((e - s, self.x.shape[1]), dtype=np.float32)
        centre_rows(self.x[s:e], self.mu32, block, np.empty(e - s, dtype=np.float64))
        block *= np.float32(self.scale)
        return block

    def __call__(self, c: np.ndarray) -> np.ndarray:
        n, d = self.x.shape
        k = c.shape[0]
        if k == 1:
            return np.zeros(n, dtype=np.int64)
        cc = ((c.astype(np.float64) - self.mu) * self.scale).astype(np.float32)
        cn = np.einsum("kd,kd->k", cc, cc, dtype=np.float64)
        slack2 = 2.0 * 4.0 * (2 * d + 8) * 2.0**-24
        cmax = float(np.sqrt(cn.max()))
        cn32 = cn.astype(np.float32)
        labels = np.empty(n, dtype=np.int64)
        step = max(1, min(self.block_elems // k, _ASSIGN_ROWS))  # several blocks: they run on a pool of threads
        c64 = c.astype(np.float64)

        def block(s):
            e = min(s + step, n)
            nearest_rows(self._centred(s, e) @ cc.T, cn32, self.xn[s:e], cmax, slack2, self.x[s:e], c64, labels[s:e])

        for _ in map_blocks(block, range(0, n, step)):
            pass
        return labels


def _dissim_rows(x, c, lab, *, spherical) -> np.ndarray:
    """float64 ``|x_i - c_lab_i|^2`` (or ``-x_i . c_lab_i``), row by row (no BLAS, fixed order)."""
    out = np.empty(x.shape[0], dtype=np.float64)
    dissim_rows(np.ascontiguousarray(x), np.ascontiguousarray(c), np.asarray(lab, dtype=np.int64), bool(spherical),
                out)
    return out


def _objective(x, labels, centroids, *, spherical) -> float:
    """Sum of the dissimilarities of the points to their centroids (inertia, or minus the inner products)."""
    return float(_dissim_rows(x, centroids, labels, spherical=spherical).sum())


def _dissim(x: np.ndarray, c: np.ndarray, *, spherical: bool) -> np.ndarray:
    x = x.astype(np.float64)
    c = c.astype(np.float64)
    if spherical:
        return -np.einsum("nd,d->n", x, c)
    diff = x - c
    return np.einsum("nd,nd->n", diff, diff)


def _member_means(x: np.ndarray, labels: np.ndarray, k: int, *, fallback: np.ndarray) -> np.ndarray:
    """float64 ``(k, d)`` mean of each cluster's members (summed in index order); ``fallback`` rows for empty
    clusters."""
    sums, counts = member_sums(np.ascontiguousarray(x), np.asarray(labels, dtype=np.int64), k)
    nz = counts > 0
    out = np.array(fallback, dtype=np.float64, copy=True)
    out[nz] = sums[nz] / counts[nz, None]
    return out


def _reseed(x, labels, centroids, counts, movable, *, spherical):
    """Move, for every empty cluster, the farthest movable point of the largest cluster into it."""
    for j in np.flatnonzero(counts == 0):
        donors = np.bincount(labels[movable], minlength=len(counts))
        donors = np.where(counts >= 2, donors, 0)
        big = int(np.argmax(np.where(donors > 0, counts, -1)))
        members = movable[labels[movable] == big]
        far = members[int(np.argmax(_dissim(x[members], centroids[big], spherical=spherical)))]
        labels[far] = j
        counts[big] -= 1
        counts[j] = 1
        centroids[j] = x[far]
    return labels, centroids


def _repair_empty(x, labels, centroids, *, spherical, use_gpu):
    """K-means empty-cluster repair (see :func:`kmeans`). Returns ``(labels, float32 centroids)``."""
    k = centroids.shape[0]
    counts = np.bincount(labels, minlength=k)
    if counts.min() > 0:
        return labels, centroids
    everyone = np.arange(x.shape[0])
    cent = centroids.astype(np.float64)
    for _ in range(_REPAIR_ROUNDS):
        labels, cent = _reseed(x, labels.copy(), cent, counts, everyone, spherical=spherical)
        cent = _member_means(x, labels, k, fallback=cent)
        if spherical:
            cent = l2_normalize(cent, dtype=np.float64)
        new, _ = _assign(x, cent.astype(np.float32), spherical=spherical, use_gpu=use_gpu)
        counts = np.bincount(new, minlength=k)
        if counts.min() > 0:
            return new, cent.astype(np.float32)
        labels = new
    # exact duplicates keep falling to the lowest-index identical centroid: keep the forced moves
    labels, cent = _reseed(x, labels.copy(), cent, counts, everyone, spherical=spherical)
    cent = _member_means(x, labels, k, fallback=cent)
    if spherical:
        cent = l2_normalize(cent, dtype=np.float64)
    return labels, cent.astype(np.float32)


def _fill_empty_from_plan(labels: np.ndarray, p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Give each empty cluster j the point of the largest cluster with the most transport mass on j
    (``Q[i, j] = c_i P[i, j] r_j``; ``r_j`` is the same for the whole column)."""
    k = p.shape[1]
    labels = labels.copy()
    counts = np.bincount(labels, minlength=k)
    for j in np.flatnonzero(counts == 0):
        big = int(np.argmax(counts))
        members = np.flatnonzero(labels == big)
        take = members[int(np.argmax(p[members, j].astype(np.float64) * c[members]))]
        labels[take] = j
        counts[big] -= 1
        counts[j] = 1
    return labels


def _fill_empty_constrained(x, labels, cent, free):
    k = cent.shape[0]
    counts = np.bincount(labels, minlength=k)
    if counts.min() > 0:
        return labels
    return _reseed(x, labels.copy(), cent.copy(), counts, free, spherical=False)[0]


def _constrained_init(x, k, lab, fixed, free, rng):
    """Means of the fixed members; k-means++ draws from the free points for the other clusters."""
    d = x.shape[1]
    cent = np.zeros((k, d), dtype=np.float64)
    seeded = np.zeros(k, dtype=bool)
    if lab.size:
        cent = _member_means(x[lab].astype(np.float64), fixed, k, fallback=cent)
        seeded[np.unique(fixed)] = True
    todo = np.flatnonzero(~seeded)
    if todo.size == 0:
        return cent
    xf = x[free].astype(np.float64)
    d2 = np.full(free.size, np.inf)  # squared distance to the nearest chosen centroid
    for c in cent[seeded]:  # one centroid at a time keeps memory at O(n)
        d2 = np.minimum(d2, ((xf - c) ** 2).sum(axis=1))
    taken = np.zeros(free.size, dtype=bool)
    for j in todo:
        w = np.where(taken, 0.0, d2)
        tot = w.sum()
        if not np.isfinite(tot) or tot <= 0:  # first centroid, or only duplicates of centroids left
            w = (~taken).astype(np.float64)
            tot = w.sum()
        pick = int(rng.choice(free.size, p=w / tot))
        taken[pick] = True
        cent[j] = xf[pick]
        d2 = np.minimum(d2, ((xf - xf[pick]) ** 2).sum(axis=1))
    return cent
