"""Evaluation shared by every learner: classifier accuracy, kNN on embeddings, the low-budget AL linear probe.

- :func:`extract_features` / :func:`predict`: a network over a dataset with the deterministic test transform.
- :func:`classification_metrics`: top-1 and per-class accuracy.
- :func:`knn_metrics`: 1-NN (cosine, the low-budget AL paper) and SeLa's weighted 10-NN (``sigma = 0.1``) via
  :func:`uslkit.evaluate.nn_accuracy`.
- :func:`pseudo_label_stats`: what a classifier's pseudo-labels on a labelled pool look like at a confidence
  threshold (FixMatch's confirmation: confident and wrong; the class it over-predicts).
- :func:`al_linear_probe`: the low-budget AL paper's probe (notes sec. 3): ``Normalize -> Linear``, Adam lr
  0.01, x0.1 at epochs 50 and 75, 100 epochs, batch 128, LAST-epoch accuracy, on frozen features.
"""

from __future__ import annotations

import numpy as np
import torch

from .._validate import check_positive_int, check_seed
from ..device import resolve_device

__all__ = ["extract_features", "predict", "classification_metrics", "knn_metrics", "al_linear_probe",
           "evaluate_classifier", "pseudo_label_stats"]


def _batches(dataset, kind, batch_size):
    from .augment import normalize, test_transform, to_uint8_tensor
    from .batches import images_as_tensor

    tf = test_transform(kind)
    images = images_as_tensor(dataset)
    n = len(dataset)
    for s in range(0, n, batch_size):
        idx = range(s, min(n, s + batch_size))
        if images is not None and kind != "imagenet":  # the test transform is normalisation alone: batch it
            yield normalize(images[s : s + batch_size], kind)
        elif images is not None:
            yield torch.stack([tf(images[i]) for i in idx])
        else:
            yield torch.stack([tf(to_uint8_tensor(dataset.get_image(i))) for i in idx])


@torch.no_grad()
def _run(fn, net, dataset, *, kind, batch_size, device, progress, desc):
    from .augment import image_kind

    kind = kind or image_kind(dataset)
    batch_size = check_positive_int(batch_size, name="batch_size")
    dev = resolve_device(device) if device is not None else next(net.parameters()).device
    was = net.training
    net.eval().to(dev)
    outs = []
    it = _batches(dataset, kind, batch_size)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, total=-(-len(dataset) // batch_size), desc=desc, unit="batch", leave=False)
    for x in it:
        outs.append(fn(x.to(dev)).float().cpu())
    net.train(was)
    return torch.cat(outs).numpy() if outs else np.zeros((0, 0), dtype=np.float32)


def extract_features(net, dataset, *, kind=None, batch_size=512, device=None, progress=False) -> np.ndarray:
    """``net.features`` of every sample of ``dataset`` (test transform, eval mode), float32 ``(N, feat_dim)``."""
    return _run(net.features, net, dataset, kind=kind, batch_size=batch_size, device=device, progress=progress,
                desc="features")


def predict(net, dataset, *, kind=None, batch_size=512, device=None, progress=False) -> np.ndarray:
    """Logits of ``net`` for every sample of ``dataset``, float32 ``(N, num_classes)``."""
    return _run(net, net, dataset, kind=kind, batch_size=batch_size, device=device, progress=progress,
                desc="predict")


def classification_metrics(pred, labels, num_classes: int) -> dict:
    """``{"top1", "per_class": [acc of class c, ...], "mean_per_class"}`` (accuracies in ``[0, 1]``; a class
    without test samples gets ``None``)."""
    pred = np.asarray(pred).astype(np.int64)
    labels = np.asarray(labels).astype(np.int64)
    if pred.shape != labels.shape:
        raise ValueError(f"{pred.shape[0]} predictions for {labels.shape[0]} labels")
    per = []
    for c in range(num_classes):
        m = labels == c
        per.append(float((pred[m] == c).mean()) if m.any() else None)
    valid = [p for p in per if p is not None]
    return {"top1": float((pred == labels).mean()) if labels.size else float("nan"), "per_class": per,
            "mean_per_class": float(np.mean(valid)) if valid else float("nan")}


def evaluate_classifier(net, test_set, *, ema=None, kind=None, batch_size=512, device=None) -> dict:
    """Top-1 and per-class test accuracy of ``net`` (keys ``top1``, ``per_class``, ...) and of its EMA
    (same keys prefixed ``ema_``) when given."""
    out = {}
    for prefix, model in (("", net), ("ema_", ema)):
        if model is None:
            continue
        logits = predict(model, test_set, kind=kind, batch_size=batch_size, device=device)
        m = classification_metrics(logits.argmax(1), test_set.labels, test_set.num_classes)
        out.update({prefix + k: v for k, v in m.items()})
    return out


def pseudo_label_stats(logits, labels, *, threshold: float = 0.95, picked_labels=None, class_names=None) -> dict:
    """The pseudo-labels a classifier gives a pool whose true ``labels`` are known (a benchmark dataset used as
    if unlabelled), at FixMatch's confidence ``threshold`` (max softmax ``>= threshold``, eq. 4 of Sohn et al.
    2020): how much of FixMatch's unlabelled loss trains on a wrong label.

    Args:
        logits: ``(N, C)`` logits (e.g. :func:`predict` of the EMA model on the pool, clean images).
        labels: ``(N,)`` true labels in ``[0, C)``.
        threshold: confidence threshold in ``[0, 1]``.
        picked_labels: optional labels of the labelled set, counted per class into ``picks``.
        class_names: optional ``C`` names for ``over["class"]``.

    Returns:
        ``acc`` (all), ``confident`` (share at or above the threshold), ``confident_acc`` (``None`` when none is),
        ``confident_wrong`` (share of the pool confident AND wrong), ``pred_share`` / ``true_share`` per class,
        ``picks`` per class (zeros without ``picked_labels``), and ``over``: the class whose predicted share
        exceeds its true share the most (``class``, ``index``, ``pred_share``, ``true_share``, ``picks``).

    Raises:
        ValueError: shapes disagree, a label is outside ``[0, C)``, or the threshold is outside ``[0, 1]``.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or z.shape[0] == 0 or y.shape != (z.shape[0],):
        raise ValueError(f"logits must be (N, C) with N >= 1 and labels (N,); got {z.shape} and {y.shape}")
    c = z.shape[1]
    if not np.issubdtype(y.dtype, np.integer) or (y < 0).any() or (y >= c).any():
        raise ValueError(f"labels must be integers in [0, {c}) (every pool image labelled)")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    picks = np.zeros(c, dtype=np.int64)
    if picked_labels is not None:
        pl = np.asarray(picked_labels, dtype=np.int64)
        if ((pl < 0) | (pl >= c)).any():
            raise ValueError(f"picked_labels must be in [0, {c})")
        picks = np.bincount(pl, minlength=c)
    names = list(class_names) if class_names is not None else list(range(c))
    if len(names) != c:
        raise ValueError(f"{len(names)} class names for {c} classes")
    e = np.exp(z - z.max(1, keepdims=True))
    conf = (e / e.sum(1, keepdims=True)).max(1)
    pred = z.argmax(1)
    right = pred == y
    confident = conf >= threshold
    pred_share = np.bincount(pred, minlength=c) / len(y)
    true_share = np.bincount(y, minlength=c) / len(y)
    o = int(np.argmax(pred_share - true_share))
    return {"threshold": float(threshold), "n": int(len(y)), "acc": float(right.mean()),
            "confident": float(confident.mean()),
            "confident_acc": float(right[confident].mean()) if confident.any() else None,
            "confident_wrong": float((confident & ~right).mean()),
            "pred_share": pred_share.tolist(), "true_share": true_share.tolist(), "picks": picks.tolist(),
            "over": {"class": str(names[o]), "index": o, "pred_share": float(pred_share[o]),
                     "true_share": float(true_share[o]), "picks": int(picks[o])}}


def knn_metrics(train_feats, train_labels, test_feats, test_labels) -> dict:
    """``{"knn1": 1-NN cosine accuracy, "knn10_weighted": SeLa's weighted 10-NN (sigma 0.1)}``."""
    from ..evaluate import nn_accuracy

    return {
        "knn1": nn_accuracy(train_feats, train_labels, test_feats, test_labels, k=1),
        "knn10_weighted": nn_accuracy(train_feats, train_labels, test_feats, test_labels, k=10, weighted=True,
                                      temperature=0.1),
    }


def al_linear_probe(train_feats, train_labels, test_feats, test_labels, *, num_classes=None, epochs=100, lr=0.01,
                    batch_size=128, milestones=(50, 75), seed=0, device=None) -> float:
    """The low-budget AL paper's linear probe on frozen features; returns LAST-epoch test accuracy.

    ``Normalize -> Linear`` (features L2-normalised, no bias-free tricks), Adam(lr), learning rate x0.1 at
    ``milestones`` epochs, cross-entropy, shuffled mini-batches of ``batch_size`` (the paper: 128, and 4 on
    CIFAR at tiny budgets). Seeded; CPU is fast enough for any budget the papers use.
    """
    seed = check_seed(seed)
    epochs = check_positive_int(epochs, name="epochs")
    batch_size = check_positive_int(batch_size, name="batch_size")
    xtr = torch.nn.functional.normalize(torch.as_tensor(np.asarray(train_feats), dtype=torch.float32), dim=1)
    xte = torch.nn.functional.normalize(torch.as_tensor(np.asarray(test_feats), dtype=torch.float32), dim=1)
    ytr = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    yte = np.asarray(test_labels)
    if xtr.shape[0] != ytr.shape[0] or xtr.shape[0] == 0:
        raise ValueError(f"{xtr.shape[0]} training features for {ytr.shape[0]} labels (need at least one)")
    c = int(num_classes or max(int(ytr.max()), int(yte.max())) + 1)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(xtr.shape[1], c).to(dev)
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(milestones), gamma=0.1)
    xtr, ytr = xtr.to(dev), ytr.to(dev)
    for _ in range(epochs):
        perm = torch.randperm(xtr.shape[0], generator=gen).to(dev)
        for s in range(0, xtr.shape[0], batch_size):
            b = perm[s : s + batch_size]
            loss = torch.nn.functional.cross_entropy(layer(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        pred = layer(xte.to(dev)).argmax(1).cpu().numpy()
    return float((pred == yte).mean())
