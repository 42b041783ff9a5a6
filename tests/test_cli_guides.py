"""Guides, architectures and objectives from the command line and config files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from guides import HierarchicalGuide
from models import HierarchicalVAE
from ppl_vae.cli import main
from ppl_vae.errors import ConfigError
from ppl_vae.run import RunConfig, evaluate_run, load_run, train_run
from tests.test_cli_zoo import SMALL


def _train(tmp_path: Path, capsys, *argv: str) -> tuple[dict, dict]:
    out = tmp_path / "run"
    code = main(["train", *argv, *SMALL, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    config = json.loads((out / "config.json").read_text())
    return config, json.loads((out / "metrics.json").read_text())


def test_hierarchical_vae_with_flow_guide_and_iwae(tmp_path, capsys):
    config, metrics = _train(
        tmp_path,
        capsys,
        "--architecture",
        "hierarchical",
        "--top-latent-dim",
        "3",
        "--guide",
        "iaf",
        "--guide-option",
        "num_flows=3",
        "--objective",
        "iwae",
        "--num-particles",
        "3",
    )
    model = config["model"]
    assert (model["architecture"], model["guide"], model["guide_options"]) == (
        "hierarchical",
        "iaf",
        {"num_flows": 3},
    )
    assert config["objective_options"] == {"num_particles": 3}
    record = metrics["training"]["history"][0]
    # IWAE's objective and the true ELBO are both reported, per datapoint.
    assert record["train_objective"] != record["train_elbo"]
    assert metrics["test"]["num_samples"] == 4 and metrics["test"]["num_data"] == 359
    _, model_back, guide_back, _ = load_run(tmp_path / "run")
    assert isinstance(model_back, HierarchicalVAE) and isinstance(guide_back, HierarchicalGuide)
    assert guide_back.posterior_top(torch.zeros(2, 64)).event_shape == (3,)


def test_conditional_vae_uses_the_labels_everywhere(tmp_path, capsys):
    config, metrics = _train(tmp_path, capsys, "--architecture", "conditional")
    assert config["model"]["num_classes"] == 10
    summary = evaluate_run(tmp_path / "run", num_samples=3, num_data=20)
    assert summary["num_data"] == 20 and summary["num_samples"] == 3


def test_beta_and_warmup_reach_training_and_reports_stay_the_elbo(tmp_path, capsys):
    config, metrics = _train(
        tmp_path, capsys, "--beta", "2", "--warmup-epochs", "4", "--warmup-start", "0.5"
    )
    record = metrics["training"]["history"][0]
    assert record["beta"] == 0.5  # epoch 1 of a warm-up from 0.5
    assert config["beta"] == 2.0 and config["warmup_epochs"] == 4


def test_conv_networks_on_image_data(tmp_path, capsys):
    config, _ = _train(tmp_path, capsys, "--encoder", "conv", "--decoder", "conv")
    assert config["model"]["image_shape"] == [1, 8, 8]


def test_settings_from_a_config_file(tmp_path, capsys):
    path = tmp_path / "run.toml"
    path.write_text(
        'guide = "sylvester"\n'
        'objective = "renyi"\n'
        "[guide_options]\nnum_flows = 2\n"
        "[objective_options]\nalpha = 0.5\nnum_particles = 2\n"
    )
    config, _ = _train(tmp_path, capsys, "--config", str(path))
    assert config["model"]["guide"] == "sylvester"
    assert config["objective"] == "renyi"
    assert config["objective_options"] == {"alpha": 0.5, "num_particles": 2}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--objective", "iwae", "--beta", "0.5"], "beta = 0.5 is not supported"),
        (["--objective", "iwae", "--num-particles", "1"], "num_particles"),
        (["--guide", "iaf", "--guide-option", "depth=3"], "no option 'depth'"),
        (["--guide-option", "rank=2"], "no option 'rank'"),
        (["--architecture", "conditional", "--prior", "vamp"], "conditional guide"),
        (["--objective-option", "alpha=x"], "option"),
    ],
)
def test_bad_combinations_fail_before_training(tmp_path, capsys, argv, message):
    out = tmp_path / "run"
    code = main(["train", *argv, *SMALL, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "ppl-vae: error:" in err and message in err, err
    assert not (out / "checkpoint.pt").exists()


def test_conditional_needs_labels(tmp_path, capsys):
    code = main(
        ["train", "--dataset", "binarized_mnist", "--architecture", "conditional", *SMALL]
        + ["--out", str(tmp_path / "run"), "--data-dir", str(tmp_path)]
    )
    err = capsys.readouterr().err
    assert code == 2 and ("needs labels" in err or "not found" in err.lower()), err


def test_conv_needs_images(tmp_path):
    import numpy as np

    data = tmp_path / "table.npy"
    np.save(data, np.random.default_rng(0).integers(0, 2, size=(40, 5)).astype("float32"))
    with pytest.raises(ConfigError, match="needs image data"):
        train_run(
            RunConfig(data=str(data), encoder="conv", epochs=0, num_samples=2), tmp_path / "r"
        )


def test_hierarchical_vampprior_over_z2_through_build():
    from ppl_vae import ModelSpec, build_vae, load_dataset, log_likelihood

    digits = load_dataset("digits")
    spec = ModelSpec.for_dataset(
        digits,
        architecture="hierarchical",
        prior="vamp",
        prior_options={"num_components": 4},
        guide="planar",
        latent_dim=2,
        top_latent_dim=3,
        hidden=(8,),
    )
    model, guide = build_vae(spec)
    # The VampPrior mixes the guide's own q(z2 | u) at its pseudo-inputs.
    assert model.prior.encoder is guide.encoder
    estimate = log_likelihood(model, guide, digits.test[:5], num_samples=8, seed=0)
    assert estimate.log_likelihood.shape == (5,)
    assert torch.isfinite(estimate.log_likelihood).all()
    assert model.prior().event_shape == (3,)  # the prior is over z2
