r"""The linear-Gaussian VAE, whose log p(x) and posterior are known in closed form.

.. math::

    z \sim \mathcal{N}(0, I_d), \qquad x \mid z \sim \mathcal{N}(Wz + b, s^2 I_D),

so :math:`p(x) = \mathcal{N}(x; b, WW^\top + s^2 I)` and
:math:`p(z \mid x) = \mathcal{N}(\Sigma W^\top (x - b) / s^2, \Sigma)` with
:math:`\Sigma = (I + W^\top W / s^2)^{-1}`.

The model and guides are plain Pyro functions (not taken from models/ or guides/), which
also checks that the engine works on user-written programs.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch


@dataclass
class LinearGaussian:
    W: torch.Tensor  # (D, d)
    b: torch.Tensor  # (D,)
    s: float

    @classmethod
    def random(cls, data_dim: int = 5, latent_dim: int = 2, s: float = 0.5, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        dtype = torch.get_default_dtype()
        W = torch.randn(data_dim, latent_dim, generator=gen, dtype=dtype)
        b = torch.randn(data_dim, generator=gen, dtype=dtype)
        return cls(W, b, s)

    @property
    def latent_dim(self) -> int:
        return self.W.shape[1]

    def marginal(self) -> dist.MultivariateNormal:
        cov = self.W @ self.W.T + self.s**2 * torch.eye(self.W.shape[0], dtype=self.W.dtype)
        return dist.MultivariateNormal(self.b, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        return self.marginal().log_prob(x)

    def sample(self, n: int, seed: int = 1) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.latent_dim, generator=gen, dtype=self.W.dtype)
        noise = torch.randn(n, self.W.shape[0], generator=gen, dtype=self.W.dtype)
        return z @ self.W.T + self.b + self.s * noise

    def posterior_cov(self) -> torch.Tensor:
        eye = torch.eye(self.latent_dim, dtype=self.W.dtype)
        return torch.linalg.inv(eye + self.W.T @ self.W / self.s**2)

    def posterior_mean(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.b) @ self.W @ self.posterior_cov().T / self.s**2

    def model(self, x: torch.Tensor, mask=None) -> None:
        with pyro.plate("data", x.shape[0]):
            zeros = torch.zeros(self.latent_dim, dtype=x.dtype)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def gaussian_guide(self, mean_shift: float = 0.0, cov_scale: float = 1.0):
        """A Gaussian guide: the exact posterior when ``mean_shift=0, cov_scale=1``."""
        cov = self.posterior_cov() * cov_scale

        def guide(x: torch.Tensor, mask=None) -> None:
            loc = self.posterior_mean(x) + mean_shift
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.MultivariateNormal(loc, covariance_matrix=cov))

        return guide

    def kl_to_posterior(self, x: torch.Tensor, mean_shift: float, cov_scale: float):
        """Closed-form KL(q || p(z | x)) for :meth:`gaussian_guide`, per datapoint."""
        p_cov = self.posterior_cov()
        q = dist.MultivariateNormal(
            self.posterior_mean(x) + mean_shift, covariance_matrix=p_cov * cov_scale
        )
        p = dist.MultivariateNormal(self.posterior_mean(x), covariance_matrix=p_cov)
        return torch.distributions.kl_divergence(q, p)
