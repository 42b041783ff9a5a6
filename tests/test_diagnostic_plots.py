"""Every diagnostic plot writes a PNG of the expected size, headless, and leaves no figure
open."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import arviz as az  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402

from ppl_vae.build import ModelSpec, build_vae  # noqa: E402
from ppl_vae.diagnostics import plots  # noqa: E402
from ppl_vae.diagnostics.latents import kl_per_dimension  # noqa: E402
from ppl_vae.diagnostics.predictive import posterior_predictive_check  # noqa: E402
from tests.oracle import LinearGaussian  # noqa: E402


@pytest.fixture(autouse=True)
def _no_figures_left():
    plt.close("all")
    yield
    assert plt.get_fignums() == [], "a plot function left a pyplot figure open"


def _check_png(path: Path, written: Path, figsize: tuple[float, float], dpi: float) -> None:
    assert written == path and path.is_file()
    image = plt.imread(path)  # decodes the PNG
    assert image.shape == (round(figsize[1] * dpi), round(figsize[0] * dpi), 4)
    assert image[..., :3].std() > 0.01  # something was drawn


def _posterior_idata(draws: np.ndarray) -> az.InferenceData:
    """``draws (chain, draw, obs, latent)`` as the posterior variable ``"z"``."""
    return az.from_dict(posterior={"z": draws}, dims={"z": ["obs", "z_dim"]})


@pytest.fixture
def hierarchical_pair():
    spec = ModelSpec(
        data_shape=(6,), architecture="hierarchical", latent_dim=2, top_latent_dim=2, hidden=(8,)
    )
    model, guide = build_vae(spec)
    x = (torch.rand(25, 6, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    return model, guide, x


@pytest.mark.parametrize(
    "khat",
    [
        np.array([0.1, 0.45, 0.6, 0.8, 1.3, -np.inf, np.nan]),
        torch.linspace(-0.2, 1.2, 30),
        SimpleNamespace(khat=torch.tensor([0.2, 0.9])),  # a PSIS report
    ],
)
def test_plot_khat(tmp_path, khat):
    path = tmp_path / "sub" / "khat.png"
    written = plots.plot_khat(khat, path, num_samples=100, figsize=(5.0, 3.0), dpi=80)
    _check_png(path, written, (5.0, 3.0), 80)


def test_plot_khat_rejects_bad_thresholds(tmp_path):
    with pytest.raises(ValueError, match="increasing"):
        plots.plot_khat([0.1], tmp_path / "k.png", thresholds=(0.7, 0.5, 1.0))


def test_plot_gap_decomposition(tmp_path):
    rng = np.random.default_rng(0)
    report = {
        "approximation_gap": rng.uniform(0, 2, 40).tolist(),
        "amortization_gap": rng.uniform(-0.1, 1, 40).tolist(),
        "other": 3,
    }
    path = tmp_path / "gaps.png"
    _check_png(path, plots.plot_gap_decomposition(report, path), plots.FIGSIZE, 100)
    as_object = SimpleNamespace(
        approximation_gap=torch.ones(3), amortization_gap=torch.full((3,), 0.5)
    )
    _check_png(path, plots.plot_gap_decomposition(as_object, str(path), dpi=50), plots.FIGSIZE, 50)
    with pytest.raises(ValueError, match="same length"):
        plots.plot_gap_decomposition(
            {"approximation_gap": [1, 2], "amortization_gap": [1]}, tmp_path / "x.png"
        )
    with pytest.raises(KeyError, match="amortization_gap"):
        plots.plot_gap_decomposition({"approximation_gap": [1]}, tmp_path / "x.png")


def test_plot_pair_comparison(tmp_path):
    rng = np.random.default_rng(1)
    mcmc = _posterior_idata(rng.normal(size=(2, 300, 4, 3)))
    guide = _posterior_idata(0.5 * rng.normal(size=(1, 500, 4, 3)) + 0.3)
    path = tmp_path / "pair.png"
    written = plots.plot_pair_comparison(mcmc, guide, path, obs=2, coords=(0, 2), max_points=100)
    _check_png(path, written, (6.0, 6.0), 100)
    with pytest.raises(IndexError, match="obs=9"):
        plots.plot_pair_comparison(mcmc, guide, path, obs=9)
    with pytest.raises(IndexError, match="coordinate 5"):
        plots.plot_pair_comparison(mcmc, guide, path, coords=(0, 5))
    with pytest.raises(KeyError, match="'w'"):
        plots.plot_pair_comparison(mcmc, guide, path, var_name="w")


def test_plot_pair_comparison_picks_a_site_of_two(tmp_path):
    rng = np.random.default_rng(2)

    def idata(shift: float) -> az.InferenceData:
        return az.from_dict(
            posterior={
                "z2": rng.normal(size=(1, 200, 3, 2)) + shift,
                "z1": rng.normal(size=(1, 200, 3, 4)) - shift,
            },
            dims={"z2": ["obs", "z2_dim"], "z1": ["obs", "z1_dim"]},
        )

    path = tmp_path / "pair_z1.png"
    written = plots.plot_pair_comparison(
        idata(0.0), idata(1.0), path, var_name="z1", coords=(1, 3), figsize=(4.0, 4.0), dpi=60
    )
    _check_png(path, written, (4.0, 4.0), 60)


def test_plot_kl_per_dimension(tmp_path, hierarchical_pair):
    model, guide, x = hierarchical_pair
    result = kl_per_dimension(model, guide, x, num_samples=2)
    path = tmp_path / "kl.png"
    _check_png(path, plots.plot_kl_per_dimension(result, path), plots.FIGSIZE, 100)
    mapping = {"z": [0.5, float("nan"), 2.0], "y": torch.tensor([0.1])}
    _check_png(path, plots.plot_kl_per_dimension(mapping, path, sort=True), plots.FIGSIZE, 100)
    _check_png(path, plots.plot_kl_per_dimension(np.arange(50.0), path), plots.FIGSIZE, 100)


def test_plot_ppc_continuous_and_binary(tmp_path, hierarchical_pair, float64):
    oracle = LinearGaussian.random(4, 2, seed=0)
    x = oracle.sample(30)
    continuous = posterior_predictive_check(
        oracle.model, oracle.gaussian_guide(), x, num_replicates=10
    )
    path = tmp_path / "ppc.png"
    _check_png(path, plots.plot_ppc(continuous.inference_data, path), plots.FIGSIZE, 100)

    model, guide, x_binary = hierarchical_pair
    binary = posterior_predictive_check(
        model.double(), guide.double(), x_binary.double(), num_replicates=5
    )
    path = tmp_path / "ppc_binary.png"
    written = plots.plot_ppc(binary.inference_data, path, num_pp_samples=3, figsize=(4, 3))
    _check_png(path, written, (4, 3), 100)


def test_plot_ppc_falls_back_to_histograms(tmp_path, monkeypatch, float64):
    oracle = LinearGaussian.random(4, 2, seed=0)
    x = oracle.sample(20)
    result = posterior_predictive_check(oracle.model, oracle.gaussian_guide(), x, num_replicates=4)
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs)
        plt.figure()  # a stray pyplot figure must be closed too
        raise ValueError("cannot draw")

    monkeypatch.setattr(plots.az, "plot_ppc", refuse)
    path = tmp_path / "ppc_hist.png"
    _check_png(path, plots.plot_ppc(result.inference_data, path), plots.FIGSIZE, 100)
    assert len(calls) == 1
