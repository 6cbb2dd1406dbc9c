"""Retry and DLQ over the wire: CONSUMER_SEND_MSG_BACK (36) and sends to %RETRY% topics (PROTOCOL.md §9.4).

A consumer that fails a message sends it back by its commitlog offset; the broker stores a copy in
``%RETRY%<group>`` after delay level 3 + reconsumeTimes (parked in SCHEDULE_TOPIC_XXXX like any delayed
send), and in ``%DLQ%<group>`` once reconsumeTimes reaches the group's maximum. The delivery tests run the
broker on a MockClock (rate 0, jumped by hand between requests, as test_broker_wire_delay.py explains), so
the 16 retries of the default 18 levels — hours of broker time — take a fraction of a second.
"""
from __future__ import annotations

import time

import orjson
import trio
import trio.testing
from broker_wire_support import GROUP, props, run, run_mock, wire

from rmq_broker.clock import BrokerClock
from rmq_common._record import decode_records
from rmq_common.msgid import create_offset_msg_id
from rmq_common.topic import DEFAULT_DELAY_LEVELS, parse_delay_levels
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

RETRY = f"%RETRY%{GROUP}"
DLQ = f"%DLQ%{GROUP}"
LEVELS_MS = parse_delay_levels(DEFAULT_DELAY_LEVELS)


async def send_back(w, offset: int, *, group: str = GROUP, delay_level: int = 0,
                    max_reconsume_times: int | None = None, version: int | None = None) -> RemotingCommand:
    header = h.ConsumerSendMsgBackRequestHeader(offset=offset, group=group, delay_level=delay_level,
                                                origin_msg_id=None, origin_topic=None, unit_mode=False,
                                                max_reconsume_times=max_reconsume_times)
    ext = {k: v for k, v in header.to_ext().items() if v is not None}
    cmd = RemotingCommand.request(RequestCode.CONSUMER_SEND_MSG_BACK, ext)
    if version is not None:
        cmd.version = version
    return await w.client.invoke(w.addr, cmd, 5000)


async def send_back_ok(w, offset: int, **kw) -> None:
    resp = await send_back(w, offset, **kw)
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    assert not resp.body and resp.remark is None


async def topic_table(w) -> dict:
    resp = await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)
    assert resp.code == ResponseCode.SUCCESS
    return fastjson.loads(resp.body)["topicConfigTable"]


async def create_group(w, group: str, **fields) -> None:
    body = orjson.dumps({"groupName": group, **fields})
    resp = await w.call(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, body)
    assert resp.code == ResponseCode.SUCCESS, resp.remark


async def pull_when_due(w, clock, topic: str, queue_id: int, offset: int):
    """Pull ``topic`` at ``offset`` until the schedule service has delivered the message there."""
    for _ in range(100):
        await trio.testing.wait_all_tasks_blocked()
        resp = await w.pull(topic, queue_id, offset)
        if resp.code == ResponseCode.SUCCESS:
            return decode_records(bytes(resp.body))[0]
    raise AssertionError(f"nothing delivered to {topic}:{queue_id} at offset {offset} (last {resp.code})")


async def send_original(w, topic: str = "RetryT"):
    """One message in ``topic`` queue 0, as pulled by the consumer that will fail it."""
    await w.create_topic(topic, 2)
    sent = await w.send_ok(topic, b"payload", queue_id=0, flag=3,
                           properties=props(TAGS="TagR", KEYS="rk", UNIQ_KEY="UNIQ1"), born_timestamp=1_700_000_000_000)
    [original] = await w.pull_records(topic, 0, sent.queue_offset)
    return sent, original


def test_send_back_goes_to_retry_topic_via_schedule_topic(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            sent, original = await send_original(w)
            await send_back_ok(w, original.commit_log_offset)

            # parked at level 3 (queue 2) of SCHEDULE_TOPIC_XXXX, to be delivered to %RETRY%<group>
            [parked] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 2, 0)
            assert parked.properties["REAL_TOPIC"] == RETRY and parked.properties["REAL_QID"] == "0"
            assert parked.properties["DELAY"] == "3" and parked.properties["WAIT"] == "false"
            assert parked.properties["RETRY_TOPIC"] == "RetryT"
            assert parked.properties["ORIGIN_MESSAGE_ID"] == sent.msg_id      # the original's offset msgId
            assert parked.reconsume_times == 1
            table = await topic_table(w)
            assert (table[RETRY]["readQueueNums"], table[RETRY]["writeQueueNums"], table[RETRY]["perm"]) == (1, 1, 6)
            assert (await w.pull(RETRY, 0, 0)).code == ResponseCode.PULL_NOT_FOUND

            clock.jump(LEVELS_MS[2] / 1000 - 0.5)
            await trio.testing.wait_all_tasks_blocked()
            assert (await w.pull(RETRY, 0, 0)).code == ResponseCode.PULL_NOT_FOUND
            clock.jump(0.6)
            retry = await pull_when_due(w, clock, RETRY, 0, 0)
            assert (retry.topic, retry.queue_id, retry.body) == (RETRY, 0, b"payload")
            assert retry.reconsume_times == 1
            assert retry.properties["RETRY_TOPIC"] == "RetryT" and retry.properties["ORIGIN_MESSAGE_ID"] == sent.msg_id
            assert (retry.properties["TAGS"], retry.properties["KEYS"], retry.properties["UNIQ_KEY"]) == \
                ("TagR", "rk", "UNIQ1")
            assert "DELAY" not in retry.properties
            assert (retry.flag, retry.sys_flag) == (original.flag, original.sys_flag)
            assert (retry.born_timestamp, retry.born_host) == (original.born_timestamp, original.born_host)
            assert retry.store_timestamp - parked.store_timestamp >= LEVELS_MS[2]
            # the consumer's tag filter works on the retry copy
            assert len(await w.pull_records(RETRY, 0, 0, subscription="TagR")) == 1

            # sending the retry copy back keeps RETRY_TOPIC and ORIGIN_MESSAGE_ID and goes one level up
            await send_back_ok(w, retry.commit_log_offset)
            [parked2] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 3, 0)
            assert parked2.properties["RETRY_TOPIC"] == "RetryT" and parked2.properties["DELAY"] == "4"
            assert parked2.properties["ORIGIN_MESSAGE_ID"] == sent.msg_id and parked2.reconsume_times == 2

    run(main, timeout=60, clock=clock)


def test_sixteen_retries_then_dlq_on_mock_clock_in_well_under_a_second(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            sent, original = await send_original(w)
            started = time.perf_counter()
            current = original
            for attempt in range(16):                   # reconsumeTimes 0..15 → levels 3..18 (10 s .. 2 h)
                level = 3 + attempt
                await send_back_ok(w, current.commit_log_offset)
                [parked] = await w.pull_records("SCHEDULE_TOPIC_XXXX", level - 1, 0)
                assert parked.properties["DELAY"] == str(level) and parked.reconsume_times == attempt + 1
                clock.jump(LEVELS_MS[level - 1] / 1000 + 0.01)
                current = await pull_when_due(w, clock, RETRY, 0, attempt)
                assert current.reconsume_times == attempt + 1 and current.body == b"payload"
                assert current.properties["ORIGIN_MESSAGE_ID"] == sent.msg_id
                assert current.properties["RETRY_TOPIC"] == "RetryT"
            # the 17th send-back (reconsumeTimes 16 = maxReconsumeTimes) goes to the DLQ at once
            await send_back_ok(w, current.commit_log_offset)
            elapsed = time.perf_counter() - started
            [dead] = await w.pull_records(DLQ, 0, 0)
            assert (dead.topic, dead.queue_id, dead.body, dead.reconsume_times) == (DLQ, 0, b"payload", 17)
            assert dead.properties["ORIGIN_MESSAGE_ID"] == sent.msg_id and dead.properties["RETRY_TOPIC"] == "RetryT"
            assert dead.properties["DELAY"] == "0"
            assert (dead.born_timestamp, dead.flag) == (original.born_timestamp, original.flag)
            table = await topic_table(w)
            # 1 queue; perm READ|WRITE as RocketMQ ≥ 4.9.2 (4.9.0/4.9.1: WRITE only), so the DLQ can be pulled
            assert (table[DLQ]["readQueueNums"], table[DLQ]["writeQueueNums"], table[DLQ]["perm"]) == (1, 1, 6)
            assert await w.max_offset(RETRY, 0) == 16
            # Hours of broker time on the mock clock; about 0.4 s of real time here. The bound is loose so a
            # loaded CI box cannot make it flaky; what it rules out is waiting for the real delays.
            assert elapsed < 10.0, f"16 retries and the DLQ move took {elapsed:.2f} s of real time"

    run_mock(main, clock, real_timeout_s=30.0)


def test_max_reconsume_times_from_group_and_request(tmp_path) -> None:
    """Send-backs of the parked copies (their reconsumeTimes count, wherever they are stored)."""
    async def main() -> None:
        async with wire(tmp_path) as w:
            _, original = await send_original(w)
            await create_group(w, GROUP, retryMaxTimes=2)
            await send_back_ok(w, original.commit_log_offset)
            [p1] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 2, 0)
            await send_back_ok(w, p1.commit_log_offset)
            [p2] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 3, 0)
            assert p2.reconsume_times == 2
            # the request's maxReconsumeTimes wins over the group's retryMaxTimes (clients ≥ 3.4.9)
            await send_back_ok(w, p2.commit_log_offset, max_reconsume_times=5)
            [p3] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 4, 0)
            assert p3.reconsume_times == 3 and await w.max_offset(DLQ, 0) == 0
            # ... but not from an older client: retryMaxTimes 2 applies
            await send_back_ok(w, p2.commit_log_offset, max_reconsume_times=5, version=120)
            assert await w.max_offset(DLQ, 0) == 1
            # and without it, the group's 2: reconsumeTimes 2 → DLQ
            await send_back_ok(w, p2.commit_log_offset)
            dead = await w.pull_records(DLQ, 0, 0)
            assert [d.reconsume_times for d in dead] == [3, 3]
            # a lower request maximum sends a first failure to the DLQ at once
            await send_back_ok(w, original.commit_log_offset, max_reconsume_times=0)
            assert await w.max_offset(DLQ, 0) == 3

    run(main)


def test_delay_levels_of_the_request(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            _, original = await send_original(w)
            # -1: straight to the DLQ, whatever the reconsume count
            await send_back_ok(w, original.commit_log_offset, delay_level=-1)
            [dead] = await w.pull_records(DLQ, 0, 0)
            assert dead.reconsume_times == 1 and dead.body == b"payload"
            assert await w.max_offset("SCHEDULE_TOPIC_XXXX", 2) == 0
            # an explicit level is used as is; above the last level it is clamped to it (18)
            await send_back_ok(w, original.commit_log_offset, delay_level=5)
            [p5] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 4, 0)
            assert p5.properties["DELAY"] == "5" and p5.properties["REAL_TOPIC"] == RETRY
            await send_back_ok(w, original.commit_log_offset, delay_level=99)
            [p18] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 17, 0)
            assert p18.properties["DELAY"] == "18"

    run(main)


def test_refusals(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            _, original = await send_original(w)
            # no record at that offset (past the end, or inside a record)
            for offset in (123_456_789, original.commit_log_offset + 1):
                resp = await send_back(w, offset)
                assert resp.code == ResponseCode.SYSTEM_ERROR
                assert resp.remark == f"look message by offset failed, {offset}"
            # a group with retryQueueNums 0: SUCCESS, nothing stored, no retry topic
            await create_group(w, "NoRetry", retryQueueNums=0)
            await send_back_ok(w, original.commit_log_offset, group="NoRetry")
            assert "%RETRY%NoRetry" not in await topic_table(w)
            assert await w.max_offset("SCHEDULE_TOPIC_XXXX", 2) == 0
            # a read-only retry topic
            await w.create_topic("%RETRY%ReadOnly", 1, perm=4)
            resp = await send_back(w, original.commit_log_offset, group="ReadOnly")
            assert resp.code == ResponseCode.NO_PERMISSION
            assert resp.remark == "the topic[%RETRY%ReadOnly] sending message is forbidden"
            # an illegal group name
            resp = await send_back(w, original.commit_log_offset, group="bad group")
            assert resp.code == ResponseCode.SYSTEM_ERROR and "illegal character" in resp.remark

    run(main)


def test_unknown_group_without_auto_create(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"autoCreateSubscriptionGroup": "false"}) as w:
            await create_group(w, GROUP)                # the consumer that pulls the original
            _, original = await send_original(w)
            resp = await send_back(w, original.commit_log_offset, group="Nobody")
            assert resp.code == ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST == 26
            assert resp.remark.startswith("subscription group not exist, Nobody ")
            assert "%RETRY%Nobody" not in await topic_table(w)
            # the send path checks the group of a %RETRY% topic too
            resp = await w.send("%RETRY%Nobody", b"x", queue_id=0)
            assert resp.code == ResponseCode.SUBSCRIPTION_GROUP_NOT_EXIST
            # a CID_RMQ_SYS_ group is always created
            await send_back_ok(w, original.commit_log_offset, group="CID_RMQ_SYS_X")
            assert await w.max_offset("SCHEDULE_TOPIC_XXXX", 2) == 1

    run(main)


def test_send_to_retry_topic_at_the_limit_goes_to_dlq(tmp_path) -> None:
    """A consumer storing its own retry (its send-back failed) or an orderly consumer giving up: the header's
    reconsumeTimes against the group's (or the header's) maximum (Java handleRetryAndDLQ)."""
    async def main() -> None:
        async with wire(tmp_path) as w:
            async def send_retry(reconsume_times: int, max_times: int | None = None, queue_id: int = 0):
                header = w.send_header(RETRY, queue_id=queue_id,
                                       properties=props(RETRY_TOPIC="OrderT", ORIGIN_MESSAGE_ID="ID1",
                                                        DELAY=str(3 + reconsume_times), WAIT="true"))
                header.reconsume_times = reconsume_times
                header.max_reconsume_times = max_times
                resp = await w.call(RequestCode.SEND_MESSAGE_V2, header.to_v2().to_ext(), b"ordered")
                assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
                return h.SendMessageResponseHeader.decode(resp.ext_fields)

            # below the limit: a retry like any delayed send
            await send_retry(15)
            [parked] = await w.pull_records("SCHEDULE_TOPIC_XXXX", 17, 0)
            assert parked.properties["REAL_TOPIC"] == RETRY and parked.reconsume_times == 15
            # at the limit: %DLQ%<group> queue 0 at once, without DELAY; the reply names the queue asked for
            reply = await send_retry(16)
            assert reply.queue_id == 0 and reply.queue_offset == 0
            [dead] = await w.pull_records(DLQ, 0, 0)
            assert (dead.body, dead.reconsume_times) == (b"ordered", 16)
            assert "DELAY" not in dead.properties and dead.properties["RETRY_TOPIC"] == "OrderT"
            assert dead.properties["ORIGIN_MESSAGE_ID"] == "ID1"
            table = await topic_table(w)
            assert (table[DLQ]["writeQueueNums"], table[DLQ]["perm"]) == (1, 6)
            # the header's maxReconsumeTimes
            await send_retry(3, max_times=3)
            assert await w.max_offset(DLQ, 0) == 2
            await send_retry(3, max_times=4)
            assert await w.max_offset(DLQ, 0) == 2
            # the DLQ message's offset msgId is what the reply says
            assert reply.msg_id == create_offset_msg_id(*dead.store_host, dead.commit_log_offset)

    run(main)
