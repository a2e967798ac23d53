"""The notebooks as files (stored clean, parameterised, thin drivers) and uslkit.notebook, their helper.

Executing them is nbval's job: ``make test`` collects ``notebooks/*.ipynb`` with ``--nbval-lax`` at the small
size (``notebooks/conftest.py`` sets ``USLKIT_NB_SIZE=small``).
"""

from __future__ import annotations

import ast
import itertools
import json
from pathlib import Path

import nbformat
import numpy as np
import pytest

from uslkit import notebook as nbmod

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REQUIRED = ["01_embeddings", "02_usl_selection", "03_coverage_analysis", "04_fixmatch", "05_low_budget_al",
            "06_usl_t", "07_sela_sinkhorn", "08_ntkcpl", "09_cmsf", "10_explorer"]


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


def test_start_small_size_keeps_values_given_with_papermill_p_and_says_what_it_replaced(monkeypatch, tmp_path,
                                                                                       capsys):
    """``papermill ... -p budget 40`` under the small CI size: the injected cell (``# Parameters``, in IPython's
    ``In``) names budget, so 40 stays; the other small values apply and the run prints them."""
    monkeypatch.setenv(nbmod.SIZE_ENV, "small")
    monkeypatch.delenv(nbmod.KEEP_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    ns = _ns(budget=40, seeds=[0, 1, 2], results_json="", overwrite=False)
    ns["In"] = ["", "budget = 20\nseeds = [0, 1, 2]\n", "# Parameters\nbudget = 40\n", "run = start(...)"]
    assert nbmod.injected_parameters(ns) == {"budget"}
    run = nbmod.start("demo", ns, small=dict(budget=20, seeds=[0]), verbose=True)
    assert ns["budget"] == 40 and run.params["budget"] == 40 and ns["seeds"] == [0]
    out = capsys.readouterr().out
    assert "(given with -p; kept at the small size)" in out and "replaced: seeds [0, 1, 2] -> [0]" in out


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


# ---- notebook 04's learner parameter: uslkit.notebook.learner_config -------------------------------------------

_NB04_FIELDS = dict(steps=None, epochs=None, batch_size=None, mu=None, lr=None, weight_decay=None, threshold=None,
                    ema_decay=None)


class _Pool:  # what run_folder reads of a dataset
    name, split = "fashion_mnist", "train"

    def __len__(self):
        return 1000


def test_default_learner_resolves_to_the_fixmatch_run_of_before_with_the_same_run_folder(tmp_path):
    from uslkit.train import FixMatchConfig
    from uslkit.train.config import run_folder

    # the notebook's literals before it took a learner: full size and small (CI) size
    before = dict(arch="cnn_small", steps=250, batch_size=64, mu=7, lr=0.03, weight_decay=0.0005, threshold=0.95,
                  ema_decay=0.99)
    for small, arch in itertools.product(({}, dict(steps=6, batch_size=16, mu=2)), (None, "cnn_small")):
        # arch None: the notebook's default now (the preset's, cnn_small); "cnn_small": its old literal
        lrn, cfg = nbmod.learner_config("fixmatch", preset="cpu", learner_params={}, init="simclr",
                                        arch=arch, **{**_NB04_FIELDS, **small})
        assert lrn.name == "fixmatch" and cfg == FixMatchConfig(**{**before, **small})
        folder = run_folder(tmp_path, cfg, dataset=_Pool(), seed=0, init="m.pt", labels=[1, 2])
        assert folder == run_folder(tmp_path, FixMatchConfig(**{**before, **small}), dataset=_Pool(), seed=0,
                                    init="m.pt", labels=[1, 2])
        assert folder.name.startswith("fixmatch_fashion_mnist_n1000_cnn_small_s0_")


def test_learner_config_precedence_preset_then_fields_then_learner_params():
    _, cfg = nbmod.learner_config("fixmatch", preset="paper", learner_params={"lr": 0.1, "threshold": 0.8},
                                  arch="cnn_small", **{**_NB04_FIELDS, "steps": 7, "lr": 0.2})
    assert (cfg.arch, cfg.steps, cfg.lr, cfg.threshold, cfg.ema_decay) == ("cnn_small", 7, 0.1, 0.8, 0.999)
    # an explicit -p arch wins over the preset's (above); an unset one (None, the notebook's default) keeps it
    _, cfg = nbmod.learner_config("fixmatch", preset="paper", learner_params={}, arch=None, **_NB04_FIELDS)
    assert cfg.arch == "wrn28_2"
    _, cfg = nbmod.learner_config("mixmatch", preset="paper", learner_params={}, arch=None, **_NB04_FIELDS)
    assert cfg.arch == "wrn28_2"
    _, ft = nbmod.learner_config("finetune", preset="paper", learner_params={"mode": "full"}, init="m.pt",
                                 arch="wrn28_2", **{**_NB04_FIELDS, "steps": 6, "mu": 2, "batch_size": 16})
    # finetune has no arch or mu (not given by the caller: left out); batch_size and steps (which replaces its
    # epochs) are its fields
    assert (ft.mode, ft.batch_size, ft.lr, ft.steps, ft.epochs) == ("full", 16, 0.01, 6, None)
    assert nbmod.learner_label("fixmatch") == "fixmatch"
    assert nbmod.learner_label("fixmatch", {"threshold_mode": "flexmatch", "da_window": 8}) == \
        "fixmatch[da_window=8,threshold_mode=flexmatch]"


@pytest.mark.parametrize("kwargs, message", [
    (dict(learner="mixmatchh"), r"^-p learner must be one of \[.*'finetune', 'fixmatch'.*\], got 'mixmatchh'$"),
    (dict(learner="simclr"), r"^-p learner must be one of .*, got 'simclr'$"),
    (dict(learner="finetune", preset="paper", init="none"),
     r"^-p learner finetune needs -p init \(a pretrained checkpoint\); got init='none'$"),
    (dict(learner="finetune", preset="cpu", init="m.pt"),
     r"^-p preset 'cpu' is not a preset of finetune \(FinetuneConfig.PRESETS: \['paper'\]\)"),
    (dict(learner="finetune", preset="paper", init="m.pt", mu=5, given=["mu"]),
     r"^-p mu is not an option of finetune \(FinetuneConfig fields: \["),
    (dict(learner="fixmatch", preset="", init="none"), r"^-p learner fixmatch needs steps \("),
    (dict(learner="fixmatch", learner_params={"tau": 1}), r"^-p learner_params \['tau'\] are not fields of "),
    (dict(learner="fixmatch", learner_params="threshold_mode=flexmatch"), r"^-p learner_params must be a dict"),
    (dict(learner="fixmatch", learner_params={"steps": 3}, steps=4, given=["steps"]),
     r"^steps is given both as -p steps and in -p learner_params; give it once$"),
    (dict(learner="fixmatch", threshold=1.5), r"^threshold must be in \[0, 1\], got 1.5$"),  # the config's own
])
def test_learner_config_bad_input_is_one_clear_line(kwargs, message):
    kwargs = {"preset": "cpu", **kwargs}
    with pytest.raises(ValueError, match=message) as e:
        nbmod.learner_config(kwargs.pop("learner"), **kwargs)
    assert "\n" not in str(e.value)


def test_run_learner_config_drops_small_size_values_but_not_given_ones(monkeypatch, tmp_path):
    monkeypatch.setenv(nbmod.SIZE_ENV, "small")
    monkeypatch.delenv(nbmod.KEEP_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    ns = _ns(learner="finetune", preset="paper", learner_params={}, init="m.pt", arch="cnn_small",
             results_json="", overwrite=False, **_NB04_FIELDS)
    run = nbmod.start("demo", ns, small=dict(steps=6, mu=2, batch_size=16, epochs=0.1), verbose=False)
    fields = {k: ns[k] for k in _NB04_FIELDS}
    _, cfg = run.learner_config("finetune", preset="paper", learner_params={}, init="m.pt", arch="cnn_small", **fields)
    assert (cfg.batch_size, cfg.steps) == (16, 6)  # steps, finetune's too now, replaces its epochs
    _, cfg = run.learner_config("fixmatch", preset="cpu", learner_params={}, init="m.pt", arch="cnn_small", **fields)
    assert (cfg.steps, cfg.mu, cfg.batch_size, cfg.ema_decay) == (6, 2, 16, 0.99)  # epochs: not a FixMatch field
    ns = _ns(learner="finetune", preset="paper", learner_params={}, init="m.pt", arch="cnn_small",
             results_json="", overwrite=False, **{**_NB04_FIELDS, "mu": 4})  # as -p mu 4 sets it
    run = nbmod.start("demo", ns, small=dict(mu=2), verbose=False)
    with pytest.raises(ValueError, match=r"-p mu is not an option of finetune"):
        run.learner_config("finetune", preset="paper", learner_params={}, init="m.pt", arch="cnn_small",
                           **{k: ns[k] for k in _NB04_FIELDS})


# ---- the SimCLR encoder notebooks 04 and 06 share: uslkit.notebook.pretrain_simclr --------------------------------

def test_pretrain_simclr_is_notebook_04s_config_and_run_folder(monkeypatch, tmp_path):
    import uslkit.train
    from uslkit.train import SimCLRConfig

    calls = []
    monkeypatch.setattr(uslkit.train, "train_simclr", lambda pool, cfg, **kw: calls.append((cfg, kw)) or "result")
    nb04 = dict(arch="cnn_small", epochs=12.0, steps=0, batch_size=256, temperature=0.1, crop_min=0.5, seed=0)
    assert nbmod.pretrain_simclr(_Pool(), tmp_path, **nb04) == "result"
    cfg, kw = calls[-1]
    assert cfg == SimCLRConfig.PRESETS["cpu"] and kw["seed"] == 0 and kw["overwrite"] is False
    # notebook 04's small size: the folder its SimCLR cell named before the helper existed (same hash)
    nbmod.pretrain_simclr(_Pool(), tmp_path, **{**nb04, "steps": 3, "batch_size": 64}, overwrite=True)
    cfg, kw = calls[-1]
    assert (cfg.steps, cfg.epochs, cfg.batch_size, kw["overwrite"]) == (3, None, 64, True)
    assert kw["out_dir"] == tmp_path / "simclr_fashion_mnist_n1000_cnn_small_s0_f5572560cc"
    # notebook 04 passes arch None for a learner without an arch field (finetune): SimCLR's default, same folder
    nbmod.pretrain_simclr(_Pool(), tmp_path, **{**nb04, "arch": None, "steps": 3, "batch_size": 64}, overwrite=True)
    assert calls[-1][1]["out_dir"] == tmp_path / "simclr_fashion_mnist_n1000_cnn_small_s0_f5572560cc"


def test_notebook_04_pretrains_simclr_with_the_learners_resolved_arch():
    nb = nbformat.read(ROOT / "notebooks" / "04_fixmatch.ipynb", as_version=4)
    params = {stmt.targets[0].id: ast.literal_eval(stmt.value) for stmt in ast.parse(nb.cells[1].source).body}
    assert params["arch"] is None  # the preset's network unless -p arch is given
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert 'pretrain_simclr(pool, work, arch=getattr(cfg, "arch", None) or arch,' in src


def test_check_given_once_counts_explicit_parameters_only(monkeypatch, tmp_path):
    with pytest.raises(ValueError, match=r"^steps is given both as -p usl_t_steps and in -p usl_t_params; give it"):
        nbmod.check_given_once({"steps": "usl_t_steps"}, {"steps": 3}, dict_name="usl_t_params")
    nbmod.check_given_once({"steps": "usl_t_steps"}, {"heads": 1}, dict_name="usl_t_params")
    monkeypatch.setenv(nbmod.SIZE_ENV, "small")
    monkeypatch.delenv(nbmod.KEEP_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    fields = {"steps": "usl_t_steps", "batch_size": "usl_t_batch_size"}
    ns = _ns(usl_t_steps=None, usl_t_batch_size=None, usl_t_params={"steps": 3}, results_json="", overwrite=False)
    run = nbmod.start("06_usl_t", ns, small=dict(usl_t_steps=4), verbose=False)
    run.check_given_once(fields, ns["usl_t_params"], dict_name="usl_t_params")  # the small size's 4 is not given
    ns = _ns(usl_t_steps=None, usl_t_batch_size=64, usl_t_params={"batch_size": 32}, results_json="", overwrite=False)
    run = nbmod.start("06_usl_t", ns, verbose=False)
    with pytest.raises(ValueError, match=r"^batch_size is given both as -p usl_t_batch_size and in -p usl_t_params"):
        run.check_given_once(fields, ns["usl_t_params"], dict_name="usl_t_params")
    nb = nbformat.read(ROOT / "notebooks" / "06_usl_t.ipynb", as_version=4)
    src = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "run.check_given_once(" in src and 'run.learner_config("fixmatch"' in src
