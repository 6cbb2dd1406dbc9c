"""The stores ``rmq bench store`` times: rmq's MessageStore and its peers (a plain file, LMDB, sqlite in WAL mode).

Every store gets the same Workload (payloads built once per size and shared) and does the same work in the same
shape: one call per 1,000-message batch, either with one full flush at the end ("async") or with an fsync per
batch ("durable"), then a sequential read of everything and a lookup of random keys.  Store-specific inputs (LMDB
keys, sqlite rows, pre-joined file frames, rmq property strings) are built in the runner's constructor, outside
the timed phases, so the timings measure the stores and not the harness.

A runner's timed methods return a Tally of what they actually did; the harness checks it against the workload,
because a store that silently wrote or read less would otherwise look fast.
"""

from __future__ import annotations

import os
import random
import sqlite3
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, ClassVar, Final

#: Messages per append call, per fsync (durable mode) and per read call.
BATCH: Final = 1000
#: Topic the rmq store writes to; one queue, so the consume queue is one sequential log like the peers.
TOPIC: Final = "BenchTopic"
#: Payloads are slices of one random pool at varying offsets: random (incompressible) and cheap to make.
_POOL_SLACK: Final = 4096
_POOL_STRIDE: Final = 97  # odd, so the offsets walk through every residue of _POOL_SLACK


#: Operation names, shared by the runners, the report and the JSON.
OP_WRITE_ASYNC: Final = "write async"
OP_WRITE_DURABLE: Final = "write durable"
OP_READ: Final = "seq read"
OP_READ_COPY: Final = "seq read (bytes copy)"
OP_LOOKUP: Final = "key lookup"


class BenchError(RuntimeError):
    """A store did not do the work it was timed for (or refused it), so its numbers would be meaningless."""


@dataclass(frozen=True, slots=True)
class Workload:
    """The messages of one payload size, built once and shared by every store."""

    size: int
    #: Message i's payload; every store writes exactly these objects.
    bodies: list[bytes]
    #: ``bodies`` cut into BATCH-sized lists (sharing the payload objects).
    batches: list[list[bytes]]
    #: Message i's unique business key, ``key-{i}``.
    keys: list[str]
    #: Indices of the messages the lookup phase asks for.
    lookup_indices: list[int]

    @property
    def count(self) -> int:
        return len(self.bodies)

    @property
    def payload_bytes(self) -> int:
        return len(self.bodies) * self.size


def build_workload(size: int, count: int, lookups: int, seed: int = 20240601) -> Workload:
    """Make ``count`` payloads of ``size`` random bytes and pick ``lookups`` random messages to look up.

    One os.urandom call per size: random data defeats any compression, and slicing one pool keeps building a
    million payloads to well under a second.  Lookup indices come from a seeded generator so runs are comparable.
    """
    pool = os.urandom(size + _POOL_SLACK)
    bodies = [pool[off : off + size] for off in ((i * _POOL_STRIDE) % _POOL_SLACK for i in range(count))]
    batches = [bodies[start : start + BATCH] for start in range(0, count, BATCH)]
    keys = [f"key-{i}" for i in range(count)]
    rng = random.Random(seed)
    if lookups <= count:
        lookup_indices = rng.sample(range(count), lookups)
    else:
        lookup_indices = [rng.randrange(count) for _ in range(lookups)]
    return Workload(size, bodies, batches, keys, lookup_indices)


@dataclass(frozen=True, slots=True)
class Tally:
    """What a timed phase did: messages handled and the payload bytes they carried.

    An async write also reports how long its closing flush took, so a slow total can be told apart from a
    slow flush.
    """

    count: int
    payload_bytes: int
    flush_seconds: float | None = None


class Runner(ABC):
    """One store under test.  The harness calls open, a timed write, timed reads and lookup, then close."""

    #: Name in the report and in ``--peers``.
    name: ClassVar[str]
    #: The read operations this store offers (rmq has two: zero-copy views and bytes copies).
    read_ops: ClassVar[tuple[str, ...]] = (OP_READ,)
    #: How each operation is done, shown next to its numbers.
    notes: ClassVar[dict[str, str]]
    #: Whether the store can find a message by key at all; without an index the lookup row is n/a.
    has_index: ClassVar[bool] = True

    def __init__(self, workload: Workload, **options: Any) -> None:
        """Build the store-specific inputs (untimed); ``options`` tune the store (only rmq's take any)."""
        if options:
            raise TypeError(f"{self.name} takes no options, got {sorted(options)}")
        self.workload = workload
        self.durable = False

    @abstractmethod
    def open(self, path: Path, durable: bool) -> None:
        """Create an empty store in the fresh directory ``path``; ``durable`` selects an fsync per batch."""

    def settle(self) -> None:
        """Wait (untimed) for background work the store started when opening, as a long-running process would."""

    def write(self) -> Tally:
        """Append every batch; in async mode end with one full flush, so the data is durable when this returns."""
        count = self.append()
        flush_seconds = None if self.durable else _time_call(self.flush)
        return Tally(count, count * self.workload.size, flush_seconds)

    @abstractmethod
    def append(self) -> int:
        """Append every batch (with an fsync per batch when durable) and return how many messages were stored."""

    @abstractmethod
    def flush(self) -> None:
        """Make everything appended durable, the way this store's async mode is meant to be closed off."""

    @abstractmethod
    def read(self, op: str) -> Tally:
        """Read every message back in order, materialising each one as ``op`` says."""

    def lookup(self) -> Tally:
        """Fetch the workload's lookup messages by key (only called when has_index)."""
        raise BenchError(f"{self.name} has no index to look messages up by key")

    @abstractmethod
    def close(self) -> None:
        """Release the store's handles; the harness deletes its directory afterwards."""


def _time_call(call: Callable[[], object]) -> float:
    """Seconds ``call`` took: the closing flush of an async write, reported beside the write's total."""
    start = perf_counter()
    call()
    return perf_counter() - start


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, full disk); finish the job instead of losing frames."""
    written = os.write(fd, data)
    if written != len(data):
        view = memoryview(data)[written:]
        while view:
            view = view[os.write(fd, view) :]


class FileRunner(Runner):
    """A plain append-only file of 4-byte big-endian length-prefixed frames: the ceiling for sequential I/O.

    Frames are joined before timing, so a write phase is one os.write per batch plus fsyncs, nothing else.  It has
    no index, so it cannot look a message up by key.
    """

    name = "file"
    has_index = False
    notes = {
        OP_WRITE_ASYNC: "os.write of pre-joined frames per 1000, one fsync at the end",
        OP_WRITE_DURABLE: "os.write + os.fsync per 1000",
        OP_READ: "16 MiB os.read, length prefixes parsed in Python, bytes per message",
        OP_LOOKUP: "n/a: a plain file has no index",
    }
    _LENGTH: Final = struct.Struct(">I")
    _READ_CHUNK: Final = 16 << 20

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload)
        pack = self._LENGTH.pack
        self._frames = [
            b"".join([part for body in batch for part in (pack(len(body)), body)]) for batch in workload.batches
        ]
        self._file: Path | None = None
        self._fd = -1

    def open(self, path: Path, durable: bool) -> None:
        self.durable = durable
        self._file = path / "messages.log"
        self._fd = os.open(self._file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)

    def append(self) -> int:
        fd, durable = self._fd, self.durable
        for frame in self._frames:
            _write_all(fd, frame)
            if durable:
                os.fsync(fd)
        return self.workload.count

    def flush(self) -> None:
        os.fsync(self._fd)

    def read(self, op: str) -> Tally:
        assert self._file is not None, "open() first"
        count = total = 0
        for message in self._messages(self._file):
            count += 1
            total += len(message)
        return Tally(count, total)

    def _messages(self, file: Path) -> Iterator[bytes]:
        """Yield each frame's payload as bytes; a frame cut by a chunk boundary is carried into the next chunk."""
        unpack_from = self._LENGTH.unpack_from
        fd = os.open(file, os.O_RDONLY)
        try:
            carry = b""
            while chunk := os.read(fd, self._READ_CHUNK):
                buf = carry + chunk if carry else chunk
                pos, end = 0, len(buf)
                while end - pos >= 4:
                    (length,) = unpack_from(buf, pos)
                    stop = pos + 4 + length
                    if stop > end:
                        break
                    yield buf[pos + 4 : stop]
                    pos = stop
                carry = buf[pos:]
            if carry:
                raise BenchError(f"{file}: {len(carry)} trailing bytes do not form a whole frame")
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LmdbRunner(Runner):
    """LMDB keyed by 8-byte big-endian sequence numbers, appended with putmulti, one write txn per batch.

    Async mode opens with sync=False, metasync=False (commits do not fsync) and ends with env.sync(True); durable
    mode uses LMDB's defaults, where every commit fsyncs.  The lookup is by primary key (the sequence number).
    """

    name = "lmdb"
    notes = {
        OP_WRITE_ASYNC: "putmulti(append) txn per 1000, sync=False metasync=False, env.sync(True) at end",
        OP_WRITE_DURABLE: "putmulti(append) txn per 1000, sync=True (fsync per commit)",
        OP_READ: "cursor iteration, bytes per value",
        OP_LOOKUP: "txn.get by 8-byte sequence key (primary key)",
    }
    #: Per-message allowance for key, node header and page slack; LMDB fits 3 x 1 KiB values in a 4 KiB page.
    _MAP_OVERHEAD: Final = 64

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload)
        import lmdb  # imported here so the other stores run where LMDB is not installed

        self._lmdb = lmdb
        keys = [i.to_bytes(8, "big") for i in range(workload.count)]
        starts = range(0, workload.count, BATCH)
        self._items = [list(zip(keys[start : start + BATCH], batch)) for start, batch in zip(starts, workload.batches)]
        self._lookup_keys = [keys[i] for i in workload.lookup_indices]
        self._env: Any = None

    def open(self, path: Path, durable: bool) -> None:
        self.durable = durable
        w = self.workload
        map_size = 2 * w.count * (w.size + self._MAP_OVERHEAD) + (256 << 20)
        self._env = self._lmdb.open(str(path), map_size=map_size, sync=durable, metasync=durable)

    def append(self) -> int:
        env, added_total = self._env, 0
        for items in self._items:
            with env.begin(write=True) as txn:
                _consumed, added = txn.cursor().putmulti(items, append=True)
            added_total += added
        return added_total

    def flush(self) -> None:
        self._env.sync(True)

    def read(self, op: str) -> Tally:
        count = total = 0
        with self._env.begin(buffers=False) as txn:
            for value in txn.cursor().iternext(keys=False, values=True):
                count += 1
                total += len(value)
        return Tally(count, total)

    def lookup(self) -> Tally:
        found = total = 0
        with self._env.begin(buffers=False) as txn:
            get = txn.get
            for key in self._lookup_keys:
                value = get(key)
                if value is not None:
                    found += 1
                    total += len(value)
        return Tally(found, total)

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None


class SqliteRunner(Runner):
    """sqlite3 in WAL mode, table (k INTEGER PRIMARY KEY, v BLOB), one executemany transaction per batch.

    Async mode is synchronous=NORMAL (commits do not fsync the WAL) ending with wal_checkpoint(FULL), which
    syncs; durable mode is synchronous=FULL (every commit fsyncs the WAL).
    """

    name = "sqlite"
    notes = {
        OP_WRITE_ASYNC: "WAL, executemany txn per 1000, synchronous=NORMAL, wal_checkpoint(FULL) at end",
        OP_WRITE_DURABLE: "WAL, executemany txn per 1000, synchronous=FULL",
        OP_READ: "SELECT v ORDER BY k, bytes per row",
        OP_LOOKUP: "SELECT v WHERE k=? (primary key)",
    }

    def __init__(self, workload: Workload) -> None:
        super().__init__(workload)
        starts = range(0, workload.count, BATCH)
        self._rows = [list(zip(range(start, start + BATCH), batch)) for start, batch in zip(starts, workload.batches)]
        self._lookup_keys = [(i,) for i in workload.lookup_indices]
        self._conn: sqlite3.Connection | None = None

    def open(self, path: Path, durable: bool) -> None:
        self.durable = durable
        conn = sqlite3.connect(path / "bench.db", isolation_level=None)  # transactions are explicit below
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise BenchError(f"sqlite refused WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("CREATE TABLE messages (k INTEGER PRIMARY KEY, v BLOB)")
        self._conn = conn

    def append(self) -> int:
        conn = self._conn
        assert conn is not None, "open() first"
        execute, executemany = conn.execute, conn.executemany
        for rows in self._rows:
            execute("BEGIN")
            executemany("INSERT INTO messages (k, v) VALUES (?, ?)", rows)
            execute("COMMIT")
        return self.workload.count

    def flush(self) -> None:
        assert self._conn is not None, "open() first"
        busy, _log, _done = self._conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        if busy:
            raise BenchError("sqlite wal_checkpoint(FULL) could not complete")

    def read(self, op: str) -> Tally:
        assert self._conn is not None, "open() first"
        count = total = 0
        for (value,) in self._conn.execute("SELECT v FROM messages ORDER BY k"):
            count += 1
            total += len(value)
        return Tally(count, total)

    def lookup(self) -> Tally:
        assert self._conn is not None, "open() first"
        execute = self._conn.execute
        found = total = 0
        for params in self._lookup_keys:
            row = execute("SELECT v FROM messages WHERE k = ?", params).fetchone()
            if row is not None:
                found += 1
                total += len(row[0])
        return Tally(found, total)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class RmqRunner(Runner):
    """rmq's MessageStore: put_batch per batch into one queue, bodies read back as zero-copy memoryviews.

    Every message carries its business key in the KEYS property (encoded before timing), so the store's hash
    index holds all of them and the lookup goes through query_message, as a RocketMQ key query would.
    """

    name = "rmq"
    read_ops = (OP_READ, OP_READ_COPY)
    notes = {
        OP_WRITE_ASYNC: "put_batch per 1000, ASYNC_FLUSH, one flush() at end; KEYS indexed",
        OP_WRITE_DURABLE: "put_batch per 1000, SYNC_FLUSH (returns after its msync); KEYS indexed",
        OP_READ: "get_messages 1000/call, bodies as zero-copy memoryviews (len touched)",
        OP_READ_COPY: "get_messages 1000/call, GetResult.body_list(): bytes per message, like the peers",
        OP_LOOKUP: "query_message by business key (hash index)",
    }

    def __init__(self, workload: Workload, **config_overrides: Any) -> None:
        """``config_overrides`` are extra StoreConfig fields (--quick and the micro-benchmarks use smaller files)."""
        super().__init__(workload)
        from rmq_common.properties import encode_properties
        from rmq_store import FlushDiskType, MessageStore, StoreConfig

        self._config_overrides = config_overrides
        self._store_type, self._config_type, self._flush_types = MessageStore, StoreConfig, FlushDiskType
        properties = [encode_properties({"KEYS": key}) for key in workload.keys]
        self._property_batches = [properties[start : start + BATCH] for start in range(0, workload.count, BATCH)]
        self._lookup_keys = [workload.keys[i] for i in workload.lookup_indices]
        self._stack = ExitStack()
        self._store: Any = None

    def open(self, path: Path, durable: bool) -> None:
        # Durable mode is the store's own: SYNC_FLUSH, where put_batch returns once a group commit has msynced
        # its bytes.  With one writer that is one msync per 1,000-message batch, the same as the peers' fsync.
        self.durable = durable
        flush_type = self._flush_types.SYNC_FLUSH if durable else self._flush_types.ASYNC_FLUSH
        config = self._config_type(
            store_path_root_dir=str(path), flush_disk_type=flush_type, **self._config_overrides
        )
        self._store = self._stack.enter_context(self._store_type(config))

    def settle(self) -> None:
        """Let the store finish creating and pre-faulting its next commitlog file before timing starts.

        open() starts that in a background thread; in a running broker it is long done before the next file
        is needed. Timed concurrently it would bill a 1 GiB page-fault storm the workload may never use
        (1M x 128 B fits in the first file) to the append, and on a 2-vCPU machine that dominates."""
        self._store.wait_ready()

    def append(self) -> int:
        put_batch = self._store.put_batch
        count = 0
        for bodies, properties in zip(self.workload.batches, self._property_batches):
            result = put_batch(TOPIC, bodies, queue_id=0, properties=properties)
            if not result.ok:
                raise BenchError(f"put_batch failed at message {count}: {result.status}")
            count += result.count
        return count

    def flush(self) -> None:
        self._store.flush()

    def read(self, op: str) -> Tally:
        if op == OP_READ_COPY:
            # Like the peers, every body becomes a bytes object: GetResult.body_list builds them in one C loop
            # per buffer.  Each one is touched.
            return self._read(lambda result: sum(len(body) for body in result.body_list()))
        return self._read(lambda result: sum(len(body) for body in result.bodies()))

    def _read(self, consume: Callable[[Any], int]) -> Tally:
        """Pull the queue from offset 0 in BATCH-message calls; ``consume`` touches one call's bodies."""
        get_messages = self._store.get_messages
        offset = count = total = 0
        wanted = self.workload.count
        while count < wanted:
            result = get_messages(TOPIC, 0, offset, max_count=BATCH, max_bytes=64 << 20)
            if result.count == 0:
                break
            try:
                total += consume(result)
            finally:
                result.release()
            count += result.count
            offset = result.next_begin_offset
        return Tally(count, total)

    def lookup(self) -> Tally:
        query = self._store.query_message
        found = 0
        for key in self._lookup_keys:
            if query(TOPIC, key, max_num=1).records:
                found += 1
        return Tally(found, found * self.workload.size)

    def close(self) -> None:
        self._stack.close()
        self._store = None


#: The peers ``--peers`` can choose from, in report order.
PEERS: Final[dict[str, type[Runner]]] = {
    FileRunner.name: FileRunner,
    LmdbRunner.name: LmdbRunner,
    SqliteRunner.name: SqliteRunner,
}


def rmq_unavailable_reason() -> str | None:
    """Why rmq's store cannot run here (its Cython core not built yet, say), or None when it can."""
    try:
        from rmq_common.properties import encode_properties  # noqa: F401
        from rmq_store import FlushDiskType, MessageStore, StoreConfig  # noqa: F401
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
