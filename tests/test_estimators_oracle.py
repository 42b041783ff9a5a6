"""Estimators against the closed-form linear-Gaussian oracle (tests/oracle.py)."""

from __future__ import annotations

import pytest
import torch

from ppl_vae.estimators import elbo, log_likelihood, summarize_log_weights
from ppl_vae.importance import log_importance_weights, plan_chunks
from tests.oracle import LinearGaussian

pytestmark = pytest.mark.usefixtures("float64")


@pytest.fixture
def oracle() -> LinearGaussian:
    return LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5)


@pytest.fixture
def data(oracle: LinearGaussian) -> torch.Tensor:
    return oracle.sample(40)


@pytest.mark.parametrize("num_samples", [1, 1000])
def test_exact_posterior_guide_gives_exact_log_likelihood(oracle, data, num_samples):
    # With q = p(z|x) every weight equals p(x) exactly, so the estimate is exact for any K.
    guide = oracle.gaussian_guide()
    estimate = log_likelihood(oracle.model, guide, data, num_samples=num_samples, seed=3)
    truth = oracle.log_marginal(data)
    torch.testing.assert_close(estimate.log_likelihood, truth, rtol=1e-6, atol=0)
    torch.testing.assert_close(estimate.elbo, truth, rtol=1e-6, atol=0)
    torch.testing.assert_close(elbo(oracle.model, guide, data, seed=4), truth, rtol=1e-6, atol=0)
    assert estimate.gap.abs().max() < 1e-8
    if num_samples > 1:  # constant weights: no Monte Carlo error, full effective sample size
        assert estimate.stderr.max() < 1e-6
        torch.testing.assert_close(estimate.ess, torch.full_like(estimate.ess, num_samples))


def test_mismatched_guide_bounds_tighten_with_k(oracle, data):
    guide = oracle.gaussian_guide(mean_shift=0.3, cov_scale=2.0)
    truth = oracle.log_marginal(data).mean()
    mean_elbo = elbo(oracle.model, guide, data, num_samples=1000, seed=0).mean()
    is10 = log_likelihood(oracle.model, guide, data, num_samples=10, seed=0)
    is1000 = log_likelihood(oracle.model, guide, data, num_samples=1000, seed=0)
    assert mean_elbo < is10.log_likelihood.mean() < is1000.log_likelihood.mean()
    assert abs(is1000.log_likelihood.mean() - truth) < 3 * is1000.mean_stderr
    # ... and that check is informative: 3 standard errors are small next to the ELBO's gap.
    assert 3 * is1000.mean_stderr < 0.05 * (truth - mean_elbo)


def test_per_datapoint_elbo_matches_closed_form(oracle, data):
    # ELBO(x) = log p(x) - KL(q(z|x) || p(z|x)); the Monte Carlo estimate with K draws has
    # standard error sd(log w)/sqrt(K), computed from the same draws.
    shift, scale = 0.3, 2.0
    guide = oracle.gaussian_guide(mean_shift=shift, cov_scale=scale)
    num_samples = 4000
    log_w = log_importance_weights(oracle.model, guide, data, num_samples=num_samples, seed=5)
    estimate = log_w.mean(0)
    stderr = log_w.std(0) / num_samples**0.5
    kl = oracle.kl_to_posterior(data, shift, scale)
    closed_form = oracle.log_marginal(data) - kl
    z_scores = (estimate - closed_form) / stderr
    assert z_scores.abs().max() < 4.5  # 40 datapoints: P(any |z| > 4.5) < 3e-4
    assert stderr.max() < 0.05 * kl.min()  # would tell the ELBO from log p(x)


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 10_000])
def test_chunking_does_not_change_estimates(oracle, data, chunk_size):
    guide = oracle.gaussian_guide(mean_shift=0.5, cov_scale=0.5)
    reference = log_importance_weights(oracle.model, guide, data, num_samples=50, seed=11)
    chunked = log_importance_weights(
        oracle.model, guide, data, num_samples=50, seed=11, chunk_size=chunk_size
    )
    torch.testing.assert_close(chunked, reference, rtol=1e-12, atol=1e-12)
    a = log_likelihood(oracle.model, guide, data, num_samples=50, seed=11)
    b = log_likelihood(oracle.model, guide, data, num_samples=50, seed=11, chunk_size=chunk_size)
    torch.testing.assert_close(a.log_likelihood, b.log_likelihood, rtol=1e-12, atol=1e-12)


def test_weights_shape_seed_and_rng_hygiene(oracle, data):
    guide = oracle.gaussian_guide(mean_shift=0.5)
    log_w = log_importance_weights(oracle.model, guide, data, num_samples=7, seed=1)
    assert log_w.shape == (7, data.shape[0])
    again = log_importance_weights(oracle.model, guide, data, num_samples=7, seed=1)
    other = log_importance_weights(oracle.model, guide, data, num_samples=7, seed=2)
    assert torch.equal(log_w, again)
    assert not torch.allclose(log_w, other)
    # Without a seed, torch's global generator decides, so torch.manual_seed reproduces.
    torch.manual_seed(123)
    first = log_importance_weights(oracle.model, guide, data, num_samples=3)
    torch.manual_seed(123)
    assert torch.equal(first, log_importance_weights(oracle.model, guide, data, num_samples=3))


def test_summaries_of_known_weights():
    # Two datapoints: equal weights, and one dominant weight among K = 4.
    log_w = torch.log(torch.tensor([[1.0, 1.0], [1.0, 1e-300], [1.0, 1e-300], [1.0, 1e-300]]))
    stats = summarize_log_weights(log_w)
    torch.testing.assert_close(stats["log_likelihood"][0], torch.tensor(0.0, dtype=torch.float64))
    torch.testing.assert_close(
        stats["log_likelihood"][1], torch.tensor(1 / 4, dtype=torch.float64).log()
    )
    torch.testing.assert_close(stats["ess"], torch.tensor([4.0, 1.0], dtype=torch.float64))
    # delta method: sd(w) / (sqrt(K) mean(w)) with w = (1, 0, 0, 0): sd = 0.5, mean = 0.25
    torch.testing.assert_close(stats["stderr"][1], torch.tensor(1.0, dtype=torch.float64))
    assert torch.isnan(summarize_log_weights(log_w[:1])["stderr"]).all()  # K = 1: unknown


@pytest.mark.parametrize(
    ("num_samples", "num_data", "chunk", "expected"),
    [(5000, 10_000, 2**15, (5000, 6)), (10, 100, 2**15, (10, 100)), (100, 3, 7, (7, 1))],
)
def test_plan_chunks(num_samples, num_data, chunk, expected):
    assert plan_chunks(num_samples, num_data, chunk) == expected
    particles, rows = expected
    assert particles * rows <= max(chunk, 1)
