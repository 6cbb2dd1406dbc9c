# cython: language_level=3
"""Stored-record codec: RocketMQ's commitlog record layout (see _record.pxd for the drawing).

The C-level functions are the hot path shared by the store (append, dispatch, recovery scan, reads).
The Python-level functions serve tests, tools and clients: encode one record, decode records into
``MessageExt`` objects, the masked CRC and Java's String.hashCode over UTF-8 bytes.

Batch bodies (PROTOCOL.md §4.6; drawing in _record.pxd). A batch send carries its messages as items
concatenated, each ``int32 TOTALSIZE, int32 MAGIC (0), int32 BODYCRC (0), int32 FLAG, int32 bodyLen +
body, int16 propertiesLen + properties`` (RocketMQ's ``MessageDecoder.encodeMessages``):

* ``decode_batch_body(data, extra_properties=b"")`` → ``(bodies, properties, flags)``, one entry per item,
  each property string already merged into the form the broker stores: the item's string, U+0002 when
  it is non-empty and does not end with one, then ``extra_properties`` (the batch header's properties and
  ``CLUSTER``), as R4's CommitLog batch encoder does. The lists go straight to ``MessageStore.put_batch``.
* ``encode_batch_body(bodies, properties, flags)`` is the client side, the inverse.

Both validate strictly and raise ``BatchBodyError`` (a ValueError) naming the item and its offset: a
truncated item or trailing bytes, TOTALSIZE not equal to the item's size, a negative length, a body over
``max_body``, more than ``max_items`` items, an empty batch, a (merged) property string over 32767 bytes.
R4 itself reads TOTALSIZE, MAGIC and BODYCRC and drops them; every client (Java ``encodeMessage``, CPP
``BatchMessage::encode``, Go ``Message.Marshal``) writes TOTALSIZE = 22 + bodyLen + propertiesLen, so
checking it costs no client and catches a mis-framed body that would otherwise decode into wrong
messages. MAGIC and BODYCRC stay unchecked, as in R4.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.string cimport memcpy, memcmp
from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t

import ipaddress

MAGIC_CODE_V1 = <int32_t>MAGIC_V1
MAGIC_CODE_V2 = <int32_t>MAGIC_V2
BLANK_MAGIC_CODE = <int32_t>MAGIC_BLANK
RECORD_FIXED_LENGTH_V4 = RECORD_FIXED_V4
TOPIC_MAX_LENGTH = MAX_TOPIC_LENGTH_V1
PROPERTIES_MAX_LENGTH = MAX_PROPERTIES_LENGTH
BATCH_ITEM_FIXED_LENGTH = BATCH_ITEM_FIXED
BATCH_MAX_ITEMS = BATCH_DEFAULT_MAX_ITEMS
BATCH_MAX_BODY = BATCH_DEFAULT_MAX_BODY


cdef int32_t masked_crc32(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    return <int32_t>(rmq_crc32(p, n) & 0x7FFFFFFF)


def set_crc_simd(bint enabled) -> None:
    """Switch the PCLMUL CRC path off (tests compare it with zlib's) or back on."""
    rmq_crc32_set_simd(enabled)


cdef inline int32_t _hstep(int32_t h, uint32_t unit) noexcept nogil:
    return <int32_t>(<uint32_t>h * 31u + unit)


cdef int32_t java_hash_utf8(const unsigned char *p, Py_ssize_t n, int32_t h) noexcept nogil:
    """Java String.hashCode of the UTF-16 form of UTF-8 bytes, continuing from ``h``."""
    cdef Py_ssize_t i = 0
    cdef uint32_t c, cp
    while i < n:
        c = p[i]
        if c < 0x80:
            h = _hstep(h, c)
            i += 1
        elif (c & 0xE0) == 0xC0 and i + 1 < n and (p[i + 1] & 0xC0) == 0x80:
            h = _hstep(h, ((c & 0x1F) << 6) | (p[i + 1] & 0x3F))
            i += 2
        elif (c & 0xF0) == 0xE0 and i + 2 < n and (p[i + 1] & 0xC0) == 0x80 and (p[i + 2] & 0xC0) == 0x80:
            h = _hstep(h, ((c & 0x0F) << 12) | ((p[i + 1] & 0x3F) << 6) | (p[i + 2] & 0x3F))
            i += 3
        elif ((c & 0xF8) == 0xF0 and i + 3 < n and (p[i + 1] & 0xC0) == 0x80
              and (p[i + 2] & 0xC0) == 0x80 and (p[i + 3] & 0xC0) == 0x80):
            cp = (((c & 0x07) << 18) | ((p[i + 1] & 0x3F) << 12) | ((p[i + 2] & 0x3F) << 6)
                  | (p[i + 3] & 0x3F)) - 0x10000
            h = _hstep(h, 0xD800 + (cp >> 10))
            h = _hstep(h, 0xDC00 + (cp & 0x3FF))
            i += 4
        else:
            h = _hstep(h, 0xFFFD)   # Java decodes malformed UTF-8 to U+FFFD
            i += 1
    return h


cdef int32_t index_hash(int32_t java_hash) noexcept nogil:
    # IndexService: abs(hashCode), with Integer.MIN_VALUE mapped to 0.
    if java_hash == <int32_t>(-2147483647 - 1):
        return 0
    return -java_hash if java_hash < 0 else java_hash


cdef Py_ssize_t record_length(Py_ssize_t body_len, Py_ssize_t topic_len, Py_ssize_t props_len,
                              Py_ssize_t born_host_len, Py_ssize_t store_host_len) noexcept nogil:
    return (RECORD_FIXED_V4 + (born_host_len - HOST_V4_LEN) + (store_host_len - HOST_V4_LEN)
            + body_len + topic_len + props_len)


cdef Py_ssize_t write_record(unsigned char *d, int32_t total_size, int32_t body_crc, int32_t queue_id,
                             int32_t flag, int64_t queue_offset, int64_t phy_offset, int32_t sys_flag,
                             int64_t born_ts, const unsigned char *born_host, int32_t born_host_len,
                             int64_t store_ts, const unsigned char *store_host, int32_t store_host_len,
                             int32_t reconsume_times, int64_t prepared_tx_offset,
                             const unsigned char *body, int32_t body_len,
                             const unsigned char *topic, int32_t topic_len,
                             const unsigned char *props, int32_t props_len) noexcept nogil:
    cdef unsigned char *p = d
    rmq_put_i32(p, total_size)
    rmq_put_i32(p + 4, MAGIC_V1)
    rmq_put_i32(p + 8, body_crc)
    rmq_put_i32(p + 12, queue_id)
    rmq_put_i32(p + 16, flag)
    rmq_put_i64(p + 20, queue_offset)
    rmq_put_i64(p + 28, phy_offset)
    rmq_put_i32(p + 36, sys_flag)
    rmq_put_i64(p + 40, born_ts)
    memcpy(p + 48, born_host, born_host_len)
    p += 48 + born_host_len
    rmq_put_i64(p, store_ts)
    memcpy(p + 8, store_host, store_host_len)
    p += 8 + store_host_len
    rmq_put_i32(p, reconsume_times)
    rmq_put_i64(p + 4, prepared_tx_offset)
    rmq_put_i32(p + 12, body_len)
    p += 16
    if body_len > 0:
        memcpy(p, body, body_len)
    p += body_len
    p[0] = <unsigned char>topic_len
    memcpy(p + 1, topic, topic_len)
    p += 1 + topic_len
    rmq_put_i16(p, <int16_t>props_len)
    p += 2
    if props_len > 0:
        memcpy(p, props, props_len)
    p += props_len
    return p - d


cdef inline int _parse_record(const unsigned char *p, Py_ssize_t avail, RecordView *rv,
                              bint accept_v2) noexcept nogil:
    """Locate every field of the record at ``p``; no CRC check. v1 records have a 1-byte topic length, v2 ones
    (RocketMQ 5.x) a 2-byte one; everything else is laid out alike. Returns RECORD_* codes."""
    cdef Py_ssize_t pos
    cdef int topic_len_bytes
    cdef Py_ssize_t fixed_size
    if avail < 8:
        return RECORD_TRUNCATED if avail > 0 else RECORD_END
    rv.total_size = rmq_get_i32(p)
    rv.magic = rmq_get_i32(p + 4)
    if rv.total_size == 0 and rv.magic == 0:
        return RECORD_END
    if rv.magic == MAGIC_BLANK:
        return RECORD_BLANK if rv.total_size >= 8 and rv.total_size <= avail else RECORD_BAD_SIZE
    if rv.magic == MAGIC_V1:
        topic_len_bytes, fixed_size = 1, RECORD_FIXED_V4
    elif rv.magic == MAGIC_V2 and accept_v2:
        topic_len_bytes, fixed_size = 2, RECORD_FIXED_V2
    else:
        return RECORD_BAD_MAGIC
    if rv.total_size < fixed_size or rv.total_size > avail:
        return RECORD_BAD_SIZE if rv.total_size < fixed_size else RECORD_TRUNCATED
    rv.body_crc = rmq_get_i32(p + 8)
    rv.queue_id = rmq_get_i32(p + 12)
    rv.flag = rmq_get_i32(p + 16)
    rv.queue_offset = rmq_get_i64(p + 20)
    rv.phy_offset = rmq_get_i64(p + 28)
    rv.sys_flag = rmq_get_i32(p + 36)
    rv.born_timestamp = rmq_get_i64(p + 40)
    rv.born_host_off = 48
    rv.born_host_len = HOST_V6_LEN if rv.sys_flag & SYSFLAG_BORNHOST_V6 else HOST_V4_LEN
    pos = 48 + rv.born_host_len
    rv.store_timestamp = rmq_get_i64(p + pos)
    rv.store_host_off = <int32_t>(pos + 8)
    rv.store_host_len = HOST_V6_LEN if rv.sys_flag & SYSFLAG_STOREHOST_V6 else HOST_V4_LEN
    pos += 8 + rv.store_host_len
    if pos + 16 > rv.total_size:
        return RECORD_BAD_SIZE
    rv.reconsume_times = rmq_get_i32(p + pos)
    rv.prepared_tx_offset = rmq_get_i64(p + pos + 4)
    rv.body_len = rmq_get_i32(p + pos + 12)
    pos += 16
    rv.body_off = <int32_t>pos
    if rv.body_len < 0 or pos + rv.body_len + topic_len_bytes > rv.total_size:
        return RECORD_BAD_SIZE
    pos += rv.body_len
    if topic_len_bytes == 1:
        rv.topic_len = p[pos]
    else:
        rv.topic_len = rmq_get_i16(p + pos)
        if rv.topic_len < 0:
            return RECORD_BAD_SIZE
    rv.topic_off = <int32_t>(pos + topic_len_bytes)
    pos += topic_len_bytes + rv.topic_len
    if pos + 2 > rv.total_size:
        return RECORD_BAD_SIZE
    rv.props_len = rmq_get_i16(p + pos)
    rv.props_off = <int32_t>(pos + 2)
    if rv.props_len < 0 or pos + 2 + rv.props_len != rv.total_size:
        return RECORD_BAD_SIZE
    return RECORD_OK


cdef int parse_record(const unsigned char *p, Py_ssize_t avail, RecordView *rv) noexcept nogil:
    """A v1 record, the only kind the store writes (a v2 one is RECORD_BAD_MAGIC here)."""
    return _parse_record(p, avail, rv, False)


cdef int parse_record_any(const unsigned char *p, Py_ssize_t avail, RecordView *rv) noexcept nogil:
    """A v1 or v2 record: what a client may be sent by RocketMQ 5.x brokers."""
    return _parse_record(p, avail, rv, True)


cdef int validate_record(const unsigned char *p, Py_ssize_t avail, int64_t expect_phy,
                         bint check_crc, RecordView *rv) noexcept nogil:
    """parse_record plus the checks recovery relies on: the stored physical offset and the body CRC."""
    cdef int rc = parse_record(p, avail, rv)
    if rc != RECORD_OK:
        return rc
    if expect_phy >= 0 and rv.phy_offset != expect_phy:
        return RECORD_BAD_OFFSET
    if check_crc and masked_crc32(p + rv.body_off, rv.body_len) != rv.body_crc:
        return RECORD_BAD_CRC
    return RECORD_OK


cdef inline bint _name_is(const unsigned char *p, Py_ssize_t n, const char *name, Py_ssize_t name_len) noexcept nogil:
    return n == name_len and memcmp(p, name, name_len) == 0


cdef void scan_properties(const unsigned char *p, Py_ssize_t n, PropertyScan *out) noexcept nogil:
    """Find TAGS, KEYS, UNIQ_KEY and DELAY in a property string without building a dict."""
    cdef Py_ssize_t start = 0, end, sep
    out.tags_len = -1
    out.keys_len = -1
    out.uniq_len = -1
    out.delay_len = -1
    while start < n:
        end = start
        sep = -1
        while end < n and p[end] != 2:
            if sep < 0 and p[end] == 1:
                sep = end
            end += 1
        if sep > start and end - start >= 3:
            if _name_is(p + start, sep - start, "TAGS", 4):
                out.tags_off = <int32_t>(sep + 1)
                out.tags_len = <int32_t>(end - sep - 1)
            elif _name_is(p + start, sep - start, "KEYS", 4):
                out.keys_off = <int32_t>(sep + 1)
                out.keys_len = <int32_t>(end - sep - 1)
            elif _name_is(p + start, sep - start, "UNIQ_KEY", 8):
                out.uniq_off = <int32_t>(sep + 1)
                out.uniq_len = <int32_t>(end - sep - 1)
            elif _name_is(p + start, sep - start, "DELAY", 5):
                out.delay_off = <int32_t>(sep + 1)
                out.delay_len = <int32_t>(end - sep - 1)
        start = end + 1


# ---------------------------------------------------------------------------------------------
# Python-level API
# ---------------------------------------------------------------------------------------------

def masked_crc(data) -> int:
    """CRC-32 of ``data`` AND 0x7FFFFFFF, as RocketMQ's UtilAll.crc32."""
    cdef const unsigned char[::1] v = data
    return masked_crc32(&v[0] if v.shape[0] else NULL, v.shape[0])


def java_hash(text) -> int:
    """Java String.hashCode of ``text`` (str, or UTF-8 bytes)."""
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    cdef const unsigned char[::1] v = text
    if v.shape[0] == 0:
        return 0
    return java_hash_utf8(&v[0], v.shape[0], 0)


def tags_hash_code(tags) -> int:
    """The consume-queue tags code of a TAGS value (0 when there are no tags)."""
    if not tags:
        return 0
    return java_hash(tags)


def host_bytes(host) -> bytes:
    """(ip, port) → the 8- or 20-byte stored host field."""
    ip, port = host
    packed = ipaddress.ip_address(ip).packed
    return packed + int(port).to_bytes(4, "big", signed=True)


cdef object _host_from(const unsigned char *p, int32_t n):
    raw = PyBytes_FromStringAndSize(<const char *>p, n)
    return (str(ipaddress.ip_address(raw[:n - 4])), int.from_bytes(raw[n - 4:], "big", signed=True))


def encode_record(*, topic, body, queue_id=0, flag=0, queue_offset=0, phy_offset=0, sys_flag=0,
                  born_timestamp=0, born_host=("127.0.0.1", 0), store_timestamp=0,
                  store_host=("127.0.0.1", 0), reconsume_times=0, prepared_transaction_offset=0,
                  properties=b"") -> bytes:
    """Encode one stored record (v1). Host v6 bits of ``sys_flag`` follow the host addresses."""
    cdef bytes topic_b = topic.encode("utf-8") if isinstance(topic, str) else bytes(topic)
    cdef bytes body_b = bytes(body)
    cdef bytes props_b = properties.encode("utf-8") if isinstance(properties, str) else bytes(properties)
    cdef bytes bh = host_bytes(born_host)
    cdef bytes sh = host_bytes(store_host)
    if len(topic_b) > MAX_TOPIC_LENGTH_V1:
        raise ValueError(f"topic is {len(topic_b)} bytes; the v1 record allows at most {MAX_TOPIC_LENGTH_V1}")
    if len(props_b) > MAX_PROPERTIES_LENGTH:
        raise ValueError(f"properties are {len(props_b)} bytes; at most {MAX_PROPERTIES_LENGTH}")
    sys_flag = (sys_flag & ~(SYSFLAG_BORNHOST_V6 | SYSFLAG_STOREHOST_V6)
                | (SYSFLAG_BORNHOST_V6 if len(bh) == HOST_V6_LEN else 0)
                | (SYSFLAG_STOREHOST_V6 if len(sh) == HOST_V6_LEN else 0))
    cdef Py_ssize_t n = record_length(len(body_b), len(topic_b), len(props_b), len(bh), len(sh))
    out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char *d = <unsigned char *>PyBytes_AS_STRING(out)
    write_record(d, <int32_t>n, masked_crc32(<const unsigned char *>PyBytes_AS_STRING(body_b), len(body_b)),
                 queue_id, flag, queue_offset, phy_offset, sys_flag, born_timestamp,
                 <const unsigned char *>PyBytes_AS_STRING(bh), len(bh), store_timestamp,
                 <const unsigned char *>PyBytes_AS_STRING(sh), len(sh), reconsume_times,
                 prepared_transaction_offset, <const unsigned char *>PyBytes_AS_STRING(body_b), len(body_b),
                 <const unsigned char *>PyBytes_AS_STRING(topic_b), len(topic_b),
                 <const unsigned char *>PyBytes_AS_STRING(props_b), len(props_b))
    return out


class RecordError(ValueError):
    """A byte range that is not a well-formed stored record."""


_RC_TEXT = {
    RECORD_END: "no record (zero size)",
    RECORD_BLANK: "blank file-tail marker",
    RECORD_BAD_MAGIC: "bad magic code",
    RECORD_BAD_SIZE: "inconsistent sizes",
    RECORD_BAD_CRC: "body CRC mismatch",
    RECORD_BAD_OFFSET: "physical offset field does not match",
    RECORD_TRUNCATED: "record extends past the end of the data",
}


def decode_record(data, Py_ssize_t offset=0, bint check_crc=True):
    """Decode the record at ``offset`` of ``data`` into a ``MessageExt``; RecordError if malformed."""
    from rmq_common.message import MessageExt
    from rmq_common.properties import decode_properties
    cdef const unsigned char[::1] v = data
    cdef RecordView rv
    if offset < 0 or offset > v.shape[0]:
        raise RecordError(f"offset {offset} outside data of {v.shape[0]} bytes")
    cdef const unsigned char *p = &v[0] + offset if v.shape[0] else NULL
    cdef int rc = validate_record(p, v.shape[0] - offset, -1, check_crc, &rv) if p != NULL else RECORD_END
    if rc != RECORD_OK:
        raise RecordError(f"record at offset {offset}: {_RC_TEXT.get(rc, rc)}")
    return MessageExt(
        store_size=rv.total_size, magic=rv.magic, body_crc=rv.body_crc, queue_id=rv.queue_id,
        flag=rv.flag, queue_offset=rv.queue_offset, commit_log_offset=rv.phy_offset,
        sys_flag=rv.sys_flag, born_timestamp=rv.born_timestamp,
        born_host=_host_from(p + rv.born_host_off, rv.born_host_len),
        store_timestamp=rv.store_timestamp,
        store_host=_host_from(p + rv.store_host_off, rv.store_host_len),
        reconsume_times=rv.reconsume_times, prepared_transaction_offset=rv.prepared_tx_offset,
        body=PyBytes_FromStringAndSize(<const char *>p + rv.body_off, rv.body_len),
        topic=PyBytes_FromStringAndSize(<const char *>p + rv.topic_off, rv.topic_len).decode("utf-8", "replace"),
        properties=decode_properties(PyBytes_FromStringAndSize(<const char *>p + rv.props_off, rv.props_len)),
    )


cdef int _parse_or_raise(const unsigned char *p, Py_ssize_t avail, Py_ssize_t pos, RecordView *rv) except -1:
    """parse_record for the buffer walkers below: a malformed record is a RecordError naming its offset."""
    cdef int rc = parse_record(p, avail, rv)
    if rc != RECORD_OK:
        raise RecordError(f"record at offset {pos}: {_RC_TEXT.get(rc, rc)}")
    return 0


def decode_records(data, bint check_crc=True) -> list:
    """Decode every record of a buffer of concatenated records (a pull body)."""
    cdef const unsigned char[::1] v = data
    cdef Py_ssize_t pos = 0, n = v.shape[0]
    cdef RecordView rv
    out = []
    while pos < n:
        _parse_or_raise(&v[0] + pos, n - pos, pos, &rv)
        out.append(decode_record(data, pos, check_crc))
        pos += rv.total_size
    return out


def record_spans(data):
    """(offsets, sizes) of the concatenated records in ``data``, as two lists, without decoding them."""
    cdef const unsigned char[::1] v = data
    cdef Py_ssize_t pos = 0, n = v.shape[0]
    cdef RecordView rv
    offsets, sizes = [], []
    while pos < n:
        _parse_or_raise(&v[0] + pos, n - pos, pos, &rv)
        offsets.append(pos)
        sizes.append(rv.total_size)
        pos += rv.total_size
    return offsets, sizes


def body_spans(data):
    """(starts, ends) of every body in a buffer of concatenated records, without copying."""
    cdef const unsigned char[::1] v = data
    cdef Py_ssize_t pos = 0, n = v.shape[0]
    cdef RecordView rv
    starts, ends = [], []
    while pos < n:
        _parse_or_raise(&v[0] + pos, n - pos, pos, &rv)
        starts.append(pos + rv.body_off)
        ends.append(pos + rv.body_off + rv.body_len)
        pos += rv.total_size
    return starts, ends


def body_list(data) -> list:
    """Every body in a buffer of concatenated records, as a list of bytes (one C loop, one copy each)."""
    cdef const unsigned char[::1] v = data
    cdef Py_ssize_t pos = 0, n = v.shape[0]
    cdef RecordView rv
    out = []
    while pos < n:
        _parse_or_raise(&v[0] + pos, n - pos, pos, &rv)
        out.append(PyBytes_FromStringAndSize(<const char *>&v[0] + pos + rv.body_off, rv.body_len))
        pos += rv.total_size
    return out


def record_keys(data):
    """(topic, KEYS value or None, UNIQ_KEY value or None) of one record, without decoding the rest."""
    cdef const unsigned char[::1] v = data
    cdef RecordView rv
    cdef PropertyScan ps
    if v.shape[0] == 0:
        raise RecordError("empty record")
    rc = parse_record(&v[0], v.shape[0], &rv)
    if rc != RECORD_OK:
        raise RecordError(f"record: {_RC_TEXT.get(rc, rc)}")
    cdef const unsigned char *p = &v[0]
    scan_properties(p + rv.props_off, rv.props_len, &ps)
    topic = PyBytes_FromStringAndSize(<const char *>p + rv.topic_off, rv.topic_len).decode("utf-8", "replace")
    keys = (PyBytes_FromStringAndSize(<const char *>p + rv.props_off + ps.keys_off, ps.keys_len).decode("utf-8", "replace")
            if ps.keys_len >= 0 else None)
    uniq = (PyBytes_FromStringAndSize(<const char *>p + rv.props_off + ps.uniq_off, ps.uniq_len).decode("utf-8", "replace")
            if ps.uniq_len >= 0 else None)
    return topic, keys, uniq


def body_views(buf) -> list:
    """Every body in a memoryview of concatenated records, as zero-copy slices of it (one C loop)."""
    cdef const unsigned char[::1] v = buf
    cdef Py_ssize_t pos = 0, n = v.shape[0]
    cdef RecordView rv
    cdef object view = buf if isinstance(buf, memoryview) else memoryview(buf)
    out = []
    while pos < n:
        _parse_or_raise(&v[0] + pos, n - pos, pos, &rv)
        out.append(view[pos + rv.body_off:pos + rv.body_off + rv.body_len])
        pos += rv.total_size
    return out


# ---------------------------------------------------------------------------------------------
# Batch bodies (SEND_BATCH_MESSAGE; SEND_MESSAGE with batch=true)
# ---------------------------------------------------------------------------------------------

cdef int parse_batch_item(const unsigned char *p, Py_ssize_t avail, Py_ssize_t max_body,
                          BatchItemView *it) noexcept nogil:
    """Locate the fields of the batch item at ``p`` (``avail`` bytes left). Returns BATCH_ITEM_* codes;
    the fields read before a failure are set, so the caller can say what was wrong."""
    cdef Py_ssize_t body_end
    it.total_size = 0
    it.flag = 0
    it.body_off = BATCH_OFF_BODY
    it.body_len = 0
    it.props_off = 0
    it.props_len = 0
    if avail < BATCH_ITEM_FIXED:
        return BATCH_ITEM_SHORT
    it.total_size = rmq_get_i32(p + BATCH_OFF_TOTALSIZE)
    it.flag = rmq_get_i32(p + BATCH_OFF_FLAG)
    it.body_len = rmq_get_i32(p + BATCH_OFF_BODYLEN)
    if it.body_len < 0:
        return BATCH_ITEM_NEG_BODY
    if it.body_len > max_body:
        return BATCH_ITEM_BODY_TOO_LARGE
    body_end = BATCH_OFF_BODY + <Py_ssize_t>it.body_len
    if body_end + 2 > avail:
        return BATCH_ITEM_BODY_PAST_END
    it.props_len = rmq_get_i16(p + body_end)
    it.props_off = <int32_t>(body_end + 2)
    if it.props_len < 0:
        return BATCH_ITEM_NEG_PROPS
    if body_end + 2 + it.props_len > avail:
        return BATCH_ITEM_PROPS_PAST_END
    if it.total_size != body_end + 2 + it.props_len:
        return BATCH_ITEM_BAD_TOTALSIZE
    return BATCH_ITEM_OK


cdef inline bint _needs_separator(const unsigned char *props, Py_ssize_t props_len,
                                  Py_ssize_t extra_len) noexcept nogil:
    # R4: propertiesLen > 0 && batchPropLen > 0 && last byte != PROPERTY_SEPARATOR.
    return props_len > 0 and extra_len > 0 and props[props_len - 1] != 2


cdef Py_ssize_t merged_properties_length(const unsigned char *props, Py_ssize_t props_len,
                                         Py_ssize_t extra_len) noexcept nogil:
    """Length of the stored property string: the item's, a U+0002 if needed, then the extra properties."""
    return props_len + extra_len + (1 if _needs_separator(props, props_len, extra_len) else 0)


cdef Py_ssize_t write_merged_properties(unsigned char *dst, const unsigned char *props, Py_ssize_t props_len,
                                        const unsigned char *extra, Py_ssize_t extra_len) noexcept nogil:
    """Write the stored property string (see merged_properties_length) at ``dst``; returns its length."""
    cdef Py_ssize_t n = props_len
    if props_len > 0:
        memcpy(dst, props, props_len)
    if _needs_separator(props, props_len, extra_len):
        dst[n] = 2
        n += 1
    if extra_len > 0:
        memcpy(dst + n, extra, extra_len)
        n += extra_len
    return n


cdef Py_ssize_t write_batch_item(unsigned char *dst, int32_t flag, const unsigned char *body, int32_t body_len,
                                 const unsigned char *props, int32_t props_len) noexcept nogil:
    """Write one batch item at ``dst`` (BATCH_ITEM_FIXED + body_len + props_len bytes); returns its size."""
    cdef Py_ssize_t size = BATCH_ITEM_FIXED + <Py_ssize_t>body_len + props_len
    rmq_put_i32(dst + BATCH_OFF_TOTALSIZE, <int32_t>size)
    rmq_put_i32(dst + BATCH_OFF_MAGIC, 0)
    rmq_put_i32(dst + BATCH_OFF_BODYCRC, 0)
    rmq_put_i32(dst + BATCH_OFF_FLAG, flag)
    rmq_put_i32(dst + BATCH_OFF_BODYLEN, body_len)
    if body_len > 0:
        memcpy(dst + BATCH_OFF_BODY, body, body_len)
    rmq_put_i16(dst + BATCH_OFF_BODY + body_len, <int16_t>props_len)
    if props_len > 0:
        memcpy(dst + BATCH_OFF_BODY + body_len + 2, props, props_len)
    return size


class BatchBodyError(ValueError):
    """A batch body (or a batch to encode) that breaks the batch item format or its limits."""


cdef str _batch_item_problem(int rc, const BatchItemView *it, Py_ssize_t avail, Py_ssize_t max_body):
    cdef Py_ssize_t body_end = BATCH_OFF_BODY + <Py_ssize_t>it.body_len
    if rc == BATCH_ITEM_SHORT:
        return (f"truncated item or trailing garbage: {avail} byte{'' if avail == 1 else 's'} left, "
                f"fewer than the {BATCH_ITEM_FIXED}-byte minimum item")
    if rc == BATCH_ITEM_NEG_BODY:
        return f"negative body length {it.body_len}"
    if rc == BATCH_ITEM_BODY_TOO_LARGE:
        return f"body of {it.body_len} bytes exceeds max_body {max_body}"
    if rc == BATCH_ITEM_BODY_PAST_END:
        return (f"truncated: body of {it.body_len} bytes and the properties length need "
                f"{body_end + 2} bytes, {avail} left")
    if rc == BATCH_ITEM_NEG_PROPS:
        return f"negative properties length {it.props_len}"
    if rc == BATCH_ITEM_PROPS_PAST_END:
        return (f"truncated: body of {it.body_len} bytes and properties of {it.props_len} bytes need "
                f"{body_end + 2 + it.props_len} bytes, {avail} left")
    if rc == BATCH_ITEM_BAD_TOTALSIZE:
        return (f"TOTALSIZE {it.total_size} does not match the item's actual size "
                f"{body_end + 2 + it.props_len} (22 + body {it.body_len} + properties {it.props_len})")
    return f"malformed item ({rc})"


cdef _check_limits(Py_ssize_t max_items, Py_ssize_t max_body):
    if max_items < 1:
        raise ValueError(f"max_items must be >= 1, not {max_items}")
    if max_body < 0 or max_body > BATCH_MAX_BODY_LIMIT:
        raise ValueError(f"max_body must be within 0..{BATCH_MAX_BODY_LIMIT}, not {max_body}")


def decode_batch_body(data, extra_properties=b"", Py_ssize_t max_items=BATCH_DEFAULT_MAX_ITEMS,
                      Py_ssize_t max_body=BATCH_DEFAULT_MAX_BODY):
    """Split a batch body into ``(bodies, properties, flags)``: three lists, one entry per item.

    ``properties[i]`` is the property string to store for item i: the item's own string, then, when
    ``extra_properties`` (already encoded, e.g. the batch header's properties and ``CLUSTER\\x01name``) is
    non-empty, a U+0002 if the item's string is non-empty and does not end with one, then
    ``extra_properties``. One pass over ``data``; BatchBodyError (a ValueError) names the first bad item.
    """
    cdef const unsigned char[::1] v = data
    cdef bytes extra = extra_properties if type(extra_properties) is bytes else _extra_bytes(extra_properties)
    cdef const unsigned char *ep = <const unsigned char *>PyBytes_AS_STRING(extra)
    cdef Py_ssize_t elen = PyBytes_GET_SIZE(extra)
    cdef Py_ssize_t n = v.shape[0], pos = 0, i = 0, mlen
    cdef const unsigned char *base
    cdef const unsigned char *q
    cdef BatchItemView it
    cdef int rc
    cdef list bodies = [], props = [], flags = []
    cdef object pb
    _check_limits(max_items, max_body)
    if n == 0:
        raise BatchBodyError("empty batch: the body holds no items")
    base = &v[0]
    while pos < n:
        if i >= max_items:
            raise BatchBodyError(f"batch item {i} at offset {pos}: more than max_items={max_items} items")
        q = base + pos
        rc = parse_batch_item(q, n - pos, max_body, &it)
        if rc != BATCH_ITEM_OK:
            raise BatchBodyError(f"batch item {i} at offset {pos}: {_batch_item_problem(rc, &it, n - pos, max_body)}")
        bodies.append(PyBytes_FromStringAndSize(<const char *>q + it.body_off, it.body_len))
        if elen == 0:
            props.append(PyBytes_FromStringAndSize(<const char *>q + it.props_off, it.props_len))
        else:
            mlen = merged_properties_length(q + it.props_off, it.props_len, elen)
            if mlen > MAX_PROPERTIES_LENGTH:
                raise BatchBodyError(
                    f"batch item {i} at offset {pos}: stored properties would be {mlen} bytes "
                    f"({it.props_len} of the item + {mlen - it.props_len} appended); at most {MAX_PROPERTIES_LENGTH}")
            pb = PyBytes_FromStringAndSize(NULL, mlen)
            write_merged_properties(<unsigned char *>PyBytes_AS_STRING(pb), q + it.props_off, it.props_len, ep, elen)
            props.append(pb)
        flags.append(it.flag)
        pos += it.total_size
        i += 1
    return bodies, props, flags


cdef bytes _extra_bytes(object value):
    if value is None:
        return b""
    if isinstance(value, str):
        return (<str>value).encode("utf-8")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"extra_properties must be bytes-like, not {type(value).__name__}")


cdef bytes _batch_bytes(object value, Py_ssize_t i, str what):
    """A body or property string as bytes: bytes as is, other buffers copied, str as UTF-8."""
    if isinstance(value, str):
        if what == "body":
            raise TypeError(f"batch item {i}: body must be bytes-like, not str")
        return (<str>value).encode("utf-8")
    if value is None and what != "body":
        return b""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(memoryview(value))
    raise TypeError(f"batch item {i}: {what} must be bytes-like, not {type(value).__name__}")


cdef int32_t _batch_flag(object value, Py_ssize_t i) except? -1:
    # C-level reads only (no __lt__/__index__ of int subclasses), so checking a flag runs no caller code.
    cdef long long f
    if not isinstance(value, int):
        raise TypeError(f"batch item {i}: flag must be an int, not {type(value).__name__}")
    try:
        f = value
    except OverflowError:
        f = 1LL << 40
    if f < -2147483648LL or f > 2147483647LL:
        raise BatchBodyError(f"batch item {i}: flag {int(value)} does not fit a signed 32-bit int")
    return <int32_t>f


def encode_batch_body(bodies, properties=None, flags=0, *, Py_ssize_t max_items=BATCH_DEFAULT_MAX_ITEMS,
                      Py_ssize_t max_body=BATCH_DEFAULT_MAX_BODY) -> bytes:
    """Encode messages as a batch body (``MessageDecoder.encodeMessages``): the inverse of decode_batch_body.

    ``bodies``: bytes-like, one per message. ``properties``: None (none), one property string for all
    (bytes or str), or one per message (bytes, str or None). ``flags``: one int for all or one per
    message. The same limits as decode_batch_body apply, so what this returns decodes.
    """
    cdef list bl = bodies if type(bodies) is list else list(bodies)
    cdef Py_ssize_t n = PyList_GET_SIZE(bl), i, total = 0, blen, plen
    cdef list pl = None, fl = None
    cdef bytes shared_props = b"", pb, body
    cdef int32_t shared_flag = 0
    cdef object item
    cdef unsigned char *d
    cdef unsigned char *end
    _check_limits(max_items, max_body)
    if n == 0:
        raise BatchBodyError("empty batch: no messages to encode")
    if n > max_items:
        raise BatchBodyError(f"batch item {max_items}: more than max_items={max_items} items ({n} given)")
    if properties is None or isinstance(properties, (bytes, bytearray, memoryview, str)):
        shared_props = _batch_bytes(properties, 0, "properties") if type(properties) is not bytes else properties
        if PyBytes_GET_SIZE(shared_props) > MAX_PROPERTIES_LENGTH:
            raise BatchBodyError(f"batch item 0: properties are {PyBytes_GET_SIZE(shared_props)} bytes; "
                                 f"at most {MAX_PROPERTIES_LENGTH}")
    else:
        pl = list(properties)
        if PyList_GET_SIZE(pl) != n:
            raise ValueError(f"{PyList_GET_SIZE(pl)} property strings for {n} bodies")
    if isinstance(flags, int):
        shared_flag = _batch_flag(flags, 0)
    else:
        fl = list(flags)
        if PyList_GET_SIZE(fl) != n:
            raise ValueError(f"{PyList_GET_SIZE(fl)} flags for {n} bodies")
    # Pass 1: normalise to bytes, check limits, size the output.
    plen = PyBytes_GET_SIZE(shared_props)
    for i in range(n):
        item = <object>PyList_GET_ITEM(bl, i)
        if not PyBytes_Check(item):
            if bl is bodies:
                bl = list(bl)
            item = _batch_bytes(item, i, "body")
            bl[i] = item
        blen = PyBytes_GET_SIZE(item)
        if blen > max_body:
            raise BatchBodyError(f"batch item {i}: body of {blen} bytes exceeds max_body {max_body}")
        if pl is not None:
            item = <object>PyList_GET_ITEM(pl, i)
            if not PyBytes_Check(item):
                item = _batch_bytes(item, i, "properties")
                pl[i] = item
            plen = PyBytes_GET_SIZE(item)
            if plen > MAX_PROPERTIES_LENGTH:
                raise BatchBodyError(f"batch item {i}: properties are {plen} bytes; at most {MAX_PROPERTIES_LENGTH}")
        if fl is not None:
            _batch_flag(<object>PyList_GET_ITEM(fl, i), i)
        total += BATCH_ITEM_FIXED + blen + plen
    # Pass 2: write every item straight into the result. ``pl`` and ``fl`` are private lists; ``bl`` may be the
    # caller's, which a conversion in pass 1 could have run code to change, hence the checks.
    out = PyBytes_FromStringAndSize(NULL, total)
    d = <unsigned char *>PyBytes_AS_STRING(out)
    end = d + total
    pb = shared_props
    for i in range(n):
        item = <object>PyList_GET_ITEM(bl, i) if PyList_GET_SIZE(bl) == n else None
        if not PyBytes_Check(item):
            raise RuntimeError("the bodies list changed while it was being encoded")
        body = <bytes>item
        if pl is not None:
            pb = <bytes>PyList_GET_ITEM(pl, i)
        if end - d < BATCH_ITEM_FIXED + PyBytes_GET_SIZE(body) + PyBytes_GET_SIZE(pb):
            raise RuntimeError("the bodies list changed while it was being encoded")
        d += write_batch_item(d, _batch_flag(<object>PyList_GET_ITEM(fl, i), i) if fl is not None else shared_flag,
                              <const unsigned char *>PyBytes_AS_STRING(body), <int32_t>PyBytes_GET_SIZE(body),
                              <const unsigned char *>PyBytes_AS_STRING(pb), <int32_t>PyBytes_GET_SIZE(pb))
    return out

