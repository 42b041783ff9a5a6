"""DiagonalNormalMixture: the expanded-square log density against MixtureSameFamily's.

The reference is :class:`~pyro.distributions.MixtureSameFamily` evaluated in float64, which
computes every ``(z - mu)^2`` directly. Tolerances: in float64 the expansion loses about
1e-16 of its largest term (here below 1e5), so 1e-9 absolute; in float32 the result is
rounded once from float64, so float32's relative rounding, 1e-6 of |log p|.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

from models.priors import MixturePrior, VampPrior
from models.priors.diagonal_mixture import DiagonalNormalMixture


def parameters(num_components: int = 50, dim: int = 8, dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(num_components, generator=generator, dtype=dtype)
    loc = 2 * torch.randn(num_components, dim, generator=generator, dtype=dtype)
    # scales from 0.005 to 2: sharp posteriors at the pseudo-inputs are where the expansion
    # cancels most (z^2 / sigma^2 up to about 1e6)
    scale = torch.exp(torch.empty(num_components, dim, dtype=dtype).uniform_(-5.3, 0.7))
    return logits, loc, scale


def reference(logits, loc, scale) -> dist.MixtureSameFamily:
    return dist.MixtureSameFamily(
        dist.Categorical(logits=logits.double()),
        dist.Normal(loc.double(), scale.double()).to_event(1),
    )


def points(mixture: DiagonalNormalMixture, shape=(64, 3)) -> torch.Tensor:
    """Draws from the mixture (near the sharp components) and far-off points."""
    near = mixture.sample(shape)
    far = 6 * torch.randn_like(near)
    return torch.cat([near, far])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_prob_matches_mixture_same_family(dtype):
    logits, loc, scale = parameters(dtype=dtype)
    mixture = DiagonalNormalMixture(logits, loc, scale)
    z = points(mixture)
    ours = mixture.log_prob(z)
    expected = reference(logits, loc, scale).log_prob(z.double())
    assert ours.dtype == dtype and ours.shape == z.shape[:-1]
    if dtype == torch.float64:
        torch.testing.assert_close(ours, expected, rtol=0, atol=1e-9)
    else:
        torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-5)


def test_gradients_match_mixture_same_family(float64):
    logits, loc, scale = (t.requires_grad_() for t in parameters(dtype=torch.float64))
    z = points(DiagonalNormalMixture(logits, loc, scale)).detach().requires_grad_()
    ours = torch.autograd.grad(
        DiagonalNormalMixture(logits, loc, scale).log_prob(z).sum(), (logits, loc, scale, z)
    )
    expected = torch.autograd.grad(
        reference(logits, loc, scale).log_prob(z).sum(), (logits, loc, scale, z)
    )
    for got, want in zip(ours, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-8)


def test_expanded_by_a_plate_keeps_the_density():
    logits, loc, scale = parameters()
    mixture = DiagonalNormalMixture(logits, loc, scale)
    z = points(mixture, shape=(7,))  # (14, d)
    with pyro.plate("data", z.shape[0]):
        trace = pyro.poutine.trace(lambda: pyro.sample("z", mixture, obs=z)).get_trace()
    site = trace.nodes["z"]
    assert isinstance(site["fn"], DiagonalNormalMixture)
    assert site["fn"].batch_shape == (14,)
    torch.testing.assert_close(site["fn"].log_prob(z), mixture.log_prob(z))
    expanded = mixture.expand((5, 14))
    assert expanded.log_prob(z).shape == (5, 14)
    assert expanded.sample().shape == (5, 14, loc.shape[-1])


def test_memory_is_points_times_components_not_times_dimension():
    """One estimator pass against a 500-component, 40-dimensional VampPrior: the largest
    tensor allocated is the (R, C) float64 matrix, never R x C x d."""
    logits, loc, scale = parameters(num_components=500, dim=40)
    mixture = DiagonalNormalMixture(logits, loc, scale)
    z = torch.randn(4096, 40)
    cpu = torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[cpu], profile_memory=True) as profile:
        mixture.log_prob(z)
    largest = max(event.self_cpu_memory_usage for event in profile.events())
    points_by_components = 4096 * 500 * 8  # float64 bytes
    assert largest <= points_by_components
    assert points_by_components < 4096 * 500 * 40 * 4  # what broadcasting would allocate


def test_priors_use_it_and_keep_working_as_mixtures():
    mixture = MixturePrior(4, num_components=3)()
    assert isinstance(mixture, DiagonalNormalMixture)
    assert isinstance(mixture, torch.distributions.MixtureSameFamily)
    encoder = torch.nn.Linear(6, 8)

    def gaussian_encoder(u):
        loc, raw = encoder(u).chunk(2, dim=-1)
        return loc, torch.nn.functional.softplus(raw) + 1e-3

    vamp = VampPrior(4, encoder=gaussian_encoder, data_shape=(6,), num_components=5)()
    assert isinstance(vamp, DiagonalNormalMixture)
    z = vamp.sample((10,))
    base = vamp.component_distribution.base_dist
    torch.testing.assert_close(
        vamp.log_prob(z).double(),
        reference(vamp.mixture_distribution.logits, base.loc, base.scale).log_prob(z.double()),
        rtol=1e-6,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "shapes, message",
    [
        (((3,), (3, 2), (3, 1)), "loc, scale of shape"),
        (((3, 1), (3, 2), (3, 2)), "logits of shape"),
        (((4,), (3, 2), (3, 2)), "4 mixture logits for 3 components"),
    ],
)
def test_bad_shapes_are_named(shapes, message):
    tensors = [torch.ones(shape) for shape in shapes]
    with pytest.raises(ValueError, match=message):
        DiagonalNormalMixture(*tensors)
