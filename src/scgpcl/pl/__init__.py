"""Figures of a clustering run, scanpy style: ``adata`` first, a Figure back.

>>> scgpcl.pl.umap(adata, label_key="cell_type")
>>> scgpcl.pl.training_curves(adata)
>>> scgpcl.pl.contingency(adata, label_key="cell_type")
>>> scgpcl.pl.marker_dotplot(adata, n_genes=5)
>>> scgpcl.pl.cluster_sizes(adata)
>>> scgpcl.pl.batch_composition(adata, "sample")

Nothing is shown unless ``show=True`` (which shows the figure and returns None, as scanpy does); save a
returned figure with ``fig.savefig("umap.png")``. All but ``marker_dotplot`` take ``ax=``, axes of
your own to draw into (``umap``: one per panel).
"""

from ._plots import (
    UMAP_N_NEIGHBORS,
    UMAP_RANDOM_STATE,
    batch_composition,
    cluster_sizes,
    contingency,
    marker_dotplot,
    matched_palettes,
    palette,
    training_curves,
    umap,
    umap_coordinates,
)

__all__ = ["UMAP_N_NEIGHBORS", "UMAP_RANDOM_STATE", "umap", "umap_coordinates", "training_curves", "contingency", "marker_dotplot", "cluster_sizes", "batch_composition", "palette", "matched_palettes"]
