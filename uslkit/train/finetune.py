"""Supervised fine-tuning on a labels file: SimCLRv2-style linear (frozen backbone) and full fine-tuning.

USL's second downstream protocol (Wang, Lian & Yu 2022, "SimCLRv2-CLD"): the pretrained backbone is frozen and
only a new linear layer is trained, SGD lr 0.01, momentum 0.9, weight decay 1e-4, 5 epochs, and the LAST-epoch
accuracy is reported (:class:`uslkit.train.config.FinetuneConfig`). ``mode="full"`` trains every weight with
the same loop. Inputs are weakly augmented (flip + crop; ``augment=False`` for none). An "epoch" is
``samples_per_epoch`` labelled draws; the default repeats the labelled list up to the size of the training
pool, as the USL toolbox fills its epochs (with 40 labels a plain epoch would be a single step); pass
``samples_per_epoch=len(labelled)`` for plain epochs over the labelled set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .config import FinetuneConfig, resolve_config, split_settings
from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels
from .loop import RunSettings, TrainResult, cosine_lr, run_loop
from .models import build_model, load_model
from .semi import file_digest, labeled_set

__all__ = ["FinetuneConfig", "FinetuneModule", "finetune"]


class FinetuneModule(nn.Module):
    """``net`` with, when ``frozen``, its encoder fixed in eval mode (no gradient, BN statistics unchanged)."""

    def __init__(self, net: nn.Module, *, frozen: bool):
        super().__init__()
        self.net = net
        self.frozen = bool(frozen)
        if self.frozen:
            for p in net.encoder.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.net.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                f = self.net.encoder(x)
            return self.net.head(f)
        return self.net(x)


def finetune(
    init,
    train_set,
    selection,
    config: FinetuneConfig | None = None,
    *,
    preset: str | None = None,
    test_set=None,
    batched_augment: bool | None = None,
    **kwargs,
) -> TrainResult:
    """Fine-tune a pretrained encoder on the labelled samples of ``selection``.

    Args:
        init: a kit checkpoint path (e.g. SimCLR's ``model.pt``) or a :class:`uslkit.train.models.Net`; its
            encoder is copied into a new network with a ``train_set.num_classes``-way linear head.
        train_set, selection: as :func:`uslkit.train.fixmatch.train_fixmatch`.
        config: a :class:`FinetuneConfig` (default: the protocol), or ``preset=`` one of its ``PRESETS``.
        **kwargs: fields of :class:`FinetuneConfig` (``mode=``, ``epochs=``, ``lr=``, ...), each one given
            replacing the config's value, and run settings (``seed``, ``out_dir``, ...:
            :class:`uslkit.train.loop.RunSettings`).
        test_set: labelled dataset for top-1 / per-class accuracy (last epoch = ``result.metrics``).
        batched_augment: see :class:`uslkit.train.batches.Views`.
    """
    overrides, run = split_settings(FinetuneConfig, kwargs)
    cfg = resolve_config(FinetuneConfig, config, preset, overrides)
    mode, batch_size, lr, momentum, weight_decay = cfg.mode, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay
    per_epoch = len(train_set) if cfg.samples_per_epoch is None else cfg.samples_per_epoch
    cfg.check_complete()
    steps = cfg.steps if cfg.steps is not None else max(1, math.ceil(float(cfg.epochs) * per_epoch / batch_size))
    settings = RunSettings(steps=steps, **run)
    seed, num_workers = settings.seed, settings.num_workers
    idx, lab = labeled_set(selection, train_set)
    src = load_model(init) if not isinstance(init, nn.Module) else init
    kind = image_kind(train_set)
    in_ch = image_channels(train_set)
    if src.arch.get("in_channels") != in_ch:
        raise ValueError(f"the encoder takes {src.arch.get('in_channels')} input channel(s), {train_set.name} images "
                         f"have {in_ch}")
    extra = {k: v for k, v in src.arch.items() if k not in ("name", "num_classes", "in_channels")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(src.arch["name"], train_set.num_classes, in_channels=in_ch, **extra)
    net.encoder.load_state_dict(src.encoder.state_dict())
    module = FinetuneModule(net, frozen=mode == "linear")
    labels_full = np.full(len(train_set), -1, dtype=np.int64)
    labels_full[idx] = lab
    views = Views(train_set, ("weak" if cfg.augment else "test",), labels=labels_full, batched=batched_augment)
    loaders = {"labeled": StepLoader(views.dataset, StepStream(len(idx), batch_size, seed=seed, stream=3, indices=idx),
                                     num_workers=num_workers)}
    params = dict(cfg.run_params(), samples_per_epoch=per_epoch,
                  labeled=idx.tolist(), labels=lab.tolist(), init_arch=src.arch,
                  init=None if isinstance(init, nn.Module) else file_digest(init),
                  dataset=getattr(train_set, "name", None), n=len(train_set), kind=kind,
                  augment_path="batched" if views.batched else "per-sample")

    def make_optimizer(m):
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                               weight_decay=weight_decay)

    def step_fn(model, batches, step):
        (x,) = views(batches["labeled"])
        return nn.functional.cross_entropy(model(x), batches["labeled"][1]), {}

    eval_fn = None
    if test_set is not None:
        from ..evaluate import evaluate_classifier

        def eval_fn(net_, ema_):
            return evaluate_classifier(net_, test_set, kind=kind)

    lr_at = cosine_lr(lr, steps) if cfg.schedule == "cosine" else (lambda step: lr)
    return run_loop(learner=f"finetune_{mode}", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=lr_at, loaders=loaders, step_fn=step_fn, settings=settings, eval_fn=eval_fn)
