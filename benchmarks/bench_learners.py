"""Benchmark (issue 14): USL-T against USL, random and stratified picks, then learners x selections.

On Fashion-MNIST from the SimCLR CPU-preset encoder (``bench_train_fmnist.py simclr --epochs 12 --param
temperature=0.1 --param crop_scale=[0.5,1.0]``), on a 2-core CPU. Stages (each resumable: every finished
measurement is written to the results JSON at once, every training run keeps its checkpoint folder under
``--work``; rerun the same command after an interruption):

``select``: for each budget (40, 20) and seed (0, 1, 2): USL-T (:func:`uslkit.select.usl_t.select_usl_t`,
  ``--usl-t-preset``, trained on the encoder), USL, random and stratified (ORACLE) picks on the encoder's
  L2-normalised embedding; per pick set: class coverage, balance (normalised entropy of the class
  histogram), 1-NN test accuracy of a classifier fitted on the picks only, and USL-T's own training time.
  The annotated labels files are kept under ``--work/selections`` for the ``train`` stage.
``train``: each learner variant (:data:`VARIANTS`) x selection x seed at 40 labels, initialised from the
  encoder, equal CPU time per run: the budget is the time 1000 FixMatch steps take (the length of the recorded
  FixMatch set of ``bench_train_fmnist.py``, about 22-25 minutes here) or ``--minutes``; each learner's seconds
  per step come from a timed calibration (``calibrate`` stage, run alone, recorded once and reused, so every
  selection of a variant runs the same steps); ``--steps`` sets one length for all; ``finetune`` runs its
  protocol's 5 epochs. Plain FixMatch at 1000 steps is not rerun: its cells are the runs
  ``bench_train_fmnist.py fixmatch --steps 1000`` recorded (same encoder, picks, config and length). Records
  top-1 and EMA top-1 on the test set, the curve, and the last logged pseudo-label monitor values (``mask``,
  ``mask_correct``, ``pseudo_acc``: why a run stalls).
``report``: re-render the RESULTS.md section from the JSON.

    python benchmarks/bench_learners.py select                        # USL-T x 6 + the baselines
    python benchmarks/bench_learners.py train --learners fixmatch_da --methods usl --seeds 0 --steps 1000
    python benchmarks/bench_learners.py select --quick                # seconds: every code path, 2,000 images

Paper scale on a GPU (CIFAR-10, 40 labels, WRN-28-2; Wang, Lian & Yu 2022, Table 4: FixMatch random 82.9,
stratified 88.6, USL 90.4, USL-T 93.5; SimCLRv2-CLD random 60.8, USL 76.6): an encoder from
``uslkit train simclr --dataset cifar10 --preset paper``, then ``uslkit select --method usl_t --preset cifar``
and ``uslkit train fixmatch --preset usl`` (or ``mixmatch``/``comatch --preset paper``) on its labels file.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _common import machine, update_section
# the same train/test splits (and --quick subsets) as the encoder's benchmark, and its run-folder tags
from bench_train_fmnist import load, param_tag

from uslkit import _io

HERE = Path(__file__).resolve().parent
SECTION = "Training: USL-T and learners (issue 14)"
ENCODER = "data/bench_runs/simclr_cnn_small_seed0_epochs12_crop_scale0.5-1.0_temperature0.1/model.pt"
METHODS = ("usl_t", "usl", "random", "stratified")
BUDGETS = (40, 20)
SEEDS = (0, 1, 2)
#: learner variant -> (registry name, config fields, preset). Equal time, so ``steps`` comes from calibration.
VARIANTS = {
    "fixmatch": ("fixmatch", {"ema_decay": 0.99}, "cpu"),
    "fixmatch_da": ("fixmatch", {"ema_decay": 0.99, "distribution_alignment": "uniform"}, "cpu"),
    "flexmatch": ("fixmatch", {"ema_decay": 0.99, "threshold_mode": "flexmatch"}, "cpu"),
    "freematch": ("fixmatch", {"ema_decay": 0.99, "threshold_mode": "freematch"}, "cpu"),
    "mixmatch": ("mixmatch", {}, "cpu"),
    "comatch": ("comatch", {}, "cpu"),
    "finetune": ("finetune", {}, "paper"),
}
QUICK = dict(steps=3)  # --quick: 3 training steps on bench_train_fmnist's 2,000 / 500-image subsets


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def embeddings(args, train, test):
    """L2-normalised encoder features of train and test (the space USL selects in and USL-T's kNN uses)."""
    from uslkit.embed import l2_normalize
    from uslkit.evaluate import extract_features
    from uslkit.train.models import load_model

    net = load_model(args.encoder)
    return (l2_normalize(extract_features(net, train, progress=True)),
            l2_normalize(extract_features(net, test, progress=True)))


def sel_path(args, method, budget, seed) -> Path:
    """The annotated labels file of one pick set; USL-T's names its preset and parameters unless they are the
    default ``cpu`` preset's, so configurations never overwrite each other."""
    if method == "usl_t" and (args.usl_t_preset != "cpu" or args.usl_t_params):
        method += f"_{args.usl_t_preset}{param_tag(args.usl_t_params)}"
    return Path(args.work) / "selections" / f"{method}_b{budget}_s{seed}.json"


def stage_select(args, res):
    from uslkit.evaluate import class_coverage, imbalance, nn_accuracy
    from uslkit.labels import annotate, make_selection, save_selection
    from uslkit.select import select
    from uslkit.select.usl_t import select_usl_t

    train, test = load(args)
    x_tr, x_te = embeddings(args, train, test)
    y_tr, y_te, c = train.labels, test.labels, train.num_classes
    runs = res.setdefault("select", {})
    for seed in args.seeds:
        for budget in args.budgets:
            for method in args.methods:
                key = f"{method}/b{budget}/s{seed}"
                if key in runs:
                    continue
                t0 = time.perf_counter()
                extra = {}
                if method == "usl_t":
                    run_dir = (Path(args.work)
                               / f"usl_t_{args.usl_t_preset}{param_tag(args.usl_t_params)}_b{budget}_s{seed}")
                    idx, info = select_usl_t(train, args.encoder, budget, feats=x_tr, seed=seed,
                                             preset=args.usl_t_preset, out_dir=run_dir, progress=True,
                                             **({"steps": QUICK["steps"]} if args.quick else {}), **args.usl_t_params)
                    extra = {"usl_t": {k: info["params"][k] for k in ("filled", "empty_clusters", "steps")},
                             "train_s": None if info["result"].reused else time.perf_counter() - t0}
                    sel = make_selection(idx, dataset=train, method="usl_t", seed=seed, params=info["params"])
                else:
                    idx = select(method, x_tr, budget, seed=seed, labels=y_tr)
                    sel = make_selection(idx, dataset=train, method=method, seed=seed)
                wall = time.perf_counter() - t0
                picked = y_tr[idx]
                runs[key] = {"method": method, "budget": budget, "seed": seed, "wall_s": wall,
                             "coverage": class_coverage(picked, c),
                             "balance": imbalance(picked, c)["normalized_entropy"],
                             "nn1": nn_accuracy(x_tr[idx], picked, x_te, y_te), **extra}
                save_selection(annotate(sel, train), sel_path(args, method, budget, seed), exist_ok=True)
                log(f"{key}: coverage {runs[key]['coverage']:.2f} balance {runs[key]['balance']:.3f} "
                    f"1-NN {runs[key]['nn1']:.4f} ({wall:.0f} s)")
                save(args, res)
    return res


ANCHOR_STEPS = 1000  # equal CPU time: by default the time of the recorded FixMatch set's 1000 steps


def seconds_per_step(args, name, train, sel) -> float:
    """Seconds per training step of learner ``name`` on this machine: the difference of a 4-step and a 14-step
    run divided by 10, so the set-up (loading, building the model) is not counted. Run it alone: calibrating on
    shared cores gives too few steps."""
    from uslkit.train import LEARNERS

    variant = next(v for v, spec in VARIANTS.items() if spec[0] == name)
    _, params, preset = VARIANTS[variant]
    took = []
    for probe in (4, 14):  # training steps only: the runs' evaluations (every steps / 5) come on top of the budget
        t0 = time.perf_counter()
        LEARNERS[name].run(train, labels=sel, init=args.encoder, preset=preset, seed=0, progress=False,
                           **_length(name, probe), **params)
        took.append(time.perf_counter() - t0)
    return (took[1] - took[0]) / 10


def calibrated_steps(args, res, variant, train, sel) -> int:
    """Steps of ``variant`` in the run budget: ``--minutes``, or (default) the time :data:`ANCHOR_STEPS` FixMatch
    steps take, so FixMatch and its options (same network and batches; the options cost no measurable time) run
    exactly :data:`ANCHOR_STEPS` and every other learner the same CPU time. Seconds per step are measured once
    per learner (``calibration`` in the JSON, with the thread count) and reused."""
    import torch

    cal = res.setdefault("calibration", {})
    need = {VARIANTS[variant][0]} | ({"fixmatch"} if args.minutes is None else set())
    for name in sorted(need - set(cal)):
        cal[name] = {"s_per_step": seconds_per_step(args, name, train, sel), "threads": torch.get_num_threads()}
        log(f"calibration {name}: {cal[name]['s_per_step']:.3f} s/step")
        save(args, res)
    name = VARIANTS[variant][0]
    if args.minutes is None:
        if name == "fixmatch":
            return ANCHOR_STEPS
        budget_s = ANCHOR_STEPS * cal["fixmatch"]["s_per_step"]
    else:
        budget_s = args.minutes * 60
    return max(1, round(budget_s / cal[name]["s_per_step"]))


def stage_calibrate(args, res):
    """Calibrate the learners of every ``--learners`` variant (alone, before the runs share the cores)."""
    from uslkit.labels import load_selection

    train, _ = load(args)
    sel = load_selection(sel_path(args, args.methods[0], 40, args.seeds[0]), dataset=train)
    for variant in args.learners:
        if VARIANTS[variant][0] != "finetune":
            log(f"{variant}: {calibrated_steps(args, res, variant, train, sel)} steps per run")
    return res


def _length(learner: str, steps: int | None) -> dict:
    """The keyword that sets a run's length to ``steps`` optimisation steps; ``None``: the preset's (finetune runs
    its protocol's 5 epochs: a linear layer on frozen features is far below the time budget)."""
    return {} if steps is None else {"steps": steps}


def stage_train(args, res):
    from uslkit.labels import load_selection
    from uslkit.train import LEARNERS

    train, test = load(args)
    budget = 40
    runs = res.setdefault("train", {})
    for seed in args.seeds:
        for variant in args.learners:
            name, params, preset = VARIANTS[variant]
            for method in args.methods:
                key = f"{variant}/{method}/s{seed}"
                if key in runs and "top1" in runs[key]:
                    continue
                path = sel_path(args, method, budget, seed)
                if not path.is_file():
                    raise SystemExit(f"{path} is missing: run the select stage for {method} seed {seed} first")
                sel = load_selection(path, dataset=train)
                if name == "finetune":
                    steps = None
                elif args.quick:
                    steps = QUICK["steps"]
                elif args.steps:
                    steps = args.steps
                else:
                    steps = calibrated_steps(args, res, variant, train, sel)
                if variant == "fixmatch" and steps == ANCHOR_STEPS and not args.quick:
                    rec = recorded_fixmatch(method, seed, sel, train)
                    if rec is not None:
                        runs[key] = rec
                        log(f"{key}: recorded by bench_train_fmnist.py: ema {rec['ema_top1']}")
                        save(args, res)
                        continue
                run_dir = Path(args.work) / f"{variant}_{method}_s{seed}_{steps or preset}"
                t0 = time.perf_counter()
                out = LEARNERS[name].run(train, labels=sel, init=args.encoder, test_set=test, preset=preset, seed=seed,
                                         out_dir=run_dir, eval_every=max(1, (steps or 500) // 5), ckpt_every=100,
                                         **_length(name, steps), **params)
                last = next((h for h in reversed(out.history) if "mask" in h or "confident" in h), {})
                last = {**last, "mask": last.get("mask", last.get("confident"))}  # MixMatch logs its guess's share
                runs[key] = {"variant": variant, "method": method, "seed": seed, "steps": steps,
                             "run_dir": str(run_dir),
                             "wall_s": None if out.reused else time.perf_counter() - t0,
                             "top1": out.metrics.get("top1"), "ema_top1": out.metrics.get("ema_top1"),
                             "curve": [[h["step"], h.get("ema_top1", h.get("top1"))] for h in out.history
                                       if "top1" in h],
                             "monitor": {k: last[k] for k in ("mask", "mask_correct", "pseudo_acc") if k in last}}
                log(f"{key}: top1 {runs[key]['top1']} ema {runs[key]['ema_top1']}")
                save(args, res)
    return res


def _recorded_set():
    """The 1000-step EMA-0.99 FixMatch set of ``bench_train_fmnist.py`` (``None`` when it is not recorded)."""
    path = HERE / "results" / "train_fmnist.json"
    if not path.exists():
        return None
    return next((f for f in _io.read_json(path).get("fixmatch_sets", [])
                 if f.get("steps") == ANCHOR_STEPS and f.get("params") == {"ema_decay": 0.99}), None)


def recorded_fixmatch(method, seed, sel, train):
    """Plain FixMatch's grid cell from ``bench_train_fmnist.py fixmatch --steps 1000`` (same encoder, config and
    length) when it recorded ``method``/``seed`` and its picks' class histogram equals this selection's; else
    ``None`` (the cell is then trained here)."""
    import numpy as np

    fx = _recorded_set()
    base = (fx or {}).get("runs", {}).get(f"{method}/seed{seed}")
    if base is None or "pool" not in base:
        return None
    hist = np.bincount(np.asarray(train.labels)[np.asarray(sel.indices)], minlength=train.num_classes)
    if hist.tolist() != base["pool"]["picks"]:
        log(f"fixmatch/{method}/s{seed}: the recorded run's picks differ from this selection's; training it here")
        return None
    pool = base["pool"]
    return {"variant": "fixmatch", "method": method, "seed": seed, "steps": base["steps"], "run_dir": base["run_dir"],
            "wall_s": base["wall_s"], "top1": base["top1"], "ema_top1": base["ema_top1"], "curve": base["curve"],
            "monitor": {}, "pool_confident": pool["confident"], "pool_confident_wrong": pool["confident_wrong"],
            "source": "bench_train_fmnist.py fixmatch --steps 1000"}


# ----------------------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------------------
def _ms(values, scale=100.0, digits=1) -> str:
    v = [x * scale for x in values if x is not None]
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f} (n=1)"
    return f"{statistics.mean(v):.{digits}f} +- {statistics.stdev(v):.{digits}f} (n={len(v)})"


def markdown(res) -> str:
    m = res.get("machine", {})
    lines = [f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores, torch {m.get('torch')}, "
             f"{m.get('date')}. Encoder: `{res.get('encoder')}` (label-free). Mean +- sample std over seeds.", ""]
    sel = res.get("select", {})
    if sel:
        lines += ["### Selections: USL-T vs USL vs random vs stratified (oracle)", "",
                  "| budget | method | class coverage | balance (norm. entropy) | 1-NN of picks | wall s / pick set |",
                  "|---|---|---|---|---|---|"]
        for b in BUDGETS:
            for meth in METHODS:
                rs = [r for r in sel.values() if r["budget"] == b and r["method"] == meth]
                if rs:
                    walls = [r["wall_s"] for r in rs]
                    lines.append(f"| {b} | {meth} | {_ms([r['coverage'] for r in rs])} | "
                                 f"{_ms([r['balance'] for r in rs], 1.0, 3)} | {_ms([r['nn1'] for r in rs])} | "
                                 f"{statistics.median(walls):.0f} |")
        uslt = sorted((r for r in sel.values() if "usl_t" in r), key=lambda r: (r["budget"], r["seed"]))
        if uslt:
            lines += ["", "- USL-T training + pick per run (budget/seed: minutes, steps, picks filled beyond one per "
                      "non-empty cluster): " + "; ".join(
                          f"b{r['budget']}/s{r['seed']}: "
                          + (f"{r['train_s'] / 60:.1f} min" if r.get("train_s") else "reused")
                          + f", {r['usl_t']['steps']} steps, {r['usl_t']['filled']} filled" for r in uslt) + "."]
        lines.append("")
    tr = res.get("train", {})
    if tr:
        lines += ["### Learners x selections, 40 labels, equal CPU time per run", "",
                  "| learner | selection | steps | EMA top-1 (top-1 for finetune) | confident | confident & right | "
                  "wall min | seeds |", "|---|---|---|---|---|---|---|---|"]
        for variant in VARIANTS:
            for meth in METHODS:
                rs = [r for r in tr.values() if r["variant"] == variant and r["method"] == meth and "top1" in r]
                if not rs:
                    continue
                acc = [_acc(r) for r in rs]
                walls = [r["wall_s"] / 60 for r in rs if r.get("wall_s")]
                wall = f"{statistics.median(walls):.1f}" if walls else "-"
                rec = [r["seed"] for r in rs if "source" in r]
                mark = ("" if not rec else " (recorded)" if len(rec) == len(rs)
                        else f" (recorded: seed{'s' if len(rec) > 1 else ''} {', '.join(map(str, rec))})")
                lines.append(f"| {variant}{mark} | {meth} | {rs[0]['steps']} | {_ms(acc)} | "
                             f"{_ms([r['monitor'].get('mask') for r in rs])} | "
                             f"{_ms([r['monitor'].get('mask_correct') for r in rs])} | {wall} | "
                             + ", ".join(str(r["seed"]) for r in rs) + " |")
        cal = res.get("calibration", {})
        lines += ["", *targets(tr)]
        per = ", ".join(f"{n} {c['s_per_step']:.2f} s/step" for n, c in cal.items() if "s_per_step" in c)
        lines += ["", (f"- Equal CPU time: {per} (calibrated alone); " if per else "- ")
                  + "`(recorded)`: plain FixMatch cells (or the seeds named) from `bench_train_fmnist.py fixmatch "
                  "--steps 1000` (same "
                  "encoder, picks, config and length; its confident shares are not logged during training there, "
                  "so those columns are empty).", *_recorded_fixmatch(tr),
                  "- Runs of the `select` and `train` stages may share the two cores; their wall times are then "
                  "those of shared cores, not of a run alone.", ""]
    return "\n".join(lines)


def _acc(r):
    return r["ema_top1"] if r.get("ema_top1") is not None else r["top1"]


def targets(train_runs) -> list[str]:
    """The issue's two targets from the grid: the best cell against 80 % EMA top-1, and per learner the better of
    USL / USL-T against random, paired by seed (seeds where both ran), against +5 points."""
    done = [r for r in train_runs.values() if r.get("top1") is not None]
    if not done:
        return []
    best = max(done, key=_acc)
    out = [f"- **Target >= 80 % EMA top-1 with 40 labels:** best cell {best['variant']} on {best['method']} seed "
           f"{best['seed']}: {100 * _acc(best):.1f} -> {'met' if _acc(best) >= 0.80 else 'not met'}."]
    for variant in VARIANTS:
        cell = {(r["method"], r["seed"]): _acc(r) for r in done if r["variant"] == variant}
        gaps = {}
        for meth in ("usl", "usl_t"):
            paired = [cell[meth, s] - cell["random", s] for (m, s) in cell if m == meth and ("random", s) in cell]
            if paired:
                gaps[meth] = (statistics.mean(paired), len(paired))
        if not gaps:
            continue
        meth, (gap, n) = max(gaps.items(), key=lambda kv: kv[1][0])
        out.append(f"- {variant}: {meth} - random = {100 * gap:+.1f} points (paired, {n} seed{'s' * (n > 1)}) -> "
                   f"{'>= 5: met' if gap >= 0.05 else '< 5: not met'}.")
    return out


def _recorded_fixmatch(train_runs) -> list[str]:
    """Plain FixMatch of ``bench_train_fmnist.py`` (same encoder, same USL / random / stratified picks, 1000 steps,
    EMA 0.99) per seed, next to this benchmark's runs of the same length: the baseline the options must beat."""
    fx = _recorded_set()
    if fx is None:
        return []
    out = []
    for r in sorted(train_runs.values(), key=lambda r: (r["variant"], r["method"], r["seed"])):
        base = fx["runs"].get(f"{r['method']}/seed{r['seed']}")
        if r["variant"] != "fixmatch" and r.get("steps") == ANCHOR_STEPS and base and r.get("ema_top1") is not None:
            out.append(f"- {r['variant']} {r['method']} seed {r['seed']}: EMA top-1 {100 * r['ema_top1']:.1f} vs "
                       f"plain FixMatch {100 * base['ema_top1']:.1f} recorded by `bench_train_fmnist.py fixmatch "
                       "--steps 1000` (same encoder, picks and steps).")
    return out


def save(args, res) -> None:
    """Write ``res`` merged with what the file holds now, under a lock, so a ``select`` and a ``train`` process
    can share one results file (each adds its own records; neither drops the other's)."""
    import fcntl

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        disk = _io.read_json(args.out) if args.out.exists() else {}
        for key in ("select", "train", "calibration"):  # in place: the stages hold references to these dicts
            mine = res.setdefault(key, {})
            for name, record in disk.get(key, {}).items():
                mine.setdefault(name, record)
        _io.atomic_write_json(args.out, res)
        if args.results_md and not args.quick:
            update_section(Path(args.results_md), SECTION, markdown(res))


def parse_args(argv=None):
    from uslkit.cli import parse_param

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["select", "calibrate", "train", "report"])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--encoder", default=ENCODER, help="kit checkpoint (model.pt of a SimCLR run)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--learners", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--usl-t-preset", default="cpu")
    ap.add_argument("--usl-t-param", action="append", default=[], metavar="KEY=VALUE", type=parse_param,
                    help="select: a USLTConfig field over the preset (repeatable; needs its own --out and "
                         "--results-md, since one results file holds one USL-T configuration)")
    ap.add_argument("--minutes", type=float, default=None,
                    help="train: CPU minutes per run (default: the time of 1000 FixMatch steps, ~22 min here)")
    ap.add_argument("--steps", type=int, default=None,
                    help="train: steps per run instead of the calibration (e.g. 1000, the recorded FixMatch set's)")
    ap.add_argument("--work", default="data/bench_runs/learners", help="run folders and labels files (resumable)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    args.usl_t_params = dict(args.usl_t_param)
    if args.out is None:
        args.out = HERE / "results" / ("learners_quick.json" if args.quick else "learners.json")
    args.out = Path(args.out)
    if args.quick:
        args.work = str(Path(args.work) / "quick")
    if not Path(args.encoder).is_file():
        ap.error(f"--encoder {args.encoder} does not exist; train it with `python benchmarks/bench_train_fmnist.py "
                 "simclr --epochs 12 --param temperature=0.1 --param crop_scale=[0.5,1.0]`")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    res = _io.read_json(args.out) if args.out.exists() else {}
    cfg = {"dataset": args.dataset, "encoder": str(args.encoder), "quick": args.quick,
           "usl_t_preset": args.usl_t_preset, **({"usl_t_params": args.usl_t_params} if args.usl_t_params else {})}
    if res and res.get("config") != cfg:
        raise SystemExit(f"{args.out} holds results for {res.get('config')}, not {cfg}; use --out")
    res["config"], res["encoder"] = cfg, str(args.encoder)
    if args.stage != "report":
        res["machine"] = machine()
        res = {"select": stage_select, "calibrate": stage_calibrate, "train": stage_train}[args.stage](args, res)
    save(args, res)
    log(markdown(res))


if __name__ == "__main__":
    main()
