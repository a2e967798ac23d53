"""The augmentation policies, defined once: image kinds and their statistics, and every magnitude, probability
and constant of the weak, strong and SimCLR views. The per-sample (:mod:`.sample`) and batched
(:mod:`.batched`) paths both read them; a new view is a new policy here plus its ops in each path.

Image kinds (:data:`IMAGE_KINDS`, :func:`image_kind`) pick sizes and normalisation statistics:

- ``grey28``: 1-channel images up to 32x32 (MNIST, Fashion-MNIST, sklearn digits); Fashion-MNIST stats.
- ``rgb32``: colour images up to 32x32 (CIFAR-10/100, SVHN, BloodMNIST); CIFAR-10 stats.
- ``imagenet``: anything larger (STL-10, image folders); ImageNet stats, 224x224 crops.

References: FixMatch (Sohn et al. 2020; weak = flip + 12.5 % translation, strong = the RandAugment variant of
its Table 12 + Cutout, as ``RandAugmentMC`` of the PyTorch reference code kekmodel/FixMatch-pytorch); SimCLR
(Chen et al. 2020, appendix A; the CIFAR settings of its appendix B.9).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "IMAGE_KINDS",
    "STATS",
    "image_kind",
    "normalize",
    "check_crop_scale",
    "RANDAUGMENT_RANGES",
    "CUTOUT_SIDES",
    "cutout_sides",
    "WeakPolicy",
    "StrongPolicy",
    "SimCLRPolicy",
    "simclr_policy",
    "WEAK",
]

IMAGE_KINDS = ("grey28", "rgb32", "imagenet")
# (mean, std) per channel of pixels scaled to [0, 1].
STATS = {
    "grey28": ((0.2860,), (0.3530,)),  # Fashion-MNIST train set
    "rgb32": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),  # CIFAR-10 train set
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet (torchvision)
}
SMALL = 32  # images with both sides <= this are "small" (grey28 / rgb32)
IMAGENET_SIZE = 224
IMAGENET_RESIZE = 256  # evaluation: resize 256 -> centre crop 224
IMAGENET_CROP_RATIO = 0.875  # 224 / 256, for other evaluation sizes
GEOMETRIC_FILL = 128  # fill of rotate/shear/translate (RandAugmentMC's fillcolor (128, 128, 128))
CUTOUT_FILL = 127  # RandAugmentMC's CutoutAbs colour (127, 127, 127)
LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2 weights, as PIL's "L" conversion and torchvision

# RandAugmentMC ops: name -> (magnitude range of FixMatch Table 12 or None, integer magnitude?)
RANDAUGMENT_RANGES: dict[str, tuple[tuple[float, float] | None, bool]] = {
    "AutoContrast": (None, False),
    "Brightness": ((0.05, 0.95), False),
    "Color": ((0.05, 0.95), False),
    "Contrast": ((0.05, 0.95), False),
    "Equalize": (None, False),
    "Identity": (None, False),
    "Posterize": ((4, 8), True),  # bits kept
    "Rotate": ((-30.0, 30.0), False),  # degrees
    "Sharpness": ((0.05, 0.95), False),
    "ShearX": ((-0.3, 0.3), False),
    "ShearY": ((-0.3, 0.3), False),
    "Solarize": ((0.0, 1.0), False),  # threshold as a fraction of 256
    "TranslateX": ((-0.3, 0.3), False),  # fraction of the width
    "TranslateY": ((-0.3, 0.3), False),
}
GEOMETRIC_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
CUTOUT_SIDES = ("random", "fixed")
_MAX_JITTER_STRENGTH = 2.5  # hue 0.2 s <= 0.5, torchvision's bound


def check_kind(kind: str) -> str:
    if kind not in IMAGE_KINDS:
        raise ValueError(f"unknown image kind {kind!r}; choose one of {', '.join(IMAGE_KINDS)}")
    return kind


def check_crop_scale(crop_scale) -> tuple[float, float]:
    """``(lo, hi)`` area fractions of a SimCLR crop, ``0 < lo <= hi <= 1``, as a float tuple (else ValueError)."""
    try:
        lo, hi = (float(v) for v in crop_scale)
    except (TypeError, ValueError):
        raise ValueError(f"crop_scale must be a pair (lo, hi) of area fractions, got {crop_scale!r}") from None
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {crop_scale!r}")
    return lo, hi


# ----------------------------------------------------------------------------------------------------------
# the policies
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WeakPolicy:
    """FixMatch's weak view: horizontal flip with probability ``flip_p``, then a translation by up to
    ``translate`` of each side (reflect padding + random crop; ``RandomCrop(32, padding=4,
    padding_mode='reflect')`` on CIFAR). ImageNet-size images: ``RandomResizedCrop(224)`` + flip instead."""

    flip_p: float = 0.5
    translate: float = 0.125


WEAK = WeakPolicy()


@dataclass(frozen=True)
class StrongPolicy:
    """FixMatch's strong view: the weak view, ``n_ops`` RandAugmentMC ops (uniform with replacement from
    :data:`RANDAUGMENT_RANGES`, each applied with probability ``op_p`` at a magnitude uniform in its range),
    then Cutout (grey ``cutout_fill`` square, centre uniform over the image, clipped at the borders).

    Cutout side, ``S`` the shorter image side: ``cutout_side="random"`` (default) draws ``floor(u * cutout *
    S)``, ``u ~ U(0, 1)`` (FixMatch Table 12: ``L in [0, 0.5]``; the setting every recorded run used);
    ``"fixed"`` always uses ``floor(cutout * S)``: 16 px on 32x32 images as the reference code's
    ``CutoutAbs(img, 16)`` (kekmodel/FixMatch-pytorch; google-research/fixmatch's ``cutout_numpy`` default), 14
    px on 28x28, 112 px on the 224 px ImageNet crops (scaled with the image).
    """

    n_ops: int = 2
    op_p: float = 0.5
    cutout: float = 0.5
    cutout_side: str = "random"
    cutout_fill: int = CUTOUT_FILL

    def __post_init__(self) -> None:
        if isinstance(self.n_ops, bool) or not isinstance(self.n_ops, int) or self.n_ops < 0:
            raise ValueError(f"n_ops must be a non-negative integer, got {self.n_ops!r}")
        c = self.cutout
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0.0 <= c <= 1.0:
            raise ValueError(f"cutout must be a fraction in [0, 1], got {c!r}")
        if self.cutout_side not in CUTOUT_SIDES:
            raise ValueError(f"cutout_side must be one of {', '.join(CUTOUT_SIDES)}, got {self.cutout_side!r}")
        object.__setattr__(self, "cutout", float(c))


def cutout_sides(u, frac: float, size: int, side: str = StrongPolicy.cutout_side) -> np.ndarray:
    """Cutout side(s) in pixels (float64 whole numbers) for uniform draw(s) ``u`` (a scalar or ``(B,)``) on
    images whose shorter side is ``size``: ``floor(u * frac * size)`` for ``side="random"``, ``floor(frac *
    size)`` for ``"fixed"`` (``u`` ignored)."""
    u = np.asarray(u, dtype=np.float64)
    if side == "fixed":
        u = np.ones_like(u)
    return np.floor(u * frac * size)


@dataclass(frozen=True)
class SimCLRPolicy:
    """One SimCLR view (Chen et al. 2020, appendix A): ``RandomResizedCrop`` (area ``crop_scale``, aspect
    ``crop_ratio``, torchvision's ``crop_tries`` tries, back to the input size or 224 px for ``imagenet``),
    horizontal flip ``flip_p``, ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with probability ``jitter_p``
    (``s = jitter_strength``; grey images: brightness and contrast only; ``s = 0``: no jitter), grayscale with
    probability ``grayscale_p`` (colour only), and for ``imagenet`` only a Gaussian blur (kernel
    ``blur_kernel`` = 10 % of 224, sigma uniform in ``blur_sigma``) with probability ``blur_p``.

    ``jitter_strength``: SimCLR uses 1.0 on ImageNet and 0.5 on CIFAR-10 (appendix B.9); the default is 0.5,
    ``ColorJitter(0.4, 0.4, 0.4, 0.1)``. At most 2.5 (hue 0.5).
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    crop_tries: int = 10
    flip_p: float = 0.5
    jitter_strength: float = 0.5
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_kernel: int = 23
    blur_sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop_scale", check_crop_scale(self.crop_scale))
        s = self.jitter_strength
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s <= _MAX_JITTER_STRENGTH:
            raise ValueError(f"jitter_strength must be a number in [0, {_MAX_JITTER_STRENGTH}], got {s!r}")
        object.__setattr__(self, "jitter_strength", float(s))

    @property
    def jitter(self) -> tuple[float, float, float, float]:
        """``(brightness, contrast, saturation, hue)`` of the colour jitter."""
        s = self.jitter_strength
        return 0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s


_SIMCLR_IMAGENET_SCALE = (0.08, 1.0)


def simclr_policy(kind: str, *, crop_scale=None, jitter_strength: float = SimCLRPolicy.jitter_strength
                  ) -> SimCLRPolicy:
    """The SimCLR policy of image kind ``kind``: crops of area (0.2, 1) for ``grey28`` / ``rgb32`` (the
    common CIFAR setting of SimCLR re-implementations), (0.08, 1) for ``imagenet``; ``crop_scale`` overrides
    that range (:func:`check_crop_scale`)."""
    check_kind(kind)
    if crop_scale is None:
        crop_scale = _SIMCLR_IMAGENET_SCALE if kind == "imagenet" else SimCLRPolicy.crop_scale
    return SimCLRPolicy(crop_scale=crop_scale, jitter_strength=jitter_strength)


# ----------------------------------------------------------------------------------------------------------
# kinds and normalisation
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
    if max(h, w) > SMALL:
        return "imagenet"
    return "grey28" if channels == 1 else "rgb32"


def stats(kind: str, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std ``(C, 1, 1)`` for ``channels`` channels (3-channel stats averaged for
    1-channel images, 1-channel stats repeated for 3-channel ones)."""
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
    check_kind(kind)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"normalize expects a torch tensor, got {type(x).__name__}")
    if x.ndim not in (3, 4) or x.shape[-3] not in (1, 3):
        raise ValueError(f"expected (C, H, W) or (B, C, H, W) with C in (1, 3), got shape {tuple(x.shape)}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise ValueError(f"expected uint8 or float pixels in [0, 255], got dtype {x.dtype}")
    mean, std = stats(kind, x.shape[-3])
    mean, std = mean.to(x.device), std.to(x.device)
    return (x.to(torch.float32) / 255.0 - mean) / std
