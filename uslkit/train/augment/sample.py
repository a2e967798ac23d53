"""Per-sample transforms (one image at a time, in ``DataLoader`` workers): test, weak, strong, SimCLR.

Every transform takes one image (a uint8 ``(C, H, W)`` tensor; a PIL image or an ``HxW`` / ``HxWx3`` uint8
numpy array is converted first with :func:`to_uint8_tensor`) and returns a float32 normalised
``(C, H', W')`` tensor, for 1- and 3-channel images alike (the channel count is kept). Operations run on
uint8 tensors with :mod:`torchvision.transforms.v2.functional`; the parameters are the policies of
:mod:`.policies`.

Randomness: all random draws come from torch's global CPU RNG (never Python's ``random`` or numpy), so
:func:`seeded_call` makes any single call reproducible, bit for bit, whatever ran before it in the process or
``DataLoader`` worker. Every transform is a picklable object (no lambdas), for ``num_workers > 0``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from ..._validate import check_seed
from .policies import (
    CUTOUT_FILL,
    GEOMETRIC_FILL,
    IMAGENET_CROP_RATIO,
    IMAGENET_RESIZE,
    IMAGENET_SIZE,
    RANDAUGMENT_RANGES,
    WEAK,
    SimCLRPolicy,
    StrongPolicy,
    check_kind,
    cutout_sides,
    normalize,
    simclr_policy,
)

__all__ = [
    "to_uint8_tensor",
    "test_transform",
    "weak_transform",
    "strong_transform",
    "simclr_transform",
    "crop_transform",
    "FIXMATCH_OPS",
    "RandAugmentMC",
    "Cutout",
    "MultiViews",
    "TwoViews",
    "seeded_call",
]


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


class _ToTensor:
    """Any accepted image -> uint8 (C, H, W) (:func:`to_uint8_tensor`)."""

    def __call__(self, img) -> torch.Tensor:
        return to_uint8_tensor(img)

    def __repr__(self) -> str:
        return "ToUint8Tensor()"


class _ToTensorOrBatch(_ToTensor):
    """Like :class:`_ToTensor` but lets uint8 ``(B, C, H, W)`` batches through (deterministic transforms)."""

    def __call__(self, img) -> torch.Tensor:
        if isinstance(img, torch.Tensor) and img.ndim == 4 and img.dtype == torch.uint8:
            return img
        return to_uint8_tensor(img)


class _Normalize:
    """uint8 (C, H, W) -> float32 normalised with ``kind``'s stats (:func:`normalize`)."""

    def __init__(self, kind: str):
        self.kind = check_kind(kind)

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
# random geometry
# ----------------------------------------------------------------------------------------------------------
def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


class _PadCrop:
    """Random translation by up to ``frac`` of the size: reflect-pad ``int(frac * side)`` pixels on every side,
    then crop a random window of the original size (3 pixels for 28x28 at ``frac = 0.125``, 1 for 8x8)."""

    def __init__(self, frac: float = WEAK.translate):
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

    Crop parameters follow torchvision's ``RandomResizedCrop.get_params`` (``tries`` tries of area ~ U(scale),
    log-aspect ~ U(log ratio), then a clipped-ratio centre crop), drawn from torch's RNG.
    """

    def __init__(self, scale: tuple[float, float] = SimCLRPolicy.crop_scale,
                 ratio: tuple[float, float] = SimCLRPolicy.crop_ratio, tries: int = SimCLRPolicy.crop_tries):
        self.scale, self.ratio, self.tries = tuple(scale), tuple(ratio), tries

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        top, left, ch, cw = self._params(h, w)
        return F.resized_crop(img, top, left, ch, cw, [h, w], antialias=True)

    def _params(self, h: int, w: int) -> tuple[int, int, int, int]:
        area = h * w
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(self.tries):
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
    return F.rotate(img, m, interpolation=v2.InterpolationMode.NEAREST, fill=GEOMETRIC_FILL)


def _sharpness(img, m):
    return F.adjust_sharpness(img, m)


def _shear_x(img, m):  # PIL's affine (1, m, 0, 0, 1, 0): shear about the top-left corner, as torchvision
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[math.degrees(math.atan(m)), 0.0],
                    interpolation=v2.InterpolationMode.NEAREST, fill=GEOMETRIC_FILL, center=[0, 0])


def _shear_y(img, m):
    return F.affine(img, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, math.degrees(math.atan(m))],
                    interpolation=v2.InterpolationMode.NEAREST, fill=GEOMETRIC_FILL, center=[0, 0])


def _solarize(img, m):  # PIL.ImageOps.solarize: pixels >= threshold are inverted; threshold = T * 256
    return torch.where(img.to(torch.int16) >= int(m * 256), 255 - img, img)


def _translate_x(img, m):
    return F.affine(img, angle=0.0, translate=[int(m * img.shape[-1]), 0], scale=1.0, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.NEAREST, fill=GEOMETRIC_FILL)


def _translate_y(img, m):
    return F.affine(img, angle=0.0, translate=[0, int(m * img.shape[-2])], scale=1.0, shear=[0.0, 0.0],
                    interpolation=v2.InterpolationMode.NEAREST, fill=GEOMETRIC_FILL)


_OPS = {
    "AutoContrast": _auto_contrast, "Brightness": _brightness, "Color": _color, "Contrast": _contrast,
    "Equalize": _equalize, "Identity": _identity, "Posterize": _posterize, "Rotate": _rotate,
    "Sharpness": _sharpness, "ShearX": _shear_x, "ShearY": _shear_y, "Solarize": _solarize,
    "TranslateX": _translate_x, "TranslateY": _translate_y,
}
# name -> (op on a uint8 (C, H, W) tensor, magnitude range or None, integer magnitude?), in table order
FIXMATCH_OPS: dict[str, tuple[Any, tuple[float, float] | None, bool]] = {
    name: (_OPS[name], rng, integer) for name, (rng, integer) in RANDAUGMENT_RANGES.items()
}


class RandAugmentMC:
    """FixMatch's RandAugment variant: ``n_ops`` ops drawn uniformly with replacement from
    :data:`FIXMATCH_OPS`, each applied with probability ``p`` at a magnitude drawn uniformly from its range in
    FixMatch's Table 12 (Sohn et al. 2020), on a uint8 ``(C, H, W)`` tensor.

    Follows ``RandAugmentMC`` of kekmodel/FixMatch-pytorch except: magnitudes are continuous draws from the
    paper's ranges (the reference draws ``v`` from ``1..9`` on a 10-step grid, e.g. brightness in
    [0.14, 0.86]); Cutout is a separate step (:class:`Cutout`); shears and translations use
    torchvision's affine with nearest interpolation (PIL's ``transform`` in the reference).
    """

    def __init__(self, n_ops: int = StrongPolicy.n_ops, p: float = StrongPolicy.op_p):
        self.n_ops, self.p = n_ops, p
        self.names = tuple(FIXMATCH_OPS)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        for k in torch.randint(len(self.names), (self.n_ops,)).tolist():
            if float(torch.rand(())) >= self.p:
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
        return f"RandAugmentMC(n_ops={self.n_ops}, p={self.p}, ops={len(self.names)} of FixMatch Table 12)"


class Cutout:
    """Fill a square with grey ``fill``: side ``int(u * frac * min(H, W))``, ``u ~ U(0, 1)`` (``side="random"``)
    or ``int(frac * min(H, W))`` (``side="fixed"``), see :class:`.policies.StrongPolicy`; centre uniform over
    the image, clipped at the borders (``CutoutAbs`` of the reference code). Both sides draw ``u``."""

    def __init__(self, frac: float = StrongPolicy.cutout, fill: int = CUTOUT_FILL,
                 side: str = StrongPolicy.cutout_side):
        policy = StrongPolicy(cutout=frac, cutout_side=side, cutout_fill=fill)  # validates
        self.frac, self.fill, self.side = policy.cutout, fill, side

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        h, w = img.shape[-2:]
        side = int(cutout_sides(float(torch.rand(())), self.frac, min(h, w), self.side))
        cy, cx = float(torch.rand(())) * h, float(torch.rand(())) * w
        if side == 0:
            return img
        y0, x0 = int(max(0.0, cy - side / 2)), int(max(0.0, cx - side / 2))
        y1, x1 = min(h, y0 + side), min(w, x0 + side)
        img = img.clone()
        img[..., y0:y1, x0:x1] = self.fill
        return img

    def __repr__(self) -> str:
        extra = "" if self.side == StrongPolicy.cutout_side else f", side={self.side!r}"
        return f"Cutout(frac={self.frac}, fill={self.fill}{extra})"


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
    check_kind(kind)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise ValueError(f"image_size must be a positive integer or None, got {image_size!r}")
    steps: list[Any] = [_ToTensorOrBatch()]
    if kind == "imagenet":
        size = IMAGENET_SIZE if image_size is None else image_size
        resize = IMAGENET_RESIZE if image_size is None else int(round(size / IMAGENET_CROP_RATIO))
        steps += [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    elif image_size is not None:
        steps.append(v2.Resize([image_size, image_size], antialias=True))
    return _Compose(steps + [_Normalize(kind)])


def _weak_steps(kind: str) -> list[Any]:
    if kind == "imagenet":
        return [v2.RandomResizedCrop(IMAGENET_SIZE, antialias=True), v2.RandomHorizontalFlip(WEAK.flip_p)]
    return [v2.RandomHorizontalFlip(WEAK.flip_p), _PadCrop(WEAK.translate)]


def weak_transform(kind: str):
    """FixMatch's weak view (:class:`.policies.WeakPolicy`): random horizontal flip, then a random translation
    by up to 12.5 % of each side (reflect padding + random crop), then normalisation. ``imagenet``:
    ``RandomResizedCrop(224)`` + flip (FixMatch's ImageNet setting). Flips are kept for ``grey28``
    (Fashion-MNIST is left/right symmetric enough; on MNIST digits a flip changes the glyph, build your own
    pipeline there).
    """
    check_kind(kind)
    return _Compose([_ToTensor(), *_weak_steps(kind), _Normalize(kind)])


def strong_transform(kind: str, *, n_ops: int = StrongPolicy.n_ops, cutout: float = StrongPolicy.cutout,
                     cutout_side: str = StrongPolicy.cutout_side):
    """FixMatch's strong view (:class:`.policies.StrongPolicy`): the weak flip + translation,
    :class:`RandAugmentMC` with ``n_ops`` ops, :class:`Cutout`, normalisation.

    Args:
        kind: one of :data:`.policies.IMAGE_KINDS`.
        n_ops: ops per image (FixMatch: 2).
        cutout: largest Cutout side as a fraction of the shorter image side, in [0, 1] (FixMatch: 0.5; 0
            disables Cutout).
        cutout_side: ``"random"`` (default: side drawn up to ``cutout`` of the image, FixMatch Table 12) or
            ``"fixed"`` (always ``cutout`` of the image: 16 px at 32 px, the reference code).
    """
    check_kind(kind)
    policy = StrongPolicy(n_ops=n_ops, cutout=cutout, cutout_side=cutout_side)
    steps = [_ToTensor(), *_weak_steps(kind), RandAugmentMC(policy.n_ops, policy.op_p)]
    if policy.cutout > 0:
        steps.append(Cutout(policy.cutout, policy.cutout_fill, policy.cutout_side))
    return _Compose(steps + [_Normalize(kind)])


def simclr_transform(kind: str, *, crop_scale: tuple[float, float] | None = None,
                     jitter_strength: float = SimCLRPolicy.jitter_strength):
    """One SimCLR view (:class:`.policies.SimCLRPolicy`; Chen et al. 2020, appendix A).

    ``RandomResizedCrop`` back to the input size for ``grey28`` / ``rgb32`` (224 px for ``imagenet``), area
    range ``crop_scale`` (``None``: the kind's, :func:`.policies.simclr_policy`), horizontal flip,
    ``ColorJitter(0.8 s, 0.8 s, 0.8 s, 0.2 s)`` with ``s = jitter_strength`` (default 0.5; SimCLR: 1.0 on
    ImageNet) with probability 0.8 (brightness and contrast only for ``grey28``), ``RandomGrayscale(p=0.2)``
    (colour kinds), and for ``imagenet`` only a Gaussian blur (kernel 23, sigma in [0.1, 2.0]) with
    probability 0.5.
    """
    pol = simclr_policy(kind, crop_scale=crop_scale, jitter_strength=jitter_strength)
    if kind == "imagenet":
        crop: Any = v2.RandomResizedCrop(IMAGENET_SIZE, scale=pol.crop_scale, antialias=True)
    else:
        crop = _SameSizeResizedCrop(scale=pol.crop_scale, ratio=pol.crop_ratio, tries=pol.crop_tries)
    steps = [_ToTensor(), crop, v2.RandomHorizontalFlip(pol.flip_p)]
    if pol.jitter_strength > 0:
        b, c, s, h = pol.jitter
        jitter = v2.ColorJitter(b, c) if kind == "grey28" else v2.ColorJitter(b, c, s, h)
        steps.append(v2.RandomApply([jitter], p=pol.jitter_p))
    if kind != "grey28":
        steps.append(_RandomGrayscale(pol.grayscale_p))
    if kind == "imagenet":
        steps.append(v2.RandomApply([v2.GaussianBlur(pol.blur_kernel, sigma=pol.blur_sigma)], p=pol.blur_p))
    return _Compose(steps + [_Normalize(kind)])


def crop_transform(kind: str, *, crop_scale: tuple[float, float] | None = None):
    """The ``"crop"`` view: the SimCLR view's ``RandomResizedCrop`` and horizontal flip only (no colour). MSF's and
    CMSF's weak (target) view (Koohpayegani et al. 2021, Sec. 4): the reference's ``augmentation_weak`` with
    ``crop_scale=(0.2, 1)`` (the default of the small kinds; ``imagenet`` defaults to SimCLR's (0.08, 1))."""
    pol = simclr_policy(kind, crop_scale=crop_scale)
    if kind == "imagenet":
        crop: Any = v2.RandomResizedCrop(IMAGENET_SIZE, scale=pol.crop_scale, antialias=True)
    else:
        crop = _SameSizeResizedCrop(scale=pol.crop_scale, ratio=pol.crop_ratio, tries=pol.crop_tries)
    return _Compose([_ToTensor(), crop, v2.RandomHorizontalFlip(pol.flip_p), _Normalize(kind)])


class MultiViews:
    """``img -> (t1(img), t2(img), *(t(img) for t in more))``: one view per transform, drawn in order; ``t2``
    defaults to ``t1`` (SimCLR: two draws of the same transform). FixMatch's unlabelled batch:
    ``MultiViews(weak, strong)``; CoMatch's: ``MultiViews(weak, strong, simclr)``. Picklable when the transforms
    are. ``TwoViews`` is the same class under its former name."""

    def __init__(self, t1, t2=None, *more):
        if not callable(t1) or (t2 is not None and not callable(t2)) or not all(callable(t) for t in more):
            raise ValueError("MultiViews needs callable transforms")
        if more and t2 is None:
            raise ValueError("MultiViews: give t2 when giving more than two transforms")
        self.t1, self.t2 = t1, (t1 if t2 is None else t2)
        self.more = tuple(more)

    def __call__(self, img):
        return (self.t1(img), self.t2(img), *(t(img) for t in self.more))

    def __repr__(self) -> str:
        return f"MultiViews({', '.join(repr(t) for t in (self.t1, self.t2, *self.more))})"


#: the former name of :class:`MultiViews` (two views), kept for existing code.
TwoViews = MultiViews


def seeded_call(transform, img, seed: int):
    """``transform(img)`` with torch's CPU RNG seeded by ``seed`` inside a fork: the result depends only on
    ``(transform, img, seed)``, and the caller's RNG state is left as it was."""
    seed = check_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return transform(img)
