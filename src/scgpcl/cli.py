"""Command line: ``scgpcl cluster``, ``markers``, ``report``, ``demo``, ``simulate``.

Maps 1:1 onto the Python API. Bad input ends with a one-line error and a
non-zero exit code; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import signal
import sys
import time
import traceback
import typing
import warnings
from contextlib import contextmanager, suppress
from pathlib import Path

from . import _launch, _signals
from ._errors import OutputFailed, is_allocation_failure
from ._fs import (
    check_writable,
    exit_past_unclosable_hdf5,
    is_probe,
    is_zarr_store,
    output_target,
    replacement_mode,
    unclosable_hdf5_left,
    warn_leftovers,
)
from ._machine import sha256_of
from ._messages import cli_context, clip, counted, k_estimates, kept_run, per_run_k, still_working

EXIT_INPUT = 2
EXIT_FAILURE = 1

log = logging.getLogger("scgpcl")


def _add_training_options(p: argparse.ArgumentParser, preset: str = "default") -> None:
    """The method's options, generated from the config dataclasses (``scgpcl._config``).

    Names, choices, help and the defaults shown all come from there.
    """
    from ._config import PRESETS, faithful, option_fields, recommended

    g = p.add_argument_group("method options (defaults: the recommended settings; "
                             "'faithful' shown where the reference differs)")
    g.add_argument("--preset", choices=sorted(PRESETS), default=preset,
                   help="default: the recommended settings; faithful: the reference implementation's "
                        "(slower; run with 0.1.0's code it was less accurate than today's defaults on 3 of the 4 "
                        "Table 1 stand-ins and level on the fourth); fast: former name of default "
                        f"(default: {preset})")
    rec, ref = recommended(), faithful()
    for section, f, typ in option_fields():
        if not f.metadata.get("cli", True):
            continue
        default = getattr(getattr(rec, section), f.name)
        reference = getattr(getattr(ref, section), f.name)
        shown = f"default: {_show(default)}" + ("" if reference == default else f"; faithful: {_show(reference)}")
        help_text = f"{f.metadata.get('help', '')} ({shown})".replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        origin, args = typing.get_origin(typ), typing.get_args(typ)
        if typ is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif origin is typing.Literal:
            g.add_argument(flag, choices=list(args), default=None, help=help_text)
        elif origin is tuple:
            n = "+" if Ellipsis in args else len(args)
            g.add_argument(flag, type=args[0], nargs=n, default=None, metavar=args[0].__name__.upper(),
                           help=help_text)
        else:
            g.add_argument(flag, type=typ, default=None, metavar=typ.__name__.upper(), help=help_text)


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _overrides(args) -> dict:
    """The method options given on the command line, by config field name."""
    from ._config import option_fields

    return {f.name: (tuple(v) if isinstance(v, list) else v) for _, f, _ in option_fields()
            if f.metadata.get("cli", True) and (v := getattr(args, f.name, None)) is not None}


def _whole_number_or(word: str, meaning: str = "", minimum: int | None = None, why: str = ""):
    """An argparse type: a whole number (at least ``minimum``), or ``word`` (any case), which gives ``None``."""
    def parse(value: str) -> int | None:
        if value.strip().lower() == word:
            return None
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number or {word!r}{meaning}, got {value!r}") from None
        if minimum is not None and number < minimum:  # refused before the input is read
            raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum} or {word!r}{meaning}, "
                                             f"got {value!r}{why}")
        return number

    return parse


#: ``--n-clusters``: a whole number of at least 2, or ``auto`` (``None``: estimate K)
_n_clusters = _whole_number_or("auto", minimum=2, why=": scgpcl splits the cells into 2 or more clusters")
#: ``--random-state``: a whole number, or ``none`` (draw one; it is logged and recorded)
_seed = _whole_number_or("none", " (draw a seed)")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {value!r}")
    return n


def _draw_seed(args) -> None:
    """``--random-state none``: draw the seed once, here, and write it into the command line.

    The processes of ``--processes P`` get that command line, so all use the same seed (each would
    otherwise draw its own, and their batches would no longer split the cells); the recorded command
    repeats the run. Under torchrun every process parses its own arguments, so ``none`` is refused.
    """
    if args.random_state is not None:
        return
    from ._early_checks import resolve_seed
    from ._errors import InputError

    if _launch.env_world_size() > 1:
        raise InputError("--random-state none: each of the processes would draw a seed of its own; "
                         "pass the same seed (a whole number) to every process")
    args.random_state = resolve_seed(None)  # logs the seed
    args.argv = _argv_with_seed(list(args.argv), args.random_state)


def _argv_with_seed(argv: list[str], seed: int) -> list[str]:
    """``argv`` with the value ``none`` of ``--random-state`` / ``--seed`` (or an abbreviation) replaced by ``seed``."""
    def names_the_seed(option: str) -> bool:
        return len(option) > 3 and any(full.startswith(option) for full in ("--random-state", "--seed"))

    out = list(argv)
    for i, a in enumerate(argv):
        option, eq, value = a.partition("=")
        if eq and names_the_seed(option) and value.strip().lower() == "none":
            out[i] = f"{option}={seed}"
        elif not eq and names_the_seed(a) and i + 1 < len(argv) and argv[i + 1].strip().lower() == "none":
            out[i + 1] = str(seed)
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--random-state", "--seed", dest="random_state", type=_seed, default=0,
                   help="seed (0); 'none' draws one, which is logged and recorded in the output")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--quiet", action="store_true",
                   help="hide progress bars and INFO messages; warnings and errors are still shown")
    p.add_argument("--debug", action="store_true", help="show tracebacks")


class _Parser(argparse.ArgumentParser):
    """Argument errors in one line, with a pointer to ``--help``.

    argparse prints the whole usage first (50 lines for ``cluster``), which scrolls the error itself out of
    sight. Subcommands' parsers are of this class too.
    """

    def error(self, message: str) -> typing.NoReturn:
        if "required" in message and "--n-clusters" in message:
            message += " (the number of clusters K, or -k auto to estimate it)"
        self.exit(2, f"{self.prog}: error: {message}; see '{self.prog} --help'\n")


def _user_path(value: str) -> str:
    """A path option with ``~`` expanded, as a shell does before the command sees it but not in ``--opt=~/x``."""
    return os.path.expanduser(value)


def build_parser() -> argparse.ArgumentParser:
    """The ``scgpcl`` argument parser with its subcommands (``cluster``, ``markers``, ``report``, ``demo``, ``simulate``)."""
    # nothing heavy is imported until the arguments are parsed: --help, --version and usage
    # errors answer at once (tests/test_cli.py checks that torch, scanpy and anndata stay unloaded)
    from . import __version__

    parser = _Parser(prog="scgpcl", description="scGPCL single-cell clustering")
    parser.add_argument("--version", action="version", version=f"scgpcl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    c = sub.add_parser("cluster", help="cluster a count matrix and write an .h5ad with the results")
    c.add_argument("input", type=_user_path, help=".h5ad, AnnData .zarr store, 10x .h5, 10x matrix folder, CSV/TSV, or X/Y benchmark .h5")
    c.add_argument("output", type=_user_path, help="output .h5ad (written atomically)")
    c.add_argument("--n-clusters", "-k", type=_n_clusters, required=True, metavar="K",
                   help="number of clusters K, or 'auto' to estimate it")
    c.add_argument("--label-key", help="obs column with reference labels: report ARI/NMI/CA")
    c.add_argument("--batch-key", metavar="KEY",
                   help="obs column naming each cell's batch (sample, donor, run): not used for training (batch effects are "
                        "not removed), but clusters made mostly of one batch are named, with a warning, and "
                        "the report splits the clusters by batch")
    c.add_argument("--layer", help="layer with raw counts (default: X)")
    c.add_argument("--use-raw", action="store_true",
                   help="the raw counts are in .raw (.h5ad or .zarr); the output then holds them in X, with raw's genes")
    orientation = c.add_mutually_exclusive_group()
    orientation.add_argument("--genes-as-rows", dest="genes_as_rows", action="store_const", const=True,
                             help="text, .h5ad/.zarr or X/Y .h5 input has genes as rows (R/Seurat exports); "
                                  "it is transposed on reading")
    orientation.add_argument("--cells-as-rows", dest="genes_as_rows", action="store_const", const=False,
                             help="text or .h5ad/.zarr input has cells as rows. Default for text tables: guessed "
                                  "from the names and counts, with a warning when read as genes x cells, an error "
                                  "when unclear; AnnData input is taken as cells x genes unless it clearly looks "
                                  "the other way round (an error)")
    c.add_argument("--key-added", default="scgpcl", help="obs/obsm/uns key (scgpcl)")
    c.add_argument("--save-model", metavar="DIR", type=_user_path, help="also save the trained model to DIR")
    c.add_argument("--overwrite", action="store_true",
                   help="replace an existing output .h5ad (never the input file) or an earlier --report; "
                        "allow --save-model into a non-empty DIR")
    c.add_argument("--report", metavar="DIR", type=_user_path,
                   help="also write an HTML report with figures, metrics.json and clusters.tsv to DIR")
    _add_compression(c)
    c.add_argument("--runs", type=_positive_int, default=1, metavar="N",
                   help="train N models at seeds S, S+1, ... and keep the one that agrees best with the others "
                        "(N times the time; use 3 or more: two runs tie, and the first is kept); adds each cell's "
                        "agreement, obs[KEY_agreement] (default: 1)")
    _common(c)
    _launch.add_options(c)
    _add_training_options(c)

    m = sub.add_parser("markers", help="top marker genes per cluster of a clustered .h5ad (Wilcoxon, scanpy)")
    m.add_argument("input", type=_user_path, help=".h5ad written by 'scgpcl cluster' (or by scgpcl.tl.cluster)")
    m.add_argument("--key", default="scgpcl", help="obs column with the clusters (scgpcl)")
    m.add_argument("--n-genes", type=_positive_int, default=10, help="genes per cluster (10)")
    m.add_argument("--layer", help="layer with raw counts (default: the one the clustering used, else X)")
    m.add_argument("--output", "-o", type=_user_path, help="write the table to this file: tab-separated, or comma-separated if its "
                                          "name ends in .csv (default: print it, tab-separated)")
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing --output file (never the input .h5ad itself)")
    m.add_argument("--quiet", action="store_true", help="hide INFO messages; warnings and errors are still shown")
    m.add_argument("--debug", action="store_true", help="show tracebacks")

    r = sub.add_parser("report", help="write the HTML report of a clustered .h5ad (as 'cluster --report' does)")
    r.add_argument("input", type=_user_path, help=".h5ad written by 'scgpcl cluster' (or by scgpcl.tl.cluster)")
    r.add_argument("report", metavar="DIR", type=_user_path, help="report folder: index.html, metrics.json, clusters.tsv")
    r.add_argument("--key", default="scgpcl", help="key_added of the clustering (scgpcl)")
    r.add_argument("--label-key", help="obs column with reference labels (default: the one it was scored against)")
    r.add_argument("--batch-key", metavar="KEY",
                   help="obs column naming each cell's batch (default: the one given to 'cluster', if any)")
    r.add_argument("--name", help="dataset name in the title (default: the file name)")
    r.add_argument("--overwrite", action="store_true", help="replace an earlier report in DIR")
    r.add_argument("--quiet", action="store_true", help="hide INFO messages; warnings and errors are still shown")
    r.add_argument("--debug", action="store_true", help="show tracebacks")

    d = sub.add_parser("demo", help="cluster a built-in simulated dataset and print ARI/NMI/CA")
    d.add_argument("--output", type=_user_path, help="also write the clustered demo data to this .h5ad")
    d.add_argument("--report", metavar="DIR", type=_user_path, help="also write an HTML report to DIR")
    d.add_argument("--overwrite", action="store_true", help="replace an existing --output .h5ad or --report")
    _add_compression(d)
    _common(d)
    _add_training_options(d)

    try:
        from .simulate import _cli as sim_cli

        sim_cli.add_parser(sub)
    except ImportError:  # pragma: no cover - simulator is part of the package
        pass
    parser.commands = sub.choices  # name -> the subcommand's parser (its own errors point to its own --help)
    return parser


def _config_from_args(args):
    """The preset with the command line's options, checked: a bad value fails before the input is read."""
    from ._config import PRESETS
    from ._errors import InputError

    try:
        return PRESETS[args.preset]().override(**_overrides(args)).validate()
    except ValueError as err:  # as SCGPCL reports it, but before a large input's minutes of reading
        raise InputError(str(err)) from None


def _estimated(auto_k) -> str:
    """``estimated by consensus: eigengap 8, leiden_stability 9, leiden_modularity 11`` (or just ``estimated``)."""
    if not isinstance(auto_k, dict):
        return "estimated"
    each = auto_k.get("estimates") or {}
    parts = k_estimates(each) if len(each) > 1 else ""
    return f"estimated by {auto_k.get('method', '?')}" + (f": {parts}" if parts else "")


def _print_summary(adata, key: str, seconds: float, out=None, total: float | None = None,
                   first: str = "reading") -> None:
    """Print what the run did.

    ``seconds``: training and labelling; ``total``: the whole command (reading, writing and the report too;
    ``first`` names how the data came: ``"reading"``, or ``"simulating"`` for the demo).
    """
    info = adata.uns[key]
    p = info["params"]
    k = f"K={p['n_clusters']}" + (f" ({_estimated(info.get('auto_k'))})" if p.get("n_clusters_requested") == "auto"
                                  else "")
    print(f"scgpcl: {p['n_cells_used']} cells x {p['n_genes_used']} genes, {k}, "
          f"device {p['device']}{f' x {n} processes' if (n := p.get('processes', 1)) > 1 else ''}, {seconds:.1f} s")
    for stage, s in info["stages"].items():
        print(f"  {stage}: {counted(s['rounds'], 'round')} ({counted(s.get('steps', '?'), 'step')}), {s['stop_reason']} "
              f"({s['seconds']:.1f} s)")
    if "runs" in info:
        r = info["runs"]
        per_k = f", {text}" if (text := per_run_k(r.get("n_clusters"))) else ""
        print(f"  {len(r['seeds'])} runs (seeds {', '.join(map(str, r['seeds']))}{per_k}): kept seed "
              f"{r['chosen_seed']}, {kept_run(len(r['seeds']))}; mean ARI between runs {r['mean_ari']:.3f}")
    sizes = adata.obs[key].value_counts().sort_index()
    print("  cluster sizes: " + ", ".join(f"{c}:{n}" for c, n in sizes.items()))
    if (n_out := adata.n_obs - int(sizes.sum())) > 0:  # the warning said so, lines above: say it where one looks
        print(f"  not clustered: {n_out} of {adata.n_obs} cells (no counts in the genes used; NaN in obs['{key}'])")
    if "metrics" in info:
        m = info["metrics"]
        scored = m.get("n_cells")
        of = f" ({scored} of {p['n_cells_used']} cells labelled)" if scored is not None else ""
        print(f"  vs '{m['label_key']}'{of}: ARI {m['ARI']:.4f}  NMI {m['NMI']:.4f}  CA {m['CA']:.4f}  "
              f"F1 macro {m['F1_macro']:.4f}")
    for path in out or []:
        print(f"  wrote {path}")
    if total is not None:
        with_report = any(str(path).endswith("index.html") for path in out or [])
        steps = "training" + (", writing" if out else "") + (" and the report" if with_report else "")
        print(f"  {total:.1f} s in all: {first}, {steps}")


class ReportFailed(RuntimeError):
    """The results were written but the report was not."""


class InterruptedAfterWriting(KeyboardInterrupt):
    """Ctrl-C while writing the outputs, after some of them were complete."""

    def __init__(self, written: list[str]):
        super().__init__()
        self.written = list(written)


def _warn_unused_auto_k(args, n_clusters) -> None:
    """The auto-K options only matter with ``--n-clusters auto``; say so rather than ignore them silently."""
    if n_clusters is None:
        return
    given = [f"--{k.replace('_', '-')}" for k in ("auto_k_method", "auto_k_max") if getattr(args, k, None) is not None]
    if given:
        log.warning("%s ignored: K is fixed at %d; use --n-clusters auto to estimate K", " and ".join(given),
                    n_clusters)


def _add_compression(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compression", choices=["none", "gzip", "lzf"], default="none",
                   help="compression of the output .h5ad: none (the default, as anndata writes), gzip (a few "
                        "times smaller, slower to write) or lzf (in between)")


def _compression(args) -> str | None:
    """``--compression`` as :meth:`anndata.AnnData.write_h5ad` takes it (None: uncompressed)."""
    return None if args.compression == "none" else args.compression


def _write_outputs(adata, *, h5ad: Path | None, report: Path | None, key: str, label_key: str | None,
                   name: str, model=None, save_model: str | None = None, overwrite: bool = False,
                   compression: str | None = None) -> list[str]:
    """The results first (the .h5ad, atomically; the model), the report last.

    The report is built in a temporary folder and renamed into place, so it is
    either complete or absent. If it fails, the results already written are
    kept (a report problem should not cost the training run) and
    :class:`ReportFailed` names them. A Ctrl-C after the first output is
    complete raises :class:`InterruptedAfterWriting`, which names them too.
    After the report, the .h5ad is written again (atomically) with the report's
    UMAP; if that fails, a warning says so and the first .h5ad stays.
    """
    written: list[str] = []
    try:
        return _write_outputs_in_order(adata, written, h5ad=h5ad, report=report, key=key, label_key=label_key,
                                       name=name, model=model, save_model=save_model, overwrite=overwrite,
                                       compression=compression)
    except KeyboardInterrupt as err:
        if written:
            after = InterruptedAfterWriting(written)
            after.report_target = getattr(err, "report_target", None)
            raise after from err
        raise


def _write_outputs_in_order(adata, written: list[str], *, h5ad, report, key, label_key, name, model, save_model,
                            overwrite, compression) -> list[str]:
    from .data._io import write_h5ad_atomic

    # the results first: the report's UMAP and markers can take minutes on large data, and an interruption
    # or an out-of-memory kill there must not cost the training run
    moved = None  # the .h5ad's results went beside a file another run wrote meanwhile (FileExistsError)
    moved_report = None  # and the report beside a report another run wrote meanwhile
    if h5ad is not None:
        log.info("writing %s", h5ad)
        try:
            # without --overwrite, not over a file another run wrote meanwhile; minutes for millions of cells
            with _output_failure(h5ad, written), still_working(f"writing {h5ad}"):
                write_h5ad_atomic(adata, h5ad, overwrite=overwrite, compression=compression)
        except KeyboardInterrupt as err:  # a signal just after the file was placed: it is complete, say so
            written.extend(getattr(err, "written", None) or [])
            raise
        except OutputFailed as err:
            if not (isinstance(err.__cause__, FileExistsError) and err.__cause__.filename):
                _save_model_after_failure(err, model, save_model, overwrite)
                raise
            moved = (h5ad, err.__cause__.strerror)
            h5ad = Path(err.__cause__.filename)  # go on: the model and the report still belong to these results
        written.append(str(h5ad))
    if save_model:
        with _output_failure(save_model, written):
            model.save(save_model, overwrite=overwrite)
        written.append(str(save_model))
    if report is not None:
        from .pl import UMAP_N_NEIGHBORS, UMAP_RANDOM_STATE, umap_coordinates
        from .report import report_beside, write_report

        # store_results dropped any earlier UMAP under the key: the report's is computed here
        log.info("report: UMAP of %d cells (a few minutes at 100,000 cells)", adata.n_obs)
        with suppress(Exception):  # if it fails here it fails again in the report, which says so
            umap_coordinates(adata, key=key, n_neighbors=UMAP_N_NEIGHBORS, random_state=UMAP_RANDOM_STATE)
        log.info("report: marker genes, figures and tables")
        if not overwrite and report.is_dir() and any(report.iterdir()):  # checked empty at the start: another
            beside, why = report_beside(report)  # run's report came meanwhile (write_report would refuse it)
            moved_report = (report, why)
            report = beside
        try:
            write_report(adata, report, key=key, label_key=label_key, dataset_name=name, overwrite=overwrite)
        except KeyboardInterrupt as err:  # a signal just after the report was placed: it is complete, say so
            written.extend(getattr(err, "written", None) or [])
            err.report_target = str(report)  # where this run's report was going (the command's hint names it)
            raise
        except FileExistsError as err:  # another run's report appeared there meanwhile: ours went beside it
            if not err.filename:
                raise
            moved_report = (report, err.strerror)
            report = Path(err.filename)
        except Exception as err:
            kept = f"; written and kept: {', '.join(written)}" if written else ""
            raise ReportFailed(f"the report could not be written ({type(err).__name__}: {err}){kept}") from err
        written.append(str(report / "index.html"))
        if h5ad is not None and f"X_{key}_umap" in adata.obsm:
            # the report's UMAP goes into the .h5ad too (pl.umap and 'scgpcl report' reuse it): written again,
            # atomically, so an interruption here leaves the first, complete file
            log.info("adding the report's UMAP to %s", h5ad)
            try:
                with still_working(f"writing {h5ad}"):
                    write_h5ad_atomic(adata, h5ad, compression=compression)
            except Exception as err:  # every output is complete: say it, do not fail the run (Ctrl-C still stops)
                reason = (err.strerror if isinstance(err, OSError) else None) or err
                log.warning("the report's UMAP was not added to %s (%s: %s); the file holds the results without it",
                            h5ad, type(err).__name__, reason)
    if moved is not None or moved_report is not None:  # every output is written, some under another name
        failed = [m for m in (moved, moved_report) if m is not None]
        elsewhere = ({str(h5ad)} if moved else set()) | ({str(report / "index.html")} if moved_report else set())
        others = [w for w in written if w not in elsewhere]  # the messages name where those went
        raise OutputFailed("could not write " + " nor ".join(f"'{target}' ({why})" for target, why in failed)
                           + (f"; also written: {', '.join(others)}" if others else ""))
    return written


def _save_model_after_failure(failed: OutputFailed, model, save_model: str | None, overwrite: bool) -> None:
    """The .h5ad failed (``failed``): save the model all the same, so the training is not lost, and say so.

    The report is not attempted: its results are the .h5ad's. Changes ``failed``'s message to name the model
    when it was saved, or its own failure when it was not.
    """
    from ._errors import InputError

    if not save_model:
        return
    try:
        model.save(save_model, overwrite=overwrite)
    except (OSError, InputError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        failed.args = (f"{failed}; the model could not be saved either ('{save_model}': {reason})",)
        return
    failed.args = (f"{failed.what}; the model was saved to '{save_model}' (scgpcl.SCGPCL.load(folder, adata), "
                   "then predict(), gives the clusters)",)


@contextmanager
def _output_failure(path, written: list[str]):
    """An OS error while writing ``path`` becomes :class:`OutputFailed`, which names what was kept.

    So does an input error raised at this point: what was checked before training (the folder exists,
    the model folder is empty) changed during the run, e.g. another program removed or filled it. It
    is not a bad input (exit 2) but a failed output (exit 1), and the message says what was kept.
    """
    from ._errors import InputError

    try:
        yield
    except (OSError, InputError) as err:
        kept = f"written and kept: {', '.join(written)}" if written else "nothing was written"
        reason = (f"{type(err).__name__}: {err.strerror or err or 'no detail'}" if isinstance(err, OSError)
                  else f"{err}; it changed during the run")
        failed = OutputFailed(f"could not write '{path}' ({reason}); {kept}")
        failed.what = f"could not write '{path}' ({reason})"  # without what was kept, for a message that adds to it
        raise failed from err


def _check_h5ad_out(path: str, overwrite: bool, input_path: str | None = None) -> Path:
    """An output .h5ad path, checked before training; an existing file only with ``--overwrite``, never the input."""
    from ._errors import InputError

    out = Path(path)
    if input_path is not None and _same_file(out, Path(input_path)):
        raise InputError(f"output '{out}' is the input file; the run would replace the data it read. "
                         f"Give the output its own name, e.g. {out.with_name(out.stem + '_scgpcl.h5ad')}")
    if out.suffix.lower() != ".h5ad":
        other = (" (scgpcl writes AnnData's .h5ad; for a zarr store, convert it: "
                 "anndata.read_h5ad('out.h5ad').write_zarr('out.zarr'))") if out.suffix.lower() == ".zarr" else ""
        raise InputError(f"output '{out}' must end in .h5ad{other}")
    if not out.parent.exists():
        raise InputError(f"output folder '{out.parent}' does not exist; create it first (mkdir -p '{out.parent}')")
    if out.is_dir():
        raise InputError(f"output '{out}' is a folder; give a file name ending in .h5ad")
    if out.exists() and not overwrite:
        raise InputError(f"output '{out}' exists; pass --overwrite to replace it, or choose another name")
    target = output_target(out)  # the file a link points to is the one replaced
    check_writable(target.parent, "the output")
    if not os.environ.get(_launch.CHILD_ENV) and _launch.env_rank() == 0:  # --processes: the launcher says it
        warn_leftovers(target)
    return out


def _check_output_space(out: Path, adata, report: Path | None, compression: str | None = None) -> None:
    """Refuse, before training, an output the disk (or ``ulimit -f``) has no room for.

    The .h5ad holds the input plus the results (a 64-d representation and a label per cell); the
    report's folder adds a few MB. The write checks again with the exact data (the disk may fill
    during the run); this check only spares the hours of training when it is already too full.
    """
    from ._errors import InputError
    from ._fs import space_problem
    from .data._io import h5ad_bytes, space_needed

    need = space_needed(h5ad_bytes(adata) + adata.n_obs * (64 * 4 + 64), compression)  # as the write asks
    target = out.resolve() if out.is_symlink() else out
    problem = space_problem(target.parent, need, total=need + (5_000_000 if report is not None else 0))
    if problem:
        raise InputError(f"output '{out}' {problem}")


def _check_model_space(save_model: str | None, model) -> None:
    """Refuse, before training, a ``--save-model`` folder whose disk has no room for the model's weights."""
    if not save_model:
        return
    from ._errors import InputError

    problem = model.save_space_problem(save_model)
    if problem:
        raise InputError(f"--save-model '{save_model}': the model {problem}")


def _check_distinct_outputs(output: str, report: str | None, save_model: str | None,
                            input_path: str | None = None) -> None:
    """The output file, ``--report DIR`` and ``--save-model DIR``: different paths, none inside another.

    The report folder is written and replaced as a whole, and the model folder must be empty (or is written
    into with ``--overwrite``), so a path inside either would be refused after the training, or lost. None
    may be inside an input ``.zarr`` store: it would change the store read, and its recorded checksum.
    (Inside a 10x matrix folder, a new file changes none of the files read.)
    """
    from ._errors import InputError

    # compared resolved, named as given
    named = [(what, p, Path(p).resolve()) for what, p in
             (("the output", output), ("--report", report), ("--save-model", save_model)) if p]
    if input_path is not None and is_zarr_store(input_path):
        store = Path(input_path).resolve()
        for what, given, resolved in named:
            if store in resolved.parents:
                raise InputError(f"{what} '{given}' is inside the input store '{input_path}'; writing there "
                                 "would change the data the run reads. Give it a path outside the store")
    for i, a in enumerate(named):
        for b in named[i + 1:]:
            if a[2] == b[2]:
                raise InputError(f"{a[0]} and {b[0]} both name '{a[1]}'; give each its own path")
            for inner, outer in ((a, b), (b, a)):
                if outer[2] in inner[2].parents:
                    what = ("the output file" if outer[0] == "the output" else
                            f"the {outer[0]} folder, which scgpcl needs empty or its own")
                    raise InputError(f"{inner[0]} '{inner[1]}' is inside {what} '{outer[1]}'; give them separate "
                                     "paths")


def _check_model_dir(path: str | None, overwrite: bool) -> None:
    """``--save-model DIR``: a folder, empty unless --overwrite; checked before training."""
    from ._errors import InputError

    if not path:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"--save-model '{p}' is a file; give a folder to save the model in")
    if p.exists() and any(not is_probe(c) for c in p.iterdir()) and not overwrite:
        raise InputError(f"'{p}' exists and is not empty; pass --overwrite to replace it")
    if not p.exists() and not p.parent.exists():
        raise InputError(f"the folder '{p.parent}' for --save-model does not exist")
    check_writable(p if p.exists() else p.parent, "--save-model")


def _check_multi_process_options(config, processes: int = 1) -> None:
    """Options a run over several processes cannot honour, refused before any process group exists.

    ``processes``: ``--processes P``; with P > 1 the launching process refuses before it starts any.
    """
    from ._config import multi_process_problem
    from ._errors import InputError

    several = _launch.env_world_size() > 1 or processes > 1
    problem = multi_process_problem(config.train) if several else None
    if problem:
        raise InputError(problem)


def _run_cluster(args) -> int:
    from ._early_checks import check_keys, check_n_runs

    start = time.perf_counter()
    _draw_seed(args)  # before launching: every process gets the same drawn seed
    check_n_runs(args.runs, processes=args.processes)  # before launching the processes it refuses
    # what needs no data is checked before --processes P starts any process (and again in each of them)
    check_keys(args.key_added, args.label_key, args.batch_key)
    out = _check_h5ad_out(args.output, args.overwrite, args.input)
    _check_distinct_outputs(args.output, args.report, args.save_model, args.input)
    _warn_report_leftovers(args.report)
    config = _config_from_args(args)
    _check_multi_process_options(config, processes=args.processes)
    launched = _launch.launch_if_asked(args)  # --processes P: this command again in P processes
    if launched is not None:
        return launched
    from . import distributed  # only the processes that train import torch and scanpy
    from ._device import resolve_device
    from .data._checks import check_batch_key
    from .data._io import read_counts
    from .model import SCGPCL
    from .model._runs import train_runs
    from .tl import store_results
    from .tl._cluster import warn_replaced_column

    # the device before the data: a bad --device (or one nccl cannot share between the processes) costs no read
    distributed.check_process_devices(resolve_device(args.device), args.dist_backend)
    # the output folders too: a folder that cannot take the results fails before a large input is read
    _check_model_dir(args.save_model, args.overwrite)
    report = _report_dir(args)
    with still_working(f"reading {args.input}"):  # 40 s for a million cells, more for text or compressed files
        adata = read_counts(args.input, layer=args.layer, genes_as_rows=args.genes_as_rows,
                            label_key=args.label_key, use_raw=args.use_raw)  # also checks the label key
    check_batch_key(adata, args.batch_key, warn_missing=True)
    if args.use_raw and config.model.reconstruction != "mse":
        # the model would speak of X, and of a .raw it no longer sees (mse only warns: once, in the model)
        from .data._checks import check_counts

        check_counts(adata.X, reconstruction=config.model.reconstruction,
                     where=f"the .raw of '{Path(args.input).name}' (--use-raw)",
                     advice="Leave out --use-raw, and pick the layer holding the raw counts with --layer if the "
                            "file has one, or go back to the raw count matrix")
    warn_replaced_column(adata, args.key_added)
    checksum = sha256_of(args.input)  # of the file as read, before the hours of training
    _check_output_space(out, adata, report, _compression(args))
    _warn_unused_auto_k(args, args.n_clusters)
    t0 = time.perf_counter()
    def build(seed):
        model = SCGPCL(adata, args.n_clusters, layer=args.layer, config=config, random_state=seed, device=args.device)
        model.counts_from_raw = bool(args.use_raw)  # saved: SCGPCL.load reads the input's .raw again
        _check_model_space(args.save_model, model)  # the weights' size is known now, before any training
        return model

    if args.runs > 1:  # one process (checked above)
        model, runs = train_runs(build, args.random_state, args.runs, progress=not args.quiet)
    else:
        model, runs = build(args.random_state), None
        # the input is checked (identically in every process): only now do the processes wait for each other
        comm = distributed.init(backend=args.dist_backend, timeout=args.dist_timeout,
                                sync_batchnorm=args.sync_batchnorm, device=model.device)
        model.train(progress=not args.quiet)
        if not comm.is_main:  # every process takes part in the final embedding; rank 0 scores and writes
            model.predict()
            return 0
    store_results(adata, model, key_added=args.key_added, label_key=args.label_key, batch_key=args.batch_key,
                  runs=runs)
    _record_run(adata, args.key_added, args, input=str(Path(args.input).expanduser().resolve()), checksum=checksum)
    seconds = time.perf_counter() - t0
    written = _write_outputs(adata, h5ad=out, report=report, key=args.key_added, label_key=args.label_key,
                             name=Path(args.input).name, model=model, save_model=args.save_model,
                             overwrite=args.overwrite, compression=_compression(args))
    _print_summary(adata, args.key_added, seconds, written, total=time.perf_counter() - start)
    return 0


def _report_command(args, h5ad: str, report: str) -> str:
    """The ``scgpcl report`` command that makes the report ``cluster`` was asked for, from its written results."""
    # --opt=value: a value that starts with '-' is not taken for an option
    words = ["scgpcl", "report", h5ad, report, f"--name={Path(args.input).name}"]
    if args.key_added != "scgpcl":
        words.append(f"--key={args.key_added}")
    if args.label_key:
        words.append(f"--label-key={args.label_key}")
    if args.batch_key:
        words.append(f"--batch-key={args.batch_key}")
    if args.overwrite:
        words.append("--overwrite")
    return shlex.join(words)


def _record_run(adata, key: str, args, *, input: str, checksum: str | dict | None = None) -> None:
    """Keep what reproduces the run in ``uns[key]['params']``: the command line, its folder, the input and its SHA-256.

    The report shows them; ``tl.cluster`` records the CPU/GPU model itself.
    """
    params = adata.uns[key]["params"]
    params["command"] = shlex.join(["scgpcl", *getattr(args, "argv", [])])
    params["cwd"] = os.getcwd()
    params["input"] = input
    if checksum is not None:
        params["input_sha256"] = checksum


def _report_dir(args) -> Path | None:
    """Check ``--report DIR`` before training, so a bad folder fails in seconds, not after the run."""
    if not getattr(args, "report", None):
        return None
    from .report import check_report_dir

    return check_report_dir(args.report, overwrite=getattr(args, "overwrite", False))


def _warn_report_leftovers(report: str | None) -> None:
    """What a killed report left beside ``--report DIR`` (before ``--processes`` starts any: the launcher says it)."""
    if report and not os.environ.get(_launch.CHILD_ENV) and _launch.env_rank() == 0:
        out = Path(report)
        warn_leftovers(out.resolve() if out.is_symlink() else out, folders=True)


def _run_report(args) -> int:
    from .data._io import read_clustered
    from .report import check_report_dir, write_report

    out = check_report_dir(args.report, overwrite=args.overwrite)
    warn_leftovers(out, folders=True)
    with still_working(f"reading {args.input}"):
        adata = read_clustered(args.input)
    if args.batch_key is not None:  # cells without a batch are left out of its tables: say how many, once
        from .data._checks import check_batch_key

        check_batch_key(adata, args.batch_key, warn_missing=True)
    log.info("report of %d cells: UMAP (unless the file holds it), marker genes, figures and tables", adata.n_obs)
    try:
        write_report(adata, out, key=args.key, label_key=args.label_key, batch_key=args.batch_key,
                     dataset_name=args.name or Path(args.input).name, overwrite=args.overwrite)
    except FileExistsError as err:  # another report appeared in DIR meanwhile: kept, and this one went beside it
        if not err.filename:
            raise
        raise OutputFailed(f"could not write '{out}' ({err.strerror})") from err
    print(f"scgpcl: wrote {out / 'index.html'}")
    return 0


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


#: names of files that are not text tables (compressed, spreadsheets, binary formats)
_NOT_TEXT = frozenset({".xlsx", ".xls", ".ods", ".gz", ".bz2", ".xz", ".zip", ".zst", ".parquet", ".feather",
                       ".h5", ".hdf5", ".loom", ".zarr", ".rds", ".pkl", ".json", ".pdf", ".png"})


def _check_table_out(path: str, input_path: str, overwrite: bool) -> Path:
    """``markers --output``: checked before any work, like every other output.

    It never replaces its own input (not even with ``--overwrite``: the clustered
    .h5ad would become a small table), and replaces another existing file only
    with ``--overwrite``.
    """
    from ._errors import InputError

    out = Path(path).expanduser()
    if out.is_symlink():  # the table goes where the link points, as the other outputs do (not over the link)
        out = out.resolve()
    if _same_file(out, Path(input_path)):
        raise InputError(f"--output '{out}' is the input file; the marker table would replace the clustered data. "
                         f"Give the table its own name, e.g. {out.with_name(out.stem + '_markers.tsv')}")
    if out.suffix.lower() == ".h5ad":
        raise InputError(f"--output '{out}' ends in .h5ad, but the marker table is text; "
                         f"give a name ending in .tsv or .csv, e.g. {out.with_suffix('.tsv')}")
    if out.suffix.lower() in _NOT_TEXT:  # .xlsx, .gz got tab-separated text under their names
        raise InputError(f"--output '{out}': the marker table is written as text, tab-separated (.tsv, .txt) or "
                         f"comma-separated (.csv), not as {out.suffix}; e.g. {out.with_suffix('.tsv')}")
    if not out.parent.exists():
        raise InputError(f"output folder '{out.parent}' does not exist; create it first (mkdir -p '{out.parent}')")
    if out.is_dir():
        raise InputError(f"--output '{out}' is a folder; give a file name for the table, e.g. {out / 'markers.tsv'}")
    if out.exists() and not overwrite:
        raise InputError(f"--output '{out}' exists; pass --overwrite to replace it, or choose another name")
    check_writable(out.parent, "--output")
    return out


def _run_markers(args) -> int:
    import tempfile

    from ._errors import InputError
    from .data._io import read_clustered
    from .tl import markers

    out = _check_table_out(args.output, args.input, args.overwrite) if args.output else None
    with still_working(f"reading {args.input}"):
        adata = read_clustered(args.input)
    if args.layer is not None and args.layer not in adata.layers:
        available = ", ".join(map(repr, adata.layers.keys())) or "none"
        raise InputError(f"layer {args.layer!r} not found in '{args.input}'; available layers: {available}")
    n_clustered = int(adata.obs[args.key].notna().sum()) if args.key in adata.obs else adata.n_obs  # else: an error below
    log.info("marker genes: each cluster of obs[%r] against the other cells, %d cells (Wilcoxon test)", args.key,
             n_clustered)
    table = markers(adata, key=args.key, n_genes=args.n_genes, layer=args.layer)
    if out is None:  # "\n": a text-mode stdout on Windows makes it "\r\n" once (os.linesep would double it)
        sys.stdout.write(table.to_csv(sep="\t", index=False, float_format="%.6g", lineterminator="\n"))
        return 0
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:  # the lines end as pandas ends them
            table.to_csv(f, sep="," if out.suffix.lower() == ".csv" else "\t", index=False, float_format="%.6g")
        os.chmod(tmp, replacement_mode(out, 0o666))  # mkstemp makes it 0600: the replaced file's, or the usual
        _signals.raise_if_interrupted()
        os.replace(tmp, out)
    except BaseException:
        with _signals.deferred():
            Path(tmp).unlink(missing_ok=True)
        raise
    n = table["cluster"].nunique()
    print(f"scgpcl: top {args.n_genes} marker genes of {n} clusters (obs[{args.key!r}]); wrote {out}")
    return 0


def _run_demo(args) -> int:
    from . import tl
    from .simulate import simulate

    start = time.perf_counter()
    out = _check_h5ad_out(args.output, args.overwrite) if args.output else None
    if args.output:
        _check_distinct_outputs(args.output, args.report, None)
    report = _report_dir(args)  # before the simulation: a folder that cannot take the report fails at once
    _warn_report_leftovers(args.report)
    _draw_seed(args)
    adata = simulate("demo", seed=args.random_state)
    k = adata.obs["cell_type"].nunique()
    print(f"demo: Splat-simulated data, {adata.n_obs} cells x {adata.n_vars} genes, {k} groups "
          f"(dropout {adata.uns['dropout_rate']:.1f} %)")
    config = _config_from_args(args)
    _warn_unused_auto_k(args, k)
    t0 = time.perf_counter()
    tl.cluster(adata, n_clusters=k, label_key="cell_type", random_state=args.random_state, config=config,
               device=args.device, progress=not args.quiet)
    _record_run(adata, "scgpcl", args, input=f"simulated: scgpcl.simulate.simulate('demo', seed={args.random_state})")
    seconds = time.perf_counter() - t0
    written = _write_outputs(adata, h5ad=out, report=report, key="scgpcl", label_key="cell_type",
                             name="demo (Splat simulation)", overwrite=args.overwrite,
                             compression=_compression(args))
    _print_summary(adata, "scgpcl", seconds, written, total=time.perf_counter() - start, first="simulating")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``scgpcl`` command line and return its exit code.

    0: done; 2: bad input or usage, with a one-line message; 1: any other
    error (``--debug`` shows its traceback); 130 after Ctrl-C and 143 after
    SIGTERM, with what was written.

    Parameters
    ----------
    argv
        The arguments after ``scgpcl``; ``None``: ``sys.argv[1:]`` (the command itself, which ends the
        process at once after an .h5ad write that failed part-way: see :func:`exit_past_unclosable_hdf5`).
    """
    try:
        code = _main(argv)
    except BaseException:  # --debug lets the traceback out: print it here, where the exit can still be clean
        if argv is None and unclosable_hdf5_left():
            traceback.print_exc()
            exit_past_unclosable_hdf5(EXIT_FAILURE)
        raise
    return exit_past_unclosable_hdf5(code) if argv is None else code


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the subcommand's parser, whose --help lists the options it does know
        parser.commands.get(args.command, parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    args.argv = argv  # recorded with the results: the command line that reproduces the run
    if args.command is None:  # bare 'scgpcl': the overview of the commands, not an error
        parser.print_help()
        return 0
    quiet, debug = getattr(args, "quiet", False), getattr(args, "debug", False)
    # in a multi-process run (torchrun, --processes) rank 0 speaks for all: the others show only errors of their own
    rank = _launch.env_rank()
    level = logging.ERROR if rank > 0 else logging.WARNING if quiet else logging.INFO
    # scgpcl's own progress at INFO; other libraries only from WARNING up (anndata's INFO lines such as
    # "... storing 'feature_types' as categorical" reached a new user's terminal)
    logging.basicConfig(level=max(level, logging.WARNING), format="%(levelname)s: %(message)s")
    from ._errors import InputError

    handlers = {"cluster": _run_cluster, "markers": _run_markers, "report": _run_report, "demo": _run_demo}
    # SIGTERM (a batch scheduler's time limit) is handled like Ctrl-C: the writers remove their
    # temporary files, and the command ends with 143 (130 for Ctrl-C) and a message
    with _signals.handled(), cli_context(), _log_level(level), _warnings_logged(), _process_group_left():
        try:
            if args.command in handlers:
                code = handlers[args.command](args)
            else:
                from .simulate import _cli as sim_cli

                code = sim_cli.run(args)
        except InputError as e:
            if debug:
                raise
            if rank == 0:  # every process checked the same input: one message
                print(f"scgpcl: error: {e}", file=sys.stderr)
            else:
                _own_input_error(e, rank)
            return EXIT_INPUT
        except KeyboardInterrupt as e:
            _close_progress_bars()
            kept = getattr(e, "written", None)
            what = (f"already written and complete: {', '.join(kept)}; nothing else written" if kept
                    else "no output written")
            report = getattr(args, "report", None) if args.command == "cluster" else None
            h5ads = [k for k in kept or [] if k.lower().endswith(".h5ad")]
            if report and h5ads and not any(k.endswith("index.html") for k in kept):  # the training is kept:
                # the folder this run was writing to (beside another run's report, if one appeared meanwhile)
                target = getattr(e, "report_target", None) or str(report)
                what += f" (the report from it: {_report_command(args, h5ads[0], target)})"
            if rank == 0:
                print(f"scgpcl: {_interrupted_by(e)}; {what}", file=sys.stderr)
            return _interrupt_exit_code(e)
        except Exception as e:  # one line unless --debug
            _close_progress_bars()
            if debug:
                raise
            _print_failure(e, rank, args.command)
            return EXIT_FAILURE
        if _signals.received() is not None:  # a signal whose exception was dropped on the way; all outputs done
            print(f"scgpcl: {_interrupted_by(None)} after the outputs were complete", file=sys.stderr)
            return _interrupt_exit_code(None)
        return code


#: seconds another process waits before it reports a bad input itself (rank 0 normally reports it first)
_OWN_ERROR_DELAY = 10.0


def _own_input_error(e: Exception, rank: int) -> None:
    """A bad input in process ``rank`` > 0 of a multi-process run.

    Every process checks the same input, and rank 0 reports it; its launcher
    (torchrun, ``--processes``) then stops the others, this one included,
    within the delay. If it does not, the input was bad here only (a file
    missing on this machine) and this process says so itself.
    """
    try:
        time.sleep(_OWN_ERROR_DELAY)
    except KeyboardInterrupt:  # stopped by the launcher: rank 0 has said it
        return
    print(f"scgpcl (process {rank}): error: {e}", file=sys.stderr)


def _out_of_memory(e: BaseException) -> bool:
    """An allocation that failed: Python's MemoryError, or torch's CPU or CUDA allocator giving up.

    Follows the chain of causes, but not through errors that already say what happened: a lost process of
    a multi-process run (``DistributedError``), or a report or output that failed after the results were
    written (their messages name what was kept).
    """
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if _is_distributed_error(e) or isinstance(e, (ReportFailed, OutputFailed)):
            return False
        if is_allocation_failure(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _is_distributed_error(e: BaseException) -> bool:
    """A ``scgpcl.distributed.DistributedError`` (or subclass), told apart without importing torch."""
    return any(c.__name__ == "DistributedError" for c in type(e).__mro__)



def _print_failure(e: Exception, rank: int, command: str | None = None) -> None:
    """One line for an unexpected error; in a multi-process run, rank 0's, plus another process's own failure."""
    own = type(e).__name__ == "JoinFailed"  # this process could not join the group: every one says so for itself
    lost = _is_distributed_error(e) and not own  # another process failed or was stopped: it says why
    shared = lost or isinstance(e, FloatingPointError)  # every process raises these together
    if _out_of_memory(e):
        first = (str(e).strip().splitlines() or [""])[0]
        who = "scgpcl" if rank == 0 else f"scgpcl (process {rank})"
        advice = ("with many cells, lower --chunk-cells (the final pass over every cell) and --sample-cells (the "
                  "global steps), leave out --report (its UMAP builds a neighbour graph of every cell), or use a "
                  "machine with more memory; the user guide's Speed section lists the peaks measured"
                  if command in ("cluster", "demo") else "use a machine with more memory")
        print(f"{who}: error: out of memory ({type(e).__name__}: {clip(first)}). The run needs more memory than it "
              f"was given: {advice}", file=sys.stderr)
        return
    if isinstance(e, (OutputFailed, ReportFailed)):  # their messages say what failed and what was kept
        if rank == 0:
            print(f"scgpcl: error: {e}", file=sys.stderr)
        return
    more = "" if _is_distributed_error(e) else " (rerun with --debug for the traceback)"  # they say why already
    if rank == 0:
        print(f"scgpcl: error: {type(e).__name__}: {e}{more}", file=sys.stderr)
    elif not shared:
        print(f"scgpcl (process {rank}): error: {type(e).__name__}: {e}{more}", file=sys.stderr)


def _close_progress_bars() -> None:
    """End an interrupted stage's progress bar, so the message that follows starts on its own line."""
    schedule = sys.modules.get("scgpcl.train._schedule")
    if schedule is not None:
        schedule.Progress.close_open()


@contextmanager
def _process_group_left():
    """Leave the torch.distributed process group at the end (a process that does not can abort at exit)."""
    try:
        yield
    finally:
        dist_module = sys.modules.get("scgpcl.distributed")
        if dist_module is not None:
            dist_module.shutdown()


@contextmanager
def _log_level(level: int):
    """The ``scgpcl`` logger at ``level`` for the command, as it was afterwards (main() called from Python)."""
    logger = logging.getLogger("scgpcl")
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def _warnings_logged():
    """Show Python warnings as 'WARNING: <message>' lines through the scgpcl logger, like its own warnings.

    They then look alike, name no source line, and are shown with --quiet too
    (which hides only progress and INFO messages).
    """
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        log.warning("%s", message)

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown


def _terminated(e: BaseException | None) -> bool:
    while e is not None:
        if isinstance(e, _signals.Terminated):
            return True
        e = e.__cause__ or e.__context__
    return _signals.received() == signal.SIGTERM


def _interrupted_by(e: BaseException | None) -> str:
    return "terminated (SIGTERM)" if _terminated(e) else "interrupted"


def _interrupt_exit_code(e: BaseException | None) -> int:
    """128 + the signal number, as a shell reports a process ended by it: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + (signal.SIGTERM if _terminated(e) else signal.SIGINT)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
