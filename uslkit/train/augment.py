"""Image transforms for training and evaluation: test, FixMatch weak/strong, SimCLR views; per-sample and batched.

Every transform takes one image (a uint8 ``(C, H, W)`` tensor; a PIL image or an ``HxW`` / ``HxWx3`` uint8
numpy array is converted first with :func:`to_uint8_tensor`) and returns a float32 normalised
``(C, H', W')`` tensor, for 1- and 3-channel images alike (the channel count is kept). Operations run on
uint8 tensors with :mod:`torchvision.transforms.v2.functional`.

Batched: :class:`BatchAugment` runs the same policies for ``grey28`` / ``rgb32`` on a whole uint8 batch
``(B, C, H, W)`` on any device, with per-sample randomness from :func:`sample_uniform` of one seed per
sample (no global RNG), tens of times faster on the CPU than these per-sample transforms.

Randomness of the per-sample transforms: all random draws come from torch's global CPU RNG (never Python's
``random`` or numpy), so :func:`seeded_call` makes any single call reproducible, bit for bit, whatever ran
before it in the process or DataLoader worker. Every transform is a picklable object (no lambdas), for
``DataLoader(num_workers > 0)``.

Image kinds (:data:`IMAGE_KINDS`, :func:`image_kind`) pick sizes and normalisation statistics:

- ``grey28``: 1-channel images up to 32x32 (MNIST, Fashion-MNIST, sklearn digits); Fashion-MNIST stats.
- ``rgb32``: colour images up to 32x32 (CIFAR-10/100, SVHN, BloodMNIST); CIFAR-10 stats.
- ``imagenet``: anything larger (STL-10, image folders); ImageNet stats, 224x224 crops.

References: FixMatch (Sohn et al., NeurIPS 2020; weak = flip + 12.5 % translation, strong = RandAugment
variant of its Table 12 + Cutout, as its PyTorch reimplementation ``kekmodel/FixMatch-pytorch``
``RandAugmentMC``); SimCLR (Chen et al., ICML 2020, appendix A; CIFAR settings of its appendix B.9).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from .._validate import check_seed

__all__ = [
    "IMAGE_KINDS",
    "STATS",
    "image_kind",
    "to_uint8_tensor",
    "normalize",
    "test_transform",
    "weak_transform",
    "strong_transform",
    "simclr_transform",
    "check_crop_scale",
    "FIXMATCH_OPS",
    "RandAugmentMC",
    "Cutout",
    "TwoViews",
    "seeded_call",
    "BatchAugment",
    "BATCH_POLICIES",
    "sample_uniform",
]

IMAGE_KINDS = ("grey28", "rgb32", "imagenet")
# (mean, std) per channel of pixels scaled to [0, 1].
STATS = {
    "grey28": ((0.2860,), (0.3530,)),  # Fashion-MNIST train set
    "rgb32": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # CIFAR-10 train set
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet (torchvision)
}
_SMALL = 32  # images with both sides <= this are "small" (grey28 / rgb32)
_IMAGENET_SIZE = 224
_IMAGENET_RESIZE = 256  # resize 256 -> center crop 224 (crop ratio 0.875)
_GEOMETRIC_FILL = 128  # fill of rotate/shear/translate (RandAugmentMC's fillcolor (128, 128, 128))
_CUTOUT_FILL = 127  # RandAugmentMC's CutoutAbs colour (127, 127, 127)


def _check_kind(kind: str) -> str:
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r}; choose one of {', '.join(IMAGE_KINDS)}")
    return kind


# ----------------------------------------------------------------------------------------------------------
# kinds, conversion, normalisation
# ----------------------------------------------------------------------------------------------------------
def image_kind(dataset_or_image_shape) -> str:
    """The image kind of a dataset or an image.

    Args:
        dataset_or_image_shape: an :class:`uslkit.data.ImageDataset` (file-backed ones are ``"imagenet"``);
            a torch tensor image ``(C, H, W)`` or batch ``(B, C, H, W)``; a PIL image; or a shape in the
            dataset's numpy layout: ``(H, W)``, ``(H, W, 3)``, ``(N, H, W)`` (grey) or ``(N, H, W, 3)``.
            A 3-tuple ending in 1 or 3 is read as ``(H, W, C)``, otherwise as ``(N, H, W)``.

    Returns:
        ``"grey28"`` for 1-channel images with ``H, W <= 32``, ``"rgb32"`` for 3-channel ones with
        ``H, W <= 32``, ``"imagenet"`` for anything larger.
    """
    obj = dataset_or_image_shape
    if hasattr(obj, "images") and hasattr(obj, "labels"):  # ImageDataset
        if obj.images is None:
            return "imagenet"
        shape = tuple(obj.images.shape[1:])
        channels, (h, w) = (3 if len(shape) == 3 else 1), shape[:2]
    elif isinstance(obj, torch.Tensor):
        if obj.ndim not in (3, 4):
            raise ValueError(f"an image tensor must be (C, H, W) or (B, C, H, W), got shape {tuple(obj.shape)}")
        channels, h, w = obj.shape[-3:]
    elif hasattr(obj, "mode") and hasattr(obj, "size"):  # PIL image
        channels, (w, h) = (1 if obj.mode == "L" else 3), obj.size  # as to_uint8_tensor
    else:
        try:
            shape = tuple(int(s) for s in obj)
        except TypeError:
            raise ValueError(f"expected an ImageDataset, an image or a shape tuple, got {type(obj).__name__}") \
                from None
        if len(shape) == 2:
            (h, w), channels = shape, 1
        elif len(shape) == 3 and shape[-1] in (1, 3):
            h, w, channels = shape
        elif len(shape) == 3:
            (_, h, w), channels = shape, 1
        elif len(shape) == 4 and shape[-1] in (1, 3):
            _, h, w, channels = shape
        else:
            raise ValueError(f"cannot read an image shape from {shape}: expected (H, W), (H, W, 3), (N, H, W) "
                             "or (N, H, W, 3)")
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels}")
    if max(h, w) > _SMALL:
        return "imagenet"
    return "grey28" if channels == 1 else "rgb32"


def to_uint8_tensor(img) -> torch.Tensor:
    """A PIL image, an ``HxW`` / ``HxWx3`` uint8 numpy array, or a uint8 ``(C, H, W)`` tensor -> uint8
    ``(C, H, W)`` tensor with C = 1 or 3 (PIL modes other than ``L``/``RGB`` are converted to ``RGB``).

    Numpy input is copied (the result never aliases the dataset's array); tensors pass through unchanged.
    """
    if isinstance(img, torch.Tensor):
        if img.dtype != torch.uint8 or img.ndim != 3 or img.shape[0] not in (1, 3):
            raise ValueError(f"expected a uint8 (C, H, W) tensor with C in (1, 3), got {img.dtype} "
                             f"{tuple(img.shape)}")
        return img
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
            raise ValueError(f"expected a uint8 HxW or HxWx3 numpy image, got {img.dtype} {img.shape}")
        t = torch.from_numpy(np.array(img, copy=True))
        return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
    if hasattr(img, "mode") and hasattr(img, "convert"):  # PIL
        if img.mode not in ("L", "RGB"):
            img = img.convert("RGB")
        return F.pil_to_tensor(img)
    raise ValueError(f"expected a PIL image, a uint8 numpy image or a uint8 tensor, got {type(img).__name__}")


def _stats(kind: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std for ``channels`` channels (3-channel stats averaged for 1-channel images,
    1-channel stats repeated for 3-channel ones)."""
    mean, std = (torch.tensor(s, dtype=torch.float32) for s in STATS[kind])
    if channels != mean.numel():
        mean, std = (mean.mean().repeat(channels), std.mean().repeat(channels))
    return mean.view(-1, 1, 1), std.view(-1, 1, 1)


def normalize(x: torch.Tensor, kind: str) -> torch.Tensor:
    """``(x / 255 - mean) / std`` as float32, with the mean/std of ``kind`` (:data:`STATS`).

    Args:
        x: uint8, or float with values in [0, 255]; ``(C, H, W)`` or ``(B, C, H, W)``, C in (1, 3).
        kind: one of :data:`IMAGE_KINDS`. A 1-channel image with a 3-channel kind uses the average of the
            three means/stds; a 3-channel image with ``grey28`` repeats the grey stats.

    Returns:
        float32 tensor of ``x``'s shape.
    """
    _check_kind(kind)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"normalize expects a torch tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W) with C in (1, 3), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"expected uint8 or float pixels in [0, 255], got dtype {x.dtype}")
    mean, std = _stats(kind, x.shape[-3])
    mean, std = mean.to(x.device), std.to(x.device)
    return (x.to(torch.float32) / 255.0 - mean) / std


class _ToTensor:
    """Any accepted image -> uint8 (C, H, W) (:func:`to_uint8_tensor`)."""

    def __call__(self, img) -> torch.Tensor:
        return to_uint8_tensor(img)

    def __repr__(self) -> str:
        return "ToUint8Tensor()"


class _Normalize:
    """uint8 (C, H, W) -> float32 normalised with ``kind``'s stats (:func:`normalize`)."""

    def __init__(self, kind: str):
        self.kind = _check_kind(kind)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.kind)

    def __repr__(self) -> str:
        return f"Normalize(kind={self.kind!r})"


class _Compose:
    """Apply ``steps`` in order (a plain, picklable stand-in for ``Compose`` with a readable repr)."""

    def __init__(self, steps: list[Any]):
        self.steps = list(steps)

    def __call__(self, img):
        for step in self.steps:
            img = step(img)
        return img

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.steps)
        return f"Transform(\n  {inner}\n)"


# ----------------------------------------------------------------------------------------------------------
# random geometry shared by the transforms
# ----------------------------------------------------------------------------------------------------------
def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class _PadCrop:
    """Random translation by up to ``frac`` of the size: reflect-pad ``int(frac * side)`` pixels on every side,
    then crop a random window of the original size (FixMatch: ``RandomCrop(32, padding=4,
    padding_mode='reflect')``, i.e. ``frac = 0.125``; 3 pixels for 28x28, 1 for 8x8)."""

    def __init__(self, frac: float = 0.125):
        self.frac = frac

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        ph, pw = int(self.frac * h), int(self.frac * w)
        if ph == 0 and pw == 0:
            return img
        padded = F.pad(img, [pw, ph, pw, ph], padding_mode="reflect")
        top = int(torch.randint(0, 2 * ph + 1, ()))
        left = int(torch.randint(0, 2 * pw + 1, ()))
        return padded[..., top : top + h, left : left + w]

    def __repr__(self) -> str:
        return f"RandomPadCrop(frac={self.frac}, padding_mode='reflect')"


class _SameSizeResizedCrop:
    """``RandomResizedCrop`` whose output size is the input's size (so 8x8, 28x28 and 32x32 images all work).

    Crop parameters follow torchvision's ``RandomResizedCrop.get_params`` (10 tries of area ~ U(scale),
    log-aspect ~ U(log ratio), then a clipped-ratio centre crop), drawn from torch's RNG.
    """

    def __init__(self, scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.scale, self.ratio = tuple(scale), tuple(ratio)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        top, left, ch, cw = self._params(h, w)
        return F.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)

    def _params(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(*log_ratio))
            cw = int(round(math.sqrt(target * aspect)))
            ch = int(round(math.sqrt(target / aspect)))
            if 0 < cw <= w and 0 < ch <= h:
                top = int(torch.randint(0, h - ch + 1, ()))
                left = int(torch.randint(0, w - cw + 1, ()))
                return top, left, ch, cw
        in_ratio = w / h
        if in_ratio < min(self.ratio):
            cw, ch = w, int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            ch, cw = h, int(round(h * max(self.ratio)))
        else:
            cw, ch = w, h
        return (h - ch) // 2, (w - cw) // 2, ch, cw

    def __repr__(self) -> str:
        return f"RandomResizedCrop(size=input size, scale={self.scale}, ratio={tuple(round(r, 4) for r in self.ratio)})"


class _RandomGrayscale:
    """With probability ``p`` replace a colour image by its luma replicated to 3 channels; grey images pass."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) < self.p and img.shape[-3] == 3:
            return F.rgb_to_grayscale(img, num_output_channels=3)
        return img

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"


# ----------------------------------------------------------------------------------------------------------
# FixMatch's RandAugment variant and Cutout
# ----------------------------------------------------------------------------------------------------------
def _auto_contrast(img, m):
    return F.autocontrast(img)


def _brightness(img, m):
    return F.adjust_brightness(img, m)


def _color(img, m):
    return img if img.shape[-3] == 1 else F.adjust_saturation(img, m)  # Color on a grey image: identity


def _contrast(img, m):
    return F.adjust_contrast(img, m)


def _equalize(img, m):
    return F.equalize(img)


def _identity(img, m):
    return img


def _posterize(img, m):
    return F.posterize(img, int(m))


def _rotate(img, m):
    return F.rotate(img, m, interpolation=v2.InterpolationMode.NEAREST, fill=_GEOMETRIC_FILL)


def _sharpness(img, m):
    return F.adjust_sharpness(img, m)


def _shear_x(img, m):  # PIL's affine (1, m, 0, 0, 1, 0): shear about the top-left corner, as torchvision
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                    interpolation=v2.InterpolationMode.NEAREST, fill=_GEOMETRIC_FILL, center=[0, 0])


def _shear_y(img, m):
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                    interpolation=v2.InterpolationMode.NEAREST, fill=_GEOMETRIC_FILL, center=[0, 0])


def _solarize(img, m):  # PIL.ImageOps.solarize: pixels >= threshold are inverted; threshold = T * 256
    return torch.where(img.to(torch.int16) >= int(m * 256), 255 - img, img)


def _translate_x(img, m):
    return F.affine(img, angle=0.0, translate=[int(m * img.shape[-1]), 0], scale=1.0, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.NEAREST, fill=_GEOMETRIC_FILL)


def _translate_y(img, m):
    return F.affine(img, angle=0.0, translate=[0, int(m * img.shape[-2])], scale=1.0, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.NEAREST, fill=_GEOMETRIC_FILL)


# name -> (op, magnitude range of FixMatch Table 12 or None, integer magnitude?)
FIXMATCH_OPS: dict[str, tuple[Any, tuple[float, float] | None, bool]] = {
    "AutoContrast": (_auto_contrast, None, False),
    "Brightness": (_brightness, (0.05, 0.95), False),
    "Color": (_color, (0.05, 0.95), False),
    "Contrast": (_contrast, (0.05, 0.95), False),
    "Equalize": (_equalize, None, False),
    "Identity": (_identity, None, False),
    "Posterize": (_posterize, (4, 8), True),  # bits kept
    "Rotate": (_rotate, (-30.0, 30.0), False),  # degrees
    "Sharpness": (_sharpness, (0.05, 0.95), False),
    "ShearX": (_shear_x, (-0.3, 0.3), False),
    "ShearY": (_shear_y, (-0.3, 0.3), False),
    "Solarize": (_solarize, (0.0, 1.0), False),  # threshold as a fraction of 256
    "TranslateX": (_translate_x, (-0.3, 0.3), False),  # fraction of the width
    "TranslateY": (_translate_y, (-0.3, 0.3), False),
}


class RandAugmentMC:
    """FixMatch's RandAugment variant: ``n_ops`` ops drawn uniformly with replacement from
    :data:`FIXMATCH_OPS`, each applied with probability 0.5 at a magnitude drawn uniformly from its range in
    FixMatch's Table 12 (Sohn et al., 2020), on a uint8 ``(C, H, W)`` tensor.

    Follows ``RandAugmentMC`` of kekmodel/FixMatch-pytorch except: magnitudes are continuous draws from the
    paper's ranges (the reference draws ``v`` from ``1..9`` on a 10-step grid, e.g. brightness in
    [0.14, 0.86]); Cutout is a separate step (:class:`Cutout`); shears and translations use
    torchvision's affine with nearest interpolation (PIL's ``transform`` in the reference).
    """

    def __init__(self, n_ops: int = 2):
        self.n_ops = n_ops
        self.names = tuple(FIXMATCH_OPS)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for k in torch.randint(len(self.names), (self.n_ops,)).tolist():
            if float(torch.rand(())) >= 0.5:
                continue
            op, rng, integer = FIXMATCH_OPS[self.names[k]]
            if rng is None:
                m = 0.0
            elif integer:
                m = int(torch.randint(int(rng[0]), int(rng[1]) + 1, ()))
            else:
                m = _uniform(*rng)
            img = op(img, m)
        return img

    def __repr__(self) -> str:
        return f"RandAugmentMC(n_ops={self.n_ops}, p=0.5, ops={len(self.names)} of FixMatch Table 12)"


class Cutout:
    """Fill a random square with grey 127: side ``int(u * frac * min(H, W))``, ``u ~ U(0, 1)`` (FixMatch
    Table 12: ``L in [0, 0.5]``), centre uniform over the image, clipped at the borders (``CutoutAbs`` of
    the reference, which always uses the largest side, 16 px on 32x32)."""

    def __init__(self, frac: float = 0.5, fill: int = _CUTOUT_FILL):
        self.frac, self.fill = frac, fill

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        side = int(float(torch.rand(())) * self.frac * min(h, w))
        cy, cx = float(torch.rand(())) * h, float(torch.rand(())) * w
        if side == 0:
            return img
        y0, x0 = int(max(0.0, cy - side / 2)), int(max(0.0, cx - side / 2))
        y1, x1 = min(h, y0 + side), min(w, x0 + side)
        img = img.clone()
        img[..., y0:y1, x0:x1] = self.fill
        return img

    def __repr__(self) -> str:
        return f"Cutout(frac={self.frac}, fill={self.fill})"


# ----------------------------------------------------------------------------------------------------------
# the transforms
# ----------------------------------------------------------------------------------------------------------
def test_transform(kind: str, *, image_size: int | None = None):
    """Deterministic evaluation transform.

    ``grey28`` / ``rgb32``: normalisation only (with ``image_size``: first resized to
    ``image_size x image_size``). ``imagenet``: resize the short side to ``round(image_size / 0.875)``
    (256 for the default 224) then centre-crop ``image_size`` (the standard ImageNet evaluation).
    Also accepts a uint8 batch ``(B, C, H, W)``.
    """
    _check_kind(kind)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    steps: list[Any] = [_ToTensorOrBatch()]
    if kind == "imagenet":
        size = _IMAGENET_SIZE if image_size is None else image_size
        resize = _IMAGENET_RESIZE if image_size is None else int(round(size / 0.875))
        steps += [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    elif image_size is not None:
        steps.append(v2.Resize([image_size, image_size], antialias=True))
    return _Compose(steps + [_Normalize(kind)])


class _ToTensorOrBatch(_ToTensor):
    """Like :class:`_ToTensor` but lets uint8 ``(B, C, H, W)`` batches through (deterministic transforms)."""

    def __call__(self, img) -> torch.Tensor:
        if isinstance(img, torch.Tensor) and img.ndim == 4 and img.dtype == torch.uint8:
            return img
        return to_uint8_tensor(img)


def _weak_steps(kind: str) -> list[Any]:
    if kind == "imagenet":
        return [v2.RandomResizedCrop(_IMAGENET_SIZE, antialias=True), v2.RandomHorizontalFlip()]
    return [v2.RandomHorizontalFlip(), _PadCrop(0.125)]


def weak_transform(kind: str):
    """FixMatch's weak augmentation: random horizontal flip, then a random translation by up to 12.5 % of
    each side (reflect padding + random crop, ``RandomCrop(32, padding=4, padding_mode='reflect')`` on
    CIFAR), then normalisation. ``imagenet``: ``RandomResizedCrop(224)`` + flip (FixMatch's ImageNet
    setting). Flips are kept for ``grey28`` (Fashion-MNIST is left/right symmetric enough; on MNIST digits a
    flip changes the glyph, build your own pipeline there).
    """
    _check_kind(kind)
    return _Compose([_ToTensor(), *_weak_steps(kind), _Normalize(kind)])


def strong_transform(kind: str, *, n_ops: int = 2, cutout: float = 0.5):
    """FixMatch's strong augmentation: the weak flip + translation, :class:`RandAugmentMC` with ``n_ops``
    ops, :class:`Cutout` with side up to ``cutout * size`` (0 disables it), normalisation.

    Args:
        kind: one of :data:`IMAGE_KINDS`.
        n_ops: ops per image (FixMatch: 2).
        cutout: largest Cutout side as a fraction of the shorter image side, in [0, 1] (FixMatch: 0.5).
    """
    _check_kind(kind)
    if isinstance(n_ops, bool) or not isinstance(n_ops, int) or n_ops < 0:
        raise ValueError(f"n_ops must be a non-negative integer, got {n_ops!r}")
    if isinstance(cutout, bool) or not isinstance(cutout, (int, float)) or not 0.0 <= cutout <= 1.0:
        raise ValueError(f"cutout must be a fraction in [0, 1], got {cutout!r}")
    steps = [_ToTensor(), *_weak_steps(kind), RandAugmentMC(n_ops)]
    if cutout > 0:
        steps.append(Cutout(float(cutout)))
    return _Compose(steps + [_Normalize(kind)])


def simclr_transform(kind: str, *, crop_scale: tuple[float, float] | None = None):
    """One SimCLR view (Chen et al., 2020, appendix A; CIFAR variant of appendix B.9).

    ``RandomResizedCrop`` back to the input size with scale (0.2, 1.0) for ``grey28`` / ``rgb32`` (the
    common CIFAR setting of SimCLR reimplementations; 224 px with scale (0.08, 1.0) for ``imagenet``;
    ``crop_scale`` overrides the area range, see :func:`check_crop_scale`),
    horizontal flip, ``ColorJitter(0.4, 0.4, 0.4, 0.1)`` with probability 0.8 (brightness and contrast only
    for ``grey28``), ``RandomGrayscale(p=0.2)`` (colour only; a no-op on grey images), and for ``imagenet``
    only a Gaussian blur (kernel 23 = 10 % of 224, sigma in [0.1, 2.0]) with probability 0.5.
    """
    _check_kind(kind)
    if kind == "imagenet":
        scale = (0.08, 1.0) if crop_scale is None else check_crop_scale(crop_scale)
        crop: Any = v2.RandomResizedCrop(_IMAGENET_SIZE, scale=scale, antialias=True)
    else:
        crop = _SameSizeResizedCrop(scale=_SIMCLR_SCALE if crop_scale is None else check_crop_scale(crop_scale))
    jitter = v2.ColorJitter(0.4, 0.4) if kind == "grey28" else v2.ColorJitter(0.4, 0.4, 0.4, 0.1)
    steps = [_ToTensor(), crop, v2.RandomHorizontalFlip(), v2.RandomApply([jitter], p=0.8)]
    if kind != "grey28":
        steps.append(_RandomGrayscale(0.2))
    if kind == "imagenet":
        steps.append(v2.RandomApply([v2.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5))
    return _Compose(steps + [_Normalize(kind)])


def check_crop_scale(crop_scale) -> tuple[float, float]:
    """``(lo, hi)`` area fractions of a SimCLR crop, ``0 < lo <= hi <= 1``, as a float tuple (else ValueError)."""
    try:
        lo, hi = (float(v) for v in crop_scale)
    except (TypeError, ValueError):
        raise ValueError(f"crop_scale must be a pair (lo, hi) of area fractions, got {crop_scale!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale!r}")
    return lo, hi


class TwoViews:
    """``img -> (t1(img), t2(img))``; ``t2`` defaults to ``t1`` (SimCLR: two draws of the same transform;
    FixMatch unlabelled batch: ``TwoViews(weak, strong)``). Picklable when ``t1`` and ``t2`` are."""

    def __init__(self, t1, t2=None):
        if not callable(t1) or (t2 is not None and not callable(t2)):
            raise ValueError("TwoViews needs callable transforms")
        self.t1, self.t2 = t1, (t1 if t2 is None else t2)

    def __call__(self, img):
        return self.t1(img), self.t2(img)

    def __repr__(self) -> str:
        return f"TwoViews({self.t1!r}, {self.t2!r})"


def seeded_call(transform, img, seed: int):
    """``transform(img)`` with torch's CPU RNG seeded by ``seed`` inside a fork: the result depends only on
    ``(transform, img, seed)``, and the caller's RNG state is left as it was."""
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(img)


# ----------------------------------------------------------------------------------------------------------
# batched augmentation: counter-based per-sample randomness, a few tensor ops per batch, any device
# ----------------------------------------------------------------------------------------------------------
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 increment (2^64 / golden ratio)
_MIX1, _MIX2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SHIFTS = (np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11))
BATCH_POLICIES = ("test", "weak", "strong", "simclr")
# salt bases per policy (so weak and strong views of one seed are independent) and offsets per random step
_POLICY_SALT = {"test": 0, "weak": 1 << 20, "strong": 2 << 20, "simclr": 3 << 20}
_SALT_FLIP, _SALT_SHIFT, _SALT_CUTOUT, _SALT_CROP, _SALT_JITTER, _SALT_GREY = 1, 2, 3, 4, 5, 6
_SALT_OPS = 1 << 10  # + step index of RandAugmentMC
_GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
_SIMCLR_SCALE, _SIMCLR_RATIO, _SIMCLR_TRIES = (0.2, 1.0), (3 / 4, 4 / 3), 10
_JITTER = 0.4, 0.1  # ColorJitter(0.4, 0.4, 0.4, 0.1): factors in [0.6, 1.4], hue shift in [-0.1, 0.1]
_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 weights, as PIL's "L" conversion and torchvision


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 output function (Steele, Lea & Flood, OOPSLA 2014) on uint64 arrays (wrapping)."""
    z = z + _GOLDEN
    z = (z ^ (z >> _SHIFTS[0])) * _MIX1
    z = (z ^ (z >> _SHIFTS[1])) * _MIX2
    return z ^ (z >> _SHIFTS[2])


def _check_seeds(seeds, n: int | None = None) -> np.ndarray:
    """Per-sample seeds (int tensor on any device, numpy array or sequence) -> uint64 numpy ``(B,)``."""
    if isinstance(seeds, torch.Tensor):
        seeds = seeds.detach().cpu().numpy()
    arr = np.asarray(seeds)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise ValueError(f"seeds must be a 1-D integer array (one seed per sample), got {arr.dtype} "
                         f"of shape {arr.shape}")
    if arr.dtype.kind == "i" and arr.size and int(arr.min()) < 0:
        raise ValueError(f"seeds must be non-negative, got {int(arr.min())}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"need one seed per sample: {arr.shape[0]} seeds for a batch of {n}")
    return arr.astype(np.uint64)


def sample_uniform(seeds, salt: int, k: int) -> np.ndarray:
    """``k`` uniform numbers per seed from a counter-based hash: row ``i`` depends only on ``(seeds[i], salt)``.

    With ``next(z) = mix(z + gamma)`` one step of splitmix64 (Steele, Lea & Flood, OOPSLA 2014; ``gamma`` =
    0x9E3779B97F4A7C15, ``mix`` its 64-bit finaliser): ``key_i = next(next(seed_i) ^ salt)`` and
    ``u[i, j] = (next(key_i + j * gamma) >> 11) * 2^-53``, i.e. the ``j``-th output of a splitmix64 stream
    started at a hash of the seed and the salt. Pure numpy uint64 arithmetic (wrapping), so the numbers are
    the same on every platform and do not depend on the other seeds, on their order or on any global RNG.

    Args:
        seeds: integer seeds ``(B,)``, non-negative (a numpy array, a torch tensor on any device or a list).
        salt: non-negative integer naming the random step (different salts give independent streams).
        k: numbers per seed.

    Returns:
        float64 array ``(B, k)`` with values in [0, 1).
    """
    s = _check_seeds(seeds)
    if isinstance(salt, bool) or not isinstance(salt, (int, np.integer)) or not 0 <= int(salt) < 2**64:
        raise ValueError(f"salt must be an integer in [0, 2**64), got {salt!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    key = _splitmix64(_splitmix64(s) ^ np.full(s.shape, int(salt), dtype=np.uint64))
    counters = np.arange(int(k), dtype=np.uint64)[None, :] * np.full((1, 1), _GOLDEN, dtype=np.uint64)
    z = _splitmix64(key[:, None] + counters)
    return (z >> _SHIFTS[3]).astype(np.float64) * 2.0**-53


def _vec(v, device, dtype=torch.float32) -> torch.Tensor:
    """A per-sample numpy vector -> a ``(n, 1, 1, 1)`` tensor on ``device``, broadcastable over images."""
    return torch.as_tensor(np.asarray(v), dtype=dtype).to(device).view(-1, 1, 1, 1)


def _index(idx: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(idx, dtype=np.int64)).to(device)


def _to_u8_(t: torch.Tensor) -> torch.Tensor:
    """In place on a temporary ``t``: the values a uint8 cast would keep, clamped to [0, 255] and truncated
    (torchvision's ``.to(uint8)`` after its float blends, PIL's ``CLIP8((int) v)``).

    The batched ops write into their temporaries (one fresh buffer per op, not one per arithmetic step): the
    results are the same, and a freshly allocated multi-megabyte buffer can cost more in page faults than the
    arithmetic itself."""
    return t.clamp_(0.0, 255.0).floor_()


# --- FixMatch weak: flip + reflect-padded translation --------------------------------------------------------
def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    """Index ``i`` of a reflect-padded axis of length ``n`` (``i`` in ``(-n, 2n - 1)``) -> index in the axis
    (``F.pad(padding_mode='reflect')``: the edge pixel is not repeated)."""
    i = np.abs(i)
    return np.where(i >= n, 2 * (n - 1) - i, i)


def _b_flip_pad_crop(x: torch.Tensor, flip: np.ndarray, u: np.ndarray, frac: float = 0.125) -> torch.Tensor:
    """Batched ``RandomHorizontalFlip`` + :class:`_PadCrop`, as one ``gather`` of precomputed indices (any
    dtype and device; used on uint8, 4x less memory than float).

    The window of the reflect-padded image is read straight from the unpadded one (reflected indices, so
    no padded copy is made); ``flip`` ``(B,)`` bool reverses the window's columns (reflect padding is
    mirror-symmetric, so flip-then-pad-crop equals pad-then-crop-with-reversed-columns, exactly); ``u``
    ``(B, 2)`` uniforms give the top and left offsets, ``randint(0, 2 * pad + 1)`` as
    ``floor(u * (2 * pad + 1))``.
    """
    b, c, h, w = x.shape
    ph, pw = int(frac * h), int(frac * w)
    top = np.floor(u[:, 0] * (2 * ph + 1)).astype(np.int64)
    left = np.floor(u[:, 1] * (2 * pw + 1)).astype(np.int64)
    cols = left[:, None] + np.arange(w)[None, :]  # (B, W) columns of the padded image
    cols = np.where(np.asarray(flip, dtype=bool)[:, None], w + 2 * pw - 1 - cols, cols)
    cols = _reflect(cols - pw, w)
    rows = _reflect(top[:, None] + np.arange(h)[None, :] - ph, h)  # (B, H)
    flat_idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(b, 1, h * w)
    out = torch.gather(x.reshape(b, c, h * w), 2, _index(flat_idx, x.device).expand(b, c, h * w))
    return out.view(b, c, h, w)


# --- RandAugmentMC ops: x float32 (n, C, H, W) with integer values 0..255, m numpy (n,) --------------------
def _gray(x: torch.Tensor) -> torch.Tensor:
    """``(n, 1, H, W)`` luma, truncated to integers as torchvision's uint8 ``rgb_to_grayscale``; grey passes."""
    if x.shape[1] == 1:
        return x
    luma = x[:, 0:1] * _LUMA[0]
    luma += x[:, 1:2] * _LUMA[1]
    luma += x[:, 2:3] * _LUMA[2]
    return luma.floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: np.ndarray) -> torch.Tensor:
    """PIL's ``Image.blend(other, x, ratio)`` = ``x * ratio + other * (1 - ratio)``, per-sample ratio."""
    r, q = _vec(ratio, x.device), _vec(1.0 - np.asarray(ratio, dtype=np.float64), x.device)
    out = x * r
    out += other * q
    return _to_u8_(out)


def _b_auto_contrast(x, m):
    lo, hi = x.amin(dim=(-2, -1), keepdim=True), x.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    inv_scale = torch.where(flat, torch.ones_like(hi), (hi - lo) * (1.0 / 255.0))
    out = x - torch.where(flat, torch.zeros_like(lo), lo)
    return _to_u8_(out.div_(inv_scale))


def _b_brightness(x, m):
    return _to_u8_(x * _vec(m, x.device))  # blend with black


def _b_color(x, m):
    return x if x.shape[1] == 1 else _blend(x, _gray(x), m)  # blend with the grey image


def _b_contrast(x, m):
    mean = _gray(x).sum(dim=(-3, -2, -1), keepdim=True) / float(x.shape[-2] * x.shape[-1])  # exact: integers
    return _blend(x, mean, m)  # blend with the mean grey level


def _b_equalize(x, m):
    """PIL's ``ImageOps.equalize`` per sample and channel (as torchvision's ``equalize``): lut[v] =
    ``(cumhist[v - 1] + step // 2) // step`` with ``step = (#pixels not of the top grey level) // 255``; images
    with ``step == 0`` are left alone."""
    n, c, h, w = x.shape
    flat = x.reshape(n * c, h * w).long()
    hist = torch.zeros(n * c, 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(1, flat, torch.ones_like(flat))
    cum = hist.cumsum(1)
    top = cum.argmax(1, keepdim=True)  # first index reaching the total: the last non-empty bin
    step = (h * w - hist.gather(1, top)) // 255
    lut = ((cum[:, :-1] + step // 2) // step.clamp(min=1)).clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], dim=1)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device))  # step 0: identity
    return lut.gather(1, flat).to(x.dtype).view(n, c, h, w)


def _b_identity(x, m):
    return x


def _b_posterize(x, m):
    scale = _vec(2.0 ** (8 - np.asarray(m, dtype=np.int64)), x.device)  # keep the top m bits
    return (x / scale).floor_().mul_(scale)


def _b_sharpness(x, m):
    """Blend with PIL's SMOOTH filter ``[[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13`` (rounded), border kept."""
    h, w = x.shape[-2:]
    if h <= 2 or w <= 2:
        return x
    inner = x[..., 1:-1, 1:-1]
    total = 4.0 * inner  # + the 9 taps below (centre weight 5 = 4 + 1)
    for dy in range(3):
        for dx in range(3):
            total += x[..., dy : h - 2 + dy, dx : w - 2 + dx]
    blurred = total.div_(13.0).round_()  # integer sums: exact, never a rounding tie
    blurred = blurred.sub_(inner).mul_(_vec(1.0 - np.asarray(m, np.float64), x.device)).add_(inner)
    out = x.clone()
    out[..., 1:-1, 1:-1] = _to_u8_(blurred)  # inner + (blurred - inner) * (1 - m), as torchvision
    return out


def _b_solarize(x, m):
    threshold = _vec(np.floor(np.asarray(m, dtype=np.float64) * 256), x.device)  # int(m * 256)
    above = (x - threshold).add_(1.0).clamp_(0.0, 1.0)  # 1 where x >= threshold (integer values), else 0
    return above.mul_(255.0 - 2.0 * x).add_(x)  # x, or 255 - x above the threshold (exact: integers)


def _inverse_affine(h: int, w: int, *, angle=0.0, tx=0.0, ty=0.0, shear_x=0.0, shear_y=0.0, corner=False):
    """torchvision's ``_get_inverse_affine_matrix`` vectorised over samples (numpy float64 ``(n, 2, 3)``).

    Maps output pixel centres (relative to the image centre) to input ones. ``angle`` in degrees
    (counter-clockwise, as ``F.rotate``), shears as angles in radians, ``corner``: shear about the top-left
    corner (``center=[0, 0]`` of the per-sample ops) instead of the centre.
    """
    angle, tx, ty, shear_x, shear_y = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64)
                                                            for v in (angle, tx, ty, shear_x, shear_y)))
    rot = np.radians(-angle)  # F.rotate passes -angle to the matrix
    cx, cy = (-0.5 * w, -0.5 * h) if corner else (0.0, 0.0)
    a = np.cos(rot - shear_y) / np.cos(shear_y)
    b = -(a * np.tan(shear_x) + np.sin(rot))
    c = np.sin(rot - shear_y) / np.cos(shear_y)
    d = np.cos(rot) - c * np.tan(shear_x)
    mat = np.stack([np.stack([d, -b, np.zeros_like(a)], -1), np.stack([-c, a, np.zeros_like(a)], -1)], -2)
    mat[:, 0, 2] = cx - mat[:, 0, 0] * (cx + tx) - mat[:, 0, 1] * (cy + ty)
    mat[:, 1, 2] = cy - mat[:, 1, 0] * (cx + tx) - mat[:, 1, 1] * (cy + ty)
    return mat


def _geometric_matrix(name: str, m: np.ndarray, h: int, w: int) -> np.ndarray:
    """Inverse matrices of the per-sample geometric ops (:data:`FIXMATCH_OPS`) at magnitudes ``m``."""
    m = np.asarray(m, dtype=np.float64)
    if name == "Rotate":
        return _inverse_affine(h, w, angle=m)
    if name == "ShearX":
        return _inverse_affine(h, w, shear_x=np.arctan(m), corner=True)
    if name == "ShearY":
        return _inverse_affine(h, w, shear_y=np.arctan(m), corner=True)
    if name == "TranslateX":
        return _inverse_affine(h, w, tx=np.trunc(m * w))
    if name == "TranslateY":
        return _inverse_affine(h, w, ty=np.trunc(m * h))
    raise ValueError(f"not a geometric op: {name!r}")


def _b_affine_nearest(x: torch.Tensor, mats: np.ndarray, fill: float = _GEOMETRIC_FILL) -> torch.Tensor:
    """Per-sample affine warps in one ``grid_sample`` (nearest, ``align_corners=False``), outside filled.

    The grid is torchvision's ``_affine_grid`` (pixel centres relative to the image centre, scaled by half the
    size), written as broadcast products so that every sample's grid is bit-identical whatever the batch.
    """
    n, _, h, w = x.shape
    theta = mats / np.array([0.5 * w, 0.5 * h])[None, :, None]
    th = torch.as_tensor(theta, dtype=torch.float32).to(x.device)
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=x.device).view(1, 1, w)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=x.device).view(1, h, 1)
    gx = th[:, 0, 0].view(n, 1, 1) * xs + th[:, 0, 1].view(n, 1, 1) * ys + th[:, 0, 2].view(n, 1, 1)
    gy = th[:, 1, 0].view(n, 1, 1) * xs + th[:, 1, 1].view(n, 1, 1) * ys + th[:, 1, 2].view(n, 1, 1)
    grid = torch.stack([gx, gy], dim=-1)
    # nearest sampling copies values, so shifting by the fill makes zero padding a fill padding, exactly
    out = torch.nn.functional.grid_sample(x - fill, grid, mode="nearest", padding_mode="zeros",
                                          align_corners=False)
    return out.add_(fill)


def _geometric_op(name: str):
    def op(x, m):
        return _b_affine_nearest(x, _geometric_matrix(name, m, *x.shape[-2:]))
    return op


_BATCH_OPS = {
    "AutoContrast": _b_auto_contrast,
    "Brightness": _b_brightness,
    "Color": _b_color,
    "Contrast": _b_contrast,
    "Equalize": _b_equalize,
    "Identity": _b_identity,
    "Posterize": _b_posterize,
    "Rotate": _geometric_op("Rotate"),
    "Sharpness": _b_sharpness,
    "ShearX": _geometric_op("ShearX"),
    "ShearY": _geometric_op("ShearY"),
    "Solarize": _b_solarize,
    "TranslateX": _geometric_op("TranslateX"),
    "TranslateY": _geometric_op("TranslateY"),
}
assert tuple(_BATCH_OPS) == tuple(FIXMATCH_OPS)


def _magnitudes(name: str, u: np.ndarray) -> np.ndarray:
    """Uniforms -> magnitudes as :class:`RandAugmentMC` draws them (integer ops: ``randint(lo, hi + 1)``)."""
    _, rng, integer = FIXMATCH_OPS[name]
    if rng is None:
        return np.zeros_like(u)
    lo, hi = rng
    if integer:
        return np.minimum(np.floor(u * (int(hi) - int(lo) + 1)), int(hi) - int(lo)) + int(lo)
    return lo + (hi - lo) * u


def _b_rand_augment(x: torch.Tensor, seeds: np.ndarray, n_ops: int, salt: int) -> torch.Tensor:
    """Batched :class:`RandAugmentMC`: per step, each sample draws (op, apply coin, magnitude); each op runs
    once on the samples that drew it (the five geometric ops share one ``grid_sample``)."""
    names = tuple(FIXMATCH_OPS)
    h, w = x.shape[-2:]
    for t in range(n_ops):
        u = sample_uniform(seeds, salt + _SALT_OPS + t, 3)
        op = np.minimum(np.floor(u[:, 0] * len(names)).astype(np.int64), len(names) - 1)
        op[u[:, 1] >= 0.5] = -1  # coin: each drawn op applies with probability 0.5
        geo_idx, geo_mats = [], []
        for k, name in enumerate(names):
            idx = np.flatnonzero(op == k)
            if idx.size == 0 or name == "Identity":
                continue
            m = _magnitudes(name, u[idx, 2])
            if name in _GEOMETRIC_OPS:
                geo_idx.append(idx)
                geo_mats.append(_geometric_matrix(name, m, h, w))
                continue
            ii = _index(idx, x.device)
            x[ii] = _BATCH_OPS[name](x[ii], m)
        if geo_idx:
            ii = _index(np.concatenate(geo_idx), x.device)
            x[ii] = _b_affine_nearest(x[ii], np.concatenate(geo_mats))
    return x


def _b_cutout(x: torch.Tensor, u: np.ndarray, frac: float, fill: float = _CUTOUT_FILL) -> torch.Tensor:
    """Batched :class:`Cutout`, in place (``u``: ``(B, 3)`` uniforms for the side and the centre row and
    column)."""
    h, w = x.shape[-2:]
    side = np.floor(u[:, 0] * frac * min(h, w))
    y0 = np.floor(np.maximum(0.0, u[:, 1] * h - side / 2))
    x0 = np.floor(np.maximum(0.0, u[:, 2] * w - side / 2))
    y1, x1 = np.minimum(h, y0 + side), np.minimum(w, x0 + side)
    rows = np.arange(h)[None, :]
    cols = np.arange(w)[None, :]
    in_rows = _vec((rows >= y0[:, None]) & (rows < y1[:, None]), x.device).view(-1, 1, h, 1)
    in_cols = _vec((cols >= x0[:, None]) & (cols < x1[:, None]), x.device).view(-1, 1, 1, w)
    keep = (in_rows * in_cols).neg_().add_(1.0)  # 0 inside the square, 1 elsewhere
    return x.sub_(fill).mul_(keep).add_(fill)  # exact for integer values


# --- SimCLR views -------------------------------------------------------------------------------------------
def _crop_boxes(u: np.ndarray, h: int, w: int, scale: tuple[float, float] = _SIMCLR_SCALE) -> tuple[np.ndarray, ...]:
    """``_SameSizeResizedCrop._params`` vectorised: ``u`` is ``(B, tries, 4)`` uniforms (area, log-ratio,
    top, left); the first try whose box fits wins, else the ratio-clipped centre crop. Returns int64
    ``(top, left, ch, cw)``, each ``(B,)``."""
    area = h * w
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    lr = math.log(_SIMCLR_RATIO[0]), math.log(_SIMCLR_RATIO[1])
    aspect = np.exp(lr[0] + (lr[1] - lr[0]) * u[..., 1])
    cw, ch = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))  # Python round: half-even
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.argmax(1)
    rows = np.arange(u.shape[0])
    cw, ch, uy, ux = cw[rows, first], ch[rows, first], u[rows, first, 2], u[rows, first, 3]
    top, left = np.floor(uy * (h - ch + 1)), np.floor(ux * (w - cw + 1))
    in_ratio = w / h  # fallback (no try fits): the centre crop with the ratio clipped to the range
    if in_ratio < min(_SIMCLR_RATIO):
        fw, fh = w, int(round(w / min(_SIMCLR_RATIO)))
    elif in_ratio > max(_SIMCLR_RATIO):
        fw, fh = int(round(h * max(_SIMCLR_RATIO))), h
    else:
        fw, fh = w, h
    none = ~fits.any(1)
    top[none], left[none], ch[none], cw[none] = (h - fh) // 2, (w - fw) // 2, fh, fw
    return tuple(v.astype(np.int64) for v in (top, left, ch, cw))


def _crop_coords(start: np.ndarray, size: np.ndarray, out: int) -> np.ndarray:
    """Source pixel coordinates ``(n, out)`` of a bilinear resize of the window ``[start, start + size)`` to
    ``out`` samples, as ``interpolate(align_corners=False)``: ``(i + 0.5) * size / out - 0.5``, clamped to the
    window's first and last pixel centres (``interpolate`` clamps its taps to the window the same way)."""
    src = (np.arange(out)[None, :] + 0.5) * (size[:, None] / out) - 0.5
    return start[:, None] + np.clip(src, 0.0, size[:, None] - 1.0)


def _b_resized_crop(x: torch.Tensor, top, left, ch, cw, flip: np.ndarray) -> torch.Tensor:
    """Per-sample crop boxes resized back to ``(H, W)`` and optionally flipped: one bilinear ``grid_sample``
    with a separable per-sample grid (roi-style; the flip reverses the grid's columns), rounded to integers
    as the uint8 per-sample op."""
    n, _, h, w = x.shape
    gy = (2.0 * _crop_coords(top, ch, h) + 1.0) / h - 1.0  # pixel -> grid_sample's [-1, 1] (align_corners=False)
    gx = (2.0 * _crop_coords(left, cw, w) + 1.0) / w - 1.0
    gx = np.where(np.asarray(flip, dtype=bool)[:, None], gx[:, ::-1], gx)
    gy_t = torch.as_tensor(gy, dtype=torch.float32).to(x.device).view(n, h, 1).expand(n, h, w)
    gx_t = torch.as_tensor(gx, dtype=torch.float32).to(x.device).view(n, 1, w).expand(n, h, w)
    out = torch.nn.functional.grid_sample(x, torch.stack([gx_t, gy_t], dim=-1), mode="bilinear",
                                          padding_mode="border", align_corners=False)
    return out.round().clamp(0.0, 255.0)


_HUE_OFFSETS = (5.0, 3.0, 1.0)  # k_c = (offset_c + 6 h) mod 6 for R, G, B


def _b_hue(x: torch.Tensor, shift: np.ndarray) -> torch.Tensor:
    """Rotate the HSV hue by ``shift`` (a fraction of the colour wheel) as torchvision's ``adjust_hue``, in a
    short closed form: HSV keeps V = max and V * S = max - min, so the shifted colour is
    ``max - (max - min) * clamp(min(k, 4 - k), 0, 1)`` per channel with ``k = (offset_c + 6 h') mod 6``; back to
    uint8 as torchvision (``* (256 - 1e-3) / 255``, truncated). Within 1 grey level of torchvision (float
    rounding of a different sequence of operations)."""
    if x.shape[1] == 1:
        return x
    # max and argmax over channels in one fast ``amax``: integer values, so 4 * value + (2 - channel) is a key
    # whose maximum holds both (ties go to the first channel, as torchvision; the hue formula is continuous
    # there anyway); torch's argmax / max(dim) over a 3-long middle axis are ~10-40x slower on CPU
    key = (x * 4.0).add_(torch.tensor([2.0, 1.0, 0.0], dtype=x.dtype, device=x.device).view(1, 3, 1, 1))
    key = key.amax(dim=1, keepdim=True)
    maxc = (key * 0.25).floor_()
    arg = (key - 4.0 * maxc).neg_().add_(2.0)  # channel of the maximum, 0..2
    rng = maxc - x.amin(dim=1, keepdim=True)  # integers: 0 only where the pixel is grey
    diff = torch.roll(x, -1, dims=1) - torch.roll(x, -2, dims=1)  # (G - B, B - R, R - G)
    h6 = torch.gather(diff, 1, arg.long()).div_(rng.clamp(min=1.0))
    h6 += 2.0 * arg
    h6 += _vec(6.0 * np.asarray(shift, dtype=np.float64), x.device)  # hue in sixths of the wheel, shifted
    offsets = torch.tensor(_HUE_OFFSETS, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    k = offsets + h6
    k -= 6.0 * torch.floor(k * (1.0 / 6.0))  # mod 6 (the weight below is continuous across the wrap)
    weight = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)
    out = weight.mul_(rng).neg_().add_(maxc)  # max - (max - min) * weight
    return out.mul_((255.0 + 1.0 - 1e-3) / 255.0).floor_()


def _b_color_jitter(x: torch.Tensor, u: np.ndarray, colour: bool) -> torch.Tensor:
    """``RandomApply([ColorJitter(0.4, 0.4[, 0.4, 0.1])], p=0.8)`` batched: ``u`` is ``(B, 5)`` (coin,
    brightness, contrast, saturation, hue); the four adjustments run in this fixed order."""
    idx = np.flatnonzero(u[:, 0] < 0.8)
    if idx.size == 0:
        return x
    s, hue = _JITTER
    ii, v = _index(idx, x.device), u[idx]
    y = _b_brightness(x[ii], 1.0 - s + 2 * s * v[:, 1])
    y = _b_contrast(y, 1.0 - s + 2 * s * v[:, 2])
    if colour:
        y = _b_color(y, 1.0 - s + 2 * s * v[:, 3])
        y = _b_hue(y, -hue + 2 * hue * v[:, 4])
    x[ii] = y
    return x


def _b_grayscale(x: torch.Tensor, u: np.ndarray, p: float = 0.2) -> torch.Tensor:
    idx = np.flatnonzero(u < p)
    if idx.size and x.shape[1] == 3:
        ii = _index(idx, x.device)
        x[ii] = _gray(x[ii]).expand(-1, 3, -1, -1)
    return x


class BatchAugment:
    """Batched, device-agnostic version of test/weak/strong/simclr for kinds ``"grey28"`` and ``"rgb32"``.

    ``aug(x, seeds)`` augments a whole uint8 batch ``(B, C, H, W)`` (C = 1 or 3, any small size) with a few
    tensor ops on ``x.device`` (CPU or CUDA) and returns it normalised as :func:`normalize`. Every random
    choice of sample ``i`` comes from :func:`sample_uniform` of ``seeds[i]`` (salted by the policy and the
    step), drawn in numpy on the CPU, so ``aug(x, s)[i]`` equals ``aug(x[i:i+1], s[i:i+1])[0]`` bit for bit on
    the CPU, and the output depends on nothing else (no global RNG). The policy is part of the salt: weak
    and strong views with the same seeds are independent; two views of one policy need two seed arrays.

    Policies (same parameters as the per-sample transforms; Sohn et al., NeurIPS 2020; Chen et al., ICML 2020):

    - ``test``: normalisation only (:func:`test_transform`).
    - ``weak``: horizontal flip p 0.5, translation by ``U{-p..p}`` pixels, ``p = int(0.125 * side)``, with
      reflect padding (:func:`weak_transform`): one ``gather`` of per-sample reflected windows, on uint8.
    - ``strong``: weak, then :class:`RandAugmentMC` (``n_ops`` ops of :data:`FIXMATCH_OPS`, each applied with
      p 0.5 at a magnitude uniform in its FixMatch Table 12 range), then :class:`Cutout` (``cutout``), as
      :func:`strong_transform`. Each op runs once per step on the samples that drew it, with per-sample
      magnitudes; the five geometric ops share one ``grid_sample`` (nearest, fill 128).
    - ``simclr``: ``RandomResizedCrop`` back to the input size with scale (0.2, 1), ratio (3/4, 4/3)
      (torchvision's 10 tries; per-sample boxes, one bilinear ``grid_sample``), flip p 0.5, ColorJitter
      p 0.8 (factors in [0.6, 1.4] for brightness, contrast and, colour only, saturation; colour only: hue
      shift in [-0.1, 0.1]), RandomGrayscale p 0.2 (colour kinds), as :func:`simclr_transform`.

    Pixels stay float32 with integer values 0..255 between steps, rounded or truncated where the uint8
    per-sample ops are (blends truncate, like torchvision's and PIL's uint8 casts; bilinear crops round).
    Differences from the per-sample transforms (same distribution of augmentations, not the same draws):

    - random numbers come from the counter-based hash, not from torch's RNG, so a seed does not reproduce
      :func:`seeded_call` of the per-sample transform;
    - single ops agree with the per-sample (torchvision uint8) ops exactly (flip, translation, AutoContrast,
      Brightness, Equalize, Posterize, Solarize, Cutout, grayscale) or up to 1 grey level in a few pixels
      (float rounding of the Color/Contrast/Sharpness blends; the hue shift, computed in a short closed form
      rather than torchvision's RGB -> HSV -> RGB round trip; a nearest-neighbour tap of a Rotate/Shear at a
      pixel-centre tie, the grid being built with broadcast products rather than ``affine_grid``; the
      bilinear crop, which torchvision computes in fixed point for uint8, in ~15 % of the pixels);
    - ops follow torchvision where it differs from PIL (AutoContrast may map the maximum to 254, a float
      rounding of torchvision's ``(x - min) / ((max - min) / 255)``);
    - ColorJitter applies brightness, contrast, saturation, hue in this fixed order (torchvision shuffles
      the order per image).

    Timings, ms per batch of 512 images (``512 x 1 x 28 x 28`` grey28, ``512 x 3 x 32 x 32`` rgb32), median
    of 5, batched vs per-sample (``torch.stack([t(img) for img in x])`` with :func:`weak_transform`,
    :func:`strong_transform`, :func:`simclr_transform`); 2-core AMD EPYC, busy machine (a benchmark held
    both cores), torch 2.14.1 CPU:

    ======  ======  ===================  ====================
    kind    policy  1 torch thread       2 torch threads
    ======  ======  ===================  ====================
    grey28  weak    1.5 vs 44            40 vs 4058
    grey28  strong  6.7 vs 199           604 vs 7288
    grey28  simclr  6.2 vs 146           152 vs 128
    rgb32   weak    3.4 vs 47            40 vs 4121
    rgb32   strong  13 vs 135            1384 vs 9682
    rgb32   simclr  51 vs 319            131 vs 1812
    ======  ======  ===================  ====================

    With 2 threads on the busy machine every parallel region waited for a core held by the other process,
    so that column measures the scheduler more than the code; on a shared 2-core machine use
    ``torch.set_num_threads(1)``.

    Args:
        kind: ``"grey28"`` or ``"rgb32"`` (normalisation statistics and, for simclr, which jitters apply);
            ``"imagenet"`` is refused (use the per-sample transforms).
        policy: one of ``"test"``, ``"weak"``, ``"strong"``, ``"simclr"``.
        n_ops: RandAugmentMC ops per image (strong only; FixMatch: 2).
        cutout: largest Cutout side as a fraction of the shorter side, in [0, 1] (strong only; 0 disables it).
        crop_scale: area range ``(lo, hi)`` of the simclr crop (simclr only; default (0.2, 1.0)).

    Example:
        >>> aug = BatchAugment("grey28", "strong")
        >>> out = aug(torch.zeros(4, 1, 28, 28, dtype=torch.uint8), np.arange(4))  # (4, 1, 28, 28) float32
    """

    def __init__(self, kind: str, policy: str, *, n_ops: int = 2, cutout: float = 0.5,
                 crop_scale: tuple[float, float] = _SIMCLR_SCALE):
        if kind == "imagenet":
            raise ValueError("BatchAugment handles small in-memory images (kinds 'grey28', 'rgb32'), got kind "
                             "'imagenet': use the per-sample transforms (weak_transform, ...) there")
        _check_kind(kind)
        if policy not in BATCH_POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(BATCH_POLICIES)}")
        if isinstance(n_ops, bool) or not isinstance(n_ops, int) or n_ops < 0:
            raise ValueError(f"n_ops must be a non-negative integer, got {n_ops!r}")
        if isinstance(cutout, bool) or not isinstance(cutout, (int, float)) or not 0.0 <= cutout <= 1.0:
            raise ValueError(f"cutout must be a fraction in [0, 1], got {cutout!r}")
        self.kind, self.policy, self.n_ops, self.cutout = kind, policy, n_ops, float(cutout)
        self.crop_scale = check_crop_scale(crop_scale)

    def __call__(self, x: torch.Tensor, seeds) -> torch.Tensor:
        """Augment and normalise a batch.

        Args:
            x: uint8 ``(B, C, H, W)`` on any device, C in (1, 3).
            seeds: non-negative integer seeds ``(B,)`` (torch tensor on any device or numpy array), one per
                sample.

        Returns:
            float32 ``(B, C, H, W)`` on ``x.device``, normalised with ``kind``'s statistics.
        """
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in (1, 3):
            got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"BatchAugment expects a uint8 (B, C, H, W) tensor with C in (1, 3), got {got}")
        s = _check_seeds(seeds, x.shape[0])
        if self.policy == "test" or x.shape[0] == 0:
            return normalize(x, self.kind)
        salt, h, w = _POLICY_SALT[self.policy], x.shape[-2], x.shape[-1]
        flip = sample_uniform(s, salt + _SALT_FLIP, 1)[:, 0] < 0.5
        if self.policy in ("weak", "strong"):  # geometry on uint8, then a float copy the steps below write into
            img = _b_flip_pad_crop(x, flip, sample_uniform(s, salt + _SALT_SHIFT, 2)).to(torch.float32)
        if self.policy == "strong":
            img = _b_rand_augment(img, s, self.n_ops, salt)
            if self.cutout > 0:
                img = _b_cutout(img, sample_uniform(s, salt + _SALT_CUTOUT, 3), self.cutout)
        if self.policy == "simclr":
            u = sample_uniform(s, salt + _SALT_CROP, 4 * _SIMCLR_TRIES).reshape(-1, _SIMCLR_TRIES, 4)
            boxes = _crop_boxes(u, h, w, self.crop_scale)
            img = _b_resized_crop(x.to(torch.float32), *boxes, flip)  # crop, resize, flip
            img = _b_color_jitter(img, sample_uniform(s, salt + _SALT_JITTER, 5), colour=self.kind != "grey28")
            if self.kind != "grey28":
                img = _b_grayscale(img, sample_uniform(s, salt + _SALT_GREY, 1)[:, 0])
        mean, std = _stats(self.kind, img.shape[1])
        return img.div_(255.0).sub_(mean.to(img.device)).div_(std.to(img.device))  # normalize(), in place

    def __repr__(self) -> str:
        extra = f", n_ops={self.n_ops}, cutout={self.cutout}" if self.policy == "strong" else ""
        if self.policy == "simclr" and self.crop_scale != _SIMCLR_SCALE:
            extra = f", crop_scale={self.crop_scale}"
        return f"BatchAugment(kind={self.kind!r}, policy={self.policy!r}{extra})"
