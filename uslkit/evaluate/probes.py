"""Classifiers fitted on embeddings, as accuracy probes: kNN, label propagation, linear probes.

- :func:`nn_accuracy`: THE kNN classifier (1-NN or weighted kNN); :func:`knn_metrics` and
  :func:`label_propagation_accuracy` are thin calls of it.
- :func:`al_linear_probe`: the linear probe protocol of Pourahmadi, Nooralinejad & Pirsiavash 2022 (torch).
- :func:`linear_probe_accuracy`: a quick scikit-learn logistic regression, NOT that protocol.
"""

from __future__ import annotations

import numbers

import faiss
import numpy as np

from .._validate import check_embeddings, check_indices, check_positive_int, check_seed
from ..embed import l2_normalize
from ._checks import labels_for

__all__ = [
    "al_linear_probe",
    "knn_metrics",
    "label_propagation_accuracy",
    "linear_probe_accuracy",
    "nn_accuracy",
]


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

    - ``k=1, metric="cosine"``: the 1-NN of Pourahmadi et al. 2022: features L2-normalised, nearest by inner
      product (faiss ``IndexFlatIP``).
    - ``weighted=False, k>1``: majority vote of the k nearest; ties go to the smallest class index (as
      scikit-learn's ``KNeighborsClassifier``).
    - ``weighted=True``: the weighted kNN of the SeLa code (Asano, Rupprecht & Vedaldi 2020; ``k=10,
      temperature=0.1`` on CIFAR): class score ``sum_{j in kNN, y_j = c} exp(sim_j / T)``, predict the argmax.
      ``sim`` is the cosine similarity (``metric="cosine"``) or minus the Euclidean distance
      (``metric="euclidean"``). Computed as ``exp((sim_j - max_j sim_j) / T)`` per test row: same argmax, no
      overflow.

    ``k`` larger than the number of training samples is clipped to it.

    Args:
        train_emb, test_emb: float ``(n, d)`` and ``(m, d)``.
        train_labels, test_labels: int ``(n,)`` and ``(m,)``, ``>= 0``.
        k: number of neighbours.
        weighted, temperature: SeLa's exponential weights and their ``T``.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        Accuracy on the test set, a float in ``[0, 1]``.

    Raises:
        ValueError: shapes or lengths disagree, non-finite features, negative labels, zero vectors with
            cosine, bad ``k``/``temperature``/``metric``.
    """
    x_tr = check_embeddings(train_emb, name="train_emb")
    x_te = check_embeddings(test_emb, name="test_emb")
    y_tr = labels_for(train_labels, x_tr.shape[0], name="train_labels", emb_name="train_emb")
    y_te = labels_for(test_labels, x_te.shape[0], name="test_labels", emb_name="test_emb")
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


def knn_metrics(train_feats, train_labels, test_feats, test_labels) -> dict:
    """The two cosine kNN accuracies SimCLR training logs, both by :func:`nn_accuracy`.

    Returns:
        ``{"knn1": nn_accuracy(k=1), "knn10_weighted": nn_accuracy(k=10, weighted=True, temperature=0.1)}``.
    """
    return {
        "knn1": nn_accuracy(train_feats, train_labels, test_feats, test_labels, k=1),
        "knn10_weighted": nn_accuracy(train_feats, train_labels, test_feats, test_labels, k=10, weighted=True,
                                      temperature=0.1),
    }


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

    :func:`nn_accuracy` with train = ``emb[selected]`` and test = the evaluated pool samples: how well the
    selection represents the pool in the embedding space.

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
    y = labels_for(labels, n, name="labels", emb_name="emb")
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

    A quick, deterministic CPU probe; NOT the protocol of Pourahmadi et al. 2022 (that is
    :func:`al_linear_probe`). With a single class in ``train_y`` it predicts that class everywhere (logistic
    regression cannot be fitted).

    Args:
        train_x, test_x: float ``(n, d)`` and ``(m, d)``.
        train_y, test_y: int ``(n,)`` and ``(m,)``, ``>= 0``.
        seed: ``random_state`` of the solver (lbfgs is deterministic; kept for other solvers).
        C: inverse L2 regularisation strength (scikit-learn's ``C``).
        max_iter: solver iterations.

    Returns:
        Test accuracy, a float in ``[0, 1]``.
    """
    from sklearn.linear_model import LogisticRegression

    x_tr = _l2_normalise(check_embeddings(train_x, name="train_x", dtype=np.float64), name="train_x")
    x_te = _l2_normalise(check_embeddings(test_x, name="test_x", dtype=np.float64), name="test_x")
    y_tr = labels_for(train_y, x_tr.shape[0], name="train_y", emb_name="train_x")
    y_te = labels_for(test_y, x_te.shape[0], name="test_y", emb_name="test_x")
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


def al_linear_probe(train_feats, train_labels, test_feats, test_labels, *, num_classes=None, epochs=100, lr=0.01,
                    batch_size=128, milestones=(50, 75), normalize="l2", stats_feats=None, seed=0,
                    device=None) -> float:
    """The linear probe of Pourahmadi, Nooralinejad & Pirsiavash 2022 (Sec. 4, i) on frozen features.

    Features are L2-normalised (``normalize="l2"``, the default: the reference ``eval_lincls.py``'s
    ``Normalize``, which the recorded results used). ``normalize="standardize"`` then standardises each
    dimension as the paper's text states: ``(x - mu) / sqrt(var + 1e-5)``, ``mu`` and ``var`` (unbiased) over
    ``stats_feats`` (default: the training features), applied to train and test (``FullBatchNorm`` of the
    reference code and of CompRess, which estimate them on the whole training set: pass the unlabelled pool's
    features). Estimated from 10-50 picks in 64 dimensions they are noisy and the probe loses 10-25 points on
    Fashion-MNIST (``benchmarks/RESULTS.md``).
    Then ``Linear``, cross-entropy, Adam(``lr`` = 0.01), learning rate x0.1 at the ``milestones`` epochs
    (50, 75), ``epochs`` = 100 epochs of shuffled mini-batches of ``batch_size`` (the paper: 128; 4 on CIFAR
    at its tiny budgets). The accuracy reported is the LAST epoch's, as the paper's.

    Deviation: trained on fixed features; the reference code passes randomly cropped and flipped images
    through the frozen backbone at every epoch.

    Args:
        train_feats, test_feats: float ``(n, d)`` and ``(m, d)``.
        stats_feats: float ``(p, d)``, ``p >= 2``: where ``"standardize"`` estimates its statistics (L2-normalised
            first, like the features); ``None``: ``train_feats`` (then ``n >= 2``).
        train_labels, test_labels: int ``(n,)`` and ``(m,)``.
        num_classes: outputs of the layer; default: the largest label + 1.
        seed: the layer's initialisation and the batch order. device: where to train (CPU is enough).

    Returns:
        Test accuracy after the last epoch, a float in ``[0, 1]``.
    """
    import torch

    from ..device import resolve_device

    seed = check_seed(seed)
    epochs = check_positive_int(epochs, name="epochs")
    batch_size = check_positive_int(batch_size, name="batch_size")
    if normalize not in ("standardize", "l2"):
        raise ValueError(f"normalize must be 'standardize' or 'l2', got {normalize!r}")
    if normalize == "l2" and stats_feats is not None:
        raise ValueError("stats_feats is only used with normalize='standardize'")
    xtr = torch.nn.functional.normalize(torch.as_tensor(np.asarray(train_feats), dtype=torch.float32), dim=1)
    xte = torch.nn.functional.normalize(torch.as_tensor(np.asarray(test_feats), dtype=torch.float32), dim=1)
    ytr = torch.as_tensor(np.asarray(train_labels), dtype=torch.int64)
    yte = np.asarray(test_labels)
    if xtr.shape[0] != ytr.shape[0] or xtr.shape[0] == 0:
        raise ValueError(f"{xtr.shape[0]} training features for {ytr.shape[0]} labels (need at least one)")
    if normalize == "standardize":
        xst = xtr if stats_feats is None else torch.nn.functional.normalize(
            torch.as_tensor(np.asarray(stats_feats), dtype=torch.float32), dim=1)
        if xst.ndim != 2 or xst.shape[0] < 2 or xst.shape[1] != xtr.shape[1]:
            raise ValueError(f"normalize='standardize' needs at least 2 samples of dimension {xtr.shape[1]} for its "
                             f"per-dimension statistics, got {tuple(xst.shape)}")
        var, mean = torch.var_mean(xst, dim=0)
        inv_std = 1.0 / torch.sqrt(var + 1e-5)
        xtr, xte = (xtr - mean) * inv_std, (xte - mean) * inv_std
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


def _l2_normalise(x: np.ndarray, *, name: str) -> np.ndarray:
    """:func:`uslkit.embed.l2_normalize` in ``x``'s dtype, refusing zero rows (cosine is undefined there)."""
    zero = np.linalg.norm(x, axis=1) == 0
    if zero.any():
        raise ValueError(f"{name} has zero vectors (row {int(np.flatnonzero(zero)[0])}); "
                         "cosine similarity is undefined")
    return l2_normalize(x, eps=0.0, dtype=x.dtype)  # no zero row: no floor needed, exactly x / ||x||


def _knn_predict(x_tr, y_tr, x_te, *, k: int, weighted: bool, temperature: float, metric: str) -> np.ndarray:
    """Predicted class per test row, int64 ``(m,)``."""
    if metric == "cosine":
        x_tr = _l2_normalise(x_tr, name="train_emb")  # float32, C-contiguous (from check_embeddings)
        x_te = _l2_normalise(x_te, name="test_emb")
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



def ball_coverage(emb, picks, delta) -> float:
    """Share of the points within distance ``delta`` of a pick: ProbCover's objective, the probability coverage
    of the union of the picks' balls ``B_delta(x) = {x' : ||x - x'|| < delta}`` (Yehuda et al. 2022, sec. 4).

    Args:
        emb: float ``(n, d)`` (the embedding the balls live in).
        picks: distinct int indices into ``emb`` (non-empty).
        delta: ball radius (> 0), e.g. :func:`uslkit.select.purity_delta`.

    Returns:
        A float in ``[0, 1]`` (float64 distances from the float32 coordinates); each pick covers itself.
    """
    x, idx, d2max = _balls_args(emb, picks, delta)
    covered = np.zeros(x.shape[0], dtype=bool)
    for i in idx:
        covered |= _sq_dists_to(x, i) < d2max
    return float(covered.mean())


def ball_sizes(emb, picks, delta) -> np.ndarray:
    """int64 ``(len(picks),)``: how many points lie within distance ``delta`` of each pick (itself included), the
    size of its ProbCover ball (see :func:`ball_coverage`), in the order of ``picks``."""
    x, idx, d2max = _balls_args(emb, picks, delta)
    return np.array([np.count_nonzero(_sq_dists_to(x, i) < d2max) for i in idx], dtype=np.int64)


def _balls_args(emb, picks, delta):
    x = check_embeddings(emb)
    idx = check_indices(picks, x.shape[0], name="picks")
    if idx.size == 0:
        raise ValueError("picks is empty")
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not delta > 0:
        raise ValueError(f"delta must be a positive number, got {delta!r}")
    return x.astype(np.float64), idx, float(delta) ** 2


def _sq_dists_to(x64: np.ndarray, i: int) -> np.ndarray:
    """float64 squared distances of every row of ``x64`` to row ``i``."""
    diff = x64 - x64[i]
    return np.einsum("nd,nd->n", diff, diff)
