"""Helpers of the slave tests (``test_slave_*.py``): a master and its slave in one trio run, each broker
startable and stoppable on its own.

``group(tmp_path)`` starts a nameserver, the master of broker-a (``embedded_cluster``) and a slave
(``brokerId=1``, ``brokerRole=SLAVE``) of the same group, and a RemotingClient. Messages reach the slave the
real way: written on the master, replicated over the HA port (the slave learns the master's HA address from its
registration reply); ``replicated(g)`` waits until the slave's log has caught up.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from rmq_broker.broker import Broker
from rmq_broker.clock import BrokerClock
from rmq_broker.config import BrokerConfig
from rmq_remoting import RemotingClient
from rmq_testing import Cluster, embedded_cluster, test_broker_config, wait_replicated


@dataclass
class Group:
    cluster: Cluster                # the nameserver(s) and the two brokers, each stoppable on its own
    client: RemotingClient
    master: Broker
    slave: Broker
    root: str
    #: What ``stop_master`` returned: the stopped master's config (its port and store directory).
    _master_config: BrokerConfig | None = None

    @property
    def namesrv(self) -> str:
        return self.cluster.namesrv_addr

    async def stop_master(self) -> None:
        self._master_config = await self.cluster.stop_broker(self.master)

    async def restart_master(self) -> Broker:
        """A new master on the old one's port and store directory (the old one must be stopped)."""
        assert self._master_config is not None, "stop_master first"
        self.master = await self.cluster.start_broker(self._master_config)
        return self.master


async def replicated(g: Group, timeout_s: float = 15.0) -> None:
    """Wait until the slave's commitlog has every byte of the master's (and so dispatched every record)."""
    await wait_replicated(g.master, g.slave, timeout_s)


@asynccontextmanager
async def group(tmp_path: os.PathLike[str] | str, *, master_properties: Mapping[str, Any] | None = None,
                slave_properties: Mapping[str, Any] | None = None, clock: BrokerClock | None = None,
                start_sync: bool = False) -> AsyncIterator[Group]:
    """Nameserver + master + slave of broker-a. The slave's periodic metadata sync waits an hour unless
    ``start_sync``: tests call ``slave.slave_sync.sync_all()`` when they want a round."""
    root = os.fspath(tmp_path)

    def delay_sync(slave: Broker) -> None:
        if not start_sync:
            slave.slave_sync.initial_delay_ms = 3_600_000

    async with embedded_cluster(root, brokers=0, clock=clock) as cluster, RemotingClient() as client:
        master = await cluster.start_broker(test_broker_config(
            os.path.join(root, "broker-a"), cluster.namesrv_addr, broker_name="broker-a",
            **dict(master_properties or {})))
        slave = await cluster.start_broker(test_broker_config(
            os.path.join(root, "broker-a-s1"), cluster.namesrv_addr, broker_name="broker-a", broker_id=1,
            **dict(slave_properties or {})), prepare=delay_sync)
        yield Group(cluster, client, master, slave, root)
