"""Losses of the training core: SimCLR's NT-Xent and FixMatch's supervised + pseudo-label loss.

Pure functions of tensors; no state, no randomness.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["nt_xent", "fixmatch_loss"]


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
    threshold: float = 0.95,
    lambda_u: float = 1.0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """FixMatch's loss (Sohn et al. 2020, eqs. 2-4): ``l_s + lambda_u * l_u``.

    ``l_s = mean_b H(y_b, p(x_b))`` over the labelled batch (weakly augmented);
    ``l_u = 1/(mu B) sum_b 1(max q_b >= threshold) H(argmax q_b, p(strong(u_b)))`` with
    ``q_b = softmax(weak logits / temperature)`` computed without gradient (a hard pseudo-label). As in the
    paper, ``l_u`` is divided by the whole unlabelled batch size, not by the number of confident samples.

    Args:
        logits_x: ``(B, C)`` logits of the weakly augmented labelled batch.
        targets_x: ``(B,)`` int64 labels in ``[0, C)``.
        logits_u_weak: ``(mu B, C)`` logits of the weak views of the unlabelled batch (detached here).
        logits_u_strong: ``(mu B, C)`` logits of the strong views of the same images.
        threshold: confidence ``tau`` (0.95 in FixMatch).
        lambda_u: weight of the unlabelled loss (1 in FixMatch).
        temperature: of the pseudo-label softmax (1 in FixMatch; only matters for the threshold).

    Returns:
        ``(loss, stats)``; ``stats`` holds detached ``loss_x``, ``loss_u``, ``mask`` (share of confident
        unlabelled samples), ``pseudo_labels`` ``(mu B,)`` and ``confident`` ``(mu B,)`` bool (the mask).
    """
    if logits_u_weak.shape != logits_u_strong.shape:
        raise ValueError(f"weak and strong logits differ in shape: {tuple(logits_u_weak.shape)} vs "
                         f"{tuple(logits_u_strong.shape)}")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    loss_x = F.cross_entropy(logits_x.float(), targets_x)
    with torch.no_grad():
        probs = torch.softmax(logits_u_weak.detach().float() / temperature, dim=1)
        max_p, pseudo = probs.max(dim=1)
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
