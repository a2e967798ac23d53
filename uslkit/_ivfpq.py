"""kNN density from a compressed IVF-PQ index, for embeddings larger than memory (``knn_density(mode="ivfpq")``).

Jegou, Douze & Schmid (2011, "Product quantization for nearest neighbor search", sec. 4, IVFADC): every point is
stored as its coarse list (the nearest of ``nlist`` K-means centroids) and its residual ``x - c`` product-quantised
into ``m`` one-byte codes (``m`` sub-vectors of ``d / m`` coordinates, each replaced by the nearest of 256
sub-centroids); a query's distances to the points of its probed lists are the asymmetric estimates ``|q - c -
q(r)|^2`` read from lookup tables (faiss ``IndexIVFPQ``). The index holds ``m`` bytes and an id per point (40 bytes
at ``d = 128``, against 512 for the float32 row); the embeddings are read in row chunks, three times (codes,
searches, the recall sample's exact neighbours), so a memory map never has to fit in memory.

What this module decides itself, so that the picks are the same on any thread count (faiss' own K-means training,
its batched coarse search and its BLAS paths depend on the thread split): the coarse centroids and the 256
sub-centroids per sub-vector are trained by :func:`uslkit.cluster.kmeans` on seeded samples; every point's list is
its exact nearest centroid (``uslkit.cluster._Nearest``, chunk by chunk); the probed lists of a query come from a
fixed-block GEMM (:mod:`uslkit._blas`); sub-vectors have fewer than 16 coordinates, where faiss encodes and builds
its tables one vector at a time without BLAS. faiss then only encodes residuals and scans codes, one query per
thread. Deviation from exact kNN: the distances are estimates (each off by the quantisation error of the
neighbour's residual) and the neighbours are the k smallest estimates; recall@k and the density's relative error
against exact search are measured on a seeded sample of rows and logged (``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger("uslkit.knn")

#: Rows of the embeddings read (and encoded, or searched) at a time.
CHUNK_ROWS = 1 << 15

#: The 256 sub-centroids of each sub-vector are trained on a seeded sample of this many residuals (faiss' default
#: sampling cap for 256 centroids: 256 per centroid).
PQ_TRAIN_ROWS = 65_536

#: Bits per sub-vector code (256 sub-centroids: faiss' fast 8-bit scan).
PQ_BITS = 8

#: Largest sub-vector width: from 16 coordinates on, faiss encodes and builds lookup tables with BLAS, whose
#: bits depend on the thread count.
PQ_MAX_DSUB = 15

#: Coordinates per sub-vector of the default ``m`` (the smallest ``m`` dividing ``d`` with ``d / m <= 4``: 32 bytes
#: at ``d = 128``). On Fashion-MNIST PCA-64 (k = 400) the median relative error of the density was 1.7 % with 8
#: coordinates, 0.5 % with 4 and 0.06 % with 2 (``benchmarks/RESULTS.md``).
PQ_DEFAULT_DSUB = 4

#: Probed lists per query: at most this many times ``nprobe`` are ranked at once (more lists only for rows whose
#: ranked lists hold fewer than ``k + 1`` points).
_RANKED_PROBES = 4


def default_pq_m(d: int) -> int:
    """Sub-vectors of the default code: the smallest divisor ``m`` of ``d`` with ``d / m <= 4``."""
    return next(m for m in range(1, d + 1) if d % m == 0 and d // m <= PQ_DEFAULT_DSUB)


def check_pq_m(pq_m, d: int, *, name: str = "pq_m") -> int:
    """Validate ``pq_m`` (called ``name`` in messages) for ``d`` dimensions (``None``: :func:`default_pq_m`)."""
    from ._validate import check_positive_int

    if pq_m is None:
        return default_pq_m(d)
    m = check_positive_int(pq_m, name=name)
    if d % m or d // m > PQ_MAX_DSUB:
        raise ValueError(f"{name}={m} must divide d={d} into sub-vectors of at most {PQ_MAX_DSUB} coordinates "
                         f"({name} >= {-(-d // PQ_MAX_DSUB)}, a divisor of {d})")
    return m


def _rows(x, s: int, e: int) -> np.ndarray:
    """float32 C-contiguous copy of ``x[s:e]`` (one chunk of a memory map in memory)."""
    return np.ascontiguousarray(x[s:e], dtype=np.float32)


def _train_pq(x, lists_of, cent, m: int, seed: int) -> np.ndarray:
    """float32 ``(m, 256, d / m)`` sub-centroids: per sub-vector, exact K-means (25 iterations) on the residuals of
    a seeded sample of :data:`PQ_TRAIN_ROWS` rows."""
    from .cluster import kmeans

    n, d = x.shape
    size = min(n, PQ_TRAIN_ROWS)
    rows = np.sort(np.random.default_rng([seed, 1]).choice(n, size=size, replace=False))
    xs = np.ascontiguousarray(x[rows], dtype=np.float32)
    res = xs - cent[lists_of(xs)]
    ds = d // m
    books = np.empty((m, 1 << PQ_BITS, ds), dtype=np.float32)
    for j in range(m):
        _, books[j] = kmeans(np.ascontiguousarray(res[:, j * ds : (j + 1) * ds]), 1 << PQ_BITS, seed=seed + j,
                             niter=25)
    return books


def _probes(q, cent, cn, counts, nprobe: int, need: int, *, every: bool = False):
    """``(lists int64 (b, P), squared distances float32 (b, P))`` to probe for each query row: its nearest
    centroids (by a fixed-block float32 GEMM; ties to the lower list), at least ``nprobe`` and more while they hold
    at most ``need`` points, among the ``_RANKED_PROBES * nprobe`` nearest (``every``: all lists); ``-1`` pads.
    Rows in blocks of at most ``2^22`` centroid distances."""
    step = max(1, (1 << 22) // cent.shape[0])
    parts = [_probes_block(q[s : s + step], cent, cn, counts, nprobe, need, every) for s in range(0, len(q), step)]
    return np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts])


def _probes_block(q, cent, cn, counts, nprobe, need, every):
    from ._blas import matmul

    nlist = cent.shape[0]
    key = matmul(q, cent.T)
    key *= -2.0
    key += cn[None, :]  # |c|^2 - 2 q.c, float32
    p = nlist if every else min(nlist, _RANKED_PROBES * nprobe)
    if p < nlist:
        part = np.argpartition(key, p - 1, axis=1)[:, :p]
    else:
        part = np.broadcast_to(np.arange(nlist), key.shape)
    kp = np.take_along_axis(key, part, axis=1)
    order = np.lexsort((part, kp), axis=1)
    lists = np.take_along_axis(part, order, axis=1)
    kp = np.take_along_axis(kp, order, axis=1)
    cum = np.cumsum(counts[lists], axis=1)
    ok = (np.arange(1, p + 1) >= min(nprobe, p)) & (cum > need)
    last = np.where(ok.any(axis=1), ok.argmax(axis=1), p - 1)
    keep = np.arange(p)[None, :] <= last[:, None]
    qn = np.einsum("ij,ij->i", q, q)
    dist = np.maximum(kp + qn[:, None], 0.0).astype(np.float32)
    return np.where(keep, lists, -1).astype(np.int64), np.where(keep, dist, np.inf).astype(np.float32)


def _exact_sample(x, sample: np.ndarray, kk: int, progress: bool):
    """float64 squared distances ``(m, kk)`` (ascending) and ids of the ``kk`` nearest rows of ``x`` to each sampled
    row (itself included), streaming ``x`` in chunks (fixed-block float64 GEMMs: the same on any thread count)."""
    from ._blas import matmul

    n = x.shape[0]
    q = np.ascontiguousarray(x[sample], dtype=np.float64)
    qn = np.einsum("ij,ij->i", q, q)
    best_d = np.full((q.shape[0], kk), np.inf)
    best_i = np.full((q.shape[0], kk), -1, dtype=np.int64)
    step = max(kk, 8192)
    chunks = range(0, n, step)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="ivfpq recall sample (exact)", unit="chunk")
    for s in chunks:
        xb = np.asarray(x[s : s + step], dtype=np.float64)
        d2 = qn[:, None] + np.einsum("ij,ij->i", xb, xb)[None, :] - 2.0 * matmul(q, xb.T)
        cat_d = np.concatenate([best_d, d2], axis=1)
        cat_i = np.concatenate([best_i, np.broadcast_to(np.arange(s, s + xb.shape[0]), d2.shape)], axis=1)
        top = np.argpartition(cat_d, kk - 1, axis=1)[:, :kk]
        best_d = np.take_along_axis(cat_d, top, axis=1)
        best_i = np.take_along_axis(cat_i, top, axis=1)
    order = np.lexsort((best_i, best_d), axis=1)
    return np.maximum(np.take_along_axis(best_d, order, axis=1), 0.0), np.take_along_axis(best_i, order, axis=1)


class _PQIndex:
    """A faiss ``IndexIVFPQ`` filled with codes computed here (see the module doc), and the searches on it."""

    def __init__(self, x, *, seed: int, pq_m: int, progress: bool):
        import faiss

        from .cluster import _Nearest
        from .knn import _list_centroids

        n, d = x.shape
        self.n = n
        self.cent = np.ascontiguousarray(_list_centroids(x, seed), dtype=np.float32)
        nlist = self.cent.shape[0]
        self.cn = np.einsum("ij,ij->i", self.cent, self.cent)

        def lists_of(rows):
            return _Nearest(rows)(self.cent)

        books = _train_pq(x, lists_of, self.cent, pq_m, seed)
        quantizer = faiss.IndexFlatL2(d)
        quantizer.add(self.cent)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, PQ_BITS)
        faiss.copy_array_to_vector(books.ravel(), index.pq.centroids)
        index.is_trained = True
        lists = np.empty(n, dtype=np.int64)
        codes = np.empty((n, pq_m), dtype=np.uint8)
        chunks = range(0, n, CHUNK_ROWS)
        if progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"ivfpq encode ({nlist} lists, {pq_m} bytes)", unit="chunk")
        for s in chunks:
            xb = _rows(x, s, s + CHUNK_ROWS)
            lab = lists_of(xb)
            lists[s : s + xb.shape[0]] = lab
            codes[s : s + xb.shape[0]] = index.pq.compute_codes(np.ascontiguousarray(xb - self.cent[lab]))
        order = np.argsort(lists, kind="stable")
        self.counts = np.bincount(lists, minlength=nlist)
        starts = np.concatenate([[0], np.cumsum(self.counts)])
        for lst in np.flatnonzero(self.counts):
            ids = np.ascontiguousarray(order[starts[lst] : starts[lst + 1]])
            block = np.ascontiguousarray(codes[ids])
            index.invlists.add_entries(int(lst), ids.size, faiss.swig_ptr(ids), faiss.swig_ptr(block))
        index.ntotal = n
        index.precompute_table()
        self.index, self.nlist = index, nlist

    def search(self, q, k1: int, nprobe: int, need: int):
        """``(squared distance estimates float32 (b, k1), ids int64 (b, k1))`` ascending for query rows ``q``;
        rows whose probed lists hold fewer than ``k1`` points are searched again among every list."""
        dist, ids = self._search(q, k1, *_probes(q, self.cent, self.cn, self.counts, nprobe, need))
        short = np.flatnonzero((ids < 0).any(axis=1))
        if short.size:
            qs = np.ascontiguousarray(q[short])
            dist[short], ids[short] = self._search(qs, k1, *_probes(qs, self.cent, self.cn, self.counts, nprobe,
                                                                    self.n, every=True))
        return dist, ids

    def _search(self, q, k1, probe_lists, probe_d):
        self.index.nprobe = probe_lists.shape[1]  # faiss checks the width of the probe table against it
        return self.index.search_preassigned(q, k1, probe_lists, probe_d)


def knn_sums_ivfpq(x, k: int, *, squared: bool, nprobe: int, seed: int, progress: bool, pq_m=None):
    """``(sums float64 (n,), recall)``: each row's sum of its ``k`` smallest estimated (squared) distances to the
    other rows, from an IVF-PQ index (module doc), as :func:`uslkit.knn._knn_sums` gives exact ones.

    The probed lists follow the IVF density's rule (at least ``nprobe``, more while they hold at most
    ``DENSITY_IVF_CANDIDATES * k`` points), without its doubling of ``nprobe`` until the recall holds: the estimates'
    error, not the lists searched, bounds the density's accuracy here (on a 200,000-point mixture of unequal
    clusters the sums' median error was 1.0 % with 16 lists and 1.6 % with 128: more candidates, more estimates
    that fall low). A row's own entry is dropped (the last of its ``k + 1`` when its own code is not among them).
    recall@k (a neighbour counts when its exact distance is within the exact k-th) and the relative error of the
    sampled rows' sums are logged.
    """
    from .knn import DENSITY_IVF_CANDIDATES, DENSITY_MIN_RECALL, RECALL_SAMPLE, _recall_at_k

    n, d = x.shape
    pq_m = check_pq_m(pq_m, d)
    if n < 1 << PQ_BITS:
        raise ValueError(f"knn mode 'ivfpq' needs at least {1 << PQ_BITS} points (its sub-quantizers have "
                         f"{1 << PQ_BITS} centroids), got n={n}: use mode 'exact'")
    pq = _PQIndex(x, seed=seed, pq_m=pq_m, progress=progress)
    need = DENSITY_IVF_CANDIDATES * k
    m = min(RECALL_SAMPLE, n)
    sample = np.sort(np.random.default_rng(seed).choice(n, size=m, replace=False))
    ex_d, ex_i = _exact_sample(x, sample, k + 1, progress)
    own = ex_i != sample[:, None]
    sums = np.empty(n, dtype=np.float64)
    got = np.empty((m, k), dtype=np.int64)
    where = np.full(n, -1, dtype=np.int64)
    where[sample] = np.arange(m)
    chunks = range(0, n, CHUNK_ROWS)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc=f"knn density k={k} (IVF-PQ, {nprobe} of {pq.nlist} lists)", unit="chunk")
    for s in chunks:
        q = _rows(x, s, s + CHUNK_ROWS)
        dist, ids = pq.search(q, k + 1, nprobe, need)
        rows = np.arange(s, s + q.shape[0])
        drop = ids == rows[:, None]
        drop[~drop.any(axis=1), -1] = True
        keep = ~drop
        d2 = np.maximum(dist[keep].reshape(-1, k).astype(np.float64), 0.0)
        sums[s : s + q.shape[0]] = (d2 if squared else np.sqrt(d2)).sum(axis=1)
        hit = where[rows] >= 0
        got[where[rows[hit]]] = ids[keep].reshape(-1, k)[hit]
    recall = _recall_at_k(x, sample, got, ex_d[:, k])  # and below, the sums' error against the exact ones
    true_d2 = np.where(own, ex_d, np.inf)
    true_d2 = np.sort(true_d2, axis=1)[:, :k]
    exact = (true_d2 if squared else np.sqrt(true_d2)).sum(axis=1)
    rel = np.abs(sums[sample] - exact) / np.maximum(exact, 1e-300)
    low = recall < DENSITY_MIN_RECALL
    logger.info("knn_density IVF-PQ (%d of %d lists, %d bytes per point) k=%d on %d x %d: recall@k %.4f, relative "
                "error of the neighbour sums median %.4f, 99th percentile %.4f, on %d sampled rows%s", nprobe,
                pq.nlist, pq_m, k, n, d, recall, float(np.median(rel)), float(np.quantile(rel, 0.99)), m,
                " (compressed distances: recall below exact search's is expected)" if low else "")
    return sums, recall
