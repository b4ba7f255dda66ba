"""Figures of a clustering run. Each takes ``adata`` first and returns a Figure.

Figures are built with :class:`matplotlib.figure.Figure` directly, not through
``pyplot``: nothing is registered with a GUI backend, nothing is shown and no
figure accumulates in pyplot's memory unless ``show=True`` asks for it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._errors import InputError
from .._messages import arg, listing, still_working
from .._threads import torch_threads_kept
from ..data._checks import check_count_option
from ..metrics import clustering_metrics, has_label
from ..tl._markers import cluster_order, lognorm_by_cluster, rank_markers
from ..train import STOP_LABELS

__all__ = ["umap", "training_curves", "contingency", "marker_dotplot", "cluster_sizes", "batch_composition", "palette",
           "matched_palettes"]

_TERM_NAMES = {
    "loss": "total loss (weighted sum of the terms)",
    "zinb": "ZINB reconstruction",
    "mse": "MSE reconstruction",
    "ins": "instance contrastive",
    "proto": "prototypical contrastive",
    "cluster": "DEC clustering (KL)",
}
_TERM_COLOURS = {"loss": "#222222", "zinb": "#1f77b4", "mse": "#1f77b4", "ins": "#ff7f0e", "proto": "#2ca02c",
                 "cluster": "#d62728"}
_NOT_LOSSES = {"epoch", "round", "steps", "ari_prev", "delta_label", "lr"}
_STAGE_NAMES = {"pretrain": "pre-training", "finetune": "fine-tuning"}


# ------------------------------------------------------------------ helpers
def _new_figure(figsize: tuple[float, float], show: bool) -> Figure:
    if show:
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize, layout="constrained")
    return Figure(figsize=figsize, layout="constrained")


def _figure_and_axes(ax: Axes | None, figsize: tuple[float, float], show: bool) -> tuple[Figure, Axes]:
    """A new figure with one axes, or the figure of the ``ax`` the caller gave (scanpy's ``ax=``)."""
    if ax is None:
        fig = _new_figure(figsize, show)
        return fig, fig.add_subplot()
    return ax.figure, ax


def _finish(fig: Figure, show: bool) -> Figure | None:
    if show:
        import matplotlib.pyplot as plt

        plt.show()
        return None
    while getattr(fig, "figure", fig) is not fig:  # an ax= in a SubFigure: the Figure that can be saved
        fig = fig.figure
    return fig


def _run_first() -> str:
    return arg("run scgpcl.tl.cluster first, or pass the key= it was stored under",
               "cluster with 'scgpcl cluster' first, or pass the --key it was stored under")


def _check_obs(adata: AnnData, column: str, what: str) -> None:
    if column not in adata.obs.columns:
        cols = listing(list(adata.obs.columns))
        hint = f" ({_run_first()})" if what == "clusters" else ""
        raise InputError(f"no {what} in obs[{column!r}]{hint}; obs columns: {cols}")


def _uns(adata: AnnData, key: str) -> dict:
    info = adata.uns.get(key)
    if not isinstance(info, dict):
        raise InputError(f"no scgpcl record in uns[{key!r}]: {_run_first()}")
    return info


def _readable(colour: str) -> bool:
    """Whether a colour is neither near-white, near-black nor grey.

    Such a colour is told apart from the white background, from other dark shades and from the grey of cells
    without a cluster or label.
    """
    import colorsys

    from matplotlib.colors import to_rgb

    rgb = to_rgb(colour)
    _, lightness, saturation = colorsys.rgb_to_hls(*rgb)
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb]
    luminance = 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]
    return 0.2 <= lightness <= 0.82 and saturation >= 0.25 and luminance <= 0.8


def _default_colours(n: int) -> list[str]:
    """Scanpy's default palettes, so a cluster has the colour ``sc.pl.umap`` gives it up to 20 categories.

    Up to 20 categories, scanpy's ``default_20``: no grey (the colour of cells without a cluster or label) and
    no light/dark pairs next to each other, which matplotlib's ``tab20`` has (clusters 14 and 15 were two greys
    in a 16-cluster report, one nearly the missing values' colour). Above 20, the colours of scanpy's
    ``default_28`` and then ``default_102`` that are readable (:func:`_readable`): those palettes hold greys
    (``default_28``'s cluster 25 looked unclustered), pastels near white, pure yellow and near-blacks (cluster
    31 of 60 was a white gap in a stacked bar). 86 colours; more categories repeat them.
    """
    from scanpy.plotting import palettes

    if n <= 20:
        return list(palettes.default_20[:n])
    pool = list(dict.fromkeys(c for c in [*palettes.default_28, *palettes.default_102] if _readable(c)))
    return [pool[i % len(pool)] for i in range(n)]


def palette(adata: AnnData, column: str) -> dict[str, str]:
    """Colour per category of ``obs[column]``: scanpy's ``uns[column + '_colors']`` when it fits, else a default.

    The default is scanpy's: its 20-, 28- or 102-colour palette, as
    ``sc.pl.umap`` would colour the categories.

    Parameters
    ----------
    adata
        The data; ``uns[column + '_colors']`` is used when it has one colour per category.
    column
        An ``obs`` column: its categories in order (when categorical), else its values in cluster order.

    Returns
    -------
    dict
        Category (as a string) -> colour (a hex string, or as stored in ``uns``).
    """
    values = adata.obs[column]
    if isinstance(values.dtype, pd.CategoricalDtype):
        cats = [str(c) for c in values.cat.categories]
    else:
        cats = cluster_order(values)
    stored = adata.uns.get(f"{column}_colors")
    if stored is not None and len(stored) == len(cats):
        return dict(zip(cats, map(str, stored), strict=True))
    return dict(zip(cats, _default_colours(len(cats)), strict=True))


def _cluster_label_matching(adata: AnnData, key: str, label_key: str) -> dict[str, str | None]:
    """Each cluster's Hungarian-matched reference label (:func:`scgpcl.metrics.matched_labels`), on cells with both.

    A pair that shares no cell counts as unmatched (a colour or outline would tie unrelated cells together).
    """
    from ..metrics import matched_labels

    clusters, labels = adata.obs[key], adata.obs[label_key]
    ok = clusters.notna().to_numpy() & has_label(labels)
    if not ok.any():
        return {}
    return matched_labels(labels[ok].astype(str).to_numpy(), clusters[ok].astype(str).to_numpy(), overlapping=True)


def matched_palettes(adata: AnnData, key: str, label_key: str) -> tuple[dict[str, str], dict[str, str]]:
    """Colours of the clusters and of the reference labels, matched pairs alike.

    The clusters keep their colours (:func:`palette`); each reference label
    that the Hungarian matching pairs with a cluster it shares cells with (the
    matching of the CA metric and of :func:`contingency`'s outlines) takes that
    cluster's colour, and unmatched labels get colours no cluster uses. So a cluster and the
    cell type it stands for look alike in both UMAP panels and in the bars of
    :func:`cluster_sizes`.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    key
        The clusters' ``obs`` column.
    label_key
        The reference labels' ``obs`` column.

    Returns
    -------
    tuple of dict
        ``(cluster colours, label colours)``, each category -> colour.
    """
    cluster_colours = palette(adata, key)
    label_names = palette(adata, label_key)  # the labels, in their order
    label_colours: dict[str, str] = {}
    for cluster, label in _cluster_label_matching(adata, key, label_key).items():
        if label is not None and label in label_names and cluster in cluster_colours:
            label_colours[label] = cluster_colours[cluster]
    unmatched = [lab for lab in label_names if lab not in label_colours]
    if unmatched:
        used = {c.lower() for c in cluster_colours.values()}
        n = len(cluster_colours) + len(unmatched)
        spare = [c for c in _default_colours(max(n, 21)) if c.lower() not in used]
        spare = list(dict.fromkeys(spare))
        for i, lab in enumerate(unmatched):
            label_colours[lab] = spare[i % len(spare)] if spare else "#888888"
    return cluster_colours, {lab: label_colours[lab] for lab in label_names}


def _point_size(n: int) -> float:
    return float(np.clip(12000 / max(n, 1), 2.0, 40.0))


# --------------------------------------------------------------------- UMAP
#: :func:`umap`'s defaults; the CLI precomputes the report's UMAP with them
UMAP_N_NEIGHBORS = 15
UMAP_RANDOM_STATE = 0
#: cluster_sizes splits its bars by at most this many labels (the largest, then one part for the others)
MAX_SPLIT = 20


class _CsrNNDescent:
    """pynndescent's approximate k-NN (scanpy's default) returning a ``csr_matrix``.

    scanpy 1.11.5 calls ``getnnz`` on the result, which scipy 1.17's ``csr_array`` no longer has.
    """

    def __init__(self, n_neighbors: int, random_state: int):
        from pynndescent import PyNNDescentTransformer

        self._t = PyNNDescentTransformer(n_neighbors=n_neighbors, random_state=random_state)

    def fit_transform(self, x):
        import scipy.sparse as sp

        return sp.csr_matrix(self._t.fit_transform(x))

    def get_params(self, deep: bool = False) -> dict:
        return {"n_neighbors": self._t.n_neighbors}


#: Up to this many cells the UMAP neighbour graph is exact (scikit-learn). Above it, pynndescent's
#: approximate graph: its numba compilation (about 35 CPU s per process) costs more than exact
#: neighbours up to about 60,000 cells, and it finds 70-91 % of the exact neighbours
#: (benchmarks/results/umap_neighbours.md).
EXACT_NEIGHBOURS_MAX_CELLS = 50_000


def _neighbour_transformer(n_cells: int, n_neighbors: int, random_state: int):
    """The ``transformer`` for :func:`scanpy.pp.neighbors`: exact up to ``EXACT_NEIGHBOURS_MAX_CELLS``.

    scanpy 1.11 would pick pynndescent above 4,096 cells, and its own wrapper of it crashes above
    ~8k cells with current scipy (``csr_array.getnnz``); :class:`_CsrNNDescent` avoids that.
    """
    if n_cells <= EXACT_NEIGHBOURS_MAX_CELLS:
        return "sklearn"
    return _CsrNNDescent(n_neighbors, random_state)


def umap_coordinates(adata: AnnData, *, key: str = "scgpcl", n_neighbors: int = 15, random_state: int = 0,
                     recompute: bool = False) -> np.ndarray:
    """UMAP coordinates of the learned representation ``obsm['X_' + key]``, stored in ``obsm['X_' + key + '_umap']``.

    Computed once per setting and embedding and reused (:func:`umap` and the report call it); cells without a
    finite representation get NaN. On a view (``adata[mask]``) they are computed and returned but not stored,
    which would turn the view into a copy and leave a record in the parent.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    key
        Its ``key_added``.
    n_neighbors, random_state
        Settings of the k-NN graph and of UMAP.
    recompute
        Compute again even if coordinates with these settings are stored.

    Returns
    -------
    numpy.ndarray
        The coordinates, cells x 2.
    """
    return _umap_coords(adata, key, n_neighbors, random_state, recompute)


def _umap_coords(adata: AnnData, key: str, n_neighbors: int, random_state: int, recompute: bool) -> np.ndarray:
    import scanpy as sc

    rep = "X_" + key
    if rep not in adata.obsm:
        raise InputError(f"no embedding in obsm[{rep!r}]: {_run_first()}")
    store = f"X_{key}_umap"
    info = adata.uns.get(key)
    emb = np.asarray(adata.obsm[rep], dtype=np.float32)
    # the embedding's digest: coordinates stored for another embedding under the same key are not reused
    digest = hashlib.sha256(np.ascontiguousarray(emb).tobytes()).hexdigest()[:16]
    settings = {"n_neighbors": int(n_neighbors), "random_state": int(random_state), "obsm_key": store,
                "embedding_sha256": digest}
    if not recompute and store in adata.obsm and isinstance(info, dict):
        cached = info.get("umap")
        same = isinstance(cached, dict) and all(cached.get(k) == v for k, v in settings.items()
                                                if k != "embedding_sha256")
        # a view shows its rows of the parent's layout (its digest is of those rows only); a record written
        # before the digest was kept is trusted, as it was then
        if same and (adata.is_view or cached.get("embedding_sha256") in (None, digest)):
            return np.asarray(adata.obsm[store])
    ok = np.isfinite(emb).all(axis=1)
    if ok.sum() < 4:  # UMAP's spectral start needs more points than its 3 eigenvectors (scipy refuses k >= N)
        raise InputError(f"obsm[{rep!r}] has fewer than 4 cells with a finite embedding; a UMAP needs at least 4")
    # Cells with identical representations (duplicated barcodes, resampled data) share one point: as
    # separate points they form cliques at distance 0 that split the neighbour graph into many small
    # components, and UMAP's spectral start then fails with a warning per component.
    # (Kept in order of first appearance, so data without duplicates get the same UMAP as before.)
    unique, first, inverse = np.unique(emb[ok], axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    unique, inverse = unique[order], rank[inverse.reshape(-1)]
    if len(unique) < 4:
        raise InputError(f"obsm[{rep!r}] has fewer than 4 distinct finite rows; a UMAP needs at least 4")
    tmp = AnnData(obs=pd.DataFrame(index=np.arange(len(unique)).astype(str)), obsm={rep: unique})
    n_nb = int(min(n_neighbors, len(unique) - 1))
    extra = {"transformer": _neighbour_transformer(len(unique), n_nb, random_state)}
    # numba would reset torch's thread count; 2.5 minutes at 100,000 cells, most of it numba compiling
    with torch_threads_kept(), still_working(f"UMAP of {len(unique)} cells"):
        sc.pp.neighbors(tmp, use_rep=rep, n_neighbors=n_nb, random_state=random_state, **extra)
        sc.tl.umap(tmp, random_state=random_state)
    coords = np.full((adata.n_obs, 2), np.nan, dtype=np.float32)
    coords[ok] = np.asarray(tmp.obsm["X_umap"])[inverse]
    if adata.is_view:  # storing would turn the view into a copy and mark the parent's record as cached
        return coords
    adata.obsm[store] = coords
    if isinstance(info, dict):  # tl.cluster rewrites uns[key], which drops this and so invalidates the cache
        info["umap"] = settings
    return coords


#: legend entries per column beside a 4.4-inch panel, and the inches a legend needs per character of its longest
#: entry at fontsize "small" (about 8 pt) plus its marker and padding: to size a figure around its legends
_LEGEND_ROWS = 22
_INCH_PER_CHAR = 0.075
_LEGEND_PAD = 0.45
#: more clusters than this: their names on the data instead of a legend (scanpy's legend_loc="on data")
_ON_DATA_ABOVE = 30


def _legend_layout(names: Sequence[str], on_data: bool) -> tuple[int, float]:
    """(columns, inches) of a category legend beside a panel; (0, 0) when the names go on the data."""
    if on_data or not names:
        return 0, 0.0
    ncol = -(-len(names) // _LEGEND_ROWS)
    return ncol, ncol * (_LEGEND_PAD + _INCH_PER_CHAR * max(len(n) for n in names))


def _scatter_categories(ax, coords: np.ndarray, values: pd.Series, colours: dict[str, str], title: str, *,
                        on_data: bool = False) -> None:
    labelled = has_label(values)  # NaN and empty strings: the grey "NA" points
    ok = np.isfinite(coords).all(axis=1) & labelled
    labels = values.astype(str).to_numpy()
    order = np.random.default_rng(0).permutation(np.flatnonzero(ok))  # no group painted systematically on top
    present = [c for c in colours if np.any(labels[ok] == c)]
    ax.scatter(coords[order, 0], coords[order, 1], c=[colours[v] for v in labels[order]], s=_point_size(len(order)),
               linewidths=0, rasterized=True)
    missing = np.isfinite(coords).all(axis=1) & ~labelled
    if missing.any():
        ax.scatter(coords[missing, 0], coords[missing, 1], c="#cccccc", s=_point_size(len(order)), linewidths=0,
                   label="NA")
    if on_data:  # dozens of clusters: a legend of them is a wall of colour swatches; their names where they lie
        import matplotlib.patheffects as pe

        outline = [pe.withStroke(linewidth=2.2, foreground="white")]
        for c in present:
            at = np.median(coords[ok & (labels == c)], axis=0)
            ax.text(at[0], at[1], c, ha="center", va="center", fontsize="small", fontweight="bold",
                    path_effects=outline)
        if missing.any():
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize="small")
    else:
        for c in present:
            ax.scatter([], [], c=colours[c], s=40, label=c)
        ncol, _ = _legend_layout(present, False)
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, ncol=max(ncol, 1), handletextpad=0.2,
                  fontsize="small", borderaxespad=0.3)
    ax.set_title(title)
    ax.set_xlabel("UMAP1")
    ax.set_ylabel("UMAP2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def umap(
    adata: AnnData,
    *,
    key: str = "scgpcl",
    label_key: str | None = None,
    n_neighbors: int = UMAP_N_NEIGHBORS,
    random_state: int = UMAP_RANDOM_STATE,
    recompute: bool = False,
    match_colours: bool = True,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool = False,
) -> Figure | None:
    """UMAP of the learned embedding, coloured by cluster (and by reference labels).

    The neighbour graph (:func:`scanpy.pp.neighbors` with ``use_rep='X_' + key``)
    and :func:`scanpy.tl.umap` are computed on a separate object; only the
    coordinates are kept, in ``obsm['X_' + key + '_umap']`` (never the user's
    ``X_umap``), and reused by later calls with the same settings until
    ``tl.cluster`` writes a new result under ``key``. Each panel's legend
    is beside it, the figure as wide as the legends need; above 30 clusters
    the clusters' names are written on the data instead (scanpy's
    ``legend_loc="on data"``).

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    key
        Its ``key_added``.
    label_key
        ``obs`` column with reference labels: a second panel beside the clusters.
    match_colours
        With ``label_key``: each reference label takes the colour of the
        cluster it is matched to (:func:`matched_palettes`), so matched pairs
        look alike. ``False``: each column's own :func:`palette`.
    n_neighbors, random_state
        Passed to scanpy's ``neighbors`` and ``umap``.
    recompute
        Ignore stored coordinates.
    ax
        Axes of your own to draw into, one per panel: an ``Axes`` for the clusters alone, two (e.g.
        ``ax=[left, right]``) with ``label_key``. The returned figure is theirs. None: a figure of its own.
    show
        Show the figure with ``pyplot.show()`` and return None, as scanpy does (a notebook would draw a
        returned figure a second time). Otherwise the figure is returned, not shown.
    """
    _check_obs(adata, key, "clusters")
    if label_key is not None:
        _check_obs(adata, label_key, "reference labels")
    panels = [(key, f"clusters: {key}")]
    if label_key is not None:
        panels.append((label_key, f"reference: {label_key}"))
    if ax is not None:  # before the UMAP's minutes
        axes = [ax] if isinstance(ax, Axes) else list(ax)
        if len(axes) != len(panels) or not all(isinstance(a, Axes) for a in axes):
            what = "the clusters and the reference labels" if label_key is not None else "the clusters"
            raise InputError(f"umap draws {len(panels)} panel(s) here ({what}): pass ax= as "
                             + ("two axes, e.g. ax=[left, right]" if len(panels) == 2 else "one axes"))
    coords = _umap_coords(adata, key, n_neighbors, random_state, recompute)
    colours = {key: palette(adata, key)}
    if label_key is not None:
        colours[key], colours[label_key] = (matched_palettes(adata, key, label_key) if match_colours
                                            else (palette(adata, key), palette(adata, label_key)))
    # the clusters' names on the data above _ON_DATA_ABOVE clusters; each panel as wide as its legend needs (a
    # fixed 10.8 inches shrank the panels to slivers, or let long names run off the figure, from ~20 categories)
    on_data = {column: column == key and len(colours[column]) > _ON_DATA_ABOVE for column, _ in panels}
    widths = [4.4 + _legend_layout(list(colours[c]), on_data[c])[1] + (0.6 if on_data[c] else 0.0) for c, _ in panels]
    if ax is None:
        fig = _new_figure((sum(widths), 4.4), show)
        # a subfigure per panel: in one grid, constrained layout gives every column the widest legend's margin
        subfigures = np.atleast_1d(fig.subfigures(1, len(panels), width_ratios=widths))
        axes = [sub.add_subplot() for sub in subfigures]
    else:
        fig = axes[0].figure
    for a, (column, title) in zip(axes, panels, strict=True):
        _scatter_categories(a, coords, adata.obs[column], colours[column], title, on_data=on_data[column])
    return _finish(fig, show)


# ----------------------------------------------------------- training curves


def _short_reason(stage: dict) -> str:
    """A few words for a stage's stopping point, from its ``stop_kind``.

    Results saved before ``stop_kind`` existed only carry the sentence in
    ``stop_reason``; for those the kind is read from its opening words.
    """
    kind = stage.get("stop_kind")
    reason = str(stage.get("stop_reason", ""))
    if kind is None:
        if reason.startswith("converged"):
            kind = "converged"
        elif "maximum" in reason:
            kind = "max_epochs"
        elif "has not exceeded its best" in reason:
            kind = "patience"
    if kind == "patience" and " for " in reason:
        return f"{STOP_LABELS[kind]} for {reason.rsplit(' for ', 1)[1]}"
    if kind in STOP_LABELS:
        return STOP_LABELS[kind]
    return reason.split(":")[0][:24]


def _x(history_stage) -> np.ndarray:
    """A stage's round numbers (``epoch`` in results saved before training ran in rounds)."""
    return np.asarray(history_stage.get("round", history_stage.get("epoch", [])))


def training_curves(adata: AnnData, *, key: str = "scgpcl", log: bool = True, ax: Axes | None = None,
                    show: bool = False) -> Figure | None:
    """Every loss term of each training stage on one axis of rounds.

    Pre-training and fine-tuning follow each other on the x axis (fine-tuning
    shaded), with the stage boundary, the end of the warm-up (prototypes
    switched on) and each stage's stopping point marked. The right axis shows
    the ARI between consecutive rounds' k-means labels (pre-training's
    convergence check, with its threshold) and the fraction of labels that
    changed per fine-tuning round.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster` (``uns[key]['history']``).
    key
        Its ``key_added``.
    log
        Logarithmic loss axis (terms differ by orders of magnitude); falls
        back to linear when a term is not positive.
    ax
        A matplotlib ``Axes`` to draw into (a panel of your own ``plt.subplots``); the figure, its size and
        layout are then yours, and the one returned is the axes' figure. None: a figure of its own.
    show
        Show the figure with ``pyplot.show()`` and return None, as scanpy does (a notebook would draw a
        returned figure a second time). Otherwise the figure is returned, not shown.
    """
    info = _uns(adata, key)
    history = info.get("history") or {}
    stages = info.get("stages") or {}
    config = (info.get("params") or {}).get("config") or {}
    names = [s for s in ("pretrain", "finetune") if s in history and len(_x(history[s])) > 0]
    names += [s for s in history if s not in names and len(_x(history[s])) > 0]
    if not names:
        raise InputError(f"uns[{key!r}]['history'] has no training rounds to plot")

    own = ax is None
    fig, ax = _figure_and_axes(ax, (9.0, 5.0), show)
    ax2 = ax.twinx()
    offset = 0
    labelled: set[str] = set()
    all_values: list[np.ndarray] = []
    stop_points = []
    for i, stage in enumerate(names):
        h = {k: np.asarray(v, dtype=float) for k, v in history[stage].items()}
        epochs = _x(h) + offset
        rank = {t: i for i, t in enumerate(_TERM_NAMES)}  # a fixed legend order, also after an .h5ad round trip
        for term in sorted(h, key=lambda t: (rank.get(t, len(rank)), t)):
            values = h[term]
            if term in _NOT_LOSSES:
                continue
            values = values.copy()
            if term == "proto":
                values[values == 0] = np.nan  # zero until the prototypes switch on after the warm-up
            all_values.append(values[np.isfinite(values)])
            label = _TERM_NAMES.get(term, term)
            ax.plot(epochs, values, color=_TERM_COLOURS.get(term), lw=2.2 if term == "loss" else 1.5,
                    marker="o", ms=2.5, label=None if label in labelled else label)
            labelled.add(label)
        if "ari_prev" in h and np.isfinite(h["ari_prev"]).any():
            label = "ARI vs previous round (right)"
            ax2.plot(epochs, h["ari_prev"], color="#8e44ad", ls="--", marker="s", ms=3.5, lw=1.2,
                     label=None if label in labelled else label)
            labelled.add(label)
            threshold = config.get("train.convergence_ari")
            if threshold is not None:
                first = epochs[np.isfinite(h["ari_prev"])][0]
                ax2.plot([first - 0.5, epochs[-1] + 0.5], [float(threshold)] * 2, color="#8e44ad", ls=":", lw=0.9)
                ax2.annotate(f"convergence {float(threshold):g}", (first - 0.5, float(threshold)), xytext=(-3, 0),
                             textcoords="offset points", ha="right", va="center", color="#8e44ad", fontsize="x-small")
        if "delta_label" in h and np.isfinite(h["delta_label"]).any():
            label = "fraction of labels changed (right)"
            ax2.plot(epochs, h["delta_label"], color="#16a085", ls="--", marker="^", ms=3.5, lw=1.2,
                     label=None if label in labelled else label)
            labelled.add(label)
        last = len(_x(h)) + offset
        if "loss" in h:
            stop_points.append((stage, epochs[-1], h["loss"][-1]))
        if stage == "pretrain":
            warmup = config.get("train.warmup_rounds", config.get("train.warmup_epochs"))
            if warmup is not None and 0 < float(warmup) < len(_x(h)) and "proto" in h:
                ax.axvline(float(warmup) + 0.5, color="#2ca02c", ls=":", lw=1)
                ax.annotate("warm-up ends", (float(warmup) + 0.5, 0.5), xycoords=("data", "axes fraction"),
                            xytext=(-3, 0), textcoords="offset points", rotation=90, ha="right", va="center",
                            color="#2ca02c", fontsize="x-small")
        if i > 0:
            ax.axvline(offset + 0.5, color="#555555", ls="--", lw=1.2)
            ax2.axvspan(offset + 0.5, last + 0.5, color="#f2f2f2", zorder=0)  # on the lower axis: hides nothing
        ax.annotate(_STAGE_NAMES.get(stage, stage), ((offset + 0.5 + last + 0.5) / 2, 1.0),
                    xycoords=("data", "axes fraction"), xytext=(0, 4), textcoords="offset points",
                    ha="center", va="bottom", fontsize="small", fontweight="bold")
        offset = last

    values = np.concatenate(all_values) if all_values else np.array([1.0])
    if log and values.size and np.all(values > 0):
        ax.set_yscale("log")
    for i, (stage, x, y) in enumerate(stop_points):
        reason = _short_reason(stages.get(stage) or {})
        label = "stopping point"
        ax.plot([x], [y], marker="*", ms=13, color="#c0392b", mec="white", mew=0.8, ls="none", zorder=5,
                label=None if label in labelled else label)
        labelled.add(label)
        # below the star, the next one above its star: two stops close together (a short fine-tuning
        # after a pre-training that stopped at a similar loss) otherwise print over each other
        ax.annotate(f"stop: {reason}", (x, y), xytext=(-6, -13 if i % 2 == 0 else 8), textcoords="offset points",
                    ha="right", fontsize="x-small", color="#c0392b")
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, offset + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round (pre-training, then fine-tuning)")
    ax.set_ylabel("loss (mean over minibatches; terms unweighted)")
    ax2.set_ylim(-0.02, 1.05)
    ax2.set_ylabel("ARI between rounds / fraction changed")
    ax.set_zorder(ax2.get_zorder() + 1)  # losses above, but keep the twin axis visible through
    ax.patch.set_visible(False)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    if own:  # below the axes, outside them
        fig.legend(h1 + h2, l1 + l2, loc="outside lower center", ncol=4, frameon=False, fontsize="small")
    else:  # the figure is the caller's: the legend stays on the axes
        ax.legend(h1 + h2, l1 + l2, ncol=2, frameon=False, fontsize="x-small")
    ax.set_title(f"Training curves ({key})", pad=18)
    return _finish(fig, show)


# -------------------------------------------------------------- contingency
def _matched_order(table: np.ndarray, match: dict[int, int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Row order putting each column's matched row (``match``: column -> row) on the diagonal, then the rest.

    Also returns the matched pairs' positions in that order.
    """
    n_rows, n_cols = table.shape
    order = [match[c] for c in range(n_cols) if c in match]
    rest = [r for r in range(n_rows) if r not in order]
    rest.sort(key=lambda r: (int(np.argmax(table[r])), -int(table[r].sum())))
    order += rest
    pairs = [(order.index(r), c) for c, r in match.items()]
    return order, pairs


def contingency(
    adata: AnnData,
    *,
    key: str = "scgpcl",
    label_key: str,
    ax: Axes | None = None,
    show: bool = False,
) -> Figure | None:
    """Heatmap of clusters (rows) against reference labels (columns).

    Rows are ordered so that each label's Hungarian-matched cluster lies on the
    diagonal (outlined; the matching of the CA metric and of the report's
    table, pairs that share no cell left out); unmatched clusters follow. Cells show counts, the
    colour is the fraction of the cluster's cells. The title gives ARI, NMI
    and CA on the cells with both a cluster and a label.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    key
        Its ``key_added``.
    label_key
        ``obs`` column with reference labels (cells without one are left out).
    ax
        A matplotlib ``Axes`` to draw into (a panel of your own ``plt.subplots``); the figure, its size and
        layout are then yours, and the one returned is the axes' figure. None: a figure of its own.
    show
        Show the figure with ``pyplot.show()`` and return None, as scanpy does (a notebook would draw a
        returned figure a second time). Otherwise the figure is returned, not shown.
    """
    _check_obs(adata, key, "clusters")
    _check_obs(adata, label_key, "reference labels")
    clusters, labels = adata.obs[key], adata.obs[label_key]
    ok = clusters.notna().to_numpy() & has_label(labels)
    if not ok.any():
        raise InputError(f"no cell has both a cluster (obs[{key!r}]) and a label (obs[{label_key!r}])")
    c = clusters[ok].astype(str).to_numpy()
    t = labels[ok].astype(str).to_numpy()
    row_names = cluster_order(clusters[ok])
    col_names = cluster_order(labels[ok])
    table = pd.crosstab(pd.Categorical(c, row_names), pd.Categorical(t, col_names), dropna=False).to_numpy()
    matching = _cluster_label_matching(adata, key, label_key)
    rows_at, cols_at = {n: i for i, n in enumerate(row_names)}, {n: j for j, n in enumerate(col_names)}
    match = {cols_at[lab]: rows_at[cl] for cl, lab in matching.items() if lab in cols_at and cl in rows_at}
    order, pairs = _matched_order(table, match)
    table = table[order]
    row_names = [row_names[i] for i in order]
    frac = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    m = clustering_metrics(t, c)

    n_rows, n_cols = table.shape
    longest = max(len(s) for s in col_names)
    own_figure = ax is None
    fig, ax = _figure_and_axes(ax, (max(4.6, 2.4 + 0.62 * n_cols), max(3.4, 1.6 + 0.42 * n_rows + 0.07 * longest)),
                               show)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    # the cells are 0.62 x 0.42 inches in a figure of its own: "small" counts fit at any size (they shrank to
    # xx-small above 200 cells and vanished above 900); in axes of the caller's, the old rule
    if own_figure or n_rows * n_cols <= 900:
        fontsize = "small" if own_figure or n_rows * n_cols <= 200 else "xx-small"
        for i in range(n_rows):
            for j in range(n_cols):
                if table[i, j]:
                    ax.text(j, i, str(table[i, j]), ha="center", va="center", fontsize=fontsize,
                            color="white" if frac[i, j] > 0.55 else "#222222")
    from matplotlib.patches import Rectangle

    for i, j in pairs:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, ec="#e67e22", lw=1.8))
    ax.set_xticks(range(n_cols), col_names, rotation=45 if longest > 3 else 0, ha="right" if longest > 3 else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(n_rows), row_names)
    ax.set_xlabel(f"reference label ({label_key})")
    ax.set_ylabel(f"cluster ({key})")
    ax.set_title(f"ARI {m['ARI']:.3f} · NMI {m['NMI']:.3f} · CA {m['CA']:.3f}\n"
                 f"{key} vs {label_key}, {int(ok.sum())} cells", fontsize="medium")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the cluster's cells")
    return _finish(fig, show)


# ------------------------------------------------------------ marker dot plot
def marker_dotplot(
    adata: AnnData,
    *,
    key: str = "scgpcl",
    n_genes: int = 5,
    layer: str | None = None,
    markers: pd.DataFrame | None = None,
    vertical: bool | None = None,
    show: bool = False,
) -> Figure | None:
    """Dot plot of each cluster's top marker genes (see :func:`scgpcl.tl.markers`).

    The top ``n_genes`` genes of each cluster in cluster order (a gene already
    shown for an earlier cluster is not repeated) against the clusters: genes
    across and clusters down, or, with more than 18 genes (``vertical=None``),
    genes down and clusters across, so that the figure fits a page's width
    (11 clusters x 5 genes: 9 inches wide instead of 21). Dot size: fraction of the cluster's cells with a non-zero count;
    colour: mean log-normalised expression, scaled to 0-1 per gene. Computed on
    a log-normalised copy; ``adata`` is not modified.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`, with its counts.
    key
        Its ``key_added``.
    n_genes
        Top genes per cluster.
    layer
        Layer with the raw counts; ``None``: the layer the clustering used, else ``X``.
    markers
        A table from :func:`scgpcl.tl.markers` for the same ``key`` and
        ``layer``, to skip ranking the genes again.
    vertical
        Genes down the figure (True), across (False), or by their number (None).
    show
        Show the figure with ``pyplot.show()`` and return None, as scanpy does (a notebook would draw a
        returned figure a second time). Otherwise the figure is returned, not shown.
    """
    n_genes = check_count_option(n_genes, "n_genes")
    data = lognorm_by_cluster(adata, key=key, layer=layer)
    if markers is None:
        table = rank_markers(data, key=key, n_genes=int(n_genes))
    else:
        missing = {"cluster", "rank", "gene"} - set(markers.columns)
        if missing:
            raise InputError(f"markers= must be a table from scgpcl.tl.markers; it lacks {sorted(missing)}")
        table = markers[markers["rank"] <= int(n_genes)]
        unknown = sorted(set(table["gene"]) - set(data.var_names))
        if unknown:
            raise InputError(f"markers= names genes not in adata.var_names (e.g. {unknown[:3]})")
    groups: list[tuple[str, list[str]]] = []
    seen: set[str] = set()
    shared: list[str] = []  # clusters whose top genes all stand under an earlier cluster's bracket
    for cl, df in table.groupby("cluster", observed=True, sort=False):
        genes = [g for g in df.sort_values("rank")["gene"] if g not in seen]
        seen.update(genes)
        if genes:
            groups.append((str(cl), genes))
        else:
            shared.append(str(cl))
    genes = [g for _, gs in groups for g in gs]
    rows = [str(c) for c in data.obs[key].cat.categories]
    idx = data.var_names.get_indexer(genes)
    x = data.X[:, idx]
    x = x.toarray() if hasattr(x, "toarray") else np.asarray(x)
    codes = data.obs[key].cat.codes.to_numpy()
    mean = np.vstack([x[codes == r].mean(axis=0) if np.any(codes == r) else np.zeros(len(genes)) for r in range(len(rows))])
    frac = np.vstack([(x[codes == r] > 0).mean(axis=0) if np.any(codes == r) else np.zeros(len(genes))
                      for r in range(len(rows))])
    lo, hi = mean.min(axis=0), mean.max(axis=0)
    scaled = (mean - lo) / np.where(hi > lo, hi - lo, 1.0)

    if vertical is None:
        vertical = len(genes) > _DOTPLOT_MAX_GENE_COLUMNS
    title = f"Top {int(n_genes)} marker genes per cluster ({key}, Wilcoxon)"
    shared_line = ""
    if shared:  # they had no bracket and no word: at 60 clusters a third of them were missing without a trace
        shared_line = (f"no bracket of their own (their top genes are under another cluster's): "
                       f"{', '.join(shared[:12])}{f' and {len(shared) - 12} more' if len(shared) > 12 else ''}")
    if vertical:
        fig = _dotplot_vertical(genes, rows, groups, frac, scaled, key, show)
    else:
        fig = _dotplot_horizontal(genes, rows, groups, frac, scaled, key, show)
    if shared_line:  # wrapped to the figure's width (long cluster names ran off both ends)
        import textwrap

        title += "\n" + "\n".join(textwrap.wrap(shared_line, max(40, int(fig.get_figwidth() / 0.085))))
    # a figure title, not the axes': constrained layout puts it above the cluster brackets
    fig.suptitle(title)
    return _finish(fig, show)


#: More gene columns than this turn the dot plot (genes down, clusters across), so that it fits a
#: page's width at a readable size: 11 clusters x 5 genes side by side made a 21-inch-wide figure,
#: shrunk to half size in the report.
_DOTPLOT_MAX_GENE_COLUMNS = 18
_DOT_MAX_SIZE = 170.0


def _dotplot_legends(fig: Figure, gs, sc_) -> None:
    """Dot-size legend and colour bar in the right-hand column of ``gs`` (rows 0 and 1)."""
    ax_size = fig.add_subplot(gs[0, 1])
    cax = fig.add_subplot(gs[1, 1])
    fractions = [1.0, 0.75, 0.5, 0.25]
    ax_size.scatter(np.zeros(len(fractions)), np.arange(len(fractions)), s=np.array(fractions) * _DOT_MAX_SIZE,
                    color="#999999", edgecolors="#555555", linewidths=0.4)
    for i, f in enumerate(fractions):
        ax_size.text(0.9, i, f"{int(f * 100)} %", va="center", fontsize="small")
    ax_size.set_xlim(-1, 3)
    ax_size.set_ylim(len(fractions) - 0.2, -0.8)
    ax_size.set_title("cells expressing", fontsize="small")
    ax_size.axis("off")
    cbar = fig.colorbar(sc_, cax=cax, orientation="horizontal", ticks=[0, 0.5, 1])
    cbar.set_label("mean expression\n(scaled per gene)", fontsize="small")
    cbar.ax.tick_params(labelsize="small")


def _dotplot_horizontal(genes, rows, groups, frac, scaled, key, show) -> Figure:
    """Genes across (grouped under a bracket per cluster), clusters down."""
    n_cols, n_rows = len(genes), len(rows)
    longest = max(len(g) for g in genes)
    named = max((len(cl) for cl, _ in groups), default=0)  # bracket labels over 3 characters are drawn at 45 degrees
    rotated = 0.075 * named * 0.71 if named > 3 else 0.0
    fig = _new_figure((max(5.0, 2.6 + 0.34 * n_cols + rotated),
                       max(3.2, 2.2 + 0.36 * n_rows + 0.075 * longest) + rotated), show)
    gs = fig.add_gridspec(3, 2, width_ratios=[max(n_cols, 4) * 0.34, 1.0], height_ratios=[2.0, 0.28, 1.0])
    ax = fig.add_subplot(gs[:, 0])
    yy, xx = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    sc_ = ax.scatter(xx.ravel(), yy.ravel(), s=np.maximum(frac.ravel(), 0) * _DOT_MAX_SIZE, c=scaled.ravel(),
                     cmap="Reds", vmin=0, vmax=1, edgecolors="#777777", linewidths=0.4)
    ax.set_xticks(range(n_cols), genes, rotation=90)
    ax.set_yticks(range(n_rows), rows)
    ax.set_xlim(-0.6, n_cols - 0.4)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_ylabel(f"cluster ({key})")
    ax.grid(True, color="#eeeeee", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    start = 0
    for cl, gs_ in groups:  # a bracket over each cluster's genes
        end = start + len(gs_) - 1
        ax.plot([start - 0.3, end + 0.3], [1.02, 1.02], transform=ax.get_xaxis_transform(), color="#444444",
                lw=1.2, clip_on=False)
        ax.text((start + end) / 2, 1.035, cl, transform=ax.get_xaxis_transform(), ha="center" if len(cl) <= 3 else "left",
                va="bottom", fontsize="small", rotation=0 if len(cl) <= 3 else 45, rotation_mode="anchor")
        if start > 0:
            ax.axvline(start - 0.5, color="#cccccc", lw=0.8)
        start = end + 1
    _dotplot_legends(fig, gs, sc_)
    return fig


def _dotplot_vertical(genes, rows, groups, frac, scaled, key, show) -> Figure:
    """Genes down (a bracket per cluster on the right), clusters across: fits a page for many clusters."""
    n_genes, n_clusters = len(genes), len(rows)
    longest = max(len(g) for g in genes)
    width = max(5.0, 3.4 + 0.075 * longest + 0.36 * n_clusters)
    named = max(len(r) for r in rows)
    upright = 2 * 0.075 * named if named > 3 else 0.0  # cluster names stand upright above and below the dots
    fig = _new_figure((width, max(4.0, 1.6 + 0.25 * n_genes) + upright), show)
    legend_height = 2.6 / max(0.25 * n_genes, 2.6)
    gs = fig.add_gridspec(3, 2, width_ratios=[max(n_clusters, 4) * 0.36 + 0.6, 1.1],
                          height_ratios=[legend_height, 0.12 * legend_height, 1.0 - 1.12 * legend_height])
    ax = fig.add_subplot(gs[:, 0])
    gene_idx, cluster_idx = np.meshgrid(np.arange(n_genes), np.arange(n_clusters), indexing="ij")
    sc_ = ax.scatter(cluster_idx.ravel(), gene_idx.ravel(), s=np.maximum(frac.T.ravel(), 0) * _DOT_MAX_SIZE,
                     c=scaled.T.ravel(), cmap="Reds", vmin=0, vmax=1, edgecolors="#777777", linewidths=0.4)
    ax.set_yticks(range(n_genes), genes)
    # named clusters ("CD14+ monocyte") piled into one smear when written across
    ax.set_xticks(range(n_clusters), rows, rotation=90 if max(len(r) for r in rows) > 3 else 0)
    ax.xaxis.set_tick_params(labeltop=True, top=True, labelrotation=90 if max(len(r) for r in rows) > 3 else 0)
    ax.set_ylim(n_genes - 0.5, -0.5)
    ax.set_xlim(-0.6, n_clusters - 0.4)
    ax.set_xlabel(f"cluster ({key})")
    ax.grid(True, color="#eeeeee", lw=0.6, zorder=0)
    ax.set_axisbelow(True)
    start = 0
    for cl, gs_ in groups:  # a bracket beside each cluster's genes
        end = start + len(gs_) - 1
        ax.plot([1.02, 1.02], [start - 0.3, end + 0.3], transform=ax.get_yaxis_transform(), color="#444444",
                lw=1.2, clip_on=False)
        ax.text(1.035, (start + end) / 2, cl, transform=ax.get_yaxis_transform(), ha="left", va="center",
                fontsize="small")
        if start > 0:
            ax.axhline(start - 0.5, color="#cccccc", lw=0.8)
        start = end + 1
    _dotplot_legends(fig, gs, sc_)
    return fig


# ------------------------------------------------------------- cluster sizes
def cluster_sizes(
    adata: AnnData,
    *,
    key: str = "scgpcl",
    label_key: str | None = None,
    match_colours: bool = True,
    ax: Axes | None = None,
    show: bool = False,
) -> Figure | None:
    """Bar chart of the number of cells per cluster.

    With ``label_key``, each bar is split by reference label, coloured as in
    :func:`umap` (``match_colours``: a label takes its matched cluster's
    colour); of more than 20 labels, the largest 19 are shown and the others
    are one grey part. Cells without a cluster (dropped as empty) are counted in the title.
    Clusters of a categorical column that ended up empty are shown as 0-cell bars.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    key
        Its ``key_added``.
    label_key
        ``obs`` column with reference labels: each bar split by label.
    match_colours
        With ``label_key``: each reference label takes the colour of the
        cluster it is matched to (:func:`matched_palettes`). ``False``: the
        labels' own :func:`palette`.
    ax
        A matplotlib ``Axes`` to draw into (a panel of your own ``plt.subplots``); the figure, its size and
        layout are then yours, and the one returned is the axes' figure. None: a figure of its own.
    show
        Show the figure with ``pyplot.show()`` and return None, as scanpy does (a notebook would draw a
        returned figure a second time). Otherwise the figure is returned, not shown.
    """
    _check_obs(adata, key, "clusters")
    if label_key is not None:
        _check_obs(adata, label_key, "reference labels")
    values = adata.obs[key]
    names = cluster_order(values)
    if isinstance(values.dtype, pd.CategoricalDtype):  # show clusters that ended up empty as 0-cell bars
        names = [str(c) for c in values.cat.categories]
    counts = values.astype(str)[values.notna()].value_counts()
    sizes = np.array([int(counts.get(n, 0)) for n in names])
    n_missing = int(values.isna().sum())
    # at most ~18 inches of bars (0.45 each up to 36 clusters; 60 clusters made a 31-inch figure that a page
    # shrinks to unreadable text); the legend's own width and rows beside them
    bar_in = min(0.45, 16.0 / max(len(names), 1))
    own_figure = ax is None
    fig, ax = _figure_and_axes(ax, (max(4.8, 1.8 + bar_in * len(names)), 3.8), show)
    x = np.arange(len(names))
    if label_key is None:
        colours = palette(adata, key)
        ax.bar(x, sizes, color=[colours.get(n, "#888888") for n in names], edgecolor="white")
    else:
        ok = values.notna().to_numpy()
        labels = adata.obs[label_key][ok]
        known = has_label(labels)  # NaN and empty strings: one entry, named apart from any real label
        lab_names = cluster_order(labels[known])
        na = "NA"
        while na in lab_names:  # a label "NA" of the data's own (NaN and "NA" together were two "NA"s)
            na += " (missing)"
        tab = pd.crosstab(pd.Categorical(values[ok].astype(str), names),
                          pd.Categorical(labels.astype(str).where(known, na),
                                         lab_names + ([na] if not known.all() else [])), dropna=False)
        tab = tab.loc[:, tab.sum(axis=0) > 0]
        if tab.shape[1] > MAX_SPLIT:  # a legend of hundreds of entries fills the figure: the largest, then the rest
            largest = tab.sum(axis=0).sort_values(ascending=False, kind="stable").index[:MAX_SPLIT - 1]
            rest = tab.drop(columns=largest)
            tab = tab[[c for c in tab.columns if c in set(largest)]].copy()
            tab[f"{rest.shape[1]} others"] = rest.sum(axis=1)
        colours = matched_palettes(adata, key, label_key)[1] if match_colours else palette(adata, label_key)
        bottom = np.zeros(len(names))
        for lab in tab.columns:
            ax.bar(x, tab[lab].to_numpy(), bottom=bottom, color=colours.get(str(lab), "#cccccc"), label=str(lab),
                   edgecolor="white", linewidth=0.5)
            bottom += tab[lab].to_numpy()
        entries = [str(c) for c in tab.columns]
        ax.legend(title=label_key, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize="small")
        if own_figure:  # room for the legend beside the bars and for its rows (a 20-entry legend lost its ends)
            fig.set_size_inches(fig.get_figwidth() + _legend_layout(entries, False)[1],
                                max(3.8, 1.6 + 0.2 * (len(entries) + 1)))
    narrow = bar_in < 0.3
    for xi, s in zip(x, sizes, strict=True):
        ax.annotate(str(s), (xi, s), xytext=(0, 2), textcoords="offset points", ha="center", va="bottom",
                    fontsize="x-small" if narrow else "small", rotation=90 if narrow else 0)
    longest = max((len(n) for n in names), default=1)
    ax.set_xticks(x, names, rotation=90 if narrow or longest > 3 else 0, fontsize="small" if narrow else None)
    ax.set_xlabel(f"cluster ({key})")
    ax.set_ylabel("cells")
    ax.set_ylim(0, max(sizes.max(), 1) * 1.12)
    ax.spines[["top", "right"]].set_visible(False)
    title = f"Cluster sizes: {int(sizes.sum())} cells in {int((sizes > 0).sum())} clusters"
    if (sizes == 0).any():
        title += f" ({int((sizes == 0).sum())} empty)"
    if n_missing:
        title += f" ({n_missing} unclustered)"
    ax.set_title(title)
    return _finish(fig, show)


# ------------------------------------------------------- batch composition
def batch_composition(
    adata: AnnData,
    batch_key: str,
    *,
    key: str = "scgpcl",
    ax: Axes | None = None,
    show: bool = False,
) -> Figure | None:
    """Each batch's cells across the clusters: one bar per batch, its clusters' shares stacked to 100 %.

    The view a cell-type composition comparison starts from (the share of a
    sample's cells in each cluster), where :func:`cluster_sizes` split by batch
    shows each cluster's batches in cells. Bars are coloured like the clusters
    in :func:`umap`; each batch's number of cells is at its bar's end. Cells
    without a cluster or without a batch are not counted
    (:func:`scgpcl.tl.batch_composition`).

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster`.
    batch_key
        Column of ``obs`` naming each cell's batch (sample, donor, run).
    key
        The clustering's ``key_added``.
    ax
        A matplotlib ``Axes`` to draw into (a panel of your own ``plt.subplots``); the figure, its size and
        layout are then yours, and the one returned is the axes' figure. None: a figure of its own.
    show
        Show the figure with ``pyplot.show()`` and return None, as scanpy does (a notebook would draw a
        returned figure a second time). Otherwise the figure is returned, not shown.
    """
    from ..tl import batch_composition as composition

    table = composition(adata, batch_key, key=key).T  # batches x clusters, cells
    table = table.loc[:, table.sum(axis=0) > 0]
    n_cells = table.sum(axis=1).to_numpy()
    shares = table.to_numpy() / np.maximum(n_cells[:, None], 1)
    colours = palette(adata, key)
    batches = [str(b) for b in table.index]
    # the "N cells" labels at the bars' ends, then the legend: both measured, not a fixed share of the axes
    # (long batch names narrowed the axes until the legend covered the labels)
    count_in = _INCH_PER_CHAR * max(len(f"{int(n)} cells") for n in n_cells) + 0.15
    height = max(2.2, 1.3 + 0.38 * len(batches))
    clusters = [str(c) for c in table.columns]
    rows = max(_LEGEND_ROWS, int((height - 0.6) / 0.19))  # few batches: the legend grows down, not sideways
    ncol = -(-len(clusters) // rows)
    legend_in = ncol * (_LEGEND_PAD + _INCH_PER_CHAR * max(len(c) for c in clusters)) if clusters else 0.0
    names_in = _INCH_PER_CHAR * 1.15 * max((len(b) for b in batches), default=1)
    fig, ax = _figure_and_axes(ax, (4.6 + names_in + count_in + legend_in, max(height, 0.8 + 0.19 * min(rows, len(clusters)))),
                               show)
    y = np.arange(len(batches))
    left = np.zeros(len(batches))
    for j, cluster in enumerate(table.columns):
        ax.barh(y, shares[:, j], left=left, color=colours.get(str(cluster), "#888888"), label=str(cluster),
                edgecolor="white", linewidth=0.5)
        left += shares[:, j]
    for yi, n in zip(y, n_cells, strict=True):
        ax.annotate(f"{int(n)} cells", (1.0, yi), xytext=(4, 0), textcoords="offset points", va="center",
                    fontsize="small")
    ax.set_yticks(y, batches)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(lambda v, _: f"{100 * v:.0f} %")
    ax.set_xlabel("share of the batch's cells")
    ax.set_ylabel(f"batch ({batch_key})")
    ax.spines[["top", "right"]].set_visible(False)
    from matplotlib.transforms import ScaledTranslation

    ax.legend(title=f"cluster ({key})", loc="center left", frameon=False, fontsize="small", ncols=max(ncol, 1),
              bbox_to_anchor=(1.0, 0.5), bbox_transform=ax.transAxes + ScaledTranslation(count_in, 0,
                                                                                        fig.dpi_scale_trans))
    ax.set_title(f"Composition of each batch: {int(n_cells.sum())} cells in {len(batches)} batches")
    return _finish(fig, show)
