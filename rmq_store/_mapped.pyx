# cython: language_level=3
"""MappedFile: one fixed-size file mapped into memory, the unit every store file type is built from.

Invariants
- The mapping covers the whole file, ``file_size`` bytes, for as long as the object is open.
- ``flushed_position <= wrote_position <= file_size``.
- The mapping is released only when nothing references it: readers get memoryviews through the buffer
  protocol (``memoryview(mapped_file)``), each export is counted, and ``close()``/``destroy()`` defer the
  ``munmap`` until the last view is released (RocketMQ's hold/release). A view therefore never points at
  unmapped memory, and a file can be deleted while a consumer still reads from it.
- Creation reserves the disk blocks up front (``posix_fallocate``): a full disk fails at creation with
  ``DiskFullError`` and never later as a SIGBUS on a page fault in the middle of an append.
"""
from cpython.buffer cimport PyBUF_WRITABLE
from libc.errno cimport errno, ENOSPC, EDQUOT, EINVAL
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset, strerror
from posix.fcntl cimport open as c_open, O_RDWR, O_CREAT, O_EXCL
from posix.unistd cimport close as c_close, unlink as c_unlink
from posix.types cimport off_t

import os

cdef extern from "<fcntl.h>" nogil:
    int posix_fallocate(int fd, off_t offset, off_t len)

cdef extern from "<sys/mman.h>" nogil:
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
    int munmap(void *addr, size_t length)
    int msync(void *addr, size_t length, int flags)
    int madvise(void *addr, size_t length, int advice)
    int PROT_READ, PROT_WRITE, MAP_SHARED, MS_SYNC, MADV_WILLNEED
    void *MAP_FAILED

cdef extern from "<sys/stat.h>" nogil:
    struct stat:
        off_t st_size
    int fstat(int fd, stat *buf)

cdef extern from "<unistd.h>" nogil:
    int fdatasync(int fd)

cdef enum:
    MADV_POPULATE_WRITE_ = 23     # Linux ≥ 5.14; older kernels answer EINVAL and we touch pages instead
    PAGE_SIZE = 4096


class StoreError(Exception):
    """Base class of the store's errors."""


class DiskFullError(StoreError, OSError):
    """No space left to create or extend a store file. Nothing was written."""


class CorruptFileError(StoreError):
    """A store file whose size or content cannot be what the store wrote."""


def file_name_of(int64_t offset) -> str:
    """RocketMQ names files by the offset of their first byte, zero-padded to 20 digits."""
    return "%020d" % offset


cdef class MappedFile:
    def __cinit__(self):
        self.fd = -1
        self.base = NULL

    def __init__(self, str path, int64_t file_size, *, bint create=False):
        """Map ``path`` (named by its start offset) of exactly ``file_size`` bytes.

        ``create``: make a new file (it must not exist), reserving its blocks.
        Otherwise the file must exist with exactly ``file_size`` bytes, else CorruptFileError.
        """
        cdef stat st
        cdef int rc
        cdef bytes bpath = os.fsencode(path)
        self.path = path
        self.file_size = file_size
        name = os.path.basename(path)
        self.file_from_offset = int(name) if name.isdigit() else 0
        if file_size <= 0:
            raise ValueError("file_size must be positive")
        if create:
            self.fd = c_open(bpath, O_RDWR | O_CREAT | O_EXCL, 0o644)
            if self.fd < 0:
                raise OSError(errno, f"cannot create {path}: {strerror(errno).decode()}")
            with nogil:
                rc = posix_fallocate(self.fd, 0, file_size)
            if rc != 0:
                c_close(self.fd)
                self.fd = -1
                c_unlink(bpath)
                if rc == ENOSPC or rc == EDQUOT:
                    raise DiskFullError(rc, f"no space to create {path} ({file_size} bytes)")
                raise OSError(rc, f"cannot reserve {file_size} bytes for {path}: {strerror(rc).decode()}")
        else:
            self.fd = c_open(bpath, O_RDWR, 0)
            if self.fd < 0:
                raise OSError(errno, f"cannot open {path}: {strerror(errno).decode()}")
            fstat(self.fd, &st)
            if st.st_size != file_size:
                c_close(self.fd)
                self.fd = -1
                raise CorruptFileError(f"{path} has {st.st_size} bytes, expected {file_size}")
        self.base = <unsigned char *>mmap(NULL, file_size, PROT_READ | PROT_WRITE, MAP_SHARED, self.fd, 0)
        if <void *>self.base == MAP_FAILED:
            self.base = NULL
            c_close(self.fd)
            self.fd = -1
            raise OSError(errno, f"cannot map {path}: {strerror(errno).decode()}")

    def __dealloc__(self):
        self._unmap()

    def __repr__(self):
        return (f"MappedFile({self.path!r}, wrote={self.wrote_position}, flushed={self.flushed_position},"
                f" exports={self.exports}, closed={self.closed})")

    # --- buffer protocol: counted read-only (or writable, for tests) views of the whole mapping ---------
    def __getbuffer__(self, Py_buffer *buf, int flags):
        if self.closed or self.base == NULL:
            raise ValueError(f"{self.path} is closed")
        buf.buf = self.base
        buf.len = self.file_size
        buf.obj = self
        buf.readonly = 0 if (flags & PyBUF_WRITABLE) else 1
        buf.itemsize = 1
        buf.format = "B"
        buf.ndim = 1
        buf.shape = &buf.len
        buf.strides = &buf.itemsize
        buf.suboffsets = NULL
        buf.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *buf):
        self.exports -= 1
        if self.exports == 0 and self.unmap_pending:
            self._unmap()

    cdef void _unmap(self) noexcept:
        if self.base != NULL:
            munmap(self.base, self.file_size)
            self.base = NULL
        if self.fd >= 0:
            c_close(self.fd)
            self.fd = -1
        self.unmap_pending = False

    # --- pointer access for the Cython hot paths -------------------------------------------------------
    @property
    def address(self) -> int:
        return <size_t>self.base

    @property
    def is_full(self) -> bool:
        return self.wrote_position >= self.file_size

    @property
    def remaining(self) -> int:
        return self.file_size - self.wrote_position

    def view(self, int64_t start=0, int64_t end=-1) -> memoryview:
        """A read-only zero-copy view of [start, end) (end -1 = wrote_position); holds the mapping open."""
        if end < 0:
            end = self.wrote_position
        if not (0 <= start <= end <= self.file_size):
            raise IndexError(f"view [{start}, {end}) outside {self.path} of {self.file_size} bytes")
        return memoryview(self)[start:end]

    def read(self, int64_t start, int64_t size) -> bytes:
        """A copy of ``size`` bytes at ``start``."""
        if self.base == NULL:
            raise ValueError(f"{self.path} is closed")
        if not (0 <= start and start + size <= self.file_size and size >= 0):
            raise IndexError(f"read [{start}, {start + size}) outside {self.path}")
        return (<char *>self.base)[start:start + size]

    def write(self, int64_t position, data) -> None:
        """Copy ``data`` to ``position`` (slow path: checkpoint, tests, replication)."""
        cdef const unsigned char[::1] v = data
        cdef Py_ssize_t n = v.shape[0]
        if self.base == NULL:
            raise ValueError(f"{self.path} is closed")
        if position < 0 or position + n > self.file_size:
            raise IndexError(f"write [{position}, {position + n}) outside {self.path}")
        if n:
            with nogil:
                memcpy(self.base + position, &v[0], n)

    def zero(self, int64_t start, int64_t end=-1) -> None:
        """Zero [start, end) — used to erase a torn tail after recovery truncates it."""
        if end < 0:
            end = self.file_size
        if self.base == NULL:
            raise ValueError(f"{self.path} is closed")
        if not (0 <= start <= end <= self.file_size):
            raise IndexError(f"zero [{start}, {end}) outside {self.path}")
        with nogil:
            memset(self.base + start, 0, end - start)

    def warm(self, int64_t start=0) -> None:
        """Pre-fault the pages from ``start`` to the end so appends never take first-touch faults.

        Runs without the GIL (call it from a worker thread). MADV_POPULATE_WRITE maps every page writable
        without changing its content; on older kernels the fallback rewrites each page's first byte with
        its own value, which is equally content-preserving.
        """
        cdef int64_t s = (start // PAGE_SIZE) * PAGE_SIZE
        cdef int64_t i
        cdef int rc
        cdef volatile unsigned char *vp
        if self.base == NULL:
            raise ValueError(f"{self.path} is closed")
        if s >= self.file_size:
            return
        with nogil:
            rc = madvise(self.base + s, self.file_size - s, MADV_POPULATE_WRITE_)
            if rc != 0:
                vp = <volatile unsigned char *>self.base
                i = s
                while i < self.file_size:
                    vp[i] = vp[i]
                    i += PAGE_SIZE

    def flush(self, int64_t upto=-1) -> int:
        """msync [flushed_position, upto) (upto -1 = wrote_position); returns the new flushed position."""
        cdef int64_t end = self.wrote_position if upto < 0 else min(upto, self.wrote_position)
        cdef int64_t start = (self.flushed_position // PAGE_SIZE) * PAGE_SIZE
        cdef int rc = 0
        if self.base == NULL or end <= self.flushed_position:
            return self.flushed_position
        with nogil:
            rc = msync(self.base + start, end - start, MS_SYNC)
        if rc != 0:
            raise OSError(errno, f"msync of {self.path} failed: {strerror(errno).decode()}")
        self.flushed_position = end
        return end

    def sync_all(self) -> None:
        """msync the whole mapping regardless of positions (index and checkpoint files)."""
        cdef int rc
        if self.base == NULL:
            return
        with nogil:
            rc = msync(self.base, self.file_size, MS_SYNC)
        if rc != 0:
            raise OSError(errno, f"msync of {self.path} failed: {strerror(errno).decode()}")

    def close(self) -> None:
        """Stop using the file; the mapping goes when the last reader's view is released."""
        if self.closed:
            return
        self.closed = True
        if self.exports == 0:
            self._unmap()
        else:
            self.unmap_pending = True

    def destroy(self) -> None:
        """Close and delete the file (retention, truncation). Readers' views stay valid until released."""
        self.close()
        if not self.deleted:
            self.deleted = True
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

