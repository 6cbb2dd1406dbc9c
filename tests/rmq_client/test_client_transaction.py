"""TransactionProducer against an embedded broker with short check timers (transactionTimeOut and
transactionCheckInterval of 300 ms, real clock): commit, rollback, and the broker's check-back answered by the
listener with END_TRANSACTION fromTransactionCheck=true."""
from __future__ import annotations

import time

import pytest
import trio
from client_support import Raw, eventually, run

from rmq_client import LocalTransactionState, SendStatus, TransactionProducer, make_message
from rmq_common import sysflag
from rmq_common.properties import PropertyKey
from rmq_remoting import RemotingClient
from rmq_testing import embedded_cluster

GROUP = "PG_client_tx"
FAST_CHECKS = {"transactionTimeOut": 300, "transactionCheckInterval": 300}
COMMIT = LocalTransactionState.COMMIT_MESSAGE
ROLLBACK = LocalTransactionState.ROLLBACK_MESSAGE
UNKNOW = LocalTransactionState.UNKNOW


class Listener:
    """Decides by the message body: b"commit", b"rollback", b"unknown-then-commit", b"boom-then-rollback"."""

    def __init__(self) -> None:
        self.executed: list[tuple[bytes, object]] = []
        self.checked: list = []

    def execute_local_transaction(self, msg, arg):
        self.executed.append((msg.body, arg))
        if msg.body == b"commit":
            return COMMIT
        if msg.body == b"rollback":
            return ROLLBACK
        if msg.body.startswith(b"boom"):
            raise RuntimeError("local transaction failed")
        return None                                   # unknown: the broker will ask

    async def check_local_transaction(self, msg):
        self.checked.append(msg)
        await trio.lowlevel.checkpoint()
        return ROLLBACK if msg.body.startswith(b"boom") else COMMIT


async def topic(raw: Raw, name: str) -> None:
    await raw.create_topic(name, 1)
    await raw.wait_route(name)


def test_commit_and_rollback(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await topic(raw, "TxT")
            listener = Listener()
            async with TransactionProducer(GROUP, listener, cluster.namesrv_addr) as producer:
                ok = await producer.send_message_in_transaction(make_message("TxT", b"commit", keys=["c"]), arg=42)
                no = await producer.send_message_in_transaction(make_message("TxT", b"rollback"), arg=43)
                assert ok.status is SendStatus.SEND_OK and ok.local_transaction_state is COMMIT
                assert no.local_transaction_state is ROLLBACK
                assert listener.executed == [(b"commit", 42), (b"rollback", 43)]
                stored = await raw.wait_messages("TxT", 1, queues=1)
                assert [r.body for r in stored] == [b"commit"]
                rec = stored[0]
                assert rec.unique_key == ok.msg_id and rec.keys == ["c"]
                assert sysflag.transaction_value(rec.sys_flag) == sysflag.TRANSACTION_COMMIT_TYPE
                assert rec.properties[PropertyKey.PGROUP] == GROUP
                await trio.sleep(0.3)
                assert [r.body for r in await raw.topic_messages("TxT", 1)] == [b"commit"]
                assert listener.checked == []
    run(main)


def test_unknown_state_is_resolved_by_the_check_back(tmp_path):
    async def main():
        async with embedded_cluster(tmp_path, broker_properties=FAST_CHECKS) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await topic(raw, "TxCheckT")
            listener = Listener()
            async with TransactionProducer(GROUP, listener, cluster.namesrv_addr) as producer:
                later = await producer.send_message_in_transaction(make_message("TxCheckT", b"unknown-then-commit"))
                boom = await producer.send_message_in_transaction(make_message("TxCheckT", b"boom-then-rollback"))
                assert later.local_transaction_state is UNKNOW and boom.local_transaction_state is UNKNOW
                assert await raw.topic_messages("TxCheckT", 1) == []
                started = time.monotonic()
                stored = await raw.wait_messages("TxCheckT", 1, queues=1, timeout_s=20)
                assert [r.body for r in stored] == [b"unknown-then-commit"]
                assert stored[0].unique_key == later.msg_id
                await eventually(lambda: len({m.unique_key for m in listener.checked}) == 2, 20,
                                 "both transactions checked back")
                checked = {m.unique_key: m for m in listener.checked}
                assert checked[later.msg_id].topic == "TxCheckT"
                assert checked[later.msg_id].body == b"unknown-then-commit"
                assert checked[boom.msg_id].properties[PropertyKey.PGROUP] == GROUP
                await trio.sleep(1.0)                 # the rollback stays rolled back, nothing is checked again
                assert [r.body for r in await raw.topic_messages("TxCheckT", 1)] == [b"unknown-then-commit"]
                assert time.monotonic() - started < 20
                resolved = {m.unique_key for m in listener.checked}
                await trio.sleep(0.8)
                assert {m.unique_key for m in listener.checked} == resolved
    run(main, timeout=60)


def test_async_listener_methods_and_refused_configuration(tmp_path):
    class AsyncListener:
        async def execute_local_transaction(self, msg, arg):
            await trio.sleep(0.01)
            return "COMMIT_MESSAGE"

        async def check_local_transaction(self, msg):
            return COMMIT

    async def main():
        async with embedded_cluster(tmp_path) as cluster, RemotingClient() as rc:
            raw = Raw(cluster, rc)
            await topic(raw, "TxAsyncT")
            async with TransactionProducer(GROUP, AsyncListener(), cluster.namesrv_addr) as producer:
                msg = make_message("TxAsyncT", b"a", delay_level=3)
                result = await producer.send_message_in_transaction(msg)
                assert result.local_transaction_state is COMMIT
                assert PropertyKey.DELAY not in msg.properties           # a half message has no delay level
                stored = await raw.wait_messages("TxAsyncT", 1, queues=1)
                assert [r.body for r in stored] == [b"a"]
    with pytest.raises(ValueError, match="listener"):
        TransactionProducer(GROUP, None)
    run(main)
