"""Edge cases found in a review (2026-12-02): each failed before its fix."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from scgpcl import SCGPCL, InputError, tl
from scgpcl._device import resolve_device
from scgpcl.cli import main as cli_main
from scgpcl.data._checks import check_counts
from scgpcl.data._io import read_counts
from helpers import QUICK, TINY, toy_counts



@pytest.fixture(scope="module")
def toy():
    return toy_counts(n_per=20, n_genes=60)


def test_torch_device_objects_are_checked_like_strings(monkeypatch):
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device(torch.device("cuda"))
    with pytest.raises(InputError, match="not supported"):
        resolve_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(InputError, match="1 CUDA device"):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")


def test_no_minibatch_of_one_cell():
    # 5 cells in batches of 2 used to leave a batch of one, which BatchNorm refuses mid-training
    a = toy_counts(n_per=5, n_groups=1, n_genes=40)[:5].copy()
    m = SCGPCL(a, 2, random_state=0, batch_size=2, **TINY)
    sizes = [len(b) for b in m.loader.plan(m.loader.steps_per_epoch)]
    assert sorted(sizes) == [2, 3]
    m.train(progress=False)
    assert set(np.unique(m.predict())) <= {0, 1}


def test_one_gene_is_refused_by_name():
    a = toy_counts(n_per=10, n_genes=30)
    one = a[:, :1].copy()
    one.X = sp.csr_matrix(np.ones((one.n_obs, 1), dtype=np.float32))
    with pytest.raises(InputError, match="at least 2 genes"):
        SCGPCL(one, 2)


def test_auto_k_needs_three_cells():
    a = toy_counts(n_per=2, n_groups=1, n_genes=30)
    with pytest.raises(InputError, match="at least 3 cells"):
        SCGPCL(a, None)


def test_reloaded_no_finetune_model_gives_the_same_labels(toy, tmp_path):
    m = SCGPCL(toy, 3, random_state=1, finetune=False, **TINY).train(progress=False)
    m.save(tmp_path / "m")
    labels = m.predict()
    again = SCGPCL.load(tmp_path / "m", toy)
    np.testing.assert_array_equal(again.predict(), labels)


def test_save_and_load_errors_name_the_problem(toy, tmp_path):
    m = SCGPCL(toy, 3, random_state=0, **TINY).train(progress=False)
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file"):
        m.save(f)
    m.save(tmp_path / "m")
    (tmp_path / "m" / "model.pt").unlink()
    with pytest.raises(InputError, match="model.pt"):
        SCGPCL.load(tmp_path / "m", toy)


def test_counts_in_raw_are_pointed_to_and_readable(toy, tmp_path):
    logged = toy.copy()
    logged.raw = toy.copy()
    logged.X = sp.csr_matrix(np.log1p(toy.X.toarray()) - 0.5)
    with pytest.raises(InputError, match=r"adata\.raw\.to_adata\(\)"):
        SCGPCL(logged, 3)
    with pytest.raises(InputError, match="--use-raw"):
        check_counts(logged.X, layers=[], has_raw=True)
    path = tmp_path / "logged.h5ad"
    logged.write_h5ad(path)
    back = read_counts(path, use_raw=True)
    np.testing.assert_array_equal(back.X.toarray(), toy.X.toarray())
    assert list(back.obs["cell_type"]) == list(toy.obs["cell_type"])
    toy.write_h5ad(tmp_path / "plain.h5ad")
    with pytest.raises(InputError, match="has no .raw"):
        read_counts(tmp_path / "plain.h5ad", use_raw=True)
    with pytest.raises(InputError, match="pass one"):
        read_counts(path, use_raw=True, layer="counts")
    # the CLI option: clusters the counts in .raw
    out = tmp_path / "out.h5ad"
    assert cli_main(["cluster", str(path), str(out), "-k", "3", "--use-raw", "--quiet",
                     "--pretrain-rounds", "3", "--warmup-rounds", "1", "--finetune-rounds", "2"]) == 0
    assert ad.read_h5ad(out).obs["scgpcl"].notna().all()


def test_markers_and_report_read_files_without_x(toy, tmp_path):
    a = toy.copy()
    tl.cluster(a, n_clusters=3, random_state=0, progress=False, **TINY)
    a.layers["counts"] = a.X.copy()
    a.uns["scgpcl"]["params"]["layer"] = "counts"
    a.X = None
    path = tmp_path / "clustered.h5ad"
    a.write_h5ad(path)
    tsv = tmp_path / "m.tsv"
    assert cli_main(["markers", str(path), "--layer", "counts", "-o", str(tsv), "--quiet"]) == 0
    assert tsv.read_text().count("\n") > 3
    assert cli_main(["markers", str(path), "-o", str(tsv), "--overwrite", "--quiet"]) == 0  # the layer the clustering used


def test_key_added_equal_to_label_key_is_refused(toy):
    with pytest.raises(InputError, match="overwrite the reference labels"):
        tl.cluster(toy.copy(), n_clusters=3, label_key="cell_type", key_added="cell_type", **TINY)


def test_no_labelled_clustered_cell_gives_no_metrics(toy):
    # the only labelled cell has no counts, so it is dropped: no clustered cell has a label
    a = toy.copy()
    x = a.X.toarray()
    x[0] = 0
    a.X = sp.csr_matrix(x)
    partial = np.full(a.n_obs, None, dtype=object)
    partial[0] = "type0"
    a.obs["partial"] = partial
    with pytest.warns(UserWarning, match="missing"):
        tl.cluster(a, n_clusters=3, label_key="partial", random_state=0, progress=False, **TINY)
    assert "metrics" not in a.uns["scgpcl"]
    assert a.obs["scgpcl"].isna().sum() == 1
