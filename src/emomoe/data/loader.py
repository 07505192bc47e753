"""Batches for training and validation from prepared token shards.

Global batch invariance: optimizer step s trains on sequences [s*G, (s+1)*G) of the packed stream
(see `packing.py`), G = global_batch_size. Rank r of W takes the contiguous share
[s*G + r*G/W, s*G + (r+1)*G/W) and splits it into micro-batches of `micro_batch_size`, so the
sequences of a step are the same whatever W and the micro-batch split. The loader's state is the
step counter alone; a run may resume on a different number of ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from .packing import EpochStream, pack_window, sequential_pieces
from .shards import TokenShards

STATE_VERSION = 1


def _stack(windows: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.stack([w[k] for w in windows])) for k in windows[0]}  # each [B, T] int64


def _group_weights(shards: TokenShards, weights: dict[str, float] | None, weight_by: str):
    """(group of each document [num_docs], weight of each group [groups]) for the mixture."""
    if weights is None:
        return np.zeros(shards.num_docs, dtype=np.int64), np.ones(1)
    if weight_by not in ("source", "domain"):
        raise ValueError(f"weight_by must be 'source' or 'domain' (got {weight_by!r})")
    names = shards.source_names if weight_by == "source" else shards.domain_names
    group_of_doc = shards.doc_sources if weight_by == "source" else shards.doc_domains
    present = {names[i] for i in np.unique(group_of_doc)}
    unknown = sorted(set(weights) - set(names))
    if unknown:
        raise ValueError(f"weights name unknown {weight_by}s {unknown}; known: {sorted(present)}")
    missing = sorted(present - set(weights))
    if missing:
        raise ValueError(f"weights missing for {weight_by}s {missing} (give 0 to leave one out)")
    w = np.array([float(weights.get(n, 0.0)) for n in names])
    if (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0 (got {weights})")
    absent = [n for n in names if weights.get(n, 0) > 0 and n not in present]
    if absent:
        raise ValueError(f"weights > 0 for {weight_by}s with no documents in this split: {absent}")
    return group_of_doc, w


class PackedLoader:
    """Packed training batches, deterministic under `seed`, sharded over data-parallel ranks.

    Args:
        shards: the training documents, e.g. `TokenShards("data/train")` (split "train").
        seq_len: tokens per sequence (T).
        global_batch_size: sequences per optimizer step over all ranks (G).
        micro_batch_size: sequences per forward/backward pass on one rank (M); G/W must divide by M.
        rank, world_size: this process's data-parallel rank and the number of ranks (W); G % W == 0.
        seed: decides document order (and mixture sampling) of every epoch.
        weights: optional mixture, {name: weight} over all sources (or domains, `weight_by`);
            each weight is that group's share of the tokens. None: every document once per epoch.

    `next_step()` returns this rank's micro-batches for the next optimizer step: a list of
    G/(W*M) dicts of int64 tensors [M, T]: input_ids, labels (-100 where the next token is in
    another document: after every EOS), doc_ids (0, 1, 2, ... per document chunk within each
    sequence) and domain_ids. Iterating the loader yields the same lists, endlessly.
    Raises ValueError for sizes that do not divide or bad weights.
    """

    def __init__(
        self,
        shards: TokenShards,
        seq_len: int,
        global_batch_size: int,
        micro_batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        weights: dict[str, float] | None = None,
        weight_by: str = "source",
    ):
        if seq_len < 1 or global_batch_size < 1 or micro_batch_size < 1:
            raise ValueError(
                f"seq_len ({seq_len}), global_batch_size ({global_batch_size}) and "
                f"micro_batch_size ({micro_batch_size}) must be >= 1"
            )
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank ({rank}) must be in [0, world_size ({world_size}))")
        if global_batch_size % world_size:
            raise ValueError(
                f"global_batch_size ({global_batch_size}) must be divisible by world_size ({world_size})"
            )
        per_rank = global_batch_size // world_size
        if per_rank % micro_batch_size:
            raise ValueError(
                f"sequences per rank (global_batch_size {global_batch_size} / world_size "
                f"{world_size} = {per_rank}) must be divisible by micro_batch_size "
                f"({micro_batch_size})"
            )
        self.shards, self.seq_len = shards, seq_len
        self.global_batch_size, self.micro_batch_size = global_batch_size, micro_batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.weights, self.weight_by = (dict(weights) if weights else None), weight_by
        self.accum_steps = per_rank // micro_batch_size  # micro-batches per step on this rank
        group_of_doc, group_weights = _group_weights(shards, weights, weight_by)
        self._stream = EpochStream(shards.doc_lengths, group_of_doc, group_weights, seed)
        self.step = 0  # the next optimizer step to produce

    def sequences(self, start: int, count: int) -> dict[str, torch.Tensor]:
        """Global sequences [start, start + count) of the packed stream, as a batch [count, T]."""
        t = self.seq_len
        return _stack(
            [
                pack_window(self.shards, self._stream.pieces(n * t, t + 1), t, self.shards.pad_id)
                for n in range(start, start + count)
            ]
        )

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        """This rank's micro-batches (each [micro_batch_size, T]) for the next optimizer step."""
        per_rank = self.global_batch_size // self.world_size
        first = self.step * self.global_batch_size + self.rank * per_rank
        self.step += 1
        m = self.micro_batch_size
        return [self.sequences(first + i * m, m) for i in range(self.accum_steps)]

    def __iter__(self) -> Iterator[list[dict[str, torch.Tensor]]]:
        while True:
            yield self.next_step()

    @property
    def epoch(self) -> int:
        """The epoch that the next step starts in (0-based)."""
        return self._stream.epoch_of(self.step * self.global_batch_size * self.seq_len)

    def _identity(self) -> dict:
        return {
            "seed": self.seed,
            "seq_len": self.seq_len,
            "global_batch_size": self.global_batch_size,
            "num_docs": self.shards.num_docs,
            "num_tokens": self.shards.num_tokens,
            "weights": self.weights,
            "weight_by": self.weight_by if self.weights else None,
        }

    def state_dict(self) -> dict:
        """What resuming needs: the step, plus the settings that must match (checked on load)."""
        return {"version": STATE_VERSION, "step": self.step, **self._identity()}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state`: the next step is the one an uninterrupted run would produce next.

        Rank, world size and micro-batch size may differ from the saved run's. Raises ValueError
        if the data, seed, sequence length, global batch size or weights differ.
        """
        for key, value in self._identity().items():
            if state.get(key) != value:
                raise ValueError(
                    f"loader state was saved with {key}={state.get(key)!r}, this loader has {key}={value!r}"
                )
        self.step = int(state["step"])


def validation_batches(
    shards: TokenShards, seq_len: int, batch_size: int, rank: int = 0, world_size: int = 1
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over `shards` (e.g. `TokenShards(dir, split="val")`) in document order, packed like training.

    Every token is an input exactly once; only the last sequence is padded (input PAD, label -100,
    doc_id -1, domain_id -1). Rank r of W gets sequences r, r+W, r+2W, ...; the last batch may be
    smaller and a rank may get none. Yields dicts of int64 tensors [B, T] with the same keys as
    `PackedLoader`.
    """
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"seq_len ({seq_len}) and batch_size ({batch_size}) must be >= 1")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank ({rank}) must be in [0, world_size ({world_size}))")
    lengths = shards.doc_lengths
    num_seqs = -(-shards.num_tokens // seq_len)
    mine = list(range(rank, num_seqs, world_size))
    for i in range(0, len(mine), batch_size):
        yield _stack(
            [
                pack_window(
                    shards, sequential_pieces(lengths, n * seq_len, seq_len + 1), seq_len, shards.pad_id
                )
                for n in mine[i : i + batch_size]
            ]
        )
