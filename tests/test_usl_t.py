"""USL-T (Wang, Lian & Yu 2022, sec. 2.3): losses on hand-computed values, the pick, training on digits, CLI."""

import math

import numpy as np
import pytest
import torch

from uslkit.cli import main
from uslkit.data import load_dataset
from uslkit.labels import load_selection
from uslkit.select import select, select_usl_t, usl_t_pick
from uslkit.train.config import USLTConfig, resolve_config
from uslkit.train.losses import usl_t_global_loss, usl_t_local_loss, usl_t_prob_ema
from uslkit.train.models import build_model, save_model
from uslkit.train.usl_t import USLTHeads, _build_heads, _reseed, train_usl_t

LN2, CE34 = math.log(2.0), -math.log(0.75)  # 0.693147..., 0.287682...


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A tiny kit checkpoint for digits (random cnn_small, 1 input channel): timing and plumbing, not quality."""
    path = tmp_path_factory.mktemp("enc") / "model.pt"
    save_model(path, build_model("cnn_small", 0, in_channels=1, seed=0))
    return path


def _run(ds, enc, budget=10, **kw):
    args = dict(steps=6, batch_size=64, knn_k=5, heads=2, seed=0, progress=False, log_every=1, ckpt_every=3)
    args.update(kw)
    return train_usl_t(ds, enc, budget, **args)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------------ losses
# 4 samples, 2 clusters. Weak softmax: (.9, .1), (.05, .95), (.75, .25), (.99, .01); with tau = 0.85 rows 0, 1, 3
# are confident with pseudo-labels 0, 1, 0 (n_0 = 2, n_1 = 1, n = 3). Strong softmax of the pseudo-label: 1/2,
# 3/4, -, 3/4, so ce = ln 2, -ln 3/4, -, -ln 3/4.
_WEAK = torch.tensor([[math.log(9), 0.0], [0.0, math.log(19)], [math.log(3), 0.0], [math.log(99), 0.0]])
_STRONG = torch.tensor([[0.0, 0.0], [0.0, math.log(3)], [5.0, -5.0], [math.log(3), 0.0]])


@pytest.mark.parametrize("reweight, normalize, expected", [
    ("none", "confident", (LN2 + 2 * CE34) / 3),                   # 0.422837
    ("none", "batch", (LN2 + 2 * CE34) / 4),                       # 0.317128 (eq. 10's 1/n)
    ("inverse", "confident", (1.5 * LN2 + 3 * CE34 + 1.5 * CE34) / 6),  # w = 3/2, 3: 0.389048
    ("inverse", "batch", (1.5 * LN2 + 3 * CE34 + 1.5 * CE34) / 4),      # 0.583573
    ("balanced", "batch", (0.75 * LN2 + 1.5 * CE34 + 0.75 * CE34) / 4),  # w / 2 present clusters: 0.291786
    ("balanced", "confident", (1.5 * LN2 + 3 * CE34 + 1.5 * CE34) / 6),  # same as inverse there
])
def test_global_loss_hand_values(reweight, normalize, expected):
    weak = _WEAK.clone().requires_grad_(True)
    strong = _STRONG.clone().requires_grad_(True)
    loss, st = usl_t_global_loss(weak, strong, threshold=0.85, reweight=reweight, normalize=normalize)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert st["mask"].item() == 0.75 and st["pseudo_labels"].tolist() == [0, 1, 0, 0]
    assert st["confident"].tolist() == [True, True, False, True]
    loss.backward()
    assert weak.grad is None  # pseudo-labels carry no gradient
    assert strong.grad[2].abs().sum() == 0  # the unconfident row is not trained


def test_global_loss_the_written_out_numbers():
    got = [usl_t_global_loss(_WEAK, _STRONG, threshold=0.85, reweight=r, normalize=n)[0].item()
           for r, n in (("none", "confident"), ("inverse", "confident"), ("inverse", "batch"))]
    assert got == pytest.approx([0.422837, 0.389048, 0.583573], abs=1e-6)


def test_global_loss_a_probability_equal_to_tau_is_confident():
    # softmax (1/2, 1/2) exactly: confident at tau = 0.5 (eq. 10's >=), not above it; strong view CE = ln 2
    weak, strong = torch.zeros(1, 2), torch.zeros(1, 2)
    loss, st = usl_t_global_loss(weak, strong, threshold=0.5, reweight="none")
    assert st["confident"].tolist() == [True] and loss.item() == pytest.approx(LN2, abs=1e-7)
    _, st = usl_t_global_loss(weak, strong, threshold=0.5000001, reweight="none")
    assert st["confident"].tolist() == [False]


def test_global_loss_without_confident_samples_is_zero_with_a_graph():
    strong = _STRONG.clone().requires_grad_(True)
    loss, st = usl_t_global_loss(_WEAK, strong, threshold=1.0)
    assert loss.item() == 0.0 and loss.requires_grad and st["mask"].item() == 0.0


def test_local_loss_hand_values():
    anchor = torch.zeros(1, 2)  # softmax (1/2, 1/2)
    nb = torch.tensor([[math.log(3), 0.0]])  # softmax (3/4, 1/4)
    # alpha 0, t 1/2: target softmax(2 ln 3, 0) = (9/10, 1/10); KL = .9 ln 1.8 + .1 ln .2 = 0.368064
    uniform = torch.tensor([0.5, 0.5])
    assert usl_t_local_loss(anchor, nb, uniform, alpha=0.0, temperature=0.5).item() == pytest.approx(0.368064, abs=1e-6)
    # a uniform EMA shifts every logit equally: no effect whatever alpha (appendix eqs. 56-62)
    assert usl_t_local_loss(anchor, nb, uniform, alpha=5.0, temperature=0.5).item() == pytest.approx(0.368064, abs=1e-6)
    # an EMA equal to the neighbour's own softmax cancels it (alpha 1, eqs. 49-54): target uniform, KL 0
    ema = torch.tensor([0.75, 0.25])
    assert usl_t_local_loss(anchor, nb, ema, alpha=1.0, temperature=0.5).item() == pytest.approx(0.0, abs=1e-7)
    # ... and against anchor softmax (1/4, 3/4): .5 ln 2 + .5 ln 2/3 = 0.143841
    anchor2 = torch.tensor([[0.0, math.log(3)]])
    assert usl_t_local_loss(anchor2, nb, ema, alpha=1.0, temperature=1.0).item() == pytest.approx(0.143841, abs=1e-6)
    # batch mean over two rows: (0.368064 + 0) / 2
    two = usl_t_local_loss(torch.zeros(2, 2), torch.tensor([[math.log(3), 0.0], [0.0, 0.0]]), uniform, alpha=0.0,
                           temperature=0.5)
    assert two.item() == pytest.approx(0.184032, abs=1e-6)
    a = anchor.clone().requires_grad_(True)
    b = nb.clone().requires_grad_(True)
    usl_t_local_loss(a, b, uniform, alpha=0.0, temperature=0.5).backward()
    assert b.grad is None and a.grad.abs().sum() > 0  # the neighbour's target carries no gradient


def test_prob_ema_hand_values():
    prev = torch.tensor([0.5, 0.5])
    assert usl_t_prob_ema(prev, torch.tensor([0.9, 0.1]), mu=0.5).tolist() == pytest.approx([0.7, 0.3])
    assert usl_t_prob_ema(prev, torch.tensor([0.9, 0.1]), mu=0.25).tolist() == pytest.approx([0.6, 0.4])
    # renormalised like the reference: (0.5 (0, 2) + 0.5 (1, 1)) / 2 = (0.25, 0.75)
    assert usl_t_prob_ema(torch.ones(2), torch.tensor([0.0, 2.0])).tolist() == pytest.approx([0.25, 0.75])
    with pytest.raises(ValueError, match="mu"):
        usl_t_prob_ema(prev, prev, mu=0.0)


def test_loss_arguments_are_checked():
    with pytest.raises(ValueError, match="reweight"):
        usl_t_global_loss(_WEAK, _STRONG, reweight="sqrt")
    with pytest.raises(ValueError, match="shape"):
        usl_t_global_loss(_WEAK, _STRONG[:2])
    with pytest.raises(ValueError, match="temperature"):
        usl_t_local_loss(_WEAK, _STRONG, torch.full((2,), 0.5), temperature=0.0)


# ------------------------------------------------------------------------------------------------------ pick
def _probs(clusters, conf, k):
    """One-hot-ish (n, K) probabilities: ``conf[i]`` on ``clusters[i]``, the rest spread evenly."""
    n = len(clusters)
    p = np.tile((1 - np.asarray(conf, dtype=float))[:, None] / (k - 1), (1, k))
    p[np.arange(n), clusters] = conf
    return p


def test_pick_most_confident_per_cluster_then_fill_from_the_largest():
    # cluster 0: samples 0, 1, 2, 3, 6 (5 members); cluster 1: 4, 5; cluster 2 empty
    clusters = [0, 0, 0, 0, 1, 1, 0]
    conf = [0.5, 0.9, 0.7, 0.6, 0.8, 0.95, 0.4]
    p = _probs(clusters, conf, 3)
    idx, info = usl_t_pick(p, 2, return_info=True)
    assert idx.tolist() == [1, 5] and info == {"filled": 0, "empty_clusters": 1, "clusters": 3, "head": 0}
    # budget 4: one empty cluster + one more; fills from cluster 0 (5/2, then 5/3 > 2/2 of cluster 1)
    idx, info = usl_t_pick(p, 4, return_info=True)
    assert idx.tolist() == [1, 5, 2, 3] and info["filled"] == 2
    # budget 6: 5/4 > 1, then a 5/5 = 2/2 tie goes to the lower cluster index
    assert usl_t_pick(p, 6).tolist() == [1, 5, 2, 3, 0, 6]
    # more clusters than budget: the largest cluster's pick only
    assert usl_t_pick(p, 1).tolist() == [1]


def test_pick_confidence_is_the_mean_over_heads_and_clusters_come_from_one_head():
    p0 = _probs([0, 0, 1, 1], [0.9, 0.8, 0.7, 0.6], 2)
    p1 = _probs([1, 1, 0, 0], [0.5, 0.99, 0.9, 0.95], 2)  # another head, its own cluster numbering
    idx, scores = usl_t_pick(np.stack([p0, p1]), 2, return_scores=True)
    assert scores.tolist() == pytest.approx([0.7, 0.895, 0.8, 0.775])
    assert idx.tolist() == [1, 2]  # head 0's clusters {0, 1} and {2, 3}, by the mean confidence
    assert usl_t_pick(np.stack([p0, p1]), 2, head=1).tolist() == [2, 1]


def test_pick_collapsed_head_and_budget_equal_to_pool():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=(3, 50)).astype(np.float32)
    probs[0, :, :] = 0.01
    probs[0, :, 3] = 0.91  # head 0 puts every sample in cluster 3
    idx, info = usl_t_pick(probs, 10, return_info=True)
    assert idx.shape == (10,) and idx.dtype == np.int64 and np.unique(idx).size == 10
    assert info["filled"] == 9 and info["empty_clusters"] == 9
    conf = probs.max(axis=2).mean(axis=0)
    assert set(idx.tolist()) == set(np.argsort(-conf, kind="stable")[:10].tolist())
    full = usl_t_pick(probs[:, :12, :], 12)  # budget = pool
    assert sorted(full.tolist()) == list(range(12))


def test_pick_seed_breaks_exact_ties_only():
    flat = np.full((2, 30, 5), 0.2)  # every sample ties in cluster 0
    a, b = usl_t_pick(flat, 5, seed=0), usl_t_pick(flat, 5, seed=1)
    assert np.array_equal(a, usl_t_pick(flat, 5, seed=0)) and not np.array_equal(a, b)
    p = _probs([0, 0, 1, 1], [0.9, 0.8, 0.7, 0.6], 2)
    assert usl_t_pick(p, 2, seed=0).tolist() == usl_t_pick(p, 2, seed=7).tolist() == [0, 2]


def test_pick_bad_input():
    p = np.full((4, 3), 1 / 3)
    with pytest.raises(ValueError, match="larger than the unlabelled pool of 4"):
        usl_t_pick(p, 5)
    with pytest.raises(ValueError, match="finite"):
        usl_t_pick(np.where(p > 0, np.nan, p), 2)
    with pytest.raises(ValueError, match="head"):
        usl_t_pick(p, 2, head=1)
    with pytest.raises(ValueError, match="shape"):
        usl_t_pick(np.ones(4), 2)


def test_select_points_to_the_entry_point():
    with pytest.raises(ValueError, match="select_usl_t"):
        select("usl_t", np.ones((10, 2)), 2)


# ------------------------------------------------------------------------------------------------------ training
def test_presets_and_explicit_values():
    assert USLTConfig.PRESETS["cifar"].batch_size == 1024 and USLTConfig.PRESETS["cifar"].epochs == 200
    ima = USLTConfig.PRESETS["imagenet"]
    assert (ima.alpha, ima.sharpen_t, ima.local_weight, ima.threshold) == (2.5, 0.5, 0.5, 0.0)
    assert ima.frozen_backbone and ima.cosine_heads and ima.head_init == "features" and ima.reseed
    assert USLTConfig.PRESETS["cpu"].frozen_backbone
    with pytest.raises(ValueError, match="cosine_heads"):
        USLTConfig(head_init="features")
    with pytest.raises(ValueError, match="sharpen_t"):
        USLTConfig(sharpen_t=0)
    # values nothing reads: refused unless they are the defaults (which every preset keeps valid)
    with pytest.raises(ValueError, match=r"^cosine_scale=10.0 has no effect without cosine_heads=True$"):
        USLTConfig(cosine_scale=10.0)
    # re-seeding off on a preset that sets its bounds is fine: they are read only when it is on
    off = resolve_config(USLTConfig, None, "cpu", {"reseed": False})
    assert not off.reseed and off.reseed_after == 234
    assert USLTConfig(cosine_heads=True, cosine_scale=10.0, reseed=True, reseed_after=5).reseed_after == 5
    assert USLTConfig(cosine_scale=40.0, reseed_after=1250, reseed_low=0.25, reseed_high=2.5) == USLTConfig()


@pytest.mark.parametrize("seed", [0, 1])
def test_global_loss_decreases_on_digits(digits, encoder, seed):
    """The clustering objective (eq. 10) falls within a few steps. The local loss is not a fixed objective: its
    target, the neighbour's sharpened prediction, hardens as the heads do, so it rises at first."""
    res = _run(digits, encoder, preset="imagenet", steps=8, lr=1e-3, heads=3, seed=seed)
    g = [h["loss_global"] for h in res.history]
    assert len(g) == 8 and np.mean(g[-3:]) < np.mean(g[:3]) - 0.1


def test_run_saves_probs_and_cluster_history(digits, encoder, tmp_path):
    res = _run(digits, encoder, out_dir=tmp_path / "run", eval_every=3, preset="imagenet", batch_size=32)
    probs = np.load(tmp_path / "run" / "probs.npy")
    assert probs.shape == (2, len(digits), 10) and np.array_equal(probs, res.probs)
    assert np.allclose(probs.sum(axis=2), 1.0, atol=1e-5)
    evals = [h for h in res.history if "cluster_sizes" in h]
    assert [h["step"] for h in evals] == [3, 6]
    for h in evals:
        assert len(h["cluster_sizes"]) == 2 and all(sum(s) == len(digits) for s in h["cluster_sizes"])
        assert len(h["confidence"]) == 2 and all(0.1 <= c <= 1 for c in h["confidence"])
    assert evals[-1]["cluster_sizes"] == [np.bincount(p.argmax(1), minlength=10).tolist() for p in probs]
    assert res.params["budget"] == 10 and len(res.params["encoder"]["sha256"]) == 64


@pytest.mark.parametrize("kw", [{}, {"preset": "imagenet", "reseed_after": 1, "reseed_low": 0.9,
                                      "reseed_high": 1.0}])
def test_resume_after_a_kill_equals_an_uninterrupted_run(digits, encoder, tmp_path, monkeypatch, kw):
    kw = dict(kw, batch_size=32, steps=4, ckpt_every=2)
    ref = _run(digits, encoder, out_dir=tmp_path / "ref", **kw)
    import uslkit.train.usl_t as ut

    real, calls = ut.usl_t_global_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3 * 2 + 1:  # step 3 (2 heads per step), after the checkpoint of step 2
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(ut, "usl_t_global_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(digits, encoder, out_dir=tmp_path / "run", **kw)
    monkeypatch.setattr(ut, "usl_t_global_loss", real)
    saved = np.load(tmp_path / "run" / "neighbours.npy")  # written when the run started
    assert saved.shape == (len(digits), 5) and saved.dtype == np.int64
    if not kw.get("preset"):  # a resume whose recomputed kNN table differs is refused (once is enough)
        import shutil

        shutil.copytree(tmp_path / "run", tmp_path / "moved")
        np.save(tmp_path / "moved" / "neighbours.npy", np.roll(saved, 1, axis=1))
        with pytest.raises(ValueError, match=r"^the kNN neighbours differ from the ones this run started with "
                                             r"\(faiss version/device\?\); "):
            _run(digits, encoder, out_dir=tmp_path / "moved", **kw)
    res = _run(digits, encoder, out_dir=tmp_path / "run", **kw)
    assert res.resumed_from == 2
    assert _same_state(ref.net, res.net)
    assert _same_state(ref.extras["heads"], res.extras["heads"])
    assert _same_state(ref.extras["running"], res.extras["running"])  # p_ema and the re-seeding counts
    assert np.array_equal(ref.probs, res.probs)
    if "preset" in kw:
        assert sum(h.get("reseeded", 0) for h in ref.history) > 0
    again = _run(digits, encoder, out_dir=tmp_path / "run", **kw)  # finished: loaded, not trained
    assert again.reused and np.array_equal(again.probs, ref.probs)


def test_reseed_moves_the_smallest_centroid_onto_the_largest():
    cfg = USLTConfig(cosine_heads=True, reseed=True, reseed_low=0.25, reseed_high=2.0)
    heads = USLTHeads(4, 3, 1, cosine=True, scale=40.0)
    w = heads.heads[0].weight.detach().clone()
    counts = torch.tensor([[10.0, 500.0, 90.0]])  # n = 600, 3 clusters: mean 200, bounds 50 and 400
    assert _reseed(heads, counts, 600, cfg, seed=0, step=5) == 1
    new = heads.heads[0].weight.detach()
    assert torch.allclose(new[0], w[1], atol=1e-6) and torch.allclose(new[1], w[1], atol=1e-6)
    assert not torch.equal(new[0], new[1]) and torch.equal(new[2], w[2])
    assert counts.tolist() == [[250.0, 250.0, 90.0]]
    assert _reseed(heads, counts, 600, cfg, seed=0, step=6) == 0  # 90 is not below 50


def test_heads_initialised_from_sample_features():
    pool = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    heads = _build_heads(USLTConfig(cosine_heads=True, head_init="features"), 4, 5, pool, seed=0)
    for head in heads.heads:
        rows = head.weight.detach().numpy()
        match = [np.flatnonzero((pool == r).all(axis=1)) for r in rows]
        assert all(m.size == 1 for m in match) and len({int(m[0]) for m in match}) == 5


def test_bad_inputs_are_clear_errors(digits, encoder, tmp_path):
    with pytest.raises(ValueError, match="budget 2000 is larger than the unlabelled pool of 1797"):
        _run(digits, encoder, budget=2000)
    rgb = tmp_path / "rgb.pt"
    save_model(rgb, build_model("cnn_small", 0, in_channels=3, seed=0))
    with pytest.raises(ValueError, match="in_channels=3 but digits/train has 1-channel images"):
        _run(digits, rgb)
    with pytest.raises(ValueError, match="feats has 100 rows but digits/train has 1797 samples"):
        _run(digits, encoder, feats=np.ones((100, 8), dtype=np.float32))
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.ones(3)}, bad)
    with pytest.raises(ValueError, match="not a uslkit model checkpoint"):
        _run(digits, bad)
    with pytest.raises(ValueError, match="unknown USL-T parameter"):
        _run(digits, encoder, alhpa=1.0)
    with pytest.raises(ValueError, match=r"^knn_k=1797 is too large for a pool of 1797 images: at most 1796"):
        _run(digits, encoder, knn_k=1797)


def test_select_usl_t_picks_from_the_saved_probabilities(digits, encoder, tmp_path):
    idx, info = select_usl_t(digits, encoder, 10, seed=0, out_dir=tmp_path / "run", steps=3, batch_size=32,
                             knn_k=5, heads=2, progress=False)
    assert idx.shape == (10,) and np.unique(idx).size == 10
    assert np.array_equal(idx, usl_t_pick(np.load(tmp_path / "run" / "probs.npy"), 10, seed=0))
    p = info["params"]
    assert p["filled"] == 10 - info["result"].metrics["nonempty"][0]  # one fill per empty cluster of head 0
    assert p["heads"] == 2 and p["steps"] == 3 and p["encoder"]["sha256"]


def test_select_usl_t_checks_the_head_before_training(digits, encoder, monkeypatch):
    import uslkit.train.usl_t as ut

    def no_training(*a, **k):
        raise AssertionError("trained before checking the head")

    monkeypatch.setattr(ut, "train_usl_t", no_training)
    with pytest.raises(ValueError, match=r"^head must be an integer with 0 <= head < heads=2, got 2$"):
        select_usl_t(digits, encoder, 10, steps=3, heads=2, head=2)
    with pytest.raises(ValueError, match=r"heads=3, got 3$"):  # the preset's heads
        select_usl_t(digits, encoder, 10, preset="cpu", head=3)
    with pytest.raises(ValueError, match=r"got -1$"):
        select_usl_t(digits, encoder, 10, steps=3, head=-1)


def test_explicit_values_beat_the_preset_and_budget_equal_to_the_pool(digits, encoder):
    small = digits.subset(np.arange(48))
    # the cpu preset: tau 0 and 10 epochs; given: tau 0.95 (the default value, still given) and 2 steps
    idx, info = select_usl_t(small, encoder, 48, preset="cpu", threshold=0.95, steps=2, batch_size=16, knn_k=4,
                             heads=2, progress=False)
    p = info["params"]
    assert p["threshold"] == 0.95 and p.get("epochs") is None and p["steps"] == 2 and p["preset"] == "cpu"
    assert info["result"].probs.shape == (2, 48, 48)
    assert sorted(idx.tolist()) == list(range(48))  # budget = n: every sample, each once


# ------------------------------------------------------------------------------------------------------ CLI
def test_cli_select_usl_t_end_to_end(digits, encoder, tmp_path, capsys):
    emb = tmp_path / "emb.npy"
    assert main(["embed", "--dataset", "digits", "--encoder", f"ckpt:{encoder}", "--out", str(emb), "-q"]) == 0
    out = tmp_path / "sel.json"
    argv = ["select", "--method", "usl_t", "--emb", str(emb), "--init", str(encoder), "--budget", "10",
            "--out", str(out), "--preset", "imagenet", "--annotate",
            "--param", "steps=3", "--param", "batch_size=32", "--param", "knn_k=5", "--param", "progress=false"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "class coverage" in capsys.readouterr().out
    sel = load_selection(out, dataset=digits)
    assert sel.method == "usl_t" and sel.budget == 10 and len(set(sel.indices)) == 10
    assert sel.params["preset"] == "imagenet" and sel.params["frozen_backbone"] is True
    assert sel.params["encoder"]["sha256"] and sel.params["filled"] >= 0 and sel.params["steps"] == 3
    assert sel.labels == digits.labels[sel.indices].tolist()
    # no --run-dir: the run folder is --out without its suffix + "_run", checkpointed, with its history and probs
    run = tmp_path / "sel_run"
    assert sel.params["run_dir"] == str(run)
    assert (run / "history.json").is_file() and (run / "config.json").is_file()
    from uslkit._io import read_json
    from uslkit.select.usl_t import FILL_RULE

    evals = [h["step"] for h in read_json(run / "history.json") if "cluster_sizes" in h]
    assert evals == [1, 2, 3]  # no eval_every given: HISTORY_POINTS (10) evaluations at most, one per step here
    assert sel.params["fill_rule"] == FILL_RULE
    probs = np.load(run / "probs.npy")
    assert usl_t_pick(probs, 10, seed=0).tolist() == list(sel.indices)

    # missing --init: one line naming it, before anything is loaded
    assert main(["select", "--method", "usl_t", "--emb", str(emb), "--budget", "10", "--out",
                 str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--init" in err
    # an embedding of another checkpoint
    other = tmp_path / "other.pt"
    save_model(other, build_model("cnn_small", 0, in_channels=1, seed=1))
    assert main(["select", "--method", "usl_t", "--emb", str(emb), "--init", str(other), "--budget", "10",
                 "--out", str(tmp_path / "y.json"), "--param", "steps=3"]) == 2
    assert "embed with --encoder ckpt:" in capsys.readouterr().err
    # --init with another method
    assert main(["select", "--method", "usl", "--emb", str(emb), "--init", str(encoder), "--budget", "10",
                 "--out", str(tmp_path / "z.json")]) == 2
    assert "--init is an option of --method usl_t only" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--param", "budget=5", "--param", "steps=3"], r"^--param budget=\.\.\. is not an option of usl_t; valid: "),
    (["--param", "dataset=x", "--param", "steps=3"], r"^--param dataset=\.\.\. is not an option of usl_t"),
    (["--param", "encoder=m.pt", "--param", "steps=3"], r"^--param encoder=\.\.\. is not an option of usl_t"),
    (["--param", "config=x", "--param", "steps=3"], r"^--param config=\.\.\. is not an option of usl_t"),
    (["--param", "seed=3", "--param", "steps=3"], r"^--param seed=\.\.\. is set by its own option \(--seed\)$"),
    (["--param", "out_dir=r", "--param", "steps=3"], r"^--param out_dir=\.\.\. is set by its own option \(--run-dir"),
    ([], r"^usl_t needs --param steps=N or --param epochs=X \(or a --preset that sets one: cifar, imagenet, cpu\)$"),
    (["--preset", "gpu"], r"^unknown usl_t --preset 'gpu'; valid: cifar, imagenet, cpu$"),
    (["--preset", "cpu", "--param", "head=3"], r"^--param head=3 is not a head: 0 <= head < heads=3$"),
    (["--param", "steps=3", "--param", "threshold=2"], r"^threshold must be <= 1.0, got 2$"),
])
def test_cli_usl_t_bad_params_are_one_line_before_any_data_is_loaded(tmp_path, capsys, extra, message):
    import re

    # the embedding file does not exist: these errors come before it (or the dataset) is read
    argv = ["select", "--method", "usl_t", "--emb", str(tmp_path / "missing.npy"), "--init", "m.pt", "--budget", "10",
            "--out", str(tmp_path / "sel.json"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uslkit: error: ") and "\n" not in err
    assert re.search(message, err[len("uslkit: error: "):]), err


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_share_heads_and_running_state(tmp_path, encoder, torchrun):
    """torchrun --nproc_per_node=2 on CPU (gloo), the ImageNet recipe with re-seeding after 2 steps: both processes
    end with the same heads, p_ema and re-seeding counts (averaged over the global batch), rank 0 writes
    probs.npy of the whole pool."""
    out = torchrun(f"""
        import hashlib, os, sys
        import torch
        from uslkit.data import load_dataset
        from uslkit.train import train_usl_t
        res = train_usl_t(load_dataset("digits", "train"), {str(encoder)!r}, 10, preset="imagenet", steps=4,
                          batch_size=32, knn_k=5, heads=2, reseed_after=2, seed=0, progress=False,
                          out_dir=sys.argv[1], log_every=1)
        tensors = [t for k in sorted(res.extras) for t in res.extras[k].state_dict().values()]
        h = hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in tensors)).hexdigest()
        with open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w") as f:
            f.write(h + " " + " ".join(sorted(res.extras)))
        torch.distributed.destroy_process_group()
    """)
    r0, r1 = (out / "rank0.txt").read_text(), (out / "rank1.txt").read_text()
    assert r0 == r1 and r0.endswith(" heads running")
    probs = np.load(out / "probs.npy")
    assert probs.shape == (2, len(load_dataset("digits", "train")), 10)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)


def test_one_step_wires_the_losses_the_neighbours_and_the_ema_as_configured(digits, encoder, tmp_path, monkeypatch):
    """The training step, not only its parts: each head's local loss gets the anchor's strong logits, the logits
    of ONE OF THE ANCHOR'S kNN NEIGHBOURS, that head's EMA and the configured alpha and T; the optimised loss is
    ``sum_h global_h + local_weight * sum_h local_h``; the EMA then moves by eq. 12 with the configured mu."""
    import uslkit.train.usl_t as ut
    from uslkit.train.batches import StepStream

    cfg = dict(alpha=1.5, sharpen_t=0.3, local_weight=3.0, prob_ema_mu=0.25, threshold=0.0, batch_size=16,
               steps=3, preset="imagenet")
    seen = {"global": [], "local": [], "loss": [], "nb": [], "ema_after": []}
    real_g, real_l, real_loop = ut.usl_t_global_loss, ut.usl_t_local_loss, ut.run_loop
    real_nb = ut._NeighbourStream.batch

    def glob(*a, **k):
        out = real_g(*a, **k)
        seen["global"].append(out[0].detach().clone())
        return out

    def local(anchor, nb, ema, **k):
        assert k == {"alpha": 1.5, "temperature": 0.3}
        out = real_l(anchor, nb, ema, **k)
        seen["local"].append((out.detach().clone(), nb.detach().clone(), ema.detach().clone()))
        return out

    def nb_batch(self, step):
        out = real_nb(self, step)
        seen["nb"].append((StepStream(self.pool, self.batch_size, seed=0, stream=0).batch(step)[0], out[0]))
        return out

    def loop(**kw):
        step_fn = kw["step_fn"]
        running = kw["module"].running

        def wrapped(model, batches, step):
            loss, stats = step_fn(model, batches, step)
            seen["loss"].append(loss.detach().clone())
            seen["ema_after"].append(running.prob_ema.detach().clone())
            return loss, stats
        return real_loop(**{**kw, "step_fn": wrapped})

    monkeypatch.setattr(ut, "usl_t_global_loss", glob)
    monkeypatch.setattr(ut, "usl_t_local_loss", local)
    monkeypatch.setattr(ut, "run_loop", loop)
    monkeypatch.setattr(ut._NeighbourStream, "batch", nb_batch)
    _run(digits, encoder, out_dir=tmp_path / "run", **cfg)
    table = np.load(tmp_path / "run" / "neighbours.npy")
    assert len(seen["loss"]) == 3 and len(seen["global"]) == len(seen["local"]) == 3 * 2
    for step in range(3):
        g = seen["global"][2 * step: 2 * step + 2]
        loc = seen["local"][2 * step: 2 * step + 2]
        assert torch.allclose(seen["loss"][step], sum(g) + 3.0 * sum(x[0] for x in loc), atol=1e-6)
        before = torch.stack([x[2] for x in loc])  # each head's EMA as its local loss saw it
        batch_mean = torch.stack([torch.softmax(x[1].float(), dim=-1).mean(dim=0) for x in loc])
        expect = 0.25 * batch_mean + 0.75 * before
        assert torch.allclose(seen["ema_after"][step], expect / expect.sum(dim=1, keepdim=True), atol=1e-6)
    used = np.zeros(table.shape[1], dtype=bool)
    for anchors, nbs in seen["nb"]:
        hit = table[anchors] == nbs[:, None]
        assert hit.any(axis=1).all()  # every neighbour is one of its anchor's k nearest
        used |= hit.any(axis=0)
    assert used.sum() >= 3  # a random one of the k, not always the nearest


def test_embedding_of_another_pool_is_a_clear_error(digits, encoder, tmp_path):
    from uslkit.select.usl_t import check_embedding_for_encoder

    check_embedding_for_encoder({"dataset": "digits", "split": "train", "n": len(digits)}, digits, encoder)
    for meta, msg in (({"dataset": "fashion_mnist"}, "the embedding is of dataset 'fashion_mnist' but the pool is "
                       "'digits'"), ({"split": "test"}, "the embedding is of split 'test' but the pool is 'train'"),
                      ({"n": 100}, "the embedding is of n 100 but the pool is 1797")):
        with pytest.raises(ValueError, match=f"^{msg}$"):
            check_embedding_for_encoder(meta, digits, encoder)
    other = tmp_path / "other.pt"
    save_model(other, build_model("cnn_small", 0, in_channels=1, seed=1))
    from uslkit._io import file_sha256

    meta = {"encoder": f"ckpt:{other}", "params": {"checkpoint_sha256": file_sha256(other)}}
    check_embedding_for_encoder(meta, digits, other)
    with pytest.raises(ValueError, match=r"^the embedding was made by checkpoint .*other\.pt"):
        check_embedding_for_encoder(meta, digits, encoder)
