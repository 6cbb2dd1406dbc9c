"""Delay levels over the wire, on a mock clock (PROTOCOL.md §6.6).

The broker runs on ``BrokerClock(MockClock())``: broker time (store timestamps, due times, the schedule
service's sleeps) only moves when the test jumps the clock. The clock's rate is 0 and autojump is off:
an autojump would fire while a request is on its way through a loopback socket (every task blocked in
I/O for a few microseconds) and skip to the next deadline — an RPC timeout. So the test jumps by hand
between requests, and ``wait_all_tasks_blocked`` lets the woken schedule task finish its work.
"""
from __future__ import annotations

import trio
import trio.testing
from broker_wire_support import props, run, run_mock, wire

from rmq_broker.clock import BrokerClock
from rmq_common._record import decode_records
from rmq_remoting import RequestCode, ResponseCode, fastjson


async def delay_offsets(w) -> dict:
    resp = await w.call(RequestCode.GET_ALL_DELAY_OFFSET)
    assert resp.code == ResponseCode.SUCCESS
    return dict(fastjson.loads(resp.body)["offsetTable"])


def test_level_3_message_is_delivered_after_10_s_of_broker_time(tmp_path) -> None:
    clock = trio.testing.MockClock()            # rate 0: time moves only by jump()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic("DelayT", 2)
            sent = await w.send_ok("DelayT", b"later", queue_id=1,
                                   properties=props(TAGS="TagD", KEYS="dk", DELAY="3", WAIT="true"))
            await w.send_ok("DelayT", b"now", queue_id=0)
            # the producer is told the queue it chose; the offset is the one in the schedule queue
            assert (sent.queue_id, sent.queue_offset) == (1, 0)
            assert (await w.pull("DelayT", 1, 0)).code == ResponseCode.PULL_NOT_FOUND
            # parked in SCHEDULE_TOPIC_XXXX queue 2 (level 3), its real topic and queue in properties
            [parked] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 2, 0)
            assert parked.properties["REAL_TOPIC"] == "DelayT" and parked.properties["REAL_QID"] == "1"
            assert parked.properties["DELAY"] == "3" and parked.body == b"later"
            assert (await delay_offsets(w)).get(3, 0) == 0

            clock.jump(9.9)
            await trio.testing.wait_all_tasks_blocked()
            assert (await w.pull("DelayT", 1, 0)).code == ResponseCode.PULL_NOT_FOUND

            clock.jump(0.2)
            for _ in range(100):
                await trio.testing.wait_all_tasks_blocked()
                resp = await w.pull("DelayT", 1, 0)
                if resp.code == ResponseCode.SUCCESS:
                    break
            assert resp.code == ResponseCode.SUCCESS, resp.code
            [record] = decode_records(bytes(resp.body))
            assert (record.topic, record.queue_id, record.queue_offset, record.body) == ("DelayT", 1, 0, b"later")
            assert "DELAY" not in record.properties
            assert record.properties["REAL_TOPIC"] == "DelayT" and record.properties["REAL_QID"] == "1"
            assert (record.properties["TAGS"], record.properties["KEYS"]) == ("TagD", "dk")
            assert "WAIT" not in record.properties
            assert record.born_timestamp == parked.born_timestamp and record.born_host == parked.born_host
            assert record.store_timestamp - parked.store_timestamp >= 10_000
            # the tag filter works on the delivered copy
            assert len(await w.pull_records("DelayT", 1, 0, subscription="TagD")) == 1
            assert (await delay_offsets(w))[3] == 1

            # a level above the table's end is clamped to the last level (2 h); level 0 is no delay
            await w.send_ok("DelayT", b"max", queue_id=0, properties=props(DELAY="99"))
            assert len(await w.pull_records("SCHEDULE_TOPIC_XXXX", 17, 0)) == 1
            await w.send_ok("DelayT", b"zero", queue_id=0, properties=props(DELAY="0"))
            records = await w.pull_records("DelayT", 0, 0)
            assert [r.body for r in records] == [b"now", b"zero"]
            resp = await w.send("DelayT", b"bad", queue_id=0, properties=props(DELAY="soon"))
            assert resp.code == ResponseCode.MESSAGE_ILLEGAL and "DELAY" in resp.remark
        # progress is in delayOffset.json after shutdown
        data = fastjson.loads((tmp_path / "broker-a" / "config" / "delayOffset.json").read_bytes())
        assert data["offsetTable"][3] == 1

    run(main, timeout=120, clock=clock)


def test_a_restart_in_the_middle_of_delays_loses_nothing_and_delivers_nothing_twice(tmp_path) -> None:
    """A delivered before the restart, C and B pending across it: afterwards each is in its real topic once."""

    async def until_found(w, clock, topic: str, queue_id: int, count: int) -> list:
        for _ in range(200):
            await trio.testing.wait_all_tasks_blocked()
            records = await w.pull_records(topic, queue_id, 0)
            if len(records) >= count:
                return records
        return await w.pull_records(topic, queue_id, 0)

    first = trio.testing.MockClock()

    async def before() -> None:
        async with wire(tmp_path, clock=BrokerClock(first)) as w:
            await w.create_topic("DelayR", 1)
            await w.send_ok("DelayR", b"A", properties=props(DELAY="2"))          # due at +5 s
            await w.send_ok("DelayR", b"B", properties=props(DELAY="4"))          # due at +30 s
            first.jump(2)
            await w.send_ok("DelayR", b"C", properties=props(DELAY="2"))          # due at +7 s
            first.jump(3.1)
            records = await until_found(w, first, "DelayR", 0, 1)
            assert [r.body for r in records] == [b"A"]
            assert (await delay_offsets(w)) == {2: 1}

    run_mock(before, first, real_timeout_s=60)
    data = fastjson.loads((tmp_path / "broker-a" / "config" / "delayOffset.json").read_bytes())
    assert data["offsetTable"] == {2: 1}

    second = trio.testing.MockClock()

    async def after() -> None:
        async with wire(tmp_path, clock=BrokerClock(second)) as w:
            await trio.testing.wait_all_tasks_blocked()
            assert [r.body for r in await w.pull_records("DelayR", 0, 0)] == [b"A"]   # A not again
            second.jump(7.5)
            records = await until_found(w, second, "DelayR", 0, 2)
            assert [r.body for r in records] == [b"A", b"C"]
            second.jump(30)
            records = await until_found(w, second, "DelayR", 0, 3)
            assert [r.body for r in records] == [b"A", b"C", b"B"]
            second.jump(3600)
            await trio.testing.wait_all_tasks_blocked()
            assert len(await w.pull_records("DelayR", 0, 0)) == 3
            assert (await delay_offsets(w)) == {2: 2, 4: 1}

    run_mock(after, second, real_timeout_s=60)
