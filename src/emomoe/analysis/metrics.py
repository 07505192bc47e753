"""Specialisation metrics: pure functions of count tables (tensors in, tensors or floats out).

Counts are routed assignments: every token adds 1 to each of its top-k routed experts (shared
experts, used by every token, carry no information and are left out).
"""

from __future__ import annotations

import torch
from torch import Tensor


def entropy(p: Tensor) -> Tensor:
    """Shannon entropy (nats) of distributions along the last dim (0 log 0 = 0)."""
    p = p.double()
    return -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)


def mutual_information(joint: Tensor) -> float:
    """I(A; B) in nats of a joint count (or probability) table [A, B]."""
    p = joint.double() / joint.sum()
    outer = p.sum(1, keepdim=True) * p.sum(0, keepdim=True)
    ratio = torch.where(p > 0, p / torch.where(outer > 0, outer, 1.0), torch.ones_like(p))
    return float((p * ratio.log()).sum())


def normalized_mutual_info(joint: Tensor, norm: str = "min") -> float:
    """I(A; B) / normaliser for a joint count table [A, B]; in [0, 1], 0 for independent A and B.

    norm "min": divide by min(H(A), H(B)), so 1 means one variable determines the other (with
    many more experts than domains: every expert serves a single domain). "arithmetic" /
    "geometric": the mean of H(A), H(B) (scikit-learn's NMI conventions), 1 only for a bijection.
    Returns 0 when a variable has zero entropy.
    """
    p = joint.double() / joint.sum()
    h_a, h_b = float(entropy(p.sum(1))), float(entropy(p.sum(0)))
    if norm == "min":
        denom = min(h_a, h_b)
    elif norm == "arithmetic":
        denom = (h_a + h_b) / 2
    elif norm == "geometric":
        denom = (h_a * h_b) ** 0.5
    else:
        raise ValueError(f"unknown norm {norm!r}; choose min, arithmetic or geometric")
    if denom <= 1e-12:
        return 0.0
    return min(1.0, max(0.0, mutual_information(joint) / denom))


def top_m_share(counts: Tensor, m: int) -> Tensor:
    """Share of each row's mass [D, E] that falls in the row's own top-m columns -> [D] (document coherence).

    Rows without mass give nan. A row spread uniformly over E experts scores m / E.
    """
    if not 1 <= m <= counts.shape[-1]:
        raise ValueError(f"m ({m}) must lie in [1, {counts.shape[-1]}]")
    counts = counts.double()
    total = counts.sum(-1)
    top = counts.topk(m, dim=-1).values.sum(-1)
    return torch.where(total > 0, top / total.clamp(min=1e-300), torch.full_like(total, float("nan")))


def experts_to_cover(counts: Tensor, mass: float = 0.9) -> Tensor:
    """Fewest experts whose summed share reaches `mass` of each row's total, for counts [D, E] -> [D] long."""
    if not 0 < mass <= 1:
        raise ValueError(f"mass ({mass}) must lie in (0, 1]")
    share = counts.double() / counts.double().sum(-1, keepdim=True).clamp(min=1e-300)
    cumulative = share.sort(dim=-1, descending=True).values.cumsum(-1)
    # tolerance: a share summing to 0.9 in exact arithmetic must count as reaching 0.9
    return (cumulative < mass - 1e-9).sum(-1) + 1


def contingency(labels_a: Tensor, labels_b: Tensor, num_a: int | None = None, num_b: int | None = None) -> Tensor:
    """Count table [A, B] of paired integer labels (e.g. cluster x domain)."""
    num_a = int(labels_a.max()) + 1 if num_a is None else num_a
    num_b = int(labels_b.max()) + 1 if num_b is None else num_b
    flat = labels_a.long() * num_b + labels_b.long()
    return torch.bincount(flat, minlength=num_a * num_b).view(num_a, num_b)


def purity(clusters: Tensor, classes: Tensor) -> float:
    """Share of items whose cluster's majority class is their own class."""
    table = contingency(clusters, classes)
    return int(table.max(dim=1).values.sum()) / clusters.numel()
