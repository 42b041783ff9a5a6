"""One checklist over every registered prior (models/priors), plus prior-specific checks.

Every entry of ``PRIORS`` is built the way the builder builds it: priors that declare
``needs_encoder`` (the VampPrior) get a tiny guide encoder and the data shape.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch.distributions import kl_divergence

from guides import DiagonalNormalGuide, MLPEncoder
from models import PRIORS, VAE, BernoulliLikelihood, MLPDecoder
from models.priors import FlowPrior, MixturePrior, StudentTPrior, VampPrior

DATA_SHAPE = (6,)

#: Small options per prior so the checklist stays fast (defaults elsewhere).
OPTIONS = {"vamp": {"num_components": 5}, "mixture": {"num_components": 4}}

#: Priors whose KL divergence from a diagonal-Normal guide has a closed form in torch/Pyro;
#: TraceMeanField_ELBO uses it there and falls back to the sampled KL for all others.
ANALYTIC_KL = {"normal", "learned_normal", "laplace"}


def make_prior(name: str, latent_dim: int, encoder: torch.nn.Module | None = None):
    cls = PRIORS[name]
    options = dict(OPTIONS.get(name, {}))
    if getattr(cls, "needs_encoder", False):
        if encoder is None:
            encoder = MLPEncoder(DATA_SHAPE, latent_dim, hidden=(8,))
        options.update(encoder=encoder, data_shape=DATA_SHAPE)
    return cls(latent_dim, **options)


def make_vae(name: str, latent_dim: int = 3):
    """A tiny VAE and guide; the VampPrior gets the guide's own encoder object."""
    encoder = MLPEncoder(DATA_SHAPE, latent_dim, hidden=(8,))
    prior = make_prior(name, latent_dim, encoder)
    model = VAE(prior, MLPDecoder(latent_dim, 6, hidden=(8,)), BernoulliLikelihood(DATA_SHAPE))
    return model, DiagonalNormalGuide(encoder)


def perturb(prior: torch.nn.Module, size: float = 0.5) -> None:
    """Move learned parameters away from their (often symmetric) initial values."""
    with torch.no_grad():
        for param in prior.parameters():
            param.add_(size * torch.randn_like(param))


def binary_data(n: int = 5) -> torch.Tensor:
    return torch.randint(0, 2, (n, *DATA_SHAPE)).to(torch.get_default_dtype())


def test_registry_names():
    assert {"normal", "learned_normal", "mixture", "vamp", "laplace", "student_t", "flow"} <= set(
        PRIORS
    )
    assert set(OPTIONS) <= set(PRIORS) and ANALYTIC_KL <= set(PRIORS)


# ----------------------------------------------------------------------------- checklist


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_shapes_sampling_and_log_prob(name):
    d = 3
    prior = make_prior(name, d)
    pz = prior()
    assert pz.event_shape == (d,) and pz.batch_shape == () and pz.event_dim == 1
    assert pz.sample().shape == (d,)
    assert pz.sample((4, 2)).shape == (4, 2, d)
    z = 2.0 * torch.randn(7, 5, d)  # (K, N, d), values the prior did not produce
    log_p = prior().log_prob(z)
    assert log_p.shape == (7, 5) and torch.isfinite(log_p).all()


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_fixed_parameters_are_buffers_and_to_float64_works(name):
    prior = make_prior(name, 3)
    learned = {n for n, _ in prior.named_parameters()}
    buffers = {n for n, _ in prior.named_buffers()}
    assert not learned & buffers
    if name in {"normal", "laplace", "student_t"}:
        assert not learned and buffers
    prior = prior.to(torch.float64)
    pz = prior()
    assert pz.sample().dtype == torch.float64
    assert pz.sample((3,)).dtype == torch.float64
    log_p = pz.log_prob(torch.randn(4, 2, 3, dtype=torch.float64))
    assert log_p.dtype == torch.float64 and torch.isfinite(log_p).all()


def _midpoint_sinh_grid(n: int, half_width: float = 12.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes z = sinh(t) of the midpoint rule on t in (-T, T) and their weights h cosh(t)."""
    h = 2 * half_width / n
    t = -half_width + h * (torch.arange(n, dtype=torch.float64) + 0.5)
    return t.sinh(), h * t.cosh()


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("d", [1, 2])
@pytest.mark.parametrize("name", sorted(PRIORS))
def test_density_integrates_to_one(name, d):
    """The density integrates to 1 over R^d, learned parameters moved off their initial values.

    The substitution z = sinh(t), t in (-12, 12), reaches |z| = 8e4 with spacing ~h|z| far out,
    so heavy tails (Student-t(3)) and the wide tails a flow can have (its ReLU MADE's
    log-scales grow linearly in |z| up to the clamp at -5, a scale of up to e^10 over two
    layers) are integrated rather than cut off; the midpoint rule with 4000 (d = 1) or
    1000 x 1000 (d = 2) nodes converges fast for these smooth integrands. Measured errors:
    at most 4e-9 for every prior but two; the Laplace, whose cusp at 0 makes the rule
    second order, 4.8e-5 at d = 2 (h^2/12 per the Euler-Maclaurin formula); the flow at most
    3.3e-6 over 100 random perturbations of size 0.1 (larger ones can saturate the log-scale
    clamp at +3, features of width e^-6 that no fixed grid resolves). Hence the tolerance
    1e-4, while anything this test exists to catch (a missing normaliser or log-determinant,
    mixture weights that do not sum to one) changes the mass by a factor.
    """
    prior = make_prior(name, d)
    perturb(prior, 0.1 if name == "flow" else 0.5)
    nodes, weights = _midpoint_sinh_grid(4000 if d == 1 else 1000)
    if d == 1:
        z, w = nodes[:, None], weights
    else:
        z = torch.cartesian_prod(nodes, nodes)
        w = torch.cartesian_prod(weights, weights).prod(-1)
    with torch.no_grad():
        pz = prior()
        mass = sum(
            (pz.log_prob(z_chunk).exp() * w_chunk).sum()
            for z_chunk, w_chunk in zip(z.split(2**18), w.split(2**18), strict=True)
        )
    assert float(mass) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_gradients_reach_every_learned_parameter(name):
    model, guide = make_vae(name)
    if name == "vamp":
        assert model.prior.encoder is guide.encoder
    loss = Trace_ELBO().differentiable_loss(model, guide, binary_data())
    assert torch.isfinite(loss)
    loss.backward()
    for param_name, param in model.prior.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_state_dict_round_trip_reproduces_log_prob(name):
    prior = make_prior(name, 3)
    perturb(prior)
    z = torch.randn(4, 5, 3)
    expected = prior().log_prob(z)
    pyro.set_rng_seed(1)  # the copy starts from different random parameters
    copy = make_prior(name, 3)
    copy.load_state_dict(prior.state_dict())
    torch.testing.assert_close(copy().log_prob(z), expected, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(PRIORS))
def test_mean_field_elbo(name):
    """TraceMeanField_ELBO runs for every prior: with the analytic KL where one is
    registered, otherwise Pyro catches kl_divergence's NotImplementedError and uses the
    sampled KL (as Trace_ELBO does)."""
    model, guide = make_vae(name)
    x = binary_data()
    guide_trace = pyro.poutine.trace(guide).get_trace(x)
    model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=guide_trace)).get_trace(x)
    q, p = guide_trace.nodes["z"]["fn"], model_trace.nodes["z"]["fn"]
    if name in ANALYTIC_KL:
        kl = kl_divergence(q, p)
        assert kl.shape == (5,) and (kl >= 0).all()
    else:
        with pytest.raises(NotImplementedError):
            kl_divergence(q, p)
    for elbo in (TraceMeanField_ELBO(), Trace_ELBO()):
        pyro.clear_param_store()
        loss = elbo.differentiable_loss(model, guide, x)
        assert torch.isfinite(loss)
        params = [*model.prior.parameters(), *guide.parameters()]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.usefixtures("float64")
def test_analytic_kl_agrees_with_sampled_kl():
    """For the learned Normal, TraceMeanField_ELBO (analytic KL) and Trace_ELBO (sampled KL)
    estimate the same ELBO. Each has Monte Carlo error sd / sqrt(K) with sd the per-particle
    spread of its integrand (log p(x|z) resp. log w); with K = 4000 the two must agree within
    5 times the sum of those standard errors."""
    model, guide = make_vae("learned_normal")
    perturb(model.prior)
    x = binary_data(1)
    num = 4000
    options = {"num_particles": num, "vectorize_particles": True, "max_plate_nesting": 1}
    with torch.no_grad():
        analytic = TraceMeanField_ELBO(**options).loss(model, guide, x)
        sampled = Trace_ELBO(**options).loss(model, guide, x)
        q = guide.posterior(x)
        z = q.sample((num,))
        log_lik = model.decode(z).log_prob(x)
        log_w = model.prior().log_prob(z) + log_lik - q.log_prob(z)
    stderr = (log_lik.std().item() + log_w.std().item()) / math.sqrt(num)
    assert analytic == pytest.approx(sampled, abs=5 * stderr)


# ----------------------------------------------------------------------------- per prior


def test_mixture_log_prob_is_the_weighted_sum_of_components():
    prior = MixturePrior(2, num_components=3)
    perturb(prior)
    z = torch.randn(4, 5, 2)
    weights = prior.logits.softmax(-1)
    components = dist.Normal(prior.loc, prior.scale).to_event(1).log_prob(z[..., None, :]).exp()
    expected = (components * weights).sum(-1).log()
    torch.testing.assert_close(prior().log_prob(z), expected)
    assert not prior().has_rsample  # the guide draws z; the prior only scores it


def test_vamp_is_the_uniform_mixture_of_the_encoders_posteriors():
    encoder = MLPEncoder(DATA_SHAPE, 2, hidden=(8,))
    prior = VampPrior(2, encoder=encoder, data_shape=DATA_SHAPE, num_components=4)
    assert prior.pseudo_inputs.shape == (4, *DATA_SHAPE)
    assert ((prior.pseudo_inputs >= 0) & (prior.pseudo_inputs <= 1)).all()
    z = torch.randn(3, 2)
    loc, scale = encoder(prior.pseudo_inputs)
    expected = dist.Normal(loc, scale).to_event(1).log_prob(z[:, None]).logsumexp(-1)
    torch.testing.assert_close(prior().log_prob(z), expected - math.log(4))


def test_vamp_pseudo_inputs_start_from_training_examples():
    data = torch.randint(0, 2, (20, *DATA_SHAPE), dtype=torch.uint8)
    encoder = MLPEncoder(DATA_SHAPE, 2, hidden=(8,))
    prior = VampPrior(2, encoder=encoder, data_shape=DATA_SHAPE, num_components=5, pseudo_init=data)
    assert prior.pseudo_inputs.dtype == torch.get_default_dtype()
    rows = {tuple(r) for r in data.tolist()}
    assert all(tuple(int(v) for v in u) in rows for u in prior.pseudo_inputs.tolist())
    noise = VampPrior(2, encoder=encoder, data_shape=DATA_SHAPE, num_components=50, input_max=16)
    assert noise.pseudo_inputs.max() > 1 and noise.pseudo_inputs.max() <= 16


def _flow_to_base(prior: FlowPrior, z: torch.Tensor) -> torch.Tensor:
    """f(z): the scoring direction, through a fresh distribution (no transform cache)."""
    for transform in reversed(prior().transforms):
        z = transform.inv(z)
    return z


@pytest.mark.usefixtures("float64")
def test_flow_inverts_and_its_log_det_matches_autograd():
    prior = FlowPrior(3, num_flows=3)
    perturb(prior, 0.3)
    # Sampling (coordinate-by-coordinate inverse) and scoring (one pass) are inverses.
    eps = torch.randn(6, 3)
    z = eps
    for transform in prior().transforms:
        z = transform(z)
    torch.testing.assert_close(_flow_to_base(prior, z), eps)
    # log p(z) = log N(f(z); 0, I) + log |det df/dz|, the determinant taken by autograd, at
    # points the flow did not produce.
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)
    for point in 1.5 * torch.randn(4, 3):
        jacobian = torch.autograd.functional.jacobian(lambda v: _flow_to_base(prior, v), point)
        expected = base.log_prob(_flow_to_base(prior, point)) + jacobian.slogdet().logabsdet
        torch.testing.assert_close(prior().log_prob(point), expected)


def test_flow_scores_after_a_parameter_change_are_not_stale():
    """Pyro's AffineAutoregressive caches its last input; scoring the same z tensor after
    the parameters changed in place must still see the new parameters."""
    prior = FlowPrior(3)
    z = torch.randn(5, 3)
    before = prior().log_prob(z)
    perturb(prior)
    after = prior().log_prob(z)
    assert not torch.allclose(before, after)
    fresh = FlowPrior(3)
    fresh.load_state_dict(prior.state_dict())
    torch.testing.assert_close(after, fresh().log_prob(z.clone()))


def test_student_t_df_is_a_fixed_option():
    prior = StudentTPrior(2, df=5.0)
    assert not list(prior.parameters())
    assert prior().base_dist.df.tolist() == [5.0, 5.0]


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("mixture", {"num_components": 0}),
        ("mixture", {"init_scale": 1e-4}),
        ("learned_normal", {"min_scale": -1.0}),
        ("student_t", {"df": 0.0}),
        ("flow", {"num_flows": 0}),
        ("flow", {"hidden": (2,)}),
        ("laplace", {}),
    ],
)
def test_bad_options_are_rejected(name, options):
    latent_dim = 0 if not options else 3
    with pytest.raises(ValueError):
        PRIORS[name](latent_dim, **options)


def test_vamp_rejects_inconsistent_arguments():
    encoder = MLPEncoder(DATA_SHAPE, 2, hidden=(8,))
    with pytest.raises(ValueError, match="pseudo_init"):
        VampPrior(2, encoder=encoder, data_shape=DATA_SHAPE, pseudo_init=torch.zeros(3, 5))
    with pytest.raises(ValueError, match="fewer than"):
        VampPrior(
            2,
            encoder=encoder,
            data_shape=DATA_SHAPE,
            num_components=5,
            pseudo_init=torch.zeros(3, 6),
        )
    with pytest.raises(ValueError, match="latent_dim"):
        VampPrior(3, encoder=encoder, data_shape=DATA_SHAPE)
