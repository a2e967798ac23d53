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
   the following cells read the plain names; every other value (and every papermill run without the
   variable) is left alone. Names listed in ``USLKIT_NB_KEEP`` (comma-separated; the sweep script sets it to
   the parameters it passes) keep their given values at the small size too. The notebook file is never
   edited;
3. returns a :class:`NotebookRun` that resolves paths against the project root and writes the results.

:meth:`NotebookRun.save_results` writes ``{"notebook", "size", "params", "requested", "metrics", versions, ...}`` as
JSON, atomically, to the ``results_json`` parameter (the sweep script passes the executed notebook's path
with ``.json``) or, when that is empty, to ``papermill_runs/<notebook>/<notebook>-<hash of params>.json``.
An existing file written with other parameters is an error unless the ``overwrite`` parameter is true;
the same parameters replace it (a rerun). Aggregation reads these files, never notebook outputs.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Mapping, MutableMapping

from . import _io

__all__ = ["SIZE_ENV", "KEEP_ENV", "NotebookRun", "start", "project_root", "collect_parameters", "params_hash",
           "embedded_splits"]

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
    small = {k: v for k, v in small.items() if k not in keep}
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
            print(f"  {k:<{width}} = {params[k]!r}{mark}")
    return run


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


def _unset(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))
