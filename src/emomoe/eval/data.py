"""Evaluation documents: read a JSONL file of `{"text", "domain"}` records and tokenize them per document."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from emomoe.data.readers import read_jsonl

UNKNOWN_DOMAIN = "unknown"


@dataclass
class EvalDoc:
    """One evaluation document."""

    text: str
    domain: str
    id: str | None = None


def read_documents(path: str | os.PathLike, text_field: str = "text", domain_field: str = "domain"
                   ) -> list[EvalDoc]:
    """Documents of a JSONL file in file order; records without `domain_field` get domain 'unknown'.

    Records with empty text are skipped. Raises ValueError for a record without a string
    `text_field`, and when the file holds no documents.
    """
    docs = []
    for number, record in read_jsonl(path):
        text = record.get(text_field)
        if not isinstance(text, str):
            raise ValueError(f"{path}:{number} has no string field {text_field!r} (choose it with --text-field)")
        if not text.strip():
            continue
        domain = record.get(domain_field)
        domain = UNKNOWN_DOMAIN if domain is None or domain == "" else str(domain)
        doc_id = record.get("id")
        docs.append(EvalDoc(text, domain, None if doc_id is None else str(doc_id)))
    if not docs:
        raise ValueError(f"{path} holds no documents with text")
    return docs


def by_domain(docs: Sequence[EvalDoc]) -> dict[str, list[str]]:
    """Texts grouped by domain, domains sorted by name, documents in file order."""
    groups: dict[str, list[str]] = {}
    for d in docs:
        groups.setdefault(d.domain, []).append(d.text)
    return {name: groups[name] for name in sorted(groups)}


def tokenize_docs(texts: Sequence[str], tokenizer) -> list[list[int]]:
    """Token ids per document with the tokenizer's EOS appended (how training sees a document)."""
    return [ids + [tokenizer.eos_id] for ids in tokenizer.encode_batch(list(texts))]


def limit_per_domain(docs: Sequence[EvalDoc], max_docs: int | None) -> list[EvalDoc]:
    """The first `max_docs` documents of each domain (all when None), in file order."""
    if max_docs is None:
        return list(docs)
    if max_docs < 1:
        raise ValueError(f"max docs per domain ({max_docs}) must be >= 1")
    seen: dict[str, int] = {}
    out = []
    for d in docs:
        if seen.get(d.domain, 0) < max_docs:
            out.append(d)
            seen[d.domain] = seen.get(d.domain, 0) + 1
    return out
