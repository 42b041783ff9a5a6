"""Tests of load_user_data (npy, npz, csv, image folders) and of the binarize dataset option."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ppl_vae.data import BINARIZE_CHOICES, Dataset, load_dataset, load_user_data, split_indices
from ppl_vae.data.binarize import binarize_dataset, sample_bernoulli
from ppl_vae.errors import ConfigError, DataError, DatasetNotFoundError, UnknownNameError

SPLITS = ("train", "valid", "test")


def _all_rows(dataset: Dataset) -> torch.Tensor:
    return torch.cat([dataset.split(split) for split in SPLITS])


def _is_binary(tensor: torch.Tensor) -> bool:
    return bool(((tensor == 0) | (tensor == 1)).all())


# ----------------------------------------------------------------------------- .npy


def test_npy_2d_counts_are_split_deterministically(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 10, size=(50, 6))
    np.save(tmp_path / "counts.npy", array)
    data = load_user_data(tmp_path / "counts.npy", seed=3)
    train, valid, test = split_indices(50, valid_fraction=0.1, test_fraction=0.2, seed=3)
    assert data.name == "user:counts.npy"
    assert data.source == str(tmp_path / "counts.npy")
    assert data.data_shape == (6,) and data.image_shape is None
    assert (len(data.train), len(data.valid), len(data.test)) == (35, 5, 10)
    assert torch.equal(data.train, torch.from_numpy(array[train]).float())
    assert torch.equal(data.valid, torch.from_numpy(array[valid]).float())
    assert torch.equal(data.test, torch.from_numpy(array[test]).float())
    assert data.train.dtype == torch.float32
    assert data.max_value == float(array.max())
    assert data.default_likelihood == "binomial"
    assert not data.has_labels and data.train_transform is None
    again = load_user_data(tmp_path / "counts.npy", seed=3)
    assert all(torch.equal(data.split(s), again.split(s)) for s in SPLITS)
    other = load_user_data(tmp_path / "counts.npy", seed=4)
    assert not torch.equal(data.test, other.test)


@pytest.mark.parametrize(
    ("shape", "image_shape"),
    [((20, 5, 4), (1, 5, 4)), ((20, 3, 4, 5), (3, 4, 5)), ((20, 6, 5, 3), (3, 6, 5))],
)
def test_npy_images_keep_their_shape(tmp_path: Path, shape, image_shape) -> None:
    array = np.random.default_rng(1).integers(0, 2, size=shape).astype(np.uint8)
    np.save(tmp_path / "images.npy", array)
    data = load_user_data(tmp_path / "images.npy")
    assert data.image_shape == image_shape
    assert data.data_shape == (int(np.prod(shape[1:])),)
    assert data.max_value == 1.0 and data.default_likelihood == "bernoulli"
    if shape[-1] == 3:  # channels-last input is stored channels-first
        first = _all_rows(data)[:1]
        assert first.shape == (1, 90)
        row = np.argwhere((np.moveaxis(array, -1, 1).reshape(20, -1) == first.numpy()).all(1))
        assert row.size == 1


def test_real_values_give_normal(tmp_path: Path) -> None:
    np.save(tmp_path / "real.npy", np.random.default_rng(0).normal(size=(30, 4)))
    data = load_user_data(tmp_path / "real.npy")
    assert data.max_value is None and data.default_likelihood == "normal"


def test_nan_is_rejected_with_its_row(tmp_path: Path) -> None:
    array = np.ones((10, 3))
    array[7, 1] = np.nan
    np.save(tmp_path / "holes.npy", array)
    with pytest.raises(DataError, match=r"holes\.npy: row 7 .*feature 1.*nan.*impute"):
        load_user_data(tmp_path / "holes.npy")


# ----------------------------------------------------------------------------- .npz


def test_npz_given_splits_are_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {s: rng.integers(0, 2, size=(n, 2, 3)) for s, n in zip(SPLITS, (8, 3, 4), strict=True)}
    labels = {f"{s}_labels": np.arange(len(arrays[s])) for s in SPLITS}
    np.savez(tmp_path / "given.npz", **arrays, **labels)
    data = load_user_data(tmp_path / "given.npz")
    for split in SPLITS:
        assert torch.equal(
            data.split(split), torch.from_numpy(arrays[split].reshape(-1, 6)).float()
        )
    assert data.image_shape == (1, 2, 3) and data.has_labels
    assert torch.equal(data.test_labels, torch.arange(4))
    assert data.default_likelihood == "bernoulli"


def test_npz_single_array_is_split(tmp_path: Path) -> None:
    np.savez(tmp_path / "one.npz", x=np.arange(40.0).reshape(20, 2) + 0.5)
    data = load_user_data(tmp_path / "one.npz", valid_fraction=0.25, test_fraction=0.25)
    assert (len(data.train), len(data.valid), len(data.test)) == (10, 5, 5)
    assert data.default_likelihood == "normal"


def test_npz_with_other_names_is_explained(tmp_path: Path) -> None:
    np.savez(tmp_path / "odd.npz", a=np.ones((4, 2)), b=np.ones((4, 2)))
    with pytest.raises(DataError, match="train, valid, test.*found a, b"):
        load_user_data(tmp_path / "odd.npz")


# ----------------------------------------------------------------------------- .csv


def test_csv_with_header_and_label_by_name(tmp_path: Path) -> None:
    lines = ["x1,label,x2"] + [f"{i},{i % 3},{2 * i}" for i in range(20)]
    (tmp_path / "table.csv").write_text("\n".join(lines) + "\n")
    data = load_user_data(tmp_path / "table.csv", label_column="label")
    assert data.data_shape == (2,) and data.has_labels
    assert data.train_labels.dtype == torch.int64
    rows = torch.cat([data.split(s) for s in SPLITS])
    labels = torch.cat([getattr(data, f"{s}_labels") for s in SPLITS])
    assert torch.equal(rows[:, 1], 2 * rows[:, 0])
    assert torch.equal(labels, rows[:, 0].long() % 3)
    assert data.default_likelihood == "binomial" and data.max_value == 38.0


def test_csv_without_header_and_label_by_index(tmp_path: Path) -> None:
    lines = [f"{i % 2},{i * 0.5},{i * 1.5}" for i in range(10)]
    (tmp_path / "plain.csv").write_text("\n".join(lines))
    data = load_user_data(tmp_path / "plain.csv", label_column=0, test_fraction=0.0)
    assert data.data_shape == (2,)
    assert len(data.train) + len(data.valid) == 10 and len(data.test) == 0
    assert data.default_likelihood == "normal"
    assert set(data.train_labels.tolist()) <= {0, 1}
    unlabelled = load_user_data(tmp_path / "plain.csv")
    assert unlabelled.data_shape == (3,) and not unlabelled.has_labels


def test_csv_non_numeric_cell_names_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"bad\.csv: line 3, column 2 \('b'\).*'oops'"):
        load_user_data(tmp_path / "bad.csv")


def test_csv_bad_label_column_and_nan(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,nan\n")
    with pytest.raises(ConfigError, match="no column named 'c'.*a, b"):
        load_user_data(tmp_path / "t.csv", label_column="c")
    with pytest.raises(DataError, match=r"line 3, column 2 \('b'\) holds nan.*impute"):
        load_user_data(tmp_path / "t.csv")


# ----------------------------------------------------------------------------- image folders


def _write_images(root: Path, sizes: dict[str, list[tuple[int, int]]], mode: str) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, shapes in sizes.items():
        (root / label).mkdir(parents=True)
        for index, (width, height) in enumerate(shapes):
            shape = (height, width) if mode == "L" else (height, width, 3)
            pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(pixels, mode=mode).save(root / label / f"{index}.png")


def test_image_folder_grey(tmp_path: Path) -> None:
    from PIL import Image

    _write_images(tmp_path / "imgs", {"a": [(5, 4)] * 4, "b": [(5, 4)] * 6}, "L")
    data = load_user_data(tmp_path / "imgs", valid_fraction=0.2, test_fraction=0.2)
    assert data.name == "user:imgs"
    assert data.image_shape == (1, 4, 5) and data.data_shape == (20,)
    assert data.max_value == 255.0 and data.default_likelihood == "binomial"
    labels = torch.cat([getattr(data, f"{s}_labels") for s in SPLITS])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 6
    first = np.asarray(Image.open(tmp_path / "imgs" / "a" / "0.png"), dtype=np.float32)
    rows = _all_rows(data)
    assert ((rows == torch.from_numpy(first.reshape(1, -1))).all(1)).sum() == 1


def test_image_folder_rgb_and_grey_conversion(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", {"only": [(3, 2)] * 5}, "RGB")
    rgb = load_user_data(tmp_path / "imgs", channels="rgb")
    assert rgb.image_shape == (3, 2, 3) and rgb.data_shape == (18,)
    grey = load_user_data(tmp_path / "imgs", channels="grey")
    assert grey.image_shape == (1, 2, 3)
    assert 0 <= float(_all_rows(grey).min()) and float(_all_rows(grey).max()) <= 255
    with pytest.raises(UnknownNameError, match="grey, rgb"):
        load_user_data(tmp_path / "imgs", channels="cmyk")


def test_image_folder_mixed_sizes_are_listed(tmp_path: Path) -> None:
    _write_images(tmp_path / "imgs", {"a": [(4, 4), (4, 4)], "b": [(6, 5)]}, "L")
    with pytest.raises(DataError, match=r"differ in size.*4x4.*6x5.*resize"):
        load_user_data(tmp_path / "imgs")


def test_empty_image_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="one subfolder per class"):
        load_user_data(tmp_path / "empty")


# ----------------------------------------------------------------------------- bad paths


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nowhere\.npy: no such file.*\.csv"):
        load_user_data(tmp_path / "nowhere.npy")


def test_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt'.*\.npy.*\.npz.*\.csv"):
        load_user_data(tmp_path / "data.txt")


def test_empty_and_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty"):
        load_user_data(tmp_path / "empty.csv")
    (tmp_path / "blank.csv").write_text("\n \n")
    with pytest.raises(DataError, match="empty"):
        load_user_data(tmp_path / "blank.csv")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="not a .npy file"):
        load_user_data(tmp_path / "junk.npy")


# ----------------------------------------------------------------------------- binarize


def test_static_binarization_of_digits() -> None:
    plain = load_dataset("digits")
    data = load_dataset("digits", binarize="static")
    assert data.name == "digits[static]"
    assert data.max_value == 1.0 and data.default_likelihood == "bernoulli"
    assert data.train_transform is None and data.has_labels
    for split in SPLITS:
        values = data.split(split)
        assert values.dtype == torch.float32 and _is_binary(values)
        assert values.shape == plain.split(split).shape
        assert bool((values[plain.split(split) == 0] == 0).all())  # p = 0 stays 0
        assert bool((values[plain.split(split) == 16] == 1).all())  # p = 1 stays 1
    again = load_dataset("digits", binarize="static")
    assert all(torch.equal(data.split(s), again.split(s)) for s in SPLITS)
    # sampled, not thresholded: mean pixel matches the mean grey level
    assert abs(float(data.train.mean()) - float(plain.train.mean() / 16)) < 0.01


def test_dynamic_binarization_of_digits() -> None:
    plain = load_dataset("digits")
    static = load_dataset("digits", binarize="static")
    data = load_dataset("digits", binarize="dynamic")
    assert data.name == "digits[dynamic]" and data.max_value == 1.0
    assert torch.equal(data.train, plain.train / 16)
    assert float(data.train.min()) >= 0 and float(data.train.max()) <= 1
    assert not _is_binary(data.train)
    assert torch.equal(data.valid, static.valid) and torch.equal(data.test, static.test)
    assert data.train_transform is sample_bernoulli
    first, second = data.train_transform(data.train), data.train_transform(data.train)
    assert _is_binary(first) and _is_binary(second) and first.dtype == torch.float32
    assert not torch.equal(first, second)
    torch.manual_seed(5)
    seeded = data.train_transform(data.train)
    torch.manual_seed(5)
    assert torch.equal(seeded, data.train_transform(data.train))


def test_binarize_already_binary_and_user_data(tmp_path: Path) -> None:
    array = np.random.default_rng(0).integers(0, 2, size=(20, 4))
    np.save(tmp_path / "bits.npy", array)
    bits = load_user_data(tmp_path / "bits.npy")
    assert binarize_dataset(bits, "static") is bits
    dynamic = load_user_data(tmp_path / "bits.npy", binarize="dynamic")
    assert dynamic.name == "user:bits.npy[dynamic]"
    assert torch.equal(dynamic.train_transform(dynamic.train), bits.train)
    np.save(tmp_path / "grey.npy", np.random.default_rng(0).random((20, 4)))
    grey = load_user_data(tmp_path / "grey.npy", binarize="static")  # values in [0, 1]
    assert _is_binary(_all_rows(grey))
    np.save(tmp_path / "real.npy", np.random.default_rng(0).normal(size=(20, 4)))
    with pytest.raises(DataError, match=r"Rescale it to \[0, 1\]"):
        load_user_data(tmp_path / "real.npy", binarize="static")


def test_unknown_binarize_value() -> None:
    assert BINARIZE_CHOICES == ("static", "dynamic")
    with pytest.raises(UnknownNameError, match="'threshold'.*None, static, dynamic"):
        load_dataset("digits", binarize="threshold")


def test_binarize_binarized_mnist(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        s: rng.integers(0, 2, size=(n, 16), dtype=np.uint8)
        for s, n in zip(SPLITS, (6, 2, 2), strict=True)
    }
    np.savez(tmp_path / "binarized_mnist.npz", **arrays)
    plain = load_dataset("binarized_mnist", data_dir=tmp_path)
    static = load_dataset("binarized_mnist", data_dir=tmp_path, binarize="static")
    assert static.name == "binarized_mnist" and torch.equal(static.test, plain.test)
    dynamic = load_dataset("binarized_mnist", data_dir=tmp_path, binarize="dynamic")
    assert dynamic.name == "binarized_mnist[dynamic]"
    assert torch.equal(dynamic.train_transform(dynamic.train), plain.train)
    assert torch.equal(dynamic.valid, plain.valid)
