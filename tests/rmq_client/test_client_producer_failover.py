"""Routes, retries and failover of the trio Producer: a broker refusing writes, a dead broker, a topic that
appears later, a nameserver that goes away; heartbeats and UNREGISTER_CLIENT as the broker sees them."""
from __future__ import annotations

import pytest
from client_support import Raw, eventually, run

from rmq_client import (ClientInstance, NoRouteError, Producer, ProducerConfig, RemotingConnectError, SendStatus,
                        make_message)
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster

GROUP = "PG_client_failover"
NO_AUTO_CREATE = {"autoCreateTopicEnable": "false"}


async def topic_on_both(raw: Raw, topic: str, queues: int = 4) -> None:
    await raw.create_topic(topic, queues, broker="broker-a")
    await raw.create_topic(topic, queues, broker="broker-b")
    await raw.wait_route(topic, brokers=2)


def test_retriable_refusal_is_retried_on_the_other_broker(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, brokers=2) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr, send_latency_fault_enable=False) as producer:
            raw = Raw(cluster, rc)
            await topic_on_both(raw, "RetryT")
            assert {q.broker_name for q in await producer.publish_queues("RetryT")} == {"broker-a", "broker-b"}
            # broker-a stops taking writes (SERVICE_NOT_AVAILABLE, 14); the producer's route still lists it
            await raw.update_broker_config({"brokerPermission": "4"}, broker="broker-a")
            results = [await producer.send(make_message("RetryT", f"r{i}".encode())) for i in range(12)]
            assert all(r.status is SendStatus.SEND_OK for r in results)
            assert {r.message_queue.broker_name for r in results} == {"broker-b"}
            # round robin without fault avoidance comes back to broker-a's queues once per cycle through the
            # 8 queues (a retry moves the counter on to broker-b's first queue): 12 sends meet it at least twice
            assert producer.stats.retries >= 2 and producer.stats.failed == 0
            stored = await raw.topic_messages("RetryT", broker="broker-b")
            assert sorted(r.body for r in stored) == sorted(f"r{i}".encode() for i in range(12))
            assert await raw.topic_messages("RetryT", broker="broker-a") == []
    run(main)


def test_no_retry_without_retries_and_the_error_names_the_attempts(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, brokers=2) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr, send_latency_fault_enable=False,
                         retry_times_when_send_failed=0) as producer:
            raw = Raw(cluster, rc)
            await topic_on_both(raw, "NoRetryT")
            await producer.publish_queues("NoRetryT")
            await raw.update_broker_config({"brokerPermission": "4"}, broker="broker-a")
            failures = 0
            for _ in range(8):
                try:
                    await producer.send(make_message("NoRetryT", b"x"))
                except Exception as exc:         # BrokerError 14 from broker-a
                    failures += 1
                    assert getattr(exc, "code", None) == 14
                    assert any("1 attempt(s)" in note for note in exc.__notes__)
            assert failures >= 2 and producer.stats.retries == 0
    run(main)


def test_fault_avoidance_moves_traffic_away_from_a_dead_broker(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, brokers=2) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            await topic_on_both(raw, "DeadT")
            warm = [await producer.send(make_message("DeadT", b"warm")) for _ in range(8)]
            assert {r.message_queue.broker_name for r in warm} == {"broker-a", "broker-b"}
            # broker-a dies for its clients (listener and connections closed); the nameserver still routes it
            broker_a = next(b for b in cluster.brokers if b.config.broker_name == "broker-a")
            broker_a.server.close()
            results = [await producer.send(make_message("DeadT", f"d{i}".encode())) for i in range(20)]
            assert {r.message_queue.broker_name for r in results} == {"broker-b"}
            # one failed attempt marked broker-a unavailable (30 s of latency → 600 s); later sends avoid it
            assert producer.stats.retries <= 1 and producer.stats.failed == 0
            assert not producer.fault.tolerance.is_available("broker-a")
            assert producer.fault.tolerance.is_available("broker-b")
            _latency, wait_ms = producer.fault.tolerance.snapshot()["broker-a"]
            assert wait_ms > 500_000
    run(main)


def test_every_broker_dead_raises_the_connect_error_after_all_attempts(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, Producer(GROUP, cluster.namesrv_addr) as producer:
            await producer.send(make_message("AllDeadT", b"warm"))
            cluster.broker.server.close()
            with pytest.raises(RemotingConnectError) as err:
                await producer.send(make_message("AllDeadT", b"x"))
            assert any("3 attempt(s)" in note for note in err.value.__notes__)
            assert producer.stats.retries == 2
    run(main)


def test_a_topic_created_later_is_found_and_refreshed_routes_add_brokers(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, brokers=2, broker_properties=NO_AUTO_CREATE) as cluster, \
                RemotingClient() as rc, Producer(GROUP, cluster.namesrv_addr,
                                                 poll_name_server_interval_ms=100) as producer:
            raw = Raw(cluster, rc)
            with pytest.raises(NoRouteError):
                await producer.send(make_message("LaterT", b"x"))
            await raw.create_topic("LaterT", 2, broker="broker-a")
            await raw.wait_route("LaterT")
            r = await producer.send(make_message("LaterT", b"now"))             # the route is fetched again
            assert r.message_queue.broker_name == "broker-a"
            assert len(await producer.publish_queues("LaterT")) == 2
            # the topic appears on broker-b too: the periodic refresh picks it up
            await raw.create_topic("LaterT", 3, broker="broker-b")
            await raw.wait_route("LaterT", brokers=2)
            info = producer.instance.publish_info
            await eventually(lambda: len(info("LaterT").queues) == 5, what="broker-b's queues in the route")
            sent = [await producer.send(make_message("LaterT", b"y")) for _ in range(10)]
            assert {s.message_queue.broker_name for s in sent} == {"broker-a", "broker-b"}
    run(main)


def test_nameserver_failover(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, nameservers=2) as cluster, RemotingClient() as rc, \
                Producer(GROUP, cluster.namesrv_addr) as producer:
            raw = Raw(cluster, rc)
            await producer.send(make_message("NsT1", b"x"))
            first = producer.instance.current_namesrv
            assert first in producer.instance.namesrv_addrs
            # sticky: further route fetches use the same nameserver
            await producer.send(make_message("NsT2", b"x"))
            assert producer.instance.current_namesrv == first
            next(ns for ns in cluster.nameservers if ns.addr == first).close()
            await raw.create_topic("NsT3", 2)
            other = next(ns for ns in cluster.nameservers if ns.addr != first)
            await raw.wait_route("NsT3", namesrv=other.addr)
            r = await producer.send(make_message("NsT3", b"after failover"))
            assert r.status is SendStatus.SEND_OK
            assert producer.instance.current_namesrv == other.addr
    run(main)


def test_heartbeat_registers_the_group_and_shutdown_unregisters_it(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster:
            broker = cluster.broker
            async with Producer(GROUP, cluster.namesrv_addr) as producer:
                assert producer.instance.client_id.startswith(producer.instance.client_id.split("@")[0] + "@")
                await producer.send(make_message("HbT", b"x"))
                await eventually(lambda: broker.producers.available_channel(GROUP) is not None,
                                 what="producer group registered by the first heartbeat")
                conn = broker.producers.available_channel(GROUP)
            await eventually(lambda: broker.producers.available_channel(GROUP) is None,
                             what="producer group unregistered")
            assert conn.closed or broker.producers.available_channel(GROUP) is None
    run(main)


def test_two_producers_of_one_process_have_their_own_client_ids(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, \
                Producer("PG_one", cluster.namesrv_addr) as one, Producer("PG_two", cluster.namesrv_addr) as two:
            assert one.instance is not two.instance
            assert one.instance.client_id != two.instance.client_id
            await one.send(make_message("TwoT", b"1"))
            await two.send(make_message("TwoT", b"2"))
            # a shared instance: two groups, one client id, one connection per broker
            async with ClientInstance(ProducerConfig(namesrv_addr=cluster.namesrv_addr)) as shared, \
                    Producer("PG_a", instance=shared) as pa, Producer("PG_b", instance=shared) as pb:
                await pa.send(make_message("TwoT", b"a"))
                await pb.send(make_message("TwoT", b"b"))
                assert pa.instance is pb.instance is shared
                assert shared.heartbeat_data()["producerDataSet"] == [{"groupName": "PG_a"}, {"groupName": "PG_b"}]
                with pytest.raises(Exception, match="created before"):
                    async with Producer("PG_a", instance=shared):
                        pass
    run(main)
