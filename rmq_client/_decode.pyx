# cython: language_level=3
"""Client-side decoding of PULL_MESSAGE bodies: stored records concatenated (PROTOCOL.md §4.1, §5.2).

One C pass over the body per call, through rmq_common._record's ``parse_record_any`` (v1 and v2 records); nothing is parsed twice.

* ``decode_pull_body`` → ``list[PulledMessage]``: ``MessageExt`` objects whose slots are filled straight from C,
  their property string kept as raw bytes and decoded into the ``properties`` dict on first access.
* ``decode_pull_batch`` → ``PullBatch``: the bodies as a list, everything else (offsets, timestamps, topic,
  properties, whole messages) read from the retained buffer only when asked, numeric fields as numpy columns.
* ``decode_pull_bodies`` → ``list[bytes]``: the bodies alone.

All three decompress compressed bodies per SYSFLAG (rmq_client.compression; the compression bits are then
cleared from the message's ``sys_flag`` so it describes the body it carries), can re-filter by exact TAGS as
Java's client does after a tag-hash match on the broker, and raise ``RecordError`` (a ValueError) naming the
record's index and byte offset for anything malformed: truncation, bad sizes, a bad magic code, a blank
marker, a CRC mismatch (when asked to check) or a body that fails to decompress. Version-2 records (2-byte
topic length, written by RocketMQ 5.x for topics over 127 bytes) are read as well.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject, PyTypeObject
from cpython.ref cimport Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_GET_ITEM
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int16_t, int32_t, int64_t, uint8_t
from libc.stdio cimport snprintf
from libc.string cimport memchr, memcmp, memcpy

from rmq_common._record cimport (
    RecordView, parse_record_any, masked_crc32, rmq_get_i16, rmq_get_i32, rmq_get_i64,
    MAGIC_V1, MAGIC_V2, HOST_V4_LEN, HOST_V6_LEN, SYSFLAG_BORNHOST_V6, SYSFLAG_STOREHOST_V6,
    RECORD_OK, RECORD_BLANK, RECORD_END, RECORD_BAD_MAGIC, RECORD_BAD_SIZE, RECORD_TRUNCATED,
)

import ipaddress

import numpy as np
cimport numpy as cnp

cnp.import_array()

from rmq_common._record import RecordError
from rmq_common.message import MessageExt
from rmq_client.compression import DEFAULT_MAX_DECOMPRESSED, decompress as _decompress

cdef extern from "structmember.h":
    ctypedef struct PyMemberDef:
        const char *name
        int type
        Py_ssize_t offset
        int flags
    int T_OBJECT_EX
    int READONLY

cdef extern from "Python.h":
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    object PyType_GenericAlloc(PyTypeObject *t, Py_ssize_t nitems)
    void PyObject_GC_UnTrack(void *op)
    void PyObject_GC_Track(void *op)
    int PyObject_GC_IsTracked(object op)

cdef enum:
    COMPRESSED = 0x1
    COMPRESSION_BITS = 0x701
    HOST_CACHE = 64
    TOPIC_CACHE = 16
    MAX_TOPIC_BYTES = 32767

# MessageExt's fields in declaration order, then PulledMessage's own slot.
FIELD_NAMES = ("store_size", "magic", "body_crc", "queue_id", "flag", "queue_offset", "commit_log_offset",
               "sys_flag", "born_timestamp", "born_host", "store_timestamp", "store_host", "reconsume_times",
               "prepared_transaction_offset", "body", "topic", "properties")
cdef enum:
    F_STORE_SIZE, F_MAGIC, F_BODY_CRC, F_QUEUE_ID, F_FLAG, F_QUEUE_OFFSET, F_COMMIT_LOG_OFFSET, F_SYS_FLAG,
    F_BORN_TS, F_BORN_HOST, F_STORE_TS, F_STORE_HOST, F_RECONSUME, F_PREPARED, F_BODY, F_TOPIC, F_PROPERTIES,
    F_RAW, N_SLOTS

cdef Py_ssize_t _OFF[N_SLOTS]
cdef bint _FAST = False
cdef list _DESCS = []           # slot descriptors, for the generic path

_RC_TEXT = {
    RECORD_END: "no record (zero size)",
    RECORD_BLANK: "blank file-tail marker",
    RECORD_BAD_MAGIC: "bad magic code",
    RECORD_BAD_SIZE: "inconsistent sizes",
    RECORD_TRUNCATED: "record extends past the end of the data",
}


# ---------------------------------------------------------------------------------------------
# Record parsing (v1 and v2, by rmq_common._record.parse_record_any)
# ---------------------------------------------------------------------------------------------

cdef int _next_record(const unsigned char *base, Py_ssize_t n, Py_ssize_t pos, Py_ssize_t idx,
                      bint check_crc, RecordView *rv) except -1:
    """Parse the record at ``pos`` or raise RecordError naming it."""
    cdef int rc = parse_record_any(base + pos, n - pos, rv)
    if rc != RECORD_OK:
        raise RecordError(f"record {idx} at offset {pos}: {_RC_TEXT.get(rc, rc)}")
    if check_crc and masked_crc32(base + pos + rv.body_off, rv.body_len) != rv.body_crc:
        raise RecordError(f"record {idx} at offset {pos}: body CRC mismatch")
    return 0


# ---------------------------------------------------------------------------------------------
# Field values: cached hosts and topics, bodies, properties
# ---------------------------------------------------------------------------------------------

cdef struct HostEntry:
    unsigned char raw[20]
    int len
    PyObject *obj

cdef HostEntry _hosts[HOST_CACHE]
cdef int _host_next = 0
cdef int _host_last = 0


cdef object _make_host(const unsigned char *p, int n):
    cdef char text[24]
    cdef int port = rmq_get_i32(p + n - 4)
    cdef int k
    if n == HOST_V4_LEN:
        k = snprintf(text, sizeof(text), "%u.%u.%u.%u", p[0], p[1], p[2], p[3])
        return (PyUnicode_DecodeUTF8(text, k, NULL), port)
    return (str(ipaddress.ip_address(PyBytes_FromStringAndSize(<const char *>p, n - 4))), port)


cdef object _host(const unsigned char *p, int n):
    """(address, port) of a stored host field, from a small cache: a pull's records share a few hosts."""
    global _host_next, _host_last
    cdef HostEntry *e = &_hosts[_host_last]
    cdef int i
    if e.len == n and memcmp(e.raw, p, n) == 0:
        return <object>e.obj
    for i in range(HOST_CACHE):
        e = &_hosts[i]
        if e.len == n and memcmp(e.raw, p, n) == 0:
            _host_last = i
            return <object>e.obj
    value = _make_host(p, n)
    i = _host_next
    _host_next = (i + 1) % HOST_CACHE
    e = &_hosts[i]
    Py_INCREF(value)
    Py_XDECREF(e.obj)
    e.obj = <PyObject *>value
    memcpy(e.raw, p, n)
    e.len = n
    _host_last = i
    return value


cdef list _topic_raw = [None] * TOPIC_CACHE
cdef list _topic_str = [None] * TOPIC_CACHE
cdef int _topic_next = 0
cdef int _topic_last = 0


cdef object _topic(const unsigned char *p, Py_ssize_t n):
    """The topic as str (UTF-8, malformed bytes replaced, as decode_record does), from a small cache."""
    global _topic_next, _topic_last
    cdef object raw = <object>PyList_GET_ITEM(_topic_raw, _topic_last)
    cdef int i
    if raw is not None and PyBytes_GET_SIZE(raw) == n and memcmp(PyBytes_AS_STRING(raw), p, n) == 0:
        return <object>PyList_GET_ITEM(_topic_str, _topic_last)
    for i in range(TOPIC_CACHE):
        raw = <object>PyList_GET_ITEM(_topic_raw, i)
        if raw is not None and PyBytes_GET_SIZE(raw) == n and memcmp(PyBytes_AS_STRING(raw), p, n) == 0:
            _topic_last = i
            return <object>PyList_GET_ITEM(_topic_str, i)
    value = PyUnicode_DecodeUTF8(<const char *>p, n, "replace")
    i = _topic_next
    _topic_next = (i + 1) % TOPIC_CACHE
    _topic_raw[i] = PyBytes_FromStringAndSize(<const char *>p, n)
    _topic_str[i] = value
    _topic_last = i
    return value


cdef object _body(const unsigned char *rec, const RecordView *rv, bint decompress, Py_ssize_t max_size,
                  Py_ssize_t idx, Py_ssize_t pos):
    raw = PyBytes_FromStringAndSize(<const char *>rec + rv.body_off, rv.body_len)
    if decompress and rv.sys_flag & COMPRESSED:
        try:
            return _decompress(raw, rv.sys_flag, max_size)
        except ValueError as exc:
            raise RecordError(f"record {idx} at offset {pos}: {exc}") from exc
    return raw


# Property names worth sharing one str object across messages.
_KNOWN_NAMES = ("UNIQ_KEY", "KEYS", "TAGS", "WAIT", "CLUSTER", "DELAY", "MIN_OFFSET", "MAX_OFFSET",
                "REAL_TOPIC", "REAL_QID", "RETRY_TOPIC", "TRAN_MSG", "PGROUP", "ORIGIN_MESSAGE_ID",
                "RECONSUME_TIME", "MAX_RECONSUME_TIMES", "CONSUME_START_TIME", "TRACE_ON", "MSG_REGION")
cdef tuple _known_str = tuple(_KNOWN_NAMES)
cdef tuple _known_raw = tuple(s.encode() for s in _KNOWN_NAMES)


cdef inline object _prop_name(const unsigned char *p, Py_ssize_t n):
    cdef Py_ssize_t i
    cdef object raw
    for i in range(len(_known_raw)):
        raw = <object>PyTuple_GET_ITEM(_known_raw, i)
        if PyBytes_GET_SIZE(raw) == n and memcmp(PyBytes_AS_STRING(raw), p, n) == 0:
            return <object>PyTuple_GET_ITEM(_known_str, i)
    return PyUnicode_DecodeUTF8(<const char *>p, n, "replace")


cdef dict _decode_props(const unsigned char *p, Py_ssize_t n):
    """rmq_common.properties.decode_properties over raw bytes: split on U+0002, the first U+0001 of a piece
    splits name from value, pieces with an empty name or value are skipped, a later duplicate wins, malformed
    UTF-8 becomes U+FFFD. (0x01 and 0x02 never occur inside a multi-byte UTF-8 sequence, so splitting the bytes
    and decoding each piece gives what decoding first and splitting the text gives.)"""
    cdef dict d = {}
    cdef Py_ssize_t start = 0, end, sep
    cdef const unsigned char *hit
    while start < n:
        hit = <const unsigned char *>memchr(p + start, 2, n - start)
        end = hit - p if hit != NULL else n
        hit = <const unsigned char *>memchr(p + start, 1, end - start)
        if hit != NULL:
            sep = hit - p
            if sep > start and sep < end - 1:
                d[_prop_name(p + start, sep - start)] = PyUnicode_DecodeUTF8(
                    <const char *>p + sep + 1, end - sep - 1, "replace")
        start = end + 1
    return d


cdef Py_ssize_t _find_prop(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t name_len,
                           Py_ssize_t *value_len) noexcept nogil:
    """Offset of the value of property ``name`` as decode_props would keep it (the last valid pair), or -1."""
    cdef Py_ssize_t start = 0, end, sep, found = -1
    cdef const unsigned char *hit
    while start < n:
        hit = <const unsigned char *>memchr(p + start, 2, n - start)
        end = hit - p if hit != NULL else n
        if end - start > name_len + 1 and p[start + name_len] == 1 and memcmp(p + start, name, name_len) == 0:
            sep = start + name_len
            found = sep + 1
            value_len[0] = end - sep - 1
        start = end + 1
    return found


cdef object _prop_value(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t name_len):
    cdef Py_ssize_t vlen = 0
    cdef Py_ssize_t off = _find_prop(p, n, name, name_len, &vlen)
    if off < 0:
        return None
    return PyUnicode_DecodeUTF8(<const char *>p + off, vlen, "replace")


cdef tuple _tags_filter(object tags):
    """None (no filter) or a tuple of UTF-8 tag values; an empty collection means no filter, as in Java."""
    if tags is None:
        return None
    if isinstance(tags, (str, bytes)):
        tags = (tags,)
    out = tuple(t.encode("utf-8") if isinstance(t, str) else bytes(t) for t in tags)
    return out if out else None


cdef bint _tags_match(const unsigned char *props, Py_ssize_t n, tuple tags) noexcept:
    cdef Py_ssize_t vlen = 0, i
    cdef Py_ssize_t off = _find_prop(props, n, "TAGS", 4, &vlen)
    cdef object t
    if off < 0:
        return False
    for i in range(len(tags)):
        t = <object>PyTuple_GET_ITEM(tags, i)
        if PyBytes_GET_SIZE(t) == vlen and memcmp(PyBytes_AS_STRING(t), props + off, vlen) == 0:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# PulledMessage: a MessageExt with its properties decoded on first access
# ---------------------------------------------------------------------------------------------

cdef inline PyObject **_slot(object obj, int i) noexcept:
    return <PyObject **>((<char *><PyObject *>obj) + _OFF[i])


cdef inline int _put(object obj, int i, object value) except -1:
    cdef PyObject **s
    cdef PyObject *old
    if _FAST:
        s = _slot(obj, i)
        old = s[0]
        Py_INCREF(value)
        s[0] = <PyObject *>value
        Py_XDECREF(old)
    else:
        (<object>PyList_GET_ITEM(_DESCS, i)).__set__(obj, value)
    return 0


cdef object _get(object obj, int i):
    """The value in slot i, or None when unset."""
    cdef PyObject *v
    if _FAST:
        v = _slot(obj, i)[0]
        return <object>v if v != NULL else None
    try:
        return (<object>PyList_GET_ITEM(_DESCS, i)).__get__(obj, type(obj))
    except AttributeError:
        return None


cdef object _lazy_properties(object msg):
    raw = _get(msg, F_RAW)
    if raw is not None:
        d = _decode_props(<const unsigned char *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw))
        _put(msg, F_PROPERTIES, d)
        _put(msg, F_RAW, None)
        return d
    d = _get(msg, F_PROPERTIES)
    if d is None:
        raise AttributeError("properties")
    return d


cdef object _raw_lookup(object msg, const char *name, Py_ssize_t name_len, str key):
    """One property's value: scanned from the raw string while it is undecoded, else from the dict."""
    raw = _get(msg, F_RAW)
    if raw is not None:
        return _prop_value(<const unsigned char *>PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), name, name_len)
    return _lazy_properties(msg).get(key)


class PulledMessage(MessageExt):
    """A ``MessageExt`` decoded from a pull body (see decode_pull_body).

    Same fields as MessageExt; ``body`` is decompressed when the record was compressed (and the compression bits
    are cleared from ``sys_flag``). The property string is decoded into the ``properties`` dict on first access;
    ``tags``, ``unique_key``, ``keys`` and ``msg_id`` read their one property without building the dict. Equal to
    a MessageExt with equal fields.

    Decoded messages are not tracked by the cyclic GC: their fields (ints, str, bytes, (str, int) tuples and a
    dict of str) cannot form a reference cycle. Assigning ``properties`` tracks the message again; do not put
    objects that refer back to the message into its fields.
    """

    __slots__ = ("_raw_properties",)

    @property
    def properties(self):
        return _lazy_properties(self)

    @properties.setter
    def properties(self, value):
        _put(self, F_PROPERTIES, value)
        _put(self, F_RAW, None)
        if not PyObject_GC_IsTracked(self):   # decoded messages start untracked (see _new_message)
            PyObject_GC_Track(<PyObject *>self)

    @property
    def tags(self):
        """The TAGS property, or None."""
        return _raw_lookup(self, "TAGS", 4, "TAGS")

    @property
    def unique_key(self):
        """The client-generated unique id (UNIQ_KEY), or None."""
        return _raw_lookup(self, "UNIQ_KEY", 8, "UNIQ_KEY")

    @property
    def keys(self):
        """The business keys of the KEYS property."""
        raw = _raw_lookup(self, "KEYS", 4, "KEYS")
        return [k for k in raw.split(" ") if k] if raw else []

    def __eq__(self, other):
        if not isinstance(other, MessageExt):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in FIELD_NAMES)

    __hash__ = None


def _init_layout():
    """Find the slot offsets of PulledMessage so messages are filled from C; else use the descriptors."""
    global _FAST
    descs = [MessageExt.__dict__[name] for name in FIELD_NAMES] + [PulledMessage.__dict__["_raw_properties"]]
    _DESCS[:] = descs
    member_type = type(PulledMessage.__dict__["_raw_properties"])
    cdef PyMemberDef *m
    cdef int i
    if PulledMessage.__dictoffset__ != 0 or type(PulledMessage).__name__ != "type":
        return
    for i, d in enumerate(descs):
        if type(d) is not member_type:
            return
        m = (<PyMemberDescrObject *><PyObject *>d).d_member
        if m.type != T_OBJECT_EX or (m.flags & READONLY) or m.offset <= 0 \
                or m.offset + <Py_ssize_t>sizeof(PyObject *) > PulledMessage.__basicsize__:
            return
        _OFF[i] = m.offset
    _FAST = True

_init_layout()
cdef object _PM_TYPE = PulledMessage


def fast_path_enabled() -> bool:
    """Whether messages are filled through slot offsets (True on CPython) rather than descriptors."""
    return _FAST


def _set_fast_path(bint enabled) -> bool:
    """Tests only: switch to the descriptor path (False) or back to slot offsets when the layout allows."""
    global _FAST
    _FAST = False
    if enabled:
        _init_layout()
    return _FAST


cdef object _MAGIC_V1_OBJ = <int32_t>MAGIC_V1
cdef object _MAGIC_V2_OBJ = <int32_t>MAGIC_V2


cdef object _new_message(const unsigned char *rec, const RecordView *rv, object body, bint decompressed):
    cdef object msg
    if _FAST:
        msg = PyType_GenericAlloc(<PyTypeObject *>_PM_TYPE, 0)
    else:
        msg = _PM_TYPE.__new__(_PM_TYPE)
    _put(msg, F_STORE_SIZE, rv.total_size)
    _put(msg, F_MAGIC, _MAGIC_V1_OBJ if rv.magic == MAGIC_V1 else _MAGIC_V2_OBJ)
    _put(msg, F_BODY_CRC, rv.body_crc)
    _put(msg, F_QUEUE_ID, rv.queue_id)
    _put(msg, F_FLAG, rv.flag)
    _put(msg, F_QUEUE_OFFSET, rv.queue_offset)
    _put(msg, F_COMMIT_LOG_OFFSET, rv.phy_offset)
    _put(msg, F_SYS_FLAG, (rv.sys_flag & ~COMPRESSION_BITS) if decompressed else rv.sys_flag)
    _put(msg, F_BORN_TS, rv.born_timestamp)
    _put(msg, F_BORN_HOST, _host(rec + rv.born_host_off, rv.born_host_len))
    _put(msg, F_STORE_TS, rv.store_timestamp)
    _put(msg, F_STORE_HOST, _host(rec + rv.store_host_off, rv.store_host_len))
    _put(msg, F_RECONSUME, rv.reconsume_times)
    _put(msg, F_PREPARED, rv.prepared_tx_offset)
    _put(msg, F_BODY, body)
    _put(msg, F_TOPIC, _topic(rec + rv.topic_off, rv.topic_len))
    _put(msg, F_RAW, PyBytes_FromStringAndSize(<const char *>rec + rv.props_off, rv.props_len))
    if _FAST:
        # Every slot holds an int, str, bytes, a shared (str, int) tuple or, once decoded, a dict of str: the
        # message cannot be part of a reference cycle, so the cyclic GC need not traverse it (a pull of 1000
        # messages otherwise pays ~100 ns per message in young-generation collections). Assigning a new
        # ``properties`` dict tracks it again.
        PyObject_GC_UnTrack(<PyObject *>msg)
    return msg


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------

def decode_pull_body(body, *, bint decompress=True, bint check_crc=False, tags=None,
                     Py_ssize_t max_size=DEFAULT_MAX_DECOMPRESSED) -> list:
    """Every record of a pull body as a ``PulledMessage`` (a MessageExt), in one C pass.

    ``decompress``: inflate compressed bodies (at most ``max_size`` bytes each). ``check_crc``: verify each
    stored body's CRC (Java's client does not). ``tags``: keep only records whose TAGS is one of these (str or
    bytes), the exact re-filter Java's client applies after the broker's tag-hash match; None or empty keeps all.
    Raises RecordError (ValueError) naming the first bad record's index and offset.
    """
    if body is None:
        return []
    cdef const unsigned char[::1] v = body
    cdef Py_ssize_t n = v.shape[0], pos = 0, idx = 0
    cdef const unsigned char *base
    cdef const unsigned char *rec
    cdef RecordView rv
    cdef tuple tag_set = _tags_filter(tags)
    cdef list out = []
    cdef bint dec
    if n == 0:
        return out
    base = &v[0]
    while pos < n:
        _next_record(base, n, pos, idx, check_crc, &rv)
        rec = base + pos
        if tag_set is None or _tags_match(rec + rv.props_off, rv.props_len, tag_set):
            dec = decompress and (rv.sys_flag & COMPRESSED)
            out.append(_new_message(rec, &rv, _body(rec, &rv, decompress, max_size, idx, pos), dec))
        pos += rv.total_size
        idx += 1
    return out


def decode_pull_bodies(body, *, bint decompress=True, bint check_crc=False, tags=None,
                       Py_ssize_t max_size=DEFAULT_MAX_DECOMPRESSED) -> list:
    """The bodies of a pull body's records as ``list[bytes]``, nothing else (arguments as decode_pull_body)."""
    if body is None:
        return []
    cdef const unsigned char[::1] v = body
    cdef Py_ssize_t n = v.shape[0], pos = 0, idx = 0
    cdef const unsigned char *base
    cdef const unsigned char *rec
    cdef RecordView rv
    cdef tuple tag_set = _tags_filter(tags)
    cdef list out = []
    if n == 0:
        return out
    base = &v[0]
    while pos < n:
        _next_record(base, n, pos, idx, check_crc, &rv)
        rec = base + pos
        if tag_set is None or _tags_match(rec + rv.props_off, rv.props_len, tag_set):
            if rv.sys_flag & COMPRESSED and decompress:
                out.append(_body(rec, &rv, True, max_size, idx, pos))
            else:
                out.append(PyBytes_FromStringAndSize(<const char *>rec + rv.body_off, rv.body_len))
        pos += rv.total_size
        idx += 1
    return out


def decode_properties(data) -> dict:
    """The C property-string decoder used by PulledMessage (same result as rmq_common.properties)."""
    cdef const unsigned char[::1] v = data
    if v.shape[0] == 0:
        return {}
    return _decode_props(&v[0], v.shape[0])


cdef struct BatchRec:
    RecordView rv
    Py_ssize_t pos
    bint decompressed


_COLUMNS = {
    "store_size": 0, "body_crc": 1, "queue_id": 2, "flag": 3, "queue_offset": 4, "commit_log_offset": 5,
    "sys_flag": 6, "born_timestamp": 7, "store_timestamp": 8, "reconsume_times": 9,
    "prepared_transaction_offset": 10, "record_offset": 11,
}


cdef class PullBatch:
    """The records of one pull body, columnar (see decode_pull_batch).

    ``bodies`` is a list of bytes (decompressed). Everything else is read from the retained pull body on demand:
    numeric fields as numpy int64 columns (``queue_offsets``, ``store_timestamps``, ``column(name)``), and per
    record ``topic(i)``, ``properties(i)``, ``tags(i)``, ``unique_key(i)``, ``msg_id(i)`` and ``message(i)`` (a
    PulledMessage). ``batch[i]`` is ``message(i)``. The batch keeps the pull body (and so the receive buffer it
    views) alive; keep ``bodies`` rather than the batch to hold messages for long.
    """
    cdef readonly list bodies
    cdef readonly Py_ssize_t scanned       # records in the body, before the tags filter
    cdef object _owner
    cdef const unsigned char[::1] _view
    cdef BatchRec *_recs
    cdef Py_ssize_t _n
    cdef dict _cols

    def __cinit__(self):
        self._recs = NULL
        self._n = 0
        self.bodies = []
        self._cols = {}

    def __dealloc__(self):
        PyMem_Free(self._recs)

    def __len__(self):
        return self._n

    cdef Py_ssize_t _index(self, Py_ssize_t i) except -1:
        if i < 0:
            i += self._n
        if i < 0 or i >= self._n:
            raise IndexError("pull batch index out of range")
        return i

    cdef const unsigned char *_rec(self, Py_ssize_t i):
        return &self._view[0] + self._recs[i].pos

    def column(self, str name):
        """One numeric field of every record as a numpy int64 array: store_size, body_crc, queue_id, flag,
        queue_offset, commit_log_offset, sys_flag (as delivered: compression bits cleared where decompressed),
        born_timestamp, store_timestamp, reconsume_times, prepared_transaction_offset, record_offset."""
        cached = self._cols.get(name)
        if cached is not None:
            return cached
        which = _COLUMNS.get(name)
        if which is None:
            raise KeyError(f"no column {name!r}; columns: {', '.join(_COLUMNS)}")
        cdef cnp.npy_intp dims = self._n
        arr = cnp.PyArray_EMPTY(1, &dims, cnp.NPY_INT64, 0)
        cdef int64_t *a = <int64_t *>cnp.PyArray_DATA(arr)
        cdef int w = which
        cdef Py_ssize_t i
        cdef const RecordView *rv
        for i in range(self._n):
            rv = &self._recs[i].rv
            if w == 0: a[i] = rv.total_size
            elif w == 1: a[i] = rv.body_crc
            elif w == 2: a[i] = rv.queue_id
            elif w == 3: a[i] = rv.flag
            elif w == 4: a[i] = rv.queue_offset
            elif w == 5: a[i] = rv.phy_offset
            elif w == 6: a[i] = (rv.sys_flag & ~COMPRESSION_BITS) if self._recs[i].decompressed else rv.sys_flag
            elif w == 7: a[i] = rv.born_timestamp
            elif w == 8: a[i] = rv.store_timestamp
            elif w == 9: a[i] = rv.reconsume_times
            elif w == 10: a[i] = rv.prepared_tx_offset
            else: a[i] = self._recs[i].pos
        cnp.PyArray_CLEARFLAGS(arr, cnp.NPY_ARRAY_WRITEABLE)
        self._cols[name] = arr
        return arr

    @property
    def queue_offsets(self):
        """Consume-queue offsets (numpy int64)."""
        return self.column("queue_offset")

    @property
    def store_timestamps(self):
        """Store timestamps in ms (numpy int64)."""
        return self.column("store_timestamp")

    @property
    def first_queue_offset(self):
        """Queue offset of the first record kept, or None for an empty batch."""
        return self._recs[0].rv.queue_offset if self._n else None

    @property
    def last_queue_offset(self):
        """Queue offset of the last record kept, or None for an empty batch."""
        return self._recs[self._n - 1].rv.queue_offset if self._n else None

    def queue_offset(self, Py_ssize_t i):
        return self._recs[self._index(i)].rv.queue_offset

    def topic(self, Py_ssize_t i):
        i = self._index(i)
        return _topic(self._rec(i) + self._recs[i].rv.topic_off, self._recs[i].rv.topic_len)

    def properties(self, Py_ssize_t i):
        """Record i's property dict (decoded now, not cached)."""
        i = self._index(i)
        return _decode_props(self._rec(i) + self._recs[i].rv.props_off, self._recs[i].rv.props_len)

    cdef object _prop(self, Py_ssize_t i, const char *name, Py_ssize_t name_len):
        i = self._index(i)
        return _prop_value(self._rec(i) + self._recs[i].rv.props_off, self._recs[i].rv.props_len, name, name_len)

    def tags(self, Py_ssize_t i):
        return self._prop(i, "TAGS", 4)

    def unique_key(self, Py_ssize_t i):
        return self._prop(i, "UNIQ_KEY", 8)

    def keys(self, Py_ssize_t i):
        raw = self._prop(i, "KEYS", 4)
        return [k for k in raw.split(" ") if k] if raw else []

    def msg_id(self, Py_ssize_t i):
        """UNIQ_KEY when set, else the offset message id (as MessageExt.msg_id)."""
        return self.unique_key(i) or self.message(i).offset_msg_id

    def message(self, Py_ssize_t i):
        """Record i as a PulledMessage (its body is ``bodies[i]``)."""
        i = self._index(i)
        if PyList_GET_SIZE(self.bodies) != self._n:
            raise RuntimeError("the batch's bodies list was resized")
        return _new_message(self._rec(i), &self._recs[i].rv, <object>PyList_GET_ITEM(self.bodies, i),
                            self._recs[i].decompressed)

    def messages(self):
        """Every record as a PulledMessage, as decode_pull_body would return them."""
        return [self.message(i) for i in range(self._n)]

    def __getitem__(self, Py_ssize_t i):
        return self.message(i)

    def __repr__(self):
        return (f"PullBatch({self._n} records, queue offsets "
                f"{self.first_queue_offset}..{self.last_queue_offset})")


def decode_pull_batch(body, *, bint decompress=True, bint check_crc=False, tags=None,
                      Py_ssize_t max_size=DEFAULT_MAX_DECOMPRESSED) -> PullBatch:
    """A pull body as a ``PullBatch``: bodies now, the rest on demand (arguments as decode_pull_body)."""
    cdef PullBatch batch = PullBatch.__new__(PullBatch)
    if body is None:
        return batch
    batch._view = body
    batch._owner = body
    cdef Py_ssize_t n = batch._view.shape[0], pos = 0, idx = 0, cap
    cdef const unsigned char *base
    cdef const unsigned char *rec
    cdef RecordView rv
    cdef BatchRec *grown
    cdef tuple tag_set = _tags_filter(tags)
    cdef list bodies = batch.bodies
    if n == 0:
        return batch
    base = &batch._view[0]
    cap = n // 256 + 8
    if cap > 1024:
        cap = 1024
    batch._recs = <BatchRec *>PyMem_Malloc(cap * sizeof(BatchRec))
    if batch._recs == NULL:
        raise MemoryError()
    while pos < n:
        _next_record(base, n, pos, idx, check_crc, &rv)
        rec = base + pos
        if tag_set is None or _tags_match(rec + rv.props_off, rv.props_len, tag_set):
            if batch._n == cap:
                cap *= 2
                grown = <BatchRec *>PyMem_Realloc(batch._recs, cap * sizeof(BatchRec))
                if grown == NULL:
                    raise MemoryError()
                batch._recs = grown
            if rv.sys_flag & COMPRESSED and decompress:
                bodies.append(_body(rec, &rv, True, max_size, idx, pos))
                batch._recs[batch._n].decompressed = True
            else:
                bodies.append(PyBytes_FromStringAndSize(<const char *>rec + rv.body_off, rv.body_len))
                batch._recs[batch._n].decompressed = False
            batch._recs[batch._n].rv = rv
            batch._recs[batch._n].pos = pos
            batch._n += 1
        pos += rv.total_size
        idx += 1
    batch.scanned = idx
    return batch
