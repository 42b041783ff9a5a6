"""The ``ppl-vae`` command line, end to end on the digits data with tiny settings."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppl_vae.checkpoint import load_checkpoint
from ppl_vae.cli import main
from ppl_vae.data import load_dataset

REPO = Path(__file__).resolve().parents[1]

#: Small enough for about a second of training on 2 cores.
TINY = ["--epochs", "2", "--hidden", "16", "--latent-dim", "2", "--num-samples", "20"]
TINY += ["--no-progress"]

NUMBER = r"(-?\d+\.\d{3})"


def _parse_report(text: str, split: str = "test", k: int = 20) -> dict[str, float]:
    """The three numbers of the report table (rounded to 3 decimals as printed)."""
    patterns = {
        "elbo": rf"^{split} ELBO\s+{NUMBER}$",
        "log_likelihood": rf"^{split} log p\(x\) \(IS, K={k}\)\s+{NUMBER} ± {NUMBER}$",
        "gap": rf"^gap log p\(x\) - ELBO\s+{NUMBER}$",
    }
    values = {}
    for key, pattern in patterns.items():
        match = re.search(pattern, text, flags=re.MULTILINE)
        assert match is not None, f"no line matching {pattern!r} in:\n{text}"
        values[key] = float(match.group(1))
        if key == "log_likelihood":
            values["log_likelihood_stderr"] = float(match.group(2))
    return values


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One quickstart run shared by the tests of this module (copy it before changing it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["train", *TINY, "--out", str(out)])
    assert code == 0
    return out, stdout.getvalue()


@pytest.fixture
def run_copy(trained_run: tuple[Path, str], tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run[0], copy)
    return copy


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


# ------------------------------------------------------------------------------- train


def test_train_writes_run_directory(trained_run: tuple[Path, str]) -> None:
    out, _ = trained_run
    names = sorted(p.name for p in out.iterdir())
    assert names == ["checkpoint.pt", "config.json", "metrics.json", "plots"]


#: What `train` and `plot` write for digits with a 2-D latent: every figure applies.
FIGURES = [
    "training_curves.png",
    "samples_mean.png",
    "samples_draw.png",
    "reconstructions.png",
    "latent_space.png",
    "manifold.png",
    "interpolation.png",
    "latent_arithmetic.png",
]


def _decodes(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        return image.size


def test_train_writes_the_pictures_and_lists_them(trained_run: tuple[Path, str]) -> None:
    out, stdout = trained_run
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(FIGURES)
    assert all(min(_decodes(out / "plots" / name)) > 16 for name in FIGURES)
    assert f"pictures in {out / 'plots'}: " + ", ".join(FIGURES) in stdout


def test_no_plots_writes_none(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--num-samples", "2", "--no-plots", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(args) == 0
    assert not (out / "plots").exists()
    assert "pictures" not in stdout.getvalue()


def test_plot_rewrites_the_same_pictures_elsewhere(
    trained_run: tuple[Path, str], tmp_path: Path
) -> None:
    out, _ = trained_run
    target = tmp_path / "pictures"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main(["plot", str(out), "--out", str(target), "--num", "16"]) == 0
    assert sorted(p.name for p in target.iterdir()) == sorted(FIGURES)
    assert f"pictures in {target}" in stdout.getvalue()
    # the same seed and settings as `train` give the same files
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["plot", str(out), "--out", str(tmp_path / "again")]) == 0
    for name in FIGURES:
        assert (tmp_path / "again" / name).read_bytes() == (out / "plots" / name).read_bytes()


def test_plot_of_a_missing_run_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert "ppl-vae: error:" in capsys.readouterr().err


def test_impute_writes_errors_and_picture(trained_run: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = trained_run
    target = tmp_path / "imputed"
    argv = ["impute", str(out), "--num-data", "8", "--num-particles", "50", "--refine", "0"]
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert main([*argv, "--pattern", "bottom-half", "--out", str(target)]) == 0
    report = json.loads((target / "imputation.json").read_text())
    assert report["pattern"] == "bottom-half" and report["num_data"] == 8
    assert min(_decodes(target / "imputation.png")) > 16
    assert "mean imputation" in stdout.getvalue()
    config = json.loads((out / "config.json").read_text())
    assert config["format"] == "ppl_vae.run"
    assert config["dataset"] == "digits"
    assert config["epochs"] == 2 and config["latent_dim"] == 2 and config["hidden"] == [16]
    assert config["num_samples"] == 20
    model = config["model"]
    assert model["data_shape"] == [64]
    assert model["likelihood"] == "binomial"  # the dataset's default likelihood
    assert model["likelihood_options"] == {"total_count": 16}
    assert model["input_scale"] == pytest.approx(1 / 16)
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["epoch"] == 2
    assert payload["optimizer"], "the per-epoch checkpoint must carry the optimizer state"


def test_train_metrics_and_report(trained_run: tuple[Path, str]) -> None:
    out, stdout = trained_run
    metrics = _metrics(out)
    assert metrics["dataset"] == "digits"
    history = metrics["training"]["history"]
    assert [record["epoch"] for record in history] == [1, 2]
    for record in history:
        assert torch.isfinite(torch.tensor([record["train_elbo"], record["valid_elbo"]])).all()

    test = metrics["test"]
    assert test["num_samples"] == 20
    assert test["num_data"] == len(load_dataset("digits").test)
    # log mean exp(log w) >= mean(log w) for every datapoint (Jensen), so also on average.
    assert test["elbo"] <= test["log_likelihood"]
    assert test["gap"] >= 0
    assert test["gap"] == pytest.approx(test["log_likelihood"] - test["elbo"], rel=1e-9)
    assert 1.0 - 1e-9 <= test["ess_min"] <= test["ess_mean"] <= 20.0
    assert test["log_likelihood_stderr"] > 0

    printed = _parse_report(stdout)
    for key, value in printed.items():
        assert value == pytest.approx(test[key], abs=6e-4), key
    assert f"mean over {test['num_data']} datapoints" in stdout
    assert f"run directory: {out}" in stdout


def test_train_normal_likelihood_on_digits(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "normal"
    assert main(["train", *TINY, "--likelihood", "normal", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["likelihood"] == "normal"
    assert config["model"]["likelihood"] == "normal"
    assert "total_count" not in config["model"]["likelihood_options"]
    test = _metrics(out)["test"]
    printed = _parse_report(capsys.readouterr().out)
    assert printed["elbo"] == pytest.approx(test["elbo"], abs=6e-4)
    assert test["elbo"] <= test["log_likelihood"]


def test_train_total_count_option_and_zero_epochs(tmp_path: Path) -> None:
    out = tmp_path / "tc"
    args = ["train", *TINY, "--epochs", "0", "--num-samples", "1", "--total-count", "20"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main([*args, "--out", str(out)]) == 0
    model = json.loads((out / "config.json").read_text())["model"]
    assert model["likelihood_options"] == {"total_count": 20}
    # with no epoch to checkpoint, an untrained but loadable checkpoint is still left behind
    payload = load_checkpoint(out / "checkpoint.pt")
    assert payload["epoch"] == 0 and payload["optimizer"] is None
    assert _metrics(out)["training"]["history"] == []


# ---------------------------------------------------------------------------- evaluate


def test_evaluate_reproduces_training_test_metrics(
    run_copy: Path, capsys: pytest.CaptureFixture
) -> None:
    """Same K and seed as training: the reloaded checkpoint gives the very same numbers."""
    assert main(["evaluate", str(run_copy)]) == 0
    metrics = _metrics(run_copy)
    (entry,) = metrics["evaluations"]
    for key in ("elbo", "log_likelihood", "log_likelihood_stderr", "gap", "ess_mean"):
        assert entry[key] == pytest.approx(metrics["test"][key], rel=1e-10), key
    assert _parse_report(capsys.readouterr().out)["elbo"] == pytest.approx(entry["elbo"], abs=6e-4)


def test_evaluate_appends_and_is_deterministic(
    run_copy: Path, capsys: pytest.CaptureFixture
) -> None:
    before = _metrics(run_copy)
    assert main(["evaluate", str(run_copy), "--num-samples", "30"]) == 0
    first_out = capsys.readouterr().out
    assert main(["evaluate", str(run_copy), "--num-samples", "30"]) == 0
    second_out = capsys.readouterr().out
    assert first_out == second_out
    printed = _parse_report(first_out, k=30)

    metrics = _metrics(run_copy)
    # what training wrote is kept, the evaluations are appended
    assert metrics["test"] == before["test"]
    assert metrics["training"] == before["training"]
    first, second = metrics["evaluations"]
    assert first == second
    assert first["num_samples"] == 30
    assert first["dataset"] == "digits" and first["split"] == "test"
    assert first["epoch"] == 2 and first["seed"] == 0
    assert first["elbo"] <= first["log_likelihood"]
    for key, value in printed.items():
        assert value == pytest.approx(first[key], abs=6e-4), key

    # another seed gives other draws, so the seed is really used
    assert main(["evaluate", str(run_copy), "--num-samples", "30", "--seed", "1"]) == 0
    third = _metrics(run_copy)["evaluations"][-1]
    assert third["seed"] == 1
    assert third["log_likelihood"] != first["log_likelihood"]


def test_evaluate_other_split(run_copy: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["evaluate", str(run_copy), "--split", "valid", "--num-samples", "5"]) == 0
    out = capsys.readouterr().out
    _parse_report(out, split="valid", k=5)
    assert "test ELBO" not in out
    entry = _metrics(run_copy)["evaluations"][-1]
    assert entry["split"] == "valid"
    assert entry["num_data"] == len(load_dataset("digits").valid)


def test_module_entry_point_subprocess(run_copy: Path) -> None:
    """``python -m ppl_vae.cli`` works as a program: exit code, stdout and metrics."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-m", "ppl_vae.cli", "evaluate", str(run_copy), "--num-samples", "7"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        cwd=run_copy.parent,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    printed = _parse_report(result.stdout, k=7)
    entry = _metrics(run_copy)["evaluations"][-1]
    assert entry["num_samples"] == 7
    assert printed["log_likelihood"] == pytest.approx(entry["log_likelihood"], abs=6e-4)
    assert "Traceback" not in result.stderr


# -------------------------------------------------------------------------------- help


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (
            "train",
            [
                "--dataset",
                "--likelihood",
                "--latent-dim",
                "--hidden",
                "--epochs",
                "--batch-size",
                "--lr",
                "--seed",
                "--out",
                "--data-dir",
                "--total-count",
                "--num-samples",
            ],
        ),
        ("evaluate", ["RUN_DIR", "--num-samples", "--seed", "--dataset", "--data-dir", "--split"]),
    ],
)
def test_help(command: str, flags: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in flags:
        assert flag in text, f"{command} --help does not mention {flag}"
    if command == "train":
        assert "digits" in text and "binomial" in text  # choices are listed


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "train" in text and "evaluate" in text


def test_missing_command_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hidden", "0"], "hidden sizes must be positive integers"),
        (["--hidden", "a,b"], "expected sizes like 256,256"),
        (["--latent-dim", "0"], "expected an integer >= 1, got '0'"),
        (["--batch-size", "x"], "expected an integer >= 1, got 'x'"),
        (["--likelihood", "gaussian"], "invalid choice: 'gaussian'"),
    ],
)
def test_train_argument_errors(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *args, "--out", str(tmp_path / "never")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
