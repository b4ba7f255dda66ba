"""benchmarks/registry_data.py: the unseen datasets' conversion and their page."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_registry", BENCH / "registry_data.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_registry"] = mod  # the module's dataclass looks itself up there
    spec.loader.exec_module(mod)
    return mod


def _rec(ds, method, seed, ari, found=3, **kw):
    r = {"dataset": ds, "method": method, "seed": seed, "overrides": {}, "status": "ok", "K": 3, "ARI": ari,
         "n_clusters_found": found, "cpu_s": 10.0, "machine": "test CPU"}
    r.update(kw)
    return r


def test_unlabelled_cells_are_dropped_and_counts_kept():
    reg = _load()
    x = np.array([[0, 3, 1], [2, 0, 0], [5, 5, 0]])
    a = reg._anndata(x, ["g1", "g2", "g2"], ["T", "", "B"])
    assert a.shape == (2, 3)  # the unlabelled cell is dropped, no gene is
    assert list(a.obs["cell_type"]) == ["T", "B"]
    assert list(a.obs_names) == ["cell_0", "cell_2"]
    assert a.var_names.is_unique  # the repeated symbol is made unique, not dropped
    np.testing.assert_array_equal(a.X.toarray(), x[[0, 2]])


def test_a_matrix_that_is_not_counts_is_refused():
    reg = _load()
    with pytest.raises(SystemExit, match="not raw counts"):
        reg._anndata(np.array([[0.5, 1.0], [2.0, 0.0]]), ["a", "b"], ["T", "B"])


def test_table_pairs_each_run_with_the_baselines_at_its_seeds():
    reg = _load()
    name = reg.SOURCES[0].name
    recs = [_rec(name, "scgpcl", s, a) for s, a in [(0, 0.8), (1, 0.6), (2, 0.7)]]
    recs += [_rec(name, "pca_kmeans", s, 0.5) for s in (0, 1, 2)]
    recs += [_rec(name, "leiden_tuned", s, 0.9) for s in (0, 1)]  # one seed missing: no Leiden column
    recs += [_rec(name, "scgpcl", 0, 0.1, found=2, overrides={"n_runs": 3})]
    text = reg.build_table(recs, notes="## Reading\nby hand")
    rows = [line for line in text.splitlines() if line.startswith(f"| {name} |")]
    assert rows[0].startswith(f"| {name} | annotation | `scgpcl` | 0,1,2 | 0.700 ± 0.100 | 0.500 | — | +0.200 | — |")
    assert "| 0 of 3 | 3, 3, 3 (K 3) |" in rows[0]
    assert "`scgpcl[n_runs=3]` | 0 | 0.100 ± 0.000 | 0.500 | 0.900 | -0.400 | -0.800 | 1 of 1 | 2 (K 3)" in rows[1]
    assert text.rstrip().endswith("by hand")


def test_recorded_seeds_without_their_labels_stop_the_page(tmp_path):
    reg = _load()
    name = reg.SOURCES[0].name
    recs = [_rec(name, "scgpcl", s, 0.5, dataset_spec="x.h5ad") for s in range(6)]
    with pytest.raises(SystemExit, match=r"labels .* are missing"):
        reg.build_table(recs, labels_dir=tmp_path)
