"""The MoE layer: stacked SwiGLU experts with dropless grouped dispatch.

Assignments (token, expert) are sorted by expert so each expert's tokens form one contiguous
slice; one grouped matmul (`torch.nn.functional.grouped_mm` where this PyTorch has it for the
device and dtype, else a loop over the experts that received tokens) runs every expert once,
and the outputs are scattered back with the routing weights.
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


class Experts(nn.Module):
    """E SwiGLU experts stored as stacked weights: down(silu(gate(x)) * up(x))."""

    def __init__(self, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))  # [E, h, d]
        self.up_proj = nn.Parameter(torch.empty(num_experts, intermediate_size, hidden_size))  # [E, h, d]
        self.down_proj = nn.Parameter(torch.empty(num_experts, hidden_size, intermediate_size))  # [E, d, h]

    @property
    def num_experts(self) -> int:
        return self.gate_proj.shape[0]

    def forward(self, x: Tensor, expert_ids: Tensor, weights: Tensor) -> Tensor:
        """Combine the experts: x [N, d], expert_ids / weights [N, k] -> [N, d].

        out[n] = sum_j weights[n, j] * expert_{ids[n, j]}(x[n]); weights are cast to x's dtype
        first and contributions are added in ascending expert order, as the released code does.
        """
        num_tokens, top_k = expert_ids.shape
        flat_ids = expert_ids.reshape(-1)  # [N*k]
        order = torch.argsort(flat_ids, stable=True)
        counts = torch.bincount(flat_ids, minlength=self.num_experts)  # [E]
        offsets = counts.cumsum(0).to(torch.int32)
        token_idx = order // top_k  # [N*k] source token of each sorted assignment
        xs = x[token_idx]  # [N*k, d]
        hidden = F.silu(expert_matmul(xs, self.gate_proj, counts, offsets))
        hidden = hidden * expert_matmul(xs, self.up_proj, counts, offsets)
        ys = expert_matmul(hidden, self.down_proj, counts, offsets)  # [N*k, d]
        ys = ys * weights.reshape(-1)[order].to(ys.dtype).unsqueeze(-1)
        return torch.zeros_like(x).index_add_(0, token_idx, ys)


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
