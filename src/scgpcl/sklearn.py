"""scikit-learn style estimator: ``SCGPCLClustering(n_clusters=8).fit_predict(counts)``.

For pipelines and code that deals in matrices rather than AnnData. The
estimator wraps :class:`scgpcl.SCGPCL` (one implementation): ``fit`` builds an
AnnData around the count matrix, trains the model and keeps its results.

>>> from scgpcl.sklearn import SCGPCLClustering
>>> est = SCGPCLClustering(n_clusters=5, random_state=0)
>>> labels = est.fit_predict(counts)          # cells x genes raw counts
>>> est.embedding_.shape, est.cluster_centers_.shape
((n_cells, 64), (5, 64))
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClusterMixin

from ._config import _RENAMED, PRESETS, SCGPCLConfig
from ._errors import InputError
from ._messages import array_input

__all__ = ["SCGPCLClustering"]

log = logging.getLogger("scgpcl")

_PRESETS = PRESETS


def _config_fields() -> set[str]:
    """Every config option's name, and the earlier names the config still accepts (``pretrain_epochs``)."""
    cfg = SCGPCLConfig()
    names = {f.name for section in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, section.name))}
    return names | set(_RENAMED)


class SCGPCLClustering(ClusterMixin, BaseEstimator):
    """scGPCL clustering of a cells x genes count matrix, with the scikit-learn interface.

    Parameters
    ----------
    n_clusters
        Number of clusters K, or ``None`` (or ``"auto"``) to estimate it; the
        number used ends up in ``n_clusters_``.
    random_state
        Seed: the same ``int`` gives the same labels on the same CPU.
        ``None`` draws a fresh seed at each fit (kept in ``random_state_``); a
        ``numpy.random.RandomState`` or ``Generator`` gives one (each fit draws
        the next seed from it, as scikit-learn's estimators do).
    preset
        ``"default"`` (the recommended settings, :func:`scgpcl.recommended`) or
        ``"faithful"`` (the reference implementation's, :func:`scgpcl.faithful`);
        ``"fast"`` is the default's former name.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    progress
        Show a progress bar per training stage.
    n_runs
        Train this many models at seeds ``random_state``, ``random_state + 1``, ...
        and keep the one whose clusters agree best with the others'
        (:func:`scgpcl.tl.cluster`'s ``n_runs``); ``runs_`` records them. Use 3 or
        more: two runs tie, and the first is kept.
    **overrides
        Any config field by name, e.g. ``pretrain_rounds=50, lr=1e-3``. They
        are estimator parameters like the others: ``get_params`` returns them
        and ``set_params`` / :func:`sklearn.base.clone` keep them.

    Attributes
    ----------
    labels_ : ndarray of shape (n_cells,)
        Cluster index per cell (``0..K-1``); ``-1`` for cells without any
        count in the genes used, which are not clustered.
    embedding_ : ndarray of shape (n_cells, d)
        The learned representation (``NaN`` rows for the cells labelled ``-1``).
    cluster_centers_ : ndarray of shape (K, d)
        Cluster centres in the embedding space: the fine-tuned DEC centres
        (each cell's label is its most probable centre), or the mean embedding
        of each cluster when fine-tuning is switched off (``finetune=False``).
    n_clusters_ : int
        The number of clusters used.
    auto_k_ : dict or None
        With ``n_clusters=None``: how K was estimated (``k``, ``method``, ``estimates``: each criterion's
        own K, ``candidates``, ``sample_size``, ``curve``, ``seconds``), as in ``uns['scgpcl']['auto_k']``;
        else None.
    random_state_ : int
        The seed used (the one drawn when ``random_state=None``).
    n_features_in_ : int
        Number of genes in the matrix given to ``fit``.
    feature_names_in_ : ndarray of str
        Gene names, when ``fit`` was given a DataFrame with string columns.
    model_ : scgpcl.SCGPCL or None
        The trained model (``model_.history``, ``model_.summary()``, ``model_.save(dir)``). It holds the
        training data, the minibatch loader and the optimizer's state, several times the input's size, so a
        pickled estimator (``pickle``, ``joblib.dump``, a ``GridSearchCV`` worker) leaves it out: unpickled,
        ``model_`` is None and the other fitted attributes are kept. To keep the network, ``model_.save(dir)``
        before pickling, and :meth:`scgpcl.SCGPCL.load` it with the data.
    runs_ : dict or None
        With ``n_runs`` > 1: ``seeds``, ``chosen_seed``, ``ari`` (the runs' pairwise ARI),
        ``mean_ari``, ``n_clusters`` (each run's K) and ``agreement`` (per cell, the share of the other
        runs that agree); else None.

    Notes
    -----
    The estimator clusters the cells it is fitted on, as scikit-learn's ``AgglomerativeClustering`` and
    ``DBSCAN`` do: it has ``fit_predict`` but no ``predict`` for new cells. So a search that scores
    held-out data (``GridSearchCV`` with a scorer) cannot score it: every fold scores NaN. To compare
    settings, loop over :class:`sklearn.model_selection.ParameterGrid` and score ``fit_predict`` on the same
    cells.

    Examples
    --------
    >>> est = SCGPCLClustering(n_clusters=3, pretrain_rounds=30)
    >>> est.fit(counts).labels_
    """

    def __init__(
        self,
        n_clusters: int | str | None = 8,
        *,
        random_state: int | np.random.RandomState | np.random.Generator | None = 0,
        preset: str = "default",
        device: str = "auto",
        progress: bool = False,
        n_runs: int = 1,
        **overrides: Any,
    ):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.preset = preset
        self.device = device
        self.progress = progress
        self.n_runs = n_runs
        self._override_names = tuple(sorted(overrides))
        for name, value in overrides.items():
            setattr(self, name, value)

    # ----------------------------------------------------- sklearn plumbing
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The estimator's parameters, including the config options given as keyword arguments.

        Parameters
        ----------
        deep
            Passed to scikit-learn's ``BaseEstimator.get_params``.
        """
        params = super().get_params(deep=deep)
        for name in self._override_names:
            params[name] = getattr(self, name)
        return params

    def set_params(self, **params: Any) -> SCGPCLClustering:
        """Set estimator parameters or config options by name; returns ``self``.

        A name that is neither an estimator parameter nor a config option of
        scgpcl raises ``ValueError``.
        """
        own = set(self._get_param_names())
        fields = _config_fields()
        for name in params:
            if name not in own and name not in fields:
                raise ValueError(
                    f"invalid parameter {name!r} for {type(self).__name__}: not an estimator parameter "
                    f"({', '.join(sorted(own))}) nor a config option of scgpcl"
                )
        for name, value in params.items():
            setattr(self, name, value)
            if name not in own:
                # an option set under one of its two names (pretrain_epochs, pretrain_rounds) drops the other
                option = _RENAMED.get(name, name)
                kept = [n for n in self._override_names if _RENAMED.get(n, n) != option]
                self._override_names = tuple(sorted((*kept, name)))
        return self

    def _overrides(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._override_names}

    def _config(self) -> SCGPCLConfig:
        if self.preset not in _PRESETS:
            raise InputError(f"unknown preset {self.preset!r}; choose one of {', '.join(_PRESETS)}")
        try:
            return _PRESETS[self.preset]().override(**self._overrides())
        except ValueError as e:
            raise InputError(str(e)) from None

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None) -> SCGPCLClustering:
        """Train scGPCL on ``X`` (cells x genes raw counts) and store the results.

        Parameters
        ----------
        X
            A NumPy array, a SciPy sparse matrix or a pandas DataFrame of
            non-negative integer counts, one row per cell.
        y
            Ignored (present for API consistency).

        Returns
        -------
        self
        """
        from anndata import AnnData

        from .model import SCGPCL
        from .model._runs import train_runs

        config = self._config()
        seed = _seed_from(self.random_state)
        with array_input():  # input errors speak of the matrix, not of the AnnData it was wrapped in
            counts, genes = _as_counts(X)
            adata = AnnData(counts)
            adata.var_names = genes if genes is not None else [f"gene_{j}" for j in range(counts.shape[1])]
            adata.obs_names = [f"cell_{i}" for i in range(counts.shape[0])]
            model, self.runs_ = train_runs(
                lambda seed: SCGPCL(adata, self.n_clusters, config=config, random_state=seed, device=self.device),
                seed, self.n_runs, progress=self.progress)

        self.model_ = model
        self.labels_ = model.predict()
        self.embedding_ = model.get_latent_representation()
        self.n_clusters_ = int(model.n_clusters)
        self.auto_k_ = model.auto_k
        self.random_state_ = model.random_state
        self.cluster_centers_ = _centres(model, self.embedding_, self.labels_, self.n_clusters_)
        self.n_features_in_ = int(counts.shape[1])
        if genes is not None:
            self.feature_names_in_ = np.asarray(genes, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return self

    def fit_predict(self, X, y=None) -> np.ndarray:
        """Train on ``X`` and return ``labels_`` (``-1`` for cells without counts).

        Parameters
        ----------
        X
            Raw counts, one row per cell, as for :meth:`fit`.
        y
            Ignored (present for API consistency).
        """
        return self.fit(X, y).labels_

    def __getstate__(self) -> dict[str, Any]:
        # model_ holds the training data, the loader and the optimizer (40 MB for 3,000 cells x 600 genes, the
        # fitted arrays 0.8 MB): a pickle keeps the fitted arrays, as scikit-learn's estimators pickle theirs
        state = super().__getstate__()
        if state.get("model_") is not None:
            state = {**state, "model_": None}
        return state

    def __copy__(self) -> SCGPCLClustering:
        # copy.copy is not a pickle either: it keeps model_ (shared, as a shallow copy shares its attributes)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo: dict) -> SCGPCLClustering:
        # a deep copy is not a pickle: it keeps a copy of model_ (__getstate__ would drop it)
        import copy

        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.input_tags.positive_only = True  # raw counts: negative values are refused
        tags.non_deterministic = False
        return tags


def _seed_from(random_state: Any) -> Any:
    """An int seed from a NumPy ``RandomState`` or ``Generator`` (drawn: the next fit draws another); else as given."""
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(0, 2**32, dtype=np.uint64))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**32))
    return random_state  # None, an int, or a bad value that the model's check names


def _as_counts(X) -> tuple[Any, list[str] | None]:
    """Counts as a CSR or dense float32 matrix, plus gene names from a DataFrame's columns."""
    from .data._checks import boolean_matrix_message

    genes = None
    if type(X).__name__ == "AnnData":
        raise InputError("fit takes a cells x genes matrix, not an AnnData: pass adata.X (or the counts layer), "
                         "or use scgpcl.tl.cluster(adata, ...) / scgpcl.SCGPCL(adata, ...), which keep obs and var")
    if isinstance(X, np.ma.MaskedArray):
        raise InputError("X is a masked array: its mask would be ignored and the masked values taken as counts; "
                         "pass X.filled(0) if masked means not detected")
    if hasattr(X, "to_memory") and type(X).__module__.startswith("anndata"):  # a backed AnnData's X (on disk)
        X = X.to_memory()
    if isinstance(X, pd.DataFrame):
        if any(pd.api.types.is_bool_dtype(t) for t in X.dtypes):
            raise InputError(boolean_matrix_message("X"))  # before the cast to float32
        if all(isinstance(c, str) for c in X.columns):
            genes = [str(c) for c in X.columns]
            if len(set(genes)) != len(genes):
                raise InputError("the DataFrame's column names (genes) are not unique")
        numeric = all(pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_complex_dtype(t) for t in X.dtypes)
        # pandas' nullable integers (Int64) would become objects: as floats, a missing value is a NaN the checks name
        X = X.to_numpy(dtype=np.float64, na_value=np.nan) if numeric and len(X.columns) else X.to_numpy()
    if sp.issparse(X):
        if X.ndim != 2:
            raise InputError(f"X must be a 2-d cells x genes matrix, got shape {X.shape}")
        if np.dtype(X.dtype).kind == "b":
            raise InputError(boolean_matrix_message("X"))  # before the cast to float32
        return sp.csr_matrix(X, dtype=np.float32), genes
    try:
        arr = np.asarray(X)
    except Exception as e:  # e.g. ragged lists
        raise InputError(f"X must be a cells x genes count matrix (array or sparse matrix): {e}") from None
    if arr.ndim != 2:
        raise InputError(f"X must be a 2-d cells x genes matrix, got {arr.ndim} dimension(s)")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"X must hold real numbers (counts), got values of type {arr.dtype}")
    if arr.dtype.kind == "b":
        raise InputError(boolean_matrix_message("X"))  # before the cast to float32
    return np.ascontiguousarray(arr, dtype=np.float32), genes


def _centres(model, embedding: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    centres = getattr(model.module, "cluster_centres", None)
    if centres is not None:
        return centres.detach().cpu().numpy().astype(np.float32, copy=True)
    out = np.full((k, embedding.shape[1]), np.nan, dtype=np.float32)
    for c in range(k):
        rows = labels == c
        if rows.any():
            out[c] = embedding[rows].mean(axis=0)
    return out
