"""The master's side of HA: the server on the HA port and one connection per slave (Java ``HAConnection``).

Each connection runs two tasks:

* the **reader** takes the slave's 8-byte offset reports. The first report says where to stream from
  (0 = an empty slave: the start of the master's last file); every report is the slave's acknowledgement,
  which wakes SYNC_MASTER sends. A report above the master's max offset, a negative one, or 20 s
  (``haHousekeepingInterval``) without a report closes the link.
* the **writer** sends ``offset, size, bytes`` frames of raw commitlog, woken by appends (no polling). It
  packs several frames into one write (each ≤ ``haTransferBatchSize``, none across a file), and sends a
  heartbeat frame (size 0) after ``haSendHeartbeatInterval`` without data.

Malformed input ends only that connection; the server and the other slaves carry on.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from rmq_store import ReplicationError

from rmq_broker.ha.wire import FRAME_HEADER, OFFSET_REPORT, OFFSET_REPORT_BYTES

if TYPE_CHECKING:
    from rmq_broker.ha.service import HAService

__all__ = ["HAServer", "SlaveConnection"]

log = logging.getLogger("rmq_broker.ha.master")

#: Bytes of commitlog the writer packs into one socket write (several frames): large writes keep the
#: per-frame cost of a syscall and a trio checkpoint off the throughput path.
WRITE_BATCH_BYTES = 256 * 1024
READ_BYTES = 64 * 1024


class SlaveConnection:
    """One slave's link. ``acked_offset`` is its last report (-1 until the first)."""

    def __init__(self, service: HAService, stream: trio.SocketStream, remote: str) -> None:
        self.service = service
        self.stream = stream
        self.remote = remote
        self.acked_offset = -1
        self.next_transfer_offset = -1      # where the writer continues; set by the first report
        self.bytes_sent = 0
        self._first_report = trio.Event()
        self.close_reason: str | None = None

    def __repr__(self) -> str:
        return f"SlaveConnection({self.remote}, acked={self.acked_offset}, next={self.next_transfer_offset})"

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._read_loop, nursery.cancel_scope)
                nursery.start_soon(self._guarded, self._write_loop, nursery.cancel_scope)
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self.stream)
            log.info("HA connection from slave %s closed: %s", self.remote, self.close_reason or "ended")

    async def _guarded(self, loop: Any, scope: trio.CancelScope) -> None:
        """Run one side; a socket error ends the link (both sides), never the server."""
        try:
            await loop(scope)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._close(scope, f"socket error: {exc!r}", warn=False)
        except Exception:
            log.exception("HA slave %s: unexpected error", self.remote)
            self._close(scope, "unexpected error")

    def _close(self, scope: trio.CancelScope, reason: str, *, warn: bool = True) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            (log.warning if warn else log.info)("HA slave %s: %s; closing the link", self.remote, reason)
        scope.cancel()

    async def _read_loop(self, scope: trio.CancelScope) -> None:
        service = self.service
        store = service.broker.store
        pending = b""
        housekeeping_s = service.config.ha_housekeeping_interval_ms / 1000
        while True:
            with trio.move_on_after(housekeeping_s) as timer:
                data = await self.stream.receive_some(READ_BYTES)
            if timer.cancelled_caught:
                self._close(scope, f"no report for {service.config.ha_housekeeping_interval_ms} ms")
                return
            if not data:
                self._close(scope, "the slave closed the connection", warn=False)
                return
            pending += data
            whole = len(pending) - len(pending) % OFFSET_REPORT_BYTES
            if whole == 0:
                continue
            # Only the newest complete report matters (Java keeps the last 8-byte value of each read).
            (offset,) = OFFSET_REPORT.unpack_from(pending, whole - OFFSET_REPORT_BYTES)
            pending = pending[whole:]
            master_max = store.max_phy_offset
            if offset < 0 or offset > master_max:
                self._close(scope, f"reported offset {offset} is outside the master's log [0, {master_max}]")
                return
            if self.acked_offset < 0:
                self.next_transfer_offset = offset if offset else store.replication_start_offset()
                log.info("HA slave %s connected: reports offset %d, streaming from %d", self.remote, offset,
                         self.next_transfer_offset)
                self._first_report.set()
            self.acked_offset = offset
            service.on_slave_ack(self, offset)

    async def _write_loop(self, scope: trio.CancelScope) -> None:
        service = self.service
        store = service.broker.store
        config = service.config
        await self._first_report.wait()
        heartbeat_s = config.ha_send_heartbeat_interval_ms / 1000
        last_write = trio.current_time()
        while True:
            # Take the wake-up before reading, so an append that lands after the read is never missed.
            wakeup = service.appended
            out = bytearray()
            offset = self.next_transfer_offset
            try:
                while len(out) < WRITE_BATCH_BYTES:
                    view = store.read_replication_chunk(offset, config.ha_transfer_batch_size_bytes)
                    if view is None:
                        break
                    with view:
                        out += FRAME_HEADER.pack(offset, len(view))
                        out += view
                        offset += len(view)
            except ReplicationError as exc:
                self._close(scope, f"cannot stream from offset {offset}: {exc}")
                return
            if out:
                await self.stream.send_all(out)
                self.next_transfer_offset = offset
                self.bytes_sent += len(out)
                last_write = trio.current_time()
                continue
            idle_s = trio.current_time() - last_write
            if idle_s >= heartbeat_s:
                await self.stream.send_all(FRAME_HEADER.pack(offset, 0))
                last_write = trio.current_time()
                continue
            with trio.move_on_after(heartbeat_s - idle_s):
                await wakeup.wait()
            # Let the sends that are ready run before reading: their appends then go out in this one write
            # (and come back in one acknowledgement) instead of a write and an ack each.
            await trio.lowlevel.cancel_shielded_checkpoint()


class HAServer:
    """Listens on the HA port and runs a SlaveConnection per accepted slave."""

    def __init__(self, service: HAService) -> None:
        self.service = service
        self.port = 0
        self.connections: list[SlaveConnection] = []
        self._listeners: list[Any] = []

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        config = self.service.config
        port = config.ha_listen_port
        if port == 0:
            # listenPort 0 (tests): try listen port + 1 first, so a broker restarted on its old listen port
            # gets its old HA port back and its slaves find it again; any free port otherwise.
            try:
                if not 0 < self.service.broker.port < 65535:
                    raise OSError("no listen port + 1")
                self._listeners = await trio.open_tcp_listeners(self.service.broker.port + 1,
                                                                host=config.listen_host)
            except OSError:
                self._listeners = await trio.open_tcp_listeners(0, host=config.listen_host)
        else:
            self._listeners = await trio.open_tcp_listeners(port, host=config.listen_host)
        self.port = self._listeners[0].socket.getsockname()[1]
        log.info("HA service listening on %s:%d", config.listen_host, self.port)
        task_status.started(self.port)
        await trio.serve_listeners(self._handle, self._listeners)

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            host, port = stream.socket.getpeername()[:2]
            remote = f"{host}:{port}"
        except OSError:
            remote = "?"
        conn = SlaveConnection(self.service, stream, remote)
        self.connections.append(conn)
        try:
            await conn.run()
        finally:
            self.connections.remove(conn)
            self.service.on_slave_gone(conn)
