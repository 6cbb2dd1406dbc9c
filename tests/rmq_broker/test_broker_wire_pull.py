"""PULL_MESSAGE (11) against a running broker, over the wire: statuses and next offsets (PROTOCOL.md §5.2),
server-side tag filtering, the heartbeat's subscription, refusals, and the commit-offset piggyback (§5.4).
"""
from __future__ import annotations

from broker_wire_support import GROUP, props, run, wire

from rmq_common._record import decode_records
from rmq_remoting import RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

SUB = 0x4           # PullSysFlag: subscription in the request
COMMIT = 0x1        # PullSysFlag: commit offset piggyback


def pull_ext(resp) -> tuple[int, int, int]:
    header = h.PullMessageResponseHeader.decode(resp.ext_fields)
    assert header.suggest_which_broker_id == 0
    return header.next_begin_offset, header.min_offset, header.max_offset


def test_found_not_found_and_offset_moved(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("PullT", 2)
            # empty queue: offset 0 → 19, any other offset → 21, next offset 0
            resp = await w.pull("PullT", 0, 0)
            assert (resp.code, resp.body) == (ResponseCode.PULL_NOT_FOUND, None)
            assert pull_ext(resp) == (0, 0, 0)
            resp = await w.pull("PullT", 0, 5)
            assert resp.code == ResponseCode.PULL_OFFSET_MOVED and pull_ext(resp)[0] == 0

            for i in range(10):
                await w.send_ok("PullT", b"m%d" % i, queue_id=0)
            resp = await w.pull("PullT", 0, 0, max_nums=4)
            assert resp.code == ResponseCode.SUCCESS and resp.remark == "FOUND"
            assert [r.body for r in decode_records(bytes(resp.body))] == [b"m0", b"m1", b"m2", b"m3"]
            assert pull_ext(resp) == (4, 0, 10)
            records = await w.pull_records("PullT", 0, 4)
            assert [r.body for r in records] == [b"m%d" % i for i in range(4, 10)]
            assert [r.queue_offset for r in records] == list(range(4, 10))

            # at the end: 19 with nextBeginOffset = the offset asked for
            resp = await w.pull("PullT", 0, 10)
            assert resp.code == ResponseCode.PULL_NOT_FOUND and resp.body is None
            assert pull_ext(resp) == (10, 0, 10)
            # beyond the end: 21; Java corrects to the min offset when it is 0, else the max (getMessage)
            resp = await w.pull("PullT", 0, 11)
            assert resp.code == ResponseCode.PULL_OFFSET_MOVED
            assert pull_ext(resp) == (0, 0, 10)
            resp = await w.pull("PullT", 0, 1 << 40)
            assert resp.code == ResponseCode.PULL_OFFSET_MOVED
            # below the min offset: 21 with the min offset (OFFSET_TOO_SMALL)
            resp = await w.pull("PullT", 0, -3)
            assert resp.code == ResponseCode.PULL_OFFSET_MOVED and pull_ext(resp) == (0, 0, 10)
            # the other queue is still empty
            assert (await w.pull("PullT", 1, 0)).code == ResponseCode.PULL_NOT_FOUND
            # maxMsgNums 0 still returns the first match (Java's isTheBatchFull)
            resp = await w.pull("PullT", 0, 0, max_nums=0)
            assert resp.code == ResponseCode.SUCCESS and len(decode_records(bytes(resp.body))) >= 1
    run(main)


def test_server_side_tag_filtering(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("TagT", 1)
            tags = ["TagA", "TagC", "TagB", None, "TagA", "TagC", "TagC", "TagC"]
            for i, tag in enumerate(tags):
                await w.send_ok("TagT", b"%d" % i, queue_id=0, properties=props(TAGS=tag) if tag else None)
            resp = await w.pull("TagT", 0, 0, subscription="TagA||TagB")
            assert resp.code == ResponseCode.SUCCESS
            records = decode_records(bytes(resp.body))
            assert [(r.queue_offset, r.tags) for r in records] == [(0, "TagA"), (2, "TagB"), (4, "TagA")]
            assert pull_ext(resp)[0] == 8                   # everything scanned
            # " TagB " is trimmed, as Java's FilterAPI does
            records = await w.pull_records("TagT", 0, 0, subscription=" TagB ")
            assert [r.queue_offset for r in records] == [2]
            # from offset 5 only TagC follows: nothing matched → 20 with the offset past the scanned units
            resp = await w.pull("TagT", 0, 5, subscription="TagA||TagB")
            assert resp.code == ResponseCode.PULL_RETRY_IMMEDIATELY and resp.body is None
            assert pull_ext(resp) == (8, 0, 8)
            # "*" and an empty subscription match everything, untagged included
            for sub in ("*", ""):
                records = await w.pull_records("TagT", 0, 0, subscription=sub)
                assert len(records) == 8
    run(main)


def test_subscription_from_the_heartbeat(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("HbT", 1)
            await w.create_topic("Other", 1)
            await w.send_ok("HbT", b"a", queue_id=0, properties=props(TAGS="TagA"))
            await w.send_ok("HbT", b"b", queue_id=0, properties=props(TAGS="TagB"))
            # no subscription bit and no heartbeat: 24
            resp = await w.pull("HbT", 0, 0, sys_flag=0, subscription=None)
            assert resp.code == ResponseCode.SUBSCRIPTION_NOT_EXIST and resp.remark
            # the group's heartbeat subscribes HbT to TagB only: the broker filters with it
            assert (await w.heartbeat("client-1", GROUP, {"HbT": "TagB"})).code == ResponseCode.SUCCESS
            # the heartbeat created the group's retry topic (1 queue, read-write)
            resp = await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)
            retry = fastjson.loads(resp.body)["topicConfigTable"][f"%RETRY%{GROUP}"]
            assert (retry["readQueueNums"], retry["writeQueueNums"], retry["perm"]) == (1, 1, 6)
            resp = await w.pull("HbT", 0, 0, sys_flag=0, subscription=None)
            assert resp.code == ResponseCode.SUCCESS
            assert [r.body for r in decode_records(bytes(resp.body))] == [b"b"]
            # a topic the group did not subscribe: 24
            resp = await w.pull("Other", 0, 0, sys_flag=0, subscription=None)
            assert resp.code == ResponseCode.SUBSCRIPTION_NOT_EXIST
            # a request newer than the heartbeat's subscription: 25
            resp = await w.pull("HbT", 0, 0, sys_flag=0, subscription=None, sub_version=2)
            assert resp.code == ResponseCode.SUBSCRIPTION_NOT_LATEST
            # the subscription bit overrides the heartbeat
            records = await w.pull_records("HbT", 0, 0, subscription="*")
            assert len(records) == 2
    run(main)


def test_pull_refusals(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("RQ", 4, read_queues=2)
            await w.send_ok("RQ", b"x", queue_id=3)
            conn = w.client.connection_for(w.addr)
            resp = await w.pull("NoSuchTopic", 0, 0)
            assert resp.code == ResponseCode.TOPIC_NOT_EXIST and "NoSuchTopic" in resp.remark
            for qid in (2, 3, 99, -1):
                resp = await w.pull("RQ", qid, 0)
                assert resp.code == ResponseCode.SYSTEM_ERROR and f"queueId[{qid}]" in resp.remark
            resp = await w.pull("RQ", 0, 0, subscription="a||b", sys_flag=SUB)
            assert resp.code == ResponseCode.PULL_NOT_FOUND
            # SQL92 without enablePropertyFilter
            ext = w.pull_header("RQ", 0, 0).to_ext()
            ext["expressionType"] = "SQL92"
            ext["subscription"] = "a > 1"
            resp = await w.call(RequestCode.PULL_MESSAGE, ext)
            assert resp.code == ResponseCode.SYSTEM_ERROR and "SQL92" in resp.remark
            # a missing mandatory field is named
            ext = w.pull_header("RQ", 0, 0).to_ext()
            del ext["queueOffset"]
            resp = await w.call(RequestCode.PULL_MESSAGE, ext)
            assert resp.code == ResponseCode.SYSTEM_ERROR and "queueOffset" in resp.remark
            # a group whose consumption is disabled
            body = b'{"groupName":"Off","consumeEnable":false}'
            assert (await w.call(RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, None, body)).code == 0
            resp = await w.pull("RQ", 0, 0, group="Off")
            assert resp.code == ResponseCode.NO_PERMISSION
            # a topic without the READ permission
            await w.create_topic("WriteOnly", 1, perm=2)
            resp = await w.pull("WriteOnly", 0, 0)
            assert resp.code == ResponseCode.NO_PERMISSION and "WriteOnly" in resp.remark
            assert w.client.connection_for(w.addr) is conn
    run(main)


def test_commit_offset_piggyback(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("CommitT", 1)
            for i in range(5):
                await w.send_ok("CommitT", b"%d" % i, queue_id=0)
            resp = await w.pull("CommitT", 0, 3, sys_flag=SUB | COMMIT, commit_offset=3)
            assert resp.code == ResponseCode.SUCCESS
            resp = await w.query_offset("CommitT", 0)
            assert resp.code == ResponseCode.SUCCESS
            assert h.QueryConsumerOffsetResponseHeader.decode(resp.ext_fields).offset == 3
            # without the bit, commitOffset is ignored
            await w.pull("CommitT", 0, 4, sys_flag=SUB, commit_offset=4)
            resp = await w.query_offset("CommitT", 0)
            assert h.QueryConsumerOffsetResponseHeader.decode(resp.ext_fields).offset == 3
            # also stored when the pull finds nothing
            resp = await w.pull("CommitT", 0, 5, sys_flag=SUB | COMMIT, commit_offset=5)
            assert resp.code == ResponseCode.PULL_NOT_FOUND
            resp = await w.query_offset("CommitT", 0)
            assert h.QueryConsumerOffsetResponseHeader.decode(resp.ext_fields).offset == 5
    run(main)
