import pytest
import torch

from emomoe import EmoForCausalLM, preset


@pytest.fixture
def tiny_config():
    return preset("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return EmoForCausalLM(tiny_config).eval()
