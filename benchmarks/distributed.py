"""Data-parallel training (docs/distributed.md): one process against torchrun with two, on one machine.

    python benchmarks/distributed.py data                      # the 30k-cell simulation (cached)
    python benchmarks/distributed.py run --seeds 0 1           # full runs: 1 process, then torchrun x 2
    python benchmarks/distributed.py throughput --repeats 5    # optimizer steps/s at a fixed global batch
    python benchmarks/distributed.py batchnorm --seeds 0 1     # synchronised vs per-process BatchNorm
    python benchmarks/distributed.py table                     # -> benchmarks/results/distributed.md

Every measurement is its own command (``scgpcl cluster`` or ``torchrun ... -m scgpcl cluster``, or the
throughput worker of this file), with ``OMP_NUM_THREADS=1`` in each process, appended as one JSON line to
``benchmarks/results/distributed.jsonl`` with the command, the CPU model, the load average before and after,
and the other busy processes seen on the machine while it ran (``ps``), so that a timing taken on a shared
machine says so. Rerun ``run`` and ``throughput`` on an idle machine to replace them: ``table`` uses the latest
records of each configuration (medians over repeats where there are several).

Data (``benchmarks/runs/distributed/``, gitignored): ``scgpcl simulate OUT --preset demo --n-genes 2000
--n-cells 30000 --group-prob 0.16 0.14 0.12 0.11 0.10 0.09 0.08 0.07 0.07 0.06 --lib-loc 6.8
--de-fac-scale 0.8 --dropout-type none --seed 0`` (10 unequal groups, as ``benchmarks/scale.py``'s sim_N).
The BatchNorm comparison uses small real datasets of ``shared/data/real``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from scgpcl._machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCGPCL_SHARED", REPO.parent / "shared"))
CACHE = REPO / "benchmarks" / "runs" / "distributed"
RESULTS = REPO / "benchmarks" / "results"
JSONL = RESULTS / "distributed.jsonl"
PAGE = RESULTS / "distributed.md"
SIM = CACHE / "sim_30000.h5ad"
SIM_ARGS = ["--preset", "demo", "--n-genes", "2000", "--n-cells", "30000", "--group-prob", "0.16", "0.14", "0.12",
            "0.11", "0.10", "0.09", "0.08", "0.07", "0.07", "0.06", "--lib-loc", "6.8", "--de-fac-scale", "0.8",
            "--dropout-type", "none", "--seed", "0"]
BN_DATASETS = ["baron_mouse1", "pbmc4k_10x_top2000", "worm_neuron"]
#: one invocation of this script: the table keeps each configuration's latest session
SESSION = time.strftime("%Y-%m-%dT%H:%M:%S")


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    env.setdefault("PYTHONWARNINGS", "ignore")
    return env


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


# ----------------------------------------------------------------------------- the machine while we measure
class Neighbours:
    """Samples the load average and the busy processes that are not ours while a measurement runs."""

    def __init__(self, ours: set[int], every: float = 20.0):
        self.ours, self.every = ours, every
        self.loads: list[float] = []
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.loads.append(os.getloadavg()[0])
            for cmd in _busy_processes(self.ours):
                self.seen[cmd] = self.seen.get(cmd, 0) + 1
            if self._stop.wait(self.every):
                return

    def summary(self) -> dict:
        return {"load_median": statistics.median(self.loads) if self.loads else None,
                "load_max": max(self.loads) if self.loads else None,
                "others": sorted(self.seen, key=self.seen.get, reverse=True)[:6]}


def _busy_processes(ours: set[int], min_cpu: float = 20.0) -> list[str]:
    """Short names of other processes using at least ``min_cpu`` % of a core (ps)."""
    try:
        out = subprocess.run(["ps", "-eo", "pid,ppid,pcpu,args", "--no-headers"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    me, found = os.getpid(), []
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) < 4:
            continue
        pid, ppid, cpu, args = int(parts[0]), int(parts[1]), float(parts[2]), parts[3]
        if pid == me or pid in ours or ppid in ours or float(cpu) < min_cpu:
            continue
        words = [w for w in args.split() if not w.startswith("-")]
        found.append(" ".join(Path(w).name if "/" in w else w for w in words[:3])[:80])
    return found


def _record(rec: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with JSONL.open("a") as f:
        f.write(json.dumps(rec, default=float) + "\n")
    print(json.dumps({k: v for k, v in rec.items() if k not in ("command", "stderr_tail")}, default=float),
          flush=True)


def _run_command(cmd: list[str], tag: dict) -> dict:
    """Run ``cmd``; wall time, CPU time of it and its children, and the machine's state while it ran."""
    load_before, cpu_before = os.getloadavg()[0], _cpu_children()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    with Neighbours({proc.pid}) as nb:
        out, err = proc.communicate()
    wall = time.perf_counter() - t0
    rec = dict(tag, command=" ".join(cmd), returncode=proc.returncode, wall_s=wall,
               load_before=load_before, load_after=os.getloadavg()[0], **nb.summary(), cpu=cpu_model(),
               n_cores=os.cpu_count(), cpu_s=_cpu_children() - cpu_before, session=SESSION,
               time=time.strftime("%Y-%m-%d %H:%M:%S"))
    if proc.returncode != 0:
        rec["stderr_tail"] = err[-2000:]
    rec["stdout"] = out
    return rec


# ----------------------------------------------------------------------------- data
def data(_args=None) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    if not SIM.exists():
        subprocess.run([sys.executable, "-m", "scgpcl", "simulate", str(SIM), *SIM_ARGS], check=True,
                       env=_env())
    return SIM


def _cluster_command(processes: int, infile: Path, outfile: Path, k: int, seed: int, extra: list[str]) -> list[str]:
    tail = ["cluster", str(infile), str(outfile), "-k", str(k), "--label-key", "cell_type", "--seed", str(seed),
            "--quiet", "--overwrite", *extra]
    if processes == 1:
        return [_bin("scgpcl"), *tail]
    return [_bin("torchrun"), "--standalone", "--nproc-per-node", str(processes), "-m", "scgpcl", *tail]


def _cluster_record(cmd: list[str], outfile: Path, tag: dict) -> dict:
    rec = _run_command(cmd, tag)
    rec.pop("stdout", None)
    if rec["returncode"] == 0:
        import anndata as ad

        uns = ad.read_h5ad(outfile, backed="r").uns["scgpcl"]
        stages = {s: {"rounds": int(v["rounds"]), "steps": int(v["steps"]), "seconds": float(v["seconds"]),
                      "stop": str(v["stop_reason"])} for s, v in uns["stages"].items()}
        rec.update(ARI=float(uns["metrics"]["ARI"]), NMI=float(uns["metrics"]["NMI"]), stages=stages,
                   train_s=sum(s["seconds"] for s in stages.values()),
                   steps=sum(s["steps"] for s in stages.values()),
                   processes_recorded=int(uns["params"].get("processes", 1)))
        rec["s_per_step"] = rec["train_s"] / max(rec["steps"], 1)
        outfile.unlink()
    return rec


def _cpu_children() -> float:
    t = os.times()
    return t.children_user + t.children_system


def run(args) -> None:
    sim = data()
    for seed in args.seeds:
        for p in args.processes:
            out = CACHE / f"out_p{p}_s{seed}.h5ad"
            cmd = _cluster_command(p, sim, out, 10, seed, args.extra)
            _record(_cluster_record(cmd, out, {"kind": "run", "dataset": "sim_30000", "processes": p, "seed": seed,
                                               "extra": args.extra}))


def batchnorm(args) -> None:
    import anndata as ad

    for name in args.datasets:
        path = SHARED / "data" / "real" / f"{name}.h5ad"
        k = ad.read_h5ad(path, backed="r").obs["cell_type"].nunique()
        for seed in args.seeds:
            for p, extra in ((1, []), (2, []), (2, ["--no-sync-batchnorm"])):
                out = CACHE / f"bn_{name}_p{p}_{len(extra)}_s{seed}.h5ad"
                cmd = _cluster_command(p, path, out, k, seed, extra)
                _record(_cluster_record(cmd, out, {"kind": "batchnorm", "dataset": name, "processes": p,
                                                   "seed": seed, "sync_batchnorm": not extra, "extra": extra}))


# ----------------------------------------------------------------------------- throughput
def throughput(args) -> None:
    sim = data()
    for rep in range(args.repeats):
        for p in args.processes:
            worker = [str(Path(__file__).resolve()), "_steps", "--data", str(sim), "--global-batch",
                      str(args.global_batch), "--steps", str(args.steps), "--warmup", str(args.warmup)]
            cmd = ([sys.executable, *worker] if p == 1 else
                   [_bin("torchrun"), "--standalone", "--nproc-per-node", str(p), *worker])
            rec = _run_command(cmd, {"kind": "throughput", "dataset": "sim_30000", "processes": p, "repeat": rep,
                                     "global_batch": args.global_batch})
            lines = [line for line in rec.pop("stdout").splitlines() if line.startswith("{")]
            if rec["returncode"] == 0 and lines:
                rec.update(json.loads(lines[-1]))
            _record(rec)


def _steps(args) -> None:
    """Worker: time ``--steps`` pre-training optimizer steps (after ``--warmup``) at a fixed global batch."""
    import anndata as ad
    import torch

    from scgpcl import SCGPCL, distributed
    from scgpcl.module import LossContext
    from scgpcl.train._schedule import Progress

    torch.set_num_threads(1)
    a = ad.read_h5ad(args.data)
    model = SCGPCL(a, 10, random_state=0, device="cpu", batch_size=args.global_batch)
    tr = model.trainer
    comm = getattr(tr, "comm", None)
    params = [p for n, p in tr.module.named_parameters() if not n.startswith("cluster_centres")]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-4)
    ctx = LossContext("pretrain", tau=model.config.model.tau)
    quiet = Progress(1, "", enabled=False)
    tr.run_round(tr.module, tr.loader, tr.loader.plan(args.warmup), opt, ctx, tr.weights, quiet)
    t0 = time.perf_counter()
    tr.run_round(tr.module, tr.loader, tr.loader.plan(args.steps), opt, ctx, tr.weights, quiet)
    seconds = time.perf_counter() - t0
    # fine-tuning steps (one view, the DEC term): random centres, a target from a fixed random Q
    gen = torch.Generator().manual_seed(0)
    tr.module.init_cluster_centres(torch.randn(10, tr.module.n_latent, generator=gen))
    target = torch.softmax(torch.randn(tr.loader.n_cells, 10, generator=gen), dim=1)
    ctx_f = LossContext("finetune", tau=model.config.model.tau, alpha=model.config.model.alpha, target=target)
    opt_f = torch.optim.Adadelta(tr.module.parameters(), lr=1.0, rho=0.95, weight_decay=1e-4)
    tr.run_round(tr.module, tr.loader, tr.loader.plan(args.warmup), opt_f, ctx_f, tr.weights, quiet, n_views=1)
    t1 = time.perf_counter()
    tr.run_round(tr.module, tr.loader, tr.loader.plan(args.steps), opt_f, ctx_f, tr.weights, quiet, n_views=1)
    seconds_f = time.perf_counter() - t1
    if comm is None or comm.is_main:
        part = len(tr.loader.plan(1)[0])
        print(json.dumps({"steps": args.steps, "seconds": seconds, "s_per_step": seconds / args.steps,
                          "steps_per_s": args.steps / seconds, "finetune_s_per_step": seconds_f / args.steps,
                          "cells_per_rank": part}), flush=True)
    distributed.shutdown()


# ----------------------------------------------------------------------------- the page
_CONFIG_KEYS = {"run": ("dataset", "processes", "seed", "extra"), "throughput": ("processes", "global_batch"),
                "batchnorm": ("dataset", "seed", "processes", "sync_batchnorm")}


def _latest(records: list[dict], kind: str) -> list[dict]:
    """The successful records of ``kind``, keeping for each configuration only those of its latest session
    (a rerun replaces the earlier measurements; repeats within a session are kept)."""
    rows = [r for r in records if r.get("kind") == kind and r.get("returncode") == 0]
    key = lambda r: json.dumps([r.get(k) for k in _CONFIG_KEYS[kind]])
    last = {}
    for r in rows:
        last[key(r)] = max(last.get(key(r), ""), r.get("session", ""))
    return [r for r in rows if r.get("session", "") == last[key(r)]]


def _fmt(values: list[float], digits: int = 3) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}g}"
    return f"{statistics.median(values):.{digits}g} (n={len(values)}, {min(values):.{digits}g}-{max(values):.{digits}g})"


def table(args) -> None:
    records = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()] if JSONL.exists() else []
    cpu = next((r["cpu"] for r in records if r.get("cpu")), cpu_model())
    lines = [
        "# Data-parallel training: one process and torchrun with two",
        "",
        "Generated by `python benchmarks/distributed.py table` from `benchmarks/results/distributed.jsonl` (one",
        "JSON line per command, with the command itself, the load average and the other busy processes seen",
        "while it ran). Do not edit by hand; the notes at the end come from `benchmarks/results/distributed_notes.md`.",
        "",
        f"CPU: {cpu}, {records[0].get('n_cores', '?') if records else os.cpu_count()} cores; every process runs one "
        "thread (`OMP_NUM_THREADS=1`), gloo backend.",
        "",
        "Commands (`benchmarks/distributed.py run`, `throughput`, `batchnorm`):",
        "",
        "```bash",
        f"scgpcl simulate sim_30000.h5ad {' '.join(SIM_ARGS)}",
        "scgpcl cluster sim_30000.h5ad out.h5ad -k 10 --label-key cell_type --seed S --quiet --overwrite",
        "torchrun --standalone --nproc-per-node 2 -m scgpcl cluster sim_30000.h5ad out.h5ad -k 10 \\",
        "    --label-key cell_type --seed S --quiet --overwrite",
        "```",
        "",
    ]
    runs = _latest(records, "run")
    lines += ["## Accuracy and time on 30,000 simulated cells (package defaults)", "",
              "*train s* is the two stages' time (rank 0's), *s/step* that over their optimizer steps (global steps "
              "included), *wall s* the whole command (reading, training, writing); *load* the 1-minute load average "
              "while it ran (median, max) on this 2-core machine.", "",
              "| seed | processes | ARI | NMI | steps (pre + fine) | train s | s/step | wall s | load | other busy processes |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["seed"], r["processes"])):
        st = r["stages"]
        steps = " + ".join(str(st[s]["steps"]) for s in ("pretrain", "finetune") if s in st)
        others = "; ".join(r.get("others") or []) or "none"
        lines.append(f"| {r['seed']} | {r['processes']} | {r['ARI']:.4f} | {r['NMI']:.4f} | {steps} | "
                     f"{r['train_s']:.0f} | {r['s_per_step']:.3f} | {r['wall_s']:.0f} | "
                     f"{r['load_median']:.1f}, {r['load_max']:.1f} | {others} |")
    by_seed = {}
    for r in runs:
        by_seed.setdefault(r["seed"], {})[r["processes"]] = r
    diffs = [(s, d[2]["ARI"] - d[1]["ARI"]) for s, d in sorted(by_seed.items()) if 1 in d and 2 in d]
    if diffs:
        lines += ["", "ARI of two processes minus one process: " +
                  ", ".join(f"seed {s}: {d:+.4f}" for s, d in diffs) + "."]
    thr = _latest(records, "throughput")
    if thr:
        lines += ["", "## Optimizer steps at a fixed global minibatch", "",
                  "Optimizer steps alone (no global steps) on the 30,000 cells, with `batch_size=1024`: the 30 "
                  "minibatches of an epoch hold 1000 cells, which one process takes whole and two processes split "
                  "500 + 500. Pre-training steps: two views, ZINB + instance-wise loss. Fine-tuning steps: one "
                  "view, ZINB + DEC loss. Median seconds per step over repeats (n), with the range; each repeat "
                  "is one command timing 20 steps of each kind after a warm-up, in the order 1, 2, 1, 2, ... "
                  "processes.", "",
                  "| processes | cells per process | pre-training s/step | steps/s | speed-up | "
                  "fine-tuning s/step | speed-up | load while measured |",
                  "|---|---|---|---|---|---|---|---|"]
        base = base_f = None
        for p in sorted({r["processes"] for r in thr}):
            rows = [r for r in thr if r["processes"] == p and "s_per_step" in r]
            sps = [r["s_per_step"] for r in rows]
            fps = [r["finetune_s_per_step"] for r in rows if "finetune_s_per_step" in r]
            med, med_f = statistics.median(sps), statistics.median(fps) if fps else None
            base, base_f = base or med, base_f or med_f
            loads = [r["load_median"] for r in rows if r.get("load_median") is not None]
            fine = f"{_fmt(fps)} | {base_f / med_f:.2f}x" if fps else "- | -"
            lines.append(f"| {p} | {rows[0]['cells_per_rank']} | {_fmt(sps)} | {1 / med:.2f} | {base / med:.2f}x | "
                         f"{fine} | {_fmt(loads, 2)} |")
    bn = _latest(records, "batchnorm")
    if bn:
        lines += ["", "## Synchronised or per-process BatchNorm", "",
                  "ARI with the package defaults on small real datasets (true K): one process, two processes with "
                  "BatchNorm statistics over the global minibatch (`--sync-batchnorm`, the default) and over each "
                  "process's part (`--no-sync-batchnorm`).", "",
                  "| dataset | seed | 1 process | 2, synchronised | 2, per process |", "|---|---|---|---|---|"]
        keys = sorted({(r["dataset"], r["seed"]) for r in bn})
        for ds, seed in keys:
            cell = {}
            for r in bn:
                if r["dataset"] == ds and r["seed"] == seed:
                    cell[(r["processes"], r.get("sync_batchnorm", True))] = f"{r['ARI']:.4f}"
            lines.append(f"| {ds} | {seed} | {cell.get((1, True), '-')} | {cell.get((2, True), '-')} | "
                         f"{cell.get((2, False), '-')} |")
        for label, key in (("1 process", (1, True)), ("2, synchronised", (2, True)), ("2, per process", (2, False))):
            vals = [r["ARI"] for r in bn if (r["processes"], r.get("sync_batchnorm", True)) == key]
            if vals:
                lines.append(f"\nMean ARI, {label}: {statistics.mean(vals):.4f} over {len(vals)} runs.")
    notes = RESULTS / "distributed_notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    PAGE.write_text("\n".join(lines) + "\n")
    print(f"wrote {PAGE}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("data")
    r = sub.add_parser("run")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    r.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more scgpcl cluster options")
    t = sub.add_parser("throughput")
    t.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    t.add_argument("--repeats", type=int, default=5)
    t.add_argument("--global-batch", type=int, default=1024)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--warmup", type=int, default=3)
    b = sub.add_parser("batchnorm")
    b.add_argument("--datasets", nargs="+", default=BN_DATASETS)
    b.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    sub.add_parser("table")
    w = sub.add_parser("_steps")
    w.add_argument("--data", required=True)
    w.add_argument("--global-batch", type=int, default=1024)
    w.add_argument("--steps", type=int, default=20)
    w.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    {"data": data, "run": run, "throughput": throughput, "batchnorm": batchnorm, "table": table,
     "_steps": _steps}[args.cmd](args)


if __name__ == "__main__":
    main()
