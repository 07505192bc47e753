import json
import math

import pytest
import torch

from emomoe.eval import EvalDoc, by_domain, evaluate_documents, make_batches, make_windows, read_documents
from emomoe.eval.batching import IGNORE


def docs_of(domains):
    return [EvalDoc(t, d) for d, texts in domains.items() for t in texts]


def reference_nll(model, ids, max_length):
    """Summed NLL of one document, the plain way: back-to-back windows, one sequence at a time."""
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, max_length):
        chunk = torch.tensor(ids[start:start + max_length + 1])
        with torch.no_grad():
            logp = torch.log_softmax(model(chunk[None, :-1]).logits[0].double(), -1)
        for t in range(chunk.numel() - 1):
            total -= float(logp[t, chunk[t + 1]])
            count += 1
    return total, count


@pytest.mark.parametrize("length,max_length,stride", [(1, 4, None), (2, 4, None), (9, 4, None), (9, 4, 1),
                                                      (10, 3, 2), (5, 8, 8)])
def test_windows_score_every_target_once(length, max_length, stride):
    seq = list(range(100, 100 + length))
    windows = make_windows([seq], max_length, stride)
    scored = []
    for w in windows:
        assert w.ids.numel() - 1 <= max_length
        start = seq.index(int(w.ids[0]))
        scored += [start + 1 + j for j in range(w.first, w.ids.numel() - 1)]
    assert scored == list(range(1, length))  # every token but the first is a target exactly once


def test_batches_pad_right_and_mask_targets():
    windows = make_windows([[5, 6, 7, 8], [9, 10]], max_length=8)
    (batch,) = make_batches(windows, batch_tokens=64, pad_id=1)
    assert batch.input_ids.tolist() == [[5, 6, 7], [9, 1, 1]]
    assert batch.targets.tolist() == [[6, 7, 8], [10, IGNORE, IGNORE]]
    assert batch.valid.sum().item() == 4
    assert [len(b.doc) for b in make_batches(windows, batch_tokens=3)] == [1, 1]


@pytest.mark.parametrize("max_length", [None, 5])
def test_loss_equals_direct_computation(model, tok, domains, max_length):
    docs = docs_of(domains)
    result = evaluate_documents(model, tok, docs, max_length=max_length, batch_tokens=64)
    by_dom = {}
    for d in docs:
        ids = tok.encode(d.text) + [tok.eos_id]
        nll, n = reference_nll(model, ids, max_length or 1024)
        acc = by_dom.setdefault(d.domain, [0.0, 0])
        acc[0] += nll
        acc[1] += n
    for name, (nll, n) in by_dom.items():
        assert result["by_domain"][name]["tokens"] == n
        assert result["by_domain"][name]["loss"] == pytest.approx(nll / n, rel=1e-5)
        assert result["by_domain"][name]["ppl"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    total = sum(v[0] for v in by_dom.values()) / sum(v[1] for v in by_dom.values())
    assert result["overall"]["loss"] == pytest.approx(total, rel=1e-5)


def test_emo_eval_pool_is_per_document_despite_padding(tok, domains, model_factory):
    """With pool_eval the pool of a padded row must equal that of the document alone."""
    model = model_factory(0, pool_eval=2)
    docs = docs_of(domains)
    batched = evaluate_documents(model, tok, docs, batch_tokens=512)
    single = evaluate_documents(model, tok, docs, batch_tokens=1)
    assert batched["overall"]["loss"] == pytest.approx(single["overall"]["loss"], rel=1e-5)
    no_pool = evaluate_documents(model, tok, docs, pool=False)
    assert no_pool["overall"]["loss"] != pytest.approx(batched["overall"]["loss"], rel=1e-6)
    assert model.config.pool_eval == 2  # restored


def test_read_documents(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a b"}) + "\n\n" + json.dumps({"text": "c", "domain": "x"}) + "\n"
                    + json.dumps({"text": "  ", "domain": "x"}) + "\n")
    docs = read_documents(path)
    assert [(d.text, d.domain) for d in docs] == [("a b", "unknown"), ("c", "x")]
    assert list(by_domain(docs)) == ["unknown", "x"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_documents(tmp_path / "missing.jsonl")
    path.write_text('{"text": "a"}\nnot json\n')
    with pytest.raises(ValueError, match=r"d.jsonl:2 is not valid JSON"):
        read_documents(path)
    path.write_text('{"body": "a"}\n')
    with pytest.raises(ValueError, match="no string field 'text'"):
        read_documents(path)
