"""The HTML report: its files and contents, atomic writing, and how it renders in a browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import scgpcl
from scgpcl import InputError, tl
from scgpcl.report import REPORT_FILES, write_report

from helpers import TINY, clustered


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    a = clustered()
    out = tmp_path_factory.mktemp("rep") / "report"
    write_report(a, out, dataset_name="toy <data>")
    return a, out


def _leftovers(parent) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_report_files_and_html(report):
    a, out = report
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT_FILES)
    page = (out / "index.html").read_text()
    m = a.uns["scgpcl"]["metrics"]
    assert f"{m['ARI']:.4f}" in page and f"{m['NMI']:.4f}" in page and f"{m['CA']:.4f}" in page
    # five embedded figures (UMAP, contingency, sizes, training curves, marker dot plot), no external files
    assert page.count('src="data:image/png;base64,') == 5
    for fid in ("umap", "contingency", "sizes", "curves", "markers"):
        assert f'id="fig-{fid}"' in page
    assert "<script" not in page and 'src="http' not in page and "href=\"http" not in page
    assert "toy &lt;data&gt;" in page  # user text is escaped
    for section in ("Summary", "Preprocessing", "Parameters", "Environment", "Marker genes", "Training"):
        assert f"<h2>{section}" in page
    assert "torch" in page and "scanpy" in page  # package versions
    # the versions the run trained with (recorded in params), beside this report's, not in the run's table
    import torch

    assert "<th>trained with</th>" in page and page.count(f"<td>{torch.__version__}</td>") == 2
    assert "{&#x27;python&#x27;" not in page and "{'python'" not in page
    top = scgpcl.tl.markers(a, n_genes=1)["gene"]
    assert all(f">{g}</span>" in page for g in top)  # top marker of each cluster listed


def test_report_names_the_feature_scaling(report, tmp_path):
    """The preprocessing section says how cells were scaled (the median or target_sum) and, when the default
    chose the scaling, the silhouettes it chose by."""
    a, out = report
    params = a.uns["scgpcl"]["params"]
    scores = {t: float(v) for t, v in params["target_sum_silhouettes"].items()}
    assert set(scores) == {"0", "10000"}
    chosen = float(params["config"]["preprocess.target_sum"])
    assert chosen == float(max(scores, key=scores.get))
    page = (out / "index.html").read_text()
    scaled = "counts scaled to 10000 per cell (over all genes)" if chosen else "counts scaled to the median library size"
    assert (f"{scaled} (chosen per dataset by the k-means silhouette on a sample: {scores['0']:.3f} for median, "
            f"{scores['10000']:.3f} for 10000), log1p") in page
    c = a.copy()  # a run with K estimated that chose its scaling at a provisional K
    c.uns["scgpcl"]["params"]["provisional_k"] = 7
    write_report(c, tmp_path / "r1")
    assert "chosen per dataset by the k-means silhouette at a provisional K=7 on a sample: " in \
        (tmp_path / "r1" / "index.html").read_text()
    b = a.copy()  # a run that was given its scaling
    del b.uns["scgpcl"]["params"]["target_sum_silhouettes"]
    b.uns["scgpcl"]["params"]["config"]["preprocess.target_sum"] = 10000.0
    write_report(b, tmp_path / "r2")
    assert "counts scaled to 10000 per cell (over all genes), log1p" in (tmp_path / "r2" / "index.html").read_text()
    b.uns["scgpcl"]["params"]["config"]["preprocess.target_sum"] = 0.0
    write_report(b, tmp_path / "r3")
    assert "counts scaled to the median library size, log1p" in (tmp_path / "r3" / "index.html").read_text()


def test_report_metrics_json_and_clusters_tsv(report):
    a, out = report
    record = json.loads((out / "metrics.json").read_text())
    assert record["label_key"] == "cell_type"  # taken from uns['scgpcl']['metrics']
    assert record["metrics"]["ARI"] == pytest.approx(a.uns["scgpcl"]["metrics"]["ARI"])
    assert record["n_clusters"] == 3 and sum(record["cluster_sizes"].values()) == a.n_obs
    assert set(record["stages"]) == {"pretrain", "finetune"} and "torch" in record["versions"]
    assert record["runs"] is None and record["auto_k"] is None  # one run, K given
    tsv = pd.read_csv(out / "clusters.tsv", sep="\t", dtype=str)
    assert list(tsv.columns) == ["cell", "cluster", "cell_type"] and len(tsv) == a.n_obs
    assert (tsv["cluster"].to_numpy() == a.obs["scgpcl"].astype(str).to_numpy()).all()
    assert (tsv["cell_type"].to_numpy() == a.obs["cell_type"].astype(str).to_numpy()).all()


def test_metrics_json_and_clusters_tsv_carry_the_runs_and_the_k_estimate(tmp_path):
    # the page showed the --runs record and the K estimate; metrics.json and clusters.tsv left them out
    from helpers import toy_counts

    a = toy_counts(n_per=30)
    tl.cluster(a, n_clusters=3, random_state=0, n_runs=2, progress=False, **TINY)
    a.uns["scgpcl"]["auto_k"] = {"k": 3, "method": "consensus", "estimates": {"eigengap": 3}}  # as -k auto records
    a.write_h5ad(tmp_path / "a.h5ad")  # as 'scgpcl report' reads it: the runs' K came back as an array, and
    a = ad.read_h5ad(tmp_path / "a.h5ad")  # the report failed on `ks or []` (ValueError: truth value ...)
    a.obs.loc[a.obs_names[0], "scgpcl_agreement"] = np.nan  # a cell not clustered: NA, as R and pandas read it
    write_report(a, tmp_path / "r")
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    runs = a.uns["scgpcl"]["runs"]
    assert record["runs"]["seeds"] == [0, 1] and record["runs"]["chosen_seed"] == runs["chosen_seed"]
    assert record["runs"]["mean_ari"] == pytest.approx(runs["mean_ari"])
    assert np.allclose(record["runs"]["ari"], np.asarray(runs["ari"]))
    assert record["auto_k"] == {"k": 3, "method": "consensus", "estimates": {"eigengap": 3}}
    tsv = pd.read_csv(tmp_path / "r" / "clusters.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(tsv.columns) == ["cell", "cluster", "agreement"]
    assert tsv["agreement"][0] == "NA"
    np.testing.assert_allclose(tsv["agreement"][1:].astype(float), a.obs["scgpcl_agreement"][1:], rtol=1e-3)
    # the page's training time is the kept run's stages: said so (the command's summary counted every run)
    seconds = sum(st["seconds"] for st in a.uns["scgpcl"]["stages"].values())
    assert f'<div class="v">{seconds:.0f} s (kept run of 2)</div>' in (tmp_path / "r" / "index.html").read_text()


def test_report_without_labels(tmp_path):
    a = clustered()
    del a.uns["scgpcl"]["metrics"]
    a.obs = a.obs.drop(columns="cell_type")
    write_report(a, tmp_path / "r")
    page = (tmp_path / "r" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and 'id="fig-contingency"' not in page
    assert "No reference labels" in page
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"] is None


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (lambda a: a.obs.drop(columns="scgpcl", inplace=True), {}, "tl.cluster"),
        (lambda a: a.obsm.pop("X_scgpcl"), {}, "X_scgpcl"),
        (lambda a: None, {"label_key": "nope"}, "nope"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, change, kwargs, message):
    a = clustered()
    change(a)
    with pytest.raises(InputError, match=message):
        write_report(a, tmp_path / "r", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_failure_midway_leaves_no_half_report(tmp_path, monkeypatch, report):
    a = clustered()
    out = tmp_path / "r"
    shutil.copytree(report[1], out)  # an earlier report, which must survive
    before = (out / "index.html").read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(scgpcl.pl, "marker_dotplot", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        write_report(a, out, overwrite=True)
    assert (out / "index.html").read_bytes() == before
    assert _leftovers(tmp_path) == []
    with pytest.raises(RuntimeError):
        write_report(a, tmp_path / "new")
    assert not (tmp_path / "new").exists() and _leftovers(tmp_path) == []


def test_a_signal_between_the_renames_neither_hides_the_old_report_nor_loses_the_new(tmp_path, monkeypatch, report):
    """SIGTERM just after the old report was moved aside left it in a hidden folder, with no report in place."""
    import os
    import signal

    import scgpcl.report as rep
    from scgpcl import _signals

    a = clustered()
    out = tmp_path / "r"
    shutil.copytree(report[1], out)
    real = os.rename

    def rename_then_signal(src, dst):
        real(src, dst)
        if ".old-" in str(dst):  # the old report moved aside: the moment the signal used to cost it
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(rep.os, "rename", rename_then_signal)
    with _signals.handled(), pytest.raises(KeyboardInterrupt) as caught:
        write_report(a, out, overwrite=True)
    assert caught.value.written == [str(out / "index.html")]  # the new report is complete, and said to be
    assert (out / "index.html").is_file() and _leftovers(tmp_path) == []


def test_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not an scgpcl report"):
        write_report(clustered(), tmp_path / "r")
    assert (tmp_path / "r" / "thesis.tex").read_text() == "precious"
    with pytest.raises(InputError, match="does not exist"):
        write_report(clustered(), tmp_path / "no" / "such" / "r")


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    import matplotlib.image as mpimg

    _, out = report
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400",
         f"--screenshot={shot}", (out / "index.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.exists(), proc.stderr[-2000:]
    img = mpimg.imread(shot)
    assert img.shape[:2] == (2400, 1280)
    rgb = img[..., :3]
    # not a blank page: a light background with dark text and the coloured figures
    assert np.median(rgb) > 0.9
    assert (rgb.max(axis=2) < 0.3).mean() > 0.002
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.3
    assert colourful.mean() > 0.01


def test_report_counts_empty_clusters(tmp_path):
    a = clustered()
    a.obs["scgpcl"] = a.obs["scgpcl"].cat.add_categories(["3"])
    write_report(a, tmp_path / "r")
    page = (tmp_path / "r" / "index.html").read_text()
    assert '<div class="v">3 of 4</div>' in page and "1 of the 4 clusters ended empty after fine-tuning" in page
    assert "--no-finetune" in page and "finetune=False" in page  # what to try, for both kinds of user
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["cluster_sizes"]["3"] == 0


def test_dataset_table_counts_the_clusters_in_the_column_and_the_trained_k(tmp_path):
    """Clusters merged after training: the Dataset table shows the clusters the report describes, and the K
    trained with beside them (it showed the recorded K only)."""
    import html

    a = clustered()
    write_report(a, tmp_path / "r")
    page = html.unescape((tmp_path / "r" / "index.html").read_text())
    assert "<div>clusters (K)</div><div>3</div>" in page and "trained with K" not in page
    a.obs["scgpcl"] = pd.Categorical(a.obs["scgpcl"].astype(str).replace({"2": "1"}))
    write_report(a, tmp_path / "merged")
    page = html.unescape((tmp_path / "merged" / "index.html").read_text())
    assert "<div>clusters (K)</div><div>2 (trained with K = 3)</div>" in page


def test_cells_without_a_cluster_in_the_column_are_counted_as_they_are_now(tmp_path):
    """Cells set to NaN in the cluster column after training: the Dataset table kept training's count of
    clustered cells, and the note blamed 'no counts in the genes used' for them."""
    import html

    a = clustered()
    assert a.uns["scgpcl"]["params"]["n_cells_dropped"] == 0
    a.obs.loc[a.obs_names[:3], "scgpcl"] = np.nan
    write_report(a, tmp_path / "r")
    page = html.unescape((tmp_path / "r" / "index.html").read_text())
    assert f"<div>cells clustered</div><div>{a.n_obs - 3}</div>" in page
    assert "3 cells have no cluster in obs['scgpcl']." in page and "no counts in the genes used and" not in page


def test_empty_reference_labels_are_not_scored_as_a_type(tmp_path):
    """'' was a label class of its own: a perfect clustering scored CA and macro F1 below 1, the contingency
    table had a column without a name and the summary counted an extra group."""
    import html

    a = clustered()
    a.obs["ref"] = a.obs["scgpcl"].astype(str).to_numpy()
    a.obs.loc[a.obs_names[:4], "ref"] = ""
    write_report(a, tmp_path / "r", label_key="ref")
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())["metrics"]
    assert record["CA"] == record["F1_macro"] == record["ARI"] == 1.0 and record["n_cells"] == a.n_obs - 4
    page = html.unescape((tmp_path / "r" / "index.html").read_text())
    assert "obs['ref'], 3 groups" in page

def test_a_run_from_before_rounds_is_reported_in_rounds_and_not_claimed_repeatable(tmp_path):
    """Outputs of an scgpcl from before 2026-12-04 count epochs: metrics.json kept 'epochs' (a script reading
    'rounds' failed), and the report said the recorded configuration repeats the run (ARI 0.5 against its own
    labels when tried)."""
    import html

    a = clustered()
    info = a.uns["scgpcl"]
    for stage in info["stages"].values():
        stage["epochs"] = stage.pop("rounds")
    for h in info["history"].values():
        h["epoch"] = h.pop("round")
    write_report(a, tmp_path / "r")
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert all("rounds" in st and "epochs" not in st for st in record["stages"].values())
    page = html.unescape((tmp_path / "r" / "index.html").read_text())
    assert "made by an scgpcl from before 2026-12-04" in page and "repeats it" not in page
    write_report(clustered(), tmp_path / "today")
    assert "from before 2026-12-04" not in (tmp_path / "today" / "index.html").read_text()

def test_cluster_table_names_each_clusters_matched_label(tmp_path):
    a = clustered()
    permuted = {"0": "c", "1": "a", "2": "b"}
    a.obs["ref"] = pd.Categorical(a.obs["scgpcl"].astype(str).map(permuted))
    write_report(a, tmp_path / "r", label_key="ref")
    page = (tmp_path / "r" / "index.html").read_text()
    assert '<th>most common ref</th><th class="num">% of its labelled cells</th><th>matched label (CA)</th>' in page
    for cluster, label in permuted.items():  # cluster, cells, %, most common label, its share, matched label
        assert f'<tr><td>{cluster}</td><td class="num">' in page
        row = page.split(f'<tr><td>{cluster}</td><td class="num">', 1)[1].split("</tr>", 1)[0]
        assert row.endswith(f'<td>{label}</td><td class="num">100</td><td>{label}</td>')
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert record["matched_labels"] == permuted
    assert record["most_common_labels"] == {c: {"label": lab, "share": 1.0} for c, lab in permuted.items()}


def test_a_cluster_is_not_shown_as_a_label_it_holds_no_cell_of(tmp_path):
    # a biologist's review: the matching pairs every cluster it can, so a ductal cluster was shown as "matched
    # gamma, 0 %", gamma cells took its colour on the UMAP, and the contingency figure outlined other empty pairs
    from scgpcl import pl

    a = clustered()
    c = a.obs["scgpcl"].astype(str).to_numpy()
    ref = np.where(c == "0", "a", np.where(c == "1", "a", "b")).astype(object)
    ref[np.flatnonzero(c == "2")[:3]] = "c"  # c shares cells with cluster 2 only, which is b's
    a.obs["ref"] = pd.Categorical(ref)
    write_report(a, tmp_path / "r", label_key="ref")
    record = json.loads((tmp_path / "r" / "metrics.json").read_text())
    matched = record["matched_labels"]
    assert sorted(v for v in matched.values() if v is not None) == ["a", "b"]  # c's Hungarian pair shares no cell
    unpaired = next(k for k, v in matched.items() if v is None)
    assert record["most_common_labels"][unpaired]["label"] == "a"
    row = (tmp_path / "r" / "index.html").read_text().split(f'<tr><td>{unpaired}</td><td class="num">', 1)[1]
    assert row.split("</tr>", 1)[0].endswith('<td>a</td><td class="num">100</td><td>–</td>')
    clusters, labels = pl.matched_palettes(a, "scgpcl", "ref")
    assert labels["c"] not in clusters.values()  # c takes no cluster's colour
    fig = pl.contingency(a, label_key="ref")
    outlined = [p for p in fig.axes[0].patches if p.get_edgecolor()[:3] != (0.0, 0.0, 0.0)]
    assert len(outlined) == 2  # the two pairs that share cells, as in the table


def test_report_from_python_says_no_command_was_recorded_and_names_the_cpu(tmp_path):
    from scgpcl._machine import cpu_model

    a = clustered()
    assert a.uns["scgpcl"]["params"]["cpu"] == cpu_model()  # tl.cluster records the CPU model
    write_report(a, tmp_path / "r")
    page = (tmp_path / "r" / "index.html").read_text()
    assert "Reproduce this run" in page and "No command line was recorded (a run from Python" in page
    assert f"Trained on {cpu_model()}" in page


def test_report_without_markers_when_every_cluster_is_a_single_cell(small_toy, tmp_path):
    # K = number of cells: the report failed as a whole because no cluster can be tested for markers
    from scgpcl.report import write_report

    a = small_toy.copy()
    tl.cluster(a, n_clusters=a.n_obs, label_key="cell_type", progress=False, **TINY)
    a.obs["scgpcl"] = pd.Categorical([str(i) for i in range(a.n_obs)])  # one cell each, whatever DEC kept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_report(a, tmp_path / "rep", key="scgpcl", label_key="cell_type")
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "No marker genes:" in page and "2 or more cells" in page
    assert (tmp_path / "rep" / "metrics.json").exists()
    # only a clustering without testable clusters is reported this way; a bad argument is still an error
    a.obs["scgpcl"] = pd.Categorical(a.obs["cell_type"].astype(str))
    with pytest.raises(InputError, match="n_genes must be a whole number >= 1, got 0"):
        write_report(a, tmp_path / "rep2", key="scgpcl", label_key="cell_type", n_markers=0)
    assert not (tmp_path / "rep2").exists()
    for bad in (None, 2.5, "3", True):  # None was a TypeError from int(); 2.5 and True were taken as 2 and 1
        with pytest.raises(InputError, match=r"n_genes must be a whole number >= 1, got " + repr(bad).replace(".", r"\.")):
            scgpcl.tl.markers(a, key="scgpcl", n_genes=bad)
    assert scgpcl.tl.markers(a, key="scgpcl", n_genes=np.int64(2)).groupby("cluster", observed=True).size().max() == 2


def test_an_earlier_report_is_replaced_only_with_overwrite(tmp_path, report):
    # the README promises that no output is replaced without --overwrite; reports were
    out = tmp_path / "r"
    shutil.copytree(report[1], out)
    before = (out / "index.html").read_bytes()
    with pytest.raises(InputError, match=r"holds an earlier report; pass overwrite=True to replace it"):
        write_report(clustered(), out, dataset_name="another run")
    assert (out / "index.html").read_bytes() == before and _leftovers(tmp_path) == []
    write_report(clustered(), out, dataset_name="another run", overwrite=True)
    assert "another run" in (out / "index.html").read_text()
    (tmp_path / "empty").mkdir()  # an empty folder needs no permission
    write_report(clustered(), tmp_path / "empty")
    assert (tmp_path / "empty" / "index.html").exists()


def test_a_report_folder_given_as_a_symbolic_link_is_written_where_it_points(tmp_path):
    # the link was replaced by a real folder, the target left empty and a hidden '.rep.old-*' link left behind
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "rep").symlink_to(target)
    write_report(clustered(), tmp_path / "rep")
    assert (target / "index.html").exists() and (tmp_path / "rep").is_symlink()
    assert _leftovers(tmp_path) == []


def test_markers_of_tiny_clusters_are_flagged_not_dropped(tmp_path):
    # a biologist's review: a 2-cell cluster's "top genes" (adj. p 0.999) looked like markers, and a 1-cell
    # cluster was missing from the table
    a = clustered()
    labels = a.obs["scgpcl"].astype(str).to_numpy().astype(object)
    labels[0], labels[1:3] = "9", "8"
    a.obs["scgpcl"] = pd.Categorical(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "clusters with fewer than 2 cells have no markers: 9"
        write_report(a, tmp_path / "r")
    page = (tmp_path / "r" / "index.html").read_text().split('<section id="markers">', 1)[1]
    row9 = page.split('<tr><td>9</td><td class="num">1</td>', 1)[1].split("</tr>", 1)[0]
    assert "no test: fewer than 2 cells" in row9
    row8 = page.split('<tr><td>8</td><td class="num">2</td>', 1)[1].split("</tr>", 1)[0]
    assert row8.count('class="gene ns"') == row8.count('class="gene') > 0  # none significant with 2 cells
    row0 = page.split('<tr><td>0</td><td class="num">', 1)[1].split("</tr>", 1)[0]
    assert 'class="gene"' in row0  # the large clusters' markers are
    # an empty cluster (a category no cell is in) says so
    a.obs["scgpcl"] = a.obs["scgpcl"].cat.add_categories(["7"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_report(a, tmp_path / "r2")
    page = (tmp_path / "r2" / "index.html").read_text().split('<section id="markers">', 1)[1]
    assert '<tr><td>7</td><td class="num">0</td><td><span class="note">empty: no cells</span></td></tr>' in page


def test_numeric_reference_labels_are_matched_as_they_are_named(tmp_path):
    # a review: float32 labels were '0.10000000149011612' in one place and '0.1' in another, and the
    # contingency figure raised ValueError
    from scgpcl import pl

    a = clustered()
    a.obs["ref"] = a.obs["scgpcl"].astype(str).map({"0": 0.1, "1": 0.2, "2": 0.3}).astype(np.float32)
    fig = pl.contingency(a, label_key="ref")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0.1", "0.2", "0.3"]
    assert len([p for p in fig.axes[0].patches if p.get_edgecolor()[:3] != (0.0, 0.0, 0.0)]) == 3


def test_a_report_of_a_written_file_lists_the_settings_as_the_run_did(tmp_path):
    # a biologist's review: after the .h5ad round trip (which sorts uns by name) the parameter and
    # loss-history tables came out alphabetically
    import anndata

    a = clustered()
    a.write_h5ad(tmp_path / "c.h5ad")
    b = anndata.read_h5ad(tmp_path / "c.h5ad")
    assert list(b.uns["scgpcl"]["params"]["config"]) != list(a.uns["scgpcl"]["params"]["config"])  # sorted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_report(a, tmp_path / "ra")
        write_report(b, tmp_path / "rb")

    def part(folder, start, end):
        page = (tmp_path / folder / "index.html").read_text()
        return page.split(start, 1)[1].split(end, 1)[0]

    for start, end in (('<section id="parameters">', "</section>"), ("loss terms of all", "</details>")):
        assert part("ra", start, end) == part("rb", start, end)
    grouped = part("ra", '<section id="parameters">', "</section>")
    assert grouped.index("<td>encoder_dims</td>") < grouped.index("<td>batch_size</td>")  # model, then sampler
