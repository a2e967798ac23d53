"""Training core: models, augmentations, the shared loop machinery and the learners built on it.

- :mod:`uslkit.train.models`: the networks (small CNN, CIFAR ResNet-18, WRN-28-2, ResNet-50) and their files.
- :mod:`uslkit.train.augment`: weak, strong (RandAugment + Cutout) and SimCLR views per image kind.
- :mod:`uslkit.train.batches`: batches as pure functions of ``(seed, step)``.
- :mod:`uslkit.train.loop`: device, AMP, checkpoints and resume, history, progress, DDP (``torchrun``), EMA.
- :mod:`uslkit.train.losses`: NT-Xent, FixMatch.
- learners: :func:`train_simclr`, :func:`train_fixmatch`, :func:`finetune` (linear or full).
- :mod:`uslkit.train.evaluation`: top-1 / per-class accuracy, kNN on embeddings, the low-budget AL linear probe.
"""

from .finetune import finetune
from .fixmatch import FIXMATCH_PRESETS, train_fixmatch
from .loop import RunSettings, TrainResult, run_loop
from .simclr import SIMCLR_PRESETS, train_simclr

__all__ = ["FIXMATCH_PRESETS", "SIMCLR_PRESETS", "RunSettings", "TrainResult", "finetune", "run_loop", "train_fixmatch",
           "train_simclr"]
