"""Benchmark: `emomoe prepare` throughput against a naive loop, and packed-loader throughput.

    python benchmarks/prepare.py --data /work/shared/corpus/train.jsonl --out runs/bench_prepare

Trains a tokenizer (or takes --tokenizer), then tokenizes the corpus three ways in one run: a naive
single-process loop that encodes one document at a time, and `prepare` with 1 and 2 worker
processes; then times `PackedLoader.next_step()`. Prints one table of ratios and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from emomoe.data import PackedLoader, Tokenizer, TokenShards, prepare, token_dtype, train_tokenizer


def naive(data: Path, tok: Tokenizer, out: Path) -> tuple[int, int]:
    """The obvious loop: parse a line, encode it, append EOS, write the tokens. (docs, tokens)."""
    dtype = token_dtype(tok.vocab_size)
    docs = tokens = 0
    with open(data, encoding="utf-8") as f, open(out, "wb") as w:
        for line in f:
            ids = tok.encode(json.loads(line)["text"]) + [tok.eos_id]
            w.write(np.asarray(ids, dtype=dtype).tobytes())
            docs, tokens = docs + 1, tokens + len(ids)
    return docs, tokens


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default="/work/shared/corpus/train.jsonl", help="JSONL corpus")
    parser.add_argument("--out", default="runs/bench_prepare", help="working directory")
    parser.add_argument("--tokenizer", default=None, help="existing tokenizer.json (default: train one)")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--global-batch", type=int, default=32)
    parser.add_argument("--loader-steps", type=int, default=500)
    parser.add_argument("--reps", type=int, default=2, help="repeat each timing, keep the fastest")
    parser.add_argument("--json", default=None, help="results file (default: OUT/prepare.json)")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # naive loop and workers: one thread each
    out, data = Path(args.out), Path(args.data)
    out.mkdir(parents=True, exist_ok=True)

    results: dict = {
        "command": "python " + " ".join(sys.argv),
        "data": str(data),
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.tokenizer:
        tok = Tokenizer.from_file(args.tokenizer)
    else:
        t0 = time.perf_counter()
        tok = train_tokenizer(files=[data], vocab_size=args.vocab_size)
        results["tokenizer_train_s"] = time.perf_counter() - t0
        tok.save(out / "tok")
    results["vocab_size"] = tok.vocab_size

    times: dict[str, list[float]] = {}
    for _ in range(args.reps):  # interleaved, so slow spells of a shared machine hit all methods
        t0 = time.perf_counter()
        docs, tokens = naive(data, tok, out / "naive.bin")
        times.setdefault("naive loop, 1 process, 1 doc at a time", []).append(time.perf_counter() - t0)
        for workers in (1, 2):
            res = prepare([data], tok, out / f"prepared_w{workers}", workers=workers, force=True)
            assert res.manifest["num_docs"] == docs and res.manifest["num_tokens"] == tokens
            times.setdefault(f"emomoe prepare --workers {workers}", []).append(res.seconds)
    rows = [(method, min(ts), tokens) for method, ts in times.items()]

    shards = TokenShards(out / "prepared_w1")
    loader = PackedLoader(shards, args.seq_len, args.global_batch, args.global_batch // 4, seed=0)
    loader.next_step()
    loader_s = float("inf")
    for _ in range(args.reps):
        t0 = time.perf_counter()
        for _ in range(args.loader_steps):
            loader.next_step()
        loader_s = min(loader_s, time.perf_counter() - t0)
    seqs = args.loader_steps * args.global_batch

    base = rows[0][2] / rows[0][1]
    results["prepare"] = [
        {"method": m, "seconds": s, "tokens": n, "tokens_per_s": n / s, "ratio": n / s / base}
        for m, s, n in rows
    ]
    results["docs"], results["tokens"] = docs, tokens
    results["loader"] = {
        "seq_len": args.seq_len,
        "global_batch": args.global_batch,
        "sequences": seqs,
        "seconds": loader_s,
        "sequences_per_s": seqs / loader_s,
        "tokens_per_s": seqs * args.seq_len / loader_s,
    }
    print(f"{results['date']}: {results['command']}")
    print(f"{docs} documents, {tokens} tokens, vocab {tok.vocab_size}, {os.cpu_count()} CPUs")
    print(f"| {'method':<40} | {'seconds':>8} | {'tokens/s':>10} | {'vs naive':>8} |")
    print(f"|{'-' * 42}|{'-' * 9}:|{'-' * 11}:|{'-' * 9}:|")
    for r in results["prepare"]:
        print(
            f"| {r['method']:<40} | {r['seconds']:>8.2f} | {r['tokens_per_s']:>10,.0f} "
            f"| {r['ratio']:>7.2f}x |"
        )
    lo = results["loader"]
    print(
        f"PackedLoader.next_step (T={lo['seq_len']}, global batch {lo['global_batch']}): "
        f"{lo['sequences_per_s']:,.0f} sequences/s = {lo['tokens_per_s']:,.0f} tokens/s"
    )
    path = Path(args.json) if args.json else out / "prepare.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
