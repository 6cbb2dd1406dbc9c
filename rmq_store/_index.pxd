from libc.stdint cimport int32_t, int64_t
from rmq_store._mapped cimport MappedFile

cdef class IndexFile:
    cdef readonly MappedFile mapped
    cdef unsigned char *base
    cdef readonly int32_t slot_num
    cdef readonly int32_t index_num
    cdef readonly int64_t begin_timestamp
    cdef readonly int64_t end_timestamp
    cdef readonly int64_t begin_phy_offset
    cdef readonly int64_t end_phy_offset
    cdef readonly int32_t hash_slot_count
    cdef readonly int32_t index_count

    cdef bint put_key(self, int32_t key_hash, int64_t phy, int64_t store_ts) noexcept
    cdef void _write_header(self) noexcept
