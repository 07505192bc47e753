"""Modularity curves: how much each domain's loss rises when only a domain-chosen subset of experts is kept.

For every domain the first `calib_docs` documents choose the experts (`emomoe.select.select_experts`)
and the next ones (at most `max_docs_per_domain`) are evaluated with routing restricted to the kept
experts (`Router.allowed`, equal to the pruned model's logits). The model routes without an EMO
pool throughout (the released inference routing), so EMO and standard MoE are compared alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from emomoe.eval.batching import routing_without_pool
from emomoe.eval.data import tokenize_docs
from emomoe.eval.perplexity import default_max_length, document_losses
from emomoe.model import EmoForCausalLM
from emomoe.select import resolve_keep, select_experts


def keep_key(frac: float) -> str:
    """The JSON key of a keep fraction: str(float), e.g. "1.0", "0.5", "0.125"."""
    return str(float(frac))


def _clear_masks(model: EmoForCausalLM) -> None:
    for layer in model.model.layers:
        layer.mlp.gate.allowed = None


def split_domains(docs_by_domain: Mapping[str, Sequence[str]], calib_docs: int,
                  max_docs_per_domain: int | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """(calibration texts, evaluation texts) per domain: the first `calib_docs`, then the next ones.

    Raises ValueError for a domain without at least calib_docs + 1 documents.
    """
    if calib_docs < 1:
        raise ValueError(f"calib_docs ({calib_docs}) must be >= 1")
    if not docs_by_domain:
        raise ValueError("no domains to evaluate")
    out = {}
    for name, texts in docs_by_domain.items():
        if len(texts) <= calib_docs:
            raise ValueError(f"domain {name!r} has {len(texts)} document(s) but needs at least {calib_docs + 1}: "
                             f"{calib_docs} for calibration (--calib-docs) and 1 or more, disjoint, to evaluate")
        end = None if max_docs_per_domain is None else calib_docs + max_docs_per_domain
        out[name] = (list(texts[:calib_docs]), list(texts[calib_docs:end]))
    return out


def modularity_curve(model: EmoForCausalLM, docs_by_domain: Mapping[str, Sequence[str]], tokenizer,
                     keep_fracs: Sequence[float] = (1.0, 0.5, 0.25, 0.125), method: str = "global",
                     calib_docs: int = 4, max_docs_per_domain: int | None = None, max_length: int | None = None,
                     batch_tokens: int = 8192, seed: int = 0, progress: bool = False) -> dict:
    """Loss per domain of the full model and of each domain's expert subset, for each keep fraction.

    docs_by_domain: texts per domain (file order; see `split_domains`). tokenizer: an
    `emomoe.data.Tokenizer`. keep_fracs: fractions of each layer's experts to keep (K counts the
    shared expert, rounded; must be >= num_experts_per_tok). Returns
    `{"full": {"avg_loss", "by_domain": {domain: loss}},
      "keep": {"0.5": {"avg_loss", "avg_rel_increase", "by_domain": {...}, "rel_increase": {...},
                       "experts": [K per layer]}, ...},
      "domains": {domain: {"calib_docs", "eval_docs", "tokens"}}}`
    where a domain's loss is its token-weighted mean NLL, avg_loss the mean over domains and
    avg_rel_increase the mean over domains of (subset loss / full loss - 1). The model is left
    unchanged. Raises ValueError for an impossible keep fraction or a domain with too few documents.
    """
    cfg = model.config
    experts = {}
    for frac in keep_fracs:
        try:
            experts[keep_key(frac)] = resolve_keep(cfg, keep_frac=float(frac))
        except ValueError as exc:
            kept = round(float(frac) * cfg.experts_in_layer(0))
            raise ValueError(f"keep fraction {frac:g} gives {kept} experts of {cfg.experts_in_layer(0)} in layer 0: "
                             f"{exc}") from None
    max_length = default_max_length(model, max_length)
    splits = split_domains(docs_by_domain, calib_docs, max_docs_per_domain)
    full, subset = {}, {key: {} for key in experts}
    domains = {}
    saved = [layer.mlp.gate.allowed for layer in model.model.layers]
    try:
        with routing_without_pool(model):
            for name, (calib_texts, eval_texts) in splits.items():
                calib = [ids[:max_length] for ids in tokenize_docs(calib_texts, tokenizer)]
                seqs = tokenize_docs(eval_texts, tokenizer)
                _clear_masks(model)
                nll, tokens = document_losses(model, seqs, max_length, None, batch_tokens, tokenizer.pad_id,
                                              progress, f"{name} full")
                full[name] = float(nll.sum() / tokens.sum())
                domains[name] = {"calib_docs": len(calib_texts), "eval_docs": len(eval_texts),
                                 "tokens": int(tokens.sum())}
                for frac in keep_fracs:
                    key = keep_key(frac)
                    _clear_masks(model)
                    selection = select_experts(model, calib, keep=experts[key], method=method, seed=seed,
                                               max_length=max_length, batch_tokens=batch_tokens)
                    selection.mask_model(model)
                    nll, tokens = document_losses(model, seqs, max_length, None, batch_tokens, tokenizer.pad_id,
                                                  progress, f"{name} keep {key}")
                    subset[key][name] = float(nll.sum() / tokens.sum())
    finally:
        for layer, allowed in zip(model.model.layers, saved):
            layer.mlp.gate.allowed = allowed
    names = list(splits)
    out = {"full": {"avg_loss": _mean(full.values()), "by_domain": full}, "keep": {}, "domains": domains}
    for key, losses in subset.items():
        rel = {n: losses[n] / full[n] - 1.0 for n in names}
        out["keep"][key] = {"avg_loss": _mean(losses.values()), "avg_rel_increase": _mean(rel.values()),
                            "by_domain": losses, "rel_increase": rel, "experts": experts[key]}
    return out


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _frac_label(frac: float) -> str:
    inverse = 1.0 / frac
    return "all" if frac == 1.0 else (f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-9 else f"{frac:g}")


def markdown_table(curves: Mapping[str, dict]) -> str:
    """Markdown table: one row per keep fraction, per model the mean loss and mean relative increase."""
    names = list(curves)
    keys = sorted({k for c in curves.values() for k in c["keep"]}, key=float, reverse=True)
    head = "| experts kept | " + " | ".join(f"{n}: mean loss | {n}: mean increase" for n in names) + " |"
    lines = [head, "|---|" + "---|---|" * len(names)]
    lines.append("| full model | " + " | ".join(f"{curves[n]['full']['avg_loss']:.4f} | -" for n in names) + " |")
    for key in keys:
        cells = []
        for n in names:
            entry = curves[n]["keep"].get(key)
            cells.append("- | -" if entry is None else
                         f"{entry['avg_loss']:.4f} | {100 * entry['avg_rel_increase']:+.2f}%")
        ks = next(curves[n]["keep"][key]["experts"] for n in names if key in curves[n]["keep"])
        lines.append(f"| {_frac_label(float(key))} ({ks[0]} per layer) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def domain_table(curve: dict) -> str:
    """Markdown table of one model: relative loss increase per domain (rows) and keep fraction (columns)."""
    keys = sorted(curve["keep"], key=float, reverse=True)
    lines = ["| domain | full loss | " + " | ".join(_frac_label(float(k)) for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for name, loss in curve["full"]["by_domain"].items():
        cells = " | ".join(f"{100 * curve['keep'][k]['rel_increase'][name]:+.2f}%" for k in keys)
        lines.append(f"| {name} | {loss:.4f} | {cells} |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: Mapping[str, dict], path: str | Path) -> Path:
    """PNG: mean relative loss increase (left) and mean loss (right) against the fraction of experts kept."""
    from emomoe.analysis.plots import pyplot

    plt = pyplot()
    fig, (ax_rel, ax_abs) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, curve in curves.items():
        fracs = sorted((float(k) for k in curve["keep"]), reverse=True)
        rel = [100 * curve["keep"][keep_key(f)]["avg_rel_increase"] for f in fracs]
        loss = [curve["keep"][keep_key(f)]["avg_loss"] for f in fracs]
        ax_rel.plot(fracs, rel, marker="o", label=name)
        line = ax_abs.plot(fracs, loss, marker="o", label=name)[0]
        ax_abs.axhline(curve["full"]["avg_loss"], color=line.get_color(), linestyle=":", linewidth=1)
    all_fracs = sorted({float(k) for c in curves.values() for k in c["keep"]})
    for ax in (ax_rel, ax_abs):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_fracs, [_frac_label(f) for f in all_fracs])
        ax.invert_xaxis()
        ax.set_xlabel("fraction of experts kept (per domain)")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_rel.axhline(0, color="grey", linewidth=0.8)
    ax_rel.set_ylabel("mean loss increase over domains (%)")
    ax_abs.set_ylabel("mean loss over domains (nats; dotted: full model)")
    fig.suptitle("Domain expert subsets: quality vs experts kept")
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
