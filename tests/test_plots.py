"""The pictures of ppl_vae.plots: every function writes a PNG of the expected pixel size, and
the tensors behind it are what they claim (decoder means at the right latents, exact slerp
endpoints and norms, sklearn's PCA, reconstructions at t = 0 / 1 and at scale 0)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib import pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from torchvision.utils import make_grid  # noqa: E402

from ppl_vae.build import ModelSpec, build_vae  # noqa: E402
from ppl_vae.data import load_dataset  # noqa: E402
from ppl_vae.errors import ConfigError, DataError  # noqa: E402
from ppl_vae.plots import (  # noqa: E402
    default_scale,
    grid_size,
    lerp,
    plot_interpolation,
    plot_latent_arithmetic,
    plot_latent_space,
    plot_manifold,
    plot_reconstructions,
    plot_run,
    plot_samples,
    plot_training_curves,
    posterior_means,
    quantile_levels,
    reconstruct,
    run_figures,
    slerp,
)
from ppl_vae.run import RunConfig, load_run, train_run  # noqa: E402

IMAGE = (1, 8, 8)
SCALE = default_scale(IMAGE)  # 4: 8x8 digits drawn 32 pixels wide
RANGE = (0.0, 16.0)


@pytest.fixture(autouse=True)
def _no_figures_left():
    yield
    assert plt.get_fignums() == [], "a plot function left a pyplot figure open"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _build(digits, **settings):
    torch.manual_seed(0)
    spec = ModelSpec.for_dataset(digits, hidden=(8,), **{"latent_dim": 2, **settings})
    return build_vae(spec)


def _size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of a PNG, decoded."""
    with Image.open(path) as image:
        image.load()
        return image.height, image.width


def _cell(path: Path, row: int, column: int) -> np.ndarray:
    """The pixels ``(H, W)`` (first channel) of one cell of an image grid of 8x8 digits."""
    pitch = 8 * SCALE + 2
    with Image.open(path) as image:
        pixels = np.asarray(image)[..., 0]
    top, left = 2 + row * pitch, 2 + column * pitch
    return pixels[top : top + 8 * SCALE : SCALE, left : left + 8 * SCALE : SCALE]


def _grey(x: torch.Tensor) -> np.ndarray:
    """What save_image makes of a digit with values 0..16."""
    return (x.reshape(8, 8) / 16).mul(255).add(0.5).clamp(0, 255).to(torch.uint8).numpy()


# --------------------------------------------------------------------------- grids


def test_grid_size_is_make_grids() -> None:
    images = torch.rand(13, 1, 8 * SCALE, 8 * SCALE)
    grid = make_grid(images, nrow=5, padding=2)
    assert tuple(grid.shape[1:]) == grid_size(13, 5, IMAGE, scale=SCALE, padding=2)
    assert grid_size(3, 8, (3, 28, 28)) == (28 + 4, 3 * 30 + 2)  # fewer cells than nrow


# --------------------------------------------------------------------------- samples


@pytest.mark.parametrize("architecture", ["vae", "hierarchical", "conditional"])
def test_samples_are_decoder_means_and_draws_of_the_same_z(digits, tmp_path, architecture):
    model, _ = _build(digits, architecture=architecture)
    y = torch.arange(10).repeat_interleave(2) if architecture == "conditional" else None
    result = plot_samples(
        model, digits.test, tmp_path, num=20, nrow=6, y=y, image_shape=IMAGE, value_range=RANGE
    )
    mean_png, draw_png = result.paths
    assert (mean_png.name, draw_png.name) == ("samples_mean.png", "samples_draw.png")
    for path in result.paths:
        assert _size(path) == grid_size(20, 6, IMAGE, scale=SCALE)
    with Image.open(mean_png) as image:
        assert "decoder means" in image.text["Title"]
    z, mean, draw = result.tensors["latents"], result.tensors["mean"], result.tensors["draw"]
    # the model's own decode (per architecture) is the oracle of the generic path
    if architecture == "vae":
        expected = model.decode(z["z"]).mean
    elif architecture == "hierarchical":
        expected = model.decode(z["z1"], z["z2"]).mean
    else:
        expected = model.decode(z["z"], y).mean
    torch.testing.assert_close(mean, expected)
    assert torch.equal(draw, draw.round()) and 0 <= draw.min() and draw.max() <= 16  # Binomial
    assert not torch.equal(mean, mean.round())
    np.testing.assert_array_equal(_cell(draw_png, 0, 1), _grey(draw[1]))
    again = plot_samples(model, digits.test, tmp_path / "again", num=20, y=y, image_shape=IMAGE)
    assert torch.equal(again.tensors["draw"], draw)  # deterministic given the seed
    other = plot_samples(model, digits.test, tmp_path / "b", num=20, y=y, image_shape=IMAGE, seed=1)
    assert not torch.equal(other.tensors["mean"], mean)


# --------------------------------------------------------------------------- reconstructions


def test_reconstructions_alternate_inputs_and_decoder_means_at_posterior_means(digits, tmp_path):
    model, guide = _build(digits)
    x = digits.test[:19]
    result = plot_reconstructions(
        model, guide, x, tmp_path, per_row=8, image_shape=IMAGE, value_range=RANGE
    )
    assert result.path.name == "reconstructions.png"
    assert _size(result.path) == grid_size(6 * 8, 8, IMAGE, scale=SCALE)  # 3 pairs of rows
    loc = guide.posterior(x).mean
    torch.testing.assert_close(result.tensors["latents"]["z"], loc)  # E_q[z | x] = encoder loc
    torch.testing.assert_close(result.tensors["reconstructions"], model.decode(loc).mean)
    np.testing.assert_array_equal(_cell(result.path, 2, 3), _grey(x[8 + 3]))  # third row: inputs
    recon = result.tensors["reconstructions"][8 + 3]
    np.testing.assert_array_equal(_cell(result.path, 3, 3), _grey(recon))  # below: its recon
    blank = _cell(result.path, 5, 7)  # the last row has 3 cells; the rest is padding
    assert (blank == 128).all()


def test_a_plain_pyro_program_and_a_table(tmp_path):
    import pyro
    import pyro.distributions as dist

    decoder, encoder = torch.nn.Linear(2, 5), torch.nn.Linear(5, 4)

    def model(x, mask=None):
        pyro.module("decoder", decoder)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(decoder(z), 0.5).to_event(1), obs=x)

    def guide(x, mask=None):
        pyro.module("encoder", encoder)
        loc, log_scale = encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = torch.randn(6, 5)
    result = plot_reconstructions(model, guide, x, tmp_path, per_row=3)  # a heatmap
    with torch.no_grad():
        expected = decoder(encoder(x).chunk(2, -1)[0])
    torch.testing.assert_close(result.tensors["reconstructions"], expected)
    assert _size(result.path)[1] == 700 and plt.imread(result.path)[..., :3].std() > 0.01


def test_posterior_means_of_flows_and_hierarchies(digits):
    x = digits.test[:6]
    _, flow_guide = _build(digits, guide="iaf")
    means = posterior_means(flow_guide, x, num_samples=4000, seed=3)["z"]
    torch.testing.assert_close(posterior_means(flow_guide, x, num_samples=4000, seed=3)["z"], means)
    draws = flow_guide.posterior(x).sample((4000,))
    se = draws.std(0) / math.sqrt(4000)
    assert ((means - draws.mean(0)).abs() < 6 * se + 1e-6).all()  # Monte Carlo mean of draws
    assert not torch.equal(posterior_means(flow_guide, x, num_samples=4000, seed=4)["z"], means)

    _, guide = _build(digits, architecture="hierarchical")
    result = posterior_means(guide, x, num_samples=64)
    assert list(result) == ["z2", "z1"]
    torch.testing.assert_close(result["z2"], guide.posterior_top(x).mean)  # exact
    z2 = guide.posterior_top(x).sample((4000,))
    tower = guide.posterior_bottom(x, z2).mean.mean(0)
    assert (result["z1"] - tower).abs().max() < 0.1  # E[z1 | x] by the tower rule


# --------------------------------------------------------------------------- training curves


def test_training_curves_from_metrics(tmp_path):
    history = [
        {"epoch": e, "train_elbo": -100 + e, "valid_elbo": -101 + e, "train_objective": -99 + e}
        for e in range(1, 8)
    ]
    metrics = {
        "dataset": "digits",
        "training": {"history": history},
        "test": {
            "num_samples": 10,
            "log_likelihood": -90.0,
            "log_likelihood_stderr": 0.1,
            "elbo": -94.0,
        },
        "evaluations": [
            {
                "num_samples": 5000,
                "log_likelihood": -89.0,
                "log_likelihood_stderr": float("nan"),
                "elbo": -94.0,
                "split": "valid",
                "epoch": 7,
                "dataset": "mnist",
            },
        ],
    }
    result = plot_training_curves(metrics, tmp_path)
    assert _size(result.path) == (440, 1100)
    assert plt.imread(result.path)[..., :3].std() > 0.01
    assert torch.equal(result.tensors["train_objective"], torch.arange(-98.0, -91.0).double())
    assert result.tensors["log_likelihood"].tolist() == [-90.0, -89.0]
    labels = result.tensors["evaluation_labels"]
    assert labels[0] == "test: test, K=10, epoch 7" and "mnist valid, K=5000" in labels[1]
    same = [{**r, "train_objective": r["train_elbo"]} for r in history]
    plain = plot_training_curves({"training": {"history": same}}, tmp_path, name="plain")
    assert "train_objective" not in plain.tensors and plain.tensors["stderr"].numel() == 0
    with pytest.raises(ConfigError, match="no per-epoch training history"):
        plot_training_curves({"training": {"history": []}}, tmp_path)


# --------------------------------------------------------------------------- latent space


def test_latent_space_pca_is_sklearns_and_two_dimensions_are_drawn_as_they_are(digits, tmp_path):
    x, labels = digits.test[:80], digits.test_labels[:80]
    _, guide = _build(digits, architecture="hierarchical", latent_dim=3)  # z2 (3) + z1 (3)
    result = plot_latent_space(guide, x, tmp_path, labels=labels)
    assert _size(result.path) == (560, 640)
    latents = result.tensors["latents"]
    assert result.tensors["sites"] == ["z2", "z1"] and latents.shape == (80, 6)
    pca = PCA(n_components=2).fit(latents.numpy())
    np.testing.assert_allclose(result.tensors["coordinates"].numpy(), pca.transform(latents))
    np.testing.assert_allclose(
        result.tensors["explained_variance_ratio"].numpy(), pca.explained_variance_ratio_
    )
    top = plot_latent_space(guide, x, tmp_path, sites="z2", name="top")
    assert top.tensors["latents"].shape == (80, 3)

    _, flat_guide = _build(digits)
    plain = plot_latent_space(flat_guide, x, tmp_path, labels=labels, name="plain")
    torch.testing.assert_close(plain.tensors["coordinates"], plain.tensors["latents"])
    assert "explained_variance_ratio" not in plain.tensors
    with pytest.raises(ConfigError, match="unknown latent sites"):
        plot_latent_space(guide, x, tmp_path, sites="w")


# --------------------------------------------------------------------------- manifold


def test_manifold_grid_over_prior_quantiles(digits, tmp_path):
    model, _ = _build(digits)
    result = plot_manifold(model, digits.test, tmp_path, n=5, image_shape=IMAGE)
    assert _size(result.path) == grid_size(25, 5, IMAGE, scale=SCALE)
    q = torch.distributions.Normal(0.0, 1.0).icdf(quantile_levels(5))
    assert result.tensors["method"] == "exact"
    torch.testing.assert_close(result.tensors["quantiles"], torch.stack([q, q], 1).float())
    grid = result.tensors["grid"]
    torch.testing.assert_close(grid[0], torch.stack([q[0], q[4]]).float())  # top left
    torch.testing.assert_close(grid[4], torch.stack([q[4], q[4]]).float())  # top right
    torch.testing.assert_close(grid[24], torch.stack([q[4], q[0]]).float())  # bottom right
    torch.testing.assert_close(result.tensors["mean"], model.decode(grid).mean)

    hierarchical, _ = _build(digits, architecture="hierarchical")
    top = plot_manifold(hierarchical, digits.test, tmp_path, n=3, name="top")
    z = top.tensors["latents"]
    torch.testing.assert_close(z["z1"], hierarchical.prior_z1(z["z2"]).mean)  # E[z1 | z2]
    lower = plot_manifold(hierarchical, digits.test, tmp_path, n=3, site="z1", name="lower")
    assert lower.tensors["method"] == "empirical"  # p(z1) is a mixture over z2

    wide, _ = _build(digits, latent_dim=3)
    with pytest.raises(ConfigError, match="needs a 2-D latent site; site 'z' has 3"):
        plot_manifold(wide, digits.test, tmp_path)


# --------------------------------------------------------------------------- interpolation


def test_slerp_endpoints_norms_and_angles():
    a, b = torch.tensor([3.0, 0.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0, 1.0])
    b = b.double()
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    path = slerp(a, b, t)
    torch.testing.assert_close(path[0], a)
    torch.testing.assert_close(path[-1], b)
    torch.testing.assert_close(path.norm(dim=1), (1 - t) * a.norm() + t * b.norm())  # linear
    omega = torch.arccos(a @ b / (a.norm() * b.norm()))
    angles = torch.arccos((path @ a / (path.norm(dim=1) * a.norm())).clamp(-1, 1))
    torch.testing.assert_close(angles, t * omega)  # constant angular speed
    c = torch.tensor([0.0, 3.0, 0.0], dtype=torch.float64)  # same norm, 90 degrees apart
    mid_s, mid_l = slerp(a, c, torch.tensor([0.5]))[0], lerp(a, c, torch.tensor([0.5]))[0]
    torch.testing.assert_close(mid_s.norm(), a.norm())  # stays on the sphere
    torch.testing.assert_close(mid_l.norm(), a.norm() * math.cos(math.pi / 4))  # cuts inside
    torch.testing.assert_close(slerp(a, 2 * a, t), lerp(a, 2 * a, t))  # parallel: linear


def test_interpolation_rows_end_at_the_reconstructions(digits, tmp_path):
    model, guide = _build(digits, architecture="hierarchical")
    x = digits.test[[0, 5]]
    result = plot_interpolation(
        model, guide, x, tmp_path, steps=6, image_shape=IMAGE, value_range=RANGE
    )
    assert _size(result.path) == grid_size(2 * 8, 8, IMAGE, scale=SCALE)
    ends = result.tensors["endpoints"]
    recon = reconstruct(model, guide, x).mean
    for kind in ("linear", "spherical"):
        for site, values in result.tensors[kind].items():
            torch.testing.assert_close(values[0], ends[site][0])
            torch.testing.assert_close(values[-1], ends[site][1])
        decoded = result.tensors[f"{kind}_mean"]
        torch.testing.assert_close(decoded[[0, -1]], recon)
    np.testing.assert_array_equal(_cell(result.path, 1, 0), _grey(x[0]))  # inputs at the ends
    np.testing.assert_array_equal(_cell(result.path, 0, 7), _grey(x[1]))
    with pytest.raises(ConfigError, match="exactly two inputs"):
        plot_interpolation(model, guide, digits.test[:3], tmp_path)


# --------------------------------------------------------------------------- arithmetic


def test_latent_arithmetic_at_scale_zero_is_the_reconstruction(digits, tmp_path):
    model, guide = _build(digits)
    x, labels = digits.test[:120], digits.test_labels[:120]
    result = plot_latent_arithmetic(
        model,
        guide,
        x,
        labels,
        tmp_path,
        source=3,
        target=8,
        num_inputs=4,
        image_shape=IMAGE,
        value_range=RANGE,
    )
    assert _size(result.path) == grid_size(4 * 6, 6, IMAGE, scale=SCALE)  # input + 5 scales
    rows = result.tensors["rows"]
    assert (labels[rows] == 3).all() and rows.numel() == 4
    means = guide.posterior(x).mean
    vector = means[labels == 8].mean(0) - means[labels == 3].mean(0)
    torch.testing.assert_close(result.tensors["attribute"]["z"], vector)
    mean = result.tensors["mean"]
    torch.testing.assert_close(mean[:, 0], reconstruct(model, guide, x[rows]).mean)
    torch.testing.assert_close(mean[:, 2], model.decode(means[rows] + vector).mean)  # s = 1
    with pytest.raises(DataError, match="needs labels"):
        plot_latent_arithmetic(model, guide, x, None, tmp_path, source=3, target=8)
    with pytest.raises(DataError, match=r"no datapoint has the target label 11.*\[0, 1, 2"):
        plot_latent_arithmetic(model, guide, x, labels, tmp_path, source=3, target=11)
    with pytest.raises(ConfigError, match="different groups"):
        plot_latent_arithmetic(model, guide, x, labels, tmp_path, source=3, target=3)


# --------------------------------------------------------------------------- plot_run


def test_plot_run_writes_every_figure_of_a_digits_run(_tiny_digits_run, tmp_path):
    paths = plot_run(_tiny_digits_run, tmp_path / "a", num=16, num_data=100)
    names = [p.name for p in paths]
    assert names == [
        "training_curves.png",
        "samples_mean.png",
        "samples_draw.png",
        "reconstructions.png",
        "latent_space.png",
        "manifold.png",
        "interpolation.png",
        "latent_arithmetic.png",
    ]
    assert all(p.parent == tmp_path / "a" for p in paths)
    assert _size(paths[1]) == grid_size(16, 8, IMAGE, scale=SCALE)
    assert _size(paths[3]) == grid_size(16, 8, IMAGE, scale=SCALE)  # 8 inputs, 8 recons
    assert _size(paths[5]) == grid_size(225, 15, IMAGE, scale=SCALE)
    again = plot_run(_tiny_digits_run, tmp_path / "b", num=16, num_data=100)
    for first, second in zip(paths[1:4], again[1:4], strict=True):  # the same seed
        assert first.read_bytes() == second.read_bytes()
    other = plot_run(_tiny_digits_run, tmp_path / "c", num=16, num_data=100, seed=1)
    assert other[1].read_bytes() != paths[1].read_bytes()


def test_plot_run_skips_what_does_not_apply(digits, tmp_path, caplog):
    run = tmp_path / "conditional"
    config = RunConfig(
        architecture="conditional", epochs=0, hidden=(8,), latent_dim=3, num_samples=2
    )
    train_run(config, run, progress=False)
    with caplog.at_level("INFO", logger="ppl_vae.plots"):
        figures = run_figures(run, num=20, num_data=60)
    assert set(figures.skipped) == {"training_curves", "manifold", "latent_arithmetic"}
    assert "class in y" in figures.skipped["latent_arithmetic"]
    assert "skipped manifold" in caplog.text
    assert [p.name for p in figures.paths] == [
        "samples_mean.png",
        "samples_draw.png",
        "reconstructions.png",
        "latent_space.png",
        "interpolation.png",
    ]
    assert figures.paths[0].parent == run / "plots"
    assert _size(figures.paths[0]) == grid_size(20, 2, IMAGE, scale=SCALE)  # a row per class
    _, model, _, _ = load_run(run)
    assert model.num_classes == 10


def test_plot_run_on_a_table_draws_heatmaps_and_scatter(tmp_path):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(60, 4)) + np.repeat(np.arange(3), 20)[:, None]
    rows = [
        f"{v[0]:.4f},{v[1]:.4f},{v[2]:.4f},{v[3]:.4f},{k}"
        for v, k in zip(table, np.repeat(np.arange(3), 20), strict=True)
    ]
    (tmp_path / "t.csv").write_text("a,b,c,d,label\n" + "\n".join(rows) + "\n")
    config = RunConfig(
        data=str(tmp_path / "t.csv"),
        label_column="label",
        epochs=1,
        hidden=(8,),
        latent_dim=2,
        num_samples=2,
        batch_size=64,
    )
    train_run(config, tmp_path / "run", progress=False)
    figures = run_figures(tmp_path / "run", num=8)
    assert [p.name for p in figures.paths] == [
        "training_curves.png",
        "samples.png",
        "reconstructions.png",
        "latent_space.png",
        "manifold.png",
        "interpolation.png",
        "latent_arithmetic.png",
    ]
    for path in figures.paths:
        image = plt.imread(path)
        assert image.ndim == 3 and image[..., :3].std() > 0.01
    assert _size(figures.paths[1]) == (440, 1100)
