"""Auto-K criteria end to end, on one machine, by lookup: which K each picks, and scGPCL's ARI at that K.

With ``n_clusters=None`` the ``fast`` preset trains the warm-up epochs,
estimates K on that embedding, then trains on exactly as a run given that K
(same seed, same random streams: checked in ``auto_k.md``). So the end-to-end
ARI of *any* criterion is known once scGPCL has been run at the K it picks:

1. ``python benchmarks/auto_k.py warmup --seed S`` saves the warm-up embeddings
   (``benchmarks/runs/auto_k_embeddings/<dataset>_s<S>.npz``);
2. this script scores the criteria on them and lists the (dataset, seed, K)
   runs that are missing (``--missing``);
3. ``python benchmarks/auto_k.py run --datasets D --seeds S --modes k=N --out
   benchmarks/results/auto_k_fixed.jsonl`` makes them; true-K runs come from
   the harness's ``scgpcl_fast`` runs (``real*.jsonl``);
4. this script writes the table, using only runs from one CPU model
   (``--machine``), since the same seed on another CPU model gives another
   result (``machine.md``).

    python benchmarks/auto_k_lookup.py --methods consensus leiden_modularity --machine "AMD EPYC" --missing
    python benchmarks/auto_k_lookup.py --methods consensus --machine "AMD EPYC" --md benchmarks/results/auto_k_consensus.md --notes benchmarks/results/auto_k_consensus_notes.md
    python benchmarks/auto_k_lookup.py --methods consensus leiden_modularity --machine "AMD EPYC" --md benchmarks/results/auto_k_consensus_vs_modularity.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import auto_k

import harness

FIXED = auto_k.RESULTS / "auto_k_fixed.jsonl"
CACHE = auto_k.REPO / "benchmarks" / "runs" / "auto_k_lookup_cache.json"


def criterion_ks(emb_dir: Path, methods: list[str], cache_path: Path = CACHE) -> dict[tuple[str, int], dict]:
    """``{(dataset, seed): {"k_true": K, method: K_est, ...}}`` for every saved warm-up embedding (cached)."""
    from scgpcl.train._auto_k import estimate_k

    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    out = {}
    for f in sorted(Path(emb_dir).glob("*_s[0-9]*.npz")):
        name, seed = f.stem.rsplit("_s", 1)
        entry = cache.setdefault(f.stem, {})
        d = None
        for m in methods:
            if m not in entry:
                d = d if d is not None else np.load(f, allow_pickle=True)
                entry[m] = int(estimate_k(d["z"], m, seed=int(seed)).k)
                entry["k_true"] = int(d["k"])
        out[(name, int(seed))] = entry
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache, indent=0))
    return out


def ari_at_k(machine: str) -> dict[tuple[str, int, int], dict]:
    """``{(dataset, seed, K): record}`` from ``k=N`` runs and true-K ``scgpcl_fast`` runs on ``machine``."""
    out = {}
    for f in sorted(auto_k.RESULTS.glob("real*.jsonl")):
        for r in harness.load_records(f):
            if (r.get("method") == "scgpcl_fast" and not r.get("overrides") and r.get("status", "ok") == "ok"
                    and machine in str(r.get("machine", "")) and "ARI" in r):
                out[(r["dataset"], int(r["seed"]), int(r["K"]))] = r
    for r in harness.load_records(FIXED):
        if machine in str(r.get("machine", "")) and not r.get("overrides"):
            out[(r["dataset"], int(r["seed"]), int(r["K"]))] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["consensus", "leiden_modularity"])
    ap.add_argument("--machine", required=True, help="CPU model substring, e.g. 'AMD EPYC'")
    ap.add_argument("--emb-dir", default=str(auto_k.EMB_DIR))
    ap.add_argument("--missing", action="store_true", help="print the auto_k.py commands for the missing runs")
    ap.add_argument("--md", default=None, help="write the markdown here instead of printing it")
    ap.add_argument("--notes", default=None, help="hand-written markdown to put after the generated tables "
                    "(so that regenerating the file keeps it), e.g. benchmarks/results/auto_k_consensus_notes.md")
    args = ap.parse_args()

    ks = criterion_ks(Path(args.emb_dir), args.methods)
    if not ks:
        sys.exit(f"no warm-up embeddings in {args.emb_dir} (they are not in git): nothing written. Make them with "
                 "`python benchmarks/auto_k.py warmup` first.")
    runs = ari_at_k(args.machine)
    leiden = {}
    for r in harness.load_records(auto_k.JSONL):
        if r.get("mode") == "leiden_res1":
            leiden.setdefault(r["dataset"], []).append((r["ARI"], r["NMI"]))
    if args.missing:
        todo = sorted({(d, s, e[m]) for (d, s), e in ks.items() for m in ["k_true", *args.methods]
                       if (d, s, e[m]) not in runs})
        for d, s, k in todo:
            print(f"python benchmarks/auto_k.py run --datasets {d} --seeds {s} --modes k={k} --no-criteria "
                  f"--out {FIXED.relative_to(auto_k.REPO)}")
        print(f"# {len(todo)} runs missing", file=sys.stderr)
        return

    cols = ["k_true", *args.methods]
    datasets = sorted({d for d, _ in ks}, key=lambda d: auto_k.default_datasets().index(d)
                      if d in auto_k.default_datasets() else 99)
    intro = ("For each warm-up embedding (`fast` preset, 30 epochs; `auto_k.py warmup`), the K each criterion "
             "picks, and the ARI of scGPCL (`fast`) trained on from there with that K (`auto_k.py run --modes "
             "k=N`, or the harness's true-K run). Only runs made on a CPU model matching "
             f"`{args.machine}`. Per dataset: K per seed, then ARI (mean ± sd) / NMI (mean) over the seeds that have every "
             "run. Leiden res 1: scanpy's standard pipeline at resolution 1 (`auto_k.jsonl`), ARI / NMI.")
    command = (f"Command: `python benchmarks/auto_k_lookup.py --methods {' '.join(args.methods)} "
               f"--machine '{args.machine}' --md ...{' --notes ' + args.notes if args.notes else ''}` It reads "
               "the saved warm-up embeddings (`benchmarks/runs/auto_k_embeddings`, made by "
               "`python benchmarks/auto_k.py warmup`; not in git) and refuses to write without them.")
    L = ["# Auto-K criteria end to end, by lookup, on one CPU model", "", intro, "", command, "",
         "| dataset | " + " | ".join(("true K" if c == "k_true" else f"`{c}`") for c in cols)
         + " | Leiden res 1 |",
         "|---|" + "---|" * (len(cols) + 1)]
    means = {c: [] for c in cols}
    nmis = {c: [] for c in cols}
    lmeans, lnmis = [], []
    errs = {c: [] for c in args.methods}
    complete = 0
    for d in datasets:
        seeds = sorted(s for dd, s in ks if dd == d)
        ok = [s for s in seeds if all((d, s, ks[(d, s)][c]) in runs for c in cols)]
        cells = []
        for c in cols:
            kk = ", ".join(str(ks[(d, s)][c]) for s in seeds)
            a = [runs[(d, s, ks[(d, s)][c])]["ARI"] for s in ok]
            nmi = [runs[(d, s, ks[(d, s)][c])]["NMI"] for s in ok]
            cells.append(f"{kk}: {np.mean(a):.3f} ± {np.std(a, ddof=1) if len(a) > 1 else 0:.3f} / {np.mean(nmi):.3f}"
                         if a else f"{kk}: —")
            if len(ok) == len(seeds):
                means[c].append(float(np.mean(a)))
                nmis[c].append(float(np.mean(nmi)))
                if c != "k_true":
                    errs[c] += [abs(np.log(ks[(d, s)][c] / ks[(d, s)]["k_true"])) for s in seeds]
        lei = leiden.get(d, [])
        cells.append(f"{np.mean([x[0] for x in lei]):.3f} / {np.mean([x[1] for x in lei]):.3f}" if lei else "—")
        if len(ok) == len(seeds):
            complete += 1
            if lei:
                lmeans.append(float(np.mean([x[0] for x in lei])))
                lnmis.append(float(np.mean([x[1] for x in lei])))
        L.append(f"| {d} (seeds {','.join(map(str, ok))}) | " + " | ".join(cells) + " |")
    L += ["", f"Over the {complete} dataset(s) with every run (mean over datasets of the per-dataset mean ARI):", "",
          "| | mean ARI | gap to true K | mean NMI | mean abs log(K / K_true) |", "|---|---|---|---|---|"]
    for c in cols:
        m = float(np.mean(means[c])) if means[c] else float("nan")
        gap = float(np.mean(means["k_true"])) - m if means[c] else float("nan")
        e = f"{np.mean(errs[c]):.2f}" if errs.get(c) else "0"
        nm = float(np.mean(nmis[c])) if nmis[c] else float("nan")
        L.append(f"| {'true K' if c == 'k_true' else c} | {m:.3f} | {gap:+.3f} | {nm:.3f} | {e} |")
    if len(lmeans) == complete and lmeans:
        L.append(f"| Leiden res 1 (scanpy pipeline, not scGPCL) | {np.mean(lmeans):.3f} | | {np.mean(lnmis):.3f} | |")
    all13 = complete == len(auto_k.default_datasets())
    for c in args.methods:
        if not means[c]:
            continue
        gap = float(np.mean(means["k_true"]) - np.mean(means[c]))
        lead = float(np.mean(means[c]) - np.mean(lmeans)) if len(lmeans) == complete and lmeans else float("nan")
        bar = (f"Bar for `{c}`{'' if all13 else ' (PRELIMINARY: not all datasets)'}: estimated-K ARI within "
               f"0.05 of true-K ARI: **{'met' if gap <= 0.05 else 'NOT met'}** ({gap:+.3f}); better than Leiden "
               f"res 1: **{'met' if lead > 0 else 'NOT met'}** ({lead:+.3f}).")
        L += ["", bar]
    text = "\n".join(L) + "\n"
    if args.notes:
        text += "\n" + Path(args.notes).read_text()
    if args.md:
        Path(args.md).write_text(text)
        print(f"wrote {args.md}")
    else:
        print(text)


if __name__ == "__main__":
    main()
