"""The scikit-learn style estimator: shapes, determinism, sklearn parameter plumbing."""

from __future__ import annotations

import anndata
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from scgpcl import InputError
from scgpcl.metrics import clustering_metrics
from scgpcl.sklearn import SCGPCLClustering

from helpers import QUICK, toy_counts


@pytest.fixture(scope="module")
def toy():
    a = toy_counts()
    return a.X.tocsr(), a.obs["cell_type"].to_numpy()


@pytest.fixture(scope="module")
def fitted(toy):
    x, _ = toy
    return SCGPCLClustering(n_clusters=3, random_state=0, **QUICK).fit(x)


def test_fit_attributes(fitted, toy):
    x, truth = toy
    n, d = x.shape[0], fitted.embedding_.shape[1]
    assert fitted.labels_.shape == (n,) and fitted.labels_.dtype.kind == "i"
    assert set(np.unique(fitted.labels_)) <= {0, 1, 2}
    assert fitted.embedding_.shape == (n, d) and d == 64
    assert fitted.cluster_centers_.shape == (3, d)
    assert fitted.n_clusters_ == 3 and fitted.n_features_in_ == x.shape[1] and fitted.random_state_ == fitted.random_state
    assert fitted.auto_k_ is None  # K was given
    assert clustering_metrics(truth, fitted.labels_)["ARI"] > 0.9
    # each centre sits in its cluster's part of the embedding: nearest centre of a cluster's mean is its own
    for c in range(3):
        mean = fitted.embedding_[fitted.labels_ == c].mean(axis=0)
        assert np.argmin(((fitted.cluster_centers_ - mean) ** 2).sum(axis=1)) == c


def test_same_seed_same_labels_dense_and_sparse(fitted, toy):
    x, _ = toy
    again = SCGPCLClustering(n_clusters=3, random_state=0, **QUICK).fit_predict(x.toarray())
    np.testing.assert_array_equal(again, fitted.labels_)


def test_params_roundtrip_and_clone():
    est = SCGPCLClustering(n_clusters=4, preset="fast", pretrain_rounds=7)
    params = est.get_params()
    assert params["n_clusters"] == 4 and params["preset"] == "fast" and params["pretrain_rounds"] == 7
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    est.set_params(n_clusters=5, lr=0.01)
    assert est.get_params()["n_clusters"] == 5 and est.get_params()["lr"] == 0.01
    assert "lr=0.01" in repr(est) and "pretrain_rounds=7" in repr(est)
    with pytest.raises(ValueError, match="no_such_option"):
        est.set_params(no_such_option=1)


def test_estimated_k_is_an_attribute(toy):
    x, _ = toy
    est = SCGPCLClustering(n_clusters=None, random_state=0, **{**QUICK, "pretrain_rounds": 3, "warmup_rounds": 1,
                                                                "finetune_rounds": 1}).fit(x)
    assert est.auto_k_["k"] == est.n_clusters_ and est.auto_k_["method"] == "consensus"
    assert set(est.auto_k_["estimates"]) == {"eigengap", "leiden_stability", "leiden_modularity"}


def test_dataframe_gives_gene_names(toy):
    x, _ = toy
    df = pd.DataFrame(x.toarray(), columns=[f"G{j}" for j in range(x.shape[1])])
    est = SCGPCLClustering(n_clusters=3, random_state=0, **{**QUICK, "pretrain_rounds": 2, "warmup_rounds": 1,
                                                             "finetune_rounds": 1}).fit(df)
    assert list(est.feature_names_in_[:2]) == ["G0", "G1"]
    assert est.model_.data.gene_names[0].startswith("G")


def test_input_errors_speak_of_the_matrix_not_of_an_anndata():
    # a NumPy user was told "this data has no layers and no .raw to pick from"
    with pytest.raises(InputError) as err:
        SCGPCLClustering(n_clusters=2).fit(-np.ones((30, 20)))
    assert "Go back to the raw count matrix" in str(err.value) and "layers" not in str(err.value)
    from scgpcl.data._checks import check_counts  # an AnnData user still hears why no layer is proposed
    with pytest.raises(InputError, match=r"no layers and no \.raw"):
        check_counts(-np.ones((30, 20)), layers=[], has_raw=False)


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (np.ones(10), {}, "2-d"),
        (-np.ones((30, 20)), {}, "negative"),
        (np.ones((30, 20)), {"preset": "nope"}, "preset"),
        (np.ones((30, 20)), {"no_such_option": 3}, "no_such_option"),
        (np.ones((30, 20)), {"random_state": -3}, "not a seed"),
    ],
)
def test_bad_input_raises_input_error(x, kwargs, message):
    with pytest.raises(InputError, match=message):
        SCGPCLClustering(n_clusters=3, **kwargs).fit(x)


def test_an_earlier_option_name_survives_clone_and_set_params():
    # SCGPCLClustering(3, pretrain_epochs=4) was accepted, but clone(e).set_params(pretrain_epochs=5), what
    # GridSearchCV does, raised "not ... a config option of scgpcl"
    e = SCGPCLClustering(3, pretrain_epochs=4)
    assert e._config().train.pretrain_rounds == 4
    tuned = clone(e).set_params(pretrain_epochs=5)
    assert tuned.get_params()["pretrain_epochs"] == 5 and tuned._config().train.pretrain_rounds == 5
    with pytest.raises(ValueError, match="invalid parameter 'pretrain_epoch'"):
        clone(e).set_params(pretrain_epoch=5)
    # the option set under one name, then the other: the last one set counts, whichever name it used
    both = SCGPCLClustering(3, warmup_rounds=2).set_params(warmup_epochs=1)
    assert both._config().train.warmup_rounds == 1 and "warmup_rounds" not in both.get_params()
    back = both.set_params(warmup_rounds=3)
    assert back._config().train.warmup_rounds == 3 and "warmup_epochs" not in back.get_params()


def test_inputs_fit_takes_for_something_else_are_named():
    """Found by fuzzing: an AnnData, a masked array, pandas' nullable integers."""
    rng = np.random.default_rng(0)
    x = rng.poisson(2.0, (30, 20)).astype(np.float64)
    est = SCGPCLClustering(n_clusters=3)
    with pytest.raises(InputError, match=r"fit takes a cells x genes matrix, not an AnnData: pass adata\.X"):
        est.fit(anndata.AnnData(x))
    with pytest.raises(InputError, match=r"X is a masked array: its mask would be ignored.*X\.filled\(0\)"):
        est.fit(np.ma.masked_array(x, mask=x > 2))
    frame = pd.DataFrame(x.astype(np.int64), columns=[f"g{j}" for j in range(20)]).astype("Int64")
    frame.iloc[0, 0] = pd.NA
    with pytest.raises(InputError, match=r"contains 1 NaN"):  # a number type, and its missing value named as such
        est.fit(frame)
    with pytest.raises(InputError, match=r"X must hold real numbers \(counts\), got values of type complex128"):
        est.fit(x.astype(complex))


def test_a_pickle_keeps_the_fitted_arrays_not_the_training_state(fitted):
    # model_ held the training data, the loader and the optimizer: a pickled estimator (joblib.dump, a
    # GridSearchCV worker) was several times the input's size
    import copy
    import pickle

    blob = pickle.dumps(fitted)
    with_model = len(pickle.dumps(fitted.model_))
    back = pickle.loads(blob)
    assert back.model_ is None and fitted.model_ is not None  # the fitted estimator itself keeps it
    assert len(blob) < with_model / 2
    for name in ("labels_", "embedding_", "cluster_centers_"):
        np.testing.assert_array_equal(getattr(back, name), getattr(fitted, name))
    assert back.n_clusters_ == fitted.n_clusters_ and back.get_params() == fitted.get_params()
    assert copy.copy(fitted).model_ is fitted.model_  # nor is a shallow copy: the model is shared
    twin = copy.deepcopy(fitted)  # a deep copy is not a pickle: the model is copied with it
    assert twin.model_ is not None and twin.model_ is not fitted.model_
    np.testing.assert_array_equal(twin.model_.predict(), fitted.labels_)


def test_random_state_takes_a_numpy_random_state_as_sklearn_does(fitted, toy):
    x, _ = toy
    rs = np.random.RandomState(5)
    expected = [int(s) for s in np.random.RandomState(5).randint(0, 2**32, size=2, dtype=np.uint64)]
    est = SCGPCLClustering(n_clusters=3, random_state=rs, **QUICK)
    est.fit(x)
    assert est.random_state_ == expected[0] and est.random_state is rs  # the parameter is left as given
    np.testing.assert_array_equal(est.labels_, SCGPCLClustering(n_clusters=3, random_state=expected[0],
                                                                **QUICK).fit_predict(x))
    est.fit(x)  # the next fit draws the next seed
    assert est.random_state_ == expected[1]
    gen = SCGPCLClustering(n_clusters=3, random_state=np.random.default_rng(1), **QUICK).fit(x)
    assert gen.random_state_ == int(np.random.default_rng(1).integers(0, 2**32))  # drawn from the Generator


def test_a_backed_matrix_is_read_and_a_boolean_one_refused(toy, tmp_path):
    # a backed AnnData's X (on disk) was read by numpy as a 0-d array: "got 0 dimension(s)"; a boolean matrix
    # trained on 0/1 without a word, though scgpcl.tl.cluster refuses it
    import anndata as ad
    import pandas as pd

    x, _ = toy
    ad.AnnData(x).write_h5ad(tmp_path / "b.h5ad")
    backed = ad.read_h5ad(tmp_path / "b.h5ad", backed="r")
    try:
        labels = SCGPCLClustering(n_clusters=3, random_state=0, **QUICK).fit_predict(backed.X)
    finally:
        backed.file.close()
    np.testing.assert_array_equal(labels, SCGPCLClustering(n_clusters=3, random_state=0, **QUICK).fit_predict(x))
    for detected in (x > 0, (x > 0).toarray(), pd.DataFrame((x > 0).toarray())):
        with pytest.raises(InputError, match=r"^X holds True/False values .* Pass the count matrix this was made from$"):
            SCGPCLClustering(n_clusters=3).fit(detected)
