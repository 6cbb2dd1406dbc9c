"""The commitlog's file queue: contiguous, equal-size MappedFiles named by their start offset.

    commitlog/00000000000000000000   bytes [0, S)
    commitlog/00000000001073741824   bytes [S, 2S)        S = mapped_file_size_commitlog
    ...

Invariants
- Files are contiguous and exactly S bytes; records never straddle files; a file's unused tail is
  either zero or one BLANK marker.
- Every file but the last is full (wrote_position == S).
- The next file is created, reserved and pre-faulted by a background thread while the current one
  fills, so a roll is a list append, not a 1 GiB page-fault storm on the append path.
"""
from __future__ import annotations

import logging
import os
import threading

from rmq_store._commitlog import last_nonzero, scan_file
from rmq_store._mapped import CorruptFileError, MappedFile, file_name_of

log = logging.getLogger("rmq.store.commitlog")


def remove_interrupted_creations(directory: str, names: list[str]) -> None:
    """Delete newest files of 0 bytes (from ``names``, sorted, updated in place): a crash between creating a
    file and reserving its blocks leaves one behind. It never held data, but would fail the size check."""
    while names and os.path.getsize(os.path.join(directory, names[-1])) == 0:
        log.warning("removing empty file %s/%s (creation interrupted by a crash)", directory, names[-1])
        os.unlink(os.path.join(directory, names.pop()))


class MappedFileQueue:
    def __init__(self, directory: str, file_size: int, warm: bool = True) -> None:
        self.directory = directory
        self.file_size = file_size
        self.warm = warm
        self.files: list[MappedFile] = []
        self._prepared: MappedFile | None = None
        self._prep_thread: threading.Thread | None = None
        self._prep_error: BaseException | None = None
        self._prep_lock = threading.Lock()

    # --- loading ------------------------------------------------------------------------------------
    def load(self) -> None:
        """Map existing files; reject gaps, misnamed or wrongly sized files."""
        os.makedirs(self.directory, exist_ok=True)
        names = sorted(os.listdir(self.directory))
        for name in names:
            if not (name.isdigit() and len(name) == 20):
                log.warning("ignoring stray file %s in %s", name, self.directory)
        names = [n for n in names if n.isdigit() and len(n) == 20]
        remove_interrupted_creations(self.directory, names)
        expected = None
        for name in names:
            start = int(name)
            if start % self.file_size:
                raise CorruptFileError(f"{self.directory}/{name}: offset is not a multiple of {self.file_size}")
            if expected is not None and start != expected:
                raise CorruptFileError(f"{self.directory}: missing file before {name}")
            self.files.append(MappedFile(os.path.join(self.directory, name), self.file_size))
            expected = start + self.file_size

    # --- positions ----------------------------------------------------------------------------------
    @property
    def min_offset(self) -> int:
        return self.files[0].file_from_offset if self.files else 0

    @property
    def max_offset(self) -> int:
        """Offset just past the last written byte."""
        if not self.files:
            return 0
        last = self.files[-1]
        return last.file_from_offset + last.wrote_position

    @property
    def flushed_offset(self) -> int:
        for mf in reversed(self.files):
            if mf.flushed_position > 0 or mf is self.files[0]:
                return mf.file_from_offset + mf.flushed_position
        return 0

    def find(self, offset: int) -> MappedFile | None:
        files = self.files
        if not files:
            return None
        idx = (offset - files[0].file_from_offset) // self.file_size
        if 0 <= idx < len(files):
            return files[idx]
        return None

    # --- growth -------------------------------------------------------------------------------------
    def _create(self, start: int) -> MappedFile:
        mf = MappedFile(os.path.join(self.directory, file_name_of(start)), self.file_size, create=True)
        if self.warm:
            mf.warm()
        return mf

    def _prepare(self, start: int) -> None:
        try:
            mf = self._create(start)
        except BaseException as exc:  # reported to the appender at its next roll
            self._prep_error = exc
            return
        with self._prep_lock:
            self._prepared = mf

    def prepare_next(self) -> None:
        """Start creating the file after the last one in the background (no-op if under way)."""
        if self._prep_thread is not None and self._prep_thread.is_alive():
            return
        if self._prepared is not None:
            return
        start = self.files[-1].file_from_offset + self.file_size if self.files else 0
        if self.files and os.path.exists(os.path.join(self.directory, file_name_of(start))):
            return
        self._prep_error = None
        self._prep_thread = threading.Thread(target=self._prepare, args=(start,), name="rmq-allocate", daemon=True)
        self._prep_thread.start()

    def _take_prepared(self, start: int) -> MappedFile | None:
        if self._prep_thread is not None:
            self._prep_thread.join()
            self._prep_thread = None
        with self._prep_lock:
            mf, self._prepared = self._prepared, None
        if mf is not None and mf.file_from_offset != start:
            mf.destroy()
            mf = None
        self._prep_error = None
        return mf

    def roll(self) -> MappedFile:
        """Append the next file (the prepared one when ready) and start preparing the one after."""
        start = self.files[-1].file_from_offset + self.file_size if self.files else 0
        mf = self._take_prepared(start) or self._create(start)
        self.files.append(mf)
        self.prepare_next()
        return mf

    def writable(self) -> MappedFile:
        """The file to append to, rolling when the last one is full."""
        if not self.files or self.files[-1].wrote_position >= self.file_size:
            return self.roll()
        return self.files[-1]

    def ensure_capacity(self, nbytes: int) -> None:
        """Make sure ``nbytes`` of records fit from the write position, so a put fails with DiskFullError
        before writing anything rather than half way. The next file is created for real; room for any
        further ones (only batches larger than a file need them) is checked against free disk space."""
        last = self.writable()
        room = last.file_size - last.wrote_position - 8
        if nbytes <= room:
            return
        start = last.file_from_offset + self.file_size
        mf = self._take_prepared(start)
        if mf is None:
            mf = self._create(start)
        self._prepared = mf
        extra_files = max(0, -(-(nbytes - room - (self.file_size - 8)) // (self.file_size - 8)))
        if extra_files:
            st = os.statvfs(self.directory)
            if st.f_bavail * st.f_frsize < extra_files * self.file_size:
                from rmq_store._mapped import DiskFullError
                raise DiskFullError(28, f"no space for {extra_files} more commitlog files of {self.file_size} bytes")

    # --- flushing -----------------------------------------------------------------------------------
    def flush(self) -> int:
        """msync every file with unflushed bytes; returns the flushed offset."""
        for mf in list(self.files):
            if mf.flushed_position < mf.wrote_position and not mf.closed:
                mf.flush()
        return self.flushed_offset

    # --- recovery -----------------------------------------------------------------------------------
    def truncate(self, offset: int) -> tuple[int, list[str]]:
        """Erase everything at and after ``offset``. Returns (bytes erased, deleted file paths)."""
        erased = 0
        deleted: list[str] = []
        while self.files and self.files[-1].file_from_offset > offset:
            mf = self.files.pop()
            data = last_nonzero(mf, 0)
            if data:      # an all-zero file is one prepared ahead of need, not lost data
                erased += data
                deleted.append(mf.path)
            mf.destroy()
        if self.files:
            mf = self.files[-1]
            rel = offset - mf.file_from_offset
            end = last_nonzero(mf, rel)
            if end > rel:
                erased += end - rel
                mf.zero(rel, end)
            mf.wrote_position = rel
            mf.flushed_position = min(mf.flushed_position, rel)
        return erased, deleted

    def scan(self, start_index: int, check_crc: bool) -> tuple[int, int, int]:
        """Walk files from ``start_index``: returns (valid end offset, stop code, records seen)."""
        records = 0
        end = self.files[start_index].file_from_offset if self.files else 0
        rc = 0
        for mf in self.files[start_index:]:
            pos, rc, count, _ = scan_file(mf, 0, check_crc)
            records += count
            end = mf.file_from_offset + pos
            mf.wrote_position = pos
            if rc != 2:          # not a blank tail: data ends (or is damaged) inside this file
                break
        return end, rc, records

    def close(self) -> None:
        if self._prep_thread is not None:
            self._prep_thread.join()
            self._prep_thread = None
        with self._prep_lock:
            if self._prepared is not None:
                # Never written: remove it so the directory holds only files with data.
                self._prepared.destroy()
                self._prepared = None
        for mf in self.files:
            mf.close()
