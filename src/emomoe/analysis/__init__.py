"""Analysis of expert specialisation: routing statistics, metrics, clustering, plots and an HTML report.

    stats = collect_routing(model, tokenizer, docs)          # per document and layer
    metrics = specialisation(stats)                           # NMI, coherence, coverage, clustering
    write_report({"emo": (stats, metrics)}, "report/")        # report/index.html
    analyze({"emo": "runs/emo-small/final"}, "val.jsonl", "report/")   # all of the above

See docs/eval.md.
"""

from emomoe.analysis.cluster import kmeans
from emomoe.analysis.metrics import (
    contingency,
    entropy,
    experts_to_cover,
    mutual_information,
    normalized_mutual_info,
    purity,
    top_m_share,
)
from emomoe.analysis.report import analyze, write_report
from emomoe.analysis.routing import RoutingStats, collect_routing, specialisation

__all__ = [
    "RoutingStats", "collect_routing", "specialisation", "write_report", "analyze", "kmeans", "contingency",
    "entropy", "experts_to_cover", "mutual_information", "normalized_mutual_info", "purity", "top_m_share",
]
