"""Deduplication of producer retries over the wire (rmq's extension, docs/features.md "Deduplication").

A topic with a window (``rmqDedupWindowMs`` on UPDATE_AND_CREATE_TOPIC, or the broker's
``rmqDedupWindowMsDefault``) answers a send whose UNIQ_KEY it stored less than a window ago with the original's
msgId/queueId/queueOffset and stores nothing. Brokers run on ``BrokerClock(MockClock())`` (rate 0, jumped by hand,
see test_broker_wire_delay.py); a restart reuses the same BrokerClock, so broker time goes on across it.
"""
from __future__ import annotations

import trio
import trio.testing
from broker_wire_support import PRODUCER_GROUP, Wire, props, run, run_mock, wire

from rmq_broker.clock import BrokerClock
from rmq_common._record import decode_records, encode_batch_body
from rmq_common.msgid import decode_offset_msg_id
from rmq_remoting import RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

TOPIC = "DedupT"
WINDOW_MS = 60_000


async def create_topic(w: Wire, topic: str = TOPIC, window: str | None = str(WINDOW_MS), queues: int = 4):
    ext = h.CreateTopicRequestHeader(topic=topic, default_topic="TBW102", read_queue_nums=queues,
                                     write_queue_nums=queues, perm=6, topic_filter_type="SINGLE_TAG",
                                     topic_sys_flag=0, order=False).to_ext()
    if window is not None:
        ext["rmqDedupWindowMs"] = window
    return await w.call(RequestCode.UPDATE_AND_CREATE_TOPIC, ext)


async def topic_entry(w: Wire, topic: str = TOPIC) -> dict:
    resp = await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)
    assert resp.code == ResponseCode.SUCCESS
    return fastjson.loads(resp.body)["topicConfigTable"][topic]


async def stored(w: Wire, topic: str = TOPIC, queues: int = 4) -> list[bytes]:
    """Every body in the topic's queues, queue by queue."""
    out = []
    for q in range(queues):
        resp = await w.pull(topic, q, 0)
        if resp.code == ResponseCode.SUCCESS:
            out += [m.body for m in decode_records(bytes(resp.body))]
    return out


def reply_of(sent: h.SendMessageResponseHeader) -> tuple[str, int, int]:
    return sent.msg_id, sent.queue_id, sent.queue_offset


def offsets_of(sent: h.SendMessageResponseHeader) -> tuple[list[int], int, int]:
    """The reply without the broker's address (a restarted test broker listens on another port)."""
    return [decode_offset_msg_id(i)[2] for i in sent.msg_id.split(",")], sent.queue_id, sent.queue_offset


def test_a_retry_within_the_window_is_answered_with_the_original_and_not_stored(tmp_path) -> None:
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)

    async def main() -> None:
        async with wire(tmp_path, clock=bc) as w:
            resp = await create_topic(w)
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            first = await w.send_ok(TOPIC, b"order-1", queue_id=0, properties=props(UNIQ_KEY="U1", KEYS="o1"))
            # the producer's retry: same UNIQ_KEY, another queue (Java retries pick the next queue), other code
            for code, queue_id in ((RequestCode.SEND_MESSAGE_V2, 2), (RequestCode.SEND_MESSAGE, 0),
                                   (RequestCode.SEND_MESSAGE_V2, -1)):
                again = await w.send_ok(TOPIC, b"order-1", code=code, queue_id=queue_id,
                                        properties=props(UNIQ_KEY="U1", KEYS="o1"))
                assert reply_of(again) == reply_of(first)
            # a different key is another message, with or without a window
            second = await w.send_ok(TOPIC, b"order-2", queue_id=2, properties=props(UNIQ_KEY="U2"))
            assert (second.queue_id, second.queue_offset) == (2, 0)
            # no UNIQ_KEY: nothing to compare, stored every time
            await w.send_ok(TOPIC, b"anonymous", queue_id=1)
            await w.send_ok(TOPIC, b"anonymous", queue_id=1)
            assert sorted(await stored(w)) == [b"anonymous", b"anonymous", b"order-1", b"order-2"]
            # the window runs from the original's store time, not from the retries
            clock.jump(WINDOW_MS / 1000 - 1)
            again = await w.send_ok(TOPIC, b"order-1", queue_id=3, properties=props(UNIQ_KEY="U1"))
            assert reply_of(again) == reply_of(first)
            clock.jump(1)
            later = await w.send_ok(TOPIC, b"order-1", queue_id=3, properties=props(UNIQ_KEY="U1"))
            assert (later.queue_id, later.queue_offset) == (3, 0) and later.msg_id != first.msg_id
            # which is now the original for the next window
            again = await w.send_ok(TOPIC, b"order-1", queue_id=0, properties=props(UNIQ_KEY="U1"))
            assert reply_of(again) == reply_of(later)
            assert sorted(await stored(w)).count(b"order-1") == 2

    run_mock(main, clock)


def test_topic_without_a_window_stores_both_as_rocketmq(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            assert (await create_topic(w, "PlainT", window=None)).code == ResponseCode.SUCCESS
            a = await w.send_ok("PlainT", b"m", queue_id=0, properties=props(UNIQ_KEY="U1"))
            b = await w.send_ok("PlainT", b"m", queue_id=0, properties=props(UNIQ_KEY="U1"))
            assert (a.queue_offset, b.queue_offset) == (0, 1) and a.msg_id != b.msg_id
            assert await stored(w, "PlainT") == [b"m", b"m"]
            assert "rmqDedupWindowMs" not in await topic_entry(w, "PlainT")

    run(main)


def test_batch_with_one_duplicate_item(tmp_path) -> None:
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with wire(tmp_path, clock=BrokerClock(clock)) as w:
            await create_topic(w)
            single = await w.send_ok(TOPIC, b"b1", queue_id=0, properties=props(UNIQ_KEY="B1"))
            body = encode_batch_body([b"b0", b"b1", b"b2"], [props(UNIQ_KEY="B0"), props(UNIQ_KEY="B1"),
                                                             props(UNIQ_KEY="B2")])
            batch = await w.send_ok(TOPIC, body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=1, batch=True)
            ids = batch.msg_id.split(",")
            assert len(ids) == 3 and ids[1] == single.msg_id          # the duplicate's original id, in its place
            assert (batch.queue_id, batch.queue_offset) == (1, 0)     # where the new items went
            records = await w.pull_records(TOPIC, 1, 0)
            assert [r.body for r in records] == [b"b0", b"b2"]
            assert [r.commit_log_offset for r in records] == [decode_offset_msg_id(ids[i])[2] for i in (0, 2)]
            # the whole batch again (a retry of the batch): nothing stored, the same reply
            again = await w.send_ok(TOPIC, body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=2, batch=True)
            assert again.msg_id == batch.msg_id
            assert (again.queue_id, again.queue_offset) == (1, 0)    # those of the first item's original
            # single sends of batch items are duplicates too; a key twice in one batch is stored once
            assert reply_of(await w.send_ok(TOPIC, b"b2", queue_id=3, properties=props(UNIQ_KEY="B2"))) == \
                (ids[2], 1, 1)
            body = encode_batch_body([b"b3", b"b3", b"b4"], [props(UNIQ_KEY="B3"), props(UNIQ_KEY="B3"), None])
            twice = await w.send_ok(TOPIC, body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=1, batch=True)
            ids = twice.msg_id.split(",")
            assert ids[0] == ids[1] != ids[2] and twice.queue_offset == 2
            assert [r.body for r in await w.pull_records(TOPIC, 1, 0)] == [b"b0", b"b2", b"b3", b"b4"]
            assert sorted(await stored(w)) == [b"b0", b"b1", b"b2", b"b3", b"b4"]

    run_mock(main, clock)


def test_restart_within_the_window_still_deduplicates(tmp_path) -> None:
    """The map is read back from the store at start: the dedup topic's queues from now − window, and the parking
    queues for a delayed message and a transaction half (their replies name the real queue)."""
    clock = trio.testing.MockClock()
    bc = BrokerClock(clock)
    sends = {
        "plain": dict(body=b"plain", queue_id=1, properties=props(UNIQ_KEY="R1")),
        "delayed": dict(body=b"delayed", queue_id=2, properties=props(UNIQ_KEY="R2", DELAY="18")),
        "half": dict(body=b"half", queue_id=3, sys_flag=4,
                     properties=props(UNIQ_KEY="R3", TRAN_MSG="true", PGROUP=PRODUCER_GROUP)),
        "old": dict(body=b"old", queue_id=0, properties=props(UNIQ_KEY="R0")),
        "soon": dict(body=b"soon", queue_id=2, properties=props(UNIQ_KEY="R4", DELAY="1")),
    }

    async def send(w: Wire, name: str, queue_id: int | None = None) -> h.SendMessageResponseHeader:
        kw = dict(sends[name])
        body = kw.pop("body")
        if queue_id is not None:
            kw["queue_id"] = queue_id
        return await w.send_ok(TOPIC, body, **kw)

    async def main() -> None:
        replies = {}
        async with wire(tmp_path, clock=bc) as w:
            await create_topic(w)
            replies["old"] = await send(w, "old")
            clock.jump(30)
            for name in ("plain", "delayed", "half", "soon"):
                replies[name] = await send(w, name)
            for name in ("plain", "delayed", "half", "soon"):
                assert reply_of(await send(w, name, queue_id=0)) == reply_of(replies[name])
            assert (replies["delayed"].queue_id, replies["delayed"].queue_offset) == (2, 0)
            # copies the broker makes are no originals: the delivered delay copy, the committed transaction
            half = replies["half"]
            resp = await w.call(RequestCode.END_TRANSACTION, h.EndTransactionRequestHeader(
                producer_group=PRODUCER_GROUP, tran_state_table_offset=half.queue_offset,
                commit_log_offset=decode_offset_msg_id(half.msg_id)[2], commit_or_rollback=8,
                from_transaction_check=False, msg_id="R3", transaction_id="R3"))
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            clock.jump(1.5)
            for _ in range(100):
                await trio.testing.wait_all_tasks_blocked()
                if await w.max_offset(TOPIC, 2):
                    break
            assert sorted(await stored(w)) == [b"half", b"old", b"plain", b"soon"]

        clock.jump(20)                               # 50 s after "old", 20 s after the others
        async with wire(tmp_path, clock=bc) as w:
            assert (await topic_entry(w))["rmqDedupWindowMs"] == WINDOW_MS      # kept in topics.json
            for name in ("old", "plain", "delayed", "half", "soon"):
                assert offsets_of(await send(w, name, queue_id=0)) == offsets_of(replies[name]), name
            assert sorted(await stored(w)) == [b"half", b"old", b"plain", b"soon"]
            assert await w.max_offset("SCHEDULE_TOPIC_XXXX", 17) == 1
            assert await w.max_offset("RMQ_SYS_TRANS_HALF_TOPIC") == 1
            clock.jump(15)                           # "old" is 65 s old now: out of the window
            again = await send(w, "old")
            assert offsets_of(again) != offsets_of(replies["old"]) and again.queue_offset == 1
            assert offsets_of(await send(w, "plain", queue_id=0)) == offsets_of(replies["plain"])

    run_mock(main, clock, 60)


def test_window_settings(tmp_path) -> None:
    """rmqDedupWindowMs on UPDATE_AND_CREATE_TOPIC (kept when an update does not name it; -1 = off), the broker's
    rmqDedupWindowMsDefault for topics without one, never for retry topics; rmqDedupMaxEntries bounds the map."""
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"rmqDedupWindowMsDefault": 60_000,
                                                     "rmqDedupMaxEntries": 3}) as w:
            # an auto-created topic gets the broker's default window
            a = await w.send_ok("AutoT", b"x", queue_id=0, properties=props(UNIQ_KEY="A"))
            assert reply_of(await w.send_ok("AutoT", b"x", queue_id=1, properties=props(UNIQ_KEY="A"))) == reply_of(a)
            assert "rmqDedupWindowMs" not in await topic_entry(w, "AutoT")
            # -1 turns it off for one topic; an update without the key keeps the setting
            assert (await create_topic(w, "OffT", window="-1")).code == ResponseCode.SUCCESS
            assert (await topic_entry(w, "OffT"))["rmqDedupWindowMs"] == -1
            assert (await create_topic(w, "OffT", window=None, queues=2)).code == ResponseCode.SUCCESS
            entry = await topic_entry(w, "OffT")
            assert (entry["rmqDedupWindowMs"], entry["writeQueueNums"]) == (-1, 2)
            for _ in range(2):
                await w.send_ok("OffT", b"y", queue_id=0, properties=props(UNIQ_KEY="O"))
            assert await stored(w, "OffT", 2) == [b"y", b"y"]
            # bad values are refused and change nothing
            for bad in ("abc", "-2", str(8 * 24 * 3600 * 1000)):
                resp = await create_topic(w, "OffT", window=bad)
                assert resp.code == ResponseCode.SYSTEM_ERROR and "rmqDedupWindowMs" in resp.remark, bad
            assert (await topic_entry(w, "OffT"))["rmqDedupWindowMs"] == -1
            # retry topics never deduplicate: a consumer's retries of one message share its UNIQ_KEY
            for _ in range(2):
                await w.send_ok("%RETRY%G1", b"r", queue_id=0, properties=props(UNIQ_KEY="A"))
            assert await stored(w, "%RETRY%G1", 1) == [b"r", b"r"]
            # at most 3 entries: the oldest key is forgotten (best effort beyond rmqDedupMaxEntries)
            for key in ("B", "C", "D"):
                await w.send_ok("AutoT", key.encode(), queue_id=0, properties=props(UNIQ_KEY=key))
            again = await w.send_ok("AutoT", b"x", queue_id=0, properties=props(UNIQ_KEY="A"))
            assert again.msg_id != a.msg_id
            d = await w.send_ok("AutoT", b"D", queue_id=0, properties=props(UNIQ_KEY="D"))
            assert d.queue_offset == 3                                   # D is still remembered
            # a deleted topic is forgotten: created again, it starts afresh
            resp = await w.call(RequestCode.DELETE_TOPIC_IN_BROKER, h.DeleteTopicRequestHeader(topic="AutoT"))
            assert resp.code == ResponseCode.SUCCESS
            fresh = await w.send_ok("AutoT", b"D", queue_id=0, properties=props(UNIQ_KEY="D"))
            assert fresh.msg_id != d.msg_id and fresh.queue_offset == 0
        topics = fastjson.loads((tmp_path / "broker-a" / "config" / "topics.json").read_bytes())
        assert topics["topicConfigTable"]["OffT"]["rmqDedupWindowMs"] == -1

    run(main)


def test_sync_flush_broker_answers_duplicates_too(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"flushDiskType": "SYNC_FLUSH",
                                                     "rmqDedupWindowMsDefault": WINDOW_MS}) as w:
            first = await w.send_ok("SyncT", b"s", queue_id=0, properties=props(UNIQ_KEY="S", WAIT="true"))
            again = await w.send_ok("SyncT", b"s", queue_id=1, properties=props(UNIQ_KEY="S", WAIT="true"))
            assert reply_of(again) == reply_of(first)
            assert await stored(w, "SyncT") == [b"s"]

    run(main)
