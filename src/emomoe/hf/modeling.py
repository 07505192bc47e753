"""A thin transformers `PreTrainedModel` around `EmoForCausalLM` (the one model definition).

The wrapper adds only what transformers needs: a config class with `model_type = "emo"`, a
forward taking `attention_mask` / `past_key_values` / `labels` and returning a
`CausalLMOutputWithPast`, and loading/saving through `emomoe.io` (the released tensor names,
per-expert tensors stacked on load, full and pruned checkpoints alike). Nothing from a
checkpoint directory is executed: only `config.json` and safetensors are read.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from emomoe.config import EmoConfig
from emomoe.io.checkpoint import load_model, save_model
from emomoe.model import EmoForCausalLM

_EMO_FIELDS = {f.name for f in dataclasses.fields(EmoConfig)} - {"extra"}
# transformers 5.x calls the KV cache `cache`; earlier versions `past_key_values`
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class EmoHFConfig(PretrainedConfig):
    """The `config.json` of an EMO checkpoint as a transformers config (all keys kept as attributes)."""

    model_type = "emo"
    rope_scaling: dict | None = None  # a plain key: EMO uses plain RoPE (EmoConfig rejects scaling)

    def to_emo(self) -> EmoConfig:
        """The equivalent EmoConfig (validated; raises ValueError for an inconsistent config)."""
        data = self.to_dict()
        return EmoConfig.from_hf_dict({k: v for k, v in data.items() if k in _EMO_FIELDS or k == "hidden_act"})


class EmoHFForCausalLM(PreTrainedModel, GenerationMixin):
    """transformers view of an `EmoForCausalLM`; the model itself is `self.emo`.

    Without a cache (`use_cache` unset or False, no `past_key_values`) the forward is exactly
    `EmoForCausalLM.forward`, including an evaluation pool (`pool_eval`) if the config sets one.
    With a cache (what `generate()` uses) routing is the released inference routing, no pool.
    """

    config_class = EmoHFConfig
    base_model_prefix = "emo"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _no_split_modules = ["DecoderLayer"]

    def __init__(self, config: EmoHFConfig, emo: EmoForCausalLM | None = None) -> None:
        super().__init__(config)
        self.emo = emo if emo is not None else EmoForCausalLM(config.to_emo())
        self.post_init()

    def _init_weights(self, module) -> None:
        pass  # EmoForCausalLM initialises (or `from_pretrained` loads) every weight itself

    def get_input_embeddings(self):
        return self.emo.model.embed_tokens

    def get_output_embeddings(self):
        return self.emo.lm_head

    def forward(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.LongTensor | None = None, cache=None, past_key_values=None,
                use_cache: bool | None = None, labels: torch.LongTensor | None = None, logits_to_keep: int = 0,
                **kwargs) -> CausalLMOutputWithPast:
        """Logits [B, T, V] (the last `logits_to_keep` positions if > 0), the cache, and the LM loss with `labels`.

        `cache` (transformers 5) or `past_key_values` (earlier): any transformers `Cache`.
        """
        cache = cache if cache is not None else past_key_values
        if cache is None and use_cache:
            cache = DynamicCache()
        past = cache.get_seq_length() if cache is not None else 0
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: plain causal attention
        if position_ids is None and attention_mask is not None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, past:]
        out = self.emo(input_ids, position_ids=position_ids, cache=cache, attention_mask=attention_mask)
        logits = out.logits[:, -logits_to_keep:] if logits_to_keep else out.logits
        loss = None
        if labels is not None:
            loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache})

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *model_args,
                        config: EmoHFConfig | None = None, dtype=None, torch_dtype=None, device_map=None,
                        **kwargs) -> EmoHFForCausalLM:
        """Load a local EMO checkpoint directory (full or pruned) with `emomoe.load_model`.

        dtype (or torch_dtype): a torch dtype or its name; None or "auto" keeps the stored dtype.
        device_map: a device (string or torch.device) for the whole model. Hub ids and remote
        code are not supported: pass a directory. Raises OSError for anything else.
        """
        path = Path(pretrained_model_name_or_path)
        if not path.is_dir():
            raise OSError(f"{path} is not a local checkpoint directory; emomoe.hf loads EMO checkpoints from disk "
                          "only (download the repository first)")
        dtype = dtype if dtype is not None else torch_dtype
        if isinstance(dtype, str):
            dtype = None if dtype == "auto" else getattr(torch, dtype)
        if isinstance(device_map, dict):
            raise OSError("a device_map dict is not supported by emomoe.hf; pass one device")
        emo = load_model(path, dtype=dtype, device=device_map or "cpu")
        if config is None or not isinstance(config, EmoHFConfig):
            config = EmoHFConfig.from_pretrained(path)
        model = cls(config, emo=emo)
        model.generation_config.eos_token_id = model.generation_config.eos_token_id or config.eos_token_id
        model.generation_config.pad_token_id = model.generation_config.pad_token_id or config.pad_token_id
        return model.eval()

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs) -> None:
        """Write the released checkpoint format (config.json + safetensors), as `emomoe.save_model` does."""
        save_model(self.emo, save_directory, max_shard_size=kwargs.get("max_shard_size", "5GB"))
