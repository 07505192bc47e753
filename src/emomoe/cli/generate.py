"""`emomoe generate --model DIR --prompt TEXT`: continue text with a checkpoint, streaming to the terminal."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text from a checkpoint (KV cache, sampling, stop strings, adaptive expert pools)",
        description="Continue one or more prompts with a Hugging Face-format EMO checkpoint (full or pruned). "
        "A single prompt is streamed to stdout as it is generated; several are generated as one batch and "
        "printed at the end. Statistics go to stderr.",
        epilog="examples:  emomoe generate --model runs/emo-small/final --prompt 'The history of' "
        "--max-new-tokens 64  |  ... --temperature 0.8 --top-p 0.95 --seed 1  |  ... --pool 8 --load-pool-only",
    )
    p.add_argument("--model", required=True, help="checkpoint directory (config.json + safetensors)")
    p.add_argument("--prompt", action="append", default=[], help="prompt text (repeat for a batch)")
    p.add_argument("--prompt-file", type=Path, help="a file with one prompt per line (added to --prompt)")
    p.add_argument("--tokenizer", help="tokenizer.json or its directory (default: the model directory)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens to generate at most (default 128)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    p.add_argument("--seed", type=int, help="seed for sampling (reproducible output)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable); cut from the output")
    p.add_argument("--pool", type=int, help="adaptive pool: route inside the top-m routed experts per layer "
                   "that the prompt chooses (as EMO training does per document)")
    p.add_argument("--load-pool-only", action="store_true",
                   help="with --pool: read only the pool's experts from the checkpoint (prints a memory report)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="compute dtype (default: stored)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole sequence each step (slow)")
    p.add_argument("--no-stream", action="store_true", help="print a single prompt's output at the end")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from emomoe.cli import UserError
    from emomoe.data.tokenizer import Tokenizer
    from emomoe.generate import generate, left_pad, load_pool_model
    from emomoe.io.checkpoint import load_model, read_config

    prompts = list(args.prompt)
    if args.prompt_file is not None:
        if not args.prompt_file.is_file():
            raise UserError(f"prompt file {args.prompt_file} does not exist")
        prompts += [line for line in args.prompt_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise UserError("no prompt given: pass --prompt TEXT (or --prompt-file FILE)")
    if args.load_pool_only and args.pool is None:
        raise UserError("--load-pool-only needs --pool M")
    read_config(args.model)  # a clear error for a missing or malformed checkpoint before anything else
    tok_path = Path(args.tokenizer) if args.tokenizer else Path(args.model)
    if not (tok_path / "tokenizer.json").is_file() and not tok_path.is_file():
        raise UserError(f"no tokenizer.json in {tok_path}: pass --tokenizer PATH")
    tokenizer = Tokenizer.from_file(tok_path)
    dtype = getattr(torch, args.dtype) if args.dtype else None

    pools = None
    if args.load_pool_only:
        encoded = [tokenizer.encode(p) for p in prompts]
        if any(not ids for ids in encoded):
            raise UserError("a prompt is empty: nothing to continue")
        ids, valid = left_pad(encoded, tokenizer.pad_id, torch.device("cpu"))
        model, pools, report = load_pool_model(args.model, ids, valid, args.pool, dtype)
        print("\n".join(report.lines()), file=sys.stderr)
    else:
        model = load_model(args.model, dtype=dtype)

    streaming = len(prompts) == 1 and not args.no_stream
    echoed = []  # the prompt is echoed with the first piece, after every check has passed

    def on_text(row: int, piece: str) -> None:
        if not echoed:
            sys.stdout.write(prompts[0])
            echoed.append(True)
        sys.stdout.write(piece)
        sys.stdout.flush()

    out = generate(model, tokenizer, prompts, args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                   args.seed, args.stop, pool=None if pools is not None else args.pool, pools=pools,
                   on_text=on_text if streaming else None, use_cache=not args.no_cache)
    if streaming:
        sys.stdout.write(("" if echoed else prompts[0]) + "\n")
    else:
        for i, (prompt, text) in enumerate(zip(prompts, out.texts)):
            header = f"=== {i}: " if len(prompts) > 1 else ""
            print(f"{header}{prompt}{text}" if not header else f"{header}{prompt!r}\n{prompt}{text}")
    reasons = ", ".join(sorted(set(out.finish_reasons)))
    print(f"[{out.new_tokens} tokens in {out.prefill_seconds + out.decode_seconds:.2f} s, "
          f"{out.tokens_per_second:.1f} tokens/s; prefill {out.prefill_seconds * 1000:.0f} ms; "
          f"finished: {reasons}]", file=sys.stderr)
    return 0
