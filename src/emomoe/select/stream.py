"""Layer-at-a-time access to a model: from memory-mapped safetensors, or from a loaded model.

Selection walks the network one decoder layer at a time and keeps only the calibration hidden
states between layers. `CheckpointLayers` builds each layer from the checkpoint when it is
reached (files opened with `safe_open` for that layer only, so their mappings are dropped as
soon as it is built) and frees it afterwards; `ModelLayers` hands out the layers of a model
already in memory. Both expose the same three calls: `embed_many`, `layer`, `release`.
"""

from __future__ import annotations

import ctypes
import gc
import os
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import Tensor

from emomoe.config import EmoConfig
from emomoe.io.checkpoint import check_tensors, read_config, tensor_files, tensor_shapes
from emomoe.model import EmoForCausalLM
from emomoe.model.transformer import DecoderLayer

_PROJS = ("gate_proj", "up_proj", "down_proj")


class TensorReader:
    """Reads named tensors from a checkpoint's safetensors files, opening each file per request.

    Every `read` opens the files it needs, copies the tensors out and closes them before
    returning, so no mapping of the checkpoint (and none of its resident pages) outlives it.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.config: EmoConfig = read_config(path)
        self.files = tensor_files(path)
        self.shapes = tensor_shapes(path)
        check_tensors(self.config, self.shapes, str(path))

    def read(self, names: list[str], dtype: torch.dtype | None = None,
             stacks: dict[str, list[str]] | None = None) -> dict[str, Tensor]:
        """Tensors by name, optionally cast; `stacks` maps an output name to names stacked on dim 0.

        A stack is filled piece by piece into one preallocated tensor. Files are reopened every
        CHUNK_BYTES of data, so at most that much of the mappings is resident at a time.
        """
        out: dict[str, Tensor] = {}
        jobs = [(name, name, None) for name in names]  # (output key, stored name, stack index)
        for key, parts in (stacks or {}).items():
            shape, stored = self.shapes[parts[0]]
            out[key] = torch.empty((len(parts), *shape), dtype=dtype or _torch_dtype(stored))
            jobs += [(key, part, j) for j, part in enumerate(parts)]
        chunk, size = [], 0
        for job in jobs + [None]:
            nbytes = 0 if job is None else self.nbytes(job[1])
            if chunk and (job is None or size + nbytes > CHUNK_BYTES):
                self._read_chunk(chunk, out, dtype)
                chunk, size = [], 0
            if job is not None:
                chunk.append(job)
                size += nbytes
        return out

    def _read_chunk(self, jobs: list, out: dict[str, Tensor], dtype: torch.dtype | None) -> None:
        with ExitStack() as stack:
            handles = {file: stack.enter_context(safe_open(str(file), framework="pt", device="cpu"))
                       for file in sorted({self.files[name] for _, name, _ in jobs})}
            for key, name, index in jobs:
                # get_tensor may return a view of the mapping: copy out so the mapping can close
                tensor = handles[self.files[name]].get_tensor(name)
                if index is None:
                    out[key] = tensor.to(dtype or tensor.dtype, copy=True)
                else:
                    out[key][index].copy_(tensor)
                del tensor
            del handles

    def nbytes(self, name: str) -> int:
        """Stored size of a tensor in bytes (from the header)."""
        shape, stored = self.shapes[name]
        return int(torch.Size(shape).numel()) * _torch_dtype(stored).itemsize


def _torch_dtype(stored: str) -> torch.dtype:
    return getattr(torch, _TORCH_DTYPES.get(stored, stored.lower()))


CHUNK_BYTES = 64 * 2**20
_TORCH_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                 "I64": "int64", "I32": "int32", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


class CheckpointLayers:
    """Decoder layers built one at a time from a checkpoint directory (never the whole model).

    dtype: compute dtype (None keeps the stored one, as `load_model` does); device: where each
    layer and the hidden states live.
    """

    def __init__(self, path: str | os.PathLike, dtype: torch.dtype | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.reader = TensorReader(path)
        self.config = self.reader.config
        self.dtype, self.device = dtype, torch.device(device)

    def embed_many(self, inputs: list[Tensor]) -> list[Tensor]:
        """Embeddings of several batches with one read of the table."""
        name = "model.embed_tokens.weight"
        table = self.reader.read([name], self.dtype)[name].to(self.device)
        out = [F.embedding(ids.to(self.device), table) for ids in inputs]
        del table
        gc.collect()
        return out

    def layer(self, index: int) -> DecoderLayer:
        """Decoder layer `index` with its weights read from the checkpoint (experts stacked)."""
        cfg = self.config
        with torch.device("meta"):
            layer = DecoderLayer(cfg, index)
        prefix = f"model.layers.{index}."
        names = [n for n in layer.state_dict() if not n.startswith("mlp.experts.")]
        experts = cfg.experts_in_layer(index)
        stacks = {f"mlp.experts.{p}": [f"{prefix}mlp.experts.{j}.{p}.weight" for j in range(experts)]
                  for p in _PROJS}
        state = self.reader.read([prefix + n for n in names], self.dtype, stacks)
        state = {k.removeprefix(prefix): v for k, v in state.items()}
        layer.load_state_dict(state, assign=True)
        del state
        return layer.to(self.device).eval()

    def release(self, layer: DecoderLayer) -> None:
        """Free a layer's weights now (the caller drops its own reference too)."""
        for p in layer.parameters():
            p.data = torch.empty(0, dtype=p.dtype)
        gc.collect()
        trim_heap()


def trim_heap() -> None:
    """Return freed heap memory to the OS (glibc keeps it otherwise, and RSS creeps up per layer)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to do


class ModelLayers:
    """The same interface over a model already in memory (layers are borrowed, never freed)."""

    def __init__(self, model: EmoForCausalLM) -> None:
        self.model = model
        self.config = model.config
        param = model.model.embed_tokens.weight
        self.dtype, self.device = param.dtype, param.device

    def embed_many(self, inputs: list[Tensor]) -> list[Tensor]:
        return [self.model.model.embed_tokens(ids.to(self.device)) for ids in inputs]

    def layer(self, index: int) -> DecoderLayer:
        return self.model.model.layers[index]

    def release(self, layer: DecoderLayer) -> None:
        pass
