"""Evaluation: loss/perplexity per domain, multiple-choice accuracy, modularity curves, lm-eval adapter.

    docs = read_documents("val.jsonl")                                   # [EvalDoc(text, domain)]
    evaluate_documents(model, tokenizer, docs)                            # {"overall", "by_domain"}
    evaluate_mc(model, tokenizer, read_mc_task("task.jsonl"))             # {"acc", "acc_norm"}
    modularity_curve(model, by_domain(docs), tokenizer, [1, 0.5, 0.25])   # {"full", "keep"}

See docs/eval.md.
"""

from emomoe.eval.batching import make_batches, make_windows, routing_without_pool, score_windows
from emomoe.eval.data import EvalDoc, by_domain, limit_per_domain, read_documents, tokenize_docs
from emomoe.eval.modularity import domain_table, markdown_table, modularity_curve, plot_curves
from emomoe.eval.multiple_choice import MCItem, evaluate_mc, read_mc_task, score_continuations
from emomoe.eval.perplexity import document_losses, evaluate_documents

__all__ = [
    "EvalDoc", "read_documents", "by_domain", "limit_per_domain", "tokenize_docs", "make_windows",
    "make_batches", "score_windows", "routing_without_pool", "document_losses", "evaluate_documents",
    "MCItem", "read_mc_task", "evaluate_mc", "score_continuations", "modularity_curve", "markdown_table",
    "domain_table", "plot_curves",
]
