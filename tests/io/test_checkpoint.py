"""save_model / load_model round trips, sharding, pruned layouts and clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from emomoe import CheckpointError, EmoForCausalLM, load_model, preset, save_model
from emomoe.io.checkpoint import INDEX_FILE, expected_shapes, parse_size, tensor_shapes


def test_round_trip_is_exact(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    loaded = load_model(tmp_path / "ckpt")
    assert not loaded.training
    a, b = tiny_model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ids = torch.randint(0, 512, (2, 9))
    assert torch.equal(tiny_model(ids).logits, loaded(ids).logits)
    assert loaded.config == tiny_model.config


def test_released_tensor_names_and_config_keys(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    tensors = load_file(tmp_path / "ckpt" / "model.safetensors")
    assert set(tensors) == set(expected_shapes(tiny_model.config))
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in tensors
    assert torch.equal(tensors["model.layers.1.mlp.experts.3.up_proj.weight"],
                       tiny_model.model.layers[1].mlp.experts.up_proj[3])
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    for key in ("model_type", "architectures", "num_experts", "num_shared_experts", "num_experts_per_layer",
                "num_shared_experts_per_layer", "norm_topk_prob", "rope_theta", "hidden_act",
                "always_active_experts", "dense_intermediate_size", "tie_word_embeddings"):
        assert key in cfg, key
    assert cfg["model_type"] == "emo" and cfg["architectures"] == ["EmoForCausalLM"]


def test_sharded_save_load_and_bf16(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "sharded", max_shard_size=100_000, dtype=torch.bfloat16)
    index = json.loads((tmp_path / "sharded" / INDEX_FILE).read_text())
    files = set(index["weight_map"].values())
    assert len(files) > 1 and all(f.startswith("model-0000") for f in files)
    sizes = tensor_shapes(tmp_path / "sharded")
    assert index["metadata"]["total_size"] == sum(
        2 * torch.Size(shape).numel() for shape, _ in sizes.values())
    loaded = load_model(tmp_path / "sharded")
    assert loaded.model.embed_tokens.weight.dtype == torch.bfloat16
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.bfloat16()), k
    assert load_model(tmp_path / "sharded", dtype=torch.float32).lm_head.weight.dtype == torch.float32


def test_overwrite_is_atomic_and_leaves_no_temp(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    save_model(tiny_model, tmp_path / "ckpt", max_shard_size=50_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert not (tmp_path / "ckpt" / "model.safetensors").exists()


def test_failed_save_leaves_previous_checkpoint(tiny_model, tmp_path, monkeypatch):
    save_model(tiny_model, tmp_path / "ckpt")
    import emomoe.io.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", boom)
    with pytest.raises(OSError):
        save_model(tiny_model, tmp_path / "ckpt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    load_model(tmp_path / "ckpt")


def test_pruned_per_layer_expert_counts_load(tmp_path):
    cfg = preset("tiny", num_experts_per_layer=[5, 3], num_shared_experts_per_layer=[1, 1])
    torch.manual_seed(0)
    model = EmoForCausalLM(cfg).eval()
    assert model.model.layers[0].mlp.experts.gate_proj.shape[0] == 5
    assert model.model.layers[1].mlp.gate.weight.shape[0] == 3
    save_model(model, tmp_path / "pruned")
    loaded = load_model(tmp_path / "pruned")
    ids = torch.randint(0, 512, (1, 7))
    assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert [layer.mlp.experts.num_experts for layer in loaded.model.layers] == [5, 3]


def test_unknown_config_keys_are_tolerated_and_kept(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["some_future_key"] = {"a": 1}
    cfg_path.write_text(json.dumps(cfg))
    loaded = load_model(tmp_path / "ckpt")
    save_model(loaded, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["some_future_key"] == {"a": 1}


def test_missing_directory_and_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load_model(tmp_path / "empty")
    (tmp_path / "empty" / "config.json").write_text(json.dumps(preset("tiny").to_hf_dict()))
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model(tmp_path / "empty")


def test_missing_shard_is_reported(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt", max_shard_size=100_000)
    next((tmp_path / "ckpt").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(CheckpointError, match="shard .*model-00002.* is missing"):
        load_model(tmp_path / "ckpt")


def test_truncated_safetensors_is_reported(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    f = tmp_path / "ckpt" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(tmp_path / "ckpt")


def test_shape_mismatch_is_reported(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    f = tmp_path / "ckpt" / "model.safetensors"
    tensors = load_file(f)
    tensors["model.layers.0.self_attn.q_proj.weight"] = torch.zeros(32, 64)
    save_file(tensors, f)
    with pytest.raises(CheckpointError, match=r"q_proj.weight has shape \[32, 64\] but config.json implies"):
        load_model(tmp_path / "ckpt")


def test_config_contradicting_tensors_is_reported(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path / "ckpt")
    cfg_path = tmp_path / "ckpt" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["num_experts_per_layer"] = [8, 6]
    cfg["num_shared_experts_per_layer"] = [1, 1]
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="mlp.gate.weight has shape \\[8, 64\\] but config.json implies "
                                              "\\[6, 64\\]"):
        load_model(tmp_path / "ckpt")
    cfg["num_experts_per_layer"] = cfg["num_shared_experts_per_layer"] = None
    cfg["num_hidden_layers"] = 1
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="not described by config.json"):
        load_model(tmp_path / "ckpt")


def test_invalid_config_json_is_reported(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(tmp_path / "c")
    (tmp_path / "c" / "config.json").write_text(json.dumps({**preset("tiny").to_hf_dict(), "num_experts": 2}))
    with pytest.raises(CheckpointError, match="num_experts_per_tok \\(3\\) must be <= num_experts"):
        load_model(tmp_path / "c")


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2MiB") == 2 * 2**20
    assert parse_size(123) == 123
    with pytest.raises(ValueError, match="max_shard_size"):
        parse_size("lots")
