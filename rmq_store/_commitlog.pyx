# cython: language_level=3
"""Commitlog hot paths: encode a batch into the mapped file, dispatch records to consume queues and the
index, scan files during recovery, and gather a queue's records for a read.

Everything here works on raw pointers into MappedFiles and typed arrays; the orchestration (which file,
when to roll, locking, flushing) lives in commitlog.py and store.py.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE, PyBytes_Check, PyBytes_FromStringAndSize
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memcmp

from rmq_common._record cimport (
    RecordView, PropertyScan, masked_crc32, java_hash_utf8, index_hash, parse_record, validate_record,
    scan_properties, record_length, write_record, rmq_put_i32, rmq_get_i32, rmq_get_i64, rmq_prefetch_w,
    MAGIC_BLANK, MAGIC_V1, END_FILE_MIN_BLANK_LENGTH, MAX_TOPIC_LENGTH_V1, MAX_PROPERTIES_LENGTH,
    RECORD_OK, RECORD_BLANK, RECORD_END, RECORD_TRUNCATED, RECORD_BAD_SIZE, RECORD_BAD_MAGIC, SYSFLAG_TX_MASK, SYSFLAG_TX_PREPARED, SYSFLAG_TX_ROLLBACK,
)
from rmq_store._mapped cimport MappedFile
from rmq_store._consumequeue cimport ConsumeQueue
from rmq_store._index cimport IndexFile

import numpy as np
cimport numpy as cnp

cnp.import_array()

SCHEDULE_TOPIC = b"SCHEDULE_TOPIC_XXXX"

cdef enum:
    PENDING_KEYS = 64


class MessageTooLargeError(ValueError):
    """A body over max_message_size, properties over 32767 bytes, or a record larger than a commitlog file.
    (A topic over 127 bytes is rejected earlier by topic validation with InvalidTopicError.)"""


# ----------------------------------------------------------------------------------------------------
# Append
# ----------------------------------------------------------------------------------------------------

cdef class Dispatcher

def validate_batch(bytes topic, list bodies, object properties, int64_t max_message_size,
                   Py_ssize_t max_record_size, Py_ssize_t host_len_extra):
    """Check every message of a batch before anything is written.
    Returns (record bytes of the whole batch, the largest record)."""
    cdef Py_ssize_t i, n = PyList_GET_SIZE(bodies), plen = 0, blen, total = 0, rec, largest = 0
    cdef object item
    cdef bint shared_props = properties is None or PyBytes_Check(properties)
    cdef Py_ssize_t topic_len = PyBytes_GET_SIZE(topic)
    if topic_len == 0:
        raise ValueError("topic is empty")
    if topic_len > MAX_TOPIC_LENGTH_V1:
        raise MessageTooLargeError(f"topic is {topic_len} bytes; the v1 record allows at most {MAX_TOPIC_LENGTH_V1}")
    if properties is not None and not shared_props:
        if not isinstance(properties, list) or len(properties) != n:
            raise ValueError("properties must be None, bytes, or a list with one bytes per body")
    if shared_props and properties is not None:
        plen = PyBytes_GET_SIZE(properties)
        if plen > MAX_PROPERTIES_LENGTH:
            raise MessageTooLargeError(f"properties are {plen} bytes; at most {MAX_PROPERTIES_LENGTH}")
    for i in range(n):
        item = <object>PyList_GET_ITEM(bodies, i)
        if not PyBytes_Check(item):
            raise TypeError(f"message {i}: body must be bytes, not {type(item).__name__}")
        blen = PyBytes_GET_SIZE(item)
        if blen > max_message_size:
            raise MessageTooLargeError(f"message {i}: body of {blen} bytes exceeds max_message_size {max_message_size}")
        if not shared_props:
            item = <object>PyList_GET_ITEM(properties, i)
            if not PyBytes_Check(item):
                raise TypeError(f"message {i}: properties must be bytes, not {type(item).__name__}")
            plen = PyBytes_GET_SIZE(item)
            if plen > MAX_PROPERTIES_LENGTH:
                raise MessageTooLargeError(f"message {i}: properties are {plen} bytes; at most {MAX_PROPERTIES_LENGTH}")
        rec = record_length(blen, topic_len, plen, 8, 8) + host_len_extra
        if rec > max_record_size:
            raise MessageTooLargeError(f"message {i}: record of {rec} bytes does not fit a commitlog file")
        total += rec
        if rec > largest:
            largest = rec
    return total, largest


def append_batch(MappedFile mf, bytes topic, int32_t queue_id, list bodies, object properties,
                 int32_t flag, int32_t sys_flag, int64_t born_ts, bytes born_host, int64_t store_ts,
                 bytes store_host, int32_t reconsume_times, int64_t prepared_tx_offset,
                 int64_t next_queue_offset, Py_ssize_t start, int64_t[::1] out_phy, Dispatcher dispatcher=None):
    """Encode bodies[start:] as records at mf.wrote_position until the batch ends or the file fills.

    Returns (count written, file_full). When the next record plus an 8-byte blank marker does not fit,
    a BLANK marker fills the file's tail and file_full is True; the caller rolls to the next file.
    The batch was validated by validate_batch first, so encoding cannot fail half way.

    With a ``dispatcher`` each record is dispatched (consume-queue unit, index keys) right after it is
    written, while it is still in the CPU cache, from the field positions the encoder already knows;
    Dispatcher.dispatch does the same from parsed records (recovery, replication).
    """
    cdef Py_ssize_t i, n = PyList_GET_SIZE(bodies), rec, written = 0
    cdef int64_t pos = mf.wrote_position, size = mf.file_size
    cdef unsigned char *base = <unsigned char *><size_t>mf.address
    cdef const unsigned char *topic_p = <const unsigned char *>PyBytes_AS_STRING(topic)
    cdef int32_t topic_len = <int32_t>PyBytes_GET_SIZE(topic)
    cdef const unsigned char *bh = <const unsigned char *>PyBytes_AS_STRING(born_host)
    cdef const unsigned char *sh = <const unsigned char *>PyBytes_AS_STRING(store_host)
    cdef int32_t bh_len = <int32_t>PyBytes_GET_SIZE(born_host), sh_len = <int32_t>PyBytes_GET_SIZE(store_host)
    cdef bint shared_props = properties is None or PyBytes_Check(properties)
    cdef const unsigned char *props_p = NULL
    cdef int32_t props_len = 0
    cdef object body, prop
    cdef const unsigned char *body_p
    cdef int32_t body_len
    cdef int tx = sys_flag & SYSFLAG_TX_MASK
    cdef bint no_queue_slot = tx == SYSFLAG_TX_PREPARED or tx == SYSFLAG_TX_ROLLBACK
    cdef int64_t qoff = next_queue_offset
    cdef bint full = False
    cdef RecordView rv
    cdef int32_t body_off = 72 + bh_len + sh_len
    # The host-format bits describe the hosts actually written, whatever the caller passed.
    sys_flag &= ~0x30
    if bh_len == 20:
        sys_flag |= 0x10
    if sh_len == 20:
        sys_flag |= 0x20
    if shared_props and properties is not None:
        props_p = <const unsigned char *>PyBytes_AS_STRING(properties)
        props_len = <int32_t>PyBytes_GET_SIZE(properties)
    for i in range(start, n):
        body = <object>PyList_GET_ITEM(bodies, i)
        body_p = <const unsigned char *>PyBytes_AS_STRING(body)
        body_len = <int32_t>PyBytes_GET_SIZE(body)
        if not shared_props:
            prop = <object>PyList_GET_ITEM(properties, i)
            props_p = <const unsigned char *>PyBytes_AS_STRING(prop)
            props_len = <int32_t>PyBytes_GET_SIZE(prop)
        rec = record_length(body_len, topic_len, props_len, bh_len, sh_len)
        if pos + rec + END_FILE_MIN_BLANK_LENGTH > size:
            rmq_put_i32(base + pos, <int32_t>(size - pos))
            rmq_put_i32(base + pos + 4, MAGIC_BLANK)
            pos = size
            full = True
            break
        write_record(base + pos, <int32_t>rec, masked_crc32(body_p, body_len), queue_id, flag,
                     0 if no_queue_slot else qoff, mf.file_from_offset + pos, sys_flag, born_ts, bh, bh_len,
                     store_ts, sh, sh_len, reconsume_times, prepared_tx_offset,
                     body_p, body_len, topic_p, topic_len, props_p, props_len)
        out_phy[i] = mf.file_from_offset + pos
        if dispatcher is not None:
            rv.total_size = <int32_t>rec
            rv.queue_id = queue_id
            rv.queue_offset = 0 if no_queue_slot else qoff
            rv.phy_offset = mf.file_from_offset + pos
            rv.sys_flag = sys_flag
            rv.store_timestamp = store_ts
            rv.topic_off = body_off + body_len + 1
            rv.topic_len = topic_len
            rv.props_off = rv.topic_off + topic_len + 2
            rv.props_len = props_len
            mf.wrote_position = pos + rec      # the record is in the log even if its dispatch fails
            dispatcher._dispatch_one(base + pos, &rv)
        pos += rec
        written += 1
        if not no_queue_slot:
            qoff += 1
    mf.wrote_position = pos
    if dispatcher is not None:
        dispatcher._flush_keys()
        dispatcher.dispatched_to = mf.file_from_offset + pos
        if written:
            dispatcher.last_store_ts = store_ts
    return written, full


# ----------------------------------------------------------------------------------------------------
# Recovery scan
# ----------------------------------------------------------------------------------------------------

def scan_file(MappedFile mf, int64_t start, bint check_crc):
    """Walk the records of one file from ``start``.

    Returns (end, rc, count, last_store_ts): ``end`` is the position after the last valid record (or the
    file size after a BLANK tail), ``rc`` why the walk stopped (0 end of data, 2 blank tail, negative =
    damage at ``end``), ``count`` the records passed.
    """
    cdef const unsigned char *base = <const unsigned char *><size_t>mf.address
    cdef int64_t pos = start, size = mf.file_size, count = 0, last_ts = 0
    cdef RecordView rv
    cdef int rc = RECORD_END
    with nogil:
        while pos < size:
            rc = validate_record(base + pos, size - pos, mf.file_from_offset + pos, check_crc, &rv)
            if rc == RECORD_OK:
                pos += rv.total_size
                count += 1
                last_ts = rv.store_timestamp
                continue
            if rc == RECORD_BLANK:
                pos = size
            break
    return pos, rc, count, last_ts


def first_store_timestamp(MappedFile mf) -> int:
    """Store time of the first record of a file (0 if it has none)."""
    cdef RecordView rv
    if mf.closed or parse_record(<const unsigned char *><size_t>mf.address, mf.file_size, &rv) != RECORD_OK:
        return 0
    return rv.store_timestamp


# ----------------------------------------------------------------------------------------------------
# Dispatch: commitlog records → consume queue units and index entries
# ----------------------------------------------------------------------------------------------------

cdef class Dispatcher:
    """Builds consume queues and the index from commitlog records, online and during recovery.

    ``queue_for(topic: str, queue_id: int) -> ConsumeQueue`` finds or creates a queue;
    ``index_roll() -> IndexFile`` returns a fresh index file when the current one is full.
    """
    cdef object queue_for
    cdef object index_roll
    cdef public IndexFile index
    cdef public bint index_enabled
    cdef public int64_t index_skip_below   # records below this offset are already indexed
    cdef public int64_t dispatched_to       # commitlog offset after the last dispatched record
    cdef public int64_t last_store_ts
    # Recovery replay: a record for a queue with no files but a queue offset > 0 means the queue's files
    # were lost; raise so the store rebuilds every queue from the commitlog's start.
    cdef public bint strict
    # False while re-indexing only (a lost index after a clean shutdown): queues are left alone.
    cdef public bint queues_enabled
    # Replication: when a dict, every queue given a unit is recorded (as a key) so the store can wake
    # long polling on exactly those queues after dispatching replicated bytes. None on the put path.
    cdef public object touched
    cdef int64_t[::1] delay_ms              # delay level (1-based) → ms, for SCHEDULE_TOPIC tags codes
    cdef ConsumeQueue last_cq
    cdef bytes last_topic
    cdef int32_t last_qid
    cdef int32_t last_seed      # hash of "<last_topic>#", the prefix of every index key of that topic
    # Index entries waiting to be inserted: their slots are prefetched first, so the cache misses of a
    # batch of random slots overlap instead of stalling one by one.
    cdef int32_t pend_hash[PENDING_KEYS]
    cdef int64_t pend_phy[PENDING_KEYS]
    cdef int64_t pend_ts[PENDING_KEYS]
    cdef int npending

    def __init__(self, queue_for, index_roll, IndexFile index, bint index_enabled, delay_levels_ms):
        self.queue_for = queue_for
        self.index_roll = index_roll
        self.index = index
        self.index_enabled = index_enabled
        self.index_skip_below = -1
        self.dispatched_to = 0
        self.last_store_ts = 0
        self.delay_ms = np.ascontiguousarray(delay_levels_ms, dtype=np.int64)
        self.last_cq = None
        self.last_topic = None
        self.last_qid = -1
        self.queues_enabled = True
        self.touched = None

    def forget_queues(self) -> None:
        """Drop the cached queue (after a topic is deleted)."""
        self.last_cq = None
        self.last_topic = None

    cdef ConsumeQueue _queue(self, const unsigned char *topic, int32_t topic_len, int32_t qid):
        if (self.last_cq is not None and qid == self.last_qid and PyBytes_GET_SIZE(self.last_topic) == topic_len
                and memcmp(PyBytes_AS_STRING(self.last_topic), topic, topic_len) == 0):
            return self.last_cq
        t = PyBytes_FromStringAndSize(<const char *>topic, topic_len)
        self.last_cq = self.queue_for(t.decode("utf-8", "replace"), qid)
        self.last_topic = t
        self.last_qid = qid
        self.last_seed = <int32_t>(<unsigned int>java_hash_utf8(topic, topic_len, 0) * 31u + 35u)  # '#'
        return self.last_cq

    cdef int _index_key(self, int32_t seed, const unsigned char *key, Py_ssize_t n, int64_t phy, int64_t ts) except -1:
        cdef int32_t h = index_hash(java_hash_utf8(key, n, seed))
        cdef IndexFile idx = self.index
        if self.npending == PENDING_KEYS:
            self._flush_keys()
        rmq_prefetch_w(idx.base + 40 + 4 * (h % idx.slot_num))
        self.pend_hash[self.npending] = h
        self.pend_phy[self.npending] = phy
        self.pend_ts[self.npending] = ts
        self.npending += 1
        return 0

    cdef int _flush_keys(self) except -1:
        cdef int i
        for i in range(self.npending):
            if not self.index.put_key(self.pend_hash[i], self.pend_phy[i], self.pend_ts[i]):
                self.index._write_header()
                self.index = self.index_roll()
                if not self.index.put_key(self.pend_hash[i], self.pend_phy[i], self.pend_ts[i]):
                    raise RuntimeError("a fresh index file refused an entry")
        if self.npending and self.index is not None:
            self.index._write_header()
        self.npending = 0
        return 0

    cdef int _dispatch_one(self, const unsigned char *p, RecordView *rv) except -1:
        cdef PropertyScan ps
        cdef int64_t tags_code = 0, level
        cdef int tx = rv.sys_flag & SYSFLAG_TX_MASK
        cdef int32_t seed
        cdef Py_ssize_t i, s
        cdef const unsigned char *props = p + rv.props_off
        cdef const unsigned char *k
        cdef ConsumeQueue cq
        scan_properties(props, rv.props_len, &ps)
        if tx != SYSFLAG_TX_PREPARED and tx != SYSFLAG_TX_ROLLBACK and self.queues_enabled:
            if ps.tags_len > 0:
                tags_code = java_hash_utf8(props + ps.tags_off, ps.tags_len, 0)
            if (rv.topic_len == 19 and memcmp(p + rv.topic_off, <const char *>SCHEDULE_TOPIC, 19) == 0
                    and ps.delay_len > 0):
                # A delayed message's unit carries its due time (CommitLog.checkMessageAndReturnSize).
                level = 0
                for i in range(ps.delay_len):
                    if props[ps.delay_off + i] < 48 or props[ps.delay_off + i] > 57:
                        break
                    level = level * 10 + props[ps.delay_off + i] - 48
                if level > self.delay_ms.shape[0]:
                    level = self.delay_ms.shape[0]
                if level >= 1:
                    tags_code = rv.store_timestamp + self.delay_ms[level - 1]
            cq = self._queue(p + rv.topic_off, rv.topic_len, rv.queue_id)
            if cq is not None:          # None: a replayed record of a deleted topic
                if self.strict and rv.queue_offset > 0 and not cq.files:
                    from rmq_store._mapped import CorruptFileError
                    raise CorruptFileError(f"consume queue {cq.topic}-{cq.queue_id} lost its files")
                cq.put_unit(rv.phy_offset, rv.total_size, tags_code, rv.queue_offset)
                if self.touched is not None:
                    self.touched[cq] = None
        if self.index_enabled and tx != SYSFLAG_TX_ROLLBACK and rv.phy_offset > self.index_skip_below \
                and (ps.keys_len > 0 or ps.uniq_len > 0):
            if tx != SYSFLAG_TX_PREPARED and tx != SYSFLAG_TX_ROLLBACK and self.queues_enabled:
                seed = self.last_seed        # _queue() just matched or set this record's topic
            else:
                seed = java_hash_utf8(p + rv.topic_off, rv.topic_len, 0)
                seed = <int32_t>(<unsigned int>seed * 31u + 35u)   # '#'
            if ps.uniq_len > 0:
                self._index_key(seed, props + ps.uniq_off, ps.uniq_len, rv.phy_offset, rv.store_timestamp)
            if ps.keys_len > 0:
                k = props + ps.keys_off
                s = 0
                for i in range(ps.keys_len + 1):
                    if i == ps.keys_len or k[i] == 32:
                        if i > s:
                            self._index_key(seed, k + s, i - s, rv.phy_offset, rv.store_timestamp)
                        s = i + 1
        return 0

    def dispatch(self, MappedFile mf, int64_t start, int64_t end) -> int:
        """Dispatch the records of mf in [start, end); returns how many were dispatched."""
        cdef const unsigned char *base = <const unsigned char *><size_t>mf.address
        cdef int64_t pos = start
        cdef RecordView rv
        cdef int rc, count = 0
        try:
            while pos < end:
                rc = parse_record(base + pos, end - pos, &rv)
                if rc == RECORD_BLANK or rc == RECORD_END:
                    break
                if rc != RECORD_OK:
                    raise ValueError(f"{mf.path}: malformed record at {pos} during dispatch ({rc})")
                self._dispatch_one(base + pos, &rv)
                pos += rv.total_size
                count += 1
                self.last_store_ts = rv.store_timestamp
        finally:
            self._flush_keys()
        self.dispatched_to = mf.file_from_offset + pos
        return count

    def dispatch_available(self, MappedFile mf, int64_t start, int64_t end):
        """Dispatch the complete records of mf in [start, end), where ``end`` may cut a record in two
        (replicated bytes arrive in chunks that are not aligned to records).

        Returns (count, pos, rc): ``pos`` is where dispatch stopped (relative to the file). ``rc`` 0: the
        bytes from ``pos`` are the beginning of a record still arriving; 2: a BLANK marker ends the file,
        ``pos`` is the file size; negative (RECORD_* codes): the bytes at ``pos`` are no record — the
        caller must not keep them. Each record's physical-offset field must equal its position, which
        catches bytes appended at the wrong place.
        """
        cdef const unsigned char *base = <const unsigned char *><size_t>mf.address
        cdef int64_t pos = start, blank
        cdef RecordView rv
        cdef int rc = 0, count = 0
        assert 0 <= start and end <= mf.file_size, (start, end, mf.file_size)
        try:
            while pos < end:
                if end - pos >= 8 and rmq_get_i32(base + pos + 4) == MAGIC_BLANK:
                    # The padding after the marker may still be arriving: its size alone must reach the
                    # file's end exactly.
                    blank = rmq_get_i32(base + pos)
                    if blank < 8 or pos + blank != mf.file_size:
                        rc = RECORD_BAD_SIZE
                        break
                    pos = mf.file_size
                    rc = RECORD_BLANK
                    break
                rc = validate_record(base + pos, end - pos, mf.file_from_offset + pos, False, &rv)
                if (rc == RECORD_TRUNCATED and end < mf.file_size
                        and (end - pos < 8 or rv.total_size <= mf.file_size - pos)):
                    rc = 0          # the rest of this record comes with the next chunk
                    break
                if rc != RECORD_OK:
                    if rc == RECORD_END:
                        rc = RECORD_BAD_MAGIC   # zeros where the next record should start
                    break
                self._dispatch_one(base + pos, &rv)
                pos += rv.total_size
                count += 1
                self.last_store_ts = rv.store_timestamp
                rc = 0
        finally:
            self._flush_keys()
        self.dispatched_to = mf.file_from_offset + pos
        return count, pos, rc


# ----------------------------------------------------------------------------------------------------
# Reads: gather a queue's records
# ----------------------------------------------------------------------------------------------------

def gather(ConsumeQueue cq, list cl_files, int64_t cl_file_size, int64_t cl_min_phy, int64_t cl_max_phy,
           int64_t offset, int max_count, int64_t max_bytes, int64_t max_scan, object tag_codes,
           int64_t[::1] out_phy, int32_t[::1] out_size, int64_t[::1] out_qoff, int64_t[:, ::1] out_runs):
    """Collect up to max_count records of ``cq`` from ``offset``.

    Returns (found, scanned, bytes, filtered, missing, views): ``scanned`` units were consumed (the
    caller's next offset is offset + scanned); ``filtered`` units did not match ``tag_codes`` (a set of
    ints, or None); ``missing`` units pointed below the commitlog's minimum or past its end, into a file
    retention closed, or at a record whose size, magic, queue id or queue offset disagrees with the unit
    (reported, never returned). ``views`` has one read-only view per run of records contiguous in one
    commitlog file; ``out_runs[r]`` = (file index, start, end, records) of run r.
    """
    cdef int nruns = 0
    cdef int64_t o, phy, tags, total = 0, first_from, idx, rel
    cdef int32_t size
    cdef const unsigned char *u
    cdef const unsigned char *rec
    cdef int found = 0, filtered = 0, missing = 0, r
    cdef int64_t scanned = 0
    cdef MappedFile mf
    cdef Py_ssize_t nfiles = len(cl_files)
    if nfiles == 0:
        return 0, 0, 0, 0, 0, []
    first_from = (<MappedFile>cl_files[0]).file_from_offset
    o = offset
    while o < cq.max_offset and found < max_count and scanned < max_scan:
        u = cq.unit_ptr(o)
        if u == NULL:
            break
        phy = rmq_get_i64(u)
        size = rmq_get_i32(u + 8)
        tags = rmq_get_i64(u + 12)
        if size == 0x7FFFFFFF:          # padding unit
            o += 1
            scanned += 1
            continue
        if found > 0 and total + size > max_bytes:
            break
        o += 1
        scanned += 1
        if phy < cl_min_phy or phy + size > cl_max_phy:
            missing += 1
            continue
        if tag_codes is not None and tags not in tag_codes:
            filtered += 1
            continue
        idx = (phy - first_from) // cl_file_size
        if idx < 0 or idx >= nfiles:
            missing += 1
            continue
        mf = <MappedFile>cl_files[idx]
        if mf.closed:           # deleted by retention since the caller took its snapshot of the list
            missing += 1
            continue
        rel = phy - mf.file_from_offset
        rec = (<const unsigned char *><size_t>mf.address) + rel
        # The unit must point at the record it was made for: size, magic, queue id and queue offset.
        if (rel + size > cl_file_size or rmq_get_i32(rec) != size or rmq_get_i32(rec + 4) != MAGIC_V1
                or rmq_get_i32(rec + 12) != cq.queue_id or rmq_get_i64(rec + 20) != o - 1):
            missing += 1
            continue
        out_phy[found] = phy
        out_size[found] = size
        out_qoff[found] = o - 1
        if nruns > 0 and out_runs[nruns - 1, 0] == idx and out_runs[nruns - 1, 2] == rel:
            out_runs[nruns - 1, 2] = rel + size
            out_runs[nruns - 1, 3] += 1
        else:
            out_runs[nruns, 0] = idx
            out_runs[nruns, 1] = rel
            out_runs[nruns, 2] = rel + size
            out_runs[nruns, 3] = 1
            nruns += 1
        total += size
        found += 1
    # Views are taken here, with the GIL held since the first file access, so no retention pass can
    # unmap a file between finding a record and pinning its mapping.
    views = []
    for r in range(nruns):
        views.append(memoryview(cl_files[out_runs[r, 0]]).toreadonly()[out_runs[r, 1]:out_runs[r, 2]])
    return found, scanned, total, filtered, missing, views


def last_nonzero(MappedFile mf, int64_t start) -> int:
    """Position just past the last non-zero byte at or after ``start`` (``start`` if none): how much of a
    torn tail recovery erases."""
    cdef const unsigned char *base = <const unsigned char *><size_t>mf.address
    cdef int64_t pos = mf.file_size
    with nogil:
        while pos > start and base[pos - 1] == 0:
            pos -= 1
    return pos


cdef int _record_at(MappedFile mf, int64_t rel, RecordView *rv):
    if rel < 0 or rel >= mf.file_size or mf.closed:
        return RECORD_END
    return parse_record((<const unsigned char *><size_t>mf.address) + rel, mf.file_size - rel, rv)


def store_timestamp_at(MappedFile mf, int64_t rel) -> int:
    """STORETIMESTAMP of the record at ``rel`` in ``mf`` (-1 if no valid record is there)."""
    cdef RecordView rv
    return rv.store_timestamp if _record_at(mf, rel, &rv) == RECORD_OK else -1


def record_size_at(MappedFile mf, int64_t rel) -> int:
    """TOTALSIZE of the well-formed record at ``rel`` (-1 if there is none)."""
    cdef RecordView rv
    return rv.total_size if _record_at(mf, rel, &rv) == RECORD_OK else -1


def record_view(list files, int64_t file_size, int64_t phy, int64_t max_phy):
    """A read-only view of the well-formed record at commitlog offset ``phy`` (None if there is none).
    Finding the file, checking the record and pinning the mapping happen without releasing the GIL."""
    cdef MappedFile mf
    cdef RecordView rv
    cdef int64_t idx, rel
    if not files or phy >= max_phy:
        return None
    idx = (phy - (<MappedFile>files[0]).file_from_offset) // file_size
    if idx < 0 or idx >= len(files):
        return None
    mf = <MappedFile>files[idx]
    if mf.closed:
        return None
    rel = phy - mf.file_from_offset
    if parse_record((<const unsigned char *><size_t>mf.address) + rel, mf.wrote_position - rel, &rv) != RECORD_OK:
        return None
    return memoryview(mf).toreadonly()[rel:rel + rv.total_size]
