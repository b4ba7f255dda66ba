"""Benchmark harness: datasets x methods x seeds -> JSONL -> markdown table + figures.

Every run is its own process (``harness.py _run ...``, which prints one JSON
line), so the wall time and peak RSS recorded (``os.wait4``) belong to that run
alone and include start-up and reading the data. All methods get the true K.

    python benchmarks/harness.py run --seeds 0 1 2 --out benchmarks/results/real.jsonl
    python benchmarks/harness.py table --jsonl benchmarks/results/real.jsonl \\
        --md benchmarks/results/real.md --fig-dir benchmarks/results/fig

Datasets (``--datasets``): by default every raw-count ``.h5ad`` in
``../shared/data/real/`` (``pbmc68k_reduced_NOT_COUNTS`` is not counts and is
left out); otherwise names of files there, paths to ``.h5ad`` files (labels
in ``obs['cell_type']``), or ``sim:PRESET`` for a :func:`scgpcl.simulate.simulate`
preset generated with the run's seed.

Resumable: a (dataset, method, seed, overrides) already in the JSONL with
status ``ok`` is skipped; a crashed or timed-out run is written as a
``status: error`` line, does not stop the batch, and is tried again next time.
Predicted labels are saved to ``benchmarks/runs/labels/<dataset>__<method>__<seed>.npy``
(gitignored; ``--labels-dir ''`` to skip) for ``markers.py``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SCGPCL_SHARED", REPO.parent / "shared"))
REAL_DIR = SHARED / "data" / "real"
DEFAULT_LABELS_DIR = REPO / "benchmarks" / "runs" / "labels"
LABEL_KEY = "cell_type"

#: Leiden resolutions searched for the cluster count closest to K (as in MANIFEST.md).
RESOLUTIONS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
               1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2.0)

# --------------------------------------------------------------------------- methods
#: name -> (base preset or None for the scanpy baselines, config overrides, description)
METHODS: dict[str, tuple[str | None, dict[str, Any], str]] = {
    "scgpcl": ("default", {}, "scGPCL, the package defaults (scgpcl.recommended(): rounds of at most 20 steps, "
               "global steps on at most 20,000 cells, seurat gene selection; docs/method.md)"),
    "scgpcl_faithful": ("faithful", {}, "scGPCL, the reference implementation's settings (scgpcl.faithful(): "
                        "lr 1e-4, pre-train <= 200 epochs (warm-up 100), fine-tune <= 200, 20 k-means restarts "
                        "per epoch)"),
    "scgpcl_fast": ("fast", {}, "scGPCL, the former `fast` preset; since the 2026-12-03 rewrite an alias of the "
                    "package defaults (records before that date: lr 1e-3, pre-train <= 100 epochs (warm-up 30), "
                    "fine-tune <= 100, 5 k-means restarts per epoch)"),
    "scgpcl_auto": ("default", {}, "scGPCL, the package defaults, with the number of clusters estimated "
                    "(n_clusters=None, CLI --n-clusters auto; auto_k_method picks the criterion)"),
    "scgpcl_no_finetune": ("default", dict(finetune=False), "scGPCL package defaults without DEC fine-tuning "
                           "(labels = k-means on the pre-trained embedding; taken from the scgpcl runs)"),
    "pca_kmeans": (None, {}, "scanpy pipeline (normalize_total 1e4, log1p, 2000 seurat HVG, scale max 10, "
                   "PCA 50) + k-means (k = K, 10 restarts)"),
    "leiden_tuned": (None, {}, "same pipeline, 15-NN graph, Leiden (igraph, 2 iterations) at the resolution in "
                     "{0.05, 0.1, 0.2, ..., 2.0} whose cluster count is closest to K (ties: nearest 1.0)"),
    "zinbae_kmeans": ("fast", dict(encoder="mlp", lambda_ins=0.0, lambda_proto=0.0, finetune=False),
                      "DCA-style: our ZINB autoencoder (MLP encoder, masked input, no contrastive terms) "
                      "+ k-means; fast schedule"),
    "zinbae_dec": ("fast", dict(encoder="mlp", lambda_ins=0.0, lambda_proto=0.0, finetune=True),
                   "scDeepCluster-style: the same ZINB autoencoder + DEC fine-tuning; fast schedule"),
    "fast_mlp": ("fast", dict(encoder="mlp"), "ablation of scgpcl_fast: MLP encoder instead of the bipartite graph"),
    "fast_no_ins": ("fast", dict(lambda_ins=0.0), "ablation of scgpcl_fast: no instance-wise contrastive loss"),
    "fast_no_proto": ("fast", dict(lambda_proto=0.0), "ablation of scgpcl_fast: no prototypical contrastive loss"),
    "fast_mse": ("fast", dict(reconstruction="mse"), "ablation of scgpcl_fast: MSE on log-normalised values "
                 "instead of ZINB"),
    "fast_no_finetune": ("fast", dict(finetune=False), "ablation of scgpcl_fast: no DEC fine-tuning "
                         "(labels = k-means on the pre-trained embedding)"),
    # test-only: crashes inside the worker (checks that errors are recorded and retried)
    "_fail": (None, {}, "always raises (test of the error path)"),
}
METHOD_ORDER = [m for m in METHODS if not m.startswith("_")]
BASELINE_METHODS = ["pca_kmeans", "leiden_tuned"]
#: methods whose result is the first half of another method's run: name -> the method whose runs
#: contain it. The k-means labels that initialise DEC are exactly what ``finetune=False`` gives for
#: the same seed (tests/test_model.py::test_predict_pretrained_is_the_no_finetune_clustering), and the
#: worker scores them in every run that fine-tunes (``ARI_pretrain`` ...), so the tables take these
#: methods from those scores instead of training the same model twice.
DERIVED = {"fast_no_finetune": "scgpcl_fast", "zinbae_kmeans": "zinbae_dec", "scgpcl_no_finetune": "scgpcl"}

FAST_VS_FAITHFUL = (
    "`scgpcl_fast` differs from `scgpcl` in the schedule and the gene selection: learning rate 1e-3 instead "
    "of 1e-4, at most 100 pre-training epochs with a 30-epoch warm-up instead of 200 / 100, at most 100 DEC "
    "epochs instead of 200, 5 k-means restarts per post-warm-up epoch instead of 20, a patience stop "
    "(pre-training also ends once the consecutive-epoch ARI has not improved for 15 epochs; since "
    "2026-11-30, earlier runs are marked `[convergence_patience=0]`, `stopping.md`), and 2000 genes by "
    "scanpy's `seurat` dispersion instead of the top 20 % by raw-count variance. Why: on 2 CPU cores the "
    "reference schedule costs 3-5x more time, and with the 10x larger learning rate the losses reach the "
    "same level in far fewer epochs (`core.md`); raw-count variance favours a few very highly expressed "
    "genes (`gene_selection.md`). Both presets run fresh k-means restarts in every post-warm-up epoch, as "
    "the reference does. Until 2026-11-30 they also tried the previous epoch's centres as a start; runs "
    "made that way are marked `[kmeans_warm_start=True]` (`warm_start.md`)."
)

# MANIFEST.md baselines (one seed): (k-means ARI, NMI), (Leiden tuned ARI, NMI) or None
MANIFEST_BASELINES: dict[str, tuple[tuple[float, float], tuple[float, float] | None]] = {
    "worm_neuron": ((0.32, 0.63), (0.19, 0.54)),
    "mouse_bladder_top2000": ((0.60, 0.77), (0.60, 0.78)),
    "pbmc4k_10x_top2000": ((0.74, 0.76), (0.76, 0.77)),
    "human_kidney_top2000": ((0.46, 0.65), (0.56, 0.74)),
    "cite_cbmc_top2000": ((0.57, 0.78), (0.73, 0.84)),
    "baron_mouse1": ((0.63, 0.79), (0.46, 0.75)),
    "zeisel_subset_descend": ((0.94, 0.88), (0.95, 0.90)),
    "klein_subset1000": ((0.73, 0.74), (0.87, 0.90)),
    "pollen": ((0.81, 0.90), (0.81, 0.88)),
    "camp_brain_organoid": ((0.17, 0.36), (0.15, 0.30)),
    "cellbench_celseq2_3cl": ((1.00, 1.00), (1.00, 1.00)),
    "baron_human_came2142": ((0.665, 0.775), None),
    "zeisel_full3005_top4000_from_log1p": ((0.642, 0.687), None),
}
# published scGPCL (docs/method.md section 9; GPU, full gene sets, mean of 3): ARI, NMI, CA
PUBLISHED = {
    "worm_neuron": (0.5848, 0.7550, 0.7258),
    "mouse_bladder_top2000": (0.4562, 0.7296, 0.6022),
    "pbmc4k_10x_top2000": (0.6805, 0.7468, 0.7341),
    "human_kidney_top2000": (0.6716, 0.7970, 0.7821),
    "baron_human_came2142": (0.5817, 0.8057, 0.6243),
    "zeisel_full3005_top4000_from_log1p": (0.8030, 0.7965, 0.8761),
}

# --------------------------------------------------------------------------- datasets


def dataset_name(spec: str) -> str:
    """Name recorded in the JSONL for a dataset spec."""
    if spec.startswith("sim:"):
        return spec
    return Path(spec).name.removesuffix(".h5ad")


def dataset_path(spec: str) -> Path | None:
    if spec.startswith("sim:"):
        return None
    p = Path(spec)
    if p.suffix == ".h5ad" and p.exists():
        return p.resolve()
    q = REAL_DIR / f"{spec.removesuffix('.h5ad')}.h5ad"
    if q.exists():
        return q
    raise FileNotFoundError(f"dataset {spec!r}: neither a file nor {q}")


def is_raw_counts(x) -> bool:
    """Non-negative integers (to float round-off) in a dense or sparse matrix."""
    import scipy.sparse as sp

    v = x.data if sp.issparse(x) else np.asarray(x).ravel()
    return bool(v.size == 0 or (v.min() >= 0 and np.allclose(v, np.round(v), rtol=1e-5, atol=1e-6)))


def default_datasets() -> list[str]:
    """Every raw-count file of the shared real data, fewest cells first (quick results first)."""
    import anndata as ad

    found = []
    for p in REAL_DIR.glob("*.h5ad"):
        if "NOT_COUNTS" in p.stem:
            continue
        a = ad.read_h5ad(p)
        if is_raw_counts(a.X):
            found.append((a.n_obs, a.n_vars, p.stem))
    return [name for _, _, name in sorted(found)]


def load_dataset(spec: str, seed: int):
    """AnnData with raw counts in X and labels in obs['cell_type']."""
    import anndata as ad

    if spec.startswith("sim:"):
        from scgpcl.simulate import simulate

        return simulate(spec[4:], seed=seed)
    return ad.read_h5ad(dataset_path(spec))


# --------------------------------------------------------------------------- method runners


def scanpy_pcs(adata, n_pcs: int = 50, n_hvg: int = 2000):
    """The standard scanpy pipeline of MANIFEST.md up to PCA; returns an AnnData with X_pca."""
    import scanpy as sc

    a = adata.copy()
    a.X = a.X.astype(np.float32)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if a.n_vars > n_hvg:
        sc.pp.highly_variable_genes(a, n_top_genes=n_hvg, flavor="seurat")
        a = a[:, a.var["highly_variable"].to_numpy()].copy()
    sc.pp.scale(a, max_value=10)
    n_comps = min(n_pcs, a.n_obs - 1, a.n_vars - 1)
    sc.tl.pca(a, n_comps=n_comps, random_state=0)
    return a


def pca_neighbors(a, n_neighbors: int = 15) -> None:
    """scanpy's k-NN graph of ``a.obsm['X_pca']``, as the MANIFEST baselines build it."""
    import scanpy as sc

    # above 8192 cells scanpy 1.11's approximate neighbours fail with current scipy
    # (csr_array.getnnz); exact scikit-learn neighbours there, scanpy's default below
    extra = {"transformer": "sklearn"} if a.n_obs > 8192 else {}
    sc.pp.neighbors(a, n_neighbors=n_neighbors, use_rep="X_pca", random_state=0, **extra)


def leiden_search(a, k: int, seed: int, resolutions: Iterable[float] = RESOLUTIONS, n_neighbors: int = 15):
    """Leiden on a 15-NN graph of ``a.obsm['X_pca']`` at each resolution; the labels
    whose cluster count is closest to ``k`` (ties: the resolution nearest 1.0, scanpy's
    default; this reproduces MANIFEST.md's choice on camp_brain_organoid).

    Returns (labels, chosen resolution, {resolution: number of clusters}).
    """
    import scanpy as sc

    if "neighbors" not in a.uns:
        pca_neighbors(a, n_neighbors)
    best = None
    counts: dict[float, int] = {}
    for r in resolutions:
        sc.tl.leiden(a, resolution=r, random_state=seed, key_added="_leiden", flavor="igraph",
                     n_iterations=2, directed=False)
        labels = a.obs["_leiden"].astype(int).to_numpy()
        n = int(len(np.unique(labels)))
        counts[float(r)] = n
        score = (abs(n - k), abs(float(r) - 1.0))
        if best is None or score < best[3]:
            best = (labels, float(r), n, score)
    return best[0], best[1], counts


def run_method(method: str, adata, k: int, seed: int, overrides: dict | None = None) -> tuple[np.ndarray, dict]:
    """Cluster ``adata`` into ``k`` groups with ``method``; returns (labels, extra record fields)."""
    overrides = dict(overrides or {})
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHOD_ORDER)}")
    preset, fixed, _ = METHODS[method]
    if method == "_fail":
        raise RuntimeError("deliberate failure (method _fail)")
    if preset is None:
        if overrides:
            raise ValueError(f"{method} takes no overrides")
        a = scanpy_pcs(adata)
        extra: dict[str, Any] = {"n_pcs": int(a.obsm["X_pca"].shape[1]), "n_hvg": int(a.n_vars)}
        if method == "pca_kmeans":
            from sklearn.cluster import KMeans

            labels = KMeans(k, n_init=10, random_state=seed).fit_predict(a.obsm["X_pca"])
        else:
            labels, res, counts = leiden_search(a, k, seed)
            extra.update(resolution=res, leiden_counts={str(r): n for r, n in counts.items()})
        return np.asarray(labels, dtype=np.int64), extra
    import scgpcl
    from scgpcl._config import PRESETS

    cfg = PRESETS[preset]()
    model = scgpcl.SCGPCL(adata, n_clusters=None if method == "scgpcl_auto" else k, config=cfg, random_state=seed,
                          device="cpu", **{**fixed, **overrides})
    model.train(progress=False)
    labels = model.predict()
    extra = {"n_genes_used": int(model.data.n_genes), "n_cells_dropped": int(np.sum(labels < 0))}
    if method == "scgpcl_auto":
        extra["k_estimated"] = int(model.n_clusters)
    if model.target_sum_scores:  # choose_target_sum: what it chose, and why
        extra["target_sum_chosen"] = float(model.config.preprocess.target_sum)
        extra["target_sum_silhouettes"] = {f"{t:g}": s for t, s in model.target_sum_scores.items()}
    if model.provisional_k is not None:  # provisional_k: the estimated K the scaling was chosen at
        extra["provisional_k"] = int(model.provisional_k)
    for stage in ("pretrain", "finetune"):
        info = model.stages.get(stage)
        # "epochs" kept as the record's name: a round is an epoch on these datasets (<= round_steps batches)
        extra[f"{stage}_epochs"] = int(info["rounds"]) if info else 0
        extra[f"{stage}_steps"] = int(info["steps"]) if info else 0
        extra[f"{stage}_stop"] = str(info["stop_reason"]) if info else "skipped"
        extra[f"{stage}_s"] = float(info["seconds"]) if info else 0.0
    if model.stages.get("finetune"):
        # the k-means that initialised DEC: what finetune=False gives with this seed
        extra["pretrain_labels"] = model.predict_pretrained()
        extra["pretrain_embedding"] = model.training_result.init_embedding
    return labels, extra


def dec_diagnostics(z: np.ndarray, pre: np.ndarray, post: np.ndarray, seed: int, max_cells: int = 4000) -> dict:
    """Label-free comparisons of the clusterings before and after DEC, for a rule that keeps one of them.

    ``z``: the pre-trained representation (DEC's starting point); ``pre``: its k-means labels, ``post``: the
    labels after fine-tuning. Silhouettes are computed in ``z`` on one random sample of at most
    ``max_cells`` cells, the same for both; the size entropy is normalised by log(number of clusters).
    """
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    idx = np.random.default_rng(seed).choice(len(z), min(len(z), max_cells), replace=False)

    def sil(lab):
        return float(silhouette_score(z[idx], lab[idx])) if len(np.unique(lab[idx])) > 1 else float("nan")

    def entropy(lab):
        p = np.unique(lab, return_counts=True)[1] / len(lab)
        return float(-(p * np.log(p)).sum() / np.log(max(len(p), 2)))

    return {"dec_agreement": float(adjusted_rand_score(pre, post)), "silhouette_pre": sil(pre),
            "silhouette_post": sil(post), "size_entropy_pre": entropy(pre), "size_entropy_post": entropy(post)}


def kmeans_cosine(z: np.ndarray, k: int, seed: int, n_init: int = 20) -> np.ndarray:
    """k-means (``n_init`` restarts) on the rows of ``z`` scaled to unit length."""
    from sklearn.cluster import KMeans

    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return KMeans(k, n_init=n_init, random_state=seed).fit_predict(zn)


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("scgpcl", "torch", "scanpy", "anndata", "scikit-learn", "numpy", "scipy", "leidenalg", "igraph"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "-"
    return out


def worker(args: argparse.Namespace) -> None:
    """``_run``: one (dataset, method, seed) in this process; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    import warnings

    warnings.filterwarnings("ignore")
    from scgpcl.metrics import clustering_metrics

    overrides = json.loads(args.overrides) if args.overrides else {}
    t0 = time.perf_counter()
    adata = load_dataset(args.dataset, args.seed)
    truth = adata.obs[LABEL_KEY].astype(str).to_numpy()
    k = int(len(np.unique(truth)))
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    labels, extra = run_method(args.method, adata, k, args.seed, overrides)
    fit_s = time.perf_counter() - t1
    pre = extra.pop("pretrain_labels", None)
    z_pre = extra.pop("pretrain_embedding", None)
    if pre is not None:
        # the same run scored before fine-tuning (= the no-fine-tuning ablation, same seed)
        extra.update({f"{key}_pretrain": v for key, v in clustering_metrics(truth, pre).items()
                      if key in ("ARI", "NMI", "CA", "F1_macro", "F1_micro")})
    if pre is not None and z_pre is not None:
        kept = labels >= 0
        extra.update(dec_diagnostics(z_pre, pre[kept], labels[kept], args.seed))
    if z_pre is not None:
        # diagnostic: k-means on the L2-normalised pre-trained embedding (the geometry the
        # contrastive losses use) instead of the raw one the method clusters
        extra.update({f"{key}_pretrain_cos": v for key, v in
                      clustering_metrics(truth[labels >= 0], kmeans_cosine(z_pre, k, args.seed)).items()
                      if key in ("ARI", "NMI", "CA")})
    rec = {
        "dataset": dataset_name(args.dataset), "method": args.method, "seed": args.seed, "overrides": overrides,
        "K": k, "n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars),
        "n_clusters_found": int(len(np.unique(labels[labels >= 0]))),
        **clustering_metrics(truth, labels),
        "load_s": t_load, "fit_s": fit_s, **extra,
        "dropout_rate": float(adata.uns["dropout_rate"]) if "dropout_rate" in adata.uns else None,
        "threads": args.threads, "versions": versions(), "commit": _commit(),
    }
    if args.labels_dir:
        d = Path(args.labels_dir)
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / labels_file(rec["dataset"], args.method, args.seed, overrides), labels)
    print(json.dumps(rec, default=float), flush=True)


def _commit() -> str:
    """The repository's commit (with ``+dirty`` when it has uncommitted changes), for the record."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def labels_file(dataset: str, method: str, seed: int, overrides: dict | None = None) -> str:
    tag = "" if not overrides else "__" + "_".join(f"{k}={v}" for k, v in sorted(overrides.items()))
    return f"{dataset.replace(':', '-')}__{method}{tag}__{seed}.npy"


# --------------------------------------------------------------------------- relabel
#: shared datasets under 512 cells, the only ones lambda_ins_cells (2026-12-05) acts on, at 512 and at 768 cells
#: alike; their records made before it carry these settings, the larger datasets' records do not (relabel --datasets)
UNDER_512_CELLS = ("camp_brain_organoid", "cellbench_celseq2_3cl", "pollen")
BEFORE_SMALL_DATA_SCALING = {"lambda_ins_cells": 0, "lambda_ins_power": 1.0}


def as_recorded(dataset: str, settings: dict) -> dict:
    """The overrides a record of ``dataset`` carries if it ran with ``settings``, defaults from before 2026-12-05's
    small-data scaling: ``settings`` plus :data:`BEFORE_SMALL_DATA_SCALING` on :data:`UNDER_512_CELLS`."""
    return {**settings, **BEFORE_SMALL_DATA_SCALING} if dataset in UNDER_512_CELLS else dict(settings)


def relabel(records: list[dict], key: str, old_default: Any, new_default: Any,
            preset: str | None = None, datasets: Iterable[str] | None = None) -> tuple[list[dict], int]:
    """Keep records truthful when a preset's default for ``key`` changes from ``old_default`` to ``new_default``.

    Records of scGPCL-based methods (not the scanpy baselines; in
    ``auto_k.jsonl`` the ``auto`` and ``true`` runs) that ran with the old
    default, i.e. without ``key`` in their overrides, get ``key=old_default``
    added; records that set ``key=new_default`` explicitly lose it (that is
    now the default). Records relabelled for the same change before are left
    alone, so running it again (e.g. after appending new runs) is safe.
    With ``preset`` ("fast" or "faithful") only methods built on that preset
    change (``auto_k.jsonl`` runs use ``fast``). With ``datasets``, only
    their records change: for a default that cannot act on the others (one
    that only acts below some number of cells), whose runs hold under both.
    Returns the new records and how many changed.
    """
    only = None if datasets is None else set(datasets)
    out, n = [], 0
    note = f"{key}: default {old_default!r} -> {new_default!r}"
    for r in records:
        r = dict(r)
        done = r.get("relabelled") or []
        done = [done] if isinstance(done, str) else list(done)
        if note in done:  # done before: a run at the new default must not get the old one
            out.append(r)
            continue
        base = METHODS.get(r.get("method"), (None,))[0] or ("fast" if r.get("mode") in ("auto", "true") else None)
        if base is not None and (preset is None or base == preset) and (only is None or r.get("dataset") in only):
            o = dict(r.get("overrides") or {})
            if key not in o:
                o[key] = old_default
            elif o[key] == new_default:
                del o[key]
            if o != (r.get("overrides") or {}):
                r["overrides"], r["relabelled"] = o, [*done, note]
                n += 1
        out.append(r)
    return out, n


def relabel_main(args) -> None:
    old, new = json.loads(args.old), json.loads(args.new)
    for f in map(Path, args.jsonl):
        recs = load_records(f)
        new_recs, n = relabel(recs, args.key, old, new, preset=args.preset, datasets=args.datasets)
        tmp = f.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, default=float) + "\n" for r in new_recs))
        tmp.replace(f)
        # saved labels follow their records; in two steps, since one run's new name can be another's old one
        labels_dir = Path(args.labels_dir) if args.labels_dir else None
        staged = []
        for a, b in zip(recs, new_recs, strict=True):
            if labels_dir and "method" in a and a.get("overrides") != b.get("overrides"):
                src = labels_dir / labels_file(a["dataset"], a["method"], a["seed"], a.get("overrides"))
                if src.exists():
                    tmp_name = src.with_name(src.name + ".relabel")
                    src.replace(tmp_name)
                    staged.append((tmp_name, labels_dir / labels_file(b["dataset"], b["method"], b["seed"],
                                                                      b.get("overrides"))))
        for tmp_name, dst in staged:
            tmp_name.replace(dst)
        moved = len(staged)
        print(f"{f}: {n} of {len(recs)} records relabelled, {moved} label files renamed")


# --------------------------------------------------------------------------- batch driver


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=1e-3", "gene_selection=seurat"]`` -> ``{"lr": 0.001, "gene_selection": "seurat"}``.

    Values are read as JSON when they parse (numbers, booleans, lists), else kept as strings.
    """
    out: dict[str, Any] = {}
    for kv in items:
        key, sep, val = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"--override {kv!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def run_key(dataset: str, method: str, seed: int, overrides: dict | None) -> tuple:
    return (dataset, method, int(seed), json.dumps(overrides or {}, sort_keys=True))


def record_key(r: dict) -> tuple:
    return run_key(r["dataset"], r["method"], r["seed"], r.get("overrides"))


#: relabellings undone by :func:`load_records` (set by the ``--undo-relabel`` option of the table commands)
UNDONE_RELABELS: list[str] = []
#: the items of UNDONE_RELABELS that undid at least one record (see :func:`check_undo_matched`)
UNDO_MATCHED: set[str] = set()


def undo_relabel(r: dict, which: Iterable[str]) -> dict:
    """``r`` as it was labelled before the relabellings in ``which`` (see :func:`relabel`).

    A page made before a default changed was made from records without that change's override; its
    command regenerates it only with the change undone. Each item of ``which`` is a config key (undo
    every relabelling of it) or a relabelling's exact note (``"lambda_ins_cells: default 512 -> 768"``).
    Undone newest first: an added ``key=old`` is removed, a removed ``key=new`` is put back.
    """
    which = set(which)
    done = r.get("relabelled") or []
    done = [done] if isinstance(done, str) else list(done)
    o = dict(r.get("overrides") or {})
    kept = []
    for i in range(len(done) - 1, -1, -1):
        note = done[i]
        m = re.fullmatch(r"(\w+): default (.+) -> (.+)", note)
        if m is None or not ({m.group(1), note} & which):
            kept.append(note)
            continue
        key, old, new = m.group(1), ast.literal_eval(m.group(2)), ast.literal_eval(m.group(3))
        later = [n for n in done[i + 1:] if n.startswith(f"{key}: ") and n in kept]
        if later:  # undoing an older relabelling of the key while a newer one stays makes no record
            raise ValueError(f"cannot undo {note!r} and keep the later {later}: undo those too, or give the key "
                             f"{key!r}")
        if key in o and o[key] == old:
            del o[key]
        elif key not in o:
            o[key] = new
        else:
            raise ValueError(f"cannot undo {note!r} on a record with {key}={o[key]!r}")
        UNDO_MATCHED.add(key if key in which else note)
    if len(kept) == len(done):
        return r
    r = dict(r, overrides=o, _label_overrides=r.get("overrides") or {})  # saved labels keep their names on disk
    if kept:
        r["relabelled"] = list(reversed(kept))
    else:
        r.pop("relabelled", None)
    return r


def check_undo_matched() -> None:
    """Refuse an ``--undo-relabel`` item that matched no record (a typo would otherwise be named on the page)."""
    unused = [w for w in UNDONE_RELABELS if w not in UNDO_MATCHED]
    if unused:
        sys.exit(f"--undo-relabel {', '.join(map(repr, unused))} matched no relabelled record: check the key "
                 "or the note (a record's 'relabelled' field lists its notes)")


def load_records(path: Path | str) -> list[dict]:
    """The records of a JSONL (lines cut short by a killed writer skipped), with :data:`UNDONE_RELABELS` undone."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        line = line.strip()
        if line:
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a killed writer
                out.append(json.loads(line))
    return [undo_relabel(r, UNDONE_RELABELS) for r in out] if UNDONE_RELABELS else out


def undone_sentence() -> str:
    """What a page made with ``--undo-relabel`` says about its labels."""
    return ("Made before later default changes: the records are read as labelled then (`--undo-relabel` "
            + ", ".join(f"`{w}`" for w in UNDONE_RELABELS) + "), so a method without an override ran at the "
            "defaults of that time, not today's (today's defaults: `accuracy.md`).")


def add_undo_option(parser: argparse.ArgumentParser) -> None:
    """``--undo-relabel KEY_OR_NOTE``: regenerate a page made before later default changes relabelled its records."""
    parser.add_argument("--undo-relabel", action="append", default=[], metavar="KEY_OR_NOTE",
                        help="read the records as labelled before this relabelling (a config key: all of its "
                             "relabellings; or one exact note such as 'lambda_ins_cells: default 512 -> 768'); "
                             "for pages made before a later default change. Repeatable")


def apply_undo_option(args: argparse.Namespace) -> None:
    UNDONE_RELABELS[:] = list(getattr(args, "undo_relabel", None) or [])


def append_record(path: Path | str, rec: dict) -> None:
    """Append one JSON line (numpy scalars as floats); whole lines only, so a resumed run can read it."""
    with Path(path).open("a") as f:
        f.write(json.dumps(rec, default=float) + "\n")


def latest_ok(records: list[dict]) -> dict[tuple, dict]:
    """Last successful record per run key."""
    out: dict[tuple, dict] = {}
    for r in records:
        if r.get("status", "ok") == "ok":
            out[record_key(r)] = r
    return out


def run_subprocess(dataset: str, method: str, seed: int, overrides: dict | None, *, threads: int,
                   labels_dir: str, timeout: float | None) -> dict:
    """Run the worker in a child process; returns its record plus wall time, peak RSS and status."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "_run", "--dataset", dataset, "--method", method,
           "--seed", str(seed), "--threads", str(threads), "--labels-dir", labels_dir]
    if overrides:
        cmd += ["--overrides", json.dumps(overrides, sort_keys=True)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("PYTHONWARNINGS", "ignore")
    base = {"dataset": dataset_name(dataset), "method": method, "seed": int(seed), "overrides": overrides or {},
            "dataset_spec": dataset}
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        killed = threading.Event()

        def _kill():
            killed.set()
            proc.kill()

        timer = threading.Timer(timeout, _kill) if timeout else None
        if timer:
            timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            if timer:
                timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        lines = [ln for ln in out.read().splitlines() if ln.startswith("{")]
        stderr = err.read()
    rec: dict[str, Any] = dict(base)
    if proc.returncode == 0 and lines:
        rec.update(json.loads(lines[-1]))
        rec["status"] = "ok"
    else:
        why = "timeout" if killed.is_set() else f"exit code {proc.returncode}"
        rec.update(status="error", error=f"{why}: {stderr[-3000:]}")
    rec.update(wall_s=wall, cpu_s=usage.ru_utime + usage.ru_stime, peak_rss_mb=usage.ru_maxrss / 1024,
               machine=machine(),
               worker_command=shlex.join(["python", "benchmarks/harness.py", *cmd[2:]]),
               finished=time.strftime("%Y-%m-%d %H:%M:%S"))
    return rec


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}"


def run_batch(datasets: list[str], methods: list[str], seeds: list[int], out: Path | str, *,
              overrides_list: list[dict] | None = None, threads: int | None = None,
              labels_dir: str | os.PathLike = DEFAULT_LABELS_DIR, timeout: float | None = None,
              command: str | None = None, runner: Callable[..., dict] | None = None,
              extra_fields: Callable[[str, int], dict] | None = None) -> list[dict]:
    """Run every missing (dataset, method, seed, overrides) one after another, appending to ``out``.

    Returns all records of ``out`` afterwards. ``runner`` replaces :func:`run_subprocess` (tests).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    threads = threads or os.cpu_count() or 1
    runner = runner or run_subprocess
    overrides_list = overrides_list or [{}]
    done = latest_ok(load_records(out))
    plan = []
    for d in datasets:
        for m in methods:
            # the scanpy baselines take no config overrides: run them once
            for o in (overrides_list if METHODS.get(m, (None,))[0] is not None else [{}]):
                plan += [(d, m, s, o) for s in seeds if (d, m, s, o) not in plan]
    todo = [p for p in plan if run_key(dataset_name(p[0]), p[1], p[2], p[3]) not in done]
    print(f"{len(plan)} runs planned, {len(plan) - len(todo)} already in {out}, {len(todo)} to run "
          f"({threads} threads per run)", flush=True)
    for i, (d, m, s, o) in enumerate(todo, 1):
        rec = runner(d, m, s, o, threads=threads, labels_dir=str(labels_dir or ""), timeout=timeout)
        if command:
            rec["command"] = command
        if extra_fields:
            rec.update(extra_fields(d, s))
        append_record(out, rec)
        tag = f" {json.dumps(o, sort_keys=True)}" if o else ""
        head = f"[{i}/{len(todo)}] {dataset_name(d)} {m}{tag} seed={s}"
        if rec["status"] == "ok":
            ep = (f" epochs {rec['pretrain_epochs']}+{rec['finetune_epochs']}" if "pretrain_epochs" in rec else "")
            print(f"{head}: ARI {rec['ARI']:.3f} NMI {rec['NMI']:.3f} CA {rec['CA']:.3f}{ep} "
                  f"wall {rec['wall_s']:.1f} s cpu {rec.get('cpu_s', float('nan')):.1f} s peak {rec['peak_rss_mb']:.0f} MB", flush=True)
        else:
            last = rec["error"].strip().splitlines()[-1] if rec["error"].strip() else rec["error"]
            print(f"{head}: ERROR after {rec['wall_s']:.1f} s ({last[:200]}); will be retried next time",
                  flush=True)
    return load_records(out)


# --------------------------------------------------------------------------- tables


def method_label(r: dict) -> str:
    """Method name, plus its config overrides when a run had any (e.g. ``scgpcl_fast[lambda_proto=0.5]``)."""
    o = r.get("overrides") or {}
    return r["method"] + ("[" + ",".join(f"{k}={v}" for k, v in sorted(o.items())) + "]" if o else "")


def mean_sd(values) -> tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def derive_records(records: list[dict]) -> list[dict]:
    """Records of the :data:`DERIVED` methods, built from their source runs' pre-DEC scores.

    One per successful source run that has ``ARI_pretrain``, unless a real run of the derived
    method with the same dataset, seed and overrides exists (that one wins). Wall time is the
    source run's minus its fine-tuning stage; CPU time and peak RSS are left out (not measured
    separately for the first stage).
    """
    real = set(latest_ok(records))
    out = []
    for r in latest_ok(records).values():
        for name, source in DERIVED.items():
            if r["method"] != source or r.get("ARI_pretrain") is None:
                continue
            if run_key(r["dataset"], name, r["seed"], r.get("overrides")) in real:
                continue
            d = {k: v for k, v in r.items() if k not in ("cpu_s", "peak_rss_mb", "finetune_epochs",
                                                          "finetune_stop", "finetune_s", "command")}
            for key in ("ARI", "NMI", "CA", "F1_macro", "F1_micro"):
                d[key] = r.get(f"{key}_pretrain")
            for key in ("ARI_pretrain", "NMI_pretrain", "CA_pretrain", "F1_macro_pretrain",
                        "F1_micro_pretrain", "ARI_pretrain_cos", "NMI_pretrain_cos", "CA_pretrain_cos"):
                d.pop(key, None)
            d.update(method=name, derived_from=source, finetune_epochs=0,
                     wall_s=float(r["wall_s"]) - float(r.get("finetune_s") or 0.0))
            out.append(d)
    return out


def is_variant(label: str) -> bool:
    """A method label with config overrides (a study, or a run made under an earlier default)."""
    return "[" in label


def aggregate(records: list[dict],
              metrics=("ARI", "NMI", "CA", "F1_macro", "wall_s", "cpu_s", "peak_rss_mb",
                       "ARI_pretrain", "ARI_pretrain_cos")) -> dict:
    """{(dataset, method): {metric: (mean, sd, n)}} over the latest ok record of each seed."""
    groups: dict[tuple, list[dict]] = {}
    for r in latest_ok(records).values():
        groups.setdefault((r["dataset"], method_label(r)), []).append(r)
    return {key: {m: mean_sd([r.get(m) for r in rs]) for m in metrics} | {"_records": rs}
            for key, rs in groups.items()}


def fmt(ms: tuple[float, float, int] | None, digits: int = 3) -> str:
    if ms is None or ms[2] == 0:
        return "—"
    if ms[2] == 1:  # one seed: no spread to show, say so rather than print "± 0"
        return f"{ms[0]:.{digits}f} (1 seed)"
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _ordered(names: Iterable[str], order: list[str]) -> list[str]:
    names = set(names)
    return [n for n in order if n in names] + sorted(names - set(order))


def _metric_table(agg: dict, datasets: list[str], methods: list[str], metric: str, digits: int = 3,
                  bold_best: bool = True) -> list[str]:
    lines = ["| dataset | " + " | ".join(f"`{m}`" for m in methods) + " |",
             "|---|" + "---|" * len(methods)]
    for d in datasets:
        cells = [agg.get((d, m), {}).get(metric) for m in methods]
        means = [c[0] if c and c[2] else -np.inf for c in cells]
        best = int(np.argmax(means)) if bold_best and np.isfinite(max(means)) else -1
        row = [("**" + fmt(c, digits) + "**") if j == best else fmt(c, digits) for j, c in enumerate(cells)]
        lines.append(f"| {d} | " + " | ".join(row) + " |")
    avg = []
    for m in methods:
        vals = [agg[(d, m)][metric][0] for d in datasets if (d, m) in agg and agg[(d, m)][metric][2]]
        avg.append(f"{np.mean(vals):.{digits}f} ({len(vals)})" if vals else "—")
    lines.append("| **average over datasets** (n) | " + " | ".join(avg) + " |")
    return lines


def _per_type_losses(d: str, recs_fast: list[dict], recs_best: list[dict], labels_dir: Path) -> str:
    """Cell types where scgpcl_fast recovers clearly fewer cells than ``best`` (saved labels needed)."""
    try:
        import anndata as ad

        from scgpcl.metrics import match_clusters

        path = dataset_path(recs_fast[0].get("dataset_spec", d))
        truth = ad.read_h5ad(path, backed="r").obs[LABEL_KEY].astype(str).to_numpy()

        def recall(recs):
            per = []
            for r in recs:
                f = labels_dir / labels_file(d, r["method"], r["seed"], r.get("_label_overrides", r.get("overrides")))
                if not f.exists():
                    continue
                mapped = match_clusters(truth, np.load(f))
                per.append({t: float(np.mean(mapped[truth == t] == t)) for t in np.unique(truth)})
            return {t: float(np.mean([p[t] for p in per])) for t in per[0]} if per else None

        a, b = recall(recs_fast), recall(recs_best)
        if a is None or b is None:
            return ""
        drops = sorted(((b[t] - a[t], t) for t in a), reverse=True)
        worst = [f"{t} ({int(np.sum(truth == t))} cells: {a[t]:.2f} vs {b[t]:.2f})" for gap, t in drops[:3] if gap > 0.1]
        return "; ".join(worst) if worst else "no type > 0.10 worse"
    except Exception as e:  # labels or data missing: the column stays empty
        return f"(per-type check failed: {type(e).__name__})"


def build_table(records: list[dict], *, command: str | None = None, labels_dir: Path | None = None,
                figures: list[str] | None = None, notes: str | None = None) -> str:
    """The markdown report of a harness JSONL; ``notes`` (hand-written markdown) goes after the header."""
    records = records + derive_records(records)
    ok = [r for r in records if r.get("status", "ok") == "ok"]
    agg = aggregate(records)
    datasets = _ordered({r["dataset"] for r in ok}, list(MANIFEST_BASELINES))
    all_methods = _ordered({method_label(r) for r in ok}, METHOD_ORDER)
    # the main tables: each method at the current defaults; runs with overrides get their own section
    methods = [m for m in all_methods if not is_variant(m)]
    variants = [m for m in all_methods if is_variant(m)]
    seeds = sorted({r["seed"] for r in ok})
    vers = next((r["versions"] for r in reversed(ok) if "versions" in r), {})
    machines = sorted({r.get("machine", "?") for r in ok})
    threads = sorted({r.get("threads") for r in ok if r.get("threads")})
    run_cmds = sorted({r["command"] for r in records if r.get("command") and not r.get("derived_from")})
    L = ["# Benchmark: real datasets", ""]
    L += ["Commands:", "", "```"] + run_cmds + ([command] if command else []) + ["```", ""]
    L += [f"Machine: {', '.join(machines)}; {', '.join(map(str, threads))} torch/BLAS threads per run; runs one "
          "after another, each in its own process (wall time includes start-up and reading the file; peak RSS "
          "is that process's own).",
          "Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
          f"Seeds: {seeds}. Every method gets the true number of types K. Values: mean ± sd (ddof 1) over "
          "seeds; **bold** = best mean in the row.", ""]
    if UNDONE_RELABELS:
        L += [undone_sentence(), ""]
    if notes:
        L += [notes.strip(), ""]
    def describe(m: str) -> str:
        base = m.split("[")[0]
        text = f"- `{m}`: {METHODS[base][2]}" + (f" (overrides {METHODS[base][1]})" if METHODS[base][1] else "")
        if base in DERIVED and any(r.get("derived_from") for r in ok if method_label(r) == m):
            text += (f". Scored from the `{DERIVED[base]}` runs: the k-means labels that initialised DEC in "
                     f"each run, which are exactly what `finetune=False` gives for that seed (a test checks "
                     f"this); wall time = that run's minus its fine-tuning stage")
        sources = sorted({r["source"] for r in ok if method_label(r) == m and r.get("source")})
        n_src = sum(1 for r in ok if method_label(r) == m and r.get("source"))
        if sources:
            text += f". {n_src} of its runs were not made by the harness: " + "; ".join(sources)
        return text

    L += ["## Methods", ""] + [describe(m) for m in methods if m.split("[")[0] in METHODS]
    L += ["", FAST_VS_FAITHFUL, ""]
    for metric, title in (("ARI", "ARI"), ("NMI", "NMI"), ("CA", "Clustering accuracy (Hungarian)"),
                          ("F1_macro", "Macro F1 after matching")):
        L += [f"## {title}", "", *_metric_table(agg, datasets, methods, metric), ""]
    if variants:
        L += ["## Variants: runs with config overrides (ARI)", "",
              "Studies of one option, and runs made before a default changed (the old value is recorded as "
              "an override, e.g. `[convergence_patience=0]`). They are kept for the comparisons in the "
              "notes and the study write-ups, and left out of the tables above and of the best-method "
              "check below.", ""]
        L += [f"- `{m}`" for m in variants] + [""]
        L += [*_metric_table(agg, datasets, variants, "ARI"), ""]
    pre = [m for m in methods if any(agg.get((d, m), {}).get("ARI_pretrain", (0, 0, 0))[2] for d in datasets)]
    if pre:
        L += ["## ARI before and after fine-tuning (same runs)", "",
              "Runs made since 2026-11-30 also score the k-means labels that initialised DEC (`ARI_pretrain`: "
              "what `finetune=False` gives for the same seed) and, as a diagnostic, k-means (20 restarts) on "
              "the same pre-trained embedding scaled to unit length (`ARI_pretrain_cos`: the cosine geometry "
              "the contrastive losses use). Only runs that have these fields are averaged here, so n may be "
              "smaller than in the ARI table.", "",
              "| dataset | " + " | ".join(f"`{m}` {w}" for m in pre for w in ("final", "pre-DEC", "pre-DEC cos"))
              + " |", "|---|" + "---|" * (3 * len(pre))]
        for d in datasets:
            cells = []
            for m in pre:
                rs = [r for r in agg.get((d, m), {}).get("_records", []) if r.get("ARI_pretrain") is not None]
                for key in ("ARI", "ARI_pretrain", "ARI_pretrain_cos"):
                    cells.append(fmt(mean_sd([r.get(key) for r in rs])))
            if any(c != "—" for c in cells):
                L.append(f"| {d} | " + " | ".join(cells) + " |")
        L.append("")
    L += ["## Wall time per run (s)", "", *_metric_table(agg, datasets, methods, "wall_s", 1, False), ""]
    L += ["## CPU time per run (s, user + system of the run's process)", "",
          *_metric_table(agg, datasets, methods, "cpu_s", 1, False), ""]
    L += ["## Peak RSS per run (MB)", "", *_metric_table(agg, datasets, methods, "peak_rss_mb", 0, False), ""]
    deep = [m for m in methods if METHODS.get(m.split("[")[0], (None,))[0] is not None]
    if deep:
        L += ["## Epochs run (pre-training + fine-tuning, per seed)", "",
              "| dataset | " + " | ".join(f"`{m}`" for m in deep) + " |", "|---|" + "---|" * len(deep)]
        for d in datasets:
            cells = []
            for m in deep:
                rs = sorted(agg.get((d, m), {}).get("_records", []), key=lambda r: r["seed"])
                cells.append(", ".join(f"{r.get('pretrain_epochs', '?')}+{r.get('finetune_epochs', '?')}"
                                       for r in rs) or "—")
            L.append(f"| {d} | " + " | ".join(cells) + " |")
        L.append("")
    if "scgpcl_fast" in methods:
        L += ["## Is `scgpcl_fast` within 0.05 ARI of the best method?", "",
              "| dataset | best method (ARI) | `scgpcl_fast` ARI | gap | within 0.05 | methods ahead by > 0.05 | "
              "types it recovers worse than the best method (recall after matching, fast vs best) |",
              "|---|---|---|---|---|---|---|"]
        n_within = 0
        n_total = 0
        for d in datasets:
            cand = {m: agg[(d, m)]["ARI"][0] for m in methods if (d, m) in agg}
            if "scgpcl_fast" not in cand:
                continue
            best = max(cand, key=cand.get)
            gap = cand[best] - cand["scgpcl_fast"]
            within = gap <= 0.05
            n_within += within
            n_total += 1
            ahead = [f"`{m}` {v:.3f}" for m, v in sorted(cand.items(), key=lambda x: -x[1])
                     if v - cand["scgpcl_fast"] > 0.05]
            types = ""
            if best != "scgpcl_fast" and labels_dir is not None:
                types = _per_type_losses(d, agg[(d, "scgpcl_fast")]["_records"], agg[(d, best)]["_records"],
                                         Path(labels_dir))
            L.append(f"| {d} | `{best}` ({cand[best]:.3f}) | {cand['scgpcl_fast']:.3f} | {gap:.3f} | "
                     f"{'yes' if within else '**no**'} | {', '.join(ahead) or '—'} | {types or '—'} |")
        L += ["", f"`scgpcl_fast` is within 0.05 ARI of the best method on {n_within} of {n_total} datasets.", ""]
    L += ["## Reference: MANIFEST baselines and published scGPCL", "",
          "MANIFEST.md baselines were computed once (seed 0) with the same pipeline; published scGPCL numbers "
          "are from the slides (GPU, full gene sets, partly other cells; see MANIFEST).", "",
          "| dataset | MANIFEST k-means ARI / NMI | MANIFEST Leiden tuned ARI / NMI | ours `pca_kmeans` ARI | "
          "ours `leiden_tuned` ARI | published scGPCL ARI / NMI / CA |", "|---|---|---|---|---|---|"]
    for d in datasets:
        km, ld = MANIFEST_BASELINES.get(d, (None, None))
        pub = PUBLISHED.get(d)
        L.append(f"| {d} | {f'{km[0]:.2f} / {km[1]:.2f}' if km else '—'} | {f'{ld[0]:.2f} / {ld[1]:.2f}' if ld else '—'} | "
                 f"{fmt(agg.get((d, 'pca_kmeans'), {}).get('ARI'))} | {fmt(agg.get((d, 'leiden_tuned'), {}).get('ARI'))} | "
                 f"{' / '.join(f'{x:.3f}' for x in pub) if pub else '—'} |")
    L.append("")
    failed = {record_key(r): r for r in records if r.get("status") == "error"}
    failed = {k: r for k, r in failed.items() if k not in latest_ok(records)}
    if failed:
        L += ["## Runs that failed (no successful record yet; `run` retries them)", ""]
        for r in failed.values():
            last = r.get("error", "").strip().splitlines()
            L.append(f"- {r['dataset']} `{r['method']}` seed {r['seed']}: {last[-1][:200] if last else '?'}")
        L.append("")
    if figures:
        L += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures] + [""]
    return "\n".join(L)


def bar_figure(agg: dict, datasets: list[str], methods: list[str], metric: str, path: Path, title: str) -> None:
    """Grouped bars: one group per dataset (+ average), one bar per method, sd error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [*datasets, "average"]
    n_m = len(methods)
    width = 0.8 / max(n_m, 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.0 + 0.13 * n_m * len(groups) + 0.4 * len(groups)), 4.8))
    cmap = plt.get_cmap("tab20" if n_m > 10 else "tab10")
    for j, m in enumerate(methods):
        means, sds = [], []
        for d in datasets:
            c = agg.get((d, m), {}).get(metric)
            means.append(c[0] if c and c[2] else np.nan)
            sds.append(c[1] if c and c[2] else 0.0)
        vals = [v for v in means if np.isfinite(v)]
        means.append(np.mean(vals) if vals else np.nan)
        sds.append(0.0)
        x = np.arange(len(groups)) - 0.4 + width * (j + 0.5)
        ax.bar(x, means, width, yerr=sds, label=m, color=cmap(j), capsize=1.5, error_kw={"lw": 0.7})
    ax.set_xticks(np.arange(len(groups)))
    ax.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (mean ± sd over seeds)")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=min(n_m, 6), loc="upper center", bbox_to_anchor=(0.5, -0.28))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def table_main(args: argparse.Namespace) -> None:
    records = load_records(args.jsonl)
    check_undo_matched()
    if not records:
        sys.exit(f"no records in {args.jsonl}")
    md = Path(args.md)
    figs = []
    if args.fig_dir:
        with_derived = records + derive_records(records)
        agg = aggregate(with_derived)
        ok = [r for r in with_derived if r.get("status", "ok") == "ok"]
        datasets = _ordered({r["dataset"] for r in ok}, list(MANIFEST_BASELINES))
        methods = [m for m in _ordered({method_label(r) for r in ok}, METHOD_ORDER) if not is_variant(m)]
        stem = Path(args.jsonl).stem
        for metric in ("ARI", "NMI"):
            f = Path(args.fig_dir) / f"{stem}_{metric.lower()}.png"
            bar_figure(agg, datasets, methods, metric, f, f"{metric} per dataset and method ({stem})")
            figs.append(os.path.relpath(f, md.parent))
    cmd = "python benchmarks/harness.py table " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    notes = Path(args.notes).read_text() if args.notes else None
    text = build_table(records, command=cmd, labels_dir=Path(args.labels_dir) if args.labels_dir else None,
                       figures=figs, notes=notes)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text + "\n")
    print(f"wrote {md}" + (f" and {len(figs)} figures in {args.fig_dir}" if figs else ""))


def paired_comparison(records: list[dict], methods: list[str], metric: str = "ARI",
                      min_seeds: int = 3) -> list[str]:
    """Markdown: ``methods`` (labels as in the tables) on the datasets where all of them have the same
    ``min_seeds`` or more seeds, each averaged over exactly those shared seeds; then the mean over
    those datasets and, per method, its mean paired difference to the first (with the standard error
    of that mean over the datasets, which is what varies most here) and wins / losses by more than
    0.02."""
    runs: dict[tuple[str, str], dict[int, dict]] = {}
    for r in latest_ok(records).values():
        runs.setdefault((r["dataset"], method_label(r)), {})[int(r["seed"])] = r
    datasets = _ordered({d for d, _ in runs}, list(MANIFEST_BASELINES))
    rows = []
    for d in datasets:
        seed_sets = [set(runs.get((d, m), {})) for m in methods]
        shared = sorted(set.intersection(*seed_sets)) if seed_sets else []
        shared = [s for s in shared if all(runs[(d, m)][s].get(metric) is not None for m in methods)]
        if len(shared) < min_seeds:
            continue
        vals = [[float(runs[(d, m)][s][metric]) for s in shared] for m in methods]
        rows.append((d, shared, vals))
    head = "| dataset | seeds | " + " | ".join(f"`{m}`" for m in methods) + " |"
    L = [head, "|---|---|" + "---|" * len(methods)]
    for d, shared, vals in rows:
        means = [np.mean(v) for v in vals]
        best = int(np.argmax(means))
        cells = [(f"**{fmt(mean_sd(v))}**" if j == best else fmt(mean_sd(v))) for j, v in enumerate(vals)]
        L.append(f"| {d} | {','.join(map(str, shared))} | " + " | ".join(cells) + " |")
    if not rows:
        return [*L, "", f"(no dataset has {min_seeds} shared seeds for all of these methods)"]
    avg = [np.mean([np.mean(v[j]) for _, _, v in rows]) for j in range(len(methods))]
    L.append(f"| **mean over these {len(rows)} datasets** | | " + " | ".join(f"{a:.3f}" for a in avg) + " |")
    diffs = []
    for j in range(1, len(methods)):
        dd = np.asarray([np.mean(v[j]) - np.mean(v[0]) for _, _, v in rows])
        se = f" (standard error over the datasets {dd.std(ddof=1) / np.sqrt(len(dd)):.3f})" if len(dd) > 1 else ""
        diffs.append(f"`{methods[j]}` − `{methods[0]}`: mean {dd.mean():+.3f}{se}, ahead by > 0.02 on "
                     f"{int(np.sum(dd > 0.02))}, behind by > 0.02 on {int(np.sum(dd < -0.02))} of {len(dd)}")
    used = sorted({str(runs[(d, m)][sd].get("machine", "not recorded")) for d, shared, _ in rows for m in methods
                   for sd in shared})
    used = [u + " (CPU model not recorded)" if u.startswith("x86_64") else u for u in used]
    return L + [""] + [f"- {x}" for x in diffs] + ["", "Machines of these runs: " + "; ".join(used) + "."]


def compare_main(args: argparse.Namespace) -> None:
    records = []
    for f in args.jsonl:
        records += load_records(f)
    check_undo_matched()
    if args.machine:
        records = [r for r in records if args.machine in str(r.get("machine", ""))]
    records += derive_records(records)
    lines = paired_comparison(records, args.methods, args.metric, args.min_seeds)
    cmd = "python benchmarks/harness.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    head = [f"# {args.metric}: " + " vs ".join(f"`{m}`" for m in args.methods), "",
            f"Command: `{cmd}`", "",
            *([f"Only runs made on a machine matching `{args.machine}`.", ""] if args.machine else []),
            f"Only datasets where every method has the same {args.min_seeds} or more seeds; each cell is the "
            "mean ± sd over exactly those shared seeds (**bold**: best in the row). Data: "
            + ", ".join(f"`{os.path.relpath(f, REPO)}`" for f in args.jsonl) + ".", "",
            *([undone_sentence(), ""] if UNDONE_RELABELS else [])]
    text = "\n".join(head + lines) + "\n"
    if args.md:
        Path(args.md).write_text(text)
        print(f"wrote {args.md}")
    else:
        print(text)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run missing (dataset, method, seed) combinations")
    r.add_argument("--datasets", nargs="+", default=None, help="default: every raw-count file in shared/data/real")
    r.add_argument("--methods", nargs="+", default=METHOD_ORDER, choices=list(METHODS))
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "real.jsonl"))
    r.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the scgpcl-based methods (JSON values), e.g. lambda_proto=0.5")
    r.add_argument("--threads", type=int, default=os.cpu_count(), help="torch/BLAS threads per run (default: all CPUs)")
    r.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    r.add_argument("--labels-dir", default=str(DEFAULT_LABELS_DIR), help="'' to not save predicted labels")
    t = sub.add_parser("table", help="markdown table and figures from a JSONL")
    t.add_argument("--jsonl", default=str(REPO / "benchmarks" / "results" / "real.jsonl"))
    t.add_argument("--md", default=str(REPO / "benchmarks" / "results" / "real.md"))
    t.add_argument("--fig-dir", default=str(REPO / "benchmarks" / "results" / "fig"))
    t.add_argument("--labels-dir", default=str(DEFAULT_LABELS_DIR))
    t.add_argument("--notes", default=None, help="markdown file with hand-written notes to put after the header "
                   "(e.g. benchmarks/results/real_notes.md)")
    add_undo_option(t)
    c = sub.add_parser("compare", help="paired comparison of methods on the datasets and seeds they share")
    c.add_argument("--methods", nargs="+", required=True,
                   help="method labels as in the tables, e.g. scgpcl_fast 'scgpcl_fast[lambda_ins=0.1]'")
    c.add_argument("--jsonl", nargs="+", default=[str(REPO / "benchmarks" / "results" / "real.jsonl")])
    c.add_argument("--metric", default="ARI")
    c.add_argument("--min-seeds", type=int, default=3)
    c.add_argument("--md", default=None, help="write the markdown here instead of printing it")
    c.add_argument("--machine", default=None,
                   help="only runs whose machine field contains this (e.g. 'AMD EPYC'): the same seed on "
                        "another CPU model is not the same run (benchmarks/results/machine.md)")
    add_undo_option(c)
    rl = sub.add_parser("relabel", help="after a preset default changes: record the old value in the old runs")
    rl.add_argument("--key", required=True, help="config field whose default changed, e.g. kmeans_warm_start")
    rl.add_argument("--old", required=True, help="old default (JSON), e.g. true")
    rl.add_argument("--new", required=True, help="new default (JSON), e.g. false")
    rl.add_argument("--jsonl", nargs="+", required=True)
    rl.add_argument("--preset", choices=["default", "fast", "faithful"], default=None,
                    help="only records of methods built on this preset (the default changed in it alone)")
    rl.add_argument("--datasets", nargs="+", default=None,
                    help="only records of these datasets (a default that cannot act on the others, e.g. one that "
                         "only acts below some number of cells)")
    rl.add_argument("--labels-dir", default="",
                    help="also rename the saved labels of these runs to match (e.g. benchmarks/runs/labels). Only "
                         "for files whose runs wrote the labels there: not superseded.jsonl, whose keys' labels "
                         "belong to the runs that replaced them")
    w = sub.add_parser("_run", help="(internal) one run in this process; prints one JSON line")
    w.add_argument("--dataset", required=True)
    w.add_argument("--method", required=True, choices=list(METHODS))
    w.add_argument("--seed", type=int, required=True)
    w.add_argument("--threads", type=int, default=os.cpu_count())
    w.add_argument("--overrides", default="")
    w.add_argument("--labels-dir", default="")
    args = ap.parse_args(argv)
    apply_undo_option(args)
    if args.cmd == "_run":
        worker(args)
    elif args.cmd == "table":
        table_main(args)
    elif args.cmd == "compare":
        compare_main(args)
    elif args.cmd == "relabel":
        relabel_main(args)
    else:
        overrides = parse_overrides(args.override)
        datasets = args.datasets or default_datasets()
        cmd = "python benchmarks/harness.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        recs = run_batch(datasets, args.methods, args.seeds, args.out, overrides_list=[overrides],
                         threads=args.threads, labels_dir=args.labels_dir, timeout=args.timeout, command=cmd)
        bad = [r for r in recs if r.get("status") == "error" and record_key(r) not in latest_ok(recs)]
        print(f"done: {len(latest_ok(recs))} successful runs in {args.out}; {len(bad)} failed "
              "(rerun the same command to retry them)")


if __name__ == "__main__":
    main()
