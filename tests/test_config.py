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
