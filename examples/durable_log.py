#!/usr/bin/env python3
"""rmq_store used alone as an embedded, durable log.

    PYTHONPATH=. .venv/bin/python examples/durable_log.py [STORE_DIR]

Appends order events in batches (each with its own KEYS) and audit events one by one (with TAGS), reads a
queue from an offset in a loop, decodes a stored record, looks messages up by key and an offset up by time,
then closes the store and opens it again to show the recovery report.

Without STORE_DIR the store lives in a temporary directory that is removed at the end. With STORE_DIR the data
stays; running the example again appends to it, and the reads below also see the earlier runs' messages.
See docs/store.md for the API and the guarantees.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time

from rmq_common._record import decode_record, tags_hash_code
from rmq_common.properties import encode_properties
from rmq_store import GetStatus, MessageStore, RecoveryReport, StoreConfig

ORDERS = "OrderEvents"     # topics: only %, |, ASCII letters, digits, _ and -; at most 127 characters
AUDIT = "AuditEvents"


def make_config(root: str) -> StoreConfig:
    return StoreConfig(
        store_path_root_dir=root,
        # Small files keep this example quick and light on disk. Every store file is created at its full size
        # (posix_fallocate) and pre-faulted page by page, so RocketMQ's defaults would cost a 1 GiB commitlog
        # file (and a second one prepared in the background), a 420,000,040-byte index file and 6,000,000 bytes
        # per queue before the first message is stored. Keep the defaults for real data. A store's file sizes
        # are fixed once it has files: reopen it with the same values (docs/configuration.md).
        mapped_file_size_commitlog=16 * 1024 * 1024,   # 16 MiB per commitlog file (default 1 GiB)
        mapped_file_size_consume_queue=10_000 * 20,    # 10,000 units of 20 bytes per queue file (default 300,000)
        max_hash_slot_num=4096,                        # index buckets per index file (default 5,000,000)
        max_index_num=16_384,                          # index entries per index file (default 20,000,000)
        # ASYNC_FLUSH (the default): a put returns once its bytes are in the page cache; the flush thread msyncs
        # every flush_interval_ms. store.flush() waits for the next round, so a short interval keeps it quick.
        flush_interval_ms=100,
    )


def describe(report: RecoveryReport) -> str:
    kind = "after a crash (abort file found)" if report.abnormal else "after a clean close"
    text = (f"recovered {kind}: scanned the commitlog from offset {report.scan_from_offset}, "
            f"valid data ends at {report.max_phy_offset}, {report.records_redispatched} records replayed "
            f"into consume queues and index")
    if report.truncated:
        text += (f"; erased {report.truncated_bytes} bytes from offset {report.truncated_from} "
                 f"({report.damage}), deleted files {report.files_deleted}")
    if report.full_rebuild:
        text += "; consume queues and index rebuilt from the whole commitlog"
    return text


def append(store: MessageStore) -> list:
    """Three batches of 100 order events, then three single audit events."""
    batches = []
    for b in range(3):
        bodies, props = [], []
        for i in range(100):
            order = b * 100 + i
            bodies.append(json.dumps({"order": order, "event": "created", "amount": order * 3}).encode())
            # One property string per message: each gets its own KEYS (space-separated keys, each indexed).
            props.append(encode_properties({"KEYS": f"order-{order} customer-{order % 7}"}))
        result = store.put_batch(ORDERS, bodies, queue_id=0, properties=props)
        assert result.ok, result.status
        print(f"batch {b}: {result.count} records at queue offsets {result.first_queue_offset}.."
              f"{result.first_queue_offset + result.count - 1}, commitlog offsets {result.first_phy_offset}.."
              f"{int(result.phy_offsets[-1])}, {result.wrote_bytes} bytes, stored at {result.store_timestamp} ms")
        batches.append(result)
        time.sleep(0.005)   # give each batch its own store timestamp, for offset_by_time below
    for user, action in [("alice", "login"), ("bob", "login"), ("alice", "logout")]:
        # put() is put_batch() of one message; tags= and keys= are added to its properties.
        store.put(AUDIT, f"{user} {action}".encode(), tags=action, keys=user)
    return batches


def read_queue(store: MessageStore, topic: str, queue_id: int, offset: int) -> int:
    """Read a queue from ``offset`` to its end, 64 records per call; returns the next offset to read."""
    seen = 0
    while True:
        res = store.get_messages(topic, queue_id, offset, max_count=64)
        if res.status is not GetStatus.FOUND:
            # OFFSET_OVERFLOW_ONE: caught up (offset == max offset); a consumer would poll again later.
            print(f"  {topic}: read {seen} records, stopped at offset {offset} ({res.status.name})")
            return offset
        # bodies() and records() yield zero-copy views of the mapped commitlog: copy what must outlive them.
        amounts = [json.loads(bytes(body))["amount"] for body in res.bodies()]
        first = decode_record(next(res.records()))
        seen += res.count
        print(f"  offsets {int(res.queue_offsets[0])}..{int(res.queue_offsets[-1])}: {res.count} records, "
              f"{res.total_bytes} bytes, amount sum {sum(amounts)}, first KEYS {first.properties['KEYS']!r}")
        res.release()        # drop the views so deleted files can be unmapped
        offset = res.next_begin_offset


def main(argv: list[str]) -> int:
    keep = len(argv) > 1
    root = argv[1] if keep else tempfile.mkdtemp(prefix="rmq-durable-log-")
    try:
        run(root)
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def run(root: str) -> None:
    store = MessageStore(make_config(root))
    print(f"opened {root}: {describe(store.open())}")
    try:
        batches = append(store)

        start = store.min_offset(ORDERS, 0)
        print(f"reading {ORDERS} queue 0 from offset {start}:")
        read_queue(store, ORDERS, 0, start)

        # One record, decoded: every field of RocketMQ's stored layout.
        rec = store.read_record(batches[1].first_phy_offset)
        msg = decode_record(rec)
        print(f"record at commitlog offset {msg.commit_log_offset}: topic {msg.topic}, queue {msg.queue_id} "
              f"offset {msg.queue_offset}, {msg.store_size} bytes, body {msg.body!r}, keys {msg.keys}, "
              f"msgId {msg.msg_id}")

        # Tag filtering uses the consume queue's tags code (the Java hash of TAGS); compare the tag itself if a
        # hash collision matters to you.
        res = store.get_messages(AUDIT, 0, 0, tags_codes={tags_hash_code("login")})
        logins = [decode_record(r) for r in res.records()]
        res.release()
        print(f"{AUDIT} tagged 'login': {[bytes(m.body).decode() for m in logins if m.tags == 'login']}")

        # Key lookup through the index: newest first, exact key and topic confirmed by the store.
        found = store.query_message(ORDERS, "order-142")
        print(f"query order-142: {[decode_record(r).queue_offset for r in found.records]} (queue offsets)")
        found = store.query_message(AUDIT, "alice")
        print(f"query alice: {[bytes(decode_record(r).body).decode() for r in found.records]}")

        # Time → offset: the offset whose store time is nearest (an exact hit gives the first such message).
        ts = batches[2].store_timestamp
        off = store.offset_by_time(ORDERS, 0, ts)
        print(f"offset_by_time({ts}) = {off} (batch 2 starts at {batches[2].first_queue_offset})")
        assert off == batches[2].first_queue_offset

        flushed = store.flush()    # every byte appended so far is on disk now
        print(f"flushed to commitlog offset {flushed}; stats {store.stats()}")
        end = store.max_offset(ORDERS, 0)
    finally:
        # close(): flush, write the checkpoint, remove the abort file. Without it (kill -9, power loss) the next
        # open() finds the abort file and recovers from the checkpoint instead (docs/store.md, Recovery).
        store.close()

    with MessageStore(make_config(root)) as store:
        print(f"reopened: {describe(store.recovery)}")
        assert not store.recovery.abnormal and store.max_offset(ORDERS, 0) == end
        print(f"{ORDERS} queue 0 holds offsets {store.min_offset(ORDERS, 0)}..{store.max_offset(ORDERS, 0) - 1}")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
