"""The true posterior by NUTS, compared with the guide (ppl_vae.diagnostics.mcmc and
ppl_vae.diagnostics.discrepancy).

Statistical checks run on the linear-Gaussian oracle, whose posterior is known exactly; every
tolerance is a multiple of a Monte Carlo standard error (MCSE) that the test computes or
states, so a failure means a real discrepancy rather than noise. Seeds are fixed, so the
outcomes are deterministic.
"""

from __future__ import annotations

import json
import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.diagnostics.discrepancy import (
    median_bandwidth,
    mmd_squared,
    moment_comparison,
    sliced_wasserstein,
    wasserstein_1d_squared,
)
from ppl_vae.diagnostics.mcmc import PosteriorComparison, compare_guide, posterior_mcmc
from ppl_vae.errors import ContractError
from tests.oracle import LinearGaussian

# --------------------------------------------------------------------------- pure functions


def test_mmd_of_identical_distributions_is_near_zero():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((500, 2)), rng.standard_normal((500, 2))
    # Over 100 seeds this statistic had mean -2e-4 and sd 9e-4 (n = 500, median bandwidth):
    # 0.005 is more than 5 null sds.
    assert abs(mmd_squared(a, b)) < 0.005


def test_mmd_matches_closed_form_for_shifted_gaussians():
    # P = N(0, I_d), Q = N(delta, I_d), kernel exp(-|u - v|^2 / 2h^2):
    # MMD^2 = 2 c (1 - exp(-|delta|^2 / 2(h^2 + 2))), c = (h^2 / (h^2 + 2))^(d/2).
    d, h, n = 2, 1.0, 1000
    delta = np.array([1.0, 0.0])
    c = (h**2 / (h**2 + 2.0)) ** (d / 2)
    exact = 2 * c * (1 - math.exp(-(delta @ delta) / (2 * (h**2 + 2.0))))
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((n, d)), rng.standard_normal((n, d)) + delta
    estimate = mmd_squared(a, b, bandwidth=h)
    # The estimator's sd at this size, measured over 100 seeds, is 0.007: 4 sds.
    assert estimate == pytest.approx(exact, abs=0.028)
    assert estimate > 0.05  # and the shift is detected: exact value 0.102


def test_median_bandwidth_scales_with_the_data():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((50, 3)), rng.standard_normal((40, 3))
    assert median_bandwidth(3 * a, 3 * b) == pytest.approx(3 * median_bandwidth(a, b))
    # the kernel statistic is then scale-free
    assert mmd_squared(3 * a, 3 * b) == pytest.approx(mmd_squared(a, b))


def test_sliced_wasserstein_of_a_shift_matches_closed_form():
    # b = a + delta: every projection is the same shift, W2(theta.a, theta.b) = |theta.delta|,
    # and E_theta (theta.delta)^2 = |delta|^2 / d on the unit sphere, so SW2 = |delta|/sqrt(d).
    d, num_projections = 3, 2000
    rng = np.random.default_rng(3)
    a = rng.standard_normal((300, d))
    delta = np.array([1.0, -2.0, 0.5])
    estimate = sliced_wasserstein(a, a + delta, num_projections=num_projections, seed=4)
    exact = np.linalg.norm(delta) / math.sqrt(d)
    # Only the directions are random: with u = theta_1, Var (theta.delta)^2 =
    # |delta|^4 (E u^4 - (E u^2)^2) = |delta|^4 (3/(d(d+2)) - 1/d^2); the sd of SW2 follows
    # by the delta method, sd(SW2^2) / (2 SW2).
    sd_sq = np.sum(delta**2) ** 2 * (3 / (d * (d + 2)) - 1 / d**2)
    sd = math.sqrt(sd_sq / num_projections) / (2 * exact)
    assert abs(estimate - exact) < 4 * sd


def test_sliced_wasserstein_between_independent_samples():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2000, 2))
    b = rng.standard_normal((2000, 2)) + np.array([1.0, 1.0])
    # closed form |delta| / sqrt(d) = 1; with independent samples the empirical W2 adds a
    # small positive bias (about 0.015 here, over 100 seeds sd 0.03 with 128 directions).
    assert sliced_wasserstein(a, b, seed=0) == pytest.approx(1.0, abs=0.12)
    assert sliced_wasserstein(a, b, seed=0) == sliced_wasserstein(a, b, seed=0)
    assert sliced_wasserstein(a, a, seed=0) == 0.0


def test_wasserstein_1d_with_unequal_sizes_is_exact():
    # quantile functions: a = {0, 1} and b = {0, .5, 1} differ by 1/2 on (1/3, 2/3]
    assert wasserstein_1d_squared([0.0, 1.0], [0.0, 0.5, 1.0]) == pytest.approx([1 / 12])
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((7, 2)), rng.standard_normal((5, 2))
    # the empirical distribution of b repeated is that of b
    doubled = np.concatenate([b, b])
    np.testing.assert_allclose(wasserstein_1d_squared(a, doubled), wasserstein_1d_squared(a, b))
    # one dimension: the single direction is exact
    assert sliced_wasserstein(a[:, :1], b[:, :1]) == pytest.approx(
        math.sqrt(wasserstein_1d_squared(a[:, 0], b[:, 0])[0])
    )


def test_moment_comparison_by_hand():
    reference = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 4.0]])  # sds 2 and sqrt(3)
    draws = np.array([[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]])  # means +2 and +1, sds 2 and 2
    result = moment_comparison(draws, reference)
    np.testing.assert_allclose(result["reference_mean"], [2.0, 2.0])
    np.testing.assert_allclose(result["mean_diff"], [1.0, 1.0 / math.sqrt(3.0)])
    np.testing.assert_allclose(result["sd_diff"], [0.0, 2.0 / math.sqrt(3.0) - 1.0])


def test_discrepancy_inputs_are_checked():
    with pytest.raises(ValueError, match="same dimension"):
        mmd_squared(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        sliced_wasserstein([[0.0], [math.nan]], [[0.0]])
    with pytest.raises(ValueError, match="at least 2"):
        mmd_squared(np.zeros((1, 2)), np.zeros((3, 2)))


# --------------------------------------------------------------------------- the oracle

NUM_CHAINS, NUM_SAMPLES, WARMUP = 4, 400, 150


@pytest.fixture(scope="module")
def oracle_run() -> tuple[LinearGaussian, torch.Tensor, PosteriorComparison]:
    """NUTS on two datapoints of the 2-D linear-Gaussian oracle, chains started from a guide
    shifted by +1 (4 to 6 posterior sds), so R-hat checks that warmup forgets the start."""
    dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        oracle = LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5, seed=0)
        x = oracle.sample(2, seed=1)
        comparison = posterior_mcmc(
            oracle.model,
            oracle.gaussian_guide(mean_shift=1.0),
            x,
            num_chains=NUM_CHAINS,
            num_samples=NUM_SAMPLES,
            warmup_steps=WARMUP,
            seed=0,
        )
    finally:
        torch.set_default_dtype(dtype)
    return oracle, x, comparison


def test_nuts_matches_the_exact_posterior(oracle_run):
    oracle, x, comparison = oracle_run
    table = comparison.mcmc_summary
    exact_mean = oracle.posterior_mean(x).numpy()
    exact_cov = oracle.posterior_cov().numpy()
    assert float(table["r_hat"].max()) < 1.01
    assert int(comparison.mcmc.sample_stats["diverging"].sum()) == 0
    draws = comparison.mcmc.posterior["z"].values  # (chain, draw, obs, latent)
    for i in range(x.shape[0]):
        for j in range(2):
            row = table.loc[f"z[{i}, {j}]"]
            # 4 MCSEs (ArviZ's, from the bulk ESS): a 6e-5 two-sided chance per coordinate
            assert abs(row["mean"] - exact_mean[i, j]) < 4 * row["mcse_mean"]
        centred = draws[:, :, i] - draws[:, :, i].mean(axis=(0, 1))
        for j in range(2):
            for k in range(2):
                # The covariance estimate is the mean of the per-draw products
                # (z_j - m_j)(z_k - m_k); its MCSE is ArviZ's MCSE of that mean.
                products = centred[..., j] * centred[..., k]
                mcse = float(az.mcse(products))
                assert abs(products.mean() - exact_cov[j, k]) < 4 * mcse


def test_sampler_statistics(oracle_run):
    _, _, comparison = oracle_run
    stats = comparison.mcmc.sample_stats
    assert set(stats.data_vars) >= {"diverging", "step_size", "tree_depth", "n_steps", "lp"}
    assert stats["diverging"].dtype == bool
    assert bool((stats["n_steps"] >= 1).all())
    # the depth is the number of doublings: 2^(depth - 1) <= n_steps <= 2^depth - 1
    depth, steps = stats["tree_depth"].values, stats["n_steps"].values
    assert np.all((2.0 ** (depth - 1) <= steps) & (steps <= 2.0**depth - 1))
    # step size adapted during warmup, then fixed within each chain
    step = stats["step_size"].values
    assert np.all(step == step[:, :1])
    # dual averaging aims the mean acceptance statistic at 0.8
    assert 0.6 < float(stats["acceptance_rate"].mean()) <= 1.0


def test_exact_guide_shows_no_discrepancy(oracle_run):
    oracle, _, comparison = oracle_run
    exact = compare_guide(comparison, oracle.gaussian_guide(), seed=1)
    disc = exact.discrepancy
    ess = comparison.mcmc_summary["ess_bulk"].values.reshape(2, 2)
    guide_draws = exact.guide.posterior.sizes["draw"]
    # guide mean - MCMC mean, in sds: sd sqrt(1/ESS + 1/G) with G independent guide draws
    assert np.all(np.abs(disc["mean_diff"].values) < 4 * np.sqrt(1 / ess + 1 / guide_draws))
    # relative sd error of a Gaussian sample with n draws is about 1/sqrt(2n)
    assert np.all(np.abs(disc["sd_diff"].values) < 4 * np.sqrt(1 / (2 * ess) + 1 / guide_draws))
    # null sd of the unbiased MMD^2 is O(1/n) (about 1e-3 here): 0.01 is ~10 null sds, while
    # the shifted guide below gives about 1
    assert np.all(np.abs(disc["mmd2"].values) < 0.01)
    assert np.all(disc["sliced_w2"].values < 0.1)


def test_shifted_guide_shows_a_large_discrepancy(oracle_run):
    oracle, _, comparison = oracle_run
    disc = comparison.discrepancy  # the run's guide is shifted by +1 in each coordinate
    exact_sd = np.sqrt(np.diag(oracle.posterior_cov().numpy()))
    # a shift of 1 is 1/sd posterior sds; the MCMC sd is within a few % of the exact one
    np.testing.assert_allclose(disc["mean_diff"].values, np.tile(1 / exact_sd, (2, 1)), rtol=0.1)
    assert np.all(np.abs(disc["sd_diff"].values) < 0.2)  # the shape is right, only shifted
    assert np.all(disc["mmd2"].values > 0.5)
    # SW2 of a pure shift delta = (1, 1) in 2-D is |delta| / sqrt(2) = 1
    np.testing.assert_allclose(disc["sliced_w2"].values, 1.0, atol=0.15)


def test_inference_data_layout_and_netcdf_round_trip(oracle_run, tmp_path):
    _, x, comparison = oracle_run
    mcmc, guide = comparison.mcmc, comparison.guide
    assert set(mcmc.groups()) == {"posterior", "sample_stats", "observed_data"}
    assert mcmc.posterior["z"].dims == ("chain", "draw", "obs", "latent")
    assert dict(mcmc.posterior["z"].sizes) == {
        "chain": NUM_CHAINS,
        "draw": NUM_SAMPLES,
        "obs": 2,
        "latent": 2,
    }
    assert list(mcmc.posterior["obs"].values) == [0, 1]
    assert mcmc.sample_stats["diverging"].dims == ("chain", "draw", "obs")
    assert mcmc.posterior.attrs["sampler"] == "NUTS"
    assert mcmc.posterior.attrs["num_warmup"] == WARMUP
    np.testing.assert_array_equal(mcmc.observed_data["x"].values, x.numpy())
    # the guide's draws in the same layout, one chain, as many draws as MCMC keeps
    assert guide.posterior["z"].dims == mcmc.posterior["z"].dims
    assert dict(guide.posterior["z"].sizes) == {
        "chain": 1,
        "draw": NUM_CHAINS * NUM_SAMPLES,
        "obs": 2,
        "latent": 2,
    }
    assert comparison.latent_columns == {"z": (0, 2)}
    assert comparison.discrepancy["mean_diff"].dims == ("obs", "latent")
    assert list(comparison.discrepancy["site"].values) == ["z", "z"]
    for name, idata in [("mcmc", mcmc), ("guide", guide)]:
        path = tmp_path / f"{name}.nc"
        az.to_netcdf(idata, path)
        back = az.from_netcdf(path)
        assert set(back.groups()) == set(idata.groups())
        for group in idata.groups():
            for var in idata[group].data_vars:
                np.testing.assert_array_equal(back[group][var].values, idata[group][var].values)
                assert back[group][var].dims == idata[group][var].dims
    comparison.discrepancy.to_netcdf(tmp_path / "discrepancy.nc")


def test_summary_is_json_ready(oracle_run):
    _, _, comparison = oracle_run
    summary = json.loads(json.dumps(comparison.summary()))
    assert summary["num_data"] == 2 and summary["num_chains"] == NUM_CHAINS
    assert summary["warmup_steps"] == WARMUP
    assert summary["max_r_hat"] == pytest.approx(float(comparison.mcmc_summary["r_hat"].max()))
    assert summary["min_ess_bulk"] == pytest.approx(
        float(comparison.mcmc_summary["ess_bulk"].min())
    )
    assert summary["divergences"] == 0
    assert [point["obs"] for point in summary["datapoints"]] == [0, 1]
    assert summary["mmd2_max"] == pytest.approx(float(comparison.discrepancy["mmd2"].max()))
    assert summary["seconds_per_datapoint"] > 0


# --------------------------------------------------------------------------- cheap runs


def test_runs_are_reproducible_and_rows_independent(float64):
    oracle = LinearGaussian.random(seed=3)
    x = oracle.sample(2, seed=4)
    options = {"num_chains": 2, "num_samples": 15, "warmup_steps": 10, "seed": 7}
    first = posterior_mcmc(oracle.model, oracle.gaussian_guide(), x, **options)
    again = posterior_mcmc(oracle.model, oracle.gaussian_guide(), x, **options)
    np.testing.assert_array_equal(
        first.mcmc.posterior["z"].values, again.mcmc.posterior["z"].values
    )
    np.testing.assert_array_equal(
        first.guide.posterior["z"].values, again.guide.posterior["z"].values
    )
    # row 0 is seeded by its position only: the same draws without row 1
    alone = posterior_mcmc(oracle.model, oracle.gaussian_guide(), x[:1], **options)
    np.testing.assert_array_equal(
        alone.mcmc.posterior["z"].values[:, :, 0], first.mcmc.posterior["z"].values[:, :, 0]
    )
    # chains start from different guide draws
    starts = first.mcmc.posterior["z"].values[:, 0, 0]
    assert not np.allclose(starts[0], starts[1])


def _hierarchical():
    spec = ModelSpec(
        data_shape=(6,), architecture="hierarchical", latent_dim=2, top_latent_dim=2, hidden=(8,)
    )
    return build_vae(spec)


# 20 draws per chain are too few for ArviZ's R-hat on some coordinates (zero within-chain
# variance warnings); this test checks layout and side effects, not convergence.
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_two_latent_sites_and_parameters_left_alone():
    torch.manual_seed(0)
    model, guide = _hierarchical()
    x = (torch.rand(2, 6) < 0.5).float()
    params = dict(model.named_parameters()) | {f"g.{k}": v for k, v in guide.named_parameters()}
    values = {name: p.detach().clone() for name, p in params.items()}
    frozen_name = next(iter(params))
    params[frozen_name].requires_grad_(False)  # a user-frozen tensor stays frozen
    flags = {name: p.requires_grad for name, p in params.items()}
    guide.eval()  # modes are restored too
    unrelated = pyro.param("unrelated", torch.ones(3))
    store_before = dict(pyro.get_param_store().named_parameters())

    options = {"num_chains": 2, "num_samples": 20, "warmup_steps": 20, "seed": 0}
    comparison = posterior_mcmc(model, guide, x, **options)

    posterior = comparison.mcmc.posterior
    assert set(posterior.data_vars) == {"z1", "z2"}
    assert posterior["z2"].dims == ("chain", "draw", "obs", "latent_z2")
    assert posterior["z1"].dims == ("chain", "draw", "obs", "latent_z1")
    assert comparison.guide.posterior["z1"].dims == posterior["z1"].dims
    assert comparison.latent_columns == {"z2": (0, 2), "z1": (2, 4)}
    assert list(comparison.discrepancy["site"].values) == ["z2", "z2", "z1", "z1"]
    assert comparison.discrepancy["mean_diff"].shape == (2, 4)
    assert np.all(np.isfinite(comparison.discrepancy["mmd2"].values))
    json.dumps(comparison.summary())

    for name, p in params.items():
        assert torch.equal(p.detach(), values[name]), name
        assert p.requires_grad == flags[name], name
        assert p.grad is None, name
    assert model.training and not guide.training
    store_after = dict(pyro.get_param_store().named_parameters())
    assert store_after.keys() == store_before.keys()
    assert all(store_after[k] is store_before[k] for k in store_before)
    assert torch.equal(unrelated, torch.ones(3))

    # A stale store entry under a module parameter's name neither changes the result (the
    # module is the source of truth) nor is dropped from the store.
    name = next(n for n, _ in model.named_parameters() if not n.endswith("_unconstrained"))
    stale = torch.zeros_like(dict(model.named_parameters())[name])
    pyro.get_param_store()[name] = stale
    alone = posterior_mcmc(model, guide, x[:1], **options)
    for site in ("z1", "z2"):
        np.testing.assert_array_equal(
            alone.mcmc.posterior[site].values[:, :, 0], posterior[site].values[:, :, 0]
        )
    assert pyro.get_param_store()._params[name] is stale


def test_conditional_program_takes_labels():
    torch.manual_seed(0)
    spec = ModelSpec(
        data_shape=(6,), architecture="conditional", num_classes=3, latent_dim=2, hidden=(8,)
    )
    model, guide = build_vae(spec)
    x = (torch.rand(1, 6) < 0.5).float()
    options = {"num_chains": 2, "num_samples": 10, "warmup_steps": 10}
    comparison = posterior_mcmc(model, guide, x, y=[2], **options)
    assert comparison.mcmc.constant_data["y"].values.tolist() == [2]
    assert comparison.mcmc.posterior["z"].shape == (2, 10, 1, 2)
    # compare_guide reads the labels back
    again = compare_guide(comparison, guide, guide_samples=50)
    assert again.guide.posterior["z"].shape == (1, 50, 1, 2)
    with pytest.raises(ContractError):
        posterior_mcmc(model, guide, x, **options)  # the label is needed


def test_discrete_latent_is_rejected():
    def model(x, mask=None):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x, mask=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("c", dist.Bernoulli(0.5))

    with pytest.raises(ContractError, match="discrete"):
        posterior_mcmc(model, guide, torch.zeros(1, 2), num_chains=1, num_samples=2)


def test_bad_options_are_rejected():
    oracle = LinearGaussian.random()
    x = oracle.sample(1)
    with pytest.raises(ValueError, match="num_chains"):
        posterior_mcmc(oracle.model, oracle.gaussian_guide(), x, num_chains=0)
    with pytest.raises(ValueError, match="target_accept_prob"):
        posterior_mcmc(oracle.model, oracle.gaussian_guide(), x, target_accept_prob=1.5)
