"""Pyro's validation in iter_log_weights: run on the first and last blocks, skipped between,
and restored for a block whose weights are NaN, so a bad parameter still raises."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.errors import ContractError
from ppl_vae.importance import iter_log_weights, log_importance_weights


def model(x, mask=None):
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
        # A row whose first value exceeds 50 gets a NaN scale: an invalid parameter.
        scale = torch.where(x[:, :1] > 50, torch.nan, 1.0)
        loc = z.sum(-1, keepdim=True).expand(*z.shape[:-1], x.shape[-1])
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)


def guide(x, mask=None):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))


def data(bad_row: int | None = None) -> torch.Tensor:
    x = torch.randn(5, 3)
    if bad_row is not None:
        x[bad_row, 0] = 100.0
    return x


def test_invalid_parameter_in_a_middle_block_still_raises():
    # One row per block (chunk_size = num_samples): row 2 is in a block run unvalidated.
    with pytest.raises((ContractError, ValueError), match="scale"):
        log_importance_weights(model, guide, data(2), num_samples=4, seed=0, chunk_size=4)


def test_without_validation_the_weights_are_nan_as_before():
    with pyro.validation_enabled(False):
        log_w = log_importance_weights(model, guide, data(2), num_samples=4, seed=0, chunk_size=4)
    assert log_w[:, 2].isnan().all()
    assert log_w[:, [0, 1, 3, 4]].isfinite().all()


def test_validation_does_not_change_the_weights():
    x = data()
    validated = log_importance_weights(model, guide, x, num_samples=4, seed=0, chunk_size=4)
    with pyro.validation_enabled(False):
        unvalidated = log_importance_weights(model, guide, x, num_samples=4, seed=0, chunk_size=4)
    assert torch.equal(validated, unvalidated)


@pytest.mark.parametrize("validate", [True, False])
def test_the_callers_validation_setting_holds_between_blocks_and_after(validate):
    pyro.enable_validation(validate)
    blocks = iter_log_weights(model, guide, data(), num_samples=4, seed=0, chunk_size=4)
    for _ in blocks:
        assert dist.is_validation_enabled() is validate
    assert dist.is_validation_enabled() is validate
