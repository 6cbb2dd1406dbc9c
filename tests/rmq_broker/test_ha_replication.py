"""HA replication between running brokers (PROTOCOL.md §7): the stream, SYNC_MASTER, restarts, bad peers.

Real brokers on loopback (``embedded_cluster(slaves=1)``), small commitlog files so replication crosses
several file rolls. Waits are on conditions with deadlines.
"""
from __future__ import annotations

import os
import random
import struct

import trio
from broker_wire_support import props, run, wire

from rmq_common._record import encode_batch_body
from rmq_common.msgid import decode_offset_msg_id
from rmq_remoting import RequestCode, ResponseCode
from rmq_remoting import headers as h
from rmq_store import GetStatus
from rmq_testing.cluster import test_broker_config as broker_config

SMALL_LOG = {"mappedFileSizeCommitLog": 128 * 1024}
FAST_HA = {"haSendHeartbeatInterval": 100, "haHousekeepingInterval": 600}


async def wait_until(cond, timeout_s: float = 8.0, what: str = "condition") -> None:
    with trio.move_on_after(timeout_s):
        while not cond():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


def log_bytes(store) -> dict[str, bytes]:
    """Commitlog files that hold data, by name."""
    store.wait_ready()
    d = os.path.join(store.root, "commitlog")
    out = {}
    for name in sorted(os.listdir(d)):
        if int(name) < store.max_phy_offset:
            with open(os.path.join(d, name), "rb") as f:
                out[name] = f.read()
    return out


def assert_same_log(master, slave) -> None:
    m, s = log_bytes(master.store), log_bytes(slave.store)
    assert s and list(s) == list(m)[len(m) - len(s):]
    for name in s:
        assert s[name] == m[name], name


def queue_bytes(store, topic: str, qid: int, min_phy: int) -> list[bytes]:
    out, offset = [], store.min_offset(topic, qid)
    for _ in range(1000):
        res = store.get_messages(topic, qid, offset, 64)
        if res.status is not GetStatus.FOUND:
            break
        out.extend(bytes(r) for r in res.records() if int.from_bytes(r[28:36], "big") >= min_phy)
        res.release()
        offset = res.next_begin_offset
    return out


async def send_mixed(w, topic: str, rng: random.Random, count: int, addr: str | None = None) -> None:
    """``count`` sends: singles and batches of random sizes with keys, over 4 queues."""
    for i in range(count):
        q = i % 4
        if i % 5 == 0:
            bodies = [rng.randbytes(rng.randint(10, 3000)) for _ in range(4)]
            body = encode_batch_body(bodies, [props(KEYS=f"b{i}-{j}") for j in range(4)], [0] * 4)
            header = w.send_header(topic, queue_id=q, batch=True)
            resp = await w.call(RequestCode.SEND_BATCH_MESSAGE, header.to_v2().to_ext(), body, addr=addr)
        else:
            resp = await w.call(RequestCode.SEND_MESSAGE_V2, w.send_header(
                topic, queue_id=q, properties=props(KEYS=f"k{i} all", TAGS=f"t{i % 3}")).to_v2().to_ext(),
                rng.randbytes(rng.randint(10, 5000)), addr=addr)
        assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


def assert_same_reads(master, slave, topic: str) -> None:
    ms, ss = master.store, slave.store
    for q in range(4):
        assert ss.max_offset(topic, q) == ms.max_offset(topic, q)
        assert queue_bytes(ss, topic, q, ss.min_phy_offset) == queue_bytes(ms, topic, q, ss.min_phy_offset)
    want = [bytes(r) for r in ms.query_message(topic, "all", 1000).records
            if int.from_bytes(r[28:36], "big") >= ss.min_phy_offset]
    assert [bytes(r) for r in ss.query_message(topic, "all", 1000).records] == want and want


def synced(master, slave) -> bool:
    return slave.store.max_phy_offset == master.store.max_phy_offset


def test_slave_log_is_byte_identical_and_answers_like_the_master(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, slaves=1, broker_properties=SMALL_LOG) as w:
            master, slave = w.cluster.broker, w.cluster.slaves[0]
            assert slave.config.broker_id == 1 and not slave.is_master
            await wait_until(lambda: bool(master.ha.slaves), what="the slave to connect")
            await w.create_topic("HaT", 4)
            await send_mixed(w, "HaT", random.Random(1), 200)
            assert len(master.store.commitlog.files) >= 5
            await wait_until(lambda: synced(master, slave), what="the slave to catch up")
            assert slave.store.min_phy_offset == 0          # the slave was there from the first byte
            assert_same_log(master, slave)
            assert_same_reads(master, slave, "HaT")
            assert slave.ha.client.connected and slave.ha.client.master_addr == master.ha_addr
            await wait_until(lambda: master.ha.acked_offset == master.store.max_phy_offset, what="the ack")
            [conn] = master.ha.slaves
            assert conn.acked_offset == master.store.max_phy_offset

            # a slave refuses sends with SERVICE_NOT_AVAILABLE, as RocketMQ's store does for role SLAVE
            resp = await w.call(RequestCode.SEND_MESSAGE_V2, w.send_header("HaT").to_v2().to_ext(), b"x",
                                addr=slave.broker_addr)
            assert resp.code == ResponseCode.SERVICE_NOT_AVAILABLE, (resp.code, resp.remark)

            # runtime info shows the HA state
            resp = await w.call(RequestCode.GET_BROKER_RUNTIME_INFO)
            table = __import__("orjson").loads(resp.body)["table"]
            assert table["haConnections"] == "1" and table["slaveFallBehindMuch"] == "0"
    run(main, timeout=60)


def test_an_empty_slave_starts_at_the_masters_last_file(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=SMALL_LOG) as w:
            master = w.cluster.broker
            await w.create_topic("HaT", 4)
            await send_mixed(w, "HaT", random.Random(2), 150)
            last_file = master.store.commitlog.files[-1].file_from_offset
            assert last_file > 0
            config = broker_config(tmp_path / "late-slave", w.cluster.namesrv_addr, broker_id=1,
                                        haReconnectInterval=100, **SMALL_LOG)
            slave = await w.cluster.start_broker(config)
            await wait_until(lambda: synced(master, slave), what="the late slave to catch up")
            assert slave.store.min_phy_offset == last_file
            assert min(os.listdir(os.path.join(slave.store.root, "commitlog"))) == "%020d" % last_file
            await send_mixed(w, "HaT", random.Random(3), 60)
            await wait_until(lambda: synced(master, slave), what="the slave to follow")
            assert_same_log(master, slave)
            assert_same_reads(master, slave, "HaT")
            await w.cluster.stop_broker(slave)
    run(main, timeout=60)


def test_slave_restart_and_master_restart_catch_up_without_help(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, slaves=1, broker_properties=SMALL_LOG) as w:
            cluster = w.cluster
            master, slave = cluster.broker, cluster.slaves[0]
            await wait_until(lambda: bool(master.ha.slaves), what="the slave to connect")
            await w.create_topic("HaT", 4)
            rng = random.Random(4)
            await send_mixed(w, "HaT", rng, 40)
            await wait_until(lambda: synced(master, slave), what="the first sync")

            config = await cluster.stop_broker(slave)
            await send_mixed(w, "HaT", rng, 60)           # written while the slave is down
            slave = await cluster.start_broker(config)
            await wait_until(lambda: synced(master, slave), what="the restarted slave to catch up")
            assert slave.store.min_phy_offset == 0

            master = await cluster.restart_broker(master)  # same ports, same store
            await wait_until(lambda: bool(master.ha.slaves), what="the slave to reconnect")
            await send_mixed(w, "HaT", rng, 40)
            await wait_until(lambda: synced(master, slave), what="the slave to catch up after the master restart")
            assert slave.ha.client.connects >= 2          # this slave object: at start, after the master's restart
            assert_same_log(master, slave)
            assert_same_reads(master, slave, "HaT")
    run(main, timeout=60)


def test_sync_master_answers_only_once_the_slave_has_the_bytes(tmp_path) -> None:
    async def main() -> None:
        # with SYNC_FLUSH as well: both waits apply
        async with wire(tmp_path, slaves=1, broker_properties={"brokerRole": "SYNC_MASTER",
                                                               "flushDiskType": "SYNC_FLUSH"},
                        slave_properties={"flushDiskType": "ASYNC_FLUSH"}) as w:
            master, slave = w.cluster.broker, w.cluster.slaves[0]
            await w.create_topic("SyncT", 4)
            await wait_until(lambda: bool(master.ha.slaves) and master.ha.slaves[0].acked_offset >= 0,
                             what="the slave to connect")
            assert master.sync_flush and not slave.sync_flush
            seen: list[tuple[str, int, int]] = []

            async def one(i: int) -> None:
                if i % 3 == 0:
                    body = encode_batch_body([b"b%d" % i] * 5, [None] * 5, [0] * 5)
                    resp = await w.call(RequestCode.SEND_BATCH_MESSAGE,
                                        w.send_header("SyncT", queue_id=i % 4, batch=True).to_v2().to_ext(), body)
                else:
                    resp = await w.send("SyncT", b"m%d" % i, queue_id=i % 4)
                assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
                # at the moment the answer arrives the slave's log already holds the message's bytes
                last_id = h.SendMessageResponseHeader.decode(resp.ext_fields).msg_id.split(",")[-1]
                seen.append((last_id, slave.store.max_phy_offset, master.store.flushed_offset))

            async with trio.open_nursery() as nursery:
                for i in range(60):
                    nursery.start_soon(one, i)
            for msg_id, slave_max, flushed in seen:
                phy = decode_offset_msg_id(msg_id)[2]
                size = len(master.store.read_record(phy))
                assert slave_max >= phy + size and flushed >= phy + size
            assert master.ha.waiters.waiting == 0

            # WAIT=false does not wait for the slave (nor would it be refused without one)
            resp = await w.send("SyncT", b"nowait", properties=props(WAIT="false"))
            assert resp.code == ResponseCode.SUCCESS
    run(main, timeout=60)


def test_sync_master_without_slave_answers_slave_not_available(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"brokerRole": "SYNC_MASTER"}) as w:
            await w.create_topic("SyncT", 1)
            resp = await w.send("SyncT", b"lonely")
            assert resp.code == ResponseCode.SLAVE_NOT_AVAILABLE
            header = h.SendMessageResponseHeader.decode(resp.ext_fields)
            assert header.msg_id and header.queue_offset == 0     # stored all the same
            assert [r.body for r in await w.pull_records("SyncT", 0, 0)] == [b"lonely"]
    run(main)


def test_flush_slave_timeout_when_the_slave_stops_acknowledging(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"brokerRole": "SYNC_MASTER", "slaveTimeout": 300}) as w:
            master = w.cluster.broker
            await w.create_topic("SyncT", 1)
            # a "slave" that reports once and then neither reads nor acknowledges: stopped mid-stream
            stream = await trio.open_tcp_stream("127.0.0.1", master.ha.port)
            await stream.send_all(struct.pack(">q", master.store.max_phy_offset))
            await wait_until(lambda: bool(master.ha.slaves), what="the fake slave")
            start = trio.current_time()
            resp = await w.send("SyncT", b"unacked")
            elapsed = trio.current_time() - start
            assert resp.code == ResponseCode.FLUSH_SLAVE_TIMEOUT, (resp.code, resp.remark)
            assert 0.25 <= elapsed < 3.0
            assert h.SendMessageResponseHeader.decode(resp.ext_fields).msg_id
            assert master.ha.waiters.waiting == 0
            await stream.aclose()
            await wait_until(lambda: not master.ha.slaves, what="the master to drop the link")
            resp = await w.send("SyncT", b"alone now")
            assert resp.code == ResponseCode.SLAVE_NOT_AVAILABLE
    run(main)


def test_sync_master_with_a_real_slave_that_stops(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, slaves=1, broker_properties={"brokerRole": "SYNC_MASTER", "slaveTimeout": 500}) as w:
            cluster = w.cluster
            master = cluster.broker
            await w.create_topic("SyncT", 1)
            await wait_until(lambda: bool(master.ha.slaves), what="the slave")
            await w.send_ok("SyncT", b"replicated")
            await cluster.stop_broker(cluster.slaves[0])
            await wait_until(lambda: not master.ha.slaves, what="the master to see the slave go")
            with trio.fail_after(3):
                resp = await w.send("SyncT", b"no slave")
            assert resp.code == ResponseCode.SLAVE_NOT_AVAILABLE
    run(main)


def test_bad_peers_on_the_ha_port_lose_only_their_own_link(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, slaves=1, broker_properties=FAST_HA) as w:
            master, slave = w.cluster.broker, w.cluster.slaves[0]
            await w.create_topic("HaT", 1)
            await w.send_ok("HaT", b"first")
            await wait_until(lambda: synced(master, slave), what="the first sync")
            connects = slave.ha.client.connects

            async def closed_by_master(payload: bytes) -> None:
                stream = await trio.open_tcp_stream("127.0.0.1", master.ha.port)
                if payload:
                    await stream.send_all(payload)
                with trio.fail_after(3):
                    while await stream.receive_some(65536):
                        pass              # frames the master sent before it closed the link
                await stream.aclose()

            await closed_by_master(b"this is not an offset!!!")                   # garbage: a huge value
            await closed_by_master(struct.pack(">q", master.store.max_phy_offset + 1000))   # above the max
            await closed_by_master(struct.pack(">q", -5))                          # negative
            await closed_by_master(b"")            # silent peer: closed after haHousekeepingInterval
            # the real slave kept its link all along (heartbeats kept it alive while idle) and still replicates
            await w.send_ok("HaT", b"second")
            await wait_until(lambda: synced(master, slave), what="the slave after the bad peers")
            assert slave.ha.client.connects == connects and slave.ha.client.connected
            assert len(master.ha.slaves) == 1
    run(main, timeout=30)


def test_a_slave_drops_a_master_that_sends_the_wrong_offset(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=SMALL_LOG) as w:
            master = w.cluster.broker
            await w.create_topic("HaT", 1)
            await w.send_ok("HaT", b"one")
            # a fake master: the slave connects to it through haMasterAddress
            reports: list[int] = []
            got_report = trio.Event()

            async def fake_master(stream: trio.SocketStream) -> None:
                data = await stream.receive_some(8)
                reports.append(struct.unpack(">q", data[:8])[0])
                got_report.set()
                # a frame for offset 1000 to an empty slave whose log cannot start there
                await stream.send_all(struct.pack(">qi", 1000, 4) + b"abcd")
                with trio.move_on_after(3):
                    while await stream.receive_some(100):
                        pass

            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(trio.serve_tcp, fake_master, 0)
                port = listeners[0].socket.getsockname()[1]
                config = broker_config(tmp_path / "s", None, broker_id=1, haMasterAddress=f"127.0.0.1:{port}",
                                            haReconnectInterval=100)
                slave = await w.cluster.start_broker(config)
                await got_report.wait()
                await wait_until(lambda: slave.ha.client.last_error is not None
                                 and "refused" in slave.ha.client.last_error, what="the slave to drop the link")
                assert reports[0] == 0 and slave.store.max_phy_offset == 0
                await w.cluster.stop_broker(slave)
                nursery.cancel_scope.cancel()
            assert master.store.max_phy_offset > 0
    run(main)
