"""Shared loading of MNIST-style IDX data through torchvision (``mnist``, ``fashion_mnist``).

torchvision's ``MNIST``/``FashionMNIST`` classes only accept the *uncompressed* IDX files in
``<root>/<ClassName>/raw/``. :func:`load_idx_dataset` finds the four files (``.gz`` or not) in
a list of folders, decompresses them into that layout under a cache root, checks their IDX
headers (so a corrupt file is named), and then loads them through the torchvision class.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from ppl_vae.atomic import atomic_open
from ppl_vae.data.dataset import Dataset
from ppl_vae.data.paths import writable_root
from ppl_vae.errors import DataError, DatasetNotFoundError

__all__ = [
    "IDX_FILES",
    "IMAGE_MAGIC",
    "LABEL_MAGIC",
    "check_idx_file",
    "find_idx_dir",
    "load_idx_dataset",
    "prepare_torchvision_root",
    "train_valid_sizes",
]

#: The four files of an MNIST-style dataset, without the ``.gz`` suffix.
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
#: Big-endian magic number of an IDX file of unsigned bytes with 3 dimensions (images).
IMAGE_MAGIC = 0x00000803
#: Big-endian magic number of an IDX file of unsigned bytes with 1 dimension (labels).
LABEL_MAGIC = 0x00000801

_CHUNK = 1 << 20


def _source_file(directory: Path, name: str) -> Path | None:
    """``directory/name.gz`` if present, else ``directory/name``, else ``None``."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def find_idx_dir(directories: Sequence[Path]) -> Path | None:
    """Return the first folder that holds all four IDX files (each ``.gz`` or uncompressed)."""
    for directory in directories:
        if all(_source_file(directory, name) is not None for name in IDX_FILES):
            return directory
    return None


def _uncompressed_size(source: Path) -> int:
    """Size of ``source`` once decompressed (gzip keeps it, mod 2**32, in its last 4 bytes)."""
    if source.suffix != ".gz":
        return source.stat().st_size
    with open(source, "rb") as stream:
        stream.seek(0, os.SEEK_END)
        if stream.tell() < 4:
            return -1
        stream.seek(-4, os.SEEK_END)
        return struct.unpack("<I", stream.read(4))[0]


def _up_to_date(source: Path, target: Path) -> bool:
    """Whether ``target`` is the decompressed copy of ``source`` (same mtime, right size)."""
    if source == target:
        return True
    if not target.is_file():
        return False
    target_stat = target.stat()
    same_time = target_stat.st_mtime_ns == source.stat().st_mtime_ns
    return same_time and target_stat.st_size % (1 << 32) == _uncompressed_size(source)


def _extract(source: Path, target: Path) -> None:
    """Decompress (or copy) ``source`` to ``target`` atomically; a bad gzip is a DataError.

    The copy takes the source's modification time, which :func:`_up_to_date` checks."""
    opener = gzip.open if source.suffix == ".gz" else open
    with atomic_open(target, "wb") as out, opener(source, "rb") as stream:
        while True:
            try:
                chunk = stream.read(_CHUNK)
            except (OSError, EOFError, zlib.error) as error:
                raise DataError(f"{source}: cannot be decompressed ({error})") from error
            if not chunk:
                break
            out.write(chunk)
    source_stat = source.stat()
    os.utime(target, ns=(source_stat.st_atime_ns, source_stat.st_mtime_ns))


def prepare_torchvision_root(found: Path, root: Path, class_name: str) -> Path:
    """Make ``<root>/<class_name>/raw/`` hold the four uncompressed files found in ``found``.

    A file already there is kept if it carries its source's modification time (copied on
    extraction) and the size the gzip trailer records; otherwise it is extracted again. If
    ``root`` is not writable, a per-user temporary folder is used instead (see
    :func:`writable_root`).

    :returns: the root to hand to the torchvision class.
    """
    sources: dict[str, Path] = {}
    for name in IDX_FILES:
        source = _source_file(found, name)
        if source is None:
            raise DatasetNotFoundError(f"{found / name}.gz not found")
        sources[name] = source
    raw = root / class_name / "raw"
    if all(_up_to_date(source, raw / name) for name, source in sources.items()):
        return root
    root = writable_root(root)
    raw = root / class_name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not _up_to_date(source, raw / name):
            _extract(source, raw / name)
    return root


def check_idx_file(path: Path, magic: int, *, shown: Path | None = None) -> tuple[int, ...]:
    """Check the IDX header and size of an uncompressed file; return its dimensions.

    :param magic: :data:`IMAGE_MAGIC` or :data:`LABEL_MAGIC`.
    :param shown: the path to name in an error (e.g. the ``.gz`` the file came from).
    :raises DataError: naming the file, on a wrong magic number or a size that does not match
        the dimensions in the header.
    """
    shown = shown or path
    ndim = magic & 0xFF
    header_size = 4 * (ndim + 1)
    with open(path, "rb") as stream:
        header = stream.read(header_size)
    if len(header) < header_size:
        raise DataError(f"{shown}: truncated IDX header ({len(header)} bytes)")
    found_magic, *dims = struct.unpack(f">{ndim + 1}I", header)
    if found_magic != magic:
        raise DataError(
            f"{shown}: IDX magic number 0x{found_magic:08x}, expected 0x{magic:08x} "
            f"(unsigned bytes, {ndim} dimension(s))"
        )
    expected = header_size + math.prod(dims)
    actual = path.stat().st_size
    if actual != expected:
        raise DataError(
            f"{shown}: IDX header says dimensions {tuple(dims)} ({expected} bytes) but the "
            f"uncompressed file has {actual} bytes; the file is truncated or corrupt"
        )
    return tuple(dims)


def train_valid_sizes(n_train: int) -> tuple[int, int]:
    """Sizes of the (train, valid) parts of an official training set of ``n_train`` images.

    The last ``n_train // 6`` images are the validation set and the rest the training set: for
    the official 60,000 that is the usual first 50,000 / last 10,000.
    """
    n_valid = n_train // 6
    return n_train - n_valid, n_valid


def _check_files(raw: Path, found: Path) -> None:
    """Check the four uncompressed files in ``raw`` (copied from ``found``) agree."""
    shapes = {}
    for name in IDX_FILES:
        magic = IMAGE_MAGIC if "images" in name else LABEL_MAGIC
        shown = _source_file(found, name) or raw / name
        shapes[name] = check_idx_file(raw / name, magic, shown=shown)
    for prefix in ("train", "t10k"):
        images = shapes[f"{prefix}-images-idx3-ubyte"]
        labels = shapes[f"{prefix}-labels-idx1-ubyte"]
        if images[0] != labels[0]:
            raise DataError(
                f"{found}: {prefix}-images holds {images[0]} images but {prefix}-labels holds "
                f"{labels[0]} labels"
            )
    train_shape = shapes["train-images-idx3-ubyte"]
    test_shape = shapes["t10k-images-idx3-ubyte"]
    if train_shape[1:] != test_shape[1:]:
        raise DataError(
            f"{found}: train images are {train_shape[1:]} but test images are {test_shape[1:]}"
        )


def load_idx_dataset(
    *,
    name: str,
    class_name: str,
    search_dirs: Sequence[Path],
    cache_root: Path,
    download: bool,
    how_to_get: str,
) -> Dataset:
    """Load an MNIST-style dataset through ``torchvision.datasets.<class_name>``.

    :param name: the registry name, e.g. ``"fashion_mnist"``.
    :param class_name: ``"MNIST"`` or ``"FashionMNIST"``.
    :param search_dirs: folders searched, in order, for the four IDX files.
    :param cache_root: the root handed to torchvision (files are decompressed into
        ``cache_root/<class_name>/raw``; a temp folder replaces it if not writable).
    :param download: with nothing found, let torchvision download into ``cache_root``.
    :param how_to_get: the advice ending the not-found message.
    :raises DatasetNotFoundError: if nothing is found and ``download`` is off (or fails).
    :raises DataError: naming the file, if a file is corrupt.
    """
    import torchvision.datasets

    dataset_class = getattr(torchvision.datasets, class_name)
    torchvision_raw = cache_root / class_name / "raw"
    looked = list(dict.fromkeys([*search_dirs, torchvision_raw]))
    found = find_idx_dir(looked)
    if found is not None:
        root = prepare_torchvision_root(found, cache_root, class_name)
    elif download:
        root = writable_root(cache_root)
        try:
            dataset_class(root=str(root), train=True, download=True)
        except (RuntimeError, OSError) as error:
            raise DatasetNotFoundError(
                f"{name}: torchvision could not download it into {root}: {error}"
            ) from error
        found = root / class_name / "raw"
    else:
        files = ", ".join(f"{file}.gz" for file in IDX_FILES)
        raise DatasetNotFoundError(
            f"{name} not found. Looked for {files} (or the uncompressed files) in:\n  "
            + "\n  ".join(str(directory) for directory in looked)
            + f"\nTo get it: {how_to_get}"
        )

    raw = root / class_name / "raw"
    _check_files(raw, found)
    try:
        train_set = dataset_class(root=str(root), train=True, download=False)
        test_set = dataset_class(root=str(root), train=False, download=False)
    except (RuntimeError, AssertionError, ValueError, TypeError) as error:
        raise DataError(f"{raw}: torchvision could not read the {name} files ({error})") from error

    train_images = train_set.data.reshape(len(train_set.data), -1).to(torch.float32)
    test_images = test_set.data.reshape(len(test_set.data), -1).to(torch.float32)
    train_labels = train_set.targets.to(torch.int64)
    test_labels = test_set.targets.to(torch.int64)
    n_fit, _ = train_valid_sizes(train_images.shape[0])
    height, width = train_set.data.shape[1:]
    return Dataset(
        name=name,
        train=train_images[:n_fit],
        valid=train_images[n_fit:],
        test=test_images,
        data_shape=(train_images.shape[1],),
        image_shape=(1, int(height), int(width)),
        max_value=255.0,
        default_likelihood="binomial",
        source=str(found),
        train_labels=train_labels[:n_fit],
        valid_labels=train_labels[n_fit:],
        test_labels=test_labels,
    )
