"""Encoders and embedding extraction, cached as ``.npy`` plus a JSON sidecar.

Encoders (``ENCODERS``): ``pixels`` (pixels in [0, 1], optionally PCA to ``pca`` dimensions, see
:func:`fit_pca`; always fitted on the ``train`` split so train and test share one space); ``resnet18`` /
``resnet50`` (torchvision ImageNet models, pooled 512 / 2048-d features, images resized to ``image_size``,
224 by default; ``weights="none"``: a seeded random network); ``clip_vit_b16`` (OpenCLIP ViT-B/16 image
features, the ``clip`` extra); ``ckpt:<path>``, a kit-trained model (:func:`uslkit.train.models.load_model`,
plain non-EMA weights) in eval mode on :func:`uslkit.train.augment.test_transform` images, returning the
backbone's pooled features ``model.features(x)`` (``features="backbone"``, default) or the projection
head's output ``projector(model.features(x))`` (``features="head"``; the MLP a SimCLR, MSF or CMSF run stores
as ``projector``, a MoCo v2 run as ``head_q``, in its ``model.pt``); its sidecar records the checkpoint's sha256
and arch.

Every output is float32 ``(n, dim)``, L2-normalised row-wise, row ``i`` = sample id ``dataset.ids[i]``.
Features each selection method was run on: USL (Wang, Lian & Yu 2022) on the L2-normalised projection-head
output of a self-supervised model (USL reference code: CLD's 128-d projection on CIFAR, MoCo v2's
2048-2048-128 MLP head on ImageNet), i.e. ``features="head"``; TypiClust (Hacohen et al. 2022) and
ProbCover (Yehuda et al. 2022) on a SimCLR ResNet-18's 512-d backbone output, and K-means (Pourahmadi et
al. 2022) on a frozen self-supervised backbone, i.e. ``features="backbone"``.

Caching: :func:`compute_embeddings` stores ``<cache_dir>/<dataset>/<split>/<tag>.npy`` and a sidecar
``<tag>.json`` (dataset, split, encoder, parameters, n, dim, data fingerprint, seed, provenance). A cache
is reused only when its sidecar matches the request field by field; otherwise it is recomputed with a
warning naming the field. An explicit ``out`` file is never silently replaced (``overwrite=True``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from ._pca import PCAModel, fit_pca
from ._validate import check_choice, check_positive_int, check_seed

__all__ = [
    "ENCODERS",
    "FEATURES",
    "EmbeddingMismatchError",
    "WeightsUnavailableError",
    "embed_dataset",
    "compute_embeddings",
    "save_embeddings",
    "load_embeddings",
    "embedding_request",
    "cache_path",
    "l2_normalize",
    "fit_pca",
    "PCAModel",
]

log = logging.getLogger(__name__)

ENCODERS = ("pixels", "resnet18", "resnet50", "clip_vit_b16")
#: what a ``ckpt:<path>`` encoder returns: the backbone's pooled features or the projection head's output
FEATURES = ("backbone", "head")
SIDECAR_FORMAT = "uslkit-embeddings"
SIDECAR_VERSION = 1
# Fields of the sidecar that must equal the request for a cached file to be reused.
_MATCH_FIELDS = ("format", "format_version", "dataset", "split", "encoder", "params", "seed", "n",
                 "data_fingerprint")

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class EmbeddingMismatchError(ValueError):
    """An existing embedding file does not match the request (and may not be replaced)."""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or read; the message says where to put them."""


# ----------------------------------------------------------------------------------------------------------
# small numerical pieces
# ----------------------------------------------------------------------------------------------------------
def l2_normalize(x: np.ndarray, *, eps: float = 1e-12, dtype=np.float32) -> np.ndarray:
    """Row-wise ``x / max(||x||_2, eps)``, computed in ``dtype``; all-zero rows stay zero.

    Shape ``(n, d) -> (n, d)``, C-contiguous ``dtype`` (float32 by default). ``eps=0`` divides by the norm
    itself, for callers that have refused zero rows.
    """
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, eps), dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# encoders
# ----------------------------------------------------------------------------------------------------------
def _pixels(dataset) -> np.ndarray:
    if dataset.images is None:
        raise ValueError(
            f"encoder 'pixels' needs in-memory images; dataset {dataset.name!r} is file-based "
            "(use a network encoder such as resnet18, or load a dataset of arrays)"
        )
    imgs = dataset.images
    return imgs.reshape(imgs.shape[0], -1).astype(np.float32) / 255.0


def _torch_encoder(encoder: str, weights: str, seed: int):
    """Build a torchvision ResNet (fc removed) or OpenCLIP model; returns (model, feature_dim)."""
    import torch

    if encoder in ("resnet18", "resnet50"):
        import torchvision

        ctor = getattr(torchvision.models, encoder)
        if weights == "none":
            torch.manual_seed(seed)
            model = ctor(weights=None)
        else:
            enum = {"resnet18": torchvision.models.ResNet18_Weights,
                    "resnet50": torchvision.models.ResNet50_Weights}[encoder]
            w = enum.IMAGENET1K_V1 if weights == "imagenet" else enum[weights]
            try:
                model = ctor(weights=w)
            except Exception as e:  # URLError, HTTPError, socket errors, corrupt file
                hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name
                raise WeightsUnavailableError(
                    f"could not load the ImageNet weights for {encoder} ({type(e).__name__}: {e}). "
                    f"They download from {w.url}; offline, copy that file to {hub} "
                    "(or set TORCH_HOME), or pass weights='none' for a random network."
                ) from e
        dim = model.fc.in_features
        model.fc = torch.nn.Identity()
        return model, dim
    if encoder == "clip_vit_b16":
        try:
            import open_clip
        except ImportError as e:
            raise ImportError(
                "encoder 'clip_vit_b16' needs open_clip: pip install -e '.[clip]'"
            ) from e
        pretrained = None if weights == "none" else ("openai" if weights == "imagenet" else weights)
        try:
            model, _, _ = open_clip.create_model_and_transforms("ViT-B-16", pretrained=pretrained)
        except Exception as e:
            raise WeightsUnavailableError(
                f"could not load OpenCLIP ViT-B-16 weights {pretrained!r} ({type(e).__name__}: {e}); "
                "they download from the model hub on first use"
            ) from e
        return _ClipImage(model), model.visual.output_dim
    raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS}")


class _ClipImage:
    """Wraps an OpenCLIP model so calling it returns image features."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        return self.model.encode_image(x)

    def to(self, device):
        self.model = self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self


def _network_features(dataset, encoder: str, *, weights: str, image_size: int, batch_size: int,
                      device, seed: int, progress: bool, num_workers: int) -> np.ndarray:
    import torch
    from torchvision.transforms import v2 as T

    from .device import resolve_device

    dev = resolve_device(device)
    model, dim = _torch_encoder(encoder, weights, seed)
    model = model.to(dev).eval()
    if encoder == "clip_vit_b16":
        mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    else:
        mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    transform = T.Compose([
        T.ToImage(),
        T.RGB(),
        T.Resize(image_size, antialias=True),
        T.CenterCrop(image_size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(mean, std),
    ])
    amp = torch.autocast("cuda", dtype=torch.float16) if dev.type == "cuda" else contextlib.nullcontext()
    return _encode_all(dataset, model, dim, transform, dev=dev, amp=amp, tag=encoder, batch_size=batch_size,
                       num_workers=num_workers, progress=progress)


def _encode_all(dataset, encode, dim: int, transform, *, dev, tag: str, batch_size: int, num_workers: int,
                progress: bool, amp=None) -> np.ndarray:
    """``encode(transform(image))`` of every sample in order, in batches: float32 ``(len(dataset), dim)``."""
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    loader = DataLoader(dataset.to_torch(transform=transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=dev.type == "cuda")
    out = np.empty((len(dataset), dim), dtype=np.float32)
    pos = 0
    with torch.inference_mode(), amp or contextlib.nullcontext():
        for batch in tqdm(loader, desc=f"embed {dataset.name}/{dataset.split} [{tag}]", disable=not progress,
                          unit="batch"):
            f = encode(batch[0].to(dev, non_blocking=True)).float().cpu().numpy()
            out[pos : pos + len(f)] = f
            pos += len(f)
    if pos != len(dataset):  # pragma: no cover - defensive
        raise RuntimeError(f"extracted {pos} embeddings for {len(dataset)} samples")
    return out


def _ckpt_path(encoder: str) -> Path:
    """The checkpoint file of a ``ckpt:<path>`` encoder; ``FileNotFoundError`` naming it when missing."""
    raw = encoder[len("ckpt:"):]
    if not raw:
        raise ValueError("encoder 'ckpt:' needs a path: 'ckpt:<path to a model.pt>'")
    path = Path(raw).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} of encoder {encoder!r} does not exist")
    return path


def _canonical_encoder(encoder: str) -> str:
    """``ckpt:<path>`` with the absolute path (one spelling per file); other encoder names unchanged."""
    if isinstance(encoder, str) and encoder.startswith("ckpt:"):
        return "ckpt:" + str(_ckpt_path(encoder).resolve())
    return encoder


def _ckpt_params(path: Path, features: str) -> dict[str, Any]:
    """What identifies a checkpoint's embedding: its sha256, arch and (only when not the default, so backbone
    sidecars stay as they were) ``features``."""
    from .train.models import read_checkpoint

    obj = read_checkpoint(path)
    params = {"checkpoint_sha256": _io.file_sha256(path), "arch": dict(obj["arch"])}
    if features == "head":
        _head_state(obj, path)
        params["features"] = "head"
    return params


#: the projection heads a kit run exports, by child name: SimCLR's, MSF's and CMSF's ``projector``
#: (Linear-BN-ReLU-Linear), MoCo v2's ``head_q`` (Linear-ReLU-Linear)
_HEADS = ("projector", "head_q")


def _head_state(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """The projection head's weights in a read checkpoint: ``extra["extras"][name]`` of a model file (what a
    SimCLR, MoCo, MSF or CMSF run writes), ``extras[name]`` of a training state, ``name`` in :data:`_HEADS`;
    ``ValueError`` when absent."""
    extras = obj.get("extras") or (obj.get("extra") or {}).get("extras") or {}
    state = next((extras[n] for n in _HEADS if isinstance(extras, dict) and isinstance(extras.get(n), dict)
                  and extras[n]), None)
    if state is None:
        learner = (obj.get("extra") or {}).get("learner") or (obj.get("config") or {}).get("learner")
        raise ValueError(
            f"checkpoint {path} has no projection head (learner {learner!r}, format {obj['format']!r}); a SimCLR, "
            "MoCo, MSF or CMSF run's model.pt or state.pt holds one; use features='backbone' for the pooled features"
        )
    return state


def _projection(net, path: Path):
    """``net`` followed by the checkpoint's projection head: ``(module, proj_dim)``. The head is rebuilt from its
    weights: a ``Linear`` at each index with a 2-d ``weight``, a ``BatchNorm1d`` at each with running statistics,
    a ``ReLU`` at each index without parameters (the heads of :data:`_HEADS`)."""
    import torch
    from torch import nn

    from .train.models import read_checkpoint

    state = _head_state(read_checkpoint(path), path)
    try:
        idx = sorted({int(k.split(".", 1)[0]) for k in state})
        layers = []
        for i in range(idx[-1] + 1):
            w = state.get(f"{i}.weight")
            if w is None:
                layers.append(nn.ReLU())
            elif f"{i}.running_mean" in state:
                layers.append(nn.BatchNorm1d(int(w.shape[0])))
            elif getattr(w, "ndim", 0) == 2:
                layers.append(nn.Linear(int(w.shape[1]), int(w.shape[0]), bias=f"{i}.bias" in state))
            else:
                raise ValueError(f"layer {i} is neither Linear nor BatchNorm1d")
        head = nn.Sequential(*layers)
        head.load_state_dict(state)
        proj_dim = int(next(m for m in reversed(layers) if isinstance(m, nn.Linear)).out_features)
        if not isinstance(layers[0], nn.Linear) or layers[0].in_features != net.feat_dim:
            raise ValueError(f"its first layer does not take the {net.feat_dim}-d features")
    except (IndexError, RuntimeError, ValueError, StopIteration) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"checkpoint {path}: its projection head is not an MLP of Linear, BatchNorm1d and ReLU "
                         f"layers over {net.feat_dim}-d features ({first})") from e

    class _Projected(nn.Module):
        def __init__(self):
            super().__init__()
            self.net, self.projector = net, head

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.projector(self.net.features(x))

    return _Projected(), proj_dim


def _ckpt_features(dataset, encoder: str, *, image_size, batch_size: int, device, progress: bool,
                   num_workers: int, features: str = "backbone") -> np.ndarray:
    """``model.features(x)`` (``features="backbone"``) or ``projector(model.features(x))`` (``"head"``) of a
    kit checkpoint in eval mode, ``x = test_transform(kind)(image)``."""
    from .device import resolve_device
    from .train.augment import image_kind, test_transform
    from .train.batches import image_channels
    from .train.models import load_model

    path = _ckpt_path(encoder)
    dev = resolve_device(device)
    model = load_model(path)
    have, need = int(model.arch.get("in_channels", 3)), image_channels(dataset)
    if have != need:
        raise ValueError(
            f"checkpoint {path} takes in_channels={have} but dataset {dataset.name}/{dataset.split} has "
            f"{need}-channel images"
        )
    model = model.to(dev).eval()
    encode, dim = model.features, model.feat_dim
    if features == "head":
        encode, dim = _projection(model, path)
        encode.to(dev).eval()
    transform = test_transform(image_kind(dataset), image_size=image_size)
    return _encode_all(dataset, encode, dim, transform, dev=dev, tag=path.name, batch_size=batch_size,
                       num_workers=num_workers, progress=progress)


def _check_encoder_params(encoder: str, pca, weights: str, image_size, features: str = "backbone") -> dict[str, Any]:
    if not isinstance(encoder, str):
        raise ValueError(f"encoder must be a string, got {encoder!r}")
    if encoder not in ENCODERS and not encoder.startswith("ckpt:"):
        raise ValueError(f"unknown encoder {encoder!r}; choose one of {ENCODERS} or 'ckpt:<path>'")
    check_choice(features, FEATURES, name="features")
    if features == "head" and not encoder.startswith("ckpt:"):
        raise ValueError(f"features='head' needs a 'ckpt:<path>' encoder with a projection head; {encoder!r} has none")
    params: dict[str, Any] = {}
    if pca is not None:
        params["pca"] = check_positive_int(pca, name="pca")
        params["pca_fit_split"] = "train"
    if encoder.startswith("ckpt:"):
        params.update(_ckpt_params(_ckpt_path(encoder), features))
        params["image_size"] = None if image_size is None else check_positive_int(image_size, name="image_size")
    elif encoder != "pixels":
        params["weights"] = weights
        params["image_size"] = check_positive_int(image_size if image_size is not None else 224,
                                                  name="image_size", minimum=8)
    return params


def embed_dataset(dataset, encoder: str = "pixels", *, pca: int | None = None, seed: int = 0,
                  weights: str = "imagenet", image_size: int | None = None, features: str = "backbone",
                  batch_size: int = 256, device=None, progress: bool = True, num_workers: int = 0,
                  pca_fit=None) -> np.ndarray:
    """Embed every sample of ``dataset`` with ``encoder``; no caching (see :func:`compute_embeddings`).

    Args:
        dataset: an :class:`uslkit.data.ImageDataset`.
        encoder: one of :data:`ENCODERS`, or ``"ckpt:<path>"`` for a kit-trained checkpoint.
        pca: project to this many dimensions (fitted on ``pca_fit``, default ``dataset`` itself).
        seed: seeds randomized PCA and random-weight networks.
        weights: ``"imagenet"`` (pretrained), ``"none"`` (random init) or a torchvision weight name
            (ignored by ``ckpt:`` encoders).
        image_size: network input size (default 224; ``ckpt:`` encoders: the images' own size for 28/32-px
            datasets, 224 for larger ones).
        features: ``ckpt:`` encoders only: ``"backbone"`` (pooled features) or ``"head"`` (the projection
            head's output, what USL selects on; see the module docstring).
        batch_size, device, num_workers, progress: extraction settings (device ``None`` = CUDA if present).
        pca_fit: the dataset to fit PCA on (the train split, so test embeddings share its space).

    Returns:
        float32 array ``(len(dataset), dim)``, rows L2-normalised.

    Raises:
        FileNotFoundError: a ``ckpt:`` checkpoint does not exist.
        ValueError: unknown encoder, bad parameters, a checkpoint that is not a uslkit model, whose
            ``in_channels`` do not match the dataset's images, or (``features="head"``) that has no
            projection head.
    """
    seed = check_seed(seed)
    params = _check_encoder_params(encoder, pca, weights, image_size, features)
    batch_size = check_positive_int(batch_size, name="batch_size")
    if encoder == "pixels":
        feats = _pixels(dataset)
        fit_feats = feats if pca_fit is None else _pixels(pca_fit)
    elif encoder.startswith("ckpt:"):
        kw = dict(image_size=params["image_size"], batch_size=batch_size, device=device, progress=progress,
                  num_workers=num_workers, features=features)
        feats = _ckpt_features(dataset, encoder, **kw)
        fit_feats = feats if (pca is None or pca_fit is None) else _ckpt_features(pca_fit, encoder, **kw)
    else:
        kw = dict(weights=weights, image_size=params["image_size"], batch_size=batch_size, device=device,
                  seed=seed, progress=progress, num_workers=num_workers)
        feats = _network_features(dataset, encoder, **kw)
        fit_feats = feats if (pca is None or pca_fit is None) else _network_features(pca_fit, encoder, **kw)
    if pca is not None:
        if pca > feats.shape[1]:
            raise ValueError(f"pca={pca} is larger than the encoder's {feats.shape[1]} dimensions")
        model = fit_pca(fit_feats, pca, seed=seed)
        feats = model.transform(feats)
    if not np.isfinite(feats).all():
        raise RuntimeError(f"encoder {encoder!r} produced NaN or infinite features")
    return l2_normalize(feats)


# ----------------------------------------------------------------------------------------------------------
# files and caching
# ----------------------------------------------------------------------------------------------------------
def save_embeddings(path: str | os.PathLike, emb: np.ndarray, meta: dict[str, Any], *,
                    overwrite: bool = False) -> Path:
    """Write ``emb`` to ``path`` (.npy) and ``meta`` to its sidecar ``path.with_suffix('.json')``.

    Both writes are atomic; the array is written first, so a sidecar never describes a missing array.
    Refuses to replace an existing file unless ``overwrite``.
    """
    path = Path(path)
    if path.suffix != ".npy":
        raise ValueError(f"embedding files end in .npy, got {path}")
    _io.check_can_write(path, overwrite=overwrite)
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    meta = dict(meta, n=int(emb.shape[0]), dim=int(emb.shape[1]), dtype="float32")
    _io.atomic_save_npy(path, emb)
    _io.atomic_write_json(path.with_suffix(".json"), meta)
    return path


def load_embeddings(path: str | os.PathLike, *, mmap: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
    """Read an embedding file and its sidecar; checks that the array matches the sidecar's n and dim.

    A plain ``.npy`` without sidecar loads with ``meta = {}``. Raises ``ValueError`` for a corrupt or
    truncated file or a shape that disagrees with the sidecar.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"embedding file {path} does not exist (make one with `uslkit embed`)")
    try:
        emb = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{path} is not a readable .npy file (corrupt or truncated?): {e}") from e
    side = path.with_suffix(".json")
    meta = _io.read_json(side) if side.exists() else {}
    if meta and (emb.ndim != 2 or [int(meta.get("n", -1)), int(meta.get("dim", -1))] != list(emb.shape)):
        raise ValueError(
            f"{path} has shape {emb.shape} but its sidecar records n={meta.get('n')}, dim={meta.get('dim')}"
        )
    return emb, meta


def _fingerprint(dataset) -> str:
    """sha1 over the dataset's ids, labels and (for array datasets) pixels: detects changed data."""
    h = hashlib.sha1()
    h.update(f"{dataset.name}|{dataset.split}|{len(dataset)}".encode())
    ids = np.asarray(dataset.ids)
    h.update(ids.astype(np.int64).tobytes() if ids.dtype.kind in "iu" else "\n".join(map(str, ids)).encode())
    h.update(np.asarray(dataset.labels, dtype=np.int64).tobytes())
    if dataset.images is not None:
        h.update(np.ascontiguousarray(dataset.images).data)
    return h.hexdigest()


def embedding_request(dataset, encoder: str, *, pca=None, seed: int = 0, weights: str = "imagenet",
                      image_size=None, features: str = "backbone") -> dict[str, Any]:
    """The sidecar fields that identify an embedding (everything a cache must match)."""
    return {
        "format": SIDECAR_FORMAT,
        "format_version": SIDECAR_VERSION,
        "dataset": dataset.name,
        "split": dataset.split,
        "encoder": _canonical_encoder(encoder),
        "params": _check_encoder_params(encoder, pca, weights, image_size, features),
        "seed": check_seed(seed),
        "n": len(dataset),
        "data_fingerprint": _fingerprint(dataset),
    }


def cache_path(cache_dir: str | os.PathLike, request: dict[str, Any]) -> Path:
    """``<cache_dir>/<dataset>/<split>/<encoder>[_pca<d>][_<weights>_<size>]_s<seed>.npy``.

    A ``ckpt:<path>`` encoder is tagged ``ckpt-<file stem>-<8 hex digits of the path's sha1>[_<size>][_head]``
    (one entry per checkpoint path and feature kind; a checkpoint rewritten in place is detected by the sha256
    in the sidecar's params).
    """
    p = request["params"]
    tag = request["encoder"]
    if tag.startswith("ckpt:"):
        ckpt = tag[len("ckpt:"):]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(ckpt).stem) or "model"
        tag = f"ckpt-{stem}-{hashlib.sha1(ckpt.encode()).hexdigest()[:8]}"
        if p.get("image_size") is not None:
            tag += f"_{p['image_size']}"
        if p.get("features", "backbone") != "backbone":
            tag += f"_{p['features']}"
    if "pca" in p:
        tag += f"_pca{p['pca']}"
    if "weights" in p:
        tag += f"_{p['weights']}_{p['image_size']}"
    tag += f"_s{request['seed']}"
    return Path(cache_dir) / request["dataset"] / request["split"] / f"{tag}.npy"


def _mismatch(meta: dict[str, Any], request: dict[str, Any]) -> str | None:
    for key in _MATCH_FIELDS:
        if json.loads(json.dumps(meta.get(key))) != json.loads(json.dumps(request.get(key))):
            return f"{key}: file has {meta.get(key)!r}, request is {request.get(key)!r}"
    return None


def _try_reuse(path: Path, request: dict[str, Any]) -> tuple[np.ndarray | None, str | None]:
    """Return (emb, None) when ``path`` holds exactly the requested embedding, else (None, reason)."""
    if not path.exists():
        return None, None
    try:
        emb, meta = load_embeddings(path)
    except ValueError as e:
        return None, str(e)
    if not meta:
        return None, f"{path} has no sidecar {path.with_suffix('.json').name}"
    why = _mismatch(meta, request)
    return (emb, None) if why is None else (None, why)


def compute_embeddings(dataset: str, *, split: str = "train", encoder: str = "pixels", pca: int | None = None,
                       seed: int = 0, root: str | os.PathLike = "data",
                       cache_dir: str | os.PathLike | None = "data/embeddings", out: str | os.PathLike | None = None,
                       overwrite: bool = False, weights: str = "imagenet", image_size: int | None = None,
                       features: str = "backbone", batch_size: int = 256, device=None, progress: bool = True,
                       download: bool = False, num_workers: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Load ``dataset``/``split``, embed it (or reuse a matching cache), and return ``(emb, meta)``.

    Args:
        dataset: a name known to :func:`uslkit.data.load_dataset`.
        out: an explicit output file. If it exists with a matching sidecar it is reused; if it exists and
            does not match, :class:`EmbeddingMismatchError` is raised unless ``overwrite=True``.
        cache_dir: where cached embeddings live when ``out`` is not given (``None`` disables caching).
            A mismatching or corrupt cache entry is recomputed and replaced, with a warning.
        Other arguments: as :func:`embed_dataset` and :func:`uslkit.data.load_dataset`.

    Returns:
        ``emb`` float32 ``(n, dim)`` L2-normalised, and its sidecar dict (with ``path`` and ``reused``).
    """
    from .data import load_dataset

    ds = load_dataset(dataset, split, root=root, download=download)
    request = embedding_request(ds, encoder, pca=pca, seed=seed, weights=weights, image_size=image_size,
                                features=features)
    target = Path(out) if out is not None else (cache_path(cache_dir, request) if cache_dir is not None else None)
    if target is not None:
        emb, why = _try_reuse(target, request)
        if emb is not None:
            log.info("reusing embeddings %s", target)
            meta = _io.read_json(target.with_suffix(".json"))
            return emb, dict(meta, path=str(target), reused=True)
        if why is not None:
            if out is not None and not overwrite:
                raise EmbeddingMismatchError(
                    f"{target} exists but does not match this request ({why}); "
                    "pass overwrite=True (--overwrite) to replace it"
                )
            if out is not None:  # the caller asked for the replacement with overwrite=True
                log.info("replacing %s: %s", target, why)
            else:
                warnings.warn(f"recomputing {target}: {why}", stacklevel=2)
    fit_ds = None
    if pca is not None and split != "train":
        fit_ds = load_dataset(dataset, "train", root=root, download=download)
    emb = embed_dataset(ds, encoder, pca=pca, seed=seed, weights=weights, image_size=image_size,
                        features=features, batch_size=batch_size, device=device, progress=progress,
                        num_workers=num_workers, pca_fit=fit_ds)
    meta = dict(request, **_io.provenance(), normalized="l2")
    if target is not None:
        save_embeddings(target, emb, meta, overwrite=True)
    meta = dict(meta, n=int(emb.shape[0]), dim=int(emb.shape[1]), dtype="float32")
    return emb, dict(meta, path=str(target) if target is not None else None, reused=False)
