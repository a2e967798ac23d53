"""SeLa: self-labelling by simultaneous clustering and representation learning (Asano, Rupprecht & Vedaldi 2020).

The network (backbone + ``heads`` linear classifiers of ``clusters`` outputs) minimises the cross-entropy of every
head against its pseudo-labels, averaged over heads (paper eq. 3; the reference ``main.py`` / ``cifar.py``). The
pseudo-labels start as a seeded random equipartition (``i % K``, permuted) and are re-optimised ``label_updates``
times during training by Sinkhorn-Knopp (:func:`uslkit.cluster.sinkhorn_knopp`, eqs. 6-8: ``Q = diag(c)
P^lambda diag(r)`` with ``P`` the head's softmax over the pool, hard labels ``argmax Q``), at the reference's
times: sample counts ``(E + 1.0001) N t_j`` for ``t_j`` evenly spaced in [0, 1] (``"linear"``, CIFAR) or
``(E + 1.01) N t_j^2`` (``"quadratic"``, ImageNet), each done at the first step after it, one per step.
``heads_per_update``: ``"all"`` heads (ImageNet) or head ``epoch % heads`` (CIFAR).

Deviations: ``P`` comes from the un-augmented images with the network in eval mode (the reference passes the
training loader's augmented images in train mode), in float32 even under AMP; the
CIFAR views are the kit's ``"simclr"`` policy (jitter with probability 0.8 and hue 0.1 where the reference always
jitters with hue 0.4); the ``"step"`` schedule drops at 40/60/80 % of training (the CIFAR code's 160/240/320 of
400 epochs; the ImageNet code drops at epochs 150/300/350). Under torchrun the first process computes the labels
and broadcasts them while the others wait: at ImageNet size (a pass over 1.28M images and Sinkhorn per head) that
wait can outlast the process group's timeout, which must then be raised.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels, mix_seed
from .config import SeLaConfig, resolve_config, split_settings
from .loop import RunSettings, TrainResult, cosine_lr, run_loop
from .models import build_model

__all__ = ["SeLaModule", "train_sela", "sela_loss", "label_update_steps", "equipartition_labels"]


class _Labels(nn.Module):
    """The pseudo-labels ``(heads, N)`` as a buffer (checkpointed: a resumed run goes on with them)."""

    def __init__(self, labels: torch.Tensor):
        super().__init__()
        self.register_buffer("labels", labels)


class SeLaModule(nn.Module):
    """``net`` (backbone, exported), ``heads`` (one ``Linear(f, clusters)`` each) and ``state`` (the labels, which
    the learner keeps equal on every process); ``forward(x)`` returns the logits of every head, ``(heads, B,
    clusters)``."""

    KEPT_IN_SYNC = ("state",)

    def __init__(self, net: nn.Module, *, heads: int, clusters: int, labels: torch.Tensor):
        super().__init__()
        self.net = net
        self.heads = nn.ModuleList(nn.Linear(net.feat_dim, clusters) for _ in range(heads))
        self.state = _Labels(labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.net.features(x)
        return torch.stack([h(f) for h in self.heads])


def sela_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over heads of the cross-entropy of ``logits`` ``(H, B, K)`` against ``labels`` ``(H, B)`` (eq. 3)."""
    return torch.stack([F.cross_entropy(logits[h], labels[h]) for h in range(logits.shape[0])]).mean()


def equipartition_labels(n: int, clusters: int, heads: int, seed: int) -> torch.Tensor:
    """The reference's initial labels: for every head a seeded permutation of ``i % clusters``, int64 ``(H, N)``."""
    rng = np.random.default_rng(mix_seed(seed, 0x5E1A))
    base = np.arange(n, dtype=np.int64) % clusters
    return torch.from_numpy(np.stack([rng.permutation(base) for _ in range(heads)]))


def label_update_steps(steps: int, batch_size: int, n: int, updates: int, spacing: str = "linear") -> list[int]:
    """The steps at which the labels are re-optimised (the reference's ``optimize_times``, see the module doc):
    increasing, at most one per step, only those before ``steps``."""
    epochs = steps * batch_size / n
    t = np.linspace(0.0, 1.0, updates)
    if spacing == "quadratic":
        t = t**2
    times = (epochs + (1.01 if spacing == "quadratic" else 1.0001)) * n * t  # samples seen: niter * B >= time
    out, last = [], -1
    for when in times:
        s = max(int(math.ceil(when / batch_size)), last + 1)
        if s >= steps:
            break
        out.append(s)
        last = s
    return out


def train_sela(dataset, config: SeLaConfig | None = None, *, preset: str | None = None, eval_sets=None,
               arch_kwargs: dict | None = None, batched_augment: bool | None = None, **kwargs) -> TrainResult:
    """Train an encoder with SeLa on the images of ``dataset`` (labels are never read).

    Args:
        dataset: :class:`uslkit.data.ImageDataset`.
        config: a :class:`uslkit.train.config.SeLaConfig`; or ``preset`` (``"cifar"``, ``"imagenet"``, ``"cpu"``).
        **kwargs: its fields (each one given wins over the config) and run settings (:class:`RunSettings`).
        eval_sets, arch_kwargs, batched_augment: as :func:`uslkit.train.simclr.train_simclr`.

    Returns:
        :class:`uslkit.train.loop.TrainResult`; ``net`` is the backbone (``model.pt``, the ``ckpt:<path>``
        encoder), ``extras["heads"]`` the classifiers, ``extras["state"].labels`` the last pseudo-labels.
    """
    from ..evaluate import extract_features
    from .simclr import _knn_eval_fn

    overrides, run = split_settings(SeLaConfig, kwargs)
    cfg = resolve_config(SeLaConfig, config, preset, overrides)
    n, batch_size = len(dataset), cfg.batch_size
    steps = cfg.steps_for(n)
    if cfg.clusters > n:
        raise ValueError(f"clusters {cfg.clusters} is larger than the dataset ({n} images)")
    settings = RunSettings(steps=steps, **run)
    seed = settings.seed
    kind = image_kind(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, 0, in_channels=image_channels(dataset), **(arch_kwargs or {}))
        module = SeLaModule(net, heads=cfg.heads, clusters=cfg.clusters,
                            labels=equipartition_labels(n, cfg.clusters, cfg.heads, seed))
    views = Views(dataset, ("simclr",), batched=batched_augment, crop_scale=cfg.crop_scale,
                  jitter_strength=cfg.jitter_strength)
    loaders = {"unlabeled": StepLoader(views.dataset, StepStream(n, batch_size, seed=seed, stream=0),
                                       num_workers=settings.num_workers)}
    updates = set(label_update_steps(steps, batch_size, n, cfg.label_updates, cfg.update_spacing))
    params = {k: v for k, v in cfg.run_params().items() if k not in ("arch", "steps", "epochs")}
    params.update(dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n, kind=kind,
                  augment="batched" if views.batched else "per-sample")
    if cfg.schedule == "cosine":
        lr_at = cosine_lr(cfg.lr, steps)
    else:
        drops = [round(f * steps) for f in (0.4, 0.6, 0.8)]
        lr_at = lambda step: cfg.lr * 0.1 ** sum(step >= d for d in drops)  # noqa: E731

    def make_optimizer(m):  # decay on every parameter, as the reference's SGD
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)

    def relabel(core, step):
        """Sinkhorn-Knopp on every head's (or one head's) softmax over the pool (its features once, eval mode), on
        the first process, whose labels every process then takes (BN statistics differ between processes)."""
        from ..cluster import sinkhorn_knopp

        if distributed.dist_on():
            if torch.distributed.get_rank() != 0:
                torch.distributed.broadcast(core.state.labels, src=0)
                return
        device = next(core.parameters()).device
        # float32 even inside an AMP step: P^lambda magnifies the logits' rounding lambda-fold
        with torch.autocast(device.type, enabled=False), torch.no_grad():
            feats = torch.from_numpy(extract_features(core.net, dataset, kind=kind, device=device)).to(device)
            which = range(cfg.heads) if cfg.heads_per_update == "all" else [int(step * batch_size // n) % cfg.heads]
            for h in which:
                head = core.heads[h]
                logits = (feats @ head.weight.T + head.bias).double().cpu().numpy()
                new, _ = sinkhorn_knopp(logits, lam=cfg.lam, tol=cfg.sk_tol, max_iter=cfg.sk_max_iter)
                core.state.labels[h] = torch.from_numpy(new).to(core.state.labels.device)
        if distributed.dist_on():
            torch.distributed.broadcast(core.state.labels, src=0)

    def step_fn(model, batches, step):
        core = model.module if hasattr(model, "module") else model
        if step in updates:
            relabel(core, step)
        batch = batches["unlabeled"]
        (x,) = views(batch)
        idx = batch[2].to(x.device).long()
        logits = model(x)
        loss = sela_loss(logits, core.state.labels[:, idx])
        return loss, {}

    eval_fn = None if eval_sets is None else _knn_eval_fn(*eval_sets, kind=kind)
    return run_loop(learner="sela", params=params, module=module, make_optimizer=make_optimizer, lr_at=lr_at,
                    loaders=loaders, step_fn=step_fn, settings=settings, eval_fn=eval_fn)
