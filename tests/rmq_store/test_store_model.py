"""Stateful model test: random puts, batches, reads, key lookups, clean reopens and simulated crashes against an
in-memory model (queue → list of messages), over several store configurations."""
from __future__ import annotations

import os
import random
import shutil
import tempfile

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from rmq_common._record import decode_record, encode_record, java_hash
from rmq_store import FlushDiskType, GetStatus, MessageStore, PutStatus, StoreConfig

TOPICS = ["TopicA", "TopicB", "%RETRY%group-1"]
TAGS = ["A", "B", None]


def make_body(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def crash(store: MessageStore) -> None:
    """Stop the store the way a killed process does: no final flush, no checkpoint, the abort file stays.

    The mapped pages are shared with the page cache, so (as after SIGKILL) every appended byte survives."""
    with store._put_lock:
        store._open = False
    store._retention.stop()
    store._flush._flush_commitlog = lambda *a, **k: None
    store._flush_logics = lambda *a, **k: None
    store._flush.stop()
    store._release_files()


class StoreMachine(RuleBasedStateMachine):
    """Subclasses set ``overrides`` (StoreConfig fields)."""

    overrides: dict = {}

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="rmq-model-")
        kwargs = dict(mapped_file_size_commitlog=64 * 1024, mapped_file_size_consume_queue=20 * 100,
                      max_hash_slot_num=64, max_index_num=256, clean_resource_interval_ms=3_600_000)
        kwargs.update(self.overrides)
        self.cfg = StoreConfig(store_path_root_dir=self.dir, **kwargs)
        self.store = MessageStore(self.cfg)
        self.store.open()
        self.model: dict[tuple[str, int], list[tuple[bytes, str, str | None]]] = {}
        self.counter = 0

    def teardown(self) -> None:
        try:
            self.store.close()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------------------------------------
    def _message(self, seed: int, size: int, tag: str | None):
        self.counter += 1
        key = f"key-{self.counter}"
        return make_body(seed, size), key, tag

    def _check_put(self, topic, qid, res, msgs):
        expect_q = len(self.model.get((topic, qid), []))
        assert res.status is PutStatus.PUT_OK
        assert res.count == len(msgs) and res.first_queue_offset == expect_q
        if self.cfg.flush_disk_type is FlushDiskType.SYNC_FLUSH:
            assert self.store.flushed_offset >= res.end_offset
        self.model.setdefault((topic, qid), []).extend(msgs)

    def _check_queue_fully(self, topic, qid):
        want = self.model[(topic, qid)]
        r = self.store.get_messages(topic, qid, 0, max_count=10_000, max_bytes=1 << 30)
        assert r.status is GetStatus.FOUND, r.status
        recs = [decode_record(x) for x in r.records()]
        assert [m.body for m in recs] == [b for b, _, _ in want]
        assert [m.queue_offset for m in recs] == list(range(len(want)))
        assert [m.keys for m in recs] == [[k] for _, k, _ in want]
        assert [m.tags for m in recs] == [t for _, _, t in want]
        assert all(m.topic == topic and m.queue_id == qid for m in recs)

    def _reopen(self, abnormal: bool) -> None:
        self.store = MessageStore(self.cfg)
        report = self.store.open()
        assert report.abnormal is abnormal
        for topic, qid in self.model:
            self._check_queue_fully(topic, qid)

    # --- rules --------------------------------------------------------------------------------------------------
    @rule(topic=st.sampled_from(TOPICS), qid=st.integers(0, 2), size=st.integers(0, 3000),
          seed=st.integers(0, 2 ** 32), tag=st.sampled_from(TAGS))
    def put(self, topic, qid, size, seed, tag):
        msg = self._message(seed, size, tag)
        res = self.store.put(topic, msg[0], qid, keys=msg[1], tags=tag)
        self._check_put(topic, qid, res, [msg])

    @rule(topic=st.sampled_from(TOPICS), qid=st.integers(0, 2),
          sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=12), seed=st.integers(0, 2 ** 32),
          tag=st.sampled_from(TAGS))
    def put_batch(self, topic, qid, sizes, seed, tag):
        msgs = [self._message(seed + i, size, tag) for i, size in enumerate(sizes)]
        props = []
        for _, key, t in msgs:
            p = f"KEYS\x01{key}"
            if t is not None:
                p = f"TAGS\x01{t}\x02" + p
            props.append(p.encode())
        res = self.store.put_batch(topic, [m[0] for m in msgs], qid, properties=props)
        self._check_put(topic, qid, res, msgs)

    @rule(topic=st.sampled_from(TOPICS), qid=st.integers(0, 2), offset=st.integers(0, 80),
          max_count=st.integers(1, 40))
    def get(self, topic, qid, offset, max_count):
        r = self.store.get_messages(topic, qid, offset, max_count=max_count)
        want = self.model.get((topic, qid))
        if want is None:
            assert r.status is GetStatus.NO_MATCHED_LOGIC_QUEUE
            return
        n = len(want)
        assert (r.min_offset, r.max_offset) == (0, n)
        if offset == n:
            assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_OVERFLOW_ONE, offset)
        elif offset > n:
            assert (r.status, r.next_begin_offset) == (GetStatus.OFFSET_OVERFLOW_BADLY, 0)
        else:
            expect = want[offset:offset + max_count]
            assert r.status is GetStatus.FOUND
            assert [bytes(b) for b in r.bodies()] == [b for b, _, _ in expect]
            assert r.queue_offsets.tolist() == list(range(offset, offset + len(expect)))
            assert r.next_begin_offset == offset + len(expect)

    @rule(topic=st.sampled_from(TOPICS), qid=st.integers(0, 2), offset=st.integers(0, 60),
          max_count=st.integers(1, 10), tag=st.sampled_from(["A", "B"]))
    def get_tagged(self, topic, qid, offset, max_count, tag):
        want = self.model.get((topic, qid))
        if want is None or offset >= len(want):
            return
        r = self.store.get_messages(topic, qid, offset, max_count=max_count, tags_codes={java_hash(tag)})
        matching = [(o, b) for o, (b, _, t) in enumerate(want) if o >= offset and t == tag][:max_count]
        if not matching:
            assert (r.status, r.next_begin_offset) == (GetStatus.NO_MATCHED_MESSAGE, len(want))
        else:
            assert r.status is GetStatus.FOUND
            assert r.queue_offsets.tolist() == [o for o, _ in matching]
            assert [bytes(b) for b in r.bodies()] == [b for _, b in matching]
            assert r.next_begin_offset == (matching[-1][0] + 1 if len(matching) == max_count else len(want))

    @precondition(lambda self: self.cfg.message_index_enable and self.model)
    @rule(pick=st.integers(0, 10 ** 6))
    def query(self, pick):
        queues = sorted(self.model)
        topic, qid = queues[pick % len(queues)]
        msgs = self.model[(topic, qid)]
        if not msgs:
            return
        body, key, _ = msgs[(pick // 7) % len(msgs)]
        got = self.store.query_message(topic, key).records
        assert [decode_record(x).body for x in got] == [body]

    @rule()
    def reopen_clean(self):
        self.store.close()
        self._reopen(abnormal=False)

    @rule(torn=st.integers(0, 200))
    def crash_and_reopen(self, torn):
        """Simulated kill; with ``torn`` > 0 a partial record (an append cut short) follows the last one."""
        store = self.store
        wrote_torn = False
        if torn and store.commitlog.files:
            mf = store.commitlog.files[-1]
            if mf.file_size - mf.wrote_position > torn + 8:
                partial = encode_record(topic="TopicA", body=b"z" * 300, phy_offset=store.max_phy_offset)[:torn]
                mf.write(mf.wrote_position, partial)
                wrote_torn = any(partial)
        crash(store)
        self._reopen(abnormal=True)
        if wrote_torn:
            assert self.store.recovery.truncated_bytes > 0

    @invariant()
    def offsets_match_model(self):
        for (topic, qid), msgs in self.model.items():
            assert self.store.max_offset(topic, qid) == len(msgs)
            assert self.store.min_offset(topic, qid) == 0
        assert set(self.store.queues()) == set(self.model)


# RMQ_MODEL_EXAMPLES raises the example count for a long exploration run (300 per class: ~2 min).
SETTINGS = settings(max_examples=int(os.environ.get("RMQ_MODEL_EXAMPLES", "30")), stateful_step_count=40,
                    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class AsyncIndexTinyMachine(StoreMachine):
    overrides = dict(flush_disk_type=FlushDiskType.ASYNC_FLUSH, message_index_enable=True)


class SyncIndexMediumMachine(StoreMachine):
    overrides = dict(flush_disk_type=FlushDiskType.SYNC_FLUSH, message_index_enable=True,
                     mapped_file_size_commitlog=1 << 20, mapped_file_size_consume_queue=20 * 3000,
                     max_hash_slot_num=4096, max_index_num=16384)


class AsyncNoIndexMediumMachine(StoreMachine):
    overrides = dict(flush_disk_type=FlushDiskType.ASYNC_FLUSH, message_index_enable=False,
                     mapped_file_size_commitlog=1 << 20, mapped_file_size_consume_queue=20 * 3000)


class SyncNoIndexTinyMachine(StoreMachine):
    overrides = dict(flush_disk_type=FlushDiskType.SYNC_FLUSH, message_index_enable=False,
                     mapped_file_size_commitlog=4096, mapped_file_size_consume_queue=20 * 10)


class SyncIndexTinyNoCrcMachine(StoreMachine):
    overrides = dict(flush_disk_type=FlushDiskType.SYNC_FLUSH, message_index_enable=True,
                     check_crc_on_recover=False, warm_mapped_file_enable=False,
                     mapped_file_size_commitlog=16 * 1024, mapped_file_size_consume_queue=20 * 7,
                     max_hash_slot_num=7, max_index_num=20)


TestStoreModelAsyncIndexTiny = AsyncIndexTinyMachine.TestCase
TestStoreModelSyncIndexMedium = SyncIndexMediumMachine.TestCase
TestStoreModelAsyncNoIndexMedium = AsyncNoIndexMediumMachine.TestCase
TestStoreModelSyncNoIndexTiny = SyncNoIndexTinyMachine.TestCase
TestStoreModelSyncIndexTinyNoCrc = SyncIndexTinyNoCrcMachine.TestCase
for _case in (TestStoreModelAsyncIndexTiny, TestStoreModelSyncIndexMedium, TestStoreModelAsyncNoIndexMedium,
              TestStoreModelSyncNoIndexTiny, TestStoreModelSyncIndexTinyNoCrc):
    _case.settings = SETTINGS
del _case      # a module-level TestCase name would be collected as one more test
