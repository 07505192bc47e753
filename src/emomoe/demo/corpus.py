"""A small multi-domain corpus from real text already on the machine (for `emomoe demo`).

Domains and where they come from (each skipped, with a message, when absent):
    python_code   the installed Python standard library's sources
    python_docs   docstrings of those modules (read with `ast`, nothing is imported)
    licenses      /usr/share/common-licenses and /usr/share/doc/*/copyright
    man_pages     /usr/share/man/man{1,5,8} (groff markup stripped)
    c_headers     /usr/include/**/*.h
    shell         /usr/share/bash-completion/completions
Documents are cut at blank lines into pieces of MIN..MAX characters.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import re
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

MIN_CHARS, MAX_CHARS = 300, 2000


def chunks(text: str, min_chars: int = MIN_CHARS, max_chars: int = MAX_CHARS) -> Iterator[str]:
    """Pieces of `text` cut at blank lines, each min_chars..max_chars long (shorter tails dropped)."""
    piece = ""
    for block in re.split(r"\n\s*\n", text):
        block = block.strip("\n")
        if not block.strip():
            continue
        if piece and len(piece) + len(block) + 2 > max_chars:
            if len(piece) >= min_chars:
                yield piece
            piece = ""
        piece = f"{piece}\n\n{block}" if piece else block[:max_chars]
    if len(piece) >= min_chars:
        yield piece


def _read(path: Path) -> str | None:
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None


def _files(pattern_roots: list[tuple[str, str]], exclude: Callable[[Path], bool] = lambda p: False) -> list[Path]:
    found = []
    for root, pattern in pattern_roots:
        base = Path(root)
        if base.is_dir():
            found += [p for p in base.glob(pattern) if p.is_file() and not exclude(p)]
    return sorted(found)


def _stdlib_files() -> list[Path]:
    stdlib = sysconfig.get_paths()["stdlib"]
    skip = re.compile(r"(^|/)(test|tests|idlelib|site-packages|dist-packages|lib2to3|__pycache__)(/|$)")
    return _files([(stdlib, "**/*.py")], lambda p: bool(skip.search(str(p.relative_to(stdlib)))))


def _python_code(path: Path) -> Iterator[str]:
    text = _read(path)
    if text:
        yield from chunks(text)


def _python_docs(path: Path) -> Iterator[str]:
    text = _read(path)
    if not text:
        return
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_CHARS:
                yield doc[:MAX_CHARS]


_GROFF = re.compile(r"\\f[BIRP]|\\\(..|\\[-e&]|\\s[+-]?\d")


def _man_page(path: Path) -> Iterator[str]:
    text = _read(path)
    if not text or text.startswith(".so "):
        return
    lines = []
    for line in text.splitlines():
        if line.startswith(('.\\"', "'\\\"")):
            continue
        if line.startswith("."):
            parts = line.split(None, 1)
            if parts[0] in (".SH", ".SS"):
                lines += ["", parts[1].strip('"') if len(parts) > 1 else ""]
            elif parts[0] in (".PP", ".P", ".LP", ".TP", ".IP", ".sp", ".br"):
                lines.append("")
            elif len(parts) > 1 and parts[0] in (".B", ".I", ".BR", ".IR", ".RB", ".BI", ".IB", ".RI"):
                lines.append(parts[1].replace('"', ""))
            continue
        lines.append(_GROFF.sub("", line))
    yield from chunks("\n".join(lines))


def _plain(path: Path) -> Iterator[str]:
    text = _read(path)
    if text:
        yield from chunks(text)


SOURCES: dict[str, tuple[str, Callable[[], list[Path]], Callable[[Path], Iterator[str]]]] = {
    "python_code": ("Python standard library sources", _stdlib_files, _python_code),
    "python_docs": ("Python standard library docstrings", _stdlib_files, _python_docs),
    "licenses": ("/usr/share/common-licenses, /usr/share/doc/*/copyright",
                 lambda: _files([("/usr/share/common-licenses", "*"), ("/usr/share/doc", "*/copyright")]), _plain),
    "man_pages": ("/usr/share/man/man{1,5,8}",
                  lambda: _files([("/usr/share/man", "man1/*"), ("/usr/share/man", "man5/*"),
                                  ("/usr/share/man", "man8/*")]), _man_page),
    "c_headers": ("/usr/include/**/*.h", lambda: _files([("/usr/include", "**/*.h")]), _plain),
    "shell": ("/usr/share/bash-completion/completions",
              lambda: _files([("/usr/share/bash-completion/completions", "*")]), _plain),
}


def build_corpus(out: Path, docs_per_domain: int = 400, seed: int = 0, log: Callable[[str], None] = print,
                 min_domains: int = 3) -> dict[str, int]:
    """Write a JSONL corpus (text, domain, source) of up to `docs_per_domain` documents per domain.

    Files are visited in a seeded random order; at most 3 documents are taken per file so that
    no single file dominates a domain. Returns documents per domain. Raises ValueError when fewer
    than `min_domains` domains have enough text (use `--data` to bring your own corpus).
    """
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    records = []
    for domain, (where, list_files, extract) in SOURCES.items():
        files = list_files()
        rng.shuffle(files)
        docs = []
        for path in files:
            for i, text in enumerate(extract(path)):
                if i >= 3:
                    break
                docs.append({"text": text, "domain": domain, "source": str(path)})
            if len(docs) >= docs_per_domain:
                break
        docs = docs[:docs_per_domain]
        if len(docs) < 40:
            log(f"  {domain:<12} skipped: {len(docs)} documents found in {where} (need 40)")
            continue
        counts[domain] = len(docs)
        records += docs
        log(f"  {domain:<12} {len(docs):>4} documents from {where}")
    if len(counts) < min_domains:
        raise ValueError(f"only {len(counts)} domains of real text found on this machine (need {min_domains}); "
                         "pass --data FILE.jsonl with 'text' and 'domain' fields")
    rng.shuffle(records)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return counts
