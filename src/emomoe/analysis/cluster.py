"""k-means (k-means++ initialisation, Lloyd iterations, best of several restarts) in torch."""

from __future__ import annotations

import torch
from torch import Tensor


def _kmeans_pp(x: Tensor, k: int, gen: torch.Generator) -> Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to squared distance."""
    centers = x[torch.randint(x.shape[0], (1,), generator=gen)]
    dist = torch.cdist(x, centers).square().min(dim=1).values  # [N]
    for _ in range(1, k):
        weights = dist if dist.sum() > 0 else torch.ones_like(dist)
        nxt = x[torch.multinomial(weights, 1, generator=gen)]
        centers = torch.cat([centers, nxt])
        dist = torch.minimum(dist, torch.cdist(x, nxt).square().squeeze(1))
    return centers


def kmeans(x: Tensor, k: int, n_init: int = 8, iters: int = 100, seed: int = 0) -> tuple[Tensor, Tensor, float]:
    """Cluster rows of x [N, F] into k groups.

    Returns (labels [N] long, centres [k, F], inertia = summed squared distance to the centre)
    of the restart with the lowest inertia. Deterministic for a seed. An emptied cluster is
    re-seeded with the point farthest from its centre. Raises ValueError unless 1 <= k <= N.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k ({k}) must lie in [1, number of points = {n}]")
    x = x.double()
    gen = torch.Generator().manual_seed(seed)
    best = None
    for _ in range(n_init):
        centers = _kmeans_pp(x, k, gen)
        labels = None
        for _ in range(iters):
            dist = torch.cdist(x, centers).square()  # [N, k]
            new = dist.argmin(dim=1)
            if labels is not None and torch.equal(new, labels):
                break
            labels = new
            sums = torch.zeros_like(centers).index_add_(0, labels, x)
            sizes = torch.bincount(labels, minlength=k)
            centers = sums / sizes.clamp(min=1).unsqueeze(1).to(x.dtype)
            own = dist.gather(1, labels.unsqueeze(1)).squeeze(1)  # [N] distance to own centre
            for empty in torch.nonzero(sizes == 0).flatten().tolist():
                far = own.argmax()
                centers[empty], own[far] = x[far], -1.0
        dist = torch.cdist(x, centers).square()
        labels = dist.argmin(dim=1)
        inertia = float(dist.gather(1, labels.unsqueeze(1)).sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centers, inertia)
    return best[0], best[1].float(), best[2]
