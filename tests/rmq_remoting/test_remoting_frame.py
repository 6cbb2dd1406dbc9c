"""The Cython frame codec: splitting, incremental decoding into arenas, encoding, the binary header."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_remoting import _frame
from rmq_remoting._frame import (DEFAULT_MAX_FRAME, FrameDecoder, decode_rocketmq_header, encode_frame,
                                 encode_frame_parts, encode_rocketmq_header, split_frames)
from rmq_remoting.errors import FrameError


def hand_frame(header: bytes, body: bytes = b"", st_: int = 0) -> bytes:
    return struct.pack(">iI", 4 + len(header) + len(body), (st_ << 24) | len(header)) + header + body


def as_bytes(frames: list) -> list[tuple[bytes, int, bytes]]:
    return [(bytes(h), t, bytes(b)) for h, t, b in frames]


frame_st = st.tuples(st.binary(max_size=300), st.binary(max_size=700), st.sampled_from([0, 1]))


# -- split_frames ---------------------------------------------------------------------------------

def test_split_two_frames_and_a_partial_one():
    a = hand_frame(b'{"code":1}', b"body")
    b = hand_frame(b"H", b"", 1)
    frames, used = split_frames(a + b + a[:7])
    assert as_bytes(frames) == [(b'{"code":1}', 0, b"body"), (b"H", 1, b"")]
    assert used == len(a) + len(b)


def test_split_views_are_zero_copy():
    buf = bytearray(hand_frame(b"hdr", b"payload"))
    frames, _ = split_frames(buf)
    header, _, body = frames[0]
    assert isinstance(body, memoryview)
    buf[-7:] = b"PAYLOAD"
    assert bytes(body) == b"PAYLOAD"          # the view looks at the caller's buffer


def test_split_with_offset():
    a = hand_frame(b"x", b"y")
    frames, used = split_frames(b"junk" + a, 4)
    assert as_bytes(frames) == [(b"x", 0, b"y")] and used == len(a)
    with pytest.raises(ValueError):
        split_frames(a, len(a) + 1)


def test_empty_header_and_body_allowed():
    frames, used = split_frames(hand_frame(b""))
    assert as_bytes(frames) == [(b"", 0, b"")] and used == 8


@pytest.mark.parametrize("data, message", [
    (struct.pack(">i", 3), "smaller than"),
    (struct.pack(">i", -1), "smaller than"),
    (struct.pack(">i", DEFAULT_MAX_FRAME - 3), "exceeds the limit"),
    (struct.pack(">iI", 10, 7), "header length 7 exceeds"),
    (struct.pack(">iI", 10, (2 << 24) | 1), "unknown serialize type 2"),
    (struct.pack(">iI", 10, 0xFF000001), "unknown serialize type 255"),
])
def test_split_rejects_malformed_prefix(data, message):
    with pytest.raises(FrameError, match=message):
        split_frames(data)


def test_max_frame_counts_the_whole_frame():
    ok = hand_frame(b"h", b"b" * 91)                   # 100 bytes on the wire
    assert len(ok) == 100
    assert len(split_frames(ok, 0, 100)[0]) == 1
    with pytest.raises(FrameError, match="exceeds the limit of 99"):
        split_frames(ok, 0, 99)


def test_oversized_length_rejected_after_four_bytes():
    dec = FrameDecoder(max_frame=1024)
    with pytest.raises(FrameError):
        dec.feed(struct.pack(">i", 5000))


# -- FrameDecoder -------------------------------------------------------------------------------

def receive(dec: FrameDecoder, data: bytes, chunks: list[int]) -> list:
    """Push ``data`` through recv_buffer/advance in chunks of the given sizes (cycled)."""
    out, pos, i = [], 0, 0
    while pos < len(data):
        want = chunks[i % len(chunks)]
        i += 1
        buf = dec.recv_buffer()
        n = min(want, len(buf), len(data) - pos)
        buf[:n] = data[pos:pos + n]
        del buf
        out += dec.advance(n)
        pos += n
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(frame_st, max_size=12), st.lists(st.integers(1, 400), min_size=1, max_size=8),
       st.booleans())
def test_decoder_matches_split_for_any_chunking(frames, chunks, keep_views):
    data = b"".join(hand_frame(h, b, t) for h, b, t in frames)
    dec = FrameDecoder(arena_size=512, min_room=64)
    got = receive(dec, data, chunks)
    if not keep_views:
        got = as_bytes(got)
    assert as_bytes(got) == [(h, t, b) for h, b, t in frames]
    assert dec.buffered == 0


@settings(max_examples=40, deadline=None)
@given(st.lists(frame_st, max_size=12), st.lists(st.integers(1, 500), min_size=1, max_size=8))
def test_feed_matches_split(frames, chunks):
    data = b"".join(hand_frame(h, b, t) for h, b, t in frames)
    dec = FrameDecoder(arena_size=256, min_room=32)
    got, pos, i = [], 0, 0
    while pos < len(data):
        n = chunks[i % len(chunks)]
        got += dec.feed(data[pos:pos + n])
        pos += n
        i += 1
    assert as_bytes(got) == [(h, t, b) for h, b, t in frames]


def test_held_views_survive_arena_reuse():
    """Views handed to handlers must never be overwritten, however much is received afterwards."""
    dec = FrameDecoder(arena_size=256, min_room=32)
    held = []
    for i in range(200):
        body = bytes([i % 251]) * (i % 70 + 1)
        held += receive(dec, hand_frame(b"h%d" % i, body), [37])
        if i % 3:
            held[-1] = None if held[-1] is None else (bytes(held[-1][0]), held[-1][1], bytes(held[-1][2]))
    for i, frame in enumerate(held):
        assert bytes(frame[0]) == b"h%d" % i
        assert bytes(frame[2]) == bytes([i % 251]) * (i % 70 + 1)


def test_large_frame_bigger_than_the_arena():
    body = bytes(range(256)) * 4096        # 1 MiB
    dec = FrameDecoder(arena_size=4096, min_room=512)
    frames = receive(dec, hand_frame(b"big", body) + hand_frame(b"small", b"x"), [65536, 1000, 7])
    assert as_bytes(frames) == [(b"big", 0, body), (b"small", 0, b"x")]


def test_arena_is_reused_when_views_are_gone():
    dec = FrameDecoder(arena_size=1024, min_room=64)
    frame = hand_frame(b"h", b"b" * 100)
    receive(dec, frame, [len(frame)])
    first = dec.recv_buffer()
    base = first.obj
    del first
    for _ in range(50):                      # views dropped each time → same arena, rewound
        assert as_bytes(receive(dec, frame, [len(frame)])) == [(b"h", 0, b"b" * 100)]
    buf = dec.recv_buffer()
    assert buf.obj is base
    del buf


def test_frames_before_a_malformed_one_are_delivered_first():
    good = hand_frame(b"ok", b"1")
    dec = FrameDecoder()
    frames = dec.feed(good + struct.pack(">iI", 10, 99))
    assert as_bytes(frames) == [(b"ok", 0, b"1")]
    with pytest.raises(FrameError):
        dec.recv_buffer()
    with pytest.raises(FrameError):
        dec.feed(b"")


def test_frame_views_are_read_only():
    dec = FrameDecoder()
    (header, _, body), = dec.feed(hand_frame(b"h", b"body"))
    assert body.readonly and header.readonly
    with pytest.raises(TypeError):
        body[0] = 0


def test_decoder_validates_arguments():
    with pytest.raises(ValueError):
        FrameDecoder(max_frame=4)
    dec = FrameDecoder(arena_size=128)
    with pytest.raises(ValueError):
        dec.advance(10_000)


# -- encoding -------------------------------------------------------------------------------------

@settings(max_examples=80, deadline=None)
@given(frame_st)
def test_encode_frame_round_trip(frame):
    header, body, st_ = frame
    data = encode_frame(header, body, st_)
    assert data == hand_frame(header, body, st_)
    assert b"".join(encode_frame_parts(header, body, st_)) == data
    frames, used = split_frames(data)
    assert as_bytes(frames) == [(header, st_, body)] and used == len(data)


def test_encode_parts_keeps_the_body_object():
    body = memoryview(b"x" * 1000)
    parts = encode_frame_parts(b"{}", body)
    assert parts[1] is body and parts[0] == hand_frame(b"{}", b"x" * 1000)[:10]
    assert encode_frame_parts(b"{}", None) == [hand_frame(b"{}")]


def test_encode_limits():
    with pytest.raises(FrameError, match="exceeds the limit"):
        encode_frame(b"h", b"b" * 100, 0, 50)
    with pytest.raises(FrameError, match="24-bit"):
        encode_frame(b"h" * (1 << 24), None, 0, 1 << 26)
    with pytest.raises(FrameError, match="one byte"):
        encode_frame(b"h", None, 256)


# -- ROCKETMQ binary header -------------------------------------------------------------------------

def test_binary_header_golden():
    """§1.3 written out byte by byte: code 310, JAVA, version 407, opaque 42, flag 2, no remark, {a: x}."""
    expected = bytes.fromhex(
        "0136" "00" "0197" "0000002a" "00000002"   # code, language, version, opaque, flag
        "00000000"                                  # remark length 0 = null
        "00000008" "0001" "61" "00000001" "78")     # extFields block: a → x
    assert encode_rocketmq_header(310, 0, 407, 42, 2, None, {"a": "x"}) == expected
    assert decode_rocketmq_header(expected) == (310, 0, 407, 42, 2, None, {"a": "x"})


def test_binary_header_remark_and_utf8():
    h = encode_rocketmq_header(1, 1, 63, -5, 1, "é!", {"k": "", "ü": "ÿ", "skip": None})
    assert h[13:17] == struct.pack(">i", 3) and h[17:20] == "é!".encode()
    assert decode_rocketmq_header(h) == (1, 1, 63, -5, 1, "é!", {"k": "", "ü": "ÿ"})
    assert decode_rocketmq_header(encode_rocketmq_header(1, 0, 0, 0, 0, "", {}))[5] is None


@settings(max_examples=100, deadline=None)
@given(st.integers(-32768, 32767), st.integers(0, 255), st.integers(-32768, 32767),
       st.integers(-(1 << 31), (1 << 31) - 1), st.integers(-(1 << 31), (1 << 31) - 1),
       st.none() | st.text(min_size=1, max_size=50), st.dictionaries(st.text(max_size=20), st.text(max_size=40)))
def test_binary_header_round_trip(code, lang, version, opaque, flag, remark, ext):
    h = encode_rocketmq_header(code, lang, version, opaque, flag, remark, ext)
    assert decode_rocketmq_header(h) == (code, lang, version, opaque, flag, remark, ext)
    assert decode_rocketmq_header(memoryview(b"pad" + h)[3:]) == decode_rocketmq_header(h)


@pytest.mark.parametrize("args", [
    (40000, 0, 0, 0, 0, None, None), (1, 0, 70000, 0, 0, None, None), (1, 300, 0, 0, 0, None, None),
    (1, 0, 0, 1 << 31, 0, None, None), (1, 0, 0, 0, 0, None, {"k" * 40000: "v"}),
])
def test_binary_header_encode_rejects_out_of_range(args):
    with pytest.raises(FrameError):
        encode_rocketmq_header(*args)


def test_binary_header_requires_strings():
    with pytest.raises(TypeError):
        encode_rocketmq_header(1, 0, 0, 0, 0, None, {"k": 5})


@pytest.mark.parametrize("data", [
    b"",
    bytes(20),
    bytes(13) + struct.pack(">i", 100) + bytes(4),                  # remark past the end
    bytes(13) + struct.pack(">i", -1) + bytes(4),
    bytes(17) + struct.pack(">i", 50),                              # ext block past the end
    bytes(17) + struct.pack(">i", 1) + b"\x00",                     # entry truncated at key length
    bytes(17) + struct.pack(">i", 6) + b"\x00\x05" + bytes(4),      # key runs past the block
    bytes(17) + struct.pack(">i", 6) + b"\xff\xff" + bytes(4),      # negative key length
    bytes(17) + struct.pack(">i", 7) + b"\x00\x01k" + struct.pack(">i", 9),  # value past the block
])
def test_binary_header_decode_rejects_truncation(data):
    with pytest.raises(FrameError):
        decode_rocketmq_header(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_binary_header_decode_never_crashes(data):
    try:
        decode_rocketmq_header(data)
    except FrameError:
        pass


def test_module_constants():
    assert _frame.DEFAULT_MAX_FRAME == 16 * 1024 * 1024
    assert _frame.MAX_HEADER_LENGTH == 0xFFFFFF
    assert (_frame.SERIALIZE_TYPE_JSON, _frame.SERIALIZE_TYPE_ROCKETMQ) == (0, 1)
