"""CoMatch: its losses on hand-computed toy tensors, the memory bank, the config, and the learner on digits."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from uslkit.labels import save_selection
from uslkit.train import CoMatchConfig, train_comatch
from uslkit.train.augment import MultiViews, TwoViews, simclr_transform, strong_transform, weak_transform
from uslkit.train.batches import StepLoader, StepStream, Views
from uslkit.train.comatch import MemoryBank
from uslkit.train.losses import (comatch_contrastive_loss, comatch_loss, comatch_memory_smoothing,
                                 comatch_pseudo_label_graph)



def _co(train, sel, **kw):
    args = dict(steps=6, batch_size=8, mu=2, queue_batches=2, seed=0, progress=False, ckpt_every=3, log_every=2)
    args.update(kw)
    return train_comatch(train, sel, **args)


def _same(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------------- losses
def test_memory_smoothing_by_hand():
    p = torch.tensor([[1.0, 0.0]])
    z = torch.tensor([[1.0, 0.0]])
    bank_z = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank_q = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # t = 1: a = softmax([1, 0]) = [e/(e+1), 1/(e+1)] = [0.7310586, 0.2689414]; a @ bank_q = [0.2689414, 0.7310586]
    # alpha = 0.5: q = 0.5 [1, 0] + 0.5 [0.2689414, 0.7310586] = [0.6344707, 0.3655293]
    q = comatch_memory_smoothing(p, z, bank_z, bank_q, alpha=0.5, temperature=1.0)
    assert torch.allclose(q, torch.tensor([[0.6344707, 0.3655293]]), atol=1e-6)
    # t = 0.5: a = softmax([2, 0]) = [0.8807971, 0.1192029]; alpha = 0.9: q = 0.9 [1, 0] + 0.1 [0.1192029, 0.8807971]
    q = comatch_memory_smoothing(p, z, bank_z, bank_q, alpha=0.9, temperature=0.5)
    assert torch.allclose(q, torch.tensor([[0.9119203, 0.0880797]]), atol=1e-6)
    assert torch.equal(comatch_memory_smoothing(p, z, bank_z, bank_q, alpha=1.0), p)
    assert q.sum().item() == pytest.approx(1.0)


def test_pseudo_label_graph_by_hand():
    q = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9]])
    # q q^T = [[.82, .74, .18], [.74, .68, .26], [.18, .26, .82]]; self-loops -> 1; >= 0.7 kept:
    # [[1, .74, 0], [.74, 1, 0], [0, 0, 1]]; rows / [1.74, 1.74, 1]
    g = comatch_pseudo_label_graph(q, threshold=0.7)
    want = torch.tensor([[1 / 1.74, 0.74 / 1.74, 0.0], [0.74 / 1.74, 1 / 1.74, 0.0], [0.0, 0.0, 1.0]])
    assert torch.allclose(g, want, atol=1e-6)
    # the self-loop stays although q_b . q_b = 0.5 < threshold
    assert torch.equal(comatch_pseudo_label_graph(torch.tensor([[0.5, 0.5]]), threshold=0.8), torch.tensor([[1.0]]))


def test_graph_contrastive_loss_by_hand():
    z = torch.eye(2)
    # t = 1: each row of softmax(z z'^T) = [e/(e+1), 1/(e+1)]; -log(0.7310586) = 0.3132617, -log(0.2689414) = 1.3132617
    loss = comatch_contrastive_loss(z, z, torch.eye(2), temperature=1.0)
    assert loss.item() == pytest.approx(0.3132617, abs=1e-6)
    loss = comatch_contrastive_loss(z, z, torch.full((2, 2), 0.5), temperature=1.0)
    assert loss.item() == pytest.approx(0.5 * (0.3132617 + 1.3132617), abs=1e-6)
    # the graph is a target: gradients reach the projections only
    z1 = torch.tensor([[0.6, 0.8], [1.0, 0.0]], requires_grad=True)
    g = torch.tensor([[0.5, 0.5], [0.0, 1.0]], requires_grad=True)
    comatch_contrastive_loss(z1, torch.eye(2), g, temperature=0.2).backward()
    assert z1.grad is not None and g.grad is None


def test_comatch_loss_by_hand():
    logits_x, y = torch.zeros(1, 2), torch.tensor([0])
    logits_s = torch.zeros(2, 2, requires_grad=True)
    q = torch.tensor([[0.96, 0.04], [0.5, 0.5]])
    z = torch.eye(2)
    loss, st = comatch_loss(logits_x, y, logits_s, z, z, q, threshold=0.95, lambda_u=1.0, lambda_c=2.0,
                            contrast_threshold=0.8, temperature=1.0)
    # L_x = ln 2; mask = [1, 0]; L_u = (H([.96, .04], [.5, .5]) * 1 + 0) / 2 = ln 2 / 2;
    # q q^T = [[.9232, .5], [.5, .5]] -> the graph is the identity; L_c = -log(e / (e + 1)) = 0.3132617
    ln2 = math.log(2)
    assert st["loss_x"].item() == pytest.approx(ln2, abs=1e-6)
    assert st["loss_u"].item() == pytest.approx(ln2 / 2, abs=1e-6)
    assert st["loss_c"].item() == pytest.approx(0.3132617, abs=1e-6)
    assert loss.item() == pytest.approx(ln2 + ln2 / 2 + 2 * 0.3132617, abs=1e-5)
    assert st["mask"].item() == 0.5 and st["edges"].item() == 1.0
    assert st["pseudo_labels"].tolist() == [0, 0] and st["confident"].tolist() == [True, False]
    # the soft target: gradient of L_u on the confident row is (softmax - q) / 2 = ([.5, .5] - [.96, .04]) / 2
    loss.backward()
    assert torch.allclose(logits_s.grad, torch.tensor([[-0.23, 0.23], [0.0, 0.0]]), atol=1e-6)


def test_losses_reject_bad_shapes_and_values():
    z, q = torch.eye(2), torch.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        comatch_memory_smoothing(q, z, z, q, alpha=1.5)
    with pytest.raises(ValueError, match="bank_feats must be"):
        comatch_memory_smoothing(q, z, torch.zeros(0, 2), torch.zeros(0, 2))
    with pytest.raises(ValueError, match="threshold must be in"):
        comatch_pseudo_label_graph(q, threshold=2.0)
    with pytest.raises(ValueError, match=r"graph must be \(2, 2\)"):
        comatch_contrastive_loss(z, z, torch.eye(3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        comatch_contrastive_loss(z, z, torch.eye(2), temperature=0.0)
    with pytest.raises(ValueError, match="differ in shape"):
        comatch_loss(torch.zeros(1, 2), torch.tensor([0]), torch.zeros(3, 2), z, z, q)


# ---------------------------------------------------------------------------------------------------- bank
def test_memory_bank_is_a_ring():
    bank = MemoryBank(5, 2, 3)
    rows = torch.arange(13, dtype=torch.float32)

    def push(a, b):
        bank.push(rows[a:b, None].expand(-1, 2), rows[a:b, None].expand(-1, 3))

    push(0, 3)
    assert (int(bank.ptr), int(bank.filled), bank.full) == (3, 3, False)
    assert bank.feats[:, 0].tolist() == [0, 1, 2, 0, 0]
    push(3, 6)  # slots 3, 4, 0
    assert (int(bank.ptr), int(bank.filled), bank.full) == (1, 5, True)
    assert bank.feats[:, 0].tolist() == [5, 1, 2, 3, 4] and bank.probs[:, 2].tolist() == [5, 1, 2, 3, 4]
    push(6, 13)  # 7 rows into 5 slots from slot 1: as if written one by one, rows 8..12 stay
    assert (int(bank.ptr), int(bank.filled)) == (3, 5)
    assert bank.feats[:, 1].tolist() == [10, 11, 12, 8, 9]
    assert {"feats", "probs", "ptr", "filled"} <= set(bank.state_dict())  # buffers: checkpointed
    with pytest.raises(ValueError, match=r"push needs feats \(n, 2\) and probs \(n, 3\)"):
        bank.push(torch.zeros(2, 2), torch.zeros(2, 4))


# ---------------------------------------------------------------------------------------------------- views
@pytest.mark.parametrize("batched", [True, False])
def test_three_views_per_sample(digits, batched):
    train, _ = digits
    views = Views(train, ("weak", "strong", "simclr"), batched=batched)
    batch = next(iter(StepLoader(views.dataset, StepStream(len(train), 4, seed=0)).iterate(0, 1)))
    out = views(batch)
    assert len(out) == 3 and all(v.shape == (4, 1, 8, 8) for v in out)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])


def test_multi_views_takes_any_number_of_transforms():
    img = torch.randint(0, 256, (1, 8, 8), dtype=torch.uint8)
    t = MultiViews(weak_transform("grey28"), strong_transform("grey28"), simclr_transform("grey28"))
    torch.manual_seed(0)
    three = t(img)
    torch.manual_seed(0)
    two = MultiViews(weak_transform("grey28"), strong_transform("grey28"))(img)
    assert len(three) == 3 and torch.equal(three[0], two[0]) and torch.equal(three[1], two[1])
    assert repr(t).startswith("MultiViews(") and TwoViews is MultiViews  # the former name still works
    with pytest.raises(ValueError, match="give t2"):
        MultiViews(weak_transform("grey28"), None, simclr_transform("grey28"))


# ---------------------------------------------------------------------------------------------------- config
def test_config_presets_and_validation():
    paper = CoMatchConfig.preset("paper")
    assert (paper.arch, paper.steps, paper.batch_size, paper.mu, paper.lr, paper.weight_decay) == \
        ("wrn28_2", 2**19, 64, 7, 0.03, 5e-4)
    assert (paper.threshold, paper.alpha, paper.contrast_threshold, paper.temperature, paper.proj_dim,
            paper.queue_batches, paper.da_window, paper.lambda_c, paper.ema_decay) == \
        (0.95, 0.9, 0.8, 0.2, 64, 5, 32, 1.0, 0.999)
    assert CoMatchConfig.preset("cpu").arch == "cnn_small"
    for bad, msg in [({"alpha": 1.5}, "alpha must be <= 1"), ({"temperature": 0}, "temperature must be > 0"),
                     ({"queue_batches": 0}, "queue_batches must be >= 1"), ({"cutout": "x"}, "cutout must be"),
                     ({"contrast_threshold": -0.1}, "contrast_threshold must be >= 0"),
                     ({"ema_decay": 1.0}, "ema_decay must be in")]:
        with pytest.raises(ValueError, match=msg):
            CoMatchConfig(**bad)


# ---------------------------------------------------------------------------------------------------- training
def test_comatch_learns_on_digits(digits, selection, tmp_path):
    train, test = digits
    res = train_comatch(train, selection, steps=60, batch_size=16, mu=2, queue_batches=2, lr=0.05, threshold=0.8,
                        contrast_threshold=0.5, ema_decay=0.9, seed=0, test_set=test, progress=False,
                        out_dir=tmp_path / "cm", log_every=10)
    hist = json.loads((tmp_path / "cm" / "history.json").read_text())
    assert [h["step"] for h in hist] == [10, 20, 30, 40, 50, 60]
    assert {"loss", "loss_x", "loss_u", "loss_c", "mask", "edges", "pseudo_acc", "mask_correct"} <= hist[0].keys()
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]
    assert hist[-1]["loss_x"] < 0.5 * hist[0]["loss_x"] and hist[-1]["loss_c"] < hist[0]["loss_c"]
    assert max(h["mask"] for h in hist) > 0 and max(h["edges"] for h in hist) > 1  # both unlabelled losses act
    assert res.metrics["ema_top1"] > 0.3 and res.metrics["top1"] > 0.3  # chance is 0.1
    assert res.extras["bank"].full and int(res.extras["align"].seen) == 60
    for name in ("model.pt", "model_ema.pt", "results.json", "config.json", "state.pt"):
        assert (tmp_path / "cm" / name).exists()


def test_same_seed_same_weights_bit_for_bit(digits, selection):
    train, _ = digits
    a, b = _co(train, selection), _co(train, selection)
    assert _same(a.net, b.net) and _same(a.ema, b.ema) and _same(a.extras["bank"], b.extras["bank"])
    assert not _same(a.net, _co(train, selection, seed=1).net)


def test_bank_receives_labelled_one_hots_and_aligned_probabilities(digits, selection):
    train, _ = digits
    res = _co(train, selection, steps=1, queue_batches=1)  # bank = 1 step: 16 unlabelled + 8 labelled rows
    bank = res.extras["bank"]
    assert bank.full and int(bank.ptr) == 0
    lab = StepStream(40, 8, seed=0, stream=1, indices=selection.as_arrays()[0]).batch(0)[0]
    assert torch.equal(bank.probs[16:], torch.nn.functional.one_hot(torch.as_tensor(train.labels[lab]), 10).float())
    assert torch.allclose(bank.probs[:16].sum(1), torch.ones(16)) and bank.probs[:16].max() < 1
    assert torch.allclose(bank.feats.norm(dim=1), torch.ones(24), atol=1e-5)


def test_pseudo_label_monitor_uses_smoothed_labels_and_never_trains(digits, selection, monkeypatch):
    train, _ = digits
    import uslkit.train.comatch as cm

    real, seen = cm.comatch_loss, []

    def spy(*a, **k):
        loss, st = real(*a, **k)
        seen.append((st["pseudo_labels"].clone(), st["confident"].clone(), a[5].argmax(1)))
        return loss, st

    monkeypatch.setattr(cm, "comatch_loss", spy)
    on = _co(train, selection, log_every=1, threshold=0.2)
    monkeypatch.setattr(cm, "comatch_loss", real)
    off = _co(train, selection, log_every=1, threshold=0.2, monitor_pseudo_labels=False)
    assert _same(on.net, off.net) and all("pseudo_acc" not in h for h in off.history)
    stream = StepStream(len(train), 16, seed=0, stream=2)
    for step, h in enumerate(on.history):
        pseudo, conf, q_arg = seen[step]
        assert torch.equal(pseudo, q_arg)  # the labels the monitor scores are argmax of the smoothed q
        truth = torch.as_tensor(train.labels[stream.batch(step)[0]])
        assert h["pseudo_acc"] == pytest.approx(float((pseudo == truth).float().mean()))
        assert h["mask_correct"] == pytest.approx(float(((pseudo == truth) & conf).float().mean()))


def test_resume_after_interruption_equals_uninterrupted_bank_included(digits, selection, tmp_path, monkeypatch):
    train, _ = digits
    # threshold 0 and a loose graph: every pseudo-label (hence the bank and the alignment) reaches the loss
    kw = dict(threshold=0.0, contrast_threshold=0.3)
    ref = _co(train, selection, out_dir=tmp_path / "ref", **kw)
    import uslkit.train.comatch as cm

    real, calls = cm.comatch_loss, {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4: after the checkpoint of step 3
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(cm, "comatch_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _co(train, selection, out_dir=tmp_path / "run", **kw)
    monkeypatch.setattr(cm, "comatch_loss", real)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 3 and int(state["extras"]["bank"]["filled"]) == 48  # full: smoothing is on
    assert int(state["extras"]["align"]["seen"]) == 3
    # negative control: the same resume with the bank emptied ends elsewhere, so the check below can fail
    import shutil

    shutil.copytree(tmp_path / "run", tmp_path / "wiped")
    for k in ("feats", "probs", "ptr", "filled"):
        state["extras"]["bank"][k].zero_()
    torch.save(state, tmp_path / "wiped" / "state.pt")
    assert not _same(ref.net, _co(train, selection, out_dir=tmp_path / "wiped", **kw).net)
    res = _co(train, selection, out_dir=tmp_path / "run", **kw)
    assert res.resumed_from == 3
    assert _same(ref.net, res.net) and _same(ref.ema, res.ema)
    assert _same(ref.extras["bank"], res.extras["bank"]) and _same(ref.extras["align"], res.extras["align"])
    again = _co(train, selection, out_dir=tmp_path / "run", **kw)  # finished: loaded with its bank
    assert again.reused and _same(ref.net, again.net) and _same(ref.extras["bank"], again.extras["bank"])


def test_cli_trains_comatch(digits, selection, tmp_path, capsys):
    from uslkit.cli import main

    sel = save_selection(selection, tmp_path / "sel.json")
    out = tmp_path / "run"
    args = ["train", "comatch", "--dataset", "digits", "--labels", str(sel), "--steps", "2", "--batch-size", "8",
            "--param", "mu=2", "--param", "queue_batches=1", "--out", str(out), "-q"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "comatch: trained 2 steps" in text and "ema_top1" in text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["learner"] == "comatch" and cfg["params"]["queue_batches"] == 1 and cfg["params"]["mu"] == 2
    assert main(["train", "comatch", "--dataset", "digits", "--steps", "2", "--out", str(tmp_path / "x"),
                 "-q"]) == 2  # no --labels


def test_clear_errors(digits, selection, tmp_path):
    from uslkit.train.models import build_model, save_model

    train, test = digits
    with pytest.raises(ValueError, match="wrong n"):
        _co(test, selection)
    with pytest.raises(ValueError, match="comatch needs steps|CoMatch needs steps"):
        train_comatch(train, selection, progress=False)
    with pytest.raises(ValueError, match="alpha must be <= 1.0, got 2"):
        _co(train, selection, alpha=2)
    with pytest.raises(ValueError, match=r"unknown CoMatch parameter\(s\) \['queue_size'\]"):
        _co(train, selection, queue_size=10)
    other = save_model(tmp_path / "r18.pt", build_model("resnet18_cifar", 0, in_channels=1))
    with pytest.raises(ValueError, match="has name='resnet18_cifar', the model being trained has name='cnn_small'"):
        _co(train, selection, init=other)
    partial = dataclasses.replace(train, labels=np.where(np.arange(len(train)) == 0, -1, train.labels))
    with pytest.raises(ValueError, match="needs a label for every pool image"):
        _co(partial, selection, monitor_pseudo_labels=True)


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_share_the_bank(tmp_path, selection, torchrun):
    """torchrun --nproc_per_node=2 on CPU (gloo): both processes end with the same parameters, the same memory
    bank, filled from the global batches (2 steps of 16 unlabelled + 8 labelled rows: 48)."""
    sel_path = save_selection(selection, tmp_path / "sel.json")
    out = torchrun(f"""
        import hashlib, os, sys
        import torch
        from uslkit.data import load_dataset
        from uslkit.train import train_comatch
        res = train_comatch(load_dataset("digits", "train"), {str(sel_path)!r}, steps=3, batch_size=8, mu=2,
                            queue_batches=2, threshold=0.0, seed=0, progress=False, out_dir=sys.argv[1], log_every=1)
        b = res.extras["bank"]
        tensors = [p.detach() for p in res.net.parameters()] + [b.feats, b.probs, b.ptr, b.filled,
                                                                res.extras["align"].history]
        h = hashlib.sha256(b"".join(t.numpy().tobytes() for t in tensors)).hexdigest()
        open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w").write(h + " %d" % int(b.filled))
        torch.distributed.destroy_process_group()
    """)
    r0, r1 = (out / "rank0.txt").read_text(), (out / "rank1.txt").read_text()
    assert r0 == r1 and r0.endswith(" 48")
    assert (out / "model.pt").exists() and len(json.loads((out / "history.json").read_text())) == 3
