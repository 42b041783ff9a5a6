r"""Masks shared by the generative programs and guides, and the imputation program.

A boolean mask is either per datapoint ``(N,)`` (drop whole datapoints from the likelihood)
or per element, of ``x``'s shape (``True`` where a value is observed). How a per-element
mask acts:

* **Scoring** (training, the importance-sampled :math:`\log p(x_{\text{obs}})`): the model
  masks the likelihood's factorized base distribution before ``to_event``, so the ``"x"``
  site scores :math:`\log p(x_{\text{obs}} \mid z) = \sum_{i \in \text{obs}} \log p(x_i
  \mid z)`, one number per datapoint, inside the engine's ``"data"`` plate. The missing
  elements are marginalized out exactly (the likelihood factorizes given the latents), so
  no latent site stands for them and the engine's contract (DESIGN.md section 2) holds.
* **Guides** read ``x`` only where it is observed: :func:`fill_missing` puts a fill value
  in the holes before the encoder sees them.
* **Imputation**: :func:`impute_program` turns the model's likelihood into one Pyro sample
  statement per element (every dimension, features included, becomes a plate rather than
  an event dimension) with Pyro's ``obs_mask``, so Pyro splits the site into
  ``"x_observed"`` (scored) and ``"x_unobserved"`` (drawn from :math:`p(x_{\text{mis}}
  \mid z)`) and returns the two interleaved as ``"x"``.

Values at masked-out elements are never scored and never read by the guides here, but the
engine still checks them (finite, in the likelihood's support): put any valid value there.
"""

from __future__ import annotations

import contextlib

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

__all__ = [
    "element_distribution",
    "fill_missing",
    "impute_program",
    "mask_datapoints",
    "split_mask",
]


def split_mask(
    mask: torch.Tensor | None, x: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(datapoint_mask, feature_mask)``: at most one of them is not ``None``.

    :raises ValueError: if ``mask`` has neither shape ``(N,)`` nor ``x.shape``.
    """
    if mask is None:
        return None, None
    mask = torch.as_tensor(mask, dtype=torch.bool, device=x.device)
    if mask.shape == x.shape[:1]:
        return mask, None
    if mask.shape == x.shape:
        return None, mask
    raise ValueError(
        f"mask must have shape {tuple(x.shape[:1])} (per datapoint) or {tuple(x.shape)} "
        f"(per element), got {tuple(mask.shape)}"
    )


def mask_datapoints(datapoint_mask: torch.Tensor | None) -> contextlib.AbstractContextManager:
    """A context that drops the masked-out datapoints' log densities (no-op for ``None``)."""
    if datapoint_mask is None:
        return contextlib.nullcontext()
    return poutine.mask(mask=datapoint_mask)


def fill_missing(
    x: torch.Tensor, mask: torch.Tensor | None, fill_value: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """``x`` with the elements a per-element ``mask`` marks missing (``False``) replaced by
    ``fill_value`` (a number, or a tensor that broadcasts to one datapoint, e.g. the
    per-feature training mean); ``x`` itself for no mask or a per-datapoint mask.

    What an amortized guide shows its encoder, so the proposal :math:`q(z \\mid
    x_{\\text{obs}})` never depends on the values in the holes (Mattei & Frellsen 2019,
    MIWAE: zero imputation). Any proposal keeps importance sampling consistent; the fill
    only changes how good a proposal it is.
    """
    _, feature_mask = split_mask(mask, x)
    if feature_mask is None:
        return x
    fill = torch.as_tensor(fill_value, dtype=x.dtype, device=x.device)
    return torch.where(feature_mask, x, fill)


def element_distribution(fn: dist.Distribution, event_dim: int) -> dist.Distribution:
    """The per-element distribution behind a factorized likelihood site: ``fn`` with its
    ``event_dim`` rightmost event dimensions turned back into batch dimensions and any
    scoring mask removed, so its batch shape ends with the data shape and its event shape
    is ``()``.

    :raises ValueError: if ``fn`` does not factorize over the elements of a datapoint (e.g.
        a multivariate Normal over x): its missing elements cannot then be drawn alone.
    """
    element = _unmasked(fn)
    if event_dim:
        try:
            element = _unmasked(element.to_event(-event_dim))
        except (ValueError, AttributeError):
            element = None
    if element is None or element.event_shape != ():
        raise ValueError(
            f"the likelihood {type(fn).__name__} (event shape {tuple(fn.event_shape)}) does not "
            f"factorize over the {event_dim} data dimension(s) as an independent "
            "(.to_event) distribution of scalar elements, so missing elements cannot be "
            "imputed one by one"
        )
    return element


def _unmasked(fn: dist.Distribution) -> dist.Distribution:
    while isinstance(fn, dist.MaskedDistribution):
        fn = fn.base_dist
    return fn


def _plate_names(batch_dims: int, event_dim: int) -> list[str]:
    """Names of the plates of :func:`impute_program`, from dim -1 leftwards."""
    features = ["features"] if event_dim == 1 else [f"features_{i}" for i in range(event_dim)]
    names = features[::-1] + ["data"]
    names += ["particles"] if batch_dims > event_dim + 1 else []
    names += [f"batch_{i}" for i in range(batch_dims - len(names))]
    return names[:batch_dims]


def impute_program(
    px: dist.Distribution, x: torch.Tensor, observed: torch.Tensor, name: str = "x"
) -> torch.Tensor:
    r"""A Pyro program drawing the missing elements of ``x`` from ``px`` through
    ``obs_mask``: returns ``x`` where ``observed`` and a draw of :math:`p(x_i \mid z)`
    elsewhere.

    :param px: per-element distribution (see :func:`element_distribution`), batch shape
        ``(..., N, *data_shape)``, event shape ``()``, e.g. ``(S, N, D)`` for S latent draws.
    :param x: ``(N, *data_shape)``; values in the holes are not used but must lie in the
        support of ``px`` (Pyro validates observed values).
    :param observed: boolean, ``x``'s shape, ``True`` where ``x`` is observed.

    Every dimension is a plate (``"features"`` for the data dimensions, ``"data"``, then
    ``"particles"``), because Pyro's ``obs_mask`` splits a site along batch dimensions
    only: under :func:`pyro.poutine.trace` the program has sites ``name + "_observed"``
    (log density of the observed elements), ``name + "_unobserved"`` (the draws) and
    ``name`` (the two interleaved). This program is not a model for the engine: its
    ``"data"`` plate is left of the feature plates.
    """
    if px.event_shape != ():
        raise ValueError("impute_program needs a per-element distribution (event shape ())")
    event_dim = x.dim() - 1
    batch = px.batch_shape
    if tuple(batch[len(batch) - x.dim() :]) != tuple(x.shape) or len(batch) < x.dim():
        raise ValueError(
            f"the distribution's batch shape {tuple(batch)} must end with x's shape "
            f"{tuple(x.shape)}"
        )
    names = _plate_names(len(batch), event_dim)
    with contextlib.ExitStack() as stack:
        for i, (plate, size) in enumerate(zip(names, reversed(batch), strict=True)):
            stack.enter_context(pyro.plate(plate, size, dim=-1 - i))
        return pyro.sample(name, px, obs=x.expand(batch), obs_mask=observed.expand(batch))
