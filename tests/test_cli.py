"""The command line: exit codes, one-line errors, outputs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import scgpcl
from scgpcl import InputError, tl
from scgpcl.cli import main

from helpers import QUICK, TINY, TINY_ARGS, _one_line_error, needs_zarr, toy_counts, write_10x_mtx

QUICK_ARGS = [
    "--lr", str(QUICK["lr"]), "--pretrain-rounds", str(QUICK["pretrain_rounds"]),
    "--warmup-rounds", str(QUICK["warmup_rounds"]), "--finetune-rounds", str(QUICK["finetune_rounds"]),
    "--min-round-steps", "1",
]


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "toy.h5ad"
    toy_counts().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def small_toy_file(tmp_path_factory, small_toy):
    path = tmp_path_factory.mktemp("review") / "toy.h5ad"
    small_toy.write_h5ad(path)
    return path


def test_cluster_writes_output_and_summary(toy_file, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--label-key", "cell_type", "--quiet",
                 "--save-model", str(tmp_path / "model"), *QUICK_ARGS])
    assert code == 0
    printed = capsys.readouterr().out
    assert "ARI" in printed and "pretrain:" in printed and "cluster sizes" in printed
    assert "not clustered" not in printed
    res = ad.read_h5ad(out)
    assert res.obs["scgpcl"].nunique() <= 3
    assert res.obsm["X_scgpcl"].shape[1] == 64
    assert res.uns["scgpcl"]["metrics"]["ARI"] > 0.8
    assert (tmp_path / "model" / "model.pt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["-k", "100000"], "more than the number of cells"),
        (["-k", "3", "--label-key", "nope"], "nope"),
        (["-k", "3", "--layer", "nope"], "nope"),
    ],
)
def test_bad_input_exit_code_and_no_output(toy_file, tmp_path, capsys, args, message):
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(toy_file), str(out), *args, "--quiet", *QUICK_ARGS])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scgpcl: error:") and message in err[0]
    assert not out.exists()


def test_missing_and_corrupt_input(tmp_path, capsys):
    assert main(["cluster", str(tmp_path / "none.h5ad"), str(tmp_path / "o.h5ad"), "-k", "3"]) == 2
    assert "none.h5ad" in capsys.readouterr().err
    bad = tmp_path / "bad.h5ad"
    bad.write_bytes(b"not an hdf5 file at all")
    assert main(["cluster", str(bad), str(tmp_path / "o.h5ad"), "-k", "3"]) == 2
    assert "bad.h5ad" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists()


def test_non_counts_refused(tmp_path, capsys):
    a = toy_counts()
    a.X = a.X.toarray() - 1.0
    path = tmp_path / "scaled.h5ad"
    a.write_h5ad(path)
    assert main(["cluster", str(path), str(tmp_path / "o.h5ad"), "-k", "3"]) == 2
    assert "negative" in capsys.readouterr().err


def test_debug_shows_traceback(toy_file, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "scgpcl", "cluster", str(toy_file), str(tmp_path / "o.h5ad"), "-k", "100000", "--debug"],
        capture_output=True, text=True,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def test_usage_error_exit_code(capsys):
    with pytest.raises(SystemExit) as e:
        main(["cluster"])
    assert e.value.code == 2


def test_output_must_be_h5ad(toy_file, tmp_path, capsys):
    assert main(["cluster", str(toy_file), str(tmp_path / "o.csv"), "-k", "3"]) == 2
    assert ".h5ad" in capsys.readouterr().err


def test_simulate_subcommand(tmp_path, capsys):
    out = tmp_path / "sim.h5ad"
    assert main(["simulate", str(out), "--preset", "demo", "--seed", "3"]) == 0
    a = ad.read_h5ad(out)
    assert a.obs["cell_type"].nunique() == 5 and "dropout_rate" in a.uns
    assert main(["simulate", str(tmp_path / "x.h5ad"), "--preset", "no_such_preset"]) == 2
    assert "no_such_preset" in capsys.readouterr().err


# ------------------------------------------------ --report, -k auto, markers
def test_every_subcommand_takes_quiet_and_debug(tmp_path):
    """--quiet and --debug are accepted by every subcommand (simulate refused them); --quiet hides the INFO line."""
    from scgpcl.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    for name, parser in sub.choices.items():
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--quiet", "--debug"} <= flags, name
    # in a process of its own: logging is configured once per process
    sim = [sys.executable, "-m", "scgpcl", "simulate", "--preset", "demo", "--n-cells", "60", "--n-genes", "50"]
    loud = subprocess.run([*sim, str(tmp_path / "loud.h5ad")], capture_output=True, text=True, timeout=120)
    assert loud.returncode == 0 and "INFO: wrote" in loud.stderr
    quiet = subprocess.run([*sim, str(tmp_path / "quiet.h5ad"), "--quiet"], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == 0 and quiet.stderr == "" and (tmp_path / "quiet.h5ad").exists()


def test_n_clusters_auto_is_parsed_to_none():
    from scgpcl.cli import build_parser

    args = build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "auto"])
    assert args.n_clusters is None
    assert build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "7"]).n_clusters == 7


def test_n_clusters_garbage_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["cluster", "in.h5ad", "out.h5ad", "-k", "many"])
    assert e.value.code == 2 and "'auto'" in capsys.readouterr().err


def test_k_below_2_is_refused_before_the_input_is_read(capsys):
    # the input does not exist: -k 1 is refused first, as a usage error, without minutes of reading a large file
    for k in ("1", "0", "-3"):
        with pytest.raises(SystemExit) as e:
            main(["cluster", "no_such_input.h5ad", "out.h5ad", "-k", k])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "at least 2" in err and "no_such_input" not in err, err


def test_a_bad_option_value_is_refused_before_the_input_is_read(capsys):
    assert main(["cluster", "no_such_input.h5ad", "out.h5ad", "-k", "3", "--batch-size", "0"]) == 2
    _one_line_error(capsys, "batch_size=0")


def test_cluster_with_report(toy_file, tmp_path, capsys):
    out, rep = tmp_path / "out.h5ad", tmp_path / "report"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--label-key", "cell_type", "--quiet",
                 "--report", str(rep), *QUICK_ARGS])
    assert code == 0
    assert sorted(p.name for p in rep.iterdir()) == ["clusters.tsv", "index.html", "metrics.json"]
    page = (rep / "index.html").read_text()
    assert "toy.h5ad" in page and page.count("data:image/png;base64,") == 5
    assert str(rep / "index.html") in capsys.readouterr().out
    res = ad.read_h5ad(out)
    assert res.obsm["X_scgpcl_umap"].shape == (res.n_obs, 2)  # the report's UMAP is kept in the output
    # the clustered file feeds 'scgpcl markers'
    assert main(["markers", str(out), "--n-genes", "2", "--quiet"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + 3 * 2


def test_the_scgpcl_logger_is_left_as_it_was(small_toy_file, tmp_path):
    # main() called from Python (a notebook) must not leave the package's logger at the command's level
    import logging

    logger = logging.getLogger("scgpcl")
    before = logger.level
    assert main(["cluster", str(small_toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", *TINY_ARGS]) == 0
    assert logger.level == before


def test_other_libraries_info_lines_stay_out_of_the_output(tmp_path):
    # a new user saw anndata's "... storing 'feature_types' as categorical" among the command's lines
    a = toy_counts(n_per=30)  # as a 10x matrix folder: its features' types come as strings
    folder = tmp_path / "mtx"
    write_10x_mtx(folder, a.X.toarray(), a.obs_names, a.var_names)
    # a process of its own: in this one pytest owns the logging set-up and anndata's handler its stderr
    done = subprocess.run([sys.executable, "-m", "scgpcl", "cluster", str(folder),
                           str(tmp_path / "out.h5ad"), "-k", "3", *QUICK_ARGS], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "as categorical" not in done.stderr + done.stdout
    assert "INFO: scGPCL: 90 cells" in done.stderr  # scgpcl's own progress is still shown


def test_the_summary_counts_the_cells_left_out(tmp_path, capsys):
    # the warning about cells without counts scrolls away above the training lines: the summary repeats it
    a = toy_counts(n_per=30)
    x = a.X.toarray()
    x[:4] = 0
    a.X = sp.csr_matrix(x)
    a.write_h5ad(tmp_path / "in.h5ad")
    assert main(["cluster", str(tmp_path / "in.h5ad"), str(tmp_path / "out.h5ad"), "-k", "3", "--quiet",
                 *QUICK_ARGS]) == 0
    assert "  not clustered: 4 of 90 cells (no counts in the genes used; NaN in obs['scgpcl'])" in \
        capsys.readouterr().out


def test_bad_report_folder_fails_before_training(toy_file, tmp_path, capsys):
    rep = tmp_path / "busy"
    rep.mkdir()
    (rep / "notes.txt").write_text("mine")
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--report", str(rep),
                 "--pretrain-rounds", "500"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an scgpcl report" in err[0]
    assert not out.exists() and sorted(p.name for p in rep.iterdir()) == ["notes.txt"]
    # before the input is read (a new user waited for a large file to be read, then was told): the folder's
    # error comes first although the input is no count matrix; the same for --save-model
    bad = tmp_path / "scaled.h5ad"
    ad.AnnData(np.full((20, 10), -1.0, dtype=np.float32)).write_h5ad(bad)
    assert main(["cluster", str(bad), str(out), "-k", "3", "--quiet", "--report", str(rep)]) == 2
    assert "not an scgpcl report" in capsys.readouterr().err
    assert main(["cluster", str(bad), str(out), "-k", "3", "--quiet", "--save-model", str(rep)]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_report_failure_leaves_no_output(toy_file, tmp_path, capsys, monkeypatch):
    import scgpcl

    def broken(*args, **kwargs):
        raise RuntimeError("no figure today")

    monkeypatch.setattr(scgpcl.pl, "cluster_sizes", broken)
    out, rep = tmp_path / "out.h5ad", tmp_path / "report"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--report", str(rep),
                 "--save-model", str(tmp_path / "model"), *QUICK_ARGS])
    err = capsys.readouterr().err
    assert code == 1 and "report could not be written" in err and "no figure today" in err
    # the training run is not lost: the results were written before the report,
    # completely, and the report folder was never half-made
    assert str(out) in err and str(tmp_path / "model") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out.h5ad"]
    assert "scgpcl" in ad.read_h5ad(out).obs


def test_layer_input_keeps_x_in_the_output(tmp_path, capsys):
    a = toy_counts()
    counts = a.X.copy()
    a.layers["counts"] = counts
    a.X = np.log1p(counts)  # what users often keep in X
    path, out = tmp_path / "layered.h5ad", tmp_path / "out.h5ad"
    a.write_h5ad(path)
    assert main(["cluster", str(path), str(out), "-k", "3", "--layer", "counts", "--quiet", *QUICK_ARGS]) == 0
    res = ad.read_h5ad(out)
    np.testing.assert_allclose(_dense(res.X), _dense(np.log1p(counts)), rtol=1e-6)
    np.testing.assert_array_equal(_dense(res.layers["counts"]), _dense(counts))
    assert res.uns["scgpcl"]["params"]["layer"] == "counts"
    assert res.obs["scgpcl"].notna().all()


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def test_bad_option_value_is_an_input_error(toy_file, tmp_path, capsys):
    code = main(["cluster", str(toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", "--batch-size", "0"])
    assert code == 2 and "batch_size=0 (a whole number >= 2)" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_output_paths_checked_before_training(toy_file, tmp_path, capsys):
    a_file = tmp_path / "model_file"
    a_file.write_text("x")
    code = main(["cluster", str(toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet",
                 "--save-model", str(a_file), *QUICK_ARGS])
    assert code == 2 and "is a file" in capsys.readouterr().err
    assert main(["demo", "--output", str(tmp_path / "no" / "o.h5ad"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a file where the output's folder should be: said so, not "no write permission"
    assert main(["cluster", str(toy_file), str(a_file / "o.h5ad"), "-k", "3", "--quiet", *QUICK_ARGS]) == 2
    assert f"cannot write the output into '{a_file}' (it is a file, not a folder)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_file"]


def test_report_subcommand(tmp_path, capsys):
    from helpers import clustered

    path = tmp_path / "clustered.h5ad"
    clustered().write_h5ad(path)
    rep = tmp_path / "rep"
    assert main(["report", str(path), str(rep), "--quiet"]) == 0
    assert str(rep / "index.html") in capsys.readouterr().out
    assert "clustered.h5ad" in (rep / "index.html").read_text()
    assert json.loads((rep / "metrics.json").read_text())["label_key"] == "cell_type"
    assert main(["report", str(path), str(tmp_path / "r2"), "--key", "nope", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'nope'" in err[0] and not (tmp_path / "r2").exists()


def test_cluster_auto_k_with_report(toy_file, tmp_path, capsys):
    pytest.importorskip("igraph")
    out, rep = tmp_path / "out.h5ad", tmp_path / "report"
    assert main(["cluster", str(toy_file), str(out), "-k", "auto", "--quiet", "--report", str(rep),
                 *QUICK_ARGS]) == 0
    printed = capsys.readouterr().out
    auto = ad.read_h5ad(out).uns["scgpcl"]["auto_k"]
    k, est = auto["k"], auto["estimates"]
    # the summary names the criterion and the three estimates it combined
    assert (f"K={k} (estimated by consensus: eigengap {est['eigengap']}, leiden_stability "
            f"{est['leiden_stability']}, leiden_modularity {est['leiden_modularity']})") in printed
    html = (rep / "index.html").read_text()
    assert f"K = {k} was estimated automatically (consensus, among K = 2 to " in html
    assert f"eigengap {est['eigengap']}" in html
    with pytest.raises(SystemExit) as exit_info:  # an unknown criterion is an argument error
        main(["cluster", str(toy_file), str(tmp_path / "o2.h5ad"), "-k", "auto", "--quiet",
              "--auto-k-method", "astrology", *QUICK_ARGS])
    assert exit_info.value.code == 2
    assert "astrology" in capsys.readouterr().err and not (tmp_path / "o2.h5ad").exists()


def test_gene_selection_seurat_from_cli(toy_file, tmp_path):
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--gene-selection", "seurat",
                 "--n-top-genes", "60", *QUICK_ARGS])
    assert code == 0
    res = ad.read_h5ad(out)
    params = res.uns["scgpcl"]["params"]
    flat = json.dumps(params, default=str)
    assert '"seurat"' in flat
    assert int(params["n_genes_used"]) in (60, 61, 62)  # scanpy keeps genes tied at the cut-off


def test_finetune_masking_flag_reaches_the_config():
    from scgpcl.cli import _config_from_args, build_parser

    parse = lambda *extra: _config_from_args(build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "3", *extra]))
    assert parse("--no-finetune-masking").train.finetune_masking is False
    assert parse("--preset", "faithful", "--finetune-masking").train.finetune_masking is True
    # not given: the preset's own value
    assert parse("--preset", "faithful").train.finetune_masking == scgpcl.faithful().train.finetune_masking
    assert parse("--preset", "fast").train.finetune_masking == scgpcl.fast().train.finetune_masking


def test_dec_init_flag_reaches_the_config(capsys):
    from scgpcl.cli import _config_from_args, build_parser

    parse = lambda *extra: _config_from_args(build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "3", *extra]))
    assert parse("--dec-init", "consensus").train.dec_init == "consensus"
    assert parse("--preset", "faithful").train.dec_init == scgpcl.faithful().train.dec_init
    with pytest.raises(SystemExit):
        parse("--dec-init", "random")
    assert "invalid choice" in capsys.readouterr().err


def test_max_neighbors_flag_reaches_the_config_and_is_checked():
    from scgpcl.cli import _config_from_args, build_parser

    def parse(*extra):
        return _config_from_args(build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "3", *extra]))

    assert parse("--max-neighbors", "50").sampler.max_neighbors == 50
    assert parse().sampler.max_neighbors == scgpcl.fast().sampler.max_neighbors
    with pytest.raises(ValueError, match="max_neighbors"):
        parse("--max-neighbors", "-1").validate()


def test_thin_counts_flag_reaches_the_config_and_is_checked():
    from scgpcl.cli import _config_from_args, build_parser

    def parse(*extra):
        return _config_from_args(build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "3", *extra]))

    assert parse("--thin-counts", "0.25").sampler.thin_counts == 0.25
    assert parse().sampler.thin_counts == 0.0
    for bad in ("1", "-0.1"):
        with pytest.raises(ValueError, match="thin_counts"):
            parse("--thin-counts", bad).validate()


def test_markers_output_that_is_a_folder_is_an_input_error(tmp_path, capsys):
    # '-o DIR' used to compute the markers and then fail on the rename with an IsADirectoryError (exit 1)
    from helpers import clustered

    path = tmp_path / "clustered.h5ad"
    clustered().write_h5ad(path)
    folder = tmp_path / "markers_dir"
    folder.mkdir()
    assert main(["markers", str(path), "-o", str(folder), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a folder" in err[0]
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["clustered.h5ad",
                                                                                            "markers_dir"]


def test_edge_weight_flag_reaches_the_config_and_is_checked():
    from scgpcl.cli import _config_from_args, build_parser

    def parse(*extra):
        return _config_from_args(build_parser().parse_args(["cluster", "in.h5ad", "out.h5ad", "-k", "3", *extra]))

    assert parse("--edge-weight", "lognorm").sampler.edge_weight == "lognorm"
    assert parse().sampler.edge_weight == scgpcl.fast().sampler.edge_weight == "none"
    with pytest.raises(ValueError, match="edge_weight"):
        scgpcl.fast().override(edge_weight="counts").validate()


def test_existing_output_needs_overwrite(toy_file, tmp_path, capsys):
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"an earlier result")
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", *QUICK_ARGS])
    err = capsys.readouterr().err
    assert code == 2 and "exists" in err and "--overwrite" in err
    assert out.read_bytes() == b"an earlier result"  # refused before training, file untouched
    assert main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--overwrite", *QUICK_ARGS]) == 0
    assert ad.read_h5ad(out).obs["scgpcl"].nunique() <= 3
    assert main(["demo", "--output", str(out), "--quiet"]) == 2
    assert "--overwrite" in capsys.readouterr().err


# ------------------------------------------------------ start-up (issue 26, item 6)
_HEAVY = ("torch", "scanpy", "anndata", "matplotlib", "sklearn", "pandas", "h5py")


def _modules_loaded_by(code: str) -> list[str]:
    script = f"import sys\n{code}\nprint(sorted(m for m in {_HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_help_version_and_usage_errors_import_nothing_heavy():
    # 'scgpcl --help' or '-k three' took 7-25 s: the whole package (torch, scanpy) was imported first
    assert _modules_loaded_by("import scgpcl.cli") == []
    assert _modules_loaded_by("import scgpcl; scgpcl.fast(); scgpcl.__version__") == []
    calls = [["--help"], ["cluster", "--help"], ["markers", "--help"], ["simulate", "--help"], ["--version"],
             ["cluster", "in.h5ad", "out.h5ad", "-k", "three"], []]
    code = ("from scgpcl.cli import main\n"
            f"for argv in {calls!r}:\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass")
    assert _modules_loaded_by(code) == []


def test_processes_refuse_a_bad_option_before_starting_any_and_without_torch(tmp_path):
    # '--processes 2 --kmeans-select central' took 14 s to refuse: the launcher imported torch and scanpy,
    # started two processes and waited for both to refuse
    out = tmp_path / "out.h5ad"
    for extra in (["--kmeans-select", "central"], ["--runs", "2"], ["--key-added", "a/b"],
                  ["--random-state", "none", "--kmeans-select", "central"]):  # the seed is drawn first
        argv = ["cluster", str(tmp_path / "in.h5ad"), str(out), "-k", "3", "--processes", "2", "--quiet", *extra]
        code = ("from scgpcl import _launch\n"
                "def no_launch(*a, **kw):\n    raise AssertionError('a process was started')\n"
                "_launch.run_local = no_launch\n"
                "from scgpcl.cli import main\n"
                f"assert main({argv!r}) == 2")
        assert _modules_loaded_by(code) == [], extra
    assert not out.exists()


def test_argument_errors_take_one_line(capsys):
    """argparse printed the whole usage (50 lines for cluster) before the error: a forgotten -k scrolled away."""
    for argv, expected in ((["cluster", "in.h5ad", "out.h5ad"], "required: --n-clusters/-k (the number of clusters "
                                                                  "K, or -k auto to estimate it)"),
                           (["cluster", "in.h5ad", "out.h5ad", "-k", "eleven"], "expected a whole number or 'auto'"),
                           (["clustr"], "invalid choice: 'clustr'"),
                           (["cluster", "in.h5ad", "out.h5ad", "-k", "3", "--foo"],
                            "scgpcl cluster: error: unrecognized arguments: --foo; see 'scgpcl cluster --help'")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and expected in err and "usage:" not in err, err
        assert err.endswith("--help'\n")


def test_version_and_bare_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"scgpcl {scgpcl.__version__}"
    assert main([]) == 0  # bare 'scgpcl' shows the commands instead of an error
    out = capsys.readouterr().out
    assert out.startswith("usage: scgpcl") and "cluster" in out and "markers" in out and "simulate" in out
    proc = subprocess.run([sys.executable, "-m", "scgpcl", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"scgpcl {scgpcl.__version__}"


def test_lazy_package_attributes_still_work():
    proc = subprocess.run([sys.executable, "-c", (
        "import scgpcl\n"
        "from scgpcl import SCGPCL, tl, read_counts\n"
        "from scgpcl.simulate import PRESETS, simulate\n"
        "assert SCGPCL is scgpcl.SCGPCL and tl.cluster is scgpcl.tl.cluster and callable(read_counts)\n"
        "assert callable(scgpcl.metrics.clustering_metrics) and callable(scgpcl.pl.umap)\n"
        "assert 'demo' in PRESETS and callable(simulate) and 'SCGPCL' in dir(scgpcl)\n"
        "assert scgpcl.fast().train.pretrain_rounds > 0\n"
        # the API page documents scgpcl.train.estimate_k and lloyd_kmeans; they raised AttributeError
        "assert callable(scgpcl.train.estimate_k) and callable(scgpcl.train.lloyd_kmeans)\n"
        "try:\n    scgpcl.nope\nexcept AttributeError:\n    pass\nelse:\n    raise SystemExit(1)\n"
    )], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr



def test_an_attribute_error_inside_a_dependency_import_is_not_hidden(tmp_path):
    """An AttributeError raised while a lazily imported submodule imports a dependency (an anndata built
    for NumPy 1 under NumPy 2: np.float_) reached the user as "cannot import name 'SCGPCL'", its cause lost."""
    (tmp_path / "anndata").mkdir()
    (tmp_path / "anndata" / "__init__.py").write_text("raise AttributeError(\"module 'numpy' has no attribute 'float_'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    for stmt, module in (("from scgpcl import SCGPCL", "model"), ("from scgpcl.simulate import simulate", "simulate._presets")):
        proc = subprocess.run([sys.executable, "-c", stmt], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 1
        assert (f"ImportError: importing scgpcl.{module} failed: AttributeError: module 'numpy' has no attribute "
                "'float_'") in proc.stderr, proc.stderr
        assert "cannot import name" not in proc.stderr


# ------------------------------------------------ signals during the final write (issue 26, item 3)
_SLOW_WRITE = '''
import pathlib, sys, time
import anndata
from scgpcl.cli import main

started, how = pathlib.Path(sys.argv[1]), sys.argv[2]


def wait():
    # short sleeps, not one sleep(60): the kernel may deliver the signal to a BLAS worker thread, and then
    # the main thread's handler runs only when it next executes bytecode (after a long sleep, too late)
    for _ in range(600):
        time.sleep(0.1)


def slow_write(self, filename, **kwargs):
    with open(filename, "wb") as handle:
        handle.write(b"half an h5ad")
    started.write_text(str(filename))
    if how == "finaliser":  # the signal lands in a __del__, where Python drops the exception ...
        class Finaliser:
            def __del__(self):
                wait()

        finaliser = Finaliser()
        del finaliser
        return  # ... and the write would go on and succeed
    wait()


anndata.AnnData.write_h5ad = slow_write
sys.exit(main(sys.argv[3:]))
'''


@pytest.mark.parametrize("signame, how", [("SIGTERM", "plain"), ("SIGINT", "plain"), ("SIGINT", "finaliser"),
                                          ("SIGTERM", "finaliser")])
def test_signal_during_the_final_write_leaves_nothing(tmp_path, signame, how):
    # SIGTERM (a scheduler's time limit) left a hidden .out.h5ad.<hex>.tmp; Ctrl-C in a finaliser printed
    # "Exception ignored ... KeyboardInterrupt" and exited 0
    import signal
    import time

    data = tmp_path / "in"
    data.mkdir()
    toy_counts(n_per=20, n_genes=60).write_h5ad(data / "toy.h5ad")
    work = tmp_path / "work"
    work.mkdir()
    started = tmp_path / "started"
    script = tmp_path / "run.py"
    script.write_text(_SLOW_WRITE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(started), how, "cluster", str(data / "toy.h5ad"), str(work / "out.h5ad"),
         "-k", "3", "--quiet", "--pretrain-rounds", "3", "--warmup-rounds", "1", "--finetune-rounds", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 240
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.communicate()[1]
    assert len(list(work.iterdir())) == 1  # the temporary file, mid-write
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == (143 if signame == "SIGTERM" else 130), err
    assert err.strip().splitlines()[-1] == (
        f"scgpcl: {'terminated (SIGTERM)' if signame == 'SIGTERM' else 'interrupted'}; no output written")
    assert "Exception ignored" not in err and "Traceback" not in err
    assert list(work.iterdir()) == []  # no output, no hidden temporary file


def test_sigterm_while_simulating_leaves_nothing(tmp_path):
    import signal
    import time

    started, script = tmp_path / "started", tmp_path / "run.py"
    script.write_text(_SLOW_WRITE)
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(started), "plain", "simulate", str(work / "sim.h5ad"),
                             "--n-cells", "30", "--n-genes", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not started.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM); no output written" in err, err
    assert list(work.iterdir()) == []


# ------------------------------------------------ --quiet hides progress and INFO, never warnings (item 4)
def test_quiet_keeps_warnings_that_change_the_data(tmp_path, caplog):
    a = toy_counts(n_per=10, n_genes=40)
    a.var_names = ["g0"] * 2 + [f"g{j}" for j in range(2, a.n_vars)]  # a duplicated gene name
    path = tmp_path / "dup.h5ad"
    a.write_h5ad(path)
    with caplog.at_level("INFO", logger="scgpcl"):
        assert main(["cluster", str(path), str(tmp_path / "o.h5ad"), "-k", "100000", "--quiet"]) == 2
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("renamed 1 duplicated gene names" in m and "'g0' -> 'g0-1'" in m for m in warned), warned
    for command in ("cluster", "demo", "markers", "report"):
        text = " ".join(build_parser_help(command).split())
        assert "warnings and errors are still shown" in text, command


def build_parser_help(command: str) -> str:
    from scgpcl.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    return sub.choices[command].format_help()


def test_report_shows_the_command_input_checksum_and_cpu(toy_file, tmp_path, monkeypatch):
    import hashlib
    import html

    from scgpcl._machine import cpu_model

    monkeypatch.chdir(tmp_path)
    argv = ["cluster", str(toy_file), "out.h5ad", "-k", "3", "--quiet", "--report", "rep", *QUICK_ARGS]
    assert main(argv) == 0
    params = ad.read_h5ad(tmp_path / "out.h5ad").uns["scgpcl"]["params"]
    digest = hashlib.sha256(toy_file.read_bytes()).hexdigest()
    assert params["command"] == "scgpcl " + " ".join(argv) and params["cwd"] == str(tmp_path)
    assert params["input"] == str(toy_file.resolve()) and params["input_sha256"] == digest
    assert params["cpu"] == cpu_model()
    page = html.unescape((tmp_path / "rep" / "index.html").read_text())
    assert f"cd {tmp_path}\nscgpcl {' '.join(argv)}" in page
    assert digest in page and cpu_model() in page
    # the command is refused as it stands (its outputs exist); the page says how to run it again
    assert "add <code>--overwrite</code> or name other output paths" in " ".join(page.split())
    assert main(argv) == 2
    assert main([*argv, "--overwrite"]) == 0
    # 'scgpcl report' of the clustered file shows the same record
    assert main(["report", "out.h5ad", "rep2", "--quiet"]) == 0
    again = html.unescape((tmp_path / "rep2" / "index.html").read_text())
    assert f"scgpcl {' '.join(argv)}" in again and digest in again


def test_every_training_option_has_help_and_its_real_default():
    """Generated from the config fields: every method option has a help text ending with the recommended
    default, and the faithful preset's value where it differs."""
    import argparse

    from scgpcl._config import option_fields, recommended
    from scgpcl.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    actions = {s: a for a in sub.choices["cluster"]._actions for s in a.option_strings}
    rec = recommended()
    for section, f, _ in option_fields():
        if not f.metadata.get("cli", True):
            continue
        action = actions["--" + f.name.replace("_", "-")]
        assert action.help and len(action.help) > 30, f.name
        value = getattr(getattr(rec, section), f.name)
        shown = " ".join(map(str, value)) if isinstance(value, tuple) else (
            f"{value:g}" if isinstance(value, float) else str(value))
        assert f"(default: {shown}" in action.help, (f.name, action.help)
    assert "faithful: 0.0001" in actions["--lr"].help  # the reference's value where it differs


def test_key_added_with_a_slash_is_refused_before_training(small_toy_file, small_toy, tmp_path, capsys):
    # '--key-added a/b' used to train, exit 0 and write an .h5ad that anndata could not read back
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(small_toy_file), str(out), "-k", "3", "--key-added", "a/b", "--quiet", *TINY_ARGS])
    assert code == 2
    _one_line_error(capsys, "'/'", "--key-added")
    assert not out.exists()
    with pytest.raises(InputError, match="'/'"):
        tl.cluster(small_toy.copy(), n_clusters=3, key_added="a/b", progress=False, **TINY)


def test_unwritable_output_folders_are_refused_before_training(small_toy_file, tmp_path, locked, capsys):
    # the PermissionError used to come only after training, naming a hidden temporary file
    code = main(["cluster", str(small_toy_file), str(locked / "out.h5ad"), "-k", "3", "--quiet", *TINY_ARGS])
    assert code == 2
    _one_line_error(capsys, str(locked), "permission")

    code = main(["cluster", str(small_toy_file), str(tmp_path / "out.h5ad"), "-k", "3", "--quiet",
                 "--save-model", str(locked / "model"), *TINY_ARGS])
    assert code == 2
    _one_line_error(capsys, str(locked), "permission")
    assert not (tmp_path / "out.h5ad").exists()


def test_auto_k_options_with_a_fixed_k_are_reported_and_scored_cells_counted(small_toy, tmp_path, capsys, caplog):
    # '--auto-k-method' with '-k 3' was silently ignored; the metrics line did not say how many cells had a label
    a = small_toy.copy()
    cell_type = a.obs["cell_type"].astype(object)
    cell_type.iloc[:7] = None  # 7 cells without a reference label
    a.obs["cell_type"] = pd.Categorical(cell_type)
    path = tmp_path / "partial.h5ad"
    a.write_h5ad(path)
    out = tmp_path / "out.h5ad"
    with caplog.at_level("WARNING", logger="scgpcl"):
        code = main(["cluster", str(path), str(out), "-k", "3", "--auto-k-method", "eigengap", "--label-key",
                     "cell_type", "--quiet", *TINY_ARGS])
    assert code == 0
    assert any("--auto-k-method ignored" in r.getMessage() and "--n-clusters auto" in r.getMessage()
               for r in caplog.records), [r.getMessage() for r in caplog.records]
    assert f"({a.n_obs - 7} of {a.n_obs} cells labelled)" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["h5ad", "umap", "report"])
def test_ctrl_c_while_writing_says_what_was_written(small_toy_file, tmp_path, monkeypatch, capsys, where):
    # a Ctrl-C during the report said "no output written" although the .h5ad was complete on disk; and the
    # report's UMAP (minutes on large data) ran before the .h5ad and the model were written, so a Ctrl-C or a
    # time limit there lost the training run
    import scgpcl.data._io as io
    import scgpcl.pl as pl
    import scgpcl.report as report

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    target = {"h5ad": (io, "write_h5ad_atomic"), "umap": (pl, "umap_coordinates"), "report": (report, "write_report")}
    monkeypatch.setattr(*target[where], interrupt)
    out, rep, model = tmp_path / "out.h5ad", tmp_path / "rep", tmp_path / "model"
    code = main(["cluster", str(small_toy_file), str(out), "-k", "3", "--report", str(rep), "--save-model", str(model),
                 "--quiet", *TINY_ARGS])
    assert code == 130
    err = capsys.readouterr().err.strip()
    if where == "h5ad":
        assert err == "scgpcl: interrupted; no output written" and not out.exists() and not model.exists()
    else:
        assert "already written and complete" in err and str(out) in err and str(model) in err
        assert "scgpcl" in ad.read_h5ad(out).obs and (model / "config.json").exists()
        assert not (rep / "index.html").exists()
        # a batch job stopped by its time limit here: how to get the report without training again
        assert err.endswith(f"(the report from it: scgpcl report {out} {rep} --name={small_toy_file.name})")
    if where == "report":  # the command given works as printed, with the run's key and an earlier report in DIR
        (rep / "index.html").parent.mkdir(exist_ok=True)
        (rep / "index.html").write_text("an earlier report")
        out2 = tmp_path / "out2.h5ad"
        assert main(["cluster", str(small_toy_file), str(out2), "-k", "3", "--report", str(rep), "--quiet",
                     "--key-added", "mine", "--overwrite", *TINY_ARGS]) == 130
        hint = capsys.readouterr().err.strip().split("(the report from it: ")[1].rstrip(")")
        monkeypatch.undo()
        assert hint.startswith("scgpcl report ") and "--key=mine" in hint and hint.endswith("--overwrite")
        import shlex

        assert main(shlex.split(hint)[1:]) == 0 and "the report from it" not in capsys.readouterr().err
        assert "an earlier report" not in (rep / "index.html").read_text()


def test_the_report_umap_is_added_to_the_output_after_the_report(small_toy_file, tmp_path, capsys):
    """The .h5ad is written before the report and again with the report's UMAP; the summary gives the whole
    command's time besides the training's."""
    out, rep = tmp_path / "out.h5ad", tmp_path / "rep"
    assert main(["cluster", str(small_toy_file), str(out), "-k", "3", "--report", str(rep), *TINY_ARGS]) == 0
    assert ad.read_h5ad(out).obsm["X_scgpcl_umap"].shape[1] == 2 and (rep / "index.html").exists()
    printed = capsys.readouterr()
    assert "s in all: reading, training, writing and the report" in printed.out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_compression_applies_to_both_writes_of_the_output(small_toy_file, tmp_path):
    """--compression compresses the .h5ad, on its first write and when it is written again with the report's
    UMAP, also from the demo; the default writes it uncompressed, as anndata does."""
    import h5py

    out, rep = tmp_path / "out.h5ad", tmp_path / "rep"
    assert main(["cluster", str(small_toy_file), str(out), "-k", "3", "--report", str(rep), "--compression", "gzip",
                 "--quiet", *TINY_ARGS]) == 0
    with h5py.File(out) as f:
        assert f["X/data"].compression == "gzip" and f["obsm/X_scgpcl"].compression == "gzip"
        assert f["obsm/X_scgpcl_umap"].compression == "gzip"  # the second write, after the report
    lzf = tmp_path / "lzf.h5ad"  # no report: the first write alone
    assert main(["cluster", str(small_toy_file), str(lzf), "-k", "3", "--compression", "lzf", "--quiet",
                 *TINY_ARGS]) == 0
    with h5py.File(lzf) as f:
        assert f["X/data"].compression == "lzf" and f["obsm/X_scgpcl"].compression == "lzf"
    plain = tmp_path / "plain.h5ad"
    assert main(["cluster", str(small_toy_file), str(plain), "-k", "3", "--quiet", *TINY_ARGS]) == 0
    with h5py.File(plain) as f:
        assert f["X/data"].compression is None and f["obsm/X_scgpcl"].compression is None
    assert np.array_equal(ad.read_h5ad(out).obs["scgpcl"], ad.read_h5ad(plain).obs["scgpcl"])
    demo = tmp_path / "demo.h5ad"
    assert main(["demo", "--output", str(demo), "--compression", "gzip", "--quiet", *TINY_ARGS]) == 0
    with h5py.File(demo) as f:
        assert f["X/data"].compression == "gzip"


# ------------------------------------------------ what a new user hit (audit of 2026-12-05)
def test_the_output_is_never_the_input(toy_file, tmp_path, capsys):
    # 'cluster in.h5ad in.h5ad --overwrite' replaced the data it had read ('markers' already refused this)
    import shutil

    src = tmp_path / "data.h5ad"
    shutil.copy(toy_file, src)
    before = src.read_bytes()
    code = main(["cluster", str(src), str(src), "-k", "3", "--overwrite", "--quiet", *QUICK_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is the input file" in err[0] and "data_scgpcl.h5ad" in err[0]
    assert src.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["data.h5ad"]


def test_an_earlier_report_is_replaced_only_with_overwrite(tmp_path, capsys):
    from helpers import clustered

    path, rep = tmp_path / "clustered.h5ad", tmp_path / "rep"
    clustered().write_h5ad(path)
    assert main(["report", str(path), str(rep), "--quiet"]) == 0
    before = (rep / "index.html").read_bytes()
    capsys.readouterr()
    assert main(["report", str(path), str(rep), "--quiet", "--name", "second run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds an earlier report; pass --overwrite" in err[0]
    assert (rep / "index.html").read_bytes() == before
    # 'cluster --report' refuses it too, before training: nothing is written
    out = tmp_path / "out.h5ad"
    assert main(["cluster", str(path), str(out), "-k", "3", "--quiet", "--report", str(rep), *QUICK_ARGS]) == 2
    assert "holds an earlier report" in capsys.readouterr().err and not out.exists()
    assert main(["report", str(path), str(rep), "--quiet", "--name", "second run", "--overwrite"]) == 0
    assert "second run" in (rep / "index.html").read_text()


def test_a_folder_that_refuses_new_files_is_caught_before_training(small_toy_file, tmp_path, monkeypatch, capsys):
    # as root, os.access says every folder is writable; /sys then failed after training
    import tempfile

    def refused(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    code = main(["cluster", str(small_toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"cannot write the output into '{tmp_path}' (creating a file there failed: Read-only file system)" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_a_write_that_fails_after_training_says_what_was_kept(small_toy_file, tmp_path, monkeypatch, capsys):
    import torch

    import scgpcl.data._io as io

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    out, model_dir = tmp_path / "o.h5ad", tmp_path / "model"
    with monkeypatch.context() as m:
        m.setattr(io, "write_h5ad_atomic", refused)
        code = main(["cluster", str(small_toy_file), str(out), "-k", "3", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"could not write '{out}' (PermissionError: Permission denied); nothing was written" in err[0]
    with monkeypatch.context() as m:  # the model folder fails after the .h5ad is complete
        m.setattr(torch, "save", refused)
        code = main(["cluster", str(small_toy_file), str(out), "-k", "3", "--quiet", "--save-model", str(model_dir),
                     *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"could not write '{model_dir}'" in err[0] and f"written and kept: {out}" in err[0]
    assert ad.read_h5ad(out).n_obs > 0 and not model_dir.exists()


def test_random_state_none_draws_a_seed_and_records_it_with_the_thread_count_and_versions(small_toy_file, tmp_path, capsys):
    import torch

    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(small_toy_file), str(out), "-k", "3", "--quiet", "--random-state", "none",
                 *TINY_ARGS]) == 0
    params = ad.read_h5ad(out).uns["scgpcl"]["params"]
    assert 0 <= int(params["random_state"]) < 2**32
    assert f"--random-state {int(params['random_state'])}" in params["command"]  # the command repeats the run
    assert int(params["torch_threads"]) == torch.get_num_threads()
    # and the versions it ran under: another torch or scikit-learn gives other numbers for the same seed
    import sklearn

    versions = params["versions"]
    assert versions["torch"] == torch.__version__ and versions["scikit-learn"] == sklearn.__version__
    assert versions["python"] == platform.python_version() and "scgpcl" in versions
    # a development checkout also names its commit ("0.1.0" names no one version of it); a wheel does not
    root = Path(scgpcl.__file__).resolve().parents[2]
    if (root / ".git").exists() and shutil.which("git"):
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
        assert f"(git {head}" in versions["scgpcl"]
    else:
        assert "(git " not in versions["scgpcl"]
    code = main(["cluster", str(small_toy_file), str(tmp_path / "p.h5ad"), "-k", "3", "--quiet",
                 "--random-state", "-1", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--random-state -1 is not a seed" in err[-1] and "or none to draw one" in err[-1]


def test_an_interrupted_stage_ends_its_progress_bar_before_the_message(small_toy_file, tmp_path, monkeypatch, capsys):
    from scgpcl.train._trainer import Trainer

    calls = []
    real = Trainer.run_round

    def interrupt_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "run_round", interrupt_the_second)
    code = main(["cluster", str(small_toy_file), str(tmp_path / "o.h5ad"), "-k", "3", *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == 130
    assert "\nscgpcl: interrupted; no output written" in err and "step" in err.split("scgpcl: interrupted")[0]


def test_a_drawn_seed_goes_into_the_command_line_that_repeats_the_run():
    from scgpcl.cli import _argv_with_seed

    assert _argv_with_seed(["cluster", "a.h5ad", "o.h5ad", "--random-state", "none", "-k", "3"], 7) == [
        "cluster", "a.h5ad", "o.h5ad", "--random-state", "7", "-k", "3"]
    assert _argv_with_seed(["cluster", "--seed=None", "--rand", "none"], 7) == ["cluster", "--seed=7", "--rand", "7"]
    assert _argv_with_seed(["cluster", "--name", "none", "--random-state", "3"], 7) == [
        "cluster", "--name", "none", "--random-state", "3"]


def test_random_state_none_is_refused_under_torchrun(small_toy_file, tmp_path, monkeypatch, capsys):
    # every process would draw a seed of its own, and their batches would no longer split the cells
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    code = main(["cluster", str(small_toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet",
                 "--random-state", "none", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "each of the processes would draw a seed of its own" in err[-1]
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------ what a new user hit (review of 2026-12-06)
@pytest.mark.parametrize("clash", ["report_is_output", "report_is_model", "output_in_report", "model_in_report"])
def test_outputs_that_name_the_same_path_are_refused_before_training(small_toy_file, tmp_path, monkeypatch, capsys,
                                                                     clash):
    # 'cluster in.h5ad o.h5ad --report o.h5ad' trained, wrote o.h5ad, then failed on the report (exit 1)
    def no_training(self, **kwargs):
        raise AssertionError("training started although the outputs clash")

    monkeypatch.setattr(scgpcl.SCGPCL, "train", no_training)
    out, rep = tmp_path / "o.h5ad", tmp_path / "rep"
    paths = {"report_is_output": (out, out, None), "report_is_model": (out, rep, rep),
             "output_in_report": (rep / "o.h5ad", rep, None), "model_in_report": (out, rep, rep / "model")}[clash]
    (tmp_path / "rep").mkdir()  # an empty folder: the output's own checks pass
    args = ["cluster", str(small_toy_file), str(paths[0]), "-k", "3", "--quiet", "--report", str(paths[1])]
    if paths[2] is not None:
        args += ["--save-model", str(paths[2])]
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert ("both name" in err[0]) if clash.startswith("report_is") else ("is inside the --report folder" in err[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rep"] and not any((tmp_path / "rep").iterdir())


def test_the_summary_names_only_what_the_command_did(capsys):
    # the demo without --output said "36.4 s in all: reading, training, writing" and wrote nothing
    from scgpcl.cli import _print_summary

    a = ad.AnnData(np.zeros((4, 2), dtype=np.float32))
    a.obs["scgpcl"] = pd.Categorical(["0", "0", "1", "1"])
    a.uns["scgpcl"] = {"params": {"n_clusters": 2, "n_cells_used": 4, "n_genes_used": 2, "device": "cpu"},
                       "stages": {}}
    _print_summary(a, "scgpcl", 1.0, [], total=2.0, first="simulating")
    assert capsys.readouterr().out.splitlines()[-1] == "  2.0 s in all: simulating, training"
    _print_summary(a, "scgpcl", 1.0, ["o.h5ad"], total=2.0)
    assert capsys.readouterr().out.splitlines()[-1] == "  2.0 s in all: reading, training, writing"


def test_demo_refuses_a_report_at_its_output_path(tmp_path, capsys):
    out = tmp_path / "d.h5ad"
    assert main(["demo", "--output", str(out), "--report", str(out), "--quiet"]) == 2
    assert "both name" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_a_column_that_scgpcl_did_not_write_is_named_before_training(small_toy, tmp_path):
    a = small_toy.copy()
    a.obs["cell_type_copy"] = a.obs["cell_type"].astype(str)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tl.cluster(a, n_clusters=3, key_added="cell_type_copy", progress=False, **TINY)
    warned = [str(w.message) for w in caught if "did not write" in str(w.message)]
    assert len(warned) == 1 and "'cell_type_copy'" in warned[0] and "key_added" in warned[0]
    with warnings.catch_warnings(record=True) as caught:  # an earlier scgpcl result under the key: no warning
        warnings.simplefilter("always")
        tl.cluster(a, n_clusters=3, key_added="cell_type_copy", progress=False, **TINY)
    assert not [w for w in caught if "did not write" in str(w.message)]
    # scanpy's UMAP under key_added='umap' was replaced by the representation without a word
    b = small_toy.copy()
    b.obsm["X_umap"] = np.zeros((b.n_obs, 2))
    with pytest.warns(UserWarning, match=r"^obsm\['X_umap'\] already holds data that scgpcl did not write; the "
                                         r"results will replace it\. To keep it, choose another key_added$"):
        tl.cluster(b, n_clusters=3, key_added="umap", progress=False, **TINY)


def test_the_command_line_names_a_column_it_will_replace(small_toy, tmp_path, caplog):
    a = small_toy.copy()
    a.obs["annotation"] = a.obs["cell_type"].astype(str)
    a.uns["annotation"] = {"params": {"resolution": 1.0}}  # what scanpy's leiden leaves: not scgpcl's record
    a.write_h5ad(tmp_path / "in.h5ad")
    with caplog.at_level("WARNING", logger="scgpcl"):
        assert main(["cluster", str(tmp_path / "in.h5ad"), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet",
                     "--key-added", "annotation", *TINY_ARGS]) == 0
    assert [r for r in caplog.records if "obs['annotation'] and uns['annotation'] already hold data that scgpcl "
            "did not write" in r.getMessage() and "--key-added" in r.getMessage()]


def test_paths_under_the_output_file_or_the_model_folder_are_refused(small_toy_file, tmp_path, capsys):
    for args, inside in ((["--report", str(tmp_path / "o.h5ad" / "rep")], "inside the output file"),
                         (["--save-model", str(tmp_path / "m"), "--report", str(tmp_path / "m" / "rep")],
                          "inside the --save-model folder")):
        assert main(["cluster", str(small_toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", *args]) == 2
        assert inside in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [
    MemoryError("Unable to allocate 102. MiB for an array with shape (13351448,) and data type float64"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
                 "tried to allocate 16679056 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_out_of_memory_says_so_and_what_lowers_the_peak(small_toy_file, tmp_path, monkeypatch, capsys, error):
    # the allocator's own message was printed as it was, with no advice
    import scgpcl.model._scgpcl as model_module

    def fail(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(model_module.SCGPCL, "train", fail)
    out = tmp_path / "out.h5ad"
    assert main(["cluster", str(small_toy_file), str(out), "-k", "3", "--quiet", *TINY_ARGS]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scgpcl: error: out of memory (")
    assert "--chunk-cells" in err[0] and "--sample-cells" in err[0] and "--report" in err[0]
    assert not out.exists()


def test_a_lost_process_or_a_failed_report_is_not_called_out_of_memory():
    # every DistributedError says "(an error, a signal, out of memory)": a lost peer was reported as out of memory
    from scgpcl.cli import OutputFailed, ReportFailed, _out_of_memory
    from scgpcl.distributed import DistributedError

    assert not _out_of_memory(DistributedError("failed in process 1 of 2: another process ended (an error, a "
                                                "signal, out of memory)"))
    assert not _out_of_memory(RuntimeError("tile cache ran out of memory budget"))
    wrapped = ReportFailed("the report could not be written (MemoryError: ...); written and kept: out.h5ad")
    wrapped.__cause__ = MemoryError()
    assert not _out_of_memory(wrapped) and not _out_of_memory(OutputFailed("could not write 'o.h5ad'"))
    try:  # the allocator's failure behind another error still counts
        try:
            raise MemoryError("Unable to allocate 102. MiB")
        except MemoryError as inner:
            raise ValueError("while building the graph") from inner
    except ValueError as outer:
        assert _out_of_memory(outer)


def test_a_bad_device_is_refused_before_the_data_is_read(small_toy_file, tmp_path, monkeypatch, capsys):
    # the device was resolved only when the model was built, after reading (and hashing) the input: minutes on
    # an atlas before "CUDA is not available here"
    import torch

    from scgpcl.data import _io

    read = []
    monkeypatch.setattr(_io, "read_counts", lambda *a, **k: read.append(a))
    device = "cuda:7" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    code = main(["cluster", str(small_toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", "--device", device,
                 *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"device '{device}' requested but" in err[0], err
    assert read == [] and not (tmp_path / "o.h5ad").exists()


@pytest.mark.filterwarnings("ignore:Writing zarr v2 data")
def test_cluster_refuses_an_h5ad_stored_genes_x_cells_before_training(toy_file, tmp_path, capsys):
    t = tmp_path / "t.h5ad"
    ad.read_h5ad(toy_file).T.write_h5ad(t)
    out = tmp_path / "out.h5ad"
    assert main(["cluster", str(t), str(out), "-k", "3", "--quiet", *QUICK_ARGS]) == 2
    err = capsys.readouterr().err
    assert "looks stored genes x cells (150 rows x 180 columns: 180 cells?)" in err
    assert "pass --genes-as-rows to read it transposed" in err and "--cells-as-rows" in err and not out.exists()
    assert main(["cluster", str(t), str(out), "-k", "3", "--quiet", "--genes-as-rows", *QUICK_ARGS]) == 0
    assert ad.read_h5ad(out).n_obs == 180


@needs_zarr
def test_cluster_reads_an_anndata_zarr_store(toy_file, tmp_path, capsys):
    store = tmp_path / "toy.zarr"
    toy = ad.read_h5ad(toy_file)
    toy.write_zarr(store)
    out = tmp_path / "out.h5ad"
    assert main(["cluster", str(store), str(out), "-k", "3", "--label-key", "cell_type", "--quiet",
                 *QUICK_ARGS]) == 0
    result = ad.read_h5ad(out)
    assert result.n_obs == toy.n_obs and result.obs["scgpcl"].notna().all()
    params = result.uns["scgpcl"]["params"]
    assert params["input"] == str(store.resolve())
    assert isinstance(params["input_sha256"], str) and len(params["input_sha256"]) == 64  # one digest of the store
    capsys.readouterr()
    assert main(["cluster", str(store), str(store), "-k", "3", "--quiet", *QUICK_ARGS]) == 2
    assert "is the input file" in capsys.readouterr().err  # not only the '.h5ad' rule
    inside = store / "out.h5ad"
    assert main(["cluster", str(store), str(inside), "-k", "3", "--quiet", *QUICK_ARGS]) == 2
    assert "is inside the input store" in capsys.readouterr().err and not inside.exists()
    assert main(["cluster", str(store), str(out), "-k", "3", "--quiet", "--overwrite", "--report",
                 str(store / "rep"), *QUICK_ARGS]) == 2
    err = capsys.readouterr().err
    assert "--report" in err and "is inside the input store" in err


def test_overwrite_keeps_the_replaced_outputs_permissions_and_a_link_points_on(small_toy_file, tmp_path):
    """--overwrite replaced a chmod 600 file (the .h5ad, the marker table, the report folder) with one under the
    umask, readable by everyone; markers -o LINK replaced the link with a file and left its target stale."""
    import stat

    out, table, report = tmp_path / "o.h5ad", tmp_path / "m.tsv", tmp_path / "rep"
    args = ["cluster", str(small_toy_file), str(out), "-k", "3", "--quiet", *TINY_ARGS]
    assert main([*args, "--report", str(report)]) == 0
    assert main(["markers", str(out), "-o", str(table), "--quiet"]) == 0
    for path, mode in ((out, 0o600), (table, 0o640), (report, 0o700)):
        path.chmod(mode)
    assert main([*args, "--report", str(report), "--overwrite"]) == 0
    assert main(["markers", str(out), "-o", str(table), "--quiet", "--overwrite"]) == 0
    assert [stat.S_IMODE(p.stat().st_mode) for p in (out, table, report)] == [0o600, 0o640, 0o700]
    link = tmp_path / "link.tsv"
    link.symlink_to(table)
    table.write_text("old\n")
    assert main(["markers", str(out), "-o", str(link), "--quiet", "--overwrite"]) == 0
    assert link.is_symlink() and table.read_text().startswith("cluster")


def test_output_names_are_read_as_a_user_means_them(small_toy_file, tmp_path, capsys, monkeypatch):
    """'~' in --opt=~/x was not expanded (a folder named '~' was looked for); .H5AD was refused; markers -o m.xlsx
    wrote tab-separated text under that name; out.zarr was told only to end in .h5ad."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["cluster", str(small_toy_file), "~/o.H5AD", "-k", "3", "--quiet", "--save-model=~/m",
                 *TINY_ARGS]) == 0
    assert (tmp_path / "o.H5AD").is_file() and (tmp_path / "m" / "model.pt").is_file()
    capsys.readouterr()
    assert main(["markers", str(tmp_path / "o.H5AD"), "-o", str(tmp_path / "m.xlsx"), "--quiet"]) == 2
    assert "written as text, tab-separated (.tsv, .txt) or comma-separated (.csv), not as .xlsx" in capsys.readouterr().err
    assert main(["cluster", str(small_toy_file), str(tmp_path / "o.zarr"), "-k", "3", "--quiet"]) == 2
    assert "must end in .h5ad (scgpcl writes AnnData's .h5ad; for a zarr store, convert it" in capsys.readouterr().err
    assert not (tmp_path / "m.xlsx").exists() and not (tmp_path / "o.zarr").exists()


def test_a_model_trained_with_use_raw_loads_on_the_file_it_came_from(small_toy, tmp_path, caplog):
    # --use-raw built the model on .raw's counts, but the saved model said only "X": SCGPCL.load on the input
    # file read its log-normalised X and refused it ("not integer counts ... use layer='counts'")
    import scanpy as sc

    a = small_toy.copy()
    raw = a.copy()
    raw.var_names = [*raw.var_names[:-1], raw.var_names[0]]  # a duplicated gene name: the command renames it
    a.raw = raw
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    inp, out = tmp_path / "lognorm.h5ad", tmp_path / "out.h5ad"
    a.write_h5ad(inp)
    assert main(["cluster", str(inp), str(out), "-k", "3", "--use-raw", "--quiet", "--save-model",
                 str(tmp_path / "m"), *TINY_ARGS]) == 0
    labels = ad.read_h5ad(out).obs["scgpcl"].astype(int).to_numpy()
    with caplog.at_level("INFO", logger="scgpcl"):
        model = scgpcl.SCGPCL.load(tmp_path / "m", ad.read_h5ad(inp))
    assert "reading the counts from .raw" in caplog.text and model.counts_from_raw
    np.testing.assert_array_equal(model.predict(), labels)
    # its results stored into the input say the counts are in .raw: markers and the report read them there
    # (they recorded layer 'X' and read the log-normalised X, with a warning that it was not counts)
    stored = ad.read_h5ad(inp)
    scgpcl.tl.store_results(stored, model)
    assert stored.uns["scgpcl"]["params"]["counts_in_raw"] is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "X does not look like raw counts" was the symptom
        # pandas 1.5 calls NumPy functions that NumPy 1.25 deprecates: not this test's concern
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"(pandas|numpy)\.")
        table = scgpcl.tl.markers(stored, n_genes=2)
    assert set(table["gene"]) <= set(model.data.gene_names) | set(stored.raw.var_names)
    from scgpcl.report import _dataset_summary

    summary = _dataset_summary(stored, "scgpcl", None)
    assert summary["counts from"] == "raw.X"
    assert summary["median counts per cell"] == np.median(np.asarray(stored.raw.X.sum(axis=1)).ravel())
    again = scgpcl.SCGPCL.load(tmp_path / "m", ad.read_h5ad(out))  # the output holds the counts in X, no .raw
    np.testing.assert_array_equal(again.predict(), labels)
    assert again.counts_from_raw  # how it was trained: saved again, it still loads on the input file
    # a .raw holding no counts (scanpy's log-normalised .raw, counts in a layer) is not read: the refusal names
    # the layer, as for any model
    b = ad.read_h5ad(out)
    b.layers["counts"] = b.X.copy()
    sc.pp.normalize_total(b)
    sc.pp.log1p(b)
    b.raw = b.copy()
    with pytest.raises(InputError, match=r"layer='counts'"):
        scgpcl.SCGPCL.load(tmp_path / "m", b)


def test_an_mse_model_trained_with_use_raw_reads_raw_again_though_it_holds_no_integers(small_toy, tmp_path):
    # with reconstruction mse the command trains on .raw's values as they are (estimated counts); load read the
    # log-normalised X instead, since .raw held no integer counts
    import scanpy as sc

    a = small_toy.copy()
    raw = a.copy()
    raw.X = raw.X * 1.37  # estimated counts: not integers
    a.raw = raw
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    inp, out = tmp_path / "in.h5ad", tmp_path / "out.h5ad"
    a.write_h5ad(inp)
    assert main(["cluster", str(inp), str(out), "-k", "3", "--use-raw", "--reconstruction", "mse", "--quiet",
                 "--save-model", str(tmp_path / "m"), *TINY_ARGS]) == 0
    on_input = scgpcl.SCGPCL.load(tmp_path / "m", ad.read_h5ad(inp)).get_latent_representation()
    on_output = scgpcl.SCGPCL.load(tmp_path / "m", ad.read_h5ad(out)).get_latent_representation()
    np.testing.assert_allclose(on_input, on_output, atol=1e-5)
