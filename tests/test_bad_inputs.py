"""Bad input fails early with a message that names the problem and the fix, through the
Python API and through the command line (exit code 2, no traceback)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models import LIKELIHOODS
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.cli import main
from ppl_vae.data import load_dataset
from ppl_vae.errors import ConfigError, DataError, DatasetNotFoundError, UnknownNameError
from ppl_vae.estimators import elbo, log_likelihood
from ppl_vae.run import RunConfig, train_run
from ppl_vae.training import fit


def _vae(likelihood: str = "bernoulli", data_shape: tuple[int, ...] = (4,), **options):
    spec = ModelSpec(
        data_shape=data_shape,
        likelihood=likelihood,
        likelihood_options=options,
        latent_dim=2,
        hidden=(8,),
    )
    return build_vae(spec)


def _estimate(model, guide, x):
    return log_likelihood(model, guide, x, num_samples=3, seed=0)


def _fit(model, guide, x, **kwargs):
    return fit(model, guide, x, epochs=1, batch_size=2, progress=False, **kwargs)


def _cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_clean_cli_error(code: int, out: str, err: str) -> None:
    assert code == 2
    assert err.startswith("ppl-vae: error: "), err
    assert "Traceback" not in err
    assert "ELBO" not in out  # no report was printed


# ------------------------------------------------------------- support of the likelihood


@pytest.mark.parametrize("run", [_estimate, _fit], ids=["log_likelihood", "fit"])
def test_binomial_counts_above_total_count(run) -> None:
    model, guide = _vae("binomial", total_count=16)
    x = torch.tensor([[0.0, 1.0, 2.0, 17.0], [3.0, 4.0, 5.0, 16.0]])
    with pytest.raises(DataError) as info:
        run(model, guide, x)
    message = str(info.value)
    assert "'binomial'" in message and "total_count=16" in message
    assert "go up to 17" in message  # the maximum actually found
    assert "at least 17" in message and "--total-count" in message  # the fix


@pytest.mark.parametrize("run", [_estimate, _fit], ids=["log_likelihood", "fit"])
def test_binomial_non_integer_counts(run) -> None:
    model, guide = _vae("binomial", total_count=16)
    x = torch.tensor([[0.0, 1.5, 2.0, 3.0], [0.0, 1.0, 2.25, 3.0]])
    with pytest.raises(DataError) as info:
        run(model, guide, x)
    message = str(info.value)
    assert "integer counts" in message and "2 values are not integers" in message
    assert "'normal'" in message  # suggests the likelihood for real values


@pytest.mark.parametrize("run", [_estimate, _fit], ids=["log_likelihood", "fit"])
def test_bernoulli_grey_scale(run) -> None:
    model, guide = _vae("bernoulli")
    x = torch.tensor([[0.0, 0.5, 1.0, 0.2], [1.0, 1.0, 0.0, 0.0]])
    with pytest.raises(DataError) as info:
        run(model, guide, x)
    message = str(info.value)
    assert "'bernoulli'" in message and "{0, 1}" in message
    assert "grey-scale" in message and "2 values" in message
    assert "Binarize" in message  # the fix


def test_bernoulli_support_check_passes_binary_data() -> None:
    """The check is not over-eager: exactly 0/1 data (as float) is accepted."""
    model, guide = _vae("bernoulli")
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    estimate = _estimate(model, guide, x)
    assert estimate.log_likelihood.shape == (2,)
    assert torch.isfinite(estimate.log_likelihood).all()


def test_validation_data_is_checked_too() -> None:
    model, guide = _vae("bernoulli")
    train = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    with pytest.raises(DataError, match="validation data outside the likelihood's support"):
        _fit(model, guide, train, valid_data=train * 0.5)


# ------------------------------------------------------------------ NaN, shape, rank


@pytest.mark.parametrize("run", [_estimate, _fit], ids=["log_likelihood", "fit"])
def test_nan_in_data(run) -> None:
    model, guide = _vae("bernoulli")
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, math.nan, 1.0, 0.0]])
    with pytest.raises(DataError) as info:
        run(model, guide, x)
    message = str(info.value)
    assert "NaN" in message
    assert "row 2" in message  # where it is
    assert "drop those rows" in message  # what to do


def test_infinite_value_in_data() -> None:
    model, guide = _vae("normal")
    x = torch.tensor([[0.0, 0.1, 0.2, 0.3], [0.0, 0.1, math.inf, 0.3]])
    with pytest.raises(DataError, match=r"NaN or infinite values in 1 rows \(first row 1\)"):
        _estimate(model, guide, x)


@pytest.mark.parametrize("run", [_estimate, _fit], ids=["log_likelihood", "fit"])
def test_wrong_feature_count(run) -> None:
    model, guide = _vae("bernoulli", data_shape=(4,))
    with pytest.raises(DataError) as info:
        run(model, guide, torch.zeros(3, 5))
    message = str(info.value)
    assert "(4,)" in message and "(5,)" in message
    assert "expects datapoints of shape (4,)" in message


def test_one_dimensional_input() -> None:
    model, guide = _vae("bernoulli")
    with pytest.raises(DataError) as info:
        _estimate(model, guide, torch.tensor([0.0, 1.0, 1.0, 0.0]))
    message = str(info.value)
    assert "(N, *data_shape)" in message and "shape (4,)" in message
    assert "x[None]" in message  # the fix for a single datapoint


def test_empty_batch() -> None:
    model, guide = _vae("bernoulli")
    with pytest.raises(DataError, match=r"empty \(shape \(0, 4\)\)"):
        elbo(model, guide, torch.zeros(0, 4))


def test_non_numeric_data() -> None:
    model, guide = _vae("bernoulli")
    with pytest.raises(DataError, match="numeric array"):
        _estimate(model, guide, [["a", "b", "c", "d"]])


def test_numpy_and_lists_are_accepted() -> None:
    model, guide = _vae("bernoulli")
    rows = [[0, 1, 1, 0], [1, 1, 0, 0]]
    from_list = _estimate(model, guide, rows)
    from_numpy = _estimate(model, guide, np.asarray(rows, dtype=np.uint8))
    assert torch.equal(from_list.log_likelihood, from_numpy.log_likelihood)


# -------------------------------------------------------------------- names and options


def test_unknown_dataset_name_api() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_dataset("mnits")
    message = str(info.value)
    assert "'mnits'" in message
    for name in ("binarized_mnist", "digits", "fashion_mnist", "mnist"):
        assert name in message


def test_unknown_dataset_name_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--dataset", "mnits", "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'mnits'" in err and "digits" in err
    assert not (tmp_path / "run").exists()


def test_unknown_likelihood_name() -> None:
    with pytest.raises(UnknownNameError) as info:
        _vae("gaussian")
    message = str(info.value)
    assert "unknown likelihood 'gaussian'" in message
    assert "choose one of: " + ", ".join(sorted(LIKELIHOODS)) in message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("prior", "vampire", r"unknown prior 'vampire'; choose one of: .*normal"),
        ("guide", "flow", r"unknown guide 'flow'; choose one of: .*iaf.*sylvester"),
        ("activation", "swishy", "swishy"),
    ],
)
def test_unknown_component_names(field: str, value: str, message: str) -> None:
    spec = ModelSpec(data_shape=(4,), hidden=(8,), latent_dim=2, **{field: value})
    with pytest.raises((UnknownNameError, ConfigError), match=message):
        build_vae(spec)


def test_bad_likelihood_option() -> None:
    with pytest.raises(ConfigError) as info:
        _vae("bernoulli", bogus=1)
    message = str(info.value)
    assert "likelihood 'bernoulli' has no option 'bogus'" in message


def test_bad_likelihood_option_lists_valid_options() -> None:
    with pytest.raises(ConfigError) as info:
        _vae("binomial", totalcount=16)
    message = str(info.value)
    assert "no option 'totalcount'" in message and "total_count" in message


@pytest.mark.parametrize("count", [0, -3, 2.5])
def test_bad_total_count_value(count) -> None:
    with pytest.raises(ConfigError, match="total_count must be a positive integer"):
        _vae("binomial", total_count=count)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"latent_dim": 0}, "latent_dim must be positive"),
        ({"hidden": (8, 0)}, "hidden layer sizes must be positive"),
    ],
)
def test_bad_model_sizes(changes: dict, message: str) -> None:
    spec = ModelSpec(data_shape=(4,), hidden=(8,), latent_dim=2)
    with pytest.raises(ConfigError, match=message):
        build_vae(ModelSpec(**{**spec.to_dict(), **changes}))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"epochs": -1}, "epochs must be >= 0"),
        ({"batch_size": 0}, "batch_size must be positive"),
        ({"lr": 0.0}, "lr must be positive"),
        ({"lr": math.nan}, "lr must be positive"),
    ],
)
def test_bad_fit_options(options: dict, message: str) -> None:
    model, guide = _vae("bernoulli")
    x = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    with pytest.raises(ConfigError, match=message):
        fit(model, guide, x, progress=False, **options)


# ----------------------------------------------------------------------- CLI on bad data


def test_cli_missing_data_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    argv = ["train", "--dataset", "binarized_mnist", "--data-dir", str(empty)]
    code, out, err = _cli([*argv, "--out", str(tmp_path / "run"), "--no-progress"], capsys)
    _assert_clean_cli_error(code, out, err)
    assert "binarized_mnist not found" in err
    assert str(empty / "binarized_mnist.npz") in err  # where it looked
    assert "--data-dir" in err and "--download" in err  # how to fix it


def test_missing_data_file_api(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="Looked for"):
        load_dataset("binarized_mnist", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--likelihood", "bernoulli"], ["'bernoulli'", "{0, 1}", "[0, 16]", "'binomial'"]),
        (["--total-count", "8"], ["total_count=8", "at least 16", "--total-count"]),
    ],
    ids=["bernoulli-on-counts", "total-count-too-small"],
)
def test_cli_data_outside_support(
    args: list[str], expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", *args, "--epochs", "1", "--hidden", "8", "--latent-dim", "2"]
    code, out, err = _cli([*argv, "--no-progress", "--out", str(tmp_path / "run")], capsys)
    _assert_clean_cli_error(code, out, err)
    assert "digits train data outside the likelihood's support" in err
    for text in expected:
        assert text in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_cli_negative_epochs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:  # argparse rejects it before anything runs
        main(["train", "--epochs", "-1", "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --epochs: expected an integer >= 0, got '-1'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="epochs must be >= 0"):  # the API checks too
        train_run(RunConfig(epochs=-1), tmp_path / "api-run", progress=False)
    assert not (tmp_path / "api-run").exists()


def test_cli_evaluate_on_data_of_other_shape(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    rng = np.random.default_rng(0)
    arrays = {
        split: rng.integers(0, 2, size=(n, 16), dtype=np.uint8)
        for split, n in (("train", 8), ("valid", 4), ("test", 4))
    }
    np.savez(data_dir / "binarized_mnist.npz", **arrays)
    metrics_before = (digits_run / "metrics.json").read_text()

    argv = ["evaluate", str(digits_run), "--dataset", "binarized_mnist"]
    code, out, err = _cli([*argv, "--data-dir", str(data_dir)], capsys)
    _assert_clean_cli_error(code, out, err)
    assert "(64,)" in err and "(16,)" in err
    assert "expects datapoints of shape (64,)" in err
    # the failed evaluation is not recorded
    assert (digits_run / "metrics.json").read_text() == metrics_before


def test_cli_evaluate_on_a_directory_that_is_not_a_run(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    not_a_run = tmp_path / "some-folder"
    not_a_run.mkdir()
    (not_a_run / "notes.txt").write_text("hello")
    code, out, err = _cli(["evaluate", str(not_a_run)], capsys)
    _assert_clean_cli_error(code, out, err)
    assert f"{not_a_run} is not a run directory (no config.json)" in err
    assert "--out directory of a `ppl-vae train` run" in err
    assert sorted(p.name for p in not_a_run.iterdir()) == ["notes.txt"]  # nothing written


def test_cli_evaluate_on_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, out, err = _cli(["evaluate", str(tmp_path / "nowhere")], capsys)
    _assert_clean_cli_error(code, out, err)
    assert "is not a run directory" in err
    assert not (tmp_path / "nowhere").exists()


def test_cli_evaluate_without_checkpoint(digits_run: Path, capsys: pytest.CaptureFixture) -> None:
    (digits_run / "checkpoint.pt").unlink()
    code, out, err = _cli(["evaluate", str(digits_run)], capsys)
    _assert_clean_cli_error(code, out, err)
    assert f"no checkpoint at {digits_run / 'checkpoint.pt'}" in err
    assert "ppl-vae train" in err


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "[]",
        "123",
        '{"dataset": "digits"}',
        '{"format": "ppl_vae.run", "colour": "blue"}',
        '"a string"',
    ],
    ids=["not-json", "list", "number", "no-format", "unknown-key", "string"],
)
def test_cli_evaluate_corrupt_config(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "config.json").write_text(text)
    code, out, err = _cli(["evaluate", str(tmp_path)], capsys)
    _assert_clean_cli_error(code, out, err)
    assert "config.json" in err
    assert "corrupt" in err or "not a ppl_vae run config" in err


def test_config_json_of_a_run_is_valid_for_reload(digits_run: Path) -> None:
    """Sanity check of the fixture the corrupt-config tests start from."""
    config = json.loads((digits_run / "config.json").read_text())
    assert RunConfig.from_dict(config).model == ModelSpec.from_dict(config["model"])
