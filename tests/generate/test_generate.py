"""Decoding: cache vs recomputation, batching, EOS/stop, sampling, adaptive pools, errors."""

import pytest
import torch

from emomoe.generate import Sampling, filter_logits, generate, generate_ids, load_pool_model
from emomoe.generate.loop import left_pad
from emomoe.generate.text import held_back

PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17]]


def recompute_greedy(model, prompt, steps):
    """The plain reference: run the whole sequence through the model for every new token."""
    seq = list(prompt)
    for _ in range(steps):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def test_greedy_cache_equals_recomputation(model):
    out = generate_ids(model, PROMPTS[:1], 16)
    assert out.token_ids[0] == recompute_greedy(model, PROMPTS[0], 16)
    uncached = generate_ids(model, PROMPTS, 16, use_cache=False)
    assert generate_ids(model, PROMPTS, 16).token_ids == uncached.token_ids


def test_batch_equals_single(model):
    batch = generate_ids(model, PROMPTS, 16)
    assert batch.token_ids == [generate_ids(model, [p], 16).token_ids[0] for p in PROMPTS]
    assert batch.prompt_lengths == [7, 2, 4]


def test_eos_stops_a_row(model):
    free = generate_ids(model, PROMPTS, 10).token_ids
    eos = free[0][3]
    first = free[0].index(eos)
    out = generate_ids(model, PROMPTS, 10, eos_id=eos)
    assert out.token_ids[0] == free[0][:first + 1] and out.finish_reasons[0] == "eos"
    for row in (1, 2):  # other rows continue unchanged until their own EOS (if any)
        n = len(out.token_ids[row])
        assert out.token_ids[row] == free[row][:n]
        assert out.finish_reasons[row] == ("eos" if eos in free[row] else "length")


def test_seeded_sampling_is_reproducible(model):
    s = Sampling(temperature=1.0, top_k=50, top_p=0.95, seed=7)
    a, b = generate_ids(model, PROMPTS, 12, s), generate_ids(model, PROMPTS, 12, s)
    assert a.token_ids == b.token_ids
    c = generate_ids(model, PROMPTS, 12, Sampling(temperature=1.0, seed=8))
    assert c.token_ids != a.token_ids


def test_filter_logits_reference():
    logits = torch.log(torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05]]))
    kept = torch.isfinite(filter_logits(logits, top_k=2))
    assert kept.tolist() == [[True, True, False, False, False]]
    kept = torch.isfinite(filter_logits(logits, top_p=0.8))  # 0.5 + 0.2 < 0.8 <= 0.85
    assert kept.tolist() == [[True, True, True, False, False]]
    kept = torch.isfinite(filter_logits(logits[:, [3, 0, 4, 1, 2]], top_p=0.1))  # the best token always stays
    assert kept.tolist() == [[False, True, False, False, False]]


def test_pool_restricts_every_token(model):
    routed = []
    hooks = [layer.mlp.gate.register_forward_hook(lambda mod, inp, out, i=i: routed.append((i, out)))
             for i, layer in enumerate(model.model.layers)]
    try:
        out = generate_ids(model, PROMPTS, 8, pool=2)
    finally:
        for h in hooks:
            h.remove()
    k_r = model.config.routed_top_k()
    assert [p.shape for p in out.pools] == [(3, 7), (3, 7)]
    assert all((p.sum(-1) == 2).all() for p in out.pools)
    _, valid = left_pad(PROMPTS, 0, torch.device("cpu"))
    for layer, routing in routed:
        per_row = routing.expert_ids.shape[0] // 3
        rows = out.pools[layer].repeat_interleave(per_row, dim=0)  # [N, E_r]: tokens are row-major
        real = valid.reshape(-1) if per_row == valid.shape[1] else torch.ones(len(rows), dtype=torch.bool)
        chosen = routing.expert_ids[real, :k_r]  # padding tokens of the prefill are no one's document
        assert rows[real].gather(1, chosen).all(), "a token routed outside its row's pool"
        assert (routing.probs[real][~rows[real]] == 0).all()
    assert out.token_ids == generate_ids(model, PROMPTS, 8, pool=2, use_cache=False).token_ids
    assert out.token_ids == [generate_ids(model, [p], 8, pool=2).token_ids[0] for p in PROMPTS]
    assert out.token_ids != generate_ids(model, PROMPTS, 8).token_ids


def test_pool_only_model_matches_pool(model, checkpoint):
    ids, valid = left_pad(PROMPTS, 0, torch.device("cpu"))
    small, pools, report = load_pool_model(checkpoint, ids, valid, pool=2)
    union = [int(p.any(0).sum()) + 1 for p in pools]
    assert report.experts_kept == union == small.config.num_experts_per_layer
    assert report.expert_bytes_kept < report.expert_bytes_total
    full = generate_ids(model, PROMPTS, 8, pool=2)
    assert generate_ids(small, PROMPTS, 8, pools=pools).token_ids == full.token_ids
    single, pools1, _ = load_pool_model(checkpoint, *left_pad(PROMPTS[:1], 0, torch.device("cpu")), pool=2)
    assert all(p.all() for p in pools1)  # one prompt: the pool is exactly the kept experts
    assert generate_ids(single, PROMPTS[:1], 8).token_ids[0] == full.token_ids[0]


def test_text_generate_stop_and_stream(model, tokenizer):
    prompts = ["the cat sat", "def main"]
    free = generate(model, tokenizer, prompts, 24)
    assert len(free.texts) == 2 and free.finish_reasons == ["length", "length"]
    text = free.texts[0]
    stop = text[len(text) // 2: len(text) // 2 + 2]
    pieces = {0: [], 1: []}
    out = generate(model, tokenizer, prompts, 24, stop=[stop], on_text=lambda r, s: pieces[r].append(s))
    assert out.texts[0] == text[:text.find(stop)] and out.finish_reasons[0] == "stop"
    assert ["".join(pieces[r]) for r in (0, 1)] == out.texts
    assert out.texts[1] == free.texts[1] or out.finish_reasons[1] == "stop"


def test_held_back_text():
    assert held_back("abc\ufffd", []) == 1
    assert held_back("hello wor", ["world"]) == 3
    assert held_back("hello", ["xyz"]) == 0


def test_errors(model, tokenizer):
    limit = model.config.max_position_embeddings
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        generate_ids(model, [list(range(2, limit))], 8)
    with pytest.raises(ValueError, match="at least one token"):
        generate_ids(model, [[]], 8)
    with pytest.raises(ValueError, match="routed top_k"):
        generate_ids(model, PROMPTS, 8, pool=1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_ids(model, PROMPTS, 0)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, tokenizer, "x", 4, temperature=-1)
    with pytest.raises(ValueError, match="empty"):
        generate(model, tokenizer, [""], 4)
