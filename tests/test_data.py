"""Tests for uslkit.data: every on-disk format written small into tmp_path, checked against torchvision's own
parsers where one exists, plus the real Fashion-MNIST files from Debian's dataset-fashion-mnist package."""

from __future__ import annotations

import gzip
import os
import pickle
import shutil
import struct
import sys
import types
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import scipy.io
import torch
import torchvision
import torchvision.datasets.cifar
import torchvision.datasets.mnist
import torchvision.datasets.stl10
import torchvision.datasets.svhn
from PIL import Image

from uslkit import data
from uslkit.data import sources
from uslkit.data import (
    CorruptDatasetError,
    DatasetNotFoundError,
    ImageDataset,
    available_datasets,
    load_dataset,
)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------------------------------------
# writers for the official formats (small)
# ----------------------------------------------------------------------------------------------------------
def idx_bytes(arr: np.ndarray) -> bytes:
    arr = np.asarray(arr, dtype=np.uint8)
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def write_idx_set(folder: Path, prefix: str, images: np.ndarray, labels: np.ndarray, *, gz: bool, raw: bool):
    folder.mkdir(parents=True, exist_ok=True)
    for kind, arr in (("images-idx3", images), ("labels-idx1", labels)):
        name = f"{prefix}-{kind}-ubyte"
        if raw:
            (folder / name).write_bytes(idx_bytes(arr))
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))


def mnist_arrays(rng, n_train=7, n_test=4):
    return {
        "train": (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train)),
        "t10k": (rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test)),
    }


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def dump_pickle(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(folder: Path, rng, per_batch=2, n_test=3) -> dict:
    """cifar-10-batches-py with 5 train batches of ``per_batch`` images; returns the rows written."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, labels = [], []
    for b in range(1, 6):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        dump_pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5", "labels": y,
                                                  "data": x, "filenames": [f"f{b}_{i}.png" for i in range(per_batch)]})
        rows.append(x)
        labels += y
    xt = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, n_test)]
    dump_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": yt, "data": xt,
                                        "filenames": [f"t{i}.png" for i in range(n_test)]})
    dump_pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES, "num_cases_per_batch": per_batch,
                                          "num_vis": 3072})
    return {"train": (np.concatenate(rows), np.array(labels)), "test": (xt, np.array(yt))}


def write_stl10(folder: Path, rng, n=(3, 2, 4)) -> dict:
    """stl10_binary with train/test/unlabeled of the given sizes; returns the HWC images written."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, k in zip(("train", "test", "unlabeled"), n):
        hwc = rng.integers(0, 256, (k, 96, 96, 3), dtype=np.uint8)
        # official layout: per image, channel by channel, each channel column-major: raw[c, col, row]
        hwc.transpose(0, 3, 2, 1).tofile(folder / f"{split}_X.bin")
        y = rng.integers(1, 11, k).astype(np.uint8)
        if split != "unlabeled":
            y.tofile(folder / f"{split}_y.bin")
        out[split] = (hwc, y)
    (folder / "class_names.txt").write_text("\n".join(sources._STL10_CLASSES) + "\n")
    return out


def write_svhn(path: Path, rng, n=6) -> tuple[np.ndarray, np.ndarray]:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = np.array([10, 1, 2, 10, 9, 5][:n], dtype=np.uint8).reshape(n, 1)
    scipy.io.savemat(path, {"X": x, "y": y})
    return x, y


def write_bloodmnist(path: Path, rng, sizes=(5, 2, 3)) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, k in zip(("train", "val", "test"), sizes):
        arrays[f"{split}_images"] = rng.integers(0, 256, (k, 28, 28, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 8, (k, 1)).astype(np.uint8)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def no_system_dirs(monkeypatch, tmp_path):
    """Hide Debian's Fashion-MNIST and ~/.medmnist so only tmp_path is searched."""
    monkeypatch.setattr(sources, "_FASHION_MNIST_SYSTEM_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(sources, "_MEDMNIST_HOME", tmp_path / "no-medmnist-home")


# ----------------------------------------------------------------------------------------------------------
# names, splits, container
# ----------------------------------------------------------------------------------------------------------
def test_available_datasets_and_name_validation():
    names = available_datasets()
    assert names == ["digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "stl10", "svhn", "bloodmnist",
                     "imagefolder"]
    with pytest.raises(ValueError, match="unknown dataset 'imagenet22k'"):
        load_dataset("imagenet22k")
    with pytest.raises(ValueError, match="unknown split 'val' for mnist"):
        load_dataset("mnist", "val")
    with pytest.raises(ValueError, match="download must be True or False"):
        load_dataset("digits", download="yes")
    assert load_dataset("DIGITS").name == "digits"
    assert [data._canonical_name(n) for n in ("Fashion-MNIST", "CIFAR-10", "stl-10")] == \
        ["fashion_mnist", "cifar10", "stl10"]


def test_digits_splits_values_and_ids():
    from sklearn.datasets import load_digits

    ref = load_digits()
    full = load_dataset("digits")
    train, test = load_dataset("digits", "fit"), load_dataset("digits", "test")
    assert full.images.shape == (1797, 8, 8) and full.images.dtype == np.uint8
    assert full.labels.dtype == np.int64 and full.ids.dtype == np.int64
    np.testing.assert_array_equal(full.ids, np.arange(1797))
    np.testing.assert_array_equal(full.labels, ref.target)
    np.testing.assert_array_equal(full.images, np.rint(ref.images * 255 / 16).astype(np.uint8))
    assert full.images.min() == 0 and full.images.max() == 255
    assert full.class_names == [str(d) for d in range(10)] and full.num_classes == 10
    # fit / test are disjoint, cover train (= everything), ids index the full set
    assert (len(train), len(test)) == (1442, 355)
    assert not np.intersect1d(train.ids, test.ids).size
    np.testing.assert_array_equal(np.sort(np.concatenate([train.ids, test.ids])), np.arange(1797))
    # every 5th sample of each class: n_c // 5 per class
    np.testing.assert_array_equal(np.bincount(test.labels, minlength=10), np.bincount(ref.target) // 5)
    np.testing.assert_array_equal(test.images, full.images[test.ids])
    np.testing.assert_array_equal(test.labels, ref.target[test.ids])


def test_pool_split_is_disjoint_from_test():
    from uslkit.data import pool_split

    assert pool_split("digits") == pool_split("Digits") == "fit"
    assert pool_split("fashion-mnist") == pool_split("cifar10") == pool_split("imagefolder") == "train"
    pool, test = load_dataset("digits", pool_split("digits")), load_dataset("digits", "test")
    assert not np.intersect1d(pool.ids, test.ids).size
    with pytest.raises(ValueError, match="unknown dataset"):
        pool_split("mnistt")


def test_subset_get_image_to_torch_on_arrays():
    ds = load_dataset("digits")
    sub = ds.subset([10, 3, 7])
    np.testing.assert_array_equal(sub.ids, [10, 3, 7])
    np.testing.assert_array_equal(sub.labels, ds.labels[[10, 3, 7]])
    np.testing.assert_array_equal(sub.images[1], ds.images[3])
    mask = ds.labels == 4
    by_mask = ds.subset(mask)
    np.testing.assert_array_equal(by_mask.ids, np.flatnonzero(mask))
    with pytest.raises(ValueError, match="duplicate"):
        ds.subset([1, 1])
    with pytest.raises(ValueError, match="outside"):
        ds.subset([1797])
    img = sub.get_image(1)
    assert img.mode == "L" and img.size == (8, 8)
    np.testing.assert_array_equal(np.asarray(img), ds.images[3])
    with pytest.raises(IndexError):
        sub.get_image(3)
    tds = sub.to_torch(transform=torchvision.transforms.functional.pil_to_tensor)
    assert isinstance(tds, torch.utils.data.Dataset) and len(tds) == 3
    x, y, i = tds[2]
    assert x.shape == (1, 8, 8) and y == int(ds.labels[7]) and i == 2
    batch = next(iter(torch.utils.data.DataLoader(tds, batch_size=3)))
    assert batch[0].shape == (3, 1, 8, 8) and batch[2].tolist() == [0, 1, 2]
    assert isinstance(sub.to_torch()[0][0], Image.Image)
    assert "n=3" in repr(sub)


def test_imagedataset_rejects_misaligned_fields():
    with pytest.raises(ValueError, match="ids"):
        ImageDataset("x", "train", np.zeros((3, 4, 4), np.uint8), np.zeros(3, np.int64), ["a"], np.arange(2))
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset("x", "train", np.zeros((3, 4, 4), np.float32), np.zeros(3, np.int64), ["a"], np.arange(3))
    with pytest.raises(ValueError, match="exactly one"):
        ImageDataset("x", "train", None, np.zeros(3, np.int64), ["a"], np.arange(3))


# ----------------------------------------------------------------------------------------------------------
# Fashion-MNIST (real files) and the idx format
# ----------------------------------------------------------------------------------------------------------
needs_debian = pytest.mark.skipif(
    not DEBIAN_FMNIST.is_dir(),
    reason=f"{DEBIAN_FMNIST} absent (apt-get install -y dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fmnist_train():
    return load_dataset("fashion_mnist", "train", root="/nonexistent-uslkit-root")


@needs_debian
def test_fashion_mnist_real_train(fmnist_train):
    ds = fmnist_train
    assert ds.images.shape == (60000, 28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.shape == (60000,) and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(ds.labels), np.full(10, 6000))
    np.testing.assert_array_equal(ds.ids, np.arange(60000))
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot" and ds.num_classes == 10
    assert ds.root == str(DEBIAN_FMNIST)
    assert ds.labels[:5].tolist() == [9, 0, 0, 3, 0]  # first labels of the official training file
    img = ds.get_image(0)
    assert img.mode == "L" and img.size == (28, 28)
    sub = ds.subset([59999, 0])
    np.testing.assert_array_equal(sub.ids, [59999, 0])
    np.testing.assert_array_equal(sub.images[0], ds.images[-1])
    x, y, i = sub.to_torch(transform=torchvision.transforms.ToTensor())[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and y == int(ds.labels[-1]) and i == 0
    np.testing.assert_allclose(x.numpy()[0], ds.images[-1] / 255.0, atol=1e-6)


@needs_debian
def test_fashion_mnist_real_test_matches_torchvision_reader(tmp_path):
    ds = load_dataset("fashion_mnist", "test", root=tmp_path)
    assert ds.images.shape == (10000, 28, 28) and len(ds.labels) == 10000
    np.testing.assert_array_equal(ds.ids, np.arange(10000))
    # independent reference: torchvision's idx reader on the gunzipped official files
    for name, ours in (("t10k-images-idx3-ubyte", ds.images), ("t10k-labels-idx1-ubyte", ds.labels)):
        raw = tmp_path / name
        raw.write_bytes(gzip.decompress((DEBIAN_FMNIST / f"{name}.gz").read_bytes()))
        reader = torchvision.datasets.mnist.read_image_file if "images" in name else \
            torchvision.datasets.mnist.read_label_file
        np.testing.assert_array_equal(reader(str(raw)).numpy(), ours)


def test_mnist_layouts_and_torchvision_agreement(tmp_path, rng, no_system_dirs):
    arrs = mnist_arrays(rng)
    tv_raw = tmp_path / "FashionMNIST" / "raw"
    for prefix, (x, y) in arrs.items():
        write_idx_set(tv_raw, prefix, x, y, gz=True, raw=True)  # torchvision leaves both
        write_idx_set(tmp_path / "mnist", prefix, x[::-1], y[::-1], gz=True, raw=False)
    fm = load_dataset("fashion_mnist", "train", root=tmp_path)
    assert fm.root == str(tv_raw)
    np.testing.assert_array_equal(fm.images, arrs["train"][0])
    np.testing.assert_array_equal(fm.labels, arrs["train"][1])
    tv = torchvision.datasets.FashionMNIST(str(tmp_path), train=False)
    fm_test = load_dataset("fashion_mnist", "test", root=tmp_path)
    np.testing.assert_array_equal(fm_test.images, tv.data.numpy())
    np.testing.assert_array_equal(fm_test.labels, tv.targets.numpy())
    mn = load_dataset("mnist", "test", root=tmp_path)  # simple root/mnist/*.gz layout
    assert mn.root == str(tmp_path / "mnist") and mn.class_names == [str(d) for d in range(10)]
    np.testing.assert_array_equal(mn.images, arrs["t10k"][0][::-1])
    np.testing.assert_array_equal(mn.ids, np.arange(4))


@pytest.mark.parametrize(
    "damage, match",
    [
        ("truncate_gz", "truncated gzip"),
        ("short_idx", r"header gives shape \(7, 28, 28\)"),
        ("bad_magic", "bad magic number"),
        ("label_count", "6 labels for 7 images"),
        ("label_range", r"labels outside \[0, 9\]"),
    ],
)
def test_corrupt_idx_files(tmp_path, rng, no_system_dirs, damage, match):
    x, y = mnist_arrays(rng)["train"]
    folder = tmp_path / "fashion_mnist"
    write_idx_set(folder, "train", x, y, gz=True, raw=False)
    img, lab = folder / "train-images-idx3-ubyte.gz", folder / "train-labels-idx1-ubyte.gz"
    bad = img
    if damage == "truncate_gz":
        img.write_bytes(img.read_bytes()[:-30])
    elif damage == "short_idx":
        img.write_bytes(gzip.compress(idx_bytes(x)[:-5]))
    elif damage == "bad_magic":
        img.write_bytes(gzip.compress(b"\x08\x03\x00\x00" + idx_bytes(x)[4:]))
    elif damage == "label_count":
        lab.write_bytes(gzip.compress(idx_bytes(y[:6])))
        bad = lab
    else:
        y2 = y.copy()
        y2[3] = 10
        lab.write_bytes(gzip.compress(idx_bytes(y2)))
        bad = lab
    with pytest.raises(CorruptDatasetError, match=match) as err:
        load_dataset("fashion_mnist", root=tmp_path)
    assert str(bad) in str(err.value)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, no_system_dirs):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("fashion_mnist", root=tmp_path)
    msg = str(err.value)
    assert "apt-get install -y dataset-fashion-mnist" in msg and "download=True" in msg
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and str(tmp_path / "no-debian") in msg
    assert isinstance(err.value, FileNotFoundError)


# ----------------------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def tv_no_md5(monkeypatch):
    """Let torchvision's dataset classes accept our small files (md5 checks -> existence checks)."""
    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    for mod in (torchvision.datasets.cifar, torchvision.datasets.stl10, torchvision.datasets.svhn):
        monkeypatch.setattr(mod, "check_integrity", exists)


def test_cifar10_values_order_and_torchvision_agreement(tmp_path, rng, tv_no_md5):
    rows = write_cifar10(tmp_path / "cifar-10-batches-py", rng)
    ds = load_dataset("cifar10", root=tmp_path)
    x, y = rows["train"]
    assert ds.images.shape == (10, 32, 32, 3) and ds.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.labels, y)
    np.testing.assert_array_equal(ds.ids, np.arange(10))
    assert ds.class_names == CIFAR10_NAMES
    # red plane first, row-major: pixel (row 5, col 7) of image 3, channel 2
    assert ds.images[3, 5, 7, 2] == x[3, 2 * 1024 + 5 * 32 + 7]
    tv = torchvision.datasets.CIFAR10(str(tmp_path), train=True)
    np.testing.assert_array_equal(ds.images, tv.data)
    np.testing.assert_array_equal(ds.labels, tv.targets)
    test = load_dataset("cifar10", "test", root=tmp_path)
    np.testing.assert_array_equal(test.labels, rows["test"][1])
    img = test.get_image(0)
    assert img.mode == "RGB" and img.size == (32, 32)


def test_cifar10_simple_layout_and_missing_batch(tmp_path, rng):
    folder = tmp_path / "cifar10"
    write_cifar10(folder, rng)
    assert load_dataset("cifar10", root=tmp_path).root == str(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: data_batch_3") as err:
        load_dataset("cifar10", root=tmp_path)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in str(err.value)
    assert "download=True" in str(err.value)


@pytest.mark.parametrize(
    "damage, match",
    [
        ("cut", "cannot unpickle"),
        ("no_labels", r"missing key\(s\) \['labels'\]"),
        ("wrong_width", r"shape \(n, 3072\)"),
        ("label_range", r"labels outside \[0, 9\]"),
        ("label_count", "1 labels for 2 images"),
    ],
)
def test_corrupt_cifar_batches(tmp_path, rng, damage, match):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, rng)
    path = folder / "data_batch_2"
    good = pickle.loads(path.read_bytes())
    if damage == "cut":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif damage == "no_labels":
        dump_pickle(path, {"data": good["data"]})
    elif damage == "wrong_width":
        dump_pickle(path, {"data": good["data"][:, :3000], "labels": good["labels"]})
    elif damage == "label_range":
        dump_pickle(path, {"data": good["data"], "labels": [0, 10]})
    else:
        dump_pickle(path, {"data": good["data"], "labels": [0]})
    with pytest.raises(CorruptDatasetError, match=match) as err:
        load_dataset("cifar10", root=tmp_path)
    assert str(path) in str(err.value)


def test_cifar_pickle_with_foreign_objects_is_refused(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, rng)
    dump_pickle(folder / "test_batch", {"data": types.SimpleNamespace(), "labels": []})
    with pytest.raises(CorruptDatasetError, match="unexpected object types.SimpleNamespace"):
        load_dataset("cifar10", "test", root=tmp_path)


def test_cifar100_fine_labels(tmp_path, rng, tv_no_md5):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine_names = [f"fine{i}" for i in range(100)]
    dump_pickle(folder / "meta", {"fine_label_names": fine_names, "coarse_label_names": [f"c{i}" for i in range(20)]})
    split_rows = {}
    for split, n in (("train", 6), ("test", 3)):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        dump_pickle(folder / split, {"data": x, "fine_labels": fine, "coarse_labels": [v // 5 for v in fine],
                                     "filenames": [f"{i}.png" for i in range(n)], "batch_label": split})
        split_rows[split] = (x, fine)
    ds = load_dataset("cifar100", root=tmp_path)
    np.testing.assert_array_equal(ds.labels, split_rows["train"][1])
    assert ds.num_classes == 100 and ds.class_names[37] == "fine37"
    tv = torchvision.datasets.CIFAR100(str(tmp_path), train=True)
    np.testing.assert_array_equal(ds.images, tv.data)
    assert len(load_dataset("cifar100", "test", root=tmp_path)) == 3


# ----------------------------------------------------------------------------------------------------------
# STL-10, SVHN, BloodMNIST
# ----------------------------------------------------------------------------------------------------------
def test_stl10_column_major_and_splits(tmp_path, rng, tv_no_md5):
    written = write_stl10(tmp_path / "stl10_binary", rng)
    train = load_dataset("stl10", root=tmp_path)
    np.testing.assert_array_equal(train.images, written["train"][0])
    np.testing.assert_array_equal(train.labels, written["train"][1].astype(np.int64) - 1)
    assert train.class_names == sources._STL10_CLASSES
    tv = torchvision.datasets.STL10(str(tmp_path), split="train+unlabeled")
    both = load_dataset("stl10", "train+unlabeled", root=tmp_path)
    np.testing.assert_array_equal(both.images, tv.data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(both.labels, tv.labels)
    np.testing.assert_array_equal(both.ids, np.arange(7))
    np.testing.assert_array_equal(both.labels[3:], -1)
    unl = load_dataset("stl10", "unlabeled", root=tmp_path)
    np.testing.assert_array_equal(unl.ids, np.arange(4))
    np.testing.assert_array_equal(unl.images, both.images[3:])
    assert unl.num_classes == 10 and (unl.labels == -1).all()
    # the transpose is not a no-op: a row-major reading would differ
    assert not np.array_equal(train.images, written["train"][0].transpose(0, 2, 1, 3))
    assert load_dataset("stl10", "test", root=tmp_path).images.shape == (2, 96, 96, 3)


@pytest.mark.parametrize("damage", ["size", "labels", "count"])
def test_corrupt_stl10(tmp_path, rng, damage):
    folder = tmp_path / "stl10_binary"
    write_stl10(folder, rng)
    if damage == "size":
        bad, match = folder / "train_X.bin", "not a positive multiple of 3\\*96\\*96"
        bad.write_bytes(bad.read_bytes()[:-100])
    elif damage == "labels":
        bad, match = folder / "train_y.bin", r"labels outside \[1, 10\]"
        np.array([1, 0, 3], np.uint8).tofile(bad)
    else:
        bad, match = folder / "train_y.bin", "2 labels for 3 images"
        np.array([1, 2], np.uint8).tofile(bad)
    with pytest.raises(CorruptDatasetError, match=match) as err:
        load_dataset("stl10", root=tmp_path)
    assert str(bad) in str(err.value)


def test_svhn_label_10_is_0_and_torchvision_agreement(tmp_path, rng, tv_no_md5):
    x, _ = write_svhn(tmp_path / "svhn" / "train_32x32.mat", rng)
    ds = load_dataset("svhn", root=tmp_path)
    assert ds.labels.tolist() == [0, 1, 2, 0, 9, 5]
    np.testing.assert_array_equal(ds.images[4], x[..., 4])
    tv = torchvision.datasets.SVHN(str(tmp_path / "svhn"), split="train")
    np.testing.assert_array_equal(ds.images, tv.data.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ds.labels, tv.labels)
    write_svhn(tmp_path / "extra_32x32.mat", rng, n=2)  # torchvision's layout: files directly in root
    assert len(load_dataset("svhn", "extra", root=tmp_path)) == 2


def test_corrupt_svhn(tmp_path, rng):
    path = tmp_path / "svhn" / "test_32x32.mat"
    write_svhn(path, rng)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CorruptDatasetError, match="cannot read MATLAB file") as err:
        load_dataset("svhn", "test", root=tmp_path)
    assert str(path) in str(err.value)


def test_bloodmnist_npz(tmp_path, rng, no_system_dirs):
    arrays = write_bloodmnist(tmp_path / "bloodmnist.npz", rng)
    for split in ("train", "val", "test"):
        ds = load_dataset("bloodmnist", split, root=tmp_path)
        np.testing.assert_array_equal(ds.images, arrays[f"{split}_images"])
        np.testing.assert_array_equal(ds.labels, arrays[f"{split}_labels"].ravel())
        assert ds.num_classes == 8 and ds.class_names[0] == "basophil"
    (tmp_path / "bloodmnist.npz").write_bytes((tmp_path / "bloodmnist.npz").read_bytes()[:2000])
    with pytest.raises(CorruptDatasetError, match="bloodmnist.npz"):
        load_dataset("bloodmnist", root=tmp_path)


def test_bloodmnist_missing_names_the_medmnist_extra(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import medmnist -> ImportError
    with pytest.raises(DatasetNotFoundError, match="uslkit\\[medmnist\\]"):
        load_dataset("bloodmnist", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="needs the optional medmnist package"):
        load_dataset("bloodmnist", root=tmp_path, download=True)


def test_bloodmnist_download_through_medmnist(tmp_path, rng, monkeypatch, no_system_dirs):
    calls = []

    class FakeBloodMNIST:
        def __init__(self, split, root, download):
            calls.append((split, root, download))
            write_bloodmnist(Path(root) / "bloodmnist.npz", np.random.default_rng(1))

    monkeypatch.setitem(sys.modules, "medmnist", types.SimpleNamespace(BloodMNIST=FakeBloodMNIST))
    root = tmp_path / "new"
    ds = load_dataset("bloodmnist", "val", root=root, download=True)
    assert calls == [("val", str(root), True)] and len(ds) == 2
    load_dataset("bloodmnist", "test", root=root, download=True)
    assert len(calls) == 1  # present now: not fetched again


# ----------------------------------------------------------------------------------------------------------
# imagefolder
# ----------------------------------------------------------------------------------------------------------
def make_image_tree(folder: Path, rng) -> None:
    layout = {
        "n02": ["b.png", "a.JPEG", "notes.txt"],
        "n01": ["z.png", "sub/y.png", "sub/deeper/x.bmp", "A.png", "sub-b/w.png"],
        "n03": ["only.jpg"],
    }
    for cls, files in layout.items():
        for f in files:
            p = folder / cls / f
            p.parent.mkdir(parents=True, exist_ok=True)
            if f.endswith(".txt"):
                p.write_text("not an image")
            else:
                arr = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
                fmt = {".png": "PNG", ".jpeg": "JPEG", ".jpg": "JPEG", ".bmp": "BMP"}[Path(f).suffix.lower()]
                Image.fromarray(arr).save(p, format=fmt)


def test_imagefolder_matches_torchvision(tmp_path, rng):
    make_image_tree(tmp_path / "flat", rng)
    ds = load_dataset("imagefolder", root=tmp_path / "flat")
    tv = torchvision.datasets.ImageFolder(str(tmp_path / "flat"))
    assert ds.images is None and ds.class_names == tv.classes == ["n01", "n02", "n03"]
    assert ds.paths == [os.path.abspath(p) for p, _ in tv.samples]
    np.testing.assert_array_equal(ds.labels, tv.targets)
    # sorted(os.walk(...)) orders folders by path string: "sub" < "sub-b" < "sub/deeper" ('-' < '/')
    assert ds.ids.tolist() == ["n01/A.png", "n01/z.png", "n01/sub/y.png", "n01/sub-b/w.png",
                               "n01/sub/deeper/x.bmp", "n02/a.JPEG", "n02/b.png", "n03/only.jpg"]
    img = ds.get_image(3)
    assert img.mode == "RGB" and img.size == (6, 5)
    assert np.array_equal(np.asarray(img), np.asarray(tv[3][0]))
    sub = ds.subset([7, 0])
    assert sub.ids.tolist() == ["n03/only.jpg", "n01/A.png"] and sub.paths == [ds.paths[7], ds.paths[0]]
    x, y, i = sub.to_torch(transform=torchvision.transforms.functional.pil_to_tensor)[0]
    assert x.shape == (3, 5, 6) and y == 2 and i == 0


def test_imagefolder_train_val_layout(tmp_path, rng):
    make_image_tree(tmp_path / "tree" / "train", rng)
    make_image_tree(tmp_path / "tree" / "val", rng)
    shutil.rmtree(tmp_path / "tree" / "val" / "n02")
    val = load_dataset("imagefolder", "val", root=tmp_path / "tree")
    assert val.class_names == ["n01", "n03"] and val.root == str(tmp_path / "tree" / "val")
    assert len(load_dataset("imagefolder", "train", root=tmp_path / "tree")) == 8
    with pytest.raises(DatasetNotFoundError, match="no test/ folder"):
        load_dataset("imagefolder", "test", root=tmp_path / "tree")
    with pytest.raises(DatasetNotFoundError, match="not a folder"):
        load_dataset("imagefolder", root=tmp_path / "missing")
    with pytest.raises(ValueError, match="cannot be downloaded"):
        load_dataset("imagefolder", root=tmp_path / "tree", download=True)


# ----------------------------------------------------------------------------------------------------------
# download=True through torchvision, without network
# ----------------------------------------------------------------------------------------------------------
def test_download_fashion_mnist_via_torchvision(tmp_path, rng, monkeypatch, no_system_dirs):
    arrs = mnist_arrays(rng)
    calls = []

    def fake_download_and_extract_archive(url, download_root, extract_root=None, filename=None, md5=None,
                                          remove_finished=False):
        calls.append(filename)
        prefix, kind = filename.split("-")[0], filename.split("-")[1]
        arr = arrs[prefix][0 if kind == "images" else 1]
        payload = idx_bytes(arr)
        Path(download_root, filename).write_bytes(gzip.compress(payload))
        Path(download_root, filename[: -len(".gz")]).write_bytes(payload)

    monkeypatch.setattr(torchvision.datasets.mnist, "download_and_extract_archive",
                        fake_download_and_extract_archive)
    ds = load_dataset("fashion_mnist", "train", root=tmp_path, download=True)
    assert sorted(calls) == sorted(f for f, _ in torchvision.datasets.FashionMNIST.resources)
    assert ds.root == str(tmp_path / "FashionMNIST" / "raw")
    np.testing.assert_array_equal(ds.images, arrs["train"][0])
    np.testing.assert_array_equal(ds.labels, arrs["train"][1])
    load_dataset("fashion_mnist", "test", root=tmp_path, download=True)
    assert len(calls) == 4  # files present: no second download


def test_download_cifar10_stl10_svhn_via_torchvision(tmp_path, rng, monkeypatch, tv_no_md5):
    written = {}

    def fake_archive(url, download_root, extract_root=None, filename=None, md5=None, remove_finished=False):
        if "cifar" in url:
            written["cifar10"] = write_cifar10(Path(download_root) / "cifar-10-batches-py", rng)
        else:
            written["stl10"] = write_stl10(Path(download_root) / "stl10_binary", rng)

    def fake_url(url, root, filename=None, md5=None, max_redirect_hops=3):
        written["svhn"] = write_svhn(Path(root) / filename, rng)

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", fake_archive)
    monkeypatch.setattr(torchvision.datasets.stl10, "download_and_extract_archive", fake_archive)
    monkeypatch.setattr(torchvision.datasets.svhn, "download_url", fake_url)

    c = load_dataset("cifar10", "test", root=tmp_path, download=True)
    np.testing.assert_array_equal(c.labels, written["cifar10"]["test"][1])
    s = load_dataset("stl10", "unlabeled", root=tmp_path, download=True)
    np.testing.assert_array_equal(s.images, written["stl10"]["unlabeled"][0])
    v = load_dataset("svhn", "test", root=tmp_path, download=True)
    assert v.root == str(tmp_path / "svhn")
    np.testing.assert_array_equal(v.images[0], written["svhn"][0][..., 0])


def test_download_failure_is_dataset_not_found(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="downloading cifar100 failed") as err:
        load_dataset("cifar100", root=tmp_path, download=True)
    assert "cifar-100-python.tar.gz" in str(err.value)
