"""RetentionService: deletes expired commitlog files, then the consume-queue and index files below the
commitlog's new minimum offset (RocketMQ's CleanCommitLogService + CleanConsumeQueueService).

A commitlog file is expired when its last modification is older than ``file_reserved_time_hours``. Expired
files are deleted at the ``delete_when`` hours, at any hour once disk use passes
``disk_max_used_space_ratio``, and regardless of age (oldest first) once it passes
``disk_space_clean_forcibly_ratio``. Only a prefix of the log is ever deleted, never the newest file, so
the commitlog stays contiguous; readers holding views of a deleted file keep them until released.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field

log = logging.getLogger("rmq.store.retention")


@dataclass
class RetentionReport:
    commitlog_files_deleted: list = field(default_factory=list)
    consume_queue_files_deleted: int = 0
    index_files_deleted: int = 0
    disk_used_ratio: float = 0.0
    reason: str = ""


def disk_used_ratio(path: str) -> float:
    st = os.statvfs(path)
    total = st.f_blocks * st.f_frsize
    if total == 0:
        return 0.0
    return 1.0 - (st.f_bavail * st.f_frsize) / total


class RetentionService:
    def __init__(self, store) -> None:
        self._store = store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rmq-retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        interval = self._store.config.clean_resource_interval_ms / 1000
        while not self._stop.wait(interval):
            try:
                self.run_once()
            except Exception:
                log.exception("retention pass failed")

    def run_once(self, now_ms: int | None = None, force: bool = False) -> RetentionReport:
        store = self._store
        cfg = store.config
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            ratio = disk_used_ratio(store.root)
            report = RetentionReport(disk_used_ratio=ratio)
            hour = time.localtime(now_ms / 1000).tm_hour
            time_up = hour in cfg.delete_hours
            space_full = ratio * 100 > cfg.disk_max_used_space_ratio
            forcibly = ratio * 100 > cfg.disk_space_clean_forcibly_ratio
            if not (time_up or space_full or force):
                return report
            report.reason = "forced" if force else ("disk full" if space_full else "delete hour")
            reserved_ms = cfg.file_reserved_time_hours * 3600 * 1000
            queue = store.commitlog
            doomed = []
            for mf in queue.files[:-1]:
                if len(doomed) >= cfg.delete_files_batch_max:
                    break
                try:
                    mtime_ms = os.stat(mf.path).st_mtime * 1000
                except FileNotFoundError:
                    mtime_ms = 0
                if mtime_ms + reserved_ms <= now_ms or forcibly:
                    doomed.append(mf)
                else:
                    break   # files expire in order: stop at the first one still kept
            if doomed:
                # Replace the list rather than mutate it (readers index a snapshot of it), under the put
                # lock so a concurrent roll cannot be lost.
                with store._put_lock:
                    queue.files = queue.files[len(doomed):]
                for mf in doomed:
                    mf.destroy()
                    report.commitlog_files_deleted.append(mf.path)
                log.info("retention (%s, disk %.0f%%) deleted %s", report.reason, ratio * 100,
                         [os.path.basename(p) for p in report.commitlog_files_deleted])
            min_phy = queue.min_offset
            for cq in list(store._queues.values()):
                report.consume_queue_files_deleted += cq.delete_expired(min_phy)
            report.index_files_deleted = store.index.delete_below(min_phy)
            return report
