"""`emomoe generate` end to end on a tiny checkpoint."""

from emomoe.cli import main


def test_cli_streams_a_single_prompt(checkpoint, capsys):
    assert main(["generate", "--model", str(checkpoint), "--prompt", "the cat", "--max-new-tokens", "8"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("the cat") and out.endswith("\n")
    assert "tokens/s" in err


def test_cli_batch_sampling_and_pool_only(checkpoint, capsys):
    args = ["generate", "--model", str(checkpoint), "--prompt", "the cat", "--prompt", "def main",
            "--max-new-tokens", "6", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3", "--pool", "2"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "=== 0: 'the cat'" in first and "=== 1: 'def main'" in first
    assert main(args) == 0 and capsys.readouterr().out == first  # seeded: identical
    assert main(args + ["--load-pool-only"]) == 0
    out, err = capsys.readouterr()
    assert out == first and "experts materialised" in err


def test_cli_user_errors(checkpoint, tmp_path, capsys):
    assert main(["generate", "--model", str(tmp_path / "missing"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1
    assert main(["generate", "--model", str(checkpoint), "--prompt", "the cat", "--max-new-tokens", "5000"]) == 2
    captured = capsys.readouterr()
    assert "exceeds max_position_embeddings" in captured.err and captured.out == ""
    assert main(["generate", "--model", str(checkpoint), "--prompt", "x", "--load-pool-only"]) == 2
    assert "--pool" in capsys.readouterr().err
