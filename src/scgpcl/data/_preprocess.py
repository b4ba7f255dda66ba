"""Preprocessing of a raw count matrix (docs/method.md section 1), sparse throughout.

The z-scored cell features ``(lognorm - mean) / std`` are never stored
dense: the model multiplies the sparse log-normalised matrix by its weights
and subtracts the mean term (``module.CellFeatures``). :meth:`PreparedData.dense_features`
densifies a block of rows when one is needed.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._config import TARGET_SUM_CANDIDATES, PreprocessConfig
from .._errors import InputError
from .._messages import arg
from .._threads import torch_threads_kept

__all__ = ["PreparedData", "choose_target_sum", "prepare", "select_genes", "with_target_sum"]

log = logging.getLogger("scgpcl")


@dataclass
class PreparedData:
    """What the model trains on, aligned to the kept cells and selected genes."""

    counts: sp.csr_matrix  # raw counts, kept cells x selected genes, float32
    lognorm: sp.csr_matrix  # log1p of counts scaled per cell (PreprocessConfig.target_sum), same shape
    feature_mean: np.ndarray  # (n_genes,) mean of lognorm per gene
    feature_std: np.ndarray  # (n_genes,) standard deviation (1 where it is 0)
    size_factors: np.ndarray  # (n_cells,) float32, n_i / median(n)
    lgamma_cell: np.ndarray  # (n_cells,) float64, sum over genes of lgamma(count + 1): the ZINB constant
    cell_mask: np.ndarray  # bool over the input's cells: which were kept
    gene_index: np.ndarray  # int indices of the selected genes in the input
    gene_names: np.ndarray  # names of the selected genes
    total_counts: np.ndarray  # (n_cells,) float64, each kept cell's total over all genes (target_sum > 0 divides by it)

    @property
    def n_cells(self) -> int:
        """Number of kept cells."""
        return self.counts.shape[0]

    @property
    def n_genes(self) -> int:
        """Number of selected genes."""
        return self.counts.shape[1]

    def graph(self, device="cpu", edge_weight: str = "none"):
        """The data as a :class:`~scgpcl.data.CellGeneGraph`.

        Parameters
        ----------
        device
            Where the graph's tensors live; on the CPU they share the arrays of ``counts`` and ``lognorm``.
        edge_weight
            ``"none"`` (every edge 1) or ``"lognorm"`` (the log-normalised values as edge weights).
        """
        from ._graph import CellGeneGraph

        return CellGeneGraph(self.counts.indptr, self.counts.indices, self.counts.data, self.lognorm.data,
                             self.n_genes, device, edge_weight)

    def dense_features(self, rows=None) -> np.ndarray:
        """z-scored features of ``rows`` (all cells if None) as a dense float32 array."""
        block = self.lognorm if rows is None else self.lognorm[rows]
        return ((block.toarray() - self.feature_mean) / self.feature_std).astype(np.float32)


#: stored entries per block in the passes over every entry of the input (a few tens of MB of temporaries)
_BLOCK_ENTRIES = 2**22


def _gene_variance(x: sp.csr_matrix, n_rows: int | None = None) -> np.ndarray:
    """Per column, the sample variance of the counts over ``n_rows`` cells (default: the rows of ``x``).

    Rows of ``x`` beyond those cells must hold no non-zero entry (cells whose counts are all zero), so
    that the variance over the cells kept can be read off the whole matrix without copying its rows.
    One pass over the stored entries in blocks, with no copy of the matrix (copies of the matrix made this
    step the peak of the whole run on inputs with every gene: about four times the input's size). The
    arithmetic is scipy's ``x.mean(axis=0)`` and ``x.multiply(x).mean(axis=0)`` on a copy of those rows:
    each entry scaled by ``1 / n_rows`` in the matrix's floating dtype (float64 for integers), summed per
    column in the order of the entries, so on a canonical float32 matrix (what :func:`prepare` works on
    after reading) the genes ranked, and every result recorded before, are the same to the bit. Two
    differences elsewhere: duplicate entries are summed before squaring (scipy's ``mean`` added them
    separately, its ``multiply`` summed them first), and integer counts are squared in float64 (scipy
    squared them in their own type, which overflows for int32 counts above 46,340 and uint8 above 15).
    """
    if not x.has_canonical_format:
        x = x.copy()
        x.sum_duplicates()
    n = x.shape[0] if n_rows is None else int(n_rows)
    inter = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float64)
    s1 = np.zeros(x.shape[1], dtype=inter)
    s2 = np.zeros(x.shape[1], dtype=inter)
    w = 1.0 / n
    for a in range(0, x.nnz, _BLOCK_ENTRIES):
        d = x.data[a:a + _BLOCK_ENTRIES].astype(inter, copy=False)
        cols = x.indices[a:a + _BLOCK_ENTRIES]
        np.add.at(s1, cols, d * w)  # unbuffered: sums in the order of the entries
        np.add.at(s2, cols, (d * d) * w)
    return (s2 - s1**2) * n / max(n - 1, 1)


def _n_keep(n_genes: int, cfg: PreprocessConfig) -> int:
    """How many genes ``gene_selection='variance'`` keeps of ``n_genes``."""
    if not 0 < cfg.hvg_fraction <= 1:
        raise InputError(f"hvg_fraction must be in (0, 1], got {cfg.hvg_fraction}")
    n_keep = max(int(round(cfg.hvg_fraction * n_genes)), min(cfg.min_genes, n_genes))
    return min(n_keep, n_genes)


def _top_variance(var: np.ndarray, n_keep: int) -> np.ndarray:
    """The ``n_keep`` columns of highest variance, ascending; ties broken by gene order (a stable ranking)."""
    return np.sort(np.argsort(-var, kind="stable")[:n_keep])


def select_genes(x: sp.csr_matrix, cfg: PreprocessConfig, gene_names=None) -> np.ndarray:
    """Indices (sorted) of the genes to keep.

    ``variance``: the top ``hvg_fraction`` of genes by raw-count variance, but
    at least ``min(min_genes, n_genes)`` genes, so that an input already cut to
    ~2000 genes is not reduced to ~400. ``seurat_v3``: scanpy's Seurat v3
    selection on the counts (needs the ``scikit-misc`` package). ``seurat``:
    scanpy's dispersion-based selection on log-normalised counts
    (``normalize_total`` to 10,000 counts per cell, ``log1p``), ``n_top_genes``
    genes (a few more when genes tie at the cut-off); nothing extra to install.
    ``none``: every gene.

    Parameters
    ----------
    x
        Raw counts, cells x genes.
    cfg
        ``gene_selection`` and its settings (``hvg_fraction``, ``min_genes``, ``n_top_genes``).
    gene_names
        Names of the columns of ``x``; the selection does not use them.

    Returns
    -------
    numpy.ndarray
        Column indices of the kept genes, ascending.
    """
    n_genes = x.shape[1]
    if cfg.gene_selection == "none":
        return np.arange(n_genes)
    if cfg.gene_selection == "variance":
        n_keep = _n_keep(n_genes, cfg)
        if n_keep == n_genes:
            return np.arange(n_genes)
        return _top_variance(_gene_variance(x), n_keep)
    if cfg.gene_selection in ("seurat", "seurat_v3"):
        n_keep = min(cfg.n_top_genes, n_genes)
        if n_keep == n_genes:
            return np.arange(n_genes)
        with torch_threads_kept():
            if cfg.gene_selection == "seurat":
                return _seurat_genes(x, None, np.arange(n_genes), n_keep)
            return _scanpy_seurat_v3(x, n_keep)
    raise InputError(
        f"unknown gene_selection {cfg.gene_selection!r}; use 'variance', 'seurat', 'seurat_v3' or 'none'"
    )


def _seurat_genes(x: sp.csr_matrix, rows: np.ndarray | None, cols: np.ndarray, n_keep: int) -> np.ndarray:
    """Scanpy's Seurat selection on ``x[rows][:, cols]``, a block of cells at a time: indices into ``cols``.

    The means and dispersions come from :func:`_seurat_dispersions`; the bins and the cut-off follow scanpy's
    ``highly_variable_genes`` (scanpy 1.10.3 to 1.11) with pandas' ``cut`` and ``groupby``.
    """
    import pandas as pd

    df = pd.DataFrame(dict(zip(("means", "dispersions"), _seurat_dispersions(x, rows, cols), strict=True)))
    df["mean_bin"] = pd.cut(df["means"], bins=20)
    stats = df.groupby("mean_bin", observed=True)["dispersions"].agg(avg="mean", dev="std")
    single = stats["dev"].isnull()  # one gene in its bin: normalised dispersion 1, as scanpy
    stats.loc[single, "dev"] = stats.loc[single, "avg"]
    stats.loc[single, "avg"] = 0
    stats = stats.loc[df["mean_bin"]].set_index(df.index)
    norm = ((df["dispersions"] - stats["avg"]) / stats["dev"]).to_numpy()
    ranked = np.sort(norm[~np.isnan(norm)])[::-1]
    if ranked.size == 0:  # no gene varies (scanpy raised an IndexError here): keep them all
        return np.arange(len(cols))
    cut = ranked[min(n_keep, ranked.size) - 1]
    return np.flatnonzero(np.nan_to_num(norm, nan=-np.inf) >= cut)  # genes tied at the cut-off kept, as scanpy


def _seurat_dispersions(x: sp.csr_matrix, rows: np.ndarray | None, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scanpy's ``means`` and ``dispersions`` (``var`` columns of the Seurat selection) of ``x[rows][:, cols]``.

    The same values, to the bit, as those scanpy's ``normalize_total(target_sum=1e4)``, ``log1p`` and
    ``highly_variable_genes(flavor="seurat")`` give on a copy of those cells and genes
    (``tests/test_preprocess.py`` compares them with scanpy itself), without the copies: scanpy
    copied the matrix three or four times (normalised, then for ``highly_variable_genes`` a copy and its
    ``expm1``), which made the selection the peak of a run on inputs with every gene. Each block of cells
    goes through scanpy's own ``normalize_total`` and ``log1p`` (both work cell by cell); the per-gene sums
    reproduce scanpy's numba kernel (each of its threads sums every n-th cell, in order, in float64, and the
    threads' sums are added in turn), and the dispersions follow scanpy's ``highly_variable_genes``
    (scanpy 1.10.3 to 1.11; 1.10.0-1.10.2 counted genes without a dispersion as 0 at the cut-off). Duplicate
    entries of a non-canonical matrix are normalised one by one and summed before ``expm1``, as in scanpy.
    ``rows``: a boolean mask of the cells to use (None: every row).
    """
    import anndata as ad
    import numba  # scanpy's dependency; its thread count decides how scanpy's kernel splits the cells
    import scanpy as sc

    n_threads = numba.get_num_threads()
    g = len(cols)
    every = g == x.shape[1] and np.array_equal(cols, np.arange(g))
    sums = np.zeros(n_threads * g)
    squares = np.zeros(n_threads * g)
    kept = np.arange(x.shape[0]) if rows is None else np.flatnonzero(rows)
    n = kept.size
    # blocks of the kept cells holding at most _BLOCK_ENTRIES entries: the row pointer of the kept cells alone
    for b0, b1 in _row_blocks(np.concatenate([[0], np.cumsum(np.diff(x.indptr)[kept])]), max_rows=max(n, 1)):
        block = x[kept[b0:b1]]
        block = ad.AnnData(sp.csr_matrix(block if every else block[:, cols], dtype=np.float32))  # totals over cols
        sc.pp.normalize_total(block, target_sum=1e4)
        sc.pp.log1p(block)
        m = block.X
        m.sum_duplicates()  # as scipy's expm1 of a sparse matrix does in scanpy (after log1p, entry by entry)
        v = np.expm1(m.data)
        where = np.repeat(np.arange(b0, b1) % n_threads, np.diff(m.indptr)) * g + m.indices
        # float32 values added in float64, in the order of the cells, as the kernel (converted first: np.add.at
        # has a fast path only for matching types); the square in float32, as the kernel
        np.add.at(sums, where, v.astype(np.float64))
        np.add.at(squares, where, (v * v).astype(np.float64))
    total, total_sq = np.zeros(g), np.zeros(g)
    for t in range(n_threads):
        total += sums[t * g:(t + 1) * g]
        total_sq += squares[t * g:(t + 1) * g]
    mean = total / n
    var = total_sq / n - (total / n) ** 2
    if n != 1:
        var *= n / (n - 1)
    mean[mean == 0] = 1e-12
    with np.errstate(divide="ignore", invalid="ignore"):
        dispersion = var / mean
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
    return np.log1p(mean), dispersion


def _scanpy_seurat_v3(x: sp.csr_matrix, n_keep: int) -> np.ndarray:
    """Scanpy's ``highly_variable_genes(flavor="seurat_v3")`` on (a copy of) counts ``x``."""
    import anndata as ad
    import scanpy as sc

    tmp = ad.AnnData(sp.csr_matrix(x, dtype=np.float32, copy=True))
    try:
        sc.pp.highly_variable_genes(tmp, flavor="seurat_v3", n_top_genes=n_keep)
    except ImportError as e:  # scikit-misc missing
        raise InputError(
            "gene_selection='seurat_v3' needs the scikit-misc package: pip install scikit-misc "
            "(or use gene_selection='seurat', which needs nothing extra)"
        ) from e
    except ValueError as e:  # the loess fit of scikit-misc can be singular
        raise InputError(
            f"gene_selection='seurat_v3' failed on this data (scikit-misc's loess fit: {e}); "
            "use gene_selection='seurat' or 'variance' instead"
        ) from e
    return np.sort(np.flatnonzero(tmp.var["highly_variable"].to_numpy()))


def prepare(
    counts: sp.spmatrix, gene_names, cfg: PreprocessConfig | None = None, *, genes: np.ndarray | None = None
) -> PreparedData:
    """Select genes, compute size factors and z-scored log-normalised features.

    ``counts`` must already be checked (finite, non-negative); it is never
    modified, and shared rather than copied where possible. Cells and genes
    with zero total are dropped (before and after gene selection) with a
    notice. ``genes`` (indices into the columns) skips the selection and keeps
    exactly those genes, as when a saved model is applied to data again.

    Memory: the result holds the selected counts (values and int32 column
    indices: 8 bytes per non-zero, shared with the input when it already is a
    sorted float32 CSR matrix of the kept cells and genes) and the
    log-normalised values (4 bytes per non-zero, sharing the indices).

    Parameters
    ----------
    counts
        Raw counts, cells x genes (sparse).
    gene_names
        Name of each column of ``counts``.
    cfg
        Gene selection settings; ``None``: the defaults of :class:`~scgpcl.PreprocessConfig`.
    genes
        Column indices of the genes to keep, instead of selecting them.

    Returns
    -------
    PreparedData
        The kept cells and genes, their counts, features and size factors.

    Raises
    ------
    InputError
        Fewer than 2 genes or fewer than 2 cells with counts are left.
    """
    cfg = cfg or PreprocessConfig()
    x = counts if sp.isspmatrix_csr(counts) and counts.dtype == np.float32 else sp.csr_matrix(counts, dtype=np.float32)
    gene_names = np.asarray(gene_names)
    n_cells_in, n_genes_in = x.shape

    tot_all = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    cell_keep = tot_all > 0
    gene_nonzero = np.flatnonzero(np.asarray(x.sum(axis=0)).ravel() > 0)
    if gene_nonzero.size < n_genes_in and genes is None:
        log.info("dropped %d genes with zero counts in every cell", n_genes_in - gene_nonzero.size)
    min_cells = min(int(cfg.min_cells), int(cell_keep.sum()))  # never more cells than there are
    if min_cells > 1 and genes is None:
        common = np.flatnonzero(_cells_detected(x) >= min_cells)
        if common.size < gene_nonzero.size:
            log.info("dropped %d genes detected in fewer than %d cells (min_cells)", gene_nonzero.size - common.size,
                     min_cells)
        gene_nonzero = common
    if genes is not None:
        genes_sel = np.asarray(genes, dtype=np.int64)
    elif cfg.gene_selection == "variance":
        # the cells and genes with counts, without copying them out of the input (select_genes would need a copy)
        n_keep = _n_keep(gene_nonzero.size, cfg)
        genes_sel = gene_nonzero if n_keep == gene_nonzero.size else gene_nonzero[
            _top_variance(_gene_variance(x, n_rows=int(cell_keep.sum()))[gene_nonzero], n_keep)]
    elif cfg.gene_selection == "seurat":
        n_keep = min(cfg.n_top_genes, gene_nonzero.size)
        if n_keep == gene_nonzero.size:
            genes_sel = gene_nonzero
        else:
            with torch_threads_kept():
                genes_sel = gene_nonzero[_seurat_genes(x, cell_keep, gene_nonzero, n_keep)]
    else:
        x_nz = _subset(x, cell_keep, gene_nonzero)
        genes_sel = gene_nonzero[select_genes(x_nz, cfg, gene_names[gene_nonzero])]
        del x_nz

    if len(genes_sel) < 2:
        raise InputError(
            f"only {len(genes_sel)} gene(s) left after gene selection ({gene_nonzero.size} detected in at least "
            f"{max(min_cells, 1)} cell(s)): scgpcl needs at least 2 genes; pass more genes, or keep more of them "
            f"({arg('hvg_fraction=', '--hvg-fraction')} / {arg('n_top_genes=', '--n-top-genes')}"
            + (f", or a lower {arg('min_cells=', '--min-cells')}" if min_cells > 1 else "") + ")"
        )
    x = _subset(x, None, genes_sel)
    tot = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    cell_keep &= tot > 0
    n_drop = n_cells_in - int(cell_keep.sum())
    if n_drop:
        log.info("dropped %d cells with zero counts in the %d selected genes", n_drop, len(genes_sel))
    if cell_keep.sum() < 2:
        raise InputError("fewer than 2 cells have non-zero counts in the selected genes; nothing to cluster")
    x = _subset(x, cell_keep, None)
    x = _clean(x, owned=not _shares_memory(x, counts))
    tot = tot[cell_keep]
    size_factors = (tot / float(np.median(tot))).astype(np.float32)
    scale = _cell_scale(tot, tot_all[cell_keep], cfg.target_sum)
    lognorm_data, lgamma_cell = _row_values(x, scale)
    norm = sp.csr_matrix((lognorm_data, x.indices, x.indptr), shape=x.shape)
    mean, std = _column_moments(norm)

    return PreparedData(
        counts=x,
        lognorm=norm,
        feature_mean=mean.astype(np.float32),
        feature_std=std.astype(np.float32),
        size_factors=size_factors,
        lgamma_cell=lgamma_cell,
        cell_mask=cell_keep,
        gene_index=genes_sel,
        gene_names=gene_names[genes_sel],
        total_counts=tot_all[cell_keep],
    )


def choose_target_sum(data: PreparedData, n_clusters: int, *, seed: int,
                      max_cells: int = 5000) -> tuple[float, dict[float, float]]:
    """The cell scaling (``target_sum``) whose features k-means separates best at ``n_clusters``.

    For each of ``TARGET_SUM_CANDIDATES`` (0, the median scaling, and 10,000), on the same sample of
    ``max_cells`` kept cells (all of them if fewer; more than ``n_clusters``): the selected genes' counts
    scaled as :func:`prepare` scales them, ``log1p``, z-scored over the sample, their first 50 principal
    components, k-means (``n_clusters``, 10 restarts) and the mean silhouette of its clusters. The scaling
    with the higher silhouette wins (ties: the first). Label-free; the cost does not grow with the cells
    beyond the sample.

    Parameters
    ----------
    data
        :func:`prepare`'s result (it holds each cell's total over all genes, which the ``1e4`` scaling
        divides by).
    n_clusters
        The number of clusters the run will look for.
    seed
        Seeds the sample, the PCA and k-means.
    max_cells
        Size of the sample.

    Returns
    -------
    tuple
        The chosen ``target_sum`` and each candidate's silhouette.
    """
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import silhouette_score

    n = data.n_cells
    if not 2 <= n_clusters < n:
        raise InputError(f"choose_target_sum needs 2 <= n_clusters < the {n} kept cells, got {n_clusters}")
    rows = _sample_rows(n, max(max_cells, n_clusters + 1), seed)  # k-means needs more cells than clusters
    tot = _selected_totals(data)
    scores: dict[float, float] = {}
    for target in TARGET_SUM_CANDIDATES:
        pcs = _sample_components(data, rows, target, seed, tot)
        with torch_threads_kept(), warnings.catch_warnings():
            # fewer different cells than K: the silhouette is then -1, and the model refuses such data itself,
            # with a message
            warnings.filterwarnings("ignore", message="Number of distinct clusters", category=ConvergenceWarning)
            labels = KMeans(n_clusters, n_init=10, random_state=seed).fit_predict(pcs)
        n_found = len(np.unique(labels))
        scores[target] = float(silhouette_score(pcs, labels)) if 1 < n_found < len(pcs) else -1.0
    return max(scores, key=scores.get), scores  # a tie keeps the first candidate


def _sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """The sorted rows of a seeded sample of ``min(n, size)`` of ``n`` cells."""
    return np.sort(np.random.default_rng(seed).choice(n, min(n, size), replace=False))


def _selected_totals(data: PreparedData) -> np.ndarray:
    """Each kept cell's total over the selected genes (the median scaling's totals), as float64."""
    return np.asarray(data.counts.sum(axis=1), dtype=np.float64).ravel()


def _sample_components(data: PreparedData, rows: np.ndarray, target_sum: float, seed: int,
                       tot: np.ndarray) -> np.ndarray:
    """The first 50 principal components of the ``rows`` cells' features at ``target_sum``.

    The selected genes' counts scaled as :func:`prepare` scales them, ``log1p``, z-scored over the sample;
    ``tot``: :func:`_selected_totals` of ``data`` (over every kept cell, as the median scaling needs).
    """
    from sklearn.decomposition import PCA

    x = data.counts[rows]
    scale = _cell_scale(tot, data.total_counts, target_sum)[rows]
    m = sp.csr_matrix((_row_values(x, scale)[0], x.indices, x.indptr), shape=x.shape)
    mean, std = _column_moments(m)
    with torch_threads_kept(), np.errstate(divide="ignore", invalid="ignore"):
        f = (m.toarray() - mean) / std
        # all cells alike (no variance for the PCA): components without meaning, and no warnings; the model
        # refuses data with fewer different cells than K itself
        return PCA(min(50, *f.shape), random_state=seed).fit_transform(f)


def sample_components(data: PreparedData, *, target_sum: float, seed: int, max_cells: int = 5000) -> np.ndarray:
    """The first 50 principal components of a sample of cells' features at a cell scaling.

    The sample and the features are those :func:`choose_target_sum` compares with the same ``seed`` and
    ``max_cells`` (when its K is below ``max_cells``): ``max_cells`` kept cells (all of them if fewer), the
    selected genes' counts scaled to ``target_sum`` as :func:`prepare` scales them, ``log1p``, z-scored over
    the sample. With an unknown K the model estimates
    a provisional K on them (``provisional_k``).

    Parameters
    ----------
    data
        :func:`prepare`'s result.
    target_sum
        The cell scaling (0: the median total over the selected genes).
    seed
        Seeds the sample and the PCA.
    max_cells
        Size of the sample.

    Returns
    -------
    numpy.ndarray
        Sample cells x components (at most 50).
    """
    return _sample_components(data, _sample_rows(data.n_cells, max_cells, seed), target_sum, seed,
                              _selected_totals(data))


def with_target_sum(data: PreparedData, target_sum: float) -> PreparedData:
    """``data`` with its features made again at another cell scaling (``target_sum``).

    The same as :func:`prepare` with ``genes=data.gene_index`` and that ``target_sum``, without selecting,
    filtering or copying the counts again: only the log-normalised values and their moments are new.

    Parameters
    ----------
    data
        :func:`prepare`'s result.
    target_sum
        As ``PreprocessConfig.target_sum``.

    Returns
    -------
    PreparedData
        Sharing ``data``'s counts, size factors and masks.
    """
    x = data.counts
    tot = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()
    values, _ = _row_values(x, _cell_scale(tot, data.total_counts, target_sum))
    norm = sp.csr_matrix((values, x.indices, x.indptr), shape=x.shape)
    mean, std = _column_moments(norm)
    return dataclasses.replace(data, lognorm=norm, feature_mean=mean.astype(np.float32),
                               feature_std=std.astype(np.float32))


def _cell_scale(tot: np.ndarray, tot_all: np.ndarray, target_sum: float) -> np.ndarray:
    """Per cell, the factor its counts are multiplied by before log1p (``PreprocessConfig.target_sum``).

    ``tot``: each kept cell's total over the selected genes; ``tot_all``: over all genes. ``target_sum=0``
    scales every cell to the median of ``tot``, a positive value scales its total over all genes to it.
    """
    return float(np.median(tot)) / tot if not target_sum else target_sum / tot_all


#: rows per block when a pass over the matrix needs temporary arrays (blocks also hold at most _BLOCK_ENTRIES
#: entries, so that inputs with every gene, a few thousand entries per cell, need no more memory per block)
_BLOCK_ROWS = 65536


def _row_blocks(indptr: np.ndarray, max_rows: int = _BLOCK_ROWS) -> list[tuple[int, int]]:
    """Consecutive row ranges ``(r0, r1)`` of at most ``max_rows`` rows and ``_BLOCK_ENTRIES`` stored entries.

    A row with more entries than that is a block of its own: rows are never split.
    """
    n = len(indptr) - 1
    blocks, r0 = [], 0
    while r0 < n:
        r1 = int(np.searchsorted(indptr, int(indptr[r0]) + _BLOCK_ENTRIES, side="right")) - 1  # no int32 overflow
        r1 = min(max(r1, r0 + 1), r0 + max_rows, n)
        blocks.append((r0, r1))
        r0 = r1
    return blocks


def _cells_detected(x: sp.csr_matrix, chunk: int = _BLOCK_ROWS) -> np.ndarray:
    """Per gene, the number of cells with a non-zero count.

    At most ``chunk`` rows (and ``_BLOCK_ENTRIES`` entries) at a time, so the memory it needs does not grow
    with the cells; duplicate entries of a non-canonical matrix are summed first.
    """
    out = np.zeros(x.shape[1], dtype=np.int64)
    for r0, r1 in _row_blocks(x.indptr, chunk):
        block = x[r0:r1]
        if not block.has_canonical_format:
            block.sum_duplicates()
        out += np.bincount(block.indices[block.data > 0], minlength=x.shape[1])
    return out


def _subset(x: sp.csr_matrix, rows: np.ndarray | None, cols: np.ndarray | None) -> sp.csr_matrix:
    """``x[rows][:, cols]`` (a boolean row mask, column indices), without a copy when nothing is dropped."""
    if cols is not None and not (len(cols) == x.shape[1] and np.array_equal(cols, np.arange(x.shape[1]))):
        x = x[:, cols]
    if rows is not None and not rows.all():
        x = x[rows]
    return x


def _shares_memory(x: sp.csr_matrix, counts) -> bool:
    """Whether ``x`` shares an array with the caller's ``counts`` (then it must not be changed in place)."""
    if x is counts:
        return True
    theirs = [getattr(counts, a, None) for a in ("data", "indices", "indptr")] if sp.issparse(counts) else [counts]
    return any(t is not None and isinstance(t, np.ndarray) and np.shares_memory(mine, t)
               for mine in (x.data, x.indices, x.indptr) for t in theirs)


def _clean(x: sp.csr_matrix, owned: bool) -> sp.csr_matrix:
    """Sorted indices, int32 column indices, no stored zeros.

    Copies only when ``x`` must change and is not ours to change (the caller's matrix is never modified).
    """
    needs = (not x.has_sorted_indices) or x.indices.dtype != np.int32 or (x.data == 0).any()
    if not needs:
        return x
    if not owned:
        x = x.copy()
    x.eliminate_zeros()
    x.sort_indices()
    if x.indices.dtype != np.int32:
        x.indices = x.indices.astype(np.int32)
    return x


def _row_values(x: sp.csr_matrix, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log1p(count * scale[row]) per stored entry, and per cell the sum of lgamma(count + 1).

    The sum is the ZINB likelihood's constant. Computed in blocks of rows.
    """
    from scipy.special import gammaln

    out = np.empty(x.nnz, dtype=np.float32)
    lgamma_cell = np.zeros(x.shape[0], dtype=np.float64)
    for r0, r1 in _row_blocks(x.indptr):
        a, b = x.indptr[r0], x.indptr[r1]
        lengths = np.diff(x.indptr[r0 : r1 + 1])
        vals = x.data[a:b]
        out[a:b] = np.log1p((vals * np.repeat(scale[r0:r1], lengths)).astype(np.float32))
        lg = gammaln(vals.astype(np.float64) + 1.0)
        nonempty = lengths > 0
        starts = (x.indptr[r0:r1] - a)[nonempty]
        lgamma_cell[r0:r1][nonempty] = np.add.reduceat(lg, starts) if len(starts) else 0.0
    return out, lgamma_cell


def _column_moments(m: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (1 where it is 0) of every column, in blocks of rows.

    Each block's sums are accumulated in the order of its entries, ``_BLOCK_ENTRIES`` at a time (the same
    sums as one ``bincount`` over the block, with temporaries of bounded size), then added to the totals.
    """
    n, g = m.shape
    s1, s2 = np.zeros(g), np.zeros(g)
    for r0 in range(0, n, _BLOCK_ROWS):
        a, b = int(m.indptr[r0]), int(m.indptr[min(r0 + _BLOCK_ROWS, n)])
        p1, p2 = np.zeros(g), np.zeros(g)
        for c in range(a, b, _BLOCK_ENTRIES):
            v = m.data[c:min(c + _BLOCK_ENTRIES, b)].astype(np.float64)
            cols = m.indices[c:min(c + _BLOCK_ENTRIES, b)]
            np.add.at(p1, cols, v)
            np.add.at(p2, cols, v * v)
        s1 += p1
        s2 += p2
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean**2, 0.0))
    std[std == 0] = 1.0
    return mean, std
