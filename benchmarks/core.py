"""Accuracy, wall time and peak memory of ``scgpcl cluster`` on the Table 1 stand-ins.

Each run is a separate ``scgpcl cluster`` process (so wall time includes
start-up, reading and writing, and peak RSS is that process's own), with
K = number of labelled types. Results go to a JSONL file (one line per run;
runs already there are skipped, so the script can be resumed) and a markdown
table with mean +- sd over seeds.

    python benchmarks/core.py --preset default --seeds 0 1 2     # the package defaults
    python benchmarks/core.py --preset faithful --seeds 0 1 2
    python benchmarks/core.py --preset fast --seeds 0 1 2        # 0.1.0's preset; now the defaults' alias

Needs the shared data folder (``../shared`` beside the repository, or
``--shared``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATASETS = ["worm_neuron", "mouse_bladder_top2000", "pbmc4k_10x_top2000", "human_kidney_top2000"]
# MANIFEST.md baselines (ARI / NMI): PCA+k-means, tuned Leiden
BASELINES = {
    "worm_neuron": ((0.32, 0.63), (0.19, 0.54)),
    "mouse_bladder_top2000": ((0.60, 0.77), (0.60, 0.78)),
    "pbmc4k_10x_top2000": ((0.74, 0.76), (0.76, 0.77)),
    "human_kidney_top2000": ((0.46, 0.65), (0.56, 0.74)),
    "cellbench_celseq2_3cl": ((1.00, 1.00), (1.00, 1.00)),
}
# published scGPCL (slides, Table 1 datasets; full gene sets): ARI, NMI, CA
PUBLISHED = {
    "worm_neuron": (0.5848, 0.7550, 0.7258),
    "mouse_bladder_top2000": (0.4562, 0.7296, 0.6022),
    "pbmc4k_10x_top2000": (0.6805, 0.7468, 0.7341),
    "human_kidney_top2000": (0.6716, 0.7970, 0.7821),
}


def run_one(path: Path, k: int, seed: int, preset: str, extra: list[str]) -> dict:
    import anndata as ad

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.h5ad"
        cmd = [sys.executable, "-m", "scgpcl", "cluster", str(path), str(out), "--n-clusters", str(k),
               "--label-key", "cell_type", "--seed", str(seed), "--preset", preset, "--quiet", *extra]
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
            proc.returncode = os.waitstatus_to_exitcode(status)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                err.seek(0)
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{err.read()}")
        peak_kb = usage.ru_maxrss
        info = ad.read_h5ad(out).uns["scgpcl"]
    rec = {k: float(v) for k, v in info["metrics"].items() if k != "label_key"}
    rec.update(
        wall_s=wall,
        peak_rss_mb=peak_kb / 1024,
        pretrain_epochs=int(info["stages"]["pretrain"]["rounds"]),
        pretrain_stop=str(info["stages"]["pretrain"]["stop_reason"]),
        pretrain_s=float(info["stages"]["pretrain"]["seconds"]),
        finetune_epochs=int(info["stages"].get("finetune", {}).get("rounds", 0)),
        finetune_s=float(info["stages"].get("finetune", {}).get("seconds", 0.0)),
        n_genes=int(info["params"]["n_genes_used"]),
        command=" ".join(["scgpcl", *cmd[3:]]),
    )
    return rec


def fmt(values) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return f"{v[0]:.3f} (1 seed)"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"


def table(records: list[dict], preset: str) -> str:
    unit = "rounds" if preset == "default" else "epochs"  # 0.1.0's presets counted epochs
    lines = [
        f"### preset `{preset}`",
        "",
        f"| dataset | K | genes used | ARI | NMI | CA | wall s | peak RSS MB | pre-train {unit} | fine-tune {unit} | "
        "best baseline ARI (k-means / Leiden tuned) | published ARI |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for ds in sorted({r["dataset"] for r in records}, key=lambda d: DATASETS.index(d) if d in DATASETS else 99):
        rs = [r for r in records if r["dataset"] == ds]
        km, ld = BASELINES.get(ds, ((float("nan"),) * 2,) * 2)
        pub = PUBLISHED.get(ds, (float("nan"),) * 3)
        rss = [r["peak_rss_mb"] for r in rs if r["peak_rss_mb"]]
        lines.append(
            f"| {ds} | {rs[0]['K']} | {rs[0]['n_genes']} | {fmt([r['ARI'] for r in rs])} | {fmt([r['NMI'] for r in rs])} | "
            f"{fmt([r['CA'] for r in rs])} | {np.median([r['wall_s'] for r in rs]):.0f} (median) | "
            f"{max(rss):.0f} | {', '.join(str(r['pretrain_epochs']) for r in rs)} | "
            f"{', '.join(str(r['finetune_epochs']) for r in rs)} | {km[0]:.2f} / {ld[0]:.2f} | {pub[0]:.3f} |"
        )
    lines.append("")
    lines.append(f"Seeds: {sorted({r['seed'] for r in records})}; one process per run.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="faithful", choices=["default", "faithful", "fast"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--datasets", nargs="+", default=DATASETS)
    ap.add_argument("--shared", default=os.environ.get("SCGPCL_SHARED", REPO.parent / "shared"))
    ap.add_argument("--jsonl", default=None, help="default: benchmarks/results/core_<preset>.jsonl")
    ap.add_argument("extra", nargs="*", help="extra options for scgpcl cluster (after --)")
    args = ap.parse_args()
    import anndata as ad

    jsonl = Path(args.jsonl or REPO / "benchmarks" / "results" / f"core_{args.preset}.jsonl")
    done = []
    if jsonl.exists():
        done = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    for ds in args.datasets:
        path = Path(args.shared) / "data" / "real" / f"{ds}.h5ad"
        if not path.exists():
            sys.exit(f"dataset not found: {path}")
        k = ad.read_h5ad(path, backed="r").obs["cell_type"].nunique()
        for seed in args.seeds:
            if any(r["dataset"] == ds and r["seed"] == seed for r in done):
                continue
            rec = {"dataset": ds, "seed": seed, "K": int(k), "preset": args.preset,
                   **run_one(path, k, seed, args.preset, args.extra),
                   "machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version(),
                   "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "default")}
            print(json.dumps({k: rec[k] for k in ("dataset", "seed", "ARI", "NMI", "CA", "wall_s", "pretrain_epochs",
                                                   "finetune_epochs")}), flush=True)
            with jsonl.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            done.append(rec)
    print(table([r for r in done if r["dataset"] in args.datasets], args.preset))


if __name__ == "__main__":
    main()
