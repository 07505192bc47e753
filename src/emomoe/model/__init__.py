"""The EMO model: transformer, MoE layer and router."""

from emomoe.model.moe import Experts, MoE, expert_matmul
from emomoe.model.router import (
    Router,
    Routing,
    doc_ids_from_eos,
    document_pool_mask,
    load_balancing_loss,
    route,
    router_z_loss,
    segment_ids,
)
from emomoe.model.transformer import EmoForCausalLM, EmoOutput

__all__ = [
    "EmoForCausalLM", "EmoOutput", "MoE", "Experts", "Router", "Routing", "expert_matmul", "route",
    "document_pool_mask", "doc_ids_from_eos", "segment_ids", "load_balancing_loss", "router_z_loss",
]
