"""TimerService (rmq_broker/timer.py): the send-path rules, delivery on time, rolling, exactly-once over restarts
and crashes, and per-tick cost.

Most tests drive the service by hand — ``recover()``, ``load()``, ``tick(now)`` — against a real MessageStore,
with a clock the test sets; two run the real loop (``run``) under trio's MockClock. A "crash" is an exception
raised inside the service at a chosen store write: the service object is then thrown away (its memory is lost)
and a new one recovers from what the store holds, as after a restart.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import trio
import trio.testing

from rmq_broker.clock import BrokerClock
from rmq_broker.timer import (DEQUEUE_MS, ENQUEUE_MS, OP_QUEUE, OUT_MS, ROLL_TIMES, SOURCE, TIMER_QUEUE,
                              TIMER_TOPIC, TimerRefused, TimerService)
from rmq_common import sysflag
from rmq_common._record import decode_records
from rmq_common.properties import decode_properties, encode_properties
from rmq_remoting import ResponseCode, fastjson
from rmq_store import GetStatus, MessageStore, StoreError
from rmq_testing import test_broker_config as broker_config_for

DAY_MS = 24 * 3600 * 1000
T0 = 1_700_000_000_000          # the manual clock's start, ms


class ManualClock:
    """A trio-clock stand-in whose time the test sets (seconds)."""

    def __init__(self) -> None:
        self.t = 0.0

    def current_time(self) -> float:
        return self.t


class Env:
    """A store, a broker config and a clock at T0; ``service()`` builds a (new) TimerService on them."""

    def __init__(self, tmp_path, **properties) -> None:
        self.root = str(tmp_path / "broker")
        self.config = broker_config_for(self.root, None, **properties)
        self.manual = ManualClock()
        self.clock = BrokerClock(self.manual)
        self.clock._base_ms = T0              # a fixed wall time, so tests can name absolute times
        self.store = self._open()
        self.path = os.path.join(self.root, "config", "timerCheckpoint.json")

    def _open(self) -> MessageStore:
        store = MessageStore(self.config.store_config(), clock_ms=self.clock.now_ms)
        store.open()
        return store

    def reopen(self) -> None:
        self.store.close()
        self.store = self._open()

    def set_now(self, ms: int) -> None:
        self.manual.t = (ms - T0) / 1000

    def service(self) -> TimerService:
        svc = TimerService(self.store, self.clock, self.config, self.path)
        svc.recover()
        svc.load()
        return svc

    def send(self, svc: TimerService, topic: str, body: bytes, queue_id: int = 0, sys_flag: int = 0,
             **props: str):
        """The send path: park, then store where park says (as SendMessageProcessor does)."""
        t, q, p = svc.park(topic, queue_id, encode_properties(props), sys_flag)
        return t, self.store.put_batch(t, [body], q, properties=p, sys_flag=sys_flag, wait_flush=False)

    def records(self, topic: str, queue_id: int = 0) -> list:
        out, offset = [], self.store.min_offset(topic, queue_id)
        while True:
            result = self.store.get_messages(topic, queue_id, offset, 1024)
            if result.status is not GetStatus.FOUND:
                result.release()
                return out
            try:
                out.extend(decode_records(b"".join(result.buffers)))
            finally:
                result.release()
            offset = result.next_begin_offset

    def ops(self) -> list[str]:
        return [r.body.decode() for r in self.records(TIMER_TOPIC, OP_QUEUE)]


def run_until(env: Env, svc: TimerService, now: int) -> int:
    """Set the clock to ``now`` and let the service load and deliver everything due; returns entries handled."""
    env.set_now(now)
    handled = 0
    while True:
        svc.load()
        n = svc.tick(now)
        handled += n
        if n == 0 and (not svc._heap or svc._heap[0][0] > now):
            return handled


@pytest.fixture
def env(tmp_path) -> Env:
    e = Env(tmp_path, timerMaxDelaySec=30 * 24 * 3600)
    yield e
    if e.store.is_open:
        e.store.close()


# -- the send path ------------------------------------------------------------------------------------


def test_park_computes_the_deliver_time_from_each_property(env) -> None:
    svc = env.service()
    env.set_now(T0 + 500)
    now = T0 + 500
    cases = {"TIMER_DELIVER_MS": (str(T0 + 60_000), T0 + 60_000),
             "TIMER_DELAY_SEC": ("90", now + 90_000),
             "TIMER_DELAY_MS": ("1234", now + 1234)}
    for key, (value, expected) in cases.items():
        topic, queue_id, props = svc.park("T", 3, encode_properties({key: value, "TAGS": "a"}), 0)
        table = decode_properties(props)
        assert (topic, queue_id) == (TIMER_TOPIC, TIMER_QUEUE), key
        assert table[OUT_MS] == str(expected), key
        assert (table["REAL_TOPIC"], table["REAL_QID"], table[key], table["TAGS"]) == ("T", "3", value, "a")
    # Java's order when several are set: DELAY_SEC, then DELAY_MS, then DELIVER_MS
    _, _, props = svc.park("T", 0, encode_properties({"TIMER_DELIVER_MS": str(T0 + 5), "TIMER_DELAY_MS": "7",
                                                      "TIMER_DELAY_SEC": "2"}), 0)
    assert decode_properties(props)[OUT_MS] == str(now + 2000)


def test_park_refuses_and_passes_through_as_rocketmq_5(env) -> None:
    svc = env.service()
    env.set_now(T0)
    plain = encode_properties({"TAGS": "x"})
    assert svc.park("T", 1, plain, 0) == ("T", 1, plain)
    # in the past or now: no timer, stored to its topic as sent
    for value in (str(T0), str(T0 - 1), "0", "-5"):
        props = encode_properties({"TIMER_DELIVER_MS": value})
        assert svc.park("T", 1, props, 0) == ("T", 1, props)
    assert svc.park("T", 1, encode_properties({"TIMER_DELAY_SEC": "-1"}), 0)[0] == "T"
    # further than timerMaxDelaySec (30 days here): MESSAGE_ILLEGAL with Java's remark
    with pytest.raises(TimerRefused) as refused:
        svc.park("T", 1, encode_properties({"TIMER_DELAY_SEC": str(30 * 24 * 3600 + 1)}), 0)
    assert refused.value.code == ResponseCode.MESSAGE_ILLEGAL
    assert refused.value.remark == ("timer message illegal, the delay time should not be bigger than the max delay "
                                    "2592000000ms; or if set del msg, the delay time should be bigger than the "
                                    "current time")
    assert svc.park("T", 1, encode_properties({"TIMER_DELAY_SEC": str(30 * 24 * 3600)}), 0)[0] == TIMER_TOPIC
    for bad in ("soon", "1.5", " 5", "99999999999999999999"):
        with pytest.raises(TimerRefused) as refused:
            svc.park("T", 1, encode_properties({"TIMER_DELIVER_MS": bad}), 0)
        assert refused.value.code == ResponseCode.MESSAGE_ILLEGAL, bad
    # an empty value is no property at all (as Java's string2messageProperties drops it)
    empty = b"TIMER_DELIVER_MS\x01"
    assert svc.park("T", 1, empty, 0) == ("T", 1, empty)
    # a delay level wins: the TIMER properties are dropped and the send is a delay-level send
    topic, _, props = svc.park("T", 1, encode_properties({"DELAY": "3", "TIMER_DELAY_SEC": "60",
                                                          "TIMER_DELIVER_MS": "1", "TIMER_DELAY_MS": "1"}), 0)
    assert topic == "T" and decode_properties(props) == {"DELAY": "3"}
    # a copy of a delivered timer (TIMER_OUT_MS set) is not timed again
    copy = encode_properties({"TIMER_DELAY_SEC": "60", OUT_MS: str(T0)})
    assert svc.park("T", 1, copy, 0) == ("T", 1, copy)
    # half and rollback records are never timed; committed ones are
    delayed = encode_properties({"TIMER_DELAY_SEC": "60"})
    assert svc.park("T", 1, delayed, sysflag.TRANSACTION_PREPARED_TYPE)[0] == "T"
    assert svc.park("T", 1, delayed, sysflag.TRANSACTION_ROLLBACK_TYPE)[0] == "T"
    assert svc.park("T", 1, delayed, sysflag.TRANSACTION_COMMIT_TYPE)[0] == TIMER_TOPIC
    # cancellation is not supported: refused rather than delivered as an ordinary message
    with pytest.raises(TimerRefused):
        svc.park("T", 1, encode_properties({"TIMER_DELAY_SEC": "60", "TIMER_DEL_UNIQKEY": "k"}), 0)
    # timerWheelEnable=false: SYSTEM_ERROR (Java WHEEL_TIMER_NOT_ENABLE)
    env.config.timer_wheel_enable = False
    with pytest.raises(TimerRefused) as refused:
        svc.park("T", 1, delayed, 0)
    assert refused.value.code == ResponseCode.SYSTEM_ERROR
    assert refused.value.remark == "accurate timer message is not enabled, timerWheelEnable is false"


def test_max_delay_is_configurable_to_years(tmp_path) -> None:
    env = Env(tmp_path, timerMaxDelaySec=10 * 365 * 24 * 3600)
    try:
        svc = env.service()
        env.set_now(T0)
        assert svc.park("T", 0, encode_properties({"TIMER_DELAY_SEC": str(9 * 365 * 24 * 3600)}), 0)[0] == TIMER_TOPIC
        assert env.config.to_properties()["timerMaxDelaySec"] == str(10 * 365 * 24 * 3600)
    finally:
        env.store.close()


# -- delivery -----------------------------------------------------------------------------------------


def test_a_timer_7_days_out_is_rolled_forward_and_delivered_on_time(env) -> None:
    svc = env.service()
    env.set_now(T0)
    deliver = T0 + 7 * DAY_MS + 123
    topic, put = env.send(svc, "Orders", b"a week later", queue_id=2, TIMER_DELIVER_MS=str(deliver), TAGS="t1",
                          KEYS="k1")
    assert topic == TIMER_TOPIC and put.first_queue_offset == 0
    window = svc.roll_window_ms()
    assert window == 36 * 3600 * 1000              # half of fileReservedTime (72 h), below the 2-day maximum
    now = T0
    while now < deliver - 1:                       # a day at a time: the parked record is copied forward
        now = min(now + DAY_MS, deliver - 1)
        run_until(env, svc, now)
        assert env.records("Orders", 2) == []
    parked = env.records(TIMER_TOPIC)
    rolls = len(parked) - 1
    assert rolls == 3 and parked[-1].properties[ROLL_TIMES] == "3"      # at days 2, 4 and 6
    assert parked[-1].properties[SOURCE] == str(parked[-2].queue_offset)
    assert run_until(env, svc, deliver) == 1
    [msg] = env.records("Orders", 2)
    assert (msg.body, msg.topic, msg.queue_id, msg.queue_offset) == (b"a week later", "Orders", 2, 0)
    assert msg.store_timestamp == deliver
    props = msg.properties
    assert "REAL_TOPIC" not in props and "REAL_QID" not in props
    assert props[OUT_MS] == str(deliver) and props["TIMER_DELIVER_MS"] == str(deliver)
    assert (props["TAGS"], props["KEYS"], props[ROLL_TIMES]) == ("t1", "k1", "3")
    assert props[DEQUEUE_MS] == str(deliver) and props[ENQUEUE_MS] == str(parked[-1].store_timestamp)
    assert props[SOURCE] == str(parked[-1].queue_offset)
    assert svc.stats.delivered == 1 and svc.stats.rolled == 3 and svc.pending == 0
    # every op record is an intent followed by its done record
    ops = env.ops()
    assert [o[0] for o in ops] == ["I", "D"] * 4
    assert run_until(env, svc, deliver + DAY_MS) == 0 and len(env.records("Orders", 2)) == 1


def test_a_short_retention_shortens_the_roll_window(tmp_path) -> None:
    env = Env(tmp_path, fileReservedTime=1)
    try:
        assert env.service().roll_window_ms() == 3600 * 1000        # never below an hour
        env.config.store = env.config.store.replace(file_reserved_time_hours=10)
        assert env.service().roll_window_ms() == 5 * 3600 * 1000
    finally:
        env.store.close()


def test_ten_thousand_random_timers_are_delivered_in_order_each_once_by_the_loop(tmp_path) -> None:
    """The real loop on a MockClock: 10,000 timers over an hour, with arrivals while it runs."""
    clock = trio.testing.MockClock()
    env = Env(tmp_path, timerPrecisionMs=1)
    env.clock = BrokerClock(clock)
    env.store.close()
    env.store = env._open()
    rng = random.Random(5)

    async def main() -> None:
        svc = TimerService(env.store, env.clock, env.config, env.path)
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.run)
            start = env.clock.now_ms()
            deliver = {}
            for i in range(10_000):
                when = start + 1 + rng.randrange(3_600_000)
                body = b"m%05d" % i
                deliver[body] = when
                env.send(svc, "R", body, TIMER_DELIVER_MS=str(when))
                if i % 2500 == 0:
                    await trio.testing.wait_all_tasks_blocked()
            seen = 0
            for _ in range(60):                  # a minute at a time
                clock.jump(60)
                await trio.testing.wait_all_tasks_blocked()
                got = env.records("R")
                now = env.clock.now_ms()
                assert all(deliver[m.body] <= m.store_timestamp for m in got[seen:])
                due_now = sum(1 for w in deliver.values() if w <= now)
                assert len(got) == due_now, (len(got), due_now)
                seen = len(got)
            got = env.records("R")
            assert sorted(m.body for m in got) == sorted(deliver)           # each exactly once
            order = [(deliver[m.body], int(m.properties[SOURCE])) for m in got]
            assert order == sorted(order)                                   # in deliver-time order
            assert svc.pending == 0 and svc.stats.delivered == 10_000
            nursery.cancel_scope.cancel()
        # the checkpoint written on the way out says everything is done
        data = fastjson.loads(Path(env.path).read_bytes())
        assert data["lowWater"] == 10_000

    try:
        trio.run(main, clock=clock)
    finally:
        env.store.close()


def test_the_loop_delivers_at_the_first_precision_multiple_not_before(tmp_path) -> None:
    clock = trio.testing.MockClock()
    env = Env(tmp_path)                          # timerPrecisionMs = 1000
    env.clock = BrokerClock(clock)
    env.store.close()
    env.store = env._open()

    async def main() -> None:
        svc = TimerService(env.store, env.clock, env.config, env.path)
        async with trio.open_nursery() as nursery:
            await nursery.start(svc.run)
            now = env.clock.now_ms()
            deliver = now + 5_300
            env.send(svc, "P", b"x", TIMER_DELAY_MS="5300")
            await trio.testing.wait_all_tasks_blocked()
            clock.jump(5.29)
            await trio.testing.wait_all_tasks_blocked()
            assert env.records("P") == []
            # the first multiple of timerPrecisionMs (1 s) at or after the deliver time
            ceiling = -(-deliver // 1000) * 1000
            clock.jump((ceiling - env.clock.now_ms() - 3) / 1000)
            await trio.testing.wait_all_tasks_blocked()
            assert env.records("P") == []
            clock.jump(0.006)
            await trio.testing.wait_all_tasks_blocked()
            [msg] = env.records("P")
            assert deliver <= msg.store_timestamp <= deliver + 1000
            assert ceiling <= msg.store_timestamp <= ceiling + 6
            nursery.cancel_scope.cancel()

    try:
        trio.run(main, clock=clock)
    finally:
        env.store.close()


# -- restarts and crashes -----------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for the process dying: nothing after it runs."""


def crash_after_puts(store: MessageStore, n: int, topic: str | None = None) -> None:
    """Make the store's n+1-th put (to ``topic``, or any) raise Crash (before writing)."""
    real = store.put_batch
    count = [0]

    def put_batch(t, *args, **kwargs):
        if topic is None or t == topic:
            if count[0] == n:
                raise Crash()
            count[0] += 1
        return real(t, *args, **kwargs)

    store.put_batch = put_batch


def restore_puts(store: MessageStore) -> None:
    store.__dict__.pop("put_batch", None)


def delivered_bodies(env: Env, topic: str = "C") -> list[bytes]:
    return [m.body for m in env.records(topic)]


@pytest.mark.parametrize("copies_before_crash", [0, 1, 3, 5])
def test_a_crash_between_intent_and_done_neither_loses_nor_repeats(env, copies_before_crash) -> None:
    svc = env.service()
    env.set_now(T0)
    for i in range(5):
        env.send(svc, "C", b"c%d" % i, TIMER_DELIVER_MS=str(T0 + 1000 + i))
    env.send(svc, "C", b"later", TIMER_DELIVER_MS=str(T0 + 60_000))
    env.set_now(T0 + 2000)
    svc.load()
    # the intent op, then `copies_before_crash` copies, then the process dies (no D)
    crash_after_puts(env.store, 1 + copies_before_crash)
    with pytest.raises(Crash):
        svc.tick(T0 + 2000)
    restore_puts(env.store)
    assert len(delivered_bodies(env)) == copies_before_crash
    del svc
    env.reopen()
    svc = env.service()
    assert svc.stats.recovered_from_tail == copies_before_crash
    assert env.ops()[-1].startswith("D")           # recovery closed the open intent
    run_until(env, svc, T0 + 2000)
    assert sorted(delivered_bodies(env)) == [b"c%d" % i for i in range(5)]
    run_until(env, svc, T0 + 60_000)
    assert sorted(delivered_bodies(env)) == sorted([b"c%d" % i for i in range(5)] + [b"later"])


def test_a_crash_in_the_middle_of_a_roll_is_settled_too(env) -> None:
    svc = env.service()
    env.set_now(T0)
    env.send(svc, "C", b"far", TIMER_DELIVER_MS=str(T0 + 5 * DAY_MS))
    env.set_now(T0 + 2 * DAY_MS)
    svc.load()
    crash_after_puts(env.store, 2)                   # intent, the rolled copy, then death
    with pytest.raises(Crash):
        svc.tick(T0 + 2 * DAY_MS)
    restore_puts(env.store)
    env.reopen()
    svc = env.service()
    assert svc.pending == 1                           # the copy, not the original as well
    run_until(env, svc, T0 + 5 * DAY_MS)
    assert delivered_bodies(env) == [b"far"]


def test_restart_with_a_stale_or_missing_checkpoint_repeats_nothing(env) -> None:
    svc = env.service()
    env.set_now(T0)
    for i in range(40):
        env.send(svc, "C", b"s%02d" % i, TIMER_DELIVER_MS=str(T0 + 1000 * (i + 1)))
    run_until(env, svc, T0 + 10_000)
    svc.persist()                                     # checkpoint after 10 deliveries
    stale = Path(env.path).read_bytes()
    assert fastjson.loads(stale)["lowWater"] == 10
    run_until(env, svc, T0 + 25_000)
    assert len(delivered_bodies(env)) == 25
    # stale: 15 deliveries since; missing or unreadable: rebuilt from the op records alone
    for checkpoint in (stale, None, b"{garbage"):
        if checkpoint is None:
            for name in (env.path, env.path + ".bak"):
                Path(name).unlink(missing_ok=True)
        else:
            for name in (env.path, env.path + ".bak"):
                Path(name).write_bytes(checkpoint)
        env.reopen()
        svc = env.service()
        assert svc.pending == 15 and svc.low_water == 25
        run_until(env, svc, T0 + 25_000)
        assert len(delivered_bodies(env)) == 25
    run_until(env, svc, T0 + 40_000)
    assert delivered_bodies(env) == [b"s%02d" % i for i in range(40)]


def test_a_failed_done_record_is_written_before_the_next_intent(env) -> None:
    svc = env.service()
    env.set_now(T0)
    env.send(svc, "C", b"a", TIMER_DELIVER_MS=str(T0 + 1000))
    env.send(svc, "C", b"b", TIMER_DELIVER_MS=str(T0 + 2000))
    env.set_now(T0 + 1000)
    svc.load()
    real = env.store.put_batch

    def no_ops(t, bodies, q, *a, **k):
        if t == TIMER_TOPIC and q == OP_QUEUE and bodies[0].startswith(b"D"):
            raise StoreError("disk trouble")
        return real(t, bodies, q, *a, **k)

    env.store.put_batch = no_ops
    with pytest.raises(StoreError):
        svc.tick(T0 + 1000)
    with pytest.raises(StoreError):                  # still failing: no new intent is written
        svc.tick(T0 + 2000)
    assert [o[0] for o in env.ops()] == ["I"]
    restore_puts(env.store)
    assert svc.tick(T0 + 2000) == 1
    assert [o[0] for o in env.ops()] == ["I", "D", "I", "D"]
    assert delivered_bodies(env) == [b"a", b"b"]


def test_a_store_failure_during_delivery_keeps_the_rest_pending(env) -> None:
    svc = env.service()
    env.set_now(T0)
    for i in range(3):
        env.send(svc, "C", b"f%d" % i, TIMER_DELIVER_MS=str(T0 + 1000))
    env.set_now(T0 + 1000)
    svc.load()
    real = env.store.put_batch
    calls = [0]

    def flaky(t, *a, **k):
        if t == "C":
            calls[0] += 1
            if calls[0] == 2:
                raise StoreError("transient")
        return real(t, *a, **k)

    env.store.put_batch = flaky
    with pytest.raises(StoreError):
        svc.tick(T0 + 1000)
    restore_puts(env.store)
    assert svc.pending == 2 and delivered_bodies(env) == [b"f0"]
    assert env.ops()[-1] == "D 0"
    run_until(env, svc, T0 + 1000)
    assert delivered_bodies(env) == [b"f0", b"f1", b"f2"]
    env.reopen()
    svc = env.service()
    assert svc.pending == 0 and run_until(env, svc, T0 + 5000) == 0


def test_malformed_parked_records_are_dropped_not_retried(env) -> None:
    svc = env.service()
    env.set_now(T0)
    env.store.put_batch(TIMER_TOPIC, [b"junk"], TIMER_QUEUE, properties=b"TAGS\x01x", wait_flush=False)
    env.send(svc, "C", b"ok", TIMER_DELAY_MS="10")
    run_until(env, svc, T0 + 10)
    assert delivered_bodies(env) == [b"ok"] and svc.stats.dropped == 1 and svc.low_water == 2


# -- cost per tick (I6) -------------------------------------------------------------------------------


@pytest.mark.parametrize("pending", [100, 100_000])
def test_the_work_of_a_tick_does_not_depend_on_the_pending_timers(tmp_path, pending) -> None:
    env = Env(tmp_path, mappedFileSizeCommitLog=64 * 1024 * 1024, timerMaxDelaySec=30 * 24 * 3600)
    try:
        svc = env.service()
        env.set_now(T0)
        _, _, far = svc.park("Far", 0, encode_properties({"TIMER_DELIVER_MS": str(T0 + DAY_MS)}), 0)
        env.store.put_batch(TIMER_TOPIC, [b"f"] * pending, TIMER_QUEUE, properties=far, wait_flush=False)
        assert svc.load() == pending and svc.pending == pending
        for i in range(10):
            env.send(svc, "Near", b"n%d" % i, TIMER_DELIVER_MS=str(T0 + 1000 + i))
        pushes = svc.stats.heap_pushes
        assert svc.load() == 10                        # only the new records are read
        assert svc.stats.heap_pushes - pushes == 10    # one push each
        env.set_now(T0 + 2000)
        assert svc.tick(T0 + 2000) == 10
        stats = svc.stats
        assert (stats.last_tick_pops, stats.last_tick_pushes, stats.last_tick_reads) == (10, 0, 10)
        assert svc.tick(T0 + 2000) == 0 and svc.pending == pending
        assert len(env.records("Near")) == 10
    finally:
        env.store.close()
