"""Keep DEC's labels or the pre-trained k-means labels? Label-free rules, chosen on one half, confirmed on the other.

DEC fine-tuning gains on some datasets and loses on others (`where_it_loses.md`). Each run of the
package defaults records its ARI before DEC (the k-means labels that start DEC) and after, and label-free
comparisons of the two clusterings (`harness.dec_diagnostics`: their silhouettes in the pre-trained
representation, their agreement, the evenness of their cluster sizes). A rule picks one of the two
clusterings from those alone; this scores each rule against always keeping DEC's labels (the defaults),
paired per dataset, on the choosing and the confirming half (``embeddings.CHOOSE`` / ``CONFIRM``).
The rules (RULES) were written down before the runs finished.

    python benchmarks/harness.py run --datasets <13> --methods scgpcl --seeds 0 1 2 --threads 1 \\
        --labels-dir '' --out benchmarks/results/dec_select.jsonl
    python benchmarks/dec_select.py                   # -> results/dec_select.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import CHOOSE, CONFIRM, DATASETS

import harness

RESULTS = Path(__file__).resolve().parent / "results"
JSONL = RESULTS / "dec_select.jsonl"
MD = RESULTS / "dec_select.md"
NOTES = RESULTS / "dec_select_notes.md"
#: the settings the runs in JSONL were made with: the package defaults until 2026-12-04 (as relabelled since)
MEASURED_WITH = {"choose_target_sum": False, "dec_pca_target": False, "kmeans_pca_weight": 0.0,
                 "min_round_steps": 1}
#: runs that record the same diagnostics, of the defaults that followed (the joined DEC start, 2026-12-04 to
#: 2026-12-05), as the relabelled records name them
CURRENT = RESULTS / "accuracy.jsonl"
JOINED = {"choose_target_sum": False, "min_round_steps": 1}

#: rule -> True to keep DEC's labels, False for the pre-trained k-means labels
RULES = {
    "always DEC (defaults)": lambda r: True,
    "never DEC": lambda r: False,
    "silhouette": lambda r: r["silhouette_post"] >= r["silhouette_pre"],
    "silhouette - 0.02": lambda r: r["silhouette_post"] >= r["silhouette_pre"] - 0.02,
    "agreement >= 0.7": lambda r: r["dec_agreement"] >= 0.7,
    "size entropy - 0.02": lambda r: r["size_entropy_post"] >= r["size_entropy_pre"] - 0.02,
}


def _mse(v) -> str:
    v = np.asarray(v, dtype=float)
    return f"{v.mean():+.3f} ± {v.std(ddof=1) / np.sqrt(v.size):.3f}" if v.size > 1 else "-"


def _runs(path, settings: dict) -> dict:
    """dataset -> the latest successful scgpcl runs made with exactly ``settings`` (overrides) and diagnostics."""
    runs: dict = {}
    for r in harness.latest_ok(harness.load_records(path)).values():
        if (r["method"] == "scgpcl" and (r.get("overrides") or {}) == harness.as_recorded(r["dataset"], settings)
                and "silhouette_pre" in r):
            runs.setdefault(r["dataset"], []).append(r)
    return runs


def _rules_table(runs: dict) -> list[str]:
    names = [d for d in DATASETS if len(runs.get(d, [])) >= 3]
    ari = {rule: {d: float(np.mean([x["ARI"] if keep(x) else x["ARI_pretrain"] for x in runs[d]]))
                  for d in names} for rule, keep in RULES.items()}
    kept = {rule: sum(keep(x) for d in names for x in runs[d]) for rule, keep in RULES.items()}
    base = ari["always DEC (defaults)"]
    L = ["| rule | runs keeping DEC | mean ARI | - defaults, all | choose | confirm |", "|---|---|---|---|---|---|"]
    n_runs = sum(len(runs[d]) for d in names)
    for rule in RULES:
        diff = {d: ari[rule][d] - base[d] for d in names}
        L.append(f"| {rule} | {kept[rule]} of {n_runs} | {np.mean(list(ari[rule].values())):.3f} | "
                 f"{_mse(list(diff.values()))} | {_mse([diff[d] for d in names if d in CHOOSE])} | "
                 f"{_mse([diff[d] for d in names if d in CONFIRM])} |")
    return L


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--jsonl", default=str(JSONL))
    p.add_argument("--current", default=str(CURRENT), help="runs of the current defaults (with diagnostics)")
    p.add_argument("--md", default=str(MD))
    args = p.parse_args(argv)
    runs = _runs(args.jsonl, MEASURED_WITH)
    names = [d for d in DATASETS if len(runs.get(d, [])) >= 3]
    L = ["# Keep DEC's labels or the pre-trained ones: label-free rules", "",
         "The package defaults of the time (`dec_select.jsonl`, which records them as "
         + ", ".join(f"`{k}={v}`" for k, v in MEASURED_WITH.items())
         + "), 13 datasets x seeds 0-2 (runs: the commands in the script's docstring; this page: "
         "`python benchmarks/dec_select.py`; machines: "
         + "; ".join(sorted({str(x.get("machine", "not recorded")) for rs in runs.values() for x in rs})) + "). "
         "Per run, a rule keeps DEC's labels or the k-means labels DEC started from, looking only at the two "
         "clusterings (silhouettes in the pre-trained representation, on one sample of at most 4,000 cells; "
         "their agreement as ARI; the evenness of the cluster sizes). Paired difference of the mean ARI "
         "against always keeping DEC's labels, mean ± standard error over datasets.", ""]
    L += _rules_table(runs)
    L += ["", "Per run: ARI before / after DEC, and the diagnostics.", "",
          "| dataset | half | seed | ARI before | after | silhouette before | after | agreement | size entropy before "
          "| after |", "|---|---|---|---|---|---|---|---|---|---|"]
    for d in names:
        for x in sorted(runs[d], key=lambda x: x["seed"]):
            L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | {x['seed']} | {x['ARI_pretrain']:.3f} | "
                     f"{x['ARI']:.3f} | {x['silhouette_pre']:.3f} | {x['silhouette_post']:.3f} | "
                     f"{x['dec_agreement']:.3f} | {x['size_entropy_pre']:.3f} | {x['size_entropy_post']:.3f} |")
    current = _runs(args.current, JOINED) if Path(args.current).exists() else {}
    if current:
        L += ["", "## The same rules at the defaults of the joined DEC start (2026-12-04 to 2026-12-05)", "",
              f"Those defaults' runs in `{Path(args.current).name}` (the accuracy page's runs, which record the "
              "same diagnostics; they carry " + ", ".join(f"`{k}={v}`" for k, v in JOINED.items())
              + " since the defaults changed again); DEC there starts from the joined k-means "
              "(`kmeans_pca_weight`), so `never DEC` is that start's labels.", ""]
        L += _rules_table(current)
    if NOTES.exists():
        L += ["", NOTES.read_text().rstrip()]
    Path(args.md).write_text("\n".join(L) + "\n")
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
