import pytest

from emomoe import EmoConfig, count_parameters, preset
from emomoe.config import PRESETS


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(num_experts_per_tok=9), r"num_experts_per_tok \(9\) must be <= num_experts \(8\)"),
        (dict(num_shared_experts=3), r"num_shared_experts \(3\) must be < num_experts_per_tok \(3\)"),
        (dict(pool_min=1), r"pool_min \(1\) must be >= routed top_k \(2\)"),
        (dict(pool_min=6, pool_max=5), r"pool_min \(6\) must be <= pool_max \(5\)"),
        (dict(pool_max=8), r"pool_max \(8\) must be <= routed experts \(7\)"),
        (dict(hidden_size=66), r"hidden_size \(66\) must be divisible by num_attention_heads \(4\)"),
        (dict(num_key_value_heads=3), r"num_attention_heads \(4\) must be divisible by num_key_value_heads \(3\)"),
        (dict(router="switch"), r"router \('switch'\) must be one of"),
        (dict(vocab_size=0), r"vocab_size \(0\) must be a positive integer"),
        (dict(num_experts_per_layer=[8]), r"num_experts_per_layer must be a list of 2 integers"),
        (dict(eos_token_id=600), r"eos_token_id \(600\) must lie in"),
        (dict(norm_topk_prob=True), r"norm_topk_prob=True is not defined with shared experts"),
        (dict(pool_eval=1), r"pool_eval \(1\) must be >= routed top_k"),
    ],
)
def test_invalid_configs_name_field_and_rule(changes, message):
    with pytest.raises(ValueError, match=message):
        preset("tiny", **changes)


def test_presets_sizes():
    tiny = count_parameters(preset("tiny"))
    assert tiny["total"] < 1_000_000
    small = preset("small")
    counts = count_parameters(small)
    assert 10e6 <= counts["total"] <= 40e6
    assert 32 <= small.num_experts <= 64 and 4 <= small.num_experts_per_tok <= 8
    assert small.num_shared_experts == 1
    big = count_parameters(preset("emo-1b14b"))
    assert 13e9 < big["total"] < 15e9
    assert 0.9e9 < big["active_non_embedding"] < 1.2e9
    assert preset("stdmoe-1b14b").router == "standard"


def test_hf_dict_round_trip_and_unknown_keys():
    for name in PRESETS:
        cfg = preset(name)
        assert EmoConfig.from_hf_dict(cfg.to_hf_dict()) == cfg
    data = {**preset("tiny").to_hf_dict(), "future": 1}
    cfg = EmoConfig.from_hf_dict(data)
    assert cfg.extra["future"] == 1 and cfg.to_hf_dict()["future"] == 1


def test_unsupported_release_variants_are_rejected():
    with pytest.raises(ValueError, match="always_active_experts"):
        EmoConfig.from_hf_dict({**preset("tiny").to_hf_dict(), "always_active_experts": [0]})
    with pytest.raises(ValueError, match="hidden_act"):
        EmoConfig.from_hf_dict({**preset("tiny").to_hf_dict(), "hidden_act": "gelu"})


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset("huge")
