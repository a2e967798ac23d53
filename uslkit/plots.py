"""Figure functions: arrays in, a matplotlib ``Figure`` out (nothing is shown or saved here).

Deterministic given a seed: :func:`embedding_2d` seeds t-SNE / UMAP / PCA explicitly.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["context", "embedding_2d", "selection_map", "selection_maps", "summary_table", "class_histograms",
           "accuracy_bars", "image_grid", "neighbor_grid",
           "summarize", "metric_curves", "coverage_vs_budget", "accuracy_vs_budget", "learning_curves",
           "per_class_bars", "series", "cluster_history"]


def embedding_2d(emb: np.ndarray, *, method: str = "tsne", seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """Project ``emb`` (n, d) to 2-D with ``"tsne"``, ``"umap"`` (umap-learn) or ``"pca"``; float32 (n, 2).

    t-SNE uses PCA initialisation and ``random_state=seed`` (scikit-learn), so the map is reproducible.
    UMAP with a fixed ``random_state`` runs single-threaded (umap-learn's rule for determinism).
    """
    from ._validate import check_embeddings, check_seed

    x = check_embeddings(emb)
    seed = check_seed(seed)
    if method == "pca":
        xc = x.astype(np.float64) - x.mean(axis=0)
        _, _, vt = np.linalg.svd(xc, full_matrices=False)
        vt = vt[:2] * np.sign(vt[:2, np.argmax(np.abs(vt[:2]), axis=1)].diagonal())[:, None]
        return (xc @ vt.T).astype(np.float32)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perp = min(perplexity, max(2.0, (x.shape[0] - 1) / 3))
        return TSNE(n_components=2, init="pca", random_state=seed, perplexity=perp).fit_transform(x).astype(
            np.float32)
    if method == "umap":
        try:
            import umap
        except ImportError as e:
            raise ImportError("method 'umap' needs umap-learn: pip install umap-learn") from e
        import warnings

        import torch

        # umap-learn's fit resets the process-wide OpenMP thread count (numba), which torch and faiss share:
        # under OMP_NUM_THREADS=1 later training ran on 2 threads and was no longer bit-for-bit. Restore it.
        threads = torch.get_num_threads()
        try:
            with warnings.catch_warnings():  # "n_jobs overridden by random_state": that is the point
                warnings.filterwarnings("ignore", message=".*n_jobs.*", category=UserWarning)
                n_neighbors = min(15, max(2, x.shape[0] - 1))
                return umap.UMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed,
                                 n_jobs=1).fit_transform(x).astype(np.float32)
        finally:
            torch.set_num_threads(threads)
    raise ValueError(f"unknown 2-D method {method!r}; choose tsne, umap or pca")


#: words (with units) for the metric keys the kit records, used for titles and axis labels
METRIC_LABELS = {
    "nn1_acc": "1-NN test accuracy (%)",
    "logreg_acc": "logistic-regression test accuracy (%)",
    "linear_acc": "linear-probe test accuracy (%)",
    "propagation_acc": "label-propagation accuracy on the pool (%)",
    "coverage": "classes covered (%)",
    "purity": "cluster purity (%)",
    "normalized_entropy": "class balance (normalised entropy)",
    "budget": "labels (budget)",
    "loss": "training loss",
    "loss_x": "loss on labelled images",
    "loss_u": "loss on unlabelled images",
    "mask": "share of the unlabelled batch above the threshold (%)",
    "mask_correct": "share confident and right (%)",
    "pseudo_acc": "pseudo-label accuracy (%)",
    "top1": "test top-1 accuracy (%)",
    "ema_top1": "test top-1 accuracy of the EMA model (%)",
    "lr": "learning rate",
    "select_s": "selection time (s)",
    "test_acc": "test accuracy of the head (%)",
    "labeled": "labels",
    "gain": "accuracy gain over random (points)",
    "balance": "class balance (normalised entropy)",
    "query_s": "query time (s)",
    "seconds": "time (s)",
    "nmi": "normalised mutual information",
    "size_cv": "cluster size spread (std / mean)",
    "pool": "pool",
    "step": "training step",
    "delta": "ball radius",
    "ball_coverage": "pool inside the picks' balls (%)",
}


def metric_label(key: str, *, percent: bool | None = None) -> str:
    """Words for a metric key (:data:`METRIC_LABELS`), else the key with spaces; ``percent=False`` drops a
    ``(%)`` unit, ``True`` adds one."""
    text = METRIC_LABELS.get(key, key.replace("_", " "))
    if percent is False:
        text = text.replace(" (%)", "")
    elif percent and "(%)" not in text:
        text += " (%)"
    return text


#: display names of the kit's datasets, for titles
DATASET_NAMES = {"digits": "digits", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST", "cifar10": "CIFAR-10",
                 "cifar100": "CIFAR-100", "stl10": "STL-10", "svhn": "SVHN", "bloodmnist": "BloodMNIST",
                 "imagefolder": "image folder"}
_ENCODER_NAMES = {"pixels": "pixels", "resnet18": "ResNet-18", "resnet50": "ResNet-50", "clip": "CLIP"}


def context(dataset: str | None = None, *, encoder: str | None = None, pca: int | None = None, n: int | None = None,
            method: str | None = None, budget: int | None = None, seed: int | None = None) -> str:
    """The words that head a figure: ``"Fashion-MNIST, pixels + PCA-64, 3,000 images: usl, 40 labels, seed 0"``
    (each part only when given; ``ckpt:<path>`` encoders are named by their run folder)."""
    parts = []
    if dataset:
        parts.append(DATASET_NAMES.get(dataset, dataset))
    if encoder:
        if encoder.startswith("ckpt:"):
            from pathlib import Path

            path = Path(encoder[5:])
            words = f"encoder {path.parent.name or path.name}"
            enc = words if len(words) <= 40 else words[:37] + "..."
        else:
            enc = _ENCODER_NAMES.get(encoder, encoder)
        parts.append(enc + (f" + PCA-{pca}" if pca else ""))
    if n is not None:
        parts.append(f"{n:,} images")
    head = ", ".join(parts)
    tail = ", ".join(p for p in (method, None if budget is None else f"{budget} labels",
                                 None if seed is None else f"seed {seed}") if p)
    return f"{head}: {tail}" if head and tail else head or tail


def _wrap(text: str, width: int) -> str:
    """``text`` with each of its lines wrapped at ``width`` characters."""
    import textwrap

    return "\n".join("\n".join(textwrap.wrap(line, width, break_long_words=True)) or line
                     for line in str(text).split("\n"))


def _tile_axes(nrows: int, ncols: int, *, title_lines: int, suptitle: str | None, tile: float = 1.25,
               gap: float = 0.12):
    """A figure of ``nrows x ncols`` square image axes laid out by hand (in inches) so that titles of
    ``title_lines`` lines fit above each tile and a wrapped ``suptitle`` above all: ``tight_layout`` cannot
    place titles of equal-aspect images without overlap."""
    import matplotlib.pyplot as plt

    sup = _wrap(suptitle, int(11 * ncols * (tile + gap))) if suptitle else ""
    sup_h = 0.2 * (sup.count("\n") + 1) + 0.12 if sup else 0.0
    title_h = 0.15 * title_lines + 0.1 if title_lines else 0.0
    row_h = tile + title_h + gap
    width, height = ncols * (tile + gap) + gap, nrows * row_h + sup_h + gap
    fig = plt.figure(figsize=(width, height))
    axes = np.empty((nrows, ncols), dtype=object)
    for r in range(nrows):
        bottom = height - sup_h - r * row_h - title_h - tile
        for c in range(ncols):
            axes[r, c] = fig.add_axes(((gap + c * (tile + gap)) / width, bottom / height, tile / width, tile / height))
    if sup:
        fig.suptitle(sup, y=1 - 0.06 / height, va="top", fontsize=10)
    return fig, axes


def _class_colors(num_classes: int):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(num_classes)]


def selection_map(xy: np.ndarray, labels: np.ndarray, selected: np.ndarray, *, class_names=None,
                  title: str | None = None, ax=None, pool_size: int | None = None, legend: bool = True):
    """Scatter of a 2-D map coloured by class, with the ``selected`` positions marked as large stars.

    Args:
        xy: (n, 2) coordinates. labels: (n,) int class ids (-1 = unknown, drawn grey).
        selected: indices into ``xy`` of the labelled samples.
        pool_size: size of the pool ``xy`` was drawn from; when larger than ``n`` the title says the background
            is a random subsample of it.
        legend: draw the class legend on the axes (``class_names`` given).
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    if xy.shape[0] != labels.shape[0]:
        raise ValueError(f"xy has {xy.shape[0]} rows but labels has {labels.shape[0]}")
    num_classes = max(int(labels.max()) + 1 if labels.size else 1, len(class_names or ()))
    colors = _class_colors(num_classes)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
    else:
        fig = ax.figure
    c = [colors[v] if v >= 0 else (0.7, 0.7, 0.7, 1) for v in labels]
    n = len(labels)
    ax.scatter(xy[:, 0], xy[:, 1], c=c, s=10 if n <= 2000 else 6 if n <= 10000 else 3,
               alpha=0.6 if n <= 10000 else 0.4, linewidths=0)
    sel = np.asarray(selected, dtype=np.int64)
    ax.scatter(xy[sel, 0], xy[sel, 1], c=[c[i] for i in sel], s=160, marker="*", edgecolors="black",
               linewidths=0.8, zorder=3)
    if class_names is not None and legend:
        ax.legend(handles=_class_handles(class_names, colors), fontsize=7, loc="best", markerscale=1.2,
                  framealpha=0.7)
    covered = len(np.unique(labels[sel][labels[sel] >= 0]))
    note = f"{len(sel)} selected (stars), {covered}/{num_classes} classes covered"
    if pool_size is not None and pool_size > n:
        note += f"\nbackground: random {n:,} of {pool_size:,} images"
    ax.set_title(f"{title}\n{note}" if title else note, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def _class_handles(class_names, colors):
    from matplotlib.lines import Line2D

    return [Line2D([], [], marker="o", ls="", color=colors[i], label=str(class_names[i]))
            for i in range(min(len(colors), len(class_names)))]


def selection_maps(xy: np.ndarray, labels: np.ndarray, picks: Mapping[str, np.ndarray], *, class_names=None,
                   title: str = "", pool_size: int | None = None, ncols: int = 4):
    """Small multiples of :func:`selection_map`, one panel per entry of ``picks`` (name -> indices into ``xy``),
    sharing one class legend (in the first free panel, else under the grid); no empty panels are drawn."""
    import matplotlib.pyplot as plt

    names = list(picks)
    if not names:
        raise ValueError("picks is empty: give at least one selection to map")
    labels = np.asarray(labels)
    k = len(names)
    ncols = max(1, min(ncols, k + (class_names is not None)))
    nrows = -(-(k + (class_names is not None)) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.0 * ncols, 3.9 * nrows), squeeze=False)
    flat = axes.ravel()
    for ax, m in zip(flat, names):
        selection_map(xy, labels, picks[m], class_names=class_names, title=str(m), ax=ax, legend=False)
    for ax in flat[k:]:
        ax.set_visible(False)
    if class_names is not None:
        colors = _class_colors(max(int(labels.max()) + 1 if labels.size else 1, len(class_names)))
        spare = flat[k]
        spare.set_visible(True)
        spare.axis("off")
        spare.legend(handles=_class_handles(class_names, colors), loc="center", fontsize=9, title="class",
                     frameon=False)
    head = title
    if pool_size is not None and pool_size > len(labels):
        head += (": " if head else "") + f"background a random {len(labels):,} of {pool_size:,} images"
    if head:
        fig.suptitle(head, fontsize=11)
    fig.tight_layout()
    return fig


def class_histograms(selected_labels: Mapping[str, np.ndarray], *, num_classes: int, class_names=None,
                     title: str | None = None):
    """Grouped bar chart: how many labelled samples per class, one group of bars per method."""
    import matplotlib.pyplot as plt

    names = list(selected_labels)
    fig, ax = plt.subplots(figsize=(max(6, num_classes * 0.8), 3.5))
    width = 0.8 / max(len(names), 1)
    for j, m in enumerate(names):
        counts = np.bincount(np.asarray(selected_labels[m], dtype=np.int64), minlength=num_classes)
        ax.bar(np.arange(num_classes) + j * width - 0.4 + width / 2, counts, width=width, label=m)
    ax.set_xticks(np.arange(num_classes))
    ax.set_xticklabels(class_names if class_names is not None else range(num_classes), rotation=30, ha="right",
                       fontsize=8)
    ax.set_ylabel("labelled samples")
    ax.legend(fontsize=8, ncol=min(len(names), 4))
    ax.set_xlabel("class")
    ax.set_title(title or "labelled samples per class in the selection", fontsize=10)
    fig.tight_layout()
    return fig


def accuracy_bars(table: Sequence[Mapping], *, metrics: Sequence[str] = ("nn1_acc",), context: str = ""):
    """Bars of ``<metric>_mean`` with ``<metric>_std`` error bars per method (rows of a summary table; ``runs``,
    when present, is the number of seeds the std is over); ``context`` (dataset, budget) heads the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.8), squeeze=False)
    methods = [t["method"] for t in table]
    runs = sorted({int(t["runs"]) for t in table if "runs" in t})
    for ax, metric in zip(axes[0], metrics):
        mean = [100 * t[f"{metric}_mean"] for t in table]
        std = [100 * t[f"{metric}_std"] for t in table]
        ax.bar(methods, mean, yerr=std, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_title(metric_label(metric, percent=False))
        ax.set_ylabel(metric_label(metric, percent=True))
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    seeds = f"std over {'/'.join(map(str, runs))} seeds" if runs else "std over seeds"
    fig.suptitle((f"{context}: " if context else "") + f"mean per method, error bars {seeds}", fontsize=10)
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, *, titles: Sequence[str] | None = None, ncols: int = 10, cmap="gray",
               suptitle: str | None = None):
    """Grid of images (k, H, W) or (k, H, W, 3) uint8, with optional per-image titles."""
    images = np.asarray(images)
    k = images.shape[0]
    ncols = max(1, min(ncols, k))
    nrows = max(1, int(np.ceil(k / ncols)))
    lines = max((_wrap(t, 11).count("\n") + 1 for t in titles), default=1) if titles is not None else 0
    fig, axes = _tile_axes(nrows, ncols, title_lines=lines, suptitle=suptitle)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            ax.imshow(images[i], cmap=cmap if images.ndim == 3 else None)
            if titles is not None:
                ax.set_title(_wrap(titles[i], 11), fontsize=8)
    return fig


def neighbor_grid(images: np.ndarray, queries, neighbors, *, labels=None, class_names=None, cmap="gray",
                  suptitle: str | None = None):
    """One row per query: the query image (boxed) then its neighbours; titles show class names when given.

    Args:
        images: (n, H, W) or (n, H, W, 3) uint8 pool images.
        queries: (q,) indices of the query images.
        neighbors: (q, k) indices of their neighbours (e.g. :func:`uslkit.knn.knn` ``idx``), nearest first.
        labels: (n,) class ids, for the titles; a neighbour of another class than its query is titled in red.
    """
    queries = np.asarray(queries, dtype=np.int64).ravel()
    neighbors = np.asarray(neighbors, dtype=np.int64).reshape(len(queries), -1)
    q, k = neighbors.shape

    def name(i):
        if labels is None:
            return str(i)
        c = int(labels[i])
        return str(class_names[c]) if class_names is not None else str(c)

    titles = [[_wrap(("query: " if c == 0 else "") + name(i), 12) for c, i in enumerate([queries[r], *neighbors[r]])]
              for r in range(q)]
    lines = max(t.count("\n") + 1 for row in titles for t in row)
    fig, axes = _tile_axes(q, k + 1, title_lines=lines, suptitle=suptitle)
    for r in range(q):
        row = [queries[r], *neighbors[r]]
        for c, i in enumerate(row):
            ax = axes[r, c]
            ax.imshow(images[i], cmap=cmap if np.asarray(images[i]).ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            wrong = labels is not None and c > 0 and labels[i] != labels[queries[r]]
            ax.set_title(titles[r][c], fontsize=8, color="red" if wrong else "black")
            for side in ax.spines.values():
                side.set_visible(c == 0)
                side.set_linewidth(2)
    return fig


def summary_table(rows: Sequence[Mapping], *, by: Sequence[str] = ("method", "budget"),
                  metrics: Sequence[str] = ("coverage", "nn1_acc"), percent: Sequence[str] | None = None,
                  digits: Mapping[str, int] | None = None):
    """A ``pandas.DataFrame`` of ``"mean +- std"`` strings per group of ``by`` (std over the rows of a group,
    i.e. seeds; its ``n`` column says how many), headed in words (:func:`metric_label`). ``percent``: metrics
    shown x100 (default: those whose label has a ``%`` unit); ``digits``: decimals per metric (default 1 for
    percentages, 2 otherwise); group order is first appearance."""
    import pandas as pd

    by, metrics = list(by), list(metrics)
    if percent is None:
        percent = [m for m in metrics if "(%)" in metric_label(m)]
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r[b] for b in by), []).append(r)
    out = []
    for key, rs in groups.items():
        row = {metric_label(b, percent=False): v for b, v in zip(by, key)}
        row["n"] = len(rs)
        for m in metrics:
            v = np.asarray([float(r[m]) for r in rs if r.get(m) is not None], dtype=float)
            scale = 100.0 if m in percent else 1.0
            d = (digits or {}).get(m, 1 if m in percent else 2)
            if v.size == 0:
                row[metric_label(m, percent=m in percent)] = "-"
                continue
            text = f"{scale * v.mean():.{d}f}"
            if v.size > 1:
                text += f" \u00b1 {scale * v.std(ddof=1):.{d}f}"
            row[metric_label(m, percent=m in percent)] = text
        out.append(row)
    return pd.DataFrame(out).set_index([metric_label(b, percent=False) for b in by])


def summarize(rows: Sequence[Mapping], *, x: str, y: str, hue: str = "method") -> dict:
    """Mean and standard deviation of ``y`` over repeated rows (seeds) per ``(hue, x)``.

    Returns ``{hue value: {"x": sorted x values, "mean": [...], "std": [...], "n": [...]}}`` (std 0 for n=1).
    Rows without ``y`` (or with ``None``) are skipped.
    """
    groups: dict = {}
    for r in rows:
        if r.get(y) is None:
            continue
        groups.setdefault(r.get(hue), {}).setdefault(r[x], []).append(float(r[y]))
    out = {}
    for h, by_x in groups.items():
        xs = sorted(by_x)
        vals = [np.asarray(by_x[v]) for v in xs]
        out[h] = {"x": xs, "mean": [float(v.mean()) for v in vals],
                  "std": [float(v.std(ddof=1)) if len(v) > 1 else 0.0 for v in vals], "n": [len(v) for v in vals]}
    return out


def metric_curves(rows: Sequence[Mapping], *, x: str, y: str, hue: str = "method", ax=None,
                  percent: bool = True, title: str | None = None, xlabel: str | None = None,
                  ylabel: str | None = None, logx: bool = False):
    """``y`` against ``x``, one line per ``hue`` value, mean over seeds with a +-1 std band.

    ``rows`` are flat dicts (one per run: method, budget, seed, metrics), e.g. a sweep's aggregated table.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
    else:
        fig = ax.figure
    scale = 100.0 if percent else 1.0
    for h, d in summarize(rows, x=x, y=y, hue=hue).items():
        m, s = np.asarray(d["mean"]) * scale, np.asarray(d["std"]) * scale
        line, = ax.plot(d["x"], m, marker="o", ms=4, label=f"{h} (n={max(d['n'])})")
        ax.fill_between(d["x"], m - s, m + s, color=line.get_color(), alpha=0.18, linewidth=0)
    if logx:
        ax.set_xscale("log")
    xs = sorted({v for d in summarize(rows, x=x, y=y, hue=hue).values() for v in d["x"]})
    if 0 < len(xs) <= 12 and all(float(v).is_integer() for v in xs):  # budgets, k: tick the values measured
        from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

        ax.xaxis.set_major_locator(FixedLocator(xs))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel or metric_label(x))
    ax.set_ylabel(ylabel or metric_label(y, percent=percent))
    ax.set_title((title or f"{metric_label(y, percent=False)} vs {metric_label(x, percent=False)}")
                 + "\n(line: mean over seeds, band: +-1 std; n = seeds)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def coverage_vs_budget(rows: Sequence[Mapping], *, key: str = "coverage", ax=None, title: str | None = None):
    """Class coverage (fraction of classes with a label) against budget per method, spread over seeds."""
    return metric_curves(rows, x="budget", y=key, ax=ax, title=title or "class coverage vs budget",
                         ylabel="classes covered (%)")


def accuracy_vs_budget(rows: Sequence[Mapping], *, key: str = "nn1_acc", ax=None, title: str | None = None):
    """An accuracy metric against budget per method, spread over seeds."""
    return metric_curves(rows, x="budget", y=key, ax=ax, title=title or f"{metric_label(key, percent=False)} vs budget")


def learning_curves(history: Sequence[Mapping], *, keys: Sequence[str] | None = None, title: str | None = None):
    """Training history (``TrainResult.history`` / ``history.json``): one panel per metric against step.

    ``keys`` default: the losses, the FixMatch mask rate, its pseudo-label monitor (``pseudo_acc``,
    ``mask_correct``) and any accuracy recorded during training (``top1``/``ema_top1``), whichever are present.
    """
    import matplotlib.pyplot as plt

    history = list(history)
    present = {k for h in history for k, v in h.items() if isinstance(v, (int, float)) and k != "step"}
    if keys is None:
        order = ("loss", "loss_x", "loss_u", "mask", "mask_correct", "pseudo_acc", "top1", "ema_top1")
        keys = [k for k in order if k in present]
    keys = list(keys)
    if not keys:
        raise ValueError(f"no plottable keys in the history (present: {sorted(present)})")
    cols = min(4, len(keys))
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.8 * rows), squeeze=False)
    for ax, k in zip(axes.ravel(), keys):
        scale = 100.0 if "(%)" in metric_label(k) else 1.0  # shares and accuracies are fractions in the history
        pts = [(h["step"], scale * h[k]) for h in history if isinstance(h.get(k), (int, float))]
        if pts:
            ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, ms=3)
        ax.set_title(metric_label(k), fontsize=9)
        ax.set_xlabel(metric_label("step"))
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(keys):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def per_class_bars(values: Mapping[str, Sequence[float]], *, class_names=None, title: str = "per-class accuracy",
                   ylabel: str = "accuracy (%)"):
    """Grouped bars of per-class values (e.g. accuracy of the model and of its EMA), in percent."""
    import matplotlib.pyplot as plt

    names = list(values)
    num_classes = len(next(iter(values.values()))) if names else 0
    fig, ax = plt.subplots(figsize=(max(6, num_classes * 0.8), 3.5))
    width = 0.8 / max(len(names), 1)
    for j, m in enumerate(names):
        v = 100 * np.asarray(values[m], dtype=float)
        if v.shape != (num_classes,):
            raise ValueError(f"per-class values of {m!r} have shape {v.shape}, expected ({num_classes},)")
        ax.bar(np.arange(num_classes) + j * width - 0.4 + width / 2, v, width=width, label=m)
    ax.set_xticks(np.arange(num_classes))
    ax.set_xticklabels(class_names if class_names is not None else range(num_classes), rotation=30, ha="right",
                       fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("class")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def series(x: Sequence, ys: Mapping[str, Sequence[float]], *, xlabel: str = "", ylabel: str = "",
           title: str | None = None, ax=None):
    """Plain lines ``ys[name]`` against ``x`` (e.g. picks changed per USL iteration)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3.2))
    else:
        fig = ax.figure
    for name, y in ys.items():
        ax.plot(list(x), list(y), marker="o", ms=4, label=str(name))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(ys) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def cluster_history(history: Sequence[Mapping], *, max_curves: int = 8, title: str | None = None):
    """Clustering heads over training (USL-T's ``history.json``): per head, the cluster sizes sorted in decreasing
    order at up to ``max_curves`` evaluations (evenly spaced, first and last included; colour = step), then each
    head's mean confidence and its number of non-empty clusters against step.

    Args:
        history: entries with ``step`` and, at evaluations, ``cluster_sizes`` (per head, ``K`` counts),
            ``confidence`` (per head) and ``nonempty`` (per head), as :func:`uslkit.train.usl_t.train_usl_t` logs.
        max_curves: most size curves per head panel.
    """
    import matplotlib.pyplot as plt

    evals = [h for h in history if h.get("cluster_sizes") is not None]
    if not evals:
        raise ValueError("no evaluation with cluster_sizes in the history (USL-T logs them every eval_every steps)")
    if isinstance(max_curves, bool) or not isinstance(max_curves, int) or max_curves < 1:
        raise ValueError(f"max_curves must be a positive int, got {max_curves!r}")
    heads = len(evals[0]["cluster_sizes"])
    for h in evals:
        for key in ("cluster_sizes", "confidence", "nonempty"):
            if len(h.get(key, ())) != heads:
                raise ValueError(f"history entry at step {h.get('step')} has {len(h.get(key, ()))} heads in {key!r}, "
                                 f"expected {heads}")
    shown = [evals[i] for i in np.unique(np.linspace(0, len(evals) - 1, min(max_curves, len(evals))).round()
                                         .astype(int))]
    steps = [h["step"] for h in evals]
    cmap = plt.get_cmap("viridis")
    lo, hi = shown[0]["step"], shown[-1]["step"]
    fig, axes = plt.subplots(1, heads + 2, figsize=(3.2 * (heads + 2), 3.2), squeeze=False)
    axes = axes[0]
    for j in range(heads):
        ax = axes[j]
        for h in shown:
            sizes = np.sort(np.asarray(h["cluster_sizes"][j]))[::-1]
            ax.plot(np.arange(1, sizes.size + 1), sizes, color=cmap((h["step"] - lo) / max(hi - lo, 1)),
                    label=f"step {h['step']}")
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(f"head {j}: sorted cluster sizes")
        ax.set_xlabel("cluster rank")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.set_ylabel("samples")
            ax.legend(fontsize=6)
    for ax, key, panel in ((axes[heads], "confidence", "mean confidence"),
                           (axes[heads + 1], "nonempty", "non-empty clusters")):
        for j in range(heads):
            ax.plot(steps, [h[key][j] for h in evals], marker="o" if len(steps) < 30 else None, ms=3,
                    label=f"head {j}")
        ax.set_title(panel)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
