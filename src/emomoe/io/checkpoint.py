"""Hugging Face checkpoint I/O in the released EMO format (EMO.md section 6).

A checkpoint directory holds `config.json` and either `model.safetensors` or shards
`model-0000i-of-0000n.safetensors` with `model.safetensors.index.json`. Experts are stored one
tensor per expert (`mlp.experts.{j}.gate_proj.weight`); the model stacks them per layer.
Reading is memory-mapped (safetensors); nothing from a checkpoint is ever executed. Writing goes
to a temporary directory beside the target that is renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from emomoe.config import EmoConfig
from emomoe.model import EmoForCausalLM

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_EXPERT_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(gate_proj|up_proj|down_proj)$")


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, malformed or inconsistent with its config."""


# ---- reading ----------------------------------------------------------------------------

def read_config(path: str | os.PathLike) -> EmoConfig:
    """The EmoConfig of a checkpoint directory (raises CheckpointError with the reason)."""
    root = Path(path)
    if not root.exists():
        raise CheckpointError(f"checkpoint directory {root} does not exist")
    if not root.is_dir():
        raise CheckpointError(f"{root} is not a directory (expected a checkpoint directory)")
    cfg_path = root / CONFIG_FILE
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path} is missing: not a Hugging Face checkpoint directory")
    try:
        data = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{cfg_path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{cfg_path} must hold a JSON object")
    try:
        return EmoConfig.from_hf_dict(data)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: {exc}") from None


def tensor_files(path: str | os.PathLike) -> dict[str, Path]:
    """Map of tensor name -> safetensors file, from the index or the single file's header."""
    root = Path(path)
    index = root / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index} is malformed (needs a 'weight_map' object): {exc}") from None
        files = {name: root / fname for name, fname in weight_map.items()}
        for fname in sorted(set(files.values())):
            if not fname.is_file():
                raise CheckpointError(f"shard {fname} named in {index.name} is missing")
        return files
    single = root / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"no {SINGLE_FILE} or {INDEX_FILE} in {root}")
    with _open(single) as f:
        return {name: single for name in f.keys()}


def _open(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {file}: {exc} (truncated or not a safetensors file?)") from None


def tensor_shapes(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], str]]:
    """(shape, dtype) of every stored tensor, read from the headers only (no tensor data)."""
    by_file: dict[Path, list[str]] = {}
    for name, file in tensor_files(path).items():
        by_file.setdefault(file, []).append(name)
    out = {}
    for file, names in by_file.items():
        with _open(file) as f:
            present = set(f.keys())
            for name in names:
                if name not in present:
                    raise CheckpointError(f"tensor {name} is listed for {file.name} but not stored there")
                piece = f.get_slice(name)
                out[name] = (tuple(piece.get_shape()), piece.get_dtype())
    return out


def expected_shapes(config: EmoConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the released format with the shape `config` implies."""
    d, h, v = config.hidden_size, config.intermediate_size, config.vocab_size
    q_out = config.num_attention_heads * config.head_dim
    kv_out = config.num_key_value_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (v, d)
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes[p + "pre_attention_layernorm.weight"] = (d,)
        shapes[p + "pre_feedforward_layernorm.weight"] = (d,)
        for proj, out_dim in (("q", q_out), ("k", kv_out), ("v", kv_out)):
            shapes[p + f"self_attn.{proj}_proj.weight"] = (out_dim, d)
            if config.attention_bias:
                shapes[p + f"self_attn.{proj}_proj.bias"] = (out_dim,)
        shapes[p + "self_attn.o_proj.weight"] = (d, q_out)
        if config.attention_bias:
            shapes[p + "self_attn.o_proj.bias"] = (d,)
        experts = config.experts_in_layer(i)
        shapes[p + "mlp.gate.weight"] = (experts, d)
        for j in range(experts):
            shapes[p + f"mlp.experts.{j}.gate_proj.weight"] = (h, d)
            shapes[p + f"mlp.experts.{j}.up_proj.weight"] = (h, d)
            shapes[p + f"mlp.experts.{j}.down_proj.weight"] = (d, h)
    return shapes


def check_tensors(config: EmoConfig, stored: dict[str, tuple[tuple[int, ...], str]], where: str) -> None:
    """Raise CheckpointError if the stored tensors contradict the config (missing, extra, shape)."""
    expected = expected_shapes(config)
    for name, shape in expected.items():
        if name not in stored:
            raise CheckpointError(f"{where}: tensor {name} is missing, but config.json implies it "
                                  f"(shape {list(shape)})")
        if stored[name][0] != shape:
            raise CheckpointError(f"{where}: tensor {name} has shape {list(stored[name][0])} but config.json "
                                  f"implies {list(shape)}: the config contradicts the weights")
    extra = sorted(set(stored) - set(expected))
    if extra:
        raise CheckpointError(f"{where}: {len(extra)} tensor(s) not described by config.json, e.g. {extra[0]} "
                              "(wrong num_experts_per_layer or num_hidden_layers?)")


def load_model(path: str | os.PathLike, dtype: torch.dtype | None = None,
               device: str | torch.device = "cpu") -> EmoForCausalLM:
    """Load a checkpoint directory into an EmoForCausalLM in eval mode.

    dtype: None keeps the stored dtype (of the embedding); else the parameters are cast.
    Raises CheckpointError for a missing directory or file, a truncated safetensors file, or
    tensors that contradict config.json.
    """
    config = read_config(path)
    files = tensor_files(path)
    stored = tensor_shapes(path)
    check_tensors(config, stored, str(path))
    with torch.device("meta"):
        model = EmoForCausalLM(config)
    state: dict[str, torch.Tensor] = {}
    handles = {file: _open(file) for file in sorted(set(files.values()))}
    try:
        def get(name: str) -> torch.Tensor:
            tensor = handles[files[name]].get_tensor(name)
            return tensor if dtype is None else tensor.to(dtype)

        for name in model.state_dict():
            match = _EXPERT_KEY.match(name)
            if match:
                layer, proj = int(match.group(1)), match.group(2)
                count = config.experts_in_layer(layer)
                state[name] = torch.stack([get(f"model.layers.{layer}.mlp.experts.{j}.{proj}.weight")
                                           for j in range(count)])
            elif name == "lm_head.weight" and config.tie_word_embeddings:
                continue
            else:
                state[name] = get(name)
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    model.load_state_dict(state, strict=not config.tie_word_embeddings, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device).eval()


# ---- writing ----------------------------------------------------------------------------

def hf_tensors(model: EmoForCausalLM) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs in the released layout: one tensor per expert, in layer order."""
    for name, tensor in model.state_dict().items():
        match = _EXPERT_KEY.match(name)
        if match:
            layer, proj = match.groups()
            for j, piece in enumerate(tensor.unbind(0)):
                yield f"model.layers.{layer}.mlp.experts.{j}.{proj}.weight", piece
        elif name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        else:
            yield name, tensor


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string like '5GB', '500MB', '2GiB'."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*", size, flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size like '5GB' or an integer")
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    return int(float(match.group(1)) * units[(match.group(2) or "").upper()])


def write_checkpoint(path: str | os.PathLike, config: EmoConfig,
                     tensors: Iterator[tuple[str, torch.Tensor]], max_shard_size: int | str = "5GB",
                     dtype: torch.dtype | None = None, extra_files: dict[str, Path] | None = None) -> Path:
    """Write config.json and safetensors shards from a stream of (name, tensor), atomically.

    Tensors are buffered one shard at a time, so the stream may come from memory-mapped
    files (streaming pruning). `extra_files` (target name -> source path) are copied in too.
    """
    target = Path(path)
    limit = parse_size(max_shard_size)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        shard_names: list[list[str]] = []
        weight_map: dict[str, str] = {}
        total = 0
        buffer: dict[str, torch.Tensor] = {}
        buffered = 0

        def flush() -> None:
            nonlocal buffer, buffered
            if buffer:
                save_file(buffer, str(tmp / f"shard-{len(shard_names)}.tmp"), metadata={"format": "pt"})
                shard_names.append(list(buffer))
                buffer, buffered = {}, 0

        torch_dtype = None
        for name, tensor in tensors:
            tensor = tensor.detach().to("cpu", dtype=dtype or tensor.dtype).contiguous()
            torch_dtype = torch_dtype or str(tensor.dtype).removeprefix("torch.")
            size = tensor.numel() * tensor.element_size()
            if buffer and buffered + size > limit:
                flush()
            buffer[name] = tensor.clone() if tensor.untyped_storage().nbytes() != size else tensor
            buffered += size
            total += size
        flush()
        count = len(shard_names)
        for i, names in enumerate(shard_names):
            fname = SINGLE_FILE if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            os.replace(tmp / f"shard-{i}.tmp", tmp / fname)
            weight_map.update(dict.fromkeys(names, fname))
        if count > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        hf_config = config.to_hf_dict()
        hf_config["torch_dtype"] = torch_dtype or "float32"
        (tmp / CONFIG_FILE).write_text(json.dumps(hf_config, indent=2) + "\n")
        for name, source in (extra_files or {}).items():
            shutil.copyfile(source, tmp / name)
        _replace_dir(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _replace_dir(tmp: Path, target: Path) -> None:
    """Move tmp to target; an existing target is swapped out only after tmp is complete."""
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def save_model(model: EmoForCausalLM, path: str | os.PathLike, max_shard_size: int | str = "5GB",
               dtype: torch.dtype | None = None, extra_files: dict[str, Path] | None = None) -> Path:
    """Write `model` as a Hugging Face EMO checkpoint directory (config.json + safetensors).

    Shards of at most `max_shard_size` bytes with `model.safetensors.index.json` when the
    weights do not fit one; `dtype` casts on the way out. Returns the directory.
    """
    return write_checkpoint(path, model.config, hf_tensors(model), max_shard_size, dtype, extra_files)
