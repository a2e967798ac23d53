"""MSF, CMSF (2Q, KM, semi-supervised) and SeLa: losses and constraint sets against hand values, a few steps on
digits, resume after a kill, the labels file's checks and the configs."""

import numpy as np
import pytest
import torch

from uslkit.labels import annotate, make_selection
from uslkit.train import msf as M
from uslkit.train import sela as S
from uslkit.train.config import CMSFConfig, MSFConfig, SeLaConfig


@pytest.fixture(scope="module")
def small(digits):
    """256 digits training images and a 20-label file of them (2 per class)."""
    train, _ = digits
    sub = train.subset(np.arange(256))
    idx = np.concatenate([np.flatnonzero(sub.labels == c)[:2] for c in range(10)])
    return sub, annotate(make_selection(idx, dataset=sub, method="test", seed=0), sub)


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# ----------------------------------------------------------------------------------------------------------
# hand values
# ----------------------------------------------------------------------------------------------------------
def test_mean_shift_loss_top_k_with_and_without_a_constraint_set():
    u = torch.tensor([[1.0, 0.0]])
    v = torch.tensor([[0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8]])
    # distances of u to the bank: 0, 2, 4, 0.8 -> top-2 rows 0 and 3; |v - z|^2 = 2 and 0.4
    loss, idx = M.mean_shift_loss(v, u, bank, topk=2)
    assert idx.tolist() == [[0, 3]] and loss.item() == pytest.approx(1.2)
    # C = rows 1, 2, 3: the nearest of C are 3 (0.8) and 1 (2); |v - z|^2 = 0.4 and 0
    allowed = torch.tensor([[False, True, True, True]])
    loss, idx = M.mean_shift_loss(v, u, bank, topk=2, allowed=allowed)
    assert idx.tolist() == [[3, 1]] and loss.item() == pytest.approx(0.2)
    # C smaller than k: its member first, then the nearest other (row 0)
    loss, idx = M.mean_shift_loss(v, u, bank, topk=2, allowed=torch.tensor([[False, False, True, False]]))
    assert idx.tolist() == [[2, 0]] and loss.item() == pytest.approx((2.0 + 2.0) / 2)


def test_the_constraint_sets_are_the_papers_on_a_constructed_example():
    # CMSF-KM: the bank samples in the target's cluster; empty entries never; no cluster yet: no constraint
    assign = torch.tensor([0, 0, 1, 1, -1])
    bank_idx = torch.tensor([1, 3, -1, 0, 2])
    allowed = M.km_constraint(torch.tensor([0, 2, 4]), bank_idx, assign)
    assert allowed.tolist() == [[True, False, False, True, False],
                                [False, True, False, False, True],
                                [True, True, True, True, True]]
    # CMSF-2Q: the k' bank entries whose previous target is nearest the sample's previous target
    batch_prev = torch.tensor([[1.0, 0.0]])
    bank_prev = torch.tensor([[0.0, 1.0], [0.8, 0.6], [1.0, 0.0], [-1.0, 0.0], [0.6, 0.8]])
    allowed = M.two_queue_constraint(batch_prev, bank_prev, torch.tensor([5, 6, -1, 7, 8]), topk_prime=2)
    assert allowed.tolist() == [[False, True, False, False, True]]  # row 2 is the nearest but an empty entry
    # semi-supervised: the same (pseudo-)label; -1 = unconfident: never in C, and no constraint for it
    allowed = M.label_constraint(torch.tensor([1, -1, 0]), torch.tensor([1, 0, -1, 1]))
    assert allowed.tolist() == [[True, False, False, True], [True, True, True, True], [False, True, False, False]]


def test_momentum_update_moves_the_target_by_one_minus_m():
    t, o = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        t.weight.fill_(1.0), t.bias.fill_(0.0), o.weight.fill_(3.0), o.bias.fill_(1.0)
    M.momentum_update(t, o, 0.75)
    assert torch.allclose(t.weight, torch.full((1, 2), 1.5)) and torch.allclose(t.bias, torch.tensor([0.25]))


def test_sela_loss_initial_equipartition_and_update_times():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [1.0, 0.0]]])  # 2 heads, 2 samples, 2 clusters
    labels = torch.tensor([[0, 1], [1, 1]])
    l0 = (-np.log(np.exp(2) / (np.exp(2) + 1)) - np.log(0.5)) / 2
    l1 = (-np.log(np.e / (np.e + 1)) - np.log(1 / (np.e + 1))) / 2
    assert S.sela_loss(logits, labels).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    init = S.equipartition_labels(103, 10, 3, seed=0)
    assert init.shape == (3, 103) and all(np.bincount(h, minlength=10).tolist() == [11, 11, 11] + [10] * 7
                                          for h in init.numpy())
    assert not torch.equal(init[0], init[1]) and torch.equal(init, S.equipartition_labels(103, 10, 3, seed=0))
    # the reference's times (E + 1.0001) N t: E = 100 * 64 / 1000 = 6.4 epochs, 5 updates spaced linearly
    n, b = 1000, 64
    times = (6.4 + 1.0001) * n * np.linspace(0, 1, 5)
    want = [int(np.ceil(t / b)) for t in times if np.ceil(t / b) < 100]
    assert S.label_update_steps(100, b, n, 5) == want == [0, 29, 58, 87]
    assert S.label_update_steps(100, b, n, 5, "quadratic")[:3] == [0, 8, 29]
    assert S.label_update_steps(10, 64, 1000, 50) == list(range(10))  # at most one a step


def test_sela_labels_are_the_argmax_of_an_equipartitioned_sinkhorn_plan(digits, monkeypatch):
    import uslkit.cluster as C

    train, _ = digits
    sub = train.subset(np.arange(200))
    plans = []
    real = C.sinkhorn_knopp

    def recording(*a, **k):
        out = real(*a, **k)
        plans.append(out)
        return out

    monkeypatch.setattr(C, "sinkhorn_knopp", recording)
    res = S.train_sela(sub, steps=2, batch_size=50, heads=2, clusters=10, label_updates=1, heads_per_update="all",
                       lam=10.0, sk_tol=1e-6, seed=0, progress=False)
    labels = res.extras["state"].labels.numpy()
    assert len(plans) == 2  # one update (step 0), both heads
    for h, (new, q) in enumerate(plans):
        assert np.allclose(q.sum(axis=0), 1 / 10, rtol=1e-4) and np.allclose(q.sum(axis=1), 1 / 200)  # eq. 7
        assert np.array_equal(labels[h], new) and np.array_equal(new, q.argmax(axis=1))
    assert not np.array_equal(labels, S.equipartition_labels(200, 10, 2, seed=0).numpy())


def test_sela_sinkhorn_cap_is_the_callers(small, monkeypatch):
    from uslkit import cluster as C
    from uslkit.train import sela as S
    from uslkit.train.config import SeLaConfig

    train, _ = small
    sub = train.subset(np.arange(200))
    caps = []
    real = C.sinkhorn_knopp
    monkeypatch.setattr(C, "sinkhorn_knopp", lambda *a, **k: caps.append(k["max_iter"]) or real(*a, **k))
    assert "sk_max_iter" not in SeLaConfig(steps=1).run_params()  # run folders of the default stay valid
    with pytest.warns(RuntimeWarning, match="did not reach"):
        S.train_sela(sub, steps=1, batch_size=50, heads=1, clusters=10, label_updates=1, sk_tol=1e-12,
                     sk_max_iter=2, seed=0, progress=False)
    assert caps == [2]
    with pytest.raises(ValueError, match="sk_max_iter"):
        SeLaConfig(steps=1, sk_max_iter=0)


# ----------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------
def _first_last(res):
    return res.history[0]["loss"], res.history[-1]["loss"]


@pytest.mark.parametrize("constraint", [None, "2q", "km"])
def test_a_few_steps_reduce_the_mean_shift_loss(small, constraint):
    sub, _ = small
    kw = {} if constraint is None else {"constraint": constraint}
    if constraint == "km":
        kw["km_clusters"] = 8
    fn = M.train_msf if constraint is None else M.train_cmsf
    res = fn(sub, steps=24, batch_size=32, bank_size=256, seed=0, progress=False, log_every=4, **kw)
    first, last = _first_last(res)
    assert last < first
    assert 0.0 <= res.history[-1]["purity_msf"] <= 1.0
    if constraint is not None:
        assert 0.0 <= res.history[-1]["purity_c"] <= 1.0
    if constraint == "km":  # clustered at every epoch end (8 steps of 32)
        assert (res.extras["memory"].assign >= 0).all()


def test_semi_supervised_cmsf_trains_the_pseudo_labeller_and_constrains(small):
    sub, sel = small
    res = M.train_cmsf(sub, sel, constraint="labels", steps=24, batch_size=32, bank_size=256, pseudo_epochs=100,
                       pseudo_threshold=0.5, seed=0, progress=False, log_every=4)
    mem = res.extras["memory"]
    assert mem.sup_seen.all()  # 24 steps of 32 pass over the 256 images 3 times
    first, last = _first_last(res)
    assert last < first
    assert res.history[-1]["confident"] > 0  # the MLP labels some unlabelled samples confidently
    given = mem.given[mem.bank_idx.clamp(min=0)]
    in_file = (mem.bank_idx >= 0) & (given >= 0)
    assert in_file.any() and torch.equal(mem.bank_label[in_file], given[in_file])  # the file's labels reach the bank
    pseudo = (mem.bank_idx >= 0) & (given < 0) & (mem.bank_label >= 0)
    assert pseudo.any()  # and confident pseudo-labels of unlabelled images


def test_a_few_steps_reduce_the_sela_loss_between_label_updates(small, tmp_path):
    from uslkit.embed import embed_dataset

    sub, _ = small
    res = S.train_sela(sub, steps=16, batch_size=32, heads=2, clusters=10, label_updates=1, seed=0, progress=False,
                       log_every=4, out_dir=tmp_path / "sela")
    first, last = _first_last(res)
    assert last < first
    emb = embed_dataset(sub, encoder=f"ckpt:{tmp_path / 'sela' / 'model.pt'}", pca=None, progress=False)
    assert emb.shape == (256, res.net.feat_dim)


def _kill_at(monkeypatch, module, name, call):
    real = getattr(module, name)
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(module, name, dying)
    return real


@pytest.mark.parametrize("learner", ["km", "labels", "sela"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(small, tmp_path, monkeypatch, learner):
    sub, sel = small
    if learner == "sela":
        assert S.label_update_steps(10, 64, 256, 8) == [0, 3, 5, 7, 9]  # two of them after the resume at 6
        run = lambda out: S.train_sela(sub, steps=10, batch_size=64, heads=2, clusters=10, label_updates=8,  # noqa
                                       seed=1, progress=False, ckpt_every=3, out_dir=out)
        module, name, call = S, "sela_loss", 8  # killed in step 7: resumes from 6
    else:
        kw = {"constraint": "km", "km_clusters": 8} if learner == "km" else {"constraint": "labels", "labels": sel,
                                                                          "pseudo_epochs": 20}
        run = lambda out: M.train_cmsf(sub, steps=10, batch_size=64, bank_size=128, seed=1, progress=False,  # noqa
                                       ckpt_every=3, out_dir=out, **kw)
        # one epoch = 4 steps: K-means at steps 4 and 8, the pseudo-labeller every 2 steps; kill during step 7
        module, name, call = M, "mean_shift_loss", (15 if learner == "km" else 8)
    ref = run(tmp_path / "ref")
    real = _kill_at(monkeypatch, module, name, call)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "run")
    monkeypatch.setattr(module, name, real)
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 6
    res = run(tmp_path / "run")
    assert res.resumed_from == 6 and _same_weights(ref.net, res.net)
    for key in ref.extras:
        assert _same_weights(ref.extras[key], res.extras[key]), key


def test_same_seed_same_weights_and_the_checkpoint_is_an_encoder(small, tmp_path):
    from uslkit.embed import embed_dataset

    sub, _ = small
    a = M.train_cmsf(sub, steps=3, batch_size=32, bank_size=64, seed=3, progress=False, out_dir=tmp_path / "a")
    b = M.train_cmsf(sub, steps=3, batch_size=32, bank_size=64, seed=3, progress=False)
    assert _same_weights(a.net, b.net) and _same_weights(a.extras["memory"], b.extras["memory"])
    emb = embed_dataset(sub, encoder=f"ckpt:{tmp_path / 'a' / 'model.pt'}", pca=None, progress=False)
    assert emb.shape == (256, a.net.feat_dim)


# ----------------------------------------------------------------------------------------------------------
# inputs and configs
# ----------------------------------------------------------------------------------------------------------
def test_labels_file_checks(small, digits):
    sub, sel = small
    _, test = digits
    other = annotate(make_selection(np.arange(10), dataset=test, method="test", seed=0), test)
    with pytest.raises(ValueError, match="test|split|dataset|images"):
        M.train_cmsf(sub, other, constraint="labels", steps=1, batch_size=32, bank_size=64, progress=False)
    with pytest.raises(ValueError, match="constraint='labels' needs a labels file"):
        M.train_cmsf(sub, constraint="labels", steps=1, batch_size=32, progress=False)
    with pytest.raises(ValueError, match="only read with constraint='labels'"):
        M.train_cmsf(sub, sel, steps=1, batch_size=32, progress=False)


def test_configs_defaults_presets_and_errors():
    assert CMSFConfig().resolved_topk == 5 and CMSFConfig(constraint="labels").resolved_topk == 10
    assert CMSFConfig(constraint="labels", topk=3).resolved_topk == 3  # what the caller says wins
    assert CMSFConfig(constraint="labels").resolved_add_msf_loss is False and CMSFConfig().resolved_add_msf_loss
    with pytest.raises(ValueError, match="topk_prime=3 has no effect without constraint='2q'"):
        CMSFConfig(constraint="km", topk_prime=3)
    with pytest.raises(ValueError, match="constraint"):
        CMSFConfig(constraint="kmeans")
    with pytest.raises(ValueError, match="topk 10 is larger than bank_size 8"):  # the derived top-k is checked too
        CMSFConfig(constraint="labels", bank_size=8, batch_size=8)
    with pytest.raises(ValueError, match="target_view"):
        MSFConfig(target_view="weak")
    with pytest.raises(ValueError, match="heads_per_update"):
        SeLaConfig(heads_per_update="some")
    assert SeLaConfig.preset("cifar").clusters == 128 and SeLaConfig.preset("imagenet").lam == 25.0
    with pytest.raises(ValueError, match="unknown MSF parameter"):
        M.train_msf(None, steps=1, constraint="km")


def test_preset_and_explicit_override_reach_the_run_record(small, tmp_path):
    import json

    sub, _ = small
    M.train_cmsf(sub, preset="cpu", steps=1, batch_size=32, bank_size=64, target_momentum=0.9, progress=False,
                 out_dir=tmp_path / "c")
    params = json.loads((tmp_path / "c" / "config.json").read_text())["params"]
    assert params["target_momentum"] == 0.9 and params["bank_size"] == 64 and params["topk"] == 5
    assert params["proj_dim"] == 32 and params["lr"] == pytest.approx(0.05 * 32 / 256)


def test_the_command_line_trains_cmsf_from_a_labels_file(digits, selection, tmp_path, capsys):
    from uslkit.cli import main
    from uslkit.labels import save_selection

    _, test = digits
    path, other = tmp_path / "sel.json", tmp_path / "other.json"
    save_selection(selection, path)
    save_selection(annotate(make_selection(np.arange(10), dataset=test, method="test", seed=0), test), other)
    base = ["train", "cmsf", "--dataset", "digits", "--steps", "2", "--batch-size", "32", "--param",
            "bank_size=64", "--param", "constraint=labels", "--quiet", "--test-split", ""]
    assert main([*base, "--out", str(tmp_path / "run"), "--labels", str(path)]) == 0
    assert (tmp_path / "run" / "model.pt").exists()
    assert main([*base, "--out", str(tmp_path / "no"), "--labels", str(other)]) == 2
    assert main([*base, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert "test" in err and "needs a labels file (labels=..., --labels on the command line)" in err


def test_2q_searches_near_the_previous_visits_target(small, monkeypatch):
    """The 2Q constraint compares each sample's target of its previous visit (the bank row of the previous epoch)
    with the bank samples' previous targets, as the reference's two-slot cache."""
    sub, _ = small
    sub = sub.subset(np.arange(64))
    seen = []
    real = M.two_queue_constraint
    monkeypatch.setattr(M, "two_queue_constraint",
                        lambda bp, mp, bi, **k: seen.append(bp.clone()) or real(bp, mp, bi, **k))
    res = M.train_cmsf(sub, steps=2, batch_size=64, bank_size=128, seed=0, progress=False)
    mem = res.extras["memory"]
    first, second = slice(0, 64), slice(64, 128)  # the bank, written modulo its length: step 0, then step 1
    order = torch.argsort(mem.bank_idx[second])  # step 1's batch order, by image
    by_image = torch.empty_like(mem.bank[first])
    by_image[mem.bank_idx[first]] = mem.bank[first]  # each image's target at step 0
    assert torch.equal(seen[1][order], by_image[mem.bank_idx[second]][order])  # step 1 searched from step 0's
    assert torch.equal(mem.prev[mem.bank_idx[first]], mem.bank[first])  # M': the previous augmentation
    assert torch.equal(mem.last[mem.bank_idx[second]], mem.bank[second])


def test_an_image_twice_in_a_batch_caches_its_later_target(small):
    assert M._last_occurrence(torch.tensor([3, 1, 3, 0, 1])).tolist() == [False, False, True, True, True]
    sub, _ = small
    sub = sub.subset(np.arange(100))  # batches of 64 cross epoch boundaries: some images appear twice
    a = M.train_cmsf(sub, steps=5, batch_size=64, bank_size=1024, seed=0, progress=False)
    b = M.train_cmsf(sub, steps=5, batch_size=64, bank_size=1024, seed=0, progress=False)
    assert _same_weights(a.extras["memory"], b.extras["memory"])
    mem = a.extras["memory"]
    rows = torch.arange(5 * 64)
    latest = torch.full((100,), -1, dtype=torch.long).scatter_reduce(0, mem.bank_idx[rows], rows, reduce="amax")
    assert torch.equal(mem.last, mem.bank[latest])  # every image's cache is its latest target


def test_the_crop_view_is_the_simclr_crop_without_colour_changes():
    from uslkit.train.augment import BatchAugment, crop_transform

    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    x[:, 0], x[:, 1], x[:, 2] = 200, 40, 90  # one flat colour: crops and flips leave it, jitter / grey do not
    seeds = np.arange(4)
    crop = BatchAugment("rgb32", "crop")(x, seeds)
    assert torch.allclose(crop, crop[:, :, :1, :1].expand_as(crop)) and torch.allclose(crop[0], crop[3])
    assert not torch.allclose(BatchAugment("rgb32", "simclr")(x, seeds)[:, :, 0, 0], crop[:, :, 0, 0])
    one = crop_transform("rgb32")(x[0])
    assert torch.allclose(one, crop[0], atol=1e-6)
    ramp = (torch.arange(32, dtype=torch.uint8) * 8).repeat(1, 32, 1)  # (1, 32, 32) horizontal ramp
    torch.manual_seed(0)
    views = [crop_transform("grey28")(ramp) for _ in range(4)]
    assert not all(torch.equal(views[0], v) for v in views[1:])  # the per-sample path crops too
    ramp = torch.arange(32, dtype=torch.uint8).repeat(1, 1, 32, 1) * 8  # a horizontal ramp: the crop shows
    assert not torch.equal(BatchAugment("grey28", "crop")(ramp, [0])[0], BatchAugment("grey28", "test")(ramp, [0])[0])


@pytest.mark.slow
def test_ddp_two_processes_keep_one_bank_and_one_pseudo_labeller(torchrun):
    """torchrun --nproc_per_node=2 on CPU (gloo): every process writes the targets of both into its bank and caches,
    clusters the same cache (KM, at the epoch end: step 4) and trains the same pseudo-label MLP (every 2 steps), so
    banks, caches, clusters, heads and weights are equal on both ranks."""
    out = torchrun("""
        import hashlib, os, sys
        import numpy as np
        import torch
        from uslkit.data import load_dataset
        from uslkit.labels import annotate, make_selection
        from uslkit.train.msf import train_cmsf
        train = load_dataset("digits", "train").subset(np.arange(128))  # one epoch = 4 steps of 32
        sel = annotate(make_selection(np.arange(0, 128, 8), dataset=train, method="test", seed=0), train)
        h = []
        for constraint, extra in (("2q", {}), ("km", {"km_clusters": 8}), ("labels", {"pseudo_epochs": 5})):
            res = train_cmsf(train, sel if constraint == "labels" else None, steps=6, batch_size=32, bank_size=96,
                             constraint=constraint, seed=0, progress=False, log_every=1,
                             out_dir=os.path.join(sys.argv[1], constraint), **extra)
            mem = res.extras["memory"]
            if constraint == "km":
                assert (mem.assign >= 0).all()
            if constraint == "labels":
                assert mem.sup_seen.all()
            # parameters (BN running statistics are each process's own), the bank, caches and pseudo-labeller
            tensors = [*res.net.parameters(), *res.extras["target"].parameters(), *mem.state_dict().values()]
            h.append(hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest())
        open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w").write(" ".join(h))
        torch.distributed.destroy_process_group()
    """)
    assert (out / "rank0.txt").read_text() == (out / "rank1.txt").read_text()
    assert all((out / c / "model.pt").exists() for c in ("2q", "km", "labels"))


@pytest.mark.slow
def test_ddp_sela_takes_the_first_process_labels(torchrun):
    """A label update after step 0 (step 4), when the processes' BN statistics differ: both take rank 0's labels."""
    assert S.label_update_steps(6, 32, 128, 4) == [0, 4]
    out = torchrun("""
        import hashlib, os, sys
        import numpy as np
        import torch
        from uslkit.data import load_dataset
        from uslkit.train.sela import train_sela
        res = train_sela(load_dataset("digits", "train").subset(np.arange(128)), steps=6, batch_size=32, heads=2,
                         clusters=10, label_updates=4, seed=0, progress=False, out_dir=sys.argv[1], log_every=1)
        tensors = [*res.net.parameters(), *res.extras["heads"].parameters(), res.extras["state"].labels]
        h = hashlib.sha256(b"".join(t.detach().cpu().numpy().tobytes() for t in tensors)).hexdigest()
        open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w").write(h)
        torch.distributed.destroy_process_group()
    """)
    assert (out / "rank0.txt").read_text() == (out / "rank1.txt").read_text()


def test_head_features_of_moco_and_cmsf_checkpoints(small, tmp_path):
    """``features="head"`` rebuilds each learner's projection head from its weights: MoCo's Linear-ReLU-Linear
    ``head_q`` and CMSF's Linear-BN-ReLU-Linear ``projector`` applied to the backbone features."""
    from uslkit.embed import embed_dataset, l2_normalize
    from uslkit.evaluate import extract_features
    from uslkit.train.moco import train_moco

    sub, _ = small
    runs = {"moco": (train_moco(sub, steps=2, batch_size=32, queue_size=64, progress=False, out_dir=tmp_path / "m"),
                     "head_q", tmp_path / "m"),
            "cmsf": (M.train_cmsf(sub, steps=2, batch_size=32, bank_size=64, progress=False, out_dir=tmp_path / "c"),
                     "projector", tmp_path / "c")}
    for name, (res, head, out) in runs.items():
        got = embed_dataset(sub, encoder=f"ckpt:{out / 'model.pt'}", pca=None, features="head", progress=False)
        with torch.no_grad():
            raw = torch.from_numpy(extract_features(res.net, sub))
            want = l2_normalize(res.extras[head].eval()(raw).numpy())  # embeddings are L2-normalised
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-5), name
