"""Evaluation, one home: metrics of a selection, probes on embeddings, a network over a dataset.

- :mod:`~uslkit.evaluate.metrics` (label arrays): :func:`class_histogram`, :func:`class_coverage`,
  :func:`imbalance`, :func:`cluster_purity`, :func:`classification_metrics`, :func:`pseudo_label_stats`,
  :func:`selection_report`.
- :mod:`~uslkit.evaluate.probes` (embeddings): :func:`nn_accuracy`, the kNN classifier (1-NN of Pourahmadi,
  Nooralinejad & Pirsiavash 2022; weighted kNN of SeLa, Asano et al. 2020), with :func:`knn_metrics` and
  :func:`label_propagation_accuracy` as thin calls of it; :func:`ball_coverage` and :func:`ball_sizes` (ProbCover's
  objective and balls);
  :func:`al_linear_probe`, the linear probe protocol
  of Pourahmadi et al. 2022; :func:`linear_probe_accuracy`, a quick logistic regression (not that protocol).
- :mod:`~uslkit.evaluate.networks` (torch): :func:`extract_features`, :func:`predict`,
  :func:`evaluate_classifier`. Loaded on first use, so ``import uslkit.evaluate`` does not import torch.
"""

from .metrics import (
    class_coverage,
    class_histogram,
    classification_metrics,
    cluster_purity,
    imbalance,
    pseudo_label_stats,
    selection_report,
)
from .probes import (
    al_linear_probe,
    ball_coverage,
    ball_sizes,
    knn_metrics,
    label_propagation_accuracy,
    linear_probe_accuracy,
    nn_accuracy,
)

_NETWORKS = ("evaluate_classifier", "extract_features", "predict")

__all__ = [
    "al_linear_probe",
    "ball_coverage",
    "ball_sizes",
    "class_coverage",
    "class_histogram",
    "classification_metrics",
    "cluster_purity",
    "evaluate_classifier",
    "extract_features",
    "imbalance",
    "knn_metrics",
    "label_propagation_accuracy",
    "linear_probe_accuracy",
    "nn_accuracy",
    "predict",
    "pseudo_label_stats",
    "selection_report",
]


def __getattr__(name: str):
    if name in _NETWORKS:  # torch is imported here, on first use
        from . import networks

        return getattr(networks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
