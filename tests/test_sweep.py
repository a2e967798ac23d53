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
