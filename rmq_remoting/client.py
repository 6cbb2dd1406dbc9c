"""The remoting client: one multiplexed connection per address, shared by all callers.

Used by the broker (to nameservers) and by rmq_client (to nameservers and brokers). Calls to one
address share a single socket and are matched by opaque, as every RocketMQ client does; a connection
that dies fails its pending calls with RemotingConnectError and is replaced on the next call, so a
restarted server is picked up without any explicit reconnect. Requests the server sends back on the
connection (NOTIFY_CONSUMER_IDS_CHANGED, GET_CONSUMER_RUNNING_INFO, ...) go to handlers registered here.

Connection tasks live in a nursery: either one passed in, or the client's own when used as
``async with RemotingClient() as client``. ``aclose()`` ends them all; no task outlives the client.
"""
from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager

import trio

from rmq_remoting._frame import DEFAULT_MAX_FRAME
from rmq_remoting.command import RemotingCommand
from rmq_remoting.connection import DEFAULT_MAX_INFLIGHT, Connection, Handler, HandlerTable
from rmq_remoting.errors import RemotingConnectError, RemotingTimeoutError

__all__ = ["RemotingClient", "parse_address"]

log = logging.getLogger("rmq_remoting")

DEFAULT_TIMEOUT_MS = 3000
DEFAULT_CONNECT_TIMEOUT_MS = 3000      # NettyClientConfig.connectTimeoutMillis


def parse_address(addr: str) -> tuple[str, int]:
    """``"host:port"`` (or ``"[v6]:port"``) → (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"bad address {addr!r}, expected host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class RemotingClient:
    """Request/response over cached connections, with per-call timeouts."""

    def __init__(self, nursery: trio.Nursery | None = None, *,
                 connect_timeout_ms: float = DEFAULT_CONNECT_TIMEOUT_MS, max_frame: int = DEFAULT_MAX_FRAME,
                 max_inflight: int = DEFAULT_MAX_INFLIGHT, idle_timeout: float | None = None) -> None:
        self._nursery = nursery
        self._own_nursery_cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self.connect_timeout_ms = connect_timeout_ms
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self.idle_timeout = idle_timeout
        self.handlers = HandlerTable()
        self._connections: dict[str, Connection] = {}
        self._connecting: dict[str, trio.Event] = {}
        self._closed = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> RemotingClient:
        if self._nursery is None:
            self._own_nursery_cm = trio.open_nursery()
            self._nursery = await self._own_nursery_cm.__aenter__()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool | None:
        await self.aclose()
        if self._own_nursery_cm is None:
            return None
        cm, self._own_nursery_cm = self._own_nursery_cm, None
        try:
            return await cm.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # Connection tasks never raise, so a group holding only the body's exception is just the
            # nursery's strict wrapping: let the caller see their own exception unchanged.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise

    async def aclose(self) -> None:
        """Close every connection and wait until their tasks have finished."""
        self._closed = True
        conns = list(self._connections.values())
        self._connections.clear()
        for conn in conns:
            conn.close("client closed")
        with trio.CancelScope(shield=True):
            for conn in conns:
                await conn.wait_closed()

    # -- handlers for server-initiated requests ---------------------------------------------------

    def register(self, code: int, handler: Handler) -> None:
        """Answer requests with ``code`` that the server sends on our connections."""
        self.handlers.register(code, handler)

    # -- connections ----------------------------------------------------------------------------

    def connection_for(self, addr: str) -> Connection | None:
        """The live connection to ``addr``, if any."""
        conn = self._connections.get(addr)
        return conn if conn is not None and not conn.closed else None

    def close_connection(self, addr: str) -> None:
        conn = self._connections.pop(addr, None)
        if conn is not None:
            conn.close("closed by the client")

    async def _run_connection(self, addr: str, conn: Connection, *,
                              task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await conn.run(task_status=task_status)
        finally:
            if self._connections.get(addr) is conn:
                del self._connections[addr]
            log.debug("remoting: connection to %s ended: %s", addr, conn.close_reason)

    async def get_connection(self, addr: str, timeout_ms: float | None = None) -> Connection:
        """The connection to ``addr``, connecting if there is none (one connect at a time per address)."""
        if self._nursery is None:
            raise RuntimeError("RemotingClient needs a nursery: pass one or use 'async with'")
        budget = self.connect_timeout_ms if timeout_ms is None else min(timeout_ms, self.connect_timeout_ms)
        deadline = trio.current_time() + budget / 1000.0
        while True:
            if self._closed:
                raise RemotingConnectError("client is closed")
            conn = self._connections.get(addr)
            if conn is not None and not conn.closed:
                return conn
            ongoing = self._connecting.get(addr)
            if ongoing is None:
                break
            with trio.move_on_at(deadline):
                await ongoing.wait()
                continue
            raise self._connect_timeout(addr, budget, timeout_ms)
        done = self._connecting[addr] = trio.Event()
        try:
            host, port = parse_address(addr)
            try:
                with trio.fail_at(deadline):
                    stream = await trio.open_tcp_stream(host, port)
            except trio.TooSlowError:
                raise self._connect_timeout(addr, budget, timeout_ms) from None
            except OSError as exc:
                raise RemotingConnectError(f"connect to {addr} failed: {exc}") from exc
            conn = Connection(stream, self.handlers, max_frame=self.max_frame, max_inflight=self.max_inflight,
                              idle_timeout=self.idle_timeout)
            try:
                await self._nursery.start(self._run_connection, addr, conn)
            except RuntimeError as exc:            # the nursery is already closed
                await trio.aclose_forcefully(stream)
                raise RemotingConnectError(f"client is closed: {exc}") from None
            if self._closed:
                conn.close("client closed")
                raise RemotingConnectError("client is closed")
            self._connections[addr] = conn
            return conn
        finally:
            del self._connecting[addr]
            done.set()

    def _connect_timeout(self, addr: str, budget: float, call_timeout_ms: float | None) -> Exception:
        if call_timeout_ms is not None and call_timeout_ms < self.connect_timeout_ms:
            return RemotingTimeoutError(f"call to {addr} timed out after {call_timeout_ms:g} ms while connecting")
        return RemotingConnectError(f"connect to {addr} timed out after {budget:g} ms")

    # -- calls --------------------------------------------------------------------------------

    async def _connect_within(self, addr: str, timeout_ms: float, what: str):
        """The connection to ``addr`` and the ms of ``timeout_ms`` left after (re)connecting."""
        start = trio.current_time()
        conn = await self.get_connection(addr, timeout_ms)
        remaining = timeout_ms - (trio.current_time() - start) * 1000.0
        if remaining <= 0:
            raise RemotingTimeoutError(f"{what} to {addr} timed out after {timeout_ms:g} ms while connecting")
        return conn, remaining

    async def invoke(self, addr: str, cmd: RemotingCommand, timeout_ms: float = DEFAULT_TIMEOUT_MS) -> RemotingCommand:
        """Send ``cmd`` to ``addr`` and return the response; the timeout covers connecting too."""
        conn = self._connections.get(addr)
        if conn is None or conn.closed:
            conn, remaining = await self._connect_within(addr, timeout_ms, "call")
        else:
            remaining = timeout_ms                  # connected already: the whole budget is the call's
        try:
            return await conn.send_request(cmd, remaining)
        except RemotingTimeoutError:
            raise RemotingTimeoutError(f"wait response on {addr} timed out after {timeout_ms:g} ms "
                                       f"(code {cmd.code}, opaque {cmd.opaque})") from None

    async def invoke_oneway(self, addr: str, cmd: RemotingCommand, timeout_ms: float = DEFAULT_TIMEOUT_MS) -> None:
        """Send ``cmd`` flagged oneway; returns once it is queued for writing."""
        conn = self._connections.get(addr)
        if conn is None or conn.closed:
            conn, remaining = await self._connect_within(addr, timeout_ms, "oneway call")
        else:
            remaining = timeout_ms
        await conn.send_oneway(cmd, remaining)
