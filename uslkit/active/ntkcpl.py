"""Look-ahead strategies with the NTK of the head: NTKCPL (paper 003, Alg. 1) and LookAhead (Mohamad 2022).

Both predict, for each candidate, what the head trained on the labelled set plus that candidate would output,
through kernel regression with :class:`uslkit.active.ntk.InitMLP`'s NTK on the frozen features (eq. 3, its
finite training time replaced by a ridge, :data:`REG`). Adding one training point is a rank-one update: with
``A = (K_LL + ridge)^-1``, predictions ``F = f0_C + K_CL A (Y_L - f0_L)`` and the posterior kernel
``R = K_CC - K_CL A K_LC`` on the candidates, adding candidate ``i`` with target ``y_i`` changes the prediction at
``p`` by ``R[p, i] (y_i - F[i]) / (R[i, i] + ridge)``; after a
pick ``F`` and ``R`` are updated by the same formula, so a batch is chosen greedily, each pick seeing the
earlier ones, without refitting.

Candidates: a seeded random subset of the unlabelled pool (paper 003 follows LookAhead with 10,000, the
``candidates`` default; smaller values trade faithfulness for time). The risk is measured on the candidates.
"""

from __future__ import annotations

import numpy as np

from .._blas import single_threaded
from ..embed import l2_normalize
from .cpl import cpl_labels
from .ntk import InitMLP

__all__ = ["query_ntkcpl", "query_lookahead", "greedy_min_risk", "REG"]

#: Default ridge of the NTK regression, times the kernel's mean diagonal. Eq. 3 at a finite training time ``t``
#: regularises as a ridge does; at ``t -> infinity`` with a vanishing ridge (``reg=1e-6``) the regression
#: interpolates the labels and falls 3-9 points below the trained head at 100-2,000 labels on Fashion-MNIST,
#: while at 0.01 it is 2-5 points below at 100 labels and within half a point or above at 500-2,000, on both
#: embeddings measured; the best value on average over them (benchmarks/RESULTS.md, "the NTK against the trained
#: head").
REG = 0.01


def _candidates(ctx, candidates: int) -> np.ndarray:
    u = ctx.unlabeled
    if candidates is None or candidates >= u.size:
        return u
    return np.sort(np.random.default_rng(ctx.seed).choice(u, size=int(candidates), replace=False))


def _posterior(model: InitMLP, x_lab, y_lab, x_cand, reg: float):
    """``(F, R, ridge)`` on the candidates given the labelled set (module docstring)."""
    k_ll = model.kernel(x_lab)
    ridge = reg * float(np.mean(np.diag(k_ll))) if len(k_ll) else reg
    k_cl = model.kernel(x_cand, x_lab)
    a = np.linalg.solve(k_ll + ridge * np.eye(len(k_ll)), np.column_stack([y_lab - model.outputs(x_lab), k_cl.T]))
    k_out = y_lab.shape[1]
    f = model.outputs(x_cand) + k_cl @ a[:, :k_out]
    r = model.kernel(x_cand) - k_cl @ a[:, k_out:]
    return f, r, ridge


def _risks(f, r, s, e, target, avail, chunk: int = 256) -> np.ndarray:
    """0-1 risk on the candidates after adding each available candidate ``i`` (``inf`` for the others): the
    count of ``p`` with ``argmax_k F'[p, k] != target[p]``, ``F'[p] = F[p] + R[p, i] e[i] / s[i]``. Exact, but
    only the pairs whose correctness can change are evaluated: ``|R[p, i] / s[i]| * span(e[i]) >= gap[p]``, the
    margin of ``p``'s current decision about its target (a smaller change cannot flip it)."""
    c, k = f.shape
    pred = f.argmax(1)
    wrong = pred != target
    base = int(wrong.sum())
    ft = f[np.arange(c), target]
    other = f.copy()
    other[np.arange(c), target] = -np.inf
    gap = np.abs(ft - other.max(1))
    span = e.max(1) - e.min(1)
    out = np.full(c, np.inf)
    for s0 in range(0, c, chunk):
        cols = np.arange(s0, min(c, s0 + chunk))
        cols = cols[avail[cols]]
        if not cols.size:
            continue
        coef = r[:, cols] / s[cols]  # (c, q)
        mask = np.abs(coef) * span[cols] >= gap[:, None]
        p, q = np.nonzero(mask)
        delta = np.zeros(cols.size)
        if p.size:
            new = f[p] + coef[p, q][:, None] * e[cols[q]]
            now_wrong = new.argmax(1) != target[p]
            delta = np.bincount(q, weights=now_wrong.astype(float) - wrong[p], minlength=cols.size)
        out[cols] = base + delta
    return out


def _add(f: np.ndarray, r: np.ndarray, s: np.ndarray, i: int, e: np.ndarray) -> None:
    """Candidate ``i`` joins the training set with residual ``e[i]``: ``F`` and ``R`` updated in place (rank one)."""
    coef = r[:, i] / s[i]
    f += coef[:, None] * e[i][None, :]
    r -= np.outer(coef, r[i, :])


def _sq_error_after(r, s, e, cols) -> np.ndarray:
    """``||Y - F'||^2`` on the candidates after adding each of ``cols`` (the squared error the NTK regression
    minimises): ``||E||^2 - 2 coef . (E e_i) + ||coef||^2 ||e_i||^2`` with ``coef = R[:, i] / s[i]``."""
    coef = r[:, cols] / s[cols]
    ee = e @ e[cols].T  # (c, t)
    return float((e * e).sum()) - 2.0 * (coef * ee).sum(0) + (coef * coef).sum(0) * (e[cols] ** 2).sum(1)


def greedy_min_risk(f, r, ridge: float, target, batch: int) -> list[int]:
    """Alg. 1, lines 10-18: ``batch`` times, the candidate whose addition (with its target) leaves the fewest
    candidates mispredicted, then ``F`` and ``R`` updated with it. Ties of the 0-1 risk (the paper sets no rule;
    with no labelled set every member of the largest cluster ties) go to the smallest squared error after the
    addition (:func:`_sq_error_after`), then the lowest position. Positions into the candidates; ``f``
    ``(c, K)``, ``r`` ``(c, c)`` are updated in place."""
    c, k = f.shape
    onehot = np.eye(k)[target]
    avail = np.ones(c, dtype=bool)
    picks = []
    for _ in range(batch):
        s = np.diag(r) + ridge
        e = onehot - f
        risk = _risks(f, r, s, e, target, avail)
        ties = np.flatnonzero(risk == risk.min())
        i = int(ties[0]) if ties.size == 1 else int(ties[np.argmin(_sq_error_after(r, s, e, ties))])
        picks.append(i)
        avail[i] = False
        _add(f, r, s, i, e)
    return picks


@single_threaded  # BLAS on one thread: the same result on any thread count
def query_ntkcpl(ctx, batch: int, *, variant: str = "al", candidates: int = 10000, c_max: int | None = None,
                 constraint: str = "cannot-link", reg: float = REG) -> np.ndarray:
    """NTKCPL (paper 003, Alg. 1): pick the candidates that minimise the NTK-predicted 0-1 risk against the
    clustering pseudo-labels on the candidates.

    The CPL (:func:`uslkit.active.cpl.cpl_labels`, Alg. 2) cluster the labelled samples and the candidates on the
    head's penultimate features (``variant="al"``, NTKCPL(al)) or the frozen features (``"self"``) into
    ``min(m / 2, c_max)`` classes (``m`` labels so far; Sec. 4: half the labels, capped; but at least one per
    labelled class, which the cannot-link constraints need), from ``c0`` = the first round's size, with the
    labelled classes as constraints and the head's predictions deciding which cluster is split. The NTK head
    (the head's width, at initialisation, on the frozen features) is trained on the labelled samples' CPL labels.
    ``c_max`` default: 10 per class (the paper: 100 for CIFAR-10 and SVHN). ``constraint``: the CPL's
    constrained K-means (:mod:`uslkit.active.cpl`: cannot-link only, the default, or one cluster per class).
    Deviation: the clustering covers the labelled samples and the candidates, not the whole pool.
    """
    if variant not in ("al", "self"):
        raise ValueError(f"ntkcpl variant must be 'al' or 'self', got {variant!r}")
    head = ctx._need_head("ntkcpl")
    cand = _candidates(ctx, candidates)
    lab = ctx.labeled
    s_idx = np.concatenate([lab, cand])
    pred = ctx.probs()[s_idx].argmax(1)
    feats = ctx.features()[s_idx] if variant == "al" else ctx.emb[s_idx]
    c_max = 10 * ctx.num_classes if c_max is None else int(c_max)
    classes = np.unique(ctx.labels).size  # cannot-link needs a cluster per labelled class
    n_clu = max(classes, min(lab.size // 2, c_max))
    c0 = max(classes, min(ctx.first_round or n_clu, n_clu))
    y_cpl = cpl_labels(feats, pred, np.arange(lab.size), ctx.labels, n_clusters=n_clu, c0=c0, seed=ctx.seed,
                       constraint=constraint)
    k = int(y_cpl.max()) + 1
    x = l2_normalize(ctx.emb[s_idx], dtype=np.float64)
    model = InitMLP(x.shape[1], head.config.hidden, k, seed=ctx.seed)
    f, r, ridge = _posterior(model, x[:lab.size], np.eye(k)[y_cpl[:lab.size]], x[lab.size:], reg)
    picks = greedy_min_risk(f, r, ridge, y_cpl[lab.size:], batch)
    return cand[np.asarray(picks, dtype=np.int64)]


@single_threaded  # BLAS on one thread: the same result on any thread count
def query_lookahead(ctx, batch: int, *, candidates: int = 10000, reg: float = REG) -> np.ndarray:
    """LookAhead (Mohamad 2022; paper 003's baseline): the candidate whose addition with its pseudo-label (the
    NTK head's current prediction) changes the outputs on the candidates most, ``||y_i - F[i]|| sum_p |R[p, i]|
    / R[i, i]``; greedily, each pick added with its pseudo-label before the next (ties: lowest position). The
    NTK head has the head's width and the true classes as outputs, trained on the labels so far."""
    head = ctx._need_head("lookahead")
    cand = _candidates(ctx, candidates)
    lab = ctx.labeled
    x = l2_normalize(ctx.emb[np.concatenate([lab, cand])], dtype=np.float64)
    c = ctx.num_classes
    model = InitMLP(x.shape[1], head.config.hidden, c, seed=ctx.seed)
    f, r, ridge = _posterior(model, x[:lab.size], np.eye(c)[ctx.labels], x[lab.size:], reg)
    avail = np.ones(len(cand), dtype=bool)
    picks = []
    for _ in range(batch):
        s = np.diag(r) + ridge
        e = np.eye(c)[f.argmax(1)] - f
        score = np.linalg.norm(e, axis=1) * np.abs(r).sum(0) / s
        score[~avail] = -np.inf
        i = int(np.argmax(score))
        picks.append(i)
        avail[i] = False
        _add(f, r, s, i, e)
    return cand[np.asarray(picks, dtype=np.int64)]
