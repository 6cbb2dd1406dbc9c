"""Helpers of the rmq_client tests: a bounded trio runner, and a raw RemotingClient that checks what the
producer stored by pulling it back from the brokers of an ``embedded_cluster`` (nothing here uses rmq_client,
so the client is checked against the broker, not against itself).
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from rmq_common._record import decode_records
from rmq_common.message import MessageExt
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h
from rmq_testing import Cluster

TIMEOUT_S = 30.0
PULL_GROUP = "CG_client_check"


def run(fn: Callable[[], Awaitable[Any]], timeout: float = TIMEOUT_S, **trio_kwargs: Any) -> Any:
    """``trio.run(fn)`` under a ``trio.fail_after`` bound."""
    async def bounded() -> Any:
        with trio.fail_after(timeout):
            return await fn()
    return trio.run(bounded, **trio_kwargs)


class Raw:
    """Direct wire access to the cluster's brokers and nameservers."""

    def __init__(self, cluster: Cluster, client: RemotingClient) -> None:
        self.cluster = cluster
        self.client = client

    def addr(self, broker: int | str = 0) -> str:
        if isinstance(broker, str):
            return next(b.broker_addr for b in self.cluster.brokers if b.config.broker_name == broker)
        return self.cluster.brokers[broker].broker_addr

    async def call(self, addr: str, code: int, ext: dict[str, str] | h.CommandHeader | None = None,
                   body: bytes | None = None, timeout_ms: float = 5000) -> RemotingCommand:
        if isinstance(ext, h.CommandHeader):
            ext = ext.to_ext()
        return await self.client.invoke(addr, RemotingCommand.request(code, ext, body), timeout_ms)

    async def pull(self, topic: str, queue_id: int, offset: int = 0, *, broker: int | str = 0,
                   max_nums: int = 32) -> list[MessageExt]:
        """One PULL_MESSAGE (no suspension); [] when there is nothing at ``offset``."""
        header = h.PullMessageRequestHeader(
            consumer_group=PULL_GROUP, topic=topic, queue_id=queue_id, queue_offset=offset, max_msg_nums=max_nums,
            sys_flag=0x4, commit_offset=0, suspend_timeout_millis=0, subscription="*", sub_version=0,
            expression_type="TAG")
        resp = await self.call(self.addr(broker), RequestCode.PULL_MESSAGE, header)
        if resp.code in (ResponseCode.PULL_NOT_FOUND, ResponseCode.PULL_OFFSET_MOVED,
                         ResponseCode.PULL_RETRY_IMMEDIATELY):
            return []
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        return decode_records(bytes(resp.body))

    async def pull_all(self, topic: str, queue_id: int, *, broker: int | str = 0) -> list[MessageExt]:
        """Every message of one queue, from offset 0."""
        out: list[MessageExt] = []
        while True:
            got = await self.pull(topic, queue_id, len(out), broker=broker)
            if not got:
                return out
            out.extend(got)

    async def topic_messages(self, topic: str, queues: int = 4, *, broker: int | str = 0) -> list[MessageExt]:
        out: list[MessageExt] = []
        for q in range(queues):
            out.extend(await self.pull_all(topic, q, broker=broker))
        return out

    async def wait_messages(self, topic: str, count: int, queues: int = 4, *, broker: int | str = 0,
                            timeout_s: float = 15.0) -> list[MessageExt]:
        """Poll until the topic holds at least ``count`` messages (delays, timers, commits)."""
        deadline = time.monotonic() + timeout_s
        while True:
            got = await self.topic_messages(topic, queues, broker=broker)
            if len(got) >= count or time.monotonic() > deadline:
                return got
            await trio.sleep(0.05)

    async def create_topic(self, topic: str, queues: int = 4, *, broker: int | str = 0, perm: int = 6) -> None:
        resp = await self.call(self.addr(broker), RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
            topic=topic, default_topic="TBW102", read_queue_nums=queues, write_queue_nums=queues, perm=perm,
            topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False))
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)

    async def route(self, topic: str, namesrv: str | None = None) -> dict | None:
        resp = await self.call(namesrv or self.cluster.nameservers[0].addr, RequestCode.GET_ROUTEINFO_BY_TOPIC,
                               h.GetRouteInfoRequestHeader(topic=topic))
        if resp.code == ResponseCode.TOPIC_NOT_EXIST:
            return None
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        return fastjson.loads(bytes(resp.body))

    async def wait_route(self, topic: str, brokers: int = 1, timeout_s: float = 15.0,
                         namesrv: str | None = None) -> dict:
        """Until the nameserver routes ``topic`` on ``brokers`` broker groups (brokers register every 30 s at
        most, and at once after a topic change)."""
        deadline = time.monotonic() + timeout_s
        while True:
            route = await self.route(topic, namesrv)
            if route is not None and len(route.get("queueDatas", [])) >= brokers:
                return route
            assert time.monotonic() < deadline, f"no route of {topic} on {brokers} broker(s): {route}"
            await trio.sleep(0.05)

    async def update_broker_config(self, props: dict[str, str], *, broker: int | str = 0) -> None:
        body = "".join(f"{k}={v}\n" for k, v in props.items()).encode()
        resp = await self.call(self.addr(broker), RequestCode.UPDATE_BROKER_CONFIG, None, body)
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)

    async def consumer_ids(self, group: str, *, broker: int | str = 0) -> list[str]:
        resp = await self.call(self.addr(broker), RequestCode.GET_CONSUMER_LIST_BY_GROUP,
                               h.GetConsumerListByGroupRequestHeader(consumer_group=group))
        if resp.code != ResponseCode.SUCCESS:
            return []
        return list(fastjson.loads(bytes(resp.body)).get("consumerIdList", []))


async def eventually(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        await trio.sleep(0.02)
