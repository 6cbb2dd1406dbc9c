# cython: language_level=3
"""Hot path of the remoting layer: frame splitting, frame encoding and the ROCKETMQ binary header.

Every message of every benchmark crosses these functions, so they work on raw buffers: frames are
split in place and handed out as memoryviews into the receive area (no copy of header or body), an
encoded frame is one allocation, and the binary header (PROTOCOL.md §1.3) is read and written with
pointer arithmetic. JSON headers stay in ``command.py`` (orjson is already C).

Layouts are drawn in ``_frame.pxd``.
"""
from cpython.buffer cimport (PyBUF_SIMPLE, PyBuffer_FillInfo, PyBuffer_Release,
                             PyObject_GetBuffer)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_Next
from cpython.memoryview cimport PyMemoryView_FromObject
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8String, PyUnicode_CheckExact, PyUnicode_DecodeUTF8
from libc.stdint cimport int16_t, int32_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove

from rmq_remoting.errors import FrameError

DEFAULT_MAX_FRAME = 16 * 1024 * 1024   # com.rocketmq.remoting.frameMaxLength, counted like Netty: whole frame
MAX_HEADER_LENGTH = HEADER_LENGTH_MASK
SERIALIZE_TYPE_JSON = SERIALIZE_JSON
SERIALIZE_TYPE_ROCKETMQ = SERIALIZE_ROCKETMQ

DEF_ARENA_SIZE = 256 * 1024
DEF_MIN_ROOM = 16 * 1024


cdef int next_frame(const unsigned char *p, Py_ssize_t avail, Py_ssize_t max_frame,
                    FrameSpan *span) except -1:
    """Validate the frame starting at ``p`` as far as ``avail`` bytes allow.

    Errors are raised as soon as the offending word has arrived, so a peer announcing a 2 GiB frame
    is dropped after 4 bytes instead of being buffered.
    """
    cdef int32_t length
    cdef uint32_t word
    cdef Py_ssize_t header_len
    cdef int serialize_type
    if avail < 4:
        return 0
    length = rmq_get_i32(p)
    if length < 4:
        raise FrameError(f"frame length {length} is smaller than the header-length word")
    if <Py_ssize_t>length + 4 > max_frame:
        raise FrameError(f"frame of {<Py_ssize_t>length + 4} bytes exceeds the limit of {max_frame} bytes")
    if avail < FRAME_PREFIX:
        return 0
    word = <uint32_t>rmq_get_i32(p + 4)
    serialize_type = <int>(word >> 24)
    header_len = <Py_ssize_t>(word & HEADER_LENGTH_MASK)
    if serialize_type != SERIALIZE_JSON and serialize_type != SERIALIZE_ROCKETMQ:
        raise FrameError(f"unknown serialize type {serialize_type}")
    if header_len > <Py_ssize_t>length - 4:
        raise FrameError(f"header length {header_len} exceeds the frame ({length - 4} bytes after the length word)")
    if avail < <Py_ssize_t>length + 4:
        return 0
    span.total = <Py_ssize_t>length + 4
    span.header_len = header_len
    span.serialize_type = serialize_type
    return 1


def split_frames(buf, Py_ssize_t offset=0, Py_ssize_t max_frame=DEFAULT_MAX_FRAME):
    """Split every complete frame in ``buf[offset:]``.

    Returns ``(frames, consumed)``: ``frames`` is a list of ``(header, serialize_type, body)`` where
    header and body are memoryviews into ``buf`` (zero-copy; keep ``buf`` unchanged while they live),
    and ``consumed`` is how many bytes after ``offset`` those frames occupy. A partial frame at the end
    is left for the caller to complete. Raises FrameError on a malformed frame.
    """
    cdef Py_buffer view
    cdef FrameSpan span
    cdef Py_ssize_t pos = offset
    cdef list frames = []
    cdef object mv = None
    cdef Py_ssize_t h0
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if offset < 0 or offset > view.len:
            raise ValueError(f"offset {offset} outside a buffer of {view.len} bytes")
        while next_frame(<const unsigned char *>view.buf + pos, view.len - pos, max_frame, &span) == 1:
            if mv is None:
                mv = PyMemoryView_FromObject(buf)
            h0 = pos + FRAME_PREFIX
            frames.append((mv[h0:h0 + span.header_len], span.serialize_type,
                           mv[h0 + span.header_len:pos + span.total]))
            pos += span.total
    finally:
        PyBuffer_Release(&view)
    return frames, pos - offset


cdef class _Arena:
    """Receive memory for FrameDecoder; exports read-only views except while lending a recv buffer."""

    def __cinit__(self, Py_ssize_t size):
        self.data = <unsigned char *>malloc(size if size > 0 else 1)
        if self.data == NULL:
            raise MemoryError()
        self.size = size
        self.exports = 0
        self.lend_writable = False

    def __dealloc__(self):
        free(self.data)

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, self.data, self.size, 0 if self.lend_writable else 1, flags)
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1


cdef class FrameDecoder:
    """Incremental frame splitter for one connection.

    Bytes are received straight into an arena (``recv_buffer`` → ``socket.recv_into`` → ``advance``)
    and complete frames come back as read-only memoryviews into it, so a body travels from the kernel
    to the handler without a copy. An arena region is never rewritten while a view of it is alive: when
    handlers still hold views the decoder moves the partial tail to a fresh arena instead of compacting
    in place. Retaining a body therefore retains its arena; copy it (``bytes(body)``) to keep it long.
    """

    def __init__(self, Py_ssize_t max_frame=DEFAULT_MAX_FRAME, Py_ssize_t arena_size=DEF_ARENA_SIZE,
                 Py_ssize_t min_room=DEF_MIN_ROOM):
        if max_frame < FRAME_PREFIX:
            raise ValueError(f"max_frame must be at least {FRAME_PREFIX}")
        if arena_size < 64 or min_room < 1:
            raise ValueError("arena_size must be >= 64 and min_room >= 1")
        self.max_frame = max_frame
        self._arena_size = arena_size
        self._min_room = min_room if min_room < arena_size else arena_size
        self._arena = _Arena(arena_size)
        self._start = 0
        self._end = 0
        self._error = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames (a partial frame)."""
        return self._end - self._start

    cdef void _relocate(self, Py_ssize_t want) except *:
        """Make room for ``want`` bytes from the start of the pending data."""
        cdef Py_ssize_t pending = self._end - self._start
        cdef _Arena arena = self._arena
        cdef _Arena fresh
        if (arena.exports == 0 and want <= arena.size
                and (arena.size <= self._arena_size or want > self._arena_size)):
            if self._start:
                memmove(arena.data, arena.data + self._start, pending)
        else:
            fresh = _Arena(want if want > self._arena_size else self._arena_size)
            memcpy(fresh.data, arena.data + self._start, pending)
            self._arena = fresh
        self._start = 0
        self._end = pending

    def recv_buffer(self) -> memoryview:
        """A writable view of free arena space to receive into; pass what was received to ``advance``.

        Drop the view before calling ``advance`` again so the arena can be reused.
        """
        cdef Py_ssize_t pending, want
        cdef FrameSpan span
        cdef _Arena arena
        if self._error is not None:
            raise self._error
        pending = self._end - self._start
        want = pending + self._min_room
        if pending >= 4:
            # Validates the announced length; room for the whole frame avoids repeated relocation.
            next_frame(self._arena.data + self._start, 4, self.max_frame, &span)
            span.total = <Py_ssize_t>rmq_get_i32(self._arena.data + self._start) + 4
            if span.total > want:
                want = span.total
        if pending == 0 and self._arena.exports == 0 and self._arena.size <= self._arena_size:
            self._start = self._end = 0
        elif self._start + want > self._arena.size or (pending == 0 and self._arena.size > self._arena_size):
            self._relocate(want)
        arena = self._arena
        arena.lend_writable = True
        try:
            mv = PyMemoryView_FromObject(arena)
        finally:
            arena.lend_writable = False
        return mv[self._end:]

    def advance(self, Py_ssize_t n) -> list:
        """Account ``n`` bytes received into the last ``recv_buffer``; return the completed frames."""
        if self._error is not None:
            raise self._error
        if n < 0 or self._end + n > self._arena.size:
            raise ValueError(f"advance({n}) beyond the receive buffer")
        self._end += n
        return self._split()

    def feed(self, data) -> list:
        """Copy ``data`` in (for streams without ``recv_into``) and return the completed frames."""
        cdef Py_buffer view
        cdef Py_ssize_t pending
        if self._error is not None:
            raise self._error
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            pending = self._end - self._start
            if self._end + view.len > self._arena.size:
                self._relocate(pending + view.len)
            memcpy(self._arena.data + self._end, view.buf, view.len)
            self._end += view.len
        finally:
            PyBuffer_Release(&view)
        return self._split()

    cdef list _split(self):
        cdef list frames = []
        cdef FrameSpan span
        cdef object mv = None
        cdef Py_ssize_t pos = self._start
        cdef Py_ssize_t h0
        cdef int rc
        while True:
            try:
                rc = next_frame(self._arena.data + pos, self._end - pos, self.max_frame, &span)
            except FrameError as exc:
                # Frames before the bad one are still served (as Netty would); the error follows.
                if not frames:
                    raise
                self._error = exc
                break
            if rc == 0:
                break
            if mv is None:
                mv = PyMemoryView_FromObject(self._arena)
            h0 = pos + FRAME_PREFIX
            frames.append((mv[h0:h0 + span.header_len], span.serialize_type,
                           mv[h0 + span.header_len:pos + span.total]))
            pos += span.total
        self._start = pos
        return frames


cdef inline void _put_prefix(unsigned char *d, Py_ssize_t header_len, Py_ssize_t body_len,
                             int serialize_type) noexcept:
    rmq_put_i32(d, <int32_t>(4 + header_len + body_len))
    rmq_put_i32(d + 4, <int32_t>((<uint32_t>serialize_type << 24) | <uint32_t>header_len))


cdef int _check_sizes(Py_ssize_t header_len, Py_ssize_t body_len, int serialize_type,
                      Py_ssize_t max_frame) except -1:
    if serialize_type < 0 or serialize_type > 255:
        raise FrameError(f"serialize type {serialize_type} does not fit one byte")
    if header_len > HEADER_LENGTH_MASK:
        raise FrameError(f"header of {header_len} bytes exceeds the 24-bit header length")
    if FRAME_PREFIX + header_len + body_len > max_frame:
        raise FrameError(f"frame of {FRAME_PREFIX + header_len + body_len} bytes exceeds the limit of {max_frame} bytes")
    return 0


def encode_frame(header, body=None, int serialize_type=SERIALIZE_JSON,
                 Py_ssize_t max_frame=DEFAULT_MAX_FRAME) -> bytes:
    """One frame as a single bytes object: length, header-length word, header, body."""
    cdef Py_buffer hv, bv
    cdef bint have_body = body is not None
    cdef bytes out
    cdef unsigned char *d
    PyObject_GetBuffer(header, &hv, PyBUF_SIMPLE)
    try:
        bv.len = 0
        if have_body:
            PyObject_GetBuffer(body, &bv, PyBUF_SIMPLE)
        try:
            _check_sizes(hv.len, bv.len, serialize_type, max_frame)
            out = PyBytes_FromStringAndSize(NULL, FRAME_PREFIX + hv.len + bv.len)
            d = <unsigned char *>PyBytes_AS_STRING(out)
            _put_prefix(d, hv.len, bv.len, serialize_type)
            memcpy(d + FRAME_PREFIX, hv.buf, hv.len)
            if bv.len:
                memcpy(d + FRAME_PREFIX + hv.len, bv.buf, bv.len)
        finally:
            if have_body:
                PyBuffer_Release(&bv)
    finally:
        PyBuffer_Release(&hv)
    return out


def encode_frame_parts(header, body=None, int serialize_type=SERIALIZE_JSON,
                       Py_ssize_t max_frame=DEFAULT_MAX_FRAME) -> list:
    """The frame as buffers for a gathered write: ``[prefix + header, body]`` (body not copied)."""
    cdef Py_buffer hv
    cdef Py_ssize_t body_len = len(body) if body is not None else 0
    cdef bytes head
    cdef unsigned char *d
    PyObject_GetBuffer(header, &hv, PyBUF_SIMPLE)
    try:
        _check_sizes(hv.len, body_len, serialize_type, max_frame)
        head = PyBytes_FromStringAndSize(NULL, FRAME_PREFIX + hv.len)
        d = <unsigned char *>PyBytes_AS_STRING(head)
        _put_prefix(d, hv.len, body_len, serialize_type)
        memcpy(d + FRAME_PREFIX, hv.buf, hv.len)
    finally:
        PyBuffer_Release(&hv)
    if body_len:
        return [head, body]
    return [head]


cdef inline bytes _utf8(object s):
    if type(s) is not str:
        raise TypeError(f"expected str, got {type(s).__name__}")
    return PyUnicode_AsUTF8String(s)


def encode_rocketmq_header(long long code, long long language, long long version, long long opaque,
                           long long flag, remark, ext_fields) -> bytes:
    """RocketMQSerializable.rocketMQProtocolEncode: the binary header (layout in _frame.pxd).

    ``remark`` None or "" is written as length 0; ``ext_fields`` entries whose key or value is None
    are skipped, as Java's mapSerialize does. Keys and values must already be str.
    """
    cdef bytes remark_b = b"" if remark is None else _utf8(remark)
    cdef list pairs = []
    cdef Py_ssize_t ext_len = 0
    cdef Py_ssize_t i, n
    cdef bytes k, v, out
    cdef unsigned char *d
    if code < -32768 or code > 32767:
        raise FrameError(f"code {code} does not fit the ROCKETMQ header's int16 (use JSON)")
    if version < -32768 or version > 32767:
        raise FrameError(f"version {version} does not fit the ROCKETMQ header's int16")
    if language < 0 or language > 255:
        raise FrameError(f"language code {language} does not fit one byte")
    if opaque < -2147483648 or opaque > 2147483647 or flag < -2147483648 or flag > 2147483647:
        raise FrameError(f"opaque {opaque} / flag {flag} does not fit int32")
    if ext_fields:
        for key, value in ext_fields.items():
            if key is None or value is None:
                continue
            k = _utf8(key)
            v = _utf8(value)
            if len(k) > 32767:
                raise FrameError(f"extFields key of {len(k)} bytes does not fit the int16 key length")
            pairs.append(k)
            pairs.append(v)
            ext_len += 2 + len(k) + 4 + len(v)
    if ROCKETMQ_FIXED + len(remark_b) + ext_len > HEADER_LENGTH_MASK:
        raise FrameError("ROCKETMQ header exceeds the 24-bit header length")
    out = PyBytes_FromStringAndSize(NULL, ROCKETMQ_FIXED + len(remark_b) + ext_len)
    d = <unsigned char *>PyBytes_AS_STRING(out)
    rmq_put_i16(d, <int16_t>code)
    d[2] = <unsigned char>language
    rmq_put_i16(d + 3, <int16_t>version)
    rmq_put_i32(d + 5, <int32_t>opaque)
    rmq_put_i32(d + 9, <int32_t>flag)
    rmq_put_i32(d + 13, <int32_t>len(remark_b))
    d += 17
    memcpy(d, PyBytes_AS_STRING(remark_b), len(remark_b))
    d += len(remark_b)
    rmq_put_i32(d, <int32_t>ext_len)
    d += 4
    n = len(pairs)
    i = 0
    while i < n:
        k = pairs[i]
        v = pairs[i + 1]
        rmq_put_i16(d, <int16_t>len(k))
        memcpy(d + 2, PyBytes_AS_STRING(k), len(k))
        d += 2 + len(k)
        rmq_put_i32(d, <int32_t>len(v))
        memcpy(d + 4, PyBytes_AS_STRING(v), len(v))
        d += 4 + len(v)
        i += 2
    return out


cdef inline str _decode_utf8(const unsigned char *p, Py_ssize_t n):
    # Java's new String(bytes, UTF_8) replaces malformed input; so do we.
    return PyUnicode_DecodeUTF8(<const char *>p, n, "replace")


def decode_rocketmq_header(header) -> tuple:
    """RocketMQSerializable.rocketMQProtocolDecode.

    Returns ``(code, language, version, opaque, flag, remark, ext_fields)`` with remark None when
    its length is 0 and ext_fields a dict[str, str]. Raises FrameError when a length runs past the header.
    """
    cdef Py_buffer view
    cdef const unsigned char *p
    cdef Py_ssize_t n, pos, end
    cdef int32_t remark_len, ext_len, val_len
    cdef int16_t key_len
    cdef object remark = None
    cdef dict ext = {}
    cdef tuple result
    PyObject_GetBuffer(header, &view, PyBUF_SIMPLE)
    try:
        p = <const unsigned char *>view.buf
        n = view.len
        if n < ROCKETMQ_FIXED:
            raise FrameError(f"ROCKETMQ header of {n} bytes is shorter than the fixed {ROCKETMQ_FIXED}")
        remark_len = rmq_get_i32(p + 13)
        if remark_len < 0 or remark_len > n - ROCKETMQ_FIXED:
            raise FrameError(f"ROCKETMQ remark length {remark_len} runs past the header")
        if remark_len:
            remark = _decode_utf8(p + 17, remark_len)
        pos = 17 + remark_len
        ext_len = rmq_get_i32(p + pos)
        pos += 4
        if ext_len < 0 or ext_len > n - pos:
            raise FrameError(f"ROCKETMQ extFields length {ext_len} runs past the header")
        end = pos + ext_len
        while pos < end:
            if end - pos < 2:
                raise FrameError("ROCKETMQ extFields entry truncated (key length)")
            key_len = rmq_get_i16(p + pos)
            pos += 2
            if key_len < 0 or key_len > end - pos - 4:
                raise FrameError(f"ROCKETMQ extFields key length {key_len} runs past the block")
            key = _decode_utf8(p + pos, key_len)
            pos += key_len
            val_len = rmq_get_i32(p + pos)
            pos += 4
            if val_len < 0 or val_len > end - pos:
                raise FrameError(f"ROCKETMQ extFields value length {val_len} runs past the block")
            ext[key] = _decode_utf8(p + pos, val_len)
            pos += val_len
        result = (<int>rmq_get_i16(p), <int>p[2], <int>rmq_get_i16(p + 3), <int>rmq_get_i32(p + 5),
                  <int>rmq_get_i32(p + 9), remark, ext)
    finally:
        PyBuffer_Release(&view)
    return result


def is_str_dict(d) -> bool:
    """True when ``d`` is a dict whose keys and values are all str (extFields with nothing to coerce)."""
    cdef Py_ssize_t pos = 0
    cdef PyObject *key
    cdef PyObject *value
    if type(d) is not dict:
        return False
    while PyDict_Next(d, &pos, &key, &value):
        if not PyUnicode_CheckExact(<object>key) or not PyUnicode_CheckExact(<object>value):
            return False
    return True
