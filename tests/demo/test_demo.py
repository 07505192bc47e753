"""The demo corpus, the EMO-vs-standard comparison pipeline and `emomoe demo` end to end (tiny budgets)."""

import inspect
import json
import textwrap

import pytest

from emomoe.cli import main
from emomoe.demo.compare import CompareConfig, run_comparison
from emomoe.demo.corpus import _man_page, _python_docs, chunks
from emomoe.demo.run import split_corpus


def test_chunks_cut_at_blank_lines_within_bounds():
    text = "\n\n".join(f"paragraph {i} " + "word " * (20 + 7 * (i % 5)) for i in range(40))
    pieces = list(chunks(text, 300, 900))
    assert pieces and all(300 <= len(p) <= 900 for p in pieces)
    assert all(p.startswith("paragraph") for p in pieces)


def test_python_docstrings_are_read_without_importing(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""' + "Module documentation. " * 20 + '"""\nraise SystemExit("imported!")\n')
    docs = list(_python_docs(f))
    assert len(docs) == 1 and docs[0].startswith("Module documentation.")


def test_man_page_markup_is_stripped(tmp_path):
    f = tmp_path / "x.1"
    body = "\n".join(f".PP\nThe \\fBtool\\fR does thing {i} with care and precision, always." for i in range(12))
    f.write_text(f'.\\" comment\n.TH X 1\n.SH DESCRIPTION\n{body}\n')
    [doc] = list(_man_page(f))
    assert "DESCRIPTION" in doc and "\\fB" not in doc and ".PP" not in doc and "comment" not in doc


def _corpus(path, domains=("alpha", "beta", "gamma"), per_domain=14):
    """Real prose: docstrings of standard-library modules, a different group of modules per domain."""
    import collections
    import functools
    import json as json_mod
    import pathlib
    import statistics
    import string

    modules = {"alpha": [collections, functools], "beta": [json_mod, pathlib], "gamma": [statistics, string]}
    lines = []
    for domain in domains:
        texts = []
        for module in modules[domain]:
            for obj in vars(module).values():
                doc = inspect.getdoc(obj) if callable(obj) else None
                if doc and len(doc) > 150:
                    texts.append(doc)
        texts = (texts * 3)[:per_domain]
        lines += [json.dumps({"text": t, "domain": domain}) for t in texts]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_split_corpus_holds_out_per_domain(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl")
    held = split_corpus(corpus, tmp_path / "train.jsonl", tmp_path / "val.jsonl", 5)
    assert held == {"alpha": 5, "beta": 5, "gamma": 5}
    assert len((tmp_path / "val.jsonl").read_text().splitlines()) == 15
    assert len((tmp_path / "train.jsonl").read_text().splitlines()) == 3 * 14 - 15


def test_comparison_results_have_the_documented_shape(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl")
    split_corpus(corpus, tmp_path / "train.jsonl", tmp_path / "val.jsonl", 6)
    cfg = CompareConfig(str(tmp_path / "train.jsonl"), str(tmp_path / "val.jsonl"), str(tmp_path / "out"),
                        vocab_size=300, model={"preset": "tiny", "num_experts": 16, "pool_max": 15},
                        seq_len=64, global_batch_size=4, micro_batch_size=4, max_steps=3, warmup_steps=1,
                        keep_fracs=(1.0, 0.5), calib_docs=2, eval_docs=3, workers=1, progress=False)
    results = run_comparison(cfg, log=lambda m: None)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["models"].keys() == {"emo", "standard"} and "wall_seconds" in saved and "config" in saved
    for curve in saved["models"].values():
        assert set(curve["full"]["by_domain"]) == {"alpha", "beta", "gamma"}
        half = curve["keep"]["0.5"]
        assert {"avg_loss", "avg_rel_increase", "by_domain"} <= set(half)
        rel = [half["by_domain"][d] / curve["full"]["by_domain"][d] - 1 for d in curve["full"]["by_domain"]]
        assert half["avg_rel_increase"] == pytest.approx(sum(rel) / 3)
        assert curve["keep"]["1.0"]["avg_rel_increase"] == pytest.approx(0.0, abs=1e-6)
    assert "full_loss_within_3pct" in results["target"]
    assert "## Mean over domains" in (tmp_path / "out" / "results.md").read_text()


def test_demo_cli_end_to_end_with_own_data(tmp_path, capsys):
    corpus = _corpus(tmp_path / "c.jsonl", per_domain=40)
    assert main(["demo", "--data", str(corpus), "--out", str(tmp_path / "demo"), "--steps", "2",
                 "--eval-docs", "2"]) == 0
    out = capsys.readouterr().out
    assert "Mean over domains" in out and "results.json" in out
    assert (tmp_path / "demo" / "results.md").is_file()
    if (tmp_path / "demo" / "report" / "index.html").exists():
        assert "Open the report" in out


def test_demo_rejects_missing_data(tmp_path, capsys):
    assert main(["demo", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "d")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_help_mentions_sources(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert "standard library" in textwrap.dedent(capsys.readouterr().out)
