"""Runs that go wrong part-way: a full disk, an output another program changes meanwhile, an interrupted
training or save. Each must end with a message that names what was kept, and leave no half-written file
and no mismatched result."""

from __future__ import annotations

import collections
import errno
import json
import os

import anndata as ad
import numpy as np
import pytest

import scgpcl
from scgpcl import SCGPCL, InputError
from scgpcl.cli import main
from scgpcl.data._io import h5ad_bytes, write_h5ad_atomic

from helpers import TINY, TINY_ARGS, toy_counts

_Usage = collections.namedtuple("_Usage", "total used free")


def _disk_with(monkeypatch, free: int) -> None:
    """Make every folder's file system report ``free`` bytes free."""
    from scgpcl import _fs

    monkeypatch.setattr(_fs.shutil, "disk_usage", lambda p: _Usage(10**12, 10**12 - free, free))


@pytest.fixture(scope="module")
def toy_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("failures") / "toy.h5ad"
    toy_counts(n_per=20, n_genes=60).write_h5ad(path)
    return path


def _hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# --------------------------------------------------------------------------- a full disk
def test_a_write_the_disk_has_no_room_for_is_refused_before_it_starts(tmp_path, monkeypatch):
    # h5py ends the whole process (a segmentation fault) when the disk fills part-way through an .h5ad, and
    # leaves its temporary file: the only safe time to find out is before writing
    a = toy_counts(n_per=20, n_genes=60)
    out = tmp_path / "out.h5ad"
    out.write_bytes(b"an earlier result")
    _disk_with(monkeypatch, h5ad_bytes(a) - 1)
    with pytest.raises(OSError, match=r"not enough space: the file needs about .* free") as e:
        write_h5ad_atomic(a, out)
    assert e.value.errno == errno.ENOSPC
    assert out.read_bytes() == b"an earlier result" and _hidden(tmp_path) == []
    _disk_with(monkeypatch, h5ad_bytes(a))  # exactly enough
    write_h5ad_atomic(a, out)
    assert ad.read_h5ad(out).n_obs == a.n_obs


def test_the_size_estimate_is_not_below_the_written_file(tmp_path):
    a = toy_counts(n_per=40)  # counts, labels
    a.obsm["X_rep"] = np.random.default_rng(0).normal(size=(a.n_obs, 64)).astype(np.float32)
    a.uns["history"] = {"loss": np.arange(500.0)}
    write_h5ad_atomic(a, tmp_path / "x.h5ad")
    written = os.path.getsize(tmp_path / "x.h5ad")
    assert written <= h5ad_bytes(a) <= 2 * written + 1_000_000
    backed = ad.read_h5ad(tmp_path / "x.h5ad", backed="r")  # X stays in the file, and a write copies it
    assert h5ad_bytes(backed) >= written
    backed.file.close()


def test_the_file_size_limit_counts_as_no_room(tmp_path, monkeypatch):
    import resource

    a = toy_counts(n_per=20, n_genes=60)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (500, resource.RLIM_INFINITY)
                        if which == resource.RLIMIT_FSIZE else (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    with pytest.raises(OSError, match=r"the file-size limit \(ulimit -f\) is 500 bytes"):
        write_h5ad_atomic(a, tmp_path / "out.h5ad")
    assert list(tmp_path.iterdir()) == []


def test_cluster_refuses_an_output_the_disk_has_no_room_for_before_training(toy_file, tmp_path, monkeypatch,
                                                                           capsys):
    trained = []
    monkeypatch.setattr(SCGPCL, "train", lambda self, **kw: trained.append(1))
    _disk_with(monkeypatch, 2000)
    code = main(["cluster", str(toy_file), str(tmp_path / "out.h5ad"), "-k", "3", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert f"output '{tmp_path / 'out.h5ad'}' needs about" in err[0] and "has 2.0 KB free" in err[0]
    assert "free some space or write elsewhere" in err[0]
    assert trained == [] and list(tmp_path.iterdir()) == []


def test_a_disk_that_fills_during_training_ends_with_what_was_written(toy_file, tmp_path, monkeypatch, capsys):
    # the check before training passed; by the end the disk is full: one line, exit 1, no temporary file
    real_train = SCGPCL.train

    def train_then_fill(self, **kw):
        out = real_train(self, **kw)
        _disk_with(monkeypatch, 2000)
        return out

    monkeypatch.setattr(SCGPCL, "train", train_then_fill)
    out = tmp_path / "out.h5ad"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"could not write '{out}'" in err[0] and "not enough space" in err[0] and "nothing was written" in err[0]
    assert err[0].startswith("scgpcl: error: could not write") and "--debug" not in err[0]  # no class name, no hint
    assert list(tmp_path.iterdir()) == []


def test_simulate_on_a_full_disk_is_one_line_naming_the_output(tmp_path, monkeypatch, capsys):
    _disk_with(monkeypatch, 100)
    out = tmp_path / "sim.h5ad"
    assert main(["simulate", str(out), "--preset", "demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"could not write '{out}' (not enough space" in err[0], err
    assert "nothing was written" in err[0] and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- outputs changed during a run
def test_an_output_another_run_wrote_meanwhile_is_not_replaced_without_overwrite(toy_file, tmp_path, monkeypatch,
                                                                                   capsys):
    out = tmp_path / "same.h5ad"
    real_train = SCGPCL.train

    def train_while_another_run_writes(self, **kw):
        result = real_train(self, **kw)
        out.write_bytes(b"the other run's result")
        return result

    monkeypatch.setattr(SCGPCL, "train", train_while_another_run_writes)
    model_dir = tmp_path / "m"
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--save-model", str(model_dir),
                 *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert out.read_bytes() == b"the other run's result"  # not replaced
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("same.") and p.name != "same.h5ad"]
    assert len(kept) == 1 and f"the results were written to '{kept[0]}' instead" in err[0], err
    assert "appeared while this ran" in err[0] and "without --overwrite" in err[0]
    # the model belongs to the results that were kept, so it is written too, and said
    assert f"also written: {model_dir}" in err[0] and (model_dir / "model.pt").is_file()
    assert ad.read_h5ad(kept[0]).obs["scgpcl"].nunique() == 3 and _hidden(tmp_path) == []


def test_a_report_another_run_wrote_meanwhile_is_not_replaced_without_overwrite(toy_file, tmp_path, monkeypatch,
                                                                                  capsys):
    # two batch jobs given the same outputs: the .h5ad of the first was kept, but the second's report replaced
    # the first's, so the folder described another clustering than the file beside it
    out, report = tmp_path / "same.h5ad", tmp_path / "same_report"
    real_train = SCGPCL.train

    def train_while_another_run_writes(self, **kw):
        result = real_train(self, **kw)
        out.write_bytes(b"the other run's result")
        report.mkdir()
        (report / "index.html").write_text("the other run's report")
        return result

    monkeypatch.setattr(SCGPCL, "train", train_while_another_run_writes)
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--report", str(report), *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert (report / "index.html").read_text() == "the other run's report"  # not replaced
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("same_report.")]
    assert len(kept) == 1 and (kept[0] / "index.html").is_file() and (kept[0] / "clusters.tsv").is_file()
    assert f"this report was written to '{kept[0]}' instead" in err[0] and "the results were written to" in err[0]
    assert out.read_bytes() == b"the other run's result" and _hidden(tmp_path) == []
    # the report alone (the .h5ad was written first): the same, and the .h5ad is named as written
    monkeypatch.setattr(SCGPCL, "train", real_train)

    def report_meanwhile(*args, **kw):
        (tmp_path / "r2").mkdir()
        (tmp_path / "r2" / "index.html").write_text("other")
        return real_contents(*args, **kw)

    import scgpcl.report as report_module

    real_contents = report_module._write_contents
    monkeypatch.setattr(report_module, "_write_contents", report_meanwhile)
    code = main(["cluster", str(toy_file), str(tmp_path / "o2.h5ad"), "-k", "3", "--quiet", "--report",
                 str(tmp_path / "r2"), *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and (tmp_path / "r2" / "index.html").read_text() == "other", err
    assert f"could not write '{tmp_path / 'r2'}'" in err[0] and f"also written: {tmp_path / 'o2.h5ad'}" in err[0]


def test_scgpcl_report_keeps_a_report_that_appeared_meanwhile(toy_file, tmp_path, monkeypatch, capsys):
    # 'scgpcl report' said "error: FileExistsError: [Errno 17] ..." (read as a crash) and named the path twice
    import scgpcl.report as report_module

    out = tmp_path / "o.h5ad"
    assert main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", *TINY_ARGS]) == 0
    real_contents = report_module._write_contents

    def report_meanwhile(*args, **kw):
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "index.html").write_text("other")
        return real_contents(*args, **kw)

    monkeypatch.setattr(report_module, "_write_contents", report_meanwhile)
    assert main(["report", str(out), str(tmp_path / "r"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("r.")]
    assert len(err) == 1 and len(kept) == 1 and (kept[0] / "index.html").is_file(), err
    assert err[0] == (f"scgpcl: error: could not write '{tmp_path / 'r'}' (a report from elsewhere appeared there "
                      "while this ran (another run?) and is not replaced without --overwrite; this report was "
                      f"written to '{kept[0]}' instead)")


def test_simulate_does_not_replace_an_output_that_appeared_meanwhile(tmp_path, monkeypatch, capsys):
    from scgpcl.simulate import _presets

    out = tmp_path / "sim.h5ad"
    real = _presets.simulate

    def simulate_while_another_writes(*args, **kw):
        result = real(*args, **kw)
        out.write_bytes(b"someone else's")
        return result

    monkeypatch.setattr(_presets, "simulate", simulate_while_another_writes)
    assert main(["simulate", str(out), "--preset", "demo"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "appeared while this ran" in err[0] and "nothing was written" not in err[0], err
    assert out.read_bytes() == b"someone else's" and len(list(tmp_path.glob("sim.*.h5ad"))) == 1


@pytest.mark.parametrize("compression, share", [("gzip", 2), ("lzf", 1)])
def test_compressed_writes_ask_for_their_share_of_the_raw_size(tmp_path, monkeypatch, compression, share):
    # gzip output was 17-36 % of the raw size: asking for a tenth let simulate's default write segfault.
    # lzf output was up to 68 %: asking for half let 'cluster --compression lzf' segfault under ulimit -f
    a = toy_counts(n_per=20, n_genes=60)
    _disk_with(monkeypatch, h5ad_bytes(a) // share - 1)
    with pytest.raises(OSError, match="not enough space"):
        write_h5ad_atomic(a, tmp_path / "o.h5ad", compression=compression)
    _disk_with(monkeypatch, h5ad_bytes(a) // share)
    write_h5ad_atomic(a, tmp_path / "o.h5ad", compression=compression)


def test_the_check_before_training_asks_for_the_compressed_share(toy_file, tmp_path, monkeypatch):
    """--compression gzip needs half the room before training, as at the write; lzf and none need it all."""
    from scgpcl.cli import _check_output_space
    from scgpcl.data._io import read_counts

    a = read_counts(str(toy_file))
    need = h5ad_bytes(a) + a.n_obs * (64 * 4 + 64)  # the data and the results
    _disk_with(monkeypatch, need // 2)
    _check_output_space(tmp_path / "o.h5ad", a, None, "gzip")  # enough
    for compression in (None, "lzf"):
        with pytest.raises(InputError, match="needs about"):
            _check_output_space(tmp_path / "o.h5ad", a, None, compression)


def test_cluster_refuses_a_model_folder_the_disk_has_no_room_for_before_training(toy_file, tmp_path, monkeypatch,
                                                                                  capsys):
    from scgpcl import _fs

    trained = []
    monkeypatch.setattr(SCGPCL, "train", lambda self, **kw: trained.append(1))
    real = _fs.shutil.disk_usage
    small = tmp_path / "small"
    small.mkdir()
    monkeypatch.setattr(_fs.shutil, "disk_usage", lambda p: _Usage(10**9, 10**9 - 1000, 1000)
                        if str(p).startswith(str(small)) else real(p))
    code = main(["cluster", str(toy_file), str(tmp_path / "o.h5ad"), "-k", "3", "--quiet", "--save-model",
                 str(small / "m"), *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"--save-model '{small / 'm'}': the model needs about" in err[0], err
    assert trained == [] and not (tmp_path / "o.h5ad").exists()


def test_write_without_overwrite_places_a_new_file_and_keeps_data_beside_an_existing_one(tmp_path):
    a = toy_counts(n_per=10, n_genes=30)
    out = tmp_path / "o.h5ad"
    write_h5ad_atomic(a, out, overwrite=False)  # nothing there: written
    assert ad.read_h5ad(out).n_obs == a.n_obs
    with pytest.raises(FileExistsError, match=r"written to '.*o\.[0-9a-f]{6}\.h5ad' instead"):
        write_h5ad_atomic(a[:5].copy(), out, overwrite=False)
    assert ad.read_h5ad(out).n_obs == a.n_obs and _hidden(tmp_path) == []
    assert sorted(ad.read_h5ad(p).n_obs for p in tmp_path.iterdir()) == [5, a.n_obs]


def test_a_model_folder_filled_during_the_run_is_a_failed_output_not_bad_input(toy_file, tmp_path, monkeypatch,
                                                                               capsys):
    # it was exit 2 ("bad input", which the docs reserve for before training), not naming the written .h5ad
    model_dir, out = tmp_path / "m", tmp_path / "o.h5ad"
    real_train = SCGPCL.train

    def train_while_another_saves(self, **kw):
        result = real_train(self, **kw)
        model_dir.mkdir()
        (model_dir / "notes.txt").write_text("someone else's")
        return result

    monkeypatch.setattr(SCGPCL, "train", train_while_another_saves)
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", "--save-model", str(model_dir),
                 *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert f"could not write '{model_dir}'" in err[0] and "it changed during the run" in err[0]
    assert f"written and kept: {out}" in err[0] and ad.read_h5ad(out).n_obs > 0
    assert sorted(p.name for p in model_dir.iterdir()) == ["notes.txt"]


def test_an_output_folder_removed_during_the_run_is_a_failed_output(toy_file, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "gone"
    folder.mkdir()
    real_train = SCGPCL.train

    def train_then_remove(self, **kw):
        result = real_train(self, **kw)
        folder.rmdir()
        return result

    monkeypatch.setattr(SCGPCL, "train", train_then_remove)
    code = main(["cluster", str(toy_file), str(folder / "o.h5ad"), "-k", "3", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "directory" in err[0] and "does not exist" in err[0] and "nothing was written" in err[0]


def test_an_output_that_is_a_symlink_updates_the_file_it_points_to(tmp_path):
    a = toy_counts(n_per=10, n_genes=30)
    target = tmp_path / "real.h5ad"
    target.write_bytes(b"old")
    link = tmp_path / "link.h5ad"
    link.symlink_to(target)
    write_h5ad_atomic(a, link)
    assert link.is_symlink() and ad.read_h5ad(target).n_obs == a.n_obs


def test_temporary_files_a_killed_run_left_are_named(toy_file, tmp_path, capsys, caplog):
    out = tmp_path / "o.h5ad"
    (tmp_path / ".o.h5ad.0123456789ab.tmp").write_bytes(b"x" * 2_000_000)
    (tmp_path / ".other.h5ad.0123456789ab.tmp").write_bytes(b"not this output's")
    code = main(["cluster", str(toy_file), str(out), "-k", "3", *TINY_ARGS])
    assert code == 0
    lines = [r.getMessage() for r in caplog.records if "left by a run that was killed" in r.getMessage()]
    assert len(lines) == 1 and "1 temporary file beside" in lines[0] and ".o.h5ad.0123456789ab.tmp" in lines[0]
    assert "2.0 MB" in lines[0] and ".other.h5ad" not in lines[0]
    assert (tmp_path / ".o.h5ad.0123456789ab.tmp").exists()  # not removed: it may be another run's
    # a report killed while it was written (or replaced) left a hidden folder that nothing mentioned
    for name in (".rep.17bsnnqh.tmp", ".rep.old-34d316dc"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_bytes(b"{}")
    caplog.clear()
    assert main(["report", str(out), str(tmp_path / "rep")]) == 0
    lines = [r.getMessage() for r in caplog.records if "left by a run that was killed" in r.getMessage()]
    assert len(lines) == 1 and "2 temporary folders beside" in lines[0], lines
    assert ".rep.17bsnnqh.tmp, .rep.old-34d316dc" in lines[0] and (tmp_path / ".rep.old-34d316dc").is_dir()


# --------------------------------------------------------------------------- saved models
def test_a_folder_holding_only_a_killed_saves_leftovers_says_so(tmp_path):
    m = SCGPCL(toy_counts(n_per=10, n_genes=30), 3, random_state=0, **TINY).train(progress=False)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.pt.0123456789ab.tmp").write_bytes(b"partial")
    with pytest.raises(InputError, match=r"holds only the temporary files of an interrupted save "
                                         r"\(model.pt.0123456789ab.tmp\); remove them, or pass overwrite=True"):
        m.save(tmp_path / "m")


def test_weights_and_config_of_two_saves_are_not_loaded_as_one_model(tmp_path):
    # an interruption between the two renames of save() left the new weights beside the old config, and load()
    # accepted the pair: K from one model, centres from the other
    a = toy_counts(n_per=10, n_genes=30)
    three = SCGPCL(a, 3, random_state=0, **TINY).train(progress=False)
    two = SCGPCL(a, 2, random_state=0, **TINY).train(progress=False)
    three.save(tmp_path / "m3")
    two.save(tmp_path / "m2")
    os.replace(tmp_path / "m2" / "model.pt", tmp_path / "m3" / "model.pt")
    with pytest.raises(InputError, match=r"'.*m3/model.pt' is not the weights '.*m3/config.json' was saved with"):
        SCGPCL.load(tmp_path / "m3", a)
    meta = json.loads((tmp_path / "m2" / "config.json").read_text())
    assert len(meta["weights_sha256"]) == 64
    # a file given for the folder: NotADirectoryError from pathlib, not the InputError load() promises
    with pytest.raises(InputError, match=r"'.*m3/model.pt' is a file; SCGPCL.load needs the folder a model was "
                                         r"saved in \(pass the folder '.*m3'\)"):
        SCGPCL.load(tmp_path / "m3" / "model.pt", a)
    with pytest.raises(InputError, match="holds no saved scgpcl model"):
        SCGPCL.load(tmp_path, a)


def test_a_save_cut_between_its_two_files_leaves_a_pair_load_refuses_even_over_an_older_model(tmp_path,
                                                                                                  monkeypatch):
    # the config goes in first and names its weights: cut before the weights' rename, the folder holds the new
    # config and the old weights, which load() refuses, also when the old model's config named none
    a = toy_counts(n_per=10, n_genes=30)
    two = SCGPCL(a, 2, random_state=0, **TINY).train(progress=False)
    three = SCGPCL(a, 3, random_state=0, **TINY).train(progress=False)
    two.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    del meta["weights_sha256"]  # as a model saved before configs named their weights
    (tmp_path / "m" / "config.json").write_text(json.dumps(meta))
    real = os.replace

    def cut(src, dst):
        if str(dst).endswith("model.pt"):
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "replace", cut)
    with pytest.raises(KeyboardInterrupt):
        three.save(tmp_path / "m", overwrite=True)
    monkeypatch.setattr(os, "replace", real)
    with pytest.raises(InputError, match="is not the weights"):
        SCGPCL.load(tmp_path / "m", a)


def test_a_failed_torch_save_is_an_os_error_that_says_why(tmp_path, monkeypatch):
    import torch

    m = SCGPCL(toy_counts(n_per=10, n_genes=30), 3, random_state=0, **TINY).train(progress=False)

    def full(obj, path):  # what torch's writer raises on a full disk
        open(path, "wb").close()
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 521920 vs 521808")

    monkeypatch.setattr(torch, "save", full)
    _disk_with(monkeypatch, 10**9)
    with pytest.raises(OSError, match=r"torch.save failed: \[enforce fail"):
        m.save(tmp_path / "a")
    real = scgpcl._fs.shutil.disk_usage

    def fills(p):  # room before the write, none after it
        return _Usage(10**12, 10**12, 0) if any(tmp_path.glob("b/*.tmp")) else real(p)

    monkeypatch.setattr(scgpcl._fs.shutil, "disk_usage", fills)
    with pytest.raises(OSError, match="no space left on the device") as e:
        m.save(tmp_path / "b")
    assert e.value.errno == errno.ENOSPC
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing left behind


# --------------------------------------------------------------------------- interrupted training
def test_training_again_after_an_interrupted_train_warns_that_it_goes_on(monkeypatch):
    from scgpcl.train._trainer import Trainer

    a = toy_counts(n_per=10, n_genes=30)
    m = SCGPCL(a, 3, random_state=0, **TINY)
    real = Trainer.finetune

    def interrupted(self, *args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "finetune", interrupted)
    with pytest.raises(KeyboardInterrupt):
        m.train(progress=False)
    monkeypatch.setattr(Trainer, "finetune", real)
    with pytest.warns(UserWarning, match="an earlier train\\(\\) of this model stopped part-way"):
        m.train(progress=False)
    with pytest.warns(UserWarning, match="this model is already trained"):
        m.train(progress=False)
    import warnings

    with warnings.catch_warnings():  # a fresh model trains without a word
        warnings.simplefilter("error")
        SCGPCL(a, 3, random_state=0, **TINY).train(progress=False)


def test_an_interrupted_second_train_leaves_no_stale_clusters(monkeypatch, tmp_path):
    """train() again on a trained model, interrupted in fine-tuning: predict() gave the first training's
    cached clusters while the network had changed, and save() wrote that half-trained network."""
    from scgpcl.train._trainer import Trainer

    a = toy_counts(n_per=10, n_genes=30)
    m = SCGPCL(a, 3, random_state=0, **TINY).train(progress=False)
    m.predict()

    def interrupted(self, *args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "finetune", interrupted)
    with pytest.warns(UserWarning, match="already trained"), pytest.raises(KeyboardInterrupt):
        m.train(progress=False)
    assert not m.is_trained
    for call in (m.predict, m.get_latent_representation, lambda: m.save(tmp_path / "m")):
        with pytest.raises(RuntimeError, match=r"stopped part-way .* call \.train\(\) again"):
            call()
    assert not (tmp_path / "m").exists()


def test_an_error_while_storing_results_leaves_the_anndata_as_it_was(monkeypatch):
    a = toy_counts(n_per=10, n_genes=30)
    scgpcl.tl.cluster(a, n_clusters=3, random_state=0, label_key="cell_type", progress=False, **TINY)
    before = (a.obs.copy(), {k: v.copy() for k, v in a.obsm.items()}, a.uns["scgpcl"]["params"]["n_clusters"])
    from scgpcl.tl import _cluster

    def broken(*args, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(_cluster, "clustering_metrics", broken)
    with pytest.raises(KeyboardInterrupt):
        scgpcl.tl.cluster(a, n_clusters=2, random_state=0, label_key="cell_type", progress=False, **TINY)
    assert a.obs.equals(before[0]) and a.uns["scgpcl"]["params"]["n_clusters"] == before[2] == 3
    for k, v in before[1].items():
        np.testing.assert_array_equal(a.obsm[k], v)


# --------------------------------------------------------------------------- an .h5ad write that fails part-way
def test_a_write_past_the_file_size_limit_ends_with_one_line_not_a_crash(tmp_path):
    """h5py cannot free the objects of a write that failed part-way (h5py issue 914): the process ended with a
    segmentation fault (exit 139) after the message, with two HDF5 tracebacks before it, and --save-model was
    skipped. Data that gzip cannot shrink pass the space check (which expects gzip to halve the file) and then
    hit the limit (ulimit -f) during the write."""
    import resource
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    a = ad.AnnData(toy_counts(n_per=40, n_genes=60))
    a.obsm["noise"] = rng.integers(0, 2**32, (a.n_obs, 8000), dtype=np.uint32)  # random bits: incompressible
    a.write_h5ad(tmp_path / "in.h5ad")
    limit = int(0.7 * h5ad_bytes(a))  # above the check's half, below the file's size

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    done = subprocess.run([sys.executable, "-m", "scgpcl", "cluster", "in.h5ad", "out.h5ad", "-k", "3", "--quiet",
                           "--compression", "gzip", "--save-model", "model", *TINY_ARGS],
                          cwd=tmp_path, preexec_fn=limited, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    err = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(err) == 1, (done.returncode, done.stderr[-2000:])
    assert err[0] == ("scgpcl: error: could not write 'out.h5ad' (OSError: File too large: raise the file-size limit "
                      "(ulimit -f)); the model was saved to 'model' (scgpcl.SCGPCL.load(folder, adata), then "
                      "predict(), gives the clusters)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.h5ad", "model"]  # no partial or temporary file
    back = SCGPCL.load(tmp_path / "model", ad.read_h5ad(tmp_path / "in.h5ad"))
    assert (back.predict() >= 0).all()


def test_hdf5_messages_become_the_system_error_they_report():
    from scgpcl.data._io import _system_error

    hdf5 = OSError("Unable to extend file properly, errno = 28, error message = 'no space left on device' (file "
                   "write failed: time = Mon Dec  7 13:24:43 2026\n, filename = '.o.h5ad.tmp', file descriptor = 3)")
    plain = _system_error(hdf5)
    assert plain.errno == errno.ENOSPC and plain.strerror == (os.strerror(errno.ENOSPC) + ": free some space, or "
                                                              "write the output elsewhere")
    lock = OSError("Unable to synchronously open file (unable to lock file, errno = 11, error message = 'Resource "
                   "temporarily unavailable')")
    assert _system_error(lock) is None  # HDF5's words name the lock; "Resource temporarily unavailable" would not


def test_a_signal_just_after_the_output_is_placed_names_it_as_written(toy_file, tmp_path, monkeypatch, capsys):
    """Ctrl-C right after the .h5ad was linked into place said "no output written" although it was complete."""
    import signal

    import scgpcl.data._io as io

    out = tmp_path / "out.h5ad"
    real = os.link

    def link_then_signal(src, dst, *args, **kwargs):
        real(src, dst, *args, **kwargs)
        if str(dst) == str(out):
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(io.os, "link", link_then_signal)
    code = main(["cluster", str(toy_file), str(out), "-k", "3", "--quiet", *TINY_ARGS])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130 and err[-1] == f"scgpcl: interrupted; already written and complete: {out}; nothing else written"
    assert ad.read_h5ad(out).n_obs > 0 and sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]


def test_deferred_holds_a_signal_that_another_thread_receives():
    """deferred() blocked the signals in the main thread only: the kernel gave a process's SIGTERM to another
    thread (torch and h5py start some), and Python ran the handler in the main thread inside the block."""
    import signal
    import threading
    import time

    from scgpcl import _signals

    stop = threading.Event()
    other = threading.Thread(target=stop.wait)  # a thread that does not block the signals
    other.start()
    reached_the_end = False
    try:
        with _signals.handled(), pytest.raises(_signals.Terminated), _signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)  # the kernel gives it to the other thread, which does not block it
            time.sleep(0.3)  # and Python runs the handler in this thread meanwhile
            reached_the_end = True
    finally:
        stop.set()
        other.join()
    assert reached_the_end


def test_deferred_holds_ctrl_c_in_the_python_api_when_another_thread_receives_it():
    """Without handled() (a notebook, a script) deferred() only blocked the signals in the main thread: a
    Ctrl-C that the kernel gave to another thread raised KeyboardInterrupt inside the block (a half-written
    adata, a saved model's folder left with one of its two files)."""
    import signal
    import threading
    import time

    from scgpcl import _signals

    # Python's own Ctrl-C handler, as in a terminal or a notebook: a job started in the background by a
    # non-interactive shell (CI) starts with SIGINT ignored, and an ignored signal is left ignored
    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    reached_the_end = False
    try:
        with pytest.raises(KeyboardInterrupt), _signals.deferred():
            with _signals.deferred():  # nested: the outer block holds it
                signal.pthread_kill(other.ident, signal.SIGINT)  # the other thread receives it
                time.sleep(0.3)
            time.sleep(0.1)
            reached_the_end = True
    finally:
        stop.set()
        other.join()
    assert reached_the_end
    try:
        assert {s: signal.getsignal(s) for s in before} == before  # the user's handlers are back
        with pytest.raises(KeyboardInterrupt):  # and still work
            signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, started_with)


def test_a_signal_held_by_an_earlier_block_is_not_raised_by_a_later_one():
    """A signal caught while deferred() put the handlers back was read after it was cleared, and a later,
    unrelated block raised it."""
    import signal

    from scgpcl import _signals

    started_with = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _signals._held = signal.SIGINT  # what that race left behind
        with _signals.deferred():
            pass
        assert _signals._held is None
    finally:
        signal.signal(signal.SIGINT, started_with)
        _signals._held = None


def test_deferred_leaves_an_ignored_signal_ignored():
    import signal
    import time

    from scgpcl import _signals

    started_with = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with _signals.deferred():
            signal.raise_signal(signal.SIGINT)
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        time.sleep(0.05)  # nothing is delivered afterwards either
    finally:
        signal.signal(signal.SIGINT, started_with)
