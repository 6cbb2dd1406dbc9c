"""FlushService: one thread that makes appended bytes durable.

ASYNC_FLUSH: every ``flush_interval_ms`` it msyncs what was appended since the last round.
SYNC_FLUSH (group commit): puts register the offset they need durable and wait; the thread takes every
request that arrived, runs one msync covering the highest written offset, publishes the flushed offset and
wakes every waiter it covers. Requests arriving during an msync are served together by the next one, so
concurrent puts share fsyncs.

Either way the thread also flushes consume queues and the index every ``flush_consume_queue_interval_ms``
and then the checkpoint (whose timestamps tell abnormal recovery where to start replaying).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("rmq.store.flush")


class FlushService:
    def __init__(self, store, sync: bool, flush_interval_ms: int, logics_interval_ms: int) -> None:
        self._store = store
        self.sync = sync
        self._interval_s = flush_interval_ms / 1000
        self._logics_interval_s = logics_interval_ms / 1000
        self._cv = threading.Condition()
        self._waiters: list[tuple[int, Callable[[bool], None] | None]] = []
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.flushed_offset = store.commitlog.flushed_offset
        self.flush_count = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rmq-flush", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    # --- requests -----------------------------------------------------------------------------------
    def request(self, offset: int, callback: Callable[[bool], None]) -> None:
        """Call ``callback(True)`` from the flush thread once ``offset`` is durable (False on shutdown or
        error). For callers that must not block: an event loop hands itself a wake-up here."""
        with self._cv:
            if offset <= self.flushed_offset:
                done = True
            else:
                self._waiters.append((offset, callback))
                self._cv.notify_all()
                return
        callback(done)

    def wait(self, offset: int, timeout_s: float) -> bool:
        """Block until ``offset`` is durable; False after ``timeout_s``."""
        with self._cv:
            if offset <= self.flushed_offset:
                return True
            self._waiters.append((offset, None))
            self._cv.notify_all()
            return self._cv.wait_for(lambda: self.flushed_offset >= offset or self._stopping or self.error,
                                     timeout_s) and self.flushed_offset >= offset

    # --- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        last_logics = time.monotonic()
        while True:
            with self._cv:
                # Waiters (SYNC puts, or an explicit flush() in ASYNC mode) start a round at once.
                self._cv.wait_for(lambda: self._waiters or self._stopping, self._interval_s)
                stopping = self._stopping
            try:
                self._flush_commitlog()
                if stopping or time.monotonic() - last_logics >= self._logics_interval_s:
                    self._store._flush_logics(final=stopping)
                    last_logics = time.monotonic()
            except BaseException as exc:  # an msync error: report it to every waiter, keep the store readable
                log.exception("flush failed")
                with self._cv:
                    self.error = exc
                    waiters, self._waiters = self._waiters, []
                    self._cv.notify_all()
                for _, cb in waiters:
                    if cb is not None:
                        cb(False)
                if stopping:
                    return
                time.sleep(self._interval_s)
                continue
            if stopping:
                with self._cv:
                    waiters, self._waiters = self._waiters, []
                for offset, cb in waiters:
                    if cb is not None:
                        cb(offset <= self.flushed_offset)
                return

    def _flush_commitlog(self) -> None:
        store = self._store
        ts = store.last_store_timestamp
        flushed = store.commitlog.flush()
        self.flush_count += 1
        with self._cv:
            self.flushed_offset = flushed
            ready = [w for w in self._waiters if w[0] <= flushed]
            self._waiters = [w for w in self._waiters if w[0] > flushed]
            self._cv.notify_all()
        if ts:
            store.checkpoint.physic_msg_timestamp = ts
        for _, cb in ready:
            if cb is not None:
                cb(True)
