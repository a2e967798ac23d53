"""benchmarks/bench_representations.py: which encoder FixMatch starts from, the recorded SimCLR set it is
compared with, and the comparison it writes."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_representations")
    finally:
        sys.path.remove(str(BENCH))


def _eval(usl40):
    return {"full": {"knn1": 0.8, "knn10_weighted": 0.81}, "probe_usl40": 0.5, "nn1_usl40": 0.6,
            "picks": {"usl_b40": usl40, "usl_b20": [0.9, 0.9]}}


def test_best_encoder_is_the_best_usl_b40_among_self_supervised_learners(bench):
    res = {"runs": {"msf": {"eval": _eval([0.60, 0.62])}, "cmsf_2q": {"eval": _eval([0.66, 0.64])},
                    "cmsf_labels": {"eval": _eval([0.9, 0.9])},  # trained on labels: never FixMatch's encoder
                    "sela": {"steps": 3}}}  # not evaluated yet
    assert bench.best_encoder(res) == "cmsf_2q"
    with pytest.raises(SystemExit, match="no evaluated learner"):
        bench.best_encoder({"runs": {"sela": {"steps": 3}}})


def _fx(init, steps, ema):
    return {"init": init, "params": {"ema_decay": 0.99}, "steps": steps,
            "runs": {f"usl/seed{s}": {"method": "usl", "seed": s, "top1": e, "ema_top1": e} for s, e in enumerate(ema)}}


def test_fixmatch_compared_seed_by_seed_with_the_recorded_simclr_set(bench, monkeypatch):
    ref = _fx(f"{bench.SIMCLR_RUN}/model.pt", 250, [0.70, 0.72, 0.71])
    other = _fx("elsewhere/model.pt", 250, [0.1, 0.1, 0.1])
    monkeypatch.setattr(bench._io, "read_json", lambda path: {"fixmatch_sets": [other, ref]})
    assert bench.reference_set(250) is ref
    with pytest.raises(SystemExit, match="--fix-steps 1000"):
        bench.reference_set(1000)
    mine = dict(_fx("w/cmsf_2q_steps9/model.pt", 250, [0.75, 0.70]), encoder="cmsf_2q")
    text = "\n".join(bench._fixmatch_md({"fixmatch_sets": [mine]}))
    assert "**cmsf_2q**" in text and "ema_decay=0.99" in text
    assert "| cmsf_2q | 75.0, 70.0 | 72.5 ± 3.5 |" in text
    assert "| SimCLR (recorded) | 70.0, 72.0 | 71.0 ± 1.4 |" in text  # the same seeds only
    assert "+5.0, -2.0 points" in text


def test_a_recorded_run_whose_folder_is_gone_is_trained_again_and_checked_against_its_record(bench, monkeypatch,
                                                                                            tmp_path):
    import argparse
    from types import SimpleNamespace

    trained, evals = [], []

    def run(args, name, train, labels, *, steps, out_dir=None, **kw):
        trained.append(name)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "model.pt").write_bytes(b"w")
        return SimpleNamespace(reused=False, resumed_from=None, history=[{"step": steps}])

    monkeypatch.setattr(bench, "_inputs", lambda args, res: (None, None, None, None, "labels.json"))
    monkeypatch.setattr(bench, "_run", run)
    monkeypatch.setattr(bench, "evaluate_encoder", lambda *a, **k: evals.pop(0))
    monkeypatch.setattr(bench, "save", lambda args, res: None)
    args = argparse.Namespace(learners=["msf"], steps=5, work=str(tmp_path), quick=False)
    first = _eval([0.6, 0.7])
    res = {"calibration": {"msf": {}},
           "runs": {"msf": {"steps": 5, "run_dir": str(tmp_path / "msf_steps5"), "train_wall_s": 100.0, "eval": first}}}

    (tmp_path / "msf_steps5").mkdir()
    (tmp_path / "msf_steps5" / "model.pt").write_bytes(b"w")
    bench.stage_train(args, res)  # recorded and present: nothing runs
    assert trained == []

    (tmp_path / "msf_steps5" / "model.pt").unlink()
    evals.append(_eval([0.6, 0.7]))
    bench.stage_train(args, res)
    rec = res["runs"]["msf"]
    assert trained == ["msf"] and rec["eval"] == first and rec["reproduces_previous"] is True
    assert rec["previous"]["train_wall_s"] == 100.0 and rec["train_wall_s"] != 100.0  # both runs' records

    (tmp_path / "msf_steps5" / "model.pt").unlink()
    evals.append(_eval([0.5, 0.7]))
    bench.stage_train(args, res)
    rec = res["runs"]["msf"]
    assert rec["reproduces_previous"] is False  # the difference is kept, not hidden
    assert rec["eval"]["picks"]["usl_b40"] == [0.5, 0.7] and rec["previous"]["eval"] == first
    assert "previous" not in rec["previous"]


def test_the_report_shows_a_run_trained_again_beside_its_earlier_record(bench):
    rec = {"steps": 5, "train_wall_s": 90.0, "resumed_from": None, "eval": _eval([0.5, 0.7]),
           "reproduces_previous": False,
           "previous": {"steps": 5, "train_wall_s": 100.0, "resumed_from": None, "eval": _eval([0.6, 0.7])}}
    for m in bench.METHODS:
        for b in bench.BUDGETS:
            for e in (rec["eval"], rec["previous"]["eval"]):
                e["picks"][f"{m}_b{b}"] = e["picks"].get(f"{m}_b{b}", [0.9, 0.9])
    text = bench.markdown({"runs": {"cmsf_2q": rec}})
    rows = [line for line in text.splitlines() if line.startswith("| cmsf_2q")]
    assert rows[0].startswith("| cmsf_2q | 5 | 90 |") and rows[1].startswith("| cmsf_2q (earlier run) | 5 | 100 |")
    assert "cmsf_2q (a different one)" in text
