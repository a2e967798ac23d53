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

Other formats
-------------
Readers and writers for the files the reference code and tools already use (each documented in its
function): USL's CIFAR ``selected_indices_<budget>_<seed>.npy`` (:func:`export_usl_npy`), USL's ImageNet
``Index,ImageID`` CSV (:func:`export_imagenet_csv`), USB's ``lb_labels{N}_{r}_seed{S}_idx.npy``
(:func:`export_usb_npy`), and a plain list of sample ids (:func:`export_id_list`). Those formats carry
indices only: exports write ``indices`` (not ``labeled_before``, not ``labels``), and imports return an
unannotated :class:`Selection`. Every writer is atomic and refuses to replace an existing file unless
``overwrite=True``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import numbers
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._io import (
    _json_default,
    atomic_save_npy,
    atomic_write_json,
    atomic_write_text,
    check_can_write,
    provenance,
    read_json,
)
from ._validate import check_indices, check_seed

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Selection",
    "annotate",
    "check_against_dataset",
    "export_id_list",
    "export_imagenet_csv",
    "export_usb_npy",
    "export_usl_npy",
    "import_id_list",
    "import_imagenet_csv",
    "import_usb_npy",
    "import_usl_npy",
    "load_selection",
    "make_selection",
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
        "params": _jsonable(params if params is not None else {}, name="params"),
        "seed": None if seed is None else check_seed(seed),
        **provenance(),
        "embedding": None if embedding is None else _jsonable(embedding, name="embedding"),
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


def save_selection(sel: Selection, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``sel`` as a ``uslkit-labels`` JSON file, atomically.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is false.
        ValueError: ``sel`` is not a valid selection (e.g. built by hand with inconsistent fields).
    """
    path = check_can_write(path, overwrite=overwrite)
    d = _selection_from_dict(dataclasses.asdict(sel)).to_dict()
    return atomic_write_json(path, d)


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
# USL CIFAR: selected_indices_<budget>_<seed>.npy

_USL_NPY = re.compile(r"^selected_indices_(\d+)_(\d+)\.npy$")


def export_usl_npy(sel: Selection, folder: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write USL's CIFAR file ``<folder>/selected_indices_<budget>_<seed>.npy``.

    Format (TonyLianLong/UnsupervisedSelectiveLabeling): a 1-D int64 ``.npy`` array of train-set
    indices, in selection order (USL: cluster order); budget and seed are only in the file name.

    Returns:
        The path written.

    Raises:
        ValueError: ``sel.seed`` is ``None`` (the name needs a seed).
        FileExistsError: the file exists and ``overwrite`` is false (USL's own writer silently keeps the
            old file; this one refuses).
    """
    if sel.seed is None:
        raise ValueError("the USL file name needs a seed, but this selection has seed=None")
    path = Path(folder) / f"selected_indices_{sel.budget}_{sel.seed}.npy"
    path = check_can_write(path, overwrite=overwrite)
    return atomic_save_npy(path, np.asarray(sel.indices, dtype=np.int64))


def import_usl_npy(
    path: str | os.PathLike,
    *,
    dataset=None,
    n: int | None = None,
    dataset_name: str | None = None,
    split: str | None = None,
    method: str = "imported",
    seed: int | None = None,
    params: dict[str, Any] | None = None,
) -> Selection:
    """Read USL's ``selected_indices_<budget>_<seed>.npy`` (format: :func:`export_usl_npy`).

    When the file name matches that pattern, the budget in it must equal the array length, and its seed
    is used (a ``seed`` argument must then agree); any other name is accepted with ``seed`` as given.
    ``dataset`` or ``n`` is required (see :func:`make_selection`).

    Raises:
        ValueError: not a 1-D integer array, indices out of range or repeated, name/length/seed mismatch.
    """
    return _import_index_npy(path, _USL_NPY, "usl-npy", dataset=dataset, n=n, dataset_name=dataset_name,
                             split=split, method=method, seed=seed, params=params)


# --------------------------------------------------------------------------------------------------
# USL ImageNet: Index,ImageID CSV


def export_imagenet_csv(
    sel: Selection,
    path: str | os.PathLike,
    *,
    dataset=None,
    complement_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write USL's ImageNet CSV (and optionally its complement file).

    Format (USL ``gen_csv_data``, written there with pandas): header ``Index,ImageID``, one row per
    selected sample sorted by ``Index``; ``Index`` is the position in ``ImageFolder(train)`` and
    ``ImageID`` the sample id ``"wnid/filename"`` (for index-based datasets, the id as text). USL names
    the files ``train_<p>p_gen_<name>_index.csv`` and ``train_<100-p>p_gen_<name>_index.csv``.
    USL-T files add a ``Pseudolabel`` column; this writer does not (selection order is lost, too).

    Args:
        sel: the selection.
        path: the CSV to write.
        dataset: needed only for the complement (its ids); checked against ``sel``.
        complement_path: also write every unselected sample (not in ``sel.indices``) in the same format.
        overwrite: replace existing files.

    Returns:
        ``path``.

    Raises:
        ValueError: ``complement_path`` without ``dataset``, or a dataset that does not match.
        FileExistsError: a target exists and ``overwrite`` is false (nothing is written then).
    """
    path = check_can_write(path, overwrite=overwrite)
    if complement_path is not None:
        if dataset is None:
            raise ValueError("complement_path needs the dataset (the unselected samples' ids)")
        complement_path = check_can_write(complement_path, overwrite=overwrite)
        check_against_dataset(sel, dataset)
    order = np.argsort(np.asarray(sel.indices, dtype=np.int64), kind="stable")
    rows = [(sel.indices[j], sel.ids[j]) for j in order]
    if complement_path is not None:
        rest = np.setdiff1d(np.arange(sel.n, dtype=np.int64), np.asarray(sel.indices, dtype=np.int64))
        ids = _dataset_ids(dataset)
        atomic_write_text(complement_path, _csv_text([(int(i), ids[i]) for i in rest]))
    return atomic_write_text(path, _csv_text(rows))


def import_imagenet_csv(
    path: str | os.PathLike,
    *,
    dataset,
    method: str = "imported",
    seed: int | None = None,
    params: dict[str, Any] | None = None,
) -> Selection:
    """Read a USL ImageNet CSV (format: :func:`export_imagenet_csv`), rows kept in file order.

    Each ``ImageID`` is looked up among ``str(dataset.ids)``, and the row's ``Index`` must be that
    sample's position. An optional ``Pseudolabel`` column (USL-T) is kept, in row order, as
    ``params["pseudolabels"]`` (these are cluster ids, not class labels).

    Raises:
        ValueError: missing/unknown columns, a malformed row, an unknown or repeated ImageID, an Index that
            does not match its ImageID, or no rows; the message names the file and row.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a UTF-8 text file: {e}") from e
    reader = csv.DictReader(io.StringIO(text))
    cols = reader.fieldnames or []
    if "Index" not in cols or "ImageID" not in cols:
        raise ValueError(f"{path}: expected header 'Index,ImageID[,Pseudolabel]', got {cols}")
    unknown = [c for c in cols if c not in ("Index", "ImageID", "Pseudolabel")]
    if unknown:
        raise ValueError(f"{path}: unknown columns {unknown} (expected Index, ImageID, optional Pseudolabel)")
    lookup = _id_lookup(dataset)
    indices, pseudo = [], []
    for row_no, row in enumerate(reader, start=2):
        where = f"{path} line {row_no}"
        if None in row or any(row[c] is None for c in cols):
            raise ValueError(f"{where}: expected {len(cols)} fields, got {row}")
        index = _parse_int(row["Index"], where=f"{where} Index")
        j = lookup.get(row["ImageID"])
        if j is None:
            raise ValueError(f"{where}: ImageID {row['ImageID']!r} is not in dataset {_ds_desc(dataset)}")
        if j != index:
            raise ValueError(
                f"{where}: Index {index} but ImageID {row['ImageID']!r} is sample {j} of {_ds_desc(dataset)}"
            )
        indices.append(j)
        if "Pseudolabel" in cols:
            pseudo.append(_parse_int(row["Pseudolabel"], where=f"{where} Pseudolabel"))
    if not indices:
        raise ValueError(f"{path} has no rows")
    params = dict(params or {})
    if pseudo:
        params["pseudolabels"] = pseudo
    return _imported(np.asarray(indices), path, "usl-imagenet-csv", dataset=dataset, method=method,
                     seed=seed, params=params)


# --------------------------------------------------------------------------------------------------
# USB: lb_labels{N}_{ratio}_seed{S}_idx.npy

_USB_NPY = re.compile(r"^lb_labels(\d+)(?:_[^_]+)?_seed(\d+)_idx\.npy$")


def usb_index_filenames(num_labels: int, seed: int, *, lb_imb_ratio: int = 1, ulb_imb_ratio: int = 1
                        ) -> tuple[str, str]:
    """The names USB looks for in ``<data>/<dataset>/labeled_idx/``: ``(lb_name, ulb_name)``.

    USB (microsoft/Semi-supervised-learning, ``sample_labeled_unlabeled_data``) loads
    ``lb_labels{num_labels}_{lb_imb_ratio}_seed{seed}_idx.npy`` and
    ``ulb_labels{num_labels}_{ulb_imb_ratio}_seed{seed}_idx.npy`` instead of sampling when BOTH exist
    (the ratios are ints, default 1).
    """
    return (f"lb_labels{num_labels}_{lb_imb_ratio}_seed{seed}_idx.npy",
            f"ulb_labels{num_labels}_{ulb_imb_ratio}_seed{seed}_idx.npy")


def export_usb_npy(
    sel: Selection,
    path: str | os.PathLike,
    *,
    ulb_path: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> Path:
    """Write USB's labelled-index file (and optionally the unlabelled one).

    Format: a 1-D int64 ``.npy`` of labelled positions in the training set, as USB's
    ``lb_labels{N}_{r}_seed{S}_idx.npy`` (names: :func:`usb_index_filenames`); written in selection order
    (USB's own files are in class order; USB does not depend on the order). USB only uses a dumped split
    when the matching ``ulb_`` file exists too: ``ulb_path`` writes the sorted complement
    ``[0, n) \\ indices`` (USB adds the labelled samples back when ``include_lb_to_ulb``). Another way in
    is USB's ``lb_index=`` argument, which takes ``sel.labeled_indices()`` directly.

    Raises:
        FileExistsError: a target exists and ``overwrite`` is false (nothing is written then).
    """
    path = check_can_write(path, overwrite=overwrite)
    if ulb_path is not None:
        ulb_path = check_can_write(ulb_path, overwrite=overwrite)
        idx = np.asarray(sel.indices, dtype=np.int64)
        atomic_save_npy(ulb_path, np.setdiff1d(np.arange(sel.n, dtype=np.int64), idx))
    return atomic_save_npy(path, np.asarray(sel.indices, dtype=np.int64))


def import_usb_npy(
    path: str | os.PathLike,
    *,
    dataset=None,
    n: int | None = None,
    dataset_name: str | None = None,
    split: str | None = None,
    method: str = "imported",
    seed: int | None = None,
    params: dict[str, Any] | None = None,
) -> Selection:
    """Read a USB labelled-index file (format: :func:`export_usb_npy`), order kept.

    When the name matches ``lb_labels{N}[_{r}]_seed{S}_idx.npy``, ``N`` must equal the array length and
    ``S`` is used as the seed (a ``seed`` argument must agree). ``dataset`` or ``n`` is required.

    Raises:
        ValueError: not a 1-D integer array, indices out of range or repeated, name/length/seed mismatch.
    """
    return _import_index_npy(path, _USB_NPY, "usb-npy", dataset=dataset, n=n, dataset_name=dataset_name,
                             split=split, method=method, seed=seed, params=params)


def _import_index_npy(path, name_pattern, fmt: str, *, seed, **kwargs) -> Selection:
    """Shared by the USL and USB importers: a 1-D index ``.npy`` whose name may carry ``(budget, seed)``
    as the pattern's groups 1 and 2 (checked against the array length and any ``seed`` given)."""
    path = Path(path)
    arr = _load_index_npy(path)
    m = name_pattern.match(path.name)
    if m:
        _check_name_budget(path, int(m.group(1)), arr.size)
        seed = _seed_from_name(path, int(m.group(2)), seed)
    return _imported(arr, path, fmt, seed=seed, **kwargs)


# --------------------------------------------------------------------------------------------------
# plain list of ids


def export_id_list(sel: Selection, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write the selected sample ids as text, one per line, in selection order (UTF-8, ``\\n`` endings).

    Raises:
        ValueError: an id contains a line break.
        FileExistsError: ``path`` exists and ``overwrite`` is false.
    """
    path = check_can_write(path, overwrite=overwrite)
    lines = [str(x) for x in sel.ids]
    bad = [s for s in lines if "\n" in s or "\r" in s]
    if bad:
        raise ValueError(f"id {bad[0]!r} contains a line break and cannot be written one per line")
    return atomic_write_text(path, "".join(s + "\n" for s in lines))


def import_id_list(
    path: str | os.PathLike,
    *,
    dataset,
    method: str = "imported",
    seed: int | None = None,
    params: dict[str, Any] | None = None,
) -> Selection:
    """Read a list of sample ids (format: :func:`export_id_list`), matched against ``str(dataset.ids)``.

    Empty lines are skipped; surrounding whitespace is part of the id except the line ending.

    Raises:
        ValueError: an id not in the dataset, a repeated id, or no ids; the message names file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a UTF-8 text file: {e}") from e
    lookup = _id_lookup(dataset)
    indices, seen = [], {}
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        j = lookup.get(line)
        if j is None:
            raise ValueError(f"{path} line {line_no}: id {line!r} is not in dataset {_ds_desc(dataset)}")
        if j in seen:
            raise ValueError(f"{path} line {line_no}: id {line!r} repeats line {seen[j]}")
        seen[j] = line_no
        indices.append(j)
    if not indices:
        raise ValueError(f"{path} lists no ids")
    return _imported(np.asarray(indices), path, "id-list", dataset=dataset, method=method, seed=seed,
                     params=params)


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


def _jsonable(obj: Any, *, name: str) -> Any:
    """``obj`` as plain JSON values (numpy scalars/arrays, tuples, paths converted)."""
    try:
        return json.loads(json.dumps(obj, default=_json_default, allow_nan=True))
    except TypeError as e:
        raise ValueError(f"{name} is not JSON serialisable: {e}") from e


def _dataset_ids(dataset) -> np.ndarray:
    ids = np.asarray(dataset.ids)
    if ids.ndim != 1 or ids.shape[0] != len(dataset):
        raise ValueError(f"dataset.ids must have shape ({len(dataset)},), got {ids.shape}")
    return ids


def _id_lookup(dataset) -> dict[str, int]:
    """``str(id) -> index`` over the whole dataset (ids must be unique)."""
    lookup = {str(x): j for j, x in enumerate(_dataset_ids(dataset).tolist())}
    if len(lookup) != len(dataset):
        raise ValueError(f"dataset {_ds_desc(dataset)} has repeated ids; cannot map ids to indices")
    return lookup


def _ds_desc(dataset) -> str:
    return f"{getattr(dataset, 'name', '?')!r}/{getattr(dataset, 'split', '?')!r} ({len(dataset)} samples)"


def _parse_int(s: str, *, where: str) -> int:
    try:
        return int(s)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected an integer, got {s!r}") from None


def _csv_text(rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["Index", "ImageID"])
    for index, iid in rows:
        w.writerow([int(index), str(iid)])
    return buf.getvalue()


def _load_index_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy index file (corrupt or truncated?): {e}") from e
    if not isinstance(arr, np.ndarray) or arr.ndim != 1:
        raise ValueError(f"{path}: expected a 1-D array of indices, got shape {getattr(arr, 'shape', None)}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{path}: expected integer indices, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{path} holds no indices")
    return arr.astype(np.int64)


def _check_name_budget(path: Path, budget: int, size: int) -> None:
    if budget != size:
        raise ValueError(f"{path}: the name says {budget} samples but the file holds {size}")


def _seed_from_name(path: Path, name_seed: int, seed: int | None) -> int:
    if seed is not None and seed != name_seed:
        raise ValueError(f"{path}: the name says seed {name_seed} but seed={seed} was given")
    return name_seed


def _imported(indices, path: Path, fmt: str, *, dataset=None, n=None, dataset_name=None, split=None,
              method: str, seed, params) -> Selection:
    params = dict(params or {})
    params.setdefault("imported_from", {"format": fmt, "path": str(path)})
    try:
        return make_selection(indices, dataset=dataset, n=n, dataset_name=dataset_name, split=split,
                              method=method, params=params, seed=seed)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e
