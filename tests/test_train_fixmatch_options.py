"""FixMatch's options against confirmation bias (issue 14): distribution alignment, FlexMatch and FreeMatch
thresholds (uslkit.train.pseudo), on hand-computed tiny tensors and a few steps on digits; the default run against
numbers recorded from the code before the options; the pieces the learners share (uslkit.train.semi,
uslkit.train.distributed)."""

import hashlib
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import uslkit.train.fixmatch as fm
from uslkit.data import load_dataset
from uslkit.labels import annotate, make_selection, save_selection
from uslkit.train import FixMatchConfig, train_fixmatch
from uslkit.train.distributed import dist_on, gather_rows, mean_tensor
from uslkit.train.fixmatch import FixMatchModule
from uslkit.train.losses import fixmatch_loss
from uslkit.train.pseudo import (DistributionAlignment, FlexMatchThreshold, FreeMatchThreshold, align_distribution,
                                 flexmatch_learning_effect, flexmatch_thresholds, freematch_fairness_loss)
from uslkit.train.semi import ClassifierModule, PseudoLabelMonitor, labeled_set

LN2, LN3, LN4 = math.log(2), math.log(3), math.log(4)


@pytest.fixture(scope="module")
def train():
    return load_dataset("digits", "train")


@pytest.fixture(scope="module")
def selection(train):
    idx = np.concatenate([np.flatnonzero(train.labels == c)[:4] for c in range(10)])  # 4 per class
    return annotate(make_selection(idx, dataset=train, method="test", seed=0), train)


def _fix(train, sel, **kw):
    args = dict(steps=6, batch_size=8, mu=2, seed=0, progress=False, ckpt_every=3, log_every=2)
    args.update(kw)
    return train_fixmatch(train, sel, **args)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------------- DA
def test_distribution_alignment_by_hand_window_and_targets():
    da = DistributionAlignment(2, window=2, target="uniform")
    # batch 1: mean (0.7, 0.3) = p~; row 1: 0.8*0.3 / (0.8*0.3 + 0.2*0.7) = 0.24 / 0.38
    out = da(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))
    assert torch.allclose(out, torch.tensor([[0.24 / 0.38, 0.14 / 0.38], [0.18 / 0.46, 0.28 / 0.46]]))
    assert torch.allclose(da.p_running(), torch.tensor([0.7, 0.3])) and int(da.seen) == 1
    # batch 2: p~ = mean((0.7, 0.3), (0.5, 0.5)) = (0.6, 0.4); (0.5*0.4, 0.5*0.6) -> (0.4, 0.6)
    assert torch.allclose(da(torch.tensor([[0.5, 0.5]])), torch.tensor([[0.4, 0.6]]))
    # batch 3: the window holds batches 2 and 3 only: p~ = mean((0.5, 0.5), (0.9, 0.1)) = (0.7, 0.3)
    out = da(torch.tensor([[0.9, 0.1]]))
    assert torch.allclose(da.p_running(), torch.tensor([0.7, 0.3]))
    assert torch.allclose(out, torch.tensor([[0.27 / 0.34, 0.07 / 0.34]]))
    # a labelled prior (3, 1) -> (0.75, 0.25): 0.8*0.75/0.7 vs 0.2*0.25/0.3 -> 0.18 / (0.18 + 0.035)
    lab = DistributionAlignment(2, window=128, target=np.array([3, 1]))
    assert torch.allclose(lab.target, torch.tensor([0.75, 0.25]))
    assert torch.allclose(lab(torch.tensor([[0.8, 0.2], [0.6, 0.4]]))[0], torch.tensor([0.18 / 0.215, 0.035 / 0.215]))
    # the pure function; rows sum to 1; the state is buffers only
    q = align_distribution(torch.tensor([[0.2, 0.8]]), torch.tensor([1.0, 1.0]), torch.tensor([0.2, 0.8]))
    assert torch.allclose(q, torch.tensor([[0.5, 0.5]]))
    assert set(da.state_dict()) == {"target", "history", "seen"} and not list(da.parameters())
    with pytest.raises(ValueError, match="target must have shape"):
        DistributionAlignment(3, window=2, target=[1, 1])
    with pytest.raises(ValueError, match="target must be finite, >= 0"):
        DistributionAlignment(2, window=2, target=[0, 0])
    with pytest.raises(ValueError, match="window"):
        DistributionAlignment(2, window=0)
    with pytest.raises(ValueError, match=r"probs must have shape \(n, 2\)"):
        da(torch.ones(3, 4))


# ---------------------------------------------------------------------------------------------------- FlexMatch
def test_flexmatch_thresholds_from_a_hand_made_counter():
    flex = FlexMatchThreshold(10, 3, threshold=0.95, warmup=True)
    assert torch.equal(flex.class_thresholds(), torch.zeros(3))  # nothing confident yet: beta = 0 -> T = 0
    flex.selected[:4] = torch.tensor([0, 0, 0, 1])  # sigma = (3, 1, 0), 6 unused
    sigma, unused = flex.counts()
    assert sigma.tolist() == [3, 1, 0] and unused == 6
    # warm-up: beta = sigma / max(3, 6) = (1/2, 1/6, 0); M(x) = x / (2 - x) = (1/3, 1/11, 0); T = 0.95 M
    assert torch.allclose(flex.class_thresholds(), torch.tensor([0.95 / 3, 0.95 / 11, 0.0]))
    # no warm-up: beta = sigma / 3 = (1, 1/3, 0); M = (1, 1/5, 0)
    flex.warmup = False
    assert torch.allclose(flex.class_thresholds(), torch.tensor([0.95, 0.19, 0.0]))
    assert torch.allclose(flexmatch_learning_effect(torch.tensor([0, 0]), 5, warmup=False), torch.zeros(2))
    assert torch.allclose(flexmatch_thresholds(torch.tensor([1.0, 0.5]), 0.9), torch.tensor([0.9, 0.3]))
    # update: only confident predictions (>= 0.95) are stored; a sample met twice keeps the later one; a sample
    # that is not confident now keeps its earlier class
    flex.update(torch.tensor([4, 0, 4, 5]), torch.tensor([[0.97, 0.03, 0.0], [0.1, 0.0, 0.9], [0.01, 0.01, 0.98],
                                                          [0.5, 0.5, 0.0]]))
    assert flex.selected.tolist() == [0, 0, 0, 1, 2, -1, -1, -1, -1, -1]
    with pytest.raises(ValueError, match=r"indices must be in \[0, 10\)"):
        flex.update(torch.tensor([10]), torch.tensor([[1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="threshold"):
        FlexMatchThreshold(10, 3, threshold=1.5)


# ---------------------------------------------------------------------------------------------------- FreeMatch
def test_freematch_threshold_updates_by_hand():
    free = FreeMatchThreshold(2, ema=0.5)
    assert float(free.tau) == 0.5 and free.p_model.tolist() == [0.5, 0.5]  # 1/C at t = 0
    # mean max q = 0.8, mean q = (0.6, 0.4), hist = (0.5, 0.5)
    free.update(torch.tensor([[0.9, 0.1], [0.3, 0.7]]))
    assert float(free.tau) == pytest.approx(0.65)
    assert torch.allclose(free.p_model, torch.tensor([0.55, 0.45]))
    assert torch.allclose(free.label_hist, torch.tensor([0.5, 0.5]))
    # tau_t(c) = p~(c) / max p~ * tau_t
    assert torch.allclose(free.class_thresholds(), torch.tensor([0.65, 0.45 / 0.55 * 0.65]))
    free.update(torch.tensor([[1.0, 0.0]]))
    assert float(free.tau) == pytest.approx(0.825)
    assert torch.allclose(free.p_model, torch.tensor([0.775, 0.225]))
    assert torch.allclose(free.label_hist, torch.tensor([0.75, 0.25]))
    assert torch.allclose(free.class_thresholds(), torch.tensor([0.825, 0.225 / 0.775 * 0.825]))
    paper = FreeMatchThreshold(2)  # lambda = 0.999
    paper.update(torch.tensor([[0.9, 0.1], [0.3, 0.7]]))
    assert float(paper.tau) == pytest.approx(0.999 * 0.5 + 0.001 * 0.8)
    with pytest.raises(ValueError, match="ema"):
        FreeMatchThreshold(2, ema=1.0)


def test_freematch_fairness_loss_by_hand():
    # three masked strong views with probabilities (0.75, 0.25), (0.75, 0.25), (0.25, 0.75); the fourth is not
    logits = torch.tensor([[LN3, 0.0], [LN3, 0.0], [0.0, LN3], [5.0, 0.0]], requires_grad=True)
    mask = torch.tensor([True, True, True, False])
    p_model, label_hist = torch.tensor([0.6, 0.4]), torch.tensor([0.75, 0.25])
    # target = SumNorm((0.8, 1.6)) = (1/3, 2/3); p_bar = (1.75, 1.25) / 3, h_bar = (2, 1) / 3,
    # p_bar / h_bar = (0.875, 1.25) -> SumNorm = (0.875, 1.25) / 2.125
    loss = freematch_fairness_loss(logits, mask, p_model, label_hist)
    expected = (1 / 3) * math.log(0.875 / 2.125) + (2 / 3) * math.log(1.25 / 2.125)
    assert float(loss.detach()) == pytest.approx(expected, abs=1e-6) and expected == pytest.approx(-0.649520, abs=1e-6)
    loss.backward()
    assert logits.grad[3].abs().sum() == 0 and logits.grad[:3].abs().sum() > 0  # only the masked rows
    # a class no masked sample predicts: 1/h_bar = inf read as 0 (the reference), so q = (1, 0)
    one = freematch_fairness_loss(torch.tensor([[LN3, 0.0]]), torch.tensor([True]), p_model, label_hist)
    assert float(one) == pytest.approx((2 / 3) * math.log(1e-12), rel=1e-6)
    assert float(freematch_fairness_loss(logits.detach(), torch.zeros(4, dtype=torch.bool), p_model, label_hist)) == 0


# ---------------------------------------------------------------------------------------------------- the loss
def test_fixmatch_loss_with_class_thresholds_by_hand():
    lx, y = torch.zeros(1, 2), torch.tensor([0])  # l_s = ln 2
    lw = torch.tensor([[LN4, 0.0], [0.0, LN3]])  # q = (0.8, 0.2) -> 0, (0.25, 0.75) -> 1
    ls = torch.tensor([[0.0, 0.0], [LN3, 0.0]])  # H(0, .) = ln 2; H(1, (0.75, 0.25)) = ln 4
    # T = (0.9, 0.7): sample 1 (0.8 < T[0]) out, sample 2 (0.75 >= T[1]) in: l_u = (0 + ln 4) / 2
    loss, st = fixmatch_loss(lx, y, lw, ls, threshold=torch.tensor([0.9, 0.7]))
    assert float(loss) == pytest.approx(LN2 + LN4 / 2) and st["confident"].tolist() == [False, True]
    assert st["pseudo_labels"].tolist() == [0, 1] and float(st["mask"]) == 0.5
    # a float 0.7 and the tensor (0.7, 0.7) give the same: both in, l_u = (ln 2 + ln 4) / 2
    a, _ = fixmatch_loss(lx, y, lw, ls, threshold=0.7)
    b, _ = fixmatch_loss(lx, y, lw, ls, threshold=torch.tensor([0.7, 0.7]))
    assert float(a) == float(b) == pytest.approx(LN2 + (LN2 + LN4) / 2)
    # probs_u (e.g. aligned) replace softmax(weak): pseudo-labels 1, 0; H(1, (.5, .5)) = ln 2, H(0, (.75, .25))
    c, st = fixmatch_loss(lx, y, lw, ls, threshold=0.7, probs_u=torch.tensor([[0.3, 0.7], [0.9, 0.1]]))
    assert st["pseudo_labels"].tolist() == [1, 0] and float(c) == pytest.approx(LN2 + (LN2 - math.log(0.75)) / 2)
    with pytest.raises(ValueError, match=r"shape \(2,\) \(one per class\)"):
        fixmatch_loss(lx, y, lw, ls, threshold=torch.tensor([0.9, 0.7, 0.5]))
    with pytest.raises(ValueError, match="thresholds must be in"):
        fixmatch_loss(lx, y, lw, ls, threshold=torch.tensor([1.2, 0.7]))
    with pytest.raises(ValueError, match="temperature"):
        fixmatch_loss(lx, y, lw, ls, temperature=0.5, probs_u=torch.full((2, 2), 0.5))


# ---------------------------------------------------------------------------------------------------- shared
def test_pseudo_label_monitor_by_hand():
    pool = SimpleNamespace(labels=np.array([0, 1, 2, 1]))
    mon = PseudoLabelMonitor(pool)
    assert mon.on
    # right = (T, F, T, T): 3/4; confident AND right = (T, F, F, T): 2/4
    st = mon(torch.tensor([0, 2, 2, 1]), torch.tensor([True, True, False, True]), torch.tensor([0, 1, 2, 3]))
    assert set(st) == {"pseudo_acc", "mask_correct"}
    assert float(st["pseudo_acc"]) == 0.75 and float(st["mask_correct"]) == 0.5
    # the batch's pool indices pick the truth: samples 3 and 0 have labels 1 and 0
    st = mon(torch.tensor([1, 1]), torch.tensor([False, True]), torch.tensor([3, 0]))
    assert float(st["pseudo_acc"]) == 0.5 and float(st["mask_correct"]) == 0.0
    assert PseudoLabelMonitor(pool, False)(torch.tensor([0]), torch.tensor([True]), torch.tensor([0])) == {}
    partial = SimpleNamespace(labels=np.array([0, -1, 2]))
    assert not PseudoLabelMonitor(partial).on  # None: only when every pool image has a label
    with pytest.raises(ValueError, match="needs a label for every pool image; 1 of 3 have none"):
        PseudoLabelMonitor(partial, True)
    with pytest.raises(TypeError, match="monitor_pseudo_labels must be None, True or False, got 'yes'"):
        PseudoLabelMonitor(pool, "yes")


def test_distributed_helpers_on_one_process():
    t = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    m = mean_tensor(t)
    assert torch.equal(m, t) and m.data_ptr() != t.data_ptr()  # a copy: the caller's tensor is never averaged
    assert gather_rows(t) is t and not dist_on()


def test_classifier_module_keeps_the_net_keys():
    from uslkit.train.models import build_model

    net = build_model("cnn_small", 10, in_channels=1)
    mod = ClassifierModule(net)
    assert set(mod.state_dict()) == {"net." + k for k in net.state_dict()}
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(mod.eval()(x), net(x))
    assert isinstance(FixMatchModule(net), ClassifierModule) and fm.labeled_set is labeled_set  # re-exported


# ---------------------------------------------------------------------------------------------------- config
def test_config_validation_and_defaults():
    cfg = FixMatchConfig(steps=1)
    assert (cfg.distribution_alignment, cfg.threshold_mode, cfg.da_window) == (None, "fixed", 128)
    params = cfg.run_params()  # the defaults are not recorded: older run folders still resume
    assert not {"distribution_alignment", "da_window", "threshold_mode", "flexmatch_warmup", "freematch_ema",
                "fairness_weight"} & params.keys()
    assert FixMatchConfig(steps=1, threshold_mode="flexmatch").run_params()["threshold_mode"] == "flexmatch"
    assert FixMatchConfig(steps=1, threshold_mode="flexmatch", threshold=0.5).threshold == 0.5  # FlexMatch's tau
    assert FixMatchConfig(steps=1, threshold_mode="freematch", threshold=0.95).threshold == 0.95  # the default: fine
    bad = [(dict(distribution_alignment="labelled"), "distribution_alignment must be None, 'uniform' or 'labeled'"),
           (dict(threshold_mode="adaptive"), "threshold_mode must be"),
           (dict(distribution_alignment="uniform", da_window=0), "da_window must be >= 1"),
           (dict(threshold_mode="freematch", freematch_ema=1.0), "freematch_ema must be < 1.0"),
           (dict(threshold_mode="freematch", fairness_weight=-0.1), "fairness_weight must be >= 0"),
           (dict(threshold_mode="flexmatch", flexmatch_warmup="yes"), "flexmatch_warmup must be True or False"),
           (dict(da_window=32), "da_window=32 has no effect without distribution_alignment"),
           (dict(flexmatch_warmup=False), "has no effect without threshold_mode='flexmatch'"),
           (dict(threshold_mode="flexmatch", fairness_weight=0.01), "threshold_mode='freematch'"),
           (dict(threshold_mode="freematch", threshold=0.15),
            "threshold=0.15 has no effect with threshold_mode='freematch'")]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            FixMatchConfig(steps=1, **kw)


# ---------------------------------------------------------------------------------------------------- training
# The default FixMatch run (4 steps, seed 0, digits, 4 labels per class, batch 8, mu 2, threshold 0.15 so that the
# unlabelled loss acts) as the COMMITTED code trained it before the options existed: commit 545355e (HEAD when
# the options were added), torch 2.14.1+cu130, CPU, made by running that commit's package from `git archive`.
# Each step's (loss, loss_x, loss_u, mask, pseudo_acc, mask_correct):
COMMITTED_HISTORY = [
    (2.654574155807495, 2.311185598373413, 0.34338849782943726, 0.1875, 0.125, 0.0625),
    (3.9006359577178955, 2.3679256439208984, 1.532710313796997, 0.75, 0.0625, 0.0625),
    (4.380486011505127, 2.5275473594665527, 1.8529385328292847, 1.0, 0.1875, 0.1875),
    (4.072684288024902, 2.5109639167785645, 1.5617202520370483, 1.0, 0.1875, 0.1875),
]
# sha256 over the sorted state_dict (key, dtype, bytes) of the final network and of its EMA (see _digest)
COMMITTED_TORCH = "2.14.1+cu130"
COMMITTED_THREADS = 2  # torch's intra-op threads then (the CI machine's cores): other counts round differently
COMMITTED_CPU = "AMD EPYC"  # /proc/cpuinfo's model name then: another CPU's kernels (e.g. an AVX-512 Xeon) round
#                             differently too (the last digits of the first loss, seen on an Intel Xeon)
COMMITTED_NET = "2323699a1815df58b257b86cb58fc4ff081e335e233bd7db6973106e53ee8272"
COMMITTED_EMA = "5d41161a7ab1d3022d1556bbff3900b81ca0bef019a3f2073839a1ee3ab5c906"
# the run record's keys
COMMITTED_PARAMS = {"arch", "augment", "batch_size", "dataset", "ema_decay", "init", "kind", "labeled", "labels",
                    "lambda_u", "lr", "momentum", "mu", "n", "nesterov", "split", "steps", "threshold",
                    "weight_decay"}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            return next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), None)
    except OSError:
        return None


def _digest(module):
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(str(v.dtype).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("explicit", [False, True])
def test_default_run_equals_the_committed_code(train, selection, tmp_path, explicit):
    """FixMatch with the options off (by default, or given explicitly at their defaults) trains what the code before
    the options trained: the same losses (to 1e-6 anywhere; the same weights bit for bit with the torch, threads and
    CPU that made the numbers), no extra modules or state, the same run record."""
    opts = dict(distribution_alignment=None, da_window=128, threshold_mode="fixed", flexmatch_warmup=True,
                freematch_ema=0.999, fairness_weight=0.001) if explicit else {}
    res = _fix(train, selection, steps=4, ckpt_every=2, log_every=1, threshold=0.15, out_dir=tmp_path / "a", **opts)
    keys = ("loss", "loss_x", "loss_u", "mask", "pseudo_acc", "mask_correct")
    got = [tuple(h[k] for k in keys) for h in res.history]
    assert len(got) == len(COMMITTED_HISTORY)
    for row, ref in zip(got, COMMITTED_HISTORY):
        assert row == pytest.approx(ref, rel=1e-6, abs=1e-7)
    made_here = (torch.__version__, torch.get_num_threads(), _cpu_model()) == (COMMITTED_TORCH, COMMITTED_THREADS,
                                                                              COMMITTED_CPU)
    if made_here:  # bit for bit where the numbers were made
        assert got == COMMITTED_HISTORY
        assert (_digest(res.net), _digest(res.ema)) == (COMMITTED_NET, COMMITTED_EMA)
    assert res.extras == {}
    state = torch.load(tmp_path / "a" / "state.pt", weights_only=False)
    assert state["extras"] == {} and state["model"].keys() == res.net.state_dict().keys()
    assert {k for h in res.history for k in h} == {"step", "lr", "samples_per_s", "loss", "loss_x", "loss_u", "mask",
                                                   "pseudo_acc", "mask_correct", "epoch_labeled", "epoch_unlabeled"}
    assert set(json.loads((tmp_path / "a" / "config.json").read_text())["params"]) == COMMITTED_PARAMS


@pytest.mark.parametrize("opts, logged", [
    (dict(distribution_alignment="uniform", da_window=4), {"da_entropy"}),
    (dict(distribution_alignment="labeled"), {"da_entropy"}),
    (dict(threshold_mode="flexmatch"), {"threshold"}),
    (dict(threshold_mode="flexmatch", flexmatch_warmup=False, distribution_alignment="uniform"),
     {"threshold", "da_entropy"}),
    (dict(threshold_mode="freematch"), {"threshold", "loss_f"}),
])
def test_each_option_trains_and_logs(train, selection, opts, logged):
    # a low threshold so that the unlabelled loss acts in 4 steps; FreeMatch's thresholds are its own (a threshold
    # given with it is an error, test_config_validation_and_defaults)
    low = {} if opts.get("threshold_mode") == "freematch" else dict(threshold=0.15)
    res = _fix(train, selection, steps=4, **low, **opts)
    hist = res.history
    assert all(np.isfinite(h["loss"]) for h in hist)
    for h in hist:
        assert logged <= h.keys() and {"mask", "pseudo_acc", "mask_correct"} <= h.keys()
        assert 0.0 <= h["mask_correct"] <= h["mask"] + 1e-9 <= 1.0 + 1e-9
        assert 0.0 <= h["pseudo_acc"] <= 1.0
        if "da_entropy" in h:
            assert 0.0 < h["da_entropy"] <= 1.0 + 1e-6
        if "threshold" in h:
            assert 0.0 <= h["threshold"] <= 1.0
    assert set(res.extras) == {k for k, on in (("da", "distribution_alignment" in opts),
                                               ("flexmatch", opts.get("threshold_mode") == "flexmatch"),
                                               ("freematch", opts.get("threshold_mode") == "freematch")) if on}
    # the option changes training: not the plain FixMatch run
    plain = _fix(train, selection, steps=4, threshold=0.15)
    assert not _same(res.net, plain.net)


def test_options_state_evolves_and_loss_decreases(train, selection):
    res = _fix(train, selection, steps=12, log_every=6, threshold=0.5, lr=0.05, threshold_mode="flexmatch",
               distribution_alignment="uniform", da_window=8)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert int(res.extras["da"].seen) == 12
    assert int((res.extras["flexmatch"].selected >= 0).sum()) > 0  # some samples were confidently predicted


def test_labeled_prior_is_the_labels_file_histogram(train, tmp_path):
    idx = np.concatenate([np.flatnonzero(train.labels == c)[:(6 if c == 0 else 2)] for c in range(10)])
    sel = annotate(make_selection(idx, dataset=train, method="test", seed=0), train)
    res = _fix(train, sel, steps=1, distribution_alignment="labeled")
    assert torch.allclose(res.extras["da"].target, torch.tensor([6.0] + [2.0] * 9) / 24)
    missing = np.concatenate([np.flatnonzero(train.labels == c)[:3] for c in range(9)])  # no class 9
    sel9 = annotate(make_selection(missing, dataset=train, method="test", seed=0), train)
    with pytest.raises(ValueError, match=r"classes \[9\] have no label.*'uniform'"):
        _fix(train, sel9, steps=1, distribution_alignment="labeled")
    _fix(train, sel9, steps=1, distribution_alignment="uniform")  # fine


@pytest.mark.parametrize("opts", [dict(threshold_mode="flexmatch", distribution_alignment="uniform", da_window=2),
                                  dict(threshold_mode="freematch")])
def test_resume_after_a_kill_equals_an_uninterrupted_run(train, selection, tmp_path, monkeypatch, opts):
    low = {} if opts.get("threshold_mode") == "freematch" else dict(threshold=0.3)
    kw = dict(steps=4, ckpt_every=2, **low, **opts)
    ref = _fix(train, selection, out_dir=tmp_path / "ref", **kw)
    real, calls = fm.fixmatch_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 4:  # step 3, after the checkpoint of step 2
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(fm, "fixmatch_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _fix(train, selection, out_dir=tmp_path / "run", **kw)
    monkeypatch.setattr(fm, "fixmatch_loss", real)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 2 and set(state["extras"]) == set(ref.extras)
    res = _fix(train, selection, out_dir=tmp_path / "run", **kw)
    assert res.resumed_from == 2
    assert _same(ref.net, res.net) and _same(ref.ema, res.ema)
    for name in ref.extras:
        assert _same(ref.extras[name], res.extras[name])
    if "flexmatch" in opts:
        assert int((state["extras"]["flexmatch"]["selected"] >= 0).sum()) > 0
        assert int(state["extras"]["da"]["seen"]) == 2
        # the restored state matters: resuming from the same checkpoint with the options' state reset differs
        state["extras"] = {k: {n: (torch.full_like(t, -1) if n == "selected" else torch.zeros_like(t))
                               for n, t in v.items()} for k, v in state["extras"].items()}
        state["extras"]["da"]["target"] = ref.extras["da"].target.clone()
        (tmp_path / "wiped").mkdir()
        for f in ("config.json",):
            (tmp_path / "wiped" / f).write_bytes((tmp_path / "run" / f).read_bytes())
        torch.save(state, tmp_path / "wiped" / "state.pt")
        wiped = _fix(train, selection, out_dir=tmp_path / "wiped", **kw)
        assert wiped.resumed_from == 2 and not _same(ref.net, wiped.net)


# ---------------------------------------------------------------------------------------------------- CLI
def test_cli_param_threshold_mode(train, selection, tmp_path, capsys):
    from uslkit.cli import main

    sel = save_selection(selection, tmp_path / "sel.json")
    out = tmp_path / "flex"
    args = ["train", "fixmatch", "--dataset", "digits", "--labels", str(sel), "--steps", "2", "--batch-size", "8",
            "--param", "mu=2", "--param", "threshold_mode=flexmatch", "--param", "distribution_alignment=uniform",
            "--test-split", "", "--out", str(out), "-q"]
    assert main(args) == 0
    params = json.loads((out / "config.json").read_text())["params"]
    assert params["threshold_mode"] == "flexmatch" and params["distribution_alignment"] == "uniform"
    hist = json.loads((out / "history.json").read_text())
    assert "threshold" in hist[-1] and "da_entropy" in hist[-1]
    capsys.readouterr()
    assert main(args[:-5] + ["--param", "threshold_mode=flex", "--test-split", "", "--out", str(tmp_path / "x"),
                             "-q"]) == 2
    assert "threshold_mode must be 'fixed', 'flexmatch' or 'freematch', got 'flex'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_share_the_option_state(tmp_path, selection, torchrun):
    """torchrun --nproc_per_node=2 on CPU (gloo): with distribution alignment + FlexMatch, then FreeMatch, both
    processes end with the same parameters and the same option state (running means, per-sample predictions and
    thresholds from the global batches: gradients alone would keep the parameters equal, not these buffers)."""
    sel_path = save_selection(selection, tmp_path / "sel.json")
    out = torchrun(f"""
        import hashlib, os, sys
        import torch
        from uslkit.data import load_dataset
        from uslkit.train import train_fixmatch
        train = load_dataset("digits", "train")
        lines = []
        for name, opts in (("flex", dict(distribution_alignment="uniform", da_window=4, threshold_mode="flexmatch",
                                          threshold=0.05)),
                           ("free", dict(threshold_mode="freematch"))):
            res = train_fixmatch(train, {str(sel_path)!r}, steps=3, batch_size=8, mu=2, seed=0, progress=False,
                                 out_dir=os.path.join(sys.argv[1], name), log_every=1, **opts)
            tensors = [p.detach() for p in res.net.parameters()]
            tensors += [t for k in sorted(res.extras) for t in res.extras[k].state_dict().values()]
            lines.append(name + " " + hashlib.sha256(b"".join(t.numpy().tobytes() for t in tensors)).hexdigest()
                         + " " + " ".join(sorted(res.extras)))
            if name == "flex":
                lines.append("selected %d" % int((res.extras["flexmatch"].selected >= 0).sum()))
        open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w").write("\\n".join(lines))
        torch.distributed.destroy_process_group()
    """)
    r0, r1 = (out / "rank0.txt").read_text(), (out / "rank1.txt").read_text()
    assert r0 == r1
    flex, selected, free = r0.splitlines()
    assert flex.endswith(" da flexmatch") and free.endswith(" freematch")
    # tau 0.05 < 1/10: every unlabelled row's prediction is recorded: all 3 x 16 rows of the global batches, of
    # which each process holds 8 per step (24 without the gathering)
    assert int(selected.split()[1]) == 48
    assert (out / "flex" / "model.pt").exists() and (out / "free" / "model.pt").exists()
