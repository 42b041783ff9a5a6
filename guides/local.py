r"""A non-amortized guide: free variational parameters for each of N given datapoints.

For every datapoint :math:`x_n` of a fixed batch the guide holds its own distribution
:math:`q_n` over the *joint* vector :math:`\zeta = (z^{(1)}, \dots, z^{(S)}) \in
\mathbb{R}^D` of all latent sites of the model (flattened and concatenated in a fixed order,
e.g. ``("z2", "z1")`` for the two-layer model):

.. math::

    q_n = \mathcal{F}_{\theta_n}\big(\mu_n,\ \mathrm{softplus}(\rho_n) + \sigma_{\min},\
        c_n\big), \qquad \zeta \sim q_n, \qquad
    \log q(z^{(1)}, \dots, z^{(S)} \mid x_n) = \log q_n(\zeta),

where :math:`\mathcal{F}` is any family of :data:`~guides.families.FAMILIES` (diagonal,
low-rank or full-covariance Gaussian, normalizing flows) and every datapoint has its own mean
:math:`\mu_n`, scale :math:`\rho_n`, context vector :math:`c_n` (the ``features`` the family
reads, ``feature_dim`` numbers) and its own copy :math:`\theta_n` of the family's weights, so
nothing is shared between datapoints: the guide is the per-datapoint optimum the amortized
family can only approximate. Cremer, Li & Duvenaud [1] fit such local guides to split the
gap :math:`\log p(x) - \mathrm{ELBO}` into an approximation and an amortization part
(:func:`ppl_vae.diagnostics.gaps.gap_decomposition`); Kim et al. [2] start them from the
encoder's output (:meth:`LocalGuide.from_guide`, the warm start used here).

Each latent site is emitted as ``pyro.sample(name, Delta(part, log_density=...,
event_dim=...))``: the first site carries the whole joint :math:`\log q_n(\zeta)` and the
others 0, as Pyro's ``AutoContinuous`` guides do [3], so the sum of the guide's site log
densities is exactly the joint density, whatever the correlations between sites.

References

[1] Cremer, Li & Duvenaud (2018), *Inference Suboptimality in Variational Autoencoders*,
    ICML.
[2] Kim, Wiseman, Miller, Sontag & Rush (2018), *Semi-Amortized Variational Autoencoders*,
    ICML.
[3] Pyro documentation, ``pyro.infer.autoguide.AutoContinuous``.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro import poutine
from pyro.nn import PyroModule
from pyro.nn.module import _PyroModuleMeta
from pyro.poutine.runtime import get_plates
from pyro.poutine.util import site_is_subsample
from torch import nn

from guides.amortized import AmortizedGuide
from guides.families import FAMILIES, Family
from guides.family_factory import make_family

__all__ = ["LocalGuide", "family_name", "latent_site_shapes"]

#: Bound on (row, stored datapoint, element) comparisons per pass when matching rows.
_MATCH_CHUNK = 2**24


def family_name(family: Family | str) -> str:
    """The registry name of a family (instance or name), or its class name if unregistered."""
    if isinstance(family, str):
        return family
    cls = _plain_class(type(family))
    for name, registered in FAMILIES.items():
        if registered is cls:
            return name
    return cls.__name__


def latent_site_shapes(trace: poutine.Trace) -> dict[str, torch.Size]:
    """``{name: event_shape}`` of the latent (sampled, unobserved) sites of a trace, in the
    order they were sampled."""
    return {
        name: site["fn"].event_shape
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)
    }


def _plain_class(cls: type) -> type:
    """The class ``PyroModule[C]`` was made from (``C`` itself for other classes)."""
    for plain, pyro_class in _PyroModuleMeta._pyro_mixin_cache.items():
        if pyro_class is cls:
            return plain
    return cls


def _plain_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every ``PyroModule[C]`` turned back into a plain ``C``,
    so calling it emits no ``pyro.param`` statement (amortized guides convert their family
    with :func:`~pyro.nn.module.to_pyro_module_`)."""
    clone = copy.deepcopy(module)
    for sub in clone.modules():
        plain = _plain_class(type(sub))
        if plain is type(sub):
            if isinstance(sub, PyroModule):
                raise TypeError(
                    f"cannot copy the family part {type(sub).__name__}, a PyroModule subclass; "
                    "families must be plain nn.Modules (PyroModule[...] conversions are undone)"
                )
            continue
        if sub.__dict__.get("_pyro_params") or sub.__dict__.get("_pyro_samples"):
            raise TypeError(
                f"cannot copy {type(sub).__name__}: it has PyroParam/PyroSample attributes"
            )
        sub.__class__ = plain
        for attr in ("_pyro_name", "_pyro_context", "_pyro_params", "_pyro_samples"):
            sub.__dict__.pop(attr, None)
    return clone


def _inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """:math:`\\log(e^y - 1)`, the inverse of softplus, stable for small and large ``y``."""
    y = y.clamp_min(torch.finfo(y.dtype).tiny ** 0.5)
    return y + torch.log(-torch.expm1(-y))


def _outer_batch_shape() -> torch.Size:
    """Sizes of the enclosing plates left of the rightmost ("data") dimension, e.g. ``(K,)``
    under the engine's ``pyro.plate("particles", K, dim=-2)``; ``()`` under none."""
    frames = [f for f in get_plates() if f.dim is not None and f.dim < -1]
    depth = max((-f.dim - 1 for f in frames), default=0)
    shape = [1] * depth
    for frame in frames:
        shape[depth + frame.dim + 1] = frame.size
    return torch.Size(shape)


def _program_args(
    x: torch.Tensor, mask: torch.Tensor | None, y: torch.Tensor | None
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    return ((x,) if mask is None else (x, mask)), ({} if y is None else {"y": y})


class LocalGuide(PyroModule):
    r"""``guide(x, mask=None, y=None)`` with free variational parameters for the N datapoints
    ``data`` it was built for (see the module docs for the distribution).

    The guide samples every site of ``sites`` inside ``pyro.plate("data", M, dim=-1)`` and
    broadcasts over enclosing plates on the left (the engine's particles plate, the
    vectorized particles of Pyro's ELBOs). ``x`` must be ``data`` itself or rows taken from
    it: the engine's estimators evaluate a guide one datapoint at a time, so each row of
    ``x`` is matched (by exact equality) to a stored datapoint and gets that datapoint's
    parameters; a row that is not among them is an error that says so. Of identical stored
    rows, a lone row is matched to the first. ``mask`` and ``y`` are accepted and ignored
    (the parameters already belong to each datapoint).

    Parameters (``local_loc``, ``local_scale``, ``local_features``, and ``local_family_i``:
    the family's i-th weight stacked over datapoints, shape ``(N, ...)``) are ordinary
    ``nn.Parameter`` attributes, so the guide trains with Pyro's SVI (e.g.
    :func:`ppl_vae.training.fit`) or any torch optimizer. Families without weights run
    batched over datapoints; the others run once per datapoint, or vectorized inside
    :meth:`sharing_noise`.

    :param data: the datapoints, shape ``(N, *data_shape)``; fixes dtype and device.
    :param sites: latent sites in sampling order, ``{name: event_shape}`` (an int is a
        vector size), e.g. from :func:`latent_site_shapes` of a model trace.
    :param family: a name in :data:`~guides.families.FAMILIES` (built for the joint
        dimension D and ``feature_dim``), or a :class:`~guides.families.Family` instance of
        latent dimension D whose weights every datapoint starts from (it is copied, not
        shared).
    :param family_options: options of a family given by name.
    :param feature_dim: size of each datapoint's context vector; default the family
        instance's, else D.
    :param loc: ``(N, D)`` initial means; default 0.
    :param scale: ``(N, D)`` initial positive scales; default 1.
    :param features: ``(N, feature_dim)`` initial context vectors; default 0.
    :param min_scale: floor of the scales, :math:`\sigma = \mathrm{softplus}(\rho) +
        \sigma_{\min}`.
    """

    def __init__(
        self,
        data: torch.Tensor,
        sites: Mapping[str, int | Sequence[int]],
        family: str | Family = "normal",
        *,
        family_options: Mapping[str, Any] | None = None,
        feature_dim: int | None = None,
        loc: torch.Tensor | None = None,
        scale: torch.Tensor | None = None,
        features: torch.Tensor | None = None,
        min_scale: float = 1e-4,
    ) -> None:
        super().__init__()
        if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
            raise ValueError("data must be a tensor of shape (N, *data_shape) with N >= 1")
        if not sites:
            raise ValueError("sites must name at least one latent site and its event shape")
        self.sites: dict[str, torch.Size] = {
            str(name): torch.Size([shape] if isinstance(shape, int) else shape)
            for name, shape in sites.items()
        }
        if any(math.prod(shape) < 1 for shape in self.sites.values()):
            raise ValueError(f"every site needs a non-empty event shape, got {self.sites}")
        self.joint_dim = sum(math.prod(shape) for shape in self.sites.values())
        self.min_scale = float(min_scale)
        num_data, dim = data.shape[0], self.joint_dim
        template = self._template_family(family, family_options, feature_dim)
        self.feature_dim = template.feature_dim
        self.family_name = family_name(family)
        factory = {"dtype": data.dtype, "device": data.device}
        template.to(**factory)
        # Kept out of the module tree: only its structure is used, with the stacked
        # per-datapoint weights below swapped in by torch.func.functional_call.
        self._template = (template,)
        self.register_buffer("data", data.detach().clone())
        self.local_loc = nn.Parameter(self._initial(loc, (num_data, dim), 0.0, "loc"))
        initial_scale = self._initial(scale, (num_data, dim), 1.0, "scale")
        if not bool((initial_scale > 0).all()):
            raise ValueError("scale must be positive")
        self.local_scale = nn.Parameter(_inverse_softplus(initial_scale - self.min_scale))
        self.local_features = nn.Parameter(
            self._initial(features, (num_data, self.feature_dim), 0.0, "features")
        )
        self._family_params = []
        for i, (name, value) in enumerate(template.named_parameters()):
            stacked = value.detach().unsqueeze(0).repeat(num_data, *([1] * value.dim()))
            self.register_parameter(f"local_family_{i}", nn.Parameter(stacked))
            self._family_params.append(name)
        self._shared_noise = False
        self._vmap_ok = True
        self._family_buffers = []
        for i, (name, value) in enumerate(template.named_buffers()):
            self.register_buffer(f"local_family_buffer_{i}", value.detach().clone())
            self._family_buffers.append(name)

    def _template_family(
        self,
        family: str | Family,
        options: Mapping[str, Any] | None,
        feature_dim: int | None,
    ) -> nn.Module:
        if isinstance(family, str):
            return make_family(
                family, self.joint_dim, feature_dim or self.joint_dim, **dict(options or {})
            )
        if options:
            raise ValueError("family_options apply to a family given by name, not an instance")
        if not isinstance(family, Family):
            raise TypeError(f"family must be a name or a Family, got {type(family).__name__}")
        if family.latent_dim != self.joint_dim:
            raise ValueError(
                f"the family is built for latent_dim {family.latent_dim} but the sites "
                f"{dict(self.sites)} have {self.joint_dim} dimensions together"
            )
        if feature_dim is not None and feature_dim != family.feature_dim:
            raise ValueError(
                f"feature_dim {feature_dim} differs from the family's {family.feature_dim}"
            )
        return _plain_copy(family)

    def _initial(
        self, value: torch.Tensor | None, shape: tuple[int, int], default: float, name: str
    ) -> torch.Tensor:
        factory = {"dtype": self.data.dtype, "device": self.data.device}
        if value is None:
            return torch.full(shape, default, **factory)
        value = torch.as_tensor(value).detach().to(**factory)
        if tuple(value.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
        return value.clone()

    # ------------------------------------------------------------------ constructors

    @classmethod
    def from_model(
        cls,
        model: Callable,
        x: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        **options: Any,
    ) -> LocalGuide:
        """A guide for the latent sites of ``model`` (read off one run of it on ``x``),
        started at mean 0 and scale 1; ``options`` go to the constructor."""
        args, kwargs = _program_args(x, mask, y)
        with torch.no_grad(), torch.random.fork_rng(devices=_devices(x)):
            trace = poutine.trace(model).get_trace(*args, **kwargs)
        sites = latent_site_shapes(trace)
        if not sites:
            raise ValueError("the model samples no latent site")
        return cls(x, sites, **options)

    @classmethod
    def from_guide(
        cls,
        guide: Callable,
        x: torch.Tensor,
        *,
        family: str | Family | None = None,
        family_options: Mapping[str, Any] | None = None,
        feature_dim: int | None = None,
        mask: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        num_samples: int = 1000,
        seed: int = 0,
        min_scale: float = 1e-4,
    ) -> LocalGuide:
        r"""A local guide for the datapoints ``x``, warm-started from an amortized guide's
        output there (Kim et al. [2]; Cremer et al. [1] start their local optimisation the
        same way).

        * An :class:`~guides.amortized.AmortizedGuide` starts *exactly* where it is: each
          datapoint gets the encoder's ``(loc, scale)`` and features :math:`h(x_n)` and, with
          ``family=None``, a copy of the guide's own family weights, so :math:`q_n = q(z
          \mid x_n)` before any optimisation. A family named otherwise starts from the same
          ``(loc, scale, h(x_n))`` with its own initial weights (for ``fullrank_normal``
          that is again exactly the amortized diagonal Gaussian).
        * Any other guide (two latent sites, a plain Pyro function) starts at the moments of
          its draws: ``num_samples`` draws per datapoint give the mean and standard deviation
          of the joint vector; the context vectors start at 0 and the family (``"normal"``
          when ``None``) at its own initial weights.

        :param family: the local family: a name, an instance, or ``None`` (the amortized
            guide's own family, else ``"normal"``).
        :param seed: seeds the draws of the moment-matching start (the caller's random
            stream is left as it was).
        """
        if isinstance(guide, AmortizedGuide):
            with torch.no_grad():
                h = guide.encoder.features(x)
                loc, scale = guide.encoder.gaussian(h)
            if family is None:
                if family_options:
                    raise ValueError("family_options need a family name")
                family = guide.family
            return cls(
                x,
                {guide.site: loc.shape[-1]},
                family,
                family_options=family_options,
                feature_dim=feature_dim if feature_dim is not None else h.shape[-1],
                loc=loc,
                scale=scale,
                features=h,
                min_scale=min_scale,
            )
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2, got {num_samples}")
        args, kwargs = _program_args(x, mask, y)
        with torch.no_grad(), torch.random.fork_rng(devices=_devices(x)):
            torch.manual_seed(seed)
            with pyro.plate("particles", num_samples, dim=-2):
                trace = poutine.trace(guide).get_trace(*args, **kwargs)
        sites = latent_site_shapes(trace)
        if not sites:
            raise ValueError("the guide samples no latent site")
        parts = []
        for name, shape in sites.items():
            value = trace.nodes[name]["value"].detach()
            value = value.expand(num_samples, x.shape[0], *shape)
            parts.append(value.reshape(num_samples, x.shape[0], -1))
        joint = torch.cat(parts, dim=-1).to(x.dtype)
        return cls(
            x,
            sites,
            "normal" if family is None else family,
            family_options=family_options,
            feature_dim=feature_dim,
            loc=joint.mean(0),
            scale=joint.std(0).clamp_min(10 * min_scale),
            min_scale=min_scale,
        )

    # ------------------------------------------------------------------ distributions

    @property
    def num_data(self) -> int:
        """N, the number of datapoints the guide holds parameters for."""
        return self.data.shape[0]

    def rows_of(self, x: torch.Tensor) -> torch.Tensor:
        """Indices into ``data`` of the rows of ``x`` (see the class docs).

        :raises ValueError: when ``x`` has another datapoint shape or a row that is not
            one of the N datapoints the guide was built for.
        """
        data = self.data
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(data.shape[1:]):
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"LocalGuide was built for datapoints of shape {tuple(data.shape[1:])}, got "
                f"a batch of shape {shape}"
            )
        x = x.to(dtype=data.dtype, device=data.device)
        if x.shape[0] == data.shape[0] and torch.equal(x, data):
            return torch.arange(data.shape[0], device=data.device)
        flat_x, flat_data = x.reshape(x.shape[0], -1), data.reshape(data.shape[0], -1)
        chunk = max(1, _MATCH_CHUNK // max(1, flat_data.numel()))
        rows = []
        for begin in range(0, flat_x.shape[0], chunk):
            equal = (flat_x[begin : begin + chunk, None, :] == flat_data[None]).all(-1)
            found = equal.any(-1)
            if not bool(found.all()):
                row = begin + int((~found).nonzero()[0])
                raise ValueError(
                    f"LocalGuide holds variational parameters for {data.shape[0]} particular "
                    f"datapoints; it got a batch of {x.shape[0]} whose row {row} is not one of "
                    "them. Pass the datapoints it was built for (or rows of them), or build "
                    "a LocalGuide for these datapoints (LocalGuide.from_guide(guide, x))"
                )
            rows.append(equal.to(torch.int8).argmax(-1))
        return torch.cat(rows)

    def _gaussian(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        loc = self.local_loc[rows]
        scale = F.softplus(self.local_scale[rows]) + self.min_scale
        return loc, scale, self.local_features[rows]

    def _family_call(
        self,
        params: dict[str, torch.Tensor],
        loc: torch.Tensor,
        scale: torch.Tensor,
        features: torch.Tensor,
    ) -> dist.TorchDistribution:
        buffers = {
            name: getattr(self, f"local_family_buffer_{i}")
            for i, name in enumerate(self._family_buffers)
        }
        template = self._template[0]
        return torch.func.functional_call(template, {**params, **buffers}, (loc, scale, features))

    def posterior(self, index: int) -> dist.TorchDistribution:
        """:math:`q_n` over the joint vector for datapoint ``index``: batch shape ``()``,
        event shape ``(D,)``."""
        rows = torch.as_tensor([index], device=self.data.device)
        loc, scale, features = self._gaussian(rows)
        params = {
            name: getattr(self, f"local_family_{i}")[index]
            for i, name in enumerate(self._family_params)
        }
        return self._family_call(params, loc[0], scale[0], features[0])

    @contextlib.contextmanager
    def sharing_noise(self) -> Iterator[LocalGuide]:
        """Within this context, datapoints of one call share their base noise, so the family
        runs once, vectorized over datapoints (:func:`torch.func.vmap`), instead of once per
        datapoint: about ten times faster for flows.

        Each datapoint's draws keep exactly the distribution :math:`q_n` and their exact log
        density, so every per-datapoint estimate stays unbiased; and since datapoint n's
        parameters enter only its own term of the ELBO, the stochastic gradient with respect
        to them is unbiased with the same variance as with independent noise. What is lost
        is independence *between* datapoints of one call, which the ELBO never uses:
        :func:`~ppl_vae.diagnostics.gaps.gap_decomposition` optimises in this mode and
        evaluates outside it. Families that ``vmap`` cannot batch (e.g. splines, which index
        with boolean masks) fall back to the per-datapoint loop.
        """
        previous, self._shared_noise = self._shared_noise, True
        try:
            yield self
        finally:
            self._shared_noise = previous

    def sample_joint(
        self, rows: torch.Tensor, sample_shape: Sequence[int] = ()
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterized draws of the joint vector for datapoints ``rows`` and their exact
        log densities: shapes ``(*sample_shape, M, D)`` and ``(*sample_shape, M)``."""
        sample_shape = torch.Size(sample_shape)
        loc, scale, features = self._gaussian(rows)
        if not self._family_params:  # one batched call when the family has no weights
            q = self._family_call({}, loc, scale, features)
            z = q.rsample(sample_shape)
            return z, q.log_prob(z)
        stacked = [getattr(self, f"local_family_{i}") for i in range(len(self._family_params))]
        if self._shared_noise and self._vmap_ok and rows.shape[0] > 1:
            try:
                return self._sample_vectorized(stacked, rows, loc, scale, features, sample_shape)
            except RuntimeError:  # an operation vmap cannot batch: use the loop from now on
                self._vmap_ok = False
        # unbind (not p[n]): its backward writes every row's gradient in one allocation
        unbound = [p.unbind(0) for p in stacked]
        draws, log_qs = [], []
        for j, n in enumerate(rows.tolist()):
            params = {name: p[n] for name, p in zip(self._family_params, unbound, strict=True)}
            q = self._family_call(params, loc[j], scale[j], features[j])
            z = q.rsample(sample_shape)
            draws.append(z)
            log_qs.append(q.log_prob(z))
        return torch.stack(draws, dim=-2), torch.stack(log_qs, dim=-1)

    def _sample_vectorized(
        self,
        stacked: list[torch.Tensor],
        rows: torch.Tensor,
        loc: torch.Tensor,
        scale: torch.Tensor,
        features: torch.Tensor,
        sample_shape: torch.Size,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not _is_all(rows, self.num_data):  # (indexing all rows would copy every weight)
            stacked = [p[rows] for p in stacked]
        params = dict(zip(self._family_params, stacked, strict=True))

        def draw(params_n, loc_n, scale_n, features_n):
            q = self._family_call(params_n, loc_n, scale_n, features_n)
            z = q.rsample(sample_shape)
            return z, q.log_prob(z)

        # Argument checks branch on values, which vmap cannot batch; the parameters are
        # valid by construction (softplus scales), and the Delta sites are still checked.
        with pyro.validation_enabled(False):
            z, log_q = torch.func.vmap(draw, randomness="same")(params, loc, scale, features)
        return z.movedim(0, -2), log_q.movedim(0, -1)

    def split(self, joint: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cut ``(..., D)`` joint vectors into ``{site: (..., *event_shape)}``."""
        parts, start = {}, 0
        for name, shape in self.sites.items():
            size = math.prod(shape)
            parts[name] = joint[..., start : start + size].reshape(*joint.shape[:-1], *shape)
            start += size
        return parts

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Sample every latent site for the rows of ``x``; returns ``{site: value}``."""
        rows = self.rows_of(x)
        joint, log_q = self.sample_joint(rows, _outer_batch_shape())
        values = self.split(joint)
        with pyro.plate("data", rows.shape[0], dim=-1):
            for i, (name, value) in enumerate(values.items()):
                density = log_q if i == 0 else torch.zeros_like(log_q)
                event_dim = len(self.sites[name])
                pyro.sample(name, dist.Delta(value, log_density=density, event_dim=event_dim))
        return values


def _is_all(rows: torch.Tensor, num_data: int) -> bool:
    """Whether ``rows`` is ``0, 1, ..., num_data - 1``."""
    return rows.shape[0] == num_data and bool(
        (rows == torch.arange(num_data, device=rows.device)).all()
    )


def _devices(x: torch.Tensor) -> list[int]:
    return [x.device.index or 0] if x.device.type == "cuda" else []
