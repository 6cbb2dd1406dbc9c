"""What the store's calls return."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from rmq_store.status import GetStatus, PutStatus


@dataclass(slots=True)
class PutResult:
    """Outcome of one put: where the records went. ``phy_offsets`` has one entry per message."""

    status: PutStatus
    first_phy_offset: int = -1
    first_queue_offset: int = -1
    count: int = 0
    wrote_bytes: int = 0
    store_timestamp: int = 0
    phy_offsets: np.ndarray | None = None
    # Commitlog offset just past this put's bytes: durable once flushed_offset reaches it.
    end_offset: int = 0

    @property
    def ok(self) -> bool:
        return self.status is PutStatus.PUT_OK


@dataclass(slots=True)
class GetResult:
    """Records of one queue read without copying: ``buffers`` are views of contiguous runs of records in
    the mapped commitlog, in queue order. Views keep their file mapped; call ``release()`` (or drop the
    result) when done so retention can unmap deleted files."""

    status: GetStatus
    next_begin_offset: int
    min_offset: int
    max_offset: int
    phy_offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    sizes: np.ndarray = field(default_factory=lambda: np.empty(0, np.int32))
    queue_offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    buffers: list = field(default_factory=list)
    # How many records of each buffer, so records() can walk buffers without lookups.
    buffer_counts: list = field(default_factory=list)
    total_bytes: int = 0
    filtered: int = 0

    @property
    def count(self) -> int:
        return len(self.sizes)

    @property
    def found(self) -> bool:
        return self.status is GetStatus.FOUND

    def records(self) -> Iterator[memoryview]:
        """One zero-copy view per stored record."""
        sizes = self.sizes.tolist()
        i = 0
        for buf, n in zip(self.buffers, self.buffer_counts):
            pos = 0
            for size in sizes[i:i + n]:
                yield buf[pos:pos + size]
                pos += size
            i += n

    def bodies(self) -> Iterator[memoryview]:
        """One zero-copy view per message body (bodies stay compressed if they were stored so)."""
        from rmq_common._record import body_views
        for buf in self.buffers:
            yield from body_views(buf)

    def body_list(self) -> list[bytes]:
        """Every body as bytes, built in one C loop per buffer (a copy each; for consumers that keep them)."""
        from rmq_common._record import body_list
        if len(self.buffers) == 1:
            return body_list(self.buffers[0])
        out: list[bytes] = []
        for buf in self.buffers:
            out.extend(body_list(buf))
        return out

    def to_bytes(self) -> bytes:
        """All records concatenated: a PULL_MESSAGE response body."""
        return b"".join(self.buffers)

    def release(self) -> None:
        for b in self.buffers:
            b.release()
        self.buffers = []


@dataclass(slots=True)
class QueryResult:
    """Records matching a key lookup, newest first, as zero-copy views."""

    records: list
    index_last_update_timestamp: int = 0
    index_last_update_phy_offset: int = 0


@dataclass(slots=True)
class RecoveryReport:
    """What open() found and did. ``truncated_bytes`` of torn or damaged tail were erased from
    ``truncated_from`` on; ``damage`` says what stopped the scan (None: a clean end)."""

    abnormal: bool
    scan_from_offset: int
    max_phy_offset: int
    truncated_from: int = -1
    truncated_bytes: int = 0
    damage: str | None = None
    files_deleted: list = field(default_factory=list)
    consume_queue_units_dropped: int = 0
    records_redispatched: int = 0
    full_rebuild: bool = False

    @property
    def truncated(self) -> bool:
        # Deleting the empty, never-written file prepared before a crash is not a truncation.
        return self.truncated_bytes > 0
