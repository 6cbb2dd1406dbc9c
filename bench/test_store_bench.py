"""Micro-benchmarks of the append path: rmq's put_batch against LMDB's putmulti and a plain file's os.write.

Run with ``pytest bench --benchmark-only`` (``make bench``).  The suite's testpaths is ``tests``, so these are
collected only when bench/ is named; they make no timing assertions.

Each round appends 20,000 messages of 128 B in 1,000-message batches into a fresh store, page cache only: no
fsync per batch and no closing flush, so the numbers compare the per-call cost of appending.  Durability, reads
and lookups at full scale are what ``rmq bench store`` measures, with the same runner classes used here.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rmq_cli.bench_store import WARMUP_OVERHEAD_PER_MESSAGE, warm_page_cache
from rmq_cli.store_runners import FileRunner, LmdbRunner, RmqRunner, Runner, Workload, build_workload

COUNT = 20_000
SIZE = 128
ROUNDS = 15
#: Small commitlog files: the default 1 GiB would be created and pre-faulted for every round of 2.5 MB.
RMQ_COMMITLOG_FILE_SIZE = 64 << 20

#: Builds a runner for the module's workload.
RunnerFactory = Callable[[Workload], Runner]


@pytest.fixture(scope="module")
def workload() -> Workload:
    return build_workload(SIZE, COUNT, lookups=1)


@pytest.fixture
def open_runners() -> Iterator[list[Runner]]:
    """Runners opened by a round's setup; closed after each round, and here in case a round never finished."""
    runners: list[Runner] = []
    yield runners
    for runner in runners:
        runner.close()


def _bench_append(benchmark: Any, runner: Runner, tmp_path: Path, open_runners: list[Runner]) -> None:
    """Time runner.append() over ROUNDS rounds, each into a fresh, settled, empty store.

    Each round starts from a just-warmed page cache, as in ``rmq bench store`` (see warm_page_cache).
    """
    dirs = (tmp_path / f"round-{i}" for i in itertools.count())
    warmup_bytes = COUNT * (SIZE + WARMUP_OVERHEAD_PER_MESSAGE)

    def setup() -> None:
        path = next(dirs)
        path.mkdir()
        runner.open(path, durable=False)
        runner.settle()
        open_runners.append(runner)
        warm_page_cache(tmp_path, warmup_bytes)

    def teardown() -> None:
        runner.close()
        open_runners.remove(runner)

    stored = benchmark.pedantic(runner.append, setup=setup, teardown=teardown, rounds=ROUNDS)
    assert stored == COUNT


def _rmq_runner(workload: Workload) -> Runner:
    pytest.importorskip("rmq_store", reason="rmq's Cython core is not built (make build)")
    return RmqRunner(workload, mapped_file_size_commitlog=RMQ_COMMITLOG_FILE_SIZE)


def _lmdb_runner(workload: Workload) -> Runner:
    pytest.importorskip("lmdb")
    return LmdbRunner(workload)


@pytest.mark.benchmark(group="append 20k x 128 B")
@pytest.mark.parametrize(
    "make_runner",
    [
        pytest.param(_rmq_runner, id="rmq-put_batch"),
        pytest.param(_lmdb_runner, id="lmdb-putmulti"),
        pytest.param(FileRunner, id="file-os.write"),
    ],
)
def test_append(
    benchmark: Any, make_runner: RunnerFactory, workload: Workload, tmp_path: Path, open_runners: list[Runner]
) -> None:
    _bench_append(benchmark, make_runner(workload), tmp_path, open_runners)
