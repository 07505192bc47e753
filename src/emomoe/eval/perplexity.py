"""Loss and perplexity of a model over documents, overall and per domain."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from emomoe.eval.batching import make_windows, routing_without_pool, score_windows
from emomoe.eval.data import EvalDoc, tokenize_docs
from emomoe.model import EmoForCausalLM

DEFAULT_MAX_LENGTH = 1024


def default_max_length(model: EmoForCausalLM, max_length: int | None = None) -> int:
    """`max_length`, or min(1024, max_position_embeddings); raises ValueError if it exceeds the latter."""
    limit = model.config.max_position_embeddings
    if max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit)
    if not 1 <= max_length <= limit:
        raise ValueError(f"max_length ({max_length}) must lie in [1, max_position_embeddings={limit}]")
    return max_length


def document_losses(model: EmoForCausalLM, seqs: Sequence[Sequence[int]], max_length: int | None = None,
                    stride: int | None = None, batch_tokens: int = 8192, pad_id: int = 0,
                    progress: bool = False, desc: str = "eval") -> tuple[Tensor, Tensor]:
    """Summed next-token NLL [D] (float64) and scored tokens [D] per document.

    seqs: token ids per document, EOS appended (see `emomoe.eval.batching` for windowing).
    The model routes as it does in eval mode (its `pool_eval`, if any).
    """
    windows = make_windows(seqs, default_max_length(model, max_length), stride)
    nll, tokens, _ = score_windows(model, windows, batch_tokens, pad_id, progress, desc)
    doc = torch.tensor([w.doc for w in windows], dtype=torch.long)
    doc_nll = torch.zeros(len(seqs), dtype=torch.float64).index_add_(0, doc, nll)
    doc_tokens = torch.zeros(len(seqs), dtype=torch.long).index_add_(0, doc, tokens)
    return doc_nll, doc_tokens


def loss_summary(nll: float, tokens: int) -> dict:
    """{"loss", "ppl", "tokens"} from a summed NLL (nan loss for zero tokens)."""
    loss = nll / tokens if tokens else float("nan")
    return {"loss": loss, "ppl": math.exp(loss) if tokens else float("nan"), "tokens": int(tokens)}


def evaluate_documents(model: EmoForCausalLM, tokenizer, docs: Sequence[EvalDoc], max_length: int | None = None,
                       stride: int | None = None, batch_tokens: int = 8192, pool: bool = True,
                       progress: bool = False) -> dict:
    """Loss and perplexity over `docs`: `{"overall": {"loss", "ppl", "tokens"}, "by_domain": {name: ...}}`.

    Loss is the token-weighted mean NLL (nats) over every scored token; per domain likewise over
    that domain's documents. pool=False evaluates an EMO model without its eval pool.
    tokenizer: an `emomoe.data.Tokenizer` (needs encode_batch, eos_id, pad_id).
    """
    if not docs:
        raise ValueError("no documents to evaluate")
    seqs = tokenize_docs([d.text for d in docs], tokenizer)
    with routing_without_pool(model, active=not pool):
        nll, tokens = document_losses(model, seqs, max_length, stride, batch_tokens, tokenizer.pad_id, progress)
    names = sorted({d.domain for d in docs})
    domain_of = torch.tensor([names.index(d.domain) for d in docs])
    dom_nll = torch.zeros(len(names), dtype=torch.float64).index_add_(0, domain_of, nll)
    dom_tokens = torch.zeros(len(names), dtype=torch.long).index_add_(0, domain_of, tokens)
    return {
        "overall": loss_summary(float(nll.sum()), int(tokens.sum())),
        "by_domain": {n: loss_summary(float(dom_nll[i]), int(dom_tokens[i])) for i, n in enumerate(names)},
    }
