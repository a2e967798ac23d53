"""Fixtures the training tests share: the digits pool, a 40-label selection of it (4 per class), and a runner of
a script under ``torchrun --nproc_per_node=2`` on CPU (gloo)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from uslkit.data import load_dataset
from uslkit.labels import annotate, make_selection


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Mark a test whose call failed (``item.failed``), so fixtures can keep evidence (the browser tests'
    screenshot)."""
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item.failed = True


@pytest.fixture(scope="module")
def digits():
    """``(train, test)`` splits of scikit-learn's digits."""
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def selection(digits):
    """An annotated labels file of the first 4 training images of each class."""
    train, _ = digits
    idx = np.concatenate([np.flatnonzero(train.labels == c)[:4] for c in range(10)])  # 4 per class
    return annotate(make_selection(idx, dataset=train, method="test", seed=0), train)


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(script) -> out``: run the Python source ``script`` (dedented) in 2 processes on CPU (gloo, one
    thread each) with the folder ``out`` as ``sys.argv[1]``; a failed run fails the test with its stderr."""

    def run(script: str) -> Path:
        path, out = tmp_path / "ddp_run.py", tmp_path / "ddp"
        path.write_text(textwrap.dedent(script))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(path),
               str(out)]
        proc = subprocess.run(cmd, cwd=Path(__file__).resolve().parents[1], env={**os.environ, "OMP_NUM_THREADS": "1"},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return out

    return run
