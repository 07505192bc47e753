from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from emomoe.data import IGNORE_INDEX, PackedLoader, TokenShards, validation_batches

T = 32


@pytest.fixture(scope="module")
def shards(tiny_shards_dir):
    return TokenShards(tiny_shards_dir)


def run_steps(loader, steps) -> dict[str, torch.Tensor]:
    """All sequences of `steps` optimizer steps of one rank, in order: [steps * G/W, T] per key."""
    mbs = [mb for _ in range(steps) for mb in loader.next_step()]
    return {k: torch.cat([mb[k] for mb in mbs]) for k in mbs[0]}


def split_at_eos(tokens: list[int], eos: int) -> list[tuple[int, ...]]:
    docs, cur = [], []
    for t in tokens:
        cur.append(t)
        if t == eos:
            docs.append(tuple(cur))
            cur = []
    return docs


def test_first_epoch_holds_every_document_exactly_once(shards):
    loader = PackedLoader(shards, T, global_batch_size=4, micro_batch_size=2, seed=3)
    steps = -(-shards.num_tokens // (4 * T))
    seqs = run_steps(loader, steps)
    stream = seqs["input_ids"].flatten()[: shards.num_tokens].tolist()
    got = Counter(split_at_eos(stream, shards.eos_id))
    want = Counter(tuple(shards.tokens(i).tolist()) for i in range(shards.num_docs))
    assert got == want and sum(got.values()) == shards.num_docs
    assert loader.epoch == 1


def test_doc_ids_labels_and_domains_follow_document_boundaries(shards):
    loader = PackedLoader(shards, T, global_batch_size=8, micro_batch_size=8, seed=0)
    s = run_steps(loader, 6)
    ids, labels, doc_ids, domains = s["input_ids"], s["labels"], s["doc_ids"], s["domain_ids"]
    domain_of = {tuple(shards.tokens(i).tolist()): shards.doc_domains[i] for i in range(shards.num_docs)}
    flat = ids.flatten().tolist()
    for n in range(ids.shape[0]):
        x, y, d = ids[n].tolist(), labels[n].tolist(), doc_ids[n].tolist()
        nxt = ids[n + 1, 0].item() if n + 1 < ids.shape[0] else None
        assert d[0] == 0 and all(b - a in (0, 1) for a, b in zip(d[:-1], d[1:], strict=True))
        for t in range(T):
            if t > 0:  # a new document starts exactly after an EOS
                assert (d[t] != d[t - 1]) == (x[t - 1] == shards.eos_id)
            target = x[t + 1] if t + 1 < T else nxt
            if x[t] == shards.eos_id:
                assert y[t] == IGNORE_INDEX
            elif target is not None:
                assert y[t] == target
    # per-token domain: every whole document inside the stream carries its own domain
    dom_flat = domains.flatten().tolist()
    start = flat.index(shards.eos_id) + 1
    for doc in split_at_eos(flat[start:], shards.eos_id):
        assert set(dom_flat[start : start + len(doc)]) == {domain_of[doc]}
        start += len(doc)
    assert (doc_ids >= 0).all()  # training never pads


def test_long_documents_become_chunks(shards):
    loader = PackedLoader(shards, 8, global_batch_size=64, micro_batch_size=64, seed=0)
    s = run_steps(loader, 1)
    continued = s["input_ids"][:-1, -1] != shards.eos_id  # sequence ends mid-document
    assert continued.any()
    assert (s["doc_ids"][1:][continued][:, 0] == 0).all()  # the rest is a new chunk with doc id 0
    assert (s["labels"][:-1][continued][:, -1] == s["input_ids"][1:][continued][:, 0]).all()


def test_resume_gives_the_batches_of_an_uninterrupted_run(shards):
    full = PackedLoader(shards, T, 4, 2, seed=7)
    want = [full.next_step() for _ in range(12)]
    first = PackedLoader(shards, T, 4, 2, seed=7)
    for _ in range(5):
        first.next_step()
    state = first.state_dict()
    resumed = PackedLoader(shards, T, 4, 2, seed=7)
    resumed.load_state_dict(state)
    for step in range(5, 12):
        got = resumed.next_step()
        for a, b in zip(got, want[step], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in a)
    # resume on another world size: rank 1 of 2 gets the second half of step 5
    other = PackedLoader(shards, T, 4, 1, rank=1, world_size=2, seed=7)
    other.load_state_dict(state)
    got = torch.cat([mb["input_ids"] for mb in other.next_step()])
    assert torch.equal(got, torch.cat([mb["input_ids"] for mb in want[5]])[2:])


@pytest.mark.parametrize("world_size,micro", [(1, 1), (2, 1), (2, 4), (4, 1), (4, 2)])
def test_global_batch_is_the_same_for_any_world_size_and_micro_batch(shards, world_size, micro):
    G = 8
    steps = shards.num_tokens // (G * T) + 2  # crosses an epoch boundary
    ref = PackedLoader(shards, T, G, G, seed=11)
    ref_steps = [ref.next_step()[0] for _ in range(steps)]
    ranks = [
        PackedLoader(shards, T, G, micro, rank=r, world_size=world_size, seed=11) for r in range(world_size)
    ]
    for step in range(steps):
        mbs = [mb for loader in ranks for mb in loader.next_step()]
        assert len(mbs) == G // micro and all(mb["input_ids"].shape == (micro, T) for mb in mbs)
        for k in ref_steps[step]:
            assert torch.equal(torch.cat([mb[k] for mb in mbs]), ref_steps[step][k])
    assert ref.epoch >= 1


def test_seed_decides_order_and_epochs_reshuffle(shards):
    def epoch_docs(seed, epoch):
        loader = PackedLoader(shards, T, 4, 4, seed=seed)
        order, _ = loader._stream.plan(epoch)
        return order.tolist()

    assert epoch_docs(1, 0) == epoch_docs(1, 0)
    assert epoch_docs(1, 0) != epoch_docs(2, 0)
    assert epoch_docs(1, 0) != epoch_docs(1, 1) and sorted(epoch_docs(1, 1)) == list(range(shards.num_docs))


def test_mixture_weights_set_token_shares(shards):
    weights = {"code": 3.0, "german": 1.0, "prose": 0.0}
    loader = PackedLoader(shards, 64, 16, 16, seed=0, weights=weights, weight_by="domain")
    dom = run_steps(loader, 60)["domain_ids"].flatten()
    names = shards.domain_names
    share = {n: (dom == names.index(n)).float().mean().item() for n in names}
    assert share["prose"] == 0.0
    assert abs(share["code"] - 0.75) < 0.03 and abs(share["german"] - 0.25) < 0.03
    with pytest.raises(ValueError, match=r"weights name unknown domains \['math'\]"):
        PackedLoader(shards, T, 4, 4, weights={**weights, "math": 1.0}, weight_by="domain")
    with pytest.raises(ValueError, match=r"weights missing for domains \['prose'\] \(give 0"):
        PackedLoader(shards, T, 4, 4, weights={"code": 1.0, "german": 1.0}, weight_by="domain")
    loader = PackedLoader(shards, T, 4, 4, seed=0, weights={"src0": 1.0, "src1": 1.0})  # by source
    assert loader.next_step()[0]["input_ids"].shape == (4, T)


def test_validation_covers_held_out_tokens_once_and_never_training_ones(tiny_shards_dir, shards):
    val = TokenShards(tiny_shards_dir, split="val")
    batches = list(validation_batches(val, T, batch_size=3))
    ids = torch.cat([b["input_ids"] for b in batches])
    docs = torch.cat([b["doc_ids"] for b in batches])
    real = docs.flatten() >= 0
    want = np.concatenate([val.tokens(i) for i in range(val.num_docs)])
    assert torch.equal(ids.flatten()[real], torch.from_numpy(want.astype(np.int64)))
    assert (
        real.sum() == val.num_tokens and not real[: val.num_tokens].logical_not().any()
    )  # pad only at the end
    last = batches[-1]
    pad = last["doc_ids"] == -1
    assert (last["input_ids"][pad] == val.pad_id).all() and (last["labels"][pad] == IGNORE_INDEX).all()
    assert (last["domain_ids"][pad] == -1).all()
    # ranks split the sequences without overlap or loss
    per_rank = [
        torch.cat([b["input_ids"] for b in validation_batches(val, T, 2, rank=r, world_size=3)])
        for r in range(3)
    ]
    assert sum(len(x) for x in per_rank) == len(ids) and torch.equal(per_rank[1][0], ids[1])
    # training (split "train") never yields a held-out document
    train_docs = set(
        split_at_eos(
            run_steps(PackedLoader(shards, T, 8, 8, seed=0), 20)["input_ids"].flatten().tolist(),
            shards.eos_id,
        )[1:]
    )
    val_docs = {tuple(val.tokens(i).tolist()) for i in range(val.num_docs)}
    assert train_docs and not train_docs & val_docs


def test_bad_sizes_and_state_are_clear_errors(shards):
    with pytest.raises(ValueError, match=r"global_batch_size \(6\) must be divisible by world_size \(4\)"):
        PackedLoader(shards, T, 6, 1, world_size=4)
    with pytest.raises(
        ValueError, match=r"sequences per rank .* = 4\) must be divisible by micro_batch_size \(3\)"
    ):
        PackedLoader(shards, T, 8, 3, world_size=2)
    with pytest.raises(ValueError, match=r"rank \(2\) must be in \[0, world_size \(2\)\)"):
        PackedLoader(shards, T, 8, 1, rank=2, world_size=2)
    state = PackedLoader(shards, T, 8, 8, seed=1).state_dict()
    with pytest.raises(ValueError, match="saved with seed=1, this loader has seed=2"):
        PackedLoader(shards, T, 8, 8, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="saved with seq_len=32, this loader has seq_len=64"):
        PackedLoader(shards, 64, 8, 8, seed=1).load_state_dict(state)
