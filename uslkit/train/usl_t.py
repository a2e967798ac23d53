"""USL-T: training-based unsupervised selective labelling (Wang, Lian & Yu 2022, sec. 2.3 and appendix 6.12).

A pretrained encoder (a kit checkpoint, e.g. SimCLR's ``model.pt``) gets ``heads`` clustering heads of ``budget``
outputs each; every step trains them (and, unless ``frozen_backbone``, the encoder) on a batch of the pool:

- global loss (eq. 10, :func:`uslkit.train.losses.usl_t_global_loss`): hard pseudo-labels from the
  un-augmented view where confident, cross-entropy on a strongly augmented view, inverse-count re-weighting;
- local loss (eqs. 11-14, :func:`uslkit.train.losses.usl_t_local_loss`): for each anchor, one of its ``knn_k``
  nearest neighbours in the PRETRAINED feature space (fixed before training), strongly augmented; its logits
  adjusted by ``alpha log p_ema``, sharpened with ``sharpen_t``, KL to the anchor's strong view;
- ``loss = sum_h global_h + local_weight * sum_h local_h``; Adam with a constant learning rate; then the EMA of
  the neighbours' cluster probabilities (eq. 12, :func:`uslkit.train.losses.usl_t_prob_ema`) is updated.

As the reference (``usl-t_pretraining``): three forward passes per step (un-augmented without gradient, strong
anchor, strong neighbour without gradient), BN in training mode unless the backbone is frozen, the local
loss's anchor is the strong view. ImageNet recipe (preset ``"imagenet"``): frozen backbone (the un-augmented
view's features are then computed once for the pool), cosine heads initialised from sample features,
re-seeding of tail/empty clusters (:class:`uslkit.train.config.USLTConfig`).

State that evolves (``p_ema`` per head, the re-seeding counts) is in buffers of ``module.running``: it is
checkpointed and a resumed run equals an uninterrupted one bit for bit. Under DDP both are updated from
values all-reduced over the processes (the same on every process); the global loss's re-weighting and
denominator are each process's own share of the global batch.

Deviations from the reference: the neighbour is drawn from the ``knn_k`` neighbours excluding the sample
itself (the paper; SCAN's neighbour files the reference reads hold the sample too, ``k + 1`` entries); it is a
hash of the anchor's stream seed, so batches stay a function of ``(seed, step)``; the global loss keeps
``>= tau`` (eq. 10) instead of ``> tau``; the strong view is the kit's RandAugment + Cutout (SCAN's CIFAR
``augment`` transform is the same family); heads read the encoder's pooled features (the ImageNet reference
reads MoCo's 128-d projection); re-seeding bounds are relative to ``n / budget``, happen before the next step
(the reference: after the step, so not after the last one here), and feature-initialised heads draw each
head's ``budget`` samples independently. The re-seeding counts start at ``n / budget`` per cluster (the
reference: ``1 / budget``) and are not updated at a step where a head has no confident sample (the reference
divides 0 by 0 there). Not reproduced: the reference's ImageNet ``break`` that trains one step per epoch (so its
released ImageNet run, 10 epochs, never reaches ``reseed_after`` = 1250 steps and never re-seeds), and its
CIFAR ``UPDATE_HEAD_ONLY`` branch that hands the optimiser the frozen parameters.

Files in ``out_dir`` (besides :func:`uslkit.train.loop.run_loop`'s): ``probs.npy``, float32 ``(heads, n,
budget)``, the final per-head cluster probabilities of every pool sample (test view, eval mode), from which
:func:`uslkit.select.usl_t.usl_t_pick` derives a selection without training again. ``history.json`` holds, at
each evaluation (``eval_every``; when the caller does not set it, :data:`HISTORY_POINTS` times over the run, and
at the end), per head: ``cluster_sizes`` (argmax counts over the pool),
``confidence`` (mean max probability) and ``nonempty`` (clusters with a member). ``neighbours.npy``, int64
``(n, knn_k)``, the kNN table of a run started fresh; a resumed run recomputes it and refuses to go on when it
differs (another faiss version or device can break distance ties differently).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .. import _io
from .._rng import splitmix64_np
from .._validate import check_budget, check_embeddings
from . import distributed
from .augment import image_kind
from .batches import StepLoader, StepStream, Views, image_channels, mix_seed
from .config import USLTConfig, resolve_config, split_settings
from .loop import RunSettings, TrainResult, run_loop
from .losses import usl_t_global_loss, usl_t_local_loss, usl_t_prob_ema
from .models import build_model, load_model
from .semi import file_digest

__all__ = ["USLT_PRESETS", "USLTConfig", "USLTModule", "USLTResult", "CosineHead", "train_usl_t", "load_encoder"]

#: the presets, name -> :class:`USLTConfig` (``USLTConfig.PRESETS``).
USLT_PRESETS = USLTConfig.PRESETS

#: momentum of the EMA of confident pseudo-label counts behind re-seeding (the reference ImageNet script's 0.9)
_RESEED_MOMENTUM = 0.9
#: scale of the Gaussian perturbation of a re-seeded centroid (the reference's ``eps``, after DeeperCluster)
_RESEED_EPS = 1e-7
#: evaluations (cluster sizes and confidence per head) over a run whose caller does not set ``eval_every``
HISTORY_POINTS = 10

#: salts of the hashes that draw neighbours, their augmentation seeds, head-init samples and perturbations
_SALT_NEIGHBOUR, _SALT_HEADS, _SALT_RESEED = 0x4E42, 0x4845, 0x5253


@dataclass
class USLTResult(TrainResult):
    """:class:`uslkit.train.loop.TrainResult` plus ``probs``, float32 ``(heads, n, budget)``, the final cluster
    probabilities of every pool sample (also ``out_dir/probs.npy``), and ``params``, the run's recorded
    parameters (config fields, budget, dataset, encoder digest, kNN features)."""

    probs: np.ndarray | None = None
    params: dict = dataclasses.field(default_factory=dict)


class CosineHead(nn.Module):
    """``scale * cos(x, w_c)`` logits, ``(B, d) -> (B, K)`` (the reference's ``NormedLinear``, fixed scale)."""

    def __init__(self, in_features: int, out_features: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=1), F.normalize(self.weight, dim=1)) * self.scale


class USLTHeads(nn.Module):
    """``heads`` heads (linear or :class:`CosineHead`) of ``clusters`` outputs; ``(B, d) -> (heads, B, clusters)``."""

    def __init__(self, in_features: int, clusters: int, heads: int, *, cosine: bool, scale: float):
        super().__init__()
        make = (lambda: CosineHead(in_features, clusters, scale)) if cosine else (
            lambda: nn.Linear(in_features, clusters))
        self.heads = nn.ModuleList([make() for _ in range(heads)])

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return torch.stack([h(f) for h in self.heads])


class USLTRunning(nn.Module):
    """The evolving state, as buffers: ``prob_ema`` ``(heads, K)`` (eq. 12, from uniform) and ``count_ema``
    ``(heads, K)`` (re-seeding's cluster sizes in samples, from ``n / K``; the reference's starts at ``1 / K``, a
    share, while its bounds are in samples, so its first re-seeding conditions differ until the EMA settles)."""

    def __init__(self, heads: int, clusters: int, n: int):
        super().__init__()
        self.register_buffer("prob_ema", torch.full((heads, clusters), 1.0 / clusters))
        self.register_buffer("count_ema", torch.full((heads, clusters), n / clusters))


class USLTModule(nn.Module):
    """``net`` (the encoder, exported as ``model.pt``) + ``heads`` + ``running``; ``forward(x)`` returns the
    logits ``(heads, B, K)``. With ``frozen`` the encoder has no gradient and stays in eval mode."""

    def __init__(self, net: nn.Module, heads: USLTHeads, running: USLTRunning, *, frozen: bool):
        super().__init__()
        self.net, self.heads, self.running = net, heads, running
        self.frozen = bool(frozen)
        if self.frozen:
            net.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.net.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            with torch.no_grad():
                f = self.net.features(x)
            return self.heads(f)
        return self.heads(self.net.features(x))


class _NeighbourStream(StepStream):
    """The anchors' stream mapped to one kNN neighbour each: ``batch(step)`` gives ``(neighbour index,
    augmentation seed)``, both hashed from the anchor's stream seed (a function of ``(seed, step)``)."""

    def __init__(self, pool: int, batch_size: int, neighbours: np.ndarray, *, seed: int, stream: int):
        super().__init__(pool, batch_size, seed=seed, stream=stream)
        self.neighbours = neighbours
        self.salt = np.uint64(mix_seed(seed, _SALT_NEIGHBOUR))

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        idx, seeds = super().batch(step)
        r = splitmix64_np(seeds.astype(np.uint64) ^ self.salt)
        pick = (r % np.uint64(self.neighbours.shape[1])).astype(np.int64)
        return self.neighbours[idx, pick], (splitmix64_np(r) >> np.uint64(1)).astype(np.int64)


def load_encoder(path, dataset) -> nn.Module:
    """The encoder of the kit checkpoint ``path`` as a fresh :class:`uslkit.train.models.Net` without head.

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a kit checkpoint, input channels other than ``dataset``'s images, or a network that
            cannot take them (one test-view image is passed through).
    """
    src = load_model(path)
    arch = dict(src.arch)
    have, need = int(arch.get("in_channels", 3)), image_channels(dataset)
    if have != need:
        raise ValueError(f"encoder {path} ({arch.get('name')}) takes in_channels={have} but {dataset.name}/"
                         f"{dataset.split} has {need}-channel images")
    kw = {k: v for k, v in arch.items() if k not in ("name", "num_classes", "in_channels")}
    net = build_model(arch["name"], 0, in_channels=need, **kw)
    net.encoder.load_state_dict(src.encoder.state_dict())
    from .augment import test_transform, to_uint8_tensor

    x = test_transform(image_kind(dataset))(to_uint8_tensor(dataset.get_image(0)))
    try:
        with torch.no_grad():
            net.eval()(x.unsqueeze(0))
    except RuntimeError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"encoder {path} ({arch.get('name')}) cannot take {dataset.name}'s images of shape "
                         f"{tuple(x.shape)}: {first}") from e
    return net.train()


def train_usl_t(dataset, encoder, budget: int, config: USLTConfig | None = None, *, preset: str | None = None,
                feats=None, batched_augment: bool | None = None, **kwargs) -> USLTResult:
    """Train USL-T's clustering heads on ``dataset`` from the encoder checkpoint ``encoder`` (module docstring).

    Args:
        dataset: :class:`uslkit.data.ImageDataset`, the pool to select from (labels are never read).
        encoder: path of a kit checkpoint (``model.pt`` of :func:`uslkit.train.simclr.train_simclr`, or a
            training ``state.pt``); its encoder is loaded (:func:`load_encoder`).
        budget: clusters per head = samples to select, ``1 <= budget <= n``.
        config: a :class:`USLTConfig` (default: its defaults, or the preset).
        preset: a key of ``USLTConfig.PRESETS`` (``"cifar"``, ``"imagenet"``, ``"cpu"``) instead of ``config``.
        feats: ``(n, d)`` embedding of the pool in which the kNN neighbours are found, e.g. ``uslkit embed
            --encoder ckpt:<encoder>``; ``None``: the encoder's pooled features (test view), L2-normalised.
        batched_augment: see :class:`uslkit.train.batches.Views`.
        **kwargs: fields of :class:`USLTConfig` (each one given wins over the config) and run settings
            (``seed``, ``out_dir``, ``eval_every``, ...: :class:`uslkit.train.loop.RunSettings`).

    Returns:
        :class:`USLTResult`: ``net`` the encoder, ``extras["heads"]``, ``extras["running"]``, ``probs``.

    Raises:
        ValueError: budget out of range, ``feats`` with another number of rows, ``knn_k >= n``, a batch larger
            than the pool, an encoder that does not fit the images, bad config values.
    """
    overrides, run = split_settings(USLTConfig, kwargs)
    cfg = resolve_config(USLTConfig, config, preset, overrides)
    cfg.check_complete()
    n = len(dataset)
    budget = check_budget(budget, n)
    if cfg.batch_size > n:
        raise ValueError(f"batch_size {cfg.batch_size} is larger than the pool ({n} images)")
    if not 1 <= cfg.knn_k <= n - 1:
        raise ValueError(f"knn_k={cfg.knn_k} is too large for a pool of {n} images: at most {n - 1} (a sample is "
                         "not its own neighbour)")
    if feats is not None:
        feats = check_embeddings(feats, name="feats")
        if feats.shape[0] != n:
            raise ValueError(f"feats has {feats.shape[0]} rows but {dataset.name}/{dataset.split} has {n} samples")
    steps = cfg.steps if cfg.steps is not None else max(1, round(float(cfg.epochs) * n / cfg.batch_size))
    run.setdefault("eval_every", max(1, steps // HISTORY_POINTS))  # an explicit value (even None) wins
    settings = RunSettings(steps=steps, **run)
    seed = settings.seed
    enc_path = Path(encoder)
    net = load_encoder(enc_path, dataset)
    kind = image_kind(dataset)
    from ..device import resolve_device

    info, device = distributed.setup(resolve_device(settings.device))
    pool = None  # the pretrained encoder's features of the pool (test view), (n, d) float32
    if cfg.frozen_backbone or feats is None or cfg.head_init == "features":
        from ..evaluate import extract_features

        pool = extract_features(net, dataset, kind=kind, device=device)
    from ..embed import l2_normalize
    from ..knn import knn

    _, neighbours = knn(l2_normalize(pool) if feats is None else feats, cfg.knn_k, mode="auto", seed=seed)
    module = USLTModule(net, _build_heads(cfg, net.feat_dim, budget, pool, seed), USLTRunning(cfg.heads, budget, n),
                        frozen=cfg.frozen_backbone)
    heads, running = module.heads, module.running
    anchor_views = Views(dataset, ("strong",) if cfg.frozen_backbone else ("test", "strong"), batched=batched_augment)
    neighbour_views = Views(dataset, ("strong",), batched=batched_augment)
    loaders = {
        "anchor": StepLoader(anchor_views.dataset, StepStream(n, cfg.batch_size, seed=seed, stream=0),
                             num_workers=settings.num_workers),
        "neighbour": StepLoader(neighbour_views.dataset,
                                _NeighbourStream(n, cfg.batch_size, neighbours, seed=seed, stream=0),
                                num_workers=settings.num_workers),
    }
    params = {k: v for k, v in cfg.run_params().items() if k not in ("steps", "epochs")}
    params.update(budget=budget, dataset=getattr(dataset, "name", None), split=getattr(dataset, "split", None), n=n,
                  kind=kind, augment="batched" if anchor_views.batched else "per-sample",
                  encoder=file_digest(enc_path),
                  feats=None if feats is None else {"shape": list(feats.shape),
                                                    "sha1": hashlib.sha1(feats.tobytes()).hexdigest()})
    pool_on: dict = {}  # the frozen features on each device the batches come on

    def make_optimizer(m):
        return torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=cfg.lr,
                                weight_decay=cfg.weight_decay)

    checked: list = []  # the neighbour table is saved / compared once, at the run's first step in this process

    def step_fn(model, batches, step):
        if not checked:
            _check_neighbours(settings.out_dir, neighbours, fresh=step == 0, main=info.is_main)
            checked.append(True)
        stats = {}
        if cfg.reseed and step > cfg.reseed_after:  # after step - 1 (the reference: after its optimiser step)
            stats["reseeded"] = float(_reseed(heads, running.count_ema, n, cfg, seed=seed, step=step))
        anchor = batches["anchor"]
        if cfg.frozen_backbone:
            (x_strong,) = anchor_views(anchor)
            idx = anchor[2]
            if idx.device not in pool_on:
                pool_on[idx.device] = torch.from_numpy(pool).to(idx.device)
            with torch.no_grad():
                logits_weak = heads(pool_on[idx.device][idx])
        else:
            x_weak, x_strong = anchor_views(anchor)
            with torch.no_grad():
                logits_weak = model(x_weak)
        logits_strong = model(x_strong)
        (x_nb,) = neighbour_views(batches["neighbour"])
        with torch.no_grad():
            logits_nb = model(x_nb)
        globals_, locals_, masks, confident = [], [], [], []
        for h in range(cfg.heads):
            g, st = usl_t_global_loss(logits_weak[h], logits_strong[h], threshold=cfg.threshold,
                                      reweight=cfg.reweight, normalize=cfg.global_norm)
            globals_.append(g)
            masks.append(st["mask"])
            confident.append(st["pseudo_labels"][st["confident"]])
            locals_.append(usl_t_local_loss(logits_strong[h], logits_nb[h], running.prob_ema[h], alpha=cfg.alpha,
                                            temperature=cfg.sharpen_t))
        loss = torch.stack(globals_).sum() + cfg.local_weight * torch.stack(locals_).sum()
        with torch.no_grad():
            batch_mean = distributed.mean_tensor(torch.softmax(logits_nb.float(), dim=-1).mean(dim=1))
            running.prob_ema.copy_(usl_t_prob_ema(running.prob_ema, batch_mean, mu=cfg.prob_ema_mu))
            if cfg.reseed:
                _update_counts(running.count_ema, confident, n)
        stats.update(loss_global=torch.stack(globals_).mean().detach(),
                     loss_local=torch.stack(locals_).mean().detach(), mask=torch.stack(masks).mean())
        return loss, stats

    last: dict = {}

    def eval_fn(net_, ema_):
        probs = _pool_probs(module, dataset, pool, kind)
        last["probs"] = probs
        return _cluster_stats(probs)

    res = run_loop(learner="usl_t", params=params, module=module, make_optimizer=make_optimizer,
                   lr_at=lambda step: cfg.lr, loaders=loaders, step_fn=step_fn, settings=settings, eval_fn=eval_fn)
    probs = last.get("probs")
    if probs is None:  # a finished run loaded from out_dir, or a process other than rank 0
        probs = _pool_probs(module, dataset, pool, kind)
    if res.out_dir is not None and info.is_main:
        _io.atomic_save_npy(Path(res.out_dir) / "probs.npy", probs)
    return USLTResult(**{f.name: getattr(res, f.name) for f in dataclasses.fields(TrainResult)}, probs=probs,
                      params=params)


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def _build_heads(cfg: USLTConfig, dim: int, clusters: int, pool, seed: int) -> USLTHeads:
    """Seeded heads; ``head_init="features"``: each head's rows are the pool features of ``clusters`` distinct
    samples drawn with ``seed`` (the reference: the first shuffled batch, un-augmented)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed(seed, _SALT_HEADS))
        heads = USLTHeads(dim, clusters, cfg.heads, cosine=cfg.cosine_heads, scale=cfg.cosine_scale)
    if cfg.head_init == "features":
        rng = np.random.default_rng([seed, _SALT_HEADS])
        with torch.no_grad():
            for head in heads.heads:
                rows = rng.choice(pool.shape[0], clusters, replace=False)
                head.weight.copy_(torch.from_numpy(pool[rows]))
    return heads


def _check_neighbours(out_dir, neighbours: np.ndarray, *, fresh: bool, main: bool) -> None:
    """``out_dir / "neighbours.npy"``: written (rank 0) when the run starts fresh; on a resume compared with the
    recomputed table when the file exists (runs started before the file existed are not checked).

    Raises:
        ValueError: the recomputed table differs from the saved one.
    """
    if out_dir is None:
        return
    path = Path(out_dir) / "neighbours.npy"
    if fresh:
        if main:
            _io.atomic_save_npy(path, np.ascontiguousarray(neighbours, dtype=np.int64))
        return
    if path.exists() and not np.array_equal(np.load(path), neighbours):
        raise ValueError(f"the kNN neighbours differ from the ones this run started with (faiss version/device?); "
                         f"{path} holds them: resume where the run started, or overwrite=True (--overwrite) to "
                         "train afresh")


def _update_counts(count_ema: torch.Tensor, confident: list[torch.Tensor], n: int) -> None:
    """``count_ema[h] <- 0.9 count_ema[h] + 0.1 n * (confident pseudo-label share of each cluster)`` over the
    global batch (the reference's ``count_ema``, which counts shares from ``1 / K``); a head without a confident
    sample in the batch keeps its counts (the reference divides 0 by 0 there and the EMA becomes NaN)."""
    k = count_ema.shape[1]
    counts = distributed.mean_tensor(torch.stack([torch.bincount(c, minlength=k).to(count_ema.dtype)
                                                  for c in confident]))  # only the shares matter
    total = counts.sum(dim=1, keepdim=True)
    new = _RESEED_MOMENTUM * count_ema + (1 - _RESEED_MOMENTUM) * counts / total.clamp_min(1e-12) * n
    count_ema.copy_(torch.where(total > 0, new, count_ema))


@torch.no_grad()
def _reseed(heads: USLTHeads, count_ema: torch.Tensor, n: int, cfg: USLTConfig, *, seed: int, step: int) -> int:
    """Re-seed each head's smallest cluster from its largest (see :class:`USLTConfig`); returns how many heads."""
    mean = n / count_ema.shape[1]
    done = 0
    for h, head in enumerate(heads.heads):
        c = count_ema[h]
        lo, hi = int(torch.argmin(c)), int(torch.argmax(c))
        if not (c[lo] < cfg.reseed_low * mean and c[hi] > cfg.reseed_high * mean):
            continue
        g = torch.Generator().manual_seed(mix_seed(seed, _SALT_RESEED, step, h))
        pert = (torch.randn(head.weight.shape[1], generator=g, dtype=head.weight.dtype) * _RESEED_EPS).to(
            head.weight.device)
        top = head.weight[hi].clone()
        head.weight[lo] = top + pert
        head.weight[hi] = top - pert
        c[lo] = c[hi] = c[hi] / 2
        done += 1
    return done


@torch.no_grad()
def _pool_probs(module: USLTModule, dataset, pool, kind, batch_size: int = 1024) -> np.ndarray:
    """float32 ``(heads, n, K)``: softmax of every head on the pool's test view (eval mode)."""
    dev = next(module.heads.parameters()).device
    if module.frozen and pool is not None:
        feats = torch.from_numpy(pool)
    else:
        from ..evaluate import extract_features

        feats = torch.from_numpy(extract_features(module.net, dataset, kind=kind, device=dev))
    out = [torch.softmax(module.heads(feats[s:s + batch_size].to(dev)).float(), dim=-1).cpu()
           for s in range(0, feats.shape[0], batch_size)]
    return torch.cat(out, dim=1).numpy()


def _cluster_stats(probs: np.ndarray) -> dict:
    """Per head: ``cluster_sizes`` (argmax counts), ``confidence`` (mean max probability), ``nonempty``."""
    k = probs.shape[2]
    sizes = [np.bincount(p.argmax(axis=1), minlength=k).tolist() for p in probs]
    return {"cluster_sizes": sizes, "confidence": [float(p.max(axis=1).mean()) for p in probs],
            "nonempty": [int(np.count_nonzero(s)) for s in sizes]}
