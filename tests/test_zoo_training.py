"""Every likelihood with every prior: a few SVI steps without NaN, then log p(x) per datapoint.

Small networks and few steps keep the whole grid (likelihoods x priors) to seconds; the point
is that the engine works unchanged on every registered combination.
"""

from __future__ import annotations

import math

import pytest
import torch

from models import LIKELIHOODS, PRIORS
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.estimators import log_likelihood
from ppl_vae.training import fit
from tests.test_models import LIKELIHOOD_CASES

#: Small settings for priors with sizes (keeps the grid fast).
PRIOR_OPTIONS = {"mixture": {"num_components": 3}, "vamp": {"num_components": 3}}


@pytest.mark.parametrize("prior", sorted(PRIORS))
@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_every_likelihood_with_every_prior_trains_and_is_evaluated(likelihood, prior):
    options, make = LIKELIHOOD_CASES[likelihood]
    x = make((24, 5))
    spec = ModelSpec(
        data_shape=(5,),
        likelihood=likelihood,
        likelihood_options=options,
        prior=prior,
        prior_options=PRIOR_OPTIONS.get(prior, {}),
        latent_dim=2,
        hidden=(8,),
    )
    model, guide = build_vae(spec)
    result = fit(model, guide, x, epochs=2, batch_size=8, lr=1e-2, progress=False)
    assert all(math.isfinite(v) for v in result.step_elbo)
    estimate = log_likelihood(model, guide, x[:6], num_samples=8, seed=0)
    assert torch.isfinite(estimate.log_likelihood).all()
    assert (estimate.log_likelihood >= estimate.elbo - 1e-6).all()  # Jensen, same draws
