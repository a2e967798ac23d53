"""Optimisers the learners share: LARS (SimCLR's large-batch optimiser) and the parameter groups it needs.

LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg, "Large batch training of convolutional
networks", 2017, Algorithm 1), in the form of SimCLR's reference implementation (Chen et al., ICML 2020,
appendix B.1; ``lars_optimizer.py`` of google-research/simclr), per parameter tensor ``w`` with gradient ``g``:

    g     <- g + weight_decay * w                                  (decoupled from the adaptation)
    ratio  = eta * ||w|| / ||g||   if ||w|| > 0 and ||g|| > 0,  else 1   (only for "adapted" tensors)
    v     <- momentum * v + lr * ratio * g
    w     <- w - v                       (Nesterov: w <- w - (momentum * v + lr * ratio * g))

``eta`` is the trust coefficient (SimCLR: 0.001). SimCLR excludes biases and BatchNorm parameters from both
the weight decay and the adaptation (they take plain momentum SGD steps); :func:`lars_groups` builds those
two groups. SimCLR's ImageNet recipe: batch 4096, ``lr = 0.3 * batch / 256`` (4.8), weight decay 1e-6,
momentum 0.9, 10 warm-up epochs then cosine decay.
"""

from __future__ import annotations

import torch

__all__ = ["LARS", "lars_groups"]


class LARS(torch.optim.Optimizer):
    """LARS with momentum (see the module docstring for the update).

    Args:
        params: tensors or param groups; a group may set ``adapt=False`` (no trust ratio: plain momentum SGD,
            SimCLR's treatment of biases and BN) and its own ``weight_decay``.
        lr: learning rate (the loop's schedule overwrites ``group["lr"]`` each step).
        momentum: heavy-ball momentum in [0, 1).
        weight_decay: L2 coefficient added to the gradient before the trust ratio.
        eta: trust coefficient (> 0).
        nesterov: Nesterov momentum.
    """

    def __init__(self, params, lr: float, *, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 0.001,
                 nesterov: bool = False):
        if not lr >= 0:
            raise ValueError(f"LARS: lr must be >= 0, got {lr!r}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"LARS: momentum must be in [0, 1), got {momentum!r}")
        if not weight_decay >= 0:
            raise ValueError(f"LARS: weight_decay must be >= 0, got {weight_decay!r}")
        if not eta > 0:
            raise ValueError(f"LARS: eta (trust coefficient) must be > 0, got {eta!r}")
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                                      nesterov=bool(nesterov), adapt=True))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mom, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["eta"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                g = p.grad.float()
                w = p.detach().float()
                if wd:
                    g = g.add(w, alpha=wd)
                scale = lr
                if group["adapt"]:
                    w_norm, g_norm = torch.linalg.vector_norm(w), torch.linalg.vector_norm(g)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), eta * w_norm / g_norm,
                                        torch.ones_like(w_norm))
                    g = g.mul(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(w)
                v = state["momentum_buffer"]
                v.mul_(mom).add_(g, alpha=scale)
                update = v.mul(mom).add(g, alpha=scale) if group["nesterov"] else v
                p.sub_(update.to(p.dtype))
        return loss


def lars_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """SimCLR's LARS groups: weights (``ndim > 1``) with ``weight_decay`` and the trust ratio; biases and
    BatchNorm parameters (``ndim <= 1``) with neither. Frozen parameters are left out."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay, "adapt": True},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "adapt": False}]
