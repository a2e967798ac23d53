"""Benchmark (issue 17): the same picks on any thread count, and what the exact K-means costs and changes.

On Fashion-MNIST's 60,000 training images (the pixels' PCA-64 embedding, L2-normalised, and its seeded 128-d
random projection, the input on which the issue found faiss' K-means thread-dependent; ``--emb`` adds any
``.npy``), for ``uslkit.cluster.kmeans``' two backends (``exact``, the default, and ``faiss``):

- ``threads``: USL, K-means sampling and TypiClust at budget 40, seed 0, each in a subprocess with
  ``OMP_NUM_THREADS=1`` and ``2``: how many of the 40 picks the two share;
- ``cost``: K-means into 40 clusters (USL's setting: at most 100 iterations): seconds (median of 3, in this
  process, default threads), iterations taken, inertia;
- ``quality``: USL's 1-NN accuracy of the picks on the 10,000 test images at budgets 20 and 40, seeds 0-2.

Results: ``benchmarks/results/select_threads.json`` and the section "Selection: thread count and K-means
backend (issue 17)" of ``benchmarks/RESULTS.md``.

    python benchmarks/bench_select_threads.py            # all stages (about 10 minutes here)
    python benchmarks/bench_select_threads.py --quick    # seconds: 3,000 points, checks the code paths
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

HERE = Path(__file__).resolve().parent
HEADING = "Selection: thread count and K-means backend (issue 17)"
BACKENDS = ("exact", "faiss")
METHODS = ("usl", "kmeans", "typiclust")


def embeddings(args) -> dict:
    """name -> (train (n, d) float32, test (m, d) float32, y_train, y_test)."""
    from uslkit import notebook
    from uslkit.embed import l2_normalize

    train, test, xtr, xte = notebook.embedded_splits("fashion_mnist", encoder="pixels", pca=64, root=args.data_root,
                                                     max_samples=3000 if args.quick else 0, progress=False)
    n = len(train)
    xtr, xte = l2_normalize(xtr), l2_normalize(xte)
    flat = [np.asarray(d.images, dtype=np.float32).reshape(len(d), -1) / 255.0 for d in (train, test)]
    proj = np.random.default_rng(0).standard_normal((flat[0].shape[1], 128)).astype(np.float32)
    out = {"pca64": (xtr, xte), "proj128": (l2_normalize(flat[0] @ proj), l2_normalize(flat[1] @ proj))}
    for path in [] if args.quick else args.emb or []:
        e = np.load(path).astype(np.float32)
        if e.shape[0] != n:
            raise SystemExit(f"--emb {path} has {e.shape[0]} rows, not the {n} of Fashion-MNIST's training split")
        out[Path(path).stem] = (l2_normalize(e), None)
    return {k: (*v, np.asarray(train.labels)[:n], np.asarray(test.labels)) for k, v in out.items()}


WORKER = r"""
import sys, json, functools, numpy as np
import uslkit.cluster as cl
import uslkit.select.usl, uslkit.select.kmeans, uslkit.select.typiclust
from uslkit.select import select
x = np.load(sys.argv[1]); backend = sys.argv[2]
patched = functools.partial(cl.kmeans, backend=backend)
for mod in (uslkit.select.usl, uslkit.select.kmeans, uslkit.select.typiclust):
    mod.kmeans = patched
print(json.dumps({m: select(m, x, 40, seed=0).tolist() for m in sys.argv[3:]}))
"""


def with_backend(backend: str):
    """The three selection modules' ``kmeans`` set to ``backend`` (restore by calling the result)."""
    import functools

    import uslkit.cluster as cl
    import uslkit.select.kmeans
    import uslkit.select.typiclust
    import uslkit.select.usl

    mods = (uslkit.select.usl, uslkit.select.kmeans, uslkit.select.typiclust)
    for mod in mods:
        mod.kmeans = functools.partial(cl.kmeans, backend=backend)

    def restore():
        for mod in mods:
            mod.kmeans = cl.kmeans
    return restore


def stage_threads(name, x, tmp: Path) -> dict:
    path = tmp / f"{name}.npy"
    np.save(path, x)
    out = {}
    for backend in BACKENDS:
        picks = {}
        for t in (1, 2):
            env = dict(os.environ, OMP_NUM_THREADS=str(t), OPENBLAS_NUM_THREADS=str(t))
            proc = subprocess.run([sys.executable, "-c", WORKER, str(path), backend, *METHODS], env=env,
                                  capture_output=True, text=True, check=True)
            picks[t] = json.loads(proc.stdout.strip().splitlines()[-1])
        out[backend] = {m: len(set(picks[1][m]) & set(picks[2][m])) for m in METHODS}
        out[backend]["identical"] = {m: picks[1][m] == picks[2][m] for m in METHODS}
    return out


def stage_cost(x) -> dict:
    from uslkit.cluster import kmeans

    out = {}
    for backend in BACKENDS:
        times, info = [], None
        for _ in range(3):
            t0 = time.perf_counter()
            _, _, info = kmeans(x, 40, seed=0, niter=100, backend=backend, return_info=True)
            times.append(time.perf_counter() - t0)
        out[backend] = {"seconds": statistics.median(times), "iterations": info["iterations"],
                        "inertia": info["inertia"]}
    return out


def stage_quality(xtr, xte, ytr, yte, seeds) -> dict:
    from uslkit.evaluate import nn_accuracy
    from uslkit.select import select

    out = {}
    for backend in BACKENDS:
        restore = with_backend(backend)
        try:
            for budget in (20, 40):
                acc = [nn_accuracy(xtr[idx], ytr[idx], xte, yte)
                       for idx in (select("usl", xtr, budget, seed=s) for s in seeds)]
                out[f"{backend}/b{budget}"] = acc
        finally:
            restore()
    return out


def markdown(res: dict) -> str:
    m = res["machine"]
    lines = [f"Machine: {m.get('cpu')}, {m.get('cpu_count')} cores, {res['date']}. "
             f"`python benchmarks/bench_select_threads.py{' --quick' if res['quick'] else ''}`; "
             f"Fashion-MNIST train ({res['n']} points), L2-normalised embeddings.", ""]
    lines += ["### Picks shared between OMP_NUM_THREADS=1 and 2 (of 40; budget 40, seed 0)", "",
              "| embedding | backend | " + " | ".join(METHODS) + " |", "|---|---|" + "---|" * len(METHODS)]
    for emb, r in res["embeddings"].items():
        for b in BACKENDS:
            t = r["threads"][b]
            cells = [f"{t[mm]}{' (identical)' if t['identical'][mm] else ''}" for mm in METHODS]
            lines.append(f"| {emb} | {b} | " + " | ".join(cells) + " |")
    lines += ["", "### K-means into 40 clusters, at most 100 iterations (median of 3, default threads)", "",
              "| embedding | backend | seconds | iterations | inertia |", "|---|---|---|---|---|"]
    for emb, r in res["embeddings"].items():
        for b in BACKENDS:
            c = r["cost"][b]
            lines.append(f"| {emb} | {b} | {c['seconds']:.2f} | {c['iterations']} | {c['inertia']:.1f} |")
    lines += ["", "### USL 1-NN accuracy of the picks (test split), seeds " + ", ".join(map(str, res["seeds"])), "",
              "| embedding | backend | budget 20 | budget 40 |", "|---|---|---|---|"]
    for emb, r in res["embeddings"].items():
        if "quality" not in r:
            continue
        for b in BACKENDS:
            cells = []
            for budget in (20, 40):
                v = [100 * a for a in r["quality"][f"{b}/b{budget}"]]
                cells.append(f"{statistics.mean(v):.1f} +- {statistics.stdev(v) if len(v) > 1 else 0:.1f}")
            lines.append(f"| {emb} | {b} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import datetime as dt
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--emb", nargs="*",
                    help="more train-split embeddings (.npy, rows = Fashion-MNIST train; not with --quick)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"), help="'' = none (--quick never writes it)")
    args = ap.parse_args(argv)
    out = Path(args.out or HERE / "results" / ("select_threads_quick.json" if args.quick else "select_threads.json"))
    seeds = [0] if args.quick else [0, 1, 2]
    embs = embeddings(args)
    res = {"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "quick": args.quick, "seeds": seeds, "n": next(iter(embs.values()))[0].shape[0], "embeddings": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (xtr, xte, ytr, yte) in embs.items():
            r = {"threads": stage_threads(name, xtr, Path(tmp)), "cost": stage_cost(xtr)}
            if xte is not None:
                r["quality"] = stage_quality(xtr, xte, ytr, yte, seeds)
            res["embeddings"][name] = r
            print(name, json.dumps({k: v for k, v in r.items() if k != "quality"}), flush=True)
    from uslkit import _io

    out.parent.mkdir(parents=True, exist_ok=True)
    _io.atomic_write_json(out, res)
    md = markdown(res)
    print(md)
    if args.results_md and not args.quick:
        update_section(Path(args.results_md), HEADING, md)


if __name__ == "__main__":
    main()
