"""`TrainConfig`: the one description of a training run, read from TOML or YAML plus `--set` overrides.

File layout (every key optional except `data.train`)::

    [model]                 # a preset and/or any EmoConfig field
    preset = "small"
    router = "emo"          # or "standard"
    [data]
    train = "data/corpus"   # a directory written by `emomoe prepare`
    seq_len = 256
    [optim]
    lr = 3e-3
    [train]
    out_dir = "runs/emo-small"
    global_batch_tokens = 8192
    max_steps = 2000
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emomoe.config import EmoConfig, preset

SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("fp32", "bf16")
LB_SCOPES = ("global", "local")
PARALLEL = ("ddp", "fsdp")


@dataclass
class DataConfig:
    train: str = ""  # prepared directory (its "train" split is used for training)
    val: str | None = None  # prepared directory for validation (its "val" split, else all of it)
    seq_len: int = 256
    weights: dict[str, float] | None = None  # mixture over sources (or domains, `weight_by`)
    weight_by: str = "source"
    tokenizer: str | None = None  # tokenizer.json copied into exported checkpoints


@dataclass
class OptimConfig:
    lr: float = 3e-3
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1  # not applied to embeddings, norms and biases
    grad_clip: float = 1.0
    schedule: str = "cosine"  # linear warmup, then cosine / WSD (warmup-stable-decay) / constant
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # final lr as a fraction of lr
    decay_frac: float = 0.2  # WSD: fraction of the steps spent decaying


@dataclass
class RunConfig:
    out_dir: str = "runs/run"
    global_batch_tokens: int | None = None  # tokens per optimizer step (or give global_batch_size)
    global_batch_size: int | None = None  # sequences per optimizer step
    micro_batch_size: int = 8  # sequences per forward/backward on one rank
    max_steps: int | None = None
    max_tokens: int | None = None
    lb_weight: float = 0.05
    z_weight: float = 1e-3  # router z-loss
    lm_z_weight: float = 1e-5  # z-loss on the LM logits
    lb_scope: str = "global"  # "global": counts over the whole step and all ranks; "local": per micro-batch
    intra_doc_attention: bool = True
    precision: str = "fp32"
    seed: int = 0
    device: str = "auto"  # auto: cuda when available, else cpu
    parallel: str = "ddp"  # with several processes: "ddp" or "fsdp" (FSDP2 fully_shard)
    log_interval: int = 10
    eval_interval: int = 200  # 0: only at the end
    eval_batches: int = 20  # validation batches per evaluation (0: the whole validation split)
    checkpoint_interval: int = 500  # 0: only at the end
    keep: int = 2  # checkpoints kept
    max_bad_steps: int = 5  # consecutive NaN/inf steps before stopping
    init_from: str | None = None  # Hugging Face-format checkpoint to start from
    freeze_router: bool = False
    freeze_attention: bool = False
    tensorboard: bool = False
    progress: bool = True


@dataclass
class TrainConfig:
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "tiny"})
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def model_config(self, base: EmoConfig | None = None) -> EmoConfig:
        """The EmoConfig: `base` (e.g. from --init-from) or the preset, with the [model] overrides."""
        overrides = {k: v for k, v in self.model.items() if k != "preset"}
        if base is not None:
            return base.replace(**overrides)
        name = self.model.get("preset")
        if name is not None:
            return preset(name, **overrides)
        return EmoConfig(**overrides)

    def validate(self) -> None:
        """Raise ValueError naming the field and the rule."""
        t, o, d = self.train, self.optim, self.data

        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(f"invalid training config: {msg}")

        need(bool(d.train), "data.train (a directory written by `emomoe prepare`) is required")
        need(d.seq_len >= 2, f"data.seq_len ({d.seq_len}) must be >= 2")
        need(o.schedule in SCHEDULES, f"optim.schedule ({o.schedule!r}) must be one of {SCHEDULES}")
        need(o.lr > 0, f"optim.lr ({o.lr}) must be > 0")
        need(0 <= o.min_lr_ratio <= 1, f"optim.min_lr_ratio ({o.min_lr_ratio}) must be in [0, 1]")
        need(0 < o.decay_frac <= 1, f"optim.decay_frac ({o.decay_frac}) must be in (0, 1]")
        need(o.warmup_steps >= 0, f"optim.warmup_steps ({o.warmup_steps}) must be >= 0")
        need(t.precision in PRECISIONS, f"train.precision ({t.precision!r}) must be one of {PRECISIONS}")
        need(t.lb_scope in LB_SCOPES, f"train.lb_scope ({t.lb_scope!r}) must be one of {LB_SCOPES}")
        need(t.parallel in PARALLEL, f"train.parallel ({t.parallel!r}) must be one of {PARALLEL}")
        need((t.global_batch_tokens is None) != (t.global_batch_size is None),
             "give exactly one of train.global_batch_tokens and train.global_batch_size")
        need((t.max_steps is None) != (t.max_tokens is None),
             "give exactly one of train.max_steps and train.max_tokens")
        need(t.micro_batch_size >= 1, f"train.micro_batch_size ({t.micro_batch_size}) must be >= 1")
        if t.global_batch_tokens is not None:
            need(t.global_batch_tokens % d.seq_len == 0,
                 f"train.global_batch_tokens ({t.global_batch_tokens}) must be a multiple of data.seq_len "
                 f"({d.seq_len})")
        need(self.global_batch_size >= 1, "the global batch must hold at least one sequence")
        need(self.max_steps >= 1, "the run must have at least one step")
        need(t.keep >= 1, f"train.keep ({t.keep}) must be >= 1")
        need(t.max_bad_steps >= 1, f"train.max_bad_steps ({t.max_bad_steps}) must be >= 1")
        self.model_config()  # validates the model fields

    @property
    def global_batch_size(self) -> int:
        t = self.train
        return t.global_batch_size if t.global_batch_size is not None else t.global_batch_tokens // self.data.seq_len

    @property
    def max_steps(self) -> int:
        t = self.train
        if t.max_steps is not None:
            return t.max_steps
        return math.ceil(t.max_tokens / (self.global_batch_size * self.data.seq_len))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"data": DataConfig, "optim": OptimConfig, "train": RunConfig}


def from_dict(raw: dict[str, Any]) -> TrainConfig:
    """Build and validate a TrainConfig from nested dicts; unknown keys are errors."""
    unknown = set(raw) - {"model", *_SECTIONS}
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; use model, data, optim, train")
    sections = {}
    for name, cls in _SECTIONS.items():
        values = dict(raw.get(name) or {})
        names = {f.name for f in dataclasses.fields(cls)}
        bad = set(values) - names
        if bad:
            raise ValueError(f"unknown key(s) {sorted(bad)} in [{name}]; known: {sorted(names)}")
        if name == "optim" and "betas" in values:
            values["betas"] = tuple(values["betas"])
        sections[name] = cls(**values)
    model = dict(raw.get("model") or {"preset": "tiny"})
    model_fields = {f.name for f in dataclasses.fields(EmoConfig)} - {"extra"}
    bad = set(model) - model_fields - {"preset"}
    if bad:
        raise ValueError(f"unknown key(s) {sorted(bad)} in [model]; use preset or EmoConfig fields")
    cfg = TrainConfig(model=model, **sections)
    cfg.validate()
    return cfg


def _parse_value(text: str) -> Any:
    """A --set value: JSON/TOML-like literal (numbers, true/false, lists, quoted strings), else the raw string."""
    lowered = {"true": True, "false": False, "null": None, "none": None}
    if text.lower() in lowered:
        return lowered[text.lower()]
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def load_train_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML (.toml) or YAML (.yaml/.yml) file and apply `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        text = path.read_text()
        if path.suffix == ".toml":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            try:
                raw = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: invalid TOML: {exc}") from None
        elif path.suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ModuleNotFoundError:
                raise ValueError("YAML configs need PyYAML: pip install pyyaml (or use TOML)") from None
            try:
                raw = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ValueError(f"{path}: invalid YAML: {exc}") from None
        else:
            raise ValueError(f"{path}: config files must end in .toml, .yaml or .yml")
    for item in overrides:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ValueError(f"--set {item!r} must look like section.key=value (e.g. train.max_steps=100)")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ValueError(f"--set {item!r}: [{section}] is not a section")
        raw[section][name] = _parse_value(value.strip())
    return from_dict(raw)
