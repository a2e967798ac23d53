"""Benchmark (issue 17, faithfulness questions): USL's distance conventions, and ProbCover against random.

On Fashion-MNIST's 60,000 training images, with the 1-NN accuracy (cosine, fitted on the picks) on the 10,000
test images and the share of the 10 classes the picks cover, seeds 0-2, budgets 20 and 40:

- ``usl``: USL with the paper's formulas (``density_variant="paper"``, ``distance_power="paper"``: plain
  distances, the point itself excluded, ``1 / d^alpha``) against the reference code's (squared distances, the
  point counted among its neighbours, ``1 / d^(2 alpha)``), both with Table 14's lambda and alpha, on the pixels'
  PCA-64, the SimCLR encoder's backbone features, and its projection head's output (what USL selects on in the
  paper: ``features="head"``; its picks are scored with the backbone features, as the SimCLR rows); random
  picks as the scale;
- ``probcover``: ProbCover (``num_classes=10``: the purity-0.95 radius) against random and TypiClust on PCA-64
  and the SimCLR features, with the radius it chose and the share of points its balls cover;
- ``radius``: ProbCover at budget 40 with the radii of lower purity thresholds (``--studies`` picks studies;
  the others keep their recorded results).

Results: ``benchmarks/results/faithfulness.json`` and the section "Selection: faithfulness questions (issue 17)"
of ``benchmarks/RESULTS.md``.

    python benchmarks/bench_faithfulness.py --encoder data/bench_runs/<run>/model.pt   # about 10 minutes here
    python benchmarks/bench_faithfulness.py --quick                                      # seconds: 3,000 points
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
HEADING = "Selection: faithfulness questions (issue 17)"
SEEDS = (0, 1, 2)
BUDGETS = (20, 40)
PURITIES = (0.95, 0.8, 0.7, 0.5, 0.3)  # the radius sweep: ProbCover's purity threshold (the paper's is 0.95)
USL_VARIANTS = {"paper": dict(density_variant="paper", distance_power="paper"),
                "reference": dict(density_variant="reference", distance_power="reference")}


def embeddings(args) -> dict:
    """name -> (train, test, y_train, y_test); every embedding L2-normalised."""
    from uslkit.data import load_dataset
    from uslkit.embed import compute_embeddings, l2_normalize

    root = Path(args.data_root)
    specs = [("pca64", dict(encoder="pixels", pca=64))]
    if args.encoder:
        specs += [("simclr", dict(encoder=f"ckpt:{args.encoder}")),
                  ("simclr_head", dict(encoder=f"ckpt:{args.encoder}", features="head"))]
    ytr = np.asarray(load_dataset("fashion_mnist", "train", root=root).labels)
    yte = np.asarray(load_dataset("fashion_mnist", "test", root=root).labels)
    n = 3000 if args.quick else ytr.size
    out = {}
    for name, kw in specs:
        xtr, xte = (compute_embeddings("fashion_mnist", split=split, root=root, cache_dir=root / "embeddings",
                                       progress=False, **kw)[0] for split in ("train", "test"))
        out[name] = (l2_normalize(xtr[:n]), l2_normalize(xte), ytr[:n], yte)
    return out


def scores(picks, xtr, xte, ytr, yte) -> dict:
    from uslkit.evaluate import class_coverage, nn_accuracy

    return {"nn1": 100.0 * nn_accuracy(xtr[picks], ytr[picks], xte, yte, k=1, metric="cosine"),
            "coverage": 100.0 * class_coverage(ytr[picks], 10)}


def radius_sweep(embs) -> dict:
    """ProbCover at budget 40, seed 0, with the radius of each purity threshold in :data:`PURITIES`."""
    from uslkit.knn import knn
    from uslkit.select import purity_delta, select_probcover

    out = {}
    for name in ("pca64", "simclr"):
        if name not in embs:
            continue
        xtr, xte, ytr, yte = embs[name]
        rows = []
        for purity in PURITIES:
            delta = purity_delta(xtr, 10, seed=0, purity_threshold=purity)
            picks = select_probcover(xtr, 40, seed=0, delta=delta)
            near = knn(xtr[picks], 1, queries=xtr)[0][:, 0]
            rows.append({"purity": purity, "delta": float(delta), **scores(picks, xtr, xte, ytr, yte),
                         "ball_coverage": 100.0 * float(np.mean(near < delta))})
            print(f"radius sweep {name} purity {purity}: delta {delta:.3f} 1-NN {rows[-1]['nn1']:.1f}", flush=True)
        out[name] = rows
    return out


def run(args) -> dict:
    from uslkit.knn import knn
    from uslkit.select import purity_delta, select, select_probcover

    embs = embeddings(args)
    res: dict = {}
    if "radius" in args.studies:
        res["radius"] = radius_sweep(embs)
    if "usl" in args.studies:
        res["usl"] = {}
    if "probcover" in args.studies:
        res["probcover"] = {}
    for name, (xtr, xte, ytr, yte) in embs.items():
        # picks made on the projection head are scored in the backbone's space, like every SimCLR row
        etr, ete = (embs["simclr"][0], embs["simclr"][1]) if name == "simclr_head" else (xtr, xte)
        for budget in BUDGETS if "usl" in res else ():
            rows = {}
            for variant, opts in [*USL_VARIANTS.items(), ("random", None)]:
                cells = []
                for seed in SEEDS:
                    t0 = time.perf_counter()
                    picks = (select("random", xtr, budget, seed=seed) if opts is None
                             else select("usl", xtr, budget, seed=seed, **opts))
                    cells.append({**scores(picks, etr, ete, ytr, yte), "seconds": time.perf_counter() - t0,
                                  "picks": np.asarray(picks).tolist()})
                rows[variant] = cells
                print(f"usl {name} b{budget} {variant}: 1-NN "
                      f"{statistics.mean(c['nn1'] for c in cells):.1f}", flush=True)
            res["usl"][f"{name}/{budget}"] = rows
        if name == "simclr_head":
            continue
        for budget in BUDGETS if "probcover" in res else ():
            rows = {}
            for method in ("probcover", "typiclust", "random"):
                cells = []
                for seed in SEEDS:
                    t0 = time.perf_counter()
                    if method == "probcover":
                        delta = purity_delta(xtr, 10, seed=seed)
                        picks = select_probcover(xtr, budget, seed=seed, delta=delta)
                        near = knn(xtr[picks], 1, queries=xtr)[0][:, 0]
                        extra = {"delta": float(delta), "ball_coverage": 100.0 * float(np.mean(near < delta))}
                    else:
                        picks, extra = select(method, xtr, budget, seed=seed), {}
                    cells.append({**scores(picks, xtr, xte, ytr, yte), **extra,
                                  "seconds": time.perf_counter() - t0})
                rows[method] = cells
                print(f"probcover study {name} b{budget} {method}: 1-NN "
                      f"{statistics.mean(c['nn1'] for c in cells):.1f}", flush=True)
            res["probcover"][f"{name}/{budget}"] = rows
    return res


def _ms(cells, key) -> str:
    v = [c[key] for c in cells]
    return f"{statistics.mean(v):.1f} +- {statistics.pstdev(v):.1f}"


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cpu_count']} cores, {result['finished'][:16].replace('T', ' ')} UTC. "
             f"`{result['command']}`; Fashion-MNIST train ({result['n']} points), L2-normalised embeddings; 1-NN "
             "accuracy (cosine) of the picks on the test split and class coverage, mean +- std over seeds 0, 1, 2.",
             "", "### USL: the paper's formulas vs the reference code's (Table 14's lambda and alpha in both)", "",
             "| embedding | budget | paper: 1-NN | reference: 1-NN | random: 1-NN | paper: coverage | reference: "
             "coverage | picks shared (paper, reference) |", "|---|---|---|---|---|---|---|---|"]
    for key, rows in result.get("usl", {}).items():
        name, budget = key.split("/")
        shared = [len(set(a["picks"]) & set(b["picks"])) for a, b in zip(rows["paper"], rows["reference"])]
        lines.append(f"| {name} | {budget} | {_ms(rows['paper'], 'nn1')} | {_ms(rows['reference'], 'nn1')} | "
                     f"{_ms(rows['random'], 'nn1')} | {_ms(rows['paper'], 'coverage')} | "
                     f"{_ms(rows['reference'], 'coverage')} | {', '.join(map(str, shared))} of {budget} |")
    lines += ["", "### ProbCover (purity-0.95 radius) vs TypiClust and random", "",
              "| embedding | budget | ProbCover: 1-NN | TypiClust: 1-NN | random: 1-NN | ProbCover: class coverage | "
              "radius | balls cover (% of points) |", "|---|---|---|---|---|---|---|---|"]
    for key, rows in result.get("probcover", {}).items():
        name, budget = key.split("/")
        pc = rows["probcover"]
        lines.append(f"| {name} | {budget} | {_ms(pc, 'nn1')} | {_ms(rows['typiclust'], 'nn1')} | "
                     f"{_ms(rows['random'], 'nn1')} | {_ms(pc, 'coverage')} | "
                     f"{statistics.mean(c['delta'] for c in pc):.4f} | {_ms(pc, 'ball_coverage')} |")
    if result.get("radius"):
        lines += ["", "### ProbCover at budget 40 (seed 0) with the radius of other purity thresholds", "",
                  "| embedding | purity | radius | 1-NN | class coverage | balls cover (% of points) |",
                  "|---|---|---|---|---|---|"]
        for name, rows in result["radius"].items():
            lines += [f"| {name} | {r['purity']} | {r['delta']:.4f} | {r['nn1']:.1f} | {r['coverage']:.0f} | "
                      f"{r['ball_coverage']:.1f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    import sys

    from uslkit import _io

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--encoder", help="SimCLR checkpoint (model.pt) whose backbone and head features are studied")
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--quick", action="store_true", help="3,000 points, results not recorded")
    ap.add_argument("--studies", nargs="+", default=["usl", "probcover", "radius"],
                    choices=["usl", "probcover", "radius"],
                    help="which studies to run; the others keep their recorded results")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = run(args)
    res.update(machine=machine(), command="python benchmarks/" + " ".join([Path(__file__).name, *sys.argv[1:]]),
               n=3000 if args.quick else 60000, seconds=time.perf_counter() - t0,
               finished=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
    print(markdown(res))
    if args.quick:
        return
    out = HERE / "results" / "faithfulness.json"
    if out.exists():  # studies not run this time keep their recorded results (and their machine line)
        old = json.loads(out.read_text())
        for key in ("usl", "probcover", "radius"):
            if key not in res and key in old:
                res[key] = old[key]
    _io.atomic_write_text(out, json.dumps(res, indent=1))
    update_section(HERE / "RESULTS.md", HEADING, markdown(res))
    print(f"wrote {out} and the section of benchmarks/RESULTS.md; {res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
