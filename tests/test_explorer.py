"""uslkit.explorer driven headless: change the widgets from Python and check what the app shows."""

from __future__ import annotations

import html

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("ipywidgets")

from uslkit.explorer import SelectionExplorer  # noqa: E402


def _loader(calls):
    def load(dataset, embedding, max_points):
        calls.append((dataset, embedding, max_points))
        rng = np.random.default_rng(0 if dataset == "a" else 1)
        n, c = max_points, 4
        labels = np.arange(n) % c
        emb = rng.normal(size=(n, 6)) + 5 * np.eye(6)[labels]
        if embedding == "flip":
            emb = -emb
        emb = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(np.float32)
        images = rng.integers(0, 255, size=(n, 8, 8), dtype=np.uint8)
        return images, labels, [f"class{i}" for i in range(c)], emb
    return load


@pytest.fixture
def app():
    calls = []
    ex = SelectionExplorer(datasets=["a", "b"], embeddings=["plain", "flip"], methods=["kmeans", "random",
                           "stratified"], max_points=200, budget=8, max_budget=50, projection="pca",
                           loader=_loader(calls))
    ex._calls = calls
    return ex


def test_widgets_drive_the_selection(app):
    st = app.state()
    assert st["budget"] == 8 and len(st["selected"]) == 8 and st["error"] is None and 0 < st["coverage"] <= 1
    app.budget.value = 20
    assert len(app.state()["selected"]) == 20 and len(set(app.state()["selected"])) == 20
    app.method.value = "stratified"  # the oracle: exactly balanced over the 4 classes
    assert app.state()["imbalance"]["max_min_ratio"] == 1.0 and app.state()["coverage"] == 1.0
    first = app.state()["selected"]
    app.method.value = "random"
    app.seed.value = 1
    assert app.state()["selected"] != first and app.state()["seed"] == 1


def test_same_settings_give_the_same_view(app):
    app.method.value = "kmeans"
    a = app.state()["selected"]
    app.seed.value = 5
    app.seed.value = 0
    assert app.state()["selected"] == a


def test_dataset_and_embedding_reload_and_are_cached(app):
    app.dataset.value = "b"
    app.embedding.value = "flip"
    app.dataset.value = "a"
    app.embedding.value = "plain"
    assert app._calls == [("a", "plain", 200), ("b", "plain", 200), ("b", "flip", 200), ("a", "flip", 200)]
    assert app.xy.shape == (200, 2)


def test_click_focuses_the_nearest_sample_and_shows_neighbours(app):
    i = app.click(*(app.xy[37] + 1e-6))
    assert i == 37 and app.focus == 37 and app.sample.value == 37
    nb = app.neighbors(37)
    assert len(nb) == app.n_neighbors and 37 not in nb
    sims = app.pool[3] @ app.pool[3][37]
    assert np.all(np.diff(sims[nb]) <= 1e-7)  # nearest first
    app.sample.value = 5  # the text box does the same
    assert app.focus == 5


def test_errors_are_shown_not_raised(app):
    app.budget.value = 50
    app.method.value = "stratified"
    assert app.state()["error"] is None
    app.budget.max = 500
    app.budget.value = 300  # more than the pool of 200
    st = app.state()
    assert st["selected"] == [] and "budget" in st["error"], st["error"]
    assert html.escape(st["error"]) in app.info.value


def test_budget_maximum_follows_the_pool_both_ways():
    sizes = {"big": 200, "tiny": 30}

    def load(dataset, embedding, max_points):
        return _loader([])(dataset, embedding, sizes[dataset])

    ex = SelectionExplorer(datasets=["big", "tiny"], methods=["random"], max_points=200, budget=8, max_budget=50,
                           projection="pca", loader=load)
    assert ex.budget.max == 50
    ex.dataset.value = "tiny"
    assert ex.budget.max == 30
    ex.dataset.value = "big"
    assert ex.budget.max == 50


def test_switching_pool_clears_the_focus_and_the_info_line_reads_as_words(app):
    app.click(*app.xy[3])
    assert app.focus == 3 and app.detail_view.layout.display == "" and len(app.detail_view.value) > 100
    assert "focused: sample 3 (class" in app.info.value
    app.dataset.value = "b"  # another pool: sample 3 there is another image
    assert app.focus is None and app.detail_view.layout.display == "none" and "focused" not in app.info.value
    assert "max/min" not in app.info.value and "inf" not in app.info.value
    assert "largest / smallest class" in app.info.value or "without a pick" in app.info.value


def test_panels_are_made_once_and_updated_in_place(app):
    views = (app.map_view, app.hist_view, app.detail_view, app.map_fig)
    first = bytes(app.hist_view.value)
    app.budget.value = 20
    app.method.value = "random"
    assert (app.map_view, app.hist_view, app.detail_view, app.map_fig) == views
    assert app.hist_view.value != first
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # nothing left for a later cell to print


def test_box_on_the_map_shows_its_samples_and_the_picks_come_back(app):
    xy = app.xy
    box = (np.quantile(xy[:, 0], 0.2), np.quantile(xy[:, 0], 0.6), np.quantile(xy[:, 1], 0.1),
           np.quantile(xy[:, 1], 0.9))
    region = app.select_region(box)
    want = np.flatnonzero((xy[:, 0] >= box[0]) & (xy[:, 0] <= box[1]) & (xy[:, 1] >= box[2]) & (xy[:, 1] <= box[3]))
    assert np.array_equal(region, want) and app.state()["region"] == want.tolist()
    assert np.array_equal(app.grid_shown, want[:30]) and app.show_picks.layout.display == ""
    app.show_picks.click()
    assert app.region is None and np.array_equal(app.grid_shown, app.selected[:30])
    assert app.show_picks.layout.display == "none"


def test_hover_shows_the_image_under_the_cursor_and_hides_away_from_points(app):
    images = app.pool[0]
    i = int(app.selected[0])
    assert app.hover(*app.xy[i]) == i
    assert app._tip.get_visible() and tuple(app._tip.xy) == tuple(app.xy[i])
    assert np.array_equal(np.asarray(app._tip_image.get_data()), images[i])
    assert f"under the cursor: sample {i} (class{app.pool[1][i]}, a pick)" in app.hover_info.value
    far = app.xy.max(0) + 10 * (app.xy.max(0) - app.xy.min(0))  # far from every point: no tooltip
    assert app.hover(*far) is None and not app._tip.get_visible() and app.hover_info.value == ""
    assert app.hover(*app.xy[i]) == i
    app.dataset.value = "b"  # another pool: the old tooltip does not stay
    assert app.hovered is None and not app._tip.get_visible() and app.hover_info.value == ""
    assert app.hover(None, None) is None
