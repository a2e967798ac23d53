"""The shared loop machinery and the learners on tiny data (sklearn's digits, 8x8 grey)."""

import dataclasses
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from uslkit.labels import make_selection, save_selection
from uslkit.train import finetune, train_fixmatch, train_simclr
from uslkit.train.batches import StepStream, mix_seed

REPO = Path(__file__).resolve().parents[1]


def _fix(train, sel, **kw):
    args = dict(steps=6, batch_size=8, mu=2, seed=0, progress=False, ckpt_every=3, log_every=2)
    args.update(kw)
    return train_fixmatch(train, sel, **args)


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------------------------------------- batches
def test_step_stream_is_a_function_of_seed_and_step():
    s1 = StepStream(10, 4, seed=3, stream=1)
    s2 = StepStream(10, 4, seed=3, stream=1)
    for step in (5, 0, 2, 7):
        i1, a1 = s1.batch(step)
        i2, a2 = s2.batch(step)
        assert np.array_equal(i1, i2) and np.array_equal(a1, a2)
    # consecutive batches walk permutations: each epoch of 10 positions holds every sample once
    seen = np.concatenate([s1.batch(s)[0] for s in range(5)])  # 20 positions = 2 epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert not np.array_equal(StepStream(10, 4, seed=4).batch(0)[0], s1.batch(0)[0]) or True
    assert not np.array_equal(StepStream(10, 4, seed=3, stream=2).batch(0)[1], s1.batch(0)[1])


def test_step_stream_ranks_split_the_global_batch():
    full = StepStream(50, 8, seed=0)
    parts = [StepStream(50, 8, seed=0, rank=r, world_size=2) for r in range(2)]
    for step in range(4):
        i, a = full.batch(step)
        assert np.array_equal(np.concatenate([p.batch(step)[0] for p in parts]), i)
        assert np.array_equal(np.concatenate([p.batch(step)[1] for p in parts]), a)
    with pytest.raises(ValueError, match="divisible"):
        StepStream(50, 7, world_size=2)


def test_mix_seed_stable():
    assert mix_seed(1, 2) == mix_seed(1, 2) != mix_seed(2, 1)
    assert 0 <= mix_seed(0) < 2**63


# ---------------------------------------------------------------------------------------------------- learners
@pytest.mark.slow
def test_fixmatch_beats_chance_on_digits(digits, selection, tmp_path):
    train, test = digits
    res = train_fixmatch(train, selection, steps=60, batch_size=20, mu=2, lr=0.05, threshold=0.8, seed=0,
                         ema_decay=0.9, test_set=test, progress=False, out_dir=tmp_path / "fm", log_every=20)
    assert res.metrics["ema_top1"] > 0.3 and res.metrics["top1"] > 0.3  # chance is 0.1
    assert len(res.metrics["per_class"]) == 10
    hist = json.loads((tmp_path / "fm" / "history.json").read_text())
    assert [h["step"] for h in hist] == [20, 40, 60]
    assert {"loss", "loss_x", "loss_u", "mask", "lr", "samples_per_s"} <= hist[0].keys()
    for name in ("model.pt", "model_ema.pt", "results.json", "config.json", "state.pt"):
        assert (tmp_path / "fm" / name).exists()


def test_same_seed_same_weights_bit_for_bit(digits, selection):
    train, _ = digits
    a, b = _fix(train, selection), _fix(train, selection)
    assert _same_weights(a.net, b.net) and _same_weights(a.ema, b.ema)
    c = _fix(train, selection, seed=1)
    assert not _same_weights(a.net, c.net)


def test_pseudo_label_monitor_logs_from_pool_labels_and_never_trains_on_them(digits, selection, tmp_path,
                                                                              monkeypatch):
    train, _ = digits
    import uslkit.train.fixmatch as fm

    real, seen = fm.fixmatch_loss, []

    def spy(*a, **k):
        loss, st = real(*a, **k)
        seen.append((st["pseudo_labels"].clone(), st["confident"].clone()))
        return loss, st

    monkeypatch.setattr(fm, "fixmatch_loss", spy)
    on = _fix(train, selection, out_dir=tmp_path / "on", log_every=1)
    monkeypatch.setattr(fm, "fixmatch_loss", real)
    off = _fix(train, selection, out_dir=tmp_path / "off", monitor_pseudo_labels=False)
    assert _same_weights(on.net, off.net) and _same_weights(on.ema, off.ema)
    assert all("pseudo_acc" not in h and "mask_correct" not in h for h in off.history)
    # by hand: the unlabelled batch of step s is StepStream(N, B mu, seed, stream=2).batch(s)
    stream = StepStream(len(train), 8 * 2, seed=0, stream=2)
    for step, h in enumerate(on.history):
        pseudo, conf = seen[step]
        truth = torch.as_tensor(train.labels[stream.batch(step)[0]])
        assert h["pseudo_acc"] == pytest.approx(float((pseudo == truth).float().mean()))
        assert h["mask_correct"] == pytest.approx(float(((pseudo == truth) & conf).float().mean()))
        assert h["mask_correct"] <= h["mask"] + 1e-12
    # the monitor is not a run parameter: the finished run is reused with it off
    assert _fix(train, selection, out_dir=tmp_path / "on", log_every=1, monitor_pseudo_labels=False).reused
    # a pool with unlabelled images: off by default, an error when asked for
    import dataclasses

    partial = dataclasses.replace(train, labels=np.where(np.arange(len(train)) == len(train) - 1, -1, train.labels))
    assert all("pseudo_acc" not in h for h in _fix(partial, selection, steps=2).history)
    with pytest.raises(ValueError, match="needs a label for every pool image; 1 of"):
        _fix(partial, selection, steps=2, monitor_pseudo_labels=True)


def test_resume_after_interruption_equals_uninterrupted(digits, selection, tmp_path, monkeypatch):
    train, _ = digits
    ref = _fix(train, selection, out_dir=tmp_path / "ref")
    import uslkit.train.fixmatch as fm

    real = fm.fixmatch_loss
    calls = {"n": 0}

    def dying(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4: after the checkpoint of step 3
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(fm, "fixmatch_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        _fix(train, selection, out_dir=tmp_path / "run")
    monkeypatch.setattr(fm, "fixmatch_loss", real)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=False)
    assert state["step"] == 3
    res = _fix(train, selection, out_dir=tmp_path / "run")
    assert res.resumed_from == 3
    assert _same_weights(ref.net, res.net) and _same_weights(ref.ema, res.ema)
    # a finished run is loaded, not trained again
    again = _fix(train, selection, out_dir=tmp_path / "run")
    assert again.reused and _same_weights(ref.net, again.net)


def _history(res):
    return [{k: v for k, v in h.items() if k != "samples_per_s"} for h in res.history]


def test_ctrl_c_saves_at_the_step_it_came_and_the_rerun_continues_exactly(digits, selection, tmp_path, monkeypatch,
                                                                          capsys):
    """SIGINT during step 5 (between log steps, not a checkpoint step): the loop finishes the step, saves, and
    raises TrainingInterrupted; the rerun says where it resumes and ends with an uninterrupted run's weights and
    history."""
    import signal

    from uslkit.train.loop import TrainingInterrupted

    train, _ = digits
    ref = _fix(train, selection, out_dir=tmp_path / "ref", ckpt_every=100)
    import uslkit.train.fixmatch as fm

    real = fm.fixmatch_loss
    calls = {"n": 0}

    def pressed(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            signal.raise_signal(signal.SIGINT)  # what Ctrl-C sends; the handler only notes it
        return real(*a, **k)

    monkeypatch.setattr(fm, "fixmatch_loss", pressed)
    before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup / a background shell
    with pytest.raises(TrainingInterrupted, match="interrupted at step 5 of 6.*rerun the same command") as e:
        _fix(train, selection, out_dir=tmp_path / "run", ckpt_every=100)
    assert e.value.step == 5 and signal.getsignal(signal.SIGINT) is before  # restored
    monkeypatch.setattr(fm, "fixmatch_loss", real)
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 5
    res = _fix(train, selection, out_dir=tmp_path / "run", ckpt_every=100, progress=True)
    assert "resuming" in capsys.readouterr().err and res.resumed_from == 5
    assert _same_weights(ref.net, res.net) and _same_weights(ref.ema, res.ema)
    assert _history(res) == _history(ref)  # the log step after the resume averages steps 5 and 6, as ref's does


def test_wall_clock_checkpoints(digits, selection, tmp_path, monkeypatch):
    """``ckpt_minutes``: a checkpoint after the step in which the minutes passed, whatever ``ckpt_every`` says."""
    train, _ = digits
    import uslkit.train.loop as loop

    clock = {"t": 0.0}
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock["t"])
    import uslkit.train.fixmatch as fm

    real = fm.fixmatch_loss
    calls = {"n": 0}

    def timed(*a, **k):
        calls["n"] += 1
        clock["t"] += 50.0  # each step takes 50 s of wall time
        if calls["n"] == 4:
            raise RuntimeError("power cut")
        return real(*a, **k)

    monkeypatch.setattr(fm, "fixmatch_loss", timed)
    with pytest.raises(RuntimeError):
        _fix(train, selection, out_dir=tmp_path / "run", ckpt_every=100, ckpt_minutes=1.5)
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=False)["step"] == 2  # 100 s >= 90 s; step 3: 50 s
    with pytest.raises(ValueError, match="ckpt_minutes must be"):
        _fix(train, selection, ckpt_minutes=0)


@pytest.mark.slow
def test_ctrl_c_on_the_command_line_prints_one_line_and_the_rerun_resumes(selection, tmp_path):
    """`uslkit train` under a real SIGINT: exit 130 with one line (no traceback); the same command resumes."""
    import signal
    import time

    sel_path = save_selection(selection, tmp_path / "sel.json")
    out = tmp_path / "run"
    script = textwrap.dedent("""
        import sys, time
        import uslkit.train.fixmatch as fm
        from uslkit.cli import main
        real = fm.fixmatch_loss
        def slow(*a, **k):
            time.sleep(0.3)
            return real(*a, **k)
        fm.fixmatch_loss = slow
        sys.exit(main(sys.argv[1:]))
    """)
    cmd = [sys.executable, "-c", script, "train", "fixmatch", "--dataset", "digits", "--labels", str(sel_path),
           "--steps", "40", "--batch-size", "8", "--param", "mu=2", "--log-every", "1", "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "history.json").exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted at step" in err and "Traceback" not in err
    step = torch.load(out / "state.pt", weights_only=False)["step"]
    assert 1 <= step < 40 and f"step {step} of 40" in err
    again = subprocess.run(cmd[:3] + cmd[3:-1], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"resuming {out} from step {step} of 40" in again.stderr


def test_other_parameters_in_the_folder_are_refused(digits, selection, tmp_path):
    train, _ = digits
    _fix(train, selection, out_dir=tmp_path / "r", steps=2)
    with pytest.raises(ValueError, match="other parameters.*lr"):
        _fix(train, selection, out_dir=tmp_path / "r", steps=2, lr=0.1)
    res = _fix(train, selection, out_dir=tmp_path / "r", steps=2, lr=0.1, overwrite=True)
    assert not res.reused


@pytest.mark.slow
def test_killed_process_resumes(digits, selection, tmp_path):
    """A real SIGKILL mid-run, then the same call resumes from the last checkpoint and ends with the weights of an
    uninterrupted run."""
    train, _ = digits
    sel_path = save_selection(selection, tmp_path / "sel.json")
    script = textwrap.dedent(f"""
        import sys, time
        import uslkit.train.fixmatch as fm
        from uslkit.data import load_dataset
        real = fm.fixmatch_loss
        def slow(*a, **k):
            time.sleep(float(sys.argv[2]))
            return real(*a, **k)
        fm.fixmatch_loss = slow
        fm.train_fixmatch(load_dataset("digits", "train"), {str(sel_path)!r}, steps=8, batch_size=8, mu=2, seed=0,
                          progress=False, ckpt_every=2, log_every=2, out_dir=sys.argv[1])
    """)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-c", script, str(out), "0.5"], cwd=REPO)
    try:
        import time

        deadline = time.time() + 120
        while time.time() < deadline and not (out / "state.pt").exists():
            time.sleep(0.05)
        time.sleep(0.2)
        proc.kill()
    finally:
        proc.wait()
    assert (out / "state.pt").exists() and not (out / "results.json").exists()
    step = torch.load(out / "state.pt", weights_only=False)["step"]
    assert 2 <= step < 8
    res = train_fixmatch(train, sel_path, steps=8, batch_size=8, mu=2, seed=0, progress=False, ckpt_every=2,
                         log_every=2, out_dir=out)
    assert res.resumed_from == step
    ref = train_fixmatch(train, sel_path, steps=8, batch_size=8, mu=2, seed=0, progress=False, ckpt_every=2,
                         log_every=2)
    assert _same_weights(ref.net, res.net)


@pytest.mark.slow
def test_simclr_then_fixmatch_and_finetune_from_it(digits, selection, tmp_path):
    train, test = digits
    res = train_simclr(train, steps=8, batch_size=32, seed=0, progress=False, out_dir=tmp_path / "ssl",
                       eval_sets=(train, test), log_every=4)
    first, last = res.history[0]["loss"], res.history[-1]["loss"]
    assert np.isfinite(first) and last < first
    assert 0.1 < res.metrics["knn1"] <= 1.0
    ckpt = tmp_path / "ssl" / "model.pt"
    fm = _fix(train, selection, init=ckpt, steps=2)
    assert fm.net.arch["name"] == "cnn_small"
    lin = finetune(ckpt, train, selection, mode="linear", epochs=1, samples_per_epoch=80, batch_size=40,
                   test_set=test, progress=False, seed=0)
    # the frozen backbone did not move
    assert all(torch.equal(a, b) for a, b in zip(lin.net.encoder.state_dict().values(),
                                                 res.net.encoder.state_dict().values()))
    assert 0.0 <= lin.metrics["top1"] <= 1.0
    full = finetune(ckpt, train, selection, mode="full", epochs=1, samples_per_epoch=80, batch_size=40,
                    progress=False, seed=0)
    assert not torch.equal(full.net.encoder.state_dict()[next(iter(full.net.encoder.state_dict()))],
                           res.net.encoder.state_dict()[next(iter(res.net.encoder.state_dict()))])


def test_simclr_lars_and_crop_scale_options(digits, tmp_path):
    train, _ = digits
    res = train_simclr(train, steps=3, batch_size=32, seed=0, progress=False, out_dir=tmp_path / "lars",
                       optimizer="lars", crop_scale=[0.5, 1.0], log_every=1)
    params = json.loads((tmp_path / "lars" / "config.json").read_text())["params"]
    assert params["optimizer"] == "lars" and params["crop_scale"] == [0.5, 1.0]
    assert params["lr"] == pytest.approx(0.3 * 32 / 256) and params["weight_decay"] == 1e-6  # SimCLR's recipe
    assert all(np.isfinite(h["loss"]) for h in res.history)
    # the default run records neither option (so runs made before they existed still resume)
    train_simclr(train, steps=1, batch_size=32, seed=0, progress=False, out_dir=tmp_path / "sgd")
    params = json.loads((tmp_path / "sgd" / "config.json").read_text())["params"]
    assert "optimizer" not in params and "crop_scale" not in params and params["weight_decay"] == 5e-4
    with pytest.raises(ValueError, match="optimizer"):
        train_simclr(train, steps=1, optimizer="adam", progress=False)
    with pytest.raises(ValueError, match="crop_scale"):
        train_simclr(train, steps=1, crop_scale=(0.0, 1.0), progress=False)
    # presets: the paper's recipe with an explicit smaller network and batch; the CPU preset
    train_simclr(train, preset="paper", arch="cnn_small", batch_size=32, steps=1, progress=False,
                 out_dir=tmp_path / "paper")
    params = json.loads((tmp_path / "paper" / "config.json").read_text())["params"]
    assert (params["optimizer"], params["temperature"], params["weight_decay"]) == ("lars", 0.1, 1e-6)
    assert params["lr"] == pytest.approx(0.3 * 32 / 256) and "crop_scale" not in params
    train_simclr(train, preset="cpu", batch_size=32, steps=1, progress=False, out_dir=tmp_path / "cpu")
    cfg = json.loads((tmp_path / "cpu" / "config.json").read_text())
    assert cfg["steps"] == 1 and cfg["params"]["temperature"] == 0.1 and cfg["params"]["crop_scale"] == [0.5, 1.0]
    with pytest.raises(ValueError, match="preset"):
        train_simclr(train, preset="imagenet", steps=1, progress=False)
    # a different option is a different run: the folder is not silently reused
    with pytest.raises(ValueError):
        train_simclr(train, steps=3, batch_size=32, seed=0, progress=False, out_dir=tmp_path / "lars",
                     optimizer="lars", crop_scale=[0.6, 1.0])


# ---------------------------------------------------------------------------------------------------- errors
def test_clear_errors(digits, selection, tmp_path):
    train, test = digits
    with pytest.raises(ValueError, match="wrong n"):
        _fix(test, selection)
    unlabelled = make_selection([0, 1, 2], dataset=train, method="x", seed=0)
    with pytest.raises(ValueError, match="no labels yet"):
        _fix(train, unlabelled)
    sel = save_selection(selection, tmp_path / "s.json")
    data = json.loads(Path(sel).read_text())
    data["labels"][0] = 12
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="out of range|outside"):
        _fix(train, bad)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            _fix(train, selection, device="cuda")
        with pytest.raises(ValueError, match="amp"):
            _fix(train, selection, amp=True)
    other = train_simclr(train, steps=1, batch_size=16, arch="resnet18_cifar", progress=False,
                         out_dir=tmp_path / "r18", arch_kwargs=None)
    with pytest.raises(ValueError, match="name"):
        _fix(train, selection, init=tmp_path / "r18" / "model.pt")
    assert other.net.arch["name"] == "resnet18_cifar"
    with pytest.raises(ValueError, match="steps"):
        train_fixmatch(train, selection, progress=False)


# ---------------------------------------------------------------------------------------------------- DDP
@pytest.mark.slow
def test_ddp_two_processes_gloo(tmp_path, selection, torchrun):
    """torchrun --nproc_per_node=2 on CPU (gloo): both processes end with the same parameters, rank 0 writes."""
    sel_path = save_selection(selection, tmp_path / "sel.json")
    out = torchrun(f"""
        import hashlib, os, sys
        import torch
        from uslkit.data import load_dataset
        from uslkit.train import train_fixmatch
        res = train_fixmatch(load_dataset("digits", "train"), {str(sel_path)!r}, steps=3, batch_size=8, mu=2,
                             seed=0, progress=False, out_dir=sys.argv[1], log_every=1)
        # parameters (BN running statistics are each process's own; rank 0's are saved)
        h = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in res.net.parameters())).hexdigest()
        open(os.path.join(sys.argv[1], "rank%s.txt" % os.environ["RANK"]), "w").write(h)
        torch.distributed.destroy_process_group()
    """)
    h0, h1 = (out / "rank0.txt").read_text(), (out / "rank1.txt").read_text()
    assert h0 == h1
    assert (out / "model.pt").exists() and (out / "results.json").exists()
    hist = json.loads((out / "history.json").read_text())
    assert len(hist) == 3 and hist[0]["samples_per_s"] > 0


def test_fixmatch_presets_resolve_with_explicit_values_winning():
    from uslkit.train import FIXMATCH_PRESETS, FixMatchConfig
    from uslkit.train.config import resolve_config

    def _resolve_preset(preset, given):
        return resolve_config(FixMatchConfig, None, preset, given)

    cpu = _resolve_preset("cpu", {})
    assert cpu == FIXMATCH_PRESETS["cpu"] and cpu.steps == 250 and cpu.ema_decay == 0.99
    assert _resolve_preset("paper", dict(steps=1000)).steps == 1000
    assert _resolve_preset("paper", {}).arch == "wrn28_2"
    assert _resolve_preset(None, dict(mu=2)).mu == 2
    with pytest.raises(ValueError, match="unknown FixMatch preset"):
        _resolve_preset("fast", {})


def test_explicit_values_equal_to_the_defaults_beat_the_preset():
    """The preset bug of issue 13: an explicit value equal to the function default was replaced by the preset's."""
    from uslkit.train import FixMatchConfig, SimCLRConfig
    from uslkit.train.config import resolve_config

    assert resolve_config(FixMatchConfig, None, "cpu", dict(ema_decay=0.999)).ema_decay == 0.999
    assert resolve_config(FixMatchConfig, None, "paper", dict(arch="cnn_small")).arch == "cnn_small"
    assert resolve_config(SimCLRConfig, None, "paper", dict(batch_size=256)).batch_size == 256
    # a config object is the base, overrides still win; config and preset together are refused
    base = FixMatchConfig.preset("cpu")
    assert resolve_config(FixMatchConfig, base, None, dict(mu=2)) == FixMatchConfig(steps=250, ema_decay=0.99, mu=2)
    with pytest.raises(ValueError, match="not both"):
        resolve_config(FixMatchConfig, base, "cpu", {})
    with pytest.raises(ValueError, match=r"unknown FixMatch parameter\(s\) \['emadecay'\]"):
        resolve_config(FixMatchConfig, None, None, dict(emadecay=0.9))
    with pytest.raises(TypeError, match="FixMatchConfig"):
        resolve_config(FixMatchConfig, SimCLRConfig(), None, {})
    # one of SimCLR's lengths replaces the other; a run without a length is refused, naming what it needs
    assert resolve_config(SimCLRConfig, None, "cpu", dict(steps=1)) == dataclasses.replace(
        SimCLRConfig.preset("cpu"), steps=1, epochs=None)
    assert resolve_config(SimCLRConfig, None, None, dict(epochs=2.0)).missing() == []
    assert SimCLRConfig().missing() == [("steps", "epochs")] and FixMatchConfig().missing() == [("steps",)]
    with pytest.raises(ValueError, match="FixMatch needs steps"):
        FixMatchConfig().check_complete()
    # the usl preset is the paper's with USL's weight decay
    assert FixMatchConfig.preset("usl") == FixMatchConfig(arch="wrn28_2", steps=2**20, weight_decay=1e-3)


def test_train_fixmatch_trains_with_the_explicit_value_not_the_presets(digits, selection, tmp_path):
    train, _ = digits
    res = _fix(train, selection, preset="cpu", ema_decay=0.999, out_dir=tmp_path / "fm")
    cfg = json.loads((tmp_path / "fm" / "config.json").read_text())
    assert cfg["ema_decay"] == 0.999 and cfg["params"]["ema_decay"] == 0.999 and cfg["steps"] == 6
    assert res.ema is not None
    # a config object gives the same run as the same values passed one by one
    from uslkit.train import FixMatchConfig

    cfg_obj = FixMatchConfig(steps=6, batch_size=8, mu=2, ema_decay=0.999)
    res2 = train_fixmatch(train, selection, cfg_obj, seed=0, progress=False, ckpt_every=3, log_every=2)
    assert _same_weights(res.net, res2.net)


def test_fixmatch_cutout_and_simclr_jitter_options_reach_the_views_and_the_run_record(digits, selection, tmp_path):
    train, _ = digits
    a = _fix(train, selection, steps=2, out_dir=tmp_path / "random")
    b = _fix(train, selection, steps=2, cutout="fixed", out_dir=tmp_path / "fixed")
    pa = json.loads((tmp_path / "random" / "config.json").read_text())["params"]
    pb = json.loads((tmp_path / "fixed" / "config.json").read_text())["params"]
    assert "cutout" not in pa and pb["cutout"] == "fixed"  # the default is not recorded: older runs still resume
    assert not _same_weights(a.net, b.net)
    with pytest.raises(ValueError, match="cutout"):
        _fix(train, selection, cutout="big")
    s1 = train_simclr(train, steps=1, batch_size=32, progress=False, out_dir=tmp_path / "s05")
    s2 = train_simclr(train, steps=1, batch_size=32, progress=False, jitter_strength=1.0, out_dir=tmp_path / "s1")
    p2 = json.loads((tmp_path / "s1" / "config.json").read_text())["params"]
    assert p2["jitter_strength"] == 1.0
    assert "jitter_strength" not in json.loads((tmp_path / "s05" / "config.json").read_text())["params"]
    assert not _same_weights(s1.net, s2.net)  # grey digits: brightness and contrast scale with the strength
    from uslkit.train import SimCLRConfig

    assert SimCLRConfig.preset("paper").jitter_strength == 1.0


def test_run_folder_is_named_by_every_parameter_of_the_run(digits, tmp_path):
    from uslkit.train import FixMatchConfig
    from uslkit.train.config import run_folder

    train, _ = digits
    cfg = FixMatchConfig(steps=10)
    a = run_folder(tmp_path, cfg, dataset=train, seed=0, init="m.pt")
    assert a.parent == tmp_path and a.name.startswith(f"fixmatch_digits_n{len(train)}_cnn_small_s0_")
    assert a == run_folder(tmp_path, FixMatchConfig(steps=10), dataset=train, seed=0, init="m.pt")
    others = {run_folder(tmp_path, FixMatchConfig(steps=11), dataset=train, seed=0, init="m.pt"),
              run_folder(tmp_path, cfg, dataset=train, seed=1, init="m.pt"),
              run_folder(tmp_path, cfg, dataset=train, seed=0, init="n.pt"),
              run_folder(tmp_path, FixMatchConfig(steps=10, cutout="fixed"), dataset=train, seed=0, init="m.pt")}
    assert a not in others and len(others) == 4
