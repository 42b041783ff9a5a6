"""``ppl-vae train --architecture m2 --num-labelled N``: the run directory, its accuracy
fields, agreement with the Python API for the same seed, resuming, ``ppl-vae evaluate``,
log p(x) with the label summed out, and clear errors. Digits, tiny networks, 2 epochs."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch

from ppl_vae import ModelSpec, log_likelihood
from ppl_vae.checkpoint import load_checkpoint
from ppl_vae.cli import main
from ppl_vae.data import load_dataset
from ppl_vae.run import RunConfig, evaluate_run, train_run
from ppl_vae.seeding import derive_seed
from ppl_vae.semi_supervised import (
    accuracy,
    balanced_labelled_split,
    build_m2,
    fit_semi_supervised,
    log_likelihood_summing_labels,
)
from tests.test_semi_supervised import tiny

pytestmark = pytest.mark.filterwarnings("ignore:TraceEnum_ELBO found no sample sites")

SETTINGS = {"epochs": 2, "hidden": (16,), "latent_dim": 2, "num_samples": 5, "batch_size": 128}
LABELS, ALPHA, SEED = 30, 20.0, 3
TINY = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--num-samples", "5"]
TINY += ["--batch-size", "128", "--seed", str(SEED), "--no-progress", "--no-plots"]
M2 = ["--architecture", "m2", "--num-labelled", str(LABELS), "--alpha", str(ALPHA)]


def _main(args: list[str]) -> tuple[int, str]:
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(args)
    return code, stdout.getvalue()


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def m2_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("m2") / "run"
    code, stdout = _main(["train", *M2, *TINY, "--out", str(out)])
    assert code == 0
    return out, stdout


@pytest.fixture
def run_copy(m2_run: tuple[Path, str], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(m2_run[0], copy)
    return copy


# ----------------------------------------------------------------------------- train


def test_train_writes_a_run_with_accuracies(m2_run, digits) -> None:
    out, stdout = m2_run
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "config.json", "metrics.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == config["model"]["architecture"] == "m2"
    assert config["num_labelled"] == LABELS and config["alpha"] == ALPHA
    assert config["model"]["num_classes"] == 10
    metrics = _metrics(out)
    history = metrics["training"]["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    for record in history:
        assert 0 <= record["valid_accuracy"] <= 1 and 0 <= record["test_accuracy"] <= 1
        assert record["unlabelled_elbo"] < 0 and record["classification_loss"] > 0
    test = metrics["test"]
    assert test["accuracy"] == history[-1]["test_accuracy"]
    assert test["num_data"] == 359 and test["num_samples"] == 5
    assert test["elbo"] <= test["log_likelihood"] < 0
    labelled, unlabelled = balanced_labelled_split(digits.train_labels, LABELS, seed=SEED)
    record = metrics["semi_supervised"]
    assert record["labelled_rows"] == labelled.tolist() and record["split_seed"] == SEED
    assert record["num_unlabelled"] == unlabelled.numel() == 1258 - LABELS
    assert record["labelled_per_class"] == [3] * 10 and record["alpha"] == ALPHA
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 2
    assert re.search(rf"^test accuracy, argmax q\(y\|x\) +{test['accuracy']:.4f}$", stdout, re.M)
    assert "test log p(x) (IS, K=5, y ~ q(y|x))" in stdout and "labels: 30 of 1258" in stdout


def test_cli_run_matches_the_python_api(m2_run, digits) -> None:
    """The same settings and seed through build_m2 and fit_semi_supervised give the same
    parameters, history and test accuracy as the command line."""
    out, _ = m2_run
    labelled, unlabelled = balanced_labelled_split(digits.train_labels, LABELS, seed=SEED)
    spec = ModelSpec.for_dataset(digits, architecture="m2", latent_dim=2, hidden=(16,))
    pyro.clear_param_store()
    torch.manual_seed(SEED)
    model, guide = build_m2(spec)
    result = fit_semi_supervised(
        model, guide, digits.train[unlabelled], digits.train[labelled],
        digits.train_labels[labelled], valid=(digits.valid, digits.valid_labels),
        test=(digits.test, digits.test_labels), epochs=2, batch_size=128, lr=1e-3,
        alpha=ALPHA, seed=SEED, progress=False,
    )  # fmt: skip
    history = _metrics(out)["training"]["history"]
    for ours, theirs in zip(result.history, history, strict=True):
        for key in ("unlabelled_elbo", "labelled_elbo", "valid_accuracy", "test_accuracy"):
            assert getattr(ours, key) == theirs[key], key
    saved = load_checkpoint(out / "checkpoint.pt")
    for role, module in (("model", model), ("guide", guide)):
        for name, value in module.state_dict().items():
            assert torch.equal(value, saved[role][name]), name
    assert accuracy(guide, digits.test, digits.test_labels) == _metrics(out)["test"]["accuracy"]


def test_resume_continues_as_an_uninterrupted_run(tmp_path: Path, m2_run) -> None:
    out = tmp_path / "resumed"
    one_epoch = ["--epochs", "1", *TINY[2:]]
    assert _main(["train", *M2, *one_epoch, "--out", str(out)])[0] == 0
    code, stdout = _main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"])
    assert code == 0 and "test accuracy" in stdout
    whole, resumed = (
        load_checkpoint(m2_run[0] / "checkpoint.pt"),
        load_checkpoint(out / "checkpoint.pt"),
    )
    for role in ("model", "guide"):
        for name, value in whole[role].items():
            assert torch.equal(value, resumed[role][name]), name

    def without_seconds(run: Path) -> list[dict]:
        history = _metrics(run)["training"]["history"]
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert without_seconds(out) == without_seconds(m2_run[0])
    assert _metrics(out)["semi_supervised"] == _metrics(m2_run[0])["semi_supervised"]


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_reports_accuracy_and_log_px(run_copy, digits) -> None:
    code, stdout = _main(["evaluate", str(run_copy), "--num-samples", "4", "--num-data", "30"])
    assert code == 0
    assert "test accuracy, argmax q(y|x)" in stdout and "K=4, y ~ q(y|x)" in stdout
    (summary,) = _metrics(run_copy)["evaluations"]
    assert summary["num_data"] == 30 and summary["num_samples"] == 4
    # The same numbers from the Python API: the run's pair, the same rows and seed.
    from ppl_vae.run import load_run

    _, model, guide, _ = load_run(run_copy)
    rows = torch.arange(30) * 359 // 30
    x, y = digits.test[rows], digits.test_labels[rows]
    assert summary["accuracy"] == accuracy(guide, x, y)
    estimate = log_likelihood(model, guide, x, num_samples=4, seed=SEED)
    assert summary["log_likelihood"] == pytest.approx(float(estimate.log_likelihood.mean()))
    valid = evaluate_run(run_copy, split="valid", num_samples=2)
    assert valid["split"] == "valid" and 0 <= valid["accuracy"] <= 1


def test_summing_labels_is_the_sum_of_the_per_class_estimates(float64) -> None:
    """log p(x) = log sum_y p(x, y): each p(x, y) is the engine's estimate given y, and the
    ELBO is sum_y q(y | x) [ELBO(x, y) - log q(y | x)]."""
    model, guide = tiny()
    x = torch.randn(6, 4)
    estimate = log_likelihood_summing_labels(model, guide, x, num_samples=50, seed=7)
    per_class = [
        log_likelihood(
            model, guide, x, y=torch.full((6,), c), num_samples=50, seed=derive_seed(7, c)
        )
        for c in range(3)
    ]
    joint = torch.stack([e.log_likelihood for e in per_class])
    torch.testing.assert_close(estimate.log_likelihood, joint.logsumexp(0))
    log_q = guide.classify(x).logits.log_softmax(-1).T.detach()
    elbo = (log_q.exp() * (torch.stack([e.elbo for e in per_class]) - log_q)).sum(0)
    torch.testing.assert_close(estimate.elbo, elbo)
    assert bool((estimate.ess >= 1).all()) and bool((estimate.ess <= 150 + 1e-9).all())
    assert bool((estimate.log_likelihood > estimate.elbo).all())
    # Against the plain estimator, which samples y from q(y | x): the same log p(x).
    many = log_likelihood_summing_labels(model, guide, x, num_samples=4000, seed=1)
    sampled = log_likelihood(model, guide, x, num_samples=12000, seed=1)
    spread = 4 * (many.stderr.pow(2) + sampled.stderr.pow(2)).sqrt() + 0.02
    assert bool(((many.log_likelihood - sampled.log_likelihood).abs() < spread).all())


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--architecture", "m2"], "--architecture m2 needs --num-labelled N"),
        (["--num-labelled", "30"], "--num-labelled (setting num_labelled) only go with"),
        (["--alpha", "2"], "--alpha (setting alpha) only go with --architecture m2"),
        ([*M2[:3], "5"], "num_labelled=5 is fewer than one label per class (10 classes)"),
        ([*M2[:3], "1258"], "--num-labelled 1258 leaves no unlabelled data"),
        ([*M2[:3], "5000"], "the training split of digits has 1258 datapoints"),
        ([*M2, "--objective", "iwae"], "M2 runs cannot take objective 'iwae'"),
        ([*M2, "--beta", "0.5"], "M2 runs cannot take beta or KL warm-up"),
        ([*M2, "--warmup-epochs", "2"], "M2 runs cannot take beta or KL warm-up"),
        ([*M2, "--binarize", "dynamic"], "M2 runs cannot take --binarize dynamic"),
        ([*M2, "--prior", "vamp"], "prior 'vamp' reads the unconditional encoder"),
    ],
)
def test_errors_are_clear(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    assert main(["train", *args, *TINY, "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ppl-vae: error: ") and message in error, error
    assert not out.exists()  # nothing written


def test_data_without_labels_is_refused(tmp_path: Path, capsys) -> None:
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).integers(0, 2, (40, 6)).astype(np.float32))
    assert main(["train", *M2, *TINY, "--data", str(data), "--out", str(tmp_path / "r")]) == 2
    assert (
        "M2 (semi-supervised) needs labels and dataset 'user:x.npy' has none"
        in capsys.readouterr().err
    )


def test_negative_alpha_is_refused_by_the_parser_and_the_config(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", *M2[:3], "30", "--alpha", "-1"])
    assert "expected a number >= 0" in capsys.readouterr().err
    with pytest.raises(Exception, match="setting alpha must be a number >= 0"):
        RunConfig.from_settings({"architecture": "m2", "num_labelled": 30, "alpha": -1.0})


def test_train_run_from_python(tmp_path: Path) -> None:
    config = RunConfig(architecture="m2", num_labelled=20, **{**SETTINGS, "epochs": 1})
    metrics = train_run(config, tmp_path / "run", progress=False)
    assert 0 <= metrics["test"]["accuracy"] <= 1
    assert len(metrics["semi_supervised"]["labelled_rows"]) == 20
    assert metrics["semi_supervised"]["alpha"] == pytest.approx(0.1 * 1258 / 20)
