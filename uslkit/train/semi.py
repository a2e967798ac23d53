"""What the semi-supervised learners on a labels file share (FixMatch, MixMatch, CoMatch).

- :func:`labeled_set`: the labelled ``(indices, labels)`` of an annotated labels file, checked against the pool;
- :func:`semi_loaders`: the labelled stream (weak view) and the unlabelled stream (the learner's views) over the
  whole pool, as the USL toolbox: the unlabelled set keeps the labelled samples, the labelled list is repeated
  to fill the steps;
- :func:`semi_params`: the run record every such learner writes (config, dataset, labels, views, init digest);
- :class:`ClassifierModule`: the module ``run_loop`` trains when a learner has no state of its own;
- :func:`load_init_encoder`, :func:`file_digest`: a self-supervised encoder to start from, and its record;
- :class:`PseudoLabelMonitor`: ``pseudo_acc`` / ``mask_correct`` from the pool's ground-truth labels, when it
  has them (a benchmark used as if unlabelled); these labels never reach a loss;
- :func:`classifier_eval_fn`: top-1 / per-class accuracy of the model and its EMA on a test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._io import file_sha256
from ..labels import Selection, check_against_dataset, load_selection
from .batches import StepLoader, StepStream, Views
from .models import load_model

__all__ = ["ClassifierModule", "PseudoLabelMonitor", "classifier_eval_fn", "file_digest", "labeled_set",
           "load_init_encoder", "monitor_labels", "semi_loaders", "semi_params"]


class ClassifierModule(nn.Module):
    """``net`` (a :func:`uslkit.train.models.build_model` classifier); ``forward(x)`` returns its logits
    ``(B, C)``. Its state_dict keys are ``net.*``, those of every kit classifier checkpoint."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def labeled_set(selection, dataset) -> tuple[np.ndarray, np.ndarray]:
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


def file_digest(path) -> dict:
    """``{"path": str, "sha256": hex}`` of an input file (an init checkpoint) for the run record.

    Raises:
        FileNotFoundError: ``path`` is not a file.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"init checkpoint {p} does not exist")
    return {"path": str(p), "sha256": file_sha256(p)}


def semi_loaders(train_set, idx: np.ndarray, lab: np.ndarray, unlabeled_views: tuple[str, ...], *, batch_size: int,
                 unlabeled_batch_size: int, seed: int, num_workers: int = 0, batched: bool | None = None,
                 cutout_side: str | None = None) -> tuple[Views, Views, dict[str, StepLoader]]:
    """``(lab_views, ulb_views, loaders)`` of a semi-supervised learner.

    ``loaders["labeled"]``: ``batch_size`` of the labelled samples ``idx`` per step (stream 1, the list repeated
    to fill the steps), one weak view, carrying the labels ``lab``; ``loaders["unlabeled"]``:
    ``unlabeled_batch_size`` of the whole pool per step (stream 2), in the views ``unlabeled_views`` (e.g.
    ``("weak", "strong")``; ``cutout_side`` for a ``"strong"`` one), carrying no labels. Both are pure functions
    of ``(seed, step)`` (:class:`uslkit.train.batches.StepStream`); ``batched``: see
    :class:`uslkit.train.batches.Views`.
    """
    labels_full = np.full(len(train_set), -1, dtype=np.int64)
    labels_full[idx] = lab
    lab_views = Views(train_set, ("weak",), labels=labels_full, batched=batched)
    ulb_views = Views(train_set, tuple(unlabeled_views), batched=batched, cutout_side=cutout_side)
    loaders = {
        "labeled": StepLoader(lab_views.dataset, StepStream(len(idx), batch_size, seed=seed, stream=1, indices=idx),
                              num_workers=num_workers),
        "unlabeled": StepLoader(ulb_views.dataset, StepStream(len(train_set), unlabeled_batch_size, seed=seed,
                                                              stream=2), num_workers=num_workers),
    }
    return lab_views, ulb_views, loaders


def semi_params(cfg, train_set, idx: np.ndarray, lab: np.ndarray, *, kind: str, batched: bool, init) -> dict:
    """The run record of a semi-supervised learner: the config's fields (``cfg.run_params()``), the dataset's name,
    split and size, the labelled indices and labels, the image kind, the augmentation path (``"batched"`` or
    ``"per-sample"``) and the init checkpoint's :func:`file_digest` (``None`` without one)."""
    return dict(cfg.run_params(), dataset=getattr(train_set, "name", None), split=getattr(train_set, "split", None),
                n=len(train_set), labeled=idx.tolist(), labels=lab.tolist(), kind=kind,
                augment="batched" if batched else "per-sample", init=None if init is None else file_digest(init))


def monitor_labels(train_set, monitor: bool | None) -> torch.Tensor | None:
    """The pool's labels as an int64 ``(N,)`` tensor when the pseudo-label monitor is on, else ``None``.

    ``monitor``: ``None``: on when every pool image has a label; ``True``: required; ``False``: off.

    Raises:
        TypeError: ``monitor`` is not ``None``, ``True`` or ``False``.
        ValueError: ``monitor=True`` and some pool image has no label (``-1``).
    """
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


class PseudoLabelMonitor:
    """Scores a learner's pseudo-labels against the pool's ground truth (:func:`monitor_labels`), for the history.

    ``monitor(pseudo_labels, confident, indices)`` with ``(n,)`` int64 pseudo-labels, ``(n,)`` bool "confident"
    (the samples a threshold learner trains on) and the ``(n,)`` pool indices of the unlabelled batch returns
    ``{"pseudo_acc": share right, "mask_correct": share confident AND right}`` (0-d tensors), or ``{}`` when the
    monitor is off; ``mask - mask_correct`` is the share trained on a confident wrong label. The labels are copied
    once to each device the batches come on.
    """

    def __init__(self, train_set, monitor: bool | None = None):
        self.truth = monitor_labels(train_set, monitor)
        self._on_device: dict = {}

    @property
    def on(self) -> bool:
        return self.truth is not None

    def __call__(self, pseudo_labels: torch.Tensor, confident: torch.Tensor, indices: torch.Tensor) -> dict:
        if self.truth is None:
            return {}
        if indices.device not in self._on_device:
            self._on_device[indices.device] = self.truth.to(indices.device)
        right = pseudo_labels == self._on_device[indices.device][indices].to(pseudo_labels.device)
        return {"pseudo_acc": right.float().mean(), "mask_correct": (right & confident).float().mean()}


def classifier_eval_fn(test_set, kind: str):
    """``run_loop``'s ``eval_fn``: :func:`uslkit.evaluate.evaluate_classifier` of the model and its EMA on
    ``test_set`` (``None`` without a test set)."""
    if test_set is None:
        return None
    from ..evaluate import evaluate_classifier

    def eval_fn(net, ema):
        return evaluate_classifier(net, test_set, ema=ema, kind=kind)

    return eval_fn
