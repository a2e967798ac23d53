"""Tests for uslkit.cluster: K-means vs scikit-learn, empty clusters, Sinkhorn-Knopp, constrained K-means."""

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs

from uslkit.cluster import constrained_kmeans, kmeans, kmeans_inertia, sinkhorn_cluster, sinkhorn_knopp


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=3000, n_features=8, centers=10, cluster_std=1.5, random_state=0)
    return x.astype(np.float32), y


@pytest.fixture(scope="module")
def imbalanced():
    x, y = make_blobs(n_samples=[600, 200, 100, 100], n_features=8, cluster_std=1.0, random_state=0)
    return x.astype(np.float32), y


def assert_all_clusters_used(labels, k):
    assert labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < k
    assert np.bincount(labels, minlength=k).min() >= 1


# ---------------------------------------------------------------------------------------------------- K-means
@pytest.mark.parametrize("init", ["random", "k-means++"])
def test_kmeans_inertia_close_to_sklearn(init):
    x, _ = make_blobs(n_samples=3000, n_features=8, centers=6, cluster_std=1.5, random_state=0)
    x = x.astype(np.float32)
    labels, centroids = kmeans(x, 6, seed=0, nredo=5, init=init)
    assert labels.shape == (3000,) and centroids.shape == (6, 8) and centroids.dtype == np.float32
    ours = kmeans_inertia(x, labels, centroids)
    ref = KMeans(6, n_init=5, init=init, random_state=0).fit(x).inertia_
    assert ours <= ref * 1.02


def test_kmeans_labels_are_nearest_centroids(blobs):
    x, _ = blobs
    labels, c = kmeans(x, 10, seed=0)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(labels, d2.argmin(1))  # the exact order (ties: lower index), no float32 GEMM flips
    faiss_labels, fc = kmeans(x, 10, seed=0, backend="faiss")
    d2 = ((x[:, None, :].astype(np.float64) - fc[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(faiss_labels, d2.argmin(1))  # the faiss backend's final assignment is exact too


@pytest.mark.parametrize("scale", [1e-22, 1.0, 3e19])
def test_nearest_centroid_is_exact_at_any_scale(scale):
    """The float32 ranking must not underflow or overflow: tiny and huge coordinates get the float64 argmin."""
    from uslkit.cluster import _Nearest

    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3000, 4)) * scale).astype(np.float32)
    c = x[rng.choice(3000, 50, replace=False)] + (rng.standard_normal((50, 4)) * 0.01 * scale).astype(np.float32)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    assert np.array_equal(_Nearest(x)(c), d2.argmin(1))


def test_kmeans_stops_at_the_fixed_point_with_the_result_of_all_iterations(blobs):
    x, _ = blobs
    a = kmeans(x, 10, seed=0, niter=100, return_info=True)
    b = kmeans(x, 10, seed=0, niter=100, tol=None, return_info=True)
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    assert a[2]["converged"] and a[2]["changed"] == 0.0 and a[2]["iterations"] < 100
    assert b[2]["iterations"] == 100 and not b[2]["converged"]
    assert a[2]["inertia"] == pytest.approx(kmeans_inertia(x, a[0], a[1]), rel=1e-9)
    loose = kmeans(x, 10, seed=0, niter=100, tol=0.01, return_info=True)[2]
    assert loose["converged"] and loose["changed"] <= 0.01 and loose["iterations"] <= a[2]["iterations"]
    capped = kmeans(x, 10, seed=0, niter=2, return_info=True)[2]
    assert capped["iterations"] == 2 and not capped["converged"]


def test_kmeans_inertia_matches_sklearn_definition(blobs):
    x, _ = blobs
    km = KMeans(5, n_init=1, random_state=0).fit(x)
    assert kmeans_inertia(x, km.labels_, km.cluster_centers_) == pytest.approx(km.inertia_, rel=1e-5)


def test_kmeans_same_seed_same_output_bit_for_bit(blobs):
    x, _ = blobs
    a = kmeans(x, 12, seed=5, nredo=2)
    b = kmeans(x, 12, seed=5, nredo=2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].tobytes() == b[1].tobytes()
    c = kmeans(x, 12, seed=6, nredo=2)
    assert not np.array_equal(a[1], c[1])


def test_kmeans_uses_all_points_by_default(blobs):
    x, _ = blobs
    n = x.shape[0]
    default = kmeans(x, 10, seed=0, backend="faiss")
    explicit = kmeans(x, 10, seed=0, max_points_per_centroid=n, backend="faiss")  # no subsampling possible
    np.testing.assert_array_equal(default[0], explicit[0])
    np.testing.assert_array_equal(default[1], explicit[1])
    sub = kmeans(x, 10, seed=0, max_points_per_centroid=3, backend="faiss")  # faiss trains on 30 random points
    assert kmeans_inertia(x, *default) < kmeans_inertia(x, *sub)
    with pytest.raises(ValueError, match="max_points_per_centroid must be >= 1"):
        kmeans(x, 10, max_points_per_centroid=0)


def test_exact_kmeans_on_a_sample_equals_lloyd_on_that_sample_then_one_assignment(blobs):
    """``max_points_per_centroid`` on the exact backend: Lloyd on a seeded sorted sample of m K points, then
    every point goes to the nearest of those centroids; no cluster is empty; a sample as large as the data is no
    sample."""
    from uslkit.cluster import _SAMPLE_STREAM, _assign

    x, _ = blobs
    n = x.shape[0]
    labels, cent, info = kmeans(x, 10, seed=3, max_points_per_centroid=5, return_info=True)
    assert info["trained_on"] == 50
    train = np.sort(np.random.default_rng([3, _SAMPLE_STREAM]).choice(n, size=50, replace=False))
    _, cent_sample = kmeans(x[train], 10, seed=3)
    assert cent.tobytes() == cent_sample.tobytes()  # no cluster went empty on these blobs
    expected, _ = _assign(x, cent, spherical=False, use_gpu=False)
    np.testing.assert_array_equal(labels, expected)
    assert_all_clusters_used(labels, 10)
    full = kmeans(x, 10, seed=3, return_info=True)
    same = kmeans(x, 10, seed=3, max_points_per_centroid=-(-n // 10), return_info=True)
    assert full[2]["trained_on"] == same[2]["trained_on"] == n
    np.testing.assert_array_equal(full[0], same[0])
    assert kmeans(x, 10, seed=3, max_points_per_centroid=5)[1].tobytes() == cent.tobytes()  # seeded


def test_nearest_centroid_without_a_centred_copy_gives_the_same_labels(monkeypatch):
    """Above ``_NEAREST_COPY_ELEMS`` entries (a memory map larger than memory) the assignment centres each block
    on the fly: the same bits as the stored copy, so the same labels, ties and near-ties included."""
    import uslkit.cluster as cl

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(3000, 24)).astype(np.float32) * 0.1 + 1.0  # lattice: many exact ties
    c = x[rng.choice(3000, 40, replace=False)] + np.float32(1e-7)
    stored = cl._Nearest(x)
    assert stored.xc is not None
    monkeypatch.setattr(cl, "_NEAREST_COPY_ELEMS", 1000)
    monkeypatch.setattr(cl, "_STREAM_ROWS", 256)
    streamed = cl._Nearest(x)
    assert streamed.xc is None
    np.testing.assert_array_equal(streamed(c), stored(c))
    np.testing.assert_array_equal(streamed.xn, stored.xn)
    labels, cent = kmeans(x, 40, seed=0, max_points_per_centroid=20)
    monkeypatch.undo()
    again = kmeans(x, 40, seed=0, max_points_per_centroid=20)
    np.testing.assert_array_equal(labels, again[0])
    assert cent.tobytes() == again[1].tobytes()


def test_kmeans_with_as_many_clusters_as_points():
    x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    labels, centroids = kmeans(x, 40, seed=0)
    assert_all_clusters_used(labels, 40)
    np.testing.assert_allclose(centroids[labels], x, atol=1e-6)
    assert kmeans_inertia(x, labels, centroids) == pytest.approx(0, abs=1e-8)


@pytest.mark.parametrize("k", [3, 5, 10, 60])
@pytest.mark.parametrize("spherical", [False, True])
def test_kmeans_no_empty_cluster_with_heavy_duplicates(k, spherical):
    # 60 points but only 3 distinct values: clusters beyond 3 must split duplicates
    x = np.repeat(np.random.default_rng(1).standard_normal((3, 5)), 20, axis=0).astype(np.float32)
    labels, centroids = kmeans(x, k, seed=0, spherical=spherical)
    assert_all_clusters_used(labels, k)
    assert np.all(np.isfinite(centroids))
    if spherical:
        np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, rtol=1e-5)


def test_kmeans_validation():
    x = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="n_clusters=11"):
        kmeans(x, 11)
    with pytest.raises(ValueError, match="init"):
        kmeans(x, 2, init="kmeans||")
    with pytest.raises(ValueError, match=r"init must be one of \('random', 'k-means\+\+'\) with backend='exact'"):
        kmeans(x, 2, init="afk-mc2")
    with pytest.raises(ValueError, match="backend must be 'exact' or 'faiss'"):
        kmeans(x, 2, backend="sklearn")
    for tol in (-0.1, 1.0, True, "0"):
        with pytest.raises(ValueError, match="tol must be a share of points"):
            kmeans(x, 2, tol=tol)
    x[2, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        kmeans(x, 2)


# ---------------------------------------------------------------------------------------------------- Sinkhorn
def test_sinkhorn_marginals_are_uniform():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((300, 7)) * 3
    labels, q = sinkhorn_knopp(logits, lam=10.0, tol=1e-6)
    assert q.shape == (300, 7) and labels.shape == (300,)
    np.testing.assert_allclose(q.sum(1), 1 / 300, rtol=1e-12)
    np.testing.assert_allclose(q.sum(0), 1 / 7, rtol=1e-4)
    np.testing.assert_array_equal(labels, q.argmax(1))
    # the default tolerance (reference CIFAR setting) already gives nearly uniform columns
    _, q_default = sinkhorn_knopp(logits)
    np.testing.assert_allclose(q_default.sum(0), 1 / 7, rtol=0.05)


def test_sinkhorn_two_by_two_by_hand():
    # P = [[0.8, 0.2], [0.6, 0.4]], lam = 2: Q = [[q, 1/2 - q], [1/2 - q, q]] with uniform marginals and
    # cross ratio q^2 / (1/2 - q)^2 = (0.8 * 0.4 / (0.2 * 0.6))^2 = (8/3)^2, so q = 4/11.
    labels, q = sinkhorn_knopp(np.log([[0.8, 0.2], [0.6, 0.4]]), lam=2.0, tol=1e-13)
    np.testing.assert_allclose(q, [[4 / 11, 3 / 22], [3 / 22, 4 / 11]], atol=1e-10)
    np.testing.assert_array_equal(labels, [0, 1])  # row 1 prefers cluster 0 in P, equipartition flips it


def test_sinkhorn_is_invariant_to_row_constants():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((50, 4))
    log_softmax = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    a = sinkhorn_knopp(logits, tol=1e-9)
    b = sinkhorn_knopp(log_softmax, tol=1e-9)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-7)


def test_sinkhorn_survives_underflow_and_warns_when_not_converged():
    log_p = np.array([[0.0, -1e4], [0.0, -1e4], [0.0, -1e4]])  # exp(10 * -1e4) underflows to 0
    labels, q = sinkhorn_knopp(log_p, tol=1e-6)
    assert np.all(np.isfinite(q)) and labels.shape == (3,)
    np.testing.assert_allclose(q.sum(0), [0.5, 0.5], rtol=1e-5)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        sinkhorn_knopp(np.random.default_rng(0).standard_normal((100, 5)) * 5, tol=1e-12, max_iter=3)


def _plain_sinkhorn(log_p, lam, iters):
    """The reference's iterations written out with numpy (float64, no relaxation)."""
    p = np.exp(lam * (log_p - log_p.max(axis=1, keepdims=True)))
    n, k = p.shape
    r, c = np.full(k, 1.0 / k), np.full(n, 1.0 / n)
    for _ in range(iters):
        r = (1.0 / k) / (p.T @ c)
        c = (1.0 / n) / (p @ r)
    return p * c[:, None] * r[None, :]


@pytest.mark.filterwarnings("ignore:sinkhorn_knopp did not reach")
def test_sinkhorn_fused_pass_gives_the_reference_iterates():
    """One compiled pass per iteration (``c`` from ``P r``, then ``P^T c`` for the next ``r``) is the same
    iteration as the two products: after a fixed number of iterations the plans agree to rounding."""
    logits = np.random.default_rng(3).standard_normal((5000, 9)) * 2  # several row blocks of the passes
    _, q = sinkhorn_knopp(logits, lam=3.0, tol=1e-300, max_iter=7, check_every=1000)  # runs all 7, then warns
    np.testing.assert_allclose(q, _plain_sinkhorn(logits, 3.0, 7), rtol=1e-10, atol=0)


@pytest.mark.filterwarnings("ignore:sinkhorn_knopp did not reach")
def test_over_relaxed_sinkhorn_reaches_the_same_plan_in_fewer_iterations():
    from uslkit.cluster import _sinkhorn_scaling

    logits = np.random.default_rng(4).standard_normal((2000, 20)) * 3
    plain = sinkhorn_knopp(logits, lam=5.0, tol=1e-10, max_iter=20000)
    fast = sinkhorn_knopp(logits, lam=5.0, tol=1e-10, max_iter=20000, omega=1.6)
    np.testing.assert_array_equal(plain[0], fast[0])
    np.testing.assert_allclose(fast[1], plain[1], rtol=1e-6, atol=1e-15)
    p = np.exp(5.0 * (logits - logits.max(axis=1, keepdims=True)))
    its = [_sinkhorn_scaling(p, tol=1e-10, max_iter=20000, check_every=10, omega=w)[2] for w in (1.0, 1.6)]
    assert its[1] < its[0]
    for bad in (0.0, 2.0, -1.0):
        with pytest.raises(ValueError, match="omega"):
            sinkhorn_knopp(logits, omega=bad)


def test_over_relaxed_sinkhorn_falls_back_when_it_overshoots(monkeypatch, caplog):
    """Over-relaxation converges only near the fixed point. A step that overshoots (here forced: every other
    sample scaling shrunk 1e20-fold at one step; a warm start far from a changed plan did it for real at
    200,000 x 1,000) sends the iterates back to the best check with ``omega`` halfway to 1; the result still
    has uniform marginals. Without the safeguard the same run ends non-finite or unconverged."""
    import logging

    import uslkit.cluster as C

    logits = np.random.default_rng(5).standard_normal((500, 12)) * 3
    p = np.exp(5.0 * (logits - logits.max(axis=1, keepdims=True)))
    real = C.plan_scale_rows
    calls = {"n": 0}

    def overshooting(p_blk, r, n_total, omega, c_old, c_out, col_out):
        real(p_blk, r, n_total, omega, c_old, c_out, col_out)
        calls["n"] += 1
        if calls["n"] == 11:  # the step checked at iteration 10
            c_out[::2] *= 1e-20
            col_out[:] = c_out @ p_blk

    monkeypatch.setattr(C, "plan_scale_rows", overshooting)
    with caplog.at_level(logging.DEBUG, logger="uslkit.cluster"):
        r, c, its = C._sinkhorn_scaling(p, tol=1e-8, max_iter=5000, check_every=10, omega=1.8)
    assert "back to it" in caplog.text and "omega 1.8 -> 1.4" in caplog.text
    q = p * c[:, None] * r[None, :]
    np.testing.assert_allclose(q.sum(1), 1 / 500, rtol=1e-6)
    np.testing.assert_allclose(q.sum(0), 1 / 12, rtol=1e-6)
    # without the safeguard the blown-up iterate is kept
    calls["n"] = 0
    monkeypatch.setattr(C, "_SK_DIVERGED", np.inf)
    with pytest.warns(RuntimeWarning, match="did not reach"):
        C._sinkhorn_scaling(p, tol=1e-8, max_iter=50, check_every=10, omega=1.8)


def test_sinkhorn_warm_start_from_the_fixed_point_stops_at_once():
    from uslkit.cluster import _sinkhorn_scaling

    logits = np.random.default_rng(6).standard_normal((800, 10)) * 3
    p = np.exp(4.0 * (logits - logits.max(axis=1, keepdims=True)))
    r, c, its = _sinkhorn_scaling(p, tol=1e-10, max_iter=20000, check_every=10, omega=1.5)
    assert its > 10
    r2, c2, its2 = _sinkhorn_scaling(p, tol=1e-6, max_iter=20000, check_every=10, r0=r * 3.0, omega=1.5)
    assert its2 == 1  # a cluster scaling is warm up to a common factor (absorbed by c)
    np.testing.assert_allclose(p * c2[:, None] * r2[None, :], p * c[:, None] * r[None, :], rtol=1e-6)


def test_sinkhorn_cluster_short_rounds_end_on_a_converged_plan(imbalanced):
    """Rounds before the labels settle run ``round_sk_iter`` Sinkhorn iterations; the last round's plan is
    converged, so with one round the labels are those of every round converged (``round_sk_iter=None``)."""
    x, _ = imbalanced
    full = sinkhorn_cluster(x, 6, seed=0, n_iter=1, round_sk_iter=None, tol=1e-6)
    short = sinkhorn_cluster(x, 6, seed=0, n_iter=1, round_sk_iter=2, tol=1e-6)
    np.testing.assert_array_equal(short[0], full[0])
    many = sinkhorn_cluster(x, 6, seed=0, round_sk_iter=2)
    assert_all_clusters_used(many[0], 6)
    assert np.bincount(many[0]).max() <= 1.2 * 1000 / 6
    with pytest.raises(ValueError, match="round_sk_iter"):
        sinkhorn_cluster(x, 6, round_sk_iter=0)


def test_sinkhorn_cluster_float32_plan_matches_float64_plan(imbalanced):
    """The default plan is float32 (entries >= exp(-2 lam / temperature) = exp(-40)); with a temperature whose
    span exceeds float32's range the plan is float64. The same data and a temperature just on either side of
    the switch give the same labels."""
    from uslkit.cluster import _SK_F32_SPAN

    x, _ = imbalanced
    lam = 10.0
    t32 = 2 * lam / _SK_F32_SPAN  # exactly at the limit: float32
    a = sinkhorn_cluster(x, 4, seed=0, lam=lam, temperature=t32)
    b = sinkhorn_cluster(x, 4, seed=0, lam=lam, temperature=t32 * (1 - 1e-12))  # float64
    np.testing.assert_array_equal(a[0], b[0])


def test_sinkhorn_validation():
    with pytest.raises(ValueError, match="lam"):
        sinkhorn_knopp(np.zeros((3, 2)), lam=0)
    with pytest.raises(ValueError, match="NaN"):
        sinkhorn_knopp(np.array([[0.0, np.nan]]))


def test_sinkhorn_cluster_balances_imbalanced_blobs(imbalanced):
    x, _ = imbalanced
    labels, centroids = sinkhorn_cluster(x, 4, seed=0)
    assert_all_clusters_used(labels, 4)
    sizes = np.bincount(labels, minlength=4)
    assert sizes.max() <= 1.2 * 1000 / 4 and sizes.min() >= 0.8 * 1000 / 4
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1, rtol=1e-5)
    # K-means on the same data follows the imbalance
    km_sizes = np.bincount(kmeans(x, 4, seed=0)[0], minlength=4)
    assert km_sizes.max() >= 500
    again = sinkhorn_cluster(x, 4, seed=0)
    np.testing.assert_array_equal(labels, again[0])


# ---------------------------------------------------------------------------------------------------- constrained
def test_constrained_kmeans_keeps_labelled_points_fixed(imbalanced):
    x, _ = imbalanced
    labeled = np.array([0, 5, 17, 250, 600, 901])
    labels, centroids = constrained_kmeans(x, 8, labeled, seed=0)  # each labelled point its own cluster
    np.testing.assert_array_equal(labels[labeled], np.arange(6))
    assert_all_clusters_used(labels, 8)
    # centroids are the means of all members, labelled ones included
    for j in range(8):
        np.testing.assert_allclose(centroids[j], x[labels == j].mean(0), rtol=1e-4, atol=1e-4)


def test_constrained_kmeans_must_link_and_cannot_link_from_classes(imbalanced):
    x, y = imbalanced
    # two points of blob 0 forced into DIFFERENT clusters, and one point of blob 1 and one of blob 2 forced
    # into the SAME cluster: plain K-means would never do either
    a = np.flatnonzero(y == 0)[:2]
    b, c = np.flatnonzero(y == 1)[0], np.flatnonzero(y == 2)[0]
    labeled = np.array([a[0], a[1], b, c])
    fixed = np.array([0, 1, 2, 2])
    labels, _ = constrained_kmeans(x, 5, labeled, labeled_clusters=fixed, seed=0)
    np.testing.assert_array_equal(labels[labeled], fixed)
    assert_all_clusters_used(labels, 5)
    same = constrained_kmeans(x, 5, labeled, labeled_clusters=fixed, seed=0)[0]
    np.testing.assert_array_equal(labels, same)


def test_constrained_kmeans_without_labels_is_plain_kmeans(blobs):
    x, _ = blobs
    labels, centroids = constrained_kmeans(x, 10, [], seed=0)
    assert_all_clusters_used(labels, 10)
    ref = KMeans(10, n_init=1, random_state=0).fit(x).inertia_
    assert kmeans_inertia(x, labels, centroids) <= ref * 1.1


def test_constrained_kmeans_validation():
    x = np.random.default_rng(0).standard_normal((10, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="n_clusters >= 4"):
        constrained_kmeans(x, 3, [0, 1, 2, 3])
    with pytest.raises(ValueError, match="labeled_clusters"):
        constrained_kmeans(x, 3, [0, 1], labeled_clusters=[0, 3])
    with pytest.raises(ValueError, match="duplicate"):
        constrained_kmeans(x, 3, [1, 1])
    with pytest.raises(ValueError, match="unlabelled"):
        constrained_kmeans(x, 10, [0, 1, 2], labeled_clusters=[0, 0, 0])
