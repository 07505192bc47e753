"""Metrics of a run: a JSONL file, routing statistics, FLOPs and a measured matmul peak (for MFU)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from torch import Tensor

from emomoe.config import EmoConfig, count_parameters


def flops_per_token(config: EmoConfig, seq_len: int) -> float:
    """Training FLOPs per token: 6 x (active parameters without the input embedding) + causal attention."""
    counts = count_parameters(config)
    matmul_params = counts["active"] - config.vocab_size * config.hidden_size  # embedding lookup is free
    attention = 6 * config.num_hidden_layers * seq_len * config.num_attention_heads * config.head_dim
    return 6 * matmul_params + attention


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, seconds: float = 0.5) -> float:
    """Achieved FLOP/s of a square matmul on this device: the denominator of MFU."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    _sync(device)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        a @ b
        runs += 1
    _sync(device)
    return 2 * size**3 * runs / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def routing_stats(expert_counts: list[Tensor]) -> dict[str, float]:
    """Fraction of routed experts used and normalised load entropy (1 = perfectly even), layer means."""
    used, entropy = [], []
    for counts in expert_counts:
        counts = counts.double()
        share = counts / counts.sum().clamp(min=1)
        used.append(float((counts > 0).double().mean()))
        h = -(share[share > 0] * share[share > 0].log()).sum()
        entropy.append(float(h / math.log(len(counts))) if len(counts) > 1 else 1.0)
    return {"experts_used": sum(used) / len(used), "load_entropy": sum(entropy) / len(entropy)}


class MetricsLog:
    """Appends one JSON object per record to OUT/metrics.jsonl (main rank only)."""

    def __init__(self, path: Path, enabled: bool, tensorboard_dir: Path | None = None) -> None:
        self.path, self.enabled = path, enabled
        self.tb = None
        if enabled and tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ValueError("train.tensorboard needs the tensorboard package: pip install tensorboard") from exc
            self.tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
