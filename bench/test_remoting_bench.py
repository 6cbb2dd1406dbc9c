"""Micro-benchmarks of the remoting codec: encoding and decoding a SEND_MESSAGE_V2 frame, JSON and ROCKETMQ headers.

Run with ``pytest bench --benchmark-only`` (``make bench``).  The suite's testpaths is ``tests``, so these are
collected only when bench/ is named; they make no timing assertions beyond checking each case did its work.

The request is the one ``rmq bench remoting`` sends (twelve extFields as a Java producer writes them, a 128 B
body).  Single-frame cases time one call; the batch cases time splitting 256 back-to-back frames as the server's
reader receives them, through ``FrameDecoder`` with header parsing and through ``split_frames`` alone.  RPC over
sockets is what ``rmq bench remoting`` measures, against a bare trio echo.
"""

from __future__ import annotations

from typing import Any

import pytest

from rmq_cli.remoting_runners import build_request
from rmq_remoting import FrameDecoder, RemotingCommand, SerializeType, split_frames

BODY_SIZE = 128
BATCH = 256

HEADERS = [
    pytest.param(SerializeType.JSON, id="json"),
    pytest.param(SerializeType.ROCKETMQ, id="rocketmq"),
]


@pytest.mark.benchmark(group="remoting encode (one frame)")
@pytest.mark.parametrize("serialize_type", HEADERS)
def test_encode_request(benchmark: Any, serialize_type: int) -> None:
    request = build_request(BODY_SIZE, serialize_type)
    parts = benchmark(request.encode_parts)
    assert b"".join(parts) == request.encode()


@pytest.mark.benchmark(group="remoting encode (one frame)")
@pytest.mark.parametrize("serialize_type", HEADERS)
def test_encode_reply(benchmark: Any, serialize_type: int) -> None:
    """What the server does per answered request: build the response and encode it."""
    request = RemotingCommand.decode(build_request(BODY_SIZE, serialize_type).encode())

    def reply() -> list:
        return request.create_response(0, ext_fields=request.ext_fields, body=request.body).encode_parts()

    parts = benchmark(reply)
    assert RemotingCommand.decode(b"".join(parts)).is_response


@pytest.mark.benchmark(group="remoting decode (one frame)")
@pytest.mark.parametrize("serialize_type", HEADERS)
def test_decode_request(benchmark: Any, serialize_type: int) -> None:
    request = build_request(BODY_SIZE, serialize_type)
    frame = request.encode()
    decoded = benchmark(RemotingCommand.decode, frame)
    assert decoded == request


@pytest.mark.benchmark(group=f"remoting decode ({BATCH} frames)")
@pytest.mark.parametrize("serialize_type", HEADERS)
def test_decode_batch_through_frame_decoder(benchmark: Any, serialize_type: int) -> None:
    batch = build_request(BODY_SIZE, serialize_type).encode() * BATCH

    def decode() -> int:
        from_frame = RemotingCommand.from_frame
        count = 0
        for header, st, body in FrameDecoder().feed(batch):
            from_frame(header, st, body)
            count += 1
        return count

    assert benchmark(decode) == BATCH


@pytest.mark.benchmark(group=f"remoting decode ({BATCH} frames)")
@pytest.mark.parametrize("serialize_type", HEADERS)
def test_split_batch(benchmark: Any, serialize_type: int) -> None:
    batch = build_request(BODY_SIZE, serialize_type).encode() * BATCH
    frames, consumed = benchmark(split_frames, batch)
    assert len(frames) == BATCH and consumed == len(batch)
