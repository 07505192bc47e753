"""`emomoe prepare`: tokenize a corpus into memory-mapped token shards with a manifest."""

from __future__ import annotations

import argparse
import textwrap

EXAMPLE = """examples:
  emomoe prepare --input ../shared/corpus/train.jsonl --tokenizer tok/tokenizer.json --out data/train
  emomoe prepare --input ../shared/corpus/val.jsonl --tokenizer tok/tokenizer.json --out data/val
  emomoe prepare --input books/ --domain books --tokenizer tok/ --out data/books --val-frac 0.01"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="tokenize a corpus into token shards",
        description=textwrap.fill(
            "Tokenize JSONL, plain-text (one document per file) or Parquet inputs (gzip/zstd "
            "allowed) in parallel, append EOS to every document, and write memory-mapped token shards, "
            "per-document offsets, domains and sources, and OUT/manifest.json. Malformed records are "
            "skipped and reported by file:line (or stop the run with --strict). Re-running on unchanged "
            "inputs with the same tokenizer and options does nothing.",
            90,
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="files or directories (walked recursively, sorted)",
    )
    parser.add_argument("--tokenizer", required=True, metavar="PATH", help="tokenizer.json or its directory")
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory (replaced atomically)")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="tokenizer processes (default: min(4, CPU count))",
    )
    parser.add_argument(
        "--text-field", metavar="NAME", default="text", help="JSONL/Parquet text field (default: %(default)s)"
    )
    parser.add_argument(
        "--domain-field", metavar="NAME", default="domain", help="domain field (default: %(default)s)"
    )
    parser.add_argument(
        "--source-field", metavar="NAME", default="source", help="source field (default: %(default)s)"
    )
    parser.add_argument(
        "--domain",
        metavar="NAME",
        default=None,
        help="domain of every document (default: the domain "
        "field; for plain-text files the parent directory's name)",
    )
    parser.add_argument(
        "--source",
        metavar="NAME",
        default=None,
        help="source of every document (default: the source field, else the input's name)",
    )
    parser.add_argument(
        "--val-frac",
        type=float,
        default=0.0,
        metavar="F",
        help="hold out this fraction of documents (chosen by a hash of the text) as split 'val' (default: 0)",
    )
    parser.add_argument(
        "--shard-tokens",
        type=int,
        default=1 << 28,
        metavar="N",
        help="tokens per shard file (default: %(default)s)",
    )
    parser.add_argument(
        "--eos-token", metavar="TOKEN", default="<|endoftext|>", help="EOS token (default: %(default)s)"
    )
    parser.add_argument(
        "--pad-token", metavar="TOKEN", default="<|pad|>", help="PAD token (default: %(default)s)"
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop with an error at the first malformed record"
    )
    parser.add_argument("--force", action="store_true", help="redo even if OUT is up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args) -> int:
    from emomoe.data.prepare import prepare

    result = prepare(
        args.input,
        args.tokenizer,
        args.out,
        text_field=args.text_field,
        domain_field=args.domain_field,
        source_field=args.source_field,
        domain=args.domain,
        source=args.source,
        eos_token=args.eos_token,
        pad_token=args.pad_token,
        workers=args.workers,
        val_frac=args.val_frac,
        shard_tokens=args.shard_tokens,
        strict=args.strict,
        force=args.force,
        progress=not args.no_progress,
    )
    m = result.manifest
    if result.up_to_date:
        print(
            f"{result.out} is up to date (same inputs, tokenizer and options); nothing to do "
            "(--force to redo)"
        )
        return 0
    print(
        f"wrote {result.out}: {m['num_docs']} documents, {m['num_tokens']} tokens ({m['dtype']}, "
        f"{len(m['shards'])} shard{'s' if len(m['shards']) != 1 else ''}) in {result.seconds:.1f}s, "
        f"{m['num_tokens'] / max(result.seconds, 1e-9):,.0f} tokens/s"
    )
    width = max(len(d) for d in m["domains"])
    for d in m["domains"]:
        print(f"  {d:<{width}}  {m['docs_per_domain'][d]:>9} docs  {m['tokens_per_domain'][d]:>12} tokens")
    if "val" in m["splits"]:
        print(
            f"held out for validation: {m['splits']['val']['docs']} documents, "
            f"{m['splits']['val']['tokens']} tokens"
        )
    skipped = m["skipped"]
    if skipped["total"]:
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(skipped["by_reason"].items()))
        print(f"skipped {skipped['total']} malformed records ({reasons}); first:")
        for line in skipped["first"][:5]:
            print(f"  {line}")
    return 0
