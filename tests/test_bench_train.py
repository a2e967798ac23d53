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


def test_markdown_diagnosis_and_curves(bench):
    diag = {"density": {"simclr": {"k": 400, "median": 3.3, "p10": 2.6, "p90": 4.3},
                        "pca": {"k": 400, "median": 2.1, "p10": 1.4, "p90": 2.9}},
            "20": {"seeds": [0, 1], "cross": {"simclr->simclr": [0.60, 0.62], "simclr->pca": [0.61, 0.63],
                                              "pca->simclr": [0.64, 0.66], "pca->pca": [0.65, 0.65]},
                   "variants": {"simclr/usl lam 0": [0.62, 0.64], "pca/kmeans closest-to-centre": [0.58, 0.60]}},
            "note": "picks, not the classifier"}
    runs = {"usl/seed0": {"method": "usl", "seed": 0, "top1": 0.7, "ema_top1": 0.7, "coverage": 1.0,
                          "curve": [[200, 0.70], [400, 0.72]]},
            "usl/seed1": {"method": "usl", "seed": 1, "top1": 0.7, "ema_top1": 0.7, "coverage": 1.0,
                          "curve": [[200, 0.68]]},
            "random/seed0": {"method": "random", "seed": 0, "top1": 0.6, "ema_top1": 0.6, "coverage": 0.9}}
    md = bench.markdown({"usl_diagnosis": {"simclr_x": diag},
                         "fixmatch_sets": [{"init": None, "params": {}, "steps": 400, "runs": runs}]})
    assert "### USL on SimCLR vs PCA: diagnosis (simclr_x)" in md
    assert "simclr median 3.30 (p10 2.60, p90 4.30, k = 400)" in md
    assert "| simclr | 61.0 +- 1.4 (n=2) | 62.0 +- 1.4 (n=2) |" in md
    assert "| pca | 65.0 +- 1.4 (n=2) | 65.0 +- 0.0 (n=2) |" in md
    assert "| usl lam 0 | 63.0 +- 1.4 (n=2) | - |" in md
    assert "| kmeans closest-to-centre | - | 59.0 +- 1.4 (n=2) |" in md and "- note: picks, not the classifier" in md
    # the curve is the mean over the runs that reached each step
    assert "- EMA top-1 by step, usl: 200: 69.0, 400: 72.0 (n=1)" in md and "by step, random" not in md
    # one random seed: the gap is given, the spread is not judged
    assert "USL - random = +10.0 points on the mean (target >= +5: holds; paired by seed +10.0); spread: needs 2+" in md


def test_migrate_reads_the_curve_of_older_runs(bench, tmp_path):
    from uslkit import _io

    run_dir = tmp_path / "fm"
    run_dir.mkdir()
    _io.atomic_write_json(run_dir / "history.json", [{"step": 50, "loss": 1.0},
                                                     {"step": 100, "loss": 0.5, "ema_top1": 0.6}])
    res = {"fixmatch_sets": [{"init": None, "params": {}, "steps": 100, "runs": {
        "usl/seed0": {"method": "usl", "seed": 0, "steps": 100, "ema_top1": 0.6, "run_dir": str(run_dir)},
        "usl/seed1": {"method": "usl", "seed": 1, "steps": 100, "ema_top1": 0.6, "run_dir": str(tmp_path / "gone")},
        # a folder whose history ends elsewhere (another run's) is not this record's curve
        "usl/seed2": {"method": "usl", "seed": 2, "steps": 200, "ema_top1": 0.6, "run_dir": str(run_dir)},
        "usl/seed3": {"method": "usl", "seed": 3, "steps": 100, "ema_top1": 0.7, "run_dir": str(run_dir)}}}]}
    runs = bench.migrate(res)["fixmatch_sets"][0]["runs"]
    assert runs["usl/seed0"]["curve"] == [[100, 0.6]]
    assert not any("curve" in runs[f"usl/seed{s}"] for s in (1, 2, 3))


def test_diagnosis_record_is_emptied_when_its_inputs_change(bench):
    def usl(shift):
        return {f"{e}/20": [{"seed": s, "nn1": 0.5, "indices": [s + shift, 7]} for s in (0, 1)]
                for e in ("simclr", "pca")}

    ssl = {"run_dir": "w/simclr_a", "steps": 10, "usl": usl(0)}
    res = {}
    diag, rec, picks = bench.diagnosis_record(res, ssl, 20)
    assert rec["seeds"] == [0, 1] and picks["pca"][1] == [1, 7]
    diag["density"]["pca"] = {"median": 2.0}
    rec["variants"]["pca/usl lam 0"] = [0.6, 0.6]
    # same encoder and picks: kept
    diag2, rec2, _ = bench.diagnosis_record(res, ssl, 20)
    assert rec2["variants"] and diag2["density"]
    # other picks at this budget: this budget's record emptied, the density kept
    ssl["usl"] = usl(1)
    diag3, rec3, _ = bench.diagnosis_record(res, ssl, 20)
    assert not rec3["variants"] and diag3["density"]
    rec3["variants"]["pca/usl lam 0"] = [0.6, 0.6]
    # a retrained encoder under the same folder name (other steps): everything emptied
    ssl["steps"] = 20
    diag4, rec4, _ = bench.diagnosis_record(res, ssl, 20)
    assert not rec4["variants"] and not diag4["density"] and diag4["encoder"]["steps"] == 20


@pytest.mark.slow
def test_plateau_table(bench):
    rec = {"threshold": 0.9, "acc": 0.5, "confident": 0.75, "confident_acc": 2 / 3, "confident_wrong": 0.25,
           "picks": [1, 2, 1], "over": {"class": "b", "index": 1, "pred_share": 0.75, "true_share": 0.25, "picks": 2}}
    run = {"method": "usl", "seed": 0, "ema_top1": 0.7, "pool": rec}
    md = "\n".join(bench._plateau_md({"usl/seed0": run, "random/seed0": {"method": "random", "seed": 0}}))
    assert "| usl | 0 | 70.0 | 50.0 | 75.0 | 66.7 | 25.0 | b: 75.0 / 25.0 %, 2 of 4 |" in md
    assert "| random |" not in md and bench._plateau_md({}) == []


def test_cost_table(bench):
    cost = {"batch": 64, "shape": [1, 28, 28], "threads": 2,
            "archs": {"cnn_small": {"median_s": 0.1, "ratio": 1.0, "n": 9},
                      "wrn28_2": {"median_s": 0.72, "ratio": 7.2, "n": 9}}}
    md = bench.markdown({"cost": cost})
    assert "| wrn28_2 | 0.720 | 7.2 |" in md and "| architecture | s per batch | x cnn_small |" in md
    assert "64 random images of shape (1, 28, 28), 2 torch thread(s), median of 9" in md


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
    with pytest.raises(SystemExit, match=r"no USL picks at budget\(s\) \[30\]"):
        bench.main(["diagnose", *common, "--budgets", "30"])
    bench.main(["diagnose", *common])
    res = json.loads(out.read_text())
    (diag,) = res["usl_diagnosis"].values()
    assert set(diag["density"]) == {"simclr", "pca"} and diag["20"]["seeds"] == [0, 1]
    assert len(diag["20"]["cross"]) == 4 and len(diag["20"]["variants"]) == 2 * len(bench.DIAG_VARIANTS)
    # the cross table's diagonal is the simclr stage's own record of the same picks
    assert diag["20"]["cross"]["simclr->simclr"] == pytest.approx([r["nn1"] for r in res["simclr"]["usl"]["simclr/20"]])
    assert diag["encoder"] == {"run_dir": res["simclr"]["run_dir"], "steps": res["simclr"]["steps"]}
    assert diag["20"]["variants"]["pca/usl (default, lam 0.5)"] == diag["20"]["cross"]["pca->pca"]
    assert all(len(r["curve"]) >= 1 for r in res["fixmatch_sets"][0]["runs"].values())
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
    # plateau: every run's EMA model reproduces its record, then its pool pseudo-labels are recorded
    bench.main(["plateau", *common])
    runs = json.loads(out.read_text())["fixmatch_sets"][0]["runs"]
    for run in runs.values():
        pool = run["pool"]
        assert pool["n"] == bench.QUICK["n_train"] and sum(pool["picks"]) == bench.FIX_BUDGET
        assert pool["confident_wrong"] <= pool["confident"] and sum(pool["pred_share"]) == pytest.approx(1)
    # a record the folder's model does not reproduce is skipped, not filled from the wrong model
    res = json.loads(out.read_text())
    bad = res["fixmatch_sets"][0]["runs"]["random/seed0"]
    bad["ema_top1"] += 0.1
    del bad["pool"]
    out.write_text(json.dumps(res))
    bench.main(["plateau", *common])
    after = json.loads(out.read_text())["fixmatch_sets"][0]["runs"]
    assert "pool" not in after["random/seed0"] and after["usl/seed0"]["pool"] == runs["usl/seed0"]["pool"]
    assert "| usl | 0 |" in bench.markdown(json.loads(out.read_text())).split("accuracy of confident")[1]
    bench.main(["cost", *common, "--cost-archs", "cnn_small", "wrn28_2", "--cost-batch", "2", "--cost-repeats", "1"])
    cost = json.loads(out.read_text())["cost"]
    assert cost["shape"] == [1, 28, 28] and cost["archs"]["cnn_small"]["ratio"] == 1.0
    assert cost["archs"]["wrn28_2"]["n"] == 3 and cost["archs"]["wrn28_2"]["median_s"] > 0
