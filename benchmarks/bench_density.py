"""Benchmark (issue 17): USL's kNN density from the GEMM pass against the neighbour lists it replaced.

On Fashion-MNIST's 60,000 training images (pixels PCA-64 and ``--emb`` files, L2-normalised), k = 400:

- the density of ``uslkit.knn.knn_density`` (exact mode, CPU: float32 GEMM blocks and a compiled pass per row,
  no neighbour lists) against ``density_from_dists(knn(x, k))`` (faiss search re-ranked to the exact order):
  largest relative difference, both variants (paper, reference), and the seconds of each (median of 3) with the
  floor, one brute-force ``x @ x.T`` timed in 2,048-row chunks in the same process;
- USL's picks at budgets 20, 40 and 100, seeds 0-2, with each density: identical or how many shared.

Results: ``benchmarks/results/density.json`` and the section "Selection: the GEMM density against neighbour lists
(issue 17)" of ``benchmarks/RESULTS.md``.

    python benchmarks/bench_density.py --emb data/embeddings/fashion_mnist/train/<simclr>.npy   # ~6 min here
    python benchmarks/bench_density.py --quick                                                 # seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from _common import machine, update_section

HERE = Path(__file__).resolve().parent
HEADING = "Selection: the GEMM density against neighbour lists (issue 17)"
K = 400
BUDGETS = (20, 40, 100)
SEEDS = (0, 1, 2)


def _lists_density(x, k, variant="paper", mode="exact", seed=0, nprobe=None):
    from uslkit.knn import density_from_dists, knn

    return density_from_dists(knn(x, k, mode=mode, seed=seed, nprobe=nprobe)[0], variant=variant)


def _median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def floor(x, repeats) -> float:
    out = np.empty((2048, x.shape[0]), dtype=np.float32)
    xt = np.ascontiguousarray(x.T)

    def once():
        for s in range(0, x.shape[0], 2048):
            np.matmul(x[s:s + 2048], xt, out=out[: min(2048, x.shape[0] - s)])
    once()
    return _median_time(once, repeats)


def study(name, x, args) -> dict:
    import uslkit.select._common as common
    from uslkit.knn import knn_density
    from uslkit.select import select_usl

    k = min(K, x.shape[0] - 1)
    knn_density(x[:1000], 5)  # compile the kernels outside the timings
    res = {"n": int(x.shape[0]), "d": int(x.shape[1]), "k": k, "floor_s": floor(x, args.repeats)}
    for variant in ("paper", "reference"):
        a = knn_density(x, k, variant=variant)
        b = _lists_density(x, k, variant)
        res[f"max_rel_diff_{variant}"] = float(np.max(np.abs(a - b) / b))
    res["gemm_s"] = _median_time(lambda: knn_density(x, k), args.repeats)
    res["lists_s"] = _median_time(lambda: _lists_density(x, k), args.repeats)
    picks = []
    real = common.knn_density
    for budget in BUDGETS if not args.quick else (10,):
        for seed in SEEDS:
            common.knn_density = real
            p1 = select_usl(x, budget, seed=seed)
            common.knn_density = _lists_density
            try:
                p2 = select_usl(x, budget, seed=seed)
            finally:
                common.knn_density = real
            picks.append({"budget": budget, "seed": seed, "identical": bool(np.array_equal(p1, p2)),
                          "shared": len(set(p1.tolist()) & set(p2.tolist()))})
    res["picks"] = picks
    print(name, {k2: v for k2, v in res.items() if k2 != "picks"}, flush=True)
    return res


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cpu_count']} cores, {result['finished'][:16].replace('T', ' ')} UTC. "
             f"`{result['command']}`; Fashion-MNIST train, L2-normalised; k = {K}; seconds are medians of "
             f"{result['repeats']} in one process, the floor one brute-force `x @ x.T` in 2,048-row chunks.", "",
             "| embedding | n x d | GEMM density s | neighbour lists s | floor s | GEMM / floor | largest relative "
             "difference (paper, reference) | USL picks identical (budgets 20, 40, 100 x seeds 0-2) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in result["embeddings"].items():
        same = sum(p["identical"] for p in r["picks"])
        lines.append(f"| {name} | {r['n']:,} x {r['d']} | {r['gemm_s']:.2f} | {r['lists_s']:.2f} | "
                     f"{r['floor_s']:.2f} | {r['gemm_s'] / r['floor_s']:.2f} | {r['max_rel_diff_paper']:.1e}, "
                     f"{r['max_rel_diff_reference']:.1e} | {same} of {len(r['picks'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import sys

    from uslkit import _io
    from uslkit.embed import compute_embeddings, l2_normalize

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--emb", nargs="*", default=[], help="more (60000, d) Fashion-MNIST train embeddings (.npy)")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="3,000 points, budget 10, results not recorded")
    args = ap.parse_args(argv)
    root = Path(args.data_root)
    x, _ = compute_embeddings("fashion_mnist", split="train", pca=64, root=root, cache_dir=root / "embeddings",
                              progress=False)
    embs = {"pca64": x}
    for path in args.emb:
        embs[Path(path).stem] = np.load(path)
    n = 3000 if args.quick else None
    t0 = time.perf_counter()
    res = {"embeddings": {name: study(name, l2_normalize(e[:n]).astype(np.float32), args) for name, e in embs.items()}}
    res.update(machine=machine(), repeats=args.repeats, seconds=time.perf_counter() - t0,
               command="python benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
               finished=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    print(markdown(res))
    if args.quick:
        return
    out = HERE / "results" / "density.json"
    _io.atomic_write_text(out, json.dumps(res, indent=1))
    update_section(HERE / "RESULTS.md", HEADING, markdown(res))
    print(f"wrote {out} and the section of benchmarks/RESULTS.md; {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
