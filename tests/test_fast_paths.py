"""The shortcuts taken for training speed compute what they replace (exactly, or to the
rounding of the result where a cheaper formula is used), and the
encoders register their parameters under their own names in Pyro's store."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch

from guides.encoders import ConvEncoder, MLPEncoder
from models.likelihoods import LIKELIHOODS
from models.likelihoods.bernoulli import BernoulliLikelihood, IndependentBernoulli
from models.networks import GaussianMLP, all_but_last
from ppl_vae.build import ModelSpec, build_vae
from ppl_vae.errors import DataError
from ppl_vae.training import fit
from ppl_vae.validation import validate_data


@pytest.mark.parametrize("data_shape", [(12,), (1, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_independent_bernoulli_equals_bernoulli_to_event(data_shape, dtype) -> None:
    """The softplus form of the log density is Pyro's Bernoulli up to rounding: against the
    float64 value of the cross entropy it errs no more than Pyro's own path, plus one
    rounding of the result (eps * |log p|); gradients agree to the dtype's eps."""
    likelihood = BernoulliLikelihood(data_shape)
    params = 6 * torch.randn(4, 5, 1, *data_shape, dtype=dtype)
    params.requires_grad_()
    x = torch.randint(0, 2, (5, *data_shape)).to(dtype)
    fast = likelihood(params)
    slow = dist.Bernoulli(logits=params.squeeze(-1 - len(data_shape))).to_event(len(data_shape))
    exact = dist.Bernoulli(logits=params.squeeze(-1 - len(data_shape)).double()).to_event(
        len(data_shape)
    )
    assert isinstance(fast, IndependentBernoulli)
    assert fast.batch_shape == slow.batch_shape and fast.event_shape == slow.event_shape
    got, want, truth = fast.log_prob(x), slow.log_prob(x), exact.log_prob(x.double())
    assert got.dtype == dtype
    eps = torch.finfo(dtype).eps
    slack = (want.double() - truth).abs().max() + 4 * eps * truth.abs().max()
    assert (got.double() - truth).abs().max() <= slack
    (grad_got,) = torch.autograd.grad(got.sum(), params)
    (grad_want,) = torch.autograd.grad(want.sum(), params)
    torch.testing.assert_close(grad_got, grad_want, rtol=0, atol=4 * eps)
    assert isinstance(fast.expand((3, 4, 5)), IndependentBernoulli)
    mask = torch.rand(5, *data_shape) < 0.5  # the masked path stays Pyro's own
    assert not isinstance(likelihood(params, mask), IndependentBernoulli)


def test_one_parameter_per_element_is_split_without_copying() -> None:
    for name in ("bernoulli", "poisson"):
        likelihood = LIKELIHOODS[name](data_shape=(6,))
        params = torch.randn(3, 1, 6)
        (single,) = likelihood.split_params(params)
        assert torch.equal(single, params.unbind(-2)[0])
        assert single.data_ptr() == params.data_ptr()  # a view
    two = LIKELIHOODS["normal_heteroscedastic"](data_shape=(6,))
    params = torch.randn(3, 2, 6)
    assert all(
        torch.equal(a, b) for a, b in zip(two.split_params(params), params.unbind(-2), strict=True)
    )


def test_unit_input_scale_is_skipped_and_follows_loaded_weights() -> None:
    x = torch.rand(3, 1, 4, 4)
    for encoder in (MLPEncoder((16,), 2, (5,)), ConvEncoder((1, 4, 4), 2, (5,), channels=(2,))):
        data = x.flatten(1) if isinstance(encoder, MLPEncoder) else x
        assert encoder.unit_input_scale
        one = encoder.features(data)
        scaled = type(encoder)(encoder.data_shape, 2, (5,), input_scale=0.5, **_conv(encoder))
        scaled.load_state_dict(encoder.state_dict())  # the scale (a buffer) is loaded: 1
        assert scaled.unit_input_scale and torch.equal(scaled.features(data), one)
        encoder.load_state_dict({**encoder.state_dict(), "input_scale": torch.tensor(0.5)})
        assert not encoder.unit_input_scale
        assert torch.equal(encoder.features(data), encoder.features(data * 1.0))
        assert not torch.equal(encoder.features(data), one)


def _conv(encoder) -> dict:
    return {"channels": (2,)} if isinstance(encoder, ConvEncoder) else {}


def test_all_but_last_equals_the_slice() -> None:
    net = GaussianMLP(3, 2, hidden=(4, 5)).net
    u = torch.randn(6, 3)
    assert torch.equal(all_but_last(net, u), net[:-1](u))


def test_encoder_parameters_keep_their_names_in_pyros_store() -> None:
    """Slicing the encoders' networks used to register their hidden layers as "0.weight",
    so two networks shared one store entry and one of them never trained (here: the first
    layer of the hierarchical guide's second network and of the model's p(z1 | z2))."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    spec = ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,), architecture="hierarchical")
    model, guide = build_vae(spec)
    before = {
        **{f"model.{n}": p.detach().clone() for n, p in model.named_parameters()},
        **{f"guide.{n}": p.detach().clone() for n, p in guide.named_parameters()},
    }
    x = torch.randint(0, 2, (64, 6)).float()
    fit(model, guide, x, epochs=1, batch_size=16, progress=False)
    names = set(pyro.get_param_store().keys())
    assert names == {n for m in (model, guide) for n, _ in m.named_parameters()}
    after = {
        **{f"model.{n}": p for n, p in model.named_parameters()},
        **{f"guide.{n}": p for n, p in guide.named_parameters()},
    }
    untrained = [n for n in before if torch.equal(before[n], after[n])]
    assert untrained == []


def test_a_second_model_trains_its_own_encoder() -> None:
    pyro.clear_param_store()
    x = torch.randint(0, 2, (64, 6)).float()
    spec = ModelSpec(data_shape=(6,), latent_dim=2, hidden=(8,))
    first = build_vae(spec)
    fit(*first, x, epochs=1, batch_size=16, progress=False, optimizer=pyro.optim.Adam({}))
    model, guide = build_vae(spec)
    weight = guide.encoder.net[0].weight.detach().clone()
    fit(model, guide, x, epochs=1, batch_size=16, progress=False)
    assert not torch.equal(guide.encoder.net[0].weight, weight)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_data_are_still_refused(bad: float) -> None:
    x = torch.zeros(4, 3)
    x[2, 1] = bad
    with pytest.raises(DataError, match="NaN or infinite values in 1 rows"):
        validate_data(x)
    model, _ = build_vae(ModelSpec(data_shape=(3,), likelihood="bernoulli", latent_dim=2))
    x = torch.zeros(4, 3)
    x[1, 0] = 0.5
    with pytest.raises(DataError, match="grey-scale"):
        validate_data(x, model)
