"""The slave's side of HA (Java ``HAService.HAClient``): connect to the master, report, append what it sends.

The master's HA address is ``haMasterAddress`` when configured, else the one the nameserver returned in
the last REGISTER_BROKER reply (``broker.registrar.master_ha_addr``), read again before every attempt so
a master that moved is followed. On a link:

* the slave reports its commitlog max offset at once, after every read that appended bytes, and at
  least every ``haSendHeartbeatInterval`` — one writer task, so reports coalesce into one 8-byte write;
* every frame must start at the slave's max offset (unless the slave is empty); otherwise the link is
  dropped and the next connection reports the right offset;
* bytes are appended with ``MessageStore.append_replicated`` (records dispatched as they complete);
* ``haHousekeepingInterval`` without any frame (the master heartbeats every 5 s) drops the link.

After a failed connection or a closed link the client waits ``haReconnectInterval`` (5 s, as Java's
fixed wait) and tries again, for as long as the broker runs: a master that comes back is caught up with
no operator action.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from rmq_store import ReplicationError, StoreError

from rmq_broker.ha.wire import FRAME_HEADER, FRAME_HEADER_BYTES, MAX_FRAME_BODY_BYTES, OFFSET_REPORT

if TYPE_CHECKING:
    from rmq_broker.ha.service import HAService

__all__ = ["HAClient"]

log = logging.getLogger("rmq_broker.ha.slave")

READ_BYTES = 1024 * 1024
CONNECT_TIMEOUT_S = 3.0


class _LinkClosed(Exception):
    """The link must be dropped (reason in args[0]); the client reconnects."""


def _split_host_port(addr: str) -> tuple[str, int] | None:
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


class HAClient:
    def __init__(self, service: HAService) -> None:
        self.service = service
        self.master_addr: str | None = None      # the address of the current (or last) link
        self.connected = False
        self.connects = 0                        # links established so far
        self.bytes_received = 0
        self.last_error: str | None = None
        self._report_now = trio.Event()

    def _target(self) -> str | None:
        config = self.service.config
        return config.ha_master_address or self.service.broker.registrar.master_ha_addr

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        retry_s = self.service.config.ha_reconnect_interval_ms / 1000
        while True:
            addr = self._target()
            if addr is not None:
                await self._link(addr)
            await trio.sleep(retry_s)

    async def _link(self, addr: str) -> None:
        target = _split_host_port(addr)
        if target is None:
            self.last_error = f"bad master HA address {addr!r}"
            log.error("HA: %s", self.last_error)
            return
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(*target)
        except (OSError, trio.TooSlowError) as exc:
            self.last_error = f"connect to master {addr} failed: {exc!r}"
            log.info("HA: %s", self.last_error)
            return
        self.master_addr = addr
        self.connected = True
        self.connects += 1
        store = self.service.broker.store
        log.info("HA: connected to master %s, reporting offset %d", addr, store.max_phy_offset)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._guarded, self._report_loop, stream, nursery.cancel_scope)
                nursery.start_soon(self._guarded, self._receive_loop, stream, nursery.cancel_scope)
        finally:
            self.connected = False
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)
            log.info("HA: link to master %s closed: %s", addr, self.last_error)

    async def _guarded(self, loop: Any, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        try:
            await loop(stream)
            self.last_error = "the master closed the connection"
        except _LinkClosed as exc:
            self.last_error = str(exc)
            log.warning("HA: dropping the link to %s: %s", self.master_addr, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.last_error = f"socket error: {exc!r}"
        except StoreError as exc:          # the store was closed under us (shutdown)
            self.last_error = f"store: {exc}"
        scope.cancel()

    async def _report_loop(self, stream: trio.SocketStream) -> None:
        store = self.service.broker.store
        interval_s = self.service.config.ha_send_heartbeat_interval_ms / 1000
        while True:
            self._report_now = trio.Event()
            await stream.send_all(OFFSET_REPORT.pack(store.max_phy_offset))
            with trio.move_on_after(interval_s):
                await self._report_now.wait()

    async def _receive_loop(self, stream: trio.SocketStream) -> None:
        store = self.service.broker.store
        housekeeping_s = self.service.config.ha_housekeeping_interval_ms / 1000
        buf = bytearray()
        while True:
            with trio.move_on_after(housekeeping_s) as timer:
                data = await stream.receive_some(READ_BYTES)
            if timer.cancelled_caught:
                raise _LinkClosed(f"nothing from the master for {self.service.config.ha_housekeeping_interval_ms} ms")
            if not data:
                return
            self.bytes_received += len(data)
            buf += data
            appended = False
            pos = 0
            view = memoryview(buf)
            try:
                while len(buf) - pos >= FRAME_HEADER_BYTES:
                    offset, size = FRAME_HEADER.unpack_from(buf, pos)
                    if size < 0 or size > MAX_FRAME_BODY_BYTES or offset < 0:
                        raise _LinkClosed(f"malformed frame header (offset {offset}, size {size})")
                    if len(buf) - pos - FRAME_HEADER_BYTES < size:
                        break
                    max_offset = store.max_phy_offset
                    if max_offset != 0 and offset != max_offset:
                        raise _LinkClosed(f"the master sent offset {offset}, the slave's log ends at {max_offset}")
                    start = pos + FRAME_HEADER_BYTES
                    pos = start + size
                    if size:
                        with view[start:pos] as body:
                            try:
                                store.append_replicated(offset, body)
                            except ReplicationError as exc:
                                raise _LinkClosed(f"replicated bytes refused: {exc}") from None
                        appended = True
            finally:
                view.release()
            del buf[:pos]
            if appended:
                self._report_now.set()      # acknowledge at once: SYNC_MASTER sends wait for it
