"""Every test starts from a known state: seeded generators, an empty Pyro parameter store,
Pyro's argument validation on, and torch's default dtype restored afterwards."""

from __future__ import annotations

import shutil
from pathlib import Path

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


@pytest.fixture(scope="session")
def _tiny_digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ppl_vae.run import RunConfig, train_run

    out = tmp_path_factory.mktemp("tiny-run") / "digits-run"
    config = RunConfig(epochs=1, hidden=(8,), latent_dim=2, num_samples=2, batch_size=256)
    train_run(config, out, progress=False)
    return out


@pytest.fixture
def digits_run(_tiny_digits_run: Path, tmp_path: Path) -> Path:
    """A tiny trained digits run (64 features, 1 epoch) made through the API; a fresh copy
    per test, so tests may damage it."""
    copy = tmp_path / "digits-run"
    shutil.copytree(_tiny_digits_run, copy)
    return copy
