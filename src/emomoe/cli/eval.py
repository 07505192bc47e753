"""`emomoe eval`: loss and perplexity per domain over a JSONL file, and multiple-choice accuracy."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="loss/perplexity per domain over a JSONL file; multiple-choice accuracy",
        description="Evaluate a checkpoint: next-token loss and perplexity over the documents of a JSONL file "
        "(fields text and domain), overall and per domain, each document its own sequence (cut into windows "
        "of --max-length tokens); and/or accuracy on multiple-choice JSONL tasks (question, choices, answer, "
        "optional few-shot examples).",
        epilog="example: emomoe eval --model runs/emo-small/final --data ../shared/corpus/val.jsonl "
        "--max-length 256 --out results.json",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (with tokenizer.json)")
    p.add_argument("--data", help="JSONL documents to compute the loss on")
    p.add_argument("--mc", nargs="+", default=[], metavar="TASK.jsonl", help="multiple-choice task files")
    p.add_argument("--out", help="write the results as JSON to this file")
    add_common(p)
    p.add_argument("--stride", type=int, help="start a new window every N tokens of a long document (default: "
                   "--max-length, back-to-back windows); smaller gives more context at more compute")
    p.add_argument("--no-pool", action="store_true",
                   help="evaluate an EMO model without its eval pool (pool_eval), as the released inference code")
    p.set_defaults(func=run)


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by eval, modularity and analyze."""
    p.add_argument("--max-length", type=int, help="tokens per window (default min(1024, max_position_embeddings);"
                   " use the training sequence length)")
    p.add_argument("--max-docs-per-domain", type=int, help="use at most N documents of each domain (bounds time)")
    p.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per forward batch (default 8192)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default text)")
    p.add_argument("--domain-field", default="domain",
                   help="JSONL field holding the domain (default domain; records without it: 'unknown')")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_models(p: argparse.ArgumentParser) -> None:
    """--model (repeatable), --name and --data: the inputs of modularity and analyze."""
    p.add_argument("--model", action="append", required=True, help="checkpoint directory; repeat to compare")
    p.add_argument("--name", action="append", help="display name per --model (default: the directory name)")
    p.add_argument("--data", required=True, help="JSONL documents with a domain field")


def model_names(models: Sequence[str], names: Sequence[str] | None) -> list[str]:
    """Display names: --name values, else each directory's name (its parent's for a '.../final' directory)."""
    if names:
        if len(names) != len(models):
            raise ValueError(f"got {len(names)} --name value(s) for {len(models)} --model value(s); give one per model")
        out = list(names)
    else:
        out = []
        for model in models:
            path = Path(model).resolve()
            out.append(path.parent.name if path.name in ("final", "latest") else path.name)
    if len(set(out)) != len(out):
        raise ValueError(f"model names must differ, got {out}; name them with --name")
    return out


def load(model_dir: str):
    """(model in eval mode, tokenizer) of a checkpoint directory holding tokenizer.json."""
    from emomoe.data import Tokenizer
    from emomoe.io.checkpoint import load_model

    model = load_model(model_dir)
    return model, Tokenizer.from_file(model_dir)


def run(args: argparse.Namespace) -> int:
    from emomoe.eval import evaluate_documents, evaluate_mc, limit_per_domain, read_documents, read_mc_task

    if not args.data and not args.mc:
        raise ValueError("nothing to evaluate: give --data FILE.jsonl and/or --mc TASK.jsonl")
    model, tokenizer = load(args.model)
    progress = not args.no_progress and sys.stderr.isatty()
    result: dict = {"model": args.model}
    if args.data:
        docs = limit_per_domain(read_documents(args.data, args.text_field, args.domain_field),
                                args.max_docs_per_domain)
        result.update(evaluate_documents(model, tokenizer, docs, args.max_length, args.stride, args.batch_tokens,
                                         pool=not args.no_pool, progress=progress))
        print(f"{'domain':<24} {'loss':>8} {'ppl':>10} {'tokens':>9}")
        for name, r in [*result["by_domain"].items(), ("overall", result["overall"])]:
            print(f"{name:<24} {r['loss']:>8.4f} {r['ppl']:>10.2f} {r['tokens']:>9}")
    if args.mc:
        result["tasks"] = {}
        for path in args.mc:
            r = evaluate_mc(model, tokenizer, read_mc_task(path), args.max_length, args.batch_tokens, progress)
            result["tasks"][Path(path).stem] = r
            print(f"{Path(path).stem}: acc {r['acc']:.4f}  acc_norm {r['acc_norm']:.4f}  (n={r['n']})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0
