"""`emomoe info MODEL_DIR|PRESET`: config, parameter counts and experts per layer, without loading weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="show a checkpoint's (or preset's) config, parameter counts and experts per layer",
        description="Show the config, total/active parameter counts and experts per layer of a Hugging "
        "Face-format EMO checkpoint directory (read from config.json and the safetensors headers only; "
        "no weights are loaded) or of a preset name (tiny, small, emo-1b14b, stdmoe-1b14b).",
        epilog="example: emomoe info runs/emo-small/final    |    emomoe info emo-1b14b --json",
    )
    p.add_argument("model", help="checkpoint directory or preset name")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=run)


def describe(model: str) -> dict:
    """Everything `info` reports, as a dict."""
    from emomoe.config import PRESETS, count_parameters, preset
    from emomoe.io.checkpoint import check_tensors, read_config, tensor_shapes

    path = Path(model)
    if not path.exists() and model in PRESETS:
        config, source, stored = preset(model), f"preset {model}", None
    else:
        config, source = read_config(path), str(path)
        shapes = tensor_shapes(path)
        check_tensors(config, shapes, str(path))
        numel = sum(_prod(shape) for shape, _ in shapes.values())
        dtypes = sorted({dtype for _, dtype in shapes.values()})
        stored = {"tensors": len(shapes), "parameters": numel, "dtypes": dtypes}
    experts = [config.experts_in_layer(i) for i in range(config.num_hidden_layers)]
    shared = [config.shared_in_layer(i) for i in range(config.num_hidden_layers)]
    return {
        "source": source,
        "config": {k: v for k, v in config.to_hf_dict().items() if k != "extra"},
        "parameters": count_parameters(config),
        "experts_per_layer": experts,
        "shared_experts_per_layer": shared,
        "stored": stored,
    }


def _prod(shape) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def _human(n: int) -> str:
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def run(args: argparse.Namespace) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    cfg, params = info["config"], info["parameters"]
    print(f"model: {info['source']}")
    router = cfg["router"]
    if router == "emo":
        router += f" (pool {cfg['pool_min']}..{cfg['pool_max']}, eval pool {cfg['pool_eval']})"
    rows = [
        ("router", router),
        ("layers", cfg["num_hidden_layers"]),
        ("hidden / expert hidden", f"{cfg['hidden_size']} / {cfg['intermediate_size']}"),
        ("heads / kv heads", f"{cfg['num_attention_heads']} / {cfg['num_key_value_heads']}"),
        ("vocab", cfg["vocab_size"]),
        ("experts per token (incl. shared)", cfg["num_experts_per_tok"]),
        ("experts per layer", _compact(info["experts_per_layer"])),
        ("shared experts per layer", _compact(info["shared_experts_per_layer"])),
        ("parameters total", f"{_human(params['total'])} ({params['total']:,})"),
        ("parameters active per token", f"{_human(params['active'])} ({params['active']:,})"),
        ("active non-embedding", f"{_human(params['active_non_embedding'])} "
                                 f"({params['active_non_embedding']:,})"),
    ]
    if info["stored"]:
        st = info["stored"]
        rows.append(("stored tensors", f"{st['tensors']} ({_human(st['parameters'])} params, "
                                       f"{', '.join(st['dtypes'])})"))
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    return 0


def _compact(values: list[int]) -> str:
    return f"{values[0]} (all layers)" if len(set(values)) == 1 else " ".join(map(str, values))
