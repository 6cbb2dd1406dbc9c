"""Tests of rmq_client.compression (PROTOCOL.md §4.2, §4.7): body compression as RocketMQ 5.x clients do it.

ZLIB output is checked byte for byte against what Java's ``DeflaterOutputStream(new Deflater(5))`` wrote for the
same input (RocketMQ's ZlibCompressor); LZ4 frames must carry the flags lz4-java's reader requires; every codec
round-trips, rejects corrupt and truncated data with a ValueError naming the codec, and bounds its output.
"""

from __future__ import annotations

import os
import zlib

import lz4.frame
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_client.compression import (
    COMPRESSION_BITS,
    DEFAULT_COMPRESS_OVER,
    DEFAULT_MAX_DECOMPRESSED,
    CompressionError,
    CompressionType,
    compress,
    compression_kind,
    decompress,
    is_compressed,
    maybe_compress,
)
from rmq_common import sysflag

CODECS = [CompressionType.ZLIB, CompressionType.LZ4, CompressionType.ZSTD]

#: Java 17: ``new DeflaterOutputStream(out, new Deflater(5))`` over JAVA_INPUT (RocketMQ ZlibCompressor, level 5).
JAVA_INPUT = "".join(f"order-{i} status=PAID amount={i * 7 % 101};\n" for i in range(40)).encode()
JAVA_ZLIB_GOLDEN = bytes.fromhex(
    "785e6dd43b0a02411045d1dc55b80161aa6afa87180826666e41d0500774dcbf22f4ebe4c6172a38af6796d7edfeda4ddbf7"
    "7a5d3fefc3e5783e6daf8fe5f35c0fd37eb3fcab512dbd3a559b7b0eca6e3dcf986bcf8972a49e33e5d97b2e985bcf9572ca"
    "3d37ca39a4826865a8319bdc0ce1aae00ce59ae40ce99ae80cedc679b4b3711ef16c9c473dd734867ca16d1cf942e338f2cd"
    "5ac7912f691e47beac791cf9f278d6c857e4e7e857e5e7e857e5e7e8d7e4e7e8a7f3817cba1ea867ba1ea8e75a27f8b3d53a"
    "817aa175821f9fd609d44b5a27502f699d40bd3cfe3aa8577e7c5f4c499e33"
)


def text_payload(size: int) -> bytes:
    """Text-like bytes (JSON-ish order records) of exactly ``size`` bytes."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += f'{{"order":{i},"user":"u{i * 7919 % 1000}","status":"PAID","amount":{i * 13 % 997}.50}}\n'.encode()
        i += 1
    return bytes(out[:size])


# ---------------------------------------------------------------------------------------------
# Formats and flags
# ---------------------------------------------------------------------------------------------

def test_zlib_matches_java_deflater_output_byte_for_byte() -> None:
    data, bits = compress(JAVA_INPUT)
    assert data == JAVA_ZLIB_GOLDEN
    assert bits == 0x301
    assert decompress(JAVA_ZLIB_GOLDEN, 0x301) == JAVA_INPUT
    assert decompress(JAVA_ZLIB_GOLDEN, 0x1) == JAVA_INPUT          # CPP / legacy Java: no codec bits


def test_zlib_is_zlib_wrapped_not_raw_or_gzip() -> None:
    data, _ = compress(b"x" * 5000, "zlib")
    assert data[0] == 0x78 and (data[0] << 8 | data[1]) % 31 == 0   # zlib header
    assert zlib.decompress(data) == b"x" * 5000


def test_lz4_frame_has_the_flags_lz4_java_accepts() -> None:
    data, bits = compress(text_payload(200_000), CompressionType.LZ4)
    assert bits == sysflag.COMPRESSED_FLAG | sysflag.LZ4 == 0x101
    assert data[:4] == b"\x04\x22\x4d\x18"                          # LZ4 frame magic
    flg = data[4]
    assert flg >> 6 == 1                                            # version 01
    assert flg & 0x20                                               # block independence (lz4-java requires it)
    assert not flg & 0x08                                           # no content size, as LZ4FrameOutputStream
    assert lz4.frame.decompress(data) == text_payload(200_000)


def test_zstd_is_one_zstd_frame() -> None:
    payload = text_payload(10_000)
    data, bits = compress(payload, "ZSTD")
    assert bits == 0x201
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    assert zstandard.ZstdDecompressor().decompress(data) == payload


@pytest.mark.parametrize("kind, bits", [("zlib", 0x301), ("lz4", 0x101), ("zstd", 0x201), (" Zstd ", 0x201),
                                        (0x300, 0x301), (0x100, 0x101), (sysflag.ZSTD, 0x201),
                                        (CompressionType.LZ4, 0x101)])
def test_codec_names_and_sysflag_bits(kind: object, bits: int) -> None:
    data, got = compress(b"abc" * 100, kind)  # type: ignore[arg-type]
    assert got == bits
    assert sysflag.with_compression(0x10, got & sysflag.COMPRESSION_TYPE_MASK) == 0x10 | bits
    assert sysflag.compression_type(got) == got & 0x700
    assert decompress(data, got | 0x30 | 0x8) == b"abc" * 100      # other SYSFLAG bits do not matter
    assert is_compressed(got)


@pytest.mark.parametrize("kind", ["gzip", "", 0, 0x400, 0x301, 7, None])
def test_unknown_codec_to_compress_is_refused(kind: object) -> None:
    with pytest.raises(CompressionError, match="unknown compression type"):
        compress(b"x", kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("flag", [0x401, 0x501, 0x601, 0x701])
def test_unknown_codec_field_is_refused(flag: int) -> None:
    with pytest.raises(CompressionError, match=f"unknown compression type {flag & 0x700:#x}"):
        decompress(b"whatever", flag)


@pytest.mark.parametrize("flag", [0, 0x300, 0x100, 0x200, 0x30, 0x700])
def test_uncompressed_body_is_returned_unchanged(flag: int) -> None:
    # Codec bits without COMPRESSED_FLAG say nothing: the body is plain.
    for body in (b"plain body", bytearray(b"plain body"), memoryview(b"plain body")):
        out = decompress(body, flag)
        assert out == b"plain body" and type(out) is bytes
    assert not is_compressed(flag)


def test_compression_kind_and_constants() -> None:
    assert compression_kind("lz4") is CompressionType.LZ4
    assert compression_kind(0x200) is CompressionType.ZSTD
    assert COMPRESSION_BITS == 0x701
    assert DEFAULT_COMPRESS_OVER == 4096
    assert DEFAULT_MAX_DECOMPRESSED == 64 << 20
    assert issubclass(CompressionError, ValueError)


def test_level_bounds() -> None:
    assert decompress(*compress(b"a" * 9000, "zlib", 9)) == b"a" * 9000
    assert decompress(*compress(b"a" * 9000, "zlib", 0)) == b"a" * 9000
    assert decompress(*compress(b"a" * 9000, "zstd", 19)) == b"a" * 9000
    assert decompress(*compress(b"a" * 9000, "lz4", 99)) == b"a" * 9000     # LZ4 has no level
    with pytest.raises(CompressionError, match="ZLIB: level 10"):
        compress(b"a", "zlib", 10)
    with pytest.raises(CompressionError, match="ZSTD: cannot compress at level 23"):
        compress(b"a", "zstd", 23)


def test_maybe_compress_threshold_is_inclusive_like_java() -> None:
    small = text_payload(DEFAULT_COMPRESS_OVER - 1)
    assert maybe_compress(small) == (small, 0)
    big = text_payload(DEFAULT_COMPRESS_OVER)
    data, bits = maybe_compress(big)
    assert bits == 0x301 and decompress(data, bits) == big
    data, bits = maybe_compress(big, "lz4", threshold=100)
    assert bits == 0x101 and decompress(data, bits) == big
    assert maybe_compress(big, threshold=10_000) == (big, 0)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CODECS)
@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 65536, 300_000])
def test_round_trip_sizes(kind: CompressionType, size: int) -> None:
    for payload in (text_payload(size), os.urandom(size)):
        data, bits = compress(payload, kind)
        assert decompress(data, bits) == payload
        assert decompress(memoryview(data), bits) == payload
        assert decompress(bytearray(data), bits) == payload


@settings(max_examples=150, deadline=None)
@given(payload=st.binary(max_size=20_000), kind=st.sampled_from(CODECS), level=st.integers(1, 9))
def test_round_trip_any_payload(payload: bytes, kind: CompressionType, level: int) -> None:
    data, bits = compress(payload, kind, level)
    assert bits == 1 | int(kind)
    assert decompress(data, bits) == payload


def test_legacy_flag_without_codec_bits_means_zlib() -> None:
    payload = text_payload(10_000)
    data, _ = compress(payload, "zlib")
    assert decompress(data, sysflag.COMPRESSED_FLAG) == payload
    lz, _ = compress(payload, "lz4")
    with pytest.raises(CompressionError, match="^ZLIB: corrupt"):
        decompress(lz, sysflag.COMPRESSED_FLAG)                        # legacy flag = ZLIB, not "guess"


def test_zstd_frame_without_content_size_as_zstd_jni_writes() -> None:
    payload = text_payload(300_000)
    data = zstandard.ZstdCompressor(level=5, write_content_size=False).compress(payload)
    assert zstandard.frame_content_size(data) == -1
    assert decompress(data, 0x201) == payload
    assert decompress(zstandard.ZstdCompressor(write_content_size=False).compress(b""), 0x201) == b""


def test_lz4_frames_of_other_writers() -> None:
    payload = text_payload(300_000)
    # lz4-java's default: 4 MiB blocks; with a content size; with block checksums; incompressible blocks.
    for frame in (lz4.frame.compress(payload, block_size=lz4.frame.BLOCKSIZE_MAX4MB, block_linked=False),
                  lz4.frame.compress(payload, store_size=True, block_checksum=True, content_checksum=True),
                  lz4.frame.compress(payload, block_size=lz4.frame.BLOCKSIZE_MAX1MB, compression_level=9)):
        assert decompress(frame, 0x101) == payload
        assert decompress(frame, 0x101, max_size=len(payload)) == payload
        with pytest.raises(CompressionError, match="^LZ4: decompressed body exceeds"):
            decompress(frame, 0x101, max_size=len(payload) - 1)
    noise = os.urandom(200_000)
    frame = lz4.frame.compress(noise, block_linked=False, store_size=False)
    assert decompress(frame, 0x101, max_size=200_000) == noise


def test_lz4_concatenated_frames_are_read_like_lz4_java() -> None:
    a, _ = compress(b"first " * 100, "lz4")
    b, _ = compress(b"second " * 100, "lz4")
    assert decompress(a + b, 0x101) == b"first " * 100 + b"second " * 100
    # Linked blocks and checksums (other writers' choices) are read too.
    linked = lz4.frame.compress(text_payload(300_000), block_linked=True, content_checksum=True,
                                block_size=lz4.frame.BLOCKSIZE_MAX64KB)
    assert decompress(linked, 0x101) == text_payload(300_000)


# ---------------------------------------------------------------------------------------------
# Corrupt, truncated and oversized input
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, name", [(CompressionType.ZLIB, "ZLIB"), (CompressionType.LZ4, "LZ4"),
                                        (CompressionType.ZSTD, "ZSTD")])
def test_corrupt_and_truncated_data_name_the_codec(kind: CompressionType, name: str) -> None:
    payload = text_payload(20_000)
    data, bits = compress(payload, kind)
    with pytest.raises(CompressionError, match=f"^{name}: "):
        decompress(b"this is not compressed data at all", bits)
    with pytest.raises(CompressionError, match=f"^{name}: "):
        decompress(b"", bits)
    for cut in (1, 5, len(data) // 2, len(data) - 1):
        with pytest.raises(CompressionError, match=f"^{name}: "):
            decompress(data[:cut], bits)
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    flipped[len(flipped) // 2 + 1] ^= 0x55
    try:
        out = decompress(bytes(flipped), bits)
    except CompressionError as exc:
        assert str(exc).startswith(f"{name}: ")
    else:  # LZ4 frames carry no checksum (as lz4-java writes them): damage may decode to other bytes
        assert kind is CompressionType.LZ4 and out != payload


def test_trailing_garbage_after_lz4_frame_is_an_error() -> None:
    data, bits = compress(b"payload" * 100, "lz4")
    with pytest.raises(CompressionError, match="^LZ4: corrupt"):
        decompress(data + b"garbage!", bits)


def test_zlib_ignores_bytes_after_the_stream_like_java_inflater() -> None:
    data, bits = compress(b"payload" * 100, "zlib")
    assert decompress(data + b"trailing", bits) == b"payload" * 100


@pytest.mark.parametrize("kind, name", [(CompressionType.ZLIB, "ZLIB"), (CompressionType.LZ4, "LZ4"),
                                        (CompressionType.ZSTD, "ZSTD")])
def test_zip_bomb_is_bounded(kind: CompressionType, name: str) -> None:
    bomb = bytes(16 << 20)                      # 16 MiB of zeros: a few KiB compressed
    data, bits = compress(bomb, kind)
    assert len(data) < 100_000
    with pytest.raises(CompressionError, match=f"^{name}: decompressed body exceeds max_size=1048576"):
        decompress(data, bits, max_size=1 << 20)
    # The bound is inclusive.
    exact, bits = compress(bytes(1 << 20), kind)
    assert decompress(exact, bits, max_size=1 << 20) == bytes(1 << 20)
    with pytest.raises(CompressionError, match="exceeds max_size=1048575"):
        decompress(exact, bits, max_size=(1 << 20) - 1)


def test_zstd_bomb_without_content_size_is_bounded() -> None:
    data = zstandard.ZstdCompressor(write_content_size=False).compress(bytes(16 << 20))
    with pytest.raises(CompressionError, match="^ZSTD: decompressed body exceeds max_size=1048576"):
        decompress(data, 0x201, max_size=1 << 20)
    assert decompress(data, 0x201, max_size=16 << 20) == bytes(16 << 20)


def test_zstd_frame_claiming_a_huge_size_is_refused_before_allocating() -> None:
    frame = zstandard.ZstdCompressor(write_content_size=False, write_checksum=False).compress(b"hello")
    fhd = frame[4]
    assert fhd & 0xE3 == 0        # no content size, not single-segment (a window byte follows), no dictionary
    # Same frame with an 8-byte Frame_Content_Size field claiming 1 TiB.
    forged = frame[:4] + bytes([fhd | 0xC0]) + frame[5:6] + (1 << 40).to_bytes(8, "little") + frame[6:]
    assert zstandard.frame_content_size(forged) == 1 << 40
    with pytest.raises(CompressionError, match="^ZSTD: decompressed body exceeds max_size"):
        decompress(forged, 0x201)
    # Claiming 3 bytes for 5: zstd checks the output against the header.
    short = frame[:4] + bytes([fhd | 0x40]) + frame[5:6] + (3).to_bytes(2, "little") + frame[6:]
    with pytest.raises(CompressionError, match="^ZSTD: "):
        decompress(short, 0x201)


def test_zlib_bomb_of_deflate_max_ratio() -> None:
    # Deflate tops out near 1032:1; 64 KiB of input would be 64 MiB out, refused at 4 MiB.
    data = zlib.compress(bytes(64 << 20), 9)
    with pytest.raises(CompressionError, match="^ZLIB: decompressed body exceeds"):
        decompress(data, 0x301, max_size=4 << 20)


def test_negative_max_size_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size must be >= 0"):
        decompress(b"x", 0, max_size=-1)
    data, bits = compress(b"abc", "zlib")
    assert decompress(data, bits, max_size=3) == b"abc"
    with pytest.raises(CompressionError, match="exceeds max_size=0"):
        decompress(data, bits, max_size=0)
