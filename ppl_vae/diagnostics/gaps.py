r"""Where the gap goes: the approximation and amortization gaps of Cremer, Li & Duvenaud [1].

An amortized guide :math:`q_\phi(z \mid x)` of a family :math:`\mathcal{Q}` falls short of
:math:`\log p(x)` by :math:`\mathrm{KL}(q_\phi \,\|\, p(z \mid x))`. Let
:math:`q^*_x = \arg\max_{q \in \mathcal{Q}} \mathcal{L}[q]` be the best member of the same
family for the datapoint :math:`x` alone, with
:math:`\mathcal{L}[q] = \mathbb{E}_q[\log p(x, z) - \log q(z)]`. Then

.. math::

    \underbrace{\log p(x) - \mathcal{L}[q_\phi]}_{\text{total gap}}
    = \underbrace{\log p(x) - \mathcal{L}[q^*_x]}_{\text{approximation gap}}
    + \underbrace{\mathcal{L}[q^*_x] - \mathcal{L}[q_\phi]}_{\text{amortization gap}},

the approximation gap :math:`\mathrm{KL}(q^*_x \,\|\, p(z \mid x))` being what the family
cannot represent and the amortization gap what the encoder loses by sharing one network
across datapoints. :func:`gap_decomposition` finds :math:`q^*_x` by stochastic variational
inference on a :class:`~guides.local.LocalGuide` (free parameters, family weights included,
for each datapoint; warm-started at the encoder's output as in Kim et al. [2]) with the
model's parameters frozen, then estimates, per datapoint and on common random numbers:

* :math:`\widehat{\mathcal{L}}[q_\phi]` and :math:`\widehat{\mathcal{L}}[q^*]`, Monte Carlo
  means of :math:`\log w` over ``num_samples`` draws (unbiased);
* :math:`\widehat{\log p}(x) = \log \frac1K \sum_k w_k` with :math:`K` = ``num_samples``
  draws from the better proposal of the two (the one with the larger ELBO estimate) [3].

The three gaps are differences of these estimates, so they add up by construction:
``approximation_gap + amortization_gap == total_gap`` to rounding. Since the importance
estimate and the ELBO of a proposal come from the same draws, :math:`\widehat{\log p}(x)
\ge \widehat{\mathcal{L}}` for it (Jensen), so the estimated approximation and total gaps
are never negative; the amortization gap is negative only where the optimisation did not
reach the amortized guide's ELBO (e.g. too few steps, or a family other than the guide's).
The importance estimate is biased low by about :math:`\mathrm{Var}(w)/(2K\bar w^2)`, which
shrinks the approximation gap slightly; the stderr field bounds that noise.

References

[1] Cremer, Li & Duvenaud (2018), *Inference Suboptimality in Variational Autoencoders*,
    ICML.
[2] Kim, Wiseman, Miller, Sontag & Rush (2018), *Semi-Amortized Variational Autoencoders*,
    ICML.
[3] Burda, Grosse & Salakhutdinov (2016), *Importance Weighted Autoencoders*, ICLR.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.infer import Trace_ELBO

from guides.amortized import AmortizedGuide
from guides.families import Family
from guides.local import LocalGuide, family_name
from ppl_vae.diagnostics._frozen import freeze_program, frozen_parameters
from ppl_vae.errors import ConfigError, TrainingDivergedError
from ppl_vae.estimators import log_likelihood, prepare_inputs
from ppl_vae.importance import DEFAULT_CHUNK_SIZE, rng_scope
from ppl_vae.params import claim_param_names
from ppl_vae.programs import program_args
from ppl_vae.seeding import derive_seed

__all__ = ["GapReport", "gap_decomposition"]


@dataclass(frozen=True)
class GapReport:
    """Per-datapoint results of :func:`gap_decomposition`: float64 tensors of shape ``(N,)``
    in nats, and the settings that produced them.

    :ivar elbo_amortized: ELBO of the amortized guide, :math:`\\mathcal{L}[q_\\phi]`.
    :ivar elbo_optimal: ELBO of the optimised local guide, :math:`\\mathcal{L}[q^*]`.
    :ivar log_likelihood: importance-sampled :math:`\\log p(x)` from the better proposal.
    :ivar log_likelihood_stderr: its Monte Carlo standard error (delta method).
    :ivar proposal: per datapoint, ``"local"`` or ``"amortized"``: the proposal used.
    :ivar step_elbo: the mean ELBO per datapoint estimated at each optimisation step.
    :ivar local_guide: the optimised :class:`~guides.local.LocalGuide` (not in the summary).
    """

    elbo_amortized: torch.Tensor
    elbo_optimal: torch.Tensor
    log_likelihood: torch.Tensor
    log_likelihood_stderr: torch.Tensor
    proposal: tuple[str, ...]
    family: str
    steps: int
    lr: float
    lr_decay: float
    num_particles: int
    num_samples: int
    seed: int
    seconds: float
    step_elbo: tuple[float, ...] = ()
    local_guide: LocalGuide | None = field(default=None, repr=False, compare=False)

    @property
    def num_data(self) -> int:
        """N, the number of datapoints."""
        return self.log_likelihood.numel()

    @property
    def approximation_gap(self) -> torch.Tensor:
        """:math:`\\log p(x) - \\mathcal{L}[q^*]`, the cost of the family."""
        return self.log_likelihood - self.elbo_optimal

    @property
    def amortization_gap(self) -> torch.Tensor:
        """:math:`\\mathcal{L}[q^*] - \\mathcal{L}[q_\\phi]`, the cost of the shared encoder."""
        return self.elbo_optimal - self.elbo_amortized

    @property
    def total_gap(self) -> torch.Tensor:
        """:math:`\\log p(x) - \\mathcal{L}[q_\\phi]`, the sum of the two gaps."""
        return self.log_likelihood - self.elbo_amortized

    def summary(self) -> dict[str, Any]:
        """Means over datapoints, per-datapoint lists and the settings, ready for JSON."""
        n = self.log_likelihood.numel()
        values = {
            "log_likelihood": self.log_likelihood,
            "elbo_amortized": self.elbo_amortized,
            "elbo_optimal": self.elbo_optimal,
            "approximation_gap": self.approximation_gap,
            "amortization_gap": self.amortization_gap,
            "total_gap": self.total_gap,
        }
        tail = self.step_elbo[-max(1, len(self.step_elbo) // 10) :]
        return {
            "family": self.family,
            "num_data": n,
            "steps": self.steps,
            "lr": self.lr,
            "lr_decay": self.lr_decay,
            "num_particles": self.num_particles,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "seconds": self.seconds,
            **{name: float(value.mean()) for name, value in values.items()},
            "log_likelihood_stderr": float(self.log_likelihood_stderr.pow(2).sum().sqrt() / n),
            "proposal_local_fraction": sum(p == "local" for p in self.proposal) / n,
            "step_elbo_first": self.step_elbo[0] if self.step_elbo else None,
            "step_elbo_last": sum(tail) / len(tail) if tail else None,
            "per_datapoint": {
                **{name: value.tolist() for name, value in values.items()},
                "log_likelihood_stderr": self.log_likelihood_stderr.tolist(),
                "proposal": list(self.proposal),
            },
        }


def _check_options(
    steps: int, lr: float, lr_decay: float, num_particles: int, num_samples: int
) -> None:
    if not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"steps must be a whole number >= 0, got {steps!r}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")
    if not 0 < lr_decay <= 1:
        raise ConfigError(
            f"lr_decay (final over initial learning rate) must be in (0, 1], got {lr_decay}"
        )
    if not isinstance(num_particles, int) or num_particles < 1:
        raise ConfigError(f"num_particles must be a positive integer, got {num_particles!r}")
    if not isinstance(num_samples, int) or num_samples < 2:
        raise ConfigError(f"num_samples must be an integer >= 2, got {num_samples!r}")


def _adam(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
    """Adam, fused where the device supports it (an order of magnitude faster on the CPU for
    the millions of weights that per-datapoint copies of a flow can hold)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def _optimise(
    model: Callable,
    local: LocalGuide,
    x: torch.Tensor,
    y: torch.Tensor | None,
    *,
    steps: int,
    lr: float,
    lr_decay: float,
    num_particles: int,
    seed: int,
) -> list[float]:
    """Maximise the ELBO of ``local`` by SVI (Pyro's Trace_ELBO, vectorized particles, Adam
    with the learning rate decaying exponentially to ``lr * lr_decay``); returns the mean
    ELBO per datapoint estimated at each step."""
    if steps == 0:
        return []
    loss_fn = Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    optimizer = _adam(list(local.parameters()), lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_decay ** (1 / steps))
    args, kwargs = program_args(x, None, y)
    history = []
    with rng_scope(x.device, derive_seed(seed, 1)), local.sharing_noise():
        for step in range(1, steps + 1):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn.differentiable_loss(model, local, *args, **kwargs)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise TrainingDivergedError(
                    f"the local guide's loss became {value} at step {step}; lower lr (now "
                    f"{lr:g}) or use a simpler family"
                )
            loss.backward()
            optimizer.step()
            schedule.step()
            history.append(-value / x.shape[0])
    return history


def _local_family(
    guide: Callable, family: str | Family | None, family_options: Mapping[str, Any] | None
) -> str | Family | None:
    """The amortized guide's own family (weights included) when ``family`` is ``None`` or
    names it without options; else ``family`` unchanged."""
    if not isinstance(guide, AmortizedGuide):
        return family
    if family is None or (
        isinstance(family, str) and not family_options and family == family_name(guide.family)
    ):
        return guide.family
    return family


def gap_decomposition(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    family: str | Family | None = None,
    family_options: Mapping[str, Any] | None = None,
    steps: int = 1000,
    lr: float = 1e-2,
    lr_decay: float = 0.1,
    num_particles: int = 16,
    num_samples: int = 5000,
    seed: int = 0,
    y: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> GapReport:
    r"""Split the gap :math:`\log p(x) - \mathcal{L}[q_\phi]` of ``guide`` on each datapoint of
    ``x`` into approximation and amortization gaps (see the module docs).

    The model is not changed: its parameters (decoder, prior) are frozen during the
    optimisation and their ``requires_grad`` flags (and ``.grad``, and the modules'
    train/eval modes) restored afterwards, and Pyro's parameter store is left as it was found
    (same names, same tensors). The caller's random stream is left untouched too.

    :param model: ``model(x, mask=None)`` keeping the contract of DESIGN.md section 2.
    :param guide: the amortized guide to diagnose, any guide keeping the contract.
    :param x: the datapoints, shape ``(N, *data_shape)``; N of order 100 (each datapoint gets
        its own parameters and, for families with weights, its own copy of them).
    :param family: the family :math:`\mathcal{Q}` of the optimal local guide: a name in
        :data:`~guides.families.FAMILIES` or an instance. By default the guide's own family
        when it is an :class:`~guides.amortized.AmortizedGuide` (weights copied, so the
        local guide starts exactly at the amortized one), else ``"normal"``.
    :param family_options: options of a family given by name.
    :param steps: SVI steps; 0 keeps the warm start.
    :param lr: initial Adam learning rate; it decays exponentially to ``lr * lr_decay`` at
        the last step, which lowers the noise floor that constant-step SGD leaves in
        :math:`\mathcal{L}[q^*]`.
    :param num_particles: draws per datapoint and step, vectorized.
    :param num_samples: draws per datapoint for the final ELBOs and the importance estimate.
    :param seed: fixes the optimisation's draws and the evaluation's (common to both guides).
    :param y: class labels ``(N,)`` for conditional programs (passed as the keyword ``y``).
    :param chunk_size: memory bound of the estimators (see
        :func:`ppl_vae.estimators.log_likelihood`).
    :raises ConfigError: for invalid options.
    :raises TrainingDivergedError: when the local optimisation diverges.
    """
    _check_options(steps, lr, lr_decay, num_particles, num_samples)
    if family_options and not isinstance(family, str):
        raise ConfigError("family_options apply to a family given by name; pass family=NAME")
    local_family = _local_family(guide, family, family_options)
    started = time.perf_counter()
    with frozen_parameters(model, guide):
        x, _, y = prepare_inputs(model, guide, x, None, y)
        args, kwargs = program_args(x, None, y)
        freeze_program(model, args, kwargs)
        local = LocalGuide.from_guide(
            guide,
            x,
            family=local_family,
            family_options=family_options if isinstance(local_family, str) else None,
            y=y,
            seed=seed,
        )
        claim_param_names(model, local)
        history = _optimise(
            model,
            local,
            x,
            y,
            steps=steps,
            lr=lr,
            lr_decay=lr_decay,
            num_particles=num_particles,
            seed=seed,
        )
        estimate = {
            name: log_likelihood(
                model, proposal, x, num_samples=num_samples, y=y, seed=seed, chunk_size=chunk_size
            )
            for name, proposal in (("amortized", guide), ("local", local))
        }
    use_local = estimate["local"].elbo >= estimate["amortized"].elbo
    return GapReport(
        elbo_amortized=estimate["amortized"].elbo,
        elbo_optimal=estimate["local"].elbo,
        log_likelihood=torch.where(
            use_local, estimate["local"].log_likelihood, estimate["amortized"].log_likelihood
        ),
        log_likelihood_stderr=torch.where(
            use_local, estimate["local"].stderr, estimate["amortized"].stderr
        ),
        proposal=tuple("local" if flag else "amortized" for flag in use_local.tolist()),
        family=local.family_name,
        steps=steps,
        lr=lr,
        lr_decay=lr_decay,
        num_particles=num_particles,
        num_samples=num_samples,
        seed=seed,
        seconds=time.perf_counter() - started,
        step_elbo=tuple(history),
        local_guide=local,
    )
