r"""The latent space: posterior means :math:`\mathbb{E}_q[z \mid x]` of the data as a 2-D
scatter, coloured by label.

Which latents: by default every latent site of the guide, flattened and joined in the guide's
sampling order (for the hierarchical model ``z2`` then ``z1``, i.e. the whole latent
:math:`(z_2, z_1)`); ``sites`` picks some, e.g. ``"z2"`` for the top layer only. With two
coordinates they are drawn as they are; with more, projected on their first two principal
components (:class:`sklearn.decomposition.PCA`, fitted on the means drawn), the axes
labelled with the fraction of the means' variance each explains; with one, against the label
(or the datapoint's index when there are no labels).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import torch
from sklearn.decomposition import PCA

from ppl_vae.errors import ConfigError
from ppl_vae.plots._figure import figure
from ppl_vae.plots._layout import checked, out_path
from ppl_vae.plots.encoding import concat_sites, posterior_means
from ppl_vae.plots.result import PlotResult

__all__ = ["pca_2d", "plot_latent_space"]


def pca_2d(latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(coordinates (N, 2), explained_variance_ratio (2,))``: the first two principal
    components of the rows of ``latents`` ``(N, D)``, ``D >= 2``, by scikit-learn's exact
    (full SVD) PCA, float64."""
    values = latents.detach().cpu().double().numpy()
    if values.ndim != 2 or values.shape[1] < 2 or values.shape[0] < 2:
        raise ConfigError(f"PCA to 2-D needs (N >= 2, D >= 2) latents, got {values.shape}")
    pca = PCA(n_components=2, svd_solver="full")
    coordinates = pca.fit_transform(values)
    return torch.from_numpy(coordinates), torch.from_numpy(pca.explained_variance_ratio_)


def _coordinate_names(latents: dict[str, torch.Tensor]) -> list[str]:
    names = []
    for site, value in latents.items():
        size = value[0].numel()
        names.extend(f"{site}[{i}]" if size > 1 else site for i in range(size))
    return names


def _select(
    means: dict[str, torch.Tensor], sites: str | Sequence[str] | None
) -> dict[str, torch.Tensor]:
    if sites is None:
        return means
    wanted = [sites] if isinstance(sites, str) else list(sites)
    unknown = [s for s in wanted if s not in means]
    if unknown or not wanted:
        raise ConfigError(f"unknown latent sites {unknown}; the guide's are {list(means)}")
    return {s: means[s] for s in wanted}


@torch.no_grad()
def plot_latent_space(
    guide: Callable,
    x: torch.Tensor,
    out_dir: str | Path,
    *,
    labels: torch.Tensor | None = None,
    y: torch.Tensor | None = None,
    sites: str | Sequence[str] | None = None,
    num_samples: int = 32,
    seed: int = 0,
    name: str = "latent_space",
) -> PlotResult:
    r"""``{name}.png``: a scatter of the posterior means of ``x`` (see the module docs),
    coloured by ``labels`` (class indices: a colour per class with a legend; other values: a
    colour bar), one colour when there are none.

    :param labels: ``(N,)`` values to colour by; for a conditional model, ``y`` by default.
    :param y: labels ``(N,)`` read by conditional guides.
    :param sites: latent sites to draw (default: all, joined).
    :returns: a :class:`PlotResult` with tensors ``latents`` (``(N, D)``, the joined means),
        ``coordinates`` (``(N, 2)``, as drawn), ``explained_variance_ratio`` (``(2,)``, PCA
        only) and ``sites`` (the names).
    """
    x, y = checked(None, guide, x, y)
    means = _select(posterior_means(guide, x, y=y, num_samples=num_samples, seed=seed), sites)
    latents = concat_sites(means).double().cpu()
    coordinate_names = _coordinate_names(means)
    if labels is None:
        labels = y
    if labels is not None:
        labels = torch.as_tensor(labels).reshape(-1).cpu()
        if labels.shape[0] != latents.shape[0]:
            raise ConfigError(
                f"labels must hold one value per datapoint ({latents.shape[0]}), got "
                f"{labels.shape[0]}"
            )
    tensors: dict = {"latents": latents, "sites": list(means)}
    dim = latents.shape[1]
    if dim > 2:
        coordinates, ratio = pca_2d(latents)
        tensors["explained_variance_ratio"] = ratio
        axes = [f"PC{i + 1} ({100 * float(ratio[i]):.1f}% of variance)" for i in range(2)]
        how = f"PCA of {dim} coordinates"
    elif dim == 2:
        coordinates, axes, how = latents, coordinate_names, "2 coordinates"
    else:
        other = labels.double() if labels is not None else torch.arange(latents.shape[0]).double()
        coordinates = torch.stack([latents[:, 0], other], dim=1)
        axes = [coordinate_names[0], "label" if labels is not None else "datapoint"]
        how = "1 coordinate"
    tensors["coordinates"] = coordinates
    points = coordinates.numpy()
    path = out_path(out_dir, name)
    with figure(path, (6.4, 5.6)) as fig:
        ax = fig.add_subplot()
        if labels is None:
            ax.scatter(points[:, 0], points[:, 1], s=8, c="C0", lw=0, alpha=0.8)
        elif not labels.is_floating_point() and labels.unique().numel() <= 20:
            classes = labels.unique().tolist()
            cmap = "tab10" if len(classes) <= 10 else "tab20"
            colors = matplotlib.colormaps[cmap]
            for k, label in enumerate(classes):
                rows = (labels == label).numpy()
                ax.scatter(
                    points[rows, 0],
                    points[rows, 1],
                    s=8,
                    color=colors(k),
                    lw=0,
                    alpha=0.8,
                    label=str(label),
                )
            ax.legend(title="label", fontsize="small", markerscale=2, loc="best")
        else:
            shown = ax.scatter(
                points[:, 0],
                points[:, 1],
                s=8,
                c=labels.double().numpy(),
                cmap="viridis",
                lw=0,
                alpha=0.8,
            )
            fig.colorbar(shown, ax=ax, label="label")
        ax.set_xlabel(axes[0])
        ax.set_ylabel(axes[1])
        ax.set_title(
            f"posterior means E_q[z | x] of {latents.shape[0]} datapoints\n"
            f"sites {'+'.join(means)}: {how}",
            fontsize=10,
        )
        fig.tight_layout()
    return PlotResult((path,), tensors)
