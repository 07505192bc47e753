"""`emomoe tokenizer train|info`: train a byte-level BPE tokenizer, or describe a tokenizer.json."""

from __future__ import annotations

import argparse
import textwrap

DEFAULT_EOS, DEFAULT_PAD = "<|endoftext|>", "<|pad|>"  # same as emomoe.data.tokenizer, without importing it


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer, or describe one",
        description=textwrap.fill(
            "Train a byte-level BPE tokenizer on a corpus, or print what a tokenizer.json holds.", 90
        ),
    )
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True

    train = sub.add_parser(
        "train",
        help="train a byte-level BPE and write DIR/tokenizer.json",
        description=textwrap.fill(
            "Train a byte-level BPE (no normalisation: text round-trips exactly) on JSONL, "
            "plain-text or Parquet files (gzip/zstd allowed) and write OUT/tokenizer.json.",
            90,
        ),
        epilog="example:\n  emomoe tokenizer train --input ../shared/corpus/train.jsonl --vocab-size 8192 "
        "--out tok/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument(
        "--input",
        nargs="+",
        required=True,
        metavar="PATH",
        help="files or directories to train on (read as `emomoe prepare` reads them)",
    )
    train.add_argument("--out", required=True, metavar="DIR", help="directory to write tokenizer.json into")
    train.add_argument(
        "--vocab-size",
        type=int,
        metavar="N",
        default=8192,
        help="vocabulary size, specials included (default: %(default)s)",
    )
    train.add_argument(
        "--min-frequency", type=int, default=2, help="minimum pair count for a merge (default: %(default)s)"
    )
    train.add_argument(
        "--text-field", metavar="NAME", default="text", help="JSONL/Parquet text field (default: %(default)s)"
    )
    train.add_argument(
        "--max-docs", type=int, default=None, metavar="N", help="train on the first N documents"
    )
    _add_special_flags(train)
    train.set_defaults(func=run_train)

    info = sub.add_parser(
        "info",
        help="print vocabulary size, EOS/PAD ids and sha256 of a tokenizer.json",
        description=textwrap.fill(
            "Load a Hugging Face tokenizer.json (ours or e.g. dolma2's) and print its vocabulary "
            "size, EOS and PAD ids and the file's sha256.",
            90,
        ),
        epilog="examples:\n  emomoe tokenizer info tok/tokenizer.json\n"
        "  emomoe tokenizer info dolma2/tokenizer.json  # EOS <|endoftext|> 100257, PAD <|pad|> 100277",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("path", metavar="PATH", help="tokenizer.json, or a directory holding one")
    info.add_argument(
        "--encode", metavar="TEXT", help="also print the ids of TEXT and check they decode back"
    )
    _add_special_flags(info)
    info.set_defaults(func=run_info)


def _add_special_flags(parser) -> None:
    parser.add_argument(
        "--eos-token",
        metavar="TOKEN",
        default=DEFAULT_EOS,
        help="end-of-document token (default: %(default)s)",
    )
    parser.add_argument(
        "--pad-token", metavar="TOKEN", default=DEFAULT_PAD, help="padding token (default: %(default)s)"
    )


def _describe(tok) -> str:
    return (
        f"vocab_size {tok.vocab_size}\neos {tok.eos_token!r} id {tok.eos_id}\n"
        f"pad {tok.pad_token!r} id {tok.pad_id}\nsha256 {tok.sha256}"
    )


def run_train(args) -> int:
    import time

    from emomoe.data.tokenizer import train_tokenizer

    started = time.perf_counter()
    tok = train_tokenizer(
        files=args.input,
        vocab_size=args.vocab_size,
        eos_token=args.eos_token,
        pad_token=args.pad_token,
        min_frequency=args.min_frequency,
        text_field=args.text_field,
        max_docs=args.max_docs,
    )
    path = tok.save(args.out)
    print(f"wrote {path} in {time.perf_counter() - started:.1f}s\n{_describe(tok)}")
    return 0


def run_info(args) -> int:
    from emomoe.data.tokenizer import Tokenizer

    tok = Tokenizer.from_file(args.path, args.eos_token, args.pad_token)
    print(f"path {tok.name}\n{_describe(tok)}")
    if args.encode is not None:
        ids = tok.encode(args.encode)
        print(f"ids {ids}\nround-trip {'ok' if tok.decode(ids) == args.encode else 'FAILED'}")
    return 0
