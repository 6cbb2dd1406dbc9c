"""Crash test: a child process appends with SYNC_FLUSH and reports each acknowledged put; the parent SIGKILLs it at a
random moment, reopens the store, and checks that every acknowledged message is there, byte for byte, and that no
half-written record is visible. The next cycle restarts the child on the same directory."""
from __future__ import annotations

import hashlib
import os
import random
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from rmq_common._record import decode_record
from rmq_store import GetStatus, MessageStore, StoreConfig

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOPIC = "CrashTopic"
QUEUES = 2

CONFIG = dict(mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=20 * 100,
              max_hash_slot_num=64, max_index_num=256, clean_resource_interval_ms=3_600_000)

CHILD = textwrap.dedent('''
    import hashlib, random, sys
    from rmq_store import FlushDiskType, MessageStore, PutStatus, StoreConfig

    root, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    cfg = StoreConfig(store_path_root_dir=root, flush_disk_type=FlushDiskType.SYNC_FLUSH, **CONFIG)
    out = sys.stdout
    out.write("OPENING\\n"); out.flush()
    store = MessageStore(cfg)
    store.open()
    out.write("OPEN\\n"); out.flush()
    n = 0
    for _ in range(20000):          # bounded even if nobody kills us
        qid = rng.randrange(QUEUES)
        count = 1 if rng.random() < 0.7 else rng.randint(2, 25)
        bodies = [rng.randbytes(rng.choice((0, rng.randrange(1, 200), rng.randrange(200, 3001))))
                  for _ in range(count)]
        keys = ["c%d-%d" % (seed, n + i) for i in range(count)]
        props = [("KEYS\\x01" + k).encode() for k in keys]
        res = store.put_batch(TOPIC, bodies, qid, properties=props)
        if res.status is PutStatus.PUT_OK:
            lines = "".join("ACK %d %d %s %s\\n" % (qid, res.first_queue_offset + i, hashlib.sha256(b).hexdigest(),
                                                      keys[i]) for i, b in enumerate(bodies))
            out.write(lines)
            out.flush()
        n += count
    store.close()
''').replace("CONFIG", repr(CONFIG)).replace("QUEUES", str(QUEUES)).replace("TOPIC", repr(TOPIC))


def _read_lines(proc, buf: bytearray, lines: list[str], deadline: float, until) -> None:
    """Append whole lines from the child to ``lines`` until ``until(lines)``, EOF or the deadline."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while not until(lines):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not sel.select(timeout=left):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf.extend(chunk)
            while b"\n" in buf:
                line, _, rest = bytes(buf).partition(b"\n")
                buf[:] = rest
                lines.append(line.decode())
    finally:
        sel.close()


def run_cycles(tmp_path, cycles: int, seed: int) -> dict:
    root = str(tmp_path / "store")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rng = random.Random(seed)
    acked: dict[tuple[int, int], tuple[str, str]] = {}       # (queue, offset) → (sha256 of body, key)
    stats = {"abnormal": 0, "truncated": 0, "killed_in_open": 0, "acks": 0, "skipped": 0}
    cfg = StoreConfig(store_path_root_dir=root, **CONFIG)
    for cycle in range(cycles):
        mode = rng.choices(["acks", "deadline", "opening"], weights=[6, 3, 1])[0]
        target = rng.randint(0, 60)
        delay = rng.uniform(0.0, 0.15)
        errf = open(tmp_path / f"child{cycle % 2}.err", "wb")
        proc = subprocess.Popen([sys.executable, str(script), root, str(seed * 1000 + cycle)], env=env,
                                stdout=subprocess.PIPE, stderr=errf)
        buf = bytearray()
        lines: list[str] = []
        try:
            deadline = time.monotonic() + 30
            _read_lines(proc, buf, lines, deadline, lambda ls: "OPENING" in ls)
            assert "OPENING" in lines, f"cycle {cycle}: child did not start ({(tmp_path / f'child{cycle % 2}.err')})"
            if mode == "opening":     # a random moment of open(): loading, recovery, truncation, replay
                _read_lines(proc, buf, lines, min(deadline, time.monotonic() + delay / 5), lambda ls: False)
            else:
                _read_lines(proc, buf, lines, deadline, lambda ls: "OPEN" in ls)
                assert "OPEN" in lines, f"cycle {cycle}: child could not open the store"
                if mode == "acks":
                    _read_lines(proc, buf, lines, deadline,
                                         lambda ls: sum(1 for x in ls if x.startswith("ACK")) >= target)
                else:
                    _read_lines(proc, buf, lines, min(deadline, time.monotonic() + delay), lambda ls: False)
            assert proc.poll() is None, f"cycle {cycle}: child exited early with {proc.returncode}"
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            _read_lines(proc, buf, lines, time.monotonic() + 10, lambda ls: False)   # acks still in the pipe
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            errf.close()
        assert proc.returncode == -signal.SIGKILL
        if "OPEN" not in lines:
            stats["killed_in_open"] += 1
        for line in lines:
            if line.startswith("ACK"):
                _, q, off, sha, key = line.split()
                slot = (int(q), int(off))
                assert slot not in acked, f"cycle {cycle}: queue offset {slot} acknowledged twice"
                acked[slot] = (sha, key)
                stats["acks"] += 1

        if cycle < cycles - 1 and rng.random() < 0.3:
            # Leave the crashed store to the next child: its own open() recovers abnormally (and may be killed).
            stats["skipped"] += 1
            continue
        store = MessageStore(cfg)
        report = store.open()
        try:
            if "OPEN" in lines:
                assert report.abnormal, f"cycle {cycle}: a killed store must recover abnormally"
            stats["abnormal"] += report.abnormal
            stats["truncated"] += report.truncated
            verify(store, acked, rng, cycle)
        finally:
            store.close()
    return stats


def verify(store: MessageStore, acked: dict, rng: random.Random, cycle: int) -> None:
    for q in range(QUEUES):
        n = store.max_offset(TOPIC, q)
        want_max = max((off + 1 for (qq, off) in acked if qq == q), default=0)
        assert n >= want_max, f"cycle {cycle}: queue {q} has {n} messages, {want_max} were acknowledged"
        if n == 0:
            continue
        r = store.get_messages(TOPIC, q, 0, max_count=1 << 20, max_bytes=1 << 40)
        assert r.status is GetStatus.FOUND and r.count == n, (cycle, q, r.status, r.count, n)
        for i, rec in enumerate(r.records()):
            msg = decode_record(rec, check_crc=True)          # every visible record is whole, CRC included
            assert (msg.topic, msg.queue_id, msg.queue_offset) == (TOPIC, q, i)
            assert msg.commit_log_offset == int(r.phy_offsets[i])
            want = acked.get((q, i))
            if want is not None:
                assert hashlib.sha256(msg.body).hexdigest() == want[0], f"cycle {cycle}: queue {q} offset {i} differs"
                assert msg.keys == [want[1]]
        r.release()
    # Keys of acknowledged messages are found through the index.
    sample = rng.sample(sorted(acked), min(15, len(acked)))
    for q, off in sample:
        sha, key = acked[(q, off)]
        got = store.query_message(TOPIC, key).records
        assert [hashlib.sha256(decode_record(x).body).hexdigest() for x in got] == [sha], (cycle, key)
    # The commitlog ends at a record boundary: the next put lands at max_phy_offset.
    assert store.max_phy_offset == store.recovery.max_phy_offset


def test_crash_cycles(tmp_path):
    stats = run_cycles(tmp_path, cycles=20, seed=20240601)
    assert stats["acks"] > 100
    assert stats["abnormal"] >= 10


@pytest.mark.slow
def test_crash_cycles_soak(tmp_path):
    stats = run_cycles(tmp_path, cycles=200, seed=int(os.environ.get("RMQ_CRASH_SEED", "7")))
    assert stats["acks"] > 1000
