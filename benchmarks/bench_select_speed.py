"""Benchmark: speed and memory of the selection stages and methods, from 10k to 1M points.

Sizes (``--sizes``): ``10k`` (a seeded 10,000-point subset of the Fashion-MNIST 64-d PCA train embeddings),
``60k`` (all of them), ``200k`` and ``1m`` (a seeded synthetic 128-d Gaussian mixture, L2-normalised), and
``200k-aniso`` / ``1m-aniso`` (500 clusters of Zipf-distributed sizes, anisotropic and rotated: coverage of the
small components separates the methods there).
Budget 40 at 10k/60k and 1000 at 200k/1M.

Every task runs in a fresh subprocess (this script with ``--worker``) that loads the data, then times
``--repeats`` calls (median reported; 1 call at 1M) and reports the peak resident memory the calls added
(peak RSS ``VmHWM`` minus the RSS before the first call). Tasks:

- stages: exact kNN with k = 20 and 400 (``uslkit.knn.knn``), USL's kNN density
  (``knn_density(k=min(400, n-1), mode="auto")``), USL's K-means (K = budget, its Lloyd iterations), and
  USL's regularised selection (Alg. 1) on that density and clustering; above ``AUTO_EXACT_MAX_N`` the
  kNN stages are also timed in ``mode="auto"`` (IVF), and exact kNN is skipped unless
  ``--exact-knn-max-n`` allows it (its cost is at least the floor);
- methods: every ``uslkit.select.METHODS`` entry but ``kmeans_multi`` (= kmeans from scratch) and ``ntkcpl`` (an
  active-learning round: its cost is in ``benchmarks/bench_active.py``), defaults,
  ``probcover`` with ``num_classes`` (10, or the mixture's component count); above 200k only the methods
  that scale, the others reported as skipped with the reason;
- scikit-activeml's TypiClust and ProbCover side by side on the Fashion-MNIST sizes (ProbCover at 10k
  only: it builds dense ``n x n`` matrices, reported as infeasible above with the memory it would need),
  ProbCover given the radius our rule chooses.

Baseline measured in the same run, per size: the "floor", one brute-force ``n x n x d`` float32 product
``x @ x.T`` (numpy/BLAS); where ``n * n * 4`` bytes exceeds ``--floor-max-gb`` a slice of rows is timed
in chunks and the time extrapolated linearly to ``n`` rows (said so in the output).

Results go to ``benchmarks/results/select_speed.json`` (sizes run earlier with the same configuration are
kept, so 200k/1M can be added later) and to the section "Selection: speed" of ``benchmarks/RESULTS.md``.

    python benchmarks/bench_select_speed.py --sizes 10k 60k     # what the first recorded run did
    python benchmarks/bench_select_speed.py --sizes 200k 1m     # the large sizes (hours of CPU on 2 cores)
    python benchmarks/bench_select_speed.py --quick             # seconds: tiny sizes, every code path
    python benchmarks/bench_select_speed.py --report-only       # re-render RESULTS.md from the JSON
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

HERE = Path(__file__).resolve().parent

# ---- the real experiment (defaults) -------------------------------------------------------------------
SIZES = {  # name -> how the data are made
    "10k": dict(kind="fashion_mnist", n=10_000, budget=40, subset_seed=0),
    "60k": dict(kind="fashion_mnist", n=60_000, budget=40),
    "200k": dict(kind="mixture", n=200_000, d=128, components=100, spread=0.5, budget=1000, seed=0),
    "1m": dict(kind="mixture", n=1_000_000, d=128, components=100, spread=0.5, budget=1000, seed=0),
    # clusters of unequal size and shape: the mixture's isotropy and equal weights flatter every method
    "200k-aniso": dict(kind="aniso", n=200_000, d=128, components=500, zipf=1.0, budget=1000, seed=0),
    "1m-aniso": dict(kind="aniso", n=1_000_000, d=128, components=500, zipf=1.0, budget=1000, seed=0),
}
PCA_DIM = 64
REPEATS = 3
REPEATS_1M = 1
LARGE_N = 200_000  # above this, only the methods that scale
LARGE_METHODS = ("usl", "kmeans", "typiclust", "coreset", "random", "sela", "probcover")
SKIP_REASONS = {
    "sela": "not in --large-methods",
    "typiclust": "not in the default large-n set (--large-methods); its cost is K-means with min(budget, 500) "
                 "clusters plus kNN inside each cluster, so it should scale",
    "stratified": "oracle baseline (needs true labels), nothing to scale",
}
#: USL with other settings: the paper's large-scale (ImageNet, Table 14) preset at every size, and the
#: small-scale defaults with approximate (IVF) kNN where plain ``usl`` searches exactly; the picks are compared
#: with those of plain ``usl``; K-means on a seeded sample of 100 points per cluster (what ``"auto"`` does above
#: 200k, with 256 per cluster), to compare its picks with K-means on every point where that is affordable; and the
#: compressed (IVF-PQ) density meant for embeddings larger than memory.
USL_VARIANTS = ("method:usl@preset=imagenet_moco", "method:usl@knn_mode=ivf",
                "method:usl@kmeans_points_per_centroid=100", "method:usl@knn_mode=ivfpq")
#: SeLa with IVF kNN for its density where plain ``sela`` searches exactly (at 200k the exact density alone is
#: about the GEMM floor): how much of SeLa's time is its Sinkhorn clustering.
SELA_VARIANTS = ("method:sela@knn_mode=ivf",)
EXACT_KNN_MAX_N = 200_000  # exact kNN stages above this only with --exact-knn-max-n
FLOOR_MAX_GB = 2.0  # materialise x @ x.T only up to this size; above, time a slice and extrapolate
FLOOR_SLICE_ROWS = 8192
FLOOR_CHUNK_ROWS = 2048
TASK_TIMEOUT_S = 4 * 3600
# ---- targets ----------------------------------------------------------------------------------------
TARGETS = [  # (size, task, limit, unit, text); unit "s" (seconds), "x floor" or "x <task>" (ratio to a row)
    ("60k", "method:usl", 2.0, "x floor",
     "USL, budget 40, Fashion-MNIST 64-d (60,000 points): at most 2x the GEMM floor"),
    ("60k", "method:typiclust", 1.0, "x skactiveml:typiclust",
     "TypiClust at 60,000 points no slower than scikit-activeml's"),
    ("1m", "method:usl", 300.0, "s", "USL, budget 1000, 1,000,000 x 128 under 5 minutes"),
    ("1m", "method:usl@preset=imagenet_moco", 300.0, "s",
     "USL with the paper's large-scale settings (preset imagenet_moco), budget 1000, 1,000,000 x 128 under 5 "
     "minutes"),
]
# ---- --quick ------------------------------------------------------------------------------------------
QUICK_SIZES = {
    "2k": dict(kind="fashion_mnist", n=2000, budget=10, subset_seed=0),
    "3k-synthetic": dict(kind="mixture", n=3000, d=32, components=10, spread=0.5, budget=20, seed=0),
}
QUICK_LARGE_N = 2500  # so the quick run exercises the large-n rules on its synthetic size
QUICK_EXACT_KNN_MAX_N = 2500
QUICK_FLOOR_MAX_GB = 0.01  # and the extrapolated floor (2k: 16 MB > 10 MB)

SECTION = "Selection: speed"


# ==========================================================================================================
# Machine
# ==========================================================================================================


# ==========================================================================================================
# Data
# ==========================================================================================================
def mixture(n: int, d: int, components: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded Gaussian mixture on the sphere: unit centres, ``x = c_j + spread * N(0, I/d)``, L2-normalised.

    Component weights are uniform. Returns ``(x float32 (n, d), component ids int64 (n,))``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(components, size=n)
    x = np.empty((n, d), dtype=np.float32)
    step = 1 << 17
    for s in range(0, n, step):
        e = min(n, s + step)
        x[s:e] = centres[labels[s:e]] + (spread / math.sqrt(d)) * rng.standard_normal((e - s, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels.astype(np.int64)


def aniso_mixture(n: int, d: int, components: int, zipf: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded mixture of clusters of unequal size and shape, L2-normalised.

    Component ``j`` (``j = 0..components-1``) has weight ``(j + 1)^-zipf`` (normalised), a unit centre, an overall
    spread log-uniform in ``[0.25, 1]``, per-axis scales log-uniform in ``[0.2, 2]`` and its own random rotation:
    ``x = c_j + spread_j / sqrt(d) * (z * scales_j) @ R_j``, ``z ~ N(0, I)``. Returns ``(x float32 (n, d),
    component ids int64 (n,))``.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    w = (np.arange(1, components + 1, dtype=np.float64)) ** -float(zipf)
    labels = rng.choice(components, size=n, p=w / w.sum())
    spread = np.exp(rng.uniform(np.log(0.25), np.log(1.0), components))
    x = np.empty((n, d), dtype=np.float32)
    for j in range(components):
        rows = np.flatnonzero(labels == j)
        scales = np.exp(rng.uniform(np.log(0.2), np.log(2.0), d)).astype(np.float32)
        rot, _ = np.linalg.qr(rng.standard_normal((d, d)))
        z = rng.standard_normal((rows.size, d), dtype=np.float32) * scales
        x[rows] = centres[j] + (spread[j] / math.sqrt(d)) * (z @ rot.astype(np.float32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels.astype(np.int64)


def make_data(spec: dict, folder: Path) -> dict:
    """Write ``x.npy``/``y.npy`` (and the test set for Fashion-MNIST) under ``folder``; return a description."""
    folder.mkdir(parents=True, exist_ok=True)
    if spec["kind"] == "fashion_mnist":
        from uslkit.data import load_dataset
        from uslkit.embed import compute_embeddings

        x, meta = compute_embeddings("fashion_mnist", split="train", pca=PCA_DIM, progress=False)
        y = load_dataset("fashion_mnist", "train").labels.astype(np.int64)
        x_te, _ = compute_embeddings("fashion_mnist", split="test", pca=PCA_DIM, progress=False)
        y_te = load_dataset("fashion_mnist", "test").labels.astype(np.int64)
        if spec["n"] < x.shape[0]:
            keep = np.sort(np.random.default_rng(spec["subset_seed"]).choice(x.shape[0], spec["n"], replace=False))
            x, y = x[keep], y[keep]
        np.save(folder / "x_test.npy", x_te)
        np.save(folder / "y_test.npy", y_te)
        desc = {"data": f"Fashion-MNIST train, pixels PCA-{PCA_DIM}, L2-normalised"
                        + (f", seeded subset (seed {spec['subset_seed']})" if spec["n"] < 60_000 else ""),
                "num_classes": 10, "fingerprint": meta.get("fingerprint")}
    elif spec["kind"] == "aniso":
        x, y = aniso_mixture(spec["n"], spec["d"], spec["components"], spec["zipf"], spec["seed"])
        sizes = np.bincount(y, minlength=spec["components"])
        desc = {"data": f"synthetic mixture of unequal clusters ({spec['components']} components, "
                        f"Zipf-{spec['zipf']} sizes {int(sizes.max())} to {int(sizes.min())} points, anisotropic, "
                        f"rotated, seed {spec['seed']}), L2-normalised", "num_classes": spec["components"]}
    else:
        x, y = mixture(spec["n"], spec["d"], spec["components"], spec["spread"], spec["seed"])
        desc = {"data": f"synthetic Gaussian mixture ({spec['components']} components, spread {spec['spread']}, "
                        f"seed {spec['seed']}), L2-normalised", "num_classes": spec["components"]}
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    desc.update(n=int(x.shape[0]), d=int(x.shape[1]), budget=spec["budget"])
    return desc


# ==========================================================================================================
# Floor
# ==========================================================================================================
def gemm_floor(x: np.ndarray, *, repeats: int, max_gb: float, slice_rows: int = FLOOR_SLICE_ROWS,
               chunk_rows: int = FLOOR_CHUNK_ROWS) -> dict:
    """Median time of one ``n x n x d`` float32 product ``x @ x.T``; extrapolated from a slice when too big."""
    n, d = x.shape
    xt = np.ascontiguousarray(x.T)
    full = n * n * 4 <= max_gb * 2**30
    rows = n if full else min(n, slice_rows)
    chunk = rows if full else chunk_rows

    def once():
        for s in range(0, rows, chunk):
            x[s : min(rows, s + chunk)] @ xt

    x[: min(rows, chunk)] @ xt  # warm-up
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        ts.append(time.perf_counter() - t0)
    how = ("materialised" if full else
           f"extrapolated linearly from a {rows:,}-row slice computed in {chunk:,}-row chunks "
           f"(n*n*4 bytes = {n * n * 4 / 2**30:.1f} GiB > {max_gb} GiB)")
    return {"seconds": statistics.median(ts) * n / rows, "slice_seconds": ts, "rows_timed": rows,
            "extrapolated": rows < n, "how": how, "flops": 2.0 * n * n * d}


# ==========================================================================================================
# Tasks (run in the worker)
# ==========================================================================================================
def _status_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process from ``/proc/self/status``.

    ``VmHWM`` belongs to this process image; ``getrusage``'s ``ru_maxrss`` is not used because on Linux a
    child started by fork + exec keeps the parent's maximum.
    """
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith(field + ":"))
    return int(line.split()[1]) * 1024  # kB


def worker(spec: dict) -> dict:
    """Run one task ``spec["repeats"]`` times on the data in ``spec["folder"]``; times and peak memory."""
    folder = Path(spec["folder"])
    x = np.load(folder / "x.npy")
    y = np.load(folder / "y.npy")
    budget, seed, task = spec["budget"], spec["seed"], spec["task"]
    fn, info = _task_fn(task, x, y, budget, seed, spec)
    rss0 = _status_bytes("VmRSS")
    times, out = [], None
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    peak = _status_bytes("VmHWM")
    res = {"times": times, "median_s": statistics.median(times), "peak_extra_mb": max(0, peak - rss0) / 2**20,
           "rss_before_mb": rss0 / 2**20, **info}
    if isinstance(out, np.ndarray) and out.ndim == 1 and out.dtype.kind in "iu" and out.size == budget:
        res["indices"] = out.tolist()
    for name, arr in (("save_density", "density.npy"), ("save_clusters", "clusters.npy")):
        if spec.get(name) and isinstance(out, np.ndarray):
            np.save(folder / arr, out)
    return res


def _task_fn(task: str, x, y, budget: int, seed: int, spec: dict):
    """``(callable, info dict)`` for a task name ``kind:name``."""
    kind, name = task.split(":", 1)
    n = x.shape[0]
    if kind == "stage":
        from uslkit.cluster import kmeans
        from uslkit.knn import knn, knn_density
        from uslkit.select import usl_config, usl_regularized_selection

        cfg = usl_config(n, budget)  # what select_usl uses for this n and budget
        if name.startswith("knn_k"):
            k, mode = name[4:].split("_")
            k = int(k[1:])
            return (lambda: knn(x, k, mode=mode, seed=seed)), {"k": k, "mode": mode}
        if name == "knn_density":
            return (lambda: knn_density(x, cfg["k"], mode="auto", seed=seed)), {"k": cfg["k"], "mode": "auto"}
        if name == "kmeans":
            mppc = cfg["kmeans_points_per_centroid"]
            return ((lambda: kmeans(x, budget, seed=seed, niter=cfg["kmeans_niter"],
                                    max_points_per_centroid=None if mppc == "all" else mppc)[0]),
                    {"niter": cfg["kmeans_niter"], "points_per_centroid": mppc})
        if name == "usl_reg":
            folder = Path(spec["folder"])
            density, clusters = np.load(folder / "density.npy"), np.load(folder / "clusters.npy")
            opts = {key: cfg[key] for key in ("lam", "alpha", "momentum", "iterations", "horizon",
                                               "exclude_same_cluster")}
            return (lambda: usl_regularized_selection(x, density, clusters, **opts)), opts
    if kind == "method":
        from uslkit.select import select

        name, variant = _split_variant(name)
        params = {**variant, **spec.get("params", {})}
        return (lambda: select(name, x, budget, seed=seed, labels=y, **params)), {"params": params}
    if kind == "skactiveml":
        return _skactiveml_fn(name, x, budget, seed, spec)
    raise ValueError(f"unknown task {task!r}")


def _split_variant(name: str) -> tuple[str, dict]:
    """``"usl@preset=imagenet_moco"`` -> ``("usl", {"preset": "imagenet_moco"})`` (values parsed as JSON when
    they parse, else kept as text)."""
    if "@" not in name:
        return name, {}
    method, rest = name.split("@", 1)
    params = {}
    for part in rest.split(","):
        key, value = part.split("=", 1)
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return method, params


def _skactiveml_fn(name: str, x, budget: int, seed: int, spec: dict):
    from skactiveml.pool import ProbCover, TypiClust

    y_nan = np.full(x.shape[0], np.nan)
    if name == "typiclust":
        def run():
            return np.asarray(TypiClust(random_state=seed).query(x, y_nan, batch_size=budget), dtype=np.int64)
        return run, {"params": {"random_state": seed, "k": 5, "cluster_algo": "sklearn KMeans (defaults)"}}
    if name == "probcover":
        delta = spec["delta"]

        def run():
            qs = ProbCover(deltas=[delta], random_state=seed)
            return np.asarray(qs.query(x, y_nan, batch_size=budget), dtype=np.int64)
        return run, {"params": {"deltas": [delta], "random_state": seed}}
    raise ValueError(f"unknown scikit-activeml task {name!r}")


def run_task(task: str, folder: Path, budget: int, repeats: int, timeout: float, **extra) -> dict:
    """Run ``task`` in a fresh process; returns its result dict, or ``{"error": ...}``."""
    spec = dict(task=task, folder=str(folder), budget=budget, seed=0, repeats=repeats, **extra)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "loadavg_1min_before": load}
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
        return {"error": f"exit {proc.returncode}: {tail}", "loadavg_1min_before": load}
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res.update(loadavg_1min_before=load, process_wall_s=wall)
    return res


# ==========================================================================================================
# Quality (Fashion-MNIST sizes) and ProbCover's radius
# ==========================================================================================================
def quality(idx, folder: Path, num_classes: int) -> dict:
    from uslkit.evaluate import class_coverage, nn_accuracy

    x, y = np.load(folder / "x.npy"), np.load(folder / "y.npy")
    idx = np.asarray(idx)
    out = {"coverage": class_coverage(y[idx], num_classes)}
    if (folder / "x_test.npy").exists():
        out["nn1_acc"] = nn_accuracy(x[idx], y[idx], np.load(folder / "x_test.npy"), np.load(folder / "y_test.npy"),
                                     k=1, metric="cosine")
    return out


def probcover_delta(folder: Path, num_classes: int, seed: int = 0) -> float:
    """The radius ``select_probcover(num_classes=...)`` chooses with its defaults (purity 0.95, no grid)."""
    from uslkit.select import purity_delta

    return purity_delta(np.load(folder / "x.npy"), num_classes, seed=seed)


def skactiveml_probcover_bytes(n: int, itemsize: int) -> dict:
    """Dense matrices scikit-activeml's ProbCover holds at once: ``pairwise_distances(X)`` (``n x n`` in X's
    float dtype; float32 embeddings stay float32) and the boolean ``n x n`` edge matrix."""
    dist = n * n * itemsize
    edges = n * n
    return {"distances_bytes": dist, "distances_dtype": f"float{8 * itemsize}", "edges_bytes": edges,
            "total_gib": (dist + edges) / 2**30}


# ==========================================================================================================
# One size
# ==========================================================================================================
def tasks_for(n: int, args) -> list[tuple[str, str | None]]:
    """``(task, skip reason or None)`` in run order."""
    from uslkit.knn import AUTO_EXACT_MAX_N
    from uslkit.select import METHODS

    out: list[tuple[str, str | None]] = []
    for k in (20, 400):
        if n <= args.exact_knn_max_n:
            out.append((f"stage:knn_k{k}_exact", None))
        else:
            out.append((f"stage:knn_k{k}_exact", f"exact kNN is O(n^2 d) brute force, at least the floor; run it "
                                                  f"with --exact-knn-max-n {n}"))
        if n > AUTO_EXACT_MAX_N or n > args.exact_knn_max_n:  # auto = IVF above AUTO_EXACT_MAX_N
            out.append((f"stage:knn_k{k}_auto", None))
    out += [("stage:knn_density", None), ("stage:kmeans", None), ("stage:usl_reg", None)]
    large = n > args.large_n
    for m in METHODS:
        if m in ("kmeans_multi", "ntkcpl"):
            continue
        if large and m not in args.large_methods:
            out.append((f"method:{m}", SKIP_REASONS.get(m, "not in --large-methods")))
        else:
            out.append((f"method:{m}", None))
    for v in USL_VARIANTS:  # above AUTO_EXACT_MAX_N plain usl already runs IVF kNN
        out.append((v, None if "knn_mode=ivf" not in v or n <= AUTO_EXACT_MAX_N else
                    "plain usl already uses IVF kNN at this size (knn_mode='auto')"))
    for v in SELA_VARIANTS:
        skip = None
        if large and "sela" not in args.large_methods:
            skip = "sela is not in --large-methods"
        elif n > AUTO_EXACT_MAX_N:
            skip = "plain sela already uses IVF kNN at this size (knn_mode='auto')"
        out.append((v, skip))
    if args.tasks:
        unknown = sorted(set(args.tasks) - {t for t, _ in out})
        if unknown:
            raise SystemExit(f"--tasks {unknown} are not tasks of this size; valid: {[t for t, _ in out]}")
        out = [(t, skip) for t, skip in out if t in args.tasks]
    return out


def run_size(name: str, spec: dict, args, tmp: Path, old: dict | None = None) -> dict:
    """Run the tasks of one size. With ``--tasks``, ``old`` (this size's earlier entry, same data) keeps its
    floor and other rows, and only the named tasks are (re)measured."""
    folder = tmp / name
    t0 = time.perf_counter()
    desc = make_data(spec, folder)
    n, budget = desc["n"], desc["budget"]
    repeats = args.repeats_1m if n >= 1_000_000 else args.repeats
    if old is not None:
        same = {k: v for k, v in old["config"].items() if k != "repeats"} == {**spec, **desc}
        if not same:
            raise SystemExit(f"--tasks: the recorded {name} entry was made on other data; rerun the whole size")
        floor = old["floor"]
    else:
        x = np.load(folder / "x.npy")
        floor = gemm_floor(x, repeats=repeats, max_gb=args.floor_max_gb, slice_rows=args.floor_slice_rows,
                           chunk_rows=args.floor_chunk_rows)
        del x
    log(f"[{name}] n={n:,} d={desc['d']} budget {budget}; floor x@x.T {floor['seconds']:.3g} s "
        f"({'extrapolated' if floor['extrapolated'] else 'materialised'})")
    rows: dict[str, dict] = dict(old["tasks"]) if old is not None else {}
    for task, skip in tasks_for(n, args):
        if skip is not None:
            rows[task] = {"skipped": skip}
            log(f"[{name}] {task}: skipped ({skip})")
            continue
        extra = {}
        if task == "stage:knn_density":
            extra["save_density"] = True
        if task == "stage:kmeans":
            extra["save_clusters"] = True
        if task == "method:probcover":
            extra["params"] = {"num_classes": desc["num_classes"]}
        rows[task] = res = run_task(task, folder, budget, repeats, args.timeout, **extra)
        report(name, task, res, floor)
    run_side = spec["kind"] == "fashion_mnist" and old is None
    side = side_by_side(name, folder, desc, repeats, args, floor) if run_side else dict((old or {}).get(
        "side_by_side", {}))
    base = set(rows.get("method:usl", {}).get("indices", []))
    for task in USL_VARIANTS:
        if base and "indices" in rows.get(task, {}):
            rows[task]["same_picks_as_usl"] = len(base & set(rows[task]["indices"]))
    for task, res in list(rows.items()) + list(side.items()):
        if "indices" in res:  # coverage of classes or mixture components; 1-NN where there is a test set
            res.update(quality(res["indices"], folder, desc["num_classes"]))
        if "median_s" in res:
            res["x_floor"] = res["median_s"] / floor["seconds"]
    wall = time.perf_counter() - t0 + (old["wall_s"] if old is not None else 0.0)
    return {"config": {**{k: v for k, v in spec.items()}, **desc, "repeats": repeats}, "floor": floor,
            "tasks": rows, "side_by_side": side, "wall_s": wall,
            "finished": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def side_by_side(name: str, folder: Path, desc: dict, repeats: int, args, floor: dict) -> dict:
    """scikit-activeml TypiClust/ProbCover and ours with the same radius; ProbCover only where it fits."""
    try:
        import skactiveml  # noqa: F401
    except ImportError:
        return {"skactiveml:typiclust": {"skipped": "scikit-activeml not installed"}}
    n, budget = desc["n"], desc["budget"]
    out: dict[str, dict] = {}
    out["skactiveml:typiclust"] = res = run_task("skactiveml:typiclust", folder, budget, repeats, args.timeout)
    report(name, "skactiveml:typiclust", res, floor)
    delta = probcover_delta(folder, desc["num_classes"])
    need = skactiveml_probcover_bytes(n, np.load(folder / "x.npy", mmap_mode="r").dtype.itemsize)
    mem_gb = machine_mem_gb()
    if need["total_gib"] > args.skactiveml_max_gib:
        out["skactiveml:probcover"] = {
            "skipped": f"infeasible: dense n x n {need['distances_dtype']} distances "
                       f"({need['distances_bytes'] / 2**30:.1f} GiB) + "
                       f"boolean edges ({need['edges_bytes'] / 2**30:.1f} GiB) = {need['total_gib']:.1f} GiB "
                       f"(machine: {mem_gb:.0f} GiB)", "delta": delta, **need}
        log(f"[{name}] skactiveml:probcover: skipped ({out['skactiveml:probcover']['skipped']})")
    else:
        out["skactiveml:probcover"] = res = run_task("skactiveml:probcover", folder, budget, repeats, args.timeout,
                                                     delta=delta)
        res["delta"] = delta
        report(name, "skactiveml:probcover", res, floor)
    out["method:probcover(delta)"] = res = run_task("method:probcover", folder, budget, repeats, args.timeout,
                                                    params={"delta": delta})
    res["delta"] = delta
    report(name, "method:probcover(delta)", res, floor)
    return out


def machine_mem_gb() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


# ==========================================================================================================
# Reporting
# ==========================================================================================================
def log(msg: str) -> None:
    print(msg, flush=True)


def report(size: str, task: str, res: dict, floor: dict) -> None:
    if "error" in res:
        log(f"[{size}] {task}: ERROR {res['error']}")
    else:
        log(f"[{size}] {task}: median {res['median_s']:.3f} s over {len(res['times'])} "
            f"({res['median_s'] / floor['seconds']:.2f} x floor), +{res['peak_extra_mb']:.0f} MB peak, "
            f"load {res['loadavg_1min_before']:.2f}")


def check_targets(sizes: dict) -> list[dict]:
    out = []
    for size, task, limit, unit, text in TARGETS:
        sz = sizes.get(size, {})
        res = {**sz.get("tasks", {}), **sz.get("side_by_side", {})}.get(task)
        row = {"target": text, "size": size, "limit": limit, "unit": unit, "measured": None, "holds": None}
        if res is None or "median_s" not in res:
            row["note"] = "size not run" if res is None else res.get("error", res.get("skipped"))
            out.append(row)
            continue
        if unit == "s":
            value = res["median_s"]
        elif unit == "x floor":
            value = res["median_s"] / sz["floor"]["seconds"]
        else:  # ratio to another row of the same size, measured in the same run
            other = {**sz.get("tasks", {}), **sz.get("side_by_side", {})}.get(unit[2:], {})
            if "median_s" not in other:
                row["note"] = f"{unit[2:]} not measured"
                out.append(row)
                continue
            value = res["median_s"] / other["median_s"]
        row.update(measured=value, holds=value <= limit)
        out.append(row)
    return out


def _cell_time(res: dict) -> str:
    if "skipped" in res:
        return "skipped"
    if "error" in res:
        return "error"
    spread = f" [{min(res['times']):.2f}-{max(res['times']):.2f}]" if len(res["times"]) > 1 else ""
    return f"{res['median_s']:.2f}{spread}"


def _row(label: str, res: dict) -> str:
    if "median_s" not in res:
        why = res.get("skipped") or res.get("error")
        return f"| {label} | {'skipped' if 'skipped' in res else 'error'}: {why} | | | | |"
    if "same_picks_as_usl" in res:
        label += f" ({res['same_picks_as_usl']}/{len(res['indices'])} picks shared with usl)"
    cov = f"{100 * res['coverage']:.0f}%" if "coverage" in res else ""
    acc = f"{100 * res['nn1_acc']:.1f}%" if "nn1_acc" in res else ""
    return (f"| {label} | {_cell_time(res)} | {res['x_floor']:.2f} | {res['peak_extra_mb']:.0f} | {cov} | {acc} |")


def markdown(result: dict) -> str:
    mach = result["machine"]
    lines = [
        f"`benchmarks/bench_select_speed.py`; {mach['cpu']}, {mach['cpu_count']} cores, {mach['mem_gb']} GB, numpy "
        f"{mach['numpy']}, torch {mach['torch']}, faiss {mach['faiss']}, scikit-learn {mach['sklearn']}, "
        f"scikit-activeml {mach['scikit_activeml']}; no GPU. Every task runs in a fresh process: time = median "
        "over the repeats [min-max], 'x floor' = time / the floor of the same size, peak = the most resident "
        "memory the calls added to the process (peak RSS `VmHWM` minus the RSS before the first call). The floor is "
        "one brute-force n x n x d float32 product `x @ x.T` measured in the same run. Coverage: the share of the "
        "classes (Fashion-MNIST) or mixture components (synthetic sizes) with at least one pick; 1-NN test "
        "accuracy (cosine, fitted on the picks) on the Fashion-MNIST sizes. Seed 0 throughout.",
        "",
    ]
    for t in result["targets"]:
        state = {True: "**HOLDS**", False: "**FAILS**", None: "not measured"}[t["holds"]]
        unit = t.get("unit", "s")
        meas = (f"{t['measured']:.2f} {unit}" if t.get("measured") is not None else (t.get("note") or ""))
        lines.append(f"- Target: {t['target']}: {state} ({meas}).")
    lines += ["", "Where the time goes: `method:usl` is `stage:knn_density` + `stage:kmeans` + `stage:usl_reg` (rows "
              "below, each in its own process). Up to 200k the default density is an exact k = 400 search (a GEMM "
              "and one compiled pass per row, so bounded below by the floor); above it the search is IVF. The "
              "variants `usl@knn_mode=ivf` (approximate kNN) and `usl@preset=imagenet_moco` (the paper's "
              "large-scale settings: k = 20, horizon 128, one re-pick, 100 K-means iterations) are one parameter "
              "away; their rows say how many picks they share with the default.", ""]
    for name, sz in result["sizes"].items():
        cfg, fl = sz["config"], sz["floor"]
        loads = [r["loadavg_1min_before"] for r in [*sz["tasks"].values(), *sz["side_by_side"].values()]
                 if "loadavg_1min_before" in r]
        lines += [
            f"### {name}: {cfg['n']:,} x {cfg['d']}, budget {cfg['budget']} ({cfg['data']})",
            "",
            f"Floor: {fl['seconds']:.3g} s ({fl['how']}). Repeats: {cfg['repeats']}. "
            f"Last run (rows added by --tasks included) {sz['finished'][:16].replace('T', ' ')} UTC on "
            f"{sz['machine']['cpu']} ({sz['machine']['cpu_count']} cores, {sz['machine']['mem_gb']} GB), "
            f"{sz['wall_s'] / 60:.1f} min; 1-minute load average before a task "
            f"(the benchmark's own threads included): median {statistics.median(loads):.2f}, max {max(loads):.2f}.",
            "",
            "| task | time s | x floor | peak MB | coverage | 1-NN acc |",
            "|---|---|---|---|---|---|",
        ]
        lines += [_row(task, res) for task, res in sz["tasks"].items()]
        if sz["side_by_side"]:
            lines += ["", f"Side by side with scikit-activeml (same embeddings, budget {cfg['budget']}, seed 0):", "",
                      "| task | time s | x floor | peak MB | coverage | 1-NN acc |", "|---|---|---|---|---|---|"]
            lines.append(_row("uslkit typiclust", sz["tasks"].get("method:typiclust", {"skipped": "not run"})))
            lines += [_row(t.replace("skactiveml:", "scikit-activeml "), r) for t, r in sz["side_by_side"].items()
                      if t == "skactiveml:typiclust"]
            lines.append(_row("uslkit probcover (num_classes=10, chooses delta)",
                              sz["tasks"].get("method:probcover", {"skipped": "not run"})))
            pc = sz["side_by_side"].get("method:probcover(delta)", {})
            lines.append(_row(f"uslkit probcover (delta={pc.get('delta', float('nan')):.4f} given)", pc))
            skp = sz["side_by_side"].get("skactiveml:probcover", {})
            lines.append(_row(f"scikit-activeml probcover (deltas=[{skp.get('delta', float('nan')):.4f}])", skp))
            lines += ["", "scikit-activeml ProbCover is given the radius uslkit's purity rule chooses (K-means with "
                      "K=10, purity 0.95, computed by the same calls as `select_probcover`), so both run the same "
                      "greedy cover on the same balls (theirs: `dist <= delta`, ours `< delta`); our time with "
                      "`num_classes` includes choosing delta. scikit-activeml TypiClust runs with its defaults "
                      "(sklearn KMeans, k=5 typicality neighbours; ours: uslkit's exact K-means, k=20)."]
        lines.append("")
    return "\n".join(lines)




# ==========================================================================================================
# Main
# ==========================================================================================================
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), help=f"any of {list(SIZES)}")
    ap.add_argument("--repeats", type=int, default=REPEATS)
    ap.add_argument("--repeats-1m", type=int, default=REPEATS_1M, help="repeats at n >= 1,000,000")
    ap.add_argument("--large-n", type=int, default=LARGE_N, help="above this n only --large-methods run")
    ap.add_argument("--large-methods", nargs="+", default=list(LARGE_METHODS))
    ap.add_argument("--exact-knn-max-n", type=int, default=EXACT_KNN_MAX_N)
    ap.add_argument("--floor-max-gb", type=float, default=FLOOR_MAX_GB)
    ap.add_argument("--floor-slice-rows", type=int, default=FLOOR_SLICE_ROWS)
    ap.add_argument("--floor-chunk-rows", type=int, default=FLOOR_CHUNK_ROWS)
    ap.add_argument("--skactiveml-max-gib", type=float, default=None,
                    help="largest dense scikit-activeml ProbCover to run (default: half the machine's memory)")
    ap.add_argument("--timeout", type=float, default=TASK_TIMEOUT_S, help="seconds per task")
    ap.add_argument("--quick", action="store_true", help="smoke run on tiny sizes; writes select_speed_quick.json")
    ap.add_argument("--out", default=None, help="default benchmarks/results/select_speed[_quick].json")
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"), help="'' = none (--quick never writes it)")
    ap.add_argument("--tasks", nargs="+", default=None,
                    help="only (re)measure these tasks (e.g. 'method:usl@preset=imagenet_moco'), keeping the "
                         "size's recorded floor and other rows")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: re-render the Markdown section from the results JSON")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.size_specs = QUICK_SIZES if args.quick else SIZES
    if args.quick:
        args.sizes = list(QUICK_SIZES)
        args.repeats = min(args.repeats, 2)
        args.large_n, args.exact_knn_max_n = QUICK_LARGE_N, QUICK_EXACT_KNN_MAX_N
        args.floor_max_gb, args.floor_slice_rows, args.floor_chunk_rows = QUICK_FLOOR_MAX_GB, 512, 256
        args.results_md = ""
    bad = [s for s in args.sizes if s not in args.size_specs]
    if bad:
        ap.error(f"unknown size(s) {bad}; valid: {list(args.size_specs)}")
    if args.skactiveml_max_gib is None:
        args.skactiveml_max_gib = machine_mem_gb() / 2
    args.out = Path(args.out or HERE / "results" / f"select_speed{'_quick' if args.quick else ''}.json")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker is not None:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from uslkit import _io

    if args.report_only:
        md = markdown(_io.read_json(args.out))
        if args.results_md:
            update_section(Path(args.results_md), SECTION, md)
        log(md)
        return
    t0 = time.perf_counter()
    mach = machine()
    old = _io.read_json(args.out) if args.out.exists() else {}
    sizes = {k: v for k, v in old.get("sizes", {}).items() if k not in args.sizes}  # keep sizes not re-run
    with tempfile.TemporaryDirectory(prefix="uslkit-speed-") as tmp:
        for name in args.sizes:
            prior = old.get("sizes", {}).get(name) if args.tasks else None
            if args.tasks and prior is None:  # a new size measured on the named tasks only: the others have no row
                log(f"[{name}] no recorded entry: only --tasks are measured")
            sizes[name] = run_size(name, args.size_specs[name], args, Path(tmp), old=prior)
            sizes[name]["machine"] = mach
            result = {"benchmark": "selection speed", "machine": mach, "sizes": sizes,
                      "targets": check_targets(sizes), "git_commit": _io.git_commit()}
            _io.atomic_write_json(args.out, result)
    order = [s for s in args.size_specs if s in sizes]
    result["sizes"] = {s: sizes[s] for s in order}
    result["wall_s_this_invocation"] = time.perf_counter() - t0
    _io.atomic_write_json(args.out, result)
    md = markdown(result)
    if args.results_md:
        update_section(Path(args.results_md), SECTION, md)
    log(md)
    log(f"wrote {args.out}{', section of ' + args.results_md if args.results_md else ''}; "
        f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
