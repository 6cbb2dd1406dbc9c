"""Replication primitives of the store (PROTOCOL.md §7): the master reads raw commitlog chunks, the slave
appends them at its max offset and dispatches the records they complete. No networking here: the tests
move chunks from one store to the other by hand, in sizes chosen to cut records anywhere."""
from __future__ import annotations

import os
import random

import pytest

from rmq_common.properties import encode_properties
from rmq_store import GetStatus, MessageStore, ReplicaStoreError, ReplicationError

FILE = 64 * 1024
TOPICS = ["Orders", "Payments"]


def fill(store: MessageStore, rng: random.Random, count: int, start: int = 0) -> None:
    """``count`` puts of 1–5 messages of 40 B–6 KiB bodies with keys and tags, over 2 topics × 3 queues."""
    for i in range(start, start + count):
        n = rng.randint(1, 5)
        bodies = [rng.randbytes(rng.randint(40, 6000)) for _ in range(n)]
        props = [encode_properties({"KEYS": f"k{i}-{j} shared{i % 7}", "TAGS": f"t{i % 3}",
                                    "UNIQ_KEY": f"U{i:06d}{j:03d}"}) for j in range(n)]
        store.put_batch(TOPICS[i % 2], bodies, i % 3, properties=props)


def replicate(master: MessageStore, slave: MessageStore, rng: random.Random, max_chunk: int = 32 * 1024) -> int:
    """Feed the slave from its max offset (an empty one from the master's last file) in chunks of random
    sizes (1 byte to max_chunk): what an HA connection does. Returns the chunks moved."""
    offset = slave.max_phy_offset or master.replication_start_offset()
    chunks = 0
    for _ in range(100_000):
        view = master.read_replication_chunk(offset, rng.randint(1, max_chunk))
        if view is None:
            return chunks
        try:
            offset = slave.append_replicated(offset, view)
        finally:
            view.release()
        chunks += 1
    raise AssertionError("replication did not finish")


def commitlog_files(store: MessageStore) -> dict[str, bytes]:
    """The commitlog files holding data (not those made ahead of need), by name."""
    store.wait_ready()
    d = os.path.join(store.root, "commitlog")
    out = {}
    for name in sorted(os.listdir(d)):
        if int(name) < store.max_phy_offset:
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
    return out


def assert_same_log(master: MessageStore, slave: MessageStore) -> None:
    """The slave's files are the master's files of the same names, byte for byte."""
    m_files, s_files = commitlog_files(master), commitlog_files(slave)
    assert s_files and list(s_files) == list(m_files)[len(m_files) - len(s_files):]
    for name, data in s_files.items():
        assert data == m_files[name], name


def queue_records(store: MessageStore, topic: str, queue_id: int, start: int) -> list[bytes]:
    out = []
    offset = start
    for _ in range(10_000):
        res = store.get_messages(topic, queue_id, offset, 64)
        if res.status is not GetStatus.FOUND:
            break
        out.extend(bytes(r) for r in res.records())
        res.release()
        offset = res.next_begin_offset
    return out


def assert_same_reads(master: MessageStore, slave: MessageStore, rng: random.Random) -> None:
    for topic in TOPICS:
        for qid in range(3):
            assert slave.max_offset(topic, qid) == master.max_offset(topic, qid)
            # the slave holds the master's records from its first file on (a slave that started empty
            # begins at the master's last file then)
            expected = [r for r in queue_records(master, topic, qid, master.min_offset(topic, qid))
                        if int.from_bytes(r[28:36], "big") >= slave.min_phy_offset]
            assert queue_records(slave, topic, qid, slave.min_offset(topic, qid)) == expected
    for i in rng.sample(range(200), 20):
        key = f"shared{i % 7}"
        for topic in TOPICS:
            m = [bytes(r) for r in master.query_message(topic, key, 1000).records]
            s = [bytes(r) for r in slave.query_message(topic, key, 1000).records]
            assert s == [r for r in m if int.from_bytes(r[28:36], "big") >= slave.min_phy_offset]


def test_slave_log_is_byte_identical_across_file_rolls(make_config, open_store):
    rng = random.Random(7)
    master = open_store(make_config())
    slave = open_store(make_config())
    slave.replica = True
    fill(master, rng, 150)
    assert len(master.commitlog.files) >= 5           # several rolls, each with a BLANK tail
    assert slave.max_phy_offset == 0
    # feed from offset 0 explicitly: an empty slave that the master feeds from its first file
    view = master.read_replication_chunk(0, 100)
    slave.append_replicated(0, view)
    view.release()
    chunks = replicate(master, slave, rng)
    assert chunks > 20
    assert slave.max_phy_offset == master.max_phy_offset
    assert slave.replica_dispatched_offset == master.max_phy_offset
    assert_same_log(master, slave)
    assert len(commitlog_files(slave)) == len(commitlog_files(master))
    assert_same_reads(master, slave, rng)
    # more puts, more replication: the slave keeps up incrementally
    fill(master, rng, 60, start=150)
    replicate(master, slave, rng, max_chunk=700)
    assert_same_log(master, slave)
    assert_same_reads(master, slave, rng)


def test_chunks_are_bounded_and_never_cross_a_file(make_config, open_store):
    rng = random.Random(3)
    master = open_store(make_config())
    fill(master, rng, 60)
    offset = 0
    while True:
        view = master.read_replication_chunk(offset, 32 * 1024)
        if view is None:
            break
        assert 0 < len(view) <= 32 * 1024
        assert offset // FILE == (offset + len(view) - 1) // FILE
        offset += len(view)
        view.release()
    assert offset == master.max_phy_offset
    assert master.read_replication_chunk(master.max_phy_offset + 10, 100) is None


def test_empty_slave_starts_at_the_masters_last_file(make_config, open_store):
    rng = random.Random(11)
    master = open_store(make_config())
    fill(master, rng, 120)
    last = master.commitlog.files[-1]
    assert master.replication_start_offset() == last.file_from_offset > 0
    slave = open_store(make_config())
    slave.replica = True
    replicate(master, slave, rng)
    assert slave.min_phy_offset == last.file_from_offset
    assert min(os.listdir(os.path.join(slave.root, "commitlog"))) == os.path.basename(last.path)
    assert slave.max_phy_offset == master.max_phy_offset
    # queues on the slave begin mid-way: what they hold answers exactly as the master's
    assert any(slave.min_offset(t, q) > 0 for t in TOPICS for q in range(3))
    assert_same_log(master, slave)
    assert_same_reads(master, slave, rng)
    # an empty store cannot start inside a file
    other = open_store(make_config())
    with pytest.raises(ReplicationError):
        other.append_replicated(last.file_from_offset + 100, b"x" * 10)
    assert other.max_phy_offset == 0


def test_a_record_cut_by_a_chunk_is_dispatched_when_its_rest_arrives(make_config, open_store):
    master = open_store(make_config())
    slave = open_store(make_config())
    arrivals = []
    slave.arrival_listeners.append(lambda t, q, m: arrivals.append((t, q, m)))
    master.put("Orders", b"a" * 300, 2, keys="first")
    master.put("Orders", b"b" * 300, 2, keys="second")
    data = bytes(master.read_replication_chunk(0, 10_000))
    first_size = int.from_bytes(data[0:4], "big")
    cut = first_size + 50                             # the second record is cut after 50 bytes
    slave.append_replicated(0, data[:cut])
    assert slave.max_offset("Orders", 2) == 1 and arrivals == [("Orders", 2, 1)]
    assert slave.max_phy_offset == cut and slave.replica_dispatched_offset == first_size
    slave.append_replicated(cut, data[cut:cut + 3])   # still not complete: nothing new
    assert slave.max_offset("Orders", 2) == 1 and len(arrivals) == 1
    slave.append_replicated(cut + 3, data[cut + 3:])
    assert slave.max_offset("Orders", 2) == 2 and arrivals[-1] == ("Orders", 2, 2)
    assert [bytes(r) for r in slave.query_message("Orders", "second").records] == [data[first_size:]]


def test_wrong_offsets_and_damaged_bytes_are_refused(make_config, open_store):
    master = open_store(make_config())
    slave = open_store(make_config())
    for i in range(3):
        master.put("Orders", b"x" * 1000, 0)
    data = bytes(master.read_replication_chunk(0, 10_000))
    slave.append_replicated(0, data[:1500])
    with pytest.raises(ReplicationError):             # not at the slave's max offset
        slave.append_replicated(1400, data[1400:])
    with pytest.raises(ReplicationError):             # across a file end
        slave.append_replicated(1500, b"\0" * FILE)
    assert slave.max_phy_offset == 1500
    # bytes that are no record: the slave keeps only its well-formed prefix
    rec = int.from_bytes(data[0:4], "big")
    garbage = bytearray(data[1500:])
    garbage[2 * rec - 1500 + 4:2 * rec - 1500 + 8] = b"\x12\x34\x56\x78"     # the third record's magic
    with pytest.raises(ReplicationError):
        slave.append_replicated(1500, bytes(garbage))
    assert slave.max_phy_offset == slave.replica_dispatched_offset == 2 * rec
    assert slave.max_offset("Orders", 0) == 2
    slave.append_replicated(2 * rec, data[2 * rec:])  # the master resends from there: all good again
    assert slave.max_offset("Orders", 0) == 3 and slave.max_phy_offset == master.max_phy_offset
    # a record whose physical-offset field does not match where it lands is refused as well
    other = open_store(make_config())
    with pytest.raises(ReplicationError):
        other.append_replicated(0, data[rec:2 * rec])
    assert other.max_phy_offset == 0


def test_a_replica_refuses_puts(make_config, open_store):
    slave = open_store(make_config())
    slave.replica = True
    with pytest.raises(ReplicaStoreError):
        slave.put("Orders", b"x")
    assert slave.max_phy_offset == 0


@pytest.mark.parametrize("abnormal", [False, True])
def test_a_slave_recovers_like_a_master(make_config, open_store, abnormal):
    rng = random.Random(5)
    master = open_store(make_config())
    fill(master, rng, 80)
    cfg = make_config()
    slave = open_store(cfg)
    replicate(master, slave, rng)
    fill(master, rng, 5, start=80)
    offset = slave.max_phy_offset
    view = master.read_replication_chunk(offset, 32 * 1024)
    rec = int.from_bytes(bytes(view[0:4]), "big")
    torn = offset + rec + 17                           # one full record, then a torn one
    slave.append_replicated(offset, view[:rec + 17])
    view.release()
    assert slave.replica_dispatched_offset == offset + rec
    slave.close()
    if abnormal:
        open(os.path.join(cfg.store_path_root_dir, "abort"), "wb").close()
    again = open_store(cfg)
    assert again.recovery.abnormal is abnormal
    assert again.max_phy_offset == again.replica_dispatched_offset == offset + rec < torn
    replicate(master, again, rng)                      # it reports its recovered max: catch-up from there
    assert_same_log(master, again)
    assert_same_reads(master, again, rng)
