import json

import pytest

from emomoe.cli import main


def test_eval_cli_end_to_end(ckpts, data_file, tmp_path, capsys):
    out = tmp_path / "res" / "results.json"
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"question": "q?", "choices": ["yes", "no"], "answer": 1}) + "\n")
    code = main(["eval", "--model", str(ckpts[0]), "--data", str(data_file), "--mc", str(task),
                 "--max-length", "8", "--out", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert set(result["by_domain"]) == {"code", "news", "health"}
    assert result["overall"]["tokens"] == sum(r["tokens"] for r in result["by_domain"].values())
    assert result["tasks"]["task"]["n"] == 1
    printed = capsys.readouterr().out
    assert "overall" in printed and "acc_norm" in printed


def test_eval_cli_errors(ckpts, data_file, tmp_path, capsys):
    assert main(["eval", "--model", str(ckpts[0]), "--data", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nomodel"), "--data", str(data_file)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", "--model", str(ckpts[0])]) == 2
    assert "nothing to evaluate" in capsys.readouterr().err
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"text": "hello there"}\n{"text": "print(1)"}\n')
    assert main(["eval", "--model", str(ckpts[0]), "--data", str(plain), "--out", str(tmp_path / "r.json")]) == 0
    assert list(json.loads((tmp_path / "r.json").read_text())["by_domain"]) == ["unknown"]


def test_modularity_cli_two_models(ckpts, data_file, tmp_path, capsys):
    out = tmp_path / "mod"
    code = main(["modularity", "--model", str(ckpts[0]), "--model", str(ckpts[1]), "--name", "emo", "--name",
                 "standard", "--data", str(data_file), "--keep", "1,0.5", "--calib-docs", "2",
                 "--max-docs-per-domain", "2", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "modularity.json").read_text())
    assert list(result["models"]) == ["emo", "standard"]
    for curve in result["models"].values():
        assert set(curve["keep"]) == {"1.0", "0.5"}
        assert set(curve["keep"]["0.5"]) >= {"avg_loss", "avg_rel_increase", "by_domain"}
    md = (out / "modularity.md").read_text()
    assert "emo: mean loss" in md and "standard: mean increase" in md and "| code |" in md
    assert "| 1/2 (4 per layer) |" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert (out / "modularity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_modularity_cli_errors(ckpts, data_file, tmp_path, capsys):
    args = ["modularity", "--model", str(ckpts[0]), "--data", str(data_file), "--out", str(tmp_path / "m")]
    assert main(args + ["--keep", "1", "--calib-docs", "6"]) == 2
    assert "needs at least 7" in capsys.readouterr().err
    assert main(args + ["--keep", "1,0"]) == 2
    assert "(0, 1]" in capsys.readouterr().err
    assert main(args + ["--keep", "0.25"]) == 2
    assert "keep fraction 0.25 gives 2 experts" in capsys.readouterr().err
    assert main(args + ["--name", "a", "--name", "b"]) == 2
    assert "one per model" in capsys.readouterr().err
