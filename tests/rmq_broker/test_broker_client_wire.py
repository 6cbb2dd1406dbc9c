"""The client-management handlers over real sockets: two consumers of one group, notifications, locks."""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import trio

from rmq_broker.client_manager import ConsumerManager, IdsChangedNotifier, ProducerManager
from rmq_broker.lock_manager import RebalanceLockManager
from rmq_broker.processors.client_manage import ClientManageProcessor
from rmq_remoting import RemotingClient, RemotingCommand, RemotingServer, RequestCode, ResponseCode

GROUP = "CGpy_sync_179555216118368"
TIMEOUT_S = 10


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(TIMEOUT_S):
            return await fn()
    return trio.run(bounded)


def cpp_heartbeat(client_id: str, group: str = GROUP) -> bytes:
    """The C++ client's form (CAPTURES.md §2): ordinals, string subVersion, trailing newline."""
    return (f'{{"clientID":"{client_id}","consumerDataSet":[{{"consumeFromWhere":0,"consumeType":1,'
            f'"groupName":"{group}","messageModel":1,"subscriptionDataSet":['
            f'{{"subString":"*","subVersion":"1795552161199","topic":"%RETRY%{group}"}},'
            f'{{"subString":"*","subVersion":"1795552161199","topic":"ITpy_sync"}}]}}]}}\n').encode()


def java_heartbeat(client_id: str, group: str = GROUP, producer: str = "PG") -> bytes:
    return orjson.dumps({
        "clientID": client_id,
        "consumerDataSet": [{"consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "consumeType": "CONSUME_PASSIVELY",
                             "groupName": group, "messageModel": "CLUSTERING", "unitMode": False,
                             "subscriptionDataSet": [
                                 {"classFilterMode": False, "codeSet": [], "expressionType": "TAG",
                                  "subString": "*", "subVersion": 1795552161199, "tagsSet": [],
                                  "topic": f"%RETRY%{group}"},
                                 {"classFilterMode": False, "codeSet": [], "expressionType": "TAG",
                                  "subString": "*", "subVersion": 1795552161199, "tagsSet": [], "topic": "ITpy_sync"}]}],
        "producerDataSet": [{"groupName": producer}, {"groupName": "CLIENT_INNER_PRODUCER"}]})


@dataclass
class GroupConfig:
    retry_queue_nums: int = 1
    notify_consumer_ids_changed_enable: bool = True


@dataclass
class Broker:
    server: RemotingServer
    consumers: ConsumerManager
    producers: ProducerManager
    locks: RebalanceLockManager
    processor: ClientManageProcessor
    listener_calls: list[tuple[str, list]] = field(default_factory=list)
    retry_topics: list[tuple[str, int]] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@asynccontextmanager
async def broker(*, known: Callable[[str], bool] = lambda g: True, **proc_kwargs: Any) -> AsyncIterator[Broker]:
    async with trio.open_nursery() as nursery:
        server = RemotingServer(0)
        consumers, producers, locks = ConsumerManager(), ProducerManager(), RebalanceLockManager()
        notifier = IdsChangedNotifier(nursery)

        async def ensure_group(group: str) -> GroupConfig | None:        # async on purpose: both forms work
            return GroupConfig() if known(group) else None

        proc = ClientManageProcessor(consumers, producers, locks, ensure_group=ensure_group,
                                     ensure_retry_topic=lambda g, n: b.retry_topics.append((g, n)), **proc_kwargs)
        b = Broker(server, consumers, producers, locks, proc)

        def listener(group: str, conns: list) -> None:
            b.listener_calls.append((group, conns))
            notifier(group, conns)

        consumers.on_ids_changed = listener
        proc.register(server)
        await nursery.start(server.serve)
        try:
            yield b
        finally:
            server.close()


class Consumer:
    """A RemotingClient that records the NOTIFY_CONSUMER_IDS_CHANGED requests it receives."""

    def __init__(self) -> None:
        self.client = RemotingClient()
        self.notified_send, self.notified = trio.open_memory_channel[RemotingCommand](100)
        self.client.register(RequestCode.NOTIFY_CONSUMER_IDS_CHANGED, self._on_notify)

    async def _on_notify(self, conn: Any, cmd: RemotingCommand) -> None:
        self.notified_send.send_nowait(cmd)

    async def next_notification(self) -> RemotingCommand:
        with trio.fail_after(5):
            return await self.notified.receive()

    def pending_notifications(self) -> int:
        return self.notified.statistics().current_buffer_used


async def call(c: Consumer, b: Broker, code: int, ext: dict | None = None, body: bytes | None = None) -> RemotingCommand:
    return await c.client.invoke(b.addr, RemotingCommand.request(code, ext, body), 3000)


async def consumer_list(c: Consumer, b: Broker) -> RemotingCommand:
    return await call(c, b, RequestCode.GET_CONSUMER_LIST_BY_GROUP, {"consumerGroup": GROUP})


def test_two_consumers_join_list_notify_and_leave() -> None:
    async def main() -> None:
        async with broker() as b:
            c1, c2 = Consumer(), Consumer()
            async with c1.client, c2.client:
                resp = await call(c1, b, RequestCode.HEART_BEAT, body=cpp_heartbeat("c1"))
                assert (resp.code, resp.remark, resp.body) == (ResponseCode.SUCCESS, None, None)
                note = await c1.next_notification()                 # its own arrival changed the group
                assert note.code == 40 and note.ext_fields["consumerGroup"] == GROUP
                assert b.retry_topics == [(GROUP, 1)]

                resp = await call(c2, b, RequestCode.HEART_BEAT, body=java_heartbeat("c2"))
                assert resp.code == ResponseCode.SUCCESS
                note = await c1.next_notification()                 # the second consumer joined
                assert note.ext_fields == {"consumerGroup": GROUP}
                await c2.next_notification()
                assert len(b.listener_calls) == 2

                resp = await consumer_list(c1, b)
                assert resp.code == ResponseCode.SUCCESS
                assert sorted(orjson.loads(resp.body)["consumerIdList"]) == ["c1", "c2"]
                assert b.producers.find_channel("c2") is not None   # its producers registered too

                # Refreshing heartbeats change nothing: the listener is called synchronously inside the
                # heartbeat handler, so its count is final once the answer arrives.
                await call(c1, b, RequestCode.HEART_BEAT, body=cpp_heartbeat("c1"))
                await call(c2, b, RequestCode.HEART_BEAT, body=java_heartbeat("c2"))
                assert len(b.listener_calls) == 2

                await c2.client.aclose()                            # connection ends → close hook
                note = await c1.next_notification()
                assert note.ext_fields == {"consumerGroup": GROUP}
                assert len(b.listener_calls) == 3
                resp = await consumer_list(c1, b)
                assert orjson.loads(resp.body) == {"consumerIdList": ["c1"]}
                assert b.producers.find_channel("c2") is None

                resp = await call(c1, b, RequestCode.UNREGISTER_CLIENT,
                                  {"clientID": "c1", "consumerGroup": GROUP, "producerGroup": ""})
                assert resp.code == ResponseCode.SUCCESS
                resp = await consumer_list(c1, b)
                assert resp.code == ResponseCode.SYSTEM_ERROR
                assert resp.remark == f"no consumer for this group, {GROUP}"
                assert len(b.listener_calls) == 3                   # nobody left to notify
                assert c1.pending_notifications() == 0

    run(main)


def test_lock_and_unlock_over_the_wire() -> None:
    def body(client_id: str, *queues: int) -> bytes:
        return orjson.dumps({"clientId": client_id, "consumerGroup": GROUP,
                             "mqSet": [{"brokerName": "broker-a", "queueId": q, "topic": "T"} for q in queues]})

    def granted(resp: RemotingCommand) -> list[int]:
        assert resp.code == ResponseCode.SUCCESS
        return [mq["queueId"] for mq in orjson.loads(resp.body)["lockOKMQSet"]]

    async def main() -> None:
        async with broker() as b:
            c1, c2 = Consumer(), Consumer()
            async with c1.client, c2.client:
                assert granted(await call(c1, b, RequestCode.LOCK_BATCH_MQ, body=body("c1", 0, 1))) == [0, 1]
                resp = await call(c2, b, RequestCode.LOCK_BATCH_MQ, body=body("c2", 1, 2))
                assert granted(resp) == [2]
                assert orjson.loads(resp.body) == {"lockOKMQSet": [{"brokerName": "broker-a", "queueId": 2,
                                                                    "topic": "T"}]}
                resp = await call(c1, b, RequestCode.UNLOCK_BATCH_MQ, body=body("c1", 1, 2))
                assert (resp.code, resp.body) == (ResponseCode.SUCCESS, None)
                assert granted(await call(c2, b, RequestCode.LOCK_BATCH_MQ, body=body("c2", 1, 2))) == [1, 2]
                assert granted(await call(c1, b, RequestCode.LOCK_BATCH_MQ, body=body("c1", 0, 1, 2))) == [0]
                resp = await call(c1, b, RequestCode.LOCK_BATCH_MQ, body=b'{"consumerGroup":"G"}')
                assert resp.code == ResponseCode.SYSTEM_ERROR and "clientId" in resp.remark

    run(main)


def test_bad_heartbeat_and_missing_header_fields_answer_system_error() -> None:
    async def main() -> None:
        async with broker() as b:
            c = Consumer()
            async with c.client:
                resp = await call(c, b, RequestCode.HEART_BEAT, body=b'{"clientID":"c","consumerDataSet":[{"groupName":"G","messageModel":9}]}')
                assert resp.code == ResponseCode.SYSTEM_ERROR
                assert "consumerDataSet[0].messageModel" in resp.remark
                resp = await call(c, b, RequestCode.HEART_BEAT)
                assert resp.code == ResponseCode.SYSTEM_ERROR and "empty" in resp.remark
                resp = await call(c, b, RequestCode.GET_CONSUMER_LIST_BY_GROUP, {})
                assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR, "the custom field <consumerGroup> is null")
                resp = await call(c, b, RequestCode.UNREGISTER_CLIENT, {"consumerGroup": GROUP})
                assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR, "the custom field <clientID> is null")
                assert len(b.consumers) == 0

    run(main)


def test_unknown_groups_register_as_upstream_or_are_skipped() -> None:
    async def main(skip: bool) -> tuple[list[str], list]:
        async with broker(known=lambda g: False, skip_unknown_groups=skip) as b:
            c = Consumer()
            async with c.client:
                resp = await call(c, b, RequestCode.HEART_BEAT, body=java_heartbeat("c1"))
                assert resp.code == ResponseCode.SUCCESS
                return b.consumers.all_client_ids(GROUP), b.retry_topics

    assert run(lambda: main(False)) == (["c1"], [])         # registered, no retry topic (no config)
    assert run(lambda: main(True)) == ([], [])


def test_group_config_can_turn_notifications_off() -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            server = RemotingServer(0)
            notifier = IdsChangedNotifier(nursery)
            calls: list = []
            consumers = ConsumerManager(on_ids_changed=lambda g, conns: (calls.append(g), notifier(g, conns)))
            proc = ClientManageProcessor(consumers, ProducerManager(), RebalanceLockManager(),
                                         ensure_group=lambda g: GroupConfig(retry_queue_nums=3,
                                                                            notify_consumer_ids_changed_enable=False),
                                         ensure_retry_topic=lambda g, n: retries.append((g, n)))
            retries: list = []
            proc.register(server)
            await nursery.start(server.serve)
            c = Consumer()
            async with c.client:
                resp = await c.client.invoke(f"127.0.0.1:{server.port}",
                                             RemotingCommand.request(RequestCode.HEART_BEAT, None, cpp_heartbeat("c1")))
                assert resp.code == ResponseCode.SUCCESS
                assert retries == [(GROUP, 3)]
                assert consumers.all_client_ids(GROUP) == ["c1"]
                assert calls == []                                  # the listener was never asked
                assert c.pending_notifications() == 0
            server.close()

    run(main)
