"""Build a model/guide pair by registry names, the same way from Python, CLI and config."""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from guides import ENCODERS, GUIDES
from models import DECODERS, LIKELIHOODS, PRIORS, VAE
from ppl_vae.data import Dataset
from ppl_vae.errors import ConfigError
from ppl_vae.registry import lookup

__all__ = ["ModelSpec", "build_vae"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a VAE and its guide; stored in a run's ``config.json``.

    :param data_shape: shape of one datapoint, taken from the data.
    :param likelihood_options: keyword options of the likelihood, e.g. ``{"total_count": 16}``.
    :param prior_options: keyword options of the prior, e.g. ``{"num_components": 10}``.
    :param input_scale: the encoder multiplies its input by this (e.g. 1/16 for counts 0..16).
    """

    data_shape: tuple[int, ...]
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 8
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    decoder: str = "mlp"
    encoder: str = "mlp"
    guide: str = "normal"
    input_scale: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def for_dataset(
        cls,
        dataset: Dataset,
        *,
        likelihood: str | None = None,
        likelihood_options: dict[str, Any] | None = None,
        **settings: Any,
    ) -> ModelSpec:
        """Settings completed from what the dataset knows about itself: its data shape, its
        default likelihood when none is named, a Binomial's ``total_count`` from the data's
        maximum value, and an encoder input scale of ``1 / max_value``.

        :param settings: any other field, e.g. ``latent_dim=16, hidden=(256, 256)``.
        """
        likelihood = likelihood or dataset.default_likelihood
        options = dict(likelihood_options or {})
        if likelihood == "binomial" and "total_count" not in options:
            if dataset.max_value is None:
                raise ConfigError(
                    f"dataset {dataset.name!r} has no known maximum; give total_count "
                    "(--total-count) for the binomial likelihood"
                )
            options["total_count"] = int(dataset.max_value)
        settings.setdefault("input_scale", 1.0 / dataset.max_value if dataset.max_value else 1.0)
        return cls(
            data_shape=tuple(dataset.data_shape),
            likelihood=likelihood,
            likelihood_options=options,
            **settings,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        if not isinstance(data, dict):
            raise ConfigError(f"model settings must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model settings {unknown}; known: {sorted(known)}")
        values = dict(data)
        for key in ("data_shape", "hidden"):
            if key in values:
                try:
                    values[key] = tuple(int(v) for v in values[key])
                except (TypeError, ValueError):
                    message = f"{key} must be a list of integers, got {values[key]!r}"
                    raise ConfigError(message) from None
        return cls(**values)


def _construct(kind: str, name: str, cls: type, *args: Any, **options: Any) -> Any:
    signature = inspect.signature(cls)
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
    if not accepts_any:
        unknown = sorted(set(options) - set(signature.parameters))
        if unknown:
            allowed = [p for p in signature.parameters][len(args) :]
            raise ConfigError(
                f"{kind} {name!r} has no option {unknown[0]!r}; its options are {allowed}"
            )
    try:
        return cls(*args, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"cannot build {kind} {name!r}: {error}") from None


def build_vae(spec: ModelSpec) -> tuple[VAE, Any]:
    """Return ``(model, guide)`` built from the registries of models/ and guides/."""
    if spec.latent_dim < 1:
        raise ConfigError(f"latent_dim must be positive, got {spec.latent_dim}")
    if any(h < 1 for h in spec.hidden):
        raise ConfigError(f"hidden layer sizes must be positive, got {list(spec.hidden)}")
    likelihood = _construct(
        "likelihood",
        spec.likelihood,
        lookup(LIKELIHOODS, spec.likelihood, "likelihood"),
        spec.data_shape,
        **spec.likelihood_options,
    )
    decoder = _construct(
        "decoder",
        spec.decoder,
        lookup(DECODERS, spec.decoder, "decoder"),
        spec.latent_dim,
        likelihood.num_params,
        hidden=spec.hidden,
        activation=spec.activation,
    )
    encoder = _construct(
        "encoder",
        spec.encoder,
        lookup(ENCODERS, spec.encoder, "encoder"),
        spec.data_shape,
        spec.latent_dim,
        hidden=spec.hidden,
        activation=spec.activation,
        input_scale=spec.input_scale,
    )
    prior_class = lookup(PRIORS, spec.prior, "prior")
    prior_options = dict(spec.prior_options)
    if getattr(prior_class, "needs_encoder", False):  # e.g. the VampPrior
        given = sorted({"encoder", "data_shape"} & prior_options.keys())
        if given:
            raise ConfigError(
                f"prior {spec.prior!r} takes {given} from the model itself; remove the option"
            )
        prior_options.update(encoder=encoder, data_shape=spec.data_shape)
        prior_options.setdefault("input_max", 1.0 / spec.input_scale)  # data's value range
    prior = _construct("prior", spec.prior, prior_class, spec.latent_dim, **prior_options)
    guide = _construct("guide", spec.guide, lookup(GUIDES, spec.guide, "guide"), encoder)
    return VAE(prior, decoder, likelihood), guide
