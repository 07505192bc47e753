"""A preallocated key/value cache for incremental decoding.

Keys and values of every layer live in one buffer sized for the whole generation, so a decoding
step writes T new positions in place and attends over a view of the first P+T; nothing is
concatenated or reallocated. The interface (`update`, `get_seq_length`) is the one
`EmoForCausalLM.forward` expects of any cache, and the one transformers' `Cache` classes have.
"""

from __future__ import annotations

import torch
from torch import Tensor

from emomoe.config import EmoConfig


class KVCache:
    """Keys and values [L, B, H_kv, max_length, hd] plus how many positions each layer holds."""

    def __init__(self, config: EmoConfig, batch_size: int, max_length: int,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> None:
        if max_length > config.max_position_embeddings:
            raise ValueError(f"cache length {max_length} exceeds max_position_embeddings "
                             f"({config.max_position_embeddings})")
        shape = (config.num_hidden_layers, batch_size, config.num_key_value_heads, max_length, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.lengths = [0] * config.num_hidden_layers  # positions written, per layer
        self.max_length = max_length

    @classmethod
    def for_model(cls, model, batch_size: int, max_length: int) -> KVCache:
        """A cache matching `model`'s geometry, parameter dtype and device."""
        weight = model.model.embed_tokens.weight
        return cls(model.config, batch_size, max_length, weight.dtype, weight.device)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Positions already cached in `layer_idx`."""
        return self.lengths[layer_idx]

    def update(self, key: Tensor, value: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        """Append key/value [B, H_kv, T, hd] to `layer_idx`; return all of its keys/values [B, H_kv, P+T, hd]."""
        start = self.lengths[layer_idx]
        end = start + key.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache is full: {end} positions needed, {self.max_length} allocated")
        self.keys[layer_idx, :, :, start:end] = key
        self.values[layer_idx, :, :, start:end] = value
        self.lengths[layer_idx] = end
        return self.keys[layer_idx, :, :, :end], self.values[layer_idx, :, :, :end]

    @property
    def nbytes(self) -> int:
        """Bytes held by the key and value buffers."""
        return self.keys.nbytes + self.values.nbytes
