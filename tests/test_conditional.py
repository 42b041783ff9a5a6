"""The conditional VAE p(z) p(x | z, y) and its guide q(z | x, y): labels as the keyword y,
shapes under the particles plate, labels change what is decoded, bad labels fail clearly, and
a short fit on the labelled digits."""

from __future__ import annotations

import inspect

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO

from guides.conditional import ConditionalGuide
from guides.encoders import MLPEncoder
from guides.families import FAMILIES
from models import LIKELIHOODS, ConditionalVAE, MLPDecoder, StandardNormalPrior
from ppl_vae.data import load_dataset
from ppl_vae.estimators import log_likelihood
from ppl_vae.programs import call_program
from ppl_vae.training import fit

D, LATENT, CLASSES = 6, 2, 3


def build(
    family: str = "normal", data_shape=(D,), hidden=(8,), num_classes=CLASSES, **kw
) -> tuple[ConditionalVAE, ConditionalGuide]:
    likelihood = kw.pop("likelihood", None) or LIKELIHOODS["bernoulli"](data_shape)
    encoder = MLPEncoder(data_shape, LATENT, hidden=hidden, input_scale=kw.pop("input_scale", 1))
    decoder = MLPDecoder(LATENT + num_classes, likelihood.num_params, hidden=hidden)
    model = ConditionalVAE(StandardNormalPrior(LATENT), decoder, likelihood, num_classes)
    guide = ConditionalGuide.build(encoder, num_classes, hidden=hidden, family=family, **kw)
    return model, guide


def data(n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 2, (n, D)).float(), torch.arange(n) % CLASSES


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sites_and_shapes_under_the_particles_plate(family):
    model, guide = build(family)
    x, y = data()
    with pyro.plate("particles", 4, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x, y=y)
        model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x, y=y)
    assert guide_trace.nodes["z"]["value"].shape == (4, 5, LATENT)
    model_trace.compute_log_prob()
    assert model_trace.nodes["x"]["log_prob"].shape == (4, 5)
    assert model_trace.nodes["z"]["log_prob"].shape == (4, 5)
    frames = {f.name: f.dim for f in model_trace.nodes["x"]["cond_indep_stack"]}
    assert frames == {"particles": -2, "data": -1}


def test_programs_take_labels_the_way_the_engine_passes_them():
    model, guide = build()
    x, y = data(4)
    mask = torch.tensor([True, False, True, True])
    guide_trace = poutine.trace(call_program).get_trace(guide, x, mask, y)
    replayed = poutine.replay(model, guide_trace)
    model_trace = poutine.trace(call_program).get_trace(replayed, x, mask, y)
    model_trace.compute_log_prob()
    assert (model_trace.nodes["x"]["log_prob"][~mask] == 0).all()


def test_labels_change_the_decoded_mean_and_the_posterior():
    model, guide = build()
    z = torch.randn(4, LATENT)
    means = [model.decode(z, torch.full((4,), c)).mean for c in range(CLASSES)]
    assert not torch.allclose(means[0], means[1]) and not torch.allclose(means[1], means[2])
    x, _ = data(4)
    q0 = guide.posterior(x, torch.zeros(4, dtype=torch.long))
    q1 = guide.posterior(x, torch.ones(4, dtype=torch.long))
    assert not torch.allclose(q0.mean, q1.mean)


def test_generate_class_conditional_samples():
    model, _ = build()
    z, mean, x = model.generate(6, 2)
    assert z.shape == (6, LATENT) and mean.shape == x.shape == (6, D)
    z, mean, x = model.generate(3, torch.tensor([0, 1, 2]))
    assert mean.shape == (3, D)
    torch.testing.assert_close(mean[1], model.decode(z[1:2], torch.tensor([1])).mean[0])


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (None, "y=labels"),
        (torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0]), r"y\.long\(\)"),
        (torch.tensor([True, False, True, False, True]), r"y\.long\(\)"),
        ([0, 1, 2, 0, 1], "torch tensor"),
        (torch.tensor([0, 1, 2]), r"shape \(5,\)"),
        (torch.zeros(5, 1, dtype=torch.long), r"shape \(5,\)"),
        (torch.tensor([0, 1, 3, 0, 1]), r"0\.\.2 .*num_classes=4"),
        (torch.tensor([0, -1, 2, 0, 1]), "re-index"),
    ],
)
def test_bad_labels_raise_a_clear_error(labels, message):
    model, guide = build()
    x, _ = data(5)
    for program in (model, guide):
        with pytest.raises(ValueError, match=message):
            program(x, y=labels)


def test_bad_construction_is_rejected():
    likelihood = LIKELIHOODS["bernoulli"]((D,))
    with pytest.raises(ValueError, match="latent_dim \\+ num_classes"):
        ConditionalVAE(StandardNormalPrior(LATENT), MLPDecoder(LATENT, D), likelihood, 3)
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalVAE(StandardNormalPrior(LATENT), MLPDecoder(LATENT, D), likelihood, 0)
    with pytest.raises(ValueError, match="unknown posterior family"):
        ConditionalGuide.build(MLPEncoder((D,), LATENT), 3, family="no-such-family")


def test_gradients_reach_every_parameter_but_the_unused_gaussian_head():
    model, guide = build()
    x, y = data(6)
    Trace_ELBO().loss_and_grads(model, guide, x, y=y)
    for module in (model, guide):
        for name, param in module.named_parameters():
            if name.startswith("encoder.net.") and name.split(".")[2] == str(
                len(guide.encoder.net) - 1
            ):
                continue  # encoder.gaussian: not part of q(z | x, y)
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_log_likelihood_of_x_given_y_is_per_datapoint():
    if "y" not in inspect.signature(log_likelihood).parameters:
        pytest.skip("log_likelihood does not take labels yet")
    model, guide = build()
    x, y = data(6)
    est = log_likelihood(model, guide, x, y=y, num_samples=32, seed=1)
    assert est.log_likelihood.shape == (6,)
    assert (est.elbo <= est.log_likelihood + 1e-9).all()
    part = log_likelihood(model, guide, x[:3], y=y[:3], num_samples=32, seed=1)
    torch.testing.assert_close(part.log_likelihood, est.log_likelihood[:3], rtol=0, atol=1e-5)


def test_fit_on_the_labelled_digits_raises_the_elbo():
    digits = load_dataset("digits")
    x, y = digits.train[:384], digits.train_labels[:384]
    likelihood = LIKELIHOODS["binomial"]((64,), total_count=16)
    model, guide = build(
        data_shape=(64,), hidden=(32,), num_classes=10, likelihood=likelihood, input_scale=1 / 16
    )
    loss = Trace_ELBO()
    before = loss.loss(model, guide, x, y=y) / len(x)
    if "train_labels" in inspect.signature(fit).parameters:
        fit(model, guide, x, train_labels=y, epochs=4, batch_size=64, lr=3e-3, progress=False)
    else:
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 3e-3}), loss=loss)
        for _ in range(4):
            for begin in range(0, len(x), 64):
                svi.step(x[begin : begin + 64], y=y[begin : begin + 64])
    after = loss.loss(model, guide, x, y=y) / len(x)
    assert after < before - 20, (before, after)
