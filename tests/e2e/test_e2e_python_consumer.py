"""Messages from a client nobody here wrote, consumed by ours: the real RocketMQ C++ producer (PyPI ``rocketmq``
0.4.4, in child processes, see e2e_support) sends to ``rmq nameserver`` + ``rmq broker`` processes, and
rmq_client's PushConsumer (concurrent and orderly) and LitePullConsumer receive them.

The delivered (key, tag, body) triples must equal the sent ones exactly — sync sends, one SEND_MESSAGE batch
(``batch:"1"``), tag-filtered subscriptions — the msgId we report is the one the C++ producer returned, and the
orderly producer's sharding keys arrive in order.
"""
from __future__ import annotations

import collections
import functools
import time

import pytest
import rocketmq.client  # noqa: F401 - the real client (pyproject dev extras); fail early when it is missing
import trio
from e2e_support import produce, run_trio, unique

from rmq_client import ConsumeOrderlyStatus, LitePullConsumer, PushConsumer
from rmq_testing import ProcessCluster

DELIVERY_TIMEOUT_S = 45.0
FAST = {"persist_consumer_offset_interval_ms": 500, "rebalance_interval_ms": 2000}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = ProcessCluster(str(tmp_path_factory.mktemp("python-consumer")))
    try:
        procs.start_nameserver()
        procs.start_broker("broker-a")
        yield procs
    finally:
        procs.close()


def triple(key: str, tag: str | None, body: bytes) -> tuple[str, str | None, str]:
    return key, tag, body.decode("utf-8")


def sent_triples(events: list[dict]) -> collections.Counter:
    return collections.Counter((e["key"], e["tag"], e["body"]) for e in events)


async def consume_all(namesrv: str, topic: str, expected: int, *, expression: str = "*", orderly: bool = False):
    got: list = []

    def record(msgs, context):
        got.extend(msgs)
        return ConsumeOrderlyStatus.SUCCESS if orderly else None

    consumer = PushConsumer(unique("CG_e2e_pyc"), namesrv, **FAST)
    consumer.subscribe(topic, expression)
    consumer.register_message_listener(record, orderly=orderly)
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    async with consumer:
        while len(got) < expected:
            assert time.monotonic() < deadline, f"consumed {len(got)} of {expected}"
            await trio.sleep(0.05)
        await trio.sleep(0.3)                     # anything beyond the expected count would be a duplicate
    return got


def test_cpp_sync_and_batch_messages_are_consumed_by_the_python_push_consumer(cluster, tmp_path):
    topic, run = unique("E2E_pyc"), unique("K")
    sync = produce(tmp_path, cluster.namesrv_addr, topic, run, n=20, mode="sync", tags="TagA,TagB,TagC")
    batch = produce(tmp_path, cluster.namesrv_addr, topic, run, n=10, mode="batch", first=100, name="batch")
    sent = sync + batch
    got = run_trio(consume_all, cluster.namesrv_addr, topic, len(sent), timeout=DELIVERY_TIMEOUT_S + 30)
    received = collections.Counter(triple(m.keys[0], m.tags, m.body) for m in got)
    assert received == sent_triples(sent)
    ids = {e["key"]: e["msg_id"] for e in sync}
    for m in got:
        if m.keys[0] in ids:                      # the C++ producer's msgId is its UNIQ_KEY, which we report
            assert m.msg_id == ids[m.keys[0]], (m.keys, m.msg_id)
        assert m.topic == topic and m.reconsume_times == 0


def test_cpp_messages_filtered_by_tag_and_pulled_by_the_lite_consumer(cluster, tmp_path):
    topic, run = unique("E2E_pyt"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=30, mode="sync", tags="TagA,TagB,TagC")
    wanted = [e for e in sent if e["tag"] in ("TagA", "TagC")]
    got = run_trio(functools.partial(consume_all, expression="TagA || TagC"), cluster.namesrv_addr, topic,
                   len(wanted), timeout=DELIVERY_TIMEOUT_S + 30)
    assert collections.Counter(triple(m.keys[0], m.tags, m.body) for m in got) == sent_triples(wanted)

    async def pull_all():
        out: list = []
        async with LitePullConsumer(unique("CG_e2e_lite"), cluster.namesrv_addr, **FAST) as lite:
            lite.subscribe(topic)
            deadline = time.monotonic() + DELIVERY_TIMEOUT_S
            while len(out) < len(sent):
                assert time.monotonic() < deadline, f"pulled {len(out)} of {len(sent)}"
                out.extend(await lite.poll(500))
        return out

    pulled = run_trio(pull_all, timeout=DELIVERY_TIMEOUT_S + 30)
    assert collections.Counter(triple(m.keys[0], m.tags, m.body) for m in pulled) == sent_triples(sent)


def test_cpp_orderly_producer_and_python_orderly_consumer(cluster, tmp_path):
    topic, run = unique("E2E_pyo"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=40, mode="orderly", shards=4)
    got = run_trio(functools.partial(consume_all, orderly=True), cluster.namesrv_addr, topic, len(sent),
                   timeout=DELIVERY_TIMEOUT_S + 30)
    assert collections.Counter(triple(m.keys[0], m.tags, m.body) for m in got) == sent_triples(sent)
    shard_of = {e["key"]: e["shard"] for e in sent}
    order = {e["key"]: i for i, e in enumerate(sent)}
    by_shard = collections.defaultdict(list)
    for m in got:
        by_shard[shard_of[m.keys[0]]].append(order[m.keys[0]])
    for shard, seq in by_shard.items():
        assert seq == sorted(seq), (shard, seq)
    assert all(len({m.queue_id for m in got if shard_of[m.keys[0]] == s}) == 1 for s in by_shard)
