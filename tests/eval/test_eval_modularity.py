import pytest
import torch

from emomoe.eval import document_losses, modularity_curve, tokenize_docs
from emomoe.eval.modularity import markdown_table, split_domains
from emomoe.select import prune_model, select_experts


def test_curve_shape_and_keep_one_equals_full(model, tok, domains):
    curve = modularity_curve(model, domains, tok, [1.0, 0.5], calib_docs=2, max_docs_per_domain=3)
    assert set(curve) >= {"full", "keep"}
    assert set(curve["keep"]) == {"1.0", "0.5"}
    full = curve["full"]["by_domain"]
    assert set(full) == set(domains)
    assert curve["full"]["avg_loss"] == pytest.approx(sum(full.values()) / 3)
    one = curve["keep"]["1.0"]
    for name in domains:
        assert one["by_domain"][name] == pytest.approx(full[name], rel=1e-6)
    assert one["avg_rel_increase"] == pytest.approx(0.0, abs=1e-6)
    half = curve["keep"]["0.5"]
    assert half["experts"] == [4, 4]
    rel = [half["by_domain"][n] / full[n] - 1 for n in domains]
    assert half["avg_rel_increase"] == pytest.approx(sum(rel) / 3)
    assert half["by_domain"] != full  # a real restriction
    assert curve["domains"]["code"] == {"calib_docs": 2, "eval_docs": 3, "tokens": curve["domains"]["code"]["tokens"]}
    assert all(layer.mlp.gate.allowed is None for layer in model.model.layers)  # model left unchanged
    table = markdown_table({"emo": curve})
    assert "| 1/2 (4 per layer) |" in table and "full model" in table


def test_subset_loss_equals_pruned_model(model, tok, domains):
    """Routing restricted via `allowed` must give the pruned model's loss."""
    calib, held = split_domains(domains, 2)["news"]
    curve = modularity_curve(model, {"news": domains["news"]}, tok, [0.5], calib_docs=2)
    selection = select_experts(model, tokenize_docs(calib, tok), keep=[4, 4], method="global")
    nll, tokens = document_losses(prune_model(model, selection).eval(), tokenize_docs(held, tok))
    assert curve["keep"]["0.5"]["by_domain"]["news"] == pytest.approx(float(nll.sum() / tokens.sum()), rel=1e-5)


def test_emo_pool_is_switched_off_and_restored(tok, domains, model_factory):
    model = model_factory(0, pool_eval=2)
    curve = modularity_curve(model, domains, tok, [1.0], calib_docs=1, max_docs_per_domain=2)
    plain = model_factory(0)
    assert curve == modularity_curve(plain, domains, tok, [1.0], calib_docs=1, max_docs_per_domain=2)
    assert model.config.pool_eval == 2


def test_errors(model, tok, domains):
    with pytest.raises(ValueError, match=r"domain 'news' has 2 document\(s\) but needs at least 5"):
        modularity_curve(model, {"news": domains["news"][:2]}, tok, [1.0], calib_docs=4)
    with pytest.raises(ValueError, match=r"keep fraction 0.125 gives 1 experts of 8 in layer 0: .* >= num_experts"):
        modularity_curve(model, domains, tok, [0.125])
    with pytest.raises(ValueError, match="calib_docs"):
        split_domains(domains, 0)
    assert torch.is_grad_enabled()
