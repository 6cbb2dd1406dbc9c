"""Our Python client's messages, consumed by a client nobody here wrote: rmq_client's Producer sends to
``rmq nameserver`` + ``rmq broker`` processes, the real RocketMQ C++ push consumer (PyPI ``rocketmq`` 0.4.4, in a
child process, see e2e_support) receives them.

Every kind of send travels: sync, async, oneway, a SEND_BATCH_MESSAGE, an automatic batch of concurrent sends, a
hash-selected ordered send, and a body over the compression threshold (ZLIB, sysflag 0x301: the C++ client
inflates it). The delivered (key, tag, body) triples must equal the sent ones exactly.
"""
from __future__ import annotations

import pytest
import rocketmq.client  # noqa: F401 - the real client (pyproject dev extras); fail early when it is missing
import trio
from e2e_support import assert_exactly, has_all, keys_of, run_trio, start_consumer, unique

from rmq_client import Producer, SelectMessageQueueByHash, SendStatus, make_message
from rmq_testing import ProcessCluster

DELIVERY_TIMEOUT_S = 45.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    procs = ProcessCluster(str(tmp_path_factory.mktemp("python-client")))
    try:
        procs.start_nameserver()
        procs.start_broker("broker-a")
        yield procs
    finally:
        procs.close()


def expected(key: str, tag: str, body: str) -> dict:
    return {"event": "sent", "key": key, "tag": tag, "body": body}


async def produce(namesrv: str, topic: str, run: str) -> tuple[list[dict], dict[str, str]]:
    """Send every kind of message; returns the expected events and key → msg_id (UNIQ_KEY)."""
    sent: list[dict] = []
    made = []

    def msg(i: int, body: str | None = None, tag: str | None = None):
        key, tag = f"{run}-{i}", tag or f"Tag{i % 3}"
        body = body if body is not None else f"body-{run}-{i}-é✓"
        sent.append(expected(key, tag, body))
        m = make_message(topic, body, tags=tag, keys=[key])
        made.append(m)
        return m

    async with Producer(unique("PG_e2e_py"), namesrv) as producer:
        for i in range(0, 5):                                           # sync
            r = await producer.send(msg(i))
            assert r.status is SendStatus.SEND_OK
        futures = [await producer.send_async(msg(i)) for i in range(5, 10)]
        for f in futures:                                               # async
            assert (await f).status is SendStatus.SEND_OK
        await producer.send_oneway(msg(10))                             # oneway
        batch = [msg(i) for i in range(11, 15)]                         # SEND_BATCH_MESSAGE
        assert len((await producer.send_batch(batch)).msg_ids) == 4
        big = "compressible line é✓\n" * 400                            # 9.2 KB: ZLIB, sysflag 0x301
        await producer.send(msg(15, big))
        for i in range(16, 19):                                         # ordered by a sharding key
            await producer.send(msg(i), selector=SelectMessageQueueByHash(), arg="shard-1")
    async with Producer(unique("PG_e2e_pyauto"), namesrv, auto_batch=True, batch_linger_ms=20) as auto:
        batch_msgs = [msg(i) for i in range(19, 31)]
        async with trio.open_nursery() as nursery:                      # concurrent sends: coalesced
            for m in batch_msgs:
                nursery.start_soon(auto.send, m)
        assert auto.stats.auto_batched >= 2
    return sent, {m.keys[0]: m.unique_key for m in made}           # sending gave every message its UNIQ_KEY


def test_python_client_messages_are_consumed_by_the_cpp_client(cluster, tmp_path):
    topic, run = unique("E2E_py"), unique("K")
    sent, ids = run_trio(produce, cluster.namesrv_addr, topic, run, timeout=60)
    with start_consumer(tmp_path, "push-py", "push", cluster.namesrv_addr, topic, unique("CG_e2e_py")) as consumer:
        consumer.wait_for(has_all(keys_of(sent)), DELIVERY_TIMEOUT_S, f"all {len(sent)} messages")
        received = consumer.messages()
    assert_exactly(received, sent, "python client → C++ consumer")
    for event in received:                           # the consumer sees the UNIQ_KEY as the message id
        assert event["msg_id"] == ids[event["key"]], event
    ordered = [e for e in received if e["key"] in {f"{run}-{i}" for i in range(16, 19)}]
    assert len({e["queue"] for e in ordered}) == 1
    assert [e["offset"] for e in sorted(ordered, key=lambda e: e["key"])] == sorted(e["offset"] for e in ordered)
