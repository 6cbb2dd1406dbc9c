"""Message queues, a topic's publish/subscribe queues from its route, and how a producer picks one.

Algorithms of the RocketMQ 4.9 Java client (PROTOCOL.md §9.1), written for one trio thread:

* ``publish_queues`` (``topicRouteData2TopicPublishInfo``): the write queues of every writable QueueData
  whose broker has a master, QueueDatas sorted by broker name, queue ids 0..writeQueueNums-1 — or the
  queues named by ``orderTopicConf`` when the nameserver sends one. ``subscribe_queues`` takes the read
  queues of readable QueueDatas.
* ``TopicPublishInfo.select_one`` (``TopicPublishInfo.selectOneMessageQueue``): round robin from a random
  start; on a retry, the next queue not on the broker that just failed.
* ``FaultStrategy`` (``MQFaultStrategy`` + ``LatencyFaultToleranceImpl``): after each send the broker is
  marked unavailable for ``notAvailableDuration[i]``, i the last index with latency ≥ ``latencyMax[i]``;
  failures count as 30 s. Selection skips unavailable brokers; when every one is, it takes a broker from the
  better half of the marked ones (sorted by availability, latency, time).
* Selectors for ordered sends: ``SelectMessageQueueByHash`` hashes the argument as Java's ``hashCode`` does,
  so a sharding key lands on the same queue as from a Java producer with the same route.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union, runtime_checkable

import trio

from rmq_common.hashing import java_string_hash
from rmq_common.message import Message
from rmq_nameserver.bodies import MASTER_ID, PERM_READ, PERM_WRITE, TopicRouteData

__all__ = [
    "MessageQueue", "TopicPublishInfo", "publish_queues", "subscribe_queues", "LatencyFaultTolerance",
    "FaultStrategy", "MessageQueueSelector", "SelectorLike", "SelectMessageQueueByHash", "SelectMessageQueueByRandom",
    "HashSelector", "RandomSelector", "java_hash_code", "apply_selector",
]

_POSITIVE_MASK = 0x7FFFFFFF


@dataclass(frozen=True, order=True, slots=True)
class MessageQueue:
    """One queue of a topic on one broker group; ordered as Java's ``MessageQueue.compareTo``."""

    topic: str
    broker_name: str
    queue_id: int

    def to_wire(self) -> dict[str, Any]:
        """The fastjson form ``{"brokerName":…,"queueId":…,"topic":…}``."""
        return {"brokerName": self.broker_name, "queueId": self.queue_id, "topic": self.topic}

    def __str__(self) -> str:
        return f"MessageQueue [topic={self.topic}, brokerName={self.broker_name}, queueId={self.queue_id}]"


def _parse_order_conf(topic: str, conf: str) -> list[MessageQueue]:
    """``brokerName:queueNum;brokerName:queueNum`` → the queues it names (bad pieces are skipped)."""
    out: list[MessageQueue] = []
    for piece in conf.split(";"):
        name, sep, num = piece.partition(":")
        if not sep or not name or not num.strip().isdigit():
            continue
        out.extend(MessageQueue(topic, name, i) for i in range(int(num)))
    return out


def _master_brokers(route: TopicRouteData) -> set[str]:
    return {bd.broker_name for bd in route.broker_datas if bd.broker_addrs.get(MASTER_ID)}


def publish_queues(topic: str, route: TopicRouteData) -> tuple[list[MessageQueue], bool]:
    """The queues a producer may write to, and whether they come from ``orderTopicConf``."""
    if route.order_topic_conf:
        return _parse_order_conf(topic, route.order_topic_conf), True
    masters = _master_brokers(route)
    queues: list[MessageQueue] = []
    for qd in sorted(route.queue_datas, key=lambda q: q.broker_name):
        if qd.perm & PERM_WRITE and qd.broker_name in masters:
            queues.extend(MessageQueue(topic, qd.broker_name, i) for i in range(qd.write_queue_nums))
    return queues, False


def subscribe_queues(topic: str, route: TopicRouteData) -> list[MessageQueue]:
    """The queues a consumer reads (``topicRouteData2TopicSubscribeInfo``), sorted."""
    queues = {MessageQueue(topic, qd.broker_name, i)
              for qd in route.queue_datas if qd.perm & PERM_READ for i in range(qd.read_queue_nums)}
    return sorted(queues)


class _Index:
    """Java's ThreadLocalIndex for one thread: a counter from a random start, always non-negative."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = random.getrandbits(31)

    def next(self) -> int:
        self.value = (self.value + 1) & _POSITIVE_MASK
        return self.value


@dataclass
class TopicPublishInfo:
    """What a producer knows about one topic: its write queues and the route they came from."""

    topic: str
    queues: list[MessageQueue] = field(default_factory=list)
    route: TopicRouteData | None = None
    order_topic: bool = False
    #: True when the queues are TBW102's (the topic has no route yet and is created by the first send).
    from_default_route: bool = False
    send_which_queue: _Index = field(default_factory=_Index)

    @classmethod
    def from_route(cls, topic: str, route: TopicRouteData, *, from_default_route: bool = False) -> TopicPublishInfo:
        queues, order = publish_queues(topic, route)
        return cls(topic, queues, route, order, from_default_route)

    def ok(self) -> bool:
        return bool(self.queues)

    def write_queue_nums(self, broker_name: str) -> int:
        """``getQueueIdByBroker``: the broker's write queue count in the route, -1 if it has none."""
        if self.route is not None:
            for qd in self.route.queue_datas:
                if qd.broker_name == broker_name:
                    return qd.write_queue_nums
        return -1

    def select_one(self, last_broker_name: str | None = None) -> MessageQueue:
        """Round robin; with ``last_broker_name``, the next queue on another broker when there is one."""
        queues = self.queues
        if not queues:
            raise LookupError(f"topic {self.topic} has no write queue")
        n = len(queues)
        if last_broker_name is not None:
            for _ in range(n):
                mq = queues[self.send_which_queue.next() % n]
                if mq.broker_name != last_broker_name:
                    return mq
        return queues[self.send_which_queue.next() % n]


def _default_clock_ms() -> float:
    try:
        return trio.current_time() * 1000.0
    except RuntimeError:                      # outside a trio run
        return time.monotonic() * 1000.0


@dataclass(slots=True)
class _FaultItem:
    name: str
    current_latency: float
    start_timestamp: float

    def available(self, now: float) -> bool:
        return now >= self.start_timestamp


class LatencyFaultTolerance:
    """Per broker name: its last latency and when it may be used again (``LatencyFaultToleranceImpl``)."""

    def __init__(self, clock_ms: Callable[[], float] = _default_clock_ms) -> None:
        self.clock_ms = clock_ms
        self._items: dict[str, _FaultItem] = {}
        self._which_item_worst = 0

    def update(self, name: str, current_latency: float, not_available_duration: float) -> None:
        until = self.clock_ms() + not_available_duration
        item = self._items.get(name)
        if item is None:
            self._items[name] = _FaultItem(name, current_latency, until)
        else:
            item.current_latency = current_latency
            item.start_timestamp = until

    def is_available(self, name: str) -> bool:
        item = self._items.get(name)
        return item is None or item.available(self.clock_ms())

    def remove(self, name: str) -> None:
        self._items.pop(name, None)

    def pick_one_at_least(self) -> str | None:
        """A broker from the better half of the marked ones (available first, then lower latency, then sooner)."""
        if not self._items:
            return None
        now = self.clock_ms()
        items = list(self._items.values())
        random.shuffle(items)
        items.sort(key=lambda it: (not it.available(now), it.current_latency, it.start_timestamp))
        half = len(items) // 2
        if half <= 0:
            return items[0].name
        i = self._which_item_worst % half
        self._which_item_worst += 1
        return items[i].name

    def snapshot(self) -> dict[str, tuple[float, float]]:
        """broker name → (last latency ms, ms until available; ≤ 0 = available), for tests and diagnostics."""
        now = self.clock_ms()
        return {name: (it.current_latency, it.start_timestamp - now) for name, it in self._items.items()}


class FaultStrategy:
    """``MQFaultStrategy``: queue selection with (or without) latency-based fault avoidance."""

    def __init__(self, enabled: bool = True, latency_max_ms: Sequence[int] = (50, 100, 550, 1000, 2000, 3000, 15000),
                 not_available_duration_ms: Sequence[int] = (0, 0, 30000, 60000, 120000, 180000, 600000),
                 clock_ms: Callable[[], float] = _default_clock_ms) -> None:
        if len(latency_max_ms) != len(not_available_duration_ms):
            raise ValueError("latency_max_ms and not_available_duration_ms must have the same length")
        self.enabled = enabled
        self.latency_max_ms = tuple(latency_max_ms)
        self.not_available_duration_ms = tuple(not_available_duration_ms)
        self.tolerance = LatencyFaultTolerance(clock_ms)

    def not_available_duration(self, latency_ms: float) -> float:
        for i in range(len(self.latency_max_ms) - 1, -1, -1):
            if latency_ms >= self.latency_max_ms[i]:
                return self.not_available_duration_ms[i]
        return 0

    def update_fault_item(self, broker_name: str, latency_ms: float, isolation: bool) -> None:
        """Record a send's latency; ``isolation`` (a failure) counts as 30 s."""
        if self.enabled:
            duration = self.not_available_duration(30000 if isolation else latency_ms)
            self.tolerance.update(broker_name, latency_ms, duration)

    def select(self, info: TopicPublishInfo, last_broker_name: str | None) -> MessageQueue:
        if not self.enabled:
            return info.select_one(last_broker_name)
        queues = info.queues
        n = len(queues)
        if n == 0:
            raise LookupError(f"topic {info.topic} has no write queue")
        index = info.send_which_queue.next()
        for _ in range(n):
            mq = queues[index % n]
            index = (index + 1) & _POSITIVE_MASK
            if self.tolerance.is_available(mq.broker_name):
                return mq
        not_best = self.tolerance.pick_one_at_least()
        if not_best is not None:
            write_queue_nums = info.write_queue_nums(not_best)
            if write_queue_nums > 0:
                return MessageQueue(info.topic, not_best, info.send_which_queue.next() % write_queue_nums)
            self.tolerance.remove(not_best)
        return info.select_one()


# ---------------------------------------------------------------------------------------------------
# Selectors for ordered sends
# ---------------------------------------------------------------------------------------------------

@runtime_checkable
class MessageQueueSelector(Protocol):
    """Chooses the queue of an ordered send (Java's ``MessageQueueSelector``).

    ``queues`` are all the topic's write queues, sorted by broker name and queue id; ``arg`` is what the
    caller passed to ``send(..., arg=...)``. Fault avoidance and retries are off for selector sends, so
    messages of one key keep their order.
    """

    def select(self, queues: Sequence[MessageQueue], msg: Message, arg: Any) -> MessageQueue: ...


#: A selector object or a plain function ``(queues, msg, arg) -> MessageQueue``.
SelectorLike = Union[MessageQueueSelector, Callable[[Sequence[MessageQueue], Message, Any], MessageQueue]]


def java_hash_code(value: Any) -> int:
    """Java's ``hashCode()`` of a sharding key: String (UTF-16 rule), Integer/Long, Boolean.

    Other types fall back to Python's ``hash`` (stable across processes only for numbers and tuples of them).
    """
    if isinstance(value, str):
        return java_string_hash(value)
    if isinstance(value, bool):
        return 1231 if value else 1237
    if isinstance(value, int):
        if -(1 << 31) <= value < (1 << 31):
            return value                       # Integer.hashCode
        v = value & 0xFFFFFFFFFFFFFFFF          # Long.hashCode: (int)(v ^ (v >>> 32))
        h = (v ^ (v >> 32)) & 0xFFFFFFFF
        return h - (1 << 32) if h & 0x80000000 else h
    return hash(value)


class SelectMessageQueueByHash:
    """``abs(arg.hashCode()) % len(queues)``, as Java's ``SelectMessageQueueByHash``."""

    def select(self, queues: Sequence[MessageQueue], msg: Message, arg: Any) -> MessageQueue:
        return queues[abs(java_hash_code(arg)) % len(queues)]


class SelectMessageQueueByRandom:
    """A random queue per message (no order)."""

    def select(self, queues: Sequence[MessageQueue], msg: Message, arg: Any) -> MessageQueue:
        return random.choice(list(queues))


HashSelector = SelectMessageQueueByHash
RandomSelector = SelectMessageQueueByRandom


def apply_selector(selector: SelectorLike, queues: Sequence[MessageQueue], msg: Message, arg: Any) -> MessageQueue:
    """Call a selector object or function and check that it chose one of ``queues``."""
    select = getattr(selector, "select", None)
    mq = select(queues, msg, arg) if select is not None else selector(queues, msg, arg)    # type: ignore[operator]
    if not isinstance(mq, MessageQueue):
        raise TypeError(f"the queue selector returned {mq!r}, not a MessageQueue")
    if mq not in queues:
        raise ValueError(f"the queue selector chose {mq}, which is not one of the topic's write queues")
    return mq
