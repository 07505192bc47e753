"""`emomoe tokenizer` and `emomoe prepare` through `emomoe.cli.main`, as a user runs them."""

from __future__ import annotations

import json

import pytest

from emomoe.cli import main

TEXTS = [
    "def f(x):\n    return x + 1\n",
    "The quick brown fox jumps over the lazy dog.",
    "Grüße aus Köln! 🎉",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    with open(root / "c.jsonl", "w", encoding="utf-8") as f:
        for i in range(60):
            f.write(json.dumps({"text": f"{TEXTS[i % 3]} #{i}", "domain": f"d{i % 3}"}) + "\n")
    assert (
        main(
            [
                "tokenizer",
                "train",
                "--input",
                str(root / "c.jsonl"),
                "--vocab-size",
                "300",
                "--out",
                str(root / "tok"),
            ]
        )
        == 0
    )
    return root


def test_tokenizer_train_and_info(corpus, capsys):
    assert (corpus / "tok" / "tokenizer.json").is_file()
    assert main(["tokenizer", "info", str(corpus / "tok"), "--encode", "Grüße  \n x"]) == 0
    out = capsys.readouterr().out
    assert "vocab_size 300" in out and "eos '<|endoftext|>' id 0" in out and "pad '<|pad|>' id 1" in out
    assert "round-trip ok" in out and "sha256 " in out


def test_tokenizer_errors_exit_2(corpus, capsys):
    assert main(["tokenizer", "info", str(corpus / "tok"), "--eos-token", "</s>"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("emomoe tokenizer: error: EOS token '</s>' is not in the vocabulary")
        and "\n" == err[-1]
    )
    assert main(["tokenizer", "info", str(corpus / "nothing.json")]) == 2
    assert "tokenizer file not found" in capsys.readouterr().err
    assert (
        main(["tokenizer", "train", "--input", str(corpus / "nope.jsonl"), "--out", str(corpus / "t2")]) == 2
    )
    assert "input not found" in capsys.readouterr().err


def test_prepare_writes_reports_and_skips_rerun(corpus, capsys):
    args = [
        "prepare",
        "--input",
        str(corpus / "c.jsonl"),
        "--tokenizer",
        str(corpus / "tok" / "tokenizer.json"),
        "--out",
        str(corpus / "data"),
        "--workers",
        "1",
        "--no-progress",
        "--val-frac",
        "0.2",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "wrote" in out and "60 documents" in out and "held out for validation" in out
    manifest = json.loads((corpus / "data" / "manifest.json").read_text())
    assert manifest["docs_per_domain"] == {"d0": 20, "d1": 20, "d2": 20}
    assert main(args) == 0
    assert "is up to date" in capsys.readouterr().out
    assert main([a for a in args if a != "--no-progress"] + ["--force"]) == 0
    captured = capsys.readouterr()
    assert (
        "wrote" in captured.out and "60 docs" in captured.err and "tokens/s" in captured.err
    )  # progress bar


def test_prepare_bad_input_lenient_and_strict(corpus, capsys):
    bad = corpus / "bad.jsonl"
    bad.write_bytes(b'{"text": "ok"}\n{"text": \n{"nope": 1}\n{"text": ""}\n{"text": "\xff"}\n')
    base = [
        "prepare",
        "--input",
        str(bad),
        "--tokenizer",
        str(corpus / "tok"),
        "--no-progress",
        "--workers",
        "1",
    ]
    assert main([*base, "--out", str(corpus / "lenient")]) == 0
    out = capsys.readouterr().out
    assert (
        "skipped 4 malformed records" in out
        and f"{bad}:2: bad JSON" in out
        and f"{bad}:5: undecodable" in out
    )
    assert main([*base, "--out", str(corpus / "strict"), "--strict"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: bad JSON" in err and not (corpus / "strict").exists()
    assert main([*base[:2], str(corpus / "missing.jsonl"), *base[3:], "--out", str(corpus / "m")]) == 2
    assert "input not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["tokenizer", "--help"],
        ["tokenizer", "train", "--help"],
        ["tokenizer", "info", "--help"],
        ["prepare", "--help"],
    ],
)
def test_help_has_an_example(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: emomoe") and ("example" in out or argv == ["tokenizer", "--help"])
