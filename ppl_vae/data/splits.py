"""Deterministic train/valid/test index splits."""

from __future__ import annotations

import numpy as np

from ppl_vae.errors import DataError

__all__ = ["split_indices"]


def split_indices(
    n: int, *, valid_fraction: float, test_fraction: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split ``range(n)`` into disjoint train, valid and test index arrays.

    A permutation ``numpy.random.default_rng(seed).permutation(n)`` is drawn; its first
    ``round(n * test_fraction)`` entries are the test indices, the next
    ``round(n * valid_fraction)`` the validation indices and the rest the training indices
    (halves round up). Each returned array is then **sorted**, so datapoints keep their original
    order within a split. The same ``(n, fractions, seed)`` always gives the same split.

    :param n: number of datapoints.
    :param valid_fraction: share of datapoints for validation, in ``[0, 1)``.
    :param test_fraction: share of datapoints for test, in ``[0, 1)``.
    :param seed: seed of the permutation.
    :returns: ``(train, valid, test)``, sorted int64 arrays that together cover ``range(n)``.
    :raises DataError: for a negative ``n`` or fractions outside ``[0, 1)`` or summing to 1+.
    """
    if n < 0:
        raise DataError(f"split_indices: n must be non-negative, got {n}")
    for label, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise DataError(f"split_indices: {label} must lie in [0, 1), got {fraction}")
    if valid_fraction + test_fraction >= 1.0:
        raise DataError(
            "split_indices: valid_fraction + test_fraction must be below 1, got "
            f"{valid_fraction} + {test_fraction}"
        )
    n_test = int(n * test_fraction + 0.5)
    n_valid = int(n * valid_fraction + 0.5)
    perm = np.random.default_rng(seed).permutation(n).astype(np.int64)
    test = np.sort(perm[:n_test])
    valid = np.sort(perm[n_test : n_test + n_valid])
    train = np.sort(perm[n_test + n_valid :])
    return train, valid, test
