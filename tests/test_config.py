"""Run settings from TOML files and the command line: the same names everywhere."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ppl_vae.cli import build_parser, main
from ppl_vae.cli import settings_from_args as settings_from
from ppl_vae.config_file import parse_option, read_config_file
from ppl_vae.errors import ConfigError
from ppl_vae.run import RunConfig
from tests.test_cli_zoo import SMALL

TOML = """
dataset = "digits"
likelihood = "binomial"
latent_dim = 3
hidden = [8]
epochs = 1
batch_size = 256
num_samples = 4

[likelihood_options]
total_count = 20
"""


def _args(*argv: str):
    return build_parser().parse_args(["train", *argv])


def test_config_file_values_and_flag_overrides(tmp_path: Path):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    config = RunConfig.from_settings(settings_from(_args("--config", str(path))))
    assert (config.likelihood, config.latent_dim, config.hidden) == ("binomial", 3, (8,))
    assert config.likelihood_options == {"total_count": 20}
    flags = _args("--config", str(path), "--latent-dim", "5", "--total-count", "30")
    overridden = RunConfig.from_settings(settings_from(flags))
    assert overridden.latent_dim == 5 and overridden.hidden == (8,)
    assert overridden.likelihood_options == {"total_count": 30}
    untouched = RunConfig.from_settings(settings_from(_args()))
    assert untouched == RunConfig()  # no flags, no file: the defaults


def test_options_from_the_command_line():
    args = _args(
        "--prior-option",
        "num_components=4",
        "--prior-option",
        "scale=0.5",
        "--likelihood-option",
        "name=abc",
    )
    settings = settings_from(args)
    assert settings["prior_options"] == {"num_components": 4, "scale": 0.5}
    assert settings["likelihood_options"] == {"name": "abc"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("k=3", ("k", 3)),
        ("k = 2.5", ("k", 2.5)),
        ("flag=true", ("flag", True)),
        ("w=[1, 2]", ("w", [1, 2])),
        ('s="x y"', ("s", "x y")),
        ("s=word", ("s", "word")),
    ],
)
def test_parse_option(text, expected):
    assert parse_option(text) == expected


@pytest.mark.parametrize("text", ["novalue", "=3", "two words=1"])
def test_parse_option_rejects_malformed(text):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_option(text)


def test_bad_config_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="no config file at"):
        read_config_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("latent_dim = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config_file(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("latnt_dim = 3\n")
    with pytest.raises(ConfigError, match=r"unknown run settings \['latnt_dim'\].*latent_dim"):
        RunConfig.from_settings(read_config_file(unknown))


def test_cli_trains_from_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "run.toml"
    path.write_text(TOML)
    out = tmp_path / "run"
    code = main(["train", "--config", str(path), "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["likelihood_options"] == {"total_count": 20}
    assert saved["model"]["latent_dim"] == 3
    assert "test log p(x) (IS, K=4)" in capsys.readouterr().out


def test_cli_reports_a_bad_config_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture):
    path = tmp_path / "run.toml"
    path.write_text("epochs = 'many'\nlatnt = 1\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppl-vae: error: unknown run settings ['latnt']")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("hidden = 8", "setting hidden must be a non-empty list of positive integers"),
        ('hidden = "256,256"', "setting hidden must be a non-empty list"),
        ("hidden = []", "setting hidden must be a non-empty list"),
        ('epochs = "x"', "setting epochs must be an integer >= 0"),
        ("epochs = 1.5", "setting epochs must be an integer >= 0"),
        ('lr = "fast"', "setting lr must be > 0"),
        ("num_samples = 0", "setting num_samples must be a positive integer"),
        ("chunk_size = 0", "setting chunk_size must be a positive integer"),
        ("likelihood_options = 5", "likelihood_options must be a table of option = value"),
        ("model = {}", "'model' is written by ppl-vae"),
    ],
)
def test_bad_config_values_fail_before_training(tmp_path, capsys, line, message):
    path = tmp_path / "run.toml"
    path.write_text(line + "\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_label_column_index_may_be_negative():
    args = _args("--label-column", "-1")
    assert settings_from(args)["label_column"] == -1
    assert settings_from(_args("--label-column", "kind"))["label_column"] == "kind"


def test_vamp_encoder_option_is_refused():
    from ppl_vae.build import ModelSpec, build_vae

    spec = ModelSpec(data_shape=(4,), prior="vamp", prior_options={"data_shape": [4]})
    with pytest.raises(ConfigError, match="takes \\['data_shape'\\] from the model itself"):
        build_vae(spec)


def test_runs_on_own_data_work_from_any_directory(tmp_path, capsys, monkeypatch):
    import numpy as np

    monkeypatch.chdir(tmp_path)
    np.save("counts.npy", np.random.default_rng(0).poisson(2.0, size=(40, 3)))
    assert main(["train", "--data", "counts.npy", *SMALL, "--out", "run"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"] == str(tmp_path / "counts.npy")
    monkeypatch.chdir("/")
    assert main(["evaluate", str(tmp_path / "run")]) == 0, capsys.readouterr().err


def test_evaluate_train_split_of_a_dynamically_binarized_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--binarize", "dynamic", *SMALL, "--out", str(out)]) == 0
    code = main(["evaluate", str(out), "--split", "train"])
    assert code == 0, capsys.readouterr().err
    again = main(["evaluate", str(out), "--split", "train"])
    assert again == 0
    evaluations = json.loads((out / "metrics.json").read_text())["evaluations"]
    assert evaluations[0]["log_likelihood"] == evaluations[1]["log_likelihood"]  # seeded
