"""Readers and writers for the selection files the reference code and tools already use.

USL's CIFAR ``selected_indices_<budget>_<seed>.npy`` (:func:`export_usl_npy`), USL's ImageNet
``Index,ImageID`` CSV (:func:`export_imagenet_csv`), USB's ``lb_labels{N}_{r}_seed{S}_idx.npy``
(:func:`export_usb_npy`), and a plain list of sample ids (:func:`export_id_list`), each documented in
its function. Those formats carry indices only: exports write ``indices`` (not ``labeled_before``, not
``labels``), and imports return an unannotated :class:`~uslkit.labels.Selection`. Every writer is atomic
and refuses to replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_save_npy, atomic_write_text, check_can_write
from . import Selection, _dataset_ids, check_against_dataset, make_selection


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


def import_usl_npy(path: str | os.PathLike, **kwargs) -> Selection:
    """Read USL's ``selected_indices_<budget>_<seed>.npy`` (format: :func:`export_usl_npy`).

    When the file name matches that pattern, the budget in it must equal the array length, and its seed
    is used (a ``seed`` argument must then agree); any other name is accepted with ``seed`` as given.
    Keywords (``dataset`` or ``n`` required): as :func:`import_index_npy`.
    """
    return import_index_npy(path, name_pattern=_USL_NPY, fmt="usl-npy", **kwargs)


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


def import_imagenet_csv(path: str | os.PathLike, *, dataset, method: str = "imported", seed: int | None = None,
                        params: dict[str, Any] | None = None) -> Selection:
    """Read a USL ImageNet CSV (format: :func:`export_imagenet_csv`), rows kept in file order.

    Each ``ImageID`` is looked up among ``str(dataset.ids)``, and the row's ``Index`` must be that
    sample's position. An optional ``Pseudolabel`` column (USL-T) is kept, in row order, as
    ``params["pseudolabels"]`` (these are cluster ids, not class labels).

    Raises:
        ValueError: missing/unknown columns, a malformed row, an unknown or repeated ImageID, an Index that
            does not match its ImageID, or no rows; the message names the file and row.
    """
    path, text = _read_text(path)
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


def import_usb_npy(path: str | os.PathLike, **kwargs) -> Selection:
    """Read a USB labelled-index file (format: :func:`export_usb_npy`), order kept.

    When the name matches ``lb_labels{N}[_{r}]_seed{S}_idx.npy``, ``N`` must equal the array length and
    ``S`` is used as the seed (a ``seed`` argument must agree). Keywords (``dataset`` or ``n`` required):
    as :func:`import_index_npy`.
    """
    return import_index_npy(path, name_pattern=_USB_NPY, fmt="usb-npy", **kwargs)


def import_index_npy(
    path: str | os.PathLike,
    *,
    dataset=None,
    n: int | None = None,
    dataset_name: str | None = None,
    split: str | None = None,
    method: str = "imported",
    seed: int | None = None,
    params: dict[str, Any] | None = None,
    name_pattern: re.Pattern | None = None,
    fmt: str = "index-npy",
) -> Selection:
    """Read a 1-D integer ``.npy`` of indices into the pool, order kept (the USL and USB layouts).

    Args:
        path: the ``.npy`` file.
        dataset, n, dataset_name, split, method, params: as :func:`~uslkit.labels.make_selection`;
            ``dataset`` or ``n`` is required.
        seed: the selection's seed; when the name carries one, it is used and ``seed`` must agree.
        name_pattern: a file-name pattern whose groups 1 and 2 are ``(budget, seed)``; a matching name's
            budget must equal the array length. Names that do not match are accepted as they are.
        fmt: the format recorded in ``params["imported_from"]``.

    Raises:
        ValueError: not a 1-D integer array, indices out of range or repeated, name/length/seed mismatch.
    """
    path = Path(path)
    arr = _load_index_npy(path)
    m = name_pattern.match(path.name) if name_pattern is not None else None
    if m:
        _check_name_budget(path, int(m.group(1)), arr.size)
        seed = _seed_from_name(path, int(m.group(2)), seed)
    return _imported(arr, path, fmt, dataset=dataset, n=n, dataset_name=dataset_name, split=split,
                     method=method, seed=seed, params=params)


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


def import_id_list(path: str | os.PathLike, *, dataset, method: str = "imported", seed: int | None = None,
                   params: dict[str, Any] | None = None) -> Selection:
    """Read a list of sample ids (format: :func:`export_id_list`), matched against ``str(dataset.ids)``.

    Empty lines are skipped; surrounding whitespace is part of the id except the line ending.

    Raises:
        ValueError: an id not in the dataset, a repeated id, or no ids; the message names file and line.
    """
    path, text = _read_text(path)
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


def _id_lookup(dataset) -> dict[str, int]:
    """``str(id) -> index`` over the whole dataset (ids must be unique)."""
    lookup = {str(x): j for j, x in enumerate(_dataset_ids(dataset).tolist())}
    if len(lookup) != len(dataset):
        raise ValueError(f"dataset {_ds_desc(dataset)} has repeated ids; cannot map ids to indices")
    return lookup


def _ds_desc(dataset) -> str:
    return f"{getattr(dataset, 'name', '?')!r}/{getattr(dataset, 'split', '?')!r} ({len(dataset)} samples)"


def _read_text(path: str | os.PathLike) -> tuple[Path, str]:
    path = Path(path)
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not a UTF-8 text file: {e}") from e


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
