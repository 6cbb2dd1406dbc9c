"""One multiplexed remoting connection; the server and the client both run their sockets through it.

Requests travel both ways on a RocketMQ connection (the broker calls clients back on the client's own
socket, PROTOCOL.md §1.4), so each side needs the same machinery: one reader task splitting frames,
responses matched to waiting callers by opaque, requests handed to handlers concurrently (a held
long-poll must never delay a heartbeat — CAPTURES.md §3.6), and one writer.

Requests are handled inline first: the reader runs each handler up to its first real block. A handler
that finishes without blocking (most do: a store lookup, a route, an offset) costs no task and no task
switch, and the replies of one read leave together in one ``sendmsg`` once the read's frames are done.
A handler that blocks keeps the reader's task (its first step already ran there) and reading continues
in a new task with the rest of the read, so a held long-poll still never delays the requests behind it.

The writer is a task that owns the send side: frames are appended whole to an outbox and the writer
sends them, joining small frames into one ``send_all``. This is the per-connection send lock in a form
that (a) lets replies go out in any order without interleaving, (b) survives callers being cancelled
mid-send (a cancelled ``send_all`` would leave half a frame on the wire), and (c) batches pipelined
replies into fewer syscalls. When the connection is quiet (outbox empty, writer idle) a frame is written
directly with one non-blocking ``sendmsg`` instead; whatever the kernel does not take goes to the outbox,
so frames never interleave. The outbox has a high-water mark so a peer that stops reading stalls its
own handlers instead of growing memory: handlers (and the reader) wait, the in-flight bound fills, the
reader stops.

A caller waiting for a response parks its task (``wait_task_rescheduled``) and the reader reschedules it
directly; one timer task per connection enforces every caller's deadline, and an idle watchdog task the
idle timeout, so neither needs a cancel scope per call or per read.
"""
from __future__ import annotations

import inspect
import logging
import math
import os
import socket
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Union

import trio

from rmq_remoting._frame import DEFAULT_MAX_FRAME, FrameDecoder
from rmq_remoting.codes import ResponseCode
from rmq_remoting.command import RPC_ONEWAY, RPC_RESPONSE, RemotingCommand, next_opaque
from rmq_remoting.errors import FrameError, RemotingCommandError, RemotingConnectError, RemotingTimeoutError

__all__ = ["Connection", "HandlerTable", "Handler", "CloseHook", "DEFAULT_MAX_INFLIGHT", "let_woken_tasks_reply_first"]

log = logging.getLogger("rmq_remoting")

_reschedule = trio.lowlevel.reschedule
_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_wait_readable = trio.lowlevel.wait_readable
_checkpoint = trio.lowlevel.checkpoint
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint
_ABORT_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED
_current_time = trio.current_time
_iscoroutine = inspect.iscoroutine

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
    """A request waiting for its response (matched by opaque).

    The caller parks on ``trio.lowlevel.wait_task_rescheduled`` and the reader (or the timeout timer, or
    the connection's end) reschedules it: no Event, no cancel scope per call.
    """

    __slots__ = ("task", "response", "error", "deadline", "expired", "counted")

    def __init__(self, deadline: float) -> None:
        self.task: Any = None
        self.counted = False            # woken by the reader, which waits for it to run (see _read_loop)
        self.response: RemotingCommand | None = None
        self.error: BaseException | None = None
        self.deadline = deadline
        self.expired = False

    def wake(self) -> None:
        task = self.task
        if task is not None:
            self.task = None
            _reschedule(task)

    def abort(self, raise_cancel: Any) -> Any:
        # The caller was cancelled while parked; nobody may reschedule it any more.
        self.task = None
        return _ABORT_SUCCEEDED


@types.coroutine
def _resume(coro: Any, trap: Any) -> Any:
    """Go on driving ``coro`` in the current task, from the trap its first step yielded.

    The first step of a handler runs inline in the reader; if it blocks, the reader's task keeps the
    handler (its trap already belongs to this task) and hands reading to a new task.
    """
    while True:
        try:
            value = yield trap
        except BaseException as exc:
            try:
                trap = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                trap = coro.send(value)
            except StopIteration as stop:
                return stop.value


# Set by ``let_woken_tasks_reply_first``; the reader that next finishes a batch clears it. One flag per process
# is enough: it only makes that reader yield once before flushing, whichever connection it serves. (With trio
# loops in several threads a reader of another loop may clear it first: the reply order is then as without it.)
_yield_before_flush = False


def let_woken_tasks_reply_first() -> None:
    """A handler running inline in a reader woke other tasks whose replies are more urgent than its own.

    The reader lets them run (up to their first block) before it writes the replies of its batch. The broker's
    long polling uses it: a send that wakes a held pull gets its acknowledgement written after the pull's
    answer, so the message reaches the consumer one write (and one wake-up of the producer) sooner.
    """
    global _yield_before_flush
    _yield_before_flush = True


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


def _clear_yield_before_flush() -> None:
    global _yield_before_flush
    _yield_before_flush = False


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

    ``run()`` owns everything: it starts the reader, the writer and the timeout timer in a nursery that
    also hosts the requests whose handlers block, and returns when the connection ends (peer closed,
    malformed frame, idle timeout, ``close()`` or cancellation). Requests to the peer
    (``send_request``/``send_oneway``) may come from any task while it runs.
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
        # A second handle on the same socket for synchronous non-blocking reads and writes (see
        # _receive and _write_or_queue), opened by run() and closed when it ends.
        self._direct: socket.socket | None = None
        self.remote_address: tuple | None = _peer(self._sock, "getpeername")
        self.local_address: tuple | None = _peer(self._sock, "getsockname")
        self.remote_addr: str = (f"{self.remote_address[0]}:{self.remote_address[1]}"
                                 if self.remote_address else "<stream>")
        #: Free slot for the owner's bookkeeping (e.g. the client id a broker saw on this channel).
        self.attributes: dict[str, Any] = {}
        self.close_reason: str | None = None
        self._pending: dict[int, _Pending] = {}
        self._timer_deadline = math.inf          # earliest deadline the timer knows of (may be stale)
        self._timer_scope: trio.CancelScope | None = None
        self._outbox: list = []
        self._queued = 0
        self._wakeup = trio.Event()
        self._drained = trio.Event()
        self._drain_waiting = False
        self._writing = False
        self._inflight = 0
        self._woken = 0                          # callers the reader woke that have not run yet
        self._short_read = False                 # the last receive left room: the socket is likely empty
        self._last_read = 0.0
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
                self._last_read = _current_time()
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._read_loop)
                nursery.start_soon(self._timer_loop)
                if self._idle_timeout is not None:
                    nursery.start_soon(self._idle_loop)
                task_status.started(self)
        finally:
            self._closed = True
            if self.close_reason is None:
                self.close_reason = "cancelled"
            for opaque, waiter in self._pending.items():
                waiter.error = RemotingConnectError(
                    f"connection to {self.remote_addr} closed ({self.close_reason}) before the answer to opaque {opaque}")
                waiter.wake()
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

    async def _idle_loop(self) -> None:
        """Close the connection once nothing has been read for ``idle_timeout`` seconds."""
        timeout = self._idle_timeout
        assert timeout is not None
        while True:
            deadline = self._last_read + timeout
            if _current_time() >= deadline:
                reason = f"idle for {timeout} s"
                log.info("remoting: closing connection %s: %s", self.remote_addr, reason)
                self.close(reason)
                return
            await trio.sleep_until(deadline)

    # -- reading ------------------------------------------------------------------------------

    async def _receive(self) -> list | None:
        """Wait for bytes and return the frames they complete (possibly none); None at end of stream."""
        decoder = self._decoder
        direct = self._direct
        if direct is not None:
            buf = decoder.recv_buffer()
            room = len(buf)
            n = -1
            if not self._short_read:
                # The last read filled its buffer, so more is probably waiting: try before waiting.
                try:
                    n = direct.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    pass
                else:
                    # The bytes were already there: let other tasks run first, as every trio socket
                    # operation does, so a peer that keeps the socket full cannot starve the others.
                    await _checkpoint()
            while n < 0:
                await _wait_readable(self._sock)
                try:
                    n = direct.recv_into(buf)
                except (BlockingIOError, InterruptedError):
                    pass
            del buf                     # release the arena before it is reused
            self._short_read = n < room
            if not n:
                return None
            frames = decoder.advance(n)
        else:
            data = await self._stream.receive_some()
            if not data:
                return None
            frames = decoder.feed(data)
        if self._idle_timeout is not None:
            self._last_read = _current_time()
        return frames

    async def _read_loop(self, frames: list | None = None) -> None:
        """Read frames and dispatch them until the connection ends.

        Responses wake their callers. A request's handler runs inline, in this task: most handlers
        finish without blocking, and then the reply is queued with no task spawned and no task switch;
        the replies of one read go out together when the batch is done. A handler that does block
        (long-poll, a call back to the peer, a sleep) keeps this task, and reading continues in a new
        task with the rest of the batch, so a held request never delays the ones behind it.
        """
        reason = "peer closed the connection"
        handoff: tuple | None = None
        from_frame = RemotingCommand.from_frame
        try:
            while True:
                if frames is None:
                    frames = await self._receive()
                    if frames is None:
                        break
                count = len(frames)
                i = 0
                while i < count:
                    header, serialize_type, body = frames[i]
                    i += 1
                    cmd = from_frame(header, serialize_type, body)
                    if cmd.flag & RPC_RESPONSE:
                        self._complete(cmd)
                        continue
                    step = self._start_request(cmd)
                    if step is not None:
                        # The handler blocked: this task stays with it; reading goes on elsewhere.
                        assert self._nursery is not None
                        self._nursery.start_soon(self._read_loop, frames[i:])
                        handoff = (cmd, *step)
                        break
                header = body = None
                frames = None
                if handoff is not None:
                    break
                if _yield_before_flush:
                    _clear_yield_before_flush()
                    # The woken tasks run in the next scheduler batch, and so does this task after one
                    # checkpoint, in an order trio randomises: after two it surely comes after them.
                    await _cancel_shielded_checkpoint()
                    await _cancel_shielded_checkpoint()
                self._flush()
                if self._queued > WRITE_HIGH_WATER:
                    await self._wait_drained()
                if self._woken > 0:
                    while self._woken > 0 and not self._closed:
                        # Let the callers we woke run (and send their next requests) before this
                        # task re-arms its read: that re-arm is then off the round trip's critical path.
                        await _cancel_shielded_checkpoint()
                    self._flush()                   # their requests, without waiting for the writer
        except FrameError as exc:
            reason = f"malformed frame: {exc}"
            log.warning("remoting: closing connection %s: %s", self.remote_addr, reason)
            self._flush()                           # the answers to the frames before the bad one
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, RemotingConnectError) as exc:
            reason = f"read failed: {exc!r}"
            log.debug("remoting: connection %s: %s", self.remote_addr, reason)
        except Exception as exc:
            reason = f"unexpected error: {exc!r}"
            log.exception("remoting: closing connection %s after an unexpected error", self.remote_addr)
        if handoff is None:
            self.close(reason)
            return
        cmd, coro, trap = handoff
        del handoff
        await self._handle(cmd, _resume(coro, trap))

    def _complete(self, cmd: RemotingCommand) -> None:
        """A response from the peer: hand it to the caller waiting for its opaque."""
        waiter = self._pending.pop(cmd.opaque, None)
        if waiter is None:
            log.debug("remoting: %s answered unknown or expired opaque %d", self.remote_addr, cmd.opaque)
            return
        waiter.response = cmd
        if waiter.task is not None:
            waiter.counted = True
            self._woken += 1
            waiter.wake()

    def _start_request(self, cmd: RemotingCommand) -> tuple | None:
        """Run a request's handler up to its first block.

        Returns None when the request is done (reply queued, or nothing to send), else
        ``(coroutine, trap)`` for the caller to keep driving in its own task.
        """
        oneway = cmd.flag & RPC_ONEWAY
        if self._inflight >= self._max_inflight:
            if not oneway:
                self._queue(cmd.create_response(
                    ResponseCode.SYSTEM_BUSY,
                    f"[OVERLOAD]system busy, {self._max_inflight} requests in flight on this connection"
                ).encode_parts(self._max_frame))
            return None
        handler = self._handlers.get(cmd.code)
        if handler is None:
            if not oneway:
                self._queue(cmd.create_response(ResponseCode.REQUEST_CODE_NOT_SUPPORTED,
                                                f" request type {cmd.code} not supported").encode_parts())
            return None
        self._inflight += 1
        try:
            try:
                coro = handler(self, cmd)
                if not _iscoroutine(coro):
                    # Some other awaitable: serve it in a task of its own, as it is.
                    self._nursery.start_soon(self._handle, cmd, coro)    # type: ignore[union-attr]
                    return None
                trap = coro.send(None)
            except StopIteration as stop:
                response = stop.value
            except Exception as exc:
                response = self._handler_failed(cmd, exc)
            else:
                return coro, trap
            if response is not None and not oneway:
                self._queue(self._encode_reply(cmd, response))
        except BaseException:
            self._inflight -= 1
            raise
        self._inflight -= 1
        return None

    def _handler_failed(self, cmd: RemotingCommand, exc: Exception) -> RemotingCommand:
        """The SYSTEM_ERROR answer to a handler that raised (call from its except block)."""
        if isinstance(exc, RemotingCommandError):
            # A bad header is the caller's mistake, not ours: answer it, no traceback.
            log.debug("remoting: code %d from %s rejected: %s", cmd.code, self.remote_addr, exc)
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        log.warning("remoting: handler for code %d from %s failed", cmd.code, self.remote_addr, exc_info=True)
        return cmd.create_response(ResponseCode.SYSTEM_ERROR, _describe(exc))

    def _encode_reply(self, cmd: RemotingCommand, response: Any) -> list:
        """The frame answering ``cmd``: opaque, response flag and serialization taken from the request."""
        if not isinstance(response, RemotingCommand):
            log.error("remoting: handler for code %d returned %r", cmd.code, type(response))
            response = cmd.create_response(ResponseCode.SYSTEM_ERROR, f"handler returned {type(response).__name__}")
        response.opaque = cmd.opaque
        response.flag |= RPC_RESPONSE
        response.serialize_type = cmd.serialize_type
        try:
            return response.encode_parts(self._max_frame)
        except Exception as exc:
            log.warning("remoting: cannot encode the response to code %d: %s", cmd.code, exc)
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"cannot encode the response: {_describe(exc)}").encode_parts()

    async def _handle(self, cmd: RemotingCommand, awaitable: Awaitable) -> None:
        """Finish a request whose handler blocked (or is not a coroutine) and send its reply."""
        try:
            try:
                response = await awaitable
            except Exception as exc:
                response = self._handler_failed(cmd, exc)
            if response is None or cmd.flag & RPC_ONEWAY:
                return
            await self._send_parts(self._encode_reply(cmd, response))
        except RemotingConnectError:
            # The peer went away before its answer could be written; nobody is left to tell.
            log.debug("remoting: dropped the answer to code %d: %s is gone", cmd.code, self.remote_addr)
        except Exception:
            log.exception("remoting: failed to answer code %d from %s", cmd.code, self.remote_addr)
        finally:
            self._inflight -= 1

    # -- writing ------------------------------------------------------------------------------

    def _queue(self, parts: list) -> None:
        """Append a whole frame to the outbox without waking the writer (the reader flushes)."""
        outbox = self._outbox
        for part in parts:
            outbox.append(part)
            self._queued += _nbytes(part)

    def _sent(self, n: int) -> None:
        self._queued -= n
        if self._drain_waiting and self._queued <= WRITE_LOW_WATER:
            self._drain_waiting = False
            self._drained.set()
            self._drained = trio.Event()

    def _flush(self) -> None:
        """Send the outbox now if the writer is idle (one gathered ``sendmsg``); the rest goes to the writer."""
        outbox = self._outbox
        if not outbox:
            return
        if self._writing or self._direct is None or self._closed:
            self._wakeup.set()
            return
        chunks = outbox if len(outbox) <= 64 else list(_coalesce(outbox))
        try:
            sent = self._direct.sendmsg(chunks)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0                                  # the writer meets the error and closes
        if sent:
            rest = _skip(chunks, sent)
            self._outbox = rest
            self._sent(sent)
            if not rest:
                return
        elif chunks is not outbox:
            self._outbox = chunks
        self._wakeup.set()

    async def _wait_drained(self) -> None:
        """Wait while the outbox is above the high-water mark."""
        while self._queued > WRITE_HIGH_WATER:
            if self._closed:
                raise RemotingConnectError(f"connection to {self.remote_addr} is closed ({self.close_reason})")
            self._drain_waiting = True
            self._wakeup.set()
            await self._drained.wait()

    def _write_or_queue(self, parts: list) -> None:
        """Write one whole frame now if the connection is quiet, else queue it for the writer task.

        Quiet means nothing queued, the writer idle and no caller woken by the reader still to run: then
        the frame goes straight to the kernel with one non-blocking ``sendmsg`` (gathered, so a large body is
        not copied), with no task switch and no wait for the next scheduler pass. How many requests are in
        flight does not matter: a caller sending while others wait for answers (a paced producer, a consumer
        holding pulls) gains nothing by waiting for the writer. Callers the reader has just woken do queue,
        so the requests they send in reply to one read leave together when the reader flushes. Whatever the
        kernel does not take is queued, so frames never interleave.
        """
        if self._closed:
            raise RemotingConnectError(f"connection to {self.remote_addr} is closed ({self.close_reason})")
        if not self._outbox and not self._writing and self._direct is not None and not self._woken:
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
        self._queue(parts)
        self._wakeup.set()

    async def _send_parts(self, parts: list) -> None:
        """Write or queue one whole frame; above the high-water mark, wait for the writer first."""
        if self._queued > WRITE_HIGH_WATER:
            await self._wait_drained()
        self._write_or_queue(parts)

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
                    self._sent(_nbytes(chunk))
                self._writing = False
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

    async def _timer_loop(self) -> None:
        """Fail the calls whose deadline passed; sleeps until the earliest deadline it knows of.

        A deadline stays armed after its call was answered; the timer then wakes for nothing, scans
        the pending calls and re-arms for the earliest one left: about one scan per timeout period.
        """
        while True:
            with trio.CancelScope(deadline=self._timer_deadline) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            now = _current_time()
            earliest = math.inf
            expired = [(opaque, waiter) for opaque, waiter in self._pending.items() if waiter.deadline <= now]
            for opaque, waiter in expired:
                del self._pending[opaque]
                waiter.expired = True
                waiter.wake()
            for waiter in self._pending.values():
                if waiter.deadline < earliest:
                    earliest = waiter.deadline
            self._timer_deadline = earliest

    def _arm_timer(self, deadline: float) -> None:
        self._timer_deadline = deadline
        if self._timer_scope is not None:
            self._timer_scope.deadline = deadline

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
        deadline = _current_time() + timeout_ms / 1000.0
        waiter = _Pending(deadline)
        self._pending[opaque] = waiter
        if deadline < self._timer_deadline:
            self._arm_timer(deadline)
        try:
            if self._queued > WRITE_HIGH_WATER:
                with trio.move_on_at(deadline):
                    await self._send_parts(parts)
                    parts = None
                if parts is not None:
                    waiter.expired = True
            else:
                self._write_or_queue(parts)
            if waiter.response is None and waiter.error is None and not waiter.expired:
                waiter.task = _current_task()
                await _wait_task_rescheduled(waiter.abort)
        finally:
            self._pending.pop(opaque, None)
            if waiter.counted:
                waiter.counted = False
                self._woken -= 1
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
        if self._queued <= WRITE_HIGH_WATER:
            self._write_or_queue(parts)
            return
        with trio.move_on_after(timeout_ms / 1000.0):
            await self._send_parts(parts)
            return
        raise RemotingTimeoutError(f"oneway send to {self.remote_addr} not queued within {timeout_ms:g} ms "
                                   f"(write queue full)")

    def __repr__(self) -> str:
        state = f"closed: {self.close_reason}" if self._closed else "open"
        return f"<Connection {self.remote_addr} {state} inflight={self._inflight} pending={len(self._pending)}>"
