"""Same method, same seeds, two machines: how far apart are the results?

A seed fixes every random draw (initial weights, minibatches, masks, k-means
starts), so on one machine a run is repeatable bit for bit. On another CPU
model the floating-point kernels (summation order, vector width) differ in
the last bits, and training, whose stopping rules are thresholds, can
amplify that. This compares the runs of one method in two JSONL files of
``harness.py`` made on different machines (their ``machine`` field)::

    python benchmarks/machine_spread.py benchmarks/results/real.jsonl \
        benchmarks/results/real_amd.jsonl --method scgpcl_fast

It prints a markdown table: per dataset, the seeds both files have, the
mean ± sd of the metric in each, and the mean absolute per-seed difference.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness


def runs_by_dataset(path: str, method: str) -> tuple[dict[str, dict[int, dict]], set[str]]:
    """The latest ok run per (dataset, seed) of ``method`` without overrides, and the machines seen."""
    out: dict[str, dict[int, dict]] = {}
    machines = set()
    for r in harness.latest_ok(harness.load_records(path)).values():
        if r.get("method") != method or r.get("overrides"):
            continue
        out.setdefault(r["dataset"], {})[int(r["seed"])] = r
        machines.add(str(r.get("machine", "?")))
    return out, machines


def spread_table(a_path: str, b_path: str, method: str, metric: str = "ARI") -> list[str]:
    a, ma = runs_by_dataset(a_path, method)
    b, mb = runs_by_dataset(b_path, method)
    header = f"| dataset | seeds | A {metric} | B {metric} | mean abs per-seed difference | identical seeds |"
    lines = [f"A: `{a_path}` ({', '.join(sorted(ma)) or 'no runs'})",
             f"B: `{b_path}` ({', '.join(sorted(mb)) or 'no runs'})", "", header, "|---|---|---|---|---|---|"]
    diffs_all, means_a, means_b, n_same = [], [], [], 0
    datasets = harness._ordered(set(a) & set(b), list(harness.MANIFEST_BASELINES))
    for d in datasets:
        seeds = sorted(set(a[d]) & set(b[d]))
        if not seeds:
            continue
        va = np.array([a[d][s][metric] for s in seeds], dtype=float)
        vb = np.array([b[d][s][metric] for s in seeds], dtype=float)
        same = int(np.sum(np.abs(va - vb) < 1e-9))
        n_same += same
        diffs_all += list(np.abs(va - vb))
        means_a.append(va.mean())
        means_b.append(vb.mean())
        lines.append(f"| {d} | {','.join(map(str, seeds))} | {harness.fmt(harness.mean_sd(va))} | "
                     f"{harness.fmt(harness.mean_sd(vb))} | {np.mean(np.abs(va - vb)):.3f} | {same} of {len(seeds)} |")
    if not diffs_all:
        return [*lines, "", "(no dataset and seed in both files)"]
    total = (f"Over {len(means_a)} datasets and {len(diffs_all)} (dataset, seed) pairs: mean {metric} "
             f"A {np.mean(means_a):.3f}, B {np.mean(means_b):.3f}; mean absolute per-seed difference "
             f"{np.mean(diffs_all):.3f} (median {np.median(diffs_all):.3f}, max {np.max(diffs_all):.3f}); "
             f"{n_same} pairs identical.")
    lines += ["", total]
    return lines


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--method", default="scgpcl_fast")
    ap.add_argument("--metric", default="ARI")
    harness.add_undo_option(ap)
    args = ap.parse_args(argv)
    harness.apply_undo_option(args)
    cmd = "python benchmarks/machine_spread.py " + " ".join(shlex.quote(x) for x in (argv or sys.argv[1:]))
    undone = [harness.undone_sentence(), ""] if harness.UNDONE_RELABELS else []
    table = spread_table(args.a, args.b, args.method, args.metric)
    harness.check_undo_matched()
    print("\n".join([f"Command: `{cmd}`", "", *undone, *table]))


if __name__ == "__main__":
    main()
