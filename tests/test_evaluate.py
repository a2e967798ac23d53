"""Tests for uslkit.evaluate: hand-computed toy cases and comparisons with scikit-learn."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from uslkit import evaluate as E
from uslkit.evaluate import pseudo_label_stats


def test_histogram_coverage_imbalance_by_hand():
    lab = [0, 0, 2, 0]  # C = 3: counts 3, 0, 1
    np.testing.assert_array_equal(E.class_histogram(lab, 3), [3, 0, 1])
    assert E.class_histogram(lab, 3).dtype == np.int64
    assert E.class_coverage(lab, 3) == pytest.approx(2 / 3)
    imb = E.imbalance(lab, 3)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert imb["entropy"] == pytest.approx(h)
    assert imb["normalized_entropy"] == pytest.approx(h / math.log(3))
    assert imb["max_min_ratio"] == math.inf and imb["num_missing"] == 1


def test_imbalance_balanced_and_single_class():
    imb = E.imbalance([0, 1, 1, 0], 2)
    assert imb["entropy"] == pytest.approx(math.log(2))
    assert imb["normalized_entropy"] == pytest.approx(1.0)
    assert imb["max_min_ratio"] == 1.0 and imb["num_missing"] == 0
    assert E.imbalance([1, 0, 1], 2)["max_min_ratio"] == 2.0
    assert E.imbalance([0, 0], 1) == {"entropy": 0.0, "normalized_entropy": 1.0, "max_min_ratio": 1.0,
                                      "num_missing": 0}


@pytest.mark.parametrize(
    "labels, c, match",
    [([], 3, "empty"), ([0, 3], 3, "outside"), ([-1], 3, "outside"), ([0.5], 3, "integers"),
     ([[0]], 3, "1-D"), ([0], 0, "num_classes")],
)
def test_selection_label_validation(labels, c, match):
    with pytest.raises(ValueError, match=match):
        E.class_histogram(labels, c)


def test_cluster_purity_by_hand():
    # cluster 0: classes 0,0,1 -> 2; cluster 5: 1,1 -> 2; cluster -1: 0 -> 1; total 5/6
    assert E.cluster_purity([0, 0, 0, 5, 5, -1], [0, 0, 1, 1, 1, 0]) == pytest.approx(5 / 6)
    assert E.cluster_purity([1, 1, 2, 2], [3, 3, 0, 0]) == 1.0
    with pytest.raises(ValueError, match="entries"):
        E.cluster_purity([0, 1], [0])
    with pytest.raises(ValueError, match="empty"):
        E.cluster_purity([], [])


def test_nn_accuracy_four_points():
    # two classes on the unit circle; test points near each train point, one deliberately mislabelled
    train = np.array([[1.0, 0.0], [0.0, 1.0]])
    test = np.array([[10.0, 1.0], [1.0, 9.0], [0.9, 0.1], [0.2, 0.8]])
    assert E.nn_accuracy(train, [0, 1], test, [0, 1, 0, 0]) == 0.75
    # scale matters for euclidean: [0.2, 1] points to class 1 by angle but is nearer [1, 0] than [0, 5]
    far = np.array([[1.0, 0.0], [0.0, 5.0]])
    assert E.nn_accuracy(far, [0, 1], [[0.2, 1.0]], [1]) == 1.0
    assert E.nn_accuracy(far, [0, 1], [[0.2, 1.0]], [1], metric="euclidean") == 0.0


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nn_accuracy_matches_sklearn(k, metric):
    rng = np.random.default_rng(0)
    x_tr, x_te = rng.normal(size=(60, 5)), rng.normal(size=(40, 5))
    y_tr, y_te = rng.integers(0, 3, 60), rng.integers(0, 3, 40)
    ours = E.nn_accuracy(x_tr, y_tr, x_te, y_te, k=k, metric=metric)
    ref = KNeighborsClassifier(n_neighbors=k, metric=metric, algorithm="brute").fit(x_tr, y_tr)
    assert ours == pytest.approx((ref.predict(x_te) == y_te).mean())


def test_nn_accuracy_k_clipped():
    x_tr = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    # k=10 > 3 training points: majority of all three = class 0 for every test point
    assert E.nn_accuracy(x_tr, [0, 0, 1], [[0.0, 1.0]], [0], k=10) == 1.0


def test_weighted_knn_hand_example():
    # cosine sims to the test point [1, 0]: 1.0 (class 1), 0.8 and 0.6 (class 0)
    x_tr = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    y_tr = [1, 0, 0]
    x_te = [[1.0, 0.0]]
    # T = 0.1: class 1 gets e^10, class 0 gets e^8 + e^6 -> class 1
    assert E.nn_accuracy(x_tr, y_tr, x_te, [1], k=3, weighted=True, temperature=0.1) == 1.0
    # T = 1: class 1 gets e^1 = 2.72, class 0 gets e^0.8 + e^0.6 = 4.05 -> class 0
    assert E.nn_accuracy(x_tr, y_tr, x_te, [0], k=3, weighted=True, temperature=1.0) == 1.0
    # unweighted majority of 3 -> class 0; 1-NN -> class 1
    assert E.nn_accuracy(x_tr, y_tr, x_te, [0], k=3) == 1.0
    assert E.nn_accuracy(x_tr, y_tr, x_te, [1], k=1) == 1.0


def test_weighted_knn_matches_direct_formula():
    rng = np.random.default_rng(1)
    x_tr, x_te = rng.normal(size=(50, 4)), rng.normal(size=(30, 4))
    y_tr, y_te = rng.integers(0, 4, 50), rng.integers(0, 4, 30)
    a = x_tr / np.linalg.norm(x_tr, axis=1, keepdims=True)
    b = x_te / np.linalg.norm(x_te, axis=1, keepdims=True)
    sim = b @ a.T
    nbr = np.argsort(-sim, axis=1)[:, :10]
    scores = np.zeros((30, 4))
    for i in range(30):
        for j in nbr[i]:
            scores[i, y_tr[j]] += np.exp(sim[i, j] / 0.1)
    ref = (scores.argmax(1) == y_te).mean()
    assert E.nn_accuracy(x_tr, y_tr, x_te, y_te, k=10, weighted=True) == pytest.approx(ref)


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        (([[1.0, 0]], [0, 1], [[1.0, 0]], [0]), {}, "train_labels has 2"),
        (([[1.0, 0]], [0], [[1.0, 0, 0]], [0]), {}, "features"),
        (([[1.0, 0]], [-1], [[1.0, 0]], [0]), {}, ">= 0"),
        (([[0.0, 0]], [0], [[1.0, 0]], [0]), {}, "zero vectors"),
        (([[1.0, 0]], [0], [[np.nan, 0]], [0]), {}, "NaN"),
        (([[1.0, 0]], [0], [[1.0, 0]], [0]), {"k": 0}, "k must"),
        (([[1.0, 0]], [0], [[1.0, 0]], [0]), {"metric": "l1"}, "metric"),
        (([[1.0, 0]], [0], [[1.0, 0]], [0]), {"weighted": True, "temperature": 0}, "temperature"),
    ],
)
def test_nn_accuracy_validation(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        E.nn_accuracy(*args, **kwargs)


def test_label_propagation_by_hand():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.3]])
    labels = np.array([0, 0, 1, 1, 1])
    # from samples 0 (class 0) and 2 (class 1): 1 -> 0 ok, 3 -> 1 ok, 4 -> 0 wrong
    assert E.label_propagation_accuracy(emb, [0, 2], labels) == pytest.approx(2 / 3)
    mask = np.array([False, False, False, True, True])
    assert E.label_propagation_accuracy(emb, [0, 2], labels, eval_mask=mask) == 0.5
    with pytest.raises(ValueError, match="nothing to evaluate"):
        E.label_propagation_accuracy(emb, [0, 1, 2, 3, 4], labels)
    with pytest.raises(ValueError, match="duplicate"):
        E.label_propagation_accuracy(emb, [0, 0], labels)
    with pytest.raises(ValueError, match="eval_mask"):
        E.label_propagation_accuracy(emb, [0], labels, eval_mask=[1, 0, 1, 0, 1])


def test_linear_probe():
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    y = rng.integers(0, 3, 200)
    x = centres[y] + rng.normal(size=(200, 3))
    acc = E.linear_probe_accuracy(x[:30], y[:30], x[30:], y[30:], seed=0)
    assert acc > 0.9
    assert acc == E.linear_probe_accuracy(x[:30], y[:30], x[30:], y[30:], seed=0)
    # a single training class: predicted everywhere
    assert E.linear_probe_accuracy(x[:2], [1, 1], x[:4], [1, 0, 1, 2]) == 0.5


def test_selection_report():
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.8, 0.3]])
    labels = [0, 0, 1, 1, 1]
    rep = E.selection_report([0, 1], labels, 2, emb=emb, test_emb=[[0.0, 1.0], [1.0, 0.1]],
                             test_labels=[1, 0])
    assert rep["budget"] == 2 and rep["coverage"] == 0.5 and rep["histogram"] == [2, 0]
    assert rep["imbalance"]["num_missing"] == 1
    assert rep["propagation_1nn_accuracy"] == 0.0  # only class 0 was selected; 3 of 3 rest are class 1
    assert rep["test_1nn_accuracy"] == 0.5
    assert set(E.selection_report([0, 2], labels, 2)) == {"budget", "num_classes", "coverage", "histogram",
                                                          "imbalance"}
    with pytest.raises(ValueError, match="together"):
        E.selection_report([0], labels, 2, emb=emb, test_emb=emb)
    with pytest.raises(ValueError, match="outside"):
        E.selection_report([0], [0, 2], 2)


# pseudo-label statistics of a classifier on a labelled pool

def test_pseudo_label_stats_by_hand():
    # 4 pool images, 3 classes; the softmax max reaches 0.9 only where a logit leads by 5 (p = 0.987)
    logits = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 5.0, 0], [0, 0.1, 0]])
    labels = np.array([0, 1, 2, 2])
    rec = pseudo_label_stats(logits, labels, threshold=0.9, picked_labels=[0, 1, 1, 2], class_names=["a", "b", "c"])
    assert rec["acc"] == 0.5 and rec["confident"] == 0.75 and rec["confident_acc"] == pytest.approx(2 / 3)
    assert rec["confident_wrong"] == 0.25 and rec["picks"] == [1, 2, 1] and rec["n"] == 4
    assert rec["pred_share"] == [0.25, 0.75, 0.0] and rec["true_share"] == [0.25, 0.25, 0.5]
    assert rec["over"] == {"class": "b", "index": 1, "pred_share": 0.75, "true_share": 0.25, "picks": 2}
    # nothing confident: no accuracy of the confident ones, no picks without picked_labels, index names
    none = pseudo_label_stats(logits, labels, threshold=1.0)
    assert none["confident"] == 0.0 and none["confident_acc"] is None and none["confident_wrong"] == 0.0
    assert none["picks"] == [0, 0, 0] and none["over"]["class"] == "1"


@pytest.mark.parametrize("kw,match", [
    (dict(labels=np.array([0, 1, 3, 2])), r"labels must be integers in \[0, 3\)"),
    (dict(labels=np.array([0, 1, 2])), r"logits must be \(N, C\)"),
    (dict(threshold=1.5), r"threshold must be in \[0, 1\]"),
    (dict(picked_labels=[0, 5]), r"picked_labels must be in \[0, 3\)"),
    (dict(class_names=["a", "b"]), "2 class names for 3 classes"),
])
def test_pseudo_label_stats_errors(kw, match):
    args = dict(logits=np.zeros((4, 3)), labels=np.array([0, 1, 2, 2]))
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        pseudo_label_stats(args.pop("logits"), args.pop("labels"), **args)


def test_import_does_not_load_torch():
    code = ("import sys, uslkit.evaluate as E; assert 'torch' not in sys.modules; "
            "E.nn_accuracy([[1.0]], [0], [[1.0]], [0]); assert 'torch' not in sys.modules; "
            "E.predict; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_knn_metrics_is_nn_accuracy():
    rng = np.random.default_rng(2)
    x_tr, x_te = rng.normal(size=(40, 3)), rng.normal(size=(20, 3))
    y_tr, y_te = rng.integers(0, 3, 40), rng.integers(0, 3, 20)
    assert E.knn_metrics(x_tr, y_tr, x_te, y_te) == {
        "knn1": E.nn_accuracy(x_tr, y_tr, x_te, y_te),
        "knn10_weighted": E.nn_accuracy(x_tr, y_tr, x_te, y_te, k=10, weighted=True, temperature=0.1)}


def test_classification_metrics_by_hand():
    m = E.classification_metrics([0, 1, 1, 2], [0, 1, 2, 2], 4)
    assert m["top1"] == 0.75 and m["per_class"] == [1.0, 1.0, 0.5, None] and m["mean_per_class"] == 2.5 / 3


@pytest.mark.parametrize("normalize", ["standardize", "l2"])
def test_al_linear_probe(normalize):
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    y = rng.integers(0, 3, 200)
    x = centres[y] + rng.normal(size=(200, 3))
    kw = dict(batch_size=8, normalize=normalize, seed=1)
    acc = E.al_linear_probe(x[:30], y[:30], x[30:], y[30:], **kw)
    assert acc > 0.9
    assert acc == E.al_linear_probe(x[:30], y[:30], x[30:], y[30:], **kw)


def test_al_linear_probe_standardizes_with_given_statistics():
    # after the L2 step the class sits in dimension 1 at about +-0.01 and dimension 0 is about 1 for all:
    # standardised, dimension 1 becomes about +-1 and 20 epochs separate it; the L2 step alone does not
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    x = np.stack([np.full(40, 10.0), 0.1 * (2 * y - 1) + 0.01 * rng.normal(size=40)], axis=1)
    kw = dict(epochs=20, milestones=(100,), batch_size=8)
    assert E.al_linear_probe(x[:20], y[:20], x[20:], y[20:], normalize="standardize", **kw) == 1.0
    assert E.al_linear_probe(x[:20], y[:20], x[20:], y[20:], normalize="l2", **kw) == 0.5
    assert E.al_linear_probe(x[:20], y[:20], x[20:], y[20:], **kw) == 0.5  # the default: the reference code's L2
    # statistics from another set (the whole pool, as FullBatchNorm): the same here, the pool being alike
    assert E.al_linear_probe(x[:20], y[:20], x[20:], y[20:], normalize="standardize", stats_feats=x, **kw) == 1.0
    with pytest.raises(ValueError, match="at least 2"):
        E.al_linear_probe(x[:1], y[:1], x, y, normalize="standardize")
    with pytest.raises(ValueError, match="at least 2 samples of dimension 2"):
        E.al_linear_probe(x, y, x, y, normalize="standardize", stats_feats=x[:, :1])
    with pytest.raises(ValueError, match="only used with normalize='standardize'"):
        E.al_linear_probe(x, y, x, y, stats_feats=x)
    with pytest.raises(ValueError, match="normalize"):
        E.al_linear_probe(x, y, x, y, normalize="zscore")


def test_ball_coverage_counts_points_strictly_inside_a_pick_ball():
    x = np.array([[0, 0], [0.5, 0], [2, 0], [3, 0], [3.2, 0]], dtype=np.float32)
    assert E.ball_coverage(x, [0], 0.6) == pytest.approx(2 / 5)
    assert E.ball_coverage(x, [0], 0.5) == pytest.approx(1 / 5)  # membership is strict: dist < delta
    assert E.ball_coverage(x, [0, 3], 0.6) == pytest.approx(4 / 5)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((300, 4)).astype(np.float32)
    picks = rng.choice(300, 7, replace=False)
    d = np.sqrt(((y[:, None, :].astype(np.float64) - y[picks][None]) ** 2).sum(-1)).min(1)
    assert E.ball_coverage(y, picks, 1.3) == pytest.approx(np.mean(d < 1.3))
    for bad in (0, -1.0, True, "1"):
        with pytest.raises(ValueError, match="delta must be a positive number"):
            E.ball_coverage(x, [0], bad)
    with pytest.raises(ValueError, match="picks is empty"):
        E.ball_coverage(x, [], 1.0)
    assert E.ball_sizes(x, [3, 0], 0.6).tolist() == [2, 2]  # {3.0, 3.2} and {0, 0.5}
    assert E.ball_sizes(y, picks, 1.3).tolist() == [int(np.sum(np.linalg.norm(y - y[p], axis=1) < 1.3)) for p in picks]
