"""Every test starts from a known state: seeded generators, an empty Pyro parameter store,
Pyro's argument validation on, and torch's default dtype restored afterwards."""

from __future__ import annotations

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_state():
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    pyro.enable_validation(True)
    dtype = torch.get_default_dtype()
    yield
    torch.set_default_dtype(dtype)
    pyro.clear_param_store()


@pytest.fixture
def float64():
    """Run the test in double precision (closed-form comparisons at rtol 1e-6 and below)."""
    torch.set_default_dtype(torch.float64)
    yield
