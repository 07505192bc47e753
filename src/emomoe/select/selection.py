"""Choose K experts per layer from calibration text: `select_experts` and its result, `Selection`.

The calibration forward runs layer by layer over all calibration batches and keeps only the
hidden states between layers, so it works the same on a loaded model and, streamed, on a
checkpoint directory far larger than memory. Routing is the released inference routing (no EMO
pool). Methods (EMO.md section 5):

- `global`: mean routed softmax probability over all calibration tokens, full model, one pass.
- `layerwise`: the same score, greedy: layer l is measured with layers < l already pruned.
- `frequency`: how often each expert is in a token's top-k.
- `easy-ep`: sum over tokens routed to e of gate weight * ||expert_e output|| * (1 - cos(h, h + moe)).
- `random`: seeded uniform scores (a control; needs no calibration).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from emomoe.config import EmoConfig
from emomoe.model import EmoForCausalLM
from emomoe.model.transformer import rope_tables
from emomoe.select import scores as S
from emomoe.select.calib import CalibrationSet, batches, from_texts, from_token_ids, load_tokenizer
from emomoe.select.stream import CheckpointLayers, ModelLayers


@dataclass
class Selection:
    """Kept experts per layer and the scores they were chosen on.

    `kept[l]` lists the ORIGINAL ids of layer l's kept experts in their new order: the kept
    routed experts ascending, then the shared experts (always kept, always last), so new expert
    j of the pruned layer is original expert `kept[l][j]`. `scores[l]` holds the score of every
    routed expert of layer l, indexed by original id.
    """

    method: str
    keep: list[int]  # K per layer, counting the shared experts
    kept: list[list[int]]
    scores: list[list[float]]
    num_experts: list[int]  # per layer, before pruning
    num_shared: list[int]
    calibration: dict = field(default_factory=dict)
    seed: int | None = None
    seconds: float = 0.0

    @property
    def num_layers(self) -> int:
        return len(self.kept)

    def kept_routed(self, layer: int) -> list[int]:
        """Original ids of the kept routed experts of `layer`, ascending."""
        return self.kept[layer][: self.keep[layer] - self.num_shared[layer]]

    def allowed(self, layer: int) -> Tensor:
        """[E_r] bool mask of the kept routed experts (for `Router.allowed`)."""
        mask = torch.zeros(self.num_experts[layer] - self.num_shared[layer], dtype=torch.bool)
        mask[self.kept_routed(layer)] = True
        return mask

    def mask_model(self, model: EmoForCausalLM) -> EmoForCausalLM:
        """Restrict `model`'s routing to the kept experts in place (the pruned model's equivalent)."""
        self._check_fits(model.config)
        for i, layer in enumerate(model.model.layers):
            layer.mlp.gate.allowed = self.allowed(i).to(layer.mlp.gate.weight.device)
        return model

    def _check_fits(self, config: EmoConfig) -> None:
        layers = config.num_hidden_layers
        experts = [config.experts_in_layer(i) for i in range(layers)]
        if experts != self.num_experts:
            raise ValueError(f"selection was made for experts per layer {self.num_experts}, but the model "
                             f"has {experts}")

    def to_dict(self) -> dict:
        """The `selection.json` layout: run facts plus one record per layer."""
        layers = []
        for i in range(self.num_layers):
            routed = self.kept_routed(i)
            layers.append({"layer": i, "num_experts": self.num_experts[i], "num_shared": self.num_shared[i],
                           "keep": self.keep[i], "kept": self.kept[i],
                           "kept_scores": [self.scores[i][e] for e in routed], "scores": self.scores[i]})
        return {"method": self.method, "keep": self.keep, "seed": self.seed,
                "seconds": round(self.seconds, 3), "calibration": self.calibration, "layers": layers}

    @classmethod
    def from_dict(cls, data: dict) -> Selection:
        layers = data["layers"]
        return cls(method=data["method"], keep=[r["keep"] for r in layers], kept=[r["kept"] for r in layers],
                   scores=[r["scores"] for r in layers], num_experts=[r["num_experts"] for r in layers],
                   num_shared=[r["num_shared"] for r in layers], calibration=data.get("calibration", {}),
                   seed=data.get("seed"), seconds=data.get("seconds", 0.0))

    def save(self, path: str | os.PathLike) -> Path:
        """Write `selection.json` to `path`."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Selection:
        """Read a `selection.json`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def __repr__(self) -> str:
        d = asdict(self)
        return f"Selection(method={d['method']!r}, keep={d['keep']}, kept={d['kept']})"


def resolve_keep(config: EmoConfig, keep: int | Sequence[int] | None = None,
                 keep_frac: float | None = None) -> list[int]:
    """K per layer from a single K, a per-layer schedule, or a fraction of each layer's experts.

    Raises ValueError when K exceeds a layer's experts or is below num_experts_per_tok (the
    shared experts plus the routed top-k a token needs).
    """
    layers = config.num_hidden_layers
    if (keep is None) == (keep_frac is None):
        raise ValueError("give exactly one of keep (K per layer) and keep_frac (fraction of experts)")
    if keep_frac is not None:
        if not 0 < keep_frac <= 1:
            raise ValueError(f"keep_frac ({keep_frac}) must lie in (0, 1]")
        ks = [round(keep_frac * config.experts_in_layer(i)) for i in range(layers)]
    elif isinstance(keep, int):
        ks = [keep] * layers
    else:
        ks = [int(k) for k in keep]
        if len(ks) != layers:
            raise ValueError(f"keep schedule has {len(ks)} entries but the model has {layers} layers")
    for i, k in enumerate(ks):
        experts, shared = config.experts_in_layer(i), config.shared_in_layer(i)
        top_k = config.num_experts_per_tok
        if k > experts:
            raise ValueError(f"keep ({k}) in layer {i} must be <= the layer's experts ({experts})")
        if k < top_k:
            raise ValueError(f"keep ({k}) in layer {i} must be >= num_experts_per_tok ({top_k}): "
                             f"{shared} shared + {top_k - shared} routed experts per token")
    return ks


def as_calibration(calib, tokenizer=None, shots: int = 1, max_length: int | None = None) -> CalibrationSet:
    """A CalibrationSet from one: texts (need `tokenizer`), token id sequences, or a [B, T] tensor."""
    if isinstance(calib, CalibrationSet):
        return calib
    if _is_text(calib):
        if tokenizer is None:
            raise ValueError("calibration texts need a tokenizer (a checkpoint with tokenizer.json, or "
                             "tokenizer=...)")
        return from_texts(calib, tokenizer, shots, max_length)
    if calib is None or len(calib) == 0:
        raise ValueError("calibration text is empty: no tokens to calibrate on")
    return from_token_ids(calib, max_length)


@torch.no_grad()
def select_experts(model: str | os.PathLike | EmoForCausalLM, calib=None,
                   keep: int | Sequence[int] | None = None, method: str = "global", *,
                   keep_frac: float | None = None, tokenizer=None, shots: int = 1,
                   max_length: int | None = None, batch_tokens: int = 8192, seed: int = 0,
                   dtype: torch.dtype | None = torch.float32, device: str | torch.device = "cpu"
                   ) -> Selection:
    """Choose K experts per layer (K counts the always-kept shared experts) from calibration data.

    model: a checkpoint directory (streamed layer by layer; never loaded whole) or a loaded
    EmoForCausalLM (left unchanged). calib: a CalibrationSet, texts, or token id sequences
    (None only for `random`); texts use the checkpoint's tokenizer.json unless `tokenizer` is
    given. keep: K, or one K per layer; or keep_frac. dtype/device: compute settings for a
    checkpoint (default float32; None = the stored dtype): CPU bf16 matmuls are slower and
    grow a per-shape kernel cache layer after layer. Returns a Selection. Raises ValueError
    for an unknown method, an impossible K, empty calibration, or a checkpoint without tokenizer.
    """
    start = time.perf_counter()
    if method not in S.METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(S.METHODS)}")
    streamed = not isinstance(model, EmoForCausalLM)
    source = CheckpointLayers(model, dtype, device) if streamed else ModelLayers(model)
    cfg = source.config
    ks = resolve_keep(cfg, keep, keep_frac)
    num_experts = [cfg.experts_in_layer(i) for i in range(cfg.num_hidden_layers)]
    num_shared = [cfg.shared_in_layer(i) for i in range(cfg.num_hidden_layers)]
    keep_routed = [k - s for k, s in zip(ks, num_shared, strict=True)]
    calib_set = None
    if calib is not None or method != "random":
        if tokenizer is None and streamed and _is_text(calib):
            tokenizer = load_tokenizer(model)
        limit = max_length or cfg.max_position_embeddings
        calib_set = as_calibration(calib, tokenizer, shots, limit)
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        layer_scores = [S.random_scores(e - s, gen) for e, s in zip(num_experts, num_shared, strict=True)]
        chosen = [S.choose(sc, k) for sc, k in zip(layer_scores, keep_routed, strict=True)]
    else:
        layer_scores, chosen = _walk(source, calib_set, keep_routed, method, batch_tokens)
    kept = [ids.tolist() + list(range(e - s, e))
            for ids, e, s in zip(chosen, num_experts, num_shared, strict=True)]
    return Selection(method=method, keep=ks, kept=kept, scores=[sc.tolist() for sc in layer_scores],
                     num_experts=num_experts, num_shared=num_shared,
                     calibration=calib_set.describe() if calib_set else {},
                     seed=seed if method == "random" else None, seconds=time.perf_counter() - start)


def _is_text(calib) -> bool:
    return isinstance(calib, str) or (isinstance(calib, Sequence) and bool(calib)
                                      and isinstance(calib[0], str))


def _walk(source, calib: CalibrationSet, keep_routed: list[int], method: str, batch_tokens: int
          ) -> tuple[list[Tensor], list[Tensor]]:
    """The layer-by-layer calibration forward; returns per-layer scores [E_r] and kept routed ids."""
    cfg = source.config
    groups = batches(calib.sequences, batch_tokens, cfg.pad_token_id or 0)
    states = source.embed_many([ids for ids, _ in groups])  # per batch [B, T, d]
    valids = [valid.reshape(-1).to(source.device) for _, valid in groups]  # per batch [B*T]
    ropes = {}
    for x in states:
        if x.shape[1] not in ropes:
            ropes[x.shape[1]] = rope_tables(torch.arange(x.shape[1], device=x.device), cfg.head_dim,
                                            cfg.rope_theta)
    num_tokens = calib.num_tokens
    all_scores, all_kept = [], []
    for i in range(cfg.num_hidden_layers):
        layer = source.layer(i)
        gate, experts = layer.mlp.gate, layer.mlp.experts
        saved_allowed, gate.allowed = gate.allowed, None  # calibrate on the full layer
        try:
            routed_k = gate.top_k - gate.num_shared
            last = i == cfg.num_hidden_layers - 1
            total = torch.zeros(gate.num_routed, dtype=torch.float64, device=source.device)
            residuals = []
            for b, (x, valid) in enumerate(zip(states, valids, strict=True)):
                cos, sin = ropes[x.shape[1]]
                h = x + layer.self_attn(layer.pre_attention_layernorm(x), cos, sin, None)
                u = layer.pre_feedforward_layernorm(h).reshape(-1, h.shape[-1])  # [B*T, d]
                routing = gate(u)
                if method in ("global", "layerwise"):
                    total += S.probability_mass(routing, valid)
                elif method == "frequency":
                    total += S.selection_counts(routing, valid, routed_k)
                moe_out = None
                if method == "easy-ep" or (method != "layerwise" and not last):
                    moe_out = experts(u, routing.expert_ids, routing.weights)
                if method == "easy-ep":
                    norms = S.expert_output_norms(experts, u, routing.expert_ids)
                    total += S.easy_ep(routing, valid, routed_k, h.reshape(-1, h.shape[-1]), moe_out, norms)
                if method == "layerwise":
                    residuals.append(h)
                states[b] = None if moe_out is None else h + moe_out.view_as(h)
            if method in ("global", "layerwise"):
                total /= num_tokens
            ids = S.choose(total, keep_routed[i])
            if method == "layerwise" and not last:  # the next layers see this one pruned
                gate.allowed = torch.zeros(gate.num_routed, dtype=torch.bool, device=source.device)
                gate.allowed[ids] = True
                for b, h in enumerate(residuals):
                    u = layer.pre_feedforward_layernorm(h).reshape(-1, h.shape[-1])
                    routing = gate(u)
                    states[b] = h + experts(u, routing.expert_ids, routing.weights).view_as(h)
                residuals.clear()
        finally:
            gate.allowed = saved_allowed
        source.release(layer)
        del layer, gate, experts
        all_scores.append(total.cpu())
        all_kept.append(ids.cpu())
    return all_scores, all_kept
