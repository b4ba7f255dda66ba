"""Which genes to feed the model: gene-selection rules compared on real data.

For every raw-count dataset with more than 2000 genes (where the choice acts),
each rule selects genes, the package's own preprocessing (``scgpcl.data.prepare``:
median scaling, log1p, z-score) builds the features the model would see, and
PCA (50 components) + k-means (true K, 10 restarts, seeds 0-2) measures how
well those features separate the labelled types. This isolates the input from
the network; ``results/real.md`` has the end-to-end effect.

    python benchmarks/gene_selection.py          # -> benchmarks/results/gene_selection.md

Rules: ``variance`` (the reference: top 20 % by raw-count variance, at least
2000), ``seurat`` (scanpy's dispersion-based HVG on log-normalised counts,
2000), ``seurat_v3`` (scanpy's Seurat v3 on counts, 2000; needs scikit-misc),
``cell_ranger`` and ``pearson_residuals`` (scanpy, 2000).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scgpcl._config import PreprocessConfig
from scgpcl.data._preprocess import prepare, select_genes

import harness

RULES = ["variance", "seurat", "seurat_v3", "cell_ranger", "pearson_residuals"]
N_TOP = 2000


def genes_for(rule: str, x: sp.csr_matrix) -> np.ndarray:
    if rule in ("variance", "seurat", "seurat_v3"):
        return select_genes(x, PreprocessConfig(gene_selection=rule, n_top_genes=N_TOP))
    b = ad.AnnData(x.copy())
    if rule == "pearson_residuals":
        sc.experimental.pp.highly_variable_genes(b, flavor="pearson_residuals", n_top_genes=N_TOP)
    else:
        sc.pp.normalize_total(b, target_sum=1e4)
        sc.pp.log1p(b)
        sc.pp.highly_variable_genes(b, flavor=rule, n_top_genes=N_TOP)
    return np.flatnonzero(b.var["highly_variable"].to_numpy())


def evaluate(path: Path, rules: list[str], seeds: list[int]) -> tuple[int, dict[str, tuple]] | None:
    """(number of genes, {rule: (mean ARI, sd, genes kept) or ("error", message)}); None when
    the file has at most N_TOP genes, where every rule keeps all of them."""
    a = ad.read_h5ad(path)
    if a.n_vars <= N_TOP:
        return None
    x = sp.csr_matrix(a.X, dtype=np.float32)
    keep_c = np.asarray(x.sum(1)).ravel() > 0
    keep_g = np.asarray(x.sum(0)).ravel() > 0
    x = x[keep_c][:, keep_g]
    y = a.obs[harness.LABEL_KEY].astype(str).to_numpy()[keep_c]
    k = len(set(y))
    out = {}
    for rule in rules:
        try:
            genes = genes_for(rule, x)
        except Exception as e:  # reported in the table
            out[rule] = ("error", str(e).splitlines()[0][:80])
            continue
        p = prepare(x, np.arange(x.shape[1]).astype(str), genes=genes)
        pcs = PCA(50, random_state=0).fit_transform(p.dense_features())
        aris = [adjusted_rand_score(y[p.cell_mask], KMeans(k, n_init=10, random_state=s).fit_predict(pcs))
                for s in seeds]
        out[rule] = (float(np.mean(aris)), float(np.std(aris, ddof=1)), len(genes))
    return a.n_vars, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=None)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--md", default=str(harness.REPO / "benchmarks" / "results" / "gene_selection.md"))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    paths = [str(harness.dataset_path(d)) for d in (args.datasets or harness.default_datasets())]
    rows = []
    t0 = time.perf_counter()
    for path in paths:
        found = evaluate(Path(path), RULES, args.seeds)
        if found is None:
            continue
        n_genes, res = found
        rows.append((harness.dataset_name(path), n_genes, res))
        print(harness.dataset_name(path), {r: v[0] for r, v in res.items()}, flush=True)
    lines = [
        "# Gene selection: which genes separate the cell types",
        "",
        "PCA (50) + k-means (true K, 10 restarts) on the package's own features (median scaling, log1p, "
        "z-score; `scgpcl.data.prepare`) after each gene-selection rule. Mean ± sd over k-means seeds "
        f"{args.seeds}; in brackets the number of genes kept. Only datasets with more than {N_TOP} genes "
        "(on the others every rule keeps all genes).",
        "",
        f"Command: `python benchmarks/gene_selection.py` ({time.perf_counter() - t0:.0f} s on 2 shared cores).",
        "",
        "| dataset | genes | " + " | ".join(f"`{r}`" for r in RULES) + " |",
        "|---|---|" + "---|" * len(RULES),
    ]
    means = {r: [] for r in RULES}
    for name, n_genes, res in rows:
        cells = []
        for r in RULES:
            v = res[r]
            if v[0] == "error":
                cells.append(f"error: {v[1]}")
            else:
                means[r].append(v[0])
                cells.append(f"{v[0]:.3f} ± {v[1]:.3f} ({v[2]})")
        lines.append(f"| {name} | {n_genes} | " + " | ".join(cells) + " |")
    lines.append("| **mean** (datasets without error) | | " + " | ".join(
        f"{np.mean(means[r]):.3f} ({len(means[r])})" if means[r] else "—" for r in RULES) + " |")
    Path(args.md).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
