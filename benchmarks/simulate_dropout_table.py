"""Dropout rate of scgpcl.simulate vs the R package Splatter, for the paper's 20 settings.

For every preset of the scGPCL paper (SimT3_1..5, SimT6_1..5, Sig1, Sig1b,
Sig2..4, Imb1..5) simulate with several seeds and compare the dropout rate
(and zero fractions, library sizes) with the values real Splatter 1.29.1 gave
(SPLATTER_MODEL.md section 6, copied below). If the reference files are
available, also run our count model on Splatter's own gene means, DE factors,
labels and library sizes (no gene-mean sampling noise).

Writes/replaces the section "## Dropout rate: ours vs Splatter" of
benchmarks/results/simulation.md (other sections are kept).

    python3 benchmarks/simulate_dropout_table.py [--seeds 0 1 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("scgpcl") is None:  # a checkout without installing
    sys.path.insert(0, str(REPO / "src"))

import anndata  # noqa: E402

from scgpcl.simulate import PRESETS, SplatParams, simulate  # noqa: E402
from scgpcl.simulate._splat import _sample_counts  # noqa: E402

HEADING = "## Dropout rate: ours vs Splatter"

# SPLATTER_MODEL.md section 6 (Splatter 1.29.1, R seed 0; unfiltered 5000 genes):
# dropout %, zeros true %, zeros counts %, mean lib true, mean lib counts
SPLATTER = {
    "SimT3_1": (22.10, 32.40, 47.34, 61311, 58413),
    "SimT3_2": (29.57, 32.40, 52.38, 61311, 57044),
    "SimT3_3": (38.11, 32.40, 58.16, 61311, 55229),
    "SimT3_4": (47.33, 32.40, 64.39, 61311, 52869),
    "SimT3_5": (56.65, 32.40, 70.69, 61311, 50020),
    "SimT6_1": (22.13, 32.43, 47.39, 61335, 58422),
    "SimT6_2": (29.55, 32.43, 52.40, 61335, 57070),
    "SimT6_3": (38.11, 32.43, 58.19, 61335, 55255),
    "SimT6_4": (47.36, 32.43, 64.43, 61335, 52920),
    "SimT6_5": (56.65, 32.43, 70.71, 61335, 50055),
    "Sig1": (22.10, 32.37, 47.32, 61338, 58428),
    "Sig1b": (22.38, 33.36, 48.28, 61327, 58459),
    "Sig2": (23.10, 35.26, 50.21, 61320, 58536),
    "Sig3": (24.77, 39.27, 54.31, 61303, 58714),
    "Sig4": (28.05, 47.13, 61.96, 61380, 59144),
    "Imb1": (21.89, 32.37, 47.17, 60986, 58070),
    "Imb2": (21.85, 32.38, 47.15, 61009, 58094),
    "Imb3": (21.88, 32.37, 47.17, 61013, 58101),
    "Imb4": (21.90, 32.35, 47.16, 60999, 58069),
    "Imb5": (21.88, 32.34, 47.14, 61020, 58099),
}


def _shared_sim() -> Path | None:
    env = os.environ.get("SCGPCL_SHARED")
    root = Path(env) if env else REPO.parent / "shared"
    sim = root / "data" / "sim"
    return sim if sim.is_dir() else None


def _ms(values, fmt="{:.2f}") -> str:
    v = np.asarray(values, dtype=float)
    sd = v.std(ddof=1) if v.size > 1 else float("nan")
    return f"{fmt.format(v.mean())} ± {fmt.format(sd)}"


def run_unconditional(seeds: list[int]) -> tuple[list[str], dict]:
    rows = []
    diffs = {}
    for name, (s_drop, s_zt, s_zc, _s_lt, s_lc) in SPLATTER.items():
        p = PRESETS[name]
        stats = []
        for seed in seeds:
            a = simulate(name, seed=seed, drop_zeros=False)
            n_entries = a.n_obs * a.n_vars
            t = a.layers["true_counts"]
            stats.append((a.uns["dropout_rate_unrounded"], 100 * (1 - t.nnz / n_entries),
                          100 * (1 - a.X.nnz / n_entries), t.sum() / a.n_obs,
                          a.X.sum() / a.n_obs))
        st = np.array(stats)
        diffs[name] = st[:, 0].mean() - s_drop
        rows.append(
            f"| {name} | {p.n_cells} | {p.n_groups} | {p.dropout_mid:g} | {p.de_fac_scale:g} "
            f"| **{s_drop:.2f}** | **{_ms(st[:, 0])}** | {diffs[name]:+.2f} "
            f"| {s_zt:.2f} | {_ms(st[:, 1])} | {s_zc:.2f} | {_ms(st[:, 2])} "
            f"| {s_lc:.0f} | {_ms(st[:, 4], '{:.0f}')} |"
        )
        print(rows[-1], flush=True)
    return rows, diffs


def run_conditional(seeds: list[int]) -> list[str]:
    sim = _shared_sim()
    if sim is None:
        return []
    rows = []
    for path in sorted(sim.glob("*.h5ad")):
        ref = anndata.read_h5ad(path)
        params = SplatParams.from_splatter(ref.uns["splatter"])
        groups = ref.obs["cell_type"].cat.codes.to_numpy()
        lib = ref.obs["ExpLibSize"].to_numpy()
        gene_mean = ref.var["GeneMean"].to_numpy()
        de_fac = np.stack([ref.var[f"DEFacGroup{k + 1}"].to_numpy()
                           for k in range(params.n_groups)])
        n_entries = params.n_cells * params.n_genes
        rates, zeros = [], []
        for seed in seeds:
            c = _sample_counts(params, seed, groups, lib, gene_mean, de_fac,
                               drop_zeros=False, true_counts=False)
            rates.append(c.rate)
            zeros.append(100 * (1 - c.X.nnz / n_entries))
        ref_zeros = 100 * (1 - ref.X.nnz / n_entries)
        rows.append(
            f"| {path.stem} | {ref.uns['dropout_rate_unrounded']:.3f} | {_ms(rates, '{:.3f}')} "
            f"| {np.mean(rates) - ref.uns['dropout_rate_unrounded']:+.3f} "
            f"| {ref_zeros:.3f} | {_ms(zeros, '{:.3f}')} |"
        )
        print(rows[-1], flush=True)
    return rows


def write_section(path: Path, text: str) -> None:
    old = path.read_text() if path.exists() else "# Simulation benchmarks\n"
    pattern = re.compile(rf"^{re.escape(HEADING)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = text.rstrip("\n") + "\n\n"
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old)
    else:
        new = old.rstrip("\n") + "\n\n" + text
    new = new.rstrip("\n") + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(new)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "simulation.md")
    args = ap.parse_args(argv)
    command = "python3 benchmarks/simulate_dropout_table.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    t0 = time.perf_counter()
    rows, diffs = run_unconditional(args.seeds)
    cond = run_conditional(args.seeds)
    elapsed = time.perf_counter() - t0
    d = np.array(list(diffs.values()))
    k = len(args.seeds)

    lines = [
        HEADING,
        "",
        f"Command: `{command.strip()}` (from the repository root; {elapsed:.0f} s on "
        f"{os.cpu_count()} CPU cores, {_dt.date.today().isoformat()}, Python "
        f"{platform.python_version()}, NumPy {np.__version__}).",
        "",
        "Splatter: the R package Splatter 1.29.1 (R seed 0), values from "
        "`SPLATTER_MODEL.md` section 6. Ours: `scgpcl.simulate.simulate(name, seed=s)`, "
        f"seeds {', '.join(map(str, args.seeds))}, mean ± sd over the {k} seeds. Dropout rate "
        "= % of non-zero true counts zeroed by dropout; zero fractions and library sizes "
        "on the unfiltered 5000-gene matrices (lib = mean observed counts per cell).",
        "",
        "| setting | cells | groups | dropout.mid | sigma | Splatter dropout % | ours dropout % "
        "| ours - Splatter | Splatter zeros true % | ours zeros true % | Splatter zeros "
        "counts % | ours zeros counts % | Splatter lib | ours lib |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Mean |ours - Splatter| dropout rate over the 20 settings: {np.abs(d).mean():.2f} pp, "
        f"largest {np.abs(d).max():.2f} pp ({max(diffs, key=lambda n: abs(diffs[n]))}). "
        "Splatter's value is itself one draw: the seed-to-seed sd of the dropout rate "
        "(measured separately over 10 seeds: 0.33 pp at dropout.mid 0, 0.47 pp at 2; it "
        "grows with sigma, see the ± column) is dominated by the 5000 gene-mean draws. "
        "Both Splatter's settings and ours use one seed for all settings, so the rows "
        "of a series share their gene means (common random numbers) and their "
        "deviations are correlated, not independent.",
        "",
    ]
    if cond:
        lines += [
            "### Count model on Splatter's own parameters",
            "",
            "Our steps 5-8 (compositional cell means, BCV, Poisson, dropout) run on the "
            "gene means, DE factors, group labels and expected library sizes stored in "
            "the reference files (`scgpcl.simulate._splat._sample_counts`), which removes "
            "the gene-mean sampling noise:",
            "",
            "| file | Splatter dropout % | ours dropout % | ours - Splatter | Splatter "
            "zeros counts % | ours zeros counts % |",
            "|---|---|---|---|---|---|",
            *cond,
            "",
        ]
    write_section(args.out, "\n".join(lines))
    print(f"wrote section {HEADING!r} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
