"""Per-dataset loaders, each ``loader(split, *, root, download) -> ImageDataset``: locate -> (download) -> parse.

Collected in :data:`_LOADERS` (canonical name -> loader), which :func:`uslkit.data.load_dataset` dispatches on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .dataset import CorruptDatasetError, DatasetNotFoundError, ImageDataset
from .formats import (
    _check_labels,
    _download_with,
    _find,
    _locate,
    _not_found,
    _read_cifar_batch,
    _read_idx,
    _read_medmnist_npz,
    _read_pickle,
    _read_stl_images,
    _read_stl_labels,
    _read_svhn_mat,
    _require_keys,
    _stl_count,
    _torchvision,
)

__all__ = ["IMG_EXTENSIONS"]

# Where Debian's ``dataset-fashion-mnist`` package puts the four idx.gz files (searched after ``root``).
_FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# The ``medmnist`` package's default download folder (searched after ``root``).
_MEDMNIST_HOME = Path("~/.medmnist")

# File extensions torchvision's ImageFolder accepts (case-insensitive); kept identical so indices match.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                          "Bag", "Ankle boot"]
_DIGIT_CLASSES = [str(d) for d in range(10)]
_STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
_BLOODMNIST_CLASSES = ["basophil", "eosinophil", "erythroblast",
                       "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)", "lymphocyte",
                       "monocyte", "neutrophil", "platelet"]


def _array_dataset(name: str, split: str, images: np.ndarray, labels: np.ndarray, class_names: list[str],
                   root: Path, ids: np.ndarray | None = None) -> ImageDataset:
    if ids is None:
        ids = np.arange(len(labels), dtype=np.int64)
    return ImageDataset(name=name, split=split, images=images, labels=labels.astype(np.int64, copy=False),
                        class_names=list(class_names), ids=ids, root=str(root))


# ----------------------------------------------------------------------------------------------------------
# per-dataset loaders: locate -> (download) -> parse
# ----------------------------------------------------------------------------------------------------------
def _load_digits(split: str, *, root: Path, download: bool) -> ImageDataset:
    """sklearn's bundled 8x8 digits, pixel values 0..16 scaled to 0..255 (``rint(v * 255 / 16)``)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    labels = d.target.astype(np.int64)
    ids = np.arange(len(labels), dtype=np.int64)
    if split != "train":
        test = np.zeros(len(labels), dtype=bool)
        for c in range(10):
            test[np.flatnonzero(labels == c)[4::5]] = True
        ids = ids[test] if split == "test" else ids[~test]
    return _array_dataset("digits", split, images[ids], labels[ids], _DIGIT_CLASSES,
                          Path("sklearn.datasets.load_digits"), ids)


def _mnist_like(name: str, split: str, *, root: Path, download: bool) -> ImageDataset:
    fashion = name == "fashion_mnist"
    tv_dir = root / ("FashionMNIST" if fashion else "MNIST") / "raw"
    dirs = [tv_dir, root / name] + ([root / "fashion-mnist", _FASHION_MNIST_SYSTEM_DIR] if fashion else [])
    prefix = "train" if split == "train" else "t10k"
    groups = [(f"{prefix}-images-idx3-ubyte", f"{prefix}-images-idx3-ubyte.gz"),
              (f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels-idx1-ubyte.gz")]
    if fashion:
        howto = ("`apt-get install -y dataset-fashion-mnist` (Debian/Ubuntu; installs the four idx.gz files in "
                 f"{_FASHION_MNIST_SYSTEM_DIR}), or load_dataset('fashion_mnist', root={str(root)!r}, "
                 f"download=True) (torchvision, into {tv_dir}), or put the four idx.gz files from "
                 f"https://github.com/zalandoresearch/fashion-mnist in {root / name}")
    else:
        howto = (f"load_dataset('mnist', root={str(root)!r}, download=True) (torchvision, into {tv_dir}), or put "
                 f"the four idx.gz files from https://yann.lecun.com/exdb/mnist/ in {root / name}")
    fetch = _torchvision("FashionMNIST" if fashion else "MNIST", str(root), train=False, download=True)
    folder, (img_path, lab_path) = _locate(name, split, dirs, groups, howto, fetch=fetch if download else None)
    images = _read_idx(img_path, ndim=3)
    labels = _check_labels(lab_path, _read_idx(lab_path, ndim=1), n=images.shape[0], low=0, high=9)
    classes = _FASHION_MNIST_CLASSES if fashion else _DIGIT_CLASSES
    return _array_dataset(name, split, images, labels, classes, folder)


def _load_mnist(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _mnist_like("mnist", split, root=root, download=download)


def _load_fashion_mnist(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _mnist_like("fashion_mnist", split, root=root, download=download)


def _cifar(name: str, split: str, *, root: Path, download: bool) -> ImageDataset:
    ten = name == "cifar10"
    folder_name = "cifar-10-batches-py" if ten else "cifar-100-python"
    dirs = [root / folder_name, root / name / folder_name, root / name]
    if ten:
        files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        meta, meta_key, label_key, n_classes = "batches.meta", "label_names", "labels", 10
    else:
        files = [split]
        meta, meta_key, label_key, n_classes = "meta", "fine_label_names", "fine_labels", 100
    groups = [(f,) for f in files + [meta]]
    archive = "cifar-10-python.tar.gz" if ten else "cifar-100-python.tar.gz"
    howto = (f"load_dataset({name!r}, root={str(root)!r}, download=True) (torchvision, into {dirs[0]}), or "
             f"download https://www.cs.toronto.edu/~kriz/{archive} (see https://www.cs.toronto.edu/~kriz/cifar.html) "
             f"and extract it in {root}")
    fetch = _torchvision("CIFAR10" if ten else "CIFAR100", str(root), train=False, download=True)
    folder, paths = _locate(name, split, dirs, groups, howto, fetch=fetch if download else None)
    meta_d = _read_pickle(paths[-1])
    _require_keys(paths[-1], meta_d, [meta_key])
    class_names = [str(c) for c in meta_d[meta_key]]
    if len(class_names) != n_classes:
        raise CorruptDatasetError(f"{paths[-1]}: {meta_key} has {len(class_names)} names, expected {n_classes}")
    parts = [_read_cifar_batch(p, label_key=label_key, num_classes=n_classes) for p in paths[:-1]]
    images = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    return _array_dataset(name, split, images, labels, class_names, folder)


def _load_cifar10(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _cifar("cifar10", split, root=root, download=download)


def _load_cifar100(split: str, *, root: Path, download: bool) -> ImageDataset:
    return _cifar("cifar100", split, root=root, download=download)


def _load_stl10(split: str, *, root: Path, download: bool) -> ImageDataset:
    dirs = [root / "stl10_binary", root / "stl10" / "stl10_binary", root / "stl10"]
    parts = {"train": [("train_X.bin", "train_y.bin")], "test": [("test_X.bin", "test_y.bin")],
             "unlabeled": [("unlabeled_X.bin", None)],
             "train+unlabeled": [("train_X.bin", "train_y.bin"), ("unlabeled_X.bin", None)]}[split]
    groups = [(f,) for pair in parts for f in pair if f is not None]
    howto = (f"load_dataset('stl10', root={str(root)!r}, download=True) (torchvision, into {dirs[0]}; 2.6 GB), "
             "or download http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz "
             f"(see https://cs.stanford.edu/~acoates/stl10/) and extract it in {root}")
    fetch = _torchvision("STL10", str(root), split="test", download=True)
    folder, _ = _locate("stl10", split, dirs, groups, howto, fetch=fetch if download else None)
    counts = [_stl_count(folder / x_name) for x_name, _ in parts]
    labels = [np.full(n, -1, dtype=np.int64) if y_name is None else _read_stl_labels(folder / y_name, n=n)
              for (_, y_name), n in zip(parts, counts)]
    images = np.empty((sum(counts), 96, 96, 3), dtype=np.uint8)  # filled in place: no concatenate copy
    for (x_name, _), start, n in zip(parts, np.cumsum([0] + counts), counts):
        _read_stl_images(folder / x_name, images[start : start + n])
    class_file = folder / "class_names.txt"
    class_names = _STL10_CLASSES
    if class_file.is_file():
        class_names = [s for s in class_file.read_text().splitlines() if s.strip()]
        if len(class_names) != 10:
            raise CorruptDatasetError(f"{class_file}: {len(class_names)} class names, expected 10")
    return _array_dataset("stl10", split, images, np.concatenate(labels), class_names, folder)


def _load_svhn(split: str, *, root: Path, download: bool) -> ImageDataset:
    dirs = [root / "svhn", root / "SVHN", root]
    groups = [(f"{split}_32x32.mat",)]
    howto = (f"load_dataset('svhn', {split!r}, root={str(root)!r}, download=True) (torchvision, into "
             f"{dirs[0]}), or download http://ufldl.stanford.edu/housenumbers/{split}_32x32.mat "
             f"(see http://ufldl.stanford.edu/housenumbers/) into {dirs[0]}")
    fetch = _torchvision("SVHN", str(dirs[0]), split=split, download=True)
    folder, (path,) = _locate("svhn", split, dirs, groups, howto, fetch=fetch if download else None)
    images, labels = _read_svhn_mat(path)
    return _array_dataset("svhn", split, images, labels, _DIGIT_CLASSES, folder)


def _load_bloodmnist(split: str, *, root: Path, download: bool) -> ImageDataset:
    dirs = [root, root / "bloodmnist", root / "medmnist", _MEDMNIST_HOME.expanduser()]
    groups = [("bloodmnist.npz",)]
    howto = (f"pip install 'uslkit[medmnist]' (or pip install medmnist), then load_dataset('bloodmnist', "
             f"root={str(root)!r}, download=True); or download bloodmnist.npz (28x28) from https://medmnist.com/ "
             f"(Zenodo) into {root}")
    hit = _find(dirs, groups)
    if hit is None and download:
        try:
            import medmnist
        except ImportError as e:
            raise DatasetNotFoundError(
                "bloodmnist.npz not found and downloading it needs the optional medmnist package, which is "
                f"not installed ({e}).\nTo get it: {howto}"
            ) from e
        root.mkdir(parents=True, exist_ok=True)  # medmnist refuses a root that does not exist
        _download_with("bloodmnist", howto,
                       lambda: medmnist.BloodMNIST(split=split, root=str(root), download=True))
        hit = _find(dirs, groups)
    if hit is None:
        raise _not_found("bloodmnist", split, dirs, groups, howto)
    folder, (path,) = hit
    images, labels = _read_medmnist_npz(path, split, num_classes=len(_BLOODMNIST_CLASSES))
    return _array_dataset("bloodmnist", split, images, labels, _BLOODMNIST_CLASSES, folder)


def _load_imagefolder(split: str, *, root: Path, download: bool) -> ImageDataset:
    """A folder of class sub-folders, indexed exactly as ``torchvision.datasets.ImageFolder`` does.

    Classes are the sorted names of the sub-folders (``os.scandir``, hidden ones included, as torchvision);
    within a class, ``sorted(os.walk(class_dir, followlinks=True))`` then sorted file names, keeping files
    whose lower-cased name ends in :data:`IMG_EXTENSIONS`. So index ``i`` here is index ``i`` of
    ``ImageFolder(split_dir)``. Unlike torchvision, a class folder without images is allowed (it keeps its
    class index).
    """
    if download:
        raise ValueError("imagefolder cannot be downloaded; pass download=False and root=<your image folder>")
    howto = ("pass root=<folder> where <folder>/<class>/<image> holds the images (e.g. ImageNet's wnid "
             "folders), or <folder>/<split>/<class>/<image> for a tree with train/ and val/")
    split_dir = _imagefolder_split_dir(root, split, howto)
    classes = sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"imagefolder: no class sub-folders in {split_dir}.\nTo use it: {howto}")
    paths, labels, ids = [], [], []
    for label, cls in enumerate(classes):
        class_dir = os.path.join(split_dir, cls)
        for walk_root, _, fnames in sorted(os.walk(class_dir, followlinks=True)):
            for fname in sorted(fnames):
                if fname.lower().endswith(IMG_EXTENSIONS):
                    path = os.path.join(walk_root, fname)
                    paths.append(os.path.abspath(path))
                    labels.append(label)
                    ids.append(Path(os.path.relpath(path, split_dir)).as_posix())
    if not paths:
        raise DatasetNotFoundError(f"imagefolder: no image files ({', '.join(IMG_EXTENSIONS)}) under "
                                   f"{split_dir}.\nTo use it: {howto}")
    return ImageDataset(name="imagefolder", split=split, images=None, labels=np.asarray(labels, dtype=np.int64),
                        class_names=classes, ids=np.asarray(ids, dtype=str), paths=paths, root=str(split_dir))


def _imagefolder_split_dir(root: Path, split: str, howto: str) -> Path:
    """``root/<split>`` if it exists; for ``train``, ``root`` itself when it has no split folders."""
    if not root.is_dir():
        raise DatasetNotFoundError(f"imagefolder: {root} is not a folder.\nTo use it: {howto}")
    if (root / split).is_dir():
        return root / split
    split_like = [s for s in ("train", "val", "test") if (root / s).is_dir()]
    if split == "train" and not split_like:
        return root
    raise DatasetNotFoundError(f"imagefolder: no {split}/ folder in {root} (it has: "
                               f"{', '.join(split_like) or 'no train/val/test folders'}).\nTo use it: {howto}")


_LOADERS: dict[str, Callable[..., ImageDataset]] = {
    "digits": _load_digits,
    "mnist": _load_mnist,
    "fashion_mnist": _load_fashion_mnist,
    "cifar10": _load_cifar10,
    "cifar100": _load_cifar100,
    "stl10": _load_stl10,
    "svhn": _load_svhn,
    "bloodmnist": _load_bloodmnist,
    "imagefolder": _load_imagefolder,
}
