"""The MessageStore facade: statuses, limits, filtering, lookups, lifecycle, flushing, retention and failures."""
from __future__ import annotations

import os
import threading
import time

import pytest

from rmq_common._record import decode_record, decode_records, java_hash
from rmq_common.properties import PropertiesTooLongError
from rmq_common.topic import InvalidTopicError
from rmq_store import (
    DiskFullError, FlushDiskType, GetStatus, MessageStore, MessageTooLargeError, PutStatus, StoreClosedError,
    StoreError, StoreLockedError,
)
from rmq_store.commitlog import MappedFileQueue

FAR_FUTURE_MS = 4_000_000_000_000


def bodies_of(result) -> list[bytes]:
    return [bytes(b) for b in result.bodies()]


def body(i: int, size: int = 200) -> bytes:
    stem = f"msg-{i}-".encode()
    return (stem * (size // len(stem) + 1))[:size]


def wait_for(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


# ---------------------------------------------------------------------------------------------------------------
# get_messages statuses
# ---------------------------------------------------------------------------------------------------------------
def test_get_statuses_and_next_begin_offsets(make_config, open_store):
    store = open_store(make_config())
    r = store.get_messages("Nope", 0, 0)
    assert (r.status, r.next_begin_offset, r.count) == (GetStatus.NO_MATCHED_LOGIC_QUEUE, 0, 0)
    # A queue exists once something was put to it; a prepared transaction message creates it but adds no unit.
    store.put_batch("Half", [b"prepared"], 0, sys_flag=0x4)
    r = store.get_messages("Half", 0, 0)
    assert (r.status, r.next_begin_offset, r.min_offset, r.max_offset) == (GetStatus.NO_MESSAGE_IN_QUEUE, 0, 0, 0)
    r = store.get_messages("Half", 0, 5)
    assert (r.status, r.next_begin_offset) == (GetStatus.NO_MESSAGE_IN_QUEUE, 0)

    for i in range(10):
        assert store.put("T", body(i), 2).status is PutStatus.PUT_OK
    r = store.get_messages("T", 2, 0)
    assert r.status is GetStatus.FOUND and r.found
    assert (r.count, r.next_begin_offset, r.min_offset, r.max_offset) == (10, 10, 0, 10)
    assert r.queue_offsets.tolist() == list(range(10))
    assert bodies_of(r) == [body(i) for i in range(10)]
    r = store.get_messages("T", 2, 5, max_count=3)
    assert (r.status, r.count, r.next_begin_offset) == (GetStatus.FOUND, 3, 8)
    assert r.queue_offsets.tolist() == [5, 6, 7] and bodies_of(r) == [body(5), body(6), body(7)]
    r = store.get_messages("T", 2, 10)
    assert (r.status, r.next_begin_offset, r.count) == (GetStatus.OFFSET_OVERFLOW_ONE, 10, 0)
    r = store.get_messages("T", 2, 11)
    assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_OVERFLOW_BADLY, 0)   # min == 0 → min
    r = store.get_messages("T", 2, 10 ** 12)
    assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_OVERFLOW_BADLY, 0)
    assert store.get_messages("T", 1, 0).status is GetStatus.NO_MATCHED_LOGIC_QUEUE   # other queue id
    assert store.get_messages("T", 0, 0).status is GetStatus.NO_MATCHED_LOGIC_QUEUE
    assert store.get_messages("t", 2, 0).status is GetStatus.NO_MATCHED_LOGIC_QUEUE   # topics are case-sensitive


def test_offset_statuses_after_retention(make_config, open_store):
    store = open_store(make_config(delete_files_batch_max=100))
    for i in range(200):
        store.put("R", body(i, 1000), 0)
    assert len(store.commitlog.files) >= 3
    store.clean_expired_files(now_ms=FAR_FUTURE_MS, force=True)
    lo, hi = store.min_offset("R", 0), store.max_offset("R", 0)
    assert 0 < lo < hi == 200
    r = store.get_messages("R", 0, 0)
    assert (r.status, r.next_begin_offset, r.min_offset, r.max_offset) == (GetStatus.OFFSET_TOO_SMALL, lo, lo, hi)
    r = store.get_messages("R", 0, lo - 1)
    assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_TOO_SMALL, lo)
    r = store.get_messages("R", 0, hi + 1)
    assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_OVERFLOW_BADLY, hi)   # min != 0 → max
    r = store.get_messages("R", 0, hi)
    assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_OVERFLOW_ONE, hi)
    r = store.get_messages("R", 0, lo, max_count=1000)
    assert r.status is GetStatus.FOUND and r.queue_offsets.tolist() == list(range(lo, hi))
    assert bodies_of(r) == [body(i, 1000) for i in range(lo, hi)]


def test_max_count_and_max_bytes(make_config, open_store):
    store = open_store(make_config())
    sizes = []
    for i in range(100):
        sizes.append(store.put("L", body(i, 500), 0).wrote_bytes)
    s = sizes[0]
    assert len(set(sizes)) == 1
    r = store.get_messages("L", 0, 0, max_count=7)
    assert r.count == 7 and r.next_begin_offset == 7
    r = store.get_messages("L", 0, 0, max_count=100, max_bytes=int(s * 2.5))
    assert (r.count, r.next_begin_offset, r.total_bytes) == (2, 2, 2 * s)
    r = store.get_messages("L", 0, 3, max_count=100, max_bytes=s * 4)
    assert (r.count, r.next_begin_offset) == (4, 7)
    r = store.get_messages("L", 0, 10, max_count=100, max_bytes=10)     # the first match is always returned
    assert (r.count, r.next_begin_offset) == (1, 11)
    r = store.get_messages("L", 0, 0, max_count=0)
    assert r.count == 1                                                  # treated as 1
    r = store.get_messages("L", 0, 0, max_count=1000)
    assert r.count == 100 and sum(len(x) for x in r.records()) == r.total_bytes == 100 * s


def test_tags_filtering(make_config, open_store):
    store = open_store(make_config())
    tags = ["A", "B", "A", "C", None, "A", "B", "Ω-tag"]
    for i, t in enumerate(tags):
        store.put("F", body(i), 0, tags=t)
    r = store.get_messages("F", 0, 0, tags_codes={java_hash("A")})
    assert r.status is GetStatus.FOUND
    assert r.queue_offsets.tolist() == [0, 2, 5]
    assert [decode_record(x).tags for x in r.records()] == ["A", "A", "A"]
    assert r.next_begin_offset == 8 and r.filtered == 5
    r = store.get_messages("F", 0, 0, max_count=2, tags_codes={java_hash("A")})
    assert r.queue_offsets.tolist() == [0, 2] and r.next_begin_offset == 3
    r = store.get_messages("F", 0, 0, tags_codes={java_hash("A"), java_hash("C")})
    assert r.queue_offsets.tolist() == [0, 2, 3, 5]
    r = store.get_messages("F", 0, 0, tags_codes={java_hash("Ω-tag")})
    assert r.queue_offsets.tolist() == [7]
    r = store.get_messages("F", 0, 0, tags_codes={0})                    # untagged: tags code 0
    assert r.queue_offsets.tolist() == [4]
    r = store.get_messages("F", 0, 0, tags_codes={java_hash("Z")})
    assert (r.status, r.count, r.next_begin_offset, r.filtered) == (GetStatus.NO_MATCHED_MESSAGE, 0, 8, 8)
    r = store.get_messages("F", 0, 6, tags_codes={java_hash("A")})
    assert (r.status, r.next_begin_offset) == (GetStatus.NO_MATCHED_MESSAGE, 8)


def test_records_bodies_to_bytes_across_files(make_config, open_store):
    store = open_store(make_config())
    expected = [os.urandom((i * 211) % 3000) for i in range(120)]
    phys = []
    for i in range(0, 120, 6):
        res = store.put_batch("B", expected[i:i + 6], 1)
        phys += res.phy_offsets.tolist()
    assert len(store.commitlog.files) >= 3
    r = store.get_messages("B", 1, 0, max_count=200, max_bytes=1 << 30)
    assert r.count == 120 and len(r.buffers) >= 3          # one buffer per contiguous run per file
    assert sum(r.buffer_counts) == 120
    recs = [x.tobytes() for x in r.records()]
    assert bodies_of(r) == expected
    assert [decode_record(x).body for x in recs] == expected
    assert r.to_bytes() == b"".join(recs)
    assert [m.body for m in decode_records(r.to_bytes())] == expected
    assert r.phy_offsets.tolist() == phys
    assert r.sizes.tolist() == [len(x) for x in recs]
    for p, rec in zip(phys, recs):
        assert store.read_record(p).tobytes() == rec
    r.release()
    assert r.buffers == []


def test_read_record_and_read_message(make_config, open_store):
    store = open_store(make_config())
    res = [store.put("RR", body(i), 0, keys=f"k{i}") for i in range(5)]
    m = store.read_message(res[3].first_phy_offset)
    assert (m.topic, m.body, m.queue_offset, m.keys) == ("RR", body(3), 3, ["k3"])
    assert m.commit_log_offset == res[3].first_phy_offset and m.store_timestamp == res[3].store_timestamp
    assert store.read_record(res[3].first_phy_offset + 1) is None      # not a record start
    assert store.read_record(-1) is None
    assert store.read_record(store.max_phy_offset) is None
    assert store.read_record(10 ** 12) is None
    assert store.read_message(10 ** 12) is None
    view = store.read_record(res[0].first_phy_offset)
    assert view.readonly
    with pytest.raises(TypeError):
        view[0] = 1


def test_query_message_keys_uniq_time_range_and_max_num(make_config, open_store, fake_clock):
    fake_clock.step = 1000
    t0 = fake_clock.now
    store = open_store(make_config(), clock_ms=fake_clock)
    for i in range(40):
        store.put("Q", body(i), i % 3, keys=["common", f"k{i}", f"grp{i % 4}"],
                  properties={"UNIQ_KEY": f"UNIQ{i:04d}"})
    store.put("Other", b"other topic", 0, keys="common k1")
    # Each KEYS token is indexed on its own.
    for i in (0, 7, 39):
        got = store.query_message("Q", f"k{i}").records
        assert [decode_record(x).body for x in got] == [body(i)]
        got = store.query_message("Q", f"UNIQ{i:04d}").records
        assert [decode_record(x).body for x in got] == [body(i)]
    got = store.query_message("Q", "grp1", max_num=100).records
    assert [decode_record(x).body for x in got] == [body(i) for i in range(40) if i % 4 == 1][::-1]   # newest first
    got = store.query_message("Q", "common", max_num=5).records
    assert [decode_record(x).body for x in got] == [body(i) for i in range(39, 34, -1)]
    got = store.query_message("Q", "common", max_num=100, begin_timestamp=t0 + 10_000,
                              end_timestamp=t0 + 14_000).records
    assert [decode_record(x).body for x in got] == [body(i) for i in range(14, 9, -1)]
    assert store.query_message("Q", "common", begin_timestamp=FAR_FUTURE_MS).records == []
    assert store.query_message("Q", "k1 ").records == []
    assert store.query_message("Q", "nothing").records == []
    assert [decode_record(x).body for x in store.query_message("Other", "k1").records] == [b"other topic"]
    assert store.query_message("Q", "k1").records and all(
        decode_record(x).topic == "Q" for x in store.query_message("Q", "common", max_num=100).records)
    # Many index files: max_index_num=256 and 3 entries + 1 per message.
    assert len(store.index.files) == 1
    for i in range(200):
        store.put("Many", b"x", 0, keys=f"m{i} all")
    assert len(store.index.files) >= 3
    got = store.query_message("Many", "all", max_num=1000).records
    assert len(got) == 200
    assert [decode_record(x).body for x in store.query_message("Many", "m3").records] == [b"x"]
    res = store.query_message("Many", "m199")
    assert res.index_last_update_timestamp == fake_clock.now - 1000


def test_query_message_when_index_disabled(make_config, open_store):
    store = open_store(make_config(message_index_enable=False))
    store.put("Q", b"x", 0, keys="k")
    with pytest.raises(StoreError):
        store.query_message("Q", "k")
    assert os.listdir(os.path.join(store.root, "index")) == []


def test_offset_by_time_and_store_times(make_config, open_store, fake_clock):
    fake_clock.step = 1000
    t0 = fake_clock.now
    store = open_store(make_config(), clock_ms=fake_clock)
    for i in range(50):
        store.put("Tm", body(i, 1500), 0)          # several commitlog files
    assert len(store.commitlog.files) >= 2
    assert store.offset_by_time("Tm", 0, t0) == 0
    assert store.offset_by_time("Tm", 0, t0 + 17_000) == 17
    assert store.offset_by_time("Tm", 0, t0 + 17_400) == 17     # nearer neighbour
    assert store.offset_by_time("Tm", 0, t0 + 17_600) == 18
    assert store.offset_by_time("Tm", 0, t0 - 10_000) == 0
    assert store.offset_by_time("Tm", 0, t0 + 10 ** 9) == 49
    assert store.offset_by_time("Nope", 0, t0) == 0
    assert store.store_time("Tm", 0, 5) == t0 + 5000
    assert store.store_time("Tm", 0, 50) == -1
    assert store.store_time("Nope", 0, 0) == -1
    assert store.earliest_message_time("Tm", 0) == t0
    assert store.earliest_message_time() == t0
    assert store.last_store_timestamp == t0 + 49_000


def test_min_max_offsets_and_phy_offsets(make_config, open_store):
    store = open_store(make_config())
    assert (store.min_offset("X", 0), store.max_offset("X", 0)) == (0, 0)
    assert (store.min_phy_offset, store.max_phy_offset) == (0, 0)
    assert store.earliest_message_time() == -1
    total = 0
    for i in range(30):
        total += store.put_batch("X", [body(i)] * 3, i % 2).wrote_bytes
    assert store.max_offset("X", 0) == 45 and store.max_offset("X", 1) == 45
    assert store.min_phy_offset == 0
    assert store.max_phy_offset >= total          # plus BLANK tails of rolled files
    assert store.queues() == [("X", 0), ("X", 1)] and store.topics() == ["X"]
    stats = store.stats()
    assert stats["commitlogMaxOffset"] == store.max_phy_offset and stats["consumeQueues"] == 2


def test_delete_topic(make_config, open_store):
    store = open_store(make_config())
    for i in range(10):
        store.put("Gone", body(i), i % 2)
        store.put("Kept", body(i), 0)
    assert store.delete_topic("Gone") == 2
    assert store.get_messages("Gone", 0, 0).status is GetStatus.NO_MATCHED_LOGIC_QUEUE
    assert not os.path.exists(os.path.join(store.root, "consumequeue", "Gone"))
    assert store.topics() == ["Kept"]
    assert bodies_of(store.get_messages("Kept", 0, 0)) == [body(i) for i in range(10)]
    assert store.delete_topic("Gone") == 0
    r = store.put("Gone", b"again", 0)
    assert r.first_queue_offset == 0
    assert bodies_of(store.get_messages("Gone", 0, 0)) == [b"again"]


def test_deleted_topic_stays_deleted_after_reopen(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    for i in range(10):
        store.put("Gone", body(i), 0)
        store.put("Kept", body(i), 0)
    store.delete_topic("Gone")
    store.close()
    store = open_store(cfg)
    assert store.get_messages("Gone", 0, 0).status is GetStatus.NO_MATCHED_LOGIC_QUEUE
    assert store.topics() == ["Kept"]


def test_batches_span_many_files(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    expected = []
    for b in range(12):
        batch = [os.urandom(1500 + (b * 97 + i * 31) % 2500) for i in range(45)]     # > 67 KB: > one file
        res = store.put_batch("Span", batch, 0, properties=f"KEYS\x01batch{b}".encode())
        assert res.status is PutStatus.PUT_OK and res.count == 45
        assert res.first_queue_offset == 45 * b
        phys = res.phy_offsets.tolist()
        files = {p // cfg.mapped_file_size_commitlog for p in phys}
        assert len(files) >= 2                                  # the batch spans files
        assert phys == sorted(phys) and res.first_phy_offset == phys[0]
        for p in phys:
            rel = p % cfg.mapped_file_size_commitlog
            assert rel + store.read_message(p).store_size <= cfg.mapped_file_size_commitlog
        expected += batch
    assert len(store.commitlog.files) >= 12
    r = store.get_messages("Span", 0, 0, max_count=1000, max_bytes=1 << 30)
    assert bodies_of(r) == expected
    assert len(store.query_message("Span", "batch5", max_num=100).records) == 45
    store.close()
    store = open_store(cfg)
    assert bodies_of(store.get_messages("Span", 0, 0, max_count=1000, max_bytes=1 << 30)) == expected


def test_transaction_prepared_and_rollback_records_get_no_queue_unit(make_config, open_store):
    store = open_store(make_config())
    store.put("Tx", b"normal-0", 0)
    half = store.put_batch("Tx", [b"half-1", b"half-2"], 0, sys_flag=0x4, properties=b"KEYS\x01halfkey")
    assert half.status is PutStatus.PUT_OK
    assert store.max_offset("Tx", 0) == 1
    for p in half.phy_offsets.tolist():
        m = store.read_message(p)
        assert m.queue_offset == 0 and m.sys_flag & 0xC == 0x4
    assert len(store.query_message("Tx", "halfkey").records) == 2     # prepared messages are indexed
    commit = store.put_batch("Tx", [b"commit-1"], 0, sys_flag=0x8, prepared_transaction_offset=half.first_phy_offset)
    assert commit.first_queue_offset == 1 and store.max_offset("Tx", 0) == 2
    m = store.read_message(commit.first_phy_offset)
    assert (m.queue_offset, m.prepared_transaction_offset) == (1, half.first_phy_offset)
    rb = store.put_batch("Tx", [b"rollback"], 0, sys_flag=0xC, properties=b"KEYS\x01rbkey")
    assert store.read_message(rb.first_phy_offset).queue_offset == 0
    assert store.max_offset("Tx", 0) == 2
    assert store.query_message("Tx", "rbkey").records == []            # rollback records are not indexed
    assert bodies_of(store.get_messages("Tx", 0, 0)) == [b"normal-0", b"commit-1"]


@pytest.mark.parametrize("level,delay_ms", [(1, 1000), (3, 10_000), (18, 7_200_000), (99, 7_200_000)])
def test_schedule_topic_tags_code_is_due_time(make_config, open_store, level, delay_ms):
    store = open_store(make_config())
    res = store.put("SCHEDULE_TOPIC_XXXX", b"delayed", 2,
                    properties={"DELAY": str(level), "REAL_TOPIC": "T", "REAL_QID": "0", "TAGS": "A"})
    due = res.store_timestamp + delay_ms          # level clamps to the highest (18: 2h)
    assert store._queues[("SCHEDULE_TOPIC_XXXX", 2)].unit(0)[2] == due
    r = store.get_messages("SCHEDULE_TOPIC_XXXX", 2, 0, tags_codes={due})
    assert r.status is GetStatus.FOUND and bodies_of(r) == [b"delayed"]
    assert store.get_messages("SCHEDULE_TOPIC_XXXX", 2, 0, tags_codes={java_hash("A")}).status \
        is GetStatus.NO_MATCHED_MESSAGE
    # The due time survives a replay of the commitlog.
    assert store.rebuild_consume_queues() == 1
    assert store._queues[("SCHEDULE_TOPIC_XXXX", 2)].unit(0)[2] == due


@pytest.mark.parametrize("props", [{"DELAY": "0", "TAGS": "A"}, {"TAGS": "A"}])
def test_schedule_topic_without_delay_level_keeps_tags_hash(make_config, open_store, props):
    # CommitLog.checkMessageAndReturnSize: only a level > 0 turns the tags code into a due time.
    store = open_store(make_config())
    store.put("SCHEDULE_TOPIC_XXXX", b"x", 0, properties=props)
    assert store._queues[("SCHEDULE_TOPIC_XXXX", 0)].unit(0)[2] == java_hash("A")


def test_delay_property_outside_schedule_topic_is_ignored(make_config, open_store):
    store = open_store(make_config())
    store.put("Plain", b"x", 0, properties={"DELAY": "3", "TAGS": "B"})
    assert store._queues[("Plain", 0)].unit(0)[2] == java_hash("B")


# ---------------------------------------------------------------------------------------------------------------
# Bad input and lifecycle
# ---------------------------------------------------------------------------------------------------------------
def test_bad_input_stores_nothing(make_config, open_store):
    store = open_store(make_config(max_message_size=10_000))
    store.put("In", b"first", 0)

    def unchanged():
        return store.max_phy_offset, store.max_offset("In", 0), len(store.commitlog.files)

    before = unchanged()
    with pytest.raises(MessageTooLargeError):
        store.put("In", b"x" * 10_001, 0)
    with pytest.raises(MessageTooLargeError):
        store.put_batch("In", [b"ok", b"x" * 10_001, b"ok"], 0)   # nothing of the batch is written
    with pytest.raises(InvalidTopicError):
        store.put("T" * 128, b"x", 0)
    with pytest.raises(ValueError):
        store.put("bad topic", b"x", 0)
    with pytest.raises(ValueError):
        store.put("", b"x", 0)
    with pytest.raises(MessageTooLargeError):
        store.put("In", b"x", 0, properties=b"K\x01" + b"v" * 32766)
    with pytest.raises(MessageTooLargeError):
        store.put_batch("In", [b"a", b"b"], 0, properties=[b"", b"K\x01" + b"v" * 32766])
    with pytest.raises(PropertiesTooLongError):
        store.put("In", b"x", 0, properties={"K": "v" * 32766})
    with pytest.raises(TypeError):
        store.put_batch("In", [b"ok", "not bytes"], 0)
    with pytest.raises(TypeError):
        store.put_batch("In", [b"ok", bytearray(b"x")], 0)
    with pytest.raises(TypeError):
        store.put("In", "text body", 0)
    with pytest.raises(TypeError):
        store.put("In", 5, 0)               # bytes(5) would be five zero bytes
    with pytest.raises(TypeError):
        store.put("In", None, 0)
    with pytest.raises(ValueError):
        store.put_batch("In", [b"a", b"b"], 0, properties=[b""])
    with pytest.raises(ValueError):
        store.put("In", b"x", -1)
    assert unchanged() == before
    assert store.put_batch("In", [], 0).count == 0
    assert unchanged() == before
    # 127 characters and 32767 property bytes are the limits, inclusive; bytearray/memoryview bodies are copied.
    assert store.put("T" * 127, b"x", 0).ok
    assert store.put("In", b"x", 0, properties=b"K\x01" + b"v" * 32765).ok
    assert store.put("In", bytearray(b"ba"), 0).ok and store.put("In", memoryview(b"mv"), 0).ok
    assert bodies_of(store.get_messages("In", 0, 0))[-2:] == [b"ba", b"mv"]


def test_lifecycle_errors(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    store.put("L", b"x", 0)
    with pytest.raises(StoreError):
        store.open()                                   # already open
    with pytest.raises(StoreLockedError):
        MessageStore(cfg).open()                       # one opener per root, even in one process
    assert os.path.exists(os.path.join(cfg.store_path_root_dir, "abort"))
    store.close()
    store.close()                                      # idempotent
    assert not os.path.exists(os.path.join(cfg.store_path_root_dir, "abort"))
    assert not store.is_open
    with pytest.raises(StoreClosedError):
        store.put("L", b"y", 0)
    with pytest.raises(StoreClosedError):
        store.put_batch("L", [b"y"], 0)
    with pytest.raises(StoreClosedError):
        store.flush()
    with pytest.raises(StoreClosedError):
        store.clean_expired_files()
    with pytest.raises(StoreClosedError):
        store.rebuild_consume_queues()
    # Reads on a closed store must fail cleanly (the files are unmapped: they used to crash the process).
    with pytest.raises(StoreClosedError):
        store.read_record(0)
    with pytest.raises(StoreClosedError):
        store.get_messages("L", 0, 0)
    with pytest.raises(StoreClosedError):
        store.query_message("L", "k")
    with pytest.raises(StoreClosedError):
        store.earliest_message_time()
    with pytest.raises(StoreClosedError):
        store.offset_by_time("L", 0, 0)
    again = open_store(cfg)                            # the lock was released
    assert bodies_of(again.get_messages("L", 0, 0)) == [b"x"]
    assert again.recovery.abnormal is False


def test_views_survive_close(make_config, open_store):
    store = open_store(make_config())
    for i in range(50):
        store.put("V", body(i, 1000), 0)
    r = store.get_messages("V", 0, 0, max_count=100, max_bytes=1 << 30)
    store.close()
    assert bodies_of(r) == [body(i, 1000) for i in range(50)]
    r.release()


def test_arrival_listeners(make_config, open_store):
    store = open_store(make_config())
    seen = []
    store.arrival_listeners.append(lambda t, q, m: seen.append((t, q, m)))
    store.put("A", b"1", 1)
    store.put_batch("A", [b"2", b"3"], 1)
    store.put_batch("B", [b"4"], 0)
    assert seen == [("A", 1, 1), ("A", 1, 3), ("B", 0, 1)]


def test_reopen_continues_offsets(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    for i in range(60):
        store.put("C", body(i, 1500), i % 2)
    phy = store.max_phy_offset
    store.close()
    store = open_store(cfg)
    assert store.recovery.abnormal is False and store.recovery.max_phy_offset == phy
    assert not store.recovery.truncated
    assert store.max_offset("C", 0) == 30 and store.max_phy_offset == phy
    r = store.put("C", b"next", 0)
    assert r.first_queue_offset == 30 and r.first_phy_offset >= phy
    assert bodies_of(store.get_messages("C", 0, 28)) == [body(56, 1500), body(58, 1500), b"next"]


# ---------------------------------------------------------------------------------------------------------------
# Flushing
# ---------------------------------------------------------------------------------------------------------------
def test_sync_flush_put_is_durable_on_return(make_config, open_store):
    store = open_store(make_config(flush_disk_type=FlushDiskType.SYNC_FLUSH))
    for i in range(50):
        r = store.put("S", body(i, 900), 0)
        assert r.status is PutStatus.PUT_OK
        assert store.flushed_offset >= r.end_offset == r.first_phy_offset + r.wrote_bytes
    r = store.put_batch("S", [body(i, 3000) for i in range(30)], 0)
    assert r.status is PutStatus.PUT_OK and store.flushed_offset >= r.end_offset
    assert r.end_offset == store.max_phy_offset
    # wait_flush=False returns before the flush
    r = store.put_batch("S", [b"nowait"], 0, wait_flush=False)
    assert r.ok and store.flush() >= r.end_offset


def test_sync_flush_group_commit_from_threads(make_config, open_store):
    store = open_store(make_config(flush_disk_type=FlushDiskType.SYNC_FLUSH))
    n_threads, per_thread = 4, 100
    results: list = []
    errors: list = []
    start = threading.Barrier(n_threads)
    count0 = store.stats()["flushCount"]

    def worker(q):
        try:
            start.wait(10)
            for i in range(per_thread):
                r = store.put("G", body(i, 300), q)
                results.append((q, i, r.status, r.end_offset, store.flushed_offset))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(q,)) for q in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert len(results) == n_threads * per_thread
    assert all(status is PutStatus.PUT_OK and flushed >= end for _, _, status, end, flushed in results)
    flushes = store.stats()["flushCount"] - count0
    assert 0 < flushes < n_threads * per_thread       # puts shared msyncs
    for q in range(n_threads):
        assert bodies_of(store.get_messages("G", q, 0, max_count=1000)) == [body(i, 300) for i in range(per_thread)]


def test_sync_flush_timeout(make_config, open_store):
    store = open_store(make_config(flush_disk_type=FlushDiskType.SYNC_FLUSH, sync_flush_timeout_ms=100))
    store.put("S", b"warm", 0)
    release = threading.Event()
    real_flush = store.commitlog.flush

    def slow_flush():
        release.wait(10)
        return real_flush()

    store.commitlog.flush = slow_flush
    try:
        r = store.put("S", b"slow", 0)
        assert r.status is PutStatus.FLUSH_DISK_TIMEOUT
        assert bodies_of(store.get_messages("S", 0, 0)) == [b"warm", b"slow"]   # stored, just not yet durable
    finally:
        release.set()
        store.commitlog.flush = real_flush
    assert wait_for(lambda: store.flushed_offset >= store.max_phy_offset)


@pytest.mark.parametrize("mode", [FlushDiskType.ASYNC_FLUSH, FlushDiskType.SYNC_FLUSH])
def test_request_flush_callback(make_config, open_store, mode):
    store = open_store(make_config(flush_disk_type=mode, flush_interval_ms=20))
    r = store.put("F", b"x" * 100, 0, wait_flush=False) if mode is FlushDiskType.SYNC_FLUSH else \
        store.put("F", b"x" * 100, 0)
    done = threading.Event()
    outcome = []

    def cb(ok):
        outcome.append((ok, threading.current_thread().name))
        done.set()

    store.request_flush(r.end_offset, cb)
    assert done.wait(10)
    assert outcome[0][0] is True and store.flushed_offset >= r.end_offset
    # Already durable: called at once, on the caller's thread.
    now = []
    store.request_flush(r.end_offset, lambda ok: now.append(ok))
    assert now == [True]


def test_close_flushes_and_writes_checkpoint(make_config, open_store):
    cfg = make_config(flush_interval_ms=60_000, flush_consume_queue_interval_ms=60_000)
    store = open_store(cfg)
    r = store.put("CP", b"x", 0)
    store.close()
    from rmq_store.checkpoint import StoreCheckpoint
    cp = StoreCheckpoint(os.path.join(cfg.store_path_root_dir, "checkpoint"))
    assert cp.physic_msg_timestamp == r.store_timestamp
    assert cp.logics_msg_timestamp == r.store_timestamp == cp.index_msg_timestamp
    cp.close()


# ---------------------------------------------------------------------------------------------------------------
# Retention
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture
def roomy_disk(monkeypatch):
    """Retention deletes files regardless of age when the disk is over 85 % full: keep the host's disk out of it."""
    import rmq_store.retention
    monkeypatch.setattr(rmq_store.retention, "disk_used_ratio", lambda path: 0.10)


def test_retention_deletes_expired_files(make_config, open_store, roomy_disk):
    cfg = make_config(delete_files_batch_max=100)
    store = open_store(cfg)
    for i in range(300):
        store.put("Ret", body(i, 1000), i % 2, keys=f"key{i}")
    store.put("Small", b"only", 0)
    nfiles = len(store.commitlog.files)
    assert nfiles >= 5
    held = store.get_messages("Ret", 0, 0, max_count=5)        # a reader's views of the oldest file
    report = store.clean_expired_files(now_ms=1, force=False)  # nothing is older than 72 h at that time
    assert report.commitlog_files_deleted == [] and len(store.commitlog.files) == nfiles
    report = store.clean_expired_files(now_ms=FAR_FUTURE_MS, force=True)
    assert len(report.commitlog_files_deleted) == nfiles - 1   # never the newest file
    assert all(not os.path.exists(p) for p in report.commitlog_files_deleted)
    assert len(store.commitlog.files) == 1
    assert store.min_phy_offset == store.commitlog.files[0].file_from_offset > 0
    assert bodies_of(held) == [body(i, 1000) for i in range(0, 10, 2)]   # views of deleted files stay valid
    held.release()
    for q in (0, 1):
        lo, hi = store.min_offset("Ret", q), store.max_offset("Ret", q)
        assert 0 < lo < hi == 150
        first = store.get_messages("Ret", q, lo, max_count=1000)
        assert first.status is GetStatus.FOUND and first.queue_offsets[0] == lo
        assert first.phy_offsets[0] >= store.min_phy_offset
        assert bodies_of(first) == [body(2 * i + q, 1000) for i in range(lo, hi)]
        r = store.get_messages("Ret", q, 0)
        assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_TOO_SMALL, lo)
    assert report.consume_queue_files_deleted > 0
    assert store.read_record(0) is None
    assert store.query_message("Ret", "key0").records == []          # its record is gone
    assert len(store.query_message("Ret", "key299").records) == 1
    assert store.earliest_message_time() > 0
    # The store keeps working and survives a reopen with a commitlog that no longer starts at 0.
    store.put("Ret", b"after", 0)
    store.close()
    store = open_store(cfg)
    assert store.min_phy_offset > 0
    r = store.get_messages("Ret", 0, store.max_offset("Ret", 0) - 1)
    assert bodies_of(r) == [b"after"]
    r = store.get_messages("Ret", 0, store.min_offset("Ret", 0), max_count=1000)
    assert r.count >= 1 and all(p >= store.min_phy_offset for p in r.phy_offsets.tolist())


def test_retention_respects_batch_max_and_reserved_time(make_config, open_store, roomy_disk):
    store = open_store(make_config(delete_files_batch_max=2))
    for i in range(300):
        store.put("Ret", body(i, 1000), 0)
    n = len(store.commitlog.files)
    report = store.clean_expired_files(now_ms=FAR_FUTURE_MS, force=True)
    assert len(report.commitlog_files_deleted) == 2 and len(store.commitlog.files) == n - 2
    report = store.clean_expired_files(force=True)             # now: nothing older than 72 h
    assert report.commitlog_files_deleted == []


def test_retention_runs_at_the_delete_hour(make_config, open_store, roomy_disk):
    store = open_store(make_config(delete_files_batch_max=100, delete_when="04"))
    for i in range(300):
        store.put("Ret", body(i, 1000), 0)
    n = len(store.commitlog.files)
    lt = time.localtime(time.time() + 10 * 86400)          # every file has expired by then (72 h)
    at_four = int(time.mktime((lt.tm_year, lt.tm_mon, lt.tm_mday, 4, 30, 0, 0, 0, -1)) * 1000)
    report = store.clean_expired_files(now_ms=at_four + 3_600_000)     # 05:30: not a delete hour
    assert report.commitlog_files_deleted == [] and len(store.commitlog.files) == n
    report = store.clean_expired_files(now_ms=at_four)
    assert report.reason == "delete hour"
    assert len(report.commitlog_files_deleted) == n - 1 and len(store.commitlog.files) == 1


# ---------------------------------------------------------------------------------------------------------------
# Disk full
# ---------------------------------------------------------------------------------------------------------------
def _join_preparer(store) -> None:
    t = store.commitlog._prep_thread
    if t is not None:
        t.join(10)
        assert not t.is_alive()


def test_disk_full_put_batch_stores_nothing(make_config, open_store, monkeypatch):
    cfg = make_config()
    store = open_store(cfg)
    acked = []
    for i in range(20):
        acked.append(body(i, 1000))
        store.put("D", acked[-1], 0)

    def no_space(self, start):
        raise DiskFullError(28, f"simulated: no space for file {start}")

    monkeypatch.setattr(MappedFileQueue, "_create", no_space)
    failed = None
    for i in range(20, 300):           # bounded: at most ~4 files of data
        batch = [body(i * 10 + j, 1000) for j in range(5)]
        before = (store.max_phy_offset, store.max_offset("D", 0), len(store.commitlog.files))
        try:
            store.put_batch("D", batch, 0)
        except DiskFullError:
            failed = before
            break
        acked += batch
    assert failed is not None, "the simulated full disk was never hit"
    assert (store.max_phy_offset, store.max_offset("D", 0), len(store.commitlog.files)) == failed
    with pytest.raises(DiskFullError):
        store.put("D", b"still full", 0)
    assert bodies_of(store.get_messages("D", 0, 0, max_count=1000, max_bytes=1 << 30)) == acked
    monkeypatch.undo()
    r = store.put_batch("D", [b"space again"] * 3, 0)
    assert r.ok and r.first_queue_offset == len(acked)
    acked += [b"space again"] * 3
    assert bodies_of(store.get_messages("D", 0, 0, max_count=1000, max_bytes=1 << 30)) == acked
    store.close()
    store = open_store(cfg)
    assert bodies_of(store.get_messages("D", 0, 0, max_count=1000, max_bytes=1 << 30)) == acked


def test_disk_full_batch_larger_than_a_file_stores_nothing(make_config, open_store, monkeypatch):
    store = open_store(make_config())
    store.put("D", b"first", 0)
    _join_preparer(store)              # the next file is prepared; no further file can be created

    def no_space(self, start):
        raise DiskFullError(28, f"simulated: no space for file {start}")

    monkeypatch.setattr(MappedFileQueue, "_create", no_space)
    before = (store.max_phy_offset, store.max_offset("D", 0))
    with pytest.raises(DiskFullError):
        store.put_batch("D", [body(i, 3000) for i in range(50)], 0)     # ~150 KB: needs 2 new files
    assert (store.max_phy_offset, store.max_offset("D", 0)) == before


# ---------------------------------------------------------------------------------------------------------------
# Reads racing retention (run in a child: the failure mode is a segfault)
# ---------------------------------------------------------------------------------------------------------------
RACE_CHILD = '''
import sys
from rmq_store import MessageStore, StoreConfig
import rmq_store.store as st
from rmq_store.commitlog import MappedFileQueue

root, which = sys.argv[1], sys.argv[2]
cfg = StoreConfig(store_path_root_dir=root, mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=2000,
                  max_hash_slot_num=64, max_index_num=256, delete_files_batch_max=100,
                  clean_resource_interval_ms=3_600_000)
s = MessageStore(cfg)
s.open()
res = [s.put("T", b"x" * 1000, 0) for _ in range(300)]
armed = [True]


def retention_runs_now():
    """What the retention thread may do at this point of a read: a GIL switch can happen between any two
    bytecodes of the reader."""
    if not armed[0]:
        return
    armed[0] = False
    if which == "get_messages":
        # retention.run_once has swapped the commitlog's file list and destroyed the expired files, and has
        # not yet moved the consume queues' min offsets.
        q = s.commitlog
        doomed = q.files[:-1]
        with s._put_lock:
            q.files = q.files[len(doomed):]
        for mf in doomed:
            mf.destroy()
    else:
        s.clean_expired_files(now_ms=4_000_000_000_000, force=True)


if which == "get_messages":
    # The reader has evaluated commitlog.min_offset for gather() and is evaluating max_offset.
    prop = MappedFileQueue.max_offset
    MappedFileQueue.max_offset = property(lambda self: (retention_runs_now(), prop.fget(self))[1])
    r = s.get_messages("T", 0, 0, max_count=32)
    MappedFileQueue.max_offset = prop
    print(r.status, r.count)
else:
    # The reader has taken the commitlog's file list and is evaluating max_offset for the lookup.
    prop = MappedFileQueue.max_offset
    MappedFileQueue.max_offset = property(lambda self: (retention_runs_now(), prop.fget(self))[1])
    print(s.read_record(res[0].first_phy_offset))
    MappedFileQueue.max_offset = prop
assert not armed[0]
s.close()
print("SURVIVED")
'''


@pytest.mark.parametrize("which", ["get_messages", "read_record"])
def test_read_racing_retention_does_not_crash(tmp_path, which):
    import subprocess
    import sys
    script = tmp_path / "race.py"
    script.write_text(RACE_CHILD)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "store"), which], env=env,
                          capture_output=True, timeout=60)
    assert proc.returncode == 0 and b"SURVIVED" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
