"""The two-layer HierarchicalVAE and its guide q(z2 | x) q(z1 | x, z2): sites and shapes under
the particles plate, the engine's estimators unchanged, the VampPrior over z2, masks, and a
short fit."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO

from guides.encoders import MLPEncoder
from guides.families import FAMILIES, Family
from guides.hierarchical import HierarchicalGuide
from models import LIKELIHOODS, GaussianMLP, HierarchicalVAE, MLPDecoder, StandardNormalPrior
from models.priors import VampPrior
from ppl_vae.data import load_dataset
from ppl_vae.estimators import log_likelihood
from ppl_vae.training import fit, mean_elbo

D, D1, D2 = 6, 2, 3


def build(prior: str = "normal", family: str = "normal", data_shape=(D,), hidden=(8,), **kw):
    likelihood = kw.pop("likelihood", None) or LIKELIHOODS["bernoulli"](data_shape)
    encoder = MLPEncoder(data_shape, D2, hidden=hidden, input_scale=kw.pop("input_scale", 1.0))
    if prior == "vamp":
        top = VampPrior(D2, encoder=encoder, data_shape=data_shape, num_components=4)
    else:
        top = StandardNormalPrior(D2)
    decoder = MLPDecoder(D1 + D2, likelihood.num_params, hidden=hidden)
    model = HierarchicalVAE.with_mlp_conditional(
        top, decoder, likelihood, latent_dim=D1, top_latent_dim=D2, hidden=hidden
    )
    guide = HierarchicalGuide.build(encoder, D1, hidden=hidden, family=family, **kw)
    return model, guide


def binary(n: int = 5) -> torch.Tensor:
    return torch.randint(0, 2, (n, D)).float()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_sites_and_shapes_under_the_particles_plate(family):
    model, guide = build(family=family)
    x = binary()
    with pyro.plate("particles", 4, dim=-2):
        guide_trace = poutine.trace(guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x)
    assert guide_trace.nodes["z2"]["value"].shape == (4, 5, D2)
    assert guide_trace.nodes["z1"]["value"].shape == (4, 5, D1)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    for trace, sites in [(guide_trace, ("z2", "z1")), (model_trace, ("z2", "z1", "x"))]:
        for name in sites:
            site = trace.nodes[name]
            assert site["log_prob"].shape == (4, 5), name
            frames = {f.name: f.dim for f in site["cond_indep_stack"]}
            assert frames == {"particles": -2, "data": -1}, name
    assert model_trace.nodes["x"]["is_observed"]


def test_the_z1_posterior_reads_z2_and_x():
    _, guide = build()
    x = binary(3)
    z2 = torch.randn(2, 3, D2)
    q1 = guide.posterior_bottom(x, z2)
    assert q1.batch_shape == (2, 3) and q1.event_shape == (D1,)
    other = guide.posterior_bottom(x, z2 + 1.0)
    assert not torch.allclose(q1.mean, other.mean)
    assert guide.posterior_top(x).batch_shape == (3,)


@pytest.mark.parametrize(
    ("prior", "family"), [("normal", "normal"), ("vamp", "normal"), ("vamp", "iaf")]
)
def test_log_likelihood_is_per_datapoint_and_above_the_elbo(prior, family):
    if family not in FAMILIES:
        pytest.skip(f"family {family!r} is not registered yet")
    model, guide = build(prior, family)
    x = binary(6)
    est = log_likelihood(model, guide, x, num_samples=64, seed=3)
    assert est.log_likelihood.shape == est.elbo.shape == (6,)
    assert torch.isfinite(est.log_likelihood).all()
    assert (est.elbo <= est.log_likelihood + 1e-9).all()
    # the contract: a datapoint's estimate does not depend on the datapoints after it
    part = log_likelihood(model, guide, x[:3], num_samples=64, seed=3, chunk_size=50)
    torch.testing.assert_close(part.log_likelihood, est.log_likelihood[:3], rtol=0, atol=1e-5)
    # more particles tighten the bound on average
    many = log_likelihood(model, guide, x, num_samples=512, seed=4)
    assert many.log_likelihood.mean() >= est.elbo.mean()


def test_vamp_prior_over_z2_shares_the_guide_encoder_and_every_parameter_learns():
    model, guide = build("vamp")
    assert model.prior.encoder is guide.encoder
    x = binary(8)
    Trace_ELBO().loss_and_grads(model, guide, x)
    for module in (model, guide):
        for name, param in module.named_parameters():
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert model.prior.pseudo_inputs.grad.abs().sum() > 0


def test_masks_act_on_the_likelihood_only():
    model, guide = build()
    x = binary(4)
    mask = torch.tensor([True, False, True, False])
    guide_trace = poutine.trace(guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x, mask)
    model_trace.compute_log_prob()
    assert (model_trace.nodes["x"]["log_prob"][~mask] == 0).all()
    assert (model_trace.nodes["z1"]["log_prob"][~mask] != 0).all()
    element_mask = torch.zeros(4, D, dtype=torch.bool)
    model_trace = poutine.trace(poutine.replay(model, guide_trace)).get_trace(x, element_mask)
    model_trace.compute_log_prob()
    assert (model_trace.nodes["x"]["log_prob"] == 0).all()
    with pytest.raises(ValueError, match="per datapoint"):
        model(x, torch.ones(3, dtype=torch.bool))


def test_generate_and_decode_shapes():
    model, _ = build()
    z, mean, x = model.generate(7)
    assert z.shape == (7, D1 + D2) and mean.shape == x.shape == (7, D)
    px = model.decode(torch.randn(3, 1, D1), torch.randn(1, 4, D2))
    assert px.batch_shape == (3, 4) and px.event_shape == (D,)
    assert model.data_shape == (D,) and model.latent_dim == D1 and model.top_latent_dim == D2


def test_mismatched_parts_are_rejected():
    likelihood = LIKELIHOODS["bernoulli"]((D,))
    decoder = MLPDecoder(D1 + D2, likelihood.num_params, hidden=(8,))
    with pytest.raises(ValueError, match="decoder's latent_dim"):
        HierarchicalVAE(StandardNormalPrior(D2), GaussianMLP(D2, D1 + 1), decoder, likelihood)
    with pytest.raises(ValueError, match="in_features"):
        HierarchicalVAE(StandardNormalPrior(D2 + 1), GaussianMLP(D2, D1), decoder, likelihood)
    encoder = MLPEncoder((D,), D2, hidden=(8,))
    with pytest.raises(ValueError, match="cat\\(h, z2\\)"):
        HierarchicalGuide(encoder, GaussianMLP(8, D1))
    with pytest.raises(ValueError, match="unknown posterior family"):
        HierarchicalGuide.build(encoder, D1, family="no-such-family")
    with pytest.raises(ValueError, match="no option 'rank'"):
        HierarchicalGuide.build(encoder, D1, family="normal", rank=2)


@pytest.mark.parametrize("family", ["normal", "iaf"])
def test_fit_on_the_digits_raises_the_elbo(family):
    if family not in FAMILIES:
        pytest.skip(f"family {family!r} is not registered yet")
    data = load_dataset("digits")
    x = data.train[:384]
    likelihood = LIKELIHOODS["binomial"]((64,), total_count=16)
    model, guide = build(
        "vamp",
        family=family,
        data_shape=(64,),
        hidden=(32,),
        likelihood=likelihood,
        input_scale=1 / 16,
    )
    before = mean_elbo(model, guide, x)
    result = fit(model, guide, x, epochs=4, batch_size=64, lr=3e-3, progress=False)
    after = mean_elbo(model, guide, x)
    assert after > before + 20, (before, after)
    assert result.train_elbo[-1] > result.train_elbo[0]


class _ShiftedNormal(Family):
    """A family whose mean reads the features."""

    def __init__(self, latent_dim: int, feature_dim: int) -> None:
        super().__init__(latent_dim, feature_dim)
        self.shift = torch.nn.Linear(feature_dim, latent_dim)

    def forward(self, loc, scale, features):
        return pyro.distributions.Normal(loc + self.shift(features), scale).to_event(1)


def test_families_receive_features_of_the_particles_batch_shape():
    encoder = MLPEncoder((D,), D2, hidden=(8,))
    bottom = GaussianMLP(8 + D2, D1, hidden=(5,))
    guide = HierarchicalGuide(encoder, bottom, _ShiftedNormal(D2, 8), _ShiftedNormal(D1, 5))
    model, _ = build()
    x = binary(3)
    est = log_likelihood(model, guide, x, num_samples=8, seed=0)
    assert est.log_likelihood.shape == (3,)
    Trace_ELBO().loss_and_grads(model, guide, x)
    assert guide.family_bottom.shift.weight.grad.abs().sum() > 0


def test_state_dict_round_trip_reproduces_the_pair():
    model, guide = build("vamp")
    torch.manual_seed(1)
    fresh_model, fresh_guide = build("vamp")
    fresh_model.load_state_dict(model.state_dict())
    fresh_guide.load_state_dict(guide.state_dict())
    x = binary(4)
    first = log_likelihood(model, guide, x, num_samples=16, seed=5)
    second = log_likelihood(fresh_model, fresh_guide, x, num_samples=16, seed=5)
    torch.testing.assert_close(first.log_likelihood, second.log_likelihood)


def test_each_layer_can_have_its_own_family():
    if "iaf" not in FAMILIES:
        pytest.skip("family 'iaf' is not registered yet")
    encoder = MLPEncoder((D,), D2, hidden=(8,))
    guide = HierarchicalGuide.build(
        encoder, D1, hidden=(8,), family="iaf", num_flows=1, top_family="normal"
    )
    assert isinstance(guide.family_top, FAMILIES["normal"])
    assert isinstance(guide.family_bottom, FAMILIES["iaf"])
    with pytest.raises(ValueError, match="needs top_family"):
        HierarchicalGuide.build(encoder, D1, top_family_options={"num_flows": 1})
