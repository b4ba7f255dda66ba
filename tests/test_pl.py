"""Figures: right panels, titles and marks; nothing shown or left in pyplot; clear errors."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest

matplotlib.use("Agg")

import scgpcl
from scgpcl import InputError

from helpers import clustered


@pytest.fixture
def adata():
    return clustered()


def _titles(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


def test_umap_panels_and_cache(adata):
    import matplotlib.pyplot as plt

    fig = scgpcl.pl.umap(adata, label_key="cell_type")
    assert _titles(fig) == ["clusters: scgpcl", "reference: cell_type"]
    assert plt.get_fignums() == []  # not registered with pyplot, so never shown or leaked
    coords = adata.obsm["X_scgpcl_umap"]
    assert coords.shape == (adata.n_obs, 2) and np.isfinite(coords).all()
    assert "X_umap" not in adata.obsm  # the user's UMAP slot is left alone
    # legends list the categories of each panel
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert legend == ["type0", "type1", "type2"]
    one = scgpcl.pl.umap(adata)
    assert _titles(one) == ["clusters: scgpcl"]
    np.testing.assert_array_equal(adata.obsm["X_scgpcl_umap"], coords)  # reused, not recomputed


def test_umap_of_a_view_leaves_the_parent_and_a_new_embedding_is_not_given_old_coordinates(adata):
    """pl.umap on adata[mask] stored coordinates in the view, which made it a copy (anndata's warning) and left the
    parent's record saying a UMAP was cached; coordinates stored for an embedding were reused for another."""
    import warnings

    parent_uns = dict(adata.uns["scgpcl"])
    view = adata[: adata.n_obs // 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no ImplicitModificationWarning
        scgpcl.pl.umap(view)
    assert view.is_view and "X_scgpcl_umap" not in adata.obsm and "umap" not in adata.uns["scgpcl"]
    assert adata.uns["scgpcl"].keys() == parent_uns.keys()
    first = scgpcl.pl.umap_coordinates(adata).copy()
    # once the parent has a layout, a view shows its rows of it
    np.testing.assert_array_equal(scgpcl.pl.umap_coordinates(adata[: adata.n_obs // 2]), first[: adata.n_obs // 2])
    order = np.random.default_rng(0).permutation(adata.n_obs)
    adata.obsm["X_scgpcl"] = adata.obsm["X_scgpcl"][order]  # another embedding under the same key
    again = scgpcl.pl.umap_coordinates(adata)
    assert not np.array_equal(again, first)
    np.testing.assert_array_equal(scgpcl.pl.umap_coordinates(adata), again)  # this one is reused


def test_show_returns_none_as_scanpy_does(adata, monkeypatch):
    """show=True showed the figure and returned it too, which a notebook draws a second time."""
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(1))
    assert scgpcl.pl.cluster_sizes(adata, show=True) is None and shown == [1]
    plt.close("all")
    assert scgpcl.pl.cluster_sizes(adata) is not None and shown == [1]


def test_figures_draw_into_axes_of_ones_own(adata, monkeypatch):
    """scanpy's ax=: the figures could not be put into a user's own subplots."""
    from matplotlib.figure import Figure

    a = adata.copy()
    a.obs["sample"] = np.where(np.arange(a.n_obs) % 2, "s1", "s2")
    fig = Figure(figsize=(16, 4))
    axes = fig.subplots(1, 4)
    drawn = [scgpcl.pl.training_curves(a, ax=axes[0]), scgpcl.pl.contingency(a, label_key="cell_type", ax=axes[1]),
             scgpcl.pl.cluster_sizes(a, label_key="cell_type", ax=axes[2]),
             scgpcl.pl.batch_composition(a, "sample", ax=axes[3])]
    assert all(d is fig for d in drawn)  # the caller's figure, drawn into, returned
    assert fig.legends == [] and axes[0].get_legend() is not None  # the curves' legend stays on their axes
    assert [ax.get_title() for ax in axes[:3]] == [
        "Training curves (scgpcl)", _titles(scgpcl.pl.contingency(a, label_key="cell_type"))[0],
        _titles(scgpcl.pl.cluster_sizes(a, label_key="cell_type"))[0]]
    assert len(axes[3].patches) > 0 and len(axes[2].patches) > 0  # the bars are on the given axes
    # each panel as the function alone draws it: the same number of bars
    assert len(axes[2].patches) == len(scgpcl.pl.cluster_sizes(a, label_key="cell_type").axes[0].patches)
    # umap: one axes per panel
    two = Figure(figsize=(8, 4))
    left, right = two.subplots(1, 2)
    assert scgpcl.pl.umap(a, label_key="cell_type", ax=[left, right]) is two
    assert [left.get_title(), right.get_title()] == ["clusters: scgpcl", "reference: cell_type"]
    assert scgpcl.pl.umap(a, ax=left) is two
    with monkeypatch.context() as m:  # refused before the UMAP is computed (minutes on a large dataset)
        m.setattr(scgpcl.pl._plots, "_umap_coords", lambda *a, **k: pytest.fail("UMAP computed before ax= was checked"))
        with pytest.raises(InputError, match=r"umap draws 2 panel\(s\) here .*: pass ax= as two axes"):
            scgpcl.pl.umap(a, label_key="cell_type", ax=left)
    # an axes of a SubFigure: the Figure comes back (a SubFigure has no savefig)
    root = Figure(figsize=(8, 4), layout="constrained")
    left, _ = root.subfigures(1, 2)
    assert scgpcl.pl.contingency(a, label_key="cell_type", ax=left.subplots()) is root


def test_training_curves_marks_stages_and_stops(adata):
    fig = scgpcl.pl.training_curves(adata)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # losses and the convergence criteria on a twin axis
    texts = [t.get_text() for t in ax.texts]
    assert "pre-training" in texts and "fine-tuning" in texts
    assert sum(t.startswith("stop:") for t in texts) == 2
    labels = {line.get_label() for line in ax.get_lines()}
    for term in ("ZINB reconstruction", "instance contrastive", "DEC clustering (KL)", "total loss (weighted sum of the terms)", "stopping point"):
        assert term in labels, term
    n_pre = adata.uns["scgpcl"]["stages"]["pretrain"]["rounds"]
    # the stage boundary sits between the last pre-training and the first fine-tuning round
    xs = {round(float(line.get_xdata()[0]), 2) for line in ax.get_lines() if line.get_linestyle() == "--"}
    assert n_pre + 0.5 in xs


def test_contingency_title_has_metrics(adata):
    fig = scgpcl.pl.contingency(adata, label_key="cell_type")
    m = adata.uns["scgpcl"]["metrics"]
    title = fig.axes[0].get_title()
    assert f"ARI {m['ARI']:.3f}" in title and f"NMI {m['NMI']:.3f}" in title and f"CA {m['CA']:.3f}" in title
    image = fig.axes[0].get_images()[0].get_array()
    assert image.shape == (3, 3)
    # rows are ordered so the matched cluster of each label lies on the diagonal
    assert np.all(np.diag(image) == image.max(axis=1))


def test_marker_dotplot_columns(adata):
    fig = scgpcl.pl.marker_dotplot(adata, n_genes=4)
    ax = fig.axes[0]
    genes = [t.get_text() for t in ax.get_xticklabels()]
    assert len(genes) == len(set(genes)) and 3 <= len(genes) <= 12
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "1", "2"]
    table = scgpcl.tl.markers(adata, n_genes=4)
    assert set(genes) <= set(table["gene"])
    # above the cluster brackets, not on them (Figure.get_suptitle needs matplotlib 3.8; 3.7 keeps it in _suptitle)
    title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else fig._suptitle.get_text()
    assert title.startswith("Top 4 marker genes")
    with pytest.raises(InputError, match="n_genes"):
        scgpcl.pl.marker_dotplot(adata, n_genes=0)


def test_cluster_sizes_bars(adata):
    fig = scgpcl.pl.cluster_sizes(adata)
    bars = fig.axes[0].patches
    assert len(bars) == 3 and sum(b.get_height() for b in bars) == adata.n_obs
    assert fig.axes[0].get_title() == f"Cluster sizes: {adata.n_obs} cells in 3 clusters"
    split = scgpcl.pl.cluster_sizes(adata, label_key="cell_type")
    assert len(split.axes[0].patches) == 9  # 3 clusters x 3 labels, stacked
    assert [t.get_text() for t in split.axes[0].get_legend().get_texts()] == ["type0", "type1", "type2"]


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: scgpcl.pl.umap(a, label_key="nope"), "nope"),
        (lambda a: scgpcl.pl.contingency(a, label_key="nope"), "nope"),
        (lambda a: scgpcl.pl.cluster_sizes(a, key="other"), "other"),
        (lambda a: scgpcl.pl.training_curves(a, key="other"), "other"),
        (lambda a: scgpcl.pl.marker_dotplot(a, key="other"), "other"),
    ],
)
def test_missing_keys_raise_input_error(adata, call, message):
    with pytest.raises(InputError, match=message):
        call(adata)


def test_umap_without_embedding(adata):
    del adata.obsm["X_scgpcl"]
    with pytest.raises(InputError, match="embedding"):
        scgpcl.pl.umap(adata)


def test_cluster_sizes_shows_empty_clusters(adata):
    adata.obs["scgpcl"] = adata.obs["scgpcl"].cat.add_categories(["3"])  # K=4, one cluster left empty
    fig = scgpcl.pl.cluster_sizes(adata)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "1", "2", "3"]
    assert fig.axes[0].patches[3].get_height() == 0 and "(1 empty)" in fig.axes[0].get_title()


def _random_embedding(n: int) -> ad.AnnData:
    z = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    a = ad.AnnData(X=np.zeros((n, 1), dtype=np.float32), obsm={"X_scgpcl": z})
    a.obs["scgpcl"] = pd.Categorical(np.arange(n) % 3)
    return a


def test_umap_of_duplicated_cells_is_quiet_and_puts_copies_together():
    """Resampled data (exact duplicate cells) split the neighbour graph into cliques at distance 0, and UMAP's
    spectral start failed with one warning per component; copies now share one point."""
    import warnings

    from scgpcl.pl import _plots

    # 800 cells resampled from 300 in three groups: with the copies as separate points scanpy's UMAP warned
    # "Spectral initialisation failed" 4 times on this data (checked with the code before the change)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 16)).astype(np.float32) + np.repeat(np.eye(16, dtype=np.float32)[:3] * 5, 100, axis=0)
    drawn = rng.integers(0, 300, 800)
    a = ad.AnnData(X=np.zeros((800, 1), dtype=np.float32), obsm={"X_scgpcl": base[drawn]})
    a.obs["scgpcl"] = pd.Categorical(drawn // 100)
    a.obsm["X_scgpcl"][5] = np.nan  # and one cell without a representation
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coords = _plots.umap_coordinates(a)
    assert not [w for w in caught if "Spectral initialisation failed" in str(w.message)]
    assert np.isnan(coords[5]).all() and np.isfinite(np.delete(coords, 5, axis=0)).all()
    ok = np.ones(800, dtype=bool)
    ok[5] = False
    for i in np.flatnonzero(ok)[:100]:  # copies share one point
        same = ok & (drawn == drawn[i])
        assert (coords[same] == coords[i]).all()
    assert len(np.unique(coords[ok], axis=0)) == len(np.unique(drawn[ok]))  # distinct cells keep distinct points


def test_umap_without_duplicates_matches_scanpy_on_the_cells_in_order():
    """Removing duplicates must not reorder the cells: without duplicates the layout is scanpy's own."""
    import scanpy as sc

    from scgpcl.pl import _plots

    a = _random_embedding(120)
    coords = _plots.umap_coordinates(a)
    ref = ad.AnnData(obs=pd.DataFrame(index=np.arange(120).astype(str)), obsm={"X": a.obsm["X_scgpcl"]})
    sc.pp.neighbors(ref, use_rep="X", n_neighbors=15, random_state=0, transformer="sklearn")
    sc.tl.umap(ref, random_state=0)
    np.testing.assert_allclose(coords, ref.obsm["X_umap"], rtol=1e-5, atol=1e-5)


def test_umap_needs_four_distinct_cells():
    a = _random_embedding(10)
    a.obsm["X_scgpcl"][:] = a.obsm["X_scgpcl"][0]
    with pytest.raises(InputError, match="fewer than 4 distinct"):
        scgpcl.pl.umap(a)
    # three distinct cells: scipy's eigensolver refused UMAP's spectral start (TypeError: k >= N) from inside
    a.obsm["X_scgpcl"][:3] = np.eye(3, a.obsm["X_scgpcl"].shape[1])
    a.obsm["X_scgpcl"][3:] = a.obsm["X_scgpcl"][0]
    with pytest.raises(InputError, match="fewer than 4 distinct"):
        scgpcl.pl.umap(a)
    a.obsm["X_scgpcl"][3] = 2 * a.obsm["X_scgpcl"][1] + 1  # four: drawn
    assert np.isfinite(scgpcl.pl.umap(a, show=False).axes[0].collections[0].get_offsets()).all()


@pytest.mark.slow
def test_umap_works_above_8k_cells():
    """Above ~8k cells scanpy's default (approximate) neighbours fail with scipy >= 1.14
    (AttributeError: csr_array.getnnz); pl.umap must still work there, with exact neighbours."""
    import scanpy as sc
    from sklearn.neighbors import NearestNeighbors

    from scgpcl.pl._plots import _neighbour_transformer

    a = _random_embedding(9000)
    fig = scgpcl.pl.umap(a)
    assert np.isfinite(a.obsm["X_scgpcl_umap"]).all()
    assert fig.axes
    # the graph holds each cell's exact 14 nearest other cells (scanpy's n_neighbors counts the cell itself)
    tmp = ad.AnnData(obs=pd.DataFrame(index=np.arange(9000).astype(str)), obsm={"X": a.obsm["X_scgpcl"]})
    sc.pp.neighbors(tmp, use_rep="X", n_neighbors=15, transformer=_neighbour_transformer(9000, 15, 0))
    _, idx = NearestNeighbors(n_neighbors=15).fit(a.obsm["X_scgpcl"]).kneighbors(a.obsm["X_scgpcl"][:50])
    d = tmp.obsp["distances"].tocsr()
    for i in range(50):
        assert set(d[i].indices) == set(idx[i]) - {i}


def test_umap_above_the_exact_limit_uses_approximate_neighbours(monkeypatch):
    """Above EXACT_NEIGHBOURS_MAX_CELLS the graph is pynndescent's, through the csr_matrix wrapper
    (scanpy calls ``getnnz``, which the ``csr_array`` pynndescent returns has not had since scipy 1.14).

    pynndescent's numba compilation takes 30-120 CPU s per process, so it is stood in for by exact
    neighbours returned as a ``csr_array``, as pynndescent returns them; the limit is lowered to reach
    the path cheaply, and the layout (exercised above) is replaced by the first two coordinates.
    """
    import pynndescent
    import scanpy as sc
    import scipy.sparse as sparse
    from sklearn.neighbors import KNeighborsTransformer

    from scgpcl.pl import _plots

    made = {}

    class LikePyNNDescent:
        def __init__(self, n_neighbors, random_state):
            made.update(n_neighbors=n_neighbors, random_state=random_state)
            self.n_neighbors = n_neighbors

        def get_params(self, deep=True):
            return {"n_neighbors": self.n_neighbors}

        def fit_transform(self, x):
            graph = KNeighborsTransformer(n_neighbors=self.n_neighbors - 1).fit_transform(x)
            return sparse.csr_array(graph)  # what pynndescent returns, and what scanpy cannot take (scipy >= 1.14)

    monkeypatch.setattr(pynndescent, "PyNNDescentTransformer", LikePyNNDescent)
    monkeypatch.setattr(_plots, "EXACT_NEIGHBOURS_MAX_CELLS", 8192)
    seen = {}

    def layout(adata, **kwargs):
        seen["graph"] = adata.obsp["connectivities"]
        adata.obsm["X_umap"] = adata.obsm["X_scgpcl"][:, :2]

    monkeypatch.setattr(sc.tl, "umap", layout)
    assert isinstance(_plots._neighbour_transformer(9000, 15, 0), _plots._CsrNNDescent)
    assert _plots._neighbour_transformer(8192, 15, 0) == "sklearn"
    a = _random_embedding(9000)
    coords = scgpcl.pl.umap_coordinates(a, random_state=3)
    assert made == {"n_neighbors": 15, "random_state": 3}
    assert np.isfinite(coords).all() and seen["graph"].shape == (9000, 9000)
    assert (seen["graph"].getnnz(axis=1) > 0).all()
    # scanpy's own pynndescent path is the one that fails where csr_array has no getnnz (scipy >= 1.14): the
    # wrapper is what makes this work there
    if not hasattr(sparse.csr_array, "getnnz"):
        with pytest.raises(AttributeError, match="getnnz"):
            sc.pp.neighbors(a.copy(), use_rep="X_scgpcl", n_neighbors=15,
                            transformer=LikePyNNDescent(15, 0))


def test_stop_reasons_are_shortened_for_the_stopping_point_label():
    from scgpcl.pl._plots import _short_reason

    converged = "converged after epoch 40: ARI between consecutive epochs' k-means labels 0.9912 > 0.99"
    patience = ("stopped after epoch 48: the ARI between consecutive epochs' k-means labels has not exceeded "
                "its best (0.9800, epoch 33) for 15 epochs")
    maximum = "reached the maximum of 100 epochs"
    assert _short_reason({"stop_kind": "converged", "stop_reason": converged}) == "converged"
    assert _short_reason({"stop_kind": "max_epochs", "stop_reason": maximum}) == "max epochs"
    assert _short_reason({"stop_kind": "patience", "stop_reason": patience}) == "no ARI gain for 15 epochs"
    # the kind wins over the wording
    assert _short_reason({"stop_kind": "max_epochs", "stop_reason": converged}) == "max epochs"
    # results saved before stop_kind existed: read from the sentence
    assert _short_reason({"stop_reason": converged}) == "converged"
    assert _short_reason({"stop_reason": maximum}) == "max epochs"
    assert _short_reason({"stop_reason": patience}) == "no ARI gain for 15 epochs"


# --------------------------------------------------------------- issue 26, item 7: readable, matched colours
#: the report's figure resolution and the width of its page's content column, in pixels
REPORT_DPI, PAGE_WIDTH_PX = 110, 1026


def _eleven_clusters() -> ad.AnnData:
    """11 clusters, each with 5 genes of its own (pollen has 11 cell types): no training needed."""
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    n_per, k, n_genes = 12, 11, 80
    x = rng.poisson(1.0, size=(n_per * k, n_genes)).astype(np.float32)
    for g in range(k):
        x[g * n_per:(g + 1) * n_per, 5 * g:5 * g + 5] = rng.poisson(20.0, size=(n_per, 5))
    a = ad.AnnData(sp.csr_matrix(x))
    a.var_names = [f"MARKERGENE{j}" for j in range(n_genes)]
    a.obs_names = [f"c{i}" for i in range(a.n_obs)]
    a.obs["scgpcl"] = pd.Categorical(np.repeat([str(g) for g in range(k)], n_per), categories=[str(g) for g in range(k)])
    return a


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_marker_dotplot_of_eleven_clusters_fits_the_page_and_its_title_is_clear():
    # 11 clusters x 5 genes side by side: a 21-inch figure, shrunk to half size in the report, its title on
    # top of the cluster brackets
    import io

    import matplotlib.image as mpimg

    fig = scgpcl.pl.marker_dotplot(_eleven_clusters(), n_genes=5)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=REPORT_DPI, bbox_inches="tight")  # as the report does
    width = mpimg.imread(io.BytesIO(buf.getvalue())).shape[1]
    assert width <= PAGE_WIDTH_PX  # shown at full size: no text shrunk below its point size
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    title = fig._suptitle
    assert title is not None and title.get_text().startswith("Top 5 marker genes")
    box = title.get_window_extent(renderer)
    texts = [t for ax in fig.axes for t in ax.texts + ax.get_xticklabels() + ax.get_yticklabels()
             if t.get_text() and t.get_visible()]
    assert texts and not any(_overlaps(box, t.get_window_extent(renderer)) for t in texts)
    genes = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(genes) == 55 and set(genes[:5]) == {f"MARKERGENE{j}" for j in range(5)}  # genes down, clusters across
    assert min(t.get_fontsize() for t in fig.axes[0].get_yticklabels()) >= 8


def test_matched_reference_labels_take_their_clusters_colours(adata):
    # the cluster and reference UMAPs used unrelated colours: cluster 0 blue, the cell type it matches green
    permuted = {"0": "c", "1": "a", "2": "b"}
    adata.obs["ref"] = pd.Categorical(adata.obs["scgpcl"].astype(str).map(permuted))
    clusters, labels = scgpcl.pl.matched_palettes(adata, "scgpcl", "ref")
    assert clusters == scgpcl.pl.palette(adata, "scgpcl")  # the clusters keep theirs
    assert {lab: labels[lab] for lab in permuted.values()} == {permuted[c]: clusters[c] for c in permuted}
    fig = scgpcl.pl.umap(adata, label_key="ref")

    def legend_colours(ax):
        from matplotlib.colors import to_hex

        legend = ax.get_legend()
        return {t.get_text(): to_hex(h.get_facecolor()[0])
                for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)}

    shown_clusters, shown_labels = legend_colours(fig.axes[0]), legend_colours(fig.axes[1])
    for cluster, label in permuted.items():
        assert shown_labels[label] == shown_clusters[cluster]
    # a label no cluster is matched to gets a colour no cluster has
    adata.obs["ref"] = pd.Categorical(np.where(np.arange(adata.n_obs) < 5, "rare", adata.obs["ref"].astype(str)))
    clusters, labels = scgpcl.pl.matched_palettes(adata, "scgpcl", "ref")
    unmatched = [lab for lab in labels if lab not in permuted.values()]
    assert len(unmatched) == 1 and labels[unmatched[0]] not in clusters.values()


def test_the_default_colours_are_scanpys_without_grey_up_to_20():
    # a biologist's review: with tab20, clusters 14 and 15 were two greys, one nearly the missing values' grey
    from scanpy.plotting import palettes

    from scgpcl.pl._plots import _default_colours

    for n in (3, 10, 16, 20):
        colours = _default_colours(n)
        assert colours == palettes.default_20[:n]
        assert not {"#7f7f7f", "#c7c7c7", "#cccccc"} & {c.lower() for c in colours}


def test_batch_composition_stacks_each_batchs_shares_to_one():
    # a biologist's review: the report showed batches within clusters, not each sample's composition
    a = clustered()
    a.obs["sample"] = np.where(np.arange(a.n_obs) % 3 == 0, "s1", "s2")
    a.obs.loc[a.obs_names[:4], "sample"] = None  # cells without a batch are not counted
    fig = scgpcl.pl.batch_composition(a, "sample")
    ax = fig.axes[0]
    table = scgpcl.tl.batch_composition(a, "sample")
    widths = {}
    for bar in ax.patches:
        widths.setdefault(round(bar.get_y() + bar.get_height() / 2), []).append(bar.get_width())
    assert sorted(widths) == [0, 1] and all(np.isclose(sum(w), 1.0) for w in widths.values())
    for row, batch in enumerate(["s1", "s2"]):
        assert np.allclose(sorted(widths[row]), sorted((table[batch] / table[batch].sum()).to_numpy()))
    assert [t.get_text() for t in ax.texts] == [f"{int(table[b].sum())} cells" for b in ("s1", "s2")]
    assert int(table.to_numpy().sum()) == a.n_obs - 4


def test_above_20_the_colours_are_distinct_and_none_is_grey_near_white_or_near_black():
    """scanpy's 28- and 102-colour palettes hold a grey (cluster 25 looked unclustered), pure yellow and pastels
    near white (cluster 31 of 60 was a white gap in a stacked bar) and near-blacks."""
    import colorsys

    from matplotlib.colors import to_rgb

    from scgpcl.pl._plots import _default_colours

    for n in (21, 28, 60, 86):
        colours = _default_colours(n)
        assert len(set(colours)) == n
        for c in colours:
            _, lightness, saturation = colorsys.rgb_to_hls(*to_rgb(c))
            assert 0.2 <= lightness <= 0.82 and saturation >= 0.25, c
    assert "#c7c7c7" not in _default_colours(28) and "#FFFF00" not in _default_colours(60)


def _many(k: int, n: int = 1200, long_labels: bool = False) -> ad.AnnData:
    rng = np.random.default_rng(0)
    lab = np.arange(n) % k
    a = ad.AnnData(np.ones((n, 3), dtype=np.float32))
    a.obsm["X_scgpcl_umap"] = (rng.normal(size=(k, 2)) * 20)[lab] + rng.normal(size=(n, 2))
    a.obs["scgpcl"] = pd.Categorical(lab.astype(str), categories=[str(i) for i in range(k)])
    names = [f"CD{i}+ classical monocyte, inflammatory subtype {i}" if long_labels else f"t{i}" for i in range(k)]
    a.obs["ref"] = pd.Categorical([names[i] for i in lab])
    a.obs["batch"] = pd.Categorical([f"donor{i % 24:02d}_lane1_10x-3prime-v3.1" for i in range(n)])
    return a


def _renderer(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _panels(monkeypatch, a, **kw):
    from scgpcl.pl import _plots

    monkeypatch.setattr(_plots, "_umap_coords", lambda adata, *args: adata.obsm["X_scgpcl_umap"])
    fig = scgpcl.pl.umap(a, **kw)
    _renderer(fig)
    return fig, [ax for ax in fig.axes if ax.get_title()]


def test_umap_writes_dozens_of_clusters_on_the_data_and_sizes_panels_for_their_legends(monkeypatch):
    """A fixed 10.8-inch figure shrank the panels to slivers from ~20 categories, let a legend of long names run
    off the figure, and hid clusters 14-39 of a 40-cluster legend under the other panel."""
    fig, (clusters, reference) = _panels(monkeypatch, _many(40, long_labels=True), label_key="ref")
    assert clusters.get_legend() is None  # 40 clusters: their names on the data
    assert sorted(t.get_text() for t in clusters.texts) == sorted(str(i) for i in range(40))
    legend = reference.get_legend()
    assert len(legend.get_texts()) == 40 and legend._ncols == 2
    # both panels keep the same plotting area, and the legend ends inside the figure
    renderer = _renderer(fig)
    w1, w2 = clusters.get_window_extent().width, reference.get_window_extent().width
    assert abs(w1 - w2) / max(w1, w2) < 0.1
    assert legend.get_window_extent(renderer).x1 <= fig.bbox.x1 + 1
    fig, (clusters,) = _panels(monkeypatch, _many(20))
    assert len(clusters.get_legend().get_texts()) == 20 and not clusters.texts


def test_cluster_sizes_of_many_named_clusters_stays_on_a_page_and_its_legend_in_the_figure():
    a = _many(60, long_labels=True)
    fig = scgpcl.pl.cluster_sizes(a, label_key="ref")
    renderer = _renderer(fig)
    ax = fig.axes[0]
    assert fig.get_figwidth() <= 18 + 6  # bars capped at ~18 inches (31 at 60 clusters), plus the legend
    assert {t.get_rotation() for t in ax.get_xticklabels()} == {90.0}  # 60 narrow bars
    legend = ax.get_legend().get_window_extent(renderer)
    assert fig.bbox.y0 - 1 <= legend.y0 and legend.y1 <= fig.bbox.y1 + 1  # a 20-entry legend lost its ends
    a.obs["scgpcl"] = a.obs["ref"]  # named clusters: their tick labels stand upright
    fig = scgpcl.pl.cluster_sizes(a)
    assert {t.get_rotation() for t in fig.axes[0].get_xticklabels()} == {90.0}


def test_batch_composition_legend_leaves_the_cell_counts_readable():
    a = _many(30)
    fig = scgpcl.pl.batch_composition(a, "batch")
    renderer = _renderer(fig)
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent(renderer)
    counts_right = max(t.get_window_extent(renderer).x1 for t in ax.texts)
    assert counts_right <= legend.x0  # the legend began at 12 % of the axes' width, over the "N cells" labels
    assert legend.x1 <= fig.bbox.x1 + 1


def test_contingency_writes_every_count_in_a_figure_of_its_own():
    a = _many(40)
    a.obs["ref"] = pd.Categorical(np.where(np.arange(a.n_obs) % 7 == 0, "t0", a.obs["ref"].astype(str)))
    fig = scgpcl.pl.contingency(a, label_key="ref")
    table = pd.crosstab(a.obs["scgpcl"], a.obs["ref"]).to_numpy()
    assert len(fig.axes[0].texts) == int((table > 0).sum())  # 40 x 40 = 1,600 cells: none written before
    assert {t.get_fontsize() for t in fig.axes[0].texts} == {matplotlib.font_manager.FontProperties(size="small").get_size_in_points()}


def test_marker_dotplot_names_clusters_whose_genes_stand_under_another_cluster(adata):
    """A cluster whose top genes were all shown under an earlier cluster had no bracket and no word."""
    table = scgpcl.tl.markers(adata, n_genes=2)
    copied = table[table["cluster"] == "0"].copy()
    copied["cluster"] = "2"  # cluster 2's top genes are cluster 0's
    markers = pd.concat([table[table["cluster"] != "2"], copied], ignore_index=True)
    fig = scgpcl.pl.marker_dotplot(adata, n_genes=2, markers=markers)
    title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else fig._suptitle.get_text()
    assert " ".join(title.splitlines()).endswith("no bracket of their own (their top genes are under another "
                                                 "cluster's): 2")
    brackets = [t.get_text() for t in fig.axes[0].texts]
    assert brackets == ["0", "1"]


def test_figures_of_labels_that_hold_na_with_missing_values_and_of_few_batches():
    """'NA' as a label of the data's own beside missing labels made two "NA" categories (ValueError: the
    report failed); with two batches and 60 clusters the composition legend grew to a 30-inch strip."""
    a = _many(6)
    a.obs["ref"] = pd.Categorical(np.array(["A", "NA", ""] * 400, dtype=object))
    fig = scgpcl.pl.cluster_sizes(a, label_key="ref")
    entries = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sorted(entries) == ["A", "NA", "NA (missing)"]
    b = _many(60)
    b.obs["batch"] = pd.Categorical(np.where(np.arange(b.n_obs) % 2 == 0, "b1", "b2"))
    fig = scgpcl.pl.batch_composition(b, "batch")
    assert fig.get_figwidth() < 12 and fig.axes[0].get_legend()._ncols <= 3


def test_the_dot_plot_wraps_its_list_of_clusters_without_a_bracket(adata):
    table = scgpcl.tl.markers(adata, n_genes=2)
    rows = [table]
    for i in range(40):  # 40 long-named clusters whose genes are all cluster 0's
        extra = table[table["cluster"] == "0"].copy()
        extra["cluster"] = f"a long cluster name number {i:02d}"
        rows.append(extra)
    fig = scgpcl.pl.marker_dotplot(adata, n_genes=2, markers=pd.concat(rows, ignore_index=True))
    title = fig.get_suptitle() if hasattr(fig, "get_suptitle") else fig._suptitle.get_text()
    lines = title.splitlines()
    assert len(lines) > 2 and max(len(line) for line in lines[1:]) <= fig.get_figwidth() / 0.085 + 1
    assert "and 28 more" in title
