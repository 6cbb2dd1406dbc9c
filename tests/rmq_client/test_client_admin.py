"""Admin against an embedded cluster of two brokers: create and delete topics, cluster and route info, topic
stats, consumer progress and lag, message lookup by key and by id, and offset reset by timestamp."""
from __future__ import annotations

import time

import pytest
import trio
from client_support import Raw, run
from consumer_support import FAST, Collector, committed, wait_until

from rmq_client import ClientError, LitePullConsumer, MessageQueue, Producer, PushConsumer, make_message
from rmq_client.admin import Admin
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster


def test_topics_cluster_and_routes(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, brokers=2) as cluster, Admin(cluster.namesrv_addr) as admin:
            info = await admin.cluster_info()
            assert set(info.broker_addr_table) == {"broker-a", "broker-b"}
            assert info.cluster_addr_table == {"DefaultCluster": ["broker-a", "broker-b"]}
            assert set(await admin.master_addrs("DefaultCluster")) == {"broker-a", "broker-b"}
            created = await admin.create_topic("AdminT", queue_nums=3)
            assert created == ["broker-a", "broker-b"]
            route = await admin.topic_route("AdminT")
            assert sorted((q.broker_name, q.read_queue_nums, q.write_queue_nums) for q in route.queue_datas) == [
                ("broker-a", 3, 3), ("broker-b", 3, 3)]
            assert "AdminT" in await admin.topic_list()
            await admin.create_topic("AdminOneT", queue_nums=2, broker_names=["broker-b"])
            route = await admin.topic_route("AdminOneT")
            assert [q.broker_name for q in route.queue_datas] == ["broker-b"]
            # stats after a few sends
            async with Producer("PG_admin", cluster.namesrv_addr) as producer:
                for i in range(12):
                    await producer.send(make_message("AdminT", b"x"))
            stats = await admin.topic_stats("AdminT")
            assert len(stats) == 6 and sum(s.max_offset for s in stats.values()) == 12
            assert all(s.min_offset == 0 for s in stats.values())
            assert any(s.last_update_timestamp > 0 for s in stats.values())
            await admin.delete_topic("AdminT")
            assert await admin.topic_route("AdminT") is None
            assert "AdminT" not in await admin.topic_list()
            assert all(b.topics.select("AdminT") is None for b in cluster.brokers)
            with pytest.raises(ClientError, match="No route"):
                await admin.topic_stats("AdminT")
    run(main, 60)


def test_consumer_progress_lag_lookup_and_reset(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, Admin(cluster.namesrv_addr) as admin, \
                RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await admin.create_topic("ProgT", queue_nums=2)
            mq0, mq1 = MessageQueue("ProgT", "broker-a", 0), MessageQueue("ProgT", "broker-a", 1)
            async with Producer("PG_prog", cluster.namesrv_addr) as producer:
                first = [await producer.send(make_message("ProgT", f"a{i}".encode(), keys=[f"k{i % 3}"]),
                                             queue=(mq0, mq1)[i % 2]) for i in range(20)]
                stamp = first[-1]
                # messages stored strictly after the first batch
                last_store = max(m.store_timestamp for m in await raw.topic_messages("ProgT", 2))
                while time.time() * 1000 <= last_store:
                    await trio.sleep(0.001)
                reset_at = int(time.time() * 1000)
                while time.time() * 1000 <= reset_at:
                    await trio.sleep(0.001)
                second = [await producer.send(make_message("ProgT", f"b{i}".encode()), queue=(mq0, mq1)[i % 2])
                          for i in range(10)]
            # a consumer that commits 12 of the 15 on each queue
            lite = LitePullConsumer("CG_prog", cluster.namesrv_addr, auto_commit=False, **FAST)
            lite.assign([mq0, mq1])
            async with lite:
                await lite.commit_sync({mq0: 12, mq1: 12})
                stats = await admin.consume_stats("CG_prog", "ProgT")
                assert {mq: (w.broker_offset, w.consumer_offset) for mq, w in stats.offset_table.items()} == {
                    mq0: (15, 12), mq1: (15, 12)}
                assert stats.diff_total() == 6 and await admin.consumer_lag("CG_prog", "ProgT") == 6
                assert stats.offset_table[mq0].last_timestamp > 0
                conns = await admin.consumer_connections("CG_prog")
                assert [c["clientId"] for c in conns["connectionSet"]] == [lite.instance.client_id]
                assert conns["consumeType"] == "CONSUME_ACTIVELY"
            # lookup by key, by UNIQ_KEY and by offset message id
            by_key = await admin.query_messages_by_key("ProgT", "k1")
            assert sorted(m.body for m in by_key) == sorted(f"a{i}".encode() for i in range(20) if i % 3 == 1)
            assert await admin.query_messages_by_key("ProgT", "nope") == []
            msg = await admin.view_message(stamp.msg_id, topic="ProgT")
            assert msg.body == b"a19" and msg.unique_key == stamp.msg_id
            msg = await admin.view_message(stamp.offset_msg_id)
            assert msg.body == b"a19" and msg.queue_offset == stamp.queue_offset
            assert (await admin.query_message_by_unique_key("ProgT", second[0].msg_id)).body == b"b0"
            with pytest.raises(ClientError, match="not found"):
                await admin.view_message("not-an-id")
            # reset the (offline) group to the second batch: a new member reads exactly it
            written = await admin.reset_offset_by_timestamp("CG_prog", "ProgT", reset_at)
            assert written == {mq0: 10, mq1: 10}
            assert await committed(raw, "CG_prog", "ProgT", 0) == 10
            seen = Collector()
            consumer = PushConsumer("CG_prog", cluster.namesrv_addr, **FAST)
            consumer.subscribe("ProgT")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                await seen.wait_ids({s.msg_id for s in second})
                await wait_until(lambda: consumer.stats.consumed >= 10, "consumed")
            assert sorted(s.body for s in seen.seen) == sorted(f"b{i}".encode() for i in range(10))
            # force=False never moves a group forward: queue 0 at 5 stays, queue 1 (at 15) goes back to 10
            await admin.update_consumer_offset("CG_prog", mq0, 5)
            assert await admin.reset_offset_by_timestamp("CG_prog", "ProgT", reset_at, force=False) == {mq1: 10}
            assert await committed(raw, "CG_prog", "ProgT", 0) == 5
    run(main, 60)
