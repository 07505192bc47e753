"""Routing: the standard top-k softmax router and the EMO document pool, in one module.

Everything here is a pure function of tensors except `Router`, which only owns the gate
weight and calls them. Layout: with E experts and S shared ones, the last S are shared and
routing happens among the first E_r = E - S ("routed") experts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def doc_ids_from_eos(input_ids: Tensor, eos_id: int) -> Tensor:
    """Per-token document index [B, T] for packed sequences whose documents end with EOS.

    The EOS token belongs to the document it ends; the next token starts a new document.
    """
    is_eos = (input_ids == eos_id).long()
    return is_eos.cumsum(dim=-1) - is_eos


def segment_ids(doc_ids: Tensor) -> tuple[Tensor, int]:
    """Batch-global segment index per token [B*T] and the number of segments.

    Documents are numbered within each row; row b's document j becomes segment b*(T+1) + j.
    Negative ids (padding) get segment b*(T+1) + T of their row, apart from every real document.
    No host synchronisation: the segment count is a function of the shape alone.
    """
    batch, length = doc_ids.shape
    local = torch.where(doc_ids < 0, length, doc_ids.clamp(max=length - 1))
    rows = torch.arange(batch, device=doc_ids.device).unsqueeze(1) * (length + 1)
    return (rows + local).reshape(-1), batch * (length + 1)


def document_pool_mask(probs: Tensor, segments: Tensor, num_segments: int, pool_sizes: Tensor) -> Tensor:
    """EMO pool: the top-m routed experts of each document's summed softmax, per token.

    probs: [N, E_r] routed softmax per token (its gradient is not used: the choice is hard).
    segments: [N] segment (document) index per token. pool_sizes: [num_segments] m per document.
    Returns a bool mask [N, E_r], True where the expert is in the token's document pool.
    Ties are broken towards the lower expert index (stable sort), so the result is deterministic.
    """
    num_routed = probs.shape[-1]
    doc_mass = probs.new_zeros(num_segments, num_routed, dtype=torch.float32)
    doc_mass.index_add_(0, segments, probs.detach().float())  # [D, E_r]
    order = torch.sort(doc_mass, dim=-1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(num_routed, device=probs.device).expand_as(order))
    doc_mask = ranks < pool_sizes.unsqueeze(-1)  # [D, E_r]
    return doc_mask[segments]


def load_balancing_loss(mean_probs: Tensor, expert_fraction: Tensor, routed_top_k: int) -> Tensor:
    """Switch-style LB loss over routed experts: (E_r / k_r) * sum_i f_i * pbar_i.

    mean_probs: [E_r] mean over tokens of the (pool-masked) routed softmax (carries the gradient).
    expert_fraction: [E_r] f_i, the fraction of tokens routed to expert i (sums to k_r); pass
    counts summed over micro-batches and ranks divided by the global token count for global LB.
    Equals 1 at perfect balance.
    """
    num_routed = mean_probs.shape[-1]
    return (num_routed / routed_top_k) * (expert_fraction.detach().to(mean_probs.dtype) * mean_probs).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """Mean over tokens of logsumexp(gate logits)^2 (keeps router logits small)."""
    return torch.logsumexp(logits.float(), dim=-1).square().mean()


@dataclass
class Routing:
    """What the router computed for N tokens of one layer (k = routed top_k + shared)."""

    expert_ids: Tensor  # [N, k] long: the routed experts, then the shared ones
    weights: Tensor  # [N, k] fp32 combination weights (shared: softmax over shared logits = 1 for S=1)
    probs: Tensor  # [N, E_r] fp32 routed softmax after pool masking (zero outside the pool)
    logits: Tensor  # [N, E] raw gate logits
    expert_counts: Tensor  # [E_r] fp32 tokens routed to each routed expert (no gradient)
    pool_mask: Tensor | None  # [N, E_r] bool, None when no pool was applied
    routed_top_k: int  # k - S: routed experts per token

    @property
    def mean_probs(self) -> Tensor:
        """[E_r] mean routed probability over tokens (the pbar of the LB loss)."""
        return self.probs.mean(dim=0)


def route(
    logits: Tensor,
    num_shared: int,
    top_k: int,
    norm_topk_prob: bool = False,
    pool_mask: Tensor | None = None,
    allowed: Tensor | None = None,
) -> Routing:
    """Top-k routing from gate logits [N, E].

    The routed softmax runs in fp32 over the first E - S logits, restricted to `pool_mask`
    ([N, E_r] bool) and to `allowed` ([E_r] bool, e.g. the kept experts of a selection) when
    given; masked experts get probability exactly 0. The top (k - S) probabilities are the
    weights (renormalised only with `norm_topk_prob`). Shared experts are always used.
    """
    num_experts = logits.shape[-1]
    num_routed = num_experts - num_shared
    routed_k = top_k - num_shared
    routed_logits = logits[:, :num_routed].float()
    if allowed is not None:
        routed_logits = routed_logits.masked_fill(~allowed, float("-inf"))
    if pool_mask is not None:
        routed_logits = routed_logits.masked_fill(~pool_mask, float("-inf"))
    probs = F.softmax(routed_logits, dim=-1)  # [N, E_r]
    weights, expert_ids = torch.topk(probs, routed_k, dim=-1)  # [N, k_r]
    if norm_topk_prob:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    if num_shared:
        shared_w = F.softmax(logits[:, num_routed:].float(), dim=-1)  # [N, S]
        shared_ids = torch.arange(num_routed, num_experts, device=logits.device).expand_as(shared_w)
        weights = torch.cat([weights, shared_w], dim=-1)
        expert_ids = torch.cat([expert_ids, shared_ids], dim=-1)
    counts = torch.bincount(expert_ids[:, :routed_k].reshape(-1), minlength=num_experts)[:num_routed]
    return Routing(expert_ids, weights, probs, logits, counts.float(), pool_mask, routed_k)


class Router(nn.Module):
    """The gate of one MoE layer: a bias-free linear map hidden -> E logits plus the routing rule.

    Without pool sizes every token routes among all routed experts (the standard router);
    with them each document is first restricted to its EMO pool: the top-m experts of the
    document's summed routed softmax. Pool sizes come from the caller (drawn per document in
    training, fixed at evaluation), so the router holds no randomness and no state beyond its
    weight and the optional `allowed` mask (routing restricted to a subset of experts).
    Its weight is named like the released gate (`mlp.gate.weight`).
    """

    def __init__(self, hidden_size: int, num_experts: int, num_shared: int, top_k: int,
                 norm_topk_prob: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size))  # [E, d]
        self.num_experts = num_experts
        self.num_shared = num_shared
        self.top_k = top_k
        self.norm_topk_prob = norm_topk_prob
        self.register_buffer("allowed", None, persistent=False)  # [E_r] or per-token [N, E_r] bool, or None

    @property
    def num_routed(self) -> int:
        return self.num_experts - self.num_shared

    def forward(self, x: Tensor, segments: Tensor | None = None, num_segments: int = 0,
                pool_sizes: Tensor | None = None) -> Routing:
        """Route tokens x [N, d]; with `segments` and `pool_sizes` apply the EMO document pool."""
        logits = F.linear(x, self.weight)  # [N, E]
        pool_mask = None
        if pool_sizes is not None:
            if segments is None:
                raise ValueError("EMO pool routing needs the token segments (document ids)")
            routed_logits = logits[:, : self.num_routed].float()
            if self.allowed is not None:  # rank the pool as a model holding only the allowed experts would
                routed_logits = routed_logits.masked_fill(~self.allowed, float("-inf"))
            plain = F.softmax(routed_logits, dim=-1)
            sizes = pool_sizes.clamp(max=self.num_routed)
            pool_mask = document_pool_mask(plain, segments, num_segments, sizes)
        return route(logits, self.num_shared, self.top_k, self.norm_topk_prob, pool_mask, self.allowed)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, shared={self.num_shared}, top_k={self.top_k}"
