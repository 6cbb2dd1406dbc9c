"""Pulls and the slave (PROTOCOL.md §5.6; Java ``PullMessageProcessor``, ``DefaultMessageStore.getMessage``).

The in-memory window is ``accessMessageInMemoryMaxRatio`` % of ``rmqTotalPhysicalMemoryBytes``: 40 % of
10,000 bytes here, so a few dozen small messages cross it. Messages reach the slave by writing through the
slave's own store (``slave.store.put_batch``), not by HA replication, which these tests leave out; its
topic configs come from the master by the metadata sync.
"""
from __future__ import annotations

from broker_wire_support import run
from slave_support import group

from rmq_common._record import decode_records
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

GROUP = "CG_slave_pull"
TOPIC = "SlaveT"
WINDOW = {"rmqTotalPhysicalMemoryBytes": 10_000, "accessMessageInMemoryMaxRatio": 40}     # 4000 bytes
BODY = b"x" * 100


async def pull(g, addr: str, offset: int, *, max_nums: int = 32, queue_id: int = 0, commit_offset: int = -1,
               group_name: str = GROUP) -> RemotingCommand:
    sys_flag = 0x4 | (0x1 if commit_offset >= 0 else 0)
    header = h.PullMessageRequestHeader(
        consumer_group=group_name, topic=TOPIC, queue_id=queue_id, queue_offset=offset, max_msg_nums=max_nums,
        sys_flag=sys_flag, commit_offset=max(commit_offset, 0), suspend_timeout_millis=0, subscription="*",
        sub_version=0, expression_type="TAG")
    return await g.client.invoke(addr, RemotingCommand.request(RequestCode.PULL_MESSAGE, header.to_ext()), 5000)


def answer(resp: RemotingCommand) -> tuple[int, int, int, int]:
    """(code, suggestWhichBrokerId, nextBeginOffset, records in the body)."""
    ext = resp.ext_fields
    count = len(decode_records(bytes(resp.body))) if resp.body else 0
    return resp.code, int(ext["suggestWhichBrokerId"]), int(ext["nextBeginOffset"]), count


async def setup_topic(g, messages: int = 0) -> None:
    """The topic (2 queues) on the master, synced to the slave, and ``messages`` stored in queue 0 of both."""
    resp = await g.client.invoke(g.master.broker_addr, RemotingCommand.request(
        RequestCode.UPDATE_AND_CREATE_TOPIC, h.CreateTopicRequestHeader(
            topic=TOPIC, default_topic="TBW102", read_queue_nums=2, write_queue_nums=2, perm=6,
            topic_filter_type="SINGLE_TAG", topic_sys_flag=0, order=False).to_ext()), 5000)
    assert resp.code == ResponseCode.SUCCESS
    if messages:
        for broker in (g.slave, g.master):
            broker.store.put_batch(TOPIC, [BODY] * messages, 0)
    await g.slave.slave_sync.sync_all()
    assert g.slave.slave_sync.last_errors == {}


async def set_group(g, **fields) -> None:
    body = fastjson.dumps({"groupName": GROUP, "consumeEnable": True, "consumeFromMinEnable": True,
                           "consumeBroadcastEnable": True, "retryQueueNums": 1, "retryMaxTimes": 16, "brokerId": 0,
                           "whichBrokerWhenConsumeSlowly": 1, "notifyConsumerIdsChangedEnable": True, **fields})
    resp = await g.client.invoke(g.master.broker_addr, RemotingCommand.request(
        RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, body), 5000)
    assert resp.code == ResponseCode.SUCCESS
    await g.slave.slave_sync.sync_all()


def record_size(g) -> int:
    result = g.master.store.get_messages(TOPIC, 0, 0, 1, 1 << 20)
    try:
        return int(result.sizes[0])
    finally:
        result.release()


def test_master_suggests_the_slave_only_with_slave_read_enable_and_a_lagging_consumer(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path, master_properties=WINDOW) as g:
            await setup_topic(g, 100)
            master = g.master.broker_addr
            size = record_size(g)
            assert 100 * size > 4000 + 10 * size               # the first records are well outside the window
            # slaveReadEnable=false (default): always the master
            assert answer(await pull(g, master, 0, max_nums=4))[:2] == (ResponseCode.SUCCESS, 0)
            # on: behind the window → whichBrokerWhenConsumeSlowly (1); near the end → the group's brokerId (0)
            g.master.config.update({"slaveReadEnable": "true"})
            assert answer(await pull(g, master, 0, max_nums=4))[:2] == (ResponseCode.SUCCESS, 1)
            assert answer(await pull(g, master, 96, max_nums=4))[:2] == (ResponseCode.SUCCESS, 0)
            # the group's own settings decide the ids
            await set_group(g, whichBrokerWhenConsumeSlowly=2, brokerId=1)
            assert answer(await pull(g, master, 0, max_nums=4))[:2] == (ResponseCode.SUCCESS, 2)
            assert answer(await pull(g, master, 96, max_nums=4))[:2] == (ResponseCode.SUCCESS, 1)
            # with the default memory window (40 % of this host's RAM) nobody is behind
            g.master.config.update({"rmqTotalPhysicalMemoryBytes": "0"})
            assert answer(await pull(g, master, 0, max_nums=4))[:2] == (ResponseCode.SUCCESS, 1)
            # no record found → not "slowly": the group's brokerId
            code, suggest, _, _ = answer(await pull(g, master, 100))
            assert (code, suggest) == (ResponseCode.PULL_NOT_FOUND, 1)
    run(main)


def test_records_outside_the_window_get_the_in_disk_limits(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path, master_properties=WINDOW) as g:
            await setup_topic(g, 100)
            master = g.master.broker_addr
            size = record_size(g)
            # all in disk: 8 messages (maxTransferCountOnMessageInDisk), nextBeginOffset right after them
            assert answer(await pull(g, master, 0))[2:] == (8, 8)
            # all in memory (the last 4000 bytes): up to 32
            tail = 100 - 4000 // size
            code, _, next_offset, count = answer(await pull(g, master, tail))
            assert (code, next_offset, count) == (ResponseCode.SUCCESS, 100, 100 - tail)
            # a batch that starts 3 records outside the window: those count against the disk limits, the
            # rest against the memory limits, record by record (isTheBatchFull)
            start = tail - 3
            code, _, next_offset, count = answer(await pull(g, master, start))
            assert count > 8 and next_offset == 100
            # the byte limit on disk: 3 records' worth
            g.master.config.update({"maxTransferBytesOnMessageInDisk": str(3 * size)})
            assert answer(await pull(g, master, 0))[2:] == (3, 3)
    run(main)


def test_slave_serves_pulls_whatever_slave_read_enable_says(tmp_path) -> None:
    """Java sets PULL_RETRY_IMMEDIATELY for a slave without slaveReadEnable and then overwrites it with the
    store status's code: the slave answers its records, suggesting the master."""
    async def main() -> None:
        async with group(tmp_path, slave_properties=WINDOW) as g:
            await setup_topic(g, 100)
            slave = g.slave.broker_addr
            code, suggest, next_offset, count = answer(await pull(g, slave, 0, max_nums=4, commit_offset=3))
            assert (code, suggest, next_offset, count) == (ResponseCode.SUCCESS, 0, 4, 4)
            # the piggybacked commit offset is not stored by a slave
            assert g.slave.offsets.query(GROUP, TOPIC, 0) is None
            g.slave.config.update({"slaveReadEnable": "true"})
            assert answer(await pull(g, slave, 0, max_nums=4))[:2] == (ResponseCode.SUCCESS, 1)   # stay here
            assert answer(await pull(g, slave, 96, max_nums=4))[:2] == (ResponseCode.SUCCESS, 0)  # back to master
    run(main)


def test_slave_keeps_out_of_range_offsets_unless_offset_check_in_slave(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path) as g:
            await setup_topic(g, 5)
            slave, master = g.slave.broker_addr, g.master.broker_addr
            # beyond the slave's end (it may just be behind its master): keep the offset, go to the master
            assert answer(await pull(g, slave, 9)) == (ResponseCode.PULL_RETRY_IMMEDIATELY, 0, 9, 0)
            # the master corrects it (the store's rule: to the minimum while that is 0, docs/store.md)
            assert answer(await pull(g, master, 9)) == (ResponseCode.PULL_OFFSET_MOVED, 0, 0, 0)
            # an empty queue, offset ≠ 0: the master moves the consumer to 0, the slave does not
            assert answer(await pull(g, master, 3, queue_id=1)) == (ResponseCode.PULL_OFFSET_MOVED, 0, 0, 0)
            assert answer(await pull(g, slave, 3, queue_id=1)) == (ResponseCode.PULL_RETRY_IMMEDIATELY, 0, 3, 0)
            # at the end: nothing new, the offset stays (no correction needed)
            assert answer(await pull(g, slave, 5)) == (ResponseCode.PULL_NOT_FOUND, 0, 5, 0)
            g.slave.config.update({"offsetCheckInSlave": "true"})
            assert answer(await pull(g, slave, 9)) == (ResponseCode.PULL_OFFSET_MOVED, 0, 0, 0)
    run(main)
