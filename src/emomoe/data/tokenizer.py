"""Byte-level BPE tokenizer: train one with `tokenizers`, or load any Hugging Face `tokenizer.json`.

Text round-trips exactly: there is no normaliser, the byte-level pre-tokenizer maps every byte to a
token, and special-token strings that occur inside a document are tokenized as plain text (so EOS
only ever appears where the data pipeline appends it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from itertools import chain, islice
from pathlib import Path

import numpy as np

DEFAULT_EOS = "<|endoftext|>"
DEFAULT_PAD = "<|pad|>"


class Tokenizer:
    """A `tokenizers.Tokenizer` with known EOS and PAD ids.

    `eos_token` / `pad_token` are looked up in the vocabulary; a missing one raises ValueError.
    """

    def __init__(
        self, tok, eos_token: str = DEFAULT_EOS, pad_token: str = DEFAULT_PAD, name: str = "<memory>"
    ):
        self._tok = tok
        self._tok.encode_special_tokens = True  # documents are raw text: "<|endoftext|>" in text is text
        self.name = name
        self.eos_token, self.pad_token = eos_token, pad_token
        self.eos_id = self._lookup(eos_token, "EOS", "--eos-token")
        self.pad_id = self._lookup(pad_token, "PAD", "--pad-token")
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)
        self._json = None

    def _lookup(self, token: str, what: str, flag: str) -> int:
        token_id = self._tok.token_to_id(token)
        if token_id is None:
            raise ValueError(
                f"{what} token {token!r} is not in the vocabulary of {self.name}; name the "
                f"tokenizer's {what} token with {flag}"
            )
        return token_id

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, eos_token: str = DEFAULT_EOS, pad_token: str = DEFAULT_PAD
    ) -> Tokenizer:
        """Load a Hugging Face `tokenizer.json` (or a directory holding one).

        Raises FileNotFoundError if it does not exist, ValueError if it does not parse or lacks
        the EOS/PAD tokens.
        """
        from tokenizers import Tokenizer as HFTokenizer

        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        text = path.read_text(encoding="utf-8")
        try:
            tok = HFTokenizer.from_str(text)
        except Exception as exc:
            raise ValueError(f"{path} is not a Hugging Face tokenizer.json: {exc}") from exc
        out = cls(tok, eos_token, pad_token, name=str(path))
        out._json = text
        return out

    @classmethod
    def from_str(
        cls, json_text: str, eos_token: str = DEFAULT_EOS, pad_token: str = DEFAULT_PAD
    ) -> Tokenizer:
        """Build from the JSON text of a `tokenizer.json` (used to ship the tokenizer to workers)."""
        from tokenizers import Tokenizer as HFTokenizer

        out = cls(HFTokenizer.from_str(json_text), eos_token, pad_token)
        out._json = json_text
        return out

    def to_json(self) -> str:
        """The `tokenizer.json` text: the file's bytes as loaded, or what `save` writes."""
        if self._json is None:
            self._json = self._tok.to_str(pretty=True)
        return self._json

    @property
    def sha256(self) -> str:
        """SHA-256 of the `tokenizer.json` text (equals `sha256sum tokenizer.json` of a saved file)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def save(self, path: str | os.PathLike) -> Path:
        """Write `tokenizer.json` to `path` (a directory, or a file path); returns the file path."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "tokenizer.json"
        path.write_text(self.to_json(), encoding="utf-8")
        return path

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no special tokens added)."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, tokenized together (faster than one at a time)."""
        return [e.ids for e in self._tok.encode_batch_fast(list(texts), add_special_tokens=False)]

    def encode_docs(self, texts: Sequence[str], dtype=np.uint32) -> tuple[np.ndarray, np.ndarray]:
        """Tokenize documents and append EOS to each.

        Returns (tokens [sum of lengths] of `dtype`, lengths [len(texts)] int64), lengths counting EOS.
        """
        ids = self.encode_batch(texts)
        for x in ids:
            x.append(self.eos_id)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        tokens = np.fromiter(chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
        return tokens, lengths

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`, special tokens included (the exact inverse of `encode`)."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.name}, vocab_size={self.vocab_size}, eos_id={self.eos_id}, "
            f"pad_id={self.pad_id})"
        )


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def train_tokenizer(
    files: Sequence[str | os.PathLike] | None = None,
    texts: Iterable[str] | None = None,
    vocab_size: int = 8192,
    eos_token: str = DEFAULT_EOS,
    pad_token: str = DEFAULT_PAD,
    min_frequency: int = 2,
    text_field: str = "text",
    max_docs: int | None = None,
) -> Tokenizer:
    """Train a byte-level BPE on `files` (JSONL/text/Parquet, as `prepare` reads them) or on `texts`.

    Exactly one of `files`, `texts` is given. EOS and PAD become ids 0 and 1. Malformed input lines
    are skipped. Raises ValueError for a vocabulary too small to hold the 256 bytes and the specials.
    """
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    if (files is None) == (texts is None):
        raise ValueError("give exactly one of files, texts")
    if vocab_size < 258:
        raise ValueError(f"vocab_size ({vocab_size}) must be >= 258 (256 bytes + EOS + PAD)")
    if eos_token == pad_token:
        raise ValueError(f"EOS and PAD must differ (both {eos_token!r})")
    if files is not None:
        from .readers import iter_documents

        texts = (d.text for d in iter_documents(files, text_field=text_field) if d.text is not None)
    if max_docs is not None:
        texts = islice(texts, max_docs)
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=[eos_token, pad_token],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return Tokenizer(tok, eos_token, pad_token)
