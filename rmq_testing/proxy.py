"""A fault-injecting TCP proxy for tests: put it between two parts of a cluster and make the link misbehave.

    async with FaultProxy("127.0.0.1:10912") as proxy:     # inside a trio run
        slave_config = {"haMasterAddress": proxy.address}   # the slave now replicates through the proxy
        proxy.throttle(64 * 1024, Direction.TO_CLIENT)      # master -> slave at 64 KiB/s
        proxy.pause(Direction.TO_CLIENT)                    # stall without closing anything
        proxy.resume()
        proxy.cut()                                         # reset every current connection
        proxy.refuse()                                      # new connections are reset at once ...
        proxy.accept()                                      # ... until this

    with ThreadedFaultProxy(("127.0.0.1", 10912)) as proxy:   # from plain (non-trio) code: a loop in a thread
        proxy.throttle(64 * 1024)
        proxy.wait_until(lambda s: s.to_client.bytes_forwarded > 1_000_000, timeout_s=10)

The proxy listens on a free loopback port (``address``) and opens one connection to the target for every
connection it accepts. Each connection has two directions, ``TO_TARGET`` (what the client sends) and
``TO_CLIENT`` (what the target answers); faults are set per direction and apply to every connection, current
and future:

* ``throttle(bytes_per_s)`` — one token bucket per direction shared by all connections, without burst: n bytes
  leave no sooner than n / rate seconds after the previous ones (``None`` lifts it);
* ``set_latency(ms)`` — every chunk is held this long after it was read before it is written;
* ``pause()`` / ``resume()`` — stop writing (and, once the small buffer is full, reading: the sender feels TCP
  back-pressure) without closing anything;
* ``cut()`` — close every current connection on both sides, with a TCP reset by default (what a crashed peer
  or a dropped route looks like), or with FIN (``reset=False``);
* ``refuse()`` / ``accept()`` — while refusing, a new connection is reset as soon as it is accepted (the
  listening port stays bound, so nobody else can take it between refuse and accept).

Buffers are bounded: at most ``PIPE_CHUNKS`` chunks of at most ``chunk_bytes`` wait inside the proxy per
direction of a connection. Every task belongs to the proxy's nursery; leaving the ``async with`` (or
``close()``) ends them all and closes every socket. ``stats()`` gives the proxy's own accounting (bytes read
and forwarded per direction, connections accepted, refused, cut, failed to reach the target), which tests
should prefer to wall-clock measurements.
"""
from __future__ import annotations

import enum
import math
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import trio

__all__ = ["Direction", "DirectionStats", "FaultProxy", "ProxyStats", "ThreadedFaultProxy"]

#: Largest chunk read from one side before it is passed to the other.
DEFAULT_CHUNK_BYTES: Final = 64 * 1024
#: Chunks that may wait inside the proxy per direction of one connection (bounds memory, gives back-pressure).
PIPE_CHUNKS: Final = 8
#: A throttled direction reads at most this much of a second's allowance at a time, so the rate is smooth.
THROTTLE_SLICE_S: Final = 0.05
CONNECT_TIMEOUT_S: Final = 5.0
#: How long the threaded proxy waits for its loop to start or stop.
THREAD_DEADLINE_S: Final = 10.0
#: SO_LINGER on, timeout 0: close() sends a TCP reset instead of FIN.
_LINGER_RESET: Final = struct.pack("ii", 1, 0)


class Direction(enum.Enum):
    """Which way bytes flow through a proxied connection."""

    #: From the connecting client to the target (requests; for HA: the slave's offset reports).
    TO_TARGET = "to_target"
    #: From the target back to the client (answers; for HA: the master's commitlog stream).
    TO_CLIENT = "to_client"


def _directions(direction: Direction | None) -> tuple[Direction, ...]:
    return tuple(Direction) if direction is None else (direction,)


def _parse_target(target: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, tuple):
        host, port = target
    else:
        host, sep, port_text = target.rpartition(":")
        if not sep or not port_text.isdigit():
            raise ValueError(f"target must be 'host:port' or (host, port), got {target!r}")
        port = int(port_text)
    host = host.strip("[]")
    if not host or not 0 < int(port) <= 65535:
        raise ValueError(f"bad proxy target {target!r}")
    return host, int(port)


@dataclass(frozen=True)
class DirectionStats:
    """What one direction has done so far (all connections together)."""

    bytes_read: int
    bytes_forwarded: int
    paused: bool
    bytes_per_s: float | None
    latency_ms: float


@dataclass(frozen=True)
class ProxyStats:
    """A snapshot of the proxy's accounting."""

    to_target: DirectionStats
    to_client: DirectionStats
    #: Connections accepted and forwarded (refused ones not included).
    connections_accepted: int
    connections_refused: int
    #: Connections ended by ``cut()``.
    connections_cut: int
    #: Accepted connections whose target could not be reached (they were reset).
    target_connect_failures: int
    #: Connections open right now.
    active_connections: int
    refusing: bool

    def direction(self, direction: Direction) -> DirectionStats:
        return self.to_target if direction is Direction.TO_TARGET else self.to_client


class _Faults:
    """The faults and counters of one direction; lives in the proxy's trio thread."""

    def __init__(self) -> None:
        self.bytes_per_s: float | None = None
        self.latency_s = 0.0
        self.bytes_read = 0
        self.bytes_forwarded = 0
        #: Set while bytes may flow; cleared by pause().
        self.flowing = trio.Event()
        self.flowing.set()
        #: Earliest time the token bucket lets the next byte out.
        self.next_free_s = -math.inf

    @property
    def paused(self) -> bool:
        return not self.flowing.is_set()

    def read_size(self, chunk_bytes: int) -> int:
        if self.bytes_per_s is None:
            return chunk_bytes
        return max(1, min(chunk_bytes, int(self.bytes_per_s * THROTTLE_SLICE_S)))

    async def wait_for_bucket(self, nbytes: int) -> None:
        """Sleep until the token bucket lets ``nbytes`` out, and take them."""
        if self.bytes_per_s is None:
            return
        start = max(trio.current_time(), self.next_free_s)
        self.next_free_s = start + nbytes / self.bytes_per_s
        await trio.sleep_until(start)

    def snapshot(self) -> DirectionStats:
        return DirectionStats(self.bytes_read, self.bytes_forwarded, self.paused, self.bytes_per_s,
                              self.latency_s * 1000.0)


class _Connection:
    """One accepted client and its connection to the target."""

    def __init__(self, client: trio.SocketStream) -> None:
        self.client = client
        self.target: trio.SocketStream | None = None
        self.scope = trio.CancelScope()
        self.reset_on_close = False

    def abort(self, *, reset: bool) -> None:
        self.reset_on_close = self.reset_on_close or reset
        self.scope.cancel()

    async def close(self) -> None:
        for stream in (self.client, self.target):
            if stream is None:
                continue
            if self.reset_on_close:
                _set_reset_on_close(stream)
            with trio.CancelScope(shield=True):
                await stream.aclose()


def _set_reset_on_close(stream: trio.SocketStream) -> None:
    try:
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    except OSError:
        pass                # already closed by the peer: nothing left to reset


class FaultProxy:
    """A TCP proxy to ``target`` with faults switchable at run time; ``async with`` it inside a trio run.

    Control methods (``throttle``, ``pause``, ``cut``, ...) are plain functions to call from the proxy's trio
    run; from another thread use ``ThreadedFaultProxy``.
    """

    def __init__(self, target: str | tuple[str, int], *, listen_host: str = "127.0.0.1", listen_port: int = 0,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> None:
        if chunk_bytes <= 0:
            raise ValueError(f"chunk_bytes must be positive, got {chunk_bytes}")
        self.target = _parse_target(target)
        self.listen_host = listen_host
        self._listen_port = listen_port
        self.chunk_bytes = chunk_bytes
        self._faults = {d: _Faults() for d in Direction}
        self._connections: set[_Connection] = set()
        self._refusing = False
        self._accepted = 0
        self._refused = 0
        self._cut = 0
        self._connect_failures = 0
        self._listener: trio.SocketListener | None = None
        self._nursery: trio.Nursery | None = None
        #: Notified on every change of the accounting, for ``wait_until``.
        self._changed = trio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._listener is None:
            raise RuntimeError("the proxy is not listening yet")
        return self._listener.socket.getsockname()[1]

    @property
    def address(self) -> str:
        """``host:port`` clients should connect to instead of the target."""
        return f"{self.listen_host}:{self.port}"

    async def __aenter__(self) -> FaultProxy:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        try:
            await self._nursery.start(self._serve)
        except BaseException as exc:
            self._nursery.cancel_scope.cancel()
            await self._nursery_manager.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(self, *exc: Any) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        return await self._nursery_manager.__aexit__(*exc)

    async def _serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self._listen_port, host=self.listen_host)
        assert len(listeners) == 1, "one host gives one listener"
        self._listener = listeners[0]
        async with self._listener, trio.open_nursery() as connections:
            task_status.started()
            while True:
                client = await self._listener.accept()
                if self._refusing:
                    self._refused += 1
                    _set_reset_on_close(client)
                    await client.aclose()
                    self._notify()
                    continue
                self._accepted += 1
                connections.start_soon(self._handle, _Connection(client))

    # -- faults --------------------------------------------------------------------------------------------

    def throttle(self, bytes_per_s: float | None, direction: Direction | None = None) -> None:
        """Limit ``direction`` (default both) to ``bytes_per_s`` over all connections; None = unlimited."""
        if bytes_per_s is not None and not bytes_per_s > 0:
            raise ValueError(f"bytes_per_s must be positive or None, got {bytes_per_s}")
        for d in _directions(direction):
            faults = self._faults[d]
            faults.bytes_per_s = bytes_per_s
            faults.next_free_s = -math.inf      # a new rate starts now, not after the old schedule
        self._notify()

    def set_latency(self, latency_ms: float, direction: Direction | None = None) -> None:
        """Hold every chunk ``latency_ms`` before forwarding it (default both directions); 0 = none."""
        if latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {latency_ms}")
        for d in _directions(direction):
            self._faults[d].latency_s = latency_ms / 1000.0
        self._notify()

    def pause(self, direction: Direction | None = None) -> None:
        """Stop forwarding ``direction`` (default both); connections stay open."""
        for d in _directions(direction):
            faults = self._faults[d]
            if faults.flowing.is_set():
                faults.flowing = trio.Event()
        self._notify()

    def resume(self, direction: Direction | None = None) -> None:
        """Forward ``direction`` (default both) again."""
        for d in _directions(direction):
            self._faults[d].flowing.set()
        self._notify()

    def cut(self, *, reset: bool = True) -> int:
        """Close every current connection on both sides (TCP reset unless ``reset=False``); returns how many."""
        victims = list(self._connections)
        for conn in victims:
            conn.abort(reset=reset)
        self._cut += len(victims)
        self._notify()
        return len(victims)

    def refuse(self) -> None:
        """Reset new connections as soon as they are accepted (current ones are not touched)."""
        self._refusing = True
        self._notify()

    def accept(self) -> None:
        """Forward new connections again."""
        self._refusing = False
        self._notify()

    def heal(self) -> None:
        """Lift every fault: no throttle, no latency, flowing, accepting."""
        self.throttle(None)
        self.set_latency(0)
        self.resume()
        self.accept()

    # -- accounting ------------------------------------------------------------------------------------------

    def stats(self) -> ProxyStats:
        return ProxyStats(
            to_target=self._faults[Direction.TO_TARGET].snapshot(),
            to_client=self._faults[Direction.TO_CLIENT].snapshot(),
            connections_accepted=self._accepted, connections_refused=self._refused, connections_cut=self._cut,
            target_connect_failures=self._connect_failures, active_connections=len(self._connections),
            refusing=self._refusing)

    async def wait_until(self, predicate: Callable[[ProxyStats], bool], timeout_s: float) -> ProxyStats:
        """Wait until ``predicate(stats())`` holds; TimeoutError after ``timeout_s`` with the last stats."""
        with trio.move_on_after(timeout_s):
            while True:
                stats = self.stats()
                if predicate(stats):
                    return stats
                changed = self._changed
                await changed.wait()
        raise TimeoutError(f"proxy condition not met within {timeout_s:g} s; last stats: {self.stats()}")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- forwarding ------------------------------------------------------------------------------------------

    async def _handle(self, conn: _Connection) -> None:
        self._connections.add(conn)
        self._notify()
        try:
            with conn.scope:
                try:
                    with trio.fail_after(CONNECT_TIMEOUT_S):
                        conn.target = await trio.open_tcp_stream(*self.target)
                except (OSError, trio.TooSlowError):
                    self._connect_failures += 1
                    conn.reset_on_close = True          # the client sees what it would see without the proxy
                    return
                try:
                    async with trio.open_nursery() as pumps:
                        pumps.start_soon(self._pump, conn.client, conn.target, self._faults[Direction.TO_TARGET])
                        pumps.start_soon(self._pump, conn.target, conn.client, self._faults[Direction.TO_CLIENT])
                except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    # One side went away abruptly: pass that on to the other side as a reset.
                    conn.reset_on_close = True
        finally:
            self._connections.discard(conn)
            await conn.close()
            self._notify()

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream, faults: _Faults) -> None:
        """Forward one direction of one connection until the source's EOF, then pass the EOF on."""
        send_chunks, receive_chunks = trio.open_memory_channel[tuple[float, bytes]](PIPE_CHUNKS)

        async def read_side() -> None:
            async with send_chunks:
                while True:
                    data = await source.receive_some(faults.read_size(self.chunk_bytes))
                    if not data:
                        return
                    faults.bytes_read += len(data)
                    self._notify()
                    await send_chunks.send((trio.current_time() + faults.latency_s, data))

        async def write_side() -> None:
            async with receive_chunks:
                async for due_s, data in receive_chunks:
                    await trio.sleep_until(due_s)
                    await faults.wait_for_bucket(len(data))
                    while faults.paused:            # pause() may come while we slept
                        await faults.flowing.wait()
                    await sink.send_all(data)
                    faults.bytes_forwarded += len(data)
                    self._notify()
            try:
                await sink.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass        # the other side is gone already; the connection closes anyway

        async with trio.open_nursery() as both:
            both.start_soon(read_side)
            both.start_soon(write_side)


class ThreadedFaultProxy:
    """``FaultProxy`` for code outside trio: its own trio loop in a background thread.

    ``start()`` returns once the proxy listens (or raises what stopped it); ``close()`` ends every connection,
    stops the loop and joins the thread. The control methods are those of FaultProxy, run in the loop.
    """

    def __init__(self, target: str | tuple[str, int], **options: Any) -> None:
        self._proxy = FaultProxy(target, **options)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    @property
    def address(self) -> str:
        return self._proxy.address

    @property
    def port(self) -> int:
        return self._proxy.port

    @property
    def target(self) -> tuple[str, int]:
        return self._proxy.target

    def start(self) -> ThreadedFaultProxy:
        if self._thread is not None:
            raise RuntimeError("the proxy was started already")
        self._thread = threading.Thread(target=self._run, name=f"fault-proxy->{self._proxy.target[1]}", daemon=True)
        self._thread.start()
        if not self._ready.wait(THREAD_DEADLINE_S):
            raise RuntimeError(f"the proxy did not start within {THREAD_DEADLINE_S:g} s")
        if self._error is not None:
            self._thread.join(THREAD_DEADLINE_S)
            raise RuntimeError(f"the proxy did not start: {self._error!r}") from self._error
        return self

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:      # reported by start(); a thread cannot raise to its creator
            self._error = exc
        finally:
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with self._proxy:
            self._ready.set()
            await self._stop.wait()

    def close(self) -> None:
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        assert self._stop is not None and self._token is not None
        try:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        except trio.RunFinishedError:
            pass
        thread.join(THREAD_DEADLINE_S)
        if thread.is_alive():
            raise RuntimeError(f"the proxy thread did not stop within {THREAD_DEADLINE_S:g} s")
        if self._error is not None:
            raise RuntimeError(f"the proxy failed while running: {self._error!r}") from self._error

    def __enter__(self) -> ThreadedFaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._token is None or self._thread is None or not self._thread.is_alive():
            raise RuntimeError("the proxy is not running")
        return trio.from_thread.run_sync(lambda: fn(*args, **kwargs), trio_token=self._token)

    def throttle(self, bytes_per_s: float | None, direction: Direction | None = None) -> None:
        self._call(self._proxy.throttle, bytes_per_s, direction)

    def set_latency(self, latency_ms: float, direction: Direction | None = None) -> None:
        self._call(self._proxy.set_latency, latency_ms, direction)

    def pause(self, direction: Direction | None = None) -> None:
        self._call(self._proxy.pause, direction)

    def resume(self, direction: Direction | None = None) -> None:
        self._call(self._proxy.resume, direction)

    def cut(self, *, reset: bool = True) -> int:
        return self._call(self._proxy.cut, reset=reset)

    def refuse(self) -> None:
        self._call(self._proxy.refuse)

    def accept(self) -> None:
        self._call(self._proxy.accept)

    def heal(self) -> None:
        self._call(self._proxy.heal)

    def stats(self) -> ProxyStats:
        return self._call(self._proxy.stats)

    def wait_until(self, predicate: Callable[[ProxyStats], bool], timeout_s: float) -> ProxyStats:
        """Wait (in the proxy's loop, not by polling) until ``predicate(stats)`` holds; TimeoutError otherwise."""
        if self._token is None:
            raise RuntimeError("the proxy is not running")
        return trio.from_thread.run(self._proxy.wait_until, predicate, timeout_s, trio_token=self._token)
