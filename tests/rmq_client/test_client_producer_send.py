"""The trio Producer against an embedded rmq cluster: every kind of send, checked by pulling the stored
records back with a raw RemotingClient (queue, offset, ids, properties, sysflag, body)."""
from __future__ import annotations

import time
import zlib

import pytest
import trio
import trio.testing
from client_support import Raw, run

from rmq_client import (BrokerError, ClientError, MessageQueue, NoRouteError, Producer, RemotingTimeoutError,
                        SelectMessageQueueByHash, SendStatus, make_message)
from rmq_client.compression import decompress
from rmq_client.routing import java_hash_code
from rmq_common import sysflag
from rmq_common.properties import PropertyKey
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster

GROUP = "PG_client_test"


def by_uniq(records):
    return {r.properties[PropertyKey.UNIQ_KEY]: r for r in records}


def test_sync_send_is_stored_where_the_result_says(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            msg = make_message("SendT", b"hello", tags="TagA", keys=["k1", "k2"], properties={"color": "blue"})
            result = await producer.send(msg)
            assert result.status is SendStatus.SEND_OK
            assert result.msg_id == msg.unique_key and len(result.msg_id) == 32
            assert result.message_queue.topic == "SendT" and result.message_queue.broker_name == "broker-a"
            stored = await raw.pull_all("SendT", result.message_queue.queue_id)
            assert len(stored) == 1
            rec = stored[0]
            assert rec.queue_offset == result.queue_offset
            assert rec.offset_msg_id == result.offset_msg_id
            assert rec.body == b"hello" and rec.tags == "TagA" and rec.keys == ["k1", "k2"]
            assert rec.properties["color"] == "blue" and rec.unique_key == result.msg_id
            assert rec.sys_flag & sysflag.COMPRESSED_FLAG == 0
            # the topic was created through TBW102 with defaultTopicQueueNums = 4 queues
            assert len(await producer.publish_queues("SendT")) == 4
            assert producer.stats.sent == 1 and producer.stats.failed == 0
    run(main)


def test_async_sends_complete_with_their_own_results_and_callbacks(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            seen = []

            async def callback(result, error):
                seen.append((result, error))

            msgs = [make_message("AsyncT", f"m{i}".encode()) for i in range(40)]
            futures = [await producer.send_async(m, callback) for m in msgs]
            results = [await f for f in futures]
            assert all(f.done() for f in futures)
            assert [r.msg_id for r in results] == [m.unique_key for m in msgs]
            await trio.testing.wait_all_tasks_blocked()
            assert len(seen) == 40 and all(e is None for _, e in seen)
            stored = by_uniq(await raw.topic_messages("AsyncT"))
            for m, r in zip(msgs, results, strict=True):
                rec = stored[r.msg_id]
                assert rec.body == m.body
                assert (rec.queue_id, rec.queue_offset) == (r.message_queue.queue_id, r.queue_offset)
    run(main)


def test_async_send_failure_reaches_future_and_callback(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties={"autoCreateTopicEnable": "false"}) as cluster, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            errors = []
            future = await producer.send_async(make_message("NoSuchTopicT", b"x"),
                                               lambda r, e: errors.append((r, e)))
            with pytest.raises(NoRouteError):
                await future
            assert isinstance(future.exception(), NoRouteError)
            await trio.testing.wait_all_tasks_blocked()
            assert len(errors) == 1 and errors[0][0] is None and isinstance(errors[0][1], NoRouteError)
    run(main)


def test_oneway_send_arrives(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            msgs = [make_message("OnewayT", f"o{i}".encode()) for i in range(5)]
            for m in msgs:
                assert await producer.send_oneway(m) is None
            stored = await raw.wait_messages("OnewayT", 5)
            assert sorted(r.body for r in stored) == sorted(m.body for m in msgs)
            assert {r.unique_key for r in stored} == {m.unique_key for m in msgs}
    run(main)


def test_send_batch_stores_consecutive_records_with_their_own_ids(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            msgs = [make_message("BatchT", f"b{i}".encode(), tags=f"T{i}", keys=[f"key{i}"]) for i in range(10)]
            msgs[3].flag = 7
            result = await producer.send_batch(msgs)
            assert result.status is SendStatus.SEND_OK
            assert result.msg_ids == [m.unique_key for m in msgs]
            assert len(result.offset_msg_ids) == 10
            stored = await raw.pull_all("BatchT", result.message_queue.queue_id)
            assert [r.body for r in stored] == [m.body for m in msgs]
            assert [r.unique_key for r in stored] == result.msg_ids
            assert [r.offset_msg_id for r in stored] == result.offset_msg_ids
            assert [r.queue_offset for r in stored] == list(range(result.queue_offset, result.queue_offset + 10))
            assert [r.tags for r in stored] == [f"T{i}" for i in range(10)]
            assert stored[3].flag == 7
            with pytest.raises(ClientError, match="same"):
                await producer.send_batch([make_message("BatchT", b"a"), make_message("OtherT", b"b")])
            with pytest.raises(ClientError, match="TimeDelayLevel"):
                await producer.send_batch([make_message("BatchT", b"a", delay_level=2)])
            with pytest.raises(ClientError, match="timer"):
                await producer.send_batch([make_message("BatchT", b"a", delay_ms=5000)])
    run(main)


def test_a_batch_mixing_fresh_messages_and_messages_with_properties(tmp_path):
    """Fresh messages (no properties) take the batch's short encoding; both kinds come back with their keys."""
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            msgs = [make_message("MixT", f"m{i}".encode(), tags="T", keys=["k"]) if i % 3 == 0
                    else make_message("MixT", f"m{i}".encode()) for i in range(9)]
            result = await producer.send_batch(msgs)
            assert result.status is SendStatus.SEND_OK
            assert len(set(result.msg_ids)) == 9 and result.msg_ids == [m.unique_key for m in msgs]
            stored = await raw.pull_all("MixT", result.message_queue.queue_id)
            assert [r.body for r in stored] == [m.body for m in msgs]
            assert [r.unique_key for r in stored] == result.msg_ids
            assert [r.tags for r in stored] == ["T" if i % 3 == 0 else None for i in range(9)]
            fresh = [make_message("MixT", b"x") for _ in range(2)]
            fresh[1].wait_store_msg_ok = False
            with pytest.raises(ClientError, match="waitStoreMsgOK"):
                await producer.send_batch(fresh[::-1])
    run(main)


@pytest.mark.parametrize("linger_ms", [0.0, 20.0])
def test_automatic_batching_keeps_per_message_results(tmp_path, linger_ms):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr, auto_batch=True, batch_linger_ms=linger_ms,
                         batch_max_messages=16) as producer:
            raw = Raw(cluster, rc)
            await producer.send(make_message("AutoT", b"warm-up"))              # route known, topic created
            msgs = [make_message("AutoT", f"a{i}".encode(), keys=[f"k{i}"]) for i in range(60)]
            big = make_message("AutoT", b"z" * 5000)                            # compressed: never batched
            results = {}

            async def one(m):
                results[m.unique_key] = await producer.send(m)

            async with trio.open_nursery() as nursery:
                for m in [*msgs, big]:
                    nursery.start_soon(one, m)
            assert producer.stats.batches >= 4 and producer.stats.auto_batched >= 32
            stored = by_uniq(await raw.topic_messages("AutoT"))
            for m in [*msgs, big]:
                r = results[m.unique_key]
                rec = stored[m.unique_key]
                assert r.msg_id == m.unique_key and r.status is SendStatus.SEND_OK
                assert (rec.queue_id, rec.queue_offset) == (r.message_queue.queue_id, r.queue_offset)
                assert rec.offset_msg_id == r.offset_msg_id
            assert stored[big.unique_key].sys_flag & sysflag.COMPRESSED_FLAG
            assert len({(r.message_queue.queue_id, r.queue_offset) for r in results.values()}) == 61
    run(main)


def test_ordered_sends_land_on_the_selectors_queue_in_order(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            await raw.create_topic("OrderT", 8)
            await raw.wait_route("OrderT")
            queues = await producer.publish_queues("OrderT")
            assert len(queues) == 8
            selector = SelectMessageQueueByHash()
            keys = ["order-1", "order-2", "order-3", "Ω-ключ", 12345, -7]
            for i in range(5):
                for key in keys:
                    r = await producer.send(make_message("OrderT", f"{key}:{i}".encode()), selector=selector, arg=key)
                    assert r.message_queue == queues[abs(java_hash_code(key)) % 8]
            for key in keys:
                q = queues[abs(java_hash_code(key)) % 8].queue_id
                bodies = [r.body.decode() for r in await raw.pull_all("OrderT", q)]
                assert [b for b in bodies if b.split(":")[0] == str(key)] == [f"{key}:{i}" for i in range(5)]
            # a plain function works as a selector too, and an explicit queue is honoured
            r = await producer.send(make_message("OrderT", b"f"), selector=lambda qs, m, a: qs[a], arg=5)
            assert r.message_queue.queue_id == 5
            r = await producer.send(make_message("OrderT", b"q"), queue=MessageQueue("OrderT", "broker-a", 6))
            assert r.message_queue.queue_id == 6
            assert java_hash_code("abc") == 96354 and java_hash_code(2 ** 40 + 5) == 261     # Java's hashCode
    run(main)


@pytest.mark.parametrize("kind,bits", [("zlib", sysflag.ZLIB), ("lz4", sysflag.LZ4), ("zstd", sysflag.ZSTD)])
def test_bodies_over_the_threshold_are_compressed_and_flagged(tmp_path, kind, bits):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr, compress_type=kind) as producer:
            raw = Raw(cluster, rc)
            body = b"".join(b"line %d of a compressible body\n" % i for i in range(400))
            small = b"x" * 4095
            r_big = await producer.send(make_message("ZipT", body), queue=MessageQueue("ZipT", "broker-a", 0))
            r_small = await producer.send(make_message("ZipT", small), queue=MessageQueue("ZipT", "broker-a", 0))
            big_rec, small_rec = await raw.pull_all("ZipT", 0)
            assert big_rec.unique_key == r_big.msg_id and small_rec.unique_key == r_small.msg_id
            assert big_rec.sys_flag & 0x701 == sysflag.COMPRESSED_FLAG | bits
            assert len(big_rec.body) < len(body)
            assert decompress(big_rec.body, big_rec.sys_flag) == body
            if kind == "zlib":
                assert zlib.decompress(big_rec.body) == body                   # Java's DeflaterOutputStream form
            assert small_rec.sys_flag & 0x701 == 0 and small_rec.body == small
    run(main)


def test_delay_level_and_timer_properties_are_sent_and_honoured(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            await raw.create_topic("LaterT", 1)
            await raw.wait_route("LaterT")
            sent_at = time.time()
            delayed = make_message("LaterT", b"delayed", delay_level=1)                       # 1 s
            timed = make_message("LaterT", b"timed", deliver_time_ms=int(sent_at * 1000) + 1500)
            relative = make_message("LaterT", b"relative", delay_ms=1000)
            for m in (delayed, timed, relative):
                r = await producer.send(m)
                assert r.status is SendStatus.SEND_OK
            assert await raw.pull_all("LaterT", 0) == []                  # nothing before its time
            stored = by_uniq(await raw.wait_messages("LaterT", 3, queues=1))
            assert len(stored) == 3
            assert time.time() - sent_at >= 0.9
            assert stored[delayed.unique_key].properties[PropertyKey.REAL_TOPIC] == "LaterT"   # via SCHEDULE_TOPIC
            assert stored[timed.unique_key].properties[PropertyKey.TIMER_DELIVER_MS] == \
                timed.properties[PropertyKey.TIMER_DELIVER_MS]
            assert stored[relative.unique_key].properties[PropertyKey.TIMER_DELAY_MS] == "1000"
            assert {r.body for r in stored.values()} == {b"delayed", b"timed", b"relative"}
    run(main)


def test_invalid_messages_are_refused_before_sending(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, Producer(GROUP, cluster.namesrv_addr,
                                                                   max_message_size=1024) as producer:
            with pytest.raises(ClientError, match="length is zero"):
                await producer.send(make_message("OkT", b""))
            with pytest.raises(ClientError, match="forbidden"):
                await producer.send(make_message("SCHEDULE_TOPIC_XXXX", b"x"))
            with pytest.raises(ClientError, match="not legal"):
                await producer.send(make_message("bad topic!", b"x"))
            with pytest.raises(ClientError, match="over max"):
                await producer.send(make_message("OkT", b"x" * 1025))
            with pytest.raises(TypeError):
                await producer.send(b"not a message")                                   # type: ignore[arg-type]
            assert producer.stats.sent == 0
    run(main)


def test_group_is_required_and_checked():
    with pytest.raises(ValueError, match="empty"):
        Producer()
    with pytest.raises(ValueError, match="DEFAULT_PRODUCER"):
        Producer("DEFAULT_PRODUCER")
    with pytest.raises(ValueError, match="not legal"):
        Producer("bad group")
    with pytest.raises(TypeError, match="unknown"):
        Producer("PG", no_such_option=1)


def test_no_route_and_non_retriable_broker_errors(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties={"autoCreateTopicEnable": "false"}) as cluster, \
                RemotingClient() as rc, Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            with pytest.raises(NoRouteError, match="NoRouteT"):
                await producer.send(make_message("NoRouteT", b"x"))
            await raw.create_topic("PropsT", 1)
            await raw.wait_route("PropsT")
            # a property string over 32767 bytes is refused by the client already
            with pytest.raises(ClientError, match="properties"):
                await producer.send(make_message("PropsT", b"x", properties={"big": "v" * 40000}))
            # a timer beyond timerMaxDelaySec: MESSAGE_ILLEGAL (13) is not retried
            far = make_message("PropsT", b"x", deliver_time_ms=int(time.time() * 1000) + 10 * 24 * 3600 * 1000)
            with pytest.raises(BrokerError) as err:
                await producer.send(far)
            assert err.value.code == 13 and producer.stats.retries == 0
    run(main)


def test_the_send_timeout_covers_route_lookup_and_attempts(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, Producer(GROUP, cluster.namesrv_addr) as producer:
            with pytest.raises(RemotingTimeoutError, match="call timeout"):
                await producer.send(make_message("TimeoutT", b"x"), timeout_ms=0.001)
            assert producer.stats.failed == 1 and producer.stats.sent == 0
            r = await producer.send(make_message("TimeoutT", b"x"))                 # the default budget is enough
            assert r.status is SendStatus.SEND_OK
    run(main)
