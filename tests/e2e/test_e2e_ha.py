"""HA under faults, with every broker and nameserver a separate process (ProcessCluster) and rmq_client as client.

* kill -9 a SYNC_MASTER during a stream of sync sends: every acknowledged message is on its slave, byte for byte
  (the commitlog files compared up to the end of the last acknowledged record); a consumer reads all of them from
  the slave while the master is down; after the master restarts nothing acknowledged is missing from it and the
  same consumer continues with what is sent next;
* kill -9 the slave during SYNC_MASTER sends: sends answer SLAVE_NOT_AVAILABLE / FLUSH_SLAVE_TIMEOUT within the
  slave timeout instead of hanging; the restarted slave catches up (identical commitlog);
* kill one nameserver mid-traffic: producer, consumer and brokers carry on through the other;
* a slave replicating through a FaultProxy: throttled, it lags and then catches up; a cut connection is
  re-established and replication resumes.

Every wait has a deadline; clients poll nameservers every second so a route change is seen quickly.
"""
from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from rmq_client import Admin, LitePullConsumer, Producer, make_message
from rmq_testing import Direction, ProcessCluster, ThreadedFaultProxy

TOPIC_QUEUES = 2
#: Client settings for fast reaction to route changes (the defaults are 30 s).
FAST = {"poll_name_server_interval_ms": 1_000, "heartbeat_interval_ms": 1_000}
#: Test broker settings: replication and registration timers short enough for a test.
HA_PROPS = {"slaveTimeout": "1500", "haSendHeartbeatInterval": "1000", "haHousekeepingInterval": "5000"}


def run_trio(fn: Callable[..., Any], *args: Any, timeout_s: float = 60) -> Any:
    async def bounded() -> Any:
        with trio.fail_after(timeout_s):
            return await fn(*args)
    return trio.run(bounded)


def phys_offset(offset_msg_id: str) -> int:
    """The commitlog offset in an offset message id (IPv4: 4 bytes ip, 4 port, 8 offset, as hex)."""
    assert len(offset_msg_id) == 32, offset_msg_id
    return int(offset_msg_id[16:], 16)


def read_commitlog(store: str | os.PathLike[str], end: int) -> bytes:
    """Bytes [0, end) of the commitlog of the store at ``store`` (its files are named by their first offset)."""
    folder = Path(store) / "commitlog"
    files = sorted(folder.iterdir(), key=lambda p: int(p.name))
    out = bytearray()
    for path in files:
        start = int(path.name)
        if start >= end:
            break
        with open(path, "rb") as f:
            out += f.read(end - start)
    return bytes(out[:end])


def record_end(store: str, offset_msg_id: str) -> int:
    """Where the record of ``offset_msg_id`` ends in ``store``'s commitlog (its first 4 bytes are its size)."""
    start = phys_offset(offset_msg_id)
    (size,) = struct.unpack(">i", read_commitlog(store, start + 4)[start:start + 4])
    assert size > 0
    return start + size


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.1)


def same_commitlog(cluster: ProcessCluster, master: str, slave: str, end: int) -> bool:
    a = read_commitlog(os.path.join(cluster.root, master), end)
    return len(a) == end and a == read_commitlog(os.path.join(cluster.root, slave), end)


async def create_topic(namesrv: str, topic: str, broker_names: list[str]) -> None:
    async with Admin(namesrv) as admin:
        await admin.create_topic(topic, TOPIC_QUEUES, broker_names=broker_names)


async def send_until_ok(namesrv: str, topic: str, timeout_s: float) -> Any:
    """One send, repeated until SEND_OK (a SYNC_MASTER's slave has connected)."""
    async with Producer("PG_ha_probe", namesrv, retry_times_when_send_failed=0, **FAST) as producer:
        deadline = trio.current_time() + timeout_s
        while True:
            try:
                result = await producer.send(make_message(topic, b"probe"))
                if result.status.name == "SEND_OK":
                    return result
            except Exception:       # a route not there yet, a broker still starting
                pass
            if trio.current_time() > deadline:
                raise AssertionError(f"no SEND_OK on {topic} within {timeout_s:g} s")
            await trio.sleep(0.2)


def start_layout(cluster: ProcessCluster, *, nameservers: int, groups: dict[str, str],
                 slave_properties: dict[str, Any] | None = None) -> None:
    cluster.start_nameservers(nameservers)
    for name, role in groups.items():
        cluster.start_group(name, role=role, slaves=1, properties=HA_PROPS,
                            master_properties={"slaveReadEnable": "true"}, slave_properties=slave_properties)
    cluster.wait_registered()


# -- kill -9 a SYNC_MASTER --------------------------------------------------------------------------------------


def test_kill9_sync_master_loses_nothing_acknowledged(tmp_path: Path) -> None:
    with ProcessCluster(str(tmp_path)) as cluster:
        start_layout(cluster, nameservers=2, groups={"broker-a": "SYNC_MASTER", "broker-b": "ASYNC_MASTER"})
        ns, topic = cluster.namesrv_addr, "HA_kill_master"
        run_trio(create_topic, ns, topic, ["broker-a"])
        run_trio(send_until_ok, ns, topic, 30)
        acked: list[tuple[bytes, Any]] = []
        got: dict[str, bytes] = {}
        master_store = os.path.join(cluster.root, "broker-a")

        async def scenario() -> None:
            killed = trio.Event()
            async with LitePullConsumer("CG_ha_kill", ns, **FAST) as lite, trio.open_nursery() as nursery:
                lite.subscribe(topic, "*")

                async def consume() -> None:           # running before, during and after the kill
                    while True:
                        for msg in await lite.poll(timeout_ms=500):
                            got[msg.msg_id] = bytes(msg.body)
                nursery.start_soon(consume)

                async with Producer("PG_ha_kill", ns, retry_times_when_send_failed=0, send_timeout_ms=2_000,
                                    **FAST) as producer:
                    async def killer() -> None:
                        while len(acked) < 150:
                            await trio.sleep(0.01)
                        await trio.to_thread.run_sync(cluster.kill, "broker-a")
                        killed.set()
                    nursery.start_soon(killer)
                    for i in range(100_000):
                        body = f"m-{i}".encode() * 8
                        try:
                            result = await producer.send(make_message(topic, body))
                        except Exception:
                            if killed.is_set():
                                break
                            continue
                        assert result.status.name == "SEND_OK", result.status   # the slave is connected throughout
                        acked.append((body, result))
                        if killed.is_set():
                            break       # acknowledged while the kill happened: counts as acknowledged
                assert len(acked) >= 150
                end = max(record_end(master_store, r.offset_msg_id) for _, r in acked)
                # kill -9 keeps the page cache, so the master's files hold what it wrote: the slave must equal them.
                assert same_commitlog(cluster, "broker-a", "broker-a-s1", end), "slave's commitlog differs"
                want = {r.msg_id: body for body, r in acked}
                with trio.fail_after(40):
                    while not want.keys() <= got.keys():          # from the slave: the master is dead
                        await trio.sleep(0.1)
                assert all(got[k] == v for k, v in want.items())
                await trio.to_thread.run_sync(cluster.restart, "broker-a")
                await trio.to_thread.run_sync(cluster.wait_registered, ["broker-a"])
                after = await send_until_ok(ns, topic, 30)        # the slave reconnected to the restarted master
                with trio.fail_after(40):
                    while after.msg_id not in got:                # the same consumer continues on the master
                        await trio.sleep(0.1)
                assert same_commitlog(cluster, "broker-a", "broker-a-s1", end), "acknowledged messages changed"
                nursery.cancel_scope.cancel()

        run_trio(scenario, timeout_s=150)


# -- kill -9 the slave of a SYNC_MASTER -------------------------------------------------------------------------


def test_kill9_slave_gives_slave_codes_then_catches_up(tmp_path: Path) -> None:
    with ProcessCluster(str(tmp_path)) as cluster:
        start_layout(cluster, nameservers=1, groups={"broker-a": "SYNC_MASTER"})
        ns, topic = cluster.namesrv_addr, "HA_kill_slave"
        run_trio(create_topic, ns, topic, ["broker-a"])
        run_trio(send_until_ok, ns, topic, 30)
        cluster.kill("broker-a-s1")

        async def sends_without_slave() -> list[tuple[str, float]]:
            out = []
            async with Producer("PG_ha_slave", ns, retry_times_when_send_failed=0, send_timeout_ms=10_000,
                                **FAST) as producer:
                for i in range(5):
                    started = trio.current_time()
                    result = await producer.send(make_message(topic, f"no-slave-{i}".encode()))
                    out.append((result.status.name, trio.current_time() - started))
            return out

        statuses = run_trio(sends_without_slave)
        assert {s for s, _ in statuses} <= {"SLAVE_NOT_AVAILABLE", "FLUSH_SLAVE_TIMEOUT"}, statuses
        # Within the slave timeout (1.5 s) plus slack for a loaded machine, never the 10 s send timeout.
        assert max(t for _, t in statuses) < 6.0, statuses
        cluster.restart("broker-a-s1")
        last = run_trio(send_until_ok, ns, topic, 40)
        end = record_end(os.path.join(cluster.root, "broker-a"), last.offset_msg_id)
        wait_for(lambda: same_commitlog(cluster, "broker-a", "broker-a-s1", end), 20, "slave caught up")


# -- kill a nameserver -------------------------------------------------------------------------------------------


def test_kill_one_nameserver_mid_traffic(tmp_path: Path) -> None:
    with ProcessCluster(str(tmp_path)) as cluster:
        start_layout(cluster, nameservers=2, groups={"broker-a": "ASYNC_MASTER", "broker-b": "ASYNC_MASTER"})
        ns, topic = cluster.namesrv_addr, "HA_kill_namesrv"
        run_trio(create_topic, ns, topic, ["broker-a", "broker-b"])
        sent: dict[str, bytes] = {}
        got: dict[str, bytes] = {}

        async def traffic() -> None:
            async with Producer("PG_ha_ns", ns, **FAST) as producer, \
                    LitePullConsumer("CG_ha_ns", ns, **FAST) as lite:
                lite.subscribe(topic, "*")

                async def send(n: int, tag: str) -> None:
                    for i in range(n):
                        body = f"{tag}-{i}".encode()
                        result = await producer.send(make_message(topic, body))
                        assert result.status.name == "SEND_OK"
                        sent[result.msg_id] = body

                await send(50, "before")
                await trio.to_thread.run_sync(cluster.kill, "namesrv")
                await send(50, "after")
                # A client started now, with the dead nameserver first in its list, still finds its way.
                async with Producer("PG_ha_ns_new", ns, **FAST) as late:
                    result = await late.send(make_message(topic, b"late-client"))
                    assert result.status.name == "SEND_OK"
                    sent[result.msg_id] = b"late-client"
                with trio.fail_after(40):
                    while not sent.keys() <= got.keys():
                        for msg in await lite.poll(timeout_ms=500):
                            got[msg.msg_id] = bytes(msg.body)

        run_trio(traffic, timeout_s=90)
        assert all(got[k] == v for k, v in sent.items())
        table = cluster.cluster_info("namesrv-1")        # the survivor still lists every member
        assert table["broker-a"].keys() == {0, 1} and table["broker-b"].keys() == {0, 1}


# -- a lagging slave behind a fault-injecting proxy ---------------------------------------------------------------


def test_throttled_slave_catches_up_and_cut_connection_reestablishes(tmp_path: Path) -> None:
    with ProcessCluster(str(tmp_path)) as cluster:
        cluster.start_nameservers(1)
        cluster.start_broker("broker-a", broker_name="broker-a", properties={**HA_PROPS, "brokerRole": "ASYNC_MASTER"})
        with ThreadedFaultProxy(cluster.ha_addr("broker-a")) as proxy:
            cluster.start_broker("broker-a-s1", broker_name="broker-a", broker_id=1,
                                 properties={**HA_PROPS, "brokerRole": "SLAVE", "haMasterAddress": proxy.address})
            cluster.wait_registered()
            ns, topic = cluster.namesrv_addr, "HA_lag"
            run_trio(create_topic, ns, topic, ["broker-a"])
            proxy.wait_until(lambda s: s.active_connections == 1, 20)
            proxy.throttle(100_000, Direction.TO_CLIENT)           # master -> slave at 100 kB/s

            async def produce(n: int, size: int) -> Any:
                async with Producer("PG_ha_lag", ns, **FAST) as producer:
                    last = None
                    for i in range(0, n, 32):
                        msgs = [make_message(topic, bytes([i % 251]) * size) for _ in range(min(32, n - i))]
                        last = await producer.send_batch(msgs)
                        assert last.status.name == "SEND_OK"
                    return last

            last = run_trio(produce, 600, 1024)                    # ~650 kB: seconds of transfer at 100 kB/s
            master_store = os.path.join(cluster.root, "broker-a")
            end = record_end(master_store, last.offset_msg_id.split(",")[-1])
            lagging = proxy.stats().to_client.bytes_forwarded
            assert lagging < end, "the throttled slave should still be behind right after the burst"
            proxy.throttle(None)
            wait_for(lambda: same_commitlog(cluster, "broker-a", "broker-a-s1", end), 30, "slave caught up")

            accepted = proxy.stats().connections_accepted
            assert proxy.cut() == 1
            proxy.wait_until(lambda s: s.connections_accepted > accepted and s.active_connections == 1, 30)
            last = run_trio(produce, 64, 256)
            end = record_end(master_store, last.offset_msg_id.split(",")[-1])
            wait_for(lambda: same_commitlog(cluster, "broker-a", "broker-a-s1", end), 30,
                     "slave replicates again over the new connection")
