"""The `emomoe` command line: one subcommand per module in this package.

Each subcommand module exposes `register(subparsers)`, which adds its parser and sets
`func` to a callable taking the parsed arguments and returning an exit code (or None).
Heavy imports (torch, tokenizers) happen inside those callables so `--help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Subcommand modules, in the order `emomoe --help` lists them.
COMMANDS = ("demo", "info", "tokenizer", "prepare", "train", "select", "eval", "modularity", "analyze", "generate")


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it as one line and exits with 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emomoe",
        description="Mixture-of-Experts with emergent modularity: data, training, expert selection, "
        "evaluation and generation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"emomoe.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except (UserError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        print(f"emomoe {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"emomoe {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
