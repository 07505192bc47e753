"""The modularity report: routing statistics and metrics of one or more models in one self-contained HTML page.

    write_report({"emo": (stats, metrics), "standard": (...)}, "report/")   # -> report/index.html
    analyze({"emo": "runs/emo-small/final"}, "val.jsonl", "report/")         # load, measure, write

`index.html` embeds every image as base64 and loads nothing from the network; the PNGs and
`metrics.json` are written beside it.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Mapping
from pathlib import Path

from emomoe.analysis.routing import RoutingStats, collect_routing, specialisation

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1800px}
h1{font-size:22px} h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd} h3{font-size:15px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} th[colspan]{text-align:center} td:first-child,th:first-child{text-align:left}
.row{display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap}
.col{flex:1 1 0;min-width:420px} .col img{width:100%;height:auto;border:1px solid #eee}
.note{color:#666;font-size:13px} img.wide{max-width:100%;height:auto}
"""

DEFINITIONS = """
<ul class="note">
<li><b>NMI(expert; domain)</b>: mutual information between the routed expert of a token-assignment and the
document's domain, divided by min(H(expert), H(domain)); 1 = every expert serves a single domain, 0 = every domain
uses the experts in the same proportions.</li>
<li><b>Document coherence</b>: share of a document's routed assignments that fall in its own top-m experts,
averaged over documents (uniform routing scores m / experts, shown as "uniform").</li>
<li><b>Experts for 90%</b>: the fewest experts that receive 90% of a domain's routed assignments (mean over
domains; the per-domain numbers are in the coverage table).</li>
<li><b>Cluster purity / NMI</b>: k-means (k = number of domains) on each document's mean router probabilities;
purity = share of documents whose cluster's majority domain is their own; NMI (arithmetic normalisation) between
clusters and domains. "all layers" clusters on the probabilities of every layer concatenated.</li>
<li><b>Heatmaps</b>: row = domain, column = routed expert, colour = share of the domain's routed assignments
(each row sums to 1); experts are grouped by the domain that uses them most, so modular routing shows a block
diagonal.</li>
</ul>
"""


def _img(path: Path, css_class: str = "") -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    cls = f' class="{css_class}"' if css_class else ""
    return f'<img{cls} alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def _fmt(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary_table(metrics: Mapping[str, dict]) -> str:
    names = list(metrics)
    cols = [("nmi", "NMI"), ("coherence", "coherence"), ("coverage_mean", "experts for 90%"),
            ("cluster_purity", "cluster purity"), ("cluster_nmi", "cluster NMI")]
    head = "<tr><th rowspan=2>layer</th>" + "".join(
        f"<th colspan={len(cols)}>{html.escape(n)}</th>" for n in names) + "</tr>"
    head += "<tr>" + "".join(f"<th>{label}</th>" for _ in names for _, label in cols) + "</tr>"
    rows = []
    for layer in range(max(len(m["layers"]) for m in metrics.values())):
        cells = []
        for n in names:
            entries = metrics[n]["layers"]
            r = entries[layer] if layer < len(entries) else None
            for key, _ in cols:
                value = None if r is None else r[key]
                if key == "coverage_mean" and r is not None:
                    cells.append(f"<td>{value:.1f} / {r['experts']}</td>")
                elif key == "coherence" and r is not None:
                    cells.append(f"<td>{value:.3f} (uniform {r['coherence_uniform']:.3f})</td>")
                else:
                    cells.append(f"<td>{_fmt(value)}</td>")
        rows.append(f"<tr><td>{layer}</td>{''.join(cells)}</tr>")
    cells = "".join(f"<td></td><td></td><td></td><td>{_fmt(metrics[n]['all_layers']['cluster_purity'])}</td>"
                    f"<td>{_fmt(metrics[n]['all_layers']['cluster_nmi'])}</td>" for n in names)
    rows.append(f"<tr><td>all layers</td>{cells}</tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _coverage_table(name: str, stats: RoutingStats, metrics: dict) -> str:
    layers = metrics["layers"]
    head = "<tr><th>domain</th><th>docs</th><th>tokens</th>" + "".join(
        f"<th>layer {r['layer']}</th>" for r in layers) + "</tr>"
    rows = []
    for i, domain in enumerate(stats.domains):
        mine = stats.doc_domain == i
        rows.append(f"<tr><td>{html.escape(domain)}</td><td>{int(mine.sum())}</td>"
                    f"<td>{int(stats.doc_tokens[mine].sum())}</td>"
                    + "".join(f"<td>{r['coverage'][domain]}</td>" for r in layers) + "</tr>")
    return (f"<h3>{html.escape(name)}: experts for 90% of each domain's routing</h3>"
            f"<table>{head}{''.join(rows)}</table>")


def write_report(results: Mapping[str, tuple[RoutingStats, dict]], out_dir: str | os.PathLike,
                 title: str = "Expert specialisation report", source: str = "") -> Path:
    """Write `index.html` (self-contained), the heatmap PNGs and `metrics.json` into `out_dir`.

    results: model name -> (RoutingStats, metrics from `specialisation`), shown side by side in
    the given order. Without matplotlib the page holds the tables only (and says so).
    Returns the path of index.html.
    """
    if not results:
        raise ValueError("no models to report on")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {name: m for name, (_, m) in results.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    try:
        from emomoe.analysis.plots import domain_share, metric_curves, usage_heatmap

        plots_ok = True
    except ImportError:
        plots_ok = False
    parts = [f"<h1>{html.escape(title)}</h1>"]
    first = next(iter(results.values()))[1]["settings"]
    parts.append(f"<p class='note'>data: {html.escape(source)} &middot; {first['documents']} documents, "
                 f"{len(next(iter(results.values()))[0].domains)} domains &middot; models: "
                 + ", ".join(html.escape(n) for n in results) + f" &middot; coherence m = {first['top_m']}</p>")
    parts.append("<h2>Specialisation per layer</h2>" + _summary_table(metrics) + DEFINITIONS)
    if plots_ok:
        parts.append(_img(metric_curves(metrics, out / "metrics_by_layer.png"), "wide"))
        parts.append("<h2>Expert usage by domain</h2>")
        num_layers = max(s.num_layers for s, _ in results.values())
        for layer in range(num_layers):
            vmax = max(float(domain_share(s.domain_counts(layer)).max()) for s, _ in results.values()
                       if layer < s.num_layers)
            cols = []
            for index, (name, (stats, _)) in enumerate(results.items()):
                if layer >= stats.num_layers:
                    continue
                path = usage_heatmap(stats.domain_counts(layer), stats.domains,
                                     out / f"heatmap_{index}_{_slug(name)}_layer{layer}.png",
                                     f"{name}: layer {layer}", vmax)
                cols.append(f"<div class='col'>{_img(path)}</div>")
            parts.append(f"<h3>Layer {layer}</h3><div class='row'>{''.join(cols)}</div>")
    else:
        parts.append("<p class='note'>Figures omitted: install matplotlib (pip install 'emomoe[plot]').</p>")
    parts.append("<h2>Domain coverage</h2><div class='row'>" + "".join(
        f"<div class='col'>{_coverage_table(n, s, m)}</div>" for n, (s, m) in results.items()) + "</div>")
    page = ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:40]


def analyze(models: Mapping[str, str | os.PathLike], data: str | os.PathLike, out_dir: str | os.PathLike,
            max_docs_per_domain: int | None = None, max_length: int | None = None, top_m: int | None = None,
            batch_tokens: int = 8192, pool: bool = False, seed: int = 0, progress: bool = False,
            text_field: str = "text", domain_field: str = "domain") -> Path:
    """Load each checkpoint directory (with its tokenizer.json), measure routing on `data`, write the report.

    models: name -> checkpoint directory. Returns the path of index.html.
    """
    from emomoe.data import Tokenizer
    from emomoe.eval.data import limit_per_domain, read_documents
    from emomoe.io.checkpoint import load_model

    docs = limit_per_domain(read_documents(data, text_field, domain_field), max_docs_per_domain)
    results = {}
    for name, path in models.items():
        model = load_model(path)
        tokenizer = Tokenizer.from_file(path)
        stats = collect_routing(model, tokenizer, docs, max_length, batch_tokens, pool, progress)
        results[name] = (stats, specialisation(stats, top_m, seed=seed))
    return write_report(results, out_dir, source=str(data))

