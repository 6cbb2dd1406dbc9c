"""Transactional messages over the wire (PROTOCOL.md §9.5): half messages, END_TRANSACTION (37), the check-back
CHECK_TRANSACTION_STATE (39) on a mock clock, and restarts.

Time: brokers run on ``BrokerClock(MockClock())`` (rate 0, no autojump; see test_broker_wire_delay.py): broker time
moves only when a test jumps the clock, so a 60 s check interval passes in microseconds. After a jump the tests pump
real socket I/O with a cheap request until what they wait for has arrived (``until``).
"""
from __future__ import annotations

import time
from typing import Any

import trio
import trio.testing
from broker_wire_support import PRODUCER_GROUP, Wire, props, run, run_mock, wire

from rmq_broker.clock import BrokerClock
from rmq_common import sysflag
from rmq_common._record import decode_record, decode_records, encode_batch_body
from rmq_common.msgid import decode_offset_msg_id
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h
from rmq_remoting.errors import RemotingTimeoutError

TOPIC = "TxT"
HALF = "RMQ_SYS_TRANS_HALF_TOPIC"
OP = "RMQ_SYS_TRANS_OP_HALF_TOPIC"
CHECK_MAX = "TRANS_CHECK_MAX_TIME_TOPIC"
SYS_GROUP = "CID_RMQ_SYS_TRANS"
INTERVAL_S = 60                             # transactionCheckInterval default
COMMIT = sysflag.TRANSACTION_COMMIT_TYPE
ROLLBACK = sysflag.TRANSACTION_ROLLBACK_TYPE


def tx_props(uniq: str, **extra: str) -> str:
    """What a Java producer's sendMessageInTransaction sends: TRAN_MSG=true, PGROUP, UNIQ_KEY."""
    return props(TRAN_MSG="true", PGROUP=PRODUCER_GROUP, UNIQ_KEY=uniq, WAIT="true", **extra)


async def send_half(w: Wire, uniq: str, body: bytes = b"tx", *, queue_id: int = 1, **extra: str
                    ) -> h.SendMessageResponseHeader:
    # a Java producer also sets the PREPARED bits in sysFlag; the broker clears them for the half queue
    return await w.send_ok(TOPIC, body, queue_id=queue_id, properties=tx_props(uniq, **extra),
                           sys_flag=sysflag.TRANSACTION_PREPARED_TYPE)


def phy_of(msg_id: str) -> int:
    return decode_offset_msg_id(msg_id)[2]


async def end(w: Wire, queue_offset: int, commit_log_offset: int, kind: int, uniq: str | None = None, *,
              from_check: bool = False, group: str = PRODUCER_GROUP, timeout_ms: float = 5000) -> RemotingCommand:
    header = h.EndTransactionRequestHeader(
        producer_group=group, tran_state_table_offset=queue_offset, commit_log_offset=commit_log_offset,
        commit_or_rollback=kind, from_transaction_check=from_check, msg_id=uniq or "", transaction_id=uniq)
    return await w.call(RequestCode.END_TRANSACTION, header, timeout_ms=timeout_ms)


async def end_ok(w: Wire, sent: h.SendMessageResponseHeader, kind: int, uniq: str, **kw: Any) -> RemotingCommand:
    resp = await end(w, sent.queue_offset, phy_of(sent.msg_id), kind, uniq, **kw)
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return resp


async def records(w: Wire, topic: str = TOPIC, queue_id: int = 1) -> list:
    resp = await w.pull(topic, queue_id, 0)
    if resp.code == ResponseCode.PULL_NOT_FOUND:
        return []
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return decode_records(bytes(resp.body))


async def sys_offset(w: Wire, topic: str) -> int | None:
    resp = await w.query_offset(topic, 0, group=SYS_GROUP)
    if resp.code != ResponseCode.SUCCESS:
        return None
    return h.QueryConsumerOffsetResponseHeader.decode(resp.ext_fields).offset


class Producer:
    """The producer side of the check-back: a handler for code 39 on the test client's own connection."""

    def __init__(self, w: Wire) -> None:
        self.w = w
        self.checks: list[tuple[Any, RemotingCommand]] = []
        w.client.register(RequestCode.CHECK_TRANSACTION_STATE, self._on_check)

    async def _on_check(self, conn: Any, cmd: RemotingCommand) -> None:
        self.checks.append((conn, cmd))

    async def register(self) -> None:
        resp = await self.w.heartbeat("tx-client@1")        # producerDataSet [{"groupName": PRODUCER_GROUP}]
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


async def until(w: Wire, predicate, rounds: int = 200) -> None:
    """Let the broker run (woken tasks finish; socket I/O is pumped by a small request) until ``predicate()``."""
    for _ in range(rounds):
        await trio.testing.wait_all_tasks_blocked()
        if predicate():
            return
        await w.max_offset(HALF)
    assert predicate()


async def settle(w: Wire) -> None:
    for _ in range(5):
        await trio.testing.wait_all_tasks_blocked()
        await w.max_offset(HALF)


async def jump(clock: trio.testing.MockClock, w: Wire, seconds: float = INTERVAL_S + 1) -> None:
    """Move broker time on. A registered producer heartbeats first, as a client does every 30 s (a producer
    channel without a heartbeat for 120 s is dropped)."""
    if RequestCode.CHECK_TRANSACTION_STATE in w.client.handlers:
        resp = await w.heartbeat("tx-client@1")
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    clock.jump(seconds)
    await settle(w)


# -- tests ------------------------------------------------------------------------------------------


def test_half_is_hidden_commit_delivers_once(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            sent = await send_half(w, "UNIQ-A", b"order-1", TAGS="TagA", KEYS="k1 k2")
            # the reply names the real queue and the offset in the half queue (Java's handlePutMessageResult)
            assert (sent.queue_id, sent.queue_offset) == (1, 0)
            half_phy = phy_of(sent.msg_id)
            assert await records(w) == [] and await w.max_offset(TOPIC, 1) == 0

            [half] = await records(w, HALF, 0)
            assert (half.commit_log_offset, half.queue_offset, half.body) == (half_phy, 0, b"order-1")
            assert sysflag.transaction_value(half.sys_flag) == sysflag.TRANSACTION_NOT_TYPE
            assert (half.properties["REAL_TOPIC"], half.properties["REAL_QID"]) == (TOPIC, "1")
            assert half.properties["TRAN_MSG"] == "true" and "WAIT" not in half.properties

            resp = await end_ok(w, sent, COMMIT, "UNIQ-A")
            assert resp.remark is None
            [msg] = await records(w)
            assert (msg.topic, msg.queue_id, msg.queue_offset, msg.body) == (TOPIC, 1, 0, b"order-1")
            assert sysflag.transaction_value(msg.sys_flag) == COMMIT
            assert msg.prepared_transaction_offset == half_phy
            assert (msg.born_timestamp, msg.born_host) == (half.born_timestamp, half.born_host)
            # RocketMQ 4.9 stores the half's property string: TRAN_MSG, REAL_TOPIC/REAL_QID, PGROUP stay
            assert msg.properties == half.properties
            assert msg.properties["UNIQ_KEY"] == "UNIQ-A" and msg.keys == ["k1", "k2"]
            assert len(await w.pull_records(TOPIC, 1, 0, subscription="TagA")) == 1
            # the op record: tag d, body = the half's queue offset
            [op] = await records(w, OP, 0)
            assert (op.body, op.properties["TAGS"], op.properties["KEYS"]) == (b"0", "d", "UNIQ-A")

            # duplicates (a retried commit, a late rollback, a late check answer) deliver nothing
            resp = await end_ok(w, sent, COMMIT, "UNIQ-A")
            assert "already" in resp.remark
            await end_ok(w, sent, ROLLBACK, "UNIQ-A")
            await end_ok(w, sent, COMMIT, "UNIQ-A", from_check=True)
            assert len(await records(w)) == 1 and await w.max_offset(OP) == 1
            # progress of the check service: consumer offsets of CID_RMQ_SYS_TRANS
            assert (await sys_offset(w, HALF), await sys_offset(w, OP)) == (1, 1)

            # nothing left to check
            producer = Producer(w)
            await producer.register()
            await jump(clock, w)
            assert producer.checks == [] and await w.max_offset(HALF) == 1

    run_mock(main, clock)


def test_rollback_is_never_visible(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            producer = Producer(w)
            await producer.register()
            sent = await send_half(w, "UNIQ-R")
            await end_ok(w, sent, ROLLBACK, "UNIQ-R")
            assert await records(w) == []
            await end_ok(w, sent, COMMIT, "UNIQ-R")          # a commit after the rollback: nothing
            assert await records(w) == [] and await w.max_offset(TOPIC, 1) == 0
            for _ in range(3):
                await jump(clock, w)
            assert producer.checks == [] and await records(w) == []

    run_mock(main, clock)


def test_end_transaction_validations(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic(TOPIC, 2)
            sent = await send_half(w, "UNIQ-V")
            phy = phy_of(sent.msg_id)
            resp = await end(w, 0, phy, COMMIT, "UNIQ-V", group="PG_other")
            assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR, "The producer group wrong")
            resp = await end(w, 7, phy, COMMIT, "UNIQ-V")
            assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR, "The transaction state table offset wrong")
            plain = await w.send_ok(TOPIC, b"plain", queue_id=0, properties=props(PGROUP=PRODUCER_GROUP))
            for offset in (phy_of(plain.msg_id), phy + 1, 1 << 40, -5):
                resp = await end(w, 0, offset, COMMIT, "UNIQ-V")
                assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR,
                                                    "Find prepared transaction message failed"), offset
            resp = await w.call(RequestCode.END_TRANSACTION, {"producerGroup": PRODUCER_GROUP})
            assert resp.code == ResponseCode.SYSTEM_ERROR and "tranStateTableOffset" in resp.remark
            # "unknown" (0) gets no answer at all, as RocketMQ's processor returns null
            try:
                await end(w, 0, phy, sysflag.TRANSACTION_NOT_TYPE, "UNIQ-V", timeout_ms=300)
            except RemotingTimeoutError:
                pass
            else:
                raise AssertionError("END_TRANSACTION with commitOrRollback=0 was answered")
            assert await records(w) == []
            await end_ok(w, sent, COMMIT, "UNIQ-V")
            assert len(await records(w)) == 1

    run(main)


def test_reject_transaction_message(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"rejectTransactionMessage": "true"}) as w:
            await w.create_topic(TOPIC, 2)
            resp = await w.send(TOPIC, b"x", queue_id=1, properties=tx_props("UNIQ-X"))
            assert resp.code == ResponseCode.NO_PERMISSION
            assert "sending transaction message is forbidden" in resp.remark
            # TRAN_MSG=false is a plain message
            await w.send_ok(TOPIC, b"y", queue_id=1, properties=props(TRAN_MSG="false"))
            assert len(await records(w)) == 1 and await w.max_offset(HALF) == 0

    run(main)


def test_check_back_on_the_producer_connection_in_well_under_a_second(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            producer = Producer(w)
            await producer.register()
            began = time.monotonic()
            sent = await send_half(w, "UNIQ-C", b"pending", TAGS="TagC")
            # younger than transactionTimeOut (6 s): the first round (after 60 s) would check it, not before
            await jump(clock, w, 30)
            assert producer.checks == []

            await jump(clock, w, 31)
            await until(w, lambda: producer.checks)
            [(conn, check)] = producer.checks
            assert conn is w.client.connection_for(w.addr)          # the producer's own connection
            assert check.code == RequestCode.CHECK_TRANSACTION_STATE and check.is_oneway
            header = h.CheckTransactionStateRequestHeader.decode(check.ext_fields)
            # the check names the copy the broker stored for it, at the end of the half queue
            assert header.tran_state_table_offset == 1 and await w.max_offset(HALF) == 2
            assert header.commit_log_offset != phy_of(sent.msg_id)
            assert phy_of(header.offset_msg_id) == header.commit_log_offset
            assert (header.msg_id, header.transaction_id) == ("UNIQ-C", "UNIQ-C")
            body = decode_record(bytes(check.body))
            assert (body.topic, body.queue_id, body.body) == (TOPIC, 1, b"pending")
            assert (body.queue_offset, body.commit_log_offset) == (1, header.commit_log_offset)
            assert body.properties["TRANSACTION_CHECK_TIMES"] == "1" and body.properties["PGROUP"] == PRODUCER_GROUP
            [_, copy] = await records(w, HALF, 0)
            assert copy.properties["TRANSACTION_CHECK_TIMES"] == "1" and copy.body == b"pending"

            # the producer answers the check
            resp = await end(w, header.tran_state_table_offset, header.commit_log_offset, COMMIT, "UNIQ-C",
                             from_check=True)
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            [msg] = await records(w)
            assert (msg.body, msg.properties["TRANSACTION_CHECK_TIMES"], msg.prepared_transaction_offset) == (
                b"pending", "1", header.commit_log_offset)
            # About 15 ms of real time for a 6 s timeout plus a 60 s check interval; loose bound against CI load.
            assert time.monotonic() - began < 10.0, "the check-back waited for real time"

            # resolved: no further checks; the stale first copy cannot be committed again
            await jump(clock, w)
            await jump(clock, w)
            assert len(producer.checks) == 1 and await w.max_offset(HALF) == 2
            resp = await end_ok(w, sent, COMMIT, "UNIQ-C")
            assert "already" in resp.remark and len(await records(w)) == 1
            # one op (for the copy); both halves passed
            assert (await sys_offset(w, HALF), await sys_offset(w, OP), await w.max_offset(OP)) == (2, 1, 1)

    run_mock(main, clock)


def test_commit_of_the_first_copy_resolves_the_transaction(tmp_path) -> None:
    """The producer commits the half it sent after the broker stored a copy for a check: the copy is not checked
    again, and the producer's late answer to the check delivers nothing (RocketMQ 4.9 would deliver twice)."""
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            producer = Producer(w)
            await producer.register()
            sent = await send_half(w, "UNIQ-S")
            await jump(clock, w)
            await until(w, lambda: producer.checks)
            header = h.CheckTransactionStateRequestHeader.decode(producer.checks[0][1].ext_fields)
            await end_ok(w, sent, COMMIT, "UNIQ-S")                 # the original half, offset 0
            assert len(await records(w)) == 1
            await jump(clock, w)
            assert len(producer.checks) == 1                        # the copy (offset 1) is known resolved
            resp = await end(w, header.tran_state_table_offset, header.commit_log_offset, COMMIT, "UNIQ-S",
                             from_check=True)
            assert resp.code == ResponseCode.SUCCESS and "already" in resp.remark
            assert len(await records(w)) == 1

    run_mock(main, clock)


def test_check_max_moves_the_half_to_trans_check_max_time_topic(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock), broker_properties={"transactionCheckMax": 2}) as w:
            await w.create_topic(TOPIC, 2)
            producer = Producer(w)
            await producer.register()
            await send_half(w, "UNIQ-M", b"never answered")
            for n in (1, 2):
                await jump(clock, w)
                await until(w, lambda n=n: len(producer.checks) == n)
            times = [decode_record(bytes(c.body)).properties["TRANSACTION_CHECK_TIMES"] for _, c in producer.checks]
            assert times == ["1", "2"]
            # the next round finds a half checked transactionCheckMax times: moved, never checked again
            await jump(clock, w)
            await until(w, lambda: w.cluster.broker.transactions.discarded == 1)
            [moved] = await records(w, CHECK_MAX, 0)
            assert (moved.body, moved.properties["REAL_TOPIC"], moved.properties["UNIQ_KEY"]) == (
                b"never answered", TOPIC, "UNIQ-M")
            await jump(clock, w)
            assert len(producer.checks) == 2 and await records(w) == []
            assert await w.max_offset(HALF) == await sys_offset(w, HALF) == 3

    run_mock(main, clock)


def test_check_immunity_time(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            producer = Producer(w)
            await producer.register()
            await send_half(w, "UNIQ-I", CHECK_IMMUNITY_TIME_IN_SECONDS="100")
            await jump(clock, w)                                   # 61 s < 100 s: stored again, not checked
            assert producer.checks == [] and await w.max_offset(HALF) == 2
            [_, copy] = await records(w, HALF, 0)
            assert copy.properties["TRAN_PREPARED_QUEUE_OFFSET"] == "0"
            await jump(clock, w)                                   # 122 s: checked
            await until(w, lambda: producer.checks)
            header = h.CheckTransactionStateRequestHeader.decode(producer.checks[0][1].ext_fields)
            assert header.tran_state_table_offset == 2

    run_mock(main, clock)


def test_commit_applies_delay_level(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            sent = await send_half(w, "UNIQ-D", b"later", DELAY="2")     # level 2 = 5 s
            assert await w.max_offset("SCHEDULE_TOPIC_XXXX", 1) == 0       # the half is not delayed
            await end_ok(w, sent, COMMIT, "UNIQ-D")
            assert await records(w) == [] and await w.max_offset("SCHEDULE_TOPIC_XXXX", 1) == 1
            clock.jump(5.1)
            await until(w, lambda: True)
            for _ in range(100):
                got = await records(w)
                if got:
                    break
                await trio.testing.wait_all_tasks_blocked()
            [msg] = got
            assert msg.body == b"later" and sysflag.transaction_value(msg.sys_flag) == COMMIT

    run_mock(main, clock)


def test_restart_loses_nothing_and_delivers_nothing_twice(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        sent: dict[str, h.SendMessageResponseHeader] = {}
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await w.create_topic(TOPIC, 2)
            for uniq in ("A", "B", "C", "D", "E"):
                sent[uniq] = await send_half(w, uniq, uniq.encode())
            await end_ok(w, sent["A"], COMMIT, "A")
            await end_ok(w, sent["B"], ROLLBACK, "B")
            await end_ok(w, sent["D"], COMMIT, "D")       # resolved behind the pending C
            assert sorted(m.body for m in await records(w)) == [b"A", b"D"]
            # the progress stops at C (offset 2); D's op waits behind it
            assert (await sys_offset(w, HALF), await sys_offset(w, OP)) == (2, 2)

        table = fastjson.loads((tmp_path / "broker-a" / "config" / "consumerOffset.json").read_bytes())["offsetTable"]
        assert table[f"{HALF}@{SYS_GROUP}"] == {0: 2} and table[f"{OP}@{SYS_GROUP}"] == {0: 2}

        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            assert sorted(m.body for m in await records(w)) == [b"A", b"D"]
            for uniq, kind in (("A", COMMIT), ("B", COMMIT), ("D", COMMIT), ("D", ROLLBACK)):
                await end_ok(w, sent[uniq], kind, uniq)
            assert sorted(m.body for m in await records(w)) == [b"A", b"D"]
            await end_ok(w, sent["E"], COMMIT, "E")         # a producer finishing across the restart
            producer = Producer(w)
            await producer.register()
            await jump(clock, w)
            await until(w, lambda: producer.checks)
            await settle(w)
            [(_, check)] = producer.checks                  # only C is unresolved
            header = h.CheckTransactionStateRequestHeader.decode(check.ext_fields)
            assert header.msg_id == "C"
            await end(w, header.tran_state_table_offset, header.commit_log_offset, COMMIT, "C", from_check=True)
            assert sorted(m.body for m in await records(w)) == [b"A", b"C", b"D", b"E"]

        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            producer = Producer(w)
            await producer.register()
            for uniq in "ABCDE":
                await end_ok(w, sent[uniq], COMMIT, uniq)
            await jump(clock, w)
            await jump(clock, w)
            assert producer.checks == []
            assert sorted(m.body for m in await records(w)) == [b"A", b"C", b"D", b"E"]
            assert await sys_offset(w, HALF) == await w.max_offset(HALF) == 6

    run_mock(main, clock, 60)


def test_commit_parks_a_timer_message_until_its_time(tmp_path) -> None:
    """TIMER_* properties of a transactional message are applied at commit (RocketMQ 5.x): the committed message
    is parked in rmq_sys_wheel_timer, a relative delay counts from the commit, and it reaches its queue then."""
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)
    timer_topic = "rmq_sys_wheel_timer"

    async def main() -> None:
        async with wire(tmp_path, clock=bc) as w:
            await w.create_topic(TOPIC, 2)
            sent = await send_half(w, "UNIQ-T", b"in a minute", TIMER_DELAY_SEC="60")
            assert await w.max_offset(timer_topic) == 0                     # the half is not a timer
            clock.jump(30)                                                  # the producer's transaction takes 30 s
            committed_at = bc.now_ms()
            await end_ok(w, sent, COMMIT, "UNIQ-T")
            assert await records(w) == []
            [parked] = await records(w, timer_topic, 0)
            assert sysflag.transaction_value(parked.sys_flag) == COMMIT
            assert (parked.properties["REAL_TOPIC"], parked.properties["REAL_QID"]) == (TOPIC, "1")
            assert int(parked.properties["TIMER_OUT_MS"]) == committed_at + 60_000      # counted from the commit
            # a second END_TRANSACTION stores nothing more
            await end_ok(w, sent, COMMIT, "UNIQ-T")
            assert await w.max_offset(timer_topic) == 1

            clock.jump(59)
            await settle(w)
            assert await records(w) == []                                   # not at commit, not early
            clock.jump(2)
            got: list = []
            for _ in range(100):
                await settle(w)
                got = await records(w)
                if got:
                    break
            [msg] = got
            assert msg.body == b"in a minute" and sysflag.transaction_value(msg.sys_flag) == COMMIT
            assert msg.store_timestamp >= committed_at + 60_000
            assert msg.properties["UNIQ_KEY"] == "UNIQ-T"

            # a timer further out than timerMaxDelaySec is refused at commit, and the half stays unresolved
            sent = await send_half(w, "UNIQ-FAR", b"far", TIMER_DELAY_SEC=str(10 * 24 * 3600))
            resp = await end(w, sent.queue_offset, phy_of(sent.msg_id), COMMIT, "UNIQ-FAR")
            assert resp.code == ResponseCode.MESSAGE_ILLEGAL and "timer message illegal" in resp.remark
            assert await w.max_offset(timer_topic) == 1
            await end_ok(w, sent, ROLLBACK, "UNIQ-FAR")

            # a DELAY level wins over TIMER_*, as on a send
            sent = await send_half(w, "UNIQ-DT", b"level", DELAY="1", TIMER_DELAY_SEC="3600")
            await end_ok(w, sent, COMMIT, "UNIQ-DT")
            assert await w.max_offset(timer_topic) == 1
            [delayed] = await records(w, "SCHEDULE_TOPIC_XXXX", 0)
            assert "TIMER_DELAY_SEC" not in delayed.properties and delayed.properties["DELAY"] == "1"

    run_mock(main, clock, 60)


def test_batch_with_a_transaction_is_refused(tmp_path) -> None:
    """RocketMQ's CommitLog refuses a batch with transaction sysflag bits (MESSAGE_ILLEGAL); so does rmq, and also a
    batch whose properties carry TRAN_MSG=true. Nothing is stored."""
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic(TOPIC, 2)
            body = encode_batch_body([b"a", b"b"], [props(UNIQ_KEY="b1"), props(UNIQ_KEY="b2")])
            cases = [(sysflag.TRANSACTION_PREPARED_TYPE, None), (sysflag.TRANSACTION_COMMIT_TYPE, None),
                     (sysflag.TRANSACTION_ROLLBACK_TYPE, None), (0, props(TRAN_MSG="true", PGROUP=PRODUCER_GROUP)),
                     (0, props(TRAN_MSG="TRUE"))]
            for sys_flag, batch_props in cases:
                resp = await w.send(TOPIC, body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=1, batch=True,
                                    sys_flag=sys_flag, properties=batch_props)
                assert resp.code == ResponseCode.MESSAGE_ILLEGAL, (sys_flag, batch_props, resp.code, resp.remark)
                assert "transaction" in resp.remark
            assert await w.max_offset(TOPIC, 1) == 0 and await w.max_offset(HALF) == 0
            # TRAN_MSG=false is no transaction; an item's own TRAN_MSG is ignored, as RocketMQ ignores it
            body = encode_batch_body([b"a", b"b"], [props(TRAN_MSG="true"), None])
            await w.send_ok(TOPIC, body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=1, batch=True,
                            properties=props(TRAN_MSG="false"))
            assert [m.body for m in await records(w)] == [b"a", b"b"]

    run(main)
