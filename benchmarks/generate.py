"""Generation throughput: KV cache vs recomputation, ours vs transformers' generate, full vs pruned.

Greedy decoding of `--new-tokens` tokens (EOS ignored, so every run generates the same number)
from random prompts of `--prompt-len` tokens, batch 1 and batch 8, on a checkpoint of the `small`
preset (a random one is made when --model is not given). Configurations are interleaved and
repeated; the table shows the median tokens/s (new tokens / wall seconds including the prefill).
Resident memory (max RSS of a fresh process that loads the model and generates) is measured for
the full model, the pruned 1/8 subset (`emomoe.select`, global, calibrated on the prompts) and the
adaptive-pool load (`load_pool_model`).

    python benchmarks/generate.py --model runs/emo-small/final --json gen.json
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from emomoe import EmoForCausalLM, load_model, preset, save_model
from emomoe.generate import KVCache, generate_ids, left_pad, load_pool_model, route_within, row_pools
from emomoe.generate.pool import pool_prefill_args
from emomoe.select import prune_model, select_experts


def random_checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    return save_model(EmoForCausalLM(preset("small")).eval(), path)


def prompts_for(batch: int, length: int, vocab: int, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(2, vocab, (batch, length), generator=gen).tolist()


def time_ours(model, prompts, new_tokens: int, use_cache: bool) -> float:
    start = time.perf_counter()
    out = generate_ids(model, prompts, new_tokens, use_cache=use_cache)
    assert out.new_tokens == len(prompts) * new_tokens
    return time.perf_counter() - start


def time_hf(model, prompts, new_tokens: int) -> float:
    ids = torch.tensor(prompts)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens, do_sample=False,
                         pad_token_id=0)
    assert out.shape[1] == ids.shape[1] + new_tokens
    return time.perf_counter() - start


def rss_child(mode: str, model_dir: str, new_tokens: int, prompt_len: int, keep: int, pool: int) -> None:
    """Child process: load one way, generate batch 1, print max RSS and parameter bytes as JSON."""
    base = peak_rss()
    vocab = json.loads((Path(model_dir) / "config.json").read_text())["vocab_size"]
    prompts = prompts_for(1, prompt_len, vocab)
    if mode == "pool-only":
        model, pools, _ = load_pool_model(model_dir, *left_pad(prompts, 0, torch.device("cpu")), pool=pool)
        generate_ids(model, prompts, new_tokens, pools=pools)
    else:
        model = load_model(model_dir)
        generate_ids(model, prompts, new_tokens)
    params = sum(p.nbytes for p in model.parameters())
    print(json.dumps({"max_rss": peak_rss(), "import_rss": base, "param_bytes": params}))


def peak_rss() -> int:
    """Peak resident memory of this process (VmHWM; ru_maxrss would include the parent's at fork)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure_rss(mode: str, model_dir: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", mode, "--model", str(model_dir), "--new-tokens",
           str(args.new_tokens), "--prompt-len", str(args.prompt_len), "--pool", str(args.pool),
           "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@torch.no_grad()
def continuation_loss(model, prompt: torch.Tensor, cont: torch.Tensor, pool: int | None) -> torch.Tensor:
    """Mean NLL per row [B] of `cont` [B, C] after `prompt` [B, P], routed as generation routes:
    with `pool`, inside the top-`pool` experts the prompt chooses (prefill pool, then fixed)."""
    batch, length = prompt.shape
    cache = KVCache.for_model(model, batch, length + cont.shape[1])
    doc_ids = pool_sizes = None
    if pool is not None:
        doc_ids, pool_sizes = pool_prefill_args(torch.ones_like(prompt, dtype=torch.bool), pool)
    first = model(prompt, doc_ids=doc_ids, pool_sizes=pool_sizes, cache=cache)
    pools = row_pools(first.routings, batch, length) if pool is not None else None
    with route_within(model, pools, cont.shape[1]):
        rest = model(cont, cache=cache).logits
    logits = torch.cat([first.logits[:, -1:], rest[:, :-1]], 1).float()  # [B, C, V]
    return F.cross_entropy(logits.transpose(1, 2), cont, reduction="none").mean(-1)


def compare_pools(args) -> None:
    """Adaptive pool (from each document's prompt) vs a calibrated subset (per domain) vs all experts."""
    from emomoe.data.tokenizer import Tokenizer

    model = load_model(args.model)
    tok = Tokenizer.from_file(args.model)
    by_domain_val, by_domain_cal = {}, {}
    for path, store, limit in ((args.compare_pools, by_domain_val, args.docs), (args.calib, by_domain_cal, 4)):
        for line in Path(path).read_text().splitlines():
            rec = json.loads(line)
            ids = tok.encode(rec["text"])
            need = args.prompt_len + args.cont_len if store is by_domain_val else 1
            bucket = store.setdefault(rec["domain"], [])
            if len(ids) >= need and len(bucket) < limit:
                bucket.append(ids[:need] if store is by_domain_val else ids[:256])
    experts, shared = model.config.num_experts, model.config.num_shared_experts
    fractions = [(f"{experts >> s}/{experts}", (experts >> s) - shared) for s in (3, 2, 1)]  # K = 1/8, 1/4, 1/2
    rows = []
    for domain in sorted(by_domain_val):
        docs = torch.tensor(by_domain_val[domain])
        prompt, cont = docs[:, :args.prompt_len], docs[:, args.prompt_len:]
        row = {"domain": domain, "docs": len(docs), "full": continuation_loss(model, prompt, cont, None).mean().item()}
        for name, m in fractions:
            row[f"pool {name}"] = continuation_loss(model, prompt, cont, m).mean().item()
            sel = select_experts(model, by_domain_cal[domain], keep=m + 1, method="global")
            sel.mask_model(model)
            row[f"select {name}"] = continuation_loss(model, prompt, cont, None).mean().item()
            for layer in model.model.layers:
                layer.mlp.gate.allowed = None
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    keys = [k for k in rows[0] if k not in ("domain", "docs")]
    print(f"{'domain':<16}" + "".join(f"{k:>13}" for k in keys))
    for row in rows:
        print(f"{row['domain']:<16}" + "".join(f"{row[k]:>13.3f}" for k in keys))
    mean_full = statistics.mean(r["full"] for r in rows)
    print(f"{'mean loss':<16}" + "".join(f"{statistics.mean(r[k] for r in rows):>13.3f}" for k in keys))
    print(f"{'mean increase':<16}" + "".join(
        f"{100 * statistics.mean(r[k] / r['full'] - 1 for r in rows):>12.1f}%" for k in keys))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "mean_full": mean_full, "prompt_len": args.prompt_len,
                                         "cont_len": args.cont_len}, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="checkpoint directory (default: a random `small` checkpoint)")
    p.add_argument("--new-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--keep", type=int, default=4, help="experts per layer of the pruned subset (4 of 32 = 1/8)")
    p.add_argument("--pool", type=int, default=3, help="routed pool size of the pool-only load (3 + shared = 1/8)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1: small decode steps are "
                   "latency-bound; extra threads only wait on a shared CPU)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers even when installed")
    p.add_argument("--json", type=Path)
    p.add_argument("--compare-pools", type=Path, metavar="VAL_JSONL",
                   help="instead of timing: continuation loss per domain with the prompt's adaptive pool vs a "
                   "subset calibrated per domain (emomoe.select, 4 documents of --calib) vs all experts")
    p.add_argument("--calib", type=Path, help="calibration JSONL for --compare-pools (id, domain, text)")
    p.add_argument("--docs", type=int, default=24, help="validation documents per domain (--compare-pools)")
    p.add_argument("--cont-len", type=int, default=64, help="continuation tokens scored (--compare-pools)")
    p.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.rss_child:
        return rss_child(args.rss_child, str(args.model), args.new_tokens, args.prompt_len, args.keep, args.pool)
    if args.compare_pools:
        return compare_pools(args)

    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model or random_checkpoint(Path(tmp.name) / "small")
    model = load_model(model_dir)
    vocab = model.config.vocab_size
    calib = prompts_for(8, args.prompt_len, vocab, seed=1)
    selection = select_experts(model, calib, keep=args.keep, method="global")
    pruned = prune_model(model, selection)
    pruned_dir = save_model(pruned, Path(tmp.name) / "pruned")
    hf = None
    if not args.no_hf:
        try:
            from transformers import AutoModelForCausalLM

            import emomoe.hf  # noqa: F401

            hf = AutoModelForCausalLM.from_pretrained(model_dir)
            hf.generation_config.eos_token_id = None
        except ImportError:
            print("transformers not installed: skipping the transformers rows", file=sys.stderr)

    configs = {"ours, KV cache": lambda pr, n: time_ours(model, pr, n, True),
               "ours, no cache (recompute)": lambda pr, n: time_ours(model, pr, n, False),
               "pruned 1/8, KV cache": lambda pr, n: time_ours(pruned, pr, n, True)}
    if hf is not None:
        configs["transformers generate (same ckpt)"] = lambda pr, n: time_hf(hf, pr, n)
    times: dict[tuple[str, int], list[float]] = {}
    for batch in args.batches:
        prompts = prompts_for(batch, args.prompt_len, vocab)
        for fn in configs.values():  # warm-up: kernel selection, allocator
            fn(prompts, 4)
        for _ in range(args.repeats):
            for name, fn in configs.items():
                times.setdefault((name, batch), []).append(fn(prompts, args.new_tokens))
    rows = []
    for (name, batch), values in times.items():
        seconds = statistics.median(values)
        rows.append({"config": name, "batch": batch, "seconds": seconds,
                     "tokens_per_s": batch * args.new_tokens / seconds, "runs": values})
    print(f"model {model_dir}: {model.config.num_hidden_layers} layers, {model.config.num_experts} experts; "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens, greedy, {torch.get_num_threads()} threads, "
          f"median of {args.repeats}")
    print(f"{'configuration':<36} {'batch':>5} {'tokens/s':>10} {'vs cached':>10}")
    for row in rows:
        ref = next(r for r in rows if r["config"] == "ours, KV cache" and r["batch"] == row["batch"])
        row["speedup_of_cache"] = row["seconds"] / ref["seconds"]
        print(f"{row['config']:<36} {row['batch']:>5} {row['tokens_per_s']:>10.1f} "
              f"{ref['tokens_per_s'] / row['tokens_per_s']:>9.2f}x")
    memory = {mode: measure_rss(mode, pruned_dir if mode == "pruned" else model_dir, args)
              for mode in ("full", "pruned", "pool-only")}
    print(f"{'memory (batch 1, fresh process)':<36} {'params':>10} {'max RSS':>10}")
    for mode, m in memory.items():
        print(f"{mode:<36} {m['param_bytes'] / 2**20:>8.1f}MiB {m['max_rss'] / 2**20:>8.1f}MiB")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "memory": memory, "new_tokens": args.new_tokens,
                                         "prompt_len": args.prompt_len, "threads": torch.get_num_threads(),
                                         "kept_experts": selection.kept}, indent=2) + "\n")
    tmp.cleanup()


if __name__ == "__main__":
    main()
