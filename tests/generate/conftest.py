import pytest
import torch

from emomoe import EmoForCausalLM, preset, save_model
from emomoe.data.tokenizer import train_tokenizer

TEXTS = ["the cat sat on the mat, and the dog sat on the log.", "def main():\n    return 0\n",
         "Il était une fois un petit chat.", "1 + 2 = 3; 2 + 3 = 5; 3 + 5 = 8"]


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(texts=TEXTS * 20, vocab_size=320)


@pytest.fixture(scope="session")
def model(tokenizer):
    torch.manual_seed(0)
    cfg = preset("tiny", vocab_size=tokenizer.vocab_size, eos_token_id=tokenizer.eos_id,
                 pad_token_id=tokenizer.pad_id, max_position_embeddings=64)
    return EmoForCausalLM(cfg).eval()


@pytest.fixture(scope="session")
def checkpoint(model, tokenizer, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    save_model(model, path)
    tokenizer.save(path)
    return path
