"""When should pre-training stop? Per-epoch traces for comparing stopping rules offline.

With fresh k-means restarts every epoch (the default since 2026-11-30), the
reference's rule (stop when the ARI between consecutive epochs' k-means labels
exceeds 0.99) rarely fires: restart noise alone keeps that ARI at 0.8-0.97,
so pre-training runs to its epoch limit. This script runs pre-training to the
limit with the rule disabled and records, after every post-warm-up epoch:

- ``ari_prev``: the trainer's own consecutive-epoch ARI (fresh restarts);
- ``ari_true``: ARI of that epoch's k-means labels against the reference labels;
- ``ari_prev_fixed`` / ``ari_true_fixed``: the same for a k-means with the same
  random seed every epoch (a convergence check without restart noise);
- ``seconds``: cumulative pre-training time.

The trainer's random streams are untouched by the extra k-means, so the
trajectory up to any epoch is the one a run that stopped there would follow.
``analyse`` then replays candidate stopping rules on the traces.

    python benchmarks/stopping.py run --datasets pollen klein_subset1000 --seeds 0 1 --out traces.jsonl
    python benchmarks/stopping.py analyse traces.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def trace(dataset: str, seed: int, threads: int, epochs: int) -> dict:
    import torch
    from sklearn.metrics import adjusted_rand_score

    import scgpcl
    from scgpcl.train._kmeans import kmeans

    import harness

    torch.set_num_threads(threads)
    adata = harness.load_dataset(dataset, seed)
    truth_all = np.asarray(adata.obs["cell_type"].astype(str))
    k = len(np.unique(truth_all))
    model = scgpcl.SCGPCL(adata, n_clusters=k, config=scgpcl.fast(), random_state=seed, device="cpu",
                          convergence_ari=2.0, pretrain_epochs=epochs, finetune=False)
    truth = truth_all[model.data.cell_mask]
    tr = model.trainer
    tr.progress = False
    rows: list[dict] = []
    prev_fixed = [None]
    t0 = time.perf_counter()
    overhead = [0.0]

    def cb(epoch: int, record: dict) -> None:
        # rows only for epochs that ran k-means: the warm-up's last epoch and those with a consecutive-epoch ARI
        if tr.epoch_labels is None or ("ari_prev" not in record and epoch != tr.cfg.warmup_epochs):
            return
        t = time.perf_counter()
        fixed = kmeans(tr.embed(), k, n_init=tr.cfg.kmeans_n_init_epoch, seed=seed + 7919).labels
        row = {
            "epoch": epoch,
            "ari_prev": record.get("ari_prev"),
            "ari_true": float(adjusted_rand_score(truth, tr.epoch_labels)),
            "ari_prev_fixed": None if prev_fixed[0] is None else float(adjusted_rand_score(prev_fixed[0], fixed)),
            "ari_true_fixed": float(adjusted_rand_score(truth, fixed)),
            "proto": record.get("proto"),
        }
        prev_fixed[0] = fixed
        overhead[0] += time.perf_counter() - t
        row["seconds"] = time.perf_counter() - t0 - overhead[0]
        rows.append(row)

    tr.pretrain(callback=cb)
    return {"dataset": dataset, "seed": seed, "K": k, "threads": threads, "epochs": epochs,
            "warmup": tr.cfg.warmup_epochs, "trace": rows}


# ------------------------------------------------------------------ rules
def rule_reference(rows, thr=0.99, key="ari_prev"):
    for r in rows:
        if r[key] is not None and r[key] > thr:
            return r
    return rows[-1]


def rule_patience(rows, patience: int, key="ari_prev", min_delta=0.0):
    """Stop when ``key`` has not exceeded its running best (+ min_delta) for ``patience`` epochs."""
    best, since = -1.0, 0
    for r in rows:
        v = r[key]
        if v is None:
            continue
        if v > 0.99:
            return r
        if v > best + min_delta:
            best, since = v, 0
        else:
            since += 1
            if since >= patience:
                return r
    return rows[-1]


def rule_window(rows, window: int, thr: float, key="ari_prev"):
    """Stop when the mean of ``key`` over the last ``window`` epochs exceeds ``thr``."""
    vals = []
    for r in rows:
        if r[key] is None:
            continue
        if r[key] > 0.99:
            return r
        vals.append(r[key])
        if len(vals) >= window and np.mean(vals[-window:]) > thr:
            return r
    return rows[-1]


def rule_cap(rows, post_warmup: int):
    """The reference rule, but at most ``post_warmup`` epochs after the warm-up."""
    first = rows[0]["epoch"]
    for r in rows:
        if (r["ari_prev"] is not None and r["ari_prev"] > 0.99) or r["epoch"] >= first + post_warmup:
            return r
    return rows[-1]


def smoothed(rows, stop, width: int = 3) -> float:
    """Mean ARI against the labels over the ``width`` epochs ending at ``stop``.

    One epoch's k-means (5 restarts) is noisy; the final clustering uses 20
    restarts, so a short window estimates the embedding's quality better.
    """
    i = next(j for j, r in enumerate(rows) if r["epoch"] == stop["epoch"])
    return float(np.mean([r["ari_true"] for r in rows[max(0, i - width + 1): i + 1]]))


def analyse(paths: list[str]) -> None:
    runs = []
    for jsonl in paths:
        with open(jsonl) as handle:
            runs += [json.loads(line) for line in handle if line.strip()]
    path = ", ".join(paths)
    rules = {"reference 0.99 (current)": lambda rs: rule_reference(rs),
             "fixed-seed check > 0.99": lambda rs: rule_reference(rs, key="ari_prev_fixed"),
             "fixed-seed check > 0.98": lambda rs: rule_reference(rs, 0.98, key="ari_prev_fixed"),
             "fixed-seed check > 0.95": lambda rs: rule_reference(rs, 0.95, key="ari_prev_fixed")}
    for p in (5, 10, 15, 20):
        rules[f"patience {p}"] = lambda rs, p=p: rule_patience(rs, p)
    for w, t in ((5, 0.95), (5, 0.9), (10, 0.9)):
        rules[f"window {w} mean > {t}"] = lambda rs, w=w, t=t: rule_window(rs, w, t)
    for c in (5, 10, 20, 30, 50):
        rules[f"at most {c} epochs after warm-up"] = lambda rs, c=c: rule_cap(rs, c)
    print(f"{len(runs)} traces from {path}\n")
    print("ARI: k-means (5 restarts) on the embedding at the stopping epoch, against the labels; "
          "'smoothed': mean over the 3 epochs ending there.\n")
    print("| rule | mean ARI | smoothed (3) | smoothed (3) delta vs current: mean | worst | smoothed (5) | "
          "mean epochs | pre-training time vs current |")
    print("|---|---|---|---|---|---|---|---|")
    base = [rule_reference(r["trace"]) for r in runs]
    base_s = np.array([smoothed(r["trace"], b) for r, b in zip(runs, base, strict=True)])
    per_ds: dict[str, list[float]] = {}
    for name, rule in rules.items():
        stops = [rule(r["trace"]) for r in runs]
        aris = np.array([s["ari_true"] for s in stops])
        sm = np.array([smoothed(r["trace"], s) for r, s in zip(runs, stops, strict=True)])
        sm5 = np.array([smoothed(r["trace"], s, 5) for r, s in zip(runs, stops, strict=True)])
        d = sm - base_s
        t = sum(s["seconds"] for s in stops) / sum(b["seconds"] for b in base)
        ep = np.mean([s["epoch"] for s in stops])
        print(f"| {name} | {aris.mean():.3f} | {sm.mean():.3f} | {d.mean():+.3f} | {d.min():+.3f} | "
              f"{sm5.mean():.3f} | {ep:.0f} | {t:.2f} |")
        per_ds[name] = (sm, np.array([s["epoch"] for s in stops]))
    print("\nPer dataset (mean over its traces): stopping epoch / smoothed (3) ARI\n")
    shown = [n for n in rules if n.startswith(("reference", "patience", "at most"))]
    print("| dataset | traces | " + " | ".join(shown) + " |")
    print("|---" * (len(shown) + 2) + "|")
    names = sorted({r["dataset"] for r in runs})
    for d in names:
        idx = [i for i, r in enumerate(runs) if r["dataset"] == d]
        cells = [f"{per_ds[n][1][idx].mean():.0f} / {per_ds[n][0][idx].mean():.3f}" for n in shown]
        print(f"| {d} | {len(idx)} | " + " | ".join(cells) + " |")
    print("\nMean smoothed ARI by epoch after the warm-up, relative to the first post-warm-up epoch:\n")
    offsets = (0, 5, 10, 20, 30, 40, 50, 60, 69)
    rel = {o: [] for o in offsets}
    for r in runs:
        rows = r["trace"]
        first = smoothed(rows, rows[min(2, len(rows) - 1)])
        for o in offsets:
            j = min(o + 2, len(rows) - 1)
            rel[o].append(smoothed(rows, rows[j]) - first)
    print("| epochs after warm-up | " + " | ".join(str(o) for o in offsets) + " |")
    print("|---" * (len(offsets) + 1) + "|")
    print("| mean delta | " + " | ".join(f"{np.mean(rel[o]):+.3f}" for o in offsets) + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", nargs="+", required=True)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--epochs", type=int, default=100)
    r.add_argument("--out", required=True)
    a = sub.add_parser("analyse")
    a.add_argument("paths", nargs="+")
    args = ap.parse_args(argv)
    if args.cmd == "analyse":
        return analyse(args.paths)
    done = set()
    if os.path.exists(args.out):
        with open(args.out) as handle:
            done = {(j["dataset"], j["seed"]) for j in map(json.loads, handle) if j}
    for d in args.datasets:
        for s in args.seeds:
            if (d, s) in done:
                continue
            t = time.perf_counter()
            out = trace(d, s, args.threads, args.epochs)
            out["wall_s"] = time.perf_counter() - t
            with open(args.out, "a") as f:
                f.write(json.dumps(out) + "\n")
            print(d, s, f"{out['wall_s']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
