"""The MoE layer: stacked SwiGLU experts with dropless grouped dispatch.

Assignments (token, expert) are sorted by expert so each expert's tokens form one contiguous
slice and every active expert runs once on its slice. Two implementations of that: on GPUs
one gather + a grouped matmul (`torch.nn.functional.grouped_mm` where this PyTorch has it for
the device and dtype, else a loop over the active experts) + one scatter-add; on CPUs a fused
per-expert loop with a hand-written backward that keeps every intermediate cache-sized.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from emomoe.model.router import Router, Routing

_GROUPED_MM = getattr(F, "grouped_mm", None)
_grouped_mm_works: dict[tuple[str, torch.dtype], bool] = {}


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward makes the incoming gradient contiguous (grouped_mm needs it)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        return grad.contiguous()


def _loop_mm(x: Tensor, weight: Tensor, counts: Tensor) -> Tensor:
    sizes = counts.tolist()
    parts = [xe @ we.t() for xe, we, n in zip(x.split(sizes), weight.unbind(0), sizes) if n]
    return torch.cat(parts) if parts else x.new_zeros(0, weight.shape[1])


def expert_matmul(x: Tensor, weight: Tensor, counts: Tensor, offsets: Tensor) -> Tensor:
    """Per-expert x_e @ weight[e].T on expert-sorted rows.

    x: [M, in] rows grouped by expert (expert e owns counts[e] consecutive rows).
    weight: [E, out, in] (the Hugging Face nn.Linear layout). offsets: int32 cumsum of counts.
    Returns [M, out].
    """
    key = (x.device.type, x.dtype)
    aligned = x.dtype == torch.float32 or (weight.shape[1] % 8 == 0 and weight.shape[2] % 8 == 0)
    if _GROUPED_MM is not None and aligned and _grouped_mm_works.get(key, True) and x.shape[0]:
        try:
            out = _GROUPED_MM(x, weight.transpose(1, 2), offs=offsets)
            _grouped_mm_works[key] = True
            return _ContiguousGrad.apply(out)
        except (RuntimeError, NotImplementedError):
            _grouped_mm_works[key] = False  # this device/dtype has no kernel: loop from now on
    return _loop_mm(x, weight, counts)


class _FusedExperts(torch.autograd.Function):
    """Dropless SwiGLU experts, one expert at a time, with a hand-written backward.

    Built for CPUs: every intermediate is one expert's slice (cache-sized), nothing of size
    [N*k, d] is materialised, and the backward needs no [N, d] zero tensors per expert. The
    gradient of the routing weights comes from (gout @ D_e) . hid, so no output is stored.
    """

    @staticmethod
    def forward(ctx, x, weights, token_idx, counts, gate_w, up_w, down_w):  # noqa: D102
        sizes = counts.tolist()
        hidden_dim = gate_w.shape[1]
        pre_gate = x.new_empty(token_idx.shape[0], hidden_dim)  # [M, h] saved for backward
        pre_up = x.new_empty(token_idx.shape[0], hidden_dim)
        out = torch.zeros_like(x)
        start = 0
        for e, n in enumerate(sizes):
            if n:
                idx = token_idx[start:start + n]
                xe = x.index_select(0, idx)
                a = torch.mm(xe, gate_w[e].t(), out=pre_gate[start:start + n])
                b = torch.mm(xe, up_w[e].t(), out=pre_up[start:start + n])
                y = torch.mm(F.silu(a) * b, down_w[e].t())
                out.index_add_(0, idx, y * weights[start:start + n, None])
            start += n
        ctx.sizes = sizes
        ctx.save_for_backward(x, weights, token_idx, gate_w, up_w, down_w, pre_gate, pre_up)
        return out

    @staticmethod
    def backward(ctx, gout):  # noqa: D102
        x, weights, token_idx, gate_w, up_w, down_w, pre_gate, pre_up = ctx.saved_tensors
        gout = gout.contiguous()
        gx = torch.zeros_like(x)
        gw = torch.empty_like(weights)
        g_gate, g_up, g_down = torch.zeros_like(gate_w), torch.zeros_like(up_w), torch.zeros_like(down_w)
        start = 0
        for e, n in enumerate(ctx.sizes):
            if n:
                sl = slice(start, start + n)
                idx = token_idx[sl]
                xe, gy = x.index_select(0, idx), gout.index_select(0, idx)
                a, b, w = pre_gate[sl], pre_up[sl], weights[sl, None]
                sig = torch.sigmoid(a)
                act = a * sig
                hid = act * b
                g_hid = torch.mm(gy, down_w[e])  # [n, h], before the routing weight
                gw[sl] = (g_hid * hid).sum(-1)
                g_hid = g_hid * w
                torch.mm(gy.t(), hid * w, out=g_down[e])
                ga = g_hid * b * (sig * (1 + a * (1 - sig)))
                gb = g_hid * act
                torch.mm(ga.t(), xe, out=g_gate[e])
                torch.mm(gb.t(), xe, out=g_up[e])
                gx.index_add_(0, idx, torch.mm(ga, gate_w[e]) + torch.mm(gb, up_w[e]))
            start += n
        return gx, gw, None, None, g_gate, g_up, g_down


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked weights: down(silu(gate(x)) * up(x)).

    `impl` picks the dispatch: "fused" (per-expert, hand-written backward; the CPU default),
    "grouped" (one sort + gather + grouped matmul; the default elsewhere), or "auto".
    """

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))  # [E, h, d]
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))  # [E, h, d]
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))  # [E, d, h]
        self.impl = "auto"

    @property
    def num_experts(self) -> int:
        return self.gate_proj.shape[0]

    def forward(self, x: Tensor, expert_ids: Tensor, weights: Tensor) -> Tensor:
        """Combine the experts: x [N, d], expert_ids / weights [N, k] -> [N, d].

        out[n] = sum_j weights[n, j] * expert_{ids[n, j]}(x[n]); weights are cast to x's dtype
        first and contributions are added in ascending expert order, as the released code does.
        """
        device_type = x.device.type
        if torch.is_autocast_enabled(device_type):  # the dispatch casts explicitly: run it outside autocast
            dtype = torch.get_autocast_dtype(device_type)
            with torch.autocast(device_type, enabled=False):
                return self._combine(x.to(dtype), expert_ids, weights, self.gate_proj.to(dtype),
                                     self.up_proj.to(dtype), self.down_proj.to(dtype))
        return self._combine(x, expert_ids, weights, self.gate_proj, self.up_proj, self.down_proj)

    def _combine(self, x: Tensor, expert_ids: Tensor, weights: Tensor, gate_w: Tensor, up_w: Tensor,
                 down_w: Tensor) -> Tensor:
        top_k = expert_ids.shape[1]
        flat_ids = expert_ids.reshape(-1)  # [N*k]
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=self.num_experts)  # [E]
        token_idx = order // top_k  # [N*k] source token of each sorted assignment
        sorted_weights = weights.reshape(-1)[order].to(x.dtype)  # [N*k]
        impl = self.impl if self.impl != "auto" else ("fused" if x.device.type == "cpu" else "grouped")
        if impl == "fused":
            return _FusedExperts.apply(x, sorted_weights, token_idx, counts, gate_w, up_w, down_w)
        offsets = counts.cumsum(0).to(torch.int32)
        xs = x[token_idx]  # [N*k, d]
        hidden = F.silu(expert_matmul(xs, gate_w, counts, offsets))
        hidden = hidden * expert_matmul(xs, up_w, counts, offsets)
        ys = expert_matmul(hidden, down_w, counts, offsets)  # [N*k, d]
        return torch.zeros_like(x).index_add_(0, token_idx, ys * sorted_weights.unsqueeze(-1))


class MoE(nn.Module):
    """One MoE feed-forward block: the router (`gate`) and the stacked `experts`."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, num_shared: int,
                 top_k: int, norm_topk_prob: bool = False) -> None:
        super().__init__()
        self.gate = Router(hidden_size, num_experts, num_shared, top_k, norm_topk_prob)
        self.experts = Experts(num_experts, hidden_size, intermediate_size)

    def forward(self, x: Tensor, segments: Tensor | None = None, num_segments: int = 0,
                pool_sizes: Tensor | None = None) -> tuple[Tensor, Routing]:
        """x [B, T, d] -> (output [B, T, d], the layer's Routing over the B*T tokens)."""
        flat = x.reshape(-1, x.shape[-1])
        routing = self.gate(flat, segments, num_segments, pool_sizes)
        out = self.experts(flat, routing.expert_ids, routing.weights)
        return out.view_as(x), routing

    @torch.no_grad()
    def reset_parameters(self, std: float, out_std: float) -> None:
        nn.init.normal_(self.gate.weight, std=std)
        nn.init.normal_(self.experts.gate_proj, std=std)
        nn.init.normal_(self.experts.up_proj, std=std)
        nn.init.normal_(self.experts.down_proj, std=out_std)


def default_out_std(std: float, num_layers: int) -> float:
    """Init std of residual output projections (scaled by depth, as in GPT-2)."""
    return std / math.sqrt(2 * num_layers)
