"""SQL92 property filtering over the wire (issue #5): PULL_MESSAGE with ``expressionType`` SQL92 in the request
(sysFlag 0x4) or from the heartbeat, with and without ``enablePropertyFilter``, the scan bound and next
offsets, long polling, and CHECK_CLIENT_CONFIG (46), which Java consumers send at start.
"""
from __future__ import annotations

import orjson
import trio
from broker_wire_support import GROUP, PRODUCER_GROUP, Wire, props, run, wire

from rmq_common._record import decode_records, encode_batch_body
from rmq_common.properties import encode_properties
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

SUB = 0x4
SUSPEND = 0x2
CHECK_CLIENT_CONFIG = 46
FILTER_ON = {"enablePropertyFilter": "true"}


def sql_header(w: Wire, topic: str, expression: str, offset: int = 0, *, queue_id: int = 0, max_nums: int = 32,
               sys_flag: int = SUB, suspend_ms: int = 0, expression_type: str = "SQL92",
               group: str = GROUP) -> dict[str, str]:
    ext = w.pull_header(topic, queue_id, offset, group=group, max_nums=max_nums, sys_flag=sys_flag,
                        subscription=expression, suspend_ms=suspend_ms).to_ext()
    ext["expressionType"] = expression_type
    return ext


async def sql_pull(w: Wire, topic: str, expression: str, offset: int = 0, **kw) -> RemotingCommand:
    return await w.call(RequestCode.PULL_MESSAGE, sql_header(w, topic, expression, offset, **kw), timeout_ms=10_000)


def next_offset(resp: RemotingCommand) -> int:
    return h.PullMessageResponseHeader.decode(resp.ext_fields).next_begin_offset


def bodies(resp: RemotingCommand) -> list[bytes]:
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return [r.body for r in decode_records(bytes(resp.body))]


async def send_batch(w: Wire, topic: str, items: list[tuple[bytes, dict[str, str]]]) -> None:
    body = encode_batch_body([b for b, _ in items], [encode_properties(p) for _, p in items])
    await w.send_ok(topic, body, code=RequestCode.SEND_BATCH_MESSAGE, queue_id=0)


async def heartbeat(w: Wire, client_id: str, topic: str, expression: str, expression_type: str = "SQL92",
                    sub_version: int = 1) -> RemotingCommand:
    body = orjson.dumps({"clientID": client_id, "consumerDataSet": [
        {"consumeFromWhere": "CONSUME_FROM_LAST_OFFSET", "consumeType": "CONSUME_PASSIVELY", "groupName": GROUP,
         "messageModel": "CLUSTERING", "unitMode": False, "subscriptionDataSet": [
             {"classFilterMode": False, "codeSet": [], "expressionType": expression_type, "subString": expression,
              "subVersion": sub_version, "tagsSet": [], "topic": topic}]}],
        "producerDataSet": [{"groupName": PRODUCER_GROUP}]})
    return await w.call(RequestCode.HEART_BEAT, None, body)


async def check_client(w: Wire, expression: str | None, expression_type: str | None = "SQL92") -> RemotingCommand:
    body = orjson.dumps({"clientId": "c1", "group": GROUP, "subscriptionData": {
        "classFilterMode": False, "codeSet": [], "expressionType": expression_type, "subString": expression,
        "subVersion": 1, "tagsSet": [], "topic": "T"}})
    return await w.call(CHECK_CLIENT_CONFIG, None, body)


MESSAGES = [
    (b"m0", {"a": "1", "TAGS": "TagA", "region": "eu"}),
    (b"m1", {"a": "7", "TAGS": "TagB", "region": "us"}),
    (b"m2", {"TAGS": "TagA"}),                                   # no "a"
    (b"m3", {"a": "10", "TAGS": "TagA", "region": "eu"}),
    (b"m4", {"a": "abc", "TAGS": "TagA", "region": "eu"}),      # not a number
    (b"m5", {"a": "6", "region": "eu", "note": "it's"}),         # no tag
]


def test_pull_returns_only_matching_records(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            await w.create_topic("SqlT", 1)
            for body, p in MESSAGES:
                await w.send_ok("SqlT", body, queue_id=0, properties=props(**p))
            cases = {
                "a > 5": [b"m1", b"m3", b"m5"],
                "a > 5 AND TAGS = 'TagA'": [b"m3"],
                "TAGS IN ('TagA') AND region = 'eu'": [b"m0", b"m3", b"m4"],
                "a IS NULL": [b"m2"],
                "TAGS IS NULL OR a BETWEEN 2 AND 8": [b"m1", b"m5"],
                "region <> 'eu'": [b"m1"],
                "NOT (region = 'eu') OR note = 'it''s'": [b"m1", b"m5"],
                "a > 5 OR TAGS = 'TagA'": [b"m0", b"m1", b"m2", b"m3", b"m5"],   # m4: a > 5 fails first
                "TAGS = 'TagA' OR a > 5": [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5"],
                "TRUE": [b"m0", b"m1", b"m2", b"m3", b"m4", b"m5"],
            }
            for expression, expected in cases.items():
                resp = await sql_pull(w, "SqlT", expression)
                assert bodies(resp) == expected, expression
                assert resp.remark == "FOUND"
                assert next_offset(resp) == len(MESSAGES), expression
            # the records are the stored ones, properties and all
            [record] = decode_records(bytes((await sql_pull(w, "SqlT", "a = 10")).body))
            assert (record.queue_offset, record.properties["region"], record.tags) == (3, "eu", "TagA")
            # nothing matches: 20 with nextBeginOffset past every unit examined
            resp = await sql_pull(w, "SqlT", "a > 100")
            assert (resp.code, resp.body, resp.remark) == (ResponseCode.PULL_RETRY_IMMEDIATELY, None,
                                                           "NO_MATCHED_MESSAGE")
            assert next_offset(resp) == len(MESSAGES)
            resp = await sql_pull(w, "SqlT", "a > 5", 4)
            assert bodies(resp) == [b"m5"] and next_offset(resp) == 6
            # at the end of the queue: 19, as for any pull
            resp = await sql_pull(w, "SqlT", "a > 5", 6)
            assert resp.code == ResponseCode.PULL_NOT_FOUND and next_offset(resp) == 6
    run(main)


def test_max_msg_nums_and_next_offset(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            await w.create_topic("NumT", 1)
            await send_batch(w, "NumT", [(b"%d" % i, {"n": str(i)}) for i in range(20)])
            resp = await sql_pull(w, "NumT", "n >= 5", max_nums=3)
            assert bodies(resp) == [b"5", b"6", b"7"]
            assert next_offset(resp) == 8                  # just past the last record returned
            resp = await sql_pull(w, "NumT", "n >= 5", 8, max_nums=3)
            assert bodies(resp) == [b"8", b"9", b"10"] and next_offset(resp) == 11
            # every third message matches, across several store reads
            resp = await sql_pull(w, "NumT", "n = 0 OR n = 9 OR n = 19")
            assert bodies(resp) == [b"0", b"9", b"19"] and next_offset(resp) == 20
    run(main)


def test_scan_bound_of_800_units(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            await w.create_topic("ScanT", 1)
            for lo in range(0, 1000, 100):
                await send_batch(w, "ScanT", [(b"%d" % i, {"n": str(i)}) for i in range(lo, lo + 100)])
            # the match lies beyond what one pull examines (RocketMQ: 16000 bytes of units = 800)
            resp = await sql_pull(w, "ScanT", "n = 950")
            assert resp.code == ResponseCode.PULL_RETRY_IMMEDIATELY and next_offset(resp) == 800
            resp = await sql_pull(w, "ScanT", "n = 950", 800)
            assert bodies(resp) == [b"950"] and next_offset(resp) == 1000
            # within reach: found in one pull
            resp = await sql_pull(w, "ScanT", "n = 799")
            assert bodies(resp) == [b"799"]
            assert next_offset(resp) == 800
    run(main)


def test_parse_errors_and_switch(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            await w.create_topic("BadT", 1)
            await w.send_ok("BadT", b"x", queue_id=0, properties=props(a="1"))
            for expression in ("a >", "a = 1)", "a != 1", "a > 'x'", "a = NULL", "(a = 1", "a IN (1)", "*"):
                resp = await sql_pull(w, "BadT", expression)
                assert resp.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED, expression
                assert resp.remark.startswith("parse the consumer's subscription failed") and "column" in resp.remark
            # the same bad expression again (served from the cache of failures)
            assert (await sql_pull(w, "BadT", "a >")).code == ResponseCode.SUBSCRIPTION_PARSE_FAILED
            # an empty SQL92 expression, and an unknown expression type
            resp = await sql_pull(w, "BadT", "")
            assert resp.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED and "can't be null" in resp.remark
            resp = await sql_pull(w, "BadT", "a = 1", expression_type="JS")
            assert resp.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED and "JS" in resp.remark
            # TAG subscriptions are untouched by the switch
            assert len(await w.pull_records("BadT", 0, 0, subscription="*")) == 1
            assert bodies(await sql_pull(w, "BadT", "a = 1")) == [b"x"]

            # enablePropertyFilter is read on every pull: switched off at run time → SYSTEM_ERROR
            resp = await w.call(RequestCode.UPDATE_BROKER_CONFIG, None, b"enablePropertyFilter=false\n")
            assert resp.code == ResponseCode.SUCCESS
            for expression in ("a = 1", "a >"):
                resp = await sql_pull(w, "BadT", expression)
                assert resp.code == ResponseCode.SYSTEM_ERROR
                assert resp.remark == "The broker does not support consumer to filter message by SQL92"
    run(main)


def test_filter_off_by_default(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w:
            await w.create_topic("OffT", 1)
            await w.send_ok("OffT", b"x", queue_id=0, properties=props(a="1"))
            resp = await sql_pull(w, "OffT", "a = 1")
            assert resp.code == ResponseCode.SYSTEM_ERROR
            assert resp.remark == "The broker does not support consumer to filter message by SQL92"
            resp = await check_client(w, "a = 1")
            assert resp.code == ResponseCode.SYSTEM_ERROR and "SQL92" in resp.remark
            assert (await check_client(w, "*", "TAG")).code == ResponseCode.SUCCESS
            # from the heartbeat: registered, then refused on pull
            assert (await heartbeat(w, "client-off", "OffT", "a = 1")).code == ResponseCode.SUCCESS
            resp = await w.pull("OffT", 0, 0, sys_flag=0, subscription=None)
            assert resp.code == ResponseCode.SYSTEM_ERROR
    run(main)


def test_subscription_from_the_heartbeat(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            await w.create_topic("HbSql", 1)
            for body, p in MESSAGES:
                await w.send_ok("HbSql", body, queue_id=0, properties=props(**p))
            assert (await heartbeat(w, "client-1", "HbSql", "a > 5 AND region = 'eu'")).code == ResponseCode.SUCCESS
            resp = await w.pull("HbSql", 0, 0, sys_flag=0, subscription=None)
            assert bodies(resp) == [b"m3", b"m5"] and next_offset(resp) == 6
            # the group's consumer list shows the SQL92 subscription as sent
            resp = await w.call(RequestCode.GET_CONSUMER_CONNECTION_LIST, {"consumerGroup": GROUP})
            assert resp.code == ResponseCode.SUCCESS
            sub = fastjson.loads(resp.body)["subscriptionTable"]["HbSql"]
            assert (sub["expressionType"], sub["subString"]) == ("SQL92", "a > 5 AND region = 'eu'")
            # a new subscription replaces it
            assert (await heartbeat(w, "client-1", "HbSql", "TAGS = 'TagB'", sub_version=2)).code == 0
            assert bodies(await w.pull("HbSql", 0, 0, sys_flag=0, subscription=None, sub_version=2)) == [b"m1"]
            # a heartbeat with a bad expression is accepted (as RocketMQ does); its pulls get 27
            resp = await heartbeat(w, "client-1", "HbSql", "a >> 5", sub_version=3)
            assert resp.code == ResponseCode.SUCCESS
            resp = await w.pull("HbSql", 0, 0, sys_flag=0, subscription=None)
            assert resp.code == ResponseCode.FILTER_DATA_NOT_EXIST
            assert resp.remark == "The broker's consumer filter data is not exist!Your expression may be wrong!"
            # the request's own subscription still wins
            assert bodies(await sql_pull(w, "HbSql", "a = 1")) == [b"m0"]
    run(main)


def test_check_client_config(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            resp = await check_client(w, "a > 5 AND TAGS IN ('x')")
            assert (resp.code, resp.remark) == (ResponseCode.SUCCESS, None)
            resp = await check_client(w, "a >")
            assert resp.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED and "column 4" in resp.remark
            resp = await check_client(w, None)
            assert resp.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED
            resp = await check_client(w, "a = 1", "JS")
            assert resp.code == ResponseCode.SUBSCRIPTION_PARSE_FAILED
            for expression_type in ("TAG", None, ""):
                assert (await check_client(w, "TagA || TagB", expression_type)).code == ResponseCode.SUCCESS
            # no body, or no subscription: nothing to check
            assert (await w.call(CHECK_CLIENT_CONFIG)).code == ResponseCode.SUCCESS
            assert (await w.call(CHECK_CLIENT_CONFIG, None, b'{"clientId":"c"}')).code == ResponseCode.SUCCESS
            assert (await w.call(CHECK_CLIENT_CONFIG, None, b"{nope")).code == ResponseCode.SYSTEM_ERROR
            body = b'{"subscriptionData":{"expressionType":5,"subString":"a"}}'
            assert (await w.call(CHECK_CLIENT_CONFIG, None, body)).code == ResponseCode.SYSTEM_ERROR
    run(main)


def test_held_sql92_pull(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path, broker_properties=FILTER_ON) as w:
            await w.create_topic("HoldT", 1)
            await w.send_ok("HoldT", b"first", queue_id=0, properties=props(a="1"))
            result: list[RemotingCommand] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(held_pull, w, 1, result)
                await trio.sleep(0.2)
                assert not result
                await w.send_ok("HoldT", b"second", queue_id=0, properties=props(a="2"))
            assert bodies(result[0]) == [b"second"] and next_offset(result[0]) == 2
            # woken by a message that does not match: 20, the consumer pulls again at once
            result.clear()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(held_pull, w, 2, result)
                await trio.sleep(0.2)
                assert not result
                await w.send_ok("HoldT", b"third", queue_id=0, properties=props(a="3"))
            assert result[0].code == ResponseCode.PULL_RETRY_IMMEDIATELY and next_offset(result[0]) == 3
    run(main)


async def held_pull(w: Wire, offset: int, out: list[RemotingCommand]) -> None:
    out.append(await sql_pull(w, "HoldT", "a = 2", offset, sys_flag=SUB | SUSPEND, suspend_ms=15_000))
