"""Rebalancing against an embedded cluster: members joining and leaving a clustering group in the middle of a
message stream (nothing lost, nothing consumed by two members), an allocation strategy end to end, and orderly
consumption keeping per-queue order while queues move between members."""
from __future__ import annotations

import collections

import trio
from client_support import Raw, run
from consumer_support import FAST, Collector, send_many, topic_queues, wait_committed, wait_until

from rmq_client import (AllocateMessageQueueAveragelyByCircle, ConsumeOrderlyStatus, MessageQueue, Producer,
                        PushConsumer, SelectMessageQueueByHash, make_message)
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster


def settled(members: list[PushConsumer], topic: str, queues: int) -> bool:
    """Every queue held by exactly one member, and each member agrees with the others' view of the group."""
    held = [mq for m in members for mq in topic_queues(m, topic)]
    return len(held) == queues and len(set(held)) == queues and all(topic_queues(m, topic) for m in members)


def member(namesrv: str, group: str, topic: str, seen: Collector, name: str, **options) -> PushConsumer:
    consumer = PushConsumer(group, namesrv, instance_name=name, **{**FAST, **options})
    consumer.subscribe(topic)
    consumer.register_message_listener(seen.listener(name))
    return consumer


def test_join_and_leave_in_the_middle_lose_nothing_and_duplicate_nothing(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("RebT", 4)
            await raw.wait_route("RebT")
            ns = cluster.namesrv_addr
            seen = Collector()
            a = member(ns, "CG_reb", "RebT", seen, "a")
            async with a:
                phase1 = await send_many(ns, "RebT", 60, prefix="p1")
                await seen.wait_ids(set(phase1))
                await wait_committed(raw, "CG_reb", "RebT")
                b = member(ns, "CG_reb", "RebT", seen, "b")
                async with b:                                       # b joins
                    await wait_until(lambda: settled([a, b], "RebT", 4), "two members sharing the queues")
                    assert len(topic_queues(a, "RebT")) == len(topic_queues(b, "RebT")) == 2
                    b_queues = {mq.queue_id for mq in topic_queues(b, "RebT")}
                    phase2 = await send_many(ns, "RebT", 80, prefix="p2")
                    await seen.wait_ids(set(phase1) | set(phase2))
                    await wait_committed(raw, "CG_reb", "RebT")
                # b left: a takes every queue back, from b's committed offsets
                await wait_until(lambda: settled([a], "RebT", 4), "a alone again")
                phase3 = await send_many(ns, "RebT", 60, prefix="p3")
                await seen.wait_ids(set(phase1) | set(phase2) | set(phase3))
                await wait_committed(raw, "CG_reb", "RebT")
            counts = seen.ids()
            assert len(counts) == 200 and set(counts.values()) == {1}, \
                [(i, n) for i, n in counts.items() if n > 1][:5]
            who = {s.msg_id: s for s in seen.seen}
            assert {who[i].who for i in phase1} == {"a"} and {who[i].who for i in phase3} == {"a"}
            for i in phase2:                                        # the owner of the queue consumed it
                s = who[i]
                assert s.who == ("b" if s.queue_id in b_queues else "a"), s
            assert {who[i].who for i in phase2} == {"a", "b"}
    run(main, 90)


def test_allocate_by_circle_end_to_end(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("CircleT", 6)
            await raw.wait_route("CircleT")
            ns = cluster.namesrv_addr
            seen = Collector()
            members = [member(ns, "CG_circle", "CircleT", seen, f"m{i}",
                              allocate_strategy=AllocateMessageQueueAveragelyByCircle()) for i in range(3)]
            async with members[0], members[1], members[2]:
                await wait_until(lambda: settled(members, "CircleT", 6), "three members sharing six queues")
                cids = sorted(m.instance.client_id for m in members)
                for m in members:
                    index = cids.index(m.instance.client_id)
                    assert [mq.queue_id for mq in topic_queues(m, "CircleT")] == [index, index + 3]
                ids = await send_many(ns, "CircleT", 60)
                await seen.wait_ids(set(ids))
                await wait_committed(raw, "CG_circle", "CircleT", 6)
            assert set(seen.ids().values()) == {1}
            for s in seen.seen:
                assert s.queue_id % 3 == cids.index(next(m.instance.client_id for m in members
                                                         if m.config.instance_name == s.who))
    run(main, 60)


def test_orderly_consumption_keeps_queue_order_while_queues_move(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("OrdT", 4)
            await raw.wait_route("OrdT")
            ns = cluster.namesrv_addr
            seen: list[tuple[str, int, int, str, int]] = []      # (member, queue, offset, key, seq)
            suspended: set[str] = set()

            def listener(name: str):
                async def on_messages(msgs, ctx):
                    assert len(msgs) == 1 and ctx.message_queue.queue_id == msgs[0].queue_id
                    m = msgs[0]
                    key, seq = m.body.decode().split(":")
                    # the first delivery of every 7th message is suspended once: order must still hold
                    if int(seq) % 7 == 3 and m.msg_id not in suspended:
                        suspended.add(m.msg_id)
                        return ConsumeOrderlyStatus.SUSPEND_CURRENT_QUEUE_A_MOMENT
                    seen.append((name, m.queue_id, m.queue_offset, key, int(seq)))
                    await trio.sleep(0.002)
                    return ConsumeOrderlyStatus.SUCCESS
                return on_messages

            def orderly(name: str) -> PushConsumer:
                c = PushConsumer("CG_ord", ns, instance_name=name, suspend_current_queue_time_ms=50,
                                 lock_interval_ms=1000, **FAST)
                c.subscribe("OrdT")
                c.register_orderly_listener(listener(name))
                return c

            keys = [f"order-{k}" for k in range(8)]
            sent: dict[str, int] = collections.Counter()

            async def send(producer: Producer, n: int) -> None:
                for i in range(n):
                    key = keys[i % len(keys)]
                    await producer.send(make_message("OrdT", f"{key}:{sent[key]}".encode()),
                                        selector=SelectMessageQueueByHash(), arg=key)
                    sent[key] += 1

            a = orderly("a")
            async with a, Producer("PG_ord", ns) as producer:
                await wait_until(lambda: settled([a], "OrdT", 4), "a holds every queue")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, producer, 80)
                    await wait_until(lambda: len(seen) >= 20, "first orderly messages")
                    b = orderly("b")
                    async with b:                                       # b joins while messages flow
                        await wait_until(lambda: settled([a, b], "OrdT", 4), "a and b share the queues")
                        await wait_until(lambda: any(s[0] == "b" for s in seen), "b consuming", 30)
                    # b left
                await send(producer, 40)
                total = sum(sent.values())
                await wait_until(lambda: len({(s[3], s[4]) for s in seen}) == total, "every message consumed", 40)
                await wait_committed(raw, "CG_ord", "OrdT")
            # per queue, in delivery order: offsets strictly increase (no reordering, no redelivery across owners)
            by_queue = collections.defaultdict(list)
            for name, q, offset, key, seq in seen:
                by_queue[q].append(offset)
            for q, offsets in by_queue.items():
                assert offsets == sorted(set(offsets)), (q, offsets)
            # per key: the sequence numbers in send order
            by_key = collections.defaultdict(list)
            for name, q, offset, key, seq in seen:
                by_key[key].append(seq)
            assert {k: v for k, v in by_key.items()} == {k: list(range(n)) for k, n in sent.items()}
            assert {s[0] for s in seen} == {"a", "b"}
            assert suspended
    run(main, 120)


def test_orderly_consumer_locks_its_queues_on_the_broker(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("LockT", 2)
            await raw.wait_route("LockT")
            c = PushConsumer("CG_lock", cluster.namesrv_addr, **FAST)
            c.subscribe("LockT")
            c.register_orderly_listener(lambda msgs, ctx: ConsumeOrderlyStatus.SUCCESS)
            async with c:
                await wait_until(lambda: len(topic_queues(c, "LockT")) == 2, "queues assigned")
                mqs = [MessageQueue("LockT", "broker-a", i) for i in range(2)]
                for mq in mqs:
                    assert c.process_queue(mq).locked
                locked = cluster.broker.locks.locked_queues("CG_lock", c.instance.client_id)
                held = {(q.topic, q.queue_id) for q in locked}
                assert {("LockT", 0), ("LockT", 1)} <= held
            assert not cluster.broker.locks.locked_queues("CG_lock")
            # released on shutdown: another client can take them at once
            other = PushConsumer("CG_lock", cluster.namesrv_addr, **FAST)
            other.subscribe("LockT")
            other.register_orderly_listener(lambda msgs, ctx: None)
            async with other:
                await wait_until(lambda: len(topic_queues(other, "LockT")) == 2, "queues taken over", 10)
    run(main, 60)
