"""MoCo v2 (uslkit.train.moco): Alg. 1's pieces on hand-made tensors, then the learner on sklearn's digits."""

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import uslkit.train.moco as moco
from uslkit.train.config import MoCoConfig, resolve_config
from uslkit.train.moco import MoCoModule, MoCoQueue, enqueue, moco_logits, momentum_update, train_moco
from uslkit.train.models import build_model


def _run(train, **kw):
    args = dict(steps=6, batch_size=16, queue_size=40, seed=0, progress=False, ckpt_every=3, log_every=2)
    args.update(kw)
    return train_moco(train, **args)


def _state(res):
    """Every trained or carried tensor of a run: the query encoder, its head, the key encoder, the queue."""
    out = {f"net.{k}": v for k, v in res.net.state_dict().items()}
    for name, child in res.extras.items():
        out.update({f"{name}.{k}": v for k, v in child.state_dict().items()})
    return out


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------- Alg. 1
def test_logits_and_loss_by_hand():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    queue = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.6, -0.8]])
    logits = moco_logits(q, k, queue, 0.5)
    # row b: [q_b . k_b, q_b . queue_0, q_b . queue_1, q_b . queue_2] / 0.5
    expected = torch.tensor([[0.6, 1.0, -1.0, 0.6], [1.0, 0.0, 0.0, -0.8]]) / 0.5
    torch.testing.assert_close(logits, expected)
    # InfoNCE, eq. 1: -log(e^{l_0} / sum_j e^{l_j}), averaged over the two queries
    row0 = -1.2 + math.log(math.exp(1.2) + math.exp(2.0) + math.exp(-2.0) + math.exp(1.2))
    row1 = -2.0 + math.log(math.exp(2.0) + 1.0 + 1.0 + math.exp(-1.6))
    loss = F.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert loss.item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert (row0 + row1) / 2 == pytest.approx(0.8558, abs=1e-4)  # the numbers, once, by hand
    with pytest.raises(ValueError, match="temperature"):
        moco_logits(q, k, queue, 0.0)
    with pytest.raises(ValueError, match="queue"):
        moco_logits(q, k, queue[:, :1], 0.5)


def test_enqueue_wraps_around_a_queue_that_is_not_a_multiple_of_the_batch():
    queue = torch.zeros(5, 2)
    keys = torch.arange(1.0, 15.0).reshape(7, 2)  # key i = [2i + 1, 2i + 2]
    ptr = enqueue(queue, 0, keys[:3])
    assert ptr == 3 and torch.equal(queue[:3], keys[:3]) and not queue[3:].any()
    ptr = enqueue(queue, ptr, keys[3:6])  # rows 3, 4, then 0: the oldest key is overwritten first
    assert ptr == 1
    torch.testing.assert_close(queue, torch.stack([keys[5], keys[1], keys[2], keys[3], keys[4]]))
    # more keys than rows: the last 5 stay, as if written one by one from row 1 (key j at row (1 + j) % 5)
    ptr = enqueue(queue, 1, keys)
    assert ptr == (1 + 7) % 5
    torch.testing.assert_close(queue, torch.stack([keys[4], keys[5], keys[6], keys[2], keys[3]]))
    with pytest.raises(ValueError, match=r"keys \(n, 2\)"):
        enqueue(queue, 0, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ptr"):
        enqueue(queue, 5, keys[:1])
    # the module's queue keeps its pointer as a buffer (checkpointed)
    bank = MoCoQueue(5, 2)
    torch.testing.assert_close(bank.keys.norm(dim=1), torch.ones(5))
    bank.push(keys[:3])
    bank.push(keys[3:6])
    assert int(bank.ptr) == 1 and "ptr" in bank.state_dict() and "keys" in bank.state_dict()


def test_momentum_update_value():
    target, online = nn.Sequential(nn.Linear(2, 1), nn.BatchNorm1d(1)), nn.Sequential(nn.Linear(2, 1),
                                                                                       nn.BatchNorm1d(1))
    with torch.no_grad():
        target[0].weight.copy_(torch.tensor([[1.0, 2.0]]))
        target[0].bias.fill_(3.0)
        online[0].weight.copy_(torch.tensor([[5.0, -2.0]]))
        online[0].bias.fill_(-1.0)
        online[1].running_mean.fill_(7.0)
    momentum_update(target, online, 0.9)
    # 0.9 t + 0.1 o: [0.9 + 0.5, 1.8 - 0.2], 2.7 - 0.1
    torch.testing.assert_close(target[0].weight, torch.tensor([[1.4, 1.6]]))
    torch.testing.assert_close(target[0].bias, torch.tensor([2.6]))
    assert target[1].running_mean.item() == 0.0  # buffers are not averaged (the reference zips parameters)
    momentum_update(target, online, 0.0)  # m = 0: the key encoder is the query encoder
    torch.testing.assert_close(target[0].weight, online[0].weight)
    with pytest.raises(ValueError, match="same architecture"):
        momentum_update(target, nn.Linear(2, 1), 0.9)


def test_a_step_updates_the_key_encoder_before_its_keys_and_enqueues_after_the_logits():
    torch.manual_seed(0)
    module = MoCoModule(build_model("cnn_small", 0, in_channels=1, seed=0), queue_size=10, key_momentum=0.5,
                        temperature=0.2)
    assert module.head_q[0].in_features == 128 and module.head_q[0].out_features == 128  # hidden = feat_dim
    assert not any(isinstance(m, nn.BatchNorm1d) for m in module.head_q)  # MoCo v2's head has no BN
    assert all(not p.requires_grad for p in module.key.parameters())
    with torch.no_grad():  # a query encoder that differs from the key encoder
        for p in list(module.net.parameters()) + list(module.head_q.parameters()):
            p.add_(0.01 * torch.randn_like(p))
    before = {k: v.clone() for k, v in module.key.state_dict().items()}
    online = {**{f"net.{k}": v for k, v in module.net.state_dict().items()},
              **{f"head.{k}": v for k, v in module.head_q.state_dict().items()}}
    old_queue = module.queue.keys.clone()
    x1, x2 = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    (logits,) = module(x1, x2)
    assert logits.shape == (4, 1 + 10)
    for name, p in module.key.named_parameters():  # m = 0.5: the average of the old key and the query weights
        torch.testing.assert_close(p, 0.5 * before[name] + 0.5 * online[name])
    q = F.normalize(module.head_q(module.net.features(x1)), dim=1)
    with torch.no_grad():
        k = module.key(x2)  # the UPDATED key encoder (train mode: the same batch statistics)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.2)
    torch.testing.assert_close(logits[:, 1:], q @ old_queue.T / 0.2)  # the queue before this step's keys
    torch.testing.assert_close(module.queue.keys[:4], k)
    torch.testing.assert_close(module.queue.keys[4:], old_queue[4:])
    assert int(module.queue.ptr) == 4
    F.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).backward()  # the in-place enqueue broke nothing
    assert module.net.encoder[0].weight.grad is not None


# ---------------------------------------------------------------------------------------------------- learner
def test_training_reduces_the_loss_on_digits(digits):
    """100 steps: the history loss (once the queue holds real keys) and the InfoNCE loss of a fixed batch of
    held-out views against its own keys both go down."""
    from uslkit.train.batches import Views, images_as_tensor

    train, _ = digits
    kw = dict(batch_size=64, queue_size=512, key_momentum=0.99, lr=0.06, temperature=0.1, crop_scale=(0.5, 1.0))
    res = train_moco(train, steps=100, seed=0, progress=False, log_every=1, **kw)
    losses = [h["loss"] for h in res.history]
    assert all(np.isfinite(losses)) and 0.0 <= res.history[-1]["acc"] <= 1.0
    assert np.mean(losses[-10:]) < np.mean(losses[10:20]) - 0.3  # the queue is full after 8 steps

    views = Views(train, ("simclr", "simclr"), crop_scale=(0.5, 1.0))
    v1, v2 = views((images_as_tensor(train)[-256:], None, None, np.arange(256)))

    def fixed_batch_loss(module):
        m = copy.deepcopy(module).train()  # batch statistics, as in training
        with torch.no_grad():
            return F.cross_entropy(m.query(v1) @ m.key(v2).T / 0.1, torch.arange(256)).item()

    init = MoCoModule(build_model("cnn_small", 0, in_channels=1, seed=0), queue_size=8)
    trained = MoCoModule(res.net, queue_size=8)
    trained.head_q, trained.key = res.extras["head_q"], res.extras["key"]
    assert fixed_batch_loss(trained) < fixed_batch_loss(init) - 0.2


def test_same_seed_same_weights_and_queue(digits):
    train, _ = digits
    a, b, c = _run(train), _run(train), _run(train, seed=1)
    assert _same(_state(a), _state(b))
    assert not torch.equal(a.extras["queue"].keys, c.extras["queue"].keys)
    assert int(a.extras["queue"].ptr) == 6 * 16 % 40  # 96 keys through a queue of 40


def test_resume_after_interruption_equals_uninterrupted(digits, tmp_path, monkeypatch):
    train, _ = digits
    ref = _run(train, out_dir=tmp_path / "ref")
    real = moco.moco_logits
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4: after the checkpoint of step 3
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(moco, "moco_logits", dying)
    with pytest.raises(KeyboardInterrupt):
        _run(train, out_dir=tmp_path / "run")
    monkeypatch.setattr(moco, "moco_logits", real)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 3 and int(state["extras"]["queue"]["ptr"]) == 3 * 16 % 40
    assert set(state["extras"]) == {"head_q", "key", "queue"}
    res = _run(train, out_dir=tmp_path / "run")
    assert res.resumed_from == 3
    assert _same(_state(ref), _state(res))  # encoder, head, key encoder, queue and pointer
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    again = _run(train, out_dir=tmp_path / "run")  # a finished run is loaded, not trained again
    exported = lambda st: {k: v for k, v in st.items() if k.startswith(("net.", "head_q."))}  # noqa: E731
    assert again.reused and _same(exported(_state(ref)), exported(_state(again)))
    saved = torch.load(tmp_path / "run" / "model.pt", weights_only=False)["extra"]["extras"]
    assert set(saved) == {"head_q"}  # the key encoder and the queue are training state: state.pt only


def test_symmetric_loss_enqueues_both_key_sets(digits, tmp_path):
    train, _ = digits
    asym = _run(train, steps=2, log_every=1)
    sym = _run(train, steps=2, log_every=1, symmetric=True, out_dir=tmp_path / "sym")
    assert int(sym.extras["queue"].ptr) == 2 * 2 * 16 % 40 and int(asym.extras["queue"].ptr) == 2 * 16
    # the first step's queue is the same random one: the sum of two losses of the same size
    assert sym.history[0]["loss"] > 1.5 * asym.history[0]["loss"]
    params = json.loads((tmp_path / "sym" / "config.json").read_text())["params"]
    assert params["symmetric"] is True


# ---------------------------------------------------------------------------------------------------- config
def test_config_errors(digits):
    train, _ = digits
    with pytest.raises(ValueError, match=r"unknown MoCo parameter\(s\) \['queue'\]"):
        train_moco(train, steps=1, queue=10, progress=False)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        train_moco(train, steps=1, temperature=0.0, progress=False)
    with pytest.raises(ValueError, match="key_momentum must be < 1"):
        MoCoConfig(key_momentum=1.0)
    with pytest.raises(ValueError, match="queue_size must be >= 1"):
        MoCoConfig(queue_size=0)
    with pytest.raises(ValueError, match="symmetric must be True or False"):
        MoCoConfig(symmetric="yes")
    with pytest.raises(ValueError, match="exactly one of steps and epochs"):
        MoCoConfig(steps=1, epochs=1)
    with pytest.raises(ValueError, match="crop_scale"):
        MoCoConfig(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="MoCo needs steps or epochs"):
        train_moco(train, progress=False)
    with pytest.raises(ValueError, match="batch_size 5000 is larger than the dataset"):
        train_moco(train, steps=1, batch_size=5000, progress=False)
    with pytest.raises(ValueError, match="preset"):
        train_moco(train, preset="imagenet", steps=1, progress=False)


def test_presets_and_explicit_values_winning(digits, tmp_path):
    paper, cifar, cpu = (MoCoConfig.PRESETS[k] for k in ("paper", "cifar", "cpu"))
    assert (paper.arch, paper.batch_size, paper.epochs, paper.queue_size, paper.key_momentum, paper.temperature,
            paper.weight_decay) == ("resnet50", 256, 200, 65536, 0.999, 0.2, 1e-4)
    assert (cifar.arch, cifar.batch_size, cifar.queue_size, cifar.key_momentum, cifar.temperature,
            cifar.weight_decay) == ("resnet18_cifar", 512, 4096, 0.99, 0.1, 5e-4)
    for cfg in (paper, cifar, cpu):
        build_model(cfg.arch, 0, in_channels=3)  # every preset names a real architecture
    # an explicit value wins, even one equal to the default; steps clears the preset's epochs
    cfg = resolve_config(MoCoConfig, None, "cpu", {"temperature": 0.2, "steps": 5})
    assert (cfg.temperature, cfg.steps, cfg.epochs, cfg.queue_size) == (0.2, 5, None, 4096)
    train, _ = digits
    train_moco(train, preset="cpu", batch_size=32, steps=1, temperature=0.2, progress=False, out_dir=tmp_path / "c")
    run = json.loads((tmp_path / "c" / "config.json").read_text())
    p = run["params"]
    assert run["steps"] == 1 and (p["temperature"], p["queue_size"], p["key_momentum"]) == (0.2, 4096, 0.99)
    assert p["crop_scale"] == [0.5, 1.0] and p["proj_hidden"] == 128 and p["warmup_steps"] == 0
    assert p["lr"] == pytest.approx(0.03 * 32 / 256)  # MoCo v2's rule for the batch actually used
    train_moco(train, preset="paper", arch="cnn_small", batch_size=32, steps=1, progress=False,
               out_dir=tmp_path / "p")
    p = json.loads((tmp_path / "p" / "config.json").read_text())["params"]
    assert (p["temperature"], p["queue_size"], p["weight_decay"]) == (0.2, 65536, 1e-4)


def test_the_ckpt_encoder_reads_the_query_encoder(digits, tmp_path):
    from uslkit import embed as E
    from uslkit.train.augment import normalize
    from uslkit.train.models import load_model

    train, test = digits
    res = _run(train, steps=2, out_dir=tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    net = load_model(path).eval()
    assert _same(net.state_dict(), res.net.state_dict())  # model.pt is the query encoder
    f = E.embed_dataset(test, f"ckpt:{path}", device="cpu", progress=False)
    assert f.shape == (len(test), 128) and f.dtype == np.float32
    x = normalize(torch.from_numpy(test.images[:5]).unsqueeze(1), "grey28")
    with torch.no_grad():
        ref = E.l2_normalize(res.net.eval().features(x).numpy())
    np.testing.assert_allclose(f[:5], ref, atol=1e-5)


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_share_one_queue(torchrun):
    """torchrun --nproc_per_node=2 on CPU (gloo): each process enqueues the keys of both, so the queues, the
    pointers and the parameters are the same on both ranks."""
    out = torchrun("""
        import hashlib, os, sys
        import torch
        from uslkit.data import load_dataset
        from uslkit.train.moco import train_moco
        res = train_moco(load_dataset("digits", "train"), steps=3, batch_size=16, queue_size=40, seed=0,
                         progress=False, out_dir=sys.argv[1], log_every=1)
        q = res.extras["queue"]
        tensors = [p.detach() for p in res.net.parameters()] + [q.keys, q.ptr]
        h = hashlib.sha256(b"".join(t.numpy().tobytes() for t in tensors)).hexdigest()
        open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w").write(h + " " + str(int(q.ptr)))
        torch.distributed.destroy_process_group()
    """)
    r0, r1 = (out / "rank0.txt").read_text(), (out / "rank1.txt").read_text()
    assert r0 == r1 and r0.endswith(" 8")  # 3 steps x 16 keys (8 per process) through a queue of 40
    assert (out / "model.pt").exists()
