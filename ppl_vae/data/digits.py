"""The scikit-learn 8x8 digits: the embedded default dataset (no file, no network)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ppl_vae.data.dataset import Dataset
from ppl_vae.data.splits import split_indices

__all__ = ["DIGITS_SEED", "DIGITS_TEST_FRACTION", "DIGITS_VALID_FRACTION", "load_digits"]

DIGITS_VALID_FRACTION = 0.1
DIGITS_TEST_FRACTION = 0.2
DIGITS_SEED = 0


def load_digits(data_dir: Path | None = None, download: bool = False) -> Dataset:
    """Load the 1797 digits of :func:`sklearn.datasets.load_digits`.

    Values are the integer counts 0..16 stored as float32, 64 features per image of shape
    ``(1, 8, 8)``, with labels. The split is :func:`split_indices` with 10% valid, 20% test and
    seed 0, so it is the same on every machine. ``data_dir`` and ``download`` are ignored: the
    data ships inside scikit-learn.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    images = np.asarray(bunch.data, dtype=np.float32)
    labels = np.asarray(bunch.target, dtype=np.int64)
    train, valid, test = split_indices(
        images.shape[0],
        valid_fraction=DIGITS_VALID_FRACTION,
        test_fraction=DIGITS_TEST_FRACTION,
        seed=DIGITS_SEED,
    )
    return Dataset(
        name="digits",
        train=torch.from_numpy(images[train]),
        valid=torch.from_numpy(images[valid]),
        test=torch.from_numpy(images[test]),
        data_shape=(images.shape[1],),
        image_shape=(1, 8, 8),
        max_value=16.0,
        default_likelihood="binomial",
        source="scikit-learn",
        train_labels=torch.from_numpy(labels[train]),
        valid_labels=torch.from_numpy(labels[valid]),
        test_labels=torch.from_numpy(labels[test]),
    )
