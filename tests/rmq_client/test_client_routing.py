"""Queue lists from routes, round robin, MQFaultStrategy and the hash selector (no network)."""
from __future__ import annotations

import pytest

from rmq_client.routing import (FaultStrategy, LatencyFaultTolerance, MessageQueue, SelectMessageQueueByHash,
                                TopicPublishInfo, apply_selector, java_hash_code, publish_queues, subscribe_queues)
from rmq_common.message import Message
from rmq_nameserver.bodies import BrokerData, QueueData, TopicRouteData


def route(*queues: QueueData, masters: dict[str, bool] | None = None, order: str | None = None) -> TopicRouteData:
    names = sorted({q.broker_name for q in queues})
    masters = masters or {}
    brokers = [BrokerData("C", n, {0: f"10.0.0.{i}:10911"} if masters.get(n, True) else {1: f"10.0.1.{i}:10911"})
               for i, n in enumerate(names)]
    return TopicRouteData(list(queues), brokers, {}, order)


def test_publish_queues_take_writable_queues_of_brokers_with_a_master_sorted_by_broker():
    r = route(QueueData("b", 4, 2, 6), QueueData("a", 4, 3, 6), QueueData("c", 4, 4, 4),     # c: read only
              QueueData("d", 2, 2, 6), masters={"d": False})                                   # d: no master
    queues, order = publish_queues("T", r)
    assert not order
    assert queues == [MessageQueue("T", "a", 0), MessageQueue("T", "a", 1), MessageQueue("T", "a", 2),
                      MessageQueue("T", "b", 0), MessageQueue("T", "b", 1)]
    subs = subscribe_queues("T", r)
    assert len(subs) == 4 + 4 + 4 + 2 and subs == sorted(subs)


def test_order_topic_conf_names_the_queues():
    queues, order = publish_queues("T", route(QueueData("a", 8, 8, 6), order="a:2;b:1;bad"))
    assert order and queues == [MessageQueue("T", "a", 0), MessageQueue("T", "a", 1), MessageQueue("T", "b", 0)]


def test_round_robin_and_retry_on_another_broker():
    info = TopicPublishInfo.from_route("T", route(QueueData("a", 2, 2, 6), QueueData("b", 2, 2, 6)))
    picks = [info.select_one() for _ in range(8)]
    assert sorted(picks) == sorted(info.queues * 2)                   # every queue twice in 8 picks
    for _ in range(10):
        assert info.select_one("a").broker_name == "b"
    only_a = TopicPublishInfo.from_route("T", route(QueueData("a", 2, 2, 6)))
    assert only_a.select_one("a").broker_name == "a"                  # no other broker: take what there is
    with pytest.raises(LookupError):
        TopicPublishInfo("T").select_one()


def test_fault_strategy_durations_follow_the_latency_table():
    fs = FaultStrategy()
    assert [fs.not_available_duration(ms) for ms in (0, 49, 100, 549, 550, 999, 1000, 2500, 3000, 15000, 99999)] \
        == [0, 0, 0, 0, 30000, 30000, 60000, 120000, 180000, 600000, 600000]


def test_fault_strategy_skips_unavailable_brokers_and_falls_back_to_the_better_half():
    now = [0.0]
    fs = FaultStrategy(clock_ms=lambda: now[0])
    fs.tolerance = LatencyFaultTolerance(lambda: now[0])
    info = TopicPublishInfo.from_route("T", route(QueueData("a", 2, 2, 6), QueueData("b", 2, 2, 6)))
    fs.update_fault_item("a", 10, isolation=True)                     # failure: 30 s → 600 s unavailable
    assert {fs.select(info, None).broker_name for _ in range(20)} == {"b"}
    fs.update_fault_item("b", 700, isolation=False)                   # slow: 30 s unavailable
    picks = {fs.select(info, None) for _ in range(20)}               # all bad: pickOneAtLeast
    assert {mq.broker_name for mq in picks} <= {"a", "b"} and all(mq.queue_id < 2 for mq in picks)
    now[0] += 30_001
    assert {fs.select(info, None).broker_name for _ in range(20)} == {"b"}
    now[0] += 600_000
    assert {fs.select(info, None).broker_name for _ in range(20)} == {"a", "b"}
    off = FaultStrategy(enabled=False)
    off.update_fault_item("a", 10, isolation=True)
    assert off.tolerance.snapshot() == {}


def test_hash_selector_matches_java_hash_codes():
    assert java_hash_code("hello") == 99162322
    assert java_hash_code("") == 0
    assert java_hash_code("😀") == 0xD83D * 31 + 0xDE00                # UTF-16 surrogate pair, as Java
    assert java_hash_code(-5) == -5 and java_hash_code(True) == 1231
    queues = [MessageQueue("T", "a", i) for i in range(4)]
    sel = SelectMessageQueueByHash()
    msg = Message("T", b"x")
    assert sel.select(queues, msg, "hello") == queues[99162322 % 4]
    assert sel.select(queues, msg, -5) == queues[1]
    assert apply_selector(lambda qs, m, a: qs[a], queues, msg, 3) == queues[3]
    with pytest.raises(ValueError):
        apply_selector(lambda qs, m, a: MessageQueue("T", "z", 0), queues, msg, None)
    with pytest.raises(TypeError):
        apply_selector(lambda qs, m, a: 3, queues, msg, None)
