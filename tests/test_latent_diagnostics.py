"""Latent-space diagnostics (active units, KL per coordinate, aggregate posterior) and the
posterior predictive check, against closed forms on the linear-Gaussian oracle and on small
plain Pyro programs; then on library models (two latent sites; labels)."""

from __future__ import annotations

import json
import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from torch.distributions import transforms

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.diagnostics.latents import (
    active_units,
    aggregate_posterior_vs_prior,
    kl_per_dimension,
    latent_report,
)
from ppl_vae.diagnostics.predictive import default_statistics, posterior_predictive_check
from ppl_vae.errors import ContractError
from tests.mean_field_oracle import diagonal_guide, kl_to_prior
from tests.oracle import LinearGaussian


def _oracle(data_dim: int = 5, latent_dim: int = 3, num_data: int = 40):
    oracle = LinearGaussian.random(data_dim, latent_dim, s=0.5, seed=3)
    return oracle, oracle.sample(num_data, seed=4)


def _gaussian_kl_marginals(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(m, v) || N(0, 1)) elementwise."""
    return 0.5 * (var + mean.pow(2) - 1 - var.log())


def _flow_guide(oracle: LinearGaussian, stretch: float = 1.0):
    """The exact posterior's diagonal, written as a flow: an affine map of N(0, I). Its mean
    is not available in closed form (TransformedDistribution), so diagnostics fall back to
    Monte Carlo."""
    std = oracle.posterior_cov().diagonal().sqrt()

    def guide(x: torch.Tensor, mask=None) -> None:
        loc = oracle.posterior_mean(x)
        base = dist.Normal(torch.zeros_like(loc), torch.ones_like(loc)).to_event(1)
        flow = transforms.AffineTransform(loc, std * stretch, event_dim=1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.TransformedDistribution(base, [flow]))

    return guide


# --------------------------------------------------------------------------- KL per dimension


def test_kl_per_dimension_exact_guide_matches_closed_form(float64):
    oracle, x = _oracle()
    result = kl_per_dimension(oracle.model, oracle.gaussian_guide(), x, num_samples=4)
    mean, cov = oracle.posterior_mean(x), oracle.posterior_cov()
    expected = _gaussian_kl_marginals(mean, cov.diagonal())
    assert result.method == {"z": "analytic"} and result.total_method == {"z": "analytic"}
    torch.testing.assert_close(result.values["z"], expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(result.per_dimension["z"], expected.mean(0))
    # Total: KL(N(m, S) || N(0, I)) = (tr S + |m|^2 - d - log det S) / 2.
    d = oracle.latent_dim
    total = 0.5 * (cov.trace() + mean.pow(2).sum(-1) - d - torch.logdet(cov))
    torch.testing.assert_close(result.total["z"], total, rtol=1e-10, atol=1e-12)
    # The exact posterior is correlated: the total exceeds the sum of the marginal KLs by the
    # total correlation, which for a Gaussian is -log det(correlation matrix) / 2.
    std = cov.diagonal().sqrt()
    correlation = cov / std[:, None] / std[None, :]
    assert result.total_correlation["z"] == pytest.approx(-0.5 * float(torch.logdet(correlation)))
    assert result.total_correlation["z"] > 1e-4


def test_kl_per_dimension_diagonal_guide_sums_to_total(float64):
    oracle, x = _oracle()
    guide = diagonal_guide(oracle, mean_shift=0.3, cov_scale=1.5)
    result = kl_per_dimension(oracle.model, guide, x, num_samples=2)
    expected = kl_to_prior(oracle, x, mean_shift=0.3, cov_scale=1.5)
    torch.testing.assert_close(result.values["z"].sum(-1), expected)
    torch.testing.assert_close(result.total["z"], expected)
    assert abs(result.total_correlation["z"]) < 1e-10


def _non_normal_pair(prior: dist.Distribution, scale: torch.Tensor):
    weight = torch.tensor([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]])

    def model(x: torch.Tensor, mask=None) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Normal(z @ weight.T, 1.0).to_event(1), obs=x)

    def guide(x: torch.Tensor, mask=None) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(0.5 * x[:, :2], scale).to_event(1))

    return model, guide


def _quadrature_kl(loc: float, scale: float, log_p) -> float:
    """KL(N(loc, scale) || p) on a fine grid (trapezoid rule)."""
    grid = torch.linspace(loc - 12 * scale, loc + 12 * scale, 40001, dtype=torch.float64)
    q = dist.Normal(torch.tensor(loc, dtype=torch.float64), scale)
    log_q = q.log_prob(grid)
    return float(torch.trapezoid(log_q.exp() * (log_q - log_p(grid)), grid))


def test_kl_per_dimension_laplace_prior_is_analytic(float64):
    # torch registers KL(Normal || Laplace): per coordinate -log(2 pi e s^2) / 2 + log 2 + E|z|
    # with E|z| = s sqrt(2/pi) exp(-m^2 / 2 s^2) + m erf(m / (s sqrt 2)).
    scale = torch.tensor([0.4, 1.3])
    model, guide = _non_normal_pair(dist.Laplace(torch.zeros(2), 1.0).to_event(1), scale)
    x = torch.randn(6, 3) * 2
    result = kl_per_dimension(model, guide, x, num_samples=2)
    m, s = 0.5 * x[:, :2], scale
    abs_mean = s * math.sqrt(2 / math.pi) * torch.exp(-(m**2) / (2 * s**2)) + m * torch.erf(
        m / (s * math.sqrt(2))
    )
    expected = -0.5 * torch.log(2 * math.pi * math.e * s**2) + math.log(2) + abs_mean
    assert result.method["z"] == "analytic"
    torch.testing.assert_close(result.values["z"], expected)
    torch.testing.assert_close(result.total["z"], expected.sum(-1))


@pytest.mark.parametrize("prior_name", ["student_t", "mixture"])
def test_kl_per_dimension_monte_carlo_marginals(float64, prior_name):
    scale = torch.tensor([0.7, 1.1])
    if prior_name == "student_t":
        prior = dist.StudentT(3.0, torch.zeros(2), 1.0).to_event(1)
        marginals = [dist.StudentT(3.0, 0.0, 1.0)] * 2
    else:
        weights = torch.tensor([0.3, 0.7])
        loc = torch.tensor([[-1.0, 2.0], [1.5, 0.0]])
        spread = torch.tensor([[0.5, 1.0], [0.8, 0.3]])
        components = dist.Normal(loc, spread).to_event(1)
        prior = dist.MixtureSameFamily(dist.Categorical(probs=weights), components)
        marginals = [
            dist.MixtureSameFamily(
                dist.Categorical(probs=weights), dist.Normal(loc[:, u], spread[:, u])
            )
            for u in range(2)
        ]
    model, guide = _non_normal_pair(prior, scale)
    x = torch.tensor([[0.4, -1.0, 0.0], [2.0, 1.0, 1.0], [-1.0, 3.0, 0.5]])
    result = kl_per_dimension(model, guide, x, num_samples=20000, seed=1)
    assert result.method["z"] == "monte carlo"
    assert result.total_method["z"] == "monte carlo"
    for n in range(x.shape[0]):
        for u in range(2):
            expected = _quadrature_kl(float(0.5 * x[n, u]), float(scale[u]), marginals[u].log_prob)
            assert float(result.values["z"][n, u]) == pytest.approx(expected, abs=0.03)
    # The prior factorizes for the Student-t (total = sum of marginals up to MC noise); the
    # mixture's coordinates are dependent, so only the estimate's finiteness is checked.
    assert torch.isfinite(result.total["z"]).all()
    if prior_name == "student_t":
        torch.testing.assert_close(result.total["z"], result.values["z"].sum(-1))


def test_kl_per_dimension_flow_guide_reports_total_only(float64):
    oracle, x = _oracle(num_data=10)
    result = kl_per_dimension(oracle.model, _flow_guide(oracle), x, num_samples=4000)
    assert result.method["z"] == "unavailable"
    assert torch.isnan(result.values["z"]).all()
    assert result.total_method["z"] == "monte carlo"
    mean, var = oracle.posterior_mean(x), oracle.posterior_cov().diagonal()
    expected = _gaussian_kl_marginals(mean, var).sum(-1)
    torch.testing.assert_close(result.total["z"], expected, atol=0.06, rtol=0.0)
    summary = json.loads(json.dumps(result.summary()))
    assert summary["sites"]["z"]["per_dimension"] == [None] * 3


# --------------------------------------------------------------------------- active units


def test_active_units_decoder_ignoring_a_coordinate(float64):
    oracle, _ = _oracle(latent_dim=3)
    oracle.W[:, 1] = 0.0  # the decoder never reads z[1]: its posterior is the prior
    x = oracle.sample(60, seed=5)
    result = active_units(oracle.gaussian_guide(), x, num_samples=2)
    expected = oracle.posterior_mean(x).var(dim=0)
    torch.testing.assert_close(result.activity["z"], expected)
    assert float(result.activity["z"][1]) < 1e-20
    assert result.active["z"].tolist() == [True, False, True]
    assert result.num_active == 2 and result.num_units == 3
    assert result.mean_method == {"z": "family mean"}
    assert json.loads(json.dumps(result.summary()))["sites"]["z"]["num_active"] == 2

    # Without a closed-form mean the posterior means are Monte Carlo averages: the unused
    # coordinate's activity is the MC noise, about Var_q / S = 1 / 400.
    flow = active_units(_flow_guide(oracle), x, num_samples=400)
    assert flow.mean_method == {"z": "monte carlo"}
    assert flow.active["z"].tolist() == [True, False, True]
    assert float(flow.activity["z"][1]) < 0.006
    torch.testing.assert_close(flow.activity["z"][[0, 2]], expected[[0, 2]], rtol=0.1, atol=0)


def test_active_units_threshold_and_input_checks(float64):
    oracle, x = _oracle()
    guide = oracle.gaussian_guide()
    assert active_units(guide, x, threshold=1e6).num_active == 0
    with pytest.raises(ValueError, match="two datapoints"):
        active_units(guide, x[:1])
    with pytest.raises(ValueError, match="non-negative"):
        active_units(guide, x, threshold=-1.0)


# --------------------------------------------------------------------------- aggregate posterior


def test_aggregate_posterior_matches_prior_only_for_a_good_guide(float64):
    # Averaged over data drawn from the model, the exact posterior gives back the prior.
    oracle, x = _oracle(latent_dim=2, num_data=300)
    good = aggregate_posterior_vs_prior(
        oracle.model, oracle.gaussian_guide(), x, num_samples=4, max_mmd_samples=600
    )
    bad = aggregate_posterior_vs_prior(
        oracle.model,
        oracle.gaussian_guide(mean_shift=1.5, cov_scale=0.2),
        x,
        num_samples=4,
        max_mmd_samples=600,
    )
    assert good.num_draws == 1200
    torch.testing.assert_close(good.q_mean["z"], torch.zeros(2), atol=0.2, rtol=0)
    torch.testing.assert_close(good.q_var["z"], torch.ones(2), atol=0.25, rtol=0)
    torch.testing.assert_close(good.p_mean["z"], torch.zeros(2), atol=0.15, rtol=0)
    torch.testing.assert_close(good.p_var["z"], torch.ones(2), atol=0.15, rtol=0)
    torch.testing.assert_close(bad.q_mean["z"], torch.full((2,), 1.5), atol=0.2, rtol=0)
    assert abs(good.mmd_squared["z"]) < 0.01
    assert bad.mmd_squared["z"] > 20 * max(abs(good.mmd_squared["z"]), 0.005)


def test_diagnostics_are_seeded_and_keep_the_global_stream(float64):
    oracle, x = _oracle()
    guide = oracle.gaussian_guide(cov_scale=2.0)
    torch.manual_seed(11)
    state = torch.get_rng_state()
    first = aggregate_posterior_vs_prior(oracle.model, guide, x, seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    second = aggregate_posterior_vs_prior(oracle.model, guide, x, seed=5)
    assert torch.equal(first.q_mean["z"], second.q_mean["z"])
    assert first.mmd_squared == second.mmd_squared
    ppc_a = posterior_predictive_check(oracle.model, guide, x, seed=2)
    ppc_b = posterior_predictive_check(oracle.model, guide, x, seed=2)
    assert torch.equal(ppc_a.replicates, ppc_b.replicates)


def test_guide_missing_a_latent_site_is_a_contract_error(float64):
    oracle, x = _oracle()

    def model(x: torch.Tensor, mask=None) -> None:
        with pyro.plate("data", x.shape[0]):
            w = pyro.sample("w", dist.Normal(0.0, 1.0))
            z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
            loc = z @ oracle.W.T + oracle.b + w[..., None]
            pyro.sample("x", dist.Normal(loc, oracle.s).to_event(1), obs=x)

    with pytest.raises(ContractError, match="'w'"):
        kl_per_dimension(model, oracle.gaussian_guide(), x)
    with pytest.raises(ContractError, match="'w'"):
        posterior_predictive_check(model, oracle.gaussian_guide(), x)


# --------------------------------------------------------------------------- predictive checks


def test_ppc_true_model_is_not_extreme_and_wrong_models_are(float64):
    oracle, x = _oracle(num_data=200)
    guide = oracle.gaussian_guide()
    good = posterior_predictive_check(oracle.model, guide, x, num_replicates=200)
    assert set(good.statistics) == {"mean", "sd", "feature_mean", "histogram"}  # no zeros
    for name in ("mean", "sd"):
        assert 0.02 < float(good.statistics[name].p_value) < 0.98
    assert not good.statistics["feature_mean"].extreme().any()
    assert float(good.statistics["histogram"].extreme().to(torch.float64).mean()) <= 0.1

    shifted = LinearGaussian(oracle.W, oracle.b + 3.0, oracle.s)
    bad = posterior_predictive_check(shifted.model, guide, x, num_replicates=50)
    assert float(bad.statistics["mean"].p_value) == 1.0  # every replicate above the data
    assert bad.statistics["feature_mean"].extreme().all()
    noisy = LinearGaussian(oracle.W, oracle.b, 4 * oracle.s)
    loud = posterior_predictive_check(noisy.model, guide, x, num_replicates=50)
    assert float(loud.statistics["sd"].p_value) == 1.0
    summary = json.loads(json.dumps(loud.summary()))
    assert summary["statistics"]["sd"]["p_value"] == 1.0
    assert summary["statistics"]["sd"]["extreme_fraction"] == 1.0


def test_ppc_inference_data_layout(float64):
    oracle, x = _oracle(num_data=12)
    result = posterior_predictive_check(oracle.model, oracle.gaussian_guide(), x, num_replicates=7)
    idata = result.inference_data
    assert set(idata.groups()) == {"observed_data", "posterior_predictive"}
    replicated = idata.posterior_predictive["x"]
    assert replicated.dims == ("chain", "draw", "obs", "feature")
    assert replicated.shape == (1, 7, 12, 5)
    assert idata.observed_data["x"].dims == ("obs", "feature")
    torch.testing.assert_close(torch.as_tensor(idata.observed_data["x"].values), x)
    torch.testing.assert_close(torch.as_tensor(replicated.values[0]), result.replicates)
    assert result.num_replicates == 7 and result.replicates.shape == (7, 12, 5)


def test_ppc_user_statistics_and_histogram_bins(float64):
    oracle, x = _oracle(num_data=12)
    guide = oracle.gaussian_guide()
    result = posterior_predictive_check(
        oracle.model, guide, x, num_replicates=5, statistics={"max": lambda d: d.max()}
    )
    assert list(result.statistics) == ["max"]
    check = result.statistics["max"]
    assert check.replicated.shape == (5,)
    assert float(check.p_value) == float((check.replicated >= check.observed).double().mean())
    with pytest.raises(ValueError, match="shape"):
        posterior_predictive_check(
            oracle.model, guide, x, statistics={"bad": lambda d: d[: int(d[0, 0] > 0) + 1, 0]}
        )
    counts = torch.tensor([[0.0, 3.0, 16.0], [2.0, 0.0, 5.0]])
    statistics = default_statistics(counts)
    assert {"fraction_zeros", "histogram"} <= set(statistics)
    histogram = statistics["histogram"](counts)
    assert histogram.shape == (17,)  # one bin per count 0..16
    assert float(histogram.sum()) == pytest.approx(1.0)
    assert float(histogram[0]) == pytest.approx(2 / 6)


# --------------------------------------------------------------------------- library models


def test_hierarchical_library_model_two_sites():
    spec = ModelSpec(
        data_shape=(6,), architecture="hierarchical", latent_dim=2, top_latent_dim=2, hidden=(8,)
    )
    model, guide = build_vae(spec)
    x = (torch.rand(30, 6) < 0.4).float()
    report = latent_report(model, guide, x, num_samples=4)
    assert list(report.active_units.activity) == ["z2", "z1"]
    assert report.active_units.num_units == 4
    assert report.kl.values["z1"].shape == (30, 2)
    assert report.kl.method == {"z2": "analytic", "z1": "analytic"}
    assert all((v >= -1e-6).all() for v in report.kl.values.values())
    assert set(report.aggregate.mmd_squared) == {"z2", "z1"}
    summary = json.loads(json.dumps(report.summary()))
    assert summary["kl_per_dimension"]["sites"]["z1"]["total"] > 0
    ppc = posterior_predictive_check(model, guide, x, num_replicates=4)
    assert ppc.replicates.shape == (4, 30, 6)
    assert set(ppc.replicates.unique().tolist()) <= {0.0, 1.0}  # Bernoulli draws


def test_conditional_library_model_with_labels():
    spec = ModelSpec(
        data_shape=(6,), architecture="conditional", num_classes=3, latent_dim=2, hidden=(8,)
    )
    model, guide = build_vae(spec)
    x = (torch.rand(20, 6) < 0.4).float()
    y = torch.arange(20) % 3
    report = latent_report(model, guide, x, y=y, num_samples=2)
    assert report.active_units.num_units == 2
    ppc = posterior_predictive_check(model, guide, x, y=y, num_replicates=3)
    assert ppc.replicates.shape == (3, 20, 6)
    with pytest.raises(Exception, match="label"):
        posterior_predictive_check(model, guide, x, num_replicates=3)
