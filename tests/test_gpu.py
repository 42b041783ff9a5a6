"""``--device cuda``: training, evaluation, resumption and diagnostics on a GPU, checked
against the same work on the CPU. Skipped without CUDA; select with ``pytest -m gpu``.

A GPU run starts from the CPU run's initial weights (models are built on the CPU, then
moved) and shuffles the same way, but draws its latent samples from the GPU's random
stream, so the two agree up to Monte Carlo noise, not bit for bit.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from ppl_vae.build import build_vae
from ppl_vae.checkpoint import load_checkpoint
from ppl_vae.cli import main
from ppl_vae.device import move_to_device, resolve_device
from ppl_vae.diagnostics.report import DiagnoseSettings, diagnose_run
from ppl_vae.estimators import log_likelihood
from ppl_vae.importance import rng_scope
from ppl_vae.run import RunConfig, evaluate_run, load_run, resume_run, train_run
from ppl_vae.training import fit
from tests.test_device import CASES, _forward_everything

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is False)",
    ),
]

#: Three epochs on the digits: enough to move well away from the initial weights.
CONFIG = RunConfig(
    epochs=3, hidden=(32,), latent_dim=4, num_samples=200, batch_size=128, lr=1e-2, seed=0
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict]]:
    """The same run trained on the CPU and on the GPU."""
    root = tmp_path_factory.mktemp("gpu")
    return {
        device: (root / device, train_run(CONFIG, root / device, progress=False, device=device))
        for device in ("cpu", "cuda")
    }


def _finite(summary: dict) -> bool:
    return all(math.isfinite(summary[key]) for key in ("elbo", "log_likelihood", "gap"))


def test_resolve_cuda_names_the_current_gpu():
    device = resolve_device("cuda")
    assert device == torch.device("cuda", torch.cuda.current_device())
    assert resolve_device("auto") == device
    assert resolve_device(f"cuda:{torch.cuda.device_count() - 1}").index is not None


def test_training_on_cuda_is_finite_and_close_to_the_cpu_run(runs):
    (_, cpu), (gpu_dir, gpu) = runs["cpu"], runs["cuda"]
    assert _finite(gpu["test"]) and _finite(cpu["test"])
    history = [record["train_elbo"] for record in gpu["training"]["history"]]
    assert all(math.isfinite(v) for v in history) and history[-1] > history[0]
    # same initial weights and minibatches, different latent draws: a few percent at most
    for key in ("elbo", "log_likelihood"):
        assert gpu["test"][key] == pytest.approx(cpu["test"][key], rel=0.03), key
    # the checkpoint holds CUDA tensors and is read onto the CPU
    payload = load_checkpoint(gpu_dir / "checkpoint.pt")
    assert all(t.device.type == "cpu" for t in payload["model"].values())
    assert "device" not in json.loads((gpu_dir / "config.json").read_text())


def test_one_checkpoint_evaluates_alike_on_either_device(runs, tmp_path):
    for trained_on in ("cpu", "cuda"):
        run = runs[trained_on][0]
        on_cpu = evaluate_run(run, device="cpu", num_data=200)
        on_gpu = evaluate_run(run, device="cuda", num_data=200)
        assert on_cpu["device"] == "cpu" and on_gpu["device"].startswith("cuda:")
        assert _finite(on_gpu)
        # the same weights, K = 200 draws per datapoint on each device: MC noise only
        for key in ("elbo", "log_likelihood"):
            assert on_gpu[key] == pytest.approx(on_cpu[key], abs=0.2), (trained_on, key)


def test_load_run_puts_every_tensor_on_the_gpu(runs):
    device = resolve_device("cuda")
    _, model, guide, _ = load_run(runs["cpu"][0], device="cuda")
    for module in (model, guide):
        assert {t.device for t in [*module.parameters(), *module.buffers()]} == {device}


def test_resume_moves_between_devices(runs, tmp_path):
    """A run interrupted on the CPU continues on the GPU, and the other way round; the
    optimizer state follows the parameters."""
    for first, then in (("cpu", "cuda"), ("cuda", "cpu")):
        out = tmp_path / f"{first}-{then}"
        train_run(replace(CONFIG, epochs=2), out, progress=False, device=first)
        metrics = resume_run(out, epochs=3, progress=False, device=then)
        assert [r["epoch"] for r in metrics["training"]["history"]] == [1, 2, 3]
        assert _finite(metrics["test"])
        uninterrupted = runs["cpu"][1]["test"]
        for key in ("elbo", "log_likelihood"):
            assert metrics["test"][key] == pytest.approx(uninterrupted[key], rel=0.03), key
        assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 3


def test_diagnose_psis_on_cuda_matches_the_cpu(runs, tmp_path):
    settings = DiagnoseSettings(
        num_data=100, num_samples=200, gap_points=0, mcmc_points=0, ppc_replicates=4
    )
    reports = {
        device: diagnose_run(
            runs["cuda"][0], out_dir=tmp_path / device, settings=settings, device=device
        )
        for device in ("cpu", "cuda")
    }
    gpu, cpu = reports["cuda"], reports["cpu"]
    assert gpu["device"].startswith("cuda:") and cpu["device"] == "cpu"
    psis = gpu["psis"]
    assert psis["num_data"] == 100 and sum(psis["bands"].values()) == 100
    assert psis["khat_max"] is not None and math.isfinite(psis["khat_max"])
    for key in ("log_likelihood", "psis_log_likelihood", "elbo"):
        assert psis[key] == pytest.approx(cpu["psis"][key], abs=0.3), key
    assert Path(gpu["files"]["khat"]).is_file()


def test_diagnose_gaps_and_mcmc_on_cuda(runs, tmp_path):
    settings = DiagnoseSettings(
        num_data=20,
        num_samples=50,
        gap_points=2,
        gap_steps=20,
        gap_samples=50,
        mcmc_points=1,
        mcmc_chains=2,
        mcmc_samples=20,
        mcmc_warmup=20,
        ppc_replicates=2,
    )
    report = diagnose_run(runs["cuda"][0], out_dir=tmp_path, settings=settings, device="cuda")
    assert math.isfinite(report["gaps"]["approximation_gap"])
    assert math.isfinite(report["mcmc"]["max_r_hat"])
    assert len(report["mcmc"]["split_rows"]) == 1


def test_cli_trains_on_cuda_and_evaluates_on_the_cpu(tmp_path):
    out = tmp_path / "run"
    tiny = ["--epochs", "1", "--hidden", "16", "--latent-dim", "2", "--num-samples", "20"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", *tiny, "--no-progress", "--out", str(out), "--device", "cuda"]) == 0
        assert main(["evaluate", str(out), "--device", "cpu", "--num-data", "50"]) == 0
        assert main(["train", "--resume", str(out), "--epochs", "2", "--device", "cuda"]) == 0
    entry = json.loads((out / "metrics.json").read_text())["evaluations"][-1]
    assert entry["device"] == "cpu"


def test_rng_scope_forks_and_seeds_the_gpu_generator():
    device = resolve_device("cuda")
    torch.cuda.manual_seed(123)
    state = torch.cuda.get_rng_state(device)
    with rng_scope(device, 7):
        first = torch.randn(5, device=device)
    assert torch.equal(torch.cuda.get_rng_state(device), state)  # the caller's stream is kept
    with rng_scope(device, 7):
        again = torch.randn(5, device=device)
    with rng_scope(device, 8):
        other = torch.randn(5, device=device)
    assert torch.equal(first, again) and not torch.equal(first, other)


@pytest.mark.parametrize(("spec", "x", "y"), CASES)
def test_every_component_trains_and_is_evaluated_on_cuda(spec, x, y):
    device = resolve_device("cuda")
    torch.manual_seed(0)
    model, guide = build_vae(spec)
    move_to_device(device, model, guide)
    with torch.no_grad():
        _forward_everything(model, guide, x.to(device), None if y is None else y.to(device))
    # data given on the CPU: the engine moves it to the model's device
    result = fit(model, guide, x, train_labels=y, epochs=1, batch_size=3, progress=False)
    assert all(math.isfinite(v) for v in result.step_objective)
    estimate = log_likelihood(model, guide, x, y=y, num_samples=8, seed=0)
    assert estimate.log_likelihood.device == device
    assert torch.isfinite(estimate.log_likelihood).all()
    assert (estimate.log_likelihood >= estimate.elbo - 1e-4).all()  # Jensen, same draws
