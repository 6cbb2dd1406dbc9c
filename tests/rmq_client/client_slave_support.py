"""Helpers of the client tests with slaves: a nameserver and brokers each started and stopped on its own.

The HA byte stream is not part of these tests: a slave's messages are written through its own store
(``broker.store.put_batch``) — and, where a test needs the master to have had them too, through the master's
store — standing in for what replication would have copied.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from rmq_broker.broker import Broker
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode
from rmq_remoting import headers as h
from rmq_testing import embedded_cluster, test_broker_config


class BrokerRun:
    """One broker serving in its own cancel scope; ``stop()`` is its graceful shutdown (it unregisters)."""

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


class Brokers:
    """Brokers of one test, all registered with ``namesrv``."""

    def __init__(self, root: str, namesrv: str, nursery: trio.Nursery, client: RemotingClient) -> None:
        self.root = root
        self.namesrv = namesrv
        self.nursery = nursery
        self.client = client
        self.runs: dict[str, BrokerRun] = {}

    def __getitem__(self, key: str) -> Broker:
        return self.runs[key].broker

    async def start(self, key: str, broker_name: str, broker_id: int = 0, **properties: Any) -> Broker:
        config = test_broker_config(os.path.join(self.root, key), self.namesrv, broker_name=broker_name,
                                    broker_id=broker_id, **properties)
        return await self._start(key, Broker(config))

    async def _start(self, key: str, broker: Broker) -> Broker:
        run = BrokerRun(broker)
        await self.nursery.start(run._serve)
        self.runs[key] = run
        return broker

    async def stop(self, key: str) -> None:
        await self.runs[key].stop()

    async def restart(self, key: str) -> Broker:
        """The stopped broker again, on its old port and store directory."""
        old = self[key]
        return await self._start(key, Broker(dataclasses.replace(old.config, listen_port=old.port)))

    async def create_topic(self, key: str, topic: str, queues: int) -> None:
        resp = await self.client.invoke(self[key].broker_addr, RemotingCommand.request(
            RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
                topic=topic, default_topic="TBW102", read_queue_nums=queues, write_queue_nums=queues, perm=6,
                topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False).to_ext()), 5000)
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


@asynccontextmanager
async def brokers(tmp_path: os.PathLike[str] | str) -> AsyncIterator[Brokers]:
    root = os.fspath(tmp_path)
    async with embedded_cluster(root, brokers=0) as cluster, RemotingClient() as client, \
            trio.open_nursery() as nursery:
        try:
            yield Brokers(root, cluster.namesrv_addr, nursery, client)
        finally:
            nursery.cancel_scope.cancel()
