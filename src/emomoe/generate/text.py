"""Text in, text out: `generate` (tokenize, decode, stop strings) and incremental text streaming."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from emomoe.generate.loop import GenerationOutput, generate_ids
from emomoe.generate.sampling import Sampling
from emomoe.model import EmoForCausalLM

# (row, newly decoded text): called as text becomes final, in order
OnText = Callable[[int, str], None]


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """`text` up to the earliest stop string (excluded), and whether one occurred."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def held_back(text: str, stop: Sequence[str]) -> int:
    """How many trailing characters may still change: an unfinished UTF-8 character (decoded as
    U+FFFD) or the start of a stop string."""
    keep = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                keep = max(keep, n)
                break
    while keep < len(text) and text[len(text) - keep - 1] == "\ufffd":
        keep += 1
    return keep


class TextStream:
    """Turns generated token ids into text per row, calling `on_text` with each final piece.

    Each step decodes the row's ids so far (byte-level BPE pieces can merge across tokens) and
    emits what follows the already emitted prefix, holding back what may still change.
    """

    def __init__(self, tokenizer, batch: int, stop: Sequence[str] = (), on_text: OnText | None = None,
                 eos_id: int | None = None) -> None:
        self.tokenizer, self.stop, self.on_text, self.eos_id = tokenizer, list(stop), on_text, eos_id
        self.ids: list[list[int]] = [[] for _ in range(batch)]
        self.emitted = [0] * batch
        self.stopped = [False] * batch

    def text(self, row: int) -> str:
        """The row's text so far, cut at a stop string; EOS is not text."""
        ids = self.ids[row]
        if ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        return cut_at_stop(self.tokenizer.decode(ids), self.stop)[0]

    def on_token(self, row: int, token: int) -> None:
        """Record one generated token of `row` and emit the text that became final."""
        self.ids[row].append(token)
        full = self.tokenizer.decode(self.ids[row][:-1] if token == self.eos_id else self.ids[row])
        text, hit = cut_at_stop(full, self.stop)
        self.stopped[row] = hit
        final = len(text) if hit or token == self.eos_id else len(text) - held_back(text, self.stop)
        self._emit(row, text, final)

    def stop_check(self, row: int, ids: list[int]) -> bool:
        """A `StopCheck` for `generate_ids`: whether the row's text reached a stop string."""
        return self.stopped[row]

    def finish(self, row: int) -> str:
        """Emit whatever is left of `row` and return its final text."""
        text = self.text(row)
        self._emit(row, text, len(text))
        return text

    def _emit(self, row: int, text: str, upto: int) -> None:
        if upto > self.emitted[row]:
            if self.on_text is not None:
                self.on_text(row, text[self.emitted[row]:upto])
            self.emitted[row] = upto


def generate(
    model: EmoForCausalLM,
    tokenizer,
    prompts: str | Sequence[str],
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    pool: int | None = None,
    pools: list[torch.Tensor] | None = None,
    on_text: OnText | None = None,
    use_cache: bool = True,
) -> GenerationOutput:
    """Generate continuations of text prompts with an EmoForCausalLM and an `emomoe.data.Tokenizer`.

    prompts: one string or a list (batched; different lengths are fine). temperature 0 is greedy;
    otherwise sampling with top_k / top_p, reproducible with `seed`. A row ends at the
    tokenizer's EOS, at the first of the `stop` strings (cut from its text), or after
    `max_new_tokens`. pool: adaptive pool of that many routed experts per layer chosen by each
    prompt (see `emomoe.generate.pool`). on_text(row, piece) streams text as it is generated.
    Returns a GenerationOutput whose `texts` hold the continuations (prompt excluded).
    Raises ValueError for empty prompts, bad sampling settings, or a prompt that does not fit.
    """
    texts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not texts:
        raise ValueError("no prompts given")
    sampling = Sampling(temperature, top_k, top_p, seed)
    encoded = [tokenizer.encode(t) for t in texts]
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"prompt {i} is empty: nothing to continue")
    stream = TextStream(tokenizer, len(texts), stop, on_text, tokenizer.eos_id)
    out = generate_ids(model, encoded, max_new_tokens, sampling, eos_id=tokenizer.eos_id, pad_id=tokenizer.pad_id,
                       pool=pool, pools=pools, use_cache=use_cache, stop=stream.stop_check if stop else None,
                       on_token=stream.on_token)
    out.texts = [stream.finish(row) for row in range(len(texts))]
    return out
