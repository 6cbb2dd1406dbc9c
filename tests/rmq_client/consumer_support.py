"""Helpers of the consumer tests: a recording listener, broker-side offset checks with the raw client, and
bounded waits on conditions (never on elapsed time alone)."""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any

import trio
from client_support import Raw

from rmq_client import MessageQueue, Producer, make_message
from rmq_remoting import RequestCode, ResponseCode
from rmq_remoting import headers as h

FAST = {"persist_consumer_offset_interval_ms": 200, "rebalance_interval_ms": 1000,
        "pull_time_delay_ms_when_exception": 300}


@dataclass(frozen=True)
class Seen:
    who: str
    msg_id: str
    topic: str
    queue_id: int
    offset: int
    body: bytes
    tags: str | None
    reconsume_times: int
    properties: tuple


class Collector:
    """Records every message a listener was given, with the consumer that got it."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []

    def listener(self, who: str = "c"):
        def on_messages(msgs, context):
            for m in msgs:
                self.record(who, m)
        return on_messages

    def record(self, who: str, m: Any) -> None:
        self.seen.append(Seen(who, m.msg_id, m.topic, m.queue_id, m.queue_offset, bytes(m.body), m.tags,
                              m.reconsume_times, tuple(sorted(m.properties.items()))))

    def ids(self) -> collections.Counter:
        return collections.Counter(s.msg_id for s in self.seen)

    def by(self, who: str) -> list[Seen]:
        return [s for s in self.seen if s.who == who]

    async def wait_ids(self, ids: set[str], timeout_s: float = 20.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ids <= set(self.ids()):
            missing = ids - set(self.ids())
            assert time.monotonic() < deadline, \
                f"{len(missing)} of {len(ids)} messages not consumed: {sorted(missing)[:5]}"
            await trio.sleep(0.02)


async def send_many(namesrv: str, topic: str, n: int, *, prefix: str = "m", tags=None, group: str = "PG_consumer_t",
                    producer: Producer | None = None, **props_of) -> list[str]:
    """Send ``n`` messages (tags: a function of i or None); returns their msg ids in send order."""
    ids: list[str] = []

    async def go(p: Producer) -> None:
        for i in range(n):
            tag = tags(i) if callable(tags) else tags
            m = make_message(topic, f"{prefix}-{i}".encode(), tags=tag, keys=[f"{prefix}-{i}"],
                             properties={k: str(f(i)) for k, f in props_of.items()})
            await p.send(m)
            ids.append(m.unique_key)

    if producer is not None:
        await go(producer)
    else:
        async with Producer(group, namesrv) as p:
            await go(p)
    return ids


async def committed(raw: Raw, group: str, topic: str, queue_id: int, broker: int | str = 0) -> int:
    """The group's committed offset of one queue on the broker (-1 when it has none)."""
    resp = await raw.call(raw.addr(broker), RequestCode.QUERY_CONSUMER_OFFSET, h.QueryConsumerOffsetRequestHeader(
        consumer_group=group, topic=topic, queue_id=queue_id))
    if resp.code == ResponseCode.QUERY_NOT_FOUND:
        return -1
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return int(resp.ext_fields["offset"])


async def max_offset(raw: Raw, topic: str, queue_id: int, broker: int | str = 0) -> int:
    resp = await raw.call(raw.addr(broker), RequestCode.GET_MAX_OFFSET, h.GetMaxOffsetRequestHeader(
        topic=topic, queue_id=queue_id))
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return int(resp.ext_fields["offset"])


async def wait_committed(raw: Raw, group: str, topic: str, queues: int = 4, timeout_s: float = 20.0,
                         broker: int | str = 0) -> None:
    """Until the group's committed offset equals the max offset on every queue of ``topic``."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = [(await committed(raw, group, topic, q, broker), await max_offset(raw, topic, q, broker))
                 for q in range(queues)]
        if all(c == m for c, m in state):
            return
        assert time.monotonic() < deadline, f"offsets of {group} on {topic} not committed: {state}"
        await trio.sleep(0.05)


async def wait_until(predicate, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout_s} s"
        await trio.sleep(0.02)


def topic_queues(consumer, topic: str) -> list[MessageQueue]:
    return [mq for mq in consumer.assigned_queues() if mq.topic == topic]
