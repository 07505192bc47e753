"""One optimizer step over this rank's micro-batches, with global (or local) load balancing.

Loss of a step, over the global batch of all ranks and micro-batches:
    LM cross-entropy (mean over label tokens) + lm_z * LM z-loss
    + lb * LB  + z * router z-loss          (LB, z: means over layers, as in the release)
With scope "global" the LB's expert fractions f come from counts summed over every micro-batch
of the step and all ranks (pbar stays local and carries the gradient), so the LB term equals the
one of the concatenated global batch. Counts are known before any backward: with several
micro-batches a no-grad routing pass over them comes first; with one, the forward's own counts are
all-reduced before its backward. Every micro-batch's loss is scaled by its share of the global
batch, so gradients are the same for any world size and accumulation split.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emomoe.train.config import TrainConfig
from emomoe.train.distributed import Dist, all_reduce_sum, unwrap


@dataclass
class StepStats:
    loss: float
    lm_loss: float
    lb_loss: float
    z_loss: float
    grad_norm: float
    label_tokens: int
    expert_counts: list[Tensor] = field(repr=False)  # per layer [E_r], summed over the global batch
    mean_pool_size: float | None
    skipped: bool


def sequence_pool_sizes(seq_indices: list[int], seq_len: int, low: int, high: int, seed: int, step: int) -> Tensor:
    """Pool size per document segment [len(seq_indices) * (T+1)], drawn per global sequence.

    Stateless: the sizes of a sequence depend on (seed, step, its global index) only, so any
    split of the global batch over ranks and micro-batches draws the same pools.
    """
    rows = []
    for index in seq_indices:
        key = int(np.random.SeedSequence([seed, step, index]).generate_state(1, dtype=np.uint64)[0] >> 1)
        gen = torch.Generator().manual_seed(key)
        rows.append(torch.randint(low, high + 1, (seq_len + 1,), generator=gen))
    return torch.cat(rows)


def autocast_context(cfg: TrainConfig, device: torch.device):
    if cfg.train.precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def lm_sums(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(sum of token cross-entropies, sum of logsumexp^2) over label tokens (labels != -100)."""
    flat = logits.float().reshape(-1, logits.shape[-1])
    targets = labels.reshape(-1)
    ce = F.cross_entropy(flat, targets, ignore_index=-100, reduction="sum")
    valid = targets != -100
    z = torch.logsumexp(flat[valid], dim=-1).square().sum()
    return ce, z


def global_lb(routings, counts: list[Tensor], router_tokens: int) -> Tensor:
    """This micro-batch's share of the step's global LB: mean over layers of
    (E_r/k_r) * sum_i f_i * (sum of this micro-batch's probs_i) / N, with f_i = counts_i / N."""
    terms = []
    for routing, c in zip(routings, counts):
        fraction = c / router_tokens
        scale = fraction.shape[0] / routing.routed_top_k
        terms.append(scale * (fraction * routing.probs.sum(0)).sum() / router_tokens)
    return torch.stack(terms).mean()


def train_step(model: nn.Module, micro_batches: list[dict[str, Tensor]], first_seq: int, step: int,
               cfg: TrainConfig, d: Dist, optimizer: torch.optim.Optimizer, lr: float) -> StepStats:
    """Forward/backward every micro-batch, clip, and step the optimizer unless the step is bad."""
    core = unwrap(model)
    mcfg = core.config
    run = cfg.train
    device = d.device
    seq_len = micro_batches[0]["input_ids"].shape[1]
    emo = mcfg.router == "emo"
    low, high = mcfg.pool_range(0)

    def forward(i: int, batch: dict[str, Tensor]):
        rows = batch["input_ids"].shape[0]
        start = first_seq + sum(mb["input_ids"].shape[0] for mb in micro_batches[:i])
        pools = (sequence_pool_sizes(list(range(start, start + rows)), seq_len, low, high, run.seed, step)
                 .to(device) if emo else None)
        doc_ids = batch["doc_ids"].to(device) if run.intra_doc_attention or emo else None
        with autocast_context(cfg, device):
            return model(batch["input_ids"].to(device), doc_ids=doc_ids, pool_sizes=pools)

    counts_local = sum(int(mb["input_ids"].numel()) for mb in micro_batches)
    totals = torch.tensor([sum(int((mb["labels"] != -100).sum()) for mb in micro_batches), counts_local],
                          dtype=torch.float64, device=device)
    label_tokens, router_tokens = (int(v) for v in all_reduce_sum(totals, d).tolist())

    global_counts = None
    if run.lb_scope == "global" and len(micro_batches) > 1:
        with torch.no_grad():
            per_mb = [[r.expert_counts for r in forward(i, mb).routings] for i, mb in enumerate(micro_batches)]
        global_counts = _reduce_counts([sum(layer) for layer in zip(*per_mb)], d)

    sums = torch.zeros(4, dtype=torch.float64, device=device)  # lm ce, lm z, lb, router z
    seen_counts = None
    pool_size = None
    last = len(micro_batches) - 1
    for i, batch in enumerate(micro_batches):
        sync = i == last
        ctx = model.no_sync() if (d.enabled and hasattr(model, "no_sync") and not sync) else contextlib.nullcontext()
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(sync)
        with ctx:
            out = forward(i, batch)
            ce, lm_z = lm_sums(out.logits, batch["labels"].to(device))
            counts = [r.expert_counts for r in out.routings]
            seen_counts = counts if seen_counts is None else [a + b for a, b in zip(seen_counts, counts)]
            mb_tokens = batch["input_ids"].numel()
            if run.lb_scope == "global":
                if global_counts is None:  # one micro-batch: its own counts, reduced over ranks
                    global_counts = _reduce_counts(counts, d)
                lb = global_lb(out.routings, global_counts, router_tokens)
            else:
                lb = out.lb_loss * (mb_tokens / router_tokens)
            z = out.z_loss * (mb_tokens / router_tokens)
            loss = (ce + run.lm_z_weight * lm_z) / max(label_tokens, 1) + run.lb_weight * lb + run.z_weight * z
            (loss * d.world_size).backward()
        sums += torch.stack([ce.detach(), lm_z.detach(), lb.detach(), z.detach()]).double()
        if out.routings[0].pool_mask is not None:
            pool_size = out.routings[0].pool_mask.sum(-1).float().mean().item()
    all_reduce_sum(sums, d)
    ce_sum, lmz_sum, lb_value, z_value = sums.tolist()
    lm_loss = ce_sum / max(label_tokens, 1)
    lm_z = lmz_sum / max(label_tokens, 1)
    total = lm_loss + run.lm_z_weight * lm_z + run.lb_weight * lb_value + run.z_weight * z_value
    expert_counts = global_counts if global_counts is not None else _reduce_counts(seen_counts, d)

    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, run_clip(cfg))
    norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    skipped = not (math.isfinite(total) and math.isfinite(norm))
    if not skipped:
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(total, lm_loss, lb_value, z_value, norm, label_tokens, expert_counts, pool_size, skipped)


def run_clip(cfg: TrainConfig) -> float:
    return cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")


def _reduce_counts(counts: list[Tensor], d: Dist) -> list[Tensor]:
    """Sum per-layer counts over ranks (layers may have different expert counts)."""
    sizes = [c.shape[0] for c in counts]
    flat = all_reduce_sum(torch.cat([c.detach().float() for c in counts]), d)
    return list(flat.split(sizes))
