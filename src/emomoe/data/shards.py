"""Memory-mapped reader of a prepared token-shard directory (written by `emomoe prepare`).

Directory layout:
    manifest.json        what was prepared, how, and counts (see docs/data.md)
    tokens-00000.bin     raw token ids, dtype from the manifest (uint16 or uint32), documents
                         concatenated, each ending with EOS; a document never straddles two files
    doc_offsets.npy      int64 [num_docs + 1]: document i is tokens [offsets[i], offsets[i+1]) of
                         the concatenation of all token files
    doc_domain.npy       int32 [num_docs]: index into manifest["domains"]
    doc_source.npy       int32 [num_docs]: index into manifest["sources"]
    doc_split.npy        uint8 [num_docs]: 0 = train, 1 = held out for validation (--val-frac)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

FORMAT = "emomoe-token-shards"
VERSION = 1
SPLITS = {"train": 0, "val": 1}


class TokenShards:
    """Random access to the documents of a prepared directory, without loading the tokens.

    `split`: "train" (documents not held out; all of them when prepared without --val-frac),
    "val" (the held-out documents) or "all". Document indices 0..num_docs-1 refer to the split.
    Raises FileNotFoundError if `path` holds no manifest, ValueError for a wrong format or an
    unknown or empty split.
    """

    def __init__(self, path: str | os.PathLike, split: str = "train"):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"{self.path} is not a prepared data directory (no manifest.json); "
                "create it with `emomoe prepare`"
            )
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise ValueError(
                f"{manifest_path}: unsupported format {self.manifest.get('format')!r} "
                f"version {self.manifest.get('version')!r} (expected {FORMAT!r} {VERSION})"
            )
        if split not in (*SPLITS, "all"):
            raise ValueError(f"split must be one of train, val, all (got {split!r})")
        self.split = split
        self.dtype = np.dtype(self.manifest["dtype"])
        self._files = [
            np.memmap(self.path / s["file"], dtype=self.dtype, mode="r") for s in self.manifest["shards"]
        ]
        self._file_starts = np.cumsum([0] + [len(f) for f in self._files])  # [num_files + 1]
        offsets = np.load(self.path / "doc_offsets.npy")
        domains = np.load(self.path / "doc_domain.npy")
        sources = np.load(self.path / "doc_source.npy")
        if split == "all":
            keep = np.arange(len(domains))
        else:
            keep = np.flatnonzero(np.load(self.path / "doc_split.npy") == SPLITS[split])
        if len(keep) == 0:
            hint = (
                "; prepare with --val-frac, or prepare a separate validation file" if split == "val" else ""
            )
            raise ValueError(f"{self.path} has no documents in split {split!r}{hint}")
        self.doc_starts = offsets[keep]  # [num_docs] int64, into the concatenated token files
        self.doc_lengths = offsets[keep + 1] - offsets[keep]  # [num_docs] int64, EOS included
        self.doc_domains = domains[keep].astype(np.int64)  # [num_docs]
        self.doc_sources = sources[keep].astype(np.int64)  # [num_docs]
        self.doc_file = np.searchsorted(self._file_starts, self.doc_starts, side="right") - 1  # [num_docs]

    @property
    def num_docs(self) -> int:
        return len(self.doc_lengths)

    def __len__(self) -> int:
        return self.num_docs

    @property
    def num_tokens(self) -> int:
        """Tokens in this split, EOS included."""
        return int(self.doc_lengths.sum())

    @property
    def domain_names(self) -> list[str]:
        return list(self.manifest["domains"])

    @property
    def source_names(self) -> list[str]:
        return list(self.manifest["sources"])

    @property
    def eos_id(self) -> int:
        return int(self.manifest["tokenizer"]["eos_id"])

    @property
    def pad_id(self) -> int:
        return int(self.manifest["tokenizer"]["pad_id"])

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def tokens(self, i: int) -> np.ndarray:
        """Token ids of document i (a read-only memmap view; the last one is EOS)."""
        f = int(self.doc_file[i])
        start = int(self.doc_starts[i] - self._file_starts[f])
        return self._files[f][start : start + int(self.doc_lengths[i])]

    def domain(self, i: int) -> str:
        """Domain name of document i."""
        return self.manifest["domains"][self.doc_domains[i]]

    def source(self, i: int) -> str:
        """Source name of document i."""
        return self.manifest["sources"][self.doc_sources[i]]

    def __repr__(self) -> str:
        return (
            f"TokenShards({str(self.path)!r}, split={self.split!r}, docs={self.num_docs}, "
            f"tokens={self.num_tokens}, dtype={self.dtype.name})"
        )
