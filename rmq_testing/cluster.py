"""An rmq cluster inside the current trio run: nameservers and brokers on free loopback ports.

Everything is real — sockets, the store's mapped files, registration, long polling — only small:
commitlog files of 16 MiB so a test does not allocate gigabytes. Leaving the ``async with`` block
shuts every broker down cleanly (unregister, answer held pulls, flush, close the store) and then
the nameservers.

Slaves (``slaves=n``) replicate each group's master over HA: brokerId 1..n with the master's brokerName,
role SLAVE, their own store directories; they find the master's HA address through the nameserver (or
``haMasterAddress`` when there is no nameserver). ``Cluster.stop_broker`` / ``start_broker`` /
``restart_broker`` stop a broker and start it again on the same ports and store directory.

Timers run on trio's clock, so a test can pass ``trio.testing.MockClock`` to ``trio.run`` and give
the brokers a ``BrokerClock(mock_clock)`` to make minutes of broker time pass in milliseconds.
"""
from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from rmq_broker.broker import Broker
from rmq_broker.clock import BrokerClock
from rmq_broker.config import BrokerConfig
from rmq_nameserver import NamesrvConfig, NameServer

__all__ = ["Cluster", "embedded_cluster", "test_broker_config", "wait_replicated"]

TEST_COMMITLOG_FILE_BYTES = 16 * 1024 * 1024
TEST_CONSUME_QUEUE_FILE_BYTES = 30_000 * 20
TEST_INDEX_HASH_SLOTS = 20_000          # index file: 40 + 4·slots + 20·entries bytes ≈ 1.7 MB
TEST_INDEX_ENTRIES = 80_000


def test_broker_config(store_dir: str | os.PathLike[str], namesrv_addr: str | None, *,
                       broker_name: str = "broker-a", broker_id: int = 0, cluster: str = "DefaultCluster",
                       listen_port: int = 0, **properties: Any) -> BrokerConfig:
    """A BrokerConfig for tests: loopback, free port, small files; ``properties`` use RocketMQ key names."""
    props: dict[str, Any] = {
        "brokerClusterName": cluster, "brokerName": broker_name, "brokerId": broker_id,
        "brokerIP1": "127.0.0.1", "bindAddress": "127.0.0.1", "listenPort": listen_port,
        "vipChannelEnable": "false", "storePathRootDir": str(store_dir),
        "mappedFileSizeCommitLog": TEST_COMMITLOG_FILE_BYTES,
        "mappedFileSizeConsumeQueue": TEST_CONSUME_QUEUE_FILE_BYTES,
        # RocketMQ's index defaults make a 420 MB file per broker: too much for a suite of broker tests.
        "maxHashSlotNum": TEST_INDEX_HASH_SLOTS, "maxIndexNum": TEST_INDEX_ENTRIES,
    }
    if broker_id != 0:
        props["brokerRole"] = "SLAVE"
        # A slave that starts before its master is registered, or loses it, retries soon rather than in 5 s.
        props["haReconnectInterval"] = TEST_HA_RECONNECT_INTERVAL_MS
    if namesrv_addr:
        props["namesrvAddr"] = namesrv_addr
    props.update(properties)
    return BrokerConfig.from_properties({k: str(v) for k, v in props.items()})


#: Reconnect wait of test slaves: a restarted master is found again quickly (RocketMQ's fixed wait is 5 s).
TEST_HA_RECONNECT_INTERVAL_MS = 200


@dataclass
class Cluster:
    """What ``embedded_cluster`` yields: the running servers and how to reach them."""

    nameservers: list[NameServer] = field(default_factory=list)
    brokers: list[Broker] = field(default_factory=list)          # the masters, broker-a, broker-b, ...
    slaves: list[Broker] = field(default_factory=list)           # every slave, group by group
    clock: BrokerClock | None = None
    _nursery: trio.Nursery | None = None
    #: Every broker serving now (started by ``start_broker``, not yet stopped), by ``id()``: its cancel scope, the
    #: event set when it has ended, and the broker itself.
    _running: dict[int, tuple[trio.CancelScope, trio.Event, Broker]] = field(default_factory=dict)

    @property
    def namesrv_addr(self) -> str:
        """``;``-separated nameserver addresses, as clients and brokers take them."""
        return ";".join(ns.addr for ns in self.nameservers)

    @property
    def broker(self) -> Broker:
        """The first broker (most tests have one)."""
        return self.brokers[0]

    def slaves_of(self, master: Broker) -> list[Broker]:
        return [s for s in self.slaves if s.config.broker_name == master.config.broker_name]

    async def start_broker(self, config: BrokerConfig, *, prepare: Callable[[Broker], None] | None = None) -> Broker:
        """Start a broker from ``config`` in the cluster (it stops when the cluster does); ``prepare`` may
        adjust the Broker object before it serves (a test's timer settings).

        A restart asks for the broker's old ports; on a shared machine another process may have taken one
        meanwhile. Then the broker starts on free ports instead (its HA port alone may also have moved: it is
        listenPort + 1 only when that was free). After any restart every other broker registers again at once,
        so slaves learn the master's current addresses now rather than at their next registration period."""
        restarting = config.listen_port != 0
        try:
            broker = await self._start_broker(config, prepare)
        except BaseException as exc:
            if not restarting or not _address_in_use(exc):
                raise
            broker = await self._start_broker(dataclasses.replace(config, listen_port=0), prepare)
        if restarting:
            # every running broker, including ones a test restarted with stop_broker + start_broker (those are
            # not in ``brokers`` / ``slaves``)
            for _, _, other in list(self._running.values()):
                if other is not broker:
                    other.registrar.request_register()
        return broker

    async def _start_broker(self, config: BrokerConfig, prepare: Callable[[Broker], None] | None) -> Broker:
        assert self._nursery is not None, "the cluster is not running"
        broker = Broker(config, clock=self.clock)
        if prepare is not None:
            prepare(broker)
        scope = trio.CancelScope()
        done = trio.Event()

        async def run(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await broker.serve(task_status=task_status)
            finally:
                done.set()

        await self._nursery.start(run)
        self._running[id(broker)] = (scope, done, broker)
        return broker

    async def stop_broker(self, broker: Broker) -> BrokerConfig:
        """Shut ``broker`` down gracefully (it unregisters, closes its store) and wait until it has. Returns
        a config to start it again with: the same store directory and the same listen port."""
        scope, done, _ = self._running.pop(id(broker))
        scope.cancel()
        await done.wait()
        return dataclasses.replace(broker.config, listen_port=broker.port)

    async def restart_broker(self, broker: Broker) -> Broker:
        """Stop ``broker`` and start it again on its store; the new Broker replaces it in the lists."""
        config = await self.stop_broker(broker)
        new = await self.start_broker(config)
        for group in (self.brokers, self.slaves):
            for i, b in enumerate(group):
                if b is broker:
                    group[i] = new
        return new


async def wait_replicated(master: Broker, slave: Broker, timeout_s: float = 15.0) -> None:
    """Wait until the slave's commitlog holds every byte of the master's (and so has dispatched every record)."""
    with trio.fail_after(timeout_s):
        while slave.store.max_phy_offset != master.store.max_phy_offset:
            await trio.sleep(0.01)


def _address_in_use(exc: BaseException) -> bool:
    """Whether ``exc`` (or an exception in a group of them) is EADDRINUSE."""
    if isinstance(exc, BaseExceptionGroup):
        return any(_address_in_use(e) for e in exc.exceptions)
    return isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE


@asynccontextmanager
async def embedded_cluster(root_dir: str | os.PathLike[str], *, nameservers: int = 1,
                           brokers: int = 1, slaves: int = 0, broker_properties: Mapping[str, Any] | None = None,
                           slave_properties: Mapping[str, Any] | None = None,
                           clock: BrokerClock | None = None) -> AsyncIterator[Cluster]:
    """Start ``nameservers`` nameservers, ``brokers`` master brokers (broker-a, broker-b, ...) and ``slaves``
    slaves of each master. ``broker_properties`` apply to every broker, ``slave_properties`` to slaves
    on top of them."""
    root = os.fspath(root_dir)
    cluster = Cluster(clock=clock)
    # Brokers live in an inner nursery so they stop (and unregister) while the nameservers still run.
    async with trio.open_nursery() as ns_nursery:
        for i in range(nameservers):
            ns = NameServer(NamesrvConfig(listen_port=0, listen_host="127.0.0.1",
                                          rmq_home=os.path.join(root, f"namesrv-{i}")))
            await ns_nursery.start(ns.serve)
            cluster.nameservers.append(ns)
        try:
            async with trio.open_nursery() as broker_nursery:
                cluster._nursery = broker_nursery
                for i in range(brokers):
                    name = f"broker-{chr(ord('a') + i)}"
                    config = test_broker_config(os.path.join(root, name), cluster.namesrv_addr or None,
                                                broker_name=name, **dict(broker_properties or {}))
                    cluster.brokers.append(await cluster.start_broker(config))
                for master in list(cluster.brokers):
                    name = master.config.broker_name
                    for j in range(1, slaves + 1):
                        props: dict[str, Any] = {"haReconnectInterval": TEST_HA_RECONNECT_INTERVAL_MS}
                        if not nameservers:
                            props["haMasterAddress"] = master.ha_addr
                        props.update(broker_properties or {})
                        props.pop("brokerRole", None)           # a master's role is not a slave's
                        props.update(slave_properties or {})
                        config = test_broker_config(os.path.join(root, f"{name}-s{j}"), cluster.namesrv_addr or None,
                                                    broker_name=name, broker_id=j, **props)
                        cluster.slaves.append(await cluster.start_broker(config))
                try:
                    yield cluster
                finally:
                    broker_nursery.cancel_scope.cancel()
        finally:
            ns_nursery.cancel_scope.cancel()
