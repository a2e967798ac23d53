"""Batched augmentation: the weak, strong and SimCLR views of a whole uint8 batch on any device.

:class:`BatchAugment` runs the policies of :mod:`.policies` for kinds ``grey28`` / ``rgb32`` on a batch
``(B, C, H, W)`` with a few tensor ops per batch, with per-sample randomness from :func:`sample_uniform` of one
seed per sample (a counter-based splitmix64 hash, no global RNG): sample ``i``'s view depends only on
``(x[i], seeds[i])``. Pixels stay float32 with integer values 0..255 between steps, rounded or truncated where
the uint8 per-sample ops are.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..._rng import GOLDEN, splitmix64_np
from .policies import (
    CUTOUT_FILL,
    GEOMETRIC_FILL,
    GEOMETRIC_OPS,
    LUMA,
    RANDAUGMENT_RANGES,
    WEAK,
    SimCLRPolicy,
    StrongPolicy,
    check_kind,
    cutout_sides,
    normalize,
    simclr_policy,
    stats,
)

__all__ = ["BatchAugment", "BATCH_POLICIES", "sample_uniform"]

BATCH_POLICIES = ("test", "weak", "strong", "simclr", "crop")
# salt bases per policy (so weak and strong views of one seed are independent) and offsets per random step
_POLICY_SALT = {"test": 0, "weak": 1 << 20, "strong": 2 << 20, "simclr": 3 << 20, "crop": 4 << 20}
_SALT_FLIP, _SALT_SHIFT, _SALT_CUTOUT, _SALT_CROP, _SALT_JITTER, _SALT_GREY = 1, 2, 3, 4, 5, 6
_SALT_OPS = 1 << 10  # + step index of RandAugmentMC


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
    key = splitmix64_np(splitmix64_np(s) ^ np.full(s.shape, int(salt), dtype=np.uint64))
    counters = np.arange(int(k), dtype=np.uint64)[None, :] * np.full((1, 1), GOLDEN, dtype=np.uint64)
    z = splitmix64_np(key[:, None] + counters)
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


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


def _b_flip_pad_crop(x: torch.Tensor, flip: np.ndarray, u: np.ndarray, frac: float = WEAK.translate) -> torch.Tensor:
    """Batched ``RandomHorizontalFlip`` + the per-sample ``_PadCrop``, as one ``gather`` of precomputed indices
    (any dtype and device; used on uint8, 4x less memory than float).

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
    luma = x[:, 0:1] * LUMA[0]
    luma += x[:, 1:2] * LUMA[1]
    luma += x[:, 2:3] * LUMA[2]
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
    """Inverse matrices of the geometric RandAugmentMC ops at magnitudes ``m``."""
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


def _b_affine_nearest(x: torch.Tensor, mats: np.ndarray, fill: float = GEOMETRIC_FILL) -> torch.Tensor:
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
assert tuple(_BATCH_OPS) == tuple(RANDAUGMENT_RANGES)


def _magnitudes(name: str, u: np.ndarray) -> np.ndarray:
    """Uniforms -> magnitudes as the per-sample ``RandAugmentMC`` draws them (integer ops: ``randint(lo, hi + 1)``)."""
    rng, integer = RANDAUGMENT_RANGES[name]
    if rng is None:
        return np.zeros_like(u)
    lo, hi = rng
    if integer:
        return np.minimum(np.floor(u * (int(hi) - int(lo) + 1)), int(hi) - int(lo)) + int(lo)
    return lo + (hi - lo) * u


def _b_rand_augment(x: torch.Tensor, seeds: np.ndarray, n_ops: int, salt: int,
                    p: float = StrongPolicy.op_p) -> torch.Tensor:
    """Batched ``RandAugmentMC``: per step, each sample draws (op, apply coin, magnitude); each op runs once on
    the samples that drew it (the five geometric ops share one ``grid_sample``)."""
    names = tuple(RANDAUGMENT_RANGES)
    h, w = x.shape[-2:]
    for t in range(n_ops):
        u = sample_uniform(seeds, salt + _SALT_OPS + t, 3)
        op = np.minimum(np.floor(u[:, 0] * len(names)).astype(np.int64), len(names) - 1)
        op[u[:, 1] >= p] = -1  # coin: each drawn op applies with probability p
        geo_idx, geo_mats = [], []
        for k, name in enumerate(names):
            idx = np.flatnonzero(op == k)
            if idx.size == 0 or name == "Identity":
                continue
            m = _magnitudes(name, u[idx, 2])
            if name in GEOMETRIC_OPS:
                geo_idx.append(idx)
                geo_mats.append(_geometric_matrix(name, m, h, w))
                continue
            ii = _index(idx, x.device)
            x[ii] = _BATCH_OPS[name](x[ii], m)
        if geo_idx:
            ii = _index(np.concatenate(geo_idx), x.device)
            x[ii] = _b_affine_nearest(x[ii], np.concatenate(geo_mats))
    return x


def _b_cutout(x: torch.Tensor, u: np.ndarray, frac: float, fill: float = CUTOUT_FILL,
              side: str = StrongPolicy.cutout_side) -> torch.Tensor:
    """Batched ``Cutout``, in place (``u``: ``(B, 3)`` uniforms for the side and the centre row and column;
    ``side``: see :func:`.policies.cutout_sides`)."""
    h, w = x.shape[-2:]
    side = cutout_sides(u[:, 0], frac, min(h, w), side)
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
def _crop_boxes(u: np.ndarray, h: int, w: int, scale: tuple[float, float] = SimCLRPolicy.crop_scale,
                ratio: tuple[float, float] = SimCLRPolicy.crop_ratio) -> tuple[np.ndarray, ...]:
    """``_SameSizeResizedCrop._params`` vectorised: ``u`` is ``(B, tries, 4)`` uniforms (area, log-ratio,
    top, left); the first try whose box fits wins, else the ratio-clipped centre crop. Returns int64
    ``(top, left, ch, cw)``, each ``(B,)``."""
    area = h * w
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    lr = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(lr[0] + (lr[1] - lr[0]) * u[..., 1])
    cw, ch = np.round(np.sqrt(target * aspect)), np.round(np.sqrt(target / aspect))  # Python round: half-even
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.argmax(1)
    rows = np.arange(u.shape[0])
    cw, ch, uy, ux = cw[rows, first], ch[rows, first], u[rows, first, 2], u[rows, first, 3]
    top, left = np.floor(uy * (h - ch + 1)), np.floor(ux * (w - cw + 1))
    in_ratio = w / h  # fallback (no try fits): the centre crop with the ratio clipped to the range
    if in_ratio < min(ratio):
        fw, fh = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        fw, fh = int(round(h * max(ratio))), h
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


def _jitter_factor(strength: float, v: np.ndarray) -> np.ndarray:
    """Uniforms -> factors uniform in ``[max(0, 1 - strength), 1 + strength]`` (torchvision's ColorJitter)."""
    if strength <= 1.0:
        return 1.0 - strength + 2 * strength * v
    return (1.0 + strength) * v


def _b_color_jitter(x: torch.Tensor, u: np.ndarray, colour: bool,
                    jitter: tuple[float, float, float, float] = SimCLRPolicy().jitter,
                    p: float = SimCLRPolicy.jitter_p) -> torch.Tensor:
    """``RandomApply([ColorJitter(*jitter)], p)`` batched (grey: brightness and contrast only): ``u`` is
    ``(B, 5)`` (coin, brightness, contrast, saturation, hue); the adjustments run in this fixed order."""
    idx = np.flatnonzero(u[:, 0] < p)
    if idx.size == 0:
        return x
    bright, contrast, sat, hue = jitter
    ii, v = _index(idx, x.device), u[idx]
    y = _b_brightness(x[ii], _jitter_factor(bright, v[:, 1]))
    y = _b_contrast(y, _jitter_factor(contrast, v[:, 2]))
    if colour:
        y = _b_color(y, _jitter_factor(sat, v[:, 3]))
        y = _b_hue(y, -hue + 2 * hue * v[:, 4])
    x[ii] = y
    return x


def _b_grayscale(x: torch.Tensor, u: np.ndarray, p: float = SimCLRPolicy.grayscale_p) -> torch.Tensor:
    idx = np.flatnonzero(u < p)
    if idx.size and x.shape[1] == 3:
        ii = _index(idx, x.device)
        x[ii] = _gray(x[ii]).expand(-1, 3, -1, -1)
    return x


class BatchAugment:
    """Batched, device-agnostic test/weak/strong/simclr/crop views for kinds ``"grey28"`` and ``"rgb32"``.

    ``aug(x, seeds)`` augments a uint8 batch ``(B, C, H, W)`` (C = 1 or 3, any small size) on ``x.device`` and
    returns it normalised as :func:`.policies.normalize`. Every random choice of sample ``i`` comes from
    :func:`sample_uniform` of ``seeds[i]`` salted by the policy and the step, so ``aug(x, s)[i]`` equals
    ``aug(x[i:i+1], s[i:i+1])[0]`` bit for bit on the CPU. Weak and strong views with the same seeds are
    independent; two views of one policy need two seed arrays.

    Policies, with the parameters of :mod:`.policies` (Sohn et al. 2020; Chen et al. 2020): ``test``
    (normalisation only); ``weak`` (flip, reflect-padded translation: one ``gather``, on uint8); ``strong``
    (weak, RandAugmentMC: each op once per step on the samples that drew it, the five geometric ops in one
    nearest ``grid_sample``; then Cutout); ``simclr`` (per-sample crop boxes resized by one bilinear
    ``grid_sample``, flip, colour jitter, grayscale); ``crop`` (the simclr crop and flip only: MSF's weak view).

    Deviations from the per-sample transforms (same distribution of views, not the same draws): random
    numbers come from the counter hash, not torch's RNG; single ops equal the torchvision uint8 ops exactly
    (flip, translation, AutoContrast, Brightness, Equalize, Posterize, Solarize, Cutout, grayscale) or up to
    1 grey level in a few pixels (Color/Contrast/Sharpness blends, the hue shift in closed form, Rotate/Shear
    pixel-centre ties, the bilinear crop); ColorJitter runs brightness, contrast, saturation, hue in this
    fixed order (torchvision shuffles it per image).

    Args:
        kind: ``"grey28"`` or ``"rgb32"``; ``"imagenet"`` is refused (use the per-sample transforms).
        policy: one of :data:`BATCH_POLICIES`.
        n_ops, cutout, cutout_side: strong only, see :func:`.sample.strong_transform`.
        crop_scale: simclr and crop, see :func:`.sample.simclr_transform`; jitter_strength: simclr only.
    """

    def __init__(self, kind: str, policy: str, *, n_ops: int = StrongPolicy.n_ops,
                 cutout: float = StrongPolicy.cutout, cutout_side: str = StrongPolicy.cutout_side,
                 crop_scale: tuple[float, float] | None = None,
                 jitter_strength: float = SimCLRPolicy.jitter_strength):
        if kind == "imagenet":
            raise ValueError("BatchAugment handles small in-memory images (kinds 'grey28', 'rgb32'), got kind "
                             "'imagenet': use the per-sample transforms (weak_transform, ...) there")
        check_kind(kind)
        if policy not in BATCH_POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(BATCH_POLICIES)}")
        self.kind, self.policy = kind, policy
        self.strong = StrongPolicy(n_ops=n_ops, cutout=cutout, cutout_side=cutout_side)
        self.simclr = simclr_policy(kind, crop_scale=crop_scale, jitter_strength=jitter_strength)
        self.n_ops, self.cutout, self.crop_scale = self.strong.n_ops, self.strong.cutout, self.simclr.crop_scale

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
        salt = _POLICY_SALT[self.policy]
        flip_p = self.simclr.flip_p if self.policy in ("simclr", "crop") else WEAK.flip_p
        flip = sample_uniform(s, salt + _SALT_FLIP, 1)[:, 0] < flip_p
        if self.policy in ("weak", "strong"):  # geometry on uint8, then a float copy the steps below write into
            u = sample_uniform(s, salt + _SALT_SHIFT, 2)
            img = _b_flip_pad_crop(x, flip, u, WEAK.translate).to(torch.float32)
        if self.policy == "strong":
            st = self.strong
            img = _b_rand_augment(img, s, st.n_ops, salt, st.op_p)
            if st.cutout > 0:
                u = sample_uniform(s, salt + _SALT_CUTOUT, 3)
                img = _b_cutout(img, u, st.cutout, st.cutout_fill, st.cutout_side)
        if self.policy in ("simclr", "crop"):
            img = self._simclr(x, s, flip, salt, colour=self.policy == "simclr")
        mean, std = stats(self.kind, img.shape[1])
        return img.div_(255.0).sub_(mean.to(img.device)).div_(std.to(img.device))  # normalize(), in place

    def _simclr(self, x: torch.Tensor, s: np.ndarray, flip: np.ndarray, salt: int, colour: bool = True
                ) -> torch.Tensor:
        pol, (h, w) = self.simclr, x.shape[-2:]
        u = sample_uniform(s, salt + _SALT_CROP, 4 * pol.crop_tries).reshape(-1, pol.crop_tries, 4)
        boxes = _crop_boxes(u, h, w, pol.crop_scale, pol.crop_ratio)
        img = _b_resized_crop(x.to(torch.float32), *boxes, flip)  # crop, resize, flip
        if not colour:
            return img
        if pol.jitter_strength > 0:
            u = sample_uniform(s, salt + _SALT_JITTER, 5)
            img = _b_color_jitter(img, u, self.kind != "grey28", pol.jitter, pol.jitter_p)
        if self.kind != "grey28":
            img = _b_grayscale(img, sample_uniform(s, salt + _SALT_GREY, 1)[:, 0], pol.grayscale_p)
        return img

    def __repr__(self) -> str:
        extra = ""
        if self.policy == "strong":
            extra = f", n_ops={self.n_ops}, cutout={self.cutout}"
            if self.strong.cutout_side != StrongPolicy.cutout_side:
                extra += f", cutout_side={self.strong.cutout_side!r}"
        if self.policy in ("simclr", "crop") and self.crop_scale != SimCLRPolicy.crop_scale:
            extra += f", crop_scale={self.crop_scale}"
        if self.policy == "simclr":
            if self.simclr.jitter_strength != SimCLRPolicy.jitter_strength:
                extra += f", jitter_strength={self.simclr.jitter_strength}"
        return f"BatchAugment(kind={self.kind!r}, policy={self.policy!r}{extra})"
