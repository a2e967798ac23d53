"""Figure functions: arrays in, a matplotlib ``Figure`` out (nothing is shown or saved here).

Deterministic given a seed: :func:`embedding_2d` seeds t-SNE / UMAP / PCA explicitly.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

__all__ = ["embedding_2d", "selection_map", "class_histograms", "accuracy_bars", "image_grid"]


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
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(x).astype(np.float32)
    raise ValueError(f"unknown 2-D method {method!r}; choose tsne, umap or pca")


def _class_colors(num_classes: int):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if num_classes <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(num_classes)]


def selection_map(xy: np.ndarray, labels: np.ndarray, selected: np.ndarray, *, class_names=None,
                  title: str | None = None, ax=None):
    """Scatter of a 2-D map coloured by class, with the ``selected`` positions marked as large stars.

    Args:
        xy: (n, 2) coordinates. labels: (n,) int class ids (-1 = unknown, drawn grey).
        selected: indices into ``xy`` of the labelled samples.
    """
    import matplotlib.pyplot as plt

    labels = np.asarray(labels)
    if xy.shape[0] != labels.shape[0]:
        raise ValueError(f"xy has {xy.shape[0]} rows but labels has {labels.shape[0]}")
    num_classes = int(labels.max()) + 1 if labels.size else 1
    colors = _class_colors(num_classes)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 6))
    else:
        fig = ax.figure
    c = [colors[v] if v >= 0 else (0.7, 0.7, 0.7, 1) for v in labels]
    ax.scatter(xy[:, 0], xy[:, 1], c=c, s=3, alpha=0.35, linewidths=0)
    sel = np.asarray(selected, dtype=np.int64)
    ax.scatter(xy[sel, 0], xy[sel, 1], c=[c[i] for i in sel], s=160, marker="*", edgecolors="black",
               linewidths=0.8, zorder=3)
    if class_names is not None:
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], marker="o", ls="", color=colors[i], label=str(class_names[i]))
                   for i in range(min(num_classes, len(class_names)))]
        ax.legend(handles=handles, fontsize=7, loc="best", markerscale=1.2, framealpha=0.7)
    covered = len(np.unique(labels[sel][labels[sel] >= 0]))
    ax.set_title(title or f"{len(sel)} selected, {covered}/{num_classes} classes covered")
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def class_histograms(selected_labels: Mapping[str, np.ndarray], *, num_classes: int, class_names=None):
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
    ax.set_title("class histogram of the selection")
    fig.tight_layout()
    return fig


def accuracy_bars(table: Sequence[Mapping], *, metrics: Sequence[str] = ("nn1_acc",)):
    """Bars of ``<metric>_mean`` with ``<metric>_std`` error bars per method (rows of a summary table)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.5), squeeze=False)
    methods = [t["method"] for t in table]
    for ax, metric in zip(axes[0], metrics):
        mean = [100 * t[f"{metric}_mean"] for t in table]
        std = [100 * t[f"{metric}_std"] for t in table]
        ax.bar(methods, mean, yerr=std, capsize=3, color="tab:blue", alpha=0.8)
        ax.set_title(metric)
        ax.set_ylabel("%")
        ax.tick_params(axis="x", rotation=40, labelsize=8)
    fig.tight_layout()
    return fig


def image_grid(images: np.ndarray, *, titles: Sequence[str] | None = None, ncols: int = 10, cmap="gray",
               suptitle: str | None = None):
    """Grid of images (k, H, W) or (k, H, W, 3) uint8, with optional per-image titles."""
    import matplotlib.pyplot as plt

    images = np.asarray(images)
    k = images.shape[0]
    ncols = max(1, min(ncols, k))
    nrows = max(1, int(np.ceil(k / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.3 * ncols, 1.5 * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < k:
            ax.imshow(images[i], cmap=cmap if images.ndim == 3 else None)
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig
