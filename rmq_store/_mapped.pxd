from libc.stdint cimport int64_t

cdef class MappedFile:
    cdef readonly str path
    cdef readonly int64_t file_from_offset
    cdef readonly int64_t file_size
    cdef int fd
    cdef unsigned char *base
    # Bytes written from the file's start; everything past it is zero (or a torn tail to be truncated).
    cdef public int64_t wrote_position
    # Bytes known durable (msync'd) from the file's start.
    cdef public int64_t flushed_position
    cdef readonly int exports
    cdef readonly bint closed
    cdef readonly bint deleted
    cdef bint unmap_pending

    cdef void _unmap(self) noexcept
