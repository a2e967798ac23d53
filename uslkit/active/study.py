"""The budget-range study of paper 003: every strategy x seed on one embedding, accuracy against the number of
labels, and each strategy's effective budget ratio (paper 003, Table 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .loop import run_active

__all__ = ["run_study", "effective_budget_ratio", "gain_over"]


def run_study(emb, labels, *, strategies: Sequence[str], seeds: Sequence[int], schedule: Sequence[int],
              start: str = "random", starts: dict | None = None, test_emb=None, test_labels=None, work_dir=None,
              strategy_params=None, start_params=None, head_params=None, progress: bool = True,
              **kwargs) -> list[dict]:
    """:func:`uslkit.active.run_active` for every strategy and seed (each in ``work_dir/<start>_<strategy>_s<seed>``
    when given, so a stopped study resumes), flattened to one row per round: ``strategy``, ``start``, ``seed``,
    ``round``, ``labeled``, ``test_acc``, ``coverage``, ``balance``, ``query_s``, ``train_s``.

    ``start``: the first round's method for every strategy, except those in ``starts`` (``{strategy: method}``,
    e.g. ``{"ntkcpl": "ntkcpl"}``: NTKCPL from its own first round, as paper 003 runs it). ``strategy_params``:
    ``{strategy: {option: value}}`` (e.g. NTKCPL's ``candidates``); ``start_params``: ``{method: {option:
    value}}``; ``kwargs`` go to :func:`run_active` (``head_preset``, ``num_classes``, ``dataset``, ...).
    """
    rows = []
    runs = [(s, seed) for s in strategies for seed in seeds]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(runs), desc="study", unit="run")
    try:
        for strategy, seed in runs:
            first = (starts or {}).get(strategy, start)
            out = None if work_dir is None else Path(work_dir) / f"{first}_{strategy}_s{seed}"
            res = run_active(emb, labels, strategy=strategy, schedule=schedule, start=first, seed=seed,
                             test_emb=test_emb, test_labels=test_labels, out_dir=out, progress=False,
                             strategy_params=(strategy_params or {}).get(strategy), head_params=head_params,
                             start_params=(start_params or {}).get(first), **kwargs)
            for r in res.rounds:
                rows.append({"strategy": strategy, "start": first, "seed": seed,
                             **{k: r[k] for k in ("round", "labeled", "test_acc", "coverage", "balance", "query_s",
                                                  "train_s")}})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(strategy=strategy, seed=seed)
    finally:
        if bar is not None:
            bar.close()
    return rows


def _by(rows, key: str, strategy: str, min_round: int = 0, base_start=None) -> dict[int, np.ndarray]:
    out: dict[int, list] = {}
    for r in rows:
        own = base_start is not None and r.get("start", base_start) != base_start  # its first round is its own
        if r["strategy"] == strategy and r.get(key) is not None and (own or r.get("round", min_round) >= min_round):
            out.setdefault(int(r["labeled"]), []).append(float(r[key]))
    return {b: np.asarray(v) for b, v in out.items()}


def effective_budget_ratio(rows: Sequence[dict], *, baseline: str = "random", key: str = "test_acc",
                           min_round: int = 1) -> dict:
    """Paper 003's Table 2 metric per strategy: the share of budgets (labelled-set sizes present for both) at
    which the strategy's mean ``key`` over seeds exceeds the baseline's mean + its standard deviation (sample
    std over seeds, 0 for one seed). Rows of rounds before ``min_round`` are left out (default: round 0, the
    one-shot start every strategy shares; rows without ``round`` count), except for a strategy whose rows have
    another ``start`` than the baseline's: its first round is its own and counts (paper 003's NTKCPL).
    Returns ``{strategy: {"ratio", "effective", "budgets"}}`` (not for the baseline itself)."""
    if not _by(rows, key, baseline):
        raise ValueError(f"no rows of the baseline strategy {baseline!r} with {key!r}")
    base_starts = {r.get("start") for r in rows if r["strategy"] == baseline}
    base_start = base_starts.pop() if len(base_starts) == 1 else None
    out = {}
    for s in sorted({r["strategy"] for r in rows} - {baseline}):
        mine = _by(rows, key, s, min_round, base_start)
        base = _by(rows, key, baseline, 0 if any(r.get("start", base_start) != base_start for r in rows
                                                 if r["strategy"] == s) else min_round)
        budgets = sorted(set(mine) & set(base))
        eff = [b for b in budgets
               if mine[b].mean() > base[b].mean() + (base[b].std(ddof=1) if base[b].size > 1 else 0.0)]
        out[s] = {"ratio": len(eff) / len(budgets) if budgets else float("nan"), "effective": eff,
                  "budgets": budgets}
    return out


def gain_over(rows: Sequence[dict], *, baseline: str = "random", key: str = "test_acc") -> list[dict]:
    """Rows of ``key`` minus the baseline's mean at the same budget (paper 003, Fig. 3's "active learning
    gain"), one per input row of another strategy, as ``{"strategy", "seed", "labeled", "gain"}``."""
    base = {b: v.mean() for b, v in _by(rows, key, baseline).items()}
    return [{"strategy": r["strategy"], "seed": r["seed"], "labeled": r["labeled"], "gain": r[key] - base[r["labeled"]]}
            for r in rows if r["strategy"] != baseline and r.get(key) is not None and r["labeled"] in base]
