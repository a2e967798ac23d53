"""FixMatch (Sohn et al. 2020) on a labels file: the downstream semi-supervised learner of the USL papers.

Each step takes ``batch_size`` labelled images (weak view) and ``mu * batch_size`` unlabelled images (weak and
strong views), runs ONE forward pass over their concatenation (as the reference, so batch norm sees all of
them), and minimises :func:`uslkit.train.losses.fixmatch_loss` (hard pseudo-labels from the weak view where
the confidence is ``>= threshold``, cross-entropy on the strong view). SGD with Nesterov momentum, weight
decay on weights only (not biases or BN, as the reference), the schedule ``lr cos(7 pi k / 16 K)``, and an
EMA of the weights for evaluation.

The labelled set is read from a labels file (:mod:`uslkit.labels`), checked against the dataset; the
unlabelled set is the whole training pool (the USL toolbox keeps all of it, labelled samples included); the
labelled list is repeated to fill the steps, as the USL toolbox does.

Hyperparameters: :class:`uslkit.train.config.FixMatchConfig` (presets ``"paper"``, ``"usl"``, ``"cpu"``).
``init`` starts from a self-supervised encoder (``out_dir/model.pt`` of :func:`uslkit.train.simclr.train_simclr`).

Pseudo-label monitor: when every image of the pool has a ground-truth label (a benchmark such as Fashion-MNIST
used as if unlabelled), the history also logs ``pseudo_acc`` (accuracy of the weak-view pseudo-labels of
the unlabelled batches) and ``mask_correct`` (share of the unlabelled batch that is confident AND right), so
``mask - mask_correct`` is the share trained on a confident wrong label: the confirmation that stalls
FixMatch. The labels are only read for these two numbers, never by the loss.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import file_sha256
from ..labels import Selection, check_against_dataset, load_selection
from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels
from .config import FixMatchConfig, resolve_config, split_settings
from .loop import RunSettings, TrainResult, decay_groups, fixmatch_cosine_lr, run_loop
from .losses import fixmatch_loss
from .models import build_model, load_model

__all__ = ["FIXMATCH_PRESETS", "FixMatchConfig", "FixMatchModule", "labeled_set", "train_fixmatch",
           "load_init_encoder"]

#: the presets, name -> :class:`FixMatchConfig` (``FixMatchConfig.PRESETS``).
FIXMATCH_PRESETS = FixMatchConfig.PRESETS


class FixMatchModule(nn.Module):
    """``net`` (classifier); ``forward(x)`` returns its logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def labeled_set(selection, dataset):
    """``(indices, labels)`` int64 arrays of an annotated labels file (path or
    :class:`uslkit.labels.Selection`), checked against ``dataset``.

    Raises:
        ValueError: the file does not match the dataset (n, name, split, ids, classes), has no labels yet, a
            label is outside ``[0, num_classes)``, or it extends earlier rounds (``labeled_before``), whose
            labels are not in this file.
    """
    sel = selection if isinstance(selection, Selection) else load_selection(selection, dataset=dataset)
    check_against_dataset(sel, dataset)
    if sel.labeled_before:
        raise ValueError(f"the labels file extends {len(sel.labeled_before)} earlier labelled samples whose labels "
                         "it does not hold; train on a file that lists the whole labelled set")
    idx, lab = sel.as_arrays()
    bad = (lab < 0) | (lab >= dataset.num_classes)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"label {int(lab[j])} of sample {int(idx[j])} is outside [0, {dataset.num_classes})")
    return idx, lab


def load_init_encoder(net: nn.Module, path) -> None:
    """Copy the encoder weights of a kit checkpoint (e.g. SimCLR's ``model.pt``) into ``net.encoder``.

    Raises:
        ValueError: the checkpoint's architecture name or input channels differ from ``net``'s.
    """
    src = load_model(path)
    for key in ("name", "in_channels"):
        if src.arch.get(key) != net.arch.get(key):
            raise ValueError(f"init checkpoint {path} has {key}={src.arch.get(key)!r}, the model being trained has "
                             f"{key}={net.arch.get(key)!r}")
    net.encoder.load_state_dict(src.encoder.state_dict())


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
        selection: labels file path or :class:`uslkit.labels.Selection`, annotated (see :func:`labeled_set`).
        config: a :class:`FixMatchConfig` (default: its defaults, or the preset).
        preset: a key of ``FixMatchConfig.PRESETS`` instead of ``config``.
        **kwargs: fields of :class:`FixMatchConfig` (``steps=``, ``lr=``, ``ema_decay=``, ...), each one given
            replacing the config's value whatever it equals (:func:`uslkit.train.config.resolve_config`), and run
            settings (``seed``, ``out_dir``, ``device``, ``amp``, ``ckpt_every``, ``log_every``, ``eval_every``,
            ``overwrite``, ``progress``, ``num_workers``: :class:`uslkit.train.loop.RunSettings`).
        init: optional checkpoint whose encoder initialises the network (:func:`load_init_encoder`).
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
    truth = _monitor_labels(train_set, monitor_pseudo_labels)
    truth_on: dict = {}  # the labels on each device the batches come on
    kind = image_kind(train_set)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, train_set.num_classes, in_channels=image_channels(train_set),
                          **(arch_kwargs or {}))
    if init is not None:
        load_init_encoder(net, init)
    module = FixMatchModule(net)
    labels_full = np.full(len(train_set), -1, dtype=np.int64)
    labels_full[idx] = lab
    lab_views = Views(train_set, ("weak",), labels=labels_full, batched=batched_augment)
    ulb_views = Views(train_set, ("weak", "strong"), batched=batched_augment, cutout_side=cfg.cutout)
    loaders = {
        "labeled": StepLoader(lab_views.dataset, StepStream(len(idx), batch_size, seed=seed, stream=1, indices=idx),
                              num_workers=num_workers),
        "unlabeled": StepLoader(ulb_views.dataset, StepStream(len(train_set), batch_size * mu, seed=seed, stream=2),
                                num_workers=num_workers),
    }
    params = dict(cfg.run_params(), dataset=getattr(train_set, "name", None), split=getattr(train_set, "split", None),
                  n=len(train_set), labeled=idx.tolist(), labels=lab.tolist(), kind=kind,
                  augment="batched" if ulb_views.batched else "per-sample",
                  init=None if init is None else _file_digest(init))

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
        loss, st = fixmatch_loss(lx, y, lw, ls, threshold=cfg.threshold, lambda_u=cfg.lambda_u)
        stats = {"loss_x": st["loss_x"], "loss_u": st["loss_u"], "mask": st["mask"]}
        if truth is not None:  # monitoring only: these labels never reach the loss
            ui = batches["unlabeled"][2]
            if ui.device not in truth_on:
                truth_on[ui.device] = truth.to(ui.device)
            right = st["pseudo_labels"] == truth_on[ui.device][ui].to(st["pseudo_labels"].device)
            stats["pseudo_acc"] = right.float().mean()
            stats["mask_correct"] = (right & st["confident"]).float().mean()
        return loss, stats

    eval_fn = None
    if test_set is not None:
        from ..evaluate import evaluate_classifier

        def eval_fn(net_, ema_):
            return evaluate_classifier(net_, test_set, ema=ema_, kind=kind)

    return run_loop(learner="fixmatch", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=fixmatch_cosine_lr(cfg.lr, steps), loaders=loaders, step_fn=step_fn, settings=settings,
                    ema_decay=cfg.ema_decay, eval_fn=eval_fn)


def _monitor_labels(train_set, monitor) -> torch.Tensor | None:
    """The pool's labels as an int64 tensor when the pseudo-label monitor is on, else ``None``."""
    if monitor is not None and not isinstance(monitor, bool):
        raise TypeError(f"monitor_pseudo_labels must be None, True or False, got {monitor!r}")
    labels = np.asarray(train_set.labels)
    complete = labels.size > 0 and bool((labels >= 0).all())
    if monitor and not complete:
        raise ValueError(f"monitor_pseudo_labels=True needs a label for every pool image; "
                         f"{int((labels < 0).sum())} of {labels.size} have none (-1)")
    if monitor is False or not complete:
        return None
    return torch.as_tensor(labels, dtype=torch.int64)


def _file_digest(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"init checkpoint {p} does not exist")
    return {"path": str(p), "sha256": file_sha256(p)}
