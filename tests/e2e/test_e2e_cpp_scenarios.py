"""The real RocketMQ C++ client against ``rmq nameserver`` + ``rmq broker`` running as processes.

The nine scenarios of issue 4 (those of ../shared/interop/python-rocketmq/run_all.sh, written here as
our own tests): sync, async, oneway, orderly (orderly push consumer), batch, delay level 2 (5 s), tag
filter ``Tag0||Tag1``, pull consumer, broadcast (two consumers, each gets everything).

The client is PyPI ``rocketmq`` 0.4.4 (ctypes over Apache rocketmq-client-cpp), driven by
``cpp_client.py`` in child processes, each with its own HOME (see e2e_support). Clustering scenarios
produce first and then start a consumer of a new group, which must read from offset 0. Every check is
exact: the delivered (key, tag, body) triples equal the sent ones as a multiset.
"""
from __future__ import annotations

import collections
import time

import pytest
import rocketmq.client  # noqa: F401 - the real client (pyproject dev extras); fail early when it is missing
from e2e_support import (CppChild, assert_exactly, has_all, keys_of, produce, read_queue_count, start_consumer,
                         unique)

from rmq_testing import ProcessCluster

N = 12
DELIVERY_TIMEOUT_S = 45.0
LINGER_S = 1.0               # after the last expected message: time for a duplicate or a stray one to show up


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """One nameserver and broker-a as child processes, shared by the module's tests (fresh names per test)."""
    procs = ProcessCluster(str(tmp_path_factory.mktemp("cpp-scenarios")))
    try:
        procs.start_nameserver()
        procs.start_broker("broker-a")
        yield procs
    finally:
        procs.close()


def consume(tmp_path, cluster, topic: str, expected: list[dict], *flags: str, kind: str = "push",
            expression: str = "*", timeout: float = DELIVERY_TIMEOUT_S) -> list[dict]:
    """A consumer of a new group until every expected key arrived (plus LINGER_S); its ``msg`` events."""
    with start_consumer(tmp_path, f"{kind}-{topic}", kind, cluster.namesrv_addr, topic, unique("CG_e2e"),
                        *flags, expression=expression) as consumer:
        consumer.wait_for(has_all(keys_of(expected)), timeout, f"all {len(expected)} messages")
        time.sleep(LINGER_S)
    return consumer.messages()


@pytest.mark.parametrize("mode", ["sync", "async", "oneway", "batch"])
def test_sent_messages_are_all_delivered_once(cluster, tmp_path, mode):
    topic, run = unique(f"E2E_{mode}"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=N, mode=mode)
    if mode != "oneway":
        assert {e["status"] for e in sent} == {"OK"}
    received = consume(tmp_path, cluster, topic, sent)
    assert_exactly(received, sent, mode)


def test_orderly_producer_and_orderly_consumer_keep_each_sharding_key_in_order(cluster, tmp_path):
    topic, run = unique("E2E_orderly"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=N, mode="orderly", shards=2)
    received = consume(tmp_path, cluster, topic, sent, "--orderly")
    assert_exactly(received, sent, "orderly")
    for shard in (0, 1):
        want = [e["key"] for e in sent if e["shard"] == shard]
        got = [e for e in received if e["key"] in set(want)]          # events are in callback order
        assert [e["key"] for e in got] == want, f"sharding key {shard} out of order"
        assert len({e["queue"] for e in got}) == 1, f"sharding key {shard} spread over queues"
        assert [e["offset"] for e in got] == sorted(e["offset"] for e in got)


def test_delay_level_2_is_delivered_no_sooner_than_5_s_after_the_send(cluster, tmp_path):
    topic, run = unique("E2E_delay"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=N, mode="delay", delay_level=2)
    received = consume(tmp_path, cluster, topic, sent)
    assert_exactly(received, sent, "delay")
    sent_at = {e["key"]: e["t_send"] for e in sent}
    early = {e["key"]: round(e["t_recv"] - sent_at[e["key"]], 3) for e in received
             if e["t_recv"] - sent_at[e["key"]] < 5.0}
    assert not early, f"delivered less than 5 s after the send: {early}"


def test_tag_filter_delivers_only_the_subscribed_tags(cluster, tmp_path):
    topic, run = unique("E2E_tags"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=N, tags="Tag0,Tag1,Tag2")
    # A fence of Tag0/Tag1 messages after them on every queue (round robin over 4 queues): once the
    # fence has arrived, the consumer has read past every Tag2 message, so "no Tag2" means filtered.
    fence = produce(tmp_path, cluster.namesrv_addr, topic, run, n=8, first=N, tags="Tag0,Tag1", name="fence")
    expected = [e for e in sent + fence if e["tag"] in ("Tag0", "Tag1")]
    assert {e["tag"] for e in sent} == {"Tag0", "Tag1", "Tag2"}
    received = consume(tmp_path, cluster, topic, expected, expression="Tag0||Tag1")
    assert not [e for e in received if e["tag"] == "Tag2"], "a Tag2 message was delivered"
    assert_exactly(received, expected, "tag filter")


def test_pull_consumer_reads_every_message(cluster, tmp_path):
    topic, run = unique("E2E_pull"), unique("K")
    sent = produce(tmp_path, cluster.namesrv_addr, topic, run, n=N)
    received = consume(tmp_path, cluster, topic, sent, kind="pull")
    assert_exactly(received, sent, "pull")


def test_broadcast_delivers_every_message_to_each_consumer(cluster, tmp_path):
    ns, topic, group, run = cluster.namesrv_addr, unique("E2E_bcast"), unique("CG_bcast"), unique("K")
    produce(tmp_path, ns, topic, unique("warm"), n=1, name="warm-up")            # creates the topic
    queues = read_queue_count(ns, topic)
    consumers: list[CppChild] = []
    try:
        for i in (1, 2):
            consumers.append(start_consumer(tmp_path, f"bcast-{i}", "push", ns, topic, group, "--broadcast"))
        # A new broadcast consumer starts each queue at its max offset when it first pulls it. Probe until
        # both have a probe from every queue: from then on each gets everything sent.
        probe_run = unique("probe")
        with CppChild(tmp_path, "probes", ["produce", "--namesrv", ns, "--topic", topic, "--run", probe_run,
                                           "--tags", "Probe", "--until-stdin-eof", "0.2"]):
            for consumer in consumers:
                consumer.wait_for(lambda evs: {e["queue"] for e in evs if e["event"] == "msg" and e["tag"] == "Probe"}
                                  >= set(range(queues)), DELIVERY_TIMEOUT_S, f"probes on all {queues} queues")
        sent = produce(tmp_path, ns, topic, run, n=N)
        for consumer in consumers:
            consumer.wait_for(has_all(keys_of(sent)), DELIVERY_TIMEOUT_S, f"all {N} messages")
        time.sleep(LINGER_S)
    finally:
        for consumer in consumers:
            consumer.stop()
    for i, consumer in enumerate(consumers, 1):
        ours = [e for e in consumer.messages() if e["key"].startswith(run + "-")]
        assert_exactly(ours, sent, f"broadcast consumer {i}")
    client_counts = collections.Counter(e["key"] for c in consumers for e in c.messages() if e["key"] in keys_of(sent))
    assert set(client_counts.values()) == {2}
