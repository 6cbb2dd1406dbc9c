"""PushConsumer against an embedded cluster: concurrent consumption of everything sent exactly once, tag and SQL92
subscriptions (with the client's exact tag re-filter), consume retry through send-back (and the client-side
fallback), offsets committed on shutdown and resumed, broadcasting with local offset files, flow control."""
from __future__ import annotations

import collections

import pytest
import trio
from client_support import Raw, run
from consumer_support import FAST, Collector, committed, max_offset, send_many, topic_queues, wait_committed, \
    wait_until

from rmq_client import (ConsumeConcurrentlyStatus, ConsumeFromWhere, MessageModel, MessageQueue, Producer,
                        PushConsumer, make_message)
from rmq_client import consumer_api, push_consumer
from rmq_common.hashing import java_string_hash
from rmq_common.topic import retry_topic
from rmq_remoting import RemotingClient, RequestCode, fastjson
from rmq_remoting import headers as h
from rmq_testing import embedded_cluster

#: 18 delay levels of one second: retried messages come back within a second or two.
FAST_DELAYS = {"messageDelayLevel": " ".join(["1s"] * 18)}


async def setup_topic(raw: Raw, topic: str, queues: int = 4) -> None:
    await raw.create_topic(topic, queues)
    await raw.wait_route(topic)


def test_concurrent_consumption_gets_everything_exactly_once(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "PushT")
            first = await send_many(cluster.namesrv_addr, "PushT", 100, prefix="before")
            seen = Collector()
            consumer = PushConsumer("CG_push", cluster.namesrv_addr, **FAST)
            consumer.subscribe("PushT", "*")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                # a new group reads young queues from their start (the broker answers offset 0)
                await seen.wait_ids(set(first))
                later = await send_many(cluster.namesrv_addr, "PushT", 100, prefix="after")
                await seen.wait_ids(set(first) | set(later))
                await wait_committed(raw, "CG_push", "PushT")
                assert consumer.stats.consumed == 200 and consumer.stats.failed == 0
                data = consumer.consumer_data()
                assert data["consumeType"] == "CONSUME_PASSIVELY" and data["messageModel"] == "CLUSTERING"
                assert {s["topic"] for s in data["subscriptionDataSet"]} == {"PushT", retry_topic("CG_push")}
                assert topic_queues(consumer, "PushT") == [MessageQueue("PushT", "broker-a", i) for i in range(4)]
            assert all(n == 1 for n in seen.ids().values()), [i for i, n in seen.ids().items() if n > 1]
            assert len(seen.ids()) == 200
            by_queue = collections.defaultdict(list)
            for s in seen.seen:
                by_queue[s.queue_id].append(s.offset)
                assert s.topic == "PushT" and s.reconsume_times == 0
                assert dict(s.properties)["MAX_OFFSET"] and "MIN_OFFSET" in dict(s.properties)
            assert {q: sorted(o) for q, o in by_queue.items()} == {q: list(range(50)) for q in range(4)}
            # unregistered at shutdown
            assert await raw.consumer_ids("CG_push") == []
    run(main, 60)


def test_tag_subscription_refilters_exact_tags_and_sql92_filters_properties(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties={"enablePropertyFilter": "true"}) as cluster, \
                RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "TagT", 2)
            await setup_topic(raw, "SqlT", 2)
            # "Aa" and "BB" share a Java hashCode: the broker cannot tell them apart, the client must
            assert java_string_hash("Aa") == java_string_hash("BB")
            tags = ["Aa", "BB", "TagC", "TagD"]
            tag_ids = await send_many(cluster.namesrv_addr, "TagT", 40, tags=lambda i: tags[i % 4])
            sql_ids = await send_many(cluster.namesrv_addr, "SqlT", 20, a=lambda i: i)
            seen_tags, seen_sql = Collector(), Collector()
            by_tag = PushConsumer("CG_tags", cluster.namesrv_addr, **FAST)
            by_tag.subscribe("TagT", "Aa || TagD")
            by_tag.register_message_listener(seen_tags.listener())
            by_sql = PushConsumer("CG_sql", cluster.namesrv_addr, **FAST)
            by_sql.subscribe("SqlT", "a >= 15 AND a < 100", expression_type="SQL92")
            by_sql.register_message_listener(seen_sql.listener())
            async with by_tag, by_sql:
                want_tags = {tag_ids[i] for i in range(40) if i % 4 in (0, 3)}
                want_sql = set(sql_ids[15:])
                await seen_tags.wait_ids(want_tags)
                await seen_sql.wait_ids(want_sql)
                await wait_committed(raw, "CG_tags", "TagT", 2)
                await wait_committed(raw, "CG_sql", "SqlT", 2)
            assert set(seen_tags.ids()) == want_tags and all(n == 1 for n in seen_tags.ids().values())
            assert {s.tags for s in seen_tags.seen} == {"Aa", "TagD"}
            assert set(seen_sql.ids()) == want_sql
            assert sorted(int(dict(s.properties)["a"]) for s in seen_sql.seen) == list(range(15, 20))
    run(main, 60)


def test_sql92_subscription_is_refused_at_start_when_the_broker_cannot_filter(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            await setup_topic(Raw(cluster, rc), "NoSqlT", 1)
            consumer = PushConsumer("CG_nosql", cluster.namesrv_addr)
            consumer.subscribe("NoSqlT", "a > 1", expression_type="SQL92")
            consumer.register_message_listener(lambda msgs, ctx: None)
            with pytest.raises(Exception, match="Check client in broker error"):
                async with consumer:
                    pass
    run(main, 30)


def test_failed_messages_come_back_with_reconsume_times_then_succeed(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties=FAST_DELAYS) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "RetryT", 2)
            ids = await send_many(cluster.namesrv_addr, "RetryT", 6, prefix="r")
            flaky = ids[2]
            seen = Collector()

            async def listener(msgs, ctx):
                for m in msgs:
                    seen.record("c", m)
                if any(m.msg_id == flaky and m.reconsume_times < 2 for m in msgs):
                    return ConsumeConcurrentlyStatus.RECONSUME_LATER
                return ConsumeConcurrentlyStatus.CONSUME_SUCCESS

            consumer = PushConsumer("CG_retry", cluster.namesrv_addr, **FAST)
            consumer.subscribe("RetryT")
            consumer.register_message_listener(listener)
            async with consumer:
                await wait_until(lambda: [s.reconsume_times for s in seen.seen if s.msg_id == flaky] == [0, 1, 2],
                                 "the flaky message seen three times", 30)
                await wait_committed(raw, "CG_retry", "RetryT", 2)
                assert consumer.stats.sent_back == 2 and consumer.stats.retried_by_client == 0
            tries = [s for s in seen.seen if s.msg_id == flaky]
            assert [s.reconsume_times for s in tries] == [0, 1, 2]
            # redelivered from %RETRY%<group> but shown under the original topic, same id and body
            assert {s.topic for s in tries} == {"RetryT"} and len({s.body for s in tries}) == 1
            assert dict(tries[1].properties)["RETRY_TOPIC"] == "RetryT"
            others = collections.Counter(s.msg_id for s in seen.seen if s.msg_id != flaky)
            assert set(others) == set(ids) - {flaky} and set(others.values()) == {1}
    run(main, 60)


def test_send_back_failure_falls_back_to_the_inner_producer(tmp_path, monkeypatch):
    async def refuse(*args, **kwargs):
        raise consumer_api.BrokerError(1, "send back refused by the test")

    monkeypatch.setattr(consumer_api, "send_message_back", refuse)

    async def main():
        async with embedded_cluster(tmp_path, broker_properties=FAST_DELAYS) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "FallbackT", 1)
            [mid] = await send_many(cluster.namesrv_addr, "FallbackT", 1, prefix="fb")
            seen = Collector()

            def listener(msgs, ctx):
                for m in msgs:
                    seen.record("c", m)
                return "RECONSUME_LATER" if msgs[0].reconsume_times == 0 else "CONSUME_SUCCESS"

            consumer = PushConsumer("CG_fallback", cluster.namesrv_addr, **FAST)
            consumer.subscribe("FallbackT")
            consumer.register_message_listener(listener)
            async with consumer:
                await wait_until(lambda: len(seen.seen) == 2, "the retry stored by the client", 30)
                assert consumer.stats.retried_by_client == 1 and consumer.stats.sent_back == 0
            first, second = seen.seen
            assert first.msg_id == second.msg_id == mid and second.reconsume_times == 1
            props = dict(second.properties)
            assert props["RETRY_TOPIC"] == "FallbackT" and props["ORIGIN_MESSAGE_ID"] == mid
            assert second.topic == "FallbackT"
            retry = await raw.pull_all(retry_topic("CG_fallback"), 0)
            assert len(retry) == 1 and retry[0].reconsume_times == 1
    run(main, 60)


def test_offsets_committed_on_shutdown_are_resumed_by_the_next_member(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "ResumeT")
            first = await send_many(cluster.namesrv_addr, "ResumeT", 40, prefix="one")
            seen = Collector()
            # persistence every 60 s: only the shutdown commit can store the offsets in time
            one = PushConsumer("CG_resume", cluster.namesrv_addr, persist_consumer_offset_interval_ms=60_000)
            one.subscribe("ResumeT")
            one.register_message_listener(seen.listener("one"))
            async with one:
                await seen.wait_ids(set(first))
            for q in range(4):
                assert await committed(raw, "CG_resume", "ResumeT", q) == await max_offset(raw, "ResumeT", q)
            second = await send_many(cluster.namesrv_addr, "ResumeT", 20, prefix="two")
            two = PushConsumer("CG_resume", cluster.namesrv_addr, **FAST)
            two.subscribe("ResumeT")
            two.register_message_listener(seen.listener("two"))
            async with two:
                await seen.wait_ids(set(second))
                await wait_committed(raw, "CG_resume", "ResumeT")
            assert {s.msg_id for s in seen.by("two")} == set(second)
            assert all(n == 1 for n in seen.ids().values())
    run(main, 60)


def test_broadcasting_delivers_to_every_member_with_local_offsets(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path / "cluster") as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "BcastT")
            offsets_dir = tmp_path / "offsets"
            seen = Collector()

            def member(name: str) -> PushConsumer:
                c = PushConsumer("CG_bcast", cluster.namesrv_addr, message_model=MessageModel.BROADCASTING,
                                 instance_name=name, client_ip="127.0.0.1", local_offset_store_dir=str(offsets_dir),
                                 **FAST)
                c.subscribe("BcastT")
                c.register_message_listener(seen.listener(name))
                return c

            early = await send_many(cluster.namesrv_addr, "BcastT", 5, prefix="early")
            a, b = member("a"), member("b")
            first = member("first")
            first.config.consume_from_where = ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET
            async with a, b, first:
                await wait_until(lambda: {s.msg_id for s in seen.by("first")} == set(early), "FIRST_OFFSET member")
                # broadcasting consumers without offsets start at the end: wait until both hold every queue
                await wait_until(lambda: len(topic_queues(a, "BcastT")) == 4 and len(topic_queues(b, "BcastT")) == 4,
                                 "both members on all queues")
                assert retry_topic("CG_bcast") not in {mq.topic for mq in a.assigned_queues()}
                ids = await send_many(cluster.namesrv_addr, "BcastT", 40, prefix="b")
                await wait_until(lambda: {s.msg_id for s in seen.by("a")} == set(ids)
                                 and {s.msg_id for s in seen.by("b")} == set(ids), "both members got everything")
            assert collections.Counter((s.who, s.msg_id) for s in seen.seen if s.who in "ab") == {
                (w, i): 1 for w in "ab" for i in ids}            # LAST_OFFSET: nothing sent before they started
            assert collections.Counter(s.msg_id for s in seen.by("first")) == {i: 1 for i in early + ids}
            for name in "ab":
                path = offsets_dir / f"127.0.0.1@{name}" / "CG_bcast" / "offsets.json"
                table = {int(k["queueId"]): v for k, v in fastjson.loads(path.read_bytes())["offsetTable"].items()}
                assert table == {q: await max_offset(raw, "BcastT", q) for q in range(4)}
            # no group offsets on the broker for a broadcasting group
            assert await committed(raw, "CG_bcast", "BcastT", 0) in (-1, 0)
            # a restarted member resumes from its file: only what was sent while it was away
            more = await send_many(cluster.namesrv_addr, "BcastT", 8, prefix="late")
            again = member("a")
            async with again:
                await wait_until(lambda: set(more) <= {s.msg_id for s in seen.by("a")}, "the restarted member")
            assert collections.Counter(s.msg_id for s in seen.by("a")) == {i: 1 for i in ids + more}
    run(main, 60)


def test_flow_control_stops_pulling_at_the_cached_count_threshold(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "FlowT", 1)
            ids = await send_many(cluster.namesrv_addr, "FlowT", 100, prefix="f")
            gate = trio.Event()
            seen = Collector()

            async def slow(msgs, ctx):
                await gate.wait()
                for m in msgs:
                    seen.record("c", m)

            consumer = PushConsumer("CG_flow", cluster.namesrv_addr, pull_batch_size=4, pull_threshold_for_queue=10,
                                    consume_thread_max=1, **FAST)
            consumer.subscribe("FlowT")
            consumer.register_message_listener(slow)
            async with consumer:
                mq = MessageQueue("FlowT", "broker-a", 0)
                await wait_until(lambda: consumer.stats.flow_control_count >= 5, "flow control")
                pq = consumer.process_queue(mq)
                # pulls stop once more than 10 are cached: at most one batch of 4 beyond the threshold
                assert 10 < pq.msg_count <= 14 and consumer.stats.pulled == pq.msg_count
                pulled = consumer.stats.pulled
                await trio.sleep(0.3)                      # still held back (no new pull while the gate is shut)
                assert consumer.stats.pulled == pulled
                gate.set()
                await seen.wait_ids(set(ids))
                await wait_committed(raw, "CG_flow", "FlowT", 1)
            assert all(n == 1 for n in seen.ids().values()) and len(seen.ids()) == 100
    run(main, 60)


def test_running_info_and_directly_consumed_messages(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "InfoT", 1)
            seen = Collector()
            consumer = PushConsumer("CG_info", cluster.namesrv_addr, **FAST)
            consumer.subscribe("InfoT")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                await wait_until(lambda: topic_queues(consumer, "InfoT"), "queue assigned")
                info = consumer.running_info()
                assert info["properties"]["consumeType"] == "CONSUME_PASSIVELY"
                assert {k["topic"] for k in info["mqTable"]} >= {"InfoT"}
                assert fastjson.dumps(info).startswith(b'{"mqTable":{{"brokerName":"broker-a"')
                [mid] = await send_many(cluster.namesrv_addr, "InfoT", 1)
                await seen.wait_ids({mid})
                [stored] = await raw.pull_all("InfoT", 0)
                result = await consumer.consume_message_directly(stored, "broker-a")
                assert result["consumeResult"] == "CR_RETURN_NULL" and result["order"] is False
                assert seen.ids()[mid] == 2
    run(main, 30)


def test_compressed_bodies_reach_the_listener_inflated(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "ZipT", 1)
            bodies = {}
            for codec in ("zlib", "lz4", "zstd"):
                body = (f"{codec} compressible line é✓\n" * 400).encode()
                async with Producer(f"PG_zip_{codec}", cluster.namesrv_addr, compress_type=codec) as producer:
                    bodies[(await producer.send(make_message("ZipT", body, tags=codec))).msg_id] = body
            stored = await raw.pull_all("ZipT", 0)
            assert {m.sys_flag & 0x701 for m in stored} == {0x301, 0x101, 0x201}     # stored compressed
            seen = Collector()
            consumer = PushConsumer("CG_zip", cluster.namesrv_addr, **FAST)
            consumer.subscribe("ZipT")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                await seen.wait_ids(set(bodies))
            assert {s.msg_id: s.body for s in seen.seen} == bodies
    run(main, 30)


def test_an_illegal_offset_is_corrected_persisted_and_consumption_resumes(tmp_path, monkeypatch):
    monkeypatch.setattr(push_consumer, "OFFSET_ILLEGAL_FIX_DELAY_S", 0.2)

    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await setup_topic(raw, "IllegalT", 1)
            old = await send_many(cluster.namesrv_addr, "IllegalT", 5, prefix="old")
            # the group's offset is far beyond the queue's end: the broker answers PULL_OFFSET_MOVED (21)
            resp = await raw.call(raw.addr(), RequestCode.UPDATE_CONSUMER_OFFSET, h.UpdateConsumerOffsetRequestHeader(
                consumer_group="CG_illegal", topic="IllegalT", queue_id=0, commit_offset=1000))
            assert resp.code == 0
            seen = Collector()
            consumer = PushConsumer("CG_illegal", cluster.namesrv_addr, **FAST)
            consumer.subscribe("IllegalT")
            consumer.register_message_listener(seen.listener())
            async with consumer:
                await wait_until(lambda: consumer.stats.offset_illegal >= 1, "OFFSET_ILLEGAL seen")
                # corrected to the broker's nextBeginOffset and persisted: beyond the end of a queue that still
                # starts at 0, Java's store (and rmq's) answers 0, so the queue is read again from its start
                await wait_until(lambda: consumer.process_queue(MessageQueue("IllegalT", "broker-a", 0)) is not None
                                 and not consumer.process_queue(MessageQueue("IllegalT", "broker-a", 0)).dropped,
                                 "queue rebuilt")
                new = await send_many(cluster.namesrv_addr, "IllegalT", 3, prefix="new")
                await seen.wait_ids(set(old) | set(new))
                await wait_committed(raw, "CG_illegal", "IllegalT", 1)
            assert sorted(s.offset for s in seen.seen) == list(range(8))
    run(main, 30)
