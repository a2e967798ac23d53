"""The multi-round active-learning loop on frozen embeddings (papers 001 and 003).

Round 0 labels ``schedule[0]`` samples with a one-shot method of :mod:`uslkit.select` (random, K-means, USL,
TypiClust, NTKCPL's own first round, ...). Every round then trains the head (:mod:`uslkit.active.head`) on the
labels so far, or fine-tunes an encoder on their images (``classifier=``, :mod:`uslkit.active.finetuned`),
records test accuracy, class coverage and balance, and, unless it is the last, queries ``schedule[r + 1] -
schedule[r]`` new samples with the strategy; the simulated oracle answers from the ground truth. The
strategy's and the first round's options are recorded with their defaults filled in.

With ``out_dir`` each round writes its labels file (``round_XX.json``, the whole labelled set: this round's
picks plus ``labeled_before``) and ``rounds.json`` (parameters and per-round records), atomically. A stopped
run resumes after its last completed round; a folder holding a run with other parameters is refused unless
``overwrite=True``. Everything is seeded: the same inputs and seed give the same rounds bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import _io
from .._rng import splitmix64
from .._validate import check_embeddings, check_seed
from .head import HeadConfig, head_config, train_head
from .strategies import STRATEGIES, QueryContext, keyword_defaults, query, strategy_options

__all__ = ["ActiveResult", "run_active", "paper_schedule"]

ROUNDS_FILE = "rounds.json"


def paper_schedule(max_labels: int = 2000, *, first: int = 20) -> list[int]:
    """Paper 003's CIFAR-10 query steps: 20 at a time up to 100 labels, 100 up to 500, then 500 up to
    ``max_labels`` (20, 40, ..., 100, 200, ..., 500, 1000, 1500, 2000)."""
    out, n = [], first
    while n <= max_labels:
        out.append(n)
        n += 20 if n < 100 else 100 if n < 500 else 500
    return out


@dataclass
class ActiveResult:
    """What :func:`run_active` returns.

    Attributes:
        rounds: one record per round: ``round``, ``labeled`` (size), ``new`` (indices added this round),
            ``method``, ``test_acc`` (``None`` without a test set), ``coverage``, ``balance`` (normalised
            entropy), ``train_s``, ``query_s`` (the time of the query that produced this round's new samples).
        labeled: int64 ``(m,)`` every labelled index, in labelling order.
        labels: int64 ``(m,)`` the oracle's answers for ``labeled``.
        out_dir: the run folder, or ``None``.
        resumed_from: number of rounds read back from ``out_dir`` instead of run (0: a fresh run).
    """

    rounds: list[dict]
    labeled: np.ndarray
    labels: np.ndarray
    out_dir: Path | None
    resumed_from: int = 0


def _round_seed(seed: int, r: int, what: int) -> int:
    """The seed of round ``r``'s query (``what=0``) or head (``what=1``): a splitmix64 hash, < 2^31."""
    return splitmix64((seed << 20) ^ (r << 2) ^ what) % (2**31 - 1)


def _check_schedule(schedule: Sequence[int], n: int) -> list[int]:
    s = [int(v) for v in schedule]
    if not s or s[0] < 1 or any(b <= a for a, b in zip(s, s[1:])) or s[-1] > n:
        raise ValueError(f"schedule must be increasing label counts from at least 1 up to the pool size {n}, "
                         f"got {list(schedule)}")
    return s


def run_active(emb, oracle_labels, *, strategy: str, schedule: Sequence[int], start: str = "random",
               seed: int = 0, num_classes: int | None = None, head: HeadConfig | None = None,
               head_preset: str | None = None, head_params: dict | None = None, strategy_params: dict | None = None,
               start_params: dict | None = None, initial=None, test_emb=None, test_labels=None, classifier=None,
               out_dir=None, dataset=None, overwrite: bool = False, progress: bool = True) -> ActiveResult:
    """Multi-round active learning with the simulated oracle ``oracle_labels``.

    Args:
        emb: ``(n, d)`` pool embeddings (frozen features).
        oracle_labels: int ``(n,)`` ground truth; strategies see only the labels of the samples queried (and
            ``start="stratified"``, the oracle baseline, reads all of them).
        strategy: a key of :data:`uslkit.active.STRATEGIES`.
        schedule: labelled-set sizes per round, increasing (e.g. :func:`paper_schedule`).
        start: the one-shot method of round 0 (:func:`uslkit.select.select`), ``start_params`` its options.
        initial: ``(indices, labels)``, a labelled set to start from instead (e.g. a labels file a person
            filled in); its labels, not the oracle's, are used for those samples; ``schedule[0]`` must equal
            its size.
        seed: the run's seed (every round's query and head seeds derive from it).
        head / head_preset / head_params: the head config (:class:`HeadConfig`; default: its defaults, paper
            003's MLP); ``head_params`` override fields.
        strategy_params: keyword options of the strategy.
        test_emb, test_labels: the test set each round's head is scored on (optional).
        classifier: instead of the head on ``emb``, a :class:`uslkit.active.FinetuneClassifier` that fine-tunes
            a pretrained encoder on the labelled images each round (scored on its own ``test_set``; then
            ``head*`` and ``test_emb`` are not used and giving them is an error).
        out_dir: run folder (labels file per round, ``rounds.json``; resumable), or ``None``.
        dataset: the pool's :class:`uslkit.data.ImageDataset` (names and ids in the labels files), optional.

    Returns:
        :class:`ActiveResult`.
    """
    from ..evaluate import class_coverage, imbalance
    from ..select import METHODS, select

    x = check_embeddings(emb)
    n = x.shape[0]
    y = np.asarray(oracle_labels, dtype=np.int64)
    if y.shape != (n,):
        raise ValueError(f"oracle_labels has shape {y.shape}; the pool has {n} embeddings")
    if (y < 0).any():
        raise ValueError(f"the oracle has no label (-1) for {int((y < 0).sum())} pool samples")
    C = int(num_classes or y.max() + 1)
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    if start not in METHODS:
        raise ValueError(f"unknown start method {start!r}; choose one of {sorted(METHODS)}")
    seed = check_seed(seed)
    sched = _check_schedule(schedule, n)
    cfg = head_config(head, head_preset, **(head_params or {}))
    if classifier is not None:
        if head is not None or head_preset is not None or head_params or test_emb is not None:
            raise ValueError("a fine-tuning classifier replaces the head and is scored on its own test_set: give "
                             "no head, head_preset, head_params or test_emb with it")
        if len(classifier.train_set) != x.shape[0]:
            raise ValueError(f"the classifier's train_set has {len(classifier.train_set)} images but the pool has "
                             f"{x.shape[0]} embeddings")
    if classifier is None and cfg.kind == "mlp" and sched[0] < 2:
        raise ValueError("the MLP head needs at least 2 labels in the first round (schedule[0] >= 2)")
    if (test_emb is None) != (test_labels is None):
        raise ValueError("give both test_emb and test_labels, or neither")
    tx = None if test_emb is None else check_embeddings(test_emb, name="test_emb")
    ty = None if test_labels is None else np.asarray(test_labels, dtype=np.int64)
    if tx is not None and (tx.shape[1] != x.shape[1] or ty.shape != (tx.shape[0],)):
        raise ValueError(f"test set of {tx.shape} embeddings and {ty.shape} labels does not match the pool's "
                         f"dimension {x.shape[1]}")
    labels_of = y.copy()  # the oracle; only labels_of[labeled] is handed to strategies
    init_key = None
    if initial is not None:
        init_idx = np.asarray(initial[0], dtype=np.int64)
        init_lab = np.asarray(initial[1], dtype=np.int64)
        if init_idx.ndim != 1 or init_idx.shape != init_lab.shape or len(set(init_idx.tolist())) != init_idx.size:
            raise ValueError(f"initial needs distinct indices and one label each, got {init_idx.size} indices and "
                             f"{init_lab.size} labels")
        if init_idx.size and (init_idx.min() < 0 or init_idx.max() >= n or init_lab.min() < 0 or init_lab.max() >= C):
            raise ValueError(f"initial indices must lie in [0, {n}) and labels in [0, {C})")
        if init_idx.size != sched[0]:
            raise ValueError(f"the initial labelled set has {init_idx.size} samples but the schedule starts at "
                             f"{sched[0]}")
        labels_of[init_idx] = init_lab
        init_key = hashlib.sha256(init_idx.tobytes() + init_lab.tobytes()).hexdigest()[:16]
    opts = strategy_options(strategy, strategy_params)
    params = {"strategy": strategy, "strategy_params": opts, "start": start,
              "start_params": _start_options(start, start_params), "seed": seed, "schedule": sched, "num_classes": C,
              "head": cfg.run_params() if classifier is None else classifier.run_params(), "n": n,
              "dim": int(x.shape[1]),
              "pool": hashlib.sha256(np.ascontiguousarray(x).tobytes() + y.tobytes()).hexdigest()[:16],
              "test": None if tx is None else hashlib.sha256(tx.tobytes() + ty.tobytes()).hexdigest()[:16]}
    if init_key is not None:
        params["initial"] = init_key

    out = None if out_dir is None else Path(out_dir)
    records: list[dict] = []
    labeled = np.zeros(0, dtype=np.int64)
    if out is not None:
        records, labeled = _resume(out, params, overwrite)
    resumed = len(records)

    def fit(idx, r):
        if classifier is not None:
            return classifier.fit(idx, labels_of[idx], seed=_round_seed(seed, r, 1))
        return train_head(x[idx], labels_of[idx], num_classes=C, config=cfg, seed=_round_seed(seed, r, 1))

    head_prev = None
    if 0 < resumed < len(sched):  # the head of the last completed round, trained again (same seed, same bits)
        head_prev = fit(labeled, resumed - 1)

    run_cache: dict = {}  # what strategies make once per run (QueryContext.run_cache)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(sched), initial=resumed, desc=f"active {strategy}", unit="round")
    try:
        for r in range(resumed, len(sched)):
            t0 = time.perf_counter()
            if r == 0 and initial is not None:
                new, method = init_idx, "initial"
            elif r == 0:
                new = np.asarray(select(start, x, sched[0], seed=seed, labels=y, num_classes=C,
                                        **(start_params or {})), dtype=np.int64)
                method = start
            else:
                ctx = QueryContext(emb=x, labeled=labeled, labels=labels_of[labeled], num_classes=C,
                                   head=head_prev, seed=_round_seed(seed, r, 0), first_round=sched[0],
                                   run_seed=_round_seed(seed, 0, 2), run_cache=run_cache)
                new = query(strategy, ctx, sched[r] - sched[r - 1], **opts)
                method = strategy
            query_s = time.perf_counter() - t0
            before = labeled
            labeled = np.concatenate([labeled, new])
            t0 = time.perf_counter()
            head_prev = fit(labeled, r)
            acc = head_prev.test_acc if classifier is not None else None
            if tx is not None:
                acc = float((head_prev.logits(tx).argmax(1) == ty).mean())
            rec = {"round": r, "labeled": int(labeled.size), "new": new.tolist(), "method": method,
                   "test_acc": acc, "coverage": class_coverage(labels_of[labeled], C),
                   "balance": imbalance(labels_of[labeled], C)["normalized_entropy"],
                   "train_s": time.perf_counter() - t0, "query_s": query_s}
            records.append(rec)
            if out is not None:
                _save_round(out, r, new, before, labels_of, params, records, dataset, method, seed)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(labels=int(labeled.size), acc="-" if acc is None else f"{acc:.3f}")
    finally:
        if bar is not None:
            bar.close()
    return ActiveResult(rounds=records, labeled=labeled, labels=labels_of[labeled], out_dir=out,
                        resumed_from=resumed)


def _start_options(start: str, params: dict | None) -> dict:
    """The first round's options as recorded: the :mod:`uslkit.select` method's keyword defaults updated by
    ``params`` (unknown names are left for :func:`uslkit.select.select` to refuse)."""
    from ..select import METHODS

    return {**keyword_defaults(METHODS[start]), **(params or {})}


def _resume(out: Path, params: dict, overwrite: bool) -> tuple[list[dict], np.ndarray]:
    """Completed rounds and the labelled set from ``out`` (empty for a new or overwritten folder)."""
    path = out / ROUNDS_FILE
    if not path.exists():
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise FileExistsError(f"{out} holds other files and no {ROUNDS_FILE}: choose an empty folder or "
                                  "pass overwrite=True (--overwrite)")
        return [], np.zeros(0, dtype=np.int64)
    saved = _io.read_json(path)
    if saved.get("params") != json.loads(json.dumps(params)):
        if not overwrite:
            old = saved.get("params") or {}
            diff = sorted(k for k in set(old) | set(params) if old.get(k) != json.loads(json.dumps(params)).get(k))
            raise FileExistsError(f"{out} holds an active-learning run with other parameters (differing: {diff}); "
                                  "choose another folder or pass overwrite=True (--overwrite)")
        for f in out.glob("round_*.json"):
            f.unlink()
        path.unlink()
        return [], np.zeros(0, dtype=np.int64)
    records = list(saved.get("rounds", []))
    labeled = np.asarray([i for rec in records for i in rec["new"]], dtype=np.int64)
    return records, labeled


def _save_round(out: Path, r: int, new, before, labels_of, params, records, dataset, method, seed) -> None:
    from ..labels import Selection, make_selection, save_selection

    sel = make_selection(new, dataset=dataset, n=None if dataset is not None else params["n"], method=method,
                         params={"round": r, "active": {k: params[k] for k in ("strategy", "start", "seed",
                                                                                 "schedule")}},
                         seed=seed, labeled_before=[int(i) for i in before])
    sel = dataclasses.replace(sel, labels=labels_of[np.asarray(new)].tolist(),
                              class_names=list(getattr(dataset, "class_names", []) or []))
    sel = Selection.from_dict(dataclasses.asdict(sel))
    save_selection(sel, out / f"round_{r:02d}.json", overwrite=True)
    _io.atomic_write_json(out / ROUNDS_FILE, {"params": params, "rounds": records, **_io.provenance()})
