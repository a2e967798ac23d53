"""Backbones for the training core, one :class:`Net` wrapper, and checkpoint files.

Every model is a :class:`Net`: an ``encoder`` mapping a float image batch ``(B, C, H, W)`` to pooled,
flattened features ``(B, feat_dim)``, and a ``head`` (``nn.Linear(feat_dim, num_classes)``, or
``nn.Identity()`` when ``num_classes == 0``, e.g. for SimCLR pre-training where a projection head is added
by the loss side). ``Net.arch`` is a JSON-able dict that rebuilds the same architecture with
``build_model(**arch)``; checkpoints store it next to the weights, so a file always says what it holds.

Architectures (:data:`MODELS`):

- ``cnn_small``: a 0.28 M-parameter CNN for 28x28 grey / 32x32 colour images, small enough to train on a
  CPU (:func:`_cnn_small`), 128-d.
- ``resnet18_cifar``: ResNet-18 with the CIFAR stem of He et al. (2016) as used by SimCLR / USL for
  CIFAR: a 3x3 stride-1 first convolution and no max-pool (torchvision's ResNet-18 otherwise), 512-d.
- ``wrn28_2``: Wide-ResNet-28-2 (Zagoruyko & Komodakis, BMVC 2016) exactly as FixMatch (Sohn et al.,
  NeurIPS 2020) trains it: pre-activation blocks, BatchNorm momentum 0.001, LeakyReLU(0.1), widths
  16/32/64/128, 1.47 M parameters with 10 classes, 128-d.
- ``resnet50``: torchvision's ResNet-50 (random init; ``weights=<local .pth>`` loads a file, nothing is
  ever downloaded), 2048-d; the ImageNet backbone of USL's ImageNet experiments.

Checkpoint file format ``uslkit-model`` version 1 (:func:`save_model`, written atomically)::

    {"format": "uslkit-model", "version": 1, "arch": {...}, "state_dict": {...}, "extra": {...},
     "uslkit_version": ..., "git_commit": ..., "created": ...}

It holds only tensors, dicts, lists, strings and numbers, so :func:`load_model` reads it with
``torch.load(weights_only=True)`` (no arbitrary unpickling). :func:`load_model` also reads the training
loop's ``uslkit-train-state`` files (``{"format": "uslkit-train-state", "arch": ..., "model": ...,
"ema": ...}``).
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from .. import _io

__all__ = [
    "MODELS",
    "MODEL_FORMAT",
    "TRAIN_STATE_FORMAT",
    "Net",
    "build_model",
    "save_model",
    "load_model",
    "read_checkpoint",
    "check_arch",
    "count_parameters",
]

MODELS = ("cnn_small", "resnet18_cifar", "wrn28_2", "resnet50")
MODEL_FORMAT = "uslkit-model"
MODEL_VERSION = 1
TRAIN_STATE_FORMAT = "uslkit-train-state"
_FORMATS = (MODEL_FORMAT, TRAIN_STATE_FORMAT)


# ----------------------------------------------------------------------------------------------------------
# the wrapper every model is
# ----------------------------------------------------------------------------------------------------------
class Net(nn.Module):
    """Encoder + linear head, with the arch dict that rebuilds it.

    Attributes:
        arch: ``{"name": str, "num_classes": int, "in_channels": int, **kwargs}``, JSON-able;
            ``build_model(**arch)`` builds the same architecture (freshly initialised).
        encoder: float ``(B, C, H, W)`` -> ``(B, feat_dim)`` features (after global pooling, flattened).
        head: ``nn.Linear(feat_dim, num_classes)``, or ``nn.Identity()`` when ``num_classes == 0``.
        feat_dim: width of the features.
    """

    def __init__(self, encoder: nn.Module, feat_dim: int, arch: dict[str, Any], head: nn.Module | None = None):
        super().__init__()
        self.arch = dict(arch)
        self.encoder = encoder
        self.feat_dim = int(feat_dim)
        n = int(arch["num_classes"])
        self.head = head if head is not None else (nn.Linear(self.feat_dim, n) if n > 0 else nn.Identity())

    @property
    def num_classes(self) -> int:
        """Outputs of the head (0: the head is the identity and ``forward`` returns features)."""
        return int(self.arch["num_classes"])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` float -> ``(B, feat_dim)`` pooled features."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` float -> ``(B, num_classes)`` logits (``(B, feat_dim)`` when ``num_classes == 0``)."""
        return self.head(self.encoder(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch}, feat_dim={self.feat_dim}"


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (elements) of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# ----------------------------------------------------------------------------------------------------------
# cnn_small
# ----------------------------------------------------------------------------------------------------------
def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _cnn_small(in_channels: int) -> tuple[nn.Module, int]:
    """A small VGG-style CNN: [conv-BN-ReLU](32) - pool - [conv-BN-ReLU]x2(64) - pool - [conv-BN-ReLU]x2(128)
    - global average pool, 128-d features.

    277,600 encoder parameters with 1 input channel (278,176 with 3); 278,890 with a 10-class head and
    1 channel. Input of any size >= 4x4 (28x28 -> 14x14 -> 7x7; 32x32 -> 16 -> 8; sklearn's 8x8 digits ->
    4 -> 2). Kaiming-normal (fan_out, ReLU) convolution init, as torchvision's ResNets. Step times:
    ``benchmarks/RESULTS.md``.
    """
    layers = _conv_bn_relu(in_channels, 32) + [nn.MaxPool2d(2)]
    layers += _conv_bn_relu(32, 64) + _conv_bn_relu(64, 64) + [nn.MaxPool2d(2)]
    layers += _conv_bn_relu(64, 128) + _conv_bn_relu(128, 128)
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    enc = nn.Sequential(*layers)
    for m in enc.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return enc, 128


# ----------------------------------------------------------------------------------------------------------
# resnet18_cifar, resnet50 (torchvision)
# ----------------------------------------------------------------------------------------------------------
def _resnet18_cifar(in_channels: int) -> tuple[nn.Module, int]:
    """torchvision ResNet-18 with the CIFAR stem (conv1 3x3 stride 1 padding 1, no max-pool), fc removed.

    This is the variant SimCLR (Chen et al., ICML 2020, appendix B.9) and USL's CIFAR code use for 32x32
    inputs; parameter names are torchvision's (``conv1``, ``layer1.0.conv1``, ...).
    """
    import torchvision

    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


def _resnet50(in_channels: int, weights: str | os.PathLike | None) -> tuple[nn.Module, int]:
    """torchvision ResNet-50 (``weights=None``: never downloads), fc removed, optionally loaded from a file.

    ``weights`` names a local ``.pth`` holding a torchvision ResNet-50 state dict (bare, or under a
    ``"state_dict"`` / ``"model"`` key; a ``module.`` prefix is stripped; ``fc.*`` entries are ignored).
    With ``in_channels == 1`` the first convolution is replaced by one whose kernel is the sum of the
    RGB kernels, so a grey image gives exactly the features of the same image replicated to RGB.
    """
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    net.fc = nn.Identity()
    if weights is not None:
        state = _read_weight_file(weights)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"weights file {weights} is not a torchvision ResNet-50 state dict: "
                f"missing {sorted(missing)[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {sorted(unexpected)[:5]}{'...' if len(unexpected) > 5 else ''}"
            )
    if in_channels == 1:
        old = net.conv1
        net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        with torch.no_grad():
            net.conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    return net, 2048


def _read_weight_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist (resnet50 never downloads weights)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"weights file {path} is not a readable torch state dict: {e}") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"weights file {path} does not hold a state dict (name -> tensor)")
    return _strip_prefix(obj)


def _strip_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """Remove a ``module.`` (DistributedDataParallel) or ``_orig_mod.`` (torch.compile) prefix on all keys."""
    for prefix in ("module.", "_orig_mod."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


# ----------------------------------------------------------------------------------------------------------
# wrn28_2 (FixMatch)
# ----------------------------------------------------------------------------------------------------------
_WRN_BN_MOMENTUM = 0.001  # TF's decay 0.999
_WRN_SLOPE = 0.1


class _WRNBlock(nn.Module):
    """Pre-activation residual block of FixMatch's WRN (google-research/fixmatch ``libml/models.py``).

    ``out = shortcut(x) + conv2(act(bn2(conv1(act(bn1(x))))))``. With ``activate_before_residual`` (the
    first block of the network) the shortcut also takes the activated input ``act(bn1(x))``, otherwise
    the raw ``x``; the shortcut is a 1x1 convolution when the width or stride changes.

    Deviation from kekmodel/FixMatch-pytorch: there, the first block of groups 2 and 3 applies ``conv1`` to
    the raw ``x`` (its ``bn1`` is computed and discarded); here, as in the TensorFlow reference, ``conv1``
    always sees ``act(bn1(x))``. The parameter count is the same (parameter names differ from kekmodel's).
    """

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float, activate_before_residual: bool):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, momentum=_WRN_BN_MOMENTUM)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, momentum=_WRN_BN_MOMENTUM)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.shortcut = None if (cin == cout and stride == 1) else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        self.drop_rate = drop_rate
        self.activate_before_residual = activate_before_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu(self.bn1(x), _WRN_SLOPE)
        if self.activate_before_residual:
            x = act
        out = F.leaky_relu(self.bn2(self.conv1(act)), _WRN_SLOPE)
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return (x if self.shortcut is None else self.shortcut(x)) + out


class _WRNEncoder(nn.Module):
    """conv3x3(16) -> 3 groups of ``(depth - 4) / 6`` blocks (widths 16k, 32k, 64k; strides 1, 2, 2) ->
    BN -> LeakyReLU(0.1) -> global average pool."""

    def __init__(self, in_channels: int, depth: int, widen_factor: int, drop_rate: float):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for g in range(3):
            cin, cout, stride = widths[g], widths[g + 1], 1 if g == 0 else 2
            blocks = [_WRNBlock(cin, cout, stride, drop_rate, activate_before_residual=(g == 0))]
            blocks += [_WRNBlock(cout, cout, 1, drop_rate, activate_before_residual=False) for _ in range(n - 1)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[3], momentum=_WRN_BN_MOMENTUM)
        self.out_dim = widths[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = F.leaky_relu(self.bn(x), _WRN_SLOPE)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _init_wrn(net: nn.Module) -> None:
    """FixMatch-pytorch (kekmodel) init: conv kaiming-normal fan_out, BN (1, 0), linear xavier-normal, bias 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="leaky_relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------------------
# build_model
# ----------------------------------------------------------------------------------------------------------
_KWARGS = {"cnn_small": (), "resnet18_cifar": (), "wrn28_2": ("depth", "widen_factor", "drop_rate"),
           "resnet50": ("weights",)}


def build_model(name: str, num_classes: int = 0, *, in_channels: int = 3, seed: int | None = None,
                **kwargs) -> Net:
    """Build a freshly initialised :class:`Net`.

    Args:
        name: one of :data:`MODELS`.
        num_classes: outputs of the linear head; ``0`` gives an identity head (``forward`` = features).
        in_channels: 1 (grey) or 3 (colour).
        seed: when given, the initialisation runs under ``torch.manual_seed(seed)`` in a forked RNG (the
            caller's RNG state is untouched), so the same seed gives the same weights; ``None`` draws from
            torch's global RNG.
        **kwargs: per architecture:

            - ``wrn28_2``: ``depth`` (28; ``(depth - 4) % 6 == 0``), ``widen_factor`` (2), ``drop_rate``
              (0.0, FixMatch's value).
            - ``resnet50``: ``weights`` (``None``, or the path of a local torchvision ResNet-50 ``.pth`` to
              load; not recorded in ``arch``: the weights travel in the state dict).

    Returns:
        A :class:`Net` in training mode; ``net.arch`` records every architecture argument (defaults filled
        in), so ``build_model(**net.arch)`` rebuilds it.

    Raises:
        ValueError: unknown ``name`` (the message lists :data:`MODELS`), ``num_classes < 0``, unsupported
            ``in_channels``, an unknown or invalid keyword argument.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    num_classes = _check_int(num_classes, "num_classes", minimum=0)
    if isinstance(in_channels, bool) or in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grey) or 3 (colour) for {name}, got {in_channels!r}")
    unknown = sorted(set(kwargs) - set(_KWARGS[name]))
    if unknown:
        allowed = ", ".join(_KWARGS[name]) or "none"
        raise ValueError(f"unknown argument(s) {unknown} for model {name!r} (accepted: {allowed})")
    if seed is not None:
        seed = _check_int(seed, "seed", minimum=0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return _build(name, num_classes, in_channels, kwargs)
    return _build(name, num_classes, in_channels, kwargs)


def _build(name: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> Net:
    arch: dict[str, Any] = {"name": name, "num_classes": num_classes, "in_channels": in_channels}
    if name == "cnn_small":
        enc, dim = _cnn_small(in_channels)
    elif name == "resnet18_cifar":
        enc, dim = _resnet18_cifar(in_channels)
    elif name == "resnet50":
        enc, dim = _resnet50(in_channels, kwargs.get("weights"))
    else:
        depth = _check_int(kwargs.get("depth", 28), "depth", minimum=10)
        if (depth - 4) % 6 != 0:
            raise ValueError(f"wrn depth must satisfy (depth - 4) % 6 == 0 (10, 16, 22, 28, ...), got {depth}")
        widen = _check_int(kwargs.get("widen_factor", 2), "widen_factor", minimum=1)
        drop = kwargs.get("drop_rate", 0.0)
        if isinstance(drop, bool) or not isinstance(drop, (int, float)) or not 0.0 <= drop < 1.0:
            raise ValueError(f"drop_rate must be a number in [0, 1), got {drop!r}")
        arch.update(depth=depth, widen_factor=widen, drop_rate=float(drop))
        enc = _WRNEncoder(in_channels, depth, widen, float(drop))
        dim = enc.out_dim
        net = Net(enc, dim, arch)
        _init_wrn(net)
        return net
    return Net(enc, dim, arch)


def _check_int(value, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


# ----------------------------------------------------------------------------------------------------------
# arch comparison
# ----------------------------------------------------------------------------------------------------------
def _unwrap(model: nn.Module) -> nn.Module:
    """The :class:`Net` inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while not isinstance(model, Net):
        inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    return model


def check_arch(arch: dict[str, Any], model_or_arch, *, what: str = "checkpoint") -> None:
    """Raise ``ValueError`` unless ``arch`` describes the same architecture as ``model_or_arch``.

    Args:
        arch: the architecture dict of ``what`` (e.g. a checkpoint's ``"arch"``).
        model_or_arch: a :class:`Net` (possibly wrapped by DDP / ``torch.compile``) or an arch dict.
        what: how to call ``arch``'s owner in the message.

    The message names both archs and the keys that differ, e.g. ``checkpoint has arch {...} but the model
    has arch {...} (differs in name: 'wrn28_2' vs 'cnn_small')``.
    """
    if isinstance(model_or_arch, nn.Module):
        model = _unwrap(model_or_arch)
        if not isinstance(model, Net):
            raise ValueError(f"expected a uslkit Net or an arch dict, got {type(model_or_arch).__name__}")
        other = model.arch
    elif isinstance(model_or_arch, dict):
        other = model_or_arch
    else:
        raise ValueError(f"expected a uslkit Net or an arch dict, got {type(model_or_arch).__name__}")
    if not isinstance(arch, dict):
        raise ValueError(f"{what} arch must be a dict, got {type(arch).__name__}")
    a, b = _io.to_jsonable(arch), _io.to_jsonable(other)
    if a != b:
        diff = "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
        raise ValueError(f"{what} has arch {a} but the model has arch {b} (differs in {diff})")


# ----------------------------------------------------------------------------------------------------------
# files
# ----------------------------------------------------------------------------------------------------------
_PLAIN = (str, int, float, bool, type(None), torch.Tensor)


def _check_plain(obj: Any, where: str) -> None:
    """Only what ``torch.load(weights_only=True)`` reads back: tensors, numbers, strings, lists, dicts."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise ValueError(f"{where} has a key {k!r} of type {type(k).__name__}; use str or int keys")
            _check_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
    elif not isinstance(obj, _PLAIN):
        raise ValueError(
            f"{where} is a {type(obj).__name__}; checkpoints hold only tensors, numbers, strings, lists and "
            "dicts (convert numpy arrays with torch.from_numpy or .tolist())"
        )


def save_model(path: str | os.PathLike, model: Net, *, extra: dict[str, Any] | None = None,
               overwrite: bool = False) -> Path:
    """Write ``model`` (arch + weights) to a ``uslkit-model`` checkpoint, atomically.

    Args:
        path: the file to write (conventionally ``.pt``); parent folders are created.
        model: a :class:`Net` (DDP / ``torch.compile`` wrappers are unwrapped). Tensors are saved on the CPU.
        extra: anything else to keep with the weights (training settings, metrics, the labels file used);
            only tensors, numbers, strings, lists and dicts, so the file loads with ``weights_only=True``.
        overwrite: replace an existing file; otherwise an existing ``path`` raises ``FileExistsError``.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = _io.check_can_write(Path(path), overwrite=overwrite)
    net = _unwrap(model)
    if not isinstance(net, Net):
        raise ValueError(f"save_model needs a uslkit Net (from build_model), got {type(model).__name__}")
    extra = {} if extra is None else extra
    if not isinstance(extra, dict):
        raise ValueError(f"extra must be a dict, got {type(extra).__name__}")
    _check_plain(extra, "extra")
    _check_plain(net.arch, "arch")
    ckpt = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "arch": _io.to_jsonable(net.arch),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "extra": extra,
        **_io.provenance(),
    }
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    return _io.atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | os.PathLike, *, map_location="cpu", trusted: bool = False) -> dict[str, Any]:
    """Read and validate a ``uslkit-model`` or ``uslkit-train-state`` file; returns its dict.

    Loads with ``torch.load(weights_only=True)``. A file that needs full unpickling (it holds Python
    objects other than tensors and plain containers) is refused unless ``trusted=True``: unpickling runs
    arbitrary code, so only do that for files you made.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a torch file, corrupt or truncated, no/unknown ``"format"``, a newer version, or no
            valid ``"arch"``; the message starts with ``"<path> is not a uslkit model checkpoint: "``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {path} does not exist")
    bad = f"{path} is not a uslkit model checkpoint: "
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise ValueError(bad + "it is a NumPy array (.npy, e.g. embeddings); give the model.pt of a training run "
                         "(`uslkit train simclr --out RUN` writes RUN/model.pt)")
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):  # torch's zip format, or a pickle
        raise ValueError(bad + "it is not a file written by torch.save; give the model.pt of a training run")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise ValueError(bad + f"cannot read it ({type(e).__name__}: {e})") from e
        if not trusted:
            raise ValueError(
                bad + "it holds Python objects other than tensors and plain containers, and reading those runs "
                "arbitrary code; in Python, load it with trusted=True only if you made it"
            ) from e
        try:
            obj = torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e2:
            raise ValueError(bad + f"cannot read it ({type(e2).__name__}: {e2})") from e2
    except Exception as e:  # RuntimeError (bad zip), EOFError (truncated), OSError, ...
        raise ValueError(bad + f"cannot read it ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict) or "format" not in obj:
        raise ValueError(bad + f"expected a dict with a 'format' key, got {_describe(obj)}")
    if obj["format"] not in _FORMATS:
        raise ValueError(bad + f"format is {obj['format']!r}, expected one of {_FORMATS}")
    version = obj.get("version", 1)
    if obj["format"] == MODEL_FORMAT and (not isinstance(version, int) or version > MODEL_VERSION):
        raise ValueError(bad + f"format version {version!r} is newer than this uslkit reads ({MODEL_VERSION})")
    arch = obj.get("arch")
    if not isinstance(arch, dict) or not isinstance(arch.get("name"), str) or "num_classes" not in arch:
        raise ValueError(bad + f"'arch' must be a dict with 'name' and 'num_classes', got {arch!r}")
    return obj


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        return f"a dict with keys {sorted(map(str, obj))[:8]}"
    return f"a {type(obj).__name__}"


def load_model(path: str | os.PathLike, *, map_location="cpu", expect: dict[str, Any] | None = None,
               use_ema: bool = False, trusted: bool = False) -> Net:
    """Rebuild the :class:`Net` stored in a checkpoint and load its weights.

    Args:
        path: a ``uslkit-model`` file (:func:`save_model`) or a training loop's ``uslkit-train-state``
            file (weights under ``"model"``, optionally an EMA copy under ``"ema"``).
        map_location: as :func:`torch.load`; the model's tensors end up there.
        expect: arch entries the checkpoint must have, e.g. ``{"name": "cnn_small", "in_channels": 1}``;
            any difference raises ``ValueError`` naming both values.
        use_ema: load the ``"ema"`` weights of a training state (``ValueError`` when there are none).
        trusted: allow full unpickling (see :func:`read_checkpoint`).

    Returns:
        The model, in training mode (call ``.eval()`` for inference), on ``map_location``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: not a uslkit checkpoint, corrupt, ``expect`` mismatch, no EMA weights, or weights that
            do not fit the recorded arch.
    """
    path = Path(path).expanduser()
    obj = read_checkpoint(path, map_location=map_location, trusted=trusted)
    arch = obj["arch"]
    if expect is not None:
        if not isinstance(expect, dict):
            raise ValueError(f"expect must be a dict of arch entries, got {expect!r}")
        for key, want in expect.items():
            have = arch.get(key)
            if _io.to_jsonable(have) != _io.to_jsonable(want):
                raise ValueError(f"{path}: checkpoint has arch {key}={have!r} but expected {want!r}")
    key = "state_dict" if obj["format"] == MODEL_FORMAT else "model"
    if use_ema:
        if not isinstance(obj.get("ema"), dict):
            raise ValueError(f"{path}: use_ema=True but the checkpoint has no EMA weights (no 'ema' entry; "
                             f"format {obj['format']!r})")
        key = "ema"
    state = obj.get(key)
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a uslkit model checkpoint: no state dict under {key!r}")
    build_kw = {k: v for k, v in arch.items() if k not in ("name", "num_classes", "in_channels")}
    try:
        net = build_model(arch["name"], arch["num_classes"], in_channels=arch.get("in_channels", 3), **build_kw)
    except ValueError as e:
        raise ValueError(f"{path}: its arch {arch} cannot be built: {e}") from e
    try:
        net.load_state_dict(_strip_prefix(state))
    except RuntimeError as e:
        msg = str(e).strip().splitlines()
        raise ValueError(f"{path}: the weights under {key!r} do not fit arch {arch}: {' '.join(msg[:3])}") from e
    if map_location is not None and not callable(map_location) and not isinstance(map_location, dict):
        net = net.to(map_location)
    return net

