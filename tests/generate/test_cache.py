"""The KV cache path of EmoForCausalLM.forward against full recomputation."""

import pytest
import torch

from emomoe.generate import KVCache


def test_incremental_logits_match_full_forward(model):
    ids = torch.randint(2, model.config.vocab_size, (2, 12))
    full = model(ids).logits
    cache = KVCache.for_model(model, 2, 12)
    steps = [model(ids[:, :5], cache=cache).logits]
    for t in range(5, 12):
        steps.append(model(ids[:, t:t + 1], cache=cache).logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.get_seq_length() == 12


def test_chunked_prefill_uses_offset_causal_mask(model):
    ids = torch.randint(2, model.config.vocab_size, (1, 10))
    cache = KVCache.for_model(model, 1, 10)
    first = model(ids[:, :4], cache=cache).logits
    second = model(ids[:, 4:], cache=cache).logits  # 6 queries after 4 cached keys
    torch.testing.assert_close(torch.cat([first, second], 1), model(ids).logits, atol=1e-5, rtol=1e-5)


def test_left_padded_row_matches_unpadded(model):
    ids = torch.randint(2, model.config.vocab_size, (1, 7))
    pad = 3
    padded = torch.cat([torch.ones(1, pad, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, pad, dtype=torch.bool), torch.ones(1, 7, dtype=torch.bool)], 1)
    positions = torch.cat([torch.zeros(1, pad, dtype=torch.long), torch.arange(7)[None]], 1)
    cache = KVCache.for_model(model, 1, 11)
    out = model(padded, position_ids=positions, attention_mask=mask, cache=cache).logits
    assert torch.isfinite(out).all()  # padding queries attend to themselves: no NaN rows
    torch.testing.assert_close(out[:, pad:], model(ids).logits, atol=1e-5, rtol=1e-5)
    nxt = torch.tensor([[5]])
    step = model(nxt, position_ids=torch.tensor([[7]]), cache=cache,
                 attention_mask=torch.cat([mask, torch.ones(1, 1, dtype=torch.bool)], 1)).logits
    torch.testing.assert_close(step, model(torch.cat([ids, nxt], 1)).logits[:, -1:], atol=1e-5, rtol=1e-5)


def test_cache_errors(model):
    cache = KVCache.for_model(model, 1, 4)
    with pytest.raises(ValueError, match="KV cache is full"):
        model(torch.ones(1, 5, dtype=torch.long), cache=cache)
    cache = KVCache.for_model(model, 1, 8)
    model(torch.ones(1, 2, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="doc_ids cannot be combined"):
        model(torch.ones(1, 1, dtype=torch.long), doc_ids=torch.zeros(1, 1, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="attention_mask shape"):
        model(torch.ones(1, 1, dtype=torch.long), cache=cache, attention_mask=torch.ones(1, 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        KVCache.for_model(model, 1, model.config.max_position_embeddings + 1)
