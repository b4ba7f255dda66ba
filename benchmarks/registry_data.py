"""Accuracy on labelled datasets the project had never seen, taken from package archives on PyPI.

    python benchmarks/registry_data.py fetch                 # -> benchmarks/runs/registry/*.h5ad (pip download)
    R=benchmarks/runs/registry; D="$R/scmark_tcell_macro_pyplnmodels.h5ad $R/wu2020_tcells200_scirpy.h5ad"
    python benchmarks/harness.py run --datasets $D --methods scgpcl --seeds 0 1 2 3 4 5 --threads 1 \\
        --labels-dir benchmarks/runs/labels_unseen --out benchmarks/results/unseen.jsonl   # labels kept: medoids
    python benchmarks/accuracy.py run --lanes 2 --seeds 0 1 2 --out benchmarks/results/unseen.jsonl --datasets $D
    python benchmarks/accuracy.py run --lanes 2 --seeds 0 1 2 --out benchmarks/results/unseen.jsonl --datasets $D --auto-k
    python benchmarks/registry_data.py table                 # -> benchmarks/results/unseen.md

The machine that runs the benchmarks reaches no network but the package registries, so the only
real data beyond ``../shared`` are files that packages ship inside their archives. A search of about
110 single-cell packages on PyPI, the Debian R packages and npm (2026-12-06) found two labelled
raw-count sets (the rest hold no labels, no counts, or download their data at run time; the list is
in ``results/unseen_notes.md``):

* ``scmark_tcell_macro_pyplnmodels``: the wheel of ``pyplnmodels`` 1.0.10 ships 2,000 cells x 3,000 genes of
  integer counts from scMARK (a benchmark that harmonises the published annotations of tumour
  studies), labelled CD4+ T cells, CD8+ T cells and macrophages (``load_data/data/scRT``);
* ``wu2020_tcells200_scirpy``: the source archive of ``scirpy`` 0.22.5 ships a 200-cell test subsample of
  Wu et al. 2020 (tumour and blood T cells, 10x), labelled with the authors' 16 published T-cell
  clusters (``cluster_orig``). Those labels come from a clustering of the full data and three of the
  types hold 3 cells or fewer, so the page reports it apart from the summary.

``fetch`` downloads the two pinned archives with ``pip download --no-deps``, checks their SHA-256
and writes the ``.h5ad`` files (raw counts in X, ``obs['cell_type']``; nothing filtered) into the
git-ignored ``benchmarks/runs/registry``. The data are never copied into the repository.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from accuracy import _means as _by_dataset  # noqa: E402

from scgpcl._machine import sha256_of  # noqa: E402

import harness  # noqa: E402

OUT_DIR = HERE / "runs" / "registry"
JSONL = HERE / "results" / "unseen.jsonl"
MD = HERE / "results" / "unseen.md"
NOTES = HERE / "results" / "unseen_notes.md"
LABELS = HERE / "runs" / "labels_unseen"
BASELINES = ["pca_kmeans", "leiden_tuned"]
MAIN_SEEDS = (0, 1, 2)  # the rule's seeds; medoid.SEEDS (0-5) for the medoid section


@dataclass(frozen=True)
class Source:
    """One dataset inside one pinned package archive."""

    name: str
    requirement: str  # what pip downloads
    archive: str  # the file pip writes
    sha256: str
    sdist: bool  # --no-binary :all:
    labels_from_clustering: bool
    description: str


SOURCES = [
    Source("scmark_tcell_macro_pyplnmodels", "pyplnmodels==1.0.10", "pyplnmodels-1.0.10-py3-none-any.whl",
           "613f577e1308f3ac3c39d175553e2457a92e1aa57d5ca58c8539685ccf0c9799", False, False,
           "scMARK subset shipped by pyplnmodels 1.0.10: CD4+ / CD8+ T cells and macrophages, published "
           "annotations harmonised by scMARK; the 3,000 most expressed genes"),
    Source("wu2020_tcells200_scirpy", "scirpy==0.22.5", "scirpy-0.22.5.tar.gz",
           "7b532993a7a396d35c81d7178f03ab7a2e6a6ffd5816e78ec0c4f246380bd427", True, True,
           "Wu et al. 2020 T cells, a 200-cell test subsample shipped by scirpy 0.22.5; the authors' 16 "
           "T-cell clusters"),
]


def _anndata(x, genes, labels, cells=None, uns=None):
    """Counts (cells x genes) and labels as an AnnData with CSR float32 X; cells without a label are dropped."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    labels = pd.Series(np.asarray(labels)).astype(str)
    keep = ~labels.isin(["", "nan", "None", "NA"]).to_numpy()
    x = sp.csr_matrix(x, dtype=np.float32)[keep]
    cells = np.asarray(cells)[keep] if cells is not None else np.array([f"cell_{i}" for i in np.flatnonzero(keep)])
    a = ad.AnnData(X=x, obs=pd.DataFrame({"cell_type": pd.Categorical(labels[keep].to_numpy())},
                                         index=ad.utils.make_index_unique(pd.Index(cells).astype(str))),
                   var=pd.DataFrame(index=ad.utils.make_index_unique(pd.Index(genes).astype(str))))
    if uns:
        a.uns["provenance"] = uns
    if not harness.is_raw_counts(a.X):
        raise SystemExit("the extracted matrix is not raw counts: the archive is not the one this script knows")
    return a


def _scmark(archive: Path):
    import pandas as pd

    with zipfile.ZipFile(archive) as z:
        counts = pd.read_csv(io.BytesIO(z.read("pyPLNmodels/load_data/data/scRT/counts.csv")))
        labels = pd.read_csv(io.BytesIO(z.read("pyPLNmodels/load_data/data/scRT/labels.csv")))
    if len(counts) != len(labels):
        raise SystemExit(f"counts.csv has {len(counts)} rows but labels.csv {len(labels)}")
    return counts.to_numpy(), counts.columns, labels.iloc[:, 0].to_numpy(), None


def _wu2020(archive: Path):
    import anndata as ad

    member = "scirpy-0.22.5/src/scirpy/tests/data/wu2020_200_v0_11.h5ad"
    with tarfile.open(archive) as t, tempfile.TemporaryDirectory() as tmp:
        f = t.extractfile(member)
        if f is None:
            raise SystemExit(f"{member} is not a file in {archive.name}")
        p = Path(tmp) / "wu.h5ad"
        p.write_bytes(f.read())
        a = ad.read_h5ad(p)
    return a.X, a.var_names, a.obs["cluster_orig"].to_numpy(), a.obs_names


READERS = {"scmark_tcell_macro_pyplnmodels": _scmark, "wu2020_tcells200_scirpy": _wu2020}


def fetch(args) -> None:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for s in SOURCES:
        target = out / f"{s.name}.h5ad"
        if target.exists():
            print(f"{target} exists; kept")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, s.requirement]
            if s.sdist:
                cmd[5:5] = ["--no-binary", ":all:"]
            subprocess.run(cmd, check=True)
            archive = Path(tmp) / s.archive
            if not archive.exists():
                raise SystemExit(f"pip wrote no {s.archive} (found: {sorted(p.name for p in Path(tmp).iterdir())})")
            digest = sha256_of(archive)
            if digest != s.sha256:
                raise SystemExit(f"{s.archive}: SHA-256 {digest}, expected {s.sha256}; not used")
            x, genes, labels, cells = READERS[s.name](archive)
        a = _anndata(x, genes, labels, cells, uns={"source": s.description, "archive": s.archive,
                                                   "sha256": s.sha256})
        partial = target.with_suffix(".h5ad.partial")
        a.write_h5ad(partial, compression="gzip")
        partial.replace(target)
        sizes = a.obs["cell_type"].value_counts()
        print(f"{target}: {a.n_obs} cells x {a.n_vars} genes, {len(sizes)} types (smallest {sizes.min()})")


def medoid_scores(dataset: str, records, labels_dir: Path) -> dict | None:
    """:func:`medoid.score` over seeds 0-5; None when they were not all run, an error when their labels are missing."""
    import medoid

    recs = _by_dataset(records, "scgpcl").get(dataset, {})
    if not set(medoid.SEEDS) <= set(recs):
        return None
    files = [Path(labels_dir) / harness.labels_file(dataset, "scgpcl", s, {}) for s in medoid.SEEDS]
    if not all(f.exists() for f in files):
        raise SystemExit(f"the saved labels of {dataset}'s seeds 0-5 are missing from {labels_dir} (the runs keep "
                         "them there; they are not in git): the page was not rewritten. Make those runs again "
                         "with --labels-dir, or rebuild the page where they were made.")
    spec = Path(recs[0]["dataset_spec"])
    return medoid.score(dataset, records, labels_dir, spec if spec.is_absolute() else HERE.parent / spec)


def build_table(records, notes: str = "", labels_dir: Path = LABELS) -> str:
    """The page: per dataset, scGPCL (each recorded variant) against the baselines at the same seeds."""
    clustered = {s.name for s in SOURCES if s.labels_from_clustering}
    base = {m: _by_dataset(records, m) for m in BASELINES}
    labels = sorted({harness.method_label(r) for r in records if r["method"].startswith("scgpcl")},
                    key=lambda m: (m != "scgpcl", m))
    L = ["# Accuracy on datasets the project had never seen", "",
         "Labelled raw-count datasets found inside package archives on PyPI (`registry_data.py`'s docstring "
         "says which and how), the true K given (except `scgpcl_auto`, which estimates it), the harness's "
         "preprocessing and baselines as in `accuracy.md`. Mean ± SD over seeds; the baselines' columns are "
         "their mean over the same seeds. To make the records again: `python benchmarks/registry_data.py fetch`; "
         "the defaults at seeds 0-5 with their labels kept, `python benchmarks/harness.py run --datasets "
         "benchmarks/runs/registry/<name>.h5ad ... --methods scgpcl --seeds 0 1 2 3 4 5 --threads 1 --labels-dir "
         "benchmarks/runs/labels_unseen --out benchmarks/results/unseen.jsonl`; the baselines, `python "
         "benchmarks/accuracy.py run --lanes 2 --seeds 0 1 2 --out benchmarks/results/unseen.jsonl --datasets "
         "...` (runs already recorded are not made again: here the baselines), and the same with `--auto-k` for "
         "the `scgpcl_auto` rows; then `python benchmarks/registry_data.py table`. How the records on this page "
         "were made, in which order and beside what, is in the notes below.", ""]
    machines = sorted({str(r.get("machine", "not recorded")) for r in harness.latest_ok(records).values()})
    L += [f"Machines: {', '.join(machines)}.", ""]
    L += ["| dataset | labels | scGPCL run | seeds | ARI | PCA + k-means | tuned Leiden | minus PCA + k-means | "
          "minus tuned Leiden | clusters found < K | K found | CPU s |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for label in labels:
        runs = _by_dataset(records, label)
        for d in sorted(runs):
            seeds = sorted(set(runs[d]) & set(MAIN_SEEDS))
            if not seeds:
                continue
            ari = np.array([runs[d][s]["ARI"] for s in seeds], dtype=float)
            b = {m: [base[m].get(d, {}).get(s, {}).get("ARI") for s in seeds] for m in BASELINES}
            b = {m: (float(np.mean(v)) if all(x is not None for x in v) else None) for m, v in b.items()}
            fmt = {m: (f"{v:.3f}" if v is not None else "—") for m, v in b.items()}
            diff = {m: (f"{ari.mean() - v:+.3f}" if v is not None else "—") for m, v in b.items()}
            short = sum(int(runs[d][s]["n_clusters_found"] < runs[d][s]["K"]) for s in seeds)
            short = "—" if label.startswith("scgpcl_auto") else f"{short} of {len(seeds)}"  # fewer is its estimate
            found = ", ".join(str(runs[d][s]["n_clusters_found"]) for s in seeds)
            cpu = np.mean([runs[d][s].get("cpu_s", np.nan) for s in seeds])
            sd = ari.std(ddof=1) if ari.size > 1 else 0.0
            kind = "clustering (weak)" if d in clustered else "annotation"
            L.append(f"| {d} | {kind} | `{label}` | {','.join(map(str, seeds))} | {ari.mean():.3f} ± {sd:.3f} | "
                     f"{fmt['pca_kmeans']} | {fmt['leiden_tuned']} | {diff['pca_kmeans']} | "
                     f"{diff['leiden_tuned']} | {short} | {found} (K {runs[d][seeds[0]]['K']}) | "
                     f"{cpu:.0f} |")
    L += ["", "`clusters found < K`: runs whose labels use fewer than K clusters (the data hold K labelled types; "
          "not counted for `scgpcl_auto`, whose K is its estimate). "
          "CPU s: whole worker process, reading included, mean over seeds."]
    medoids = {d: m for d in sorted(_by_dataset(records, "scgpcl")) if (m := medoid_scores(d, records, labels_dir))}
    if medoids:
        L += ["", "## Seeds 0-5, and the medoid of three runs (`n_runs=3`)", "",
              "The defaults at seeds 0-5 with their labels kept (`benchmarks/runs/labels_unseen`, not in git). "
              "`medoid of 3`: among three runs, the one whose labels agree best with the other two, as "
              "`n_runs=3` / `--runs 3` picks it (`medoid.md`); mean ARI over the 20 triplets of the six seeds, "
              "and the two disjoint triplets. `agreement`: mean ARI between the six runs' labels.", "",
              "| dataset | one run, seeds 0-5 | SD | seeds 0-2 / 3-5 | medoid of 3 | medoid, seeds 0-2 / 3-5 | "
              "agreement |", "|---|---|---|---|---|---|---|"]
        for d, m in medoids.items():
            L.append(f"| {d} | {m['single']:.3f} | {np.sqrt(m['single_var']):.3f} | {m['halves'][0]:.3f} / "
                     f"{m['halves'][1]:.3f} | {m['medoid']:.3f} | {m['medoid_disjoint'][0]:.3f} / "
                     f"{m['medoid_disjoint'][1]:.3f} | {m['agreement']:.3f} |")
    text = "\n".join(L) + "\n"
    return text + ("\n" + notes.strip() + "\n" if notes.strip() else "")


def table(args) -> None:
    notes = NOTES.read_text() if NOTES.exists() else ""
    MD.write_text(build_table(harness.load_records(JSONL), notes))
    print(f"wrote {MD}")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download the pinned archives and write the .h5ad files")
    f.add_argument("--dir", default=str(OUT_DIR))
    f.set_defaults(func=fetch)
    t = sub.add_parser("table", help=f"write {MD.relative_to(HERE.parent)}")
    t.set_defaults(func=table)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
