from libc.stdint cimport int32_t, int64_t
from rmq_store._mapped cimport MappedFile

cdef class ConsumeQueue:
    cdef readonly str topic
    cdef readonly int queue_id
    cdef readonly str directory
    cdef readonly int64_t units_per_file
    cdef readonly int64_t file_size
    cdef public list files
    cdef readonly int64_t min_offset
    cdef readonly int64_t max_offset
    cdef readonly int64_t max_phy_end
    cdef MappedFile current
    cdef unsigned char *cur_base
    cdef int64_t cur_first_unit

    cdef int put_unit(self, int64_t phy, int32_t size, int64_t tags_code, int64_t queue_offset) except -1
    cdef const unsigned char *unit_ptr(self, int64_t offset) noexcept
    cdef int _select_current(self, int64_t offset) except -1
    cdef int _find_end(self) except -1
