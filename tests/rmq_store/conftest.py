"""Shared fixtures of the store tests: small files so every test rolls commitlog, consume-queue and index files."""
from __future__ import annotations

import os

import pytest

from rmq_store import MessageStore, StoreConfig

# Small enough that roll-over happens constantly; the retention thread is parked (passes are run explicitly).
SMALL = dict(
    mapped_file_size_commitlog=64 * 1024,
    mapped_file_size_consume_queue=20 * 100,
    max_hash_slot_num=64,
    max_index_num=256,
    clean_resource_interval_ms=3_600_000,
)


@pytest.fixture
def make_config(tmp_path):
    """``make_config(**overrides)`` → a StoreConfig rooted at a fresh directory under tmp_path."""
    counter = [0]

    def factory(root: str | os.PathLike | None = None, **overrides) -> StoreConfig:
        if root is None:
            counter[0] += 1
            root = tmp_path / f"store{counter[0]}"
        kwargs = dict(SMALL)
        kwargs.update(overrides)
        return StoreConfig(store_path_root_dir=str(root), **kwargs)

    return factory


@pytest.fixture
def open_store():
    """``open_store(config, **kw)`` → an opened MessageStore that is closed at teardown (if still open)."""
    stores: list[MessageStore] = []

    def factory(config: StoreConfig, **kw) -> MessageStore:
        store = MessageStore(config, **kw)
        store.open()
        stores.append(store)
        return store

    yield factory
    for store in stores:
        try:
            store.close()
        except Exception:  # a test may have left a store half torn down on purpose
            pass


class FakeClock:
    """A store clock the test moves by hand (ms)."""

    def __init__(self, start_ms: int = 1_700_000_000_000, step_ms: int = 0) -> None:
        self.now = start_ms
        self.step = step_ms

    def __call__(self) -> int:
        t = self.now
        self.now += self.step
        return t


@pytest.fixture
def fake_clock():
    return FakeClock()
