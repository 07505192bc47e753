"""The decoding loop: batched prompts, a preallocated KV cache, greedy or sampled tokens, EOS/stop.

Prompts of different lengths are left-padded; each row carries its own positions (0 at its first
real token) and an attention mask that hides its padding, so a row generates exactly what it
would alone. `use_cache=False` recomputes the whole sequence every step (the reference the
cache must match, and the baseline of the benchmark).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from emomoe.generate.cache import KVCache
from emomoe.generate.pool import check_pool_size, pool_prefill_args, route_within, row_pools
from emomoe.generate.sampling import Sampling, next_tokens
from emomoe.model import EmoForCausalLM

# (row, generated ids so far) -> True to stop that row (stop strings live in the text layer)
StopCheck = Callable[[int, list[int]], bool]
# (row, new token id) for every token a row generates, as soon as it exists
OnToken = Callable[[int, int], None]


@dataclass
class GenerationOutput:
    """What `generate_ids` / `generate` produced, row by row, and how long it took."""

    token_ids: list[list[int]]  # generated ids per row (EOS included when hit)
    finish_reasons: list[str]  # "eos", "stop" or "length"
    prompt_lengths: list[int]
    pools: list[Tensor] | None = field(default=None, repr=False)  # per layer [B, E_r] bool
    texts: list[str] = field(default_factory=list)  # filled by `generate` (stop strings cut off)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def new_tokens(self) -> int:
        return sum(len(ids) for ids in self.token_ids)

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second over prefill + decode."""
        seconds = self.prefill_seconds + self.decode_seconds
        return self.new_tokens / seconds if seconds > 0 else float("inf")


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """input_ids [B, T] left-padded with `pad_id` and the real-token mask [B, T]."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt must hold at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool, device=device)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.as_tensor(list(prompt), dtype=torch.long)
        valid[row, width - len(prompt):] = True
    return ids, valid


@torch.no_grad()
def generate_ids(
    model: EmoForCausalLM,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int = 64,
    sampling: Sampling | None = None,
    eos_id: int | None = None,
    pad_id: int = 0,
    pool: int | None = None,
    pools: list[Tensor] | None = None,
    use_cache: bool = True,
    stop: StopCheck | None = None,
    on_token: OnToken | None = None,
) -> GenerationOutput:
    """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens.

    sampling: greedy by default. eos_id: a row stops after generating it (None: never).
    pool: route each row within the top-`pool` routed experts its prompt chooses per layer
    (adaptive pool); pools: per-layer [B, E_r] masks fixed by the caller instead (e.g. from
    `load_pool_model`). use_cache=False recomputes every step from scratch (slow reference).
    stop / on_token: see `StopCheck` / `OnToken`. Raises ValueError for an empty prompt, a prompt
    plus max_new_tokens longer than max_position_embeddings, or a pool below the routed top_k.
    """
    sampling = sampling or Sampling()
    cfg = model.config
    device = model.model.embed_tokens.weight.device
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must be >= 1")
    ids, valid = left_pad(prompts, pad_id, device)
    batch, width = ids.shape
    longest = max(len(p) for p in prompts)
    if longest + max_new_tokens > cfg.max_position_embeddings:
        raise ValueError(f"prompt of {longest} tokens + max_new_tokens {max_new_tokens} exceeds "
                         f"max_position_embeddings ({cfg.max_position_embeddings}) of the model")
    if pool is not None:
        check_pool_size(model, pool)
    total = width + max_new_tokens
    padded = not bool(valid.all())
    attention = torch.ones(batch, total, dtype=torch.bool, device=device)  # [B, S] real tokens
    attention[:, :width] = valid
    positions = (valid.long().cumsum(-1) - 1).clamp(min=0)  # [B, T]
    generator = sampling.generator(device)

    start = time.perf_counter()
    cache = KVCache.for_model(model, batch, total if use_cache else width)
    doc_ids = pool_sizes = None
    if pool is not None and pools is None:
        doc_ids, pool_sizes = pool_prefill_args(valid, pool)
    elif padded:
        doc_ids = torch.where(valid, 0, -1)
    with route_within(model, pools, width):
        out = model(ids, doc_ids=doc_ids, position_ids=positions, pool_sizes=pool_sizes, cache=cache)
    if pool_sizes is not None:
        pools = row_pools(out.routings, batch, width)
    logits = out.logits[:, -1]
    prefill_seconds = time.perf_counter() - start

    start = time.perf_counter()
    generated: list[list[int]] = [[] for _ in range(batch)]
    reasons = ["length"] * batch
    finished = [False] * batch
    next_pos = positions[:, -1:] + 1  # [B, 1]
    seq = ids
    for step in range(max_new_tokens):
        tokens = next_tokens(logits, sampling, generator)  # [B]
        for row, token in enumerate(tokens.tolist()):
            if finished[row]:
                continue
            generated[row].append(token)
            if on_token is not None:
                on_token(row, token)
            if eos_id is not None and token == eos_id:
                finished[row], reasons[row] = True, "eos"
            elif stop is not None and stop(row, generated[row]):
                finished[row], reasons[row] = True, "stop"
        if all(finished) or step == max_new_tokens - 1:
            break
        length = width + step + 1  # positions in the sequence after this token
        mask = attention[:, :length] if padded else None
        if use_cache:
            with route_within(model, pools, 1):
                logits = model(tokens[:, None], position_ids=next_pos, cache=cache, attention_mask=mask).logits[:, -1]
        else:
            seq = torch.cat([seq, tokens[:, None]], dim=1)
            full_positions = torch.cat([positions, next_pos + torch.arange(step + 1, device=device) - step], 1)
            with route_within(model, pools, length):
                logits = model(seq, position_ids=full_positions, cache=KVCache.for_model(model, batch, length),
                               attention_mask=mask).logits[:, -1]
        next_pos = next_pos + 1
    return GenerationOutput(generated, reasons, [len(p) for p in prompts], pools,
                            prefill_seconds=prefill_seconds, decode_seconds=time.perf_counter() - start)
