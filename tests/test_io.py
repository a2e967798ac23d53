"""Atomic writes, provenance and boundary validation shared by every stage."""

import json
import os

import numpy as np
import pytest

from uslkit import _io
from uslkit._validate import (
    check_budget,
    check_choice,
    check_cluster_ids,
    check_embeddings,
    check_indices,
    check_positive_float,
    check_seed,
)


def test_atomic_json_roundtrip_and_no_temp_left(tmp_path):
    p = tmp_path / "sub" / "x.json"
    _io.atomic_write_json(p, {"a": np.int64(3), "b": np.arange(3), "c": 1.5})
    assert json.loads(p.read_text()) == {"a": 3, "b": [0, 1, 2], "c": 1.5}
    assert os.listdir(p.parent) == ["x.json"]


def test_atomic_write_failure_keeps_old_file_and_cleans_temp(tmp_path, monkeypatch):
    p = tmp_path / "x.npy"
    _io.atomic_save_npy(p, np.arange(4))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        _io.atomic_save_npy(p, np.arange(10))
    monkeypatch.undo()
    assert np.array_equal(np.load(p), np.arange(4))  # the old file is intact
    assert os.listdir(tmp_path) == ["x.npy"]  # no temp file left behind


def test_check_can_write_refuses_existing(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("keep")
    with pytest.raises(FileExistsError, match="overwrite"):
        _io.check_can_write(p, overwrite=False)
    assert _io.check_can_write(p, overwrite=True) == p


def test_read_json_names_corrupt_file(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{"a": [1, 2')
    with pytest.raises(ValueError, match="bad.json"):
        _io.read_json(p)


def test_provenance_fields():
    prov = _io.provenance()
    assert set(prov) == {"uslkit_version", "git_commit", "created"}
    assert prov["created"].endswith("+00:00")


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(5), "2-D"),
        (np.zeros((0, 3)), "empty"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "NaN or infinite values in 1 of 2 rows .first bad row: 0"),
        (np.array([[1.0, 2.0], [np.inf, 1.0]]), "first bad row: 1"),
        (np.array([["a", "b"]]), "numeric"),
    ],
)
def test_check_embeddings_rejects(bad, match):
    with pytest.raises(ValueError, match=match):
        check_embeddings(bad)


def test_check_embeddings_returns_contiguous_float32():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    out = check_embeddings(x)
    assert out.dtype == np.float32 and out.flags.c_contiguous and out.shape == (3, 2)


def test_check_embeddings_reads_a_memory_map_in_blocks_without_copying(tmp_path, monkeypatch):
    import uslkit._validate as v

    x = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    np.save(tmp_path / "e.npy", x)
    mm = np.load(tmp_path / "e.npy", mmap_mode="r")
    monkeypatch.setattr(v, "_CHECK_ELEMS", 64)  # blocks of 8 rows
    out = check_embeddings(mm)
    assert np.shares_memory(out, mm)  # the map itself, not an in-memory copy
    x[[5, 517, 999], 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 3 of 1000 rows .first bad row: 5"):
        check_embeddings(x)


def test_check_budget_and_seed():
    assert check_budget(3, 10) == 3
    with pytest.raises(ValueError, match=">= 1"):
        check_budget(0, 10)
    with pytest.raises(ValueError, match="larger than the unlabelled pool of 10"):
        check_budget(11, 10)
    with pytest.raises(ValueError, match="8 already labelled"):
        check_budget(3, 10, n_labeled=8)
    with pytest.raises(ValueError, match="integer"):
        check_budget(2.5, 10)
    with pytest.raises(ValueError, match="seed"):
        check_seed(-1)


def test_check_indices():
    assert check_indices([2, 0], 3).tolist() == [2, 0]
    assert check_indices(None, 3).size == 0
    with pytest.raises(ValueError, match="outside"):
        check_indices([3], 3)
    with pytest.raises(ValueError, match="duplicate"):
        check_indices([1, 1], 3)


def test_to_jsonable_converts_and_names_what_fails():
    from pathlib import Path

    obj = {"a": (1, np.int64(2)), "b": np.arange(2), "c": np.float32(0.5), "p": Path("x/y"), "t": np.bool_(True)}
    assert _io.to_jsonable(obj) == {"a": [1, 2], "b": [0, 1], "c": 0.5, "p": "x/y", "t": True}
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        _io.to_jsonable({"x": object()})
    with pytest.raises(ValueError, match="params is not JSON serialisable"):
        _io.to_jsonable({"x": object()}, name="params")


def test_check_choice_positive_float_and_cluster_ids():
    assert check_choice("a", ("a", "b"), name="mode") == "a"
    with pytest.raises(ValueError, match=r"mode must be one of \('a', 'b'\), got 'c'"):
        check_choice("c", ("a", "b"), name="mode")
    assert check_positive_float("0.5", name="tol") == 0.5
    for bad in (0, -1.0, float("inf"), float("nan"), "x", None):
        with pytest.raises(ValueError, match="tol must be a positive"):
            check_positive_float(bad, name="tol")
    np.testing.assert_array_equal(check_cluster_ids([0.0, 2.0, 1.0], 3, 3), [0, 2, 1])
    with pytest.raises(ValueError, match=r"labels must have shape \(3,\)"):
        check_cluster_ids([0, 1], 3, 3)
    with pytest.raises(ValueError, match="must hold integer cluster ids"):
        check_cluster_ids([0.5, 1, 2], 3, 3)
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\), got e.g. 3"):
        check_cluster_ids([0, 3, 1], 3, 3)
