"""k-means on the pre-trained representation joined with the standard pipeline's principal components.

    python benchmarks/ensemble.py dump --encoder graph --seeds 0 1 2     # the members (package defaults, no DEC)
    python benchmarks/hybrid.py                                           # -> results/hybrid.{jsonl,md}
    OMP_NUM_THREADS=1 python benchmarks/hybrid.py --cost                  # the PCA's CPU time at 100k cells

**Question.** scGPCL's pre-trained representation and PCA of the scanpy pipeline win on different datasets
(`where_it_loses.md`: PCA + k-means on the small, deep-library ones; scGPCL on zeisel_full, human_kidney,
worm_neuron). Does k-means on both at once keep the better of the two, or only average them?

For each dataset and seed s = 0, 1, 2: ``z``, the representation of ``ensemble.py``'s graph member s (the
package defaults, fine-tuning off, saved with the indices of the cells preprocessing kept), and two PCA
blocks of the same cells: ``p``, the 50 principal components of the baseline's pipeline
(``harness.scanpy_pcs``: scanpy ``normalize_total`` 1e4, ``log1p``, 2,000 seurat HVG, scale to 10, PCA), and
``q``, 50 principal components of the package's own features (``scgpcl.data.prepare`` with the defaults:
the very matrix the encoder reads; what the package could add without a second pipeline). Each block is
centred and divided by the square root of its total variance, so that blocks weigh the same; the PCA
block is then multiplied by w. k-means (scikit-learn, true K, 20 restarts as the package's
``kmeans_n_init``, ``random_state`` s).

Rows: ``z``, ``p`` and ``q`` alone, and the joined spaces ``z + w p``, ``z + w q`` at w = 0.5, 1, 2. The rule
fixed before looking: of the six joined spaces, the one with the best paired mean on the choosing half
(``embeddings.CHOOSE``) against ``z`` alone is the candidate; the confirming half is reported for it.
Differences are paired by dataset (the mean over the three seeds first), mean ± standard error over
datasets. No fine-tuning anywhere on this page; the final ARI (with DEC, ``accuracy.jsonl``) of the
defaults of the time (``MEASURED_WITH``: before the joined start became the default) is shown for reference.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from embeddings import CHOOSE, DATASETS, SHARED  # noqa: E402
from ensemble import MEASURED_WITH, RUNS, _pm, _reference  # noqa: E402

from scgpcl._machine import cpu_model  # noqa: E402  (each record names the CPU)

JSONL = HERE / "results" / "hybrid.jsonl"
MD = HERE / "results" / "hybrid.md"
WEIGHTS = (0.5, 1.0, 2.0)
#: (name, PCA block or None, weight of the PCA block; None: the PCA block alone)
VARIANTS = [("z", None, 0.0), ("p", "p", None), ("q", "q", None)] + [
    (f"z + {w:g} {b}", b, w) for b in ("p", "q") for w in WEIGHTS]
SEEDS = (0, 1, 2)


def _block(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.mean(0)
    return x / np.sqrt((x**2).sum(1).mean())


def run() -> list[dict]:
    import anndata as ad
    import scipy.sparse as sp
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from scgpcl import PreprocessConfig
    from scgpcl.data import prepare

    from harness import scanpy_pcs

    rows = []
    for d in DATASETS:
        a = ad.read_h5ad(SHARED / "data" / "real" / f"{d}.h5ad")
        pcs: dict[bytes, np.ndarray] = {}
        for s in SEEDS:
            path = RUNS / "graph" / f"{d}__{s}.npz"
            if not path.exists():
                print(f"missing {path}", flush=True)
                continue
            f = np.load(path)
            if "cells" not in f:
                raise SystemExit(f"{path} has no cell indices: dump it again with the current embeddings.py")
            cells, truth, k = f["cells"], f["truth"], int(f["k"])
            key = cells.tobytes()
            if key not in pcs:  # preprocessing is deterministic: one PCA per dataset
                own = prepare(sp.csr_matrix(a.X, dtype=np.float32), a.var_names.to_numpy(), PreprocessConfig())
                if not np.array_equal(np.flatnonzero(own.cell_mask), cells):
                    raise SystemExit(f"{d}: the package keeps other cells than the dump did")
                pcs[key] = {"p": _block(scanpy_pcs(a[cells]).obsm["X_pca"]),
                            "q": _block(PCA(50, random_state=0).fit_transform(own.dense_features()))}
            z = _block(f["z"])
            for name, b, w in VARIANTS:
                x = z if b is None else pcs[key][b] if w is None else np.hstack([z, w * pcs[key][b]])
                lab = KMeans(k, n_init=20, random_state=s).fit(x).labels_
                rows.append({"dataset": d, "seed": s, "variant": name, "ARI": float(adjusted_rand_score(truth, lab)),
                             "scored_on": cpu_model()})  # the CPU of this clustering; embeddings: ensemble.py
            print(d, s, " ".join(f"{r['variant']} {r['ARI']:.3f}" for r in rows[-len(VARIANTS):]), flush=True)
    return rows


def table(rows: list[dict]) -> None:
    ref = _reference(MEASURED_WITH)
    names = [v[0] for v in VARIANTS]
    mean = {(d, n): np.mean([r["ARI"] for r in rows if r["dataset"] == d and r["variant"] == n])
            for d in DATASETS for n in names}
    sd = {(d, n): np.std([r["ARI"] for r in rows if r["dataset"] == d and r["variant"] == n], ddof=1)
          for d in DATASETS for n in names}
    dflt = {d: np.mean([r["ARI"] for r in ref[d]["scgpcl"]]) for d in DATASETS}
    pca = {d: np.mean([r["ARI"] for r in ref[d]["pca_kmeans"]]) for d in DATASETS}
    L = ["# The pre-trained representation joined with PCA", "", __doc__.split("**Question.**")[1].split("\n\n")[0]
         .replace("\n", " ").strip().join(["**Question.** ", ""]), "",
         "Commands: `python benchmarks/ensemble.py dump --encoder graph --seeds 0 1 2`, then "
         "`python benchmarks/hybrid.py` (method in the script's docstring; `python benchmarks/hybrid.py --table-only` "
         "rebuilds this page from `hybrid.jsonl`). `z`: k-means on the representation "
         "after pre-training (package defaults, no DEC); `p`: on the 50 principal components of the baseline's "
         "pipeline; `z + w p`: on both, the PCA block weighted w. ARI mean ± SD over seeds 0-2.", "",
         "| dataset | half | previous defaults (with DEC) | PCA + k-means (harness) | " + " | ".join(names) + " |",
         "|---|---|---|---|" + "---|" * len(names)]
    for d in DATASETS:
        L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | {dflt[d]:.3f} | {pca[d]:.3f} | "
                 + " | ".join(f"{mean[(d, n)]:.3f} ± {sd[(d, n)]:.3f}" for n in names) + " |")
    L += ["", "## Summary", "", "Paired differences by dataset, mean ± standard error over datasets.", "",
          "| variant | mean ARI | - z, choose (6) | - z, confirm (7) | - previous defaults, all 13 | - PCA + k-means, all 13 | "
          "mean seed SD |", "|---|---|---|---|---|---|---|"]
    for n in names:
        diff_z = {d: mean[(d, n)] - mean[(d, "z")] for d in DATASETS}
        L.append(f"| {n} | {np.mean([mean[(d, n)] for d in DATASETS]):.3f} | "
                 f"{_pm([diff_z[d] for d in CHOOSE])} | {_pm([diff_z[d] for d in DATASETS if d not in CHOOSE])} | "
                 f"{_pm([mean[(d, n)] - dflt[d] for d in DATASETS])} | {_pm([mean[(d, n)] - pca[d] for d in DATASETS])} | "
                 f"{np.mean([sd[(d, n)] for d in DATASETS]):.3f} |")
    notes = HERE / "results" / "hybrid_notes.md"
    if notes.exists():
        L += ["", notes.read_text().strip()]
    MD.write_text("\n".join(L) + "\n")
    print(f"wrote {MD}")


def cost(n_cells: int = 100_000) -> None:
    """CPU seconds of the joined start's PCA at scale, one thread: pbmc4k resampled to ``n_cells``
    (``scale.py``'s ``pbmc_N``), the package defaults' 20,000-cell sample, 2,000 genes."""
    import tempfile

    import anndata as ad
    import scale
    import torch

    import scgpcl
    from scgpcl.train._joined import FeaturePCA

    torch.set_num_threads(1)
    path = Path(tempfile.gettempdir()) / f"pbmc_{n_cells}.h5ad"
    if not path.exists():
        scale._resample_pbmc(n_cells, path)
    tr = scgpcl.SCGPCL(ad.read_h5ad(path), 10, random_state=0, device="cpu").trainer
    t0 = time.process_time()
    pca = FeaturePCA(tr.loader, tr.embedder.sample, chunk=tr.sampler_cfg.chunk_cells)
    t1 = time.process_time()
    pca.transform(tr.embedder.sample)
    t2 = time.process_time()
    pca.transform(torch.arange(n_cells - 20_000, n_cells))
    t3 = time.process_time()
    print(f"{n_cells} cells, sample {tr.embedder.n_sample}, {tr.loader.n_genes} genes: fit {t1 - t0:.1f} CPU s, "
          f"scores of the sample {t2 - t1:.1f} s, of 20,000 other cells {t3 - t2:.1f} s")


def main(argv=None) -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--table-only", action="store_true", help="rebuild the page from results/hybrid.jsonl")
    p.add_argument("--cost", action="store_true", help="only measure the PCA's CPU time at 100,000 cells")
    args = p.parse_args(argv)
    if args.cost:
        cost()
        return
    if args.table_only:
        rows = [json.loads(x) for x in JSONL.read_text().splitlines() if x.strip()]
    else:
        rows = run()
        JSONL.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table(rows)


if __name__ == "__main__":
    main()
