"""k-nearest-neighbour graph and kNN density (USL, paper 000, eq. 3).

Data flow: embeddings -> :func:`knn` -> ``(dists, idx)`` -> :func:`density_from_dists`.

All searches return a fixed ``(dists, idx)`` order: ``dists`` float32 ``(m, k)`` ascending, ``idx`` int64
``(m, k)``. faiss (GPU when ``faiss_gpu_count() > 0``, CPU otherwise) finds candidates; uslkit then
re-ranks every candidate list with distances recomputed from the coordinate differences (float32
differences summed in float64). That re-ranking is what makes the output exact to float32 precision (faiss' BLAS path computes
``|q|^2 + |x|^2 - 2 q.x`` in float32, which loses digits for near points), removes the query's own index,
and breaks ties by the lower index. Whenever a run of tied distances reaches the end of the candidate
list, the candidate list of those rows is doubled until it does not (or covers the whole database), so
the tie-break by index holds also for many exact duplicates.

Memory: faiss computes distances in fixed internal tiles (4096 queries x 1024 database rows on CPU); uslkit
holds at most ``chunk_size x k_search x d`` float32 values for the re-ranking, where ``chunk_size`` is
chosen from a budget of :data:`CHUNK_MEMORY_BYTES`. No ``n x n`` matrix is ever built, so 1,000,000 x 128
runs in a few GB (exact search is then O(n^2 d): minutes on a GPU, hours on a laptop CPU; use
``mode="ivf"`` there).
"""

from __future__ import annotations

import numpy as np

from ._validate import check_embeddings, check_positive_int, check_seed
from .device import faiss_use_gpu

__all__ = [
    "AUTO_EXACT_MAX_N",
    "CHUNK_MEMORY_BYTES",
    "DENSITY_EPS",
    "density_from_dists",
    "estimate_recall",
    "knn",
    "knn_density",
]

#: ``mode="auto"`` searches exactly up to this many database points and with IVF above. 200,000 x 128
#: exact takes about a minute on a 16-core CPU and seconds on a GPU; above that exact search is O(n^2).
AUTO_EXACT_MAX_N = 200_000

#: Memory budget (bytes) for one chunk of query rows during the exact re-ranking of candidates.
CHUNK_MEMORY_BYTES = 512 * 2**20

#: Mean neighbour distances are clipped at this value before inversion, so that a point with k exact
#: duplicates gets a large finite density (1 / DENSITY_EPS) instead of ``inf``.
DENSITY_EPS = 1e-12

#: Extra candidates requested from faiss beyond ``k`` (+1 for the excluded self), so that rounding in
#: faiss' float32 distances cannot push a true neighbour out of the list before the float64 re-ranking.
_CANDIDATE_MARGIN = 8

_MODES = ("exact", "ivf", "hnsw", "auto")
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
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours in Euclidean (L2) distance.

    Args:
        x: database, array ``(n, d)``; converted to float32 C-contiguous (faiss' requirement).
        k: number of neighbours, ``1 <= k <= n - 1`` when the query's own index is excluded, else ``<= n``.
        queries: ``(m, d)`` query points, or ``None`` to query every row of ``x`` (then ``m = n``).
        exclude_self: only when ``queries is None``: remove row ``i``'s OWN index ``i`` from its list.
            Other points at distance 0 (exact duplicates of row ``i``) are kept, at distance 0. Ignored when
            ``queries`` is given (queries have no index in ``x``).
        squared: return squared L2 distances instead of true L2 distances.
        mode: ``"exact"`` (faiss flat index, brute force), ``"ivf"`` (IndexIVFFlat, ``nlist`` =
            ``min(4 sqrt(n), n / 39)`` trained with ``seed``), ``"hnsw"`` (IndexHNSWFlat, M = 32, CPU only)
            or ``"auto"`` (exact when ``n <= AUTO_EXACT_MAX_N``, IVF above). Approximate modes return
            exact distances for the neighbours they find; rows for which they find fewer than ``k`` are
            completed by exact search.
        chunk_size: query rows per faiss call; ``None`` picks it from :data:`CHUNK_MEMORY_BYTES`.
        device: ``None``/``"auto"`` (faiss GPU if available), ``"cpu"`` or ``"cuda"``/``"gpu"``.
        seed: seeds IVF training (the only randomness; exact and HNSW search do not use it).
        nprobe: IVF lists visited per query (default ``max(16, nlist // 8)``), or HNSW ``efSearch``
            (default ``max(64, 2 * k)``). Larger is slower and more accurate.
        progress: show a tqdm progress bar over query chunks.

    Returns:
        ``(dists, idx)``: float32 ``(m, k)`` distances in ascending order (ties by ascending index) and
        int64 ``(m, k)`` indices into ``x``.

    Raises:
        ValueError: bad ``x``/``queries`` (NaN, wrong shape), ``k`` out of range, unknown ``mode`` or
            ``device``.
    """
    x = check_embeddings(x, name="x")
    n, d = x.shape
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
    k = _check_k(k, k_max, n, self_ids is not None)
    mode = _check_mode(mode)
    use_gpu = faiss_use_gpu(device)
    seed = check_seed(seed)
    if nprobe is not None:
        nprobe = check_positive_int(nprobe, name="nprobe")
    if chunk_size is not None:
        chunk_size = check_positive_int(chunk_size, name="chunk_size")
    if mode == "auto":
        mode = "exact" if n <= AUTO_EXACT_MAX_N else "ivf"
    index = _build_index(x, mode, use_gpu=use_gpu, seed=seed, nprobe=nprobe, k=k)
    return _knn_search(
        index,
        x,
        q,
        k,
        self_ids=self_ids,
        squared=bool(squared),
        chunk_size=chunk_size,
        use_gpu=use_gpu,
        approximate=(mode != "exact"),
        progress=bool(progress),
    )


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
    k = _check_k(k, n - 1 if use_self else n, n, use_self)
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
        approximate=False,
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
    variant = _check_variant(variant)
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
    x, k, *, variant="paper", mode="exact", device=None, seed=0, return_knn=False, progress=False
):
    """kNN density of every point of ``x`` (USL eq. 3): high where neighbours are close.

    Computes ``knn(x, k)`` (true L2 distances, own index excluded) and :func:`density_from_dists`.

    Args:
        x: embeddings ``(n, d)``.
        k: neighbours, ``1 <= k <= n - 1`` (``>= 2`` for ``variant="reference"``). USL uses 400 on CIFAR and
            20 on ImageNet.
        variant: ``"paper"`` (default, eq. 3: mean of plain L2 distances over the k neighbours, self
            excluded) or ``"reference"`` (USL code: mean of SQUARED distances with the point itself counted
            among its k neighbours). See :func:`density_from_dists`.
        mode, device, seed, progress: passed to :func:`knn`.
        return_knn: also return the neighbour lists.

    Returns:
        float64 ``(n,)`` densities, or ``(density, dists, idx)`` when ``return_knn``: ``dists``/``idx`` are
        :func:`knn`'s output (float32 true L2 distances, own index excluded) whatever the variant.
    """
    variant = _check_variant(variant)
    x = check_embeddings(x, name="x")
    if variant == "reference" and not isinstance(k, bool) and isinstance(k, (int, np.integer)) and k < 2:
        raise ValueError(f"variant='reference' needs k >= 2, got k={k}")
    dists, idx = knn(x, k, mode=mode, device=device, seed=seed, progress=progress)
    density = density_from_dists(dists, variant=variant)
    return (density, dists, idx) if return_knn else density


# --------------------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------------------
def _check_k(k, k_max: int, n: int, excl: bool) -> int:
    k = check_positive_int(k, name="k")
    if k > k_max:
        why = " (each point's own index is excluded)" if excl else ""
        raise ValueError(f"k={k} is too large for {n} points: at most {k_max}{why}")
    return k


def _check_mode(mode) -> str:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    return mode


def _check_variant(variant) -> str:
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    return variant


# --------------------------------------------------------------------------------------------------------
# Computation
# --------------------------------------------------------------------------------------------------------
def _ivf_nlist(n: int) -> int:
    return int(max(1, min(round(4 * np.sqrt(n)), n // 39)))


def _build_index(x: np.ndarray, mode: str, *, use_gpu: bool, seed: int, nprobe: int | None, k: int):
    import faiss

    n, d = x.shape
    if mode == "exact":
        index = faiss.IndexFlatL2(d)
    elif mode == "ivf":
        nlist = _ivf_nlist(n)
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist, faiss.METRIC_L2)
        index.cp.seed = seed
        index.train(x)
        index.nprobe = min(nlist, nprobe if nprobe is not None else max(16, nlist // 8))
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
    index.add(x)
    return index


def _default_chunk(m: int, d: int, k_search: int) -> int:
    per_row = k_search * (4 * d + 40)  # float32 re-ranking block + candidate distances/indices/sort keys
    return int(max(1, min(m, 16384, CHUNK_MEMORY_BYTES // per_row)))


def _sq_dists(x: np.ndarray, q: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Squared distances ``|q_i - x_cand[i, j]|^2``, ``(c, p)`` float64: float32 coordinate differences
    (one rounding each, no cancellation) summed in float64."""
    diff = x[cand]
    diff -= q[:, None, :]
    return np.einsum("cpd,cpd->cp", diff, diff, dtype=np.float64)


def _rerank(x, q, cand, k, self_ids):
    """Exact re-ranking of candidate lists ``cand`` (c, p) (``-1`` = none found).

    Returns ``(d2 (c, k), idx (c, k), complete (c,), tie_open (c,))``: ``complete`` when at least ``k``
    valid candidates were found; ``tie_open`` when the run of distances tied with the k-th one reaches the
    end of the list, so tied points with lower indices may lie beyond it.
    """
    n = x.shape[0]
    valid = cand >= 0
    if self_ids is not None:
        valid &= cand != self_ids[:, None]
    d2 = _sq_dists(x, q, np.where(valid, cand, 0))
    d2[~valid] = np.inf
    key_idx = np.where(valid, cand, np.iinfo(np.int64).max)
    order = np.lexsort((key_idx, d2), axis=-1)
    d2 = np.take_along_axis(d2, order, axis=1)
    key_idx = np.take_along_axis(key_idx, order, axis=1)
    n_valid = valid.sum(axis=1)
    n_avail = n - (1 if self_ids is not None else 0)
    complete = n_valid >= k
    last = d2[np.arange(len(d2)), np.maximum(n_valid - 1, 0)]
    tie_open = complete & (last <= d2[:, k - 1]) & (n_valid < n_avail)
    return d2[:, :k], key_idx[:, :k], complete, tie_open


def _search_rows(index, x, q, k, self_ids, rows, k_search, chunk_size, approximate, progress, out_d, out_i):
    """Search + re-rank the query ``rows`` into ``out_d``/``out_i``.

    Exact index: rows whose k-th distance is tied up to the end of their list are searched again with a
    doubled list. Approximate index: returns the rows that got fewer than ``k`` neighbours (to be done
    exactly); ties are broken by index among the candidates found.
    """
    n = x.shape[0]
    missing = []
    while rows.size:
        ks = min(k_search, n)
        chunk = chunk_size or _default_chunk(rows.size, x.shape[1], ks)
        starts = range(0, rows.size, chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(
                starts, desc=f"knn k={k}" + (f" (list {ks})" if ks > k_search else ""), unit="chunk"
            )
        redo = []
        for s in starts:
            r = rows[s : s + chunk]
            _, cand = index.search(q[r], ks)
            sid = None if self_ids is None else self_ids[r]
            d2, ii, complete, tie_open = _rerank(x, q[r], cand.astype(np.int64), k, sid)
            out_d[r], out_i[r] = d2, ii
            if approximate:
                missing.append(r[~complete])
            elif ks < n:
                redo.append(r[tie_open])
        rows = np.concatenate(redo) if redo else rows[:0]
        k_search = min(2 * ks, n)
    return np.concatenate(missing) if missing else np.zeros(0, dtype=np.int64)


def _knn_search(index, x, q, k, *, self_ids, squared, chunk_size, use_gpu, approximate, progress):
    m = q.shape[0]
    k_search = min(x.shape[0], k + (1 if self_ids is not None else 0) + _CANDIDATE_MARGIN)
    d2 = np.empty((m, k), dtype=np.float64)
    idx = np.empty((m, k), dtype=np.int64)
    args = (k, self_ids)
    missing = _search_rows(
        index, x, q, *args, np.arange(m), k_search, chunk_size, approximate, progress, d2, idx
    )
    if missing.size:  # the approximate index found fewer than k points for these rows: search them exactly
        exact = _build_index(x, "exact", use_gpu=use_gpu, seed=0, nprobe=None, k=k)
        _search_rows(exact, x, q, *args, missing, k_search, chunk_size, False, progress, d2, idx)
    dists = d2 if squared else np.sqrt(d2)
    return dists.astype(np.float32), idx
