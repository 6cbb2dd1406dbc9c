"""The blocking consumer facades from plain threads: a PushConsumer whose listener runs in worker threads (never
the client's trio thread), and a LitePullConsumer polled, sought and committed with blocking calls."""
from __future__ import annotations

import collections
import threading
import time

import trio
from client_support import Raw, run
from consumer_support import FAST, committed, send_many

from rmq_client import ConsumeConcurrentlyStatus, ConsumeOrderlyStatus, MessageQueue
from rmq_client.blocking import Admin, LitePullConsumer, PushConsumer
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster


def test_blocking_push_consumer_runs_the_listener_in_worker_threads(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("BlockPushT", 2)
            await raw.wait_route("BlockPushT")
            ids = await send_many(cluster.namesrv_addr, "BlockPushT", 30)
            out: dict = {}

            def script() -> None:
                lock = threading.Lock()
                seen: list = []
                threads: set = set()
                done = threading.Event()

                def listener(msgs, context):
                    time.sleep(0.001)                       # blocking is fine here
                    with lock:
                        seen.extend(m.msg_id for m in msgs)
                        threads.add(threading.current_thread().name)
                        if len(set(seen)) >= 30:
                            done.set()
                    return ConsumeConcurrentlyStatus.CONSUME_SUCCESS

                consumer = PushConsumer("CG_block_push", cluster.namesrv_addr, consume_thread_max=4, **FAST)
                consumer.subscribe("BlockPushT")
                consumer.register_message_listener(listener)
                with consumer:
                    assert done.wait(20), f"consumed {len(set(seen))}"
                    out["queues"] = consumer.assigned_queues()
                    out["loop"] = consumer.portal._thread.name
                out["seen"] = list(seen)
                out["threads"] = threads
                consumer.shutdown()                         # idempotent

            await trio.to_thread.run_sync(script)
            assert collections.Counter(out["seen"]) == {i: 1 for i in ids}
            assert out["loop"] not in out["threads"] and out["threads"]
            assert {mq.topic for mq in out["queues"]} == {"BlockPushT", "%RETRY%CG_block_push"}
            for q in range(2):                               # committed at shutdown
                assert await committed(raw, "CG_block_push", "BlockPushT", q) == 15
    run(main, 60)


def test_blocking_orderly_listener(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("BlockOrdT", 1)
            await raw.wait_route("BlockOrdT")
            ids = await send_many(cluster.namesrv_addr, "BlockOrdT", 20)
            out: list = []

            # a listener must be registered before start
            def bad() -> None:
                c = PushConsumer("CG_block_ord2", cluster.namesrv_addr)
                try:
                    c.start()
                except Exception as exc:
                    out.append(str(exc))

            await trio.to_thread.run_sync(bad)
            assert "no message listener" in out.pop()

            def good() -> None:
                done = threading.Event()

                def listener(msgs, context):
                    out.extend(m.queue_offset for m in msgs)
                    if len(out) >= 20:
                        done.set()
                    return ConsumeOrderlyStatus.SUCCESS

                consumer = PushConsumer("CG_block_ord", cluster.namesrv_addr, **FAST)
                consumer.subscribe("BlockOrdT")
                consumer.register_orderly_listener(listener)
                with consumer:
                    assert done.wait(20)

            await trio.to_thread.run_sync(good)
            assert out == list(range(20)) and len(ids) == 20
    run(main, 60)


def test_blocking_lite_pull_consumer(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("BlockLiteT", 1)
            await raw.wait_route("BlockLiteT")
            ids = await send_many(cluster.namesrv_addr, "BlockLiteT", 25)
            out: dict = {}

            def script() -> None:
                mq = MessageQueue("BlockLiteT", "broker-a", 0)
                with LitePullConsumer("CG_block_lite", cluster.namesrv_addr, auto_commit=False, **FAST) as consumer:
                    consumer.assign([mq])
                    got: list = []
                    deadline = time.monotonic() + 20
                    while len(got) < 25 and time.monotonic() < deadline:
                        got.extend(consumer.poll(200))
                    out["first"] = [m.msg_id for m in got]
                    consumer.seek(mq, 20)
                    batch = None
                    while batch is None and time.monotonic() < deadline:
                        batch = consumer.poll_batch(200)
                    out["batch"] = batch.queue_offsets.tolist() if batch is not None else None
                    consumer.commit_sync()
                    out["committed"] = consumer.committed(mq)
                    out["assignment"] = consumer.assignment()

            await trio.to_thread.run_sync(script)
            assert out["first"] == ids
            assert out["batch"] == [20, 21, 22, 23, 24]
            assert out["committed"] == 25 and out["assignment"] == {MessageQueue("BlockLiteT", "broker-a", 0)}
            assert await committed(raw, "CG_block_lite", "BlockLiteT", 0) == 25
    run(main, 60)


def test_blocking_admin(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster:
            out: dict = {}

            def script() -> None:
                with Admin(cluster.namesrv_addr) as admin:
                    out["created"] = admin.create_topic("BlockAdminT", queue_nums=2)
                    out["topics"] = admin.topic_list()
                    out["route"] = admin.topic_route("BlockAdminT")

            await trio.to_thread.run_sync(script)
            assert out["created"] == ["broker-a"] and "BlockAdminT" in out["topics"]
            assert out["route"].queue_datas[0].read_queue_nums == 2
    run(main, 30)
