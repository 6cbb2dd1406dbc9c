"""MessageStore: the store engine's public facade.

    store root/
      commitlog/<20-digit offset>                  the log: every message, RocketMQ's stored layout
      consumequeue/<topic>/<queueId>/<20 digits>   per-queue units → commitlog offsets (derived)
      index/<yyyyMMddHHmmssSSS>                    key → commitlog offsets (derived)
      checkpoint                                   flush progress, where abnormal recovery starts
      abort                                        present while open: a crash leaves it behind
      lock                                         one process per store root

Consume queues and the index are written in the same call as the commitlog append (the dispatcher runs on
the bytes just written), so a read sees a message as soon as its put returns. After a crash they are
replayed from the commitlog; they can always be rebuilt from it.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from typing import Callable, Iterable

import numpy as np
import orjson

from rmq_common._record import decode_record, host_bytes, record_keys
from rmq_common.properties import decode_properties, encode_properties
from rmq_common.topic import validate_topic
from rmq_store._commitlog import (
    Dispatcher, append_batch, first_store_timestamp, gather, record_size_at, record_view,
    store_timestamp_at, validate_batch,
)
from rmq_store._consumequeue import ConsumeQueue
from rmq_store._mapped import CorruptFileError, StoreError
from rmq_store.checkpoint import StoreCheckpoint
from rmq_store.commitlog import MappedFileQueue, remove_interrupted_creations
from rmq_store.config import FlushDiskType, StoreConfig
from rmq_store.flush import FlushService
from rmq_store.index_service import IndexService
from rmq_store.results import GetResult, PutResult, QueryResult, RecoveryReport
from rmq_store.retention import RetentionReport, RetentionService
from rmq_store.status import GetStatus, PutStatus

log = logging.getLogger("rmq.store")

MAX_SCAN_UNITS = 16000 // 20   # units a filtered read may pass over in one call (RocketMQ: 16000 bytes of units)
_RC_NAMES = {0: None, 2: None, -1: "bad magic code", -2: "inconsistent record sizes", -3: "body CRC mismatch",
             -4: "physical offset field does not match the position", -5: "record cut off"}


class StoreClosedError(StoreError):
    """The store is not open."""


class StoreLockedError(StoreError):
    """Another process has this store root open."""


class ReplicationError(StoreError):
    """Replicated bytes that cannot be appended here (wrong offset, a chunk across a file end, bytes that
    are no records), or an offset a master cannot serve. Nothing is kept of the refused bytes."""


class ReplicaStoreError(StoreError):
    """A put on a replica's store: a slave's log holds only its master's bytes."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class MessageStore:
    """A durable log of RocketMQ stored records with per-queue indexes and key lookup.

    Thread model: puts are serialised by one lock (as RocketMQ's putMessageLock); reads may run from any
    thread at any time; a flush thread and a retention thread run in the background while open.
    """

    def __init__(self, config: StoreConfig | None = None, *, clock_ms: Callable[[], int] = _now_ms,
                 **overrides) -> None:
        config = config or StoreConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config = config
        self._clock_ms = clock_ms
        root = config.store_path_root_dir
        self.root = root
        self.commitlog = MappedFileQueue(os.path.join(root, "commitlog"), config.mapped_file_size_commitlog,
                                         warm=config.warm_mapped_file_enable)
        self.index = IndexService(os.path.join(root, "index"), config.max_hash_slot_num, config.max_index_num)
        self.checkpoint: StoreCheckpoint | None = None
        self._queues: dict[tuple[str, int], ConsumeQueue] = {}
        self._queues_lock = threading.Lock()
        self._put_lock = threading.Lock()
        self._topic_cache: dict[str, bytes] = {}
        self._host_cache: dict[tuple[str, int], bytes] = {}
        self._store_host = host_bytes(config.store_host)
        self._dispatcher: Dispatcher | None = None
        self._flush: FlushService | None = None
        self._retention: RetentionService | None = None
        self._lock_fd = -1
        self._open = False
        self._used = False
        self._known_queues: set[tuple[str, int]] = set()
        self._replaying = False
        self.last_store_timestamp = 0
        self.recovery: RecoveryReport | None = None
        # Called after each put with (topic, queue_id, new max offset): long polling hooks in here.
        self.arrival_listeners: list[Callable[[str, int, int], None]] = []
        # True for a slave's store: puts are refused, the log grows only by append_replicated.
        self.replica = False
        # Replication: commitlog offset up to which records are dispatched; from here to the max offset
        # lies the beginning of a record whose end has not arrived yet.
        self._replica_dispatched = 0

    # ------------------------------------------------------------------------------------------------
    # Lifecycle
    # ------------------------------------------------------------------------------------------------
    def __enter__(self) -> "MessageStore":
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> RecoveryReport:
        """Load files, recover (normally or after a crash), start the flush and retention threads."""
        if self._open:
            raise StoreError("store is already open")
        if self._used:
            raise StoreError("a MessageStore opens once; create a new one to reopen the store")
        self._used = True
        cfg = self.config
        os.makedirs(self.root, exist_ok=True)
        self._take_lock()
        try:
            abnormal = os.path.exists(os.path.join(self.root, "abort"))
            self.checkpoint = StoreCheckpoint(os.path.join(self.root, "checkpoint"))
            self.commitlog.load()
            self.index.load()
            self._load_queues()
            self._load_manifest()
            self._dispatcher = Dispatcher(self._queue_for, self.index.roll,
                                          self.index.files[-1] if self.index.files else None,
                                          cfg.message_index_enable, cfg.delay_levels_ms)
            if self._dispatcher.index is None and cfg.message_index_enable:
                self._dispatcher.index = self.index.roll()
            self.recovery = self._recover(abnormal)
            # Recovery truncated any torn record, so every byte up to the max offset is dispatched.
            self._replica_dispatched = self.commitlog.max_offset
            with open(os.path.join(self.root, "abort"), "wb"):
                pass
            # The file appends go to exists and is pre-faulted before the first put, the next one is
            # being prepared: no put pays for file creation.
            self.commitlog.writable()
            self.commitlog.prepare_next()
            self._flush = FlushService(self, cfg.flush_disk_type is FlushDiskType.SYNC_FLUSH,
                                       cfg.flush_interval_ms if cfg.flush_disk_type is FlushDiskType.ASYNC_FLUSH
                                       else 10, cfg.flush_consume_queue_interval_ms)
            self._flush.start()
            self._retention = RetentionService(self)
            self._retention.start()
            self._open = True
        except BaseException:
            self._release_files()
            raise
        return self.recovery

    def wait_ready(self) -> None:
        """Wait until the background creation of the next commitlog file (started at open and at every
        roll) has finished: for benchmarks and tests that must not time it."""
        t = self.commitlog._prep_thread
        if t is not None:
            t.join()

    def close(self) -> None:
        """Flush everything, write the checkpoint, remove the abort marker and unmap files.

        Views handed out by reads stay valid until released: files unmap when their last view goes."""
        if not self._open:
            return
        with self._put_lock:
            self._open = False
        if self._retention is not None:
            self._retention.stop()
        if self._flush is not None:
            self._flush.stop()        # its last round flushes the commitlog, queues, index, checkpoint
        self._release_files()
        try:
            os.unlink(os.path.join(self.root, "abort"))
        except FileNotFoundError:
            pass

    def _release_files(self) -> None:
        self.commitlog.close()
        for cq in self._queues.values():
            cq.close()
        self.index.close()
        if self.checkpoint is not None:
            self.checkpoint.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _take_lock(self) -> None:
        fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLockedError(f"{self.root} is open in another process") from None
        self._lock_fd = fd

    def _flush_logics(self, final: bool = False) -> None:
        """Flush consume queues, then the checkpoint (called by the flush thread).

        The index is flushed only when a file fills (IndexService) and at shutdown (``final``), as RocketMQ
        does: its slots are written at random, so a periodic msync would write-protect nearly every slot
        page and make the next insert into each one take a page fault. The checkpoint's index timestamp
        records what is durable, so abnormal recovery replays whatever the index may have lost."""
        ts = self._dispatcher.last_store_ts if self._dispatcher is not None else 0
        for cq in list(self._queues.values()):
            cq.flush()
        if self.checkpoint is None:
            return
        if ts:
            self.checkpoint.logics_msg_timestamp = ts
        if final:
            self.index.flush()
            if ts:
                self.checkpoint.index_msg_timestamp = ts
        elif self.index.durable_timestamp:
            self.checkpoint.index_msg_timestamp = max(self.checkpoint.index_msg_timestamp,
                                                      self.index.durable_timestamp)
        self.checkpoint.flush()

    # ------------------------------------------------------------------------------------------------
    # Consume queues
    # ------------------------------------------------------------------------------------------------
    def _cq_root(self) -> str:
        return os.path.join(self.root, "consumequeue")

    def _load_queues(self) -> None:
        root = self._cq_root()
        if not os.path.isdir(root):
            return
        for topic in sorted(os.listdir(root)):
            tdir = os.path.join(root, topic)
            if not os.path.isdir(tdir):
                continue
            for qid in sorted(os.listdir(tdir)):
                if not qid.isdigit():
                    continue
                qdir = os.path.join(tdir, qid)
                if os.path.isdir(qdir):
                    remove_interrupted_creations(
                        qdir, sorted(n for n in os.listdir(qdir) if n.isdigit() and len(n) == 20))
                cq = ConsumeQueue(root, topic, int(qid), self.config.mapped_file_size_consume_queue // 20)
                cq.load()
                self._queues[(topic, int(qid))] = cq

    # The queue manifest (``queues.json`` in the store root) lists every queue that should exist. It is
    # written when a queue is created or a topic deleted (rare events), so a replay of the commitlog can tell a
    # queue whose files were lost (listed: rebuild it) from a deleted topic's old records (unlisted: skip).
    def _manifest_path(self) -> str:
        return os.path.join(self.root, "queues.json")

    def _load_manifest(self) -> None:
        path = self._manifest_path()
        try:
            with open(path, "rb") as f:
                self._known_queues = {(t, int(q)) for t, q in orjson.loads(f.read())["queues"]}
        except FileNotFoundError:
            self._known_queues = set(self._queues)      # a store from before the manifest, or a new one
            self._save_manifest()
        except (ValueError, KeyError, TypeError) as exc:
            log.error("unreadable %s (%s): taking the queues on disk as the complete set", path, exc)
            self._known_queues = set(self._queues)
            self._save_manifest()

    def _save_manifest(self) -> None:
        path = self._manifest_path()
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps({"queues": sorted(self._known_queues)}))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _queue_for(self, topic: str, queue_id: int) -> ConsumeQueue | None:
        cq = self._queues.get((topic, queue_id))
        if cq is None:
            with self._queues_lock:
                cq = self._queues.get((topic, queue_id))
                if cq is None:
                    key = (topic, queue_id)
                    if self._replaying and key not in self._known_queues:
                        return None     # records of a deleted topic: replay must not bring it back
                    cq = ConsumeQueue(self._cq_root(), topic, queue_id,
                                      self.config.mapped_file_size_consume_queue // 20)
                    self._queues[key] = cq
                    if key not in self._known_queues:
                        self._known_queues.add(key)
                        self._save_manifest()
        return cq

    def queues(self) -> list[tuple[str, int]]:
        """Every (topic, queue id) that has a consume queue."""
        return sorted(self._queues)

    def topics(self) -> list[str]:
        return sorted({t for t, _ in self._queues})

    # ------------------------------------------------------------------------------------------------
    # Recovery
    # ------------------------------------------------------------------------------------------------
    def _recover(self, abnormal: bool) -> RecoveryReport:
        cfg = self.config
        files = self.commitlog.files
        if not files:
            report = RecoveryReport(abnormal=abnormal, scan_from_offset=0, max_phy_offset=0)
            for cq in self._queues.values():
                report.consume_queue_units_dropped += cq.truncate_phy(0)
            return report
        if abnormal:
            start = 0
            floor = self.checkpoint.min_timestamp(cfg.message_index_enable)
            for i in range(len(files) - 1, -1, -1):
                ts = first_store_timestamp(files[i])
                if ts and ts <= floor:
                    start = i
                    break
        else:
            start = max(0, len(files) - 3)
        for mf in files[:start]:
            mf.wrote_position = mf.flushed_position = mf.file_size
        end, rc, _ = self.commitlog.scan(start, cfg.check_crc_on_recover)
        report = RecoveryReport(abnormal=abnormal, scan_from_offset=files[start].file_from_offset,
                                max_phy_offset=end)
        erased, deleted = self.commitlog.truncate(end)
        report.files_deleted = deleted
        if erased:
            report.truncated_from = end
            report.truncated_bytes = erased
            report.damage = _RC_NAMES.get(rc) or "torn tail"
            log.warning("recovery truncated %d bytes from commitlog offset %d (%s); deleted %s",
                        erased, end, report.damage, deleted or "no files")
        elif deleted:
            # Only never-written files (the next file, prepared before a crash): no data was lost.
            log.info("recovery removed empty commitlog files past offset %d: %s", end, deleted)
        for mf in self.commitlog.files:
            mf.flushed_position = mf.wrote_position
        for cq in self._queues.values():
            report.consume_queue_units_dropped += cq.truncate_phy(end)
        # Keys of records past the valid end may be in the index: never skip re-indexing what follows.
        self._dispatcher.index_skip_below = min(self.index.end_phy_offset, end - 1)
        if not abnormal:
            # A clean shutdown flushed every queue: replay only records past the furthest dispatched one
            # (normally none), so e.g. a deleted topic's queues are not recreated from old records.
            start_offset = max([cq.max_phy_end for cq in self._queues.values()] + [self._indexed_end(), 0])
            start_offset = min(start_offset, end)
        else:
            start_offset = files[start].file_from_offset
        if (not abnormal and cfg.message_index_enable and self.index.end_phy_offset < 0
                and self.commitlog.min_offset < end):
            # The index is gone (deleted, or dropped as damaged at load) while the log has records:
            # re-index the whole log; the queues were flushed by the clean close and stay as they are.
            log.warning("the index is empty but the commitlog is not: re-indexing from offset %d",
                        self.commitlog.min_offset)
            self._dispatcher.queues_enabled = False
            try:
                self._redispatch_from(self.commitlog.min_offset, strict=False)
            finally:
                self._dispatcher.queues_enabled = True
        self._replaying = True
        try:
            missing = sorted(k for k in self._known_queues if k not in self._queues or not self._queues[k].files)
            if missing:
                # Listed queues without files lost them: rebuild them from the whole log (queues that
                # exist only check their units; unlisted topics are skipped).
                log.warning("consume queues without files: %s; rebuilding them from the commitlog", missing)
                report.full_rebuild = True
                self._redispatch_from(self.commitlog.min_offset, strict=False)
                gone = [k for k in missing if k not in self._queues or not self._queues[k].files]
                if gone:    # no record of theirs is left in the log (retention): nothing to rebuild
                    self._known_queues.difference_update(gone)
                    self._save_manifest()
            try:
                report.records_redispatched = self._redispatch_from(start_offset, strict=True)
            except CorruptFileError as exc:
                log.warning("consume queues disagree with the commitlog (%s): rebuilding them from its start", exc)
                report.full_rebuild = True
                report.records_redispatched = self.rebuild_consume_queues(_recovering=True)
        finally:
            self._replaying = False
        self.last_store_timestamp = self._dispatcher.last_store_ts
        return report

    def _indexed_end(self) -> int:
        """Commitlog offset just past the newest indexed record (0 if none or unreadable)."""
        phy = self.index.end_phy_offset
        mf = self.commitlog.find(phy) if phy >= 0 else None
        if mf is None:
            return 0
        size = record_size_at(mf, phy - mf.file_from_offset)
        return phy + size if size > 0 else 0

    def _redispatch_from(self, offset: int, strict: bool) -> int:
        """Dispatch every record from commitlog ``offset`` (a record boundary) to the end."""
        count = 0
        self._dispatcher.strict = strict
        try:
            for mf in self.commitlog.files:
                end = mf.file_from_offset + mf.wrote_position
                if end <= offset:
                    continue
                rel = max(0, offset - mf.file_from_offset)
                count += self._dispatcher.dispatch(mf, rel, mf.wrote_position)
        finally:
            self._dispatcher.strict = False
        return count

    def rebuild_consume_queues(self, _recovering: bool = False) -> int:
        """Delete every consume queue and the index and rebuild them from the whole commitlog."""
        with self._put_lock:
            if not _recovering and not self._open:
                raise StoreClosedError("store is closed")
            with self._queues_lock:
                for cq in self._queues.values():
                    cq.destroy()
                self._queues.clear()
            self._dispatcher.forget_queues()
            if self.config.message_index_enable:
                self.index.destroy()
                self._dispatcher.index = self.index.roll()
            self._dispatcher.index_skip_below = -1
            replaying, self._replaying = self._replaying, True
            try:
                return self._redispatch_from(self.commitlog.min_offset, strict=False)
            finally:
                self._replaying = replaying

    # ------------------------------------------------------------------------------------------------
    # Writing
    # ------------------------------------------------------------------------------------------------
    def _topic_bytes(self, topic: str) -> bytes:
        b = self._topic_cache.get(topic)
        if b is None:
            validate_topic(topic)
            b = topic.encode("utf-8")
            if len(self._topic_cache) < 100_000:
                self._topic_cache[topic] = b
        return b

    def _host(self, host: tuple[str, int] | None) -> bytes:
        if host is None:
            return self._store_host
        b = self._host_cache.get(host)
        if b is None:
            b = host_bytes(host)
            if len(self._host_cache) < 10_000:
                self._host_cache[host] = b
        return b

    def put(self, topic: str, body: bytes, queue_id: int = 0, *, properties: bytes | dict | None = None,
            tags: str | None = None, keys: str | Iterable[str] | None = None, **kwargs) -> PutResult:
        """Store one message. ``properties`` is a RocketMQ property string (bytes) or a dict;
        ``tags``/``keys`` are conveniences that add TAGS/KEYS to it."""
        if isinstance(properties, dict) or tags is not None or keys is not None:
            props = (decode_properties(properties) if isinstance(properties, (bytes, bytearray, memoryview))
                     else dict(properties or {}))
            if tags is not None:
                props["TAGS"] = tags
            if keys is not None:
                props["KEYS"] = keys if isinstance(keys, str) else " ".join(keys)
            properties = encode_properties(props)
        if not isinstance(body, (bytes, bytearray, memoryview)):
            # bytes(5) would silently store five zero bytes
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        return self.put_batch(topic, [bytes(body)], queue_id, properties=properties, **kwargs)

    def put_batch(self, topic: str, bodies: list[bytes], queue_id: int = 0, *,
                  properties: bytes | list[bytes] | None = None, flag: int = 0, sys_flag: int = 0,
                  born_timestamp: int | None = None, born_host: tuple[str, int] | None = None,
                  reconsume_times: int = 0, prepared_transaction_offset: int = 0,
                  wait_flush: bool = True) -> PutResult:
        """Store ``bodies`` as consecutive messages of one queue, in one call.

        ``properties``: one property string shared by all, or one per message. Every message is checked
        before anything is written: a bad one raises MessageTooLargeError/TypeError/ValueError and
        stores nothing; a full disk raises DiskFullError and stores nothing. With SYNC_FLUSH the call
        returns once the bytes are on disk (status FLUSH_DISK_TIMEOUT after sync_flush_timeout_ms).
        """
        if not self._open:
            raise StoreClosedError("store is closed")
        if self.replica:
            raise ReplicaStoreError("this store is a replica: its log takes only its master's bytes")
        if not isinstance(bodies, list):
            bodies = list(bodies)
        n = len(bodies)
        if n == 0:
            return PutResult(PutStatus.PUT_OK, count=0)
        if queue_id < 0:
            raise ValueError("queue_id must be >= 0")
        t = self._topic_bytes(topic)
        bh = self._host(born_host)
        cfg = self.config
        with self._put_lock:
            if not self._open:
                raise StoreClosedError("store is closed")
            total, largest = validate_batch(t, bodies, properties, cfg.max_message_size,
                                   cfg.mapped_file_size_commitlog - 8,
                                   len(bh) - 8 + len(self._store_host) - 8)
            cq = self._queue_for(topic, queue_id)
            self.commitlog.ensure_capacity(total, largest)
            cq.reserve(n)
            store_ts = self._clock_ms()
            born_ts = store_ts if born_timestamp is None else born_timestamp
            phy = np.empty(n, np.int64)
            first_queue_offset = cq.max_offset
            start = 0
            dispatcher = self._dispatcher
            while start < n:
                mf = self.commitlog.writable()
                written, full = append_batch(mf, t, queue_id, bodies, properties, flag, sys_flag, born_ts, bh,
                                             store_ts, self._store_host, reconsume_times,
                                             prepared_transaction_offset, cq.max_offset, start, phy, dispatcher)
                start += written
            self.last_store_timestamp = store_ts
            end = self.commitlog.max_offset
            new_max = cq.max_offset
        result = PutResult(PutStatus.PUT_OK, int(phy[0]), first_queue_offset, n, total, store_ts, phy, end)
        for listener in self.arrival_listeners:
            listener(topic, queue_id, new_max)
        if cfg.flush_disk_type is FlushDiskType.SYNC_FLUSH and wait_flush:
            if not self._flush.wait(end, cfg.sync_flush_timeout_ms / 1000):
                result.status = PutStatus.FLUSH_DISK_TIMEOUT
        return result

    # ------------------------------------------------------------------------------------------------
    # Replication (PROTOCOL.md §7): the master reads raw commitlog chunks, the slave appends them
    # ------------------------------------------------------------------------------------------------
    def replication_start_offset(self) -> int:
        """Where a slave that reports offset 0 (an empty store) is fed from: the start of the file holding
        the max offset, i.e. the master's last file (HAConnection: masterOffset − masterOffset % fileSize)."""
        end = self.commitlog.max_offset
        return end - end % self.commitlog.file_size

    def read_replication_chunk(self, offset: int, max_bytes: int) -> memoryview | None:
        """Raw commitlog bytes from ``offset``: at most ``max_bytes``, never past the end of the file that
        holds ``offset`` (RocketMQ's chunks never cross files), not aligned to records. A read-only view of
        the mapping, no copy: it keeps the file mapped until released, and written bytes never change while
        the store is open. None when nothing is written at ``offset`` yet.

        Raises ReplicationError for an offset below the commitlog's minimum (retention removed it)."""
        self._check_open()
        cl = self.commitlog
        if offset >= cl.max_offset:
            return None
        if offset < cl.min_offset:
            raise ReplicationError(f"offset {offset} is below the commitlog's minimum {cl.min_offset}")
        mf = cl.find(offset)
        if mf is None or mf.closed:       # retention deleted the file since min_offset was read
            raise ReplicationError(f"offset {offset} is no longer in the commitlog")
        rel = offset - mf.file_from_offset
        end = min(mf.wrote_position, rel + max_bytes)
        assert end > rel, (offset, mf.wrote_position)
        return memoryview(mf).toreadonly()[rel:end]

    def append_replicated(self, offset: int, data) -> int:
        """Append a master's raw commitlog bytes at ``offset``, which must be this log's max offset (or,
        for an empty log, a file boundary where the log then starts). ``data`` must not cross a file's end.
        Every record completed by these bytes is dispatched to the consume queues and the index with the
        dispatcher a put uses, and the arrival listeners are told about the queues that grew; a record
        still cut off waits for the next chunk. Returns the new max offset.

        Raises ReplicationError and keeps nothing of ``data`` if the offset is wrong, the chunk crosses a
        file end, or the bytes are not the records they must be (the caller should drop the link: the
        master resends from the offset reported next)."""
        n = len(data)
        cl = self.commitlog
        touched: dict = {}
        with self._put_lock:
            if not self._open:
                raise StoreClosedError("store is closed")
            if cl.max_offset == 0 and offset != 0:
                # An empty replica starts at the master's last file (its first file is named by it).
                if offset % cl.file_size:
                    raise ReplicationError(f"an empty log can start only at a file boundary, not at {offset}")
                cl.restart_at(offset)
                self._replica_dispatched = offset
            if offset != cl.max_offset:
                raise ReplicationError(f"replicated bytes for offset {offset}, but the log ends at {cl.max_offset}")
            if n == 0:
                return offset
            mf = cl.writable()
            pos = mf.wrote_position
            assert mf.file_from_offset + pos == offset, (mf.path, pos, offset)
            if pos + n > mf.file_size:
                raise ReplicationError(f"{n} replicated bytes at {offset} cross the end of file {mf.path}")
            mf.write(pos, data)
            mf.wrote_position = pos + n
            dispatcher = self._dispatcher
            dispatcher.touched = touched
            try:
                self._dispatch_replicated()
            except ReplicationError:
                # Keep the log a prefix of well-formed records: drop what could not be dispatched.
                cl.truncate(self._replica_dispatched)
                for cq in self._queues.values():
                    cq.truncate_phy(self._replica_dispatched)
                raise
            finally:
                dispatcher.touched = None
            self.last_store_timestamp = dispatcher.last_store_ts
            end = cl.max_offset
        for cq in touched:
            for listener in self.arrival_listeners:
                listener(cq.topic, cq.queue_id, cq.max_offset)
        return end

    def _dispatch_replicated(self) -> None:
        """Dispatch every complete record between the dispatched offset and the max offset."""
        cl = self.commitlog
        d = self._replica_dispatched
        while True:
            mf = cl.find(d)
            if mf is None:
                break
            count, pos, rc = self._dispatcher.dispatch_available(mf, d - mf.file_from_offset, mf.wrote_position)
            d = mf.file_from_offset + pos
            self._replica_dispatched = d
            if rc < 0:
                raise ReplicationError(f"replicated bytes at commitlog offset {d} are not a record "
                                       f"({_RC_NAMES.get(rc, rc)})")
            if pos < mf.file_size:
                break       # the rest of a record (or of the file) has not arrived yet
        assert self._replica_dispatched <= cl.max_offset or cl.files[-1].wrote_position < cl.file_size

    @property
    def replica_dispatched_offset(self) -> int:
        """Replication: commitlog offset up to which records are dispatched (readable)."""
        return self._replica_dispatched

    def flush(self) -> int:
        """Make everything appended so far durable now (msync); returns the flushed commitlog offset."""
        if not self._open:
            raise StoreClosedError("store is closed")
        end = self.commitlog.max_offset
        if not self._flush.wait(end, max(1.0, self.config.sync_flush_timeout_ms / 1000)):
            raise StoreError(f"flush to {end} did not complete: {self._flush.error or 'timeout'}")
        return self._flush.flushed_offset

    def request_flush(self, offset: int, callback: Callable[[bool], None]) -> None:
        """Non-blocking group commit: ``callback(ok)`` runs on the flush thread once ``offset`` is durable."""
        self._flush.request(offset, callback)

    def _check_open(self) -> None:
        # Reads dereference the mapped files: after close() they are unmapped, so a read would crash the process.
        if not self._open:
            raise StoreClosedError("store is closed")

    @property
    def flushed_offset(self) -> int:
        return self._flush.flushed_offset if self._flush else self.commitlog.flushed_offset

    # ------------------------------------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------------------------------------
    def get_messages(self, topic: str, queue_id: int, offset: int, max_count: int = 32,
                     max_bytes: int = 4 * 1024 * 1024, tags_codes: set[int] | None = None) -> GetResult:
        """Up to ``max_count`` records of a queue from ``offset``, as views of the mapped commitlog.

        ``tags_codes``: only records whose consume-queue tags code is in the set (tag hash filtering)."""
        self._check_open()
        cq = self._queues.get((topic, queue_id))
        if cq is None:
            return GetResult(GetStatus.NO_MATCHED_LOGIC_QUEUE, 0, 0, 0)
        min_o, max_o = cq.min_offset, cq.max_offset
        if max_o == 0:
            return GetResult(GetStatus.NO_MESSAGE_IN_QUEUE, 0, min_o, max_o)
        if offset < min_o:
            return GetResult(GetStatus.OFFSET_TOO_SMALL, min_o, min_o, max_o)
        if offset == max_o:
            return GetResult(GetStatus.OFFSET_OVERFLOW_ONE, offset, min_o, max_o)
        if offset > max_o:
            return GetResult(GetStatus.OFFSET_OVERFLOW_BADLY, min_o if min_o == 0 else max_o, min_o, max_o)
        max_count = max(1, min(max_count, 1 << 20))
        files = self.commitlog.files
        phy = np.empty(max_count, np.int64)
        sizes = np.empty(max_count, np.int32)
        qoffs = np.empty(max_count, np.int64)
        runs = np.empty((max_count, 4), np.int64)
        found, scanned, total, filtered, missing, views = gather(
            cq, files, self.commitlog.file_size, self.commitlog.min_offset, self.commitlog.max_offset,
            offset, max_count, max_bytes, max(MAX_SCAN_UNITS, max_count), tags_codes, phy, sizes, qoffs, runs)
        result = GetResult(GetStatus.FOUND, offset + scanned, min_o, max_o, phy[:found], sizes[:found],
                           qoffs[:found], total_bytes=total, filtered=filtered)
        if found:
            result.buffers = views
            result.buffer_counts = runs[:len(views), 3].tolist()
        elif filtered:
            result.status = GetStatus.NO_MATCHED_MESSAGE
        elif missing:
            result.status = GetStatus.MESSAGE_WAS_REMOVING
        else:
            result.status = GetStatus.OFFSET_FOUND_NULL
        return result

    def read_record(self, phy_offset: int) -> memoryview | None:
        """The stored record at a commitlog offset, as a view (None if no valid record starts there)."""
        self._check_open()
        if phy_offset < self.commitlog.min_offset:
            return None
        return record_view(self.commitlog.files, self.commitlog.file_size, phy_offset, self.commitlog.max_offset)

    def read_message(self, phy_offset: int):
        """The record at a commitlog offset decoded into a MessageExt (None if absent)."""
        rec = self.read_record(phy_offset)
        return None if rec is None else decode_record(rec)

    def query_message(self, topic: str, key: str, max_num: int = 32, begin_timestamp: int = 0,
                      end_timestamp: int = (1 << 63) - 1, *, unique: bool = False) -> QueryResult:
        """Records of ``topic`` whose KEYS contain ``key`` or whose UNIQ_KEY is ``key`` (only the latter with
        ``unique``), stored within [begin_timestamp, end_timestamp] (ms), newest first. Hash collisions are
        filtered out."""
        self._check_open()
        if not self.config.message_index_enable:
            raise StoreError("the message index is disabled (message_index_enable=False)")
        out = []
        seen = set()
        for phy in self.index.lookup(topic, key, max_num * 4 + 8, begin_timestamp, end_timestamp):
            if phy in seen:
                continue
            seen.add(phy)
            rec = self.read_record(phy)
            if rec is None:
                continue
            rtopic, keys, uniq = record_keys(rec)
            if rtopic == topic and (uniq == key or (not unique and keys is not None and key in keys.split(" "))):
                out.append(rec)
                if len(out) >= max_num:
                    break
        last = self.index.files[-1] if self.index.files else None
        return QueryResult(out, last.end_timestamp if last else 0, last.end_phy_offset if last else 0)

    # ------------------------------------------------------------------------------------------------
    # Offsets and times
    # ------------------------------------------------------------------------------------------------
    def min_offset(self, topic: str, queue_id: int) -> int:
        cq = self._queues.get((topic, queue_id))
        return cq.min_offset if cq else 0

    def max_offset(self, topic: str, queue_id: int) -> int:
        cq = self._queues.get((topic, queue_id))
        return cq.max_offset if cq else 0

    @property
    def min_phy_offset(self) -> int:
        return self.commitlog.min_offset

    @property
    def max_phy_offset(self) -> int:
        return self.commitlog.max_offset

    def _unit_store_time(self, cq: ConsumeQueue, offset: int) -> int:
        unit = cq.unit(offset)
        if unit is None or unit[1] == 0x7FFFFFFF:
            return -1
        mf = self.commitlog.find(unit[0])
        return -1 if mf is None else store_timestamp_at(mf, unit[0] - mf.file_from_offset)

    def store_time(self, topic: str, queue_id: int, offset: int) -> int:
        """Store time (ms) of the message at a queue offset (-1 if it is gone)."""
        self._check_open()
        cq = self._queues.get((topic, queue_id))
        return -1 if cq is None else self._unit_store_time(cq, offset)

    def earliest_message_time(self, topic: str | None = None, queue_id: int = 0) -> int:
        """Store time of the oldest message of a queue, or of the whole commitlog (-1 if none)."""
        self._check_open()
        if topic is None:
            files = self.commitlog.files
            ts = first_store_timestamp(files[0]) if files else 0
            return ts or -1
        return self.store_time(topic, queue_id, self.min_offset(topic, queue_id))

    def offset_by_time(self, topic: str, queue_id: int, timestamp_ms: int) -> int:
        """Queue offset of the message stored closest to ``timestamp_ms`` (RocketMQ's
        getOffsetInQueueByTime: an exact hit, else the nearer of the neighbours)."""
        self._check_open()
        cq = self._queues.get((topic, queue_id))
        if cq is None or cq.max_offset == 0:
            return 0
        lo, hi = cq.min_offset, cq.max_offset - 1
        while lo <= hi and self._unit_store_time(cq, lo) < 0:
            lo += 1     # padding or deleted records at the head
        if lo > hi:
            return cq.max_offset
        left, right = lo - 1, hi + 1
        while lo <= hi:
            mid = (lo + hi) // 2
            t = self._unit_store_time(cq, mid)
            if t < timestamp_ms:
                left = mid
                lo = mid + 1
            else:
                right = mid
                hi = mid - 1
        if right <= cq.max_offset - 1 and self._unit_store_time(cq, right) == timestamp_ms:
            return right
        if left < cq.min_offset:
            return right
        if right > cq.max_offset - 1:
            return left
        lt, rt = self._unit_store_time(cq, left), self._unit_store_time(cq, right)
        return right if abs(timestamp_ms - lt) > abs(timestamp_ms - rt) else left

    # ------------------------------------------------------------------------------------------------
    # Topics and retention
    # ------------------------------------------------------------------------------------------------
    def delete_topic(self, topic: str) -> int:
        """Delete a topic's consume queues (its records stay in the commitlog until retention)."""
        with self._put_lock, self._queues_lock:
            doomed = [k for k in self._queues if k[0] == topic]
            for k in doomed:
                self._queues.pop(k).destroy()
            self._dispatcher.forget_queues()
            self._known_queues = {k for k in self._known_queues if k[0] != topic}
            self._save_manifest()
        tdir = os.path.join(self._cq_root(), topic)
        if os.path.isdir(tdir):
            for qdir in os.listdir(tdir):
                try:
                    os.rmdir(os.path.join(tdir, qdir))
                except OSError:
                    pass
            try:
                os.rmdir(tdir)
            except OSError:
                pass
        return len(doomed)

    def clean_expired_files(self, now_ms: int | None = None, force: bool = False) -> RetentionReport:
        """Run one retention pass now (``force``: ignore the delete_when hour, as an operator would)."""
        if not self._open:
            raise StoreClosedError("store is closed")
        return self._retention.run_once(now_ms, force)

    def stats(self) -> dict:
        """Figures for monitoring and GET_BROKER_RUNTIME_INFO-style reports."""
        return {
            "commitlogMinOffset": self.commitlog.min_offset,
            "commitlogMaxOffset": self.commitlog.max_offset,
            "commitlogFlushedOffset": self.flushed_offset,
            "commitlogFiles": len(self.commitlog.files),
            "consumeQueues": len(self._queues),
            "indexFiles": len(self.index.files),
            "flushCount": self._flush.flush_count if self._flush else 0,
        }
