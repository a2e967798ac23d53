"""k-nearest-neighbour graph and kNN density (USL, Wang, Lian & Yu 2022, eq. 3).

Data flow: embeddings -> :func:`knn` -> ``(dists, idx)`` -> :func:`density_from_dists`.

Every search returns ``(dists, idx)``: ``dists`` float32 ``(m, k)`` ascending, ``idx`` int64 ``(m, k)``, in
the order of the exact distances between the float32 points (a float64 brute force's order), ties broken
by the lower index. faiss (GPU when present) finds ``k + 1 + 8`` candidates per query; uslkit re-ranks them:
(1) distances recomputed from the float32 coordinate differences (faiss ``fvec_L2sqr_by_idx``, no
cancellation, each within ``(d + 2) 2^-24`` relative of the exact value; the query's own index dropped);
(2) one sort per row of the int64 keys ``bits(d2) << 31 | index``; (3) runs closer than twice that rounding
re-sorted by float64 distances. Output distances have float32 precision, bit-identical on one machine.

Exact mode also proves that no point outside a candidate list belongs to the top k: faiss searches
``x - mean``, and its float32 squared distance of any point is within ``slack = 2 (d + 8) 2^-24 (|q'| +
max_i |x'_i|)^2`` of the exact one (the ``d u |a||b|`` bound of a float32 dot product, plus centring, norms
and our rounding, doubled). A row whose k-th distance is below ``D_last - slack`` (``D_last``: the largest
distance faiss returned) is exact; the others are searched again with a doubled list until they pass or the
list covers the whole database.

Approximate modes (IVF, HNSW) re-rank what they find in the same way; their recall depends on the data:
measure it with ``knn(..., return_recall=True)`` or :func:`estimate_recall` and raise ``nprobe`` where it
matters (recall and timings: ``benchmarks/RESULTS.md``). IVF: ``nlist = min(4 sqrt(n), n / 39)``,
``nprobe =`` :data:`IVF_NPROBE`, quantizer trained on at most :data:`IVF_TRAIN_POINTS_PER_LIST` seeded
points per list. Memory: no ``n x n`` matrix; about ``48 x chunk x k_search`` bytes per query chunk
(:data:`CHUNK_MEMORY_BYTES`) plus faiss' centred copy of ``x``.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import numpy as np

from ._validate import check_choice, check_embeddings, check_k, check_positive_int, check_seed
from .device import faiss_use_gpu

logger = logging.getLogger(__name__)

__all__ = [
    "AUTO_EXACT_MAX_N",
    "CHUNK_MEMORY_BYTES",
    "DENSITY_BLOCK_ROWS",
    "DENSITY_EPS",
    "DENSITY_IVF_CANDIDATES",
    "DENSITY_IVF_NPROBE",
    "DENSITY_MIN_RECALL",
    "IVF_NPROBE",
    "IVF_TRAIN_POINTS_PER_LIST",
    "RECALL_SAMPLE",
    "density_from_dists",
    "estimate_recall",
    "knn",
    "knn_density",
    "knn_mean_distance",
]

#: ``mode="auto"`` searches exactly up to this many database points and with IVF above (exact is O(n^2 d)).
AUTO_EXACT_MAX_N = 200_000

#: Memory budget (bytes) for one chunk of query rows during the exact re-ranking of candidates.
CHUNK_MEMORY_BYTES = 512 * 2**20

#: Mean neighbour distances are clipped at this value before inversion, so that a point with k exact
#: duplicates gets a large finite density (1 / DENSITY_EPS) instead of ``inf``.
DENSITY_EPS = 1e-12

#: Default IVF ``nprobe`` (lists visited per query); a small constant suits CPUs.
IVF_NPROBE = 16

#: IVF's coarse quantizer (K-means with ``nlist`` centroids) is trained on a seeded sample of at most this
#: many points per list (faiss itself would use up to 256 per list: all 1,000,000 points for 4000 lists).
IVF_TRAIN_POINTS_PER_LIST = 64

#: Rows of the seeded sample on which ``knn(..., return_recall=True)`` measures the recall of an
#: approximate search against exact search.
RECALL_SAMPLE = 1000

#: Query rows per GEMM block of :func:`knn_density`'s exact CPU path (one single-threaded BLAS call each).
DENSITY_BLOCK_ROWS = 64

#: ``knn_density``'s approximate CPU path: lists of query points whose neighbours are searched among this many of
#: the nearest lists (by centroid), the list itself included (see :func:`knn_density`).
DENSITY_IVF_NPROBE = 16

#: ... and more lists while they hold at most this many times ``k`` points.
DENSITY_IVF_CANDIDATES = 16

#: ``knn_density``'s approximate path warns when its recall@k, measured on :data:`RECALL_SAMPLE` seeded rows, is
#: below this.
DENSITY_MIN_RECALL = 0.95

#: Extra candidates requested from faiss beyond ``k`` (+1 for the excluded self). Only speed depends on it:
#: rows whose list is too short to prove exactness are searched again with a doubled list.
_CANDIDATE_MARGIN = 8

#: Sort keys pack a float32 squared distance above a row index of this many bits (so ``n < 2**31``).
_ID_BITS = 31
_ID_MASK = (1 << _ID_BITS) - 1
_INVALID_KEY = np.iinfo(np.int64).max  # sorts after every candidate

#: Rows of ``x - shift`` added to the exact index at a time (bounds the temporary copy).
_ADD_BLOCK = 65536

_MODES = ("exact", "ivf", "hnsw", "auto")
_DENSITY_MODES = _MODES + ("ivfpq",)  # the compressed index serves the density alone (uslkit._ivfpq)
_VARIANTS = ("paper", "reference")


# --------------------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------------------
def knn(
    x,
    k,
    *,
    queries=None,
    exclude_self=True,
    squared=False,
    mode="exact",
    chunk_size=None,
    device=None,
    seed=0,
    nprobe=None,
    progress=False,
    return_recall=False,
):
    """k nearest neighbours in Euclidean (L2) distance.

    Args:
        x: database, array ``(n, d)``, ``n < 2**31``; converted to float32 C-contiguous (faiss' requirement).
        k: number of neighbours, ``1 <= k <= n - 1`` when the query's own index is excluded, else ``<= n``.
        queries: ``(m, d)`` query points, or ``None`` to query every row of ``x`` (then ``m = n``).
        exclude_self: only when ``queries is None``: remove row ``i``'s OWN index ``i`` from its list.
            Other points at distance 0 (exact duplicates of row ``i``) are kept, at distance 0. Ignored when
            ``queries`` is given (queries have no index in ``x``).
        squared: return squared L2 distances instead of true L2 distances.
        mode: ``"exact"`` (faiss flat index), ``"ivf"`` (IndexIVFFlat, see the module docstring), ``"hnsw"``
            (IndexHNSWFlat, M = 32, CPU only) or ``"auto"`` (exact when ``n <= AUTO_EXACT_MAX_N``, IVF
            above); rows for which an approximate mode finds fewer than ``k`` are completed exactly.
        chunk_size: query rows per faiss call; ``None``: 4096, or fewer if :data:`CHUNK_MEMORY_BYTES`
            requires.
        device: ``None``/``"auto"`` (faiss GPU if available), ``"cpu"`` or ``"cuda"``/``"gpu"``.
        seed: seeds IVF training and the recall sample (exact and HNSW search use no randomness).
        nprobe: IVF lists visited per query (default :data:`IVF_NPROBE`), or HNSW ``efSearch`` (default
            ``max(64, 2 * (k + 9))``). Larger is slower and more accurate.
        progress: show a tqdm progress bar over query chunks.
        return_recall: also return recall@k measured by :func:`estimate_recall` on a ``seed``-ed sample of
            :data:`RECALL_SAMPLE` query rows (1.0 without measuring when the search is exact). The recall of
            an approximate search is also logged at INFO level.

    Returns:
        ``(dists, idx)``: float32 ``(m, k)`` distances in ascending order (ties by ascending index) and
        int64 ``(m, k)`` indices into ``x``; ``(dists, idx, recall)`` when ``return_recall``.

    Raises:
        ValueError: bad ``x``/``queries`` (NaN, wrong shape, ``n >= 2**31``), ``k`` out of range, unknown
            ``mode`` or ``device``.
    """
    x = check_embeddings(x, name="x")
    n, d = x.shape
    if n > _ID_MASK:
        raise ValueError(f"x has {n} rows; knn supports at most {_ID_MASK}")
    if queries is None:
        q = x
        self_ids = np.arange(n, dtype=np.int64) if exclude_self else None
    else:
        q = check_embeddings(queries, name="queries")
        if q.shape[1] != d:
            raise ValueError(f"queries have {q.shape[1]} features but x has {d}")
        self_ids = None
    k_max = n - 1 if self_ids is not None else n
    if k_max < 1:
        raise ValueError(f"x has {n} row(s): no neighbours left after excluding each point itself")
    k = check_k(k, n, exclude_self=self_ids is not None)
    mode = check_choice(mode, _MODES, name="mode")
    use_gpu = faiss_use_gpu(device)
    seed = check_seed(seed)
    if nprobe is not None:
        nprobe = check_positive_int(nprobe, name="nprobe")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, name="chunk_size")
    if mode == "auto":
        mode = "exact" if n <= AUTO_EXACT_MAX_N else "ivf"
    index = _build_index(x, mode, use_gpu=use_gpu, seed=seed, nprobe=nprobe, k=k)
    dists, idx = _knn_search(
        index,
        x,
        q,
        k,
        self_ids=self_ids,
        squared=bool(squared),
        chunk_size=chunk_size,
        use_gpu=use_gpu,
        progress=bool(progress),
    )
    if not return_recall:
        return dists, idx
    recall = 1.0
    if mode != "exact":
        recall = estimate_recall(
            x, idx, k, n_sample=RECALL_SAMPLE, seed=seed, queries=None if queries is None else q,
            exclude_self=exclude_self,
        )
        logger.info("knn mode=%s k=%d on %d x %d: recall@k %.4f (sample of %d rows, seed %d)",
                    mode, k, n, d, recall, min(RECALL_SAMPLE, q.shape[0]), seed)
    return dists, idx, recall


def estimate_recall(x, idx, k, *, n_sample=1000, seed=0, queries=None, exclude_self=True) -> float:
    """Recall@k of an (approximate) neighbour list against exact search on a seeded sample of rows.

    For each sampled query row the exact k-th neighbour distance ``r_k`` is computed; a returned neighbour
    counts as a hit when its true distance is ``<= r_k`` (so a tied point that exact search happened to
    rank just outside the top k is not counted as a miss). Without ties this is ``|approx & exact| / k``.

    Args:
        x: database ``(n, d)`` used to compute ``idx``.
        idx: int ``(m, >= k)`` neighbour indices to evaluate (the first ``k`` columns are used; ``-1``
            entries count as misses).
        k: recall cut-off.
        n_sample: number of query rows evaluated (all rows when ``m <= n_sample``).
        seed: seeds the choice of rows.
        queries: the ``(m, d)`` queries ``idx`` was computed for, ``None`` for ``x`` itself.
        exclude_self: as in :func:`knn` (must match how ``idx`` was computed).

    Returns:
        Mean recall in ``[0, 1]`` over the sampled rows.
    """
    x = check_embeddings(x, name="x")
    n = x.shape[0]
    q = x if queries is None else check_embeddings(queries, name="queries")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} features but x has {x.shape[1]}")
    idx = np.asarray(idx)
    if idx.ndim != 2 or idx.shape[0] != q.shape[0] or idx.dtype.kind not in "iu":
        raise ValueError(
            f"idx must be an integer array of shape ({q.shape[0]}, >= k), got {idx.dtype} {idx.shape}"
        )
    use_self = queries is None and exclude_self
    k = check_k(k, n, exclude_self=use_self)
    if k > idx.shape[1]:
        raise ValueError(f"k={k} but idx has only {idx.shape[1]} columns")
    n_sample = check_positive_int(n_sample, name="n_sample")
    rng = np.random.default_rng(check_seed(seed))
    m = q.shape[0]
    rows = np.arange(m) if m <= n_sample else np.sort(rng.choice(m, size=n_sample, replace=False))
    use_gpu = faiss_use_gpu(None)
    exact_d, _ = _knn_search(
        _build_index(x, "exact", use_gpu=use_gpu, seed=0, nprobe=None, k=k),
        x,
        q[rows],
        k,
        self_ids=rows.astype(np.int64) if use_self else None,
        squared=True,
        chunk_size=None,
        use_gpu=use_gpu,
        progress=False,
    )
    cand = idx[rows, :k].astype(np.int64)
    valid = (cand >= 0) & (cand < n)
    if use_self:
        valid &= cand != rows[:, None]
    d2 = _sq_dists(x, q[rows], np.where(valid, cand, 0))
    r_k = exact_d[:, k - 1].astype(np.float64)
    hits = valid & (d2 <= r_k[:, None] * (1 + 1e-5) + 1e-12)
    # a neighbour listed twice is one neighbour
    uniq_hits = [np.unique(c[h]).size for c, h in zip(cand, hits)]
    return float(np.mean(np.minimum(uniq_hits, k)) / k)


def density_from_dists(dists, *, variant="paper") -> np.ndarray:
    """kNN density from neighbour distances (USL eq. 3).

    Args:
        dists: ``(n, k)`` TRUE (not squared) L2 distances to the k nearest neighbours, the point itself
            excluded, ascending: what :func:`knn` returns with its defaults.
        variant: ``"paper"`` (default): eq. 3, ``density(v) = 1 / mean_{j in kNN(v)} ||v - v_j||``.
            ``"reference"``: the USL reference code, which uses SQUARED distances and counts the point itself
            as its first neighbour (distance 0), i.e. ``1 / mean(0, d_1^2, ..., d_{k-1}^2)`` from the first
            ``k - 1`` columns. The paper is the default because uslkit follows the paper where the code
            differs; "reference" reproduces the released numbers.

    Returns:
        float64 ``(n,)`` densities. The mean distance is clipped at :data:`DENSITY_EPS` first, so a point
        whose neighbours are all exact duplicates gets the large finite density ``1 / DENSITY_EPS``.
    """
    variant = check_choice(variant, _VARIANTS, name="variant")
    dists = np.asarray(dists)
    if dists.ndim != 2 or dists.shape[1] < 1 or dists.dtype.kind not in "fiu":
        raise ValueError(f"dists must be a numeric (n, k) array with k >= 1, got {dists.dtype} {dists.shape}")
    dists = dists.astype(np.float64)
    if not np.isfinite(dists).all() or (dists < 0).any():
        raise ValueError("dists must be finite and non-negative (true L2 distances as returned by knn)")
    k = dists.shape[1]
    if variant == "paper":
        mean = dists.mean(axis=1)
    else:
        if k < 2:
            raise ValueError("variant='reference' needs k >= 2 (the point itself is one of the k neighbours)")
        mean = (dists[:, : k - 1] ** 2).sum(axis=1) / k
    return 1.0 / np.maximum(mean, DENSITY_EPS)


def knn_density(
    x, k, *, variant="paper", mode="exact", device=None, seed=0, nprobe=None, return_knn=False, progress=False,
    return_recall=False, pq_m=None,
):
    """kNN density of every point of ``x`` (USL eq. 3): high where neighbours are close.

    Exact search on the CPU without ``return_knn``: no neighbour lists, only each point's sum over its k nearest,
    read off a float32 GEMM of the centred points, ``|q'|^2 + |x'|^2 - 2 q'.x'`` (how faiss and the USL
    reference code compute distances), in blocks of :data:`DENSITY_BLOCK_ROWS` query rows, each one
    single-threaded BLAS call (:mod:`uslkit._blas`: the same bits on any thread count), and a compiled pass per
    row that keeps the k smallest values (:func:`uslkit._kernels.sum_rows`). Each squared distance is within
    ``2 (d + 8) 2^-24 (|q'| + max |x'|)^2`` of the float64 one (the bound of :func:`knn`'s module doc); one within
    64 times that of zero (near-duplicates, where the GEMM's cancellation dominates) is recomputed in float64
    from the coordinates. Measured against the float64 density: ``benchmarks/RESULTS.md``. ``mode="ivf"`` (or
    ``"auto"`` above :data:`AUTO_EXACT_MAX_N` points) on the CPU without ``return_knn``: the same pass per list of
    an IVF partition: the points are split into ``min(2 sqrt(n), n / 64)`` lists by the exact K-means (10
    iterations on :data:`IVF_TRAIN_POINTS_PER_LIST` seeded points per list), and the points of each list look for
    their neighbours in the ``nprobe`` (:data:`DENSITY_IVF_NPROBE`) lists whose centroids are nearest to theirs
    (more while those hold at most :data:`DENSITY_IVF_CANDIDATES` ``* k`` points); recall@k is measured on
    :data:`RECALL_SAMPLE` seeded rows against exact search and logged, with a warning below
    :data:`DENSITY_MIN_RECALL`. Without an explicit ``nprobe`` the count starts at :data:`DENSITY_IVF_NPROBE` and
    doubles, before the full pass, until the sampled rows' true neighbours inside the probed lists reach
    :data:`DENSITY_MIN_RECALL` (every list at most), so the default keeps that recall whatever the data; the cost
    grows with the lists searched. ``mode="ivfpq"`` (CPU, for embeddings larger than memory, e.g. a memory map of
    tens of millions of rows): the same lists and probing rule (without the doubling) on a compressed IVF-PQ index
    (Jegou, Douze & Schmid 2011), ``pq_m`` bytes per point, the rows read in chunks; the distances are estimates
    (:mod:`uslkit._ivfpq`).
    Otherwise (GPU, HNSW, ``return_knn``): ``knn(x, k)`` and :func:`density_from_dists`.

    Args:
        x: embeddings ``(n, d)``.
        k: neighbours, ``1 <= k <= n - 1`` (``>= 2`` for ``variant="reference"``). USL uses 400 on CIFAR and
            20 on ImageNet.
        variant: ``"paper"`` (default, eq. 3: mean of plain L2 distances over the k neighbours, self
            excluded) or ``"reference"`` (USL code: mean of SQUARED distances with the point itself counted
            among its k neighbours). See :func:`density_from_dists`.
        mode, device, seed, nprobe, progress: as in :func:`knn` (``"auto"``: exact up to
            :data:`AUTO_EXACT_MAX_N` points).
        return_knn: also return the neighbour lists (then :func:`knn` computes them).
        return_recall: also return the recall@k of the neighbours the density used (1.0 when exact; measured on a
            sample for the IVF paths).
        pq_m: ``mode="ivfpq"``: sub-vectors (bytes) per point, a divisor of ``d`` leaving at most 15 coordinates
            each (default: 4 each, ``d / 4`` bytes).

    Returns:
        float64 ``(n,)`` densities, or ``(density, dists, idx)`` when ``return_knn``: ``dists``/``idx`` are
        :func:`knn`'s output (float32 true L2 distances, own index excluded) whatever the variant; ``recall``
        appended when ``return_recall``.
    """
    variant = check_choice(variant, _VARIANTS, name="variant")
    x = check_embeddings(x, name="x")
    if variant == "reference" and not isinstance(k, bool) and isinstance(k, (int, np.integer)) and k < 2:
        raise ValueError(f"variant='reference' needs k >= 2, got k={k}")
    mode = check_choice(mode, _DENSITY_MODES, name="mode")
    k = check_k(k, x.shape[0], exclude_self=True)
    if mode == "auto":
        mode = "exact" if x.shape[0] <= AUTO_EXACT_MAX_N else "ivf"
    if mode == "ivfpq" and return_knn:
        raise ValueError("mode='ivfpq' gives the density alone (its distances are estimates): use return_knn=False "
                         "or another mode")
    n_sum, squared = (k, False) if variant == "paper" else (k - 1, True)
    gemm = None if return_knn else _gemm_sums(x, n_sum, squared=squared, mode=mode, device=device, seed=seed,
                                              nprobe=nprobe, progress=progress, pq_m=pq_m)
    if gemm is not None:
        sums, recall = gemm
        density = 1.0 / np.maximum(sums / k, DENSITY_EPS)
        return (density, recall) if return_recall else density
    out = knn(x, k, mode=mode, device=device, seed=seed, nprobe=nprobe, progress=progress,
              return_recall=return_recall)
    density = density_from_dists(out[0], variant=variant)
    res = (density, out[0], out[1]) if return_knn else (density,)
    res = res + (out[2],) if return_recall else res
    return res if len(res) > 1 else density


def knn_mean_distance(x, k, *, squared=False, mode="auto", device=None, seed=0, nprobe=None):
    """float64 ``(n,)`` mean (squared, when ``squared``) L2 distance of every row of ``x`` to its ``k`` nearest other
    rows: :func:`knn_density`'s GEMM paths on the CPU (exact, or IVF: ``"auto"`` above :data:`AUTO_EXACT_MAX_N`
    points), no neighbour lists; else the mean of :func:`knn`'s distances (``mode``, ``device``, ``seed``,
    ``nprobe`` as there)."""
    x = check_embeddings(x, name="x")
    mode = check_choice(mode, _MODES, name="mode")
    k = check_k(k, x.shape[0], exclude_self=True)
    if mode == "auto":
        mode = "exact" if x.shape[0] <= AUTO_EXACT_MAX_N else "ivf"
    gemm = _gemm_sums(x, k, squared=bool(squared), mode=mode, device=device, seed=seed, nprobe=nprobe,
                      progress=False)
    if gemm is not None:
        return gemm[0] / k
    dists, _ = knn(x, k, mode=mode, device=device, seed=seed, nprobe=nprobe, squared=bool(squared))
    return dists.astype(np.float64).mean(axis=1)


def _gemm_sums(x, k, *, squared, mode, device, seed, nprobe, progress, pq_m=None):
    """``(sums, recall)`` from :func:`_knn_sums` (``mode="exact"``), :func:`_knn_sums_ivf` (``"ivf"``) on the CPU or
    :func:`uslkit._ivfpq.knn_sums_ivfpq` (``"ivfpq"``, on the CPU on any device); ``None`` where those paths do not
    apply (a GPU, another mode): the caller then uses :func:`knn`."""
    if mode != "ivfpq" and (mode not in ("exact", "ivf") or faiss_use_gpu(device)):
        return None
    if mode == "exact":
        return _knn_sums(x, k, squared=squared, progress=bool(progress)), 1.0
    adaptive = nprobe is None
    nprobe = DENSITY_IVF_NPROBE if adaptive else check_positive_int(nprobe, name="nprobe")
    if mode == "ivfpq":
        from ._ivfpq import knn_sums_ivfpq

        return knn_sums_ivfpq(x, k, squared=squared, nprobe=nprobe, seed=check_seed(seed), progress=bool(progress),
                              pq_m=pq_m)
    return _knn_sums_ivf(x, k, squared=squared, nprobe=nprobe, seed=check_seed(seed), progress=bool(progress),
                         adaptive=adaptive)


def _centred(x: np.ndarray):
    """``(xc, sqn, exponent)``: float32 ``(x - mean) * 2^-exponent`` (the power of two brings the largest centred norm
    near 1: no underflow or overflow in a GEMM) and its float64 squared row norms."""
    n, d = x.shape
    mu = x.mean(axis=0, dtype=np.float64)
    xc = np.empty((n, d), dtype=np.float32)
    sq = np.empty(n, dtype=np.float64)
    for s in range(0, n, _ADD_BLOCK):
        block = x[s : s + _ADD_BLOCK] - mu
        sq[s : s + _ADD_BLOCK] = np.einsum("ij,ij->i", block, block)
        xc[s : s + _ADD_BLOCK] = block
    top = float(np.sqrt(sq.max()))
    exponent = int(np.frexp(top)[1]) if top > 0 else 0
    xc *= np.float32(2.0**-exponent)
    sqn = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
    return xc, sqn, exponent


def _knn_sums(x: np.ndarray, k: int, *, squared: bool, progress: bool) -> np.ndarray:
    """float64 ``(n,)``: each row's sum of its ``k`` smallest (squared) distances to the other rows, from a float32
    GEMM of the centred points (see :func:`knn_density`); blocks of :data:`DENSITY_BLOCK_ROWS` query rows, each
    one single-threaded BLAS call on a pool of threads."""
    from ._blas import map_blocks
    from ._kernels import sum_rows

    n, d = x.shape
    xc, sqn, exponent = _centred(x)
    sqn32 = sqn.astype(np.float32)
    max_norm = float(np.sqrt(sqn.max()))
    inv_scale2 = 4.0**exponent
    out = np.empty(n, dtype=np.float64)
    xct = xc.T
    step = DENSITY_BLOCK_ROWS
    no_ids = np.empty((0, k), dtype=np.int64)

    def block_sums(s):
        e = min(s + step, n)
        g = xc[s:e] @ xct
        slack = _rounding_slack(np.sqrt(sqn[s:e]), max_norm, d)
        sum_rows(g, sqn32, sqn[s:e], slack, inv_scale2, x[s:e], x, np.arange(s, e, dtype=np.int64), k, squared,
                 out[s:e], no_ids)

    blocks = map_blocks(block_sums, range(0, n, step))
    if progress:
        from tqdm.auto import tqdm

        blocks = tqdm(blocks, total=-(-n // step), desc=f"knn density k={k}", unit="block")
    for _ in blocks:
        pass
    return out


def _list_centroids(x: np.ndarray, seed: int) -> np.ndarray:
    """float32 ``(nlist, d)`` centroids of the density's lists (:func:`_list_partition`, and the compressed index of
    :mod:`uslkit._ivfpq`): ``2 sqrt(n)`` (at most ``n / 64``) seeded K-means centroids, 10 iterations on a sample."""
    from .cluster import kmeans

    n = x.shape[0]
    nlist = int(max(1, min(round(2 * np.sqrt(n)), n // 64)))
    _, cent = kmeans(np.ascontiguousarray(x[_ivf_training_rows(n, nlist, seed)], dtype=np.float32), nlist, seed=seed,
                     niter=10)
    return cent


def _list_partition(x: np.ndarray, seed: int):
    """The lists of the IVF density (and of ProbCover's pruned search): ``2 sqrt(n)`` (at most ``n / 64``) seeded
    K-means centroids trained in 10 iterations on a sample, every row in its exact nearest list. Returns ``(lists
    (n,), centroids float32 (nlist, d), row order by list (stable), counts, starts (nlist + 1,))``."""
    from .cluster import _Nearest

    cent = _list_centroids(x, seed)
    nlist = cent.shape[0]
    lists = _Nearest(x)(cent)
    counts = np.bincount(lists, minlength=nlist)
    return lists, cent, np.argsort(lists, kind="stable"), counts, np.concatenate([[0], np.cumsum(counts)])


def _knn_sums_ivf(x: np.ndarray, k: int, *, squared: bool, nprobe: int, seed: int, progress: bool,
                  adaptive: bool = False):
    """``(sums, recall)``: :func:`_knn_sums` with each list of an IVF partition searched among its ``nprobe``
    nearest lists (see :func:`knn_density`); recall@k measured on a seeded sample of rows against exact search.
    ``adaptive`` (the caller gave no ``nprobe``): before the full pass, the share of the sampled rows' exact k
    neighbours that lie in their probed lists (the recall@k the pass will get) is counted for ``nprobe``, then
    twice as many lists, and so on, and the first count that reaches :data:`DENSITY_MIN_RECALL` (at most every
    list) is used."""
    from ._blas import map_blocks
    from ._kernels import sum_rows

    n, d = x.shape
    xc, sqn, exponent = _centred(x)
    lists, cent, order, counts, starts = _list_partition(xc, seed)
    nlist = cent.shape[0]
    c64 = cent.astype(np.float64)
    gaps = np.stack([((c64 - c) ** 2).sum(axis=1) for c in c64])
    near = np.lexsort((np.broadcast_to(np.arange(nlist), gaps.shape), gaps), axis=1)  # by distance, then index
    xs = xc[order]
    del xc
    xo = np.ascontiguousarray(x[order])
    sqs = sqn[order]
    sqs32 = sqs.astype(np.float32)
    max_norm = float(np.sqrt(sqn.max()))
    inv_scale2 = 4.0**exponent
    out = np.empty(n, dtype=np.float64)
    m = min(RECALL_SAMPLE, n)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    wanted = np.zeros(n, dtype=bool)
    wanted[np.argsort(order)[sample]] = True  # the sampled rows' positions in list order
    found: dict[int, np.ndarray] = {}

    def probes_of(lst, nprobe):
        probes, total = [lst], counts[lst]
        for p in near[lst]:
            if len(probes) >= nprobe and total > DENSITY_IVF_CANDIDATES * k:
                break
            if p != lst:
                probes.append(p)
                total += counts[p]
        probes.sort()  # columns in list order
        return probes

    # the sampled rows' exact neighbours: the recall's reference
    ex_d, ex_i = knn(x, k + 1, queries=x[sample], squared=True)
    r_k = ex_d[:, k].astype(np.float64)  # k-th neighbour's squared distance (the point itself is one of the k + 1)
    if adaptive:  # recall of a probe count = the share of the true neighbours inside the probed lists
        own = ex_i != sample[:, None]
        true_lists = np.where(own, lists[ex_i], -1)
        while True:
            inside = np.zeros(true_lists.shape, dtype=bool)
            for lst in np.unique(lists[sample]):
                rows = np.flatnonzero(lists[sample] == lst)
                inside[rows] = np.isin(true_lists[rows], probes_of(lst, nprobe))
            estimate = float(np.minimum(k, (inside & own).sum(axis=1)).sum()) / (m * k)
            logger.info("knn_density IVF: %d of %d lists hold %.4f of the sampled rows' true %d neighbours",
                        nprobe, nlist, estimate, k)
            if estimate >= DENSITY_MIN_RECALL or nprobe >= nlist:
                break
            nprobe = min(nlist, 2 * nprobe)

    def one_list(lst):
        a, b = starts[lst], starts[lst + 1]
        if a == b:
            return
        probes = probes_of(lst, nprobe)
        cols = np.concatenate([np.arange(starts[p], starts[p + 1]) for p in probes])
        own = int(np.searchsorted(cols, a))
        slack = _rounding_slack(np.sqrt(sqs[a:b]), max_norm, d)
        want = np.flatnonzero(wanted[a:b])
        ids = np.empty((b - a if want.size else 0, k), dtype=np.int64)
        sum_rows(xs[a:b] @ xs[cols].T, sqs32[cols], sqs[a:b], slack, inv_scale2, xo[a:b], xo[cols],
                 np.arange(own, own + b - a, dtype=np.int64), k, squared, out[a:b], ids)
        for r in want:
            found[int(order[a + r])] = order[cols[ids[r]]]

    lists_iter = map_blocks(one_list, range(nlist))
    if progress:
        from tqdm.auto import tqdm

        lists_iter = tqdm(lists_iter, total=nlist, desc=f"knn density k={k} (IVF, {nprobe} of {nlist} lists)",
                          unit="list")
    for _ in lists_iter:
        pass
    sums = np.empty(n, dtype=np.float64)
    sums[order] = out
    # recall@k: a neighbour counts when its true distance is within the exact k-th one (a tie is not a miss)
    recall = _recall_at_k(x, sample, np.stack([found[int(i)] for i in sample]), r_k)
    low = recall < DENSITY_MIN_RECALL
    (logger.warning if low else logger.info)(
        "knn_density IVF (%d of %d lists) k=%d on %d x %d: recall@k %.4f on %d sampled rows%s", nprobe, nlist, k, n,
        d, recall, m, f"; below {DENSITY_MIN_RECALL}: raise nprobe" if low else "")
    return sums, recall


# --------------------------------------------------------------------------------------------------------
# Computation
# --------------------------------------------------------------------------------------------------------
class _Index(NamedTuple):
    """A faiss index over ``x - shift`` (``shift`` is ``None`` for approximate indexes: no translation)."""

    faiss: Any
    shift: np.ndarray | None
    max_norm: float  # largest norm of the indexed vectors x - shift (used by the rounding bound)
    exact: bool


def _ivf_nlist(n: int) -> int:
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


def _ivf_training_rows(n: int, nlist: int, seed: int) -> np.ndarray:
    """Sorted seeded sample of at most ``IVF_TRAIN_POINTS_PER_LIST * nlist`` row indices (all when fewer)."""
    size = IVF_TRAIN_POINTS_PER_LIST * nlist
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def _build_index(x: np.ndarray, mode: str, *, use_gpu: bool, seed: int, nprobe: int | None, k: int) -> _Index:
    import faiss

    n, d = x.shape
    if mode == "exact":
        index = faiss.IndexFlatL2(d)
    elif mode == "ivf":
        nlist = _ivf_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        index.cp.seed = seed
        rows = _ivf_training_rows(n, nlist, seed)
        index.train(x if rows.size == n else x[rows])
        index.nprobe = min(nlist, nprobe if nprobe is not None else IVF_NPROBE)
    elif mode == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = nprobe if nprobe is not None else max(64, 2 * (k + 1 + _CANDIDATE_MARGIN))
    else:  # pragma: no cover - validated before
        raise ValueError(mode)
    if use_gpu and mode != "hnsw":
        nprobe_cpu = getattr(index, "nprobe", None)
        index = faiss.index_cpu_to_all_gpus(index)
        if nprobe_cpu is not None:
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", nprobe_cpu)
    if mode != "exact":
        index.add(x)
        return _Index(index, None, 0.0, False)
    # exact: index x - mean, which shrinks the norms that bound faiss' float32 rounding error
    shift = x.mean(axis=0, dtype=np.float64).astype(np.float32)
    max_norm = 0.0
    for s in range(0, n, _ADD_BLOCK):
        block = x[s : s + _ADD_BLOCK] - shift
        max_norm = max(max_norm, float(np.sqrt(np.einsum("ij,ij->i", block, block, dtype=np.float64).max())))
        index.add(block)
    return _Index(index, shift, max_norm, True)


def _default_chunk(m: int, k_search: int) -> int:
    """Query rows per faiss call: faiss' own query block (4096 on CPU), fewer when the re-ranking arrays
    (~48 bytes per candidate) would exceed :data:`CHUNK_MEMORY_BYTES`; larger chunks make the re-ranking's
    temporaries fall out of the cache."""
    per_row = k_search * 48  # faiss distances/ids, exact distances, sort keys, masks and temporaries
    return int(max(1, min(m, 4096, CHUNK_MEMORY_BYTES // per_row)))


def _sq_dists(x: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Squared distances ``|q_i - x_cand[i, j]|^2`` as float32 ``(c, p)``: faiss ``fvec_L2sqr`` on the float32
    coordinate differences (one rounding each, no cancellation; multi-threaded, nothing gathered).
    ``cand`` must hold valid row indices of ``x``."""
    import faiss

    q = np.ascontiguousarray(q, dtype=np.float32)
    cand = np.ascontiguousarray(cand, dtype=np.int64)
    out = np.empty(cand.shape, dtype=np.float32)
    if out.size:
        faiss.fvec_L2sqr_by_idx(
            faiss.swig_ptr(out), faiss.swig_ptr(q), faiss.swig_ptr(x), faiss.swig_ptr(cand),
            x.shape[1], cand.shape[0], cand.shape[1],
        )
    return out


def _rounding_slack(q_norm: np.ndarray, max_norm: float, d: int) -> np.ndarray:
    """Upper bound on |faiss' float32 squared distance - ours| for every database point (see module doc)."""
    return 2.0 * (d + 8) * 2.0**-24 * (q_norm.astype(np.float64) + max_norm) ** 2


def _near_tie_tolerance(d: int) -> float:
    """Relative gap below which two :func:`_sq_dists` values may be in the wrong order: each is within
    ``(d + 2) 2^-24`` (relative) of the exact squared distance (float32 differences, squares, d-term sum)."""
    return 2.0 * (d + 4) * 2.0**-24


def _rerank(x, q, cand, k, self_ids):
    """Exact re-ranking of candidate lists ``cand`` (c, p) (``-1`` = none found).

    Every valid candidate gets its squared distance from :func:`_sq_dists`; candidates are sorted by one
    int64 key, ``bits(d2) << 31 | index`` (float32 bit patterns of non-negative numbers order like the
    numbers), so that equal values go to the lower index without a lexsort. Runs of values closer than the
    float32 rounding (:func:`_near_tie_tolerance`) that reach into the first ``k`` are then re-sorted by
    float64 distances (:func:`_resolve_near_ties`), so the order is the exact one.

    Returns ``(d2 (c, k) float32, idx (c, k), complete (c,))``: ``complete`` when at least ``k`` valid
    candidates were found (rows that are not complete hold garbage).
    """
    valid = cand >= 0
    if not valid.all():
        cand = np.where(valid, cand, 0)
    if self_ids is not None:
        valid &= cand != self_ids[:, None]
    key = _sq_dists(x, q, cand).view(np.int32).astype(np.int64)
    key <<= _ID_BITS
    key |= cand
    key[~valid] = _INVALID_KEY
    key.sort(axis=1)
    _resolve_near_ties(x, q, key, k)
    top = key[:, :k]
    d2 = (top >> _ID_BITS).astype(np.uint32).view(np.float32)
    return d2, top & _ID_MASK, valid.sum(axis=1) >= k


def _resolve_near_ties(x, q, key, k) -> None:
    """Re-sort, in place, the runs of near-equal values of the sorted keys ``key`` (c, p) that reach into
    the first ``k`` columns by ``(float64 squared distance, index)``.

    Neighbouring values further apart than :func:`_near_tie_tolerance` are in the exact order already, so
    only run members move, within their run; their distances become the float64 values rounded to float32
    (monotone, so the row stays sorted). Near pairs are found on the keys: ``n`` float32 ulps apart is at
    least a relative gap of ``n 2^-24``, so ``tolerance * 2^24 + 2`` ulps (the index bits can borrow one)
    flags every near pair, and a few more.
    """
    max_ulps = int(_near_tie_tolerance(x.shape[1]) * 2**24) + 2
    r, j = np.nonzero(np.diff(key, axis=1) < (max_ulps << _ID_BITS))  # pair (r, j) -- (r, j + 1), row-major
    valid = key[r, j + 1] != _INVALID_KEY
    r, j = r[valid], j[valid]
    if r.size == 0:
        return
    start = np.ones(r.size, dtype=bool)  # a pair that does not continue the previous one starts a run
    start[1:] = (r[1:] != r[:-1]) | (j[1:] != j[:-1] + 1)
    run = np.cumsum(start) - 1
    keep = j[start][run] < k  # the run's first column is among the first k
    end = np.ones(r.size, dtype=bool)
    end[:-1] = start[1:]
    r, j, run, end = r[keep], j[keep], run[keep], end[keep]
    # members, run by run in column order: the left end of every pair, then the right end of a run's last
    after_end = np.flatnonzero(end) + 1
    rows = np.insert(r, after_end, r[end])
    cols = np.insert(j, after_end, j[end] + 1)
    run = np.insert(run, after_end, run[end])
    ids = key[rows, cols] & _ID_MASK
    exact = _sq_dists_float64(x, q, rows, ids)
    by_value = np.lexsort((ids, exact, run))  # members of each run, in exact order
    bits = exact[by_value].astype(np.float32).view(np.int32).astype(np.int64)
    key[rows, cols] = (bits << _ID_BITS) | ids[by_value]


def _recall_at_k(x, sample, got, r_k) -> float:
    """recall@k of the neighbours ``got`` ``(m, k)`` found for the rows ``sample`` of ``x``: the share whose exact
    float64 squared distance is within the exact k-th one ``r_k`` ``(m,)`` (a tie with it is not a miss)."""
    m, k = got.shape
    d2 = _sq_dists_float64(x, x[sample], np.repeat(np.arange(m), k), got.ravel()).reshape(m, k)
    return float(np.mean(d2 <= r_k[:, None] * (1 + 1e-5) + 1e-12))


def _sq_dists_float64(x, q, rows, ids, block=8192) -> np.ndarray:
    """``|q[rows[t]] - x[ids[t]]|^2`` in float64 from exact float64 differences, ``(len(ids),)``; in blocks
    that stay in the cache."""
    out = np.empty(ids.size, dtype=np.float64)
    for s in range(0, ids.size, block):
        diff = x[ids[s : s + block]].astype(np.float64)
        diff -= q[rows[s : s + block]]
        out[s : s + block] = np.einsum("ij,ij->i", diff, diff)
    return out


def _search_rows(index, x, q, k, self_ids, rows, k_search, chunk_size, progress, out_d, out_i):
    """Search + re-rank the query ``rows`` into ``out_d``/``out_i``.

    Exact index: a row is accepted when no point outside its candidate list can rank before its k-th
    neighbour (``r_k < D_last - slack``, see the module doc); the other rows are searched again with a
    doubled list. Approximate index: returns the rows that got fewer than ``k`` neighbours (to be done
    exactly); ties are broken by index among the candidates found.
    """
    n, d = x.shape
    missing = []
    while rows.size:
        ks = min(k_search, n)
        chunk = chunk_size or _default_chunk(rows.size, ks)
        starts = range(0, rows.size, chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(
                starts, desc=f"knn k={k}" + (f" (list {ks})" if ks > k_search else ""), unit="chunk"
            )
        redo = []
        for s in starts:
            r = rows[s : s + chunk]
            qr = q[r]
            qs = qr if index.shift is None else qr - index.shift
            dist_f, cand = index.faiss.search(qs, ks)
            sid = None if self_ids is None else self_ids[r]
            d2, ii, complete = _rerank(x, qr, cand.astype(np.int64), k, sid)
            out_d[r], out_i[r] = d2, ii
            if not index.exact:
                missing.append(r[~complete])
            elif ks < n:
                q_norm = np.sqrt(np.einsum("ij,ij->i", qs, qs, dtype=np.float64))
                d_last = dist_f[:, -1].astype(np.float64) - _rounding_slack(q_norm, index.max_norm, d)
                r_k = d2[:, k - 1].astype(np.float64) * (1 + _near_tie_tolerance(d))
                redo.append(r[~(complete & (r_k < d_last))])
        rows = np.concatenate(redo) if redo else rows[:0]
        k_search = min(2 * ks, n)
    return np.concatenate(missing) if missing else np.zeros(0, dtype=np.int64)


def _knn_search(index, x, q, k, *, self_ids, squared, chunk_size, use_gpu, progress):
    m = q.shape[0]
    k_search = min(x.shape[0], k + (1 if self_ids is not None else 0) + _CANDIDATE_MARGIN)
    d2 = np.empty((m, k), dtype=np.float32)
    idx = np.empty((m, k), dtype=np.int64)
    args = (k, self_ids)
    missing = _search_rows(index, x, q, *args, np.arange(m), k_search, chunk_size, progress, d2, idx)
    if missing.size:  # the approximate index found fewer than k points for these rows: search them exactly
        exact = _build_index(x, "exact", use_gpu=use_gpu, seed=0, nprobe=None, k=k)
        _search_rows(exact, x, q, *args, missing, k_search, chunk_size, progress, d2, idx)
    return (d2 if squared else np.sqrt(d2)), idx
