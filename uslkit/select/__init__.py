"""Selection methods and one dispatcher: which ``budget`` samples to label, from embeddings alone.

Every method is a pure function ``select_<name>(emb, budget, *, ...)`` with keyword-only options, one
module per family; :func:`select` dispatches by name through :data:`METHODS`. The contract
(``_prepare`` validates, the method computes, ``_finish`` checks and packages, in ``_common``):

- returns int64 ``(budget,)``: exactly ``budget`` DISTINCT indices into ``emb``, none in ``labeled``, in
  the order documented per method, whatever the clustering does (empty clusters, exact duplicates,
  ``budget == n``);
- ``return_scores=True`` returns ``(indices, scores float64 (n,))``: the per-sample utility, HIGHER = MORE
  WANTED (as USL's Fig. 6 shows); ``NaN`` where the method has none (random, stratified, labelled samples);
- all randomness comes from ``seed``: the same seed gives bit-for-bit the same output on CPU;
- invalid input (NaN/inf, not 2-D, budget < 1 or > pool, k >= n, bad options) raises ``ValueError``.

================ =====================================================================================
``random``       uniform without replacement from the unlabelled pool (:mod:`.baselines`)
``stratified``   ORACLE baseline: equal number per TRUE class, needs ``labels`` (:mod:`.baselines`)
``kmeans``       K-means, K = budget, member closest to each centroid (Pourahmadi et al. 2022)
``kmeans_multi`` multi-batch K-means: the nearest UNLABELLED member per cluster (same paper)
``usl``          USL (Wang, Lian & Yu 2022, Alg. 1): kNN density, K-means, inter-cluster regulariser
``typiclust``    TypiClust (Hacohen et al. 2022): most typical point of the largest uncovered clusters
``probcover``    ProbCover (Yehuda et al. 2022): greedy max coverage of delta-balls
``coreset``      greedy k-center (Sener & Savarese 2018)
``sela``         densest point of each SeLa Sinkhorn cluster (Asano et al. 2020 + USL density), ablation
``ntkcpl``       NTKCPL's first round (paper 003, Alg. 1): NTK look-ahead against K-means pseudo-labels
================ =====================================================================================

USL-T (:mod:`.usl_t`, Wang, Lian & Yu 2022, sec. 2.3) trains clustering heads on the images, so it is not in
:data:`METHODS`: :func:`select_usl_t` trains and picks, :func:`usl_t_pick` picks from a run's probabilities.
"""

from __future__ import annotations

import inspect

import numpy as np

# the contract, importable from here by methods and active-learning strategies outside this package
from ._common import _complete, _finish, _mask, _prepare  # noqa: F401
from .baselines import select_random, select_stratified
from .coreset import select_coreset
from .kmeans import select_kmeans, select_kmeans_multi
from .ntkcpl import select_ntkcpl
from .probcover import purity_delta, select_probcover
from .sela import select_sela
from .typiclust import select_typiclust
from .usl import USL_PRESETS, select_usl, usl_config, usl_regularized_selection
from .usl_t import select_usl_t, usl_t_pick

__all__ = [
    "select",
    "METHODS",
    "USL_PRESETS",
    "select_random",
    "select_stratified",
    "select_kmeans",
    "select_kmeans_multi",
    "select_usl",
    "usl_config",
    "usl_regularized_selection",
    "select_typiclust",
    "select_probcover",
    "purity_delta",
    "select_coreset",
    "select_sela",
    "select_ntkcpl",
    "select_usl_t",
    "usl_t_pick",
]

#: Method name -> function. Every function takes ``(emb, budget, *, seed, return_scores, ...)``.
METHODS = {
    "random": select_random,
    "stratified": select_stratified,
    "kmeans": select_kmeans,
    "kmeans_multi": select_kmeans_multi,
    "usl": select_usl,
    "typiclust": select_typiclust,
    "probcover": select_probcover,
    "coreset": select_coreset,
    "sela": select_sela,
    "ntkcpl": select_ntkcpl,
}

#: Arguments :func:`select` takes for every method and passes on only to the methods whose signature has them.
_ROUTED = ("labeled", "labels", "num_classes")


def select(method: str, emb, budget: int, *, seed=0, labeled=None, labels=None, num_classes=None,
           return_scores=False, **params):
    """Run the selection method ``method`` (a key of :data:`METHODS`).

    ``labels`` and ``num_classes`` go only to the methods that take them and are ignored by the others, so
    one call serves every method: ``select(m, emb, b, labels=y, num_classes=C)``.

    Args:
        method: one of ``sorted(METHODS)``.
        emb: embeddings ``(n, d)``.
        budget: number of samples to select, ``1 <= budget <= n - len(labeled)``.
        seed: the only source of randomness.
        labeled: indices already labelled (excluded from the selection); only the methods that add to an
            existing labelled set accept a non-empty one (``random``, ``stratified``, ``kmeans_multi``,
            ``typiclust``, ``probcover``, ``coreset``); the others raise ``ValueError``.
        labels: TRUE class labels ``(n,)``, used only by the oracle ``stratified`` baseline (no
            unsupervised method ever sees them).
        num_classes: number of classes, used only by ``probcover`` (to choose its radius when ``delta``
            is not given).
        return_scores: also return the per-sample utility (see the module docstring).
        **params: method options (see each ``select_<method>``); an unknown name raises ``ValueError``
            listing the valid ones.

    Returns:
        int64 ``(budget,)`` indices, or ``(indices, scores float64 (n,))`` with ``return_scores``.
    """
    if method == "usl_t":  # trains on images: not a function of embeddings alone
        raise ValueError("method 'usl_t' trains a network on the images and needs an encoder checkpoint: use "
                         "uslkit.select.select_usl_t(dataset, encoder, budget, feats=emb) or `uslkit select "
                         "--method usl_t --init MODEL.pt`")
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; valid methods: {sorted(METHODS)}")
    fn = METHODS[method]
    options = _keyword_options(fn)
    own = {"seed", "return_scores", *_ROUTED}
    unknown = sorted(set(params) - (options - own))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for method {method!r}; valid: {sorted(options - own)}"
        )
    kwargs = dict(params, seed=seed, return_scores=return_scores)
    if "labeled" in options:
        kwargs["labeled"] = labeled
    elif labeled is not None and np.asarray(labeled).size > 0:
        takes = sorted(m for m, f in METHODS.items() if "labeled" in _keyword_options(f))
        raise ValueError(
            f"method {method!r} selects from scratch and does not take a labelled set "
            f"(got {np.asarray(labeled).size} labelled indices); methods that do: {takes}"
        )
    for name, value in (("labels", labels), ("num_classes", num_classes)):
        if name in options:
            kwargs[name] = value
    return fn(emb, budget, **kwargs)


def _keyword_options(fn) -> set[str]:
    """Names of ``fn``'s keyword-only parameters."""
    return {p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY}
