"""Tests for uslkit.select: toy cases by hand, USL against a dense reference, the common contract, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from uslkit.select import (
    METHODS,
    USL_PRESETS,
    select,
    select_coreset,
    select_kmeans,
    select_probcover,
    select_stratified,
    select_typiclust,
    select_usl,
    usl_regularized_selection,
)

ALL = sorted(METHODS)
WITH_LABELED = ["random", "stratified", "kmeans_multi", "typiclust", "probcover", "coreset"]


def _blobs(n_per, centers, scale, seed, normalise=False):
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=np.float64)
    x = np.concatenate([c + scale * rng.standard_normal((n_per, centers.shape[1])) for c in centers])
    if normalise:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.repeat(np.arange(len(centers)), n_per)
    return x.astype(np.float32), y


def _kwargs(method, y, n_classes=3):
    """What each method needs beyond (emb, budget): true labels for the oracle, num_classes for ProbCover."""
    if method == "stratified":
        return {"labels": y}
    if method == "probcover":
        return {"num_classes": n_classes}
    return {}


@pytest.fixture(autouse=True)
def _quiet_sinkhorn():
    # SeLa's Sinkhorn may stop at max_iter on tiny toy data; that warning is not what these tests check
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="sinkhorn_knopp did not reach")
        yield


# --------------------------------------------------------------------------------------------------------
# Hand-computable toy cases
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["usl", "kmeans", "kmeans_multi", "typiclust", "probcover", "coreset", "sela"])
@pytest.mark.parametrize("seed", [0, 1])
def test_two_separated_blobs_give_one_pick_each(method, seed):
    x, y = _blobs(20, [[0, 0], [10, 10]], 0.1, seed=3)
    kw = {"delta": 1.0} if method == "probcover" else {}
    idx = select(method, x, 2, seed=seed, **kw)
    assert sorted(y[idx].tolist()) == [0, 1]


LINE = np.array([[0.0], [1.0], [10.0], [11.0]], dtype=np.float32)


def test_line_usl_regularisation_pushes_picks_apart():
    # k = 1: every point has a neighbour at distance 1, so all densities are 1 and iteration 0 takes the
    # lowest index per cluster {0, 1} | {10, 11}: points 0 and 2. Regularisation with the other cluster's
    # pick: in cluster B, point 11 is farther from pick 0 than 10 is, so pick 2 -> 3; point 0 stays (11 vs 10).
    base = dict(k=1, lam=0.5, alpha=0.5, momentum=0.9)
    assert sorted(select_usl(LINE, 2, iterations=0, **base).tolist()) == [0, 2]
    idx, util = select_usl(LINE, 2, iterations=10, return_scores=True, **base)
    assert sorted(idx.tolist()) == [0, 3]
    # utility = density 1 - lam * Reg_ema, with Reg_ema > 0: the outer points of each pair win
    assert util[0] > util[1] and util[3] > util[2] and np.all(util < 1.0)


def test_line_coreset_probcover_kmeans_by_hand():
    # core-set from labelled {0}: farthest is 11 (index 3); then 1 and 10 are both 1 away -> lowest index 1
    assert select_coreset(LINE, 2, labeled=[0]).tolist() == [3, 1]
    # balls of radius 1.5: {0,1}, {0,1}, {2,3}, {2,3}: greedy takes index 0 (lowest of the tied), then 2
    idx, gain = select_probcover(LINE, 2, delta=1.5, return_scores=True)
    assert idx.tolist() == [0, 2]
    assert gain[0] == 2 and gain[2] == 2
    # with 0 labelled, its ball {0, 1} is covered: the only gain is in the other pair
    assert select_probcover(LINE, 1, delta=1.5, labeled=[0]).tolist() == [2]
    # K-means: clusters {0, 1}, {10, 11}; the members equidistant from each centre -> lowest index
    assert sorted(select_kmeans(LINE, 2).tolist()) == [0, 2]
    # TypiClust with no size filter: typicality ties within each pair -> lowest index
    assert sorted(select_typiclust(LINE, 2, min_cluster_size=0).tolist()) == [0, 2]


def test_probcover_random_after_full_coverage():
    idx, gain = select_probcover(LINE, 4, delta=1.5, seed=0, return_scores=True)
    assert idx[:2].tolist() == [0, 2] and sorted(idx[2:].tolist()) == [1, 3]
    assert gain[1] == 0 and gain[3] == 0
    other = select_probcover(LINE, 4, delta=1.5, seed=5)
    assert sorted(other.tolist()) == [0, 1, 2, 3]


def test_probcover_purity_delta_is_largest_pure_radius():
    # two tight pairs far apart, K-means with 2 clusters: every ball is pure up to the gap (9), none beyond
    x = np.array([[0.0], [1.0], [10.0], [11.0], [0.5], [10.5]], dtype=np.float32)
    idx = select_probcover(x, 2, num_classes=2, purity_threshold=1.0)
    assert sorted((x[idx, 0] > 5).tolist()) == [False, True]
    # a grid: the largest grid radius below the gap
    idx = select_probcover(x, 2, num_classes=2, delta_grid=[0.5, 2.0, 9.5], purity_threshold=1.0)
    assert sorted((x[idx, 0] > 5).tolist()) == [False, True]
    with pytest.raises(ValueError, match="delta_grid"):
        select_probcover(x, 2, num_classes=2, delta_grid=[-1.0])


def _probcover_dense(x, budget, delta, labeled):
    """ProbCover greedy with a dense float64 ball matrix (the straightforward version)."""
    x = x.astype(np.float64)
    inside = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1) < delta**2
    np.fill_diagonal(inside, True)
    covered = inside[labeled].any(axis=0)
    picks = []
    for _ in range(budget):
        degree = (inside & ~covered[None, :]).sum(axis=1)
        if degree.max() == 0:
            break
        picks.append(int(np.argmax(degree)))
        covered |= inside[picks[-1]]
    return picks


@pytest.mark.parametrize("delta", [0.6, 0.9])
def test_probcover_matches_dense_reference(delta):
    x, _ = _blobs(60, np.random.default_rng(3).standard_normal((4, 5)), 0.6, seed=8, normalise=True)
    labeled = np.array([0, 61, 200])
    idx = select_probcover(x, 12, delta=delta, labeled=labeled)
    ref = _probcover_dense(x, 12, delta, labeled)
    assert idx[: len(ref)].tolist() == ref


def test_probcover_purity_delta_matches_dense_purity():
    from uslkit.cluster import kmeans
    from uslkit.select.probcover import _purity_delta2

    x, _ = _blobs(60, np.random.default_rng(3).standard_normal((4, 5)), 0.6, seed=8, normalise=True)
    clusters, _ = kmeans(x, 4, seed=0, niter=100)
    delta2 = _purity_delta2(x, clusters, 0.9, None)
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    other = np.where(clusters[:, None] != clusters[None, :], d2, np.inf).min(axis=1)
    pure = lambda r2: ((d2 < r2) <= (clusters[:, None] == clusters[None, :])).all(axis=1).mean()  # noqa: E731
    assert pure(delta2 * (1 - 1e-5)) >= 0.9  # largest pure radius ...
    assert pure(delta2 * (1 + 1e-5)) < 0.9  # ... and no larger one
    np.testing.assert_allclose(delta2, np.sort(other)[::-1][int(np.ceil(0.9 * len(x))) - 1], rtol=1e-5)


def _aniso_blobs(n, d, seed):
    """Clusters of unequal size, spread and shape (a small relative of the benchmark's ``aniso`` data)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((12, d))
    sizes = np.maximum(5, (n / np.arange(1, 13) / 3.1).astype(int))
    sizes[0] += max(0, n - sizes.sum())
    parts = [c + rng.uniform(0.2, 1.0) * rng.standard_normal((m, d)) * rng.uniform(0.2, 2.0, d)
             for c, m in zip(centres, sizes)]
    x = np.concatenate(parts)[:n].astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("delta", [None, 0.35])
def test_probcover_pruned_search_builds_the_exact_graph(delta):
    """The partition skips lists only where the triangle inequality rules every point out, and membership is a
    float64 decision in both searches: the same symmetric graph, the same picks (no recall to trade)."""
    from uslkit.select.probcover import probcover_graph, probcover_greedy

    x = _aniso_blobs(3000, 16, seed=1)
    kw = dict(num_classes=12) if delta is None else dict(delta=delta)
    exact = probcover_graph(x, search="exact", **kw)
    pruned = probcover_graph(x, search="pruned", **kw)
    indptr, cols = exact[0], exact[1]
    np.testing.assert_array_equal(pruned[0], indptr)
    assert 3000 < cols.size < 3000 * 3000 / 4  # balls neither trivial nor everything
    for i in range(0, 3000, 7):
        row = np.sort(cols[indptr[i] : indptr[i + 1]])
        np.testing.assert_array_equal(np.sort(pruned[1][indptr[i] : indptr[i + 1]]), row)
    # symmetric: j in ball(i) <=> i in ball(j)
    rows = np.repeat(np.arange(3000), np.diff(indptr))
    assert set(zip(rows.tolist(), cols.tolist())) == set(zip(cols.tolist(), rows.tolist()))
    none = np.array([], dtype=np.int64)
    np.testing.assert_array_equal(probcover_greedy(exact, 30, none, 0), probcover_greedy(pruned, 30, none, 0))
    d2 = ((x[:40, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)  # float64 membership by hand
    delta2 = (delta if delta is not None else None)
    if delta2 is not None:
        for i in range(40):
            np.testing.assert_array_equal(np.sort(cols[indptr[i] : indptr[i + 1]]),
                                          np.flatnonzero((d2[i] < delta2**2) | (np.arange(3000) == i)))


@pytest.mark.parametrize("search", ["exact", "pruned"])
def test_probcover_without_a_stored_graph_gives_the_same_picks(search, monkeypatch, caplog):
    """Above the edge cap the graph is not kept; the greedy searches the balls it needs and picks (and scores) as
    with the stored graph."""
    import logging

    import uslkit.select.probcover as pc

    x = _aniso_blobs(2500, 16, seed=4)
    labeled = np.array([3, 700, 2400])
    kw = dict(num_classes=12, labeled=labeled, search=search, return_scores=True)
    stored = select_probcover(x, 40, **kw)
    monkeypatch.setattr(pc, "_MAX_EDGES", 1000)
    monkeypatch.setattr(pc, "_OWNER_BLOCK", 50)
    with caplog.at_level(logging.INFO, logger="uslkit.select.probcover"):
        streamed = select_probcover(x, 40, **kw)
    assert "not kept" in caplog.text
    np.testing.assert_array_equal(streamed[0], stored[0])
    np.testing.assert_array_equal(streamed[1], stored[1])
    graph = pc.probcover_graph(x, num_classes=12, search=search)
    assert isinstance(graph[0], pc._Balls)


def test_probcover_purity_on_a_row_sample(monkeypatch):
    """``purity_sample``: the quantile over a seeded sample of rows, each row's radius exact (float64, against every
    point); ``"auto"`` samples only above 200,000 points (here the threshold is lowered)."""
    import uslkit.select.probcover as pc
    from uslkit.cluster import kmeans

    x = _aniso_blobs(2000, 8, seed=2)
    clusters, _ = kmeans(x, 12, seed=0, niter=100)
    d2 = ((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1)
    other = np.where(clusters[:, None] != clusters[None, :], d2, np.inf).min(axis=1)
    r2 = pc._purity_r2(x, clusters)
    np.testing.assert_allclose(r2, other, rtol=1e-12)  # float64 (the sum's order differs from numpy's)
    np.testing.assert_array_equal(pc._purity_r2(x, clusters, np.arange(0, 2000, 3)), r2[::3])  # any row subset
    monkeypatch.setattr(pc, "_CHUNK_ELEMS_R2", 512 * 64)  # tiles of 64 columns
    by_cluster = np.argsort(clusters, kind="stable")  # whole column tiles of one cluster first
    np.testing.assert_array_equal(pc._purity_r2(x[by_cluster], clusters[by_cluster]), r2[by_cluster])
    rows = pc._purity_rows(500, 2000, 0)
    assert rows.size == 500 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(pc._purity_rows(500, 2000, 0), rows)
    sampled = pc._purity_delta2(x, clusters, 0.9, None, rows)
    assert sampled == np.sort(r2[rows])[::-1][int(np.ceil(0.9 * 500)) - 1]
    full = pc.purity_delta(x, 12, purity_threshold=0.9)
    assert pc.purity_delta(x, 12, purity_threshold=0.9, purity_sample=500) == np.sqrt(sampled)
    assert pc.purity_delta(x, 12, purity_threshold=0.9, purity_sample="all") == full
    monkeypatch.setattr(pc, "_PURITY_ALL_MAX_N", 1000)
    monkeypatch.setattr(pc, "PURITY_SAMPLE", 500)
    assert pc.purity_delta(x, 12, purity_threshold=0.9) == np.sqrt(sampled)  # "auto" above the threshold
    assert pc.purity_delta(x, 12, purity_threshold=0.9, purity_sample="all") == full  # the caller wins
    with pytest.raises(ValueError, match="purity_sample"):
        pc.purity_delta(x, 12, purity_sample=0)
    with pytest.raises(ValueError, match="search"):
        select_probcover(x, 5, num_classes=12, search="ivf")


@pytest.mark.parametrize("method", ["usl", "kmeans", "typiclust", "probcover", "coreset", "sela", "usl@ivfpq"])
def test_selection_on_a_memory_mapped_file_gives_the_same_picks(method, tmp_path, monkeypatch):
    """Embeddings larger than memory: a read-only memory map of the ``.npy`` (what ``uslkit select`` opens) is
    read, never written, and gives the picks of the in-memory array. ``usl@ivfpq``: the compressed density and
    K-means on a sample, every point assigned block by block without a centred copy (thresholds lowered)."""
    import uslkit.cluster
    from uslkit.select import select

    x = _aniso_blobs(1500, 16, seed=3)
    np.save(tmp_path / "e.npy", x)
    mm = np.load(tmp_path / "e.npy", mmap_mode="r")
    kw = {"num_classes": 12} if method == "probcover" else {}
    if method == "usl@ivfpq":
        method, kw = "usl", {"knn_mode": "ivfpq", "kmeans_points_per_centroid": 40}
        monkeypatch.setattr(uslkit.cluster, "_NEAREST_COPY_ELEMS", 1000)
        monkeypatch.setattr(uslkit.cluster, "_STREAM_ROWS", 100)
    np.testing.assert_array_equal(select(method, mm, 15, seed=1, **kw), select(method, x, 15, seed=1, **kw))


def test_stratified_quota_and_remainder():
    x = np.zeros((30, 2), dtype=np.float32)
    y = np.repeat([0, 1, 2], 10)
    idx = select_stratified(x, 8, labels=y, seed=0)
    assert np.bincount(y[idx], minlength=3).tolist() == [3, 3, 2]  # remainder to the first classes
    # a class with too few samples gives its shortfall to the others
    y2 = np.array([0] * 2 + [1] * 14 + [2] * 14)
    assert np.bincount(y2[select_stratified(x, 12, labels=y2)], minlength=3).tolist() == [2, 5, 5]
    # output grouped by class
    assert np.all(np.diff(y[idx]) >= 0)


def test_typiclust_visits_fewest_labelled_then_largest():
    # 3 separated blobs of sizes 30, 20, 10 and budget 3 -> 3 clusters = the blobs, visited largest first
    parts = [(30, [0, 0], 0), (20, [10, 0], 1), (10, [0, 10], 2)]
    x = np.concatenate([_blobs(n, [c], 0.1, seed)[0] for n, c, seed in parts])
    blob = np.repeat([0, 1, 2], [30, 20, 10])
    # K-means from 3 random points (the faithful init) finds the blobs at seed 2, not at every seed (at 0, two
    # starts fall in one blob): the premise, checked
    from uslkit.cluster import kmeans

    clusters = kmeans(x, 3, seed=2, niter=100)[0]
    assert all(np.unique(clusters[blob == b]).size == 1 for b in range(3)) and np.unique(clusters).size == 3
    assert blob[select_typiclust(x, 3, seed=2)].tolist() == [0, 1, 2]
    # one labelled point in blob 0, budget 2: still 3 clusters; the blobs without labels come first
    idx, typ = select_typiclust(x, 2, labeled=[0], seed=2, return_scores=True)
    assert blob[idx].tolist() == [1, 2]
    # each pick is its blob's most typical point
    for i in idx:
        assert typ[i] == np.nanmax(typ[blob == blob[i]])


def test_kmeans_multi_skips_labelled_members():
    x, y = _blobs(20, [[0, 0], [10, 10]], 0.1, seed=3)
    first = select_kmeans(x, 2, seed=0)
    more = select("kmeans_multi", x, 2, labeled=first, seed=0)
    assert not np.isin(more, first).any()
    assert sorted(y[more].tolist()) == [0, 1]  # same clusters, next-nearest unlabelled members


# --------------------------------------------------------------------------------------------------------
# USL against a dense, straightforward implementation of Alg. 1
# --------------------------------------------------------------------------------------------------------
def _usl_dense_reference(x, clusters, n_clusters, *, k, lam, alpha, momentum, iterations, horizon, exclude,
                         density_variant, distance_power):
    """Alg. 1 written out with full matrices and loops, structured like the reference code (NITERS = l + 1)."""
    x = x.astype(np.float64)
    n = len(x)
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    d = np.sqrt(d2)
    if density_variant == "paper":  # eq. 3: mean plain distance to the k nearest others
        density = 1.0 / np.sort(d + np.diag(np.full(n, np.inf)), axis=1)[:, :k].mean(axis=1)
    else:  # reference code: squared distances, the point itself (0) among its k neighbours
        density = 1.0 / np.sort(d2, axis=1)[:, :k].mean(axis=1)
    dist = d2 if distance_power == "reference" else d
    members = [np.flatnonzero(clusters == c) for c in range(n_clusters)]
    reg = np.zeros(n)
    for it in range(iterations + 1):
        util = density - lam * reg
        sel = np.array([m[np.argmax(util[m])] for m in members])
        if it == iterations:
            return sel, util
        new = np.zeros(n)
        for i in range(n):
            di = dist[i, sel]
            counted = np.argsort(di, kind="stable")[:horizon] if horizon else range(n_clusters)
            for j in counted:
                if exclude and clusters[i] == clusters[sel[j]]:
                    continue
                if not exclude and sel[j] == i:
                    continue
                new[i] += 1.0 / di[j] ** alpha
        reg = momentum * reg + (1 - momentum) * new


USL_CONFIGS = [
    dict(lam=0.5, alpha=0.5, momentum=0.9, iterations=10, horizon=None, exclude=True,
         density_variant="paper", distance_power="paper"),
    dict(lam=0.5, alpha=0.5, momentum=0.9, iterations=9, horizon=None, exclude=True,
         density_variant="reference", distance_power="reference"),
    dict(lam=1.5, alpha=0.5, momentum=0.0, iterations=1, horizon=4, exclude=False,
         density_variant="paper", distance_power="reference"),
    dict(lam=1.0, alpha=1.0, momentum=0.5, iterations=3, horizon=3, exclude=True,
         density_variant="reference", distance_power="paper"),
]


@pytest.mark.parametrize("cfg", USL_CONFIGS)
def test_usl_matches_dense_reference(cfg):
    from uslkit.cluster import kmeans

    centers = np.random.default_rng(7).standard_normal((6, 8))
    x, _ = _blobs(50, centers, 0.6, seed=11, normalise=True)
    budget, k, seed = 12, 15, 2
    idx, util = select_usl(
        x, budget, seed=seed, k=k, lam=cfg["lam"], alpha=cfg["alpha"], momentum=cfg["momentum"],
        iterations=cfg["iterations"], horizon=cfg["horizon"], exclude_same_cluster=cfg["exclude"],
        density_variant=cfg["density_variant"], distance_power=cfg["distance_power"], kmeans_niter=50,
        knn_mode="exact", return_scores=True,
    )
    clusters, _ = kmeans(x, budget, seed=seed, niter=50)  # the clustering select_usl uses
    ref_idx, ref_util = _usl_dense_reference(x, clusters, budget, k=k, **cfg)
    assert idx.tolist() == ref_idx.tolist()
    np.testing.assert_allclose(util, ref_util, rtol=1e-5, atol=1e-6)
    # the regularisation actually moved picks in this configuration (otherwise the test proves little)
    dens_only, _ = _usl_dense_reference(x, clusters, budget, k=k, **dict(cfg, iterations=0))
    if cfg["lam"] >= 0.5:
        assert set(ref_idx.tolist()) != set(dens_only.tolist())


def test_usl_regularized_selection_step_matches_select_usl():
    from uslkit.cluster import kmeans
    from uslkit.knn import knn_density

    x, _ = _blobs(40, np.random.default_rng(1).standard_normal((4, 6)), 0.5, seed=5, normalise=True)
    full = select_usl(x, 8, seed=3, k=10, kmeans_niter=30)
    dens = knn_density(x, 10)
    clusters, _ = kmeans(x, 8, seed=3, niter=30)
    steps = usl_regularized_selection(x, dens, clusters, lam=0.5, alpha=0.5, momentum=0.9, iterations=10)
    assert full.tolist() == steps.tolist()
    assert (clusters[full] == np.arange(8)).all()  # cluster order


def test_usl_defaults_follow_table_14():
    from uslkit.select import usl_config as _usl_config

    small = _usl_config(50_000, 40, preset=None)
    got = (small["k"], small["lam"], small["alpha"], small["momentum"], small["iterations"])
    assert got == (400, 0.5, 0.5, 0.9, 10)
    big = _usl_config(50_000, 250, preset=None)
    assert (big["lam"], big["alpha"]) == (1.0, 1.0)
    assert _usl_config(300, 40, preset=None)["k"] == 299  # capped below n
    moco = _usl_config(10**6, 2911, preset="imagenet_moco", lam=2.0)
    assert moco["lam"] == 2.0 and moco["k"] == 20 and moco["horizon"] == USL_PRESETS["imagenet_moco"]["horizon"]
    assert _usl_config(10**6, 2911, preset="imagenet_clip")["exclude_same_cluster"] is True


def test_kmeans_points_per_centroid_auto_samples_only_above_200k():
    """``"auto"``: Lloyd on every point up to 200,000 points, above on at least 200,000 and 256 per cluster; what
    the caller gives wins."""
    from uslkit.select import usl_config as _usl_config
    from uslkit.select._common import _kmeans_points_per_centroid

    assert _usl_config(200_000, 1000)["kmeans_points_per_centroid"] == "all"
    assert _usl_config(10**6, 1000)["kmeans_points_per_centroid"] == 256
    assert _usl_config(10**6, 40)["kmeans_points_per_centroid"] == 5000  # 200,000 points for 40 clusters
    assert _usl_config(10**6, 1000, kmeans_points_per_centroid="all")["kmeans_points_per_centroid"] == "all"
    assert _usl_config(10**6, 1000, kmeans_points_per_centroid=50)["kmeans_points_per_centroid"] == 50
    assert _usl_config(10**6, 1000, preset="imagenet_moco")["kmeans_points_per_centroid"] == 256
    for bad in (0, -3, 2.5, True, "some"):
        with pytest.raises(ValueError, match="kmeans_points_per_centroid must be 'auto', 'all' or a positive"):
            _kmeans_points_per_centroid(bad, 10, 2)


def test_usl_kmeans_on_a_sample_is_kmeans_on_that_sample():
    """A sampled K-means in USL is :func:`kmeans` with that ``max_points_per_centroid``; a cap at least n / K is
    no sample (the same picks as ``"all"``)."""
    from uslkit.cluster import kmeans
    from uslkit.knn import knn_density
    from uslkit.select import usl_config, usl_regularized_selection

    x, _ = _blobs(60, np.random.default_rng(3).standard_normal((6, 8)), 0.6, seed=5, normalise=True)
    n = len(x)
    cfg = usl_config(n, 12, k=10, kmeans_points_per_centroid=5)
    clusters, _ = kmeans(x, 12, seed=2, niter=cfg["kmeans_niter"], max_points_per_centroid=5)
    opts = {key: cfg[key] for key in ("lam", "alpha", "momentum", "iterations", "horizon", "exclude_same_cluster")}
    expected = usl_regularized_selection(x, knn_density(x, 10), clusters, **opts)
    got = select_usl(x, 12, seed=2, k=10, kmeans_points_per_centroid=5)
    assert got.tolist() == expected.tolist()
    full = select_usl(x, 12, seed=2, k=10, kmeans_points_per_centroid="all")
    assert select_usl(x, 12, seed=2, k=10, kmeans_points_per_centroid=n // 12).tolist() == full.tolist()
    assert select_usl(x, 12, seed=2, k=10).tolist() == full.tolist()  # auto: all points at this size


def test_usl_horizon_preset_runs_and_respects_horizon():
    x, _ = _blobs(30, np.random.default_rng(2).standard_normal((5, 8)), 0.5, seed=4, normalise=True)
    a = select_usl(x, 10, preset="imagenet_clip", seed=1)
    b = select_usl(x, 10, preset="imagenet_clip", horizon=10, seed=1)  # horizon >= budget: all picks
    c = select_usl(x, 10, preset="imagenet_clip", horizon=1000, seed=1)
    assert len(a) == 10 and b.tolist() == c.tolist()


@pytest.mark.parametrize("method", ["usl", "probcover", "kmeans", "coreset"])
def test_chunked_computation_matches_single_block(method, monkeypatch):
    # tiny chunks force many row blocks in Reg, the ball graph, the purity radius and the centroid distances
    x, y = _blobs(40, np.random.default_rng(6).standard_normal((4, 6)), 0.6, seed=12, normalise=True)
    kw = dict(k=10, horizon=3) if method == "usl" else ({"num_classes": 4} if method == "probcover" else {})
    labeled = {"coreset": [5, 77]}.get(method)
    whole, s1 = select(method, x, 9, seed=1, labeled=labeled, return_scores=True, **kw)
    monkeypatch.setattr("uslkit.select._common._CHUNK_ELEMS", 37)
    chunked, s2 = select(method, x, 9, seed=1, labeled=labeled, return_scores=True, **kw)
    assert whole.tolist() == chunked.tolist()
    np.testing.assert_allclose(s1, s2, rtol=1e-6)


# --------------------------------------------------------------------------------------------------------
# The common contract: exactly `budget` distinct, unlabelled, reproducible
# --------------------------------------------------------------------------------------------------------
def _duplicates(seed=0):
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((8, 5))
    x = np.concatenate([np.repeat(base, 15, axis=0), rng.standard_normal((6, 5))]).astype(np.float32)
    y = np.concatenate([np.repeat(np.arange(8) % 3, 15), np.arange(6) % 3])
    return x, y


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("budget", [7, 126])  # 126 = n
def test_exact_budget_distinct_with_duplicates(method, budget):
    x, y = _duplicates()
    assert budget <= len(x)
    idx, scores = select(method, x, budget, seed=0, return_scores=True, **_kwargs(method, y))
    assert idx.dtype == np.int64 and idx.shape == (budget,)
    assert np.unique(idx).size == budget
    assert idx.min() >= 0 and idx.max() < len(x)
    assert scores.shape == (len(x),) and scores.dtype == np.float64


@pytest.mark.parametrize("method", ALL)
def test_budget_equals_n_on_random_data(method):
    x = np.random.default_rng(4).standard_normal((40, 3)).astype(np.float32)
    y = np.arange(40) % 4
    idx = select(method, x, 40, seed=1, **_kwargs(method, y, 4))
    assert sorted(idx.tolist()) == list(range(40))


@pytest.mark.parametrize("method", WITH_LABELED)
def test_labeled_excluded(method):
    x, y = _duplicates(1)
    labeled = np.arange(0, len(x), 4)
    for budget in (5, len(x) - labeled.size):
        idx = select(method, x, budget, seed=0, labeled=labeled, **_kwargs(method, y))
        assert idx.size == budget and np.unique(idx).size == budget
        assert not np.isin(idx, labeled).any()
    _, scores = select(method, x, 5, seed=0, labeled=labeled, return_scores=True, **_kwargs(method, y))
    assert np.isnan(scores[labeled]).all()


@pytest.mark.parametrize("method", ALL)
def test_same_seed_same_output(method):
    x, y = _blobs(25, np.random.default_rng(0).standard_normal((4, 6)), 0.7, seed=9)
    a, sa = select(method, x, 9, seed=3, return_scores=True, **_kwargs(method, y, 4))
    b, sb = select(method, x, 9, seed=3, return_scores=True, **_kwargs(method, y, 4))
    assert a.tolist() == b.tolist()
    np.testing.assert_array_equal(sa, sb)


def test_different_seeds_differ_for_random():
    x = np.zeros((100, 2), dtype=np.float32)
    assert select("random", x, 10, seed=0).tolist() != select("random", x, 10, seed=1).tolist()


def test_scores_higher_is_more_wanted():
    x, _ = _blobs(30, [[0, 0], [6, 0]], 0.5, seed=2)
    idx, dens = select("usl", x, 2, iterations=0, k=5, return_scores=True)
    assert np.isfinite(dens).all()
    assert set(idx.tolist()) <= set(np.argsort(-dens)[:20].tolist())
    idx, sc = select("kmeans", x, 2, return_scores=True)
    assert np.all(sc <= 0) and np.isfinite(sc).all()
    _, sc = select("random", x, 2, return_scores=True)
    assert np.isnan(sc).all()


# --------------------------------------------------------------------------------------------------------
# The dispatcher routes labels / num_classes; public helpers behind the methods
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [m for m in ALL if m != "stratified"])
def test_select_ignores_oracle_labels_for_unsupervised_methods(method):
    x, y = _blobs(30, np.random.default_rng(7).standard_normal((4, 6)), 0.5, seed=9, normalise=True)
    kw = {"num_classes": 4} if method == "probcover" else {}
    a, sa = select(method, x, 9, seed=2, return_scores=True, **kw)
    b, sb = select(method, x, 9, seed=2, return_scores=True, labels=y, num_classes=4)
    assert a.tolist() == b.tolist()
    np.testing.assert_array_equal(sa, sb)


def test_select_routes_labels_and_num_classes_only_where_taken():
    x, y = _blobs(30, np.random.default_rng(7).standard_normal((4, 6)), 0.5, seed=9, normalise=True)
    assert (select("stratified", x, 8, seed=1, labels=y, num_classes=4)
            == select_stratified(x, 8, seed=1, labels=y)).all()
    assert (select("probcover", x, 8, seed=1, labels=y, num_classes=4)
            == select_probcover(x, 8, seed=1, num_classes=4)).all()
    with pytest.raises(ValueError, match="does not take a labelled set"):  # labeled= still errors
        select("usl", x, 8, labels=y, num_classes=4, labeled=[0])
    with pytest.raises(ValueError, match="delta= .*num_classes="):  # num_classes=None reaches probcover
        select("probcover", x, 8, labels=y)


def test_usl_config_is_what_select_usl_runs():
    from uslkit.select import usl_config

    x, _ = _blobs(30, np.random.default_rng(2).standard_normal((5, 8)), 0.5, seed=4, normalise=True)
    for preset in (None, "imagenet_moco"):
        cfg = usl_config(len(x), 10, preset=preset, k=12)
        assert select_usl(x, 10, seed=1, preset=preset, k=12).tolist() == select_usl(x, 10, seed=1, **cfg).tolist()
    assert set(cfg) == {"k", "alpha", "lam", "momentum", "iterations", "horizon", "exclude_same_cluster",
                        "kmeans_niter", "kmeans_points_per_centroid"}
    with pytest.raises(ValueError, match=r"unknown USL hyperparameter\(s\) \['lamda'\]"):
        usl_config(100, 10, lamda=0.5)
    with pytest.raises(ValueError, match="k=100 is too large for 100 points"):
        usl_config(100, 10, k=100)


def test_purity_delta_is_the_radius_probcover_uses():
    from uslkit.cluster import kmeans
    from uslkit.select import purity_delta
    from uslkit.select.probcover import _purity_delta2

    x, _ = _blobs(60, np.random.default_rng(3).standard_normal((4, 5)), 0.6, seed=8, normalise=True)
    clusters, _ = kmeans(x, 4, seed=2, niter=100)
    assert purity_delta(x, 4, purity_threshold=0.9, seed=2) == np.sqrt(_purity_delta2(x, clusters, 0.9, None))
    grid = [0.05, 0.1, 0.2, 5.0]
    assert purity_delta(x, 4, purity_threshold=0.9, delta_grid=grid, seed=2) in grid[:3]
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        purity_delta(x, 1)


# --------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_value_error_naming_the_value():
    x = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select("usl", bad, 2)
    with pytest.raises(ValueError, match="2-D"):
        select("kmeans", x[:, 0], 2)
    with pytest.raises(ValueError, match="budget must be >= 1"):
        select("coreset", x, 0)
    with pytest.raises(ValueError, match="larger than the unlabelled pool"):
        select("random", x, 21)
    with pytest.raises(ValueError, match="larger than the unlabelled pool"):
        select("coreset", x, 18, labeled=[0, 1, 2])
    with pytest.raises(ValueError, match="k=20"):
        select("usl", x, 2, k=20)
    with pytest.raises(ValueError, match="k=25"):
        select("sela", x, 2, k=25)
    with pytest.raises(ValueError, match="unknown selection method 'uls'.*usl"):
        select("uls", x, 2)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['lamda'\].*'lam'"):
        select("usl", x, 2, lamda=0.5)
    with pytest.raises(ValueError, match="oracle baseline and needs the true class labels"):
        select("stratified", x, 2)
    with pytest.raises(ValueError, match="delta= .*num_classes="):
        select("probcover", x, 2)
    with pytest.raises(ValueError, match="does not take a labelled set"):
        select("usl", x, 2, labeled=[0])
    with pytest.raises(ValueError, match="preset"):
        select("usl", x, 2, preset="imagenet")
    with pytest.raises(ValueError, match="density_variant"):
        select("usl", x, 2, density_variant="squared")
    with pytest.raises(ValueError, match="momentum"):
        select("usl", x, 2, momentum=1.0)
    with pytest.raises(ValueError, match="alpha"):
        select("usl", x, 2, alpha=0)
    with pytest.raises(ValueError, match="delta"):
        select("probcover", x, 2, delta=-0.1)
    with pytest.raises(ValueError, match="labels must have shape"):
        select("stratified", x, 2, labels=np.zeros(5))
    with pytest.raises(ValueError, match="seed"):
        select("random", x, 2, seed=-1)


# --------------------------------------------------------------------------------------------------------
# A real (small) dataset: sklearn digits
# --------------------------------------------------------------------------------------------------------
def _nn1_accuracy(f, y, idx):
    d2 = ((f[:, None, :] - f[idx][None, :, :]) ** 2).sum(-1)
    return float((y[idx][d2.argmin(axis=1)] == y).mean())


def test_digits_usl_and_kmeans_beat_random():
    from sklearn.datasets import load_digits

    pixels, y = load_digits(return_X_y=True)
    f = pixels / 16.0
    f = (f / np.linalg.norm(f, axis=1, keepdims=True)).astype(np.float32)
    random_acc = np.mean([_nn1_accuracy(f, y, select("random", f, 20, seed=s)) for s in range(5)])
    for method in ("usl", "kmeans"):
        idx = select(method, f, 20, seed=0)
        assert np.unique(y[idx]).size >= 9, method
        assert _nn1_accuracy(f, y, idx) > random_acc, method


@pytest.mark.parametrize("alpha,squared", [(0.5, False), (1.0, False), (0.5, True), (0.7, False), (9.0, True)])
@pytest.mark.parametrize("exclude_same_cluster", [True, False])
def test_usl_regulariser_matches_a_dense_float64_sum(alpha, squared, exclude_same_cluster):
    from uslkit.select.usl import _D2_FLOOR, _TERM_CAP, _usl_reg

    rng = np.random.default_rng(0)
    x = rng.standard_normal((700, 12)).astype(np.float32)
    x[5] = x[3]  # a duplicate of a pick: the floor and the cap apply
    clusters = rng.integers(0, 9, 700)
    picks = np.array([np.flatnonzero(clusters == c)[0] for c in range(9)])
    reg = _usl_reg(x, picks, np.arange(9), clusters, alpha=alpha, squared=squared, horizon=None,
                   exclude_same_cluster=exclude_same_cluster)
    d2 = ((x[:, None, :].astype(np.float64) - x[picks][None].astype(np.float64)) ** 2).sum(-1)
    terms = np.minimum(np.maximum(d2, _D2_FLOOR) ** -(alpha if squared else alpha / 2), _TERM_CAP)
    if exclude_same_cluster:
        terms[np.arange(700), clusters] = 0.0
    else:
        terms[picks, np.arange(9)] = 0.0
    np.testing.assert_allclose(reg, terms.sum(axis=1), rtol=1e-9)


def test_usl_large_n_path_on_a_few_thousand_points(monkeypatch):
    """With the 200,000-point threshold lowered to 1,000, USL's defaults take the large-n path: IVF density (its
    recall measured) and K-means on a seeded sample of max(1,000, 256 K) points (1,024 of 3,000 for 4 clusters).
    The IVF density alone picks what the exact path picks; the sample changes K-means' random start, so those picks
    are only checked to be deterministic and to cover most blobs."""
    import uslkit.cluster as cluster_mod
    import uslkit.knn as knn_mod
    import uslkit.select._common as common_mod
    import uslkit.select.usl as usl_mod

    centers = np.random.default_rng(7).standard_normal((4, 16)) * 3
    x, y = _blobs(750, centers, 1.0, seed=8, normalise=True)
    exact = select_usl(x, 4, seed=0, k=20, knn_mode="exact", kmeans_points_per_centroid="all")
    monkeypatch.setattr(knn_mod, "AUTO_EXACT_MAX_N", 1000)
    monkeypatch.setattr(common_mod, "AUTO_EXACT_MAX_N", 1000)
    seen, ivf = [], []
    real_kmeans, real_ivf = cluster_mod.kmeans, knn_mod._knn_sums_ivf
    monkeypatch.setattr(usl_mod, "kmeans", lambda *a, **kw: seen.append(kw) or real_kmeans(*a, **kw))
    monkeypatch.setattr(knn_mod, "_knn_sums_ivf", lambda *a, **kw: ivf.append(kw) or real_ivf(*a, **kw))
    large = select_usl(x, 4, seed=0, k=20)
    assert seen[0]["max_points_per_centroid"] == 256 and ivf  # 256 > 1,000 / 4 per cluster; IVF density
    assert select_usl(x, 4, seed=0, k=20).tolist() == large.tolist()
    assert len(set(y[large])) >= 3
    _, recall = knn_mod.knn_density(x, 20, mode="auto", return_recall=True)
    assert recall >= 0.95
    ivf_only = select_usl(x, 4, seed=0, k=20, kmeans_points_per_centroid="all")
    assert ivf_only.tolist() == exact.tolist()
