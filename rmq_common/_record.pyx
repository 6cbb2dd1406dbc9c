# cython: language_level=3
"""Stored-record codec: RocketMQ's commitlog record layout (see _record.pxd for the drawing).

The C-level functions are the hot path shared by the store (append, dispatch, recovery scan, reads).
The Python-level functions serve tests, tools and clients: encode one record, decode records into
``MessageExt`` objects, the masked CRC and Java's String.hashCode over UTF-8 bytes.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.string cimport memcpy, memcmp
from libc.stdint cimport int16_t, int32_t, int64_t, uint32_t

import ipaddress

MAGIC_CODE_V1 = <int32_t>MAGIC_V1
MAGIC_CODE_V2 = <int32_t>MAGIC_V2
BLANK_MAGIC_CODE = <int32_t>MAGIC_BLANK
RECORD_FIXED_LENGTH_V4 = RECORD_FIXED_V4
TOPIC_MAX_LENGTH = MAX_TOPIC_LENGTH_V1
PROPERTIES_MAX_LENGTH = MAX_PROPERTIES_LENGTH


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


cdef int parse_record(const unsigned char *p, Py_ssize_t avail, RecordView *rv) noexcept nogil:
    """Locate every field of the record at ``p``; no CRC check. Returns RECORD_* codes."""
    cdef Py_ssize_t pos
    if avail < 8:
        return RECORD_TRUNCATED if avail > 0 else RECORD_END
    rv.total_size = rmq_get_i32(p)
    rv.magic = rmq_get_i32(p + 4)
    if rv.total_size == 0 and rv.magic == 0:
        return RECORD_END
    if rv.magic == MAGIC_BLANK:
        return RECORD_BLANK if rv.total_size >= 8 and rv.total_size <= avail else RECORD_BAD_SIZE
    if rv.magic != MAGIC_V1:
        return RECORD_BAD_MAGIC
    if rv.total_size < RECORD_FIXED_V4 or rv.total_size > avail:
        return RECORD_BAD_SIZE if rv.total_size < RECORD_FIXED_V4 else RECORD_TRUNCATED
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
    if rv.body_len < 0 or pos + rv.body_len + 1 > rv.total_size:
        return RECORD_BAD_SIZE
    pos += rv.body_len
    rv.topic_len = p[pos]
    rv.topic_off = <int32_t>(pos + 1)
    pos += 1 + rv.topic_len
    if pos + 2 > rv.total_size:
        return RECORD_BAD_SIZE
    rv.props_len = rmq_get_i16(p + pos)
    rv.props_off = <int32_t>(pos + 2)
    if rv.props_len < 0 or pos + 2 + rv.props_len != rv.total_size:
        return RECORD_BAD_SIZE
    return RECORD_OK


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
