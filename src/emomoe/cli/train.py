"""`emomoe train --config FILE [--set section.key=value ...] [--resume]`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain an EMO or standard MoE (one process, or several under torchrun)",
        description="Pretrain from a TOML/YAML config (see configs/). Several processes: "
        "torchrun --nproc-per-node N -m emomoe train --config FILE. Writes OUT/config.resolved.json, "
        "OUT/metrics.jsonl, OUT/checkpoints/step-N/ and the final Hugging Face-format model OUT/final/.",
        epilog="example: emomoe train --config configs/emo-small.toml --set train.max_steps=200",
    )
    p.add_argument("--config", help="TOML or YAML file")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one value, e.g. --set optim.lr=1e-3 (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in train.out_dir")
    p.add_argument("--init-from", help="start from this Hugging Face-format checkpoint (sets train.init_from)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emomoe.train import load_train_config, train

    overrides = list(args.set)
    if args.init_from:
        overrides.append(f"train.init_from={args.init_from}")
    cfg = load_train_config(args.config, overrides)
    train(cfg, resume=args.resume)
    return 0
