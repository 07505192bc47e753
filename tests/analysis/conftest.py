"""Fixtures for the analysis tests: single-threaded torch (see tests/eval/conftest.py)."""

import pytest
import torch

TEXTS = {
    "code": ["def add(x, y):\n    return x + y", "for i in range(10):\n    print(i * i)", "import os\nprint(1)",
             "class A:\n    pass"],
    "news": ["Stocks fell sharply on Monday.", "Parliament voted on the budget.", "The minister resigned.",
             "Markets rallied on earnings."],
    "health": ["The patient was given a dose.", "Drink water and sleep well.", "The doctor checked her blood.",
               "Symptoms include fever."],
}


@pytest.fixture(scope="session")
def tok():
    from emomoe.data import train_tokenizer

    return train_tokenizer(texts=[t for v in TEXTS.values() for t in v] * 3, vocab_size=300, min_frequency=1)


@pytest.fixture(scope="session")
def docs():
    from emomoe.eval import EvalDoc

    return [EvalDoc(t, d) for d, texts in TEXTS.items() for t in texts]


@pytest.fixture(scope="session")
def tiny_model():
    """tiny_model(seed, **config overrides): a tiny model with peaked routing."""
    return _tiny_model


def _tiny_model(seed: int = 0, **overrides):
    from emomoe import EmoForCausalLM, preset

    torch.manual_seed(seed)
    model = EmoForCausalLM(preset("tiny", **overrides)).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.mul_(25)
    return model
