"""papermill_runs/sweep.py: grid validation, run naming, resume/refusal, failure reports, aggregation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("sweep", ROOT / "papermill_runs" / "sweep.py")
sweep = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep)


def _grid(tmp_path, text):
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p


def test_load_grid_validates(tmp_path):
    with pytest.raises(SystemExit, match="unknown keys"):
        sweep.load_grid(_grid(tmp_path, "notebooks: [a]\ngird: {}\n"))
    with pytest.raises(SystemExit, match="at least one notebook"):
        sweep.load_grid(_grid(tmp_path, "grid: {seed: [0]}\n"))
    with pytest.raises(SystemExit, match="non-empty lists"):
        sweep.load_grid(_grid(tmp_path, "notebooks: [a]\ngrid: {seed: 0}\n"))
    with pytest.raises(SystemExit, match="cannot read"):
        sweep.load_grid(_grid(tmp_path, "notebooks: [a\n"))
    cfg = sweep.load_grid(_grid(tmp_path, "notebooks: notebooks/05_low_budget_al.ipynb\ngrid: {seeds: [0, 1]}\n"))
    assert cfg["name"] == "g" and cfg["notebooks"] == ["notebooks/05_low_budget_al.ipynb"]


def test_plan_names_runs_wraps_list_parameters_and_rejects_unknown_ones(tmp_path):
    cfg = sweep.load_grid(_grid(tmp_path, "name: t\nnotebooks: [notebooks/05_low_budget_al.ipynb]\n"
                                          "fixed: {dataset: digits}\n"
                                          "grid: {methods: [kmeans, random], seeds: [0, 1]}\n"))
    runs = sweep.plan(cfg, tmp_path / "out")
    assert len(runs) == 4
    r = runs[0]
    assert r["params"] == {"dataset": "digits", "methods": ["kmeans"], "seeds": [0]}
    assert r["output"].name == "05_low_budget_al__methods-kmeans__seeds-0.ipynb"
    assert r["results"] == r["output"].with_suffix(".json")
    bad = sweep.load_grid(_grid(tmp_path, "notebooks: [notebooks/05_low_budget_al.ipynb]\ngrid: {budget: [1]}\n"))
    with pytest.raises(SystemExit, match="'budget' is not a parameter of 05_low_budget_al.ipynb"):
        sweep.plan(bad, tmp_path)
    missing = sweep.load_grid(_grid(tmp_path, "notebooks: [notebooks/nope.ipynb]\ngrid: {seed: [1]}\n"))
    with pytest.raises(SystemExit, match="not found"):
        sweep.plan(missing, tmp_path)


def test_done_skips_same_parameters_and_refuses_others(tmp_path):
    run = {"params": {"seeds": [0], "methods": ["usl"]}, "results": tmp_path / "r.json"}
    assert not sweep._done(run, False, "full")
    run["results"].write_text(json.dumps({"size": "full", "params": {"seeds": [9]},
                                          "requested": {"seeds": [0], "methods": ["usl"]}}))
    assert sweep._done(run, False, "full")  # compared with the parameters as requested
    assert not sweep._done(run, True, "full")
    with pytest.raises(SystemExit, match="size"):
        sweep._done(run, False, "small")
    run["params"]["methods"] = ["random"]
    with pytest.raises(SystemExit, match="methods"):
        sweep._done(run, False, "full")


def _record(path, notebook, params, metrics, size="small"):
    path.write_text(json.dumps({"notebook": notebook, "size": size, "params": params, "metrics": metrics}))


def test_aggregate_builds_a_methods_by_budgets_table(tmp_path):
    for m, acc in (("usl", (0.6, 0.8)), ("random", (0.4, 0.4))):
        for s, a in enumerate(acc):
            _record(tmp_path / f"nb__{m}__{s}.json", "03", {"methods": [m], "data_root": "data", "pca": 64},
                    {"rows": [{"method": m, "budget": 10, "seed": s, "nn1_acc": a, "coverage": 1.0},
                              {"method": m, "budget": 20, "seed": s, "nn1_acc": a + 0.1, "coverage": 1.0}]})
    (tmp_path / "notes.json").write_text("[1, 2]")  # not a results record: ignored
    md = sweep.aggregate(tmp_path).read_text()
    assert "| usl | 0.7000 +- 0.1414 (n=2) | 0.8000 +- 0.1414 (n=2) |" in md
    assert "| random | 0.4000 +- 0.0000 (n=2) | 0.5000 +- 0.0000 (n=2) |" in md
    assert "## pca" not in md  # parameters are not metrics
    assert (tmp_path / "nn1_acc_vs_budget.png").exists()
    import pandas as pd

    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == 8 and set(df.columns) >= {"run", "notebook", "method", "budget", "seed", "nn1_acc", "pca"}


def test_aggregate_single_run_records(tmp_path):
    for s, a in enumerate((0.7, 0.9)):
        _record(tmp_path / f"fm{s}.json", "04", {"method": "usl", "budget": 40, "seed": s},
                {"method": "usl", "budget": 40, "seed": s, "top1": a, "per_class": [1, 2]})
    md = sweep.aggregate(tmp_path).read_text()
    assert "| usl | 0.8000 +- 0.1414 (n=2) |" in md and "per_class" not in md


def test_aggregate_without_results_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="no results"):
        sweep.aggregate(tmp_path)


def _tiny_notebook(path, body):
    nb = nbformat.v4.new_notebook()
    p = nbformat.v4.new_code_cell("x = 1\nresults_json = ''\noverwrite = False")
    p.metadata["tags"] = ["parameters"]
    nb.cells = [p, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_sweep_runs_resumes_and_reports_the_failing_notebook(tmp_path, capsys):
    nb = tmp_path / "nb.ipynb"
    _tiny_notebook(nb, "from uslkit import notebook\nrun = notebook.start('nb', globals(), verbose=False)\n"
                       "assert x != 3, 'x must not be 3'\nrun.save_results({'method': 'm', 'budget': x, 'seed': 0, "
                       "'value': x * 0.5})")
    grid = _grid(tmp_path, f"name: t\nnotebooks: [{nb}]\ngrid: {{x: [1, 2, 3]}}\n")
    out = tmp_path / "out"
    assert sweep.main(["run", str(grid), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nb__x-3.ipynb" in err and "x must not be 3" in err
    assert sorted(p.name for p in out.glob("nb__*.json")) == ["nb__x-1.json", "nb__x-2.json"]
    assert "| m | 0.5000 +- 0.0000 (n=1) | 1.0000 +- 0.0000 (n=1) |" in (out / "summary.md").read_text()
    before = (out / "nb__x-1.json").stat().st_mtime_ns
    sweep.main(["run", str(grid), "--out", str(out)])
    assert "done already, skipped" in capsys.readouterr().out
    assert (out / "nb__x-1.json").stat().st_mtime_ns == before


# ---- crossing selections with learners (notebook 04's learner parameter) ------------------------------------

_NB04 = "notebooks/04_fixmatch.ipynb"


def test_plan_crosses_selections_with_learner_variants_and_names_every_run(tmp_path):
    cfg = sweep.load_grid(_grid(tmp_path, f"name: t\nnotebooks: [{_NB04}]\nfixed: {{budget: 40}}\n"
                                          "grid:\n  method: [random, usl]\n  learner:\n"
                                          "    fixmatch: {learner: fixmatch}\n"
                                          "    fm_t09: {learner: fixmatch, learner_params: {threshold: 0.9}}\n"
                                          "    finetune: {learner: finetune, preset: paper}\n"))
    runs = sweep.plan(cfg, tmp_path / "out")
    names = [r["output"].name for r in runs]
    assert names == ["04_fixmatch__learner-fixmatch__method-random.ipynb",
                     "04_fixmatch__learner-fm_t09__method-random.ipynb",
                     "04_fixmatch__learner-finetune__method-random.ipynb",
                     "04_fixmatch__learner-fixmatch__method-usl.ipynb",
                     "04_fixmatch__learner-fm_t09__method-usl.ipynb",
                     "04_fixmatch__learner-finetune__method-usl.ipynb"]
    assert runs[1]["params"] == {"budget": 40, "method": "random", "learner": "fixmatch",
                                 "learner_params": {"threshold": 0.9}}
    assert runs[2]["params"] == {"budget": 40, "method": "random", "learner": "finetune", "preset": "paper"}
    assert len({r["results"] for r in runs}) == 6


def test_a_list_of_learners_and_dict_values_are_crossed_with_distinct_names(tmp_path):
    cfg = sweep.load_grid(_grid(tmp_path, f"notebooks: [{_NB04}]\nfixed: {{preset: ''}}\n"
                                          "grid:\n  learner: [fixmatch]\n  steps: [5]\n"
                                          "  learner_params: [{}, {threshold: 0.9, lambda_u: 2}]\n"))
    runs = sweep.plan(cfg, tmp_path)
    assert [r["output"].stem for r in runs] == [
        "04_fixmatch__learner-fixmatch__learner_params-__steps-5",
        "04_fixmatch__learner-fixmatch__learner_params-lambda_u=2+threshold=0.9__steps-5"]


def test_unknown_or_unfit_learners_stop_the_sweep_before_any_run(tmp_path):
    def plan(grid):
        return sweep.plan(sweep.load_grid(_grid(tmp_path, f"notebooks: [{_NB04}]\n" + grid)), tmp_path)

    with pytest.raises(SystemExit, match=r"-p learner must be one of \[.*'finetune', 'fixmatch'.*\], got 'nope' "
                                         r"\(2 run\(s\), e.g. 04_fixmatch__learner-nope__seed-0\)"):
        plan("grid: {learner: [fixmatch, nope], seed: [0, 1]}\n")
    with pytest.raises(SystemExit, match=r"-p learner must be one of .* got 'simclr'"):  # reads no labels file
        plan("grid: {learner: [simclr]}\n")
    with pytest.raises(SystemExit, match=r"-p preset 'cpu' is not a preset of finetune"):  # the notebook's default
        plan("grid: {learner: [finetune]}\n")
    with pytest.raises(SystemExit, match=r"-p learner finetune needs -p init"):
        plan("fixed: {init: none, preset: paper}\ngrid: {learner: [finetune]}\n")
    with pytest.raises(SystemExit, match=r"-p learner_params \['bogus'\] are not fields of FixMatchConfig"):
        plan("grid:\n  learner:\n    x: {learner: fixmatch, learner_params: {bogus: 1}}\n")
    with pytest.raises(SystemExit, match=r"-p learner fixmatch needs steps"):  # no preset, no steps
        plan("fixed: {preset: none}\ngrid: {learner: [fixmatch]}\n")
    assert len(plan("fixed: {preset: none}\ngrid: {learner: [fixmatch], steps: [5]}\n")) == 1
    # a field the learner's config lacks, set by the sweep (-p mu 4): refused as the notebook refuses it
    with pytest.raises(SystemExit, match=r"-p mu is not an option of finetune \(FinetuneConfig fields: "):
        plan("fixed: {init: m.pt, preset: paper, mu: 4}\ngrid: {learner: [finetune, fixmatch]}\n")
    with pytest.raises(SystemExit, match=r"steps is given both as -p steps and in -p learner_params; give it once"):
        plan("fixed: {steps: 5}\ngrid:\n  learner:\n    x: {learner: fixmatch, learner_params: {steps: 3}}\n")
    # the notebook's other parameters (dataset, method, budget, seed) and arch are not config fields given
    assert len(plan("fixed: {init: m.pt, preset: paper, arch: wrn28_2, budget: 10}\n"
                    "grid: {learner: [finetune], method: [usl, random]}\n")) == 2


def test_variants_are_validated(tmp_path):
    with pytest.raises(SystemExit, match="variants"):
        sweep.load_grid(_grid(tmp_path, f"notebooks: [{_NB04}]\ngrid: {{learner: {{a: fixmatch}}}}\n"))
    with pytest.raises(SystemExit, match="variants"):
        sweep.load_grid(_grid(tmp_path, f"notebooks: [{_NB04}]\ngrid: {{learner: {{a: {{}}}}}}\n"))
    twice = sweep.load_grid(_grid(tmp_path, f"notebooks: [{_NB04}]\nfixed: {{preset: cpu}}\n"
                                            "grid: {learner: {ft: {learner: finetune, preset: paper}}}\n"))
    with pytest.raises(SystemExit, match="'preset' is set both by fixed and by grid key 'learner'"):
        sweep.plan(twice, tmp_path)
    unknown = sweep.load_grid(_grid(tmp_path, f"notebooks: [{_NB04}]\n"
                                              "grid: {learner: {a: {learner: fixmatch, nope: 1}}}\n"))
    with pytest.raises(SystemExit, match="'nope' is not a parameter of 04_fixmatch.ipynb"):
        sweep.plan(unknown, tmp_path)


def test_learners_methods_grid_crosses_two_selections_with_six_learners_or_names_the_missing_ones(tmp_path):
    from uslkit.notebook import labelled_learners

    path = ROOT / "papermill_runs" / "learners_methods.yaml"
    cfg = sweep.load_grid(path)
    variants = cfg["grid"]["learner"]
    assert list(variants) == ["fixmatch", "fixmatch_da", "flexmatch", "mixmatch", "comatch", "finetune"]
    assert cfg["grid"]["method"] == ["random", "usl"] and cfg["fixed"]["budget"] == 40
    missing = sorted({v["learner"] for v in variants.values()} - set(labelled_learners()))
    if missing:  # the learners of issue 14 not registered yet: a clear stop at the start
        with pytest.raises(SystemExit, match=f"got '{missing[0]}'"):
            sweep.plan(cfg, tmp_path)
        return
    runs = sweep.plan(cfg, tmp_path)
    assert len(runs) == 2 * 6 * len(cfg["grid"]["seed"])
    assert len({r["output"] for r in runs}) == len(runs)


def test_aggregate_groups_by_method_and_learner_when_learners_differ(tmp_path):
    for learner, accs in (("fixmatch", (0.7, 0.9)), ("fixmatch[threshold_mode=flexmatch]", (0.8, 0.8))):
        for s, a in enumerate(accs):
            _record(tmp_path / f"fm_{learner}_{s}.json", "04", {"method": "usl", "budget": 40, "seed": s,
                                                              "learner": "fixmatch"},
                    {"method": "usl", "learner": learner, "budget": 40, "seed": s, "top1": a})
    md = sweep.aggregate(tmp_path).read_text()
    assert "| method / learner | budget 40 |" in md
    assert "| usl / fixmatch | 0.8000 +- 0.1414 (n=2) |" in md
    assert "| usl / fixmatch[threshold_mode=flexmatch] | 0.8000 +- 0.0000 (n=2) |" in md
