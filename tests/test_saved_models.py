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


def _saved(tmp_path, finetune: bool = True):
    a = ad.AnnData(np.random.default_rng(0).poisson(2, (60, 40)).astype("float32"))
    m = SCGPCL(a, 3, pretrain_rounds=3, warmup_rounds=1, finetune_rounds=1, finetune=finetune).train(progress=False)
    m.save(tmp_path / "m")
    return a, m


def _edit(folder, change) -> None:
    import json

    saved = json.loads((folder / "config.json").read_text())
    change(saved)
    (folder / "config.json").write_text(json.dumps(saved))


def test_options_an_earlier_version_had_load_when_they_did_nothing_and_are_named_when_they_did(tmp_path):
    """The first version saved preprocess.max_value = None: load() called that file unreadable and said to
    save the model again, which needs the version that no longer exists."""
    import pytest

    from scgpcl import InputError

    a, m = _saved(tmp_path)
    _edit(tmp_path / "m", lambda s: s["config"]["preprocess"].update(max_value=None))
    _edit(tmp_path / "m", lambda s: s["config"]["train"].update(ins_neighbours=0, pretrain_keep="last"))
    assert (SCGPCL.load(tmp_path / "m", a).predict() == m.predict()).all()
    _edit(tmp_path / "m", lambda s: s["config"]["train"].update(ins_neighbours=10))
    with pytest.raises(InputError, match=r"holds a model saved by another scgpcl version that this one cannot load: "
                                         r"it was trained with ins_neighbours=10, an option of an earlier scgpcl "
                                         r"version that this one no longer has. Load it with the version that saved "
                                         r"it, or train again"):
        SCGPCL.load(tmp_path / "m", a)
    _edit(tmp_path / "m", lambda s: s["config"]["train"].update(ins_neighbours=0, bogus=1))
    with pytest.raises(InputError, match=r"another scgpcl version .*unknown TrainConfig option\(s\): \['bogus'\]"):
        SCGPCL.load(tmp_path / "m", a)


def test_a_model_saved_without_fine_tuning_before_its_kmeans_state_was_recorded_says_so(tmp_path):
    """Saved before 2026-12-02 without fine-tuning, a model came back with other labels (ARI 0.28 against its
    own) and no word, and a new save wrote kmeans_calls 0 as if it were known."""
    import json

    import pytest

    a, _ = _saved(tmp_path, finetune=False)
    _edit(tmp_path / "m", lambda s: s.pop("kmeans_calls"))
    with pytest.warns(UserWarning, match="did not record where its k-means random stream stood"):
        back = SCGPCL.load(tmp_path / "m", a)
    back.save(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["kmeans_calls"] is None
    with pytest.warns(UserWarning, match="did not record where its k-means"):
        SCGPCL.load(tmp_path / "again", a)
    import warnings

    (tmp_path / "x").mkdir()
    a2, _ = _saved(tmp_path / "x", finetune=False)
    with warnings.catch_warnings():  # a model that recorded it loads without a word
        warnings.simplefilter("error")
        SCGPCL.load(tmp_path / "x" / "m", a2)


def test_a_model_pickled_before_later_attributes_existed_unpickles_with_their_defaults(tmp_path):
    import pickle

    a, m = _saved(tmp_path)
    state = dict(m.__dict__)
    for name in ("counts_from_raw", "counts_in_raw", "_other_cells", "target_sum_scores", "provisional_k"):
        del state[name]
    old = SCGPCL.__new__(SCGPCL)
    old.__dict__.update(state)
    back = pickle.loads(pickle.dumps(old))
    assert back.counts_from_raw is False and back._other_cells is False
    back.save(tmp_path / "again")  # AttributeError: 'SCGPCL' object has no attribute 'counts_from_raw'
    assert (SCGPCL.load(tmp_path / "again", a).predict() == m.predict()).all()
    del state["_kmeans_calls"]  # pickled before 2026-12-02
    old.__dict__ = dict(state)
    back = pickle.loads(pickle.dumps(old))
    assert back._kmeans_calls == 0 and back._kmeans_calls_unknown
