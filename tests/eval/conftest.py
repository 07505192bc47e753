"""Fixtures: a tiny tokenizer, tiny EMO / standard models, their checkpoints and a small JSONL corpus."""

import json

import pytest
import torch

from emomoe import EmoForCausalLM, preset, save_model
from emomoe.data import train_tokenizer

DOMAINS = {
    "code": ["def add(x, y):\n    return x + y", "for i in range(10):\n    print(i * i)",
             "import os\nprint(os.getcwd())", "class A:\n    pass", "x = [1, 2, 3]\nprint(sum(x))",
             "while True:\n    break"],
    "news": ["Stocks fell sharply on Monday as investors worried.", "Parliament voted on the budget late on Thursday.",
             "The minister resigned after the vote.", "Markets rallied on strong earnings.",
             "Rain is expected across the north tomorrow.", "The central bank held rates steady."],
    "health": ["The patient was given a small dose every morning.", "Drink water and sleep well to recover.",
               "The doctor checked her blood pressure.", "A balanced diet lowers the risk of disease.",
               "The vaccine was tested on adults.", "Symptoms include fever and a cough."],
}




@pytest.fixture(scope="session")
def tok():
    texts = [t for docs in DOMAINS.values() for t in docs] * 3
    return train_tokenizer(texts=texts, vocab_size=300, min_frequency=1)


def make_model(seed: int = 0, **overrides) -> EmoForCausalLM:
    torch.manual_seed(seed)
    model = EmoForCausalLM(preset("tiny", **overrides)).eval()
    with torch.no_grad():  # peaked routing: expert rankings far from float ties
        for layer in model.model.layers:
            layer.mlp.gate.weight.mul_(25)
    return model


@pytest.fixture
def model():
    return make_model()


@pytest.fixture
def model_factory():
    """make_model(seed, **config overrides): a tiny model with peaked routing."""
    return make_model


@pytest.fixture(scope="session")
def domains():
    return DOMAINS


@pytest.fixture(scope="session")
def ckpts(tok, tmp_path_factory):
    """Two checkpoint directories (EMO, standard MoE), each with tokenizer.json."""
    root = tmp_path_factory.mktemp("ckpts")
    tok_file = tok.save(root / "tokenizer.json")
    emo = save_model(make_model(0), root / "emo", extra_files={"tokenizer.json": tok_file})
    std = save_model(make_model(1, router="standard", pool_min=None, pool_max=None), root / "std",
                     extra_files={"tokenizer.json": tok_file})
    return emo, std


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "val.jsonl"
    lines = [json.dumps({"id": f"{d}-{i}", "domain": d, "text": t})
             for i in range(6) for d, docs in DOMAINS.items() for t in docs[i:i + 1]]
    path.write_text("\n".join(lines) + "\n")
    return path
