"""Training core: configs, models, augmentations, the shared loop machinery and the learners built on it.

- :mod:`uslkit.train.config`: one frozen config per learner (:class:`SimCLRConfig`, :class:`MoCoConfig`,
  :class:`MSFConfig`, :class:`CMSFConfig`, :class:`SeLaConfig`, :class:`FixMatchConfig`, :class:`MixMatchConfig`,
  :class:`CoMatchConfig`, :class:`FinetuneConfig`, :class:`USLTConfig`), presets as instances, explicit values
  always winning.
- :mod:`uslkit.train.registry`: :data:`LEARNERS`, the learners by name (what ``uslkit train`` runs).
- :mod:`uslkit.train.models`: the networks (small CNN, CIFAR ResNet-18, WRN-28-2, ResNet-50) and their files.
- :mod:`uslkit.train.augment`: weak, strong (RandAugment + Cutout), SimCLR and crop-only views per image kind.
- :mod:`uslkit.train.batches`: batches as pure functions of ``(seed, step)``.
- :mod:`uslkit.train.loop`: device, AMP, checkpoints and resume, history, progress, DDP (``torchrun``), EMA;
  :mod:`uslkit.train.distributed`: the process group and the all-reduce / all-gather of learner state.
- :mod:`uslkit.train.losses`: NT-Xent, FixMatch, MixMatch, CoMatch, USL-T.
- :mod:`uslkit.train.pseudo`: pseudo-label refinements (distribution alignment, FlexMatch and FreeMatch
  thresholds), FixMatch's options against confirmation bias.
- :mod:`uslkit.train.semi`: what the semi-supervised learners share (labels file, loaders, run record,
  pseudo-label monitor, evaluation).
- learners, one module each:

  - :func:`train_simclr` (:mod:`.simclr`): self-supervised encoder (SimCLR);
  - :func:`train_moco` (:mod:`.moco`): self-supervised encoder (MoCo v2), USL's ImageNet initialiser;
  - :func:`train_msf`, :func:`train_cmsf` (:mod:`.msf`): mean shift and constrained mean shift (CMSF-2Q, CMSF-KM,
    and semi-supervised CMSF from a labels file);
  - :func:`train_sela` (:mod:`.sela`): SeLa self-labelling with Sinkhorn-Knopp pseudo-labels;
  - :func:`train_fixmatch` (:mod:`.fixmatch`): FixMatch, with distribution alignment, FlexMatch and FreeMatch
    thresholds as options;
  - :func:`train_mixmatch` (:mod:`.mixmatch`): MixMatch;
  - :func:`train_comatch` (:mod:`.comatch`): CoMatch (memory-smoothed pseudo-labels, graph-contrastive loss);
  - :func:`finetune` (:mod:`.finetune`): linear or full fine-tuning of a pretrained encoder;
  - :func:`train_usl_t` (:mod:`.usl_t`): USL-T's clustering heads on a pretrained encoder, whose picks
    :func:`uslkit.select.usl_t.select_usl_t` makes (a selection method that trains, not a learner of
    ``LEARNERS``: it needs a budget and an encoder, not a labels file).

Evaluation of trained networks (top-1, kNN, probes) lives with the other metrics in :mod:`uslkit.evaluate`.
"""

from .config import CMSFConfig, FinetuneConfig, FixMatchConfig, MoCoConfig, MSFConfig, SeLaConfig, SimCLRConfig
from .comatch import COMATCH_PRESETS, CoMatchConfig, train_comatch
from .finetune import finetune
from .fixmatch import FIXMATCH_PRESETS, train_fixmatch
from .loop import RunSettings, TrainResult, run_loop
from .mixmatch import MIXMATCH_PRESETS, MixMatchConfig, train_mixmatch
from .moco import MOCO_PRESETS, train_moco
from .msf import train_cmsf, train_msf
from .registry import LEARNERS
from .sela import train_sela
from .simclr import SIMCLR_PRESETS, train_simclr
from .usl_t import USLT_PRESETS, USLTConfig, train_usl_t

__all__ = ["CMSFConfig", "COMATCH_PRESETS", "CoMatchConfig", "FIXMATCH_PRESETS", "FinetuneConfig", "FixMatchConfig",
           "LEARNERS", "MIXMATCH_PRESETS", "MOCO_PRESETS", "MSFConfig", "MixMatchConfig", "MoCoConfig", "RunSettings",
           "SIMCLR_PRESETS", "SeLaConfig", "SimCLRConfig", "TrainResult", "USLTConfig", "USLT_PRESETS", "finetune",
           "run_loop", "train_cmsf", "train_comatch", "train_fixmatch", "train_mixmatch", "train_moco", "train_msf",
           "train_sela", "train_simclr", "train_usl_t"]
