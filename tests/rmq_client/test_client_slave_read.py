"""Consumers and producers with slaves in the route (PROTOCOL.md §5.6, §9.1; Java ``PullAPIWrapper``,
``MQClientInstance.findBrokerAddressInSubscribe``, ``RemoteBrokerOffsetStore``, ``TopicPublishInfo``).

Messages are written on the master and reach its slave by HA replication; the slave's topics come from its
master by the metadata sync.
"""
from __future__ import annotations

import time

import trio
from client_slave_support import brokers
from client_support import run
from consumer_support import FAST, Collector, wait_until

from rmq_client import Producer, PushConsumer, make_message
from rmq_client.consumer_api import find_broker_in_subscribe
from rmq_testing import wait_replicated

TOPIC = "SlaveReadT"
GROUP = "CG_slave_read"
SMALL_WINDOW = {"rmqTotalPhysicalMemoryBytes": 10_000, "accessMessageInMemoryMaxRatio": 40}
QUICK_ROUTES = {"poll_name_server_interval_ms": 200}
#: Short holds, so that a suspended consumer's held pulls end soon and a pull the slave holds when the master
#: returns is answered quickly.
SHORT_HOLDS = {"broker_suspend_max_time_ms": 500, "consumer_timeout_ms_when_suspend": 3000}


def bodies(prefix: str, n: int) -> list[bytes]:
    return [f"{prefix}-{i}".encode() for i in range(n)]


def seen_bodies(collector: Collector) -> list[bytes]:
    return [s.body for s in collector.seen]


async def wait_seen(collector: Collector, want: list[bytes], timeout_s: float = 20.0) -> None:
    await wait_until(lambda: set(want) <= set(seen_bodies(collector)), f"{len(want)} bodies consumed", timeout_s)


def test_consumer_follows_the_masters_suggestion_to_the_slave(tmp_path) -> None:
    async def main() -> None:
        async with brokers(tmp_path) as b:
            master = await b.start("a", "broker-a", slaveReadEnable="true", **SMALL_WINDOW)
            slave = await b.start("a1", "broker-a", 1)
            await b.create_topic("a", TOPIC, 1)
            await slave.slave_sync.sync_all()
            want = bodies("m", 100)
            master.store.put_batch(TOPIC, want, 0)
            await wait_replicated(master, slave)
            seen = Collector()
            consumer = PushConsumer(GROUP, b.namesrv, **FAST)
            consumer.subscribe(TOPIC, "*")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                await wait_seen(seen, want)
            # the first records are behind the 4000-byte window: the master sent the consumer to broker id 1,
            # which served part of the queue (and, without slaveReadEnable itself, sent it back)
            assert slave.stats.get_messages > 0
            assert master.stats.get_messages > 0
            assert sorted(seen_bodies(seen)) == sorted(want)
    run(main, 40)


def test_master_down_consumer_reads_the_slave_and_the_master_takes_the_offsets_back(tmp_path) -> None:
    async def main() -> None:
        async with brokers(tmp_path) as b:
            master = await b.start("a", "broker-a")
            slave = await b.start("a1", "broker-a", 1)
            await b.create_topic("a", TOPIC, 1)
            await slave.slave_sync.sync_all()
            first = bodies("first", 20)
            master.store.put_batch(TOPIC, first, 0)
            await wait_replicated(master, slave)
            seen = Collector()
            consumer = PushConsumer(GROUP, b.namesrv, **FAST, **QUICK_ROUTES, **SHORT_HOLDS)
            consumer.subscribe(TOPIC, "*")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                await wait_seen(seen, first)
                await wait_until(lambda: master.offsets.query(GROUP, TOPIC, 0) == 20, "offset 20 on the master")

                # the master dies having stored (and replicated) 10 more messages the consumer has not read:
                # the consumer pauses (and its held pull ends) so that it cannot read them from the master first
                consumer.suspend()
                await wait_until(lambda: master.holds.held == 0, "no pull held on the master")
                later = bodies("later", 10)
                master.store.put_batch(TOPIC, later, 0)
                await wait_replicated(master, slave)
                await b.stop("a")
                consumer.resume()

                # the route still lists broker-a, with only its slave: the consumer reads on from it and its
                # periodic offset commit goes there
                await wait_seen(seen, first + later)
                await wait_until(lambda: slave.offsets.query(GROUP, TOPIC, 0) == 30, "offset 30 on the slave")
                assert master.offsets.query(GROUP, TOPIC, 0) == 20

                # the master returns: the consumer's next commits go to it again
                master = await b.restart("a")
                await wait_until(lambda: master.offsets.query(GROUP, TOPIC, 0) == 30, "offset 30 on the master")
                # ... and its pulls: the pull the slave holds is answered (with the replicated message or empty)
                # suggesting the master, and from then on the consumer reads from the master
                async with Producer("PG_slave_read", b.namesrv) as producer:
                    sent = await producer.send(make_message(TOPIC, b"after"))
                    assert sent.message_queue.broker_name == "broker-a" and sent.queue_offset == 30
                    await wait_seen(seen, [b"after"])
                    before = master.stats.get_messages
                    sent = await producer.send(make_message(TOPIC, b"after-2"))
                    assert sent.queue_offset == 31
                    await wait_seen(seen, [b"after-2"])
                assert master.stats.get_messages > before
            # nothing was consumed twice along the way
            assert sorted(seen_bodies(seen)) == sorted(first + later + [b"after", b"after-2"])
    run(main, 60)


def test_a_consumer_started_while_the_master_is_down_resumes_from_the_committed_offset_on_the_slave(tmp_path) -> None:
    """The group's offset reached the slave by the metadata sync; a new member, started after the master died,
    queries it there and reads exactly what was not consumed yet."""
    async def main() -> None:
        async with brokers(tmp_path) as b:
            master = await b.start("a", "broker-a")
            slave = await b.start("a1", "broker-a", 1)
            await b.create_topic("a", TOPIC, 1)
            await slave.slave_sync.sync_all()
            first, later = bodies("first", 20), bodies("later", 10)
            master.store.put_batch(TOPIC, first, 0)
            seen_first = Collector()
            consumer = PushConsumer(GROUP, b.namesrv, **FAST)
            consumer.subscribe(TOPIC, "*")
            consumer.register_message_listener(seen_first.listener())
            async with consumer:
                await wait_seen(seen_first, first)
            assert master.offsets.query(GROUP, TOPIC, 0) == 20          # committed on shutdown
            await slave.slave_sync.sync_all()                           # the slave's copy of the offsets
            assert slave.offsets.query(GROUP, TOPIC, 0) == 20

            master.store.put_batch(TOPIC, later, 0)
            await wait_replicated(master, slave)
            await b.stop("a")

            seen_later = Collector()
            consumer = PushConsumer(GROUP, b.namesrv, **FAST, **QUICK_ROUTES)
            consumer.subscribe(TOPIC, "*")
            consumer.register_message_listener(seen_later.listener())
            async with consumer:
                await wait_seen(seen_later, later)
                await wait_until(lambda: slave.offsets.query(GROUP, TOPIC, 0) == 30, "offset 30 on the slave")
            assert sorted(seen_bodies(seen_later)) == sorted(later), "nothing of the first 20 again"
    run(main, 60)


def test_producer_skips_a_group_whose_master_is_gone_while_its_slave_is_routed(tmp_path) -> None:
    async def main() -> None:
        async with brokers(tmp_path) as b:
            await b.start("a", "broker-a")
            slave = await b.start("a1", "broker-a", 1)
            await b.start("b", "broker-b")
            for key in ("a", "b"):
                await b.create_topic(key, TOPIC, 2)
            async with Producer("PG_failover", b.namesrv, **QUICK_ROUTES) as producer:
                used = {(await producer.send(make_message(TOPIC, b"x"))).message_queue.broker_name
                        for _ in range(8)}
                assert used == {"broker-a", "broker-b"}
                await b.stop("a")
                instance = producer.instance
                await wait_until(lambda: {mq.broker_name for mq in instance.publish_info(TOPIC).queues}
                                 == {"broker-b"}, "broker-a out of the publish queues")
                # the route keeps broker-a, with only its slave, and its queues for consumers
                route = instance.route(TOPIC)
                assert {bd.broker_name: bd.broker_addrs for bd in route.broker_datas}["broker-a"] == \
                    {1: slave.broker_addr}
                assert {mq.broker_name for mq in instance.subscribe_queues(TOPIC)} == {"broker-a", "broker-b"}
                results = [await producer.send(make_message(TOPIC, b"y")) for _ in range(10)]
                assert {r.message_queue.broker_name for r in results} == {"broker-b"}
    run(main, 40)


def test_find_broker_in_subscribe_falls_back_like_java(tmp_path) -> None:
    """Asked-for id, else id + 1 for a slave id, else (not only-this-broker) the lowest id of the group."""
    async def main() -> None:
        async with brokers(tmp_path) as b:
            master = await b.start("a", "broker-a")
            slave = await b.start("a2", "broker-a", 2)
            await b.create_topic("a", TOPIC, 1)
            async with Producer("PG_find", b.namesrv) as producer:
                instance = producer.instance
                await instance.update_route(TOPIC)
                assert await find_broker_in_subscribe(instance, "broker-a", 1) == (slave.broker_addr, True)
                assert await find_broker_in_subscribe(instance, "broker-a", 2) == (slave.broker_addr, True)
                assert await find_broker_in_subscribe(instance, "broker-a", 5) == (master.broker_addr, False)
                await b.stop("a")
                deadline = time.monotonic() + 10
                while instance.master_addr("broker-a") is not None:
                    assert time.monotonic() < deadline
                    await instance.update_route(TOPIC)
                    await trio.sleep(0.02)
                assert await find_broker_in_subscribe(instance, "broker-a", 0) == (slave.broker_addr, True)
    run(main, 30)
