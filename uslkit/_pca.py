"""PCA for the ``pixels`` encoder (and any feature matrix): :func:`fit_pca` and its :class:`PCAModel`.

Re-exported by :mod:`uslkit.embed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._validate import check_positive_int

__all__ = ["PCAModel", "fit_pca"]


@dataclass(frozen=True)
class PCAModel:
    """A fitted PCA: ``transform(x) = (x - mean) @ components.T``."""

    mean: np.ndarray  # (d_in,) float64
    components: np.ndarray  # (d_out, d_in) float64, rows orthonormal, by decreasing variance
    explained_variance_ratio: np.ndarray  # (d_out,)

    def transform(self, x: np.ndarray, *, chunk: int = 16384) -> np.ndarray:
        """``(n, d_in) -> float32 (n, d_out)``, computed in float32, ``chunk`` rows at a time."""
        out = np.empty((x.shape[0], self.components.shape[0]), dtype=np.float32)
        comp = self.components.T.astype(np.float32)
        mean = self.mean.astype(np.float32)
        for s in range(0, x.shape[0], chunk):
            out[s : s + chunk] = (np.asarray(x[s : s + chunk], dtype=np.float32) - mean) @ comp
        return out


def fit_pca(x: np.ndarray, n_components: int, *, seed: int = 0) -> PCAModel:
    """Fit PCA on ``x`` (n, d_in) to ``n_components`` dimensions.

    Exact for ``d_in <= 4096`` (eigh of the float64 covariance, accumulated in chunks), randomized
    (scikit-learn, ``random_state=seed``) above. Signs are fixed so the largest-magnitude loading of each
    component is positive.
    """
    n, d_in = x.shape
    n_components = check_positive_int(n_components, name="pca", maximum=min(n, d_in))
    mean = np.zeros(d_in, dtype=np.float64)
    for s in range(0, n, 16384):
        mean += np.asarray(x[s : s + 16384], dtype=np.float64).sum(axis=0)
    mean /= n
    if d_in <= 4096:
        cov = np.zeros((d_in, d_in), dtype=np.float64)
        for s in range(0, n, 16384):
            c = np.asarray(x[s : s + 16384], dtype=np.float64) - mean
            cov += c.T @ c
        cov /= max(n - 1, 1)
        evals, evecs = np.linalg.eigh(cov)
        order = np.argsort(evals)[::-1][:n_components]
        components = evecs[:, order].T
        total = max(float(np.clip(evals, 0, None).sum()), 1e-300)
        ratio = np.clip(evals[order], 0, None) / total
    else:
        from sklearn.decomposition import PCA

        model = PCA(n_components=n_components, svd_solver="randomized", random_state=seed)
        model.fit(np.asarray(x, dtype=np.float32))
        components = model.components_.astype(np.float64)
        ratio = model.explained_variance_ratio_
    pivot = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(components.shape[0]), pivot])
    signs[signs == 0] = 1.0
    return PCAModel(mean=mean, components=components * signs[:, None], explained_variance_ratio=ratio)
