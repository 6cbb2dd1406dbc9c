"""RouteInfoManager alone: registration rules, routes, liveness with an injected clock, cascades, admin ops."""
from __future__ import annotations

import pytest

from rmq_nameserver import DataVersion, RegisterBrokerBody, RouteInfoManager, TopicConfig
from rmq_nameserver.bodies import PERM_INHERIT, PERM_READ, PERM_WRITE, TOPIC_SYS_FLAG_UNIT, TOPIC_SYS_FLAG_UNIT_SUB

MASTER_A = "10.0.0.1:10911"
SLAVE_A = "10.0.0.2:10911"
MASTER_B = "10.0.0.3:10911"
EXPIRY_MS = 120_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = 1_000

    def __call__(self) -> int:
        return self.now_ms


def body(*topics: str, counter: int = 1, queues: int = 4, perm: int = 6, sys_flag: int = 0,
         filters: tuple[str, ...] = ()) -> RegisterBrokerBody:
    return RegisterBrokerBody(DataVersion(counter, 1_700_000_000_000),
                              {t: TopicConfig(t, queues, queues, perm, topic_sys_flag=sys_flag) for t in topics},
                              list(filters))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def routes(clock: Clock) -> RouteInfoManager:
    return RouteInfoManager(clock_ms=clock, expired_time_ms=lambda: EXPIRY_MS)


def register_group_a(routes: RouteInfoManager, *topics: str, channel: object = None) -> None:
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "10.0.0.1:10912", body(*topics), channel)
    routes.register_broker("C1", SLAVE_A, "broker-a", 1, "10.0.0.2:10912", body(*topics), channel)


def test_master_and_slave_register_into_one_broker_group(routes):
    first = routes.register_broker("C1", MASTER_A, "broker-a", 0, "10.0.0.1:10912", body("T"))
    slave = routes.register_broker("C1", SLAVE_A, "broker-a", 1, "10.0.0.2:10912", body("T"))
    assert first.master_addr is None and first.ha_server_addr is None          # masters learn nothing
    assert slave.master_addr == MASTER_A and slave.ha_server_addr == "10.0.0.1:10912"
    route = routes.pickup_topic_route_data("T")
    assert [(b.broker_name, b.cluster, b.broker_addrs) for b in route.broker_datas] == [
        ("broker-a", "C1", {0: MASTER_A, 1: SLAVE_A})]
    assert [(q.broker_name, q.read_queue_nums, q.write_queue_nums, q.perm) for q in route.queue_datas] == [
        ("broker-a", 4, 4, 6)]


def test_slave_of_a_dead_or_unknown_master_gets_no_master_address(routes, clock):
    result = routes.register_broker("C1", SLAVE_A, "broker-a", 1, "10.0.0.2:10912", body("T"))
    assert result.master_addr is None
    # topic data only ever comes from the master
    assert routes.pickup_topic_route_data("T") is None
    assert "T" not in routes.topic_queue_table


def test_routes_span_broker_groups_and_are_copies(routes):
    register_group_a(routes, "T", "OnlyA")
    routes.register_broker("C1", MASTER_B, "broker-b", 0, "10.0.0.3:10912", body("T"))
    route = routes.pickup_topic_route_data("T")
    assert [b.broker_name for b in route.broker_datas] == ["broker-a", "broker-b"]
    assert [q.broker_name for q in route.queue_datas] == ["broker-a", "broker-b"]
    route.broker_datas[0].broker_addrs.clear()
    route.queue_datas[0].perm = 0
    again = routes.pickup_topic_route_data("T")
    assert again.broker_datas[0].broker_addrs == {0: MASTER_A, 1: SLAVE_A} and again.queue_datas[0].perm == 6
    assert [b.broker_name for b in routes.pickup_topic_route_data("OnlyA").broker_datas] == ["broker-a"]
    assert routes.pickup_topic_route_data("Nope") is None


def test_topic_data_changes_only_with_a_new_data_version(routes):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", counter=1, queues=4))
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", "U", counter=1, queues=8))
    assert routes.pickup_topic_route_data("T").queue_datas[0].read_queue_nums == 4      # same version: ignored
    assert routes.pickup_topic_route_data("U") is None
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", "U", counter=2, queues=8))
    assert routes.pickup_topic_route_data("T").queue_datas[0].read_queue_nums == 8
    assert routes.pickup_topic_route_data("U") is not None


def test_same_address_under_a_new_broker_id_replaces_the_old_entry(routes):
    register_group_a(routes, "T")
    # the master dies and the slave is promoted: it registers as id 0 from its own address
    routes.register_broker("C1", SLAVE_A, "broker-a", 0, "10.0.0.2:10912", body("T", counter=5))
    assert routes.broker_addr_table["broker-a"].broker_addrs == {0: SLAVE_A}


def test_filter_servers_are_routed_and_cleared(routes):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", filters=("10.0.0.1:30000",)))
    assert routes.pickup_topic_route_data("T").filter_server_table == {MASTER_A: ["10.0.0.1:30000"]}
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T"))
    assert routes.pickup_topic_route_data("T").filter_server_table == {}


def test_expiry_after_120_s_cascades_to_topics_and_clusters(routes, clock):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", "Shared"), channel="conn-a")
    clock.now_ms += 60_000
    routes.register_broker("C2", MASTER_B, "broker-b", 0, "h", body("Shared"), channel="conn-b")
    clock.now_ms += EXPIRY_MS          # broker-a silent for exactly 180 s, broker-b for exactly 120 s
    expired = routes.scan_not_active_broker()
    assert [(e.broker_addr, e.channel, e.silent_for_ms) for e in expired] == [(MASTER_A, "conn-a", 180_000)]
    assert routes.pickup_topic_route_data("T") is None
    assert "T" not in routes.topic_queue_table
    assert [q.broker_name for q in routes.pickup_topic_route_data("Shared").queue_datas] == ["broker-b"]
    assert "broker-a" not in routes.broker_addr_table and "C1" not in routes.cluster_addr_table
    assert routes.get_all_cluster_info().cluster_addr_table == {"C2": ["broker-b"]}
    clock.now_ms += 1                   # strictly older than the expiry time
    assert [e.broker_addr for e in routes.scan_not_active_broker()] == [MASTER_B]
    assert routes.topic_queue_table == {} and routes.broker_addr_table == {} and routes.cluster_addr_table == {}
    assert routes.broker_live_table == {} and routes.filter_server_table == {}


def test_registration_refreshes_liveness(routes, clock):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T"))
    for _ in range(5):
        clock.now_ms += 100_000
        routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T"))
        assert routes.scan_not_active_broker() == []
    assert routes.pickup_topic_route_data("T") is not None


def test_dead_master_leaves_its_slave_in_the_routes(routes, clock):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "10.0.0.1:10912", body("T"))
    clock.now_ms += 100_000
    routes.register_broker("C1", SLAVE_A, "broker-a", 1, "10.0.0.2:10912", body("T"))
    clock.now_ms += 30_000
    assert [e.broker_addr for e in routes.scan_not_active_broker()] == [MASTER_A]
    route = routes.pickup_topic_route_data("T")
    assert route is not None and route.broker_datas[0].broker_addrs == {1: SLAVE_A}
    assert [q.broker_name for q in route.queue_datas] == ["broker-a"]
    # the slave's next registration no longer names a master
    assert routes.register_broker("C1", SLAVE_A, "broker-a", 1, "h", body("T")).master_addr is None


def test_channel_destroy_drops_every_broker_of_that_connection(routes):
    conn = object()
    register_group_a(routes, "T", channel=conn)
    routes.register_broker("C1", MASTER_B, "broker-b", 0, "h", body("T"), channel=object())
    assert sorted(routes.on_channel_destroy(conn)) == [MASTER_A, SLAVE_A]
    assert [b.broker_name for b in routes.pickup_topic_route_data("T").broker_datas] == ["broker-b"]
    assert routes.on_channel_destroy(conn) == []
    assert routes.on_channel_destroy(object()) == []


def test_unregister_master_then_slave(routes):
    register_group_a(routes, "T")
    routes.unregister_broker("C1", MASTER_A, "broker-a", 0)
    assert routes.pickup_topic_route_data("T").broker_datas[0].broker_addrs == {1: SLAVE_A}
    routes.unregister_broker("C1", SLAVE_A, "broker-a", 1)
    assert routes.pickup_topic_route_data("T") is None
    assert routes.broker_addr_table == {} and routes.cluster_addr_table == {} and routes.broker_live_table == {}
    routes.unregister_broker("C1", SLAVE_A, "broker-a", 1)      # unknown: no error


def test_data_version_query(routes, clock):
    assert routes.query_data_version(MASTER_A, DataVersion(1, 5)) == (True, None)     # unknown broker
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", counter=3))
    stored = routes.query_broker_topic_config(MASTER_A)
    assert stored == DataVersion(3, 1_700_000_000_000)
    assert routes.query_data_version(MASTER_A, DataVersion(4, 1_700_000_000_000)) == (True, stored)
    clock.now_ms += 100_000
    assert routes.query_data_version(MASTER_A, stored) == (False, stored)         # a sign of life
    clock.now_ms += 100_000
    assert routes.scan_not_active_broker() == []
    clock.now_ms += 20_001
    assert [e.broker_addr for e in routes.scan_not_active_broker()] == [MASTER_A]


def test_wipe_and_add_write_perm(routes):
    register_group_a(routes, "T", "U")
    routes.register_broker("C1", MASTER_B, "broker-b", 0, "h", body("T", perm=PERM_READ | PERM_WRITE | PERM_INHERIT))
    assert routes.wipe_write_perm_of_broker("broker-a") == 2
    route = routes.pickup_topic_route_data("T")
    assert {q.broker_name: q.perm for q in route.queue_datas} == {"broker-a": PERM_READ, "broker-b": 7}
    assert routes.add_write_perm_of_broker("broker-b") == 1
    assert routes.add_write_perm_of_broker("broker-a") == 2
    route = routes.pickup_topic_route_data("T")
    assert {q.broker_name: q.perm for q in route.queue_datas} == {"broker-a": 6, "broker-b": 6}
    assert routes.wipe_write_perm_of_broker("nobody") == 0


def test_delete_topic_everywhere_or_in_one_cluster(routes):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", body("T", "U"))
    routes.register_broker("C2", MASTER_B, "broker-b", 0, "h", body("T", "U"))
    routes.delete_topic("T", "C1")
    assert [q.broker_name for q in routes.pickup_topic_route_data("T").queue_datas] == ["broker-b"]
    routes.delete_topic("T", "C2")
    assert routes.pickup_topic_route_data("T") is None
    routes.delete_topic("U")
    assert routes.pickup_topic_route_data("U") is None
    routes.delete_topic("U", "nowhere")
    routes.delete_topic("absent")


def test_cluster_info_and_topic_lists(routes):
    register_group_a(routes, "T", "OnlyA")
    routes.register_broker("C2", MASTER_B, "broker-b", 0, "h", body("T", "OnlyB"))
    info = routes.get_all_cluster_info()
    assert info.cluster_addr_table == {"C1": ["broker-a"], "C2": ["broker-b"]}
    assert info.broker_addr_table["broker-a"].broker_addrs == {0: MASTER_A, 1: SLAVE_A}
    assert routes.get_all_topic_list().topic_list == ["OnlyA", "OnlyB", "T"]
    assert routes.get_topics_by_cluster("C1").topic_list == ["OnlyA", "T"]
    assert routes.get_topics_by_cluster("C2").topic_list == ["OnlyB", "T"]
    assert routes.get_topics_by_cluster("nope").topic_list == []


def test_system_topic_list_names_clusters_and_brokers_with_a_master_address(routes):
    assert routes.get_system_topic_list().topic_list == [] and routes.get_system_topic_list().broker_addr is None
    routes.register_broker("C1", SLAVE_A, "broker-a", 1, "h", body())
    only_slave = routes.get_system_topic_list()
    assert only_slave.topic_list == ["C1", "broker-a"] and only_slave.broker_addr == SLAVE_A
    routes.register_broker("C2", MASTER_B, "broker-b", 0, "h", body())
    system = routes.get_system_topic_list()
    assert system.topic_list == ["C1", "C2", "broker-a", "broker-b"] and system.broker_addr == MASTER_B


def test_unit_topic_lists(routes):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", RegisterBrokerBody(DataVersion(1, 1), {
        "Plain": TopicConfig("Plain"),
        "Unit": TopicConfig("Unit", topic_sys_flag=TOPIC_SYS_FLAG_UNIT),
        "Sub": TopicConfig("Sub", topic_sys_flag=TOPIC_SYS_FLAG_UNIT_SUB),
        "Both": TopicConfig("Both", topic_sys_flag=TOPIC_SYS_FLAG_UNIT | TOPIC_SYS_FLAG_UNIT_SUB)}))
    assert routes.get_unit_topics().topic_list == ["Both", "Unit"]
    assert routes.get_has_unit_sub_topic_list().topic_list == ["Both", "Sub"]
    assert routes.get_has_unit_sub_un_unit_topic_list().topic_list == ["Sub"]


def test_register_without_body_counts_as_version_zero(routes):
    routes.register_broker("C1", MASTER_A, "broker-a", 0, "h", None)
    assert routes.query_broker_topic_config(MASTER_A) == DataVersion(0, 0)
    assert routes.get_all_cluster_info().cluster_addr_table == {"C1": ["broker-a"]}
    assert routes.get_all_topic_list().topic_list == []
