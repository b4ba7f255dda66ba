"""Would a Leiden start help fine-tuning where tuned Leiden beats scGPCL (klein_subset1000)?

    python benchmarks/embeddings.py dump --seeds 0 1 2        # pre-trained representations, package defaults
    python benchmarks/leiden_start.py run --spaces            # -> results/leiden_start.jsonl
    python benchmarks/leiden_start.py baseline                # -> results/leiden_start_baseline.jsonl
    python benchmarks/leiden_start.py table                   # -> results/leiden_start.md

**Question.** On klein_subset1000 (a differentiation continuum, 4 time points) tuned Leiden reaches 0.908 ARI
against scGPCL's 0.772 and PCA + k-means' 0.735, on the same principal components as PCA + k-means: is the gap
in the clustering rule? Fine-tuning starts from k-means on the representation joined with the features' principal components
(``kmeans_pca_weight=0.5``). Does a start from Leiden on the same joined space, tuned to exactly K clusters,
do better?

For each dataset and seed s = 0, 1, 2 (``embeddings.py dump``: the package defaults, fine-tuning off):
``J``, the joined space the package's start uses (the representation and 50 principal components of the
package's own features, each block centred and scaled to unit total variance, the PCA block times 0.5).
Rows:

- ``kmeans``: scikit-learn k-means on ``J``, true K, 20 restarts, ``random_state`` s (the package's start);
- ``leiden``: Leiden (igraph, 2 iterations, ``random_state`` s) on the 15-NN graph of ``J``, the resolution
  searched over the harness's grid and then bisected until it gives exactly K clusters; if no resolution
  does, the smallest cluster is merged into the one with the nearest mean (too many) or the largest split
  by 2-means (too few) until there are K;
- ``leiden_nc``: every cell moved to the nearest mean (in ``J``) of the ``leiden`` clusters, one assignment
  step. DEC's first soft assignment is to the clusters' means, so this, not ``leiden``, is what
  fine-tuning would start from;
- with ``--spaces``, the diagnosis of where Leiden's lead on klein lives: the same exact-K Leiden on one block
  alone, ``leiden_p`` (the harness's scanpy pipeline PCs, what its tuned Leiden clusters), ``leiden_q`` (the
  package's feature PCs) and ``leiden_z`` (the representation).

``baseline`` (no dump needed) asks three milder questions on the PCA + k-means baseline's own pipeline
(``harness.scanpy_pcs``, k-means true K, 10 restarts, ``random_state`` s):

- ``propagated_a``: keep k-means' clusters as the start and let the labels settle along the 15-NN graph that
  tuned Leiden clusters (scanpy's connectivities W, P = D^-1 W): label propagation with restart,
  Y <- (1 - a) P Y + a Y0 from the one-hot k-means labels Y0, 20 iterations, labels = argmax Y, for a = 0.2
  (the setting its rule fixed) and 0.5;
- ``gmm_diag``, ``gmm_spherical``: a Gaussian mixture instead of k-means (scikit-learn ``GaussianMixture``,
  K components, each with a weight and a variance per dimension (``diag``) or one variance (``spherical``),
  ``n_init=3``, ``random_state`` s), which fits clusters of unequal size and spread; diagonal covariances
  decide (fixed before its runs);
- ``spectral_kmeans``, ``spectral_qr``: spectral clustering of the same 15-NN graph into exactly K clusters
  (scikit-learn ``SpectralClustering``, ``affinity="precomputed"``, ``n_init=10``, ``random_state`` s, the
  eigenvectors' labels assigned by k-means or by ``cluster_qr``); k-means decides (fixed before its runs).

ARI against the labels; differences paired by dataset (mean over seeds first), mean ± standard error over
datasets, the choosing and confirming halves (``embeddings.CHOOSE``) apart. No fine-tuning on this page.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy import _mse as _pm  # noqa: E402
from embeddings import CHOOSE, CONFIRM, DATASETS, OUT, SHARED  # noqa: E402

from scgpcl._machine import cpu_model  # noqa: E402  (each record names the CPU)
from scgpcl.train._joined import _block, cluster_means  # noqa: E402  (the package's own block scaling)

JSONL = HERE / "results" / "leiden_start.jsonl"
BASELINE = HERE / "results" / "leiden_start_baseline.jsonl"
#: ``baseline``: the restart weights a of label propagation (0.2 decides, fixed before the runs)
RESTARTS = (0.2, 0.5)
#: ``baseline``: the Gaussian mixtures' covariance types (diag decides, fixed before the runs)
COVARIANCES = ("diag", "spherical")
#: ``baseline``: how spectral clustering labels the eigenvectors (kmeans decides, fixed before the runs)
SPECTRAL = ("kmeans", "cluster_qr")
MD = HERE / "results" / "leiden_start.md"
VARIANTS = ("kmeans", "leiden", "leiden_nc")
#: ``--spaces``: the same exact-K Leiden on one block alone (the diagnosis of where Leiden's lead lives)
SPACES = ("leiden_p", "leiden_q", "leiden_z")
WEIGHT = 0.5  # the package default kmeans_pca_weight




def _relabel(lab: np.ndarray) -> np.ndarray:
    return np.unique(lab, return_inverse=True)[1]


def _force_k(x: np.ndarray, lab: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Merge the smallest cluster into the nearest (by mean) or split the largest by 2-means until K."""
    from sklearn.cluster import KMeans

    lab = _relabel(lab)
    while lab.max() + 1 > k:
        n = lab.max() + 1
        mu = cluster_means(x, lab, n)
        small = int(np.bincount(lab).argmin())
        d = ((mu - mu[small]) ** 2).sum(1)
        d[small] = np.inf
        lab = _relabel(np.where(lab == small, int(d.argmin()), lab))
    while lab.max() + 1 < k:
        big = int(np.bincount(lab).argmax())
        idx = np.flatnonzero(lab == big)
        sub = KMeans(2, n_init=10, random_state=seed).fit_predict(x[idx])
        lab = lab.copy()
        lab[idx[sub == 1]] = lab.max() + 1
    return lab


def leiden_exactly_k(x: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, float, bool]:
    """Leiden on the 15-NN graph of ``x`` with exactly ``k`` clusters; (labels, resolution, forced)."""
    import anndata as ad
    import scanpy as sc

    from harness import RESOLUTIONS

    a = ad.AnnData(obsm={"X": x.astype(np.float32)})
    a.obs_names = [str(i) for i in range(len(x))]
    extra = {"transformer": "sklearn"} if len(x) > 8192 else {}
    sc.pp.neighbors(a, use_rep="X", n_neighbors=15, random_state=0, **extra)

    def at(r: float) -> np.ndarray:
        sc.tl.leiden(a, resolution=r, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        return a.obs["leiden"].astype(int).to_numpy()

    counts = {}
    for r in RESOLUTIONS:
        lab = at(r)
        counts[r] = (len(np.unique(lab)), lab)
        if counts[r][0] == k:
            return lab, r, False
    below = [r for r in RESOLUTIONS if counts[r][0] < k]
    above = [r for r in RESOLUTIONS if counts[r][0] > k]
    lo = max(below) if below else None
    hi = min([r for r in above if lo is None or r > lo], default=None)
    if lo is not None and hi is not None:
        for _ in range(12):
            mid = (lo + hi) / 2
            lab = at(mid)
            n = len(np.unique(lab))
            if n == k:
                return lab, mid, False
            lo, hi = (mid, hi) if n < k else (lo, mid)
    # nearest count, then merged or split to exactly k
    r = min(RESOLUTIONS, key=lambda r: (abs(counts[r][0] - k), abs(r - 1.0)))
    return _force_k(x, counts[r][1], k, seed), r, True


def run(args) -> None:
    import anndata as ad
    import scipy.sparse as sp
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    from scgpcl import PreprocessConfig
    from scgpcl.data import prepare

    rows = []
    for d in args.datasets:
        a, blocks = None, {}
        for s in args.seeds:
            path = OUT / f"{d}__{s}.npz"
            if not path.exists():
                print(f"missing {path}", flush=True)
                continue
            f = np.load(path)
            cells, truth, k = f["cells"], f["truth"], int(f["k"])
            if a is None:
                a = ad.read_h5ad(SHARED / "data" / "real" / f"{d}.h5ad")
                own = prepare(sp.csr_matrix(a.X, dtype=np.float32), a.var_names.to_numpy(), PreprocessConfig())
                if not np.array_equal(np.flatnonzero(own.cell_mask), cells):
                    raise SystemExit(f"{d}: the package keeps other cells than the dump did")
                q = _block(PCA(50, random_state=0).fit_transform(own.dense_features()))
            j = np.hstack([_block(f["z"]), WEIGHT * q])
            km = KMeans(k, n_init=20, random_state=s).fit(j).labels_
            ld, res, forced = leiden_exactly_k(j, k, s)
            mu = cluster_means(j, ld, k)
            nc = ((j[:, None, :] - mu[None]) ** 2).sum(2).argmin(1)
            names, labs = list(VARIANTS), [km, ld, nc]
            if args.spaces:
                from harness import scanpy_pcs

                if "p" not in blocks:
                    blocks["p"] = _block(scanpy_pcs(a[cells]).obsm["X_pca"])
                for b, x in (("p", blocks["p"]), ("q", q), ("z", _block(f["z"]))):
                    names.append(f"leiden_{b}")
                    labs.append(leiden_exactly_k(x, k, s)[0])
            # "resolution" and "forced" are those of the `leiden` run on J, in every row of this seed
            for name, lab in zip(names, labs, strict=True):
                rows.append({"dataset": d, "seed": s, "variant": name, "ARI": float(adjusted_rand_score(truth, lab)),
                             "n_clusters": int(len(np.unique(lab))), "resolution": res, "forced": forced,
                             "scored_on": cpu_model()})  # this clustering's CPU; embeddings: embeddings.py
            print(d, s, " ".join(f"{r['variant']} {r['ARI']:.3f}" for r in rows[-len(names):]),
                  f"res {res:.3g}{' forced' if forced else ''}", flush=True)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {args.out}")



def propagated(w, start: np.ndarray, k: int, restart: float, iterations: int = 20) -> np.ndarray:
    """Label propagation with restart over the graph ``w`` from the one-hot labels ``start``."""
    import scipy.sparse as sp

    deg = np.asarray(w.sum(1)).ravel()
    p = sp.diags(1 / np.where(deg > 0, deg, 1)) @ w
    y0 = np.zeros((len(start), k))
    y0[np.arange(len(start)), start] = 1
    y = y0.copy()
    for _ in range(iterations):
        y = (1 - restart) * (p @ y) + restart * y0
    return y.argmax(1)


def baseline(args) -> None:
    from sklearn.cluster import KMeans, SpectralClustering
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture

    from harness import load_dataset, pca_neighbors, scanpy_pcs

    rows = []
    for d in args.datasets:
        a = load_dataset(d, 0)
        truth = a.obs["cell_type"].astype(str).to_numpy()
        k = len(np.unique(truth))
        pcs = scanpy_pcs(a)
        pca_neighbors(pcs)
        w = pcs.obsp["connectivities"].tocsr()
        for s in args.seeds:
            km = KMeans(k, n_init=10, random_state=s).fit_predict(pcs.obsm["X_pca"])
            labs = {"kmeans": km, **{f"propagated_{r:g}": propagated(w, km, k, r) for r in RESTARTS}}
            for cov in COVARIANCES:
                gmm = GaussianMixture(k, covariance_type=cov, n_init=3, random_state=s).fit(pcs.obsm["X_pca"])
                labs[f"gmm_{cov}"] = gmm.predict(pcs.obsm["X_pca"])
            for assign in SPECTRAL:
                spec = SpectralClustering(k, affinity="precomputed", assign_labels=assign, n_init=10, random_state=s)
                labs[f"spectral_{assign.split('_')[-1]}"] = spec.fit_predict(w)
            for name, lab in labs.items():
                rows.append({"dataset": d, "seed": s, "variant": name, "ARI": float(adjusted_rand_score(truth, lab)),
                             "n_clusters": int(len(np.unique(lab))), "k": k, "scored_on": cpu_model()})
            print(d, s, " ".join(f"{r['variant']} {r['ARI']:.3f} ({r['n_clusters']})" for r in rows[-len(labs):]),
                  flush=True)
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {args.out}")


def _baseline_table(path: Path) -> list[str]:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    mean: dict[str, dict[str, float]] = {}
    for v in sorted({r["variant"] for r in rows}):
        per: dict[str, list[float]] = {}
        for r in rows:
            if r["variant"] == v:
                per.setdefault(r["dataset"], []).append(r["ARI"])
        mean[v] = {d: float(np.mean(x)) for d, x in per.items()}
    ref, shown = mean["kmeans"], [v for v in mean if v != "kmeans"]
    L = ["## Label propagation, Gaussian mixtures and spectral clustering on the baseline's pipeline (`baseline`)", "",
         "Command: `python benchmarks/leiden_start.py baseline` (single-threaded). Rows: each clustering minus "
         "plain PCA + k-means, paired by dataset (mean over seeds 0-2), mean ± standard error over datasets; "
         "`fewer than K`: runs whose labels have fewer than K clusters.", "",
         "| clustering | all (13) | choose (6) | confirm (7) | klein_subset1000 | fewer than K |", "|---|---|---|---|---|---|"]
    for v in shown:
        lost = sum(r["n_clusters"] < r["k"] for r in rows if r["variant"] == v)
        n = sum(r["variant"] == v for r in rows)
        L.append(f"| `{v}` | " + " | ".join(_pm(np.array([mean[v][d] - ref[d] for d in names if d in mean[v]]))
                                            for names in (DATASETS, CHOOSE, CONFIRM))
                 + f" | {mean[v].get('klein_subset1000', float('nan')) - ref.get('klein_subset1000', float('nan')):+.3f}"
                 + f" | {lost} of {n} |")
    L += ["", "Per dataset (mean ARI over seeds):", "",
          "| dataset | half | `kmeans` | " + " | ".join(f"`{v}`" for v in shown) + " |", "|---|---|---|" + "---|" * len(shown)]
    for d in DATASETS:
        if d in ref:
            L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | {ref[d]:.3f} | "
                     + " | ".join(f"{mean[v][d]:.3f}" for v in shown) + " |")
    return L


def table(args) -> None:
    rows = [json.loads(x) for x in Path(args.out).read_text().splitlines() if x.strip()]
    by: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        by.setdefault(r["variant"], {}).setdefault(r["dataset"], []).append(r["ARI"])
    mean = {v: {d: float(np.mean(x)) for d, x in per.items()} for v, per in by.items()}
    ref = mean["kmeans"]
    shown = [v for v in VARIANTS + SPACES if v in mean]
    doc = (__doc__ or "").split("**Question.**", 1)[1].strip()
    L = ["# A Leiden start for fine-tuning?", "", "**Question.** " + doc, "",
         "Commands: `python benchmarks/embeddings.py dump --seeds 0 1 2`, `python benchmarks/leiden_start.py run "
         "--spaces` (single-threaded; measured 2026-12-05 on an Intel Xeon, 2 CPUs), `python benchmarks/leiden_start.py "
         "table`.", "",
         "| start | all (13) | choose (6) | confirm (7) | difference to `kmeans`, all | choose | confirm |",
         "|---|---|---|---|---|---|---|"]
    for v in shown:
        cells = [f"{np.mean([mean[v][d] for d in names if d in mean[v]]):.3f}" for names in (DATASETS, CHOOSE, CONFIRM)]
        cells += [_pm(np.array([mean[v][d] - ref[d] for d in names if d in mean[v]]))
                  for names in (DATASETS, CHOOSE, CONFIRM)]
        L.append(f"| `{v}` | " + " | ".join(cells) + " |")
    forced = sum(r["forced"] for r in rows if r["variant"] == "leiden")
    L += ["", f"Leiden runs that needed merging or splitting to reach K: {forced} of "
          f"{sum(r['variant'] == 'leiden' for r in rows)}.", "", "Per dataset (mean over seeds):", "",
          "| dataset | half | " + " | ".join(f"`{v}`" for v in shown) + " |", "|---|---|" + "---|" * len(shown)]
    for d in DATASETS:
        L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | "
                 + " | ".join(f"{mean[v][d]:.3f}" if d in mean[v] else "-" for v in shown) + " |")
    if Path(args.baseline).exists():
        L += ["", *_baseline_table(Path(args.baseline))]
    if args.notes and Path(args.notes).exists():
        L += ["", Path(args.notes).read_text().strip()]
    Path(args.md).write_text("\n".join(L) + "\n")
    print(f"wrote {args.md}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", nargs="+", default=DATASETS)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--out", default=str(JSONL))
    r.add_argument("--spaces", action="store_true", help="also Leiden on p, q and z alone (SPACES)")
    g = sub.add_parser("baseline", help="label propagation, Gaussian mixtures and spectral clustering on the "
                                        "baseline's pipeline")
    g.add_argument("--datasets", nargs="+", default=DATASETS)
    g.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    g.add_argument("--out", default=str(BASELINE))
    t = sub.add_parser("table")
    t.add_argument("--out", default=str(JSONL))
    t.add_argument("--baseline", default=str(BASELINE))
    t.add_argument("--md", default=str(MD))
    t.add_argument("--notes", default=str(HERE / "results" / "leiden_start_notes.md"))
    args = p.parse_args(argv)
    {"run": run, "baseline": baseline, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
