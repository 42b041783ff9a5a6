"""The parts of models/ and guides/: one checklist over every registry entry, plus the VAE
checked against the closed-form linear-Gaussian oracle."""

from __future__ import annotations

import inspect

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from guides import ENCODERS, GUIDES, DiagonalNormalGuide, MLPEncoder
from models import (
    DECODERS,
    LIKELIHOODS,
    VAE,
    BernoulliLikelihood,
    BinomialLikelihood,
    MLPDecoder,
    NormalLikelihood,
    StandardNormalPrior,
)
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.estimators import log_likelihood
from tests.oracle import LinearGaussian
from tests.test_likelihoods_bounded import CASES as BOUNDED_CASES
from tests.test_likelihoods_real_count import CASES as REAL_COUNT_CASES

#: Options and a sample of in-support data for every registered likelihood.
LIKELIHOOD_CASES = {
    "bernoulli": ({}, lambda shape: torch.randint(0, 2, shape).float()),
    "binomial": ({"total_count": 5}, lambda shape: torch.randint(0, 6, shape).float()),
    "normal": ({}, lambda shape: torch.randn(shape)),
    **BOUNDED_CASES,
    **REAL_COUNT_CASES,
}


def test_every_likelihood_has_a_case():
    assert set(LIKELIHOOD_CASES) == set(LIKELIHOODS)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_shapes_and_support(name):
    options, make = LIKELIHOOD_CASES[name]
    likelihood = LIKELIHOODS[name]((6,), **options)
    params = torch.randn(3, 4, likelihood.params_per_element, 6)
    px = likelihood(params)
    assert px.batch_shape == (3, 4) and px.event_shape == (6,)
    x = make((4, 6))
    assert likelihood.support_violation(x) is None
    assert px.log_prob(x).shape == (3, 4)
    assert likelihood.num_params == likelihood.params_per_element * 6


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_feature_mask_drops_elements(name):
    options, make = LIKELIHOOD_CASES[name]
    likelihood = LIKELIHOODS[name]((6,), **options)
    params = torch.randn(4, likelihood.params_per_element, 6)
    x = make((4, 6))
    mask = torch.tensor([True, False, True, True, False, True]).expand(4, 6)
    full = likelihood.base_distribution(params).log_prob(x)
    masked = likelihood(params, feature_mask=mask).log_prob(x)
    torch.testing.assert_close(masked, (full * mask).sum(-1))


def test_discrete_likelihoods_normalise():
    logits = torch.randn(1, 1, 1)
    for likelihood, support in [
        (BernoulliLikelihood((1,)), torch.tensor([[0.0], [1.0]])),
        (BinomialLikelihood((1,), total_count=7), torch.arange(8.0)[:, None]),
    ]:
        total = likelihood(logits).log_prob(support).exp().sum()
        torch.testing.assert_close(total, torch.tensor(1.0))


def test_normal_likelihood_normalises_and_learns_its_scale():
    likelihood = NormalLikelihood((1,), init_scale=0.7)
    torch.testing.assert_close(likelihood.scale, torch.tensor([0.7]))
    grid = torch.linspace(-10, 10, 20001)[:, None]
    density = likelihood(torch.zeros(1, 1)).log_prob(grid).exp()
    torch.testing.assert_close(torch.trapezoid(density, grid[:, 0]), torch.tensor(1.0))
    assert likelihood.raw_scale.requires_grad


def test_likelihood_support_messages():
    grey = torch.rand(5, 4)
    message = BernoulliLikelihood((4,)).support_violation(grey)
    assert "binary" in message and "Binarize" in message and "grey-scale" in message
    binomial = BinomialLikelihood((4,), total_count=16)
    assert "integer" in binomial.support_violation(torch.full((2, 4), 0.5))
    too_big = binomial.support_violation(torch.full((2, 4), 17.0))
    assert "total_count" in too_big and "17" in too_big
    assert "finite" in NormalLikelihood((4,)).support_violation(torch.tensor([[float("inf")]]))


def _image_options(cls) -> dict:
    """Convolutional networks need the image layout: 6 features as a 1 x 2 x 3 image."""
    return {"image_shape": (1, 2, 3)} if "image_shape" in inspect.signature(cls).parameters else {}


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_decoders_map_latents_to_flat_parameters(name):
    options = _image_options(DECODERS[name])
    decoder = DECODERS[name](3, 12, hidden=(8,), activation="tanh", **options)
    assert decoder(torch.randn(7, 2, 3)).shape == (7, 2, 12)


@pytest.mark.parametrize("encoder_name", sorted(ENCODERS))
@pytest.mark.parametrize("guide_name", sorted(GUIDES))
def test_guides_sample_every_latent_inside_the_data_plate(encoder_name, guide_name):
    options = _image_options(ENCODERS[encoder_name])
    encoder = ENCODERS[encoder_name]((6,), 3, hidden=(8,), min_scale=1e-4, **options)
    guide = GUIDES[guide_name](encoder)
    x = torch.randn(5, 6)
    trace = pyro.poutine.trace(guide).get_trace(x)
    assert trace.nodes["z"]["value"].shape == (5, 3)
    assert trace.nodes["z"]["cond_indep_stack"][0].name == "data"
    _, scale = encoder(x)
    assert (scale >= 1e-4).all()


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_gradients_reach_every_parameter(likelihood):
    options, make = LIKELIHOOD_CASES[likelihood]
    spec = ModelSpec(
        data_shape=(6,),
        likelihood=likelihood,
        likelihood_options=options,
        latent_dim=2,
        hidden=(8,),
    )
    model, guide = build_vae(spec)
    x = make((4, 6))
    Trace_ELBO().loss_and_grads(model, guide, x)
    for module in (model, guide):
        for name, param in module.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("likelihood", sorted(LIKELIHOODS))
def test_save_load_round_trip_reproduces_the_model(likelihood):
    options, make = LIKELIHOOD_CASES[likelihood]
    spec = ModelSpec(data_shape=(6,), likelihood=likelihood, likelihood_options=options)
    model, guide = build_vae(spec)
    pyro.clear_param_store()
    model2, guide2 = build_vae(ModelSpec.from_dict(spec.to_dict()))
    model2.load_state_dict(model.state_dict())
    guide2.load_state_dict(guide.state_dict())
    x = make((5, 6))
    a = log_likelihood(model, guide, x, num_samples=10, seed=0)
    b = log_likelihood(model2, guide2, x, num_samples=10, seed=0)
    torch.testing.assert_close(a.log_likelihood, b.log_likelihood)


def test_vae_generates_data_of_its_shape():
    model, _ = build_vae(
        ModelSpec(data_shape=(6,), likelihood="binomial", likelihood_options={"total_count": 3})
    )
    z, mean, x = model.generate(4)
    assert z.shape == (4, 8) and mean.shape == x.shape == (4, 6)
    assert model.likelihood.support_violation(x) is None


def test_decoder_and_likelihood_sizes_must_agree():
    with pytest.raises(ValueError, match="decoder produces 5 outputs"):
        VAE(StandardNormalPrior(2), MLPDecoder(2, 5), BernoulliLikelihood((6,)))


def _linear_vae(oracle: LinearGaussian) -> VAE:
    """The oracle as a VAE assembled from the library's own parts."""
    data_dim, latent_dim = oracle.W.shape
    decoder = MLPDecoder(latent_dim, data_dim, hidden=())
    with torch.no_grad():
        decoder.net[0].weight.copy_(oracle.W)
        decoder.net[0].bias.copy_(oracle.b)
    likelihood = NormalLikelihood((data_dim,), init_scale=oracle.s, min_scale=0.0)
    return VAE(StandardNormalPrior(latent_dim), decoder, likelihood)


def test_vae_matches_the_closed_form_oracle(float64):
    oracle = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5)
    x = oracle.sample(20)
    estimate = log_likelihood(_linear_vae(oracle), oracle.gaussian_guide(), x, num_samples=3)
    torch.testing.assert_close(estimate.log_likelihood, oracle.log_marginal(x), rtol=1e-6, atol=0)


def test_diagonal_guide_can_be_the_exact_posterior(float64):
    # With orthogonal columns of W the posterior covariance is diagonal, so the library's
    # DiagonalNormalGuide with a linear encoder can represent p(z|x) exactly.
    q, _ = torch.linalg.qr(torch.randn(5, 2))
    oracle = LinearGaussian(W=q * torch.tensor([2.0, 0.7]), b=torch.randn(5), s=0.5)
    cov = oracle.posterior_cov()
    torch.testing.assert_close(cov, torch.diag(cov.diagonal()))
    encoder = MLPEncoder((5,), 2, hidden=(), min_scale=0.0)
    with torch.no_grad():
        linear = encoder.net[0]
        gain = oracle.W @ cov / oracle.s**2  # loc = (x - b) W cov / s^2
        linear.weight.zero_()
        linear.bias.zero_()
        linear.weight[:2] = gain.T
        linear.bias[:2] = -oracle.b @ gain
        linear.bias[2:] = cov.diagonal().sqrt().expm1().log()  # softplus^-1(sd)
    x = oracle.sample(20)
    guide = DiagonalNormalGuide(encoder)
    estimate = log_likelihood(_linear_vae(oracle), guide, x, num_samples=100, seed=0)
    torch.testing.assert_close(estimate.log_likelihood, oracle.log_marginal(x), rtol=1e-6, atol=0)
    assert estimate.gap.abs().max() < 1e-8


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLPDecoder(2, 3, activation="swish")


def test_masked_datapoints_do_not_count(float64):
    oracle = LinearGaussian.random()
    model = _linear_vae(oracle)
    x = oracle.sample(4)
    mask = torch.tensor([True, False, True, False])
    trace = pyro.poutine.trace(model).get_trace(x, mask)
    trace.compute_log_prob()
    lp = trace.nodes["x"]["log_prob"]
    assert (lp[~mask] == 0).all() and (lp[mask] != 0).all()
    with pytest.raises(ValueError, match="mask must have shape"):
        model(x, torch.ones(3, dtype=torch.bool))
    # A full element mask is the same as no mask.
    loc = x @ torch.zeros(5, 5)
    px = model.likelihood(loc.unsqueeze(-2), torch.ones_like(x, dtype=torch.bool))
    torch.testing.assert_close(px.log_prob(x), dist.Normal(loc, 0.5).to_event(1).log_prob(x))
    assert F.softplus(model.likelihood.raw_scale).allclose(torch.tensor(0.5))
