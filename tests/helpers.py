"""Shared test data and settings (imported by the tests; fixtures are in conftest.py)."""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import scgpcl

#: for tests that write a .zarr store: zarr comes with anndata 0.12 and later, not with 0.11
needs_zarr = pytest.mark.skipif(importlib.util.find_spec("zarr") is None,
                                reason="zarr is not installed (anndata >= 0.12 installs it; with anndata 0.11: "
                                       "pip install 'zarr<3')")
SHARED = Path(os.environ.get("SCGPCL_SHARED", Path(__file__).resolve().parents[2] / "shared"))

# a short schedule: every stage runs (warm-up, prototypes, convergence check, DEC); rounds of one epoch
# (min_round_steps=1: the test data have one minibatch, and the default's five steps per round would
# make every test five times slower without testing more)
QUICK = dict(lr=1e-3, pretrain_rounds=12, warmup_rounds=4, finetune_rounds=10, kmeans_n_init=5, kmeans_n_init_round=2,
             convergence_patience=0, min_round_steps=1)
#: the shortest schedule that still runs every stage once
TINY = dict(QUICK, pretrain_rounds=3, warmup_rounds=1, finetune_rounds=2)
#: TINY as command-line options
TINY_ARGS = ["--lr", str(TINY["lr"]), "--pretrain-rounds", "3", "--warmup-rounds", "1", "--finetune-rounds", "2",
             "--min-round-steps", "1"]


def toy_counts(n_per=60, n_groups=3, n_genes=150, seed=0) -> ad.AnnData:
    """Negative-binomial counts with group-specific up-regulated genes."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 2.0, size=n_genes)
    rows, labels = [], []
    for g in range(n_groups):
        mean = base.copy()
        de = rng.choice(n_genes, 25, replace=False)
        mean[de] *= 6.0
        lib = rng.lognormal(0.0, 0.3, size=(n_per, 1))
        mu = mean * lib
        r = 2.0
        rows.append(rng.negative_binomial(r, r / (r + mu)))
        labels += [f"type{g}"] * n_per
    x = sp.csr_matrix(np.vstack(rows).astype(np.float32))
    a = ad.AnnData(x)
    a.var_names = [f"g{i}" for i in range(n_genes)]
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.obs["cell_type"] = labels
    return a


@functools.lru_cache(maxsize=1)
def _clustered() -> ad.AnnData:
    """Toy data (3 groups) clustered once per test session; callers get copies."""
    a = toy_counts()
    scgpcl.tl.cluster(a, n_clusters=3, label_key="cell_type", progress=False, **QUICK)
    return a


def clustered() -> ad.AnnData:
    return _clustered().copy()


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scgpcl: error:"), err
    for w in words:
        assert w in err[0], err[0]


def write_10x_mtx(folder, counts, cells, genes, *, prefix: str = "") -> None:
    """10x Cell Ranger v3 matrix folder: gzipped mtx (genes x cells) and tsv files."""
    folder.mkdir(parents=True, exist_ok=True)
    with gzip.open(folder / f"{prefix}matrix.mtx.gz", "wb") as handle:
        scipy.io.mmwrite(handle, sp.coo_matrix(counts.T), field="integer")
    features = "".join(f"ENSG{j:05d}\t{g}\tGene Expression\n" for j, g in enumerate(genes))
    with gzip.open(folder / f"{prefix}features.tsv.gz", "wt") as handle:
        handle.write(features)
    with gzip.open(folder / f"{prefix}barcodes.tsv.gz", "wt") as handle:
        handle.write("".join(f"{c}\n" for c in cells))
