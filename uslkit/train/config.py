"""Learner configurations: one frozen dataclass per learner, its presets as instances, one resolution rule.

Every hyperparameter of a learner is a field of its config, defined once with its default. A preset is an
instance (``FixMatchConfig.PRESETS["cpu"]``). :func:`resolve_config` builds the config a run uses::

    base = config if config is not None else (PRESETS[preset] if preset else Config())
    cfg = dataclasses.replace(base, **overrides)

``overrides`` are exactly the keyword arguments the caller passed, so what the caller says always wins, even
a value equal to the default (``preset="cpu", ema_decay=0.999`` trains with 0.999). Run settings (seed,
out_dir, device, amp, checkpointing, progress) are not part of a config: see
:class:`uslkit.train.loop.RunSettings`.

The run folder's parameter record comes from the config (:meth:`LearnerConfig.run_params`); a field declared
with ``recorded_if_changed(...)`` enters the record only when it differs from its default, so run folders
made before that field existed still resume.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .._validate import check_positive_int
from .loop import RunSettings

#: the keyword arguments of every learner that are run settings (:class:`RunSettings`), not hyperparameters
RUN_SETTINGS = tuple(f.name for f in dataclasses.fields(RunSettings) if f.name != "steps")

__all__ = ["LearnerConfig", "FixMatchConfig", "SimCLRConfig", "FinetuneConfig", "CoMatchConfig", "MixMatchConfig",
           "USLTConfig", "MoCoConfig", "resolve_config", "recorded_if_changed", "run_folder", "RUN_SETTINGS",
           "split_settings"]


def recorded_if_changed(default: Any) -> Any:
    """A config field that enters the run record only when it differs from ``default`` (see the module doc)."""
    return field(default=default, metadata={"recorded_if_changed": True})


@dataclass(frozen=True)
class LearnerConfig:
    """Base of the learner configs: presets, overrides and the run record."""

    LEARNER: ClassVar[str] = ""
    PRESETS: ClassVar[dict[str, "LearnerConfig"]] = {}
    #: groups of fields that replace each other: an override of one clears the others (SimCLR's steps / epochs)
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = ()
    #: groups of fields of which a run needs one set (FixMatch: steps; SimCLR: steps or epochs)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = ()

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def preset(cls, name: str) -> "LearnerConfig":
        """The preset ``name`` (a key of ``PRESETS``)."""
        if name not in cls.PRESETS:
            raise ValueError(f"unknown {cls.LEARNER} preset {name!r}; valid: {[None, *cls.PRESETS]}")
        return cls.PRESETS[name]

    def missing(self) -> list[tuple[str, ...]]:
        """The groups of :attr:`REQUIRED` with no field set: a run needs one field of each."""
        return [group for group in self.REQUIRED if all(getattr(self, k) is None for k in group)]

    def check_complete(self) -> None:
        """Raise ``ValueError`` naming what a run still needs (:meth:`missing`), e.g. ``steps``."""
        missing = self.missing()
        if missing:
            presets = ", ".join(f"{name!r}" for name in self.PRESETS)
            raise ValueError(f"{self.LEARNER} needs " + " and ".join(" or ".join(g) for g in missing)
                             + f" (or a preset that sets it: {presets})")

    def steps_for(self, n: int) -> int:
        """The steps of a run over a pool of ``n`` images: ``steps``, or ``epochs * n / batch_size`` rounded (at
        least 1), for configs with ``steps`` / ``epochs`` and ``batch_size``.

        Raises:
            ValueError: ``batch_size`` larger than the pool, or neither ``steps`` nor ``epochs`` set.
        """
        if self.batch_size > n:
            raise ValueError(f"batch_size {self.batch_size} is larger than the dataset ({n} images)")
        self.check_complete()
        return self.steps if self.steps is not None else max(1, round(float(self.epochs) * n / self.batch_size))

    def _check_length(self) -> None:
        """Validate the ``steps`` / ``epochs`` pair of a config that has both: at most one, a positive int / float."""
        from .._validate import check_float

        if self.steps is not None and self.epochs is not None:
            raise ValueError("give exactly one of steps and epochs")
        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        if self.epochs is not None:
            check_float(self.epochs, name="epochs", low=0.0, low_open=True)

    def run_params(self) -> dict[str, Any]:
        """The fields as the run folder records them (tuples as lists; see :func:`recorded_if_changed`)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("recorded_if_changed") and value == f.default:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


def resolve_config(cls: type[LearnerConfig], config: LearnerConfig | None, preset: str | None,
                   overrides: dict[str, Any]) -> LearnerConfig:
    """The config a run uses: ``config`` (or the preset ``preset``, or the defaults) with every key of
    ``overrides`` replaced (see the module docstring).

    Raises:
        ValueError: both ``config`` and ``preset`` given, an unknown preset, or an override that is not a
            field of ``cls`` (the message lists the valid ones).
        TypeError: ``config`` is not a ``cls``.
    """
    if config is not None and preset is not None:
        raise ValueError(f"give either config or preset={preset!r}, not both (apply a preset with "
                         f"{cls.__name__}.preset({preset!r}) and dataclasses.replace)")
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"config must be a {cls.__name__}, got {type(config).__name__}")
    unknown = sorted(set(overrides) - set(cls.field_names()))
    if unknown:
        raise ValueError(f"unknown {cls.LEARNER} parameter(s) {unknown}; valid: {sorted(cls.field_names())}")
    base = config if config is not None else cls.preset(preset) if preset is not None else cls()
    for group in cls.ALTERNATIVES:  # giving one of a group clears the base's others
        if any(overrides.get(k) is not None for k in group):
            overrides = {**{k: None for k in group}, **overrides}
    return dataclasses.replace(base, **overrides)


def run_folder(root, config: LearnerConfig, *, dataset, seed: int, **inputs) -> Path:
    """``root / "<learner>_<dataset>_n<n>_<arch>_s<seed>_<hash>"``: a run folder named by everything that defines
    the run (the config's fields, the dataset's name, split and size, the seed and ``inputs`` such as the init
    checkpoint or the labels file), so that changing any of them starts a new folder instead of meeting a
    folder that holds another run. ``inputs`` values are hashed by their ``str`` (paths: the path).
    """
    name = getattr(dataset, "name", None) or "data"
    key = {"learner": config.LEARNER, "config": config.run_params(), "dataset": name,
           "split": getattr(dataset, "split", None), "n": len(dataset), "seed": int(seed),
           "inputs": {k: str(v) for k, v in inputs.items()}}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:10]
    arch = getattr(config, "arch", None) or getattr(config, "mode", "")
    arch = f"_{arch}" if arch else ""  # USL-T has neither: its network is the given encoder
    return Path(root) / f"{config.LEARNER.lower()}_{name}_n{len(dataset)}{arch}_s{int(seed)}_{digest}"


def split_settings(cls: type[LearnerConfig], kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a learner's ``**kwargs`` into ``(config overrides, run settings)``.

    Raises:
        ValueError: a name that is neither a field of ``cls`` nor a :class:`RunSettings` field.
    """
    fields = set(cls.field_names())
    unknown = sorted(set(kwargs) - fields - set(RUN_SETTINGS))
    if unknown:
        raise ValueError(f"unknown {cls.LEARNER} parameter(s) {unknown}; valid: {sorted(fields)} and the run "
                         f"settings {list(RUN_SETTINGS)}")
    return ({k: v for k, v in kwargs.items() if k in fields},
            {k: v for k, v in kwargs.items() if k in RUN_SETTINGS})


# ----------------------------------------------------------------------------------------------------------
# FixMatch
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FixMatchConfig(LearnerConfig):
    """FixMatch (Sohn et al. 2020, Alg. 1; the reference code's defaults for CIFAR-10).

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name.
        steps: optimisation steps (``None``: must be given; the presets set it).
        batch_size, mu: labelled images per step and unlabelled per labelled image.
        lr, momentum, nesterov, weight_decay: SGD; decay on weights only, schedule ``lr cos(7 pi k / 16 K)``.
        threshold, lambda_u: the confidence threshold ``tau`` and the unlabelled loss weight.
        ema_decay: EMA of the weights used for evaluation.
        cutout: the strong view's Cutout side: ``"random"`` (the paper's RandAugment table: a side drawn up
            to half the image) or ``"fixed"`` (the reference code: 16 px at 32 px, scaled with the image).
        distribution_alignment: ``None`` (FixMatch), ``"uniform"`` or ``"labeled"``: ReMixMatch's alignment of
            the weak-view probabilities before the threshold and the pseudo-label, towards a uniform prior or the
            labels file's class histogram (:class:`uslkit.train.pseudo.DistributionAlignment`).
        da_window: unlabelled batches in its running mean of predictions (128, ReMixMatch).
        threshold_mode: ``"fixed"`` (``threshold`` for every class, FixMatch), ``"flexmatch"`` (class thresholds
            ``M(beta_c) * threshold``, Zhang et al. 2021) or ``"freematch"`` (self-adaptive, Wang et al. 2023;
            it does not use ``threshold``, which must then keep its default). See :mod:`uslkit.train.pseudo`.
        flexmatch_warmup: FlexMatch's threshold warm-up (on in the paper).
        freematch_ema: FreeMatch's EMA decay ``lambda`` of its threshold estimates (0.999).
        fairness_weight: ``w_f`` of FreeMatch's self-adaptive fairness loss (0.001, the value of all USB
            classic-CV FreeMatch configs; USB's code default is 0.01); 0 turns it off.

    The options of the last group are off by default (the old FixMatch, bit for bit); a FlexMatch / FreeMatch /
    alignment field other than its default needs its option on.
    """

    LEARNER: ClassVar[str] = "FixMatch"
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps",),)

    arch: str = "cnn_small"
    steps: int | None = None
    batch_size: int = 64
    mu: int = 7
    lr: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    threshold: float = 0.95
    lambda_u: float = 1.0
    ema_decay: float = 0.999
    cutout: str = recorded_if_changed("random")
    distribution_alignment: str | None = recorded_if_changed(None)
    da_window: int = recorded_if_changed(128)
    threshold_mode: str = recorded_if_changed("fixed")
    flexmatch_warmup: bool = recorded_if_changed(True)
    freematch_ema: float = recorded_if_changed(0.999)
    fairness_weight: float = recorded_if_changed(0.001)

    def __post_init__(self) -> None:
        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        check_positive_int(self.batch_size, name="batch_size")
        check_positive_int(self.mu, name="mu")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.cutout not in ("random", "fixed"):
            raise ValueError(f"cutout must be 'random' or 'fixed', got {self.cutout!r}")
        self._check_confirmation_options()

    def _check_confirmation_options(self) -> None:
        """Validate distribution alignment and the threshold modes; an option's field needs the option on."""
        from .._validate import check_float

        if self.distribution_alignment not in (None, "uniform", "labeled"):
            raise ValueError(f"distribution_alignment must be None, 'uniform' or 'labeled', got "
                             f"{self.distribution_alignment!r}")
        check_positive_int(self.da_window, name="da_window")
        if self.threshold_mode not in ("fixed", "flexmatch", "freematch"):
            raise ValueError(f"threshold_mode must be 'fixed', 'flexmatch' or 'freematch', got {self.threshold_mode!r}")
        if not isinstance(self.flexmatch_warmup, bool):
            raise ValueError(f"flexmatch_warmup must be True or False, got {self.flexmatch_warmup!r}")
        check_float(self.freematch_ema, name="freematch_ema", low=0.0, high=1.0, high_open=True)
        check_float(self.fairness_weight, name="fairness_weight", low=0.0)
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        needs = {"da_window": ("distribution_alignment", self.distribution_alignment is not None),
                 "flexmatch_warmup": ("threshold_mode='flexmatch'", self.threshold_mode == "flexmatch"),
                 "freematch_ema": ("threshold_mode='freematch'", self.threshold_mode == "freematch"),
                 "fairness_weight": ("threshold_mode='freematch'", self.threshold_mode == "freematch")}
        for name, (option, on) in needs.items():
            if not on and getattr(self, name) != defaults[name]:
                raise ValueError(f"{name}={getattr(self, name)!r} has no effect without {option}")
        if self.threshold_mode == "freematch" and self.threshold != defaults["threshold"]:
            raise ValueError(f"threshold={self.threshold!r} has no effect with threshold_mode='freematch' (its "
                             "thresholds are self-adaptive); leave threshold at its default")


_FIXMATCH_PAPER = FixMatchConfig(arch="wrn28_2", steps=2**20, ema_decay=0.999)
FixMatchConfig.PRESETS = {
    # FixMatch's CIFAR-10 setting (Sohn et al. 2020, Sec. 4 and the reference code), for a GPU.
    "paper": _FIXMATCH_PAPER,
    # The same with weight decay 1e-3, the value USL's appendix trains FixMatch with (Wang, Lian & Yu 2022).
    "usl": dataclasses.replace(_FIXMATCH_PAPER, weight_decay=1e-3),
    # The CPU scale of benchmarks/bench_train_fmnist.py and notebook 04: the paper's losses and batch shape on
    # the small CNN for 250 steps, from a self-supervised encoder; EMA 0.99 since 0.999**250 = 0.78 would
    # still weigh the initial weights.
    "cpu": FixMatchConfig(arch="cnn_small", steps=250, ema_decay=0.99),
}


# ----------------------------------------------------------------------------------------------------------
# SimCLR
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimCLRConfig(LearnerConfig):
    """SimCLR (Chen et al. 2020): NT-Xent on two views, a 2-layer projection head.

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name.
        steps / epochs: length of training, exactly one of them (``epochs`` = passes over the dataset).
        batch_size: images per global batch (each gives two views).
        optimizer: ``"sgd"`` (momentum, the CIFAR recipe of SimSiam/MoCo re-implementations) or ``"lars"``
            (SimCLR's, appendix B.1).
        lr: base learning rate; ``None``: ``0.06 * batch_size / 256`` (SGD) or ``0.3 * batch_size / 256``
            (LARS, SimCLR appendix B.1).
        weight_decay: ``None``: 5e-4 (SGD) or 1e-6 (LARS). ``momentum``: 0.9.
        temperature: NT-Xent temperature (0.5, SimCLR's CIFAR-10 value; 0.1 in its ImageNet code).
        proj_dim: projection output size (128).
        crop_scale: area range of the random resized crops; ``None``: (0.2, 1) for 28/32 px images, (0.08, 1)
            for ImageNet-size ones.
        jitter_strength: colour-jitter strength ``s`` of ``ColorJitter(0.8s, 0.8s, 0.8s, 0.2s)`` (SimCLR
            appendix A: 1.0 on ImageNet, 0.5 on CIFAR-10); grey images get brightness and contrast only.
        warmup_steps: linear warm-up; ``None``: 10 % of the steps, at most 10 epochs.
    """

    LEARNER: ClassVar[str] = "SimCLR"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    arch: str = "cnn_small"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 256
    optimizer: str = recorded_if_changed("sgd")
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    temperature: float = 0.5
    proj_dim: int = 128
    crop_scale: tuple[float, float] | None = recorded_if_changed(None)
    jitter_strength: float = recorded_if_changed(0.5)
    warmup_steps: int | None = None

    def __post_init__(self) -> None:
        check_positive_int(self.batch_size, name="batch_size")
        check_positive_int(self.proj_dim, name="proj_dim")
        if self.optimizer not in ("sgd", "lars"):
            raise ValueError(f"optimizer must be 'sgd' or 'lars', got {self.optimizer!r}")
        if self.crop_scale is not None:
            from .augment import check_crop_scale

            object.__setattr__(self, "crop_scale", check_crop_scale(self.crop_scale))
        self._check_length()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 <= self.jitter_strength <= 2.5:  # torchvision caps the hue factor 0.2 s at 0.5
            raise ValueError(f"jitter_strength must be in [0, 2.5], got {self.jitter_strength}")


SimCLRConfig.PRESETS = {
    # SimCLR's ImageNet recipe (Chen et al. 2020, Sec. 2.3 and appendices A, B.1; the reference code's
    # temperature 0.1): ResNet-50, batch 4096, LARS lr 0.3 * 4096 / 256 = 4.8, decay 1e-6, 100 epochs, colour
    # jitter strength 1.0, the image kind's crops ((0.08, 1) at ImageNet size).
    "paper": SimCLRConfig(arch="resnet50", epochs=100, batch_size=4096, optimizer="lars", temperature=0.1,
                          jitter_strength=1.0),
    # The Fashion-MNIST setting of benchmarks/bench_train_fmnist.py on a 2-core CPU (choice recorded in
    # benchmarks/RESULTS.md): temperature 0.1, crops (0.5, 1), 12 epochs.
    "cpu": SimCLRConfig(arch="cnn_small", epochs=12, batch_size=256, temperature=0.1, crop_scale=(0.5, 1.0)),
}


# ----------------------------------------------------------------------------------------------------------
# fine-tuning
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FinetuneConfig(LearnerConfig):
    """Supervised fine-tuning on the labelled set (USL's SimCLRv2-CLD protocol, Wang, Lian & Yu 2022, Sec. 4).

    Attributes:
        mode: ``"linear"`` (frozen backbone, a new linear layer: the protocol) or ``"full"``.
        epochs: passes of ``samples_per_epoch`` labelled draws (5).
        steps: optimisation steps instead of ``epochs`` (giving one clears the other).
        samples_per_epoch: ``None``: the size of the training pool (the USL toolbox repeats the labelled list
            to fill its epochs); ``len(labelled)`` gives plain epochs.
        batch_size: labelled images per step.
        lr, momentum, weight_decay: SGD (0.01 / 0.9 / 1e-4, the protocol's).
        schedule: ``"constant"`` (the protocol) or ``"cosine"``.
        augment: weak augmentation (flip + crop) of the labelled images.
    """

    LEARNER: ClassVar[str] = "finetune"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    mode: str = "linear"
    epochs: float | None = 5
    steps: int | None = recorded_if_changed(None)
    samples_per_epoch: int | None = None
    batch_size: int = 64
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "constant"
    augment: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("linear", "full"):
            raise ValueError(f"mode must be 'linear' or 'full', got {self.mode!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        check_positive_int(self.batch_size, name="batch_size")
        if self.samples_per_epoch is not None:
            check_positive_int(self.samples_per_epoch, name="samples_per_epoch")
        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")


FinetuneConfig.PRESETS = {
    # USL's SimCLRv2-CLD linear protocol: frozen backbone, SGD lr 0.01, momentum 0.9, decay 1e-4, 5 epochs,
    # last-epoch accuracy.
    "paper": FinetuneConfig(),
}


# ----------------------------------------------------------------------------------------------------------
# MixMatch
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MixMatchConfig(LearnerConfig):
    """MixMatch (Berthelot et al. 2019, Alg. 1 and Sec. 4; the reference code google-research/mixmatch).

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name.
        steps: optimisation steps (``None``: must be given; the presets set it).
        batch_size: labelled images per step, and as many unlabelled ones, each in K = 2 weak views.
        lr: Adam learning rate, constant (0.002).
        weight_decay: decoupled decay coefficient on the weights (``ndim > 1``, not biases or BN): each step
            multiplies them by ``1 - lr * weight_decay``, the reference's ``v * (1 - wd * lr)`` with ``wd`` 0.02.
        temperature: sharpening temperature ``T`` of the label guess (0.5).
        alpha: MixUp's ``lambda ~ Beta(alpha, alpha)`` (0.75), used as ``max(lambda, 1 - lambda)``.
        mixup_lambda: ``"batch"``: one ``lambda`` per step (the paper's Alg. 1 as the PyTorch ports read it) or
            ``"sample"``: one per mixed image (the reference code's ``MixMode``).
        lambda_u: the L2 unlabelled loss weight after the ramp-up (75 on CIFAR-10).
        rampup_steps: ``lambda_u`` ramps linearly from 0 over this many steps (0: no ramp); the reference's
            1024 kimg at batch 64 = 16384 steps (the paper's "first 16,000 steps").
        ema_decay: EMA of the weights used for evaluation (0.999).
    """

    LEARNER: ClassVar[str] = "MixMatch"
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps",),)

    arch: str = "cnn_small"
    steps: int | None = None
    batch_size: int = 64
    lr: float = 0.002
    weight_decay: float = 0.02
    temperature: float = 0.5
    alpha: float = 0.75
    mixup_lambda: str = "batch"
    lambda_u: float = 75.0
    rampup_steps: int = 16384
    ema_decay: float = 0.999

    def __post_init__(self) -> None:
        from .._validate import check_float

        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        check_positive_int(self.batch_size, name="batch_size")
        check_positive_int(self.rampup_steps, name="rampup_steps", minimum=0)
        for name in ("lr", "temperature", "alpha"):
            check_float(getattr(self, name), name=name, low=0.0, low_open=True)
        for name in ("weight_decay", "lambda_u"):
            check_float(getattr(self, name), name=name, low=0.0)
        check_float(self.ema_decay, name="ema_decay", low=0.0, high=1.0, high_open=True)
        if self.mixup_lambda not in ("batch", "sample"):
            raise ValueError(f"mixup_lambda must be 'batch' or 'sample', got {self.mixup_lambda!r}")


MixMatchConfig.PRESETS = {
    # MixMatch's CIFAR-10 setting as USL's appendix trains it (Wang, Lian & Yu 2022): WRN-28-2, 64 labelled +
    # 64 unlabelled images per step, 1024 epochs x 1024 steps, Adam 0.002, EMA 0.999; the other fields' defaults
    # are the MixMatch paper's and its reference code's (T 0.5, alpha 0.75, lambda_u 75 ramped over 16384 steps).
    "paper": MixMatchConfig(arch="wrn28_2", steps=1024 * 1024),
    # A CPU scale (Fashion-MNIST, small CNN; its time per step is in benchmarks/RESULTS.md, whose learner
    # comparison sets each learner's length for equal CPU time itself): the paper's losses and batch shape on the
    # small CNN for 3000 steps; lambda_u
    # ramped over the same 1/64 of the run as the reference's 16384 of 2^20 steps; EMA 0.995 (a window of about
    # 200 steps, 0.995**3000 ~ 3e-7 left on the initial weights, where 0.999 would average over the last third of
    # the run).
    "cpu": MixMatchConfig(arch="cnn_small", steps=3000, rampup_steps=3000 // 64, ema_decay=0.995),
}


# ----------------------------------------------------------------------------------------------------------
# CoMatch
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CoMatchConfig(LearnerConfig):
    """CoMatch (Li, Xiong & Hoi 2021; the CIFAR-10 defaults of its reference ``Train_CoMatch.py``).

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name.
        steps: optimisation steps (``None``: must be given; the presets set it).
        batch_size, mu: labelled images per step and unlabelled per labelled image.
        lr, momentum, nesterov, weight_decay: SGD; decay on weights only, schedule ``lr cos(7 pi k / 16 K)``.
        threshold: confidence ``tau`` of the memory-smoothed pseudo-label for the classification loss (0.95).
        lambda_u, lambda_c: weights of the unlabelled classification and graph-contrastive losses (1, 1 on
            CIFAR-10).
        alpha: memory smoothing, ``q = alpha p + (1 - alpha) sum_k a_k q_k`` (0.9).
        contrast_threshold: edges of the pseudo-label graph with similarity below it are dropped (0.8).
        temperature: of the embedding similarities, in the smoothing weights ``a_k`` and the contrastive loss (0.2).
        proj_dim: size of the L2-normalised projection (64).
        queue_batches: the memory bank holds the weak-view embeddings and probabilities of this many past steps,
            ``queue_batches * (mu + 1) * batch_size`` entries (unlabelled and labelled), 5 as the reference.
        da_window: distribution alignment averages the predictions of this many past unlabelled batches (32).
        ema_decay: EMA of the weights used for evaluation.
        cutout: Cutout side of the strong view: ``"fixed"`` (the reference: 16 px at 32 px, scaled with the
            image) or ``"random"`` (FixMatch's table: a side drawn up to half the image).
    """

    LEARNER: ClassVar[str] = "CoMatch"
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps",),)

    arch: str = "cnn_small"
    steps: int | None = None
    batch_size: int = 64
    mu: int = 7
    lr: float = 0.03
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    threshold: float = 0.95
    lambda_u: float = 1.0
    lambda_c: float = 1.0
    alpha: float = 0.9
    contrast_threshold: float = 0.8
    temperature: float = 0.2
    proj_dim: int = 64
    queue_batches: int = 5
    da_window: int = 32
    ema_decay: float = 0.999
    cutout: str = "fixed"

    def __post_init__(self) -> None:
        from .._validate import check_float

        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        for name in ("batch_size", "mu", "proj_dim", "queue_batches", "da_window"):
            check_positive_int(getattr(self, name), name=name)
        check_float(self.lr, name="lr", low=0.0, low_open=True)
        check_float(self.weight_decay, name="weight_decay", low=0.0)
        for name in ("threshold", "alpha", "contrast_threshold"):
            check_float(getattr(self, name), name=name, low=0.0, high=1.0)
        for name in ("lambda_u", "lambda_c"):
            check_float(getattr(self, name), name=name, low=0.0)
        check_float(self.temperature, name="temperature", low=0.0, low_open=True)
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.cutout not in ("random", "fixed"):
            raise ValueError(f"cutout must be 'random' or 'fixed', got {self.cutout!r}")


CoMatchConfig.PRESETS = {
    # CoMatch's CIFAR-10 recipe (Li et al. 2021, Sec. 4.1 and Train_CoMatch.py): WRN-28-2, 512 epochs of 1024
    # steps, batch 64, mu 7, SGD 0.03 Nesterov, decay 5e-4, EMA 0.999; for a GPU.
    "paper": CoMatchConfig(arch="wrn28_2", steps=2**19),
    # A CPU scale (Fashion-MNIST, small CNN from a SimCLR encoder): the paper's losses and batch shape for 600
    # steps (a CoMatch step costs more than FixMatch's: a third unlabelled view, the projection head and the
    # memory bank; times per step in benchmarks/RESULTS.md, whose comparison sets equal CPU time itself); EMA
    # 0.99 as FixMatch's "cpu".
    "cpu": CoMatchConfig(arch="cnn_small", steps=600, ema_decay=0.99),
}


# ----------------------------------------------------------------------------------------------------------
# MSF and CMSF
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MSFConfig(LearnerConfig):
    """Mean shift (MSF, Koohpayegani, Tejankar & Pirsiavash 2021): BYOL-style online and EMA target encoders,
    a predictor, a memory bank of targets and the top-k mean-shift loss (:func:`uslkit.train.msf.mean_shift_loss`).

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name (the online backbone is what ``model.pt`` exports).
        steps / epochs: length of training, exactly one of them (``epochs`` = passes over the pool).
        batch_size: images per global batch (256).
        lr: SGD learning rate, ``None``: ``0.05 * batch_size / 256`` (the papers' 0.05 at 256); cosine, no warm-up.
        momentum, weight_decay: SGD momentum 0.9 and decay 1e-4 on every trained parameter (the reference's).
        target_momentum: ``m`` of the target encoder's EMA (0.99).
        bank_size: targets in the memory bank ``M`` (MSF: 1,024,000 on ImageNet; CMSF: 128,000).
        topk: neighbours of the target in the bank the loss averages over (5).
        proj_dim, proj_hidden: the projection and predictor MLPs ``Linear-BN-ReLU-Linear``; ``None``: the
            reference's ``f // 4`` and ``2 f`` for an encoder of ``f`` features (512 and 4096 for ResNet-50).
        target_view: the target's view, ``"crop"`` (resized crop and flip: the reference's ``--weak_strong``) or
            ``"simclr"`` (the query's strong view); the query always gets the strong ``"simclr"`` view.
        crop_scale, jitter_strength: the views' crop area range and colour-jitter strength (``None``: the kind's).
    """

    LEARNER: ClassVar[str] = "MSF"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    arch: str = "cnn_small"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 256
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    target_momentum: float = 0.99
    bank_size: int = 128000
    topk: int | None = 5
    proj_dim: int | None = None
    proj_hidden: int | None = None
    target_view: str = "crop"
    crop_scale: tuple[float, float] | None = None
    jitter_strength: float | None = None

    def __post_init__(self) -> None:
        from .._validate import check_choice, check_float

        for name in ("batch_size", "bank_size"):
            check_positive_int(getattr(self, name), name=name)
        for name in ("topk", "proj_dim", "proj_hidden"):
            if getattr(self, name) is not None:
                check_positive_int(getattr(self, name), name=name)
        self._check_length()
        if self.lr is not None:
            check_float(self.lr, name="lr", low=0.0, low_open=True)
        check_float(self.weight_decay, name="weight_decay", low=0.0)
        check_float(self.momentum, name="momentum", low=0.0, high=1.0, high_open=True)
        check_float(self.target_momentum, name="target_momentum", low=0.0, high=1.0, high_open=True)
        check_choice(self.target_view, ("crop", "simclr"), name="target_view")
        if self.crop_scale is not None:
            object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))
        if self.topk is None and type(self) is MSFConfig:
            raise ValueError("topk must be a positive int (MSF has no constraint to derive it from)")
        if self.resolved_topk > self.bank_size:
            raise ValueError(f"topk {self.resolved_topk} is larger than bank_size {self.bank_size}")
        if self.batch_size > self.bank_size:
            raise ValueError(f"bank_size {self.bank_size} is smaller than batch_size {self.batch_size}: the bank must "
                             "hold a whole batch of targets")

    @property
    def resolved_topk(self) -> int:
        """``topk`` (:class:`CMSFConfig` derives it from the constraint when ``None``)."""
        return self.topk


_MSF_PAPER = MSFConfig(arch="resnet50", epochs=200, batch_size=256, lr=0.05, bank_size=1024000,
                       crop_scale=(0.2, 1.0))
MSFConfig.PRESETS = {
    # MSF's ImageNet recipe (Koohpayegani et al. 2021, Sec. 4): ResNet-50, 200 epochs, batch 256, SGD lr 0.05,
    # decay 1e-4, m 0.99, top-5 of a 1,024,000-target bank, weak target / strong query views, both cropped from
    # (0.2, 1) of the image as the reference's data_loader.py.
    "paper": _MSF_PAPER,
    # Fashion-MNIST on a 2-core CPU: the small CNN, the bank at a quarter of the 60,000-image pool, 12 epochs
    # as SimCLR's "cpu" preset (the equal-time comparison sets its own length: benchmarks/RESULTS.md).
    "cpu": MSFConfig(arch="cnn_small", epochs=12, batch_size=256, bank_size=16384),
}


@dataclass(frozen=True)
class CMSFConfig(MSFConfig):
    """Constrained mean shift (CMSF, Tejankar et al. 2022, ECCV): MSF whose top-k neighbours of the
    target are searched in a constraint set ``C`` of the bank (:func:`uslkit.train.msf.km_constraint`,
    :func:`~uslkit.train.msf.two_queue_constraint`, :func:`~uslkit.train.msf.label_constraint`).

    Attributes (besides :class:`MSFConfig`'s):
        constraint: ``"2q"`` (CMSF-2Q: the ``topk_prime`` neighbours of the sample's previous target embedding
            among the bank samples' previous ones), ``"km"`` (CMSF-KM: the bank samples in the target's K-means
            cluster of the cached targets, clustered at the end of every epoch) or ``"labels"`` (semi-supervised
            CMSF from a labels file: the bank samples with the target's label or confident pseudo-label).
        topk: ``None``: 5 self-supervised, 10 with ``"labels"`` (the paper's).
        topk_prime: ``k'`` of CMSF-2Q (5, the reference's run script).
        km_clusters: clusters of CMSF-KM; ``None``: ``round(n / 25.6)``, ImageNet's 1.28M images in 50,000.
        add_msf_loss: average the CMSF loss with the plain MSF loss (``None``: yes self-supervised, as the paper
            trains them; no with ``"labels"``, whose unconfident samples already take the MSF loss).
        pseudo_threshold: confidence from which a pseudo-label constrains (0.85).
        pseudo_epochs, pseudo_lr, pseudo_batch_size: the pseudo-label MLP, trained on the cached targets of the
            labelled samples at the middle and end of every epoch with a fresh SGD (momentum 0.9, decay 1e-4):
            10 epochs, lr 0.01, batches of 256 (of at most the labelled samples seen).
    """

    LEARNER: ClassVar[str] = "CMSF"
    #: the fields only one constraint reads -> that constraint (another value than the default is an error without it)
    CONSTRAINT_FIELDS: ClassVar[dict[str, str]] = {
        "topk_prime": "2q", "km_clusters": "km", "pseudo_threshold": "labels", "pseudo_epochs": "labels",
        "pseudo_lr": "labels", "pseudo_batch_size": "labels"}

    topk: int | None = None
    constraint: str = "2q"
    topk_prime: int = 5
    km_clusters: int | None = None
    add_msf_loss: bool | None = None
    pseudo_threshold: float = 0.85
    pseudo_epochs: int = 10
    pseudo_lr: float = 0.01
    pseudo_batch_size: int = 256

    def __post_init__(self) -> None:
        from .._validate import check_choice, check_float

        super().__post_init__()
        check_choice(self.constraint, ("2q", "km", "labels"), name="constraint")
        for name in ("topk_prime", "pseudo_epochs", "pseudo_batch_size"):
            check_positive_int(getattr(self, name), name=name)
        if self.km_clusters is not None:
            check_positive_int(self.km_clusters, name="km_clusters", minimum=2)
        check_float(self.pseudo_threshold, name="pseudo_threshold", low=0.0, high=1.0)
        check_float(self.pseudo_lr, name="pseudo_lr", low=0.0, low_open=True)
        if self.add_msf_loss is not None and not isinstance(self.add_msf_loss, bool):
            raise ValueError(f"add_msf_loss must be True, False or None, got {self.add_msf_loss!r}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, option in self.CONSTRAINT_FIELDS.items():
            if self.constraint != option and getattr(self, name) != defaults[name]:
                raise ValueError(f"{name}={getattr(self, name)!r} has no effect without constraint={option!r}")

    @property
    def resolved_topk(self) -> int:
        """``topk``, or the paper's 5 self-supervised and 10 semi-supervised."""
        return self.topk if self.topk is not None else 10 if self.constraint == "labels" else 5

    @property
    def resolved_add_msf_loss(self) -> bool:
        return self.add_msf_loss if self.add_msf_loss is not None else self.constraint != "labels"


CMSFConfig.PRESETS = {
    # CMSF's ImageNet recipe (Tejankar et al. 2022, Sec. 3 and the reference run scripts): ResNet-50, 200 epochs,
    # batch 256, SGD lr 0.05, decay 1e-4, m 0.99, a 128,000-target bank, weak target / strong query views with
    # crops of (0.2, 1).
    "paper": CMSFConfig(arch="resnet50", epochs=200, batch_size=256, lr=0.05, bank_size=128000,
                        crop_scale=(0.2, 1.0)),
    # Fashion-MNIST on a 2-core CPU as MSF's "cpu" (CMSF-2Q; constraint="km" gives CMSF-KM).
    "cpu": CMSFConfig(arch="cnn_small", epochs=12, batch_size=256, bank_size=16384),
    # The same, semi-supervised from a labels file of a few dozen labels: the pseudo-label MLP gets 200 epochs a
    # round, since 10 epochs of 40 samples would be 10 SGD steps.
    "cpu-labels": CMSFConfig(arch="cnn_small", epochs=12, batch_size=256, bank_size=16384, constraint="labels",
                             pseudo_epochs=200),
}


# ----------------------------------------------------------------------------------------------------------
# SeLa
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeLaConfig(LearnerConfig):
    """Self-labelling (SeLa, Asano, Rupprecht & Vedaldi 2020): cross-entropy of ``heads`` classifiers against
    pseudo-labels that Sinkhorn-Knopp re-assigns, equipartitioned, ``label_updates`` times during training.

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name (the backbone is what ``model.pt`` exports).
        steps / epochs: length of training, exactly one of them.
        batch_size, lr, momentum, weight_decay: SGD (the CIFAR script: 128, 0.03, 0.9, 5e-4).
        schedule: ``"step"`` (x0.1 at 40, 60 and 80 % of training: the CIFAR code's drops at 160/240/320 of 400
            epochs) or ``"cosine"``.
        heads, clusters: classifier heads and clusters per head (CIFAR 10 x 128; ImageNet 10 x 3000).
        lam, sk_tol: lambda of ``P^lambda`` and the Sinkhorn stopping tolerance (CIFAR 10 and 0.01; ImageNet 25
            and 0.1): :func:`uslkit.cluster.sinkhorn_knopp`.
        sk_max_iter: Sinkhorn iteration cap (a ``RuntimeWarning`` when reached). Deviation: the reference iterates
            until ``sk_tol`` without a cap; a large value (e.g. 10**6) does the same.
        label_updates: Sinkhorn-Knopp label optimisations over training (``nopts``: 400 CIFAR, 100 ImageNet).
        update_spacing: ``"linear"`` (the CIFAR code) or ``"quadratic"`` (the ImageNet code: denser early).
        heads_per_update: ``"all"`` (the ImageNet code) or ``"one"`` (the CIFAR code: head ``epoch % heads``).
        crop_scale, jitter_strength: the ``"simclr"`` training view (``None``: the kind's).
    """

    LEARNER: ClassVar[str] = "SeLa"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    arch: str = "cnn_small"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 128
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    heads: int = 10
    clusters: int = 128
    lam: float = 10.0
    sk_tol: float = 0.01
    sk_max_iter: int = recorded_if_changed(1000)
    label_updates: int = 400
    update_spacing: str = "linear"
    heads_per_update: str = "one"
    crop_scale: tuple[float, float] | None = None
    jitter_strength: float | None = None

    def __post_init__(self) -> None:
        from .._validate import check_choice, check_float

        for name in ("batch_size", "heads", "label_updates", "sk_max_iter"):
            check_positive_int(getattr(self, name), name=name)
        check_positive_int(self.clusters, name="clusters", minimum=2)
        self._check_length()
        for name in ("lr", "lam", "sk_tol"):
            check_float(getattr(self, name), name=name, low=0.0, low_open=True)
        check_float(self.weight_decay, name="weight_decay", low=0.0)
        check_float(self.momentum, name="momentum", low=0.0, high=1.0, high_open=True)
        check_choice(self.schedule, ("step", "cosine"), name="schedule")
        check_choice(self.update_spacing, ("linear", "quadratic"), name="update_spacing")
        check_choice(self.heads_per_update, ("all", "one"), name="heads_per_update")
        if self.crop_scale is not None:
            object.__setattr__(self, "crop_scale", tuple(float(v) for v in self.crop_scale))


SeLaConfig.PRESETS = {
    # The CIFAR-10 script (yukimasano/self-label scripts/cifar.sh, cifar.py): AlexNet there, 400 epochs of batch
    # 128, lr 0.03, 10 heads x 128 clusters, 400 label updates spaced linearly, one head each, lambda 10.
    "cifar": SeLaConfig(arch="resnet18_cifar", epochs=400),
    # ImageNet (the paper's lr 0.05; main.py's default is 0.08, dropped x0.1 at epochs 150/300/350 of 400; here
    # the step schedule at 40/60/80 %), batch 256, decay 1e-5, 10 heads x 3000 clusters, 100 updates spaced
    # quadratically, all heads, lambda 25, tolerance 0.1; ResNet-50 as the paper's ResNet results.
    "imagenet": SeLaConfig(arch="resnet50", epochs=400, batch_size=256, lr=0.05, weight_decay=1e-5, clusters=3000,
                           lam=25.0, sk_tol=0.1, label_updates=100, update_spacing="quadratic",
                           heads_per_update="all"),
    # Fashion-MNIST on a 2-core CPU: the small CNN, 12 epochs of batch 256 as SimCLR's "cpu", two label updates an
    # epoch of all heads (one forward pass over the pool serves every head).
    "cpu": SeLaConfig(arch="cnn_small", epochs=12, batch_size=256, lr=0.06, label_updates=25, heads_per_update="all"),
}


# ----------------------------------------------------------------------------------------------------------
# USL-T
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class USLTConfig(LearnerConfig):
    """USL-T, training-based selective labelling (Wang, Lian & Yu 2022, sec. 2.3, Table 9, appendix 6.12).

    The defaults are the CIFAR-10 recipe of the reference code (``usl-t_pretraining``, ``cifar10`` config);
    the budget is an input of :func:`uslkit.train.usl_t.train_usl_t`, not a field.

    Attributes:
        heads: clustering heads of ``budget`` outputs each (3).
        steps / epochs: length of training, exactly one of them (``epochs`` = passes over the pool).
        batch_size: images per global batch (1024 CIFAR, 2048 ImageNet).
        lr, weight_decay: Adam, constant learning rate, decay on every trained parameter (the reference's).
        threshold: ``tau`` of the global loss (0.95 CIFAR, 0 ImageNet).
        reweight, global_norm: the global loss's class weights (``"inverse"``, ``"balanced"``, ``"none"``) and
            denominator (``"confident"``, ``"batch"``): :func:`uslkit.train.losses.usl_t_global_loss`.
        knn_k: neighbours per sample in the pretrained feature space; the local loss draws one (20).
        alpha, sharpen_t, local_weight: the local loss's logit adjustment, temperature and weight
            ``lambda`` (Table 9: 5 / 0.25 / 5 CIFAR, 2.5 / 0.5 / 0.5 ImageNet).
        prob_ema_mu: ``mu`` of eq. 12, the weight of each batch in the EMA of cluster probabilities (0.5).
        frozen_backbone: train the heads only, encoder in eval mode (the ImageNet recipe).
        cosine_heads, cosine_scale: heads ``scale * cos(f, w_c)`` (the reference's ``NormedLinear``, fixed
            scale 40) instead of linear layers.
        head_init: ``"random"`` or ``"features"`` (each head's rows = the features of ``budget`` seeded random
            samples, ImageNet; needs ``cosine_heads``).
        reseed, reseed_after, reseed_low, reseed_high: ImageNet's re-seeding (needs ``cosine_heads``): after
            ``reseed_after`` steps, whenever a head's smallest cluster (EMA of confident pseudo-label counts
            scaled to the pool, momentum 0.9) is below ``reseed_low * n / budget`` and its largest above
            ``reseed_high * n / budget``, the smallest centroid becomes the largest one plus a 1e-7 seeded
            perturbation (and the largest minus it), each taking half the count. The reference gives the
            bounds in samples (100 / 1000 for ImageNet-1k's 3000 clusters, 427 samples each): here relative.
            ``cosine_scale`` and the ``reseed_*`` values other than their defaults need ``cosine_heads`` /
            ``reseed`` (a ``ValueError`` otherwise: they would have no effect).
    """

    LEARNER: ClassVar[str] = "USL-T"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    heads: int = 3
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 1024
    lr: float = 1e-4
    weight_decay: float = 1e-4
    threshold: float = 0.95
    reweight: str = "inverse"
    global_norm: str = "confident"
    knn_k: int = 20
    alpha: float = 5.0
    sharpen_t: float = 0.25
    local_weight: float = 5.0
    prob_ema_mu: float = 0.5
    frozen_backbone: bool = False
    cosine_heads: bool = False
    cosine_scale: float = 40.0
    head_init: str = "random"
    reseed: bool = False
    reseed_after: int = 1250
    reseed_low: float = 0.25
    reseed_high: float = 2.5

    def __post_init__(self) -> None:
        from .._validate import check_choice, check_float

        for name in ("heads", "batch_size", "knn_k"):
            check_positive_int(getattr(self, name), name=name)
        check_positive_int(self.reseed_after, name="reseed_after", minimum=0)
        self._check_length()
        for name in ("lr", "sharpen_t", "cosine_scale"):
            check_float(getattr(self, name), name=name, low=0.0, low_open=True)
        for name in ("weight_decay", "alpha", "local_weight", "reseed_low"):
            check_float(getattr(self, name), name=name, low=0.0)
        check_float(self.threshold, name="threshold", low=0.0, high=1.0)
        check_float(self.prob_ema_mu, name="prob_ema_mu", low=0.0, high=1.0, low_open=True)
        check_float(self.reseed_high, name="reseed_high", low=self.reseed_low, low_open=True)
        check_choice(self.reweight, ("none", "inverse", "balanced"), name="reweight")
        check_choice(self.global_norm, ("confident", "batch"), name="global_norm")
        check_choice(self.head_init, ("random", "features"), name="head_init")
        for name in ("frozen_backbone", "cosine_heads", "reseed"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.head_init == "features" and not self.cosine_heads:
            raise ValueError("head_init='features' needs cosine_heads=True (the reference initialises its "
                             "normalised heads from sample features)")
        if self.reseed and not self.cosine_heads:
            raise ValueError("reseed=True needs cosine_heads=True (the reference re-seeds normalised centroids)")
        # a changed value that nothing reads is a mistake (the defaults stay valid whatever the switches). The
        # reseed_* bounds are not checked: the "cpu" preset sets reseed_after, and turning re-seeding off on it
        # (reseed=False) must not demand resetting them; they are read only when reseed is on.
        if not self.cosine_heads and self.cosine_scale != USLTConfig.__dataclass_fields__["cosine_scale"].default:
            raise ValueError(f"cosine_scale={self.cosine_scale!r} has no effect without cosine_heads=True")


USLTConfig.PRESETS = {
    # CIFAR-10/100 (Table 9; reference cifar10_usl-t_pretrain.yaml): the whole network, batch 1024, 200 epochs.
    "cifar": USLTConfig(epochs=200, batch_size=1024),
    # ImageNet (appendix 6.12; reference ImageNet_usl-t_pretrain.yaml): frozen backbone, cosine heads from
    # sample features, re-seeding after 1250 steps, tau 0, no re-weighting, global loss over the whole batch,
    # Table 9's alpha 2.5, t 0.5, lambda 0.5; batch 2048, 10 epochs.
    "imagenet": USLTConfig(epochs=10, batch_size=2048, threshold=0.0, reweight="none", global_norm="batch",
                           alpha=2.5, sharpen_t=0.5, local_weight=0.5, frozen_backbone=True, cosine_heads=True,
                           head_init="features", reseed=True, reseed_after=1250),
}
# Fashion-MNIST from the kit's small SimCLR CNN on a 2-core CPU: the ImageNet recipe because it is the paper's
# frozen-backbone one (two encoder forwards per step, no backward; the un-augmented view is computed once), 10
# epochs of 512 (1172 steps), re-seeding after 2 epochs as the reference (1250 steps of 625 per epoch). Its loss
# settings were tuned for 1,000 classes; how it does on 10 (and its time) is in benchmarks/RESULTS.md.
USLTConfig.PRESETS["cpu"] = dataclasses.replace(USLTConfig.PRESETS["imagenet"], epochs=10, batch_size=512,
                                                reseed_after=234)


# ----------------------------------------------------------------------------------------------------------
# MoCo
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MoCoConfig(LearnerConfig):
    """MoCo v2 (Chen, Fan, Girshick & He 2020): MoCo's momentum key encoder and queue of negative keys (He et al.
    2020, Alg. 1) with an MLP head, SimCLR-style views, temperature 0.2 and a cosine schedule.

    Attributes:
        arch: :func:`uslkit.train.models.build_model` name.
        steps / epochs: length of training, exactly one of them (``epochs`` = passes over the dataset).
        batch_size: images per global batch (each gives a query view and a key view).
        lr: base learning rate; ``None``: ``0.03 * batch_size / 256`` (MoCo v2's 0.03 at batch 256).
        momentum, weight_decay: SGD momentum (0.9) and decay (1e-4), the decay on every trained parameter, biases
            and BN included, as the reference's ``SGD(model.parameters(), weight_decay=...)``.
        queue_size: ``K``, negative keys in the queue (65536).
        key_momentum: ``m`` of the key encoder's update ``theta_k <- m theta_k + (1 - m) theta_q`` (0.999).
        temperature: ``tau`` of the InfoNCE logits (0.2, MoCo v2; MoCo v1 used 0.07).
        proj_dim: output size of the head (128).
        proj_hidden: hidden width of the head ``Linear(f, h) -> ReLU -> Linear(h, proj_dim)``, no BN (MoCo v2's
            2048-2048-128 MLP on ResNet-50); ``None``: ``h = f``, the encoder's width.
        symmetric: ``False``: MoCo's loss of view 1's queries against view 2's keys; ``True``: the symmetrised
            loss of CIFAR re-implementations (the MoCo CIFAR-10 demo's ``--symmetric``): the SUM of both
            directions, both key sets enqueued (2 B keys per step).
        crop_scale, jitter_strength: of the views, the kit's ``"simclr"`` policy as :class:`SimCLRConfig`; the
            default strength 0.5 is ``ColorJitter(0.4, 0.4, 0.4, 0.1)``, MoCo v2's; ImageNet-size images also
            get its Gaussian blur (sigma in [0.1, 2], p 0.5).
        warmup_steps: linear warm-up before the cosine decay (0: MoCo v2 has none).
    """

    LEARNER: ClassVar[str] = "MoCo"
    ALTERNATIVES: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)
    REQUIRED: ClassVar[tuple[tuple[str, ...], ...]] = (("steps", "epochs"),)

    arch: str = "cnn_small"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 256
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    queue_size: int = 65536
    key_momentum: float = 0.999
    temperature: float = 0.2
    proj_dim: int = 128
    proj_hidden: int | None = None
    symmetric: bool = False
    crop_scale: tuple[float, float] | None = None
    jitter_strength: float = 0.5
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        from .._validate import check_float

        for name in ("batch_size", "queue_size", "proj_dim"):
            check_positive_int(getattr(self, name), name=name)
        if self.proj_hidden is not None:
            check_positive_int(self.proj_hidden, name="proj_hidden")
        check_positive_int(self.warmup_steps, name="warmup_steps", minimum=0)
        self._check_length()
        if self.lr is not None:
            check_float(self.lr, name="lr", low=0.0, low_open=True)
        check_float(self.momentum, name="momentum", low=0.0, high=1.0, high_open=True)
        check_float(self.weight_decay, name="weight_decay", low=0.0)
        check_float(self.key_momentum, name="key_momentum", low=0.0, high=1.0, high_open=True)
        check_float(self.temperature, name="temperature", low=0.0, low_open=True)
        check_float(self.jitter_strength, name="jitter_strength", low=0.0, high=2.5)  # torchvision: hue 0.2 s <= 0.5
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"symmetric must be True or False, got {self.symmetric!r}")
        if self.crop_scale is not None:
            from .augment import check_crop_scale

            object.__setattr__(self, "crop_scale", check_crop_scale(self.crop_scale))


MoCoConfig.PRESETS = {
    # MoCo v2's ImageNet recipe (Chen et al. 2020, Sec. 3 and moco/main_moco.py with --mlp --moco-t 0.2
    # --aug-plus --cos): ResNet-50, batch 256, SGD lr 0.03 (lr None: 0.03 * batch_size / 256), momentum 0.9, decay
    # 1e-4, 200 epochs, queue 65536, m 0.999, T 0.2, crops of area (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1), blur.
    "paper": MoCoConfig(arch="resnet50", epochs=200, batch_size=256, crop_scale=(0.2, 1.0)),
    # The CIFAR-10 recipe of the MoCo authors' CIFAR demo and its re-implementations: ResNet-18 (CIFAR stem),
    # batch 512, lr 0.06 (= 0.03 * 512 / 256), decay 5e-4, 200 epochs, queue 4096, m 0.99, T 0.1, the kit's 32-px
    # views (crops (0.2, 1), no blur). The demo's head is one linear layer; this keeps MoCo v2's MLP head.
    "cifar": MoCoConfig(arch="resnet18_cifar", epochs=200, batch_size=512, weight_decay=5e-4, queue_size=4096,
                        key_momentum=0.99, temperature=0.1),
    # Fashion-MNIST on a 2-core CPU, the CIFAR recipe on the small CNN with SimCLR "cpu"'s length and crops: 12
    # epochs of 256 (2812 steps on the 60,000 images), crops (0.5, 1), T 0.1 (the CIFAR value, and the one chosen
    # for SimCLR "cpu"), lr 0.03 (0.03 * 256 / 256). A MoCo step is one forward + backward of the query view and
    # one forward of the key view, about 2/3 of a SimCLR step (both views forward and backward), so a run takes
    # no longer than SimCLR "cpu"'s. Not tuned; m 0.99 averages the key encoder over ~100 of its 2812 steps.
    "cpu": MoCoConfig(arch="cnn_small", epochs=12, batch_size=256, weight_decay=5e-4, queue_size=4096,
                      key_momentum=0.99, temperature=0.1, crop_scale=(0.5, 1.0)),
}
