"""Training on partially observed data: ``fit(..., train_mask=, valid_mask=)`` and the
``missing_pattern`` / ``missing_fraction`` run settings (``ppl-vae train --missing-pattern``)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pyro.infer import Trace_ELBO

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.cli import main
from ppl_vae.data import load_dataset
from ppl_vae.errors import ConfigError, DataError
from ppl_vae.estimators import log_likelihood
from ppl_vae.imputation import hide
from ppl_vae.objectives import build_objective
from ppl_vae.run import (
    RunConfig,
    check_missing,
    load_run,
    missing_mask,
    resume_run,
    run_split,
    train_run,
)
from ppl_vae.seeding import derive_seed
from ppl_vae.training import fit, mean_elbo
from tests.test_distributed import BATCH_SIZE, LR, WORLD_SIZE, _data, _free_port, _pair, _params
from tests.test_resume import _assert_same_history, _assert_same_params

SEED = 3
HOLES = {"missing_pattern": "random", "missing_fraction": 0.5}
SMALL = RunConfig(
    epochs=3, hidden=(8,), latent_dim=2, num_samples=4, batch_size=256, lr=1e-2, **HOLES
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _tiny_vae(digits):
    pyro.clear_param_store()
    torch.manual_seed(0)
    return build_vae(ModelSpec.for_dataset(digits, latent_dim=2, hidden=(8,)))


def _mask(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return hide(x.shape, "random", fraction=0.5, seed=seed)


def _train(digits, x, mask, **options):
    """A tiny VAE trained 2 epochs on ``x`` from fixed initial weights; its parameters."""
    model, guide = _tiny_vae(digits)
    result = fit(
        model,
        guide,
        x,
        train_mask=mask,
        epochs=2,
        batch_size=128,
        lr=1e-2,
        seed=SEED,
        progress=False,
        **options,
    )
    params = {**model.state_dict(), **{f"q.{k}": v for k, v in guide.state_dict().items()}}
    return params, result


def _fill_holes(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with other valid counts (0..16) in the holes."""
    other = torch.randint(0, 17, x.shape, generator=torch.Generator().manual_seed(9))
    return torch.where(mask, x, other.to(x.dtype))


def test_each_step_minimises_minus_the_elbo_of_the_observed_elements(digits):
    x, x_valid = digits.train, digits.valid
    mask, valid_mask = _mask(x), _mask(x_valid, seed=1)
    model, guide = _tiny_vae(digits)
    # the first step's ELBO, with the draws and rows fit uses for it
    rows = torch.randperm(
        x.shape[0], generator=torch.Generator().manual_seed(derive_seed(SEED, 1, 1))
    )
    rows = rows[:128]
    pyro.set_rng_seed(derive_seed(SEED, 1))
    expected = -Trace_ELBO().loss(model, guide, x[rows], mask[rows]) / 128
    pyro.set_rng_seed(derive_seed(SEED, 1))
    complete = -Trace_ELBO().loss(model, guide, x[rows]) / 128
    result = fit(
        model,
        guide,
        x,
        valid_data=x_valid,
        train_mask=mask,
        valid_mask=valid_mask,
        epochs=1,
        batch_size=128,
        lr=1e-2,
        seed=SEED,
        progress=False,
    )
    assert result.step_objective[0] == pytest.approx(expected, rel=1e-6)
    assert complete < expected - 5  # about half the elements are scored
    record = result.history[0]
    assert record.valid_elbo == mean_elbo(model, guide, x_valid, mask=valid_mask, seed=SEED)
    assert record.valid_elbo > mean_elbo(model, guide, x_valid, seed=SEED) + 5


@pytest.mark.parametrize("objective", ["trace_elbo", "iwae"])
def test_values_in_the_holes_never_influence_training(digits, objective):
    x = digits.train
    mask = _mask(x)
    options = {
        "elbo": build_objective(objective, **({"num_particles": 3} if objective == "iwae" else {})),
        "valid_data": digits.valid,
        "valid_mask": _mask(digits.valid, seed=1),
    }
    params, result = _train(digits, x, mask, **options)
    params_other, result_other = _train(digits, _fill_holes(x, mask), mask, **options)
    assert params.keys() == params_other.keys()
    assert all(torch.equal(params[k], params_other[k]) for k in params)
    assert result.step_objective == result_other.step_objective
    assert result.valid_elbo == result_other.valid_elbo
    # the control: without the mask the same change moves the parameters
    params_plain, _ = _train(digits, x, None)
    params_plain_other, _ = _train(digits, _fill_holes(x, mask), None)
    assert not all(torch.equal(params_plain[k], params_plain_other[k]) for k in params_plain)


def test_bad_masks_are_refused_clearly(digits):
    x = digits.train
    model, guide = _tiny_vae(digits)
    mask = _mask(x)
    empty = mask.clone()
    empty[[4, 7]] = False
    cases = [
        ({"train_mask": mask.float()}, DataError, "train_mask must be boolean"),
        ({"train_mask": mask[:, :10]}, DataError, "train_mask must have the data's shape"),
        ({"train_mask": empty}, DataError, "train_mask: 2 datapoints have every element missing"),
        ({"train_mask": [[True]]}, DataError, "train_mask must have the data's shape"),
        (
            {"valid_data": digits.valid, "valid_mask": mask},
            DataError,
            "valid_mask must have the data's shape",
        ),
        ({"valid_mask": mask}, ConfigError, "valid_mask was given without valid_data"),
    ]
    for options, error, message in cases:
        with pytest.raises(error, match=message):
            fit(model, guide, x, epochs=1, progress=False, **options)


def test_run_settings_are_checked():
    assert check_missing(RunConfig()) == RunConfig()
    assert check_missing(RunConfig(missing_pattern="patch")).missing_fraction == 0.5
    bad = [
        ({"missing_fraction": 0.3}, "needs missing_pattern"),
        ({"missing_pattern": "random", "missing_fraction": 1.0}, r"must be in \(0, 1\)"),
        ({"missing_pattern": "random", "missing_fraction": 0.0}, r"must be in \(0, 1\)"),
        ({"missing_pattern": "stripes"}, "unknown missing-data pattern"),
        ({"missing_pattern": "random", "architecture": "m2"}, "cannot go with architecture m2"),
    ]
    for settings, message in bad:
        with pytest.raises(ConfigError, match=message):
            check_missing(RunConfig(**settings))
    with pytest.raises(ConfigError, match="missing_fraction must be a number in"):
        RunConfig.from_settings({"missing_pattern": "random", "missing_fraction": 2})
    with pytest.raises(ConfigError, match="missing_pattern must be one of random"):
        RunConfig.from_settings({"missing_pattern": "half"})
    config = RunConfig.from_settings(HOLES)
    assert RunConfig.from_dict(config.to_dict()) == config


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def test_cli_trains_with_holes_and_reports_log_p_of_the_observed(tmp_path: Path, capsys):
    run = tmp_path / "run"
    flags = ["--epochs", "2", "--hidden", "8", "--latent-dim", "2", "--num-samples", "20"]
    flags += ["--missing-pattern", "random", "--missing-fraction", "0.5"]
    code = main(["train", *flags, "--no-progress", "--no-plots", "--out", str(run)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test log p(x_obs) (IS, K=20)" in captured.out
    assert "gap log p(x_obs) - ELBO" in captured.out
    metrics = _metrics(run)
    assert metrics["missing_data"]["pattern"] == "random"
    assert metrics["missing_data"]["fraction"] == 0.5
    assert metrics["missing_data"]["observed_fraction"]["train"] == pytest.approx(0.5)
    test = metrics["test"]
    assert test["estimand"] == "log p(x_obs)" and test["observed_fraction"] == 0.5
    stored = json.loads((run / "config.json").read_text())
    assert stored["missing_pattern"] == "random" and stored["missing_fraction"] == 0.5
    # the recorded test figure is log p(x_obs) under the run's own, reproducible mask
    config, model, guide, _ = load_run(run)
    data = run_split(config, "test").data
    mask = missing_mask(config, data, "test")
    assert float(mask.float().mean()) == 0.5
    estimate = log_likelihood(model, guide, data, mask=mask, num_samples=20, seed=config.seed)
    assert float(estimate.log_likelihood.mean()) == pytest.approx(test["log_likelihood"])
    complete = log_likelihood(model, guide, data, num_samples=20, seed=config.seed)
    assert float(complete.log_likelihood.mean()) < test["log_likelihood"] - 10


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--missing-pattern", "random", "--missing-fraction", "1.5"],
            r"missing_fraction .*\(0, 1\)",
        ),
        (["--missing-fraction", "0.3"], "needs missing_pattern"),
        (["--architecture", "m2", "--missing-pattern", "patch"], "cannot go with architecture m2"),
    ],
)
def test_cli_refuses_bad_missing_settings(tmp_path: Path, capsys, flags, message):
    code = main(["train", *flags, "--epochs", "1", "--no-progress", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.startswith("ppl-vae: error:") and re.search(message, err), err
    assert not (tmp_path / "r").exists()


def test_config_file_sets_the_missing_data(tmp_path: Path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(
        "epochs = 1\nhidden = [8]\nlatent_dim = 2\nnum_samples = 4\n"
        'missing_pattern = "bottom-half"\nmissing_fraction = 0.25\n'
    )
    run = tmp_path / "run"
    code = main(
        ["train", "--config", str(config), "--no-progress", "--no-plots", "--out", str(run)]
    )
    assert code == 0, capsys.readouterr().err
    assert _metrics(run)["missing_data"]["observed_fraction"]["test"] == 0.75


def test_resumed_run_with_holes_matches_an_uninterrupted_one(tmp_path: Path):
    full, run = tmp_path / "full", tmp_path / "run"
    train_run(SMALL, full, progress=False)
    train_run(replace(SMALL, epochs=1), run, progress=False)
    metrics = resume_run(run, epochs=3, progress=False)
    _assert_same_params(run, full)
    _assert_same_history(run, full)
    assert metrics["test"] == _metrics(full)["test"]
    assert metrics["missing_data"] == _metrics(full)["missing_data"]


def _data_parallel_worker(rank: int, port: int, out: str) -> None:
    """One rank: fit with holes, then with other values in the holes; rank 0 saves both."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD_SIZE)
    try:
        x = _data()
        mask = hide(x.shape, "random", fraction=0.4, seed=1)
        results = []
        for data in (x, torch.where(mask, x, 1 - x)):
            model, guide = _pair()
            fit(
                model,
                guide,
                data,
                train_mask=mask,
                epochs=2,
                batch_size=BATCH_SIZE,
                lr=LR,
                seed=SEED,
                progress=False,
            )
            results.append(_params(model, guide))
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def test_data_parallel_shards_the_mask_with_the_data(tmp_path: Path):
    # A mask sliced with other rows than the data would let the values in the holes into
    # the loss: the two fits would differ.
    out = tmp_path / "ranks.pt"
    mp.spawn(_data_parallel_worker, args=(_free_port(), str(out)), nprocs=WORLD_SIZE, join=True)
    holes, other_values = torch.load(out, weights_only=True)
    initial = _params(*_pair())
    for name, value in holes.items():
        assert torch.equal(value, other_values[name]), name
    assert any(not torch.equal(value, initial[name]) for name, value in holes.items())
