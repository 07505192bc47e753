import json

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from emomoe import EmoForCausalLM, load_model, preset, save_model
from emomoe.cli import main

TEXTS = ["The patient was given a dose of medicine.", "Stocks fell sharply on Monday.",
         "def add(x, y): return x + y", "The film's soundtrack was lovely.", "Parliament voted late."]


@pytest.fixture
def ckpt(tmp_path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(TEXTS * 3, trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tok.save(str(tmp_path / "tokenizer.json"))
    torch.manual_seed(0)
    model = EmoForCausalLM(preset("tiny")).eval()
    return save_model(model, tmp_path / "ckpt", extra_files={"tokenizer.json": tmp_path / "tokenizer.json"})


@pytest.fixture
def calib(tmp_path):
    path = tmp_path / "calib.jsonl"
    path.write_text("".join(json.dumps({"id": i, "body": t}) + "\n" for i, t in enumerate(TEXTS)))
    return path


def test_select_end_to_end(ckpt, calib, tmp_path, capsys):
    out = tmp_path / "pruned"
    code = main(["select", "--model", str(ckpt), "--calib", str(calib), "--text-field", "body", "--shots", "2",
                 "--keep-schedule", "4,6", "--method", "layerwise", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "parameters" in printed and "expert bytes" in printed and "3 prompts" in printed
    record = json.loads((out / "selection.json").read_text())
    assert record["keep"] == [4, 6] and record["calibration"]["shots"] == 2
    assert record["calibration"]["files"][0]["sha256"] and record["calibration"]["tokens"] > 0
    model = load_model(out)
    assert [blk.mlp.experts.num_experts for blk in model.model.layers] == [4, 6]
    assert (out / "tokenizer.json").is_file()


def test_keep_frac_and_plain_text_calibration(ckpt, tmp_path):
    text = tmp_path / "calib.txt"
    text.write_text("\n\n".join(TEXTS))
    assert main(["select", "--model", str(ckpt), "--calib", str(text), "--keep-frac", "0.5",
                 "--method", "easy-ep", "--out", str(tmp_path / "o")]) == 0
    assert json.loads((tmp_path / "o" / "selection.json").read_text())["keep"] == [4, 4]


@pytest.mark.parametrize("args, message", [
    (["--keep", "9"], "must be <= the layer's experts (8)"),
    (["--keep", "2"], "must be >= num_experts_per_tok (3)"),
    (["--keep", "4", "--calib", "EMPTY"], "calibration text is empty"),
    (["--keep", "4", "--text-field", "text"], "has no string field 'text'"),
    (["--keep-schedule", "4,x"], "neither a comma list"),
])
def test_user_errors_are_one_line_and_write_nothing(ckpt, calib, tmp_path, capsys, args, message):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    args = [str(empty) if a == "EMPTY" else a for a in args]
    if "--calib" not in args:
        args += ["--calib", str(calib)]
    out = tmp_path / "out"
    assert main(["select", "--model", str(ckpt), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_missing_tokenizer_and_existing_output(ckpt, calib, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    assert main(["select", "--model", str(ckpt), "--calib", str(calib), "--keep", "4", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    (ckpt / "tokenizer.json").unlink()
    assert main(["select", "--model", str(ckpt), "--calib", str(calib), "--keep", "4", "--out", str(out),
                 "--overwrite"]) == 2
    assert "has no tokenizer.json" in capsys.readouterr().err
    assert list(out.iterdir()) == []
