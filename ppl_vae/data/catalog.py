"""The dataset registry and :func:`load_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ppl_vae.data.binarize import binarize_dataset, check_binarize
from ppl_vae.data.binarized_mnist import load_binarized_mnist
from ppl_vae.data.dataset import Dataset
from ppl_vae.data.digits import load_digits
from ppl_vae.data.fashion_mnist import load_fashion_mnist
from ppl_vae.data.mnist import load_mnist
from ppl_vae.registry import lookup

__all__ = ["DATASETS", "load_dataset"]

#: Loaders by name; each is called as ``loader(data_dir, download)``.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": load_digits,
    "binarized_mnist": load_binarized_mnist,
    "fashion_mnist": load_fashion_mnist,
    "mnist": load_mnist,
}


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    binarize: str | None = None,
) -> Dataset:
    """Load the dataset registered as ``name`` in :data:`DATASETS`.

    :param data_dir: folder searched for the files (default :func:`default_data_dir`).
    :param download: fetch missing files where the dataset has a download (needs network).
    :param binarize: ``None`` (default) keeps the grey levels; ``"static"`` samples every split
        once as ``x ~ Bernoulli(x / max_value)`` with fixed seeds (sampling, not
        thresholding: the usual static binarization); ``"dynamic"`` does the same for valid
        and test but keeps the probabilities in ``train`` and sets
        :attr:`Dataset.train_transform` to draw fresh pixels for every training minibatch.
        Either way ``max_value`` becomes 1, the likelihood ``"bernoulli"`` and the name gets
        a ``"[static]"`` / ``"[dynamic]"`` suffix; see :mod:`ppl_vae.data.binarize`.
    :raises UnknownNameError: for an unregistered name or an unknown ``binarize``; the message
        lists the choices.
    :raises DatasetNotFoundError: if the files are missing; the message says how to get them.
    """
    loader = lookup(DATASETS, name, "dataset")
    check_binarize(binarize)
    dataset = loader(None if data_dir is None else Path(data_dir).expanduser(), download)
    return binarize_dataset(dataset, binarize)
