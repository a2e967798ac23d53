"""MixMatch (Berthelot et al. 2019) on a labels file: one of the semi-supervised learners of USL's Table 4.

Each step (Alg. 1) takes ``batch_size`` labelled images (one weak view) and ``batch_size`` unlabelled images
(K = 2 weak views), guesses the unlabelled labels as the sharpened mean of the two views' predictions
(:func:`uslkit.train.losses.sharpen`, ``T`` 0.5), mixes all ``3 B`` images and targets with one shuffle of
them (:func:`uslkit.train.losses.mixup`, ``lambda' = max(lambda, 1 - lambda)``, ``lambda ~ Beta(0.75, 0.75)``)
and minimises :func:`uslkit.train.losses.mixmatch_loss` (cross-entropy on the mixed labelled part, L2 on the
mixed unlabelled part, weighted by ``lambda_u`` ramped up linearly). Adam at a constant learning rate with
decoupled weight decay, and an EMA of the weights for evaluation.

How it follows the reference code (google-research/mixmatch) and where it departs from it:

- the guess is computed with batch statistics (train mode) and without gradient; the BN running statistics
  are left as they were, as the reference (which drops that pass's update ops) and USB do;
- batch norm: the reference runs the classifier on three batches and *interleaves* labelled and unlabelled rows
  between them so that each batch's statistics (and the running statistics, taken from the first batch only)
  represent the whole mixed batch. Here the ``3 B`` mixed images go through ONE forward pass, so batch norm
  sees exactly the whole mixed batch: what the interleave approximates; the running statistics are those of
  all ``3 B`` rows;
- weight decay: the reference multiplies the weights (``kernel`` variables) by ``1 - 0.02 lr`` after each Adam
  step (the PyTorch port YU1ut/MixMatch-pytorch does it inside its EMA step, on every float tensor, BN
  statistics included); here ``AdamW`` applies the same factor to the weights (``ndim > 1``) before the
  Adam update, the same decay to first order;
- EMA: :class:`uslkit.train.loop.ModelEMA` (buffers copied, as for FixMatch); the USL appendix averages the
  test accuracy of the last 20 epochs, this reports the last evaluation;
- MixUp ``lambda``: one per step (``mixup_lambda="batch"``: the paper's Alg. 1 as the PyTorch ports YU1ut and
  USB read it) or one per image (``"sample"``: the reference's ``MixMode``); its draw and the shuffle come from
  torch's global RNG, which :func:`uslkit.train.loop.run_loop` re-seeds from ``(seed, step)`` before each step,
  so a run is bit-reproducible and resumes exactly. Under DDP each process mixes its own rows (the same
  ``lambda`` and shuffle pattern on each), as the per-GPU reference implementations do.

The labelled set comes from a labels file (:func:`uslkit.train.semi.labeled_set`); the unlabelled set is
the whole training pool, and the labelled list is repeated to fill the steps, as for FixMatch.

Hyperparameters: :class:`uslkit.train.config.MixMatchConfig` (presets ``"paper"``, ``"cpu"``).

Pseudo-label monitor (as FixMatch's, so the numbers mean the same across learners): "confident" is judged on the
UNSHARPENED guess ``p`` (the mean of the two views' predictions, max ``p >= 0.95``), the quantity FixMatch
thresholds; sharpening would inflate it (at ``T = 0.5`` a max of 0.8 over two classes becomes 0.94). The history
logs ``confident`` (that share of the unlabelled batch) always and, when every pool image has a ground-truth
label, ``pseudo_acc`` (accuracy of ``argmax p``, the argmax of the sharpened target too) and ``mask_correct``
(share confident AND right). MixMatch trains on every guess, confident or not; the labels are only read for
these numbers, never by the loss.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .augment import image_kind
from .batches import image_channels
from .config import MixMatchConfig, resolve_config, split_settings
from .loop import RunSettings, TrainResult, decay_groups, run_loop
from .losses import linear_rampup, mixmatch_loss, mixup, sharpen
from .models import build_model
from .semi import (ClassifierModule, PseudoLabelMonitor, classifier_eval_fn, labeled_set, load_init_encoder,
                   semi_loaders, semi_params)

__all__ = ["MIXMATCH_PRESETS", "MixMatchConfig", "train_mixmatch", "CONFIDENT"]

#: the presets, name -> :class:`MixMatchConfig` (``MixMatchConfig.PRESETS``).
MIXMATCH_PRESETS = MixMatchConfig.PRESETS

#: confidence (max of the unsharpened guess ``p``) counted as ``confident`` by the monitor: FixMatch's threshold,
#: so that ``confident`` and ``mask_correct`` mean the same for both learners (MixMatch itself uses no threshold).
CONFIDENT = 0.95


def train_mixmatch(
    train_set,
    selection,
    config: MixMatchConfig | None = None,
    *,
    preset: str | None = None,
    init=None,
    test_set=None,
    arch_kwargs: dict | None = None,
    batched_augment: bool | None = None,
    monitor_pseudo_labels: bool | None = None,
    **kwargs,
) -> TrainResult:
    """Train MixMatch on ``train_set`` with the labelled samples of ``selection``.

    Args:
        train_set: :class:`uslkit.data.ImageDataset`, the pool the labels file was made for.
        selection: labels file path or :class:`uslkit.labels.Selection`, annotated
            (see :func:`uslkit.train.semi.labeled_set`).
        config: a :class:`MixMatchConfig` (default: its defaults, or the preset).
        preset: a key of ``MixMatchConfig.PRESETS`` instead of ``config``.
        **kwargs: fields of :class:`MixMatchConfig` (``steps=``, ``lambda_u=``, ``rampup_steps=``, ...), each one
            given replacing the config's value whatever it equals (:func:`uslkit.train.config.resolve_config`), and
            run settings (``seed``, ``out_dir``, ``device``, ``amp``, ``ckpt_every``, ``log_every``, ``eval_every``,
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
        ``test_set`` is given. The history logs ``loss``, ``loss_x``, ``loss_u``, ``lambda_u`` (ramped),
        ``confident`` and the monitor's numbers.
    """
    overrides, run = split_settings(MixMatchConfig, kwargs)
    cfg = resolve_config(MixMatchConfig, config, preset, overrides)
    cfg.check_complete()
    settings = RunSettings(steps=cfg.steps, **run)
    seed, num_workers, num_classes = settings.seed, settings.num_workers, train_set.num_classes
    idx, lab = labeled_set(selection, train_set)
    monitor = PseudoLabelMonitor(train_set, monitor_pseudo_labels)
    kind = image_kind(train_set)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, num_classes, in_channels=image_channels(train_set), **(arch_kwargs or {}))
    if init is not None:
        load_init_encoder(net, init)
    module = ClassifierModule(net)
    lab_views, ulb_views, loaders = semi_loaders(  # K = 2 weak augmentations of each unlabelled image
        train_set, idx, lab, ("weak", "weak"), batch_size=cfg.batch_size, unlabeled_batch_size=cfg.batch_size,
        seed=seed, num_workers=num_workers, batched=batched_augment)
    params = semi_params(cfg, train_set, idx, lab, kind=kind, batched=ulb_views.batched, init=init)

    def make_optimizer(m):
        return torch.optim.AdamW(decay_groups(m, cfg.weight_decay), lr=cfg.lr)

    def step_fn(model, batches, step):
        (x,) = lab_views(batches["labeled"])
        y = batches["labeled"][1]
        u1, u2 = ulb_views(batches["unlabeled"])
        with torch.no_grad(), _running_stats_kept(net):  # Alg. 1 lines 7-8: guess from the K views, sharpen
            p = (torch.softmax(model(u1).float(), dim=1) + torch.softmax(model(u2).float(), dim=1)) / 2
            q = sharpen(p, cfg.temperature)
        inputs = torch.cat([x, u1, u2])
        targets = torch.cat([F.one_hot(y, num_classes).float(), q, q])
        lam, perm = _draw_mixup(inputs.shape[0], cfg.alpha, per_sample=cfg.mixup_lambda == "sample")
        mixed_x, mixed_y = mixup(inputs, targets, lam.to(inputs.device), perm.to(inputs.device))  # lines 10-13
        logits = model(mixed_x)  # one pass over all 3B rows (the module docstring: instead of the interleave)
        b = x.shape[0]
        weight = cfg.lambda_u * linear_rampup(step, cfg.rampup_steps)
        loss, st = mixmatch_loss(logits[:b], mixed_y[:b], logits[b:], mixed_y[b:], weight=weight)
        conf, guess = p.max(dim=1)  # the unsharpened guess: "confident" as FixMatch's threshold means it
        confident = conf >= CONFIDENT
        stats = {"loss_x": st["loss_x"], "loss_u": st["loss_u"], "lambda_u": weight,
                 "confident": confident.float().mean()}
        stats.update(monitor(guess, confident, batches["unlabeled"][2]))  # never in the loss
        return loss, stats

    return run_loop(learner="mixmatch", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=lambda step: cfg.lr, loaders=loaders, step_fn=step_fn, settings=settings,
                    ema_decay=cfg.ema_decay, eval_fn=classifier_eval_fn(test_set, kind))


def _draw_mixup(n: int, alpha: float, *, per_sample: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lambda, perm)`` from torch's global RNG (re-seeded per step by run_loop): ``lambda ~ Beta(alpha, alpha)``,
    a 0-d tensor or ``(n,)`` when ``per_sample``, and a random permutation of ``range(n)`` (on the CPU)."""
    a = torch.tensor(float(alpha))
    lam = torch.distributions.Beta(a, a).sample((n,) if per_sample else ())
    return lam, torch.randperm(n)


@contextlib.contextmanager
def _running_stats_kept(net: nn.Module):
    """Forward passes inside use batch statistics as usual, but leave ``net``'s buffers (BN running statistics and
    counters) as they were: the reference's guess pass, whose update ops it never runs."""
    saved = [b.detach().clone() for b in net.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(net.buffers(), saved):
                b.copy_(s)
