"""benchmarks/bench_learners.py: equal-time step counts, reuse of the recorded FixMatch cells, the table and the
target verdicts it writes (no training here: the learners themselves are tested in test_learners*.py)."""

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_learners")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture
def timed(bench, monkeypatch):
    """seconds_per_step measured as 1.3 s (fixmatch), 0.26 s (mixmatch), 2.6 s (comatch); calls counted."""
    calls = []

    def fake(args, name, train, sel):
        calls.append(name)
        return {"fixmatch": 1.3, "mixmatch": 0.26, "comatch": 2.6}[name]

    monkeypatch.setattr(bench, "seconds_per_step", fake)
    monkeypatch.setattr(bench, "save", lambda args, res: None)
    return calls


def test_equal_time_is_anchored_on_fixmatch_steps(bench, timed):
    res, args = {}, SimpleNamespace(minutes=None)
    assert bench.calibrated_steps(args, res, "fixmatch_da", None, None) == bench.ANCHOR_STEPS
    assert bench.calibrated_steps(args, res, "mixmatch", None, None) == 5000  # 1000 * 1.3 / 0.26
    assert bench.calibrated_steps(args, res, "comatch", None, None) == 500
    assert bench.calibrated_steps(args, res, "flexmatch", None, None) == bench.ANCHOR_STEPS
    assert sorted(timed) == ["comatch", "fixmatch", "mixmatch"]  # once per learner, reused by its variants
    assert res["calibration"]["mixmatch"]["s_per_step"] == 0.26 and "threads" in res["calibration"]["mixmatch"]


def test_explicit_minutes_win(bench, timed):
    res, args = {}, SimpleNamespace(minutes=13)
    assert bench.calibrated_steps(args, res, "fixmatch", None, None) == 600  # 13 * 60 / 1.3
    assert bench.calibrated_steps(args, res, "comatch", None, None) == 300
    assert timed == ["fixmatch", "comatch"]


def _recorded(picks):
    run = {"method": "usl", "seed": 0, "steps": 1000, "run_dir": "w/r", "wall_s": 1500.0, "top1": 0.74,
           "ema_top1": 0.745, "curve": [[200, 0.7], [1000, 0.745]],
           "pool": {"picks": picks, "confident": 0.79, "confident_wrong": 0.134}}
    return {"steps": 1000, "params": {"ema_decay": 0.99}, "runs": {"usl/seed0": run}}


def test_recorded_fixmatch_cell_needs_the_same_picks(bench, monkeypatch):
    train = SimpleNamespace(labels=np.array([0, 0, 1, 1, 2, 2]), num_classes=3)
    sel = SimpleNamespace(indices=[0, 2, 4, 5])  # class histogram [1, 1, 2]
    monkeypatch.setattr(bench, "_recorded_set", lambda: _recorded([1, 1, 2]))
    rec = bench.recorded_fixmatch("usl", 0, sel, train)
    assert rec["ema_top1"] == 0.745 and rec["steps"] == 1000 and rec["source"].startswith("bench_train_fmnist")
    assert bench.recorded_fixmatch("usl", 1, sel, train) is None  # that seed was not recorded
    assert bench.recorded_fixmatch("random", 0, sel, train) is None
    monkeypatch.setattr(bench, "_recorded_set", lambda: _recorded([2, 1, 1]))  # other picks: train it here
    assert bench.recorded_fixmatch("usl", 0, sel, train) is None
    monkeypatch.setattr(bench, "_recorded_set", lambda: None)
    assert bench.recorded_fixmatch("usl", 0, sel, train) is None


def _run(variant, method, seed, ema, top1=None, steps=1000, **extra):
    return {"variant": variant, "method": method, "seed": seed, "steps": steps, "wall_s": 1200.0,
            "top1": top1 if top1 is not None else ema, "ema_top1": ema, "curve": [],
            "monitor": {"mask": 0.8, "mask_correct": 0.66}, **extra}


def test_targets_pair_by_seed(bench):
    runs = [_run("mixmatch", "usl", 0, 0.70), _run("mixmatch", "random", 0, 0.60),
            _run("mixmatch", "usl", 1, 0.72), _run("mixmatch", "random", 1, 0.70),
            _run("mixmatch", "random", 2, 0.10),  # no USL run of seed 2: not paired, not counted
            _run("comatch", "usl_t", 0, 0.81), _run("comatch", "usl", 0, 0.75), _run("comatch", "random", 0, 0.78),
            _run("finetune", "usl", 0, None, top1=0.69, steps=None)]
    out = bench.targets({str(i): r for i, r in enumerate(runs)})
    assert out[0].startswith("- **Target >= 80 % EMA top-1") and "comatch on usl_t seed 0: 81.0 -> met" in out[0]
    assert "- mixmatch: usl - random = +6.0 points (paired, 2 seeds) -> >= 5: met." in out
    assert "- comatch: usl_t - random = +3.0 points (paired, 1 seed) -> < 5: not met." in out
    assert not any(line.startswith("- finetune") for line in out)  # no random run to pair with
    assert bench.targets({}) == []


def test_markdown_marks_recorded_cells(bench):
    res = {"machine": {"cpu": "x", "cpu_count": 2}, "encoder": "e.pt",
           "calibration": {"fixmatch": {"s_per_step": 1.31, "threads": 2}, "old": {"steps": 9, "minutes": 30}},
           "train": {"a": _run("fixmatch", "usl", 0, 0.746, source="bench_train_fmnist.py fixmatch --steps 1000"),
                     "b": _run("fixmatch", "random", 0, 0.603, source="bench_train_fmnist.py fixmatch --steps 1000"),
                     "c": _run("fixmatch_da", "usl", 0, 0.755)}}
    md = bench.markdown(res)
    assert "| fixmatch (recorded) | usl | 1000 | 74.6 (n=1) |" in md
    assert "| fixmatch_da | usl | 1000 | 75.5 (n=1) |" in md
    assert "fixmatch 1.31 s/step (calibrated alone)" in md
    assert "- fixmatch: usl - random = +14.3 points (paired, 1 seed) -> >= 5: met." in md
    assert "not met" in md.split("Target >= 80")[1].split("\n")[0]


def test_usl_t_configurations_keep_their_own_labels_files(bench, tmp_path):
    enc = tmp_path / "model.pt"
    enc.write_bytes(b"")
    common = ["select", "--encoder", str(enc), "--work", str(tmp_path / "w")]
    default = bench.parse_args(common)
    assert bench.sel_path(default, "usl_t", 40, 0).name == "usl_t_b40_s0.json"
    tuned = bench.parse_args([*common, "--usl-t-param", "alpha=5", "--usl-t-param", "sharpen_t=0.25"])
    assert tuned.usl_t_params == {"alpha": 5, "sharpen_t": 0.25}
    assert bench.sel_path(tuned, "usl_t", 40, 0).name == "usl_t_cpu_alpha5_sharpen_t0.25_b40_s0.json"
    assert bench.sel_path(tuned, "usl", 40, 0).name == "usl_b40_s0.json"  # the other methods' files are shared
    with pytest.raises(SystemExit):
        bench.parse_args([*common, "--usl-t-param", "alpha"])
