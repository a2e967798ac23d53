"""SimCLR self-supervised pretraining (Chen et al. 2020), so selection can use learned embeddings.

Two SimCLR views per image (:func:`uslkit.train.augment.simclr_transform`), the encoder of a
:class:`uslkit.train.models.Net`, a projection MLP ``Linear(f, f) -> BN -> ReLU -> Linear(f, proj_dim)``
(SimCLR's 2-layer head; its output feeds the loss, the encoder output is the embedding) and NT-Xent
(:func:`uslkit.train.losses.nt_xent`, negatives gathered over all processes under DDP).

Hyperparameters: :class:`uslkit.train.config.SimCLRConfig`. Optimiser ``"sgd"`` (default: momentum 0.9,
``lr = 0.06 * batch_size / 256``, decay 5e-4 not on biases and BN, the CIFAR recipe of SimSiam/MoCo-style
re-implementations) or ``"lars"`` (SimCLR's, appendix B.1: :class:`uslkit.train.optim.LARS`, ``lr = 0.3 *
batch_size / 256``, decay 1e-6), both with a linear warm-up and cosine decay. Presets: ``"paper"`` (SimCLR's
ImageNet recipe: ResNet-50, batch 4096, LARS, temperature 0.1, jitter strength 1.0, 100 epochs) and ``"cpu"``
(the Fashion-MNIST CPU setting of ``benchmarks/bench_train_fmnist.py``).

The trained encoder is ``result.net`` (and ``out_dir/model.pt``); ``uslkit.embed`` reads it as
``encoder="ckpt:<out_dir>/model.pt"``.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .config import SimCLRConfig, resolve_config, split_settings
from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels
from .loop import RunSettings, TrainResult, cosine_lr, decay_groups, run_loop
from .losses import nt_xent
from .models import build_model
from .optim import LARS, lars_groups

__all__ = ["SIMCLR_PRESETS", "SimCLRConfig", "SimCLRModule", "train_simclr"]

#: the presets, name -> :class:`SimCLRConfig` (``SimCLRConfig.PRESETS``).
SIMCLR_PRESETS = SimCLRConfig.PRESETS


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
    config: SimCLRConfig | None = None,
    *,
    preset: str | None = None,
    eval_sets=None,
    arch_kwargs: dict | None = None,
    batched_augment: bool | None = None,
    **kwargs,
) -> TrainResult:
    """Pretrain an encoder with SimCLR on the images of ``dataset`` (labels are never read).

    Args:
        dataset: :class:`uslkit.data.ImageDataset` (its labels are ignored).
        config: a :class:`SimCLRConfig` (default: its defaults, or the preset).
        preset: a key of ``SimCLRConfig.PRESETS`` instead of ``config``.
        **kwargs: fields of :class:`SimCLRConfig` (``steps=``, ``epochs=``, ``batch_size=``, ...), each one given
            replacing the config's value (giving ``steps`` clears the config's ``epochs`` and vice versa: the
            config's ``ALTERNATIVES``), and run
            settings (``seed``, ``out_dir``, ...: :class:`uslkit.train.loop.RunSettings`).
        eval_sets: optional ``(train_set, test_set)`` with labels: kNN accuracy of the embedding (1-NN cosine
            and weighted 10-NN) is logged at each evaluation; only used for monitoring.
        arch_kwargs: extra :func:`uslkit.train.models.build_model` arguments.
        batched_augment: see :class:`uslkit.train.batches.Views` (``None``: batched for small in-memory images).

    Returns:
        :class:`uslkit.train.loop.TrainResult` (``net``: the encoder, ``extras["projector"]``).
    """
    overrides, run = split_settings(SimCLRConfig, kwargs)
    cfg = resolve_config(SimCLRConfig, config, preset, overrides)
    n, batch_size = len(dataset), cfg.batch_size
    steps = cfg.steps_for(n)
    settings = RunSettings(steps=steps, **run)
    seed, num_workers = settings.seed, settings.num_workers
    lr = float(cfg.lr if cfg.lr is not None else (0.3 if cfg.optimizer == "lars" else 0.06) * batch_size / 256)
    weight_decay = cfg.weight_decay if cfg.weight_decay is not None else 1e-6 if cfg.optimizer == "lars" else 5e-4
    warmup_steps = cfg.warmup_steps
    if warmup_steps is None:
        warmup_steps = min(steps // 10, 10 * (n // batch_size))
    momentum, temperature, optimizer = cfg.momentum, cfg.temperature, cfg.optimizer
    kind = image_kind(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, 0, in_channels=image_channels(dataset), **(arch_kwargs or {}))
        module = SimCLRModule(net, proj_dim=cfg.proj_dim)
    views = Views(dataset, ("simclr", "simclr"), batched=batched_augment, crop_scale=cfg.crop_scale,
                  jitter_strength=cfg.jitter_strength)
    loaders = {"unlabeled": StepLoader(views.dataset, StepStream(n, batch_size, seed=seed, stream=0),
                                       num_workers=num_workers)}
    # arch and steps are recorded beside the parameters by run_loop
    resolved = dataclasses.replace(cfg, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps)
    params = {k: v for k, v in resolved.run_params().items() if k not in ("arch", "steps", "epochs")}
    params.update(dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n, kind=kind,
                  augment="batched" if views.batched else "per-sample")

    def make_optimizer(m):
        if optimizer == "lars":
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
    return run_loop(learner="simclr", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=cosine_lr(lr, steps, warmup=warmup_steps), loaders=loaders, step_fn=step_fn,
                    settings=settings, eval_fn=eval_fn)


def _knn_eval_fn(train_set, test_set, *, kind):
    from ..evaluate import extract_features, knn_metrics

    def eval_fn(net, ema):
        ftr = extract_features(net, train_set, kind=kind)
        fte = extract_features(net, test_set, kind=kind)
        return knn_metrics(ftr, train_set.labels, fte, test_set.labels)

    return eval_fn
