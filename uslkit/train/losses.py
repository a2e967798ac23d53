"""Losses of the training core: SimCLR's NT-Xent, FixMatch's supervised + pseudo-label loss, MixMatch's
sharpening / MixUp / L2 consistency, CoMatch's memory smoothing and graph contrastive loss, and USL-T's global
and local clustering losses.

Pure functions of tensors; no state (the learners keep theirs in module buffers); randomness only where a
caller passes it in (MixUp's lambda and permutation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent", "fixmatch_loss", "sharpen", "mixup", "linear_rampup", "mixmatch_loss", "comatch_memory_smoothing",
           "comatch_pseudo_label_graph", "comatch_contrastive_loss", "comatch_loss", "usl_t_global_loss",
           "usl_t_local_loss", "usl_t_prob_ema"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, *, temperature: float = 0.5, gather: bool = False) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020, eq. 1), averaged over all 2N views.

    For the ``2N`` projections ``z = [z1; z2]`` (each L2-normalised here), view ``i`` and its partner ``p(i)``
    form the positive pair and the other ``2N - 2`` views are the negatives::

        l(i) = -log( exp(s(i, p(i)) / t) / sum_{j != i} exp(s(i, j) / t) ),   s = cosine similarity

    and the loss is ``mean_i l(i)`` (the paper's ``1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)]``).

    Args:
        z1, z2: ``(N, D)`` projections of the two views of the same N images (row ``i`` of each is image ``i``).
        temperature: ``t > 0`` (SimCLR: 0.5 on CIFAR-10, 0.1 on ImageNet with large batches).
        gather: under ``torch.distributed``, gather the projections of every process (with gradients) so the
            negatives come from the global batch, as SimCLR's multi-device training does. Each process then
            returns the loss of its own ``2N`` views against the global ``2 N W`` views.

    Returns:
        Scalar loss tensor.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must have the same (N, D) shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n = z1.shape[0]
    if n < 1:
        raise ValueError("nt_xent needs at least one pair")
    q = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)  # (2N, D): local anchors
    rank, world = 0, 1
    if gather and torch.distributed.is_available() and torch.distributed.is_initialized():
        import torch.distributed.nn.functional as dist_fn

        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        k1 = torch.cat(dist_fn.all_gather(F.normalize(z1.float(), dim=1)), dim=0)  # (N W, D)
        k2 = torch.cat(dist_fn.all_gather(F.normalize(z2.float(), dim=1)), dim=0)
        keys = torch.cat([k1, k2], dim=0)  # (2 N W, D): all views 1, then all views 2
    else:
        keys = q
    big_n = n * world
    logits = q @ keys.T / temperature  # (2N, 2NW)
    rows = torch.arange(2 * n, device=q.device)
    local = rows % n + rank * n  # this anchor's image in the global batch
    first = rows < n
    self_col = torch.where(first, local, local + big_n)
    pos_col = torch.where(first, local + big_n, local)
    logits = logits.masked_fill(F.one_hot(self_col, keys.shape[0]).bool(), float("-inf"))
    return F.cross_entropy(logits, pos_col)


def fixmatch_loss(
    logits_x: torch.Tensor,
    targets_x: torch.Tensor,
    logits_u_weak: torch.Tensor,
    logits_u_strong: torch.Tensor,
    *,
    threshold: float | torch.Tensor = 0.95,
    lambda_u: float = 1.0,
    temperature: float = 1.0,
    probs_u: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FixMatch's loss (Sohn et al. 2020, eqs. 2-4): ``l_s + lambda_u * l_u``.

    ``l_s = mean_b H(y_b, p(x_b))`` over the labelled batch (weakly augmented);
    ``l_u = 1/(mu B) sum_b 1(max q_b >= threshold) H(argmax q_b, p(strong(u_b)))`` with
    ``q_b = softmax(weak logits / temperature)`` computed without gradient (a hard pseudo-label). As in the
    paper, ``l_u`` is divided by the whole unlabelled batch size, not by the number of confident samples.
    With a per-class ``threshold`` tensor ``T`` the mask is ``max q_b >= T[argmax q_b]`` (FlexMatch, FreeMatch:
    :mod:`uslkit.train.pseudo`); ``probs_u`` replaces ``q`` (e.g. after distribution alignment).

    Args:
        logits_x: ``(B, C)`` logits of the weakly augmented labelled batch.
        targets_x: ``(B,)`` int64 labels in ``[0, C)``.
        logits_u_weak: ``(mu B, C)`` logits of the weak views of the unlabelled batch (detached here).
        logits_u_strong: ``(mu B, C)`` logits of the strong views of the same images.
        threshold: confidence ``tau`` (0.95 in FixMatch), or a ``(C,)`` tensor of per-class thresholds indexed
            by each sample's pseudo-label.
        lambda_u: weight of the unlabelled loss (1 in FixMatch).
        temperature: of the pseudo-label softmax (1 in FixMatch; only matters for the threshold).
        probs_u: optional ``(mu B, C)`` class probabilities of the weak views to threshold and pseudo-label
            instead of ``softmax(logits_u_weak / temperature)`` (then ``temperature`` must be 1).

    Returns:
        ``(loss, stats)``; ``stats`` holds detached ``loss_x``, ``loss_u``, ``mask`` (share of confident
        unlabelled samples), ``pseudo_labels`` ``(mu B,)`` and ``confident`` ``(mu B,)`` bool (the mask).
    """
    if logits_u_weak.shape != logits_u_strong.shape:
        raise ValueError(f"weak and strong logits differ in shape: {tuple(logits_u_weak.shape)} vs "
                         f"{tuple(logits_u_strong.shape)}")
    per_class = torch.is_tensor(threshold) and threshold.ndim > 0
    if per_class:
        if threshold.shape != (logits_u_weak.shape[1],):
            raise ValueError(f"a threshold tensor must have shape ({logits_u_weak.shape[1]},) (one per class), got "
                             f"{tuple(threshold.shape)}")
        if not bool(((threshold >= 0) & (threshold <= 1)).all()):
            raise ValueError(f"thresholds must be in [0, 1], got {threshold.tolist()}")
    elif not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if probs_u is not None:
        if probs_u.shape != logits_u_weak.shape:
            raise ValueError(f"probs_u must have the shape of the weak logits {tuple(logits_u_weak.shape)}, got "
                             f"{tuple(probs_u.shape)}")
        if temperature != 1.0:
            raise ValueError(f"temperature={temperature} has no effect with probs_u; apply it before")
    loss_x = F.cross_entropy(logits_x.float(), targets_x)
    with torch.no_grad():
        if probs_u is None:
            probs = torch.softmax(logits_u_weak.detach().float() / temperature, dim=1)
        else:
            probs = probs_u.detach().float()
        max_p, pseudo = probs.max(dim=1)
        if per_class:
            mask = (max_p >= threshold.to(max_p.device, max_p.dtype)[pseudo]).float()
        else:
            mask = (max_p >= threshold).float()
    if logits_u_strong.shape[0]:
        loss_u = (F.cross_entropy(logits_u_strong.float(), pseudo, reduction="none") * mask).mean()
    else:
        loss_u = logits_x.new_zeros(())
    loss = loss_x + lambda_u * loss_u
    stats = {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(),
             "mask": mask.mean() if mask.numel() else mask.new_zeros(()), "pseudo_labels": pseudo,
             "confident": mask.bool()}
    return loss, stats


# ----------------------------------------------------------------------------------------------------------
# MixMatch (Berthelot et al. 2019): sharpen, MixUp, the loss and its ramp-up
# ----------------------------------------------------------------------------------------------------------
def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch's sharpening (Berthelot et al. 2019, eq. 7): ``Sharpen(p, T)_i = p_i^(1/T) / sum_j p_j^(1/T)``.

    Computed as ``softmax(log(p) / T)`` (the same value, without underflow at small ``T``).

    Args:
        p: ``(..., C)`` probabilities (non-negative, each row with a positive entry).
        temperature: ``T > 0`` (0.5 in MixMatch); ``T -> 0`` tends to one-hot, ``T = 1`` returns ``p``.

    Returns:
        ``(..., C)`` probabilities summing to 1 along the last dimension.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return torch.softmax(torch.log(p) / temperature, dim=-1)


def mixup(x: torch.Tensor, y: torch.Tensor, lam, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's MixUp (Berthelot et al. 2019, eqs. 8-11): each sample mixed with a partner, the larger weight
    on itself.

    ``lam' = max(lam, 1 - lam)``, ``x' = lam' x + (1 - lam') x[perm]``, ``y' = lam' y + (1 - lam') y[perm]``.
    With ``x`` the concatenation of the labelled batch and the unlabelled views and ``perm`` a permutation of
    all of them, this is Alg. 1's ``W = Shuffle(Concat(X^, U^))``, lines 12-13.

    Args:
        x: ``(N, ...)`` inputs.
        y: ``(N, C)`` targets (one-hot labels, sharpened guesses).
        lam: ``lambda ~ Beta(alpha, alpha)``: a float or a 0-d tensor (one for the batch) or an ``(N,)`` tensor
            (one per sample, as the reference code's ``MixMode``); values in ``[0, 1]``.
        perm: ``(N,)`` int64 index of each sample's partner.

    Returns:
        ``(x', y')`` of the shapes of ``x`` and ``y``.
    """
    n = x.shape[0]
    if y.ndim != 2 or y.shape[0] != n:
        raise ValueError(f"y must be (N, C) with N = {n}, got shape {tuple(y.shape)}")
    if perm.shape != (n,):
        raise ValueError(f"perm must have shape ({n},), got {tuple(perm.shape)}")
    lam = torch.as_tensor(lam, dtype=x.dtype, device=x.device)
    if lam.ndim not in (0, 1) or (lam.ndim == 1 and lam.shape[0] != n):
        raise ValueError(f"lam must be a scalar or have shape ({n},), got shape {tuple(lam.shape)}")
    if bool(((lam < 0) | (lam > 1)).any()):
        raise ValueError(f"lam must be in [0, 1], got {lam.tolist()}")
    lam = torch.maximum(lam, 1 - lam)
    lx = lam.reshape(-1, *([1] * (x.ndim - 1))) if lam.ndim else lam
    ly = lam.reshape(-1, 1).to(y.dtype) if lam.ndim else lam.to(y.dtype)
    return lx * x + (1 - lx) * x[perm], ly * y + (1 - ly) * y[perm]


def linear_rampup(step: int, length: int) -> float:
    """``min(step / length, 1)``: MixMatch's linear ramp-up of ``lambda_u`` (1 throughout when ``length`` is 0)."""
    if length < 0 or step < 0:
        raise ValueError(f"step and length must be >= 0, got step={step}, length={length}")
    return 1.0 if length == 0 else min(step / length, 1.0)


def mixmatch_loss(
    logits_x: torch.Tensor,
    targets_x: torch.Tensor,
    logits_u: torch.Tensor,
    targets_u: torch.Tensor,
    *,
    weight: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MixMatch's loss (Berthelot et al. 2019, eqs. 2-5): ``L_X + weight * L_U`` on the mixed batches.

    ``L_X = mean_b H(p_b, softmax(logits_x_b))`` (cross-entropy with the soft mixed targets ``p``);
    ``L_U = 1/(C |U'|) sum_b ||q_b - softmax(logits_u_b)||^2`` (squared L2, averaged over samples AND the
    ``C`` classes, eq. 4 and the reference code's ``reduce_mean``). The targets are constants (no gradient).

    Args:
        logits_x: ``(B, C)`` logits of the mixed labelled batch ``X'``.
        targets_x: ``(B, C)`` its mixed targets.
        logits_u: ``(K B, C)`` logits of the mixed unlabelled batch ``U'``.
        targets_u: ``(K B, C)`` its mixed targets (sharpened guesses mixed with labels and guesses).
        weight: ``lambda_u`` at this step, ramp-up included (:func:`linear_rampup`).

    Returns:
        ``(loss, stats)``; ``stats`` holds detached ``loss_x`` and ``loss_u``.
    """
    if logits_x.shape != targets_x.shape or logits_u.shape != targets_u.shape:
        raise ValueError(f"logits and targets differ in shape: {tuple(logits_x.shape)} vs {tuple(targets_x.shape)}, "
                         f"{tuple(logits_u.shape)} vs {tuple(targets_u.shape)}")
    targets_x, targets_u = targets_x.detach().float(), targets_u.detach().float()
    loss_x = -(targets_x * F.log_softmax(logits_x.float(), dim=1)).sum(dim=1).mean()
    if logits_u.shape[0]:
        loss_u = (torch.softmax(logits_u.float(), dim=1) - targets_u).square().mean()
    else:
        loss_u = loss_x.new_zeros(())
    loss = loss_x + weight * loss_u
    return loss, {"loss_x": loss_x.detach(), "loss_u": loss_u.detach()}


# ----------------------------------------------------------------------------------------------------------
# CoMatch (Li, Xiong & Hoi 2021)
# ----------------------------------------------------------------------------------------------------------
_COMATCH_LOG_EPS = 1e-7  # the reference's log(p + 1e-7) in the contrastive loss


def comatch_memory_smoothing(
    probs: torch.Tensor,
    feats: torch.Tensor,
    bank_feats: torch.Tensor,
    bank_probs: torch.Tensor,
    *,
    alpha: float = 0.9,
    temperature: float = 0.2,
) -> torch.Tensor:
    """CoMatch's memory-smoothed pseudo-labels (Li, Xiong & Hoi 2021, Sec. 3, memory-smoothed pseudo-labeling)::

        q_b = alpha p_b + (1 - alpha) sum_k a_bk q_k,   a_bk = exp(z_b . z_k / t) / sum_k' exp(z_b . z_k' / t)

    over the ``K`` entries ``(z_k, q_k)`` of the memory bank (weak-view embeddings and class probabilities of past
    samples). ``a_b`` is computed as a softmax (the reference's ``exp`` then row division, without overflow).

    Args:
        probs: ``(n, C)`` class probabilities ``p_b`` of the weak views (distribution-aligned), rows summing to 1.
        feats: ``(n, D)`` their L2-normalised embeddings ``z_b``.
        bank_feats: ``(K, D)`` L2-normalised embeddings ``z_k`` of the bank, ``K >= 1``.
        bank_probs: ``(K, C)`` their class probabilities ``q_k`` (one-hot labels for labelled samples).
        alpha: weight of the sample's own prediction, in [0, 1] (0.9).
        temperature: ``t > 0`` (0.2).

    Returns:
        ``(n, C)`` smoothed pseudo-labels ``q_b`` (rows sum to 1 when the inputs' rows do), float32.
    """
    if probs.ndim != 2 or feats.ndim != 2 or probs.shape[0] != feats.shape[0]:
        raise ValueError(f"probs (n, C) and feats (n, D) must have the same n, got {tuple(probs.shape)} and "
                         f"{tuple(feats.shape)}")
    if bank_feats.ndim != 2 or bank_feats.shape[0] < 1 or bank_feats.shape[1] != feats.shape[1]:
        raise ValueError(f"bank_feats must be (K >= 1, {feats.shape[1]}), got {tuple(bank_feats.shape)}")
    if bank_probs.shape != (bank_feats.shape[0], probs.shape[1]):
        raise ValueError(f"bank_probs must be ({bank_feats.shape[0]}, {probs.shape[1]}), got {tuple(bank_probs.shape)}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = torch.softmax(feats.float() @ bank_feats.float().T / temperature, dim=1)  # (n, K)
    return alpha * probs.float() + (1.0 - alpha) * (a @ bank_probs.float())


def comatch_pseudo_label_graph(q: torch.Tensor, *, threshold: float = 0.8) -> torch.Tensor:
    """CoMatch's pseudo-label graph with self-loops, row-normalised (Li, Xiong & Hoi 2021, Sec. 3, pseudo-label graph)::

        W_bj = 1 if b == j;  q_b . q_j if b != j and q_b . q_j >= threshold;  0 otherwise
        W^_bj = W_bj / sum_j' W_bj'

    Args:
        q: ``(n, C)`` pseudo-labels (class probabilities).
        threshold: ``T`` in [0, 1] (0.8); the self-loop always stays.

    Returns:
        ``(n, n)`` float32 target graph, rows summing to 1.
    """
    if q.ndim != 2 or q.shape[0] < 1:
        raise ValueError(f"q must be (n >= 1, C), got {tuple(q.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    w = q.float() @ q.float().T
    w.fill_diagonal_(1.0)
    w = w * (w >= threshold)
    return w / w.sum(dim=1, keepdim=True)


def comatch_contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, graph: torch.Tensor, *,
                             temperature: float = 0.2) -> torch.Tensor:
    """CoMatch's graph-contrastive loss (Li, Xiong & Hoi 2021, Sec. 3, graph contrastive learning): the
    cross-entropy from the target graph to the embedding graph, averaged over the ``n`` samples::

        W^z_bj = exp(z_b . z'_j / t) / sum_j' exp(z_b . z'_j' / t),   L_c = -1/n sum_b sum_j graph_bj log W^z_bj

    with ``z`` and ``z'`` the projections of two strong views (row ``b`` of each is sample ``b``), so the diagonal
    pairs the two views of a sample. As the reference code, the similarity matrix is the one between the two views
    and the log is ``log(W^z + 1e-7)``.

    Args:
        z1, z2: ``(n, D)`` L2-normalised projections of the two views (as the projection head returns them).
        graph: ``(n, n)`` target, rows summing to 1 (:func:`comatch_pseudo_label_graph`); no gradient flows to it.
        temperature: ``t > 0`` (0.2).

    Returns:
        Scalar loss tensor.
    """
    if z1.shape != z2.shape or z1.ndim != 2 or z1.shape[0] < 1:
        raise ValueError(f"z1 and z2 must have the same (n >= 1, D) shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if graph.shape != (z1.shape[0], z1.shape[0]):
        raise ValueError(f"graph must be ({z1.shape[0]}, {z1.shape[0]}), got {tuple(graph.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    sim = torch.softmax(z1.float() @ z2.float().T / temperature, dim=1)
    return -(graph.detach().float() * torch.log(sim + _COMATCH_LOG_EPS)).sum(dim=1).mean()


def comatch_loss(
    logits_x: torch.Tensor,
    targets_x: torch.Tensor,
    logits_u_strong: torch.Tensor,
    z_strong_0: torch.Tensor,
    z_strong_1: torch.Tensor,
    pseudo_probs: torch.Tensor,
    *,
    threshold: float = 0.95,
    lambda_u: float = 1.0,
    lambda_c: float = 1.0,
    contrast_threshold: float = 0.8,
    temperature: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """CoMatch's loss (Li, Xiong & Hoi 2021, Sec. 3): ``L_x + lambda_u L_u + lambda_c L_c``.

    ``L_x = mean_b H(y_b, p(x_b))`` over the labelled batch; ``L_u = 1/(mu B) sum_b 1(max q_b >= threshold)
    H(q_b, p(strong_0(u_b)))`` with the SOFT memory-smoothed pseudo-label ``q_b`` as the target, divided by the whole
    unlabelled batch; ``L_c`` = :func:`comatch_contrastive_loss` of the two strong views' projections against
    :func:`comatch_pseudo_label_graph` of ``q``.

    Args:
        logits_x: ``(B, C)`` logits of the weakly augmented labelled batch; ``targets_x``: ``(B,)`` int64 labels.
        logits_u_strong: ``(n, C)`` logits of the first strong view of the unlabelled batch.
        z_strong_0, z_strong_1: ``(n, D)`` L2-normalised projections of the two strong views.
        pseudo_probs: ``(n, C)`` pseudo-labels ``q`` (:func:`comatch_memory_smoothing`; no gradient flows to them).
        threshold, lambda_u, lambda_c, contrast_threshold, temperature: see :class:`uslkit.train.config.CoMatchConfig`.

    Returns:
        ``(loss, stats)``; ``stats`` holds detached ``loss_x``, ``loss_u``, ``loss_c``, ``mask`` (share of confident
        unlabelled samples), ``edges`` (mean edges per node of the pseudo-label graph, self-loop included),
        ``pseudo_labels`` ``(n,)`` (argmax q) and ``confident`` ``(n,)`` bool.
    """
    q = pseudo_probs.detach().float()
    if q.shape != logits_u_strong.shape:
        raise ValueError(f"pseudo_probs and logits_u_strong differ in shape: {tuple(q.shape)} vs "
                         f"{tuple(logits_u_strong.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    loss_x = F.cross_entropy(logits_x.float(), targets_x)
    max_q, pseudo = q.max(dim=1)
    mask = (max_q >= threshold).float()
    loss_u = (-(q * F.log_softmax(logits_u_strong.float(), dim=1)).sum(dim=1) * mask).mean()
    graph = comatch_pseudo_label_graph(q, threshold=contrast_threshold)
    loss_c = comatch_contrastive_loss(z_strong_0, z_strong_1, graph, temperature=temperature)
    loss = loss_x + lambda_u * loss_u + lambda_c * loss_c
    stats = {"loss_x": loss_x.detach(), "loss_u": loss_u.detach(), "loss_c": loss_c.detach(), "mask": mask.mean(),
             "edges": (graph > 0).float().sum(dim=1).mean(), "pseudo_labels": pseudo, "confident": mask.bool()}
    return loss, stats


# ----------------------------------------------------------------------------------------------------------
# USL-T (Wang, Lian & Yu 2022, sec. 2.3): global and local losses, the EMA of cluster probabilities
# ----------------------------------------------------------------------------------------------------------
_USL_T_REWEIGHT = ("none", "inverse", "balanced")
_USL_T_NORMALIZE = ("confident", "batch")


def usl_t_global_loss(
    logits_weak: torch.Tensor,
    logits_strong: torch.Tensor,
    *,
    threshold: float = 0.95,
    reweight: str = "inverse",
    normalize: str = "confident",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """USL-T's global loss (Wang, Lian & Yu 2022, eq. 10) with the reference code's class re-weighting.

    Hard pseudo-label ``y_i = argmax softmax(weak_i)`` (no gradient), kept where ``max softmax(weak_i) >=
    threshold``; ``D_KL(onehot(y_i) || softmax(strong_i))`` is the cross-entropy ``ce_i = -log
    softmax(strong_i)[y_i]``. With ``n_c`` the confident samples of cluster ``c`` and ``n = sum_c n_c``::

        loss = sum_{i confident} w_{y_i} ce_i / D
        w_c = 1 ("none"), n / n_c ("inverse"), n / (|{c: n_c > 0}| n_c) ("balanced")
        D   = sum_{i confident} w_{y_i} ("confident")  or  B, the batch size ("batch", eq. 10's 1/n)

    ``"confident"`` + ``"inverse"`` is the reference's CIFAR-10 setting (``REWEIGHT``, ``MEAN_OUTSIDE_MASK:
    False``): the mean over the present clusters of each cluster's mean ``ce`` ("inverse" and "balanced" are
    equal there). ``"batch"`` + ``"none"`` is eq. 10 as printed and the reference's ImageNet setting;
    ``"balanced"`` is its ``REWEIGHT_RENORM`` (ImageNet-100). The paper's text has no re-weighting. Deviation:
    the reference keeps ``max > threshold``, eq. 10 (and this function) ``>=``. No confident sample: 0.

    Args:
        logits_weak: ``(B, K)`` logits of the un-augmented view (detached here).
        logits_strong: ``(B, K)`` logits of the strongly augmented view of the same images.
        threshold: confidence ``tau`` in ``[0, 1]`` (0.95 CIFAR, 0 ImageNet).
        reweight: ``"none"``, ``"inverse"`` or ``"balanced"``.
        normalize: ``"confident"`` or ``"batch"``.

    Returns:
        ``(loss, stats)``; ``stats``: detached ``mask`` (share of confident samples), ``pseudo_labels``
        ``(B,)`` int64 and ``confident`` ``(B,)`` bool.
    """
    if logits_weak.shape != logits_strong.shape or logits_weak.ndim != 2:
        raise ValueError(f"weak and strong logits must have the same (B, K) shape, got {tuple(logits_weak.shape)} "
                         f"and {tuple(logits_strong.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if reweight not in _USL_T_REWEIGHT:
        raise ValueError(f"reweight must be one of {_USL_T_REWEIGHT}, got {reweight!r}")
    if normalize not in _USL_T_NORMALIZE:
        raise ValueError(f"normalize must be one of {_USL_T_NORMALIZE}, got {normalize!r}")
    b, k = logits_weak.shape
    with torch.no_grad():
        max_p, pseudo = torch.softmax(logits_weak.detach().float(), dim=1).max(dim=1)
        confident = max_p >= threshold
        counts = torch.bincount(pseudo[confident], minlength=k).float()
        n = counts.sum()
        weight = torch.ones(k, device=logits_weak.device)
        present = counts > 0
        if reweight != "none" and n > 0:
            weight[present] = n / counts[present]
            if reweight == "balanced":
                weight[present] /= present.sum()
        w = weight[pseudo] * confident.float()  # (B,): 0 outside the confident samples
    ce = F.cross_entropy(logits_strong.float(), pseudo, reduction="none")
    denom = w.sum() if normalize == "confident" else torch.tensor(float(b), device=w.device)
    if n == 0:
        loss = logits_strong.float().sum() * 0.0  # keeps the graph (DDP) with a zero gradient
    else:
        loss = (w * ce).sum() / denom
    stats = {"mask": confident.float().mean(), "pseudo_labels": pseudo, "confident": confident}
    return loss, stats


def usl_t_local_loss(
    logits_anchor: torch.Tensor,
    logits_neighbour: torch.Tensor,
    prob_ema: torch.Tensor,
    *,
    alpha: float = 5.0,
    temperature: float = 0.25,
) -> torch.Tensor:
    """USL-T's local loss (Wang, Lian & Yu 2022, eqs. 11, 13, 14): ``D_KL(P(z', z_bar, t) || softmax(z))``.

    ``P(z', z_bar, t) = softmax((z' - alpha log z_bar) / t)`` is the neighbour's logits ``z'`` adjusted by the
    EMA ``z_bar`` of cluster probabilities (eq. 11, against one-cluster collapse) and sharpened with temperature
    ``t`` (eq. 13, against the even-distribution collapse), without gradient; ``z`` are the anchor's logits.
    Averaged over the batch (``F.kl_div(..., reduction="batchmean")``, as the reference ``OursLossLocal``, which
    sharpens ``softmax(z' - alpha log z_bar)`` as ``p^(1/t) / sum p^(1/t)``: the same distribution).

    Args:
        logits_anchor: ``(B, K)`` anchor logits (the strongly augmented view, as the reference).
        logits_neighbour: ``(B, K)`` logits of one kNN neighbour of each anchor (detached here).
        prob_ema: ``(K,)`` positive EMA of the neighbours' cluster probabilities (:func:`usl_t_prob_ema`).
        alpha: adjustment ``alpha >= 0`` (5 CIFAR, 2.5 ImageNet).
        temperature: sharpening ``t > 0`` (0.25 CIFAR, 0.5 ImageNet).

    Returns:
        Scalar loss.
    """
    if logits_anchor.shape != logits_neighbour.shape or logits_anchor.ndim != 2:
        raise ValueError(f"anchor and neighbour logits must have the same (B, K) shape, got "
                         f"{tuple(logits_anchor.shape)} and {tuple(logits_neighbour.shape)}")
    if prob_ema.shape != (logits_anchor.shape[1],):
        raise ValueError(f"prob_ema must have shape ({logits_anchor.shape[1]},), got {tuple(prob_ema.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    with torch.no_grad():
        adjusted = logits_neighbour.detach().float() - alpha * torch.log(prob_ema.float()).view(1, -1)
        target = torch.softmax(adjusted / temperature, dim=1)
    return F.kl_div(F.log_softmax(logits_anchor.float(), dim=1), target, reduction="batchmean")


def usl_t_prob_ema(prob_ema: torch.Tensor, batch_mean: torch.Tensor, *, mu: float = 0.5) -> torch.Tensor:
    """One update of USL-T's EMA of cluster probabilities (Wang, Lian & Yu 2022, eq. 12 / appendix eq. 42).

    ``z_bar <- (mu batch_mean + (1 - mu) z_bar) / sum(...)``, ``batch_mean`` = the batch mean of the neighbours'
    ``softmax`` (the reference's ``positives_original_prob.mean(0)``, unadjusted). ``mu`` is eq. 12's weight of
    the new batch (0.5; the reference's ``momentum`` is ``1 - mu``, the same at 0.5); the renormalisation is the
    reference's. Shapes ``(K,)`` or ``(H, K)`` (rows normalised). Returns a new tensor.
    """
    if prob_ema.shape != batch_mean.shape:
        raise ValueError(f"prob_ema and batch_mean differ in shape: {tuple(prob_ema.shape)} vs "
                         f"{tuple(batch_mean.shape)}")
    if not 0.0 < mu <= 1.0:
        raise ValueError(f"mu must be in (0, 1], got {mu}")
    new = mu * batch_mean.to(prob_ema.dtype) + (1.0 - mu) * prob_ema
    return new / new.sum(dim=-1, keepdim=True)
