"""Amortized flow families (guides/flows, guides/families/flow.py): exact inverses and
log-determinants, normalised densities, and the ELBO against the linear-Gaussian oracle."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from guides.encoders import MLPEncoder
from guides.families import FAMILIES, FlowFamily
from guides.flows import AmortizedPlanar, AmortizedSylvester
from guides.registry import GUIDES
from ppl_vae.estimators import elbo, summarize_log_weights
from ppl_vae.importance import log_importance_weights
from ppl_vae.training import fit
from tests.oracle import LinearGaussian

FLOW_FAMILIES = sorted(name for name, cls in FAMILIES.items() if issubclass(cls, FlowFamily))

#: Every flow family with a few option variants: id -> (name, options, perturbation scale).
#: The perturbation moves all parameters away from their near-identity initialisation so the
#: maps are clearly nonlinear; autoregressive networks get a smaller one, which keeps their
#: Jacobians well conditioned (log-dets of a few nats) so float64 inverses stay at 1e-10.
CASES = {
    "iaf": ("iaf", {}, 0.2),
    "iaf-affine": ("iaf", {"stable": False, "hidden": (7, 5)}, 0.2),
    "planar": ("planar", {}, 0.5),
    "planar-hidden": ("planar", {"hidden": (6,)}, 0.5),
    "sylvester-householder": ("sylvester", {"num_householder": 3}, 0.5),
    "sylvester-orthogonal": ("sylvester", {"kind": "orthogonal", "num_columns": 2}, 0.5),
    "sylvester-orthogonal-full": ("sylvester", {"kind": "orthogonal", "hidden": (6,)}, 0.5),
    "spline": ("spline", {}, 0.2),
    "spline-linear": ("spline", {"order": "linear", "count_bins": 4, "bound": 2.5}, 0.2),
}


def test_cases_cover_every_flow_family():
    assert {name for name, _, _ in CASES.values()} == set(FLOW_FAMILIES)


def _perturbed_family(
    case: str, latent_dim: int, feature_dim: int, num_flows: int = 3, factor: float = 1.0
):
    name, options, size = CASES[case]
    family = FAMILIES[name](latent_dim, feature_dim, num_flows=num_flows, **options)
    with torch.no_grad():
        for param in family.parameters():
            param.add_(factor * size * torch.randn_like(param))
    return family


def _inputs(num_data: int, latent_dim: int, feature_dim: int):
    loc = torch.randn(num_data, latent_dim)
    scale = torch.rand(num_data, latent_dim) + 0.5
    return loc, scale, torch.randn(num_data, feature_dim)


def _forward(transforms, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The stack's output and the sum of its layers' log|det J| at ``z``."""
    log_det = torch.zeros(z.shape[:-1], dtype=z.dtype)
    for transform in transforms:
        y = transform(z)
        log_det = log_det + transform.log_abs_det_jacobian(z, y)
        z = y
    return z, log_det


def _inverse(transforms, y: torch.Tensor) -> torch.Tensor:
    for transform in reversed(transforms):
        y = transform.inv(y)
    return y


# -- exactness of the maps -----------------------------------------------------------------


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("case", sorted(CASES))
def test_flows_invert_exactly_with_particles_against_per_datapoint_context(case):
    family = _perturbed_family(case, latent_dim=3, feature_dim=5)
    loc, scale, h = _inputs(4, 3, 5)
    z = torch.randn(6, 4, 3)  # (K, N, d) against an (N, H) context
    transforms = family(loc, scale, h).transforms
    y, _ = _forward(transforms, z)
    assert y.shape == z.shape
    assert (y - z).abs().max() > 0.05  # the map is not (close to) the identity
    assert _inverse(transforms, y) is z  # the cache: samples are scored without inverting
    # Fresh objects and a copy of y: no cache, every layer inverts (numerically or not).
    torch.testing.assert_close(
        _inverse(family(loc, scale, h).transforms, y.clone()), z, atol=1e-9, rtol=0
    )
    # ... and at arbitrary points, which the flow never produced (e.g. MCMC draws).
    points = 2 * torch.randn(6, 4, 3)
    back = _inverse(family(loc, scale, h).transforms, points)
    torch.testing.assert_close(
        _forward(family(loc, scale, h).transforms, back)[0], points, atol=1e-9, rtol=0
    )


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("case", sorted(CASES))
def test_log_det_and_log_prob_match_autograd_jacobian(case):
    family = _perturbed_family(case, latent_dim=3, feature_dim=5)
    loc, scale, h = _inputs(4, 3, 5)
    num_particles = 2
    z = torch.randn(num_particles, 4, 3)

    def stack(z: torch.Tensor) -> torch.Tensor:
        return _forward(family(loc, scale, h).transforms, z)[0]

    jacobian = torch.autograd.functional.jacobian(stack, z)  # (K, N, d, K, N, d)
    blocks = torch.stack(
        [torch.stack([jacobian[k, n, :, k, n, :] for n in range(4)]) for k in range(num_particles)]
    )
    sign, expected = torch.linalg.slogdet(blocks)
    assert (sign > 0).all()  # orientation-preserving, as every layer is by construction
    y, log_det = _forward(family(loc, scale, h).transforms, z)
    assert log_det.shape == (num_particles, 4)
    torch.testing.assert_close(log_det, expected, atol=1e-10, rtol=1e-10)
    assert expected.abs().max() > 0.05
    # log q at a point it did not sample: the change of variables through the inverses.
    base = dist.Normal(loc, scale).to_event(1)
    log_q = family(loc, scale, h).log_prob(y.clone())
    torch.testing.assert_close(log_q, base.log_prob(z) - expected, atol=1e-9, rtol=1e-10)


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("case", sorted(CASES))
def test_density_integrates_to_one_on_a_grid(case):
    # q(z | x) for one datapoint, d = 2, by the midpoint rule on [-6, 6]^2 with spacing
    # 0.04. Half the usual perturbation keeps the densities free of features narrower than
    # ~0.1 (steep random splines have spikes a grid cannot resolve), so the rule's error and
    # the mass outside the box (base scales <= 0.7, 8 of them from the edge) are far below
    # the tolerance; a flow whose inverse missed part of the plane, or folded it, would not.
    family = _perturbed_family(case, latent_dim=2, feature_dim=3, num_flows=2, factor=0.5)
    loc, scale = torch.tensor([[0.3, -0.2]]), torch.tensor([[0.7, 0.5]])
    h = torch.randn(1, 3)
    step = 0.04
    axis = torch.arange(-6 + step / 2, 6, step)
    grid = torch.cartesian_prod(axis, axis).unsqueeze(-2)  # (G, 1, 2) against N = 1
    log_q = family(loc, scale, h).log_prob(grid)
    assert torch.isfinite(log_q).all()
    mass = log_q.exp().sum() * step**2
    assert abs(mass.item() - 1) < 2e-3


@pytest.mark.usefixtures("float64")
@pytest.mark.parametrize("layer", ["planar", "sylvester"])
def test_numerical_inverses_have_exact_gradients(layer):
    # The root finder ends on one differentiable Newton step: implicit-function gradients.
    torch.manual_seed(1)
    if layer == "planar":
        flow = AmortizedPlanar(3, 2)
    else:
        flow = AmortizedSylvester(3, 2, kind="orthogonal", num_columns=2)
    with torch.no_grad():
        for param in flow.parameters():
            param.add_(0.5 * torch.randn_like(param))
    h = torch.randn(4, 2)
    y = torch.randn(4, 3, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y: flow.condition(h)._inverse(y), (y,))
    weight = flow.net[-1].weight

    def inverse_of_weight(w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            weight.copy_(w)
        return flow.condition(h)._inverse(y.detach())

    w0 = weight.detach().clone()
    direction = torch.randn_like(w0)
    eps = 1e-6
    numeric = (
        inverse_of_weight(w0 + eps * direction) - inverse_of_weight(w0 - eps * direction)
    ) / (2 * eps)
    with torch.no_grad():
        weight.copy_(w0)
    x = flow.condition(h)._inverse(y.detach())
    (grad,) = torch.autograd.grad((x * numeric.detach()).sum(), weight)
    # <d x / d w . direction, numeric> == |numeric|^2 when the gradient is right.
    torch.testing.assert_close(
        (grad * direction).sum(), numeric.square().sum(), rtol=1e-6, atol=1e-9
    )


# -- the linear-Gaussian oracle ------------------------------------------------------------


def _oracle() -> LinearGaussian:
    # Seed 7 draws a posterior with correlation 0.61: the best diagonal Gaussian misses
    # log p(x) by 0.23 nats, so closing that gap needs the flow.
    return LinearGaussian.random(data_dim=5, latent_dim=2, s=0.5, seed=7)


def _mean_field_gap(oracle: LinearGaussian) -> float:
    """KL(q* || p(z | x)) of the best diagonal Gaussian q*: variances 1 / Lambda_ii, so
    0.5 * (sum_i log Lambda_ii - log det Lambda), the same for every x."""
    precision = torch.linalg.inv(oracle.posterior_cov())
    return 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))


class _PosteriorMeanEncoder(nn.Module):
    """The encoder interface with the oracle's exact posterior mean and the best diagonal
    standard deviations: ``features(x) = x``, no parameters of its own."""

    def __init__(self, oracle: LinearGaussian) -> None:
        super().__init__()
        self.oracle = oracle
        self.latent_dim = oracle.latent_dim
        self.feature_dim = oracle.W.shape[0]
        precision = torch.linalg.inv(oracle.posterior_cov())
        self.register_buffer("scale", precision.diagonal().rsqrt())

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def gaussian(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.oracle.posterior_mean(h), self.scale.expand(h.shape[:-1] + self.scale.shape)


def _train(oracle: LinearGaussian, guide, x: torch.Tensor, *, steps: int, lr: float) -> None:
    """Full-batch SVI with 16 vectorized particles per step (low-noise gradients at almost
    no extra cost: the step time is mostly Pyro's overhead) and a learning rate decaying
    50-fold over the run."""
    optimizer = pyro.optim.ClippedAdam({"lr": lr, "lrd": 0.02 ** (1 / steps)})
    objective = Trace_ELBO(num_particles=16, vectorize_particles=True, max_plate_nesting=1)
    fit(
        oracle.model,
        guide,
        x,
        epochs=steps,
        batch_size=x.shape[0],
        optimizer=optimizer,
        elbo=objective,
        progress=False,
    )


@pytest.mark.parametrize("name", FLOW_FAMILIES)
def test_elbo_never_exceeds_the_evidence_and_is_recovers_it(name):
    # The exact posterior mean and the best diagonal scales as the base, the flow at its
    # initialisation and then briefly trained (100 steps, about 1-2 s): that takes the KL from
    # up to 1.8 nats (the stable IAF starts as a contraction, sigma ~ 0.88) to 0.03-0.2, so
    # the checks below are sharp and importance sampling has a decent proposal.
    oracle = _oracle()
    x = oracle.sample(48, seed=1)
    guide = GUIDES[name](_PosteriorMeanEncoder(oracle))
    _train(oracle, guide, x, steps=100, lr=0.01)
    num_samples = 500
    log_w = log_importance_weights(oracle.model, guide, x, num_samples=num_samples, seed=0)
    truth = oracle.log_marginal(x)
    # ELBO(x) = log p(x) - KL <= log p(x). The estimate is a mean of K iid log weights, so by
    # the CLT it exceeds ELBO(x) by 5 of its standard errors with probability ~3e-7 per
    # datapoint: a log-density wrong by more than 5 se (~0.01-0.03 nats here) shows up.
    estimate = log_w.mean(0)
    stderr = log_w.std(0) / math.sqrt(num_samples)
    assert (estimate <= truth + 5 * stderr).all()
    # Importance sampling with a normalised q converges to log p(x); a q off by a constant
    # factor c would be off by log c. 4 standard errors (delta method) of the mean.
    summary = summarize_log_weights(log_w)
    mean_stderr = summary["stderr"].square().sum().sqrt() / x.shape[0]
    assert abs(summary["log_likelihood"].mean() - truth.mean()) < 4 * mean_stderr


def test_trained_iaf_guide_reaches_the_evidence():
    # Amortized training from scratch, encoder linear in x (hidden=()), float32; about 5 s.
    oracle = _oracle()
    assert _mean_field_gap(oracle) > 0.2  # so the 0.05 bar below needs the correlations
    x = oracle.sample(128, seed=1)
    guide = GUIDES["iaf"](MLPEncoder((5,), 2, hidden=()))
    _train(oracle, guide, x, steps=500, lr=0.03)
    estimate = elbo(oracle.model, guide, x, num_samples=200, seed=1)
    truth = oracle.log_marginal(x)
    # With a nearly exact q the log weights hardly vary, so the mean over 128 x 200 draws has
    # a standard error ~1e-3: the 0.05 bar is about the fit, not Monte Carlo luck.
    gap = float((truth - estimate).mean())
    assert -0.01 < gap < 0.05
