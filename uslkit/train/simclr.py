"""SimCLR self-supervised pretraining (Chen et al. 2020), so selection can use learned embeddings.

Two SimCLR views per image (:func:`uslkit.train.augment.simclr_transform`), the encoder of a
:class:`uslkit.train.models.Net`, a projection MLP ``Linear(f, f) -> BN -> ReLU -> Linear(f, proj_dim)``
(SimCLR's 2-layer head; its output feeds the loss, the encoder output is the embedding) and NT-Xent
(:func:`uslkit.train.losses.nt_xent`, negatives gathered over all processes under DDP).

Optimiser: SGD with momentum 0.9, ``lr = 0.06 * batch_size / 256`` and weight decay 5e-4 (not on biases and
BN) with a linear warm-up and cosine decay: the common CIFAR recipe of SimSiam/MoCo-style re-implementations,
which trains well without LARS at batch sizes up to 512. SimCLR's own ImageNet recipe (LARS, ``lr = 0.3 B /
256``, batch 4096, decay 1e-6) is not implemented: LARS is not in the kit yet.

The trained encoder is ``result.net`` (and ``out_dir/model.pt``); ``uslkit.embed`` reads it as
``encoder="ckpt:<out_dir>/model.pt"``.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import check_positive_int
from .batches import StepLoader, StepStream, Views, image_channels
from .loop import RunSettings, TrainResult, cosine_lr, decay_groups, run_loop
from .losses import nt_xent

__all__ = ["SimCLRModule", "train_simclr"]


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
    arch: str = "cnn_small",
    steps: int | None = None,
    epochs: float | None = None,
    batch_size: int = 256,
    lr: float | None = None,
    weight_decay: float = 5e-4,
    momentum: float = 0.9,
    temperature: float = 0.5,
    proj_dim: int = 128,
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
        arch: :func:`uslkit.train.models.build_model` name; ``arch_kwargs`` are passed on.
        steps / epochs: length of training, one of them (``epochs`` = passes over ``dataset``).
        batch_size: images per global batch (each gives 2 views).
        lr: base learning rate (default ``0.06 * batch_size / 256``); ``weight_decay``, ``momentum``: SGD's.
        temperature: NT-Xent temperature (0.5, SimCLR's CIFAR-10 value).
        proj_dim: projection output size (SimCLR: 128).
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

    batch_size = check_positive_int(batch_size, name="batch_size")
    n = len(dataset)
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} images)")
    steps = _steps_from(steps, epochs, n, batch_size)
    lr = 0.06 * batch_size / 256 if lr is None else float(lr)
    if warmup_steps is None:
        warmup_steps = min(steps // 10, 10 * (n // batch_size))
    kind = image_kind(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(arch, 0, in_channels=image_channels(dataset), **(arch_kwargs or {}))
        module = SimCLRModule(net, proj_dim=proj_dim)
    views = Views(dataset, ("simclr", "simclr"), batched=batched_augment)
    loaders = {"unlabeled": StepLoader(views.dataset, StepStream(n, batch_size, seed=seed, stream=0),
                                       num_workers=num_workers)}
    params = dict(dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay, momentum=momentum,
                  temperature=temperature, proj_dim=proj_dim, warmup_steps=warmup_steps, kind=kind,
                  augment="batched" if views.batched else "per-sample")

    def make_optimizer(m):
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
