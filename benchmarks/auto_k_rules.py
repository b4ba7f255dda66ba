"""Rules for the unknown-K estimate, chosen on one half of the datasets and confirmed on the other.

Input: the representations that ``n_clusters=None`` estimates K on, saved by
``python benchmarks/auto_k.py warmup --seed S --emb-dir DIR`` (package defaults,
stopped at the estimate). ``score`` computes, once per representation, what
every rule needs: the eigenvalues of the kNN graph's normalised Laplacian
(``eigengap``), the Leiden scan over the resolutions (cluster count,
stability, modularity; the package's code, with a longer resolution grid)
and, as a proxy for the end-to-end result, the ARI of k-means (5 restarts)
at every K. ``analyse`` applies each rule and scores it per half
(``CHOOSE`` / ``CONFIRM`` of ``embeddings.py``, fixed before any result).

The rules were written down before the scores were looked at; see RULES.

    python benchmarks/auto_k_rules.py score --emb-dir DIR          # -> runs/auto_k_rules.jsonl
    python benchmarks/auto_k_rules.py score --emb-dir DIR --pca-weight 0.5 \
        --out benchmarks/results/auto_k_rules_joined.jsonl
    python benchmarks/auto_k_rules.py analyse                      # -> results/auto_k_rules.md

``--pca-weight`` scores the representation joined with the features' principal components
(``train/_joined.py``, the default k-means start's space); ``warmup`` saves them beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embeddings import CHOOSE, CONFIRM

from scgpcl._machine import cpu_model

REPO = Path(__file__).resolve().parents[1]
SCORES = REPO / "benchmarks" / "results" / "auto_k_rules.jsonl"
MD = REPO / "benchmarks" / "results" / "auto_k_rules.md"
#: the same rules on the representation joined with the features' PCs (``score --pca-weight``)
JOINED_SCORES = REPO / "benchmarks" / "results" / "auto_k_rules_joined.jsonl"
#: What the table shows and the decision, written by hand (appended to the generated page).
NOTES = REPO / "benchmarks" / "results" / "auto_k_rules_notes.md"
#: The package's grid (``_auto_k.RESOLUTIONS``) and two finer resolutions.
GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0)


def score(args) -> None:
    from sklearn.metrics import adjusted_rand_score

    from scgpcl.train import _auto_k
    from scgpcl.train._kmeans import kmeans

    out = Path(args.out)
    done = set()
    if out.exists():
        done = {(r["dataset"], r["seed"]) for r in map(json.loads, out.read_text().splitlines())}
    for f in sorted(Path(args.emb_dir).glob("*.npz")):
        name, seed = f.stem.rsplit("_s", 1)
        if (name, int(seed)) in done:
            continue
        d = np.load(f, allow_pickle=True)
        z, y, k_true = d["z"], d["labels"].astype(str), int(d["k"])
        if args.pca_weight > 0:  # the space the default start k-means uses (train/_joined.py)
            import torch

            from scgpcl.train._joined import joined_space

            z = joined_space(torch.from_numpy(z), d["pcs"], args.pca_weight)
        seed = int(seed)
        eig = _auto_k.eigengap_k(z, seed=seed)
        k, stab, mod, _ok, _ = _auto_k._leiden_scan(z, k_max=30, seed=seed, n_neighbors=15, resolutions=GRID,
                                                   n_runs=4, fraction=0.9)
        ks = _auto_k.candidate_ks(len(z))
        ari = {int(kk): float(adjusted_rand_score(y, kmeans(z, int(kk), n_init=5, seed=seed).labels)) for kk in ks}
        rec = {"dataset": name, "seed": seed, "k_true": k_true, "n": len(z), "pca_weight": args.pca_weight,
               "ks": ks.tolist(),
               "eigenvalue": eig.curve["eigenvalue"].tolist(), "k_eigengap": eig.k,
               "resolution": list(GRID), "leiden_k": k.tolist(), "stability": stab.tolist(),
               "modularity": mod.tolist(), "kmeans_ari": ari,
               "scored_on": cpu_model()}  # the CPU of this scoring; the representations come from embeddings.py
        with out.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        print(name, seed, "true", k_true, "eig", eig.k, "leiden", k.tolist(), flush=True)


# ---------------------------------------------------------------- the rules
def _clip(k: float, r: dict) -> int:
    return int(np.clip(int(round(k)), r["ks"][0], r["ks"][-1]))


def _leiden(r: dict, grid=None):
    """(k, stab, mod, ok) restricted to ``grid`` (default: the package's resolutions)."""
    from scgpcl.train._auto_k import RESOLUTIONS

    keep = np.isin(np.round(r["resolution"], 6), np.round(grid or RESOLUTIONS, 6))
    k, stab, mod = (np.asarray(r[c])[keep] for c in ("leiden_k", "stability", "modularity"))
    ok = (k >= r["ks"][0]) & (k <= r["ks"][-1])
    return k, stab, mod, ok if ok.any() else np.ones_like(ok)


def _stab(r, grid=None):
    k, stab, _, ok = _leiden(r, grid)
    score = np.where(ok, stab, -np.inf)
    best = np.flatnonzero(score >= score.max() - 1e-9)
    return _clip(k[best[np.argmax(k[best])]], r)


def _mod(r, grid=None):
    k, _, mod, ok = _leiden(r, grid)
    return _clip(k[int(np.argmax(np.where(ok, mod, -np.inf)))], r)


def _mod_plateau(r, tol, grid=None):
    """The finest resolution whose modularity is within ``tol`` (relative) of the best."""
    k, _, mod, ok = _leiden(r, grid)
    m = np.where(ok, mod, -np.inf)
    good = np.flatnonzero(m >= m.max() * (1 - tol))
    return _clip(k[good[np.argmax(k[good])]], r)


def _at_resolution(r, res):
    i = int(np.flatnonzero(np.isclose(r["resolution"], res))[0])
    return _clip(r["leiden_k"][i], r)


def _gm(*ks):
    return float(np.exp(np.mean(np.log(ks))))


RULES = {
    # the package's criteria, recomputed from the scores (``consensus`` is the default)
    "consensus": lambda r: _clip(_gm(r["k_eigengap"], _stab(r), _mod(r)), r),
    "eigengap": lambda r: r["k_eigengap"],
    "leiden_stability": _stab,
    "leiden_modularity": _mod,
    # combinations of the three
    "median3": lambda r: _clip(np.median([r["k_eigengap"], _stab(r), _mod(r)]), r),
    "max3": lambda r: max(r["k_eigengap"], _stab(r), _mod(r)),
    "gm_eig_mod": lambda r: _clip(_gm(r["k_eigengap"], _mod(r)), r),
    # against under-splitting: the finest end of the modularity plateau
    "mod_plateau_1pct": lambda r: _mod_plateau(r, 0.01),
    "mod_plateau_2pct": lambda r: _mod_plateau(r, 0.02),
    "consensus_plateau_2pct": lambda r: _clip(_gm(r["k_eigengap"], _stab(r), _mod_plateau(r, 0.02)), r),
    # the same criteria with the two finer resolutions allowed
    "consensus_grid4": lambda r: _clip(_gm(r["k_eigengap"], _stab(r, GRID), _mod(r, GRID)), r),
    "leiden_modularity_grid4": lambda r: _mod(r, GRID),
    # fixed resolutions (scanpy's default is 1)
    "leiden_res1": lambda r: _at_resolution(r, 1.0),
    "leiden_res2": lambda r: _at_resolution(r, 2.0),
    # a plain correction of the default's bias
    "consensus_x1.25": lambda r: _clip(1.25 * _gm(r["k_eigengap"], _stab(r), _mod(r)), r),
}


def _per_dataset(rule, rs: list[dict]) -> dict:
    """A rule's K per seed on one dataset, and how it scores against the labelled number of types."""
    rs = sorted(rs, key=lambda r: r["seed"])
    kt = rs[0]["k_true"]
    ks = [int(rule(r)) for r in rs]
    ratio = [max(k / kt, kt / k) for k in ks]
    return {"ks": ks, "all_within": all(x <= 1.5 for x in ratio), "frac": float(np.mean([x <= 1.5 for x in ratio])),
            "logerr": float(np.mean(np.log(ratio))),
            "ari": float(np.mean([r["kmeans_ari"][str(k)] for r, k in zip(rs, ks, strict=True)])),
            "ari_true": float(np.mean([r["kmeans_ari"].get(str(kt), np.nan) for r in rs]))}


def _by_dataset(path) -> dict:
    by_ds: dict = {}
    for r in map(json.loads, Path(path).read_text().splitlines()):
        by_ds.setdefault(r["dataset"], []).append(r)
    return by_ds


def _summary(by_ds: dict) -> tuple[list, list[str]]:
    """Every rule's K per dataset, and the table of how the rules score per half."""
    rows = [(name, {d: _per_dataset(rule, rs) for d, rs in by_ds.items()}) for name, rule in RULES.items()]
    L = ["| rule | within 1.5x, choose (6) | confirm (7) | log error, choose | confirm | k-means ARI, choose | confirm |",
         "|---|---|---|---|---|---|---|"]
    first = rows[0][1]
    L.append("| (true K) | | | 0 | 0 | " + " | ".join(
        f"{np.mean([first[d]['ari_true'] for d in half if d in first]):.3f}" for half in (CHOOSE, CONFIRM)) + " |")
    for name, per in rows:
        cells = []
        for half in (CHOOSE, CONFIRM):
            ds = [d for d in half if d in per]
            cells.append(f"{sum(per[d]['all_within'] for d in ds)} ({sum(per[d]['frac'] * 3 for d in ds):.0f} of "
                         f"{3 * len(ds)})")
        for key in ("logerr", "ari"):
            for half in (CHOOSE, CONFIRM):
                ds = [d for d in half if d in per]
                cells.append(f"{np.mean([per[d][key] for d in ds]):.3f}")
        L.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return rows, L


def _per_seed(by_ds: dict, rows: list) -> list[str]:
    L = ["| dataset | half | true K | " + " | ".join(f"`{n}`" for n, _ in rows) + " |",
         "|---|---|---|" + "---|" * len(rows)]
    for d in sorted(by_ds):
        L.append(f"| {d} | {'choose' if d in CHOOSE else 'confirm'} | {by_ds[d][0]['k_true']} | "
                 + " | ".join(",".join(map(str, per[d]["ks"])) for _, per in rows) + " |")
    return L


def analyse(args) -> None:
    by_ds = _by_dataset(args.scores)
    rows, table = _summary(by_ds)
    L = ["# Unknown K: rules chosen on one half, confirmed on the other", "",
         "Representations: the package defaults with `n_clusters=None`, stopped where K is estimated (after the "
         "warm-up rounds), 13 datasets x seeds 0-2 (`python benchmarks/auto_k.py warmup --seed S --emb-dir DIR`); "
         "then `python benchmarks/auto_k_rules.py score --emb-dir DIR` and `python benchmarks/auto_k_rules.py "
         "analyse`. Rules: `RULES` in the script (written down before the scores were read). `within 1.5x`: "
         "datasets whose K is within a factor 1.5 of the labelled number of types on every seed (runs in "
         "brackets); `log error`: mean |log(K / K_true)|; `k-means ARI`: k-means (5 restarts) on the same "
         "representation at the rule's K, a proxy for the end-to-end result (true K in the first row).", ""]
    L += [*table, "", "K per seed:", "", *_per_seed(by_ds, rows)]
    if Path(args.joined_scores).exists():
        jd = _by_dataset(args.joined_scores)
        w = next(iter(jd.values()))[0]["pca_weight"]
        jrows, jtable = _summary(jd)
        L += ["", "## The same rules on the representation joined with the features' principal components", "",
              f"The same representations joined with the 50 principal components of the package's features at "
              f"weight {w:g} (`train/_joined.py`, the space the default k-means start uses since 2026-12-04): "
              f"`python benchmarks/auto_k_rules.py score --emb-dir DIR --pca-weight {w:g} --out "
              f"{Path(args.joined_scores).resolve().relative_to(REPO)}` (the `warmup` files also hold the components). The "
              "`k-means ARI` column is k-means on the joined space.", ""]
        L += [*jtable, "", "K per seed:", "", *_per_seed(jd, jrows)]
    if NOTES.exists():
        L += ["", NOTES.read_text().rstrip()]
    Path(args.out).write_text("\n".join(L) + "\n")
    print(f"wrote {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("--emb-dir", required=True)
    s.add_argument("--out", default=str(SCORES))
    s.add_argument("--pca-weight", type=float, default=0.0,
                   help="score the representation joined with the features' PCs at this weight (0: alone)")
    a = sub.add_parser("analyse")
    a.add_argument("--scores", default=str(SCORES))
    a.add_argument("--joined-scores", default=str(JOINED_SCORES))
    a.add_argument("--out", default=str(MD))
    args = ap.parse_args()
    {"score": score, "analyse": analyse}[args.cmd](args)


if __name__ == "__main__":
    main()
