"""Give freed heap memory back to the operating system between estimator blocks.

Importance sampling with large K allocates tensors of tens of megabytes per vectorized pass.
glibc's allocator raises its mmap threshold dynamically after such blocks are freed, so
later ones of similar size come from the heap, which fragments: resident memory then grows
by about 1 MB per datapoint over a long evaluation (measured: 4.1 GiB peak for K = 5000 on
10,000 MNIST test points without this, see benchmarks/eval_memory.py). ``malloc_trim(0)``
returns the free pages, keeping the footprint bounded by the chunk size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Return free heap pages to the OS where the C library supports it (glibc); a no-op
    elsewhere."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
