"""HAService: the broker's replication, one object whatever the role (Java ``HAService``).

* A master (ASYNC_MASTER or SYNC_MASTER) runs the HA server on ``haListenPort`` (listenPort + 1; a free
  port when listenPort is 0, as tests use) and streams its commitlog to every slave that connects.
  ``acked_offset`` is the highest offset any slave has acknowledged (Java ``push2SlaveMaxOffset``);
  SYNC_MASTER sends wait on it through ``wait_replicated``.
* A SLAVE marks its store as a replica (puts refused) and runs the HA client.

The store's arrival listener (called after every put, on the putting thread) wakes the streaming tasks.
"""
from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import trio

from rmq_store import PutStatus

from rmq_broker.config import BrokerRole
from rmq_broker.ha.master import HAServer, SlaveConnection
from rmq_broker.ha.slave import HAClient
from rmq_broker.ha.sync import ReplicaWaiters

if TYPE_CHECKING:
    from rmq_broker.broker import Broker

__all__ = ["HAService"]

log = logging.getLogger("rmq_broker.ha")


class HAService:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.server: HAServer | None = None
        self.client: HAClient | None = None
        self.waiters = ReplicaWaiters()
        # Set (and replaced) after every append: the streaming tasks wait on the current one.
        self.appended = trio.Event()
        self._loop_thread = 0
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def config(self) -> Any:
        return self.broker.config

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Serve (master) or replicate (slave) until cancelled. Needs the opened store."""
        store = self.broker.store
        self._loop_thread = threading.get_ident()
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            if self.broker.is_master:
                self.server = HAServer(self)
                await nursery.start(self.server.serve)
                store.arrival_listeners.append(self._on_append)
            else:
                store.replica = True
                self.client = HAClient(self)
                await nursery.start(self.client.run)
            task_status.started()

    def close(self) -> None:
        """Shutdown: answer every send still waiting for a slave (not acknowledged → FLUSH_SLAVE_TIMEOUT)."""
        self.waiters.clear()

    # -- master -----------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The HA port (0 before it is bound, and on a slave)."""
        return self.server.port if self.server is not None else 0

    @property
    def server_addr(self) -> str:
        """``brokerIP2:haPort`` (brokerIP1 when brokerIP2 is unset), as registered with nameservers."""
        config = self.config
        host = config.broker_ip2 or config.broker_ip1
        port = self.port or config.ha_listen_port or (self.broker.port + 1 if self.broker.port else 0)
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def slaves(self) -> list[SlaveConnection]:
        return list(self.server.connections) if self.server is not None else []

    @property
    def acked_offset(self) -> int:
        """Highest commitlog offset a slave has acknowledged (never goes down)."""
        return self.waiters.acked_offset

    def _on_append(self, topic: str, queue_id: int, max_offset: int) -> None:
        if threading.get_ident() == self._loop_thread:
            self._wake_streams()
        elif self._token is not None:
            try:
                self._token.run_sync_soon(self._wake_streams)
            except trio.RunFinishedError:
                pass

    def _wake_streams(self) -> None:
        event, self.appended = self.appended, trio.Event()
        event.set()

    def on_slave_ack(self, conn: SlaveConnection, offset: int) -> None:
        self.waiters.on_ack(offset)

    def on_slave_gone(self, conn: SlaveConnection) -> None:
        log.info("HA: slave %s gone (acked %d); %d slave(s) connected", conn.remote, conn.acked_offset,
                 len(self.slaves))

    def is_slave_ok(self, end_offset: int) -> bool:
        """A slave is connected and less than haSlaveFallbehindMax behind ``end_offset`` (Java isSlaveOK)."""
        return bool(self.slaves) and end_offset - self.acked_offset < self.config.ha_slave_fallbehind_max_bytes

    async def wait_replicated(self, end_offset: int) -> PutStatus:
        """SYNC_MASTER: PUT_OK once a slave acknowledged ``end_offset``; SLAVE_NOT_AVAILABLE at once when no
        slave is connected or the slave is too far behind; FLUSH_SLAVE_TIMEOUT after ``slaveTimeout``."""
        if self.acked_offset >= end_offset:
            return PutStatus.PUT_OK
        if not self.is_slave_ok(end_offset):
            return PutStatus.SLAVE_NOT_AVAILABLE
        if await self.waiters.wait(end_offset, self.config.slave_timeout_ms):
            return PutStatus.PUT_OK
        return PutStatus.FLUSH_SLAVE_TIMEOUT

    @property
    def sync_master(self) -> bool:
        return self.config.broker_role is BrokerRole.SYNC_MASTER

    # -- monitoring -------------------------------------------------------------------------------

    def runtime_info(self) -> dict[str, str]:
        """HA entries of GET_BROKER_RUNTIME_INFO."""
        store = self.broker.store
        if self.broker.is_master:
            slaves = self.slaves
            return {
                "haConnections": str(len(slaves)),
                "haSlaveAckOffset": str(self.acked_offset),
                # Java's slaveFallBehindMuch: bytes the slaves have not acknowledged yet
                "slaveFallBehindMuch": str(max(0, store.max_phy_offset - self.acked_offset) if slaves else 0),
            }
        client = self.client
        return {
            "haMasterAddress": (client.master_addr if client else None) or "",
            "haConnected": "true" if client is not None and client.connected else "false",
            "haReceivedBytes": str(client.bytes_received if client else 0),
        }
