"""Quick checks of benchmarks/harness.py (one short training, no subprocesses)."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "harness.py"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("bench_harness", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_harness"] = mod
    spec.loader.exec_module(mod)
    return mod


def _rec(ds, method, seed, ari, **kw):
    r = {"dataset": ds, "method": method, "seed": seed, "overrides": {}, "status": "ok", "K": 3,
         "ARI": ari, "NMI": ari / 2, "CA": 0.5, "F1_macro": 0.5, "wall_s": 10.0 + seed, "peak_rss_mb": 100.0}
    r.update(kw)
    return r


def test_table_mean_sd(harness, tmp_path):
    recs = [_rec("a", "scgpcl_fast", s, v) for s, v in enumerate([0.2, 0.4, 0.9])]
    recs += [_rec("a", "pca_kmeans", s, v) for s, v in enumerate([0.5, 0.5, 0.8])]
    recs += [_rec("b", "scgpcl_fast", 0, 0.7), _rec("b", "pca_kmeans", 0, 0.6)]
    # a failed run and a superseded run must not count
    recs.insert(0, _rec("a", "scgpcl_fast", 0, 0.0, status="error", error="boom"))
    recs.insert(0, _rec("a", "pca_kmeans", 0, 0.99))
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"truncated line\n')
    loaded = harness.load_records(path)
    agg = harness.aggregate(loaded)
    m, sd, n = agg[("a", "scgpcl_fast")]["ARI"]
    assert n == 3 and m == pytest.approx(0.5) and sd == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1))
    m, sd, n = agg[("a", "pca_kmeans")]["ARI"]
    assert n == 3 and m == pytest.approx(0.6)
    assert agg[("b", "pca_kmeans")]["ARI"] == (pytest.approx(0.6), 0.0, 1)
    md = harness.build_table(loaded)
    assert f"| a | 0.500 ± {np.std([0.2, 0.4, 0.9], ddof=1):.3f} | **0.600 ± 0.173** |" in md
    # average over datasets of the per-dataset means
    assert "| **average over datasets** (n) | 0.600 (2) | 0.600 (2) |" in md
    # within-0.05 verdicts: a: gap 0.1 -> no; b: scgpcl_fast best -> yes
    assert "| a | `pca_kmeans` (0.600) | 0.500 | 0.100 | **no** |" in md
    assert "| b | `scgpcl_fast` (0.700) | 0.700 | 0.000 | yes |" in md


def test_resume_skips_existing_and_retries_errors(harness, tmp_path):
    out = tmp_path / "runs.jsonl"
    out.write_text(json.dumps(_rec("x", "pca_kmeans", 0, 0.5)) + "\n"
                   + json.dumps(_rec("x", "pca_kmeans", 1, 0.0, status="error", error="crash")) + "\n")
    calls = []

    def fake(d, m, s, o, **kw):
        calls.append((d, m, s))
        if m == "leiden_tuned" and s == 1:
            return {"dataset": d, "method": m, "seed": s, "overrides": o, "status": "error", "error": "x\nboom",
                    "wall_s": 0.1}
        return _rec(d, m, s, 0.9)

    harness.run_batch(["x"], ["pca_kmeans", "leiden_tuned"], [0, 1], out, runner=fake, threads=1)
    # seed 0 of pca_kmeans was done; seed 1 had only an error line -> retried
    assert calls == [("x", "pca_kmeans", 1), ("x", "leiden_tuned", 0), ("x", "leiden_tuned", 1)]
    calls.clear()
    harness.run_batch(["x"], ["pca_kmeans", "leiden_tuned"], [0, 1], out, runner=fake, threads=1)
    assert calls == [("x", "leiden_tuned", 1)]  # only the one that crashed again
    assert len(harness.latest_ok(harness.load_records(out))) == 3


def test_leiden_search_closest_count(harness):
    import anndata as ad

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 6, size=(4, 10))
    x = np.vstack([c + rng.normal(size=(40, 10)) for c in centres]).astype(np.float32)
    a = ad.AnnData(np.zeros((x.shape[0], 1), dtype=np.float32))
    a.obsm["X_pca"] = x
    grid = (0.05, 0.5, 1.0, 2.0)
    labels, res, counts = harness.leiden_search(a, 4, seed=0, resolutions=grid)
    n = len(np.unique(labels))
    assert counts[res] == n
    assert abs(n - 4) == min(abs(c - 4) for c in counts.values())
    # asking for many clusters picks the finest resolution tried
    labels2, _, counts2 = harness.leiden_search(a, 40, seed=0, resolutions=grid)
    assert abs(len(np.unique(labels2)) - 40) == min(abs(c - 40) for c in counts2.values())
    # ties between cluster counts go to the resolution nearest 1.0
    _, res3, counts3 = harness.leiden_search(a, 4, seed=0, resolutions=(0.5, 1.0, 1.5))
    best = min(abs(c - 4) for c in counts3.values())
    assert res3 == min((r for r, c in counts3.items() if abs(c - 4) == best), key=lambda r: abs(r - 1.0))


def test_parse_overrides(harness):
    got = harness.parse_overrides(["lr=1e-3", "gene_selection=seurat", "feature_drop=[0.1, 0.3]", "finetune=false"])
    assert got == {"lr": 1e-3, "gene_selection": "seurat", "feature_drop": [0.1, 0.3], "finetune": False}
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        harness.parse_overrides(["lr"])


def test_table_notes_go_after_header(harness):
    recs = [_rec("d1", "pca_kmeans", s, 0.5 + 0.1 * s) for s in range(3)]
    text = harness.build_table(recs, notes="## Status (hand-written)\n\nnot done yet\n")
    assert "not done yet" in text
    assert text.index("## Status (hand-written)") < text.index("## Methods")
    assert "hand-written" not in harness.build_table(recs)


def test_run_method_scores_the_pretrained_clustering(harness):
    # one short real training: the record gets the k-means labels that initialised
    # DEC, which the worker scores as ARI_pretrain (the no-fine-tuning ablation)
    from helpers import QUICK, toy_counts

    toy = toy_counts()
    labels, extra = harness.run_method("scgpcl_fast", toy, 3, 0, overrides=QUICK)
    assert labels.shape == extra["pretrain_labels"].shape == (toy.n_obs,)
    assert extra["pretrain_embedding"].shape == (toy.n_obs, 64)
    cos = harness.kmeans_cosine(extra["pretrain_embedding"], 3, 0)
    assert sorted(np.unique(cos)) == [0, 1, 2]
    assert extra["finetune_epochs"] >= 1 and extra["finetune_steps"] >= 1
    _, extra = harness.run_method("fast_no_finetune", toy, 3, 0, overrides=QUICK)
    assert "pretrain_labels" not in extra and extra["finetune_stop"] == "skipped"


def test_paired_comparison_uses_shared_seeds_only(harness):
    recs = [_rec("d1", "a", s, 0.5) for s in (0, 1, 2)] + [_rec("d1", "b", s, 0.7) for s in (0, 1, 2)]
    recs += [_rec("d2", "a", s, 0.9) for s in (0, 1, 2)] + [_rec("d2", "b", 0, 0.1)]  # b has one seed on d2
    recs += [_rec("d3", "a", s, 0.2) for s in (0, 1, 2, 3)] + [_rec("d3", "b", s, 0.3 + 0.1 * s) for s in (1, 2, 3)]
    lines = harness.paired_comparison(recs, ["a", "b"], min_seeds=3)
    text = "\n".join(lines)
    assert "d2" not in text  # too few shared seeds: left out, not averaged over fewer
    d3 = next(line for line in lines if line.startswith("| d3"))
    assert "1,2,3" in d3 and "0.200" in d3 and "0.500" in d3  # seed 0 of method a is not used
    mean_row = next(line for line in lines if "mean over these 2 datasets" in line)
    assert mean_row.endswith("| 0.350 | 0.600 |")
    assert "ahead by > 0.02 on 2" in text
    # paired differences +0.2 (d1) and +0.3 (d3): mean 0.25, sd 0.0707, standard error 0.05
    assert "mean +0.250 (standard error over the datasets 0.050)" in text


def test_relabel_records_the_old_default(harness, tmp_path):
    recs = [
        _rec("a", "scgpcl_fast", 0, 0.5),  # old default: gets it written down
        _rec("a", "scgpcl_fast", 0, 0.6, overrides={"kmeans_warm_start": False}),  # new default: tag dropped
        _rec("a", "fast_no_ins", 0, 0.4, overrides={"lambda_proto": 0.5}),  # other overrides kept
        _rec("a", "pca_kmeans", 0, 0.3),  # baselines have no such setting
        {"dataset": "a", "mode": "auto", "seed": 0, "ARI": 0.2},  # auto_k.jsonl scGPCL run
        {"dataset": "a", "mode": "leiden_res1", "seed": 0, "ARI": 0.1},
    ]
    new, n = harness.relabel(recs, "kmeans_warm_start", True, False)
    assert n == 4
    assert new[0]["overrides"] == {"kmeans_warm_start": True} and "relabelled" in new[0]
    assert new[1]["overrides"] == {}
    assert new[2]["overrides"] == {"lambda_proto": 0.5, "kmeans_warm_start": True}
    assert new[3]["overrides"] == {} and "relabelled" not in new[3]
    assert new[4]["overrides"] == {"kmeans_warm_start": True}
    assert "overrides" not in new[5]
    assert recs[0]["overrides"] == {}  # inputs untouched
    again, n = harness.relabel([*new, _rec("a", "scgpcl_fast", 1, 0.7, overrides={"kmeans_warm_start": False})],
                               "kmeans_warm_start", True, False)
    assert n == 1 and again[:6] == new  # a second pass only touches the new run
    assert again[6]["overrides"] == {}
    # a default that cannot act on some datasets: only the named ones' records change
    two = [_rec("a", "scgpcl_fast", 0, 0.5), _rec("b", "scgpcl_fast", 0, 0.5),
           _rec("b", "scgpcl_fast", 0, 0.6, overrides={"kmeans_warm_start": False})]
    only, n = harness.relabel(two, "kmeans_warm_start", True, False, datasets=["a"])
    assert n == 1 and only[0]["overrides"] == {"kmeans_warm_start": True} and only[1:] == two[1:]

    # the CLI rewrites the file and renames the saved labels to match
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in recs[1::-1]))  # the new name's owner first
    lab = tmp_path / "labels"
    lab.mkdir()
    np.save(lab / harness.labels_file("a", "scgpcl_fast", 0), np.zeros(3))
    np.save(lab / harness.labels_file("a", "scgpcl_fast", 0, {"kmeans_warm_start": False}), np.ones(3))
    harness.main(["relabel", "--key", "kmeans_warm_start", "--old", "true", "--new", "false",
                  "--jsonl", str(f), "--labels-dir", str(lab)])
    assert [r["overrides"] for r in harness.load_records(f)] == [{}, {"kmeans_warm_start": True}]
    assert np.load(lab / harness.labels_file("a", "scgpcl_fast", 0)).sum() == 3  # the new-default run's labels
    assert np.load(lab / harness.labels_file("a", "scgpcl_fast", 0, {"kmeans_warm_start": True})).sum() == 0


def test_undo_relabel_gives_back_the_records_a_page_was_made_from(harness, tmp_path):
    """A page made before a default changed regenerates from its records with that relabelling undone."""
    recs = [_rec("a", "scgpcl_fast", 0, 0.5), _rec("a", "scgpcl_fast", 0, 0.6, overrides={"k2": 5}),
            _rec("a", "fast_no_ins", 0, 0.4, overrides={"lambda_proto": 0.5}), _rec("a", "pca_kmeans", 0, 0.3)]
    first, _ = harness.relabel(recs, "k1", 0, 1)
    later, _ = harness.relabel(first, "k2", 2, 5)
    later, _ = harness.relabel(later, "k2", 5, 7)
    assert later[0]["overrides"] == {"k1": 0, "k2": 2} and later[1]["overrides"] == {"k1": 0, "k2": 5}
    def undo(which):
        out = [harness.undo_relabel(r, which) for r in later]
        for r, before in zip(out, later, strict=True):  # saved labels are found under the on-disk names
            assert r.pop("_label_overrides", before["overrides"]) == before["overrides"]
        return out

    # by key: every relabelling of k2; by exact note: only that one
    assert undo(["k2"]) == first
    one = undo(["k2: default 5 -> 7"])
    assert one[0]["overrides"] == {"k1": 0, "k2": 2} and one[1]["overrides"] == {"k1": 0}
    assert undo(["k1", "k2"]) == recs  # back to the records as run
    # an older relabelling of a key cannot be undone while a newer one of the same key stays
    with pytest.raises(ValueError, match="undo those too"):
        undo(["k2: default 2 -> 5"])
    # the table commands read the records through it
    f = tmp_path / "r.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in later))
    try:
        harness.UNDONE_RELABELS[:] = ["k2"]
        harness.UNDO_MATCHED.clear()
        assert [{k: v for k, v in r.items() if k != "_label_overrides"} for r in harness.load_records(f)] == first
        harness.check_undo_matched()  # k2 undid records: fine
        harness.UNDONE_RELABELS[:] = ["k2", "lambda_ins_cell"]  # a typo matches nothing: refused
        with pytest.raises(SystemExit, match="'lambda_ins_cell' matched no relabelled record"):
            harness.check_undo_matched()
    finally:
        harness.UNDONE_RELABELS[:] = []
        harness.UNDO_MATCHED.clear()
    assert harness.load_records(f) == later


def test_relabel_preset_filter_leaves_the_other_preset_alone(harness):
    # a default that changed in the fast preset only must not be written into faithful runs
    recs = [_rec("a", "scgpcl", 0, 0.5), _rec("a", "scgpcl_fast", 0, 0.6), _rec("a", "fast_mlp", 0, 0.4),
            {"dataset": "a", "mode": "auto", "seed": 0, "ARI": 0.2}]
    new, n = harness.relabel(recs, "convergence_patience", 0, 15, preset="fast")
    assert n == 3
    assert new[0].get("overrides") == {} and "relabelled" not in new[0]
    assert [r["overrides"] for r in new[1:]] == [{"convergence_patience": 0}] * 3
    _, n_all = harness.relabel(recs, "convergence_patience", 0, 15)
    assert n_all == 4


def test_auto_k_pairs_runs_of_the_same_configuration(harness, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_auto_k", HARNESS.parent / "auto_k.py")
    auto_k = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(auto_k)
    monkeypatch.setattr(auto_k, "RESULTS", tmp_path)
    monkeypatch.setattr(auto_k, "JSONL", tmp_path / "auto_k.jsonl")
    old = {"kmeans_warm_start": True}
    (tmp_path / "real.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        _rec("a", "scgpcl_fast", 0, 0.9), _rec("a", "scgpcl_fast", 1, 0.8, overrides=old),
        _rec("a", "pca_kmeans", 0, 0.7)]))
    (tmp_path / "auto_k.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"dataset": "a", "mode": "auto", "seed": 1, "ARI": 0.5, "overrides": old},
        {"dataset": "a", "mode": "auto", "seed": 2, "ARI": 0.4},
        {"dataset": "a", "mode": "leiden_res1", "seed": 0, "ARI": 0.3}]))
    got = auto_k.all_records(["a"], old)
    assert sorted((r["mode"], r["seed"], r["ARI"]) for r in got) == [
        ("auto", 1, 0.5), ("leiden_res1", 0, 0.3), ("true", 1, 0.8)]
    got = auto_k.all_records(["a"], {})
    assert sorted((r["mode"], r["seed"], r["ARI"]) for r in got) == [
        ("auto", 2, 0.4), ("leiden_res1", 0, 0.3), ("true", 0, 0.9)]


def test_derived_no_finetune_rows_and_variants_kept_apart(harness):
    # scgpcl_fast runs carry the pre-DEC scores; fast_no_finetune is read from them
    recs = [_rec("a", "scgpcl_fast", s, 0.8, ARI_pretrain=v, NMI_pretrain=0.3, CA_pretrain=0.4, finetune_s=4.0)
            for s, v in enumerate([0.1, 0.2, 0.3])]
    # a real no-finetune run for seed 2 wins over the derived one
    recs.append(_rec("a", "fast_no_finetune", 2, 0.9))
    # an old run under an earlier default: its own section, not the main table or the best-method check
    recs.append(_rec("a", "scgpcl_fast", 0, 0.99, overrides={"convergence_patience": 0}))
    derived = harness.derive_records(recs)
    assert sorted(r["seed"] for r in derived) == [0, 1]
    assert all(r["method"] == "fast_no_finetune" and r["derived_from"] == "scgpcl_fast" for r in derived)
    assert [r["ARI"] for r in sorted(derived, key=lambda r: r["seed"])] == [0.1, 0.2]
    assert derived[0]["wall_s"] == pytest.approx(derived[0]["seed"] + 10.0 - 4.0)
    assert "peak_rss_mb" not in derived[0] and "ARI_pretrain" not in derived[0]
    md = harness.build_table(recs)
    ari = md.split("## ARI\n")[1].split("## NMI")[0]
    assert "| `scgpcl_fast` | `fast_no_finetune` |" in ari and "convergence_patience" not in ari
    assert f"| a | **0.800 ± 0.000** | {np.mean([0.1, 0.2, 0.9]):.3f} ± {np.std([0.1, 0.2, 0.9], ddof=1):.3f} |" in ari
    assert "## Variants: runs with config overrides (ARI)" in md
    assert "| a | **0.990 (1 seed)** |" in md.split("## Variants")[1]
    assert "| a | `scgpcl_fast` (0.800) | 0.800 | 0.000 | yes |" in md


def test_machine_spread_pairs_seeds_and_ignores_variants(harness, tmp_path):
    spec = importlib.util.spec_from_file_location("bench_spread", HARNESS.parent / "machine_spread.py")
    spread = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(spread)
    a = [_rec("d1", "m", s, v, machine="X") for s, v in zip((0, 1, 2), (0.5, 0.6, 0.7), strict=True)]
    a += [_rec("d1", "m", 0, 0.0, machine="X", overrides={"lr": 1.0})]  # a variant: not the method's default
    b = [_rec("d1", "m", s, v, machine="Y") for s, v in zip((0, 1, 3), (0.5, 0.9, 0.1), strict=True)]
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    pa.write_text("".join(json.dumps(r) + "\n" for r in a))
    pb.write_text("".join(json.dumps(r) + "\n" for r in b))
    text = "\n".join(spread.spread_table(str(pa), str(pb), "m"))
    row = next(line for line in text.splitlines() if line.startswith("| d1"))
    # shared seeds 0 and 1 only: |0.5 - 0.5| and |0.6 - 0.9| -> 0.150; seed 0 identical
    assert "| 0,1 |" in row and "0.550" in row and "0.700" in row
    assert row.endswith("| 0.150 | 1 of 2 |")
    assert "(X)" in text and "(Y)" in text and "1 pairs identical" in text


def test_compare_machine_filter_keeps_one_machine(harness, tmp_path, capsys):
    recs = [_rec("d", "a", s, 0.5, machine="Intel X") for s in (0, 1, 2)]
    recs += [_rec("d", "a", s, 0.9, machine="AMD Y") for s in (0, 1, 2)]
    recs += [_rec("d", "b", s, 0.8, machine="AMD Y") for s in (0, 1, 2)]
    p1, p2 = tmp_path / "intel.jsonl", tmp_path / "amd.jsonl"
    p1.write_text("".join(json.dumps(r) + "\n" for r in recs[:3]))
    p2.write_text("".join(json.dumps(r) + "\n" for r in recs[3:]))
    harness.main(["compare", "--jsonl", str(p1), str(p2), "--machine", "AMD", "--methods", "a", "b"])
    out = capsys.readouterr().out
    assert "matching `AMD`" in out and "mean -0.100" in out  # a's AMD runs (0.9), not its Intel ones


def test_dec_diagnostics_compare_two_clusterings(harness):
    rng = np.random.default_rng(0)
    z = np.vstack([rng.normal(0, 1, (100, 5)), rng.normal(8, 1, (100, 5))])
    true = np.repeat([0, 1], 100)
    same = harness.dec_diagnostics(z, true, true.copy(), seed=0)
    assert same["dec_agreement"] == pytest.approx(1.0)
    assert same["silhouette_pre"] == same["silhouette_post"] > 0.5
    assert same["size_entropy_pre"] == pytest.approx(1.0)  # two equal clusters
    # a clustering that cuts across the blobs, with uneven sizes
    worse = np.where(np.arange(200) < 150, 0, 1)
    d = harness.dec_diagnostics(z, true, worse, seed=0)
    assert d["silhouette_post"] < d["silhouette_pre"]
    assert d["dec_agreement"] < 0.6
    assert d["size_entropy_post"] < d["size_entropy_pre"]
    # at most max_cells cells are scored, the same ones for both clusterings
    small = harness.dec_diagnostics(z, true, true.copy(), seed=0, max_cells=50)
    assert small["silhouette_pre"] == small["silhouette_post"]
