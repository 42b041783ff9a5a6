"""Checkpoints: exact round trips, safe and clear failures on bad files, atomic writes, and
continued training that matches an uninterrupted run."""

from __future__ import annotations

import copy
import json
import os
import pathlib
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO

import ppl_vae.checkpoint as checkpoint_module
from ppl_vae.atomic import atomic_open, write_json
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.checkpoint import FORMAT, VERSION, load_checkpoint, restore_checkpoint, save_checkpoint
from ppl_vae.cli import main
from ppl_vae.data import load_dataset
from ppl_vae.errors import CheckpointError
from ppl_vae.optim import TorchOptim, adam
from ppl_vae.training import fit


def _spec(hidden: tuple[int, ...] = (16,), data_shape: tuple[int, ...] = (64,)) -> ModelSpec:
    return ModelSpec(
        data_shape=data_shape,
        likelihood="binomial",
        likelihood_options={"total_count": 16},
        latent_dim=2,
        hidden=hidden,
        input_scale=1 / 16,
    )


def _build(spec: ModelSpec, seed: int = 0):
    """A fresh model/guide pair with its own initial weights and an empty param store."""
    pyro.clear_param_store()
    torch.manual_seed(seed)
    return build_vae(spec)


@pytest.fixture(scope="module")
def digits_train() -> torch.Tensor:
    return load_dataset("digits").train[:128]


def _state(model, guide) -> dict[str, torch.Tensor]:
    """A detached copy of every parameter and buffer of model and guide."""
    return {
        **{f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()},
        **{f"guide.{k}": v.detach().clone() for k, v in guide.state_dict().items()},
    }


def _assert_same_tree(actual: Any, expected: Any, path: str = "") -> None:
    """Nested dicts/lists of tensors and scalars are equal, tensors exactly."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), path
        assert actual.keys() == expected.keys(), path
        for key in expected:
            _assert_same_tree(actual[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same_tree(a, e, f"{path}[{i}]")
    elif isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), path
        assert torch.equal(actual, expected), path
    else:
        assert actual == expected, path


def _svi_steps(model, guide, optimizer, x: torch.Tensor, steps: int, seed: int) -> None:
    pyro.set_rng_seed(seed)
    svi = SVI(model, guide, optimizer, loss=Trace_ELBO())
    for step in range(steps):
        svi.step(x[step * 32 : (step + 1) * 32])


def _files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


# ------------------------------------------------------------------------- round trip


def test_round_trip_restores_parameters_and_optimizer(
    tmp_path: Path, digits_train: torch.Tensor
) -> None:
    path = tmp_path / "checkpoint.pt"
    model, guide = _build(_spec(), seed=0)
    optimizer = pyro.optim.Adam({"lr": 1e-2})
    _svi_steps(model, guide, optimizer, digits_train, steps=3, seed=1)
    save_checkpoint(path, model=model, guide=guide, optimizer=optimizer, epoch=3)
    saved_params = _state(model, guide)
    saved_optimizer = copy.deepcopy(optimizer.get_state())
    assert saved_optimizer, "the optimizer has state after three steps"
    assert any("exp_avg" in str(s) for s in saved_optimizer.values())

    # the reference continuation: one more step from the saved state
    _svi_steps(model, guide, optimizer, digits_train[96:], steps=1, seed=2)
    after_params = _state(model, guide)
    after_optimizer = copy.deepcopy(optimizer.get_state())

    payload = load_checkpoint(path)
    assert payload["format"] == FORMAT and payload["version"] == VERSION
    assert payload["epoch"] == 3
    _assert_same_tree(payload["optimizer"], saved_optimizer)

    fresh_model, fresh_guide = _build(_spec(), seed=123)
    assert not torch.equal(
        fresh_model.decoder.net[0].weight, saved_params["model.decoder.net.0.weight"]
    )
    fresh_optimizer = pyro.optim.Adam({"lr": 1e-2})
    epoch = restore_checkpoint(payload, fresh_model, fresh_guide, fresh_optimizer)
    assert epoch == 3
    _assert_same_tree(_state(fresh_model, fresh_guide), saved_params)

    # the restored optimizer continues exactly as the original one did
    _svi_steps(fresh_model, fresh_guide, fresh_optimizer, digits_train[96:], steps=1, seed=2)
    _assert_same_tree(_state(fresh_model, fresh_guide), after_params)
    _assert_same_tree(fresh_optimizer.get_state(), after_optimizer)


def test_save_without_optimizer(tmp_path: Path) -> None:
    model, guide = _build(_spec())
    save_checkpoint(tmp_path / "c.pt", model=model, guide=guide)
    payload = load_checkpoint(tmp_path / "c.pt")
    assert payload["optimizer"] is None and payload["epoch"] == 0
    other_model, other_guide = _build(_spec(), seed=5)
    assert restore_checkpoint(payload, other_model, other_guide, pyro.optim.Adam({})) == 0
    _assert_same_tree(_state(other_model, other_guide), _state(model, guide))


def test_save_creates_missing_directories(tmp_path: Path) -> None:
    model, guide = _build(_spec())
    path = tmp_path / "a" / "b" / "checkpoint.pt"
    save_checkpoint(path, model=model, guide=guide, epoch=7)
    assert load_checkpoint(path)["epoch"] == 7
    assert _files(path.parent) == ["checkpoint.pt"]


def test_save_rejects_plain_functions(tmp_path: Path) -> None:
    _, guide = _build(_spec())

    def model(x, mask=None):
        pass

    with pytest.raises(TypeError, match="needs the model as a torch.nn.Module"):
        save_checkpoint(tmp_path / "c.pt", model=model, guide=guide)
    assert _files(tmp_path) == []


# ---------------------------------------------------------------------------- bad files


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    model, guide = _build(_spec())
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model=model, guide=guide, optimizer=pyro.optim.Adam({}), epoch=1)
    return path


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at .*; train first"):
        load_checkpoint(tmp_path / "nothing.pt")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.1])
def test_truncated_checkpoint(saved: Path, keep: float) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(saved)
    message = str(info.value)
    assert str(saved) in message
    assert "truncated or corrupt" in message
    assert "retrain" in message


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"garbage",
        b"\x00" * 64,
        b"PK\x03\x04 not really a zip",
        b'{"format": "ppl_vae.checkpoint"}',
        b"hello",
        b"this is not a checkpoint\n",
    ],
    ids=["empty", "garbage", "zeros", "zip-magic", "json", "hello", "text"],
)
def test_garbage_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_malicious_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (pathlib.Path.touch, (marker,))

    path = tmp_path / "checkpoint.pt"
    payload = {"format": FORMAT, "version": VERSION, "epoch": 0, "model": Exploit()}
    torch.save(payload, path)

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert not marker.exists(), "loading the checkpoint ran code from it"
    message = str(info.value)
    assert str(path) in message
    assert "refused" in message and "could run code" in message

    # the file really is an exploit: an unrestricted load would have run it
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"weights": torch.zeros(2)}, "is not a ppl_vae checkpoint"),
        ([torch.zeros(2)], "is not a ppl_vae checkpoint"),
        (
            {"format": FORMAT, "version": 99, "epoch": 0, "model": {}, "guide": {}},
            "has checkpoint version 99; this ppl_vae reads version 1",
        ),
        ({"format": FORMAT, "version": VERSION, "model": {}}, r"lacks the entries \['epoch', "),
    ],
    ids=["other-dict", "list", "version", "missing-entries"],
)
def test_wellformed_file_that_is_not_our_checkpoint(
    tmp_path: Path, payload: Any, message: str
) -> None:
    path = tmp_path / "checkpoint.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("other", "role"),
    [
        (_spec(hidden=(8,)), "model"),
        (_spec(hidden=(16, 16)), "model"),
        (_spec(data_shape=(16,)), "model"),
    ],
    ids=["narrower", "deeper", "other-data-shape"],
)
def test_checkpoint_of_another_architecture(saved: Path, other: ModelSpec, role: str) -> None:
    payload = load_checkpoint(saved)
    model, guide = _build(other)
    with pytest.raises(CheckpointError) as info:
        restore_checkpoint(payload, model, guide)
    message = str(info.value)
    assert f"the checkpoint's {role} does not match" in message
    assert "different architecture or data shape" in message


def test_checkpoint_guide_mismatch_is_named(saved: Path) -> None:
    payload = load_checkpoint(saved)
    model, guide = _build(_spec())
    payload["guide"] = {"encoder.net.0.weight": torch.zeros(3, 3)}
    with pytest.raises(CheckpointError, match="the checkpoint's guide does not match"):
        restore_checkpoint(payload, model, guide)


# ---------------------------------------------------------------- through the CLI


@pytest.fixture
def run(digits_run: Path) -> Path:
    return digits_run


def test_cli_evaluate_truncated_checkpoint(run: Path, capsys: pytest.CaptureFixture) -> None:
    path = run / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert main(["evaluate", str(run)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("ppl-vae: error: ")
    assert f"{path} is truncated or corrupt" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_cli_evaluate_checkpoint_from_other_config(
    run: Path, capsys: pytest.CaptureFixture
) -> None:
    config = json.loads((run / "config.json").read_text())
    config["model"]["hidden"] = [12]
    (run / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", str(run)]) == 2
    err = capsys.readouterr().err
    assert "does not match the model built from the run's config" in err
    assert "Traceback" not in err


def test_cli_evaluate_intact_run(run: Path, capsys: pytest.CaptureFixture) -> None:
    """Control for the two tests above: the untouched copy evaluates fine."""
    assert main(["evaluate", str(run), "--num-samples", "2"]) == 0
    assert "test ELBO" in capsys.readouterr().out


# ------------------------------------------------------------------------- atomic writes


def test_failed_save_keeps_previous_checkpoint(
    saved: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = saved.read_bytes()
    files_before = _files(saved.parent)

    def failing_save(obj, stream, *args, **kwargs):
        stream.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    model, guide = _build(_spec(), seed=9)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, model=model, guide=guide, epoch=2)
    assert saved.read_bytes() == before
    assert _files(saved.parent) == files_before  # no temporary file left behind
    monkeypatch.undo()
    assert load_checkpoint(saved)["epoch"] == 1


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_failed_first_save_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    def failing_save(obj, stream, *args, **kwargs):
        stream.write(b"partial")
        raise error

    monkeypatch.setattr(checkpoint_module.torch, "save", failing_save)
    model, guide = _build(_spec())
    with pytest.raises(type(error)):
        save_checkpoint(tmp_path / "checkpoint.pt", model=model, guide=guide)
    assert _files(tmp_path) == []


def test_write_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    data = {"test": {"elbo": -1.5, "num_samples": 20}, "history": [1, 2]}
    write_json(path, data)
    text = path.read_text()
    assert text.endswith("\n")
    assert json.loads(text) == data
    write_json(path, {"replaced": True})
    assert json.loads(path.read_text()) == {"replaced": True}
    assert _files(tmp_path) == ["metrics.json"]


def test_failed_write_json_keeps_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    write_json(path, {"old": 1})
    before = path.read_bytes()
    # json.dump streams: the first keys are written before the bad value is reached
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json(path, {"new": list(range(1000)), "bad": object()})
    assert path.read_bytes() == before
    assert _files(tmp_path) == ["metrics.json"]


def test_atomic_open_rejects_other_modes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"):
        with atomic_open(tmp_path / "f", "a"):
            pass
    assert _files(tmp_path) == []


# ---------------------------------------------------------------- continued training


def test_continued_fit_matches_uninterrupted_fit(
    tmp_path: Path, digits_train: torch.Tensor
) -> None:
    spec = _spec()
    options = {"batch_size": 32, "lr": 1e-2, "seed": 3, "progress": False}
    valid = digits_train[:32]

    # reference: four epochs in one go
    model, guide = _build(spec, seed=0)
    full = fit(model, guide, digits_train, valid_data=valid, epochs=4, **options)
    reference = _state(model, guide)

    # two epochs, checkpointed at each epoch's end ...
    path = tmp_path / "checkpoint.pt"
    model, guide = _build(spec, seed=0)

    def save(record, optimizer) -> None:
        save_checkpoint(path, model=model, guide=guide, optimizer=optimizer, epoch=record.epoch)

    fit(model, guide, digits_train, valid_data=valid, epochs=2, on_epoch_end=save, **options)
    halfway = _state(model, guide)

    # ... then a fresh process-like restart: new modules, new optimizer, restored state
    model, guide = _build(spec, seed=42)
    optimizer = adam(options["lr"])  # fit's default optimizer
    start = restore_checkpoint(load_checkpoint(path), model, guide, optimizer)
    assert start == 2
    _assert_same_tree(_state(model, guide), halfway)
    rest = fit(
        model,
        guide,
        digits_train,
        valid_data=valid,
        epochs=2,
        optimizer=optimizer,
        start_epoch=start,
        **options,
    )
    assert [r.epoch for r in rest.history] == [3, 4]
    for continued, uninterrupted in zip(rest.history, full.history[2:], strict=True):
        assert continued.train_elbo == pytest.approx(uninterrupted.train_elbo, rel=1e-9)
        assert continued.valid_elbo == pytest.approx(uninterrupted.valid_elbo, rel=1e-9)
    resumed = _state(model, guide)
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=0, atol=1e-6, msg=name)

    # control: the same restart without the optimizer state ends elsewhere, so the
    # comparison above really depends on the restored Adam moments
    model, guide = _build(spec, seed=42)
    restore_checkpoint(load_checkpoint(path), model, guide)
    fit(model, guide, digits_train, valid_data=valid, epochs=2, start_epoch=2, **options)
    cold = _state(model, guide)
    assert any(not torch.allclose(cold[n], reference[n], atol=1e-4) for n in reference)


# ------------------------------------------------- checkpoints of the Pyro optimizers


def _fit_four_epochs_in_two_halves(digits_train, first_optimizer, second_optimizer, path):
    """Two epochs with ``first_optimizer`` checkpointed, a restart from the checkpoint into
    ``second_optimizer`` and two more epochs; returns the final state."""
    options = {"batch_size": 32, "lr": 1e-2, "seed": 3, "progress": False}

    def save(record, optimizer) -> None:
        save_checkpoint(path, model=model, guide=guide, optimizer=optimizer, epoch=record.epoch)

    model, guide = _build(_spec(), seed=0)
    fit(
        model,
        guide,
        digits_train,
        epochs=2,
        optimizer=first_optimizer,
        on_epoch_end=save,
        **options,
    )
    model, guide = _build(_spec(), seed=42)
    start = restore_checkpoint(load_checkpoint(path), model, guide, second_optimizer)
    fit(
        model,
        guide,
        digits_train,
        epochs=2,
        start_epoch=start,
        optimizer=second_optimizer,
        **options,
    )
    return _state(model, guide)


def test_checkpoint_of_a_pyro_optimizer_resumes_with_fits_optimizer(
    tmp_path: Path, digits_train: torch.Tensor
) -> None:
    """A checkpoint written before fit had its own optimizer (``pyro.optim.Adam`` through
    ``SVI.step``, one torch Adam per parameter) continues with the torch optimizer over all
    parameters: bit for bit with PyTorch's per-tensor Adam (the arithmetic of the old
    path), to rounding with the default fused Adam."""
    lr = 1e-2
    path = tmp_path / "checkpoint.pt"
    old = pyro.optim.Adam({"lr": lr})
    legacy = _fit_four_epochs_in_two_halves(digits_train, old, pyro.optim.Adam({"lr": lr}), path)
    # the checkpoint has the Pyro optimizer's format: one torch state_dict per name
    saved = load_checkpoint(path)["optimizer"]
    model, guide = _build(_spec())
    assert set(saved) == {n for m in (model, guide) for n, _ in m.named_parameters()}
    assert all(list(entry["state"]) == [0] for entry in saved.values())

    single = TorchOptim(torch.optim.Adam, {"lr": lr, "foreach": False})
    exact = _fit_four_epochs_in_two_halves(digits_train, pyro.optim.Adam({"lr": lr}), single, path)
    fused = _fit_four_epochs_in_two_halves(
        digits_train, pyro.optim.Adam({"lr": lr}), adam(lr), path
    )
    assert exact.keys() == legacy.keys() == fused.keys()
    for name in legacy:
        assert torch.equal(exact[name], legacy[name]), name
        torch.testing.assert_close(fused[name], legacy[name], rtol=1e-5, atol=1e-6, msg=name)


def test_torch_optim_state_restores_into_a_pyro_optimizer(
    tmp_path: Path, digits_train: torch.Tensor
) -> None:
    """The other way round: fit's optimizer writes the Pyro optimizers' format."""
    lr = 1e-2
    path = tmp_path / "checkpoint.pt"
    single = TorchOptim(torch.optim.Adam, {"lr": lr, "foreach": False})
    new = _fit_four_epochs_in_two_halves(digits_train, single, pyro.optim.Adam({"lr": lr}), path)
    legacy = _fit_four_epochs_in_two_halves(
        digits_train, pyro.optim.Adam({"lr": lr}), pyro.optim.Adam({"lr": lr}), path
    )
    for name in legacy:
        assert torch.equal(new[name], legacy[name]), name


def test_restored_state_waits_for_its_parameters_and_is_saved_meanwhile(
    tmp_path: Path, digits_train: torch.Tensor
) -> None:
    path = tmp_path / "checkpoint.pt"
    model, guide = _build(_spec(), seed=0)
    optimizer = adam(1e-2)
    fit(model, guide, digits_train, epochs=1, batch_size=32, optimizer=optimizer, progress=False)
    state = optimizer.get_state()
    assert len(state) == len(list(model.parameters())) + len(list(guide.parameters()))
    save_checkpoint(path, model=model, guide=guide, optimizer=optimizer, epoch=1)
    fresh = adam(1e-2)
    restore_checkpoint(load_checkpoint(path), *_build(_spec(), seed=1), fresh)
    assert fresh.optimizer is None  # nothing added yet: the state waits ...
    _assert_same_tree(fresh.get_state(), load_checkpoint(path)["optimizer"])  # ... and is kept
