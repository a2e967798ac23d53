"""What a newcomer tripped over (issue 18): each rough edge of the command line, README and notebooks, with a test."""

import json
import os
import re
import stat
from pathlib import Path

import numpy as np
import pytest

from uslkit.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def emb(tmp_path):
    out = tmp_path / "e.npy"
    assert main(["embed", "--dataset", "digits", "--out", str(out), "-q"]) == 0
    return out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("uslkit: error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_out_naming_a_folder_or_an_input_is_one_clear_line(emb, tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    assert main(["select", "--emb", str(emb), "--budget", "5", "--out", str(tmp_path / "folder"), "--overwrite"]) == 2
    assert "is a folder" in one_line_error(capsys)
    before = np.load(emb)
    for out, what in ((emb, "is --emb"), (emb.with_suffix(".json"), "--emb's sidecar")):
        assert main(["select", "--emb", str(emb), "--budget", "5", "--out", str(out), "--overwrite"]) == 2
        assert what in one_line_error(capsys)
    np.testing.assert_array_equal(np.load(emb), before)  # the input is intact
    assert main(["embed", "--dataset", "digits", "--out", str(tmp_path / "folder"), "-q"]) == 2
    assert "is a folder" in one_line_error(capsys)


def test_outputs_respect_the_umask(emb, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "sel.json"
        assert main(["select", "--emb", str(emb), "--budget", "5", "--out", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644  # not the temporary file's 0600
    finally:
        os.umask(old)


def test_cli_errors_speak_cli_not_python(emb, tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert main(["select", "--emb", str(emb), "--budget", "5", "--out", str(out)]) == 0
    assert main(["select", "--emb", str(emb), "--budget", "6", "--out", str(out)]) == 2
    err = one_line_error(capsys)
    assert "--overwrite" in err and "overwrite=True" not in err
    np.save(tmp_path / "other.npy", np.zeros((3, 3), np.float32))  # an embedding --out holding something else
    assert main(["embed", "--dataset", "digits", "--out", str(tmp_path / "other.npy"), "-q"]) == 2
    err = one_line_error(capsys)
    assert "--overwrite" in err and "overwrite=True" not in err


def test_init_given_embeddings_is_a_short_clear_error(emb, tmp_path, capsys):
    sel = tmp_path / "sel.json"
    assert main(["select", "--emb", str(emb), "--budget", "20", "--method", "kmeans", "--out", str(sel),
                 "--annotate"]) == 0
    capsys.readouterr()
    assert main(["train", "fixmatch", "--dataset", "digits", "--labels", str(sel), "--init", str(emb), "--steps",
                 "2", "--out", str(tmp_path / "r")]) == 2
    err = one_line_error(capsys)
    assert "NumPy array" in err and "model.pt" in err and len(err) < 260 and "weights_only" not in err


def test_finetune_steps_option_sets_the_number_of_steps(emb, tmp_path, capsys):
    sel = tmp_path / "sel.json"
    assert main(["select", "--emb", str(emb), "--budget", "20", "--method", "kmeans", "--out", str(sel),
                 "--annotate"]) == 0
    ssl = tmp_path / "ssl"
    assert main(["train", "simclr", "--dataset", "digits", "--steps", "2", "--batch-size", "16", "--out", str(ssl),
                 "-q", "--test-split", ""]) == 0
    capsys.readouterr()
    assert main(["train", "finetune", "--dataset", "digits", "--labels", str(sel), "--init", str(ssl / "model.pt"),
                 "--steps", "5", "--out", str(tmp_path / "ft"), "-q"]) == 0
    assert "trained 5 steps" in capsys.readouterr().out
    assert json.loads((tmp_path / "ft" / "config.json").read_text())["steps"] == 5


def test_datasets_check_names_the_folders_it_looked_in(tmp_path, capsys):
    assert main(["datasets", "mnist", "--check", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path}/mnist  (no such folder)" in out and "--download" in out and "download=True" not in out


def test_help_says_what_there_is(capsys):
    from uslkit.demo import DEFAULT_METHODS
    from uslkit.select import METHODS
    from uslkit.train.config import SimCLRConfig

    for argv, wants in ((["embed", "--help"], ["ckpt:<path>"]), (["select", "--help"], list(METHODS)),
                        (["demo", "--help"], [" ".join(DEFAULT_METHODS)])):
        with pytest.raises(SystemExit):
            main(argv)
        text = re.sub(r"\s+", " ", capsys.readouterr().out)
        assert all(w in text for w in wants), (argv, wants)
    with pytest.raises(SystemExit):
        main(["train", "simclr", "--help"])
    text = capsys.readouterr().out
    header = next(ln for ln in text.splitlines() if ln.split()[:2] == ["option", "default"])
    assert "--preset paper" in header and "--preset cpu" in header
    for field in SimCLRConfig.field_names():
        assert re.search(rf"^\s+(--param {field}=|--{field.replace('_', '-')}\s)", text, re.M), field
    temp = next(ln for ln in text.splitlines() if "temperature=" in ln).split()
    assert temp[-3:] == ["0.5", "0.1", "0.1"]  # default, paper, cpu


def test_readme_python_snippet_runs_twice(tmp_path, monkeypatch, capsys):
    """The README's first Python block, on digits instead of Fashion-MNIST, run twice in one folder."""
    text = (REPO / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace('"fashion_mnist"', '"digits"')
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        exec(compile(code, "README.md", "exec"), {})
        assert "40 picks" in capsys.readouterr().out


def test_notebooks_cite_papers_not_files_outside_the_repository():
    for nb in sorted((REPO / "notebooks").glob("*.ipynb")):
        text = nb.read_text()
        for bad in ("../shared", "REFERENCE_NOTES", "notes sec.", "the brief"):
            assert bad not in text, (nb.name, bad)


def _readme_commands():
    """Every ``uslkit ...`` command line of the README's bash blocks (continuations joined, comments cut)."""
    import shlex

    text = (REPO / "README.md").read_text()
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            words = shlex.split(line)
            if "-m" in words and words[words.index("-m") + 1:words.index("-m") + 2] == ["uslkit"]:
                words = ["uslkit", *words[words.index("-m") + 2:]]  # torchrun ... -m uslkit ...
            if words and words[0] == "uslkit":
                out.append(words[1:])
    return out


def test_every_readme_command_line_parses():
    """The README's command lines (the paper-scale ones included) are accepted by the CLI's parser: no option
    that does not exist, no value it refuses."""
    from uslkit.cli import build_parser

    commands = _readme_commands()
    assert len(commands) >= 20 and any("cifar10" in c for c in commands)
    parser = build_parser()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit as e:
            pytest.fail(f"README command does not parse ({e}): uslkit {' '.join(argv)}")
