"""LitePullConsumer against an embedded cluster: assign + poll, the batch fast path, seek / seek_to_begin /
seek_to_end / seek_by_timestamp, commit and committed offsets, subscribe with rebalancing, pause/resume."""
from __future__ import annotations

import collections
import time

import numpy as np
import pytest
import trio
from client_support import Raw, run
from consumer_support import FAST, committed, max_offset, send_many, wait_until

from rmq_client import ClientError, LitePullConsumer, MessageQueue, Producer, make_message
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster


def mqs(topic: str, n: int) -> list[MessageQueue]:
    return [MessageQueue(topic, "broker-a", i) for i in range(n)]


async def poll_until(consumer: LitePullConsumer, count: int, timeout_s: float = 20.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count:
        assert time.monotonic() < deadline, f"polled {len(out)} of {count}"
        out.extend(await consumer.poll(200))
    return out


def test_assign_poll_commit_and_committed(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("LiteT", 4)
            await raw.wait_route("LiteT")
            ids = await send_many(cluster.namesrv_addr, "LiteT", 80, tags=lambda i: "even" if i % 2 == 0 else "odd")
            consumer = LitePullConsumer("CG_lite", cluster.namesrv_addr, pull_batch_size=16, auto_commit=False,
                                        **FAST)
            consumer.assign(mqs("LiteT", 4))
            async with consumer:
                got = await poll_until(consumer, 80)
                assert sorted(m.msg_id for m in got) == sorted(ids)
                assert consumer.assignment() == set(mqs("LiteT", 4))
                assert all(m.properties["MAX_OFFSET"] == "20" for m in got)
                assert await consumer.poll(100) == []              # nothing more: an empty list after the timeout
                # not committed yet (auto commit off)
                assert await committed(raw, "CG_lite", "LiteT", 0) in (-1, 0)
                await consumer.commit_sync()
                for q in range(4):
                    assert await committed(raw, "CG_lite", "LiteT", q) == 20
                    assert await consumer.committed(MessageQueue("LiteT", "broker-a", q)) == 20
                data = consumer.consumer_data()
                assert data["consumeType"] == "CONSUME_ACTIVELY" and data["subscriptionDataSet"] == []
            # a new consumer of the group resumes from the committed offsets
            more = await send_many(cluster.namesrv_addr, "LiteT", 8, prefix="more",
                                   tags=lambda i: "even" if i % 2 == 0 else "odd")
            again = LitePullConsumer("CG_lite", cluster.namesrv_addr, **FAST)
            again.assign(mqs("LiteT", 4))
            again.set_sub_expression_for_assign("LiteT", "even")
            async with again:
                got = await poll_until(again, 4)
                assert {m.msg_id for m in got} == {more[i] for i in range(0, 8, 2)}
                assert {m.tags for m in got} == {"even"}
    run(main, 60)


def test_poll_batch_is_columnar_and_seek_variants_rewind(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("SeekT", 1)
            await raw.wait_route("SeekT")
            mq = MessageQueue("SeekT", "broker-a", 0)
            async with Producer("PG_seek", cluster.namesrv_addr) as producer:
                first = [await producer.send(make_message("SeekT", f"a{i}".encode()), queue=mq) for i in range(30)]
                consumer = LitePullConsumer("CG_seek", cluster.namesrv_addr, pull_batch_size=64, **FAST)
                consumer.assign([mq])
                async with consumer:
                    batch = await consumer.poll_batch(5000)
                    assert batch is not None and batch.message_queue == mq
                    assert batch.bodies == [f"a{i}".encode() for i in range(30)]
                    assert isinstance(batch.queue_offsets, np.ndarray)
                    assert batch.queue_offsets.tolist() == list(range(30)) and batch.next_offset == 30
                    assert (batch.min_offset, batch.max_offset) == (0, 30)
                    stamps = batch.store_timestamps.tolist()
                    # seek back into the middle
                    await consumer.seek(mq, 10)
                    again = await poll_until(consumer, 20)
                    assert [m.queue_offset for m in again] == list(range(10, 30))
                    # seek_to_begin / seek_to_end
                    await consumer.seek_to_begin(mq)
                    assert [m.queue_offset for m in await poll_until(consumer, 30)] == list(range(30))
                    await consumer.seek_to_end(mq)
                    # a second round of messages, stored strictly later than the first
                    while time.time() * 1000 <= max(stamps):
                        await trio.sleep(0.001)
                    second = [await producer.send(make_message("SeekT", f"b{i}".encode()), queue=mq)
                              for i in range(10)]
                    got = await poll_until(consumer, 10)
                    assert [m.body for m in got] == [f"b{i}".encode() for i in range(10)]
                    # seek by timestamp: the first message stored at the second round's first store time
                    t_second = got[0].store_timestamp
                    offset = await consumer.seek_by_timestamp(mq, t_second)
                    assert offset == 30
                    got = await poll_until(consumer, 10)
                    assert [m.queue_offset for m in got] == list(range(30, 40))
                    assert await consumer.offset_for_timestamp(mq, stamps[0]) == 0
                    with pytest.raises(ClientError, match="Seek offset illegal"):
                        await consumer.seek(mq, 41)
                    with pytest.raises(ClientError, match="not in assigned list"):
                        await consumer.seek(MessageQueue("SeekT", "broker-a", 5), 0)
                    assert first[0].queue_offset == 0 and second[0].queue_offset == 30
    run(main, 60)


def test_seek_discards_a_held_long_poll(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("HeldT", 1)
            await raw.wait_route("HeldT")
            mq = MessageQueue("HeldT", "broker-a", 0)
            await send_many(cluster.namesrv_addr, "HeldT", 5)
            consumer = LitePullConsumer("CG_held", cluster.namesrv_addr, **FAST)
            consumer.assign([mq])
            async with consumer:
                assert len(await poll_until(consumer, 5)) == 5
                # the queue's pull is now held by the broker (20 s); a seek must not wait for it
                await trio.sleep(0.1)
                started = trio.current_time()
                await consumer.seek(mq, 2)
                got = await poll_until(consumer, 3)
                assert [m.queue_offset for m in got] == [2, 3, 4]
                assert trio.current_time() - started < 5
    run(main, 60)


def test_subscribe_rebalances_between_lite_consumers(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("LiteSubT", 4)
            await raw.wait_route("LiteSubT")
            ns = cluster.namesrv_addr
            one = LitePullConsumer("CG_litesub", ns, instance_name="one", **FAST)
            two = LitePullConsumer("CG_litesub", ns, instance_name="two", **FAST)
            one.subscribe("LiteSubT")
            two.subscribe("LiteSubT")
            with pytest.raises(ClientError, match="mutually exclusive"):
                one.assign(mqs("LiteSubT", 1))
            async with one, two:
                await wait_until(lambda: len(one.assignment()) == 2 and len(two.assignment()) == 2
                                 and not one.assignment() & two.assignment(), "two lite consumers sharing the queues")
                ids = await send_many(ns, "LiteSubT", 40)
                got: dict[str, list] = {"one": [], "two": []}

                async def drain(name, consumer):
                    while len(got["one"]) + len(got["two"]) < 40:
                        got[name].extend(await consumer.poll(100))

                with trio.fail_after(20):
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(drain, "one", one)
                        nursery.start_soon(drain, "two", two)
                counts = collections.Counter(m.msg_id for v in got.values() for m in v)
                assert set(counts) == set(ids) and set(counts.values()) == {1}
                assert {m.queue_id for m in got["one"]} == {mq.queue_id for mq in one.assignment()}
                data = one.consumer_data()
                assert [s["topic"] for s in data["subscriptionDataSet"]] == ["LiteSubT"]
            # auto commit: shutdown committed what was polled
            for q in range(4):
                assert await committed(raw, "CG_litesub", "LiteSubT", q) == await max_offset(raw, "LiteSubT", q)
    run(main, 60)


def test_pause_and_resume_a_queue(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("PauseLiteT", 2)
            await raw.wait_route("PauseLiteT")
            q0, q1 = mqs("PauseLiteT", 2)
            consumer = LitePullConsumer("CG_pauselite", cluster.namesrv_addr, pull_time_delay_ms_when_pause=50, **FAST)
            consumer.assign([q0, q1])
            async with consumer, Producer("PG_pauselite", cluster.namesrv_addr) as producer:
                consumer.pause([q1])                       # also abandons q1's pull held by the broker
                for i in range(10):
                    await producer.send(make_message("PauseLiteT", b"x"), queue=q0)
                    await producer.send(make_message("PauseLiteT", b"y"), queue=q1)
                got = await poll_until(consumer, 10)
                got += await consumer.poll(300)
                assert collections.Counter(m.queue_id for m in got) == {0: 10}
                consumer.resume([q1])
                got = await poll_until(consumer, 10)
                assert collections.Counter(m.queue_id for m in got) == {1: 10}
    run(main, 60)
