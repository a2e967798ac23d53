"""Tests for uslkit.knn: exact search against numpy brute force, approximate recall, density."""

import numpy as np
import pytest

from uslkit.knn import DENSITY_EPS, density_from_dists, estimate_recall, knn, knn_density


def brute_force(x, q, k, exclude_self):
    """Independent reference: float64 distances, sorted by (distance, index)."""
    d2 = ((q[:, None, :].astype(np.float64) - x[None, :, :].astype(np.float64)) ** 2).sum(-1)
    if exclude_self:
        np.fill_diagonal(d2, np.inf)
    ids = np.broadcast_to(np.arange(x.shape[0]), d2.shape)
    order = np.lexsort((ids, d2), axis=-1)[:, :k]
    return np.sqrt(np.take_along_axis(d2, order, axis=1)), order


def random_with_duplicates(n=400, d=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    x[50] = x[10]  # a duplicate pair
    x[300:306] = x[200]  # a group of 7 identical points
    return x


def clustered(n=3000, d=32, n_centers=15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_centers, d)) * 4
    return (centers[rng.integers(0, n_centers, n)] + rng.standard_normal((n, d))).astype(np.float32)


def test_exact_matches_brute_force_on_x_itself():
    x = random_with_duplicates()
    dists, idx = knn(x, 12)
    ref_d, ref_i = brute_force(x, x, 12, exclude_self=True)
    assert dists.dtype == np.float32 and idx.dtype == np.int64 and idx.shape == (400, 12)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dists, ref_d, atol=1e-5)
    assert np.all(np.diff(dists, axis=1) >= 0)


def test_exact_matches_brute_force_with_separate_queries():
    x = random_with_duplicates()
    rng = np.random.default_rng(1)
    q = rng.standard_normal((60, 16)).astype(np.float32)
    q[0] = x[200]  # a query equal to a group of 7 duplicates: all at distance 0, lowest indices first
    dists, idx = knn(x, 9, queries=q)  # exclude_self has no meaning for separate queries
    ref_d, ref_i = brute_force(x, q, 9, exclude_self=False)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dists, ref_d, atol=1e-5)
    np.testing.assert_array_equal(idx[0, :7], [200, 300, 301, 302, 303, 304, 305])
    assert np.all(dists[0, :7] == 0)


def test_self_exclusion_removes_own_index_but_keeps_duplicates():
    x = random_with_duplicates()
    dists, idx = knn(x, 5)
    assert not np.any(idx == np.arange(400)[:, None])
    assert idx[10, 0] == 50 and dists[10, 0] == 0
    assert idx[50, 0] == 10 and dists[50, 0] == 0
    # without exclusion the point is its own first neighbour (lowest index among the zero distances)
    _, idx_incl = knn(x, 5, exclude_self=False)
    assert idx_incl[10, 0] == 10 and idx_incl[50, :2].tolist() == [10, 50]


def test_many_duplicates_ties_broken_by_index():
    # 60 identical points: more than the candidate list faiss is first asked for (k + 1 + margin)
    rng = np.random.default_rng(2)
    x = np.vstack([rng.standard_normal((40, 8)), np.repeat(rng.standard_normal((1, 8)), 60, axis=0)])
    x = x.astype(np.float32)
    dists, idx = knn(x, 5)
    _, ref_i = brute_force(x, x, 5, exclude_self=True)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(idx[99], [40, 41, 42, 43, 44])
    np.testing.assert_array_equal(idx[40], [41, 42, 43, 44, 45])
    assert np.all(dists[40:] == 0)


class _HighIndexFirstIndex:
    """A stand-in for a faiss index that returns tied points highest index first (as a GPU k-select may)."""

    def __init__(self, x):
        self.x = x.astype(np.float64)

    def search(self, q, k):
        d2 = ((q[:, None, :].astype(np.float64) - self.x[None]) ** 2).sum(-1)
        ids = np.broadcast_to(np.arange(self.x.shape[0]), d2.shape)
        order = np.lexsort((-ids, d2), axis=-1)[:, :k]
        return np.take_along_axis(d2, order, axis=1).astype(np.float32), order


def test_ties_beyond_the_candidate_list_are_resolved_by_index():
    from uslkit.knn import _Index, _knn_search

    rng = np.random.default_rng(3)
    x = np.vstack([rng.standard_normal((10, 4)), np.repeat(rng.standard_normal((1, 4)), 50, axis=0)])
    x = x.astype(np.float32)
    max_norm = float(np.linalg.norm(x, axis=1).max())
    _, idx = _knn_search(
        _Index(_HighIndexFirstIndex(x), None, max_norm, True),
        x,
        x,
        3,
        self_ids=np.arange(60),
        squared=False,
        chunk_size=None,
        use_gpu=False,
        progress=False,
    )
    _, ref_i = brute_force(x, x, 3, exclude_self=True)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_array_equal(idx[59], [10, 11, 12])


def test_squared_flag():
    x = random_with_duplicates()
    d, i = knn(x, 7)
    d2, i2 = knn(x, 7, squared=True)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_allclose(d2, d.astype(np.float64) ** 2, rtol=1e-5, atol=1e-6)


def test_chunking_and_progress_do_not_change_the_result():
    x = random_with_duplicates()
    a = knn(x, 6)
    b = knn(x, 6, chunk_size=37, progress=True)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


def test_auto_is_exact_for_small_n():
    x = random_with_duplicates()
    np.testing.assert_array_equal(knn(x, 4, mode="auto")[1], knn(x, 4)[1])


@pytest.mark.parametrize("mode,nprobe", [("ivf", 8), ("ivf", None), ("hnsw", None)])
def test_approximate_modes_reach_recall(mode, nprobe):
    x = clustered()
    dists, idx = knn(x, 10, mode=mode, nprobe=nprobe, seed=0)
    _, exact = knn(x, 10)
    true_recall = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(idx, exact)])
    est = estimate_recall(x, idx, 10, n_sample=500, seed=0)
    assert true_recall >= 0.9
    assert est >= 0.9
    assert abs(est - true_recall) < 0.05
    # distances of whatever was found are exact and sorted
    np.testing.assert_allclose(dists, np.linalg.norm(x[idx] - x[:, None, :], axis=-1), rtol=1e-5, atol=1e-5)
    assert np.all(np.diff(dists, axis=1) >= 0)


def test_estimate_recall_matches_a_poor_index():
    x = clustered()
    _, idx = knn(x, 10, mode="ivf", nprobe=1, seed=0)
    _, exact = knn(x, 10)
    true_recall = np.mean([np.intersect1d(a, b).size / 10 for a, b in zip(idx, exact)])
    assert true_recall < 0.9  # nprobe=1 really is approximate here
    assert abs(estimate_recall(x, idx, 10, n_sample=1000, seed=1) - true_recall) < 0.03


def test_ivf_is_deterministic_for_a_seed():
    x = clustered()
    a = knn(x, 5, mode="ivf", nprobe=1, seed=3)
    b = knn(x, 5, mode="ivf", nprobe=1, seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


def test_estimate_recall_detects_bad_neighbours():
    x = clustered(n=1000)
    _, exact = knn(x, 10)
    assert estimate_recall(x, exact, 10) == 1.0
    wrong = np.random.default_rng(0).integers(0, 1000, size=(1000, 10))
    assert estimate_recall(x, wrong, 10) < 0.2
    half = exact.copy()
    half[:, 5:] = -1  # missing entries count as misses
    assert estimate_recall(x, half, 10) == pytest.approx(0.5)


def test_estimate_recall_with_queries():
    x = clustered(n=1000)
    q = clustered(n=50, seed=1)
    _, idx = knn(x, 8, queries=q)
    assert estimate_recall(x, idx, 8, queries=q) == 1.0


def test_knn_validation_errors():
    x = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="k=20"):
        knn(x, 20)
    knn(x, 20, exclude_self=False)  # allowed: the point itself is a neighbour
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn(x, 0)
    with pytest.raises(ValueError, match="mode"):
        knn(x, 3, mode="lsh")
    with pytest.raises(ValueError, match="features"):
        knn(x, 3, queries=np.zeros((2, 5), np.float32))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        knn(bad, 3)
    with pytest.raises(ValueError, match="device"):
        knn(x, 3, device="tpu")


def test_density_four_points_by_hand():
    # points on a line at 0, 1, 3, 6; k = 2 nearest neighbours (self excluded)
    x = np.array([[0.0], [1.0], [3.0], [6.0]], dtype=np.float32)
    # neighbour distances: 0 -> (1, 3); 1 -> (1, 2); 3 -> (2, 3); 6 -> (3, 5); point 3 is at distance 3
    # from both 0 and 6: the tie goes to the lower index, 0
    paper = knn_density(x, 2)
    np.testing.assert_allclose(paper, [1 / 2, 1 / 1.5, 1 / 2.5, 1 / 4])
    # reference code: squared distances, the point itself counted among its 2 neighbours
    ref = knn_density(x, 2, variant="reference")
    np.testing.assert_allclose(
        ref, [1 / ((0 + 1) / 2), 1 / ((0 + 1) / 2), 1 / ((0 + 4) / 2), 1 / ((0 + 9) / 2)]
    )
    dens, dists, idx = knn_density(x, 2, return_knn=True)
    np.testing.assert_allclose(dists, [[1, 3], [1, 2], [2, 3], [3, 5]])
    np.testing.assert_array_equal(idx, [[1, 2], [0, 2], [1, 0], [2, 1]])
    np.testing.assert_allclose(density_from_dists(dists), dens)


def test_density_of_exact_duplicates_is_large_and_finite():
    x = np.array([[0.0, 0.0]] * 3 + [[5.0, 5.0]], dtype=np.float32)
    dens = knn_density(x, 2)
    assert np.all(np.isfinite(dens))
    np.testing.assert_allclose(dens[:3], 1 / DENSITY_EPS)
    assert dens[3] < 1


def test_density_validation():
    with pytest.raises(ValueError, match="variant"):
        density_from_dists(np.ones((3, 2)), variant="typical")
    with pytest.raises(ValueError, match="non-negative"):
        density_from_dists(-np.ones((3, 2)))
    with pytest.raises(ValueError, match="k >= 2"):
        knn_density(np.eye(4, dtype=np.float32), 1, variant="reference")


# --------------------------------------------------------------------------------------------------------
# Re-ranking of faiss' candidates, the exactness proof and the approximate-mode defaults
# --------------------------------------------------------------------------------------------------------
def far_apart_tight_clusters(n_clusters=6, size=30, d=16, seed=4):
    """Clusters of spread 1e-2 whose centres are ~1000 apart: faiss' float32 |q|^2 + |x|^2 - 2 q.x is off by
    far more than the distances inside a cluster, so its candidate lists inside a cluster are noise."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, d)) * 1000
    x = np.repeat(centers, size, axis=0) + rng.standard_normal((n_clusters * size, d)) * 1e-2
    x = x.astype(np.float32)
    x[7] = x[3]  # an exact duplicate inside a cluster
    return x


def test_exact_where_faiss_float32_order_is_wrong(monkeypatch):
    import faiss

    # from this many queries per call faiss-cpu computes |q|^2 + |x|^2 - 2 q.x in float32 with BLAS (as
    # GPUs always do); below it (128000 in faiss-cpu 1.15) it subtracts coordinates, which is accurate
    monkeypatch.setattr(faiss.cvar, "distance_compute_blas_threshold", 1)
    x = far_apart_tight_clusters()
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, raw = index.search(x, 6)
    ref_d, ref_i = brute_force(x, x, 5, exclude_self=True)
    assert (raw[:, 1:] != ref_i).any(axis=1).mean() > 0.5  # the data really defeats faiss' own ranking
    dists, idx = knn(x, 5)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dists, ref_d, rtol=1e-5, atol=1e-7)
    assert idx[3, 0] == 7 and idx[7, 0] == 3 and dists[3, 0] == 0


def test_exact_ties_and_near_ties_broken_by_index():
    # around a query: points at exactly equal distances (q +- 0.5 e_i), points farther by a relative 4e-8
    # (below float32 resolution, so their float32 squared distances equal those of q +- 0.5 e_i) placed at
    # LOWER indices, points farther by 2e-4, duplicates and distant points
    rng = np.random.default_rng(5)
    d = 8
    base = (rng.integers(-8, 8, d) / 4).astype(np.float32)  # base +- 0.5 e_i is exact in float32
    eye = np.eye(d, dtype=np.float32)
    half = np.vstack([eye * 0.5, -eye * 0.5])
    sub_ulp = half + np.roll(np.vstack([eye, eye]), 1, axis=1) * 1e-4  # squared distance 0.25 + 1e-8
    x = np.vstack([base + sub_ulp, base + half, base + half * (1 + 1e-4), base + half[:3]])
    x = np.vstack([x, rng.standard_normal((20, d)) * 5]).astype(np.float32)
    dists, idx = knn(x, 40, queries=base[None])
    ref_d, ref_i = brute_force(x, base[None], 40, exclude_self=False)
    np.testing.assert_array_equal(idx, ref_i)
    np.testing.assert_allclose(dists, ref_d, atol=1e-6)
    assert np.all(np.diff(dists[0]) >= 0)
    # 16 + 3 duplicates exactly tied, by index; then the sub-ulp farther points
    np.testing.assert_array_equal(idx[0, :19], list(range(16, 32)) + [48, 49, 50])
    assert set(idx[0, 19:35]) == set(range(16))


def test_faiss_rounding_stays_within_the_bound():
    # the proof of exactness rests on |faiss' float32 D - our distance| <= slack; check it where D is worst
    from uslkit.knn import _build_index, _rounding_slack, _sq_dists

    rng = np.random.default_rng(6)
    x = (rng.standard_normal((2000, 64)) + 30).astype(np.float32)  # far from the origin: large norms
    x[:1000] /= 7
    index = _build_index(x, "exact", use_gpu=False, seed=0, nprobe=None, k=50)
    qs = x - index.shift
    dist_f, cand = index.faiss.search(qs, 50)
    err = np.abs(dist_f.astype(np.float64) - _sq_dists(x, x, cand))
    slack = _rounding_slack(np.linalg.norm(qs.astype(np.float64), axis=1), index.max_norm, x.shape[1])
    assert np.all(err <= slack[:, None])
    assert err.max() > slack.max() / 1e4  # the bound is not vacuous: faiss' error is of that order


def test_exact_results_do_not_depend_on_the_candidate_margin(monkeypatch):
    import uslkit.knn as knn_module

    x = clustered(n=1500, d=8)
    a = knn(x, 40)
    monkeypatch.setattr(knn_module, "_CANDIDATE_MARGIN", 0)  # every row then needs a second, longer search
    b = knn(x, 40)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])
    _, ref_i = brute_force(x, x, 40, exclude_self=True)
    np.testing.assert_array_equal(a[1], ref_i)


def test_return_recall(caplog):
    import logging

    x = clustered()
    out = knn(x, 10, return_recall=True)
    assert len(out) == 3 and out[2] == 1.0
    np.testing.assert_array_equal(out[1], knn(x, 10)[1])
    assert len(knn(x, 10, mode="ivf", nprobe=1)) == 2  # the default return is unchanged
    with caplog.at_level(logging.INFO, logger="uslkit.knn"):
        _, idx, recall = knn(x, 10, mode="ivf", nprobe=1, seed=2, return_recall=True)
    assert 0.3 < recall < 0.95  # nprobe=1 is approximate here
    assert recall == estimate_recall(x, idx, 10, n_sample=1000, seed=2)
    assert any("recall@k" in r.getMessage() and f"{recall:.4f}" in r.getMessage() for r in caplog.records)


def test_ivf_trains_on_a_seeded_subsample(monkeypatch):
    import uslkit.knn as knn_module
    from uslkit.knn import IVF_NPROBE, _build_index, _ivf_nlist, _ivf_training_rows

    rows = _ivf_training_rows(1_000_000, 4000, seed=3)
    assert rows.size == knn_module.IVF_TRAIN_POINTS_PER_LIST * 4000 and np.all(np.diff(rows) > 0)
    np.testing.assert_array_equal(rows, _ivf_training_rows(1_000_000, 4000, seed=3))
    assert not np.array_equal(rows, _ivf_training_rows(1_000_000, 4000, seed=4))
    np.testing.assert_array_equal(_ivf_training_rows(500, 20, seed=3), np.arange(500))  # small n: all rows

    monkeypatch.setattr(knn_module, "IVF_TRAIN_POINTS_PER_LIST", 40)  # subsample at a testable size
    x = clustered(n=30000, d=8)
    nlist = _ivf_nlist(30000)
    assert 40 * nlist < 30000
    trained = []
    for seed in (3, 3, 4):
        index = _build_index(x, "ivf", use_gpu=False, seed=seed, nprobe=None, k=5).faiss
        assert index.nprobe == min(nlist, IVF_NPROBE)
        trained.append(index.quantizer.reconstruct_n(0, nlist))
    np.testing.assert_array_equal(trained[0], trained[1])
    assert not np.array_equal(trained[0], trained[2])
    a = knn(x, 5, mode="ivf", seed=3)
    b = knn(x, 5, mode="ivf", seed=3)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(a[0], b[0])


def test_check_k_one_rule_for_knn_and_selection():
    from uslkit._validate import check_k

    assert check_k(19, 20) == 19 and check_k(20, 20, exclude_self=False) == 20
    with pytest.raises(ValueError, match=r"k=20 is too large for 20 points: at most 19 \(each point's own index"):
        check_k(20, 20)
    with pytest.raises(ValueError, match=r"k=21 is too large for 20 points: at most 20$"):
        check_k(21, 20, exclude_self=False)
    with pytest.raises(ValueError, match="k must be >= 1"):
        check_k(0, 20)
    with pytest.raises(ValueError, match="k must be an integer"):
        check_k(2.0, 20)


# ---- the GEMM path of knn_density (exact mode on the CPU, no neighbour lists) ---------------------------
def _density_from_lists(x, k, variant):
    return density_from_dists(knn(x, k)[0], variant=variant)


@pytest.mark.parametrize("scale", [1e-5, 1.0, 1e15])
@pytest.mark.parametrize("variant", ["paper", "reference"])
def test_density_gemm_path_matches_the_neighbour_lists(scale, variant):
    # clusters far from the mean: the GEMM's error (relative to |x'|^2, not to the distances) is large here;
    # on L2-normalised embeddings it is below 1e-6 (benchmarks/RESULTS.md)
    x = clustered(n=1500, d=24) * np.float32(scale)
    x[7] = x[3]  # a duplicate: its GEMM value is pure cancellation and is recomputed from coordinates
    x[900:905] = x[800]
    for k in (1 if variant == "paper" else 2, 5, 60, 400):
        fast = knn_density(x, k, variant=variant)
        slow = _density_from_lists(x, k, variant)
        np.testing.assert_allclose(fast, slow, rtol=3e-5, err_msg=f"k={k}")


def test_density_gemm_path_on_tiny_and_wide_inputs():
    # n = 2 (k = 1), n = k + 1 (every other point), more features than points, one constant feature
    two = np.array([[0.0, 0.0], [3.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(knn_density(two, 1), [0.2, 0.2])
    rng = np.random.default_rng(3)
    for n, d, k in [(6, 5, 5), (40, 300, 7), (257, 3, 256)]:
        x = rng.standard_normal((n, d)).astype(np.float32)
        x[:, 0] = 2.5
        for variant in ("paper", "reference"):
            np.testing.assert_allclose(knn_density(x, k, variant=variant), _density_from_lists(x, k, variant),
                                       rtol=2e-6, err_msg=f"n={n} d={d} k={k} {variant}")


def _digits_pixels():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


def test_density_gemm_path_is_not_used_when_lists_are_asked_for():
    x = _digits_pixels()
    dens, dists, idx = knn_density(x, 10, return_knn=True)
    np.testing.assert_array_equal(dens, density_from_dists(dists))
    np.testing.assert_allclose(knn_density(x, 10), dens, rtol=1e-5)


def test_density_gemm_path_gives_the_same_usl_picks_as_the_lists(monkeypatch):
    import uslkit.select._common as common
    from uslkit.select import select_usl

    x = _digits_pixels()
    fast = [select_usl(x, b, seed=s) for b in (10, 30) for s in (0, 1)]
    monkeypatch.setattr(common, "knn_density", lambda x, k, variant, mode, seed, nprobe, pq_m: _density_from_lists(
        x, k, variant))
    slow = [select_usl(x, b, seed=s) for b in (10, 30) for s in (0, 1)]
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


def test_quickselect_kernel_against_a_sort():
    from uslkit._kernels import _select

    rng = np.random.default_rng(0)
    for trial in range(300):
        c = int(rng.integers(1, 200))
        v = rng.integers(0, 6, c).astype(np.float32)  # many ties
        if trial % 3 == 0:
            v[rng.integers(0, c, 3)] = np.inf
        ids = np.arange(c, dtype=np.int64)
        k = int(rng.integers(1, c + 1))
        w, wid = v.copy(), ids.copy()
        assert _select(w, wid, c, k) == np.sort(v)[k - 1]
        np.testing.assert_array_equal(np.sort(w[:k]), np.sort(v)[:k])
        np.testing.assert_array_equal(v[wid], w)  # the ids moved with their values


# ---- the IVF path of knn_density ------------------------------------------------------------------------
def test_density_ivf_path_close_to_exact_and_deterministic():
    x = clustered(n=3000, d=32)
    exact = knn_density(x, 20)
    dens, recall = knn_density(x, 20, mode="ivf", return_recall=True)
    assert 0.95 <= recall <= 1.0
    assert np.median(np.abs(dens - exact) / exact) < 1e-5
    again, recall2 = knn_density(x, 20, mode="ivf", return_recall=True)
    np.testing.assert_array_equal(dens, again)
    assert recall == recall2
    # every list probed: every point is a candidate, so the sums are the exact ones (other GEMM blocks)
    full, r_full = knn_density(x, 20, mode="ivf", nprobe=10_000, return_recall=True, variant="reference")
    assert r_full == 1.0
    np.testing.assert_allclose(full, knn_density(x, 20, variant="reference"), rtol=3e-5)


def test_density_ivf_path_warns_when_recall_is_low(monkeypatch, caplog):
    import uslkit.knn as knn_mod

    monkeypatch.setattr(knn_mod, "DENSITY_IVF_CANDIDATES", 1)
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)  # no structure: IVF is poor
    with caplog.at_level("WARNING", logger="uslkit.knn"):
        _, recall = knn_density(x, 50, mode="ivf", nprobe=1, return_recall=True)
    assert recall < 0.95
    assert any("raise nprobe" in r.getMessage() for r in caplog.records)


def test_density_auto_mode_switches_to_ivf_above_the_threshold(monkeypatch):
    import uslkit.knn as knn_mod

    x = clustered(n=2000, d=16)
    monkeypatch.setattr(knn_mod, "AUTO_EXACT_MAX_N", 1000)
    calls = []
    real = knn_mod._knn_sums_ivf
    monkeypatch.setattr(knn_mod, "_knn_sums_ivf", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    knn_density(x, 10, mode="auto")
    assert calls and calls[0]["nprobe"] == knn_mod.DENSITY_IVF_NPROBE
    knn_density(x, 10, mode="auto", nprobe=3)
    assert calls[1]["nprobe"] == 3


def test_density_ivf_without_nprobe_searches_more_lists_until_recall_holds(monkeypatch, caplog):
    """No ``nprobe`` given: the probe count doubles until the recall@k the sampled rows would get reaches 0.95
    (that estimate is the recall the full pass then measures); an explicit ``nprobe`` is kept, and warns."""
    import uslkit.knn as knn_mod

    monkeypatch.setattr(knn_mod, "DENSITY_IVF_CANDIDATES", 1)
    x = np.random.default_rng(0).standard_normal((3000, 16)).astype(np.float32)  # no structure: IVF is poor
    with caplog.at_level("INFO", logger="uslkit.knn"):
        _, recall = knn_density(x, 50, mode="ivf", return_recall=True)
    assert recall >= knn_mod.DENSITY_MIN_RECALL
    msgs = [r.getMessage() for r in caplog.records]
    assert not any(r.levelname == "WARNING" for r in caplog.records)
    tried = [m for m in msgs if "of the sampled rows' true 50 neighbours" in m]
    assert len(tried) >= 2 and tried[0].startswith(f"knn_density IVF: {knn_mod.DENSITY_IVF_NPROBE} of")
    estimate = float(tried[-1].split(" hold ")[1].split(" ")[0])
    assert estimate == pytest.approx(recall, abs=2e-3)
    caplog.clear()
    with caplog.at_level("WARNING", logger="uslkit.knn"):
        _, low = knn_density(x, 50, mode="ivf", nprobe=2, return_recall=True)
    assert low < knn_mod.DENSITY_MIN_RECALL and any("raise nprobe" in r.getMessage() for r in caplog.records)


# ---- the compressed (IVF-PQ) path of knn_density: embeddings larger than memory ------------------------------
def test_density_ivfpq_close_to_exact_deterministic_and_the_same_on_a_memory_map(tmp_path):
    from scipy.stats import spearmanr

    x = clustered(n=3000, d=32)
    for variant in ("paper", "reference"):
        exact = knn_density(x, 20, variant=variant)
        dens, recall = knn_density(x, 20, mode="ivfpq", variant=variant, return_recall=True)
        assert 0.5 < recall <= 1.0  # estimated distances: not every exact neighbour is found
        assert np.median(np.abs(dens - exact) / exact) < 0.05
        assert spearmanr(dens, exact).statistic > 0.95
    again = knn_density(x, 20, mode="ivfpq", variant="reference")
    np.testing.assert_array_equal(dens, again)
    np.save(tmp_path / "x.npy", x)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    np.testing.assert_array_equal(knn_density(mm, 20, mode="ivfpq", variant="reference"), dens)


def test_density_ivfpq_reports_recall_and_error_in_the_log(caplog):
    x = clustered(n=3000, d=32)
    with caplog.at_level("INFO", logger="uslkit.knn"):
        _, recall = knn_density(x, 20, mode="ivfpq", return_recall=True, pq_m=8)
    line = next(r.getMessage() for r in caplog.records if "IVF-PQ (" in r.getMessage())
    assert f"recall@k {recall:.4f}" in line and "8 bytes per point" in line and "relative error" in line


def test_density_ivfpq_rows_whose_lists_are_short_are_searched_among_every_list():
    """k = 500 on 3,000 points in 46 lists of ~65: one probed list (and the 3 next ranked) hold fewer than k + 1
    points, so every row is searched again among every list, as when every list is probed from the start."""
    x = clustered(n=3000, d=32)
    np.testing.assert_array_equal(knn_density(x, 500, mode="ivfpq", nprobe=1),
                                  knn_density(x, 500, mode="ivfpq", nprobe=46))


def test_density_ivfpq_options_are_checked():
    x = clustered(n=3000, d=32)
    with pytest.raises(ValueError, match="pq_m=5 must divide d=32"):
        knn_density(x, 10, mode="ivfpq", pq_m=5)
    with pytest.raises(ValueError, match="at most 15 coordinates"):
        knn_density(x, 10, mode="ivfpq", pq_m=2)
    with pytest.raises(ValueError, match="at least 256 points"):
        knn_density(x[:200], 10, mode="ivfpq")
    with pytest.raises(ValueError, match="density alone"):
        knn_density(x, 10, mode="ivfpq", return_knn=True)
    with pytest.raises(ValueError, match="ivfpq"):  # the density's modes are listed in the error
        knn_density(x, 10, mode="pq")


def test_ivfpq_recall_sample_neighbours_are_exact():
    from uslkit._ivfpq import _exact_sample

    x = random_with_duplicates(n=400, d=16)
    sample = np.array([3, 10, 50, 200, 399])
    d2, ids = _exact_sample(x, sample, 12, progress=False)
    ref_d, _ = brute_force(x, x[sample], 12, exclude_self=False)
    np.testing.assert_allclose(np.sqrt(d2), ref_d, atol=1e-5)
    assert all(sample[r] in ids[r] or ref_d[r, -1] == 0 for r in range(sample.size))  # the row itself is among them
    np.testing.assert_allclose(((x[ids] - x[sample][:, None]) ** 2).sum(-1), d2, atol=1e-5)
