"""AdamW with the usual decay groups, and the learning-rate schedule as a pure function of the step."""

from __future__ import annotations

import math

import torch
from torch import nn

from emomoe.train.config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay; embeddings, norms and biases (1-D tensors) do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() < 2 or "embed_tokens" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters (fused kernels are left to PyTorch's defaults)."""
    return torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=tuple(cfg.betas),
                             eps=cfg.eps)


def lr_at(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`.

    Linear warmup over `warmup_steps`, then: cosine from lr to min_lr_ratio*lr at the last step;
    WSD: constant, then a linear decay to min_lr_ratio*lr over the last `decay_frac` of the steps;
    constant: lr.
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    low = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        span = max(total_steps - cfg.warmup_steps - 1, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return low + (cfg.lr - low) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_steps = max(int(round(total_steps * cfg.decay_frac)), 1)
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return cfg.lr
    progress = min((step - decay_start + 1) / decay_steps, 1.0)
    return cfg.lr + (low - cfg.lr) * progress


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
