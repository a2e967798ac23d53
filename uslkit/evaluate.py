"""Metrics of a selection: class coverage and balance, cluster purity, kNN and linear-probe accuracy.

Pure functions over arrays. The protocols follow the low-budget active-learning paper (Pourahmadi et al.,
"A Simple Baseline for Low-Budget Active Learning", UCDvision/low-budget-al): class coverage, class
histograms, a cosine 1-NN classifier with faiss on L2-normalised features, and a linear probe; and SeLa
(Asano et al., yukimasano/self-label) for the weighted kNN (k = 10, weights ``exp(sim / 0.1)``).
"""

from __future__ import annotations

import math
import numbers

import faiss
import numpy as np

from ._validate import check_embeddings, check_indices, check_positive_int

__all__ = [
    "class_coverage",
    "class_histogram",
    "cluster_purity",
    "imbalance",
    "label_propagation_accuracy",
    "linear_probe_accuracy",
    "nn_accuracy",
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
    """Fraction of the ``C`` classes with at least one selected sample (low-budget AL paper, Fig. 1).

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
    k = _int_1d(cluster_ids, name="cluster_ids")
    y = _int_1d(labels, name="labels")
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


def nn_accuracy(
    train_emb,
    train_labels,
    test_emb,
    test_labels,
    *,
    k: int = 1,
    weighted: bool = False,
    temperature: float = 0.1,
    metric: str = "cosine",
) -> float:
    """Accuracy of a k-nearest-neighbour classifier fitted on ``(train_emb, train_labels)``.

    - ``k=1, metric="cosine"``: the low-budget AL paper's 1-NN: features L2-normalised, nearest by inner
      product (faiss ``IndexFlatIP``).
    - ``weighted=False, k>1``: majority vote of the k nearest; ties go to the smallest class index (as
      scikit-learn's ``KNeighborsClassifier``).
    - ``weighted=True``: SeLa's weighted kNN (their CIFAR evaluation uses ``k=10, temperature=0.1``): class
      score ``sum_{j in kNN, y_j = c} exp(sim_j / temperature)``, predict the argmax. ``sim`` is the
      cosine similarity (``metric="cosine"``) or minus the Euclidean distance (``metric="euclidean"``).
      Scores are computed as ``exp((sim_j - max_j sim_j) / T)`` per test row, which has the same argmax
      and does not overflow.

    ``k`` larger than the number of training samples is clipped to it.

    Args:
        train_emb: float ``(n, d)``.
        train_labels: int ``(n,)``, ``>= 0``.
        test_emb: float ``(m, d)``.
        test_labels: int ``(m,)``, ``>= 0``.
        k: number of neighbours.
        weighted: use SeLa's exponential weights.
        temperature: ``T`` of the weights (only with ``weighted``).
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        Accuracy on the test set, a float in ``[0, 1]``.

    Raises:
        ValueError: shapes or lengths disagree, non-finite features, negative labels, zero vectors with
            cosine, bad ``k``/``temperature``/``metric``.
    """
    x_tr = check_embeddings(train_emb, name="train_emb")
    x_te = check_embeddings(test_emb, name="test_emb")
    y_tr = _labels_for(train_labels, x_tr.shape[0], name="train_labels", emb_name="train_emb")
    y_te = _labels_for(test_labels, x_te.shape[0], name="test_labels", emb_name="test_emb")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train_emb has {x_tr.shape[1]} features but test_emb has {x_te.shape[1]}")
    k = check_positive_int(k, name="k")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    if weighted and not (isinstance(temperature, numbers.Real) and temperature > 0):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    pred = _knn_predict(x_tr, y_tr, x_te, k=min(k, x_tr.shape[0]), weighted=weighted,
                        temperature=float(temperature), metric=metric)
    return float((pred == y_te).mean())


def label_propagation_accuracy(
    emb,
    selected,
    labels,
    *,
    k: int = 1,
    weighted: bool = False,
    eval_mask=None,
    temperature: float = 0.1,
    metric: str = "cosine",
) -> float:
    """Propagate the selected samples' true labels to the pool by kNN; accuracy on the rest.

    Each evaluated sample gets the (weighted) kNN prediction from the selected samples only
    (:func:`nn_accuracy` with train = ``emb[selected]``); this measures how well the selection represents
    the pool in the embedding space.

    Args:
        emb: float ``(n, d)``, the pool's embeddings.
        selected: int ``(budget,)``, distinct indices into the pool.
        labels: int ``(n,)``, the pool's true labels, ``>= 0``.
        k, weighted, temperature, metric: as in :func:`nn_accuracy`.
        eval_mask: bool ``(n,)``, samples to score; default: every unselected sample.

    Returns:
        Accuracy on the evaluated samples, a float in ``[0, 1]``.

    Raises:
        ValueError: lengths disagree, bad indices, or nothing to evaluate.
    """
    x = check_embeddings(emb, name="emb")
    n = x.shape[0]
    y = _labels_for(labels, n, name="labels", emb_name="emb")
    sel = check_indices(selected, n, name="selected")
    if sel.size == 0:
        raise ValueError("selected is empty")
    if eval_mask is None:
        mask = np.ones(n, dtype=bool)
        mask[sel] = False
    else:
        mask = np.asarray(eval_mask)
        if mask.dtype != bool or mask.shape != (n,):
            raise ValueError(
                f"eval_mask must be a boolean array of shape ({n},), got {mask.dtype} {mask.shape}"
            )
    if not mask.any():
        raise ValueError("nothing to evaluate: eval_mask is empty (or every sample is selected)")
    return nn_accuracy(x[sel], y[sel], x[mask], y[mask], k=k, weighted=weighted, temperature=temperature,
                       metric=metric)


def linear_probe_accuracy(
    train_x,
    train_y,
    test_x,
    test_y,
    *,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> float:
    """Accuracy of a logistic-regression probe on L2-normalised features (scikit-learn, lbfgs).

    A fast, deterministic CPU stand-in for the low-budget AL paper's linear probe. The full protocol
    (Normalize -> Linear in torch, Adam lr 0.01, x0.1 at epochs 50 and 75, 100 epochs, last-epoch
    accuracy) belongs to the training side, not here. With a single class in ``train_y`` the probe
    predicts that class everywhere (logistic regression cannot be fitted).

    Args:
        train_x: float ``(n, d)``.
        train_y: int ``(n,)``, ``>= 0``.
        test_x: float ``(m, d)``.
        test_y: int ``(m,)``, ``>= 0``.
        seed: ``random_state`` of the solver (lbfgs is deterministic; kept for other solvers).
        C: inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter: solver iterations.

    Returns:
        Test accuracy, a float in ``[0, 1]``.
    """
    from sklearn.linear_model import LogisticRegression

    x_tr = _l2_normalise(check_embeddings(train_x, name="train_x", dtype=np.float64), name="train_x")
    x_te = _l2_normalise(check_embeddings(test_x, name="test_x", dtype=np.float64), name="test_x")
    y_tr = _labels_for(train_y, x_tr.shape[0], name="train_y", emb_name="train_x")
    y_te = _labels_for(test_y, x_te.shape[0], name="test_y", emb_name="test_x")
    if x_tr.shape[1] != x_te.shape[1]:
        raise ValueError(f"train_x has {x_tr.shape[1]} features but test_x has {x_te.shape[1]}")
    if not (isinstance(C, numbers.Real) and C > 0):
        raise ValueError(f"C must be a positive number, got {C!r}")
    classes = np.unique(y_tr)
    if classes.size == 1:
        return float((y_te == classes[0]).mean())
    clf = LogisticRegression(C=float(C), max_iter=check_positive_int(max_iter, name="max_iter"),
                             random_state=seed)
    clf.fit(x_tr, y_tr)
    return float((clf.predict(x_te) == y_te).mean())


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
            ``test_1nn_accuracy`` (cosine 1-NN fitted on the selected samples, the paper's protocol).

    Returns:
        ``{"budget", "num_classes", "coverage", "histogram" (list of C ints), "imbalance" (see
        :func:`imbalance`), ["propagation_1nn_accuracy"], ["test_1nn_accuracy"]}``.
    """
    y = _int_1d(labels, name="labels")
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


# --------------------------------------------------------------------------------------------------
# private


def _int_1d(values, *, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.isfinite(arr).all() and np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def _check_selection_labels(labels, num_classes) -> tuple[np.ndarray, int]:
    c = check_positive_int(num_classes, name="num_classes")
    lab = _int_1d(labels, name="labels_of_selection")
    if lab.size == 0:
        raise ValueError("labels_of_selection is empty (a selection needs at least one sample)")
    bad = (lab < 0) | (lab >= c)
    if bad.any():
        raise ValueError(f"labels_of_selection has labels outside [0, {c}): e.g. {int(lab[bad][0])}")
    return lab, c


def _labels_for(labels, n: int, *, name: str, emb_name: str) -> np.ndarray:
    y = _int_1d(labels, name=name)
    if y.size != n:
        raise ValueError(f"{name} has {y.size} entries but {emb_name} has {n} rows")
    if (y < 0).any():
        raise ValueError(f"{name} must be >= 0 (no unlabelled -1), got {int(y[y < 0][0])}")
    return y


def _l2_normalise(x: np.ndarray, *, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{name} has zero vectors (row {int(np.flatnonzero(norms[:, 0] == 0)[0])}); "
                         "cosine similarity is undefined")
    return x / norms


def _knn_predict(x_tr, y_tr, x_te, *, k: int, weighted: bool, temperature: float, metric: str) -> np.ndarray:
    """Predicted class per test row, int64 ``(m,)``."""
    if metric == "cosine":
        x_tr = np.ascontiguousarray(_l2_normalise(x_tr, name="train_emb"), dtype=np.float32)
        x_te = np.ascontiguousarray(_l2_normalise(x_te, name="test_emb"), dtype=np.float32)
        index = faiss.IndexFlatIP(x_tr.shape[1])
    else:
        index = faiss.IndexFlatL2(x_tr.shape[1])
    index.add(x_tr)
    dist, nbr = index.search(x_te, k)  # (m, k) each; IP: similarity, L2: SQUARED distance
    sim = dist.astype(np.float64) if metric == "cosine" else -np.sqrt(np.maximum(dist, 0.0))
    num_classes = int(y_tr.max()) + 1
    votes = y_tr[nbr]  # (m, k)
    if weighted:
        w = np.exp((sim - sim[:, :1]) / temperature)  # faiss sorts best first, so column 0 is the max
    else:
        w = np.ones_like(sim)
    scores = np.zeros((x_te.shape[0], num_classes), dtype=np.float64)
    np.add.at(scores, (np.repeat(np.arange(x_te.shape[0]), k), votes.ravel()), w.ravel())
    return scores.argmax(axis=1)
