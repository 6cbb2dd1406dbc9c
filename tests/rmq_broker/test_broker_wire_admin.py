"""Admin and runtime requests over the wire: topics (and their nameserver route), subscription groups, broker
config, runtime info, statistics bodies, message lookup by key and by offset id (PROTOCOL.md §2.1 "Broker admin").
"""
from __future__ import annotations

import time

import trio
from broker_wire_support import GROUP, Wire, props, run, wire

from rmq_common._record import decode_records, encode_batch_body
from rmq_common.msgid import decode_offset_msg_id
from rmq_common.properties_file import parse_properties
from rmq_remoting import RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h


async def topic_table(w: Wire) -> dict:
    resp = await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)
    assert resp.code == ResponseCode.SUCCESS
    doc = fastjson.loads(resp.body)
    assert set(doc["dataVersion"]) >= {"counter", "timestamp"}
    return doc["topicConfigTable"]


async def routed(w: Wire, topic: str) -> dict:
    """The nameserver's route for ``topic`` once the broker's registration has carried it there."""
    while True:
        resp = await w.route(topic)
        if resp.code == ResponseCode.SUCCESS:
            return fastjson.loads(resp.body)
        await trio.sleep(0.01)


async def runtime_info(w: Wire) -> dict:
    resp = await w.call(RequestCode.GET_BROKER_RUNTIME_INFO)
    assert resp.code == ResponseCode.SUCCESS
    return fastjson.loads(resp.body)["table"]


async def broker_config(w: Wire) -> dict[str, str]:
    resp = await w.call(RequestCode.GET_BROKER_CONFIG)
    assert resp.code == ResponseCode.SUCCESS
    assert resp.ext_fields.get("version")
    return parse_properties(bytes(resp.body).decode())


def test_topics_create_delete_and_route(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("AdminT", 6, perm=6, filter_type="MULTI_TAG")
            config = (await topic_table(w))["AdminT"]
            assert (config["readQueueNums"], config["writeQueueNums"], config["perm"], config["topicFilterType"]) \
                == (6, 6, 6, "MULTI_TAG")
            route = await routed(w, "AdminT")
            [qd] = route["queueDatas"]
            assert (qd["readQueueNums"], qd["writeQueueNums"], qd["perm"]) == (6, 6, 6)

            # MULTI_TAG topics get the MULTI_TAGS sysflag on every stored message
            await w.send_ok("AdminT", b"x", queue_id=0)
            [record] = await w.pull_records("AdminT", 0, 0)
            assert record.sys_flag & 0x2

            # update: fewer queues, read-only
            await w.create_topic("AdminT", 2, perm=4)
            assert (await topic_table(w))["AdminT"]["writeQueueNums"] == 2
            while (await routed(w, "AdminT"))["queueDatas"][0]["perm"] != 4:
                await trio.sleep(0.01)

            # refusals: illegal names, and the cluster's name (a system topic the broker owns)
            cluster_topic = (await topic_table(w))["DefaultCluster"]
            for bad in ("bad.name", "x" * 128, "DefaultCluster"):
                resp = await w.call(RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
                    topic=bad, default_topic="TBW102", read_queue_nums=1, write_queue_nums=1, perm=6,
                    topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False))
                assert resp.code == ResponseCode.SYSTEM_ERROR and resp.remark, bad
                assert (await topic_table(w)).get(bad) == (cluster_topic if bad == "DefaultCluster" else None)

            # delete: gone from the table, its messages and offsets too
            resp = await w.call(RequestCode.UPDATE_CONSUMER_OFFSET, h.UpdateConsumerOffsetRequestHeader(
                consumer_group=GROUP, topic="AdminT", queue_id=0, commit_offset=1))
            assert resp.code == ResponseCode.SUCCESS
            resp = await w.call(RequestCode.DELETE_TOPIC_IN_BROKER, h.DeleteTopicRequestHeader(topic="AdminT"))
            assert resp.code == ResponseCode.SUCCESS
            assert "AdminT" not in await topic_table(w)
            assert (await w.pull("AdminT", 0, 0)).code == ResponseCode.TOPIC_NOT_EXIST
            assert await w.max_offset("AdminT", 0) == 0
            table = fastjson.loads((await w.call(RequestCode.GET_ALL_CONSUMER_OFFSET)).body)["offsetTable"]
            assert f"AdminT@{GROUP}" not in table
            # re-created, it starts empty
            await w.create_topic("AdminT", 1)
            assert (await w.pull("AdminT", 0, 0)).code == ResponseCode.PULL_NOT_FOUND
    run(main)


def test_subscription_groups(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            body = fastjson.dumps({"groupName": "SG1", "consumeEnable": True, "consumeBroadcastEnable": False,
                                   "retryQueueNums": 2, "retryMaxTimes": 5, "brokerId": 0,
                                   "whichBrokerWhenConsumeSlowly": 1, "consumeFromMinEnable": True,
                                   "notifyConsumerIdsChangedEnable": False, "groupSysFlag": 0})   # 5.x field: ignored
            resp = await w.call(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, body)
            assert resp.code == ResponseCode.SUCCESS, resp.remark
            resp = await w.call(RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
            doc = fastjson.loads(resp.body)
            sg = doc["subscriptionGroupTable"]["SG1"]
            assert (sg["retryQueueNums"], sg["retryMaxTimes"], sg["consumeBroadcastEnable"],
                    sg["notifyConsumerIdsChangedEnable"]) == (2, 5, False, False)
            assert "TOOLS_CONSUMER" in doc["subscriptionGroupTable"]
            # a broadcasting consumer of a group that forbids broadcast may not pull without a subscription
            await w.create_topic("SGT", 1)
            assert (await w.heartbeat("c1", "SG1", {"SGT": "*"}, message_model="BROADCASTING")).code == 0
            resp = await w.pull("SGT", 0, 0, group="SG1", sys_flag=0, subscription=None)
            assert resp.code == ResponseCode.NO_PERMISSION
            # a pulling group is auto-created
            await w.pull("SGT", 0, 0, group="AutoGroup")
            resp = await w.call(RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG)
            assert "AutoGroup" in fastjson.loads(resp.body)["subscriptionGroupTable"]
    run(main)


def test_broker_config_round_trip_and_runtime_info(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            config = await broker_config(w)
            assert config["brokerName"] == "broker-a" and config["brokerClusterName"] == "DefaultCluster"
            assert config["traceOn"] == "true"

            # runtime keys apply at once
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"traceOn=false\nmaxMessageSize=1024\n")
            assert resp.code == ResponseCode.SUCCESS and not resp.remark
            config = await broker_config(w)
            assert (config["traceOn"], config["maxMessageSize"]) == ("false", "1024")
            await w.create_topic("CfgT", 1)
            resp = await w.send("CfgT", b"x", queue_id=0)
            assert resp.code == ResponseCode.SUCCESS and resp.ext_fields["TRACE_ON"] == "false"
            assert (await w.send("CfgT", b"x" * 1025, queue_id=0)).code == ResponseCode.MESSAGE_ILLEGAL
            # keys that need a restart: accepted, named in the remark, not in effect
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"brokerName=other\n")
            assert resp.code == ResponseCode.SUCCESS and "brokerName" in resp.remark
            assert (await broker_config(w))["brokerName"] == "broker-a"
            # a bad value changes nothing
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"traceOn=yes\nmaxMessageSize=2048\n")
            assert resp.code == ResponseCode.SYSTEM_ERROR and "traceOn" in resp.remark
            assert (await broker_config(w))["maxMessageSize"] == "1024"
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"maxMessageSize=4194304\n")
            assert resp.code == ResponseCode.SUCCESS

            # msgPutTotalTodayNow counts every stored message (a batch counts its items)
            info = await runtime_info(w)
            assert info["brokerVersionDesc"] == "V4_9_7" and "bootTimestamp" in info
            puts, gets = int(info["msgPutTotalTodayNow"]), int(info["msgGetTotalTodayNow"])
            for i in range(4):
                await w.send_ok("CfgT", b"%d" % i, queue_id=0)
            await w.send_ok("CfgT", encode_batch_body([b"a", b"b", b"c"]), code=RequestCode.SEND_BATCH_MESSAGE,
                            queue_id=0)
            assert (await w.send("CfgT", b"x", queue_id=5)).code != ResponseCode.SUCCESS   # refused: not counted
            records = await w.pull_records("CfgT", 0, 0)
            info = await runtime_info(w)
            assert int(info["msgPutTotalTodayNow"]) == puts + 7
            assert int(info["msgGetTotalTodayNow"]) == gets + len(records)
            assert int(info["commitLogMaxOffset"]) > 0
    run(main)


def test_statistics_bodies(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("StatT", 2)
            for i in range(3):
                await w.send_ok("StatT", b"%d" % i, queue_id=1)
            resp = await w.call(RequestCode.GET_TOPIC_STATS_INFO, h.GetTopicStatsInfoRequestHeader(topic="StatT"))
            assert resp.code == ResponseCode.SUCCESS
            table = fastjson.loads(resp.body)["offsetTable"]
            by_queue = {key["queueId"]: value for key, value in table.items()}
            assert {key["topic"] for key in table} == {"StatT"}
            assert {key["brokerName"] for key in table} == {"broker-a"}
            assert (by_queue[1]["minOffset"], by_queue[1]["maxOffset"]) == (0, 3)
            assert by_queue[1]["lastUpdateTimestamp"] > 0
            assert by_queue[0]["maxOffset"] == 0
            resp = await w.call(RequestCode.GET_TOPIC_STATS_INFO, h.GetTopicStatsInfoRequestHeader(topic="Nope"))
            assert resp.code == ResponseCode.TOPIC_NOT_EXIST

            resp = await w.call(RequestCode.UPDATE_CONSUMER_OFFSET, h.UpdateConsumerOffsetRequestHeader(
                consumer_group=GROUP, topic="StatT", queue_id=1, commit_offset=2))
            assert resp.code == ResponseCode.SUCCESS
            resp = await w.call(RequestCode.GET_CONSUME_STATS, h.GetConsumeStatsRequestHeader(
                consumer_group=GROUP, topic="StatT"))
            assert resp.code == ResponseCode.SUCCESS
            doc = fastjson.loads(resp.body)
            by_queue = {key["queueId"]: value for key, value in doc["offsetTable"].items()}
            assert (by_queue[1]["brokerOffset"], by_queue[1]["consumerOffset"]) == (3, 2)
            assert by_queue[0]["consumerOffset"] == -1 and "consumeTps" in doc
            # without a topic: every topic the group committed on
            resp = await w.call(RequestCode.GET_CONSUME_STATS, h.GetConsumeStatsRequestHeader(consumer_group=GROUP))
            assert {key["topic"] for key in fastjson.loads(resp.body)["offsetTable"]} == {"StatT"}

            # consumer connections: none yet (206), then the heartbeat's client
            resp = await w.call(RequestCode.GET_CONSUMER_CONNECTION_LIST,
                                h.GetConsumerConnectionListRequestHeader(consumer_group=GROUP))
            assert resp.code == ResponseCode.CONSUMER_NOT_ONLINE
            assert (await w.heartbeat("client-stats", GROUP, {"StatT": "TagA || TagB"})).code == 0
            resp = await w.call(RequestCode.GET_CONSUMER_CONNECTION_LIST,
                                h.GetConsumerConnectionListRequestHeader(consumer_group=GROUP))
            assert resp.code == ResponseCode.SUCCESS
            doc = fastjson.loads(resp.body)
            [conn] = doc["connectionSet"]
            assert conn["clientId"] == "client-stats"
            host, port = w.client.connection_for(w.addr).local_address[:2]
            assert conn["clientAddr"] == f"{host}:{port}"
            assert (doc["consumeType"], doc["messageModel"]) == ("CONSUME_PASSIVELY", "CLUSTERING")
            assert doc["subscriptionTable"]["StatT"]["tagsSet"] == ["TagA", "TagB"]
    run(main)


def test_query_message_by_key_and_view_by_id(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("QueryT", 2)
            await w.create_topic("OtherT", 1)
            r1 = await w.send_ok("QueryT", b"first", queue_id=0,
                                 properties=props(KEYS="order-1 shared", UNIQ_KEY="U-1"))
            r2 = await w.send_ok("QueryT", b"second", queue_id=1, properties=props(KEYS="order-2 shared"))
            await w.send_ok("OtherT", b"other", queue_id=0, properties=props(KEYS="order-1"))
            now = int(time.time() * 1000)

            async def query(key: str, max_num: int = 32, topic: str = "QueryT", unique: bool = False):
                ext = h.QueryMessageRequestHeader(topic=topic, key=key, max_num=max_num, begin_timestamp=0,
                                                  end_timestamp=now + 60_000).to_ext()
                if unique:
                    ext["_UNIQUE_KEY_QUERY"] = "true"
                return await w.call(RequestCode.QUERY_MESSAGE, ext)

            resp = await query("order-1")
            assert resp.code == ResponseCode.SUCCESS
            assert [r.body for r in decode_records(bytes(resp.body))] == [b"first"]     # only this topic
            header = h.QueryMessageResponseHeader.decode(resp.ext_fields)
            assert header.index_last_update_timestamp > 0 and header.index_last_update_phyoffset >= 0
            resp = await query("shared")
            assert sorted(r.body for r in decode_records(bytes(resp.body))) == [b"first", b"second"]
            resp = await query("U-1", unique=True)
            assert [r.body for r in decode_records(bytes(resp.body))] == [b"first"]
            resp = await query("nothing-like-it")
            assert resp.code == ResponseCode.QUERY_NOT_FOUND and resp.remark

            # VIEW_MESSAGE_BY_ID: the offset msgId names host, port and the commitlog offset to ask for
            for reply, body in ((r1, b"first"), (r2, b"second")):
                host, port, offset = decode_offset_msg_id(reply.msg_id)
                assert f"{host}:{port}" == w.addr
                resp = await w.call(RequestCode.VIEW_MESSAGE_BY_ID, h.ViewMessageRequestHeader(offset=offset))
                assert resp.code == ResponseCode.SUCCESS
                [record] = decode_records(bytes(resp.body))
                assert (record.body, record.commit_log_offset, record.topic) == (body, offset, "QueryT")
            for bad in (7, 1 << 40):
                resp = await w.call(RequestCode.VIEW_MESSAGE_BY_ID, h.ViewMessageRequestHeader(offset=bad))
                assert resp.code == ResponseCode.SYSTEM_ERROR and resp.remark
    run(main)


def test_query_message_counts_as_rocketmq(tmp_path) -> None:
    """Java QueryMessageProcessor: a `_UNIQUE_KEY_QUERY=true` query asks for defaultQueryMaxNum messages whatever its
    maxNum; every query answers at most maxMsgsNumBatch (64). A unique-key query matches UNIQ_KEY only (RocketMQ
    returns every index hit and its clients drop the rest)."""
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"defaultQueryMaxNum": 20}) as w:
            await w.create_topic("ManyT", 1)
            # 70 messages with one key and one UNIQ_KEY (a topic without deduplication stores retries as sent)
            for lo in range(0, 70, 10):
                body = encode_batch_body([str(i).encode() for i in range(lo, lo + 10)],
                                         [props(KEYS="same", UNIQ_KEY="SAME-ID")] * 10)
                await w.send_ok("ManyT", body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=0, batch=True)
            await w.send_ok("ManyT", b"keyed", queue_id=0, properties=props(KEYS="SAME-ID"))
            end = int(time.time() * 1000) + 60_000

            async def count(key: str, max_num: int, unique: bool = False) -> int:
                ext = h.QueryMessageRequestHeader(topic="ManyT", key=key, max_num=max_num, begin_timestamp=0,
                                                  end_timestamp=end).to_ext()
                if unique:
                    ext["_UNIQUE_KEY_QUERY"] = "true"
                resp = await w.call(RequestCode.QUERY_MESSAGE, ext)
                if resp.code == ResponseCode.QUERY_NOT_FOUND:
                    return 0
                assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
                return len(decode_records(bytes(resp.body)))

            assert await count("same", 5) == 5
            assert await count("same", 1000) == 64                     # maxMsgsNumBatch
            assert await count("same", 0) == 20                        # rmq: no maxNum = defaultQueryMaxNum
            assert await count("SAME-ID", 1, unique=True) == 20        # defaultQueryMaxNum, not the request's 1
            assert await count("SAME-ID", 1000, unique=True) == 20
            assert await count("SAME-ID", 1000) == 64                  # by key: the KEYS match counts too
            assert await count("same", 10, unique=True) == 0           # a KEYS value is not a unique key
            assert await count("nothing", 10, unique=True) == 0
    run(main)
