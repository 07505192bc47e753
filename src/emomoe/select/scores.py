"""Selection scores: pure functions of one layer's routing (and expert outputs), tensors in and out.

Every score is a [E_r] vector over the layer's routed experts (higher = keep); scores of several
calibration batches are summed, so each function returns a sum over the valid tokens it is given.
`choose` turns scores into kept ids with a fixed tie rule (ties go to the lower expert id).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from emomoe.model.moe import Experts
from emomoe.model.router import Routing

METHODS = ("global", "layerwise", "frequency", "easy-ep", "random")


def choose(scores: Tensor, count: int) -> Tensor:
    """Ids of the `count` highest scores, ascending; ties go to the lower id. scores: [E_r]."""
    order = torch.sort(scores.double(), descending=True, stable=True).indices
    return order[:count].sort().values


def probability_mass(routing: Routing, valid: Tensor) -> Tensor:
    """[E_r] sum over valid tokens of the routed softmax probability (the `global` score)."""
    return routing.probs[valid].double().sum(0)


def selection_counts(routing: Routing, valid: Tensor, routed_top_k: int) -> Tensor:
    """[E_r] how often each routed expert is among a valid token's top-k (the `frequency` score)."""
    num_routed = routing.probs.shape[-1]
    ids = routing.expert_ids[valid, :routed_top_k].reshape(-1)
    return torch.bincount(ids, minlength=num_routed)[:num_routed].double()


def expert_output_norms(experts: Experts, x: Tensor, expert_ids: Tensor) -> Tensor:
    """||expert_e(x_n)|| for every assignment: x [N, d], expert_ids [N, k] -> [N, k] fp32.

    Assignments are grouped by expert so each expert runs once on its tokens (unweighted output).
    """
    flat = expert_ids.reshape(-1)  # [N*k]
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=experts.num_experts).tolist()
    token_idx = order // expert_ids.shape[1]
    norms = torch.empty(flat.shape[0], dtype=torch.float32, device=x.device)
    start = 0
    for e, n in enumerate(counts):
        if n:
            xe = x.index_select(0, token_idx[start:start + n])
            hidden = F.silu(xe @ experts.gate_proj[e].t()) * (xe @ experts.up_proj[e].t())
            y = hidden @ experts.down_proj[e].t()
            norms[start:start + n] = y.float().norm(dim=-1)
        start += n
    out = torch.empty_like(norms)
    out[order] = norms
    return out.view_as(expert_ids)


def easy_ep(routing: Routing, valid: Tensor, routed_top_k: int, residual: Tensor, moe_out: Tensor,
            output_norms: Tensor) -> Tensor:
    """[E_r] EASY-EP score: sum over tokens routed to e of w * ||expert_e out|| * (1 - cos(h, h + moe)).

    residual: [N, d] hidden state entering the MoE block (before the residual add); moe_out: [N, d]
    the block's output; output_norms: [N, k] from `expert_output_norms`. The last factor measures
    how much the whole MoE block turns the token's hidden state.
    """
    num_routed = routing.probs.shape[-1]
    h, out = residual.float(), moe_out.float()
    turn = 1 - F.cosine_similarity(h, h + out, dim=-1)  # [N]
    contrib = routing.weights[:, :routed_top_k] * output_norms[:, :routed_top_k] * turn[:, None]
    scores = torch.zeros(num_routed, dtype=torch.float64, device=contrib.device)
    ids = routing.expert_ids[valid, :routed_top_k].reshape(-1)
    return scores.index_add_(0, ids, contrib[valid].reshape(-1).double())


def random_scores(num_routed: int, generator: torch.Generator) -> Tensor:
    """[E_r] uniform random scores (the `random` control; reproducible from the generator's seed)."""
    return torch.rand(num_routed, generator=generator, dtype=torch.float64)
