"""Benchmark (issue 19): how long the selection explorer takes to answer each control, per pool size.

Drives :class:`uslkit.explorer.SelectionExplorer` from Python as the browser test does through the widgets
(Fashion-MNIST, PCA-64, the clickable ipympl map when ipympl is installed) and reports the median seconds of
``--repeats`` runs per action: opening (pool, embedding, map), each method at budget 20, budget changes, a
click on the map, the cursor onto another sample (tooltip and map repainted), a box on the map; the one-time
map computation per projection is timed separately.

    python benchmarks/bench_explorer.py --points 3000 10000
    python benchmarks/bench_explorer.py --points 10000 --projections pca umap tsne
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import machine, update_section

HERE = Path(__file__).resolve().parent
SECTION = "Explorer responsiveness (issue 19)"
METHODS = ("usl", "kmeans", "typiclust", "probcover", "coreset", "random")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(points: int, repeats: int, data_root: str) -> dict:
    from uslkit.explorer import SelectionExplorer

    out: dict = {"points": points}
    box = {}
    out["open_s"] = timed(lambda: box.setdefault("ex", SelectionExplorer(
        datasets=["fashion_mnist"], embeddings=["pca64"], methods=list(METHODS), max_points=points,
        projection="pca", root=data_root)))
    ex = box["ex"]
    for m in METHODS:  # each method from another one, so the change fires
        runs = []
        for _ in range(repeats):
            ex.method.value = "random" if m != "random" else "usl"
            runs.append(timed(lambda m=m: setattr(ex.method, "value", m)))
        out[f"method_{m}_s"] = statistics.median(runs)
    ex.method.value = "usl"
    out["budget_change_s"] = statistics.median(
        timed(lambda b=b: setattr(ex.budget, "value", b)) for b in (21, 40, 20)[:max(repeats, 1)])
    out["click_s"] = statistics.median(timed(lambda i=i: ex.click(*ex.xy[i])) for i in range(repeats))
    # the cursor onto another sample: the tooltip moves and the map is painted again (what ipympl sends)
    out["hover_s"] = statistics.median(timed(lambda i=i: (ex.hover(*ex.xy[i]), ex.map_fig.canvas.draw()))
                                       for i in range(10, 10 + repeats))
    lo, hi = ex.xy.min(0), ex.xy.max(0)
    mid = (lo + hi) / 2
    out["box_s"] = statistics.median(timed(lambda: ex.select_region((lo[0], mid[0], lo[1], mid[1])))
                                     for _ in range(repeats))
    out["interactive"] = ex.interactive
    return out


def map_times(points: int, projections, data_root: str) -> dict:
    from uslkit.explorer import load_pool
    from uslkit.plots import embedding_2d

    emb = load_pool("fashion_mnist", "pca64", max_points=points, root=data_root)[3]
    return {p: timed(lambda p=p: embedding_2d(emb, method=p, seed=0)) for p in projections}


def markdown(rows, maps, m) -> str:
    lines = [f"Machine: {m['cpu']}, {m['cpu_count']} cores, load average at start {m['loadavg_at_start']}, "
             f"{m['date']}. Fashion-MNIST PCA-64, PCA map, budget 20; median seconds per action "
             "(`python benchmarks/bench_explorer.py`).", "",
             "| pool | open | " + " | ".join(METHODS) + " | budget change | click | hover (map painted) | box |",
             "|---" * (6 + len(METHODS)) + "|"]
    for r in rows:
        lines.append(f"| {r['points']} | {r['open_s']:.1f} | "
                     + " | ".join(f"{r[f'method_{x}_s']:.2f}" for x in METHODS)
                     + f" | {r['budget_change_s']:.2f} | {r['click_s']:.2f} | {r['hover_s']:.2f} | {r['box_s']:.2f} |")
    for pts, t in maps.items():
        lines.append("")
        lines.append(f"- Map of {pts} points, computed once per dataset/embedding/projection: "
                     + ", ".join(f"{p} {s:.1f} s" for p, s in t.items()) + ".")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, nargs="+", default=[3000, 10000])
    ap.add_argument("--projections", nargs="*", default=[], help="also time these map projections (pca umap tsne)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--results-md", default=str(HERE / "RESULTS.md"))
    args = ap.parse_args(argv)
    m = machine()
    rows = [measure(p, args.repeats, args.data_root) for p in args.points]
    maps = {p: map_times(p, args.projections, args.data_root) for p in args.points} if args.projections else {}
    text = markdown(rows, maps, m)
    print(text)
    if args.results_md:
        update_section(Path(args.results_md), SECTION, text)


if __name__ == "__main__":
    main()
