"""PSIS diagnostics (ppl_vae/diagnostics/psis.py) against the linear-Gaussian oracle.

With latent_dim = 2, a guide N(posterior mean, c * posterior covariance) with c < 1 gives
weights w = p(z|x) p(x) / q(z|x) proportional to exp(a |u|^2), a = (1/c - 1) / 2, where u
are the whitened latents and |u|^2 / c ~ chi^2_2 is exponential under q. So
P(w > t) is proportional to t^(-1 / (1 - c)): the weights are exactly Pareto with shape
k = 1 - c, which the k-hat estimates can be checked against.
"""

from __future__ import annotations

import json
import math

import arviz as az
import numpy as np
import pytest
import torch

from ppl_vae.diagnostics.psis import (
    BAND_EXPLANATIONS,
    MIN_NUM_SAMPLES,
    PSISReport,
    khat_from_log_weights,
    psis_diagnostics,
    sample_size_threshold,
)
from ppl_vae.errors import DataError
from ppl_vae.estimators import log_likelihood
from ppl_vae.importance import log_importance_weights
from tests.oracle import LinearGaussian

NUM_DATA = 40


@pytest.fixture
def oracle() -> LinearGaussian:
    return LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5)


@pytest.fixture
def data(oracle: LinearGaussian) -> torch.Tensor:
    return oracle.sample(NUM_DATA)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_exact_posterior_guide_gives_constant_weights(dtype):
    torch.set_default_dtype(dtype)
    oracle = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5)
    data = oracle.sample(NUM_DATA)
    report = psis_diagnostics(oracle.model, oracle.gaussian_guide(), data, seed=3)
    # q = p(z|x): every weight equals p(x) up to rounding (spread ~3e-14 nats in float64,
    # ~3e-5 in float32). ArviZ would fit the rounding noise (arbitrary k, some inf, with
    # RuntimeWarnings); such constant weights are reported as k = -inf, the best case.
    assert torch.all(report.khat == -math.inf)
    assert report.bands() == {"good": NUM_DATA, "ok": 0, "bad": 0, "very bad": 0}
    assert report.reliable.all()
    truth = oracle.log_marginal(data).to(torch.float64)
    # float64: the estimates are log p(x) up to rounding (observed 1e-14 nats); float32:
    # log weights of magnitude ~10 carry rounding errors ~1e-5.
    atol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(report.log_likelihood, truth, rtol=0, atol=atol)
    torch.testing.assert_close(report.psis_log_likelihood, truth, rtol=0, atol=atol)
    torch.testing.assert_close(report.elbo, truth, rtol=0, atol=atol)
    torch.testing.assert_close(report.ess, torch.full_like(report.ess, 1000.0))


def test_arviz_returns_inf_for_exactly_constant_weights():
    # Pins the ArviZ behaviour that khat_from_log_weights works around: no draw exceeds the
    # tail cutoff, so no tail is fitted and k = inf ("very bad", the opposite of the truth).
    _, khat = az.psislw(np.zeros((2, 100)), reff=1.0)
    assert np.all(np.isinf(khat)) and np.all(khat > 0)
    smoothed, ours = khat_from_log_weights(torch.zeros(100, 2))
    assert torch.all(ours == -math.inf)
    assert torch.all(smoothed == 0)


@pytest.mark.usefixtures("float64")
def test_too_narrow_guide_gives_large_khat(oracle, data):
    # cov_scale = 0.05: the weights are Pareto with k = 0.95 (module docstring). k-hat is
    # shrunk toward 0.5 by ArviZ's prior, so per point it lies above 0.7 with probability
    # ~0.87 (77% to 93% of the 40 points over seeds 0-9); 70% is ~3 binomial sd below.
    report = psis_diagnostics(
        oracle.model, oracle.gaussian_guide(cov_scale=0.05), data, num_samples=1000, seed=0
    )
    assert (report.khat > 0.7).float().mean() >= 0.7
    bands = report.bands()
    assert bands["bad"] + bands["very bad"] >= 0.7 * NUM_DATA
    assert (~report.reliable).sum() >= 0.7 * NUM_DATA
    # What k-hat warns of: the IS estimate falls short of log p(x) by far more than its
    # (delta-method) standard error claims; 0.74 to 0.95 nats against 0.04 to 0.06 over
    # seeds 0-5, a ratio of 13 to 22.
    error = (report.log_likelihood - oracle.log_marginal(data)).mean()
    assert error < -5 * report.mean_stderr


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("cov_scale", [0.3, 0.5, 0.7])
def test_khat_estimates_the_pareto_shape(oracle, data, cov_scale):
    # True k = 1 - cov_scale. Over 40 points k-hat has sd ~0.15 (tail of 95 draws), so the
    # median has sd ~0.03; over seeds 0-9 it was within 0.06 of the truth: 0.1 is ~3 sd.
    report = psis_diagnostics(
        oracle.model, oracle.gaussian_guide(cov_scale=cov_scale), data, seed=1
    )
    assert abs(float(report.khat.median()) - (1 - cov_scale)) < 0.1


@pytest.mark.usefixtures("float64")
def test_khat_matches_arviz_on_the_same_weights(oracle, data):
    guide = oracle.gaussian_guide(mean_shift=0.3, cov_scale=0.4)
    log_w = log_importance_weights(oracle.model, guide, data, num_samples=500, seed=7)
    smoothed_az, khat_az = az.psislw(log_w.T.numpy(), reff=1.0, normalize=True)
    report = psis_diagnostics(oracle.model, guide, data, num_samples=500, seed=7)
    # Same seed, same weights, same ArviZ code: equal up to floating-point summation order.
    torch.testing.assert_close(report.khat, torch.from_numpy(khat_az), rtol=1e-10, atol=1e-10)
    smoothed, khat = khat_from_log_weights(log_w)
    torch.testing.assert_close(khat, torch.from_numpy(khat_az), rtol=0, atol=0)
    # Our smoothed weights are unnormalized; normalizing them gives ArviZ's.
    normalized = smoothed - torch.logsumexp(smoothed, dim=0)
    torch.testing.assert_close(normalized.T, torch.from_numpy(smoothed_az), rtol=0, atol=1e-12)
    # ... and draws outside the smoothed tail keep their raw log weight.
    assert (smoothed == log_w).float().mean() > 0.75
    # The IS statistics are those of log_likelihood with the same seed.
    estimate = log_likelihood(oracle.model, guide, data, num_samples=500, seed=7)
    for name in ("log_likelihood", "stderr", "ess", "elbo"):
        torch.testing.assert_close(getattr(report, name), getattr(estimate, name))


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("chunk_size", [7, 150, 10_000])
def test_chunk_size_does_not_change_the_report(oracle, data, chunk_size):
    guide = oracle.gaussian_guide(mean_shift=0.3, cov_scale=0.4)
    reference = psis_diagnostics(oracle.model, guide, data, num_samples=100, seed=11)
    chunked = psis_diagnostics(
        oracle.model, guide, data, num_samples=100, seed=11, chunk_size=chunk_size
    )
    # The weights agree to ~1e-15 (summation order), and the tail fit is smooth in them.
    for name in ("khat", "log_likelihood", "psis_log_likelihood", "ess", "stderr", "elbo"):
        torch.testing.assert_close(
            getattr(chunked, name), getattr(reference, name), rtol=1e-9, atol=1e-9
        )


@pytest.mark.usefixtures("float64")
def test_psis_estimate_is_accurate_where_khat_is_small(oracle, data):
    # cov_scale = 0.7: true k = 0.3, finite variance. Where k-hat < 0.5 the error of the
    # PSIS estimate is on the scale of the delta-method stderr (smoothing barely changes
    # light tails): max |z| over 40 points was 2.0 to 3.4 over seeds 0-9; 4.5 bounds a
    # normal maximum over 40 points with probability > 0.999. (With a badly wrong guide a
    # small k-hat can be luck, the tail not yet sampled: the test needs a decent guide.)
    report = psis_diagnostics(oracle.model, oracle.gaussian_guide(cov_scale=0.7), data, seed=2)
    small = report.khat < 0.5
    assert small.sum() >= 0.5 * NUM_DATA
    truth = oracle.log_marginal(data)
    z = (report.psis_log_likelihood - truth) / report.stderr
    assert z[small].abs().max() < 4.5
    assert sum(report.bands().values()) == NUM_DATA


@pytest.mark.usefixtures("float64")
def test_summary_is_json_ready(oracle, data):
    report = psis_diagnostics(
        oracle.model, oracle.gaussian_guide(cov_scale=0.2), data, num_samples=200, seed=4
    )
    summary = json.loads(json.dumps(report.summary(worst=5), allow_nan=False))
    assert sum(summary["bands"].values()) == NUM_DATA
    assert summary["thresholds"]["sample_size"] == pytest.approx(1 - 1 / math.log10(200))
    assert set(BAND_EXPLANATIONS) <= set(summary["explanations"])
    assert summary["khat_max"] == pytest.approx(float(report.khat.max()))
    worst = summary["worst"]
    assert len(worst) == 5 and worst[0]["khat"] == summary["khat_max"]
    assert [w["khat"] for w in worst] == sorted((w["khat"] for w in worst), reverse=True)
    indices, values = report.worst(5)
    assert [w["index"] for w in worst] == indices.tolist()
    torch.testing.assert_close(values, report.khat[indices])


def _report(khat: list[float], num_samples: int = 1000) -> PSISReport:
    k = torch.tensor(khat, dtype=torch.float64)
    zeros = torch.zeros_like(k)
    return PSISReport(k, zeros, zeros, zeros, zeros, zeros, num_samples=num_samples)


def test_bands_boundaries_and_non_finite_khat():
    report = _report([-math.inf, 0.2, 0.5, 0.69, 0.7, 0.99, 1.0, math.inf, math.nan])
    assert report.bands() == {"good": 2, "ok": 2, "bad": 2, "very bad": 3}
    indices, values = report.worst(3)
    assert indices.tolist() == [8, 7, 6]  # NaN (not estimable) ranks worst
    assert report.worst(100)[0].numel() == 9
    summary = report.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["worst"][0] == {"index": 8, "khat": None, "band": "very bad"}
    assert summary["num_above_sample_size_threshold"] == 6  # 0.69 >= 2/3, 0.7, ..., NaN


def test_sample_size_threshold():
    assert sample_size_threshold(100) == pytest.approx(0.5)
    assert sample_size_threshold(1000) == pytest.approx(2 / 3)
    assert sample_size_threshold(10**6) == 0.7
    assert sample_size_threshold(1) == -math.inf


def test_bad_inputs(oracle, data):
    bad = data.clone()
    bad[3, 1] = math.nan
    with pytest.raises(DataError):
        psis_diagnostics(oracle.model, oracle.gaussian_guide(), bad, num_samples=100, seed=0)
    with pytest.raises(ValueError, match="at least 21"):
        psis_diagnostics(
            oracle.model, oracle.gaussian_guide(), data, num_samples=MIN_NUM_SAMPLES - 1
        )
    with pytest.raises(ValueError, match="at least 21"):
        khat_from_log_weights(torch.randn(10, 3))
    with pytest.raises(ValueError, match="shape"):
        khat_from_log_weights(torch.randn(100))


def test_zero_weights_are_not_mistaken_for_constant_weights():
    # Draws of zero weight (log w = -inf) make the spread infinite, not zero: such a column
    # goes to ArviZ, whose k-hat we return unchanged; NaN weights give k = inf ("very bad").
    log_w = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    log_w[:50, 0] = -math.inf
    log_w[0, 1] = math.nan
    _, khat = khat_from_log_weights(log_w)
    _, khat_az = az.psislw(log_w[:, [0, 2]].T.numpy(), reff=1.0)
    torch.testing.assert_close(khat[[0, 2]], torch.from_numpy(khat_az), rtol=0, atol=0)
    assert _report(khat.tolist()).bands()["very bad"] >= 1 and khat[1] == math.inf
