"""Benchmark (issue 15): the budget-range study of paper 003 on Fashion-MNIST embeddings.

Every strategy x seed on one embedding from a random start, accuracy of the head against the number of labels
(paper 003's CIFAR-10 steps up to ``--max-labels``), mean +- std over seeds, and each strategy's effective
budget ratio (share of budgets where its mean beats random's mean + std; paper 003 Table 2). ``starts`` compares
one-shot first rounds (random, USL, K-means, TypiClust) continued by one strategy up to 100 labels. Runs are
resumable (``--work``); results accumulate in ``--out`` and ``report`` renders the RESULTS.md section.

    python benchmarks/bench_active.py run --embedding pca64
    python benchmarks/bench_active.py run --embedding simclr --encoder data/bench_runs/<simclr run>/model.pt
    python benchmarks/bench_active.py starts --embedding pca64
    python benchmarks/bench_active.py report
    python benchmarks/bench_active.py run --embedding pca64 --candidates 10000   # paper's candidate pool
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

HERE = Path(__file__).resolve().parent
SECTION = "Active learning: the budget-range study (issue 15)"
STRATEGIES = ["random", "entropy", "margin", "coreset", "badge", "typiclust", "probcover", "kmeans_multi",
              "lookahead", "ntkcpl_self", "ntkcpl"]
NTK = ("lookahead", "ntkcpl", "ntkcpl_self")
STARTS = ["random", "usl", "kmeans", "typiclust"]
SIMCLR = "data/bench_runs/simclr_cnn_small_seed0_epochs12_crop_scale0.5-1.0_temperature0.1/model.pt"


def embeddings(args):
    from uslkit import notebook

    encoder, pca = ("pixels", 64) if args.embedding == "pca64" else (f"ckpt:{args.encoder}", None)
    pool, test, emb, temb = notebook.embedded_splits("fashion_mnist", encoder=encoder, pca=pca, root=args.data_root,
                                                     max_samples=args.max_samples, max_test=args.max_test)
    return pool, test, emb, temb


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"runs": {}}


def _save(path: Path, data: dict) -> None:
    from uslkit import _io

    _io.atomic_write_json(path, data)


def run(args, *, starts: bool = False) -> None:
    from uslkit.active import paper_schedule, run_active

    pool, test, emb, temb = embeddings(args)
    out = Path(args.out)
    data = _load(out)
    data.setdefault("machine", {})[args.embedding] = machine()
    schedule = paper_schedule(100 if starts else args.max_labels)
    jobs = ([(s, args.strategy_for_starts, seed) for s in args.starts for seed in args.seeds] if starts else
            [(args.start, s, seed) for s in args.strategies for seed in args.seeds])
    for start, strategy, seed in jobs:
        stage = "starts" if starts else "study"
        key = f"{stage}|{args.embedding}|{start}|{strategy}|{seed}|{schedule[-1]}|c{args.candidates}|n{len(pool)}"
        if key in data["runs"]:
            continue
        t0 = time.perf_counter()
        res = run_active(emb, pool.labels, strategy=strategy, schedule=schedule, start=start, seed=seed,
                         test_emb=temb, test_labels=test.labels, num_classes=pool.num_classes,
                         strategy_params={"candidates": args.candidates} if strategy in NTK else None,
                         out_dir=Path(args.work) / key.replace("|", "_"), progress=True)
        data["runs"][key] = {"stage": stage, "embedding": args.embedding, "start": start, "strategy": strategy,
                             "seed": seed,
                             "candidates": args.candidates, "n": len(pool), "wall_s": time.perf_counter() - t0,
                             "rounds": [{k: r[k] for k in ("labeled", "test_acc", "coverage", "balance", "query_s",
                                                           "train_s")} for r in res.rounds]}
        _save(out, data)
        accs = " ".join(f"{100 * r['test_acc']:.1f}" for r in res.rounds)
        print(f"{key}: {accs} ({data['runs'][key]['wall_s']:.0f} s)", flush=True)
    report(args)


def _rows(runs, **match):
    out = []
    for r in runs.values():
        if all(r.get(k) == v for k, v in match.items()):
            out += [{"strategy": r["strategy"], "start": r["start"], "seed": r["seed"], "round": i, **x}
                    for i, x in enumerate(r["rounds"])]
    return out


def _cell(v) -> str:
    v = 100 * np.asarray(v)
    return f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if v.size > 1 else f"{v.mean():.1f}"


def report(args) -> None:
    from uslkit.active import effective_budget_ratio

    data = _load(Path(args.out))
    runs = data["runs"]
    lines = []
    for emb in sorted({r["embedding"] for r in runs.values()}):
        m = data.get("machine", {}).get(emb, {})
        for (cand, n) in sorted({(r["candidates"], r["n"]) for r in runs.values() if r["embedding"] == emb}):
            rows = _rows(runs, stage="study", embedding=emb, start="random", candidates=cand, n=n)
            if not rows:
                continue
            budgets = sorted({r["labeled"] for r in rows})
            seeds = sorted({r["seed"] for r in rows})
            lines += [f"### {emb}, random start, pool {n}, NTK candidates {cand}", "",
                      f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores, {m.get('date')}. Head test accuracy (%), "
                      f"mean +- std over seeds {seeds}; EBR: effective budget ratio (the budgets after the shared "
                      "first round where the mean beats random's mean + std).", "",
                      "| strategy | " + " | ".join(map(str, budgets)) + " | EBR | median s / run |",
                      "|---" * (len(budgets) + 3) + "|"]
            ebr = effective_budget_ratio(rows) if any(r["strategy"] == "random" for r in rows) else {}
            for s in [x for x in STRATEGIES if any(r["strategy"] == x for r in rows)]:
                cells = [_cell([r["test_acc"] for r in rows if r["strategy"] == s and r["labeled"] == b]) for b in
                         budgets]
                walls = [r["wall_s"] for r in runs.values() if r["stage"] == "study" and r["embedding"] == emb
                         and r["strategy"] == s and r["start"] == "random" and r["candidates"] == cand and r["n"] == n]
                e = ebr.get(s)
                ratio = "-" if e is None else f"{100 * e['ratio']:.0f} %"
                lines.append(f"| {s} | " + " | ".join(cells) + f" | {ratio} | {np.median(walls):.0f} |")
            lines.append("")
        starts = [r for r in runs.values() if r["stage"] == "starts" and r["embedding"] == emb]
        if starts:
            rows = [{"strategy": f"{r['start']} start, then {r['strategy']}", "seed": r["seed"], **x}
                    for r in starts for x in r["rounds"]]
            budgets = sorted({r["labeled"] for r in rows})
            lines += [f"### {emb}: one-shot first rounds up to 100 labels", "",
                      "| first round, then | " + " | ".join(map(str, budgets)) + " |",
                      "|---" * (len(budgets) + 1) + "|"]
            for s in sorted({r["strategy"] for r in rows}):
                lines.append(f"| {s} | " + " | ".join(
                    _cell([r["test_acc"] for r in rows if r["strategy"] == s and r["labeled"] == b]) for b in budgets)
                    + " |")
            lines.append("")
    lines.append("Commands: `python benchmarks/bench_active.py run --embedding pca64` (and `--embedding simclr`), "
                 "`starts`, then `report`.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results_md:
        update_section(Path(args.results_md), SECTION, text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("run", "starts", "report"))
    ap.add_argument("--embedding", choices=("pca64", "simclr"), default="pca64")
    ap.add_argument("--encoder", default=SIMCLR, help="simclr: the kit checkpoint (SimCLR CPU preset)")
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--start", default="random")
    ap.add_argument("--starts", nargs="+", default=STARTS)
    ap.add_argument("--strategy-for-starts", default="ntkcpl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--max-labels", type=int, default=2000)
    ap.add_argument("--candidates", type=int, default=2000, help="NTK strategies' candidate pool (paper: 10000)")
    ap.add_argument("--max-samples", type=int, default=0, help="pool subset (0: all 60,000)")
    ap.add_argument("--max-test", type=int, default=0)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--work", default="data/bench_runs/active")
    ap.add_argument("--out", default=str(HERE / "results" / "active.json"))
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    if args.stage == "report":
        report(args)
    else:
        run(args, starts=args.stage == "starts")


if __name__ == "__main__":
    main()
