"""Parity with transformers' own MoE implementation (Mixtral) on a matching configuration.

Mixtral = our standard router with no shared expert and norm_topk_prob=True, pre-norm RMSNorm,
rotate_half RoPE, grouped KV heads. Skips when transformers is not installed.
"""

import pytest
import torch

from emomoe import EmoForCausalLM, preset

transformers = pytest.importorskip("transformers")


def mixtral_from(model):
    cfg = model.config
    kwargs = dict(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, num_local_experts=cfg.num_experts,
        num_experts_per_tok=cfg.num_experts_per_tok, rms_norm_eps=cfg.rms_norm_eps,
        max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=False,
        rope_theta=cfg.rope_theta, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )
    hf_cfg = transformers.MixtralConfig(**kwargs)
    hf_cfg._attn_implementation = "eager"
    hf = transformers.MixtralForCausalLM(hf_cfg).eval()
    ours = model.state_dict()
    target = {}
    for name in hf.state_dict():
        src = (name.replace("input_layernorm", "pre_attention_layernorm")
               .replace("post_attention_layernorm", "pre_feedforward_layernorm"))
        if name.endswith("mlp.experts.gate_up_proj"):
            prefix = name.removesuffix("gate_up_proj")
            target[name] = torch.cat([ours[prefix + "gate_proj"], ours[prefix + "up_proj"]], dim=1)
        elif ".mlp.experts." in name and name.endswith("_proj"):  # fused layout of newer versions
            target[name] = ours[src]
        elif ".block_sparse_moe.experts." in name or ".mlp.experts." in name:  # one module per expert
            layer, rest = name.split(".layers.")[1].split(".", 1)
            j, proj = rest.split(".experts.")[1].split(".")[:2]
            ours_proj = {"w1": "gate_proj", "w3": "up_proj", "w2": "down_proj"}.get(proj, proj)
            target[name] = ours[f"model.layers.{layer}.mlp.experts.{ours_proj}"][int(j)]
        else:
            target[name] = ours[src.replace("block_sparse_moe", "mlp")]
    hf.load_state_dict(target)
    return hf


def test_logits_match_transformers_mixtral():
    torch.manual_seed(0)
    cfg = preset("tiny", router="standard", num_shared_experts=0, norm_topk_prob=True, pool_min=None,
                 pool_max=None, num_experts_per_tok=2, num_key_value_heads=2)
    model = EmoForCausalLM(cfg).eval()
    hf = mixtral_from(model)
    ids = torch.randint(0, cfg.vocab_size, (2, 17))
    with torch.no_grad():
        ours = model(ids).logits
        theirs = hf(ids).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
