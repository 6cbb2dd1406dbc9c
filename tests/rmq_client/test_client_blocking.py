"""The blocking facade, used from plain threads (the embedded cluster runs in the test's trio thread and
the facade calls run in ``trio.to_thread`` workers, exactly like a script talking to a remote broker)."""
from __future__ import annotations

import threading
import time

import pytest
import trio
from client_support import Raw, run

from rmq_client import ClientError, LocalTransactionState, SendStatus, make_message
from rmq_client.blocking import Producer, TransactionProducer
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster

GROUP = "PG_client_blocking"


def test_blocking_producer_from_a_plain_thread(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            out: dict = {}

            def script() -> None:
                caller = threading.current_thread()
                with Producer(GROUP, cluster.namesrv_addr) as producer:
                    out["sync"] = producer.send(make_message("BlockT", b"sync"))
                    done = threading.Event()
                    seen = []

                    def callback(result, error):
                        seen.append((result, error, threading.current_thread().name))
                        done.set()
                    future = producer.send_async(make_message("BlockT", b"async"), callback)
                    out["async"] = future.result(timeout=10)
                    assert done.wait(10)
                    out["callback"] = seen
                    producer.send_oneway(make_message("BlockT", b"oneway"))
                    out["batch"] = producer.send_batch([make_message("BlockT", b"b1"), make_message("BlockT", b"b2")])
                    out["queues"] = producer.publish_queues("BlockT")
                    out["thread"] = caller is threading.current_thread()
                out["closed_stats"] = producer.stats
                with pytest.raises(ClientError, match="not running"):
                    producer.send(make_message("BlockT", b"after close"))
                producer.shutdown()                                           # idempotent

            await trio.to_thread.run_sync(script)
            assert out["sync"].status is SendStatus.SEND_OK and out["async"].status is SendStatus.SEND_OK
            (result, error, thread_name), = out["callback"]
            assert error is None and result.msg_id == out["async"].msg_id
            assert thread_name.endswith("-callbacks")
            assert len(out["batch"].msg_ids) == 2 and len(out["queues"]) == 4
            assert out["closed_stats"].sent == 5
            stored = await raw.wait_messages("BlockT", 5)
            assert sorted(r.body for r in stored) == [b"async", b"b1", b"b2", b"oneway", b"sync"]
    run(main)


def test_blocking_facade_errors_surface_in_the_caller(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties={"autoCreateTopicEnable": "false"}) as cluster:
            def script() -> None:
                with Producer(GROUP, cluster.namesrv_addr) as producer:
                    with pytest.raises(Exception, match="No route info"):
                        producer.send(make_message("MissingT", b"x"))
                    future = producer.send_async(make_message("MissingT", b"x"))
                    with pytest.raises(Exception, match="No route info"):
                        future.result(timeout=10)
            await trio.to_thread.run_sync(script)
    run(main)


def test_blocking_transaction_producer_runs_the_local_transaction_in_the_calling_thread(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties={"transactionTimeOut": 300,
                                                                  "transactionCheckInterval": 300}) as cluster, \
                RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("BlockTxT", 1)
            await raw.wait_route("BlockTxT")
            threads: dict[str, str] = {}

            class Listener:
                def execute_local_transaction(self, msg, arg):
                    threads["execute"] = threading.current_thread().name
                    time.sleep(0.01)                       # blocking is fine here: it is the caller's thread
                    return arg

                def check_local_transaction(self, msg):
                    threads["check"] = threading.current_thread().name
                    time.sleep(0.01)
                    return LocalTransactionState.COMMIT_MESSAGE

            def script() -> list:
                threads["caller"] = threading.current_thread().name
                with TransactionProducer(GROUP, Listener(), cluster.namesrv_addr) as producer:
                    results = [
                        producer.send_message_in_transaction(make_message("BlockTxT", b"commit"),
                                                             LocalTransactionState.COMMIT_MESSAGE),
                        producer.send_message_in_transaction(make_message("BlockTxT", b"rollback"),
                                                             LocalTransactionState.ROLLBACK_MESSAGE),
                        producer.send_message_in_transaction(make_message("BlockTxT", b"checked"), None),
                    ]
                    deadline = time.monotonic() + 20
                    while "check" not in threads and time.monotonic() < deadline:
                        time.sleep(0.05)
                    return results

            results = await trio.to_thread.run_sync(script)
            assert [r.local_transaction_state for r in results] == [
                LocalTransactionState.COMMIT_MESSAGE, LocalTransactionState.ROLLBACK_MESSAGE,
                LocalTransactionState.UNKNOW]
            assert threads["execute"] == threads["caller"]
            assert threads["check"] not in (threads["caller"], "rmq-producer-" + GROUP)
            stored = await raw.wait_messages("BlockTxT", 2, queues=1)
            assert sorted(r.body for r in stored) == [b"checked", b"commit"]
    run(main, timeout=60)
