"""An ipywidgets explorer for selections: dataset, embedding, method, budget and seed in; map, images and
coverage out, updated live (``notebooks/10_explorer.ipynb``).

Every control is a public widget attribute, and every reaction is a public method, so the explorer can be
driven from Python without a browser (that is how the tests run it)::

    ex = SelectionExplorer(datasets=["fashion_mnist"], max_points=3000)
    ex.budget.value = 20          # the map, coverage and histogram update
    ex.click(*ex.xy[123])         # what a click on the map does: the nearest sample and its neighbours
    ex.state()                    # {"dataset", "embedding", "method", "budget", "seed", "coverage", ...}

The pool is a seeded random subset of ``max_points`` training samples, so selection (USL included) is quick
enough for the slider to stay live; the map is computed once per (dataset, embedding, projection).
Each panel is created once and updated in place: the map is an ipympl canvas when ipympl is installed (clicks
on it focus a sample, whatever the notebook's ``%matplotlib`` backend), else a PNG image (the "sample" box
then does what a click does); the class histogram and the image/neighbour panel are PNG images rendered off
pyplot, so no figure is left behind for a later cell to print.
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

import numpy as np

__all__ = ["SelectionExplorer", "EMBEDDINGS", "load_pool", "pool_indices"]

#: embedding choices: name -> keyword arguments of :func:`uslkit.embed.compute_embeddings`
EMBEDDINGS = {
    "pca64": dict(encoder="pixels", pca=64),
    "pca32": dict(encoder="pixels", pca=32),
    "pixels": dict(encoder="pixels"),
}
_SELECT_METHODS = ("usl", "kmeans", "typiclust", "probcover", "coreset", "sela", "random", "stratified")


def pool_indices(n: int, max_points: int, *, seed: int = 0) -> np.ndarray:
    """Sorted int64 positions in the training split of the explorer's pool: a seeded random subset of
    ``min(max_points, n)`` (``pool_indices(len(train), max_points)[ex.selected]`` are the picks' positions)."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=min(max_points, n), replace=False)).astype(np.int64)


def load_pool(dataset: str, embedding: str, *, max_points: int, seed: int = 0, root="data"):
    """``(images, labels, class_names, emb)`` of a seeded random subset of ``dataset``'s training split.

    ``embedding`` is a key of :data:`EMBEDDINGS` or ``ckpt:<path>`` (a kit-trained encoder); embeddings of
    the whole split are computed once and cached under ``<root>/embeddings``.
    """
    from pathlib import Path

    from .data import load_dataset, pool_split
    from .embed import compute_embeddings

    if embedding.startswith("ckpt:"):
        kw = dict(encoder=embedding)
    elif embedding in EMBEDDINGS:
        kw = dict(EMBEDDINGS[embedding])
    else:
        raise ValueError(f"unknown embedding {embedding!r}; choose one of {sorted(EMBEDDINGS)} or 'ckpt:<path>'")
    split = pool_split(dataset)
    ds = load_dataset(dataset, split, root=root, download=True)
    emb, _ = compute_embeddings(dataset, split=split, root=root, cache_dir=Path(root) / "embeddings",
                                progress=False, **kw)
    idx = pool_indices(len(ds), max_points, seed=seed)
    images = ds.images[idx] if ds.images is not None else np.stack([np.asarray(ds.get_image(i)) for i in idx])
    return images, ds.labels[idx], list(ds.class_names), np.ascontiguousarray(emb[idx])


class SelectionExplorer:
    """The widget app. Display it with ``display(ex.widget)`` (or just ``ex`` as the cell's last line).

    Args:
        datasets: dataset names offered (first is the start value).
        embeddings: embedding names offered (:data:`EMBEDDINGS` keys or ``ckpt:<path>``).
        methods: selection methods offered (:func:`uslkit.select.select` names).
        max_points: pool size (seeded subset of the training split).
        budget: start value of the budget slider; ``max_budget`` its maximum.
        projection: ``"tsne"``, ``"umap"`` or ``"pca"`` for the map.
        n_neighbors: neighbours shown for a clicked sample.
        root: data root.
        loader: replaces :func:`load_pool` (``loader(dataset, embedding, max_points=...)`` returning the same
            tuple), e.g. to explore your own arrays.
        interactive: the map as a clickable ipympl canvas (``None``: when ipympl is installed) or a PNG image.
    """

    def __init__(self, *, datasets: Sequence[str] = ("fashion_mnist",), embeddings: Sequence[str] = ("pca64",),
                 methods: Sequence[str] = _SELECT_METHODS, max_points: int = 3000, budget: int = 20,
                 max_budget: int = 200, seed: int = 0, projection: str = "tsne", n_neighbors: int = 8,
                 root="data", loader: Callable | None = None, interactive: bool | None = None):
        import ipywidgets as w

        if not datasets or not embeddings or not methods:
            raise ValueError("datasets, embeddings and methods must each offer at least one choice")
        self.max_points = int(max_points)
        self.max_budget = int(max_budget)
        self.n_neighbors = int(n_neighbors)
        self.root = root
        self._loader = loader or (lambda d, e, max_points: load_pool(d, e, max_points=max_points, root=root))
        self._pools: dict = {}
        self._maps: dict = {}
        self.selected = np.zeros(0, dtype=np.int64)
        self.focus: int | None = None
        self.error: str | None = None

        self.dataset = w.Dropdown(options=list(datasets), description="dataset")
        self.embedding = w.Dropdown(options=list(embeddings), description="embedding")
        self.method = w.Dropdown(options=list(methods), value=methods[0], description="method")
        self.budget = w.IntSlider(value=int(budget), min=1, max=int(max_budget), description="budget",
                                  continuous_update=False)
        self.seed = w.BoundedIntText(value=int(seed), min=0, max=2**31 - 1, description="seed")
        self.projection = w.Dropdown(options=["tsne", "umap", "pca"], value=projection, description="map")
        self.sample = w.BoundedIntText(value=0, min=0, max=max(0, self.max_points - 1), description="sample")
        self.info = w.HTML()
        self.map_fig, self.map_view = _map_canvas(interactive)
        self.map_ax = self.map_fig.add_subplot()
        self.interactive = self.map_view is self.map_fig.canvas
        if self.interactive:
            self.map_fig.canvas.mpl_connect("button_press_event", self._on_press)
        self.hist_view = w.Image(format="png")
        self.detail_view = w.Image(format="png")
        controls = w.VBox([self.dataset, self.embedding, self.method, self.budget, self.seed, self.projection,
                           self.sample, self.info, self.hist_view])
        self.widget = w.HBox([controls, w.VBox([self.map_view, self.detail_view])])

        for ctl in (self.dataset, self.embedding):
            ctl.observe(lambda _: self.refresh(), names="value")
        self.projection.observe(lambda _: self.refresh(), names="value")
        for ctl in (self.method, self.budget, self.seed):
            ctl.observe(lambda _: self.update_selection(), names="value")
        self.sample.observe(lambda ch: self.show_sample(int(ch["new"])), names="value")
        self.refresh()

    # ---- data -------------------------------------------------------------------------------------------
    @property
    def pool(self):
        key = (self.dataset.value, self.embedding.value)
        if key not in self._pools:
            self._pools[key] = self._loader(*key, max_points=self.max_points)
        return self._pools[key]

    @property
    def xy(self) -> np.ndarray:
        """(n, 2) map coordinates of the pool (seeded, cached per dataset, embedding and projection)."""
        from .plots import embedding_2d

        key = (self.dataset.value, self.embedding.value, self.projection.value)
        if key not in self._maps:
            self._maps[key] = embedding_2d(self.pool[3], method=self.projection.value, seed=0)
        return self._maps[key]

    # ---- reactions ----------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Load (or reuse) the pool and map of the current dataset/embedding/projection, then reselect; the
        focused sample and its neighbour panel belong to the old pool and are cleared."""
        key = (self.dataset.value, self.embedding.value, self.projection.value)
        if key not in self._maps:
            self.info.value = f"computing the {self.projection.value} map of {self.dataset.value} ..."
        n = len(self.pool[1])
        self.budget.max = max(1, min(self.max_budget, n))  # from the requested maximum: a larger pool regrows it
        self.sample.max = n - 1
        _ = self.xy  # computed and cached here, before drawing
        self.focus = None
        self.detail_view.value = b""
        self.detail_view.layout.display = "none"  # no sample focused in this pool yet
        self.update_selection()

    def update_selection(self) -> None:
        """Run the selected method, then redraw the map, the histogram and the coverage line."""
        from .select import select

        images, labels, names, emb = self.pool
        try:
            self.selected = np.asarray(select(self.method.value, emb, int(self.budget.value),
                                              seed=int(self.seed.value), labels=labels, num_classes=len(names)),
                                       dtype=np.int64)
            self.error = None
        except Exception as e:  # shown in the app instead of an exception in a widget callback
            self.selected = np.zeros(0, dtype=np.int64)
            self.error = f"{type(e).__name__}: {e}"
        self._draw()

    def click(self, x: float, y: float) -> int:
        """What a click at map coordinates ``(x, y)`` does: focus the nearest sample; returns its index."""
        d = ((self.xy - np.array([x, y], dtype=np.float32)) ** 2).sum(1)
        i = int(np.argmin(d))
        self.sample.value = i  # triggers show_sample through the observer
        if self.focus != i:
            self.show_sample(i)
        return i

    def neighbors(self, i: int) -> np.ndarray:
        """The ``n_neighbors`` nearest pool samples to sample ``i`` in embedding space (cosine), nearest first."""
        emb = self.pool[3]
        sims = emb @ emb[i]
        sims[i] = -np.inf
        k = min(self.n_neighbors, len(emb) - 1)
        top = np.argpartition(-sims, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
        return top[np.lexsort((top, -sims[top]))]

    def show_sample(self, i: int) -> None:
        """Show sample ``i`` and its neighbours (classes of the neighbours in red where they differ)."""
        import matplotlib.pyplot as plt

        from .plots import neighbor_grid

        images, labels, names, _ = self.pool
        if not 0 <= i < len(labels):
            raise ValueError(f"sample index {i} outside the pool of {len(labels)}")
        self.focus = int(i)
        nb = self.neighbors(i)
        fig = neighbor_grid(images, [i], nb[None, :], labels=labels, class_names=names,
                            suptitle=f"{self.dataset.value}: sample {i} "
                            f"({'labelled' if i in set(self.selected.tolist()) else 'pool'}) and its {len(nb)} "
                            f"nearest neighbours in {self.embedding.value} (red: another class)")
        self.detail_view.value = _png(fig)
        self.detail_view.layout.display = ""
        plt.close(fig)
        self._draw()

    def state(self) -> dict:
        """What the app shows, as plain values (for tests and for saving a view)."""
        from .evaluate import class_coverage, imbalance

        _, labels, names, _ = self.pool
        y = labels[self.selected]
        out = {"dataset": self.dataset.value, "embedding": self.embedding.value, "method": self.method.value,
               "budget": int(self.budget.value), "seed": int(self.seed.value), "pool": int(len(labels)),
               "selected": self.selected.tolist(), "focus": self.focus, "error": self.error}
        if len(y):
            out["coverage"] = class_coverage(y, len(names))
            out["imbalance"] = imbalance(y, len(names))
        return out

    # ---- drawing ------------------------------------------------------------------------------------------
    def _on_press(self, event) -> None:
        if event.inaxes is self.map_ax and event.xdata is not None:
            self.click(event.xdata, event.ydata)

    def _draw(self) -> None:
        """Update the panels in place: the info line, the map (same figure: redrawn axes), the histogram."""
        import matplotlib.pyplot as plt

        from .plots import class_histograms, selection_map

        _, labels, names, _ = self.pool
        st = self.state()
        if self.error:
            self.info.value = f"<b style='color:#b00'>{html.escape(self.error)}</b>"
        else:
            imb = st["imbalance"]
            counts = np.bincount(labels[self.selected], minlength=len(names))
            spread = (f"largest / smallest class {counts.max()} / {counts.min()} picks" if counts.min() > 0 else
                      f"{int((counts == 0).sum())} classes without a pick")
            self.info.value = (f"<b>{len(self.selected)}</b> labels, coverage <b>{st['coverage']:.0%}</b> of "
                               f"{len(names)} classes<br>class balance: normalised entropy "
                               f"{imb['normalized_entropy']:.2f}; {spread}")
        if self.focus is not None:
            self.info.value += (f"<br>focused: sample {self.focus} ({html.escape(str(names[labels[self.focus]]))}), "
                                "its neighbours below the map")
        ax = self.map_ax
        ax.clear()
        selection_map(self.xy, labels, self.selected, class_names=names, ax=ax,
                      title=f"{self.dataset.value} ({self.embedding.value}): {self.method.value}, budget "
                            f"{self.budget.value}, seed {self.seed.value}\n{self.projection.value} map of a pool of "
                            f"{len(labels)} (stars: picks{'; click a point' if self.interactive else ''})")
        if self.focus is not None:
            ax.scatter(*self.xy[self.focus], s=260, facecolors="none", edgecolors="red", linewidths=2, zorder=4)
        if self.interactive:
            self.map_fig.canvas.draw_idle()
        else:
            self.map_view.value = _png(self.map_fig)
        h = class_histograms({self.method.value: labels[self.selected]}, num_classes=len(names),
                             class_names=names)
        h.set_size_inches(4.5, 2.6)
        h.axes[0].set_ylabel("picks")
        self.hist_view.value = _png(h)
        plt.close(h)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _png(fig) -> bytes:
    """``fig`` rendered as PNG bytes (Agg, whatever the notebook's backend)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _map_canvas(interactive: bool | None):
    """``(figure, view)``: the map's figure, made once, off pyplot, and the widget showing it: the figure's
    ipympl canvas (clickable) when ``interactive`` (``None``: when ipympl imports), else a PNG image."""
    import ipywidgets as w
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 5.5))
    if interactive is not False:
        try:
            from ipympl.backend_nbagg import new_figure_manager_given_figure
        except ImportError:
            if interactive:
                raise ImportError("interactive=True needs ipympl (pip install ipympl)") from None
        else:
            manager = new_figure_manager_given_figure(id(fig), fig)
            canvas = manager.canvas
            canvas.header_visible = False
            canvas.toolbar_visible = False
            canvas.footer_visible = False
            canvas.resizable = False
            send = canvas.send_event

            def send_event(event_type, **kwargs):  # matplotlib >= 3.11 sends "capture_scroll" to every new view;
                if event_type != "capture_scroll":  # ipympl 0.10's frontend has no handler and logs each one
                    send(event_type, **kwargs)

            canvas.send_event = send_event
            return fig, canvas
    return fig, w.Image(format="png")
