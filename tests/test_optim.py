"""fit's optimizer and steps (:mod:`ppl_vae.optim`, :mod:`ppl_vae.steps`): the gradients
and the Adam arithmetic of ``SVI.step`` with ``pyro.optim.Adam``, parameters found as SVI
finds them, Pyro's validation on for the first step only."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.util import is_validation_enabled
from torch.distributions import constraints

from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.errors import ConfigError
from ppl_vae.optim import TorchOptim, adam
from ppl_vae.steps import uses_differentiable_loss
from ppl_vae.training import fit

X = torch.randint(0, 2, (96, 6), generator=torch.Generator().manual_seed(0)).float()
OPTIONS = {"epochs": 2, "batch_size": 32, "seed": 5, "lr": 1e-2, "progress": False}


def _pair():
    pyro.clear_param_store()
    torch.manual_seed(1)
    return build_vae(ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,)))


def _flat(*modules) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])


@pytest.mark.parametrize("elbo", [Trace_ELBO, TraceMeanField_ELBO], ids=lambda e: e.__name__)
def test_steps_equal_svi_with_pyro_adam_bit_for_bit(elbo) -> None:
    """With PyTorch's per-tensor Adam the new steps do SVI's arithmetic exactly; the default
    fused Adam agrees to rounding."""
    model, guide = _pair()
    legacy = fit(model, guide, X, elbo=elbo(), optimizer=pyro.optim.Adam({"lr": 1e-2}), **OPTIONS)
    want = _flat(model, guide)
    model, guide = _pair()
    single = TorchOptim(torch.optim.Adam, {"lr": 1e-2, "foreach": False})
    result = fit(model, guide, X, elbo=elbo(), optimizer=single, **OPTIONS)
    assert torch.equal(_flat(model, guide), want)
    assert result.train_elbo == pytest.approx(legacy.train_elbo, rel=1e-6)
    model, guide = _pair()
    result = fit(model, guide, X, elbo=elbo(), **OPTIONS)
    assert isinstance(result.optimizer, TorchOptim)
    assert result.optimizer.optimizer.defaults["fused"]
    torch.testing.assert_close(_flat(model, guide), want, rtol=1e-5, atol=1e-6)


def test_validation_is_on_for_the_first_step_only_and_restored() -> None:
    seen = []
    model, guide = _pair()

    def watched(x, mask=None):
        seen.append(is_validation_enabled())
        return model(x, mask)

    for setting in (True, False):
        seen.clear()
        pyro.enable_validation(setting)
        fit(watched, guide, X, epochs=2, batch_size=32, progress=False)
        # steps 1..6 of two epochs, then no valid data: the model runs only in steps
        assert seen == [setting] + [False] * 5
        assert is_validation_enabled() is setting
    pyro.enable_validation(True)
    seen.clear()
    fit(watched, guide, X, epochs=1, batch_size=32, progress=False, optimizer=pyro.optim.Adam({}))
    assert seen == [True] * 3  # the Pyro optimizer path leaves validation as it is


def test_a_torch_optimizer_trains_only_its_parameters() -> None:
    model, guide = _pair()
    decoder = _flat(model)
    optimizer = torch.optim.SGD(guide.parameters(), lr=0.1)
    result = fit(model, guide, X, optimizer=optimizer, epochs=1, batch_size=32, progress=False)
    assert result.optimizer.optimizer is optimizer
    assert torch.equal(_flat(model), decoder)  # the model's parameters are not trained
    names = {n for n, _ in guide.named_parameters()}
    assert set(result.optimizer.get_state()) == names


def test_parameters_created_later_join_the_optimizer() -> None:
    """A ``pyro.param`` first created at a later step (Pyro's store grows) is added to the
    optimizer as a new parameter group and trained, as SVI would; constrained values are
    optimised in unconstrained space."""
    model, guide = _pair()
    calls = []

    def late_model(x, mask=None):
        calls.append(None)
        if len(calls) > 2:
            scale = pyro.param("late_scale", torch.tensor(1.0), constraint=constraints.positive)
            pyro.factor("penalty", -((scale - 3.0) ** 2))
        return model(x, mask)

    result = fit(late_model, guide, X, epochs=3, batch_size=32, lr=0.05, progress=False)
    optimizer = result.optimizer
    assert "late_scale" in optimizer.get_state()
    assert len(optimizer.optimizer.param_groups) == 2
    unconstrained = pyro.get_param_store()._params["late_scale"]
    assert unconstrained in optimizer
    assert pyro.param("late_scale").item() > 1.1  # moved toward 3


def test_objective_without_differentiable_loss_steps_through_loss_and_grads() -> None:
    class MyELBO(Trace_ELBO):
        def loss_and_grads(self, model, guide, *args, **kwargs):
            self.called = True
            return super().loss_and_grads(model, guide, *args, **kwargs)

    assert uses_differentiable_loss(Trace_ELBO()) and uses_differentiable_loss(
        TraceMeanField_ELBO()
    )
    assert not uses_differentiable_loss(RenyiELBO(num_particles=2))
    mine = MyELBO()
    assert not uses_differentiable_loss(mine)
    model, guide = _pair()
    fit(model, guide, X, elbo=mine, epochs=1, batch_size=32, progress=False)
    assert mine.called


def test_state_round_trip_and_restore_into_live_parameters() -> None:
    model, guide = _pair()
    result = fit(model, guide, X, epochs=1, batch_size=32, progress=False)
    state = result.optimizer.get_state()
    entry = state["encoder.net.0.weight"]
    assert list(entry["state"]) == [0] and entry["param_groups"][0]["params"] == [0]
    assert entry["state"][0]["exp_avg"].shape == guide.encoder.net[0].weight.shape
    # restoring into an optimizer that holds the parameters already takes effect at once
    fresh = adam(1e-3)
    fresh.add({n: p for m in (model, guide) for n, p in m.named_parameters()})
    fresh.set_state(state)
    again = fresh.get_state()
    for name, saved in state.items():
        for key, value in saved["state"][0].items():
            assert torch.equal(again[name]["state"][0][key], value), (name, key)


def test_fused_adam_is_chosen_where_it_exists_and_float64_works(float64) -> None:
    model, guide = _pair()
    result = fit(model, guide, X, epochs=1, batch_size=32, progress=False)
    assert result.optimizer.optimizer.defaults.get("fused")
    assert all(p.dtype == torch.float64 for p in result.optimizer.params())
    plain = TorchOptim(torch.optim.Adam, {"lr": 1e-3, "foreach": False})
    plain.add({"w": torch.zeros(2, requires_grad=True)})
    assert not plain.optimizer.defaults.get("fused")


def test_bad_optimizer_is_refused() -> None:
    model, guide = _pair()
    with pytest.raises(ConfigError, match="optimizer must be"):
        fit(model, guide, X, optimizer="adam", epochs=1, progress=False)
    with pytest.raises(TypeError, match="Optimizer class"):
        TorchOptim(dist.Normal)
