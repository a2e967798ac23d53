"""The same picks on any thread count (issue 17): every selection method, in subprocesses with
``OMP_NUM_THREADS=1`` and ``2``.

The inputs are lattice points (coordinates in {1.0, 1.1, 1.2}): many distances tie exactly, so a product whose
bits depend on the BLAS split flips comparisons. On them, before this test existed, ``faiss.Kmeans`` gave 1,397
different labels of 5,000 (5,000 x 64) and ProbCover other picks (4,000 x 32) between 1 and 2 threads
(``benchmarks/RESULTS.md``, issue 17).
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SCRIPT = r"""
import hashlib, json, sys
import numpy as np
from uslkit.cluster import constrained_kmeans, kmeans, sinkhorn_cluster
import uslkit.cluster
from uslkit.knn import knn, knn_density
from uslkit.select import METHODS, select

def digest(*arrays):
    h = hashlib.sha1()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()

out = {}
for n, d in ((4000, 32), (5000, 64)):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(n, d)).astype(np.float32) * 0.1 + 1.0
    y = rng.integers(0, 10, size=n)
    key = f"{n}x{d}"
    out[f"{key}/cluster.kmeans"] = digest(*kmeans(x, 40, seed=0, niter=100))
    out[f"{key}/kmeans_spherical"] = digest(*kmeans(x, 40, seed=0, niter=100, spherical=True))
    out[f"{key}/constrained_kmeans"] = digest(*constrained_kmeans(x, 40, np.arange(10), seed=0))
    out[f"{key}/sinkhorn_cluster"] = digest(*sinkhorn_cluster(x, 20, seed=0, n_iter=5))
    out[f"{key}/sinkhorn_cluster_f64"] = digest(*sinkhorn_cluster(x, 20, seed=0, n_iter=3, temperature=0.1))
    out[f"{key}/kmeans_sampled"] = digest(*kmeans(x, 40, seed=0, niter=100, max_points_per_centroid=30))
    out[f"{key}/usl_sampled"] = digest(select("usl", x, 40, seed=0, kmeans_points_per_centroid=30))
    out[f"{key}/knn"] = digest(*knn(x, 20))
    out[f"{key}/knn_density_ivfpq"] = digest(knn_density(x, 20, mode="ivfpq"))
    out[f"{key}/usl_ivfpq"] = digest(select("usl", x, 40, seed=0, knn_mode="ivfpq", kmeans_points_per_centroid=30))
    copy_max, uslkit.cluster._NEAREST_COPY_ELEMS = uslkit.cluster._NEAREST_COPY_ELEMS, 1000  # centre block by block
    out[f"{key}/kmeans_sampled_streamed"] = digest(*kmeans(x, 40, seed=0, niter=100, max_points_per_centroid=30))
    uslkit.cluster._NEAREST_COPY_ELEMS = copy_max
    out[f"{key}/probcover_pruned"] = digest(select("probcover", x, 40, seed=0, num_classes=10, search="pruned"))
    out[f"{key}/probcover_sampled"] = digest(select("probcover", x, 40, seed=0, num_classes=10, purity_sample=500,
                                                    kmeans_points_per_centroid=30))
    for m in METHODS:
        if m not in ("random", "ntkcpl"):
            out[f"{key}/{m}"] = digest(select(m, x, 40, seed=0, labels=y, num_classes=10))
    for m in ("kmeans_multi", "typiclust", "probcover", "coreset"):
        out[f"{key}/{m}_labeled"] = digest(select(m, x, 20, seed=1, labeled=np.arange(0, n, 250), num_classes=10))
    out[f"{key}/ntkcpl"] = digest(select("ntkcpl", x[:800], 8, seed=0))  # minutes at n = 4,000
print(json.dumps(out))
"""


def _run(threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_every_selection_is_bit_identical_on_1_and_2_threads():
    one, two = _run(1), _run(2)
    assert one.keys() == two.keys()
    differ = sorted(k for k in one if one[k] != two[k])
    assert not differ, f"different results with 1 and 2 threads: {differ}"
