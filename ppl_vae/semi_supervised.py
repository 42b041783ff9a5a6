r"""Semi-supervised learning with the M2 model of Kingma et al. [1]: a few labelled
datapoints, many unlabelled ones, one generative model and one classifier.

The objective (their eq. 9) over labelled pairs :math:`(x, y) \in \mathcal{L}` and unlabelled
:math:`x \in \mathcal{U}`, :math:`N = |\mathcal{L}| + |\mathcal{U}|`, is maximised:

.. math::

    \mathcal{J}^\alpha = \sum_{(x, y) \in \mathcal{L}} \mathcal{L}(x, y)
        + \sum_{x \in \mathcal{U}} \mathcal{U}(x)
        + \alpha \sum_{(x, y) \in \mathcal{L}} \log q_\phi(y \mid x),

    \mathcal{L}(x, y) = \mathbb{E}_{q(z \mid x, y)}\!\left[\log p(y) + \log p(z)
        + \log p(x \mid y, z) - \log q(z \mid x, y)\right] \le \log p(x, y),

    \mathcal{U}(x) = \sum_y q(y \mid x) \left[\mathcal{L}(x, y) - \log q(y \mid x)\right]
        \le \log p(x).

Each term is a Pyro program pair scored by one :class:`~pyro.infer.TraceEnum_ELBO`
(``max_plate_nesting=1``): :math:`\mathcal{L}` is ``model(x, y=labels)`` with
``guide(x, y=labels)``; :math:`\mathcal{U}` is ``model(x)`` with ``guide(x)``, whose label site
is enumerated in parallel so the sum over y is exact (one z draw per class); the
classification term is :func:`classification_model`, a model whose only site is the label
observed under :math:`q(y \mid x)` and scaled by :math:`\alpha`, with an empty guide. Without
that term the classifier would learn from the unlabelled data only. The default
:math:`\alpha` is the paper's :math:`0.1 N` on the mean over labelled data, i.e.
:math:`0.1\, N / |\mathcal{L}|` on the sum.

Labelled and unlabelled data go through separate calls (as in Pyro's SS-VAE example) rather
than one batch with a label mask: a labelled datapoint costs one decoder pass instead of
``num_classes``, the programs keep the plain signature ``model(x, y=None)``, and each term is
reported separately. Every step draws one unlabelled and one labelled minibatch (the
labelled set is cycled, reshuffled when used up) and minimises the unbiased estimate of
:math:`-\mathcal{J}^\alpha / N`,

.. math::

    -\frac{1}{N}\left[\frac{|\mathcal{U}|}{B_u} \sum_{b_u} \mathcal{U}(x)
        + \frac{|\mathcal{L}|}{B_l} \sum_{b_l} \left(\mathcal{L}(x, y)
        + \alpha \log q(y \mid x)\right)\right],

by ``differentiable_loss`` + ``backward`` + one optimizer step over the parameters of model
and guide (:class:`ppl_vae.steps.Steps` and :class:`ppl_vae.optim.TorchOptim`, the steps of
:func:`ppl_vae.training.fit`). An epoch is one pass over the unlabelled data.

References

[1] Kingma, Rezende, Mohamed & Welling (2014), *Semi-supervised Learning with Deep
    Generative Models*, NeurIPS.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyro
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.infer.elbo import ELBO
from torch import nn
from tqdm.auto import tqdm

from ppl_vae.build import build_m2
from ppl_vae.errors import ConfigError, ContractError, DataError, TrainingDivergedError
from ppl_vae.estimators import LogLikelihoodEstimate, prepare_inputs, reduce_log_weights
from ppl_vae.importance import DEFAULT_CHUNK_SIZE
from ppl_vae.optim import TorchOptim, as_torch_optim
from ppl_vae.params import claim_param_names
from ppl_vae.seeding import derive_seed
from ppl_vae.steps import Steps
from ppl_vae.validation import module_dtype_device, validate_data, validate_labels

__all__ = [
    "ClassifierEpoch",
    "ClassifierResult",
    "SemiSupervisedEpoch",
    "SemiSupervisedResult",
    "accuracy",
    "balanced_labelled_split",
    "build_m2",
    "classification_model",
    "default_alpha",
    "fit_classifier",
    "fit_semi_supervised",
    "log_likelihood_summing_labels",
    "no_latents",
    "predict",
    "semi_supervised_elbo",
]


# ----------------------------------------------------------------------------- programs


def classification_model(
    guide: Any, x: torch.Tensor, y: torch.Tensor, *, scale: float = 1.0
) -> None:
    r"""The classification term as a Pyro model: the labels ``y`` observed under the guide's
    :math:`q(y \mid x)`, scaled by ``scale``. Its ELBO with :func:`no_latents` as guide is
    exactly ``scale * sum log q(y | x)`` (there is no latent site, so nothing is sampled
    and any ELBO, TraceEnum_ELBO included, scores it the same)."""
    with pyro.plate("data", x.shape[0], dim=-1), poutine.scale(scale=scale):
        pyro.sample("y", guide.classify(x), obs=y)


def no_latents(*args: Any, **kwargs: Any) -> None:
    """The empty guide of :func:`classification_model`."""


def default_alpha(num_labelled: int, num_unlabelled: int) -> float:
    r"""Kingma et al.'s weight of the classification term, :math:`\alpha = 0.1 N` on the
    mean over labelled data, returned as the weight on the sum: :math:`0.1 N / N_l`."""
    return 0.1 * (num_labelled + num_unlabelled) / num_labelled


# ----------------------------------------------------------------------------- labels


def balanced_labelled_split(
    labels: Any, num_labelled: int, *, seed: int = 0, num_classes: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``num_labelled`` datapoints balanced across classes, deterministically from
    ``seed``; returns ``(labelled_indices, unlabelled_indices)`` (int64; the labelled ones
    in class-interleaved order, the unlabelled ones sorted).

    Every class gets ``num_labelled // C`` datapoints; the remaining ``num_labelled % C`` go
    one each to classes chosen at random. Within a class, datapoints are chosen at random.

    :param num_classes: the number of classes C; ``max(labels) + 1`` by default.
    :raises DataError: for bad labels, fewer than one label per class, or a class with too
        few datapoints.
    """
    y = validate_labels(labels, len(labels), name="labels")
    classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if int(y.max()) >= classes:
        raise DataError(f"labels contain class {int(y.max())} but num_classes is {classes}")
    if isinstance(num_labelled, bool) or not isinstance(num_labelled, int):
        raise DataError(f"num_labelled must be an integer, got {num_labelled!r}")
    if num_labelled < classes:
        raise DataError(
            f"num_labelled={num_labelled} is fewer than one label per class ({classes} "
            "classes); semi-supervised learning needs every class labelled at least once"
        )
    if num_labelled > y.numel():
        raise DataError(f"num_labelled={num_labelled} exceeds the {y.numel()} datapoints")
    generator = torch.Generator().manual_seed(derive_seed(seed, 0))
    per_class = torch.full((classes,), num_labelled // classes, dtype=torch.int64)
    extra = torch.randperm(classes, generator=generator)[: num_labelled % classes]
    per_class[extra] += 1
    chosen = []
    for c in range(classes):
        members = torch.nonzero(y == c).flatten()
        if members.numel() < int(per_class[c]):
            raise DataError(
                f"class {c} has {members.numel()} datapoints but {int(per_class[c])} labelled "
                f"ones were asked for; ask for fewer than {members.numel() * classes + 1} labels"
            )
        order = torch.randperm(members.numel(), generator=generator)
        chosen.append(members[order[: int(per_class[c])]])
    # Interleave classes (first of each class, then the second, ...) so any prefix is balanced.
    rank = torch.cat([torch.arange(c.numel()) for c in chosen])
    labelled = torch.cat(chosen)
    labelled = labelled[torch.argsort(rank * classes + y[labelled], stable=True)]
    is_labelled = torch.zeros(y.numel(), dtype=torch.bool)
    is_labelled[labelled] = True
    return labelled, torch.nonzero(~is_labelled).flatten()


# ----------------------------------------------------------------------------- evaluation


def _logits_fn(classifier: Any) -> Callable[[torch.Tensor], torch.Tensor]:
    if callable(getattr(classifier, "classify", None)):
        return lambda x: classifier.classify(x).logits
    if callable(classifier):
        return classifier
    raise ContractError(
        "accuracy needs a guide with classify(x) -> Categorical (e.g. SemiSupervisedGuide) "
        f"or a classifier x -> logits, got {type(classifier).__name__}"
    )


@torch.no_grad()
def predict(classifier: Any, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    r"""The most probable class :math:`\arg\max_y q(y \mid x)` of every row of ``x``, int64
    ``(N,)``; ``classifier`` is a guide with ``classify`` or a network returning logits."""
    logits = _logits_fn(classifier)
    return torch.cat(
        [logits(x[b : b + batch_size]).argmax(-1) for b in range(0, x.shape[0], batch_size)]
    )


def accuracy(classifier: Any, x: Any, y: Any, *, batch_size: int = 1000) -> float:
    r"""The fraction of rows of ``x`` whose :func:`predict`\ ed class is the label ``y``."""
    dtype, device = module_dtype_device(classifier)
    x = validate_data(x, name="data", dtype=dtype, device=device)
    y = validate_labels(y, x.shape[0], name="labels", device=device)
    return float((predict(classifier, x, batch_size=batch_size) == y).double().mean())


def semi_supervised_elbo(
    model: Callable,
    guide: Callable,
    x: Any,
    y: Any = None,
    *,
    batch_size: int = 500,
    seed: int = 0,
) -> float:
    r"""Mean ELBO per datapoint by :class:`~pyro.infer.TraceEnum_ELBO`: of
    :math:`\log p(x)` with the label summed out when ``y`` is ``None``, else of
    :math:`\log p(x, y)`. One z draw per datapoint (and class), from a generator seeded by
    ``seed``; the caller's random stream is left as it was."""
    dtype, device = module_dtype_device(model, guide)
    x = validate_data(x, model, name="data", dtype=dtype, device=device)
    if y is not None:
        y = validate_labels(y, x.shape[0], model, name="labels", device=device)
    loss = TraceEnum_ELBO(max_plate_nesting=1)
    total = 0.0
    with torch.no_grad(), _seeded(device, seed):
        for b in range(0, x.shape[0], batch_size):
            kwargs = {} if y is None else {"y": y[b : b + batch_size]}
            with _no_enumeration_warning():
                total += loss.loss(model, guide, x[b : b + batch_size], **kwargs)
    return -total / x.shape[0]


def _class_stats(log_w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-datapoint sums of one class's ``(K, n)`` log weights, in log space (float64):
    ``log_mean`` (log p(x, y) estimated), ``log_var`` (the variance of that mean),
    ``log_sum_sq`` (log of the sum of squared weights) and ``mean_log`` (the ELBO of
    log p(x, y))."""
    log_w = log_w.to(torch.float64)
    k = log_w.shape[0]
    peak = log_w.max(dim=0).values
    weights = (log_w - peak).exp()
    variance = weights.var(dim=0, correction=1) / k if k > 1 else torch.full_like(peak, math.nan)
    return {
        "log_mean": peak + weights.mean(dim=0).log(),
        "log_var": 2 * peak + variance.log(),
        "log_sum_sq": 2 * peak + weights.pow(2).sum(dim=0).log(),
        "mean_log": log_w.mean(dim=0),
    }


@torch.no_grad()
def _log_q_labels(guide: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """``log q(y | x)`` of every class, ``(C, N)`` float64 on the CPU."""
    parts = [
        guide.classify(x[b : b + batch_size]).logits.log_softmax(-1)
        for b in range(0, x.shape[0], batch_size)
    ]
    return torch.cat(parts).to(torch.float64).cpu().T


def log_likelihood_summing_labels(
    model: Callable,
    guide: Callable,
    x: Any,
    *,
    num_samples: int = 1000,
    seed: int | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> LogLikelihoodEstimate:
    r"""Importance-sampled :math:`\log p(x)` of a semi-supervised (M2) pair with the label
    summed out exactly: :math:`\hat p(x) = \sum_y \hat p(x, y)`, each
    :math:`\hat p(x, y) = \frac1K \sum_k w_{yk}`,
    :math:`w_{yk} = p(x, y, z_{yk}) / q(z_{yk} \mid x, y)`, from ``num_samples`` draws
    :math:`z \sim q(z \mid x, y)` *per class* (the engine's log weights of ``model(x,
    y=c)``, ``guide(x, y=c)``, independent seeds per class). Stratified over y, so no
    variance comes from drawing y; the cost is ``num_classes`` times one estimate. The
    plain :func:`~ppl_vae.estimators.log_likelihood` also estimates :math:`\log p(x)` of an
    M2 pair, consistently, drawing y from :math:`q(y \mid x)` with z, and per draw it is
    the tighter one where :math:`q(y \mid x)` is good: on the digits (50 labels, 12 epochs,
    K = 10 to 1000 per class) this estimate was 0.3 to 1.4 nats below that of
    ``num_classes * K`` draws of y (equal allocation spends draws on classes
    :math:`q(y \mid x)` rules out); it never misses a class, though, and its ELBO has no
    noise from y.

    The result, per datapoint: the estimate; its delta-method standard error
    :math:`\sqrt{\sum_y \mathrm{Var}\,\hat p(x, y)} / \hat p(x)`; the ESS
    :math:`(\sum_{yk} w_{yk})^2 / \sum_{yk} w_{yk}^2` of all ``C K`` draws (between 1 and
    ``C K``); and the ELBO with y summed out, :math:`\sum_y q(y \mid x)
    [\frac1K \sum_k \log w_{yk} - \log q(y \mid x)] \le \log p(x)`, the bound M2
    trains on unlabelled data. ``num_samples`` of the result is K per class.

    :raises ContractError: if the guide has no ``classify`` or model and guide disagree on
        ``num_classes``.
    """
    num_classes = _num_classes(model, guide)
    x, _, _ = prepare_inputs(model, guide, x, None, None)
    if seed is None:
        seed = int(torch.randint(2**31 - 1, ()))
    per_class = [
        reduce_log_weights(
            model,
            guide,
            x,
            _class_stats,
            num_samples=num_samples,
            y=torch.full((x.shape[0],), c, dtype=torch.int64, device=x.device),
            seed=derive_seed(seed, c),
            chunk_size=chunk_size,
        )
        for c in range(num_classes)
    ]
    stats = {key: torch.stack([s[key] for s in per_class]) for key in per_class[0]}
    log_p = stats["log_mean"].logsumexp(0)
    log_q = _log_q_labels(guide, x)
    ess_log = 2 * (stats["log_mean"] + math.log(num_samples)).logsumexp(0)
    return LogLikelihoodEstimate(
        log_likelihood=log_p,
        stderr=(0.5 * stats["log_var"].logsumexp(0) - log_p).exp(),
        ess=(ess_log - stats["log_sum_sq"].logsumexp(0)).exp(),
        elbo=(log_q.exp() * (stats["mean_log"] - log_q)).sum(0),
        num_samples=num_samples,
    )


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SemiSupervisedEpoch:
    r"""One epoch of :func:`fit_semi_supervised`; ELBOs in nats per datapoint.

    ``unlabelled_elbo`` (of :math:`\log p(x)`) and ``labelled_elbo`` (of
    :math:`\log p(x, y)`) are means over the epoch's minibatches as the parameters moved;
    ``classification_loss`` is the mean :math:`-\log q(y \mid x)` over the labelled
    minibatches (before the weight :math:`\alpha`); ``objective`` is the mean over steps of
    :math:`\mathcal{J}^\alpha / N` estimated by each step. Accuracies are of
    :math:`\arg\max_y q(y \mid x)` after the epoch (``None`` without those data).
    """

    epoch: int
    unlabelled_elbo: float
    labelled_elbo: float
    classification_loss: float
    objective: float
    valid_accuracy: float | None
    test_accuracy: float | None
    seconds: float
    steps: int


def _best(history: list) -> Any:
    scored = [r for r in history if r.valid_accuracy is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: (r.valid_accuracy, -r.epoch))


@dataclass
class SemiSupervisedResult:
    """What :func:`fit_semi_supervised` returns: the per-epoch history, the weight
    ``alpha`` used, the optimizer (whose state a checkpoint saves) and the seconds spent."""

    history: list[SemiSupervisedEpoch] = field(default_factory=list)
    alpha: float = 0.0
    optimizer: TorchOptim | None = None
    seconds: float = 0.0

    @property
    def best(self) -> SemiSupervisedEpoch | None:
        """The epoch with the highest validation accuracy (the earliest of ties), as Pyro's
        SS-VAE example reports "test accuracy at the best validation accuracy"."""
        return _best(self.history)

    def as_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "seconds": self.seconds,
            "history": [asdict(r) for r in self.history],
        }


@dataclass(frozen=True)
class ClassifierEpoch:
    """One epoch of :func:`fit_classifier`: mean cross-entropy and accuracies after it."""

    epoch: int
    loss: float
    valid_accuracy: float | None
    test_accuracy: float | None
    seconds: float


@dataclass
class ClassifierResult:
    """What :func:`fit_classifier` returns."""

    history: list[ClassifierEpoch] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> ClassifierEpoch | None:
        """The epoch with the highest validation accuracy (the earliest of ties)."""
        return _best(self.history)


# ----------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _seeded(device: torch.device, seed: int) -> Iterator[None]:
    """Run the block on torch's generators seeded with ``seed``; restore them afterwards."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def _no_enumeration_warning() -> Iterator[None]:
    """Silence TraceEnum_ELBO's warning about programs without enumerated sites: labelled
    data and the classification term have none, and are scored by the same estimator."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TraceEnum_ELBO found no sample sites")
        yield


def _num_classes(model: Any, guide: Any) -> int:
    if not callable(getattr(guide, "classify", None)):
        raise ContractError(
            "semi-supervised training needs a guide with classify(x) -> Categorical, the "
            "classifier q(y | x) (e.g. guides.SemiSupervisedGuide)"
        )
    counts = {getattr(m, "num_classes", None) for m in (model, guide)} - {None}
    if len(counts) != 1:
        raise ContractError(
            "model and guide must declare the same num_classes (at least one of them); got "
            f"model {getattr(model, 'num_classes', None)}, guide "
            f"{getattr(guide, 'num_classes', None)}"
        )
    return int(counts.pop())


def _labelled_pair(
    pair: Any, name: str, model: Any, num_classes: int, dtype: torch.dtype, device: Any
) -> tuple[torch.Tensor, torch.Tensor] | None:
    if pair is None:
        return None
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ConfigError(f"{name} must be a pair (x, labels), got {type(pair).__name__}")
    x = validate_data(pair[0], model, name=f"{name} data", dtype=dtype, device=device)
    y = validate_labels(
        pair[1],
        x.shape[0],
        types.SimpleNamespace(num_classes=num_classes),
        name=f"{name} labels",
        device=device,
    )
    return x, y


def _check_options(
    epochs: int, batch_size: int, labelled_batch_size: int | None, lr: float, start: int
) -> None:
    if epochs < 0 or start < 0:
        raise ConfigError(f"epochs must be >= 0 (got {epochs}, start_epoch {start})")
    for name, value in (("batch_size", batch_size), ("labelled_batch_size", labelled_batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be positive, got {value}")
    if not lr > 0:
        raise ConfigError(f"lr must be positive, got {lr}")


def _cycle(num: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Batches of row indices from successive random permutations of ``range(num)``."""
    while True:
        order = torch.randperm(num, generator=generator)
        yield from order.split(batch_size)


class _Diverged(Exception):
    """A step's loss was not finite (raised before its gradients are taken)."""


class _StepLoss:
    r"""The loss of one step as a single objective for :class:`ppl_vae.steps.Steps`:
    ``differentiable_loss(model, guide, x_u, x_l, y_l)`` is the estimate of
    :math:`-\mathcal{J}^\alpha / N` from an unlabelled and a labelled minibatch (module
    docstring); its three terms, per minibatch sums, are kept in ``terms`` for the record."""

    def __init__(self, elbo: ELBO, aux_model: Callable, num_u: int, num_l: int) -> None:
        self.elbo = elbo
        self.aux_model = aux_model
        self.num_u, self.num_l = num_u, num_l
        self.terms = (math.nan, math.nan, math.nan)

    def differentiable_loss(
        self, model: Callable, guide: Callable, x_u: torch.Tensor, x_l: torch.Tensor, y_l: Any
    ) -> torch.Tensor:
        loss_u = self.elbo.differentiable_loss(model, guide, x_u)
        with _no_enumeration_warning():
            loss_l = self.elbo.differentiable_loss(model, guide, x_l, y=y_l)
            loss_aux = self.elbo.differentiable_loss(self.aux_model, no_latents, x_l, y_l)
        loss = (
            self.num_u / x_u.shape[0] * loss_u + self.num_l / x_l.shape[0] * (loss_l + loss_aux)
        ) / (self.num_u + self.num_l)
        if not torch.isfinite(loss):
            raise _Diverged(float(loss))
        self.terms = (loss_u.item(), loss_l.item(), loss_aux.item())
        return loss


# ----------------------------------------------------------------------------- training


def fit_semi_supervised(
    model: Callable,
    guide: Callable,
    x_unlabelled: Any,
    x_labelled: Any,
    y_labelled: Any,
    *,
    valid: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    epochs: int = 10,
    batch_size: int = 128,
    labelled_batch_size: int | None = None,
    lr: float = 1e-3,
    seed: int = 0,
    alpha: float | None = None,
    elbo: ELBO | None = None,
    optimizer: TorchOptim | torch.optim.Optimizer | None = None,
    start_epoch: int = 0,
    progress: bool = True,
    on_epoch_end: Callable[[SemiSupervisedEpoch, TorchOptim], None] | None = None,
) -> SemiSupervisedResult:
    r"""Train an M2 model and its guide on unlabelled data and a few labelled datapoints
    (the objective and the steps are in the module docstring).

    :param model: ``model(x, y=None)`` with the label site ``"y"`` (e.g.
        :class:`models.semi_supervised.SemiSupervisedVAE`).
    :param guide: ``guide(x, y=None)`` sampling ``"y"`` when no label is given, with
        ``classify(x) -> Categorical`` (e.g. :class:`guides.semi_supervised.SemiSupervisedGuide`).
    :param valid: ``(x, labels)`` whose accuracy is recorded after every epoch;
        :attr:`SemiSupervisedResult.best` picks the epoch by it.
    :param test: ``(x, labels)`` whose accuracy is recorded too (never used to choose).
    :param batch_size: unlabelled datapoints per step.
    :param labelled_batch_size: labelled datapoints per step; ``min(batch_size, number
        labelled)`` by default.
    :param alpha: weight of :math:`\sum \log q(y \mid x)` over labelled data;
        :func:`default_alpha` (``0.1 N / N_labelled``) by default.
    :param elbo: the estimator; ``TraceEnum_ELBO(max_plate_nesting=1)`` by default.
    :param optimizer: by default Adam with learning rate ``lr``, one torch optimizer over
        every parameter the three terms use (:func:`ppl_vae.optim.adam`, as
        :func:`ppl_vae.training.fit`); the steps are :class:`ppl_vae.steps.Steps` over one
        loss, the sum of the three terms. Pass the optimizer of an earlier result or of a
        restored checkpoint (a :class:`~ppl_vae.optim.TorchOptim`) to continue training, or
        a ``torch.optim.Optimizer`` to train only its parameters.
    :param seed: every epoch's randomness (Pyro's samplers, both shuffles) is derived from
        ``(seed, epoch)`` only, so runs are reproducible and a continued run (``start_epoch``)
        matches an uninterrupted one.
    :param on_epoch_end: called with each record and the optimizer, e.g. to checkpoint.
    :raises DataError: for bad data or labels, labels outside ``0 .. num_classes - 1``, or a
        class without any labelled datapoint.
    :raises ContractError: if the guide has no ``classify`` or model and guide disagree on
        ``num_classes``.
    """
    _check_options(epochs, batch_size, labelled_batch_size, lr, start_epoch)
    num_classes = _num_classes(model, guide)
    claim_param_names(model, guide)
    dtype, device = module_dtype_device(model, guide)
    x_u = validate_data(x_unlabelled, model, name="unlabelled data", dtype=dtype, device=device)
    x_l = validate_data(x_labelled, model, name="labelled data", dtype=dtype, device=device)
    y_l = validate_labels(
        y_labelled,
        x_l.shape[0],
        types.SimpleNamespace(num_classes=num_classes),
        name="labels of the labelled data",
        device=device,
    )
    missing = sorted(set(range(num_classes)) - set(y_l.unique().tolist()))
    if missing:
        raise DataError(
            f"the {y_l.numel()} labelled datapoints have no example of class(es) {missing} of "
            f"the {num_classes}; semi-supervised learning needs every class labelled at least "
            "once (choose them with ppl_vae.semi_supervised.balanced_labelled_split)"
        )
    valid_pair = _labelled_pair(valid, "validation", model, num_classes, dtype, device)
    test_pair = _labelled_pair(test, "test", model, num_classes, dtype, device)
    num_u, num_l = x_u.shape[0], x_l.shape[0]
    if alpha is None:
        alpha = default_alpha(num_l, num_u)
    elif not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha >= 0):
        raise ConfigError(f"alpha must be a finite number >= 0, got {alpha!r}")
    alpha = float(alpha)
    labelled_batch = min(labelled_batch_size or batch_size, num_l)
    step_loss = _StepLoss(
        elbo if elbo is not None else TraceEnum_ELBO(max_plate_nesting=1),
        functools.partial(classification_model, guide, scale=alpha),
        num_u,
        num_l,
    )
    steps = Steps(step_loss, as_torch_optim(optimizer, lr))
    steps.set_programs(model, guide)
    steps_per_epoch = math.ceil(num_u / batch_size)

    result = SemiSupervisedResult(alpha=alpha, optimizer=steps.optimizer)
    started = time.perf_counter()
    bar = tqdm(
        total=epochs * steps_per_epoch, disable=not progress, unit="step", dynamic_ncols=True
    )
    for epoch in range(start_epoch + 1, start_epoch + epochs + 1):
        epoch_start = time.perf_counter()
        pyro.set_rng_seed(derive_seed(seed, epoch))
        order = torch.randperm(
            num_u, generator=torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
        ).to(device)
        labelled_rows = _cycle(
            num_l, labelled_batch, torch.Generator().manual_seed(derive_seed(seed, epoch, 2))
        )
        sums = {"u": 0.0, "l": 0.0, "aux": 0.0, "objective": 0.0, "n_l": 0}
        for step, begin in enumerate(range(0, num_u, batch_size), start=1):
            rows = next(labelled_rows).to(device)
            batch = (x_u[order[begin : begin + batch_size]], x_l[rows], y_l[rows])
            try:
                loss = steps(batch, {})
            except _Diverged as error:
                raise TrainingDivergedError(
                    f"the loss became {error} at epoch {epoch}, step {step}; lower the "
                    f"learning rate (now {lr:g}) or alpha (now {alpha:g}), or check the data"
                ) from None
            loss_u, loss_l, loss_aux = step_loss.terms
            sums["u"] += loss_u
            sums["l"] += loss_l
            sums["aux"] += loss_aux
            sums["objective"] -= loss
            sums["n_l"] += rows.shape[0]
            bar.update()
            if step % 10 == 0 or step == steps_per_epoch:
                seen = min(num_u, begin + batch_size)
                bar.set_postfix(epoch=epoch, unlabelled_elbo=f"{-sums['u'] / seen:.2f}")
        record = SemiSupervisedEpoch(
            epoch=epoch,
            unlabelled_elbo=-sums["u"] / num_u,
            labelled_elbo=-sums["l"] / sums["n_l"],
            classification_loss=sums["aux"] / (alpha * sums["n_l"]) if alpha > 0 else math.nan,
            objective=sums["objective"] / steps_per_epoch,
            valid_accuracy=None if valid_pair is None else accuracy(guide, *valid_pair),
            test_accuracy=None if test_pair is None else accuracy(guide, *test_pair),
            seconds=time.perf_counter() - epoch_start,
            steps=steps_per_epoch,
        )
        result.history.append(record)
        if record.valid_accuracy is not None:
            bar.set_postfix(epoch=epoch, valid_accuracy=f"{record.valid_accuracy:.4f}")
        if on_epoch_end is not None:
            on_epoch_end(record, steps.optimizer)
    bar.close()
    result.seconds = time.perf_counter() - started
    return result


def fit_classifier(
    classifier: nn.Module,
    x: Any,
    y: Any,
    *,
    valid: tuple[Any, Any] | None = None,
    test: tuple[Any, Any] | None = None,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
) -> ClassifierResult:
    """The supervised baseline: train ``classifier`` (``x -> logits``, e.g.
    :class:`guides.classifier.Classifier`) by cross-entropy on the labelled data alone,
    with :class:`torch.optim.Adam`; accuracies recorded after every epoch as in
    :func:`fit_semi_supervised`.
    """
    _check_options(epochs, batch_size, None, lr, 0)
    num_classes = getattr(classifier, "num_classes", None)
    dtype, device = module_dtype_device(classifier)
    x = validate_data(x, name="labelled data", dtype=dtype, device=device)
    labels_of = types.SimpleNamespace(num_classes=num_classes)
    y = validate_labels(y, x.shape[0], labels_of, name="labels", device=device)
    valid_pair = _labelled_pair(valid, "validation", None, num_classes, dtype, device)
    test_pair = _labelled_pair(test, "test", None, num_classes, dtype, device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    result = ClassifierResult()
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        epoch_start = time.perf_counter()
        shuffle = torch.Generator().manual_seed(derive_seed(seed, epoch, 1))
        total = 0.0
        for rows in torch.randperm(x.shape[0], generator=shuffle).split(batch_size):
            rows = rows.to(device)
            loss = nn.functional.cross_entropy(classifier(x[rows]), y[rows], reduction="sum")
            optimizer.zero_grad()
            (loss / x.shape[0]).backward()
            optimizer.step()
            total += loss.item()
        result.history.append(
            ClassifierEpoch(
                epoch=epoch,
                loss=total / x.shape[0],
                valid_accuracy=None if valid_pair is None else accuracy(classifier, *valid_pair),
                test_accuracy=None if test_pair is None else accuracy(classifier, *test_pair),
                seconds=time.perf_counter() - epoch_start,
            )
        )
    result.seconds = time.perf_counter() - started
    return result
