"""Adaptive pools: the prompt chooses the experts, generation stays inside them.

EMO trains every document to route within a pool: the top-m routed experts of the document's
summed routed softmax, layer by layer (EMO.md section 3). Generation can do the same with the
prompt as the document: the prefill routes the prompt within its own top-m pool (computed by
the model's forward, `pool_sizes`), and every generated token then routes within that pool
(per-row masks on the routers). No calibration step is needed; `load_pool_model` goes one step
further and reads only the pool's experts from a checkpoint.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from emomoe.model import EmoForCausalLM
from emomoe.model.moe import MoE
from emomoe.model.router import segment_ids
from emomoe.model.transformer import rope_tables


def check_pool_size(model: EmoForCausalLM, pool: int) -> None:
    """Raise ValueError unless every layer's tokens fit in a pool of `pool` routed experts."""
    cfg = model.config
    for layer in range(cfg.num_hidden_layers):
        if pool < cfg.routed_top_k(layer):
            raise ValueError(f"pool ({pool}) must be >= routed top_k ({cfg.routed_top_k(layer)}): a token "
                             "routes to that many experts of its pool")


def row_pools(routings, batch: int, length: int) -> list[Tensor]:
    """Per layer [B, E_r] bool: each row's pool, read from a pooled prefill's routings.

    Every token of a row shares its document's pool; the last position is always a real token
    (prompts are left-padded), so its mask is the row's pool.
    """
    return [r.pool_mask.view(batch, length, -1)[:, -1] for r in routings]


@contextmanager
def route_within(model: EmoForCausalLM, pools: list[Tensor] | None, tokens_per_row: int = 1):
    """Restrict routing of row b's tokens to pools[layer][b] while inside the block.

    Sets each router's `allowed` mask to a per-token mask [B * tokens_per_row, E_r] (combined
    with any mask already there, e.g. a selection) and restores the old masks on exit.
    """
    if pools is None:
        yield
        return
    gates = [layer.mlp.gate for layer in model.model.layers]
    saved = [gate.allowed for gate in gates]
    try:
        for gate, pool, old in zip(gates, pools, saved):
            mask = pool.repeat_interleave(tokens_per_row, dim=0)  # [B*T, E_r]
            gate.allowed = mask if old is None else mask & old
        yield
    finally:
        for gate, old in zip(gates, saved):
            gate.allowed = old


def pool_prefill_args(valid: Tensor, pool: int) -> tuple[Tensor, Tensor]:
    """doc_ids [B, T] (0 = prompt, -1 = padding) and pool_sizes for a pooled prefill of left-padded rows."""
    doc_ids = torch.where(valid, 0, -1)
    _, num_segments = segment_ids(doc_ids)
    return doc_ids, torch.full((num_segments,), pool, dtype=torch.long, device=valid.device)


@dataclass
class PoolReport:
    """What `load_pool_model` materialised: experts kept per layer, bytes, resident memory."""

    experts_kept: list[int]  # per layer, shared included
    experts_total: list[int]
    expert_bytes_kept: int
    expert_bytes_total: int
    param_bytes: int  # all parameters now resident
    full_param_bytes: int  # what the whole checkpoint holds
    rss_bytes: int | None

    def lines(self) -> list[str]:
        """A short human-readable memory report."""
        mb = 2**20
        kept, total = sum(self.experts_kept), sum(self.experts_total)
        out = [f"pool-only load: {kept} of {total} experts materialised (per layer: "
               f"{' '.join(map(str, self.experts_kept))})",
               f"  expert weights  {self.expert_bytes_kept / mb:.1f} MiB of {self.expert_bytes_total / mb:.1f} MiB",
               f"  parameters      {self.param_bytes / mb:.1f} MiB resident "
               f"(full model {self.full_param_bytes / mb:.1f} MiB)"]
        if self.rss_bytes is not None:
            out.append(f"  process RSS     {self.rss_bytes / mb:.1f} MiB")
        return out


def resident_bytes() -> int | None:
    """Resident set size of this process (Linux /proc), or None where unavailable."""
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@torch.no_grad()
def load_pool_model(path: str | os.PathLike, input_ids: Tensor, valid: Tensor, pool: int,
                    dtype: torch.dtype | None = None) -> tuple[EmoForCausalLM, list[Tensor], PoolReport]:
    """Load a checkpoint keeping only the experts of the prompts' pools (never the others).

    input_ids / valid [B, T]: the left-padded prompts and their real-token mask. Walks the network
    layer by layer as the pooled prefill does: layer l's pool comes from its gate on the prompt's
    hidden states, then only those experts (the union over rows, plus the shared ones) are read.
    Returns the pruned model (released pruned layout: kept routed experts ascending, shared last),
    each row's pool per layer as [B, K_l - S] masks over the kept routed experts, and a memory
    report. Raises ValueError for a pool below the routed top_k, CheckpointError for a bad checkpoint.
    """
    from emomoe.select.stream import TensorReader

    reader = TensorReader(path)
    cfg = reader.config
    with torch.device("meta"):
        model = EmoForCausalLM(cfg)
    check_pool_size(model, pool)
    names = [n for n in model.state_dict() if ".mlp.experts." not in n
             and not (cfg.tie_word_embeddings and n == "lm_head.weight")]
    model.load_state_dict(reader.read(names, dtype), strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight

    batch, length = input_ids.shape
    doc_ids, pool_sizes = pool_prefill_args(valid, pool)
    segments, num_segments = segment_ids(doc_ids)
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)
    cos, sin = rope_tables(positions, cfg.head_dim, cfg.rope_theta)
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    mask = ((doc_ids.unsqueeze(-1) == doc_ids.unsqueeze(-2)) & causal).unsqueeze(1)  # [B, 1, T, T]
    x = model.model.embed_tokens(input_ids)
    pools, kept_per_layer = [], []
    for i, layer in enumerate(model.model.layers):  # the pooled prefill, one layer at a time
        x = x + layer.self_attn(layer.pre_attention_layernorm(x), cos, sin, mask)
        h = layer.pre_feedforward_layernorm(x)
        routing = layer.mlp.gate(h.reshape(-1, h.shape[-1]), segments, num_segments, pool_sizes)
        row_pool = routing.pool_mask.view(batch, length, -1)[:, -1]  # [B, E_r]
        kept_routed = row_pool.any(0).nonzero().flatten().tolist()
        kept = kept_routed + list(range(layer.mlp.gate.num_routed, layer.mlp.gate.num_experts))
        layer.mlp = _pool_moe(reader, cfg, i, layer.mlp.gate, kept, dtype)
        pools.append(row_pool[:, kept_routed])
        layer.mlp.gate.allowed = pools[-1].repeat_interleave(length, dim=0)
        x = x + layer.mlp(h)[0]
        layer.mlp.gate.allowed = None
        kept_per_layer.append(len(kept))
    model.config = cfg.replace(num_experts_per_layer=kept_per_layer,
                               num_shared_experts_per_layer=[cfg.shared_in_layer(i)
                                                             for i in range(cfg.num_hidden_layers)])
    model.eval().requires_grad_(False)

    expert_total = sum(reader.nbytes(n) for n in reader.shapes if ".mlp.experts." in n)
    expert_kept = sum(p.nbytes for layer in model.model.layers for p in layer.mlp.experts.parameters())
    report = PoolReport(kept_per_layer, [cfg.experts_in_layer(i) for i in range(cfg.num_hidden_layers)],
                        expert_kept, expert_total, sum(p.nbytes for p in model.parameters()),
                        sum(reader.nbytes(n) for n in reader.shapes), resident_bytes())
    return model, pools, report


def _pool_moe(reader, cfg, layer: int, gate, kept: list[int], dtype: torch.dtype | None) -> MoE:
    """The MoE of `layer` holding only experts `kept` (gate rows in the same order), read from `reader`."""
    prefix = f"model.layers.{layer}.mlp.experts."
    stacks = {proj: [f"{prefix}{j}.{proj}.weight" for j in kept] for proj in ("gate_proj", "up_proj", "down_proj")}
    weights = reader.read([], dtype, stacks)
    with torch.device("meta"):
        moe = MoE(cfg.hidden_size, cfg.intermediate_size, len(kept), gate.num_shared, gate.top_k, gate.norm_topk_prob)
    moe.gate.weight = torch.nn.Parameter(gate.weight[kept].clone())
    for proj, tensor in weights.items():
        setattr(moe.experts, proj, torch.nn.Parameter(tensor))
    return moe
