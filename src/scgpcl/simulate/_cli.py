"""``scgpcl simulate``: write a Splat-simulated dataset to an ``.h5ad`` file.

Wiring (done in ``scgpcl.cli``)::

    sub = parser.add_subparsers(dest="command")
    simulate_cli.add_parser(sub)        # registers "simulate", sets func=run
    ...
    return args.func(args)

``run`` raises :class:`scgpcl._errors.InputError` for bad input (the main CLI
turns it into a one-line error and a non-zero exit) and returns 0 on success.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from scgpcl._errors import InputError, OutputFailed
from scgpcl._fs import check_writable, output_target, warn_leftovers
from scgpcl._messages import counted, still_working

from ._names import PRESET_NAMES

logger = logging.getLogger(__name__)

__all__ = ["add_parser", "run", "params_from_args"]

# (option, SplatParams field, type, nargs, help starting with the Splatter name)
_PARAM_OPTIONS: list[tuple[str, str, type, Any, str]] = [
    ("--n-genes", "n_genes", int, None, "nGenes: number of genes"),
    ("--n-cells", "n_cells", int, None, "batchCells: number of cells (one batch)"),
    ("--group-prob", "group_prob", float, "+",
     "group.prob: one probability per group, must sum to 1 (e.g. 0.5 0.3 0.2)"),
    ("--de-prob", "de_prob", float, "+",
     "de.prob: probability a gene is DE in a group (1 or K values)"),
    ("--de-down-prob", "de_down_prob", float, "+", "de.downProb: probability a DE gene goes down"),
    ("--de-fac-loc", "de_fac_loc", float, "+", "de.facLoc: log-mean of the DE factor"),
    ("--de-fac-scale", "de_fac_scale", float, "+", "de.facScale: log-sd of the DE factor (sigma)"),
    ("--mean-shape", "mean_shape", float, None, "mean.shape: gamma shape of the gene means"),
    ("--mean-rate", "mean_rate", float, None, "mean.rate: gamma rate of the gene means"),
    ("--lib-loc", "lib_loc", float, None, "lib.loc: log-mean of the library size"),
    ("--lib-scale", "lib_scale", float, None, "lib.scale: log-sd of the library size"),
    ("--out-prob", "out_prob", float, None, "out.prob: probability a gene is an outlier"),
    ("--out-fac-loc", "out_fac_loc", float, None, "out.facLoc: log-mean of the outlier factor"),
    ("--out-fac-scale", "out_fac_scale", float, None, "out.facScale: log-sd of the outlier factor"),
    ("--bcv-common", "bcv_common", float, None, "bcv.common: common biological CV"),
    ("--bcv-df", "bcv_df", float, None, "bcv.df: chi-square d.f. of the BCV (inf: no scaling)"),
    ("--dropout-mid", "dropout_mid", float, None, "dropout.mid: midpoint of the dropout logistic"),
    ("--dropout-shape", "dropout_shape", float, None,
     "dropout.shape: slope of the dropout logistic"),
]


#: SplatParams' defaults, shown in --help without importing the simulator (tests check they match)
SPLAT_DEFAULTS: dict[str, Any] = {
    "n_genes": 10000, "n_cells": 100, "group_prob": (1.0,), "de_prob": 0.1, "de_down_prob": 0.5,
    "de_fac_loc": 0.1, "de_fac_scale": 0.4, "mean_shape": 0.6, "mean_rate": 0.3, "lib_loc": 11.0,
    "lib_scale": 0.2, "out_prob": 0.05, "out_fac_loc": 4.0, "out_fac_scale": 0.5, "bcv_common": 0.1,
    "bcv_df": 60.0, "dropout_mid": 0.0, "dropout_shape": -1.0,
}


def _shown(value: Any) -> str:
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``simulate`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate counts with Splatter's Splat 'groups' model",
        description=(
            "Simulate a cells x genes count matrix with a NumPy port of Splatter's "
            "Splat model (method 'groups', one batch) and write it as .h5ad: counts "
            "in X, true counts in layers['true_counts'], groups in obs['cell_type']. "
            "Start from --preset (a dataset of the scGPCL paper, or 'demo') or from "
            "Splatter's defaults; the parameter options override it."
        ),
    )
    # ~ expanded as a shell does before the command sees it (but not in a quoted or --opt=~/x path)
    p.add_argument("output", metavar="OUT.h5ad", type=os.path.expanduser, help="output file (written atomically)")
    p.add_argument("--preset", metavar="NAME", default=None,
                   help="start from a named preset: " + ", ".join(PRESET_NAMES))
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g = p.add_argument_group("Splat parameters (Splatter names; override the preset)")
    for opt, field, typ, nargs, helptext in _PARAM_OPTIONS:
        extra = " (one group: nothing to cluster)" if field == "group_prob" else ""
        kw: dict[str, Any] = dict(dest=field, type=typ, default=None,
                                  help=f"{helptext}; Splatter's default {_shown(SPLAT_DEFAULTS[field])}{extra}")
        if nargs:
            kw["nargs"] = nargs
        g.add_argument(opt, metavar=("P" if field == "group_prob" else "V") if nargs
                       else field.split("_")[-1].upper(), **kw)
    g.add_argument("--lib-norm", dest="lib_norm", action=argparse.BooleanOptionalAction,
                   default=None, help="lib.norm: normal instead of log-normal library sizes")
    g.add_argument("--dropout-type", dest="dropout_type", choices=["experiment", "none"],
                   default=None, help="dropout.type (default experiment)")
    o = p.add_argument_group("output")
    o.add_argument("--keep-zeros", action="store_true",
                   help="keep genes and cells with zero counts (default: drop them, "
                        "like the reference datasets)")
    o.add_argument("--no-true-counts", action="store_true",
                   help="do not store layers['true_counts'] (halves the file size)")
    o.add_argument("--chunk-size", type=int, default=None, metavar="CELLS",
                   help="cells generated per step (memory only; default: auto)")
    o.add_argument("--compression", choices=["gzip", "lzf", "none"], default="gzip",
                   help="h5ad compression (default gzip)")
    o.add_argument("--overwrite", action="store_true", help="replace OUT.h5ad if it exists")
    # as every other subcommand: scgpcl.cli.main reads both
    o.add_argument("--quiet", action="store_true", help="hide INFO messages; warnings and errors are still shown")
    o.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=run)
    return p


def params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The SplatParams overrides given on the command line (options not given are left out)."""
    overrides: dict[str, Any] = {}
    fields = [f for _, f, _, _, _ in _PARAM_OPTIONS] + ["lib_norm", "dropout_type"]
    for field in fields:
        value = getattr(args, field, None)
        if value is None:
            continue
        if isinstance(value, list) and field != "group_prob":
            value = value[0] if len(value) == 1 else tuple(value)
        elif isinstance(value, list):
            value = tuple(value)
        overrides[field] = value
    return overrides


def run(args: argparse.Namespace) -> int:
    """Simulate and write ``args.output`` atomically; returns 0 on success."""
    out = Path(args.output)
    if out.is_dir():
        raise InputError(f"{out} is a directory; give a file name such as {out / 'sim.h5ad'}")
    if out.suffix.lower() != ".h5ad":
        # the file is always h5ad; under another name 'scgpcl cluster' would read it as that format
        raise InputError(f"output '{out}' must end in .h5ad (the simulated data are written as .h5ad)")
    if out.exists() and not args.overwrite:
        raise InputError(f"{out} already exists; pass --overwrite to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory {parent} does not exist; create it first (mkdir -p '{parent}')")
    target = output_target(out)  # a link's target is the file replaced, as in 'cluster'
    check_writable(target.parent, "the simulated data")
    warn_leftovers(target)

    from ._presets import simulate

    overrides = params_from_args(args)
    with still_working("simulating"):  # 32 s at 100,000 cells, with nothing else to show
        adata = simulate(
            args.preset, seed=args.seed,
            chunk_size=args.chunk_size if args.chunk_size is not None else "auto",
            drop_zeros=not args.keep_zeros, true_counts=not args.no_true_counts, **overrides,
        )

    from ..data._io import write_h5ad_atomic

    # atomically, after checking the disk has room (h5py ends the process when it fills part-way)
    try:
        with still_working(f"writing {out}"):
            write_h5ad_atomic(adata, out, compression=None if args.compression == "none" else args.compression,
                              overwrite=args.overwrite)  # not over a file that appeared meanwhile, unless told
    except OSError as err:
        moved = isinstance(err, FileExistsError) and err.filename  # the data went beside a file that appeared
        raise OutputFailed(f"could not write '{out}' ({err.strerror or err})"
                           + ("" if moved else "; nothing was written")) from err
    counts = adata.obs["cell_type"].value_counts(sort=False)
    given = ", ".join(("--no-" if v is False else "--") + f.replace("_", "-") for f, v in overrides.items())
    settings = (f"preset {args.preset}" if args.preset else "Splatter's defaults") + (f" with {given}" if given else "")
    logger.info(
        "wrote %s: %d cells x %d genes, %s (%s), dropout rate %.2f %%, %s, seed %d",
        out, adata.n_obs, adata.n_vars, counted(len(counts), "group"), "/".join(str(c) for c in counts),
        adata.uns["dropout_rate"], settings, args.seed,
    )
    if len(counts) == 1:
        logger.warning("the simulated cells form one group, so there is nothing to cluster: give several "
                       "probabilities, e.g. --group-prob 0.5 0.3 0.2, or a --preset (%s)", ", ".join(PRESET_NAMES))
    return 0
