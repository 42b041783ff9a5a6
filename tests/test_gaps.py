"""The gap decomposition of Cremer, Li & Duvenaud (2018) and the per-datapoint LocalGuide it
optimises: exact answers on the linear-Gaussian oracle, the bookkeeping of the three gaps,
a model and parameter store left as found, two latent sites, flows, and bad batches."""

from __future__ import annotations

import json

import pyro
import pytest
import torch
from pyro import poutine

from guides import DiagonalNormalGuide, HierarchicalGuide, MLPEncoder, make_guide
from guides.local import LocalGuide
from models import LIKELIHOODS, HierarchicalVAE, MLPDecoder, StandardNormalPrior
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.diagnostics.gaps import GapReport, gap_decomposition
from ppl_vae.errors import ConfigError
from ppl_vae.estimators import log_likelihood
from ppl_vae.importance import log_importance_weights
from tests.oracle import LinearGaussian

N = 6  # datapoints per test: each has its own parameters, the cost is linear in N


def oracle_setup() -> tuple[LinearGaussian, torch.Tensor]:
    oracle = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5, seed=0)
    return oracle, oracle.sample(N, seed=1)


def mean_field_gap(oracle: LinearGaussian) -> float:
    """KL(q* || p(z | x)) of the best diagonal Gaussian for the Gaussian posterior with
    precision L: q* has the posterior mean and variances 1 / L_ii, so the KL is
    (sum_i log L_ii - log det L) / 2, the same for every datapoint."""
    precision = torch.linalg.inv(oracle.posterior_cov())
    return 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))


def check_adds_up(report: GapReport) -> None:
    total = report.approximation_gap + report.amortization_gap
    torch.testing.assert_close(total, report.total_gap, rtol=0, atol=1e-12)
    torch.testing.assert_close(
        report.total_gap, report.log_likelihood - report.elbo_amortized, rtol=0, atol=0
    )
    for value in (report.elbo_amortized, report.elbo_optimal, report.log_likelihood):
        assert value.dtype == torch.float64 and value.shape == (report.num_data,)
        assert bool(torch.isfinite(value).all())


def test_optimal_full_rank_guide_recovers_the_exact_posterior(float64):
    """A mismatched Gaussian guide (shifted mean, inflated covariance) of a linear-Gaussian
    model: the per-datapoint full-rank Gaussian can represent p(z | x) exactly, so after
    optimisation the approximation gap is ~0, ELBO* = log p(x), and the amortization gap is the
    guide's closed-form KL(q || p(z | x))."""
    oracle, x = oracle_setup()
    guide = oracle.gaussian_guide(mean_shift=0.05, cov_scale=1.5)
    report = gap_decomposition(
        oracle.model, guide, x, family="fullrank_normal", steps=1000, num_samples=2000
    )
    check_adds_up(report)
    exact = oracle.log_marginal(x)
    kl = oracle.kl_to_posterior(x, mean_shift=0.05, cov_scale=1.5)
    assert report.family == "fullrank_normal" and report.proposal == ("local",) * N
    # Tolerance 0.01 nats, as asked: with the learning rate decayed to lr/10 the remaining
    # KL(q* || p) of SGD noise is ~1e-3 (ELBO* is then a 2000-draw mean of nearly constant
    # log weights, Monte Carlo error ~1e-3 too).
    assert float(report.approximation_gap.abs().max()) < 0.01
    torch.testing.assert_close(report.elbo_optimal, exact, rtol=0, atol=0.01)
    # The importance estimate from a (near-)exact posterior is exact up to its stderr.
    assert bool(
        ((report.log_likelihood - exact).abs() < 4 * report.log_likelihood_stderr + 1e-3).all()
    )
    # The amortized ELBO is a 2000-draw mean: 4 Monte Carlo standard errors (from the same
    # draws) plus the 0.01 of the local optimum.
    log_w = log_importance_weights(oracle.model, guide, x, num_samples=2000, seed=0)
    stderr = log_w.std(0) / 2000**0.5
    assert bool(((report.amortization_gap - kl).abs() < 4 * stderr + 0.01).all())
    # The local guide's q_n is the posterior itself.
    local = report.local_guide
    for n in range(N):
        q = local.posterior(n)
        torch.testing.assert_close(q.mean.detach(), oracle.posterior_mean(x)[n], atol=0.02, rtol=0)
        torch.testing.assert_close(
            q.covariance_matrix.detach(), oracle.posterior_cov(), atol=5e-3, rtol=0.1
        )


def test_poor_encoder_has_an_amortization_gap_and_the_diagonal_its_closed_form(float64):
    """An untrained linear encoder is a deliberately poor amortized guide. Its own family (the
    diagonal Normal) is kept, so the approximation gap is that of mean field, known in closed
    form, and the amortization gap is what the encoder loses on top, large and positive."""
    oracle, x = oracle_setup()
    guide = DiagonalNormalGuide(MLPEncoder((5,), 2, hidden=()))
    report = gap_decomposition(oracle.model, guide, x, steps=600, lr=0.05, num_samples=2000)
    check_adds_up(report)
    assert report.family == "normal"
    assert bool((report.amortization_gap > 1.0).all())
    # 0.01 nats of SGD noise at the optimum plus the importance estimate's own error
    expected = mean_field_gap(oracle)
    tolerance = 0.01 + 4 * report.log_likelihood_stderr
    assert bool(((report.approximation_gap - expected).abs() < tolerance).all())
    torch.testing.assert_close(report.log_likelihood, oracle.log_marginal(x), rtol=0, atol=0.05)
    summary = json.loads(json.dumps(report.summary()))
    assert summary["num_data"] == N and summary["steps"] == 600 and summary["family"] == "normal"
    assert summary["amortization_gap"] == pytest.approx(float(report.amortization_gap.mean()))
    assert len(summary["per_datapoint"]["total_gap"]) == N
    assert summary["step_elbo_last"] > summary["step_elbo_first"]


def test_without_steps_the_local_guide_is_the_amortized_one():
    """The warm start copies the encoder's output exactly, and the estimates share their
    seeds, so with no optimisation both ELBOs come from the same draws."""
    oracle, x = oracle_setup()
    guide = DiagonalNormalGuide(MLPEncoder((5,), 2, hidden=()))
    report = gap_decomposition(oracle.model, guide, x, steps=0, num_samples=200)
    assert float(report.amortization_gap.abs().max()) < 1e-4


def test_flow_family_warm_start_is_exact_and_its_log_density_too():
    """A planar-flow amortized guide: the local guide starts with each datapoint's own copy of
    the family weights, so q_n equals the amortized q(z | x_n); after optimisation its
    importance estimate is unbiased, which needs the exact log density."""
    oracle, x = oracle_setup()
    guide = make_guide("planar", MLPEncoder((5,), 2, hidden=(8,)), num_flows=2)
    local = LocalGuide.from_guide(guide, x)
    assert local.family_name == "planar" and local.feature_dim == 8
    amortized = guide.posterior(x)
    z = amortized.sample((50,)).detach()  # (50, N, 2)
    for n in range(N):
        torch.testing.assert_close(
            local.posterior(n).log_prob(z[:, n]), amortized.log_prob(z)[:, n], atol=1e-4, rtol=0
        )
    # the stacked weights are per datapoint: moving one leaves the others unchanged
    with torch.no_grad():
        local.local_family_0[0].add_(1.0)
    torch.testing.assert_close(local.posterior(1).log_prob(z[:, 1]), amortized.log_prob(z)[:, 1])

    report = gap_decomposition(oracle.model, guide, x, steps=300, num_samples=2000)
    check_adds_up(report)
    assert report.family == "planar"
    assert bool((report.amortization_gap > 0).all())
    exact = oracle.log_marginal(x)
    assert bool(
        ((report.log_likelihood - exact).abs() < 5 * report.log_likelihood_stderr + 0.02).all()
    )


def test_shared_noise_draws_keep_each_datapoints_exact_density():
    oracle, x = oracle_setup()
    local = LocalGuide.from_model(oracle.model, x, family="planar")
    with torch.no_grad():
        for p in local.parameters():
            p.add_(0.3 * torch.randn_like(p))
    rows = torch.arange(N)
    with torch.no_grad(), local.sharing_noise():
        z, log_q = local.sample_joint(rows, (7,))
    assert z.shape == (7, N, 2) and log_q.shape == (7, N)
    for n in range(N):  # a fresh distribution scores by inverting the flow, no cache
        torch.testing.assert_close(
            log_q[:, n], local.posterior(n).log_prob(z[:, n]), atol=1e-4, rtol=0
        )


def test_model_parameters_and_param_store_are_left_as_found():
    spec = ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,))
    model, guide = build_vae(spec)
    x = torch.randint(0, 2, (4, 6)).float()
    sentinel = pyro.param("sentinel", torch.ones(3))
    poutine.trace(model).get_trace(x)  # the model's parameters are in the store, as after fit
    frozen = next(model.decoder.parameters())
    frozen.requires_grad_(False)  # a flag set by the caller is restored too
    store = pyro.get_param_store()
    before = {name: (store._params[name], store._params[name].detach().clone()) for name in store}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}

    report = gap_decomposition(model, guide, x, steps=20, num_samples=20)

    check_adds_up(report)
    assert set(store.keys()) == set(before) and "sentinel" in store
    for name, (tensor, value) in before.items():
        assert store._params[name] is tensor and torch.equal(tensor.detach(), value), name
    assert pyro.param("sentinel") is sentinel
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name
    assert {name: p.requires_grad for name, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_two_latent_sites_of_the_hierarchical_model():
    d, d1, d2 = 6, 2, 3
    likelihood = LIKELIHOODS["bernoulli"]((d,))
    decoder = MLPDecoder(d1 + d2, likelihood.num_params, hidden=(8,))
    model = HierarchicalVAE.with_mlp_conditional(
        StandardNormalPrior(d2), decoder, likelihood, latent_dim=d1, top_latent_dim=d2, hidden=(8,)
    )
    guide = HierarchicalGuide.build(MLPEncoder((d,), d2, hidden=(8,)), d1, hidden=(8,))
    x = torch.randint(0, 2, (5, d)).float()

    local = LocalGuide.from_guide(guide, x, family="fullrank_normal")
    assert dict(local.sites) == {"z2": (d2,), "z1": (d1,)} and local.joint_dim == d1 + d2
    with pyro.plate("particles", 4, dim=-2):
        trace = poutine.trace(local).get_trace(x)
    trace.compute_log_prob()
    z2, z1 = trace.nodes["z2"]["value"], trace.nodes["z1"]["value"]
    assert z2.shape == (4, 5, d2) and z1.shape == (4, 5, d1)
    joint = torch.cat([z2, z1], dim=-1)
    expected = torch.stack([local.posterior(n).log_prob(joint[:, n]) for n in range(5)], -1)
    torch.testing.assert_close(trace.nodes["z2"]["log_prob"], expected)  # whole joint log q
    assert bool((trace.nodes["z1"]["log_prob"] == 0).all())

    report = gap_decomposition(model, guide, x, steps=200, num_samples=2000)
    check_adds_up(report)
    assert report.family == "normal" and report.local_guide.sites.keys() == {"z2", "z1"}
    assert report.step_elbo[-1] > report.step_elbo[0]
    # Both proposals estimate the same log p(x), which needs the exact joint log q: compare
    # with the amortized guide's estimate at K = 20000 (another seed), within 4 combined
    # standard errors plus 0.02 for the low bias of importance sampling, Var(w) / (2 K w^2).
    reference = log_likelihood(model, guide, x, num_samples=20000, seed=1)
    tolerance = 4 * torch.hypot(reference.stderr, report.log_likelihood_stderr) + 0.02
    assert bool(((report.log_likelihood - reference.log_likelihood).abs() < tolerance).all())


def test_batches_it_was_not_built_for_are_refused():
    oracle, x = oracle_setup()
    local = LocalGuide.from_model(oracle.model, x)
    with torch.no_grad():
        local.local_loc.copy_(torch.arange(N, dtype=x.dtype)[:, None].expand(N, 2) * 100)
    with pytest.raises(ValueError, match=rf"{N} particular datapoints.*batch of {N + 1}"):
        local(torch.cat([x, x[:1] + 1.0]))
    with pytest.raises(ValueError, match="batch of 6 whose row 0"):
        local(x + 1.0)
    with pytest.raises(ValueError, match=r"datapoints of shape \(5,\)"):
        local(x[:, :4])
    values = local(x[2:3])  # rows of the datapoints, as the estimators pass them, are fine
    assert values["z"].shape == (1, 2) and float(values["z"].detach().mean()) > 150


def test_invalid_options_are_refused():
    oracle, x = oracle_setup()
    guide = oracle.gaussian_guide()
    with pytest.raises(ConfigError, match="family_options"):
        gap_decomposition(oracle.model, guide, x, family_options={"num_flows": 2})
    with pytest.raises(ConfigError, match="steps"):
        gap_decomposition(oracle.model, guide, x, steps=-1)
    with pytest.raises(ConfigError, match="num_samples"):
        gap_decomposition(oracle.model, guide, x, num_samples=1)
