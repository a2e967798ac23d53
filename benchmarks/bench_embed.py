"""Benchmark: Fashion-MNIST 64-d PCA pixel embeddings (60,000 x 64), uslkit vs scikit-learn's PCA.

Times the whole ``uslkit embed --dataset fashion_mnist --encoder pixels --pca 64 --out ...`` command
(a fresh process each run, so Python start-up, imports, loading the idx files, PCA and the atomic write
are all counted), and, in the same run, the in-process stages and scikit-learn ``PCA(64)`` (full SVD and
randomized) on the same pixel matrix as the baseline. Reports medians over ``--repeats`` runs and writes
``benchmarks/results/embed.json`` plus a line for ``benchmarks/RESULTS.md``.

    python benchmarks/bench_embed.py --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import machine

HERE = Path(__file__).resolve().parent




def median_time(fn, repeats: int) -> tuple[float, list[float]]:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), ts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(HERE / "results" / "embed.json"))
    args = ap.parse_args()

    from sklearn.decomposition import PCA

    from uslkit.data import load_dataset
    from uslkit.embed import fit_pca, l2_normalize

    tmp = Path(tempfile.mkdtemp())

    def cli_run():
        out = tmp / "emb.npy"
        for p in (out, out.with_suffix(".json")):
            p.unlink(missing_ok=True)
        subprocess.run([sys.executable, "-m", "uslkit", "embed", "--dataset", "fashion_mnist", "--encoder",
                        "pixels", "--pca", "64", "--out", str(out), "-q"], check=True, capture_output=True)
        assert np.load(out).shape == (60000, 64)

    t_cli, ts_cli = median_time(cli_run, args.repeats)
    t_load, _ = median_time(lambda: load_dataset("fashion_mnist", "train"), args.repeats)
    ds = load_dataset("fashion_mnist", "train")
    x = ds.images.reshape(len(ds), -1).astype(np.float32) / 255.0
    t_pca, _ = median_time(lambda: l2_normalize(fit_pca(x, 64).transform(x)), args.repeats)
    t_sk_full, _ = median_time(lambda: PCA(64, svd_solver="full").fit_transform(x), max(1, args.repeats // 2))
    t_sk_rand, _ = median_time(lambda: PCA(64, svd_solver="randomized", random_state=0).fit_transform(x),
                               args.repeats)

    res = {
        "benchmark": "fashion_mnist pixels pca64 embedding (60000 x 64)",
        "command": "uslkit embed --dataset fashion_mnist --encoder pixels --pca 64 --out emb.npy",
        "repeats": args.repeats,
        "cli_total_s_median": t_cli, "cli_total_s_runs": ts_cli,
        "load_s_median": t_load, "uslkit_pca_s_median": t_pca,
        "sklearn_pca_full_s_median": t_sk_full, "sklearn_pca_randomized_s_median": t_sk_rand,
        "ratio_sklearn_full_over_uslkit_pca": t_sk_full / t_pca,
        "ratio_sklearn_randomized_over_uslkit_pca": t_sk_rand / t_pca,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=2))


if __name__ == "__main__":
    main()
