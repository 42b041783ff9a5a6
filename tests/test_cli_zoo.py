"""The zoo from the command line: likelihoods, priors, binarization and your own data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ppl_vae.cli import main

SMALL = [
    "--no-plots",
    "--epochs",
    "1",
    "--hidden",
    "8",
    "--latent-dim",
    "2",
    "--num-samples",
    "4",
    "--batch-size",
    "256",
    "--no-progress",
]


def _train(tmp_path: Path, capsys, *argv: str) -> tuple[dict, str]:
    out = tmp_path / "run"
    code = main(["train", *argv, *SMALL, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test log p(x) (IS, K=4)" in captured.out
    return json.loads((out / "config.json").read_text()), (out / "metrics.json").read_text()


def test_prior_and_likelihood_by_name_with_options(tmp_path, capsys):
    config, _ = _train(
        tmp_path,
        capsys,
        "--likelihood",
        "poisson",
        "--prior",
        "mixture",
        "--prior-option",
        "num_components=3",
    )
    assert config["model"]["likelihood"] == "poisson"
    assert config["model"]["prior_options"] == {"num_components": 3}


def test_counts_are_rescaled_for_unit_interval_likelihoods(tmp_path, capsys):
    config, metrics = _train(
        tmp_path,
        capsys,
        "--likelihood",
        "continuous_bernoulli",
        "--prior",
        "vamp",
        "--prior-option",
        "num_components=4",
    )
    assert config["model"]["input_scale"] == 1.0  # grey levels already in [0, 1]
    assert json.loads(metrics)["dataset"] == "digits[0,1]"
    code = main(["evaluate", str(tmp_path / "run"), "--num-samples", "3"])
    assert code == 0, capsys.readouterr().err  # evaluation rescales the same way


def test_dynamic_binarization_trains_a_bernoulli_model(tmp_path, capsys):
    config, metrics = _train(tmp_path, capsys, "--binarize", "dynamic")
    assert config["model"]["likelihood"] == "bernoulli"
    assert json.loads(metrics)["dataset"] == "digits[dynamic]"


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_your_own_data(tmp_path, capsys, suffix):
    counts = np.random.default_rng(0).poisson(3.0, size=(60, 5))
    path = tmp_path / f"counts{suffix}"
    if suffix == ".npy":
        np.save(path, counts)
    else:
        np.savetxt(path, counts, delimiter=",", fmt="%d", header="a,b,c,d,e", comments="")
    config, metrics = _train(
        tmp_path, capsys, "--data", str(path), "--likelihood", "negative_binomial"
    )
    assert config["model"]["data_shape"] == [5]
    assert json.loads(metrics)["dataset"] == f"user:counts{suffix}"


def test_grey_data_given_to_bernoulli_explains_the_choices(tmp_path, capsys):
    grey = np.random.default_rng(0).random((40, 4))
    path = tmp_path / "grey.npy"
    np.save(path, grey)
    code = main(
        [
            "train",
            "--data",
            str(path),
            "--likelihood",
            "bernoulli",
            *SMALL,
            "--out",
            str(tmp_path / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--binarize static" in err and "--binarize dynamic" in err
    assert "'continuous_bernoulli' or 'beta'" in err
