"""Give freed heap memory back to the operating system between estimator blocks.

Importance sampling with large K allocates tensors of tens of megabytes per vectorized pass.
glibc's allocator raises its mmap threshold dynamically after such blocks are freed, so
later ones of similar size come from the heap, which fragments: resident memory then grows
by about 1 MB per datapoint over a long evaluation (measured: 4.1 GiB peak for K = 5000 on
10,000 MNIST test points without this, see benchmarks/eval_memory.py). ``malloc_trim(0)``
returns the free pages, keeping the footprint bounded by the chunk size.

Trimming has a price: the pages it returns are faulted in again (and zeroed) when the next
block allocates, about 4% of the time of an estimate. So :func:`release_free_memory` takes
a ``slack``: with it, the heap is trimmed only once resident memory exceeds its level after
the last trim by more than ``slack`` bytes, which bounds the growth without paying for
pages that would be reused at once (measured in benchmarks/eval_speed.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["TRIM_SLACK", "release_free_memory", "resident_bytes"]

#: Growth of resident memory over its level after the last trim that
#: ``release_free_memory(slack=TRIM_SLACK)`` tolerates before trimming again.
TRIM_SLACK = 64 * 2**20

_after_last_trim: list[int | None] = [None]  # resident bytes right after the last trim


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None


def resident_bytes() -> int | None:
    """This process's resident set size in bytes (``/proc/self/statm``), or ``None`` where
    it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_free_memory(slack: int = 0) -> None:
    """Return free heap pages to the OS where the C library supports it (glibc); a no-op
    elsewhere.

    :param slack: with ``slack > 0``, trim only if resident memory exceeds its level right
        after the last trim by more than ``slack`` bytes (or cannot be read).
    """
    trim = _malloc_trim()
    if trim is None:
        return
    if slack > 0:
        resident, after_last = resident_bytes(), _after_last_trim[0]
        if resident is not None and after_last is not None:
            if resident <= after_last + slack:
                _after_last_trim[0] = min(after_last, resident)
                return
    trim(0)
    _after_last_trim[0] = resident_bytes()
