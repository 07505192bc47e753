"""Training checkpoints: written to a temp directory and renamed, so a crash leaves the last one intact.

    OUT/checkpoints/step-0000100/state.pt     model, optimizer (full state dicts), step, loader state
    OUT/checkpoints/step-0000100/rng-<rank>.pt  each rank's RNG states
Loading uses `torch.load(weights_only=True)`: no code from a checkpoint is executed.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from emomoe.train.distributed import Dist, barrier

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under root, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1][1] if dirs else None


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    loader_state: dict, d: Dist, keep: int, fault_hook=None) -> Path:
    """Write checkpoint `step` atomically (all ranks call this) and keep the newest `keep`."""
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"
    model_sd, optim_sd = get_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if d.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier(d)
    torch.save(_rng_state(), tmp / f"rng-{d.rank}.pt")
    if d.is_main:
        torch.save({"model": model_sd, "optimizer": optim_sd, "step": step, "loader": loader_state,
                    "world_size": d.world_size}, tmp / "state.pt")
        if fault_hook is not None:
            fault_hook("checkpoint-written", step)
    barrier(d)
    if d.is_main:
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for _, old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier(d)
    return final


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, d: Dist) -> dict:
    """Restore model, optimizer and this rank's RNG from `path`; returns the saved state dict."""
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(full_state_dict=True))
    rng_file = path / f"rng-{d.rank}.pt"
    if rng_file.exists():
        rng = torch.load(rng_file, weights_only=True)
        torch.set_rng_state(rng["torch"])
        random.setstate(_as_tuple(rng["python"]))
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return state


def _as_tuple(value):
    return tuple(_as_tuple(v) for v in value) if isinstance(value, (list, tuple)) else value
