"""ClientInstance: the consumer plug-in points (heartbeat ConsumerData, NOTIFY_CONSUMER_IDS_CHANGED, subscribe
info), broker → client requests, and what it refuses."""
from __future__ import annotations

import pytest
import trio
from client_support import Raw, eventually, run

from rmq_client import (ClientConfig, ClientError, ClientInstance, ConsumeType, MessageModel, MessageQueue,
                        consumer_data, subscription_data)
from rmq_common.hashing import java_string_hash
from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_testing import embedded_cluster

CG = "CG_client_hooks"


class FakeConsumer:
    """The smallest ConsumerHooks implementation: records what the instance tells it."""

    def __init__(self, topic: str, *, group: str = CG, running_info: bool = False) -> None:
        self.topic = topic
        self.group = group
        self.id_changes = 0
        self.queue_updates: list[tuple[str, list[MessageQueue]]] = []
        if running_info:
            self.running_info = lambda: {"properties": {"consumeType": "CONSUME_PASSIVELY"}, "subscriptionSet": []}

    def consumer_data(self):
        return consumer_data(self.group, [subscription_data(self.topic, "TagA || TagB")])

    def subscribed_topics(self):
        return [self.topic]

    def on_subscribe_info_changed(self, topic, queues):
        self.queue_updates.append((topic, queues))

    async def on_consumer_ids_changed(self):
        self.id_changes += 1


def test_subscription_and_consumer_data_wire_form():
    sub = subscription_data("T", " TagA || TagB||TagA ", sub_version=7)
    assert sub == {"classFilterMode": False, "codeSet": [java_string_hash("TagA"), java_string_hash("TagB")],
                   "expressionType": "TAG", "subString": "TagA || TagB||TagA", "subVersion": 7,
                   "tagsSet": ["TagA", "TagB"], "topic": "T"}
    assert subscription_data("T", "")["subString"] == "*"
    assert subscription_data("T", "a > 1", expression_type="SQL92")["tagsSet"] == []
    with pytest.raises(ValueError):
        subscription_data("T", "||")
    data = consumer_data("G", [sub], consume_type=ConsumeType.CONSUME_ACTIVELY, message_model=MessageModel.BROADCASTING)
    assert data["consumeType"] == "CONSUME_ACTIVELY" and data["messageModel"] == "BROADCASTING"
    assert data["consumeFromWhere"] == "CONSUME_FROM_LAST_OFFSET" and data["groupName"] == "G"
    # enums by name, keys sorted: what fastjson writes
    assert fastjson.dumps(data).startswith(b'{"consumeFromWhere":"CONSUME_FROM_LAST_OFFSET","consumeType"')


def test_consumer_hooks_heartbeat_notify_and_subscribe_info(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await raw.create_topic("HookT", 2)
            await raw.wait_route("HookT")
            cfg = ClientConfig(namesrv_addr=cluster.namesrv_addr, instance_name="one")
            async with ClientInstance(cfg) as one, \
                    ClientInstance(cfg.updated(instance_name="two")) as two:
                first = FakeConsumer("HookT")
                one.register_consumer(CG, first)
                with pytest.raises(ClientError, match="created before"):
                    one.register_consumer(CG, FakeConsumer("HookT"))
                assert await one.update_route("HookT")
                assert first.queue_updates == [("HookT", [MessageQueue("HookT", "broker-a", 0),
                                                          MessageQueue("HookT", "broker-a", 1)])]
                assert one.subscribe_queues("HookT") == first.queue_updates[0][1]
                await one.send_heartbeat_to_all_brokers()
                assert await raw.consumer_ids(CG) == [one.client_id]
                # a second member of the group: the broker tells the first one
                second = FakeConsumer("HookT")
                two.register_consumer(CG, second)
                await two.update_route("HookT")
                await two.send_heartbeat_to_all_brokers()
                await eventually(lambda: first.id_changes >= 1, what="NOTIFY_CONSUMER_IDS_CHANGED")
                assert sorted(await raw.consumer_ids(CG)) == sorted([one.client_id, two.client_id])
                # leaving unregisters at once: the remaining member is told
                before = second.id_changes
                await one.unregister_consumer(CG)
                await eventually(lambda: second.id_changes > before, what="notify after UNREGISTER_CLIENT")
                assert await raw.consumer_ids(CG) == [two.client_id]
                # a route change reaches on_subscribe_info_changed
                await raw.create_topic("HookT", 3)
                for _ in range(100):
                    await two.update_route("HookT")
                    if len(two.subscribe_queues("HookT")) == 3:
                        break
                    await trio.sleep(0.05)
                assert second.queue_updates[-1][1][-1] == MessageQueue("HookT", "broker-a", 2)
    run(main)


def test_broker_to_client_requests_without_a_handler_answer_as_java(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster:
            async with ClientInstance(ClientConfig(namesrv_addr=cluster.namesrv_addr)) as inst:
                inst.register_consumer(CG, FakeConsumer("T", running_info=True))
                inst.register_consumer("CG_other", FakeConsumer("T", group="CG_other"))
                ask = RemotingCommand.request(RequestCode.GET_CONSUMER_RUNNING_INFO,
                                              {"consumerGroup": CG, "clientId": inst.client_id})
                resp = await inst._on_get_consumer_running_info(None, ask)
                assert resp.code == ResponseCode.SUCCESS
                assert fastjson.loads(resp.body)["properties"]["consumeType"] == "CONSUME_PASSIVELY"
                ask.ext_fields["consumerGroup"] = "CG_other"
                resp = await inst._on_get_consumer_running_info(None, ask)
                assert resp.code == ResponseCode.SYSTEM_ERROR and "CG_other" in resp.remark
                hb = inst.heartbeat_data()
                assert [c["groupName"] for c in hb["consumerDataSet"]] == [CG, "CG_other"]
                assert hb["producerDataSet"] == [] and hb["clientID"] == inst.client_id
    run(main)


def test_configuration_is_checked():
    with pytest.raises(ValueError, match="host:port"):
        ClientConfig(namesrv_addr="localhost")
    with pytest.raises(ValueError, match="positive"):
        ClientConfig(heartbeat_interval_ms=0)
    with pytest.raises(ValueError, match="LanguageCode"):
        ClientConfig(language="COBOL")
    cfg = ClientConfig(namesrv_addr=" 10.0.0.1:9876 ; 10.0.0.2:9876;", client_ip="10.1.1.1", instance_name="x",
                       unit_name="u")
    assert cfg.namesrv_list() == ["10.0.0.1:9876", "10.0.0.2:9876"]
    assert cfg.build_client_id() == "10.1.1.1@x@u"
    assert cfg.language == "PYTHON"
    unique = ClientConfig().with_unique_instance_name()
    assert "#" in unique.instance_name and unique.instance_name != ClientConfig().with_unique_instance_name()


def test_an_instance_without_nameservers_says_so():
    async def main():
        async with ClientInstance(ClientConfig(namesrv_addr="")) as inst:
            with pytest.raises(ClientError, match="nameserver"):
                await inst.fetch_route("T")
            assert not await inst.update_route("T")             # logged, not raised
        with pytest.raises(ClientError, match="not running"):
            inst.register_producer("PG", object())
    run(main)
