"""Process groups and model wrapping for data parallelism; the model code knows nothing of this.

`torchrun` sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything runs in one process.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_minutes: float = 30) -> Dist:
    """Join the torchrun process group (gloo on CPU, nccl on CUDA) or run alone."""
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=timeout_minutes))
    return Dist(rank, world, local, dev)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum over ranks in place (a no-op in one process); returns the tensor."""
    if d.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def wrap_model(model: nn.Module, d: Dist, parallel: str) -> nn.Module:
    """DDP, or FSDP2 `fully_shard` per decoder layer and at the root; unchanged in one process."""
    if not d.enabled:
        return model
    if parallel == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """The EmoForCausalLM inside a DDP wrapper (FSDP2 shards in place, so it is the model itself)."""
    return model.module if hasattr(model, "module") else model
