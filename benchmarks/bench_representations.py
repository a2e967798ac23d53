"""Benchmark (issue 16): which learned embedding serves selection best, at equal CPU time per learner.

Fashion-MNIST, the small CNN, seed 0, on a 2-core CPU. Every learner trains for the wall time the SimCLR CPU preset
took (``bench_train_fmnist.py``'s recorded run, ~1,600 s): its steps come from a timed calibration (``calibrate``,
run alone and recorded once, so a run's length does not depend on what else the machine does later). Stages, each
resumable (every finished measurement is written to the results JSON at once; every run keeps its folder under
``--work``):

``calibrate``: seconds per step of each learner (median of logged steps after the first), plus SeLa's cost of one
  label update (a pass over the pool and Sinkhorn-Knopp per head), which its steps pay for.
``train``: each learner for its calibrated steps (the preset's other settings), then ``eval`` of its embedding.
``eval``: for PCA-64, the recorded SimCLR encoder and every trained learner: full-label 1-NN and weighted 10-NN
  (sigma 0.1) test accuracy; USL / K-means / TypiClust picks at budgets 20 and 40, selection seeds 0-4, each
  scored by the 1-NN test accuracy of a classifier fitted on the picks alone (on the same embedding); the linear
  probe (logistic regression) of the 40 USL labels that semi-supervised CMSF trains on. Semi-supervised CMSF uses
  those 40 labels (USL on PCA-64, seed 0: training-free, so no other training enters its budget): its budget-40
  row is those labels, and no budget-20 row exists.
``fixmatch``: FixMatch with 40 USL labels (picked on the encoder's embedding, selection seed = run seed 0-2) from
  the best learned encoder (``--encoder best``: the highest mean USL b=40 accuracy among the self-supervised
  learners) for ``--fix-steps`` steps, with the parameters of the SimCLR-initialised set of that length that
  ``bench_train_fmnist.py fixmatch`` recorded, so the two sets differ only in the encoder (init and picks).
``report``: re-render the RESULTS.md section from the JSON.

    python benchmarks/bench_representations.py calibrate
    python benchmarks/bench_representations.py train --learners msf cmsf_2q
    python benchmarks/bench_representations.py fixmatch --fix-steps 1000
    python benchmarks/bench_representations.py train --quick       # seconds: every code path, 2,000 images

Paper scale on a GPU: ``uslkit train cmsf --dataset imagenet --preset paper`` (``--param constraint=km``),
``uslkit train sela --preset imagenet``, ``uslkit train moco --preset paper``; the same ``eval`` on their
``model.pt``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section
from bench_train_fmnist import FIX_BUDGET, fixmatch_runs, fixmatch_set, load, pca_embeddings, simclr_embeddings

from uslkit import _io

HERE = Path(__file__).resolve().parent
SECTION = "Training: representation learners for selection (issue 16)"
SIMCLR_RUN = "data/bench_runs/simclr_cnn_small_seed0_epochs12_crop_scale0.5-1.0_temperature0.1"
#: learner variant -> (registry name, config fields, preset); the length comes from calibration.
LEARNERS = {
    "moco": ("moco", {}, "cpu"),
    "sela": ("sela", {}, "cpu"),
    "msf": ("msf", {}, "cpu"),
    "cmsf_km": ("cmsf", {"constraint": "km"}, "cpu"),
    "cmsf_2q": ("cmsf", {"constraint": "2q"}, "cpu"),
    "cmsf_labels": ("cmsf", {}, "cpu-labels"),
}
METHODS = ("usl", "kmeans", "typiclust")
BUDGETS = (20, 40)
SEEDS = (0, 1, 2, 3, 4)
LABELS_BUDGET = 40
QUICK = {"steps": 4, "budget_s": 20.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def budget_seconds(args) -> float:
    """The SimCLR CPU preset's recorded training wall time (``train_fmnist.json``), or ``--seconds``."""
    if args.seconds:
        return float(args.seconds)
    if args.quick:
        return QUICK["budget_s"]
    rec = _io.read_json(HERE / "results" / "train_fmnist.json")["simclr"]
    return float(rec["train_wall_s"])


def labels_file(args, res, train, x_pca):
    """The 40 USL labels (PCA-64, seed 0) semi-supervised CMSF trains on, annotated from the pool's labels."""
    from uslkit.labels import annotate, make_selection, save_selection
    from uslkit.select import select

    path = Path(args.work) / f"usl_pca_b{LABELS_BUDGET}_s0.json"
    if not path.exists():
        idx = select("usl", x_pca, LABELS_BUDGET, seed=0)
        sel = annotate(make_selection(idx, dataset=train, method="usl", seed=0), train)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_selection(sel, path)
    res.setdefault("labels_file", str(path))
    return path


def _inputs(args, res):
    """``(train, test, x_pca, x_pca_test, labels file)``: the splits, their PCA-64 embedding and the 40 USL labels."""
    train, test = load(args)
    x_pca, x_pca_te = pca_embeddings(train, test)
    return train, test, x_pca, x_pca_te, labels_file(args, res, train, x_pca)


def _run(args, name, train, labels, *, steps, out_dir=None, log_every=50, **extra):
    from uslkit.train.registry import LEARNERS as REG

    reg, fields, preset = LEARNERS[name]
    kw = dict(fields, preset=preset, steps=steps, seed=0, progress=not args.quiet, log_every=log_every, **extra)
    if out_dir is not None:
        kw["out_dir"] = out_dir
    if args.quick:
        kw.update(batch_size=64, **({"bank_size": 512} if reg in ("msf", "cmsf") else {}),
                  **({"queue_size": 512} if reg == "moco" else {}))
    return REG[reg].run(train, labels=labels if name == "cmsf_labels" else None, **kw)


def stage_calibrate(args, res):
    from uslkit.train.registry import LEARNERS as REG

    train, _, _, _, labels = _inputs(args, res)
    cal = res.setdefault("calibration", {})
    for name in args.learners:
        if name in cal and not args.quick:
            continue
        probe = 4 if args.quick else 30
        reg, _, preset = LEARNERS[name]
        t0 = time.perf_counter()
        # SeLa's probe re-labels at step 0 only: that step's extra time is the cost of one update
        once = {"label_updates": 1} if reg == "sela" else {}
        r = _run(args, name, train, labels, steps=probe, log_every=1, **once)
        wall = time.perf_counter() - t0
        bs = 64 if args.quick else REG[reg].config.preset(preset).batch_size
        per = [bs / h["samples_per_s"] for h in r.history if "samples_per_s" in h]
        step_s = statistics.median(per[1:]) if len(per) > 1 else per[0]
        rec = {"probe_steps": probe, "seconds_per_step": step_s, "probe_wall_s": wall, "first_step_s": per[0]}
        if reg == "sela":  # step 0 also ran a label update: its extra cost, paid by every update
            rec["label_update_s"] = max(0.0, per[0] - step_s)
        cal[name] = rec
        log(f"calibrate {name}: {step_s:.3f} s/step (probe {probe} steps, {wall:.0f} s)")
        save(args, res)


def steps_for(args, res, name) -> int:
    from uslkit.train.config import SeLaConfig

    cal = res["calibration"][name]
    budget = budget_seconds(args)
    if LEARNERS[name][0] == "sela":
        budget -= SeLaConfig.preset("cpu").label_updates * cal.get("label_update_s", 0.0)
    return max(1, int(budget / cal["seconds_per_step"]))


def stage_train(args, res):
    train, test, _, _, labels = _inputs(args, res)
    runs = res.setdefault("runs", {})
    for name in args.learners:
        if name not in res.get("calibration", {}):
            raise SystemExit(f"no calibration for {name}: run the calibrate stage first")
        steps = args.steps or steps_for(args, res, name)
        out = Path(args.work) / f"{name}_steps{steps}"
        rec = runs.get(name)
        if rec and rec.get("steps") == steps and "eval" in rec:
            if (out / "model.pt").exists():
                continue
            # recorded, but its run folder is gone (data/ is not in git): train it again, from the same seed
            log(f"train {name}: {out / 'model.pt'} is missing; training it again and checking it reproduces")
        log(f"train {name}: {steps} steps -> {out}")
        t0 = time.perf_counter()
        r = _run(args, name, train, labels, steps=steps, out_dir=out)
        wall = time.perf_counter() - t0
        rec = {"steps": steps, "run_dir": str(out), "train_wall_s": None if r.reused else wall,
               "resumed_from": r.resumed_from, "history_tail": r.history[-3:], "cpu": machine()["cpu"]}
        prev = runs.get(name) if runs.get(name, {}).get("steps") == steps else None
        if rec["train_wall_s"] is None and prev:  # reloaded: keep the wall time measured when it trained
            rec["train_wall_s"] = prev.get("train_wall_s")
        if prev and "eval" in prev:  # trained again: the recorded run is kept, and compared below
            rec["previous"] = {k: v for k, v in prev.items() if k not in ("previous", "history_tail")}
        elif prev and "previous" in prev:  # an interrupted evaluation of a run trained again
            rec["previous"] = prev["previous"]
        runs[name] = rec
        save(args, res)
        rec["eval"] = evaluate_encoder(args, f"{out}/model.pt", train, test, labels, own_labels=name == "cmsf_labels")
        if "previous" in rec:
            rec["reproduces_previous"] = rec["eval"] == rec["previous"]["eval"]
            log(f"train {name}: the evaluation {'equals' if rec['reproduces_previous'] else 'DIFFERS from'} the "
                "recorded run's (kept as 'previous')")
        save(args, res)


def _embed(encoder, train, test):
    from uslkit.train.models import load_model

    return simclr_embeddings(load_model(encoder), train, test, progress=False)


def evaluate_embedding(args, x_tr, x_te, train, test, labels_path, *, own_labels=False) -> dict:
    from uslkit.evaluate import knn_metrics, linear_probe_accuracy, nn_accuracy
    from uslkit.labels import load_selection
    from uslkit.select import select

    y_tr, y_te = train.labels, test.labels
    out = {"full": knn_metrics(x_tr, y_tr, x_te, y_te), "picks": {}}
    lab_idx, lab_y = load_selection(labels_path, dataset=train).as_arrays()
    out["probe_usl40"] = linear_probe_accuracy(x_tr[lab_idx], lab_y, x_te, y_te)
    out["nn1_usl40"] = nn_accuracy(x_tr[lab_idx], lab_y, x_te, y_te)
    if own_labels:  # its budget is spent: only the labels it trained on
        return out
    seeds = SEEDS[:2] if args.quick else SEEDS
    for method in METHODS:
        for b in BUDGETS:
            accs = []
            for s in seeds:
                idx = np.asarray(select(method, x_tr, b, seed=s))
                accs.append(nn_accuracy(x_tr[idx], y_tr[idx], x_te, y_te))
            out["picks"][f"{method}_b{b}"] = accs
    return out


def evaluate_encoder(args, encoder, train, test, labels_path, *, own_labels=False) -> dict:
    x_tr, x_te = _embed(encoder, train, test)
    return evaluate_embedding(args, x_tr, x_te, train, test, labels_path, own_labels=own_labels)


def stage_eval(args, res):
    """PCA-64 and the recorded SimCLR encoder (the learners are evaluated when they finish training)."""
    train, test, x_pca, x_pca_te, labels = _inputs(args, res)
    base = res.setdefault("baselines", {})
    if "pca64" not in base:
        base["pca64"] = evaluate_embedding(args, x_pca, x_pca_te, train, test, labels)
        save(args, res)
    simclr = Path(SIMCLR_RUN) / "model.pt"
    if "simclr" not in base and simclr.exists() and not args.quick:
        base["simclr"] = evaluate_encoder(args, simclr, train, test, labels)
        save(args, res)


def _ms(values, scale=100.0) -> str:
    if not values:
        return "-"
    v = [scale * x for x in values]
    return f"{statistics.mean(v):.1f} ± {statistics.stdev(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def best_encoder(res) -> str:
    """The self-supervised learner with the highest mean USL b=40 1-NN accuracy (FixMatch's budget)."""
    scored = {name: statistics.mean(rec["eval"]["picks"][f"usl_b{FIX_BUDGET}"])
              for name, rec in res.get("runs", {}).items() if name != "cmsf_labels" and "eval" in rec}
    if not scored:
        raise SystemExit("no evaluated learner yet: run the train stage first")
    return max(scored, key=scored.get)


def reference_set(steps: int) -> dict:
    """The SimCLR-initialised FixMatch set of ``steps`` steps recorded by ``bench_train_fmnist.py fixmatch``."""
    rec = _io.read_json(HERE / "results" / "train_fmnist.json")
    for fx in rec.get("fixmatch_sets", []):
        if fx.get("init") == f"{SIMCLR_RUN}/model.pt" and fx.get("steps") == steps:
            return fx
    raise SystemExit(f"--fix-steps {steps}: no SimCLR-initialised FixMatch set of that length in train_fmnist.json "
                     f"(run `python benchmarks/bench_train_fmnist.py fixmatch --steps {steps}` first)")


def stage_fixmatch(args, res):
    train, test, _, _, _ = _inputs(args, res)
    name = best_encoder(res) if args.encoder == "best" else args.encoder
    if name not in res.get("runs", {}):
        raise SystemExit(f"--encoder {name}: not trained yet (trained: {', '.join(res.get('runs', {})) or 'none'})")
    init = Path(res["runs"][name]["run_dir"]) / "model.pt"
    if args.quick:
        steps, params = QUICK["steps"], {}
    else:
        steps, params = args.fix_steps, dict(reference_set(args.fix_steps)["params"])
    emb, _ = _embed(init, train, test)
    fx = fixmatch_set(res, str(init), params, steps)
    fx["encoder"] = name
    fx.setdefault("cpu", machine()["cpu"])  # the recorded SimCLR runs' machine may be another
    fx_args = argparse.Namespace(methods=["usl"], seeds=args.seeds, arch="cnn_small", work=args.work, minutes=None)
    log(f"fixmatch from {name}: {steps} steps, seeds {args.seeds}")
    fixmatch_runs(fx_args, fx, train, test, emb, init, params=params, save=lambda: save(args, res))


def _fixmatch_md(res) -> list[str]:
    lines = []
    for fx in res.get("fixmatch_sets", []):
        runs = {r["seed"]: r for r in fx["runs"].values() if "ema_top1" in r}
        if not runs:
            continue
        try:
            ref = {r["seed"]: r for r in reference_set(fx["steps"])["runs"].values()
                   if r["method"] == "usl" and "ema_top1" in r}
        except SystemExit:
            ref = {}
        seeds = sorted(runs)
        paired = [runs[s]["ema_top1"] - ref[s]["ema_top1"] for s in seeds if s in ref]
        params = ", ".join(f"{k}={v}" for k, v in fx["params"].items()) or "the preset's parameters"
        lines += ["", f"FixMatch, {FIX_BUDGET} USL labels, {fx['steps']} steps, {params}: init and picks from "
                      f"**{fx['encoder']}** vs the SimCLR-initialised runs (`train_fmnist.json`, same steps, "
                      "parameters and seeds; picks on SimCLR's embedding)"
                      + (f"; these runs on {fx['cpu']}" if fx.get("cpu") else "") + ". EMA top-1, seeds "
                      + ", ".join(map(str, seeds)) + ".",
                  "",
                  "| init | EMA top-1 per seed | mean ± sd | top-1 mean |",
                  "|---|---|---|---|",
                  f"| {fx['encoder']} | " + ", ".join(f"{100 * runs[s]['ema_top1']:.1f}" for s in seeds)
                  + f" | {_ms([runs[s]['ema_top1'] for s in seeds])} | {_ms([runs[s]['top1'] for s in seeds])} |"]
        if ref:
            rs = [s for s in seeds if s in ref]
            lines.append("| SimCLR (recorded) | " + ", ".join(f"{100 * ref[s]['ema_top1']:.1f}" for s in rs)
                         + f" | {_ms([ref[s]['ema_top1'] for s in rs])} | {_ms([ref[s]['top1'] for s in rs])} |")
            lines += ["", f"Paired by seed ({fx['encoder']} - SimCLR): "
                      + ", ".join(f"{100 * d:+.1f}" for d in paired) + " points."]
    return lines


def markdown(res) -> str:
    rows = [("PCA-64", res.get("baselines", {}).get("pca64"), None),
            ("SimCLR (recorded CPU preset)", res.get("baselines", {}).get("simclr"), None)]
    again = []
    for name, rec in res.get("runs", {}).items():
        rows.append((name, rec.get("eval"), rec))
        if "previous" in rec:  # trained again after its run folder was lost: the earlier record beside it
            rows.append((f"{name} (earlier run)", rec["previous"].get("eval"), rec["previous"]))
            cpus = f", on {rec.get('cpu')} after {rec['previous'].get('cpu') or 'the recorded machine'}" \
                if rec.get("cpu") and rec.get("cpu") != rec["previous"].get("cpu") else ""
            again.append(f"{name} ({'the same evaluation' if rec.get('reproduces_previous') else 'a different one'}"
                         f"{cpus})")
    lines = [f"Command: `python benchmarks/bench_representations.py calibrate|eval|train|fixmatch` (results: "
             f"`benchmarks/results/representations.json`). Machine: {res.get('machine', {}).get('cpu')}, "
             f"{res.get('machine', {}).get('cpu_count')} cores. Equal time: "
             f"{res.get('budget_s', 0):.0f} s of training per learner (the SimCLR CPU preset's).",
             "",
             "| embedding | steps | train s | 1-NN | w10-NN | " + " | ".join(
                 f"{m} b={b}" for m in METHODS for b in BUDGETS) + " | probe 40 USL | 1-NN 40 USL |",
             "|" + "---|" * (6 + len(METHODS) * len(BUDGETS) + 1)]
    for name, ev, rec in rows:
        if not ev:
            continue
        wall = f"{rec['train_wall_s']:.0f}" if rec and rec.get("train_wall_s") else "-"
        if rec and rec.get("resumed_from"):
            wall += f" (from step {rec['resumed_from']})"
        cells = [name, str(rec["steps"]) if rec else "-", wall,
                 f"{100 * ev['full']['knn1']:.1f}", f"{100 * ev['full']['knn10_weighted']:.1f}"]
        cells += [_ms(ev["picks"].get(f"{m}_b{b}")) for m in METHODS for b in BUDGETS]
        cells += [f"{100 * ev['probe_usl40']:.1f}", f"{100 * ev['nn1_usl40']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    if again:
        lines += ["", "Trained again from the same seed and settings, the earlier run's folder being gone: "
                  + ", ".join(again) + ". The \"(earlier run)\" row is the recorded evaluation of the first "
                  "run; the row above it, and FixMatch, are the new encoder's."]
    purity = []
    for name, rec in res.get("runs", {}).items():
        last = next((h for h in reversed(rec.get("history_tail", [])) if "purity_msf" in h), None)
        if last:
            purity.append(f"{name} {100 * last['purity_msf']:.1f}" + (
                f" / {100 * last['purity_c']:.1f}" if "purity_c" in last else ""))
    if purity:
        lines += ["", "Top-k purity of the targets' neighbours at the last logged step, whole bank / constraint set "
                      "(the paper's Fig. 5; true labels read for this log only): " + ", ".join(purity) + "."]
    cal = res.get("calibration", {})
    if cal:
        lines += ["", "Calibration (seconds per step, median of a 30-step probe run alone; SeLa also pays "
                      f"{cal.get('sela', {}).get('label_update_s', 0):.1f} s per label update, measured at step 0): "
                  + ", ".join(f"{k} {v['seconds_per_step']:.3f}" for k, v in cal.items())
                  + ". `train s` is the wall time of the run (of its resumed part where it resumed), longer than the "
                    "budget where other work shared the 2 cores (the steps were fixed beforehand)."]
    lines += _fixmatch_md(res)
    return "\n".join(lines) + "\n"


def save(args, res) -> None:
    res["machine"] = res.get("machine") or machine()
    res["budget_s"] = budget_seconds(args)
    _io.atomic_write_json(Path(args.out), res)
    if not args.quick:
        update_section(Path(args.results_md), SECTION, markdown(res))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("stage", choices=["calibrate", "train", "eval", "fixmatch", "report"])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--learners", nargs="+", default=list(LEARNERS), choices=list(LEARNERS))
    ap.add_argument("--seconds", type=float, default=None, help="training seconds per learner (default: SimCLR's)")
    ap.add_argument("--steps", type=int, default=None, help="one length for every learner instead of calibration")
    ap.add_argument("--encoder", default="best", help="fixmatch: the learner whose encoder initialises it and picks")
    ap.add_argument("--fix-steps", type=int, default=1000, help="fixmatch: steps (a recorded SimCLR set's length)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fixmatch: seeds (selection and run)")
    ap.add_argument("--work", default="data/bench_runs/representations")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    if args.out is None:
        args.out = str(HERE / "results" / ("representations_quick.json" if args.quick else "representations.json"))
    if args.quick:
        args.work = str(Path(args.work) / "quick")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    res = _io.read_json(Path(args.out)) if Path(args.out).exists() else {}
    if args.stage == "report":
        save(args, res)
        return
    {"calibrate": stage_calibrate, "train": stage_train, "eval": stage_eval,
     "fixmatch": stage_fixmatch}[args.stage](args, res)


if __name__ == "__main__":
    main()
