"""Read documents from JSONL, plain text and Parquet files (optionally gzip/zstd-compressed).

`iter_documents` yields one `Doc` per record: either a document (`text` set) or a malformed record
(`error` set, `text` None) with its location `file:line`, so callers can count, report or fail.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
COMPRESSED_SUFFIXES = (".gz", ".zst", ".zstd")
UNKNOWN_DOMAIN = "unknown"


class Doc(NamedTuple):
    """One input record: a document, or (when `error` is set) a malformed record to skip."""

    text: str | None
    domain: str
    source: str
    where: str  # "path:line" or "path:row N" or "path"
    error: str | None = None  # short reason, e.g. "bad JSON"


def expand_inputs(inputs: Sequence[str | os.PathLike]) -> list[tuple[Path, Path]]:
    """Files to read as (file, the input argument it came from); directories are walked in sorted order.

    Raises FileNotFoundError for a missing input and ValueError for an empty directory.
    """
    files = []
    for arg in inputs:
        root = Path(arg)
        if root.is_dir():
            found = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not found:
                raise ValueError(f"input directory {root} holds no files")
            files.extend((p, root) for p in found)
        elif root.is_file():
            files.append((root, root))
        else:
            raise FileNotFoundError(f"input not found: {root}")
    return files


def _base_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def open_binary(path: Path):
    """Open `path` for binary reading, decompressing .gz and .zst/.zstd (the latter needs `zstandard`)."""
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix in (".zst", ".zstd"):
        try:
            import zstandard
        except ImportError:
            raise ValueError(
                f"reading {path} needs the 'zstandard' package: pip install zstandard "
                "(or pip install 'emomoe[zstd]')"
            ) from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    return open(path, "rb")


def _check_text(text, field: str) -> str | None:
    """The reason `text` is not a usable document, or None."""
    if text is None:
        return f"missing field '{field}'"
    if not isinstance(text, str):
        return f"field '{field}' is {type(text).__name__}, not a string"
    if not text.strip():
        return "empty text"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates from JSON "\ud800" escapes
            return f"undecodable text (lone surrogate at character {exc.start})"
    return None


def _meta(record: dict, field: str, fixed: str | None, fallback: str) -> tuple[str, str | None]:
    if fixed is not None:
        return fixed, None
    value = record.get(field)
    if value is None:
        return fallback, None
    if not isinstance(value, str) or not value:
        return fallback, f"field '{field}' is not a non-empty string"
    return value, None


def _records(path: Path, text_field: str, columns: tuple[str, str]) -> Iterator[tuple[str, object]]:
    """(location, record-or-error-string) for each line of a JSONL file or row of a Parquet file."""
    if _base_suffix(path) == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError(
                f"reading {path} needs the 'pyarrow' package: pip install pyarrow "
                "(or pip install 'emomoe[parquet]')"
            ) from None
        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        if text_field not in names:
            raise ValueError(
                f"{path} has no column '{text_field}' (columns: {', '.join(sorted(names))}); "
                "name the text column with --text-field"
            )
        wanted = [c for c in (text_field, *columns) if c in names]
        row = 0
        for batch in pf.iter_batches(columns=wanted):
            for record in batch.to_pylist():
                row += 1
                yield f"{path}:row {row}", record
        return
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, 1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield where, f"undecodable bytes (invalid UTF-8 at byte {exc.start})"
                continue
            if not line.strip():
                continue  # blank lines are not records
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield where, f"bad JSON ({exc.msg} at column {exc.colno})"
                continue
            yield (
                where,
                record if isinstance(record, dict) else f"not a JSON object ({type(record).__name__})",
            )


def iter_documents(
    inputs: Sequence[str | os.PathLike],
    text_field: str = "text",
    domain_field: str = "domain",
    source_field: str = "source",
    domain: str | None = None,
    source: str | None = None,
) -> Iterator[Doc]:
    """Yield every record of `inputs` (files or directories) in a deterministic order.

    JSONL (.jsonl/.ndjson/.json) and Parquet files give one document per record, with domain and
    source from `domain_field` / `source_field` (default: "unknown" and the input's name). Any
    other file is one plain-text document whose domain is its parent directory's name. `domain` /
    `source`, when given, override both. Compressed .gz/.zst files are read transparently.
    """
    for path, root in expand_inputs(inputs):
        default_source = source if source is not None else root.name
        if _base_suffix(path) in (*JSONL_SUFFIXES, ".parquet"):
            for where, record in _records(path, text_field, (domain_field, source_field)):
                if isinstance(record, str):
                    yield Doc(None, "", "", where, record)
                    continue
                dom, err_d = _meta(record, domain_field, domain, UNKNOWN_DOMAIN)
                src, err_s = _meta(record, source_field, source, default_source)
                text = record.get(text_field)
                error = _check_text(text, text_field) or err_d or err_s
                yield Doc(None if error else text, dom, src, where, error)
            continue
        dom = domain if domain is not None else path.parent.resolve().name
        with open_binary(path) as f:
            raw = f.read()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Doc(
                None, dom, default_source, str(path), f"undecodable bytes (invalid UTF-8 at byte {exc.start})"
            )
            continue
        error = _check_text(text, "text")
        yield Doc(None if error else text, dom, default_source, str(path), error)


def read_jsonl(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line number, record) of every non-blank line of a JSONL file.

    Raises FileNotFoundError for a missing file and ValueError (with file:line) for bad JSON
    or a line that is not an object.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    out = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number} is not valid JSON: {exc}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number} must hold a JSON object, got {type(record).__name__}")
            out.append((number, record))
    return out
