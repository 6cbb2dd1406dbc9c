"""Shared helpers of the remoting tests: a bounded trio runner, a running server and raw-socket access.

Tests are plain functions that call ``trio.run`` through ``run`` so every test carries its own
deadline; servers bind free loopback ports.
"""
from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from rmq_remoting import RemotingCommand, RemotingServer, split_frames
from rmq_remoting.connection import Connection

ECHO = 10           # echo ext fields and body
SLOW = 11           # sleep ext "sleep" seconds, then echo
FAIL = 12           # raise ValueError("boom")


async def echo(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    return cmd.create_response(0, ext_fields=dict(cmd.ext_fields),
                               body=None if cmd.body is None else bytes(cmd.body))


async def slow(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    await trio.sleep(float(cmd.ext_fields.get("sleep", "1")))
    return await echo(conn, cmd)


async def fail(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    raise ValueError("boom")


class Remoting:
    """Namespace handed to tests by the ``rt`` fixture."""

    ECHO = ECHO
    SLOW = SLOW
    FAIL = FAIL

    @staticmethod
    def run(fn: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
        async def bounded() -> Any:
            with trio.fail_after(timeout):
                return await fn()
        return trio.run(bounded)

    @staticmethod
    @asynccontextmanager
    async def server(**kwargs: Any) -> AsyncIterator[RemotingServer]:
        srv = RemotingServer(**kwargs)
        srv.register(ECHO, echo)
        srv.register(SLOW, slow)
        srv.register(FAIL, fail)
        async with trio.open_nursery() as nursery:
            await nursery.start(srv.serve)
            try:
                yield srv
            finally:
                srv.close()

    @staticmethod
    async def raw(port: int) -> trio.SocketStream:
        return await trio.open_tcp_stream("127.0.0.1", port)

    @staticmethod
    async def read_frame(stream: trio.abc.ReceiveStream, buf: bytearray) -> RemotingCommand | None:
        """Read one whole frame from a raw stream (None on EOF); ``buf`` carries leftovers."""
        while True:
            frames, used = split_frames(buf)
            if frames:
                header, st, body = frames[0]
                cmd = RemotingCommand.from_frame(bytes(header), st, bytes(body))
                size = 8 + len(header) + len(body)
                del frames, header, body
                del buf[:size]
                return cmd
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return None
            if not data:
                return None
            buf += data

    @staticmethod
    async def expect_eof(stream: trio.abc.ReceiveStream, timeout: float = 3.0) -> bool:
        """True when the peer closes the stream within ``timeout`` (data before that is discarded)."""
        with trio.move_on_after(timeout):
            while True:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return True
                if not data:
                    return True
        return False

    @staticmethod
    def frame(header: bytes, body: bytes = b"", serialize_type: int = 0) -> bytes:
        """A frame built field by field, independent of the codec under test."""
        return struct.pack(">iI", 4 + len(header) + len(body), (serialize_type << 24) | len(header)) + header + body


@pytest.fixture
def rt() -> type[Remoting]:
    return Remoting
