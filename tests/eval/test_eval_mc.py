import json

import pytest
import torch

from emomoe.eval import evaluate_mc, read_mc_task, score_continuations
from emomoe.eval.multiple_choice import parse_item, prompt

ITEMS = [
    {"question": "Which is code?", "choices": ["def add(x, y)", "The doctor", "Markets rallied"], "answer": 0,
     "examples": [{"question": "Which is news?", "choices": ["Stocks fell", "print(i)"], "answer": "Stocks fell"}]},
    {"question": "Which is health?", "choices": ["a cough", "the budget"], "answer": 0},
    {"question": "Pick the vote.", "choices": ["Parliament voted", "while True", "x = [1]"], "answer": 2},
]


def reference_logprob(model, tok, context, continuation):
    ctx, cont = tok.encode(context), tok.encode(continuation)
    ids = torch.tensor(ctx + cont)
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None, :-1]).logits[0].double(), -1)
    return sum(float(logp[len(ctx) - 1 + j, t]) for j, t in enumerate(cont))


def test_prompt_and_parsing():
    item = parse_item(ITEMS[0])
    assert item.examples[0].answer == 0
    assert prompt(item) == "Question: Which is news?\nAnswer: Stocks fell\n\nQuestion: Which is code?\nAnswer:"
    with pytest.raises(ValueError, match="'answer'"):
        parse_item({"question": "q", "choices": ["a", "b"], "answer": 5})
    with pytest.raises(ValueError, match="at least 2"):
        parse_item({"question": "q", "choices": ["a"], "answer": 0})


def test_scores_equal_direct_computation(model, tok):
    pairs = [("Question: Which is code?\nAnswer:", " def add"), ("The doctor ", "checked"), ("", "Rain")]
    logprob, greedy = score_continuations(model, tok, pairs, batch_tokens=32)
    assert logprob[0] == pytest.approx(reference_logprob(model, tok, *pairs[0]), rel=1e-5)
    # the trailing space moves to the continuation
    assert logprob[1] == pytest.approx(reference_logprob(model, tok, "The doctor", " checked"), rel=1e-5)
    # an empty context is replaced by EOS
    ids = torch.tensor([tok.eos_id] + tok.encode("Rain"))
    with torch.no_grad():
        logp = torch.log_softmax(model(ids[None, :-1]).logits[0].double(), -1)
    assert logprob[2] == pytest.approx(float(logp[torch.arange(len(ids) - 1), ids[1:]].sum()), rel=1e-5)
    assert greedy.dtype == torch.bool


def test_accuracy_matches_reference_picks(model, tok, tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ITEMS))
    items = read_mc_task(path)
    result = evaluate_mc(model, tok, items)
    hits = hits_norm = 0
    for item, (pick, pick_norm) in zip(items, result["predictions"]):
        scores = [reference_logprob(model, tok, prompt(item), " " + c) for c in item.choices]
        norm = [s / len(" " + c) for s, c in zip(scores, item.choices)]
        assert pick == max(range(len(scores)), key=scores.__getitem__)
        assert pick_norm == max(range(len(norm)), key=norm.__getitem__)
        hits += pick == item.answer
        hits_norm += pick_norm == item.answer
    assert result["n"] == 3
    assert result["acc"] == hits / 3 and result["acc_norm"] == hits_norm / 3


def test_bad_task_file(tmp_path):
    path = tmp_path / "task.jsonl"
    path.write_text('{"question": "q", "choices": ["a", "b"]}\n')
    with pytest.raises(ValueError, match=r"task.jsonl:1: 'answer'"):
        read_mc_task(path)
