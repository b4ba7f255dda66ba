"""Where DEC fine-tuning starts: k-means against consensus and graph starts.

``dec_study.py`` showed that the run-to-run spread of the `fast` preset comes
from the k-means start of DEC fine-tuning (single k-means restarts on one
pre-trained baron_human embedding span ARI 0.29-0.85; the lowest-inertia pick
and the medoid restart are both average). This script pre-trains once per
(dataset, seed) with the `fast` preset and runs DEC fine-tuning from several
starts on that same model, the centres being each start's cluster means:

``kmeans``
    the preset's own start: best of ``kmeans_n_init`` k-means restarts.
``epochs``
    consensus of the k-means labels (K clusters) of the last ``--epochs``
    pre-training epochs (computed anyway for the prototypes) and the start
    above: k-means on the cells' concatenated one-hot labels, i.e. on how
    often two cells share a cluster.
``restarts``
    the same consensus over 20 single k-means restarts on the final embedding.
``leiden``
    Leiden on a 15-nearest-neighbour graph of the embedding, resolution
    bisected until it gives K clusters (the closest count if none does).

    python benchmarks/init_study.py run --datasets baron_human_came2142 --seeds 0 1 2 --out init.jsonl
    python benchmarks/init_study.py analyse init.jsonl
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

STARTS = ("kmeans", "epochs", "restarts", "leiden")


def leiden_k(z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Leiden on a kNN graph of ``z`` with the resolution bisected to give ``k`` clusters."""
    import igraph as ig
    import leidenalg

    from scgpcl.train._auto_k import knn_graph

    g = knn_graph(z, 15).tocoo()
    keep = g.row < g.col
    graph = ig.Graph(n=z.shape[0], edges=list(zip(g.row[keep].tolist(), g.col[keep].tolist(), strict=True)))
    graph.es["weight"] = g.data[keep].tolist()

    def run(res):
        p = leidenalg.find_partition(graph, leidenalg.RBConfigurationVertexPartition, weights="weight",
                                     resolution_parameter=res, seed=seed, n_iterations=-1)
        return np.asarray(p.membership)

    lo, hi = 0.01, 5.0
    best = run(1.0)
    for _ in range(25):
        mid = float(np.sqrt(lo * hi))
        lab = run(mid)
        n = len(np.unique(lab))
        if abs(n - k) < abs(len(np.unique(best)) - k):
            best = lab
        if n == k:
            return lab
        lo, hi = (mid, hi) if n < k else (lo, mid)
    return best


def study(dataset: str, seed: int, threads: int, n_epochs: int, which: tuple[str, ...] = STARTS) -> dict:
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from threadpoolctl import threadpool_limits

    from scgpcl.train._kmeans import consensus_labels

    # the trainer keeps the last n_epochs epochs' labels (dec_init_epochs); dec_init
    # stays "kmeans", so its own start is the `kmeans` one below
    tr, truth, k = harness.fast_trainer(dataset, seed, threads, dec_init_epochs=n_epochs)
    t0 = time.perf_counter()
    pre = tr.pretrain()
    epoch_labels = list(tr.recent_epoch_labels)
    out = {"dataset": dataset, "seed": seed, "K": k, "threads": threads, "pretrain_epochs": pre.epochs,
           "pretrain_s": time.perf_counter() - t0, "consensus_epochs": len(epoch_labels)}
    module, rstate = copy.deepcopy(tr.module), tr.random_state()

    z = tr.embed().cpu().numpy().astype(np.float32)
    with threadpool_limits(limits=threads, user_api="openmp"):
        tr.init_clusters()
        starts = {"kmeans": tr.init_labels.copy()}
        t = time.perf_counter()
        starts["epochs"] = consensus_labels([*epoch_labels, starts["kmeans"]], k, seed=seed)
        out["epochs_s"] = time.perf_counter() - t
        if "restarts" in which:
            t = time.perf_counter()
            restarts = [KMeans(k, n_init=1, random_state=1000 * seed + i).fit(z).labels_ for i in range(20)]
            starts["restarts"] = consensus_labels(restarts, k, seed=seed)
            out["restarts_s"] = time.perf_counter() - t
    if "leiden" in which:
        t = time.perf_counter()
        starts["leiden"] = leiden_k(z, k, seed)
        out["leiden_s"] = time.perf_counter() - t
    out["epoch_label_ari"] = [float(ari(truth, lab)) for lab in epoch_labels]

    out["starts"] = {}
    for name, lab in starts.items():
        tr.module = copy.deepcopy(module)
        tr.set_random_state(rstate)
        _, inv = np.unique(lab, return_inverse=True)
        centres = np.stack([z[inv == c].mean(0) for c in range(inv.max() + 1)])

        def init(centres=centres, inv=inv):
            tr.module.init_cluster_centres(torch.from_numpy(centres).to(tr.device))
            tr.init_labels = inv
            tr.init_embedding = z
            return inv

        tr.init_clusters = init
        t = time.perf_counter()
        fine = tr.finetune()
        secs = time.perf_counter() - t
        _, labels, _ = tr.predict()
        out["starts"][name] = {
            "ARI_start": float(ari(truth, lab)), "NMI_start": float(nmi(truth, lab)),
            "n_start": int(inv.max() + 1), "ARI": float(ari(truth, labels)), "NMI": float(nmi(truth, labels)),
            "epochs": fine.epochs, "seconds": secs,
        }
        del tr.init_clusters
        s = out["starts"][name]
        print(f"{dataset} seed {seed} {name}: start {s['ARI_start']:.3f} ({s['n_start']} clusters) "
              f"final {s['ARI']:.3f} ({fine.epochs} ep, {secs:.0f} s)", flush=True)
    return out


def cmd_run(args) -> None:
    done = {(r["dataset"], r["seed"]) for r in harness.load_records(args.out)}
    for d in args.datasets:
        for s in args.seeds:
            if (d, s) in done:
                continue
            rec = study(d, s, args.threads, args.epochs, tuple(args.starts))
            rec["command"] = "python benchmarks/init_study.py " + " ".join(sys.argv[1:])
            harness.append_record(args.out, rec)


def cmd_analyse(args) -> None:
    recs = [r for p in args.files for r in harness.load_records(p)]
    print("| dataset | seed | " + " | ".join(f"{n}: start / final" for n in STARTS) + " |")
    print("|---|---|" + "---|" * len(STARTS))
    for r in recs:
        s = r["starts"]
        print(f"| {r['dataset']} | {r['seed']} | "
              + " | ".join(f"{s[n]['ARI_start']:.3f} / {s[n]['ARI']:.3f}" if n in s else "—" for n in STARTS) + " |")
    print()
    for n in STARTS[1:]:
        have = [r for r in recs if n in r["starts"]]
        if not have:
            continue
        base = np.array([r["starts"]["kmeans"]["ARI"] for r in have])
        v = np.array([r["starts"][n]["ARI"] for r in have])
        d = v - base
        print(f"{n}: {len(have)} runs; k-means start {base.mean():.3f}, {n} {v.mean():.3f}, paired difference "
              f"{d.mean():+.3f} +- {d.std(ddof=1) if len(d) > 1 else 0:.3f} "
              f"(better in {(d > 0.005).sum()}, worse in {(d < -0.005).sum()})")
        per = {}
        for r in have:
            per.setdefault(r["dataset"], []).append(r["starts"][n]["ARI"] - r["starts"]["kmeans"]["ARI"])
        print("  per dataset (mean difference): "
              + ", ".join(f"{ds} {np.mean(x):+.3f} ({len(x)})" for ds, x in per.items()))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", nargs="+", required=True)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--epochs", type=int, default=10, help="pre-training epochs in the consensus (default 10)")
    r.add_argument("--starts", nargs="+", default=list(STARTS), choices=STARTS,
                   help="starts to compare (kmeans and epochs are always computed)")
    r.add_argument("--out", required=True)
    r.set_defaults(func=cmd_run)
    a = sub.add_parser("analyse")
    a.add_argument("files", nargs="+")
    a.set_defaults(func=cmd_analyse)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
