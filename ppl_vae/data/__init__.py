"""Datasets for ppl_vae: one :class:`Dataset` record, a registry of loaders, and splits.

``digits`` ships with scikit-learn and needs no file; ``binarized_mnist``, ``fashion_mnist``
and ``mnist`` are read from a data directory (see :func:`default_data_dir`).
"""

from __future__ import annotations

from ppl_vae.data.catalog import DATASETS, load_dataset
from ppl_vae.data.dataset import Dataset
from ppl_vae.data.paths import default_data_dir
from ppl_vae.data.splits import split_indices

__all__ = ["DATASETS", "Dataset", "default_data_dir", "load_dataset", "split_indices"]
