"""Likelihoods for bounded data: continuous Bernoulli, Beta, Categorical, discretized logistic.

Shapes, samples in the support, normalisation (exact sums for the discrete ones, a trapezoid
rule for the continuous ones), support messages, and closed-form or brute-force oracles.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from models.likelihoods import LIKELIHOODS
from models.likelihoods.base import Likelihood
from models.likelihoods.beta import BetaLikelihood
from models.likelihoods.continuous_bernoulli import ContinuousBernoulliLikelihood
from models.likelihoods.discretized_logistic import DiscretizedLogisticLikelihood


def _unit_interval(shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.rand(shape)
    x.view(-1)[:2] = torch.tensor([0.0, 1.0])[: x.numel()]  # the closed ends are valid data
    return x


def _bytes(shape: tuple[int, ...]) -> torch.Tensor:
    x = torch.randint(0, 256, shape).float()
    x.view(-1)[:2] = torch.tensor([0.0, 255.0])[: x.numel()]  # both edge bins
    return x


#: name -> (options, make_data(shape) -> valid float data); reused by registry-wide checks.
CASES: dict[str, tuple[dict, Callable[[tuple[int, ...]], torch.Tensor]]] = {
    "continuous_bernoulli": ({}, _unit_interval),
    "beta": ({"eps": 1e-4, "min_concentration": 1e-2}, _unit_interval),
    "categorical": ({"num_categories": 256}, _bytes),
    "discretized_logistic": ({"num_components": 3, "num_bins": 256}, _bytes),
}

CLASSES: dict[str, type[Likelihood]] = {name: LIKELIHOODS[name] for name in CASES}


def _make(name: str, data_shape: tuple[int, ...] = (6,), **overrides) -> Likelihood:
    options, _ = CASES[name]
    return CLASSES[name](data_shape, **{**options, **overrides})


# ---------------------------------------------------------------------------- shapes, samples


@pytest.mark.parametrize("name", sorted(CASES))
def test_shapes_samples_and_gradients(name: str) -> None:
    lik = _make(name)
    make_data = CASES[name][1]
    P = lik.params_per_element
    assert lik.num_params == P * 6
    params = torch.randn(3, 4, P, 6, requires_grad=True)
    px = lik(params)
    assert px.batch_shape == (3, 4) and px.event_shape == (6,)
    x = make_data((4, 6))
    assert lik.support_violation(x) is None
    log_p = px.log_prob(x)
    assert log_p.shape == (3, 4) and bool(torch.isfinite(log_p).all())
    log_p.sum().backward()
    assert bool(torch.isfinite(params.grad).all()) and bool((params.grad != 0).any())
    sample = px.sample()
    assert sample.shape == (3, 4, 6) and sample.is_floating_point()
    assert lik.support_violation(sample) is None
    assert bool(torch.isfinite(px.log_prob(sample)).all())
    assert px.mean.shape == (3, 4, 6)
    masked = lik(params, feature_mask=torch.zeros(6, dtype=torch.bool))
    assert bool((masked.log_prob(x) == 0).all())


# ---------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize("name", ["categorical", "discretized_logistic"])
def test_discrete_likelihoods_sum_to_one(name: str) -> None:
    # Exact sums over all 256 values in float64. Tolerance 1e-9 (the brief asks 1e-5): both
    # are normalised in closed form (softmax; a telescoping sum of cdf differences).
    lik = _make(name, (5,))
    params = 3 * torch.randn(2, lik.params_per_element, 5, dtype=torch.float64)
    if name == "discretized_logistic":  # log-scales spread from the -7 clamp to wide
        params[:, 6:9] = torch.linspace(-9.0, 3.0, 10, dtype=torch.float64)[:5]
    values = torch.arange(256, dtype=torch.float64).view(256, 1, 1)
    total = lik.base_distribution(params).log_prob(values).logsumexp(0)
    torch.testing.assert_close(total, torch.zeros(2, 5, dtype=torch.float64), atol=1e-9, rtol=0)


def _trapezoid_total(lik: Likelihood, params: torch.Tensor, points: int = 200_001):
    grid = torch.linspace(0.0, 1.0, points, dtype=torch.float64).unsqueeze(-1)
    density = lik.base_distribution(params).log_prob(grid).exp()
    return torch.trapezoid(density, grid.squeeze(-1), dim=0)


def test_continuous_bernoulli_integrates_to_one() -> None:
    # Trapezoid rule, step h = 5e-6, float64. Its error is about h^2/12 * max|f''| / f-scale,
    # i.e. h^2 * l^2 / 12 < 1e-8 relative for |l| <= 50; tolerance 1e-6.
    logits = torch.tensor(
        [0.0, 1e-3, -1e-3, 0.3, -2.0, 5.0, -20.0, 50.0, -50.0], dtype=torch.float64
    )
    lik = ContinuousBernoulliLikelihood((logits.numel(),))
    total = _trapezoid_total(lik, logits.unsqueeze(0))
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_beta_integrates_to_one() -> None:
    # Concentrations >= 1 (raw outputs >= 1 give softplus + 0.01 >= 1.32), so the density is
    # bounded: with alpha < 1 it has an integrable x^(alpha-1) singularity at 0 that a
    # trapezoid rule cannot resolve. eps = 1e-9 so the clamp moves only the end points.
    # Trapezoid error near an end with alpha = 1.32 is O(h^1.32) < 1e-7; tolerance 1e-5.
    raw = torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64)
    a, b = torch.meshgrid(raw, raw, indexing="ij")
    params = torch.stack([a.flatten(), b.flatten()])  # (2, 9)
    lik = BetaLikelihood((9,), eps=1e-9)
    total = _trapezoid_total(lik, params)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- support messages


def test_unit_interval_support_messages() -> None:
    grey = torch.rand(10, 6)
    for name in ["continuous_bernoulli", "beta"]:
        lik = _make(name)
        assert lik.support_violation(grey) is None
        assert lik.support_violation(torch.tensor([[0.0, 1.0, 0.5, 1.0, 0.0, 0.2]])) is None
        message = lik.support_violation(torch.tensor([[0.2, 1.5, 0.5, 0.0, 0.1, 0.2]]))
        assert message is not None
        assert f"'{name}' likelihood needs values in [0, 1]" in message
        assert "1 values are outside it" in message and "[0, 1.5]" in message
        assert "x / 255" in message and "'discretized_logistic'" in message
        assert "inf or NaN" in lik.support_violation(torch.tensor([[float("nan")] * 6]))
    beta_message = _make("beta").support_violation(torch.full((1, 6), -0.5))
    assert "exact 0s and 1s are clamped to [0.0001, 1 - 0.0001]" in beta_message


@pytest.mark.parametrize(
    ("name", "option"), [("categorical", "num_categories"), ("discretized_logistic", "num_bins")]
)
def test_integer_support_messages(name: str, option: str) -> None:
    lik = _make(name)
    assert lik.support_violation(torch.arange(256.0).view(32, 8)) is None
    too_big = lik.support_violation(torch.tensor([[0.0, 256.0, 3, 4, 5, 6]]))
    assert f"'{name}' likelihood needs integers in [0, 255]" in too_big
    assert "outside [0, 255]" in too_big and "[0, 256]" in too_big and option in too_big
    negative = lik.support_violation(torch.tensor([[-1.0, 2, 3, 4, 5, 6]]))
    assert "outside [0, 255]" in negative
    fractional = lik.support_violation(torch.tensor([[3.5, 2, 3, 4, 5, 6]]))
    assert "1 values are not integers" in fractional
    assert "Rescale pixel intensities to integers 0..255" in fractional
    grey = lik.support_violation(torch.rand(4, 6))
    assert "grey-scale in [0, 1]?" in grey and "x = (x * 255).round()" in grey
    assert "'continuous_bernoulli'" in grey and "'beta'" in grey
    small = _make(name, **{option: 17})
    assert "outside [0, 16]" in small.support_violation(torch.full((1, 6), 17.0))


def test_options_are_checked() -> None:
    for name, options in [
        ("beta", {"eps": 0.0}),
        ("beta", {"eps": 0.5}),
        ("beta", {"min_concentration": -1.0}),
        ("categorical", {"num_categories": 1}),
        ("categorical", {"num_categories": 2.5}),
        ("discretized_logistic", {"num_components": 0}),
        ("discretized_logistic", {"num_bins": 1}),
    ]:
        with pytest.raises(ValueError, match=next(iter(options))):
            _make(name, **options)
    assert _make("categorical", num_categories=10).params_per_element == 10
    assert _make("discretized_logistic", num_components=4).params_per_element == 12


# ---------------------------------------------------------------------------- continuous Bernoulli


def _cb_reference(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """float64 log density from the lambda-free closed form log C = log(l / tanh(l / 2))."""
    logits = logits.double()
    nonzero = torch.where(logits == 0, torch.ones_like(logits), logits)
    log_c = torch.where(logits == 0, math.log(2.0), torch.log(nonzero / torch.tanh(nonzero / 2)))
    return x.double() * logits - F.softplus(logits) + log_c


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_bernoulli_is_stable_near_one_half(dtype: torch.dtype) -> None:
    lik = ContinuousBernoulliLikelihood((1,))
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    for x_value in [0.0, 0.3, 1.0]:
        # [-1e-3, 1e-3] in steps of 1e-6, then across the series switch (1e-2) and torch's
        # Taylor window (|l| < 0.004) in steps of 1e-5.
        for lo, hi, n in [(-1e-3, 1e-3, 2001), (-2e-2, 2e-2, 4001)]:
            logits = torch.linspace(lo, hi, n, dtype=dtype)
            px = lik.base_distribution(logits.view(-1, 1, 1))
            log_p = px.log_prob(torch.tensor([x_value], dtype=dtype))
            log_p = log_p.squeeze(-1)
            assert bool(torch.isfinite(log_p).all())
            step = (hi - lo) / (n - 1)
            # |d log p / dl| = |x - sigma(l) + d log C / dl| <= 0.51 here
            assert float((log_p[1:] - log_p[:-1]).abs().max()) <= 0.51 * step + 2 * tol
            reference = _cb_reference(logits, torch.tensor(x_value, dtype=torch.float64))
            assert float((log_p.double() - reference).abs().max()) <= tol
    # at logits exactly 0 the density is uniform
    x = torch.linspace(0, 1, 11, dtype=dtype)
    at_zero = lik.base_distribution(torch.zeros(1, 11, dtype=dtype)).log_prob(x)
    torch.testing.assert_close(at_zero, torch.zeros_like(at_zero), atol=1e-6, rtol=0)


def test_continuous_bernoulli_is_accurate_for_large_logits_in_float32() -> None:
    # torch's lambda-based normaliser is off by ~1.1 nats at |l| = 50 in float32.
    logits = torch.tensor([-50.0, -30.0, -15.0, 10.0, 15.0, 30.0, 50.0])
    x = torch.tensor([0.0, 0.01, 0.5, 0.99, 1.0]).view(-1, 1)
    lik = ContinuousBernoulliLikelihood((7,))
    log_p = lik.base_distribution(logits.unsqueeze(0)).log_prob(x)
    torch.testing.assert_close(log_p.double(), _cb_reference(logits, x), atol=1e-4, rtol=1e-6)


def test_continuous_bernoulli_mean_and_sampler() -> None:
    logits = torch.tensor([-50.0, -3.0, -1e-4, 0.0, 0.05, 2.0, 50.0], dtype=torch.float64)
    px = ContinuousBernoulliLikelihood((7,)).base_distribution(logits.unsqueeze(0))
    safe = torch.where(logits == 0, torch.ones_like(logits), logits)
    # the closed form cancels like 1e-16 / |l|: 1e-12 at |l| = 1e-4
    exact_mean = torch.where(logits == 0, 0.5, -1 / torch.expm1(-safe) - 1 / safe)
    torch.testing.assert_close(px.mean, exact_mean, atol=1e-11, rtol=0)
    # inverse cdf against the closed-form cdf F(x) = expm1(l x) / expm1(l)
    u = torch.tensor([1e-9, 0.1, 0.5, 0.9, 1 - 1e-9], dtype=torch.float64).view(-1, 1)
    x = px.icdf(u)
    cdf = torch.where(logits == 0, x, torch.expm1(safe * x) / torch.expm1(safe))
    torch.testing.assert_close(cdf, u.expand_as(cdf), atol=1e-9, rtol=1e-6)
    # samples: empirical mean of 20000 draws within 5 standard errors (sd <= 0.29)
    draws = px.sample((20_000,))
    assert float((draws.mean(0) - exact_mean).abs().max()) < 5 * 0.29 / math.sqrt(20_000)


# ---------------------------------------------------------------------------- Beta clamp policy


def test_beta_clamps_exact_zeros_and_ones() -> None:
    eps = 1e-4
    lik = BetaLikelihood((4,), eps=eps)
    # concentrations far below 1 (raw -10 -> 0.01), near 1, and large
    params = torch.tensor([[-10.0, 0.5, 3.0, -10.0], [-10.0, 0.5, -10.0, 3.0]], requires_grad=True)
    px = lik.base_distribution(params)
    ends = torch.tensor([[0.0], [1.0]])
    inner = torch.tensor([[eps], [1 - eps]])
    log_p = px.log_prob(ends)
    assert bool(torch.isfinite(log_p).all())
    torch.testing.assert_close(log_p, px.log_prob(inner), atol=0, rtol=0)
    log_p.sum().backward()
    assert bool(torch.isfinite(params.grad).all())
    alpha = F.softplus(params[0]) + 1e-2
    torch.testing.assert_close(px.mean, alpha / (alpha + F.softplus(params[1]) + 1e-2))


# ---------------------------------------------------------------------------- discretized logistic


def _logistic_bins(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(bin x) of one discretized logistic, straight from cdf differences (no log tricks)."""
    h = 1 / 255
    centre = 2 * x / 255 - 1
    upper = torch.where(x >= 255, 1.0, torch.sigmoid((centre + h - loc) / log_scale.exp()))
    lower = torch.where(x <= 0, 0.0, torch.sigmoid((centre - h - loc) / log_scale.exp()))
    return upper - lower


def test_discretized_logistic_single_component_matches_cdf_differences() -> None:
    lik = DiscretizedLogisticLikelihood((4,), num_components=1)
    loc = torch.tensor([-0.5, 0.0, 0.3, 0.9], dtype=torch.float64)
    log_scale = torch.tensor([-3.0, -1.0, -4.5, 0.5], dtype=torch.float64)
    params = torch.stack([torch.randn(4, dtype=torch.float64), loc, log_scale])
    x = torch.arange(256, dtype=torch.float64).view(-1, 1)
    log_p = lik.base_distribution(params).log_prob(x)
    direct = _logistic_bins(x, loc, log_scale)
    keep = direct > 1e-5  # cdf differences lose ~1e-16 / mass relative: keep masses > 1e-5
    assert keep[1:-1].sum() > 100 and bool(keep[0].any()) and bool(keep[-1].any())
    torch.testing.assert_close(log_p[keep], direct.log()[keep], atol=1e-9, rtol=1e-9)


def test_discretized_logistic_mixture_matches_brute_force() -> None:
    lik = DiscretizedLogisticLikelihood((5,), num_components=3)
    logits = torch.randn(3, 5, dtype=torch.float64)
    loc = torch.rand(3, 5, dtype=torch.float64) * 2 - 1
    log_scale = torch.rand(3, 5, dtype=torch.float64) * 4 - 5
    params = torch.cat([logits, loc, log_scale])  # (9, 5): weights, means, log-scales
    px = lik.base_distribution(params)
    x = torch.arange(256, dtype=torch.float64).view(-1, 1)
    weights = logits.softmax(0)
    brute = sum(weights[k] * _logistic_bins(x, loc[k], log_scale[k]) for k in range(3))
    keep = brute > 1e-5
    torch.testing.assert_close(px.log_prob(x)[keep], brute.log()[keep], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(px.mean, (x * brute).sum(0), atol=1e-9, rtol=1e-9)
    # sampler: Kolmogorov distance between 40000 draws and the cdf, per element (the 5%
    # critical value is 1.36 / sqrt(40000) = 0.0068; the discrete test is conservative)
    draws = px.sample((40_000,)).long()
    counts = torch.zeros(256, 5, dtype=torch.float64)
    freq = counts.scatter_add_(0, draws, torch.ones_like(draws, dtype=torch.float64)) / 40_000
    assert float((freq.cumsum(0) - brute.cumsum(0)).abs().max()) < 0.012


def test_discretized_logistic_tiny_bins_are_finite_and_match_the_fallback() -> None:
    # A bin 82 scales from the mean: 1 - 1 cancels to 0 in the direct formula (log = -inf);
    # PixelCNN++'s fallback log pdf(centre) + log(2h) is within 1% of the exact mass here.
    lik = DiscretizedLogisticLikelihood((1,), num_components=1)
    h, log_scale = 1 / 255, -4.0
    params = torch.tensor([[0.0], [-1.0], [log_scale]], dtype=torch.float64)
    x = torch.tensor([[191.0]], dtype=torch.float64)
    log_p = lik.base_distribution(params).log_prob(x)
    assert float(_logistic_bins(x, torch.tensor(-1.0), torch.tensor(log_scale))) == 0.0
    mid = (2 * x / 255 - 1 + 1) / math.exp(log_scale)
    fallback = mid - log_scale - 2 * F.softplus(mid) + math.log(2 * h)
    assert bool(torch.isfinite(log_p).all()) and float(log_p) < -70
    assert abs(float(log_p - fallback)) < 0.01
    # float32 agrees with float64 across extreme parameters
    x = torch.arange(256.0).view(-1, 1)
    params = torch.tensor([[0.0], [-1.0], [-7.0]])
    log_p32 = lik.base_distribution(params).log_prob(x)
    log_p64 = lik.base_distribution(params.double()).log_prob(x.double())
    assert bool(torch.isfinite(log_p32).all())
    torch.testing.assert_close(log_p32.double(), log_p64, atol=1e-3, rtol=1e-5)
