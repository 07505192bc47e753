"""The EMO decoder-only transformer: one definition for training, selection, evaluation, generation.

Module and parameter names match the released Hugging Face checkpoint (EMO.md section 6)
except that each layer's experts are stacked ([E, h, d] tensors); `emomoe.io` maps between
the two. The model knows nothing of parallelism, data loading or the training loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emomoe.config import EmoConfig
from emomoe.model.moe import MoE, default_out_std
from emomoe.model.router import (
    Routing,
    doc_ids_from_eos,
    load_balancing_loss,
    router_z_loss,
    segment_ids,
)


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 and cast back to the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + self.eps)
        return (self.weight * x32).to(x.dtype)


def rope_tables(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """fp32 cos/sin tables [..., T, head_dim] for integer positions [..., T] (rotate_half layout)."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=positions.device).float() / head_dim)
    freqs = positions.float().unsqueeze(-1) * inv_freq  # [..., T, hd/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x [B, H, T, hd] by the tables (computed in fp32, returned in x's dtype)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    """Causal multi-head attention with grouped KV heads via scaled_dot_product_attention."""

    def __init__(self, config: EmoConfig, layer_idx: int = 0) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = (
            config.num_attention_heads, config.num_key_value_heads, hd)
        self.layer_idx = layer_idx  # which slot of a KV cache this layer reads and writes
        bias = config.attention_bias
        self.q_proj = nn.Linear(d, self.num_heads * hd, bias=bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * hd, bias=bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * hd, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * hd, d, bias=bias)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache=None) -> Tensor:
        """x [B, T, d]; mask: None for plain causal, else bool [B, 1, T, S] (True = attend).

        With a `cache` (anything with `update(key, value, layer_idx) -> (keys, values)`, such as
        `emomoe.generate.KVCache` or a transformers `Cache`), this step's keys and values are
        appended and the queries attend over all S = past + T cached positions.
        """
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        groups = self.num_heads // self.num_kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        if mask is None:  # plain causal; one query with a cache sees every cached key
            out = F.scaled_dot_product_attention(q, k, v, is_causal=length > 1)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DecoderLayer(nn.Module):
    """Pre-norm block: x + attn(norm(x)), then h + moe(norm(h))."""

    def __init__(self, config: EmoConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, layer)
        self.mlp = MoE(config.hidden_size, config.intermediate_size, config.experts_in_layer(layer),
                       config.shared_in_layer(layer), config.num_experts_per_tok, config.norm_topk_prob)
        self.pre_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.pre_feedforward_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, segments: Tensor | None,
                num_segments: int, pool_sizes: Tensor | None, cache=None) -> tuple[Tensor, Routing]:
        x = x + self.self_attn(self.pre_attention_layernorm(x), cos, sin, mask, cache)
        moe_out, routing = self.mlp(self.pre_feedforward_layernorm(x), segments, num_segments, pool_sizes)
        return x + moe_out, routing


class EmoBackbone(nn.Module):
    """Embedding, decoder layers and final norm (the `model.` prefix of the checkpoint)."""

    def __init__(self, config: EmoConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


@dataclass
class EmoOutput:
    """Model output: logits plus what the routers computed (nothing is kept in module state)."""

    logits: Tensor  # [B, T, V]
    routings: list[Routing] = field(repr=False)  # one per layer, over the B*T tokens
    hidden_states: Tensor | None = field(default=None, repr=False)  # [B, T, d] after the final norm

    @property
    def lb_loss(self) -> Tensor:
        """Mean over layers of the LB loss with this batch's own expert counts (computed on access)."""
        return torch.stack([layer_lb_loss(r) for r in self.routings]).mean()

    @property
    def z_loss(self) -> Tensor:
        """Mean over layers of the router z-loss (computed on access)."""
        return torch.stack([router_z_loss(r.logits) for r in self.routings]).mean()

    @property
    def expert_counts(self) -> list[Tensor]:
        """Per layer [E_r]: tokens routed to each routed expert."""
        return [r.expert_counts for r in self.routings]

    @property
    def mean_probs(self) -> list[Tensor]:
        """Per layer [E_r]: mean routed probability (with gradient), the pbar of the LB loss."""
        return [r.mean_probs for r in self.routings]


class EmoForCausalLM(nn.Module):
    """EMO (router "emo") or standard MoE (router "standard") causal language model."""

    def __init__(self, config: EmoConfig) -> None:
        super().__init__()
        self.config = config
        self.model = EmoBackbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, initializer_range) init; residual output projections scaled by depth."""
        std = self.config.initializer_range
        out_std = default_out_std(std, self.config.num_hidden_layers)
        nn.init.normal_(self.model.embed_tokens.weight, std=std)
        if not self.config.tie_word_embeddings:
            nn.init.normal_(self.lm_head.weight, std=std)
        for layer in self.model.layers:
            attn = layer.self_attn
            for proj in (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj):
                nn.init.normal_(proj.weight, std=out_std if proj is attn.o_proj else std)
                if proj.bias is not None:
                    nn.init.zeros_(proj.bias)
            layer.mlp.reset_parameters(std, out_std)
            nn.init.ones_(layer.pre_attention_layernorm.weight)
            nn.init.ones_(layer.pre_feedforward_layernorm.weight)
        nn.init.ones_(self.model.norm.weight)

    def uses_pool(self) -> bool:
        """Whether the next forward applies EMO document pools (train mode, or eval with pool_eval)."""
        cfg = self.config
        return cfg.router == "emo" and (self.training or cfg.pool_eval is not None)

    def draw_pool_sizes(self, num_segments: int, device: torch.device,
                        generator: torch.Generator | None = None) -> Tensor:
        """Pool size m per document segment: U[pool_min, pool_max] in training, pool_eval otherwise."""
        if not self.training:
            return torch.full((num_segments,), self.config.pool_eval, device=device, dtype=torch.long)
        low, high = self.config.pool_range(0)
        return torch.randint(low, high + 1, (num_segments,), device=device, generator=generator)

    def forward(
        self,
        input_ids: Tensor,
        doc_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        pool_sizes: Tensor | None = None,
        generator: torch.Generator | None = None,
        output_hidden_states: bool = False,
        cache=None,
        attention_mask: Tensor | None = None,
    ) -> EmoOutput:
        """Logits and router outputs for input_ids [B, T].

        doc_ids [B, T] (per-token document index within each row, negative = padding) enables
        intra-document attention (a token attends only to earlier tokens of its own document)
        and defines the EMO pools. Without it, attention is plainly causal and pools come from
        EOS positions (each document ends with `eos_token_id`; one document per row if unset).
        pool_sizes [B*(T+1)] overrides the per-document pool size draw (see `segment_ids`);
        `generator` seeds the draw. A pool is applied only when `uses_pool()` is true.

        Incremental decoding: `cache` (e.g. `emomoe.generate.KVCache`) holds the keys and values
        of the P tokens before these T; `position_ids` then default to P..P+T-1 (pass [B, T] per-row
        positions for left-padded rows) and `attention_mask` [B, P+T] (True/1 = real token) hides
        padding keys. With a cache a pool is applied only when `pool_sizes` is given: a document
        pool needs the whole document, so generation fixes it from the prompt (`emomoe.generate`).
        doc_ids may be combined with a cache only while it is empty. Raises ValueError when P+T
        exceeds max_position_embeddings (without explicit positions) or shapes disagree.
        """
        cfg = self.config
        batch, length = input_ids.shape
        past = cache.get_seq_length() if cache is not None else 0
        if past + length > cfg.max_position_embeddings and position_ids is None:
            raise ValueError(f"sequence length {past + length} exceeds max_position_embeddings "
                             f"({cfg.max_position_embeddings})")
        mask = None
        if doc_ids is not None:
            if doc_ids.shape != input_ids.shape:
                raise ValueError(f"doc_ids shape {tuple(doc_ids.shape)} must equal input_ids shape "
                                 f"{tuple(input_ids.shape)}")
            if past:
                raise ValueError(f"doc_ids cannot be combined with a cache that already holds {past} tokens; "
                                 "pass attention_mask instead")
            causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
            mask = (doc_ids.unsqueeze(-1) == doc_ids.unsqueeze(-2)) & causal  # [B, T, T]
            mask = mask.unsqueeze(1)
        if attention_mask is not None or (past and length > 1):
            visible = cached_attention_mask(attention_mask, batch, past, length, input_ids.device)
            mask = visible if mask is None else mask & visible
        segments, num_segments = None, 0
        if pool_sizes is not None or (cache is None and self.uses_pool()):
            if doc_ids is None:
                doc_ids = (doc_ids_from_eos(input_ids, cfg.eos_token_id) if cfg.eos_token_id is not None
                           else torch.zeros_like(input_ids))
            segments, num_segments = segment_ids(doc_ids)
            if pool_sizes is None:
                pool_sizes = self.draw_pool_sizes(num_segments, input_ids.device, generator)
        if position_ids is None:
            position_ids = torch.arange(past, past + length, device=input_ids.device)
        cos, sin = rope_tables(position_ids, cfg.head_dim, cfg.rope_theta)
        if cos.dim() == 3:  # per-row positions [B, T, hd] -> broadcast over heads
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)

        x = self.model.embed_tokens(input_ids)
        routings = []
        for layer in self.model.layers:
            x, routing = layer(x, cos, sin, mask, segments, num_segments, pool_sizes, cache)
            routings.append(routing)
        x = self.model.norm(x)
        logits = self.lm_head(x)
        return EmoOutput(logits=logits, routings=routings, hidden_states=x if output_hidden_states else None)


def cached_attention_mask(attention_mask: Tensor | None, batch: int, past: int, length: int,
                          device: torch.device) -> Tensor:
    """Bool [B, 1, T, P+T] (True = attend) for T queries after P cached positions.

    Query i (absolute position P+i) sees keys 0..P+i that `attention_mask` [B, P+T] marks real;
    every query also sees itself, so a padding query never has an empty softmax row (NaN).
    """
    total = past + length
    key_pos = torch.arange(total, device=device)
    query_pos = torch.arange(past, total, device=device).unsqueeze(-1)  # [T, 1]
    visible = (key_pos <= query_pos).expand(batch, length, total)  # [B, T, S]
    if attention_mask is not None:
        if tuple(attention_mask.shape) != (batch, total):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must be (batch, cached + new "
                             f"tokens) = {(batch, total)}")
        visible = (visible & attention_mask.bool().unsqueeze(1)) | (key_pos == query_pos)
    return visible.unsqueeze(1)


def layer_lb_loss(routing: Routing) -> Tensor:
    """LB loss of one layer from its own (local) expert counts."""
    num_tokens = max(routing.probs.shape[0], 1)
    return load_balancing_loss(routing.mean_probs, routing.expert_counts / num_tokens, routing.routed_top_k)
