# cython: language_level=3
"""ConsumeQueue: the index of one (topic, queueId), derived from the commitlog.

On-disk layout (PROTOCOL.md §6.2), directory ``consumequeue/<topic>/<queueId>/``:

    file name = 20-digit logical *byte* offset of its first unit (a multiple of file_size)
    file      = units_per_file (default 300,000) units of 20 bytes = 6,000,000 bytes

    unit (20 B, big-endian):  int64 commitlog offset | int32 record size | int64 tags code
    padding unit, before the first real unit of a queue that starts mid-file: (0, 0x7FFFFFFF, 0)

Invariants
- Unit i lives at logical byte 20·i; files are contiguous and all ``file_size`` bytes.
- Units are written in queue-offset order; [min_offset, max_offset) are readable. Units past max_offset are 0.
- A unit is written only after its commitlog record is fully written, so a unit never points at a torn record.
- Re-dispatching a record whose unit exists is a no-op when the unit matches and a repair when it does not,
  so recovery can replay the commitlog over a queue any number of times.
"""
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset
from rmq_common._record cimport rmq_put_i32, rmq_put_i64, rmq_get_i32, rmq_get_i64
from rmq_store._mapped cimport MappedFile

import logging
import os

from rmq_store._mapped import CorruptFileError, file_name_of

log = logging.getLogger("rmq.store.consumequeue")

CQ_UNIT_SIZE = 20
cdef int32_t PAD_SIZE = 0x7FFFFFFF


cdef class ConsumeQueue:
    def __init__(self, str root, str topic, int queue_id, int64_t units_per_file):
        self.topic = topic
        self.queue_id = queue_id
        self.directory = os.path.join(root, topic, str(queue_id))
        self.units_per_file = units_per_file
        self.file_size = units_per_file * 20
        self.files = []
        self.min_offset = 0
        self.max_offset = 0
        self.max_phy_end = 0
        self.current = None
        self.cur_base = NULL
        self.cur_first_unit = -1

    def __repr__(self):
        return f"ConsumeQueue({self.topic!r}, {self.queue_id}, min={self.min_offset}, max={self.max_offset})"

    # --- loading and recovery ----------------------------------------------------------------------
    def load(self) -> int:
        """Map the queue's files and find its end. Returns the number of units found."""
        if not os.path.isdir(self.directory):
            return 0
        names = sorted(n for n in os.listdir(self.directory) if n.isdigit() and len(n) == 20)
        expected = None
        for name in names:
            start = int(name)
            if start % self.file_size:
                raise CorruptFileError(f"{self.directory}/{name}: not a multiple of the file size {self.file_size}")
            if expected is not None and start != expected:
                raise CorruptFileError(f"{self.directory}: gap before {name}")
            self.files.append(MappedFile(os.path.join(self.directory, name), self.file_size))
            expected = start + self.file_size
        if not self.files:
            return 0
        self.min_offset = (<MappedFile>self.files[0]).file_from_offset // 20
        self._find_end()
        return self.max_offset - self.min_offset

    cdef int _find_end(self) except -1:
        """Scan the last non-empty file for its last unit (size 0 = never written)."""
        cdef MappedFile mf
        cdef const unsigned char *p
        cdef int64_t i, n, last
        while self.files:
            mf = self.files[-1]
            p = <const unsigned char *><size_t>mf.address
            n = 0
            last = -1
            for i in range(self.units_per_file):
                if rmq_get_i32(p + 20 * i + 8) == 0:
                    break
                n = i + 1
                if rmq_get_i32(p + 20 * i + 8) != PAD_SIZE:
                    last = i
            if n == 0 and len(self.files) > 1:
                mf.destroy()
                self.files.pop()
                continue
            mf.wrote_position = n * 20
            mf.flushed_position = n * 20
            for f in self.files[:-1]:
                (<MappedFile>f).wrote_position = self.file_size
                (<MappedFile>f).flushed_position = self.file_size
            self.max_offset = mf.file_from_offset // 20 + n
            if last >= 0:
                self.max_phy_end = rmq_get_i64(p + 20 * last) + rmq_get_i32(p + 20 * last + 8)
            break
        return 0

    def truncate_phy(self, int64_t phy_end) -> int:
        """Drop units whose record ends past ``phy_end`` (the commitlog was truncated). Returns units dropped."""
        cdef const unsigned char *p
        cdef int64_t off, dropped = 0
        cdef MappedFile mf
        while self.max_offset > self.min_offset:
            p = self.unit_ptr(self.max_offset - 1)
            if p == NULL:
                break
            if rmq_get_i32(p + 8) != PAD_SIZE and rmq_get_i64(p) + rmq_get_i32(p + 8) <= phy_end:
                break
            memset(<unsigned char *>p, 0, 20)
            self.max_offset -= 1
            dropped += 1
        if dropped:
            # Release files left empty past the new end, and recompute positions.
            while self.files and (<MappedFile>self.files[-1]).file_from_offset // 20 >= self.max_offset \
                    and len(self.files) > 1:
                mf = self.files.pop()
                mf.destroy()
            if self.files:
                mf = self.files[-1]
                mf.wrote_position = self.max_offset * 20 - mf.file_from_offset
                mf.flushed_position = min(mf.flushed_position, mf.wrote_position)
            self.current = None
            self.cur_first_unit = -1
            self.max_phy_end = 0
            if self.max_offset > self.min_offset:
                p = self.unit_ptr(self.max_offset - 1)
                self.max_phy_end = rmq_get_i64(p) + rmq_get_i32(p + 8)
            log.warning("consume queue %s-%d: dropped %d units past commitlog offset %d",
                        self.topic, self.queue_id, dropped, phy_end)
        return dropped

    # --- writing -------------------------------------------------------------------------------------
    cdef int _select_current(self, int64_t offset) except -1:
        """Make the file holding unit ``offset`` current, creating files up to it."""
        cdef int64_t first_unit = (offset // self.units_per_file) * self.units_per_file
        cdef int64_t byte_from, i
        cdef MappedFile mf
        cdef unsigned char *p
        if self.cur_first_unit == first_unit and self.current is not None:
            return 0
        if not self.files:
            os.makedirs(self.directory, exist_ok=True)
            byte_from = first_unit * 20
            mf = MappedFile(os.path.join(self.directory, file_name_of(byte_from)), self.file_size, create=True)
            mf.warm()
            self.files.append(mf)
            self.min_offset = offset
            # Pad the units before the queue's first real unit, as RocketMQ's fillPreBlank does.
            for i in range(offset - first_unit):
                p = (<unsigned char *><size_t>mf.address) + 20 * i
                rmq_put_i64(p, 0)
                rmq_put_i32(p + 8, PAD_SIZE)
                rmq_put_i64(p + 12, 0)
            mf.wrote_position = (offset - first_unit) * 20
            self.max_offset = offset
        while (<MappedFile>self.files[-1]).file_from_offset // 20 < first_unit:
            byte_from = (<MappedFile>self.files[-1]).file_from_offset + self.file_size
            mf = MappedFile(os.path.join(self.directory, file_name_of(byte_from)), self.file_size, create=True)
            mf.warm()
            self.files.append(mf)
        idx = (first_unit - (<MappedFile>self.files[0]).file_from_offset // 20) // self.units_per_file
        if idx < 0 or idx >= len(self.files):
            raise CorruptFileError(f"consume queue {self.topic}-{self.queue_id}: no file for unit {offset}")
        self.current = self.files[idx]
        self.cur_base = <unsigned char *><size_t>self.current.address
        self.cur_first_unit = first_unit
        return 0

    cdef int put_unit(self, int64_t phy, int32_t size, int64_t tags_code, int64_t queue_offset) except -1:
        cdef unsigned char *p
        cdef int64_t slot
        if queue_offset < self.max_offset:
            # Replay of an already dispatched record: verify, repair if the unit disagrees.
            if queue_offset < self.min_offset:
                return 0
            p = <unsigned char *>self.unit_ptr(queue_offset)
            if p != NULL and (rmq_get_i64(p) != phy or rmq_get_i32(p + 8) != size):
                log.warning("consume queue %s-%d: repaired unit %d", self.topic, self.queue_id, queue_offset)
                rmq_put_i64(p, phy)
                rmq_put_i32(p + 8, size)
                rmq_put_i64(p + 12, tags_code)
            return 0
        if queue_offset > self.max_offset and self.files:
            raise CorruptFileError(
                f"consume queue {self.topic}-{self.queue_id}: unit {queue_offset} after {self.max_offset}: a gap")
        if self.current is None or queue_offset - self.cur_first_unit >= self.units_per_file \
                or queue_offset < self.cur_first_unit:
            self._select_current(queue_offset)
        slot = queue_offset - self.cur_first_unit
        p = self.cur_base + 20 * slot
        rmq_put_i64(p, phy)
        rmq_put_i32(p + 8, size)
        rmq_put_i64(p + 12, tags_code)
        self.current.wrote_position = 20 * (slot + 1)
        self.max_offset = queue_offset + 1
        self.max_phy_end = phy + size
        return 0

    def reserve(self, int64_t count) -> None:
        """Create the files units [max_offset, max_offset + count) will need, before the commitlog append,
        so a full disk fails the put before anything is written rather than between log and queue."""
        if count > 0 and self.files:
            last = self.max_offset + count - 1
            if last - (<MappedFile>self.files[-1]).file_from_offset // 20 >= self.units_per_file:
                self._select_current(last)

    def put(self, int64_t phy, int32_t size, int64_t tags_code, int64_t queue_offset) -> None:
        """Python entry to put_unit (tests, tools)."""
        self.put_unit(phy, size, tags_code, queue_offset)

    # --- reading ------------------------------------------------------------------------------------
    cdef const unsigned char *unit_ptr(self, int64_t offset) noexcept:
        cdef MappedFile first
        cdef int64_t idx
        if offset < self.min_offset or offset >= self.max_offset or not self.files:
            return NULL
        first = self.files[0]
        idx = (offset - first.file_from_offset // 20) // self.units_per_file
        if idx < 0 or idx >= len(self.files):
            return NULL
        mf = <MappedFile>self.files[idx]
        return (<const unsigned char *><size_t>mf.address) + 20 * (offset - mf.file_from_offset // 20)

    def unit(self, int64_t offset):
        """(commitlog offset, size, tags code) of unit ``offset``, or None outside [min, max)."""
        cdef const unsigned char *p = self.unit_ptr(offset)
        if p == NULL:
            return None
        return (rmq_get_i64(p), rmq_get_i32(p + 8), rmq_get_i64(p + 12))

    # --- retention, flushing, closing -------------------------------------------------------------------
    def correct_min_offset(self, int64_t min_phy) -> None:
        """Move min_offset to the first unit whose record is still in the commitlog."""
        cdef const unsigned char *p
        cdef int64_t lo = self.min_offset, hi = self.max_offset, mid
        while lo < hi:  # units are ordered by commitlog offset (padding units sort first)
            mid = (lo + hi) // 2
            p = self.unit_ptr(mid)
            if rmq_get_i32(p + 8) == PAD_SIZE or rmq_get_i64(p) < min_phy:
                lo = mid + 1
            else:
                hi = mid
        self.min_offset = lo

    def delete_expired(self, int64_t min_phy) -> int:
        """Delete whole files whose every record is below the commitlog's min offset; keep the newest file."""
        cdef MappedFile mf
        cdef const unsigned char *p
        deleted = 0
        while len(self.files) > 1:
            mf = self.files[0]
            p = (<const unsigned char *><size_t>mf.address) + self.file_size - 20
            if rmq_get_i32(p + 8) != PAD_SIZE and rmq_get_i64(p) + rmq_get_i32(p + 8) <= min_phy:
                self.files.pop(0)
                if mf is self.current:
                    self.current = None
                    self.cur_first_unit = -1
                mf.destroy()
                deleted += 1
            else:
                break
        if self.files:
            self.min_offset = max(self.min_offset, (<MappedFile>self.files[0]).file_from_offset // 20)
        self.correct_min_offset(min_phy)
        return deleted

    def flush(self) -> None:
        for f in self.files:
            (<MappedFile>f).flush()

    def close(self) -> None:
        for f in self.files:
            (<MappedFile>f).close()
        self.current = None
        self.cur_base = NULL
        self.cur_first_unit = -1

    def destroy(self) -> None:
        """Delete every file of the queue (topic deletion)."""
        for f in self.files:
            (<MappedFile>f).destroy()
        self.files = []
        self.current = None
        self.cur_first_unit = -1
        self.min_offset = self.max_offset = 0
