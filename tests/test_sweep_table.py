"""benchmarks/sweep.py table: columns only for the methods run on each part."""

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("bench_sweep", BENCH / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _rec(ds, method, seed, ari, **kw):
    r = {"dataset": ds, "method": method, "seed": seed, "overrides": {}, "status": "ok", "K": 3, "ARI": ari,
         "NMI": ari, "CA": ari, "wall_s": 1.0, "dropout_rate": 22.0}
    r.update(kw)
    return r


def test_sweep_table_columns_follow_the_runs():
    sweep = _load()
    recs = [_rec("sim:SimT3_1", m, s, 0.9) for m in ("scgpcl_fast", "pca_kmeans") for s in (0, 1, 2)]
    recs += [_rec("SimT3_3", "fast_no_ins", 0, 0.5), _rec("SimT3_3", "scgpcl_fast", 0, 0.99)]
    text = sweep.build_table(recs, notes=None)  # the table alone: the hand-written notes have tables of their own
    dropout3 = text[text.index("### dropout, 3 groups"):text.index("### dropout, 6 groups")]
    assert "`fast_no_ins`" not in dropout3  # never run on the sweep: no column of dashes
    assert "| SimT3_1 | 22.00 | 0.900 ± 0.000" in dropout3
    assert "Not run yet." in text[text.index("### signal"):]
    ref = text[text.index("### Reference"):]
    assert "`fast_no_ins` ARI (Splatter file)" in ref
    assert "`fast_no_ins` ARI (our sim" not in ref and "`scgpcl_fast` ARI (our sim" not in ref
    for line in ref.splitlines():
        if line.startswith("|"):
            assert line.count("|") == 5, line  # file, dropout, 2 method columns: every row the same width
