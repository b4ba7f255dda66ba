"""k-means on the representation joined with the features' principal components (``kmeans_pca_weight``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from scgpcl import SCGPCL, InputError
from scgpcl.metrics import clustering_metrics
from scgpcl.module import soft_assign
from scgpcl.train._global import SeededKMeans
from scgpcl.train._joined import FeaturePCA, JoinedTarget, cluster_means, joined_space, start_kmeans

from helpers import QUICK, TINY


@pytest.fixture(scope="module")
def built(toy):
    m = SCGPCL(toy, 3, random_state=0, device="cpu", **TINY)
    return m, m.trainer.loader, m.data.dense_features()


def _gram(x):
    """Sign-free comparison of component scores: x x^T does not change when a column flips sign."""
    x = np.asarray(x, dtype=np.float64)
    return x @ x.T


def test_feature_pcs_are_the_pca_of_the_features_in_any_chunking(built):
    _, loader, dense = built
    ref = PCA(10, svd_solver="full").fit_transform(dense.astype(np.float64))
    for chunk in (7, 64, 10_000):
        got = FeaturePCA(loader, None, chunk=chunk, n_pcs=10).transform(None)
        assert got.shape == (loader.n_cells, 10)
        np.testing.assert_allclose(_gram(got), _gram(ref), atol=1e-3 * np.abs(_gram(ref)).max())
    cells = torch.tensor([3, 10, 50, 51, 90, 120, 121, 150, 170, 179])
    sub_pca = FeaturePCA(loader, cells, chunk=4, n_pcs=5)
    sub = sub_pca.transform(cells)
    assert sub_pca.transform(torch.arange(0)).shape == (0, 5)  # a process whose share of the sample is empty
    ref_sub = PCA(5, svd_solver="full").fit_transform(dense[cells.numpy()].astype(np.float64))
    np.testing.assert_allclose(_gram(sub), _gram(ref_sub), atol=1e-3 * np.abs(_gram(ref_sub)).max())


def test_joined_space_gives_each_block_its_weight():
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(5.0, 100.0, size=(40, 8)).astype(np.float32))
    pcs = rng.normal(0.0, 0.01, size=(40, 3))
    x = joined_space(z, pcs, 2.0)
    assert x.shape == (40, 11) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), 0.0, atol=1e-5)
    assert (x[:, :8] ** 2).sum(1).mean() == pytest.approx(1.0, rel=1e-4)
    assert (x[:, 8:] ** 2).sum(1).mean() == pytest.approx(4.0, rel=1e-4)


def _fake_trainer(loader, weight):
    cfg = SimpleNamespace(kmeans_pca_weight=weight, kmeans_n_init=5, kmeans_select="inertia", dec_pca_target=False)

    def sample_feature_pcs():  # as Trainer.sample_feature_pcs, with every cell as the sample
        pca = FeaturePCA(loader, None, chunk=64)
        return pca, pca.transform(None)

    return SimpleNamespace(cfg=cfg, k=3, kmeans=SeededKMeans(0), loader=loader, sample_feature_pcs=sample_feature_pcs)


def test_start_kmeans_follows_the_features_when_the_representation_is_noise(built, toy):
    """A representation without the groups: alone it cannot find them; joined with the features'
    components at a high weight it does, and the DEC centres are the clusters' means in the representation."""
    _, loader, _ = built
    truth = toy.obs["cell_type"].to_numpy()
    z = torch.from_numpy(np.random.default_rng(1).normal(size=(loader.n_cells, 16)).astype(np.float32))
    alone, _ = start_kmeans(_fake_trainer(loader, 0.0), z)
    assert adjusted_rand_score(truth, alone) < 0.2
    joined, centres = start_kmeans(_fake_trainer(loader, 4.0), z)
    assert adjusted_rand_score(truth, joined) > 0.9
    assert centres.shape == (3, 16)
    np.testing.assert_allclose(centres, cluster_means(z, joined, 3), rtol=1e-6)
    np.testing.assert_allclose(centres[0], z.numpy()[joined == 0].mean(0), rtol=1e-5)


def test_joined_target_adds_the_fixed_pca_distances(built, toy):
    """The target's soft assignment: with weight 0 exactly DEC's; otherwise the PCA block's distances to the
    clusters' PCA centres are added, and cells outside the sample get the same scores as inside it."""
    _, loader, _ = built
    truth = toy.obs["cell_type"].to_numpy()
    labels = np.unique(truth, return_inverse=True)[1]
    z = torch.from_numpy(np.random.default_rng(2).normal(size=(loader.n_cells, 8)).astype(np.float32))
    mu = torch.from_numpy(cluster_means(z, labels, 3))
    pca = FeaturePCA(loader, None, chunk=64, n_pcs=10)
    pcs = pca.transform(None)
    off = JoinedTarget(pca, pcs, z, labels, 3, 0.0)
    torch.testing.assert_close(off.soft_assign(z, off.sample, mu, 1.0), soft_assign(z, mu, 1.0))
    on = JoinedTarget(pca, pcs, z, labels, 3, 1.0)
    q = on.soft_assign(z, on.sample, mu, 1.0)
    assert adjusted_rand_score(truth, q.argmax(1).numpy()) > 0.9  # the features hold the groups, z does not
    assert adjusted_rand_score(truth, soft_assign(z, mu, 1.0).argmax(1).numpy()) < 0.5
    cells = torch.tensor([0, 5, 100, 179])
    torch.testing.assert_close(on.rows(cells), on.sample[cells], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("finetune, target", [(False, False), (True, False), (True, True)])
def test_training_with_the_joined_start(toy, monkeypatch, finetune, target):
    calls = []
    original = JoinedTarget.soft_assign

    def spy(self, z, p, mu, alpha):
        calls.append(len(z))
        return original(self, z, p, mu, alpha)

    monkeypatch.setattr(JoinedTarget, "soft_assign", spy)
    opts = dict(QUICK, sample_cells=100) if target else QUICK  # a sample: cells outside it need their PCs
    m = SCGPCL(toy, 3, random_state=0, device="cpu", kmeans_pca_weight=0.5, finetune=finetune,
               dec_pca_target=target, **opts)
    m.train(progress=False)
    assert (m.trainer.joined_target is not None) == target
    rounds = m.summary()["finetune"]["rounds"] if finetune else 0
    # each fine-tuning round's target (and the check before the round that stops): the sample's 100 cells,
    # then the round's cells outside the sample
    assert (calls[0] == 100 and calls.count(100) >= rounds >= 1) if target else calls == []
    labels = m.predict()
    assert len(np.unique(labels)) == 3
    assert clustering_metrics(toy.obs["cell_type"], labels)["ARI"] > 0.9
    if finetune:
        assert m.trainer.module.cluster_centres.shape == (3, 64)


def test_negative_weight_is_refused_before_training(toy):
    with pytest.raises(InputError, match="kmeans_pca_weight"):
        SCGPCL(toy, 3, kmeans_pca_weight=-1.0)


def test_several_processes_accept_the_default():
    from scgpcl._config import SCGPCLConfig, multi_process_problem

    assert SCGPCLConfig().train.kmeans_pca_weight > 0 and multi_process_problem(SCGPCLConfig().train) is None


def test_a_configuration_saved_before_the_option_keeps_the_reference_start():
    from scgpcl._config import SCGPCLConfig

    old = SCGPCLConfig().to_dict()
    for key in ("kmeans_pca_weight", "dec_pca_target"):
        del old["train"][key]
    loaded = SCGPCLConfig.from_dict(old)
    assert loaded.train.kmeans_pca_weight == 0.0 and loaded.train.dec_pca_target is False
    assert SCGPCLConfig.from_dict(SCGPCLConfig().to_dict()).train.kmeans_pca_weight == 0.5
