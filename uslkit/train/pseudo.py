"""Pseudo-label refinements against confirmation bias: distribution alignment and adaptive thresholds.

Stateful parts are small ``nn.Module``\\ s whose whole state is BUFFERS, so that a learner that holds them as
sub-modules of the module given to :func:`uslkit.train.loop.run_loop` gets them checkpointed and a run
killed and resumed ends bit for bit where an uninterrupted one does. The maths are pure functions beside them.

- :class:`DistributionAlignment`: ReMixMatch's distribution alignment (Berthelot et al. 2020, Sec. 3.1).
- :class:`FlexMatchThreshold`: FlexMatch's class-adaptive thresholds (Zhang et al. 2021, Sec. 3.2-3.3:
  Curriculum Pseudo Labelling with the threshold warm-up and the convex mapping ``M(x) = x / (2 - x)``).
- :class:`FreeMatchThreshold`: FreeMatch's self-adaptive thresholds (Wang et al. 2023, Sec. 3.2, Alg. 1)
  and :func:`freematch_fairness_loss`, its self-adaptive fairness loss (Sec. 3.3, eq. 11).

Under ``torch.distributed`` every state update uses the values of ALL processes (all-reduced means,
all-gathered indices and predictions), so each process holds the same state; on one process everything is
exact (:func:`uslkit.train.distributed.mean_tensor`, :func:`uslkit.train.distributed.gather_rows`). The one
per-process quantity is FreeMatch's fairness loss, a loss on each process's own batch, as in the reference code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .._validate import check_positive_int
from .distributed import gather_rows, mean_tensor

__all__ = ["DistributionAlignment", "align_distribution", "FlexMatchThreshold", "flexmatch_learning_effect",
           "flexmatch_thresholds", "FreeMatchThreshold", "freematch_thresholds", "freematch_fairness_loss"]


def _check_probs(probs: torch.Tensor, num_classes: int) -> None:
    if probs.ndim != 2 or probs.shape[1] != num_classes:
        raise ValueError(f"probs must have shape (n, {num_classes}), got {tuple(probs.shape)}")


# ----------------------------------------------------------------------------------------------------------
# distribution alignment
# ----------------------------------------------------------------------------------------------------------
def align_distribution(probs: torch.Tensor, target: torch.Tensor, p_running: torch.Tensor) -> torch.Tensor:
    """ReMixMatch's distribution alignment (Berthelot et al. 2020, Sec. 3.1):
    ``q~ = Normalize(q * p(y) / p~(y))``, each row renormalised to sum 1.

    With a uniform ``target`` it is CoMatch's ``q / p~`` renormalised (Li et al. 2021).

    Args:
        probs: ``(n, C)`` class probabilities ``q`` of unlabelled samples.
        target: ``(C,)`` prior ``p(y)`` (need not sum to 1: only ratios matter).
        p_running: ``(C,)`` running mean ``p~(y)`` of the model's predictions on unlabelled data, ``> 0``.

    Returns:
        ``(n, C)`` aligned probabilities.
    """
    q = probs * (target / p_running)
    return q / q.sum(dim=1, keepdim=True)


def _as_target(target, num_classes: int) -> torch.Tensor:
    """The prior as a float32 ``(C,)`` tensor summing to 1 (``None`` / ``"uniform"``: uniform)."""
    if target is None or (isinstance(target, str) and target == "uniform"):
        return torch.full((num_classes,), 1.0 / num_classes)
    if isinstance(target, str):
        raise ValueError(f"target must be 'uniform', None or a ({num_classes},) array, got {target!r}")
    t = torch.as_tensor(np.asarray(target, dtype=np.float64))
    if t.shape != (num_classes,):
        raise ValueError(f"target must have shape ({num_classes},), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or bool((t < 0).any()) or not float(t.sum()) > 0:
        raise ValueError(f"target must be finite, >= 0 and not all 0, got {t.tolist()}")
    return (t / t.sum()).float()


class DistributionAlignment(nn.Module):
    """ReMixMatch's distribution alignment with a running mean over the last ``window`` unlabelled batches.

    ``forward(probs)`` stores the batch mean of ``probs`` (averaged over processes under DDP) in a ring
    buffer of the last ``window`` batch means, takes ``p~`` = the mean of the stored rows, and returns
    :func:`align_distribution` ``(probs, target, p~)``. Call it once per step on the weak-view
    probabilities of the unlabelled batch, without gradient.

    Buffers (checkpointed with the module that holds it): ``target`` ``(C,)``, ``history`` ``(window, C)``
    float32 batch means, ``seen`` int64 scalar = batches stored so far.

    Deviations: ``p~`` averages the batches stored so far (at most ``window``): the papers' "running average
    over the last 128 batches" read literally, CoMatch's code (a list of at most 32 means) and, up to its
    ``+1e-6``, USB's queue hook (a zero-filled ring: the zero rows only rescale ``p~``, which the
    renormalisation cancels). ReMixMatch's TensorFlow code fills the ring with ``1/C`` instead, which dilutes
    ``p~`` towards uniform during the first ``window`` steps. ``p~`` is floored at the smallest normal float32
    so that a class no prediction has reached does not divide by 0 (USB adds ``1e-6`` to ``p~`` and ``p(y)``).

    Args:
        num_classes: ``C``.
        window: batches averaged (ReMixMatch: 128; CoMatch: 32).
        target: ``p(y)``: ``None`` or ``"uniform"`` (CoMatch's ``q / p~``), or a ``(C,)`` prior such as the
            labelled class histogram (normalised here; a 0 entry means that class is never pseudo-labelled).
    """

    def __init__(self, num_classes: int, *, window: int = 128, target=None):
        super().__init__()
        self.num_classes = check_positive_int(num_classes, name="num_classes")
        self.window = check_positive_int(window, name="window")
        self.register_buffer("target", _as_target(target, self.num_classes))
        self.register_buffer("history", torch.zeros(self.window, self.num_classes))
        self.register_buffer("seen", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """Store the (process-averaged) mean of ``probs`` ``(n, C)`` as the newest batch mean."""
        _check_probs(probs, self.num_classes)
        mean = mean_tensor(probs.detach().float().mean(dim=0))
        self.history[int(self.seen) % self.window] = mean.to(self.history.device)
        self.seen += 1

    def p_running(self) -> torch.Tensor:
        """``(C,)`` mean of the stored batch means (uniform before the first batch)."""
        k = min(int(self.seen), self.window)
        if k == 0:
            return torch.full_like(self.target, 1.0 / self.num_classes)
        return self.history[:k].mean(dim=0)

    @torch.no_grad()
    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """Update with ``probs`` ``(n, C)``, then return them aligned, ``(n, C)``, in ``probs``' dtype."""
        self.update(probs)
        p = self.p_running().to(probs.device).clamp_min(torch.finfo(torch.float32).tiny)
        return align_distribution(probs.float(), self.target.to(probs.device), p).to(probs.dtype)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, window={self.window}"


# ----------------------------------------------------------------------------------------------------------
# FlexMatch
# ----------------------------------------------------------------------------------------------------------
def flexmatch_learning_effect(sigma: torch.Tensor, unused: int, *, warmup: bool = True) -> torch.Tensor:
    """FlexMatch's normalised learning effect (Zhang et al. 2021, Sec. 3.2; warm-up: Sec. 3.3).

    ``beta(c) = sigma(c) / max(max_c sigma, N - sum_c sigma)`` with warm-up (the unused samples count as one
    more "class", so the thresholds rise from 0 while most samples are still unused), else
    ``beta(c) = sigma(c) / max_c sigma``; ``beta = 0`` when the denominator is 0 (no confident prediction yet:
    the reference keeps its initial zeros then).

    Args:
        sigma: ``(C,)`` number of unlabelled samples whose latest confident prediction is ``c``.
        unused: ``N - sum_c sigma``, the samples never predicted confidently.
        warmup: the threshold warm-up.

    Returns:
        ``(C,)`` float32 ``beta`` in ``[0, 1]``.
    """
    sigma = sigma.float()
    denom = sigma.max() if sigma.numel() else sigma.new_zeros(())
    if warmup:
        denom = torch.clamp_min(denom, float(unused))
    if not float(denom) > 0:
        return torch.zeros_like(sigma)
    return sigma / denom


def flexmatch_thresholds(beta: torch.Tensor, threshold: float) -> torch.Tensor:
    """FlexMatch's class thresholds (Zhang et al. 2021, Sec. 3.2 with the convex mapping of Sec. 3.3):
    ``T(c) = M(beta(c)) * tau`` with ``M(x) = x / (2 - x)``; ``(C,)`` from ``(C,)``."""
    return threshold * beta / (2.0 - beta)


class FlexMatchThreshold(nn.Module):
    """FlexMatch's Curriculum Pseudo Labelling: a threshold per class from its learning effect.

    State: ``selected`` ``(N,)`` int64 buffer, each unlabelled sample's latest confident prediction (``-1``:
    none yet; a sample keeps its last confident class when later predictions are not confident), as the
    reference. ``sigma(c)`` counts the ``c`` entries, ``unused`` the ``-1`` ones. Per step, as the reference
    (USB ``FlexMatchThresholdingHook``): the mask uses :meth:`class_thresholds` from the state BEFORE the
    batch, then :meth:`update` stores the batch's confident predictions (``max q >= tau``).

    Under DDP :meth:`update` all-gathers the indices and predictions of every process, so every process holds
    the same ``selected`` (the reference updates each process's own copy only). A sample met twice in one
    global batch (a batch crossing an epoch boundary) keeps its later prediction.

    Args:
        num_samples: ``N``, size of the unlabelled pool (indices in ``[0, N)``).
        num_classes: ``C``.
        threshold: ``tau`` (0.95).
        warmup: the threshold warm-up (on in the paper and the reference).
    """

    def __init__(self, num_samples: int, num_classes: int, *, threshold: float = 0.95, warmup: bool = True):
        super().__init__()
        self.num_samples = check_positive_int(num_samples, name="num_samples")
        self.num_classes = check_positive_int(num_classes, name="num_classes")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if not isinstance(warmup, bool):
            raise ValueError(f"warmup must be True or False, got {warmup!r}")
        self.threshold, self.warmup = float(threshold), warmup
        self.register_buffer("selected", torch.full((self.num_samples,), -1, dtype=torch.int64))

    def counts(self) -> tuple[torch.Tensor, int]:
        """``(sigma, unused)``: ``(C,)`` int64 samples per latest confident class, and the count of ``-1``."""
        used = self.selected[self.selected >= 0]
        return torch.bincount(used, minlength=self.num_classes), self.num_samples - int(used.numel())

    def class_thresholds(self) -> torch.Tensor:
        """``(C,)`` float32 thresholds ``T(c)`` (:func:`flexmatch_thresholds` of :func:`flexmatch_learning_effect`)."""
        sigma, unused = self.counts()
        return flexmatch_thresholds(flexmatch_learning_effect(sigma, unused, warmup=self.warmup), self.threshold)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, probs: torch.Tensor) -> None:
        """Store ``argmax probs`` ``(n, C)`` for the samples ``indices`` ``(n,)`` where ``max probs >= tau``."""
        _check_probs(probs, self.num_classes)
        if indices.shape != (probs.shape[0],):
            raise ValueError(f"indices must have shape ({probs.shape[0]},), got {tuple(indices.shape)}")
        max_p, pred = probs.detach().float().max(dim=1)
        pred = torch.where(max_p >= self.threshold, pred, torch.full_like(pred, -1))  # -1: not confident
        dev = self.selected.device
        idx = gather_rows(indices.to(dev, torch.int64))
        pred = gather_rows(pred.to(dev))
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_samples):
            raise ValueError(f"indices must be in [0, {self.num_samples}), got {int(idx.min())}..{int(idx.max())}")
        uniq, inv = torch.unique(idx, return_inverse=True)
        last = torch.full((uniq.numel(),), -1, dtype=torch.int64, device=dev)
        last.scatter_reduce_(0, inv, torch.arange(idx.numel(), device=dev), reduce="amax")  # the later visit
        keep = pred[last] >= 0
        self.selected[uniq[keep]] = pred[last][keep]

    def extra_repr(self) -> str:
        return f"num_samples={self.num_samples}, num_classes={self.num_classes}, threshold={self.threshold}, " \
               f"warmup={self.warmup}"


# ----------------------------------------------------------------------------------------------------------
# FreeMatch
# ----------------------------------------------------------------------------------------------------------
def freematch_thresholds(tau: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive class thresholds (Wang et al. 2023, Sec. 3.2, Alg. 1 line 6):
    ``tau_t(c) = MaxNorm(p~_t)(c) * tau_t = p~_t(c) / max_c p~_t(c) * tau_t``; ``(C,)`` from a scalar and ``(C,)``."""
    return p_model / p_model.max() * tau


class FreeMatchThreshold(nn.Module):
    """FreeMatch's self-adaptive thresholding (Wang et al. 2023, Sec. 3.2, Alg. 1 lines 3-5).

    :meth:`update` with the weak-view probabilities ``q`` ``(n, C)`` of the unlabelled batch, then
    :meth:`class_thresholds` (Alg. 1: the thresholds of step ``t`` include batch ``t``, as the reference)::

        tau_t   = lam tau_{t-1}  + (1 - lam) mean_b max q_b            (global threshold)
        p~_t    = lam p~_{t-1}   + (1 - lam) mean_b q_b                (local class estimate)
        h~_t    = lam h~_{t-1}   + (1 - lam) Hist(argmax q_b) / n      (for the fairness loss)

    all three starting at ``1/C``. Under DDP the batch means are averaged over the processes (the reference
    all-gathers the probabilities: the same numbers, the per-process batches being equal).

    Deviation: the initial state ``tau_0 = p~_0 = h~_0 = 1/C`` is the paper's (Alg. 1) and TorchSSL's; USB's
    current ``FreeMatchThresholingHook`` starts all three at ones (its ``/ C`` commented out): its global
    threshold starts at 1, masking nothing until the EMA has come down, and its ``p~`` and ``h~`` weigh their
    uniform start ``C`` times more. Not followed.

    Buffers: ``tau`` (scalar), ``p_model`` ``(C,)``, ``label_hist`` ``(C,)``, float32.

    Args:
        num_classes: ``C``.
        ema: ``lam`` (0.999 in the paper).
    """

    def __init__(self, num_classes: int, *, ema: float = 0.999):
        super().__init__()
        self.num_classes = check_positive_int(num_classes, name="num_classes")
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        self.ema = float(ema)
        self.register_buffer("tau", torch.tensor(1.0 / self.num_classes))
        self.register_buffer("p_model", torch.full((self.num_classes,), 1.0 / self.num_classes))
        self.register_buffer("label_hist", torch.full((self.num_classes,), 1.0 / self.num_classes))

    @torch.no_grad()
    def update(self, probs: torch.Tensor) -> None:
        """One EMA step of ``tau``, ``p_model`` and ``label_hist`` with the batch ``probs`` ``(n, C)``."""
        _check_probs(probs, self.num_classes)
        q = probs.detach().float()
        max_p, pred = q.max(dim=1)
        hist = torch.bincount(pred, minlength=self.num_classes).float() / q.shape[0]
        stats = mean_tensor(torch.cat([max_p.mean().reshape(1), q.mean(dim=0), hist]))
        stats = stats.to(self.tau.device)
        lam, c = self.ema, self.num_classes
        self.tau.mul_(lam).add_((1.0 - lam) * stats[0])
        self.p_model.mul_(lam).add_((1.0 - lam) * stats[1:1 + c])
        self.label_hist.mul_(lam).add_((1.0 - lam) * stats[1 + c:])

    def class_thresholds(self) -> torch.Tensor:
        """``(C,)`` thresholds ``tau_t(c)`` (:func:`freematch_thresholds`)."""
        return freematch_thresholds(self.tau, self.p_model)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, ema={self.ema}"


def _sum_norm_of_ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``SumNorm(num / den)`` with ``num / 0`` read as 0 (the reference's ``1/h`` with ``inf`` -> 0)."""
    inv = torch.where(den > 0, 1.0 / den.clamp_min(torch.finfo(den.dtype).tiny), torch.zeros_like(den))
    r = num * inv
    return r / r.sum()


def freematch_fairness_loss(logits_strong: torch.Tensor, mask: torch.Tensor, p_model: torch.Tensor,
                            label_hist: torch.Tensor) -> torch.Tensor:
    """FreeMatch's self-adaptive fairness loss (Wang et al. 2023, Sec. 3.3, eq. 11)::

        L_f = -H( SumNorm(p~_t / h~_t), SumNorm(p_bar / h_bar) ) = sum_c SumNorm(p~/h~)_c log SumNorm(p_bar/h_bar)_c

    with ``H(p, q) = -sum p log q``; ``p_bar`` = mean of the strong-view probabilities ``Q_b`` of the masked
    (confident) samples and ``h_bar`` the histogram of their strong-view argmax (the paper divides
    by ``mu B`` where the reference averages over the masked samples: ``SumNorm`` cancels the difference).
    As in the paper and the reference the value is <= 0 and is minimised as written (the maintainers: it acts
    as an entropy maximisation of the average prediction, USB issue 182). Gradient flows through ``p_bar``
    only; ``h_bar``, ``p~`` and ``h~`` are constants; ``log`` has the reference's ``+1e-12``.

    Args:
        logits_strong: ``(n, C)`` strong-view logits of the unlabelled batch.
        mask: ``(n,)`` bool, the samples above their threshold.
        p_model, label_hist: ``(C,)`` ``p~_t`` and ``h~_t`` of :class:`FreeMatchThreshold`.

    Returns:
        Scalar; 0 when no sample is masked (the reference skips the loss then).
    """
    if logits_strong.ndim != 2 or mask.shape != (logits_strong.shape[0],):
        raise ValueError(f"logits_strong must be (n, C) and mask (n,), got {tuple(logits_strong.shape)} and "
                         f"{tuple(mask.shape)}")
    mask = mask.bool()
    if not bool(mask.any()):
        return logits_strong.new_zeros((), dtype=torch.float32)
    prob_s = torch.softmax(logits_strong[mask].float(), dim=1)
    c = prob_s.shape[1]
    h_bar = torch.bincount(prob_s.detach().argmax(dim=1), minlength=c).float()
    target = _sum_norm_of_ratio(p_model.detach().float(), label_hist.detach().float())
    q = _sum_norm_of_ratio(prob_s.mean(dim=0), h_bar / h_bar.sum())
    return (target * torch.log(q + 1e-12)).sum()
