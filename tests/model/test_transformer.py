"""The full model against a plain reference of the released algorithm; masking; determinism."""

import math

import pytest
import torch
import torch.nn.functional as F

from emomoe import EmoForCausalLM, preset


def ref_rmsnorm(x, w, eps):
    return w * (x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def ref_rope(x, pos, theta):
    # x [T, hd], rotate_half convention: pairs (i, i + hd/2)
    hd = x.shape[-1]
    out = torch.empty_like(x)
    for i in range(hd // 2):
        freq = 1.0 / theta ** (2 * i / hd)
        c, s = torch.cos(pos * freq), torch.sin(pos * freq)
        out[:, i] = x[:, i] * c - x[:, i + hd // 2] * s
        out[:, i + hd // 2] = x[:, i + hd // 2] * c + x[:, i] * s
    return out


def reference_forward(model, ids, doc_ids=None):
    """Slow, obviously-correct forward of one sequence [T] following EMO.md sections 2-3 (no pool)."""
    cfg = model.config
    sd = model.state_dict()
    T, H, KV, hd = ids.shape[0], cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    pos = torch.arange(T, dtype=torch.float32)
    x = sd["model.embed_tokens.weight"][ids]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        h = ref_rmsnorm(x, sd[p + "pre_attention_layernorm.weight"], cfg.rms_norm_eps)
        q = (h @ sd[p + "self_attn.q_proj.weight"].T).view(T, H, hd)
        k = (h @ sd[p + "self_attn.k_proj.weight"].T).view(T, KV, hd)
        v = (h @ sd[p + "self_attn.v_proj.weight"].T).view(T, KV, hd)
        heads = []
        for head in range(H):
            kvh = head // (H // KV)
            qh, kh = ref_rope(q[:, head], pos, cfg.rope_theta), ref_rope(k[:, kvh], pos, cfg.rope_theta)
            scores = qh @ kh.T / math.sqrt(hd)
            allowed = torch.ones(T, T).tril().bool()
            if doc_ids is not None:
                allowed &= doc_ids[:, None] == doc_ids[None, :]
            scores = scores.masked_fill(~allowed, float("-inf"))
            heads.append(torch.softmax(scores, -1) @ v[:, kvh])
        x = x + torch.cat(heads, -1) @ sd[p + "self_attn.o_proj.weight"].T
        h = ref_rmsnorm(x, sd[p + "pre_feedforward_layernorm.weight"], cfg.rms_norm_eps)
        gate = sd[p + "mlp.gate.weight"]
        E, S = gate.shape[0], cfg.shared_in_layer(i)
        logits = h @ gate.T
        probs = torch.softmax(logits[:, : E - S], -1)
        w, idx = probs.topk(cfg.num_experts_per_tok - S, -1)
        moe = torch.zeros_like(x)
        for t in range(T):
            chosen = list(zip(idx[t].tolist(), w[t].tolist())) + [(E - S + j, 1.0) for j in range(S)]
            for e, we in chosen:
                g = sd[p + "mlp.experts.gate_proj"][e] @ h[t]
                u = sd[p + "mlp.experts.up_proj"][e] @ h[t]
                moe[t] += we * (sd[p + "mlp.experts.down_proj"][e] @ (F.silu(g) * u))
        x = x + moe
    x = ref_rmsnorm(x, sd["model.norm.weight"], cfg.rms_norm_eps)
    return x @ sd["lm_head.weight"].T


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_model_matches_plain_reference(kv_heads):
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny", router="standard", num_key_value_heads=kv_heads,
                                  rope_theta=10000.0)).eval()
    ids = torch.randint(0, 512, (2, 12))
    logits = model(ids).logits
    for b in range(2):
        torch.testing.assert_close(logits[b], reference_forward(model, ids[b]), rtol=1e-4, atol=1e-4)


def test_intra_document_attention_equals_documents_alone():
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny", router="standard")).eval()
    docs = [torch.randint(0, 512, (n,)) for n in (5, 3, 8)]
    packed = torch.cat(docs).unsqueeze(0)
    doc_ids = torch.cat([torch.full((len(d),), i) for i, d in enumerate(docs)]).unsqueeze(0)
    # positions restart per document, as if each ran alone
    positions = torch.cat([torch.arange(len(d)) for d in docs]).unsqueeze(0)
    out = model(packed, doc_ids=doc_ids, position_ids=positions).logits[0]
    start = 0
    for d in docs:
        alone = model(d.unsqueeze(0)).logits[0]
        torch.testing.assert_close(out[start:start + len(d)], alone, rtol=1e-5, atol=1e-5)
        start += len(d)
    # and the reference with masking (global positions) agrees too
    torch.testing.assert_close(model(packed, doc_ids=doc_ids).logits[0],
                               reference_forward(model, packed[0], doc_ids[0]), rtol=1e-4, atol=1e-4)


def test_emo_pool_in_training_restricts_each_document():
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny")).train()
    ids = torch.randint(0, 512, (2, 24))
    doc_ids = (torch.arange(24) // 6).expand(2, 24)
    out = model(ids, doc_ids=doc_ids, generator=torch.Generator().manual_seed(0))
    low, high = model.config.pool_range()
    for r in out.routings:
        sizes = r.pool_mask.sum(-1)
        assert sizes.min() >= low and sizes.max() <= high
        assert r.pool_mask.gather(1, r.expert_ids[:, :2]).all()


def test_pool_from_eos_when_doc_ids_absent():
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny", eos_token_id=0)).train()
    ids = torch.randint(1, 512, (1, 20))
    ids[0, 9] = 0
    out = model(ids, generator=torch.Generator().manual_seed(1))
    mask = out.routings[0].pool_mask
    assert (mask[:10] == mask[0]).all() and (mask[10:] == mask[10]).all()


def test_eval_uses_pool_eval_or_no_pool():
    torch.manual_seed(0)
    ids = torch.randint(0, 512, (1, 10))
    model = EmoForCausalLM(preset("tiny")).eval()
    assert model(ids).routings[0].pool_mask is None
    model.config.pool_eval = 3
    assert (model(ids).routings[0].pool_mask.sum(-1) == 3).all()


def test_determinism_under_seed():
    ids = torch.randint(0, 512, (2, 16))
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = EmoForCausalLM(preset("tiny")).train()
        out = model(ids, generator=torch.Generator().manual_seed(7))
        loss = F.cross_entropy(out.logits.flatten(0, 1), ids.flatten()) + out.lb_loss + out.z_loss
        loss.backward()
        runs.append((out.logits.detach(), model.model.layers[0].mlp.gate.weight.grad.clone()))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_gradients_reach_every_parameter_kind():
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny")).train()
    ids = torch.randint(0, 512, (2, 16))
    out = model(ids)
    (F.cross_entropy(out.logits.flatten(0, 1), ids.flatten()) + 0.1 * out.lb_loss + 1e-3 * out.z_loss).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_too_long_sequence_is_a_clear_error():
    model = EmoForCausalLM(preset("tiny", max_position_embeddings=8))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_release_presets_on_meta_device():
    for name in ("emo-1b14b", "stdmoe-1b14b"):
        with torch.device("meta"):
            model = EmoForCausalLM(preset(name))
        total = sum(p.numel() for p in model.parameters())
        assert 13e9 < total < 15e9
        assert all(p.is_meta for p in model.parameters())
