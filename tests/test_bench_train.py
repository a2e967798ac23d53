"""benchmarks/bench_train_fmnist.py: run naming, record keeping across SimCLR runs and FixMatch sets, the
target verdicts it writes, and (slow) the whole script at its --quick size."""

import importlib
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("bench_train_fmnist")
    finally:
        sys.path.remove(str(BENCH))


def _usl(simclr, pca):
    return {f"{e}/{b}": [{"seed": s, "nn1": v + 0.01 * s} for s in range(3)]
            for e, v in (("simclr", simclr), ("pca", pca)) for b in (20, 40)}


def test_param_tag(bench):
    assert bench.param_tag({}) == ""
    assert bench.param_tag({"temperature": 0.2, "crop_scale": [0.5, 1.0]}) == "_crop_scale0.5-1.0_temperature0.2"


def test_migrate_keeps_old_runs_and_groups_fixmatch(bench):
    old = {"simclr": {"run_dir": "w/simclr_a", "steps": 10, "full_label_nn1": {"simclr": 0.8, "pca": 0.85},
                      "usl": _usl(0.5, 0.6)},
           "fixmatch": {"params": {"ema_decay": 0.99}, "steps": 5,
                        "runs": {"usl/seed0": {"method": "usl", "seed": 0, "top1": 0.7, "ema_top1": 0.7,
                                               "coverage": 1.0, "wall_s": 60}}}}
    res = bench.migrate(old)
    assert list(res["simclr_runs"]) == ["simclr_a"] and "fixmatch" not in res
    (fx,) = res["fixmatch_sets"]
    assert fx["init"] == str(Path("w/simclr_a") / "model.pt") and fx["runs"]
    # same init / params / steps: the same set; another encoder: a new set, the old one untouched
    assert bench.fixmatch_set(res, fx["init"], {"ema_decay": 0.99}, 5) is fx
    assert bench.fixmatch_set(res, fx["init"], {"ema_decay": 0.99}, None) is fx
    other = bench.fixmatch_set(res, "w/simclr_b/model.pt", {"ema_decay": 0.99}, 5)
    assert other is not fx and len(res["fixmatch_sets"]) == 2 and not other["runs"]


def test_markdown_rows_and_verdicts(bench):
    res = {"simclr_runs": {
        "simclr_a": {"steps": 10, "train_wall_s": 600, "full_label_nn1": {"simclr": 0.80, "pca": 0.855},
                     "usl": _usl(0.50, 0.60)},
        "simclr_b": {"steps": 20, "train_wall_s": None, "full_label_nn1": {"simclr": 0.86, "pca": 0.855},
                     "usl": _usl(0.65, 0.60)}}}
    md = bench.markdown(res)
    assert "| simclr_a | 10 | 10.0 | 80.0 |" in md and "| simclr_b | 20 | - | 86.0 |" in md
    assert "| pixels PCA-64 | - | - | 85.5 |" in md
    assert "simclr_a: b=20 SimCLR - PCA = -10.0 points (does not beat PCA)" in md
    assert "simclr_b: b=20 SimCLR - PCA = +5.0 points (beats PCA)" in md


@pytest.mark.slow
def test_quick_end_to_end(bench, tmp_path):
    from uslkit.data import load_dataset

    try:
        load_dataset("fashion_mnist", "test", root=str(tmp_path / "nodata"))
    except Exception as err:  # noqa: BLE001 - only the dataset's absence skips
        pytest.skip(f"Fashion-MNIST not available: {err}")
    out, md = tmp_path / "r.json", tmp_path / "R.md"
    common = ["--quick", "--out", str(out), "--results-md", str(md), "--work", str(tmp_path / "w"),
              "--data-root", str(tmp_path / "nodata")]
    bench.main(["simclr", *common, "--param", "temperature=0.2"])
    bench.main(["fixmatch", *common, "--seeds", "0", "--methods", "usl", "random"])
    bench.main(["tune", *common, "--config", '{"temperature": 0.1}'])
    res = json.loads(out.read_text())
    (tuned,) = res["simclr_tuning"].values()
    assert tuned["params"] == {"temperature": 0.1} and len(tuned["usl20"]) == 2 and 0 < tuned["full_label_nn1"] <= 1
    (name,) = res["simclr_runs"]
    assert name.endswith("_temperature0.2") and res["simclr"]["params"] == {"temperature": 0.2}
    (fx,) = res["fixmatch_sets"]
    assert set(fx["runs"]) == {"usl/seed0", "random/seed0"} and fx["init"].endswith("model.pt")
    assert fx["runs"]["usl/seed0"]["run_dir"].endswith(f"_from-{name}")  # runs from another encoder never collide
    # rerunning finds the finished runs instead of training again
    bench.main(["fixmatch", *common, "--seeds", "0", "--methods", "usl"])
    again = json.loads(out.read_text())["fixmatch_sets"][0]["runs"]["usl/seed0"]
    assert again["top1"] == fx["runs"]["usl/seed0"]["top1"]
