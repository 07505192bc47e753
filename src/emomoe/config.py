"""`EmoConfig`: the one description of a model, its validation, presets and the HF `config.json` map.

Field names follow the released Hugging Face `config.json` (EMO.md section 6) so that a
checkpoint's config maps onto this dataclass one to one; the EMO pool fields (`router`,
`pool_min`, `pool_max`, `pool_eval`) are ours and are written alongside (the released code
ignores unknown keys, as we do).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ROUTERS = ("emo", "standard")


@dataclass
class EmoConfig:
    """Geometry, routing and pool settings of an EMO / standard MoE transformer.

    Experts are counted per layer including the shared ones; the LAST `num_shared_experts`
    experts of a layer are shared (always active, weight 1). `num_experts_per_tok` (top_k)
    counts the shared experts too, so a token uses `top_k - num_shared_experts` routed experts.
    `pool_min`/`pool_max`/`pool_eval` count routed experts of a document's pool.
    """

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 32  # hidden size of one SwiGLU expert
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 4
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    rope_theta: float = 500000.0
    attention_bias: bool = False
    tie_word_embeddings: bool = False
    initializer_range: float = 0.02
    num_experts: int = 8
    num_experts_per_tok: int = 3
    num_shared_experts: int = 1
    norm_topk_prob: bool = False
    # Pruned checkpoints: experts (and shared experts) per layer; None = the same in every layer.
    num_experts_per_layer: list[int] | None = None
    num_shared_experts_per_layer: list[int] | None = None
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    router_aux_loss_coef: float = 0.1
    router_z_loss_coef: float = 0.001
    # EMO document pools (ours). router "standard" ignores the pool fields.
    router: str = "emo"
    pool_min: int | None = None  # None: routed top_k
    pool_max: int | None = None  # None: all routed experts
    pool_eval: int | None = None  # None: no pool at evaluation (the released inference code)
    extra: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived geometry -------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def experts_in_layer(self, layer: int) -> int:
        """Experts (routed + shared) in `layer`."""
        per_layer = self.num_experts_per_layer
        return per_layer[layer] if per_layer is not None else self.num_experts

    def shared_in_layer(self, layer: int) -> int:
        """Shared experts in `layer`."""
        per_layer = self.num_shared_experts_per_layer
        return per_layer[layer] if per_layer is not None else self.num_shared_experts

    def routed_top_k(self, layer: int = 0) -> int:
        """Routed experts per token in `layer` (top_k minus the shared experts)."""
        return self.num_experts_per_tok - self.shared_in_layer(layer)

    def pool_range(self, layer: int = 0) -> tuple[int, int]:
        """(min, max) routed pool size in `layer`, clipped to the layer's routed experts."""
        routed = self.experts_in_layer(layer) - self.shared_in_layer(layer)
        low = self.pool_min if self.pool_min is not None else self.routed_top_k(layer)
        high = self.pool_max if self.pool_max is not None else routed
        return min(low, routed), min(high, routed)

    # ---- validation -------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the field and the rule for any inconsistent setting."""

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"invalid EmoConfig: {msg}")

        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                     "num_experts", "num_experts_per_tok"):
            value = getattr(self, name)
            need(isinstance(value, int) and value > 0, f"{name} ({value!r}) must be a positive integer")
        need(self.num_shared_experts >= 0, f"num_shared_experts ({self.num_shared_experts}) must be >= 0")
        need(self.hidden_size % self.num_attention_heads == 0,
             f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
             f"({self.num_attention_heads})")
        need(self.num_attention_heads % self.num_key_value_heads == 0,
             f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
             f"({self.num_key_value_heads})")
        need(self.head_dim % 2 == 0, f"head_dim ({self.head_dim}) must be even for RoPE")
        need(self.rope_theta > 0, f"rope_theta ({self.rope_theta}) must be > 0")
        need(self.rms_norm_eps > 0, f"rms_norm_eps ({self.rms_norm_eps}) must be > 0")
        need(self.router in ROUTERS, f"router ({self.router!r}) must be one of {ROUTERS}")
        layers = self.num_hidden_layers
        for name in ("num_experts_per_layer", "num_shared_experts_per_layer"):
            value = getattr(self, name)
            if value is not None:
                need(isinstance(value, list) and len(value) == layers,
                     f"{name} must be a list of {layers} integers (one per layer), got {value!r}")
        for layer in range(layers):
            where = f" in layer {layer}" if self.num_experts_per_layer is not None else ""
            experts, shared = self.experts_in_layer(layer), self.shared_in_layer(layer)
            need(experts > 0, f"num_experts{where} ({experts}) must be > 0 (dense layers are not supported)")
            need(self.num_experts_per_tok <= experts,
                 f"num_experts_per_tok ({self.num_experts_per_tok}) must be <= num_experts{where} ({experts})")
            need(0 <= shared < self.num_experts_per_tok,
                 f"num_shared_experts{where} ({shared}) must be < num_experts_per_tok "
                 f"({self.num_experts_per_tok}): at least one expert must be routed")
        need(not (self.norm_topk_prob and self.num_shared_experts > 0),
             "norm_topk_prob=True is not defined with shared experts (the released code rejects it too)")
        if self.pool_min is not None:
            need(self.pool_min >= self.routed_top_k(),
                 f"pool_min ({self.pool_min}) must be >= routed top_k ({self.routed_top_k()}): "
                 "a pool must hold every expert a token routes to")
        if self.pool_max is not None:
            routed = self.num_experts - self.num_shared_experts
            need(self.pool_max <= routed, f"pool_max ({self.pool_max}) must be <= routed experts ({routed})")
            low = self.pool_min if self.pool_min is not None else self.routed_top_k()
            need(low <= self.pool_max, f"pool_min ({low}) must be <= pool_max ({self.pool_max})")
        if self.pool_eval is not None:
            need(self.pool_eval >= self.routed_top_k(),
                 f"pool_eval ({self.pool_eval}) must be >= routed top_k ({self.routed_top_k()})")
        for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            need(value is None or 0 <= value < self.vocab_size,
                 f"{name} ({value}) must lie in [0, vocab_size={self.vocab_size})")

    # ---- Hugging Face config.json -----------------------------------------------------
    def to_hf_dict(self) -> dict[str, Any]:
        """The released `config.json` layout (plus our pool fields and any preserved extra keys)."""
        out: dict[str, Any] = dict(self.extra)
        out.update({
            "model_type": "emo",
            "architectures": ["EmoForCausalLM"],
            "hidden_act": "silu",
            "use_cache": True,
            "rope_scaling": None,
            "attention_dropout": 0.0,
            "output_router_logits": False,
            "always_active_experts": None,
            "always_active_experts_per_layer": None,
            "dense_intermediate_size": None,
            "dense_mlp_bias": False,
        })
        for f in dataclasses.fields(self):
            if f.name != "extra":
                out[f.name] = getattr(self, f.name)
        return out

    @classmethod
    def from_hf_dict(cls, data: dict[str, Any]) -> EmoConfig:
        """Build from a `config.json` dict; unknown keys are kept in `extra` and written back."""
        if data.get("hidden_act", "silu") != "silu":
            raise ValueError(f"hidden_act {data['hidden_act']!r} is not supported (EMO experts use silu)")
        if data.get("always_active_experts") or data.get("always_active_experts_per_layer"):
            raise ValueError("always_active_experts is not supported: EMO checkpoints use shared experts "
                             "(num_shared_experts) instead")
        if data.get("rope_scaling"):
            raise ValueError(f"rope_scaling {data['rope_scaling']!r} is not supported (plain RoPE only)")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        return cls(**known, extra=extra)

    def replace(self, **changes: Any) -> EmoConfig:
        """A validated copy with `changes` applied."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, dict[str, Any]] = {
    # Unit tests: ~0.2M parameters.
    "tiny": dict(vocab_size=512, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                 num_experts=8, num_experts_per_tok=3, num_shared_experts=1, pool_min=2, pool_max=7),
    # CPU benchmark scale: ~18M total parameters, 32 experts, 4 active (1 shared).
    "small": dict(vocab_size=8192, hidden_size=256, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=2048,
                  num_experts=32, num_experts_per_tok=4, num_shared_experts=1, pool_min=4, pool_max=31,
                  pool_eval=8),
    # The released geometry (EMO.md section 2): ~14B total, ~1B active.
    "emo-1b14b": dict(vocab_size=100352, hidden_size=2048, intermediate_size=1024, num_hidden_layers=16,
                      num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=4096,
                      num_experts=128, num_experts_per_tok=8, num_shared_experts=1, pool_min=8,
                      pool_max=127, pool_eval=32, pad_token_id=100277, eos_token_id=100257),
}
PRESETS["stdmoe-1b14b"] = dict(PRESETS["emo-1b14b"], router="standard", pool_min=None, pool_max=None,
                               pool_eval=None)


def preset(name: str, **overrides: Any) -> EmoConfig:
    """The named preset (`tiny`, `small`, `emo-1b14b`, `stdmoe-1b14b`) with `overrides` applied."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return EmoConfig(**{**PRESETS[name], **overrides})


def count_parameters(config: EmoConfig) -> dict[str, int]:
    """Parameter counts from the geometry alone (no allocation).

    Returns `total`, `embedding` (input embedding + LM head), `non_embedding`, and
    `active_non_embedding` / `active`: the parameters one token uses (top_k experts per layer).
    """
    d, h = config.hidden_size, config.intermediate_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    attn = d * (q_out + 2 * kv_out) + q_out * d
    if config.attention_bias:
        attn += q_out + 2 * kv_out + d
    expert = 3 * d * h
    total_layers = active_layers = 0
    for layer in range(config.num_hidden_layers):
        experts = config.experts_in_layer(layer)
        common = attn + 2 * d + experts * d  # norms + gate
        total_layers += common + experts * expert
        active_layers += common + config.num_experts_per_tok * expert
    embedding = config.vocab_size * d * (1 if config.tie_word_embeddings else 2)
    non_embedding = total_layers + d  # + final norm
    active_non_embedding = active_layers + d
    return {
        "total": embedding + non_embedding,
        "embedding": embedding,
        "non_embedding": non_embedding,
        "active_non_embedding": active_non_embedding,
        "active": embedding + active_non_embedding,
    }
