"""The selection / labels file: the only contract between selection and training.

A selection method ends by writing one JSON file; annotation (a human, or :func:`annotate`, the simulated
oracle that reads the ground truth) fills in its labels; every training loop starts by reading it with
:func:`load_selection`, which checks it against the dataset it is about to train on. Nothing else passes
from the selection side to the training side.

File format ``uslkit-labels``, version 1
----------------------------------------
One UTF-8 JSON object, written atomically, with exactly these keys (unknown keys are an error, so a typo
such as ``"lables"`` cannot be silently ignored):

=================  ====================  ================================================================
key                JSON type             meaning
=================  ====================  ================================================================
``format``         string                always ``"uslkit-labels"``
``format_version`` integer               ``1``; a file with a larger version is refused (newer uslkit)
``dataset``        string or null        dataset name (``ImageDataset.name``), null when unknown
                                         (e.g. imported from a bare index file)
``split``          string                split the indices refer to, normally ``"train"``
``n``              integer >= 1          pool size: ``len(dataset)`` of that split
``budget``         integer >= 1          number of selected samples, ``== len(indices)``, ``<= n``
``method``         string                selection method name (``"usl"``, ``"random"``, ``"imported"``...)
``params``         object                the method's parameters, JSON values only; imports record
                                         ``params["imported_from"] = {"format": ..., "path": ...}``
``seed``           integer >= 0 or null  seed of the selection run; null when unknown (imported)
``uslkit_version`` string                version of uslkit that wrote the selection
``git_commit``     string or null        commit of the uslkit checkout, null outside git
``created``        string                creation time, UTC, ISO 8601 (``2024-05-01T12:00:00+00:00``)
``embedding``      object or null        description of the embedding used (e.g. the contents of its
                                         JSON sidecar: model, layer, dimension, file); null if none
``indices``        array of integers     selected positions in the split, ``0 <= i < n``, distinct, in
                                         selection order (the order the method picked them)
``ids``            array of ints or      stable sample ids, same order as ``indices``:
                   array of strings      ``ids[j] == dataset.ids[indices[j]]`` (the official index for
                                         torchvision-style datasets, ``"wnid/filename"`` for folders);
                                         all ints or all strings, never mixed
``labels``         array of integers     empty until annotated; then one class index per entry of
                                         ``indices`` (same order), ``0 <= label < len(class_names)``
``class_names``    array of strings      names of the classes ``labels`` refer to (empty until annotated)
``labeled_before`` array of integers     indices already labelled before this round (incremental
                                         methods); distinct, in ``[0, n)``, disjoint from ``indices``;
                                         their labels are in the earlier round's file, not here
=================  ====================  ================================================================

Example::

    {"format": "uslkit-labels", "format_version": 1, "dataset": "cifar10", "split": "train",
     "n": 50000, "budget": 2, "method": "usl", "params": {"k": 400, "alpha": 0.5}, "seed": 0,
     "uslkit_version": "0.1.0", "git_commit": null, "created": "2024-05-01T12:00:00+00:00",
     "embedding": null, "indices": [1207, 33], "ids": [1207, 33], "labels": [3, 8],
     "class_names": ["airplane", ..., "truck"], "labeled_before": []}

Labelling by a person
---------------------
:mod:`uslkit.labels.roundtrip` exports the picks as image files with a manifest to fill and a Label Studio
project, imports the filled manifest or Label Studio's export back into this format, and merges rounds;
:mod:`uslkit.labels.widget` labels them in Jupyter.

Other formats
-------------
Readers and writers for the files the reference code and tools already use (USL's CIFAR ``.npy`` and
ImageNet CSV, USB's index ``.npy``, a plain id list) live in :mod:`uslkit.labels.formats` and are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_json, check_can_write, provenance, read_json, to_jsonable
from .._validate import check_indices, check_seed

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Selection",
    "annotate",
    "check_against_dataset",
    "export_for_labelling",
    "export_id_list",
    "export_imagenet_csv",
    "export_usb_npy",
    "export_usl_npy",
    "import_id_list",
    "import_imagenet_csv",
    "import_index_npy",
    "import_labels",
    "import_usb_npy",
    "import_usl_npy",
    "load_selection",
    "make_selection",
    "merge_selections",
    "save_selection",
    "usb_index_filenames",
]

FORMAT = "uslkit-labels"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Selection:
    """One selection round, field for field the JSON file described in the module docstring.

    Build it with :func:`make_selection` or :func:`load_selection` (both validate); functions that change
    it (:func:`annotate`) return a new one.
    """

    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    dataset: str | None
    split: str
    n: int
    budget: int
    method: str
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int | None
    uslkit_version: str
    git_commit: str | None
    created: str
    embedding: dict[str, Any] | None = None
    indices: list[int]
    ids: list[int] | list[str]
    labels: list[int] = dataclasses.field(default_factory=list)
    class_names: list[str] = dataclasses.field(default_factory=list)
    labeled_before: list[int] = dataclasses.field(default_factory=list)

    @property
    def is_annotated(self) -> bool:
        """Whether ``labels`` has been filled in."""
        return len(self.labels) > 0

    def labeled_indices(self, *, include_before: bool = False) -> np.ndarray:
        """Selected indices, int64 ``(budget,)`` in selection order.

        Args:
            include_before: prepend ``labeled_before``, giving the whole labelled set after this round,
                shape ``(len(labeled_before) + budget,)``.
        """
        idx = list(self.labeled_before) + list(self.indices) if include_before else list(self.indices)
        return np.asarray(idx, dtype=np.int64)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(indices, labels)``, both int64 ``(budget,)``, for the training side.

        Raises:
            ValueError: the selection is not annotated yet.
        """
        if not self.is_annotated:
            raise ValueError(
                f"selection ({self.method}, budget {self.budget}) has no labels yet; "
                "annotate it first (annotate(selection, dataset) simulates the oracle)"
            )
        return np.asarray(self.indices, dtype=np.int64), np.asarray(self.labels, dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the file (a deep copy, keys in file order)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Selection:
        """Validate a decoded JSON object and build the :class:`Selection` (``ValueError`` if invalid)."""
        return _selection_from_dict(d)


# --------------------------------------------------------------------------------------------------
# creating, saving, loading


def make_selection(
    indices,
    *,
    dataset=None,
    ids=None,
    n: int | None = None,
    dataset_name: str | None = None,
    split: str | None = None,
    method: str,
    params: dict[str, Any] | None = None,
    seed: int | None,
    embedding: dict[str, Any] | None = None,
    labeled_before=None,
) -> Selection:
    """Wrap the output of a selection method into a validated, unannotated :class:`Selection`.

    Args:
        indices: selected positions in the split, shape ``(budget,)``, distinct, in selection order.
        dataset: an ``ImageDataset`` (or anything with ``name``, ``split``, ``ids``, ``__len__``); when
            given, ``n``, the name, the split and the ids are taken from it (explicit values must agree).
        ids: sample ids of the selected samples, same order; default ``dataset.ids[indices]``, or the
            indices themselves when there is no dataset (the ids of index-based datasets).
        n: pool size; required without ``dataset``.
        dataset_name: dataset name; default ``dataset.name`` (``None`` = unknown).
        split: split name; default ``dataset.split``, else ``"train"``.
        method: selection method name.
        params: the method's parameters (JSON values; numpy scalars/arrays and tuples are converted).
        seed: seed of the run, non-negative int, or ``None`` for a deterministic/unknown run.
        embedding: description of the embedding used (e.g. its sidecar), or ``None``.
        labeled_before: indices labelled in earlier rounds (incremental methods), disjoint from
            ``indices``.

    Returns:
        The selection, with provenance (uslkit version, git commit, UTC time) filled in.

    Raises:
        ValueError: duplicate or out-of-range indices, an empty selection, ids disagreeing with the
            dataset, or conflicting ``n`` / name / split.
    """
    if dataset is not None:
        n_ds = len(dataset)
        if n is not None and int(n) != n_ds:
            raise ValueError(f"n={n} disagrees with len(dataset)={n_ds}")
        n = n_ds
        ds_name, ds_split = getattr(dataset, "name", None), getattr(dataset, "split", None)
        if dataset_name is not None and ds_name is not None and dataset_name != ds_name:
            raise ValueError(f"dataset_name={dataset_name!r} disagrees with dataset.name={ds_name!r}")
        if split is not None and ds_split is not None and split != ds_split:
            raise ValueError(f"split={split!r} disagrees with dataset.split={ds_split!r}")
        dataset_name = dataset_name if dataset_name is not None else ds_name
        split = split if split is not None else ds_split
    if n is None:
        raise ValueError("n (the pool size) is required when no dataset is given")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    idx = check_indices(indices, n, name="indices")
    if idx.size == 0:
        raise ValueError("indices is empty: a selection needs at least one sample")
    before = check_indices(labeled_before, n, name="labeled_before")
    if ids is None:
        ids = _dataset_ids(dataset)[idx] if dataset is not None else idx
    ids = [_py_id(x, where="ids") for x in (ids.tolist() if isinstance(ids, np.ndarray) else ids)]
    d = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dataset": dataset_name,
        "split": split if split is not None else "train",
        "n": n,
        "budget": int(idx.size),
        "method": method,
        "params": to_jsonable(params if params is not None else {}, name="params"),
        "seed": None if seed is None else check_seed(seed),
        **provenance(),
        "embedding": None if embedding is None else to_jsonable(embedding, name="embedding"),
        "indices": idx.tolist(),
        "ids": ids,
        "labels": [],
        "class_names": [],
        "labeled_before": before.tolist(),
    }
    sel = _selection_from_dict(d)
    if dataset is not None:
        check_against_dataset(sel, dataset)
    return sel


def save_selection(sel: Selection, path: str | os.PathLike, *, overwrite: bool = False,
                   exist_ok: bool = False) -> Path:
    """Write ``sel`` as a ``uslkit-labels`` JSON file, atomically.

    Args:
        overwrite: replace whatever ``path`` holds.
        exist_ok: an existing file holding the same selection (every field but the provenance ``created``,
            ``uslkit_version`` and ``git_commit``) is kept as it is and its path returned; one holding another
            selection is still refused. A rerun of a driver can then save its picks again.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false (with ``exist_ok``: it holds another
            selection or is not a labels file; the message names the differing fields).
        ValueError: ``sel`` is not a valid selection (e.g. built by hand with inconsistent fields).
    """
    d = _selection_from_dict(dataclasses.asdict(sel)).to_dict()
    if exist_ok and not overwrite and Path(path).exists():
        try:
            old = load_selection(path).to_dict()
        except (ValueError, OSError) as e:
            raise FileExistsError(f"{path} exists and is not a readable labels file ({e}); pass overwrite=True "
                                  "(--overwrite) to replace it") from e
        diff = [k for k in d if k not in _PROVENANCE and old.get(k) != d[k]]
        if diff:
            raise FileExistsError(f"{path} holds another selection (differing: {diff}); pass overwrite=True "
                                  "(--overwrite) to replace it or choose another path")
        return Path(path)
    path = check_can_write(path, overwrite=overwrite)
    return atomic_write_json(path, d)


_PROVENANCE = ("created", "uslkit_version", "git_commit")


def load_selection(path: str | os.PathLike, *, dataset=None) -> Selection:
    """Read and validate a ``uslkit-labels`` file; with ``dataset``, also check it belongs to it.

    Args:
        path: the JSON file.
        dataset: the dataset about to be trained on; checked with :func:`check_against_dataset`
            (pool size, name, split, every id, class range).

    Raises:
        ValueError: corrupt/truncated JSON, wrong format or version, wrong types, inconsistent lengths,
            duplicate indices, labels out of range, or a mismatch with ``dataset``; the message names
            the file.
        FileNotFoundError: no such file.
    """
    path = Path(path)
    d = read_json(path)
    try:
        sel = _selection_from_dict(d)
        if dataset is not None:
            check_against_dataset(sel, dataset)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
    return sel


def check_against_dataset(sel: Selection, dataset) -> None:
    """Check that ``sel`` refers to ``dataset``: pool size, name, split, ids, class names and range.

    Raises:
        ValueError: ``"wrong n ..."``, ``"dataset name ..."``, ``"split ..."``, ``"mismatched ids: ..."``
            (with the first mismatch and how many there are), ``"class_names ..."`` or
            ``"labels out of range ..."``.
    """
    n = len(dataset)
    if sel.n != n:
        raise ValueError(f"wrong n: the selection is for a pool of {sel.n} samples, the dataset has {n}")
    name, split = getattr(dataset, "name", None), getattr(dataset, "split", None)
    if sel.dataset is not None and name is not None and sel.dataset != name:
        raise ValueError(f"dataset name mismatch: selection is for {sel.dataset!r}, dataset is {name!r}")
    if split is not None and sel.split != split:
        raise ValueError(f"split mismatch: selection is for split {sel.split!r}, dataset split is {split!r}")
    expected = _dataset_ids(dataset)[np.asarray(sel.indices, dtype=np.int64)]
    bad = [j for j, (a, b) in enumerate(zip(sel.ids, expected)) if a != _py_id(b, where="dataset.ids")]
    if bad:
        j = bad[0]
        raise ValueError(
            f"mismatched ids: {len(bad)} of {sel.budget} selected ids differ from the dataset's; first at "
            f"position {j} (index {sel.indices[j]}): selection has {sel.ids[j]!r}, dataset has "
            f"{_py_id(expected[j], where='dataset.ids')!r}"
        )
    ds_classes = list(getattr(dataset, "class_names", None) or [])
    if sel.class_names and ds_classes and list(sel.class_names) != ds_classes:
        raise ValueError(
            f"class_names differ: selection has {sel.class_names[:5]}..., dataset has {ds_classes[:5]}..."
        )
    num_classes = getattr(dataset, "num_classes", None) or len(ds_classes)
    if sel.labels and num_classes:
        lab = np.asarray(sel.labels)
        if (lab >= num_classes).any():
            j = int(np.flatnonzero(lab >= num_classes)[0])
            raise ValueError(
                f"labels out of range: label {int(lab[j])} at position {j}, dataset has {num_classes} classes"
            )


def annotate(selection: Selection, dataset) -> Selection:
    """The simulated oracle: a new :class:`Selection` with ``labels`` read from the ground truth.

    ``labels[j] = dataset.labels[indices[j]]`` and ``class_names = dataset.class_names``.

    Raises:
        ValueError: the selection does not match ``dataset`` (see :func:`check_against_dataset`), or the
            dataset has no label (``-1``) at a selected index.
    """
    check_against_dataset(dataclasses.replace(selection, labels=[], class_names=[]), dataset)
    idx = np.asarray(selection.indices, dtype=np.int64)
    lab = np.asarray(dataset.labels)[idx].astype(np.int64)
    if (lab < 0).any():
        j = int(np.flatnonzero(lab < 0)[0])
        raise ValueError(
            f"dataset {getattr(dataset, 'name', '?')!r} split {getattr(dataset, 'split', '?')!r} is "
            f"unlabelled (-1) at selected index {int(idx[j])} (id {selection.ids[j]!r}); "
            f"{int((lab < 0).sum())} selected samples have no ground truth"
        )
    sel = dataclasses.replace(selection, labels=lab.tolist(), class_names=list(dataset.class_names))
    return _selection_from_dict(dataclasses.asdict(sel))


# --------------------------------------------------------------------------------------------------
# private helpers

_KEYS = [f.name for f in dataclasses.fields(Selection)]


def _selection_from_dict(d: Any) -> Selection:
    """Validate a decoded file (see the module docstring) and build the Selection."""
    if not isinstance(d, dict):
        raise ValueError(f"expected a JSON object, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ValueError(f"not a {FORMAT} file: format is {d.get('format')!r}")
    version = d.get("format_version")
    if not _is_int(version):
        raise ValueError(f"format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"format_version {version} was written by a newer uslkit; this one reads {FORMAT_VERSION}"
        )
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported format_version {version} (expected {FORMAT_VERSION})")
    missing = [k for k in _KEYS if k not in d]
    if missing:
        raise ValueError(f"missing keys: {missing}")
    unknown = [k for k in d if k not in _KEYS]
    if unknown:
        raise ValueError(f"unknown keys: {unknown}")
    _check_type(d, "dataset", (str, type(None)))
    for key in ("split", "method", "uslkit_version", "created"):
        _check_type(d, key, str)
    if not d["method"]:
        raise ValueError("method must be a non-empty string")
    _check_type(d, "git_commit", (str, type(None)))
    _check_type(d, "params", dict)
    _check_type(d, "embedding", (dict, type(None)))
    n, budget, seed = d["n"], d["budget"], d["seed"]
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not _is_int(budget) or not 1 <= budget <= n:
        raise ValueError(f"budget must be an integer in [1, n={n}], got {budget!r}")
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or null, got {seed!r}")
    indices = _int_list(d, "indices")
    if len(indices) != budget:
        raise ValueError(f"len(indices)={len(indices)} but budget={budget}")
    check_indices(np.asarray(indices, dtype=np.int64), n, name="indices")
    before = _int_list(d, "labeled_before")
    check_indices(np.asarray(before, dtype=np.int64), n, name="labeled_before")
    both = np.intersect1d(indices, before)
    if both.size:
        raise ValueError(f"indices and labeled_before overlap: e.g. {int(both[0])} ({both.size} in common)")
    ids = d["ids"]
    if not isinstance(ids, list):
        raise ValueError(f"ids must be a list, got {type(ids).__name__}")
    if len(ids) != budget:
        raise ValueError(f"len(ids)={len(ids)} but budget={budget}")
    kinds = {("int" if _is_int(x) else "str" if isinstance(x, str) else "bad") for x in ids}
    if "bad" in kinds or len(kinds) > 1:
        first = next((x for x in ids if not (_is_int(x) or isinstance(x, str))), None)
        raise ValueError(f"ids must be all integers or all strings, got {sorted(kinds)}"
                         + (f" (e.g. {first!r})" if first is not None else ""))
    labels = _int_list(d, "labels")
    class_names = d["class_names"]
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise ValueError("class_names must be a list of strings")
    if labels:
        if len(labels) != budget:
            raise ValueError(
                f"len(labels)={len(labels)} but budget={budget} (labels must be empty or one per index)"
            )
        lab = np.asarray(labels)
        if (lab < 0).any():
            raise ValueError(f"labels out of range: negative label {int(lab[lab < 0][0])}")
        if class_names and (lab >= len(class_names)).any():
            raise ValueError(
                f"labels out of range: label {int(lab[lab >= len(class_names)][0])} but only "
                f"{len(class_names)} class_names"
            )
    return Selection(**{k: d[k] for k in _KEYS})


def _check_type(d: dict, key: str, types) -> None:
    if not isinstance(d[key], types):
        raise ValueError(f"{key} has the wrong type: {type(d[key]).__name__} ({d[key]!r})")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _int_list(d: dict, key: str) -> list[int]:
    v = d[key]
    if not isinstance(v, list):
        raise ValueError(f"{key} must be a list of integers, got {type(v).__name__}")
    bad = [x for x in v if not _is_int(x)]
    if bad:
        raise ValueError(f"{key} must be a list of integers, got {bad[0]!r}")
    return v


def _py_id(x: Any, *, where: str) -> int | str:
    """A sample id as a plain Python int or str (numpy scalars converted)."""
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(f"{where}: sample ids must be integers or strings, got {x!r}")
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (str, np.str_)):
        return str(x)
    raise ValueError(f"{where}: sample ids must be integers or strings, got {x!r} ({type(x).__name__})")


def _dataset_ids(dataset) -> np.ndarray:
    ids = np.asarray(dataset.ids)
    if ids.ndim != 1 or ids.shape[0] != len(dataset):
        raise ValueError(f"dataset.ids must have shape ({len(dataset)},), got {ids.shape}")
    return ids


# the outside formats build on the contract above
from .formats import (  # noqa: E402
    export_id_list,
    export_imagenet_csv,
    export_usb_npy,
    export_usl_npy,
    import_id_list,
    import_imagenet_csv,
    import_index_npy,
    import_usb_npy,
    import_usl_npy,
    usb_index_filenames,
)
from .roundtrip import export_for_labelling, import_labels, merge_selections  # noqa: E402
