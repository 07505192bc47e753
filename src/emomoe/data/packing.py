"""Packing documents into fixed-length sequences: pure numpy, no torch.

The training data is one endless token stream: epoch 0's documents in a seeded order, then epoch
1's in another, and so on. Sequence n is the window of stream positions [n*T, (n+1)*T], T + 1
tokens: the first T are the inputs, the last T the next-token targets. A document cut by a window
edge continues in the next sequence as a new chunk, so no training token is padding. Each sequence
is a pure function of (shards, seed, weights, T, n), which is what makes resuming and sharding over
ranks exact.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

IGNORE_INDEX = -100  # label of a token whose target is in another document (or is padding)


def pack_window(
    shards, pieces: list[tuple[int, int, int]], seq_len: int, pad_id: int
) -> dict[str, np.ndarray]:
    """Build one sequence from `pieces` = [(doc, offset in doc, length), ...] covering <= T + 1 tokens.

    Returns int64 arrays of shape [T]: input_ids, labels (IGNORE_INDEX where the next token
    belongs to another piece or is padding), doc_ids (piece index 0, 1, 2, ...; -1 on padding) and
    domain_ids (-1 on padding). Missing tokens at the end are padding (PAD id).
    """
    tokens = np.full(seq_len + 1, pad_id, dtype=np.int64)  # [T + 1]
    piece = np.full(seq_len + 1, -1, dtype=np.int64)  # [T + 1]
    domain = np.full(seq_len + 1, -1, dtype=np.int64)  # [T + 1]
    pos = 0
    for j, (doc, offset, length) in enumerate(pieces):
        tokens[pos : pos + length] = shards.tokens(doc)[offset : offset + length]
        piece[pos : pos + length] = j
        domain[pos : pos + length] = shards.doc_domains[doc]
        pos += length
    same_doc = (piece[1:] == piece[:-1]) & (piece[:-1] >= 0)
    return {
        "input_ids": tokens[:-1],
        "labels": np.where(same_doc, tokens[1:], IGNORE_INDEX),
        "doc_ids": piece[:-1],
        "domain_ids": domain[:-1],
    }


def _walk(order: np.ndarray, starts: np.ndarray, lengths: np.ndarray, pos: int, count: int):
    """Pieces of a finite stream (documents `order` starting at `starts`) from `pos`, up to `count` tokens."""
    pieces = []
    k = int(np.searchsorted(starts, pos, side="right")) - 1
    while count > 0 and k < len(order):
        doc = int(order[k])
        offset = pos - int(starts[k])
        n = min(int(lengths[doc]) - offset, count)
        pieces.append((doc, offset, n))
        pos, count, k = pos + n, count - n, k + 1
    return pieces


class EpochStream:
    """The endless training stream: documents per epoch chosen and ordered by `seed` (and `weights`).

    `group_of_doc` [num_docs] assigns each document to a mixture group; `group_weights` [groups]
    is each group's share of the tokens of an epoch (an epoch holds about as many tokens as the
    documents of the groups with weight > 0). A group's documents are drawn cycle after cycle,
    each cycle a fresh permutation, so up-weighted groups repeat and down-weighted ones are sampled
    without replacement; without weights every epoch is a permutation of all documents.
    """

    def __init__(self, lengths: np.ndarray, group_of_doc: np.ndarray, group_weights: np.ndarray, seed: int):
        self.lengths, self.seed = lengths, seed
        active = np.flatnonzero(group_weights > 0)
        self.members = [np.flatnonzero(group_of_doc == g) for g in active]  # doc indices per group
        self.cycle_tokens = [int(lengths[m].sum()) for m in self.members]
        budget = sum(self.cycle_tokens)
        w = group_weights[active] / group_weights[active].sum()
        self.group_ids = active
        self.quota = [max(1, round(budget * float(x))) for x in w]  # tokens per epoch per group
        self.epoch_starts = [0]  # stream position of each epoch, extended on demand
        self._plans: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def _cycle(self, g: int, c: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, 1, int(self.group_ids[g]), c])
        docs = rng.permutation(self.members[g])
        starts = c * self.cycle_tokens[g] + np.cumsum(self.lengths[docs]) - self.lengths[docs]
        return docs, starts

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents of `epoch` in stream order [n], their starts in the epoch and the total [n + 1])."""
        if epoch in self._plans:
            return self._plans[epoch]
        chosen = []
        for g, quota in enumerate(self.quota):
            lo, hi = epoch * quota, (epoch + 1) * quota  # this epoch's slice of the group's own stream
            for c in range(lo // self.cycle_tokens[g], (hi - 1) // self.cycle_tokens[g] + 1):
                docs, starts = self._cycle(g, c)
                chosen.append(docs[(starts >= lo) & (starts < hi)])
        order = np.random.default_rng([self.seed, 2, epoch]).permutation(np.concatenate(chosen))
        starts = np.concatenate([[0], np.cumsum(self.lengths[order])])  # [docs + 1]
        self._plans[epoch] = (order, starts)
        if len(self._plans) > 4:
            self._plans.popitem(last=False)
        return order, starts

    def epoch_of(self, pos: int) -> int:
        """The epoch that holds stream position `pos`."""
        while self.epoch_starts[-1] <= pos:
            e = len(self.epoch_starts) - 1
            self.epoch_starts.append(self.epoch_starts[-1] + int(self.plan(e)[1][-1]))
        return int(np.searchsorted(self.epoch_starts, pos, side="right")) - 1

    def pieces(self, pos: int, count: int) -> list[tuple[int, int, int]]:
        """(doc, offset, length) pieces covering stream positions [pos, pos + count)."""
        out = []
        epoch = self.epoch_of(pos)
        while count > 0:
            order, starts = self.plan(epoch)
            local = _walk(order, starts, self.lengths, pos - self.epoch_starts[epoch], count)
            out += local
            taken = sum(n for _, _, n in local)
            pos, count, epoch = pos + taken, count - taken, epoch + 1
            if count > 0:
                self.epoch_of(pos)  # make sure the next epoch's start is known
        return out


def sequential_pieces(lengths: np.ndarray, pos: int, count: int) -> list[tuple[int, int, int]]:
    """Pieces of the finite stream of all documents in index order (used for validation)."""
    order = np.arange(len(lengths))
    starts = np.concatenate([[0], np.cumsum(lengths)])
    return _walk(order, starts, lengths, pos, count)
