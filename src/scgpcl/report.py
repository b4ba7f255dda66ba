"""A self-contained HTML report of a clustering run: ``write_report(adata, "report/")``.

The report folder holds ``index.html`` (figures embedded as PNG, inline CSS:
one file to e-mail or archive), ``metrics.json`` (numbers for scripts) and
``clusters.tsv`` (cell, cluster, and the reference labels when there are any). It is written into a temporary folder
beside ``out_dir`` and renamed into place, so a failure leaves no
half-written report and an existing report stays as it was.
"""

from __future__ import annotations

import base64
import datetime as _dt
import errno
import html
import io
import json
import logging
import os
import platform
import shlex
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from ._config import flat_config, recommended
from ._errors import InputError, NoTestableClusters
from ._fs import check_writable, replacement_mode
from ._machine import cpu_model, software_versions
from ._messages import (
    arg,
    cli_context,
    empty_clusters_message,
    k_estimates,
    kept_run,
    listing,
    per_run_k,
    still_working,
)
from ._signals import deferred, raise_if_interrupted
from .data._checks import check_batch_key, check_in_memory
from .metrics import clustering_metrics, has_label, matched_labels
from .tl._batches import BATCH_SHARE, CHANCE, batch_record
from .tl._markers import cluster_order, clustering_counts, markers

__all__ = ["write_report", "check_report_dir", "REPORT_FILES"]

log = logging.getLogger("scgpcl")

#: The files a report folder consists of.
REPORT_FILES = ("index.html", "metrics.json", "clusters.tsv")

_STAGE_NAMES = {"pretrain": "pre-training", "finetune": "fine-tuning"}
_METRIC_NAMES = {
    "ARI": "adjusted Rand index",
    "NMI": "normalised mutual information",
    "CA": "clustering accuracy (Hungarian matching)",
    "F1_macro": "macro F1 after matching",
    "F1_micro": "micro F1 after matching",
}


# ------------------------------------------------------------------ public
def write_report(
    adata: AnnData,
    out_dir: str | os.PathLike,
    *,
    key: str = "scgpcl",
    label_key: str | None = None,
    batch_key: str | None = None,
    dataset_name: str | None = None,
    n_markers: int = 10,
    overwrite: bool = False,
) -> Path:
    """Write an HTML report, ``metrics.json`` and ``clusters.tsv`` to ``out_dir``.

    Parameters
    ----------
    adata
        Data clustered by :func:`scgpcl.tl.cluster` (or the CLI). The UMAP
        coordinates are stored in ``obsm['X_' + key + '_umap']`` as a side effect.
    out_dir
        Report folder. Created if absent. An existing folder is used when it is
        empty; one that holds an earlier report (only its files: ``index.html``,
        ``metrics.json``, ``clusters.tsv``) is replaced only with ``overwrite=True``; any
        other folder is refused, so a typo cannot wipe an unrelated folder.
    key
        The clustering's ``key_added``.
    label_key
        ``obs`` column with reference labels: adds ARI/NMI/CA, the contingency
        heatmap and label-coloured panels. ``None``: the labels the clustering
        was scored against, if any (``uns[key]['metrics']['label_key']``).
    batch_key
        ``obs`` column naming each cell's batch (sample, donor, run): adds the
        cells per cluster split by batch, the clusters made mostly of one
        batch (:func:`scgpcl.tl.batch_composition`) and a batch column in
        ``clusters.tsv``. ``None``: the one the clustering was given, if any
        (``uns[key]['batches']['batch_key']``).
    dataset_name
        Shown in the title (default: ``"dataset"``).
    n_markers
        Marker genes per cluster in the table (the dot plot shows 5).
    overwrite
        Replace an earlier report in ``out_dir`` (CLI: ``--overwrite``).

    Returns
    -------
    The report folder.

    Raises
    ------
    InputError
        If ``adata`` holds no clustering under ``key``, ``label_key`` is not a
        column of ``obs``, ``batch_key`` is not a column of batches, or
        ``out_dir`` cannot be used.
    FileExistsError
        Without ``overwrite``, another report was put in ``out_dir`` while
        this one was written: it is kept, and this one is written beside it
        (the error's ``filename`` says where).
    """
    out = Path(out_dir).expanduser()
    _check_inputs(adata, key, label_key)
    check_batch_key(adata, batch_key)
    if batch_key is not None and batch_key == key:
        raise InputError(f"the batch key {batch_key!r} is the clustering itself: pass the column naming each cell's "
                         f"batch to {arg('batch_key=', '--batch-key')}")
    if label_key is None:
        scored = (adata.uns[key].get("metrics") or {}).get("label_key")
        if scored is not None and scored in adata.obs.columns:
            label_key = str(scored)
    if batch_key is None:
        given = (adata.uns[key].get("batches") or {}).get("batch_key")
        if given is not None and given in adata.obs.columns:
            try:
                check_batch_key(adata, str(given))
            except InputError as err:  # the column changed since the clustering: the report goes on without it
                log.warning("the report leaves out the batches the clustering was given: %s", err)
            else:
                batch_key = str(given)
    out = check_report_dir(out, overwrite=overwrite)
    parent = out.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=parent))
    try:
        with still_working("report"):  # 40 s at 100,000 cells with a stored UMAP, minutes without one
            _write_contents(tmp, adata, key=key, label_key=label_key, batch_key=batch_key,
                            dataset_name=dataset_name, n_markers=n_markers)
        os.chmod(tmp, replacement_mode(out, 0o777))  # after the writing: a replaced report may have been read-only
        _replace_dir(tmp, out, overwrite=overwrite)
    except BaseException as err:
        if isinstance(err, KeyboardInterrupt) and not tmp.exists() and (out / "index.html").is_file():
            err.written = [str(out / "index.html")]  # a signal held back during the renames came after them
        with deferred():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote report %s", out / "index.html")
    return out


def check_report_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Check that ``out_dir`` can take a report, without writing anything.

    It may be absent (its parent must exist), empty, or, with ``overwrite``, hold
    an earlier report (only ``index.html``, ``metrics.json`` and ``clusters.tsv``).

    Parameters
    ----------
    out_dir
        The report folder.
    overwrite
        Accept a folder that holds an earlier report (it is replaced when the
        new report is complete).

    Returns
    -------
    ``out_dir`` as a :class:`~pathlib.Path`, ``~`` expanded.

    Raises
    ------
    InputError
        The folder cannot take the report.
    """
    out = Path(out_dir).expanduser()
    if out.is_symlink():  # the report goes where the link points (replacing the link would leave the target as it was)
        out = out.resolve()
    if not out.parent.is_dir():
        raise InputError(f"report folder's parent '{out.parent}' does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"'{out}' exists and is not a folder; give a folder name for the report")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if foreign:
            raise InputError(
                f"'{out}' is not empty and is not an scgpcl report (it holds {', '.join(foreign[:3])}"
                f"{'...' if len(foreign) > 3 else ''}); choose a new folder"
            )
        if not overwrite and any(out.iterdir()):
            raise InputError(f"'{out}' holds an earlier report; pass {arg('overwrite=True', '--overwrite')} to replace "
                             "it, or choose a new folder")
    check_writable(out.parent, "the report")
    return out


# ------------------------------------------------------------ file handling
def report_beside(out: Path) -> tuple[Path, str]:
    """Where a report goes when another run's report appeared at ``out`` meanwhile, and the words that say so."""
    kept = out.with_name(f"{out.name}.{uuid.uuid4().hex[:6]}")
    return kept, ("a report from elsewhere appeared there while this ran (another run?) and is not replaced "
                  f"without {arg('overwrite=True', '--overwrite')}; this report was written to '{kept}' instead")


def _replace_dir(new: Path, out: Path, *, overwrite: bool) -> None:
    """Move the finished folder ``new`` to ``out``; an old ``out`` is removed only after that succeeded.

    Without ``overwrite``, a report that another run put at ``out`` while this one ran (it was absent or empty
    when checked) is kept, and this one goes beside it: FileExistsError naming where.
    """
    raise_if_interrupted()  # a Ctrl-C or SIGTERM dropped inside a finaliser while the report was written
    if not out.exists():
        os.rename(new, out)
        return
    if not overwrite and out.is_dir() and any(out.iterdir()):
        kept, why = report_beside(out)
        os.rename(new, kept)
        raise FileExistsError(errno.EEXIST, why, str(kept))
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    with deferred():  # a signal between the two renames would leave the old report hidden and no new one
        os.rename(out, old)
        try:
            os.rename(new, out)
        except BaseException:
            os.rename(old, out)
            raise
        shutil.rmtree(old, ignore_errors=True)  # a report's few files: quick, and not left hidden by a signal


def _check_inputs(adata: AnnData, key: str, label_key: str | None) -> None:
    if key not in adata.obs.columns or not isinstance(adata.uns.get(key), dict) or "X_" + key not in adata.obsm:
        found = [str(k) for k, v in adata.uns.items() if isinstance(v, dict) and "params" in v and k in adata.obs]
        found_text = f"; clusterings found under: {listing(found)}" if found else ""
        raise InputError(
            f"no scgpcl clustering under key {key!r} (obs[{key!r}], obsm['X_{key}'], uns[{key!r}]){found_text}: "
            + arg("run scgpcl.tl.cluster first, or pass the key= it was stored under",
                  "cluster with 'scgpcl cluster' first, or pass the --key it was stored under")
        )
    if label_key is not None and label_key not in adata.obs.columns:
        raise InputError(f"label key {label_key!r} is not a column of obs (available columns: "
                         f"{listing(list(adata.obs.columns))}); pass one to {arg('label_key=', '--label-key')}")


# ---------------------------------------------------------------- contents
def _json_default(o: Any):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _figure_png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _dataset_summary(adata: AnnData, key: str, label_key: str | None) -> dict[str, Any]:
    params = adata.uns[key].get("params") or {}
    counts, where, _ = clustering_counts(adata, key)
    if counts is None:
        raise InputError("adata.X is None, and the clustering's counts were in X: the report needs them; put the "
                         "counts back in X")
    check_in_memory(counts, where)  # a backed AnnData's
    per_cell = np.asarray(counts.sum(axis=1)).ravel()
    nnz_cell = np.asarray((counts > 0).sum(axis=1)).ravel()
    n_entries = counts.shape[0] * counts.shape[1]
    nnz = counts.nnz if sp.issparse(counts) else int(np.count_nonzero(counts))
    summary: dict[str, Any] = {
        "cells": int(adata.n_obs),
        "genes": int(counts.shape[1]),  # of the counts read (.raw can hold more genes than X)
        "counts from": where,
        "storage": "sparse" if sp.issparse(counts) else "dense",
        "median counts per cell": float(np.median(per_cell)) if per_cell.size else float("nan"),
        "median genes detected per cell": float(np.median(nnz_cell)) if nnz_cell.size else float("nan"),
        "zeros": f"{100 * (1 - nnz / max(n_entries, 1)):.1f} %",
        # the column as it is now (params' n_cells_used is training's: a column edited since differs)
        "cells clustered": int(adata.obs[key].notna().sum()),
        "genes used by the model": int(params.get("n_genes_used", 0)) or None,
        "clusters (K)": _k_shown(adata.obs[key], params.get("n_clusters")),
    }
    if label_key is not None:
        labels = adata.obs[label_key]
        summary["reference labels"] = f"obs['{label_key}'], {labels[has_label(labels)].astype(str).nunique()} groups"
    return summary


def _unclustered_note(n_unclustered: int, n_dropped: Any, key: str) -> str:
    """Why cells have no cluster: training dropped them (no counts in its genes), or the column says so."""
    if not n_unclustered:
        return ""
    dropped = min(int(n_dropped or 0), n_unclustered)
    parts = [f"{dropped} cells had no counts in the genes used and were not clustered"] if dropped else []
    if n_unclustered > dropped:
        parts.append(f"{n_unclustered - dropped} {'more ' if dropped else ''}cells have no cluster in obs['{key}']")
    return f'<p class="note">{_e("; ".join(parts))}.</p>'


def _k_shown(clusters: pd.Series, trained_k: Any) -> int | str:
    """The number of clusters in the column now, and the K trained with when it differs.

    A user may merge or relabel clusters after training and write the report again; the table then shows the
    clusters the report describes, not only the K recorded at training.
    """
    now = int(clusters.dropna().nunique())
    if trained_k is None or int(trained_k) == now:
        return now
    return f"{now} (trained with K = {int(trained_k)})"


def _metrics(adata: AnnData, key: str, label_key: str | None) -> dict[str, float] | None:
    if label_key is None:
        return None
    clusters, labels = adata.obs[key], adata.obs[label_key]
    ok = clusters.notna().to_numpy() & has_label(labels)
    if not ok.any():
        return None
    m = clustering_metrics(labels[ok].astype(str).to_numpy(), clusters[ok].astype(str).to_numpy())
    m["n_cells"] = int(ok.sum())
    return m


def _matched(adata: AnnData, key: str, label_key: str | None) -> dict[str, tuple[str | None, str, float]]:
    """Per cluster: its matched label, its most common label and that label's share of its labelled cells.

    The matched label is the CA metric's Hungarian matching; None when unmatched or when the pair shares no cell.
    """
    if label_key is None:
        return {}
    clusters, labels = adata.obs[key], adata.obs[label_key]
    ok = clusters.notna().to_numpy() & has_label(labels)
    if not ok.any():
        return {}
    c, t = clusters[ok].astype(str).to_numpy(), labels[ok].astype(str).to_numpy()
    out = {}
    for cluster, label in matched_labels(t, c, overlapping=True).items():
        names, counts = np.unique(t[c == cluster], return_counts=True)
        top = int(np.argmax(counts))
        out[cluster] = (label, str(names[top]), float(counts[top] / counts.sum()))
    return out


def _write_contents(d: Path, adata: AnnData, *, key: str, label_key: str | None, batch_key: str | None,
                    dataset_name: str | None, n_markers: int) -> None:
    from . import pl

    info = adata.uns[key]
    name = dataset_name or "dataset"
    clusters = adata.obs[key]
    order = cluster_order(clusters)
    counts = clusters.astype(str)[clusters.notna()].value_counts()
    if isinstance(clusters.dtype, pd.CategoricalDtype):  # keep clusters that ended up empty, with 0 cells
        order = [str(c) for c in clusters.cat.categories]
    sizes = {c: int(counts.get(c, 0)) for c in order}
    metrics = _metrics(adata, key, label_key)
    matches = _matched(adata, key, label_key)
    raw_stages = info.get("stages") or {}
    stage_order = [s for s in _STAGE_NAMES if s in raw_stages] + [s for s in raw_stages if s not in _STAGE_NAMES]
    # runs from before 2026-12-04 counted epochs (rounds of one epoch): metrics.json says rounds, as load() does
    before_rounds = any("epochs" in raw_stages[s] and "rounds" not in raw_stages[s] for s in stage_order) or any(
        "epoch" in h and "round" not in h for h in (info.get("history") or {}).values() if isinstance(h, dict))
    stages = {s: {("rounds" if k == "epochs" and "rounds" not in raw_stages[s] else k):
                  (_json_default(v) if isinstance(v, np.generic) else v) for k, v in raw_stages[s].items()}
              for s in stage_order}
    versions = software_versions()
    summary = _dataset_summary(adata, key, label_key)

    # clusters.tsv first: cheapest, and a failure later still removes it with the folder
    table = {"cell": adata.obs_names.astype(str), "cluster": _as_text(clusters)}
    agreement = adata.obs.get(f"{key}_agreement")  # several runs: the share of the others agreeing, per cell
    if agreement is not None:
        table["agreement"] = [("NA" if np.isnan(v) else f"{v:.4g}") for v in np.asarray(agreement, dtype=float)]
    # the reference labels and the batches beside, under their column's name unless that is taken: no join to make
    if label_key is not None and label_key in adata.obs:
        table[label_key if label_key not in table else "label"] = _as_text(adata.obs[label_key]).to_numpy()
    if batch_key is not None:
        table[batch_key if batch_key not in table else "batch"] = _as_text(adata.obs[batch_key]).to_numpy()
    pd.DataFrame(table).to_csv(d / "clusters.tsv", sep="\t", index=False)
    batch = batch_record(clusters, adata.obs[batch_key], batch_key, key=key, warn=False) if batch_key else None

    record = {
        "report": "scgpcl",
        "dataset": name,
        "key": key,
        "label_key": label_key,
        "metrics": metrics,
        "n_cells": int(adata.n_obs),
        "n_genes": int(adata.n_vars),
        "n_cells_clustered": int(clusters.notna().sum()),
        "n_clusters": len(order),
        "cluster_sizes": sizes,
        "matched_labels": {c: m[0] for c, m in matches.items()} if label_key is not None else None,
        "most_common_labels": ({c: {"label": m[1], "share": round(m[2], 4)} for c, m in matches.items()}
                               if label_key is not None else None),
        "batch_key": batch_key,
        "cells_per_batch": ({c: dict(zip(batch["batches"].tolist(), row.tolist(), strict=True))
                             for c, row in zip(batch["clusters"].tolist(), batch["counts"], strict=True)} if batch else None),
        "batch_specific_clusters": ([{"cluster": c, "batch": b, "share": float(v)} for c, b, v in
                                     zip(batch["specific"], batch["specific_batch"], batch["specific_share"], strict=True)]
                                    if batch else None),
        "stages": stages,
        # several runs (seeds, chosen_seed, ari, mean_ari, n_clusters) and an estimated K, as the page shows them
        "runs": info.get("runs"),
        "auto_k": info.get("auto_k"),
        "params": {k: v for k, v in (info.get("params") or {}).items() if k != "config"},
        "config": (info.get("params") or {}).get("config", {}),
        "versions": versions,
        "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    (d / "metrics.json").write_text(json.dumps(record, indent=1, default=_json_default) + "\n")

    figures: list[tuple[str, str, str]] = []  # (id, caption, base64)

    def add(fid: str, caption: str, make) -> None:
        fig = make()
        figures.append((fid, caption, _figure_png(fig)))

    add("umap", f"UMAP of the learned embedding (neighbours on obsm['X_{key}'])",
        lambda: pl.umap(adata, key=key, label_key=label_key))
    if label_key is not None:
        add("contingency", "Clusters against reference labels; Hungarian-matched pairs outlined",
            lambda: pl.contingency(adata, key=key, label_key=label_key))
    add("sizes", "Cells per cluster" + (f", split by {label_key}" if label_key else ""),
        lambda: pl.cluster_sizes(adata, key=key, label_key=label_key))
    if batch_key is not None:
        add("batches", f"Cells per cluster, split by batch ({batch_key})",
            lambda: pl.cluster_sizes(adata, key=key, label_key=batch_key, match_colours=False))
        add("composition", f"Each batch's cells across the clusters ({batch_key}), as shares of the batch",
            lambda: pl.batch_composition(adata, batch_key, key=key))
    has_history = any(len(np.asarray(h.get("round", h.get("epoch", [])))) for h in (info.get("history") or {}).values())
    if has_history:
        add("curves", "Loss terms per round, stage boundary and stopping points",
            lambda: pl.training_curves(adata, key=key))
    marker_table, no_markers = None, None
    try:
        marker_table = markers(adata, key=key, n_genes=n_markers)
    except NoTestableClusters as err:  # e.g. every cluster has one cell: the rest of the report still stands
        no_markers = str(err)
    else:
        add("markers", "Top 5 marker genes per cluster (Wilcoxon, one cluster vs the rest)",
            lambda: pl.marker_dotplot(adata, key=key, n_genes=min(5, n_markers), markers=marker_table))

    page = _render_html(
        before_rounds=before_rounds,
        name=name, key=key, label_key=label_key, info=info, metrics=metrics, stages=stages, sizes=sizes,
        summary=summary, versions=versions, figures=dict((f[0], f) for f in figures), marker_table=marker_table,
        matches=matches,
        batch=batch,
        no_markers=no_markers,
        created=record["created"],
    )
    (d / "index.html").write_text(page, encoding="utf-8")


#: the columns of the loss history, in this order (others after them, by name)
_HISTORY_ORDER = {k: i for i, k in enumerate(("loss", "zinb", "mse", "ins", "proto", "cluster", "lr", "steps",
                                               "ari_prev", "delta_label"))}


def _in_field_order(config: dict) -> dict:
    """The flat configuration in its dataclasses' field order.

    An ``.h5ad`` round trip returns ``uns`` dictionaries sorted by name, so ``scgpcl report`` on a written
    file listed the options alphabetically where the run's own report grouped them.
    """
    canon = {k: i for i, k in enumerate(flat_config(recommended()))}
    return dict(sorted(config.items(), key=lambda kv: (canon.get(kv[0], len(canon)), kv[0])))


def _reproduce_html(params: dict, runs: dict | None = None, *, before_rounds: bool = False) -> str:
    """The command line that reproduces the run, with its folder, the input's checksum and the CPU model.

    ``runs``: ``uns[key]['runs']`` when the clustering is the medoid of several runs. ``before_rounds``: the
    run's history counts epochs, so an scgpcl from before training ran in rounds (2026-12-04) made it.
    """
    items: list[str] = []
    command = params.get("command")
    if before_rounds:  # re-run today with its recorded configuration it gave ARI 0.5 against its own labels
        made_with = (f'<pre class="cmd"><code>{_e(command)}</code></pre>' if command else "")
        items.append('<h3>Reproduce this run</h3><p class="note">This run was made by an scgpcl from before '
                     "2026-12-04, whose training ran in epochs: this version trains in rounds and does not repeat "
                     "it. Its command and the parameters and configuration under Parameters are the run's, for "
                     f"the record; to repeat it, use the scgpcl it was made with.</p>{made_with}")
    elif command:
        cwd = params.get("cwd")
        shown = f"cd {shlex.quote(str(cwd))}\n{command}" if cwd else str(command)
        again = ("" if "--overwrite" in str(command).split() else
                 '<p class="note">scgpcl does not replace existing files: to run it again where its outputs '
                 "still are, add <code>--overwrite</code> or name other output paths.</p>")
        items.append(f"<h3>Reproduce this run</h3><pre class=\"cmd\"><code>{_e(shown)}</code></pre>{again}")
    else:
        items.append('<h3>Reproduce this run</h3><p class="note">No command line was recorded (a run from Python, '
                     "or by an scgpcl older than this report): <code>scgpcl.tl.cluster(adata, n_clusters=K, "
                     "random_state=seed, ...)</code> with the parameters and configuration listed under "
                     "Parameters repeats it.</p>")
    facts: dict[str, Any] = {}
    if params.get("input"):
        facts["input"] = params["input"]
    checksum = params.get("input_sha256")
    if isinstance(checksum, dict):
        for fname, digest in checksum.items():
            facts[f"SHA-256 of {fname}"] = digest
    elif checksum:
        facts["input SHA-256"] = checksum
    if params.get("random_state") is not None:
        facts["seed"] = params["random_state"]
    if runs:
        seeds = [int(s) for s in runs["seeds"]]
        per_k = f" ({text})" if (text := per_run_k(runs.get("n_clusters"))) else ""
        facts["runs"] = (f"{len(seeds)} at seeds {', '.join(map(str, seeds))}{per_k}: kept seed "
                         f"{int(runs['chosen_seed'])}, {kept_run(len(seeds))} (mean ARI between runs "
                         f"{float(runs['mean_ari']):.3f})")
    if params.get("cpu"):
        facts["CPU"] = params["cpu"]
    if params.get("torch_threads"):
        facts["torch threads"] = params["torch_threads"]
    if params.get("gpu"):
        facts["GPU"] = params["gpu"]
    return "".join(items) + (f'<div class="mono-kv">{_kv(facts)}</div>' if facts else "")


# --------------------------------------------------------------------- HTML
_CSS = """
:root { --fg:#1d2430; --muted:#5b6575; --line:#e3e7ee; --bg:#f5f7fa; --card:#fff; --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font: 15px/1.55 -apple-system, BlinkMacSystemFont, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 24px 48px; }
header { margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0 0 4px; letter-spacing: -0.01em; }
h2 { font-size: 19px; margin: 0 0 12px; }
h3 { font-size: 15px; margin: 18px 0 8px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.sub { color: var(--muted); margin: 0; }
nav { margin: 14px 0 4px; display:flex; flex-wrap:wrap; gap:6px; }
nav a { color: var(--accent); text-decoration: none; font-size: 13.5px; padding: 3px 10px; border: 1px solid var(--line);
  border-radius: 999px; background: var(--card); }
nav a:hover { border-color: var(--accent); }
section { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 20px 22px;
  margin: 16px 0; box-shadow: 0 1px 2px rgba(16,24,40,.04); }
.cards { display:grid; grid-template-columns: repeat(auto-fit, minmax(120px, 1fr)); gap: 10px; margin-top: 14px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px; padding: 12px 14px; }
.card .v { font-size: 24px; font-weight: 650; letter-spacing: -0.01em; }
.card .k { color: var(--muted); font-size: 12.5px; text-transform: uppercase; letter-spacing: .04em; }
.card.metric .v { color: var(--accent); }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12.5px; text-transform: uppercase; letter-spacing: .03em; }
tbody tr:nth-child(even) { background: #fafbfc; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.num { text-align: right; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
.kv { display:grid; grid-template-columns: minmax(180px, max-content) 1fr; gap: 0; }
.kv div { padding: 5px 10px; border-bottom: 1px solid var(--line); }
.kv div:nth-child(odd) { color: var(--muted); }
figure { margin: 14px 0 4px; text-align: center; }
figure img { max-width: 100%; height: auto; border-radius: 6px; }
figcaption { color: var(--muted); font-size: 13px; margin-top: 6px; }
.grid2 { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; align-items: start; }
.gene { display:inline-block; padding: 1px 7px; margin: 1px 2px; border-radius: 5px; background: #eef2ff;
  font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12.5px; }
.gene.ns { background: none; border: 1px dashed #b8bcc8; color: var(--muted); }
details { margin-top: 10px; }
summary { cursor: pointer; color: var(--accent); font-size: 14px; }
.note { color: var(--muted); font-size: 13.5px; }
footer { color: var(--muted); font-size: 12.5px; text-align: center; margin-top: 24px; }
pre.cmd { background: #0f172a; color: #e2e8f0; padding: 10px 14px; border-radius: 8px; white-space: pre-wrap;
  word-break: break-all; margin: 6px 0 10px; }
pre.cmd code { font-size: 12.5px; }
.mono-kv .kv div:nth-child(even) { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; word-break: break-all; }
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, np.ndarray)):
        return ", ".join(_fmt(x) for x in v)
    if v is None:
        return "–"
    return str(v)


def _chosen_scaling(silhouettes, provisional_k=None) -> str:
    """`` (chosen per dataset by the k-means silhouette ...)`` when the scaling was chosen, else ``""``.

    ``provisional_k``: the K it was chosen at when K was estimated (``provisional_k=True``), named if given.
    """
    if not silhouettes:
        return ""
    names = {"0": "median"}
    scores = ", ".join(f"{float(v):.3f} for {names.get(str(t), str(t))}" for t, v in dict(silhouettes).items())
    at = "" if provisional_k is None else f" at a provisional K={int(provisional_k)}"
    return f" (chosen per dataset by the k-means silhouette{at} on a sample: {scores})"


def _kv(items: dict[str, Any]) -> str:
    return '<div class="kv">' + "".join(f"<div>{_e(k)}</div><div>{_e(_fmt(v))}</div>" for k, v in items.items()) \
        + "</div>"


def _table(header: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    th = "".join(f'<th class="num">{_e(h)}</th>' if i in numeric else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f'<td class="num">{_e(_fmt(c))}</td>' if i in numeric else f"<td>{_e(_fmt(c))}</td>"
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _figure(fig: tuple[str, str, str] | None) -> str:
    if fig is None:
        return ""
    fid, caption, b64 = fig
    return (f'<figure id="fig-{_e(fid)}"><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _n_clusters_card(sizes: dict[str, int]) -> str:
    used = sum(n > 0 for n in sizes.values())
    return str(used) if used == len(sizes) else f"{used} of {len(sizes)}"


def _as_text(values: pd.Series) -> pd.Series:
    """A column as text for ``clusters.tsv``, missing values as ``NA``."""
    return values.astype(object).where(values.notna(), "NA").astype(str)


def _batches_html(batch: dict | None, figures: dict) -> str:
    """The clusters split by batch, and those made mostly of one batch (``batch_record``)."""
    if not batch:
        return ""
    where = f"<code>{_e(batch['batch_key'])}</code>"
    found = list(zip(batch["specific"], batch["specific_batch"], batch["specific_share"], strict=True))
    rule = (f"at least {100 * BATCH_SHARE:.0f} % of a cluster's cells from one batch, at least halfway from that "
            "batch's share of all cells to 100 %, and beyond chance: with random batches, any cluster at all is "
            f"named with a probability below {CHANCE:g}")
    if found:
        rows = [[c, b, f"{100 * v:.0f}"] for c, b, v in found]
        text = (f'<p class="note">{len(found)} of {len(batch["clusters"])} clusters are made mostly of one batch of '
                f"{where} ({rule}). If these batches should hold the same cell types, these clusters may follow the "
                "batch, not the cell type: scgpcl does not remove batch effects.</p>"
                + _table(["cluster", "batch", "% of the cluster"], rows, numeric={2}))
    else:
        text = (f'<p class="note">No cluster is made mostly of one batch of {where} ({len(batch["batches"])} batches; '
                f"the test: {rule}).</p>")
    return f'<h3>Batches</h3>{text}{_figure(figures.get("batches"))}{_figure(figures.get("composition"))}'


#: a marker gene shown as such has an adjusted p-value below this (others are greyed)
_MARKER_ALPHA = 0.05


def _markers_section(marker_table: pd.DataFrame, sizes: dict, figures: dict) -> str:
    """The marker-gene section: the dot plot, the top genes per cluster, the full table folded away."""
    groups = []
    by_cluster = {str(cl): df for cl, df in marker_table.groupby("cluster", observed=True, sort=False)}
    for cl in list(sizes) + [c for c in by_cluster if c not in sizes]:
        df = by_cluster.get(str(cl))
        if df is None:  # rank_genes_groups needs 2 cells in a group: say so rather than leave the cluster out
            chips = ('<span class="note">empty: no cells</span>' if sizes.get(str(cl), 0) == 0 else
                     '<span class="note">no test: fewer than 2 cells</span>')
        else:  # a gene that is not significant is still a cluster's best, but must not look like a marker
            chips = "".join(
                f'<span class="gene{" ns" if not r.pval_adj < _MARKER_ALPHA else ""}" title="log2FC '
                f'{r.logfoldchange:.2f}, adj. p {r.pval_adj:.2g}, in {100 * r.pct_cluster:.0f} % of the cluster\'s '
                f'cells and {100 * r.pct_rest:.0f} % of the others'
                f'{"" if r.pval_adj < _MARKER_ALPHA else " (not significant)"}">{_e(r.gene)}</span>'
                for r in df.itertuples())
        groups.append(f"<tr><td>{_e(cl)}</td><td class=\"num\">{sizes.get(str(cl), 0)}</td><td>{chips}</td></tr>")
    cols = ["cluster", "rank", "gene", "score", "logfoldchange", "pval_adj", "pct_cluster", "pct_rest"]
    rows = [[*r[:6], f"{100 * r[6]:.0f}", f"{100 * r[7]:.0f}"] for r in marker_table[cols].values.tolist()]
    full = _table(["cluster", "rank", "gene", "score", "log2 fold change", "adj. p-value", "% of the cluster expressing",
                   "% of the other cells expressing"], rows, numeric={1, 3, 4, 5, 6, 7})
    return (
        '<section id="markers"><h2>Marker genes</h2>'
        '<p class="note">Wilcoxon rank-sum test of each cluster against all other cells on '
        "library-size-normalised (10,000 counts per cell), log1p-transformed counts of all genes "
        "(<code>scanpy.tl.rank_genes_groups</code>); Benjamini–Hochberg adjusted p-values. Greyed, dashed "
        f"genes are not significant (adjusted p-value {_MARKER_ALPHA:g} or more): the cluster has no clear "
        "marker there, often because it holds few cells.</p>"
        + _figure(figures.get("markers"))
        + "<table><thead><tr><th>cluster</th><th class=\"num\">cells</th><th>top genes (best first)</th></tr></thead>"
        f"<tbody>{''.join(groups)}</tbody></table>"
        f"<details><summary>Full marker table ({len(marker_table)} rows)</summary>{full}</details></section>"
    )


def _render_html(*, name, key, label_key, info, metrics, stages, sizes, summary, versions, figures, marker_table,
                 no_markers, created, matches=None, batch=None, before_rounds=False) -> str:
    params = info.get("params") or {}
    config = params.get("config") or {}
    total_seconds = sum(float(s.get("seconds", 0.0)) for s in stages.values())
    runs = info.get("runs") or {}
    n_runs = len(runs.get("seeds", ()))
    # the stages' seconds are the kept run's: with several runs the command's own time was about n_runs times
    training = f"{total_seconds:.0f} s" + (f" (kept run of {n_runs})" if n_runs > 1 else "")

    cards = [("cells", f"{summary['cells']:,}"), ("genes", f"{summary['genes']:,}"),
             ("clusters", _n_clusters_card(sizes)), ("training", training)]
    metric_cards = [(k, f"{metrics[k]:.3f}") for k in ("ARI", "NMI", "CA")] if metrics else []
    cards_html = "".join(f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
                         for k, v in cards)
    cards_html += "".join(f'<div class="card metric"><div class="k">{_e(k)}</div><div class="v">{_e(v)}</div></div>'
                          for k, v in metric_cards)

    nav = [("summary", "Summary"), ("clusters", "Clusters"), ("training", "Training"), ("markers", "Markers"),
           ("preprocessing", "Preprocessing"), ("parameters", "Parameters"), ("environment", "Environment")]
    nav_html = "".join(f'<a href="#{a}">{_e(t)}</a>' for a, t in nav)

    # summary
    if metrics:
        metric_rows = [[k, _METRIC_NAMES.get(k, k), f"{metrics[k]:.4f}"] for k in _METRIC_NAMES if k in metrics]
        metrics_html = (f"<h3>Agreement with <code>{_e(label_key)}</code> ({metrics['n_cells']:,} labelled cells)</h3>"
                        + _table(["metric", "meaning", "value"], metric_rows, numeric={2}))
    else:
        metrics_html = ('<p class="note">No reference labels given, so no ARI/NMI/CA: pass '
                        "<code>label_key=</code> (CLI: <code>--label-key</code>) to score the clusters.</p>")
    size_rows = [[c, n, f"{100.0 * n / max(sum(sizes.values()), 1):.1f}"] for c, n in sizes.items()]
    size_header = ["cluster", "cells", "%"]
    if label_key is not None:  # what each cluster holds, and the label the CA metric's matching pairs it with
        size_header += [f"most common {label_key}", "% of its labelled cells", "matched label (CA)"]
        for row in size_rows:
            label, top, share = (matches or {}).get(row[0], (None, None, float("nan")))
            row += [top if top is not None else "–", f"{100 * share:.0f}" if top is not None else "–",
                    label if label is not None else "–"]
    n_unclustered = summary["cells"] - sum(sizes.values())
    empty = [c for c, n in sizes.items() if n == 0]
    empty_note = ""
    if empty:
        with cli_context():  # the report names the command-line flags next to the Python ones below
            cli_text = empty_clusters_message(len(sizes) - len(empty), len(sizes), finetuned="finetune" in stages)
        py_text = empty_clusters_message(len(sizes) - len(empty), len(sizes), finetuned="finetune" in stages)
        empty_note = (f'<p class="note">Empty clusters: {", ".join(map(_e, empty))}. {_e(cli_text)} '
                      f"(from Python: {_e(py_text.rsplit('Try ', 1)[1])}).</p>")
    summary_html = (
        f'<section id="summary"><h2>Summary</h2>{metrics_html}'
        f'<div class="grid2"><div><h3>Dataset</h3>{_kv(summary)}</div>'
        f'<div><h3>Cluster sizes</h3>{_table(size_header, size_rows, numeric={1, 2, 4})}'
        + _unclustered_note(n_unclustered, params.get("n_cells_dropped"), key)
        + empty_note
        + "</div></div>" + _reproduce_html(params, info.get("runs"), before_rounds=before_rounds) + "</section>"
    )

    clusters_html = (f'<section id="clusters"><h2>Clusters</h2>{_figure(figures.get("umap"))}'
                     f'<div class="grid2"><div>{_figure(figures.get("contingency"))}</div>'
                     f'<div>{_figure(figures.get("sizes"))}</div></div>{_batches_html(batch, figures)}</section>')

    stage_rows = [[_STAGE_NAMES.get(s, s), st.get("rounds", st.get("epochs")), st.get("stop_reason"), st.get("seconds")]
                  for s, st in stages.items()]
    history_html = ""
    hist = info.get("history") or {}
    for stage in [s for s in stages if s in hist] + [s for s in hist if s not in stages]:
        h = hist[stage]
        cols = {k: np.asarray(v) for k, v in h.items()}
        xk = "round" if "round" in cols else "epoch"
        n = len(cols.get(xk, []))
        if not n:
            continue
        # a fixed order (the loss terms first, as in the curves): an .h5ad round trip returns them alphabetically
        others = sorted((k for k in cols if k != xk), key=lambda k: (_HISTORY_ORDER.get(k, len(_HISTORY_ORDER)), k))
        names = [xk, *others]
        rows = [[int(cols[xk][i])] + [float(cols[k][i]) if i < len(cols[k]) else None for k in names[1:]]
                for i in range(n)]
        history_html += (f"<details><summary>{_e(_STAGE_NAMES.get(stage, stage))}: loss terms of all {n} rounds "
                         "(each term unweighted; <code>loss</code> is their weighted sum, the weights set by the lambda options "
                         "under Parameters)"
                         f"</summary>{_table(names, rows, numeric=set(range(len(names))))}</details>")
    auto_k = info.get("auto_k")
    auto_html = ""
    if isinstance(auto_k, dict) and "k" in auto_k:
        each = auto_k.get("estimates") or {}
        detail = f"; the criteria it combines gave {_e(k_estimates(each))}" if len(each) > 1 else ""
        cand = auto_k.get("candidates")
        among = (f", among K = {int(cand[0])} to {int(cand[1])}" if cand is not None and len(cand) == 2 else "")
        auto_html = (f'<p class="note">K = {_e(auto_k["k"])} was estimated automatically '
                     f'({_e(auto_k.get("method", "?"))}{among}{detail}).</p>')
    training_html = (
        '<section id="training"><h2>Training</h2>' + auto_html
        + _table(["stage", "rounds", "why it stopped", "seconds"], stage_rows, numeric={1, 3})
        + _figure(figures.get("curves")) + history_html + "</section>"
    )

    if marker_table is None:  # no cluster could be tested: say why instead
        markers_html = ('<section id="markers"><h2>Marker genes</h2>'
                        f'<p class="note">No marker genes: {_e(no_markers)}.</p></section>')
    else:
        markers_html = _markers_section(marker_table, sizes, figures)

    pre = {k.split(".", 1)[1]: v for k, v in config.items() if k.startswith("preprocess.")}
    selection = pre.get("gene_selection", "variance")
    if selection == "variance":
        how = (f"top {100 * float(pre.get('hvg_fraction', 0.2)):.0f} % of genes by raw-count variance, "
               f"at least {pre.get('min_genes', '?')} genes")
    elif selection == "seurat_v3":
        how = f"Seurat v3 highly variable genes on counts, {pre.get('n_top_genes', '?')} genes"
    elif selection == "seurat":
        how = (f"scanpy's dispersion-based highly variable genes on log-normalised counts, "
               f"{pre.get('n_top_genes', '?')} genes")
    else:
        how = "all genes"
    pre_items = {
        "counts from": summary["counts from"],
        "cells": f"{summary['cells clustered']:,} of {summary['cells']:,} kept (cells with no counts in the genes used are dropped)",
        "gene selection": f"{selection}: {how}",
        "genes used": f"{params.get('n_genes_used', '?')} of {summary['genes']:,}",
        "model input": (f"counts scaled to {float(pre['target_sum']):g} per cell (over all genes)"
                        if pre.get("target_sum") else "counts scaled to the median library size")
                       + _chosen_scaling(params.get("target_sum_silhouettes"),
                                         params.get("provisional_k")) + ", log1p, z-scored per gene",
        "reconstruction target": ("raw counts (ZINB)" if config.get("model.reconstruction", "zinb") == "zinb"
                                  else "log-normalised values (MSE)"),
    }
    pre_items.update({f"preprocess.{k}": v for k, v in pre.items()})
    preprocessing_html = f'<section id="preprocessing"><h2>Preprocessing</h2>{_kv(pre_items)}</section>'

    # versions: Environment. By name, the order a written file returns them in, so both reports agree
    run_items = {k: params[k] for k in sorted(params) if k not in ("config", "versions")}
    sections: dict[str, list[list[Any]]] = {}
    for k, v in _in_field_order(config).items():
        sec, _, field = k.partition(".")
        if sec != "preprocess":
            sections.setdefault(sec, []).append([field, v])
    param_tables = "".join(f"<div><h3>{_e(sec)}</h3>{_table(['option', 'value'], rows)}</div>"
                           for sec, rows in sections.items())
    parameters_html = (f'<section id="parameters"><h2>Parameters</h2><h3>run</h3>{_kv(run_items)}'
                       f'<div class="grid2">{param_tables}</div></section>')

    trained_on = params.get("cpu")
    here = cpu_model()
    machine = (f"Trained on {_e(trained_on)}" + (f" with GPU {_e(params['gpu'])}" if params.get("gpu") else "")
               + f", device {_e(params.get('device', '?'))}" if trained_on else
               f"Device {_e(params.get('device', '?'))}; the CPU model was not recorded")
    if here != trained_on:
        machine += f". This report was written on {_e(here)} ({_e(platform.platform())})"
    else:
        machine += f" ({_e(platform.platform())})"
    trained_with = params.get("versions") or {}  # recorded by the run (older files have none)
    if trained_with:
        names = list(trained_with) + [k for k in versions if k not in trained_with]
        rows = [[k, trained_with.get(k, "-"), versions.get(k, "-")] for k in names]
        version_table = _table(["package", "trained with", "this report"], rows)
    else:
        version_table = _table(["package", "this report (the run recorded none)"], [[k, v] for k, v in versions.items()])
    env_html = (f'<section id="environment"><h2>Environment</h2>{version_table}'
                f'<p class="note">{machine}. The same seed can give other labels on another CPU model or under '
                f'other versions.</p></section>')

    title = f"scGPCL clustering report: {name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style></head>
<body><main>
<header><h1>{_e(title)}</h1>
<p class="sub">{summary['cells']:,} cells × {summary['genes']:,} genes · key <code>{_e(key)}</code>
{(" · labels <code>" + _e(label_key) + "</code>") if label_key else ""} · {_e(created)} · scgpcl {_e(versions.get('scgpcl', '?'))}</p>
<div class="cards">{cards_html}</div>
<nav>{nav_html}</nav></header>
{summary_html}
{clusters_html}
{training_html}
{markers_html}
{preprocessing_html}
{parameters_html}
{env_html}
<footer>Files beside this page: <code>metrics.json</code> (numbers), <code>clusters.tsv</code> (cell → cluster, and the reference label and batch when there are).</footer>
</main></body></html>
"""
