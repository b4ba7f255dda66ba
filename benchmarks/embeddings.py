"""Pre-trained representations of the benchmark datasets, saved for offline studies of the clustering step.

    python benchmarks/embeddings.py dump --seeds 0 1 2 [--datasets ...] [--override KEY=VALUE ...]
    python benchmarks/embeddings.py clusterers --methods kmeans_n10 kmeans_n20 kmeans_n100 central_kmeans consensus \\
        --jsonl benchmarks/results/clustering_step.jsonl
    python benchmarks/embeddings.py table          # -> benchmarks/results/clustering_step.md

``dump`` pre-trains scGPCL with the package defaults (no fine-tuning) once per dataset and seed, and
saves every cell's representation and the labels to ``benchmarks/runs/emb/<dataset>__<seed>.npz``
(gitignored), each run in its own process. ``clusterers`` then runs several ways of turning one
representation into K clusters on all of them (k-means at several restart counts, the most central of
many k-means solutions, consensus, Ward, Ward on an over-clustering, Leiden tuned to K, Gaussian
mixtures) and tabulates the ARI against the labels, with the datasets used to choose (``CHOOSE``) and
to confirm (``CONFIRM``) reported apart. The split was drawn once, before looking at any result, with
``numpy.random.default_rng(27).permutation`` of the sorted dataset names (first six: choose).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCGPCL_SHARED", REPO.parent / "shared"))
#: where ``dump`` saves (``SCGPCL_EMB_DIR`` overrides it, e.g. for ``ensemble.py``'s members)
OUT = Path(os.environ.get("SCGPCL_EMB_DIR", REPO / "benchmarks" / "runs" / "emb"))
DATASETS = sorted([
    "baron_human_came2142", "baron_mouse1", "camp_brain_organoid", "cellbench_celseq2_3cl", "cite_cbmc_top2000",
    "human_kidney_top2000", "klein_subset1000", "mouse_bladder_top2000", "pbmc4k_10x_top2000", "pollen",
    "worm_neuron", "zeisel_full3005_top4000_from_log1p", "zeisel_subset_descend",
])
_perm = np.random.default_rng(27).permutation(len(DATASETS))
CHOOSE = sorted(DATASETS[i] for i in _perm[:6])
CONFIRM = sorted(DATASETS[i] for i in _perm[6:])


def _dump_one(dataset: str, seed: int, overrides: dict) -> None:
    import anndata as ad
    import torch

    import scgpcl
    from scgpcl._machine import cpu_model

    torch.set_num_threads(1)
    a = ad.read_h5ad(SHARED / "data" / "real" / f"{dataset}.h5ad")
    truth = a.obs["cell_type"].astype(str).to_numpy()
    k = len(np.unique(truth))
    t0 = time.process_time()
    m = scgpcl.SCGPCL(a, k, random_state=seed, device="cpu", finetune=False, **overrides)
    m.train(progress=False)
    z = m.trainer.embed().numpy()
    np.savez_compressed(OUT / f"{dataset}__{seed}.npz", z=z, truth=np.asarray(truth[m.data.cell_mask], dtype=str), k=k,
                        cells=np.flatnonzero(np.asarray(m.data.cell_mask)),
                        cpu_s=time.process_time() - t0, overrides=json.dumps(overrides), cpu=cpu_model())


def dump(args) -> None:
    from harness import parse_overrides

    OUT.mkdir(parents=True, exist_ok=True)
    overrides = parse_overrides(args.override)
    for d in args.datasets:
        for s in args.seeds:
            if (OUT / f"{d}__{s}.npz").exists():
                continue
            env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            subprocess.run([sys.executable, __file__, "_one", d, str(s), json.dumps(overrides)], check=True, env=env)
            print(f"{d} seed {s} saved", flush=True)


# ----------------------------------------------------------------------------- clusterers
def _kmeans(z, k, seed, n_init):
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=n_init, random_state=seed).fit(z)


def central_kmeans(z, k, seed, n_solutions=20):
    """The k-means solution (of ``n_solutions`` single k-means++ runs) most similar on average to the others."""
    from sklearn.metrics import adjusted_rand_score

    sols = [_kmeans(z, k, seed * 1000 + i, 1).labels_ for i in range(n_solutions)]
    agree = np.array([[adjusted_rand_score(a, b) if i != j else 0.0 for j, b in enumerate(sols)]
                      for i, a in enumerate(sols)])
    return sols[int(agree.sum(1).argmax())]


def consensus(z, k, seed, n_solutions=20):
    import scgpcl.train as T

    sols = [_kmeans(z, k, seed * 1000 + i, 1).labels_ for i in range(n_solutions)]
    return T.consensus_labels(sols, k, seed=seed)


def ward(z, k, seed):
    from sklearn.cluster import AgglomerativeClustering

    if len(z) > 12000:
        return None
    return AgglomerativeClustering(k, linkage="ward").fit_predict(z)


def ward_on_kmeans(z, k, seed, factor=5):
    """k-means into ``factor * K`` small clusters, then Ward linkage of their centres (weighted by size)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    m = min(len(z) - 1, factor * k)
    km = _kmeans(z, m, seed, 3)
    centres, counts = km.cluster_centers_, np.bincount(km.labels_, minlength=m)
    # Ward on centres with multiplicity: repeat each centre by its count (capped) to weight it
    reps = np.repeat(np.arange(m), np.clip(counts, 1, 50))
    tree = linkage(centres[reps], method="ward")
    groups = fcluster(tree, k, criterion="maxclust") - 1
    first = np.zeros(m, dtype=int)
    for i, c in enumerate(reps):
        first[c] = groups[i]
    return first[km.labels_]


def leiden_k(z, k, seed):
    import anndata as ad
    import scanpy as sc

    a = ad.AnnData(obsm={"X": z})
    a.obs_names = [str(i) for i in range(len(z))]
    extra = {"transformer": "sklearn"} if len(z) > 4096 else {}
    sc.pp.neighbors(a, use_rep="X", n_neighbors=15, random_state=0, **extra)
    best = None
    for r in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0, 1.2, 1.5, 2.0):
        sc.tl.leiden(a, resolution=r, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
        lab = a.obs["leiden"].astype(int).to_numpy()
        score = (abs(len(np.unique(lab)) - k), abs(r - 1))
        if best is None or score < best[0]:
            best = (score, lab)
    return best[1]


def gmm(z, k, seed):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, covariance_type="diag", n_init=3, random_state=seed).fit_predict(z)


CLUSTERERS = {
    "kmeans_n10": lambda z, k, s: _kmeans(z, k, s, 10).labels_,
    "kmeans_n20": lambda z, k, s: _kmeans(z, k, s, 20).labels_,
    "kmeans_n100": lambda z, k, s: _kmeans(z, k, s, 100).labels_,
    "central_kmeans": central_kmeans,
    "consensus": consensus,
    "ward": ward,
    "ward_on_kmeans5": ward_on_kmeans,
    "leiden_k": leiden_k,
    "gmm_diag": gmm,
}


def clusterers(args) -> None:
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for path in sorted(OUT.glob("*.npz")):
        d = np.load(path, allow_pickle=True)  # our own files (earlier ones stored the labels as objects)
        dataset, seed = path.stem.rsplit("__", 1)
        z, truth, k = d["z"], d["truth"], int(d["k"])
        for name in args.methods:
            t0 = time.process_time()
            lab = CLUSTERERS[name](z, k, int(seed))
            if lab is None:
                continue
            rows.append({"dataset": dataset, "seed": int(seed), "method": name, "ARI": adjusted_rand_score(truth, lab),
                         "cpu_s": time.process_time() - t0})
        print(f"{dataset} {seed}: " + " ".join(f"{r['method']} {r['ARI']:.3f}" for r in rows[-len(args.methods):]),
              flush=True)
    Path(args.jsonl).write_text("".join(json.dumps(r) + "\n" for r in rows))


def table(args) -> None:
    """Markdown: mean ARI per clusterer over datasets (each a mean over seeds), choose and confirm halves,
    the paired difference to ``--reference`` with its standard error over datasets, and the seed SD."""
    rows = [json.loads(x) for x in Path(args.jsonl).read_text().splitlines() if x.strip()]
    by: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        by.setdefault(r["method"], {}).setdefault(r["dataset"], []).append(r["ARI"])
    ref = by[args.reference]
    L = ["# Which k-means run starts fine-tuning?", "",
         "The representation after pre-training with the package defaults (no fine-tuning), 13 datasets x seeds "
         "0, 1, 2 (`python benchmarks/embeddings.py dump`), clustered into K groups by each rule; ARI against "
         "the labels, mean over seeds then over datasets. `central_kmeans`: of 20 single-start k-means runs, the "
         "one whose labels agree best (mean ARI) with the other 19; `consensus`: k-means on the 20 runs' "
         "co-memberships; `kmeans_nX`: scikit-learn's best-inertia of X restarts. Paired difference to "
         f"`{args.reference}` (the rule the fine-tuning start used) with its standard error over datasets. "
         f"Generated by `python benchmarks/embeddings.py table` from `{Path(args.jsonl).name}`. Measured on "
         "2026-12-03; pre-training has not changed since (on four dumps at the defaults of 2026-12-05, "
         "`kmeans_n20` gives the same ARI within 0.001), but fine-tuning now starts from k-means on the representation joined "
         "with the features' principal components (`hybrid.md`), which this page does not cover.", "",
         "| rule | all (13) | choose (6) | confirm (7) | difference, all | difference, choose | difference, confirm "
         "| mean seed SD |", "|---|---|---|---|---|---|---|---|"]
    for method, per in by.items():
        cells = []
        for names in (DATASETS, CHOOSE, CONFIRM):
            cells.append(f"{np.mean([np.mean(per[d]) for d in names if d in per]):.3f}")
        for names in (DATASETS, CHOOSE, CONFIRM):
            diff = np.array([np.mean(per[d]) - np.mean(ref[d]) for d in names if d in per and d in ref])
            se = diff.std(ddof=1) / np.sqrt(len(diff)) if len(diff) > 1 else float("nan")
            cells.append(f"{diff.mean():+.3f} ± {se:.3f}")
        sd = np.mean([np.std(v, ddof=1) for v in per.values() if len(v) > 1])
        L.append(f"| `{method}` | " + " | ".join(cells) + f" | {sd:.3f} |")
    L += ["", "Per dataset (mean over seeds):", "", "| dataset | half | " + " | ".join(f"`{m}`" for m in by) + " |",
          "|---|---|" + "---|" * len(by)]
    for d in DATASETS:
        L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | " + " | ".join(
            f"{np.mean(by[m][d]):.3f}" if d in by[m] else "-" for m in by) + " |")
    if "central_kmeans" in by and args.reference in by:
        L += ["", "**Decision.** `central_kmeans` looked like a clear gain on the first four datasets of the choose "
              "half (+0.07 ± 0.04; baron_mouse1 0.82 against 0.65), and the default was switched to it. On all "
              "six it is not significant, and the confirming half reverses it: on zeisel_subset_descend most "
              "single-start runs land on the same poor three-cluster split, and the most central run is that "
              "split (0.48 against 0.92). It was therefore not adopted; the option stays "
              "(`kmeans_select=\"central\"`). More restarts (`kmeans_n100`) gain a little everywhere "
              "(+0.012 ± 0.011), not enough to adopt on this evidence. `consensus` loses."]
    Path(args.md).write_text("\n".join(L) + "\n")
    print(f"wrote {args.md}")


def main(argv=None):
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--datasets", nargs="+", default=DATASETS)
    d.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    d.add_argument("--override", action="append", default=[])
    c = sub.add_parser("clusterers")
    c.add_argument("--methods", nargs="+", default=list(CLUSTERERS))
    c.add_argument("--jsonl", default=str(REPO / "benchmarks" / "runs" / "clusterers.jsonl"))
    t = sub.add_parser("table")
    t.add_argument("--jsonl", default=str(REPO / "benchmarks" / "results" / "clustering_step.jsonl"))
    t.add_argument("--md", default=str(REPO / "benchmarks" / "results" / "clustering_step.md"))
    t.add_argument("--reference", default="kmeans_n20")
    o = sub.add_parser("_one")
    o.add_argument("dataset")
    o.add_argument("seed", type=int)
    o.add_argument("overrides")
    args = p.parse_args(argv)
    if args.cmd == "_one":
        _dump_one(args.dataset, args.seed, json.loads(args.overrides))
    elif args.cmd == "dump":
        dump(args)
    elif args.cmd == "table":
        table(args)
    else:
        clusterers(args)


if __name__ == "__main__":
    main()
