r"""Training objectives by name: Pyro ELBO objects built with checked options.

Each entry of :data:`OBJECTIVES` builds a :class:`pyro.infer.elbo.ELBO`; the loss SVI
minimises is minus a sum over the minibatch's datapoints of a per-datapoint bound, so
``-loss / batch_size`` is the bound per datapoint in nats (what :func:`ppl_vae.training.fit`
reports as the training objective). Notation: :math:`w_k = p(x, z_k) / q(z_k \mid x)` with
:math:`z_1, \dots, z_K \sim q(z \mid x)` independently.

Particles are vectorized (``vectorize_particles=True``): the model and guide run once under
an outer ``pyro.plate`` of size K at dim -2, which the model/guide contract of DESIGN.md
section 2 allows (every per-datapoint site in ``pyro.plate("data")`` at dim -1, shapes
broadcast on the left), so ``max_plate_nesting=1`` is given and Pyro needs no trial run to
guess it. With one particle the objectives are built exactly as Pyro's defaults (no
vectorization, plate nesting not bounded), so ``trace_elbo`` equals ``Trace_ELBO()``.

The Rényi/IWAE loss keeps the ``"data"`` plate unsummed inside the log-mean-exp only
while every sample site lies in that plate (Pyro sums the plates not shared by all sites);
a model with a global latent outside it would get one log-mean-exp over the whole batch.

References

[1] Kingma & Welling (2014), *Auto-Encoding Variational Bayes*, ICLR (the SGVB
    estimators: A is :func:`trace_elbo`, B with analytic KL is :func:`trace_mean_field`);
    Wingate & Weber (2013), *Automated Variational Inference in Probabilistic Programming*.
[2] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
[3] Li & Turner (2016), *Rényi Divergence Variational Inference*, NeurIPS.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pyro.infer import RenyiELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.elbo import ELBO

from ppl_vae.errors import ConfigError
from ppl_vae.registry import lookup

__all__ = [
    "DEFAULT_OBJECTIVE",
    "OBJECTIVES",
    "Objective",
    "build_objective",
    "iwae",
    "renyi",
    "trace_elbo",
    "trace_mean_field",
]

DEFAULT_OBJECTIVE = "trace_elbo"

#: The contract puts the "data" plate at dim -1 and nothing else to its left.
_MAX_PLATE_NESTING = 1


def _particles(num_particles: Any, minimum: int, objective: str) -> int:
    if isinstance(num_particles, bool) or not isinstance(num_particles, numbers.Integral):
        raise ConfigError(
            f"num_particles of {objective} must be a whole number, got {num_particles!r}"
        )
    if num_particles < minimum:
        hint = (
            "; with one particle the bound is the ELBO: use the objective 'trace_elbo'"
            if minimum > 1
            else ""
        )
        raise ConfigError(
            f"num_particles of {objective} must be >= {minimum}, got {num_particles}{hint}"
        )
    return int(num_particles)


def _vectorized(num_particles: int) -> dict[str, Any]:
    if num_particles == 1:
        return {}
    return {"vectorize_particles": True, "max_plate_nesting": _MAX_PLATE_NESTING}


def trace_elbo(*, num_particles: int = 1) -> Trace_ELBO:
    r"""The ELBO [1], estimated by Monte Carlo (Pyro's :class:`~pyro.infer.Trace_ELBO`):

    .. math::

        \mathcal{L}(x) = \mathbb{E}_{q(z \mid x)}[\log p(x, z) - \log q(z \mid x)]
        \approx \frac{1}{K} \sum_{k=1}^K \log w_k \le \log p(x).

    The loss is :math:`-\sum_n \widehat{\mathcal{L}}(x_n)`, an unbiased estimate of minus
    the ELBO of the minibatch.

    :param num_particles: draws K per datapoint (>= 1), averaged.
    """
    num_particles = _particles(num_particles, 1, "trace_elbo")
    return Trace_ELBO(num_particles=num_particles, **_vectorized(num_particles))


def trace_mean_field(*, num_particles: int = 1) -> TraceMeanField_ELBO:
    r"""The ELBO with analytic KL where Pyro has it (:class:`~pyro.infer.TraceMeanField_ELBO`):

    .. math::

        \mathcal{L}(x) = \mathbb{E}_{q(z \mid x)}[\log p(x \mid z)]
            - \mathrm{KL}(q(z \mid x) \,\|\, p(z))
        \approx \frac{1}{K} \sum_{k=1}^K \log p(x \mid z_k) - \mathrm{KL}(q \,\|\, p).

    For each latent site the KL is closed-form when ``torch.distributions.kl_divergence``
    knows the pair (e.g. diagonal Normal guide and standard Normal prior); otherwise that
    site falls back on the Monte Carlo :math:`\log p(z_k) - \log q(z_k \mid x)`, so the
    estimate is always unbiased, with less variance wherever the KL is exact [1]. The
    loss is :math:`-\sum_n \widehat{\mathcal{L}}(x_n)`, as for :func:`trace_elbo`.

    Requires a mean-field, fully reparameterised guide (Pyro checks this under
    validation); the guide's site order should follow the model's.

    :param num_particles: draws K per datapoint (>= 1) for the likelihood term.
    """
    num_particles = _particles(num_particles, 1, "trace_mean_field")
    return TraceMeanField_ELBO(num_particles=num_particles, **_vectorized(num_particles))


def iwae(*, num_particles: int = 5) -> RenyiELBO:
    r"""The importance-weighted bound of Burda et al. [2] (``RenyiELBO(alpha=0)``):

    .. math::

        \mathcal{L}_K(x) = \mathbb{E}_{z_{1:K} \sim q}\Big[\log \frac{1}{K}
            \sum_{k=1}^K w_k\Big], \qquad
        \mathcal{L}(x) = \mathcal{L}_1 \le \mathcal{L}_K \le \mathcal{L}_{K+1}
            \le \log p(x).

    The log-mean-exp is taken per datapoint (the ``"data"`` plate is common to all
    sites), so the loss is :math:`-\sum_n \log \frac{1}{K} \sum_k w_{kn}`: minus the sum of
    the per-datapoint IS(K) estimates of :math:`\log p(x_n)` on the draws of the step. Its
    gradient is :math:`\sum_k \tilde w_k \nabla \log w_k` with normalised weights
    :math:`\tilde w_k = w_k / \sum_j w_j` (reparameterised guides; Pyro's RenyiELBO
    refuses guides with non-reparameterisable sites).

    :param num_particles: K >= 2 (default 5, as in [2]'s middle setting). With K = 1 the
        bound *is* the ELBO, computed with a different code path and no analytic KL, so it
        is refused in favour of ``trace_elbo``. Cost grows linearly in K per step.
    """
    num_particles = _particles(num_particles, 2, "iwae")
    return RenyiELBO(alpha=0.0, num_particles=num_particles, **_vectorized(num_particles))


def renyi(*, alpha: float = 0.5, num_particles: int = 5) -> RenyiELBO:
    r"""The variational Rényi bound of Li & Turner [3] (:class:`~pyro.infer.RenyiELBO`):

    .. math::

        \mathcal{L}_{\alpha,K}(x) = \mathbb{E}_{z_{1:K} \sim q}\Big[\frac{1}{1-\alpha}
            \log \frac{1}{K} \sum_{k=1}^K w_k^{1-\alpha}\Big], \qquad \alpha \ne 1.

    In the limit of many particles :math:`\mathcal{L}_\alpha` decreases in
    :math:`\alpha`: :math:`\alpha = 0` is :func:`iwae`, :math:`\alpha \to 1` the ELBO,
    :math:`0 < \alpha < 1` lies between the two, and :math:`\alpha < 0` is no longer a lower
    bound on :math:`\log p(x)` (so the reported objective may exceed it). The loss is
    :math:`-\sum_n \frac{1}{1-\alpha} \log \frac{1}{K} \sum_k w_{kn}^{1-\alpha}`.

    :param alpha: the order, finite and != 1; default 0.5 (the Hellinger-type bound, a
        middle ground between the ELBO and IWAE studied in [3]).
    :param num_particles: K >= 2 (default 5); with K = 1 every :math:`\alpha` gives the ELBO.
    """
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ConfigError(f"alpha of renyi must be a number, got {alpha!r}")
    alpha = float(alpha)
    if not math.isfinite(alpha) or alpha == 1.0:
        raise ConfigError(
            f"alpha of renyi must be finite and != 1, got {alpha}; alpha = 1 is the ELBO: "
            "use the objective 'trace_elbo'"
        )
    num_particles = _particles(num_particles, 2, "renyi")
    return RenyiELBO(alpha=alpha, num_particles=num_particles, **_vectorized(num_particles))


@dataclass(frozen=True)
class Objective:
    """A registry entry: the builder, the options it accepts and whether the latent sites
    may be rescaled (:mod:`ppl_vae.kl_scaling`) under it."""

    build: Callable[..., ELBO]
    options: tuple[str, ...]
    supports_beta: bool = True
    summary: str = field(default="", compare=False)


OBJECTIVES: Mapping[str, Objective] = {
    "trace_elbo": Objective(trace_elbo, ("num_particles",), True, "Monte Carlo ELBO"),
    "trace_mean_field": Objective(
        trace_mean_field, ("num_particles",), True, "ELBO with analytic KL"
    ),
    "iwae": Objective(iwae, ("num_particles",), False, "importance-weighted bound"),
    "renyi": Objective(renyi, ("alpha", "num_particles"), False, "Rényi alpha bound"),
}


def build_objective(name: str = DEFAULT_OBJECTIVE, **options: Any) -> ELBO:
    """Build the objective registered as ``name`` with ``options`` (see each builder).

    Options set to ``None`` take the builder's default, so a command line can pass its
    unset flags through. An unknown name raises :class:`~ppl_vae.errors.UnknownNameError`
    listing the choices; an unknown option or a bad value raises
    :class:`~ppl_vae.errors.ConfigError`.
    """
    entry = lookup(OBJECTIVES, name, "objective")
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(entry.options))
    if unknown:
        raise ConfigError(
            f"objective {name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(entry.options)}"
        )
    return entry.build(**given)
