"""``ppl-vae diagnose RUN_DIR`` on a trained digits run: the files it writes and what the
JSON report says, as documented in the README."""

from __future__ import annotations

import json
import math

import arviz as az
import pytest
from matplotlib.image import imread

from ppl_vae.cli import main
from ppl_vae.diagnostics import DiagnoseSettings
from ppl_vae.errors import ConfigError

SMALL = [
    "--num-data",
    "30",
    "--num-samples",
    "100",
    "--gap-points",
    "3",
    "--gap-steps",
    "50",
    "--gap-samples",
    "200",
    "--mcmc-points",
    "1",
    "--mcmc-chains",
    "2",
    "--mcmc-samples",
    "30",
    "--mcmc-warmup",
    "30",
    "--ppc-replicates",
    "5",
]


def test_diagnose_writes_report_inference_data_and_pictures(digits_run, capsys):
    code = main(["diagnose", str(digits_run), *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    assert "Pareto k-hat bands" in out and "approximation" in out and "NUTS vs guide" in out
    folder = digits_run / "diagnostics"
    report = json.loads((folder / "report.json").read_text())

    psis = report["psis"]
    assert psis["num_data"] == 30 and psis["num_samples"] == 100
    assert sum(psis["bands"].values()) == 30
    assert len(report["split_rows"]) == 30 and report["split_rows"][1] == 359 // 30

    gaps = report["gaps"]
    assert gaps["num_data"] == 3 and len(gaps["split_rows"]) == 3
    # The decomposition adds up: approximation + amortization = log p(x) - amortized ELBO.
    total = gaps["approximation_gap"] + gaps["amortization_gap"]
    assert math.isclose(total, gaps["log_likelihood"] - gaps["elbo_amortized"], abs_tol=1e-9)

    mcmc = report["mcmc"]
    assert mcmc["num_chains"] == 2 and mcmc["split_rows"][0] in report["split_rows"]
    posterior = az.from_netcdf(folder / "posterior_mcmc.nc").posterior
    assert dict(posterior["z"].sizes) == {"chain": 2, "draw": 30, "obs": 1, "latent": 2}
    guide = az.from_netcdf(folder / "posterior_guide.nc").posterior
    assert guide["z"].dims == ("chain", "draw", "obs", "latent")

    assert set(report["ppc"]) >= {"statistics"}
    assert report["latents"]["active_units"]["num_units"] == 2
    for name in ("khat", "gaps", "pair_0", "ppc", "kl_per_dimension"):
        image = imread(report["files"][name])
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_diagnose_can_skip_the_expensive_parts(digits_run, tmp_path, capsys):
    out = tmp_path / "elsewhere"
    argv = ["diagnose", str(digits_run), "--out", str(out), "--gap-points", "0"]
    assert main([*argv, "--mcmc-points", "0", "--num-data", "20", "--num-samples", "50"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "gaps" not in report and "mcmc" not in report
    assert not (digits_run / "diagnostics").exists()


def test_diagnose_refuses_too_few_importance_samples():
    with pytest.raises(ConfigError, match="at least 21"):
        DiagnoseSettings(num_samples=10)


def test_diagnose_on_a_missing_run(tmp_path, capsys):
    assert main(["diagnose", str(tmp_path / "nothing")]) == 2
    assert "not a run directory" in capsys.readouterr().err
