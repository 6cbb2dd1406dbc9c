"""Both sides of ``rmq bench remoting``: rmq's RemotingServer/RemotingClient and a bare trio echo of the same frames.

The servers run in a child process (``python -m rmq_cli.remoting_runners serve rmq|echo``), started by the
benchmark and ended when it closes the child's stdin (or kills it), so the server and the client each have a
core of a 2-core box, as a broker and its client would.  The clients run in the benchmark's own process.

The request is a SEND_MESSAGE_V2 as a Java producer sends it: twelve extFields under one-letter names (properties
with UNIQ_KEY, WAIT and TAGS), a body of ``--body-size`` bytes.  rmq's server answers it with a response carrying
the same extFields and body, so both directions carry frames of the request's size — exactly what the echo
server writes back.  The echo is the transport's ceiling for the same traffic: its server reads one
length-prefixed frame at a time and writes each one straight back with its own ``send_all``; its client writes
each request with its own ``send_all`` and matches nothing.  Everything rmq adds (header decode and encode,
handler dispatch, opaque matching, the writer) is the difference between the two.  A second, batched echo
(``echo-batch``: every whole frame of one read written back with one ``send_all``, the client refilling its
window with one ``send_all`` per read) shows the raw transport ceiling for the pipelined workload; it is reported
for information, not graded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio

from rmq_remoting import (
    RemotingClient,
    RemotingCommand,
    RemotingServer,
    RequestCode,
    SerializeType,
)
from rmq_remoting.connection import Connection

#: Response code the echo handler answers with (SUCCESS).
SUCCESS: Final = 0
#: How long a child server may take to report its port.
START_TIMEOUT: Final = 30.0
#: Per-call timeout of the rmq client; generous, a timeout would be a bug here.
CALL_TIMEOUT_MS: Final = 30_000.0
KINDS: Final = ("rmq", "echo", "echo-batch")


def build_request(body_size: int, serialize_type: int = SerializeType.JSON) -> RemotingCommand:
    """A SEND_MESSAGE_V2 request as a Java producer sends it (SendMessageRequestHeaderV2's one-letter fields)."""
    ext = {
        "a": "please_rename_unique_group_name",                 # producerGroup
        "b": "BenchmarkTest",                                   # topic
        "c": "TBW102",                                          # defaultTopic
        "d": "4",                                               # defaultTopicQueueNums
        "e": "3",                                               # queueId
        "f": "0",                                               # sysFlag
        "g": "1718000000123",                                   # bornTimestamp
        "h": "0",                                               # flag
        "i": "UNIQ_KEY\x017F0000012A3C18B4AAC27C6E4B000000\x02WAIT\x01true\x02TAGS\x01TagA\x02",  # properties
        "j": "0",                                               # reconsumeTimes
        "k": "false",                                           # unitMode
        "m": "false",                                           # batch
    }
    body = bytes((i * 31 + 7) & 0xFF for i in range(body_size))
    return RemotingCommand.request(RequestCode.SEND_MESSAGE_V2, ext, body or None, serialize_type=serialize_type)


# -- servers (child process) ----------------------------------------------------------------------------------


async def _echo_handler(conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
    """Answer with the request's extFields and body: a response frame of the request's size."""
    return cmd.create_response(SUCCESS, ext_fields=cmd.ext_fields, body=cmd.body)


async def serve_rmq(started: Callable[[int], None]) -> None:
    server = RemotingServer(0, host="127.0.0.1", idle_timeout=None)
    server.register(RequestCode.SEND_MESSAGE_V2, _echo_handler)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        started(server.port)


async def _echo_connection(stream: trio.SocketStream) -> None:
    """Read length-prefixed frames one at a time and write each one back as it is."""
    buf = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            pos = 0
            avail = len(buf)
            while avail - pos >= 4:
                end = pos + 4 + int.from_bytes(buf[pos:pos + 4], "big")
                if end > avail:
                    break
                await stream.send_all(buf[pos:end])
                pos = end
            if pos:
                del buf[:pos]
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def _echo_connection_batched(stream: trio.SocketStream) -> None:
    """Write back every whole frame of one read with a single ``send_all``: the transport's raw ceiling."""
    buf = bytearray()
    try:
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
            pos = 0
            avail = len(buf)
            while avail - pos >= 4:
                end = pos + 4 + int.from_bytes(buf[pos:pos + 4], "big")
                if end > avail:
                    break
                pos = end
            if pos:
                await stream.send_all(buf[:pos])
                del buf[:pos]
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def _serve_with(handler: Callable[[trio.SocketStream], Any], started: Callable[[int], None]) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners[:1])
        started(listeners[0].socket.getsockname()[1])


async def serve_echo(started: Callable[[int], None]) -> None:
    await _serve_with(_echo_connection, started)


async def serve_echo_batched(started: Callable[[int], None]) -> None:
    await _serve_with(_echo_connection_batched, started)


SERVERS: Final[dict[str, Callable[[Callable[[int], None]], Any]]] = {
    "rmq": serve_rmq, "echo": serve_echo, "echo-batch": serve_echo_batched}


async def _serve_until_stdin_closes(kind: str) -> None:
    def started(port: int) -> None:
        sys.stdout.write(f"port {port}\n")
        sys.stdout.flush()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(SERVERS[kind], started)
        # The benchmark closes our stdin when it is done (or dies): then stop.
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
        nursery.cancel_scope.cancel()


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmq_cli.remoting_runners")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("kind", choices=KINDS)
    args = parser.parse_args(argv)
    try:
        trio.run(_serve_until_stdin_closes, args.kind)
    except KeyboardInterrupt:
        pass
    return 0


# -- clients (benchmark process) ------------------------------------------------------------------------------


@dataclass
class RpcResult:
    """One client workload: requests answered, wall time, and per-request round trips (ping-pong only)."""

    requests: int
    seconds: float
    rtt_ns: list[int] = field(default_factory=list)

    @property
    def req_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    def rtt_us(self, quantile: float) -> float | None:
        if not self.rtt_ns:
            return None
        ordered = sorted(self.rtt_ns)
        index = min(len(ordered) - 1, max(0, round(quantile * (len(ordered) - 1))))
        return ordered[index] / 1000.0


@dataclass(frozen=True)
class Plan:
    """How long a workload runs: ``count`` requests, or as many as fit ``duration`` seconds."""

    count: int | None
    duration: float | None
    warmup: int = 2000

    def more(self, done: int, deadline: float) -> bool:
        if self.count is not None:
            return done < self.count
        return time.perf_counter() < deadline

    def deadline(self) -> float:
        return time.perf_counter() + (self.duration or 0.0)


async def rmq_ping_pong(port: int, request: RemotingCommand, plan: Plan) -> RpcResult:
    addr = f"127.0.0.1:{port}"
    async with RemotingClient() as client:
        for _ in range(plan.warmup):
            await client.invoke(addr, request, CALL_TIMEOUT_MS)
        rtts: list[int] = []
        clock = time.perf_counter_ns
        invoke = client.invoke
        done = 0
        start = time.perf_counter()
        deadline = plan.deadline()
        while plan.more(done, deadline):
            t0 = clock()
            response = await invoke(addr, request, CALL_TIMEOUT_MS)
            rtts.append(clock() - t0)
            if response.code != SUCCESS:
                raise RuntimeError(f"rmq answered {response!r}")
            done += 1
        seconds = time.perf_counter() - start
    return RpcResult(done, seconds, rtts)


async def rmq_pipelined(port: int, request: RemotingCommand, plan: Plan, inflight: int) -> RpcResult:
    """``inflight`` callers sharing one connection, each invoking in a loop."""
    addr = f"127.0.0.1:{port}"
    state = {"done": 0, "started": 0}

    async with RemotingClient() as client:
        await client.invoke(addr, request, CALL_TIMEOUT_MS)

        async def caller(limit: int | None, deadline: float) -> None:
            cmd = RemotingCommand(request.code, ext_fields=request.ext_fields, body=request.body,
                                  serialize_type=request.serialize_type)
            invoke = client.invoke
            while True:
                if limit is not None:
                    if state["started"] >= limit:
                        return
                    state["started"] += 1
                elif time.perf_counter() >= deadline:
                    return
                response = await invoke(addr, cmd, CALL_TIMEOUT_MS)
                if response.code != SUCCESS:
                    raise RuntimeError(f"rmq answered {response!r}")
                state["done"] += 1

        async with trio.open_nursery() as nursery:         # warm-up
            for _ in range(inflight):
                nursery.start_soon(caller, plan.warmup, 0.0)
        state["done"] = state["started"] = 0
        start = time.perf_counter()
        deadline = plan.deadline()
        async with trio.open_nursery() as nursery:
            for _ in range(inflight):
                nursery.start_soon(caller, plan.count, deadline)
        seconds = time.perf_counter() - start
    return RpcResult(state["done"], seconds)


class _FrameReader:
    """The echo client's receive side: counts whole length-prefixed frames."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def frames(self) -> int:
        """Wait for data; return how many whole frames it completed (0 = more data needed)."""
        data = await self.stream.receive_some(65536)
        if not data:
            raise EOFError("echo server closed the connection")
        buf = self.buf
        buf += data
        pos, avail, count = 0, len(buf), 0
        while avail - pos >= 4:
            end = pos + 4 + int.from_bytes(buf[pos:pos + 4], "big")
            if end > avail:
                break
            count += 1
            pos = end
        if pos:
            del buf[:pos]
        return count


async def echo_ping_pong(port: int, frame: bytes, plan: Plan) -> RpcResult:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        reader = _FrameReader(stream)

        async def one() -> None:
            await stream.send_all(frame)
            while not await reader.frames():
                pass

        for _ in range(plan.warmup):
            await one()
        rtts: list[int] = []
        clock = time.perf_counter_ns
        done = 0
        start = time.perf_counter()
        deadline = plan.deadline()
        while plan.more(done, deadline):
            t0 = clock()
            await one()
            rtts.append(clock() - t0)
            done += 1
        seconds = time.perf_counter() - start
    return RpcResult(done, seconds, rtts)


async def echo_pipelined(port: int, frame: bytes, plan: Plan, inflight: int) -> RpcResult:
    """A sender writing one frame per ``send_all`` while fewer than ``inflight`` are unanswered; a reader counting."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        reader = _FrameReader(stream)

        async def run(limit: int | None, duration: float) -> int:
            window = trio.Semaphore(inflight)
            counts = {"sent": 0, "done": 0}
            sending = True
            all_in = trio.Event()

            async def receiver() -> None:
                while True:
                    n = await reader.frames()
                    counts["done"] += n
                    for _ in range(n):
                        window.release()
                    if not sending and counts["done"] >= counts["sent"]:
                        all_in.set()
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver)
                deadline = time.perf_counter() + duration
                while counts["sent"] < limit if limit is not None else time.perf_counter() < deadline:
                    await window.acquire()
                    await stream.send_all(frame)
                    counts["sent"] += 1
                sending = False
                if counts["done"] >= counts["sent"]:
                    nursery.cancel_scope.cancel()
                else:
                    await all_in.wait()
            return counts["done"]

        await run(plan.warmup, 0.0)
        start = time.perf_counter()
        done = await run(plan.count, plan.duration or 0.0)
        seconds = time.perf_counter() - start
    return RpcResult(done, seconds)


async def echo_pipelined_batched(port: int, frame: bytes, plan: Plan, inflight: int) -> RpcResult:
    """Keep ``inflight`` frames outstanding, writing as many frames as were answered with one ``send_all``."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        reader = _FrameReader(stream)

        async def run(limit: int | None, duration: float) -> int:
            deadline = time.perf_counter() + duration
            first = inflight if limit is None else min(inflight, limit)
            await stream.send_all(frame * first)
            sent, done = first, 0
            while done < sent:
                n = await reader.frames()
                done += n
                more = n
                if limit is not None:
                    more = min(n, limit - sent)
                elif time.perf_counter() >= deadline:
                    more = 0
                if more > 0:
                    await stream.send_all(frame * more)
                    sent += more
            return done

        await run(plan.warmup, 0.0)
        start = time.perf_counter()
        done = await run(plan.count, plan.duration or 0.0)
        seconds = time.perf_counter() - start
    return RpcResult(done, seconds)


if __name__ == "__main__":
    raise SystemExit(child_main())
