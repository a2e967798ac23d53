"""The labelling round trip on digits: export, fill the manifest as a person would, import, merge, the widget."""

import csv
import json

import numpy as np
import pytest

from uslkit.cli import main
from uslkit.labels import (
    annotate,
    export_for_labelling,
    import_labels,
    load_selection,
    make_selection,
    merge_selections,
    save_selection,
)
from uslkit.labels.roundtrip import image_file_names, read_manifest, write_manifest


@pytest.fixture(scope="module")
def train():
    from uslkit.data import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture
def sel(train):
    idx = np.array([5, 17, 2, 40, 33, 100, 8, 71])
    return make_selection(idx, dataset=train, method="usl", seed=3)


def fill(manifest, train, *, by="name", skip=(), wrong=None):
    """Fill ``manifest`` as a person would: the true class of each row by name or index (rows in ``skip`` left
    empty; ``wrong``: {position: text})."""
    rows = read_manifest(manifest)
    for r in rows:
        j = int(r["position"])
        y = int(train.labels[int(r["index"])])
        r["label"] = "" if j in skip else (train.class_names[y] if by == "name" else str(y))
        if wrong and j in wrong:
            r["label"] = wrong[j]
    write_manifest(manifest, rows)
    return rows


def test_export_writes_images_manifest_sheet_and_label_studio_files(sel, train, tmp_path):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    rows = read_manifest(to / "manifest.csv")
    assert [int(r["index"]) for r in rows] == sel.indices
    assert [r["id"] for r in rows] == [str(i) for i in sel.ids]
    assert all(r["label"] == "" for r in rows)
    from PIL import Image

    for r, i in zip(rows, sel.indices):  # the pixels themselves, unchanged
        np.testing.assert_array_equal(np.asarray(Image.open(to / r["file"])), train.images[i])
    assert Image.open(to / "contact_sheet.png").size[0] > 8 * 8
    tasks = json.loads((to / "label_studio.json").read_text())
    assert [t["data"]["uslkit_id"] for t in tasks] == sel.ids
    assert tasks[0]["data"]["image"] == f"/data/local-files/?d={rows[0]['file']}"
    xml = (to / "label_studio.xml").read_text()
    assert all(f'<Choice value="{c}"/>' in xml for c in train.class_names)
    assert "Classes:" in (to / "README.txt").read_text()


def test_export_is_idempotent_keeps_a_started_manifest_and_refuses_another_selection(sel, train, tmp_path):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    fill(to / "manifest.csv", train, skip={4, 5, 6, 7})
    export_for_labelling(sel, train, to)  # the same selection again: nothing rewritten
    assert read_manifest(to / "manifest.csv")[0]["label"] != ""
    other = make_selection([1, 2, 3], dataset=train, method="random", seed=0)
    with pytest.raises(FileExistsError, match="another selection"):
        export_for_labelling(other, train, to)
    export_for_labelling(other, train, to, overwrite=True)
    assert len(read_manifest(to / "manifest.csv")) == 3
    assert len(list((to / "images").glob("*.png"))) == 3  # the replaced export's images are gone
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not an empty export folder"):
        export_for_labelling(sel, train, tmp_path / "busy")


@pytest.mark.parametrize("by", ["name", "index"])
def test_import_filled_manifest_equals_the_oracle(sel, train, tmp_path, by):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    fill(to / "manifest.csv", train, by=by)
    got = import_labels(to / "manifest.csv", sel)
    want = annotate(sel, train)
    assert got.labels == want.labels and got.class_names == want.class_names and got.indices == sel.indices
    assert got.params["labelling"]["labelled"] == 8 and got.params["labelling"]["format"] == "manifest_csv"


def test_import_rows_in_any_order_case_insensitive_names_and_a_spreadsheet_bom(sel, train, tmp_path):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    rows = fill(to / "manifest.csv", train)[::-1]
    for r in rows:
        r["label"] = r["label"].upper()
    with open(to / "manifest.csv", "w", newline="", encoding="utf-8-sig") as f:
        w = csv.DictWriter(f, fieldnames=["id", "label", "comment"])
        w.writeheader()
        for r in rows:
            w.writerow({"id": r["id"], "label": r["label"], "comment": "ok"})
    assert import_labels(to / "manifest.csv", sel).labels == annotate(sel, train).labels


def test_import_errors_name_every_problem_at_once(sel, train, tmp_path):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    rows = fill(to / "manifest.csv", train, wrong={1: "zebra"})
    rows = rows[:-1] + [dict(rows[0]), {**rows[2], "id": "999999"}]  # last row missing, row 0 twice, a stranger
    write_manifest(to / "manifest.csv", rows)
    with pytest.raises(ValueError) as e:
        import_labels(to / "manifest.csv", sel)
    msg = str(e.value)
    for part in ("1 unknown ids", "999999", "1 missing rows", f"{sel.ids[-1]}", "1 duplicate rows",
                 "unknown class names", "'zebra'"):
        assert part in msg, (part, msg)


def test_partial_labelling_needs_the_flag_and_keeps_only_the_labelled(sel, train, tmp_path):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    fill(to / "manifest.csv", train, skip={1, 6})
    with pytest.raises(ValueError, match="2 of 8 picks have no label.*allow_partial"):
        import_labels(to / "manifest.csv", sel)
    got = import_labels(to / "manifest.csv", sel, allow_partial=True)
    keep = [0, 2, 3, 4, 5, 7]
    assert got.indices == [sel.indices[j] for j in keep] and got.budget == 6
    assert got.labels == [int(train.labels[sel.indices[j]]) for j in keep]
    assert got.params["labelling"]["unlabelled_ids"] == [sel.ids[1], sel.ids[6]]


def test_import_label_studio_json_and_json_min_exports(sel, train, tmp_path):
    to = export_for_labelling(sel, train, tmp_path / "ex")
    tasks = json.loads((to / "label_studio.json").read_text())
    names = train.class_names
    full, mini = [], []
    for j, t in enumerate(tasks):  # what Label Studio's "JSON" and "JSON-MIN" exports hold
        y = names[int(train.labels[t["data"]["uslkit_index"]])]
        anns = [{"was_cancelled": True, "result": []},
                {"was_cancelled": False, "result": [{"from_name": "label", "to_name": "image", "type": "choices",
                                                     "value": {"choices": [y]}}]}]
        full.append({"id": j + 1, "data": t["data"], "annotations": anns})
        mini.append({"id": j + 1, **t["data"], "label": y})
    (tmp_path / "full.json").write_text(json.dumps(full))
    (tmp_path / "min.json").write_text(json.dumps(mini))
    want = annotate(sel, train).labels
    # the class names: the selection has none, so pass them (beside an export they come from export.json)
    assert import_labels(tmp_path / "full.json", sel, class_names=names).labels == want
    assert import_labels(tmp_path / "min.json", sel, class_names=names).labels == want
    full[0]["annotations"].append({"result": [{"type": "choices", "from_name": "label",
                                               "value": {"choices": [names[(want[0] + 1) % 10]]}}]})
    (tmp_path / "full.json").write_text(json.dumps(full))
    with pytest.raises(ValueError, match="annotators disagree"):
        import_labels(tmp_path / "full.json", sel, class_names=names)
    with pytest.raises(ValueError, match="no class names"):
        import_labels(tmp_path / "min.json", sel)


def test_import_real_label_studio_exports(train):
    """Exports written by Label Studio 1.23.2 itself (project made from our label_studio.xml, our tasks imported,
    the images served from a Local Files storage on images/, one skip then a label on task 2)."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "label_studio"
    sel = load_selection(data / "sel.json", dataset=train)
    want = annotate(sel, train).labels
    for name in ("export_JSON.json", "export_JSON_MIN.json"):
        assert import_labels(data / name, sel, class_names=train.class_names).labels == want


def test_image_file_names_are_safe_and_unique():
    assert image_file_names([3, "n01/x.JPEG", "a b", "a_b"]) == [
        "images/3.png", "images/n01_x.JPEG.png", "images/a_b_2.png", "images/a_b_3.png"]


def test_merge_rounds_made_with_labeled_before(train, tmp_path):
    r1 = annotate(make_selection([0, 1, 2], dataset=train, method="usl", seed=0), train)
    r2 = annotate(make_selection([7, 8], dataset=train, method="usl", seed=0, labeled_before=[0, 1, 2]), train)
    r3 = annotate(make_selection([2, 9], dataset=train, method="random", seed=1), train)  # 2 again, same label
    paths = [save_selection(r, tmp_path / f"r{j}.json") for j, r in enumerate((r1, r2, r3))]
    m = merge_selections(paths)
    assert m.indices == [0, 1, 2, 7, 8, 9] and m.labeled_before == [] and m.method == "merged"
    assert m.labels == train.labels[[0, 1, 2, 7, 8, 9]].tolist()
    assert [r["budget"] for r in m.params["rounds"]] == [3, 2, 2]
    with pytest.raises(ValueError, match="selected on top of 3 labelled samples"):
        merge_selections([paths[1]])
    y = int(train.labels[2])
    bad = r3.__class__(**{**r3.to_dict(), "labels": [(y + 1) % 10, r3.labels[1]]})
    with pytest.raises(ValueError, match=r"1 samples labelled differently.*id 2"):
        merge_selections([r1, bad], sources=["a.json", "b.json"])
    with pytest.raises(ValueError, match="has no labels yet"):
        merge_selections([make_selection([3], dataset=train, method="usl", seed=0)])


def test_cli_round_trip_export_import_merge_train(sel, train, tmp_path, capsys):
    sel_path = save_selection(sel, tmp_path / "sel.json")
    assert main(["labels", "export", str(sel_path), "--to", str(tmp_path / "ex")]) == 0
    assert main(["labels", "export", str(sel_path), "--to", str(tmp_path / "ex")]) == 0  # idempotent
    fill(tmp_path / "ex" / "manifest.csv", train, skip={3})
    out = tmp_path / "labelled.json"
    assert main(["labels", "import", str(tmp_path / "ex" / "manifest.csv"), "--into", str(sel_path),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("uslkit: error: ") and "--allow-partial" in err and "allow_partial" not in err
    assert len(err.strip().splitlines()) == 1
    fill(tmp_path / "ex" / "manifest.csv", train)
    assert main(["labels", "import", str(tmp_path / "ex" / "manifest.csv"), "--into", str(sel_path),
                 "--out", str(out)]) == 0
    assert "labelled 8 of 8" in capsys.readouterr().out
    assert load_selection(out, dataset=train).labels == annotate(sel, train).labels
    assert main(["labels", "import", str(tmp_path / "ex" / "manifest.csv"), "--into", str(sel_path),
                 "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    r2 = annotate(make_selection([11, 12], dataset=train, method="usl", seed=0, labeled_before=sel.indices), train)
    save_selection(r2, tmp_path / "r2.json")
    assert main(["labels", "merge", str(out), str(tmp_path / "r2.json"), "--out", str(tmp_path / "all.json")]) == 0
    assert load_selection(tmp_path / "all.json").budget == 10
    run = tmp_path / "run"
    assert main(["train", "fixmatch", "--dataset", "digits", "--labels", str(tmp_path / "all.json"), "--out",
                 str(run), "--steps", "2", "--batch-size", "8", "--param", "mu=2", "-q"]) == 0
    assert "trained 2 steps" in capsys.readouterr().out


def test_widget_saves_after_every_answer_and_resumes(sel, train, tmp_path):
    pytest.importorskip("ipywidgets")
    from uslkit.labels.widget import LabellingWidget

    out = tmp_path / "labelled.json"
    w = LabellingWidget(sel, train, tmp_path / "ex", out=out)
    truth = annotate(sel, train).labels
    assert w.progress == "0 / 8 labelled" and w.position == 0
    w.buttons[truth[0]].click()
    assert read_manifest(tmp_path / "ex" / "manifest.csv")[0]["label"] == train.class_names[truth[0]]
    saved = load_selection(out, dataset=train)  # the labels file after the first answer: the labelled pick only
    assert saved.indices == sel.indices[:1] and saved.labels == truth[:1]
    assert saved.params["labelling"]["labelled"] == 1 and saved.params["labelling"]["of"] == 8
    w.skip()  # pick 2 stays unlabelled
    w.keys.value = str((truth[2] + 1) % 10)  # keyboard shortcut: digit of the class (1-9, then 0 for the 10th)
    assert w.labelled == 2 and w.position == 3
    assert load_selection(out).indices == [sel.indices[0], sel.indices[2]]
    w2 = LabellingWidget(sel, train, tmp_path / "ex", out=out)  # the notebook was closed and reopened
    assert w2.labelled == 2 and w2.position == 1  # the first unlabelled pick
    for _ in range(6):
        w2.answer(truth[w2.position])
    assert w2.labelled == 8 and load_selection(out).labels == truth and load_selection(out).indices == sel.indices
    w2.back()
    w2.keys.value = "b"
    pos = w2.position
    w2.answer(train.class_names[(truth[pos] + 1) % 10])  # a change of mind is saved too
    assert load_selection(out).labels[pos] == (truth[pos] + 1) % 10
    other = make_selection([1, 2, 3], dataset=train, method="random", seed=0)
    with pytest.raises(FileExistsError, match="another selection"):
        LabellingWidget(other, train, tmp_path / "ex2", out=out)
