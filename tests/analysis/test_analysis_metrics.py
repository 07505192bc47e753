import math

import pytest
import torch

from emomoe.analysis import (
    contingency,
    experts_to_cover,
    kmeans,
    mutual_information,
    normalized_mutual_info,
    purity,
    top_m_share,
)


def test_nmi_perfectly_modular_is_one_and_uniform_is_zero():
    # 3 domains x 6 experts, each domain uses its own 2 experts (unevenly): experts determine the domain
    modular = torch.zeros(6, 3)
    for d in range(3):
        modular[2 * d, d], modular[2 * d + 1, d] = 30.0, 10.0 * (d + 1)
    assert normalized_mutual_info(modular) == pytest.approx(1.0)
    assert normalized_mutual_info(modular, "arithmetic") < 1.0  # more experts than domains: not a bijection
    uniform = torch.full((6, 3), 7.0)
    assert normalized_mutual_info(uniform) == pytest.approx(0.0, abs=1e-12)
    independent = torch.outer(torch.tensor([1.0, 2, 3, 4]), torch.tensor([5.0, 1, 2]))  # p(e, d) = p(e) p(d)
    assert normalized_mutual_info(independent) == pytest.approx(0.0, abs=1e-12)
    bijection = torch.eye(4) * torch.tensor([1.0, 2, 3, 4])
    for norm in ("min", "arithmetic", "geometric"):
        assert normalized_mutual_info(bijection, norm) == pytest.approx(1.0)
    assert normalized_mutual_info(torch.ones(3, 1)) == 0.0  # one domain: no information to share
    with pytest.raises(ValueError, match="unknown norm"):
        normalized_mutual_info(bijection, "max")


def test_mutual_information_by_hand():
    joint = torch.tensor([[1.0, 1.0], [0.0, 2.0]])  # p = [[.25,.25],[0,.5]]
    expected = 0.25 * math.log(0.25 / (0.5 * 0.25)) + 0.25 * math.log(0.25 / (0.5 * 0.75)) \
        + 0.5 * math.log(0.5 / (0.5 * 0.75))
    assert mutual_information(joint) == pytest.approx(expected)


def test_coherence():
    counts = torch.tensor([[5.0, 3.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 0.0]])
    assert top_m_share(counts, 2).tolist() == pytest.approx([0.8, 0.5, 1.0])
    assert torch.isnan(top_m_share(torch.zeros(1, 4), 2)).all()
    with pytest.raises(ValueError):
        top_m_share(counts, 5)


def test_coverage_count():
    counts = torch.tensor([[50.0, 30.0, 10.0, 10.0], [25.0, 25.0, 25.0, 25.0], [0.0, 0.0, 9.0, 1.0],
                           [91.0, 9.0, 0.0, 0.0]])
    # 50+30=80 < 90, +10 = 90 reaches it exactly; uniform needs 4 (0.75 < 0.9); 9 of 10 = 0.9; 91 alone
    assert experts_to_cover(counts, 0.9).tolist() == [3, 4, 1, 1]
    assert experts_to_cover(counts, 1.0).tolist() == [4, 4, 2, 2]


def test_purity_and_contingency():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2])
    classes = torch.tensor([0, 0, 1, 1, 1, 0])
    assert contingency(clusters, classes).tolist() == [[2, 1], [0, 2], [1, 0]]
    assert purity(clusters, classes) == pytest.approx(5 / 6)


def test_kmeans_separable_blobs_have_purity_one():
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0], [0.0, 10.0, 0.0], [0.0, 0.0, 10.0]])
    classes = torch.arange(4).repeat_interleave(25)
    x = centres[classes] + 0.5 * torch.randn(100, 3, generator=gen)
    labels, found, inertia = kmeans(x, 4, seed=0)
    assert purity(labels, classes) == 1.0
    assert normalized_mutual_info(contingency(labels, classes), "arithmetic") == pytest.approx(1.0)
    # centres recovered (in some order) and inertia is the within-cluster scatter
    assert torch.cdist(found, centres).min(dim=0).values.max() < 0.5
    assert inertia == pytest.approx(float(((x - found[labels]) ** 2).sum()), rel=1e-5)
    again, _, _ = kmeans(x, 4, seed=0)
    assert torch.equal(labels, again)  # deterministic for a seed
    with pytest.raises(ValueError, match="k"):
        kmeans(x, 101)


def test_kmeans_handles_duplicate_points():
    x = torch.tensor([[0.0, 0.0]] * 5 + [[1.0, 1.0]] * 5)
    labels, _, inertia = kmeans(x, 3, seed=0)
    assert inertia == pytest.approx(0.0) and labels.unique().numel() >= 2
