"""MoCo v2 self-supervised pretraining (Chen, Fan, Girshick & He 2020; MoCo: He et al. 2020, Alg. 1).

Each image gives two views of the kit's ``"simclr"`` policy (:func:`uslkit.train.augment.simclr_transform`:
crops, flip, colour jitter ``(0.4, 0.4, 0.4, 0.1)`` at the default strength, grayscale, and the Gaussian blur
on ImageNet-size images, i.e. MoCo v2's augmentation). The query encoder (``net`` + ``head_q``, the MLP
``Linear(f, f) -> ReLU -> Linear(f, 128)`` of MoCo v2, no BN) embeds view 1; the key encoder (``key``: a copy of
both, never trained by gradients) embeds view 2 without gradient, after its momentum update
``theta_k <- m theta_k + (1 - m) theta_q`` (the reference code's order: update, then keys). With ``q, k`` the
L2-normalised embeddings and the queue of the last ``K`` keys, the loss is InfoNCE (He et al. 2020, eq. 1)::

    logits = [q . k+, q . queue^T] / tau  (B, 1 + K),      loss = cross_entropy(logits, 0)

then the batch's keys replace the oldest ones of the queue. SGD (momentum 0.9, decay 1e-4 on every trained
parameter as the reference), ``lr = 0.03 * batch_size / 256``, cosine decay without warm-up (MoCo v2's ``--cos``).
``symmetric=True`` adds the loss of view 2's queries against view 1's keys (the MoCo CIFAR demo's option).

State: the key encoder, the queue and its pointer are parameters / buffers of child modules of
:class:`MoCoModule`, so :func:`uslkit.train.loop.run_loop` checkpoints them and a resumed run ends where an
uninterrupted one does. Under DDP every process enqueues the keys of all processes (gathered in the
single-process row order, :func:`uslkit.train.distributed.gather_rows`), so the queues stay identical.

Deviations from the reference (``facebookresearch/moco``, ``main_moco.py --mlp --moco-t 0.2 --aug-plus --cos``):

- No Shuffling BN. The key encoder's BN uses the statistics of the process's own key batch (on one process,
  the whole batch, as a one-GPU run of the reference, where its shuffle is a no-op). The reference shuffles
  the key batch across GPUs so that a query and its key are normalised over different samples, and the
  authors' CIFAR demo emulates this on one GPU with SplitBatchNorm (8 splits), reporting that CIFAR runs
  without it lose about 4 points at 800 epochs; the kit does neither, on one process or under DDP.
- The queue takes any size: keys are written at ``ptr, ptr + 1, ...`` modulo ``K`` (the reference requires
  ``K % batch_size == 0`` and writes one contiguous block).
- The cosine schedule is evaluated at every step (the reference sets the learning rate once per epoch).

The trained encoder is ``result.net`` (and ``out_dir/model.pt``), the QUERY encoder, the one MoCo's linear
protocol evaluates; ``uslkit.embed`` reads it as ``encoder="ckpt:<out_dir>/model.pt"``. Hyperparameters:
:class:`uslkit.train.config.MoCoConfig` (presets ``"paper"``, ``"cifar"``, ``"cpu"``).
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels
from .config import MoCoConfig, resolve_config, split_settings
from .distributed import gather_rows
from .loop import RunSettings, TrainResult, cosine_lr, run_loop
from .models import build_model

__all__ = ["MOCO_PRESETS", "MoCoConfig", "MoCoModule", "MoCoQueue", "moco_logits", "momentum_update", "enqueue",
           "train_moco"]

#: the presets, name -> :class:`MoCoConfig` (``MoCoConfig.PRESETS``).
MOCO_PRESETS = MoCoConfig.PRESETS


# ----------------------------------------------------------------------------------------------------------
# the pieces of Alg. 1
# ----------------------------------------------------------------------------------------------------------
def moco_logits(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """MoCo's logits ``[q_b . k_b, q_b . queue_j] / tau`` (He et al. 2020, eq. 1 and Alg. 1).

    Args:
        q: queries ``(B, D)``; k: their positive keys ``(B, D)``; queue: negative keys ``(K, D)``. All
            L2-normalised by the caller (not checked).
        temperature: ``tau > 0``.

    Returns:
        ``(B, 1 + K)``: column 0 the positive, then the queue's rows in order; the loss is
        ``cross_entropy(logits, 0)``.
    """
    if q.ndim != 2 or k.shape != q.shape or queue.ndim != 2 or queue.shape[1] != q.shape[1]:
        raise ValueError(f"moco_logits needs q and k (B, D) and queue (K, D), got {tuple(q.shape)}, "
                         f"{tuple(k.shape)} and {tuple(queue.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    pos = (q * k).sum(dim=1, keepdim=True)
    neg = q @ queue.to(q.dtype).T
    return torch.cat([pos, neg], dim=1) / temperature


@torch.no_grad()
def momentum_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """``theta_t <- m theta_t + (1 - m) theta_o`` for every parameter, in place on ``target`` (He et al. 2020,
    eq. 2). Buffers (BN running statistics) are left alone, as the reference's update, which zips
    ``parameters()`` only. ``target`` and ``online`` must have the same parameter names and shapes."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    tp, op = dict(target.named_parameters()), dict(online.named_parameters())
    if tp.keys() != op.keys() or any(tp[n].shape != op[n].shape for n in tp):
        raise ValueError("momentum_update needs two modules of the same architecture (parameter names and shapes "
                         "differ)")
    for name, t in tp.items():
        t.mul_(m).add_(op[name].detach(), alpha=1.0 - m)


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: int, keys: torch.Tensor) -> int:
    """Write ``keys`` ``(n, D)`` into ``queue`` ``(K, D)`` rows ``ptr, ptr + 1, ...`` modulo ``K`` (in place),
    overwriting the oldest keys, and return the next pointer ``(ptr + n) % K``.

    Any ``n`` works (the reference needs ``K % n == 0``); with ``n > K`` only the last ``K`` keys stay, as if
    written one by one."""
    size = queue.shape[0]
    if keys.ndim != 2 or keys.shape[1] != queue.shape[1]:
        raise ValueError(f"enqueue needs keys (n, {queue.shape[1]}), got {tuple(keys.shape)}")
    ptr = int(ptr)
    if not 0 <= ptr < size:
        raise ValueError(f"ptr must be in [0, {size}), got {ptr}")
    n = keys.shape[0]
    keep = min(n, size)
    slots = (ptr + n - keep + torch.arange(keep, device=queue.device)) % size
    queue[slots] = keys[n - keep:].to(device=queue.device, dtype=queue.dtype)
    return (ptr + n) % size


# ----------------------------------------------------------------------------------------------------------
# the module
# ----------------------------------------------------------------------------------------------------------
class MoCoQueue(nn.Module):
    """The queue of negative keys: buffers ``keys`` ``(size, dim)`` (L2-normalised rows, oldest overwritten
    first) and ``ptr`` (the next row to write, int64 scalar). Starts as normalised Gaussian rows drawn from
    torch's global RNG (the reference's ``normalize(randn(dim, K))``; the caller seeds it)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.int64))

    @torch.no_grad()
    def push(self, keys: torch.Tensor) -> None:
        """:func:`enqueue` ``keys`` ``(n, dim)`` and advance ``ptr``."""
        self.ptr.fill_(enqueue(self.keys, int(self.ptr), keys))


class _Encoder(nn.Module):
    """The key encoder: ``net`` + ``head``; ``forward(x)`` returns L2-normalised ``(B, proj_dim)``."""

    def __init__(self, net: nn.Module, head: nn.Module):
        super().__init__()
        self.net, self.head = net, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.net.features(x)), dim=1)


class MoCoModule(nn.Module):
    """``net`` (query encoder, exported) + ``head_q`` (MLP) + ``key`` (momentum copy of both, no gradients) +
    ``queue`` (:class:`MoCoQueue`).

    ``forward(x1, x2)`` runs one step of Alg. 1 and returns the logits, a list of ``(B, 1 + K)`` tensors (one;
    two when ``symmetric``): momentum-update ``key``, queries of ``x1`` and keys of ``x2`` (and the swap), logits
    against the queue as it was before this step, then enqueue the keys of all processes. ``key`` and ``queue``
    are checkpointed in ``state.pt`` but left out of ``model.pt``.
    """

    NOT_EXPORTED = ("key", "queue")

    def __init__(self, net: nn.Module, *, proj_dim: int = 128, hidden: int | None = None, queue_size: int = 65536,
                 key_momentum: float = 0.999, temperature: float = 0.2, symmetric: bool = False):
        super().__init__()
        self.net = net
        f = net.feat_dim
        hidden = hidden or f
        self.head_q = nn.Sequential(nn.Linear(f, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, proj_dim))
        self.key = _Encoder(copy.deepcopy(net), copy.deepcopy(self.head_q))
        for p in self.key.parameters():
            p.requires_grad_(False)
        self.queue = MoCoQueue(queue_size, proj_dim)
        self.key_momentum, self.temperature, self.symmetric = float(key_momentum), float(temperature), symmetric

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised query embeddings ``(B, proj_dim)``."""
        return F.normalize(self.head_q(self.net.features(x)), dim=1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            momentum_update(self.key.net, self.net, self.key_momentum)
            momentum_update(self.key.head, self.head_q, self.key_momentum)
            k2 = self.key(x2)
            k1 = self.key(x1) if self.symmetric else None
        queue = self.queue.keys.clone()  # the enqueue below writes in place; autograd keeps this copy
        logits = [moco_logits(self.query(x1), k2, queue, self.temperature)]
        keys = [k2]
        if self.symmetric:
            logits.append(moco_logits(self.query(x2), k1, queue, self.temperature))
            keys = [k1, k2]  # the demo's cat([k1, k2])
        self.queue.push(torch.cat([gather_rows(k) for k in keys]))
        return logits


# ----------------------------------------------------------------------------------------------------------
# the learner
# ----------------------------------------------------------------------------------------------------------
def train_moco(
    dataset,
    config: MoCoConfig | None = None,
    *,
    preset: str | None = None,
    eval_sets=None,
    arch_kwargs: dict | None = None,
    batched_augment: bool | None = None,
    **kwargs,
) -> TrainResult:
    """Pretrain an encoder with MoCo v2 on the images of ``dataset`` (labels are never read).

    Args:
        dataset: :class:`uslkit.data.ImageDataset` (its labels are ignored).
        config: a :class:`MoCoConfig` (default: its defaults, or the preset).
        preset: a key of ``MoCoConfig.PRESETS`` instead of ``config``.
        **kwargs: fields of :class:`MoCoConfig` (``steps=``, ``epochs=``, ``queue_size=``, ...), each one given
            replacing the config's value (giving ``steps`` clears the config's ``epochs`` and vice versa), and run
            settings (``seed``, ``out_dir``, ...: :class:`uslkit.train.loop.RunSettings`).
        eval_sets: optional ``(train_set, test_set)`` with labels: kNN accuracy of the query encoder's features
            (1-NN cosine and weighted 10-NN) is logged at each evaluation; only used for monitoring.
        arch_kwargs: extra :func:`uslkit.train.models.build_model` arguments.
        batched_augment: see :class:`uslkit.train.batches.Views` (``None``: batched for small in-memory images).

    Returns:
        :class:`uslkit.train.loop.TrainResult` (``net``: the query encoder; ``extras``: ``head_q``, ``key``,
        ``queue``). The history logs ``loss`` and ``acc``, the fraction of queries whose positive key has the
        largest logit (the reference's Acc@1).
    """
    overrides, run = split_settings(MoCoConfig, kwargs)
    cfg = resolve_config(MoCoConfig, config, preset, overrides)
    n, batch_size = len(dataset), cfg.batch_size
    steps = cfg.steps_for(n)
    settings = RunSettings(steps=steps, **run)
    seed, num_workers = settings.seed, settings.num_workers
    lr = float(cfg.lr if cfg.lr is not None else 0.03 * batch_size / 256)
    momentum, weight_decay = cfg.momentum, cfg.weight_decay
    kind = image_kind(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, 0, in_channels=image_channels(dataset), **(arch_kwargs or {}))
        module = MoCoModule(net, proj_dim=cfg.proj_dim, hidden=cfg.proj_hidden, queue_size=cfg.queue_size,
                            key_momentum=cfg.key_momentum, temperature=cfg.temperature, symmetric=cfg.symmetric)
    views = Views(dataset, ("simclr", "simclr"), batched=batched_augment, crop_scale=cfg.crop_scale,
                  jitter_strength=cfg.jitter_strength)
    loaders = {"unlabeled": StepLoader(views.dataset, StepStream(n, batch_size, seed=seed, stream=0),
                                       num_workers=num_workers)}
    # arch and steps are recorded beside the parameters by run_loop
    resolved = dataclasses.replace(cfg, lr=lr, proj_hidden=cfg.proj_hidden or net.feat_dim)
    params = {k: v for k, v in resolved.run_params().items() if k not in ("arch", "steps", "epochs")}
    params.update(dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n, kind=kind,
                  augment="batched" if views.batched else "per-sample")

    def make_optimizer(m):  # the reference's SGD: decay on every trained parameter; the key encoder is frozen
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=momentum,
                               weight_decay=weight_decay)

    def step_fn(model, batches, step):
        v1, v2 = views(batches["unlabeled"])
        logits = model(v1, v2)
        target = torch.zeros(logits[0].shape[0], dtype=torch.long, device=logits[0].device)
        loss = sum(F.cross_entropy(lg, target) for lg in logits)  # the demo sums the two directions
        acc = torch.stack([(lg.detach().argmax(dim=1) == 0).float().mean() for lg in logits]).mean()
        return loss, {"acc": acc}

    eval_fn = None
    if eval_sets is not None:
        from .simclr import _knn_eval_fn

        eval_fn = _knn_eval_fn(*eval_sets, kind=kind)
    return run_loop(learner="moco", params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=cosine_lr(lr, steps, warmup=cfg.warmup_steps), loaders=loaders, step_fn=step_fn,
                    settings=settings, eval_fn=eval_fn)
