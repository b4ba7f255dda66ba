"""Ensembles of independently pre-trained networks: k-means on their concatenated representations.

    python benchmarks/ensemble.py dump --encoder mlp --seeds 0 1 2 3 4 5 6 7 8      # members, two lanes
    python benchmarks/ensemble.py dump --encoder graph --seeds 0 1 2 3 4 5 6 7 8
    python benchmarks/ensemble.py analyse                                             # -> results/ensemble.md

A *member* is one pre-training with the package defaults (``encoder=mlp`` for the MLP members), fine-tuning
off, at one seed, as ``embeddings.py dump`` makes it (saved to ``benchmarks/runs/ens/<encoder>/``,
gitignored; one process per member, one thread). An *ensemble* of M members, number e = 0, 1, 2, uses
the seeds 3e, ..., 3e + M - 1: the three ensembles of one size share no member. Each member's
representation is centred and divided by its overall standard deviation (so that every member weighs
the same), the M are concatenated, and k-means (scikit-learn, true K, 20 restarts as the package's
``kmeans_n_init``, random_state e) gives the labels. M = 1 is one member alone (seeds 0, 3, 6).

Compared, per dataset, with the package defaults' final ARI (fine-tuning included; ``accuracy.jsonl``,
seeds 0-2) and PCA + k-means (same file, mean over its seeds 0-2). Differences are paired by dataset:
the mean over the three ensembles minus the mean over the defaults' three seeds, then mean ± standard
error over the datasets, for the datasets used to choose and to confirm (``embeddings.CHOOSE`` /
``CONFIRM``) apart. CPU: the members' pre-training CPU seconds (process time, preprocessing included),
summed over the ensemble.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from embeddings import CHOOSE, DATASETS  # noqa: E402

from scgpcl._machine import cpu_model  # noqa: E402  (each record names the CPU)

import harness  # noqa: E402

RUNS = HERE / "runs" / "ens"
JSONL = HERE / "results" / "ensemble.jsonl"
MD = HERE / "results" / "ensemble.md"
SIZES = (1, 2, 3)
#: member kinds -> their options
ENCODERS = {"graph": [], "mlp": ["encoder=mlp"]}
ENSEMBLES = 3
#: the package defaults the page compares with: those of 2026-12-04, before the joined DEC start became the
#: default (pre-training, all that the members run, is the same under both), as the relabelled records name them
MEASURED_WITH = {"choose_target_sum": False, "dec_pca_target": False, "kmeans_pca_weight": 0.0,
                 "min_round_steps": 1}
#: the defaults that followed (the joined DEC start, 2026-12-04 to 2026-12-05), before the cell-scaling choice
#: and min_round_steps=5 changed pre-training itself; the members' pre-training is still theirs
JOINED = {"choose_target_sum": False, "min_round_steps": 1}


def dump(args) -> None:
    out = RUNS / args.encoder
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, SCGPCL_EMB_DIR=str(out))
    override = [x for kv in ENCODERS[args.encoder] for x in ("--override", kv)]
    lanes = [DATASETS[i::args.lanes] for i in range(args.lanes)]
    procs = [subprocess.Popen([sys.executable, str(HERE / "embeddings.py"), "dump", "--datasets", *lane,
                               "--seeds", *map(str, args.seeds), *override], env=env) for lane in lanes]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a lane failed: {codes}")


def _member(encoder: str, dataset: str, seed: int):
    path = RUNS / encoder / f"{dataset}__{seed}.npz"
    if not path.exists():
        return None
    f = np.load(path, allow_pickle=True)
    z = f["z"].astype(np.float64)
    return (z - z.mean(0)) / z.std(), f["truth"], int(f["k"]), float(f["cpu_s"])


def analyse(args) -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    rows = []
    for encoder in ENCODERS:
        for d in DATASETS:
            for m in SIZES:
                for e in range(ENSEMBLES):
                    members = [_member(encoder, d, s) for s in range(3 * e, 3 * e + m)]
                    if any(x is None for x in members):
                        continue
                    z = np.hstack([x[0] for x in members])
                    truth, k = members[0][1], members[0][2]
                    labels = KMeans(k, n_init=20, random_state=e).fit(z).labels_
                    rows.append({"encoder": encoder, "dataset": d, "members": m, "ensemble": e,
                                 "ARI": float(adjusted_rand_score(truth, labels)),
                                 "cpu_s": sum(x[3] for x in members),  # the members' training, where they were made
                                 "scored_on": cpu_model()})  # the CPU of this k-means
            print(f"{encoder} {d}: {sum(r['encoder'] == encoder and r['dataset'] == d for r in rows)} ensembles",
                  flush=True)
    JSONL.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _table(rows)


def _reference(overrides: dict | None = None) -> dict:
    """Per dataset and method (``scgpcl``, ``pca_kmeans``, ...): the latest ok record of each seed.

    ``overrides``: the scGPCL runs with exactly these (None: the current package defaults); the baselines
    have none.
    """
    out: dict = {}
    latest = {}
    for line in (HERE / "results" / "accuracy.jsonl").read_text().splitlines():
        r = json.loads(line)
        want = harness.as_recorded(r["dataset"], overrides) if r.get("method") == "scgpcl" and overrides else {}
        if r.get("status") == "ok" and (r.get("overrides") or {}) == want:
            latest[(r["dataset"], r["method"], r["seed"])] = r
    for (d, method, _), r in latest.items():
        out.setdefault(d, {}).setdefault(method, []).append(r)
    return out


def table(args) -> None:
    """The page again from ``ensemble.jsonl`` (no member needed), against the current defaults too."""
    _table([json.loads(x) for x in JSONL.read_text().splitlines() if x.strip()])


def _table(rows: list[dict]) -> None:
    ref = _reference(MEASURED_WITH)
    now = _reference(JOINED)  # the joined DEC start's defaults, where accuracy.jsonl has them
    L = ["# Ensembles of pre-trained networks: k-means on the concatenated representations", "",
         "**Question.** The seed-to-seed spread of scGPCL comes from pre-training and the k-means start, not from "
         "fine-tuning (`dec.md`). Does combining several independently pre-trained networks give a better and "
         "steadier clustering, and at what cost?", "",
         "Commands: `python benchmarks/ensemble.py dump --encoder mlp --seeds 0 1 2 3 4 5 6 7 8`, the same with "
         "`--encoder graph` where run, then `python benchmarks/ensemble.py analyse` (method in the script's "
         "docstring). One thread per member, two members at a time.", "",
         "ARI mean ± SD over the three ensembles of each size (they share no member). `defaults`: the package "
         "defaults of 2026-12-04, when this was measured (DEC started from k-means on the representation alone), "
         "final ARI with DEC fine-tuning, seeds 0-2 (`accuracy.md`, variant `[dec_pca_target=False,"
         "kmeans_pca_weight=0.0]`). CPU: seconds per ensemble "
         "(members' pre-training).", ""]
    done = [(enc, m) for enc in ENCODERS for m in SIZES
            if sum(r["encoder"] == enc and r["members"] == m for r in rows) >= ENSEMBLES * len(DATASETS)]
    L += ["| dataset | half | defaults | PCA + k-means | " + " | ".join(f"{enc} x{m}" for enc, m in done) + " |",
          "|---|---|---|---|" + "---|" * len(done)]
    per = {}
    for d in DATASETS:
        cells = []
        for enc, m in done:
            v = [r["ARI"] for r in rows if r["encoder"] == enc and r["members"] == m and r["dataset"] == d]
            per[(d, enc, m)] = v
            cells.append(f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}")
        dv = [r["ARI"] for r in ref[d]["scgpcl"]]
        per[(d, "defaults")] = dv
        L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | {np.mean(dv):.3f} ± {np.std(dv, ddof=1):.3f} | "
                 f"{np.mean([r['ARI'] for r in ref[d]['pca_kmeans']]):.3f} | " + " | ".join(cells) + " |")
    L += ["", "## Summary", "",
          "Paired difference with the defaults of 2026-12-04 (mean over a dataset's ensembles minus the mean over its three "
          "default runs), mean ± standard error over datasets; mean SD over the three ensembles; CPU seconds per "
          "ensemble summed over the 13 datasets (defaults: per run, fine-tuning included).", "",
          "`- current defaults`: the same against the package defaults of 2026-12-04 evening to 2026-12-05 (DEC "
          "started from the representation joined with the features' PCs; `accuracy.md`, "
          + ", ".join(f"`{k}={v}`" for k, v in JOINED.items()) + " since the defaults changed again), whose "
          "pre-training the members share.",
          "",
          "| variant | mean ARI | - defaults, all 13 | choose (6) | confirm (7) | - PCA + k-means, all | "
          "mean SD | CPU s, 13 datasets | - current defaults, all 13 |", "|---|---|---|---|---|---|---|---|---|"]
    pca = {d: np.mean([r["ARI"] for r in ref[d]["pca_kmeans"]]) for d in DATASETS}
    dmean = {d: np.mean(per[(d, "defaults")]) for d in DATASETS}
    dcpu = sum(np.mean([r["cpu_s"] for r in ref[d]["scgpcl"]]) for d in DATASETS)
    sd = np.mean([np.std(per[(d, "defaults")], ddof=1) for d in DATASETS])
    cur = {d: np.mean([r["ARI"] for r in now[d]["scgpcl"]]) for d in DATASETS
           if len(now.get(d, {}).get("scgpcl", [])) >= 3}
    cur = cur if len(cur) == len(DATASETS) else None
    L.append(f"| defaults | {np.mean(list(dmean.values())):.3f} | | | | "
             f"{_pm([dmean[d] - pca[d] for d in DATASETS])} | {sd:.3f} | {dcpu:,.0f} | "
             + (f"{_pm([dmean[d] - cur[d] for d in DATASETS])} |" if cur else "— |"))
    for enc, m in done:
        mean = {d: np.mean(per[(d, enc, m)]) for d in DATASETS}
        diff = {d: mean[d] - dmean[d] for d in DATASETS}
        cpu = sum(np.mean([r["cpu_s"] for r in rows if r["encoder"] == enc and r["members"] == m
                           and r["dataset"] == d]) for d in DATASETS)
        L.append(f"| {enc} x{m} | {np.mean(list(mean.values())):.3f} | {_pm(list(diff.values()))} | "
                 f"{_pm([diff[d] for d in DATASETS if d in CHOOSE])} | "
                 f"{_pm([diff[d] for d in DATASETS if d not in CHOOSE])} | "
                 f"{_pm([mean[d] - pca[d] for d in DATASETS])} | "
                 f"{np.mean([np.std(per[(d, enc, m)], ddof=1) for d in DATASETS]):.3f} | {cpu:,.0f} | "
                 + (f"{_pm([mean[d] - cur[d] for d in DATASETS])} |" if cur else "— |"))
    notes = HERE / "results" / "ensemble_notes.md"
    if notes.exists():
        L += ["", notes.read_text().strip()]
    MD.write_text("\n".join(L) + "\n")
    print(f"wrote {MD}")


def _pm(x) -> str:
    x = np.asarray(x, dtype=float)
    return f"{x.mean():+.3f} ± {x.std(ddof=1) / np.sqrt(len(x)):.3f}"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dump")
    d.add_argument("--encoder", choices=list(ENCODERS), required=True)
    d.add_argument("--seeds", nargs="+", type=int, default=list(range(9)))
    d.add_argument("--lanes", type=int, default=2)
    sub.add_parser("analyse")
    sub.add_parser("table")
    args = p.parse_args(argv)
    {"dump": dump, "analyse": analyse, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
