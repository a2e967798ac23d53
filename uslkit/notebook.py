"""What every notebook calls first and last: its parameters, the small CI size, paths, and the results JSON.

The notebooks under ``notebooks/`` are thin drivers. Their first cell (tagged ``parameters``) holds literals
only, so papermill can override them (``papermill notebooks/04_fixmatch.ipynb out.ipynb -p budget 40``).
The next cell calls :func:`start`::

    run = start("04_fixmatch", globals(), small=dict(max_samples=2000, steps=20))

which

1. collects the parameters (every public global holding a literal: number, string, bool, None, or a
   list/tuple/dict of them; this is the parameters cell plus whatever papermill injected);
2. when the environment variable ``USLKIT_NB_SIZE`` is ``small`` (CI sets it for ``pytest --nbval-lax``),
   replaces the parameters named in ``small`` by their small values, *in the notebook's namespace*, so
   the following cells read the plain names, and prints which it replaced; every other value (and every
   papermill run without the variable) is left alone. Parameters given with papermill's ``-p`` are
   never replaced (:func:`injected_parameters`). Names listed in ``USLKIT_NB_KEEP`` (comma-separated;
   the sweep script sets it to the parameters it passes) keep their given values at the small size too.
   The notebook file is never edited;
3. returns a :class:`NotebookRun` that resolves paths against the project root and writes the results.

:meth:`NotebookRun.save_results` writes ``{"notebook", "size", "params", "requested", "metrics", versions, ...}`` as
JSON, atomically, to the ``results_json`` parameter (the sweep script passes the executed notebook's path
with ``.json``) or, when that is empty, to ``papermill_runs/<notebook>/<notebook>-<hash of params>.json``.
An existing file written with other parameters is an error unless the ``overwrite`` parameter is true;
the same parameters replace it (a rerun). Aggregation reads these files, never notebook outputs.

A notebook that trains takes its learner by name (``-p learner fixmatch``, any entry of
:data:`uslkit.train.LEARNERS` that reads a labels file): :func:`learner_config` turns ``learner``, ``preset``,
``learner_params`` and the notebook's hyperparameter parameters into the learner and its config, with
one-line errors in ``-p`` terms, before any data is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, MutableMapping, Sequence

from . import _io

__all__ = ["SIZE_ENV", "KEEP_ENV", "NotebookRun", "start", "project_root", "collect_parameters", "params_hash",
           "injected_parameters",
           "embedded_splits", "pretrain_simclr", "labelled_learners", "learner_config", "learner_label",
           "check_given_once"]

SIZE_ENV = "USLKIT_NB_SIZE"
KEEP_ENV = "USLKIT_NB_KEEP"
_SIZES = ("full", "small")
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}


def project_root(start_dir: str | os.PathLike | None = None) -> Path:
    """The uslkit checkout containing ``start_dir`` (default: cwd), found by its ``pyproject.toml``.

    Notebooks run with their own folder as working directory (Jupyter, nbval) or the caller's (papermill);
    resolving ``data/`` and ``papermill_runs/`` against the project root makes both the same. Outside a
    checkout (the kit pip-installed), the working directory is the root.
    """
    here = Path(start_dir or os.getcwd()).resolve()
    for d in (here, *here.parents):
        py = d / "pyproject.toml"
        if py.is_file() and 'name = "uslkit"' in py.read_text(errors="replace"):
            return d
    return here


def _is_literal(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_literal(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_literal(x) for k, x in v.items())
    return False


def collect_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The public literal-valued names of ``namespace`` (a notebook's ``globals()`` after its parameters)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in namespace.items()
            if not k.startswith("_") and k not in _IPYTHON_NAMES and _is_literal(v)}


def params_hash(params: Mapping[str, Any]) -> str:
    """Short stable hash of a parameter dict (key order does not matter)."""
    blob = json.dumps(params, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


class NotebookRun:
    """One execution of a notebook: its parameters, size, project root and results file.

    Attributes:
        name: notebook name without ``.ipynb`` (``"04_fixmatch"``).
        params: the parameters in effect (after the small-size overrides).
        requested: the parameters as given (before them).
        size: ``"full"`` or ``"small"``.
        root: project root (:func:`project_root`).
        results_path: where :meth:`save_results` writes.
    """

    def __init__(self, name: str, params: dict[str, Any], *, size: str, root: Path,
                 requested: dict[str, Any] | None = None):
        self.name = name
        self.params = dict(params)
        self.requested = dict(requested if requested is not None else params)
        self.size = size
        self.root = root
        self.t0 = time.perf_counter()
        target = params.get("results_json") or ""
        if target:
            self.results_path = self.path(target)
        else:
            self.results_path = self.path("papermill_runs") / name / f"{name}-{params_hash(self.params)}.json"

    def path(self, p: str | os.PathLike) -> Path:
        """``p`` resolved against the project root unless absolute."""
        p = Path(p).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def small(self) -> bool:
        return self.size == "small"

    def check(self, name: str, choices=None, *, unless: str | None = None, needs: str | None = None) -> Any:
        """Validate the parameter ``name`` in the caller's terms (``-p name ...``) and return its value.

        ``choices``: the valid values. ``needs``/``unless``: ``name``'s value requires the parameter ``needs`` to
        be set (neither ``""`` nor ``"none"``) unless the parameter ``unless`` is set.

        Raises:
            ValueError: naming the parameter, its value and what would be valid.
        """
        value = self.params.get(name)
        if choices is not None and value not in choices:
            raise ValueError(f"-p {name} must be one of {list(choices)}, got {value!r}")
        if needs is not None and _unset(self.params.get(needs)) and (unless is None or _unset(self.params.get(unless))):
            raise ValueError(f"-p {name} {value} needs -p {needs}" + (f" (or -p {unless})" if unless else "")
                             + f"; got {needs}={self.params.get(needs)!r}")
        return value

    def learner_config(self, learner: str, *, preset: str | None, learner_params: Mapping[str, Any] | None,
                       init: Any = None, arch: str | None = None, **fields: Any):
        """:func:`learner_config` with ``given`` = the ``fields`` the caller set (requested value not ``None``), so
        that the small size's values (``steps``, ``mu``, ...) are left out where the learner has no such field
        while one given with ``-p`` is an error there. ``fields`` are named as the notebook's parameters."""
        given = [k for k in fields if self.requested.get(k) is not None]
        return learner_config(learner, preset=preset, learner_params=learner_params, init=init, arch=arch,
                              given=given, **fields)

    def check_given_once(self, fields: Mapping[str, str], params: Mapping[str, Any] | None, *, dict_name: str) -> None:
        """:func:`check_given_once` for the notebook parameters in ``fields`` (config field -> parameter name)
        that the caller set (requested value not ``None``; the small size's values do not count)."""
        given = {k: name for k, name in fields.items() if self.requested.get(name) is not None}
        check_given_once(given, params or {}, dict_name=dict_name)

    def save_results(self, metrics: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the results JSON (parameters, metrics, versions, wall time) atomically; returns its path.

        Raises:
            FileExistsError: the file holds the results of other parameters and the ``overwrite`` parameter
                is not true.
        """
        path = self.results_path
        if path.exists() and not self.params.get("overwrite", False):
            try:
                old = _io.read_json(path)
            except Exception as e:  # a corrupt file is not silently replaced either
                raise FileExistsError(f"{path} exists and is not a readable results file ({e}); "
                                      "remove it or run with -p overwrite True") from e
            before = old.get("params", {})
            # "overwrite" says what to do with this file; it is not a parameter of the results in it
            diff = sorted(k for k in set(before) | set(self.params)
                          if k != "overwrite" and before.get(k) != self.params.get(k))
            if diff or old.get("notebook") != self.name:
                raise FileExistsError(f"{path} holds results of {old.get('notebook')} with other parameters "
                                      f"(differing: {diff}); choose another results_json or -p overwrite True")
        record = {"notebook": self.name, "size": self.size, "params": self.params, "requested": self.requested,
                  "metrics": dict(metrics), **({"extra": dict(extra)} if extra else {}),
                  "wall_s": time.perf_counter() - self.t0, **_io.provenance()}
        _io.atomic_write_json(path, record)
        return path

    def __repr__(self) -> str:
        return f"NotebookRun({self.name!r}, size={self.size!r}, results={str(self.results_path)!r})"


def start(name: str, namespace: MutableMapping[str, Any], *, small: Mapping[str, Any] | None = None,
          size: str | None = None, verbose: bool = True) -> NotebookRun:
    """Freeze a notebook's parameters; apply the small size when ``USLKIT_NB_SIZE=small``.

    Args:
        name: the notebook's name (``"02_usl_selection"``).
        namespace: the notebook's ``globals()``; the small values are written back into it.
        small: parameter values for the small (CI) size; every key must be a parameter.
        size: ``"full"`` or ``"small"``; ``None`` reads ``USLKIT_NB_SIZE`` (unset = ``"full"``).
            ``USLKIT_NB_KEEP`` (comma-separated names) exempts parameters from the small values.
        verbose: print the parameters in effect.
    """
    params = collect_parameters(namespace)
    requested = dict(params)
    small = dict(small or {})
    unknown = sorted(set(small) - set(params))
    if unknown:
        raise ValueError(f"small-size values for {unknown}, which are not parameters of {name} "
                         f"(parameters: {sorted(params)})")
    if size is None:
        size = os.environ.get(SIZE_ENV, "").strip().lower() or "full"
    if size not in _SIZES:
        raise ValueError(f"{SIZE_ENV}={size!r}; valid sizes: {_SIZES}")
    keep = {k.strip() for k in os.environ.get(KEEP_ENV, "").split(",") if k.strip()}
    given = injected_parameters(namespace)  # papermill -p values: what the caller says wins
    kept = sorted(k for k in small if k in given and namespace.get(k) != small[k])
    small = {k: v for k, v in small.items() if k not in keep and k not in given}
    if size == "small":
        for k, v in small.items():
            namespace[k] = v
            params[k] = list(v) if isinstance(v, tuple) else v
    run = NotebookRun(name, params, size=size, root=project_root(), requested=requested)
    if verbose:
        width = max((len(k) for k in params), default=0)
        print(f"{name} ({size} size; results -> {run.results_path})")
        for k in sorted(params):
            mark = "  (small)" if size == "small" and k in small else ""
            mark = "  (given with -p; kept at the small size)" if size == "small" and k in kept else mark
            print(f"  {k:<{width}} = {params[k]!r}{mark}")
        if size == "small" and small:
            changed = [f"{k} {requested[k]!r} -> {small[k]!r}" for k in sorted(small) if requested[k] != small[k]]
            if changed:
                print(f"SMALL SIZE ({SIZE_ENV}=small) replaced: " + ", ".join(changed))
    return run


def injected_parameters(namespace: Mapping[str, Any]) -> set[str]:
    """Names papermill injected (``-p NAME VALUE``): the assignments of the executed cell papermill writes,
    which starts with ``# Parameters``, found in IPython's input history (``In``); empty outside a kernel."""
    import ast

    names: set[str] = set()
    for src in namespace.get("In", None) or []:
        if not isinstance(src, str) or not src.lstrip().startswith("# Parameters"):
            continue
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def embedded_splits(dataset: str, *, encoder: str = "pixels", pca: int | None = 64, max_samples: int = 0,
                    max_test: int = 0, root: str | os.PathLike = "data", subset_seed: int = 0,
                    progress: bool = True):
    """``(pool, test, emb, test_emb)``: a dataset's pool and test splits with their cached embeddings.

    The pool is the training split (``"fit"`` for ``digits``, whose ``"test"`` lies inside ``"train"``).
    Embeddings of the whole splits come from :func:`uslkit.embed.compute_embeddings` (cached under
    ``<root>/embeddings``, PCA fitted on the training split); ``max_samples`` / ``max_test`` > 0 keep a
    seeded random subset (sorted, so sample order follows the dataset), for quick runs.
    """
    import numpy as np

    from .data import load_dataset, pool_split
    from .embed import compute_embeddings

    root = Path(root)
    split = pool_split(dataset)
    kw = dict(encoder=encoder, pca=pca or None, root=root, cache_dir=root / "embeddings", progress=progress,
              download=True)
    pool = load_dataset(dataset, split, root=root, download=True)
    test = load_dataset(dataset, "test", root=root, download=True)
    emb, _ = compute_embeddings(dataset, split=split, **kw)
    test_emb, _ = compute_embeddings(dataset, split="test", **kw)
    rng = np.random.default_rng(subset_seed)
    if max_samples and max_samples < len(pool):
        keep = np.sort(rng.choice(len(pool), size=max_samples, replace=False))
        pool, emb = pool.subset(keep), emb[keep]
    if max_test and max_test < len(test):
        keep = np.sort(rng.choice(len(test), size=max_test, replace=False))
        test, test_emb = test.subset(keep), test_emb[keep]
    return pool, test, np.ascontiguousarray(emb), np.ascontiguousarray(test_emb)


def pretrain_simclr(pool, work_dir: str | os.PathLike, *, arch: str | None, epochs: float, steps: int, batch_size: int,
                    temperature: float, crop_min: float, seed: int, overwrite: bool = False):
    """The notebooks' label-free SimCLR encoder of ``pool``: trained in a run folder under ``work_dir`` or, when
    that folder already holds the finished run, reused (:func:`uslkit.train.simclr.train_simclr`).

    The config is ``SimCLRConfig(arch, batch_size, temperature, crop_scale=(crop_min, 1), steps or epochs)``
    (``arch`` ``None``: ``SimCLRConfig``'s default, ``cnn_small``; ``steps`` > 0 wins over ``epochs``: both are
    always passed, because the notebooks' parameters hold an epoch count that their small size shortens with a
    step count, and ``steps`` 0 means "use ``epochs``"); the folder is :func:`uslkit.train.config.run_folder` of
    that config, the pool and ``seed``, so every notebook passing the same values and ``work_dir`` shares one
    encoder and any other value trains a new one. Notebook 04's defaults are ``SimCLRConfig.PRESETS["cpu"]``.

    Returns:
        :class:`uslkit.train.loop.TrainResult`; the encoder checkpoint is ``out_dir / "model.pt"``, ``reused``
        says whether it was loaded.
    """
    from .train import SimCLRConfig, train_simclr
    from .train.config import run_folder

    length = dict(steps=steps) if steps else dict(epochs=epochs)
    net = {} if arch is None else dict(arch=arch)
    cfg = SimCLRConfig(**net, batch_size=batch_size, temperature=temperature, crop_scale=(crop_min, 1.0),
                       **length)
    return train_simclr(pool, cfg, seed=seed, overwrite=overwrite,
                        out_dir=run_folder(work_dir, cfg, dataset=pool, seed=seed))


def labelled_learners() -> list[str]:
    """The learners of :data:`uslkit.train.LEARNERS` that train on a labels file (notebook 04's ``-p learner``)."""
    from .train.registry import LEARNERS

    return sorted(name for name, lrn in LEARNERS.items() if "labels" in lrn.accepts)


def learner_config(learner: str, *, preset: str | None = None, learner_params: Mapping[str, Any] | None = None,
                   init: Any = None, arch: str | None = None, given: Sequence[str] = (), **fields: Any):
    """``(Learner, config)``: a registered learner and the config a notebook run of it trains with, checked
    before any data is loaded; errors are one line in the notebook's terms (``-p name``).

    The config is ``resolve_config(learner.config, None, preset, overrides)``
    (:func:`uslkit.train.config.resolve_config`) where ``overrides`` are, in increasing precedence:

    1. ``arch`` (not ``None``) where the learner's config has an ``arch`` field (``None``: the preset's; a learner
       without one, e.g. ``finetune``, takes the network of its ``init`` checkpoint);
    2. each of ``fields`` whose value is not ``None`` and that is a field of the learner's config (``None``: the
       preset's value); one named in ``given`` that is not a field is an error, the others are left out;
    3. ``learner_params``: config fields of that learner (``{"threshold_mode": "flexmatch"}``).

    Args:
        learner: a key of :data:`uslkit.train.LEARNERS` that takes a labels file (:func:`labelled_learners`).
        preset: a key of the learner config's ``PRESETS``; ``None``, ``""`` or ``"none"``: its defaults.
        learner_params: config fields of the learner; each wins over the preset and over ``fields``.
        init: the notebook's ``init`` parameter (``None``, ``""`` or ``"none"``: no checkpoint), checked against
            what the learner requires and accepts.
        arch: the network (``None``: the preset's); notebook 04 pretrains SimCLR with the resolved config's.
        given: the names in ``fields`` the caller set explicitly.
        **fields: notebook parameters named as config fields (``steps``, ``batch_size``, ``lr``, ...).

    Raises:
        ValueError: an unknown learner or one that takes no labels file (the message lists the valid ones), a
            preset the learner does not have, ``init`` missing where the learner needs it or given where it
            takes none, a ``given`` field or ``learner_params`` key that is not a field of the learner's config,
            a field given both ways, a config still incomplete (e.g. FixMatch without ``steps``), or the config's
            own validation error.
    """
    from .train.config import resolve_config
    from .train.registry import LEARNERS

    valid = labelled_learners()
    if learner not in valid:
        raise ValueError(f"-p learner must be one of {valid}, got {learner!r}")
    lrn = LEARNERS[learner]
    cls = lrn.config
    names = set(cls.field_names())
    preset = None if _unset(preset) else preset
    if preset is not None and preset not in cls.PRESETS:
        raise ValueError(f"-p preset {preset!r} is not a preset of {learner} ({cls.__name__}.PRESETS: "
                         f"{sorted(cls.PRESETS)}); '' or 'none' trains from its defaults")
    if "init" in lrn.requires and _unset(init):
        raise ValueError(f"-p learner {learner} needs -p init (a pretrained checkpoint); got init={init!r}")
    if "init" not in lrn.accepts and not _unset(init):
        raise ValueError(f"-p learner {learner} takes no initial checkpoint; got init={init!r} (use -p init none)")
    if learner_params is None:
        learner_params = {}
    if not isinstance(learner_params, Mapping):
        raise ValueError(f"-p learner_params must be a dict of {learner} config fields, got {learner_params!r}")
    unknown = sorted(set(learner_params) - names)
    if unknown:
        raise ValueError(f"-p learner_params {unknown} are not fields of {cls.__name__}; valid: {sorted(names)}")
    not_fields = sorted(k for k in given if k not in names)
    if not_fields:
        raise ValueError(f"-p {not_fields[0]} is not an option of {learner} ({cls.__name__} fields: {sorted(names)})")
    check_given_once({k: k for k in given}, learner_params, dict_name="learner_params")
    overrides = {"arch": arch} if arch is not None and "arch" in names else {}
    overrides.update({k: v for k, v in fields.items() if v is not None and k in names})
    overrides.update(learner_params)
    cfg = resolve_config(cls, None, preset, overrides)
    missing = cfg.missing()
    if missing:
        raise ValueError(f"-p learner {learner} needs " + " and ".join(" or ".join(g) for g in missing)
                         + f" (a -p preset that sets it: {sorted(cls.PRESETS)}, or -p learner_params)")
    return lrn, cfg


def check_given_once(given: Mapping[str, str], params: Mapping[str, Any], *, dict_name: str) -> None:
    """Refuse a config field set both by its own notebook parameter and in a dict parameter of fields.

    Args:
        given: config field -> the notebook parameter that set it explicitly (``{"steps": "usl_t_steps"}``).
        params: the dict parameter's fields (``learner_params``, ``usl_t_params``).
        dict_name: that parameter's name, for the message.

    Raises:
        ValueError: ``"<field> is given both as -p <parameter> and in -p <dict_name>; give it once"``.
    """
    twice = sorted(k for k in given if k in params)
    if twice:
        raise ValueError(f"{twice[0]} is given both as -p {given[twice[0]]} and in -p {dict_name}; give it once")


def learner_label(learner: str, learner_params: Mapping[str, Any] | None = None) -> str:
    """A learner and its ``learner_params`` as one short label for tables: ``"fixmatch"``,
    ``"fixmatch[threshold_mode=flexmatch]"`` (keys sorted)."""
    if not learner_params:
        return learner
    return learner + "[" + ",".join(f"{k}={learner_params[k]}" for k in sorted(learner_params)) + "]"


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))
