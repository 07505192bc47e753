"""Figures (matplotlib, the `plot` extra): expert x domain usage heatmaps and per-layer metric curves."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor


def pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend (raises ImportError naming the extra)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'emomoe[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def expert_order(share: Tensor) -> Tensor:
    """Column order [E] for a domain x expert share table [M, E]: grouped by each expert's top domain.

    Experts whose largest share belongs to domain 0 come first (most devoted first), then
    domain 1's, ..., so a modular model shows a block diagonal.
    """
    top_share, top_domain = share.max(dim=0)
    key = top_domain.double() * 2.0 - top_share.double() / top_share.double().max().clamp(min=1e-12)
    return torch.argsort(key, stable=True)


def domain_share(domain_counts: Tensor) -> Tensor:
    """Row-normalised [M, E]: each domain's share of its routed assignments per expert."""
    return domain_counts.double() / domain_counts.double().sum(1, keepdim=True).clamp(min=1e-12)


def usage_heatmap(domain_counts: Tensor, domains: list[str], path: str | Path, title: str,
                  vmax: float | None = None) -> Path:
    """PNG heatmap of each domain's share of routed assignments per expert (rows sum to 1).

    vmax: top of the colour scale (give models shown side by side the same one).
    """
    plt = pyplot()
    share = domain_share(domain_counts)  # [M, E]
    order = expert_order(share)
    experts = share.shape[1]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 0.2 * experts), 1.2 + 0.3 * len(domains)),
                           constrained_layout=True)
    image = ax.imshow(share[:, order].numpy(), aspect="auto", cmap="viridis", vmin=0.0, vmax=vmax)
    ax.set_yticks(range(len(domains)), domains, fontsize=8)
    if experts <= 64:
        ax.set_xticks(range(experts), [str(int(e)) for e in order], fontsize=6)
    ax.set_xlabel("routed expert id (grouped by the domain using it most)", fontsize=9)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="share of domain's routing", shrink=0.9)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


METRIC_LABELS = {
    "nmi": "NMI(expert; domain)",
    "coherence": "document coherence (top-m share)",
    "coverage_mean": "experts for 90% of a domain",
    "cluster_purity": "k-means cluster purity",
}


def metric_curves(metrics: Mapping[str, dict], path: str | Path) -> Path:
    """PNG: the per-layer metrics of each model (one panel per metric, one line per model)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(METRIC_LABELS), figsize=(4 * len(METRIC_LABELS), 3.2), constrained_layout=True)
    for ax, (key, label) in zip(axes, METRIC_LABELS.items()):
        for name, result in metrics.items():
            layers = [r["layer"] for r in result["layers"]]
            values = [float("nan") if r[key] is None else r[key] for r in result["layers"]]
            ax.plot(layers, values, marker="o", label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xticks(range(max(len(r["layers"]) for r in metrics.values())))
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
