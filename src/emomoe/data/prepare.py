"""Tokenize a corpus into memory-mapped token shards (the engine behind `emomoe prepare`).

The main process reads and validates records; worker processes tokenize batches of documents; the
main process writes the results in input order, so the output does not depend on the number of
workers. Everything is written to a temporary directory beside the output and renamed into place
at the end: a failed or interrupted run leaves no partial output (and keeps an older one intact).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
from array import array
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .readers import expand_inputs, iter_documents
from .shards import FORMAT, SPLITS, VERSION
from .tokenizer import DEFAULT_EOS, DEFAULT_PAD, Tokenizer, token_dtype

MAX_REPORTED = 20  # malformed records listed by location in the manifest


class PrepareError(ValueError):
    """Bad input under --strict, or no usable document at all."""


@dataclass
class PrepareResult:
    """What `prepare` did: `manifest` is the output's manifest; `up_to_date` when nothing was redone."""

    out: Path
    manifest: dict
    up_to_date: bool
    seconds: float = 0.0


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def is_held_out(text: str, val_frac: float) -> bool:
    """Whether a document goes to the validation split: a hash of its text, so copies stay together."""
    h = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
    return h < val_frac * 2**64


def _fingerprint(inputs, tok: Tokenizer, options: dict) -> tuple[str, list[dict]]:
    files = []
    for path, _ in expand_inputs(inputs):
        st = path.stat()
        files.append({"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    key = json.dumps(
        {"files": files, "tokenizer": tok.sha256, "options": options, "version": VERSION}, sort_keys=True
    )
    return hashlib.sha256(key.encode()).hexdigest(), files


_WORKER_TOK: Tokenizer | None = None


def _init_worker(json_text: str, eos: str, pad: str) -> None:
    global _WORKER_TOK
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one thread per worker: --workers means what it says
    _WORKER_TOK = Tokenizer.from_str(json_text, eos, pad)


def _encode(texts: list[str], dtype: str) -> tuple[np.ndarray, np.ndarray]:
    return _WORKER_TOK.encode_docs(texts, np.dtype(dtype))


class _ShardWriter:
    """Appends documents' tokens to tokens-NNNNN.bin files of about `shard_tokens` tokens each."""

    def __init__(self, root: Path, shard_tokens: int):
        self.root, self.shard_tokens = root, shard_tokens
        self.shards: list[dict] = []
        self._file = None
        self.lengths = array("q")

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        name = f"tokens-{len(self.shards):05d}.bin"
        self._file = open(self.root / name, "wb")
        self.shards.append({"file": name, "docs": 0, "tokens": 0})

    def write(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        ends = np.cumsum(lengths)
        done_docs, done_tokens = 0, 0
        while done_docs < len(lengths):
            if self._file is None or self.shards[-1]["tokens"] >= self.shard_tokens:
                self._open_next()
            room = self.shard_tokens - self.shards[-1]["tokens"]
            # documents that fit in this shard; at least one so a huge document still gets written
            n = max(1, int(np.searchsorted(ends[done_docs:] - done_tokens, room, side="right")))
            n = min(n, len(lengths) - done_docs)
            end = int(ends[done_docs + n - 1])
            self._file.write(tokens[done_tokens:end].tobytes())
            self.shards[-1]["docs"] += n
            self.shards[-1]["tokens"] += end - done_tokens
            done_docs, done_tokens = done_docs + n, end
        self.lengths.extend(lengths.tolist())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _batches(docs, stats: dict, strict: bool, batch_docs: int = 256, batch_chars: int = 1 << 20):
    """Group valid documents into batches of (texts, metas); count malformed ones in `stats`."""
    texts, metas, chars = [], [], 0
    for doc in docs:
        if doc.error is not None:
            if strict:
                raise PrepareError(f"{doc.where}: {doc.error} (--strict stops at the first malformed record)")
            stats["skipped"][doc.error.split(" (")[0]] += 1
            if len(stats["examples"]) < MAX_REPORTED:
                stats["examples"].append(f"{doc.where}: {doc.error}")
            continue
        texts.append(doc.text)
        metas.append((doc.domain, doc.source))
        chars += len(doc.text)
        if len(texts) >= batch_docs or chars >= batch_chars:
            yield texts, metas
            texts, metas, chars = [], [], 0
    if texts:
        yield texts, metas


def prepare(
    inputs,
    tokenizer: str | os.PathLike | Tokenizer,
    out: str | os.PathLike,
    *,
    text_field: str = "text",
    domain_field: str = "domain",
    source_field: str = "source",
    domain: str | None = None,
    source: str | None = None,
    eos_token: str = DEFAULT_EOS,
    pad_token: str = DEFAULT_PAD,
    workers: int | None = None,
    val_frac: float = 0.0,
    shard_tokens: int = 1 << 28,
    strict: bool = False,
    force: bool = False,
    progress: bool = False,
) -> PrepareResult:
    """Tokenize `inputs` (files or directories) into a shard directory `out` (see `shards.py`).

    Every document gets EOS appended. Malformed records are skipped and counted (first
    MAX_REPORTED listed by file:line in the manifest), or raise PrepareError when `strict`.
    `val_frac` holds out that fraction of documents (by a hash of the text) as split "val".
    If `out` was prepared from the same files (size and mtime), tokenizer and options, nothing is
    done (`up_to_date` is True) unless `force`. Raises FileNotFoundError for missing inputs and
    ValueError for bad options or an `out` that is not a prepared directory.
    """
    started = time.perf_counter()
    tok = (
        tokenizer
        if isinstance(tokenizer, Tokenizer)
        else Tokenizer.from_file(tokenizer, eos_token, pad_token)
    )
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers ({workers}) must be >= 1")
    if not 0.0 <= val_frac < 1.0:
        raise ValueError(f"val_frac ({val_frac}) must be in [0, 1)")
    if shard_tokens < 1:
        raise ValueError(f"shard_tokens ({shard_tokens}) must be >= 1")
    out = Path(out)
    if out.exists() and not (out / "manifest.json").is_file() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output {out} exists and is not a prepared data directory; choose another --out")
    options = {
        "text_field": text_field,
        "domain_field": domain_field,
        "source_field": source_field,
        "domain": domain,
        "source": source,
        "val_frac": val_frac,
        "shard_tokens": shard_tokens,
        "strict": strict,
    }
    fingerprint, files = _fingerprint(inputs, tok, options)
    if (out / "manifest.json").is_file() and not force:
        old = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        if old.get("fingerprint") == fingerprint:
            return PrepareResult(out, old, up_to_date=True, seconds=time.perf_counter() - started)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    old_dir = out.parent / f".{out.name}.old-{os.getpid()}"
    try:
        manifest = _run(inputs, tok, tmp, options, workers, progress)
        manifest.update(fingerprint=fingerprint, inputs=files, options=options)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        tok.save(tmp / "tokenizer.json")  # the shards are only meaningful with their tokenizer
        if out.exists():
            out.rename(old_dir)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old_dir.exists() and not out.exists():
            old_dir.rename(out)  # put the previous output back
        raise
    shutil.rmtree(old_dir, ignore_errors=True)
    return PrepareResult(out, manifest, up_to_date=False, seconds=time.perf_counter() - started)


def _run(inputs, tok: Tokenizer, tmp: Path, options: dict, workers: int, progress: bool) -> dict:
    from tqdm import tqdm

    dtype = token_dtype(tok.vocab_size)
    stats = {"skipped": Counter(), "examples": []}
    docs = iter_documents(
        inputs,
        options["text_field"],
        options["domain_field"],
        options["source_field"],
        options["domain"],
        options["source"],
    )
    writer = _ShardWriter(tmp, options["shard_tokens"])
    doc_meta: list[tuple[str, str]] = []
    doc_split = array("B")
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    bar = tqdm(unit=" docs", disable=not progress, dynamic_ncols=True, file=sys.stderr)
    started, total_tokens = time.perf_counter(), 0
    with bar, ctx.Pool(workers, _init_worker, (tok.to_json(), tok.eos_token, tok.pad_token)) as pool:
        pending: deque = deque()

        def drain_one():
            nonlocal total_tokens
            result, texts, metas = pending.popleft()
            tokens, lengths = result.get()
            writer.write(tokens, lengths)
            doc_meta.extend(metas)
            doc_split.extend(
                int(is_held_out(t, options["val_frac"])) if options["val_frac"] else 0 for t in texts
            )
            total_tokens += len(tokens)
            bar.update(len(lengths))
            bar.set_postfix_str(
                f"{total_tokens / max(time.perf_counter() - started, 1e-9):,.0f} tokens/s", refresh=False
            )

        for texts, metas in _batches(docs, stats, options["strict"]):
            pending.append((pool.apply_async(_encode, (texts, dtype.name)), texts, metas))
            if len(pending) >= 2 * workers:  # bounded: never more than a few batches in memory
                drain_one()
        while pending:
            drain_one()
    writer.close()
    skipped = sum(stats["skipped"].values())
    if not doc_meta:
        detail = f"; {skipped} malformed records, e.g. {stats['examples'][0]}" if skipped else ""
        raise PrepareError(f"no usable documents in the inputs{detail}")
    return _finish(tmp, tok, dtype, writer, doc_meta, doc_split, stats)


def _counts(names: list[str], ids: np.ndarray, lengths: np.ndarray) -> tuple[dict, dict]:
    docs = np.bincount(ids, minlength=len(names))
    tokens = np.bincount(ids, weights=lengths, minlength=len(names)).astype(np.int64)
    return (
        {n: int(d) for n, d in zip(names, docs, strict=True)},
        {n: int(t) for n, t in zip(names, tokens, strict=True)},
    )


def _finish(tmp: Path, tok: Tokenizer, dtype, writer: _ShardWriter, doc_meta, doc_split, stats) -> dict:
    lengths = np.frombuffer(writer.lengths, dtype=np.int64)  # [num_docs]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)  # [num_docs + 1]
    domains = sorted({d for d, _ in doc_meta})
    sources = sorted({s for _, s in doc_meta})
    dom_index, src_index = {d: i for i, d in enumerate(domains)}, {s: i for i, s in enumerate(sources)}
    doc_domain = np.array([dom_index[d] for d, _ in doc_meta], dtype=np.int32)
    doc_source = np.array([src_index[s] for _, s in doc_meta], dtype=np.int32)
    split = np.frombuffer(doc_split, dtype=np.uint8)
    np.save(tmp / "doc_offsets.npy", offsets)
    np.save(tmp / "doc_domain.npy", doc_domain)
    np.save(tmp / "doc_source.npy", doc_source)
    np.save(tmp / "doc_split.npy", split)
    docs_d, tokens_d = _counts(domains, doc_domain, lengths)
    docs_s, tokens_s = _counts(sources, doc_source, lengths)
    splits = {}
    for name, code in SPLITS.items():
        sel = split == code
        if sel.any() or name == "train":
            d, t = _counts(domains, doc_domain[sel], lengths[sel])
            splits[name] = {
                "docs": int(sel.sum()),
                "tokens": int(lengths[sel].sum()),
                "docs_per_domain": d,
                "tokens_per_domain": t,
            }
    return {
        "format": FORMAT,
        "version": VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "tokenizer": {
            "name": tok.name,
            "sha256": tok.sha256,
            "vocab_size": tok.vocab_size,
            "eos_token": tok.eos_token,
            "eos_id": tok.eos_id,
            "pad_token": tok.pad_token,
            "pad_id": tok.pad_id,
        },
        "dtype": dtype.name,
        "shards": writer.shards,
        "num_docs": len(lengths),
        "num_tokens": int(offsets[-1]),
        "domains": domains,
        "sources": sources,
        "docs_per_domain": docs_d,
        "tokens_per_domain": tokens_d,
        "docs_per_source": docs_s,
        "tokens_per_source": tokens_s,
        "splits": splits,
        "skipped": {
            "total": sum(stats["skipped"].values()),
            "by_reason": dict(stats["skipped"]),
            "first": stats["examples"],
        },
    }
