"""benchmarks/auto_k.py warmup and benchmarks/auto_k_rules.py: the saved input and the recomputed criteria."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from scgpcl import SCGPCL
from scgpcl.train._auto_k import consensus_k, eigengap_k, estimate_k, leiden_modularity_k, leiden_stability_k

from helpers import toy_counts

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
pytest.importorskip("igraph", reason="the Leiden criteria need igraph")


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rules_recompute_the_package_criteria(tmp_path):
    """The rules named after the package's criteria give the K the package's own functions give."""
    rules = _load("auto_k_rules")
    z, y = make_blobs(400, n_features=16, centers=5, cluster_std=2.5, center_box=(-8, 8), random_state=3)
    z = z.astype(np.float32)
    emb = tmp_path / "emb"
    emb.mkdir()
    np.savez_compressed(emb / "blobs_s2.npz", z=z, labels=y.astype(str), k=5)
    out = tmp_path / "scores.jsonl"
    rules.score(argparse.Namespace(emb_dir=str(emb), out=str(out), pca_weight=0.0))
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (rec["dataset"], rec["seed"], rec["k_true"]) == ("blobs", 2, 5)
    for name, fn in [("consensus", consensus_k), ("eigengap", eigengap_k), ("leiden_modularity", leiden_modularity_k),
                     ("leiden_stability", leiden_stability_k)]:
        assert rules.RULES[name](rec) == fn(z, seed=2).k, name
    # scoring again skips what is already there
    rules.score(argparse.Namespace(emb_dir=str(emb), out=str(out), pca_weight=0.0))
    assert len(out.read_text().splitlines()) == 1


def test_scores_on_the_joined_space_use_the_saved_components(tmp_path):
    """``--pca-weight`` scores ``joined_space(z, pcs, w)``, the space the default k-means start uses."""
    from scgpcl.train._joined import joined_space

    rules = _load("auto_k_rules")
    z, y = make_blobs(300, n_features=8, centers=2, cluster_std=1.0, random_state=0)  # z sees 2 groups
    pcs, _ = make_blobs(300, n_features=5, centers=6, cluster_std=0.3, random_state=1)  # the PCs see 6
    emb = tmp_path / "emb"
    emb.mkdir()
    np.savez_compressed(emb / "two_s0.npz", z=z.astype(np.float32), pcs=pcs, labels=y.astype(str), k=2)
    out = tmp_path / "joined.jsonl"
    rules.score(argparse.Namespace(emb_dir=str(emb), out=str(out), pca_weight=2.0))
    (rec,) = [json.loads(line) for line in out.read_text().splitlines()]
    joined = joined_space(torch.from_numpy(z.astype(np.float32)), pcs, 2.0)
    assert rec["pca_weight"] == 2.0
    assert rules.RULES["eigengap"](rec) == eigengap_k(joined, seed=0).k
    assert rules.RULES["eigengap"](rec) != eigengap_k(z.astype(np.float32), seed=0).k


def test_within_factor_counts_every_seed():
    rules = _load("auto_k_rules")
    recs = [{"seed": s, "k_true": 10, "kmeans_ari": {"15": 0.5, "16": 0.4, "10": 0.9}} for s in range(2)]
    ks = iter([15, 16])
    per = rules._per_dataset(lambda r: next(ks), recs)
    assert per["ks"] == [15, 16]
    assert not per["all_within"] and per["frac"] == 0.5  # 15 is 1.5x, 16 is not
    assert per["ari"] == pytest.approx(0.45) and per["ari_true"] == pytest.approx(0.9)
    assert per["logerr"] == pytest.approx(np.mean([np.log(1.5), np.log(1.6)]))


def test_warmup_saves_what_the_package_estimates_k_on(tmp_path, monkeypatch):
    """The saved representation is exactly the input of the package's estimate of K (its curve matches)."""
    auto_k = _load("auto_k")
    a = toy_counts()
    monkeypatch.setattr(auto_k, "load", lambda name: (a.copy(), 3))
    threads = torch.get_num_threads()
    monkeypatch.setenv("SCGPCL_THREADS", "1")
    try:
        auto_k.warmup(argparse.Namespace(emb_dir=str(tmp_path), datasets=["toy"], seed=1, sim=False))
        # the package's own run with the warm-up's thread count: another count changes the last bits of the
        # sums, which training amplifies (docs/usage.md, "Same seed, same labels?")
        torch.set_num_threads(1)
        m = SCGPCL(a.copy(), None, random_state=1, device="cpu")
        m.train(progress=False)
    finally:
        torch.set_num_threads(threads)
    d = np.load(tmp_path / "toy_s1.npz", allow_pickle=True)
    assert d["z"].shape[0] == a.n_obs and int(d["k"]) == 3
    assert d["pcs"].shape[0] == a.n_obs and 1 <= d["pcs"].shape[1] <= 50  # the features' PCs of the same cells
    assert list(d["labels"]) == list(a.obs["cell_type"])
    ours = estimate_k(d["z"], m.config.train.auto_k_method, k_max=m.config.train.auto_k_max, seed=1)
    assert ours.k == m.auto_k["k"]
    for key, values in m.auto_k["curve"].items():
        np.testing.assert_allclose(ours.curve[key], values, err_msg=key)
