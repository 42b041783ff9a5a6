"""``--device``: naming a device, and keeping every tensor of every component on it.

No GPU is needed here. Device placement is checked without one in two ways that fail on
the bugs a GPU would expose:

* every registered component moved with ``.to("meta")`` leaves no tensor behind (state kept
  in plain attributes instead of parameters and buffers would stay on the CPU);
* a torch function mode records every tensor *factory* (``torch.zeros``, ``torch.tensor``,
  ...) called without ``device=`` from our own code while model, guide and engine run: such
  a tensor lands on the CPU whatever device the inputs are on.

The GPU runs themselves are in ``tests/test_gpu.py`` (``pytest -m gpu``).
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from torch.overrides import TorchFunctionMode
from torch.utils._device import _device_constructors

from guides import GUIDES
from models import LIKELIHOODS, PRIORS
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.cli import main
from ppl_vae.device import DEFAULT_DEVICE, move_to_device, resolve_device
from ppl_vae.diagnostics.gaps import gap_decomposition
from ppl_vae.diagnostics.latents import latent_report
from ppl_vae.diagnostics.predictive import posterior_predictive_check
from ppl_vae.diagnostics.psis import psis_diagnostics
from ppl_vae.errors import ConfigError
from ppl_vae.estimators import log_likelihood
from ppl_vae.run import evaluate_run, load_run
from ppl_vae.training import fit
from tests.test_models import LIKELIHOOD_CASES

REPO = Path(__file__).resolve().parents[1]
OUR_CODE = tuple(str(REPO / folder) + "/" for folder in ("models", "guides", "ppl_vae"))

# ---------------------------------------------------------------- resolve_device


def test_cpu_is_the_default_and_names_are_forgiving():
    assert DEFAULT_DEVICE == "cpu"
    for name in (None, "cpu", " CPU ", torch.device("cpu"), "cpu:0"):
        assert resolve_device(name) == torch.device("cpu")


def test_auto_is_cuda_when_available_else_cpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "", "tpu", "meta", "xla"])
def test_unknown_device_names_list_the_choices(name):
    with pytest.raises(ConfigError, match=r"cpu, cuda, cuda:N, auto"):
        resolve_device(name)


def test_a_device_must_be_a_name_or_a_torch_device():
    with pytest.raises(ConfigError, match="torch.device"):
        resolve_device(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", torch.device("cuda", 1)])
def test_cuda_without_a_gpu_says_why_and_what_to_use(name):
    with pytest.raises(ConfigError) as error:
        resolve_device(name)
    message = str(error.value)
    assert "torch.cuda.is_available() is False" in message
    assert torch.__version__ in message
    assert "--device cpu" in message


def test_cuda_message_names_a_build_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ConfigError, match="built without CUDA"):
        resolve_device("cuda")


def _fake_gpus(monkeypatch, count: int) -> None:
    """Pretend ``count`` GPUs are visible (torch.device objects need no GPU to exist)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


def test_cuda_comes_back_with_its_index(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("auto") == torch.device("cuda", 0)


def test_a_gpu_index_beyond_the_visible_ones_is_refused(monkeypatch):
    _fake_gpus(monkeypatch, 2)
    with pytest.raises(ConfigError, match=r"only 2 GPU\(s\) are visible \(cuda:0 .. cuda:1\)"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["mps", torch.device("mps")])
def test_mps_is_refused_with_the_reason(name):
    with pytest.raises(ConfigError, match="MPS has no float64.*use --device cpu"):
        resolve_device(name)


# ---------------------------------------------------------------- every component


#: Small settings for priors with sizes (keeps the grid fast).
PRIOR_OPTIONS = {"mixture": {"num_components": 3}, "vamp": {"num_components": 3}}


def _case(spec: ModelSpec, x: torch.Tensor, y: torch.Tensor | None = None):
    return pytest.param(
        spec,
        x,
        y,
        id=f"{spec.architecture}-{spec.likelihood}-{spec.prior}-{spec.guide}-{spec.encoder}",
    )


def _cases() -> list:
    torch.manual_seed(0)
    cases = []
    for likelihood in sorted(LIKELIHOODS):
        options, make = LIKELIHOOD_CASES[likelihood]
        for prior in sorted(PRIORS):
            spec = ModelSpec(
                data_shape=(5,),
                likelihood=likelihood,
                likelihood_options=options,
                prior=prior,
                prior_options=PRIOR_OPTIONS.get(prior, {}),
                latent_dim=2,
                hidden=(8,),
            )
            cases.append(_case(spec, make((6, 5))))
    binary = torch.randint(0, 2, (6, 5)).float()
    for guide in sorted(GUIDES):
        for architecture in ("vae", "hierarchical", "conditional"):
            conditional = architecture == "conditional"
            spec = ModelSpec(
                data_shape=(5,),
                architecture=architecture,
                guide=guide,
                num_classes=3 if conditional else None,
                prior="flow" if architecture == "hierarchical" else "normal",
                latent_dim=2,
                hidden=(8,),
            )
            cases.append(_case(spec, binary, torch.arange(6) % 3 if conditional else None))
    image = ModelSpec(
        data_shape=(1, 8, 8),
        image_shape=(1, 8, 8),
        encoder="conv",
        decoder="conv",
        prior="vamp",
        prior_options={"num_components": 2},
        latent_dim=2,
        hidden=(8,),
    )
    cases.append(_case(image, torch.randint(0, 2, (4, 1, 8, 8)).float()))
    return cases


CASES = _cases()

#: Tensors Pyro's MADE keeps from its construction in plain attributes; unused afterwards
#: (the masked layers read their own ``mask`` buffers, which do move).
_PYRO_CONSTRUCTION_LEFTOVERS = {"masks", "mask_skip"}


def _tensors_left_behind(root: torch.nn.Module, device: torch.device) -> list[str]:
    stray = []

    def walk(value, where: str) -> None:
        if isinstance(value, torch.Tensor):
            if value.device != device:
                stray.append(f"{where} on {value.device}")
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                walk(item, f"{where}[{i}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{where}[{key!r}]")

    for name, module in root.named_modules():
        for attr, value in vars(module).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            if attr in _PYRO_CONSTRUCTION_LEFTOVERS and "AutoRegressiveNN" in type(module).__name__:
                continue
            walk(value, f"{type(module).__name__} {name or '<root>'}.{attr}")
        for kind, tensors in (("parameter", module._parameters), ("buffer", module._buffers)):
            for attr, value in tensors.items():
                if value is not None and value.device != device:
                    stray.append(f"{kind} {name}.{attr} on {value.device}")
    return stray


@pytest.mark.parametrize(("spec", "x", "y"), CASES)
def test_moving_a_model_and_guide_moves_every_tensor(spec, x, y):
    model, guide = build_vae(spec)
    meta = torch.device("meta")
    move_to_device(meta, model, guide)
    assert _tensors_left_behind(model, meta) == []
    assert _tensors_left_behind(guide, meta) == []


def test_the_check_finds_a_tensor_kept_outside_parameters_and_buffers():
    model, guide = build_vae(ModelSpec(data_shape=(5,), latent_dim=2, hidden=(8,)))
    model.prior.offsets = [torch.zeros(2)]  # what a device bug looks like
    move_to_device(torch.device("meta"), model)
    assert _tensors_left_behind(model, torch.device("meta")) == [
        "PyroStandardNormalPrior prior.offsets[0] on cpu"
    ]


class UndevicedFactories(TorchFunctionMode):
    """Records ``file:line function`` of every tensor factory called from our packages without
    ``device=`` (``torch.as_tensor`` of a tensor keeps its device and is not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: set[str] = set()
        self._constructors = _device_constructors()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._constructors and kwargs.get("device") is None:
            keeps_device = func in (torch.as_tensor, torch.asarray) and isinstance(
                args[0] if args else None, torch.Tensor
            )
            caller = sys._getframe(1).f_code.co_filename
            if not keeps_device and caller.startswith(OUR_CODE):
                line = sys._getframe(1).f_lineno
                self.calls.add(f"{Path(caller).relative_to(REPO)}:{line} {func.__name__}")
        return func(*args, **kwargs)


def _forward_everything(model, guide, x, y) -> None:
    """Model and guide as the engine runs them: alone, vectorized over particles, the guide
    scoring points it did not draw (flows invert), with masks, then the model's
    ``generate``."""
    kwargs = {} if y is None else {"y": y}
    for particles in (None, 3):
        plate = (
            pyro.plate("particles", particles, dim=-2) if particles else contextlib.nullcontext()
        )
        with plate:
            guide_trace = poutine.trace(guide).get_trace(x, **kwargs)
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, **kwargs)
        moved = {
            name: site["value"] + 0.1
            for name, site in guide_trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"] and name != "data"
        }
        with plate:
            trace = poutine.trace(poutine.condition(guide, data=moved)).get_trace(x, **kwargs)
        trace.compute_log_prob()
    # masks: whole datapoints, then single elements (missing values)
    for mask in (torch.arange(x.shape[0]) % 2 == 0, torch.rand(x.shape) < 0.7):
        mask = mask.to(x.device)
        guide_trace = poutine.trace(guide).get_trace(x, mask, **kwargs)
        trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(x, mask, **kwargs)
        trace.compute_log_prob()
    if y is None:
        model.generate(3)
    else:
        model.generate(3, 1)


@pytest.mark.parametrize(("spec", "x", "y"), CASES)
def test_no_component_creates_tensors_on_the_default_device(spec, x, y):
    model, guide = build_vae(spec)
    recorder = UndevicedFactories()
    with recorder:
        _forward_everything(model, guide, x, y)
    assert recorder.calls == set()


def test_the_recorder_sees_a_factory_without_device():
    recorder = UndevicedFactories()
    like = torch.ones(2)
    with recorder:
        torch.zeros(3)  # called from tests/, not counted
        torch.as_tensor(like)  # keeps its device
    assert recorder.calls == set()
    # the same calls as if written in a prior's forward()
    code = compile(
        "torch.zeros(3)\ntorch.zeros(3, device=like.device)\ntorch.as_tensor([1.0])",
        str(REPO / "models" / "priors" / "example.py"),
        "exec",
    )
    with recorder:
        exec(code, {"torch": torch, "like": like})
    assert recorder.calls == {
        "models/priors/example.py:1 zeros",
        "models/priors/example.py:3 as_tensor",
    }


#: Tensors made on the CPU on purpose: the shuffling order comes from a CPU generator (the
#: same order on every device) and is moved to the data's device right away.
_ON_PURPOSE = {"ppl_vae/training.py randperm"}


@pytest.mark.parametrize(
    ("architecture", "guide"),
    [("vae", "normal"), ("hierarchical", "iaf"), ("conditional", "planar")],
)
def test_the_engine_creates_no_tensor_on_the_default_device(architecture, guide):
    conditional = architecture == "conditional"
    x = torch.randint(0, 2, (12, 5)).float()
    y = torch.arange(12) % 3 if conditional else None
    spec = ModelSpec(
        data_shape=(5,),
        architecture=architecture,
        guide=guide,
        num_classes=3 if conditional else None,
        latent_dim=2,
        hidden=(8,),
    )
    model, guide_ = build_vae(spec)
    recorder = UndevicedFactories()
    with recorder:
        fit(
            model,
            guide_,
            x,
            valid_data=x[:4],
            train_labels=y,
            valid_labels=None if y is None else y[:4],
            epochs=1,
            batch_size=6,
            beta=0.5,  # also the end-of-epoch ELBO pass
            progress=False,
        )
        log_likelihood(model, guide_, x, y=y, num_samples=4, seed=0)
        psis_diagnostics(model, guide_, x, y=y, num_samples=25, seed=0)
        gap_decomposition(
            model, guide_, x[:2], y=None if y is None else y[:2], steps=2, num_samples=4
        )
        latent_report(model, guide_, x, y=y, num_samples=2)
        posterior_predictive_check(model, guide_, x, y=y, num_replicates=2)
    found = {f"{call.split(':')[0]} {call.split()[-1]}" for call in recorder.calls}
    assert found - _ON_PURPOSE == set(), sorted(recorder.calls)


def test_moving_keeps_parameters_trainable_in_float64():
    """``.to`` swaps tensor data in place, so Pyro's parameter store and the optimizer see
    the moved parameters: training after a move (here to float64, the move a CPU can make)
    changes the module's own parameters and keeps their dtype."""
    model, guide = build_vae(ModelSpec(data_shape=(5,), prior="vamp", latent_dim=2, hidden=(8,)))
    params = list(model.parameters()) + list(guide.parameters())
    model.to(torch.float64)
    guide.to(torch.float64)
    assert all(
        a is b for a, b in zip(params, [*model.parameters(), *guide.parameters()], strict=True)
    )
    before = [p.detach().clone() for p in params]
    x = torch.randint(0, 2, (8, 5)).double()
    fit(model, guide, x, epochs=1, batch_size=4, progress=False)
    assert all(p.dtype == torch.float64 for p in params)
    assert any(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert pyro.get_param_store()["prior.pseudo_inputs"] is model.prior.pseudo_inputs


# ---------------------------------------------------------------- API and command line


def test_api_takes_a_device_and_records_it_in_evaluations(digits_run):
    config, model, guide, _ = load_run(digits_run, device=torch.device("cpu"))
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    entry = evaluate_run(digits_run, num_samples=2, num_data=10, device="cpu")
    assert entry["device"] == "cpu"
    stored = json.loads((digits_run / "config.json").read_text())
    assert "device" not in stored


def test_api_refuses_an_unknown_device_before_any_work(digits_run):
    metrics = (digits_run / "metrics.json").read_text()
    with pytest.raises(ConfigError, match="unknown device 'gpu'"):
        evaluate_run(digits_run, device="gpu")
    assert (digits_run / "metrics.json").read_text() == metrics


def test_cli_device_on_train_resume_evaluate_and_diagnose(tmp_path, capsys):
    out = tmp_path / "run"
    tiny = ["--hidden", "8", "--latent-dim", "2", "--num-samples", "4", "--no-progress"]
    assert main(["train", *tiny, "--epochs", "1", "--out", str(out), "--device", "cpu"]) == 0
    assert "device" not in json.loads((out / "config.json").read_text())
    assert main(["train", "--resume", str(out), "--epochs", "2", "--device", "auto"]) == 0
    assert main(["evaluate", str(out), "--num-data", "10", "--device", "cpu"]) == 0
    entry = json.loads((out / "metrics.json").read_text())["evaluations"][-1]
    assert entry["device"] == "cpu"
    diagnose = ["diagnose", str(out), "--num-data", "10", "--num-samples", "25"]
    diagnose += ["--gap-points", "0", "--mcmc-points", "0", "--ppc-replicates", "2"]
    assert main([*diagnose, "--device", "cpu"]) == 0
    report = json.loads((out / "diagnostics" / "report.json").read_text())
    assert report["device"] == "cpu"
    capsys.readouterr()


@pytest.mark.parametrize("command", ["train", "evaluate", "diagnose"])
def test_cli_bad_device_is_a_one_line_error(command, digits_run, capsys):
    argv = {"train": ["train", "--out", str(digits_run / "new")]}.get(
        command, [command, str(digits_run)]
    )
    assert main([*argv, "--device", "gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ppl-vae: error: unknown device 'gpu'")
    assert "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="the message is for machines without CUDA")
def test_cli_cuda_without_a_gpu_names_the_fix(digits_run, capsys):
    assert main(["evaluate", str(digits_run), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--device cuda was asked for but torch.cuda.is_available() is False" in err
    assert "use --device cpu" in err


def test_device_is_not_a_run_setting(tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text('epochs = 1\ndevice = "cuda"\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "run")]) == 2
    assert "pass --device to train" in capsys.readouterr().err
