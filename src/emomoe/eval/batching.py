"""Documents -> scored windows -> padded batches -> forward passes: the one loop every evaluation uses.

A document is its own sequence (never packed with another): its tokens, EOS appended as in
training, and the model predicts every token from the ones before it in the same document (the
first token has no context and is not scored, as in training). A document longer than
`max_length` inputs is cut into windows of `max_length` inputs starting every `stride` tokens;
each window is a fresh context and scores only the targets no earlier window scored, so every
target of a document is scored exactly once. `stride == max_length` (the default) gives
back-to-back windows (like training, where a cut document continues as a new chunk); a smaller
stride gives each window `max_length - stride` tokens of extra context at more compute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from emomoe.model import EmoForCausalLM, EmoOutput

IGNORE = -100


@dataclass
class Window:
    """One sequence to run: `ids` [n + 1] tokens (inputs ids[:-1], targets ids[1:]) of document `doc`.

    Targets before index `first` are context only (scored by an earlier window, or a prompt).
    """

    doc: int
    ids: Tensor
    first: int = 0


@dataclass
class Batch:
    """Right-padded windows: pads come after the real tokens, so causal attention stays exact."""

    input_ids: Tensor  # [B, T]
    targets: Tensor  # [B, T] next token, IGNORE where not scored (context, padding)
    valid: Tensor  # [B, T] bool, real input tokens
    window: Tensor  # [B] index into the window list
    doc: Tensor  # [B] document index of each row


def make_windows(seqs: Sequence[Sequence[int] | Tensor], max_length: int, stride: int | None = None
                 ) -> list[Window]:
    """Windows of at most `max_length` inputs covering every target of every sequence once.

    seqs: token ids per document (EOS already appended). Documents with fewer than 2 tokens
    have no target and get no window. Raises ValueError for a bad max_length or stride.
    """
    stride = max_length if stride is None else stride
    if max_length < 1 or not 1 <= stride <= max_length:
        raise ValueError(f"need max_length >= 1 and 1 <= stride <= max_length, got max_length={max_length}, "
                         f"stride={stride}")
    out = []
    for doc, seq in enumerate(seqs):
        ids = torch.as_tensor(seq, dtype=torch.long).reshape(-1)
        num_targets = ids.numel() - 1
        scored = 0  # targets [0, scored) are done
        start = 0
        while scored < num_targets:
            end = min(start + max_length, num_targets)  # targets [start, end) are in this window
            out.append(Window(doc, ids[start:end + 1], scored - start))
            scored = end
            start += stride
    return out


def make_batches(windows: Sequence[Window], batch_tokens: int = 8192, pad_id: int = 0) -> list[Batch]:
    """Length-sorted (longest first) padded batches of at most `batch_tokens` tokens (>= 1 window)."""
    order = sorted(range(len(windows)), key=lambda i: -windows[i].ids.numel())
    batches, start = [], 0
    while start < len(order):
        width = windows[order[start]].ids.numel() - 1
        size = max(1, batch_tokens // max(width, 1))
        rows = order[start:start + size]
        start += len(rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        targets = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        valid = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, i in enumerate(rows):
            w = windows[i]
            n = w.ids.numel() - 1
            input_ids[r, :n] = w.ids[:-1]
            targets[r, w.first:n] = w.ids[w.first + 1:]
            valid[r, :n] = True
        batches.append(Batch(input_ids, targets, valid, torch.tensor(rows),
                             torch.tensor([windows[i].doc for i in rows])))
    return batches


@contextlib.contextmanager
def routing_without_pool(model: EmoForCausalLM, active: bool = True) -> Iterator[EmoForCausalLM]:
    """Inside the block `model` evaluates without an EMO pool (config.pool_eval = None) if `active`."""
    saved = model.config
    if active and saved.pool_eval is not None:
        model.config = saved.replace(pool_eval=None)
    try:
        yield model
    finally:
        model.config = saved


@torch.no_grad()
def iter_forward(model: EmoForCausalLM, batches: Sequence[Batch], progress: bool = False,
                 desc: str = "eval") -> Iterator[tuple[Batch, EmoOutput]]:
    """Run the model (eval mode) on each batch; yields (batch moved to the model's device, output).

    Padding gets document id -1 so an EMO pool (when the model applies one at eval) is computed
    per window over its real tokens only.
    """
    from tqdm.auto import tqdm

    if model.training:
        raise ValueError("evaluate a model in eval mode (call model.eval())")
    device = next(model.parameters()).device
    total = sum(int(b.valid.sum()) for b in batches)
    with tqdm(total=total, desc=desc, unit="tok", disable=not progress, leave=False) as bar:
        for b in batches:
            b = Batch(*(t.to(device) for t in (b.input_ids, b.targets, b.valid, b.window, b.doc)))
            doc_ids = torch.where(b.valid, 0, -1) if model.uses_pool() else None
            yield b, model(b.input_ids, doc_ids=doc_ids)
            bar.update(int(b.valid.sum()))


def token_nll(logits: Tensor, targets: Tensor) -> Tensor:
    """Per-token negative log-likelihood [B, T] in fp32 (0 where the target is IGNORE)."""
    flat = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                           reduction="none")
    return flat.view_as(targets)


def score_windows(model: EmoForCausalLM, windows: Sequence[Window], batch_tokens: int = 8192,
                  pad_id: int = 0, progress: bool = False, desc: str = "eval"
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """Summed NLL [W] (float64), scored tokens [W] and greedy [W] (bool: every scored target is the argmax)."""
    nll = torch.zeros(len(windows), dtype=torch.float64)
    tokens = torch.zeros(len(windows), dtype=torch.long)
    greedy = torch.ones(len(windows), dtype=torch.bool)
    for b, out in iter_forward(model, make_batches(windows, batch_tokens, pad_id), progress, desc):
        scored = b.targets != IGNORE
        rows = b.window.cpu()
        nll[rows] = token_nll(out.logits, b.targets).double().sum(-1).cpu()
        tokens[rows] = scored.sum(-1).cpu()
        hit = (out.logits.argmax(-1) == b.targets) | ~scored
        greedy[rows] = hit.all(-1).cpu()
    return nll, tokens, greedy
