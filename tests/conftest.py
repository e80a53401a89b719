import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Keep each test's changes to torch's RNG and default dtype from reaching the next test."""
    rng_state = torch.random.get_rng_state()
    default_dtype = torch.get_default_dtype()
    yield
    torch.random.set_rng_state(rng_state)
    torch.set_default_dtype(default_dtype)
