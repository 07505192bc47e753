from __future__ import annotations

import gzip
import sys

import pytest

from emomoe.data import iter_documents

from .conftest import write_jsonl

BAD_LINES = [
    b'{"text": "fine", "domain": "d"',  # line 2: truncated JSON
    b'{"domain": "d"}',  # line 3: no text
    b'{"text": 42}',  # line 4: text not a string
    b'{"text": "   \\n"}',  # line 5: whitespace only
    b'{"text": "caf\xe9"}',  # line 6: Latin-1 byte, not UTF-8
    b'{"text": "lone \\ud800 surrogate"}',  # line 7
    b"[1, 2]",  # line 8: not an object
    b"",  # blank line: ignored, not a record
    b'{"text": "last good", "domain": "d2", "source": "s"}',  # line 10
]


def test_jsonl_malformed_records_have_reasons_and_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"text": "first", "domain": "d"}], BAD_LINES)
    docs = list(iter_documents([path]))
    got = [(d.where.rsplit(":", 1)[1], d.error and d.error.split(" (")[0]) for d in docs]
    assert got == [
        ("1", None),
        ("2", "bad JSON"),
        ("3", "missing field 'text'"),
        ("4", "field 'text' is int, not a string"),
        ("5", "empty text"),
        ("6", "undecodable bytes"),
        ("7", "undecodable text"),
        ("8", "not a JSON object"),
        ("10", None),
    ]
    assert (docs[0].text, docs[0].domain, docs[0].source) == ("first", "d", "c.jsonl")
    assert (docs[-1].text, docs[-1].domain, docs[-1].source) == ("last good", "d2", "s")
    assert all(d.text is None for d in docs if d.error)


def test_field_names_and_overrides(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl", [{"content": "x y", "lang": "de", "origin": "o"}, {"content": "z"}]
    )
    docs = list(iter_documents([path], text_field="content", domain_field="lang", source_field="origin"))
    assert [(d.text, d.domain, d.source) for d in docs] == [("x y", "de", "o"), ("z", "unknown", "c.jsonl")]
    docs = list(iter_documents([path], text_field="content", domain="forced", source="S"))
    assert {(d.domain, d.source) for d in docs} == {("forced", "S")}


def test_text_directories_gzip_and_sorted_order(tmp_path):
    (tmp_path / "corpus" / "poems").mkdir(parents=True)
    (tmp_path / "corpus" / "news").mkdir()
    (tmp_path / "corpus" / "poems" / "b.txt").write_text("roses\nare red\n")
    (tmp_path / "corpus" / "poems" / "a.txt").write_bytes(b"\xff\xfe broken")
    (tmp_path / "corpus" / "news" / "n.txt.gz").write_bytes(gzip.compress("héadline".encode()))
    with gzip.open(tmp_path / "j.jsonl.gz", "wb") as f:
        f.write(b'{"text": "zipped", "domain": "z"}\n')
    docs = list(iter_documents([tmp_path / "corpus", tmp_path / "j.jsonl.gz"]))
    assert [(d.text, d.domain, d.source) for d in docs] == [
        ("héadline", "news", "corpus"),
        (None, "poems", "corpus"),
        ("roses\nare red\n", "poems", "corpus"),
        ("zipped", "z", "j.jsonl.gz"),
    ]
    assert docs[1].error.startswith("undecodable bytes (invalid UTF-8 at byte 0)")


def test_zstd_and_missing_zstandard(tmp_path, monkeypatch):
    zstandard = pytest.importorskip("zstandard")
    path = tmp_path / "c.jsonl.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(b'{"text": "squeezed"}\n'))
    assert [d.text for d in iter_documents([path])] == ["squeezed"]
    monkeypatch.setitem(sys.modules, "zstandard", None)  # makes `import zstandard` fail
    with pytest.raises(ValueError, match="needs the 'zstandard' package: pip install zstandard"):
        list(iter_documents([path]))


def test_parquet_and_missing_pyarrow(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"text": ["a b", None, "c"], "domain": ["x", "x", None]})
    pq.write_table(table, tmp_path / "t.parquet")
    docs = list(iter_documents([tmp_path / "t.parquet"]))
    assert [(d.text, d.domain, d.where.split(":")[-1], d.error) for d in docs] == [
        ("a b", "x", "row 1", None),
        (None, "x", "row 2", "missing field 'text'"),
        ("c", "unknown", "row 3", None),
    ]
    with pytest.raises(ValueError, match="has no column 'body'.*--text-field"):
        list(iter_documents([tmp_path / "t.parquet"], text_field="body"))
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ValueError, match="needs the 'pyarrow' package"):
        list(iter_documents([tmp_path / "t.parquet"]))


def test_missing_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="input not found: .*nope.jsonl"):
        list(iter_documents([tmp_path / "nope.jsonl"]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files"):
        list(iter_documents([tmp_path / "empty"]))
