"""Routing invariants, the vectorised EMO pool against a per-document reference, LB and z-loss."""

import math

import pytest
import torch

from emomoe.model.router import (
    Router,
    doc_ids_from_eos,
    document_pool_mask,
    load_balancing_loss,
    route,
    router_z_loss,
    segment_ids,
)


def reference_pool(probs, doc_ids, pool_sizes_per_doc):
    """Plain per-document loop: top-m experts of each document's summed probabilities."""
    batch, length = doc_ids.shape
    mask = torch.zeros(batch * length, probs.shape[-1], dtype=torch.bool)
    flat_docs = doc_ids.reshape(-1)
    for b in range(batch):
        for d in doc_ids[b].unique().tolist():
            rows = [b * length + t for t in range(length) if doc_ids[b, t] == d]
            mass = probs[rows].sum(0)
            # stable tie-break towards the lower expert index
            order = sorted(range(len(mass)), key=lambda e: (-mass[e].item(), e))
            keep = order[: pool_sizes_per_doc[(b, d)]]
            for r in rows:
                mask[r, keep] = True
    assert flat_docs.numel() == mask.shape[0]
    return mask


def random_doc_ids(batch, length, gen):
    starts = torch.rand(batch, length, generator=gen) < 0.15
    starts[:, 0] = False
    return starts.long().cumsum(-1)


def test_doc_ids_from_eos_eos_belongs_to_its_document():
    ids = torch.tensor([[5, 9, 0, 7, 0, 0, 3]])
    assert doc_ids_from_eos(ids, eos_id=0).tolist() == [[0, 0, 0, 1, 1, 2, 3]]


def test_segments_are_distinct_across_rows_and_padding():
    doc_ids = torch.tensor([[0, 0, 1, -1], [0, 1, 1, 2]])
    seg, n = segment_ids(doc_ids)
    assert n == 2 * 5
    assert seg.tolist() == [0, 0, 1, 4, 5, 6, 6, 7]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vectorised_pool_equals_per_document_reference(seed):
    gen = torch.Generator().manual_seed(seed)
    batch, length, experts = 3, 40, 12
    doc_ids = random_doc_ids(batch, length, gen)
    probs = torch.softmax(torch.randn(batch * length, experts, generator=gen), -1)
    seg, n = segment_ids(doc_ids)
    sizes = torch.randint(2, experts + 1, (n,), generator=gen)
    got = document_pool_mask(probs, seg, n, sizes)
    per_doc = {(b, d): int(sizes[b * (length + 1) + d]) for b in range(batch) for d in range(length)}
    assert torch.equal(got, reference_pool(probs, doc_ids, per_doc))


def test_pool_ties_break_towards_lower_index():
    probs = torch.full((4, 6), 1 / 6)
    seg = torch.zeros(4, dtype=torch.long)
    mask = document_pool_mask(probs, seg, 1, torch.tensor([3]))
    assert mask[0].tolist() == [True, True, True, False, False, False]


def test_routing_invariants_with_pool():
    torch.manual_seed(0)
    hidden, experts, shared, top_k = 16, 9, 1, 4  # 8 routed, 3 routed per token
    router = Router(hidden, experts, shared, top_k)
    torch.nn.init.normal_(router.weight)
    batch, length = 2, 30
    gen = torch.Generator().manual_seed(3)
    doc_ids = random_doc_ids(batch, length, gen)
    seg, n = segment_ids(doc_ids)
    sizes = torch.randint(3, 9, (n,), generator=gen)
    r = router(torch.randn(batch * length, hidden), seg, n, sizes)
    routed_k = top_k - shared
    # pool size equals m and is shared by all tokens of a document
    assert torch.equal(r.pool_mask.sum(-1), sizes[seg])
    for s in seg.unique():
        rows = r.pool_mask[seg == s]
        assert (rows == rows[0]).all()
    # each token's routed experts lie in its document's pool
    routed = r.expert_ids[:, :routed_k]
    assert r.pool_mask.gather(1, routed).all()
    # experts outside the pool get exactly zero probability
    assert (r.probs[~r.pool_mask] == 0).all()
    # probabilities renormalise inside the pool
    torch.testing.assert_close(r.probs.sum(-1), torch.ones(batch * length))
    # shared expert always active with weight exactly 1
    assert (r.expert_ids[:, routed_k:] == experts - 1).all()
    assert (r.weights[:, routed_k:] == 1.0).all()
    # routed weights are the unnormalised (pool) probabilities
    torch.testing.assert_close(r.weights[:, :routed_k], r.probs.gather(1, routed))
    # counts
    assert r.expert_counts.sum().item() == batch * length * routed_k


def test_standard_routing_topk_and_norm_topk_prob():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    r = route(logits, num_shared=0, top_k=2)
    p = torch.softmax(logits, -1)[0]
    assert r.expert_ids.tolist() == [[0, 1]]
    torch.testing.assert_close(r.weights[0], p[:2])
    r = route(logits, num_shared=0, top_k=2, norm_topk_prob=True)
    torch.testing.assert_close(r.weights[0], p[:2] / p[:2].sum())


def test_shared_experts_softmax_over_shared_logits():
    logits = torch.tensor([[0.5, 0.1, 0.3, 1.0, 2.0]])  # 3 routed + 2 shared
    r = route(logits, num_shared=2, top_k=3)
    assert r.expert_ids[0].tolist() == [0, 3, 4]
    torch.testing.assert_close(r.weights[0, 1:], torch.softmax(torch.tensor([1.0, 2.0]), -1))
    torch.testing.assert_close(r.probs[0], torch.softmax(logits[0, :3], -1))


def test_allowed_mask_restricts_routing():
    logits = torch.randn(50, 6)
    allowed = torch.tensor([False, True, False, True, True, False])
    r = route(logits, num_shared=1, top_k=3, allowed=allowed[:5])
    assert allowed[r.expert_ids[:, :2]].all()
    assert (r.probs[:, ~allowed[:5]] == 0).all()


def test_load_balancing_loss_hand_computed():
    # 2 routed experts, k_r = 1, 4 tokens: 3 go to expert 0, 1 to expert 1
    mean_probs = torch.tensor([0.6, 0.4])
    fraction = torch.tensor([3 / 4, 1 / 4])
    lb = load_balancing_loss(mean_probs, fraction, routed_top_k=1)
    assert lb.item() == pytest.approx(2 * (0.75 * 0.6 + 0.25 * 0.4))
    # perfect balance gives 1 (k_r = 2 of 4 experts: every expert gets half the tokens)
    lb = load_balancing_loss(torch.full((4,), 0.25), torch.full((4,), 0.5), routed_top_k=2)
    assert lb.item() == pytest.approx(1.0)


def test_load_balancing_gradient_flows_only_through_probs():
    mean_probs = torch.tensor([0.7, 0.3], requires_grad=True)
    fraction = torch.tensor([1.0, 0.0], requires_grad=True)
    load_balancing_loss(mean_probs, fraction, 1).backward()
    assert mean_probs.grad.tolist() == [2.0, 0.0]
    assert fraction.grad is None


def test_router_z_loss_hand_computed():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    expected = (math.log(2.0) ** 2 + math.log(4.0) ** 2) / 2
    assert router_z_loss(logits).item() == pytest.approx(expected, rel=1e-6)
