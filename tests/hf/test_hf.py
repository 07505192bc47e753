"""transformers integration: registration, offline loading without remote code, logits and generate parity."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402

import emomoe.hf  # noqa: E402,F401  (registers the "emo" model type)
from emomoe import EmoForCausalLM, load_model, preset, save_model  # noqa: E402
from emomoe.generate import generate_ids  # noqa: E402
from emomoe.hf import EmoHFConfig, EmoHFForCausalLM  # noqa: E402
from emomoe.select import Selection, prune_model  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny", eos_token_id=0, pad_token_id=1)).eval()
    return save_model(model, tmp_path_factory.mktemp("hf") / "full")


def test_registered_and_logits_match(checkpoint):
    assert isinstance(AutoConfig.from_pretrained(checkpoint), EmoHFConfig)
    hf = AutoModelForCausalLM.from_pretrained(checkpoint)
    assert isinstance(hf, EmoHFForCausalLM)
    ours = load_model(checkpoint)
    ids = torch.randint(2, 500, (2, 10))
    assert torch.equal(hf(ids).logits, ours(ids).logits)
    out = hf(ids, labels=ids)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, ref)


def test_pruned_checkpoint_loads(checkpoint, tmp_path):
    full = load_model(checkpoint)
    kept = [[0, 2, 5, 7], [1, 3, 4, 7]]  # original ids, shared expert (7) last
    sel = Selection("manual", keep=[4, 4], kept=kept, scores=[[0.0] * 7] * 2, num_experts=[8, 8], num_shared=[1, 1])
    path = save_model(prune_model(full, sel), tmp_path / "pruned")
    hf = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    assert hf.emo.config.num_experts_per_layer == [4, 4]
    ids = torch.randint(2, 500, (1, 9))
    assert torch.equal(hf(ids).logits, sel.mask_model(full)(ids).logits)


def test_hf_generate_matches_ours(checkpoint):
    hf = AutoModelForCausalLM.from_pretrained(checkpoint)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    ids = torch.tensor([prompts[0], [1, 1, 1] + prompts[1]])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False, pad_token_id=1)
    ours = generate_ids(load_model(checkpoint), prompts, 8, pad_id=1)
    assert out[:, 6:].tolist() == ours.token_ids


def test_no_remote_code_is_executed(checkpoint, tmp_path):
    target = tmp_path / "with_code"
    target.mkdir()
    for f in checkpoint.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    sentinel = tmp_path / "executed"
    (target / "modeling_emo.py").write_text(f"open({str(sentinel)!r}, 'w').write('x')\n")
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_emo.EmoConfig", "AutoModelForCausalLM": "modeling_emo.Emo"}
    (target / "config.json").write_text(json.dumps(config))
    model = AutoModelForCausalLM.from_pretrained(target)
    assert isinstance(model, EmoHFForCausalLM) and not sentinel.exists()


def test_not_a_directory(tmp_path):
    with pytest.raises(OSError, match="not a local checkpoint directory"):
        EmoHFForCausalLM.from_pretrained(tmp_path / "missing")
