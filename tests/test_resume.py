"""``ppl-vae train --resume RUN_DIR`` and :func:`ppl_vae.run.resume_run`: a continued run
reaches exactly the parameters of an uninterrupted one and keeps its metrics history."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import ppl_vae.checkpoint
import ppl_vae.run
from ppl_vae.cli import main
from ppl_vae.errors import CheckpointError, ConfigError
from ppl_vae.run import RunConfig, load_run, resume_run, train_run

SMALL = RunConfig(epochs=3, hidden=(8,), latent_dim=2, num_samples=4, batch_size=256, lr=1e-2)

#: Settings beside the default Trace_ELBO: another objective; a KL warm-up that spans the
#: interruption, with dynamic binarization (a per-minibatch random transform).
VARIANTS = {
    "trace_elbo": {},
    "iwae": {"objective": "iwae", "objective_options": {"num_particles": 2}},
    "warmup-dynamic": {"warmup_epochs": 3, "warmup_start": 0.2, "binarize": "dynamic"},
}


def _params(run_dir: Path) -> dict[str, torch.Tensor]:
    _, model, guide, _ = load_run(run_dir)
    return {
        **{f"model.{k}": v for k, v in model.state_dict().items()},
        **{f"guide.{k}": v for k, v in guide.state_dict().items()},
    }


def _assert_same_params(run: Path, reference: Path) -> None:
    got, want = _params(run), _params(reference)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _assert_same_history(run: Path, reference: Path) -> None:
    """Every epoch's record equals the uninterrupted run's, but for its timing."""
    got = _metrics(run)["training"]["history"]
    want = _metrics(reference)["training"]["history"]
    assert [r["epoch"] for r in got] == [1, 2, 3]
    for continued, uninterrupted in zip(got, want, strict=True):
        continued.pop("seconds"), uninterrupted.pop("seconds")
        assert continued == uninterrupted


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each variant trained for 3 epochs in one go."""
    root = tmp_path_factory.mktemp("uninterrupted")
    runs = {}
    for name, settings in VARIANTS.items():
        runs[name] = root / name
        train_run(replace(SMALL, **settings), runs[name], progress=False)
    return runs


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_resumed_run_matches_uninterrupted_run(
    variant: str, full_runs: dict[str, Path], tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train_run(replace(SMALL, epochs=1, **VARIANTS[variant]), run, progress=False)
    first = _metrics(run)
    metrics = resume_run(run, epochs=3, progress=False)
    _assert_same_params(run, full_runs[variant])
    _assert_same_history(run, full_runs[variant])
    assert metrics == _metrics(run)
    assert metrics["training"]["history"][0] == first["training"]["history"][0]
    assert metrics["training"]["seconds"] > first["training"]["seconds"]
    assert metrics["test"]["elbo"] == pytest.approx(_metrics(full_runs[variant])["test"]["elbo"])
    assert json.loads((run / "config.json").read_text())["epochs"] == 3


#: ``SMALL`` after one epoch, written by ppl_vae at commit be4a3cc, before ``fit`` had its own
#: optimizer: trained by ``SVI.step`` with ``pyro.optim.Adam`` (one torch Adam per
#: parameter), with optimizer states keyed by the names the encoder's hidden layers then
#: had in Pyro's parameter store ("0.weight" for "encoder.net.0.weight").
RUN_WITH_PYRO_OPTIM = Path(__file__).parent / "data" / "run_with_pyro_optim"


def test_run_checkpointed_with_a_pyro_optimizer_resumes(
    full_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It continues to the parameters of an uninterrupted run of today, up to the rounding
    of fused Adam against the per-tensor Adam that trained its first epoch."""
    payload = torch.load(RUN_WITH_PYRO_OPTIM / "checkpoint.pt", weights_only=True)
    assert {"0.weight", "0.bias"} <= payload["optimizer"].keys()  # the old names
    want = _params(full_runs["trace_elbo"])

    def resumed(name: str) -> dict[str, torch.Tensor]:
        run = tmp_path / name
        shutil.copytree(RUN_WITH_PYRO_OPTIM, run)
        resume_run(run, epochs=3, progress=False)
        assert [r["epoch"] for r in _metrics(run)["training"]["history"]] == [1, 2, 3]
        return _params(run)

    got = resumed("run")
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=1e-6, msg=name)

    # control: without translating the old names, the encoder's first layer would start
    # with fresh Adam moments, and the run would end elsewhere
    monkeypatch.setattr(ppl_vae.checkpoint, "_renamed", lambda state, model, guide: state)
    cold = resumed("cold")
    assert not torch.allclose(
        cold["guide.encoder.net.0.weight"], want["guide.encoder.net.0.weight"], atol=1e-4
    )


def test_interrupted_run_resumes_where_it_stopped(
    full_runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after epoch 2's checkpoint: the history so far is on disk, and resuming
    (with the config's own epochs) finishes the run as if nothing had happened."""
    save = ppl_vae.run.save_checkpoint

    def save_then_interrupt(path, **state) -> None:
        save(path, **state)
        if state["epoch"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ppl_vae.run, "save_checkpoint", save_then_interrupt)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_run(SMALL, run, progress=False)
    monkeypatch.undo()
    partial = _metrics(run)
    assert "test" not in partial
    assert [r["epoch"] for r in partial["training"]["history"]] == [1, 2]
    resume_run(run, progress=False)
    _assert_same_params(run, full_runs["trace_elbo"])
    _assert_same_history(run, full_runs["trace_elbo"])
    assert "test" in _metrics(run)


def test_evaluations_are_kept(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_run(replace(SMALL, epochs=1), run, progress=False)
    ppl_vae.run.evaluate_run(run, num_samples=2)
    resume_run(run, epochs=2, progress=False)
    metrics = _metrics(run)
    assert [e["epoch"] for e in metrics["evaluations"]] == [1]
    assert [r["epoch"] for r in metrics["training"]["history"]] == [1, 2]


def test_finished_run_and_fewer_epochs_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train_run(replace(SMALL, epochs=1), run, progress=False)
    before = (run / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="nothing to resume"):
        resume_run(run, progress=False)
    with pytest.raises(ConfigError, match="already trained 1 epochs"):
        resume_run(run, epochs=0, progress=False)
    assert (run / "metrics.json").read_text() == before


# ------------------------------------------------------------------ command line

SMALL_FLAGS = ["--hidden", "8", "--latent-dim", "2", "--num-samples", "4", "--batch-size", "256"]
SMALL_FLAGS += ["--lr", "0.01", "--no-progress", "--no-plots"]


def test_cli_resume_matches_uninterrupted_run(
    full_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    assert main(["train", *SMALL_FLAGS, "--epochs", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    code = main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "test log p(x) (IS, K=4)" in captured.out and f"run directory: {run}" in captured.out
    _assert_same_params(run, full_runs["trace_elbo"])
    _assert_same_history(run, full_runs["trace_elbo"])
    assert json.loads((run / "config.json").read_text())["epochs"] == 3

    # the run is now finished: said so plainly, nothing changed
    before = (run / "metrics.json").read_text()
    code = main(["train", "--resume", str(run), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "has finished" in err and "nothing to resume" in err and "--epochs N" in err
    assert (run / "metrics.json").read_text() == before


@pytest.mark.parametrize(
    "flags",
    [
        ["--latent-dim", "4"],
        ["--objective", "iwae"],
        ["--config", "run.toml"],
        ["--out", "elsewhere"],
        ["--guide-option", "num_flows=2"],
        ["--num-particles", "3"],
    ],
)
def test_cli_resume_refuses_flags_that_change_the_run(
    digits_run: Path, capsys: pytest.CaptureFixture, flags: list[str]
) -> None:
    before = (digits_run / "checkpoint.pt").read_bytes()
    code = main(["train", "--resume", str(digits_run), *flags, "--epochs", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert flags[0] in err and "cannot go with it" in err
    assert (digits_run / "checkpoint.pt").read_bytes() == before


def test_cli_resume_accepts_data_location(
    digits_run: Path, capsys: pytest.CaptureFixture, tmp_path: Path
) -> None:
    code = main(
        ["train", "--resume", str(digits_run), "--epochs", "2", "--data-dir", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    assert [r["epoch"] for r in _metrics(digits_run)["training"]["history"]] == [1, 2]
    assert json.loads((digits_run / "config.json").read_text())["data_dir"] is None


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("delete", "no checkpoint at"),
        ("truncate", "truncated or corrupt"),
        ("no-config", "is not a run directory"),
    ],
)
def test_cli_resume_of_damaged_run(
    digits_run: Path, capsys: pytest.CaptureFixture, damage: str, message: str
) -> None:
    checkpoint = digits_run / "checkpoint.pt"
    if damage == "delete":
        checkpoint.unlink()
    elif damage == "truncate":
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    else:
        (digits_run / "config.json").unlink()
    with pytest.raises(CheckpointError, match=message):
        resume_run(digits_run, epochs=2, progress=False)
    code = main(["train", "--resume", str(digits_run), "--epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and message in err
