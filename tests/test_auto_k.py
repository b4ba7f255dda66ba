"""Automatic number of clusters: estimators on synthetic blobs, and n_clusters=None end to end."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from sklearn.datasets import make_blobs

import scgpcl
from scgpcl import SCGPCL, InputError
from scgpcl.train._auto_k import METHODS, AutoKResult, candidate_ks, estimate_k

from helpers import QUICK, toy_counts


def _blobs(k, n=500, seed=0):
    z, _ = make_blobs(n, n_features=16, centers=k, cluster_std=1.0, center_box=(-12, 12), random_state=seed)
    return z.astype(np.float32)


def _has_leiden() -> bool:
    try:
        import igraph  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("k", [3, 5])
def test_estimators_recover_k_on_blobs(method, k):
    if (method.startswith("leiden") or method == "consensus") and not _has_leiden():
        pytest.skip("igraph not installed")
    r = METHODS[method](_blobs(k), k_max=12, seed=0)
    assert r.k == k
    assert r.method == method
    lengths = {len(v) for v in r.curve.values()}
    assert len(lengths) == 1 and lengths.pop() >= 2  # one curve over the candidates
    d = r.to_dict()
    assert d["k"] == k and set(d["curve"]) == set(r.curve)


def test_curve_content_and_range():
    r = estimate_k(_blobs(4), "silhouette", k_max=8)
    assert list(r.curve["k"]) == list(range(2, 9))
    assert int(r.curve["k"][np.argmax(r.curve["silhouette"])]) == r.k == 4
    assert list(candidate_ks(50, 30)) == [2, 3, 4, 5]  # capped at n // 10
    assert list(candidate_ks(5, 30)) == [2]
    with pytest.raises(ValueError, match="unknown auto_k_method"):
        estimate_k(_blobs(3), "nope")


def test_default_criterion_is_the_packages():
    # docs/api.md presents estimate_k as what n_clusters=None runs; its default was "silhouette"
    from scgpcl._config import TrainConfig

    r = estimate_k(_blobs(4), k_max=8)
    assert r.method == TrainConfig().auto_k_method == "consensus"


def test_consensus_records_its_three_estimates_and_warns_when_no_split_is_stable():
    r = estimate_k(_blobs(4), "consensus", k_max=8)
    assert set(r.estimates) == {"eigengap", "leiden_stability", "leiden_modularity"} and r.candidates == (2, 8)
    assert r.to_dict()["estimates"] == r.estimates and r.caveats(8) == []
    noise = np.random.default_rng(0).normal(size=(400, 5))  # no groups
    (text,) = estimate_k(noise, "consensus").caveats(30)  # noise: no split is stable across subsamples
    assert text.startswith("no split of the cells into 2 or more clusters was stable across subsamples")
    # the three estimates' spread alone is no caveat: they differ by design (cellbench: 2, 2, 4 for 3 types)
    spread = AutoKResult(3, "consensus", estimates={"eigengap": 2, "leiden_stability": 2, "leiden_modularity": 8},
                         candidates=(2, 30), sample_size=400)
    assert spread.caveats(30) == []
    # capped by the cells (a tenth of them), with the estimate at the cap
    capped = AutoKResult(4, "eigengap", estimates={"eigengap": 4}, candidates=(2, 4), sample_size=40)
    assert "largest K considered on 40 cells" in capped.caveats(30)[0]
    assert capped.caveats(4) == []  # the cap is k_max itself: the user chose it
    # under 30 cells K = 2 is the only candidate, always allowed: not a cap that came from the cells
    assert AutoKResult(2, "eigengap", candidates=(2, 2), sample_size=15).caveats(30) == []
    # no resolution split the cells at all: its own words, not "best agreement nan"
    unsplit = AutoKResult(2, "consensus", curve={"n_clusters": np.ones(3), "stability": np.ones(3)},
                          candidates=(2, 30), sample_size=400)
    (text,) = unsplit.caveats(30)
    assert text.startswith("Leiden split the cells into 2 or more clusters at no resolution") and "nan" not in text
    # a criterion called directly has no range or sample size to report, rather than made-up ones
    direct = METHODS["eigengap"](_blobs(3), k_max=8).to_dict()
    assert "candidates" not in direct and "sample_size" not in direct


@pytest.fixture(scope="module")
def auto_model(toy):
    m = SCGPCL(toy, None, random_state=0, **QUICK)
    assert m.n_clusters is None and "K=auto" in repr(m)
    m.train(progress=False)
    return m


def test_auto_k_trains_and_sets_n_clusters(auto_model, toy):
    m = auto_model
    assert m.n_clusters == m.auto_k["k"] == 3
    assert m.auto_k["method"] == m.config.train.auto_k_method
    labels = m.predict()
    assert labels.max() < m.n_clusters
    assert m.predict_proba().shape == (toy.n_obs, m.n_clusters)
    assert scgpcl.metrics.clustering_metrics(toy.obs["cell_type"], labels)["ARI"] > 0.9


def test_auto_k_in_uns(auto_model, toy, tmp_path):
    a = toy.copy()
    scgpcl.tl.store_results(a, auto_model, label_key="cell_type")
    info = a.uns["scgpcl"]
    assert info["auto_k"]["k"] == info["params"]["n_clusters"] == 3
    assert info["auto_k"]["method"] == auto_model.config.train.auto_k_method
    assert len(info["auto_k"]["curve"]) >= 2
    assert set(info["auto_k"]["estimates"]) == {"eigengap", "leiden_stability", "leiden_modularity"}
    assert list(info["auto_k"]["candidates"]) == [2, min(30, toy.n_obs // 10)]
    a.write_h5ad(tmp_path / "a.h5ad")  # the record is writable
    back = ad.read_h5ad(tmp_path / "a.h5ad").uns["scgpcl"]["auto_k"]
    assert int(back["k"]) == 3


def test_save_load_keeps_estimated_k(auto_model, toy, tmp_path):
    auto_model.save(tmp_path / "m")
    m2 = SCGPCL.load(tmp_path / "m", toy, device="cpu")
    assert m2.n_clusters == auto_model.n_clusters
    assert m2.auto_k["k"] == auto_model.auto_k["k"]
    np.testing.assert_array_equal(m2.predict(), auto_model.predict())


def test_tl_cluster_auto_with_warmup_covering_pretraining(toy):
    # no post-warm-up epoch: K is estimated at the end of pre-training
    a = toy.copy()
    quick = {**QUICK, "pretrain_rounds": 4, "warmup_rounds": 4, "finetune_rounds": 2, "lambda_proto": 0.0}
    scgpcl.tl.cluster(a, n_clusters=None, progress=False, auto_k_method="eigengap", **quick)
    assert a.uns["scgpcl"]["auto_k"]["method"] == "eigengap"
    assert a.obs["scgpcl"].cat.categories.size == a.uns["scgpcl"]["auto_k"]["k"]


@pytest.mark.parametrize("bad", [1, 0, "abc", 2.5, True])
def test_bad_n_clusters_still_raise(toy, bad):
    with pytest.raises(InputError):
        SCGPCL(toy, bad, **QUICK)


def test_bad_auto_k_options_raise(toy):
    with pytest.raises(InputError, match="auto_k_method"):
        SCGPCL(toy, None, auto_k_method="gap", **QUICK)
    with pytest.raises(InputError, match="auto_k_max"):
        SCGPCL(toy, None, auto_k_max=1, **QUICK)


def test_leiden_criterion_without_igraph_fails_early(toy, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "igraph" else real(name, *a)
    )
    with pytest.raises(InputError, match="needs igraph"):
        SCGPCL(toy, None, auto_k_method="leiden_stability", **QUICK)
    SCGPCL(toy, None, auto_k_method="eigengap", **QUICK)  # the other criteria do not need it
    SCGPCL(toy, 3, **QUICK)  # nor does a given K


def test_leiden_runs_are_seeded_and_leave_the_global_rng_alone():
    import random

    if not _has_leiden():
        pytest.skip("igraph not installed")
    z = _blobs(4, n=300, seed=3)
    random.seed(123)
    expected = random.random()
    random.seed(123)
    a = METHODS["leiden_modularity"](z, k_max=12, seed=5)
    assert random.random() == expected  # igraph drew from its own seeded generator
    b = METHODS["leiden_modularity"](z, k_max=12, seed=5)
    assert a.k == b.k
    np.testing.assert_array_equal(a.curve["modularity"], b.curve["modularity"])
    np.testing.assert_array_equal(a.curve["n_clusters"], b.curve["n_clusters"])


def test_consensus_is_the_geometric_mean_of_the_three_criteria():
    if not _has_leiden():
        pytest.skip("igraph not installed")
    # nested structure: 3 well-separated groups of 3 sub-blobs each, where the criteria disagree
    rng = np.random.default_rng(0)
    tops = rng.normal(0, 40, size=(3, 16))
    z = np.concatenate([rng.normal(t + rng.normal(0, 6, 16), 1.0, size=(60, 16)) for t in tops for _ in range(3)])
    z = z.astype(np.float32)
    r = METHODS["consensus"](z, k_max=20, seed=1)
    parts = [METHODS[m](z, k_max=20, seed=1).k for m in ("eigengap", "leiden_stability", "leiden_modularity")]
    assert [r.estimates[m] for m in ("eigengap", "leiden_stability", "leiden_modularity")] == parts
    assert r.k == round(np.exp(np.mean(np.log(parts))))
    assert r.method == "consensus" and min(parts) <= r.k <= max(parts)


def test_auto_k_needs_three_cells():
    a = toy_counts(n_per=2, n_groups=1, n_genes=30)
    with pytest.raises(InputError, match="at least 3 cells"):
        SCGPCL(a, None)


def test_consensus_is_the_rounded_geometric_mean_of_the_three(monkeypatch):
    # estimates 2, 2 and 8: geometric mean 3.17 -> 3; the arithmetic mean (4) passed the old test, whose data
    # gave 7, 9, 9 (both means 8)
    import scgpcl.train._auto_k as ak

    monkeypatch.setattr(ak, "eigengap_k", lambda z, **kw: ak.AutoKResult(2, "eigengap"))
    k, stab, mod = np.array([2.0, 8.0]), np.array([1.0, 0.5]), np.array([0.3, 0.6])
    monkeypatch.setattr(ak, "_leiden_scan", lambda z, **kw: (k, stab, mod, np.array([True, True]), {}))
    z = np.random.default_rng(0).normal(size=(400, 4)).astype(np.float32)
    result = ak.consensus_k(z)
    assert result.k == 3 and result.estimates == {"eigengap": 2, "leiden_stability": 2, "leiden_modularity": 8}


def test_stability_ties_go_to_the_finer_split():
    from scgpcl.train._auto_k import _leiden_pick

    k, stab = np.array([2.0, 3.0, 5.0]), np.array([1.0, 1.0, 0.5])
    assert _leiden_pick("leiden_stability", k, stab, np.zeros(3), np.ones(3, bool)) == 1


def test_stability_compares_subsamples_on_the_cells_they_share(monkeypatch):
    # one cluster in every run must agree perfectly; scoring the cells a subsample left out (-1) as a cluster
    # of their own made it less than 1
    import scgpcl.train._auto_k as ak

    monkeypatch.setattr(ak, "_leiden_membership", lambda g, r, seed: [0] * g.vcount())
    z = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    _, _, stab, _ = ak._leiden_runs(z, seed=0, n_neighbors=10, resolutions=(0.5, 1.0), n_runs=3, fraction=0.9)
    np.testing.assert_array_equal(stab, 1.0)


def test_knn_graph_is_symmetric_without_self_loops_even_with_duplicate_points():
    # a duplicate point can come back as its own first "other" neighbour; the graph must still have no
    # self-loop, and it is built without setdiag (scipy < 1.13 warned there: "Changing the sparsity structure")
    import warnings

    from scgpcl.train._auto_k import knn_graph

    z = np.random.default_rng(0).normal(size=(60, 3))
    z[1] = z[0]
    z[10:20] = z[9]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = knn_graph(z, n_neighbors=5)
    assert a.diagonal().sum() == 0 and (a != a.T).nnz == 0
    assert set(np.unique(a.data)) == {1.0}
    assert (np.diff(a.indptr) >= 4).all()  # its 5 nearest, less itself where a duplicate returned it
