"""`emomoe demo`: EMO vs a standard MoE on real text from this machine, offline, in minutes."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train a small EMO and a standard MoE on local text and compare their modularity (offline)",
        description="Builds a multi-domain corpus from text installed on this machine (Python standard library "
        "sources and docstrings, licences, manual pages, C headers, shell completions; each source is reported "
        "and skipped when missing) or takes --data, trains a small EMO and the same model with a standard router "
        "for the same number of steps (sized to --minutes on this machine), measures each domain's loss when "
        "only that domain's experts are kept, and writes results.md, modularity.png and an HTML report.",
        epilog="example: emomoe demo --out emomoe-demo    |    emomoe demo --data my_corpus.jsonl --minutes 20",
    )
    p.add_argument("--out", default="emomoe-demo", help="output directory (default: emomoe-demo)")
    p.add_argument("--data", help="your own JSONL corpus with 'text' and 'domain' fields")
    p.add_argument("--minutes", type=float, default=8.0, help="total time budget used to size training (default 8)")
    p.add_argument("--steps", type=int, help="training steps per model (overrides --minutes)")
    p.add_argument("--eval-docs", type=int, default=24, help="held-out documents evaluated per domain (default 24)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emomoe.demo.run import run_demo

    done = run_demo(args.out, args.data, args.minutes, args.steps, args.seed, args.eval_docs,
                    log=lambda message: print(message, flush=True))
    print()
    print(done["table"])
    print(f"done in {done['wall_seconds'] / 60:.1f} min. Results: {done['results']}")
    if done["report"]:
        print(f"Open the report: {done['report']}")
    return 0
