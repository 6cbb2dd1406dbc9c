"""Message body compression as RocketMQ clients do it (PROTOCOL.md §4.2, §4.7).

A producer compresses a body of at least ``compressMsgBodyOverHowmuch`` (4096) bytes and marks the record's
SYSFLAG: ``COMPRESSED_FLAG`` (0x1) plus the codec in the 0x700 field (0x100 LZ4, 0x200 ZSTD, 0x300 ZLIB). The broker
stores the body as received; consumers decompress. The formats are those of RocketMQ 5.x's compressors
(``common/compression/*Compressor.java``):

* ZLIB: ``java.util.zip.DeflaterOutputStream`` = zlib-wrapped deflate (2-byte header, Adler-32 trailer), level 5
  by default (``rocketmq.message.compressLevel``). The only codec every client family reads: the CPP and Node
  clients set just 0x1 and always inflate, so a COMPRESSED_FLAG with no codec bits means ZLIB.
* LZ4: lz4-java's ``LZ4FrameOutputStream`` = the LZ4 *frame* format with independent blocks, no content size and no
  checksum. lz4-java's reader refuses linked blocks, so this module writes independent ones; the level is ignored.
* ZSTD: zstd-jni's ``ZstdOutputStream`` = one zstd frame at the configured level (5 unless set otherwise).

``decompress`` bounds its output (``max_size``, 64 MiB by default): a few kilobytes of crafted input cannot make it
allocate gigabytes. Every failure is a ``CompressionError`` (a ValueError) that names the codec.

Measured on the 2-core CI-class box, JSON-lines text (bench/test_client_codec_bench.py), default levels:

=====  ========================================  ========================================
codec  4 KiB: ratio, compress, decompress        64 KiB: ratio, compress, decompress
=====  ========================================  ========================================
ZLIB   6.5×, 20 µs (205 MB/s), 6 µs (660 MB/s)   7.7×, 345 µs (190 MB/s), 62 µs (1.05 GB/s)
LZ4    3.7×, 4 µs (1.1 GB/s), 3 µs (1.4 GB/s)    4.7×, 31 µs (2.1 GB/s), 13 µs (5.0 GB/s)
ZSTD   9.6×, 16 µs (265 MB/s), 4 µs (1.0 GB/s)   9.8×, 233 µs (280 MB/s), 29 µs (2.2 GB/s)
=====  ========================================  ========================================
"""

from __future__ import annotations

import contextlib
import enum
import threading
import zlib
from typing import Final

import lz4.frame

from rmq_common import sysflag as _sf

try:  # zstandard is a declared dependency; only ZSTD bodies need it, so a missing module fails only them.
    import zstandard as _zstd
except ImportError:  # pragma: no cover - exercised only where the package is absent
    _zstd = None

__all__ = [
    "COMPRESSION_BITS",
    "DEFAULT_COMPRESS_OVER",
    "DEFAULT_LEVEL",
    "DEFAULT_MAX_DECOMPRESSED",
    "CompressionError",
    "CompressionType",
    "compress",
    "compression_kind",
    "decompress",
    "is_compressed",
    "maybe_compress",
]

#: Java's ``compressMsgBodyOverHowmuch``: bodies of at least this many bytes are compressed.
DEFAULT_COMPRESS_OVER: Final = 4096
#: Java's ``rocketmq.message.compressLevel`` default (used for ZLIB and ZSTD; LZ4 has no level).
DEFAULT_LEVEL: Final = 5
#: Default bound on a decompressed body. RocketMQ's maxMessageSize (4 MiB) bounds the compressed body only.
DEFAULT_MAX_DECOMPRESSED: Final = 64 * 1024 * 1024
#: Every SYSFLAG bit that describes the body's compression (COMPRESSED_FLAG and the codec field).
COMPRESSION_BITS: Final = _sf.COMPRESSED_FLAG | _sf.COMPRESSION_TYPE_MASK


class CompressionType(enum.IntEnum):
    """The codec field of SYSFLAG (Java ``CompressionType``); the values are the SYSFLAG bits."""

    LZ4 = _sf.LZ4
    ZSTD = _sf.ZSTD
    ZLIB = _sf.ZLIB


class CompressionError(ValueError):
    """A body that cannot be compressed or decompressed as asked: corrupt, truncated, too large, unknown codec."""


_BY_NAME: Final = {t.name: t for t in CompressionType}


def compression_kind(kind: CompressionType | int | str) -> CompressionType:
    """Normalise a codec given as CompressionType, SYSFLAG codec bits (0x100/0x200/0x300) or name ("zlib", ...)."""
    if isinstance(kind, str):
        found = _BY_NAME.get(kind.strip().upper())
        if found is None:
            raise CompressionError(f"unknown compression type {kind!r}: expected zlib, lz4 or zstd")
        return found
    try:
        return CompressionType(kind)
    except ValueError:
        raise CompressionError(
            f"unknown compression type {kind!r}: expected ZLIB (0x300), LZ4 (0x100) or ZSTD (0x200)"
        ) from None


def is_compressed(sysflag: int) -> bool:
    """Whether a record or send with this SYSFLAG carries a compressed body."""
    return bool(sysflag & _sf.COMPRESSED_FLAG)


def _zstd_module():
    if _zstd is None:
        raise CompressionError("ZSTD: the zstandard package is not installed")
    return _zstd


class _ZstdContexts(threading.local):
    """zstandard contexts are not thread-safe and cost ~10 µs to create: one set per thread, reused."""

    def __init__(self) -> None:
        self.compressors: dict[int, object] = {}
        self.decompressor = None


_zstd_contexts = _ZstdContexts()


def _zstd_compressor(level: int):
    ctx = _zstd_contexts.compressors.get(level)
    if ctx is None:
        ctx = _zstd_contexts.compressors[level] = _zstd_module().ZstdCompressor(level=level)
    return ctx


def _zstd_decompressor():
    ctx = _zstd_contexts.decompressor
    if ctx is None:
        ctx = _zstd_contexts.decompressor = _zstd_module().ZstdDecompressor()
    return ctx


def compress(
    body: bytes | bytearray | memoryview, kind: CompressionType | int | str = CompressionType.ZLIB,
    level: int = DEFAULT_LEVEL,
) -> tuple[bytes, int]:
    """Compress ``body`` with codec ``kind``; returns ``(compressed, sysflag_bits)``.

    ``sysflag_bits`` is ``COMPRESSED_FLAG | codec`` (0x301 for ZLIB): OR it into the send's SYSFLAG (or use
    ``sysflag.with_compression``). The body is always compressed, even when that makes it larger, as Java's
    producer does; ``maybe_compress`` applies the size threshold. ``level``: zlib 0..9, zstd 1..22; ignored by LZ4.
    """
    codec = compression_kind(kind)
    if codec is CompressionType.ZLIB:
        if not 0 <= level <= 9:
            raise CompressionError(f"ZLIB: level {level} outside 0..9")
        data = zlib.compress(body, level)
    elif codec is CompressionType.LZ4:
        # lz4-java's LZ4FrameInputStream accepts only independent blocks ("Dependent block stream is unsupported").
        data = lz4.frame.compress(body, block_linked=False, store_size=False, content_checksum=False)
    else:
        zstd = _zstd_module()
        try:
            data = _zstd_compressor(level).compress(body)
        except (zstd.ZstdError, ValueError) as exc:
            raise CompressionError(f"ZSTD: cannot compress at level {level}: {exc}") from None
    return data, _sf.COMPRESSED_FLAG | int(codec)


def maybe_compress(
    body: bytes, kind: CompressionType | int | str = CompressionType.ZLIB, *,
    threshold: int = DEFAULT_COMPRESS_OVER, level: int = DEFAULT_LEVEL,
) -> tuple[bytes, int]:
    """What a producer does before a single send: ``compress`` when ``len(body) >= threshold``, else ``(body, 0)``.

    Java never compresses batches (MessageBatch); neither should the caller.
    """
    if len(body) < threshold:
        return body, 0
    return compress(body, kind, level)


def decompress(
    body: bytes | bytearray | memoryview, sysflag: int, max_size: int = DEFAULT_MAX_DECOMPRESSED,
) -> bytes:
    """The body as the producer sent it: decompressed per ``sysflag``, at most ``max_size`` bytes.

    A body whose SYSFLAG lacks COMPRESSED_FLAG is returned as bytes unchanged. COMPRESSED_FLAG with a zero codec
    field is ZLIB (CPP and older Java clients). Raises CompressionError naming the codec for an unknown codec
    field (0x400..0x700), corrupt or truncated data, or output over ``max_size``.
    """
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, not {max_size}")
    if not sysflag & _sf.COMPRESSED_FLAG:
        return bytes(body)
    bits = sysflag & _sf.COMPRESSION_TYPE_MASK
    if bits == 0 or bits == _sf.ZLIB:
        return _inflate(body, max_size)
    if bits == _sf.LZ4:
        return _lz4_decompress(body, max_size)
    if bits == _sf.ZSTD:
        return _zstd_decompress(body, max_size)
    raise CompressionError(f"unknown compression type {bits:#x} in sysflag {sysflag:#x}")


def _too_large(codec: str, max_size: int) -> CompressionError:
    return CompressionError(f"{codec}: decompressed body exceeds max_size={max_size} bytes")


def _inflate(body: bytes | bytearray | memoryview, max_size: int) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(body, max_size + 1)
    except zlib.error as exc:
        raise CompressionError(f"ZLIB: corrupt data: {exc}") from None
    if len(out) > max_size:
        raise _too_large("ZLIB", max_size)
    if not d.eof:
        raise CompressionError(f"ZLIB: truncated data ({len(body)} bytes end inside the stream)")
    # Bytes after the end of the stream are ignored, as Java's InflaterInputStream does.
    return out


_LZ4_MAGIC: Final = 0x184D2204
#: Block maximum sizes by the BD byte's 3-bit code.
_LZ4_BLOCK_MAX: Final = {4: 1 << 16, 5: 1 << 18, 6: 1 << 20, 7: 1 << 22}


def _lz4_single_frame_bound(data: memoryview) -> int | None:
    """Most bytes the one LZ4 frame filling ``data`` can decode to, from its header and block sizes, or None
    when ``data`` is not exactly one well-formed frame (concatenated, skippable, truncated, odd flags...)."""
    n = len(data)
    if n < 11 or int.from_bytes(data[:4], "little") != _LZ4_MAGIC:
        return None
    flg, bd = data[4], data[5]
    block_max = _LZ4_BLOCK_MAX.get((bd >> 4) & 7)
    if flg >> 6 != 1 or block_max is None:
        return None
    pos = 6
    content = None
    if flg & 0x08:
        content = int.from_bytes(data[pos:pos + 8], "little")
        pos += 8
    pos += (4 if flg & 0x01 else 0) + 1               # dictionary id, header checksum
    block_checksum = 4 if flg & 0x10 else 0
    bound = 0
    while True:
        if pos + 4 > n:
            return None
        word = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        if word == 0:                                 # end mark
            break
        size = word & 0x7FFFFFFF
        if size > block_max:
            return None
        bound += size if word & 0x80000000 else block_max
        pos += size + block_checksum
    pos += 4 if flg & 0x04 else 0                     # content checksum
    if pos != n or (content is not None and content > bound):
        return None
    return bound if content is None else content


def _lz4_decompress(body: bytes | bytearray | memoryview, max_size: int) -> bytes:
    view = memoryview(body).cast("B") if not isinstance(body, bytes) else memoryview(body)
    bound = _lz4_single_frame_bound(view)
    if bound is not None and bound <= max_size:
        # The usual case (one frame, as lz4-java and compress() write it) cannot exceed max_size: decode in one
        # call, without the bounded decompressor's output buffer of max_size bytes.
        try:
            return lz4.frame.decompress(view)
        except RuntimeError as exc:
            raise CompressionError(f"LZ4: corrupt data: {exc}") from None
    data = body
    parts: list[bytes] = []
    total = 0
    while True:  # lz4-java reads concatenated frames; so does this
        d = lz4.frame.LZ4FrameDecompressor()
        try:
            out = d.decompress(data, max_length=max_size - total + 1)
        except RuntimeError as exc:
            raise CompressionError(f"LZ4: corrupt data: {exc}") from None
        total += len(out)
        if total > max_size:
            raise _too_large("LZ4", max_size)
        parts.append(out)
        if not d.eof:
            raise CompressionError(f"LZ4: truncated data ({len(body)} bytes end inside a frame)")
        data = d.unused_data
        if not data:
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _zstd_decompress(body: bytes | bytearray | memoryview, max_size: int) -> bytes:
    zstd = _zstd_module()
    try:
        size = zstd.frame_content_size(body)
    except zstd.ZstdError as exc:
        raise CompressionError(f"ZSTD: corrupt data: {exc}") from None
    if size > max_size:
        raise _too_large("ZSTD", max_size)
    dctx = _zstd_decompressor()
    try:
        if size > 0:  # the frame states its size (ours do); zstd checks the output against it
            return dctx.decompress(body)
        if size == 0:  # zstandard returns b"" for a stated size of 0 without reading the frame: check it
            d = dctx.decompressobj()
            if d.decompress(body) or not d.eof:
                raise zstd.ZstdError("frame of stated size 0 is truncated or not empty")
            return b""
        # A streaming writer such as zstd-jni's ZstdOutputStream states no size: bound the output buffer,
        # trying a modest one first so a small body does not cost a max_size allocation.
        guess = max(65536, 16 * len(body))
        if guess < max_size:
            with contextlib.suppress(zstd.ZstdError):  # too small a guess, or corrupt: the next call tells
                return dctx.decompress(body, max_output_size=guess)
        return dctx.decompress(body, max_output_size=max_size)
    except zstd.ZstdError as exc:
        raise CompressionError(f"ZSTD: {_zstd_problem(dctx, body, max_size, exc)}") from None


def _zstd_problem(dctx, body: bytes | bytearray | memoryview, max_size: int, exc: Exception) -> str:
    """Tell an over-large output from corrupt data (zstandard reports both as an incomplete frame)."""
    produced = 0
    with contextlib.suppress(Exception):  # reading stops at the damage; the original error is the one to report
        reader = dctx.stream_reader(body)
        while produced <= max_size:
            chunk = reader.read(min(1 << 20, max_size + 1 - produced))
            if not chunk:
                break
            produced += len(chunk)
    if produced > max_size:
        return f"decompressed body exceeds max_size={max_size} bytes"
    return f"corrupt or truncated data: {exc}"
