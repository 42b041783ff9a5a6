r"""KL scaling as an effect handler: the :math:`\beta`-VAE objective and KL warm-up.

Scaling every *latent* sample site of both model and guide by :math:`\beta` (and leaving
the observed site ``"x"`` alone) turns Pyro's ELBO into the :math:`\beta`-VAE objective
[1] without writing a loss by hand:

.. math::

    \mathcal{L}_\beta(x) = \mathbb{E}_{q(z \mid x)}[\log p(x \mid z)]
        + \beta\, \mathbb{E}_{q(z \mid x)}[\log p(z) - \log q(z \mid x)]
      = \mathbb{E}_{q}[\log p(x \mid z)] - \beta\, \mathrm{KL}(q(z \mid x) \,\|\, p(z)).

Why the handler is exactly right:

* :class:`ScaleLatents` does what :class:`pyro.poutine.scale` does
  (``msg["scale"] = beta * msg["scale"]`` in ``_process_message``) but only at sites that
  are sample sites, not observed and not a plate's subsample site. Pyro multiplies every
  log density by its site's ``scale`` when a trace computes ``log_prob``
  (``scale_and_mask`` in ``Trace.compute_log_prob`` and ``compute_score_parts``), so the
  scales compose with the data plate's minibatch scale like any ``poutine.scale``.
* :class:`~pyro.infer.Trace_ELBO` sums ``log_prob`` of every model site and subtracts that
  of every guide site; with the latent sites of both scaled, the estimate is
  :math:`\log p(x \mid z) + \beta(\log p(z) - \log q(z \mid x))` on the same draw, and its
  surrogate (entropy and score-function terms come from the scaled ``score_parts``) has the
  gradient of :math:`\mathcal{L}_\beta`.
* :class:`~pyro.infer.TraceMeanField_ELBO` replaces, for each latent site, the Monte Carlo
  pair by the analytic :math:`\mathrm{KL}(q \,\|\, p)` multiplied by the *guide* site's
  ``scale`` (``scale_and_mask(kl_qp, scale=guide_site["scale"], ...)`` in
  ``pyro/infer/trace_mean_field_elbo.py``), and where no analytic KL exists falls back on
  the model site's scaled ``log_prob_sum`` minus the guide's scaled entropy term. Scaling
  the latent sites of *both* programs (as :func:`scale_latents` is meant to be used) gives
  :math:`\beta\,\mathrm{KL}` on either branch; scaling only the model would leave the
  analytic branch unscaled.
* :class:`~pyro.infer.RenyiELBO` (IWAE) multiplies scaled log weights inside a
  log-mean-exp: with :math:`\beta \ne 1` the weights become
  :math:`p(x \mid z)\,(p(z)/q(z \mid x))^\beta`, whose mean is an integral against an
  unnormalised geometric mixture of prior and guide: neither a bound on
  :math:`\log p(x)` nor a KL penalty. :func:`check_betas_supported` refuses that case.

The handler decides at ``_process_message`` time, from ``msg["is_observed"]``, whether a
site is latent; a ``poutine.condition`` applied *outside* the handler marks sites observed
only later, so condition programs before wrapping them (the engine never does this: the
ELBOs only add ``trace``/``replay``, which do not change ``is_observed``).

KL warm-up (deterministic annealing) [2, 3] raises :math:`\beta` from ``start`` to
``final`` linearly over the first epochs, so the decoder learns to use :math:`z` before the
KL term pulls the posterior onto the prior; :func:`kl_warmup` builds that schedule.

*Free bits* [4] (:math:`\sum_j \max(\lambda, \mathrm{KL}_j)`, with the KL of each latent
group averaged over the minibatch) is deliberately not offered: the maximum couples all
datapoints of a minibatch and depends on the KL's value, so it is no per-site rescaling of
log densities that a handler could apply while the ELBO traces run. It needs the KL
estimates before the scale is known: a second pass or a custom loss, which is the
hand-written loss this module avoids.

References

[1] Higgins et al. (2017), *beta-VAE: Learning Basic Visual Concepts with a Constrained
    Variational Framework*, ICLR.
[2] Bowman et al. (2016), *Generating Sentences from a Continuous Space*, CoNLL.
[3] Sønderby, Raiko, Maaløe, Sønderby & Winther (2016), *Ladder Variational
    Autoencoders*, NeurIPS (warm-up, section 2.3).
[4] Kingma et al. (2016), *Improved Variational Inference with Inverse Autoregressive
    Flow*, NeurIPS (free bits, appendix C.8).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pyro.infer import (
    JitTrace_ELBO,
    JitTraceEnum_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
)
from pyro.infer.elbo import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ppl_vae.errors import ConfigError

__all__ = [
    "KLWarmup",
    "ScaleLatents",
    "beta_at",
    "check_beta",
    "check_betas_supported",
    "kl_warmup",
    "scale_latents",
]

_JIT_ELBOS = (JitTrace_ELBO, JitTraceEnum_ELBO, JitTraceGraph_ELBO, JitTraceMeanField_ELBO)

#: A constant :math:`\beta` or a schedule mapping the (1-based, absolute) epoch to it.
Beta = float | Callable[[int], float]


def check_beta(beta: Any, what: str = "beta") -> float:
    """``beta`` as a float, or :class:`ConfigError` unless it is finite and >= 0."""
    try:
        value = float(beta)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number >= 0, got {beta!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"{what} must be finite and >= 0, got {value}")
    return value


class ScaleLatents(Messenger):
    r"""Multiply the ``scale`` of every latent sample site by ``beta`` (see module docs).

    Latent means a sample site that is neither observed nor a plate's subsample site.
    Apply it to *both* model and guide (:func:`scale_latents`); under Trace_ELBO or
    TraceMeanField_ELBO the loss then estimates
    :math:`-\mathbb{E}_q[\log p(x \mid z)] + \beta\, \mathrm{KL}(q \,\|\, p)`.

    :param beta: a finite factor >= 0; ``0`` drops the KL term, ``1`` changes nothing.
    """

    def __init__(self, beta: float) -> None:
        super().__init__()
        self.beta = check_beta(beta)

    def _process_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and not msg["is_observed"] and not site_is_subsample(msg):
            msg["scale"] = self.beta * msg["scale"]


def scale_latents(fn: Callable, beta: float) -> Callable:
    """``fn`` run under a fresh :class:`ScaleLatents` (like ``poutine.scale(fn, scale)``);
    ``fn`` itself when ``beta == 1``."""
    beta = check_beta(beta)
    return fn if beta == 1.0 else ScaleLatents(beta)(fn)


@dataclass(frozen=True)
class KLWarmup:
    r"""Linear KL warm-up [3]: :math:`\beta_e = \text{start} + (\text{final} - \text{start})
    \min(1, (e - 1) / \text{epochs})` for the 1-based epoch :math:`e`.

    So epoch 1 uses ``start``, epoch ``epochs + 1`` and later use ``final``; ``epochs = 0``
    means ``final`` throughout. Epochs are absolute, so a continued run follows the schedule.
    """

    epochs: int
    start: float = 0.0
    final: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 0:
            raise ConfigError(f"warm-up epochs must be a whole number >= 0, got {self.epochs!r}")
        object.__setattr__(self, "start", check_beta(self.start, "warm-up start"))
        object.__setattr__(self, "final", check_beta(self.final, "warm-up final"))

    def __call__(self, epoch: int) -> float:
        if epoch < 1:
            raise ConfigError(f"epochs count from 1, got {epoch}")
        if self.epochs == 0:
            return self.final
        progress = min(1.0, (epoch - 1) / self.epochs)
        return self.start + (self.final - self.start) * progress


def kl_warmup(epochs: int, start: float = 0.0, final: float = 1.0) -> KLWarmup:
    """A :class:`KLWarmup` schedule, epoch -> beta, linear from ``start`` at epoch 1 to
    ``final`` after ``epochs`` epochs, then constant."""
    return KLWarmup(epochs, start, final)


def beta_at(beta: Beta, epoch: int) -> float:
    """The checked :math:`\\beta` of ``epoch`` for a constant or a schedule."""
    value = beta(epoch) if callable(beta) else beta
    return check_beta(value, f"beta at epoch {epoch}")


def check_betas_supported(elbo: ELBO, betas: Iterable[float]) -> None:
    r"""Refuse, with a :class:`ConfigError`, the betas (one per epoch) that ``elbo`` cannot
    honour: any :math:`\beta \ne 1` for Rényi/IWAE objectives (see module docs), and a
    :math:`\beta` that changes between epochs for Pyro's JIT-compiled ELBOs, which compile
    the first program they see (its scales become constants) and reuse it."""
    betas = list(betas)
    scaled = [beta for beta in betas if beta != 1.0]
    if scaled and isinstance(elbo, RenyiELBO):
        raise ConfigError(
            f"beta = {scaled[0]:g} is not supported with the {type(elbo).__name__} objective "
            "(iwae/renyi): scaling the latent sites inside its log-mean-exp gives weights "
            "p(x|z)(p(z)/q(z|x))^beta, neither a bound on log p(x) nor a KL penalty. Use "
            "beta = 1 (no warm-up) with iwae/renyi, or the trace_elbo / trace_mean_field "
            "objective for a beta-VAE or KL warm-up"
        )
    if len(set(betas)) > 1 and isinstance(elbo, _JIT_ELBOS):
        raise ConfigError(
            f"{type(elbo).__name__} compiles the program once, so a beta that changes between "
            "epochs (KL warm-up) would stay at its first value; use the non-JIT objective or "
            "a constant beta"
        )
