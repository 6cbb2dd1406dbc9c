"""ProcessCluster with several nameservers and master + slave groups as real child processes.

One module-wide layout (2 nameservers, 2 groups of master + slave) keeps the start-up cost to one; the tests
kill and restart members of it and check what the nameservers list, so they run in file order.
"""
from __future__ import annotations

import signal
import socket

import pytest

from rmq_testing.processes import ProcessCluster, free_broker_port


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    procs = ProcessCluster(str(tmp_path_factory.mktemp("process-cluster")))
    try:
        procs.start_nameservers(2)
        procs.start_group("broker-a", role="SYNC_MASTER", slaves=1, slave_properties={"slaveReadEnable": "true"})
        procs.start_group("broker-b", role="ASYNC_MASTER", slaves=1)
        procs.wait_registered()
        yield procs
    finally:
        procs.close()
    assert not procs.procs, "close() ends every process"


def test_layout_registers_every_member_with_every_nameserver(cluster: ProcessCluster) -> None:
    assert list(cluster.namesrv_ports) == ["namesrv", "namesrv-1"]
    assert cluster.namesrv_addr.count(";") == 1
    for ns in cluster.namesrv_ports:
        table = cluster.cluster_info(ns)
        assert table["broker-a"] == {0: cluster.broker_addr("broker-a"), 1: cluster.broker_addr("broker-a-s1")}
        assert table["broker-b"] == {0: cluster.broker_addr("broker-b"), 1: cluster.broker_addr("broker-b-s1")}
    roles = {name: cluster.broker_config(name) for name in cluster.brokers}
    assert roles["broker-a"]["brokerRole"] == "SYNC_MASTER"
    assert roles["broker-b"]["brokerRole"] == "ASYNC_MASTER"
    assert roles["broker-a-s1"]["brokerRole"] == roles["broker-b-s1"]["brokerRole"] == "SLAVE"
    assert roles["broker-a-s1"]["brokerId"] == "1" and roles["broker-a-s1"]["slaveReadEnable"] == "true"
    assert roles["broker-a-s1"]["brokerName"] == "broker-a"
    ports = [p + offset for spec in cluster.brokers.values() for p in [spec.port] for offset in (-2, 0, 1)]
    assert len(set(ports)) == len(ports), "no two brokers share a VIP, main or HA port"
    assert cluster.ha_addr("broker-a") == f"127.0.0.1:{cluster.broker_ports['broker-a'] + 1}"


def test_kill_and_restart_a_slave_keeps_its_port_and_store(cluster: ProcessCluster) -> None:
    port = cluster.broker_ports["broker-b-s1"]
    assert cluster.kill("broker-b-s1") == -signal.SIGKILL
    assert not cluster.is_running("broker-b-s1")
    assert cluster.restart("broker-b-s1") == f"127.0.0.1:{port}"
    assert cluster.broker_config("broker-b-s1")["brokerRole"] == "SLAVE"      # its settings came back too
    cluster.wait_registered(["broker-b-s1"])


def test_sigterm_unregisters_and_restart_registers_again(cluster: ProcessCluster) -> None:
    assert cluster.terminate("broker-a-s1") == 0
    cluster.wait_unregistered("broker-a-s1", timeout_s=10)
    assert cluster.cluster_info("namesrv-1")["broker-a"] == {0: cluster.broker_addr("broker-a")}
    cluster.restart("broker-a-s1")
    cluster.wait_registered(["broker-a-s1"])


def test_a_nameserver_restarts_on_its_port_and_brokers_register_again(cluster: ProcessCluster) -> None:
    addr = cluster.namesrv_addr_of("namesrv-1")
    cluster.kill("namesrv-1")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.namesrv_ports["namesrv-1"]), timeout=1).close()
    assert cluster.restart("namesrv-1") == addr
    # A fresh nameserver knows nobody until the brokers' next periodic registration (every 10-60 s): that
    # wait belongs to the HA tests; here the other nameserver kept every broker meanwhile.
    cluster.wait_registered(nameservers=["namesrv"], timeout_s=5)


def test_bad_start_fails_fast_with_the_log(tmp_path) -> None:
    with ProcessCluster(str(tmp_path)) as procs:
        procs.start_nameserver()
        with pytest.raises(RuntimeError, match="brokerRole"):
            procs.start_broker("broken", properties={"brokerRole": "LEADER"})
        assert not procs.is_running("broken")


def test_free_broker_port_avoids_reserved_ports() -> None:
    first = free_broker_port()
    second = free_broker_port(avoid={first - 2, first, first + 1})
    assert {second - 2, second, second + 1}.isdisjoint({first - 2, first, first + 1})
