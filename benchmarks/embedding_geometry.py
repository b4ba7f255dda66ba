"""How should the scGPCL embedding be clustered? k-means on it as is, or something else?

Reads the warm-up embeddings that ``auto_k.py run`` saves (``benchmarks/runs/
auto_k_embeddings/<dataset>__<seed>.npz``: the ``fast`` preset's cell
representation after its 30 warm-up epochs, with the true labels), and scores
with the true K:

* ``raw``: k-means (10 restarts) on the embedding, as the method does;
* ``cos``: k-means on the rows scaled to unit length (the cosine geometry of
  the contrastive losses);
* ``pc10`` / ``pc20``: k-means on the top 10 / 20 principal components of the
  embedding;
* ``leiden``: Leiden on a 15-NN graph of the embedding, resolution searched so
  the cluster count is closest to K (the ``leiden_tuned`` rule of the harness).

It also reports how much variance the embedding's first principal components
carry (an isotropic embedding spreads it evenly over its 64 dimensions).

    python benchmarks/embedding_geometry.py     # -> benchmarks/results/embedding_geometry.md
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

EMB_DIR = harness.REPO / "benchmarks" / "runs" / "auto_k_embeddings"
OUT = harness.REPO / "benchmarks" / "results" / "embedding_geometry.md"
VARIANTS = ("raw", "cos", "pc10", "pc20", "leiden")


def score(z: np.ndarray, y: np.ndarray, k: int, seed: int = 0) -> tuple[dict[str, float], np.ndarray]:
    import anndata as ad
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.metrics import adjusted_rand_score

    def km(x):
        return adjusted_rand_score(y, KMeans(k, n_init=10, random_state=seed).fit_predict(x))

    ev = PCA().fit(z).explained_variance_ratio_
    res = {"raw": km(z), "cos": adjusted_rand_score(y, harness.kmeans_cosine(z, k, seed, n_init=10))}
    for p in (10, 20):
        res[f"pc{p}"] = km(PCA(p, random_state=seed).fit_transform(z))
    a = ad.AnnData(np.zeros((z.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = z
    labels, _, _ = harness.leiden_search(a, k, seed)
    res["leiden"] = adjusted_rand_score(y, labels)
    return res, ev


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emb-dir", default=str(EMB_DIR))
    ap.add_argument("--md", default=str(OUT))
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    files = sorted(Path(args.emb_dir).glob("*.npz"))
    if not files:
        sys.exit(f"no embeddings in {args.emb_dir}: run `python benchmarks/auto_k.py run` first")
    rows = []
    for f in files:
        d = np.load(f, allow_pickle=True)
        res, ev = score(d["z"], d["labels"], int(d["k"]))
        dataset, seed = f.stem.rsplit("__", 1)
        rows.append((dataset, seed, int(d["k"]), d["z"].shape, ev, res))
        print(dataset, seed, {k: round(v, 3) for k, v in res.items()}, flush=True)
    L = ["# Clustering the scGPCL embedding: k-means as is, or something else?", "",
         "Command: `python benchmarks/embedding_geometry.py` (reads the warm-up embeddings saved by "
         "`python benchmarks/auto_k.py run`: `fast` preset, cell representation after the 30 warm-up "
         "epochs, before prototypes and fine-tuning). ARI against the labels, true K; k-means with 10 "
         "restarts; `leiden`: 15-NN graph of the embedding, resolution in {0.05, ..., 2} with the cluster "
         "count closest to K. `PC1` / `PC1-10`: share of the embedding's variance on its first principal "
         "component(s).", "",
         "| dataset | seed | K | cells x dims | PC1 | PC1-10 | " + " | ".join(f"`{v}`" for v in VARIANTS) + " |",
         "|---|---|---|---|---|---|" + "---|" * len(VARIANTS)]
    for dataset, seed, k, shape, ev, res in rows:
        best = max(res.values())
        cells = [f"**{res[v]:.3f}**" if res[v] == best else f"{res[v]:.3f}" for v in VARIANTS]
        L.append(f"| {dataset} | {seed} | {k} | {shape[0]} x {shape[1]} | {ev[0]:.3f} | {ev[:10].sum():.2f} | "
                 + " | ".join(cells) + " |")
    means = {v: float(np.mean([r[5][v] for r in rows])) for v in VARIANTS}
    L.append(f"| **mean over {len(rows)} embeddings** | | | | | | " + " | ".join(f"{means[v]:.3f}" for v in VARIANTS)
             + " |")
    Path(args.md).write_text("\n".join(L) + "\n")
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
