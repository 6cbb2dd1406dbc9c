"""RebalanceLockManager (LOCK_BATCH_MQ / UNLOCK_BATCH_MQ semantics, PROTOCOL.md §9.3) with an injected clock."""
from __future__ import annotations

import pytest

from rmq_broker.lock_manager import MessageQueue, RebalanceLockManager
from rmq_broker.processors.client_manage import parse_lock_batch_body

Q0, Q1, Q2 = (MessageQueue("T", "broker-a", i) for i in range(3))


class Clock:
    def __init__(self) -> None:
        self.now = 5_000_000

    def __call__(self) -> int:
        return self.now


def make(**kwargs: object) -> tuple[RebalanceLockManager, Clock]:
    clock = Clock()
    return RebalanceLockManager(clock_ms=clock, **kwargs), clock


def test_free_queues_are_granted_and_held_ones_refused() -> None:
    locks, _ = make()
    assert locks.try_lock_batch("G", [Q0, Q1], "c1") == {Q0, Q1}
    assert locks.try_lock_batch("G", [Q1, Q2], "c2") == {Q2}
    assert locks.holder("G", Q1) == "c1" and locks.holder("G", Q2) == "c2"
    assert locks.try_lock_batch("OTHER", [Q1], "c2") == {Q1}       # groups are independent
    assert locks.locked_queues("G", "c1") == {Q0, Q1}
    assert locks.try_lock("G", Q0, "c2") is False and locks.try_lock("G", Q0, "c1") is True


def test_lock_expires_60s_after_the_last_lock_call() -> None:
    locks, clock = make()
    start = clock.now
    locks.try_lock_batch("G", [Q0], "c1")
    clock.now = start + 59_000
    assert locks.try_lock_batch("G", [Q0], "c1") == {Q0}           # renewal refreshes
    clock.now = start + 61_000
    assert locks.try_lock_batch("G", [Q0], "c2") == set()           # still held thanks to the renewal
    clock.now = start + 59_000 + 60_000
    assert locks.try_lock_batch("G", [Q0], "c2") == set()           # exactly 60 s: not yet expired
    clock.now += 1
    assert locks.holder("G", Q0) is None
    assert locks.try_lock_batch("G", [Q0], "c2") == {Q0}
    assert locks.holder("G", Q0) == "c2"
    assert locks.try_lock_batch("G", [Q0], "c1") == set()


def test_expired_holder_may_relock() -> None:
    locks, clock = make(lock_max_live_time_ms=1_000)
    locks.try_lock_batch("G", [Q0], "c1")
    clock.now += 5_000
    assert locks.try_lock_batch("G", [Q0], "c1") == {Q0}
    assert locks.holder("G", Q0) == "c1"


def test_unlock_only_releases_the_callers_locks() -> None:
    locks, _ = make()
    locks.try_lock_batch("G", [Q0, Q1], "c1")
    assert locks.unlock_batch("G", [Q0, Q1, Q2], "c2") == set()
    assert locks.holder("G", Q0) == "c1"
    assert locks.unlock_batch("G", [Q0], "c1") == {Q0}
    assert locks.try_lock_batch("G", [Q0], "c2") == {Q0}
    assert locks.unlock_batch("NOPE", [Q0], "c1") == set()
    assert locks.unlock_batch("G", [Q0], "c2") == {Q0}
    assert locks.unlock_batch("G", [Q1], "c1") == {Q1}
    assert len(locks) == 0


def test_bounds_purge_expired_first_then_refuse() -> None:
    locks, clock = make(max_locks_per_group=2, max_groups=1)
    assert locks.try_lock_batch("G", [Q0, Q1, Q2], "c1") == {Q0, Q1}
    assert locks.try_lock_batch("G2", [Q0], "c1") == set()           # group bound
    clock.now += 60_001
    assert locks.try_lock_batch("G", [Q2], "c2") == {Q2}             # expired entries made room
    assert len(locks) == 1
    clock.now += 60_001
    assert locks.try_lock_batch("G2", [Q0], "c1") == {Q0}            # G purged, room for G2
    assert locks.purge_expired(clock.now + 60_001) == 1 and len(locks) == 0


def test_message_queue_json() -> None:
    mq = MessageQueue.from_json({"brokerName": "b", "queueId": "3", "topic": "T"})
    assert mq == MessageQueue("T", "b", 3)
    assert mq.to_json() == {"brokerName": "b", "queueId": 3, "topic": "T"}
    for bad, field in [({"brokerName": "b", "queueId": 1}, "topic"), ({"topic": "T", "queueId": 1}, "brokerName"),
                       ({"topic": "T", "brokerName": "b", "queueId": "x"}, "queueId"),
                       ({"topic": "T", "brokerName": "b", "queueId": True}, "queueId"), ([1], "object")]:
        with pytest.raises(ValueError, match=field):
            MessageQueue.from_json(bad)


def test_parse_the_cpp_lock_body() -> None:
    body = (b'{"clientId":"18504-127.0.0.1@DEFAULT","consumerGroup":"CGpy_orderly_179555216118368","mqSet":['
            b'{"brokerName":"broker-a","queueId":0,"topic":"%RETRY%CGpy_orderly_179555216118368"},'
            b'{"brokerName":"broker-a","queueId":1,"topic":"ITpy_orderly"},'
            b'{"brokerName":"broker-a","queueId":1,"topic":"ITpy_orderly"}]}\n')
    client_id, group, mqs = parse_lock_batch_body(body)
    assert client_id == "18504-127.0.0.1@DEFAULT" and group == "CGpy_orderly_179555216118368"
    assert mqs == [MessageQueue("%RETRY%CGpy_orderly_179555216118368", "broker-a", 0),
                   MessageQueue("ITpy_orderly", "broker-a", 1)]
    assert parse_lock_batch_body(b'{"clientId":"c","consumerGroup":"G"}')[2] == []


@pytest.mark.parametrize("body, fragment", [
    (None, "without a body"), (b"nope", "not JSON"), (b"[]", "JSON object"),
    (b'{"consumerGroup":"G"}', "clientId"), (b'{"clientId":"c"}', "consumerGroup"),
    (b'{"clientId":"c","consumerGroup":"G","mqSet":{}}', "mqSet must be an array"),
    (b'{"clientId":"c","consumerGroup":"G","mqSet":[{"topic":"T"}]}', "mqSet[0]"),
])
def test_bad_lock_bodies(body: bytes | None, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_lock_batch_body(body)
    assert fragment in str(info.value)
