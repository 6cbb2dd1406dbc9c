"""ConsumerManager / ProducerManager: registration, subscriptions, expiry, channel close, notifications."""
from __future__ import annotations

from typing import Any

import pytest
import trio

from rmq_broker.client_manager import (
    ClientLimitError,
    ConsumerManager,
    IdsChangedNotifier,
    ProducerManager,
    notify_consumer_ids_changed,
)
from rmq_broker.heartbeat import ConsumeFromWhere, ConsumeType, MessageModel, SubscriptionData
from rmq_remoting import RemotingCommand, RemotingConnectError, RequestCode

PUSH, CLUSTERING, LAST = ConsumeType.CONSUME_PASSIVELY, MessageModel.CLUSTERING, ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET


class FakeConn:
    """Stands in for rmq_remoting.Connection: hashable by identity, closable, records oneway sends."""

    def __init__(self, name: str, *, fail: BaseException | None = None) -> None:
        self.remote_addr = name
        self.closed = False
        self.close_reason: str | None = None
        self.sent: list[RemotingCommand] = []
        self.fail = fail

    def close(self, reason: str = "closed") -> None:
        self.closed = True
        self.close_reason = reason

    async def send_oneway(self, cmd: RemotingCommand, timeout_ms: float = 3000) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(cmd)

    def __repr__(self) -> str:
        return f"FakeConn({self.remote_addr})"


class Clock:
    def __init__(self, now: int = 1_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def subs(*topics: str, version: int = 1) -> list[SubscriptionData]:
    return [SubscriptionData.build(t, "*", sub_version=version) for t in topics]


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def __call__(self, group: str, conns: list[Any]) -> None:
        self.calls.append((group, list(conns)))


def manager(**kwargs: Any) -> tuple[ConsumerManager, Recorder, Clock]:
    rec, clock = Recorder(), Clock()
    return ConsumerManager(on_ids_changed=rec, clock_ms=clock, **kwargs), rec, clock


def reg(m: ConsumerManager, group: str, conn: FakeConn, client_id: str, topics: list[SubscriptionData] | None = None,
        **kwargs: Any) -> bool:
    return m.register_consumer(group, conn, client_id, PUSH, CLUSTERING, LAST,
                               subs("T") if topics is None else topics, **kwargs)


def test_register_notifies_on_membership_change_only() -> None:
    m, rec, clock = manager()
    c1, c2 = FakeConn("a:1"), FakeConn("b:2")
    assert reg(m, "G", c1, "c1") is True
    assert rec.calls == [("G", [c1])]
    clock.now += 30_000
    assert reg(m, "G", c1, "c1") is False                 # plain refresh: nobody is told
    assert rec.calls == [("G", [c1])]
    assert m.consumer_group_info("G").channels[c1].last_update_ms == clock.now
    assert reg(m, "G", c2, "c2") is True
    assert rec.calls[-1] == ("G", [c1, c2])
    assert m.all_client_ids("G") == ["c1", "c2"]
    assert m.all_client_ids("nope") == []
    info = m.consumer_group_info("G")
    assert (info.consume_type, info.message_model, info.consume_from_where) == (PUSH, CLUSTERING, LAST)
    assert m.find_channel("G", "c2").conn is c2
    assert m.groups_of_connection(c1) == {"G"}


def test_subscription_table_follows_heartbeats() -> None:
    m, rec, _ = manager()
    c1 = FakeConn("a:1")
    reg(m, "G", c1, "c1", subs("T1", version=5))
    assert len(rec.calls) == 1
    # A newer subVersion replaces the entry but is no membership change (upstream 4.9.x).
    newer = [SubscriptionData.build("T1", "x||y", sub_version=6)]
    assert reg(m, "G", c1, "c1", newer) is False
    assert m.find_subscription("G", "T1").tags_set == ("x", "y")
    # An older one is ignored.
    assert reg(m, "G", c1, "c1", [SubscriptionData.build("T1", "z", sub_version=1)]) is False
    assert m.find_subscription("G", "T1").tags_set == ("x", "y")
    assert len(rec.calls) == 1
    # A new topic is a change; a topic left out is removed (a change too).
    assert reg(m, "G", c1, "c1", newer + subs("T2")) is True
    assert sorted(m.consumer_group_info("G").subscriptions) == ["T1", "T2"]
    assert reg(m, "G", c1, "c1", subs("T2", version=9)) is True
    assert m.find_subscription("G", "T1") is None
    assert m.groups_of_topic("T2") == {"G"} and m.groups_of_topic("T1") == set()
    assert len(rec.calls) == 3


def test_notify_flag_and_predicate() -> None:
    m, rec, _ = manager(notify_enabled=lambda g: g != "QUIET")
    a, b = FakeConn("a:1"), FakeConn("b:2")
    reg(m, "G", a, "a", notify=False)
    reg(m, "QUIET", a, "a")
    reg(m, "QUIET", b, "b")
    assert rec.calls == []
    m.do_channel_close(b)
    assert rec.calls == []                                 # QUIET keeps quiet on close too
    reg(m, "G", b, "b")
    assert rec.calls == [("G", [a, b])]


def test_unregister() -> None:
    m, rec, _ = manager()
    a, b = FakeConn("a:1"), FakeConn("b:2")
    reg(m, "G", a, "a")
    reg(m, "G", b, "b")
    rec.calls.clear()
    assert m.unregister_consumer("G", FakeConn("x:9")) is False
    assert m.unregister_consumer("OTHER", a) is False
    assert rec.calls == []
    assert m.unregister_consumer("G", a) is True
    assert rec.calls == [("G", [b])]
    assert m.unregister_consumer("G", b) is True
    assert m.consumer_group_info("G") is None and len(m) == 0
    assert rec.calls == [("G", [b])]                       # nobody left to tell
    assert m.groups_of_connection(a) == set() and m.groups_of_connection(b) == set()


def test_channel_close_removes_from_every_group() -> None:
    m, rec, _ = manager()
    a, b = FakeConn("a:1"), FakeConn("b:2")
    reg(m, "G1", a, "a")
    reg(m, "G2", a, "a")
    reg(m, "G2", b, "b")
    rec.calls.clear()
    assert sorted(m.do_channel_close(a)) == ["G1", "G2"]
    assert m.consumer_group_info("G1") is None
    assert m.all_client_ids("G2") == ["b"]
    assert rec.calls == [("G2", [b])]
    assert m.do_channel_close(a) == []
    assert m.do_channel_close(FakeConn("never:0")) == []


def test_scan_expires_idle_channels_with_an_injected_clock() -> None:
    m, rec, clock = manager()
    old, fresh = FakeConn("old:1"), FakeConn("fresh:2")
    start = clock.now
    reg(m, "G", old, "old")
    reg(m, "G", fresh, "fresh")
    clock.now = start + 100_000
    reg(m, "G", fresh, "fresh")                            # refresh
    rec.calls.clear()
    assert m.scan_not_active(start + 120_000) == []         # exactly the timeout is still alive
    removed = m.scan_not_active(start + 120_001)
    assert [(g, c.client_id) for g, c in removed] == [("G", "old")]
    assert old.closed and old.close_reason == "consumer heartbeat expired" and not fresh.closed
    assert rec.calls == [("G", [fresh])]
    assert m.scan_not_active(start + 220_001)[0][1].client_id == "fresh"
    assert m.consumer_group_info("G") is None
    # The close hook of an expired connection then finds nothing to do.
    assert m.do_channel_close(old) == []


def test_scan_timeout_is_configurable_and_closing_optional() -> None:
    m, _, clock = manager(channel_expired_timeout_ms=1_000, close_expired=False)
    a = FakeConn("a:1")
    reg(m, "G", a, "a")
    clock.now += 1_001
    assert len(m.scan_not_active()) == 1 and not a.closed


def test_bounds_refuse_without_changing_anything() -> None:
    m, rec, _ = manager(max_groups=2, max_channels_per_group=2)
    a, b, c = FakeConn("a:1"), FakeConn("b:2"), FakeConn("c:3")
    reg(m, "G1", a, "a")
    reg(m, "G2", a, "a")
    with pytest.raises(ClientLimitError, match="too many consumer groups"):
        reg(m, "G3", a, "a")
    assert m.consumer_group_info("G3") is None and m.groups_of_connection(a) == {"G1", "G2"}
    reg(m, "G1", b, "b")
    with pytest.raises(ClientLimitError, match="too many consumers in group G1"):
        reg(m, "G1", c, "c")
    assert m.all_client_ids("G1") == ["a", "b"]
    assert reg(m, "G1", b, "b") is False                    # members still refresh
    calls = len(rec.calls)
    m.do_channel_close(a)
    assert len(rec.calls) == calls + 1                       # only G1 has someone left to tell
    reg(m, "G3", c, "c")                                     # room again after G2 emptied


def test_listener_errors_do_not_break_registration() -> None:
    def boom(group: str, conns: list) -> None:
        raise RuntimeError("listener bug")
    m = ConsumerManager(on_ids_changed=boom, clock_ms=Clock())
    assert reg(m, "G", FakeConn("a:1"), "a") is True
    assert m.all_client_ids("G") == ["a"]


def test_client_id_change_on_a_channel_is_taken() -> None:
    m, rec, _ = manager()
    a = FakeConn("a:1")
    reg(m, "G", a, "old-id")
    assert reg(m, "G", a, "new-id") is False
    assert m.all_client_ids("G") == ["new-id"]
    assert len(rec.calls) == 1


# -- producers ---------------------------------------------------------------------------------------

def test_producer_registration_close_and_lookup() -> None:
    clock = Clock()
    p = ProducerManager(clock_ms=clock)
    a, b = FakeConn("a:1"), FakeConn("b:2")
    assert p.register_producer("PG", a, "ca") is True
    assert p.register_producer("PG", a, "ca") is False
    assert p.register_producer("PG", b, "cb") is True
    assert p.register_producer("PG2", a, "ca") is True
    assert sorted(p.groups()) == ["PG", "PG2"]
    assert {i.client_id for i in p.group_channels("PG")} == {"ca", "cb"}
    assert p.find_channel("ca") is a
    picks = {p.available_channel("PG") for _ in range(4)}
    assert picks == {a, b}
    b.closed = True
    assert {p.available_channel("PG") for _ in range(4)} == {a}
    assert p.available_channel("missing") is None
    assert sorted(p.do_channel_close(a)) == ["PG", "PG2"]
    assert p.groups() == ["PG"] and p.find_channel("ca") is None
    assert p.unregister_producer("PG", b) is True
    assert p.groups() == [] and len(p) == 0
    assert p.unregister_producer("PG", b) is False


def test_producer_expiry_and_bounds() -> None:
    clock = Clock()
    p = ProducerManager(clock_ms=clock, max_groups=1, max_channels_per_group=1)
    a, b = FakeConn("a:1"), FakeConn("b:2")
    p.register_producer("PG", a, "ca")
    with pytest.raises(ClientLimitError, match="too many producer groups"):
        p.register_producer("PG2", a, "ca")
    with pytest.raises(ClientLimitError, match="too many producers in group PG"):
        p.register_producer("PG", b, "cb")
    clock.now += 120_001
    removed = p.scan_not_active()
    assert [(g, i.client_id) for g, i in removed] == [("PG", "ca")] and a.closed
    assert p.groups() == []


# -- NOTIFY_CONSUMER_IDS_CHANGED sending ----------------------------------------------------------------

def test_notify_sends_code_40_oneway_and_tolerates_dead_connections() -> None:
    good, dead, broken = FakeConn("good:1"), FakeConn("dead:2"), FakeConn("broken:3", fail=RemotingConnectError("gone"))
    dead.closed = True

    async def main() -> int:
        with trio.fail_after(5):
            return await notify_consumer_ids_changed("G", [good, dead, broken])

    assert trio.run(main) == 1
    (cmd,) = good.sent
    assert cmd.code == RequestCode.NOTIFY_CONSUMER_IDS_CHANGED == 40
    assert cmd.ext_fields == {"consumerGroup": "G"}
    assert dead.sent == [] and broken.sent == []


def test_notifier_bounds_rounds_in_flight() -> None:
    conn = FakeConn("a:1")

    async def main() -> IdsChangedNotifier:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                notifier = IdsChangedNotifier(nursery, max_pending=2)
                for _ in range(5):
                    notifier("G", [conn])
                assert notifier.pending == 2 and notifier.dropped == 3
            return notifier

    notifier = trio.run(main)
    assert notifier.pending == 0 and len(conn.sent) == 2


def test_manager_with_notifier_end_to_end() -> None:
    a, b = FakeConn("a:1"), FakeConn("b:2")

    async def main() -> None:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                m = ConsumerManager(clock_ms=Clock())
                m.on_ids_changed = IdsChangedNotifier(nursery)
                reg(m, "G", a, "a")
                reg(m, "G", b, "b")
                reg(m, "G", b, "b")
                m.do_channel_close(b)

    trio.run(main)
    assert len(a.sent) == 3 and len(b.sent) == 1
