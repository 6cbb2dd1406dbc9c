"""NameServer over the wire: a RemotingClient plays broker, client and admin against servers started here."""
from __future__ import annotations

import json
import math

import pytest
import trio
import trio.testing

from rmq_nameserver import ClusterInfo, DataVersion, NameServer, TopicList, TopicRouteData
from rmq_nameserver.bodies import decode_kv_table
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode

MASTER = "10.0.0.5:10911"
SLAVE = "10.0.0.6:10911"
CPP_VERSION = 63            # what rocketmq-client-cpp sends (CAPTURES.md): gets fastjson's bare keys


async def call(client: RemotingClient, server: NameServer, code: int, ext: dict[str, str] | None = None,
               body: bytes | None = None) -> RemotingCommand:
    return await client.invoke(server.addr, RemotingCommand.request(code, ext or {}, body), 5000)


def test_register_and_route_in_both_json_forms(ns):
    async def main():
        async with ns.serve(ns.config()) as server, RemotingClient() as broker, RemotingClient() as client:
            resp = await broker.invoke(server.addr, ns.register_request("broker-a", MASTER, 0,
                                                                        body=ns.body("TopicA", "%RETRY%G")), 5000)
            assert resp.code == ResponseCode.SUCCESS and resp.body is None
            assert "masterAddr" not in resp.ext_fields
            resp = await broker.invoke(server.addr, ns.register_request("broker-a", SLAVE, 1, ha_addr="10.0.0.6:10912",
                                                                        body=ns.body("TopicA")), 5000)
            assert resp.ext_fields == {"masterAddr": MASTER, "haServerAddr": "10.0.0.5:10912"}

            # rocketmq-client-cpp (version 63, no flag): fastjson's bare integer keys
            bare = await client.invoke(server.addr, ns.route_request("TopicA", version=CPP_VERSION), 5000)
            assert bare.code == ResponseCode.SUCCESS
            assert b'"brokerAddrs":{0:"10.0.0.5:10911",1:"10.0.0.6:10911"}' in bytes(bare.body)
            # acceptStandardJsonOnly=true, or a 4.9.4+ client: standard JSON
            for req in (ns.route_request("TopicA", version=CPP_VERSION, standard=True),
                        ns.route_request("TopicA")):
                std = await client.invoke(server.addr, req, 5000)
                doc = json.loads(bytes(std.body))
                assert doc["brokerDatas"] == [{"brokerAddrs": {"0": MASTER, "1": SLAVE}, "brokerName": "broker-a",
                                               "cluster": "DefaultCluster"}]
                assert doc["queueDatas"] == [{"brokerName": "broker-a", "perm": 6, "readQueueNums": 4,
                                              "topicSysFlag": 0, "writeQueueNums": 4}]
                assert doc["filterServerTable"] == {} and "orderTopicConf" not in doc
                assert TopicRouteData.decode(std.body) == TopicRouteData.decode(bare.body)

            missing = await client.invoke(server.addr, ns.route_request("NoSuchTopic"), 5000)
            assert missing.code == ResponseCode.TOPIC_NOT_EXIST and missing.body is None
            assert missing.remark.startswith("No topic route info in name server for the topic: NoSuchTopic")
    ns.run(main)


def test_missing_mandatory_field_is_system_error_naming_it(ns):
    async def main():
        async with ns.serve(ns.config()) as server, RemotingClient() as client:
            req = ns.register_request("broker-a", MASTER, body=ns.body("T"))
            del req.ext_fields["brokerName"]
            resp = await client.invoke(server.addr, req, 5000)
            assert resp.code == ResponseCode.SYSTEM_ERROR
            assert resp.remark == "the custom field <brokerName> is null"
            resp = await call(client, server, RequestCode.GET_ROUTEINFO_BY_TOPIC)
            assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR, "the custom field <topic> is null")
            # the connection survives bad requests
            assert (await call(client, server, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)).code == 0
    ns.run(main)


def test_compressed_body_crc_and_bad_bodies(ns):
    async def main():
        async with ns.serve(ns.config()) as server, RemotingClient() as broker:
            ok = ns.register_request("broker-a", MASTER, body=ns.body("Zipped"), compressed=True)
            assert (await broker.invoke(server.addr, ok, 5000)).code == ResponseCode.SUCCESS
            assert server.routes.pickup_topic_route_data("Zipped") is not None

            bad_crc = ns.register_request("broker-b", "10.0.0.7:10911", body=ns.body("Other"))
            bad_crc.ext_fields["bodyCrc32"] = str(int(bad_crc.ext_fields["bodyCrc32"]) ^ 1)
            resp = await broker.invoke(server.addr, bad_crc, 5000)
            assert (resp.code, resp.remark) == (ResponseCode.SYSTEM_ERROR, "crc32 not match")
            assert "broker-b" not in server.routes.broker_addr_table

            garbage = ns.register_request("broker-c", "10.0.0.8:10911", crc=False)
            garbage.body = b'{"topicConfigSerializeWrapper":{"topicConfigTable":{"T":{"perm":"rw"}}}}'
            resp = await broker.invoke(server.addr, garbage, 5000)
            assert resp.code == ResponseCode.SYSTEM_ERROR
            assert resp.remark.startswith("Failed to decode RegisterBrokerBody: topicConfigTable.T.perm")
            assert "broker-c" not in server.routes.broker_addr_table
    ns.run(main)


def test_kv_config_over_the_wire_and_across_a_restart(ns):
    cfg = ns.config(order_message_enable=True)

    async def first_life():
        async with ns.serve(cfg) as server, RemotingClient() as admin:
            put = {"namespace": "ORDER_TOPIC_CONFIG", "key": "TopicA", "value": "broker-a:4"}
            assert (await call(admin, server, RequestCode.PUT_KV_CONFIG, put)).code == 0
            assert (await call(admin, server, RequestCode.PUT_KV_CONFIG, {"namespace": "ns", "key": "k",
                                                                         "value": "v"})).code == 0
            got = await call(admin, server, RequestCode.GET_KV_CONFIG, {"namespace": "ns", "key": "k"})
            assert got.code == 0 and got.ext_fields == {"value": "v"}
            absent = await call(admin, server, RequestCode.GET_KV_CONFIG, {"namespace": "ns", "key": "nope"})
            assert (absent.code, absent.remark) == (ResponseCode.QUERY_NOT_FOUND, "No config item, Namespace: ns Key: nope")
            listed = await call(admin, server, RequestCode.GET_KVLIST_BY_NAMESPACE, {"namespace": "ns"})
            assert decode_kv_table(listed.body) == {"k": "v"}
            none = await call(admin, server, RequestCode.GET_KVLIST_BY_NAMESPACE, {"namespace": "empty"})
            assert (none.code, none.remark) == (ResponseCode.QUERY_NOT_FOUND, "No config item, Namespace: empty")
            assert (await call(admin, server, RequestCode.DELETE_KV_CONFIG, {"namespace": "ns", "key": "k"})).code == 0
            gone = await call(admin, server, RequestCode.GET_KV_CONFIG, {"namespace": "ns", "key": "k"})
            assert gone.code == ResponseCode.QUERY_NOT_FOUND

            # the broker gets the order-topic table back; routes carry orderTopicConf
            reg = await admin.invoke(server.addr, ns.register_request("broker-a", MASTER, body=ns.body("TopicA")), 5000)
            assert decode_kv_table(reg.body) == {"TopicA": "broker-a:4"}
            route = await admin.invoke(server.addr, ns.route_request("TopicA"), 5000)
            assert TopicRouteData.decode(route.body).order_topic_conf == "broker-a:4"

    async def second_life():
        async with ns.serve(cfg) as server, RemotingClient() as admin:
            got = await call(admin, server, RequestCode.GET_KV_CONFIG,
                             {"namespace": "ORDER_TOPIC_CONFIG", "key": "TopicA"})
            assert got.ext_fields == {"value": "broker-a:4"}
            assert (await call(admin, server, RequestCode.GET_KVLIST_BY_NAMESPACE, {"namespace": "ns"})).code == 0

    ns.run(first_life)
    ns.run(second_life)


def test_closing_the_brokers_connection_drops_it_at_once(ns):
    async def main():
        async with ns.serve(ns.config()) as server, RemotingClient() as client:
            async with RemotingClient() as broker:
                assert (await broker.invoke(server.addr, ns.register_request("broker-a", MASTER, body=ns.body("T")),
                                            5000)).code == 0
                [conn] = server.remoting.connections
                assert (await client.invoke(server.addr, ns.route_request("T"), 5000)).code == 0
            with trio.fail_after(5):
                await conn.wait_closed()                         # the server saw the close and ran its hooks
            resp = await client.invoke(server.addr, ns.route_request("T"), 5000)
            assert resp.code == ResponseCode.TOPIC_NOT_EXIST
            info = ClusterInfo.decode((await call(client, server, RequestCode.GET_BROKER_CLUSTER_INFO)).body)
            assert info.broker_addr_table == {} and info.cluster_addr_table == {}
    ns.run(main)


@pytest.mark.timeout(60)
def test_broker_expires_after_120_s_of_silence(ns):
    """Under MockClock: time stands still during network I/O (no spurious timeouts) and jumps while the test sleeps."""
    clock = trio.testing.MockClock()            # rate 0, no autojump: frozen until the test lets it run

    async def fast_forward(seconds: float) -> None:
        clock.autojump_threshold = 0
        await trio.sleep(seconds)
        clock.autojump_threshold = math.inf

    async def main():
        cfg = ns.config(server_channel_max_idle_time_seconds=0)     # only the liveness scan may drop the broker
        async with ns.serve(cfg) as server, RemotingClient() as broker, RemotingClient() as client:
            registered_at = trio.current_time()
            assert (await broker.invoke(server.addr, ns.register_request("broker-a", MASTER, body=ns.body("T")),
                                        5000)).code == 0
            await fast_forward(119)                               # scans at 5, 15, ... 115 s: still alive
            assert (await client.invoke(server.addr, ns.route_request("T"), 5000)).code == 0
            await fast_forward(11)                                # the scan at 125 s drops it
            assert trio.current_time() - registered_at >= 130
            assert (await client.invoke(server.addr, ns.route_request("T"), 5000)).code == ResponseCode.TOPIC_NOT_EXIST
            assert server.routes.broker_live_table == {}
            # as RocketMQ, the expired broker's connection was closed; its next registration is a new one
            assert broker.connection_for(server.addr) is None or broker.connection_for(server.addr).closed
            assert (await broker.invoke(server.addr, ns.register_request("broker-a", MASTER, body=ns.body("T")),
                                        5000)).code == 0
            assert (await client.invoke(server.addr, ns.route_request("T"), 5000)).code == 0

    trio.run(main, clock=clock)


@pytest.mark.timeout(60)
def test_queries_of_an_unchanged_data_version_keep_a_broker_alive(ns):
    clock = trio.testing.MockClock()

    async def fast_forward(seconds: float) -> None:
        clock.autojump_threshold = 0
        await trio.sleep(seconds)
        clock.autojump_threshold = math.inf

    async def main():
        async with ns.serve(ns.config(server_channel_max_idle_time_seconds=0)) as server, RemotingClient() as broker:
            body = ns.body("T", counter=3)
            assert (await broker.invoke(server.addr, ns.register_request("broker-a", MASTER, body=body), 5000)).code == 0
            ext = {"brokerName": "broker-a", "brokerAddr": MASTER, "clusterName": "DefaultCluster", "brokerId": "0"}
            for _ in range(3):
                await fast_forward(100)
                resp = await call(broker, server, RequestCode.QUERY_DATA_VERSION, ext, body.data_version.encode())
                assert resp.code == 0 and resp.ext_fields == {"changed": "false"}
                assert DataVersion.decode(resp.body) == body.data_version
            assert server.routes.pickup_topic_route_data("T") is not None          # 300 s later, still routed
            changed = await call(broker, server, RequestCode.QUERY_DATA_VERSION, ext, DataVersion(4, 1).encode())
            assert changed.ext_fields == {"changed": "true"}

    trio.run(main, clock=clock)


def test_two_nameservers_are_independent(ns):
    async def main():
        async with ns.serve(ns.config("one")) as one, ns.serve(ns.config("two")) as two, \
                RemotingClient() as broker, RemotingClient() as client:
            assert one.port != two.port
            for server in (one, two):                             # brokers register with every nameserver
                assert (await broker.invoke(server.addr, ns.register_request("broker-a", MASTER,
                                                                             body=ns.body("Shared")), 5000)).code == 0
            assert (await broker.invoke(one.addr, ns.register_request("broker-b", "10.0.0.7:10911",
                                                                      body=ns.body("OnlyOne")), 5000)).code == 0
            assert (await client.invoke(one.addr, ns.route_request("OnlyOne"), 5000)).code == 0
            assert (await client.invoke(two.addr, ns.route_request("OnlyOne"), 5000)).code == ResponseCode.TOPIC_NOT_EXIST
            assert (await broker.invoke(one.addr, ns.unregister_request("broker-a", MASTER), 5000)).code == 0
            assert (await client.invoke(one.addr, ns.route_request("Shared"), 5000)).code == ResponseCode.TOPIC_NOT_EXIST
            assert (await client.invoke(two.addr, ns.route_request("Shared"), 5000)).code == 0
            await call(client, one, RequestCode.PUT_KV_CONFIG, {"namespace": "n", "key": "k", "value": "v"})
            assert (await call(client, two, RequestCode.GET_KV_CONFIG, {"namespace": "n", "key": "k"})).code == 22
    ns.run(main)


def test_admin_codes(ns):
    async def main():
        async with ns.serve(ns.config()) as server, RemotingClient() as admin:
            await admin.invoke(server.addr, ns.register_request("broker-a", MASTER, cluster="C1", body=ns.body("T", "U")),
                               5000)
            await admin.invoke(server.addr, ns.register_request("broker-b", "10.0.0.7:10911", cluster="C2",
                                                                body=ns.body("T")), 5000)
            topics = TopicList.decode((await call(admin, server, RequestCode.GET_ALL_TOPIC_LIST_FROM_NAMESERVER)).body)
            assert topics.topic_list == ["T", "U"]
            by_cluster = await call(admin, server, RequestCode.GET_TOPICS_BY_CLUSTER, {"cluster": "C2"})
            assert TopicList.decode(by_cluster.body).topic_list == ["T"]
            system = TopicList.decode((await call(admin, server, RequestCode.GET_SYSTEM_TOPIC_LIST_FROM_NS)).body)
            assert system.topic_list == ["C1", "C2", "broker-a", "broker-b"] and system.broker_addr == MASTER
            info = ClusterInfo.decode((await call(admin, server, RequestCode.GET_BROKER_CLUSTER_INFO)).body)
            assert info.cluster_addr_table == {"C1": ["broker-a"], "C2": ["broker-b"]}
            assert info.broker_addr_table["broker-a"].broker_addrs == {0: MASTER}

            wipe = await call(admin, server, RequestCode.WIPE_WRITE_PERM_OF_BROKER, {"brokerName": "broker-a"})
            assert wipe.ext_fields == {"wipeTopicCount": "2"}
            route = TopicRouteData.decode((await admin.invoke(server.addr, ns.route_request("T"), 5000)).body)
            assert {q.broker_name: q.perm for q in route.queue_datas} == {"broker-a": 4, "broker-b": 6}
            add = await call(admin, server, RequestCode.ADD_WRITE_PERM_OF_BROKER, {"brokerName": "broker-a"})
            assert add.ext_fields == {"addTopicCount": "2"}

            assert (await call(admin, server, RequestCode.DELETE_TOPIC_IN_NAMESRV,
                               {"topic": "T", "clusterName": "C1"})).code == 0
            route = TopicRouteData.decode((await admin.invoke(server.addr, ns.route_request("T"), 5000)).body)
            assert [q.broker_name for q in route.queue_datas] == ["broker-b"]
            assert (await call(admin, server, RequestCode.DELETE_TOPIC_IN_NAMESRV, {"topic": "U"})).code == 0
            assert (await admin.invoke(server.addr, ns.route_request("U"), 5000)).code == ResponseCode.TOPIC_NOT_EXIST
            for code in (RequestCode.GET_UNIT_TOPIC_LIST, RequestCode.GET_HAS_UNIT_SUB_TOPIC_LIST,
                         RequestCode.GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST):
                assert TopicList.decode((await call(admin, server, code)).body).topic_list == []
    ns.run(main)


def test_namesrv_config_get_and_update(ns):
    store = ns.tmp_path / "namesrv.properties"
    cfg = ns.config(config_store_path=str(store))

    async def main():
        async with ns.serve(cfg) as server, RemotingClient() as admin:
            got = await call(admin, server, RequestCode.GET_NAMESRV_CONFIG)
            text = bytes(got.body).decode()
            assert "orderMessageEnable=false\n" in text and f"kvConfigPath={cfg.kv_config_file}\n" in text

            upd = await call(admin, server, RequestCode.UPDATE_NAMESRV_CONFIG, body=b"orderMessageEnable=true\n")
            assert upd.code == 0 and server.config.order_message_enable is True
            assert "orderMessageEnable=true\n" in store.read_text()
            text = bytes((await call(admin, server, RequestCode.GET_NAMESRV_CONFIG)).body).decode()
            assert "orderMessageEnable=true\n" in text

            refused = await call(admin, server, RequestCode.UPDATE_NAMESRV_CONFIG, body=b"kvConfigPath=/tmp/x\n")
            assert (refused.code, refused.remark) == (ResponseCode.NO_PERMISSION, "Can not update config path")
            bad = await call(admin, server, RequestCode.UPDATE_NAMESRV_CONFIG, body=b"scanNotActiveBrokerInterval=soon\n")
            assert bad.code == ResponseCode.SYSTEM_ERROR and "scanNotActiveBrokerInterval" in bad.remark
            assert (await call(admin, server, RequestCode.UPDATE_NAMESRV_CONFIG)).code == 0      # no body: no-op
    ns.run(main)
