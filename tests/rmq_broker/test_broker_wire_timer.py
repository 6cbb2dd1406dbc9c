"""Timer messages over the wire (RocketMQ 5.x TIMER_DELIVER_MS / TIMER_DELAY_SEC / TIMER_DELAY_MS), on a mock clock.

The broker runs on ``BrokerClock(MockClock())`` (rate 0, jumped by hand between requests, as
test_broker_wire_delay.py explains). Runs are bounded in real time, not on the mock clock the tests jump by days.
"""
from __future__ import annotations


import trio
import trio.testing
from broker_wire_support import Wire, props, run_mock, wire

from rmq_broker.clock import BrokerClock
from rmq_common._record import decode_records, encode_batch_body
from rmq_remoting import RequestCode, ResponseCode

DAY_MS = 24 * 3600 * 1000
TIMER_TOPIC = "rmq_sys_wheel_timer"


async def settle(w: Wire, rounds: int = 5) -> None:
    """Let woken broker tasks finish (a small request pumps the sockets in between)."""
    for _ in range(rounds):
        await trio.testing.wait_all_tasks_blocked()
        await w.max_offset(TIMER_TOPIC)


async def jump_to(clock: trio.testing.MockClock, bc: BrokerClock, w: Wire, target_ms: int) -> None:
    clock.jump(max(0, target_ms - bc.now_ms()) / 1000)
    await settle(w)


async def records(w: Wire, topic: str, queue_id: int = 0) -> list:
    resp = await w.pull(topic, queue_id, 0)
    if resp.code == ResponseCode.PULL_NOT_FOUND:
        return []
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return decode_records(bytes(resp.body))


def test_a_timer_7_days_out_is_delivered_on_time_not_before(tmp_path) -> None:
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)

    async def main() -> None:
        async with wire(tmp_path, clock=bc, broker_properties={"timerMaxDelaySec": 30 * 24 * 3600}) as w:
            await w.create_topic("TimerT", 2)
            deliver = bc.now_ms() + 7 * DAY_MS
            sent = await w.send_ok("TimerT", b"a week later", queue_id=1,
                                   properties=props(TIMER_DELIVER_MS=str(deliver), TAGS="TagT", KEYS="tk"))
            # the producer is told the queue it chose and the offset in the timer queue
            assert (sent.queue_id, sent.queue_offset) == (1, 0)
            [parked] = await records(w, TIMER_TOPIC)
            assert parked.properties["TIMER_OUT_MS"] == str(deliver) and parked.body == b"a week later"
            assert (parked.properties["REAL_TOPIC"], parked.properties["REAL_QID"]) == ("TimerT", "1")
            assert await records(w, "TimerT", 1) == []
            for day in range(1, 7):              # a day at a time: rolled forward, never delivered early
                await jump_to(clock, bc, w, deliver - (7 - day) * DAY_MS)
                assert await records(w, "TimerT", 1) == []
            await jump_to(clock, bc, w, deliver - 5)
            assert await records(w, "TimerT", 1) == []
            await jump_to(clock, bc, w, deliver + 1000)
            [msg] = await records(w, "TimerT", 1)
            assert deliver <= msg.store_timestamp <= deliver + 1000
            assert (msg.body, msg.queue_offset, msg.born_timestamp) == (b"a week later", 0, parked.born_timestamp)
            assert (msg.properties["TAGS"], msg.properties["KEYS"]) == ("TagT", "tk")
            assert "REAL_TOPIC" not in msg.properties and msg.properties["TIMER_OUT_MS"] == str(deliver)
            assert int(msg.properties["TIMER_ROLL_TIMES"]) >= 3
            assert len(await w.pull_records("TimerT", 1, 0, subscription="TagT")) == 1   # tags work on the copy
            await jump_to(clock, bc, w, deliver + DAY_MS)
            assert len(await records(w, "TimerT", 1)) == 1

    run_mock(main, clock, real_timeout_s=60.0)


def test_delay_sec_delay_ms_and_deliver_ms_each(tmp_path) -> None:
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)

    async def main() -> None:
        async with wire(tmp_path, clock=bc) as w:
            await w.create_topic("Each", 3)
            start = bc.now_ms()
            due = {0: start + 30_000, 1: start + 1_500, 2: start + 45_000}
            await w.send_ok("Each", b"sec", queue_id=0, properties=props(TIMER_DELAY_SEC="30"))
            await w.send_ok("Each", b"ms", queue_id=1, properties=props(TIMER_DELAY_MS="1500"))
            await w.send_ok("Each", b"abs", queue_id=2, properties=props(TIMER_DELIVER_MS=str(due[2])))
            assert await w.max_offset(TIMER_TOPIC) == 3
            for queue_id in sorted(due, key=due.get):
                await jump_to(clock, bc, w, due[queue_id] - 3)
                assert await records(w, "Each", queue_id) == [], queue_id
                await jump_to(clock, bc, w, due[queue_id] + 1000)
                [msg] = await records(w, "Each", queue_id)
                assert due[queue_id] <= msg.store_timestamp <= due[queue_id] + 1000

    run_mock(main, clock, real_timeout_s=60.0)


def test_refusals_and_pass_throughs(tmp_path) -> None:
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)

    async def main() -> None:
        async with wire(tmp_path, clock=bc) as w:           # timerMaxDelaySec: 3 days (RocketMQ's default)
            await w.create_topic("Ref", 1)
            resp = await w.send("Ref", b"x", properties=props(TIMER_DELAY_SEC=str(3 * 24 * 3600 + 1)))
            assert resp.code == ResponseCode.MESSAGE_ILLEGAL
            assert resp.remark == ("timer message illegal, the delay time should not be bigger than the max delay "
                                   "259200000ms; or if set del msg, the delay time should be bigger than the "
                                   "current time")
            resp = await w.send("Ref", b"x", properties=props(TIMER_DELIVER_MS="tomorrow"))
            assert resp.code == ResponseCode.MESSAGE_ILLEGAL
            assert await w.max_offset(TIMER_TOPIC) == 0 and await w.max_offset("Ref") == 0
            # a deliver time in the past: stored to its topic at once, as sent
            await w.send_ok("Ref", b"past", properties=props(TIMER_DELIVER_MS=str(bc.now_ms() - 10)))
            [msg] = await records(w, "Ref")
            assert msg.body == b"past" and "TIMER_DELIVER_MS" in msg.properties and "TIMER_OUT_MS" not in msg.properties
            # a delay level wins over the TIMER properties, which are dropped
            await w.send_ok("Ref", b"level", properties=props(DELAY="2", TIMER_DELAY_SEC="100"))
            [parked] = await records(w, "SCHEDULE_TOPIC_XXXX", 1)
            assert "TIMER_DELAY_SEC" not in parked.properties and parked.properties["DELAY"] == "2"
            assert await w.max_offset(TIMER_TOPIC) == 0
            # producers cannot write the timer topic
            resp = await w.send(TIMER_TOPIC, b"forged", properties=props(TIMER_OUT_MS="1", REAL_TOPIC="Ref",
                                                                          REAL_QID="0"))
            assert resp.code == ResponseCode.NO_PERMISSION
            # a batch with timer properties is refused
            body = encode_batch_body([b"a", b"b"])
            resp = await w.send("Ref", body, code=RequestCode.SEND_BATCH_MESSAGE, batch=True,
                                properties=props(TIMER_DELAY_SEC="5"))
            assert resp.code == ResponseCode.MESSAGE_ILLEGAL and "timer" in resp.remark
            # timerWheelEnable is a runtime key; false refuses timers with SYSTEM_ERROR
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"timerWheelEnable=false\n")
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            resp = await w.send("Ref", b"x", properties=props(TIMER_DELAY_SEC="5"))
            assert resp.code == ResponseCode.SYSTEM_ERROR
            assert resp.remark == "accurate timer message is not enabled, timerWheelEnable is false"
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None,
                                b"timerWheelEnable=true\ntimerMaxDelaySec=315360000\n")
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            await w.send_ok("Ref", b"ten years", properties=props(TIMER_DELAY_SEC=str(9 * 365 * 24 * 3600)))
            assert await w.max_offset(TIMER_TOPIC) == 1

    run_mock(main, clock, real_timeout_s=60.0)


def test_a_restart_in_the_middle_loses_nothing_and_delivers_nothing_twice(tmp_path) -> None:
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)                   # one broker clock for both runs: broker time goes on
    n = 30

    async def delivered(w: Wire) -> list[bytes]:
        out = []
        for q in range(3):
            out.extend(m.body for m in await records(w, "Rst", q))
        return out

    async def main() -> None:
        async with wire(tmp_path, clock=bc) as w:
            await w.create_topic("Rst", 3)
            start = bc.now_ms()
            for i in range(n):
                await w.send_ok("Rst", b"r%02d" % i, queue_id=i % 3,
                                properties=props(TIMER_DELIVER_MS=str(start + 10_000 * (i + 1))))
            await jump_to(clock, bc, w, start + 155_000)
            first = await delivered(w)
            assert sorted(first) == [b"r%02d" % i for i in range(15)]
        # the same store directory (<root>/broker-a), a new broker
        async with wire(tmp_path, clock=bc) as w:
            await settle(w)
            assert sorted(await delivered(w)) == sorted(first)          # nothing delivered again
            await jump_to(clock, bc, w, start + 10_000 * n + 1000)
            assert sorted(await delivered(w)) == [b"r%02d" % i for i in range(n)]
            await jump_to(clock, bc, w, start + DAY_MS)
            got = await delivered(w)
            assert len(got) == n and len(set(got)) == n

    run_mock(main, clock, real_timeout_s=60.0)
