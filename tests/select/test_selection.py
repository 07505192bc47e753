import pytest
import select_reference as ref
import torch

from emomoe.select import METHODS, Selection, from_token_ids, resolve_keep, select_experts

KEEP = 5  # of 8 experts: 1 shared + 4 routed


@pytest.mark.parametrize("method", ["global", "frequency", "layerwise", "easy-ep"])
def test_kept_ids_match_plain_reference(model, tokenizer, texts, method):
    seqs = ref.encode(tokenizer, texts)
    sel = select_experts(model, texts, KEEP, method, tokenizer=tokenizer)
    routed = KEEP - 1
    if method == "global":
        expected = [ref.top_routed(s, routed) for s in ref.global_scores(model, seqs)]
        for got, want in zip(sel.scores, ref.global_scores(model, seqs), strict=True):
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want.double(), rtol=1e-4, atol=1e-6)
    elif method == "frequency":
        scores = ref.frequency_scores(model, seqs)
        expected = [ref.top_routed(s, routed) for s in scores]
        assert [list(map(int, s)) for s in sel.scores] == [s.int().tolist() for s in scores]
    elif method == "layerwise":
        expected = ref.layerwise_kept(model, seqs, routed)
    else:
        scores = ref.easy_ep_scores(model, seqs)
        expected = [ref.top_routed(s, routed) for s in scores]
        for got, want in zip(sel.scores, scores, strict=True):
            torch.testing.assert_close(torch.tensor(got, dtype=torch.float64), want, rtol=1e-4, atol=1e-7)
    assert [sel.kept_routed(i) for i in range(2)] == expected
    assert sel.calibration["tokens"] == sum(len(s) for s in seqs)


def test_layerwise_differs_from_global_only_after_layer_zero(model, tokenizer, texts):
    g = select_experts(model, texts, KEEP, "global", tokenizer=tokenizer)
    lw = select_experts(model, texts, KEEP, "layerwise", tokenizer=tokenizer)
    assert g.kept[0] == lw.kept[0] and g.scores[0] == pytest.approx(lw.scores[0])


@pytest.mark.parametrize("method", METHODS)
def test_shared_expert_always_kept_last(model, tokenizer, texts, method):
    sel = select_experts(model, texts, [3, 7], method, tokenizer=tokenizer)
    for layer, k in enumerate([3, 7]):
        assert len(sel.kept[layer]) == k and sel.kept[layer][-1] == 7  # shared = last original expert
        routed = sel.kept[layer][:-1]
        assert routed == sorted(routed) and len(set(routed)) == k - 1 and max(routed) < 7


@pytest.mark.parametrize("method", METHODS)
def test_streaming_matches_in_memory(model, ckpt, tokenizer, texts, method):
    in_memory = select_experts(model, texts, KEEP, method, tokenizer=tokenizer)
    streamed = select_experts(ckpt, texts, KEEP, method)  # tokenizer.json of the checkpoint
    assert streamed.kept == in_memory.kept
    torch.testing.assert_close(torch.tensor(streamed.scores), torch.tensor(in_memory.scores),
                               rtol=1e-5, atol=1e-7)


def test_sharded_checkpoint_streams_the_same(model, ckpt, tokenizer, texts, tmp_path):
    from emomoe import save_model

    sharded = save_model(model, tmp_path / "sharded", max_shard_size=60_000,
                         extra_files={"tokenizer.json": ckpt / "tokenizer.json"})
    assert len(list(sharded.glob("*.safetensors"))) > 3
    assert select_experts(sharded, texts, KEEP, "easy-ep").kept == select_experts(ckpt, texts, KEEP,
                                                                                 "easy-ep").kept


def test_token_ids_and_batching_do_not_change_the_result(model, tokenizer, texts):
    seqs = ref.encode(tokenizer, texts)
    a = select_experts(model, texts, KEEP, "global", tokenizer=tokenizer)
    b = select_experts(model, from_token_ids(seqs), KEEP, "global", batch_tokens=16)  # one seq per batch
    assert a.kept == b.kept
    torch.testing.assert_close(torch.tensor(a.scores), torch.tensor(b.scores), rtol=1e-5, atol=1e-7)


def test_random_is_seeded_and_needs_no_calibration(model):
    a, b = select_experts(model, None, KEEP, "random", seed=1), select_experts(model, None, KEEP, "random", seed=1)
    c = select_experts(model, None, KEEP, "random", seed=2)
    assert a.kept == b.kept and a.kept != c.kept and a.seed == 1


def test_in_memory_model_is_left_unchanged(model, tokenizer, texts):
    ids = torch.tensor([ref.encode(tokenizer, texts[:1])[0].tolist()])
    before = model(ids).logits
    select_experts(model, texts, KEEP, "layerwise", tokenizer=tokenizer)
    assert all(block.mlp.gate.allowed is None for block in model.model.layers)
    torch.testing.assert_close(model(ids).logits, before, rtol=0, atol=0)


def test_keep_schedule_and_fraction(tiny_config):
    assert resolve_keep(tiny_config, [3, 8]) == [3, 8]
    assert resolve_keep(tiny_config, keep_frac=0.5) == [4, 4]
    with pytest.raises(ValueError, match=r"keep \(9\) in layer 0 must be <= the layer's experts \(8\)"):
        resolve_keep(tiny_config, 9)
    with pytest.raises(ValueError, match=r"keep \(2\) in layer 1 must be >= num_experts_per_tok \(3\)"):
        resolve_keep(tiny_config, [3, 2])
    with pytest.raises(ValueError, match="2 layers"):
        resolve_keep(tiny_config, [3, 3, 3])
    with pytest.raises(ValueError, match="exactly one"):
        resolve_keep(tiny_config, 3, 0.5)


def test_errors(model, ckpt, tokenizer, texts):
    with pytest.raises(ValueError, match="unknown method"):
        select_experts(model, texts, KEEP, "best", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="calibration text is empty"):
        select_experts(model, ["", "   "], KEEP, "global", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="need a tokenizer"):
        select_experts(model, texts, KEEP, "global")
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="has no tokenizer.json"):
        select_experts(ckpt, texts, KEEP, "global")


def test_selection_json_round_trip(model, tokenizer, texts, tmp_path):
    sel = select_experts(model, texts, [4, 6], "easy-ep", tokenizer=tokenizer)
    back = Selection.load(sel.save(tmp_path / "selection.json"))
    assert (back.kept, back.keep, back.scores, back.method) == (sel.kept, sel.keep, sel.scores, sel.method)
    record = sel.to_dict()["layers"][1]
    assert record["kept_scores"] == [sel.scores[1][e] for e in record["kept"][:-1]]
