"""Helpers of the client tests with slaves: a nameserver and brokers each started and stopped on its own.

The HA byte stream is not part of these tests: a slave's messages are written through its own store
(``broker.store.put_batch``) — and, where a test needs the master to have had them too, through the master's
store — standing in for what replication would have copied.
"""
from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rmq_broker.broker import Broker
from rmq_broker.config import BrokerConfig
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode
from rmq_remoting import headers as h
from rmq_testing import Cluster, embedded_cluster, test_broker_config


class Brokers:
    """Brokers of one test, by key, all registered with the nameserver of ``cluster``."""

    def __init__(self, root: str, cluster: Cluster, client: RemotingClient) -> None:
        self.root = root
        self.cluster = cluster
        self.namesrv = cluster.namesrv_addr
        self.client = client
        self.running: dict[str, Broker] = {}
        #: Configs of the stopped brokers (their ports and store directories), for ``restart``.
        self.stopped: dict[str, BrokerConfig] = {}

    def __getitem__(self, key: str) -> Broker:
        return self.running[key]

    async def start(self, key: str, broker_name: str, broker_id: int = 0, **properties: Any) -> Broker:
        config = test_broker_config(os.path.join(self.root, key), self.namesrv, broker_name=broker_name,
                                    broker_id=broker_id, **properties)
        broker = self.running[key] = await self.cluster.start_broker(config)
        return broker

    async def stop(self, key: str) -> None:
        self.stopped[key] = await self.cluster.stop_broker(self.running.pop(key))

    async def restart(self, key: str) -> Broker:
        """The stopped broker again, on its old port and store directory."""
        broker = self.running[key] = await self.cluster.start_broker(self.stopped.pop(key))
        return broker

    async def create_topic(self, key: str, topic: str, queues: int) -> None:
        resp = await self.client.invoke(self[key].broker_addr, RemotingCommand.request(
            RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
                topic=topic, default_topic="TBW102", read_queue_nums=queues, write_queue_nums=queues, perm=6,
                topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False).to_ext()), 5000)
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


@asynccontextmanager
async def brokers(tmp_path: os.PathLike[str] | str) -> AsyncIterator[Brokers]:
    root = os.fspath(tmp_path)
    async with embedded_cluster(root, brokers=0) as cluster, RemotingClient() as client:
        yield Brokers(root, cluster, client)
