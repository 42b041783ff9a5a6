"""Datasets for ppl_vae: one :class:`Dataset` record, a registry of loaders, and splits.

``digits`` ships with scikit-learn and needs no file; ``binarized_mnist``, ``fashion_mnist``
and ``mnist`` are read from a data directory (see :func:`default_data_dir`). Your own
``.npy``/``.npz``/``.csv`` file or image folder loads with :func:`load_user_data`. Any of them
can be binarized, statically or dynamically (``binarize=``; see :mod:`ppl_vae.data.binarize`).
"""

from __future__ import annotations

from ppl_vae.data.binarize import BINARIZE_CHOICES, binarize_dataset, grey_levels_dataset
from ppl_vae.data.catalog import DATASETS, load_dataset
from ppl_vae.data.dataset import Dataset
from ppl_vae.data.paths import default_data_dir
from ppl_vae.data.splits import split_indices
from ppl_vae.data.user import load_user_data

__all__ = [
    "BINARIZE_CHOICES",
    "DATASETS",
    "Dataset",
    "binarize_dataset",
    "default_data_dir",
    "grey_levels_dataset",
    "load_dataset",
    "load_user_data",
    "split_indices",
]
