"""The real C++ client (PyPI ``rocketmq`` 0.4.4) follows a master's suggestion to read from its slave.

A group of ``rmq broker`` processes: an ASYNC_MASTER with ``slaveReadEnable`` and a tiny in-memory window (40 % of
``rmqTotalPhysicalMemoryBytes`` = 10,000 bytes, so a few dozen messages are "on disk"), and its slave, which gets
the messages by HA replication and the topic by its metadata sync. A C++ push consumer that starts at the
beginning of a long queue is told by the master to go to broker id 1 (PROTOCOL.md §5.6); the slave serving pulls
(its ``msgGetTotalTodayNow`` in GET_BROKER_RUNTIME_INFO) shows the client followed, and it gets every message
exactly once.
"""
from __future__ import annotations

import time

import rocketmq.client  # noqa: F401 - the real client (pyproject dev extras); fail early when it is missing
from e2e_support import call, run_trio, start_consumer, unique

from rmq_client import Admin, Producer, make_message
from rmq_remoting import RemotingClient, RequestCode, ResponseCode, fastjson
from rmq_testing import ProcessCluster

MESSAGES = 300
DEADLINE_S = 45.0
WINDOW = {"slaveReadEnable": "true", "rmqTotalPhysicalMemoryBytes": "10000", "accessMessageInMemoryMaxRatio": "40"}


async def runtime_info(addr: str) -> dict:
    async with RemotingClient() as client:
        resp = await call(client, addr, RequestCode.GET_BROKER_RUNTIME_INFO)
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return fastjson.loads(bytes(resp.body))["table"]


async def slave_ready(slave: str, master: str, topic: str) -> bool:
    """The slave knows the topic (metadata sync) and has the master's whole commitlog (replication)."""
    async with RemotingClient() as client:
        topics = await call(client, slave, RequestCode.GET_ALL_TOPIC_CONFIG)
        if topics.code != ResponseCode.SUCCESS or topic not in fastjson.loads(bytes(topics.body))["topicConfigTable"]:
            return False
    slave_info, master_info = await runtime_info(slave), await runtime_info(master)
    return slave_info["commitLogMaxOffset"] == master_info["commitLogMaxOffset"]


async def fill(namesrv: str, topic: str) -> list[str]:
    async with Admin(namesrv) as admin:
        await admin.create_topic(topic, 1, broker_names=["broker-a"])
    keys = [f"k{i}" for i in range(MESSAGES)]
    async with Producer("PG_cpp_slave_read", namesrv) as producer:
        for start in range(0, MESSAGES, 50):
            batch = [make_message(topic, b"x" * 100 + k.encode(), keys=[k]) for k in keys[start:start + 50]]
            result = await producer.send_batch(batch)
            assert result.status.name == "SEND_OK", result
    return keys


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout_s:g} s: {what}"
        time.sleep(0.2)


def test_cpp_push_consumer_reads_from_the_slave_when_the_master_says_so(tmp_path) -> None:
    with ProcessCluster(str(tmp_path)) as cluster:
        cluster.start_nameservers(1)
        cluster.start_group("broker-a", role="ASYNC_MASTER", slaves=1, master_properties=WINDOW)
        cluster.wait_registered()
        namesrv = cluster.namesrv_addr
        master, slave = cluster.broker_addr("broker-a"), cluster.broker_addr("broker-a-s1")
        topic = unique("CppSlaveRead")
        keys = run_trio(fill, namesrv, topic)
        wait_until(lambda: run_trio(slave_ready, slave, master, topic), DEADLINE_S,
                   "the slave has the topic and every byte")
        served_before = int(run_trio(runtime_info, slave)["msgGetTotalTodayNow"])

        consumer = start_consumer(tmp_path, "cpp-push", "push", namesrv, topic, unique("CG_cpp_slave"))
        try:
            consumer.wait_for(lambda evs: {e.get("key") for e in evs if e["event"] == "msg"} >= set(keys),
                              DEADLINE_S, f"all {MESSAGES} messages")
        finally:
            consumer.stop()
        received = [e["key"] for e in consumer.events if e["event"] == "msg"]
        assert sorted(received) == sorted(keys), "every message exactly once"
        served_by_slave = int(run_trio(runtime_info, slave)["msgGetTotalTodayNow"]) - served_before
        assert served_by_slave > 0, "the C++ consumer never pulled from the slave"
