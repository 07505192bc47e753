import json

import pytest
import torch

from emomoe.select.calib import batches, few_shot, read_examples, sha256_file
from emomoe.select.scores import choose


def test_read_examples_jsonl_array_and_paragraphs(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"text": "one"}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
    assert read_examples(jsonl) == ["one", "two"]
    array = tmp_path / "b.json"
    array.write_text(json.dumps([{"body": "x"}, {"body": "y"}], indent=1))
    assert read_examples(array, "body") == ["x", "y"]
    text = tmp_path / "c.txt"
    text.write_text("first para\nline two\n\n  \nsecond\n")
    assert read_examples(text) == ["first para\nline two", "second"]
    obj = tmp_path / "d.json"
    obj.write_text('{\n"text": "x"\n}')
    with pytest.raises(ValueError, match="one JSON object"):
        read_examples(obj)
    with pytest.raises(FileNotFoundError):
        read_examples(tmp_path / "missing.jsonl")
    assert len(sha256_file(text)) == 64


def test_few_shot_groups():
    assert few_shot(["a", "b", "c"], 2) == ["a\n\nb", "c"]
    with pytest.raises(ValueError):
        few_shot(["a"], 0)


def test_batches_pad_right_and_mark_real_tokens():
    seqs = [torch.arange(1, 4), torch.arange(1, 6), torch.arange(1, 2)]
    out = batches(seqs, batch_tokens=10, pad_id=0)
    assert sum(int(valid.sum()) for _, valid in out) == 9
    for ids, valid in out:
        assert ids.shape[0] * ids.shape[1] <= 10 or ids.shape[0] == 1
        assert torch.all(ids[~valid] == 0) and torch.all(valid.cumsum(1)[valid] == torch.arange(1, 6)[
            : valid.shape[1]].expand_as(valid)[valid])


def test_choose_breaks_ties_towards_lower_ids():
    assert choose(torch.tensor([1.0, 3.0, 3.0, 0.5, 3.0]), 2).tolist() == [1, 2]
    assert choose(torch.zeros(6), 3).tolist() == [0, 1, 2]
