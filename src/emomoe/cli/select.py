"""`emomoe select`: choose K experts per layer from calibration text and write the pruned checkpoint."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

METHOD_NAMES = ("global", "layerwise", "frequency", "easy-ep", "random")  # = emomoe.select.METHODS
DTYPES = ("float32", "bfloat16", "float16", "stored")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "select",
        help="keep K experts per layer chosen on calibration text; write the pruned checkpoint",
        description="Selective expert use (EMO): score every expert on calibration text, keep the K best "
        "per layer (K counts the always-kept shared expert) and write a pruned Hugging Face checkpoint with "
        "selection.json. The checkpoint is streamed layer by layer, never loaded whole.",
        epilog="example: emomoe select --model runs/emo-small/final --calib ../shared/corpus/val.jsonl "
        "--keep 8 --method global --out pruned/",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (with tokenizer.json)")
    p.add_argument("--calib", nargs="+", default=[], metavar="FILE",
                   help="calibration files: JSONL (one example per record) or plain text (one per paragraph)")
    p.add_argument("--out", required=True, help="output directory for the pruned checkpoint")
    keep = p.add_mutually_exclusive_group(required=True)
    keep.add_argument("--keep", type=int, help="experts kept per layer, counting the shared expert(s)")
    keep.add_argument("--keep-frac", type=float, help="fraction of each layer's experts to keep, e.g. 0.125")
    keep.add_argument("--keep-schedule", help="K per layer: a comma list (8,8,16,16) or a JSON file "
                      "holding a list or {\"keep\": [...]}")
    p.add_argument("--method", default="global", choices=METHOD_NAMES, help="scoring method (default global)")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default text)")
    p.add_argument("--shots", type=int, default=1,
                   help="examples joined into one few-shot prompt (default 1)")
    p.add_argument("--limit", type=int, help="use only the first N calibration examples")
    p.add_argument("--max-length", type=int, help="truncate each prompt to N tokens (default: the model's "
                   "max_position_embeddings)")
    p.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per calibration batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the random method")
    p.add_argument("--dtype", default="float32", choices=DTYPES,
                   help="compute dtype of the calibration forward (default float32)")
    p.add_argument("--device", default="cpu", help="compute device, e.g. cuda (default cpu)")
    p.add_argument("--max-shard-size", default="500MB", help="largest output shard (default 500MB)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.set_defaults(func=run)


def parse_schedule(text: str) -> list[int]:
    """K per layer from '8,8,16' or a JSON file holding a list or {"keep": [...]}."""
    path = Path(text)
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"keep schedule {path} is not valid JSON: {exc}") from None
        data = data.get("keep") if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(k, int) for k in data):
            raise ValueError(f"keep schedule {path} must hold a list of integers or {{\"keep\": [...]}}")
        return data
    try:
        return [int(k) for k in text.split(",")]
    except ValueError:
        raise ValueError(f"--keep-schedule {text!r} is neither a comma list of integers nor a JSON "
                         "file") from None


def run(args: argparse.Namespace) -> int:
    import torch

    from emomoe.io.checkpoint import read_config
    from emomoe.select import load_calibration, load_tokenizer, prune, resolve_keep, select_experts
    from emomoe.select.prune import check_out_dir

    start = time.perf_counter()
    # every user error is raised here, before any work and before anything is written
    check_out_dir(args.out, args.overwrite, args.model)
    config = read_config(args.model)
    schedule = parse_schedule(args.keep_schedule) if args.keep_schedule else None
    keep = schedule if schedule is not None else args.keep
    ks = resolve_keep(config, keep, args.keep_frac)
    if not args.calib and args.method != "random":
        raise ValueError(f"--calib is required for method {args.method!r}")
    tokenizer = load_tokenizer(args.model)  # the pruned checkpoint must carry it too
    calib = None
    if args.calib:
        calib = load_calibration(args.calib, tokenizer, args.text_field, args.shots, args.limit,
                                 args.max_length or config.max_position_embeddings)
    dtype = None if args.dtype == "stored" else getattr(torch, args.dtype)

    print(f"selecting {args.method}: keep {_compact(ks)} of {_compact(selection_experts(config))} experts "
          f"per layer" + (f" on {calib.num_tokens:,} calibration tokens ({len(calib.sequences)} prompts)"
                          if calib else ""))
    selection = select_experts(args.model, calib, ks, args.method, batch_tokens=args.batch_tokens,
                               seed=args.seed, dtype=dtype, device=args.device)
    print(f"selection took {selection.seconds:.1f} s")
    report = prune(args.model, selection, args.out, overwrite=args.overwrite,
                   max_shard_size=args.max_shard_size)
    for line in report.lines():
        print(line)
    print(f"total time {time.perf_counter() - start:.1f} s")
    return 0


def selection_experts(config) -> list[int]:
    return [config.experts_in_layer(i) for i in range(config.num_hidden_layers)]


def _compact(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else ",".join(map(str, values))
