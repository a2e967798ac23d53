"""USL-T's final pick (Wang, Lian & Yu 2022, sec. 2.3), and the entry point that trains and picks.

:func:`usl_t_pick` is a pure function of the heads' cluster probabilities (``probs.npy`` of a run):
in each cluster the most confident sample. :func:`select_usl_t` trains USL-T
(:func:`uslkit.train.usl_t.train_usl_t`) and picks. It needs the images and an encoder, not only embeddings,
so :func:`uslkit.select.select` does not dispatch it; the command line does
(``uslkit select --method usl_t --init MODEL.pt ...``).
"""

from __future__ import annotations

import heapq

import numpy as np

from .._validate import check_budget, check_positive_int, check_seed
from ._common import _finish

__all__ = ["FILL_RULE", "usl_t_pick", "select_usl_t", "check_embedding_for_encoder"]

#: how :func:`usl_t_pick` fills picks beyond one per non-empty cluster, as recorded in a labels file's params
FILL_RULE = ("one at a time from the cluster with the largest size / (picks + 1) that has unpicked members "
             "(ties: lower cluster index), its next most confident member (exact confidence ties: the seed)")


def usl_t_pick(probs, budget, *, seed=0, head=0, return_info=False, return_scores=False):
    """The most confident sample of each USL-T cluster, then a seeded fill up to exactly ``budget``.

    Clusters are the argmax of head ``head`` (the reference's ``HEAD_IN_USE``, 0); a sample's confidence is
    the MEAN OVER HEADS of each head's maximum probability (its ``USE_MEAN_PROB``). Cluster indices of
    different heads are not aligned (each head is initialised on its own), so the heads' probabilities are
    never averaged per cluster. Order within a cluster: confidence, descending; exact ties by a permutation
    drawn from ``seed`` (the only use of ``seed``).

    Picks: the first member of each non-empty cluster, in cluster order; with more non-empty clusters than
    ``budget`` (``K > budget``) only the ``budget`` largest (ties by cluster index), in cluster order. That is
    only part of the reference's ImageNet pick, which also ranks the members of a cluster by their kNN distance
    and by their own head's probability rather than by the mean over heads; here every run uses the CIFAR rule
    within a cluster. Fill, when clusters are empty or collapsed (fewer non-empty clusters than
    ``budget``; the reference crashes there): one sample at a time from the cluster with the largest
    ``size / (picks so far + 1)`` that still has unpicked members (ties: lower cluster index), its next most
    confident member. Fills go to the largest clusters in proportion to their size; a head collapsed into one
    cluster gives that cluster's ``budget`` most confident samples.

    Args:
        probs: ``(H, n, K)`` per-head probabilities or ``(n, K)`` for one head (``probs.npy`` of
            :func:`uslkit.train.usl_t.train_usl_t`); finite, non-negative.
        budget: samples to pick, ``1 <= budget <= n``.
        seed: breaks exact confidence ties.
        head: the head whose argmax defines the clusters.
        return_info: also return ``{"filled", "empty_clusters", "clusters", "head"}``.
        return_scores: also return the confidence ``(n,)`` float64 (higher = more wanted).

    Returns:
        int64 ``(budget,)`` distinct indices; then ``scores`` and/or ``info`` when asked, in that order.
    """
    p = np.asarray(probs)
    if p.ndim == 2:
        p = p[None]
    if p.ndim != 3 or 0 in p.shape:
        raise ValueError(f"probs must have shape (heads, n, K) or (n, K), got {np.shape(probs)}")
    if not np.issubdtype(p.dtype, np.number) or not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative")
    n_heads, n, k = p.shape
    budget = check_budget(budget, n)
    seed = check_seed(seed)
    head = check_positive_int(head, name="head", minimum=0, maximum=n_heads - 1)
    clusters = p[head].argmax(axis=1)
    conf = p.max(axis=2).mean(axis=0).astype(np.float64)
    tie = np.random.default_rng(seed).permutation(n)
    order = np.lexsort((tie, -conf, clusters))  # by cluster, then confidence desc, then the seeded tie-break
    sizes = np.bincount(clusters, minlength=k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    nonempty = np.flatnonzero(sizes)
    if nonempty.size > budget:
        keep = np.sort(nonempty[np.lexsort((nonempty, -sizes[nonempty]))[:budget]])
    else:
        keep = nonempty
    picks = list(order[starts[keep]])
    taken = np.zeros(k, dtype=np.int64)
    taken[keep] = 1
    filled = budget - len(picks)
    heap = [(-sizes[c] / (taken[c] + 1), int(c)) for c in nonempty if taken[c] < sizes[c]]
    heapq.heapify(heap)
    for _ in range(filled):
        _, c = heapq.heappop(heap)
        picks.append(order[starts[c] + taken[c]])
        taken[c] += 1
        if taken[c] < sizes[c]:
            heapq.heappush(heap, (-sizes[c] / (taken[c] + 1), c))
    idx = _finish(np.asarray(picks, dtype=np.int64), None, budget, np.zeros(0, dtype=np.int64), False)
    out = [idx]
    if return_scores:
        out.append(conf)
    if return_info:
        out.append({"filled": int(filled), "empty_clusters": int(k - nonempty.size), "clusters": int(k),
                    "head": int(head)})
    return out[0] if len(out) == 1 else tuple(out)


def check_embedding_for_encoder(meta: dict, dataset, encoder) -> None:
    """Check an embedding's sidecar against the dataset and the USL-T encoder before training.

    Raises:
        ValueError: the sidecar names another dataset, split or pool size than ``dataset``, or was made by a
            ``ckpt:`` encoder whose checkpoint (sha256) is not ``encoder``'s file. Embeddings of other encoders
            (pixels, a torchvision network) are accepted: the kNN space is the caller's choice.
    """
    from .._io import file_sha256

    for key, have in (("dataset", dataset.name), ("split", dataset.split), ("n", len(dataset))):
        if meta.get(key) is not None and meta[key] != have:
            raise ValueError(f"the embedding is of {key} {meta[key]!r} but the pool is {have!r}")
    enc = meta.get("encoder")
    sha = (meta.get("params") or {}).get("checkpoint_sha256")
    if isinstance(enc, str) and enc.startswith("ckpt:") and sha is not None:
        mine = file_sha256(encoder)
        if sha != mine:
            raise ValueError(f"the embedding was made by checkpoint {enc[5:]} (sha256 {sha[:12]}...), not by the "
                             f"encoder {encoder} (sha256 {mine[:12]}...); embed with --encoder ckpt:{encoder}")


def select_usl_t(dataset, encoder, budget, *, feats=None, seed=0, out_dir=None, preset=None, head=0,
                 **kwargs):
    """Train USL-T on ``dataset`` from ``encoder`` and pick ``budget`` samples (:func:`usl_t_pick`).

    Args:
        dataset: :class:`uslkit.data.ImageDataset`, the pool.
        encoder: path of a kit checkpoint (e.g. SimCLR's ``model.pt``).
        budget: samples to pick = clusters per head.
        feats: ``(n, d)`` embedding for the kNN neighbours (``None``: the encoder's features).
        seed: training seed and the pick's tie-break.
        out_dir: run folder (resumable; holds ``probs.npy`` and ``history.json``); ``None``: in memory.
        preset: a key of ``USLTConfig.PRESETS``.
        head: the head whose clusters are picked from, ``0 <= head < heads`` (checked before training).
        **kwargs: :class:`uslkit.train.config.USLTConfig` fields and run settings, as
            :func:`uslkit.train.usl_t.train_usl_t`.

    Returns:
        ``(indices int64 (budget,), info)``; ``info``: ``params`` (what a labels file records: the config, the
        encoder digest, the fill count, the head, the preset, the run folder), ``result`` (the
        :class:`uslkit.train.usl_t.USLTResult`) and ``scores`` (confidence per sample).
    """
    from ..train.config import USLTConfig, resolve_config, split_settings
    from ..train.usl_t import train_usl_t

    # the head is checked against the resolved config before anything trains
    fields, _ = split_settings(USLTConfig, {k: v for k, v in kwargs.items() if k not in ("config", "batched_augment")})
    cfg = resolve_config(USLTConfig, kwargs.get("config"), preset, fields)
    if isinstance(head, bool) or not isinstance(head, (int, np.integer)) or not 0 <= head < cfg.heads:
        raise ValueError(f"head must be an integer with 0 <= head < heads={cfg.heads}, got {head!r}")
    head = int(head)
    res = train_usl_t(dataset, encoder, budget, preset=preset, feats=feats, seed=seed, out_dir=out_dir, **kwargs)
    idx, scores, pick = usl_t_pick(res.probs, budget, seed=seed, head=head, return_scores=True, return_info=True)
    run = {k: v for k, v in res.params.items() if k not in ("budget", "dataset", "split", "n")}
    params = {"preset": preset, **run, "steps": res.step, "head": head, "filled": pick["filled"],
              "fill_rule": FILL_RULE,
              "empty_clusters": pick["empty_clusters"], "run_dir": None if out_dir is None else str(out_dir)}
    return idx, {"params": params, "result": res, "scores": scores}

