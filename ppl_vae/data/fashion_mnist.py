"""Fashion-MNIST (Xiao et al., 2017) from local IDX files, loaded through torchvision."""

from __future__ import annotations

from pathlib import Path

from ppl_vae.data.dataset import Dataset
from ppl_vae.data.idx import load_idx_dataset
from ppl_vae.data.paths import resolve_data_dir

__all__ = ["DEBIAN_DIR", "load_fashion_mnist"]

#: Where the Debian package ``dataset-fashion-mnist`` installs the four ``.gz`` files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(data_dir: Path | None = None, download: bool = False) -> Dataset:
    """Load Fashion-MNIST: 28x28 pixel counts 0..255 as float32, with labels.

    The four IDX files (``train-images-idx3-ubyte.gz`` ...) are searched, in order, in
    ``data_dir``, ``data_dir/fashion_mnist``, ``data_dir/FashionMNIST/raw`` and
    :data:`DEBIAN_DIR` (``data_dir`` defaults to :func:`default_data_dir`). They are
    decompressed into ``data_dir/FashionMNIST/raw`` (a temp folder if ``data_dir`` is not
    writable) and read by ``torchvision.datasets.FashionMNIST``. With ``download=True`` and
    nothing found, torchvision downloads them there.

    Split: the official 10,000 test images are ``test``; of the official 60,000 training
    images the first 50,000 are ``train`` and the last 10,000 ``valid`` (for a training file of
    another size, the last sixth is ``valid``).

    :raises DatasetNotFoundError: listing every folder looked in and how to get the files.
    :raises DataError: naming the file, if a file is corrupt.
    """
    root = resolve_data_dir(data_dir)
    return load_idx_dataset(
        name="fashion_mnist",
        class_name="FashionMNIST",
        search_dirs=[root, root / "fashion_mnist", root / "FashionMNIST" / "raw", DEBIAN_DIR],
        cache_root=root,
        download=download,
        how_to_get=(
            "`apt-get install dataset-fashion-mnist` puts the files under "
            f"{DEBIAN_DIR}/; or copy the four .gz files into --data-dir (data_dir=...); or pass "
            "--download (download=True) on a machine with network."
        ),
    )
