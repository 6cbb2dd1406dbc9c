"""Unit tests of the store's file types: MappedFile, ConsumeQueue, IndexFile/IndexService, StoreCheckpoint."""
from __future__ import annotations

import os
import struct

import pytest

from rmq_store._consumequeue import ConsumeQueue
from rmq_store._index import IndexFile, index_file_size
from rmq_store._mapped import CorruptFileError, MappedFile, file_name_of
from rmq_store.checkpoint import CHECKPOINT_SIZE, StoreCheckpoint
from rmq_store.index_service import IndexService, index_key_hash

PAD = (0, 0x7FFFFFFF, 0)


# ---------------------------------------------------------------------------------------------------------------
# MappedFile
# ---------------------------------------------------------------------------------------------------------------
def test_file_name_of():
    assert file_name_of(0) == "00000000000000000000"
    assert file_name_of(1073741824) == "00000000001073741824"


def test_mapped_file_create_and_reopen(tmp_path):
    path = str(tmp_path / file_name_of(8192))
    mf = MappedFile(path, 4096, create=True)
    assert os.path.getsize(path) == 4096
    assert mf.file_from_offset == 8192 and mf.file_size == 4096
    assert (mf.wrote_position, mf.flushed_position, mf.remaining, mf.is_full) == (0, 0, 4096, False)
    assert mf.read(0, 4096) == bytes(4096)
    mf.write(100, b"hello")
    mf.wrote_position = 105
    assert mf.read(100, 5) == b"hello"
    assert mf.view().tobytes()[100:] == b"hello"
    assert mf.view(100, 103).tobytes() == b"hel"
    assert mf.flush() == 105 and mf.flushed_position == 105
    assert mf.flush(50) == 105          # never goes back
    mf.zero(101, 103)
    assert mf.read(100, 5) == b"h\0\0lo"
    mf.close()
    assert mf.closed
    mf.close()                           # idempotent
    again = MappedFile(path, 4096)
    assert again.read(100, 5) == b"h\0\0lo"
    assert again.wrote_position == 0     # positions are the owner's business
    again.close()
    with pytest.raises(OSError):
        MappedFile(path, 4096, create=True)           # O_EXCL: never clobber an existing file
    with pytest.raises(OSError):
        MappedFile(str(tmp_path / "missing"), 4096)
    with pytest.raises(ValueError):
        MappedFile(str(tmp_path / "zero"), 0, create=True)


def test_mapped_file_size_mismatch_is_corrupt(tmp_path):
    path = str(tmp_path / file_name_of(0))
    MappedFile(path, 4096, create=True).close()
    with pytest.raises(CorruptFileError, match="4096 bytes, expected 8192"):
        MappedFile(path, 8192)
    with open(path, "r+b") as fh:
        fh.truncate(1000)
    with pytest.raises(CorruptFileError, match="1000 bytes"):
        MappedFile(path, 4096)


def test_mapped_file_bounds(tmp_path):
    mf = MappedFile(str(tmp_path / file_name_of(0)), 4096, create=True)
    for call in (lambda: mf.write(4094, b"abc"), lambda: mf.write(-1, b"a"),
                 lambda: mf.read(4090, 10), lambda: mf.read(-1, 1), lambda: mf.read(0, -1),
                 lambda: mf.zero(10, 5000), lambda: mf.zero(5, 3), lambda: mf.zero(-1, 3),
                 lambda: mf.view(0, 5000), lambda: mf.view(10, 5), lambda: mf.view(-2, 5)):
        with pytest.raises(IndexError):
            call()
    mf.write(4093, b"abc")               # exactly at the end is fine
    assert mf.read(4093, 3) == b"abc"
    assert mf.read(4096, 0) == b""
    mf.write(0, b"")
    mf.close()
    with pytest.raises(ValueError):
        mf.read(0, 1)
    with pytest.raises(ValueError):
        mf.write(0, b"x")
    with pytest.raises(ValueError):
        mf.zero(0, 1)
    with pytest.raises(ValueError):
        memoryview(mf)


def test_view_keeps_mapping_alive_after_close(tmp_path):
    mf = MappedFile(str(tmp_path / file_name_of(0)), 4096, create=True)
    mf.write(0, b"still here")
    mf.wrote_position = 10
    view = mf.view()
    assert mf.exports == 1
    mf.close()
    assert mf.closed
    assert mf.address != 0               # unmap deferred while a view exists
    assert view.tobytes() == b"still here"
    with pytest.raises(ValueError):
        mf.view()                        # no new views of a closed file
    view.release()
    assert mf.exports == 0
    assert mf.address == 0               # the last view unmapped it


def test_destroy_deletes_file_while_view_still_readable(tmp_path):
    path = str(tmp_path / file_name_of(0))
    mf = MappedFile(path, 4096, create=True)
    mf.write(4000, b"tail bytes")
    view = memoryview(mf)[4000:4010]
    mf.destroy()
    assert not os.path.exists(path)
    assert mf.deleted and mf.closed
    assert view.tobytes() == b"tail bytes"
    del view
    assert mf.exports == 0 and mf.address == 0
    mf.destroy()                         # idempotent


# ---------------------------------------------------------------------------------------------------------------
# ConsumeQueue
# ---------------------------------------------------------------------------------------------------------------
def cq_files(cq: ConsumeQueue) -> list[str]:
    return sorted(os.listdir(cq.directory)) if os.path.isdir(cq.directory) else []


def fill(cq: ConsumeQueue, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        cq.put(i * 100, 100, i * 7 - 50, i)


def test_consume_queue_put_unit_and_load(tmp_path):
    root = str(tmp_path / "consumequeue")
    cq = ConsumeQueue(root, "TopicA", 3, 10)
    assert (cq.min_offset, cq.max_offset, cq.unit(0)) == (0, 0, None)
    fill(cq, 25)
    assert cq.directory == os.path.join(root, "TopicA", "3")
    assert cq_files(cq) == [file_name_of(0), file_name_of(200), file_name_of(400)]
    assert all(os.path.getsize(os.path.join(cq.directory, n)) == 200 for n in cq_files(cq))
    assert (cq.min_offset, cq.max_offset, cq.max_phy_end) == (0, 25, 2500)
    for i in range(25):
        assert cq.unit(i) == (i * 100, 100, i * 7 - 50)
    assert cq.unit(25) is None and cq.unit(-1) is None
    # The on-disk unit: int64 offset | int32 size | int64 tags code, big-endian, unit i at byte 20·i.
    with open(os.path.join(cq.directory, file_name_of(400)), "rb") as fh:
        raw = fh.read()
    assert raw[20 * 3:20 * 4] == struct.pack(">qiq", 2300, 100, 23 * 7 - 50)
    assert raw[20 * 5:] == bytes(100)
    cq.flush()
    cq.close()

    loaded = ConsumeQueue(root, "TopicA", 3, 10)
    assert loaded.load() == 25
    assert (loaded.min_offset, loaded.max_offset, loaded.max_phy_end) == (0, 25, 2500)
    assert [loaded.unit(i) for i in range(25)] == [(i * 100, 100, i * 7 - 50) for i in range(25)]
    fill(loaded, 10, start=25)           # appending continues where it was
    assert loaded.max_offset == 35 and loaded.unit(34) == (3400, 100, 34 * 7 - 50)
    loaded.close()


def test_consume_queue_load_of_exactly_full_file(tmp_path):
    root = str(tmp_path)
    cq = ConsumeQueue(root, "T", 0, 10)
    fill(cq, 20)
    cq.close()
    loaded = ConsumeQueue(root, "T", 0, 10)
    assert loaded.load() == 20
    assert loaded.max_offset == 20
    fill(loaded, 1, start=20)
    assert loaded.unit(20) == (2000, 100, 90)
    loaded.close()


def test_consume_queue_replay_verifies_and_repairs(tmp_path):
    cq = ConsumeQueue(str(tmp_path), "T", 0, 10)
    fill(cq, 5)
    cq.put(200, 100, -36, 2)             # same unit again: no-op
    assert cq.unit(2) == (200, 100, -36) and cq.max_offset == 5
    cq.put(999, 55, 1, 2)                # a unit that disagrees is repaired
    assert cq.unit(2) == (999, 55, 1) and cq.max_offset == 5
    with pytest.raises(CorruptFileError, match="gap"):
        cq.put(700, 100, 0, 7)
    assert cq.max_offset == 5
    cq.close()


def test_consume_queue_truncate_phy(tmp_path):
    root = str(tmp_path)
    cq = ConsumeQueue(root, "T", 0, 10)
    fill(cq, 25)
    assert cq.truncate_phy(10_000) == 0
    assert cq.truncate_phy(1550) == 10   # units 15..24 end past 1550
    assert (cq.max_offset, cq.max_phy_end) == (15, 1500)
    assert cq.unit(14) == (1400, 100, 14 * 7 - 50) and cq.unit(15) is None
    assert cq_files(cq) == [file_name_of(0), file_name_of(200)]     # the emptied file is gone
    fill(cq, 3, start=15)
    assert cq.max_offset == 18 and cq.unit(17) == (1700, 100, 17 * 7 - 50)
    cq.close()
    loaded = ConsumeQueue(root, "T", 0, 10)
    assert loaded.load() == 18
    assert loaded.truncate_phy(0) == 18
    assert (loaded.min_offset, loaded.max_offset) == (0, 0)
    loaded.close()
    again = ConsumeQueue(root, "T", 0, 10)
    again.load()
    assert again.max_offset == 0
    again.close()


def test_consume_queue_delete_expired_and_correct_min_offset(tmp_path):
    root = str(tmp_path)
    cq = ConsumeQueue(root, "T", 0, 10)
    fill(cq, 25)
    cq.correct_min_offset(350)
    assert cq.min_offset == 4            # first unit whose record starts at or after 350
    assert cq.unit(3) is None and cq.unit(4) == (400, 100, -22)
    assert cq.delete_expired(999) == 0   # unit 9 ends at 1000 > 999: file 0 still needed
    assert cq.delete_expired(1050) == 1
    assert cq_files(cq) == [file_name_of(200), file_name_of(400)]
    assert cq.min_offset == 11
    assert cq.delete_expired(10 ** 9) == 1   # never the newest file
    assert cq_files(cq) == [file_name_of(400)]
    assert cq.min_offset == 25 and cq.max_offset == 25
    fill(cq, 2, start=25)
    assert cq.unit(26) == (2600, 100, 26 * 7 - 50)
    cq.close()
    loaded = ConsumeQueue(root, "T", 0, 10)
    loaded.load()
    assert loaded.min_offset == 20       # file start; correct_min_offset moves it past stale units
    loaded.correct_min_offset(2500)
    assert (loaded.min_offset, loaded.max_offset) == (25, 27)
    loaded.close()


def test_consume_queue_padding_when_queue_starts_mid_file(tmp_path):
    root = str(tmp_path)
    cq = ConsumeQueue(root, "T", 1, 10)
    cq.put(5000, 120, 77, 15)            # the queue starts at unit 15 (e.g. rebuilt after retention)
    assert (cq.min_offset, cq.max_offset) == (15, 16)
    assert cq_files(cq) == [file_name_of(200)]
    with open(os.path.join(cq.directory, file_name_of(200)), "rb") as fh:
        raw = fh.read()
    for i in range(5):                   # units 10..14: RocketMQ's fillPreBlank padding
        assert raw[20 * i:20 * i + 20] == struct.pack(">qiq", *PAD)
    assert raw[100:120] == struct.pack(">qiq", 5000, 120, 77)
    cq.put(5120, 130, 0, 16)
    cq.close()
    loaded = ConsumeQueue(root, "T", 1, 10)
    assert loaded.load() == 7
    assert loaded.max_offset == 17
    assert loaded.unit(12) == PAD
    loaded.correct_min_offset(0)         # padding sorts first: min moves past it
    assert loaded.min_offset == 15
    assert loaded.unit(15) == (5000, 120, 77) and loaded.unit(16) == (5120, 130, 0)
    loaded.close()


def test_consume_queue_load_rejects_gaps_and_bad_files(tmp_path):
    root = str(tmp_path)
    cq = ConsumeQueue(root, "T", 0, 10)
    fill(cq, 30)
    cq.close()
    os.unlink(os.path.join(cq.directory, file_name_of(200)))
    with pytest.raises(CorruptFileError, match="gap"):
        ConsumeQueue(root, "T", 0, 10).load()

    cq2 = ConsumeQueue(root, "U", 0, 10)
    fill(cq2, 5)
    cq2.close()
    os.rename(os.path.join(cq2.directory, file_name_of(0)), os.path.join(cq2.directory, file_name_of(30)))
    with pytest.raises(CorruptFileError, match="multiple"):
        ConsumeQueue(root, "U", 0, 10).load()

    cq3 = ConsumeQueue(root, "V", 0, 10)
    fill(cq3, 5)
    cq3.close()
    with open(os.path.join(cq3.directory, file_name_of(0)), "r+b") as fh:
        fh.truncate(150)
    with pytest.raises(CorruptFileError):
        ConsumeQueue(root, "V", 0, 10).load()


def test_consume_queue_destroy(tmp_path):
    cq = ConsumeQueue(str(tmp_path), "T", 0, 10)
    fill(cq, 15)
    cq.destroy()
    assert cq_files(cq) == []
    assert (cq.min_offset, cq.max_offset, cq.unit(0)) == (0, 0, None)


# ---------------------------------------------------------------------------------------------------------------
# IndexFile
# ---------------------------------------------------------------------------------------------------------------
SLOTS, ENTRIES = 8, 16


def new_index(tmp_path, name="20240101000000000") -> IndexFile:
    mf = MappedFile(str(tmp_path / name), index_file_size(SLOTS, ENTRIES), create=True)
    return IndexFile(mf, SLOTS, ENTRIES, True)


def test_index_file_layout_and_select_chain(tmp_path):
    assert index_file_size(SLOTS, ENTRIES) == 40 + 4 * SLOTS + 20 * ENTRIES
    idx = new_index(tmp_path)
    assert (idx.index_count, idx.hash_slot_count, idx.is_full) == (1, 0, False)
    assert not idx.time_matched(0, 1 << 62)          # empty file matches no time
    t0 = 1_700_000_000_000
    # 3 and 11 share bucket 3; 5 is alone.
    assert idx.put(3, 100, t0)
    assert idx.put(11, 200, t0 + 1500)
    assert idx.put(3, 300, t0 + 2999)
    assert idx.put(5, 400, t0 + 4000)
    assert idx.put(3, 500, t0 + 9000)
    assert idx.select(3, 10, 0, 1 << 62) == [500, 300, 100]         # newest first, hash 11 filtered out
    assert idx.select(11, 10, 0, 1 << 62) == [200]
    assert idx.select(19, 10, 0, 1 << 62) == []                     # same bucket, no entry
    assert idx.select(3, 2, 0, 1 << 62) == [500, 300]               # max_num
    assert idx.select(-3, 10, 0, 1 << 62) == []
    assert idx.select(3, 0, 0, 1 << 62) == []
    # Times are kept as whole seconds since the file's begin time (t0 + 2999 is read back as t0 + 2000).
    assert idx.select(3, 10, t0 + 1000, t0 + 8999) == [300]
    assert idx.select(3, 10, t0 + 2001, t0 + 8999) == []
    assert idx.select(3, 10, t0, t0) == [100]
    assert idx.time_matched(t0 + 9000, t0 + 20000) and not idx.time_matched(t0 + 9001, t0 + 20000)
    assert (idx.begin_timestamp, idx.end_timestamp) == (t0, t0 + 9000)
    assert (idx.begin_phy_offset, idx.end_phy_offset) == (100, 500)
    assert (idx.index_count, idx.hash_slot_count) == (6, 5)
    # Header, slots and entries as PROTOCOL.md §6.4 draws them.
    raw = idx.mapped.read(0, idx.mapped.file_size)
    assert struct.unpack_from(">qqqqii", raw, 0) == (t0, t0 + 9000, 100, 500, 5, 6)
    slots = struct.unpack_from(">8i", raw, 40)
    assert slots[3] == 5 and slots[5] == 4 and slots[0] == 0
    entry = lambda n: struct.unpack_from(">iqii", raw, 40 + 4 * SLOTS + 20 * n)
    assert entry(0) == (0, 0, 0, 0)
    assert entry(1) == (3, 100, 0, 0)
    assert entry(2) == (11, 200, 1, 1)         # the bucket chain links every hash of the bucket
    assert entry(3) == (3, 300, 2, 2)
    assert entry(5) == (3, 500, 9, 3)
    idx.mapped.close()


def test_index_file_full_and_reload(tmp_path):
    idx = new_index(tmp_path)
    t0 = 1_000_000
    for n in range(ENTRIES - 1):                     # entry 0 is never used
        assert idx.put(n % 4, 1000 + n, t0 + n * 1000)
    assert idx.is_full
    assert not idx.put(1, 99999, t0)
    assert idx.index_count == ENTRIES
    path = idx.mapped.path
    idx.mapped.sync_all()
    idx.mapped.close()
    mf = MappedFile(path, index_file_size(SLOTS, ENTRIES))
    loaded = IndexFile(mf, SLOTS, ENTRIES, False)
    assert loaded.index_count == ENTRIES and loaded.is_full
    assert loaded.select(1, 100, 0, 1 << 62) == [1000 + n for n in range(ENTRIES - 1) if n % 4 == 1][::-1]
    assert (loaded.begin_timestamp, loaded.end_phy_offset) == (t0, 1000 + ENTRIES - 2)
    mf.close()


@pytest.mark.parametrize("bad_count", [0, -1, ENTRIES + 1])
def test_index_file_corrupt_count(tmp_path, bad_count):
    idx = new_index(tmp_path)
    idx.put(1, 10, 1000)
    path = idx.mapped.path
    idx.mapped.write(36, struct.pack(">i", bad_count))
    idx.mapped.close()
    mf = MappedFile(path, index_file_size(SLOTS, ENTRIES))
    with pytest.raises(CorruptFileError, match="index count"):
        IndexFile(mf, SLOTS, ENTRIES, False)
    mf.close()


def test_index_file_size_must_fit(tmp_path):
    mf = MappedFile(str(tmp_path / "x"), index_file_size(SLOTS, ENTRIES) + 20, create=True)
    with pytest.raises(ValueError):
        IndexFile(mf, SLOTS, ENTRIES, True)
    mf.close()


# ---------------------------------------------------------------------------------------------------------------
# IndexService
# ---------------------------------------------------------------------------------------------------------------
def test_index_service_rolls_when_full_and_looks_up_across_files(tmp_path):
    d = str(tmp_path / "index")
    svc = IndexService(d, SLOTS, ENTRIES)
    svc.load()
    assert svc.files == [] and svc.end_phy_offset == -1
    t0 = 1_700_000_000_000
    total = 3 * (ENTRIES - 1) + 4
    for n in range(total):
        key = f"k{n % 5}"
        assert svc.current.put(index_key_hash("T", key), 100 * n, t0 + n)
    assert len(svc.files) == 4
    assert len(set(os.listdir(d))) == 4 and all(len(n) == 17 and n.isdigit() for n in os.listdir(d))
    assert svc.end_phy_offset == 100 * (total - 1)
    want = [100 * n for n in range(total) if n % 5 == 2][::-1]
    assert svc.lookup("T", "k2", 1000, 0, 1 << 62) == want
    assert svc.lookup("T", "k2", 3, 0, 1 << 62) == want[:3]
    # delete_below removes files whose every entry is below the offset, never the newest.
    first_end = svc.files[0].end_phy_offset
    assert svc.delete_below(first_end) == 0
    assert svc.delete_below(first_end + 1) == 1
    assert len(svc.files) == 3 and len(os.listdir(d)) == 3
    assert svc.delete_below(1 << 62) == 2
    assert len(svc.files) == 1
    svc.flush()
    svc.close()

    again = IndexService(d, SLOTS, ENTRIES)
    again.load()
    assert len(again.files) == 1
    assert again.lookup("T", "k2", 1000, 0, 1 << 62) == [x for x in want if x >= again.files[0].begin_phy_offset]
    again.close()


def test_index_service_drops_damaged_file_on_load(tmp_path):
    d = str(tmp_path / "index")
    svc = IndexService(d, SLOTS, ENTRIES)
    svc.load()
    svc.current.put(5, 10, 1000)
    first = svc.files[0].mapped.path
    svc.roll().put(6, 20, 2000)
    svc.files[0].mapped.write(36, struct.pack(">i", 10_000))
    svc.close()
    again = IndexService(d, SLOTS, ENTRIES)
    again.load()
    assert len(again.files) == 1 and not os.path.exists(first)
    again.close()


def test_index_key_hash():
    from rmq_common.hashing import index_key_hash as ref
    for topic, key in [("T", "k"), ("TopicTest", "order-1"), ("Ünïcode", "ключ"), ("T", "")]:
        assert index_key_hash(topic, key) == ref(f"{topic}#{key}")


# ---------------------------------------------------------------------------------------------------------------
# StoreCheckpoint
# ---------------------------------------------------------------------------------------------------------------
def test_checkpoint_round_trip(tmp_path):
    path = str(tmp_path / "checkpoint")
    cp = StoreCheckpoint(path)
    assert (cp.physic_msg_timestamp, cp.logics_msg_timestamp, cp.index_msg_timestamp) == (0, 0, 0)
    assert cp.min_timestamp(True) == 0
    cp.physic_msg_timestamp = 1_700_000_009_000
    cp.logics_msg_timestamp = 1_700_000_008_000
    cp.index_msg_timestamp = 1_700_000_007_000
    cp.flush()
    cp.close()
    assert os.path.getsize(path) == CHECKPOINT_SIZE
    with open(path, "rb") as fh:
        assert struct.unpack(">qqq", fh.read(24)) == (1_700_000_009_000, 1_700_000_008_000, 1_700_000_007_000)
    again = StoreCheckpoint(path)
    assert (again.physic_msg_timestamp, again.logics_msg_timestamp, again.index_msg_timestamp) == (
        1_700_000_009_000, 1_700_000_008_000, 1_700_000_007_000)
    assert again.min_timestamp(True) == 1_700_000_007_000 - 3000
    assert again.min_timestamp(False) == 1_700_000_008_000 - 3000
    again.close()


def test_checkpoint_of_wrong_size_starts_fresh(tmp_path):
    path = str(tmp_path / "checkpoint")
    with open(path, "wb") as fh:
        fh.write(b"\x01" * 100)
    cp = StoreCheckpoint(path)
    assert (cp.physic_msg_timestamp, cp.logics_msg_timestamp, cp.index_msg_timestamp) == (0, 0, 0)
    cp.close()
    assert os.path.getsize(path) == CHECKPOINT_SIZE
