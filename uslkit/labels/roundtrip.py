"""The labelling round trip: hand a selection to a person, bring the labels back, merge rounds.

:func:`export_for_labelling` writes the picked images and the files a person (or an annotation tool) fills in;
:func:`import_labels` reads them back into an annotated labels file; :func:`merge_selections` joins the rounds
of an active-learning run (files made with ``labeled_before``) into one file every learner reads. The Jupyter
labelling widget (:mod:`uslkit.labels.widget`) fills the same manifest.

Export folder
-------------
===================== ==================================================================================
``images/<id>.png``   one PNG per pick, unchanged pixels; ``<id>`` is the sample id with characters other
                      than letters, digits, ``.``, ``-``, ``_`` replaced by ``_`` (``n01440764/x.JPEG``
                      -> ``n01440764_x.JPEG.png``)
``manifest.csv``      ``position,index,id,file,label``: one row per pick in selection order; ``label`` is
                      empty, to be filled with a class name or a class index (0-based)
``contact_sheet.png`` the picks as a grid of thumbnails with their ids (pages ``contact_sheet_2.png``...
                      beyond 100 picks)
``label_studio.json`` Label Studio tasks: ``data.image`` a local-file URL (``/data/local-files/?d=...``,
                      relative to ``document_root``), ``data.uslkit_id`` / ``data.uslkit_index``; Label
                      Studio serves the images once a Local Files storage points at ``images/`` (steps in
                      ``README.txt``; checked with Label Studio 1.23.2, whose JSON and JSON-MIN exports
                      are in ``tests/data/label_studio``)
``label_studio.xml``  the matching labelling config: one single-choice ``Choices`` named ``label``
``export.json``       what was exported (dataset, split, n, method, seed, indices, ids, class names), so a
                      repeated export is recognised and a different one refused
``README.txt``        how to fill the manifest and where the class names are
===================== ==================================================================================
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._io import atomic_write_bytes, atomic_write_json, atomic_write_text, provenance, read_json
from . import Selection, _selection_from_dict, load_selection

__all__ = ["EXPORT_FORMAT", "MANIFEST_COLUMNS", "export_for_labelling", "image_file_names", "import_labels",
           "merge_selections", "read_manifest", "write_manifest"]

EXPORT_FORMAT = "uslkit-labelling-export"
MANIFEST_COLUMNS = ("position", "index", "id", "file", "label")
SHEET_PAGE = 100  # thumbnails per contact-sheet page
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def image_file_names(ids) -> list[str]:
    """``images/<id>.png`` per sample id, made safe for every file system and unique (a clash after replacing
    unsafe characters gets the pick's position appended)."""
    names = [_UNSAFE.sub("_", str(i)) for i in ids]
    counts = Counter(names)
    return [f"images/{n}.png" if counts[n] == 1 else f"images/{n}_{j}.png" for j, n in enumerate(names)]


def _export_record(sel: Selection, class_names: list[str]) -> dict[str, Any]:
    return {"format": EXPORT_FORMAT, "format_version": 1, "dataset": sel.dataset, "split": sel.split, "n": sel.n,
            "method": sel.method, "seed": sel.seed, "indices": list(sel.indices), "ids": list(sel.ids),
            "class_names": list(class_names)}


def export_for_labelling(sel: Selection, dataset, to, *, class_names=None, document_root=None,
                         overwrite: bool = False, thumb: int = 96) -> Path:
    """Write the picks of ``sel`` as files a person labels (the folder layout in the module docstring).

    Args:
        sel: the selection (annotated or not); checked against ``dataset``.
        dataset: the ``ImageDataset`` it was made on (the images come from :meth:`ImageDataset.get_image`).
        to: the export folder.
        class_names: the classes a label may name; default ``sel.class_names`` or ``dataset.class_names``.
        document_root: folder Label Studio serves local files from (``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``);
            the task URLs are relative to it. Default: ``to`` itself.
        overwrite: replace an export of another selection in ``to``.
        thumb: contact-sheet thumbnail size in pixels.

    Returns:
        ``to`` as a ``Path``. Exporting the same selection again writes nothing and keeps a manifest that is
        being filled in.

    Raises:
        FileExistsError: ``to`` holds an export of another selection (or other files) and not ``overwrite``.
        ValueError: ``sel`` does not belong to ``dataset``, or there are no class names.
    """
    from . import check_against_dataset

    check_against_dataset(sel, dataset)
    names = list(class_names if class_names is not None else (sel.class_names or dataset.class_names))
    if not names or len(set(names)) != len(names):
        raise ValueError(f"class_names must be a non-empty list of distinct names, got {names!r}")
    to = Path(to)
    record = _export_record(sel, names)
    meta = to / "export.json"
    if meta.exists():
        old = read_json(meta)
        same = {k: v for k, v in old.items() if k in record} == record
        if same and (to / "manifest.csv").exists():
            return to
        if not same and not overwrite:
            diff = [k for k in record if old.get(k) != record[k]]
            raise FileExistsError(f"{to} holds an export of another selection (differing: {diff}); pass "
                                  "overwrite=True (--overwrite) or choose another folder")
    elif to.exists() and any(to.iterdir()) and not overwrite:
        raise FileExistsError(f"{to} exists and is not an empty export folder; pass overwrite=True (--overwrite) "
                              "or choose another folder")
    files = image_file_names(sel.ids)
    if (to / "images").is_dir():  # overwrite: drop the images of the export replaced
        for old_png in set((to / "images").glob("*.png")) - {to / f for f in files}:
            old_png.unlink()
    images = []
    for i, f in zip(sel.indices, files):
        img = dataset.get_image(int(i))
        images.append(img)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        atomic_write_bytes(to / f, buf.getvalue())
    rows = [{"position": j, "index": int(i), "id": sid, "file": f, "label": ""}
            for j, (i, sid, f) in enumerate(zip(sel.indices, sel.ids, files))]
    root = Path(document_root).resolve() if document_root is not None else to.resolve()
    tasks = []
    for r in rows:
        rel = (to / r["file"]).resolve()
        try:
            rel = rel.relative_to(root)
        except ValueError as e:
            raise ValueError(f"document_root {root} does not contain the export folder {to.resolve()}") from e
        tasks.append({"data": {"image": f"/data/local-files/?d={quote(rel.as_posix())}", "uslkit_id": r["id"],
                               "uslkit_index": r["index"], "uslkit_position": r["position"]}})
    atomic_write_json(to / "label_studio.json", tasks)
    atomic_write_text(to / "label_studio.xml", _label_studio_config(names))
    for page, start in enumerate(range(0, len(images), SHEET_PAGE), 1):
        name = "contact_sheet.png" if page == 1 else f"contact_sheet_{page}.png"
        atomic_write_bytes(to / name, _contact_sheet(images[start:start + SHEET_PAGE],
                                                     [str(s) for s in sel.ids[start:start + SHEET_PAGE]], thumb))
    atomic_write_text(to / "README.txt", _readme(sel, names))
    write_manifest(to / "manifest.csv", rows)
    atomic_write_json(meta, {**record, **provenance()})  # last: its presence means the export is complete
    return to


def _label_studio_config(names: list[str]) -> str:
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in names)
    return ('<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <Choices name="label" toName="image" choice="single" showInline="true" required="true">\n{choices}\n'
            "  </Choices>\n</View>\n")


def _readme(sel: Selection, names: list[str]) -> str:
    classes = "\n".join(f"  {i}: {c}" for i, c in enumerate(names))
    return (f"{sel.budget} images picked by {sel.method} (seed {sel.seed}) from {sel.dataset}/{sel.split}.\n\n"
            "Fill the `label` column of manifest.csv with a class name or its index below (leave it empty when\n"
            "unsure), or label them in Label Studio:\n"
            "  1. start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and\n"
            "     LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<this folder, absolute> (or the --document-root given\n"
            "     to the export);\n"
            "  2. create a project whose labelling config is label_studio.xml;\n"
            "  3. add a Local Files source storage with the absolute path of this folder's images/ (Label Studio\n"
            "     serves files only from a storage path strictly below the document root); no sync needed;\n"
            "  4. import label_studio.json, label, and export as JSON or JSON-MIN.\n"
            "Then: uslkit labels import manifest.csv (or the export) --into <selection.json> --out <labelled.json>\n\n"
            f"Classes:\n{classes}\n")


def _contact_sheet(images, ids: list[str], thumb: int) -> bytes:
    from PIL import Image, ImageDraw

    cols = min(10, len(images))
    rows = -(-len(images) // cols)
    text_h = 14
    sheet = Image.new("RGB", (cols * (thumb + 4), rows * (thumb + text_h + 4)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (img, sid) in enumerate(zip(images, ids)):
        r, c = divmod(j, cols)
        x, y = c * (thumb + 4) + 2, r * (thumb + text_h + 4) + 2
        small = img.convert("RGB")
        small.thumbnail((thumb, thumb), Image.NEAREST if max(img.size) < thumb else Image.BILINEAR)
        if max(small.size) < thumb:  # upscale small images (28 x 28) so they can be seen
            scale = thumb // max(small.size)
            small = small.resize((small.width * scale, small.height * scale), Image.NEAREST)
        sheet.paste(small, (x + (thumb - small.width) // 2, y + (thumb - small.height) // 2))
        draw.text((x, y + thumb + 1), sid[-16:], fill="black")
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# manifest


def write_manifest(path, rows: list[dict[str, Any]]) -> Path:
    """Write manifest rows (:data:`MANIFEST_COLUMNS`) as CSV, atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in MANIFEST_COLUMNS})
    return atomic_write_text(path, buf.getvalue())


def read_manifest(path) -> list[dict[str, str]]:
    """The rows of a manifest CSV as dicts of strings (a spreadsheet's extra columns are kept, ignored later).

    Raises:
        ValueError: no ``id`` or no ``label`` column.
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheets save a BOM
        reader = csv.DictReader(f)
        cols = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("id", "label") if c not in cols]
        if missing:
            raise ValueError(f"{path}: not a labelling manifest: no {' and no '.join(missing)} column "
                             f"(columns: {cols})")
        return [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]


# --------------------------------------------------------------------------------------------------
# import


def _label_studio_answers(path: Path, tasks: Any) -> list[tuple[str, str]]:
    """``(id, label)`` per task of a Label Studio export: the full JSON export (``annotations``) or JSON-MIN
    (flat rows). Cancelled (skipped) annotations are ignored; annotators who disagree on a task are an error."""
    if not isinstance(tasks, list):
        raise ValueError(f"{path}: a Label Studio export is a JSON list of tasks, got {type(tasks).__name__}")
    out, disagree = [], []
    for t in tasks:
        if not isinstance(t, dict):
            raise ValueError(f"{path}: a Label Studio task must be an object, got {t!r:.60}")
        data = t.get("data", t)  # JSON-MIN puts the data fields at the top level
        if "uslkit_id" not in data:
            raise ValueError(f"{path}: task {t.get('id')!r} has no uslkit_id: not made from a uslkit export")
        sid = str(data["uslkit_id"])
        if "annotations" in t:
            found = set()
            for a in t["annotations"] or []:
                if a.get("was_cancelled"):
                    continue
                for r in a.get("result", []):
                    if r.get("type") == "choices" and r.get("from_name", "label") == "label":
                        found.update(r.get("value", {}).get("choices", []))
            if len(found) > 1:
                disagree.append(f"{sid} ({sorted(found)})")
            out.append((sid, found.pop() if len(found) == 1 else ""))
        else:
            lab = t.get("label", "")
            if isinstance(lab, dict):  # JSON-MIN with several choices: {"choices": [...]}
                lab = lab.get("choices", [])
            if isinstance(lab, list):
                if len(lab) > 1:
                    disagree.append(f"{sid} ({lab})")
                lab = lab[0] if lab else ""
            out.append((sid, str(lab)))
    if disagree:
        raise ValueError(f"{path}: tasks with more than one class (annotators disagree; resolve them in Label "
                         f"Studio first): {', '.join(disagree[:5])}" + (" ..." if len(disagree) > 5 else ""))
    return out


def _answers(path: Path) -> tuple[list[tuple[str, str]], str]:
    if path.suffix.lower() == ".json":
        return _label_studio_answers(path, read_json(path)), "label_studio"
    return [(r["id"], r["label"]) for r in read_manifest(path)], "manifest_csv"


def _class_index(text: str, names: list[str]) -> int | None:
    if text in names:
        return names.index(text)
    lower = [c.lower() for c in names]
    if text.lower() in lower and lower.count(text.lower()) == 1:
        return lower.index(text.lower())
    if re.fullmatch(r"\d+", text) and int(text) < len(names):
        return int(text)
    return None


def _names_from_export(path: Path) -> list[str] | None:
    meta = path.parent / "export.json"
    if meta.exists():
        d = read_json(meta)
        if d.get("format") == EXPORT_FORMAT:
            return list(d.get("class_names") or []) or None
    return None


def import_labels(path, selection, *, class_names=None, allow_partial: bool = False) -> Selection:
    """Read a filled manifest CSV or a Label Studio JSON export into an annotated :class:`Selection`.

    Rows are matched to picks by sample id; a label is a class name (exact, else case-insensitive when that is
    unambiguous) or, when no class has that name, a 0-based class index.

    Args:
        path: ``manifest.csv`` (or any CSV with ``id`` and ``label`` columns) or a Label Studio export (``.json``).
        selection: the labels file (path) or :class:`Selection` the export was made from.
        class_names: the classes; default the selection's, else those recorded in ``export.json`` beside ``path``.
        allow_partial: keep only the labelled picks (in selection order) instead of failing when some rows have no
            label; the result records ``params["labelling"]`` with how many of how many and the unlabelled ids.

    Returns:
        The selection with ``labels`` and ``class_names``; ``params["labelling"]`` names the source file.

    Raises:
        ValueError: one message naming every problem found: unknown ids, unknown class names, missing rows,
            duplicate rows, and (without ``allow_partial``) rows without a label.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"labels file {path} does not exist")
    sel = selection if isinstance(selection, Selection) else load_selection(selection)
    names = list(class_names if class_names is not None else (sel.class_names or _names_from_export(path) or []))
    if not names:
        raise ValueError(f"no class names for {path}: the selection has none and there is no export.json beside "
                         "it; give class_names (--classes or --dataset)")
    answers, fmt = _answers(path)
    want = [str(i) for i in sel.ids]
    pos = {sid: j for j, sid in enumerate(want)}
    seen = Counter(sid for sid, _ in answers)
    unknown = sorted({sid for sid, _ in answers if sid not in pos})
    dups = sorted(sid for sid, c in seen.items() if c > 1 and sid in pos)
    missing = [sid for sid in want if sid not in seen]
    labels: dict[str, int] = {}
    bad_class, empty = [], []
    for sid, text in answers:
        if sid not in pos or sid in dups:
            continue
        if not text:
            empty.append(sid)
            continue
        k = _class_index(text, names)
        if k is None:
            bad_class.append(f"{text!r} (id {sid})")
        else:
            labels[sid] = k
    problems = []
    for what, items in (("unknown ids (not in the selection)", unknown), ("missing rows", missing),
                        ("duplicate rows", dups), (f"unknown class names (classes: {names})", bad_class)):
        if items:
            problems.append(f"{len(items)} {what}: {', '.join(map(str, items[:5]))}" + (" ..." if len(items) > 5
                                                                                          else ""))
    if empty and not allow_partial:
        problems.append(f"{len(empty)} of {sel.budget} picks have no label (e.g. id {empty[0]}); finish labelling "
                        "or pass allow_partial=True (--allow-partial) to keep only the labelled ones")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    keep = [j for j, sid in enumerate(want) if sid in labels]
    if not keep:
        raise ValueError(f"{path}: no pick is labelled")
    info = {"format": fmt, "path": str(path), "labelled": len(keep), "of": sel.budget,
            "unlabelled_ids": [sel.ids[j] for j, sid in enumerate(want) if sid not in labels]}
    d = dataclasses.asdict(sel)
    d.update(indices=[sel.indices[j] for j in keep], ids=[sel.ids[j] for j in keep], budget=len(keep),
             labels=[labels[want[j]] for j in keep], class_names=names, params={**sel.params, "labelling": info})
    return _selection_from_dict(d)


# --------------------------------------------------------------------------------------------------
# merge


def merge_selections(selections, *, sources=None) -> Selection:
    """Join annotated rounds into one labels file: the picks of every round in the order given, each once.

    Rounds made with ``labeled_before`` (``uslkit select --labeled``) need the rounds that labelled those samples
    among ``selections``; a sample picked twice with the same label is kept once.

    Args:
        selections: annotated :class:`Selection` objects or paths, at least one.
        sources: names of the rounds for messages and the record (default the paths, or ``round <j>``).

    Returns:
        A :class:`Selection` with ``method="merged"``, ``seed=None``, ``labeled_before=[]`` and ``params["rounds"]``
        (method, seed, budget, source per round).

    Raises:
        ValueError: a round without labels; rounds of other datasets, splits, pool sizes or class names; the same
            sample with different labels (every conflict named); a round whose ``labeled_before`` is not covered.
    """
    sels, names = [], []
    for j, s in enumerate(selections):
        if isinstance(s, Selection):
            sels.append(s)
            names.append(str(sources[j]) if sources else f"round {j}")
        else:
            sels.append(load_selection(s))
            names.append(str(sources[j]) if sources else str(s))
    if not sels:
        raise ValueError("merge needs at least one labels file")
    first = sels[0]
    for s, name in zip(sels, names):
        if not s.is_annotated:
            raise ValueError(f"{name} has no labels yet: import or annotate it before merging")
        for key in ("dataset", "split", "n", "class_names"):
            if getattr(s, key) != getattr(first, key):
                raise ValueError(f"{name} is for {key} {getattr(s, key)!r:.80}, {names[0]} for "
                                 f"{getattr(first, key)!r:.80}: rounds of one pool only")
    label_of: dict[int, tuple[int, str]] = {}
    order, ids, conflicts = [], {}, []
    for s, name in zip(sels, names):
        for i, sid, lab in zip(s.indices, s.ids, s.labels):
            if i in label_of:
                if label_of[i][0] != lab:
                    conflicts.append(f"id {sid}: {first.class_names[label_of[i][0]]!r} in {label_of[i][1]}, "
                                     f"{first.class_names[lab]!r} in {name}")
                continue
            label_of[i] = (lab, name)
            order.append(i)
            ids[i] = sid
    if conflicts:
        raise ValueError(f"{len(conflicts)} samples labelled differently in two rounds: " + "; ".join(conflicts[:5])
                         + (" ..." if len(conflicts) > 5 else ""))
    for s, name in zip(sels, names):
        uncovered = sorted(set(s.labeled_before) - set(label_of))
        if uncovered:
            raise ValueError(f"{name} was selected on top of {len(uncovered)} labelled samples that no given round "
                             f"holds (e.g. index {uncovered[0]}): give the earlier round's file too")
    d = {**first.to_dict(), **provenance(), "method": "merged", "seed": None, "embedding": None,
         "params": {"rounds": [{"method": s.method, "seed": s.seed, "budget": s.budget, "source": name}
                               for s, name in zip(sels, names)]},
         "budget": len(order), "indices": order, "ids": [ids[i] for i in order],
         "labels": [label_of[i][0] for i in order], "labeled_before": []}
    return _selection_from_dict(json.loads(json.dumps(d)))
