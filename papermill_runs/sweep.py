"""Run a grid of parameterised notebooks with papermill, then aggregate their results JSON into one table.

A grid file (YAML)::

    name: fmnist_methods              # output folder papermill_runs/<name>/
    notebooks: [notebooks/03_coverage_analysis.ipynb]
    fixed:                            # the same for every run
      dataset: fashion_mnist
    grid:                             # crossed: one run per combination
      methods: [usl, kmeans, random]
      budgets: [10, 20, 40]
      seeds: [0, 1, 2]

A grid key may instead map names to *variants*, each a mapping of parameters set together; the names are
crossed like values and the run is named by the variant's name. Learners with their options are crossed with
selections this way (``papermill_runs/learners_methods.yaml``)::

    grid:
      method: [random, usl]
      learner:                        # a variant name -> the parameters it sets
        fixmatch: {learner: fixmatch}
        flexmatch: {learner: fixmatch, learner_params: {threshold_mode: flexmatch}}
        finetune: {learner: finetune, preset: paper}

Every fixed key, list-valued grid key and variant parameter must be a parameter of every notebook in the file
(checked with ``papermill.inspect_notebook`` before anything runs); a parameter is set by one of them only. A
scalar given for a parameter whose default is a list (``methods``, ``budgets``, ``seeds``) is passed as a
one-element list, so one grid crosses list-taking notebooks run by run. Each run writes
``<name>/<notebook>__<key>-<value>__....ipynb`` and, through the notebook's ``results_json`` parameter, the
``.json`` beside it. For a notebook with a ``learner`` parameter every run's learner, ``preset``,
``learner_params`` and ``init`` are checked at the start (:func:`uslkit.notebook.learner_config`), so an unknown
learner stops the sweep before anything runs, with the valid names. Different learners or learner options never
share a run: the run name holds the variant and the notebook's training folders are named by the learner's config.

A run whose JSON already exists with the same parameters is skipped (a killed sweep resumes where it stopped);
one with other parameters is an error unless ``--overwrite``. A failing cell is reported with the executed
notebook's path and the cell's error, the sweep goes on, and the exit status is 1.

``aggregate`` reads every results JSON of a sweep folder (never notebook outputs): a notebook whose metrics hold
``rows`` (one per method, budget and seed) contributes those rows, any other contributes one row of its
parameters and scalar metrics. It writes ``results.csv``, ``summary.md`` (mean +- std over seeds per method and
budget for every numeric metric; per method and learner when the rows hold more than one ``learner``) and one
``<metric>_vs_budget.png`` per metric.

    python papermill_runs/sweep.py run papermill_runs/fmnist_methods.yaml        # then aggregates
    python papermill_runs/sweep.py run papermill_runs/fmnist_methods.yaml --size small --dry-run
    python papermill_runs/sweep.py aggregate papermill_runs/fmnist_methods
"""

from __future__ import annotations

import argparse
import ast
import itertools
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def load_grid(path: Path) -> dict:
    import yaml

    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise SystemExit(f"cannot read grid file {path}: {e}") from e
    if not isinstance(cfg, dict):
        raise SystemExit(f"{path}: a grid file is a mapping with name, notebooks, fixed and grid")
    unknown = sorted(set(cfg) - {"name", "notebooks", "fixed", "grid"})
    if unknown:
        raise SystemExit(f"{path}: unknown keys {unknown}; valid: name, notebooks, fixed, grid")
    nbs = cfg.get("notebooks")
    if isinstance(nbs, str):
        nbs = [nbs]
    if not nbs:
        raise SystemExit(f"{path}: 'notebooks' must list at least one notebook")
    grid = cfg.get("grid") or {}
    if not isinstance(grid, dict) or any(not _is_values(v) and not _is_variants(v) for v in grid.values()):
        raise SystemExit(f"{path}: 'grid' maps parameter names to non-empty lists of values, or a name to "
                         "variants (a mapping of variant names to mappings of parameters)")
    return {"name": str(cfg.get("name") or path.stem), "notebooks": [str(n) for n in nbs],
            "fixed": dict(cfg.get("fixed") or {}), "grid": grid}


def _is_values(v) -> bool:
    return isinstance(v, list) and bool(v)


def _is_variants(v) -> bool:
    return isinstance(v, dict) and bool(v) and all(isinstance(p, dict) and p for p in v.values())


def _value_tag(v) -> str:
    if isinstance(v, (list, tuple)):
        return "+".join(_value_tag(x) for x in v)
    if isinstance(v, dict):
        return "+".join(f"{_value_tag(k)}={_value_tag(v[k])}" for k in sorted(v))
    return _SAFE.sub("_", str(v))


def run_name(notebook: Path, point: dict) -> str:
    """``<notebook stem>__<key>-<value>__...`` over the grid point's keys in sorted order."""
    return "__".join([notebook.stem, *(f"{k}-{_value_tag(point[k])}" for k in sorted(point))])


def _grid_parameters(cfg: dict) -> list[str]:
    """The notebook parameters the grid file sets: fixed keys, list-valued grid keys, variants' parameters.

    Raises:
        SystemExit: a parameter set in two places (fixed and grid, or two grid keys).
    """
    seen: dict[str, str] = {k: "fixed" for k in cfg["fixed"]}
    for key, spec in cfg["grid"].items():
        names = sorted({p for v in spec.values() for p in v}) if _is_variants(spec) else [key]
        for p in names:
            if p in seen:
                raise SystemExit(f"parameter {p!r} is set both by {seen[p]} and by grid key {key!r}; set it once")
            seen[p] = f"grid key {key!r}"
    return list(seen)


def _literal_defaults(declared: dict) -> dict:
    """A notebook's parameter defaults as values (papermill reports their source text)."""
    out = {}
    for k, d in declared.items():
        try:
            out[k] = ast.literal_eval(str(d.get("default", "")))
        except (ValueError, SyntaxError):
            continue
    return out


def check_learners(runs: list[dict]) -> None:
    """For notebooks with a ``learner`` parameter: each run's learner, preset, learner_params and init resolve
    (:func:`uslkit.notebook.learner_config`, the notebook's own first check; values of its parameters named as
    config fields complete the config, and one the sweep sets that the learner's config lacks is an error, as
    ``-p`` is in the notebook), so a bad one stops the sweep before anything runs.

    Raises:
        SystemExit: listing every run that would fail and why (an unknown learner's message lists the valid ones).
    """
    from uslkit.notebook import labelled_learners, learner_config
    from uslkit.train.registry import LEARNERS

    # the notebook's hyperparameter parameters: fields of some learner's config (arch: its own argument, which a
    # learner without that field ignores, as the notebook does)
    config_fields = {f for name in labelled_learners() for f in LEARNERS[name].config.field_names()} - {"arch"}
    errors = {}
    for run in runs:
        if "learner" not in run["defaults"]:
            continue
        values = {**run["defaults"], **run["params"]}
        fields = {k: v for k, v in values.items() if k not in ("learner", "preset", "learner_params", "init")}
        # what the sweep sets is given with -p: a field the learner lacks stops the sweep (the notebook refuses it)
        given = [k for k in run["params"] if k in config_fields and run["params"][k] is not None]
        try:
            learner_config(values["learner"], preset=values.get("preset"), learner_params=values.get("learner_params"),
                           init=values.get("init"), given=given, **fields)
        except ValueError as e:
            errors.setdefault(str(e), []).append(run["output"].stem)
    if errors:
        lines = [f"{msg} ({len(names)} run(s), e.g. {names[0]})" for msg, names in errors.items()]
        raise SystemExit("learner check failed before any run:\n  " + "\n  ".join(lines))


def plan(cfg: dict, out_dir: Path) -> list[dict]:
    """Every run of the grid: notebook, parameters, output paths. Validates parameter names and types, and the
    learners of notebooks that take one (:func:`check_learners`)."""
    import papermill as pm

    keys = list(cfg["grid"])
    axes = [list(cfg["grid"][k].items()) if _is_variants(cfg["grid"][k]) else [(v, {k: v}) for v in cfg["grid"][k]]
            for k in keys]  # per key: (value or variant name, the parameters it sets)
    set_params = _grid_parameters(cfg)
    runs = []
    for nb in cfg["notebooks"]:
        nb_path = (ROOT / nb) if not Path(nb).is_absolute() else Path(nb)
        if not nb_path.is_file():
            raise SystemExit(f"notebook {nb_path} not found")
        declared = pm.inspect_notebook(str(nb_path))
        if not declared:
            raise SystemExit(f"{nb_path} has no cell tagged 'parameters'")
        for k in set_params:
            if k not in declared:
                raise SystemExit(f"{k!r} is not a parameter of {nb_path.name}; its parameters: {sorted(declared)}")
        list_params = {k for k, d in declared.items() if str(d.get("default", "")).lstrip().startswith("[")}
        defaults = _literal_defaults(declared)
        for choice in itertools.product(*axes):
            point = {k: tag for k, (tag, _) in zip(keys, choice)}
            params = dict(cfg["fixed"])
            for _, sets in choice:
                params.update(sets)
            params = {k: ([v] if k in list_params and not isinstance(v, list) else v) for k, v in params.items()}
            name = run_name(nb_path, point)
            runs.append({"notebook": nb_path, "params": params, "output": out_dir / f"{name}.ipynb",
                         "results": out_dir / f"{name}.json", "defaults": defaults})
    names = [r["output"] for r in runs]
    if len(set(names)) != len(names):
        raise SystemExit("two grid points map to the same output name; make the values distinguishable")
    check_learners(runs)
    return runs


def _done(run: dict, overwrite: bool, size: str) -> bool:
    """True when the run's results exist with the same parameters; error when they exist with others."""
    path = run["results"]
    if not path.exists() or overwrite:
        return False
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{path} exists but is unreadable ({e}); remove it or pass --overwrite") from e
    old_params = old.get("requested", old.get("params", {}))  # as passed, before the small-size overrides
    differ = sorted(k for k, v in run["params"].items() if k != "results_json" and old_params.get(k) != v)
    if old.get("size") != size:
        differ.append(f"size ({old.get('size')} in the file)")
    if differ:
        raise SystemExit(f"{path} holds a run with other values of {differ}; pass --overwrite or use another name")
    return True


def execute(runs: list[dict], *, size: str, overwrite: bool, kernel: str | None) -> list[str]:
    """Execute the runs not done yet; return the failure messages."""
    import papermill as pm

    env_before = {k: os.environ.get(k) for k in ("USLKIT_NB_SIZE", "USLKIT_NB_KEEP")}
    os.environ["USLKIT_NB_SIZE"] = size  # the kernel inherits it (uslkit.notebook.start reads it)
    failures = []
    try:
        for i, run in enumerate(runs, 1):
            os.environ["USLKIT_NB_KEEP"] = ",".join(run["params"])  # the grid's values win over the small size
            label = f"[{i}/{len(runs)}] {run['output'].name}"
            if _done(run, overwrite, size):
                print(f"{label}: done already, skipped", flush=True)
                continue
            run["output"].parent.mkdir(parents=True, exist_ok=True)
            params = dict(run["params"], results_json=str(run["results"]), overwrite=overwrite)
            print(f"{label}: running", flush=True)
            try:
                pm.execute_notebook(str(run["notebook"]), str(run["output"]), parameters=params, cwd=str(ROOT),
                                    kernel_name=kernel, progress_bar=False)
            except pm.PapermillExecutionError as e:
                msg = (f"{run['output']}: cell {e.exec_count} failed: {e.ename}: {e.evalue} "
                       f"(notebook {run['notebook'].name}, parameters {run['params']})")
                failures.append(msg)
                print("FAILED " + msg, file=sys.stderr, flush=True)
            except Exception as e:  # kernel died, notebook unreadable, ...
                msg = f"{run['output']}: {type(e).__name__}: {e}"
                failures.append(msg)
                print("FAILED " + msg, file=sys.stderr, flush=True)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return failures


def collect_rows(folder: Path) -> tuple[list[dict], list[str]]:
    """One flat row per result, and the metric columns (in first-seen order).

    A ``rows`` list in the metrics is expanded (each row a method/budget/seed result); otherwise the record's
    scalar metrics make one row. Rows also carry the run name, notebook, size and the scalar parameters.
    """
    rows, metric_keys = [], {}
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except ValueError as e:
            raise SystemExit(f"{path} is not valid JSON ({e}); remove or rerun it") from e
        if not isinstance(rec, dict) or "metrics" not in rec or "params" not in rec:
            continue  # not a notebook results file
        base = {"run": path.stem, "notebook": rec.get("notebook"), "size": rec.get("size")}
        base.update({k: v for k, v in rec["params"].items() if isinstance(v, (int, float, str, bool))
                     and k not in ("results_json", "overwrite", "data_root")})
        metrics = rec["metrics"]
        found = [r for r in metrics["rows"] if isinstance(r, dict)] if isinstance(metrics.get("rows"), list) else \
            [{k: v for k, v in metrics.items() if isinstance(v, (int, float, bool, str)) or v is None}]
        for r in found:
            rows.append({**base, **r})
            metric_keys.update(dict.fromkeys(k for k, v in r.items() if k not in ("method", "budget", "seed")
                                             and isinstance(v, (int, float)) and not isinstance(v, bool)))
    return rows, list(metric_keys)


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.4f} +- {0.0 if std != std else std:.4f} (n={int(n)})"


def aggregate(folder: Path) -> Path:
    """Write ``results.csv``, ``summary.md`` and the metric-vs-budget figures of a sweep folder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from uslkit import _io
    from uslkit.plots import metric_curves

    rows, metrics = collect_rows(folder)
    if not rows:
        raise SystemExit(f"no results JSON in {folder}")
    df = pd.DataFrame(rows)
    _io.atomic_write_text(folder / "results.csv", df.to_csv(index=False))
    group = "method"  # the rows of each table (and lines of each figure)
    if "method" in df and "learner" in df and df["learner"].nunique() > 1:
        group = "method / learner"
        df[group] = df["method"].astype(str) + " / " + df["learner"].astype(str)
    notebooks = sorted(df["notebook"].dropna().unique().tolist())
    sizes = sorted(df["size"].dropna().unique().tolist())
    lines = [f"# Sweep {folder.name}", "", f"{len(df)} rows from {df['run'].nunique()} runs of {notebooks}; "
             f"sizes {sizes}; cells: mean +- std over seeds (n = rows).", ""]
    by_budget = "method" in df and "budget" in df
    for m in metrics:
        if m not in df or not df[m].notna().any():
            continue
        lines += [f"## {m}", ""]
        if by_budget:
            g = df.groupby([group, "budget"])[m].agg(["mean", "std", "count"])
            budgets = sorted(df["budget"].dropna().unique().tolist())
            methods = list(dict.fromkeys(df[group].dropna().tolist()))
            lines += [f"| {group} | " + " | ".join(f"budget {b}" for b in budgets) + " |",
                      "|---|" + "---|" * len(budgets)]
            for meth in methods:
                cells = [_cell(*g.loc[(meth, b)]) if (meth, b) in g.index else "-" for b in budgets]
                lines.append(f"| {meth} | " + " | ".join(cells) + " |")
            if len(budgets) > 1:
                fig = metric_curves(df.to_dict("records"), x="budget", y=m, hue=group, percent=False)
                fig.savefig(folder / f"{m}_vs_budget.png", dpi=100, bbox_inches="tight")
                plt.close(fig)
        else:
            lines.append(f"{_cell(df[m].mean(), df[m].std(), int(df[m].notna().sum()))}")
        lines.append("")
    _io.atomic_write_text(folder / "summary.md", "\n".join(lines) + "\n")
    print(f"wrote {folder / 'results.csv'} ({len(df)} rows) and {folder / 'summary.md'}")
    return folder / "summary.md"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="execute a grid, then aggregate it")
    r.add_argument("grid", type=Path)
    r.add_argument("--size", choices=["full", "small"], default="full",
                   help="small: the notebooks' CI size (USLKIT_NB_SIZE=small)")
    r.add_argument("--out", type=Path, default=None, help="default papermill_runs/<name>")
    r.add_argument("--overwrite", action="store_true", help="rerun runs whose results exist")
    r.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    r.add_argument("--kernel", default=None, help="Jupyter kernel name (default: the notebook's)")
    a = sub.add_parser("aggregate", help="collect a sweep folder's results JSON into CSV + Markdown + figures")
    a.add_argument("folder", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "aggregate":
        aggregate(args.folder)
        return 0
    cfg = load_grid(args.grid)
    out = args.out or (ROOT / "papermill_runs" / cfg["name"])
    runs = plan(cfg, out)
    if args.dry_run:
        for run in runs:
            print(run["output"].name, json.dumps(run["params"]))
        print(f"{len(runs)} runs -> {out}")
        return 0
    failures = execute(runs, size=args.size, overwrite=args.overwrite, kernel=args.kernel)
    if any(out.glob("*.json")):
        aggregate(out)
    if failures:
        print(f"{len(failures)} of {len(runs)} runs failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
