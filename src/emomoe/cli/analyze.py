"""`emomoe analyze`: expert x domain routing statistics, specialisation metrics and an HTML report."""

from __future__ import annotations

import argparse
import sys

from emomoe.cli.eval import add_common, add_models, load, model_names


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="routing heatmaps, specialisation metrics and document clustering in one HTML report",
        description="Measure how experts specialise by domain: expert x domain usage heatmaps per layer, "
        "NMI between routed expert and domain, document coherence, experts covering 90%% of a domain's "
        "routing, and k-means clustering of documents by their router probabilities. Writes a "
        "self-contained index.html (models side by side), the PNGs and metrics.json to --out.",
        epilog="example: emomoe analyze --model runs/emo-small/final --model runs/stdmoe-small/final "
        "--name emo --name standard --data ../shared/corpus/val.jsonl --out report/",
    )
    add_models(p)
    p.add_argument("--out", default="report", help="output directory (default report/)")
    p.add_argument("--top-m", type=int, help="m of document coherence (default: a quarter of the routed experts)")
    p.add_argument("--pool", action="store_true", help="route with the EMO eval pool (default: no pool)")
    p.add_argument("--seed", type=int, default=0, help="k-means seed")
    add_common(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from emomoe.analysis import collect_routing, specialisation, write_report
    from emomoe.eval import limit_per_domain, read_documents

    names = model_names(args.model, args.name)
    docs = limit_per_domain(read_documents(args.data, args.text_field, args.domain_field), args.max_docs_per_domain)
    progress = not args.no_progress and sys.stderr.isatty()
    results = {}
    for name, path in zip(names, args.model):
        model, tokenizer = load(path)
        stats = collect_routing(model, tokenizer, docs, args.max_length, args.batch_tokens, args.pool, progress)
        metrics = specialisation(stats, args.top_m, seed=args.seed)
        results[name] = (stats, metrics)
        print(f"{name}: {len(docs)} documents, {len(stats.domains)} domains, coherence m = "
              f"{metrics['settings']['top_m']}")
        print(f"  {'layer':<6} {'NMI':>6} {'coherence':>10} {'cover90':>8} {'purity':>7} {'clustNMI':>8}")
        rows = [(str(r["layer"]), r) for r in metrics["layers"]] + [("all", metrics["all_layers"])]
        for label, r in rows:
            print(f"  {label:<6} {_f(r.get('nmi')):>6} {_f(r.get('coherence')):>10} "
                  f"{_f(r.get('coverage_mean'), 1):>8} {_f(r['cluster_purity']):>7} {_f(r['cluster_nmi']):>8}")
    path = write_report(results, args.out, source=args.data)
    print(f"wrote {path}")
    return 0


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
