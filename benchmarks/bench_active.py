"""Benchmark (issue 15): the budget-range study of paper 003 on Fashion-MNIST embeddings.

Every strategy x seed on one embedding from a random start, accuracy of the head against the number of labels
(paper 003's CIFAR-10 steps up to ``--max-labels``), mean +- std over seeds, and each strategy's effective
budget ratio (share of budgets where its mean beats random's mean + std; paper 003 Table 2). ``starts`` compares
one-shot first rounds (random, USL, K-means, TypiClust, NTKCPL's own) continued by one strategy up to 100 labels;
``ntk`` measures how well the NTK stands in for the trained head and the CPL risk for the true risk. Runs are
resumable (``--work``); results accumulate in ``--out`` and ``report`` renders the RESULTS.md section.

    OMP_NUM_THREADS=1 python benchmarks/bench_active.py run --embedding pca64 --jobs 2   # both cores
    python benchmarks/bench_active.py run --embedding pca64 --start ntkcpl --strategies ntkcpl ntkcpl_self
    python benchmarks/bench_active.py ntk --embedding pca64
    python benchmarks/bench_active.py finetune --embedding simclr --strategies random margin --seeds 0 --max-labels 100
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
#: runs of the NTK strategies (and from NTKCPL's first round) carry it in their key; the report shows the newest.
#: 1 (unmarked): ridge 1e-6, 0-1 risk ties to the lowest position; 2: ridge 0.01, ties to the least squared error.
NTK_VERSION = 2
STARTS = ["random", "usl", "kmeans", "typiclust", "ntkcpl"]
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


_SHARED: dict = {}  # the embeddings, loaded once and inherited by forked workers


def _one_run(job) -> tuple[str, dict]:
    from uslkit.active import run_active

    key, start, strategy, seed, schedule, args, progress = job
    pool, test, emb, temb = _SHARED["data"]
    t0 = time.perf_counter()
    res = run_active(emb, pool.labels, strategy=strategy, schedule=schedule, start=start, seed=seed,
                     test_emb=temb, test_labels=test.labels, num_classes=pool.num_classes,
                     strategy_params={"candidates": args.candidates} if strategy in NTK else None,
                     start_params={"candidates": args.candidates} if start == "ntkcpl" else None,
                     out_dir=Path(args.work) / key.replace("|", "_"), progress=progress)
    ntk = strategy in NTK or start == "ntkcpl"
    return key, {"stage": key.split("|")[0], "embedding": args.embedding, "start": start, "strategy": strategy,
                 "seed": seed, **({"ntk_version": NTK_VERSION} if ntk else {}),
                 "candidates": args.candidates, "n": len(pool), "wall_s": time.perf_counter() - t0,
                 "rounds": [{k: r[k] for k in ("labeled", "test_acc", "coverage", "balance", "query_s", "train_s")}
                            for r in res.rounds]}


def run(args, *, starts: bool = False) -> None:
    """Every (start, strategy, seed) run not yet in ``--out``; with ``--jobs N`` N runs at a time in forked
    processes of one thread each (the results do not depend on it: each run is seeded and single-threaded)."""
    from uslkit.active import paper_schedule

    _SHARED["data"] = pool, test, emb, temb = embeddings(args)
    out = Path(args.out)
    data = _load(out)
    data.setdefault("machine", {})[args.embedding] = machine()
    schedule = paper_schedule(100 if starts else args.max_labels)
    combos = ([(s, args.strategy_for_starts, seed) for s in args.starts for seed in args.seeds] if starts else
              [(args.start, s, seed) for s in args.strategies for seed in args.seeds])
    stage = "starts" if starts else "study"
    jobs = []
    for start, strategy, seed in combos:
        ntk = strategy in NTK or start == "ntkcpl"
        key = (f"{stage}|{args.embedding}|{start}|{strategy}|{seed}|{schedule[-1]}|c{args.candidates}|n{len(pool)}"
               + (f"|ntk{NTK_VERSION}" if ntk else ""))
        if key not in data["runs"]:
            jobs.append((key, start, strategy, seed, schedule, args, args.jobs == 1))
    t0 = time.perf_counter()

    def done(key, rec):
        data["runs"][key] = rec
        _save(out, data)
        accs = " ".join(f"{100 * r['test_acc']:.1f}" for r in rec["rounds"])
        print(f"{key}: {accs} ({rec['wall_s']:.0f} s)", flush=True)

    if args.jobs == 1:
        for job in jobs:
            done(*_one_run(job))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("fork")) as ex:
            for f in as_completed([ex.submit(_one_run, j) for j in jobs]):
                done(*f.result())
    if jobs:
        print(f"{len(jobs)} runs in {time.perf_counter() - t0:.0f} s wall with --jobs {args.jobs}", flush=True)
    report(args)


REGS = [1e-6, 1e-3, 1e-2, 5e-2, 1e-1, 1.0]


def ntk_check(args) -> None:
    """How well the NTK stands in for the trained head (paper 003's error_NTK) and the CPL risk for the true one
    (error_CPL): random labelled sets of m samples (3 seeds); the head's test accuracy against kernel
    regression with the NTK at each ridge; at m = 100 and 500, over the NTKCPL(al) candidates of one query,
    the rank correlation between the risk each candidate leaves against the CPL (added with its CPL label)
    and against the true labels (added with its true label), and the true risk of the candidate NTKCPL picks."""
    from scipy.stats import spearmanr

    from uslkit.active import QueryContext, train_head
    from uslkit.active import ntkcpl as N
    from uslkit.active.cpl import cpl_labels
    from uslkit.active.ntk import InitMLP, ntk_regression
    from uslkit.embed import l2_normalize

    pool, test, emb, temb = embeddings(args)
    y, ty, out = pool.labels, test.labels, Path(args.out)
    data = _load(out)
    xt = l2_normalize(temb, dtype=np.float64)
    rows = []
    for m in (20, 100, 500, 2000):
        for seed in (0, 1, 2):
            lab = np.random.default_rng(1000 * m + seed).choice(len(y), m, replace=False)
            head = train_head(emb[lab], y[lab], num_classes=pool.num_classes, seed=seed)
            row = {"m": m, "seed": seed, "head": float((head.logits(temb).argmax(1) == ty).mean())}
            model = InitMLP(emb.shape[1], head.config.hidden, pool.num_classes, seed=seed)
            xl = l2_normalize(emb[lab], dtype=np.float64)
            for reg in REGS:
                p = ntk_regression(model, xl, np.eye(pool.num_classes)[y[lab]], xt, reg=reg)
                row[f"ntk_{reg:g}"] = float((p.argmax(1) == ty).mean())
            if m in (100, 500):
                ctx = QueryContext(emb=emb, labeled=lab, labels=y[lab], num_classes=pool.num_classes, head=head,
                                   seed=seed, first_round=20)
                cand = N._candidates(ctx, args.candidates)
                s_idx = np.concatenate([lab, cand])
                n_clu = max(10, min(m // 2, 10 * pool.num_classes))
                y_cpl = cpl_labels(ctx.features()[s_idx], ctx.probs()[s_idx].argmax(1), np.arange(m), y[lab],
                                   n_clusters=n_clu, c0=min(20, n_clu), seed=seed)
                k, yc, cc = int(y_cpl.max()) + 1, y[cand], y_cpl[m:]
                dom = {c: np.bincount(yc[cc == c]).argmax() for c in np.unique(cc)}
                row["cpl_purity"] = float(np.mean([dom[c] == t for c, t in zip(cc, yc)]))
                x = l2_normalize(emb[s_idx], dtype=np.float64)
                avail = np.ones(cand.size, dtype=bool)
                for reg in (1e-6, N.REG):
                    mc = InitMLP(emb.shape[1], head.config.hidden, k, seed=seed)
                    f, r, ridge = N._posterior(mc, x[:m], np.eye(k)[y_cpl[:m]], x[m:], reg)
                    risk = N._risks(f, r, np.diag(r) + ridge, np.eye(k)[cc] - f, cc, avail)
                    mt = InitMLP(emb.shape[1], head.config.hidden, pool.num_classes, seed=seed)
                    ft, rt, rdg = N._posterior(mt, x[:m], np.eye(pool.num_classes)[y[lab]], x[m:], reg)
                    true = N._risks(ft, rt, np.diag(rt) + rdg, np.eye(pool.num_classes)[yc] - ft, yc, avail)
                    pick = int(np.argmin(risk))
                    row[f"cpl_wrong_{reg:g}"] = float((f.argmax(1) != cc).mean())  # before any addition
                    row[f"true_wrong_{reg:g}"] = float((ft.argmax(1) != yc).mean())
                    row[f"spearman_{reg:g}"] = float(spearmanr(risk, true)[0])
                    row[f"pick_pct_{reg:g}"] = float((true < true[pick]).mean())  # share of candidates better
            rows.append(row)
            print(row, flush=True)
    data.setdefault("ntk", {})[f"{args.embedding}|c{args.candidates}"] = {"rows": rows, "candidates": args.candidates,
                                                                         "machine": machine()}
    _save(out, data)
    report(args)


def _ntk_lines(data) -> list[str]:
    lines = []
    for key, d in sorted(data.get("ntk", {}).items(), key=lambda kv: (kv[0].split("|")[0], kv[1]["candidates"])):
        emb = key.split("|")[0]
        if d["candidates"] != 2000:
            emb += f", {d['candidates']} candidates"
        rows = d["rows"]
        lines += [f"### {emb}: the NTK against the trained head, and the CPL risk against the true risk", "",
                  "Random labelled sets of m samples, 3 seeds. Test accuracy (%) of the head (paper 003's MLP) and of "
                  "kernel regression with the head's NTK at initialisation (eq. 3 at convergence), by ridge (times "
                  "the kernel's mean diagonal).", "",
                  "| m | head | " + " | ".join(f"NTK, ridge {r:g}" for r in REGS) + " |",
                  "|---" * (len(REGS) + 2) + "|"]
        for m in sorted({r["m"] for r in rows}):
            sel = [r for r in rows if r["m"] == m]
            lines.append(f"| {m} | {_cell([r['head'] for r in sel])} | " + " | ".join(
                _cell([r[f"ntk_{g:g}"] for r in sel]) for g in REGS) + " |")
        sel = [r for r in rows if "cpl_purity" in r]
        if sel:
            lines += ["", f"One NTKCPL(al) query from m random labels, {d['candidates']} candidates: purity of the CPL "
                      "on the candidates (%), Spearman correlation over the candidates between the CPL risk and the "
                      "true-label risk after adding each, and the share of candidates (%) whose addition leaves a "
                      "lower true risk than NTKCPL's pick (50: no better than a random candidate); at ridge 0.01, the "
                      "share of candidates (%) the NTK mispredicts before the query, against the CPL and against the "
                      "true labels.", "",
                      "| m | CPL purity | Spearman, ridge 1e-6 | pick's rank, ridge 1e-6 | Spearman, ridge 0.01 | "
                      "pick's rank, ridge 0.01 | wrong vs CPL | wrong vs truth |", "|---|---|---|---|---|---|---|---|"]
            for m in sorted({r["m"] for r in sel}):
                s2 = [r for r in sel if r["m"] == m]
                f = lambda key: f"{np.mean([r[key] for r in s2]):.2f}"  # noqa: E731
                lines.append(f"| {m} | {_cell([r['cpl_purity'] for r in s2])} | {f('spearman_1e-06')} | "
                             f"{_cell([r['pick_pct_1e-06'] for r in s2])} | {f('spearman_0.01')} | "
                             f"{_cell([r['pick_pct_0.01'] for r in s2])} | "
                             f"{_cell([r.get('cpl_wrong_0.01', np.nan) for r in s2])} | "
                             f"{_cell([r.get('true_wrong_0.01', np.nan) for r in s2])} |")
        lines.append("")
    return lines


def finetune_stage(args) -> None:
    """The loop with the fine-tuning classifier (``FinetuneClassifier`` on the SimCLR checkpoint, the linear
    protocol) instead of the head, on the SimCLR embeddings, up to ``--max-labels``; key ``finetune|...``."""
    from uslkit.active import FinetuneClassifier, paper_schedule, run_active

    if args.embedding != "simclr":
        raise SystemExit("finetune: use --embedding simclr (the checkpoint that is fine-tuned)")
    pool, test, emb, _ = embeddings(args)
    out = Path(args.out)
    data = _load(out)
    schedule = paper_schedule(args.max_labels)
    for strategy in args.strategies:
        for seed in args.seeds:
            key = (f"finetune|{args.embedding}|{args.start}|{strategy}|{seed}|{schedule[-1]}|c{args.candidates}"
                   f"|n{len(pool)}")
            if key in data["runs"]:
                continue
            clf = FinetuneClassifier(args.encoder, pool, test_set=test)
            t0 = time.perf_counter()
            res = run_active(emb, pool.labels, strategy=strategy, schedule=schedule, start=args.start, seed=seed,
                             num_classes=pool.num_classes, classifier=clf,
                             strategy_params={"candidates": args.candidates} if strategy in NTK else None,
                             out_dir=Path(args.work) / key.replace("|", "_"), progress=True)
            data["runs"][key] = {"stage": "finetune", "embedding": args.embedding, "start": args.start,
                                 "strategy": strategy, "seed": seed, "candidates": args.candidates, "n": len(pool),
                                 "wall_s": time.perf_counter() - t0,
                                 "rounds": [{k: r[k] for k in ("labeled", "test_acc", "coverage", "balance", "query_s",
                                                               "train_s")} for r in res.rounds]}
            _save(out, data)
            print(key, " ".join(f"{100 * r['test_acc']:.1f}" for r in res.rounds), flush=True)
    report(args)


def _finetune_lines(data) -> list[str]:
    runs = [r for r in data["runs"].values() if r["stage"] == "finetune"]
    if not runs:
        return []
    budgets = sorted({x["labeled"] for r in runs for x in r["rounds"]})
    lines = ["### simclr: fine-tuning the encoder each round instead of the head", "",
             "`FinetuneClassifier` (the SimCLR checkpoint, SimCLRv2-CLD's linear protocol: frozen backbone, a new "
             "linear layer, 5 epochs of 60,000 draws, SGD 0.01) against the MLP head on the same SimCLR embeddings "
             "(the study above, same strategy, start and seeds). Test accuracy (%).", "",
             "| strategy | classifier | seeds | " + " | ".join(map(str, budgets)) + " | median s / run |",
             "|---" * (len(budgets) + 4) + "|"]
    for s in sorted({r["strategy"] for r in runs}):
        mine = [r for r in runs if r["strategy"] == s]
        seeds = sorted({r["seed"] for r in mine})
        head = [r for r in data["runs"].values() if r["stage"] == "study" and r["embedding"] == "simclr"
                and r["strategy"] == s and r["start"] == mine[0]["start"] and r["seed"] in seeds and _current(r)]
        for name, rs in (("fine-tuned (linear)", mine), ("MLP head", head)):
            if not rs:
                continue
            cells = [_cell([x["test_acc"] for r in rs for x in r["rounds"] if x["labeled"] == b] or [np.nan])
                     for b in budgets]
            wall = f"{np.median([r['wall_s'] for r in rs]):.0f}" if name != "MLP head" else "-"
            lines.append(f"| {s} | {name} | {len(rs)} | " + " | ".join(cells) + f" | {wall} |")
    return lines + [""]


def _current(r) -> bool:
    return r.get("ntk_version", 1) == NTK_VERSION or not (r["strategy"] in NTK or r["start"] == "ntkcpl")


def _rows(runs, **match):
    out = []
    for r in runs.values():
        if all(r.get(k) == v for k, v in match.items()) and _current(r):
            out += [{"strategy": r["strategy"], "start": r["start"], "seed": r["seed"], "round": i, **x}
                    for i, x in enumerate(r["rounds"])]
    return out


def _cell(v) -> str:
    v = 100 * np.asarray(v, dtype=float)
    if np.isnan(v).all():
        return "-"
    return f"{v.mean():.1f} +- {v.std(ddof=1):.1f}" if v.size > 1 else f"{v.mean():.1f}"


def _study_line(label, strategy, start, rows, runs, ebr, budgets, emb, cand, n) -> str:
    """One table row: mean +- std per budget of ``rows`` labelled ``label``, its EBR and the median run time of
    ``strategy``'s current runs from ``start``."""
    cells = [_cell([r["test_acc"] for r in rows if r["strategy"] == label and r["labeled"] == b] or [np.nan])
             for b in budgets]
    walls = [r["wall_s"] for r in runs.values() if r["stage"] == "study" and r["embedding"] == emb
             and r["strategy"] == strategy and r["start"] == start and r["candidates"] == cand and r["n"] == n
             and _current(r)]
    e = ebr.get(label)
    ratio = "-" if e is None else f"{100 * e['ratio']:.0f} %"
    return f"| {label} | " + " | ".join(cells) + f" | {ratio} | {np.median(walls):.0f} |"


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
                lines.append(_study_line(s, s, "random", rows, runs, ebr, budgets, emb, cand, n))
            lines.append("")
            own = _rows(runs, stage="study", embedding=emb, start="ntkcpl", candidates=cand, n=n)
            if own:
                base = [r for r in rows if r["strategy"] == "random"]
                both = base + [dict(r, strategy=r["strategy"] + " (own start)") for r in own]
                ebr = effective_budget_ratio(both) if base else {}  # counts the own first round
                lines += ["NTKCPL from its own first round (`start=\"ntkcpl\"`, Alg. 1 with no labels), against the "
                          "random-start random above; EBR over every budget, the first included.", "",
                          "| strategy | " + " | ".join(map(str, budgets)) + " | EBR | median s / run |",
                          "|---" * (len(budgets) + 3) + "|"]
                for s in sorted({r["strategy"] for r in own}):
                    lines.append(_study_line(s + " (own start)", s, "ntkcpl", both, runs, ebr, budgets, emb, cand, n))
                lines.append("")
        starts = [r for r in runs.values() if r["stage"] == "starts" and r["embedding"] == emb and _current(r)]
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
    lines += _ntk_lines(data)
    lines += _finetune_lines(data)
    lines.append("Commands: `python benchmarks/bench_active.py run --embedding pca64` (and `--embedding simclr`), "
                 "`run --start ntkcpl --strategies ntkcpl ntkcpl_self`, `starts`, `ntk` (also `--candidates 10000`), "
                 "`finetune --embedding simclr`, then `report`; each with `--embedding`.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.results_md:
        update_section(Path(args.results_md), SECTION, text)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=("run", "starts", "ntk", "finetune", "report"))
    ap.add_argument("--embedding", choices=("pca64", "simclr"), default="pca64")
    ap.add_argument("--encoder", default=SIMCLR, help="simclr: the kit checkpoint (SimCLR CPU preset)")
    ap.add_argument("--strategies", nargs="+", default=STRATEGIES)
    ap.add_argument("--start", default="random")
    ap.add_argument("--starts", nargs="+", default=STARTS)
    ap.add_argument("--strategy-for-starts", default="ntkcpl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--max-labels", type=int, default=2000)
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time, each in its own one-thread process (set "
                    "OMP_NUM_THREADS=1); 2 on this 2-core machine")
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
    elif args.stage == "ntk":
        ntk_check(args)
    elif args.stage == "finetune":
        finetune_stage(args)
    else:
        run(args, starts=args.stage == "starts")


if __name__ == "__main__":
    main()
