"""Delete the experts a Selection dropped: in memory (`prune_model`) or checkpoint to checkpoint (`prune`).

The pruned layout is the released one (EMO.md section 6): layer l keeps K_l experts, renumbered
0..K_l-1 in ascending original order with the shared experts last, gate rows in the same order;
`num_experts_per_layer` / `num_shared_experts_per_layer` record the counts. `prune` streams:
every tensor is read from the memory-mapped source when the writer asks for it and written
shard by shard, so the model is never in memory whole.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from emomoe.config import EmoConfig
from emomoe.io.checkpoint import expected_shapes, write_checkpoint
from emomoe.model import EmoForCausalLM
from emomoe.select.selection import Selection
from emomoe.select.stream import TensorReader

SELECTION_FILE = "selection.json"
# Files copied from the source checkpoint besides the weights: tokenizer, generation defaults,
# and the released remote modeling code (so `trust_remote_code` loading keeps working).
_COPIED = re.compile(r"^(tokenizer.*|special_tokens_map\.json|vocab\..*|merges\.txt|.*\.model|"
                     r"generation_config\.json|.*\.py|chat_template\..*)$")
_EXPERT = re.compile(r"^model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(\w+)\.weight$")
_GATE = re.compile(r"^model\.layers\.(\d+)\.mlp\.gate\.weight$")


def pruned_config(config: EmoConfig, selection: Selection) -> EmoConfig:
    """`config` with the selection's expert counts per layer (everything else unchanged)."""
    selection._check_fits(config)
    return config.replace(num_experts_per_layer=list(selection.keep),
                          num_shared_experts_per_layer=list(selection.num_shared))


def source_name(name: str, selection: Selection) -> str:
    """The source tensor a pruned tensor comes from (expert j of layer l is expert kept[l][j])."""
    match = _EXPERT.match(name)
    if match:
        layer, j, proj = int(match.group(1)), int(match.group(2)), match.group(3)
        return f"model.layers.{layer}.mlp.experts.{selection.kept[layer][j]}.{proj}.weight"
    return name


@torch.no_grad()
def prune_model(model: EmoForCausalLM, selection: Selection) -> EmoForCausalLM:
    """A new, smaller EmoForCausalLM holding only the kept experts (weights copied; `model` unchanged)."""
    config = pruned_config(model.config, selection)
    with torch.device("meta"):
        pruned = EmoForCausalLM(config)
    state = {}
    for name, tensor in model.state_dict().items():
        parts = name.split(".")
        if name.startswith("model.layers.") and (".mlp.experts." in name or name.endswith("mlp.gate.weight")):
            index = torch.tensor(selection.kept[int(parts[2])], device=tensor.device)
            state[name] = tensor.index_select(0, index)
        else:
            state[name] = tensor.clone()
    pruned.load_state_dict(state, assign=True)
    if config.tie_word_embeddings:
        pruned.lm_head.weight = pruned.model.embed_tokens.weight
    return pruned.eval().requires_grad_(model.model.embed_tokens.weight.requires_grad)


@dataclass
class PruneReport:
    """What `prune` wrote: sizes before/after (parameters, bytes, expert bytes) and the time taken."""

    out_dir: Path
    params_before: int
    params_after: int
    bytes_before: int
    bytes_after: int
    expert_bytes_before: int
    expert_bytes_after: int
    seconds: float

    def lines(self) -> list[str]:
        """A short human-readable table."""
        def ratio(a: int, b: int) -> str:
            return f"{100 * a / b:.1f}%" if b else "-"
        return [
            f"pruned checkpoint: {self.out_dir}",
            f"  parameters    {self.params_before:,} -> {self.params_after:,} "
            f"({ratio(self.params_after, self.params_before)})",
            f"  bytes         {_human(self.bytes_before)} -> {_human(self.bytes_after)} "
            f"({ratio(self.bytes_after, self.bytes_before)})",
            f"  expert bytes  {_human(self.expert_bytes_before)} -> {_human(self.expert_bytes_after)} kept "
            f"({ratio(self.expert_bytes_after, self.expert_bytes_before)})",
            f"  time          {self.seconds:.1f} s",
        ]


def _human(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def check_out_dir(out_dir: str | os.PathLike, overwrite: bool,
                  model_dir: str | os.PathLike | None = None) -> None:
    """Raise ValueError if `out_dir` exists (without overwrite) or is the source checkpoint."""
    out = Path(out_dir)
    if model_dir is not None and out.exists() and out.resolve() == Path(model_dir).resolve():
        raise ValueError(f"output directory {out} is the source checkpoint; choose another --out")
    if out.exists() and not overwrite:
        raise ValueError(f"output directory {out} already exists (pass --overwrite / overwrite=True to "
                         "replace it)")


def prune(model_dir: str | os.PathLike, selection: Selection, out_dir: str | os.PathLike, *,
          overwrite: bool = False, max_shard_size: int | str = "500MB", dtype: torch.dtype | None = None,
          ) -> PruneReport:
    """Write a pruned copy of checkpoint `model_dir` to `out_dir`, streaming tensor by tensor.

    Tokenizer files (and any remote modeling code) are copied and `selection.json` is written
    beside the weights. The output appears atomically: on any error nothing is left behind.
    Peak memory is about one output shard (`max_shard_size`) plus one tensor. Raises ValueError
    if `out_dir` exists without `overwrite`, or the selection does not fit the checkpoint.
    """
    start = time.perf_counter()
    check_out_dir(out_dir, overwrite, model_dir)
    reader = TensorReader(model_dir)
    config = pruned_config(reader.config, selection)
    counts = {"params": 0, "bytes": 0, "expert_bytes": 0}

    def tensors() -> Iterator[tuple[str, Tensor]]:
        for name in expected_shapes(config):
            gate = _GATE.match(name)
            if gate:
                full = reader.read([name])[name]
                tensor = full.index_select(0, torch.tensor(selection.kept[int(gate.group(1))]))
                del full
            else:
                source = source_name(name, selection)
                tensor = reader.read([source])[source]
            out = tensor.to(dtype) if dtype is not None else tensor
            counts["params"] += out.numel()
            counts["bytes"] += out.numel() * out.element_size()
            if _EXPERT.match(name):
                counts["expert_bytes"] += out.numel() * out.element_size()
            yield name, out
            del tensor, out

    extra = tokenizer_files(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        extra[SELECTION_FILE] = selection.save(Path(tmp) / SELECTION_FILE)
        write_checkpoint(out_dir, config, tensors(), max_shard_size, dtype, extra)
    before = {"params": 0, "bytes": 0, "expert_bytes": 0}
    for name, (shape, _) in reader.shapes.items():
        before["params"] += int(torch.Size(shape).numel())
        before["bytes"] += reader.nbytes(name)
        if _EXPERT.match(name):
            before["expert_bytes"] += reader.nbytes(name)
    return PruneReport(Path(out_dir), before["params"], counts["params"], before["bytes"], counts["bytes"],
                       before["expert_bytes"], counts["expert_bytes"], time.perf_counter() - start)


def tokenizer_files(model_dir: str | os.PathLike) -> dict[str, Path]:
    """Tokenizer (and remote modeling code) files of a checkpoint, as `extra_files` for `save_model`."""
    return {p.name: p for p in sorted(Path(model_dir).iterdir()) if p.is_file() and _COPIED.match(p.name)}
