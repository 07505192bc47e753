"""Calibration text for expert selection: read files, format few-shot prompts, tokenize, batch.

A calibration set is a list of token sequences plus where they came from (file hashes), so a
selection can record exactly what it was chosen on. JSONL files give one example per record
(the `text` field unless told otherwise; a `.json` file may also hold one array of records);
any other file gives one example per paragraph (blocks separated by blank lines).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from emomoe.data.readers import read_jsonl

SHOT_SEPARATOR = "\n\n"


@dataclass
class CalibrationSet:
    """Token sequences to calibrate on, and their provenance."""

    sequences: list[Tensor]  # each [T_i] long, T_i >= 1
    files: list[dict] = field(default_factory=list)  # [{"path", "sha256"}] of the source files
    examples: int = 0  # examples read (before few-shot grouping)
    shots: int = 1

    @property
    def num_tokens(self) -> int:
        return sum(int(s.numel()) for s in self.sequences)

    def describe(self) -> dict:
        """The JSON-able record of this set that goes into `selection.json`."""
        return {"files": self.files, "examples": self.examples, "shots": self.shots,
                "sequences": len(self.sequences), "tokens": self.num_tokens}


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_examples(path: str | os.PathLike, text_field: str = "text") -> list[str]:
    """Examples of one file: JSONL records' `text_field`, else blank-line-separated paragraphs.

    Raises FileNotFoundError for a missing file and ValueError for a malformed JSONL line or
    a record without the field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"calibration file {path} does not exist")
    raw = path.read_text(encoding="utf-8")
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        return [p.strip() for p in re.split(r"\n\s*\n", raw) if p.strip()]
    if raw.lstrip()[:1] in ("[", "{") and "\n" in raw.strip():  # maybe one JSON document
        try:
            whole = json.loads(raw)
        except json.JSONDecodeError:
            whole = None  # not one document: read it as JSON lines
        if isinstance(whole, dict):
            raise ValueError(f"{path} holds one JSON object; calibration JSON must be JSONL (one record "
                             "per line) or an array of records")
    else:
        whole = None
    records = list(enumerate(whole, 1)) if isinstance(whole, list) else read_jsonl(path)
    out = []
    for number, record in records:
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise ValueError(f"{path}:{number} has no string field {text_field!r} (choose the field "
                             "with --text-field)")
        if record[text_field].strip():
            out.append(record[text_field])
    return out


def few_shot(texts: Sequence[str], shots: int, separator: str = SHOT_SEPARATOR) -> list[str]:
    """Join consecutive groups of `shots` examples into one prompt each (the last may be shorter)."""
    if shots < 1:
        raise ValueError(f"shots ({shots}) must be >= 1")
    return [separator.join(texts[i:i + shots]) for i in range(0, len(texts), shots)]


def load_tokenizer(model_dir: str | os.PathLike):
    """The `tokenizers.Tokenizer` of a checkpoint directory (raises ValueError if it has none)."""
    from tokenizers import Tokenizer

    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise ValueError(f"checkpoint {model_dir} has no tokenizer.json: expert selection needs the "
                         "model's tokenizer to encode the calibration text")
    return Tokenizer.from_file(str(path))


def tokenize(texts: Sequence[str], tokenizer, max_length: int | None = None) -> list[Tensor]:
    """Encode texts (no special tokens added) and truncate each to `max_length` tokens."""
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    seqs = [torch.tensor(e.ids[:max_length] if max_length else e.ids, dtype=torch.long) for e in encodings]
    return [s for s in seqs if s.numel()]


def load_calibration(paths: Sequence[str | os.PathLike], tokenizer, text_field: str = "text",
                     shots: int = 1, limit: int | None = None, max_length: int | None = None
                     ) -> CalibrationSet:
    """Read, few-shot format and tokenize calibration files.

    paths: JSONL or plain text files, read in order; `limit` keeps the first examples only.
    Raises ValueError when no tokens remain (empty files, empty text).
    """
    if not paths:
        raise ValueError("no calibration files given")
    texts, files = [], []
    for path in paths:
        texts += read_examples(path, text_field)
        files.append({"path": str(path), "sha256": sha256_file(path)})
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise ValueError(f"calibration text is empty: no examples in {', '.join(map(str, paths))}")
    calib = from_texts(texts, tokenizer, shots, max_length)
    calib.files = files
    return calib


def from_texts(texts: Sequence[str], tokenizer, shots: int = 1, max_length: int | None = None
               ) -> CalibrationSet:
    """A calibration set from in-memory texts (raises ValueError if they hold no tokens)."""
    if isinstance(texts, str):
        texts = [texts]
    texts = [t for t in texts if t and t.strip()]
    sequences = tokenize(few_shot(texts, shots), tokenizer, max_length) if texts else []
    if not sequences:
        raise ValueError("calibration text is empty: no tokens to calibrate on")
    return CalibrationSet(sequences, examples=len(texts), shots=shots)


def from_token_ids(token_ids: Sequence[Sequence[int]] | Tensor, max_length: int | None = None
                   ) -> CalibrationSet:
    """A calibration set from token id sequences (a list of lists/tensors, or a [B, T] tensor)."""
    seqs = [torch.as_tensor(s, dtype=torch.long).reshape(-1) for s in token_ids]
    seqs = [s[:max_length] if max_length else s for s in seqs]
    seqs = [s for s in seqs if s.numel()]
    if not seqs:
        raise ValueError("calibration token ids are empty: no tokens to calibrate on")
    return CalibrationSet(seqs, examples=len(seqs))


def batches(sequences: Sequence[Tensor], batch_tokens: int = 8192, pad_id: int = 0
            ) -> list[tuple[Tensor, Tensor]]:
    """Right-padded batches of similar length: [(input_ids [B, T], valid [B, T] bool), ...].

    Right padding keeps causal attention exact for the real tokens (they never see a pad);
    `valid` marks the real tokens so padding never enters a score. A batch holds at most
    `batch_tokens` padded tokens (at least one sequence).
    """
    order = sorted(range(len(sequences)), key=lambda i: -sequences[i].numel())
    out, group = [], []
    for i in order + [None]:
        width = sequences[group[0]].numel() if group else 0
        if group and (i is None or (len(group) + 1) * width > batch_tokens):
            ids = torch.full((len(group), width), pad_id, dtype=torch.long)
            valid = torch.zeros(len(group), width, dtype=torch.bool)
            for row, j in enumerate(group):
                n = sequences[j].numel()
                ids[row, :n], valid[row, :n] = sequences[j], True
            out.append((ids, valid))
            group = []
        if i is not None:
            group.append(i)
    return out
