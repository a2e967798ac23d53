"""Image views for training and evaluation: test, FixMatch weak/strong, SimCLR and its crop-only view; per-sample
and batched.

- :mod:`.policies`: the parameters of every view, defined once (frozen dataclasses and constant tables), the
  image kinds and their normalisation statistics;
- :mod:`.sample`: per-sample transforms of one image under torch's RNG (``DataLoader`` workers; any size);
- :mod:`.batched`: :class:`BatchAugment`, the same views on whole uint8 batches of small images on any device,
  with counter-based per-sample randomness.

Both paths read the policies, so a view's magnitudes and probabilities live in one place; they draw their
random numbers differently (same distribution of views, not the same draws for a seed).
"""

from .batched import BATCH_POLICIES, BatchAugment, sample_uniform
from .policies import (
    CUTOUT_SIDES,
    IMAGE_KINDS,
    RANDAUGMENT_RANGES,
    STATS,
    SimCLRPolicy,
    StrongPolicy,
    WeakPolicy,
    check_crop_scale,
    image_kind,
    normalize,
    simclr_policy,
)
from .sample import (
    FIXMATCH_OPS,
    Cutout,
    MultiViews,
    RandAugmentMC,
    TwoViews,
    crop_transform,
    seeded_call,
    simclr_transform,
    strong_transform,
    test_transform,
    to_uint8_tensor,
    weak_transform,
)

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
    "crop_transform",
    "check_crop_scale",
    "FIXMATCH_OPS",
    "RandAugmentMC",
    "Cutout",
    "MultiViews",
    "TwoViews",
    "seeded_call",
    "BatchAugment",
    "BATCH_POLICIES",
    "sample_uniform",
    "RANDAUGMENT_RANGES",
    "CUTOUT_SIDES",
    "WeakPolicy",
    "StrongPolicy",
    "SimCLRPolicy",
    "simclr_policy",
]
