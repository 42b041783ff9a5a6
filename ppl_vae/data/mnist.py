"""MNIST (LeCun et al., 1998) through ``torchvision.datasets.MNIST``, or from local IDX files."""

from __future__ import annotations

from pathlib import Path

from ppl_vae.data.dataset import Dataset
from ppl_vae.data.idx import load_idx_dataset
from ppl_vae.data.paths import resolve_data_dir

__all__ = ["load_mnist"]


def load_mnist(data_dir: Path | None = None, download: bool = False) -> Dataset:
    """Load MNIST: 28x28 pixel counts 0..255 as float32, with labels.

    The four IDX files (``.gz`` or uncompressed) are searched, in order, in ``data_dir``,
    ``data_dir/mnist`` and ``data_dir/MNIST/raw`` (``data_dir`` defaults to
    :func:`default_data_dir`), put in torchvision's layout under ``data_dir`` and read by
    ``torchvision.datasets.MNIST``. With ``download=True`` and nothing found, torchvision
    downloads them into ``data_dir/MNIST/raw``.

    Split: as for Fashion-MNIST, the official test set is ``test``, the first 50,000 training
    images ``train`` and the last 10,000 ``valid`` (the last sixth for other sizes).

    :raises DatasetNotFoundError: listing every folder looked in and how to get the files.
    :raises DataError: naming the file, if a file is corrupt.
    """
    root = resolve_data_dir(data_dir)
    return load_idx_dataset(
        name="mnist",
        class_name="MNIST",
        search_dirs=[root, root / "mnist", root / "MNIST" / "raw"],
        cache_root=root,
        download=download,
        how_to_get=(
            "pass --download (download=True) on a machine with network, or copy the four .gz "
            "files into --data-dir (data_dir=...)."
        ),
    )
