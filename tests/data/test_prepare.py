from __future__ import annotations

import json
import os

import numpy as np
import pytest

from emomoe.data import PrepareError, TokenShards, prepare
from emomoe.data.prepare import is_held_out

from .conftest import make_docs, write_jsonl
from .test_readers import BAD_LINES
from .test_tokenizer import big_vocab_tokenizer


def test_shards_hold_every_document_exactly(tmp_path, tiny_tokenizer):
    records = make_docs(40)
    src = write_jsonl(tmp_path / "c.jsonl", records)
    m = prepare([src], tiny_tokenizer, tmp_path / "out", workers=1, shard_tokens=300).manifest
    shards = TokenShards(tmp_path / "out")
    assert len(m["shards"]) > 1 and shards.num_docs == m["num_docs"] == 40
    for i, r in enumerate(records):
        ids = shards.tokens(i)
        assert ids[-1] == tiny_tokenizer.eos_id and tiny_tokenizer.decode(ids[:-1]) == r["text"]
        assert (shards.domain(i), shards.source(i)) == (r["domain"], r["source"])
    assert m["dtype"] == "uint16" and shards.tokens(0).dtype == np.uint16
    assert m["tokenizer"]["sha256"] == tiny_tokenizer.sha256 and m["tokenizer"]["vocab_size"] == 320
    for dom in ("code", "german", "prose"):
        assert m["docs_per_domain"][dom] == sum(r["domain"] == dom for r in records)
        assert m["tokens_per_domain"][dom] == sum(
            len(tiny_tokenizer.encode(r["text"])) + 1 for r in records if r["domain"] == dom
        )
    assert m["docs_per_source"] == {"src0": 20, "src1": 20}
    assert sum(s["tokens"] for s in m["shards"]) == m["num_tokens"] == shards.num_tokens


def test_output_does_not_depend_on_workers(tmp_path, tiny_tokenizer):
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(700))  # several batches
    prepare([src], tiny_tokenizer, tmp_path / "w1", workers=1)
    prepare([src], tiny_tokenizer, tmp_path / "w2", workers=2)
    for name in ("tokens-00000.bin", "doc_offsets.npy", "doc_domain.npy", "doc_source.npy"):
        assert (tmp_path / "w1" / name).read_bytes() == (tmp_path / "w2" / name).read_bytes()


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    tok = big_vocab_tokenizer(tmp_path / "big.json")
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "abc"}])
    m = prepare([src], tok, tmp_path / "out", workers=1).manifest
    ids = TokenShards(tmp_path / "out").tokens(0)
    assert m["dtype"] == "uint32" and ids.dtype == np.uint32 and ids[-1] == 70_256


def test_malformed_lines_are_counted_and_reported(tmp_path, tiny_tokenizer):
    src = write_jsonl(tmp_path / "c.jsonl", [{"text": "good one"}], BAD_LINES)
    m = prepare([src], tiny_tokenizer, tmp_path / "out", workers=1).manifest
    assert m["num_docs"] == 2 and m["skipped"]["total"] == 7
    assert m["skipped"]["by_reason"] == {
        "bad JSON": 1,
        "missing field 'text'": 1,
        "empty text": 1,
        "field 'text' is int, not a string": 1,
        "undecodable bytes": 1,
        "undecodable text": 1,
        "not a JSON object": 1,
    }
    assert m["skipped"]["first"][0].startswith(f"{src}:2: bad JSON")
    assert m["skipped"]["first"][4].startswith(f"{src}:6: undecodable bytes (invalid UTF-8 at byte 13)")


def _leftovers(root):
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def test_strict_fails_and_leaves_nothing_behind(tmp_path, tiny_tokenizer):
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(600), [b'{"text": 1}'])
    with pytest.raises(PrepareError, match=r"c.jsonl:601: field 'text' is int.*--strict"):
        prepare([src], tiny_tokenizer, tmp_path / "out", workers=2, strict=True)
    assert not (tmp_path / "out").exists() and _leftovers(tmp_path) == []
    # an earlier good output survives a failed re-run untouched
    good = write_jsonl(tmp_path / "good.jsonl", make_docs(5))
    prepare([good], tiny_tokenizer, tmp_path / "out", workers=1)
    before = (tmp_path / "out" / "manifest.json").read_text()
    with pytest.raises(PrepareError):
        prepare([src], tiny_tokenizer, tmp_path / "out", workers=1, strict=True)
    assert (tmp_path / "out" / "manifest.json").read_text() == before and _leftovers(tmp_path) == []


def test_no_usable_documents_is_an_error(tmp_path, tiny_tokenizer):
    src = write_jsonl(tmp_path / "c.jsonl", [], [b"{oops", b'{"text": ""}'])
    with pytest.raises(
        PrepareError, match="no usable documents.*2 malformed records, e.g. .*c.jsonl:1: bad JSON"
    ):
        prepare([src], tiny_tokenizer, tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()


def test_rerun_is_a_noop_unless_changed_or_forced(tmp_path, tiny_tokenizer):
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(10))
    first = prepare([src], tiny_tokenizer, tmp_path / "out", workers=1)
    assert not first.up_to_date
    again = prepare([src], tiny_tokenizer, tmp_path / "out", workers=1)
    assert again.up_to_date and again.manifest["created"] == first.manifest["created"]
    assert prepare([src], tiny_tokenizer, tmp_path / "out", workers=1, force=True).up_to_date is False
    assert prepare([src], tiny_tokenizer, tmp_path / "out", workers=2).up_to_date  # workers: same output
    assert not prepare([src], tiny_tokenizer, tmp_path / "out", workers=1, val_frac=0.5).up_to_date
    write_jsonl(src, make_docs(11))
    st = os.stat(src)
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = prepare([src], tiny_tokenizer, tmp_path / "out", workers=1, val_frac=0.5)
    assert not changed.up_to_date and changed.manifest["num_docs"] == 11 and _leftovers(tmp_path) == []


def test_refuses_to_overwrite_a_foreign_directory_and_bad_options(tmp_path, tiny_tokenizer):
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(3))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(ValueError, match="exists and is not a prepared data directory"):
        prepare([src], tiny_tokenizer, tmp_path / "mine")
    with pytest.raises(ValueError, match=r"val_frac \(1.0\) must be in \[0, 1\)"):
        prepare([src], tiny_tokenizer, tmp_path / "o", val_frac=1.0)
    with pytest.raises(ValueError, match=r"workers \(0\) must be >= 1"):
        prepare([src], tiny_tokenizer, tmp_path / "o", workers=0)
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        prepare([tmp_path / "missing.jsonl"], tiny_tokenizer, tmp_path / "o")


def test_val_split_is_by_text_hash_and_disjoint(tmp_path, tiny_tokenizer):
    records = make_docs(200)
    records.append(dict(records[0], id=999))  # an exact copy must land in the same split
    src = write_jsonl(tmp_path / "c.jsonl", records)
    m = prepare([src], tiny_tokenizer, tmp_path / "out", workers=1, val_frac=0.2).manifest
    train, val = TokenShards(tmp_path / "out"), TokenShards(tmp_path / "out", split="val")
    want_val = [r["text"] for r in records if is_held_out(r["text"], 0.2)]
    assert 20 <= len(want_val) <= 60 and val.num_docs == len(want_val) == m["splits"]["val"]["docs"]
    assert (
        train.num_docs + val.num_docs == len(records) == TokenShards(tmp_path / "out", split="all").num_docs
    )
    train_texts = {tiny_tokenizer.decode(train.tokens(i)[:-1]) for i in range(train.num_docs)}
    val_texts = [tiny_tokenizer.decode(val.tokens(i)[:-1]) for i in range(val.num_docs)]
    assert val_texts == want_val and not train_texts & set(val_texts)
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["options"]["val_frac"] == 0.2


def test_reader_errors(tmp_path, tiny_tokenizer):
    with pytest.raises(FileNotFoundError, match="not a prepared data directory"):
        TokenShards(tmp_path)
    src = write_jsonl(tmp_path / "c.jsonl", make_docs(3))
    prepare([src], tiny_tokenizer, tmp_path / "out", workers=1)
    with pytest.raises(ValueError, match="no documents in split 'val'; prepare with --val-frac"):
        TokenShards(tmp_path / "out", split="val")
    with pytest.raises(ValueError, match="split must be one of"):
        TokenShards(tmp_path / "out", split="test")
