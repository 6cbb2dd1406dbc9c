"""The trio server: concurrency per connection, oneway, unknown codes, errors, busy, callbacks, hooks."""
from __future__ import annotations

import logging
import struct

import trio
import trio.testing

from rmq_remoting import (RPC_ONEWAY, Connection, HandlerTable, RemotingClient, RemotingCommand,
                          RemotingConnectError, RequestCode, ResponseCode, SerializeType)


def test_echo_json_and_binary(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            for ser in (SerializeType.JSON, SerializeType.ROCKETMQ):
                req = RemotingCommand.request(rt.ECHO, {"k": "v", "n": "1"}, b"payload", serialize_type=ser)
                resp = await client.invoke(addr, req)
                assert resp.code == ResponseCode.SUCCESS and resp.is_response
                assert resp.opaque == req.opaque and resp.serialize_type == ser
                assert resp.ext_fields == {"k": "v", "n": "1"} and bytes(resp.body) == b"payload"
    rt.run(main)


def test_slow_handler_does_not_delay_a_fast_one_on_the_same_connection(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            finished: list[str] = []

            async def slow():
                await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "1.0"}), 5000)
                finished.append("slow")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(slow)
                await trio.sleep(0.05)
                start = trio.current_time()
                await client.invoke(addr, RemotingCommand.request(rt.ECHO), 5000)
                finished.append("fast")
                assert trio.current_time() - start < 0.5
            assert finished == ["fast", "slow"]
            assert len(srv.connections) == 1                  # both went over one socket
    rt.run(main)


def test_unknown_code_answers_3_in_the_request_serialization(rt):
    async def main():
        async with rt.server() as srv:
            stream = await rt.raw(srv.port)
            buf = bytearray()
            for ser in (0, 1):
                req = RemotingCommand(4242, opaque=77 + ser, serialize_type=ser)
                await stream.send_all(req.encode())
                resp = await rt.read_frame(stream, buf)
                assert resp.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
                assert resp.remark == " request type 4242 not supported"
                assert resp.opaque == 77 + ser and resp.serialize_type == ser and resp.is_response
            await stream.aclose()
    rt.run(main)


def test_oneway_gets_no_reply(rt):
    async def main():
        seen: list[RemotingCommand] = []

        async def record(conn, cmd):
            seen.append(cmd)
            return cmd.create_response()

        async with rt.server() as srv:
            srv.register(RequestCode.UPDATE_CONSUMER_OFFSET, record)
            stream = await rt.raw(srv.port)
            oneway = RemotingCommand(RequestCode.UPDATE_CONSUMER_OFFSET, opaque=1, flag=RPC_ONEWAY)
            unknown_oneway = RemotingCommand(999, opaque=2, flag=RPC_ONEWAY)
            normal = RemotingCommand(rt.ECHO, opaque=3)
            await stream.send_all(oneway.encode() + unknown_oneway.encode() + normal.encode())
            resp = await rt.read_frame(stream, bytearray())
            assert resp.opaque == 3                          # the first and only frame back
            assert len(seen) == 1 and seen[0].is_oneway
            await stream.aclose()
    rt.run(main)


def test_client_invoke_oneway(rt):
    async def main():
        got = trio.Event()

        async def record(conn, cmd):
            assert cmd.is_oneway and cmd.ext_fields == {"commitOffset": "5"}
            got.set()

        async with rt.server() as srv, RemotingClient() as client:
            srv.register(RequestCode.UPDATE_CONSUMER_OFFSET, record)
            await client.invoke_oneway(f"127.0.0.1:{srv.port}",
                                       RemotingCommand.request(RequestCode.UPDATE_CONSUMER_OFFSET, {"commitOffset": "5"}))
            await got.wait()
    rt.run(main)


def test_handler_exception_answers_system_error_with_the_message(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            resp = await client.invoke(addr, RemotingCommand.request(rt.FAIL))
            assert resp.code == ResponseCode.SYSTEM_ERROR and resp.remark == "boom"
            assert (await client.invoke(addr, RemotingCommand.request(rt.ECHO))).code == 0

            async def bad_return(conn, cmd):
                return "not a command"

            async def unencodable(conn, cmd):
                return cmd.create_response(ext_fields={"k" * 40000: "v"})

            srv.register(50, bad_return)
            srv.register(51, unencodable)
            resp = await client.invoke(addr, RemotingCommand.request(50))
            assert resp.code == ResponseCode.SYSTEM_ERROR and "str" in resp.remark
            resp = await client.invoke(addr, RemotingCommand.request(51, serialize_type=1))
            assert resp.code == ResponseCode.SYSTEM_ERROR and "cannot encode" in resp.remark
    rt.run(main)


def test_in_flight_bound_answers_system_busy(rt):
    async def main():
        release = trio.Event()
        entered = 0

        async def gated(conn, cmd):
            nonlocal entered
            entered += 1
            await release.wait()
            return cmd.create_response()

        async with rt.server(max_inflight=2) as srv:
            srv.register(60, gated)
            stream = await rt.raw(srv.port)
            await stream.send_all(b"".join(RemotingCommand(60, opaque=i).encode() for i in (1, 2, 3)))
            buf = bytearray()
            busy = await rt.read_frame(stream, buf)
            assert busy.opaque == 3 and busy.code == ResponseCode.SYSTEM_BUSY and "[OVERLOAD]" in busy.remark
            with trio.fail_after(2):
                while entered < 2:                           # the two admitted requests reach the handler
                    await trio.sleep(0.01)
            await trio.sleep(0.05)
            assert entered == 2
            release.set()
            answers = {(await rt.read_frame(stream, buf)).opaque for _ in range(2)}
            assert answers == {1, 2}
            await stream.send_all(RemotingCommand(rt.ECHO, opaque=4).encode())
            assert (await rt.read_frame(stream, buf)).code == 0
            await stream.aclose()
    rt.run(main)


def test_server_calls_the_client_back_on_its_connection(rt):
    async def main():
        notified = trio.Event()

        async def heartbeat(conn: Connection, cmd):
            await conn.send_oneway(RemotingCommand.request(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED,
                                                           {"consumerGroup": "G"}))
            info = await conn.send_request(RemotingCommand.request(RequestCode.GET_CONSUMER_RUNNING_INFO,
                                                                   {"consumerGroup": "G"}), 2000)
            return cmd.create_response(body=bytes(info.body), remark=conn.remote_addr)

        async def running_info(conn, cmd):
            return cmd.create_response(body=b'{"properties":{}}')

        async def ids_changed(conn, cmd):
            assert cmd.is_oneway and cmd.ext_fields["consumerGroup"] == "G"
            notified.set()

        async with rt.server() as srv, RemotingClient() as client:
            srv.register(RequestCode.HEART_BEAT, heartbeat)
            client.register(RequestCode.GET_CONSUMER_RUNNING_INFO, running_info)
            client.register(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, ids_changed)
            addr = f"127.0.0.1:{srv.port}"
            resp = await client.invoke(addr, RemotingCommand.request(RequestCode.HEART_BEAT), 3000)
            assert bytes(resp.body) == b'{"properties":{}}'
            local = client.connection_for(addr).local_address
            assert resp.remark == f"{local[0]}:{local[1]}"
            await notified.wait()
            (conn,) = srv.connections
            resp = await conn.send_request(RemotingCommand.request(RequestCode.CONSUME_MESSAGE_DIRECTLY), 2000)
            assert resp.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED   # the client has no handler for it
    rt.run(main)


def test_vip_port_served_by_the_same_handlers(rt):
    async def main():
        async with rt.server(vip_port=0) as srv, RemotingClient() as client:
            assert srv.vip_port and srv.vip_port != srv.port
            for port in (srv.port, srv.vip_port):
                resp = await client.invoke(f"127.0.0.1:{port}", RemotingCommand.request(rt.ECHO, {"p": str(port)}))
                assert resp.ext_fields == {"p": str(port)}
    rt.run(main)


def test_connect_and_close_hooks(rt):
    async def main():
        events: list[tuple[str, str]] = []
        closed = trio.Event()

        async def on_close(conn):
            events.append(("close", conn.close_reason))
            closed.set()

        async with rt.server() as srv:
            srv.add_connect_hook(lambda conn: events.append(("open", conn.remote_addr)))
            srv.add_close_hook(on_close)
            srv.add_close_hook(lambda conn: 1 / 0)            # a failing hook is logged, not fatal
            stream = await rt.raw(srv.port)
            await stream.send_all(RemotingCommand(rt.ECHO, opaque=1).encode())
            await rt.read_frame(stream, bytearray())
            local = stream.socket.getsockname()
            await stream.aclose()
            await closed.wait()
            assert events == [("open", f"{local[0]}:{local[1]}"), ("close", "peer closed the connection")]
            assert not srv.connections
    rt.run(main)


def test_idle_connections_are_dropped(rt):
    async def main():
        async with rt.server(idle_timeout=0.2) as srv:
            stream = await rt.raw(srv.port)
            assert await rt.expect_eof(stream, 3.0)
    rt.run(main)


def test_max_frame_is_configurable_and_closes_only_that_connection(rt, caplog):
    async def main():
        async with rt.server(max_frame=1024) as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            other = await rt.raw(srv.port)
            try:
                await client.invoke(addr, RemotingCommand.request(rt.ECHO, body=b"x" * 2000), 2000)
                raise AssertionError("an oversized frame must close the connection")
            except RemotingConnectError:
                pass
            await other.send_all(RemotingCommand(rt.ECHO, opaque=9, body=b"y" * 900).encode())
            assert (await rt.read_frame(other, bytearray())).opaque == 9
            assert (await client.invoke(addr, RemotingCommand.request(rt.ECHO), 2000)).code == 0
            await other.aclose()
    with caplog.at_level(logging.WARNING, logger="rmq_remoting"):
        rt.run(main)
    assert any("malformed frame" in r.getMessage() and "exceeds the limit of 1024" in r.getMessage()
               for r in caplog.records)


def test_server_close_ends_connections(rt):
    async def main():
        async with trio.open_nursery() as nursery:
            from rmq_remoting import RemotingServer
            srv = RemotingServer()
            await nursery.start(srv.serve)
            stream = await rt.raw(srv.port)
            await stream.send_all(RemotingCommand(rt.ECHO, opaque=1).encode())
            assert (await rt.read_frame(stream, bytearray())).code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
            srv.close()
            assert await rt.expect_eof(stream)
        try:
            await trio.open_tcp_stream("127.0.0.1", srv.port)
            raise AssertionError("listener still open")
        except OSError:
            pass
    rt.run(main)


def test_connection_over_a_stream_without_socket(rt):
    """Connection also runs over any trio Stream (the feed path), here an in-memory pair."""
    async def main():
        left, right = trio.testing.memory_stream_pair()
        table = HandlerTable()

        async def double(conn, cmd):
            return cmd.create_response(body=bytes(cmd.body) * 2)

        table.register(70, double)
        a = Connection(left, HandlerTable())
        b = Connection(right, table)
        assert a.remote_addr == "<stream>"
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            resp = await a.send_request(RemotingCommand.request(70, body=b"ab"), 2000)
            assert bytes(resp.body) == b"abab"
            big = bytes(range(256)) * 1000
            resp = await a.send_request(RemotingCommand.request(70, body=big), 2000)
            assert bytes(resp.body) == big * 2
            a.close("done")
        assert a.closed and a.close_reason == "done"
        assert "closed: done" in repr(a)
    rt.run(main)


def test_raw_frame_helper_matches_codec(rt):
    cmd = RemotingCommand(1, opaque=2)
    header = cmd.encode_header()
    assert rt.frame(header) == cmd.encode()
    assert struct.unpack(">i", rt.frame(b"h", b"b")[:4]) == (6,)


def test_a_peer_that_never_reads_is_held_by_backpressure(rt):
    """Replies pile up to the write queue's high-water mark, then handlers, the in-flight bound and
    finally the reader stop: the peer's sends block instead of the server's memory growing."""
    from rmq_remoting.connection import WRITE_HIGH_WATER

    async def main():
        body = b"b" * 65536
        request = RemotingCommand(rt.ECHO, opaque=1, body=body).encode()
        async with rt.server(max_inflight=8) as srv:
            sock = trio.socket.socket()
            await sock.connect(("127.0.0.1", srv.port))
            frames_sent, offset = 0, 0
            while True:                                    # send until the server stops reading
                with trio.move_on_after(0.5):
                    offset += await sock.send(memoryview(request)[offset:])
                    if offset == len(request):
                        frames_sent, offset = frames_sent + 1, 0
                    continue
                break
            assert frames_sent > 8
            (conn,) = srv.connections
            assert conn.inflight <= 8
            assert conn.write_queue_bytes <= WRITE_HIGH_WATER + 9 * (len(request) + 256)
            frames_sent += offset > 0
            answers = 0
            stream = trio.SocketStream(sock)
            async with trio.open_nursery() as nursery:
                async def finish_sending():
                    if offset:
                        await stream.send_all(memoryview(request)[offset:])
                nursery.start_soon(finish_sending)
                buf = bytearray()
                while answers < frames_sent:
                    resp = await rt.read_frame(stream, buf)
                    assert resp.code in (ResponseCode.SUCCESS, ResponseCode.SYSTEM_BUSY)
                    answers += 1
            await stream.aclose()
    rt.run(main, timeout=30)
