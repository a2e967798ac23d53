"""FixMatch (Sohn et al. 2020) on a labels file: the downstream semi-supervised learner of the USL papers.

Each step takes ``batch_size`` labelled images (weak view) and ``mu * batch_size`` unlabelled images (weak and
strong views), runs ONE forward pass over their concatenation (as the reference, so batch norm sees all of
them), and minimises :func:`uslkit.train.losses.fixmatch_loss` (hard pseudo-labels from the weak view where
the confidence is ``>= threshold``, cross-entropy on the strong view). SGD with Nesterov momentum, weight
decay on weights only (not biases or BN, as the reference), the schedule ``lr cos(7 pi k / 16 K)``, and an
EMA of the weights for evaluation.

The labelled set is read from a labels file (:mod:`uslkit.labels`), checked against the dataset; the
unlabelled set is the whole training pool (the USL toolbox keeps all of it, labelled samples included); the
labelled list is repeated to fill the steps, as the USL toolbox does. These pieces, shared with MixMatch and
CoMatch, live in :mod:`uslkit.train.semi` (``labeled_set`` and ``load_init_encoder`` are re-exported here).

Hyperparameters: :class:`uslkit.train.config.FixMatchConfig` (presets ``"paper"``, ``"usl"``, ``"cpu"``).
``init`` starts from a self-supervised encoder (``out_dir/model.pt`` of :func:`uslkit.train.simclr.train_simclr`).

Pseudo-label monitor: when every image of the pool has a ground-truth label (a benchmark such as Fashion-MNIST
used as if unlabelled), the history also logs ``pseudo_acc`` (accuracy of the weak-view pseudo-labels of
the unlabelled batches) and ``mask_correct`` (share of the unlabelled batch that is confident AND right), so
``mask - mask_correct`` is the share trained on a confident wrong label: the confirmation that stalls
FixMatch. The labels are only read for these two numbers, never by the loss.

Options against that confirmation bias (:class:`FixMatchConfig`, all off by default; :mod:`uslkit.train.pseudo`):
``distribution_alignment`` (ReMixMatch: the weak-view probabilities are aligned before the threshold and the
pseudo-label, as USB does for FixMatch + DA) and ``threshold_mode`` ``"flexmatch"`` / ``"freematch"`` (a
threshold per class, indexed by the pseudo-label; FreeMatch adds its fairness loss, weight
``fairness_weight``). Their state is held by sub-modules of :class:`FixMatchModule` (buffers), present only when
the option is on, so it is checkpointed and resumed exactly while a default run's state is what it always was.
With an option on the history also logs ``da_entropy`` (entropy of the running mean of predictions over
``log C``: 1 = uniform), ``threshold`` (mean threshold the unlabelled samples faced) and ``loss_f``
(FreeMatch). The pseudo-label monitor judges the pseudo-labels and mask actually trained on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .augment import image_kind
from .batches import image_channels
from .config import FixMatchConfig, resolve_config, split_settings
from .loop import RunSettings, TrainResult, decay_groups, fixmatch_cosine_lr, run_loop
from .losses import fixmatch_loss
from .models import build_model
from .pseudo import DistributionAlignment, FlexMatchThreshold, FreeMatchThreshold, freematch_fairness_loss
from .semi import (ClassifierModule, PseudoLabelMonitor, classifier_eval_fn, labeled_set, load_init_encoder,
                   semi_loaders, semi_params)

__all__ = ["FIXMATCH_PRESETS", "FixMatchConfig", "FixMatchModule", "labeled_set", "train_fixmatch",
           "load_init_encoder"]

#: the presets, name -> :class:`FixMatchConfig` (``FixMatchConfig.PRESETS``).
FIXMATCH_PRESETS = FixMatchConfig.PRESETS


class FixMatchModule(ClassifierModule):
    """``net`` (classifier); ``forward(x)`` returns its logits. The options' state modules, each only when its
    option is on: ``da`` (:class:`DistributionAlignment`), ``flexmatch`` (:class:`FlexMatchThreshold`),
    ``freematch`` (:class:`FreeMatchThreshold`)."""

    def __init__(self, net: nn.Module, *, da: nn.Module | None = None, flexmatch: nn.Module | None = None,
                 freematch: nn.Module | None = None):
        super().__init__(net)
        for name, m in (("da", da), ("flexmatch", flexmatch), ("freematch", freematch)):
            if m is not None:
                self.add_module(name, m)


def train_fixmatch(
    train_set,
    selection,
    config: FixMatchConfig | None = None,
    *,
    preset: str | None = None,
    init=None,
    test_set=None,
    arch_kwargs: dict | None = None,
    batched_augment: bool | None = None,
    monitor_pseudo_labels: bool | None = None,
    **kwargs,
) -> TrainResult:
    """Train FixMatch on ``train_set`` with the labelled samples of ``selection``.

    Args:
        train_set: :class:`uslkit.data.ImageDataset`, the pool the labels file was made for.
        selection: labels file path or :class:`uslkit.labels.Selection`, annotated
            (see :func:`uslkit.train.semi.labeled_set`).
        config: a :class:`FixMatchConfig` (default: its defaults, or the preset).
        preset: a key of ``FixMatchConfig.PRESETS`` instead of ``config``.
        **kwargs: fields of :class:`FixMatchConfig` (``steps=``, ``lr=``, ``ema_decay=``, ...), each one given
            replacing the config's value whatever it equals (:func:`uslkit.train.config.resolve_config`), and run
            settings (``seed``, ``out_dir``, ``device``, ``amp``, ``ckpt_every``, ``log_every``, ``eval_every``,
            ``overwrite``, ``progress``, ``num_workers``: :class:`uslkit.train.loop.RunSettings`).
        init: optional checkpoint whose encoder initialises the network
            (:func:`uslkit.train.semi.load_init_encoder`).
        test_set: labelled :class:`uslkit.data.ImageDataset` for top-1 / per-class accuracy of the model and its
            EMA at each evaluation and at the end.
        arch_kwargs: extra :func:`uslkit.train.models.build_model` arguments.
        batched_augment: see :class:`uslkit.train.batches.Views` (``None``: batched for small in-memory images).
        monitor_pseudo_labels: log ``pseudo_acc`` and ``mask_correct`` from the pool's ground-truth labels
            (module docstring); ``None``: when every pool image has a label, ``True``: required (error if some
            have none), ``False``: never. Not part of the run's parameters: it does not change training.

    Returns:
        :class:`uslkit.train.loop.TrainResult`; ``metrics`` has ``top1``/``ema_top1``/``per_class``/... when a
        ``test_set`` is given.
    """
    overrides, run = split_settings(FixMatchConfig, kwargs)
    cfg = resolve_config(FixMatchConfig, config, preset, overrides)
    cfg.check_complete()
    settings = RunSettings(steps=cfg.steps, **run)
    steps, batch_size, mu, seed, num_workers = cfg.steps, cfg.batch_size, cfg.mu, settings.seed, settings.num_workers
    idx, lab = labeled_set(selection, train_set)
    monitor = PseudoLabelMonitor(train_set, monitor_pseudo_labels)
    kind = image_kind(train_set)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, train_set.num_classes, in_channels=image_channels(train_set),
                          **(arch_kwargs or {}))
    if init is not None:
        load_init_encoder(net, init)
    module = FixMatchModule(net, **_option_modules(cfg, len(train_set), train_set.num_classes, lab))
    lab_views, ulb_views, loaders = semi_loaders(
        train_set, idx, lab, ("weak", "strong"), batch_size=batch_size, unlabeled_batch_size=batch_size * mu,
        seed=seed, num_workers=num_workers, batched=batched_augment, cutout_side=cfg.cutout)
    params = semi_params(cfg, train_set, idx, lab, kind=kind, batched=ulb_views.batched, init=init)

    def make_optimizer(m):
        return torch.optim.SGD(decay_groups(m, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov)

    def step_fn(model, batches, step):
        (x,) = lab_views(batches["labeled"])
        y = batches["labeled"][1]
        uw, us = ulb_views(batches["unlabeled"])
        logits = model(torch.cat([x, uw, us]))
        lx = logits[: x.shape[0]]
        lw, ls = logits[x.shape[0]:].chunk(2)
        if not _options_on(cfg):
            loss, st = fixmatch_loss(lx, y, lw, ls, threshold=cfg.threshold, lambda_u=cfg.lambda_u)
            stats = {"loss_x": st["loss_x"], "loss_u": st["loss_u"], "mask": st["mask"]}
        else:
            loss, st, stats = _loss_with_options(module, cfg, lx, y, lw, ls, batches["unlabeled"][2])
        stats.update(monitor(st["pseudo_labels"], st["confident"], batches["unlabeled"][2]))  # never in the loss
        return loss, stats

    return run_loop(learner="fixmatch", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=fixmatch_cosine_lr(cfg.lr, steps), loaders=loaders, step_fn=step_fn, settings=settings,
                    ema_decay=cfg.ema_decay, eval_fn=classifier_eval_fn(test_set, kind))


def _options_on(cfg: FixMatchConfig) -> bool:
    return cfg.distribution_alignment is not None or cfg.threshold_mode != "fixed"


def _option_modules(cfg: FixMatchConfig, num_samples: int, num_classes: int, labels) -> dict[str, nn.Module]:
    """The state modules of the options that are on (none for a default run).

    Raises:
        ValueError: ``distribution_alignment="labeled"`` with a class that has no label in the labels file (its
            prior would be 0: that class could never be pseudo-labelled).
    """
    mods: dict[str, nn.Module] = {}
    if cfg.distribution_alignment is not None:
        target = None
        if cfg.distribution_alignment == "labeled":
            hist = np.bincount(labels, minlength=num_classes)
            if (hist == 0).any():
                raise ValueError(f"distribution_alignment='labeled': classes {np.flatnonzero(hist == 0).tolist()} "
                                 "have no label in the labels file, so their prior would be 0 and they could never "
                                 "be pseudo-labelled; use distribution_alignment='uniform'")
            target = hist
        mods["da"] = DistributionAlignment(num_classes, window=cfg.da_window, target=target)
    if cfg.threshold_mode == "flexmatch":
        mods["flexmatch"] = FlexMatchThreshold(num_samples, num_classes, threshold=cfg.threshold,
                                               warmup=cfg.flexmatch_warmup)
    elif cfg.threshold_mode == "freematch":
        mods["freematch"] = FreeMatchThreshold(num_classes, ema=cfg.freematch_ema)
    return mods


def _loss_with_options(module, cfg: FixMatchConfig, lx, y, lw, ls, ulb_idx):
    """FixMatch's loss with the options on: ``(loss, fixmatch_loss stats, logged stats)``.

    Order (USB's FixMatch + DA, FlexMatch and FreeMatch): weak-view probabilities -> distribution alignment
    (updated with this batch) -> class thresholds (FlexMatch: from the state before this batch, then updated
    with its confident predictions; FreeMatch: updated with this batch first) -> mask and hard pseudo-labels
    -> FreeMatch's fairness loss on the strong views of the masked samples.
    """
    with torch.no_grad():
        probs = torch.softmax(lw.detach().float(), dim=1)
    stats: dict = {}
    if hasattr(module, "da"):
        probs = module.da(probs)
        p = module.da.p_running().clamp_min(1e-12)
        stats["da_entropy"] = -(p * p.log()).sum() / np.log(p.numel())
    threshold: float | torch.Tensor = cfg.threshold
    if hasattr(module, "flexmatch"):
        threshold = module.flexmatch.class_thresholds()
        module.flexmatch.update(ulb_idx, probs)
    elif hasattr(module, "freematch"):
        module.freematch.update(probs)
        threshold = module.freematch.class_thresholds()
    loss, st = fixmatch_loss(lx, y, lw, ls, threshold=threshold, lambda_u=cfg.lambda_u, probs_u=probs)
    stats.update(loss_x=st["loss_x"], loss_u=st["loss_u"], mask=st["mask"])
    if torch.is_tensor(threshold):
        stats["threshold"] = threshold.to(st["pseudo_labels"].device)[st["pseudo_labels"]].float().mean()
    if hasattr(module, "freematch") and cfg.fairness_weight > 0:
        loss_f = freematch_fairness_loss(ls, st["confident"], module.freematch.p_model, module.freematch.label_hist)
        loss = loss + cfg.fairness_weight * loss_f
        stats["loss_f"] = loss_f.detach()
    return loss, st, stats
