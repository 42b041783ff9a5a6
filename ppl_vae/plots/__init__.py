"""Pictures of a trained VAE, written as PNG files.

Each function takes a model and guide (e.g. from :func:`ppl_vae.run.load_run`) and data
tensors, writes PNG files into ``out_dir`` and returns a :class:`PlotResult` (the paths and
the tensors drawn). Image data (an ``image_shape`` ``(C, H, W)``) are drawn as image grids
(:func:`torchvision.utils.make_grid`, exact pixel sizes, see :func:`grid_size`); other data
(tables) as heatmaps or scatter plots. Everything random is seeded by ``seed``.

* :func:`plot_samples`: samples from p(x), decoder means and true draws of the same z;
* :func:`plot_reconstructions`: inputs and reconstructions in alternating rows;
* :func:`plot_training_curves`: ELBO per epoch and test log p(x) ± 2 se from ``metrics.json``;
* :func:`plot_latent_space`: posterior means coloured by label (PCA above two dimensions);
* :func:`plot_manifold`: decoder means over prior quantiles of a 2-D latent;
* :func:`plot_interpolation`: linear and spherical paths between two inputs;
* :func:`plot_latent_arithmetic`: inputs moved along a label-group attribute vector;
* :func:`plot_run`: every applicable figure of a run directory, into ``RUN_DIR/plots``.

The building blocks are public too: :func:`posterior_means` (E_q[z | x] of every latent
site, any guide family), :func:`decode` (p(x | z) at chosen latents, the other sites at their
conditional means), :func:`prior_draws`, :func:`reconstruct`, :func:`lerp`, :func:`slerp`,
:func:`pca_2d`, :func:`prior_quantiles`, :func:`attribute_vector`.
"""

from ppl_vae.plots.arithmetic import attribute_vector, plot_latent_arithmetic
from ppl_vae.plots.curves import plot_training_curves, read_metrics
from ppl_vae.plots.decoding import decode, prior_draws
from ppl_vae.plots.encoding import concat_sites, posterior_means
from ppl_vae.plots.grids import default_scale, grid_size, write_cells
from ppl_vae.plots.interpolation import lerp, plot_interpolation, slerp
from ppl_vae.plots.latent_space import pca_2d, plot_latent_space
from ppl_vae.plots.manifold import plot_manifold, prior_quantiles, quantile_levels
from ppl_vae.plots.reconstructions import plot_reconstructions, reconstruct
from ppl_vae.plots.result import PlotResult
from ppl_vae.plots.run_plots import RunFigures, plot_run, run_figures
from ppl_vae.plots.samples import plot_samples

__all__ = [
    "PlotResult",
    "RunFigures",
    "attribute_vector",
    "concat_sites",
    "decode",
    "default_scale",
    "grid_size",
    "lerp",
    "pca_2d",
    "plot_interpolation",
    "plot_latent_arithmetic",
    "plot_latent_space",
    "plot_manifold",
    "plot_reconstructions",
    "plot_run",
    "plot_samples",
    "plot_training_curves",
    "posterior_means",
    "prior_draws",
    "prior_quantiles",
    "quantile_levels",
    "read_metrics",
    "reconstruct",
    "run_figures",
    "slerp",
    "write_cells",
]
