import pytest
import torch

from emomoe import EmoForCausalLM, preset


@pytest.fixture(autouse=True)
def one_thread():
    """Test models are tiny: one intra-op thread is faster, and on a busy machine every parallel op waits."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def tiny_config():
    return preset("tiny")


@pytest.fixture
def tiny_model(tiny_config):
    torch.manual_seed(0)
    return EmoForCausalLM(tiny_config).eval()
