"""Atlas scale on one machine: scgpcl's package defaults side by side with the scanpy pipeline.

    python benchmarks/scale.py run --sizes 10000 30000 100000 300000 --pbmc 100000 --threads 2
    python benchmarks/scale.py cap --size 1000000 --threads 2        # 1M cells: a run capped in steps
    python benchmarks/scale.py real --datasets pbmc4k_10x_top2000 --seeds 0 1 2 --threads 2  # end to end
    python benchmarks/scale.py prepare --sizes 100000 1000000 --repeats 3 --threads 2  # the scaling choice's cost
    python benchmarks/scale.py wide --sizes 100000 200000 --repeats 2 --threads 1 --before REV  # every gene
    python benchmarks/scale.py wide --sizes 100000 200000 --repeats 1 --threads 1 --before REV --end-to-end
    python benchmarks/scale.py wide --sizes 1000000 --repeats 1 --threads 2 --end-to-end --full-training
    python benchmarks/scale.py table                                   # -> benchmarks/results/scale.md

Data (cached in ``benchmarks/runs/scale/``, gitignored):

- ``sim_N``: ``scgpcl simulate OUT --preset demo --n-genes 2000 --n-cells N --group-prob 0.16 0.14 0.12
  0.11 0.10 0.09 0.08 0.07 0.07 0.06 --lib-loc 6.8 --de-fac-scale 0.8 --dropout-type none --seed 0``
  (10 unequal groups, ~14 % non-zeros, ~900 UMI per cell, like pbmc4k's top 2000 genes);
- ``wide_N``: N cells x 25,000 genes as a count matrix straight from the sequencer (no gene filter): gene means
  log-normal (sigma 2, most genes rare), ~2,800 UMI and ~1,650 non-zeros per cell, 10 equal groups, each with
  300 genes up by a log-normal factor, Poisson counts (``_wide``, seed 0);
- ``pbmc_N``: pbmc4k (``shared/data/real/pbmc4k_10x_top2000.h5ad``) resampled to N cells (cells drawn
  with replacement, every count thinned by binomial(0.9), labels kept; seed 0).

Every measurement is its own process (``_worker``), so its wall time, CPU time (user + system of the
child) and peak RSS belong to that run alone and include reading the file. Both methods get the true
number of groups. The scanpy pipeline is normalize_total, log1p, (highly variable genes above 2000
genes), scale, PCA 50, a 15-NN graph (pynndescent, scanpy's default) and Leiden (igraph, resolution
1); its k-means on the PCs (the ``pca_kmeans`` baseline) is scored too but not timed separately.
numba's cache is warmed once before the timed runs, as it is on any machine that has run scanpy before.

The ``cap`` mode runs scgpcl with ``pretrain_rounds`` / ``finetune_rounds`` capped and reports the
peak memory, the cost per optimizer step, per global step and of the final full-data pass; the full
run's time is projected from them with the step counts of the largest complete run (which are bounded:
they do not grow with the cells).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from scgpcl._machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCGPCL_SHARED", REPO.parent / "shared"))
CACHE = REPO / "benchmarks" / "runs" / "scale"
RESULTS = REPO / "benchmarks" / "results"
JSONL = RESULTS / "scale.jsonl"
#: What the tables show, written by hand (appended to the generated page).
NOTES = RESULTS / "scale_notes.md"
SIM_ARGS = ["--preset", "demo", "--n-genes", "2000", "--group-prob", "0.16", "0.14", "0.12", "0.11", "0.10",
            "0.09", "0.08", "0.07", "0.07", "0.06", "--lib-loc", "6.8", "--de-fac-scale", "0.8",
            "--dropout-type", "none", "--seed", "0"]


# ----------------------------------------------------------------------------- data
def dataset(name: str) -> Path:
    """The cached file for ``sim_N`` or ``pbmc_N``, made on first use."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{name}.h5ad"
    if path.exists():
        return path
    kind, n = name.split("_")
    if kind == "sim":
        subprocess.run([sys.executable, "-m", "scgpcl", "simulate", str(path), "--n-cells", n, *SIM_ARGS],
                       check=True)
    elif kind == "pbmc":
        _resample_pbmc(int(n), path)
    elif kind == "wide":
        _wide(int(n), path)
    else:
        raise SystemExit(f"unknown dataset {name!r}")
    return path


def _resample_pbmc(n: int, path: Path, seed: int = 0) -> None:
    import anndata as ad
    import scipy.sparse as sp

    src = ad.read_h5ad(SHARED / "data" / "real" / "pbmc4k_10x_top2000.h5ad")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, src.n_obs, size=n)
    x = sp.csr_matrix(src.X)[rows]
    x.data = rng.binomial(x.data.astype(np.int64), 0.9).astype(np.float32)
    x.eliminate_zeros()
    out = ad.AnnData(x, var=src.var[[]].copy())
    out.obs_names = [f"c{i}" for i in range(n)]
    out.obs["cell_type"] = src.obs["cell_type"].to_numpy()[rows]
    out.write_h5ad(path)


def _wide(n: int, path: Path, n_genes: int = 25000, k: int = 10, seed: int = 0) -> None:
    """Counts with every gene (``wide_N`` in the module's docstring), made and written 5,000 cells at a time.

    The file is an AnnData with an empty X of the full shape, whose X is then replaced by the first block
    and the others appended (anndata's ``sparse_dataset.append``): a million cells never sit in memory.
    """
    import anndata as ad
    import h5py
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(seed)
    base = rng.lognormal(-3.2, 2.0, n_genes).astype(np.float32)
    base *= 2500 / base.sum()
    up = np.ones((k, n_genes), np.float32)
    for g in range(k):
        up[g, rng.choice(n_genes, 300, replace=False)] = rng.lognormal(1.0, 0.5, 300)
    group = rng.integers(0, k, n)
    obs = pd.DataFrame({"cell_type": pd.Categorical([f"g{g}" for g in group])}, index=[f"c{i}" for i in range(n)])
    tmp = path.with_name(path.name + ".partial")
    ad.AnnData(sp.csr_matrix((n, n_genes), dtype=np.float32), obs=obs,
               var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)])).write_h5ad(tmp)
    with h5py.File(tmp, "a") as f:
        del f["X"]
        for a in range(0, n, 5000):
            b = min(n, a + 5000)
            lib = rng.lognormal(0.0, 0.4, b - a).astype(np.float32)
            block = sp.csr_matrix(rng.poisson(base[None, :] * up[group[a:b]] * lib[:, None]).astype(np.float32))
            if a == 0:
                write_elem(f, "X", block)
                x = sparse_dataset(f["X"])
            else:
                x.append(block)
    tmp.rename(path)


# ----------------------------------------------------------------------------- workers
class _PhasePeaks:
    """The process's resident memory sampled every 50 ms (Linux ``/proc``), its maximum kept per phase."""

    def __init__(self):
        import threading

        self.peaks: dict[str, float] = {}
        self.phase = "read"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss_mb() -> float | None:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def sample(self) -> None:
        rss = self._rss_mb()
        if rss is not None:
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), rss)

    def enter(self, phase: str) -> None:
        self.sample()  # the end of the phase before
        self.phase = phase

    def stop(self) -> dict[str, float]:
        self.sample()
        self._stop.set()
        self._thread.join()
        return {k: round(v, 1) for k, v in self.peaks.items()}


def _worker_scgpcl(args) -> dict:
    import anndata as ad
    import torch

    import scgpcl
    from scgpcl.metrics import clustering_metrics

    torch.set_num_threads(args.threads)
    peaks = _PhasePeaks()
    t0 = time.perf_counter()
    a = ad.read_h5ad(args.data)
    truth = a.obs["cell_type"].astype(str).to_numpy()
    k = len(np.unique(truth))
    load_s = time.perf_counter() - t0
    overrides = json.loads(args.overrides) if args.overrides else {}
    t1 = time.perf_counter()
    peaks.enter("prepare")
    model = scgpcl.SCGPCL(a, k, random_state=args.seed, device="cpu", **overrides)
    prepare_s = time.perf_counter() - t1
    if args.prepare_only:  # reading and preparing (with the cell-scaling choice when it is on), no training
        return {"n_cells": int(a.n_obs), "nnz": int(model.data.counts.nnz), "nnz_input": int(a.X.nnz), "k": k,
                "load_s": load_s,
                "prepare_s": prepare_s, "target_sum": model.config.preprocess.target_sum,
                "silhouettes": {f"{t:g}": v for t, v in (model.target_sum_scores or {}).items()},
                "phase_peak_mb": peaks.stop()}
    t2 = time.perf_counter()
    peaks.enter("train")
    model.train(progress=False)
    train_s = time.perf_counter() - t2
    t3 = time.perf_counter()
    peaks.enter("predict")
    labels = model.predict()
    predict_s = time.perf_counter() - t3
    stages = model.summary()
    tr = model.trainer
    rec = {"n_cells": int(a.n_obs), "nnz": int(model.data.counts.nnz), "k": k, "load_s": load_s,
           "prepare_s": prepare_s, "train_s": train_s, "predict_s": predict_s, "phase_peak_mb": peaks.stop(),
           "nnz_input": int(a.X.nnz),
           "steps_per_round": tr.schedule.steps_per_round, "sample_cells": tr.embedder.n_sample,
           "stages": stages, **clustering_metrics(truth, labels)}
    return {k2: v for k2, v in rec.items() if k2 not in ("F1_macro", "F1_micro")}


class _CsrKNN:
    """pynndescent's k-NN transformer, returning a ``csr_matrix``: scanpy 1.11.5 calls ``getnnz`` on the
    result, which scipy 1.17's ``csr_array`` no longer has (a third-party incompatibility)."""

    def __init__(self, n_neighbors: int = 15, random_state: int = 0):
        from pynndescent import PyNNDescentTransformer

        self.t = PyNNDescentTransformer(n_neighbors=n_neighbors, random_state=random_state)

    def fit_transform(self, x):
        import scipy.sparse as sp

        return sp.csr_matrix(self.t.fit_transform(x))

    def get_params(self, deep=False):
        return {"n_neighbors": self.t.n_neighbors}


def _worker_scanpy(args) -> dict:
    import anndata as ad
    import scanpy as sc
    from sklearn.cluster import KMeans

    from scgpcl.metrics import clustering_metrics

    t0 = time.perf_counter()
    a = ad.read_h5ad(args.data)
    truth = a.obs["cell_type"].astype(str).to_numpy()
    k = len(np.unique(truth))
    t1 = time.perf_counter()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if a.n_vars > 2000:
        sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat")
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=50, random_state=0)
    sc.pp.neighbors(a, n_neighbors=15, use_rep="X_pca", transformer=_CsrKNN(15, 0))
    sc.tl.leiden(a, resolution=1.0, flavor="igraph", n_iterations=2, directed=False, random_state=0)
    pipeline_s = time.perf_counter() - t1
    leiden = a.obs["leiden"].astype(int).to_numpy()
    km = KMeans(k, n_init=10, random_state=0).fit_predict(a.obsm["X_pca"])
    m = clustering_metrics(truth, leiden)
    return {"n_cells": int(a.n_obs), "k": k, "load_s": t1 - t0, "pipeline_s": pipeline_s, "ARI": m["ARI"],
            "NMI": m["NMI"], "n_leiden": int(len(np.unique(leiden))),
            "ARI_pca_kmeans": clustering_metrics(truth, km)["ARI"]}


def worker(args) -> None:
    rec = _worker_scgpcl(args) if args.method == "scgpcl" else _worker_scanpy(args)
    print(json.dumps(rec, default=float), flush=True)


# ----------------------------------------------------------------------------- driver
def measure(method: str, data: Path, *, threads: int, seed: int = 0, overrides: dict | None = None,
            prepare_only: bool = False, src: Path | None = None) -> dict:
    """One worker process; wall time, CPU time and peak RSS from the operating system.

    ``src``: import scgpcl from this ``src`` folder (a checkout of another commit) instead of the installed one.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "_worker", method, "--data", str(data),
           "--threads", str(threads), "--seed", str(seed)]
    if overrides:
        cmd += ["--overrides", json.dumps(overrides)]
    if prepare_only:
        cmd += ["--prepare-only"]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise RuntimeError(f"{method} on {data.name} failed:\n{err[-3000:]}")
    rec = json.loads(out.strip().splitlines()[-1])
    if prepare_only:
        rec["prepare_only"] = True
    rec.update(method=method, dataset=data.stem, seed=seed, threads=threads, overrides=overrides or {},
               wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024,
               cpu=cpu_model(), date=time.strftime("%Y-%m-%d"))
    return rec


def append(rec: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with JSONL.open("a") as f:
        f.write(json.dumps(rec, default=float) + "\n")


def warm_numba() -> None:
    """Run the scanpy pipeline once, untimed, so that numba's compiled kernels are cached."""
    small = dataset("sim_10000")
    measure("scanpy", small, threads=1)


def run(args) -> None:
    names = [f"sim_{n}" for n in args.sizes] + [f"pbmc_{n}" for n in args.pbmc]
    paths = [dataset(n) for n in names]
    if not args.no_warm:
        warm_numba()
    for path in paths:
        for method in args.methods:
            for seed in (args.seeds if method == "scgpcl" else [0]):
                rec = measure(method, path, threads=args.threads, seed=seed)
                append(rec)
                print(f"{path.stem:>12} {method:>7} seed {seed}: wall {rec['wall_s']:.0f} s, CPU {rec['cpu_s']:.0f} s, "
                      f"RSS {rec['peak_rss_mb']:.0f} MB, ARI {rec['ARI']:.3f}", flush=True)


def real(args) -> None:
    """End to end on shared datasets as they are (the issue's "pbmc4k in under 60 s")."""
    for name in args.datasets:
        path = SHARED / "data" / "real" / f"{name}.h5ad"
        if not path.exists():
            raise SystemExit(f"{path} is missing: set SCGPCL_SHARED to the shared folder")
        for method in ("scanpy", "scgpcl"):
            for seed in (args.seeds if method == "scgpcl" else [0]):
                rec = measure(method, path, threads=args.threads, seed=seed)
                rec["real"] = True
                append(rec)
                print(f"{name:>12} {method:>7} seed {seed}: wall {rec['wall_s']:.0f} s, CPU {rec['cpu_s']:.0f} s, "
                      f"ARI {rec['ARI']:.3f}", flush=True)


def _real_section(recs) -> list[str]:
    real_recs = [r for r in recs if r.get("real")]
    if not real_recs:
        return []
    out = ["", "## Real data end to end", "",
           "`python benchmarks/scale.py real --datasets ... --seeds 0 1 2 --threads T`: the shared file as it is, "
           "the whole process timed (reading, preparing, training, labels). Medians over seeds for scgpcl.", "",
           "| data | cells | method | settings | seeds | wall s | CPU s | peak RSS MB | ARI |",
           "|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in real_recs:
        by.setdefault((r["dataset"], r["method"], _settings(r)), []).append(r)
    for (ds, method, label), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != "defaults")):
        med = lambda key, rr=rs: float(np.median([x[key] for x in rr]))
        aris = [x["ARI"] for x in rs]
        ari = f"{np.mean(aris):.3f}" + (f" ± {np.std(aris, ddof=1):.3f}" if len(aris) > 1 else "")
        out.append(f"| {ds} | {rs[0]['n_cells']} | {method} | {label} | {len(rs)} | {med('wall_s'):.0f} | {med('cpu_s'):.0f} | "
                   f"{med('peak_rss_mb'):.0f} | {ari} |")
    return out


def prepare(args) -> None:
    """The cost of the cell-scaling choice: reading and preparing each file with the defaults (which choose) and
    with ``choose_target_sum=False``, alternately, each in its own process."""
    for path in [dataset(f"sim_{n}") for n in args.sizes]:
        for rep in range(args.repeats):
            for over in ({}, {"choose_target_sum": False}):
                rec = measure("scgpcl", path, threads=args.threads, overrides=over, prepare_only=True)
                append(rec)
                print(f"{path.stem:>12} {_settings(rec):>24} #{rep}: prepare {rec['prepare_s']:.1f} s, wall "
                      f"{rec['wall_s']:.0f} s, CPU {rec['cpu_s']:.0f} s, RSS {rec['peak_rss_mb']:.0f} MB, "
                      f"target_sum {rec['target_sum']:g}", flush=True)


def wide(args) -> None:
    """Reading and preparing count matrices with every gene, at this commit and (``--before``) at another one,
    alternately, each in its own process: the peak memory of the steps before training."""
    trees = [("this", None)]
    if args.before:
        old = CACHE / f"tree_{args.before}"
        if not old.exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.before], check=True)
        trees.insert(0, (args.before, old / "src"))
    here = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    for path in [dataset(f"wide_{n}") for n in args.sizes]:
        for rep in range(args.repeats):
            for selection in args.gene_selection:
                for name, src in trees:
                    over = {"gene_selection": selection} if selection != "seurat" else {}
                    if args.end_to_end and not args.full_training:  # capped at 2 + 1 rounds: memory, not length
                        over.update(pretrain_rounds=2, warmup_rounds=1, finetune_rounds=1)
                    rec = measure("scgpcl", path, threads=args.threads, prepare_only=not args.end_to_end, src=src,
                                  overrides=over or None)
                    rec["wide_e2e" if args.end_to_end else "wide"] = True
                    rec["code"] = here + ("+" if _dirty() else "") if src is None else name
                    append(rec)
                    print(f"{path.stem:>12} {selection:>8} code {rec['code']:>9} #{rep}: prepare {rec['prepare_s']:.1f} "
                          f"s, wall {rec['wall_s']:.0f} s, CPU {rec['cpu_s']:.0f} s, RSS {rec['peak_rss_mb']:.0f} MB",
                          flush=True)


def _dirty() -> bool:
    return bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "src"],
                               capture_output=True, text=True, check=True).stdout.strip())


def _wide_section(recs) -> list[str]:
    rs = [r for r in recs if r.get("wide")]
    if not rs:
        return []
    out = ["", "## Every gene: the memory of reading and preparing", "",
           "`python benchmarks/scale.py wide --sizes ... --repeats R --threads T --before REV`: `wide_N` (25,000 "
           "genes, no gene filter, ~1,650 non-zeros per cell) read and prepared as `prepare` does, without "
           "training, by the code of commit `code`, each in its own process, the commits alternating. Medians over "
           "the repeats. `input MB`: the counts as float32 CSR (8 bytes per non-zero), the least any reader holds.",
           "", "| data | cells | non-zeros | input MB | settings | code | repeats | prepare s | whole process wall s | "
           "CPU s | peak RSS MB | peak / input |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {}  # in the order first run: the earlier commit first, as wide() runs it
    for r in rs:
        by.setdefault((r["n_cells"], r["dataset"], _settings(r), r["date"], r["code"]), []).append(r)
    first = {key: i for i, key in enumerate(by)}
    for (n, ds, label, _, code), group in sorted(by.items(), key=lambda kv: (*kv[0][:4], first[kv[0]])):
        med = lambda key, rr=group: float(np.median([x[key] for x in rr]))
        nnz_in = group[0]["nnz_input"]
        mb = nnz_in * 8 / 2**20
        out.append(f"| {ds} | {n} | {nnz_in:,} | {mb:.0f} | {label} | {code} | {len(group)} | {med('prepare_s'):.1f} | "
                   f"{med('wall_s'):.0f} | {med('cpu_s'):.0f} | {med('peak_rss_mb'):.0f} | "
                   f"{med('peak_rss_mb') / mb:.1f} |")
    return out


def _wide_e2e_section(recs) -> list[str]:
    rs = [r for r in recs if r.get("wide_e2e")]
    if not rs:
        return []
    phases = ("read", "prepare", "train", "predict")
    out = ["", "## Every gene, end to end: the memory of each phase", "",
           "`python benchmarks/scale.py wide --sizes ... --repeats 1 --threads T --before REV --end-to-end`: "
           "`wide_N` read, prepared, trained and labelled, by the code of commit `code`, each in its own process; "
           "training capped at 2 + 1 rounds (the memory of training does not grow with its rounds), or with the "
           "defaults' schedule where `settings` says `defaults` (`--full-training`). Peak RSS of the whole "
           "process (the operating system's) and of each phase (sampled every 50 ms), in MB (MiB), and as a "
           "multiple of `input MB` (8 bytes per non-zero).", "",
           "| data | settings | code | threads | rounds | wall s | ARI | input MB | peak RSS MB | "
           + " | ".join(f"{p} MB" for p in phases) + " | peak / input | train / input |",
           "|---|---|---|---|---|---|---|---|---|" + "---|" * len(phases) + "---|---|"]
    for r in rs:
        mb = r["nnz_input"] * 8 / 2**20
        ph = r.get("phase_peak_mb", {})
        cells = " | ".join(f"{ph[p]:.0f}" if p in ph else "" for p in phases)
        rounds = f"{r['stages']['pretrain']['rounds']} + {r['stages'].get('finetune', {}).get('rounds', 0)}"
        out.append(f"| {r['dataset']} | {_settings(r)} | {r['code']} | {r['threads']} | {rounds} | {r['wall_s']:.0f} | "
                   f"{r['ARI']:.3f} | {mb:.0f} | {r['peak_rss_mb']:.0f} | {cells} | "
                   f"{r['peak_rss_mb'] / mb:.1f} | {ph.get('train', float('nan')) / mb:.1f} |")
    return out


def _prepare_section(recs) -> list[str]:
    prep = [r for r in recs if r.get("prepare_only") and not r.get("wide")]
    if not prep:
        return []
    out = ["", "## The cell-scaling choice at scale", "",
           "`python benchmarks/scale.py prepare --sizes ... --repeats R --threads T`: each process reads the file and "
           "builds the model (gene selection, features and, with the defaults, the choice between the median total "
           "and 10,000 counts: PCA and k-means on a 5,000-cell sample for each, then the features again at the "
           "chosen scaling), without training; the two settings alternate. Medians over the repeats.", "",
           "| data | cells | settings | repeats | prepare s | whole process wall s | CPU s | peak RSS MB | chosen |",
           "|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in prep:
        by.setdefault((r["n_cells"], r["dataset"], _settings(r)), []).append(r)
    for (n, ds, label), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][2] != "defaults")):
        med = lambda key, rr=rs: float(np.median([x[key] for x in rr]))
        chosen = ", ".join(sorted({f"{x['target_sum']:g}" for x in rs}))
        out.append(f"| {ds} | {n} | {label} | {len(rs)} | {med('prepare_s'):.1f} | {med('wall_s'):.0f} | "
                   f"{med('cpu_s'):.0f} | {med('peak_rss_mb'):.0f} | {chosen} |")
    return out


def cap(args) -> None:
    path = dataset(f"sim_{args.size}")
    over = {"pretrain_rounds": args.rounds, "warmup_rounds": args.rounds - 1, "finetune_rounds": args.rounds,
            "convergence_ari": 1.01, "convergence_patience": 0}
    rec = measure("scgpcl", path, threads=args.threads, overrides=over)
    rec["capped"] = True
    append(rec)
    print(json.dumps({k: rec[k] for k in ("wall_s", "cpu_s", "peak_rss_mb", "prepare_s", "train_s", "predict_s")}))


# ----------------------------------------------------------------------------- table
def _cost(rec: dict) -> dict:
    """Seconds per optimizer step of each stage (wall, this run's threads)."""
    out = {}
    for stage in ("pretrain", "finetune"):
        s = rec["stages"].get(stage) or {}
        out[stage] = s["seconds"] / s["steps"] if s.get("steps") else float("nan")
    return out


def _settings(rec: dict) -> str:
    """``defaults``, or the overrides a run was made (or relabelled) with."""
    over = rec.get("overrides") or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(over.items())) if over else "defaults"


def table(args) -> None:
    recs = [json.loads(line) for line in JSONL.read_text().splitlines() if line.strip()]
    full = [r for r in recs if not r.get("capped") and not r.get("real") and not r.get("prepare_only")
            and not r.get("wide_e2e")]
    lines = ["# Atlas scale on one machine", "",
             "Package defaults against the scanpy pipeline (normalize_total, log1p, scale, PCA 50, 15-NN with "
             "pynndescent, Leiden at resolution 1), each in its own process on the same machine in one session. "
             "Wall and CPU seconds and peak RSS are the operating system's, for the whole process (reading the "
             "file included). ARI against the simulated groups (or pbmc4k's labels). Generated by "
             "`python benchmarks/scale.py table` from `scale.jsonl`; the data and the commands are in the "
             "script's docstring.", ""]
    cpus = sorted({r["cpu"] for r in recs})
    lines += [f"CPU: {', '.join(cpus)}; threads per run: {sorted({r['threads'] for r in recs})}.", ""]
    lines += ["`settings`: `defaults` are the package defaults at the time of the run; rows measured before the default "
              "changed carry the settings that were the defaults then (`harness.py relabel`). The scanpy columns are "
              "the scanpy run on the same data on the same day (the same session), if any.", ""]
    lines += ["| data | cells | settings | scgpcl wall s | CPU s | peak RSS MB | ARI | steps (pre+fine) | s/step | "
              "scanpy wall s | CPU s | RSS MB | ARI (Leiden) | ARI (PCA k-means) | wall ratio |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    by = {}
    for r in full:
        by.setdefault((r["dataset"], r["method"], _settings(r)), []).append(r)
    for (ds, method, label), rs in sorted(by.items(), key=lambda kv: (kv[0][0].split("_")[0],
                                                                      int(kv[0][0].split("_")[1]),
                                                                      kv[0][2] != "defaults", kv[0][2])):
        if method != "scgpcl":
            continue
        same_day = [x for x in by.get((ds, "scanpy", "defaults"), []) if x.get("date") == rs[-1].get("date")]
        sp_ = (same_day or [{}])[-1]  # the scanpy run of the same session
        med = lambda key, rr=rs: float(np.median([x[key] for x in rr]))
        steps = [x["stages"]["pretrain"]["steps"] + x["stages"].get("finetune", {}).get("steps", 0) for x in rs]
        cost = np.median([_cost(x)["pretrain"] for x in rs])
        aris = [x["ARI"] for x in rs]
        ari = f"{np.mean(aris):.3f}" + (f" ± {np.std(aris, ddof=1):.3f}" if len(aris) > 1 else "")
        ratio = med("wall_s") / sp_["wall_s"] if sp_ else float("nan")
        lines.append(f"| {ds} | {rs[0]['n_cells']} | {label} | {med('wall_s'):.0f} | {med('cpu_s'):.0f} | {med('peak_rss_mb'):.0f} "
                     f"| {ari} | {int(np.median(steps))} | {cost:.2f} | {sp_.get('wall_s', float('nan')):.0f} | "
                     f"{sp_.get('cpu_s', float('nan')):.0f} | {sp_.get('peak_rss_mb', float('nan')):.0f} | "
                     f"{sp_.get('ARI', float('nan')):.3f} | {sp_.get('ARI_pca_kmeans', float('nan')):.3f} | {ratio:.1f} |")
    slopes = []
    for label in sorted({_settings(r) for r in full}, key=lambda lb: (lb != "defaults", lb)):
        sims = sorted([(r["n_cells"], r["wall_s"]) for r in full if r["method"] == "scgpcl"
                       and r["dataset"].startswith("sim") and 30000 <= r["n_cells"] <= 300000 and _settings(r) == label])
        if len({n for n, _ in sims}) >= 2:
            n, t = np.array(sims, dtype=float).T
            slopes.append(f"**n^{np.polyfit(np.log(n), np.log(t), 1)[0]:.2f}** ({label})")
    if slopes:
        lines += ["", "Time against cells, 30k to 300k simulated cells (wall, least squares on logs): "
                      + ", ".join(slopes) + "."]
    lines += _cap_section(recs, full)
    lines += _real_section(recs)
    lines += _prepare_section(recs)
    lines += _wide_section(recs)
    lines += _wide_e2e_section(recs)
    if NOTES.exists():
        lines += ["", NOTES.read_text().rstrip()]
    Path(args.md).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.md}")


def _cap_section(recs, full) -> list[str]:
    capped = [r for r in recs if r.get("capped")]
    if not capped:
        return []
    r = capped[-1]
    ref = max((x for x in full if x["method"] == "scgpcl" and x["dataset"].startswith("sim")), key=lambda x: x["n_cells"])
    cost = _cost(r)
    pre, fine = ref["stages"]["pretrain"], ref["stages"].get("finetune", {})
    rounds_pre, rounds_fine = r["stages"]["pretrain"]["rounds"], r["stages"].get("finetune", {}).get("rounds", 0)
    # per round: the steps, plus a global step; the capped run's stage seconds hold both
    per_round_pre = r["stages"]["pretrain"]["seconds"] / max(rounds_pre, 1)
    per_round_fine = r["stages"]["finetune"]["seconds"] / max(rounds_fine, 1) if rounds_fine else 0.0
    projected = r["load_s"] + r["prepare_s"] + pre["rounds"] * per_round_pre + fine.get("rounds", 0) * per_round_fine \
        + r["predict_s"]
    return ["", f"## {r['n_cells']:,} cells x 2000 genes, a run capped in rounds", "",
            f"`python benchmarks/scale.py cap --size {r['n_cells']} --threads {r['threads']}` "
            f"({rounds_pre} pre-training and {rounds_fine} fine-tuning rounds, {r['nnz']:,} non-zeros):", "",
            f"- peak RSS **{r['peak_rss_mb'] / 1024:.1f} GiB**; read {r['load_s']:.0f} s, prepare {r['prepare_s']:.0f} s, "
            f"final full-data embedding and labels {r['predict_s']:.0f} s;",
            f"- {cost['pretrain']:.2f} s per pre-training step, {cost['finetune']:.2f} s per fine-tuning step; "
            f"{per_round_pre:.0f} s per pre-training round and {per_round_fine:.0f} s per fine-tuning round "
            "(steps and global step);",
            f"- projected full run with the rounds of the {ref['n_cells']:,}-cell run ({pre['rounds']} + "
            f"{fine.get('rounds', 0)}): **{projected / 60:.0f} min** wall."]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--sizes", nargs="*", type=int, default=[10000, 30000, 100000, 300000])
    r.add_argument("--pbmc", nargs="*", type=int, default=[100000])
    r.add_argument("--methods", nargs="+", default=["scanpy", "scgpcl"])
    r.add_argument("--seeds", nargs="+", type=int, default=[0])
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--no-warm", action="store_true")
    pr = sub.add_parser("prepare")
    pr.add_argument("--sizes", nargs="+", type=int, default=[100000, 1000000])
    pr.add_argument("--repeats", type=int, default=3)
    pr.add_argument("--threads", type=int, default=2)
    wd = sub.add_parser("wide")
    wd.add_argument("--sizes", nargs="+", type=int, default=[100000, 200000])
    wd.add_argument("--repeats", type=int, default=2)
    wd.add_argument("--threads", type=int, default=1)
    wd.add_argument("--gene-selection", nargs="+", default=["seurat", "variance"],
                    help="seurat: the default; variance: the reference's (--preset faithful)")
    wd.add_argument("--before", default="", help="a commit to measure side by side (a git worktree in the cache)")
    wd.add_argument("--end-to-end", action="store_true",
                    help="train (2 + 1 rounds) and label too, with the memory of each phase")
    wd.add_argument("--full-training", action="store_true",
                    help="with --end-to-end: train with the package defaults' rounds, not 2 + 1")
    c = sub.add_parser("cap")
    c.add_argument("--size", type=int, default=1000000)
    c.add_argument("--rounds", type=int, default=2)
    c.add_argument("--threads", type=int, default=2)
    e = sub.add_parser("real")
    e.add_argument("--datasets", nargs="+", default=["pbmc4k_10x_top2000"])
    e.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    e.add_argument("--threads", type=int, default=2)
    t = sub.add_parser("table")
    t.add_argument("--md", default=str(RESULTS / "scale.md"))
    w = sub.add_parser("_worker")
    w.add_argument("method", choices=["scgpcl", "scanpy"])
    w.add_argument("--data", required=True)
    w.add_argument("--threads", type=int, default=2)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--overrides", default="")
    w.add_argument("--prepare-only", action="store_true")
    args = p.parse_args(argv)
    {"run": run, "cap": cap, "real": real, "prepare": prepare, "wide": wide, "table": table, "_worker": worker}[args.cmd](args)


if __name__ == "__main__":
    main()
