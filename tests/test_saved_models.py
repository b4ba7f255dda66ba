"""Models saved by earlier versions still load and give the same results."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np

from scgpcl import SCGPCL

DATA = Path(__file__).parent / "data"


def test_model_saved_by_0_1_0_loads_and_predicts_the_same():
    """tests/data/model_v0.1.0 was saved by scgpcl 0.1.0 (epochs, the full-graph forward in one pass), with
    the labels and representation it predicted. Today's chunked inference must reproduce them."""
    adata = ad.read_h5ad(DATA / "model_v0.1.0_data.h5ad")
    saved = np.load(DATA / "model_v0.1.0_outputs.npz")
    model = SCGPCL.load(DATA / "model_v0.1.0", adata, device="cpu")
    # format 1 counted epochs: read as rounds of one epoch on all cells
    assert model.config.train.round_steps == 0 and model.config.train.sample_cells == 0
    assert model.config.train.pretrain_rounds == 3 and "rounds" in model.stages["pretrain"]
    # saved before target_sum existed: the features keep their median scaling
    assert model.config.preprocess.target_sum == 0
    # to float32 round-off: 0.1.0 computed the genes' means and deviations with float32 sums, today float64
    # (largest difference seen: 3e-4 relative)
    np.testing.assert_allclose(model.get_latent_representation(), saved["latent"], rtol=2e-3, atol=2e-4)
    np.testing.assert_array_equal(model.predict(), saved["labels"])


def test_a_model_saved_with_an_ignored_loss_weight_still_loads(tmp_path):
    """loss_weights={'ins': ...} was ignored before it was refused: a model saved with one loads, without it."""
    import json

    a = ad.AnnData(np.random.default_rng(0).poisson(2, (60, 40)).astype("float32"))
    m = SCGPCL(a, 3, pretrain_rounds=3, warmup_rounds=1, finetune_rounds=1).train(progress=False)
    m.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    saved["config"]["train"]["loss_weights"] = {"ins": 0.0}
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    back = SCGPCL.load(tmp_path / "m", a)
    assert back.config.train.loss_weights == {} and (back.predict() == m.predict()).all()
