"""Marker-gene recovery (docs/method.md section 8): do the clusters' top DE genes match the cell types'?

For each ground-truth type and each predicted cluster, the top 10 differentially
expressed genes (``scanpy.tl.rank_genes_groups``, Wilcoxon, one group vs the
rest, on normalize_total(1e4) + log1p data, all genes of the file). Each type is
paired with one cluster by the Hungarian matching of ``scgpcl.metrics``; the
score of a type is |gold top 10 ∩ matched cluster's top 10| / 10 (0 when no
cluster is matched to the type). Small types (< 3 % of the cells) are
highlighted: they are where clustering methods lose markers first.

Predicted labels come from the harness runs (``benchmarks/runs/labels/``, saved
by ``harness.py run``); missing ones are produced by running the method through
the harness (records in ``<labels dir>/markers_runs.jsonl``).

    python benchmarks/markers.py            # -> benchmarks/results/markers.md, fig/markers_heatmap.png
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

REPO = harness.REPO
RESULTS = REPO / "benchmarks" / "results"
DATASETS = ["zeisel_full3005_top4000_from_log1p", "pbmc4k_10x_top2000", "human_kidney_top2000",
            "baron_human_came2142"]
METHODS = ["scgpcl", "pca_kmeans", "leiden_tuned"]
SMALL = 0.03
N_TOP = 10


def top_genes(a, key: str, de_method: str, n: int = N_TOP) -> dict[str, list[str]]:
    """Top ``n`` genes of every group of ``obs[key]`` with >= 2 cells (group vs rest)."""
    import scanpy as sc

    counts = a.obs[key].value_counts()
    groups = [str(g) for g in counts.index if counts[g] >= 2]
    if len(groups) < 2:
        return {}
    sc.tl.rank_genes_groups(a, key, groups=groups, reference="rest", method=de_method, n_genes=n,
                            key_added="_rgg", use_raw=False)
    names = a.uns["_rgg"]["names"]
    return {g: [str(x) for x in names[g][:n]] for g in names.dtype.names}


def get_labels(dataset: str, method: str, seed: int, labels_dir: Path, threads: int) -> np.ndarray:
    f = labels_dir / harness.labels_file(dataset, method, seed)
    if not f.exists():
        print(f"  labels missing for {dataset} {method} seed {seed}: running it through the harness", flush=True)
        rec = harness.run_subprocess(dataset, method, seed, {}, threads=threads, labels_dir=str(labels_dir),
                                     timeout=None)
        labels_dir.mkdir(parents=True, exist_ok=True)
        with (labels_dir / "markers_runs.jsonl").open("a") as fh:
            fh.write(json.dumps(rec, default=float) + "\n")
        print(f"  -> {rec['status']}" + (f", ARI {rec['ARI']:.3f}, {rec['wall_s']:.0f} s" if rec["status"] == "ok"
                                         else f": {rec['error'][-300:]}"), flush=True)
    if not f.exists():
        raise RuntimeError(f"no labels for {dataset} {method} seed {seed} (run failed; see {labels_dir}/markers_runs.jsonl)")
    return np.load(f)


def analyse(dataset: str, methods: list[str], seeds: list[int], labels_dir: Path, de_method: str,
            threads: int) -> dict:
    import anndata as ad
    import scanpy as sc

    from scgpcl.metrics import match_clusters

    a = ad.read_h5ad(harness.dataset_path(dataset))
    a.X = a.X.astype(np.float32)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    truth = a.obs[harness.LABEL_KEY].astype(str).to_numpy()
    a.obs["_truth"] = truth
    a.obs["_truth"] = a.obs["_truth"].astype("category")
    gold = top_genes(a, "_truth", de_method)
    types = sorted(gold, key=lambda t: -np.sum(truth == t))
    frac = {t: float(np.mean(truth == t)) for t in types}
    out = {"types": types, "n_cells": {t: int(np.sum(truth == t)) for t in types}, "frac": frac,
           "gold": gold, "overlap": {}, "clusters": {}, "n_cells_total": int(len(truth))}
    for m in methods:
        per_seed = []
        for s in seeds:
            pred = get_labels(dataset, m, s, labels_dir, threads).astype(str)
            a.obs["_pred"] = pred
            a.obs["_pred"] = a.obs["_pred"].astype("category")
            top = top_genes(a, "_pred", de_method)
            mapped = match_clusters(truth, pred)
            cluster_of = {}
            for c in np.unique(pred):
                t = mapped[pred == c][0]
                if t is not None:
                    cluster_of[str(t)] = str(c)
            ov = {}
            for t in types:
                c = cluster_of.get(t)
                ov[t] = len(set(gold[t]) & set(top.get(c, []))) / N_TOP if c is not None else 0.0
            per_seed.append(ov)
            out["clusters"].setdefault(m, {})[s] = {t: cluster_of.get(t) for t in types}
        out["overlap"][m] = {t: [p[t] for p in per_seed] for t in types}
        print(f"  {dataset} {m}: mean overlap {np.mean([np.mean(v) for v in out['overlap'][m].values()]):.2f}",
              flush=True)
    return out


def label_runs(labels_dir: Path) -> tuple[list[str], list[str]]:
    """The commands and machines of the harness runs whose records sit in ``labels_dir`` (``*.jsonl``)."""
    cmds, machines = set(), set()
    for f in sorted(labels_dir.glob("*.jsonl")):
        for rec in harness.load_records(str(f)):
            if rec.get("command"):
                cmds.add(rec["command"])
            if rec.get("machine"):
                machines.add(rec["machine"])
    return sorted(cmds), sorted(machines)


def build_markdown(results: dict, methods: list[str], seeds: list[int], command: str, figure: str | None,
                   de_method: str, runs: tuple[list[str], list[str]] = ([], [])) -> str:
    cmds, machines = runs
    L = ["# Marker genes: top-10 DE genes of matched clusters vs ground-truth types", "", "```", *cmds, command,
         "```", ""]
    if cmds:
        L += ["The first commands made the labels (harness runs, one process each"
              + (f"; machine: {', '.join(machines)}" if machines else "") + "); the last one scores them.", ""]
    L += [
         f"DE: `scanpy.tl.rank_genes_groups(method='{de_method}')`, each group vs the rest, on normalize_total(1e4) "
         f"+ log1p of all genes in the file. Gold standard: the top {N_TOP} genes of each labelled type. For each "
         "method and seed, each type is paired with a cluster by Hungarian matching (`scgpcl.metrics.match_clusters`) "
         f"and scored |gold ∩ cluster top {N_TOP}| / {N_TOP} (0 if no cluster is matched to it). Values: mean ± sd "
         f"over seeds {seeds}. Labels are those of the harness runs (`scgpcl` = the package defaults, one "
         "thread per run; K = the true number of types). The version of this page made with 0.1.0's `fast` "
         "preset: `git show 0700ace:benchmarks/results/markers.md`. "
         f"**Small types** (< {SMALL:.0%} of cells) are in bold and marked ⚠.", ""]
    L += ["## Summary (mean overlap over types)", "",
          "| dataset | " + " | ".join(f"`{m}` all types" for m in methods) + " | "
          + " | ".join(f"`{m}` small types" for m in methods) + " |", "|---|" + "---|" * (2 * len(methods))]
    for d, r in results.items():
        small = [t for t in r["types"] if r["frac"][t] < SMALL]
        allv = [f"{np.mean([np.mean(r['overlap'][m][t]) for t in r['types']]):.2f}" for m in methods]
        smv = [f"{np.mean([np.mean(r['overlap'][m][t]) for t in small]):.2f}" if small else "—" for m in methods]
        L.append(f"| {d} | " + " | ".join(allv) + " | " + " | ".join(smv) + " |")
    L.append("")
    for d, r in results.items():
        L += [f"## {d}", "", "| type | cells (%) | " + " | ".join(f"`{m}`" for m in methods)
              + f" | gold top {N_TOP} |", "|---|---|" + "---|" * len(methods) + "---|"]
        for t in r["types"]:
            small = r["frac"][t] < SMALL
            name = f"**{t}** ⚠" if small else t
            vals = []
            for m in methods:
                v = np.asarray(r["overlap"][m][t])
                unmatched = sum(c.get(t) is None for c in r["clusters"][m].values())
                vals.append(f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}"
                            + (f" ({unmatched} unmatched)" if unmatched else ""))
            L.append(f"| {name} | {r['n_cells'][t]} ({100 * r['frac'][t]:.1f} %) | " + " | ".join(vals)
                     + f" | {', '.join(r['gold'][t])} |")
        L.append("")
    if figure:
        L += [f"![marker overlap heatmap]({figure})", ""]
    return "\n".join(L)


def heatmap(results: dict, methods: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    heights = [max(3.0, 0.32 * len(r["types"]) + 1.2) for r in results.values()]
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n + 1, max(heights)), squeeze=False, layout="constrained")
    for ax, (d, r) in zip(axes[0], results.items(), strict=True):
        mat = np.array([[np.mean(r["overlap"][m][t]) for m in methods] for t in r["types"]])
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, f"{mat[i, j]:.1f}", ha="center", va="center", fontsize=7,
                        color="white" if mat[i, j] < 0.6 else "black")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(r["types"])))
        ax.set_yticklabels([f"{t} ({100 * r['frac'][t]:.1f}%)" for t in r["types"]], fontsize=7)
        for lab, t in zip(ax.get_yticklabels(), r["types"], strict=False):
            if r["frac"][t] < SMALL:
                lab.set_color("red")
                lab.set_fontweight("bold")
        ax.set_title(d, fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.6, label=f"top-{N_TOP} marker overlap (mean over seeds)")
    fig.suptitle(f"Marker overlap with the gold standard; red = types under {SMALL:.0%} of cells", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--methods", nargs="+", default=METHODS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--labels-dir", default=str(harness.DEFAULT_LABELS_DIR))
    ap.add_argument("--de-method", default="wilcoxon", choices=["wilcoxon", "t-test", "t-test_overestim_var"])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="for runs needed to fill in missing labels")
    ap.add_argument("--md", default=str(RESULTS / "markers.md"))
    ap.add_argument("--fig", default=str(RESULTS / "fig" / "markers_heatmap.png"))
    ap.add_argument("--json", default=str(RESULTS / "markers_genes.json"), help="top-10 lists and overlaps")
    args = ap.parse_args(argv)
    import warnings

    warnings.filterwarnings("ignore")
    results = {}
    for d in args.datasets:
        print(f"{d} ...", flush=True)
        results[d] = analyse(d, args.methods, args.seeds, Path(args.labels_dir), args.de_method, args.threads)
    command = "python benchmarks/markers.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    heatmap(results, args.methods, Path(args.fig))
    md = Path(args.md)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(build_markdown(results, args.methods, args.seeds, command.strip(),
                                 os.path.relpath(args.fig, md.parent), args.de_method,
                                 label_runs(Path(args.labels_dir))) + "\n")
    Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {md}, {args.fig} and {args.json}")


if __name__ == "__main__":
    main()
