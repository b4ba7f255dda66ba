"""The Leiden runs behind the auto-K criterion: leidenalg (used until 2026-12-02) vs igraph's own.

Reads the warm-up embeddings that ``python benchmarks/auto_k.py run`` saves
(``benchmarks/runs/auto_k_embeddings/DATASET__SEED.npz``) and estimates K on each
with ``leiden_modularity_k`` twice, side by side in one process: with the
package's igraph implementation and with the previous leidenalg one
(``RBConfigurationVertexPartition``, same resolutions, subsets, seeds and
``n_iterations=-1``). Reports K, the seconds of each, and K's distance to the
true K. Needs ``leidenalg`` installed for the old side (it is no longer a
dependency: ``pip install leidenalg``).

    python benchmarks/leiden_impl.py [--emb-dir DIR] [--md benchmarks/results/leiden_impl.md]
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EMB_DIR = REPO / "benchmarks" / "runs" / "auto_k_embeddings"


def _leidenalg_membership(g, resolution, seed):
    import leidenalg

    p = leidenalg.find_partition(g, leidenalg.RBConfigurationVertexPartition, resolution_parameter=float(resolution),
                                 seed=seed, n_iterations=-1)
    return p.membership


def estimate(z, seed, impl):
    from scgpcl.train import _auto_k

    original = _auto_k._leiden_membership
    if impl == "leidenalg":
        _auto_k._leiden_membership = _leidenalg_membership
    try:
        t0 = time.perf_counter()
        r = _auto_k.leiden_modularity_k(z, seed=seed)
        return r.k, time.perf_counter() - t0
    finally:
        _auto_k._leiden_membership = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--emb-dir", default=str(EMB_DIR))
    ap.add_argument("--md", default=str(REPO / "benchmarks" / "results" / "leiden_impl.md"))
    args = ap.parse_args()
    try:
        import leidenalg  # noqa: F401
    except ImportError:
        sys.exit("the old side of this comparison needs leidenalg, which scgpcl no longer installs: "
                 "pip install leidenalg")
    files = sorted(glob.glob(os.path.join(args.emb_dir, "*.npz")), key=os.path.getsize)
    if not files:
        sys.exit(f"no embeddings in {args.emb_dir}: run `python benchmarks/auto_k.py run` first")
    rows = []
    for f in files:
        name, seed = Path(f).stem.rsplit("__", 1)
        d = np.load(f)
        z, k_true, seed = d["z"], int(d["k"]), int(seed)
        k_new, s_new = estimate(z, seed, "igraph")
        k_old, s_old = estimate(z, seed, "leidenalg")
        rows.append((name, seed, z.shape[0], k_true, k_old, k_new, s_old, s_new))
        print(f"{name} seed {seed}: K true {k_true}, leidenalg {k_old} ({s_old:.1f} s), igraph {k_new} "
              f"({s_new:.1f} s)", flush=True)
    same = sum(r[4] == r[5] for r in rows)
    d_old = sum(abs(r[4] - r[3]) for r in rows)
    d_new = sum(abs(r[5] - r[3]) for r in rows)
    t_old = sum(r[6] for r in rows)
    t_new = sum(r[7] for r in rows)
    cmd = "python benchmarks/" + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).name, *sys.argv[1:]])
    L = ["# Leiden for the auto-K criterion: leidenalg vs igraph's own implementation", "",
         f"Command: `{cmd}` (OMP_NUM_THREADS=1; other benchmark jobs were running, so compare the two columns, "
         "not absolute times).", "",
         f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs. Embeddings: the warm-up "
         "representations saved by `benchmarks/auto_k.py run` (`fast` preset, all 13 datasets x seeds 0-2). Each "
         "row runs `leiden_modularity_k` (9 resolutions x 4 subsets of 90 % of the cells, 15-NN graph) with both "
         "implementations, one after the other in one process.", "",
         f"- Same K on {same} of {len(rows)} embeddings; where they differ, by {sorted({abs(r[4] - r[5]) for r in rows if r[4] != r[5]}) or '-'}.",
         f"- Total distance to the true K (sum of |K - K_true|): leidenalg {d_old}, igraph {d_new}.",
         f"- Seconds in all: leidenalg {t_old:.0f}, igraph {t_new:.0f} ({t_old / max(t_new, 1e-9):.1f}x); "
         f"median per embedding {np.median([r[6] for r in rows]):.1f} s vs {np.median([r[7] for r in rows]):.1f} s.",
         "", "| dataset | seed | cells | true K | K leidenalg | K igraph | s leidenalg | s igraph |",
         "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r[4] == r[5] else " *"
        L.append(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]}{mark} | {r[6]:.1f} | {r[7]:.1f} |")
    Path(args.md).write_text("\n".join(L) + "\n")
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
