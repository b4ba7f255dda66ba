"""Several seeds, one answer: is the most typical of three runs better or steadier than one run?

    python benchmarks/medoid.py run --lanes 2     # the package defaults, 13 datasets x seeds 0-5, labels kept
    python benchmarks/medoid.py table             # -> benchmarks/results/medoid.md

The README tells users to compare a few seeds before trusting one run. This measures what a tool could
do with those runs without labels: among three runs with different seeds, report the *medoid*, the run
whose labels agree best (summed ARI) with the other two. ``run`` makes the package defaults' runs at
seeds 0-5 through ``harness.py`` and keeps each run's labels (``benchmarks/runs/labels_medoid``,
gitignored); ``table`` scores, per dataset:

- one run: the mean ARI of the six seeds and their variance;
- the medoid of three: the mean over all 20 triplets of the six seeds, and the variance between the two
  disjoint triplets (seeds 0-2 and 3-5), the only independent pair;
- the agreement between runs (mean pairwise ARI, no labels needed), which a user can see.

Variances are compared as their mean over datasets (each estimate is unbiased; a mean of SDs from two
values would not be), reported as its square root.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import adjusted_rand_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy import _mse  # noqa: E402
from embeddings import CHOOSE, CONFIRM, DATASETS  # noqa: E402

import harness  # noqa: E402

JSONL = HERE / "results" / "medoid.jsonl"
MD = HERE / "results" / "medoid.md"
NOTES = HERE / "results" / "medoid_notes.md"
LABELS = HERE / "runs" / "labels_medoid"
SEEDS = list(range(6))


def run(args) -> None:
    datasets = args.datasets or DATASETS
    # balance the lanes by the defaults' CPU seconds in accuracy.jsonl: the costliest dataset to the lightest lane
    cost = {}
    for r in harness.latest_ok(harness.load_records(HERE / "results" / "accuracy.jsonl")).values():
        if harness.method_label(r) == "scgpcl":
            cost.setdefault(r["dataset"], []).append(r.get("cpu_s") or 0.0)
    lanes, load = [[] for _ in range(args.lanes)], [0.0] * args.lanes
    for d in sorted(datasets, key=lambda d: -np.mean(cost.get(d, [0.0]))):
        i = int(np.argmin(load))
        lanes[i].append(d)
        load[i] += np.mean(cost.get(d, [0.0]))
    lanes = [lane for lane in lanes if lane]
    procs = [subprocess.Popen([sys.executable, str(HERE / "harness.py"), "run", "--datasets", *lane, "--methods",
                               "scgpcl", "--seeds", *map(str, args.seeds), "--threads", "1", "--labels-dir",
                               str(LABELS), "--out", str(JSONL)]) for lane in lanes]
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"a lane failed: {codes}")


def medoid(labels: list[np.ndarray]) -> int:
    """Index of the run whose labels agree best with the others' (summed ARI; ties: the first)."""
    agree = [sum(adjusted_rand_score(a, b) for j, b in enumerate(labels) if j != i) for i, a in enumerate(labels)]
    return int(np.argmax(agree))


def score(dataset: str, records: list[dict], labels_dir: Path = LABELS, path: Path | None = None) -> dict | None:
    """One dataset's single-run and medoid-of-three figures, or None when a seed's labels are missing.

    ``path``: the dataset's file, when it is not one of ``../shared`` (default: :func:`harness.dataset_path`).
    """
    recs = {int(r["seed"]): r for r in harness.latest_ok(records).values()
            if r["dataset"] == dataset and harness.method_label(r) == "scgpcl"}
    files = {s: Path(labels_dir) / harness.labels_file(dataset, "scgpcl", s, {}) for s in SEEDS}
    if set(recs) < set(SEEDS) or not all(f.exists() for f in files.values()):
        return None
    import anndata as ad

    path = harness.dataset_path(dataset) if path is None else path
    truth = ad.read_h5ad(path, backed="r").obs[harness.LABEL_KEY].astype(str).to_numpy()
    labels = {s: np.load(files[s]) for s in SEEDS}
    ari = {s: adjusted_rand_score(truth, labels[s]) for s in SEEDS}
    for s in SEEDS:  # the saved labels are the recorded run's
        assert abs(ari[s] - recs[s]["ARI"]) < 1e-9, (dataset, s, ari[s], recs[s]["ARI"])
    picks = {t: t[medoid([labels[s] for s in t])] for t in itertools.combinations(SEEDS, 3)}
    disjoint = [ari[picks[(0, 1, 2)]], ari[picks[(3, 4, 5)]]]
    return {"single": float(np.mean(list(ari.values()))), "single_var": float(np.var(list(ari.values()), ddof=1)),
            "halves": [float(np.mean([ari[s] for s in (0, 1, 2)])), float(np.mean([ari[s] for s in (3, 4, 5)]))],
            "medoid": float(np.mean([ari[p] for p in picks.values()])), "medoid_disjoint": disjoint,
            "medoid_var": float(np.var(disjoint, ddof=1)),
            "agreement": float(np.mean([adjusted_rand_score(labels[a], labels[b])
                                        for a, b in itertools.combinations(SEEDS, 2)])),
            "best": float(max(ari.values())), "worst": float(min(ari.values()))}


def table(args) -> None:
    records = harness.load_records(JSONL)
    rows = {d: score(d, records) for d in DATASETS}
    rows = {d: r for d, r in rows.items() if r is not None}
    recorded = sorted({r["dataset"] for r in records if r.get("dataset") in DATASETS})
    if len(rows) < len(recorded):
        sys.exit(f"the saved labels of {len(recorded) - len(rows)} of the {len(recorded)} recorded datasets are "
                 f"missing from {LABELS} (the runs keep them there; they are not in git): the page was not "
                 "rewritten. It can only be rebuilt where those runs were made; elsewhere they would have to be made again.")
    L = ["# The medoid of three runs against one run", "",
         "The package defaults at seeds 0-5 on the 13 shared datasets, true K. `one run`: mean ARI over the six "
         "seeds. `medoid of 3`: among three runs, the one whose labels agree best with the other two (summed "
         "ARI, no labels used); mean ARI over all 20 triplets of the six seeds, and the two disjoint triplets "
         "(seeds 0-2, 3-5). `agreement`: mean ARI between the six runs' labels. Generated by "
         "`python benchmarks/medoid.py table` from `medoid.jsonl` and the runs' saved labels "
         "(`benchmarks/runs/labels_medoid`, not in git); runs made with "
         "`python benchmarks/medoid.py run --lanes 2`.", "",
         "| dataset | half | one run | SD | medoid of 3 | medoid, seeds 0-2 / 3-5 | medoid - one run | worst, best "
         "run | agreement |", "|---|---|---|---|---|---|---|---|---|"]
    for d, r in rows.items():
        L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | {r['single']:.3f} | "
                 f"{np.sqrt(r['single_var']):.3f} | {r['medoid']:.3f} | {r['medoid_disjoint'][0]:.3f} / "
                 f"{r['medoid_disjoint'][1]:.3f} | {r['medoid'] - r['single']:+.3f} | {r['worst']:.3f}, "
                 f"{r['best']:.3f} | {r['agreement']:.3f} |")
    L += ["", "| datasets | n | medoid - one run (mean ± SE over datasets) | root mean variance, one run | "
              "root mean variance, medoid of 3 |", "|---|---|---|---|---|"]
    for name, names in (("all", DATASETS), ("choose", CHOOSE), ("confirm", CONFIRM)):
        sub = [rows[d] for d in names if d in rows]
        if not sub:
            continue
        L.append(f"| {name} | {len(sub)} | {_mse([r['medoid'] - r['single'] for r in sub])} | "
                 f"{np.sqrt(np.mean([r['single_var'] for r in sub])):.3f} | "
                 f"{np.sqrt(np.mean([r['medoid_var'] for r in sub])):.3f} |")
    if len(rows) > 2:
        agree = np.array([r["agreement"] for r in rows.values()])
        spread = np.sqrt([r["single_var"] for r in rows.values()])
        L += ["", f"Agreement between runs against the seed SD over datasets: Spearman "
                  f"{_spearman(agree, spread):+.2f}."]
    machines = sorted({r.get("machine", "?") for r in records if r.get("status") == "ok"})
    L += ["", f"Machines: {', '.join(machines)}."]
    if NOTES.exists():
        L += ["", NOTES.read_text().rstrip()]
    MD.write_text("\n".join(L) + "\n")
    print(f"wrote {MD}")


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--lanes", type=int, default=2)
    r.add_argument("--datasets", nargs="*")
    r.add_argument("--seeds", type=int, nargs="*", default=SEEDS)
    sub.add_parser("table")
    args = p.parse_args()
    {"run": run, "table": table}[args.cmd](args)


if __name__ == "__main__":
    main()
