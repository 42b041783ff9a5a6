"""The :class:`Dataset` record every loader returns."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ppl_vae.errors import DataError
from ppl_vae.registry import lookup

__all__ = ["Dataset", "SPLITS"]

#: The names of a dataset's splits, in the order train, valid, test.
SPLITS: tuple[str, ...] = ("train", "valid", "test")


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A dataset split three ways, with the facts a likelihood needs about its values.

    Each split holds the data's natural values as float32, one flattened datapoint per row:
    pixel counts 0..255 for (Fashion-)MNIST, counts 0..16 for ``digits``, 0/1 for binarized
    MNIST. Nothing is rescaled; a model that wants [0, 1] divides by :attr:`max_value`.

    Equality is identity (``eq=False``): comparing tensors field by field has no single truth
    value.

    :param name: the registry name, e.g. ``"digits"``.
    :param train: float32 tensor of shape ``(N_train, *data_shape)``.
    :param valid: float32 tensor of shape ``(N_valid, *data_shape)``.
    :param test: float32 tensor of shape ``(N_test, *data_shape)``.
    :param data_shape: per-datapoint shape; always the flattened features ``(D,)`` here.
    :param image_shape: ``(C, H, W)`` for image data (``C * H * W == D``), else ``None``.
    :param max_value: the largest value the data can take (16, 1 or 255), or ``None``.
    :param default_likelihood: the likelihood that suits the values, e.g. ``"binomial"``.
    :param source: where the data was read from: a path, or ``"scikit-learn"``.
    :param train_labels: int64 class labels of shape ``(N_train,)``, where labels exist.
    :param valid_labels: int64 class labels of shape ``(N_valid,)``, where labels exist.
    :param test_labels: int64 class labels of shape ``(N_test,)``, where labels exist.
    :param train_transform: ``None`` (the default: train on :attr:`train` as it is), or a
        function a training loop applies to every training minibatch before use. Dynamic
        binarization (``load_dataset(..., binarize="dynamic")``) sets it to
        :func:`ppl_vae.data.binarize.sample_bernoulli`: :attr:`train` then holds grey levels
        ``p`` in [0, 1] and each call draws fresh 0/1 pixels ``x ~ Bernoulli(p)``. Only the
        training split is transformed; ``valid`` and ``test`` are fixed data.
    :raises DataError: if the splits or labels disagree with the shapes given.
    """

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    data_shape: tuple[int, ...]
    image_shape: tuple[int, ...] | None
    max_value: float | None
    default_likelihood: str
    source: str
    train_labels: torch.Tensor | None = None
    valid_labels: torch.Tensor | None = None
    test_labels: torch.Tensor | None = None
    train_transform: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.data_shape)
        if self.train_transform is not None and not callable(self.train_transform):
            raise DataError(
                f"dataset {self.name!r}: train_transform must be callable or None, got "
                f"{type(self.train_transform).__name__}"
            )
        if self.image_shape is not None and math.prod(self.image_shape) != math.prod(shape):
            raise DataError(
                f"dataset {self.name!r}: image_shape {self.image_shape} does not hold "
                f"data_shape {shape}"
            )
        for split in SPLITS:
            data = self.split(split)
            if not isinstance(data, torch.Tensor) or data.dtype != torch.float32:
                raise DataError(f"dataset {self.name!r}: split {split!r} must be a float32 tensor")
            if tuple(data.shape[1:]) != shape:
                raise DataError(
                    f"dataset {self.name!r}: split {split!r} has datapoints of shape "
                    f"{tuple(data.shape[1:])}, expected {shape}"
                )
            labels = getattr(self, f"{split}_labels")
            if labels is None:
                continue
            if labels.dtype != torch.int64 or tuple(labels.shape) != tuple(data.shape[:1]):
                raise DataError(
                    f"dataset {self.name!r}: {split}_labels must be int64 of shape "
                    f"{tuple(data.shape[:1])}, got {labels.dtype} {tuple(labels.shape)}"
                )

    def split(self, name: str) -> torch.Tensor:
        """Return the split called ``name`` (``"train"``, ``"valid"`` or ``"test"``).

        :raises UnknownNameError: for any other name; the message lists the choices.
        """
        splits = {"train": self.train, "valid": self.valid, "test": self.test}
        return lookup(splits, name, "split")

    @property
    def has_labels(self) -> bool:
        """Whether every split carries class labels."""
        return all(getattr(self, f"{split}_labels") is not None for split in SPLITS)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{split}={self.split(split).shape[0]}" for split in SPLITS)
        return (
            f"Dataset(name={self.name!r}, {sizes}, data_shape={self.data_shape}, "
            f"image_shape={self.image_shape}, max_value={self.max_value}, "
            f"default_likelihood={self.default_likelihood!r}, labels={self.has_labels}, "
            f"source={self.source!r}"
            + ("" if self.train_transform is None else ", train_transform=...")
            + ")"
        )
