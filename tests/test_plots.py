"""uslkit.plots: arrays in, a Figure out, deterministic maps, correct summaries."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from uslkit import plots  # noqa: E402


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def _blobs(n=120, d=8, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    return (rng.normal(size=(n, d)) + 4 * np.eye(d)[y]).astype(np.float32), y


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_2d_is_deterministic_per_seed(method):
    x, _ = _blobs()
    a = plots.embedding_2d(x, method=method, seed=3)
    b = plots.embedding_2d(x, method=method, seed=3)
    assert a.shape == (120, 2) and a.dtype == np.float32 and np.array_equal(a, b)


@pytest.mark.slow
def test_embedding_2d_umap_is_deterministic_per_seed_and_keeps_the_thread_count():
    import torch

    x, _ = _blobs(80)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = plots.embedding_2d(x, method="umap", seed=1)
        assert torch.get_num_threads() == 1  # umap-learn's fit used to reset it for the whole process
        assert np.array_equal(a, plots.embedding_2d(x, method="umap", seed=1))
    finally:
        torch.set_num_threads(threads)


def test_embedding_2d_rejects_unknown_method_and_nan():
    x, _ = _blobs()
    with pytest.raises(ValueError, match="unknown 2-D method"):
        plots.embedding_2d(x, method="mds")
    x[0, 0] = np.nan
    with pytest.raises(ValueError):
        plots.embedding_2d(x, method="pca")


def test_summarize_mean_and_std_over_seeds():
    rows = [dict(method="a", budget=10, seed=s, acc=v) for s, v in enumerate([0.5, 0.7])]
    rows += [dict(method="a", budget=20, seed=0, acc=0.9), dict(method="b", budget=10, seed=0, acc=None)]
    s = plots.summarize(rows, x="budget", y="acc")
    assert s["a"]["x"] == [10, 20] and s["a"]["n"] == [2, 1]
    assert s["a"]["mean"] == pytest.approx([0.6, 0.9]) and s["a"]["std"] == pytest.approx([np.std([.5, .7], ddof=1), 0])
    assert "b" not in s  # rows without the metric are skipped


def test_figure_functions_return_figures():
    x, y = _blobs()
    xy = plots.embedding_2d(x, method="pca")
    imgs = np.random.default_rng(0).integers(0, 255, size=(120, 8, 8), dtype=np.uint8)
    rows = [dict(method=m, budget=b, seed=s, coverage=0.5 + 0.1 * s, nn1_acc=0.4) for m in ("usl", "random")
            for b in (10, 20) for s in (0, 1)]
    history = [dict(step=i, loss=1.0 / (i + 1), mask=0.1 * i, pseudo_acc=0.5, **({"top1": 0.5} if i % 2 else {}))
               for i in range(5)]
    figs = [
        plots.selection_map(xy, y, [0, 1, 2], class_names=["a", "b", "c"]),
        plots.image_grid(imgs[:7], titles=list("abcdefg"), ncols=4),
        plots.neighbor_grid(imgs, [0, 1], [[3, 4, 5], [6, 7, 8]], labels=y, class_names=["a", "b", "c"]),
        plots.class_histograms({"usl": y[:10], "random": y[10:20]}, num_classes=3),
        plots.coverage_vs_budget(rows),
        plots.accuracy_vs_budget(rows),
        plots.metric_curves(rows, x="budget", y="nn1_acc", logx=True),
        plots.learning_curves(history),
        plots.per_class_bars({"model": [0.1, 0.5, 0.9], "EMA": [0.2, 0.4, 1.0]}, class_names=["a", "b", "c"]),
        plots.series([1, 2, 3], {"changed": [3, 1, 0]}),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    # the learning curves plot exactly the keys present
    assert [ax.get_title() for ax in figs[7].axes] == [plots.metric_label(k) for k in ("loss", "mask", "pseudo_acc",
                                                                                       "top1")]


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="no plottable keys"):
        plots.learning_curves([{"step": 1}])
    with pytest.raises(ValueError, match="shape"):
        plots.per_class_bars({"a": [0.1, 0.2], "b": [0.1]})
    with pytest.raises(ValueError, match="rows"):
        plots.selection_map(np.zeros((3, 2)), np.zeros(4, dtype=int), [0])


def _usl_t_history(evals=5, heads=2, k=4):
    out = [dict(step=1, loss=1.0)]  # a log entry without evaluation is skipped
    for e in range(evals):
        sizes = [[10 - e, 5, e, 0][:k], [3, 3, 3, 1][:k]][:heads]
        out.append(dict(step=10 * (e + 1), loss=0.5, cluster_sizes=sizes, confidence=[0.1 * e, 0.2][:heads],
                        nonempty=[sum(s > 0 for s in row) for row in sizes]))
    return out


def test_cluster_history_plots_sorted_sizes_per_head_and_the_curves_per_step():
    fig = plots.cluster_history(_usl_t_history(evals=5), max_curves=3)
    assert [ax.get_title() for ax in fig.axes] == ["head 0: sorted cluster sizes", "head 1: sorted cluster sizes",
                                                   "mean confidence", "non-empty clusters"]
    lines = fig.axes[0].get_lines()
    # 3 of the 5 evaluations, the first and last included, each head's sizes sorted in decreasing order
    assert [ln.get_label() for ln in lines] == ["step 10", "step 30", "step 50"]
    assert lines[0].get_ydata().tolist() == [10, 5, 0, 0] and lines[2].get_ydata().tolist() == [6, 5, 4, 0]
    assert fig.axes[1].get_lines()[0].get_ydata().tolist() == [3, 3, 3, 1]
    conf = fig.axes[2].get_lines()[0]
    assert conf.get_xdata().tolist() == [10, 20, 30, 40, 50]
    assert conf.get_ydata() == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert fig.axes[3].get_lines()[0].get_ydata().tolist() == [2, 3, 3, 3, 3]
    assert len(plots.cluster_history(_usl_t_history(evals=2)).axes[0].get_lines()) == 2  # fewer evals than curves


def test_cluster_history_bad_input_names_the_problem():
    with pytest.raises(ValueError, match="no evaluation with cluster_sizes"):
        plots.cluster_history([{"step": 1, "loss": 0.3}])
    bad = _usl_t_history()
    bad[-1]["confidence"] = [0.5]
    with pytest.raises(ValueError, match=r"step 50 has 1 heads in 'confidence', expected 2"):
        plots.cluster_history(bad)
    with pytest.raises(ValueError, match="max_curves must be a positive int, got 0"):
        plots.cluster_history(_usl_t_history(), max_curves=0)


def _texts(fig):
    out = [fig._suptitle.get_text()] if fig._suptitle is not None else []
    for ax in fig.axes:
        if ax.get_visible():
            out += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return [t for t in out if t]


def test_titles_and_axis_labels_are_words_not_keys():
    """Every title and axis label of the summary figures is words: no raw metric key like ``nn1_acc``."""
    import re

    import matplotlib.pyplot as plt

    from uslkit import plots

    key = re.compile(r"\b[a-z0-9]+_[a-z0-9_]+\b")
    rows = [{"method": m, "budget": b, "seed": s, "nn1_acc": 0.5 + 0.01 * b, "coverage": 0.9,
             "propagation_acc": 0.4} for m in ("usl", "random") for b in (10, 20) for s in (0, 1)]
    table = [{"method": m, "runs": 3, **{f"{k}_{st}": 0.5 for k in ("nn1_acc", "logreg_acc", "coverage")
                                           for st in ("mean", "std")}} for m in ("usl", "random")]
    history = [{"step": s, "loss": 1.0 / s, "loss_x": 0.5, "loss_u": 0.2, "mask": 0.7, "mask_correct": 0.6,
                "pseudo_acc": 0.8, "ema_top1": 0.7} for s in (10, 20)]
    figs = {"accuracy_bars": plots.accuracy_bars(table, metrics=("nn1_acc", "logreg_acc", "coverage"),
                                                 context="fashion_mnist, budget 40"),
            "accuracy_vs_budget": plots.accuracy_vs_budget(rows, key="propagation_acc"),
            "coverage_vs_budget": plots.coverage_vs_budget(rows),
            "metric_curves": plots.metric_curves(rows, x="budget", y="nn1_acc"),
            "learning_curves": plots.learning_curves(history),
            "class_histograms": plots.class_histograms({"usl": [0, 1, 1]}, num_classes=2, class_names=["a", "b"]),
            "per_class_bars": plots.per_class_bars({"model": [0.5, 0.7]}, class_names=["a", "b"]),
            "cluster_history": plots.cluster_history(_usl_t_history()),
            "selection_maps": plots.selection_maps(np.random.default_rng(0).normal(size=(9, 2)), np.arange(9) % 3,
                                                   {"usl": [0, 1, 2], "random": [3, 4]}, class_names=list("abc"),
                                                   title=plots.context("fashion_mnist", encoder="pixels", pca=64),
                                                   pool_size=100)}
    for name, fig in figs.items():
        texts = _texts(fig)
        assert texts, name
        for t in texts:
            assert not key.search(t.replace("fashion_mnist", "")), (name, t)
        plt.close(fig)
    bars = _texts(figs["accuracy_bars"])
    assert any("std over 3 seeds" in t for t in bars) and any("budget 40" in t for t in bars)
    assert figs["learning_curves"].axes[0].get_title() == "training loss"
    # fractions in the history are drawn in percent, as their titles say
    ema = [ax for ax in figs["learning_curves"].axes if ax.get_title().startswith("test top-1 accuracy of the EMA")]
    assert ema[0].get_title().endswith("(%)") and ema[0].get_lines()[0].get_ydata().tolist() == [70.0, 70.0]
    table = plots.summary_table(rows, metrics=("nn1_acc", "coverage", "propagation_acc"))
    assert not any(key.search(str(c)) for c in [*table.columns, *table.index.names])
    assert len([a for a in figs["learning_curves"].axes if a.get_visible()]) == 7  # a 2 x 4 grid, not a strip


def test_context_names_dataset_embedding_method_and_budget_in_words():
    assert plots.context("fashion_mnist", encoder="pixels", pca=64, n=3000, method="usl", budget=40, seed=0) == \
        "Fashion-MNIST, pixels + PCA-64, 3,000 images: usl, 40 labels, seed 0"
    assert plots.context("cifar10", encoder="ckpt:runs/simclr_seed0/model.pt") == "CIFAR-10, encoder simclr_seed0"
    assert plots.context(method="kmeans", budget=20) == "kmeans, 20 labels"
    assert plots.context("my_folder") == "my_folder"  # unknown names pass through


def test_maps_say_when_the_background_is_a_subsample_and_share_one_legend():
    import matplotlib.pyplot as plt

    x, y = _blobs()
    xy = plots.embedding_2d(x, method="pca")
    one = plots.selection_map(xy, y, [0, 1], class_names=["a", "b", "c"], title="usl", pool_size=10 * len(y))
    assert f"random {len(y):,} of {10 * len(y):,} images" in one.axes[0].get_title()
    assert "subsample" not in plots.selection_map(xy, y, [0]).axes[0].get_title()  # the whole pool: no note
    picks = {m: [i, i + 1] for i, m in enumerate(["usl", "kmeans", "random", "probcover", "stratified"])}
    fig = plots.selection_maps(xy, y, picks, class_names=["a", "b", "c"], title="digits", pool_size=len(y))
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6  # 5 maps and the legend panel; the 2 x 4 grid's other 2 panels are not drawn
    legends = [ax.get_legend() for ax in visible if ax.get_legend() is not None]
    assert len(legends) == 1 and [t.get_text() for t in legends[0].get_texts()] == ["a", "b", "c"]
    assert [ax.get_title().split("\n")[0] for ax in visible[:5]] == list(picks)
    for f in (one, fig):
        plt.close(f)


def test_summary_table_is_mean_and_std_in_words():
    rows = [dict(method=m, budget=10, seed=s, nn1_acc=a, select_s=t) for m, vals in
            (("usl", [(0.70, 1.0), (0.72, 3.0)]), ("random", [(0.5, 0.0)])) for s, (a, t) in enumerate(vals)]
    t = plots.summary_table(rows, metrics=("nn1_acc", "select_s"))
    assert list(t.index.names) == ["method", "labels (budget)"]
    assert list(t.columns) == ["n", "1-NN test accuracy (%)", "selection time (s)"]
    assert t.loc[("usl", 10)].tolist() == [2, "71.0 \u00b1 1.4", "2.00 \u00b1 1.41"]
    assert t.loc[("random", 10)].tolist() == [1, "50.0", "0.00"]  # one seed: no std
    assert plots.summary_table(rows, metrics=("nn1_acc",), digits={"nn1_acc": 2}).iloc[1, 1] == "50.00"


def _overlap(a, b):
    return a.x1 > b.x0 and b.x1 > a.x0 and a.y1 > b.y0 and b.y1 > a.y0


@pytest.mark.parametrize("kind", ["image_grid", "neighbor_grid"])
def test_image_grid_titles_do_not_overlap(kind):
    """Titles (class names up to two lines) overlap neither each other nor another tile nor the figure title."""
    import matplotlib.pyplot as plt

    names = ["T-shirt/top", "Ankle boot", "Pullover", "a very long class name"]
    imgs = np.zeros((16, 28, 28), dtype=np.uint8)
    sup = "Fashion-MNIST, pixels + PCA-64, 3,000 images: USL, 40 labels\nhighest utility U'"
    if kind == "image_grid":
        fig = plots.image_grid(imgs, titles=names * 4, ncols=8, suptitle=sup)
    else:
        fig = plots.neighbor_grid(np.zeros((18, 28, 28), np.uint8), [0, 1, 2], np.arange(3, 18).reshape(3, 5),
                                  labels=np.arange(18) % 4,
                                  class_names=names, suptitle=sup)
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    titles = [ax.title.get_window_extent(r) for ax in fig.axes if ax.get_title()]
    tiles = [ax.get_window_extent(r) for ax in fig.axes]
    assert len(titles) == 16 if kind == "image_grid" else 18
    for i, t in enumerate(titles):
        assert not any(_overlap(t, o) for j, o in enumerate(titles) if j != i), t
        assert not any(_overlap(t, tile) for tile in tiles), t
        assert not _overlap(t, fig._suptitle.get_window_extent(r))
    assert "\n" in fig._suptitle.get_text()  # the caller's line break is kept
    assert min(ax.title.get_fontsize() for ax in fig.axes) >= 8
    plt.close(fig)
