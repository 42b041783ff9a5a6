"""release_free_memory: trims the heap, with a slack only once resident memory has grown."""

from __future__ import annotations

import sys

import pytest

from ppl_vae import memory


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A fake malloc_trim counting its calls and a settable resident set size."""
    state = {"trims": 0, "resident": 1000}

    def trim(pad: int) -> int:
        state["trims"] += 1
        return 1

    monkeypatch.setattr(memory, "_malloc_trim", lambda: trim)
    monkeypatch.setattr(memory, "resident_bytes", lambda: state["resident"])
    monkeypatch.setattr(memory, "_after_last_trim", [None])
    return state


def test_without_slack_every_call_trims(fake):
    for _ in range(3):
        memory.release_free_memory()
    assert fake["trims"] == 3


def test_with_slack_trims_only_after_growth(fake):
    memory.release_free_memory(slack=100)  # no trim yet: trims, level 1000
    assert fake["trims"] == 1
    fake["resident"] = 1100  # within the slack
    memory.release_free_memory(slack=100)
    assert fake["trims"] == 1
    fake["resident"] = 1101  # beyond it
    memory.release_free_memory(slack=100)
    assert fake["trims"] == 2


def test_the_level_follows_memory_down(fake):
    memory.release_free_memory(slack=100)
    fake["resident"] = 500  # the caller freed memory: the bound tightens
    memory.release_free_memory(slack=100)
    fake["resident"] = 650
    memory.release_free_memory(slack=100)
    assert fake["trims"] == 2


def test_unreadable_resident_size_means_trim(fake, monkeypatch):
    memory.release_free_memory(slack=100)
    monkeypatch.setattr(memory, "resident_bytes", lambda: None)
    memory.release_free_memory(slack=100)
    assert fake["trims"] == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_resident_bytes_and_real_trim():
    resident = memory.resident_bytes()
    assert resident is not None and resident > 2**20
    memory.release_free_memory()
    memory.release_free_memory(slack=memory.TRIM_SLACK)
