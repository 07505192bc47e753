"""Integration: a slice of the shared corpus through tokenizer training, prepare and the loader."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from emomoe.data import PackedLoader, TokenShards, prepare, train_tokenizer

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "train.jsonl"


@pytest.mark.skipif(not CORPUS.is_file(), reason=f"shared corpus not found at {CORPUS}")
def test_corpus_slice_counts_match_input(tmp_path):
    with open(CORPUS, encoding="utf-8") as f:
        lines = [next(f) for _ in range(600)]
    (tmp_path / "slice.jsonl").write_text("".join(lines), encoding="utf-8")
    records = [json.loads(line) for line in lines]
    tok = train_tokenizer(files=[tmp_path / "slice.jsonl"], vocab_size=1024)
    for r in records[:50]:
        assert tok.decode(tok.encode(r["text"])) == r["text"]
    m = prepare([tmp_path / "slice.jsonl"], tok, tmp_path / "out", workers=2).manifest
    assert m["docs_per_domain"] == dict(Counter(r["domain"] for r in records))
    assert m["docs_per_source"] == dict(Counter(r["source"] for r in records))
    assert m["skipped"]["total"] == 0 and len(m["domains"]) == 12
    batch = PackedLoader(TokenShards(tmp_path / "out"), 256, 8, 4, seed=0).next_step()
    assert len(batch) == 2 and batch[0]["input_ids"].shape == (4, 256)
