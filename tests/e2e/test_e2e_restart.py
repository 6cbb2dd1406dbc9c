"""Restart: ``rmq broker`` stopped by SIGTERM or SIGKILL and started again on the same store and port.

Messages are produced and part of them consumed over the wire with our own remoting client
(SEND_MESSAGE_V2 with acknowledgement, PULL_MESSAGE, UPDATE/QUERY_CONSUMER_OFFSET), so the test knows
exactly which messages were acknowledged, at which queue offsets, and where the group committed.
After the restart:

- the nameserver routes the topic to the broker again (and, while it was down, did not);
- every acknowledged message is still there, at its queue offset, with its msgId, key and body;
- the group's offset is where it left off: after SIGTERM exactly the committed one; after SIGKILL
  the last persisted one (consumerOffset.json is written every 5 s, as RocketMQ's), i.e. between the
  offset known to be on disk and the last commit: at-least-once, nothing skipped;
- the real C++ client (a push consumer of the same group) receives exactly the messages from that
  offset on, plus what a C++ producer sends after the restart.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import pytest
import rocketmq.client  # noqa: F401 - the real client (pyproject dev extras)
import trio
from e2e_support import (assert_exactly, broker_addrs, call, has_all, keys_of, produce, route, run_trio,
                         start_consumer, unique)

from rmq_common._record import decode_records
from rmq_common.properties import encode_properties
from rmq_remoting import RemotingClient, RemotingError, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h
from rmq_testing import ProcessCluster

BROKER = "broker-a"
QUEUES = 4
PER_QUEUE = 10
#: messages of each queue consumed and committed before the stop (queue 2: none, queue 1: all)
CONSUMED = [3, 10, 0, 7]
#: SIGKILL: a first commit, waited for on disk, then a second one just before the kill
CONSUMED_PERSISTED = [2, 4, 0, 5]
CONSUMED_LAST = [6, 10, 1, 5]
DEADLINE_S = 30.0
OFFSET_PERSIST_WAIT_S = 20.0     # flushConsumerOffsetInterval is 5 s


@dataclass(frozen=True)
class Sent:
    """An acknowledged message: where the broker said it stored it."""

    key: str
    tag: str
    body: str
    queue: int
    offset: int
    msg_id: str


@pytest.fixture
def cluster(tmp_path):
    procs = ProcessCluster(str(tmp_path / "cluster"))
    try:
        procs.start_nameserver()
        procs.start_broker(BROKER)
        yield procs
    finally:
        procs.close()


def broker_addr(cluster: ProcessCluster) -> str:
    return f"127.0.0.1:{cluster.broker_ports[BROKER]}"


# -- wire calls ------------------------------------------------------------------------------------

async def create_topic(client: RemotingClient, addr: str, topic: str) -> None:
    resp = await call(client, addr, RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
        topic=topic, default_topic="TBW102", read_queue_nums=QUEUES, write_queue_nums=QUEUES, perm=6,
        topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False))
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


async def send(client: RemotingClient, addr: str, topic: str, queue: int, key: str) -> Sent:
    """SEND_MESSAGE_V2 to ``queue``; returns what the broker acknowledged (raises when it did not)."""
    tag, body = "TagR", f"body-{key}-é"
    header = h.SendMessageRequestHeaderV2(
        a="PG_restart", b=topic, c="TBW102", d=QUEUES, e=queue, f=0, g=int(time.time() * 1000), h=0,
        i=encode_properties({"KEYS": key, "TAGS": tag, "WAIT": "true"}).decode(), j=0, k=False, m=False)
    resp = await call(client, addr, RequestCode.SEND_MESSAGE_V2, header, body.encode())
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    ack = h.SendMessageResponseHeader.decode(resp.ext_fields)
    assert ack.queue_id == queue
    return Sent(key, tag, body, queue, ack.queue_offset, ack.msg_id)


async def pull(client: RemotingClient, addr: str, group: str, topic: str, queue: int, offset: int,
               max_nums: int = 32) -> list:
    """The records of ``queue`` from ``offset`` (at most ``max_nums``; [] when there are none).

    sysFlag 0x4 (FLAG_SUBSCRIPTION): the subscription comes with the pull, no heartbeat needed."""
    resp = await call(client, addr, RequestCode.PULL_MESSAGE, h.PullMessageRequestHeader(
        consumer_group=group, topic=topic, queue_id=queue, queue_offset=offset, max_msg_nums=max_nums,
        sys_flag=0x4, commit_offset=0, suspend_timeout_millis=0, subscription="*", sub_version=0,
        expression_type="TAG"))
    if resp.code == ResponseCode.PULL_NOT_FOUND:
        return []
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return decode_records(bytes(resp.body))


async def pull_all(client: RemotingClient, addr: str, group: str, topic: str, queue: int, offset: int) -> list:
    records: list = []
    while batch := await pull(client, addr, group, topic, queue, offset + len(records)):
        records += batch
    return records


async def commit(client: RemotingClient, addr: str, group: str, topic: str, queue: int, offset: int) -> None:
    resp = await call(client, addr, RequestCode.UPDATE_CONSUMER_OFFSET, h.UpdateConsumerOffsetRequestHeader(
        consumer_group=group, topic=topic, queue_id=queue, commit_offset=offset))
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


async def committed(client: RemotingClient, addr: str, group: str, topic: str) -> list[int]:
    out = []
    for queue in range(QUEUES):
        resp = await call(client, addr, RequestCode.QUERY_CONSUMER_OFFSET, h.QueryConsumerOffsetRequestHeader(
            consumer_group=group, topic=topic, queue_id=queue))
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        out.append(h.QueryConsumerOffsetResponseHeader.decode(resp.ext_fields).offset)
    return out


async def max_offsets(client: RemotingClient, addr: str, topic: str) -> list[int]:
    out = []
    for queue in range(QUEUES):
        resp = await call(client, addr, RequestCode.GET_MAX_OFFSET,
                          h.GetMaxOffsetRequestHeader(topic=topic, queue_id=queue))
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
        out.append(h.GetMaxOffsetResponseHeader.decode(resp.ext_fields).offset)
    return out


async def produce_and_consume_part(cluster: ProcessCluster, topic: str, group: str, consumed: list[int]) -> list[Sent]:
    """Create ``topic``, send PER_QUEUE messages to every queue, consume ``consumed[q]`` of queue q and commit."""
    addr = broker_addr(cluster)
    async with RemotingClient() as client:
        await create_topic(client, addr, topic)
        sent = [await send(client, addr, topic, q, f"{topic}-{q}-{i}") for i in range(PER_QUEUE) for q in range(QUEUES)]
        for q in range(QUEUES):
            assert [s.offset for s in sent if s.queue == q] == list(range(PER_QUEUE))
        await consume_and_commit(client, addr, topic, group, sent, consumed)
    return sent


async def consume_and_commit(client: RemotingClient, addr: str, topic: str, group: str, sent: list[Sent],
                             upto: list[int]) -> None:
    """Pull queue q up to ``upto[q]`` (checking what arrives) and commit ``upto[q]``."""
    start = await committed(client, addr, group, topic)
    for q in range(QUEUES):
        if upto[q] > start[q]:
            records = await pull(client, addr, group, topic, q, start[q], upto[q] - start[q])
            assert [(r.queue_offset, r.keys[0]) for r in records] == \
                   [(s.offset, s.key) for s in sent if s.queue == q and start[q] <= s.offset < upto[q]]
        await commit(client, addr, group, topic, q, upto[q])
    assert await committed(client, addr, group, topic) == upto


def routed_addr(namesrv: str, topic: str) -> str | None:
    """Where the nameserver routes ``topic`` on BROKER right now (one query, no waiting)."""
    async def main() -> str | None:
        async with RemotingClient() as client:
            return broker_addrs(await route(client, namesrv, topic)).get(BROKER)
    return run_trio(main)


async def wait_route(namesrv: str, topic: str, want_addr: str | None) -> None:
    """Wait until the nameserver routes ``topic`` to ``want_addr`` (None: not at all)."""
    async with RemotingClient() as client:
        deadline = trio.current_time() + DEADLINE_S
        while True:
            seen = broker_addrs(await route(client, namesrv, topic)).get(BROKER)
            if seen == want_addr:
                return
            assert trio.current_time() < deadline, f"route of {topic}: {seen!r}, want {want_addr!r}"
            await trio.sleep(0.1)


def check_store_after_restart(cluster: ProcessCluster, topic: str, group: str, acked: list[Sent],
                              maybe: list[Sent]) -> list[list]:
    """Every acked message is at its offset with its id, key and body; anything else is one of ``maybe``
    (sent but unacknowledged). Returns the records of each queue."""
    addr = broker_addr(cluster)

    async def main() -> list[list]:
        async with RemotingClient() as client:
            return [await pull_all(client, addr, group, topic, q, 0) for q in range(QUEUES)]
    queues = run_trio(main)
    by_key = {r.keys[0]: (q, r) for q, records in enumerate(queues) for r in records}
    for q, records in enumerate(queues):
        assert [r.queue_offset for r in records] == list(range(len(records))), f"queue {q} has gaps"
    lost = [s for s in acked if s.key not in by_key]
    assert not lost, f"{len(lost)} acknowledged message(s) lost, e.g. {lost[:3]}"
    for s in acked:
        q, r = by_key[s.key]
        assert (q, r.queue_offset, r.offset_msg_id, r.body.decode(), r.tags) == \
               (s.queue, s.offset, s.msg_id, s.body, s.tag)
    extra = set(by_key) - {s.key for s in acked} - {s.key for s in maybe}
    assert not extra, f"records nobody sent: {sorted(extra)[:5]}"
    return queues


def cpp_consumer_resumes(cluster: ProcessCluster, workdir, topic: str, group: str, queues: list[list],
                         resume: list[int]) -> None:
    """After a C++ producer sends 4 more, a C++ push consumer of ``group`` gets exactly what lies past ``resume``."""
    after_restart = produce(workdir, cluster.namesrv_addr, topic, unique("K"), n=4, tags="TagR")
    expected = [{"key": r.keys[0], "tag": r.tags, "body": r.body.decode()}
                for q, records in enumerate(queues) for r in records[resume[q]:]] + after_restart
    with start_consumer(workdir, "resume", "push", cluster.namesrv_addr, topic, group) as consumer:
        consumer.wait_for(has_all(keys_of(expected)), DEADLINE_S, f"the {len(expected)} messages past the offset")
        time.sleep(1.0)
    assert_exactly(consumer.messages(), expected, "after restart")


def offsets_on_disk(cluster: ProcessCluster, topic: str, group: str) -> dict[int, int]:
    path = os.path.join(cluster.root, BROKER, "config", "consumerOffset.json")
    try:
        with open(path, "rb") as f:
            table = fastjson.loads(f.read()).get("offsetTable", {})
    except FileNotFoundError:
        return {}
    return {int(q): int(o) for q, o in table.get(f"{topic}@{group}", {}).items()}


# -- tests -----------------------------------------------------------------------------------------

def test_sigterm_restart_resumes_exactly_at_the_committed_offset(cluster, tmp_path):
    topic, group = unique("E2E_restart_term"), unique("CG_restart")
    sent = run_trio(produce_and_consume_part, cluster, topic, group, CONSUMED)

    assert cluster.stop(BROKER, signal.SIGTERM) == 0
    run_trio(wait_route, cluster.namesrv_addr, topic, None, timeout=DEADLINE_S + 5)   # unregistered at shutdown
    assert offsets_on_disk(cluster, topic, group) == dict(enumerate(CONSUMED))      # persisted at shutdown

    port = cluster.broker_ports[BROKER]
    assert cluster.start_broker(BROKER) == port
    # "boot success" is printed once registered: routed again at once (and start_broker waited for
    # this run's line, not the first run's, which is still in the appended log)
    assert routed_addr(cluster.namesrv_addr, topic) == broker_addr(cluster)

    async def offsets_after_restart() -> tuple[list[int], list[int]]:
        async with RemotingClient() as client:
            addr = broker_addr(cluster)
            return await committed(client, addr, group, topic), await max_offsets(client, addr, topic)
    assert run_trio(offsets_after_restart) == (CONSUMED, [PER_QUEUE] * QUEUES)
    queues = check_store_after_restart(cluster, topic, group, sent, [])
    cpp_consumer_resumes(cluster, tmp_path, topic, group, queues, CONSUMED)


def test_sigkill_restart_loses_no_acknowledged_message_and_resumes_at_the_persisted_offset(cluster, tmp_path):
    topic, group = unique("E2E_restart_kill"), unique("CG_restart")
    addr = broker_addr(cluster)
    sent = run_trio(produce_and_consume_part, cluster, topic, group, CONSUMED_PERSISTED)
    deadline = time.monotonic() + OFFSET_PERSIST_WAIT_S
    while offsets_on_disk(cluster, topic, group) != dict(enumerate(CONSUMED_PERSISTED)):
        assert time.monotonic() < deadline, f"offsets not persisted: {offsets_on_disk(cluster, topic, group)}"
        time.sleep(0.1)

    acked_in_flight: list[Sent] = []       # acknowledged by a sender that keeps going until the kill
    unacked: list[Sent] = []               # its last send, cut off by the kill

    async def commit_then_kill_while_sending() -> None:
        async with RemotingClient() as client:
            async def keep_sending() -> None:
                for i in range(1_000_000):
                    q, key = i % QUEUES, f"{topic}-late-{i}"
                    try:
                        acked_in_flight.append(await send(client, addr, topic, q, key))
                    except (RemotingError, OSError, AssertionError):
                        # the kill: this one may or may not be stored; nothing after it can be
                        unacked.append(Sent(key, "TagR", f"body-{key}-é", q, -1, ""))
                        return
                    await trio.sleep(0.005)      # a few hundred messages, not thousands, for the consumer
            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_sending)
                await trio.sleep(0.3)
                await consume_and_commit(client, addr, topic, group, sent, CONSUMED_LAST)
                await trio.sleep(0.1)
                assert await trio.to_thread.run_sync(cluster.stop, BROKER, signal.SIGKILL) == -signal.SIGKILL
    run_trio(commit_then_kill_while_sending)
    assert acked_in_flight, "nothing was acknowledged while sending up to the kill"

    run_trio(wait_route, cluster.namesrv_addr, topic, None, timeout=DEADLINE_S + 5)   # connection closed
    assert cluster.start_broker(BROKER) == int(addr.rsplit(":", 1)[1])
    assert routed_addr(cluster.namesrv_addr, topic) == addr

    queues = check_store_after_restart(cluster, topic, group, sent + acked_in_flight, unacked)

    async def group_offsets() -> list[int]:
        async with RemotingClient() as client:
            return await committed(client, addr, group, topic)
    resume = run_trio(group_offsets)
    for q in range(QUEUES):   # the last persisted commit: at least what was on disk, at most the last commit
        assert resume[q] in (CONSUMED_PERSISTED[q], CONSUMED_LAST[q]), (q, resume)
    cpp_consumer_resumes(cluster, tmp_path, topic, group, queues, resume)
