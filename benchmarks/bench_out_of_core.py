"""Benchmark (issue 17): USL on embeddings larger than memory: a memory map and the compressed (IVF-PQ) density.

Two parts; results in ``benchmarks/results/out_of_core.json`` and the section "Selection: embeddings larger than
memory (issue 17)" of ``benchmarks/RESULTS.md``:

- ``quality``: Fashion-MNIST train (pixels PCA-64, and each ``--emb`` file), L2-normalised, k = 400: the density of
  ``knn_density(mode="ivfpq")`` (default code) against the exact one (median and 99th-percentile relative error,
  Spearman's rank correlation, seconds), then USL at budgets 20, 40 and 100 and seeds 0-4 on each density (the
  stages of ``select_usl``: the IVF-PQ density is trained with the selection's seed, as ``select_usl`` does): picks
  shared with exact USL, and the 1-NN accuracy of the picks on the test set (mean and spread over the seeds).
- ``scale``: a seeded mixture of unequal clusters (``bench_select_speed.aniso_mixture``, ``--n`` points, 128-d,
  500 components) saved as ``.npy``; in a fresh process ``select_usl(np.load(path, mmap_mode="r"), 1000,
  knn_mode="ivfpq")``: seconds, the peak anonymous resident memory the call added (``RssAnon`` sampled every 50 ms;
  the mapped file's pages belong to the page cache and are not counted), the file's size, and the coverage of the
  mixture's components.

    python benchmarks/bench_out_of_core.py quality            # ~10 min here
    python benchmarks/bench_out_of_core.py scale --n 2000000  # ~10 min here
    python benchmarks/bench_out_of_core.py --quick            # seconds: tiny sizes, both parts
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

HERE = Path(__file__).resolve().parent
HEADING = "Selection: embeddings larger than memory (issue 17)"
K = 400
BUDGETS = (20, 40, 100)
SEEDS = (0, 1, 2, 3, 4)
SCALE_BUDGET = 1000
SCALE_COMPONENTS = 500
RESULTS = HERE / "results" / "out_of_core.json"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class AnonPeak:
    """Peak of ``RssAnon`` (anonymous resident memory, in MB) while the block runs, sampled every 50 ms."""

    def __enter__(self):
        self.start = self.peak = _status_kb("RssAnon")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, _status_kb("RssAnon"))

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _status_kb("RssAnon"))
        self.added_mb = (self.peak - self.start) / 1024


# ==========================================================================================================
# quality
# ==========================================================================================================
def _usl_picks(x, density, budget, seed):
    """USL's picks from a given density: ``select_usl``'s K-means and Alg. 1 with its default configuration."""
    from uslkit.cluster import kmeans
    from uslkit.select.usl import _kmeans_mppc, usl_config, usl_regularized_selection

    cfg = usl_config(x.shape[0], budget)
    clusters, _ = kmeans(x, budget, seed=seed, niter=cfg["kmeans_niter"],
                         max_points_per_centroid=_kmeans_mppc(cfg["kmeans_points_per_centroid"]))
    return usl_regularized_selection(x, density, clusters, lam=cfg["lam"], alpha=cfg["alpha"],
                                     momentum=cfg["momentum"], iterations=cfg["iterations"], horizon=cfg["horizon"],
                                     exclude_same_cluster=cfg["exclude_same_cluster"])


def quality_one(name, x, y, x_te, y_te, *, k, budgets, seeds) -> dict:
    from scipy.stats import spearmanr

    from uslkit.evaluate import nn_accuracy
    from uslkit.knn import knn_density
    from uslkit.select import select_usl

    t0 = time.perf_counter()
    exact = knn_density(x, k, mode="exact")
    t_exact = time.perf_counter() - t0
    out = {"embedding": name, "n": int(x.shape[0]), "d": int(x.shape[1]), "k": k, "exact_s": t_exact, "seeds": []}
    acc = {("exact", b): [] for b in budgets} | {("ivfpq", b): [] for b in budgets}
    for seed in seeds:
        t0 = time.perf_counter()
        pq, recall = knn_density(x, k, mode="ivfpq", seed=seed, return_recall=True)
        t_pq = time.perf_counter() - t0
        rel = np.abs(pq - exact) / exact
        row = {"seed": seed, "ivfpq_s": t_pq, "recall": recall, "rel_err_median": float(np.median(rel)),
               "rel_err_p99": float(np.quantile(rel, 0.99)), "spearman": float(spearmanr(pq, exact).statistic),
               "budgets": {}}
        for b in budgets:
            a = _usl_picks(x, exact, b, seed)
            if seed == seeds[0] and b == budgets[0]:  # the stages are select_usl's: the same picks
                assert np.array_equal(a, select_usl(x, b, seed=seed, k=k, knn_mode="exact")), "stages != select_usl"
            p = _usl_picks(x, pq, b, seed)
            acc_a = nn_accuracy(x[a], y[a], x_te, y_te, k=1, metric="cosine")
            acc_p = nn_accuracy(x[p], y[p], x_te, y_te, k=1, metric="cosine")
            acc["exact", b].append(acc_a)
            acc["ivfpq", b].append(acc_p)
            row["budgets"][str(b)] = {"shared": int(np.intersect1d(a, p).size), "acc_exact": acc_a,
                                      "acc_ivfpq": acc_p}
        out["seeds"].append(row)
        print(f"{name} seed {seed}: ivfpq {t_pq:.1f} s (exact {t_exact:.1f} s), recall {recall:.3f}, "
              f"median rel. err {row['rel_err_median']:.4f}, spearman {row['spearman']:.5f}, "
              + ", ".join(f"b{b}: {v['shared']} shared, 1-NN {v['acc_exact']:.3f} vs {v['acc_ivfpq']:.3f}"
                          for b, v in row["budgets"].items()), flush=True)
    out["acc"] = {f"{mode}/{b}": {"mean": statistics.mean(v), "sd": statistics.pstdev(v)}
                  for (mode, b), v in acc.items()}
    return out


def run_quality(args) -> list[dict]:
    from uslkit.data import load_dataset
    from uslkit.embed import compute_embeddings, l2_normalize

    y = load_dataset("fashion_mnist", "train").labels.astype(np.int64)
    y_te = load_dataset("fashion_mnist", "test").labels.astype(np.int64)
    x, _ = compute_embeddings("fashion_mnist", split="train", pca=64, progress=False)
    x_te, _ = compute_embeddings("fashion_mnist", split="test", pca=64, progress=False)
    pairs = [("pixels PCA-64", x, x_te)]
    for emb in args.emb:
        p = Path(emb)
        te = Path(str(p).replace("/train/", "/test/"))
        if not te.exists():
            raise SystemExit(f"--emb {emb}: no test embedding at {te}")
        pairs.append((p.name, np.load(p), np.load(te)))
    out = []
    for name, tr, te in pairs:
        tr, te = l2_normalize(tr), l2_normalize(te)
        if args.quick:
            keep = np.sort(np.random.default_rng(0).choice(tr.shape[0], 3000, replace=False))
            tr, yy = tr[keep], y[keep]
        else:
            yy = y
        out.append(quality_one(name, tr, yy, te, y_te, k=20 if args.quick else K,
                               budgets=(20,) if args.quick else BUDGETS, seeds=SEEDS[:1] if args.quick else SEEDS))
    return out


# ==========================================================================================================
# scale
# ==========================================================================================================
WORKER = r"""
import json, logging, sys, time
import numpy as np
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {here!r})
from bench_out_of_core import AnonPeak
from uslkit.select import select_usl
x = np.load({path!r}, mmap_mode="r")
select_usl(np.array(x[:5000]), 10, seed=0, knn_mode="ivfpq")  # warm-up: compiled kernels and libraries loaded
with AnonPeak() as mem:
    t0 = time.perf_counter()
    idx = select_usl(x, {budget}, seed=0, knn_mode="ivfpq")
    secs = time.perf_counter() - t0
print(json.dumps({{"seconds": secs, "anon_added_mb": mem.added_mb, "indices": idx.tolist()}}))
"""


def run_scale(args) -> dict:
    sys.path.insert(0, str(HERE))
    from bench_select_speed import aniso_mixture

    n = 20_000 if args.quick else args.n
    budget = 50 if args.quick else SCALE_BUDGET
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        path = Path(tmp) / "x.npy"
        x, y = aniso_mixture(n, 128, SCALE_COMPONENTS, 1.0, 0)
        np.save(path, x)
        del x
        size_mb = path.stat().st_size / 2**20
        print(f"scale: {n} x 128 written ({size_mb:.0f} MB); USL budget {budget}, knn_mode='ivfpq' on the map",
              flush=True)
        code = WORKER.format(here=str(HERE), path=str(path), budget=budget)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(proc.stderr[-3000:])
        res = json.loads(proc.stdout.strip().splitlines()[-1])
    logs = [ln for ln in proc.stderr.splitlines() if "IVF-PQ (" in ln]
    sizes = np.bincount(y, minlength=SCALE_COMPONENTS)
    covered = np.unique(y[res["indices"]]).size
    out = {"n": n, "d": 128, "budget": budget, "file_mb": size_mb, "seconds": res["seconds"],
           "anon_added_mb": res["anon_added_mb"], "coverage": covered / SCALE_COMPONENTS,
           "component_sizes": [int(sizes.max()), int(sizes.min())], "log": logs[-1] if logs else None}
    print(f"scale: {res['seconds']:.0f} s, +{res['anon_added_mb']:.0f} MB anonymous, covers {covered} of "
          f"{SCALE_COMPONENTS} components", flush=True)
    return out


# ==========================================================================================================
# report
# ==========================================================================================================
def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, {result['date']}. "
             "`python benchmarks/bench_out_of_core.py quality` and `scale --n N`; the code's choices and bounds: "
             "`uslkit/_ivfpq.py`.", ""]
    for q in result.get("quality", []):
        lines += [f"**Density and picks, {q['embedding']}** ({q['n']} x {q['d']}, k = {q['k']}; exact density "
                  f"{q['exact_s']:.1f} s):", "",
                  "| seed | IVF-PQ s | recall@k | rel. error median | p99 | Spearman | shared picks (b20/b40/b100) |",
                  "|---|---|---|---|---|---|---|"]
        for r in q["seeds"]:
            shared = "/".join(str(v["shared"]) for v in r["budgets"].values())
            lines.append(f"| {r['seed']} | {r['ivfpq_s']:.1f} | {r['recall']:.3f} | {r['rel_err_median']:.4f} | "
                         f"{r['rel_err_p99']:.4f} | {r['spearman']:.5f} | {shared} |")
        lines += ["", "| budget | 1-NN exact USL | 1-NN IVF-PQ USL |", "|---|---|---|"]
        budgets = sorted({int(b) for r in q["seeds"] for b in r["budgets"]})
        for b in budgets:
            e, p = q["acc"][f"exact/{b}"], q["acc"][f"ivfpq/{b}"]
            lines.append(f"| {b} | {100 * e['mean']:.1f} +- {100 * e['sd']:.1f} | "
                         f"{100 * p['mean']:.1f} +- {100 * p['sd']:.1f} |")
        lines.append("")
    for s in result.get("scale", []):
        lines += [f"**USL on a memory map, {s['n']:,} x {s['d']}** (unequal clusters, {s['component_sizes'][0]} to "
                  f"{s['component_sizes'][1]} points; file {s['file_mb']:.0f} MB), budget {s['budget']}, "
                  f"`knn_mode=\"ivfpq\"`: {s['seconds']:.0f} s, +{s['anon_added_mb']:.0f} MB anonymous memory at "
                  f"peak, coverage {100 * s['coverage']:.1f} % of the components.", ""]
        if s.get("log"):
            lines += [f"Density log: `{s['log'].split('uslkit.knn:')[-1].strip()}`", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("part", nargs="*", default=[], help="quality, scale or both")
    ap.add_argument("--n", type=int, default=2_000_000, help="scale: points (default 2,000,000)")
    ap.add_argument("--emb", nargs="*", default=[], help="quality: more train embeddings (.npy under .../train/)")
    ap.add_argument("--tmp", default=None, help="scale: folder for the .npy (default: the system's temp folder)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, both parts, results not recorded")
    ap.add_argument("--report-only", action="store_true", help="re-render RESULTS.md from the JSON")
    args = ap.parse_args(argv)
    parts = ["quality", "scale"] if args.quick and not args.part else args.part
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if args.report_only:
        update_section(HERE / "RESULTS.md", HEADING, markdown(old))
        return
    if not parts or set(parts) - {"quality", "scale"}:
        ap.error(f"name the parts to run, quality and/or scale (or --quick), got {parts}")
    result = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "quality": old.get("quality", []), "scale": old.get("scale", [])}
    def save():  # after each part: a long scale run that fails keeps the quality results
        if args.quick:
            return
        from uslkit import _io

        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        _io.atomic_write_text(RESULTS, json.dumps(result, indent=1))
        update_section(HERE / "RESULTS.md", HEADING, markdown(result))

    if "quality" in parts:
        result["quality"] = run_quality(args)
        save()
    if "scale" in parts:
        new = run_scale(args)
        result["scale"] = [s for s in result["scale"] if s["n"] != new["n"]] + [new]
        save()
    if args.quick:
        print(markdown(result))


if __name__ == "__main__":
    main()
