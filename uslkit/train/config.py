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

__all__ = ["LearnerConfig", "FixMatchConfig", "SimCLRConfig", "FinetuneConfig", "resolve_config",
           "recorded_if_changed", "run_folder", "RUN_SETTINGS", "split_settings"]


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
    return Path(root) / f"{config.LEARNER.lower()}_{name}_n{len(dataset)}_{arch}_s{int(seed)}_{digest}"


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
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give exactly one of steps and epochs")
        if self.steps is not None:
            check_positive_int(self.steps, name="steps")
        if self.epochs is not None and not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
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
        samples_per_epoch: ``None``: the size of the training pool (the USL toolbox repeats the labelled list
            to fill its epochs); ``len(labelled)`` gives plain epochs.
        batch_size: labelled images per step.
        lr, momentum, weight_decay: SGD (0.01 / 0.9 / 1e-4, the protocol's).
        schedule: ``"constant"`` (the protocol) or ``"cosine"``.
        augment: weak augmentation (flip + crop) of the labelled images.
    """

    LEARNER: ClassVar[str] = "finetune"

    mode: str = "linear"
    epochs: float = 5
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
        if not self.epochs > 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")


FinetuneConfig.PRESETS = {
    # USL's SimCLRv2-CLD linear protocol: frozen backbone, SGD lr 0.01, momentum 0.9, decay 1e-4, 5 epochs,
    # last-epoch accuracy.
    "paper": FinetuneConfig(),
}
