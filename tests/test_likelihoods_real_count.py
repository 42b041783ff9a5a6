"""Likelihoods for real values (fixed / heteroscedastic Normal, Laplace, Student-t) and for
unbounded counts (Poisson, negative binomial): shapes, support, normalisation, moments,
parameter wiring, gradients and support messages."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

from guides import DiagonalNormalGuide, MLPEncoder
from models import VAE, MLPDecoder, StandardNormalPrior
from models.likelihoods import LIKELIHOODS
from models.likelihoods.base import Likelihood
from models.likelihoods.laplace import LaplaceLikelihood
from models.likelihoods.negative_binomial import NegativeBinomialLikelihood
from models.likelihoods.normal import FixedNormalLikelihood, HeteroscedasticNormalLikelihood
from models.likelihoods.poisson import PoissonLikelihood
from models.likelihoods.positive import inverse_softplus
from models.likelihoods.student_t import StudentTLikelihood


def _overdispersed_counts(shape: tuple[int, ...]) -> torch.Tensor:
    rate = torch.distributions.Gamma(0.5, 0.1).sample(shape)  # mean 5, variance 50
    return torch.poisson(rate)


#: Options and a sample of in-support data (a float tensor of the given shape) per registry
#: name, in the form of ``tests/test_models.py``'s ``LIKELIHOOD_CASES``.
CASES: dict[str, tuple[dict[str, Any], Callable[[tuple[int, ...]], torch.Tensor]]] = {
    "normal_fixed": ({"scale": 0.5}, lambda shape: torch.randn(shape)),
    "normal_heteroscedastic": ({}, lambda shape: torch.randn(shape)),
    "laplace": ({}, lambda shape: torch.randn(shape)),
    "student_t": ({"init_df": 3.0}, lambda shape: torch.distributions.StudentT(2.0).sample(shape)),
    "poisson": ({}, lambda shape: torch.poisson(torch.full(shape, 3.0))),
    "negative_binomial": ({"init_total_count": 2.0}, _overdispersed_counts),
}

#: The class each registry name will map to in ``LIKELIHOODS``.
CLASSES: dict[str, type[Likelihood]] = {name: LIKELIHOODS[name] for name in CASES}

PARAMS_PER_ELEMENT = {name: 1 for name in CLASSES} | {"normal_heteroscedastic": 2}
#: The likelihood's own learned parameters (besides the decoder's).
LEARNED = {
    "normal_fixed": set(),
    "normal_heteroscedastic": set(),
    "laplace": {"raw_scale"},
    "student_t": {"raw_scale", "raw_df"},
    "poisson": set(),
    "negative_binomial": {"raw_total_count"},
}
REAL = ["normal_fixed", "normal_heteroscedastic", "laplace", "student_t"]
COUNT = ["poisson", "negative_binomial"]


def _make(name: str, data_shape: tuple[int, ...] = (6,)) -> Likelihood:
    options, _ = CASES[name]
    return CLASSES[name](data_shape, **options)


def test_cases_cover_every_class():
    assert set(CASES) == set(CLASSES) == set(REAL) | set(COUNT)
    for name, cls in CLASSES.items():
        assert cls.name == name
        assert cls.params_per_element == PARAMS_PER_ELEMENT[name]


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_shapes_and_samples_in_support(name):
    likelihood = _make(name)
    P = likelihood.params_per_element
    assert likelihood.num_params == P * 6
    params = torch.randn(3, 4, P, 6)
    px = likelihood(params)
    assert px.batch_shape == (3, 4) and px.event_shape == (6,)
    x = CASES[name][1]((4, 6))
    assert x.dtype == torch.get_default_dtype() and x.shape == (4, 6)
    assert likelihood.support_violation(x) is None
    log_prob = px.log_prob(x)
    assert log_prob.shape == (3, 4) and bool(torch.isfinite(log_prob).all())
    samples = px.sample()
    assert samples.shape == (3, 4, 6)
    assert bool(likelihood.support.check(samples).all())
    assert likelihood.support_violation(samples) is None


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_multidimensional_data_shape(name):
    likelihood = _make(name, (2, 3))
    params = torch.randn(5, likelihood.params_per_element, 2, 3)
    px = likelihood(params)
    assert px.batch_shape == (5,) and px.event_shape == (2, 3)
    assert px.log_prob(CASES[name][1]((5, 2, 3))).shape == (5,)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_mean_is_the_decoded_location(name):
    likelihood = _make(name)
    params = torch.randn(3, 4, likelihood.params_per_element, 6)
    first = params[:, :, 0]
    expected = first.exp() if name in COUNT else first
    torch.testing.assert_close(likelihood(params).mean, expected)


def _set_raw(parameter: torch.nn.Parameter, values: list[float]) -> None:
    """Set a softplus-parametrised per-feature parameter to ``values`` (before the floor)."""
    with torch.no_grad():
        target = torch.tensor(values, dtype=parameter.dtype)
        parameter.copy_(inverse_softplus(target))


def _continuous_case(name: str) -> tuple[Likelihood, torch.Tensor]:
    """A likelihood over 3 features with different scales (and df), and its params (1, P, 3)."""
    likelihood = CLASSES[name](
        (3,), **({"scale": [0.3, 1.0, 4.0]} if name == "normal_fixed" else {})
    )
    loc = torch.tensor([0.3, -1.0, 2.0])
    if name == "normal_heteroscedastic":
        params = torch.stack([loc, torch.tensor([-1.0, 0.5, 3.0])])[None]
    else:
        params = loc[None, None]
    if name in ("laplace", "student_t"):
        _set_raw(likelihood.raw_scale, [0.3, 1.0, 4.0])
    if name == "student_t":
        _set_raw(likelihood.raw_df, [0.5, 2.0, 29.0])  # df = 1.5, 3, 30 with min_df = 1
    return likelihood, params


@pytest.mark.parametrize("name", REAL)
def test_continuous_densities_normalise(float64, name):
    r"""Trapezoid rule after :math:`x = \tan\theta`, :math:`\theta \in (-\pi/2, \pi/2)`, which
    maps the whole real line to a bounded interval, so heavy tails lose no mass off a grid.

    The integrand :math:`p(\tan\theta) / \cos^2\theta` tends to 0 at both ends (for the
    Student-t like :math:`\cos^{\nu - 1}\theta`, hence :math:`\nu > 1`, which the floor
    ``min_df = 1`` ensures). Trapezoid error with h = pi / 1e5: spectrally small for the
    Normals (measured 2e-16); O(h^2) at Laplace's kink (4e-10); O(h^(nu - 1 + 1)) = O(h^1.5)
    from the Student-t ends at nu = 1.5 (7e-9, shrinking 8x when h shrinks 4x). atol 1e-7 in
    float64 covers all with margin, while a miswired scale or df is off by O(1).
    """
    likelihood, params = _continuous_case(name)
    theta = torch.linspace(-math.pi / 2, math.pi / 2, 100_001)[1:-1]
    x = torch.tan(theta)[:, None]
    density = (
        likelihood.base_distribution(params).log_prob(x).exp() / torch.cos(theta)[:, None] ** 2
    )
    zero = torch.zeros(1, 3)  # the integrand's limit at both ends
    density = torch.cat([zero, density, zero])
    theta = torch.cat([theta.new_tensor([-math.pi / 2]), theta, theta.new_tensor([math.pi / 2])])
    total = torch.trapezoid(density, theta, dim=0)
    torch.testing.assert_close(total, torch.ones(3), atol=1e-7, rtol=0)


def _count_case(name: str) -> tuple[Likelihood, torch.Tensor, torch.Tensor]:
    """A count likelihood over 3 features and its log-mean params (1, 1, 3); means 0.5, 5, 40
    (Poisson), with inverse dispersions r = 0.5, 2, 50 (negative binomial)."""
    likelihood = CLASSES[name]((3,))
    mean = torch.tensor([0.5, 5.0, 40.0])
    if name == "negative_binomial":
        _set_raw(likelihood.raw_total_count, [0.5 - 1e-4, 2.0 - 1e-4, 50.0 - 1e-4])
    return likelihood, mean.log()[None, None], mean


@pytest.mark.parametrize("name", COUNT)
def test_count_pmfs_normalise_with_the_stated_mean_and_variance(float64, name):
    """Sum over 0..2000: the largest tail left out is NB(mean 5, r=2), about
    (5/7)^2000 ~ 1e-292, and the Poisson(40) tail is smaller still, so the sum is 1 up to
    float64 rounding of 2001 terms; atol 1e-6."""
    likelihood, params, mean = _count_case(name)
    support = torch.arange(2001.0)[:, None]
    pmf = likelihood.base_distribution(params).log_prob(support).exp()
    torch.testing.assert_close(pmf.sum(0), torch.ones(3), atol=1e-6, rtol=0)
    if name == "poisson":
        variance = mean
    else:
        r = likelihood.total_count.detach()
        torch.testing.assert_close(r, torch.tensor([0.5, 2.0, 50.0]))
        variance = mean + mean**2 / r
    base = likelihood.base_distribution(params)
    torch.testing.assert_close(base.mean[0], mean)
    torch.testing.assert_close(base.variance[0], variance)
    first = (pmf * support).sum(0)
    torch.testing.assert_close(first, mean, atol=1e-6, rtol=1e-9)
    torch.testing.assert_close((pmf * (support - mean) ** 2).sum(0), variance, atol=1e-6, rtol=1e-9)


def test_negative_binomial_tends_to_poisson_as_total_count_grows(float64):
    log_mean = torch.randn(1, 1, 5)
    x = torch.poisson(log_mean.exp().expand(4, 1, 5)).squeeze(1)
    nb = NegativeBinomialLikelihood((5,), init_total_count=1e7)
    torch.testing.assert_close(nb.total_count.detach(), torch.full((5,), 1e7))
    poisson = PoissonLikelihood((5,))
    torch.testing.assert_close(
        nb(log_mean).log_prob(x), poisson(log_mean).log_prob(x), atol=1e-5, rtol=0
    )


def test_scales_and_degrees_of_freedom_are_wired(float64):
    loc = torch.randn(4, 1, 3)
    fixed = FixedNormalLikelihood((3,), scale=[0.5, 1.0, 2.0])
    base = fixed.base_distribution(loc)
    torch.testing.assert_close(base.scale, torch.tensor([0.5, 1.0, 2.0]).expand(4, 3))
    assert "scale" in dict(fixed.named_buffers()) and not list(fixed.parameters())

    raw = torch.randn(4, 1, 3)
    hetero = HeteroscedasticNormalLikelihood((3,), min_scale=0.01)
    base = hetero.base_distribution(torch.cat([loc, raw], dim=1))
    torch.testing.assert_close(base.loc, loc[:, 0])
    torch.testing.assert_close(base.scale, F.softplus(raw[:, 0]) + 0.01)

    laplace = LaplaceLikelihood((3,), init_scale=0.7)
    torch.testing.assert_close(laplace.base_distribution(loc).scale, torch.full((4, 3), 0.7))

    student = StudentTLikelihood((3,), init_scale=0.7, init_df=4.0, min_df=2.0)
    base = student.base_distribution(loc)
    torch.testing.assert_close(base.df, torch.full((4, 3), 4.0))
    torch.testing.assert_close(base.scale, torch.full((4, 3), 0.7))
    # closed form of the Student-t log density at df = 4, scale = 0.7
    x = torch.randn(4, 3)
    nu, s, z = 4.0, 0.7, (x - loc[:, 0]) / 0.7
    expected = (
        math.lgamma((nu + 1) / 2)
        - math.lgamma(nu / 2)
        - 0.5 * math.log(math.pi * nu)
        - math.log(s)
        - (nu + 1) / 2 * torch.log1p(z**2 / nu)
    )
    torch.testing.assert_close(base.log_prob(x), expected)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_gradients_reach_every_parameter(name):
    likelihood = _make(name)
    latent_dim = 2
    model = VAE(
        StandardNormalPrior(latent_dim),
        MLPDecoder(latent_dim, likelihood.num_params, hidden=(8,)),
        likelihood,
    )
    guide = DiagonalNormalGuide(MLPEncoder(likelihood.data_shape, latent_dim, hidden=(8,)))
    x = CASES[name][1]((4, 6))
    loss = Trace_ELBO().loss_and_grads(model, guide, x)
    assert math.isfinite(loss)
    assert {n for n, _ in likelihood.named_parameters()} == LEARNED[name]
    for module in (model, guide):
        for pname, param in module.named_parameters():
            assert param.grad is not None and bool(param.grad.abs().sum() > 0), pname


@pytest.mark.parametrize("name", COUNT)
def test_count_support_messages(name):
    likelihood = _make(name, (3,))
    message = likelihood.support_violation(torch.tensor([[0.0, 1.5, 2.0]]))
    assert f"'{name}'" in message and "1 values are not integers" in message
    assert "round" in message and "'normal'" in message
    message = likelihood.support_violation(torch.tensor([[0.0, -1.0, 2.0]]))
    assert "non-negative" in message and "-1" in message and "'normal'" in message
    message = likelihood.support_violation(torch.tensor([[0.0, float("inf"), 2.0]]))
    assert "inf or NaN" in message and "mask" in message
    assert likelihood.support_violation(torch.tensor([[0.0, 7.0, 2000.0]])) is None


@pytest.mark.parametrize("name", REAL)
def test_real_support_messages(name):
    likelihood = _make(name, (3,))
    message = likelihood.support_violation(torch.tensor([[0.0, float("inf"), float("nan")]]))
    assert f"'{name}'" in message and "finite" in message and "2 values" in message
    assert "impute" in message
    assert likelihood.support_violation(torch.tensor([[-1e30, 0.5, 1e30]])) is None


@pytest.mark.parametrize(
    ("cls", "options", "match"),
    [
        (FixedNormalLikelihood, {"scale": 0.0}, "positive"),
        (FixedNormalLikelihood, {"scale": [1.0, 2.0]}, "broadcast"),
        (HeteroscedasticNormalLikelihood, {"min_scale": 0.0}, "min_scale"),
        (LaplaceLikelihood, {"init_scale": 1e-4}, "init_scale > min_scale"),
        (StudentTLikelihood, {"init_df": 1.0}, "init_df > min_df"),
        (NegativeBinomialLikelihood, {"init_total_count": -1.0}, "init_total_count"),
    ],
)
def test_bad_options_are_rejected(cls, options, match):
    with pytest.raises(ValueError, match=match):
        cls((3,), **options)
