"""The README's main job (``make demo`` / ``uslkit demo``): Fashion-MNIST end to end, offline.

Steps: load Fashion-MNIST (``data/`` or Debian's ``dataset-fashion-mnist``) -> 64-d PCA pixel embeddings
of train and test (cached) -> each selection method at the budget, for several seeds -> labels files
annotated by the simulated oracle -> evaluation (class coverage, balance, 1-NN and logistic-regression
test accuracy of the labelled set) -> ``results.csv``, ``results.md``, ``results.json`` and figures in
the output folder. No model is trained (training: :mod:`uslkit.train`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _io

__all__ = ["run_demo", "DEFAULT_METHODS"]

DEFAULT_METHODS = ("usl", "kmeans", "typiclust", "probcover", "coreset", "random", "stratified")


def _summary_table(rows: list[dict], methods: Sequence[str]) -> list[dict]:
    keys = ("coverage", "nn1_acc", "logreg_acc", "normalized_entropy", "select_s")
    table = []
    for m in methods:
        rs = [r for r in rows if r["method"] == m]
        if not rs:
            continue
        entry = {"method": m, "runs": len(rs)}
        for k in keys:
            v = np.array([r[k] for r in rs], dtype=float)
            entry[k + "_mean"] = float(v.mean())
            entry[k + "_std"] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
        table.append(entry)
    return table


def _markdown(table: list[dict], *, dataset: str, pca: int, budget: int, seeds: Sequence[int], n: int,
              n_test: int) -> str:
    lines = [
        f"# uslkit demo: {dataset}, budget {budget}, seeds {list(seeds)}",
        "",
        f"{pca}-d PCA pixel embeddings (L2-normalised), pool n = {n}, test n = {n_test}. "
        "Accuracy = classifier trained on the "
        "labelled set only, evaluated on the test split; mean +- std over seeds. "
        "`stratified` is an oracle baseline (uses true labels to select).",
        "",
        "| method | class coverage | 1-NN test acc | logistic test acc | balance (norm. entropy) | select time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for t in table:
        lines.append(
            f"| {t['method']} | {100 * t['coverage_mean']:.1f} +- {100 * t['coverage_std']:.1f} % "
            f"| {100 * t['nn1_acc_mean']:.1f} +- {100 * t['nn1_acc_std']:.1f} "
            f"| {100 * t['logreg_acc_mean']:.1f} +- {100 * t['logreg_acc_std']:.1f} "
            f"| {t['normalized_entropy_mean']:.3f} | {t['select_s_mean']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def run_demo(*, out_dir: str | Path = "papermill_runs/demo", budget: int = 40, seeds: Sequence[int] = (0, 1, 2),
             methods: Sequence[str] | None = None, pca: int = 64, data_root: str | Path = "data",
             overwrite: bool = False, progress: bool = True, max_samples: int | None = None,
             dataset: str = "fashion_mnist") -> dict:
    """Run the demo and write its results; returns the results dict (also written as ``results.json``).

    Args:
        out_dir: output folder; an existing ``results.json`` there is replaced only with ``overwrite``.
        budget: labels to select per run.
        seeds: one run per seed and method.
        methods: selection methods (default :data:`DEFAULT_METHODS`).
        pca: embedding dimension (PCA of pixels, fitted on the train split).
        max_samples: use only the first ``max_samples`` training samples (for quick runs and CI).
        dataset: any array dataset with train and test splits (``digits`` for a seconds-long run).
    """
    import matplotlib

    matplotlib.use("Agg")
    from .data import load_dataset, pool_split
    from .embed import compute_embeddings
    from .evaluate import class_coverage, imbalance, linear_probe_accuracy, nn_accuracy
    from .labels import annotate, make_selection, save_selection
    from .plots import accuracy_bars, class_histograms, context, embedding_2d, selection_map
    from .select import select

    out = Path(out_dir)
    if (out / "results.json").exists() and not overwrite:
        raise FileExistsError(f"{out / 'results.json'} already exists; pass overwrite=True (--overwrite)")
    methods = tuple(methods or DEFAULT_METHODS)
    t_start = time.perf_counter()
    # download=True: Fashion-MNIST comes from data/ or Debian's package offline, else through torchvision
    split = pool_split(dataset)  # "fit" for digits, whose "test" lies inside "train"
    train = load_dataset(dataset, split, root=data_root, download=True)
    test = load_dataset(dataset, "test", root=data_root, download=True)
    emb, emb_meta = compute_embeddings(dataset, split=split, pca=pca, root=data_root, progress=progress)
    test_emb, _ = compute_embeddings(dataset, split="test", pca=pca, root=data_root, progress=progress)
    if max_samples is not None and max_samples < len(train):
        train = train.subset(np.arange(max_samples))
        emb = emb[:max_samples]
    emb = np.ascontiguousarray(emb)
    print(f"[demo] {dataset}: pool {emb.shape}, test {test_emb.shape}, "
          f"embeddings {'reused' if emb_meta.get('reused') else 'computed'}")

    rows = []
    selections = {}
    for method in methods:
        for seed in seeds:
            t0 = time.perf_counter()
            idx = select(method, emb, budget, seed=seed, labels=train.labels, num_classes=train.num_classes)
            dt = time.perf_counter() - t0
            sel = make_selection(idx, dataset=train, method=method, params={}, seed=seed,
                                 embedding={k: emb_meta.get(k) for k in ("encoder", "params", "path")})
            sel = annotate(sel, train)
            save_selection(sel, out / "selections" / f"{method}_b{budget}_s{seed}.json", overwrite=overwrite)
            y = train.labels[idx]
            rows.append({
                "method": method, "seed": seed, "budget": budget,
                "coverage": class_coverage(y, train.num_classes),
                "nn1_acc": nn_accuracy(emb[idx], y, test_emb, test.labels, k=1),
                "logreg_acc": linear_probe_accuracy(emb[idx], y, test_emb, test.labels, seed=seed),
                "normalized_entropy": imbalance(y, train.num_classes)["normalized_entropy"],
                "select_s": dt,
            })
            selections[(method, seed)] = idx
            r = rows[-1]
            print(f"[demo] {method:10s} seed {seed}: coverage {r['coverage']:.0%}, 1-NN {r['nn1_acc']:.3f}, "
                  f"logreg {r['logreg_acc']:.3f} ({dt:.2f} s)")

    table = _summary_table(rows, methods)
    results = {
        "dataset": dataset, "budget": budget, "seeds": list(seeds), "methods": list(methods), "pca": pca,
        "n_pool": int(emb.shape[0]), "n_test": int(test_emb.shape[0]), "runs": rows, "summary": table,
        "embedding": {k: emb_meta.get(k) for k in ("encoder", "params", "path", "data_fingerprint")},
        **_io.provenance(), "wall_s": None,
    }
    md = _markdown(table, dataset=dataset, pca=pca, budget=budget, seeds=seeds, n=emb.shape[0],
                   n_test=test_emb.shape[0])

    # figures: a 2-D map (t-SNE of a seeded subsample plus every selected point), histograms, accuracy
    seed0 = seeds[0]
    shown = [m for m in ("usl", "random") if (m, seed0) in selections] or [methods[0]]
    rng = np.random.default_rng(0)
    background = rng.choice(emb.shape[0], size=min(3000, emb.shape[0]), replace=False)
    chosen = np.unique(np.concatenate([selections[(m, seed0)] for m in shown]))
    pts = np.unique(np.concatenate([background, chosen]))
    xy = embedding_2d(emb[pts], method="tsne", seed=0)
    pos = {int(p): i for i, p in enumerate(pts)}
    figs = {}
    ctx = context(dataset, encoder="pixels", pca=pca, n=int(emb.shape[0]))
    for m in shown:
        sel_pos = np.array([pos[int(i)] for i in selections[(m, seed0)]])
        figs[f"map_{m}.png"] = selection_map(xy, train.labels[pts], sel_pos, class_names=train.class_names,
                                             pool_size=int(emb.shape[0]),
                                             title=f"{ctx}\n{m}, {budget} labels, seed {seed0} (t-SNE map)")
    figs["class_histograms.png"] = class_histograms(
        {m: train.labels[selections[(m, seed0)]] for m in methods if (m, seed0) in selections},
        num_classes=train.num_classes, class_names=train.class_names,
        title=f"{ctx}: {budget} labels, seed {seed0}")
    figs["accuracy.png"] = accuracy_bars(table, metrics=("nn1_acc", "logreg_acc", "coverage"),
                                         context=f"{ctx}, {budget} labels")
    for name, fig in figs.items():
        path = out / "figures" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path.with_suffix(".tmp.png"), dpi=110, bbox_inches="tight")
        path.with_suffix(".tmp.png").replace(path)
    import matplotlib.pyplot as plt

    plt.close("all")

    results["wall_s"] = time.perf_counter() - t_start
    import pandas as pd

    _io.atomic_write_text(out / "results.csv", pd.DataFrame(rows).to_csv(index=False))
    _io.atomic_write_text(out / "results.md", md)
    _io.atomic_write_json(out / "results.json", results)
    print(md)
    print(f"[demo] wrote {out}/results.md, results.csv, results.json and figures/ in {results['wall_s']:.0f} s")
    return results
