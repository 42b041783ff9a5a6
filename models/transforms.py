"""Pyro transforms with fixes shared by the flow prior (:mod:`models.priors.flow`) and the
amortized IAF guide layers (:mod:`guides.flows.iaf`)."""

from __future__ import annotations

import torch
from pyro.distributions.transforms import AffineAutoregressive
from pyro.distributions.transforms.utils import clamp_preserve_gradients

__all__ = ["DtypeSafeAffineAutoregressive"]


class DtypeSafeAffineAutoregressive(AffineAutoregressive):
    """Pyro's ``AffineAutoregressive`` with dtype-safe inverses.

    Pyro 1.9's ``_inverse`` and ``_inverse_stable`` start from ``torch.zeros`` in the
    *default* dtype, which fails for float64 modules under a float32 default (and vice
    versa); here the zeros follow ``y``. Everything else is Pyro's.
    """

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x = [y.new_zeros(y.shape[:-1])] * y.size(-1)
        for idx in self.arn.permutation.tolist():
            mean, log_scale = self.arn(torch.stack(x, dim=-1))
            log_scale = clamp_preserve_gradients(
                log_scale, self.log_scale_min_clip, self.log_scale_max_clip
            )
            x[idx] = (y[..., idx] - mean[..., idx]) * torch.exp(-log_scale[..., idx])
        self._cached_log_scale = log_scale
        return torch.stack(x, dim=-1)

    def _inverse_stable(self, y: torch.Tensor) -> torch.Tensor:
        x = [y.new_zeros(y.shape[:-1])] * y.size(-1)
        for idx in self.arn.permutation.tolist():
            mean, logit_scale = self.arn(torch.stack(x, dim=-1))
            inverse_scale = 1 + torch.exp(-logit_scale[..., idx] - self.sigmoid_bias)
            x[idx] = inverse_scale * y[..., idx] + (1 - inverse_scale) * mean[..., idx]
        self._cached_log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
        return torch.stack(x, dim=-1)
