"""Is the defaults' seed-to-seed SD at seeds 0-2 (0.033) what another set of three runs would give?

Reads the defaults' runs at seeds 0-2 on the Intel machines (``accuracy.jsonl``, the runs every default was
chosen on) and on an AMD EPYC machine (``amd_defaults.jsonl``, the same seeds rerun, which take another path
on another CPU model: ``machine.md``), and prints:

- each machine's mean over datasets of the SD over seeds, and their paired difference (mean ± SE);
- a permutation test: per dataset the six runs are split into two random triples, 20,000 times; how often
  the difference of mean SDs is as large as the machines' difference;
- the mean SD of a random triple out of the six (median, 90 % range, and how often it is at most 0.04).

No run is made. Usage: ``python benchmarks/seed_sd.py``.
"""

from __future__ import annotations

import collections
import itertools
import json
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"


def _runs(path: Path, machine: str | None) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = collections.defaultdict(dict)
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if (r.get("method") == "scgpcl" and r.get("status") == "ok" and not r.get("overrides")
                and r["seed"] in (0, 1, 2) and (machine is None or machine in r.get("machine", ""))):
            out[r["dataset"]][r["seed"]] = r["ARI"]
    return out


def main(n: int = 20_000, seed: int = 0) -> None:
    intel = _runs(RESULTS / "accuracy.jsonl", "Intel")
    amd = _runs(RESULTS / "amd_defaults.jsonl", None)
    datasets = sorted(d for d in set(intel) & set(amd) if len(intel[d]) == 3 and len(amd[d]) == 3)
    sd_i = np.array([np.std(list(intel[d].values()), ddof=1) for d in datasets])
    sd_a = np.array([np.std(list(amd[d].values()), ddof=1) for d in datasets])
    diff = sd_a - sd_i
    print(f"{len(datasets)} datasets, 3 seeds on each machine")
    print(f"mean seed SD: Intel {sd_i.mean():.3f}, AMD {sd_a.mean():.3f}; AMD - Intel {diff.mean():+.3f} "
          f"± {diff.std(ddof=1) / np.sqrt(len(diff)):.3f} (paired SE)")
    rng = np.random.default_rng(seed)
    pools = [np.array(list(intel[d].values()) + list(amd[d].values())) for d in datasets]
    triples = list(itertools.combinations(range(6), 3))

    def split_sd(pool: np.ndarray) -> tuple[float, float]:
        first = list(triples[rng.integers(len(triples))])
        rest = [i for i in range(6) if i not in first]
        return float(np.std(pool[first], ddof=1)), float(np.std(pool[rest], ddof=1))

    diffs, means = np.empty(n), np.empty(n)
    for i in range(n):
        pairs = [split_sd(p) for p in pools]
        diffs[i] = np.mean([a - b for a, b in pairs])
        means[i] = np.mean([a for a, _ in pairs])
    observed = sd_a.mean() - sd_i.mean()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(f"random splits of the six runs: |difference| >= {abs(observed):.3f} in {np.mean(np.abs(diffs) >= abs(observed)):.3f} "
          f"of {n}; 95 % of differences in {lo:+.3f}..{hi:+.3f}")
    q5, q50, q95 = np.percentile(means, [5, 50, 95])
    print(f"mean SD of a random triple of the six: median {q50:.3f}, 90 % range {q5:.3f}..{q95:.3f}; "
          f"at most 0.04 in {np.mean(means <= 0.04):.2f} of triples")


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=20_000, help="random splits of the six runs (default 20,000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    args = ap.parse_args()
    main(args.draws, args.seed)
