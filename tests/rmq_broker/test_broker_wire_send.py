"""SEND_MESSAGE (10), SEND_MESSAGE_V2 (310), SEND_BATCH_MESSAGE (320) against a running broker, over the wire.

What a producer sees (reply code, msgId, queueId/queueOffset) and what a consumer then pulls (the stored
record: hosts, properties, sysflag, body) — PROTOCOL.md §4.3–4.9, CAPTURES.md §3.4.
"""
from __future__ import annotations

import zlib

import trio
from broker_wire_support import props, run, wire

from rmq_common._record import decode_records, encode_batch_body
from rmq_common.msgid import decode_offset_msg_id
from rmq_remoting import RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h


def test_send_10_and_310_reply_and_stored_record(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("SendT", 4)
            host, port = w.addr.split(":")
            sent = [
                await w.send_ok("SendT", b"one", code=RequestCode.SEND_MESSAGE, queue_id=2, flag=7,
                                properties=props(TAGS="TagA", KEYS="k1 k2", UNIQ_KEY="U1", WAIT="true"),
                                born_timestamp=1_700_000_000_000),
                await w.send_ok("SendT", b"two", code=RequestCode.SEND_MESSAGE_V2, queue_id=2,
                                properties=props(TAGS="TagB", WAIT="false")),
                # CPP's form: every pair ends with U+0002
                await w.send_ok("SendT", b"three", queue_id=2, properties="TAGS\x01TagC\x02WAIT\x01true\x02"),
            ]
            assert [s.queue_id for s in sent] == [2, 2, 2]
            assert [s.queue_offset for s in sent] == [0, 1, 2]
            ids = [decode_offset_msg_id(s.msg_id) for s in sent]
            assert all(s.msg_id == s.msg_id.upper() and len(s.msg_id) == 32 for s in sent)
            assert {(i[0], i[1]) for i in ids} == {(host, int(port))}

            records = await w.pull_records("SendT", 2, 0)
            assert [r.body for r in records] == [b"one", b"two", b"three"]
            assert [r.commit_log_offset for r in records] == [i[2] for i in ids]
            assert [r.queue_offset for r in records] == [0, 1, 2]
            local = w.client.connection_for(w.addr).local_address[:2]
            for r in records:
                assert r.topic == "SendT" and r.queue_id == 2
                assert r.born_host == local                      # the TCP peer as the broker saw it
                assert r.store_host == (host, int(port))
                assert r.properties["CLUSTER"] == "DefaultCluster"
                assert "WAIT" not in r.properties                # PROTOCOL.md §4.3: the broker drops WAIT
            one = records[0]
            assert one.flag == 7 and one.born_timestamp == 1_700_000_000_000
            assert one.properties == {"TAGS": "TagA", "KEYS": "k1 k2", "UNIQ_KEY": "U1", "CLUSTER": "DefaultCluster"}
            assert records[2].properties == {"TAGS": "TagC", "CLUSTER": "DefaultCluster"}

            # the reply's ext fields besides the header
            resp = await w.send("SendT", b"four", queue_id=0)
            assert resp.ext_fields["MSG_REGION"] == "DefaultRegion" and resp.ext_fields["TRACE_ON"] == "true"
    run(main)


def test_batch_send_320_and_10_with_batch_flag(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("BatchT", 2)
            bodies = [b"b0", b"b1", b"b2"]
            item_props = [props(KEYS="k0", UNIQ_KEY="u0"), props(UNIQ_KEY="u1") + "\x02", None]
            body = encode_batch_body(bodies, item_props, [0, 3, 5])
            expected_offset = 0
            variants = [(RequestCode.SEND_BATCH_MESSAGE, None), (RequestCode.SEND_MESSAGE, "1"),
                        (RequestCode.SEND_MESSAGE, "true")]
            for code, batch_flag in variants:
                header = w.send_header("BatchT", queue_id=1, properties=props(WAIT="true"), batch=True)
                if code == RequestCode.SEND_MESSAGE:
                    ext = header.to_ext()
                    ext["batch"] = batch_flag                    # CPP sends "1" (CAPTURES.md §3.4)
                else:
                    ext = header.to_v2().to_ext()
                    del ext["m"]                                 # 320 means batch whatever "m" says
                resp = await w.call(code, ext, body)
                assert resp.code == ResponseCode.SUCCESS, (code, resp.remark)
                reply = h.SendMessageResponseHeader.decode(resp.ext_fields)
                assert reply.queue_id == 1 and reply.queue_offset == expected_offset
                ids = reply.msg_id.split(",")
                assert len(ids) == 3
                phys = [decode_offset_msg_id(i)[2] for i in ids]

                records = await w.pull_records("BatchT", 1, expected_offset)
                assert [r.body for r in records] == bodies
                assert [r.queue_offset for r in records] == [expected_offset + i for i in range(3)]
                assert [r.commit_log_offset for r in records] == phys
                assert [r.flag for r in records] == [0, 3, 5]
                assert records[0].properties == {"KEYS": "k0", "UNIQ_KEY": "u0", "WAIT": "true",
                                                 "CLUSTER": "DefaultCluster"}
                assert records[1].properties == {"UNIQ_KEY": "u1", "WAIT": "true", "CLUSTER": "DefaultCluster"}
                assert records[2].properties == {"WAIT": "true", "CLUSTER": "DefaultCluster"}
                expected_offset += 3
            # batch "0" on code 10: the body is one message, stored as it is
            header = w.send_header("BatchT", queue_id=1)
            ext = header.to_ext()
            ext["batch"] = "0"
            resp = await w.call(RequestCode.SEND_MESSAGE, ext, body)
            assert resp.code == ResponseCode.SUCCESS and "," not in resp.ext_fields["msgId"]
            assert (await w.pull_records("BatchT", 1, expected_offset))[0].body == body
    run(main)


def test_random_queue_compressed_body_and_born_host(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("AnyQ", 3)
            seen = set()
            for i in range(30):
                reply = await w.send_ok("AnyQ", b"m%d" % i, queue_id=-1)
                assert 0 <= reply.queue_id < 3
                seen.add(reply.queue_id)
            assert len(seen) > 1                          # random, not always queue 0
            counts = await w.max_offsets("AnyQ", 3)
            assert sum(counts) == 30

            raw = b"x" * 10_000
            packed = zlib.compress(raw, 5)
            reply = await w.send_ok("AnyQ", packed, queue_id=0, sys_flag=0x301)
            [record] = await w.pull_records("AnyQ", 0, reply.queue_offset, max_nums=1)
            assert record.sys_flag == 0x301 and record.body == packed       # stored as sent
            assert zlib.decompress(record.body) == raw
    run(main)


def test_auto_create_from_tbw102_registers_the_route(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            assert (await w.route("AutoT")).code == ResponseCode.TOPIC_NOT_EXIST
            reply = await w.send_ok("AutoT", b"auto", queue_id=-1, default_topic_queue_nums=16)
            assert 0 <= reply.queue_id < 8
            await w.send_ok("AutoSmall", b"auto", queue_id=0, default_topic_queue_nums=2)

            resp = await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)
            table = fastjson.loads(resp.body)["topicConfigTable"]
            auto = table["AutoT"]
            assert (auto["readQueueNums"], auto["writeQueueNums"], auto["perm"]) == (8, 8, 6)   # min(16, 8), no INHERIT
            assert (table["AutoSmall"]["readQueueNums"], table["AutoSmall"]["writeQueueNums"]) == (2, 2)

            # the broker re-registers: the nameserver now routes the topic
            while True:
                resp = await w.route("AutoT")
                if resp.code == ResponseCode.SUCCESS:
                    break
                await trio.sleep(0.01)
            route = fastjson.loads(resp.body)
            [qd] = route["queueDatas"]
            assert (qd["brokerName"], qd["readQueueNums"], qd["writeQueueNums"], qd["perm"]) == ("broker-a", 8, 8, 6)
            addrs = route["brokerDatas"][0]["brokerAddrs"]
            assert addrs.get(0, addrs.get("0")) == w.addr

            # only a template topic (INHERIT, i.e. TBW102) creates topics; nothing is stored otherwise
            for template in ("NoSuchTemplate", "AutoT"):
                resp = await w.send("AutoBad", b"x", queue_id=0, default_topic=template)
                assert resp.code == ResponseCode.TOPIC_NOT_EXIST, (template, resp.code)
            assert "AutoBad" not in fastjson.loads((await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)).body)[
                "topicConfigTable"]
    run(main)


def test_auto_create_disabled_answers_topic_not_exist(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"autoCreateTopicEnable": "false"}) as w:
            resp = await w.send("NoAuto", b"x", queue_id=0)
            assert resp.code == ResponseCode.TOPIC_NOT_EXIST
            assert "NoAuto" in resp.remark
            resp = await w.call(RequestCode.GET_ALL_TOPIC_CONFIG)
            assert "NoAuto" not in fastjson.loads(resp.body)["topicConfigTable"]
            assert await w.max_offset("NoAuto", 0) == 0
            await w.create_topic("NoAuto", 1)
            await w.send_ok("NoAuto", b"x", queue_id=0)         # same connection, now accepted
    run(main)


def test_refusals_store_nothing_and_keep_the_connection(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties={"maxMessageSize": "8192"}) as w:
            await w.create_topic("RefT", 2)
            await w.send_ok("RefT", b"first", queue_id=0)
            conn = w.client.connection_for(w.addr)
            before = await w.max_offsets("RefT", 2)
            commitlog_end = w.cluster.broker.store.max_phy_offset

            async def refused(expected_code: int, resp, *remark_parts: str) -> None:
                assert resp.code == expected_code, (resp.code, resp.remark)
                assert resp.remark, "a refusal carries a remark"
                for part in remark_parts:
                    assert part in resp.remark, (part, resp.remark)
                assert await w.max_offsets("RefT", 2) == before
                assert w.cluster.broker.store.max_phy_offset == commitlog_end
                assert w.client.connection_for(w.addr) is conn      # same socket, still answering
                assert (await w.call(RequestCode.GET_MAX_OFFSET,
                                     h.GetMaxOffsetRequestHeader(topic="RefT", queue_id=0))).code == 0

            # illegal topic names (TopicValidator: [%|a-zA-Z0-9_-], 1..127 characters)
            for bad in ("a.b", "with space", "", "x" * 128, "tópico"):
                await refused(ResponseCode.SYSTEM_ERROR, await w.send(bad, b"x", queue_id=0), "topic")
            # body above maxMessageSize
            await refused(ResponseCode.MESSAGE_ILLEGAL, await w.send("RefT", b"x" * 8193, queue_id=0))
            # a queue the topic does not have
            await refused(ResponseCode.SYSTEM_ERROR, await w.send("RefT", b"x", queue_id=2), "queueId[2]")
            # a mandatory header field missing: named in the remark (V2 short name / long name)
            ext = w.send_header("RefT").to_v2().to_ext()
            del ext["b"]
            await refused(ResponseCode.SYSTEM_ERROR, await w.call(RequestCode.SEND_MESSAGE_V2, ext, b"x"), "<b>")
            ext = w.send_header("RefT").to_ext()
            del ext["producerGroup"]
            await refused(ResponseCode.SYSTEM_ERROR, await w.call(RequestCode.SEND_MESSAGE, ext, b"x"),
                          "producerGroup")
            ext = w.send_header("RefT").to_ext()
            ext["queueId"] = "zero"
            await refused(ResponseCode.SYSTEM_ERROR, await w.call(RequestCode.SEND_MESSAGE, ext, b"x"), "queueId")
            # malformed batch bodies
            good = encode_batch_body([b"a", b"b"])
            for bad_body in (b"", b"\x00\x00", good[:-1], good + b"\x00", b"\xff" * 40):
                ext = w.send_header("RefT", queue_id=0).to_v2().to_ext()
                await refused(ResponseCode.MESSAGE_ILLEGAL,
                              await w.call(RequestCode.SEND_BATCH_MESSAGE, ext, bad_body or None))
            # a batch with one item above maxMessageSize stores none of it
            ext = w.send_header("RefT", queue_id=0).to_v2().to_ext()
            await refused(ResponseCode.MESSAGE_ILLEGAL,
                          await w.call(RequestCode.SEND_BATCH_MESSAGE, ext, encode_batch_body([b"a", b"x" * 9000])))
            # topics only the broker writes
            for system in ("SCHEDULE_TOPIC_XXXX", "RMQ_SYS_TRANS_HALF_TOPIC", "OFFSET_MOVED_EVENT"):
                await refused(ResponseCode.NO_PERMISSION, await w.send(system, b"x", queue_id=0), system)

            # and the same connection still sends
            reply = await w.send_ok("RefT", b"after", queue_id=0)
            assert reply.queue_offset == before[0]
            assert w.client.connection_for(w.addr) is conn
    run(main)


def test_write_forbidden_topic_answers_no_permission(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("ReadOnly", 1, perm=4)
            resp = await w.send("ReadOnly", b"x", queue_id=0)
            assert resp.code == ResponseCode.NO_PERMISSION and "ReadOnly" in resp.remark
            assert await w.max_offset("ReadOnly", 0) == 0
    run(main)


def test_decoded_records_of_a_whole_queue(tmp_path) -> None:
    """Many sends on one queue, pulled back in pages: order, offsets and bodies survive."""
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("Many", 1)
            bodies = [b"msg-%04d" % i for i in range(100)]
            async with trio.open_nursery() as nursery:      # concurrent sends on one connection
                for i in range(0, 100, 10):
                    async def chunk(lo: int = i) -> None:
                        await w.send_ok("Many", encode_batch_body(bodies[lo:lo + 10]),
                                        code=RequestCode.SEND_BATCH_MESSAGE, queue_id=0)
                    nursery.start_soon(chunk)
            got = []
            offset = 0
            while offset < 100:
                resp = await w.pull("Many", 0, offset, max_nums=32)
                assert resp.code == ResponseCode.SUCCESS
                records = decode_records(bytes(resp.body))
                assert [r.queue_offset for r in records] == list(range(offset, offset + len(records)))
                got += [r.body for r in records]
                offset = int(resp.ext_fields["nextBeginOffset"])
            assert sorted(got) == bodies and len(got) == 100
            # each batch is contiguous: its ten items in order
            for i in range(0, 100, 10):
                assert got[i:i + 10] == sorted(got[i:i + 10])
    run(main)
