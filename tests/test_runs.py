"""Several runs at consecutive seeds: the medoid is kept, each cell's agreement is recorded."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

import scgpcl
from scgpcl import InputError
from scgpcl.metrics import cell_agreement, medoid_run

from helpers import TINY, TINY_ARGS, _one_line_error, toy_counts


def test_the_medoid_is_the_run_the_others_agree_with():
    a = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    same_renamed = np.array([2, 2, 2, 0, 0, 0, 1, 1, 1])
    one_moved = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2])
    other = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    chosen, ari = medoid_run([other, one_moved, a, same_renamed])
    assert chosen == 2  # agrees exactly with one run and best with the others (ties: the first)
    assert ari.shape == (4, 4) and np.allclose(np.diag(ari), 1) and np.allclose(ari, ari.T)
    assert ari[2, 3] == pytest.approx(1.0) and ari[0, 2] < 0.1
    with pytest.raises(ValueError, match="two runs"):
        medoid_run([a])


def test_cell_agreement_matches_clusters_one_to_one():
    ref = np.array([0, 0, 0, 1, 1, 1])
    renamed = np.array([5, 5, 5, 3, 3, 3])
    moved = np.array([0, 0, 1, 1, 1, 1])  # the third cell moved
    assert np.array_equal(cell_agreement(ref, [renamed]), np.ones(6))
    assert np.array_equal(cell_agreement(ref, [renamed, moved]), [1, 1, 0.5, 1, 1, 1])
    merged = np.zeros(6, dtype=int)  # one cluster: matched to one reference cluster only
    assert np.array_equal(cell_agreement(ref, [merged]), [1, 1, 1, 0, 0, 0]) or \
        np.array_equal(cell_agreement(ref, [merged]), [0, 0, 0, 1, 1, 1])
    assert np.array_equal(cell_agreement(ref, []), np.ones(6))


def _with_an_empty_cell(a):
    x = a.X.toarray()
    x[0] = 0
    a.X = sp.csr_matrix(x)
    return a


def test_three_runs_keep_the_medoid_and_record_every_run():
    a = _with_an_empty_cell(toy_counts(n_per=40))  # not clustered: NaN agreement
    scgpcl.tl.cluster(a, n_clusters=3, random_state=7, n_runs=3, progress=False, **TINY)
    runs = a.uns["scgpcl"]["runs"]
    assert runs["seeds"] == [7, 8, 9] and runs["chosen_seed"] in (7, 8, 9) and list(runs["n_clusters"]) == [3, 3, 3]
    assert a.uns["scgpcl"]["params"]["random_state"] == runs["chosen_seed"]
    ari = np.asarray(runs["ari"])
    assert ari.shape == (3, 3) and runs["mean_ari"] == pytest.approx(ari[np.triu_indices(3, 1)].mean())
    agree = a.obs["scgpcl_agreement"].to_numpy()
    assert np.isnan(agree[0]) and ((agree[1:] >= 0) & (agree[1:] <= 1)).all()
    assert set(np.round(agree[1:] * 2) / 2) <= {0.0, 0.5, 1.0}  # two other runs
    # the kept run is the chosen seed's own run: one run at that seed gives the same labels
    b = _with_an_empty_cell(toy_counts(n_per=40))
    scgpcl.tl.cluster(b, n_clusters=3, random_state=runs["chosen_seed"], progress=False, **TINY)
    assert a.obs["scgpcl"].equals(b.obs["scgpcl"])
    assert "runs" not in b.uns["scgpcl"] and "scgpcl_agreement" not in b.obs
    # clustering again with one run removes the earlier agreement column
    scgpcl.tl.cluster(a, n_clusters=3, random_state=7, progress=False, **TINY)
    assert "scgpcl_agreement" not in a.obs and "runs" not in a.uns["scgpcl"]


def test_runs_that_estimate_different_k_record_each_and_warn():
    # with n_clusters=None each run estimates its own K; the runs' record and a warning must say so
    from scgpcl.model._runs import train_runs

    a = toy_counts(n_per=40)
    make = lambda seed: scgpcl.SCGPCL(a, 3 if seed % 2 else 2, random_state=seed, **TINY)
    with pytest.warns(UserWarning, match=r"estimated different numbers of clusters \(K = 3, 2, 3 at seeds 1, 2, 3\)"):
        model, runs = train_runs(make, 1, 3, progress=False)
    assert runs["n_clusters"] == [3, 2, 3] and model.n_clusters == runs["n_clusters"][runs["seeds"].index(
        model.random_state)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_a_bad_number_of_runs_is_refused_before_training(bad):
    with pytest.raises(InputError, match="number of runs"):
        scgpcl.tl.cluster(toy_counts(n_per=10), n_clusters=3, n_runs=bad, progress=False, **TINY)


def test_sklearn_runs():
    from scgpcl.sklearn import SCGPCLClustering

    a = toy_counts(n_per=30)
    est = SCGPCLClustering(n_clusters=3, random_state=3, n_runs=2, **TINY).fit(a.X)
    assert est.runs_["seeds"] == [3, 4] and est.random_state_ == est.runs_["chosen_seed"]
    assert est.labels_.shape == (a.n_obs,) and est.runs_["agreement"].shape == (a.n_obs,)
    assert est.get_params()["n_runs"] == 2
    assert SCGPCLClustering(n_clusters=3, **TINY).fit(a.X).runs_ is None


def test_cli_runs(tmp_path, capsys):
    import anndata as ad

    from scgpcl.cli import main

    src = tmp_path / "toy.h5ad"
    toy_counts(n_per=30).write_h5ad(src)
    out = tmp_path / "out.h5ad"
    assert main(["cluster", str(src), str(out), "-k", "3", "--runs", "2", "--seed", "5", "--report",
                 str(tmp_path / "report"), *TINY_ARGS]) == 0
    printed = capsys.readouterr().out
    assert "2 runs (seeds 5, 6): kept seed 5, the first of the two (two runs agree with each other equally" in printed
    assert "2 at seeds 5, 6: kept seed 5, the first of the two" in (tmp_path / "report" / "index.html").read_text()
    b = ad.read_h5ad(out)
    assert "scgpcl_agreement" in b.obs and list(b.uns["scgpcl"]["runs"]["seeds"]) == [5, 6]
    with pytest.raises(SystemExit) as e:  # an argument error, before anything is read
        main(["cluster", str(src), str(tmp_path / "x.h5ad"), "-k", "3", "--runs", "0"])
    assert e.value.code == 2 and "argument --runs: expected a whole number >= 1, got '0'" in capsys.readouterr().err
    # several processes: refused before anything starts
    assert main(["cluster", str(src), str(tmp_path / "y.h5ad"), "-k", "3", "--runs", "2", "--processes", "2"]) == 2
    _one_line_error(capsys, "--runs 2", "several processes")
    assert not (tmp_path / "y.h5ad").exists()


def test_cluster_sizes_are_warned_about_for_the_kept_run_only(monkeypatch):
    # with n_runs=3 every run's empty or one-cell clusters were warned about, though two runs are thrown away
    import scgpcl.model._scgpcl as m

    seen = {"empty": [], "tiny": []}
    monkeypatch.setattr(m, "_warn_empty_clusters", lambda labels, k, **kw: seen["empty"].append(labels.copy()))
    monkeypatch.setattr(m, "_warn_tiny_clusters", lambda labels, k, **kw: seen["tiny"].append(labels.copy()))
    a = toy_counts(n_per=40)
    scgpcl.tl.cluster(a, n_clusters=3, random_state=7, n_runs=3, progress=False, **TINY)
    assert len(seen["empty"]) == 1 and len(seen["tiny"]) == 1
    kept = a.obs["scgpcl"].astype(int).to_numpy()
    assert np.array_equal(seen["tiny"][0], kept) and np.array_equal(seen["empty"][0], kept)
    # and the warned run is the kept one, not the first: keep the second run and see whose sizes are checked
    import scgpcl.model._runs as runs_mod

    real = runs_mod.medoid_run
    monkeypatch.setattr(runs_mod, "medoid_run", lambda labels: (1, real(labels)[1]))
    warned = []
    checked = m.SCGPCL._warn_cluster_sizes
    monkeypatch.setattr(m.SCGPCL, "_warn_cluster_sizes", lambda self: (warned.append(self.random_state), checked(self)))
    c = toy_counts(n_per=40)
    scgpcl.tl.cluster(c, n_clusters=3, random_state=7, n_runs=3, progress=False, **TINY)
    assert c.uns["scgpcl"]["runs"]["chosen_seed"] == 8 and warned == [8]
    monkeypatch.setattr(m.SCGPCL, "_warn_cluster_sizes", checked)
    monkeypatch.setattr(runs_mod, "medoid_run", real)
    seen["tiny"] = seen["tiny"][:1]
    # one run: warned once, when its labels are first computed
    b = toy_counts(n_per=40)
    scgpcl.tl.cluster(b, n_clusters=3, random_state=7, progress=False, **TINY)
    assert len(seen["tiny"]) == 2
