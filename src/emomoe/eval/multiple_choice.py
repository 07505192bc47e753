"""Multiple-choice tasks from local JSONL, scored by the log-likelihood of each choice.

One record per line:
    {"question": "2 + 2 =", "choices": ["3", "4", "5"], "answer": 1,
     "examples": [{"question": "1 + 1 =", "choices": ["2", "7"], "answer": 0}]}
`answer` is the index of the correct choice, or its text. `examples` (optional) are few-shot
demonstrations written before the question with their correct answer. The prompt is
"Question: {question}\\nAnswer:" (demonstrations joined by a blank line) and each choice is
scored as the continuation " {choice}". `acc` picks the choice with the highest summed
log-likelihood; `acc_norm` the highest log-likelihood per character of the continuation
(independent of the tokenizer, so models with different tokenizers compare fairly).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from emomoe.eval.batching import Window, score_windows
from emomoe.eval.data import read_jsonl
from emomoe.eval.perplexity import default_max_length
from emomoe.model import EmoForCausalLM


@dataclass
class MCItem:
    """One question with its choices, the index of the correct one, and few-shot demonstrations."""

    question: str
    choices: list[str]
    answer: int
    examples: list[MCItem] | None = None


def parse_item(record: dict, where: str = "record") -> MCItem:
    """An MCItem from a JSON record (raises ValueError naming `where` and the problem)."""
    question, choices, answer = record.get("question"), record.get("choices"), record.get("answer")
    if not isinstance(question, str):
        raise ValueError(f"{where}: 'question' must be a string")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: 'choices' must be a list of at least 2 strings")
    if isinstance(answer, str) and answer in choices:
        answer = choices.index(answer)
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < len(choices):
        raise ValueError(f"{where}: 'answer' ({answer!r}) must be a choice index in [0, {len(choices)}) or "
                         "the text of a choice")
    examples = record.get("examples") or None
    if examples is not None:
        if not isinstance(examples, list):
            raise ValueError(f"{where}: 'examples' must be a list of records")
        examples = [parse_item(e, f"{where} example {i}") for i, e in enumerate(examples)]
    return MCItem(question, choices, answer, examples)


def read_mc_task(path: str | os.PathLike) -> list[MCItem]:
    """The items of a multiple-choice JSONL file (raises ValueError for a malformed or empty file)."""
    items = [parse_item(record, f"{path}:{number}") for number, record in read_jsonl(path)]
    if not items:
        raise ValueError(f"{path} holds no multiple-choice items")
    return items


def prompt(item: MCItem) -> str:
    """The context text of `item`: its demonstrations with answers, then its question."""
    shots = [f"Question: {e.question}\nAnswer: {e.choices[e.answer]}" for e in item.examples or []]
    return "\n\n".join(shots + [f"Question: {item.question}\nAnswer:"])


def continuation_windows(tokenizer, pairs: Sequence[tuple[str, str]], max_length: int) -> list[Window]:
    """One window per (context, continuation) scoring only the continuation's tokens.

    Trailing whitespace of the context moves to the continuation (BPE merges a space with the
    following word). An empty context is replaced by EOS, which precedes every document in
    training. Contexts are cut from the left so a window fits `max_length` inputs.
    """
    windows = []
    for i, (context, continuation) in enumerate(pairs):
        stripped = context.rstrip()
        continuation = context[len(stripped):] + continuation
        ctx = tokenizer.encode(stripped) if stripped else []
        cont = tokenizer.encode(continuation)
        if not cont:
            raise ValueError(f"continuation {continuation!r} has no tokens")
        ctx = [tokenizer.eos_id] + ctx if not ctx else ctx
        ids = (ctx + cont)[-(max_length + 1):]
        windows.append(Window(i, torch.tensor(ids), len(ids) - len(cont) - 1))
    return windows


def score_continuations(model: EmoForCausalLM, tokenizer, pairs: Sequence[tuple[str, str]],
                        max_length: int | None = None, batch_tokens: int = 8192, progress: bool = False
                        ) -> tuple[Tensor, Tensor]:
    """Log-likelihood [n] (float64) of each continuation given its context, and greedy [n] (bool)."""
    windows = continuation_windows(tokenizer, pairs, default_max_length(model, max_length))
    nll, _, greedy = score_windows(model, windows, batch_tokens, tokenizer.pad_id, progress, "score")
    return -nll, greedy


def evaluate_mc(model: EmoForCausalLM, tokenizer, items: Sequence[MCItem], max_length: int | None = None,
                batch_tokens: int = 8192, progress: bool = False) -> dict:
    """Accuracy on `items`: `{"n", "acc", "acc_norm", "predictions": [[acc pick, acc_norm pick], ...]}`."""
    pairs = []
    for item in items:
        context = prompt(item)
        pairs += [(context, " " + c) for c in item.choices]
    logprob, _ = score_continuations(model, tokenizer, pairs, max_length, batch_tokens, progress)
    chars = torch.tensor([len(c) for _, c in pairs], dtype=torch.float64)
    norm = logprob / chars
    hits = hits_norm = 0
    predictions, start = [], 0
    for item in items:
        n = len(item.choices)
        pick = int(logprob[start:start + n].argmax())
        pick_norm = int(norm[start:start + n].argmax())
        hits += pick == item.answer
        hits_norm += pick_norm == item.answer
        predictions.append([pick, pick_norm])
        start += n
    return {"n": len(items), "acc": hits / len(items), "acc_norm": hits_norm / len(items),
            "predictions": predictions}
