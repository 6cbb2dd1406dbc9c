"""Offsets over the wire: consumer progress (QUERY/UPDATE_CONSUMER_OFFSET, GET_ALL_CONSUMER_OFFSET), queue bounds
(GET_MAX/MIN_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME), and consumerOffset.json at shutdown
and after a restart (PROTOCOL.md §5.5, §6.5; CAPTURES.md §3.7).
"""
from __future__ import annotations

import time

import trio
from broker_wire_support import GROUP, run, wire

from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h


async def update_offset(w, topic: str, queue_id: int, offset: int, group: str = GROUP) -> None:
    resp = await w.call(RequestCode.UPDATE_CONSUMER_OFFSET, h.UpdateConsumerOffsetRequestHeader(
        consumer_group=group, topic=topic, queue_id=queue_id, commit_offset=offset))
    assert resp.code == ResponseCode.SUCCESS, resp.remark


async def queried(w, topic: str, queue_id: int, group: str = GROUP) -> int:
    resp = await w.query_offset(topic, queue_id, group)
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return h.QueryConsumerOffsetResponseHeader.decode(resp.ext_fields).offset


def test_consumer_offsets_query_update_all_and_persisted(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("OffT", 2)
            for i in range(3):
                await w.send_ok("OffT", b"%d" % i, queue_id=0)
            # a new group on a queue starting at 0: SUCCESS 0 (not 22), with or without messages
            assert await queried(w, "OffT", 0, "NewGroup") == 0
            assert await queried(w, "OffT", 1, "NewGroup") == 0
            await update_offset(w, "OffT", 0, 2)
            await update_offset(w, "OffT", 1, 0)
            await update_offset(w, "OffT", 0, 3, group="G2")
            assert await queried(w, "OffT", 0) == 2
            assert await queried(w, "OffT", 0, "G2") == 3
            await update_offset(w, "OffT", 0, 1)                   # moving back is allowed (reset)
            assert await queried(w, "OffT", 0) == 1
            # oneway commits (how clients usually send them) land too
            ext = h.UpdateConsumerOffsetRequestHeader(consumer_group=GROUP, topic="OffT", queue_id=0,
                                                      commit_offset=2).to_ext()
            await w.client.invoke_oneway(w.addr, RemotingCommand.request(RequestCode.UPDATE_CONSUMER_OFFSET, ext,
                                                                         oneway=True))
            while await queried(w, "OffT", 0) != 2:
                await trio.sleep(0.005)

            resp = await w.call(RequestCode.GET_ALL_CONSUMER_OFFSET)
            assert resp.code == ResponseCode.SUCCESS
            table = fastjson.loads(resp.body)["offsetTable"]
            assert table[f"OffT@{GROUP}"] == {0: 2, 1: 0}
            assert table["OffT@G2"] == {0: 3}

            # a missing mandatory field is named; the connection goes on
            resp = await w.call(RequestCode.QUERY_CONSUMER_OFFSET, {"topic": "OffT", "queueId": "0"})
            assert resp.code == ResponseCode.SYSTEM_ERROR and "consumerGroup" in resp.remark
            resp = await w.call(RequestCode.UPDATE_CONSUMER_OFFSET, {"topic": "OffT", "queueId": "0",
                                                                     "consumerGroup": GROUP, "commitOffset": "x"})
            assert resp.code == ResponseCode.SYSTEM_ERROR and "commitOffset" in resp.remark
            assert await queried(w, "OffT", 0) == 2

        # written at shutdown, in RocketMQ's form: topic@group, bare integer queue ids
        path = tmp_path / "broker-a" / "config" / "consumerOffset.json"
        data = fastjson.loads(path.read_bytes())
        assert data["offsetTable"][f"OffT@{GROUP}"] == {0: 2, 1: 0}
        assert data["offsetTable"]["OffT@G2"] == {0: 3}
        assert b'{0:2,1:0}' in path.read_bytes().replace(b"\n", b"").replace(b"\t", b"").replace(b" ", b"")

        # a restarted broker answers from the file; topics and messages are still there
        async with wire(tmp_path) as w:
            assert await queried(w, "OffT", 0) == 2
            assert await queried(w, "OffT", 0, "G2") == 3
            assert await w.max_offset("OffT", 0) == 3
            records = await w.pull_records("OffT", 0, 2)
            assert [r.body for r in records] == [b"2"]
    run(main)


def test_queue_bounds_search_by_time_and_earliest_store_time(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("BoundT", 2)
            before = int(time.time() * 1000) - 1
            for i in range(5):
                await w.send_ok("BoundT", b"%d" % i, queue_id=0)
                await trio.sleep(0.004)                        # distinct store times
            records = await w.pull_records("BoundT", 0, 0)
            times = [r.store_timestamp for r in records]
            assert times == sorted(times) and len(set(times)) == 5

            async def offset_of(code: int, header, response_cls) -> int:
                resp = await w.call(code, header)
                assert resp.code == ResponseCode.SUCCESS, (code, resp.remark)
                return response_cls.decode(resp.ext_fields)

            assert (await offset_of(RequestCode.GET_MAX_OFFSET, h.GetMaxOffsetRequestHeader(topic="BoundT", queue_id=0),
                                    h.GetMaxOffsetResponseHeader)).offset == 5
            assert (await offset_of(RequestCode.GET_MIN_OFFSET, h.GetMinOffsetRequestHeader(topic="BoundT", queue_id=0),
                                    h.GetMinOffsetResponseHeader)).offset == 0
            # empty and unknown queues: 0
            assert await w.max_offset("BoundT", 1) == 0
            assert await w.max_offset("Unknown", 0) == 0

            async def search(ts: int) -> int:
                return (await offset_of(RequestCode.SEARCH_OFFSET_BY_TIMESTAMP,
                                        h.SearchOffsetRequestHeader(topic="BoundT", queue_id=0, timestamp=ts),
                                        h.SearchOffsetResponseHeader)).offset

            for i, ts in enumerate(times):
                assert await search(ts) == i
            assert await search(before - 10_000) == 0
            # after the last message: the last unit (Java's getOffsetInQueueByTime)
            assert await search(times[-1] + 60_000) == 4

            earliest = await offset_of(RequestCode.GET_EARLIEST_MSG_STORETIME,
                                       h.GetEarliestMsgStoretimeRequestHeader(topic="BoundT", queue_id=0),
                                       h.GetEarliestMsgStoretimeResponseHeader)
            assert earliest.timestamp == times[0]
    run(main)
