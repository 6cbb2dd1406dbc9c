"""Helpers of the over-the-wire broker tests (``test_broker_wire_*.py``): a bounded trio runner, and a
client talking to an ``embedded_cluster`` broker with typed headers.

Every request goes through a real socket to a real broker (and its nameserver); nothing here reaches
into the broker object except to read what a test cannot get over the wire (its address).
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from rmq_common._record import decode_records
from rmq_common.message import MessageExt
from rmq_common.properties import encode_properties
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode
from rmq_remoting import headers as h
from rmq_testing import Cluster, embedded_cluster

TIMEOUT_S = 20.0
GROUP = "CG_wire"
PRODUCER_GROUP = "PG_wire"


def run(fn: Callable[[], Awaitable[Any]], timeout: float = TIMEOUT_S, **trio_kwargs: Any) -> Any:
    """``trio.run(fn)`` under a ``trio.fail_after`` bound (every test carries its own deadline)."""
    async def bounded() -> Any:
        with trio.fail_after(timeout):
            return await fn()
    return trio.run(bounded, **trio_kwargs)


def run_mock(fn: Callable[[], Awaitable[Any]], clock: Any, real_timeout_s: float = TIMEOUT_S) -> None:
    """``trio.run(fn)`` on a MockClock, bounded in *real* time (a ``fail_after`` would run on the mock clock, which
    tests jump by minutes)."""
    async def bounded() -> None:
        token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            def expire() -> None:
                try:
                    token.run_sync_soon(scope.cancel)
                except trio.RunFinishedError:
                    pass
            timer = threading.Timer(real_timeout_s, expire)
            timer.start()
            try:
                await fn()
            finally:
                timer.cancel()
        assert not scope.cancelled_caught, f"the test took more than {real_timeout_s} s of real time"
    trio.run(bounded, clock=clock)


def props(**kv: str) -> str:
    """A property string (``name\\x01value`` pairs joined by ``\\x02``) from keyword arguments."""
    return encode_properties(kv).decode()


class Wire:
    """One RemotingClient (one connection per address) talking to the cluster's first broker."""

    def __init__(self, cluster: Cluster, client: RemotingClient) -> None:
        self.cluster = cluster
        self.client = client

    @property
    def addr(self) -> str:
        return self.cluster.broker.broker_addr

    @property
    def namesrv(self) -> str:
        return self.cluster.nameservers[0].addr

    async def call(self, code: int, ext: Mapping[str, str] | h.CommandHeader | None = None,
                   body: bytes | None = None, *, addr: str | None = None, timeout_ms: float = 5000) -> RemotingCommand:
        if isinstance(ext, h.CommandHeader):
            ext = ext.to_ext()
        cmd = RemotingCommand.request(code, dict(ext) if ext is not None else None, body)
        return await self.client.invoke(addr or self.addr, cmd, timeout_ms)

    # -- send -----------------------------------------------------------------------------------

    def send_header(self, topic: str, *, queue_id: int = 0, properties: str | None = None, sys_flag: int = 0,
                    flag: int = 0, default_topic: str = "TBW102", default_topic_queue_nums: int = 4,
                    batch: bool = False, born_timestamp: int | None = None,
                    producer_group: str = PRODUCER_GROUP) -> h.SendMessageRequestHeader:
        return h.SendMessageRequestHeader(
            producer_group=producer_group, topic=topic, default_topic=default_topic,
            default_topic_queue_nums=default_topic_queue_nums, queue_id=queue_id, sys_flag=sys_flag,
            born_timestamp=int(time.time() * 1000) if born_timestamp is None else born_timestamp, flag=flag,
            properties=properties, reconsume_times=0, unit_mode=False, batch=batch)

    async def send(self, topic: str, body: bytes = b"hello", *, code: int = RequestCode.SEND_MESSAGE_V2,
                   **kw: Any) -> RemotingCommand:
        """SEND_MESSAGE (10, long header) or SEND_MESSAGE_V2/SEND_BATCH_MESSAGE (short header)."""
        header = self.send_header(topic, **kw)
        ext = header.to_ext() if code == RequestCode.SEND_MESSAGE else header.to_v2().to_ext()
        return await self.call(code, ext, body)

    async def send_ok(self, topic: str, body: bytes = b"hello", **kw: Any) -> h.SendMessageResponseHeader:
        resp = await self.send(topic, body, **kw)
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        return h.SendMessageResponseHeader.decode(resp.ext_fields)

    # -- pull -----------------------------------------------------------------------------------

    def pull_header(self, topic: str, queue_id: int = 0, offset: int = 0, *, group: str = GROUP, max_nums: int = 32,
                    sys_flag: int = 0x4, subscription: str | None = "*", suspend_ms: int = 0,
                    commit_offset: int = 0, sub_version: int = 0) -> h.PullMessageRequestHeader:
        return h.PullMessageRequestHeader(
            consumer_group=group, topic=topic, queue_id=queue_id, queue_offset=offset, max_msg_nums=max_nums,
            sys_flag=sys_flag, commit_offset=commit_offset, suspend_timeout_millis=suspend_ms,
            subscription=subscription, sub_version=sub_version, expression_type="TAG")

    async def pull(self, topic: str, queue_id: int = 0, offset: int = 0, *, timeout_ms: float = 5000,
                   **kw: Any) -> RemotingCommand:
        return await self.call(RequestCode.PULL_MESSAGE, self.pull_header(topic, queue_id, offset, **kw),
                               timeout_ms=timeout_ms)

    async def pull_records(self, topic: str, queue_id: int = 0, offset: int = 0, **kw: Any) -> list[MessageExt]:
        resp = await self.pull(topic, queue_id, offset, **kw)
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        return decode_records(bytes(resp.body))

    # -- offsets --------------------------------------------------------------------------------

    async def max_offset(self, topic: str, queue_id: int = 0) -> int:
        resp = await self.call(RequestCode.GET_MAX_OFFSET, h.GetMaxOffsetRequestHeader(topic=topic, queue_id=queue_id))
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        return h.GetMaxOffsetResponseHeader.decode(resp.ext_fields).offset

    async def max_offsets(self, topic: str, queues: int) -> list[int]:
        return [await self.max_offset(topic, q) for q in range(queues)]

    async def query_offset(self, topic: str, queue_id: int = 0, group: str = GROUP) -> RemotingCommand:
        return await self.call(RequestCode.QUERY_CONSUMER_OFFSET, h.QueryConsumerOffsetRequestHeader(
            consumer_group=group, topic=topic, queue_id=queue_id))

    # -- admin ----------------------------------------------------------------------------------

    async def create_topic(self, topic: str, queues: int = 4, *, perm: int = 6, filter_type: str = "SINGLE_TAG",
                           read_queues: int | None = None) -> None:
        resp = await self.call(RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
            topic=topic, default_topic="TBW102", read_queue_nums=queues if read_queues is None else read_queues,
            write_queue_nums=queues, perm=perm, topic_filter_type=filter_type, topic_sys_flag=0, order=False))
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)

    async def route(self, topic: str) -> RemotingCommand:
        return await self.call(RequestCode.GET_ROUTEINFO_BY_TOPIC, h.GetRouteInfoRequestHeader(topic=topic),
                               addr=self.namesrv)

    async def heartbeat(self, client_id: str, group: str = GROUP, subscriptions: Mapping[str, str] | None = None,
                        *, message_model: str = "CLUSTERING") -> RemotingCommand:
        # without tagsSet/codeSet, as the C++ client sends it: the broker derives them from subString
        subs = [{"classFilterMode": False, "expressionType": "TAG", "subString": sub, "subVersion": 1,
                 "topic": topic} for topic, sub in (subscriptions or {}).items()]
        body = orjson.dumps({"clientID": client_id, "consumerDataSet": [
            {"consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "consumeType": "CONSUME_PASSIVELY", "groupName": group,
             "messageModel": message_model, "unitMode": False, "subscriptionDataSet": subs}],
            "producerDataSet": [{"groupName": PRODUCER_GROUP}]})
        return await self.call(RequestCode.HEART_BEAT, None, body)


@asynccontextmanager
async def wire(tmp_path: os.PathLike[str] | str, **cluster_kwargs: Any) -> AsyncIterator[Wire]:
    """An embedded nameserver + broker and a client connected to them."""
    async with embedded_cluster(tmp_path, **cluster_kwargs) as cluster, RemotingClient() as client:
        yield Wire(cluster, client)


@asynccontextmanager
async def extra_client() -> AsyncIterator[RemotingClient]:
    """Another RemotingClient: its own connection to the broker."""
    async with RemotingClient() as client:
        yield client
