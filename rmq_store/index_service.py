"""IndexService: the index files of ``index/`` (named by creation time, yyyyMMddHHmmssSSS), newest last."""
from __future__ import annotations

import logging
import os
import threading
import time

from rmq_common._record import java_hash
from rmq_store._index import IndexFile, index_file_size
from rmq_store._mapped import CorruptFileError, MappedFile

log = logging.getLogger("rmq.store.index")


def index_key_hash(topic: str, key: str) -> int:
    """abs(String.hashCode("topic#key")) with MIN_VALUE → 0, as IndexService.buildKey + IndexFile.indexKeyHashMethod."""
    h = java_hash(f"{topic}#{key}")
    return 0 if h == -(1 << 31) else abs(h)


def _time_name(ms: int) -> str:
    t = time.localtime(ms / 1000)
    return time.strftime("%Y%m%d%H%M%S", t) + "%03d" % (ms % 1000)


class IndexService:
    def __init__(self, directory: str, slot_num: int, index_num: int) -> None:
        self.directory = directory
        self.slot_num = slot_num
        self.index_num = index_num
        self.file_size = index_file_size(slot_num, index_num)
        self.files: list[IndexFile] = []
        self._lock = threading.Lock()
        # Store time of the newest entry known to be on disk (a full file flushed after a roll).
        self.durable_timestamp = 0

    def load(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        for name in sorted(os.listdir(self.directory)):
            if not (name.isdigit() and len(name) == 17):
                continue
            path = os.path.join(self.directory, name)
            mf = None
            try:
                mf = MappedFile(path, self.file_size)
                self.files.append(IndexFile(mf, self.slot_num, self.index_num, False))
            except CorruptFileError as exc:
                if mf is not None:
                    mf.close()
                # The index is derived data: a damaged file is dropped and its keys rebuilt by recovery.
                log.error("dropping damaged index file %s: %s", path, exc)
                os.unlink(path)

    @property
    def current(self) -> IndexFile:
        if not self.files or self.files[-1].is_full:
            return self.roll()
        return self.files[-1]

    def roll(self) -> IndexFile:
        """Create a new index file named by the current time."""
        with self._lock:
            ms = int(time.time() * 1000)
            while True:
                path = os.path.join(self.directory, _time_name(ms))
                if not os.path.exists(path):
                    break
                ms += 1
            if self.files:
                # The full file is flushed once, off the append path.
                full = self.files[-1]
                threading.Thread(target=self._flush_full, args=(full,), name="rmq-index-flush",
                                 daemon=True).start()
            mf = MappedFile(path, self.file_size, create=True)
            # Pre-fault: first-touch faults on random slots cost more than the rest of an index insert.
            mf.warm()
            idx = IndexFile(mf, self.slot_num, self.index_num, True)
            self.files.append(idx)
            return idx

    def _flush_full(self, full: IndexFile) -> None:
        try:
            if not full.mapped.closed:
                full.mapped.sync_all()
                self.durable_timestamp = max(self.durable_timestamp, full.end_timestamp)
        except OSError:
            log.exception("flushing full index file %s failed", full.mapped.path)

    @property
    def end_phy_offset(self) -> int:
        """Offset of the newest indexed record, -1 with nothing indexed."""
        for f in reversed(self.files):
            if f.index_count > 1:
                return f.end_phy_offset
        return -1

    def lookup(self, topic: str, key: str, max_num: int, begin_ms: int, end_ms: int) -> list[int]:
        """Commitlog offsets whose key hash matches, newest first (callers confirm the key itself)."""
        h = index_key_hash(topic, key)
        out: list[int] = []
        for f in reversed(list(self.files)):
            if len(out) >= max_num:
                break
            if f.time_matched(begin_ms, end_ms):
                out.extend(f.select(h, max_num - len(out), begin_ms, end_ms))
        return out

    def delete_below(self, min_phy: int) -> int:
        """Delete index files whose every entry is below the commitlog's minimum offset (never the newest)."""
        deleted = 0
        with self._lock:
            while len(self.files) > 1 and self.files[0].end_phy_offset < min_phy:
                f = self.files.pop(0)
                f.mapped.destroy()
                deleted += 1
        return deleted

    def flush(self) -> None:
        for f in list(self.files):
            if not f.mapped.closed:
                f.mapped.sync_all()

    def destroy(self) -> None:
        for f in self.files:
            f.mapped.destroy()
        self.files = []

    def close(self) -> None:
        for f in self.files:
            f.mapped.close()
