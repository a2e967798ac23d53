"""SimCLR self-supervised pretraining (Chen et al. 2020), so selection can use learned embeddings.

Two SimCLR views per image (:func:`uslkit.train.augment.simclr_transform`), the encoder of a
:class:`uslkit.train.models.Net`, a projection MLP ``Linear(f, f) -> BN -> ReLU -> Linear(f, proj_dim)``
(SimCLR's 2-layer head; its output feeds the loss, the encoder output is the embedding) and NT-Xent
(:func:`uslkit.train.losses.nt_xent`, negatives gathered over all processes under DDP).

Optimiser (``optimizer=``), both with a linear warm-up and cosine decay:

- ``"sgd"`` (default): SGD with momentum 0.9, ``lr = 0.06 * batch_size / 256`` and weight decay 5e-4 (not on
  biases and BN): the common CIFAR recipe of SimSiam/MoCo-style re-implementations, which trains well at
  batch sizes up to 512 (the CPU scale of this kit).
- ``"lars"``: SimCLR's own recipe (Chen et al. 2020, appendix B.1): :class:`uslkit.train.optim.LARS` (trust
  coefficient 0.001, biases and BN excluded from decay and adaptation), ``lr = 0.3 * batch_size / 256``,
  weight decay 1e-6, momentum 0.9; for the large batches (4096) of the paper.

Presets (``preset=``; explicit keyword values that differ from the defaults override them):

- ``"paper"``: SimCLR's ImageNet recipe (section 2.3 / appendix B.1; the reference code's temperature 0.1):
  ResNet-50, batch 4096, LARS with ``lr = 0.3 * 4096 / 256 = 4.8``, weight decay 1e-6, 100 epochs (10 of
  warm-up), the image kind's crops ((0.08, 1) at ImageNet size).
- ``"cpu"``: the Fashion-MNIST setting of ``benchmarks/bench_train_fmnist.py`` on a 2-core CPU: ``cnn_small``,
  batch 256, SGD (lr 0.06, decay 5e-4), temperature 0.1, crops of scale (0.5, 1), 12 epochs (26.7 min measured
  on 2 cores). Chosen by 2-epoch runs recorded in ``benchmarks/RESULTS.md``: temperature 0.1 gave the best
  full-label 1-NN of 0.5 / 0.2 / 0.1 / 0.05, and crops (0.5, 1) instead of (0.2, 1) raised full-label 1-NN and
  USL 1-NN at budget 20 (not at 40).

The trained encoder is ``result.net`` (and ``out_dir/model.pt``); ``uslkit.embed`` reads it as
``encoder="ckpt:<out_dir>/model.pt"``.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import check_positive_int
from .batches import StepLoader, StepStream, Views, image_channels
from .loop import RunSettings, TrainResult, cosine_lr, decay_groups, resolve_preset, run_loop
from .losses import nt_xent

__all__ = ["SIMCLR_PRESETS", "SimCLRModule", "train_simclr"]

#: see the module docstring; ``lr=None`` means ``0.3 * batch_size / 256`` for LARS.
SIMCLR_PRESETS: dict[str, dict] = {
    "paper": dict(arch="resnet50", epochs=100, batch_size=4096, optimizer="lars", lr=None, weight_decay=1e-6,
                  temperature=0.1, crop_scale=None),
    "cpu": dict(arch="cnn_small", epochs=12, batch_size=256, optimizer="sgd", lr=None, weight_decay=5e-4,
                temperature=0.1, crop_scale=(0.5, 1.0)),
}
_DEFAULTS = dict(arch="cnn_small", epochs=None, batch_size=256, optimizer="sgd", lr=None, weight_decay=None,
                 temperature=0.5, crop_scale=None)


class SimCLRModule(nn.Module):
    """``net`` (encoder, exported) + ``projector``; ``forward(x)`` returns projections ``(B, proj_dim)``."""

    def __init__(self, net: nn.Module, proj_dim: int = 128, hidden: int | None = None):
        super().__init__()
        self.net = net
        f = net.feat_dim
        hidden = hidden or f
        self.projector = nn.Sequential(nn.Linear(f, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, proj_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.net.features(x))


def train_simclr(
    dataset,
    *,
    preset: str | None = None,
    arch: str = "cnn_small",
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 256,
    lr: float | None = None,
    weight_decay: float | None = None,
    momentum: float = 0.9,
    temperature: float = 0.5,
    proj_dim: int = 128,
    optimizer: str = "sgd",
    crop_scale: tuple[float, float] | None = None,
    warmup_steps: int | None = None,
    eval_sets=None,
    seed: int = 0,
    out_dir=None,
    device=None,
    amp=None,
    ckpt_every: int = 500,
    log_every: int = 50,
    eval_every: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    num_workers: int = 0,
    arch_kwargs: dict | None = None,
    batched_augment: bool | None = None,
) -> TrainResult:
    """Pretrain an encoder with SimCLR on the images of ``dataset`` (labels are never read).

    Args:
        dataset: :class:`uslkit.data.ImageDataset` (its labels are ignored).
        preset: ``None``, ``"paper"`` or ``"cpu"`` (:data:`SIMCLR_PRESETS`); keyword values that differ from the
            function defaults override the preset's (``steps`` replaces its ``epochs``).
        arch: :func:`uslkit.train.models.build_model` name; ``arch_kwargs`` are passed on.
        steps / epochs: length of training, one of them (``epochs`` = passes over ``dataset``).
        batch_size: images per global batch (each gives 2 views).
        lr: base learning rate (default ``0.06 * batch_size / 256`` for SGD, ``0.3 * batch_size / 256`` for
            LARS); ``weight_decay`` (default 5e-4 for SGD, 1e-6 for LARS), ``momentum``: the optimiser's.
        temperature: NT-Xent temperature (0.5, SimCLR's CIFAR-10 value).
        proj_dim: projection output size (SimCLR: 128).
        optimizer: ``"sgd"`` or ``"lars"`` (see the module docstring).
        crop_scale: area range ``(lo, hi)`` of the random resized crops (default (0.2, 1.0) for 28x28 / 32x32
            images, (0.08, 1.0) for ImageNet-size ones).
        warmup_steps: linear warm-up (default: 10 % of the steps, at most 10 epochs).
        eval_sets: optional ``(train_set, test_set)`` with labels: kNN accuracy of the embedding (1-NN cosine
            and weighted 10-NN) is logged at each evaluation; only used for monitoring.
        seed, out_dir, device, amp, ckpt_every, log_every, eval_every, overwrite, progress, num_workers: see
            :class:`uslkit.train.loop.RunSettings`.
        arch_kwargs: extra :func:`uslkit.train.models.build_model` arguments.
        batched_augment: see :class:`uslkit.train.batches.Views` (``None``: batched for small in-memory images).

    Returns:
        :class:`uslkit.train.loop.TrainResult` (``net``: the encoder, ``extras["projector"]``).
    """
    from .augment import image_kind
    from .models import build_model

    from .augment import check_crop_scale

    if preset is not None:
        given = dict(arch=arch, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                     weight_decay=weight_decay, temperature=temperature, crop_scale=crop_scale)
        cfg = resolve_preset("SimCLR", SIMCLR_PRESETS, preset, given, _DEFAULTS)
        if steps is not None and epochs is None:
            cfg["epochs"] = None
        arch, epochs, batch_size, optimizer = cfg["arch"], cfg["epochs"], cfg["batch_size"], cfg["optimizer"]
        lr, weight_decay = cfg["lr"], cfg["weight_decay"]
        temperature, crop_scale = cfg["temperature"], cfg["crop_scale"]
    batch_size = check_positive_int(batch_size, name="batch_size")
    if optimizer not in ("sgd", "lars"):
        raise ValueError(f"optimizer must be 'sgd' or 'lars', got {optimizer!r}")
    if crop_scale is not None:
        crop_scale = check_crop_scale(crop_scale)
    n = len(dataset)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} images)")
    steps = _steps_from(steps, epochs, n, batch_size)
    if lr is None:
        lr = (0.3 if optimizer == "lars" else 0.06) * batch_size / 256
    lr = float(lr)
    if weight_decay is None:
        weight_decay = 1e-6 if optimizer == "lars" else 5e-4
    if warmup_steps is None:
        warmup_steps = min(steps // 10, 10 * (n // batch_size))
    kind = image_kind(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(arch, 0, in_channels=image_channels(dataset), **(arch_kwargs or {}))
        module = SimCLRModule(net, proj_dim=proj_dim)
    views = Views(dataset, ("simclr", "simclr"), batched=batched_augment, crop_scale=crop_scale)
    loaders = {"unlabeled": StepLoader(views.dataset, StepStream(n, batch_size, seed=seed, stream=0),
                                       num_workers=num_workers)}
    params = dict(dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, momentum=momentum,
                  temperature=temperature, proj_dim=proj_dim, warmup_steps=warmup_steps, kind=kind,
                  augment="batched" if views.batched else "per-sample")
    # only non-default new options enter the run's parameters, so runs made before they existed still resume
    if optimizer != "sgd":
        params["optimizer"] = optimizer
    if crop_scale is not None:
        params["crop_scale"] = list(crop_scale)

    def make_optimizer(m):
        if optimizer == "lars":
            from .optim import LARS, lars_groups

            return LARS(lars_groups(m, weight_decay), lr=lr, momentum=momentum)
        return torch.optim.SGD(decay_groups(m, weight_decay), lr=lr, momentum=momentum)

    def step_fn(model, batches, step):
        v1, v2 = views(batches["unlabeled"])
        z = model(torch.cat([v1, v2]))
        z1, z2 = z.chunk(2)
        return nt_xent(z1, z2, temperature=temperature, gather=True), {}

    eval_fn = None
    if eval_sets is not None:
        eval_fn = _knn_eval_fn(*eval_sets, kind=kind)
    settings = RunSettings(steps=steps, seed=seed, out_dir=out_dir, device=device, amp=amp, ckpt_every=ckpt_every,
                           log_every=log_every, eval_every=eval_every, overwrite=overwrite, progress=progress,
                           num_workers=num_workers)
    return run_loop(learner="simclr", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=cosine_lr(lr, steps, warmup=warmup_steps), loaders=loaders, step_fn=step_fn,
                    settings=settings, eval_fn=eval_fn)


def _knn_eval_fn(train_set, test_set, *, kind):
    from .evaluation import extract_features, knn_metrics

    def eval_fn(net, ema):
        ftr = extract_features(net, train_set, kind=kind)
        fte = extract_features(net, test_set, kind=kind)
        return knn_metrics(ftr, train_set.labels, fte, test_set.labels)

    return eval_fn


def _steps_from(steps, epochs, n: int, batch_size: int) -> int:
    if (steps is None) == (epochs is None):
        raise ValueError("give exactly one of steps and epochs")
    if steps is not None:
        return check_positive_int(steps, name="steps")
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    return max(1, round(float(epochs) * n / batch_size))
