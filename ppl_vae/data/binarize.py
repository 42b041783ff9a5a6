"""Binarization of grey-level datasets, static or dynamic, as a dataset option; and
rescaling to grey levels in [0, 1] for likelihoods of the unit interval.

Grey levels become probabilities ``p = x / max_value`` in [0, 1], and 0/1 pixels are *sampled*
as ``x ~ Bernoulli(p)`` (not thresholded at 0.5): this is the usual "static binarization" of
MNIST-like data (Salakhutdinov & Murray, 2008) and "dynamic binarization" when the training
pixels are drawn afresh at every use.

- ``"static"``: every split is sampled once, with fixed seeds (:data:`BINARIZE_SEED` + 0, 1, 2
  for train, valid, test, each in its own :class:`torch.Generator`), so every load gives the
  same data on every machine.
- ``"dynamic"``: ``valid`` and ``test`` are binarized exactly as for ``"static"`` (evaluation
  needs fixed data; the two modes share them, so their scores compare), while ``train`` holds
  the probabilities ``p`` and :attr:`Dataset.train_transform` is :func:`sample_bernoulli`,
  which a training loop calls on every minibatch to draw new pixels from torch's global
  generator (so ``pyro.set_rng_seed`` / ``torch.manual_seed`` make a run reproducible).
"""

from __future__ import annotations

import dataclasses

import torch

from ppl_vae.data.dataset import SPLITS, Dataset
from ppl_vae.errors import DataError, UnknownNameError

__all__ = [
    "BINARIZE_CHOICES",
    "BINARIZE_SEED",
    "binarize_dataset",
    "grey_levels_dataset",
    "check_binarize",
    "sample_bernoulli",
    "static_binarize",
]

#: The accepted values of the ``binarize`` option, besides ``None`` (keep the grey levels).
BINARIZE_CHOICES: tuple[str, ...] = ("static", "dynamic")

#: Seed of static binarization: split ``i`` of (train, valid, test) is sampled with a
#: :class:`torch.Generator` seeded ``BINARIZE_SEED + i``.
BINARIZE_SEED = 0


def check_binarize(binarize: str | None) -> str | None:
    """Return ``binarize`` if it is ``None``, ``"static"`` or ``"dynamic"``.

    :raises UnknownNameError: for anything else; the message lists the choices.
    """
    if binarize is None or binarize in BINARIZE_CHOICES:
        return binarize
    choices = ", ".join(["None", *BINARIZE_CHOICES])
    raise UnknownNameError(f"unknown binarize option {binarize!r}; choose one of: {choices}")


def sample_bernoulli(probs: torch.Tensor) -> torch.Tensor:
    """Draw 0/1 values ``x ~ Bernoulli(probs)`` elementwise with torch's global generator.

    The :attr:`Dataset.train_transform` of a dynamically binarized dataset: a training loop
    calls it on every minibatch of grey levels, so each epoch sees new binary images. The
    result has the dtype and device of ``probs``.
    """
    return torch.bernoulli(probs)


def static_binarize(probs: torch.Tensor, seed: int = BINARIZE_SEED) -> torch.Tensor:
    """Sample ``x ~ Bernoulli(probs)`` once with a CPU generator seeded ``seed``.

    Implemented as ``uniform < probs`` with ``torch.rand(..., generator=...)``, so the same
    ``(probs, seed)`` always gives the same float32 0/1 tensor.
    """
    generator = torch.Generator().manual_seed(seed)
    uniform = torch.rand(probs.shape, generator=generator, dtype=torch.float32)
    return (uniform < probs.cpu()).to(torch.float32)


def _grey_levels(dataset: Dataset) -> dict[str, torch.Tensor]:
    """Each split as probabilities ``x / max_value`` in [0, 1] (float32)."""
    scale = dataset.max_value
    if scale is None:
        present = [dataset.split(s) for s in SPLITS if dataset.split(s).numel()]
        low = min((float(data.min()) for data in present), default=0.0)
        high = max((float(data.max()) for data in present), default=0.0)
        if low < 0.0 or high > 1.0:
            raise DataError(
                f"dataset {dataset.name!r}: binarize needs grey levels with a known maximum "
                f"(max_value) or values in [0, 1]; this data has no max_value and spans "
                f"[{low:g}, {high:g}]. Rescale it to [0, 1] first, or do not binarize."
            )
        scale = 1.0
    if scale <= 0:
        raise DataError(f"dataset {dataset.name!r}: binarize needs max_value > 0, got {scale}")
    probs = {}
    for split in SPLITS:
        data = dataset.split(split)
        if data.numel() and (float(data.min()) < 0.0 or float(data.max()) > scale):
            raise DataError(
                f"dataset {dataset.name!r}: split {split!r} holds values outside "
                f"[0, {scale:g}] (max_value), so they are not grey levels to binarize"
            )
        probs[split] = (data / scale).to(torch.float32)
    return probs


def _is_binary(probs: dict[str, torch.Tensor]) -> bool:
    return all(bool(((p == 0) | (p == 1)).all()) for p in probs.values())


def binarize_dataset(dataset: Dataset, binarize: str | None) -> Dataset:
    """Return ``dataset`` binarized as ``binarize`` says (see the module docstring).

    ``None`` returns ``dataset`` itself. Otherwise the result has ``max_value`` 1,
    ``default_likelihood`` ``"bernoulli"``, the same shapes, labels and source, and the name
    ``"<name>[static]"`` or ``"<name>[dynamic]"``. Data that is already 0/1 (e.g.
    ``binarized_mnist``) is returned unchanged by ``"static"``; ``"dynamic"`` then still sets
    :attr:`Dataset.train_transform`, whose draws equal the data since ``p`` is 0 or 1.

    :raises UnknownNameError: for an unknown ``binarize``; the message lists the choices.
    :raises DataError: if the values are not grey levels in ``[0, max_value]``.
    """
    if check_binarize(binarize) is None:
        return dataset
    splits = {split: dataset.split(split) for split in SPLITS}
    if binarize == "static" and dataset.max_value in (1.0, None) and _is_binary(splits):
        return dataset  # already 0/1: sampling would reproduce it exactly
    probs = _grey_levels(dataset)
    fixed = {
        split: static_binarize(probs[split], seed=BINARIZE_SEED + index)
        for index, split in enumerate(SPLITS)
        if not (binarize == "dynamic" and split == "train")
    }
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}[{binarize}]",
        train=probs["train"] if binarize == "dynamic" else fixed["train"],
        valid=fixed["valid"],
        test=fixed["test"],
        max_value=1.0,
        default_likelihood="bernoulli",
        train_transform=sample_bernoulli if binarize == "dynamic" else None,
    )


def grey_levels_dataset(dataset: Dataset) -> Dataset:
    """Return ``dataset`` rescaled to grey levels ``x / max_value`` in [0, 1], for
    likelihoods of data in the unit interval (``continuous_bernoulli``, ``beta``).

    The result has ``max_value`` 1, ``default_likelihood`` ``"continuous_bernoulli"`` and the
    name ``"<name>[0,1]"``; data already in [0, 1] is returned unchanged.
    """
    if dataset.max_value in (1.0, None):
        _grey_levels(dataset)  # raises if the values are not in [0, 1]
        return dataset
    probs = _grey_levels(dataset)
    return dataclasses.replace(
        dataset,
        name=f"{dataset.name}[0,1]",
        train=probs["train"],
        valid=probs["valid"],
        test=probs["test"],
        max_value=1.0,
        default_likelihood="continuous_bernoulli",
    )
