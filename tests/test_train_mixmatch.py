"""MixMatch: its pieces on hand-computed toy tensors, the config, and the learner on digits (seeded, resumable,
monitored, reachable from the command line)."""

import dataclasses
import json
import math

import pytest
import torch

from uslkit.cli import main
from uslkit.labels import annotate, make_selection, save_selection
from uslkit.train import LEARNERS, MixMatchConfig, train_mixmatch
from uslkit.train.batches import StepStream
from uslkit.train.losses import linear_rampup, mixmatch_loss, mixup, sharpen


def _mm(train, sel, **kw):
    args = dict(steps=6, batch_size=8, seed=0, progress=False, ckpt_every=3, log_every=2)
    args.update(kw)
    return train_mixmatch(train, sel, **args)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------------- pieces
def test_sharpen_hand_computed():
    p = torch.tensor([[0.6, 0.3, 0.1], [0.5, 0.5, 0.0]])
    # T = 0.5 squares: [0.36, 0.09, 0.01] / 0.46; a zero stays zero
    expected = torch.tensor([[0.36 / 0.46, 0.09 / 0.46, 0.01 / 0.46], [0.5, 0.5, 0.0]])
    assert torch.allclose(sharpen(p, 0.5), expected, atol=1e-6)
    assert torch.allclose(sharpen(p, 1.0), p, atol=1e-6)  # T = 1: unchanged
    assert torch.allclose(sharpen(p[:1], 0.01), torch.tensor([[1.0, 0.0, 0.0]]), atol=1e-6)  # T -> 0: one-hot
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        sharpen(p, 0)


def test_mixup_takes_the_larger_weight_hand_computed():
    x = torch.tensor([[1.0], [3.0]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    perm = torch.tensor([1, 0])
    for lam in (0.25, 0.75):  # lam' = max(lam, 1 - lam) = 0.75 either way
        mx, my = mixup(x, y, lam, perm)
        assert torch.allclose(mx, torch.tensor([[0.75 * 1 + 0.25 * 3], [0.75 * 3 + 0.25 * 1]]))  # [1.5], [2.5]
        assert torch.allclose(my, torch.tensor([[0.75, 0.25], [0.25, 0.75]]))
    # one lambda per sample: [0.1, 0.6] -> [0.9, 0.6]
    mx, my = mixup(x, y, torch.tensor([0.1, 0.6]), perm)
    assert torch.allclose(mx, torch.tensor([[1.2], [2.2]]))  # 0.9 * 1 + 0.1 * 3, 0.6 * 3 + 0.4 * 1
    assert torch.allclose(my, torch.tensor([[0.9, 0.1], [0.4, 0.6]]))
    # images: the weight broadcasts over (C, H, W); the identity permutation leaves everything as it was
    imgs = torch.arange(2 * 1 * 2 * 2, dtype=torch.float32).reshape(2, 1, 2, 2)
    mi, _ = mixup(imgs, y, torch.tensor([0.3, 0.5]), perm)
    assert torch.allclose(mi[0], 0.7 * imgs[0] + 0.3 * imgs[1]) and torch.allclose(mi[1], 0.5 * imgs[1] + 0.5 * imgs[0])
    same = mixup(imgs, y, 0.4, torch.tensor([0, 1]))
    assert torch.allclose(same[0], imgs) and torch.allclose(same[1], y)
    with pytest.raises(ValueError, match=r"perm must have shape \(2,\)"):
        mixup(x, y, 0.5, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"lam must be in \[0, 1\], got 1.5"):
        mixup(x, y, 1.5, perm)
    with pytest.raises(ValueError, match=r"lam must be a scalar or have shape \(2,\)"):
        mixup(x, y, torch.tensor([0.5, 0.5, 0.5]), perm)


def test_mixmatch_loss_hand_computed():
    logits_x = torch.zeros(1, 2, requires_grad=True)  # softmax [0.5, 0.5]
    targets_x = torch.tensor([[0.75, 0.25]])
    logits_u = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], requires_grad=True)  # [0.25, 0.75], [0.5, 0.5]
    targets_u = torch.tensor([[1.0, 0.0], [0.5, 0.5]], requires_grad=True)
    loss, st = mixmatch_loss(logits_x, targets_x, logits_u, targets_u, weight=2.0)
    # L_X = -(0.75 log 0.5 + 0.25 log 0.5) = log 2; L_U = (0.75^2 + 0.75^2 + 0 + 0) / (2 samples * 2 classes)
    assert st["loss_x"].item() == pytest.approx(math.log(2.0), rel=1e-6)
    assert st["loss_u"].item() == pytest.approx(0.28125, rel=1e-6)
    assert loss.item() == pytest.approx(math.log(2.0) + 2.0 * 0.28125, rel=1e-6)
    loss.backward()
    assert targets_u.grad is None  # the targets are constants
    # d L_X / d logits_x = softmax - target = [-0.25, 0.25]
    assert torch.allclose(logits_x.grad, torch.tensor([[-0.25, 0.25]]))
    zero, _ = mixmatch_loss(logits_x, targets_x, logits_u, targets_u, weight=0.0)
    assert zero.item() == pytest.approx(math.log(2.0), rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        mixmatch_loss(logits_x, targets_x, logits_u, targets_u[:1], weight=1.0)


def test_linear_rampup_values():
    assert [linear_rampup(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert linear_rampup(8192, 16384) == 0.5 and linear_rampup(0, 0) == 1.0  # length 0: no ramp
    with pytest.raises(ValueError, match="length=-1"):
        linear_rampup(0, -1)


# ---------------------------------------------------------------------------------------------------- config
def test_config_presets_and_validation():
    paper = MixMatchConfig.preset("paper")
    assert (paper.arch, paper.steps, paper.batch_size, paper.lr, paper.weight_decay) == \
        ("wrn28_2", 2**20, 64, 0.002, 0.02)
    assert (paper.temperature, paper.alpha, paper.lambda_u, paper.rampup_steps, paper.ema_decay) == \
        (0.5, 0.75, 75.0, 16384, 0.999)
    cpu = MixMatchConfig.preset("cpu")
    assert cpu.arch == "cnn_small" and cpu.rampup_steps == cpu.steps // 64
    with pytest.raises(ValueError, match="mixup_lambda must be 'batch' or 'sample', got 'row'"):
        MixMatchConfig(mixup_lambda="row")
    for bad, msg in ((dict(alpha=0), "alpha must be > 0"), (dict(temperature=-1), "temperature"),
                     (dict(rampup_steps=-1), "rampup_steps must be >= 0"), (dict(ema_decay=1.0), "ema_decay"),
                     (dict(lambda_u=-1), "lambda_u must be >= 0"), (dict(steps=0), "steps")):
        with pytest.raises(ValueError, match=msg):
            MixMatchConfig(**bad)
    for bad, msg in ((dict(lr="fast"), "lr must be a real number, got 'fast'"),
                     (dict(lambda_u=None), "lambda_u must be a real number, got None"),
                     (dict(ema_decay=float("nan")), "ema_decay must be finite"),
                     (dict(batch_size=8.0), "batch_size must be an integer, got 8.0")):
        with pytest.raises(ValueError, match=msg):
            MixMatchConfig(**bad)
    with pytest.raises(ValueError, match="unknown MixMatch preset 'fast'"):
        MixMatchConfig.preset("fast")


# ---------------------------------------------------------------------------------------------------- learner
def test_mixmatch_learns_on_digits(digits, selection, tmp_path):
    train, test = digits
    res = train_mixmatch(train, selection, steps=30, batch_size=16, lr=0.005, lambda_u=5.0, rampup_steps=20,
                         ema_decay=0.9, seed=0, test_set=test, progress=False, out_dir=tmp_path / "mm", log_every=10)
    first, last = res.history[0], res.history[-1]
    assert last["loss_x"] < first["loss_x"]
    assert res.metrics["ema_top1"] > 0.3  # chance is 0.1
    assert {"loss", "loss_x", "loss_u", "lambda_u", "confident", "pseudo_acc", "mask_correct"} <= first.keys()
    # the history averages each window of 10 steps: 5 * mean(0..9) / 20, then the full weight from step 20
    assert first["lambda_u"] == pytest.approx(1.125) and last["lambda_u"] == 5.0
    # batch norm counted one training-mode pass per step: the mixed 3B batch in one forward, the guess pass's
    # running statistics left out
    counts = {int(v) for k, v in res.net.state_dict().items() if k.endswith("num_batches_tracked")}
    assert counts == {30}
    state = torch.load(tmp_path / "mm" / "state.pt", weights_only=False)  # a plain classifier: no extra state
    assert state["extras"] == {} and state["model"].keys() == res.net.state_dict().keys()
    cfg = json.loads((tmp_path / "mm" / "config.json").read_text())
    assert cfg["learner"] == "mixmatch" and cfg["params"]["lambda_u"] == 5.0 and cfg["ema_decay"] == 0.9
    for name in ("model.pt", "model_ema.pt", "results.json", "state.pt"):
        assert (tmp_path / "mm" / name).exists()


def test_rampup_reaches_the_loss(digits, selection, monkeypatch):
    train, _ = digits
    import uslkit.train.mixmatch as mm

    real, weights = mm.mixmatch_loss, []

    def spy(*a, **k):
        weights.append(k["weight"])
        loss, st = real(*a, **k)
        assert torch.allclose(a[1].sum(1), torch.ones(a[1].shape[0]))  # mixed targets are distributions
        assert torch.allclose(a[3].sum(1), torch.ones(a[3].shape[0]), atol=1e-6)
        assert a[2].shape[0] == 2 * a[0].shape[0]  # K = 2 unlabelled views per labelled image
        return loss, st

    monkeypatch.setattr(mm, "mixmatch_loss", spy)
    res = _mm(train, selection, lambda_u=2.0, rampup_steps=4, log_every=1)
    assert weights == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]  # lambda_u * min(step / 4, 1)
    assert [h["lambda_u"] for h in res.history] == weights


def test_same_seed_same_weights_bit_for_bit(digits, selection):
    train, _ = digits
    a, b = _mm(train, selection, steps=4), _mm(train, selection, steps=4)
    assert _same_weights(a.net, b.net) and _same_weights(a.ema, b.ema)
    assert not _same_weights(a.net, _mm(train, selection, steps=4, seed=1).net)
    # one lambda per image (the reference code) is another run, as reproducible
    s1, s2 = (_mm(train, selection, steps=4, mixup_lambda="sample") for _ in range(2))
    assert _same_weights(s1.net, s2.net) and not _same_weights(a.net, s1.net)


def test_resume_after_interruption_equals_uninterrupted(digits, selection, tmp_path, monkeypatch):
    train, _ = digits
    ref = _mm(train, selection, out_dir=tmp_path / "ref")
    import uslkit.train.mixmatch as mm

    real, calls = mm.mixmatch_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4: after the checkpoint of step 3
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(mm, "mixmatch_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _mm(train, selection, out_dir=tmp_path / "run")
    monkeypatch.setattr(mm, "mixmatch_loss", real)
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 3
    res = _mm(train, selection, out_dir=tmp_path / "run")
    assert res.resumed_from == 3
    assert _same_weights(ref.net, res.net) and _same_weights(ref.ema, res.ema)
    assert res.history[-1]["loss"] == ref.history[-1]["loss"]  # steps 4-5, both runs
    again = _mm(train, selection, out_dir=tmp_path / "run")
    assert again.reused and _same_weights(ref.net, again.net)


def test_pseudo_label_monitor_judges_the_unsharpened_guess_and_never_trains(digits, selection, monkeypatch):
    """``confident`` / ``mask_correct`` use max p >= 0.95 of the mean guess p BEFORE sharpening (what FixMatch's
    threshold sees). T = 0.1 sharpens so hard that the sharpened q would call most guesses confident: the two
    readings differ, so the check can fail."""
    train, _ = digits
    import uslkit.train.mixmatch as mm

    real, guesses = mm.sharpen, []

    def spy(p, t):
        guesses.append((p.clone(), real(p, t)))
        return guesses[-1][1]

    monkeypatch.setattr(mm, "sharpen", spy)
    on = _mm(train, selection, steps=4, log_every=1, temperature=0.1)
    monkeypatch.setattr(mm, "sharpen", real)
    off = _mm(train, selection, steps=4, log_every=1, temperature=0.1, monitor_pseudo_labels=False)
    assert _same_weights(on.net, off.net)
    assert all("pseudo_acc" not in h and "mask_correct" not in h and "confident" in h for h in off.history)
    stream = StepStream(len(train), 8, seed=0, stream=2)  # the unlabelled batches
    by_q = []
    for step, h in enumerate(on.history):
        p, q = guesses[step]
        conf, guess = p.max(1)
        assert torch.equal(guess, q.argmax(1))  # sharpening keeps the argmax: pseudo_acc is the same either way
        truth = torch.as_tensor(train.labels[stream.batch(step)[0]])
        confident = conf >= 0.95
        assert h["pseudo_acc"] == pytest.approx(float((guess == truth).float().mean()))
        assert h["confident"] == pytest.approx(float(confident.float().mean()))
        assert h["mask_correct"] == pytest.approx(float(((guess == truth) & confident).float().mean()))
        by_q.append(float((q.max(1).values >= 0.95).float().mean()))
    assert any(abs(c - h["confident"]) > 0.1 for c, h in zip(by_q, on.history))  # q's reading is another number


def test_guess_pass_leaves_the_running_statistics():
    from uslkit.train.mixmatch import _running_stats_kept
    from uslkit.train.models import build_model

    net = build_model("cnn_small", 10, in_channels=1).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad(), _running_stats_kept(net):
        net(x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    with torch.no_grad():
        net(x)  # outside: the usual update
    assert not all(torch.equal(before[k], v) for k, v in net.state_dict().items())


# ---------------------------------------------------------------------------------------------------- CLI, errors
def test_command_line_and_clear_errors(digits, selection, tmp_path, capsys):
    train, test = digits
    assert LEARNERS["mixmatch"].config is MixMatchConfig
    sel = save_selection(selection, tmp_path / "sel.json")
    args = ["train", "mixmatch", "--dataset", "digits", "--labels", str(sel), "--steps", "2", "--batch-size", "8",
            "--param", "lambda_u=10", "--out", str(tmp_path / "cli"), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "mixmatch: trained 2 steps" in out and "ema_top1" in out
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["params"]["lambda_u"] == 10.0
    assert main(args[:-5] + ["--param", "bogus=1", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "unknown mixmatch parameter(s) ['bogus']" in capsys.readouterr().err
    # labels files of another dataset: Fashion-MNIST's name on a pool of digits' size, then Fashion-MNIST's size
    fmnist = dataclasses.replace(make_selection([0, 1], n=len(train), dataset_name="fashion_mnist", split="train",
                                                method="random", seed=0), labels=[3, 4])
    other = save_selection(fmnist, tmp_path / "fmnist.json")
    assert main(["train", "mixmatch", "--dataset", "digits", "--labels", str(other), "--steps", "2",
                 "--out", str(tmp_path / "y"), "-q"]) == 2
    assert "dataset name mismatch: selection is for 'fashion_mnist', dataset is 'digits'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="wrong n: the selection is for a pool of 355 samples, the dataset has 1797"):
        _mm(train, annotate(make_selection([0, 1], dataset=test, method="random", seed=0), test))
    with pytest.raises(ValueError, match=r"unknown MixMatch parameter\(s\) \['mu'\]"):
        _mm(train, selection, mu=7)  # FixMatch's, not MixMatch's
    with pytest.raises(ValueError, match="MixMatch needs steps"):
        train_mixmatch(train, selection, progress=False)
    with pytest.raises(ValueError, match="no labels yet"):
        _mm(train, make_selection([0, 1, 2], dataset=train, method="x", seed=0))
    with pytest.raises(ValueError, match="mixup_lambda"):
        _mm(train, selection, mixup_lambda="row")
    with pytest.raises(ValueError, match="give either config or preset"):
        train_mixmatch(train, selection, dataclasses.replace(MixMatchConfig(), steps=1), preset="cpu")
