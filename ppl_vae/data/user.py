"""Your own data as a :class:`Dataset`: a .npy, .npz or .csv file, or a folder of images.

:func:`load_user_data` reads the file, checks it (numbers only, no NaN or infinity, one image
size), splits it deterministically with :func:`split_indices` and infers what a likelihood
needs: ``max_value`` and ``default_likelihood``.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ppl_vae.data.binarize import binarize_dataset, check_binarize
from ppl_vae.data.dataset import SPLITS, Dataset
from ppl_vae.data.npz import read_npz_arrays
from ppl_vae.data.splits import split_indices
from ppl_vae.errors import ConfigError, DataError, DatasetNotFoundError, UnknownNameError

__all__ = ["CHANNELS", "SUPPORTED_SUFFIXES", "infer_value_facts", "load_user_data"]

#: File types :func:`load_user_data` reads (a folder of images is accepted as well).
SUPPORTED_SUFFIXES: tuple[str, ...] = (".npy", ".npz", ".csv")

#: Colour handling of image folders: PIL mode and number of channels.
CHANNELS: dict[str, tuple[str, int]] = {"grey": ("L", 1), "rgb": ("RGB", 3)}

_SUPPORTED = (
    "supported: a .npy file (one array, first axis = datapoints), a .npz file (arrays "
    "train/valid/test, or a single array), a .csv file (numeric columns), or a folder of "
    "images with one subfolder per class"
)

# A function that describes where datapoint ``i`` sits in the file, for error messages.
_Locator = Callable[[int], str]


def _index_locator(prefix: str = "") -> _Locator:
    return lambda i: f"{prefix}row {i} (0-based index along the first axis)"


def infer_value_facts(arrays: list[np.ndarray]) -> tuple[float | None, str]:
    """Return ``(max_value, default_likelihood)`` for data made of ``arrays``.

    0/1 data gives ``(1.0, "bernoulli")``; non-negative integers give ``(their maximum,
    "binomial")``, so a binomial likelihood's ``total_count`` defaults to the largest count
    seen; anything else gives ``(None, "normal")``.
    """
    present = [a for a in arrays if a.size]
    if not present:
        return None, "normal"
    if all(np.isin(a, (0, 1)).all() for a in present):
        return 1.0, "bernoulli"
    integral = all(
        a.dtype.kind in "biu" or bool((np.floor(a) == a).all()) for a in present
    ) and all(float(a.min()) >= 0 for a in present)
    if integral:
        return float(max(float(a.max()) for a in present)), "binomial"
    return None, "normal"


def _check_numeric(array: np.ndarray, path: Path, what: str) -> np.ndarray:
    if array.dtype.kind == "b":
        return array.astype(np.uint8)
    if array.dtype.kind not in "iuf":
        raise DataError(
            f"{path}: {what} has dtype {array.dtype}; only numbers (int, uint, float or bool) "
            "can be used as data"
        )
    return array


def _check_finite(
    array: np.ndarray,
    path: Path,
    locate: _Locator,
    column: Callable[[int], str] = lambda col: f"feature {col} (0-based)",
) -> None:
    if array.dtype.kind != "f" or array.size == 0:
        return
    bad = ~np.isfinite(array.reshape(array.shape[0], -1))
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        value = array.reshape(array.shape[0], -1)[row, col]
        raise DataError(
            f"{path}: {locate(row)}, {column(col)} holds {value}; data must be finite. "
            "Clean the data (drop those rows) or impute the missing values first."
        )


def _image_shape(sample_shape: tuple[int, ...]) -> tuple[tuple[int, ...] | None, bool]:
    """Return ``(image_shape, channels_last)`` for one datapoint's shape."""
    if len(sample_shape) == 2:
        return (1, *sample_shape), False
    if len(sample_shape) == 3:
        first, _, last = sample_shape
        if first not in (1, 3, 4) and last in (1, 3, 4):
            return (last, *sample_shape[:2]), True
        return sample_shape, False
    return None, False


def _flatten(array: np.ndarray, path: Path, what: str) -> tuple[np.ndarray, tuple | None]:
    """Return ``array`` as ``(N, D)`` and the image shape its datapoints had, if any."""
    array = _check_numeric(np.asarray(array), path, what)
    if array.ndim == 0:
        raise DataError(f"{path}: {what} is a single number; need one datapoint per row")
    if array.ndim == 1:
        array = array[:, None]
    image_shape, channels_last = _image_shape(tuple(int(d) for d in array.shape[1:]))
    if channels_last:
        array = np.moveaxis(array, -1, 1)
    return np.ascontiguousarray(array.reshape(array.shape[0], -1)), image_shape


def _read_npy(path: Path) -> np.ndarray:
    with path.open("rb") as stream:
        if stream.read(6) != b"\x93NUMPY":
            raise DataError(f"{path}: not a .npy file (no NumPy header); save it with numpy.save")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npy file ({error})") from error
    if not isinstance(array, np.ndarray):
        raise DataError(f"{path}: expected a single array in the .npy file")
    return array


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _column_index(label_column: str | int, header: list[str] | None, width: int, path: Path) -> int:
    if isinstance(label_column, bool) or not isinstance(label_column, (str, int)):
        raise ConfigError(
            f"label_column must be a column name or index, got {type(label_column).__name__}"
        )
    if isinstance(label_column, int):
        index = label_column + width if label_column < 0 else label_column
        if not 0 <= index < width:
            raise ConfigError(
                f"{path}: label_column {label_column} is out of range for {width} columns"
            )
        return index
    if header is None:
        raise ConfigError(
            f"{path}: label_column {label_column!r} is a name but the file has no header row; "
            "give the column's index (0-based) instead"
        )
    names = [name.strip() for name in header]
    if label_column not in names:
        raise ConfigError(
            f"{path}: no column named {label_column!r}; the header has: {', '.join(names)}"
        )
    return names.index(label_column)


def _read_csv(
    path: Path, label_column: str | int | None, header: bool | None
) -> tuple[np.ndarray, np.ndarray | None, int]:
    """Return ``(features, labels, first_data_line)`` from a numeric CSV file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a readable text file ({error})") from error
    rows = [
        (line_no, [cell.strip() for cell in row])
        for line_no, row in enumerate(csv.reader(io.StringIO(text)), start=1)
        if any(cell.strip() for cell in row)
    ]
    if not rows:
        raise DataError(f"{path}: the file is empty")
    names: list[str] | None = None
    if header is None:  # a header row is a first row of names only, none of them numbers
        header = not any(_is_number(cell) for cell in rows[0][1])
    if header:
        names = rows[0][1]
        rows = rows[1:]
        if not rows:
            raise DataError(f"{path}: the file has a header row but no data rows")
    width = len(names) if names is not None else len(rows[0][1])
    for line_no, row in rows:
        if len(row) != width:
            raise DataError(
                f"{path}: line {line_no} has {len(row)} column(s), expected {width} "
                f"(as on line {rows[0][0] if names is None else 1})"
            )

    def column_name(col: int) -> str:
        return f"column {col + 1}" + (f" ({names[col]!r})" if names is not None else "")

    try:
        values = np.array([row for _, row in rows], dtype=str).astype(np.float64)
    except ValueError:
        for line_no, row in rows:
            for col, cell in enumerate(row):
                if not _is_number(cell):
                    shown = (
                        "an empty cell (a missing value: clean the data or impute it)"
                        if not cell
                        else f"the non-numeric cell {cell!r}"
                    )
                    raise DataError(
                        f"{path}: line {line_no}, {column_name(col)} holds {shown}; every cell "
                        "must be a number, cells separated by commas (a header row may hold "
                        "names only)"
                    ) from None
        values = np.array([[float(cell) for cell in row] for _, row in rows], dtype=np.float64)
    index = None if label_column is None else _column_index(label_column, names, width, path)
    _check_finite(values, path, lambda i: f"line {rows[i][0]}", column_name)
    labels = None
    if index is not None:
        column = values[:, index]
        bad = ~np.isfinite(column) | (np.floor(column) != column)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                f"{path}: line {rows[row][0]}, {column_name(index)} (the label column) holds "
                f"{rows[row][1][index]!r}; class labels must be integers"
            )
        labels = column.astype(np.int64)
        values = np.delete(values, index, axis=1)
        if values.shape[1] == 0:
            raise DataError(f"{path}: no feature columns are left besides the label column")
    return values, labels, rows[0][0]


def _read_image_folder(path: Path, channels: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(images (N, C, H, W) uint8, labels (N,) int64)`` read by ``ImageFolder``."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets import ImageFolder

    mode, _ = CHANNELS[channels]

    def loader(file: str) -> Image.Image:
        with Image.open(file) as image:
            return image.convert(mode)

    try:
        folder = ImageFolder(str(path), loader=loader)
    except (FileNotFoundError, OSError) as error:
        raise DataError(
            f"{path}: no images found ({error}). Expected one subfolder per class holding "
            f"image files (.png, .jpg, ...), e.g. {path}/cat/1.png and {path}/dog/2.png"
        ) from error
    files = [Path(file) for file, _ in folder.samples]
    sizes: dict[tuple[int, int], list[Path]] = {}
    for file in files:
        try:
            with Image.open(file) as image:
                sizes.setdefault(image.size, []).append(file)
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{file}: not a readable image ({error})") from error
    if len(sizes) > 1:
        listed = "; ".join(
            f"{width}x{height} in {len(group)} image(s), e.g. {group[0].relative_to(path)}"
            for (width, height), group in sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        )
        raise DataError(
            f"{path}: the images differ in size (width x height): {listed}. All images must "
            "share one size; resize them first (e.g. PIL's Image.resize or "
            "torchvision.transforms.Resize)."
        )
    images = []
    for index, file in enumerate(files):
        try:
            image, _ = folder[index]
        except (OSError, UnidentifiedImageError) as error:
            raise DataError(f"{file}: not a readable image ({error})") from error
        pixels = np.asarray(image, dtype=np.uint8)
        images.append(pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0))
    return np.stack(images), np.asarray(folder.targets, dtype=np.int64)


def _labels_tensor(labels: np.ndarray | None) -> torch.Tensor | None:
    return None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64))


def _as_float32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _split(
    data: np.ndarray,
    labels: np.ndarray | None,
    path: Path,
    *,
    valid_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    indices = split_indices(
        data.shape[0], valid_fraction=valid_fraction, test_fraction=test_fraction, seed=seed
    )
    if indices[0].size == 0:
        raise DataError(
            f"{path}: {data.shape[0]} datapoint(s) leave none for training with "
            f"valid_fraction={valid_fraction} and test_fraction={test_fraction}"
        )
    arrays = {split: data[index] for split, index in zip(SPLITS, indices, strict=True)}
    label_splits = {
        split: None if labels is None else labels[index]
        for split, index in zip(SPLITS, indices, strict=True)
    }
    return arrays, label_splits


def _given_splits(
    archive: dict[str, np.ndarray], path: Path
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray | None], tuple | None]:
    arrays: dict[str, np.ndarray] = {}
    shapes: dict[str, tuple | None] = {}
    for split in SPLITS:
        arrays[split], shapes[split] = _flatten(archive[split], path, f"array {split!r}")
        _check_finite(arrays[split], path, _index_locator(f"array {split!r}, "))
    widths = {split: arrays[split].shape[1] for split in SPLITS}
    if len(set(widths.values())) != 1 or len(set(shapes.values())) != 1:
        found = {split: tuple(archive[split].shape[1:]) for split in SPLITS}
        raise DataError(f"{path}: the splits disagree on the shape of a datapoint: {found}")
    if arrays["train"].shape[0] == 0:
        raise DataError(f"{path}: array 'train' holds no datapoints")
    labels: dict[str, np.ndarray | None] = {split: None for split in SPLITS}
    label_keys = [f"{split}_labels" for split in SPLITS]
    if any(key in archive for key in label_keys) and not all(key in archive for key in label_keys):
        raise DataError(
            f"{path}: give labels for all three splits ({', '.join(label_keys)}) or none; "
            f"found {', '.join(sorted(archive))}"
        )
    if all(key in archive for key in label_keys):
        for split in SPLITS:
            label = np.asarray(archive[f"{split}_labels"])
            if label.dtype.kind not in "iu" or label.shape != arrays[split].shape[:1]:
                raise DataError(
                    f"{path}: array '{split}_labels' must hold one integer per datapoint of "
                    f"{split!r} ({arrays[split].shape[0]}), got {label.dtype} {label.shape}"
                )
            labels[split] = label.astype(np.int64)
    return arrays, labels, shapes["train"]


def load_user_data(
    path: str | os.PathLike[str],
    *,
    channels: str = "grey",
    label_column: str | int | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    binarize: str | None = None,
    header: bool | None = None,
) -> Dataset:
    """Load your own data from ``path`` as a :class:`Dataset` split into train, valid and test.

    Accepted inputs:

    - ``.npy``: one numeric array whose first axis indexes datapoints. ``(N, D)`` is used as is;
      ``(N, H, W)`` is read as grey images (``image_shape`` ``(1, H, W)``); ``(N, C, H, W)`` as
      images with ``C`` channels (``(N, H, W, C)`` with ``C`` in 1, 3, 4 and ``H`` not is moved to
      channels-first); ``(N,)`` as one feature. Data is flattened to ``(N, D)``.
    - ``.npz``: arrays named ``train``, ``valid`` and ``test`` are used as the splits as given
      (optional integer ``train_labels``, ``valid_labels``, ``test_labels`` become labels; the
      fractions and seed are then unused); a single array is treated like a ``.npy`` file.
    - ``.csv``: comma-separated numbers, one datapoint per line, with or without a header row
      (auto-detected as a first row with no numeric cell, unless ``header`` says). Labels come
      from ``label_column`` (a header name, or a 0-based index; negative counts from the end),
      which is removed from the features.
    - a folder of images in ``torchvision.datasets.ImageFolder`` layout: each subfolder is a
      class (labels 0, 1, ... in sorted folder order). Images are converted to grey
      (``channels="grey"``) or RGB (``"rgb"``; alpha is dropped) and must all have one size;
      pixel values are the counts 0..255.

    Unless given, the split is :func:`split_indices` with ``valid_fraction``, ``test_fraction``
    and ``seed``, so the same file always splits the same way. Values are stored as float32.
    ``max_value`` and ``default_likelihood`` follow :func:`infer_value_facts` (0/1 data:
    1 and ``"bernoulli"``; non-negative integers: their maximum and ``"binomial"``; else
    ``None`` and ``"normal"``), except image folders, which always get 255 and ``"binomial"``.
    The name is ``"user:<file or folder name>"``; ``source`` is the path.

    :param channels: ``"grey"`` or ``"rgb"``; used for image folders only.
    :param label_column: the CSV column holding integer class labels; CSV only.
    :param binarize: ``None``, ``"static"`` or ``"dynamic"``, as for
        :func:`ppl_vae.data.load_dataset`; data with no ``max_value`` must lie in [0, 1].
    :param header: whether the CSV file starts with a header row; ``None`` detects it.
    :raises DatasetNotFoundError: if ``path`` does not exist.
    :raises DataError: for an unsupported file type, an unreadable or empty file, a
        non-numeric cell (naming line and column), NaN or infinity (naming the row), or
        images of different sizes (listing them).
    :raises UnknownNameError: for an unknown ``channels`` or ``binarize``.
    :raises ConfigError: for a ``label_column`` that is not in the file or not for a CSV file.
    """
    path = Path(path).expanduser()
    if channels == "gray":
        channels = "grey"
    if channels not in CHANNELS:
        raise UnknownNameError(
            f"unknown channels {channels!r}; choose one of: {', '.join(CHANNELS)}"
        )
    check_binarize(binarize)
    if not path.exists():
        raise DatasetNotFoundError(f"{path}: no such file or folder; {_SUPPORTED}")
    suffix = path.suffix.lower()
    if path.is_file() and suffix not in SUPPORTED_SUFFIXES:
        raise DataError(
            f"{path}: unsupported file type {suffix or '(no extension)'!r}; {_SUPPORTED}"
        )
    if label_column is not None and not (path.is_file() and suffix == ".csv"):
        raise ConfigError(
            f"{path}: label_column applies to .csv files only (image folders take labels from "
            "their subfolders; .npz files from arrays train_labels/valid_labels/test_labels)"
        )
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    fractions = {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "seed": seed}

    labels: np.ndarray | None = None
    if path.is_dir():
        images, labels = _read_image_folder(path, channels)
        arrays, label_splits = _split(images.reshape(len(images), -1), labels, path, **fractions)
        image_shape: tuple | None = tuple(int(d) for d in images.shape[1:])
        max_value: float | None = 255.0
        likelihood = "binomial"
    else:
        if suffix == ".csv":
            data, labels, _ = _read_csv(path, label_column, header)
            image_shape = None
            given = None
        elif suffix == ".npy":
            data, image_shape = _flatten(_read_npy(path), path, "the array")
            _check_finite(data, path, _index_locator())
            given = None
        else:
            archive = read_npz_arrays(path)
            if not archive:
                raise DataError(f"{path}: the archive holds no arrays")
            if all(split in archive for split in SPLITS):
                given = _given_splits(archive, path)
            elif len(archive) == 1:
                (key,) = archive
                data, image_shape = _flatten(archive[key], path, f"array {key!r}")
                _check_finite(data, path, _index_locator(f"array {key!r}, "))
                given = None
            else:
                raise DataError(
                    f"{path}: expected arrays named {', '.join(SPLITS)} (the splits) or a "
                    f"single array (to be split); found {', '.join(sorted(archive))}"
                )
        if given is not None:
            arrays, label_splits, image_shape = given
        else:
            if data.shape[0] == 0:
                raise DataError(f"{path}: the data holds no datapoints")
            arrays, label_splits = _split(data, labels, path, **fractions)
        max_value, likelihood = infer_value_facts(list(arrays.values()))

    features = arrays["train"].shape[1]
    if image_shape is not None and math.prod(image_shape) != features:
        image_shape = None
    dataset = Dataset(
        name=f"user:{path.name}",
        train=_as_float32(arrays["train"]),
        valid=_as_float32(arrays["valid"]),
        test=_as_float32(arrays["test"]),
        data_shape=(features,),
        image_shape=image_shape,
        max_value=max_value,
        default_likelihood=likelihood,
        source=str(path),
        train_labels=_labels_tensor(label_splits["train"]),
        valid_labels=_labels_tensor(label_splits["valid"]),
        test_labels=_labels_tensor(label_splits["test"]),
    )
    return binarize_dataset(dataset, binarize)
