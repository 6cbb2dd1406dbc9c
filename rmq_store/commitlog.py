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
        # Where the first file starts when there is none: 0, except for a replica that starts at its
        # master's last file (``restart_at``).
        self.first_offset = 0
        # Files created (and pre-faulted) ahead of need, in order, starting right after the last file.
        self._ahead: list[MappedFile] = []
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
        return self.files[0].file_from_offset if self.files else self.first_offset

    @property
    def max_offset(self) -> int:
        """Offset just past the last written byte."""
        if not self.files:
            return self.first_offset
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
        except BaseException as exc:  # the appender creates the file itself at its roll and sees the error
            log.warning("preparing commitlog file %s failed: %s", file_name_of(start), exc)
            self._prep_error = exc
            return
        with self._prep_lock:
            self._ahead.append(mf)

    def _next_start(self) -> int:
        """Offset of the first file not yet created (after the last file and those made ahead)."""
        if self._ahead:
            return self._ahead[-1].file_from_offset + self.file_size
        return self.files[-1].file_from_offset + self.file_size if self.files else self.first_offset

    def prepare_next(self) -> None:
        """Start creating the file after the last one in the background (no-op if under way or made)."""
        if self._prep_thread is not None and self._prep_thread.is_alive():
            return
        if self._ahead:
            return
        start = self._next_start()
        if self.files and os.path.exists(os.path.join(self.directory, file_name_of(start))):
            return
        self._prep_error = None
        self._prep_thread = threading.Thread(target=self._prepare, args=(start,), name="rmq-allocate", daemon=True)
        self._prep_thread.start()

    def _join_preparer(self) -> None:
        if self._prep_thread is not None:
            self._prep_thread.join()
            self._prep_thread = None
        self._prep_error = None

    def roll(self) -> MappedFile:
        """Append the next file (one made ahead when there is one) and start preparing the one after."""
        start = self.files[-1].file_from_offset + self.file_size if self.files else self.first_offset
        self._join_preparer()
        with self._prep_lock:
            mf = self._ahead.pop(0) if self._ahead else None
        if mf is not None and mf.file_from_offset != start:     # cannot happen; never append a wrong file
            raise CorruptFileError(f"prepared file {mf.path} does not follow offset {start}")
        if mf is None:
            mf = self._create(start)
        self.files.append(mf)
        self.prepare_next()
        return mf

    def writable(self) -> MappedFile:
        """The file to append to, rolling when the last one is full."""
        if not self.files or self.files[-1].wrote_position >= self.file_size:
            return self.roll()
        return self.files[-1]

    def ensure_capacity(self, nbytes: int, max_record: int) -> None:
        """Create every file a put of ``nbytes`` (largest record ``max_record``) can need before anything is
        written, so a full disk fails the put with DiskFullError instead of half way. Records never
        straddle files, so each file is counted as able to hold only file_size − 8 − max_record bytes."""
        last = self.writable()
        room = last.file_size - last.wrote_position - 8
        if nbytes <= room:
            return
        usable = self.file_size - 8 - max_record
        need = 1 + max(0, nbytes - max(room - max_record, 0) - 1) // max(usable, 1)
        self._join_preparer()
        while len(self._ahead) < need:
            mf = self._create(self._next_start())
            with self._prep_lock:
                self._ahead.append(mf)

    def restart_at(self, offset: int) -> None:
        """Make an empty log begin at ``offset`` (a file boundary): its first file is named by it.

        A replica with no data starts where its master tells it to (the start of the master's last file);
        the empty files made ahead of need from 0 are dropped first."""
        if offset % self.file_size:
            raise ValueError(f"a commitlog can only start at a file boundary, not at {offset}")
        if any(mf.wrote_position for mf in self.files):
            raise ValueError("restart_at on a commitlog that holds data")
        self._join_preparer()
        with self._prep_lock:
            doomed, self._ahead = self.files + self._ahead, []
        self.files = []
        for mf in doomed:
            mf.destroy()
        self.first_offset = offset

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
            # Never written: remove them so the directory holds only files with data.
            for mf in self._ahead:
                mf.destroy()
            self._ahead = []
        for mf in self.files:
            mf.close()
