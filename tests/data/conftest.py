"""Tiny corpora and tokenizers built in tmp_path: the data tests never need the shared corpus."""

from __future__ import annotations

import json
import random

import pytest

from emomoe.data import Tokenizer, prepare, train_tokenizer

WORDS = {
    "code": "def return import class self lambda yield for while if else ( ) : = + [ ] { }".split(),
    "prose": "the of and to in that it was for on are as with his they at be this from".split(),
    "german": "der die und in den von zu das mit sich des auf für ist im dem nicht ein".split(),
}


def make_docs(n: int, seed: int = 0, min_words: int = 3, max_words: int = 60) -> list[dict]:
    """`n` JSONL records spread over the domains above, with varied lengths."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        domain = sorted(WORDS)[i % len(WORDS)]
        words = [rng.choice(WORDS[domain]) for _ in range(rng.randint(min_words, max_words))]
        docs.append(
            {"id": i, "domain": domain, "source": f"src{i % 2}", "text": " ".join(words) + f" #{i}\n"}
        )
    return docs


def write_jsonl(path, records, raw_lines=()) -> str:
    """Write records (dicts) and then `raw_lines` (bytes, written verbatim) as a JSONL file."""
    with open(path, "wb") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False).encode() + b"\n")
        for line in raw_lines:
            f.write(line + b"\n")
    return str(path)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory) -> Tokenizer:
    texts = [d["text"] for d in make_docs(60, seed=1)] + ["héllo wörld 日本語 🎉\n\t  x = [1, 2]"]
    tok = train_tokenizer(texts=texts, vocab_size=320)
    path = tok.save(tmp_path_factory.mktemp("tok"))
    return Tokenizer.from_file(path)


@pytest.fixture(scope="session")
def tiny_shards_dir(tmp_path_factory, tiny_tokenizer):
    """A prepared directory of 90 documents (3 domains, 2 sources), 10% held out."""
    root = tmp_path_factory.mktemp("prepared")
    src = write_jsonl(root / "corpus.jsonl", make_docs(90, seed=2))
    prepare([src], tiny_tokenizer, root / "out", workers=1, val_frac=0.1)
    return root / "out"
