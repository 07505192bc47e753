"""`emomoe modularity`: loss increase per domain when only domain-chosen expert subsets are kept."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from emomoe.cli.eval import add_common, add_models, load, model_names

METHOD_NAMES = ("global", "layerwise", "frequency", "easy-ep", "random")  # = emomoe.select.METHODS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "modularity",
        help="loss increase per domain when keeping only experts chosen for that domain",
        description="For every domain, choose experts on a few calibration documents of that domain and "
        "evaluate its held-out documents with routing restricted to them (equal to the pruned model), for "
        "each fraction of experts kept; report the loss increase over the full model per domain and on "
        "average. Writes modularity.json, modularity.md and modularity.png (needs matplotlib) to --out.",
        epilog="example: emomoe modularity --model runs/emo-small/final --model runs/stdmoe-small/final "
        "--name emo --name standard --data ../shared/corpus/val.jsonl --keep 1,0.5,0.25,0.125 --out modularity/",
    )
    add_models(p)
    p.add_argument("--keep", default="1,0.5,0.25,0.125", help="fractions of experts to keep, comma-separated "
                   "(default 1,0.5,0.25,0.125)")
    p.add_argument("--method", default="global", choices=METHOD_NAMES, help="selection method (default global)")
    p.add_argument("--calib-docs", type=int, default=4,
                   help="calibration documents per domain: the first N of the domain (default 4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random method")
    p.add_argument("--out", default="modularity", help="output directory (default modularity/)")
    add_common(p)
    p.set_defaults(func=run)


def parse_fracs(text: str) -> list[float]:
    """Keep fractions from '1,0.5,0.25' (each in (0, 1], duplicates removed, order kept)."""
    try:
        fracs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--keep must be comma-separated numbers, got {text!r}") from None
    if not fracs or not all(0 < f <= 1 for f in fracs):
        raise ValueError(f"--keep fractions must lie in (0, 1], got {text!r}")
    return list(dict.fromkeys(fracs))


def run(args: argparse.Namespace) -> int:
    from emomoe.eval import by_domain, domain_table, markdown_table, modularity_curve, read_documents
    from emomoe.eval.modularity import plot_curves

    fracs = parse_fracs(args.keep)
    names = model_names(args.model, args.name)
    if args.max_docs_per_domain is not None and args.max_docs_per_domain < 1:
        raise ValueError(f"--max-docs-per-domain ({args.max_docs_per_domain}) must be >= 1")
    docs = by_domain(read_documents(args.data, args.text_field, args.domain_field))
    progress = not args.no_progress and sys.stderr.isatty()
    curves = {}
    for name, path in zip(names, args.model):
        start = time.perf_counter()
        model, tokenizer = load(path)
        curves[name] = modularity_curve(model, docs, tokenizer, fracs, args.method, args.calib_docs,
                                        args.max_docs_per_domain, args.max_length, args.batch_tokens, args.seed,
                                        progress)
        print(f"{name}: {len(docs)} domains in {time.perf_counter() - start:.0f}s", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"data": args.data, "models": dict(zip(names, args.model)), "keep": fracs, "method": args.method,
                "calib_docs": args.calib_docs, "max_docs_per_domain": args.max_docs_per_domain,
                "max_length": args.max_length, "seed": args.seed}
    (out / "modularity.json").write_text(json.dumps({"settings": settings, "models": curves}, indent=2) + "\n")
    table = markdown_table(curves)
    details = "".join(f"\n### {name}: loss increase per domain\n\n{domain_table(c)}" for name, c in curves.items())
    (out / "modularity.md").write_text("## Loss when keeping domain-chosen experts\n\n" + table + details)
    print(table, end="")
    try:
        plot = plot_curves(curves, out / "modularity.png")
        print(f"wrote {out / 'modularity.json'}, {out / 'modularity.md'}, {plot}")
    except ImportError as exc:
        print(f"wrote {out / 'modularity.json'}, {out / 'modularity.md'} (no plot: {exc})")
    return 0
