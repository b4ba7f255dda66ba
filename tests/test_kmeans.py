"""k-means on the learned representation: restarts, the choice among them, assignment."""

from __future__ import annotations

import numpy as np
import pytest

from scgpcl.train import assign, central_run, kmeans


def test_central_run_is_the_partition_most_like_the_others():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([1, 1, 0, 0, 2, 2])  # a with the names swapped: identical partition
    c = np.array([0, 1, 0, 1, 0, 1])  # unlike both
    assert central_run([c, a, b]) in (1, 2)
    assert central_run([a, c, b, c]) in (0, 2)


def test_kmeans_select_central_is_deterministic_and_a_real_run():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(m, 1.0, size=(60, 4)) for m in (0, 3, 6, 9)]).astype(np.float32)
    r1 = kmeans(x, 4, n_init=8, seed=3, select="central")
    r2 = kmeans(x, 4, n_init=8, seed=3, select="central")
    np.testing.assert_array_equal(r1.labels, r2.labels)
    # its labels are the nearest of its centres (a k-means solution, not a consensus relabelling)
    np.testing.assert_array_equal(assign(x, r1.centres), r1.labels)
    best = kmeans(x, 4, n_init=8, seed=3)
    assert r1.inertia >= best.inertia - 1e-3  # the lowest inertia is the other rule
    with pytest.raises(ValueError, match="select"):
        kmeans(x, 4, select="median")
