"""Routing statistics per document and layer, and the specialisation metrics computed from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from emomoe.analysis.cluster import kmeans
from emomoe.analysis.metrics import (
    contingency,
    experts_to_cover,
    normalized_mutual_info,
    purity,
    top_m_share,
)
from emomoe.eval.batching import iter_forward, make_batches, make_windows, routing_without_pool
from emomoe.eval.data import EvalDoc, tokenize_docs
from emomoe.eval.perplexity import default_max_length
from emomoe.model import EmoForCausalLM


@dataclass
class RoutingStats:
    """What the routers did on a set of documents (per layer, routed experts only)."""

    domains: list[str]  # sorted domain names
    doc_domain: Tensor  # [D] long index into `domains`
    doc_tokens: Tensor  # [D] long tokens routed per document
    doc_counts: list[Tensor]  # per layer [D, E_r] routed top-k assignments per document
    doc_probs: list[Tensor]  # per layer [D, E_r] summed routed softmax per document
    routed_top_k: list[int]  # per layer

    @property
    def num_layers(self) -> int:
        return len(self.doc_counts)

    def domain_counts(self, layer: int) -> Tensor:
        """[num_domains, E_r] routed assignments per domain in `layer`."""
        counts = self.doc_counts[layer]
        out = counts.new_zeros(len(self.domains), counts.shape[1])
        return out.index_add_(0, self.doc_domain, counts)

    def mean_probs(self, layer: int) -> Tensor:
        """[D, E_r] mean routed softmax per document in `layer` (the clustering features)."""
        return self.doc_probs[layer] / self.doc_tokens.clamp(min=1).unsqueeze(1)


@torch.no_grad()
def collect_routing(model: EmoForCausalLM, tokenizer, docs: Sequence[EvalDoc], max_length: int | None = None,
                    batch_tokens: int = 8192, pool: bool = False, progress: bool = False) -> RoutingStats:
    """Run the model over `docs` (each document its own sequence, windows of `max_length`) and count routing.

    pool=False routes without an EMO pool (the released inference routing); True uses the
    model's `pool_eval`. Every input token counts once; padding never does.
    """
    if not docs:
        raise ValueError("no documents to analyse")
    if model.training:
        raise ValueError("analyse a model in eval mode (call model.eval())")
    seqs = tokenize_docs([d.text for d in docs], tokenizer)
    windows = make_windows(seqs, default_max_length(model, max_length))
    gates = [layer.mlp.gate for layer in model.model.layers]
    counts = [torch.zeros(len(docs), g.num_routed) for g in gates]
    probs = [torch.zeros(len(docs), g.num_routed) for g in gates]
    tokens = torch.zeros(len(docs), dtype=torch.long)
    with routing_without_pool(model, active=not pool):
        batches = make_batches(windows, batch_tokens, tokenizer.pad_id)
        for b, out in iter_forward(model, batches, progress, "routing"):
            valid = b.valid.reshape(-1, 1).float()  # [B*T, 1]
            rows, width = b.valid.shape
            doc = b.doc.cpu()
            tokens.index_add_(0, doc, b.valid.sum(-1).cpu())
            for layer, (routing, gate) in enumerate(zip(out.routings, gates)):
                routed_k = gate.top_k - gate.num_shared
                ids = routing.expert_ids[:, :routed_k]  # [B*T, k_r]
                hits = torch.zeros_like(routing.probs).scatter_add_(1, ids, torch.ones_like(ids, dtype=torch.float))
                per_row = (hits * valid).view(rows, width, -1).sum(1)  # [B, E_r]
                counts[layer].index_add_(0, doc, per_row.cpu())
                probs[layer].index_add_(0, doc, (routing.probs * valid).view(rows, width, -1).sum(1).cpu())
    names = sorted({d.domain for d in docs})
    index = {n: i for i, n in enumerate(names)}
    return RoutingStats(names, torch.tensor([index[d.domain] for d in docs]), tokens, counts, probs,
                        [g.top_k - g.num_shared for g in gates])


def default_top_m(stats: RoutingStats) -> int:
    """m for document coherence: a quarter of the routed experts, at least the routed top-k."""
    experts = stats.doc_counts[0].shape[1]
    return max(stats.routed_top_k[0], round(experts / 4))


def specialisation(stats: RoutingStats, top_m: int | None = None, mass: float = 0.9, seed: int = 0) -> dict:
    """Per-layer specialisation metrics (see docs/eval.md for the definitions).

    Returns {"settings": {...}, "layers": [{"layer", "experts", "nmi", "coherence",
    "coherence_uniform", "coverage_mean", "coverage": {domain: n}, "cluster_purity",
    "cluster_nmi"}, ...], "all_layers": {"cluster_purity", "cluster_nmi"}}. Clustering is
    k-means with k = number of domains on each document's mean router probabilities.
    """
    top_m = default_top_m(stats) if top_m is None else top_m
    k = len(stats.domains)
    layers = []
    for layer in range(stats.num_layers):
        experts = stats.doc_counts[layer].shape[1]
        dom = stats.domain_counts(layer)
        cover = experts_to_cover(dom, mass)
        has_tokens = stats.doc_tokens > 0
        coherence = top_m_share(stats.doc_counts[layer][has_tokens], min(top_m, experts))
        entry = {"layer": layer, "experts": experts, "nmi": normalized_mutual_info(dom),
                 "coherence": float(coherence.mean()), "coherence_uniform": min(top_m, experts) / experts,
                 "coverage_mean": float(cover.double().mean()),
                 "coverage": {n: int(c) for n, c in zip(stats.domains, cover)}}
        entry.update(_cluster(stats.mean_probs(layer), stats.doc_domain, k, seed))
        layers.append(entry)
    features = torch.cat([stats.mean_probs(i) for i in range(stats.num_layers)], dim=1)
    return {"settings": {"top_m": top_m, "mass": mass, "clusters": k, "documents": len(stats.doc_domain),
                        "tokens": int(stats.doc_tokens.sum())},
            "layers": layers, "all_layers": _cluster(features, stats.doc_domain, k, seed)}


def _cluster(features: Tensor, classes: Tensor, k: int, seed: int) -> dict:
    if k < 2 or features.shape[0] < k:
        return {"cluster_purity": None, "cluster_nmi": None}
    labels, _, _ = kmeans(features, k, seed=seed)
    table = contingency(labels, classes, k, int(classes.max()) + 1)
    return {"cluster_purity": purity(labels, classes), "cluster_nmi": normalized_mutual_info(table, "arithmetic")}
