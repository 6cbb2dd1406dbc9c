"""FaultProxy against a real echo server on loopback: forwarding, every fault, the threaded variant.

Assertions use the proxy's own accounting (bytes read / forwarded, connection counters) and waits on
conditions with deadlines; the only time measurements are lower bounds the proxy's schedule guarantees.
"""
from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio

from rmq_testing.proxy import PIPE_CHUNKS, Direction, FaultProxy, ThreadedFaultProxy

TEST_DEADLINE_S = 10.0


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(TEST_DEADLINE_S):
            return await test()
    return trio.run(bounded)


class EchoServer:
    """Echoes everything back; closes its side after the client's EOF."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with stream:
                while data := await stream.receive_some(65536):
                    await stream.send_all(data)
        except trio.BrokenResourceError:
            pass                # the proxy reset us: what a cut does


@asynccontextmanager
async def echo_server() -> AsyncIterator[EchoServer]:
    server = EchoServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


async def receive_exactly(stream: trio.SocketStream, nbytes: int) -> bytes:
    parts = bytearray()
    while len(parts) < nbytes:
        data = await stream.receive_some(nbytes - len(parts))
        if not data:
            raise AssertionError(f"EOF after {len(parts)} of {nbytes} bytes")
        parts += data
    return bytes(parts)


async def assert_closed_by_peer(stream: trio.SocketStream) -> str:
    """The stream ends (EOF or reset) rather than delivering anything; returns which."""
    try:
        data = await stream.receive_some(1024)
    except trio.BrokenResourceError:
        return "reset"
    assert data == b"", f"expected the connection to end, got {data!r}"
    return "eof"


async def assert_connection_refused(port: int) -> None:
    """A connection to ``port`` is reset: during the handshake already, or on the first read."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return                      # the reset beat the end of the handshake
    async with stream:
        assert await assert_closed_by_peer(stream) in ("reset", "eof")


def pattern(nbytes: int) -> bytes:
    return bytes((i * 7 + 3) & 0xFF for i in range(nbytes))


def test_forwards_both_directions_byte_for_byte_and_counts() -> None:
    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port)) as proxy:
            assert proxy.target == ("127.0.0.1", echo.port)
            payload = pattern(1_000_003)
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, payload)
                assert await receive_exactly(stream, len(payload)) == payload
            stats = await proxy.wait_until(lambda s: s.active_connections == 0, 5)
            assert stats.to_target.bytes_forwarded == stats.to_target.bytes_read == len(payload)
            assert stats.to_client.bytes_forwarded == len(payload)
            assert stats.connections_accepted == 1 and echo.connections == 1
    run(main)


def test_half_close_is_passed_on() -> None:
    async def main() -> None:
        async with echo_server() as echo, FaultProxy(f"127.0.0.1:{echo.port}") as proxy:
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream:
                await stream.send_all(b"last words")
                await stream.send_eof()             # the echo server answers, then closes after our EOF
                assert await receive_exactly(stream, 10) == b"last words"
                assert await assert_closed_by_peer(stream) == "eof"
    run(main)


def test_throttle_spaces_bytes_by_the_rate() -> None:
    rate_bytes_per_s = 400_000
    total = 200_000

    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port)) as proxy:
            proxy.throttle(rate_bytes_per_s, Direction.TO_TARGET)
            assert proxy.stats().to_target.bytes_per_s == rate_bytes_per_s
            assert proxy.stats().to_client.bytes_per_s is None
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream, trio.open_nursery() as nursery:
                started = trio.current_time()
                nursery.start_soon(stream.send_all, pattern(total))
                await receive_exactly(stream, total)
                elapsed = trio.current_time() - started
            # No burst: the last slice (at most rate x THROTTLE_SLICE_S bytes) leaves (total - slice) / rate after
            # the first, which left after we started. A lower bound, so it cannot flake on a slow machine.
            slice_bytes = rate_bytes_per_s * 0.05
            assert elapsed >= (total - slice_bytes) / rate_bytes_per_s
            assert proxy.stats().to_target.bytes_forwarded == total
    run(main)


def test_latency_holds_each_chunk() -> None:
    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port)) as proxy:
            proxy.set_latency(150)                      # both directions
            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream:
                started = trio.current_time()
                await stream.send_all(b"ping")
                assert await receive_exactly(stream, 4) == b"ping"
                assert trio.current_time() - started >= 0.3
                proxy.set_latency(0)
                assert proxy.stats().to_client.latency_ms == 0
                await stream.send_all(b"pong")
                assert await receive_exactly(stream, 4) == b"pong"
    run(main)


def test_pause_stalls_with_bounded_buffering_and_resume_delivers_everything() -> None:
    chunk = 1024
    total = 2_000_000

    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port), chunk_bytes=chunk) as proxy:
            proxy.pause(Direction.TO_TARGET)
            assert proxy.stats().to_target.paused and not proxy.stats().to_client.paused
            largest_backlog = 0

            def backlog_filled(stats: Any) -> bool:
                nonlocal largest_backlog
                largest_backlog = max(largest_backlog, stats.to_target.bytes_read - stats.to_target.bytes_forwarded)
                return stats.to_target.bytes_read >= PIPE_CHUNKS * chunk

            stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with stream, trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, pattern(total))
                stats = await proxy.wait_until(backlog_filled, 5)
                # Paused: nothing reached the server, and the proxy holds only its bounded pipe (+ the chunk
                # the writer holds and the one the reader waits to queue), whatever the client pushes.
                assert stats.to_target.bytes_forwarded == 0
                assert largest_backlog <= (PIPE_CHUNKS + 2) * chunk
                proxy.resume(Direction.TO_TARGET)
                assert await receive_exactly(stream, total) == pattern(total)
            assert largest_backlog <= (PIPE_CHUNKS + 2) * chunk
    run(main)


@pytest.mark.parametrize("reset", [True, False])
def test_cut_ends_current_connections_and_new_ones_work(reset: bool) -> None:
    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port)) as proxy:
            first = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            second = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            for stream in (first, second):
                await stream.send_all(b"hello")
                assert await receive_exactly(stream, 5) == b"hello"
            assert proxy.cut(reset=reset) == 2
            outcomes = {await assert_closed_by_peer(first), await assert_closed_by_peer(second)}
            if not reset:
                assert outcomes == {"eof"}
            await first.aclose()
            await second.aclose()
            stats = await proxy.wait_until(lambda s: s.active_connections == 0, 5)
            assert stats.connections_cut == 2
            third = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with third:
                await third.send_all(b"again")
                assert await receive_exactly(third, 5) == b"again"
            assert echo.connections == 3
    run(main)


def test_refuse_resets_new_connections_until_accept() -> None:
    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port)) as proxy:
            kept = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            await kept.send_all(b"x")
            assert await receive_exactly(kept, 1) == b"x"
            proxy.refuse()
            await assert_connection_refused(proxy.port)
            assert proxy.stats().connections_refused == 1 and proxy.stats().refusing
            await kept.send_all(b"y")                   # a current connection is not touched
            assert await receive_exactly(kept, 1) == b"y"
            proxy.accept()
            fresh = await trio.open_tcp_stream("127.0.0.1", proxy.port)
            async with fresh, kept:
                await fresh.send_all(b"z")
                assert await receive_exactly(fresh, 1) == b"z"
            assert echo.connections == 2
    run(main)


def test_unreachable_target_resets_the_client() -> None:
    async def main() -> None:
        with socket.socket() as placeholder:        # a port nothing listens on (bound, never listening)
            placeholder.bind(("127.0.0.1", 0))
            dead_port = placeholder.getsockname()[1]
            async with FaultProxy(("127.0.0.1", dead_port)) as proxy:
                await assert_connection_refused(proxy.port)
                stats = await proxy.wait_until(lambda s: s.target_connect_failures == 1, 5)
                assert stats.active_connections == 0
    run(main)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        FaultProxy("no-port")
    with pytest.raises(ValueError):
        FaultProxy(("127.0.0.1", 0))

    async def main() -> None:
        async with echo_server() as echo, FaultProxy(("127.0.0.1", echo.port)) as proxy:
            with pytest.raises(ValueError):
                proxy.throttle(0)
            with pytest.raises(ValueError):
                proxy.set_latency(-1)
            with pytest.raises(TimeoutError):
                await proxy.wait_until(lambda s: s.connections_accepted > 0, 0.05)
    run(main)


# -- from plain threads --------------------------------------------------------------------------------------


class _ThreadedEcho(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class _EchoHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


def _recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    parts = bytearray()
    while len(parts) < nbytes:
        data = sock.recv(nbytes - len(parts))
        if not data:
            raise AssertionError(f"EOF after {len(parts)} of {nbytes} bytes")
        parts += data
    return bytes(parts)


def test_threaded_proxy_from_sync_code() -> None:
    server = _ThreadedEcho(("127.0.0.1", 0), _EchoHandler)
    server_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    server_thread.start()
    try:
        proxy = ThreadedFaultProxy(("127.0.0.1", server.server_address[1]))
        with proxy:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=TEST_DEADLINE_S) as sock:
                sock.sendall(b"abc")
                assert _recv_exactly(sock, 3) == b"abc"
                proxy.pause(Direction.TO_CLIENT)
                sock.sendall(b"defg")
                stats = proxy.wait_until(lambda s: s.to_client.bytes_read == 7, 5)
                assert stats.to_client.bytes_forwarded == 3           # held by the pause
                proxy.heal()
                assert _recv_exactly(sock, 4) == b"defg"
                assert proxy.cut() == 1
                sock.settimeout(5)
                try:
                    assert sock.recv(16) == b""
                except ConnectionResetError:
                    pass
            assert proxy.wait_until(lambda s: s.active_connections == 0, 5).connections_cut == 1
        thread = proxy._thread
        assert thread is not None and not thread.is_alive()      # close() joined the loop
        with pytest.raises(RuntimeError):
            proxy.stats()
    finally:
        server.shutdown()
        server.server_close()
        server_thread.join(5)


def test_threaded_proxy_start_failure_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proxy = ThreadedFaultProxy(("127.0.0.1", 9), listen_port=taken.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="did not start"):
            proxy.start()
        assert time.monotonic() - started < TEST_DEADLINE_S
