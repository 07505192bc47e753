import json

import pytest

from emomoe import save_model
from emomoe.cli import main


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "info" in capsys.readouterr().out


def test_info_on_saved_checkpoint(tiny_model, tmp_path, capsys):
    save_model(tiny_model, tmp_path / "ckpt")
    assert main(["info", str(tmp_path / "ckpt")]) == 0
    out = capsys.readouterr().out
    assert "experts per layer" in out and "8 (all layers)" in out and "189,760" in out
    assert main(["info", str(tmp_path / "ckpt"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["parameters"]["total"] == info["stored"]["parameters"] == 189_760
    assert info["experts_per_layer"] == [8, 8]


def test_info_on_release_preset_without_allocation(capsys):
    assert main(["info", "emo-1b14b", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert 13e9 < info["parameters"]["total"] < 15e9
    assert 0.9e9 < info["parameters"]["active_non_embedding"] < 1.2e9


def test_info_on_missing_dir_is_one_line_error(tmp_path, capsys):
    assert main(["info", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err and "Traceback" not in err
