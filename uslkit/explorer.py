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
        self.hovered: int | None = None  # the sample under the cursor on the map (interactive), or None
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
        self.hover_info = w.HTML()  # words for the sample under the cursor (the map shows its image)
        self.hover_info.add_class("uslkit-hover")
        self.region: np.ndarray | None = None  # pool indices inside the box drawn on the map, or None
        self.map_fig, self.map_view = _canvas(interactive, (6.5, 5.5))
        self.interactive = self.map_view is self.map_fig.canvas
        self._init_map()
        self.grid_fig, self.grid_view = _canvas(self.interactive, (6.5, 2.6))
        self.grid_shown = np.zeros(0, dtype=np.int64)  # pool indices of the grid's tiles, in order
        if self.interactive:
            self.grid_fig.canvas.mpl_connect("button_press_event", self._on_grid_press)
        self.show_picks = w.Button(description="show the picks", layout=w.Layout(width="auto"))
        self.show_picks.on_click(lambda _: self.select_region(None))
        self.hist_view = w.Image(format="png")
        self.detail_view = w.Image(format="png")
        controls = w.VBox([self.dataset, self.embedding, self.method, self.budget, self.seed, self.projection,
                           self.sample, self.info, self.hist_view, self.show_picks])
        self.widget = w.HBox([controls, w.VBox([self.map_view, self.hover_info, self.grid_view, self.detail_view])])

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
        self.region = None
        self.detail_view.value = b""
        self.detail_view.layout.display = "none"  # no sample focused in this pool yet
        self._new_pool()
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
        return self._focus(int(np.argmin(d)))

    def hover(self, x: float | None, y: float | None, *, radius_px: float = 12.0) -> int | None:
        """What the cursor at map coordinates ``(x, y)`` does: the sample nearest to it within ``radius_px``
        screen pixels gets a tooltip with its image and class on the map; farther away (or ``None``) hides it.
        Redraws only when the sample under the cursor changes. Returns that sample's index, or ``None``."""
        i = None
        if x is not None and y is not None and len(self.xy):
            to_px = self.map_ax.transData.transform
            d = ((to_px(self.xy) - to_px(np.array([[x, y]], dtype=float))) ** 2).sum(1)
            j = int(np.argmin(d))
            i = j if d[j] <= radius_px ** 2 else None
        if i == self.hovered:
            return i
        self.hovered = i
        tip = self._tip
        if i is None:
            tip.set_visible(False)
            self.hover_info.value = ""
        else:
            images, labels, names, _ = self.pool
            img = np.asarray(images[i])
            self._tip_image.set_data(img)
            self._tip_image.set_zoom(64 / max(img.shape[:2]))  # about 64 pixels whatever the image size
            if img.ndim == 2:
                self._tip_image.image.set_cmap("gray")
                self._tip_image.image.set_clim(0, 255)
            tip.xy = tuple(self.xy[i])
            # the tooltip sits on the side of the point with more room, so it stays inside the map
            lo, hi = self.map_ax.get_xlim(), self.map_ax.get_ylim()
            tip.xybox = (-45 if self.xy[i, 0] > (lo[0] + lo[1]) / 2 else 45,
                         -45 if self.xy[i, 1] > (hi[0] + hi[1]) / 2 else 45)
            tip.set_visible(True)
            name = html.escape(str(names[labels[i]]))
            self.hover_info.value = (f"under the cursor: sample {i} ({name}"
                                     f"{', a pick' if i in set(self.selected.tolist()) else ''}); click to focus it")
        if self.interactive:
            self.map_fig.canvas.draw_idle()
        return i

    def _on_move(self, event) -> None:
        if getattr(self, "_pressed_at", None) is not None:  # dragging a box: no tooltips
            return
        inside = event.inaxes is self.map_ax and event.xdata is not None
        self.hover(event.xdata if inside else None, event.ydata if inside else None)

    def _focus(self, i: int) -> int:
        """Focus sample ``i`` through the sample box (its observer shows it; shown here when the box already
        held ``i``)."""
        self.sample.value = i
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

    def select_region(self, box) -> np.ndarray | None:
        """Show the images of the pool samples inside ``box = (x0, x1, y0, y1)`` in map coordinates (what
        dragging a box on the map does) in the image grid; ``None`` goes back to the picks. Returns the
        region's indices (sorted), or ``None``."""
        if box is None:
            self.region = None
        else:
            x0, x1, y0, y1 = box
            xy = self.xy
            inside = ((xy[:, 0] >= min(x0, x1)) & (xy[:, 0] <= max(x0, x1)) & (xy[:, 1] >= min(y0, y1))
                      & (xy[:, 1] <= max(y0, y1)))
            self.region = np.flatnonzero(inside)
        self._draw()
        return self.region

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
               "selected": self.selected.tolist(), "focus": self.focus, "error": self.error,
               "region": None if self.region is None else self.region.tolist()}
        if len(y):
            out["coverage"] = class_coverage(y, len(names))
            out["imbalance"] = imbalance(y, len(names))
        return out

    # ---- drawing ------------------------------------------------------------------------------------------
    def _init_map(self) -> None:
        """The map's artists, made once: pool points, picks (stars), the focus ring, and (interactive) the click
        handler and a box selector (drag a box to see the images inside it)."""
        ax = self.map_ax = self.map_fig.add_subplot()
        ax.set_xticks([])
        ax.set_yticks([])
        self._bg = ax.scatter(np.zeros(0), np.zeros(0), s=3, alpha=0.35, linewidths=0)
        self._picks = ax.scatter(np.zeros(0), np.zeros(0), s=160, marker="*", edgecolors="black", linewidths=0.8,
                                 zorder=3)
        self._ring = ax.scatter(np.zeros(0), np.zeros(0), s=260, facecolors="none", edgecolors="red",
                                linewidths=2, zorder=4)
        from matplotlib.offsetbox import AnnotationBbox, OffsetImage

        self._tip_image = OffsetImage(np.zeros((8, 8), dtype=np.uint8), zoom=2.0, cmap="gray")
        self._tip = AnnotationBbox(self._tip_image, (0, 0), xybox=(45, 45), xycoords="data", boxcoords="offset points",
                                   pad=0.2, arrowprops=dict(arrowstyle="->", color="0.3"), zorder=5)
        self._tip.set_visible(False)
        ax.add_artist(self._tip)
        if self.interactive:
            self.map_fig.canvas.mpl_connect("motion_notify_event", self._on_move)
            from matplotlib.widgets import RectangleSelector

            self.map_fig.canvas.mpl_connect("button_press_event", self._on_press)
            self.map_fig.canvas.mpl_connect("button_release_event", self._on_release)
            self._box = RectangleSelector(ax, self._on_box, useblit=False, button=[1], minspanx=8, minspany=8,
                                          spancoords="pixels", interactive=False)

    def _new_pool(self) -> None:
        """Map artists for the current pool: points coloured by class, limits, class legend."""
        from matplotlib.lines import Line2D

        from .plots import _class_colors

        _, labels, names, _ = self.pool
        xy = self.xy
        self.hovered = None
        self._tip.set_visible(False)
        self.hover_info.value = ""
        self._colors = np.array(_class_colors(max(len(names), 1)))
        self._bg.set_offsets(xy)
        self._bg.set_facecolors(self._colors[labels])
        pad = 0.03 * (xy.max(0) - xy.min(0) + 1e-9)
        self.map_ax.set_xlim(xy[:, 0].min() - pad[0], xy[:, 0].max() + pad[0])
        self.map_ax.set_ylim(xy[:, 1].min() - pad[1], xy[:, 1].max() + pad[1])
        handles = [Line2D([], [], marker="o", ls="", color=self._colors[i], label=str(n)) for i, n in enumerate(names)]
        self.map_ax.legend(handles=handles, fontsize=7, loc="best", markerscale=1.2, framealpha=0.7)

    def _on_press(self, event) -> None:
        self._pressed_at = (event.x, event.y) if event.inaxes is self.map_ax else None

    def _on_release(self, event) -> None:
        """A click (press and release within 5 pixels) focuses the nearest sample; a drag is the box selector's."""
        start, self._pressed_at = getattr(self, "_pressed_at", None), None
        if (start is not None and event.inaxes is self.map_ax and event.xdata is not None
                and abs(event.x - start[0]) + abs(event.y - start[1]) < 5):
            self.click(event.xdata, event.ydata)

    def _on_box(self, press, release) -> None:
        self.select_region((press.xdata, release.xdata, press.ydata, release.ydata))

    def _on_grid_press(self, event) -> None:
        tile = getattr(event.inaxes, "_uslkit_tile", None)
        if tile is not None and tile < len(self.grid_shown):
            self._focus(int(self.grid_shown[tile]))

    def _draw(self) -> None:
        """Update the panels in place: info line, map artists, image grid, histogram."""
        import matplotlib.pyplot as plt

        from .plots import class_histograms

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
        sel = self.selected
        self._picks.set_offsets(self.xy[sel] if len(sel) else np.zeros((0, 2)))
        self._picks.set_facecolors(self._colors[labels[sel]] if len(sel) else np.zeros((0, 4)))
        self._ring.set_offsets(self.xy[[self.focus]] if self.focus is not None else np.zeros((0, 2)))
        from .plots import DATASET_NAMES

        self.map_ax.set_title(f"{DATASET_NAMES.get(self.dataset.value, self.dataset.value)} ({self.embedding.value}): "
                              f"{self.method.value}, {self.budget.value} labels, seed {self.seed.value}\n"
                              f"{self.projection.value} map of a random pool of {len(labels):,} images (stars: picks"
                              + ("; hover, click a point, drag a box)" if self.interactive else ")"), fontsize=10)
        self._show(self.map_fig, self.map_view)
        self._draw_grid()
        h = class_histograms({self.method.value: labels[self.selected]}, num_classes=len(names),
                             class_names=names)
        h.set_size_inches(4.5, 2.6)
        h.axes[0].set_ylabel("picks")
        self.hist_view.value = _png(h)
        plt.close(h)

    def _draw_grid(self, cols: int = 10, rows: int = 3) -> None:
        """The image grid: the picks, or the samples in the box drawn on the map (the first rows x cols)."""
        images, labels, names, _ = self.pool
        shown = self.selected if self.region is None else self.region
        what = (f"the {len(shown)} picks" if self.region is None else
                f"{len(shown)} samples in the box drawn on the map")
        self.grid_shown = shown[:cols * rows]
        fig = self.grid_fig
        fig.clear()
        n_rows = max(1, -(-len(self.grid_shown) // cols))
        fig.set_size_inches(6.5, 0.75 * n_rows + 0.4)
        for t, i in enumerate(self.grid_shown):
            ax = fig.add_subplot(n_rows, cols, t + 1)
            img = images[i]
            ax.imshow(img, cmap="gray" if np.asarray(img).ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(str(names[labels[i]])[:10], fontsize=7, color=self._colors[labels[i]])
            ax._uslkit_tile = t
        more = f", first {len(self.grid_shown)} shown" if len(shown) > len(self.grid_shown) else ""
        fig.suptitle(f"{what}{more}" + ("; click one to find it on the map" if self.interactive else ""),
                     fontsize=9)
        self._show(fig, self.grid_view)
        self.show_picks.layout.display = "none" if self.region is None else ""

    def _show(self, fig, view) -> None:
        if self.interactive:
            fig.canvas.draw_idle()
        else:
            view.value = _png(fig)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _png(fig) -> bytes:
    """``fig`` rendered as PNG bytes (Agg, whatever the notebook's backend)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()


def _canvas(interactive: bool | None, size):
    """``(figure, view)``: a figure made once, off pyplot, and the widget showing it: the figure's ipympl canvas
    (clickable) when ``interactive`` (``None``: when ipympl imports), else a PNG image."""
    import ipywidgets as w
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
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
