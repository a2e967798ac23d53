"""Supervised fine-tuning on a labels file: SimCLRv2-style linear (frozen backbone) and full fine-tuning.

USL's second downstream protocol (notes sec. 8, "SimCLRv2-CLD style"): the pretrained backbone is frozen and
only a new linear layer is trained, SGD lr 0.01, momentum 0.9, weight decay 1e-4, 5 epochs, and the
LAST-epoch accuracy is reported. ``mode="full"`` trains every weight with the same loop. Inputs are weakly
augmented (flip + crop; ``augment=False`` for none). An "epoch" is ``samples_per_epoch`` labelled draws; the
default repeats the labelled list up to the size of the training pool, as the USL toolbox fills its epochs
(with 40 labels a plain epoch would be a single step); pass ``samples_per_epoch=len(labelled)`` for plain
epochs over the labelled set.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .._validate import check_positive_int
from .batches import StepLoader, StepStream, Views, image_channels
from .fixmatch import _file_digest, labeled_set
from .loop import RunSettings, TrainResult, cosine_lr, run_loop

__all__ = ["FinetuneModule", "finetune"]


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
    *,
    mode: str = "linear",
    epochs: float = 5,
    samples_per_epoch: int | None = None,
    batch_size: int = 64,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    schedule: str = "constant",
    augment: bool = True,
    test_set=None,
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
    batched_augment: bool | None = None,
) -> TrainResult:
    """Fine-tune a pretrained encoder on the labelled samples of ``selection``.

    Args:
        init: a kit checkpoint path (e.g. SimCLR's ``model.pt``) or a :class:`uslkit.train.models.Net`; its
            encoder is copied into a new network with a ``train_set.num_classes``-way linear head.
        train_set, selection: as :func:`uslkit.train.fixmatch.train_fixmatch`.
        mode: ``"linear"`` (frozen backbone, the SimCLRv2-CLD protocol) or ``"full"``.
        epochs, samples_per_epoch, batch_size: length of training (see the module docstring).
        lr, momentum, weight_decay: SGD (defaults: the protocol's 0.01 / 0.9 / 1e-4).
        schedule: ``"constant"`` (the protocol) or ``"cosine"``.
        augment: weak augmentation of the labelled images.
        test_set: labelled dataset for top-1 / per-class accuracy (last epoch = ``result.metrics``).
        seed, out_dir, device, amp, ckpt_every, log_every, eval_every, overwrite, progress, num_workers: see
            :class:`uslkit.train.loop.RunSettings`.
        batched_augment: see :class:`uslkit.train.batches.Views`.
    """
    from .augment import image_kind
    from .models import build_model, load_model

    if mode not in ("linear", "full"):
        raise ValueError(f"mode must be 'linear' or 'full', got {mode!r}")
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")
    batch_size = check_positive_int(batch_size, name="batch_size")
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
    per_epoch = len(train_set) if samples_per_epoch is None else check_positive_int(samples_per_epoch,
                                                                                  name="samples_per_epoch")
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    steps = max(1, math.ceil(float(epochs) * per_epoch / batch_size))
    labels_full = np.full(len(train_set), -1, dtype=np.int64)
    labels_full[idx] = lab
    views = Views(train_set, ("weak" if augment else "test",), labels=labels_full, batched=batched_augment)
    loaders = {"labeled": StepLoader(views.dataset, StepStream(len(idx), batch_size, seed=seed, stream=3, indices=idx),
                                     num_workers=num_workers)}
    params = dict(mode=mode, epochs=epochs, samples_per_epoch=per_epoch, batch_size=batch_size, lr=lr,
                  momentum=momentum, weight_decay=weight_decay, schedule=schedule, augment=augment,
                  labeled=idx.tolist(), labels=lab.tolist(), init_arch=src.arch,
                  init=None if isinstance(init, nn.Module) else _file_digest(init),
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
        from .evaluation import evaluate_classifier

        def eval_fn(net_, ema_):
            return evaluate_classifier(net_, test_set, kind=kind)

    lr_at = cosine_lr(lr, steps) if schedule == "cosine" else (lambda step: lr)
    settings = RunSettings(steps=steps, seed=seed, out_dir=out_dir, device=device, amp=amp, ckpt_every=ckpt_every,
                           log_every=log_every, eval_every=eval_every, overwrite=overwrite, progress=progress,
                           num_workers=num_workers)
    return run_loop(learner=f"finetune_{mode}", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=lr_at, loaders=loaders, step_fn=step_fn, settings=settings, eval_fn=eval_fn)
