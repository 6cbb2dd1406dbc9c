"""Damaged store files: what open() detects, repairs or refuses, and that reads never return a wrong record."""
from __future__ import annotations

import os
import shutil
import struct

import pytest

from rmq_common._record import decode_record, encode_record
from rmq_store import CorruptFileError, GetStatus, MessageStore

BODY_AT = 84 + 4          # body bytes of a record with IPv4 hosts


def body(i: int, size: int = 500) -> bytes:
    stem = f"<{i}>".encode()
    return (stem * (size // len(stem) + 1))[:size]


def populate(store, n: int, topic: str = "C", queue_id: int = 0, size: int = 500, keys: bool = True) -> list:
    return [store.put(topic, body(i, size), queue_id, keys=f"key{i}" if keys else None) for i in range(n)]


def cl_path(cfg, phy: int) -> tuple[str, int]:
    fs = cfg.mapped_file_size_commitlog
    return os.path.join(cfg.store_path_root_dir, "commitlog", "%020d" % (phy // fs * fs)), phy % fs


def patch_file(path: str, pos: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        fh.write(data)


def xor_byte(path: str, pos: int, mask: int = 0x5A) -> None:
    with open(path, "r+b") as fh:
        fh.seek(pos)
        b = fh.read(1)[0]
        fh.seek(pos)
        fh.write(bytes([b ^ mask]))


def mark_unclean(cfg) -> None:
    open(os.path.join(cfg.store_path_root_dir, "abort"), "wb").close()


def all_bodies(store, topic="C", q=0) -> list[bytes]:
    r = store.get_messages(topic, q, store.min_offset(topic, q), max_count=100_000, max_bytes=1 << 40)
    return [decode_record(x, check_crc=True).body for x in r.records()]


# ---------------------------------------------------------------------------------------------------------------
# Commitlog damage
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("unclean", [True, False])
def test_flipped_body_byte_near_tail_truncates_there(make_config, open_store, unclean):
    cfg = make_config()
    store = open_store(cfg)
    res = populate(store, 300)
    end = store.max_phy_offset
    store.close()
    bad = res[290]
    path, rel = cl_path(cfg, bad.first_phy_offset)
    xor_byte(path, rel + BODY_AT + 100)
    if unclean:
        mark_unclean(cfg)
    store = open_store(cfg)
    report = store.recovery
    assert report.abnormal is unclean
    assert report.truncated and report.truncated_bytes > 0
    assert report.truncated_from == bad.first_phy_offset == report.max_phy_offset
    assert report.truncated_bytes == end - bad.first_phy_offset          # the damaged record and all after it
    assert "CRC" in report.damage
    assert report.consume_queue_units_dropped == 10
    assert store.max_offset("C", 0) == 290 and store.max_phy_offset == bad.first_phy_offset
    assert all_bodies(store) == [body(i) for i in range(290)]
    assert store.read_record(bad.first_phy_offset) is None
    assert store.query_message("C", "key295").records == []
    assert len(store.query_message("C", "key289").records) == 1
    r = store.put("C", b"after repair", 0)                             # appends continue at the cut
    assert (r.first_phy_offset, r.first_queue_offset) == (bad.first_phy_offset, 290)
    store.close()
    store = open_store(cfg)
    assert not store.recovery.truncated
    assert all_bodies(store) == [body(i) for i in range(290)] + [b"after repair"]


@pytest.mark.parametrize("field,at,damage", [
    ("magic", 4, "magic"),
    ("physical offset", 28, "physical offset"),
    ("total size", 0, "size"),
])
def test_damaged_record_header_truncates_there(make_config, open_store, field, at, damage):
    cfg = make_config()
    store = open_store(cfg)
    res = populate(store, 200)
    store.close()
    bad = res[195]
    path, rel = cl_path(cfg, bad.first_phy_offset)
    if field == "total size":
        patch_file(path, rel, struct.pack(">i", 50))     # smaller than any record
    else:
        xor_byte(path, rel + at + 3)
    mark_unclean(cfg)
    store = open_store(cfg)
    assert store.recovery.truncated_from == bad.first_phy_offset
    assert damage in store.recovery.damage
    assert all_bodies(store) == [body(i) for i in range(195)]


def test_crc_not_checked_when_disabled(make_config, open_store):
    cfg = make_config(check_crc_on_recover=False)
    store = open_store(cfg)
    res = populate(store, 50)
    store.close()
    path, rel = cl_path(cfg, res[45].first_phy_offset)
    xor_byte(path, rel + BODY_AT)
    mark_unclean(cfg)
    store = open_store(cfg)
    assert not store.recovery.truncated                  # checkCRCOnRecover=false: the record is kept
    assert store.max_offset("C", 0) == 50
    rec = store.read_record(res[45].first_phy_offset)
    assert decode_record(rec, check_crc=False).body != body(45)


def test_truncated_commitlog_file_refuses_to_open(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 300)
    assert len(store.commitlog.files) >= 3
    store.close()
    path, _ = cl_path(cfg, 65536)
    with open(path, "r+b") as fh:
        fh.truncate(40_000)
    with pytest.raises(CorruptFileError, match=r"00000000000000065536 has 40000 bytes, expected 65536"):
        MessageStore(cfg).open()
    # The failed open released the lock and the files: a second attempt fails the same way.
    with pytest.raises(CorruptFileError):
        MessageStore(cfg).open()


def test_missing_commitlog_file_in_the_middle_refuses_to_open(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 300)
    store.close()
    os.unlink(cl_path(cfg, 65536)[0])
    with pytest.raises(CorruptFileError, match="missing file before"):
        MessageStore(cfg).open()


@pytest.mark.parametrize("unclean", [True, False])
@pytest.mark.parametrize("kind", ["garbage", "partial record"])
def test_torn_tail_is_truncated(make_config, open_store, unclean, kind):
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 130)
    end = store.max_phy_offset
    store.close()
    path, rel = cl_path(cfg, end)
    if kind == "garbage":
        tail = os.urandom(777) + b"\x01"
    else:
        tail = encode_record(topic="C", body=body(999), phy_offset=end, queue_offset=130)[:333]
        assert tail[-1] != 0
    patch_file(path, rel, tail)
    if unclean:
        mark_unclean(cfg)
    store = open_store(cfg)
    report = store.recovery
    assert report.truncated_from == end == report.max_phy_offset
    assert report.truncated_bytes == len(tail)
    assert report.damage
    assert all_bodies(store) == [body(i) for i in range(130)]
    with open(path, "rb") as fh:
        fh.seek(rel)
        assert fh.read(len(tail)) == bytes(len(tail))        # erased on disk
    r = store.put("C", b"next", 0)
    assert (r.first_phy_offset, r.first_queue_offset) == (end, 130)


def test_empty_files_left_by_an_interrupted_creation(make_config, open_store):
    """A crash between creating a file and reserving its size leaves a 0-byte newest file behind."""
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 150)
    nfiles = len(store.commitlog.files)
    cq_dir = os.path.join(cfg.store_path_root_dir, "consumequeue", "C", "0")
    cq_files = sorted(os.listdir(cq_dir))
    store.close()
    next_cl = os.path.join(cfg.store_path_root_dir, "commitlog", "%020d" % (nfiles * cfg.mapped_file_size_commitlog))
    next_cq = os.path.join(cq_dir, "%020d" % (len(cq_files) * cfg.mapped_file_size_consume_queue))
    open(next_cl, "wb").close()
    open(next_cq, "wb").close()
    mark_unclean(cfg)
    store = open_store(cfg)
    assert not store.recovery.truncated
    assert all_bodies(store) == [body(i) for i in range(150)]
    for i in range(150, 400):
        store.put("C", body(i), 0)
    assert all_bodies(store) == [body(i) for i in range(400)]


def test_empty_prepared_file_after_crash_is_not_damage(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 20)
    t = store.commitlog._prep_thread
    if t is not None:
        t.join(10)
    assert len(store.commitlog._ahead) == 1              # the next file exists, never written
    prepared = store.commitlog._ahead[0]
    # Crash: no final flush or checkpoint, the abort file stays, and so does the prepared file.
    store._open = False
    store._retention.stop()
    store._flush._flush_commitlog = lambda *a, **k: None
    store._flush_logics = lambda *a, **k: None
    store._flush.stop()
    store.commitlog._ahead = []                           # a clean close would delete it; a crash does not
    store._release_files()
    prepared.close()
    assert os.path.getsize(prepared.path) == cfg.mapped_file_size_commitlog
    store = open_store(cfg)
    report = store.recovery
    assert report.abnormal
    assert not report.truncated and report.truncated_bytes == 0 and report.damage is None
    assert all_bodies(store) == [body(i) for i in range(20)]


# ---------------------------------------------------------------------------------------------------------------
# Consume queue and index damage
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which,unclean", [
    ("one queue", True),
    ("all queues", True),
    ("one queue", False),
    ("all queues", False),
])
def test_missing_consume_queue_directory_is_rebuilt(make_config, open_store, which, unclean):
    cfg = make_config()
    store = open_store(cfg)
    for i in range(400):
        store.put("A" if i % 3 else "B", body(i), i % 2, keys=f"key{i}")
    assert len(store.commitlog.files) >= 4
    store.close()
    root = os.path.join(cfg.store_path_root_dir, "consumequeue")
    shutil.rmtree(os.path.join(root, "A") if which == "one queue" else root)
    if unclean:
        mark_unclean(cfg)
    store = open_store(cfg)
    for q in (0, 1):
        assert all_bodies(store, "A", q) == [body(i) for i in range(400) if i % 3 and i % 2 == q]
        assert all_bodies(store, "B", q) == [body(i) for i in range(400) if not i % 3 and i % 2 == q]
    r = store.put("A", b"new", 0)
    assert r.first_queue_offset == len([i for i in range(400) if i % 3 and i % 2 == 0])


def _old_queue_then_many_files(store):
    for i in range(20):
        store.put("Old", body(i), 0)
    for i in range(500):
        store.put("New", body(i), 0)
    assert len(store.commitlog.files) >= 5


def test_missing_consume_queue_of_old_topic_is_rebuilt(make_config, open_store, fake_clock):
    cfg = make_config()
    fake_clock.step = 1000
    store = open_store(cfg, clock_ms=fake_clock)
    _old_queue_then_many_files(store)
    store.close()                                   # the checkpoint now points near the end of the log
    shutil.rmtree(os.path.join(cfg.store_path_root_dir, "consumequeue", "Old"))
    mark_unclean(cfg)
    store = open_store(cfg, clock_ms=fake_clock)
    assert store.recovery.scan_from_offset > 0
    assert all_bodies(store, "Old") == [body(i) for i in range(20)]


def test_rebuild_consume_queues_restores_old_topic(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    _old_queue_then_many_files(store)
    store.close()
    shutil.rmtree(os.path.join(cfg.store_path_root_dir, "consumequeue", "Old"))
    store = open_store(cfg)
    assert store.rebuild_consume_queues() == 520
    assert all_bodies(store, "Old") == [body(i) for i in range(20)]
    assert all_bodies(store, "New") == [body(i) for i in range(500)]


def test_deleted_index_directory_rebuilt_by_rebuild_consume_queues(make_config, open_store):
    cfg = make_config()
    store = open_store(cfg)
    res = populate(store, 400)
    assert len(store.commitlog.files) >= 4
    store.close()
    shutil.rmtree(os.path.join(cfg.store_path_root_dir, "index"))
    store = open_store(cfg)
    assert store.rebuild_consume_queues() == 400
    for i in range(0, 400, 7):
        got = store.query_message("C", f"key{i}").records
        assert [bytes(x) for x in got] == [bytes(store.read_record(res[i].first_phy_offset))]
    assert all_bodies(store) == [body(i) for i in range(400)]
    store.close()
    store = open_store(cfg)
    assert len(store.query_message("C", "key0").records) == 1
    assert len(store.query_message("C", "key399").records) == 1


def _damage_index(cfg, how: str) -> None:
    idx_dir = os.path.join(cfg.store_path_root_dir, "index")
    if how == "deleted":
        shutil.rmtree(idx_dir)
        return
    names = sorted(os.listdir(idx_dir))
    assert names
    for n in names:
        patch_file(os.path.join(idx_dir, n), 36, struct.pack(">i", -7))     # index count out of range: dropped


@pytest.mark.parametrize("how,unclean", [
    ("deleted", True),
    ("damaged", True),
    ("deleted", False),
    ("damaged", False),
])
def test_lost_index_is_reindexed_on_open(make_config, open_store, how, unclean):
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 60)
    store.close()
    _damage_index(cfg, how)
    if unclean:
        mark_unclean(cfg)
    store = open_store(cfg)
    for i in range(60):
        assert [decode_record(x).body for x in store.query_message("C", f"key{i}").records] == [body(i)]


def assert_no_wrong_record(r, topic="C", q=0):
    for qoff, rec in zip(r.queue_offsets.tolist(), r.records()):
        m = decode_record(rec, check_crc=True)
        assert (m.topic, m.queue_id, m.queue_offset, m.body) == (topic, q, qoff, body(qoff))


def _unit_file_and_pos(store, topic, q, offset):
    cq = store._queues[(topic, q)]
    mf = cq.files[(offset - cq.files[0].file_from_offset // 20) // cq.units_per_file]
    return mf, 20 * (offset - mf.file_from_offset // 20)


@pytest.mark.parametrize("target", ["mid record", "past the end", "before the log", "wrong size"])
def test_corrupt_unit_is_skipped_not_misread(make_config, open_store, target):
    cfg = make_config()
    store = open_store(cfg)
    res = populate(store, 120, keys=False)
    k = 57
    phy, size = res[k].first_phy_offset, res[k].wrote_bytes
    bad = {"mid record": (phy + 17, size), "past the end": (store.max_phy_offset + 1000, size),
           "before the log": (-size * 3, size), "wrong size": (phy, size + 4)}[target]
    mf, pos = _unit_file_and_pos(store, "C", 0, k)
    mf.write(pos, struct.pack(">qi", *bad))
    r = store.get_messages("C", 0, 0, max_count=1000)
    assert r.status is GetStatus.FOUND
    assert r.queue_offsets.tolist() == [i for i in range(120) if i != k]
    assert_no_wrong_record(r)
    one = store.get_messages("C", 0, k, max_count=1)                   # a consumer is not stuck on it
    assert one.queue_offsets.tolist() == [k + 1] and one.next_begin_offset == k + 2
    assert bytes(next(one.bodies())) == body(k + 1)
    last = store.get_messages("C", 0, k, max_count=1)
    mf2, pos2 = _unit_file_and_pos(store, "C", 0, k + 1)
    saved = mf2.read(pos2, 20)
    mf2.write(pos2, struct.pack(">qi", *bad))                          # two bad units in a row, nothing else
    only_bad = store.get_messages("C", 0, k, max_count=1, tags_codes=None)
    assert k not in only_bad.queue_offsets.tolist() and k + 1 not in only_bad.queue_offsets.tolist()
    mf2.write(pos2, saved)
    del last
    # A clean reopen keeps skipping it; recovery after a crash replays the log and repairs the unit.
    store.close()
    store = open_store(cfg)
    assert_no_wrong_record(store.get_messages("C", 0, 0, max_count=1000))
    store.close()
    mark_unclean(cfg)
    store = open_store(cfg)
    r = store.get_messages("C", 0, k, max_count=1)
    assert r.found and bytes(next(r.bodies())) == body(k)


def test_corrupt_unit_pointing_at_other_record_of_same_size(make_config, open_store):
    store = open_store(make_config())
    res = []
    for i in range(40):
        res.append(store.put("C", body(i), 0, keys=None))
        store.put("D", body(i), 0)                       # same size, other queue
    k = 21
    other = store.get_messages("D", 0, 5, max_count=1)
    assert other.sizes[0] == res[k].wrote_bytes
    mf, pos = _unit_file_and_pos(store, "C", 0, k)
    mf.write(pos, struct.pack(">q", int(other.phy_offsets[0])))
    r = store.get_messages("C", 0, 0, max_count=1000)
    for qoff, rec in zip(r.queue_offsets.tolist(), r.records()):
        m = decode_record(rec)
        assert (m.topic, m.queue_id, m.queue_offset) == ("C", 0, qoff)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint damage
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage", ["random bytes", "wrong size", "empty", "far future", "negative", "missing"])
def test_damaged_checkpoint_still_opens(make_config, open_store, damage):
    cfg = make_config()
    store = open_store(cfg)
    populate(store, 300)
    store.close()
    path = os.path.join(cfg.store_path_root_dir, "checkpoint")
    if damage == "random bytes":
        patch_file(path, 0, os.urandom(4096))
    elif damage == "wrong size":
        with open(path, "ab") as fh:
            fh.write(b"\x07" * 100)
    elif damage == "empty":
        open(path, "wb").close()
    elif damage == "far future":
        patch_file(path, 0, struct.pack(">qqq", 2 ** 62, 2 ** 62, 2 ** 62))
    elif damage == "negative":
        patch_file(path, 0, struct.pack(">qqq", -5, -(2 ** 62), -1))
    else:
        os.unlink(path)
    mark_unclean(cfg)
    store = open_store(cfg)
    assert store.recovery.abnormal
    assert not store.recovery.truncated
    assert all_bodies(store) == [body(i) for i in range(300)]
    assert len(store.query_message("C", "key299").records) == 1
    store.put("C", b"more", 0)
    store.close()
    assert os.path.getsize(path) == 4096
    store = open_store(cfg)
    assert all_bodies(store)[-1] == b"more"
