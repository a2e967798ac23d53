"""Mean shift (MSF) and constrained mean shift (CMSF): self- and semi-supervised representation learners.

MSF (Koohpayegani, Tejankar & Pirsiavash 2021) and CMSF (Tejankar et al. 2022, ECCV, Sec. 2;
paper 004): an online encoder ``g`` (backbone, projection MLP) with a predictor ``h`` and a target encoder ``f``,
the EMA of ``g`` (``theta_f <- m theta_f + (1 - m) theta_g`` before every target pass, as the reference). For an
image, ``u = f(T1(x)) / |.|`` (weak view) enters the memory bank ``M`` of the latest ``bank_size`` targets, and
``v = h(g(T2(x))) / |.|`` (strong view) is pulled towards the top-k neighbours ``S`` of ``u`` in a constraint set
``C`` of ``M`` (``u`` itself included): ``L = 1/k sum_{z in S} |v - z|^2 = 2 - 2/k sum v^T z`` (CMSF eq. 1 as the
reference minimises it). ``C = M`` is MSF. The constraints (:func:`km_constraint`, :func:`two_queue_constraint`,
:func:`label_constraint`):

- ``"km"`` (CMSF-KM): bank samples in the target's cluster of the K-means run at the end of every epoch on the
  cached targets (the latest target of every image); no constraint before the first clustering;
- ``"2q"`` (CMSF-2Q): the ``k'`` neighbours of the sample's previous target among the bank samples' previous targets
  (the reference's second bank ``M'``, a cache of two targets per image);
- ``"labels"`` (semi-supervised): bank samples with the same label (labels file) or confident pseudo-label (an MLP
  on the cached targets of the labelled samples, trained at the middle and end of every epoch); no constraint for
  an unconfident sample.

Self-supervised CMSF averages its loss with MSF's (the paper's "CMSF loss added to MSF loss", the reference's
``(constrained + unconstrained) / 2``). Where every pool image has a label, the history logs the purity of the
constrained (``purity_c``) and unconstrained (``purity_msf``) top-k of the targets (the paper's Fig. 5); those
labels are never used by the loss.

Deviations: the bank is written modulo its length (any ``bank_size`` of at least a batch; the reference needs a
multiple of the batch); when ``C`` holds fewer than ``k`` samples the nearest others fill the top-k (the
reference's distance-5 mask does the same up to ties); no ShuffleBN across processes under DDP (one process: the
reference's shuffle within a batch changes nothing); the learning rate is a per-step cosine (the reference's is per
epoch); an image met twice in one batch (a batch across an epoch boundary) caches its later target. Semi-supervised:
the pseudo-label MLP trains on the latest target of each labelled image seen so far (the reference: a FIFO of
labelled targets, random rows labelled 0 in the first epoch) at a constant learning rate (the reference's drops at
epochs 15/30/40 of its 10). The per-image caches (``"2q"``, ``"km"``: ``n x proj_dim`` floats, two for 2Q) live on
the training device and in ``state.pt`` (the paper keeps them in CPU memory): about 5 GB for 2Q on ImageNet.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import distributed
from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels, mix_seed
from .config import CMSFConfig, MSFConfig, resolve_config, split_settings
from .loop import RunSettings, TrainResult, cosine_lr, run_loop
from .models import build_model
from .moco import momentum_update
from .semi import labeled_set, monitor_labels

__all__ = ["mean_shift_loss", "km_constraint", "two_queue_constraint", "label_constraint", "momentum_update",
           "MeanShiftModule", "train_msf", "train_cmsf"]

_MASKED = 5.0  # added to the distance of samples outside C: every |u - z|^2 <= 4, so C always ranks first


def mean_shift_loss(query: torch.Tensor, target: torch.Tensor, bank: torch.Tensor, *, topk: int,
                    allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (constrained) mean-shift loss (MSF eq. 1; CMSF Sec. 2).

    Args:
        query: ``(B, d)`` L2-normalised online predictions ``v``.
        target: ``(B, d)`` L2-normalised targets ``u`` (no gradient).
        bank: ``(m, d)`` L2-normalised memory bank (holding ``u`` itself).
        topk: ``k``.
        allowed: bool ``(B, m)`` constraint sets ``C`` (``None``: ``C = M``).

    Returns:
        ``(loss (B,), index (B, k))``: ``1/k sum_i |v - z_i|^2`` over the ``k`` bank entries nearest to ``u`` in
        ``C`` (then outside it, if ``C`` is smaller than ``k``), and their bank rows.
    """
    dist_t = 2.0 - 2.0 * target @ bank.T
    if allowed is not None:
        dist_t = dist_t + _MASKED * (~allowed).to(dist_t.dtype)
    index = dist_t.topk(topk, dim=1, largest=False).indices
    near = bank[index]  # (B, k, d)
    loss = (2.0 - 2.0 * torch.einsum("bd,bkd->bk", query, near)).mean(dim=1)
    return loss, index


def km_constraint(batch_idx: torch.Tensor, bank_idx: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """CMSF-KM's ``C``: bool ``(B, m)``, bank entry ``j`` allowed for sample ``i`` when both images are in the same
    cluster (``assign``: int64 ``(N,)`` clusters of the pool, ``-1`` before the first clustering). Empty bank
    entries (``bank_idx == -1``) are never allowed; a sample without a cluster gets no constraint (all ``True``)."""
    mine = assign[batch_idx]
    theirs = torch.where(bank_idx >= 0, assign[bank_idx.clamp(min=0)], torch.full_like(bank_idx, -2))
    allowed = (theirs[None, :] == mine[:, None]) & (bank_idx >= 0)[None, :]
    allowed[mine < 0] = True
    return allowed


def two_queue_constraint(batch_prev: torch.Tensor, bank_prev: torch.Tensor, bank_idx: torch.Tensor, *,
                         topk_prime: int) -> torch.Tensor:
    """CMSF-2Q's ``C``: bool ``(B, m)``, the ``k'`` bank entries whose previous target (``bank_prev``, ``(m, d)``,
    the reference's ``M'``) is nearest to the sample's previous target (``batch_prev``, ``(B, d)``). Empty bank
    entries (``bank_idx == -1``) are never chosen while there are others."""
    dist = 2.0 - 2.0 * batch_prev @ bank_prev.T
    dist = dist + _MASKED * (bank_idx < 0).to(dist.dtype)[None, :]
    index = dist.topk(min(topk_prime, dist.shape[1]), dim=1, largest=False).indices
    allowed = torch.zeros_like(dist, dtype=torch.bool)
    allowed.scatter_(1, index, True)
    return allowed


def label_constraint(batch_labels: torch.Tensor, bank_labels: torch.Tensor) -> torch.Tensor:
    """Semi-supervised CMSF's ``C``: bool ``(B, m)``, bank entries with the sample's label; ``-1`` marks an
    unlabelled, unconfident bank entry (never allowed) or sample (no constraint: all ``True``)."""
    allowed = (bank_labels[None, :] == batch_labels[:, None]) & (bank_labels >= 0)[None, :]
    allowed[batch_labels < 0] = True
    return allowed


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """The reference's ``get_mlp``: ``Linear-BN-ReLU-Linear``."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, d_out))


class _Online(nn.Module):
    """Backbone + projection: the part of the online encoder the target copies."""

    def __init__(self, net: nn.Module, projector: nn.Module):
        super().__init__()
        self.net, self.projector = net, projector

    def forward(self, x):
        return self.projector(self.net.features(x))


class _Memory(nn.Module):
    """The bank and the caches, as buffers (so checkpoints hold them and a resumed run goes on exactly)."""

    def __init__(self, bank_size: int, dim: int, n: int, *, constraint: str | None, num_classes: int,
                 labelled: tuple[np.ndarray, np.ndarray] | None, gen: torch.Generator):
        super().__init__()
        self.register_buffer("bank", F.normalize(torch.randn(bank_size, dim, generator=gen), dim=1))
        self.register_buffer("bank_idx", torch.full((bank_size,), -1, dtype=torch.long))
        self.register_buffer("bank_true", torch.full((bank_size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        if constraint in ("km", "2q"):
            self.register_buffer("last", F.normalize(torch.randn(n, dim, generator=gen), dim=1))
        if constraint == "2q":
            self.register_buffer("prev", F.normalize(torch.randn(n, dim, generator=gen), dim=1))
        if constraint == "km":
            self.register_buffer("assign", torch.full((n,), -1, dtype=torch.long))
        if constraint == "labels":
            idx, lab = labelled
            given = torch.full((n,), -1, dtype=torch.long)
            given[torch.from_numpy(idx)] = torch.from_numpy(lab)
            slot = torch.full((n,), -1, dtype=torch.long)
            slot[torch.from_numpy(idx)] = torch.arange(len(idx))
            self.register_buffer("given", given)
            self.register_buffer("slot", slot)
            self.register_buffer("sup_labels", torch.from_numpy(lab).long())
            self.register_buffer("sup_feats", torch.zeros(len(idx), dim))
            self.register_buffer("sup_seen", torch.zeros(len(idx), dtype=torch.bool))
            self.register_buffer("bank_label", torch.full((bank_size,), -1, dtype=torch.long))
            self.head = _mlp(dim, 2 * dim, num_classes)  # the reference's "mlp" pseudo-labeller
            for p in self.head.parameters():
                p.requires_grad_(False)  # trained by its own optimiser, never by the main one (nor DDP)

    @torch.no_grad()
    def enqueue(self, targets, idx, truth, labels=None) -> None:
        m, b = self.bank.shape[0], targets.shape[0]
        rows = (int(self.ptr) + torch.arange(b, device=targets.device)) % m
        self.bank[rows] = targets
        self.bank_idx[rows] = idx
        self.bank_true[rows] = truth
        if labels is not None:
            self.bank_label[rows] = labels
        self.ptr.fill_((int(self.ptr) + b) % m)


class MeanShiftModule(nn.Module):
    """``net`` (online backbone, exported), ``projector``, ``predictor``, ``target`` (EMA copy of backbone and
    projector) and ``memory`` (bank and caches); ``forward(x)`` returns the online predictions ``(B, proj_dim)``.
    ``target`` and ``memory`` are checkpointed in ``state.pt`` but left out of ``model.pt``."""

    NOT_EXPORTED = ("target", "memory")

    def __init__(self, net: nn.Module, *, proj_dim: int, proj_hidden: int, memory: _Memory):
        super().__init__()
        f = net.feat_dim
        self.net = net
        self.projector = _mlp(f, proj_hidden, proj_dim)
        self.predictor = _mlp(proj_dim, proj_hidden, proj_dim)
        self.target = copy.deepcopy(_Online(net, self.projector))
        for p in self.target.parameters():
            p.requires_grad_(False)
        self.memory = memory

    def online(self) -> _Online:
        return _Online(self.net, self.projector)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(self.net.features(x)))


def train_msf(dataset, config: MSFConfig | None = None, *, preset: str | None = None, eval_sets=None,
              arch_kwargs: dict | None = None, batched_augment: bool | None = None, **kwargs) -> TrainResult:
    """Train an encoder with MSF (mean shift, ``C = M``) on the images of ``dataset``.

    Args:
        dataset: :class:`uslkit.data.ImageDataset` (labels only feed the purity log).
        config: an :class:`uslkit.train.config.MSFConfig`; or ``preset`` (``"paper"``, ``"cpu"``).
        **kwargs: its fields (each one given wins over the config) and run settings (:class:`RunSettings`).
        eval_sets, arch_kwargs, batched_augment: as :func:`uslkit.train.simclr.train_simclr`.

    Returns:
        :class:`uslkit.train.loop.TrainResult`; ``net`` is the online backbone (``model.pt``, the
        ``ckpt:<path>`` encoder).
    """
    if config is not None and type(config) is not MSFConfig:
        raise TypeError(f"train_msf takes an MSFConfig, got {type(config).__name__} (a CMSFConfig trains with "
                        "train_cmsf)")
    overrides, run = split_settings(MSFConfig, kwargs)
    cfg = resolve_config(MSFConfig, config, preset, overrides)
    return _train(dataset, cfg, None, "msf", run, eval_sets, arch_kwargs, batched_augment)


def train_cmsf(dataset, labels=None, config: CMSFConfig | None = None, *, preset: str | None = None,
               eval_sets=None, arch_kwargs: dict | None = None, batched_augment: bool | None = None,
               **kwargs) -> TrainResult:
    """Train an encoder with constrained mean shift (CMSF-2Q, CMSF-KM or semi-supervised CMSF).

    Args:
        dataset: :class:`uslkit.data.ImageDataset`.
        labels: a labels file (path or :class:`uslkit.labels.Selection`) of ``dataset``: needed by, and only
            read with, ``constraint="labels"``.
        config: a :class:`uslkit.train.config.CMSFConfig`; or ``preset`` (``"paper"``, ``"cpu"``, ``"cpu-labels"``).
        **kwargs: its fields (``constraint="km"``, ...) and run settings.
        eval_sets, arch_kwargs, batched_augment: as :func:`uslkit.train.simclr.train_simclr`.

    Raises:
        ValueError: ``constraint="labels"`` without a labels file, a labels file with another constraint, or a
            labels file that does not belong to ``dataset`` (:func:`uslkit.train.semi.labeled_set`).
    """
    overrides, run = split_settings(CMSFConfig, kwargs)
    cfg = resolve_config(CMSFConfig, config, preset, overrides)
    if cfg.constraint == "labels" and labels is None:
        raise ValueError("constraint='labels' needs a labels file (labels=..., --labels on the command line)")
    if cfg.constraint != "labels" and labels is not None:
        raise ValueError(f"a labels file is only read with constraint='labels' (got constraint={cfg.constraint!r})")
    labelled = None if labels is None else labeled_set(labels, dataset)
    return _train(dataset, cfg, labelled, "cmsf", run, eval_sets, arch_kwargs, batched_augment)


def _last_occurrence(idx: torch.Tensor) -> torch.Tensor:
    """Bool mask of the rows of ``idx`` (int64 ``(B,)``) that hold the last occurrence of their value, so that an
    indexed write ``t[idx[mask]] = v[mask]`` is defined when a batch meets an image twice."""
    order = torch.arange(idx.numel(), device=idx.device)
    last = torch.full((int(idx.max()) + 1,), -1, dtype=torch.long, device=idx.device).scatter_reduce(
        0, idx, order, reduce="amax")
    return last[idx] == order


def _epoch_starts(step: int, batch_size: int, n: int, per_epoch: int = 1) -> bool:
    """Whether global batch ``step`` is the first after a ``1 / per_epoch`` fraction of an epoch ends."""
    return step > 0 and (step * batch_size * per_epoch) // n > ((step - 1) * batch_size * per_epoch) // n


def _train(dataset, cfg: MSFConfig, labelled, learner: str, run: dict, eval_sets, arch_kwargs,
           batched_augment) -> TrainResult:
    from .simclr import _knn_eval_fn

    n, batch_size = len(dataset), cfg.batch_size
    steps = cfg.steps_for(n)
    constraint = getattr(cfg, "constraint", None)
    topk = cfg.resolved_topk
    settings = RunSettings(steps=steps, **run)
    seed = settings.seed
    lr = float(cfg.lr if cfg.lr is not None else 0.05 * batch_size / 256)
    kind = image_kind(dataset)
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    if constraint == "labels" and num_classes < 2:
        raise ValueError("constraint='labels' needs a dataset with num_classes >= 2")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_model(cfg.arch, 0, in_channels=image_channels(dataset), **(arch_kwargs or {}))
        f = net.feat_dim
        proj_dim, hidden = cfg.proj_dim or max(1, f // 4), cfg.proj_hidden or 2 * f
        gen = torch.Generator().manual_seed(mix_seed(seed, 0xB4))
        memory = _Memory(cfg.bank_size, proj_dim, n, constraint=constraint, num_classes=num_classes,
                         labelled=labelled, gen=gen)
        module = MeanShiftModule(net, proj_dim=proj_dim, proj_hidden=hidden, memory=memory)
    truth = monitor_labels(dataset, None)  # every pool label, or None: the purity log only
    monitor = truth is not None
    views = Views(dataset, ("simclr", cfg.target_view), labels=truth, batched=batched_augment,
                  crop_scale=cfg.crop_scale, jitter_strength=cfg.jitter_strength)
    loaders = {"unlabeled": StepLoader(views.dataset, StepStream(n, batch_size, seed=seed, stream=0),
                                       num_workers=settings.num_workers)}
    km_clusters = None
    if constraint == "km":
        km_clusters = cfg.km_clusters or max(2, round(n / 25.6))
        if km_clusters > n:
            raise ValueError(f"km_clusters {km_clusters} is larger than the dataset ({n} images)")
    resolved = dataclasses.replace(cfg, lr=lr, proj_dim=proj_dim, proj_hidden=hidden, topk=topk,
                                   **({"km_clusters": km_clusters} if constraint == "km" else {}))
    params = {k: v for k, v in resolved.run_params().items() if k not in ("arch", "steps", "epochs")}
    params.update(dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n, kind=kind,
                  augment="batched" if views.batched else "per-sample")
    if labelled is not None:
        params.update(labeled=labelled[0].tolist(), labels=labelled[1].tolist())
    add_msf = constraint is not None and cfg.resolved_add_msf_loss

    def make_optimizer(m):  # decay on every trained parameter, as the reference's SGD
        return torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)

    def step_fn(model, batches, step):
        core = model.module if hasattr(model, "module") else model
        mem = core.memory
        if constraint == "km" and _epoch_starts(step, batch_size, n):
            _recluster(mem, km_clusters, mix_seed(seed, 0xC1, step))
        if constraint == "labels" and _epoch_starts(step, batch_size, n, per_epoch=2):
            _train_head(mem, cfg, mix_seed(seed, 0x9E, step))
        batch = batches["unlabeled"]
        xq, xt = views(batch)
        v = F.normalize(model(xq), dim=1)
        with torch.no_grad():
            momentum_update(core.target, core.online(), cfg.target_momentum)
            u = F.normalize(core.target(xt), dim=1)
            idx, true = batch[2].to(u.device).long(), batch[1].to(u.device).long()
            stats = {}
            labels_b = None
            if constraint == "labels":
                labels_b, stats = _pseudo_labels(mem, u, idx, true, cfg.pseudo_threshold)
            u_all, idx_all, true_all = (distributed.gather_rows(t) for t in (u, idx, true))
            mem.enqueue(u_all, idx_all, true_all, None if labels_b is None else distributed.gather_rows(labels_b))
            once = _last_occurrence(idx_all)
            u_w, idx_w = u_all[once], idx_all[once]  # the per-image caches: one write per image
            allowed = None
            if constraint == "2q":
                mem.prev[idx_w] = mem.last[idx_w]
                mem.last[idx_w] = u_w
                allowed = two_queue_constraint(mem.prev[idx], mem.prev[mem.bank_idx.clamp(min=0)], mem.bank_idx,
                                               topk_prime=cfg.topk_prime)
            elif constraint == "km":
                mem.last[idx_w] = u_w
                allowed = km_constraint(idx, mem.bank_idx, mem.assign)
            elif constraint == "labels":
                known = mem.slot[idx_w] >= 0
                mem.sup_feats[mem.slot[idx_w][known]] = u_w[known]
                mem.sup_seen[mem.slot[idx_w][known]] = True
                allowed = label_constraint(labels_b, mem.bank_label)
        bank = mem.bank.clone()
        loss_c, index_c = mean_shift_loss(v, u, bank, topk=topk, allowed=allowed)
        loss, index_u = loss_c.mean(), index_c
        if allowed is not None:
            if add_msf:  # self-supervised CMSF: (CMSF + MSF) / 2, the reference's
                loss_u, index_u = mean_shift_loss(v, u, bank, topk=topk)
                loss = (loss + loss_u.mean()) / 2
            elif monitor:
                index_u = (2.0 - 2.0 * u @ bank.T).topk(topk, dim=1, largest=False).indices
        if monitor:
            with torch.no_grad():
                stats["purity_msf"] = (mem.bank_true[index_u] == true[:, None]).float().mean()
                if allowed is not None:
                    stats["purity_c"] = (mem.bank_true[index_c] == true[:, None]).float().mean()
        return loss, stats

    eval_fn = None if eval_sets is None else _knn_eval_fn(*eval_sets, kind=kind)
    return run_loop(learner=learner, params=params, module=module, make_optimizer=make_optimizer,
                    lr_at=cosine_lr(lr, steps), loaders=loaders, step_fn=step_fn, settings=settings,
                    eval_fn=eval_fn)


@torch.no_grad()
def _recluster(mem: _Memory, k: int, seed: int) -> None:
    """CMSF-KM: K-means (:func:`uslkit.cluster.kmeans`, seeded, thread-invariant) of the cached targets."""
    from ..cluster import kmeans

    labels, _ = kmeans(mem.last.detach().cpu().numpy().astype(np.float32), k, seed=seed % (2**32))
    mem.assign.copy_(torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(mem.assign.device))


@torch.no_grad()
def _pseudo_labels(mem: _Memory, u, idx, true, threshold: float):
    """Labels of a batch for the constraint: the labels file's, else the MLP's when its confidence reaches
    ``threshold``, else -1; with the share of confident unlabelled samples and their accuracy (when known)."""
    was = mem.head.training
    mem.head.eval()
    with torch.autocast(u.device.type, enabled=False):
        prob = F.softmax(mem.head(u.float()), dim=1)
    mem.head.train(was)
    conf, pred = prob.max(dim=1)
    given = mem.given[idx]
    labels = torch.where(given >= 0, given, torch.where(conf >= threshold, pred, torch.full_like(pred, -1)))
    unl = given < 0
    confident = unl & (labels >= 0)
    stats = {"confident": confident.float().sum() / unl.float().sum().clamp(min=1)}
    if (true >= 0).all():
        stats["pseudo_acc"] = ((pred == true) & confident).float().sum() / confident.float().sum().clamp(min=1)
    return labels, stats


def _train_head(mem: _Memory, cfg: CMSFConfig, seed: int) -> None:
    """One round of the pseudo-label MLP on the cached targets of the labelled samples seen so far (a fresh SGD,
    ``pseudo_epochs`` seeded passes of batches of ``min(pseudo_batch_size, seen)``), as the reference's
    ``train_pseudo_lbl``."""
    seen = torch.nonzero(mem.sup_seen).flatten()
    if seen.numel() < 2:
        return
    feats = mem.sup_feats[seen].detach()
    labels = mem.sup_labels[seen]
    head = mem.head
    params = list(head.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.SGD(params, lr=cfg.pseudo_lr, momentum=0.9, weight_decay=1e-4)
    bs = min(cfg.pseudo_batch_size, seen.numel())
    gen = torch.Generator().manual_seed(seed % (2**63))
    head.train()
    with torch.enable_grad(), torch.autocast(feats.device.type, enabled=False):  # float32 even inside AMP steps
        for _ in range(cfg.pseudo_epochs):
            perm = torch.randperm(seen.numel(), generator=gen).to(feats.device)
            for b in range(math.floor(seen.numel() / bs)):
                rows = perm[b * bs:(b + 1) * bs]
                loss = F.cross_entropy(head(feats[rows]), labels[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    head.eval()
