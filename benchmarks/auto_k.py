"""Unknown number of clusters: scGPCL with ``n_clusters=None`` vs the true K vs Leiden.

For every raw-count dataset of ``../shared/data/real/`` and every seed:

* ``auto``: scGPCL, ``fast`` preset, ``n_clusters=None`` (K estimated on the
  warm-up embedding with ``--method``, the package default unless given).
  The worker also saves that warm-up embedding and scores *every* criterion
  of ``scgpcl.train._auto_k`` on it (the K each would pick, and the ARI of
  k-means on the embedding at that K), which is the criteria comparison.
* ``true``: scGPCL, ``fast`` preset, true K. Taken from the harness's
  ``benchmarks/results/real*.jsonl`` (method ``scgpcl_fast``) when present,
  else run here.
* ``k=N`` (e.g. ``k=12``): scGPCL, ``fast`` preset, given K = N. The training
  after the estimate depends only on K and the seed, so these runs give the
  end-to-end ARI that any criterion picking N would reach, on this machine.
* ``leiden_res1``: scanpy's standard pipeline (normalize_total 1e4, log1p,
  2000 seurat HVG, scale max 10, PCA 50, 15-NN) + Leiden at resolution 1.

Each run is its own process; one JSON line per run goes to
``benchmarks/results/auto_k.jsonl`` (runs already there are skipped, so the
script can be stopped and resumed; ``--out`` writes to another file, for
parallel lanes). Then ``auto_k.md`` is written.

``--override KEY=VALUE`` changes the ``fast`` preset for the ``auto`` and
``true`` runs (recorded in each record's ``overrides``); the table pairs
``auto`` runs only with true-K runs of the same overrides, and ``table
--override ...`` selects which configuration it shows.

    python benchmarks/auto_k.py run --seeds 0 1 2          # everything, then the table
    python benchmarks/auto_k.py table                      # only rewrite auto_k.md
    python benchmarks/auto_k.py warmup --datasets pollen ... --emb-dir DIR   # save warm-up embeddings
    python benchmarks/auto_k.py criteria --emb-dir DIR     # criteria on saved embeddings
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCGPCL_SHARED", REPO.parent / "shared"))
REAL_DIR = SHARED / "data" / "real"
RESULTS = REPO / "benchmarks" / "results"
JSONL = RESULTS / "auto_k.jsonl"
MD = RESULTS / "auto_k.md"
EMB_DIR = REPO / "benchmarks" / "runs" / "auto_k_embeddings"
LABEL_KEY = "cell_type"
COMMAND = "python benchmarks/auto_k.py run --seeds 0 1 2"

#: MANIFEST.md: Leiden at resolution 1 (ARI, NMI, number of clusters), first 12 files.
MANIFEST_LEIDEN = {
    "worm_neuron": (0.39, 0.70, 32), "mouse_bladder_top2000": (0.58, 0.77, 12),
    "pbmc4k_10x_top2000": (0.57, 0.70, 12), "human_kidney_top2000": (0.47, 0.71, 31),
    "cite_cbmc_top2000": (0.52, 0.77, 19), "baron_mouse1": (0.67, 0.81, 10),
    "zeisel_subset_descend": (0.25, 0.53, 11), "klein_subset1000": (0.56, 0.74, 9),
    "pollen": (0.73, 0.88, 7), "camp_brain_organoid": (0.15, 0.30, 8),
    "cellbench_celseq2_3cl": (0.88, 0.92, 4),
}

#: Why the package default is what it is (written into both markdown files).
DECISION = """\
**Decision (before the full run, on the 10 warm-up embeddings of `auto_k_criteria.md`, seed 0):**
`eigengap` is the default. Mean k-means ARI at the estimated K: eigengap 0.593, leiden_stability 0.586,
leiden_modularity 0.549, silhouette 0.394 (true K: 0.643); mean |log(K_est/K_true)|: 0.51, 0.65, 0.45, 1.13;
seconds per estimate (shared 2-core machine, two runs): 0.2-0.3, 12-20, 12-18, 5-9. eigengap and leiden_stability tie on accuracy; eigengap is
~60x cheaper and needs no optional package. Both depend on the kNN graph's size (K for n_neighbors 10 / 15 / 30:
eigengap baron_human 26 / 5 / 4; leiden_stability pollen 2 / 12 / 17), so neither is robust to that choice; 15
(scanpy's default) is used throughout. leiden_stability gives the same K for seeds 0, 1, 2 on 4 of 6
embeddings tried (camp 2 / 3 / 2, baron_human 15 / 16 / 9). silhouette prefers K = 2 on most real embeddings and is the worst. Every `auto` run of the full
benchmark scores all four criteria on its own warm-up embedding (table "From the benchmark runs"), so the choice can be re-checked
on 13 datasets x 3 seeds."""


#: The current default (written at the top of auto_k.md).
CONSENSUS = """\
**Since 2026-12-03 the default criterion is `consensus`** (the geometric mean of the `eigengap`,
`leiden_stability` and `leiden_modularity` estimates). Its end-to-end results, and the bar check for it,
are in `auto_k_consensus.md` (made by `benchmarks/auto_k_lookup.py` from runs at fixed K on one CPU model,
AMD EPYC). The table below is for the previous default, `leiden_modularity`, with true-K pairs from
`real.jsonl` (Intel Xeon), at the settings the package had then, which the records carry as the overrides
in the command below (they were relabelled when later defaults changed). The package defaults with K
estimated are in `accuracy.md`, "Unknown K"."""


#: Why the default changed after the full run (written into auto_k.md).
REVISION = """\
**Revised decision (2026-11-30, after the benchmark runs): `leiden_modularity` is the default.**

1. **Which K it picks.** The criteria were scored on the warm-up embeddings of the benchmark runs. They are
   the same whatever the k-means setting, since K is estimated before any k-means. On all 39 (as scored before
   2026-12-02, with leidenalg) `leiden_modularity` comes closer to the true K than `eigengap`: mean
   |log(K_est/K_true)| 0.42 vs 0.55. k-means at its K also scores higher, ARI 0.567 vs 0.511 (true K: 0.588).
   The table above now has only the runs that kept their record (see 7).
2. **End to end.** The estimated-K ARI is 0.665 (true K: 0.725) with `leiden_modularity` and fresh restarts on the
   first 11 datasets; with human_kidney (K = 19-20 for 11 types: 0.57 against 0.63) and cite_cbmc (K = 12-14 for
   15 types: 0.58 against 0.55) added it is 0.651 against 0.705 over all 13 (the page removed in 1410879,
   `git show ffe7dc9:benchmarks/results/auto_k_patience0.md`: the preset before the patience stop).
   With `eigengap` and the previous k-means warm start (`git show ffe7dc9:benchmarks/results/auto_k_previous.md`, 10 datasets) it was 0.587.
3. **How each fails.**
   - `eigengap`: K = 2 on three-type data (cellbench, zeisel_subset) and K = 5-6 for baron_human's 14 types.
   - `leiden_modularity`: it over-splits zeisel_subset (K = 8 for 3 types: ARI 0.42 against 0.94) and
     worm_neuron (K = 22-23 for 10 types), and it under-splits mouse_bladder (9 for 16).
4. **Caveat.** The choice was made on the same datasets it is scored on. On the first 10 seed-0 embeddings
   (`auto_k_criteria.md`, made before the gene-selection change of 2026-11-29) `eigengap` had been ahead,
   0.593 vs 0.549.
5. **Cost.** With igraph's Leiden (since 2026-12-02) an estimate takes under 1 s on the smallest datasets
   here, 4-5 s on pbmc4k and human_kidney and 12-15 s on cite_cbmc (one thread, other jobs running;
   `leiden_impl.md`), against 0.1-0.2 s for `eigengap`. With leidenalg, used before, it was about 10x
   slower (25-28 s on pbmc4k, 33-93 s on human_kidney and cite_cbmc). igraph is a required dependency.
6. **With the current `fast` preset (patience stop, 2026-12-02; `auto_k.md`).** The estimates are the same
   (they are made on the warm-up embedding, before the patience stop can act), but the gap is wider:
   0.623 against 0.689 (+0.067; with `convergence_patience=0` it was +0.054). Pre-training now stops
   earlier, and the runs with an over-split K lost most: human_kidney 0.49 (0.57 without the patience stop),
   pbmc4k 0.62 (0.66), zeisel_full 0.77 (0.84).
7. **igraph's Leiden (2026-12-02).** The estimate now runs igraph's own Leiden instead of leidenalg
   (`leiden_impl.md`: ~10x faster, same K on 28 of the 39 warm-up embeddings, K +- 1 on 11). The 28 runs
   whose K did not change are kept: the training after the estimate depends only on K and the seed (checked:
   pollen seed 0 rerun gives the identical ARI). The 11 others were rerun with `--no-criteria` (their old
   records are in `auto_k_leidenalg.jsonl`). The gap is now +0.079 (0.610 against 0.689): baron_human gained
   (0.76 with K = 11-12), cite_cbmc lost."""


# ------------------------------------------------------------------ datasets
def default_datasets() -> list[str]:
    """Raw-count files of the shared real data, smallest first (NOT_COUNTS excluded)."""
    files = sorted(REAL_DIR.glob("*.h5ad"), key=lambda p: p.stat().st_size)
    return [p.stem for p in files if "NOT_COUNTS" not in p.stem]


def _splat(seed: int, n_groups: int, n_cells: int, unequal: bool):
    """A harder simulation than the shared ones: many groups, weak DE (de.facScale 0.5), dropout."""
    from scgpcl.simulate import simulate

    w = np.linspace(1, 3, n_groups) if unequal else np.ones(n_groups)
    return simulate(None, seed=seed, n_cells=n_cells, n_genes=3000, group_prob=tuple(w / w.sum()),
                    de_fac_scale=0.5, dropout_type="experiment", dropout_mid=1.0, dropout_shape=-1.0)


#: Simulated sets for ``warmup --sim``: the four Splatter references in ``../shared/data/sim`` and two
#: of our own with more groups (10 of unequal size, 15 equal), which the references lack.
SIM_SETS = {
    "Imb1": None, "Sig1": None, "SimT3_3": None, "SimT6_5": None,
    "splat10": lambda: _splat(7, 10, 2500, unequal=True),
    "splat15": lambda: _splat(8, 15, 3000, unequal=False),
}


def load(name: str):
    import anndata as ad

    if name in SIM_SETS:
        make = SIM_SETS[name]
        a = make() if make is not None else ad.read_h5ad(SHARED / "data" / "sim" / f"{name}.h5ad")
    else:
        a = ad.read_h5ad(REAL_DIR / f"{name}.h5ad")
    return a, int(a.obs[LABEL_KEY].nunique())


# ------------------------------------------------------------------- workers
def _metrics(truth, labels) -> dict:
    from scgpcl.metrics import clustering_metrics

    keep = labels >= 0
    m = clustering_metrics(np.asarray(truth)[keep], labels[keep])
    return {k: float(v) for k, v in m.items() if isinstance(v, (int, float, np.floating))}


def score_criteria(z: np.ndarray, truth: np.ndarray, k_true: int, seed: int, k_max: int = 30) -> dict:
    """Every criterion's K on ``z`` and the ARI of k-means on ``z`` at that K (and at the true K)."""
    from sklearn.metrics import adjusted_rand_score

    from scgpcl.train._auto_k import METHODS
    from scgpcl.train._kmeans import kmeans

    def km_ari(k):
        return float(adjusted_rand_score(truth, kmeans(z, int(k), n_init=5, seed=seed).labels))

    out = {"true": {"k": k_true, "ari_kmeans": km_ari(k_true)}}
    for name, fn in METHODS.items():
        try:
            r = fn(z, k_max=k_max, seed=seed)
        except ImportError as e:  # Leiden criteria without leidenalg
            out[name] = {"error": str(e)}
            continue
        out[name] = {"k": r.k, "ari_kmeans": km_ari(r.k), "seconds": r.seconds}
    return out


def _overrides(args) -> dict:
    return harness.parse_overrides(getattr(args, "override", None) or [])


def _same(r: dict, overrides: dict) -> bool:
    return json.dumps(r.get("overrides") or {}, sort_keys=True) == json.dumps(overrides, sort_keys=True)


def _fixed_k(mode: str, k_true: int) -> int:
    """K of a ``true`` or ``k=N`` run."""
    return int(mode[2:]) if mode.startswith("k=") else k_true


def _mode(text: str) -> str:
    if text in ("auto", "true", "leiden_res1") or (text.startswith("k=") and text[2:].isdigit() and int(text[2:]) >= 2):
        return text
    raise argparse.ArgumentTypeError(f"mode must be auto, true, leiden_res1 or k=N (N >= 2), not {text!r}")


def worker(args) -> None:
    """One run; prints one JSON line."""
    import torch

    import scgpcl
    from scgpcl.train import _trainer

    torch.set_num_threads(int(os.environ.get("SCGPCL_THREADS", "1")))
    a, k_true = load(args.dataset)
    truth = a.obs[LABEL_KEY].astype(str).to_numpy()
    rec: dict = {"dataset": args.dataset, "mode": args.mode, "seed": args.seed, "K_true": k_true, "n_cells": a.n_obs}
    t0 = time.perf_counter()
    if args.mode == "leiden_res1":
        import scanpy as sc

        b = harness.scanpy_pcs(a)  # the MANIFEST pipeline: normalise, log1p, 2000 HVG, scale, PCA 50
        harness.pca_neighbors(b, 15)
        sc.tl.leiden(b, resolution=1.0, random_state=args.seed, flavor="igraph", n_iterations=2, directed=False)
        labels = b.obs["leiden"].astype(int).to_numpy()
        rec["K"] = int(len(np.unique(labels)))
    else:
        criteria: dict = {}
        if args.mode == "auto":
            original = _trainer.estimate_k
            cell_truth: dict = {}

            def hooked(z, method, **kw):
                # save the warm-up embedding and score every criterion on it
                EMB_DIR.mkdir(parents=True, exist_ok=True)
                y = cell_truth["y"]
                np.savez_compressed(EMB_DIR / f"{args.dataset}__{args.seed}.npz", z=z, labels=y, k=k_true)
                if not args.no_criteria:
                    criteria.update(score_criteria(z, y, k_true, args.seed))
                return original(z, method, **kw)

            _trainer.estimate_k = hooked
        config_overrides = _overrides(args)
        rec["overrides"] = config_overrides
        overrides = {"auto_k_method": args.method} if (args.mode == "auto" and args.method) else {}
        model = scgpcl.SCGPCL(
            a, None if args.mode == "auto" else _fixed_k(args.mode, k_true), config=scgpcl.fast(),
            random_state=args.seed,
            device="cpu", **config_overrides, **overrides,
        )
        if args.mode == "auto":
            cell_truth["y"] = truth[model.data.cell_mask]
        model.train(progress=False)
        labels = model.predict()
        rec["K"] = int(model.n_clusters)
        s = model.summary()
        rec.update(
            pretrain_epochs=int(s["pretrain"]["rounds"]),
            finetune_epochs=int(s.get("finetune", {}).get("epochs", 0)),
        )
        if model.auto_k is not None:
            rec.update(method=model.auto_k["method"], auto_k_seconds=model.auto_k["seconds"],
                       curve=model.auto_k["curve"], criteria=criteria,
                       leiden="igraph")  # runs before 2026-12-02 used leidenalg (leiden_impl.md)
    rec.update(_metrics(truth, labels))
    rec["seconds"] = time.perf_counter() - t0
    print(json.dumps(rec, default=float), flush=True)


# ------------------------------------------------------------------- records
def harness_true_k(datasets, overrides: dict) -> list[dict]:
    """True-K fast-preset runs (with exactly these config overrides) from the harness's ``real.jsonl``.

    Not ``real_amd.jsonl``: those reruns are on another CPU model than the ``auto`` runs here, and the same
    seed there is not the same run (``machine.md``); ``auto_k_lookup.py`` pairs runs by CPU model.
    """
    out = []
    for f in [RESULTS / "real.jsonl"]:
        for r in harness.load_records(f):
            if (r.get("method") == "scgpcl_fast" and r.get("status", "ok") == "ok" and _same(r, overrides)
                    and r.get("dataset") in datasets and "ARI" in r):
                out.append({"dataset": r["dataset"], "mode": "true", "seed": int(r["seed"]), "ARI": r["ARI"],
                            "NMI": r["NMI"], "overrides": overrides, "source": Path(f).name})
    return out


def all_records(datasets, overrides: dict, extra: Path | None = None, method: str | None = None) -> list[dict]:
    """Records of ``auto_k.jsonl`` (and ``extra``, read once even when it is that file) for one configuration;
    Leiden runs whatever their overrides. ``method``: only ``auto`` runs of that criterion (default: any)."""
    files = [JSONL] + ([extra] if extra is not None and Path(extra) != JSONL else [])
    recs = [r for f in files for r in harness.load_records(f)
            if r.get("dataset") in datasets and (r["mode"] == "leiden_res1" or _same(r, overrides))
            and (method is None or r["mode"] != "auto" or r.get("method") == method)]
    have = {(r["dataset"], r["mode"], r["seed"]) for r in recs}
    recs += [r for r in harness_true_k(datasets, overrides) if (r["dataset"], "true", r["seed"]) not in have]
    return recs


# --------------------------------------------------------------------- run
def _criterion(args) -> str:
    """The auto-K criterion of this run or table: ``--method``, else the package default."""
    from scgpcl import TrainConfig

    return getattr(args, "method", None) or TrainConfig().auto_k_method


def run(args) -> None:
    datasets = args.datasets or default_datasets()
    overrides = _overrides(args)
    args.method = _criterion(args)  # auto runs of another criterion are not these runs
    out = Path(args.out) if args.out else JSONL
    out.parent.mkdir(parents=True, exist_ok=True)
    for ds in datasets:
        for seed in args.seeds:
            for mode in args.modes:
                done = {(r["dataset"], r["mode"], r["seed"]) for r in all_records(datasets, overrides, out, args.method)}
                if (ds, mode, seed) in done:
                    continue
                cmd = [sys.executable, __file__, "_one", ds, mode, str(seed)]
                if args.method:
                    cmd += ["--method", args.method]
                if args.no_criteria:
                    cmd += ["--no-criteria"]
                for kv in args.override or []:
                    cmd += ["--override", kv]
                t0 = time.perf_counter()
                p = subprocess.run(cmd, capture_output=True, text=True)
                if p.returncode != 0:
                    print(f"{ds} {mode} seed {seed}: FAILED ({p.stderr.strip().splitlines()[-1:]})", flush=True)
                    continue
                rec = json.loads(p.stdout.strip().splitlines()[-1])
                rec.update(wall_s=time.perf_counter() - t0, machine=harness.machine())
                harness.append_record(out, rec)
                print(f"{ds} {mode} seed {seed}: K={rec['K']} (true {rec['K_true']}) ARI {rec['ARI']:.3f} "
                      f"NMI {rec['NMI']:.3f} ({rec['wall_s']:.0f} s)", flush=True)
    args.datasets = None  # the table covers every dataset, run here or before
    if out == JSONL:
        table(args)


# ------------------------------------------------------------------- table
def _override_args(overrides: dict) -> str:
    return "".join(f" --override {k}={json.dumps(v)}" for k, v in sorted(overrides.items()))


def _ms(v) -> str:
    v = np.asarray([x for x in v if x is not None], dtype=float)
    if v.size == 0:
        return "—"
    return f"{v.mean():.3f} ± {v.std(ddof=1) if v.size > 1 else 0:.3f}"


def table(args) -> None:
    datasets = args.datasets or default_datasets()
    overrides = _overrides(args)
    method = _criterion(args)
    recs = all_records(datasets, overrides, method=method)
    harness.check_undo_matched()
    by = lambda ds, mode: [r for r in recs if r["dataset"] == ds and r["mode"] == mode]
    undo = "".join(f" --undo-relabel {shlex.quote(w)}" for w in harness.UNDONE_RELABELS)
    L = ["# Unknown number of clusters (`n_clusters=None`, CLI `--n-clusters auto`)", "",
         "scGPCL with the `fast` preset; with `n_clusters=None` K is estimated on the embedding after the "
         "warm-up epochs, then the prototypes, DEC initialisation and fine-tuning use that K. "
         "`true K`: the same runs given the number of labelled types. `Leiden res 1`: scanpy's standard pipeline "
         "(normalize_total 1e4, log1p, 2000 seurat HVG, scale 10, PCA 50, 15-NN) + Leiden at resolution 1. "
         "Mean ± sd over seeds.", "", CONSENSUS, "",
         f"Command: `{COMMAND} --method {method}{_override_args(overrides)}` (resumable; "
         f"`python benchmarks/auto_k.py table --method {method}{_override_args(overrides)}{undo}` rewrites this "
         "file from `auto_k.jsonl`).", ""]
    if harness.UNDONE_RELABELS:
        L += [harness.undone_sentence(), ""]
    if overrides:
        L += [f"Configuration: the `fast` preset with {', '.join(f'`{k}={v}`' for k, v in sorted(overrides.items()))} "
              "(for both the estimated-K and the true-K runs).", ""]
    methods = sorted({r.get("method") for r in recs if r["mode"] == "auto" and r.get("method")})
    L.append(f"Criterion used for the estimate: {', '.join(f'`{m}`' for m in methods) or '—'}.")
    L += ["", "| dataset | cells | true K | estimated K (per seed) | ARI est. K | ARI true K | NMI est. K | NMI true K "
          "| Leiden res 1 ARI / NMI (#cl) | seeds auto / true |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    means = {"auto": [], "true": [], "leiden": [], "auto_nmi": [], "true_nmi": [], "leiden_nmi": []}
    complete = []
    for ds in datasets:
        au, tr, ld = by(ds, "auto"), by(ds, "true"), by(ds, "leiden_res1")
        if not (au or tr or ld):
            continue
        k_true = next((r["K_true"] for r in au + ld if "K_true" in r), "?")
        ldtxt = (f"{_ms([r['ARI'] for r in ld])} / {_ms([r['NMI'] for r in ld])} ({', '.join(str(r['K']) for r in ld)})"
                 if ld else "—")
        if not ld and ds in MANIFEST_LEIDEN:
            a_, n_, c_ = MANIFEST_LEIDEN[ds]
            ldtxt = f"{a_:.2f} / {n_:.2f} ({c_}) (MANIFEST)"
        L.append(f"| {ds} | {next((r.get('n_cells', '') for r in au), '')} | {k_true} | "
                 f"{', '.join(str(r['K']) for r in sorted(au, key=lambda r: r['seed'])) or '—'} | "
                 f"{_ms([r['ARI'] for r in au])} | {_ms([r['ARI'] for r in tr])} | "
                 f"{_ms([r['NMI'] for r in au])} | {_ms([r['NMI'] for r in tr])} | {ldtxt} | {len(au)} / {len(tr)} |")
        if au and tr and ld:
            complete.append(ds)
            means["auto"].append(np.mean([r["ARI"] for r in au]))
            means["true"].append(np.mean([r["ARI"] for r in tr]))
            means["leiden"].append(np.mean([r["ARI"] for r in ld]))
            means["auto_nmi"].append(np.mean([r["NMI"] for r in au]))
            means["true_nmi"].append(np.mean([r["NMI"] for r in tr]))
            means["leiden_nmi"].append(np.mean([r["NMI"] for r in ld]))
    L.append("")
    if complete:
        ma, mt, ml = (float(np.mean(means[k])) for k in ("auto", "true", "leiden"))
        seeds = sorted({r["seed"] for r in recs if r["dataset"] in complete})
        status = ("all raw-count datasets" if set(default_datasets()) <= set(complete)
                  else f"PRELIMINARY: {len(complete)} of the {len(default_datasets())} raw-count datasets")
        L += [f"Over the {len(complete)} dataset(s) with all three, seeds {seeds} ({status}; mean over datasets "
              "of the per-dataset mean):", "",
              "| | ARI | NMI |", "|---|---|---|",
              f"| scGPCL, estimated K | {ma:.3f} | {np.mean(means['auto_nmi']):.3f} |",
              f"| scGPCL, true K | {mt:.3f} | {np.mean(means['true_nmi']):.3f} |",
              f"| Leiden res 1 | {ml:.3f} | {np.mean(means['leiden_nmi']):.3f} |", "",
              f"Bar{'' if status.startswith('all') else ' (so far, preliminary)'}: estimated-K ARI within 0.05 of true-K ARI: **{'met' if mt - ma <= 0.05 else 'NOT met'}** "
              f"(true K − estimated K: {mt - ma:+.3f}); better than Leiden res 1: **{'met' if ma > ml else 'NOT met'}** "
              f"({ma - ml:+.3f}).", ""]
        missing = [d for d in datasets if d not in complete]
        if missing:
            L += [f"Incomplete (not in the means): {', '.join(missing)}.", ""]
    L += criteria_section(recs), ""
    md = Path(getattr(args, "md", None) or MD)
    md.write_text("\n".join(L))
    print(f"wrote {md}")


def _criteria_table(rows: list[dict], title: str) -> list[str]:
    """rows: {'dataset', 'seed', 'criteria': score_criteria output}."""
    names = [n for n in rows[0]["criteria"] if n != "true"] if rows else []
    L = [title, "", "| dataset | seed | true K (k-means ARI) | " + " | ".join(f"`{n}` K (ARI)" for n in names) + " |",
         "|---|---|---|" + "---|" * len(names)]
    agg = {n: {"ari": [], "err": [], "exact": [], "s": []} for n in [*names, "true"]}
    for r in rows:
        c = r["criteria"]
        cells = [f"{c['true']['k']} ({c['true']['ari_kmeans']:.2f})"]
        agg["true"]["ari"].append(c["true"]["ari_kmeans"])
        for n in names:
            if "error" in c.get(n, {"error": 1}):
                cells.append("—")
                continue
            cells.append(f"{c[n]['k']} ({c[n]['ari_kmeans']:.2f})")
            agg[n]["ari"].append(c[n]["ari_kmeans"])
            agg[n]["err"].append(abs(np.log(c[n]["k"] / c["true"]["k"])))
            agg[n]["exact"].append(c[n]["k"] == c["true"]["k"])
            agg[n]["s"].append(c[n]["seconds"])
        L.append(f"| {r['dataset']} | {r['seed']} | " + " | ".join(cells) + " |")
    L += ["", "| criterion | mean k-means ARI at its K | mean abs log(K_est / K_true) | exact K | mean seconds |",
          "|---|---|---|---|---|", f"| (true K) | {np.mean(agg['true']['ari']):.3f} | 0 | all | — |"]
    for n in names:
        a = agg[n]
        if a["ari"]:
            L.append(f"| `{n}` | {np.mean(a['ari']):.3f} | {np.mean(a['err']):.2f} | "
                     f"{int(np.sum(a['exact']))}/{len(a['exact'])} | {np.mean(a['s']):.1f} |")
    return L


def criteria_section(recs: list[dict]) -> str:
    rows = [r for r in recs if r["mode"] == "auto" and r.get("criteria")]
    n_auto = sum(r["mode"] == "auto" for r in recs)
    L = ["## Criteria compared on the warm-up embeddings of the runs above", "",
         "Every `auto` run (unless made with `--no-criteria`) scores all criteria of `scgpcl.train._auto_k` on "
         "its own warm-up embedding (the one the estimate is made on): the K each picks and the ARI of k-means "
         "(5 restarts) on that embedding at that K. This measures the criterion alone, before prototypes and "
         f"fine-tuning. {len(rows)} of the {n_auto} `auto` runs above scored them.", ""]
    if rows:
        L += _criteria_table(sorted(rows, key=lambda r: (r["dataset"], r["seed"])), "### From the benchmark runs")
    else:
        L.append("(no runs yet)")
    L += ["", REVISION, "", DECISION]
    extra = RESULTS / "auto_k_criteria.md"
    if extra.exists():
        L += ["", f"Selection of the default before the full run: see `{extra.name}`."]
    return "\n".join(L)


def warmup(args) -> None:
    """Save the representation that ``n_clusters=None`` estimates K on, as DIR/<name>_s<seed>.npz.

    The package defaults with K unknown, stopped at the estimate: ``Trainer.estimate_k``'s input
    (the sample's representation after the warm-up rounds) is saved, and the run ends there.
    """
    import torch

    import scgpcl
    from scgpcl.train import _trainer

    class _Stop(Exception):
        pass

    torch.set_num_threads(int(os.environ.get("SCGPCL_THREADS", "1")))
    out = Path(args.emb_dir)
    out.mkdir(parents=True, exist_ok=True)
    for ds in args.datasets or (list(SIM_SETS) if args.sim else default_datasets()):
        f = out / f"{ds}_s{args.seed}.npz"
        if f.exists():
            continue
        a, k = load(ds)
        t0 = time.perf_counter()
        m = scgpcl.SCGPCL(a, None, config=scgpcl.fast(), random_state=args.seed, device="cpu")
        labels = a.obs[LABEL_KEY].astype(str).to_numpy()[m.data.cell_mask]
        saved = {}

        def hooked(z, method, _saved=saved, _tr=m.trainer, **kw):
            _saved["z"] = np.asarray(z)
            # the features' principal components of the same cells, for K on the joined space (auto_k_rules.py)
            _saved["pcs"] = _tr.sample_feature_pcs()[1]
            raise _Stop

        original, _trainer.estimate_k = _trainer.estimate_k, hooked
        try:
            m.trainer.progress = False
            m.trainer.pretrain()
        except _Stop:
            pass
        finally:
            _trainer.estimate_k = original
        z = saved["z"]
        if len(z) != len(labels):
            raise SystemExit(f"{ds}: K is estimated on a sample of {len(z)} of {len(labels)} cells; "
                             "this script saves only whole-data representations")
        np.savez_compressed(f, z=z, pcs=saved["pcs"], labels=labels, k=k)
        print(f"{ds}: {z.shape} K={k} ({time.perf_counter() - t0:.0f} s)", flush=True)


def criteria(args) -> None:
    """Score every criterion on saved warm-up embeddings (``*.npz`` with z, labels, k)."""
    rows = []
    for f in sorted(Path(args.emb_dir).glob("*.npz")):
        d = np.load(f, allow_pickle=True)
        seed = int(f.stem.rsplit("_", 1)[-1].lstrip("s")) if f.stem.rsplit("_", 1)[-1].lstrip("s").isdigit() else 0
        name = f.stem.rsplit("_", 1)[0].rstrip("_")
        c = score_criteria(d["z"], d["labels"].astype(str), int(d["k"]), seed)
        rows.append({"dataset": name, "seed": seed, "criteria": c})
        print(name, {n: v.get("k") for n, v in c.items()}, flush=True)
    if args.sim:
        seeds = sorted({r["seed"] for r in rows})
        L = ["# Auto-K criteria on simulated data", "",
             "Warm-up embeddings (`fast` preset: the 30 warm-up epochs, seeds " + ", ".join(map(str, seeds))
             + ") of the simulated sets in `auto_k.py`'s `SIM_SETS`: the four Splatter references of "
             "`../shared/data/sim` (Imb1: 6 groups of 39-454 cells; Sig1: 3 groups, de.facScale 0.1; "
             "SimT3_3: 3 groups, dropout.mid 1; SimT6_5: 6 groups, dropout.mid 2) and two of our own simulations "
             "with more groups (`splat10`: 10 groups of unequal size, `splat15`: 15 equal groups; both de.facScale 0.5, dropout.mid 1; the data "
             "are the same for every seed, the seed is the method's). Every criterion of "
             "`scgpcl.train._auto_k` with its defaults (K in 2..min(30, n/10)); in brackets the ARI of k-means "
             "(5 restarts) on the same embedding at that K. This scores the criterion alone, before prototypes "
             "and fine-tuning; the end-to-end comparison on real data is `auto_k_consensus.md`.", "",
             f"Machine: {harness.machine()}.", "",
             "Commands: `python benchmarks/auto_k.py warmup --sim --seed S --emb-dir "
             "benchmarks/runs/auto_k_sim_embeddings` for S in " + ", ".join(map(str, seeds))
             + ", then `python benchmarks/auto_k.py criteria --sim --emb-dir "
             "benchmarks/runs/auto_k_sim_embeddings --out benchmarks/results/auto_k_sim.md`.", ""]
    else:
        L = ["# Choosing the auto-K criterion", "",
             "Warm-up embeddings (`fast` preset: 30 warm-up epochs, seed 0) of the datasets below; every "
             "criterion of `scgpcl.train._auto_k` with its defaults (K in 2..min(30, n/10)); in brackets the ARI "
             "of k-means (5 restarts) on the same embedding at that K.", "",
             "Commands: `python benchmarks/auto_k.py warmup --datasets <names> --emb-dir DIR` (the same as "
             "the first 30 epochs of `SCGPCL(..., config=fast(), random_state=0)`), then "
             "`python benchmarks/auto_k.py criteria --emb-dir DIR`.", ""]
    L += _criteria_table(rows, "## Per embedding")
    if not args.sim:
        L += ["", DECISION]
    out = Path(args.out)
    out.write_text("\n".join(L) + "\n")
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    r.add_argument("--datasets", nargs="+", default=None)
    r.add_argument("--modes", nargs="+", type=_mode, default=["auto", "true", "leiden_res1"],
                   help="auto, true, leiden_res1, or k=N (scGPCL given K = N)")
    r.add_argument("--method", default=None, help="auto_k_method (default: the package default)")
    r.add_argument("--override", action="append", metavar="KEY=VALUE",
                   help="config override for the scGPCL runs (JSON values), e.g. kmeans_warm_start=true")
    r.add_argument("--out", default=None, help="append records here instead of auto_k.jsonl (parallel lanes)")
    r.add_argument("--no-criteria", action="store_true",
                   help="do not score every criterion on the warm-up embedding (roughly halves a large run)")
    t = sub.add_parser("table")
    t.add_argument("--datasets", nargs="+", default=None)
    t.add_argument("--method", default=None, help="only auto runs of this criterion (default: the package default)")
    t.add_argument("--override", action="append", metavar="KEY=VALUE", help="configuration to tabulate")
    t.add_argument("--md", default=None, help="write here instead of benchmarks/results/auto_k.md")
    harness.add_undo_option(t)
    w = sub.add_parser("warmup")
    w.add_argument("--datasets", nargs="+", default=None)
    w.add_argument("--seed", type=int, default=0)
    w.add_argument("--emb-dir", default=str(EMB_DIR))
    w.add_argument("--sim", action="store_true", help="the simulated sets (SIM_SETS) instead of the real files")
    c = sub.add_parser("criteria")
    c.add_argument("--emb-dir", default=str(EMB_DIR))
    c.add_argument("--out", default=str(RESULTS / "auto_k_criteria.md"))
    c.add_argument("--sim", action="store_true",
                   help="title and text for the simulated sets; no decision paragraph (that was made on real data)")
    o = sub.add_parser("_one")
    o.add_argument("dataset")
    o.add_argument("mode", type=_mode)
    o.add_argument("seed", type=int)
    o.add_argument("--method", default=None)
    o.add_argument("--override", action="append", metavar="KEY=VALUE")
    o.add_argument("--no-criteria", action="store_true")
    args = ap.parse_args()
    harness.apply_undo_option(args)
    {"run": run, "table": table, "warmup": warmup, "criteria": criteria, "_one": worker}[args.cmd](args)


if __name__ == "__main__":
    main()
