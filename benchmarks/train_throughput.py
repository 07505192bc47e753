"""Training throughput (tokens/s) and MFU of the `small` preset, EMO and standard router, fp32 and bf16.

MFU is measured against the matmul peak this machine reaches in the same run (a square matmul
of the same dtype), so the ratio is meaningful on any CPU or GPU. Uses synthetic packed batches
(random tokens, documents of random length) and the real training step (`train_step`: global LB,
pools, AdamW).

    python benchmarks/train_throughput.py                     # small preset, seq 256, batch 16, 6 steps
    python benchmarks/train_throughput.py --preset tiny --steps 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from emomoe import EmoForCausalLM, preset
from emomoe.train import config as train_config
from emomoe.train.distributed import Dist
from emomoe.train.metrics import flops_per_token, measure_matmul_peak
from emomoe.train.optim import build_optimizer
from emomoe.train.step import train_step


def synthetic_batch(batch: int, seq_len: int, vocab: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Packed rows of documents with mean length ~seq_len/4; labels -100 at document ends."""
    starts = torch.rand(batch, seq_len, generator=gen) < 4 / seq_len
    starts[:, 0] = False
    doc_ids = starts.long().cumsum(-1)
    ids = torch.randint(2, vocab, (batch, seq_len), generator=gen)
    labels = torch.roll(ids, -1, dims=1)
    labels[:, -1] = -100
    labels[torch.roll(starts, -1, dims=1)] = -100
    return {"input_ids": ids, "labels": labels, "doc_ids": doc_ids, "domain_ids": torch.zeros_like(ids)}


def measure(name: str, router: str, precision: str, args, gen: torch.Generator) -> float:
    cfg = train_config.from_dict({
        "model": {"preset": args.preset, "router": router},
        "data": {"train": "-", "seq_len": args.seq_len},
        "train": {"global_batch_size": args.batch, "micro_batch_size": args.micro, "max_steps": args.steps,
                  "precision": precision}})
    torch.manual_seed(0)
    model = EmoForCausalLM(cfg.model_config()).train()
    opt = build_optimizer(model, cfg.optim)
    vocab = model.config.vocab_size
    times = []
    for step in range(args.steps + 1):  # the first step warms up
        micro = [synthetic_batch(args.micro, args.seq_len, vocab, gen) for _ in range(args.batch // args.micro)]
        start = time.perf_counter()
        train_step(model, micro, step * args.batch, step, cfg, Dist(), opt, 1e-3)
        if step:
            times.append(time.perf_counter() - start)
    return args.batch * args.seq_len / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    ap.add_argument("--micro", type=int, default=16, help="sequences per micro-batch")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(0)
    device = torch.device("cpu")
    peaks = {p: measure_matmul_peak(device, dt, seconds=1.0)
             for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    config = preset(args.preset)
    fpt = flops_per_token(config, args.seq_len)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads; preset "
          f"{args.preset}, seq {args.seq_len}, {args.batch} sequences/step ({args.micro} per micro-batch), "
          f"median of {args.steps} steps; {fpt / 1e6:.1f} MFLOP/token")
    print(f"measured matmul peak: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s\n")
    print("| router | precision | tokens/s | MFU | vs standard fp32 |")
    print("|---|---|---|---|---|")
    results = {"args": vars(args), "peak_flops": peaks, "flops_per_token": fpt, "runs": []}
    base = None
    for precision in ("fp32", "bf16"):
        for router in ("standard", "emo"):
            tps = measure(f"{router}-{precision}", router, precision, args, gen)
            base = base or tps
            mfu = tps * fpt / peaks[precision]
            results["runs"].append({"router": router, "precision": precision, "tokens_per_s": tps, "mfu": mfu})
            print(f"| {router} | {precision} | {tps:,.0f} | {mfu * 100:.1f}% | {tps / base:.2f}x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
