"""Fixtures the training tests share: the digits pool and a 40-label selection of it (4 per class)."""

import numpy as np
import pytest

from uslkit.data import load_dataset
from uslkit.labels import annotate, make_selection


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
