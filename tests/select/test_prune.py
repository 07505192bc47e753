import json

import pytest
import select_reference as ref
import torch

from emomoe import load_model
from emomoe.io.checkpoint import read_config, tensor_shapes
from emomoe.select import prune, prune_model, select_experts


def ids_of(tokenizer, texts):
    seqs = ref.encode(tokenizer, texts)
    width = min(len(s) for s in seqs)
    return torch.stack([s[:width] for s in seqs])  # [B, T]


@pytest.mark.parametrize("method", ["global", "easy-ep"])
def test_pruned_model_equals_masked_full_model(model, tokenizer, texts, method):
    sel = select_experts(model, texts, [4, 6], method, tokenizer=tokenizer)
    ids = ids_of(tokenizer, texts)
    pruned = prune_model(model, sel)
    assert [blk.mlp.experts.num_experts for blk in pruned.model.layers] == [4, 6]
    with torch.no_grad():
        masked = sel.mask_model(model)(ids).logits
        torch.testing.assert_close(pruned(ids).logits, masked, rtol=1e-6, atol=1e-6)
        model.model.layers[0].mlp.gate.allowed = None
        assert not torch.allclose(model(ids).logits, masked)  # pruning does change the model


def test_pruned_equals_masked_with_evaluation_pools(model, tokenizer, texts):
    sel = select_experts(model, texts, 5, "global", tokenizer=tokenizer)
    ids = ids_of(tokenizer, texts)
    model.config.pool_eval = 2  # pools ranked over the kept experts only, in both models
    pruned = prune_model(model, sel)
    pruned.config.pool_eval = 2
    with torch.no_grad():
        torch.testing.assert_close(pruned(ids).logits, sel.mask_model(model)(ids).logits, rtol=1e-6, atol=1e-6)


def test_renumbering_and_gate_rows(model, tokenizer, texts):
    sel = select_experts(model, texts, 5, "frequency", tokenizer=tokenizer)
    pruned = prune_model(model, sel)
    for layer in range(2):
        old, new = model.model.layers[layer].mlp, pruned.model.layers[layer].mlp
        kept = sel.kept[layer]
        assert kept[-1] == 7 and kept[:-1] == sorted(kept[:-1])
        for j, e in enumerate(kept):
            assert torch.equal(new.gate.weight[j], old.gate.weight[e])
            assert torch.equal(new.experts.down_proj[j], old.experts.down_proj[e])
        assert new.gate.num_shared == 1 and new.gate.num_routed == 4


def test_streamed_prune_round_trip(model, ckpt, tokenizer, texts, tmp_path):
    sel = select_experts(ckpt, texts, [4, 6], "layerwise")
    report = prune(ckpt, sel, tmp_path / "out", max_shard_size=50_000)
    out = tmp_path / "out"
    cfg = read_config(out)
    assert cfg.num_experts_per_layer == [4, 6] and cfg.num_shared_experts_per_layer == [1, 1]
    assert (out / "tokenizer.json").read_bytes() == (ckpt / "tokenizer.json").read_bytes()
    assert len(list(out.glob("model-*.safetensors"))) > 1 and (out / "model.safetensors.index.json").is_file()
    shapes = tensor_shapes(out)
    assert shapes["model.layers.1.mlp.gate.weight"][0] == (6, 64)
    assert "model.layers.0.mlp.experts.3.up_proj.weight" in shapes
    assert "model.layers.0.mlp.experts.4.up_proj.weight" not in shapes
    loaded = load_model(out)
    ids = ids_of(tokenizer, texts)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, prune_model(model, sel)(ids).logits, rtol=0, atol=0)
        torch.testing.assert_close(loaded(ids).logits, sel.mask_model(model)(ids).logits, rtol=1e-6, atol=1e-6)
    record = json.loads((out / "selection.json").read_text())
    assert record["method"] == "layerwise" and record["keep"] == [4, 6]
    assert [r["kept"] for r in record["layers"]] == sel.kept
    assert record["calibration"]["tokens"] == sel.calibration["tokens"] > 0
    assert report.params_after < report.params_before
    assert report.expert_bytes_after * 16 == report.expert_bytes_before * 10  # kept 4 + 6 of 8 + 8
    data_bytes = 0
    for shard in out.glob("*.safetensors"):
        header = int.from_bytes(shard.read_bytes()[:8], "little")
        data_bytes += shard.stat().st_size - 8 - header
    assert report.bytes_after == data_bytes


def test_existing_output_is_refused_and_nothing_is_written(ckpt, texts, tmp_path):
    sel = select_experts(ckpt, texts, 5, "global")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="already exists"):
        prune(ckpt, sel, out)
    assert list(out.iterdir()) == []
    prune(ckpt, sel, out, overwrite=True)
    assert (out / "selection.json").is_file()
    with pytest.raises(ValueError, match="is the source checkpoint"):
        prune(ckpt, sel, ckpt, overwrite=True)


def test_selection_for_another_model_leaves_no_output(ckpt, texts, tmp_path, model):
    from emomoe import EmoForCausalLM, preset

    other = EmoForCausalLM(preset("tiny", num_experts=6, pool_max=5)).eval()
    sel = select_experts(other, None, 4, "random")
    with pytest.raises(ValueError, match="experts per layer"):
        prune(ckpt, sel, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
