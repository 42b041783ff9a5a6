"""Every picture of a saved run, written to ``RUN_DIR/plots``: what ``ppl-vae train`` and
``ppl-vae plot RUN_DIR`` call.

:func:`plot_run` rebuilds model and guide from the run directory
(:func:`ppl_vae.run.load_run`), reads the run's data as the model sees it (rescaled as in
training; the ``test`` split by default) with its labels where the dataset has them, and
writes each figure that applies; a figure that does not apply (no labels, a latent that is
not 2-D, no history yet) is skipped with the reason logged (logger ``ppl_vae.plots``) and
reported by :func:`run_figures`.

Files (image data; tables differ where noted), in this order:

* ``training_curves.png``: train and validation ELBO per epoch (and the trained objective
  where it differs), the test ELBO and IS log p(x) ± 2 se, later evaluations;
* ``samples_mean.png``: decoder means E[x | z] of ``num`` draws z ~ p(z) (conditional
  models: one row per class);
* ``samples_draw.png``: draws x ~ p(x | z) of the same z (tables: ``samples.png``, a
  two-feature scatter and sampled feature vectors, instead of both);
* ``reconstructions.png``: ``num // 2`` evenly spaced inputs and their reconstructions,
  alternating rows;
* ``latent_space.png``: posterior means of up to ``num_data`` datapoints, all latent sites
  joined (PCA to 2-D above two coordinates), coloured by label;
* ``manifold.png``: decoded 15 x 15 grid (8 x 8 for tables) over the prior quantiles of the
  top latent site; only when that site is 2-D;
* ``interpolation.png``: linear and spherical interpolation between two datapoints (of
  different labels; of the same label for conditional models);
* ``latent_arithmetic.png``: inputs of the smallest label moved toward the next label by
  the attribute vector at scales 0, 0.5, 1, 1.5, 2; only with labels, and not for
  conditional models (their class is y, not z).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.distributions import constraints

from models import LIKELIHOODS
from ppl_vae.build import LABELLED_ARCHITECTURES
from ppl_vae.data import Dataset, grey_levels_dataset, load_dataset, load_user_data
from ppl_vae.errors import ConfigError
from ppl_vae.plots._layout import checked
from ppl_vae.plots.arithmetic import plot_latent_arithmetic
from ppl_vae.plots.curves import plot_training_curves, read_metrics
from ppl_vae.plots.grids import value_range_of
from ppl_vae.plots.interpolation import plot_interpolation
from ppl_vae.plots.latent_space import plot_latent_space
from ppl_vae.plots.manifold import plot_manifold, prior_quantiles, quantile_levels
from ppl_vae.plots.reconstructions import plot_reconstructions
from ppl_vae.plots.samples import plot_samples
from ppl_vae.registry import lookup
from ppl_vae.run import METRICS, RunConfig, evenly_spaced_rows, load_run

__all__ = ["RunFigures", "plot_run", "run_figures"]

logger = logging.getLogger("ppl_vae.plots")


@dataclass
class RunFigures:
    """What :func:`run_figures` did: ``paths`` written in order, and ``skipped`` figure name
    -> the reason it does not apply."""

    paths: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _dataset(config: RunConfig, data_dir: str | None) -> Dataset:
    """The run's dataset rescaled as in training (counts given to a likelihood of the unit
    interval become grey levels), as :func:`ppl_vae.run.run_split` reads it, labels kept."""
    if config.data is not None:
        dataset = load_user_data(
            config.data,
            channels=config.channels,
            label_column=config.label_column,
            binarize=config.binarize,
        )
    else:
        dataset = load_dataset(
            config.dataset,
            data_dir=data_dir if data_dir is not None else config.data_dir,
            binarize=config.binarize,
        )
    support = getattr(lookup(LIKELIHOODS, config.model.likelihood, "likelihood"), "support", None)
    if support is constraints.unit_interval and dataset.max_value not in (None, 1.0):
        dataset = grey_levels_dataset(dataset)
    return dataset


def _pair(labels: torch.Tensor | None, same: bool, count: int) -> torch.Tensor:
    """Rows of two of ``count`` datapoints to interpolate between: row 0 and the first later
    row whose label differs (``same=False``) or equals (``same=True``) row 0's; without such
    a label, row 0 and the middle row (far apart in data sorted by class)."""
    if labels is not None:
        match = labels[1:] == labels[0] if same else labels[1:] != labels[0]
        hits = torch.nonzero(match).reshape(-1)
        if hits.numel():
            return torch.tensor([0, int(hits[0]) + 1])
    return torch.tensor([0, max(1, count // 2)])


def run_figures(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    num: int = 64,
    num_data: int = 1000,
    split: str = "test",
    seed: int = 0,
    data_dir: str | None = None,
    groups: tuple[Any, Any] | None = None,
) -> RunFigures:
    """Write every applicable figure of the run (see the module docs) and say which were
    skipped and why; :func:`plot_run` returns only the paths.

    :param out_dir: where to write (default ``run_dir/plots``).
    :param num: cells of the sample grids (reconstructions show ``num // 2`` inputs).
    :param num_data: datapoints of the latent-space scatter (evenly spaced through the
        split; the other figures use its first rows).
    :param split: the data split pictured.
    :param seed: seeds every draw; the figures are a fixed function of it.
    :param data_dir: where the dataset files are now (default: the run's ``data_dir``).
    :param groups: ``(source, target)`` labels of the latent arithmetic (default: the two
        smallest labels present).
    """
    if num < 2 or num_data < 2:
        raise ConfigError(f"num and num_data must be at least 2, got {num} and {num_data}")
    run = Path(run_dir)
    config, model, guide, _ = load_run(run)
    out = Path(out_dir) if out_dir is not None else run / "plots"
    dataset = _dataset(config, data_dir)
    data = dataset.split(split)
    labels = getattr(dataset, f"{split}_labels")
    rows = evenly_spaced_rows(num_data, data.shape[0])
    x, _ = checked(model, None, data[rows])  # validated, on the model's device
    labels = None if labels is None else labels[rows]
    # Conditional models read the labels; M2 is pictured given them too (q(z | x, y)).
    conditional = config.model.architecture in LABELLED_ARCHITECTURES
    y = labels if conditional else None
    image_shape = config.model.image_shape
    value_range = (0.0, float(dataset.max_value)) if dataset.max_value else value_range_of(x)
    common: dict[str, Any] = {"image_shape": image_shape, "value_range": value_range, "seed": seed}
    done = RunFigures()

    def skip(name: str, reason: str) -> None:
        done.skipped[name] = reason
        logger.info("plots: skipped %s: %s", name, reason)

    metrics = read_metrics(run / METRICS) if (run / METRICS).is_file() else {}
    history = (metrics.get("training") or {}).get("history")
    if history and "train_elbo" not in history[-1]:
        skip(
            "training_curves",
            "the history holds no train_elbo (an M2 run records its unlabelled and labelled "
            "ELBOs and accuracies in metrics.json)",
        )
    elif history:
        done.paths.extend(plot_training_curves(metrics, out).paths)
    else:
        skip("training_curves", "metrics.json holds no per-epoch history yet")

    sample_y, nrow, count = None, 8, num
    if conditional:
        classes = int(config.model.num_classes)
        nrow = max(1, num // classes)
        count = nrow * classes
        sample_y = torch.arange(classes).repeat_interleave(nrow)
    done.paths.extend(plot_samples(model, x, out, num=count, nrow=nrow, y=sample_y, **common).paths)
    shown = evenly_spaced_rows(max(1, num // 2), x.shape[0])  # every class of sorted data
    done.paths.extend(
        plot_reconstructions(
            model, guide, x[shown], out, y=None if y is None else y[shown], **common
        ).paths
    )
    done.paths.extend(plot_latent_space(guide, x, out, labels=labels, y=y, seed=seed).paths)

    manifold_y = int(labels.min()) if conditional and labels is not None else None
    side = 15 if image_shape is not None else 8
    site, quantiles, _ = prior_quantiles(  # the top site's dimension
        model, x, None, quantile_levels(2), y=manifold_y, num_draws=2, seed=seed
    )
    if quantiles.shape[-1] == 2:
        done.paths.extend(
            plot_manifold(model, x, out, site=site, n=side, y=manifold_y, **common).paths
        )
    else:
        skip(
            "manifold",
            f"the top latent site {site!r} has {quantiles.shape[-1]} coordinates; the "
            "manifold grid needs 2",
        )

    if x.shape[0] >= 2:
        pair = _pair(labels, same=conditional, count=x.shape[0])
        done.paths.extend(
            plot_interpolation(
                model, guide, x[pair], out, y=None if y is None else y[pair], **common
            ).paths
        )
    else:
        skip("interpolation", "it needs two datapoints")

    present = [] if labels is None else sorted(set(labels.tolist()))
    if labels is None:
        skip("latent_arithmetic", f"the {split} split of {dataset.name} has no labels")
    elif conditional:
        skip("latent_arithmetic", "the model keeps the class in y, not in z")
    elif groups is None and len(present) < 2:
        skip("latent_arithmetic", f"it needs two label groups; the data has {present}")
    else:
        source, target = groups if groups is not None else (present[0], present[1])
        done.paths.extend(
            plot_latent_arithmetic(
                model, guide, x, labels, out, source=source, target=target, **common
            ).paths
        )
    return done


def plot_run(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    num: int = 64,
    num_data: int = 1000,
    split: str = "test",
    seed: int = 0,
    data_dir: str | None = None,
    groups: tuple[Any, Any] | None = None,
) -> list[Path]:
    """Write every applicable figure of a saved run into ``run_dir/plots`` (or ``out_dir``)
    and return their paths; figures that do not apply are skipped with a logged reason
    (see :func:`run_figures` for the options and the module docs for the files)."""
    return run_figures(
        run_dir,
        out_dir,
        num=num,
        num_data=num_data,
        split=split,
        seed=seed,
        data_dir=data_dir,
        groups=groups,
    ).paths
