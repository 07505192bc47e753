from __future__ import annotations

import hashlib

import numpy as np
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from emomoe.data import Tokenizer, token_dtype, train_tokenizer

TRICKY = [
    "plain ascii",
    "  leading and trailing spaces   ",
    "runs\t\t of   whitespace\n\n\n and\r\nCRLF \x0b\x0c",
    "unicode: héllo wörld, Ελληνικά, русский, 日本語, emoji 🎉👩‍👩‍👧, combining e\u0301 vs \u00e9",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(3)]}  # code\n",
    "special strings are text: <|endoftext|> <|pad|>",
    "\u00a0non-breaking\u2003em-space\u200bzero-width",
    "",
]


@pytest.mark.parametrize("text", TRICKY)
def test_round_trip_is_exact(tiny_tokenizer, text):
    ids = tiny_tokenizer.encode(text)
    assert tiny_tokenizer.decode(ids) == text
    assert tiny_tokenizer.eos_id not in ids  # a literal "<|endoftext|>" in text is not EOS


def test_encode_batch_matches_encode_and_docs_end_with_eos(tiny_tokenizer):
    batch = tiny_tokenizer.encode_batch(TRICKY)
    assert batch == [tiny_tokenizer.encode(t) for t in TRICKY]
    tokens, lengths = tiny_tokenizer.encode_docs(TRICKY[:3], np.uint16)
    assert tokens.dtype == np.uint16 and lengths.tolist() == [len(b) + 1 for b in batch[:3]]
    ends = np.cumsum(lengths)
    assert (tokens[ends - 1] == tiny_tokenizer.eos_id).all()
    assert tokens[ends[0] : ends[1] - 1].tolist() == batch[1]


def test_specials_sha_and_reload(tiny_tokenizer, tmp_path):
    assert (tiny_tokenizer.eos_id, tiny_tokenizer.pad_id, tiny_tokenizer.vocab_size) == (0, 1, 320)
    path = tiny_tokenizer.save(tmp_path / "t")
    assert tiny_tokenizer.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    again = Tokenizer.from_file(tmp_path / "t")  # a directory works too
    assert again.sha256 == tiny_tokenizer.sha256 and again.encode("abc d") == tiny_tokenizer.encode("abc d")


def test_custom_specials_and_missing_special_errors(tmp_path):
    tok = train_tokenizer(texts=["aaa bbb"] * 5, vocab_size=300, eos_token="</s>", pad_token="<pad>")
    path = tok.save(tmp_path)
    assert Tokenizer.from_file(path, "</s>", "<pad>").eos_id == 0
    with pytest.raises(
        ValueError, match=r"EOS token '<\|endoftext\|>' is not in the vocabulary.*--eos-token"
    ):
        Tokenizer.from_file(path)
    with pytest.raises(ValueError, match="PAD token '<nope>'"):
        Tokenizer.from_file(path, "</s>", "<nope>")
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        Tokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a Hugging Face tokenizer.json"):
        Tokenizer.from_file(tmp_path / "bad.json")


def test_train_from_files_and_argument_errors(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "one two three"}\n{"bad json\n{"text": "two three four"}\n')
    tok = train_tokenizer(files=[tmp_path / "a.jsonl"], vocab_size=280)
    assert tok.decode(tok.encode("three four")) == "three four"
    with pytest.raises(ValueError, match="exactly one"):
        train_tokenizer(vocab_size=300)
    with pytest.raises(ValueError, match=r"vocab_size \(100\) must be >= 258"):
        train_tokenizer(texts=["x"], vocab_size=100)


def big_vocab_tokenizer(path) -> Tokenizer:
    """A byte-level tokenizer whose EOS/PAD ids exceed 65535 (like dolma2's 100257/100277)."""
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {c: i for i, c in enumerate(sorted(alphabet))}
    vocab.update({f"<filler{i}>": len(vocab) + i for i in range(70_000)})
    vocab["<|endoftext|>"], vocab["<|pad|>"] = len(vocab), len(vocab) + 1
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.add_special_tokens(["<|endoftext|>", "<|pad|>"])
    hf.save(str(path))
    return Tokenizer.from_file(path)


def test_token_dtype_choice(tmp_path):
    assert token_dtype(8192) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(100278) == np.uint32
    tok = big_vocab_tokenizer(tmp_path / "big.json")
    assert tok.eos_id == 70_256 and tok.vocab_size == 70_258
