r"""Imputation by importance resampling (ppl_vae.imputation) against the linear-Gaussian
oracle's closed-form conditional :math:`x_m \mid x_o \sim \mathcal{N}(\mu_m + S_{mo}
S_{oo}^{-1}(x_o - \mu_o),\, S_{mm} - S_{mo} S_{oo}^{-1} S_{om})`, the hiding patterns, the
error table, and ``impute_run`` on a saved run."""

from __future__ import annotations

import json

import numpy as np
import pyro.distributions as dist
import pytest
import torch
from PIL import Image

from ppl_vae.errors import ConfigError, ContractError, DataError
from ppl_vae.estimators import log_likelihood
from ppl_vae.imputation import (
    hide,
    imputation_errors,
    impute,
    mean_imputation,
)
from ppl_vae.imputation_run import imputation_report, impute_run
from tests.oracle import LinearGaussian
from tests.test_missing_data import MaskedOracle, garbage_in_holes, random_mask


@pytest.fixture
def masked_oracle(float64) -> MaskedOracle:
    return MaskedOracle(LinearGaussian.random(data_dim=6, latent_dim=2, s=0.5, seed=3))


@pytest.fixture
def holes(masked_oracle: MaskedOracle):
    x = LinearGaussian(masked_oracle.W, masked_oracle.b, masked_oracle.s).sample(20, seed=4)
    return x, random_mask(*x.shape, seed=5)


@pytest.mark.parametrize("refine", [0, 2])
def test_conditional_mean_matches_the_closed_form(masked_oracle, holes, refine):
    # A proposal that is not the posterior (the library's mean-field guide, holes filled with
    # the data mean): the self-normalized estimate of E[x_m | x_o] is within 4.5 of its
    # delta-method standard errors (computed from the weights) of the closed form at every
    # missing coordinate: about 60 comparisons, P(any |Z| > 4.5) < 4e-4 for a normal
    # estimate; the O(1/K) bias of self-normalization is far below one standard error at
    # K = 4000. The tolerance is informative: even the widest band (4.5 standard errors) is
    # under half the mean distance between the closed form and the prior mean (what mean
    # imputation returns). Refining passes change the proposal, never the target.
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.encoder_guide()
    result = impute(model, guide, x, mask, num_samples=2, num_particles=4000, seed=0, refine=refine)
    truth, _ = masked_oracle.conditional(x, mask)
    missing = ~mask
    z = (result.mean - truth)[missing] / result.mean_stderr[missing]
    assert z.abs().max() < 4.5, z.abs().max()
    shift = (truth - masked_oracle.b)[missing].abs()
    assert 4.5 * result.mean_stderr[missing].max() < 0.5 * shift.mean()
    assert (result.ess > 100).all() and (result.ess <= 4000 + 1e-6).all()
    # Observed entries come back exactly as given, in the mean and in every imputation.
    assert torch.equal(result.mean[mask], x[mask])
    assert torch.equal(result.samples[:, mask], x[mask].expand(2, -1))
    assert (result.mean_stderr[mask] == 0).all()
    # x holds the truth in the holes: the conditional mean beats mean imputation there.
    errors = imputation_errors(
        x,
        mask,
        {"vae": result.mean, "mean": mean_imputation(x, mask, masked_oracle.b)},
    )
    assert errors["vae"]["rmse"] < errors["mean"]["rmse"]


def test_imputations_follow_the_conditional_distribution(masked_oracle, holes):
    # With the exact posterior p(z | x_o) as guide every weight is equal (ESS = K), and the
    # draws are x_m = W_m z_k + b_m + s * noise for resampled particles z_k: their mean and
    # covariance match the closed-form conditional within 4.5 standard errors. The standard
    # errors count both sources of noise, S draws and K particles (resampling with
    # replacement from K = S particles about doubles the variance of S independent draws):
    # var/S + var/K for a mean, 2 (c_ii c_jj + c_ij^2) / S for a covariance entry (Gaussian
    # draws).
    x, mask = holes
    rows = [n for n in range(x.shape[0]) if 2 <= int((~mask[n]).sum()) <= 4][:3]
    x, mask = x[rows], mask[rows]
    S, K = 4000, 4000
    model, guide = masked_oracle.vae(), masked_oracle.exact_guide()
    result = impute(model, guide, x, mask, num_samples=S, num_particles=K, seed=1)
    torch.testing.assert_close(result.ess, torch.full_like(result.ess, K))
    means, covs = masked_oracle.conditional(x, mask)
    for n in range(len(rows)):
        m = (~mask[n]).nonzero().flatten()
        draws = result.samples[:, n, m]
        cov = covs[n]
        stderr = (cov.diagonal() / S + cov.diagonal() / K).sqrt()
        assert ((draws.mean(0) - means[n, m]).abs() < 4.5 * stderr).all()
        variance = cov.diagonal()
        cov_stderr = (2 * (variance[:, None] * variance[None, :] + cov.square()) / S).sqrt()
        assert ((draws.T.cov() - cov).abs() < 4.5 * cov_stderr).all()
        assert torch.equal(result.samples[:, n, mask[n]], x[n, mask[n]].expand(S, -1))


def test_weights_are_the_estimators_and_nothing_depends_on_chunks(masked_oracle, holes):
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.encoder_guide()
    a = impute(model, guide, x, mask, num_samples=3, num_particles=50, seed=7)
    estimate = log_likelihood(model, guide, x, mask=mask, num_samples=50, seed=7)
    torch.testing.assert_close(a.log_likelihood, estimate.log_likelihood, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(a.ess, estimate.ess, rtol=1e-10, atol=1e-10)
    for chunk_size in (25, 120):
        b = impute(
            model, guide, x, mask, num_samples=3, num_particles=50, seed=7, chunk_size=chunk_size
        )
        torch.testing.assert_close(b.mean, a.mean, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b.log_likelihood, a.log_likelihood, rtol=1e-12, atol=1e-12)
    # The holes may hold anything, NaN included: they are never read.
    with_nan = torch.where(mask, x, torch.nan)
    c = impute(model, guide, with_nan, mask, num_samples=3, num_particles=50, seed=7)
    d = impute(
        model, guide, garbage_in_holes(x, mask), mask, num_samples=3, num_particles=50, seed=7
    )
    for other in (c, d):
        assert torch.equal(other.samples, a.samples) and torch.equal(other.mean, a.mean)
    e = impute(model, guide, x, mask, num_samples=3, num_particles=50, seed=8)
    assert not torch.equal(e.samples, a.samples)


def test_bad_masks_and_options_are_refused(masked_oracle, holes):
    x, mask = holes
    model, guide = masked_oracle.vae(), masked_oracle.exact_guide()
    with pytest.raises(DataError, match="must be boolean"):
        impute(model, guide, x, mask.double(), num_particles=5)
    with pytest.raises(DataError, match="data's shape"):
        impute(model, guide, x, mask[:, :3], num_particles=5)
    with pytest.raises(DataError, match="data's shape"):
        impute(model, guide, x, mask[:, 0], num_particles=5)
    empty = mask.clone()
    empty[3] = False
    with pytest.raises(DataError, match="every element missing .first row 3"):
        impute(model, guide, x, empty, num_particles=5)
    nan_observed = x.clone()
    nan_observed[0, mask[0].nonzero()[0]] = torch.nan
    with pytest.raises(DataError, match="NaN"):
        impute(model, guide, nan_observed, mask, num_particles=5)
    with pytest.raises(ConfigError, match="positive"):
        impute(model, guide, x, mask, num_particles=0)
    with pytest.raises(ConfigError, match="refine"):
        impute(model, guide, x, mask, num_particles=5, refine=-1)


def test_a_likelihood_that_does_not_factorize_is_refused(masked_oracle, holes):
    import pyro

    x, mask = holes

    def model(x, mask=None):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(6, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.MultivariateNormal(z, torch.eye(6, dtype=x.dtype)), obs=x)

    def guide(x, mask=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0).to_event(1))

    with pytest.raises(ContractError, match="does not factorize"):
        impute(model, guide, x, mask, num_particles=5)


@pytest.mark.parametrize("pattern", ["random", "bottom-half", "patch"])
def test_hiding_patterns(pattern):
    mask = hide((50, 64), pattern, fraction=0.5, image_shape=(1, 8, 8), seed=3)
    assert mask.dtype == torch.bool and mask.shape == (50, 64)
    assert mask.any(1).all() and (~mask).any(1).all()
    missing = (~mask).double().mean()
    assert 0.45 <= missing <= 0.6
    assert torch.equal(mask, hide((50, 64), pattern, image_shape=(1, 8, 8), seed=3))
    images = (~mask).reshape(50, 8, 8)
    if pattern == "bottom-half":
        assert images[:, 4:].all() and not images[:, :4].any()
    if pattern == "patch":  # one 6x6 square per image, at different places
        assert (images.sum((1, 2)) == 36).all()
        assert len({tuple(im.nonzero()[0].tolist()) for im in images}) > 5
    if pattern == "random":  # the same count in every datapoint, different positions
        assert ((~mask).sum(1) == 32).all()
        assert not torch.equal(mask[0], mask[1])
    # Data that are not images: one row of pixels.
    flat = hide((4, 10), pattern, fraction=0.3, seed=0)
    assert flat.any(1).all() and (~flat).any(1).all()


def test_bad_patterns_are_refused():
    with pytest.raises(ConfigError, match="unknown missing-data pattern 'left'"):
        hide((2, 64), "left")
    with pytest.raises(ConfigError, match="fraction"):
        hide((2, 64), "random", fraction=1.0)
    with pytest.raises(ConfigError, match="image_shape"):
        hide((2, 64), "patch", image_shape=(1, 7, 7))


def test_imputation_errors():
    truth = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    mask = torch.tensor([[True, False, False, True]])
    errors = imputation_errors(truth, mask, {"p": torch.tensor([[9.0, 0.25, 0.5, 9.0]])})
    entry = errors["p"]
    assert entry["mae"] == pytest.approx((0.25 + 0.5) / 2)
    assert entry["rmse"] == pytest.approx(((0.25**2 + 0.5**2) / 2) ** 0.5)
    assert entry["accuracy"] == pytest.approx(0.5)  # 0.25 -> 0 right, 0.5 -> 0 wrong
    expected = (torch.tensor(0.75).log() + torch.tensor(0.5).log()) / 2
    assert entry["bernoulli_log_lik"] == pytest.approx(float(expected))
    counts = imputation_errors(truth * 3, mask, {"p": truth})
    assert "accuracy" not in counts["p"]
    with pytest.raises(DataError, match="no element is held out"):
        imputation_errors(truth, torch.ones_like(mask), {"p": truth})


def test_impute_run_writes_errors_and_a_picture(digits_run, tmp_path):
    out = tmp_path / "imputed"
    summary = impute_run(
        digits_run,
        pattern="bottom-half",
        num_data=12,
        num_particles=20,
        num_samples=2,
        seed=1,
        out_dir=out,
        num_show=5,
    )
    assert summary == json.loads((out / "imputation.json").read_text())
    assert set(summary["errors"]) == {"vae_mean", "vae_sample", "mean_imputation"}
    assert summary["missing_fraction"] == pytest.approx(0.5)
    assert summary["num_data"] == 12 and summary["pattern"] == "bottom-half"
    assert 1 <= summary["ess_min"] <= summary["ess_median"] <= 20
    report = imputation_report(summary)
    assert "bottom-half holes, 50.0% missing" in report and "mean imputation" in report
    with Image.open(out / "imputation.png") as picture:
        assert picture.mode in ("RGB", "RGBA") and picture.size[0] > 100
        pixels = torch.from_numpy(np.array(picture.convert("RGB"))).reshape(-1, 3).int()
    assert ((pixels[:, 0] > 200) & (pixels[:, 1] < 50) & (pixels[:, 2] < 50)).any()  # red holes
    # The default output directory is inside the run; the mean fill is available too.
    summary = impute_run(
        digits_run, num_data=4, num_particles=5, num_samples=1, fill="mean", refine=0
    )
    assert (digits_run / "imputation" / "imputation.png").is_file()
    assert summary["fill"] == "mean" and summary["refine"] == 0
    with pytest.raises(ConfigError, match="unknown missing-data pattern"):
        impute_run(digits_run, pattern="diagonal", num_data=2, num_particles=2)
    with pytest.raises(ConfigError, match="unknown fill"):
        impute_run(digits_run, fill="median", num_data=2, num_particles=2)


@pytest.mark.parametrize("architecture", ["hierarchical", "conditional"])
def test_every_architecture_imputes(architecture):
    from ppl_vae import ModelSpec, build_vae, load_dataset

    digits = load_dataset("digits")
    spec = ModelSpec.for_dataset(digits, architecture=architecture, latent_dim=2, hidden=(8,))
    model, guide = build_vae(spec)
    x, y = digits.test[:6], digits.test_labels[:6]
    mask = hide(x.shape, "patch", image_shape=digits.image_shape, seed=0)
    labels = y if architecture == "conditional" else None
    result = impute(model, guide, x, mask, num_samples=2, num_particles=10, y=labels, seed=0)
    assert result.samples.shape == (2, 6, 64) and torch.equal(result.mean[mask], x[mask])
    # Draws of a Binomial(16) likelihood are counts in the holes.
    holes = result.samples[:, ~mask]
    assert torch.equal(holes, holes.round()) and holes.min() >= 0 and holes.max() <= 16
    estimate = log_likelihood(model, guide, x, mask=mask, y=labels, num_samples=10, seed=0)
    torch.testing.assert_close(result.log_likelihood, estimate.log_likelihood.float())


def test_readme_missing_data_example_runs():
    from tests.test_readme import _python_blocks

    (block,) = [b for b in _python_blocks() if "from ppl_vae.imputation import" in b]
    namespace: dict = {}
    quick = block.replace("epochs=150", "epochs=1").replace(
        "x = digits.test", "x = digits.test[:8]"
    )
    exec(quick.replace("num_samples=1000", "num_samples=5").replace("=1000", "=10"), namespace)
    result, x, mask = namespace["result"], namespace["x"], namespace["mask"]
    assert result.samples.shape == (3, 8, 64) and torch.equal(result.mean[mask], x[mask])
