"""MoE layer forward+backward: ours vs a per-expert loop (transformers style) vs a dense SwiGLU.

Also the EMO router (document pools) against the standard router at 1, 16 and 64 documents per
batch. Every variant is timed in the same run, interleaved, and reported as a median with ratios.

    python benchmarks/moe_layer.py                 # E=64, k=8 (1 shared), d=512, h=256, 8192 tokens
    python benchmarks/moe_layer.py --tokens 2048 --reps 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from emomoe.model.moe import MoE
from emomoe.model.router import segment_ids


class LoopMoE(nn.Module):
    """The transformers-style reference: one module per expert, a Python loop over ALL experts."""

    def __init__(self, ours: MoE) -> None:
        super().__init__()
        self.gate = ours.gate
        ex = ours.experts
        self.experts = nn.ModuleList()
        for e in range(ex.num_experts):
            mlp = nn.ModuleDict({
                "gate_proj": nn.Linear(ex.gate_proj.shape[2], ex.gate_proj.shape[1], bias=False),
                "up_proj": nn.Linear(ex.up_proj.shape[2], ex.up_proj.shape[1], bias=False),
                "down_proj": nn.Linear(ex.down_proj.shape[2], ex.down_proj.shape[1], bias=False),
            })
            with torch.no_grad():
                for name in ("gate_proj", "up_proj", "down_proj"):
                    mlp[name].weight.copy_(getattr(ex, name)[e])
            self.experts.append(mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        r = self.gate(flat)
        weights = r.weights.to(flat.dtype)
        out = torch.zeros_like(flat)
        mask = F.one_hot(r.expert_ids, num_classes=len(self.experts)).permute(2, 1, 0)  # [E, k, N]
        for e, mlp in enumerate(self.experts):
            slot, token = torch.where(mask[e])
            h = flat[token]
            y = mlp["down_proj"](F.silu(mlp["gate_proj"](h)) * mlp["up_proj"](h))
            out.index_add_(0, token, y * weights[token, slot, None])
        return out.view_as(x)


class DenseSwiGLU(nn.Module):
    """The ideal: one SwiGLU whose hidden size equals the active experts' (k * h)."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def fwd_bwd(fn, x: torch.Tensor, grad: torch.Tensor) -> float:
    x = x.detach().requires_grad_()
    start = time.perf_counter()
    out = fn(x)
    out = out[0] if isinstance(out, tuple) else out
    if out.dim() == 0:
        out.backward()
    else:
        out.backward(grad)
    return time.perf_counter() - start


def bench(fns: dict, x: torch.Tensor, reps: int) -> dict[str, float]:
    """Median seconds per fwd+bwd of each fn, interleaved so machine noise hits all alike."""
    grad = torch.randn_like(x)
    for fn in fns.values():  # warm-up
        fwd_bwd(fn, x, grad)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(fwd_bwd(fn, x, grad))
    return {name: statistics.median(ts) for name, ts in times.items()}


def pooled(moe: MoE, docs: int, pool: int, tokens: int):
    """MoE forward with EMO pools over `docs` equal documents in one row of `tokens`."""
    doc_ids = (torch.arange(tokens) * docs // tokens).unsqueeze(0)
    segments, num_segments = segment_ids(doc_ids)
    sizes = torch.full((num_segments,), pool)

    def fn(x):
        return moe(x, segments, num_segments, sizes)
    fn.seg_args = (segments, num_segments, sizes)
    return fn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--top-k", type=int, default=8, help="experts per token incl. the shared one")
    ap.add_argument("--shared", type=int, default=1)
    ap.add_argument("--d", type=int, default=512)
    ap.add_argument("--h", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads; E={args.experts}, k={args.top_k} ({args.shared} shared), "
          f"d={args.d}, h={args.h}, {args.tokens} tokens, median of {args.reps}")
    results: dict = {"args": vars(args), "layer": {}, "router": {}}
    print("\n| dtype | ours (s) | loop over all experts (s) | dense ideal (s) | loop / ours | ours / dense |")
    print("|---|---|---|---|---|---|")
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        moe = MoE(args.d, args.h, args.experts, args.shared, args.top_k)
        moe.reset_parameters(0.02, 0.02)
        loop = LoopMoE(moe)
        dense = DenseSwiGLU(args.d, args.top_k * args.h)
        moe, loop, dense = moe.to(dtype), loop.to(dtype), dense.to(dtype)
        x = torch.randn(1, args.tokens, args.d, dtype=dtype)
        t = bench({"ours": moe, "loop": loop, "dense": dense}, x, args.reps)
        results["layer"][name] = t
        print(f"| {name} | {t['ours']:.3f} | {t['loop']:.3f} | {t['dense']:.3f} | "
              f"{t['loop'] / t['ours']:.2f}x | {t['ours'] / t['dense']:.2f}x |")

    routed = args.experts - args.shared
    pool = max(args.top_k - args.shared, routed // 4)
    print(f"\nEMO router (pool {pool} of {routed} routed experts) vs standard router, fwd+bwd, float32; "
          "overhead = extra router time / standard MoE layer time")
    print("| documents per batch | router standard (ms) | router EMO (ms) | layer standard (s) | layer EMO (s) "
          "| EMO router overhead |")
    print("|---|---|---|---|---|---|")
    moe = MoE(args.d, args.h, args.experts, args.shared, args.top_k)
    moe.reset_parameters(0.02, 0.02)
    x = torch.randn(1, args.tokens, args.d)
    flat = x.view(-1, args.d)
    router_only = lambda fn: (lambda inp: fn(inp).probs.square().sum())  # noqa: E731
    for docs in (1, 16, 64):
        emo_layer = pooled(moe, docs, pool, args.tokens)
        seg_args = emo_layer.seg_args
        t = bench({"standard": moe, "emo": emo_layer}, x, args.reps)
        r = bench({"standard": router_only(moe.gate),
                   "emo": router_only(lambda inp, seg_args=seg_args: moe.gate(inp, *seg_args))}, flat,
                  args.reps * 4)
        overhead = (r["emo"] - r["standard"]) / t["standard"]
        results["router"][docs] = {"layer": t, "router": r, "overhead": overhead}
        print(f"| {docs} | {r['standard'] * 1e3:.1f} | {r['emo'] * 1e3:.1f} | {t['standard']:.3f} | "
              f"{t['emo']:.3f} | {overhead * 100:+.1f}% |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
