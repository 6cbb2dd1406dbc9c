"""The remoting server: accepts connections and serves registered request handlers on each.

A broker or nameserver registers ``async def handler(conn, cmd) -> RemotingCommand | None`` per request
code and runs ``serve()`` in a nursery. Everything per connection (concurrent handling bounded at
``max_inflight``, SYSTEM_BUSY beyond it, REQUEST_CODE_NOT_SUPPORTED for unknown codes, SYSTEM_ERROR for
handler exceptions, replies in the request's serialization, no reply to oneway requests, closing only
the offending connection on a malformed frame) lives in ``Connection``; this module owns the listening
sockets, the set of live connections and their hooks.

The optional VIP port (RocketMQ's ``listenPort - 2`` fast channel) is a second listener served by the
same handler table.
"""
from __future__ import annotations

import inspect
import logging
from functools import partial

import trio

from rmq_remoting._frame import DEFAULT_MAX_FRAME
from rmq_remoting.connection import (DEFAULT_MAX_INFLIGHT, CloseHook, Connection, Handler,
                                     HandlerTable)

__all__ = ["RemotingServer", "DEFAULT_IDLE_TIMEOUT"]

log = logging.getLogger("rmq_remoting")

DEFAULT_IDLE_TIMEOUT = 120.0     # NettyServerConfig.serverChannelMaxIdleTimeSeconds


class RemotingServer:
    """A trio TCP server speaking RocketMQ remoting.

    ``port=0`` (and ``vip_port=0``) bind a free port; the bound numbers are available as ``port`` and
    ``vip_port`` once ``serve`` has reported started. ``close()`` (or cancelling the surrounding
    nursery) stops listening and ends every connection.
    """

    def __init__(self, port: int = 0, *, host: str | None = "127.0.0.1", vip_port: int | None = None,
                 max_frame: int = DEFAULT_MAX_FRAME, max_inflight: int = DEFAULT_MAX_INFLIGHT,
                 idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.vip_port = vip_port
        self.max_frame = max_frame
        self.max_inflight = max_inflight
        self.idle_timeout = idle_timeout
        self.handlers = HandlerTable()
        self._connections: set[Connection] = set()
        self._connect_hooks: list[CloseHook] = []
        self._close_hooks: list[CloseHook] = []
        self._scope: trio.CancelScope | None = None
        self._closed = False
        self._serving = False

    # -- configuration --------------------------------------------------------------------------

    def register(self, code: int, handler: Handler) -> None:
        """Serve request ``code`` with ``handler(conn, cmd)``; its return value is the response."""
        self.handlers.register(code, handler)

    def register_default(self, handler: Handler | None) -> None:
        """Handler for codes without their own (None restores REQUEST_CODE_NOT_SUPPORTED)."""
        self.handlers.default = handler

    def add_connect_hook(self, hook: CloseHook) -> None:
        """Call ``hook(conn)`` when a connection is accepted, before its first request is read."""
        self._connect_hooks.append(hook)

    def add_close_hook(self, hook: CloseHook) -> None:
        """Call ``hook(conn)`` when any connection ends (the nameserver drops a broker at once)."""
        self._close_hooks.append(hook)

    @property
    def connections(self) -> frozenset[Connection]:
        return frozenset(self._connections)

    # -- running ----------------------------------------------------------------------------------

    async def _listen(self, port: int) -> list[trio.SocketListener]:
        listeners = await trio.open_tcp_listeners(port, host=self.host)
        if port == 0 and len(listeners) > 1:
            # Each address family would get its own free port; one port number is what callers expect.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        return listeners

    async def serve(self, *, task_status: trio.TaskStatus[RemotingServer] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until ``close()`` or cancellation; reports itself started once bound."""
        if self._serving:
            raise RuntimeError("RemotingServer.serve() is already running")
        self._serving = True
        listeners = await self._listen(self.port)
        self.port = listeners[0].socket.getsockname()[1]
        try:
            if self.vip_port is not None:
                vip = await self._listen(self.vip_port)
                self.vip_port = vip[0].socket.getsockname()[1]
                listeners += vip
        except BaseException:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            self._serving = False
            raise
        try:
            with trio.CancelScope() as self._scope:
                if self._closed:
                    self._scope.cancel()
                async with trio.open_nursery() as nursery:
                    await nursery.start(partial(trio.serve_listeners, self._serve_connection, listeners,
                                                handler_nursery=nursery))
                    log.info("remoting: listening on %s:%d%s", self.host or "*", self.port,
                             f" (VIP {self.vip_port})" if self.vip_port is not None else "")
                    task_status.started(self)
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
            self._serving = False

    def close(self) -> None:
        """Stop listening and close every connection; ``serve()`` returns."""
        self._closed = True
        if self._scope is not None:
            self._scope.cancel()

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        conn = Connection(stream, self.handlers, max_frame=self.max_frame, max_inflight=self.max_inflight,
                          idle_timeout=self.idle_timeout)
        for hook in self._close_hooks:
            conn.add_close_hook(hook)
        self._connections.add(conn)
        try:
            for hook in self._connect_hooks:
                result = hook(conn)
                if inspect.isawaitable(result):
                    await result
            log.debug("remoting: accepted %s", conn.remote_addr)
            await conn.run()
        except Exception:
            # serve_listeners would take the whole server down with an escaping exception.
            log.exception("remoting: connection %s failed", conn.remote_addr)
            await trio.aclose_forcefully(stream)
        finally:
            self._connections.discard(conn)
