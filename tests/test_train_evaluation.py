"""uslkit.train.evaluation: the pseudo-label statistics of a classifier on a labelled pool."""

import numpy as np
import pytest

from uslkit.train.evaluation import pseudo_label_stats


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
