"""Sensitivity to lambda2 (``lambda_proto``, weight of the prototypical loss; docs/method.md section 8).

For lambda2 in {0.001, 0.005, 0.05, 0.5, 1, 10} and 3 seeds: the round at which
pre-training stopped (converged: ARI > 0.99 between consecutive rounds' k-means
labels; or no new best agreement for ``convergence_patience`` rounds; or the
round limit) and the final ARI / NMI. Runs ``scgpcl`` (the package defaults)
through the harness with ``lambda_proto`` overridden; one process per run,
resumable JSONL (``benchmarks/results/lambda2.jsonl``). The version of this
study made with 0.1.0 (epochs, the ``fast`` preset) is in git history:
``git show 0700ace:benchmarks/results/lambda2.md``.

    python benchmarks/lambda2.py run
    python benchmarks/lambda2.py table    # -> benchmarks/results/lambda2.md + fig/lambda2.png
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

REPO = harness.REPO
RESULTS = REPO / "benchmarks" / "results"
LAMBDAS = [0.001, 0.005, 0.05, 0.5, 1.0, 10.0]
DATASETS = ["baron_human_came2142", "mouse_bladder_top2000"]
METHOD = "scgpcl"


def _rows(records: list[dict]) -> dict:
    """{(dataset, lambda): [records]} of the latest successful runs."""
    out: dict[tuple, list[dict]] = {}
    for r in harness.latest_ok(records).values():
        if r["method"] != METHOD or "lambda_proto" not in (r.get("overrides") or {}):
            continue
        out.setdefault((r["dataset"], float(r["overrides"]["lambda_proto"])), []).append(r)
    return out


def _default_lambda2() -> float:
    from scgpcl import recommended

    return float(recommended().train.lambda_proto)


def _stop_kind(r: dict) -> str:
    """How pre-training ended: 'converged', 'plateau' (no new best agreement) or 'limit'."""
    stop = str(r.get("pretrain_stop", ""))
    if stop.startswith("converged"):
        return "converged"
    if stop.startswith("stopped"):
        return "plateau"
    return "limit"


def build_table(records: list[dict], command: str, figure: str | None) -> str:
    rows = _rows(records)
    datasets = harness._ordered({d for d, _ in rows}, DATASETS)
    lambdas = sorted({lam for _, lam in rows})
    ok = list(harness.latest_ok(records).values())
    default = _default_lambda2()
    cmds = sorted({r["command"] for r in records if r.get("command")})
    max_ep = max((r.get("pretrain_epochs", 0) for r in ok), default=0)
    other = sorted({f"`{k}={v}`" for rs in rows.values() for r in rs
                    for k, v in (r.get("overrides") or {}).items() if k != "lambda_proto"})
    L = ["# lambda2 (prototypical loss weight): when pre-training stops, and accuracy", "", "```", *cmds, command,
         "```", "",
         "Method: `scgpcl`, the package defaults (rounds of at most 20 steps; pre-training at most 25 rounds, the "
         "first 10 without the prototypical loss; fine-tuning at most 20 rounds; default lambda2 = "
         f"{default:g}), with `lambda_proto` overridden"
         + (f", and {', '.join(other)}" if other else "") + ". The prototypical loss only acts after the "
         "warm-up rounds, and the stopping test starts there: pre-training stops when consecutive rounds' "
         "k-means labels agree with ARI > 0.99 ('converged'), when that agreement has not improved on its best "
         "for 5 rounds ('plateau'), or at the round limit ('limit'). Values: mean ± sd over seeds "
         f"{sorted({r['seed'] for rs in rows.values() for r in rs})}, one thread per run; machine: "
         f"{', '.join(sorted({str(r.get('machine', '?')) for r in ok}))}. "
         "The 0.1.0 version of this study (epochs, the `fast` preset): "
         "`git show 0700ace:benchmarks/results/lambda2.md`.", ""]
    for d in datasets:
        L += [f"## {d}", "",
              "| lambda2 | pre-training rounds (per seed) | stop: converged / plateau / limit | ARI (per seed) "
              "| NMI | CA | fine-tuning rounds | CPU s |",
              "|---|---|---|---|---|---|---|---|"]
        for lam in lambdas:
            rs = sorted(rows.get((d, lam), []), key=lambda r: r["seed"])
            if not rs:
                continue
            ep = [r["pretrain_epochs"] for r in rs]
            kinds = [_stop_kind(r) for r in rs]
            aris = ", ".join(f"{r['ARI']:.2f}" for r in rs)
            mark = " (default)" if lam == default else ""
            L.append(
                f"| {lam:g}{mark} | {harness.fmt(harness.mean_sd(ep), 1)} ({', '.join(map(str, ep))}) | "
                f"{kinds.count('converged')} / {kinds.count('plateau')} / {kinds.count('limit')} | "
                f"{harness.fmt(harness.mean_sd([r['ARI'] for r in rs]))} "
                f"({aris}) | "
                f"{harness.fmt(harness.mean_sd([r['NMI'] for r in rs]))} | "
                f"{harness.fmt(harness.mean_sd([r['CA'] for r in rs]))} | "
                f"{', '.join(str(r.get('finetune_epochs', '?')) for r in rs)} | "
                f"{harness.fmt(harness.mean_sd([r['cpu_s'] for r in rs]), 0)} |")
        L.append("")
    if max_ep:
        L += [f"(largest number of pre-training rounds seen: {max_ep})", ""]
    if figure:
        L += [f"![lambda2 sensitivity]({figure})", ""]
    return "\n".join(L)


def figure(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(records)
    datasets = harness._ordered({d for d, _ in rows}, DATASETS)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for k, d in enumerate(datasets):
        lams = sorted(lam for dd, lam in rows if dd == d)
        color = plt.get_cmap("tab10")(k)
        for ax, key, lab in zip(axes, ("pretrain_epochs", "ARI", "NMI"),
                                ("pre-training round at stop", "ARI", "NMI"), strict=True):
            stats = [harness.mean_sd([r[key] for r in rows[(d, lam)]]) for lam in lams]
            ax.errorbar(lams, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3,
                        label=d, color=color)
            ax.set_xscale("log")
            ax.set_xlabel("lambda2 (lambda_proto)")
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3)
            if key != "pretrain_epochs":
                ax.set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle("scgpcl (package defaults): sensitivity to lambda2 (mean ± sd over seeds)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--datasets", nargs="+", default=DATASETS)
    r.add_argument("--lambdas", nargs="+", type=float, default=LAMBDAS)
    r.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    r.add_argument("--out", default=str(RESULTS / "lambda2.jsonl"))
    r.add_argument("--threads", type=int, default=os.cpu_count())
    r.add_argument("--timeout", type=float, default=None)
    r.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="further overrides (smoke tests: pretrain_epochs=5 ...)")
    t = sub.add_parser("table")
    t.add_argument("--jsonl", default=str(RESULTS / "lambda2.jsonl"))
    t.add_argument("--md", default=str(RESULTS / "lambda2.md"))
    t.add_argument("--fig", default=str(RESULTS / "fig" / "lambda2.png"))
    args = ap.parse_args(argv)
    argv_s = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    if args.cmd == "run":
        extra = harness.parse_overrides(args.override)
        recs = harness.run_batch(args.datasets, [METHOD], args.seeds, args.out,
                                 overrides_list=[{**extra, "lambda_proto": lam} for lam in args.lambdas],
                                 threads=args.threads, labels_dir="", timeout=args.timeout,
                                 command=f"python benchmarks/lambda2.py {argv_s}")
        print(f"done: {len(harness.latest_ok(recs))} successful runs in {args.out}")
    else:
        records = harness.load_records(args.jsonl)
        if not records:
            sys.exit(f"no records in {args.jsonl}")
        md = Path(args.md)
        figure(records, Path(args.fig))
        md.parent.mkdir(parents=True, exist_ok=True)
        md.write_text(build_table(records, f"python benchmarks/lambda2.py {argv_s}",
                                  os.path.relpath(args.fig, md.parent)) + "\n")
        print(f"wrote {md} and {args.fig}")


if __name__ == "__main__":
    main()
