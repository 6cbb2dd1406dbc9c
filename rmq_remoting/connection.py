"""One multiplexed remoting connection; the server and the client both run their sockets through it.

Requests travel both ways on a RocketMQ connection (the broker calls clients back on the client's own
socket, PROTOCOL.md §1.4), so each side needs the same machinery: one reader task splitting frames,
responses matched to waiting callers by opaque, requests handed to handlers concurrently (a held
long-poll must never delay a heartbeat — CAPTURES.md §3.6), and one writer.

The writer is a task that owns the send side: callers append whole frames to an outbox and the writer
sends them, joining small frames into one ``send_all``. This is the per-connection send lock in a form
that (a) lets replies go out in any order without interleaving, (b) survives callers being cancelled
mid-send (a cancelled ``send_all`` would leave half a frame on the wire), and (c) batches pipelined
replies into fewer syscalls. The outbox has a high-water mark so a peer that stops reading stalls its
own handlers instead of growing memory: handlers wait, the in-flight bound fills, the reader stops.
"""
from __future__ import annotations

import inspect
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Union

import trio

from rmq_remoting._frame import DEFAULT_MAX_FRAME, FrameDecoder
from rmq_remoting.codes import ResponseCode
from rmq_remoting.command import RPC_ONEWAY, RPC_RESPONSE, RemotingCommand, next_opaque
from rmq_remoting.errors import FrameError, RemotingCommandError, RemotingConnectError, RemotingTimeoutError

__all__ = ["Connection", "HandlerTable", "Handler", "CloseHook", "DEFAULT_MAX_INFLIGHT"]

log = logging.getLogger("rmq_remoting")

Handler = Callable[["Connection", RemotingCommand], Awaitable[Union[RemotingCommand, None]]]
CloseHook = Callable[["Connection"], Union[Awaitable[None], None]]

DEFAULT_MAX_INFLIGHT = 256
WRITE_HIGH_WATER = 4 * 1024 * 1024      # queued bytes above which senders wait
WRITE_LOW_WATER = 1024 * 1024           # ... until the writer brings it back below this
COALESCE_LIMIT = 256 * 1024             # small frames joined into one send up to this size
SEND_ALONE = 64 * 1024                  # buffers this large are sent as they are, not copied
CLOSE_HOOK_TIMEOUT = 5.0


class HandlerTable:
    """Request code → handler, plus an optional default for codes without their own handler."""

    def __init__(self) -> None:
        self._handlers: dict[int, Handler] = {}
        self.default: Handler | None = None

    def register(self, code: int, handler: Handler) -> None:
        self._handlers[int(code)] = handler

    def unregister(self, code: int) -> None:
        self._handlers.pop(int(code), None)

    def get(self, code: int) -> Handler | None:
        return self._handlers.get(code, self.default)

    def __contains__(self, code: int) -> bool:
        return code in self._handlers


class _Pending:
    """A request waiting for its response (matched by opaque)."""

    __slots__ = ("event", "response", "error")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.response: RemotingCommand | None = None
        self.error: BaseException | None = None


def _nbytes(buf: Any) -> int:
    return buf.nbytes if type(buf) is memoryview else len(buf)


def _coalesce(batch: list) -> Iterator:
    """Join runs of small buffers; yield large ones untouched."""
    run: list = []
    size = 0
    for buf in batch:
        n = _nbytes(buf)
        if n >= SEND_ALONE:
            if run:
                yield run[0] if len(run) == 1 else b"".join(run)
                run, size = [], 0
            yield buf
            continue
        run.append(buf)
        size += n
        if size >= COALESCE_LIMIT:
            yield b"".join(run)
            run, size = [], 0
    if run:
        yield run[0] if len(run) == 1 else b"".join(run)


def _skip(parts: list, n: int) -> list:
    """What is left of ``parts`` after the first ``n`` bytes were written."""
    for i, part in enumerate(parts):
        size = _nbytes(part)
        if n < size:
            rest = memoryview(part).cast("B")[n:] if n else part
            return [rest, *parts[i + 1:]]
        n -= size
    return []


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def _peer(sock: Any, which: str) -> tuple | None:
    if sock is None:
        return None
    try:
        return getattr(sock, which)()
    except OSError:
        return None


class Connection:
    """A framed, multiplexed connection over a trio stream.

    ``run()`` owns everything: it starts the reader and writer in a nursery that also hosts one task
    per incoming request, and returns when the connection ends (peer closed, malformed frame, idle
    timeout, ``close()`` or cancellation). Requests to the peer (``send_request``/``send_oneway``) may
    come from any task while it runs.
    """

    def __init__(self, stream: trio.abc.Stream, handlers: HandlerTable, *,
                 max_frame: int = DEFAULT_MAX_FRAME, max_inflight: int = DEFAULT_MAX_INFLIGHT,
                 idle_timeout: float | None = None) -> None:
        self._stream = stream
        self._handlers = handlers
        self._max_frame = max_frame
        self._max_inflight = max_inflight
        self._idle_timeout = idle_timeout
        self._decoder = FrameDecoder(max_frame)
        self._sock = getattr(stream, "socket", None)
        # A second handle on the same socket for synchronous non-blocking writes (see _send_parts),
        # opened by run() and closed when it ends.
        self._direct: socket.socket | None = None
        self.remote_address: tuple | None = _peer(self._sock, "getpeername")
        self.local_address: tuple | None = _peer(self._sock, "getsockname")
        self.remote_addr: str = (f"{self.remote_address[0]}:{self.remote_address[1]}"
                                 if self.remote_address else "<stream>")
        #: Free slot for the owner's bookkeeping (e.g. the client id a broker saw on this channel).
        self.attributes: dict[str, Any] = {}
        self.close_reason: str | None = None
        self._pending: dict[int, _Pending] = {}
        self._outbox: list = []
        self._queued = 0
        self._wakeup = trio.Event()
        self._drained = trio.Event()
        self._drain_waiting = False
        self._writing = False
        self._inflight = 0
        self._closed = False
        self._started = False
        self._nursery: trio.Nursery | None = None
        self._finished = trio.Event()
        self._close_hooks: list[CloseHook] = []

    # -- state --------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def inflight(self) -> int:
        """Requests from the peer currently being handled."""
        return self._inflight

    @property
    def write_queue_bytes(self) -> int:
        """Bytes queued for the writer and not yet handed to the kernel."""
        return self._queued

    @property
    def pending(self) -> int:
        """Our requests still waiting for the peer's answer."""
        return len(self._pending)

    def add_close_hook(self, hook: CloseHook) -> None:
        """Call ``hook(conn)`` (sync or async, bounded to 5 s) once the connection has ended."""
        self._close_hooks.append(hook)

    def close(self, reason: str = "closed locally") -> None:
        """End the connection; ``run()`` returns soon after, failing pending requests."""
        if self.close_reason is None:
            self.close_reason = reason
        self._closed = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def wait_closed(self) -> None:
        await self._finished.wait()

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Connection] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connection until it ends; never raises except for cancellation."""
        if self._started:
            raise RuntimeError("Connection.run() called twice")
        self._started = True
        try:
            if self._sock is not None:
                self._direct = socket.socket(fileno=os.dup(self._sock.fileno()))
                self._direct.setblocking(False)
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._closed:
                    nursery.cancel_scope.cancel()
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._read_loop)
                task_status.started(self)
        finally:
            self._closed = True
            if self.close_reason is None:
                self.close_reason = "cancelled"
            for opaque, waiter in self._pending.items():
                waiter.error = RemotingConnectError(
                    f"connection to {self.remote_addr} closed ({self.close_reason}) before the answer to opaque {opaque}")
                waiter.event.set()
            self._pending.clear()
            self._outbox.clear()
            self._wakeup.set()
            self._drained.set()
            if self._direct is not None:
                self._direct.close()
                self._direct = None
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._stream)
                await self._run_close_hooks()
            self._finished.set()

    async def _run_close_hooks(self) -> None:
        for hook in self._close_hooks:
            try:
                with trio.move_on_after(CLOSE_HOOK_TIMEOUT):
                    result = hook(self)
                    if inspect.isawaitable(result):
                        await result
            except Exception:
                log.exception("remoting: close hook %r failed for %s", hook, self.remote_addr)

    # -- reading ------------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reason = "peer closed the connection"
        decoder = self._decoder
        sock = self._sock
        idle_timeout = self._idle_timeout
        try:
            with trio.CancelScope() as idle:
                if idle_timeout is not None:
                    idle.deadline = trio.current_time() + idle_timeout
                while True:
                    if sock is not None:
                        buf = decoder.recv_buffer()
                        n = await sock.recv_into(buf)
                        del buf                     # release the arena before it is reused
                        if not n:
                            break
                        frames = decoder.advance(n)
                    else:
                        data = await self._stream.receive_some()
                        if not data:
                            break
                        frames = decoder.feed(data)
                    if idle_timeout is not None:
                        idle.deadline = trio.current_time() + idle_timeout
                    for header, serialize_type, body in frames:
                        busy = self._dispatch(RemotingCommand.from_frame(header, serialize_type, body))
                        if busy is not None:
                            await self._send_parts(busy.encode_parts(self._max_frame))
            if idle.cancelled_caught:
                reason = f"idle for {idle_timeout} s"
                log.info("remoting: closing connection %s: %s", self.remote_addr, reason)
        except FrameError as exc:
            reason = f"malformed frame: {exc}"
            log.warning("remoting: closing connection %s: %s", self.remote_addr, reason)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, RemotingConnectError) as exc:
            reason = f"read failed: {exc!r}"
            log.debug("remoting: connection %s: %s", self.remote_addr, reason)
        except Exception as exc:
            reason = f"unexpected error: {exc!r}"
            log.exception("remoting: closing connection %s after an unexpected error", self.remote_addr)
        self.close(reason)

    def _dispatch(self, cmd: RemotingCommand) -> RemotingCommand | None:
        """Route one decoded frame; returns a SYSTEM_BUSY reply to send when over the in-flight bound."""
        if cmd.flag & RPC_RESPONSE:
            waiter = self._pending.pop(cmd.opaque, None)
            if waiter is None:
                log.debug("remoting: %s answered unknown or expired opaque %d", self.remote_addr, cmd.opaque)
            else:
                waiter.response = cmd
                waiter.event.set()
            return None
        if self._inflight >= self._max_inflight:
            if cmd.flag & RPC_ONEWAY:
                return None
            return cmd.create_response(
                ResponseCode.SYSTEM_BUSY,
                f"[OVERLOAD]system busy, {self._max_inflight} requests in flight on this connection")
        self._inflight += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._handle, cmd)
        return None

    async def _handle(self, cmd: RemotingCommand) -> None:
        try:
            handler = self._handlers.get(cmd.code)
            if handler is None:
                response: Any = cmd.create_response(ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
                                                    f" request type {cmd.code} not supported")
            else:
                try:
                    response = await handler(self, cmd)
                except RemotingCommandError as exc:
                    # A bad header is the caller's mistake, not ours: answer it, no traceback.
                    log.debug("remoting: code %d from %s rejected: %s", cmd.code, self.remote_addr, exc)
                    response = cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
                except Exception as exc:
                    log.warning("remoting: handler for code %d from %s failed", cmd.code, self.remote_addr,
                                exc_info=True)
                    response = cmd.create_response(ResponseCode.SYSTEM_ERROR, _describe(exc))
            if response is None or cmd.flag & RPC_ONEWAY:
                return
            if not isinstance(response, RemotingCommand):
                log.error("remoting: handler for code %d returned %r", cmd.code, type(response))
                response = cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                               f"handler returned {type(response).__name__}")
            response.opaque = cmd.opaque
            response.flag |= RPC_RESPONSE
            response.serialize_type = cmd.serialize_type
            try:
                parts = response.encode_parts(self._max_frame)
            except Exception as exc:
                log.warning("remoting: cannot encode the response to code %d: %s", cmd.code, exc)
                parts = cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                            f"cannot encode the response: {_describe(exc)}").encode_parts()
            await self._send_parts(parts)
        except RemotingConnectError:
            # The peer went away before its answer could be written; nobody is left to tell.
            log.debug("remoting: dropped the answer to code %d: %s is gone", cmd.code, self.remote_addr)
        except Exception:
            log.exception("remoting: failed to answer code %d from %s", cmd.code, self.remote_addr)
        finally:
            self._inflight -= 1

    # -- writing ------------------------------------------------------------------------------

    async def _send_parts(self, parts: list) -> None:
        """Write one whole frame, or queue it for the writer task.

        When the connection is quiet (nothing queued, writer idle, at most this exchange in flight)
        the frame goes straight to the kernel with one non-blocking ``sendmsg`` (gathered, so a large
        body is not copied): no task switch for a lone request/response. Under load, frames are
        queued so the writer can join many replies into one send. Whatever the kernel does not take is queued for the writer, which also takes
        every frame while earlier ones are still queued, so frames never interleave. Above the
        high-water mark callers wait here.
        """
        while True:
            if self._closed:
                raise RemotingConnectError(f"connection to {self.remote_addr} is closed ({self.close_reason})")
            if self._queued <= WRITE_HIGH_WATER:
                break
            self._drain_waiting = True
            await self._drained.wait()
        if (not self._outbox and not self._writing and self._direct is not None
                and self._inflight + len(self._pending) <= 2):
            try:
                sent = self._direct.sendmsg(parts)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                sent = 0                                  # the writer meets the error and closes
            if sent:
                parts = _skip(parts, sent)
                if not parts:
                    return
        for part in parts:
            self._outbox.append(part)
            self._queued += _nbytes(part)
        self._wakeup.set()

    async def _write_loop(self) -> None:
        reason = "write failed"
        stream = self._stream
        try:
            while True:
                if not self._outbox:
                    self._wakeup = trio.Event()
                    await self._wakeup.wait()
                    continue
                batch, self._outbox = self._outbox, []
                self._writing = True
                for chunk in _coalesce(batch):
                    await stream.send_all(chunk)
                    self._queued -= _nbytes(chunk)
                self._writing = False
                if self._drain_waiting and self._queued <= WRITE_LOW_WATER:
                    self._drain_waiting = False
                    self._drained.set()
                    self._drained = trio.Event()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            reason = f"write failed: {exc!r}"
            log.debug("remoting: connection %s: %s", self.remote_addr, reason)
        except Exception as exc:
            reason = f"unexpected write error: {exc!r}"
            log.exception("remoting: closing connection %s after an unexpected write error", self.remote_addr)
        self.close(reason)

    async def send_command(self, cmd: RemotingCommand) -> None:
        """Queue a command as it is (opaque and flag untouched), e.g. a late response."""
        await self._send_parts(cmd.encode_parts(self._max_frame))

    # -- requests to the peer -----------------------------------------------------------------

    async def send_request(self, cmd: RemotingCommand, timeout_ms: float = 3000) -> RemotingCommand:
        """Send a request and wait for its response.

        Assigns a fresh opaque to ``cmd``. Raises RemotingTimeoutError when no answer arrives in time
        and RemotingConnectError when the connection is or becomes closed.
        """
        if self._closed:
            raise RemotingConnectError(f"connection to {self.remote_addr} is closed ({self.close_reason})")
        cmd.opaque = opaque = next_opaque()
        cmd.flag &= ~(RPC_RESPONSE | RPC_ONEWAY)
        parts = cmd.encode_parts(self._max_frame)
        waiter = _Pending()
        self._pending[opaque] = waiter
        try:
            with trio.move_on_after(timeout_ms / 1000.0):
                await self._send_parts(parts)
                await waiter.event.wait()
        finally:
            self._pending.pop(opaque, None)
        if waiter.response is not None:
            return waiter.response
        if waiter.error is not None:
            raise waiter.error
        raise RemotingTimeoutError(f"wait response on {self.remote_addr} timed out after {timeout_ms:g} ms "
                                   f"(code {cmd.code}, opaque {opaque})")

    async def send_oneway(self, cmd: RemotingCommand, timeout_ms: float = 3000) -> None:
        """Send a request flagged oneway; returns once it is queued (the peer never answers)."""
        cmd.opaque = next_opaque()
        cmd.flag = (cmd.flag & ~RPC_RESPONSE) | RPC_ONEWAY
        parts = cmd.encode_parts(self._max_frame)
        with trio.move_on_after(timeout_ms / 1000.0):
            await self._send_parts(parts)
            return
        raise RemotingTimeoutError(f"oneway send to {self.remote_addr} not queued within {timeout_ms:g} ms "
                                   f"(write queue full)")

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self._closed else "open"
        return f"<Connection {self.remote_addr} {state} inflight={self._inflight} pending={len(self._pending)}>"
