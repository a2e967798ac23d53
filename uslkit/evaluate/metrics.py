"""Metrics over label arrays: class coverage and balance of a selection, cluster purity, classifier accuracy,
pseudo-label quality, and :func:`selection_report` gathering the usual numbers about one selection.

Class coverage and histograms follow Pourahmadi, Nooralinejad & Pirsiavash 2022 (Tables 2, 3 and 6).
"""

from __future__ import annotations

import math

import numpy as np

from .._validate import check_embeddings, check_indices, check_positive_int
from ._checks import int_1d
from .probes import label_propagation_accuracy, nn_accuracy

__all__ = [
    "class_coverage",
    "class_histogram",
    "classification_metrics",
    "cluster_purity",
    "imbalance",
    "pseudo_label_stats",
    "selection_report",
]


def class_histogram(labels_of_selection, num_classes: int) -> np.ndarray:
    """Number of selected samples per class.

    Args:
        labels_of_selection: true classes of the selected samples, int ``(budget,)``, in ``[0, C)``.
        num_classes: ``C``.

    Returns:
        int64 ``(C,)``, summing to ``budget``.

    Raises:
        ValueError: empty selection, non-integer labels, labels outside ``[0, C)``.
    """
    lab, c = _check_selection_labels(labels_of_selection, num_classes)
    return np.bincount(lab, minlength=c).astype(np.int64)


def class_coverage(labels_of_selection, num_classes: int) -> float:
    """Fraction of the ``C`` classes with at least one selected sample (Pourahmadi et al. 2022, Table 2).

    Args:
        labels_of_selection: int ``(budget,)`` in ``[0, C)``.
        num_classes: ``C``.

    Returns:
        A float in ``[1/C, 1]``.
    """
    return float((class_histogram(labels_of_selection, num_classes) > 0).mean())


def imbalance(labels_of_selection, num_classes: int) -> dict:
    """Balance of the selected classes.

    With ``p_c = h_c / budget`` over all ``C`` classes (``h`` = :func:`class_histogram`):

    - ``entropy``: ``-sum_c p_c log p_c`` in nats (``0 log 0 = 0``); ``log C`` when perfectly balanced.
    - ``normalized_entropy``: ``entropy / log C`` in ``[0, 1]`` (defined as 1.0 when ``C = 1``).
    - ``max_min_ratio``: ``max_c h_c / min_c h_c``; ``inf`` when a class is missing (``min_c h_c = 0``),
      1.0 when balanced. Note that ``json.dumps`` writes ``inf`` as the non-standard ``Infinity``.
    - ``num_missing``: number of classes with no selected sample.

    Args:
        labels_of_selection: int ``(budget,)`` in ``[0, C)``.
        num_classes: ``C``.

    Returns:
        ``{"entropy": float, "normalized_entropy": float, "max_min_ratio": float, "num_missing": int}``.
    """
    h = class_histogram(labels_of_selection, num_classes)
    p = h[h > 0] / h.sum()
    entropy = float(-(p * np.log(p)).sum())
    c = h.size
    return {
        "entropy": entropy,
        "normalized_entropy": entropy / math.log(c) if c > 1 else 1.0,
        "max_min_ratio": float(h.max() / h.min()) if h.min() > 0 else math.inf,
        "num_missing": int((h == 0).sum()),
    }


def cluster_purity(cluster_ids, labels) -> float:
    """Purity of a clustering: ``sum_k max_c |{i : cluster_i = k, label_i = c}| / n``.

    Args:
        cluster_ids: int ``(n,)``, any integer cluster ids (``-1`` is treated as one more cluster).
        labels: int ``(n,)``, true classes, ``>= 0``.

    Returns:
        A float in ``(0, 1]``; 1.0 when every cluster holds a single class.

    Raises:
        ValueError: length mismatch, empty input, non-integer values, negative labels.
    """
    k = int_1d(cluster_ids, name="cluster_ids")
    y = int_1d(labels, name="labels")
    if k.size != y.size:
        raise ValueError(f"cluster_ids has {k.size} entries but labels has {y.size}")
    if k.size == 0:
        raise ValueError("cluster_ids is empty")
    if (y < 0).any():
        raise ValueError(f"labels must be >= 0, got {int(y[y < 0][0])}")
    _, kk = np.unique(k, return_inverse=True)
    pairs, counts = np.unique(kk * (int(y.max()) + 1) + y, return_counts=True)  # (cluster, class) counts
    majority = np.zeros(int(kk.max()) + 1, dtype=np.int64)
    np.maximum.at(majority, pairs // (int(y.max()) + 1), counts)
    return float(majority.sum() / k.size)


def classification_metrics(pred, labels, num_classes: int) -> dict:
    """Top-1 and per-class accuracy of predicted classes.

    Args:
        pred: int ``(N,)`` predicted classes.
        labels: int ``(N,)`` true classes.
        num_classes: ``C``.

    Returns:
        ``{"top1", "per_class": [accuracy of class c for c in range(C)], "mean_per_class"}``, accuracies in
        ``[0, 1]``; a class without samples gets ``None`` and is left out of ``mean_per_class``.
    """
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


def pseudo_label_stats(logits, labels, *, threshold: float = 0.95, picked_labels=None, class_names=None) -> dict:
    """Quality of a classifier's pseudo-labels on a pool whose true ``labels`` are known.

    A pseudo-label is confident when its max softmax is ``>= threshold`` (FixMatch, Sohn et al. 2020, eq. 4):
    ``confident_wrong`` is the share of the pool FixMatch's unlabelled loss would train on a wrong label.

    Args:
        logits: ``(N, C)`` logits (e.g. :func:`uslkit.evaluate.predict` of the EMA model on the pool).
        labels: ``(N,)`` true labels in ``[0, C)``.
        threshold: confidence threshold in ``[0, 1]``.
        picked_labels: optional labels of the labelled set, counted per class into ``picks``.
        class_names: optional ``C`` names for ``over["class"]``.

    Returns:
        ``acc`` (all), ``confident`` (share at or above the threshold), ``confident_acc`` (``None`` when none is),
        ``confident_wrong``, ``pred_share`` / ``true_share`` per class, ``picks`` per class (zeros without
        ``picked_labels``), and ``over``: the class whose predicted share exceeds its true share the most
        (``class``, ``index``, ``pred_share``, ``true_share``, ``picks``).

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


def selection_report(
    selected,
    labels,
    num_classes: int,
    *,
    emb=None,
    test_emb=None,
    test_labels=None,
) -> dict:
    """The usual numbers about one selection, as a JSON-friendly dict.

    Args:
        selected: int ``(budget,)``, distinct indices into the pool.
        labels: int ``(n,)``, true labels of the WHOLE pool (the selection's labels are
            ``labels[selected]``).
        num_classes: ``C``.
        emb: float ``(n, d)`` pool embeddings; adds ``propagation_1nn_accuracy`` (cosine 1-NN from the
            selection to the unselected pool samples).
        test_emb: float ``(m, d)``, with ``test_labels`` int ``(m,)`` and ``emb``: adds
            ``test_1nn_accuracy`` (cosine 1-NN fitted on the selected samples, as Pourahmadi et al. 2022).

    Returns:
        ``{"budget", "num_classes", "coverage", "histogram" (list of C ints), "imbalance" (see
        :func:`imbalance`), ["propagation_1nn_accuracy"], ["test_1nn_accuracy"]}``.
    """
    y = int_1d(labels, name="labels")
    c = check_positive_int(num_classes, name="num_classes")
    bad = (y < 0) | (y >= c)
    if bad.any():
        raise ValueError(f"labels has values outside [0, {c}): e.g. {int(y[bad][0])} at index "
                         f"{int(np.flatnonzero(bad)[0])}")
    sel = check_indices(selected, y.size, name="selected")
    if sel.size == 0:
        raise ValueError("selected is empty")
    lab = y[sel]
    hist = class_histogram(lab, num_classes)
    report = {
        "budget": int(sel.size),
        "num_classes": int(num_classes),
        "coverage": class_coverage(lab, num_classes),
        "histogram": hist.tolist(),
        "imbalance": imbalance(lab, num_classes),
    }
    if (test_emb is None) != (test_labels is None):
        raise ValueError("test_emb and test_labels must be given together")
    if test_emb is not None and emb is None:
        raise ValueError("test_emb needs emb (the pool embeddings the selected samples are taken from)")
    if emb is not None:
        x = check_embeddings(emb, name="emb")
        if x.shape[0] != y.size:
            raise ValueError(f"emb has {x.shape[0]} rows but labels has {y.size}")
        if sel.size < y.size:
            report["propagation_1nn_accuracy"] = label_propagation_accuracy(x, sel, y)
        if test_emb is not None:
            report["test_1nn_accuracy"] = nn_accuracy(x[sel], lab, test_emb, test_labels)
    return report


def _check_selection_labels(labels, num_classes) -> tuple[np.ndarray, int]:
    c = check_positive_int(num_classes, name="num_classes")
    lab = int_1d(labels, name="labels_of_selection")
    if lab.size == 0:
        raise ValueError("labels_of_selection is empty (a selection needs at least one sample)")
    bad = (lab < 0) | (lab >= c)
    if bad.any():
        raise ValueError(f"labels_of_selection has labels outside [0, {c}): e.g. {int(lab[bad][0])}")
    return lab, c
