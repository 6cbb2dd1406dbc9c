# cython: language_level=3
"""IndexFile: a hash index from message keys to commitlog offsets (PROTOCOL.md §6.4).

Layout of one file (RocketMQ's IndexHeader/IndexFile; defaults 5,000,000 slots, 20,000,000 entries):

    0        40-byte header
               0  int64 beginTimestamp      store time of the first indexed message
               8  int64 endTimestamp        store time of the last indexed message
              16  int64 beginPhyOffset
              24  int64 endPhyOffset
              32  int32 hashSlotCount
              36  int32 indexCount          starts at 1: entry 0 is never used
    40       slot_num × int32 slots         number of the newest entry of the bucket (0 = empty)
    40+4·S   index_num × 20-byte entries
               0  int32 keyHash             abs(String.hashCode("topic#key")), MIN_VALUE → 0
               4  int64 phyOffset
              12  int32 timeDiff            seconds since beginTimestamp (≥ 0)
              16  int32 prevIndex           older entry of the same bucket (0 = end of chain)

Invariants: entries are appended in commitlog order; a chain only points to older entries
(prevIndex < own number); the file is full when indexCount reaches index_num.
"""
from libc.stdint cimport int32_t, int64_t
from rmq_common._record cimport rmq_put_i32, rmq_put_i64, rmq_get_i32, rmq_get_i64
from rmq_store._mapped cimport MappedFile

INDEX_HEADER_SIZE = 40
INDEX_ENTRY_SIZE = 20


def index_file_size(int slot_num, int index_num) -> int:
    return 40 + 4 * slot_num + 20 * index_num


cdef class IndexFile:
    def __init__(self, MappedFile mapped, int32_t slot_num, int32_t index_num, bint fresh):
        if mapped.file_size != index_file_size(slot_num, index_num):
            raise ValueError(f"{mapped.path}: size {mapped.file_size} does not fit {slot_num} slots, {index_num} entries")
        self.mapped = mapped
        self.base = <unsigned char *><size_t>mapped.address
        self.slot_num = slot_num
        self.index_num = index_num
        if fresh:
            self.index_count = 1
            self.hash_slot_count = 0
            self._write_header()
        else:
            self.begin_timestamp = rmq_get_i64(self.base)
            self.end_timestamp = rmq_get_i64(self.base + 8)
            self.begin_phy_offset = rmq_get_i64(self.base + 16)
            self.end_phy_offset = rmq_get_i64(self.base + 24)
            self.hash_slot_count = rmq_get_i32(self.base + 32)
            self.index_count = rmq_get_i32(self.base + 36)
            if self.index_count < 1 or self.index_count > index_num:
                from rmq_store._mapped import CorruptFileError
                raise CorruptFileError(f"{mapped.path}: index count {self.index_count} outside [1, {index_num}]")
        mapped.wrote_position = mapped.file_size

    cdef void _write_header(self) noexcept:
        rmq_put_i64(self.base, self.begin_timestamp)
        rmq_put_i64(self.base + 8, self.end_timestamp)
        rmq_put_i64(self.base + 16, self.begin_phy_offset)
        rmq_put_i64(self.base + 24, self.end_phy_offset)
        rmq_put_i32(self.base + 32, self.hash_slot_count)
        rmq_put_i32(self.base + 36, self.index_count)

    @property
    def is_full(self) -> bool:
        return self.index_count >= self.index_num

    cdef bint put_key(self, int32_t key_hash, int64_t phy, int64_t store_ts) noexcept:
        """Append one entry; False when the file is full (the caller rolls to a new file).

        The header is written by the caller once per batch (_write_header): until then a crash leaves
        entries past the header's count, which reload ignores and recovery re-indexes."""
        cdef unsigned char *slot
        cdef unsigned char *entry
        cdef int32_t prev
        cdef int64_t diff
        if self.index_count >= self.index_num:
            return False
        slot = self.base + 40 + 4 * (key_hash % self.slot_num)
        prev = rmq_get_i32(slot)
        if prev <= 0 or prev > self.index_count:
            prev = 0
        if self.index_count == 1:
            self.begin_timestamp = store_ts
            self.begin_phy_offset = phy
        diff = (store_ts - self.begin_timestamp) // 1000
        if diff < 0:
            diff = 0
        elif diff > 0x7FFFFFFF:
            diff = 0x7FFFFFFF
        entry = self.base + 40 + 4 * <int64_t>self.slot_num + 20 * <int64_t>self.index_count
        rmq_put_i32(entry, key_hash)
        rmq_put_i64(entry + 4, phy)
        rmq_put_i32(entry + 12, <int32_t>diff)
        rmq_put_i32(entry + 16, prev)
        rmq_put_i32(slot, self.index_count)
        self.index_count += 1
        self.hash_slot_count += 1
        self.end_timestamp = store_ts
        self.end_phy_offset = phy
        return True

    def put(self, int32_t key_hash, int64_t phy, int64_t store_ts) -> bool:
        """Python entry to put_key (tests, tools); writes the header too."""
        cdef bint ok = self.put_key(key_hash, phy, store_ts)
        self._write_header()
        return ok

    def time_matched(self, int64_t begin, int64_t end) -> bool:
        """Whether the file's time range overlaps [begin, end]."""
        if self.index_count <= 1:
            return False
        return not (end < self.begin_timestamp or begin > self.end_timestamp)

    def select(self, int32_t key_hash, int max_num, int64_t begin, int64_t end) -> list:
        """Commitlog offsets of entries with ``key_hash`` stored in [begin, end], newest first."""
        cdef const unsigned char *entry
        cdef int32_t idx, prev, diff
        cdef int64_t t
        cdef int guard = 0
        out = []
        if key_hash < 0 or max_num <= 0:
            return out
        idx = rmq_get_i32(self.base + 40 + 4 * (key_hash % self.slot_num))
        while 0 < idx < self.index_count and len(out) < max_num and guard < self.index_num:
            guard += 1
            entry = self.base + 40 + 4 * <int64_t>self.slot_num + 20 * <int64_t>idx
            diff = rmq_get_i32(entry + 12)
            prev = rmq_get_i32(entry + 16)
            if diff < 0:
                break
            t = self.begin_timestamp + <int64_t>diff * 1000
            if rmq_get_i32(entry) == key_hash and begin <= t <= end:
                out.append(rmq_get_i64(entry + 4))
            if prev <= 0 or prev >= idx:
                break
            idx = prev
        return out
