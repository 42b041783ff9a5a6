r"""Semi-supervised (M2) runs on disk: ``ppl-vae train --architecture m2 --num-labelled N``.

An M2 run is an ordinary run directory (:mod:`ppl_vae.run`): ``config.json`` with the
settings ``num_labelled`` and ``alpha``, ``checkpoint.pt`` after every epoch and
``metrics.json``. What differs is plugged into :mod:`ppl_vae.run`'s machinery here:

- :func:`check_semi_supervised` refuses settings M2 cannot take and chooses the labelled
  datapoints (:func:`~ppl_vae.semi_supervised.balanced_labelled_split` of the training split,
  seeded by the run's ``seed``, so a resumed run and a reader of the run find the same ones);
- :func:`semi_supervised_metrics` is what ``metrics.json`` records of them;
- :func:`semi_supervised_trainer` has :func:`ppl_vae.training.fit`'s keyword interface and
  trains by :func:`~ppl_vae.semi_supervised.fit_semi_supervised` on the unlabelled rest and
  the labelled rows, recording the validation and test accuracy of
  :math:`\arg\max_y q(y \mid x)` after every epoch;
- :func:`evaluate_semi_supervised` scores a split: the accuracy of
  :math:`\arg\max_y q(y \mid x)` and the importance-sampled :math:`\log p(x)`, the label
  marginalized by drawing it from :math:`q(y \mid x)` with z.

Why not sum y out exactly in the estimate? The estimator that does,
:func:`~ppl_vae.semi_supervised.log_likelihood_summing_labels` (K draws of z for each of
the C classes), spends most draws on classes :math:`q(y \mid x)` rules out: on the digits
(50 labels, 12 epochs) its :math:`\log p(x)` was 0.3 to 1.4 nats *lower* (looser) than
that of C K draws of y from :math:`q(y \mid x)`, for the same ELBO.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ppl_vae import distributed
from ppl_vae.data import Dataset
from ppl_vae.errors import ConfigError, DataError
from ppl_vae.estimators import log_likelihood
from ppl_vae.semi_supervised import (
    SemiSupervisedResult,
    accuracy,
    balanced_labelled_split,
    default_alpha,
    fit_semi_supervised,
)

__all__ = [
    "check_semi_supervised",
    "evaluate_semi_supervised",
    "labelled_split",
    "semi_supervised_metrics",
    "semi_supervised_report",
    "semi_supervised_trainer",
]

ARCHITECTURE = "m2"

#: Arguments of :func:`ppl_vae.training.fit` that an M2 run's settings fix (checked by
#: :func:`check_semi_supervised`); the trainer ignores them.
_FIXED_BY_SETTINGS = frozenset({"elbo", "beta", "batch_transform", "train_labels", "valid_labels"})


def _is_m2(config: Any) -> bool:
    return config.architecture == ARCHITECTURE


def _refused_settings(config: Any) -> list[str]:
    """The settings of ``config`` an M2 run cannot take, each with the reason."""
    refused = []
    if config.objective != "trace_elbo" or config.objective_options:
        refused.append(
            f"objective {config.objective!r} (--objective, --objective-option): M2 trains on "
            "its own objective, Kingma et al.'s J^alpha, each term scored by TraceEnum_ELBO "
            "with y summed out exactly"
        )
    if config.beta != 1.0 or config.warmup_epochs != 0:
        refused.append("beta or KL warm-up (--beta, --warmup-epochs): not implemented for M2")
    if config.binarize == "dynamic":
        refused.append(
            "--binarize dynamic: fresh binarization per minibatch is not implemented for M2; "
            "use --binarize static"
        )
    if distributed.active():
        refused.append("data-parallel training (torchrun): M2 trains in one process")
    return refused


def check_semi_supervised(config: Any, dataset: Dataset | None = None) -> None:
    """Check the semi-supervised settings of a run config (a :class:`ppl_vae.run.RunConfig`):
    ``num_labelled`` and ``alpha`` go with ``architecture = "m2"`` only, M2 needs
    ``num_labelled``, and takes no objective, beta, dynamic binarization or data-parallel
    training. With the run's ``dataset`` (and ``config.model`` filled in) the labelled
    datapoints are chosen too, so a bad ``num_labelled`` fails before anything is written.

    :raises ConfigError: for settings that do not go together.
    :raises DataError: for a dataset without labels or a ``num_labelled`` it cannot give.
    """
    if not _is_m2(config):
        given = [name for name in ("num_labelled", "alpha") if getattr(config, name) is not None]
        if given:
            flags = " and ".join("--" + name.replace("_", "-") for name in given)
            raise ConfigError(
                f"{flags} (setting{'s' * (len(given) > 1)} {', '.join(given)}) only go with "
                "--architecture m2 "
                f"(semi-supervised learning), not with architecture {config.architecture!r}"
            )
        return
    if config.num_labelled is None:
        raise ConfigError(
            "--architecture m2 needs --num-labelled N (setting num_labelled): how many training "
            "datapoints keep their labels, chosen balanced across classes; the rest are "
            "unlabelled"
        )
    if config.alpha is not None and not config.alpha >= 0:
        raise ConfigError(f"--alpha (setting alpha) must be a number >= 0, got {config.alpha}")
    refused = _refused_settings(config)
    if refused:
        raise ConfigError("M2 runs cannot take " + "; ".join(refused))
    if dataset is not None:
        labelled_split(config, dataset)


def labelled_split(config: Any, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """``(labelled, unlabelled)`` rows of the training split of an M2 run: ``num_labelled``
    rows balanced across classes (their numbers differ by at most one), chosen by the run's
    ``seed`` (:func:`~ppl_vae.semi_supervised.balanced_labelled_split`).

    :raises DataError: for a dataset without labels, fewer labels than classes, or no
        unlabelled datapoint left.
    """
    if not dataset.has_labels:
        raise DataError(
            f"M2 learns from labels and dataset {dataset.name!r} has none; use a labelled "
            "dataset (digits, fashion_mnist, a .csv with --label-column, an image folder)"
        )
    labels = dataset.train_labels
    wanted, total = config.num_labelled, labels.numel()
    if wanted >= total:
        raise DataError(
            f"--num-labelled {wanted} leaves no unlabelled data: the training split of "
            f"{dataset.name} has {total} datapoints; ask for fewer labels (M2 learns from the "
            "unlabelled rest), or train --architecture conditional on all of them"
        )
    return balanced_labelled_split(
        labels, wanted, seed=config.seed, num_classes=config.model.num_classes
    )


def semi_supervised_metrics(config: Any, dataset: Dataset) -> dict[str, Any]:
    """What ``metrics.json`` records of an M2 run's labels (empty for other runs): the
    number labelled and unlabelled, the weight ``alpha`` used, the seed that chose the
    labelled rows and the rows themselves (of the training split), and the labelled
    datapoints per class."""
    if not _is_m2(config):
        return {}
    labelled, unlabelled = labelled_split(config, dataset)
    alpha = config.alpha
    if alpha is None:
        alpha = default_alpha(labelled.numel(), unlabelled.numel())
    per_class = torch.bincount(dataset.train_labels[labelled], minlength=config.model.num_classes)
    return {
        "semi_supervised": {
            "num_labelled": labelled.numel(),
            "num_unlabelled": unlabelled.numel(),
            "alpha": float(alpha),
            "split_seed": config.seed,
            "labelled_per_class": per_class.tolist(),
            "labelled_rows": labelled.tolist(),
        }
    }


def _refuse_unsupported(options: dict[str, Any]) -> None:
    unsupported = sorted(
        name
        for name, value in options.items()
        if name not in _FIXED_BY_SETTINGS and value is not None and value is not False
    )
    if unsupported:
        raise ConfigError(f"M2 training does not take {', '.join(unsupported)}")


def semi_supervised_trainer(config: Any, dataset: Dataset) -> Callable[..., SemiSupervisedResult]:
    """A trainer with :func:`ppl_vae.training.fit`'s keyword interface, as
    :mod:`ppl_vae.run` calls it, that trains an M2 pair by
    :func:`~ppl_vae.semi_supervised.fit_semi_supervised`: the training split's unlabelled
    rows and its labelled ones (:func:`labelled_split`), the run's ``alpha``, validation and
    test accuracy after every epoch. ``fit``'s objective, beta, transform and labels are
    fixed by the checked settings and ignored; any other option given raises."""
    labelled, unlabelled = labelled_split(config, dataset)

    def train(
        model: Any,
        guide: Any,
        train_data: torch.Tensor,
        *,
        valid_data: torch.Tensor | None = None,
        epochs: int,
        batch_size: int,
        lr: float,
        seed: int,
        optimizer: Any = None,
        start_epoch: int = 0,
        progress: bool = True,
        on_epoch_end: Callable | None = None,
        **options: Any,
    ) -> SemiSupervisedResult:
        _refuse_unsupported(options)
        return fit_semi_supervised(
            model,
            guide,
            train_data[unlabelled],
            train_data[labelled],
            dataset.train_labels[labelled],
            valid=None if valid_data is None else (valid_data, dataset.valid_labels),
            test=None if dataset.test is None else (dataset.test, dataset.test_labels),
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            alpha=config.alpha,
            optimizer=optimizer,
            start_epoch=start_epoch,
            progress=progress,
            on_epoch_end=on_epoch_end,
        )

    return train


def evaluate_semi_supervised(
    model: Any,
    guide: Any,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_samples: int,
    seed: int,
    chunk_size: int,
) -> dict[str, Any]:
    r"""The summary of an M2 pair on a split, for ``metrics.json``: ``accuracy`` of
    :math:`\arg\max_y q(y \mid x)` against ``labels``, and the importance-sampled
    :math:`\log p(x)`, ELBO and gap of :func:`~ppl_vae.estimators.log_likelihood`, whose
    ``num_samples`` draws of (y, z) come from :math:`q(y \mid x)\, q(z \mid x, y)`: the
    label is marginalized by importance sampling, as z is (module docs: why not summed)."""
    estimate = log_likelihood(
        model, guide, x, num_samples=num_samples, seed=seed, chunk_size=chunk_size
    )
    return {
        "accuracy": accuracy(guide, x, labels),
        **estimate.summary(),
        "labels": "drawn from q(y | x) with z",
    }


def semi_supervised_report(summary: dict[str, Any], metrics: dict[str, Any] | None = None) -> str:
    """The printed report of an M2 evaluation ``summary`` (a split's accuracy and log p(x));
    with the run's ``metrics``, also the epoch of the best validation accuracy and the
    labels it learned from."""
    k = summary["num_samples"]
    rows = [
        ("test accuracy, argmax q(y|x)", f"{summary['accuracy']:.4f}"),
        (
            f"test log p(x) (IS, K={k}, y ~ q(y|x))",
            f"{summary['log_likelihood']:.3f} ± {summary['log_likelihood_stderr']:.3f}",
        ),
        ("test ELBO", f"{summary['elbo']:.3f}"),
        ("gap log p(x) - ELBO", f"{summary['gap']:.3f}"),
    ]
    history = ((metrics or {}).get("training") or {}).get("history") or []
    scored = [r for r in history if r.get("valid_accuracy") is not None]
    if scored:
        best = max(scored, key=lambda r: (r["valid_accuracy"], -r["epoch"]))
        test = best.get("test_accuracy")
        rows.append(
            (
                f"best valid accuracy (epoch {best['epoch']})",
                f"{best['valid_accuracy']:.4f}"
                + ("" if test is None else f", test accuracy then {test:.4f}"),
            )
        )
    width = max(len(name) for name, _ in rows)
    lines = [f"{name:<{width}}  {value}" for name, value in rows]
    labels = (metrics or {}).get("semi_supervised")
    if labels:
        total = labels["num_labelled"] + labels["num_unlabelled"]
        lines.append(
            f"labels: {labels['num_labelled']} of {total} training datapoints (per class "
            f"{labels['labelled_per_class']}), alpha {labels['alpha']:.4g}"
        )
    lines.append(f"(nats per datapoint, mean over {summary['num_data']} datapoints)")
    return "\n".join(lines)
