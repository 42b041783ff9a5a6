r"""Mixture of discretized logistics for 8-bit data, as in PixelCNN++ [1].

An integer :math:`x \in \{0, \dots, B - 1\}` (``num_bins`` B = 256) is mapped to the grid
:math:`\tilde x = 2x / (B - 1) - 1` on [-1, 1], whose bins have half-width
:math:`h = 1 / (B - 1)`. With K components (``num_components``), mixture weights
:math:`\pi = \mathrm{softmax}(w)`, means :math:`\mu_k` and scales :math:`s_k = e^{\rho_k}`,

.. math::

    P(x) = \sum_{k=1}^K \pi_k \left[\sigma\!\left(\frac{\tilde x + h - \mu_k}{s_k}\right)
           - \sigma\!\left(\frac{\tilde x - h - \mu_k}{s_k}\right)\right],

where the edge bins take the whole tails: the first cdf is 1 at :math:`x = B - 1` and the
second is 0 at :math:`x = 0`. The decoder gives :math:`3K` outputs per element, in the order
(:math:`w_{1..K}`, :math:`\mu_{1..K}`, :math:`\rho_{1..K}`); :math:`\rho` is clamped below at
``min_log_scale`` (-7, as in [1]).

Numerics: with :math:`a = (\tilde x + h - \mu)/s > b = (\tilde x - h - \mu)/s`, the bin mass is
computed in log space through the identity

.. math:: \sigma(a) - \sigma(b) = \sigma(a)\, \sigma(-b)\, \left(1 - e^{-(a - b)}\right),

i.e. ``logsigmoid(a) + logsigmoid(-b) + log(-expm1(b - a))``: exact and finite for every bin
and both dtypes, with no cancellation. It replaces [1]'s fallback for bins of mass below
1e-5 (log density at the bin centre plus log bin width, an approximation needed there because
the difference of two cdfs loses all digits in float32); both agree where the fallback is
accurate. The mixture is a ``logsumexp`` over ``log_softmax(w)`` plus the component terms.

References:

[1] T. Salimans, A. Karpathy, X. Chen and D. P. Kingma, "PixelCNN++: improving the PixelCNN
    with discretized logistic mixture likelihood and other modifications", ICLR 2017.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch.distributions import constraints

from models.likelihoods.base import Likelihood
from models.likelihoods.categorical import integer_range_violation

__all__ = ["DiscretizedLogisticLikelihood", "DiscretizedLogisticMixture"]


def _log1mexp(log_d: torch.Tensor) -> torch.Tensor:
    r""":math:`\log(1 - e^{-d})` from :math:`\log d`, also where :math:`d` underflows."""
    d = log_d.exp()
    small = d < 1e-8  # log d - d/2 + O(d^2): error below 1e-17
    return torch.where(small, log_d - d / 2, torch.log(-torch.expm1(-d.clamp(min=1e-8))))


class DiscretizedLogisticMixture(dist.TorchDistribution):
    r"""Mixture of discretized logistics over ``{0, ..., num_bins - 1}``; parameters have the
    components in the last dimension, the batch shape is everything before it, the event
    shape is ``()``. ``mean`` is exact (a sum of :math:`B - 1` survival probabilities);
    samples are floats."""

    arg_constraints = {
        "logits": constraints.real_vector,
        "locs": constraints.real_vector,
        "log_scales": constraints.real_vector,
    }

    def __init__(
        self,
        logits: torch.Tensor,
        locs: torch.Tensor,
        log_scales: torch.Tensor,
        num_bins: int = 256,
        validate_args: bool | None = None,
    ) -> None:
        self.logits, self.locs, self.log_scales = torch.broadcast_tensors(logits, locs, log_scales)
        self.num_bins = int(num_bins)
        super().__init__(self.logits.shape[:-1], torch.Size(), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return constraints.integer_interval(0, self.num_bins - 1)

    def expand(self, batch_shape, _instance=None) -> DiscretizedLogisticMixture:
        new = self._get_checked_instance(DiscretizedLogisticMixture, _instance)
        shape = torch.Size(batch_shape) + self.logits.shape[-1:]
        new.logits = self.logits.expand(shape)
        new.locs = self.locs.expand(shape)
        new.log_scales = self.log_scales.expand(shape)
        new.num_bins = self.num_bins
        super(DiscretizedLogisticMixture, new).__init__(
            torch.Size(batch_shape), torch.Size(), validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        half = 1.0 / (self.num_bins - 1)
        value = value.unsqueeze(-1).to(self.locs.dtype)
        centered = (2 * half * value - 1) - self.locs
        inv_scale = torch.exp(-self.log_scales)
        log_cdf_plus = F.logsigmoid(inv_scale * (centered + half))  # log P(y <= upper edge)
        log_sf_minus = F.logsigmoid(-inv_scale * (centered - half))  # log P(y > lower edge)
        log_gap = _log1mexp(math.log(2 * half) - self.log_scales)  # log(1 - e^{-(a - b)})
        interior = log_cdf_plus + log_sf_minus + log_gap
        per_component = torch.where(
            value <= 0,
            log_cdf_plus,
            torch.where(value >= self.num_bins - 1, log_sf_minus, interior),
        )
        return torch.logsumexp(F.log_softmax(self.logits, -1) + per_component, -1)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:  # noqa: B008
        with torch.no_grad():
            shape = self._extended_shape(sample_shape)
            k = dist.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            full = shape + self.logits.shape[-1:]
            loc = self.locs.expand(full).gather(-1, k).squeeze(-1)
            scale = self.log_scales.expand(full).gather(-1, k).squeeze(-1).exp()
            tiny = torch.finfo(loc.dtype).tiny
            u = torch.rand(shape, dtype=loc.dtype, device=loc.device).clamp(tiny, 1 - tiny)
            y = loc + scale * (torch.log(u) - torch.log1p(-u))
            return ((y + 1) * (self.num_bins - 1) / 2).round().clamp(0, self.num_bins - 1)

    @property
    def mean(self) -> torch.Tensor:
        # E[x] = sum_{j=1}^{B-1} P(x >= j), P(x >= j) = sum_k pi_k sigmoid((mu_k - t_j) / s_k)
        # with t_j = 2j / (B - 1) - 1 - h the lower edge of bin j; bins go in chunks so the
        # temporaries stay below 2^24 elements.
        half = 1.0 / (self.num_bins - 1)
        edges = torch.arange(1, self.num_bins, dtype=self.locs.dtype, device=self.locs.device)
        edges = 2 * half * edges - 1 - half
        locs, inv_scale = self.locs.unsqueeze(-1), torch.exp(-self.log_scales).unsqueeze(-1)
        survival = torch.zeros_like(self.locs)
        for chunk in edges.split(max(1, 2**24 // max(1, self.locs.numel()))):
            survival = survival + torch.sigmoid(inv_scale * (locs - chunk)).sum(-1)
        return (F.softmax(self.logits, -1) * survival).sum(-1)


class DiscretizedLogisticLikelihood(Likelihood):
    """Independent elements, each a mixture of discretized logistics over ``0..num_bins-1``.

    :param num_components: K mixture components per element (``>= 1``); the decoder gives
        ``3 * K`` outputs per element.
    :param num_bins: number of integer values, 256 for 8-bit pixels; ``>= 2``.
    :param min_log_scale: lower clamp of the log-scales (on the [-1, 1] grid).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        num_components: int = 5,
        num_bins: int = 256,
        min_log_scale: float = -7.0,
    ) -> None:
        super().__init__(data_shape)
        if int(num_components) != num_components or num_components < 1:
            raise ValueError(f"num_components must be an integer >= 1, got {num_components!r}")
        if int(num_bins) != num_bins or num_bins < 2:
            raise ValueError(f"num_bins must be an integer >= 2, got {num_bins!r}")
        self.num_components = int(num_components)
        self.num_bins = int(num_bins)
        self.min_log_scale = float(min_log_scale)
        self.params_per_element = 3 * self.num_components

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return constraints.integer_interval(0, self.num_bins - 1)

    def base_distribution(self, params: torch.Tensor) -> dist.TorchDistribution:
        logits, locs, log_scales = params.movedim(-1 - self.event_dim, -1).chunk(3, dim=-1)
        log_scales = log_scales.clamp(min=self.min_log_scale)
        return DiscretizedLogisticMixture(logits, locs, log_scales, num_bins=self.num_bins)

    def support_violation(self, x: torch.Tensor) -> str | None:
        return integer_range_violation(x, "discretized_logistic", self.num_bins - 1, "num_bins")
