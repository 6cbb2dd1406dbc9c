"""Bad input over the wire: bodies that are not what a request needs are answered SYSTEM_ERROR with a remark, the
connection that sent them keeps working, and the broker keeps serving everyone else.
"""
from __future__ import annotations

import trio
from broker_wire_support import extra_client, run, wire

from rmq_remoting import RemotingCommand, RequestCode, ResponseCode

BAD_JSON_BODIES = [
    None,                                   # no body at all
    b"",
    b"not json",
    b"{",
    b'{"clientID":',
    b"\xff\xfe\x00garbage",                 # not UTF-8
    b"[1, 2, 3]",                           # JSON, but not an object
    b"42",
    b"null",
    b"[" * 100_000,                         # deeply nested
    b'{"a":' * 50_000,
]


def test_bodies_that_are_not_json_are_refused_and_the_broker_goes_on(tmp_path) -> None:
    async def main() -> None:
        async with wire(tmp_path) as w, extra_client() as other:
            await w.create_topic("BadT", 1)
            conn = w.client.connection_for(w.addr)
            codes = (RequestCode.HEART_BEAT, RequestCode.LOCK_BATCH_MQ, RequestCode.UNLOCK_BATCH_MQ,
                     RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP)
            served = 0

            async def keep_serving_another_client() -> None:
                nonlocal served
                ext = w.send_header("BadT", queue_id=0).to_v2().to_ext()
                while True:
                    resp = await other.invoke(w.addr, RemotingCommand.request(RequestCode.SEND_MESSAGE_V2, ext,
                                                                              b"ok"), 5000)
                    assert resp.code == ResponseCode.SUCCESS
                    served += 1
                    await trio.sleep(0.001)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(keep_serving_another_client)
                for code in codes:
                    for body in BAD_JSON_BODIES:
                        resp = await w.call(code, None, body)
                        assert resp.code == ResponseCode.SYSTEM_ERROR, (code, body and body[:20], resp.code)
                        assert resp.remark, (code, body and body[:20])
                        assert len(resp.remark) < 2000
                # JSON of the wrong shape
                for code, body in [
                    (RequestCode.HEART_BEAT, b'{"clientID": 5}'),
                    (RequestCode.HEART_BEAT, b'{"clientID": "c", "consumerDataSet": [{"groupName": 7}]}'),
                    (RequestCode.HEART_BEAT, b'{"clientID": "c", "consumerDataSet": {}}'),
                    (RequestCode.HEART_BEAT, (b'{"clientID": "c", "consumerDataSet": [{"groupName": "G", '
                                              b'"subscriptionDataSet": [{"topic": "T", "subVersion": "x"}]}]}')),
                    (RequestCode.LOCK_BATCH_MQ, b'{"clientId": "c"}'),
                    (RequestCode.LOCK_BATCH_MQ, b'{"clientId": "c", "consumerGroup": "G", "mqSet": [{"topic": 1}]}'),
                    (RequestCode.LOCK_BATCH_MQ, b'{"clientId": "c", "consumerGroup": "G", "mqSet": 5}'),
                    (RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, b'{"groupName": 5}'),
                    (RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, b'{"groupName": "bad name!"}'),
                    (RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, b'{"groupName": "G", "retryQueueNums": "x"}'),
                    (RequestCode.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP, b'{}'),
                    (RequestCode.UPDATE_BROKER_CONFIG, b"\xff\xfe"),
                ]:
                    resp = await w.call(code, None, body)
                    assert resp.code == ResponseCode.SYSTEM_ERROR and resp.remark, (code, body, resp.code)
                # headers that do not bind
                resp = await w.call(RequestCode.GET_MAX_OFFSET, {"topic": "BadT", "queueId": "abc"})
                assert resp.code == ResponseCode.SYSTEM_ERROR and "queueId" in resp.remark
                resp = await w.call(RequestCode.GET_MAX_OFFSET, {"topic": "BadT", "queueId": str(1 << 40)})
                assert resp.code == ResponseCode.SYSTEM_ERROR and "queueId" in resp.remark
                resp = await w.call(RequestCode.PULL_MESSAGE, {"topic": "BadT"})
                assert resp.code == ResponseCode.SYSTEM_ERROR and resp.remark
                resp = await w.call(9999, None, b"whatever")
                assert resp.code == ResponseCode.REQUEST_CODE_NOT_SUPPORTED
                nursery.cancel_scope.cancel()
            assert served > 0

            # the same connection is still served, and nothing was registered or created by the bad requests
            assert w.client.connection_for(w.addr) is conn
            assert (await w.heartbeat("good-client")).code == ResponseCode.SUCCESS
            resp = await w.call(RequestCode.LOCK_BATCH_MQ, None,
                                b'{"clientId":"c","consumerGroup":"G","mqSet":[{"brokerName":"broker-a",'
                                b'"queueId":0,"topic":"BadT"}]}')
            assert resp.code == ResponseCode.SUCCESS and b"lockOKMQSet" in bytes(resp.body)
            records = await w.pull_records("BadT", 0, 0, max_nums=1)
            assert records[0].body == b"ok"
    run(main)
