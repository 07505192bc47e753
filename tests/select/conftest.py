"""Shared fixtures: a tiny EMO model with peaked routing, a tiny BPE tokenizer, a saved checkpoint."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from emomoe import EmoForCausalLM, preset, save_model

TEXTS = [
    "The patient was given a small dose of the new medicine every morning.",
    "Stocks fell sharply on Monday as investors worried about rates.",
    "def add(x, y):\n    return x + y",
    "The film's soundtrack was written by a young composer from Lisbon.",
    "Parliament voted on the budget late on Thursday night.",
    "Solve for x: 3x + 5 = 20, so x = 5.",
    "The cat sat on the mat and watched the rain.",
]


@pytest.fixture(scope="session")
def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 4, trainer)
    assert tok.get_vocab_size() <= preset("tiny").vocab_size
    return tok


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = EmoForCausalLM(preset("tiny")).eval()
    with torch.no_grad():  # peaked routing: expert rankings far from float ties
        for layer in m.model.layers:
            layer.mlp.gate.weight.mul_(25)
    return m


@pytest.fixture
def ckpt(model, tokenizer, tmp_path):
    tok_file = tmp_path / "tokenizer.json"
    tokenizer.save(str(tok_file))
    return save_model(model, tmp_path / "ckpt", extra_files={"tokenizer.json": tok_file})


@pytest.fixture
def texts():
    return list(TEXTS)
