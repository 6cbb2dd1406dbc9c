# C-level declarations of the remoting frame codec (PROTOCOL.md §1.1, §1.3). All integers big-endian.
#
# Frame:
#
#   off        size      field
#     0           4      length        = 4 + hdrLen + bodyLen (everything after this field)
#     4           4      hdrLenAndType = serializeType << 24 | hdrLen   (0 JSON, 1 ROCKETMQ)
#     8      hdrLen      header
#   8+hdrLen   rest      body          (length - 4 - hdrLen bytes, may be empty)
#
# ROCKETMQ binary header (serializeType 1):
#
#   off        size      field
#     0           2      code          int16
#     2           1      language      LanguageCode byte
#     3           2      version       int16
#     5           4      opaque        int32
#     9           4      flag          int32
#    13           4      R             remark length (0 = null)
#    17           R      remark        UTF-8
#   17+R          4      E             extFields block length
#   21+R          E      entries       { int16 keyLen, key, int32 valLen, value }*  (UTF-8)

from libc.stdint cimport int16_t, int32_t, uint32_t

cdef extern from "_endian.h" nogil:
    void rmq_put_i16(unsigned char *p, int16_t v)
    void rmq_put_i32(unsigned char *p, int32_t v)
    int16_t rmq_get_i16(const unsigned char *p)
    int32_t rmq_get_i32(const unsigned char *p)

cdef enum:
    FRAME_PREFIX = 8                  # length + hdrLenAndType
    HEADER_LENGTH_MASK = 0xFFFFFF
    SERIALIZE_JSON = 0
    SERIALIZE_ROCKETMQ = 1
    ROCKETMQ_FIXED = 21               # binary header with null remark and no extFields

# Where one complete frame sits in a buffer, relative to the frame's first byte.
cdef struct FrameSpan:
    Py_ssize_t total                  # bytes on the wire, including the length field
    Py_ssize_t header_len
    int serialize_type

# 1 = a complete frame starts at p (span filled), 0 = more bytes needed, -1 = malformed (FrameError set).
cdef int next_frame(const unsigned char *p, Py_ssize_t avail, Py_ssize_t max_frame,
                    FrameSpan *span) except -1


# A malloc'd receive area lent out as memoryviews; counts live exports so the decoder knows when the
# bytes it handed out are gone and the area can be reused instead of replaced.
cdef class _Arena:
    cdef unsigned char *data
    cdef Py_ssize_t size
    cdef Py_ssize_t exports
    cdef bint lend_writable


cdef class FrameDecoder:
    cdef _Arena _arena
    cdef Py_ssize_t _start
    cdef Py_ssize_t _end
    cdef Py_ssize_t _arena_size
    cdef Py_ssize_t _min_room
    cdef readonly Py_ssize_t max_frame
    cdef object _error

    cdef void _relocate(self, Py_ssize_t want) except *
    cdef list _split(self)
