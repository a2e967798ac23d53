"""uslkit.active: the multi-round loop, its head and its query strategies (issue 15)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uslkit.active import STRATEGIES, HeadConfig, QueryContext, paper_schedule, query, run_active, train_head
from uslkit.active.strategies import badge_kmeanspp, badge_kmeanspp_factored, entropy_scores, margin_scores
from uslkit.labels import load_selection


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    perm = np.random.default_rng(0).permutation(len(y))
    return x[perm[:1200]], y[perm[:1200]], x[perm[1200:]], y[perm[1200:]]


def _ctx(x, y, labeled, *, seed=0, head=True):
    labeled = np.asarray(labeled, dtype=np.int64)
    h = train_head(x[labeled], y[labeled], num_classes=10, seed=0, epochs=5) if head else None
    return QueryContext(emb=x, labeled=labeled, labels=y[labeled], num_classes=10, head=h, seed=seed)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_every_strategy_returns_the_batch_of_new_distinct_unlabelled_indices(digits, strategy):
    x, y, _, _ = digits
    x = np.concatenate([x[:300], x[:100]])  # 100 exact duplicates in the pool
    y = np.concatenate([y[:300], y[:100]])
    labeled = np.arange(0, 400, 20)
    ctx = _ctx(x, y, labeled)
    idx = query(strategy, ctx, 15)
    assert idx.dtype == np.int64 and idx.shape == (15,) and len(set(idx.tolist())) == 15
    assert not set(idx.tolist()) & set(labeled.tolist()) and idx.min() >= 0 and idx.max() < len(x)
    assert np.array_equal(idx, query(strategy, _ctx(x, y, labeled), 15))  # same inputs and seed: same picks
    # the pool runs out: the last query takes exactly what is left
    small = _ctx(x[:40], y[:40], np.arange(0, 40, 2))
    rest = query(strategy, small, 20)
    assert sorted(rest.tolist()) == list(range(1, 40, 2))
    with pytest.raises(ValueError, match="a query of 21 samples with 20 unlabelled samples left in the pool of 40"):
        query(strategy, small, 21)


def test_entropy_and_margin_match_hand_computed_values_and_rank_ties_by_index():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.5, 0.0, 0.5]])
    assert entropy_scores(p) == pytest.approx([np.log(2), 0.0, -(0.2 * np.log(0.2) + 0.3 * np.log(0.3)
                                                              + 0.5 * np.log(0.5)), np.log(2)])
    assert margin_scores(p) == pytest.approx([0.0, 1.0, 0.2, 0.0])
    ctx = QueryContext(emb=np.zeros((5, 2), np.float32), labeled=np.array([4]), labels=np.array([0]), num_classes=3,
                       head=None, seed=0)
    ctx._cache["probs"] = np.vstack([p, [[1.0, 0.0, 0.0]]])
    assert query("entropy", ctx, 2).tolist() == [2, 0]  # H(0.2, 0.3, 0.5) = 1.03 > log 2; sample 4 is labelled
    assert query("margin", ctx, 3).tolist() == [0, 3, 2]  # margins 0, 0 (tie: lower index first), 0.2


def test_entropy_order_is_the_hand_computed_one():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.2, 0.3, 0.5], [0.5, 0.0, 0.5]])
    h = entropy_scores(p)
    assert h[2] > h[0] == h[3] > h[1]  # 1.0297 > 0.6931 = 0.6931 > 0
    ctx = QueryContext(emb=np.zeros((4, 2), np.float32), labeled=np.zeros(0, np.int64), labels=np.zeros(0, np.int64),
                       num_classes=3, head=None, seed=0)
    ctx._cache["probs"] = p
    assert query("entropy", ctx, 3).tolist() == [2, 0, 3]


def test_badge_gradient_embedding_and_kmeanspp_by_hand():
    import torch

    net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    from uslkit.active.head import Head

    head = Head(net, HeadConfig(kind="linear"), 2)
    g = head.grad_embedding(np.array([[3.0, 4.0]]))  # normalised to h = (0.6, 0.8); logits (0.6, 0)
    p = np.exp([0.6, 0.0]) / np.exp([0.6, 0.0]).sum()
    want = np.outer(p - [1, 0], [0.6, 0.8]).ravel()
    assert g[0] == pytest.approx(want)
    # k-means++: the largest norm first; a row equal to a chosen one is never drawn
    rows = np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 0.0], [0.0, 1.0]])
    picks = badge_kmeanspp(rows, 3, seed=0)
    assert picks[0] == 1 and 2 not in picks.tolist() and sorted(picks.tolist()) == [0, 1, 3]
    same = np.ones((4, 2))
    assert badge_kmeanspp(same, 3, seed=0).tolist() == [0, 1, 2]  # all coincide: lowest unchosen index
    # the factored form (rows a_i outer h_i never formed) picks the same rows
    rng = np.random.default_rng(0)
    a, h = rng.normal(size=(300, 4)), rng.normal(size=(300, 6))
    a[100:110], h[100:110] = a[0], h[0]  # rows coinciding with row 0
    g = (a[:, :, None] * h[:, None, :]).reshape(300, -1)
    for seed in range(3):
        assert badge_kmeanspp_factored(a, h, 40, seed=seed).tolist() == badge_kmeanspp(g, 40, seed=seed).tolist()
    assert badge_kmeanspp_factored(np.ones((4, 2)), np.ones((4, 3)), 3, seed=0).tolist() == [0, 1, 2]
    fa, fh = head.grad_factors(np.array([[3.0, 4.0]]))
    assert np.outer(fa[0], fh[0]).ravel() == pytest.approx(want)


def test_head_is_seeded_and_the_same_on_any_thread_count(digits):
    import torch

    x, y, _, _ = digits
    a = train_head(x[:50], y[:50], num_classes=10, seed=3, epochs=10).probs(x[:200])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        b = train_head(x[:50], y[:50], num_classes=10, seed=3, epochs=10).probs(x[:200])
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(a, b) and torch.get_num_threads() == threads
    c = train_head(x[:50], y[:50], num_classes=10, seed=4, epochs=10).probs(x[:200])
    assert not np.array_equal(a, c)
    with pytest.raises(ValueError, match="an MLP head needs at least 2 labelled samples"):
        train_head(x[:1], y[:1], num_classes=10)
    assert train_head(x[:1], y[:1], num_classes=10, preset="linear", epochs=2).probs(x[:3]).shape == (3, 10)
    with pytest.raises(ValueError, match="unknown head parameter"):
        train_head(x[:5], y[:5], num_classes=10, width=3)


def test_loop_records_rounds_and_writes_labels_files(digits, tmp_path):
    x, y, tx, ty = digits
    res = run_active(x, y, strategy="margin", schedule=[10, 20, 40], start="kmeans", test_emb=tx, test_labels=ty,
                     out_dir=tmp_path / "run", progress=False, head_params={"epochs": 20})
    assert [r["labeled"] for r in res.rounds] == [10, 20, 40] and res.labeled.size == 40
    assert len(set(res.labeled.tolist())) == 40 and np.array_equal(res.labels, y[res.labeled])
    assert all(0 <= r["test_acc"] <= 1 for r in res.rounds) and res.rounds[-1]["test_acc"] > 0.6
    assert res.rounds[0]["method"] == "kmeans" and res.rounds[1]["method"] == "margin"
    last = load_selection(tmp_path / "run" / "round_02.json")
    assert last.labeled_indices(include_before=True).tolist() == res.labeled.tolist()
    assert last.labels == y[last.indices].tolist() and last.budget == 20 and last.method == "margin"
    saved = json.loads((tmp_path / "run" / "rounds.json").read_text())
    assert saved["params"]["schedule"] == [10, 20, 40] and len(saved["rounds"]) == 3


@pytest.mark.parametrize("strategy", ["badge", "probcover"])  # probcover: its ball graph is kept per run
def test_a_stopped_run_resumes_to_the_rounds_of_an_uninterrupted_one(digits, tmp_path, monkeypatch, strategy):
    import functools

    x, y, tx, ty = digits
    kw = dict(strategy=strategy, schedule=[10, 20, 30, 40], start="random", seed=5, test_emb=tx, test_labels=ty,
              progress=False, head_params={"epochs": 20})
    full = run_active(x, y, out_dir=tmp_path / "a", **kw)
    from uslkit.active import strategies

    calls = {"n": 0}
    real = strategies.STRATEGIES[strategy]

    @functools.wraps(real)
    def stop_at_third(ctx, batch, **p):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stopped during the query of round 2
        return real(ctx, batch, **p)

    monkeypatch.setitem(strategies.STRATEGIES, strategy, stop_at_third)
    with pytest.raises(KeyboardInterrupt):
        run_active(x, y, out_dir=tmp_path / "b", **kw)
    monkeypatch.setitem(strategies.STRATEGIES, strategy, real)
    again = run_active(x, y, out_dir=tmp_path / "b", **kw)
    assert again.resumed_from == 2
    strip = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in full.rounds]
    assert [{k: v for k, v in r.items() if not k.endswith("_s")} for r in again.rounds] == strip
    assert np.array_equal(again.labeled, full.labeled)
    assert run_active(x, y, out_dir=tmp_path / "b", **kw).resumed_from == 4  # finished: read back, nothing run


def test_bad_input_is_a_clear_error(digits, tmp_path):
    x, y, tx, ty = digits
    with pytest.raises(ValueError, match="unknown strategy 'entropi'"):
        run_active(x, y, strategy="entropi", schedule=[10, 20], progress=False)
    with pytest.raises(ValueError, match="schedule must be increasing"):
        run_active(x, y, strategy="entropy", schedule=[20, 10], progress=False)
    with pytest.raises(ValueError, match="up to the pool size 1200"):
        run_active(x, y, strategy="entropy", schedule=[10, 5000], progress=False)
    with pytest.raises(ValueError, match="oracle_labels has shape"):
        run_active(x, y[:10], strategy="entropy", schedule=[10], progress=False)
    run_active(x, y, strategy="entropy", schedule=[10, 20], out_dir=tmp_path / "r", progress=False,
               head_params={"epochs": 2})
    with pytest.raises(FileExistsError, match=r"other parameters \(differing: \['strategy'\]\)"):
        run_active(x, y, strategy="margin", schedule=[10, 20], out_dir=tmp_path / "r", progress=False,
                   head_params={"epochs": 2})
    res = run_active(x, y, strategy="margin", schedule=[10, 20], out_dir=tmp_path / "r", progress=False,
                     head_params={"epochs": 2}, overwrite=True)
    assert res.resumed_from == 0 and res.rounds[1]["method"] == "margin"


def test_paper_schedule_is_paper_003s_cifar10_steps():
    assert paper_schedule(2000) == [20, 40, 60, 80, 100, 200, 300, 400, 500, 1000, 1500, 2000]
    assert paper_schedule(100) == [20, 40, 60, 80, 100]


def test_command_line_runs_resumes_and_names_bad_options(tmp_path, capsys):
    from uslkit.cli import main

    def run(*argv):
        return main(["active", *argv])

    for split, pca in (("fit", 16), ("test", 16), ("test", 8)):
        assert main(["embed", "--dataset", "digits", "--split", split, "--encoder", "pixels", "--pca", str(pca),
                     "--out", str(tmp_path / f"{split}{pca}.npy"), "-q"]) == 0
    pool, test = str(tmp_path / "fit16.npy"), str(tmp_path / "test16.npy")
    out = str(tmp_path / "run")
    base = ["--emb", pool, "--test-emb", test, "--strategy", "entropy", "--start", "kmeans", "-q",
            "--head-param", "epochs=20"]
    common = [*base, "--out", out]
    assert run(*common, "--schedule", "10", "20") == 0
    first = capsys.readouterr().out
    assert "2 rounds of entropy (start kmeans, seed 0)" in first and "%" in first
    assert run(*common, "--schedule", "10", "20", "30") == 2  # another schedule: another run, refused
    assert "other parameters (differing: ['schedule'])" in capsys.readouterr().err
    assert run(*common, "--schedule", "10", "20") == 0
    assert "resumed after round 1 of 2" in capsys.readouterr().out
    sel = load_selection(tmp_path / "run" / "round_01.json")
    assert sel.dataset == "digits" and len(sel.labeled_before) == 10 and sel.budget == 10 and sel.class_names
    bad = {("--schedule", "20", "10"): "--schedule must be increasing",
           ("--schedule", "10", "--max-labels", "40"): "give either --schedule",
           ("--schedule", "10", "99999"): "--schedule goes up to 99999 labels but the pool has 1442 samples",
           ("--schedule", "10", "--finetune-param", "mode=full"): "--finetune-param needs --finetune MODEL.pt",
           ("--schedule", "10", "--finetune", str(tmp_path / "no.pt")): "no such checkpoint",
           ("--schedule", "10", "--finetune", pool): "--finetune replaces the head: drop --head-preset"}
    for extra, msg in bad.items():
        assert run(*base, "--out", str(tmp_path / "x"), *extra) == 2
        assert msg in capsys.readouterr().err
    assert run("--emb", pool, "--test-emb", str(tmp_path / "test8.npy"), "--strategy", "entropy", "--schedule", "10",
               "--out", str(tmp_path / "y")) == 2
    err = capsys.readouterr().err
    assert "--test-emb" in err and "same dataset and encoder" in err
    assert run("--emb", pool, "--strategy", "entropi", "--schedule", "10", "--out", str(tmp_path / "z")) == 2
    assert "--strategy 'entropi' is not one of" in capsys.readouterr().err


def test_ntk_kernel_is_the_jacobian_product_of_the_head_at_initialisation():
    """The closed form equals grad f(x) . grad f(x') from autograd, averaged over the outputs (eq. 2)."""
    import torch

    from uslkit.active.ntk import InitMLP

    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 4))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = InitMLP(4, 16, 3, seed=1)
    params = {k: v.detach().double() for k, v in m.net.named_parameters()}
    buffers = {k: v.double() for k, v in m.net.named_buffers()}
    net = m.net.double()

    def f(p, xi):
        return torch.func.functional_call(net, {**p, **buffers}, (xi[None],))[0]

    jac = torch.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, torch.tensor(x))
    j = torch.cat([jac[k].reshape(6, 3, -1) for k in params], dim=2).numpy()
    want = np.einsum("ncp,mcp->nm", j, j) / 3
    assert m.kernel(x) == pytest.approx(want, rel=1e-10, abs=1e-10)
    assert m.outputs(x) == pytest.approx(net(torch.tensor(x)).detach().numpy(), abs=1e-10)
    assert m.kernel(x[:2], x[2:]) == pytest.approx(want[:2, 2:], abs=1e-10)


def test_ntk_regression_predicts_what_a_wide_trained_head_predicts():
    """Eq. 3 at convergence against the same head, 2048 wide, trained to zero squared error by gradient descent."""
    import torch

    from uslkit.active.ntk import InitMLP, ntk_regression

    rng = np.random.default_rng(0)
    xt, xe = rng.normal(size=(10, 5)), rng.normal(size=(20, 5))
    xt /= np.linalg.norm(xt, axis=1, keepdims=True)
    xe /= np.linalg.norm(xe, axis=1, keepdims=True)
    yt = rng.normal(size=(10, 1))
    model = InitMLP(5, 2048, 1, seed=0)
    pred = ntk_regression(model, xt, yt, xe)
    net = model.net.double()
    opt = torch.optim.SGD(net.parameters(), lr=1.5 / np.linalg.eigvalsh(model.kernel(xt)).max())
    xt_, yt_ = torch.tensor(xt), torch.tensor(yt)
    for _ in range(20000):
        loss = 0.5 * ((net(xt_) - yt_) ** 2).sum()
        if loss.item() < 1e-10:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    got = net(torch.tensor(xe)).detach().numpy()
    assert loss.item() < 1e-8
    assert np.abs(got - pred).max() < 0.03 * np.abs(pred).max()  # the finite width's deviation, small
    assert np.corrcoef(got.ravel(), pred.ravel())[0, 1] > 0.999
    assert np.abs(got - model.outputs(xe)).max() > 0.3  # training moved it: the comparison is not trivial


def _blobs(centres, sizes, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(c, float) + spread * rng.normal(size=(s, 2)) for c, s in zip(centres, sizes)])


def test_cpl_splits_the_cluster_with_the_most_confusing_samples_first():
    """Alg. 2 on a constructed case: three far blobs; blob 1 is two sub-blobs predicted as two classes (4 of 10
    confusing), blob 2 two sub-blobs half and half (3 of 6), blob 0 one class (0 of 10)."""
    from uslkit.active.cpl import cpl_labels

    x = _blobs([(0, 0), (10, 0), (10, 1), (20, 0), (20, 1)], [10, 6, 4, 3, 3], spread=0.02)
    pred = np.array([0] * 10 + [1] * 6 + [2] * 4 + [3] * 3 + [4] * 3)
    lab, y = np.array([0, 10, 20]), np.array([0, 1, 3])
    base = cpl_labels(x, pred, lab, y, n_clusters=3, c0=3)
    blob = {0: base[0], 1: base[10], 2: base[20]}
    assert len(set(blob.values())) == 3 and (base[:10] == blob[0]).all() and (base[10:20] == blob[1]).all()
    four = cpl_labels(x, pred, lab, y, n_clusters=4, c0=3)
    assert set(four[10:16]) != set(four[16:20]) and (four[:10] == four[0]).all() and (four[20:] == four[20]).all()
    assert sorted({int(four[10]), int(four[16])}) == sorted({int(blob[1]), 3})  # blob 1 split, new id 3
    five = cpl_labels(x, pred, lab, y, n_clusters=5, c0=3)
    assert five[20:23].tolist() != five[23:26].tolist() and len(set(five[20:26].tolist())) == 2  # then blob 2
    assert (five[:10] == five[0]).all() and len(np.unique(five)) == 5
    # c0 may exceed n_clusters: the constrained clustering alone
    assert len(np.unique(cpl_labels(x, pred, lab, y, n_clusters=3, c0=5))) == 3


def _risk_case(seed=0, c=40, k=4):
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(c, 6))
    r = g @ g.T / 6 + 0.1 * np.eye(c)  # a posterior kernel: symmetric positive definite
    f = rng.normal(size=(c, k)) * 0.5
    target = rng.integers(0, k, size=c)
    return f, r, target


def test_pruned_risks_equal_the_brute_force_count():
    from uslkit.active.ntkcpl import _risks

    for seed in range(5):
        f, r, target = _risk_case(seed)
        s = np.diag(r) + 1e-3
        e = np.eye(f.shape[1])[target] - f
        avail = np.ones(len(f), dtype=bool)
        avail[[3, 7]] = False
        got = _risks(f, r, s, e, target, avail, chunk=7)
        for i in range(len(f)):
            if not avail[i]:
                assert got[i] == np.inf
                continue
            new = f + np.outer(r[:, i] / s[i], e[i])
            assert got[i] == (new.argmax(1) != target).sum(), (seed, i)


def test_greedy_updates_equal_refitting_the_kernel_regression_with_the_picks():
    """After NTKCPL's greedy picks, the rank-one-updated predictions and posterior kernel are those of kernel
    regression refitted on the labelled samples plus the picks with their targets."""
    from uslkit.active.ntk import InitMLP
    from uslkit.active.ntkcpl import _posterior, greedy_min_risk

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 5))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    target = rng.integers(0, 3, size=60)
    model = InitMLP(5, 32, 3, seed=0)
    lab, cand = np.arange(8), np.arange(8, 60)
    y = np.eye(3)[target]
    f, r, ridge = _posterior(model, x[lab], y[lab], x[cand], 1e-6)
    picks = greedy_min_risk(f, r, ridge, target[cand], 5)
    assert len(set(picks)) == 5
    new_lab = np.concatenate([lab, cand[picks]])
    ridge_lab = 1e-6 * float(np.mean(np.diag(model.kernel(x[lab]))))
    k_ll = model.kernel(x[new_lab]) + ridge_lab * np.eye(len(new_lab))
    k_cl = model.kernel(x[cand], x[new_lab])
    want_f = model.outputs(x[cand]) + k_cl @ np.linalg.solve(k_ll, y[new_lab] - model.outputs(x[new_lab]))
    want_r = model.kernel(x[cand]) - k_cl @ np.linalg.solve(k_ll, k_cl.T)
    assert f == pytest.approx(want_f, abs=1e-6)
    assert r == pytest.approx(want_r, abs=1e-6)
    # the first pick is the one of least risk, found by refitting for every candidate
    f0, r0, _ = _posterior(model, x[lab], y[lab], x[cand], 1e-6)
    risks, sq = [], []
    for i in range(len(cand)):
        l2 = np.concatenate([lab, cand[[i]]])
        k2 = model.kernel(x[l2]) + ridge_lab * np.eye(len(l2))
        pred = model.outputs(x[cand]) + model.kernel(x[cand], x[l2]) @ np.linalg.solve(
            k2, y[l2] - model.outputs(x[l2]))
        risks.append(int((pred.argmax(1) != target[cand]).sum()))
        sq.append(float(((y[cand] - pred) ** 2).sum()))
    risks, sq = np.asarray(risks), np.asarray(sq)
    ties = np.flatnonzero(risks == risks.min())
    assert ties.size > 1  # the case the tie-break is for
    assert picks[0] == int(ties[np.argmin(sq[ties])])


def test_effective_budget_ratio_by_hand():
    from uslkit.active import effective_budget_ratio, gain_over

    rows = []
    for seed, (r20, r40) in enumerate([(0.50, 0.60), (0.54, 0.64)]):  # random: means 0.52, 0.62; std 0.028
        rows += [{"strategy": "random", "seed": seed, "labeled": 20, "test_acc": r20},
                 {"strategy": "random", "seed": seed, "labeled": 40, "test_acc": r40}]
    rows += [{"strategy": "a", "seed": 0, "labeled": 20, "test_acc": 0.56},   # 0.56 > 0.548: effective
             {"strategy": "a", "seed": 0, "labeled": 40, "test_acc": 0.64},   # 0.64 < 0.648: not
             {"strategy": "b", "seed": 0, "labeled": 20, "test_acc": 0.40}]
    ebr = effective_budget_ratio(rows)
    assert ebr["a"] == {"ratio": 0.5, "effective": [20], "budgets": [20, 40]}
    assert ebr["b"]["ratio"] == 0.0 and ebr["b"]["budgets"] == [20] and "random" not in ebr
    gains = {(g["strategy"], g["labeled"]): g["gain"] for g in gain_over(rows)}
    assert gains[("a", 20)] == pytest.approx(0.04) and gains[("b", 20)] == pytest.approx(-0.12)
    with pytest.raises(ValueError, match="no rows of the baseline strategy 'random'"):
        effective_budget_ratio([r for r in rows if r["strategy"] != "random"])
    # round 0 is the shared start and left out, unless a strategy started from its own first round
    staged = [dict(r, round=0 if r["labeled"] == 20 else 1, start="random") for r in rows if r["strategy"] != "b"]
    assert effective_budget_ratio(staged)["a"] == {"ratio": 0.0, "effective": [], "budgets": [40]}
    own = [dict(r, start="ntkcpl") if r["strategy"] == "a" else r for r in staged]
    assert effective_budget_ratio(own)["a"] == {"ratio": 0.5, "effective": [20], "budgets": [20, 40]}


def test_study_runs_every_strategy_and_seed_and_resumes(digits, tmp_path):
    from uslkit.active import run_study

    x, y, tx, ty = digits
    kw = dict(strategies=["random", "ntkcpl"], seeds=[0, 1], schedule=[10, 20], test_emb=tx, test_labels=ty,
              work_dir=tmp_path, strategy_params={"ntkcpl": {"candidates": 300}}, head_params={"epochs": 10},
              progress=False)
    rows = run_study(x, y, **kw)
    assert len(rows) == 8 and {(r["strategy"], r["seed"]) for r in rows} == {(s, k) for s in ("random", "ntkcpl")
                                                                             for k in (0, 1)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["random_ntkcpl_s0", "random_ntkcpl_s1", "random_random_s0",
                                                          "random_random_s1"]
    again = run_study(x, y, **kw)
    strip = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]
    assert [{k: v for k, v in r.items() if not k.endswith("_s")} for r in again] == strip
    own = run_study(x, y, **dict(kw, seeds=[0], starts={"ntkcpl": "ntkcpl"},
                                 start_params={"ntkcpl": {"candidates": 300}}))
    assert {(r["strategy"], r["start"]) for r in own} == {("random", "random"), ("ntkcpl", "ntkcpl")}
    assert (tmp_path / "ntkcpl_ntkcpl_s0" / "round_00.json").exists()


def test_cpl_keeps_labelled_classes_apart_and_together():
    from uslkit.active.cpl import cop_kmeans_cannot_link, cpl_labels

    x = _blobs([(0, 0), (5, 0)], [20, 20])
    lab, y = np.array([0, 1, 2, 25]), np.array([0, 7, 9, 9])  # classes 0 and 7 in blob A; class 9 in both blobs
    zeros = np.zeros(40, dtype=np.int64)
    cl = cpl_labels(x, zeros, lab, y, n_clusters=3, c0=3, constraint="class")
    assert cl[0] != cl[1] and cl[0] != cl[2] and cl[1] != cl[2] and cl[2] == cl[25]  # one cluster per class
    cl = cpl_labels(x, zeros, lab, y, n_clusters=4, c0=4)  # cannot-link only: class 9 may take two clusters
    assert cl[0] != cl[1] and cl[0] != cl[2] and cl[1] != cl[2] and cl[2] != cl[25]
    with pytest.raises(ValueError, match="3 labelled classes cannot be kept apart in 2 clusters"):
        cpl_labels(x, zeros, lab, y, n_clusters=2, c0=2)
    with pytest.raises(ValueError, match="constraint must be"):
        cpl_labels(x, zeros, lab, y, n_clusters=3, c0=3, constraint="must")
    # many labelled samples of few classes in few clusters: every cluster holds at most one labelled class
    rng = np.random.default_rng(0)
    x2 = rng.normal(size=(200, 2))
    lab2 = np.arange(0, 200, 5)
    y2 = rng.integers(0, 4, size=lab2.size)
    cl2 = cop_kmeans_cannot_link(x2, 4, lab2, y2, seed=0)
    for j in range(4):
        assert len(set(y2[cl2[lab2] == j].tolist())) <= 1


def test_ntkcpl_first_round_takes_a_member_of_every_cluster():
    """Alg. 1 with no labels: K-means pseudo-labels into ``budget`` clusters, then the greedy 0-1 risk. Five
    well-separated blobs of unequal size: one pick per blob."""
    from uslkit.active.ntkcpl import REG
    from uslkit.select import select, select_ntkcpl

    rng = np.random.default_rng(0)
    centres = 4.0 * np.eye(8)[:5]
    sizes = [30, 60, 90, 45, 75]
    x = np.concatenate([c + 0.3 * rng.normal(size=(s, 8)) for c, s in zip(centres, sizes)]).astype(np.float32)
    blob = np.repeat(np.arange(5), sizes)
    from uslkit.cluster import kmeans

    clusters = kmeans(x, 5, seed=2, niter=100)[0]  # random-point starts find the blobs at seed 2 (not at 0)
    assert all(np.unique(clusters[blob == b]).size == 1 for b in range(5)) and np.unique(clusters).size == 5
    idx = select("ntkcpl", x, 5, seed=2, candidates=10_000)
    assert sorted(blob[idx].tolist()) == [0, 1, 2, 3, 4]
    assert blob[idx[0]] == 2  # the first pick fixes the most candidates: a member of the largest blob
    assert np.array_equal(idx, select("ntkcpl", x, 5, seed=2))  # seeded
    import inspect

    assert inspect.signature(select_ntkcpl).parameters["reg"].default == REG  # one default for both rounds
    with pytest.raises(ValueError, match="candidates=3 is smaller than the budget 5"):
        select("ntkcpl", x, 5, candidates=3)


def test_a_run_records_the_options_its_strategy_and_start_ran_with(digits, tmp_path):
    """Defaults are written out, so a run made under other defaults is another run; an unknown option is named."""
    from uslkit.active.strategies import strategy_options

    x, y, tx, ty = digits
    run_active(x, y, strategy="ntkcpl_self", schedule=[20, 30], start="ntkcpl", out_dir=tmp_path / "r",
               strategy_params={"candidates": 300}, start_params={"candidates": 300}, head_params={"epochs": 2},
               progress=False)
    params = json.loads((tmp_path / "r" / "rounds.json").read_text())["params"]
    assert params["strategy_params"] == {"variant": "self", "candidates": 300, "c_max": None,
                                         "constraint": "cannot-link", "reg": 0.01}
    assert params["start_params"]["candidates"] == 300 and params["start_params"]["reg"] == 0.01
    assert strategy_options("typiclust")["max_clusters"] == 500  # a one-shot strategy: its select method's
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['ridge'\] for strategy 'ntkcpl'; valid: "):
        run_active(x, y, strategy="ntkcpl", schedule=[20, 30], strategy_params={"ridge": 1.0}, progress=False)


def test_the_loop_can_fine_tune_a_pretrained_encoder_each_round(tmp_path):
    """``classifier=FinetuneClassifier(...)``: each round fine-tunes the checkpoint on the labelled images, the
    strategies see its outputs on the pool, the run is scored on the classifier's test set and resumes."""
    from uslkit.active import FinetuneClassifier, FinetunedModel
    from uslkit.data import load_dataset
    from uslkit.embed import embed_dataset
    from uslkit.train import train_simclr

    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    ckpt = tmp_path / "ssl"
    train_simclr(train, steps=2, batch_size=16, seed=0, progress=False, out_dir=ckpt)
    emb = embed_dataset(train, encoder=f"ckpt:{ckpt / 'model.pt'}", progress=False)
    clf = FinetuneClassifier(ckpt / "model.pt", train, test_set=test, epochs=1, samples_per_epoch=40, batch_size=20)
    kw = dict(strategy="badge", schedule=[10, 20], seed=0, classifier=clf, progress=False)
    res = run_active(emb, train.labels, out_dir=tmp_path / "run", **kw)
    assert [r["labeled"] for r in res.rounds] == [10, 20] and all(0 < r["test_acc"] <= 1 for r in res.rounds)
    params = json.loads((tmp_path / "run" / "rounds.json").read_text())["params"]
    assert params["head"]["kind"] == "finetune" and params["head"]["mode"] == "linear"
    again = run_active(emb, train.labels, out_dir=tmp_path / "run", **kw)
    assert again.resumed_from == 2 and np.array_equal(again.labeled, res.labeled)
    model = clf.fit(res.labeled, train.labels[res.labeled], seed=1)
    assert isinstance(model, FinetunedModel) and model.probs(emb).shape == (len(train), 10)
    assert model.probs(emb).sum(1) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="answers for its whole pool"):
        model.features(emb[:5])
    with pytest.raises(ValueError, match="give no head, head_preset, head_params or test_emb"):
        run_active(emb, train.labels, head_preset="linear", **kw)
