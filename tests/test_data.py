"""Tests of ppl_vae.data: the Dataset record, splits, and every loader, on tiny local files."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import ppl_vae.data.binarized_mnist as bmnist
import ppl_vae.data.fashion_mnist as fmnist
import ppl_vae.data.paths as data_paths
from ppl_vae.data import DATASETS, Dataset, default_data_dir, load_dataset, split_indices
from ppl_vae.data.idx import IDX_FILES, IMAGE_MAGIC, LABEL_MAGIC, train_valid_sizes
from ppl_vae.errors import DataError, DatasetNotFoundError, UnknownNameError

REAL_BINARIZED_MNIST = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "binarized_mnist.npz"
)

SPLITS = ("train", "valid", "test")


# ----------------------------------------------------------------------------- helpers


def _binary_splits(seed: int = 0) -> dict[str, np.ndarray]:
    """20/5/5 random binary 4x4 images."""
    rng = np.random.default_rng(seed)
    sizes = {"train": 20, "valid": 5, "test": 5}
    return {split: rng.integers(0, 2, size=(n, 16), dtype=np.uint8) for split, n in sizes.items()}


def _write_amat(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for split, array in arrays.items():
        lines = [" ".join(str(int(v)) for v in row) for row in array]
        (directory / f"binarized_mnist_{split}.amat").write_text("\n".join(lines) + "\n")


def _idx_bytes(array: np.ndarray) -> bytes:
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    header = struct.pack(f">{array.ndim + 1}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _idx_arrays(n_train: int = 12, n_test: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, size=n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, size=n_test, dtype=np.uint8),
    }


def _write_idx_gz(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        with gzip.open(directory / f"{name}.gz", "wb") as stream:
            stream.write(_idx_bytes(array))


def _check_idx_dataset(dataset: Dataset, arrays: dict[str, np.ndarray], name: str) -> None:
    train = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(12, -1)).float()
    train_labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64))
    test = torch.from_numpy(arrays["t10k-images-idx3-ubyte"].reshape(5, -1)).float()
    test_labels = torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64))
    assert dataset.name == name
    assert dataset.data_shape == (784,)
    assert dataset.image_shape == (1, 28, 28)
    assert dataset.max_value == 255
    assert dataset.default_likelihood == "binomial"
    assert [dataset.split(s).shape[0] for s in SPLITS] == [10, 2, 5]  # last sixth is valid
    assert all(dataset.split(s).dtype == torch.float32 for s in SPLITS)
    assert torch.equal(dataset.train, train[:10])
    assert torch.equal(dataset.valid, train[10:])
    assert torch.equal(dataset.test, test)
    assert torch.equal(dataset.train_labels, train_labels[:10])
    assert torch.equal(dataset.valid_labels, train_labels[10:])
    assert torch.equal(dataset.test_labels, test_labels)
    assert dataset.train_labels.dtype == torch.int64


@pytest.fixture
def no_debian(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point the Debian location at an empty folder so the machine's files never leak in."""
    empty = tmp_path / "no-debian"
    monkeypatch.setattr(fmnist, "DEBIAN_DIR", empty)
    return empty


# ----------------------------------------------------------------------------- registry, paths


def test_registry_names() -> None:
    assert set(DATASETS) == {"digits", "binarized_mnist", "fashion_mnist", "mnist"}


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(UnknownNameError) as info:
        load_dataset("cifar10")
    message = str(info.value)
    assert "cifar10" in message
    for name in DATASETS:
        assert name in message


def test_default_data_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path / "data"))
    assert default_data_dir() == tmp_path / "data"
    monkeypatch.delenv("PPL_VAE_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "ppl_vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_dir() == Path.home() / ".cache" / "ppl_vae"


def test_load_dataset_uses_default_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    arrays = _binary_splits()
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    monkeypatch.setenv("PPL_VAE_DATA", str(tmp_path))
    assert load_dataset("binarized_mnist").source == str(tmp_path / "binarized_mnist.npz")


# ----------------------------------------------------------------------------- splits


def test_split_indices_disjoint_cover_deterministic() -> None:
    train, valid, test = split_indices(1000, valid_fraction=0.1, test_fraction=0.25, seed=3)
    assert (len(train), len(valid), len(test)) == (650, 100, 250)
    joined = np.concatenate([train, valid, test])
    assert np.array_equal(np.sort(joined), np.arange(1000))
    for part in (train, valid, test):
        assert np.array_equal(part, np.sort(part))
        assert part.dtype == np.int64
    again = split_indices(1000, valid_fraction=0.1, test_fraction=0.25, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, valid, test), again, strict=True))
    other = split_indices(1000, valid_fraction=0.1, test_fraction=0.25, seed=4)
    assert not np.array_equal(test, other[2])


@pytest.mark.parametrize(("valid", "test"), [(-0.1, 0.2), (0.1, 1.0), (0.5, 0.5)])
def test_split_indices_rejects_bad_fractions(valid: float, test: float) -> None:
    with pytest.raises(DataError):
        split_indices(10, valid_fraction=valid, test_fraction=test)


# ----------------------------------------------------------------------------- Dataset


def test_dataset_split_and_validation() -> None:
    x = torch.zeros(3, 4)
    dataset = Dataset("toy", x, x[:1], x[:2], (4,), (1, 2, 2), 1.0, "bernoulli", "memory")
    assert dataset.split("valid").shape == (1, 4)
    assert "toy" in repr(dataset) and not dataset.has_labels
    with pytest.raises(UnknownNameError, match="train"):
        dataset.split("training")
    with pytest.raises(DataError, match="split 'test'"):
        Dataset("toy", x, x, torch.zeros(2, 5), (4,), None, None, "normal", "memory")
    with pytest.raises(DataError, match="train_labels"):
        Dataset("toy", x, x, x, (4,), None, None, "normal", "memory", torch.zeros(2).long())
    with pytest.raises(DataError, match="float32"):
        Dataset("toy", x.double(), x, x, (4,), None, None, "normal", "memory")


# ----------------------------------------------------------------------------- digits


def test_digits() -> None:
    dataset = load_dataset("digits")
    sizes = [dataset.split(s).shape[0] for s in SPLITS]
    assert sum(sizes) == 1797
    assert sizes == [1258, 180, 359]
    assert dataset.data_shape == (64,) and dataset.image_shape == (1, 8, 8)
    assert dataset.max_value == 16 and dataset.default_likelihood == "binomial"
    assert dataset.source == "scikit-learn"
    for split in SPLITS:
        data = dataset.split(split)
        assert data.dtype == torch.float32 and data.shape[1:] == (64,)
        assert torch.equal(data, data.round())
        assert data.min() >= 0 and data.max() <= 16
        labels = getattr(dataset, f"{split}_labels")
        assert labels.dtype == torch.int64 and labels.shape == data.shape[:1]
    assert dataset.train.max() == 16

    from sklearn.datasets import load_digits

    bunch = load_digits()
    indices = split_indices(1797, valid_fraction=0.1, test_fraction=0.2, seed=0)
    assert len(set(np.concatenate(indices).tolist())) == 1797  # disjoint
    for split, index in zip(SPLITS, indices, strict=True):
        assert np.array_equal(dataset.split(split).numpy(), bunch.data[index].astype(np.float32))
        assert np.array_equal(getattr(dataset, f"{split}_labels").numpy(), bunch.target[index])

    again = load_dataset("digits")
    assert all(torch.equal(dataset.split(s), again.split(s)) for s in SPLITS)


# ----------------------------------------------------------------------------- binarized MNIST


def _check_binarized(dataset: Dataset, arrays: dict[str, np.ndarray]) -> None:
    assert dataset.name == "binarized_mnist"
    assert dataset.data_shape == (16,) and dataset.image_shape == (1, 4, 4)
    assert dataset.max_value == 1 and dataset.default_likelihood == "bernoulli"
    assert dataset.train_labels is None and dataset.test_labels is None
    for split in SPLITS:
        assert dataset.split(split).dtype == torch.float32
        assert torch.equal(dataset.split(split), torch.from_numpy(arrays[split]).float())


def test_binarized_mnist_npz(tmp_path: Path) -> None:
    arrays = _binary_splits()
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    dataset = load_dataset("binarized_mnist", data_dir=tmp_path)
    _check_binarized(dataset, arrays)
    assert dataset.source == str(tmp_path / "binarized_mnist.npz")


@pytest.mark.parametrize("subdir", ["", "binarized_mnist"])
def test_binarized_mnist_amat_layouts(tmp_path: Path, subdir: str) -> None:
    arrays = _binary_splits(seed=1)
    _write_amat(tmp_path / subdir, arrays)
    dataset = load_dataset("binarized_mnist", data_dir=str(tmp_path))
    _check_binarized(dataset, arrays)
    assert dataset.source == str(tmp_path / subdir)


def test_binarized_mnist_download_from_file_url(tmp_path: Path) -> None:
    server, data_dir = tmp_path / "server", tmp_path / "data"
    arrays = _binary_splits(seed=2)
    _write_amat(server, arrays)
    folder = bmnist.download_binarized_mnist(data_dir, base_url=server.as_uri())
    assert folder == data_dir / "binarized_mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"binarized_mnist_{s}.amat" for s in SPLITS
    )  # no temporary files left behind
    _check_binarized(load_dataset("binarized_mnist", data_dir=data_dir), arrays)


def test_binarized_mnist_download_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server, data_dir = tmp_path / "server", tmp_path / "data"
    arrays = _binary_splits(seed=3)
    _write_amat(server, arrays)
    monkeypatch.setattr(bmnist, "BASE_URL", server.as_uri() + "/")
    with pytest.raises(DatasetNotFoundError):
        load_dataset("binarized_mnist", data_dir=data_dir)
    _check_binarized(load_dataset("binarized_mnist", data_dir=data_dir, download=True), arrays)


def test_binarized_mnist_download_failure(tmp_path: Path) -> None:
    server, data_dir = tmp_path / "empty-server", tmp_path / "data"
    server.mkdir()
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        bmnist.download_binarized_mnist(data_dir, base_url=server.as_uri())
    assert list((data_dir / "binarized_mnist").iterdir()) == []


@pytest.mark.parametrize(
    ("corruption", "match"),
    [("ragged", "not a valid"), ("value", "only 0/1"), ("letters", "not a valid")],
)
def test_binarized_mnist_corrupt_amat(tmp_path: Path, corruption: str, match: str) -> None:
    _write_amat(tmp_path, _binary_splits())
    path = tmp_path / "binarized_mnist_valid.amat"
    lines = path.read_text().splitlines()
    if corruption == "ragged":
        lines[2] = lines[2][:-2]
    elif corruption == "value":
        lines[3] = "2" + lines[3][1:]
    else:
        lines[1] = "a" + lines[1][1:]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match) as info:
        load_dataset("binarized_mnist", data_dir=tmp_path)
    assert str(path) in str(info.value)


def test_binarized_mnist_non_square_and_bad_npz(tmp_path: Path) -> None:
    arrays = {split: np.zeros((3, 15), dtype=np.uint8) for split in SPLITS}
    _write_amat(tmp_path / "amat", arrays)
    with pytest.raises(DataError, match="square"):
        load_dataset("binarized_mnist", data_dir=tmp_path / "amat")

    (tmp_path / "npz").mkdir()
    path = tmp_path / "npz" / "binarized_mnist.npz"
    np.savez(path, train=np.zeros((3, 16)), valid=np.zeros((3, 16)))
    with pytest.raises(DataError, match="test") as info:
        load_dataset("binarized_mnist", data_dir=tmp_path / "npz")
    assert str(path) in str(info.value)
    path.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="binarized_mnist.npz"):
        load_dataset("binarized_mnist", data_dir=tmp_path / "npz")


def test_binarized_mnist_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("binarized_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "download" in message and "--data-dir" in message and ".amat" in message
    assert isinstance(info.value, FileNotFoundError)


@pytest.mark.skipif(not REAL_BINARIZED_MNIST.is_file(), reason="shared binarized_mnist.npz absent")
def test_binarized_mnist_real_file() -> None:
    dataset = load_dataset("binarized_mnist", data_dir=REAL_BINARIZED_MNIST.parent)
    assert [dataset.split(s).shape for s in SPLITS] == [(50000, 784), (10000, 784), (10000, 784)]
    assert dataset.image_shape == (1, 28, 28)
    assert set(torch.unique(dataset.test).tolist()) == {0.0, 1.0}


# ----------------------------------------------------------------------------- Fashion-MNIST, MNIST


def test_train_valid_sizes() -> None:
    assert train_valid_sizes(60000) == (50000, 10000)
    assert train_valid_sizes(12) == (10, 2)


@pytest.mark.parametrize("layout", ["", "fashion_mnist", "FashionMNIST/raw"])
def test_fashion_mnist_from_data_dir(tmp_path: Path, no_debian: Path, layout: str) -> None:
    arrays = _idx_arrays()
    _write_idx_gz(tmp_path / layout, arrays)
    dataset = load_dataset("fashion_mnist", data_dir=tmp_path)
    _check_idx_dataset(dataset, arrays, "fashion_mnist")
    assert dataset.source == str(tmp_path / layout)
    raw = tmp_path / "FashionMNIST" / "raw"
    assert all((raw / name).is_file() for name in IDX_FILES)  # torchvision's layout
    _check_idx_dataset(load_dataset("fashion_mnist", data_dir=tmp_path), arrays, "fashion_mnist")


def test_fashion_mnist_cache_refreshed_when_source_changes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_debian: Path
) -> None:
    """Files decompressed from one source are not reused for a different source."""
    debian, cache = tmp_path / "debian", tmp_path / "cache"
    old, new = _idx_arrays(seed=10), _idx_arrays(seed=11)
    _write_idx_gz(debian, old)
    monkeypatch.setattr(fmnist, "DEBIAN_DIR", debian)
    _check_idx_dataset(load_dataset("fashion_mnist", data_dir=cache), old, "fashion_mnist")
    _write_idx_gz(cache / "fashion_mnist", new)
    for name in IDX_FILES:  # an older copy, as `cp -p` of an old download would give
        os.utime(cache / "fashion_mnist" / f"{name}.gz", ns=(0, 0))
    _check_idx_dataset(load_dataset("fashion_mnist", data_dir=cache), new, "fashion_mnist")


def test_fashion_mnist_from_debian_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    debian, cache = tmp_path / "usr-share-datasets-fashion-mnist", tmp_path / "cache"
    arrays = _idx_arrays(seed=5)
    _write_idx_gz(debian, arrays)
    monkeypatch.setattr(fmnist, "DEBIAN_DIR", debian)
    dataset = load_dataset("fashion_mnist", data_dir=cache)
    _check_idx_dataset(dataset, arrays, "fashion_mnist")
    assert dataset.source == str(debian)
    assert sorted(p.name for p in debian.iterdir()) == sorted(f"{n}.gz" for n in IDX_FILES)
    assert (cache / "FashionMNIST" / "raw" / IDX_FILES[0]).is_file()


def test_fashion_mnist_unwritable_cache_falls_back_to_temp(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, no_debian: Path
) -> None:
    data_dir, temp = tmp_path / "read-only", tmp_path / "tmp"
    temp.mkdir()
    arrays = _idx_arrays(seed=6)
    _write_idx_gz(data_dir, arrays)
    real_is_writable = data_paths._is_writable
    monkeypatch.setattr(data_paths, "_is_writable", lambda d: d != data_dir and real_is_writable(d))
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    _check_idx_dataset(load_dataset("fashion_mnist", data_dir=data_dir), arrays, "fashion_mnist")
    assert not (data_dir / "FashionMNIST").exists()
    assert len(list(temp.glob("ppl_vae-*/FashionMNIST/raw/*-ubyte"))) == 4


def test_fashion_mnist_missing(tmp_path: Path, no_debian: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message
    for place in (tmp_path, tmp_path / "fashion_mnist", tmp_path / "FashionMNIST" / "raw"):
        assert str(place) in message
    assert str(no_debian) in message and "download" in message


@pytest.mark.parametrize("corruption", ["truncated-gzip", "short-data", "magic", "label-count"])
def test_fashion_mnist_corrupt(tmp_path: Path, no_debian: Path, corruption: str) -> None:
    arrays = _idx_arrays()
    if corruption == "label-count":
        arrays["t10k-labels-idx1-ubyte"] = arrays["t10k-labels-idx1-ubyte"][:4]
    _write_idx_gz(tmp_path, arrays)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    if corruption == "truncated-gzip":
        path.write_bytes(path.read_bytes()[:200])
    elif corruption == "short-data":
        path.write_bytes(gzip.compress(_idx_bytes(arrays["train-images-idx3-ubyte"])[:-10]))
    elif corruption == "magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + _idx_bytes(arrays[IDX_FILES[0]])[4:]))
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    shown = "t10k-images" if corruption == "label-count" else str(path)
    assert shown in str(info.value)


@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"])
def test_mnist_from_local_files(tmp_path: Path, layout: str) -> None:
    arrays = _idx_arrays(seed=7)
    _write_idx_gz(tmp_path / layout, arrays)
    _check_idx_dataset(load_dataset("mnist", data_dir=tmp_path), arrays, "mnist")


def test_mnist_uncompressed_torchvision_layout(tmp_path: Path) -> None:
    arrays = _idx_arrays(seed=8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in arrays.items():
        (raw / name).write_bytes(_idx_bytes(array))
    _check_idx_dataset(load_dataset("mnist", data_dir=tmp_path), arrays, "mnist")
    assert sorted(os.listdir(raw)) == sorted(IDX_FILES)


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A loopback HTTP server over a temp folder: (folder, base URL). No outside network."""
    folder = tmp_path / "server"
    folder.mkdir()
    for variable in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_mnist_download_through_torchvision(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, http_server: tuple[Path, str]
) -> None:
    """download=True runs torchvision's own download code, against a loopback mirror.

    (torchvision's downloader reads ``response.length``, which a ``file://`` response lacks.)
    """
    import torchvision.datasets

    server, url = http_server
    data_dir = tmp_path / "data"
    arrays = _idx_arrays(seed=9)
    _write_idx_gz(server, arrays)
    resources = [
        (f"{name}.gz", hashlib.md5((server / f"{name}.gz").read_bytes()).hexdigest())
        for name in IDX_FILES
    ]
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_dataset("mnist", data_dir=data_dir)
    dataset = load_dataset("mnist", data_dir=data_dir, download=True)
    _check_idx_dataset(dataset, arrays, "mnist")
    assert dataset.source == str(data_dir / "MNIST" / "raw")


def test_mnist_download_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torchvision.datasets

    server = tmp_path / "empty-server"
    server.mkdir()
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [server.as_uri() + "/"])
    with pytest.raises(DatasetNotFoundError, match="could not download"):
        load_dataset("mnist", data_dir=tmp_path / "data", download=True)
