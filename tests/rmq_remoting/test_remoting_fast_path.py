"""The connection's fast paths keep its guarantees.

Handlers run inline in the reader until they block, and a blocked handler keeps its task while reading moves
to a new one; callers park without an Event or a cancel scope and one timer per connection enforces their
deadlines; the idle timeout is a watchdog task. These tests pin what must not change because of that:
requests behind a blocked one in the same read are answered first, replies leave in completion order, a
handler may call the peer back, timeouts stay exact when a short one follows a long one, a cancelled caller
leaves nothing behind, and traffic keeps an idle-limited connection open. The JSON header fast paths
(msgspec decode, direct orjson encode) must give exactly what the tolerant decoder and header_dict give.
"""
from __future__ import annotations

import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from rmq_remoting import RemotingClient, RemotingCommand, RemotingTimeoutError, RequestCode, ResponseCode
from rmq_remoting.connection import Connection
from rmq_remoting.errors import FrameError


def test_requests_behind_a_blocked_handler_in_the_same_read_are_answered_first(rt):
    async def main():
        async with rt.server() as srv:
            stream = await rt.raw(srv.port)
            batch = [RemotingCommand(rt.SLOW, opaque=1, ext_fields={"sleep": "3"}),
                     RemotingCommand(rt.ECHO, opaque=2),
                     RemotingCommand(rt.ECHO, opaque=3, body=b"three")]
            await stream.send_all(b"".join(cmd.encode() for cmd in batch))     # one write, one read
            buf = bytearray()
            start = trio.current_time()
            first = [await rt.read_frame(stream, buf) for _ in range(2)]
            assert [c.opaque for c in first] == [2, 3] and bytes(first[1].body) == b"three"
            assert trio.current_time() - start < 2.5          # not behind the 3 s handler
            slow = await rt.read_frame(stream, buf)
            assert slow.opaque == 1 and slow.code == ResponseCode.SUCCESS
            await stream.aclose()
    rt.run(main)


def test_handlers_that_never_block_run_in_the_reader_and_blocking_ones_get_their_own_task(rt):
    async def main():
        tasks: dict[int, object] = {}

        async def quick(conn, cmd):
            tasks[cmd.opaque] = trio.lowlevel.current_task()
            return cmd.create_response()

        async def blocking(conn, cmd):
            await trio.sleep(0.05)
            tasks[cmd.opaque] = trio.lowlevel.current_task()
            return cmd.create_response()

        async with rt.server() as srv:
            srv.register(80, quick)
            srv.register(81, blocking)
            stream = await rt.raw(srv.port)
            await stream.send_all(b"".join(RemotingCommand(80, opaque=i).encode() for i in (1, 2, 3)))
            buf = bytearray()
            assert sorted([(await rt.read_frame(stream, buf)).opaque for _ in range(3)]) == [1, 2, 3]
            assert tasks[1] is tasks[2] is tasks[3]              # no task per request
            reader = tasks[1]
            await stream.send_all(RemotingCommand(81, opaque=4).encode() + RemotingCommand(80, opaque=5).encode())
            assert sorted([(await rt.read_frame(stream, buf)).opaque for _ in range(2)]) == [4, 5]
            assert tasks[4] is reader                           # the blocked handler kept the reader's task
            assert tasks[5] is not reader                       # ... and reading went on in a new one
            await stream.send_all(RemotingCommand(80, opaque=6).encode())
            assert (await rt.read_frame(stream, buf)).opaque == 6
            assert tasks[6] is tasks[5]
            await stream.aclose()
    rt.run(main)


def test_replies_leave_in_completion_order(rt):
    """Four requests held by the test and released in reverse: each answer arrives as soon as its handler
    finishes, not behind the earlier requests (no sleeps: the test decides the completion order)."""
    GATED = 77

    async def main():
        gates = {k: trio.Event() for k in "abcd"}
        waiting: set[str] = set()
        all_waiting = trio.Event()

        async def gated(conn, cmd):
            key = cmd.ext_fields["k"]
            waiting.add(key)
            if len(waiting) == len(gates):
                all_waiting.set()
            await gates[key].wait()
            return cmd.create_response(ext_fields={"k": key})

        async with rt.server() as srv, RemotingClient() as client:
            srv.register(GATED, gated)
            addr = f"127.0.0.1:{srv.port}"
            done: list[str] = []
            arrived = {k: trio.Event() for k in "abcd"}

            async def call(key: str):
                resp = await client.invoke(addr, RemotingCommand.request(GATED, {"k": key}), 5000)
                done.append(resp.ext_fields["k"])
                arrived[key].set()

            async with trio.open_nursery() as nursery:
                for key in "abcd":
                    nursery.start_soon(call, key)
                await all_waiting.wait()
                for key in "dcba":
                    gates[key].set()
                    await arrived[key].wait()
            assert done == ["d", "c", "b", "a"]
            assert len(srv.connections) == 1
    rt.run(main)


@pytest.mark.parametrize("urgent", [True, False])
def test_tasks_woken_as_urgent_run_before_the_readers_replies_are_written(rt, urgent):
    """A handler running inline wakes a task (as a send wakes a held pull); with ``let_woken_tasks_reply_first``
    that task runs while the handler's reply is still queued, without it only after the reply was written."""
    from rmq_remoting.connection import let_woken_tasks_reply_first

    WAKER = 78

    async def main():
        woken = trio.Event()
        reply_queued_when_woken: list[bool] = []

        async def waker(conn, cmd):
            woken.set()
            if urgent:
                let_woken_tasks_reply_first()
            return cmd.create_response()

        async with rt.server() as srv:
            srv.register(WAKER, waker)

            async def sleeper():
                await woken.wait()
                (conn,) = srv.connections
                reply_queued_when_woken.append(conn.write_queue_bytes > 0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sleeper)
                stream = await rt.raw(srv.port)
                await stream.send_all(RemotingCommand(WAKER, opaque=9).encode())
                assert (await rt.read_frame(stream, bytearray())).opaque == 9
            assert reply_queued_when_woken == [urgent]
            await stream.aclose()
    rt.run(main)


def test_a_handler_that_calls_the_peer_back_before_answering(rt):
    """The first step of the handler runs in the reader; the call back blocks, so reading must move on."""
    async def main():
        async def ask_back(conn: Connection, cmd):
            answers = [await conn.send_request(RemotingCommand.request(RequestCode.GET_CONSUMER_RUNNING_INFO,
                                                                       {"n": str(i)}), 2000) for i in range(3)]
            return cmd.create_response(body=b",".join(bytes(a.body) for a in answers))

        async def running_info(conn, cmd):
            return cmd.create_response(body=cmd.ext_fields["n"].encode())

        async with rt.server() as srv, RemotingClient() as client:
            srv.register(RequestCode.HEART_BEAT, ask_back)
            client.register(RequestCode.GET_CONSUMER_RUNNING_INFO, running_info)
            addr = f"127.0.0.1:{srv.port}"
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(client.invoke, addr, RemotingCommand.request(RequestCode.HEART_BEAT), 3000)
            resp = await client.invoke(addr, RemotingCommand.request(RequestCode.HEART_BEAT), 3000)
            assert bytes(resp.body) == b"0,1,2"
            (conn,) = srv.connections
            assert conn.inflight == 0
    rt.run(main)


def test_a_non_coroutine_awaitable_handler_is_served(rt):
    class Deferred:
        def __init__(self, conn, cmd):
            self.conn, self.cmd = conn, cmd

        def __await__(self):
            return self._answer().__await__()

        async def _answer(self):
            await trio.sleep(0)
            return self.cmd.create_response(remark="deferred")

    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            srv.register(90, Deferred)
            resp = await client.invoke(f"127.0.0.1:{srv.port}", RemotingCommand.request(90), 2000)
            assert resp.code == ResponseCode.SUCCESS and resp.remark == "deferred"
    rt.run(main)


def test_a_short_timeout_after_a_long_one_fires_on_time(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.invoke, addr, RemotingCommand.request(rt.SLOW, {"sleep": "4"}), 10_000)
                await trio.sleep(0.05)
                start = trio.current_time()
                with pytest.raises(RemotingTimeoutError):
                    await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "3"}), 150)
                elapsed = trio.current_time() - start
                assert 0.14 <= elapsed < 2.5                     # its own 150 ms, not the long call's 10 s
                conn = client.connection_for(addr)
                assert conn is not None and conn.pending == 1        # the long call is still waiting
            assert conn.pending == 0 and not conn.closed
    rt.run(main)


def test_a_cancelled_caller_leaves_no_pending_call_and_the_late_answer_is_dropped(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            with trio.move_on_after(0.1) as scope:
                await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "0.3"}), 5000)
            assert scope.cancelled_caught
            conn = client.connection_for(addr)
            assert conn is not None and conn.pending == 0
            await trio.sleep(0.4)                                    # the answer arrives and is dropped
            resp = await client.invoke(addr, RemotingCommand.request(rt.ECHO, {"k": "v"}), 2000)
            assert resp.ext_fields == {"k": "v"} and client.connection_for(addr) is conn
    rt.run(main)


def test_pending_calls_all_fail_at_once_when_the_connection_closes(rt):
    async def main():
        async with rt.server() as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            await client.invoke(addr, RemotingCommand.request(rt.ECHO), 2000)
            conn = client.connection_for(addr)
            errors: list[BaseException] = []

            async def call():
                try:
                    await client.invoke(addr, RemotingCommand.request(rt.SLOW, {"sleep": "5"}), 10_000)
                except Exception as exc:                              # noqa: BLE001 - collected for the assert
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(call)
                while conn.pending < 5:                          # bounded by rt.run's deadline
                    await trio.sleep(0.01)
                start = trio.current_time()
                conn.close("test")
            assert trio.current_time() - start < 2.5             # at once, not after the 5 s handlers
            assert len(errors) == 5 and all("closed (test)" in str(e) for e in errors)
    rt.run(main)


def test_traffic_keeps_an_idle_limited_connection_open(rt):
    async def main():
        async with rt.server(idle_timeout=0.3) as srv, RemotingClient() as client:
            addr = f"127.0.0.1:{srv.port}"
            await client.invoke(addr, RemotingCommand.request(rt.ECHO), 2000)
            conn = client.connection_for(addr)
            for _ in range(8):                                       # 0.8 s of traffic, 0.1 s apart
                await trio.sleep(0.1)
                await client.invoke(addr, RemotingCommand.request(rt.ECHO), 2000)
            assert client.connection_for(addr) is conn
            with trio.fail_after(2):
                await conn.wait_closed()                              # silence: dropped by the server
            assert conn.closed
    rt.run(main)


# -- the JSON header fast path decodes exactly as the tolerant path ------------------------------------------

_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(1 << 40), max_value=1 << 40),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_header_value = st.one_of(_json_scalar, st.lists(_json_scalar, max_size=2),
                          st.dictionaries(st.text(max_size=4), _json_scalar, max_size=2))
_header = st.fixed_dictionaries({}, optional={
    "code": _header_value, "flag": _header_value, "opaque": _header_value, "version": _header_value,
    "language": _header_value, "remark": _header_value, "serializeTypeCurrentRPC": _header_value,
    "extFields": st.one_of(_header_value, st.dictionaries(st.text(max_size=6), _json_scalar, max_size=4)),
    "unknown": _header_value})


@settings(max_examples=400, deadline=None)
@given(_header)
def test_json_fast_path_matches_the_tolerant_decoder(fields):
    header = orjson.dumps(fields)
    try:
        expected = RemotingCommand._from_json_tolerant(header)
    except FrameError:
        with pytest.raises(FrameError):
            RemotingCommand.from_frame(header, 0, None)
        return
    got = RemotingCommand.from_frame(header, 0, None)
    assert got == expected and type(got.ext_fields) is dict
    assert (got.code, got.flag, got.opaque, got.version) == (expected.code, expected.flag, expected.opaque,
                                                              expected.version)


@settings(max_examples=300, deadline=None)
@given(code=st.integers(min_value=-(1 << 31), max_value=(1 << 31) - 1),
       ext=st.dictionaries(st.text(max_size=6), st.one_of(st.text(max_size=6), st.integers(), st.booleans()),
                           max_size=4),
       remark=st.one_of(st.none(), st.text(max_size=6)), language=st.sampled_from(["JAVA", "CPP", "GO"]))
def test_json_encode_fast_path_matches_header_dict(code, ext, remark, language):
    cmd = RemotingCommand(code, opaque=code & 0xFFFF, flag=1, remark=remark, ext_fields=ext, language=language)
    assert cmd.encode_header() == orjson.dumps(cmd.header_dict())
    enum_cmd = RemotingCommand(RequestCode.SEND_MESSAGE_V2, ext_fields=ext)
    assert enum_cmd.encode_header() == orjson.dumps(enum_cmd.header_dict())
