"""Benchmark: label efficiency of every selection method on Fashion-MNIST 64-d PCA pixel embeddings.

For each method of :data:`uslkit.select.METHODS` (except ``kmeans_multi``, which equals ``kmeans`` without
an earlier labelled set), each budget and each seed: select on the 60,000 train embeddings, then measure

- class coverage (fraction of the 10 classes with at least one pick),
- 1-NN test accuracy (cosine, fitted on the picks only; the low-budget AL paper's protocol),
- logistic-regression test accuracy (:func:`uslkit.evaluate.linear_probe_accuracy`),
- normalised entropy of the class histogram of the picks,
- wall time of the ``select`` call.

``stratified`` is the ORACLE baseline (it sees the true labels); ``probcover`` gets ``num_classes=10`` to
choose its radius. Every run is appended to the results JSON as soon as it is done (atomic write), so an
interrupted benchmark resumes where it stopped: a (method, budget, seed) already in the file is skipped
when the file's ``config`` matches this one (a mismatching file is an error unless ``--overwrite``).

At the end it writes the summary (mean +- sample std over seeds), the check of the target "at budget 20,
USL and K-means beat random by at least 10 points of 1-NN accuracy and cover all 10 classes" (on the mean
and per seed), a figure, and the section "Selection: label efficiency" of ``benchmarks/RESULTS.md``.

    python benchmarks/bench_label_efficiency.py                 # the real experiment (~30-60 min, 2 cores)
    python benchmarks/bench_label_efficiency.py --quick         # seconds: 3,000 train / 1,000 test points
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

from uslkit import _io
from uslkit.embed import compute_embeddings
from uslkit.evaluate import class_coverage, imbalance, linear_probe_accuracy, nn_accuracy
from uslkit.select import METHODS, select

HERE = Path(__file__).resolve().parent

# ---- the real experiment (defaults) -------------------------------------------------------------------
DATASET = "fashion_mnist"
PCA_DIM = 64  # pixel embeddings, PCA to 64 dims, L2-normalised (uslkit.embed)
BUDGETS = (10, 20, 40, 100)
SEEDS = (0, 1, 2, 3, 4)
EXCLUDED = ("kmeans_multi",)  # = kmeans when nothing is labelled yet
NUM_CLASSES = 10
# ---- the target of the issue ------------------------------------------------------------------------
TARGET_BUDGET = 20
TARGET_METHODS = ("usl", "kmeans")
TARGET_BASELINE = "random"
TARGET_MARGIN = 0.10  # 1-NN accuracy, absolute (10 points)
# ---- --quick ------------------------------------------------------------------------------------------
QUICK = dict(n_train=3000, n_test=1000, budgets=(10, 20), seeds=(0, 1), subset_seed=0)

SECTION = "Selection: label efficiency"
METRICS = ("nn1_acc", "logreg_acc", "coverage", "norm_entropy", "select_s")
METRIC_TITLES = {"nn1_acc": "1-NN test accuracy (%)", "logreg_acc": "logistic-regression test accuracy (%)",
                 "coverage": "class coverage (%)", "norm_entropy": "normalised class entropy",
                 "select_s": "selection time (s)"}


# ==========================================================================================================
# Machine and floor
# ==========================================================================================================


def gemm_floor_seconds(x: np.ndarray, *, repeats: int = 3, max_rows: int = 4096) -> dict:
    """Time of one brute-force ``n x n x d`` float32 product ``x @ x.T``, extrapolated from row slices.

    ``max_rows`` rows at a time (never the ``n x n`` matrix); the median over ``repeats`` of the time per
    slice, times ``n / rows``. This is the floor any exact all-pairs method (exact kNN, ProbCover) pays.
    """
    n = x.shape[0]
    rows = min(n, max_rows)
    xt = np.ascontiguousarray(x.T)
    x[:rows] @ xt  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        x[:rows] @ xt
        ts.append(time.perf_counter() - t0)
    return {"n": n, "d": x.shape[1], "rows_timed": rows, "extrapolated": rows < n,
            "seconds": statistics.median(ts) * n / rows}


# ==========================================================================================================
# Data, one run
# ==========================================================================================================
def load_data(quick: bool) -> tuple[dict, dict]:
    """Train/test embeddings and labels, and the description that goes into ``config``."""
    from uslkit.data import load_dataset

    x_tr, meta = compute_embeddings(DATASET, split="train", pca=PCA_DIM, progress=False)
    x_te, _ = compute_embeddings(DATASET, split="test", pca=PCA_DIM, progress=False)
    y_tr = load_dataset(DATASET, "train").labels.astype(np.int64)
    y_te = load_dataset(DATASET, "test").labels.astype(np.int64)
    desc = {"dataset": DATASET, "encoder": "pixels", "pca": PCA_DIM, "pca_fit": "train split",
            "normalized": "l2", "fingerprint": meta.get("fingerprint"), "subset": None}
    if quick:
        rng = np.random.default_rng(QUICK["subset_seed"])
        tr = np.sort(rng.choice(x_tr.shape[0], QUICK["n_train"], replace=False))
        te = np.sort(rng.choice(x_te.shape[0], QUICK["n_test"], replace=False))
        x_tr, y_tr, x_te, y_te = x_tr[tr], y_tr[tr], x_te[te], y_te[te]
        desc["subset"] = {"seed": QUICK["subset_seed"], "n_train": QUICK["n_train"], "n_test": QUICK["n_test"]}
    desc.update(n_train=int(x_tr.shape[0]), n_test=int(x_te.shape[0]), dim=int(x_tr.shape[1]))
    return {"x_tr": x_tr, "y_tr": y_tr, "x_te": x_te, "y_te": y_te}, desc


def method_params(method: str) -> dict:
    """Options beyond the defaults; :func:`run_one` also passes the true labels, read by the oracle only."""
    return {"probcover": {"num_classes": NUM_CLASSES}}.get(method, {})


def run_one(method: str, budget: int, seed: int, data: dict) -> dict:
    """Select, then evaluate the picks; returns one JSON-friendly record."""
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    idx = select(method, data["x_tr"], budget, seed=seed, labels=data["y_tr"], **method_params(method))
    t_sel = time.perf_counter() - t0
    y_sel = data["y_tr"][idx]
    imb = imbalance(y_sel, NUM_CLASSES)
    return {
        "method": method, "budget": budget, "seed": seed,
        "coverage": class_coverage(y_sel, NUM_CLASSES),
        "nn1_acc": nn_accuracy(data["x_tr"][idx], y_sel, data["x_te"], data["y_te"], k=1, metric="cosine"),
        "logreg_acc": linear_probe_accuracy(data["x_tr"][idx], y_sel, data["x_te"], data["y_te"], seed=seed),
        "norm_entropy": imb["normalized_entropy"], "num_missing": imb["num_missing"],
        "histogram": np.bincount(y_sel, minlength=NUM_CLASSES).tolist(),
        "select_s": t_sel, "loadavg_1min_before": load,
        "indices": idx.tolist(), "git_commit": _io.git_commit(),
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# ==========================================================================================================
# Summary, check, table, figure
# ==========================================================================================================
def summarise(runs: list[dict], methods, budgets) -> dict:
    """``summary[method][budget][metric] = {"mean", "std", "n"}`` (std: sample std, ddof=1)."""
    out: dict = {}
    for m in methods:
        for b in budgets:
            rs = [r for r in runs if r["method"] == m and r["budget"] == b]
            if not rs:
                continue
            cell = {}
            for key in METRICS:
                v = np.array([r[key] for r in rs], dtype=np.float64)
                cell[key] = {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                             "n": int(v.size)}
            out.setdefault(m, {})[str(b)] = cell
    return out


def check_target(runs: list[dict], seeds) -> dict:
    """The issue's target, on the means over seeds and seed by seed (paired with random's same seed)."""
    def get(m, s):
        return next((r for r in runs if r["method"] == m and r["budget"] == TARGET_BUDGET and r["seed"] == s),
                    None)

    res = {"budget": TARGET_BUDGET, "baseline": TARGET_BASELINE, "margin": TARGET_MARGIN, "methods": {}}
    for m in TARGET_METHODS:
        per_seed = []
        for s in seeds:
            r, base = get(m, s), get(TARGET_BASELINE, s)
            if r is None or base is None:
                continue
            gain = r["nn1_acc"] - base["nn1_acc"]
            per_seed.append({"seed": s, "nn1_acc": r["nn1_acc"], "random_nn1_acc": base["nn1_acc"],
                             "gain": gain, "coverage": r["coverage"],
                             "holds": bool(gain >= TARGET_MARGIN and r["coverage"] == 1.0)})
        if not per_seed:
            continue
        mean_gain = float(np.mean([p["gain"] for p in per_seed]))
        full = all(p["coverage"] == 1.0 for p in per_seed)
        res["methods"][m] = {
            "mean_gain": mean_gain, "full_coverage_all_seeds": full,
            "holds_on_mean": bool(mean_gain >= TARGET_MARGIN and full),
            "seeds_holding": sum(p["holds"] for p in per_seed), "seeds": len(per_seed), "per_seed": per_seed,
        }
    res["holds"] = bool(res["methods"]) and all(v["holds_on_mean"] for v in res["methods"].values())
    res["holds_every_seed"] = bool(res["methods"]) and all(
        v["seeds_holding"] == v["seeds"] for v in res["methods"].values())
    return res


def check_lines(chk: dict) -> list[str]:
    if not chk["methods"]:
        return [f"Target (budget {chk['budget']}): not evaluated, no runs of {TARGET_METHODS} and "
                f"{chk['baseline']} at that budget."]
    lines = [f"Target: at budget {chk['budget']}, {' and '.join(TARGET_METHODS)} beat {chk['baseline']} by >= "
             f"{100 * chk['margin']:.0f} points of 1-NN accuracy and cover all {NUM_CLASSES} classes: "
             f"**{'HOLDS' if chk['holds'] else 'FAILS'}** on the mean over seeds, "
             f"**{'holds' if chk['holds_every_seed'] else 'does not hold'}** in every seed."]
    for m, v in chk["methods"].items():
        seeds = ", ".join(f"seed {p['seed']}: {100 * p['gain']:+.1f} pts, coverage {100 * p['coverage']:.0f}%"
                          f"{'' if p['holds'] else ' (misses)'}" for p in v["per_seed"])
        missing = sum(p["coverage"] < 1.0 for p in v["per_seed"])
        short = "".join([
            f"; gain short of the margin by {100 * (chk['margin'] - v['mean_gain']):.1f} pts"
            if v["mean_gain"] < chk["margin"] else "",
            f"; classes missing in {missing}/{v['seeds']} seeds" if missing else ""])
        lines.append(f"- {m}: mean gain {100 * v['mean_gain']:+.1f} pts, holds in {v['seeds_holding']}/{v['seeds']} "
                     f"seeds{short} ({seeds})")
    return lines


def _fmt(cell: dict, key: str) -> str:
    c = cell[key]
    if key in ("nn1_acc", "logreg_acc", "coverage"):
        return f"{100 * c['mean']:.1f} ± {100 * c['std']:.1f}"
    if key == "norm_entropy":
        return f"{c['mean']:.3f} ± {c['std']:.3f}"
    return f"{c['mean']:.2f} ± {c['std']:.2f}"


def markdown(result: dict) -> str:
    cfg, summ = result["config"], result["summary"]
    methods, budgets = result["methods"], result["budgets"]
    mach = result["machine"]
    lines = [
        f"Fashion-MNIST pixels, PCA {cfg['data']['pca']}-d, L2-normalised: select from the {cfg['data']['n_train']:,} "
        f"train embeddings, evaluate on the {cfg['data']['n_test']:,} test embeddings. Seeds "
        f"{', '.join(map(str, result['seeds']))}; cells are mean ± sample std over seeds. `stratified` is the "
        "oracle (it sees the true labels); `probcover` chooses its radius with `num_classes=10`. "
        f"`benchmarks/bench_label_efficiency.py`, {result['finished'][:10]}, {mach['cpu']} ({mach['cpu_count']} "
        f"cores, numpy {mach['numpy']}, torch {mach['torch']}, faiss {mach['faiss']}); every run in "
        f"`benchmarks/results/{Path(result['path']).name}`, figure `benchmarks/results/{Path(result['figure']).name}`.",
        "",
    ]
    lines += check_lines(result["check"]) + [""]
    for key in METRICS:
        lines += [f"**{METRIC_TITLES[key]}**", "", "| method | " + " | ".join(f"budget {b}" for b in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for m in methods:
            cells = [_fmt(summ[m][str(b)], key) if str(b) in summ.get(m, {}) else "–" for b in budgets]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(
        "Note: `linear_probe_accuracy` runs with its default C=1, strong regularisation for 10-100 unit-norm "
        "samples; the unregularised intercept can then dominate and the probe predicts the selection's majority "
        "class almost everywhere, so this column rewards class balance as much as representativeness.")
    lines.append("")
    fl = result["floor"]
    loads = [r["loadavg_1min_before"] for r in result["runs"]]
    lines.append(
        f"Selection times are single calls (one per seed) on a machine with {mach['cpu_count']} cores that other jobs "
        f"shared: the 1-minute load average before a call had median {statistics.median(loads):.2f} and max "
        f"{max(loads):.2f} (per run in the JSON). For scale, one brute-force "
        f"{fl['n']:,} x {fl['n']:,} x {fl['d']} float32 product `x @ x.T` took {fl['seconds']:.1f} s in the same "
        f"run{' (extrapolated from ' + format(fl['rows_timed'], ',') + '-row slices)' if fl['extrapolated'] else ''}.")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summ, budgets = result["summary"], result["budgets"]
    keys = ("nn1_acc", "logreg_acc", "coverage")
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 4))
    for ax, key in zip(axes, keys):
        for i, m in enumerate(result["methods"]):
            bs = [b for b in budgets if str(b) in summ.get(m, {})]
            mean = np.array([100 * summ[m][str(b)][key]["mean"] for b in bs])
            std = np.array([100 * summ[m][str(b)][key]["std"] for b in bs])
            style = "--" if m == "stratified" else "-"
            line, = ax.plot(bs, mean, style, marker="o", ms=3, label=m + (" (oracle)" if m == "stratified" else ""),
                            color=f"C{i}")
            ax.fill_between(bs, mean - std, mean + std, color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xticks(budgets)
        ax.set_xticklabels([str(b) for b in budgets])
        ax.set_xlabel("budget (labelled samples)")
        ax.set_title(METRIC_TITLES[key])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.suptitle(f"Fashion-MNIST PCA-{PCA_DIM}: mean ± std over seeds {result['seeds']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    os.replace(tmp, path)
    plt.close(fig)




# ==========================================================================================================
# Main
# ==========================================================================================================
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    ap.add_argument("--methods", nargs="+", default=[m for m in METHODS if m not in EXCLUDED],
                    choices=sorted(METHODS))
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke run: {QUICK['n_train']} train / {QUICK['n_test']} test points, budgets "
                         f"{QUICK['budgets']}, seeds {QUICK['seeds']}; writes *_quick files, not RESULTS.md")
    ap.add_argument("--out", default=None,
                    help="results JSON (default benchmarks/results/label_efficiency[_quick].json)")
    ap.add_argument("--figure", default=None, help="PNG (default next to --out)")
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"),
                    help="Markdown file whose section is rewritten ('' = none; --quick never writes it)")
    ap.add_argument("--overwrite", action="store_true", help="discard a results file with a different config")
    args = ap.parse_args(argv)
    if args.quick:
        if args.budgets == list(BUDGETS):
            args.budgets = list(QUICK["budgets"])
        if args.seeds == list(SEEDS):
            args.seeds = list(QUICK["seeds"])
        args.results_md = ""
    suffix = "_quick" if args.quick else ""
    args.out = Path(args.out or HERE / "results" / f"label_efficiency{suffix}.json")
    args.figure = Path(args.figure or args.out.with_suffix(".png"))
    return args


def load_previous(path: Path, config: dict, overwrite: bool) -> list[dict]:
    """Runs of an earlier (possibly interrupted) invocation with the same config; [] if none."""
    if not path.exists():
        return []
    old = _io.read_json(path)
    if old.get("config") != config:
        if overwrite:
            print(f"[label-efficiency] {path} has a different config; starting over (--overwrite)", flush=True)
            return []
        sys.exit(f"{path} holds results of a different configuration:\n  file: {old.get('config')}\n  now:  "
                 f"{config}\nUse --out for a new file or --overwrite to discard it.")
    return list(old.get("runs", []))


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.perf_counter()
    data, desc = load_data(args.quick)
    config = {"data": desc, "num_classes": NUM_CLASSES,
              "method_params": {m: method_params(m) for m in sorted(METHODS) if method_params(m)},
              "eval": {"nn": "nn_accuracy k=1 cosine, fitted on the picks",
                       "logreg": "linear_probe_accuracy C=1 max_iter=1000 seed=<seed>"}}
    runs = load_previous(args.out, config, args.overwrite)
    done = {(r["method"], r["budget"], r["seed"]) for r in runs}
    todo = [(m, b, s) for b in args.budgets for m in args.methods for s in args.seeds if (m, b, s) not in done]
    mach = machine()
    floor = gemm_floor_seconds(data["x_tr"])
    print(f"[label-efficiency] {len(done)} runs already in {args.out}, {len(todo)} to do; "
          f"n_train={desc['n_train']}, floor x@x.T {floor['seconds']:.2f} s", flush=True)

    def snapshot(status: str) -> dict:
        return {"benchmark": "label efficiency of selection methods", "status": status, "config": config,
                "methods": args.methods, "budgets": args.budgets, "seeds": args.seeds, "machine": mach,
                "floor": floor, "runs": runs}

    for i, (m, b, s) in enumerate(todo, 1):
        rec = run_one(m, b, s, data)
        runs.append(rec)
        _io.atomic_write_json(args.out, snapshot("partial"))
        print(f"[label-efficiency] {i}/{len(todo)} {m:<10} budget {b:>3} seed {s}: 1-NN {100 * rec['nn1_acc']:.1f}% "
              f"logreg {100 * rec['logreg_acc']:.1f}% coverage {100 * rec['coverage']:.0f}% "
              f"select {rec['select_s']:.2f} s (elapsed {time.perf_counter() - t_start:.0f} s)", flush=True)

    wanted = [r for r in runs if r["method"] in args.methods and r["budget"] in args.budgets
              and r["seed"] in args.seeds]
    result = snapshot("complete")
    result.update(summary=summarise(wanted, args.methods, args.budgets), check=check_target(wanted, args.seeds),
                  wall_s_this_invocation=time.perf_counter() - t_start,
                  finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  path=str(args.out), figure=str(args.figure))
    _io.atomic_write_json(args.out, result)
    plot(result, args.figure)
    md = markdown(result)
    if args.results_md:
        update_section(Path(args.results_md), SECTION, md)
    print(md, flush=True)
    print(f"[label-efficiency] wrote {args.out}, {args.figure}"
          f"{', section of ' + args.results_md if args.results_md else ''}; "
          f"{time.perf_counter() - t_start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
