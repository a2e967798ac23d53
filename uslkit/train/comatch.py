"""CoMatch (Li, Xiong & Hoi 2021) on a labels file: semi-supervised learning with contrastive graph regularisation.

Each step takes ``batch_size`` labelled images (weak view) and ``mu * batch_size`` unlabelled images in three views
(weak, strong = the FixMatch RandAugment + Cutout view, and a second strong SimCLR-style view: resized crop, flip,
colour jitter, grayscale), runs ONE forward pass over their concatenation (as the reference), and from the shared
encoder takes the class logits and a 64-d L2-normalised projection (``Linear -> LeakyReLU(0.1) -> Linear``, the
reference's head on its WRN). Then, without gradient:

1. ``p`` = softmax of the weak view, distribution-aligned ``p / p~`` with ``p~`` the mean prediction of the last
   ``da_window`` unlabelled batches (:class:`uslkit.train.pseudo.DistributionAlignment`, uniform target);
2. ``q`` = memory-smoothed pseudo-label :func:`uslkit.train.losses.comatch_memory_smoothing` against the memory
   bank (weak-view embeddings and probabilities of the last ``queue_batches`` steps), once the bank is full;
3. the bank receives this step's unlabelled weak embeddings with their aligned (not smoothed) ``p`` AND the
   labelled batch's weak embeddings with their one-hot labels, as the reference does;

and minimises :func:`uslkit.train.losses.comatch_loss`: cross-entropy on the labels, soft cross-entropy from ``q``
on the strong view where ``max q >= threshold``, and the contrastive loss of the two strong projections against
the pseudo-label graph of ``q`` (edges ``q_b . q_j >= contrast_threshold``, self-loops, rows normalised). SGD with
Nesterov momentum, weight decay on weights only, ``lr cos(7 pi k / 16 K)``, an EMA of the weights for evaluation.

The memory bank and the distribution-alignment history are BUFFERS of sub-modules of the trained module, so they
are checkpointed: a run killed and resumed ends bit for bit where an uninterrupted one does. Under DDP the bank is
filled from the all-gathered global batch (in the single-process row order) and the alignment from the mean over
processes, so every process holds the same state; the pseudo-label graph and the contrastive loss are each
process's own batch (as USB's multi-GPU CoMatch).

Deviations from the reference code (``salesforce/CoMatch``, ``Train_CoMatch.py``): the unlabelled stream is the
whole pool (labelled samples included, the USL toolbox's and :func:`train_fixmatch`'s convention; the reference
leaves them out); smoothing starts as soon as the bank is full (the reference waits one more step,
``it > queue_batch``); weight decay skips biases as well as BN (the reference decays biases); the strong view is
the kit's FixMatch RandAugment with magnitudes drawn from their ranges (the reference's ``RandomAugment(2, 10)``
uses the largest magnitude) and Cutout 16 px at 32 px, scaled with the image (``cutout="fixed"``).

Pseudo-label monitor (as :func:`train_fixmatch`): ``pseudo_acc`` and ``mask_correct`` of the memory-smoothed
pseudo-labels when every pool image has a ground-truth label; these labels never reach the loss. The history also
logs ``loss_c`` and ``edges`` (mean edges per node of the pseudo-label graph, the reference's ``num_pos``).

Hyperparameters: :class:`uslkit.train.config.CoMatchConfig` (presets ``"paper"``, ``"cpu"``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_positive_int
from .augment import image_kind
from .batches import image_channels
from .config import CoMatchConfig, resolve_config, split_settings
from .distributed import gather_rows
from .loop import RunSettings, TrainResult, decay_groups, fixmatch_cosine_lr, run_loop
from .losses import comatch_loss, comatch_memory_smoothing
from .models import build_model
from .pseudo import DistributionAlignment
from .semi import (PseudoLabelMonitor, classifier_eval_fn, labeled_set, load_init_encoder, semi_loaders,
                   semi_params)

__all__ = ["COMATCH_PRESETS", "CoMatchConfig", "CoMatchModule", "MemoryBank", "train_comatch"]

#: the presets, name -> :class:`CoMatchConfig` (``CoMatchConfig.PRESETS``).
COMATCH_PRESETS = CoMatchConfig.PRESETS


class MemoryBank(nn.Module):
    """Ring buffer of the last ``size`` (embedding, class-probability) pairs: CoMatch's memory bank.

    Buffers (checkpointed with the module that holds the bank): ``feats`` ``(size, dim)``, ``probs``
    ``(size, num_classes)`` float32, ``ptr`` (next slot) and ``filled`` (slots written so far, at most ``size``),
    int64 scalars. :meth:`push` writes rows at ``ptr, ptr + 1, ...`` modulo ``size``, overwriting the oldest.
    """

    def __init__(self, size: int, dim: int, num_classes: int):
        super().__init__()
        self.size = check_positive_int(size, name="size")
        self.register_buffer("feats", torch.zeros(self.size, check_positive_int(dim, name="dim")))
        self.register_buffer("probs", torch.zeros(self.size, check_positive_int(num_classes, name="num_classes")))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int64))

    @property
    def full(self) -> bool:
        """Every slot holds a real entry (the bank is used for smoothing from then on)."""
        return int(self.filled) == self.size

    @torch.no_grad()
    def push(self, feats: torch.Tensor, probs: torch.Tensor) -> None:
        """Append ``feats`` ``(n, dim)`` and ``probs`` ``(n, num_classes)``; with ``n > size`` only the last
        ``size`` rows stay (as if written one by one)."""
        dim, num_classes = self.feats.shape[1], self.probs.shape[1]
        if feats.ndim != 2 or feats.shape[1] != dim or probs.shape != (feats.shape[0], num_classes):
            raise ValueError(f"push needs feats (n, {dim}) and probs (n, {num_classes}), got "
                             f"{tuple(feats.shape)} and {tuple(probs.shape)}")
        n, ptr = feats.shape[0], int(self.ptr)
        keep = min(n, self.size)
        slots = (ptr + n - keep + torch.arange(keep, device=self.feats.device)) % self.size
        self.feats[slots] = feats[n - keep:].to(self.feats)
        self.probs[slots] = probs[n - keep:].to(self.probs)
        self.ptr.fill_((ptr + n) % self.size)
        self.filled.fill_(min(int(self.filled) + n, self.size))

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.feats.shape[1]}, num_classes={self.probs.shape[1]}"


class CoMatchModule(nn.Module):
    """``net`` (classifier) + ``projector`` + the state CoMatch carries across steps (``bank``: :class:`MemoryBank`,
    ``align``: :class:`uslkit.train.pseudo.DistributionAlignment`).

    ``forward(x)`` returns ``(logits (B, C), z (B, proj_dim))`` with ``z`` L2-normalised, both from one pass of
    the encoder.
    """

    def __init__(self, net: nn.Module, *, proj_dim: int, bank_size: int, da_window: int):
        super().__init__()
        self.net = net
        f = net.feat_dim
        self.projector = nn.Sequential(nn.Linear(f, f), nn.LeakyReLU(0.1, inplace=True), nn.Linear(f, proj_dim))
        self.bank = MemoryBank(bank_size, proj_dim, net.num_classes)
        self.align = DistributionAlignment(net.num_classes, window=da_window, target="uniform")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net.features(x)
        return self.net.head(h), F.normalize(self.projector(h), dim=1)


def train_comatch(
    train_set,
    selection,
    config: CoMatchConfig | None = None,
    *,
    preset: str | None = None,
    init=None,
    test_set=None,
    arch_kwargs: dict | None = None,
    batched_augment: bool | None = None,
    monitor_pseudo_labels: bool | None = None,
    **kwargs,
) -> TrainResult:
    """Train CoMatch on ``train_set`` with the labelled samples of ``selection`` (see the module docstring).

    Args:
        train_set: :class:`uslkit.data.ImageDataset`, the pool the labels file was made for.
        selection: labels file path or :class:`uslkit.labels.Selection`, annotated
            (:func:`uslkit.train.semi.labeled_set`).
        config: a :class:`CoMatchConfig` (default: its defaults, or the preset).
        preset: a key of ``CoMatchConfig.PRESETS`` instead of ``config``.
        **kwargs: fields of :class:`CoMatchConfig` (``steps=``, ``alpha=``, ``lambda_c=``, ...), each one given
            replacing the config's value, and run settings (``seed``, ``out_dir``, ``device``, ``amp``,
            ``ckpt_every``, ``log_every``, ``eval_every``, ``overwrite``, ``progress``, ``num_workers``:
            :class:`uslkit.train.loop.RunSettings`).
        init: optional checkpoint whose encoder initialises the network
            (:func:`uslkit.train.semi.load_init_encoder`); the projection head starts fresh.
        test_set: labelled :class:`uslkit.data.ImageDataset` for top-1 / per-class accuracy of the model and its
            EMA at each evaluation and at the end.
        arch_kwargs: extra :func:`uslkit.train.models.build_model` arguments.
        batched_augment: see :class:`uslkit.train.batches.Views` (``None``: batched for small in-memory images).
        monitor_pseudo_labels: log ``pseudo_acc`` and ``mask_correct`` of the memory-smoothed pseudo-labels from
            the pool's ground-truth labels; ``None``: when every pool image has a label, ``True``: required,
            ``False``: never. Not part of the run's parameters: it does not change training.

    Returns:
        :class:`uslkit.train.loop.TrainResult` (``extras``: ``projector``, ``bank``, ``align``); ``metrics`` has
        ``top1``/``ema_top1``/``per_class``/... when a ``test_set`` is given.
    """
    overrides, run = split_settings(CoMatchConfig, kwargs)
    cfg = resolve_config(CoMatchConfig, config, preset, overrides)
    cfg.check_complete()
    settings = RunSettings(steps=cfg.steps, **run)
    steps, batch_size, mu, seed, num_workers = cfg.steps, cfg.batch_size, cfg.mu, settings.seed, settings.num_workers
    idx, lab = labeled_set(selection, train_set)
    monitor = PseudoLabelMonitor(train_set, monitor_pseudo_labels)
    kind = image_kind(train_set)
    num_classes = train_set.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, num_classes, in_channels=image_channels(train_set), **(arch_kwargs or {}))
        module = CoMatchModule(net, proj_dim=cfg.proj_dim, bank_size=cfg.queue_batches * (mu + 1) * batch_size,
                               da_window=cfg.da_window)
    if init is not None:
        load_init_encoder(net, init)
    lab_views, ulb_views, loaders = semi_loaders(
        train_set, idx, lab, ("weak", "strong", "simclr"), batch_size=batch_size,
        unlabeled_batch_size=batch_size * mu, seed=seed, num_workers=num_workers, batched=batched_augment,
        cutout_side=cfg.cutout)
    params = semi_params(cfg, train_set, idx, lab, kind=kind, batched=ulb_views.batched, init=init)

    def make_optimizer(m):
        return torch.optim.SGD(decay_groups(m, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov)

    def step_fn(model, batches, step):
        (x,) = lab_views(batches["labeled"])
        y = batches["labeled"][1]
        uw, us0, us1 = ulb_views(batches["unlabeled"])
        bx, bu = x.shape[0], uw.shape[0]
        logits, z = model(torch.cat([x, uw, us0, us1]))
        lx, lw, ls0 = logits[:bx], logits[bx:bx + bu], logits[bx + bu:bx + 2 * bu]
        zx, zw, zs0, zs1 = z[:bx], z[bx:bx + bu], z[bx + bu:bx + 2 * bu], z[bx + 2 * bu:]
        with torch.no_grad():
            p = module.align(torch.softmax(lw.detach().float(), dim=1))  # distribution alignment, p / p~
            bank = module.bank
            q = p
            if bank.full:
                q = comatch_memory_smoothing(p, zw.detach(), bank.feats, bank.probs, alpha=cfg.alpha,
                                             temperature=cfg.temperature)
            onehot = F.one_hot(y, num_classes).float()
            bank.push(torch.cat([gather_rows(zw.detach().float()), gather_rows(zx.detach().float())]),
                      torch.cat([gather_rows(p), gather_rows(onehot)]))
        loss, st = comatch_loss(lx, y, ls0, zs0, zs1, q, threshold=cfg.threshold, lambda_u=cfg.lambda_u,
                                lambda_c=cfg.lambda_c, contrast_threshold=cfg.contrast_threshold,
                                temperature=cfg.temperature)
        stats = {k: st[k] for k in ("loss_x", "loss_u", "loss_c", "mask", "edges")}
        stats.update(monitor(st["pseudo_labels"], st["confident"], batches["unlabeled"][2]))  # never in the loss
        return loss, stats

    return run_loop(learner="comatch", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=fixmatch_cosine_lr(cfg.lr, steps), loaders=loaders, step_fn=step_fn, settings=settings,
                    ema_decay=cfg.ema_decay, eval_fn=classifier_eval_fn(test_set, kind))

