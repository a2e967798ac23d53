"""Query strategies of the multi-round loop: each returns ``batch`` new, distinct, unlabelled pool indices.

A strategy is ``fn(ctx, batch, **params) -> int64 (batch,)`` where ``ctx`` is a :class:`QueryContext`: the
pool embeddings, the labelled indices with the oracle's answers for them (never the other labels), the head
trained on them this round and the round's seed. Scores are ranked with ties to the lowest index, so a query
is a function of its inputs alone.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .head import Head
from .ntkcpl import query_lookahead, query_ntkcpl

__all__ = ["QueryContext", "STRATEGIES", "query", "strategy_options", "entropy_scores", "margin_scores",
           "badge_kmeanspp", "badge_kmeanspp_factored"]


@dataclass
class QueryContext:
    """What a strategy may look at in one round.

    Attributes:
        emb: ``(n, d)`` float32 pool embeddings (the frozen self-supervised features, ``f_self``).
        labeled: int64 ``(m,)`` labelled pool indices, in labelling order.
        labels: int64 ``(m,)`` the oracle's answers for ``labeled``.
        num_classes: number of classes.
        head: the classifier trained on the labels this round (``None`` before the first labels): a
            :class:`Head` on ``emb``, or a fine-tuned network's :class:`uslkit.active.finetuned.FinetunedModel`.
        seed: this round's seed (the strategy's only randomness).
        first_round: the size of the first round's labelled set (NTKCPL's initial cluster count), if known.
        run_seed: the run's seed, for what a strategy makes once per run (ProbCover's ball graph).
        run_cache: kept by the loop for the whole run (the same dict every round); empty after a resume, so what
            is kept must depend on the run alone (``run_seed``), not on the round that made it.
    """

    emb: np.ndarray
    labeled: np.ndarray
    labels: np.ndarray
    num_classes: int
    head: Head | None
    seed: int
    first_round: int | None = None
    run_seed: int | None = None
    run_cache: dict = field(default_factory=dict, repr=False)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def unlabeled(self) -> np.ndarray:
        """int64 ``(n - m,)``: the pool indices not labelled yet, ascending."""
        if "unlabeled" not in self._cache:
            mask = np.ones(self.emb.shape[0], dtype=bool)
            mask[self.labeled] = False
            self._cache["unlabeled"] = np.flatnonzero(mask)
        return self._cache["unlabeled"]

    def _need_head(self, what: str) -> Head:
        if self.head is None:
            raise ValueError(f"{what} needs a classifier trained on labelled samples: start with a one-shot "
                             "selection (start=...) first")
        return self.head

    def probs(self) -> np.ndarray:
        """``(n, C)`` the head's softmax over the whole pool (computed once per round)."""
        if "probs" not in self._cache:
            self._cache["probs"] = self._need_head("an uncertainty strategy").probs(self.emb)
        return self._cache["probs"]

    def grad_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """BADGE's gradient-embedding factors ``(a (n, C), h (n, h))`` of the pool (:meth:`Head.grad_factors`),
        computed once per round."""
        if "grad" not in self._cache:
            self._cache["grad"] = self._need_head("badge").grad_factors(self.emb)
        return self._cache["grad"]

    def features(self) -> np.ndarray:
        """``(n, h)`` the head's penultimate features of the pool (``f_al``), computed once per round."""
        if "features" not in self._cache:
            self._cache["features"] = self._need_head("a strategy on the classifier's features").features(self.emb)
        return self._cache["features"]


def _top(indices: np.ndarray, score: np.ndarray, batch: int) -> np.ndarray:
    """The ``batch`` indices of largest ``score``, ties to the lowest index."""
    order = np.lexsort((indices, -score))
    return indices[order[:batch]].astype(np.int64)


def entropy_scores(probs: np.ndarray) -> np.ndarray:
    """``-sum_c p_c log p_c`` per row (0 log 0 = 0)."""
    p = np.asarray(probs, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.where(p > 0, p * np.log(p), 0.0).sum(1)


def margin_scores(probs: np.ndarray) -> np.ndarray:
    """``p_(1) - p_(2)``, the gap between the two most probable classes per row (small: uncertain)."""
    p = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return p[:, -1] - p[:, -2] if p.shape[1] > 1 else np.ones(p.shape[0])


def query_random(ctx: QueryContext, batch: int) -> np.ndarray:
    """Uniformly random unlabelled samples (the baseline every strategy is measured against)."""
    rng = np.random.default_rng(ctx.seed)
    return rng.choice(ctx.unlabeled, size=batch, replace=False).astype(np.int64)


def query_entropy(ctx: QueryContext, batch: int) -> np.ndarray:
    """Maximum entropy of the head's prediction (uncertainty sampling; Lewis & Gale 1994; paper 003's
    "Entropy" baseline)."""
    u = ctx.unlabeled
    return _top(u, entropy_scores(ctx.probs()[u]), batch)


def query_margin(ctx: QueryContext, batch: int) -> np.ndarray:
    """Smallest margin between the two most probable classes (Scheffer et al. 2001)."""
    u = ctx.unlabeled
    return _top(u, -margin_scores(ctx.probs()[u]), batch)


def query_coreset(ctx: QueryContext, batch: int, *, space: str = "self") -> np.ndarray:
    """Greedy k-center core-set (Sener & Savarese 2018) from the labelled set, on the frozen embeddings
    (``space="self"``, paper 003's "Coreset(self)") or the head's penultimate features (``"al"``)."""
    from ..select.coreset import select_coreset

    if space not in ("self", "al"):
        raise ValueError(f"coreset space must be 'self' or 'al', got {space!r}")
    x = ctx.emb if space == "self" else ctx.features()
    return select_coreset(x, batch, labeled=ctx.labeled, seed=ctx.seed)


def _kmeanspp(n: int, first: int, dist: Callable[[int], np.ndarray], batch: int, seed: int) -> np.ndarray:
    """k-means++ seeding from row ``first``: each next row with probability proportional to ``dist`` (squared
    distances of every row to row ``j``) to the nearest row chosen; all remaining at distance 0: the lowest-index
    unchosen row."""
    rng = np.random.default_rng(seed)
    chosen = np.zeros(n, dtype=bool)
    picks = [first]
    chosen[first] = True
    d2 = dist(first)
    for _ in range(batch - 1):
        w = np.where(chosen, 0.0, d2)
        total = w.sum()
        if total > 0:
            j = int(rng.choice(n, p=w / total))
        else:
            j = int(np.flatnonzero(~chosen)[0])
        picks.append(j)
        chosen[j] = True
        d2 = np.minimum(d2, dist(j))
    return np.asarray(picks, dtype=np.int64)


def badge_kmeanspp(g: np.ndarray, batch: int, *, seed: int) -> np.ndarray:
    """k-means++ seeding on rows of ``g`` (BADGE, Ash et al. 2020, Alg. 1): the row of largest norm first (as
    the reference code), then each next row with probability proportional to its squared distance to the
    nearest row chosen. Rows that coincide with a chosen one have probability 0; when all remaining do, the
    lowest-index unchosen row is taken. Returns positions into ``g`` (int64 ``(batch,)``)."""
    g = np.asarray(g, dtype=np.float64)
    first = int(np.argmax(np.einsum("nd,nd->n", g, g)))
    return _kmeanspp(g.shape[0], first, lambda j: ((g - g[j]) ** 2).sum(1), batch, seed)


def badge_kmeanspp_factored(a: np.ndarray, h: np.ndarray, batch: int, *, seed: int) -> np.ndarray:
    """:func:`badge_kmeanspp` on the rows ``g_i = a_i outer h_i`` without forming them: ``||g_i - g_j||^2 =
    |a_i|^2 |h_i|^2 + |a_j|^2 |h_j|^2 - 2 (a_i . a_j)(h_i . h_j)``, about ``C h / (C + h)`` times fewer operations
    per pick (9x for 10 classes and 64 hidden units). Distances below ``1e-10`` of the two rows' squared norms
    count as 0 (coinciding rows, which the expansion leaves at rounding level). Same picks as
    :func:`badge_kmeanspp` up to rounding in the sampling probabilities."""
    a = np.asarray(a, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    sq = np.einsum("nc,nc->n", a, a) * np.einsum("nh,nh->n", h, h)

    def dist(j: int) -> np.ndarray:
        d2 = sq + sq[j] - 2.0 * np.einsum("nc,c->n", a, a[j]) * np.einsum("nh,h->n", h, h[j])  # no BLAS: any threads
        return np.where(d2 <= 1e-10 * (sq + sq[j]), 0.0, d2)

    return _kmeanspp(a.shape[0], int(np.argmax(sq)), dist, batch, seed)


def query_badge(ctx: QueryContext, batch: int) -> np.ndarray:
    """BADGE (Ash et al. 2020): k-means++ seeding on the gradient embeddings of the unlabelled samples
    (:meth:`Head.grad_embedding`): uncertain (large gradients) and diverse (spread) at once. Computed on the
    embeddings' factors (:func:`badge_kmeanspp_factored`)."""
    u = ctx.unlabeled
    a, h = ctx.grad_factors()
    return u[badge_kmeanspp_factored(a[u], h[u], batch, seed=ctx.seed)]


def query_probcover(ctx: QueryContext, batch: int, *, delta=None, purity_threshold=0.95, delta_grid=None,
                    kmeans_niter=100) -> np.ndarray:
    """ProbCover (Yehuda et al. 2022) in its multi-round form: greedy coverage of delta-balls, the balls of the
    labelled samples counted as covered. The radius and the ball graph (:func:`uslkit.select.probcover_graph`)
    are made once per run, from the run's seed, and shared by its rounds: one radius for the whole run, as the
    paper sets it per dataset (and a round costs only the greedy)."""
    from ..select.probcover import probcover_graph, probcover_greedy

    key = ("probcover", delta, purity_threshold, None if delta_grid is None else tuple(delta_grid), kmeans_niter)
    if key not in ctx.run_cache:
        ctx.run_cache[key] = probcover_graph(ctx.emb, delta=delta, num_classes=ctx.num_classes,
                                             purity_threshold=purity_threshold, delta_grid=delta_grid,
                                             seed=ctx.seed if ctx.run_seed is None else ctx.run_seed,
                                             kmeans_niter=kmeans_niter)
    return probcover_greedy(ctx.run_cache[key], batch, ctx.labeled, ctx.seed)


def _one_shot(method: str) -> Callable:
    def fn(ctx: QueryContext, batch: int, **params: Any) -> np.ndarray:
        from ..select import select

        extra = {"num_classes": ctx.num_classes} if method == "probcover" else {}
        return select(method, ctx.emb, batch, seed=ctx.seed, labeled=ctx.labeled, **extra, **params)

    fn.__name__ = f"query_{method}"
    fn.select_method = method
    fn.__doc__ = (f"``uslkit.select.select({method!r}, ...)`` in its multi-round form: the labelled samples are "
                  "given as ``labeled`` and the method adds ``batch`` new ones on the frozen embeddings.")
    return fn


#: the strategies :func:`uslkit.active.run_active` knows, by name
STRATEGIES: dict[str, Callable] = {
    "random": query_random,
    "entropy": query_entropy,
    "margin": query_margin,
    "coreset": query_coreset,
    "coreset_al": functools.partial(query_coreset, space="al"),
    "badge": query_badge,
    "typiclust": _one_shot("typiclust"),
    "probcover": query_probcover,
    "kmeans_multi": _one_shot("kmeans_multi"),
    "lookahead": query_lookahead,
    "ntkcpl": query_ntkcpl,
    "ntkcpl_self": functools.partial(query_ntkcpl, variant="self"),
}


def keyword_defaults(fn: Callable) -> dict:
    """``fn``'s keyword-only options with their defaults, less those the loop sets itself (seed, labelled set,
    labels, number of classes, scores)."""
    skip = {"seed", "return_scores", "labeled", "labels", "num_classes"}
    sig = inspect.signature(fn).parameters.values()
    return {p.name: p.default for p in sig if p.kind is p.KEYWORD_ONLY and p.name not in skip}


def strategy_options(strategy: str, params: dict | None = None) -> dict:
    """The options ``strategy`` runs with: its keyword defaults (those of the :mod:`uslkit.select` method for the
    one-shot strategies) updated by ``params``. Recorded with a run, so a changed default is a changed run.
    An option the strategy does not take is a ``ValueError`` naming the valid ones."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    fn = STRATEGIES[strategy]
    if getattr(fn, "select_method", None):
        from ..select import METHODS

        fn = METHODS[fn.select_method]
    defaults = keyword_defaults(fn)
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for strategy {strategy!r}; valid: {sorted(defaults)}")
    return {**defaults, **(params or {})}


def query(strategy: str, ctx: QueryContext, batch: int, **params: Any) -> np.ndarray:
    """Run ``STRATEGIES[strategy]`` and check its answer: ``batch`` distinct, unlabelled, in-range indices."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    left = ctx.unlabeled.size
    if not 1 <= batch <= left:
        raise ValueError(f"a query of {batch} samples with {left} unlabelled samples left in the pool of "
                         f"{ctx.emb.shape[0]}")
    idx = np.asarray(STRATEGIES[strategy](ctx, batch, **params), dtype=np.int64)
    labeled = set(ctx.labeled.tolist())
    if (idx.shape != (batch,) or len(set(idx.tolist())) != batch or idx.min() < 0 or idx.max() >= ctx.emb.shape[0]
            or any(i in labeled for i in idx.tolist())):
        raise RuntimeError(f"strategy {strategy!r} returned {idx.size} indices that are not {batch} distinct "
                           "unlabelled pool indices (a bug in the strategy)")
    return idx
