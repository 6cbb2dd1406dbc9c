"""A slave's copy of its master's metadata (Java ``SlaveSynchronize``, PROTOCOL.md §7 "Metadata sync").

The master's tables are changed over the wire (admin requests, offset commits, a delayed send); the slave
takes them with GET_ALL_TOPIC_CONFIG / GET_ALL_CONSUMER_OFFSET / GET_ALL_DELAY_OFFSET /
GET_ALL_SUBSCRIPTIONGROUP_CONFIG, and what it took is checked in memory, in its files, and over the wire.
No commitlog bytes are replicated here (that is the HA stream); the slave's store stays empty except where a
test writes to it directly.
"""
from __future__ import annotations

import os

import trio
import trio.testing
from broker_wire_support import props, run, run_mock
from slave_support import group

from rmq_broker.clock import BrokerClock
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

GROUP = "CG_sync"


async def call(g, addr: str, code: int, ext=None, body: bytes | None = None) -> RemotingCommand:
    if isinstance(ext, h.CommandHeader):
        ext = ext.to_ext()
    return await g.client.invoke(addr, RemotingCommand.request(code, ext, body), 5000)


async def create_topic(g, topic: str, queues: int) -> None:
    resp = await call(g, g.master.broker_addr, RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
        topic=topic, default_topic="TBW102", read_queue_nums=queues, write_queue_nums=queues, perm=6,
        topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False))
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


async def create_group(g, name: str, **fields) -> None:
    body = fastjson.dumps({"groupName": name, "consumeEnable": True, "consumeFromMinEnable": True,
                           "consumeBroadcastEnable": True, "retryQueueNums": 1, "retryMaxTimes": 16,
                           "brokerId": 0, "whichBrokerWhenConsumeSlowly": 1,
                           "notifyConsumerIdsChangedEnable": True, **fields})
    resp = await call(g, g.master.broker_addr, RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, body)
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


async def commit(g, addr: str, topic: str, queue_id: int, offset: int, group_name: str = GROUP) -> None:
    resp = await call(g, addr, RequestCode.UPDATE_CONSUMER_OFFSET, h.UpdateConsumerOffsetRequestHeader(
        consumer_group=group_name, topic=topic, queue_id=queue_id, commit_offset=offset))
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)


def read_config_file(broker, name: str):
    with open(os.path.join(broker.config.config_dir, name), "rb") as f:
        return fastjson.loads(f.read())


def test_all_four_tables_are_copied_and_deletions_follow(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path) as g:
            master, slave = g.master, g.slave
            await create_topic(g, "SyncT", 4)
            await create_topic(g, "Doomed", 1)
            await create_group(g, "CG_slow", whichBrokerWhenConsumeSlowly=2, retryMaxTimes=3)
            await commit(g, master.broker_addr, "SyncT", 1, 42)
            await commit(g, master.broker_addr, "SyncT", 3, 7)
            # a delayed message moves the master's level-1 progress once it is delivered
            send = h.SendMessageRequestHeader(
                producer_group="PG", topic="SyncT", default_topic="TBW102", default_topic_queue_nums=4, queue_id=0,
                sys_flag=0, born_timestamp=0, flag=0, properties=props(DELAY="1"), reconsume_times=0,
                unit_mode=False, batch=False)
            resp = await call(g, master.broker_addr, RequestCode.SEND_MESSAGE_V2, send.to_v2(), b"d")
            assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
            with trio.fail_after(10):
                while master.schedule.offsets.get(1, 0) < 1:
                    await trio.sleep(0.05)
            # the slave has a stale local offset the master never had: Java's putAll keeps it
            await commit(g, slave.broker_addr, "Other", 0, 5)
            assert "SyncT" not in slave.topics

            await slave.slave_sync.sync_all()
            assert slave.slave_sync.last_errors == {}
            # topics: same table and data version, written to topics.json
            assert slave.topics.select("SyncT") == master.topics.select("SyncT")
            assert slave.topics.data_version == master.topics.data_version
            assert "SyncT" in read_config_file(slave, "topics.json")["topicConfigTable"]
            # groups
            assert slave.groups.find("CG_slow") == master.groups.find("CG_slow")
            assert slave.groups.find("CG_slow").which_broker_when_consume_slowly == 2
            assert slave.groups.data_version == master.groups.data_version
            assert "CG_slow" in read_config_file(slave, "subscriptionGroup.json")["subscriptionGroupTable"]
            # offsets: the master's entries, plus the slave's own
            assert slave.offsets.query_all(GROUP, "SyncT") == {1: 42, 3: 7}
            assert slave.offsets.query(GROUP, "Other", 0) == 5
            assert read_config_file(slave, "consumerOffset.json")["offsetTable"][f"SyncT@{GROUP}"] == {1: 42, 3: 7}
            # delay progress, in memory and in delayOffset.json
            assert slave.schedule.offsets.get(1) == master.schedule.offsets[1] >= 1
            assert read_config_file(slave, "delayOffset.json")["offsetTable"][1] == master.schedule.offsets[1]
            # the slave answers what it took over the wire too
            resp = await call(g, slave.broker_addr, RequestCode.QUERY_CONSUMER_OFFSET,
                              h.QueryConsumerOffsetRequestHeader(consumer_group=GROUP, topic="SyncT", queue_id=1))
            assert resp.code == ResponseCode.SUCCESS and resp.ext_fields["offset"] == "42"

            # deletions on the master disappear from the slave with the next round
            resp = await call(g, master.broker_addr, RequestCode.DELETE_TOPIC_IN_BROKER,
                              h.DeleteTopicRequestHeader(topic="Doomed"))
            assert resp.code == ResponseCode.SUCCESS
            # (rmq serves no DELETE_SUBSCRIPTIONGROUP yet: the master's table is changed directly)
            assert master.groups.delete("CG_slow") is not None
            await commit(g, master.broker_addr, "SyncT", 1, 50)
            assert "Doomed" in slave.topics and slave.groups.find("CG_slow") is not None
            await slave.slave_sync.sync_all()
            assert "Doomed" not in slave.topics
            assert slave.groups.find("CG_slow") is None
            assert slave.offsets.query(GROUP, "SyncT", 1) == 50
            assert "Doomed" not in read_config_file(slave, "topics.json")["topicConfigTable"]
            # built-in topics of the slave stay even if the master's table lacks them
            assert "SCHEDULE_TOPIC_XXXX" in slave.topics
    run(main)


def test_a_master_that_is_down_costs_a_logged_error_and_a_retry(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path) as g:
            slave = g.slave
            master_addr = g.master.broker_addr
            await g.stop_master()
            # the registrar has not had a round since: it still names the stopped master
            assert slave.registrar.master_addr == master_addr
            await slave.slave_sync.sync_all()
            assert set(slave.slave_sync.last_errors) == {"topicConfig", "consumerOffset", "delayOffset",
                                                         "subscriptionGroup"}
            # the slave keeps serving meanwhile
            resp = await call(g, slave.broker_addr, RequestCode.GET_ALL_TOPIC_CONFIG)
            assert resp.code == ResponseCode.SUCCESS
            await g.restart_master()
            await create_topic(g, "Later", 2)
            await slave.slave_sync.sync_all()
            assert slave.slave_sync.last_errors == {}
            assert "Later" in slave.topics
    run(main)


def test_garbage_from_the_master_changes_nothing(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path) as g:
            slave = g.slave
            before = slave.topics.data_version
            slave.schedule.offsets[2] = 9
            sync = slave.slave_sync

            async def garbage(master: str, code: int) -> bytes:
                return {RequestCode.GET_ALL_TOPIC_CONFIG: b'{"topicConfigTable": 5}',
                        RequestCode.GET_ALL_CONSUMER_OFFSET: b'{"offsetTable":{"T@G":{"x":1}}}',
                        RequestCode.GET_ALL_DELAY_OFFSET: b'{"offsetTable":{"1":"soon"}}',
                        RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: b'[1,2]'}[code]
            sync._fetch = garbage
            await sync.sync_all()
            assert set(sync.last_errors) == {"topicConfig", "consumerOffset", "delayOffset", "subscriptionGroup"}
            assert slave.topics.data_version == before
            assert slave.schedule.offsets == {2: 9}
            assert slave.offsets.query("G", "T", 0) is None
    run(main)


def test_the_periodic_sync_runs_on_the_broker_clock(tmp_path) -> None:
    """3 s after start, then every 10 s, on a MockClock: the slave sees a new topic only at the next period."""
    clock = trio.testing.MockClock()

    async def main() -> None:
        async with group(tmp_path, clock=BrokerClock(clock), start_sync=True) as g:
            sync = g.slave.slave_sync
            assert sync.rounds == 0
            clock.jump(3.0)
            await wait_rounds(sync, 1)
            assert "T1" not in g.slave.topics
            await create_topic(g, "T1", 1)
            clock.jump(9.0)
            await trio.testing.wait_all_tasks_blocked()
            assert sync.rounds == 1 and "T1" not in g.slave.topics
            clock.jump(1.0)
            await wait_rounds(sync, 2)
            assert "T1" in g.slave.topics
            # the master never runs the loop
            assert g.master.slave_sync.rounds == 0

    async def wait_rounds(sync, n: int) -> None:
        # the round talks to the master over loopback: real time, bounded by run_mock's real timeout
        await sync.wait_rounds(n)

    run_mock(main, clock, real_timeout_s=20)
