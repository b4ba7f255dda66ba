"""Clustering metrics (docs/method.md section 7) and the k-means helper."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from scgpcl.metrics import cluster_accuracy, clustering_metrics, match_clusters
from scgpcl.train._kmeans import kmeans


def _brute_force_accuracy(truth, pred):
    """max over one-to-one maps between predicted clusters and true labels."""
    t_names, t = np.unique(truth, return_inverse=True)
    p_names, p = np.unique(pred, return_inverse=True)
    n = max(len(t_names), len(p_names))
    best = 0
    # assign to each predicted cluster a distinct slot in range(n); slots >= n_true are "unmatched"
    for perm in itertools.permutations(range(n), len(p_names)):
        perm = np.asarray(perm)
        best = max(best, int(np.sum(perm[p] == t)))
    return best / len(truth)


@pytest.mark.parametrize(
    "n_true, n_pred, seed",
    [(3, 3, 0), (3, 3, 1), (2, 4, 2), (4, 2, 3), (3, 5, 4), (5, 3, 5), (1, 3, 6), (4, 1, 7)],
)
def test_cluster_accuracy_matches_brute_force(n_true, n_pred, seed):
    rng = np.random.default_rng(seed)
    n = 15
    truth = np.concatenate([np.arange(n_true), rng.integers(0, n_true, size=n - n_true)])
    pred = np.concatenate([np.arange(n_pred), rng.integers(0, n_pred, size=n - n_pred)])
    rng.shuffle(truth)
    # correlate pred with truth a bit so the optimum is not trivial
    pred = np.where(rng.random(n) < 0.5, truth % n_pred, pred)
    truth_s = np.array([f"type_{v}" for v in truth])
    ca = cluster_accuracy(truth_s, pred)
    assert ca == pytest.approx(_brute_force_accuracy(truth_s, pred), abs=1e-12)
    assert clustering_metrics(truth_s, pred)["CA"] == pytest.approx(ca, abs=1e-12)


def test_cluster_accuracy_label_name_invariance_and_symmetry():
    rng = np.random.default_rng(10)
    truth = rng.integers(0, 4, size=30)
    pred = np.where(rng.random(30) < 0.7, (truth + 1) % 5, rng.integers(0, 5, size=30))
    ca = cluster_accuracy(truth, pred)
    # rename predicted clusters by a bijection, and the true labels by another
    pred_renamed = np.array(["z", "a", "q", "10", "2"])[pred]
    truth_renamed = np.array(["B cell", "T cell", "NK", "mono"])[truth]
    assert cluster_accuracy(truth, pred_renamed) == pytest.approx(ca)
    assert cluster_accuracy(truth_renamed, pred) == pytest.approx(ca)
    assert cluster_accuracy(truth_renamed, pred_renamed) == pytest.approx(ca)
    # a one-to-one matching is symmetric
    assert cluster_accuracy(pred, truth) == pytest.approx(ca)
    assert 0.5 < ca < 1.0


def test_match_clusters_unmatched_extra_cluster():
    truth = np.array(["a", "a", "a", "b", "b", "b"])
    pred = np.array([0, 0, 2, 1, 1, 1])
    mapped = match_clusters(truth, pred)
    assert list(mapped) == ["a", "a", None, "b", "b", "b"]


def test_clustering_metrics_keys_and_perfect_values():
    truth = np.array(["x", "x", "y", "y", "y", "z", "z"])
    pred = np.array([5, 5, 0, 0, 0, 9, 9])  # perfect up to renaming
    m = clustering_metrics(truth, pred)
    assert set(m) == {"ARI", "NMI", "CA", "F1_macro", "F1_micro"}
    for key, value in m.items():
        assert isinstance(value, float)
        assert value == pytest.approx(1.0, abs=1e-12), key


def test_clustering_metrics_rejects_length_mismatch():
    with pytest.raises(ValueError):
        clustering_metrics(["a", "b"], [0, 1, 1])


@pytest.mark.parametrize("missing", [np.nan, None])
def test_clustering_metrics_refuses_missing_labels(missing):
    # 'nan' must not become a class that matches itself (ARI = CA = 1 here)
    truth = ["A", "A", "B", "B", missing, missing]
    pred = [0, 0, 1, 1, missing, missing]
    with pytest.raises(ValueError, match="2 of 6 reference labels are missing"):
        clustering_metrics(truth, pred)
    with pytest.raises(ValueError, match="1 of 4 cluster labels are missing"):
        clustering_metrics(["A", "A", "B", "B"], [0, 0, 1, missing])


def test_nmi_uses_arithmetic_averaging():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])  # unequal entropies
    arith = normalized_mutual_info_score(truth, pred, average_method="arithmetic")
    geom = normalized_mutual_info_score(truth, pred, average_method="geometric")
    assert abs(arith - geom) > 1e-3  # the case distinguishes the two
    m = clustering_metrics(truth, pred)
    assert m["NMI"] == pytest.approx(arith, rel=1e-12)
    assert m["ARI"] == pytest.approx(adjusted_rand_score(truth, pred), rel=1e-12)


def test_an_empty_string_is_no_label():
    from scgpcl.metrics import has_label, placeholder_labels

    values = pd.Series(["a", "", "  ", None, np.nan, "unknown", "b"], dtype=object)
    np.testing.assert_array_equal(has_label(values), [True, False, False, False, False, True, True])
    assert placeholder_labels(values) == {"unknown": 1}
    with pytest.raises(ValueError, match=r"2 of 3 reference labels are missing \(NaN/None or an empty string\)"):
        clustering_metrics(np.array(["a", "", " "], dtype=object), np.array([0, 1, 1]))

def test_f1_after_matching_hand_cases():
    truth = np.array(["a", "a", "a", "b", "b", "b"])
    # two clusters: 0 -> a (2 cells), 1 -> b (3 b + 1 a); mapped = a a b b b b
    # F1(a) = 2*1*(2/3)/(1+2/3) = 0.8, F1(b): P = 3/4, R = 1 -> 6/7; micro = accuracy = 5/6
    m = clustering_metrics(truth, np.array([0, 0, 1, 1, 1, 1]))
    assert m["CA"] == pytest.approx(5 / 6)
    assert m["F1_macro"] == pytest.approx((0.8 + 6 / 7) / 2)
    assert m["F1_micro"] == pytest.approx(5 / 6)
    # a third, unmatched cluster (cell 2): it counts as a miss for "a" but as no
    # false positive for any true label, so micro F1 = 2*5/(2*5 + 0 + 1) = 10/11
    # (sklearn's micro F1 restricted to the true labels), while CA = 5/6.
    # F1(a): TP 2, FP 0, FN 1 -> 4/5; F1(b) = 1.
    m = clustering_metrics(truth, np.array([0, 0, 2, 1, 1, 1]))
    assert m["CA"] == pytest.approx(5 / 6)
    assert m["F1_macro"] == pytest.approx(0.9)
    assert m["F1_micro"] == pytest.approx(10 / 11)


# ----------------------------------------------------------------------------- k-means


def _blobs(seed=0, k=4, per=25, d=3, spread=0.1):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 10
    x = np.concatenate([c + spread * rng.normal(size=(per, d)) for c in centres])
    y = np.repeat(np.arange(k), per)
    return x.astype(np.float32), y, centres


def test_kmeans_recovers_separated_blobs():
    x, y, _ = _blobs()
    res = kmeans(x, 4, n_init=5, seed=0)
    assert adjusted_rand_score(y, res.labels) == 1.0
    assert res.labels.dtype == np.int64 and res.labels.shape == (100,)
    assert res.centres.dtype == np.float32 and res.centres.shape == (4, 3)
    # centres are the cluster means, and the inertia is the within-cluster SSE
    for c in range(4):
        np.testing.assert_allclose(res.centres[c], x[res.labels == c].mean(0), atol=1e-4)
    sse = float(((x - res.centres[res.labels]) ** 2).sum())
    assert res.inertia == pytest.approx(sse, rel=1e-4)
    # torch input works the same
    res_t = kmeans(torch.from_numpy(x), 4, n_init=5, seed=0)
    np.testing.assert_array_equal(res_t.labels, res.labels)


def test_kmeans_deterministic_per_seed():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 4)).astype(np.float32)  # no clear structure: seeds matter
    a = kmeans(x, 5, n_init=1, seed=3)
    b = kmeans(x, 5, n_init=1, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.centres, b.centres)
    assert a.inertia == b.inertia
    others = [kmeans(x, 5, n_init=1, seed=s) for s in range(4, 12)]
    assert any(not np.array_equal(o.labels, a.labels) for o in others)


def test_kmeans_warm_start():
    # 20 small blobs: a single k-means++ start often merges two blobs and splits
    # another (seeds 0, 2, 3 here); a warm start from the true centres does not.
    x, y, centres = _blobs(seed=0, k=20, per=6, d=2, spread=0.2)
    warm = kmeans(x, 20, n_init=0, init=centres)
    assert adjusted_rand_score(y, warm.labels) == 1.0
    worse = 0
    for s in range(6):
        fresh = kmeans(x, 20, n_init=1, seed=s)
        both = kmeans(x, 20, n_init=1, seed=s, init=centres)
        assert warm.inertia <= fresh.inertia * (1 + 1e-6)
        assert both.inertia <= fresh.inertia * (1 + 1e-6)
        assert both.inertia == pytest.approx(warm.inertia, rel=1e-6)
        worse += fresh.inertia > warm.inertia * 1.01
    assert worse >= 1  # the comparison is not vacuous on this data
    # the warm start really is used: from deliberately bad centres and n_init=0,
    # Lloyd stays in that bad local optimum (two centres on one blob)
    bad = np.concatenate([centres[:19], centres[18:19] + 0.01])
    stuck = kmeans(x, 20, n_init=0, init=bad)
    assert stuck.inertia > warm.inertia * 1.5


def test_kmeans_invalid_arguments():
    x = np.zeros((3, 2), dtype=np.float32)
    with pytest.raises(ValueError):
        kmeans(x, 4)
    with pytest.raises(ValueError):
        kmeans(x, 0)
    with pytest.raises(ValueError):
        kmeans(x, 2, n_init=0)


def test_consensus_labels_recovers_the_majority_partition():
    from sklearn.metrics import adjusted_rand_score

    from scgpcl.train._kmeans import consensus_labels

    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 25)
    permuted = [rng.permutation(4)[truth] for _ in range(3)]  # the same partition, other names
    noisy = truth.copy()
    noisy[rng.choice(100, 30, replace=False)] = rng.integers(0, 4, 30)
    out = consensus_labels([*permuted, noisy], 4, seed=0)
    assert adjusted_rand_score(truth, out) == 1.0
    assert np.array_equal(out, consensus_labels([*permuted, noisy], 4, seed=0))
    with pytest.raises(ValueError):
        consensus_labels([], 3)


def test_matched_labels_can_keep_only_pairs_that_share_cells():
    from scgpcl.metrics import matched_labels

    # clusters 0 {a, a}, 1 {a}, 2 {b, b, c}: the matching pairs 1 with c, with which it shares no cell
    truth = ["a", "a", "a", "b", "b", "c"]
    pred = ["0", "0", "1", "2", "2", "2"]
    assert matched_labels(truth, pred) == {"0": "a", "1": "c", "2": "b"}
    assert matched_labels(truth, pred, overlapping=True) == {"0": "a", "1": None, "2": "b"}
    assert cluster_accuracy(truth, pred) == pytest.approx(4 / 6)  # CA is the same either way
