"""Build a model/guide pair by registry names, the same way from Python, CLI and config."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from torch import nn

from guides import (
    ENCODERS,
    GUIDES,
    Classifier,
    ConditionalGuide,
    HierarchicalGuide,
    SemiSupervisedGuide,
)
from models import DECODERS, LIKELIHOODS, PRIORS, VAE, ConditionalVAE, HierarchicalVAE
from models.likelihoods import Likelihood
from models.semi_supervised import SemiSupervisedVAE
from ppl_vae.data import Dataset
from ppl_vae.errors import ConfigError
from ppl_vae.registry import lookup

__all__ = ["ARCHITECTURES", "LABELLED_ARCHITECTURES", "ModelSpec", "build_m2", "build_vae"]

#: Architectures that need class labels, with the name their errors use: the conditional
#: VAE reads them as ``y``; M2 learns from a few of them (``ppl_vae.semi_supervised``).
LABELLED_ARCHITECTURES = {"conditional": "the conditional VAE", "m2": "M2 (semi-supervised)"}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model and its guide; stored in a run's ``config.json``.

    :param data_shape: shape of one datapoint, taken from the data.
    :param architecture: a key of :data:`ARCHITECTURES`: ``"vae"`` (z -> x),
        ``"hierarchical"`` (z2 -> z1 -> x), ``"conditional"`` (p(x | z, y), q(z | x, y)) or
        ``"m2"`` (semi-supervised: y latent or observed, q(y | x) q(z | x, y)).
    :param likelihood_options: keyword options of the likelihood, e.g. ``{"total_count": 16}``.
    :param prior_options: keyword options of the prior, e.g. ``{"num_components": 10}``.
    :param latent_dim: dimension of z (of z1, the lower layer, for ``"hierarchical"``).
    :param top_latent_dim: dimension of z2 for ``"hierarchical"`` (default: ``latent_dim``).
    :param guide: the posterior family, a key of :data:`guides.GUIDES`.
    :param guide_options: keyword options of the family, e.g. ``{"num_flows": 4}``.
    :param input_scale: the encoder multiplies its input by this (e.g. 1/16 for counts 0..16).
    :param image_shape: ``(C, H, W)`` of image data, for convolutional encoders and decoders.
    :param num_classes: number of label classes, for ``"conditional"`` and ``"m2"``.
    """

    data_shape: tuple[int, ...]
    architecture: str = "vae"
    likelihood: str = "bernoulli"
    likelihood_options: dict[str, Any] = field(default_factory=dict)
    prior: str = "normal"
    prior_options: dict[str, Any] = field(default_factory=dict)
    latent_dim: int = 8
    top_latent_dim: int | None = None
    hidden: tuple[int, ...] = (256, 256)
    activation: str = "relu"
    decoder: str = "mlp"
    encoder: str = "mlp"
    guide: str = "normal"
    guide_options: dict[str, Any] = field(default_factory=dict)
    input_scale: float = 1.0
    image_shape: tuple[int, ...] | None = None
    num_classes: int | None = None

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
        settings.setdefault("image_shape", dataset.image_shape)
        labelled = LABELLED_ARCHITECTURES.get(settings.get("architecture"))
        if labelled is not None and "num_classes" not in settings:
            if not dataset.has_labels:
                raise ConfigError(
                    f"{labelled} needs labels and dataset {dataset.name!r} has none; "
                    "use a labelled dataset (digits, fashion_mnist, a .csv with "
                    "--label-column, an image folder) or another architecture"
                )
            settings["num_classes"] = int(dataset.train_labels.max()) + 1
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
        for key in ("data_shape", "hidden", "image_shape"):
            if values.get(key) is not None:
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


def _likelihood(spec: ModelSpec) -> Likelihood:
    likelihood_class = lookup(LIKELIHOODS, spec.likelihood, "likelihood")
    return _construct(
        "likelihood", spec.likelihood, likelihood_class, spec.data_shape, **spec.likelihood_options
    )


def _image_options(kind: str, name: str, cls: type, spec: ModelSpec) -> dict[str, Any]:
    """``image_shape`` for networks that take it (convolutional ones need it)."""
    parameter = inspect.signature(cls).parameters.get("image_shape")
    if parameter is None:
        return {}
    if spec.image_shape is None:
        if len(spec.data_shape) != 3:
            raise ConfigError(
                f"the {name!r} {kind} needs image data (an image_shape such as (1, 28, 28)) "
                f"but the data of shape {spec.data_shape} are not images; use --{kind} mlp"
            )
        return {}
    return {"image_shape": tuple(spec.image_shape)}


def _decoder(spec: ModelSpec, latent_dim: int, out_features: int) -> nn.Module:
    decoder_class = lookup(DECODERS, spec.decoder, "decoder")
    return _construct(
        "decoder",
        spec.decoder,
        decoder_class,
        latent_dim,
        out_features,
        hidden=spec.hidden,
        activation=spec.activation,
        **_image_options("decoder", spec.decoder, decoder_class, spec),
    )


def _encoder(spec: ModelSpec, latent_dim: int) -> nn.Module:
    encoder_class = lookup(ENCODERS, spec.encoder, "encoder")
    return _construct(
        "encoder",
        spec.encoder,
        encoder_class,
        spec.data_shape,
        latent_dim,
        hidden=spec.hidden,
        activation=spec.activation,
        input_scale=spec.input_scale,
        **_image_options("encoder", spec.encoder, encoder_class, spec),
    )


def _prior(spec: ModelSpec, latent_dim: int, encoder: nn.Module) -> nn.Module:
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
    return _construct("prior", spec.prior, prior_class, latent_dim, **prior_options)


def _build_plain(spec: ModelSpec) -> tuple[nn.Module, nn.Module]:
    likelihood = _likelihood(spec)
    decoder = _decoder(spec, spec.latent_dim, likelihood.num_params)
    encoder = _encoder(spec, spec.latent_dim)
    prior = _prior(spec, spec.latent_dim, encoder)
    guide_class = lookup(GUIDES, spec.guide, "guide")
    guide = _construct("guide", spec.guide, guide_class, encoder, **spec.guide_options)
    return VAE(prior, decoder, likelihood), guide


def _guide_family(spec: ModelSpec) -> dict[str, Any]:
    """The guide family and its options as keyword arguments of the guides' ``build``."""
    lookup(GUIDES, spec.guide, "guide")  # an unknown name lists the choices
    return {"family": spec.guide, **spec.guide_options}


def _build_hierarchical(spec: ModelSpec) -> tuple[nn.Module, nn.Module]:
    """z2 -> z1 -> x (Tomczak & Welling 2018's HVAE): the prior is over z2, the encoder gives
    q(z2 | x) and the guide's family serves both layers."""
    top = spec.top_latent_dim or spec.latent_dim
    likelihood = _likelihood(spec)
    decoder = _decoder(spec, spec.latent_dim + top, likelihood.num_params)
    encoder = _encoder(spec, top)
    prior = _prior(spec, top, encoder)
    network = {"hidden": spec.hidden, "activation": spec.activation}
    model = _construct(
        "architecture",
        "hierarchical",
        HierarchicalVAE.with_mlp_conditional,
        prior,
        decoder,
        likelihood,
        latent_dim=spec.latent_dim,
        top_latent_dim=top,
        **network,
    )
    guide = _construct(
        "guide",
        spec.guide,
        HierarchicalGuide.build,
        encoder,
        spec.latent_dim,
        **network,
        **_guide_family(spec),
    )
    return model, guide


def build_label_conditioned(
    spec: ModelSpec, model_class: type[nn.Module], name: str
) -> tuple[nn.Module, nn.Module]:
    """``model_class(prior, decoder, likelihood, num_classes)`` with a decoder of
    ``cat(z, onehot(y))`` and the guide q(z | x, y) (:class:`guides.ConditionalGuide` of
    ``spec.guide``'s family): the parts the conditional VAE and M2 share. ``name`` names
    the architecture in the errors.

    :raises ConfigError: without ``num_classes >= 2``, or for a prior that reads the
        unconditional encoder (the VampPrior), which a label-conditioned guide does not train.
    """
    if spec.num_classes is None or spec.num_classes < 2:
        raise ConfigError(
            f"the {name} architecture needs num_classes >= 2 (got {spec.num_classes}); build "
            "the spec with ModelSpec.for_dataset on labelled data or give num_classes"
        )
    if getattr(lookup(PRIORS, spec.prior, "prior"), "needs_encoder", False):
        raise ConfigError(
            f"prior {spec.prior!r} reads the unconditional encoder, which the {name} guide does "
            "not train; use another prior"
        )
    likelihood = _likelihood(spec)
    decoder = _decoder(spec, spec.latent_dim + spec.num_classes, likelihood.num_params)
    encoder = _encoder(spec, spec.latent_dim)
    prior = _prior(spec, spec.latent_dim, encoder)
    model = model_class(prior, decoder, likelihood, spec.num_classes)
    guide = _construct(
        "guide",
        spec.guide,
        ConditionalGuide.build,
        encoder,
        spec.num_classes,
        hidden=spec.hidden,
        activation=spec.activation,
        **_guide_family(spec),
    )
    return model, guide


def _build_conditional(spec: ModelSpec) -> tuple[nn.Module, nn.Module]:
    """p(x | z, y) p(z) and q(z | x, y) (Sohn et al. 2015) for labels y in 0..num_classes-1."""
    return build_label_conditioned(spec, ConditionalVAE, "conditional")


def build_m2(spec: ModelSpec) -> tuple[SemiSupervisedVAE, SemiSupervisedGuide]:
    """``(model, guide)`` of M2 (Kingma et al. 2014; trained by
    :func:`ppl_vae.semi_supervised.fit_semi_supervised`): the likelihood, prior, decoder and
    encoder by their registry names; the guide's family for :math:`q(z \\mid x, y)`; the
    classifier :math:`q(y \\mid x)` a second encoder network of the same kind
    (``spec.encoder``, ``spec.hidden``) with a softmax read-out. The prior over classes is
    uniform.

    :raises ConfigError: without ``num_classes >= 2``, or for a prior that reads the encoder
        (the VampPrior).
    """
    model, latent_guide = build_label_conditioned(spec, SemiSupervisedVAE, "M2")
    classifier = Classifier.from_encoder(_encoder(spec, 1), spec.num_classes)
    return model, SemiSupervisedGuide(classifier, latent_guide)


#: How each architecture is built from a :class:`ModelSpec`: ``ARCHITECTURES[name](spec)``
#: returns ``(model, guide)``.
ARCHITECTURES: dict[str, Callable[[ModelSpec], tuple[nn.Module, nn.Module]]] = {
    "vae": _build_plain,
    "hierarchical": _build_hierarchical,
    "conditional": _build_conditional,
    "m2": build_m2,
}


def build_vae(spec: ModelSpec) -> tuple[nn.Module, nn.Module]:
    """Return ``(model, guide)`` built from the registries of models/ and guides/."""
    for name in ("latent_dim", "top_latent_dim"):
        value = getattr(spec, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be positive, got {value}")
    if any(h < 1 for h in spec.hidden):
        raise ConfigError(f"hidden layer sizes must be positive, got {list(spec.hidden)}")
    return lookup(ARCHITECTURES, spec.architecture, "architecture")(spec)
