"""The EMO result at small scale: EMO vs the architecture-matched standard MoE on real text.

Tokenizer training, preparation, training both models from configs/emo-small.toml and
configs/stdmoe-small.toml (`small` preset; same data order, seed, steps and budget), then per
domain: expert selection from 4 calibration documents and evaluation of held-out validation
documents at keep fractions 1, 1/2, 1/4, 1/8. Writes OUT/results.json, OUT/results.md and
OUT/modularity.png.

    python benchmarks/modularity.py --data ../shared/corpus --out runs/modularity
    python benchmarks/modularity.py --data ../shared/corpus --steps 300 --set pool_min=8   # an ablation

--data is a directory holding train.jsonl and val.jsonl (JSONL with text and domain), or two files
given as --data TRAIN.jsonl --val VAL.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from emomoe.demo.compare import CompareConfig, run_comparison


def parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="directory with train.jsonl and val.jsonl, or a train file")
    ap.add_argument("--val", help="validation JSONL (when --data is a file)")
    ap.add_argument("--out", default="runs/modularity")
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--emo-config", default=str(repo / "configs" / "emo-small.toml"))
    ap.add_argument("--standard-config", default=str(repo / "configs" / "stdmoe-small.toml"))
    ap.add_argument("--steps", type=int, help="override both configs' max_steps")
    ap.add_argument("--lb-weight", type=float, help="override both configs' lb_weight")
    ap.add_argument("--lb-scope", choices=("global", "local"), help="override both configs' lb_scope")
    ap.add_argument("--vocab-size", type=int, default=CompareConfig.vocab_size)
    ap.add_argument("--eval-docs", type=int, default=CompareConfig.eval_docs, help="held-out documents per domain")
    ap.add_argument("--method", default=CompareConfig.method)
    ap.add_argument("--sequential", action="store_true",
                    help="train the two models one after the other (default: side by side, half the cores each)")
    ap.add_argument("--keep", default="1,0.5,0.25,0.125", help="comma-separated keep fractions")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="model override for both arms, e.g. --set pool_min=8 --set num_experts=64")
    args = ap.parse_args()

    data = Path(args.data)
    train_file, val_file = (data / "train.jsonl", data / "val.jsonl") if data.is_dir() else (data, args.val)
    if val_file is None or not Path(train_file).is_file() or not Path(val_file).is_file():
        print(f"error: need train and val JSONL files (got {train_file}, {val_file})", file=sys.stderr)
        return 2
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = parse_value(value)
    cfg = CompareConfig(train_file=str(train_file), val_file=str(val_file), out=args.out,
                        vocab_size=args.vocab_size, config_files={"emo": args.emo_config,
                                                                  "standard": args.standard_config},
                        model_overrides=overrides, max_steps=args.steps, lb_weight=args.lb_weight,
                        lb_scope=args.lb_scope, keep_fracs=tuple(float(k) for k in args.keep.split(",")),
                        method=args.method, eval_docs=args.eval_docs, parallel_arms=not args.sequential)
    results = run_comparison(cfg, log=lambda m: print(m, flush=True))
    print()
    print(Path(args.out, "results.md").read_text())
    print(f"wall time: {results['wall_seconds'] / 60:.1f} min; results in {args.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
