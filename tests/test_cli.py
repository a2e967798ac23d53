"""Command line: `uslkit select` end to end, its error messages and exit codes, and the demo job."""

import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from uslkit.cli import main
from uslkit.data import load_dataset
from uslkit.labels import load_selection


@pytest.fixture(scope="module")
def emb_file(tmp_path_factory):
    out = tmp_path_factory.mktemp("emb") / "digits.npy"
    assert main(["embed", "--dataset", "digits", "--pca", "16", "--out", str(out), "-q"]) == 0
    return out


def test_select_writes_a_valid_labels_file(emb_file, tmp_path, capsys):
    out = tmp_path / "sel.json"
    rc = main(["select", "--emb", str(emb_file), "--budget", "20", "--method", "usl", "--seed", "0",
               "--out", str(out), "--annotate", "--param", "k=20"])
    assert rc == 0, capsys.readouterr().err
    assert "class coverage" in capsys.readouterr().out
    ds = load_dataset("digits")
    sel = load_selection(out, dataset=ds)  # validates n, ids and labels against the dataset
    assert sel.budget == 20 and len(set(sel.indices)) == 20
    assert sel.method == "usl" and sel.params == {"k": 20} and sel.seed == 0
    assert sel.labels == ds.labels[sel.indices].tolist()
    assert sel.embedding["encoder"] == "pixels" and sel.embedding["params"]["pca"] == 16

    # same seed, same selection (bit for bit), through a second process
    out2 = tmp_path / "sel2.json"
    subprocess.run([sys.executable, "-m", "uslkit", "select", "--emb", str(emb_file), "--budget", "20",
                    "--method", "usl", "--seed", "0", "--out", str(out2), "--param", "k=20"], check=True,
                   capture_output=True)
    assert json.loads(out2.read_text())["indices"] == sel.indices


def test_select_compressed_density_from_the_command_line(emb_file, tmp_path, capsys):
    """``--param knn_mode=ivfpq``: USL's density from the compressed index, on the memory-mapped file."""
    out = tmp_path / "pq.json"
    rc = main(["select", "--emb", str(emb_file), "--budget", "10", "--out", str(out), "--param", "knn_mode=ivfpq",
               "--param", "k=20"])
    assert rc == 0, capsys.readouterr().err
    sel = load_selection(out)
    assert sel.params == {"knn_mode": "ivfpq", "k": 20} and len(set(sel.indices)) == 10


def test_select_incremental_with_labeled(emb_file, tmp_path):
    first = tmp_path / "r1.json"
    assert main(["select", "--emb", str(emb_file), "--budget", "10", "--method", "kmeans", "--out", str(first)]) == 0
    second = tmp_path / "r2.json"
    assert main(["select", "--emb", str(emb_file), "--budget", "10", "--method", "kmeans_multi",
                 "--labeled", str(first), "--out", str(second)]) == 0
    r1, r2 = load_selection(first), load_selection(second)
    assert not set(r1.indices) & set(r2.indices)
    assert sorted(r2.labeled_before) == sorted(r1.indices)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--budget", "0"], "budget must be >= 1"),
        (["--budget", "5000"], "larger than the unlabelled pool"),
        (["--budget", "5", "--method", "nope"], "unknown selection method 'nope'"),
        (["--budget", "5", "--param", "bogus=1"], "bogus"),
        (["--budget", "5", "--param", "k=1797"], "k"),
        (["--budget", "5", "--param", "knn_mode=ivfpq", "--param", "knn_pq_m=3"], "knn_pq_m=3 must divide d=16"),
        (["--budget", "5", "--param", "knn_pq_m=4"], "applies to knn_mode='ivfpq' only"),
    ],
)
def test_select_bad_input_exits_2_with_message(emb_file, tmp_path, capsys, extra, message):
    rc = main(["select", "--emb", str(emb_file), "--out", str(tmp_path / "s.json"), *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_select_rejects_nan_and_non_2d_embeddings(tmp_path, capsys):
    bad = tmp_path / "nan.npy"
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    x[7, 1] = np.nan
    np.save(bad, x)
    assert main(["select", "--emb", str(bad), "--budget", "5", "--out", str(tmp_path / "a.json")]) == 2
    assert "NaN" in capsys.readouterr().err
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros(10, np.float32))
    assert main(["select", "--emb", str(flat), "--budget", "5", "--out", str(tmp_path / "b.json")]) == 2
    assert "2-D" in capsys.readouterr().err


def test_select_mismatched_dataset_and_existing_output(emb_file, tmp_path, capsys):
    assert main(["select", "--emb", str(emb_file), "--budget", "5", "--dataset", "fashion_mnist",
                 "--out", str(tmp_path / "x.json")]) == 2
    assert "mismatched ids" in capsys.readouterr().err
    out = tmp_path / "keep.json"
    out.write_text("{}")
    assert main(["select", "--emb", str(emb_file), "--budget", "5", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_text() == "{}"


def test_select_labeled_file_from_another_dataset_is_refused(emb_file, tmp_path, capsys):
    lab = tmp_path / "other.json"
    from uslkit.labels import make_selection, save_selection

    save_selection(make_selection([0, 1], ids=[0, 1], n=60000, dataset_name="fashion_mnist", split="train",
                                  method="random", seed=0), lab)
    assert main(["select", "--emb", str(emb_file), "--budget", "5", "--labeled", str(lab),
                 "--out", str(tmp_path / "y.json")]) == 2
    err = capsys.readouterr().err
    assert "fashion_mnist" in err or "60000" in err, err  # the message names the mismatch
    assert not (tmp_path / "y.json").exists()


def test_demo_runs_end_to_end_on_digits(tmp_path):
    from uslkit.demo import run_demo

    res = run_demo(out_dir=tmp_path / "demo", dataset="digits", budget=10, seeds=[0, 1], pca=16,
                   methods=["usl", "kmeans", "random"], progress=False)
    for f in ("results.md", "results.csv", "results.json", "figures/map_usl.png", "figures/accuracy.png",
              "selections/usl_b10_s0.json"):
        assert (tmp_path / "demo" / f).exists(), f
    table = {t["method"]: t for t in res["summary"]}
    assert set(table) == {"usl", "kmeans", "random"} and all(t["runs"] == 2 for t in table.values())
    assert table["usl"]["coverage_mean"] >= 0.8
    with pytest.raises(FileExistsError):
        run_demo(out_dir=tmp_path / "demo", dataset="digits", budget=10, seeds=[0], methods=["random"])


def test_train_commands_end_to_end(emb_file, tmp_path, capsys):
    """`uslkit train simclr`, then `fixmatch` and `finetune` from its encoder, on digits; rerunning a finished run
    loads it; an unknown parameter and a missing labels file are clear errors."""
    sel = tmp_path / "sel.json"
    assert main(["select", "--emb", str(emb_file), "--budget", "20", "--method", "kmeans", "--out", str(sel),
                 "--annotate"]) == 0
    ssl = tmp_path / "ssl"
    assert main(["train", "simclr", "--dataset", "digits", "--steps", "3", "--batch-size", "32", "--out", str(ssl),
                 "-q", "--test-split", ""]) == 0
    assert (ssl / "model.pt").exists()
    fm = tmp_path / "fm"
    args = ["train", "fixmatch", "--dataset", "digits", "--labels", str(sel), "--init", str(ssl / "model.pt"),
            "--steps", "3", "--batch-size", "8", "--param", "mu=2", "--out", str(fm), "-q"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "trained 3 steps" in first and "ema_top1" in first
    assert main(args) == 0
    assert "loaded (already finished)" in capsys.readouterr().out
    assert main(["train", "finetune", "--dataset", "digits", "--labels", str(sel), "--init", str(ssl / "model.pt"),
                 "--epochs", "1", "--param", "samples_per_epoch=40", "--out", str(tmp_path / "ft"), "-q"]) == 0
    assert main(["train", "fixmatch", "--dataset", "digits", "--labels", str(sel), "--steps", "2",
                 "--param", "bogus=1", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "unknown fixmatch parameter(s) ['bogus']" in capsys.readouterr().err
    assert main(["train", "fixmatch", "--dataset", "digits", "--steps", "2", "--out", str(tmp_path / "y")]) == 2
    assert "needs --labels" in capsys.readouterr().err


def test_train_options_given_on_the_command_line_beat_the_preset(tmp_path, capsys):
    """`--preset paper --batch-size 256` trains at 256 (the CLI once passed `args.batch_size or 256`, and the preset
    resolution then replaced 256, the default, by the preset's 4096); an option the learner has no field for is an
    error, not silently ignored."""
    out = tmp_path / "paper"
    assert main(["train", "simclr", "--dataset", "digits", "--preset", "paper", "--arch", "cnn_small",
                 "--batch-size", "256", "--steps", "1", "--out", str(out), "-q", "--test-split", ""]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"]["name"] == "cnn_small"
    assert cfg["steps"] == 1 and cfg["params"]["batch_size"] == 256
    assert cfg["params"]["optimizer"] == "lars" and cfg["params"]["temperature"] == 0.1  # the rest from the preset
    capsys.readouterr()
    assert main(["train", "fixmatch", "--dataset", "digits", "--labels", "x.json", "--epochs", "2",
                 "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "--epochs is not an option of fixmatch" in capsys.readouterr().err
    assert main(["train", "simclr", "--dataset", "digits", "--preset", "fast", "--steps", "1",
                 "--out", str(tmp_path / "y"), "-q"]) == 2
    assert "unknown simclr --preset 'fast'" in capsys.readouterr().err
    assert main(["train", "remixmatch", "--dataset", "digits", "--out", str(tmp_path / "z"), "-q"]) == 2
    assert "unknown learner 'remixmatch'" in capsys.readouterr().err
    assert main(["train", "mixmatch", "--dataset", "digits", "--steps", "1", "--out", str(tmp_path / "z"), "-q"]) == 2
    assert "mixmatch needs --labels" in capsys.readouterr().err
    assert main(["train", "simclr", "--dataset", "digits", "--out", str(tmp_path / "v"), "-q"]) == 2
    assert "simclr needs --steps or --epochs (or a --preset that sets it)" in capsys.readouterr().err
    assert main(["train", "fixmatch", "--dataset", "digits", "--labels", "x.json", "--out", str(tmp_path / "v"),
                 "-q"]) == 2
    assert "fixmatch needs --steps (or a --preset that sets it)" in capsys.readouterr().err
    assert main(["train", "simclr", "--dataset", "digits", "--steps", "1", "--init", "m.pt", "--out",
                 str(tmp_path / "v"), "-q"]) == 2
    assert "--init is not an option of simclr" in capsys.readouterr().err
    # a --param that has its own option would be overridden by that option's default: refused
    assert main(["train", "simclr", "--dataset", "digits", "--steps", "1", "--param", "seed=3",
                 "--out", str(tmp_path / "w"), "-q"]) == 2
    assert "--param seed=... has its own option: use --seed" in capsys.readouterr().err


def test_train_help_lists_every_registered_learner_and_preset():
    from uslkit.cli import build_parser
    from uslkit.train import LEARNERS

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    text = sub.choices["train"].format_help()
    for name, learner in LEARNERS.items():
        assert name in text
        for preset in learner.config.PRESETS:
            assert preset in text.split(f"{name}:", 1)[1].split(";")[0], (name, preset)
