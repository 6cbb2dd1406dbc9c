"""Helpers of the slave tests (``test_slave_*.py``): a master and its slave in one trio run, each broker
startable and stoppable on its own.

``group(tmp_path)`` starts a nameserver, the master of broker-a (``embedded_cluster``) and a slave
(``brokerId=1``, ``brokerRole=SLAVE``) of the same group, and a RemotingClient. The byte stream from master
to slave (HA) is not part of these tests: where a slave needs messages, the test writes them through the
slave's own store (``slave.store.put``), which gives it the same kind of log the replication would.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from rmq_broker.broker import Broker
from rmq_broker.clock import BrokerClock
from rmq_remoting import RemotingClient
from rmq_testing import Cluster, embedded_cluster, test_broker_config


class RunningBroker:
    """A broker serving in its own cancel scope: ``stop()`` shuts it down gracefully (unregisters)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._scope = trio.CancelScope()
        self._done = trio.Event()

    async def _serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with self._scope:
                await self.broker.serve(task_status=task_status)
        finally:
            self._done.set()

    async def stop(self) -> None:
        self._scope.cancel()
        await self._done.wait()


async def start_broker(nursery: trio.Nursery, broker: Broker) -> RunningBroker:
    running = RunningBroker(broker)
    await nursery.start(running._serve)
    return running


@dataclass
class Group:
    cluster: Cluster                # the nameserver(s); brokers are the runs below
    client: RemotingClient
    nursery: trio.Nursery
    master_run: RunningBroker
    slave_run: RunningBroker
    root: str
    clock: BrokerClock | None

    @property
    def master(self) -> Broker:
        return self.master_run.broker

    @property
    def slave(self) -> Broker:
        return self.slave_run.broker

    @property
    def namesrv(self) -> str:
        return self.cluster.namesrv_addr

    async def stop_master(self) -> None:
        await self.master_run.stop()

    async def restart_master(self) -> Broker:
        """A new master on the old one's port and store directory (the old one must be stopped)."""
        old = self.master
        config = dataclasses.replace(old.config, listen_port=old.port)
        self.master_run = await start_broker(self.nursery, Broker(config, clock=self.clock))
        return self.master


@asynccontextmanager
async def group(tmp_path: os.PathLike[str] | str, *, master_properties: Mapping[str, Any] | None = None,
                slave_properties: Mapping[str, Any] | None = None, clock: BrokerClock | None = None,
                start_sync: bool = False) -> AsyncIterator[Group]:
    """Nameserver + master + slave of broker-a. The slave's periodic metadata sync waits an hour unless
    ``start_sync``: tests call ``slave.slave_sync.sync_all()`` when they want a round."""
    root = os.fspath(tmp_path)
    async with embedded_cluster(root, brokers=0, clock=clock) as cluster, RemotingClient() as client, \
            trio.open_nursery() as nursery:
        master = Broker(test_broker_config(os.path.join(root, "broker-a"), cluster.namesrv_addr,
                                           broker_name="broker-a", **dict(master_properties or {})), clock=clock)
        master_run = await start_broker(nursery, master)
        slave = Broker(test_broker_config(os.path.join(root, "broker-a-s1"), cluster.namesrv_addr,
                                          broker_name="broker-a", broker_id=1, **dict(slave_properties or {})),
                       clock=clock)
        if not start_sync:
            slave.slave_sync.initial_delay_ms = 3_600_000
        slave_run = await start_broker(nursery, slave)
        try:
            yield Group(cluster, client, nursery, master_run, slave_run, root, clock)
        finally:
            nursery.cancel_scope.cancel()
