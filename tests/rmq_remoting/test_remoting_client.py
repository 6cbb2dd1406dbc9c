"""The trio client: multiplexing, timeouts, connection failures, reconnect, clean shutdown."""
from __future__ import annotations

import socket

import pytest
import trio

from rmq_remoting import (RemotingClient, RemotingCommand, RemotingConnectError, RemotingServer,
                          RemotingTimeoutError)
from rmq_remoting.client import parse_address


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_many_concurrent_calls_share_one_connection(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            results: dict[int, bytes] = {}

            async def call(i: int):
                resp = await client.invoke(addr, RemotingCommand.request(rt.ECHO, {"i": str(i)}, b"%d" % i))
                assert resp.ext_fields == {"i": str(i)}
                results[i] = bytes(resp.body)

            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(call, i)
            assert results == {i: b"%d" % i for i in range(200)}
            assert len(srv.connections) == 1
    rt.run(main)


def test_timeout_raises_and_the_connection_stays_usable(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            start = trio.current_time()
            with pytest.raises(RemotingTimeoutError, match="timed out after 100 ms"):
                await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "0.6"}), 100)
            assert trio.current_time() - start < 0.5
            conn = client.connection_for(addr)
            assert conn is not None and conn.pending == 0
            resp = await client.invoke(addr, RemotingCommand.request(rt.ECHO, {"after": "timeout"}))
            assert resp.ext_fields == {"after": "timeout"}
            await trio.sleep(0.7)                           # the late answer arrives and is dropped
            assert client.connection_for(addr) is conn and not conn.closed
    rt.run(main)


def test_connect_refused(rt):
    async def main():
        async with RemotingClient() as client:
            with pytest.raises(RemotingConnectError, match="connect to"):
                await client.invoke(f"127.0.0.1:{free_port()}", RemotingCommand.request(rt.ECHO), 1000)
    rt.run(main)


def test_pending_calls_fail_when_the_server_dies_and_the_next_call_reconnects(rt):
    async def main():
        port = free_port()
        async with RemotingClient() as client:
            addr = f"127.0.0.1:{port}"
            async with rt.server(port=port) as srv:
                first = await client.invoke(addr, RemotingCommand.request(rt.ECHO))
                assert first.code == 0
                conn = client.connection_for(addr)

                async def stop_soon():
                    await trio.sleep(0.2)
                    srv.close()

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stop_soon)
                    with pytest.raises(RemotingConnectError, match="closed"):
                        await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "5"}), 5000)
            await conn.wait_closed()
            assert client.connection_for(addr) is None
            with pytest.raises(RemotingConnectError):
                await client.invoke(addr, RemotingCommand.request(rt.ECHO), 1000)   # nobody listening
            async with rt.server(port=port):
                resp = await client.invoke(addr, RemotingCommand.request(rt.ECHO, {"again": "1"}))
                assert resp.ext_fields == {"again": "1"}
                assert client.connection_for(addr) is not conn
    rt.run(main)


def test_concurrent_first_calls_open_one_connection(rt):
    async def main():
        accepted = 0

        def count(conn):
            nonlocal accepted
            accepted += 1

        async with rt.server() as srv, RemotingClient() as client:
            srv.add_connect_hook(count)
            addr = f"127.0.0.1:{srv.port}"
            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(client.invoke, addr, RemotingCommand.request(rt.ECHO))
            assert accepted == 1
    rt.run(main)


def test_client_in_a_given_nursery_and_aclose(rt):
    async def main():
        async with rt.server() as srv:
            addr = f"127.0.0.1:{srv.port}"
            async with trio.open_nursery() as nursery:
                client = RemotingClient(nursery)
                assert (await client.invoke(addr, RemotingCommand.request(rt.ECHO))).code == 0
                conn = client.connection_for(addr)

                async def blocked_call():
                    with pytest.raises(RemotingConnectError):
                        await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "5"}), 5000)

                nursery.start_soon(blocked_call)
                await trio.sleep(0.1)
                await client.aclose()
                assert conn.closed and conn.close_reason == "client closed"
                with pytest.raises(RemotingConnectError, match="client is closed"):
                    await client.invoke(addr, RemotingCommand.request(rt.ECHO))
            # the nursery exits: no task of the client is left behind
    rt.run(main)


def test_client_without_nursery_refuses(rt):
    async def main():
        client = RemotingClient()
        with pytest.raises(RuntimeError, match="nursery"):
            await client.invoke("127.0.0.1:1", RemotingCommand.request(rt.ECHO))
    rt.run(main)


def test_call_timeout_while_connecting(rt):
    async def main():
        async with RemotingClient(connect_timeout_ms=5000) as client:
            # 192.0.2.0/24 (TEST-NET-1) is unroutable: connect hangs until our deadline or fails at once.
            start = trio.current_time()
            with pytest.raises((RemotingTimeoutError, RemotingConnectError)):
                await client.invoke("192.0.2.1:9", RemotingCommand.request(rt.ECHO), 150)
            assert trio.current_time() - start < 2
    rt.run(main)


def test_oneway_after_server_restart_reconnects(rt):
    async def main():
        port = free_port()
        got = trio.Event()

        async def record(conn, cmd):
            got.set()

        async with RemotingClient() as client:
            addr = f"127.0.0.1:{port}"
            async with rt.server(port=port):
                await client.invoke(addr, RemotingCommand.request(rt.ECHO))
                conn = client.connection_for(addr)
            await conn.wait_closed()
            srv = RemotingServer(port)
            srv.register(15, record)
            async with trio.open_nursery() as nursery:
                await nursery.start(srv.serve)
                await client.invoke_oneway(addr, RemotingCommand.request(15))
                await got.wait()
                srv.close()
    rt.run(main)


@pytest.mark.parametrize("addr, expected", [
    ("127.0.0.1:9876", ("127.0.0.1", 9876)), ("[::1]:10911", ("::1", 10911)), ("host:1", ("host", 1)),
])
def test_parse_address(addr, expected):
    assert parse_address(addr) == expected


@pytest.mark.parametrize("addr", ["nohost", ":9876", "host:", "host:port"])
def test_parse_address_rejects(addr):
    with pytest.raises(ValueError):
        parse_address(addr)


def test_large_bodies_both_ways(rt):
    """Bigger than the socket buffers: the direct write is partial and the writer sends the rest."""
    async def main():
        body = bytes(range(256)) * (16 * 1024)               # 4 MiB
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            for ser in (0, 1):
                resp = await client.invoke(addr, RemotingCommand.request(rt.ECHO, {"s": str(ser)}, body,
                                                                         serialize_type=ser), 10000)
                assert bytes(resp.body) == body and resp.ext_fields == {"s": str(ser)}
    rt.run(main)


def test_exceptions_in_the_client_block_are_not_wrapped(rt):
    async def main():
        with pytest.raises(KeyError):
            async with RemotingClient():
                raise KeyError("mine")
    rt.run(main)


def test_skip_after_partial_write():
    from rmq_remoting.connection import _skip
    parts = [b"abcd", memoryview(b"efgh"), b"ij"]
    assert [bytes(p) for p in _skip(parts, 0)] == [b"abcd", b"efgh", b"ij"]
    assert [bytes(p) for p in _skip(parts, 3)] == [b"d", b"efgh", b"ij"]
    assert [bytes(p) for p in _skip(parts, 4)] == [b"efgh", b"ij"]
    assert [bytes(p) for p in _skip(parts, 9)] == [b"j"]
    assert _skip(parts, 10) == []
