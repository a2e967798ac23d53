"""Training core: configs, models, augmentations, the shared loop machinery and the learners built on it.

- :mod:`uslkit.train.config`: one frozen config per learner (:class:`FixMatchConfig`, :class:`SimCLRConfig`,
  :class:`FinetuneConfig`), presets as instances, explicit values always winning.
- :mod:`uslkit.train.registry`: :data:`LEARNERS`, the learners by name (what ``uslkit train`` runs).
- :mod:`uslkit.train.models`: the networks (small CNN, CIFAR ResNet-18, WRN-28-2, ResNet-50) and their files.
- :mod:`uslkit.train.augment`: weak, strong (RandAugment + Cutout) and SimCLR views per image kind.
- :mod:`uslkit.train.batches`: batches as pure functions of ``(seed, step)``.
- :mod:`uslkit.train.loop`: device, AMP, checkpoints and resume, history, progress, DDP (``torchrun``), EMA.
- :mod:`uslkit.train.losses`: NT-Xent, FixMatch.
- learners: :func:`train_simclr`, :func:`train_fixmatch`, :func:`finetune` (linear or full).

Evaluation of trained networks (top-1, kNN, probes) lives with the other metrics in :mod:`uslkit.evaluate`.
"""

from .config import FinetuneConfig, FixMatchConfig, SimCLRConfig
from .finetune import finetune
from .fixmatch import FIXMATCH_PRESETS, train_fixmatch
from .loop import RunSettings, TrainResult, run_loop
from .registry import LEARNERS
from .simclr import SIMCLR_PRESETS, train_simclr

__all__ = ["FIXMATCH_PRESETS", "SIMCLR_PRESETS", "FinetuneConfig", "FixMatchConfig", "LEARNERS", "RunSettings",
           "SimCLRConfig", "TrainResult", "finetune", "run_loop", "train_fixmatch", "train_simclr"]
