"""DEC fine-tuning variants compared from the same pre-trained model.

DEC fine-tuning is where most of the run-to-run variance of the `fast` preset
comes from (real.md: baron_human 0.60 vs 0.75 between two defaults whose
pre-trained embeddings were the other way round). To study it without the
pre-training's own noise, this script pre-trains once per (dataset, seed) with
the `fast` preset, snapshots the network and the trainer's random streams, and
runs every fine-tuning variant from that same snapshot (hence from the same
k-means initialisation). ``base`` is the preset itself, so its final ARI is
the one ``harness.py`` records for ``scgpcl_fast`` on the same seed.

Besides the final ARI/NMI of each variant it records, for the k-means
initialisation, the ARI of each of the ``n_init`` single restarts, to see how
much the choice among k-means optima matters.

    python benchmarks/dec_study.py run --datasets pbmc4k_10x_top2000 --seeds 0 1 --out dec.jsonl
    python benchmarks/dec_study.py analyse dec.jsonl
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

#: name -> (train-config overrides, sampler-config overrides, DEC-stage reseed or None)
#: A reseed gives the fine-tuning's batch order, subgraph sampling and masks
#: fresh random streams (same k-means initialisation): how much of a
#: variant's difference is DEC's own noise.
VARIANTS: dict[str, tuple[dict, dict, int | None]] = {
    "base": ({}, {}, None),
    "nomask": ({"finetune_masking": False}, {}, None),
    "lr0.1": ({"finetune_lr": 0.1}, {}, None),
    "lambda0.1": ({"lambda_cluster": 0.1}, {}, None),
    "base@1": ({}, {}, 1),
    "base@2": ({}, {}, 2),
    "nomask@1": ({"finetune_masking": False}, {}, 1),
    "nomask@2": ({"finetune_masking": False}, {}, 2),
}


def _snapshot(tr):
    return {
        "module": copy.deepcopy(tr.module),
        "random": tr.random_state(),
        "cfg": tr.cfg,
        "sampler_cfg": tr.sampler_cfg,
    }


def _restore(tr, snap):
    tr.module = copy.deepcopy(snap["module"])
    tr.set_random_state(snap["random"])
    tr.cfg = snap["cfg"]
    tr.sampler_cfg = snap["sampler_cfg"]


def study(dataset: str, seed: int, threads: int, variants: list[str]) -> dict:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score as ari
    from sklearn.metrics import normalized_mutual_info_score as nmi
    from threadpoolctl import threadpool_limits

    tr, truth, k = harness.fast_trainer(dataset, seed, threads)
    t0 = time.perf_counter()
    pre = tr.pretrain()
    out = {"dataset": dataset, "seed": seed, "K": k, "threads": threads, "pretrain_epochs": pre.epochs,
           "pretrain_s": time.perf_counter() - t0}
    snap = _snapshot(tr)

    # the k-means optima on the pre-trained embedding, one restart at a time
    z = tr.embed().cpu().numpy().astype(np.float32)
    restarts = []
    with threadpool_limits(limits=1, user_api="openmp"):
        for i in range(tr.cfg.kmeans_n_init):
            km = KMeans(k, n_init=1, random_state=1000 * seed + i).fit(z)
            restarts.append((float(km.inertia_), km.labels_))
    aris = [float(ari(truth, lab)) for _, lab in restarts]
    pair = np.array([[ari(a, b) for _, b in restarts] for _, a in restarts])
    medoid = int(np.argmax(pair.sum(1)))
    best = int(np.argmin([i for i, _ in restarts]))
    out["restarts"] = {"ari": aris, "inertia": [i for i, _ in restarts], "lowest_inertia": best, "medoid": medoid,
                       "mean_pairwise_ari": float((pair.sum() - len(pair)) / (len(pair) * (len(pair) - 1)))}

    out["variants"] = {}
    for name in variants:
        train_o, sampler_o, reseed = VARIANTS[name]
        _restore(tr, snap)
        if reseed is not None:
            tr.reseed([seed, 7777, reseed])
        tr.cfg = dataclasses.replace(tr.cfg, **train_o)
        tr.sampler_cfg = dataclasses.replace(tr.sampler_cfg, **sampler_o)
        trace = []

        def cb(epoch, record, trace=trace):  # this variant's trace, bound now
            trace.append({"epoch": epoch, "delta": record["delta_label"], "cluster": record["cluster"]})

        t = time.perf_counter()
        fine = tr.finetune(callback=cb)
        secs = time.perf_counter() - t
        _, labels, _ = tr.predict()
        out["variants"][name] = {
            "ARI": float(ari(truth, labels)), "NMI": float(nmi(truth, labels)),
            "ARI_init": float(ari(truth, tr.init_labels)), "epochs": fine.epochs, "seconds": secs,
            "n_clusters_found": int(len(np.unique(labels))), "stop": fine.stop_reason, "trace": trace,
        }
        print(f"{dataset} seed {seed} {name}: init {out['variants'][name]['ARI_init']:.3f} "
              f"final {out['variants'][name]['ARI']:.3f} ({fine.epochs} ep, {secs:.0f} s)", flush=True)
    return out


def cmd_run(args) -> None:
    done = {(r["dataset"], r["seed"]) for r in harness.load_records(args.out)}
    for d in args.datasets:
        for s in args.seeds:
            if (d, s) in done:
                continue
            rec = study(d, s, args.threads, args.variants)
            rec["command"] = "python benchmarks/dec_study.py " + " ".join(sys.argv[1:])
            harness.append_record(args.out, rec)


def cmd_analyse(args) -> None:
    recs = [r for p in args.files for r in harness.load_records(p)]
    names = [n for n in VARIANTS if any(n in r["variants"] for r in recs) and "@" not in n]
    print("| dataset | seed | pre-DEC (lowest inertia) | restarts: mean / min / max | medoid restart | "
          + " | ".join(names) + " |")
    print("|---|---|---|---|---|" + "---|" * len(names))
    for r in recs:
        a = r["restarts"]["ari"]
        v = r["variants"]
        cells = " | ".join(f"{v[n]['ARI']:.3f} ({v[n]['epochs']})" if n in v else "—" for n in names)
        print(f"| {r['dataset']} | {r['seed']} | {v['base']['ARI_init']:.3f} | {np.mean(a):.3f} / {min(a):.3f} / "
              f"{max(a):.3f} | {a[r['restarts']['medoid']]:.3f} | {cells} |")
    base = np.array([r["variants"]["base"]["ARI"] for r in recs])
    print(f"\nmean over {len(recs)} runs: base {base.mean():.3f}; in brackets: fine-tuning epochs")
    for n in names[1:]:
        have = [r for r in recs if n in r["variants"]]
        x = np.array([r["variants"][n]["ARI"] for r in have])
        d = x - np.array([r["variants"]["base"]["ARI"] for r in have])
        print(f"- {n} ({len(have)} runs): mean {x.mean():.3f}, paired diff with base {d.mean():+.3f} +- "
              f"{d.std(ddof=1) / np.sqrt(len(d)):.3f} (se), better by > 0.01 on {(d > 0.01).sum()}, "
              f"worse on {(d < -0.01).sum()}")
    reseeded = [r for r in recs if all(n in r["variants"] for n in ("base@1", "base@2", "nomask@1", "nomask@2"))]
    if reseeded:
        print(f"\nDEC-stage noise: {len(reseeded)} runs, each fine-tuned from one snapshot with 3 DEC random streams")
        print("| dataset | seed | base: 3 streams | nomask: 3 streams | base mean | nomask mean |")
        print("|---|---|---|---|---|---|")
        diffs, sds = [], []
        for r in reseeded:
            b = [r["variants"][n]["ARI"] for n in ("base", "base@1", "base@2")]
            m = [r["variants"][n]["ARI"] for n in ("nomask", "nomask@1", "nomask@2")]
            diffs.append(np.mean(m) - np.mean(b))
            sds += [np.std(b, ddof=1), np.std(m, ddof=1)]
            print(f"| {r['dataset']} | {r['seed']} | {', '.join(f'{x:.3f}' for x in b)} | "
                  f"{', '.join(f'{x:.3f}' for x in m)} | {np.mean(b):.3f} | {np.mean(m):.3f} |")
        d = np.array(diffs)
        print(f"within-run sd from the DEC stream alone: median {np.median(sds):.3f}, max {np.max(sds):.3f}")
        print(f"nomask - base (means over streams): {d.mean():+.3f} +- {d.std(ddof=1) / np.sqrt(len(d)):.3f} (se), "
              f"better on {(d > 0.01).sum()}, worse on {(d < -0.01).sum()}")
    init = np.array([r["variants"]["base"]["ARI_init"] for r in recs])
    med = np.array([r["restarts"]["ari"][r["restarts"]["medoid"]] for r in recs])
    print(f"pre-DEC: lowest inertia {init.mean():.3f}, medoid restart {med.mean():.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", nargs="+", required=True)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    r.add_argument("--out", required=True)
    a = sub.add_parser("analyse")
    a.add_argument("files", nargs="+")
    args = p.parse_args()
    {"run": cmd_run, "analyse": cmd_analyse}[args.cmd](args)


if __name__ == "__main__":
    main()
