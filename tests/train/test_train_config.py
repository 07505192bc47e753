from pathlib import Path

import pytest

from emomoe.cli import main
from emomoe.train.config import load_train_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", ["tiny", "emo-small", "stdmoe-small", "emo-1b14b"])
def test_example_configs_load(name):
    cfg = load_train_config(CONFIGS / f"{name}.toml")
    model = cfg.model_config()
    assert model.router == ("standard" if name.startswith("stdmoe") else "emo")
    if name == "emo-1b14b":
        assert cfg.global_batch_size == 1024 and 238_000 < cfg.max_steps < 239_000


def test_emo_and_standard_small_configs_differ_only_in_routing():
    emo = load_train_config(CONFIGS / "emo-small.toml")
    std = load_train_config(CONFIGS / "stdmoe-small.toml")
    assert emo.optim == std.optim and emo.data == std.data
    assert emo.train.max_steps == std.train.max_steps and emo.train.seed == std.train.seed
    a, b = emo.model_config(), std.model_config()
    assert a.replace(router="standard", pool_eval=None) == b.replace(pool_eval=None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ([], "data.train"),
        (["data.train=x", "train.max_steps=1"], "exactly one of train.global_batch_tokens"),
        (["data.train=x", "train.global_batch_size=4"], "exactly one of train.max_steps"),
        (["data.train=x", "train.global_batch_size=4", "train.max_steps=1", "optim.schedule=linear"],
         "optim.schedule"),
        (["data.train=x", "train.global_batch_tokens=100", "train.max_steps=1"], "multiple of data.seq_len"),
        (["data.train=x", "train.global_batch_size=4", "train.max_steps=1", "train.lb_scope=batch"],
         "train.lb_scope"),
        (["data.train=x", "train.global_batch_size=4", "train.max_steps=1", "train.nope=1"], "unknown key"),
        (["data.train=x", "train.global_batch_size=4", "train.max_steps=1", "model.pool_min=1"], "pool_min"),
        (["oops"], "section.key=value"),
    ],
)
def test_invalid_training_configs(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_train_config(None, overrides)


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "invalid TOML" in capsys.readouterr().err
    assert main(["train", "--set", "data.train=x", "--set", "train.global_batch_size=4",
                 "--set", "train.max_steps=1"]) == 2
    assert "not a prepared data directory" in capsys.readouterr().err


def test_yaml_config_equals_toml(tmp_path):
    yaml = pytest.importorskip("yaml")
    toml_cfg = load_train_config(CONFIGS / "emo-small.toml")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({k: (dict(v) if isinstance(v, dict) else v)
                                    for k, v in toml_cfg.to_dict().items()}))
    assert load_train_config(path) == toml_cfg
