"""Tests for uslkit.labels: the selection file, annotation and the import/export formats."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from uslkit import labels as L


@dataclasses.dataclass
class FakeDataset:
    """Same attributes as uslkit.data.ImageDataset (not imported: that module is written elsewhere)."""

    name: str
    split: str
    images: np.ndarray | None
    labels: np.ndarray
    class_names: list[str]
    ids: np.ndarray
    paths: list[str] | None = None
    root: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)


def index_dataset(n=10, name="toy", split="train"):
    """Index-based ids (CIFAR-like): ids = official index."""
    return FakeDataset(name, split, None, np.arange(n, dtype=np.int64) % 3, ["a", "b", "c"],
                       np.arange(n, dtype=np.int64))


def folder_dataset(n=8):
    """Imagefolder-like ids 'wnid/filename'."""
    wnids = ["n01", "n02"]
    ids = np.array([f"{wnids[i % 2]}/img_{i:03d}.JPEG" for i in range(n)])
    return FakeDataset("folder", "train", None, (np.arange(n) % 2).astype(np.int64), wnids, ids)


def test_make_selection_fields():
    ds = index_dataset()
    sel = L.make_selection([7, 2, 5], dataset=ds, method="usl", params={"k": np.int64(4), "t": (1, 2)},
                           seed=3)
    assert sel.format == "uslkit-labels" and sel.format_version == 1
    assert (sel.dataset, sel.split, sel.n, sel.budget) == ("toy", "train", 10, 3)
    assert sel.indices == [7, 2, 5] and sel.ids == [7, 2, 5]
    assert all(type(x) is int for x in sel.indices + sel.ids)
    assert sel.params == {"k": 4, "t": [1, 2]}
    assert sel.labels == [] and sel.labeled_before == [] and not sel.is_annotated
    assert sel.uslkit_version and sel.created
    np.testing.assert_array_equal(sel.labeled_indices(), [7, 2, 5])
    assert sel.labeled_indices().dtype == np.int64


def test_make_selection_without_dataset_defaults_ids_to_indices():
    sel = L.make_selection(np.array([4, 1]), n=6, dataset_name="cifar10", method="random", seed=0)
    assert sel.ids == [4, 1] and sel.split == "train" and sel.dataset == "cifar10"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"indices": [1, 1]}, "duplicate"),
        ({"indices": [1, 10]}, "outside"),
        ({"indices": [-1]}, "outside"),
        ({"indices": []}, "empty"),
        ({"indices": [1], "n": 11}, "disagrees"),
        ({"indices": [1], "split": "test"}, "split"),
        ({"indices": [1], "ids": [2]}, "mismatched ids"),
        ({"indices": [1], "labeled_before": [1]}, "overlap"),
        ({"indices": [1], "seed": -1}, "seed"),
    ],
)
def test_make_selection_validation(kwargs, match):
    kwargs = {"method": "m", "seed": 0, "dataset": index_dataset(), **kwargs}
    with pytest.raises(ValueError, match=match):
        L.make_selection(kwargs.pop("indices"), **kwargs)


def test_make_selection_needs_n_without_dataset():
    with pytest.raises(ValueError, match="n"):
        L.make_selection([0], method="m", seed=0)


def test_save_load_round_trip_and_json_layout(tmp_path):
    ds = folder_dataset()
    sel = L.make_selection([5, 0, 3], dataset=ds, method="usl", params={"alpha": 0.5}, seed=1,
                           embedding={"model": "clip", "dim": 512}, labeled_before=[6])
    path = L.save_selection(sel, tmp_path / "sel.json")
    loaded = L.load_selection(path, dataset=ds)
    assert loaded == sel
    d = json.loads(Path(path).read_text())
    assert list(d) == [
        "format", "format_version", "dataset", "split", "n", "budget", "method", "params", "seed",
        "uslkit_version", "git_commit", "created", "embedding", "indices", "ids", "labels", "class_names",
        "labeled_before",
    ]
    assert d["ids"] == ["n02/img_005.JPEG", "n01/img_000.JPEG", "n02/img_003.JPEG"]
    np.testing.assert_array_equal(loaded.labeled_indices(include_before=True), [6, 5, 0, 3])


def test_save_refuses_existing_file_and_leaves_no_temp(tmp_path):
    sel = L.make_selection([1], n=3, method="m", seed=0)
    path = tmp_path / "sel.json"
    L.save_selection(sel, path)
    with pytest.raises(FileExistsError, match="sel.json"):
        L.save_selection(sel, path)
    sel2 = L.make_selection([2], n=3, method="m", seed=0)
    L.save_selection(sel2, path, overwrite=True)
    assert L.load_selection(path).indices == [2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sel.json"]


def test_save_exist_ok_keeps_the_same_selection_and_refuses_another(tmp_path):
    path = tmp_path / "sel.json"
    sel = L.make_selection([1, 2], n=5, method="m", seed=0)
    L.save_selection(sel, path)
    before = path.read_text()
    again = dataclasses.replace(L.make_selection([1, 2], n=5, method="m", seed=0), created="2000-01-01T00:00:00Z")
    assert L.save_selection(again, path, exist_ok=True) == path and path.read_text() == before  # kept as it is
    with pytest.raises(FileExistsError, match=r"another selection \(differing: \['indices', 'ids'\]\)"):
        L.save_selection(L.make_selection([1, 3], n=5, method="m", seed=0), path, exist_ok=True)
    with pytest.raises(FileExistsError, match=r"differing: \['seed'\]"):
        L.save_selection(L.make_selection([1, 2], n=5, method="m", seed=1), path, exist_ok=True)
    path.write_text("not json")
    with pytest.raises(FileExistsError, match="not a readable labels file"):
        L.save_selection(sel, path, exist_ok=True)
    L.save_selection(sel, path, exist_ok=True, overwrite=True)
    assert L.load_selection(path) == sel


def test_save_validates_hand_built_selection(tmp_path):
    sel = L.make_selection([1, 2], n=3, method="m", seed=0)
    bad = dataclasses.replace(sel, budget=3)
    with pytest.raises(ValueError, match="budget"):
        L.save_selection(bad, tmp_path / "bad.json")
    assert not list(tmp_path.iterdir())


def _write_modified(tmp_path, **changes):
    d = L.make_selection([1, 2], n=5, method="m", seed=0).to_dict()
    d.update(changes)
    p = tmp_path / "mod.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format": "other"}, "not a uslkit-labels"),
        ({"format_version": 2}, "newer"),
        ({"indices": [1, 1]}, "duplicate"),
        ({"indices": [1, 5]}, "outside"),
        ({"indices": [1]}, "budget"),
        ({"ids": [1]}, "len\\(ids\\)"),
        ({"ids": [1, "x"]}, "all integers or all strings"),
        ({"labels": [0]}, "len\\(labels\\)"),
        ({"labels": [0, 3], "class_names": ["a", "b"]}, "out of range"),
        ({"labels": [0, -1]}, "out of range"),
        ({"seed": "0"}, "seed"),
        ({"n": 1.5}, "n must"),
        ({"params": []}, "params"),
        ({"lables": []}, "unknown keys"),
        ({"indices": [1, True]}, "integers"),
    ],
)
def test_load_validation_errors(tmp_path, changes, match):
    p = _write_modified(tmp_path, **changes)
    with pytest.raises(ValueError, match=match) as e:
        L.load_selection(p)
    assert "mod.json" in str(e.value)


def test_load_missing_key(tmp_path):
    d = L.make_selection([1], n=5, method="m", seed=0).to_dict()
    del d["ids"]
    p = tmp_path / "s.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="missing keys"):
        L.load_selection(p)


def test_load_truncated_json_names_file(tmp_path):
    sel = L.make_selection([1, 2], n=5, method="m", seed=0)
    p = L.save_selection(sel, tmp_path / "trunc.json")
    text = p.read_text()
    p.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="trunc.json"):
        L.load_selection(p)


def test_load_against_dataset_mismatches(tmp_path):
    ds = folder_dataset()
    sel = L.make_selection([1, 2], dataset=ds, method="m", seed=0)
    p = L.save_selection(sel, tmp_path / "s.json")
    # the dataset changed under the file: a different image at index 2
    ds2 = folder_dataset()
    ds2.ids = ds2.ids.copy()
    ds2.ids[2] = "n01/other.JPEG"
    with pytest.raises(ValueError, match="mismatched ids.*position 1 \\(index 2\\).*other.JPEG"):
        L.load_selection(p, dataset=ds2)
    with pytest.raises(ValueError, match="wrong n"):
        L.load_selection(p, dataset=folder_dataset(n=9))
    ds3 = folder_dataset()
    ds3.split = "test"
    with pytest.raises(ValueError, match="split"):
        L.load_selection(p, dataset=ds3)
    ds4 = folder_dataset()
    ds4.name = "other"
    with pytest.raises(ValueError, match="dataset name"):
        L.load_selection(p, dataset=ds4)


def test_annotate_fills_labels_and_as_arrays(tmp_path):
    ds = index_dataset(n=6)  # labels 0 1 2 0 1 2
    sel = L.make_selection([5, 0, 4], dataset=ds, method="m", seed=0)
    with pytest.raises(ValueError, match="annotate"):
        sel.as_arrays()
    ann = L.annotate(sel, ds)
    assert sel.labels == []  # the original is unchanged
    assert ann.labels == [2, 0, 1] and ann.class_names == ["a", "b", "c"]
    idx, lab = ann.as_arrays()
    assert idx.dtype == np.int64 and lab.dtype == np.int64
    np.testing.assert_array_equal(idx, [5, 0, 4])
    np.testing.assert_array_equal(lab, [2, 0, 1])
    p = L.save_selection(ann, tmp_path / "a.json")
    assert L.load_selection(p, dataset=ds) == ann


def test_annotate_rejects_unlabelled_and_mismatched():
    ds = index_dataset(n=6)
    ds.labels = ds.labels.copy()
    ds.labels[4] = -1
    sel = L.make_selection([5, 4], dataset=ds, method="m", seed=0)
    with pytest.raises(ValueError, match="unlabelled \\(-1\\) at selected index 4"):
        L.annotate(sel, ds)
    with pytest.raises(ValueError, match="wrong n"):
        L.annotate(sel, index_dataset(n=7))


def test_load_labels_out_of_dataset_class_range(tmp_path):
    ds = index_dataset(n=6)
    ann = L.annotate(L.make_selection([1], dataset=ds, method="m", seed=0), ds)
    d = ann.to_dict()
    d["class_names"], d["labels"] = [], [5]
    p = tmp_path / "s.json"
    p.write_text(json.dumps(d))
    assert L.load_selection(p).labels == [5]
    with pytest.raises(ValueError, match="labels out of range"):
        L.load_selection(p, dataset=ds)


# ---------------------------------------------------------------------------------------------- formats


def test_usl_npy_round_trip(tmp_path):
    ds = index_dataset(n=20)
    sel = L.make_selection([9, 3, 14], dataset=ds, method="usl", seed=2)
    p = L.export_usl_npy(sel, tmp_path)
    assert p.name == "selected_indices_3_2.npy"
    arr = np.load(p)
    assert arr.dtype == np.int64 and arr.ndim == 1
    np.testing.assert_array_equal(arr, [9, 3, 14])
    back = L.import_usl_npy(p, dataset=ds, method="usl")
    assert back.indices == sel.indices and back.ids == sel.ids and back.seed == 2
    assert back.params["imported_from"]["format"] == "usl-npy"
    with pytest.raises(FileExistsError):
        L.export_usl_npy(sel, tmp_path)
    L.export_usl_npy(sel, tmp_path, overwrite=True)
    assert sorted(q.name for q in tmp_path.iterdir()) == ["selected_indices_3_2.npy"]


def test_usl_npy_import_checks(tmp_path):
    np.save(tmp_path / "selected_indices_4_0.npy", np.array([1, 2, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="name says 4"):
        L.import_usl_npy(tmp_path / "selected_indices_4_0.npy", n=10)
    np.save(tmp_path / "selected_indices_3_0.npy", np.array([1, 2, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="seed"):
        L.import_usl_npy(tmp_path / "selected_indices_3_0.npy", n=10, seed=5)
    with pytest.raises(ValueError, match="outside"):
        L.import_usl_npy(tmp_path / "selected_indices_3_0.npy", n=3)
    np.save(tmp_path / "other.npy", np.array([1, 1]))
    with pytest.raises(ValueError, match="duplicate"):
        L.import_usl_npy(tmp_path / "other.npy", n=10)
    np.save(tmp_path / "floats.npy", np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="integer"):
        L.import_usl_npy(tmp_path / "floats.npy", n=10)
    (tmp_path / "broken.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match="broken.npy"):
        L.import_usl_npy(tmp_path / "broken.npy", n=10)
    sel = L.import_usl_npy(tmp_path / "selected_indices_3_0.npy", n=10)
    assert sel.seed == 0 and sel.ids == [1, 2, 3] and sel.dataset is None


def test_usl_npy_export_needs_seed(tmp_path):
    sel = L.make_selection([1], n=3, method="m", seed=None)
    with pytest.raises(ValueError, match="seed"):
        L.export_usl_npy(sel, tmp_path)


def test_imagenet_csv_round_trip_with_complement(tmp_path):
    ds = folder_dataset(n=8)
    sel = L.make_selection([6, 1, 3], dataset=ds, method="usl", seed=0)
    p = L.export_imagenet_csv(sel, tmp_path / "train_1p.csv", dataset=ds,
                              complement_path=tmp_path / "train_99p.csv")
    assert p.read_text().splitlines() == [
        "Index,ImageID", "1,n02/img_001.JPEG", "3,n02/img_003.JPEG", "6,n01/img_006.JPEG",
    ]
    comp = (tmp_path / "train_99p.csv").read_text().splitlines()
    assert comp[0] == "Index,ImageID" and [int(r.split(",")[0]) for r in comp[1:]] == [0, 2, 4, 5, 7]
    back = L.import_imagenet_csv(p, dataset=ds)
    assert back.indices == [1, 3, 6]  # sorted by Index: selection order is not kept by this format
    assert back.ids == ["n02/img_001.JPEG", "n02/img_003.JPEG", "n01/img_006.JPEG"]
    comp_sel = L.import_imagenet_csv(tmp_path / "train_99p.csv", dataset=ds)
    assert sorted(comp_sel.indices + back.indices) == list(range(8))
    with pytest.raises(FileExistsError):
        L.export_imagenet_csv(sel, tmp_path / "new.csv", dataset=ds,
                              complement_path=tmp_path / "train_99p.csv")
    assert not (tmp_path / "new.csv").exists()  # nothing written when a target is refused
    with pytest.raises(ValueError, match="needs the dataset"):
        L.export_imagenet_csv(sel, tmp_path / "x.csv", complement_path=tmp_path / "y.csv")


def test_imagenet_csv_pseudolabel_and_errors(tmp_path):
    ds = folder_dataset(n=8)
    p = tmp_path / "uslt.csv"
    p.write_text("Index,ImageID,Pseudolabel\n2,n01/img_002.JPEG,7\n5,n02/img_005.JPEG,0\n")
    sel = L.import_imagenet_csv(p, dataset=ds, method="usl-t")
    assert sel.indices == [2, 5] and sel.params["pseudolabels"] == [7, 0] and sel.method == "usl-t"
    p.write_text("Index,ImageID\n3,n01/img_002.JPEG\n")
    with pytest.raises(ValueError, match="line 2: Index 3 but ImageID 'n01/img_002.JPEG' is sample 2"):
        L.import_imagenet_csv(p, dataset=ds)
    p.write_text("Index,ImageID\n2,n01/nope.JPEG\n")
    with pytest.raises(ValueError, match="not in dataset"):
        L.import_imagenet_csv(p, dataset=ds)
    p.write_text(",Index,ImageID\n0,2,n01/img_002.JPEG\n")
    with pytest.raises(ValueError, match="unknown columns"):
        L.import_imagenet_csv(p, dataset=ds)
    p.write_text("Index,ImageID\n2,n01/img_002.JPEG\n2,n01/img_002.JPEG\n")
    with pytest.raises(ValueError, match="duplicate"):
        L.import_imagenet_csv(p, dataset=ds)
    p.write_text("Index,ImageID\n")
    with pytest.raises(ValueError, match="no rows"):
        L.import_imagenet_csv(p, dataset=ds)


def test_usb_npy_round_trip(tmp_path):
    ds = index_dataset(n=12)
    sel = L.make_selection([11, 0, 5, 7], dataset=ds, method="usl", seed=1)
    lb_name, ulb_name = L.usb_index_filenames(sel.budget, sel.seed)
    assert (lb_name, ulb_name) == ("lb_labels4_1_seed1_idx.npy", "ulb_labels4_1_seed1_idx.npy")
    p = L.export_usb_npy(sel, tmp_path / lb_name, ulb_path=tmp_path / ulb_name)
    np.testing.assert_array_equal(np.load(p), [11, 0, 5, 7])
    np.testing.assert_array_equal(np.load(tmp_path / ulb_name), [1, 2, 3, 4, 6, 8, 9, 10])
    back = L.import_usb_npy(p, dataset=ds)
    assert back.indices == sel.indices and back.seed == 1
    back_n = L.import_usb_npy(p, n=12, dataset_name="toy")
    assert back_n.indices == sel.indices and back_n.ids == sel.ids
    with pytest.raises(FileExistsError):
        L.export_usb_npy(sel, p)
    np.save(tmp_path / "lb_labels5_seed0_idx.npy", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="name says 5"):
        L.import_usb_npy(tmp_path / "lb_labels5_seed0_idx.npy", n=12)


def test_id_list_round_trip(tmp_path):
    for ds in (folder_dataset(n=8), index_dataset(n=8)):
        sel = L.make_selection([4, 7, 0], dataset=ds, method="m", seed=0)
        p = L.export_id_list(sel, tmp_path / f"{ds.name}.txt")
        assert p.read_text().splitlines() == [str(x) for x in sel.ids]
        back = L.import_id_list(p, dataset=ds)
        assert back.indices == [4, 7, 0] and back.ids == sel.ids
        with pytest.raises(FileExistsError):
            L.export_id_list(sel, p)
    p = tmp_path / "bad.txt"
    p.write_text("n01/img_000.JPEG\nn01/missing.JPEG\n")
    with pytest.raises(ValueError, match="bad.txt line 2"):
        L.import_id_list(p, dataset=folder_dataset())
    p.write_text("n01/img_000.JPEG\n\nn01/img_000.JPEG\n")
    with pytest.raises(ValueError, match="repeats line 1"):
        L.import_id_list(p, dataset=folder_dataset())
