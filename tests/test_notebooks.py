"""The notebooks as files (stored clean, parameterised, thin drivers) and uslkit.notebook, their helper.

Executing them is nbval's job: ``make test`` collects ``notebooks/*.ipynb`` with ``--nbval-lax`` at the small
size (``notebooks/conftest.py`` sets ``USLKIT_NB_SIZE=small``).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from uslkit import notebook as nbmod

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED = ["01_embeddings", "02_usl_selection", "03_coverage_analysis", "04_fixmatch", "05_low_budget_al",
            "07_sela_sinkhorn", "10_explorer"]


def test_every_required_notebook_exists():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(REQUIRED)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_clean_with_stable_ids(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert (nb.nbformat, nb.nbformat_minor) >= (4, 5), "cell ids need nbformat 4.5"
    ids = [c.get("id") for c in nb.cells]
    assert all(ids), f"{path.name}: a cell has no id"
    assert len(set(ids)) == len(ids), f"{path.name}: duplicate cell ids"
    for c in nb.cells:
        if c.cell_type == "code":
            assert c.outputs == [], f"{path.name} cell {c.id!r} is committed with outputs; clear them"
            assert c.execution_count is None, f"{path.name} cell {c.id!r} has an execution count"
    # the file is exactly what nbformat writes (no editor noise, stable diffs)
    assert path.read_text() == nbformat.writes(nb) + "\n" or path.read_text() == nbformat.writes(nb)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_holds_literals_only_and_papermill_reads_them(path):
    import papermill as pm

    nb = nbformat.read(path, as_version=4)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    tagged = [c for c in code_cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: exactly one cell must be tagged 'parameters'"
    assert code_cells[0] is tagged[0], f"{path.name}: the parameters cell must be the first code cell"
    names = []
    for stmt in ast.parse(tagged[0].source).body:
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name), \
            f"{path.name}: parameters cell line {stmt.lineno} is not 'name = literal'"
        ast.literal_eval(stmt.value)  # raises on anything but a literal
        names.append(stmt.targets[0].id)
    assert {"results_json", "overwrite"} <= set(names)
    # papermill parses every one of them (it silently skips lines it cannot parse, e.g. '=' in a comment)
    assert sorted(pm.inspect_notebook(str(path))) == sorted(names)
    # the next cell freezes them through uslkit.notebook.start with the notebook's own name
    start = code_cells[1].source
    assert f'notebook.start("{path.stem}", globals()' in start, f"{path.name}: second cell must call notebook.start"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_saves_results_json_and_declares_small_values_that_are_parameters(path):
    nb = nbformat.read(path, as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "run.save_results(" in src, f"{path.name} must write its results JSON"
    assert "small=dict(" in src, f"{path.name} must declare its small (CI) size"


# ---- uslkit.notebook --------------------------------------------------------------------------------------

def _ns(**kw):
    ns = {"In": [], "Out": {}, "get_ipython": print, "_private": 1, "np": np, "func": len}
    ns.update(kw)
    return ns


def test_collect_parameters_keeps_public_literals_only():
    ns = _ns(budget=40, methods=("usl", "random"), cfg={"a": [1, 2.5]}, name="x", flag=None, arr=np.zeros(3))
    assert nbmod.collect_parameters(ns) == {"budget": 40, "methods": ["usl", "random"], "cfg": {"a": [1, 2.5]},
                                            "name": "x", "flag": None}


def test_start_full_size_leaves_parameters(monkeypatch, tmp_path):
    monkeypatch.delenv(nbmod.SIZE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    ns = _ns(budget=40, results_json="", overwrite=False)
    run = nbmod.start("demo", ns, small=dict(budget=5), verbose=False)
    assert run.size == "full" and ns["budget"] == 40 and run.params["budget"] == 40


def test_start_small_size_rewrites_namespace_except_kept_names(monkeypatch, tmp_path):
    monkeypatch.setenv(nbmod.SIZE_ENV, "small")
    monkeypatch.chdir(tmp_path)
    ns = _ns(budget=40, seeds=[0, 1, 2], results_json="", overwrite=False)
    run = nbmod.start("demo", ns, small=dict(budget=5, seeds=[0]), verbose=False)
    assert run.small and ns["budget"] == 5 and ns["seeds"] == [0]
    assert run.params["budget"] == 5 and run.requested["budget"] == 40
    monkeypatch.setenv(nbmod.KEEP_ENV, "budget")
    ns = _ns(budget=40, seeds=[0, 1, 2], results_json="", overwrite=False)
    nbmod.start("demo", ns, small=dict(budget=5, seeds=[0]), verbose=False)
    assert ns["budget"] == 40 and ns["seeds"] == [0]


def test_start_rejects_unknown_small_names_and_bad_size(monkeypatch):
    with pytest.raises(ValueError, match="not parameters"):
        nbmod.start("demo", _ns(budget=1), small=dict(budgte=2), verbose=False)
    monkeypatch.setenv(nbmod.SIZE_ENV, "tiny")
    with pytest.raises(ValueError, match="USLKIT_NB_SIZE"):
        nbmod.start("demo", _ns(budget=1), verbose=False)


def test_save_results_atomic_and_never_silently_overwritten(monkeypatch, tmp_path):
    monkeypatch.delenv(nbmod.SIZE_ENV, raising=False)
    target = tmp_path / "r" / "out.json"
    run = nbmod.start("demo", _ns(budget=40, results_json=str(target), overwrite=False), verbose=False)
    path = run.save_results({"acc": np.float32(0.5), "picks": np.arange(3), "ok": np.bool_(True)})
    rec = json.loads(path.read_text())
    assert path == target and rec["params"]["budget"] == 40
    assert rec["metrics"] == {"acc": 0.5, "picks": [0, 1, 2], "ok": True}
    assert rec["notebook"] == "demo" and "uslkit_version" in rec and rec["size"] == "full"
    run.save_results({"acc": 0.6})  # same parameters: a rerun replaces it
    other = nbmod.start("demo", _ns(budget=20, results_json=str(target), overwrite=False), verbose=False)
    with pytest.raises(FileExistsError, match="budget"):
        other.save_results({"acc": 0.1})
    assert json.loads(target.read_text())["metrics"]["acc"] == 0.6
    forced = nbmod.start("demo", _ns(budget=20, results_json=str(target), overwrite=True), verbose=False)
    forced.save_results({"acc": 0.1})
    assert json.loads(target.read_text())["params"]["budget"] == 20
    # a rerun of the same parameters without -p overwrite is not refused because the last run had it
    plain = nbmod.start("demo", _ns(budget=20, results_json=str(target), overwrite=False), verbose=False)
    plain.save_results({"acc": 0.2})
    assert json.loads(target.read_text())["metrics"]["acc"] == 0.2
    target.write_text("{not json")
    with pytest.raises(FileExistsError, match="not a readable"):
        run.save_results({"acc": 0.6})
    assert not list(target.parent.glob("*.tmp*"))


def test_default_results_path_is_named_by_a_parameter_hash(monkeypatch, tmp_path):
    monkeypatch.delenv(nbmod.SIZE_ENV, raising=False)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "uslkit"\n')
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")  # Jupyter's cwd; paths still resolve against the project root
    a = nbmod.start("demo", _ns(budget=40, results_json="", overwrite=False), verbose=False)
    b = nbmod.start("demo", _ns(budget=20, results_json="", overwrite=False), verbose=False)
    assert a.results_path.parent == tmp_path / "papermill_runs" / "demo"
    assert a.results_path != b.results_path
    assert a.path("data") == tmp_path / "data"
    assert nbmod.params_hash({"a": 1, "b": 2}) == nbmod.params_hash({"b": 2, "a": 1})


def test_embedded_splits_subsets_are_seeded_and_aligned():
    pool, test, emb, test_emb = nbmod.embedded_splits("digits", pca=16, max_samples=300, max_test=100,
                                                      root=ROOT / "data", progress=False)
    assert len(pool) == emb.shape[0] == 300 and len(test) == test_emb.shape[0] == 100 and emb.shape[1] == 16
    again = nbmod.embedded_splits("digits", pca=16, max_samples=300, max_test=100, root=ROOT / "data",
                                  progress=False)
    assert np.array_equal(pool.ids, again[0].ids) and np.array_equal(emb, again[2])


def test_run_check_names_the_parameter_in_papermill_terms(monkeypatch, tmp_path):
    monkeypatch.delenv(nbmod.SIZE_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    ns = _ns(selection_encoder="init", init="none", labels_file="", results_json="", overwrite=False)
    run = nbmod.start("demo", ns, verbose=False)
    assert run.check("selection_encoder", ("init", "pixels")) == "init"
    with pytest.raises(ValueError, match=r"-p selection_encoder must be one of \['pixels'\], got 'init'"):
        run.check("selection_encoder", ("pixels",))
    with pytest.raises(ValueError, match=r"-p selection_encoder init needs -p init \(or -p labels_file\)"):
        run.check("selection_encoder", needs="init", unless="labels_file")
    ns2 = _ns(selection_encoder="init", init="none", labels_file="sel.json", results_json="", overwrite=False)
    assert nbmod.start("demo", ns2, verbose=False).check("selection_encoder", needs="init", unless="labels_file")
