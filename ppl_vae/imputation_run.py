"""Imputation of a saved run's test data (``ppl-vae impute RUN_DIR``): hide elements in a
pattern, impute them (:func:`ppl_vae.imputation.impute`), score the imputations against the
held-out truth next to mean imputation, and draw them."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ppl_vae.atomic import atomic_open, write_json
from ppl_vae.errors import ConfigError
from ppl_vae.imputation import (
    Imputation,
    check_pattern,
    hide,
    imputation_errors,
    impute,
    mean_imputation,
)
from ppl_vae.run import evenly_spaced_rows, load_run, run_split

__all__ = [
    "FILLS",
    "imputation_report",
    "impute_run",
    "plot_imputations",
    "score_imputation",
    "value_range_of",
]

#: What the guide's encoder sees in the holes: the per-feature training mean or zeros.
FILLS = ("mean", "zero")

#: RGB colour of the missing pixels in the pictures.
HOLE_COLOUR = (1.0, 0.0, 0.0)


def impute_run(
    run_dir: str | os.PathLike[str],
    *,
    pattern: str = "random",
    fraction: float = 0.5,
    num_data: int | None = 100,
    num_particles: int = 1000,
    num_samples: int = 3,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    fill: str = "zero",
    refine: int = 2,
    split: str = "test",
    data_dir: str | None = None,
    download: bool = False,
    num_show: int = 8,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Hide elements of a run's ``split`` in ``pattern`` (see :func:`~ppl_vae.imputation.hide`),
    impute them, and write ``imputation.json`` and ``imputation.png`` to ``out_dir``
    (default ``RUN_DIR/imputation``). Returns what ``imputation.json`` holds.

    The errors are on the held-out elements only, for the VAE's conditional mean, one VAE
    draw, and mean imputation (the per-feature mean of the run's training split); see
    :func:`score_imputation`.

    :param num_data: impute this many datapoints, evenly spaced through the split (all with
        ``None``).
    :param fill: what the guide's encoder sees in the holes (:data:`FILLS`): ``"zero"`` or
        ``"mean"``, the training mean.
    :param refine: proposal-refining passes (see :func:`~ppl_vae.imputation.impute`); they
        help a guide trained on complete data, which has never seen holes.
    :param num_show: datapoints (columns) in the picture.
    :raises ConfigError: for an unknown pattern or fill, or a fraction outside (0, 1).
    """
    if fill not in FILLS:
        raise ConfigError(f"unknown fill {fill!r}; choose one of {FILLS}")
    check_pattern(pattern, fraction)
    config, model, guide, payload = load_run(run_dir, device=device)
    name, data, labels, _ = run_split(
        config, split, data_dir=data_dir, seed=seed, num_data=num_data
    )
    train = run_split(config, "train", data_dir=data_dir, seed=seed).data
    image_shape = config.model.image_shape
    mask = hide(data.shape, pattern, fraction=fraction, image_shape=image_shape, seed=seed)
    if hasattr(guide, "fill_value"):
        guide.fill_value = train.mean(dim=0) if fill == "mean" else 0.0
    summary, result = score_imputation(
        model,
        guide,
        data,
        mask,
        train,
        labels=labels,
        num_particles=num_particles,
        num_samples=num_samples,
        seed=seed,
        refine=refine,
        chunk_size=config.chunk_size,
    )
    out = Path(run_dir) / "imputation" if out_dir is None else Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    picture = plot_imputations(
        out / "imputation.png",
        data,
        result,
        rows=evenly_spaced_rows(num_show, data.shape[0]),
        image_shape=image_shape,
        value_range=value_range_of(train),
        title=f"{name} {split}: {pattern} holes ({fraction:g})",
    )
    summary = {
        "dataset": name,
        "split": split,
        "epoch": int(payload["epoch"]),
        "pattern": pattern,
        "fraction": fraction,
        "fill": fill,
        **summary,
        "picture": str(picture),
    }
    write_json(out / "imputation.json", summary)
    return summary


def imputation_report(summary: dict[str, Any]) -> str:
    """What ``ppl-vae impute`` prints: the errors on the held-out elements of the VAE's
    conditional mean, one VAE draw and mean imputation, then ESS, log p(x_obs) and files."""
    names = {
        "vae_mean": "VAE conditional mean",
        "vae_sample": "VAE one draw",
        "mean_imputation": "mean imputation",
    }
    errors = summary["errors"]
    metrics = list(next(iter(errors.values())))
    width = max(len(name) for name in names.values())
    lines = [
        f"{summary['dataset']} {summary['split']}: {summary['num_data']} datapoints, "
        f"{summary['pattern']} holes, {100 * summary['missing_fraction']:.1f}% missing, "
        f"K = {summary['num_particles']}",
        f"{'held-out elements':<{width}}  " + "  ".join(f"{m:>17}" for m in metrics),
    ]
    for key, name in names.items():
        values = "  ".join(f"{errors[key][m]:>17.4f}" for m in metrics)
        lines.append(f"{name:<{width}}  {values}")
    lines.append(
        f"ESS median {summary['ess_median']:.1f} (min {summary['ess_min']:.1f}) of "
        f"{summary['num_particles']}; log p(x_obs) {summary['log_p_observed']:.3f} per datapoint"
    )
    lines.append(f"picture: {summary['picture']}")
    return "\n".join(lines)


def value_range_of(train: torch.Tensor) -> tuple[float, float]:
    """Grey-level range of pictures: ``(min(0, min), max)`` of the training data."""
    low, high = min(0.0, float(train.min())), float(train.max())
    return low, high if high > low else low + 1.0


def score_imputation(
    model: Any,
    guide: Any,
    data: torch.Tensor,
    mask: torch.Tensor,
    train: torch.Tensor,
    *,
    labels: torch.Tensor | None = None,
    num_particles: int = 1000,
    num_samples: int = 3,
    seed: int = 0,
    refine: int = 0,
    chunk_size: int | None = None,
) -> tuple[dict[str, Any], Imputation]:
    """Impute the holes of ``data`` (``mask`` False) and score them against ``data``, next to
    mean imputation with the per-feature mean of ``train``. Returns ``(summary,
    imputation)``: the summary holds the errors (:func:`~ppl_vae.imputation.imputation_errors`
    of ``vae_mean``, ``vae_sample`` and ``mean_imputation``), the missing fraction, the
    effective sample sizes and the mean importance-sampled log p(x_obs)."""
    options = {} if chunk_size is None else {"chunk_size": chunk_size}
    result = impute(
        model,
        guide,
        data,
        mask,
        num_samples=num_samples,
        num_particles=num_particles,
        y=labels,
        seed=seed,
        refine=refine,
        **options,
    )
    predictions = {
        "vae_mean": result.mean,
        "vae_sample": result.samples[0],
        "mean_imputation": mean_imputation(data, mask, train.mean(dim=0)),
    }
    summary = {
        "missing_fraction": float((~mask).double().mean()),
        "num_data": int(data.shape[0]),
        "num_particles": num_particles,
        "num_samples": num_samples,
        "refine": refine,
        "seed": seed,
        "errors": imputation_errors(data, mask, predictions),
        "ess_median": float(result.ess.median()),
        "ess_min": float(result.ess.min()),
        "log_p_observed": float(result.log_likelihood.mean()),
        "mean_stderr_max": float(result.mean_stderr.max()),
    }
    return summary, result


def _as_rgb(
    x: torch.Tensor, image_shape: Sequence[int] | None, value_range: tuple[float, float]
) -> torch.Tensor:
    """``(M, D)`` flat datapoints to ``(M, 3, H, W)`` images in [0, 1]."""
    low, high = value_range
    shape = tuple(image_shape) if image_shape is not None else (1, 1, x.shape[-1])
    images = ((x.detach().cpu().double() - low) / (high - low)).clamp(0, 1).reshape(-1, *shape)
    if shape[0] == 1:
        images = images.expand(-1, 3, -1, -1)
    elif shape[0] != 3:
        images = images.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return images


def plot_imputations(
    path: str | os.PathLike[str],
    truth: torch.Tensor,
    imputation: Imputation,
    *,
    rows: Sequence[int] | torch.Tensor | None = None,
    image_shape: Sequence[int] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
    title: str | None = None,
    scale: int | None = None,
) -> Path:
    """Write a PNG with one column per datapoint and rows: the input with its holes in red,
    every imputation draw, the conditional mean, and the truth. Row labels on the left; grey
    levels from ``value_range``.

    :param truth: ``(N, *data_shape)``, the complete datapoints that were imputed.
    :param rows: which datapoints to draw (default: 8 evenly spaced ones).
    :param image_shape: ``(C, H, W)``; data that are not images are drawn as one row of
        pixels per datapoint.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torchvision.utils import make_grid

    if rows is None:
        rows = evenly_spaced_rows(8, truth.shape[0])
    rows = torch.as_tensor(rows, dtype=torch.long)
    count = rows.numel()
    flat = truth.detach().cpu()[rows].reshape(count, -1)
    mask = imputation.mask[rows].reshape(count, -1)
    holes = _as_rgb(flat, image_shape, value_range).clone()
    shape = tuple(image_shape) if image_shape is not None else (1, 1, flat.shape[-1])
    hole_pixels = (~mask).reshape(count, *shape).any(1)  # (M, H, W)
    for channel, value in enumerate(HOLE_COLOUR):
        holes[:, channel][hole_pixels] = value
    pictures = [holes]
    labels = ["input (missing: red)"]
    for s in range(imputation.samples.shape[0]):
        draws = imputation.samples[s, rows].reshape(count, -1)
        pictures.append(_as_rgb(draws, image_shape, value_range))
        labels.append(f"imputation {s + 1}")
    mean = imputation.mean[rows].reshape(count, -1)
    pictures.append(_as_rgb(mean, image_shape, value_range))
    labels.append("conditional mean")
    pictures.append(_as_rgb(flat, image_shape, value_range))
    labels.append("truth")
    height, width = shape[1], shape[2]
    if scale is None:
        scale = max(1, math.ceil(32 / max(height, width)))
    cells = torch.cat(pictures).repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    padding = 2
    grid = make_grid(cells.float(), nrow=count, padding=padding, pad_value=0.5)
    cell_height = height * scale + padding
    figure, axes = plt.subplots(
        figsize=(max(4.0, grid.shape[2] / 60 + 2.0), grid.shape[1] / 60 + 0.6), dpi=100
    )
    axes.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    axes.set_yticks([padding + cell_height * (i + 0.5) for i in range(len(labels))])
    axes.set_yticklabels(labels)
    axes.set_xticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        figure.savefig(handle, format="png", bbox_inches="tight")
    plt.close(figure)
    return path
