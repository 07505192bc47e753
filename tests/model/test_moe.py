"""The MoE layer against a naive per-token loop; grouped matmul paths; gradients."""

import pytest
import torch

import emomoe.model.moe as moe_mod
from emomoe.model.moe import MoE, expert_matmul


def naive_moe(moe, x):
    """Per token, per chosen expert: weight * down(silu(gate(x)) * up(x)), summed in expert order."""
    flat = x.reshape(-1, x.shape[-1])
    r = moe.gate(flat)
    ex = moe.experts
    out = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        pairs = sorted(zip(r.expert_ids[n].tolist(), r.weights[n].tolist()))
        for e, w in pairs:
            h = torch.nn.functional.silu(ex.gate_proj[e] @ flat[n]) * (ex.up_proj[e] @ flat[n])
            out[n] += w * (ex.down_proj[e] @ h)
    return out.view_as(x)


def make_moe(experts=8, shared=1, top_k=3, d=16, h=8, seed=0):
    torch.manual_seed(seed)
    moe = MoE(d, h, experts, shared, top_k)
    moe.reset_parameters(0.3, 0.3)
    return moe


IMPLS = ["fused", "grouped", "loop"]


def set_impl(moe, impl, monkeypatch):
    if impl == "loop":
        monkeypatch.setattr(moe_mod, "_GROUPED_MM", None)
        impl = "grouped"
    moe.experts.impl = impl


@pytest.mark.parametrize("impl", IMPLS)
def test_moe_equals_naive_loop(impl, monkeypatch):
    moe = make_moe()
    set_impl(moe, impl, monkeypatch)
    x = torch.randn(2, 7, 16)
    out, _ = moe(x)
    torch.testing.assert_close(out, naive_moe(moe, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", IMPLS)
def test_all_implementations_give_the_same_gradients(impl, monkeypatch):
    moe = make_moe()
    x = torch.randn(3, 11, 16)
    grad = torch.randn(3, 11, 16)

    def grads(m):
        xx = x.clone().requires_grad_()
        out, routing = m(xx)
        (out * grad).sum().backward()
        return [xx.grad] + [p.grad.clone() for p in m.parameters()]

    ref = grads(moe)  # auto = fused on CPU
    moe.zero_grad()
    set_impl(moe, impl, monkeypatch)
    for a, b in zip(ref, grads(moe)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_experts_gradcheck():
    torch.manual_seed(0)
    # 7 assignments sorted by expert: counts per expert [2, 0, 3, 2] (expert 1 unused)
    counts = torch.tensor([2, 0, 3, 2])
    token_idx = torch.tensor([0, 3, 1, 3, 4, 0, 2])
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.rand(7, dtype=torch.float64, requires_grad=True)
    g, u = (torch.randn(4, 3, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
    d = torch.randn(4, 6, 3, dtype=torch.float64, requires_grad=True)
    fn = lambda x, w, g, u, d: moe_mod._FusedExperts.apply(x, w, token_idx, counts, g, u, d)
    assert torch.autograd.gradcheck(fn, (x, w, g, u, d))


def test_expert_matmul_paths_agree_with_empty_experts():
    torch.manual_seed(0)
    counts = torch.tensor([3, 0, 5, 0, 2])
    x = torch.randn(int(counts.sum()), 8, requires_grad=True)
    w = torch.randn(5, 16, 8, requires_grad=True)
    offsets = counts.cumsum(0).to(torch.int32)
    grad = torch.randn(int(counts.sum()), 16)
    expert_matmul(x, w, counts, offsets).backward(grad)
    gx, gw = x.grad.clone(), w.grad.clone()
    x.grad = w.grad = None
    moe_mod._loop_mm(x, w, counts).backward(grad)
    torch.testing.assert_close(gx, x.grad)
    torch.testing.assert_close(gw, w.grad)
    assert (gw[1] == 0).all() and (gw[3] == 0).all()


def test_expert_matmul_accepts_non_contiguous_gradient():
    counts = torch.tensor([2, 2])
    x = torch.randn(4, 8, requires_grad=True)
    w = torch.randn(2, 8, 8, requires_grad=True)
    expert_matmul(x, w, counts, counts.cumsum(0).to(torch.int32)).sum().backward()  # expanded grad
    assert x.grad is not None and w.grad is not None


def test_gradients_reach_router_and_all_used_experts():
    moe = make_moe()
    x = torch.randn(4, 16, 16)
    out, routing = moe(x)
    (out.square().mean() + routing.mean_probs.square().sum()).backward()
    assert moe.gate.weight.grad.abs().sum() > 0
    used = routing.expert_ids.unique()
    for p in (moe.experts.gate_proj, moe.experts.up_proj, moe.experts.down_proj):
        assert (p.grad[used].flatten(1).abs().sum(-1) > 0).all()


def test_moe_bf16_close_to_fp32():
    moe = make_moe(d=16, h=16)
    x = torch.randn(3, 5, 16)
    ref, _ = moe(x)
    out, _ = moe.to(torch.bfloat16)(x.bfloat16())
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
