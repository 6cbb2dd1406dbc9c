"""Consumer building blocks without a broker: the allocation strategies (Java's exact answers), the process
queue (flow-control counters, commit offsets, orderly take/commit/rollback), the local offsets file, configs."""
from __future__ import annotations

import time

import pytest
import trio
import trio.testing

from rmq_client import (AllocateMessageQueueAveragely, AllocateMessageQueueAveragelyByCircle,
                        AllocateMessageQueueByConfig, AllocateMessageQueueConsistentHash, ConsumeFromWhere,
                        LitePullConsumerConfig, MessageQueue, PushConsumer, PushConsumerConfig, ReadOffsetType,
                        RemoteBrokerOffsetStore)
from rmq_client.consumer_api import PullSysFlag
from rmq_client.offset_store import LocalFileOffsetStore
from rmq_client.process_queue import ProcessQueue
from rmq_client.rebalance import RebalanceImpl, md5_hash, parse_consume_timestamp
from rmq_common.message import MessageExt
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson


def queues(n: int, topic: str = "T", broker: str = "broker-a") -> list[MessageQueue]:
    return [MessageQueue(topic, broker, i) for i in range(n)]


def owners(strategy, mqs, cids) -> dict[str, list[int]]:
    """cid → indexes of the queues it gets."""
    return {cid: [mqs.index(mq) for mq in strategy.allocate("G", cid, mqs, cids)] for cid in cids}


# -- AllocateMessageQueueAveragely (PROTOCOL.md §9.2) -----------------------------------------------------

@pytest.mark.parametrize("n, c, expected", [
    (8, 3, [[0, 1, 2], [3, 4, 5], [6, 7]]),
    (10, 4, [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9]]),
    (4, 4, [[0], [1], [2], [3]]),
    (2, 3, [[0], [1], []]),
    (1, 2, [[0], []]),
    (5, 1, [[0, 1, 2, 3, 4]]),
])
def test_averagely_is_javas_contiguous_blocks(n, c, expected):
    mqs = queues(n)
    cids = [f"cid-{i}" for i in range(c)]
    got = owners(AllocateMessageQueueAveragely(), mqs, cids)
    assert [got[cid] for cid in cids] == expected


@pytest.mark.parametrize("n, c, expected", [
    (8, 3, [[0, 3, 6], [1, 4, 7], [2, 5]]),
    (10, 4, [[0, 4, 8], [1, 5, 9], [2, 6], [3, 7]]),
    (2, 3, [[0], [1], []]),
])
def test_averagely_by_circle_deals_queues_round_robin(n, c, expected):
    mqs = queues(n)
    cids = [f"cid-{i}" for i in range(c)]
    got = owners(AllocateMessageQueueAveragelyByCircle(), mqs, cids)
    assert [got[cid] for cid in cids] == expected


def test_consistent_hash_matches_java():
    """Expected values computed by the JVM (MessageDigest MD5, String.getBytes, TreeMap tail lookup) over the
    same inputs: queues of two brokers, Java-style client ids, 10 (default) and 3 virtual nodes."""
    mqs = queues(4, "TopicTest", "broker-a") + queues(4, "TopicTest", "broker-b")
    cids = ["192.168.0.10@1001#100", "192.168.0.11@1002#200", "192.168.0.12@1003#300"]
    assert owners(AllocateMessageQueueConsistentHash(), mqs, cids) == {
        cids[0]: [3, 4, 6], cids[1]: [0, 1, 7], cids[2]: [2, 5]}
    assert owners(AllocateMessageQueueConsistentHash(3), mqs, cids) == {
        cids[0]: [0, 4], cids[1]: [1, 3, 6, 7], cids[2]: [2, 5]}
    m16 = queues(16, "T16")
    c4 = [f"cid-{i}" for i in range(4)]
    assert owners(AllocateMessageQueueConsistentHash(), m16, c4) == {
        "cid-0": [1, 4, 6, 10, 12, 13, 15], "cid-1": [2, 3, 5], "cid-2": [0, 14], "cid-3": [7, 8, 9, 11]}
    assert md5_hash("cid-0-0") == 395700724
    assert md5_hash(str(m16[0])) == 801115135
    assert str(m16[0]) == "MessageQueue [topic=T16, brokerName=broker-a, queueId=0]"


def test_consistent_hash_moves_only_the_leavers_queues():
    mqs = queues(20)
    cids = [f"cid-{i}" for i in range(5)]
    strategy = AllocateMessageQueueConsistentHash()
    before = {mq: cid for cid in cids for mq in strategy.allocate("G", cid, mqs, cids)}
    assert set(before) == set(mqs)
    rest = cids[1:]
    after = {mq: cid for cid in rest for mq in strategy.allocate("G", cid, mqs, rest)}
    assert set(after) == set(mqs)
    for mq, cid in before.items():
        if cid != "cid-0":
            assert after[mq] == cid


@pytest.mark.parametrize("strategy", [AllocateMessageQueueAveragely(), AllocateMessageQueueAveragelyByCircle(),
                                      AllocateMessageQueueConsistentHash()])
def test_strategies_refuse_empty_input_and_ignore_strangers(strategy):
    mqs = queues(4)
    with pytest.raises(ValueError, match="currentCID"):
        strategy.allocate("G", "", mqs, ["a"])
    with pytest.raises(ValueError, match="mqAll"):
        strategy.allocate("G", "a", [], ["a"])
    with pytest.raises(ValueError, match="cidAll"):
        strategy.allocate("G", "a", mqs, [])
    assert strategy.allocate("G", "stranger", mqs, ["a", "b"]) == []
    # every queue to exactly one member
    cids = ["a", "b", "c"]
    got = [mq for cid in cids for mq in strategy.allocate("G", cid, mqs, cids)]
    assert sorted(got) == mqs


def test_by_config_returns_the_configured_queues():
    mqs = queues(3)
    assert AllocateMessageQueueByConfig([mqs[2]]).allocate("G", "a", mqs, ["a", "b"]) == [mqs[2]]


# -- ProcessQueue ----------------------------------------------------------------------------------------------

def msg(offset: int, body: bytes = b"x" * 10, **props: str) -> MessageExt:
    return MessageExt(0, 0, 0, 0, 0, offset, 0, 0, 0, ("127.0.0.1", 1), 0, ("127.0.0.1", 2), 0, 0, body, "T",
                      dict(props))


def test_process_queue_counts_and_commit_offsets():
    pq = ProcessQueue()
    batch = [msg(o) for o in range(10, 15)]
    batch[-1].properties["MAX_OFFSET"] = "20"
    assert pq.put_messages(batch) is True                # nothing was consuming: dispatch
    assert pq.put_messages([msg(15)]) is False
    assert (pq.msg_count, pq.msg_size, pq.max_span(), pq.msg_acc_cnt) == (6, 60, 5, 6)
    assert pq.put_messages([msg(12)]) is False          # a duplicate offset is ignored
    assert pq.msg_count == 6
    # out-of-order completion: the commit offset is the first one still cached
    assert pq.remove_messages([batch[2], batch[3]]) == 10
    assert pq.remove_messages([batch[0]]) == 11
    assert pq.remove_messages([batch[1], batch[4]]) == 15
    assert pq.max_span() == 0
    assert pq.remove_messages([msg(15)]) == 16           # empty: last offset + 1
    assert (pq.msg_count, pq.msg_size) == (0, 0)
    assert pq.remove_messages([msg(15)]) == -1           # nothing cached


def test_process_queue_orderly_take_commit_and_consume_again():
    pq = ProcessQueue()
    pq.put_messages([msg(o) for o in range(5)])
    taken = pq.take_messages(2)
    assert [m.queue_offset for m in taken] == [0, 1]
    pq.make_messages_to_consume_again(taken)            # SUSPEND: back in front, same order
    assert [m.queue_offset for m in pq.take_messages(3)] == [0, 1, 2]
    assert pq.commit() == 3
    assert pq.msg_count == 2
    rest = pq.take_messages(10)
    assert [m.queue_offset for m in rest] == [3, 4]
    pq.rollback()
    assert pq.cached_offsets() == [3, 4]
    assert [m.queue_offset for m in pq.take_messages(10)] == [3, 4]
    assert pq.commit() == 5 and pq.msg_count == 0
    assert pq.take_messages(1) == [] and pq.consuming is False
    assert pq.commit() == -1


def test_process_queue_lock_and_pull_expiry():
    async def main():
        pq = ProcessQueue(lock_max_live_time_s=30, pull_max_idle_time_s=120)
        pq.set_locked(True)
        assert not pq.is_lock_expired()
        await trio.sleep(31)
        assert pq.is_lock_expired() and not pq.is_pull_expired()
        await trio.sleep(100)
        assert pq.is_pull_expired()
        pq.drop()
        assert pq.dropped and pq.pull_scope.cancel_called
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- local offsets file --------------------------------------------------------------------------------------

def test_local_offsets_file_is_javas_format_and_survives_a_bad_file(tmp_path):
    async def main():
        store = LocalFileOffsetStore(tmp_path, "127.0.0.1@DEFAULT", "CG_b")
        await store.load()
        a, b = MessageQueue("T", "broker-a", 0), MessageQueue("T", "broker-a", 1)
        assert await store.read_offset(a, ReadOffsetType.STORE) == -1
        store.update_offset(a, 7)
        store.update_offset(a, 5, increase_only=True)      # never backwards when asked so
        store.update_offset(b, 3)
        await store.persist_all([a, b])
        path = tmp_path / "127.0.0.1@DEFAULT" / "CG_b" / "offsets.json"
        raw = path.read_bytes()
        # fastjson's form: a MessageQueue object in key position
        assert raw == (b'{"offsetTable":{{"brokerName":"broker-a","queueId":0,"topic":"T"}:7,'
                       b'{"brokerName":"broker-a","queueId":1,"topic":"T"}:3}}')
        store.update_offset(a, 9)
        await store.persist_all([a, b])
        assert (path.parent / "offsets.json.bak").read_bytes() == raw
        again = LocalFileOffsetStore(tmp_path, "127.0.0.1@DEFAULT", "CG_b")
        await again.load()
        assert await again.read_offset(a, ReadOffsetType.STORE) == 9
        path.write_bytes(b"{not json")                     # torn or foreign file: the backup is read
        third = LocalFileOffsetStore(tmp_path, "127.0.0.1@DEFAULT", "CG_b")
        await third.load()
        assert await third.read_offset(a, ReadOffsetType.MEMORY_FIRST_THEN_STORE) == 7
        assert fastjson.loads(raw)["offsetTable"]
    trio.run(main)


# -- configuration -------------------------------------------------------------------------------------------

def test_consumer_configs_have_javas_defaults_and_check_values():
    cfg = PushConsumerConfig(group="CG")
    assert (cfg.pull_batch_size, cfg.consume_thread_max, cfg.pull_threshold_for_queue,
            cfg.pull_threshold_size_for_queue, cfg.consume_concurrently_max_span, cfg.broker_suspend_max_time_ms,
            cfg.consumer_timeout_ms_when_suspend, cfg.persist_consumer_offset_interval_ms,
            cfg.rebalance_interval_ms, cfg.max_reconsume_times) == (32, 20, 1000, 100, 2000, 15000, 30000, 5000,
                                                                     20000, -1)
    assert cfg.message_model.value == "CLUSTERING" and cfg.consume_from_where.value == "CONSUME_FROM_LAST_OFFSET"
    assert isinstance(cfg.allocate_strategy, AllocateMessageQueueAveragely)
    assert abs(parse_consume_timestamp(cfg.consume_timestamp) / 1000 - (time.time() - 1800)) < 5
    lite = LitePullConsumerConfig(group="CG")
    assert (lite.pull_batch_size, lite.poll_timeout_ms, lite.auto_commit, lite.broker_suspend_max_time_ms) == (
        10, 5000, True, 20000)
    with pytest.raises(ValueError, match="DEFAULT_CONSUMER"):
        PushConsumer("DEFAULT_CONSUMER")
    with pytest.raises(ValueError, match="not legal"):
        PushConsumer("bad group!")
    with pytest.raises(TypeError, match="unknown"):
        PushConsumer("CG", pull_batch=3)
    with pytest.raises(ValueError, match="greater"):
        PushConsumerConfig(group="CG", consumer_timeout_ms_when_suspend=1000)
    assert PullSysFlag.build(True, True, True) == 7 and PullSysFlag.build(False, True, False) == 2


# -- ConsumeFromWhere after QUERY_CONSUMER_OFFSET answered 22 ------------------------------------------------

class FakeInstance:
    """Answers QUERY_CONSUMER_OFFSET with ``query_code``, GET_MAX_OFFSET with 42, SEARCH_OFFSET_BY_TIMESTAMP with 5;
    records the requests."""

    client_id = "127.0.0.1@fake"

    def __init__(self, query_code: int, offset: int = 7) -> None:
        self.query_code = query_code
        self.offset = offset
        self.calls: list[tuple[int, dict]] = []

    def broker_addrs(self, name):
        return {0: "127.0.0.1:1"}

    def master_addr(self, name):
        return "127.0.0.1:1"

    async def update_route(self, topic):
        return False

    def request(self, code, ext=None, body=None):
        return RemotingCommand(code, ext_fields=ext, body=body)

    async def invoke(self, addr, cmd, timeout_ms=None):
        self.calls.append((cmd.code, dict(cmd.ext_fields or {})))
        if cmd.code == RequestCode.QUERY_CONSUMER_OFFSET:
            if self.query_code:
                return cmd.create_response(self.query_code, "Not found")
            return cmd.create_response(0, None, {"offset": str(self.offset)})
        if cmd.code == RequestCode.GET_MAX_OFFSET:
            return cmd.create_response(0, None, {"offset": "42"})
        if cmd.code == RequestCode.SEARCH_OFFSET_BY_TIMESTAMP:
            return cmd.create_response(0, None, {"offset": "5"})
        raise AssertionError(cmd.code)


class FakeConsumer:
    def __init__(self, instance, **config) -> None:
        self.instance = instance
        self.group = "CG_fake"
        self.config = PushConsumerConfig(group="CG_fake", **config)
        self.offset_store = RemoteBrokerOffsetStore(instance, "CG_fake")


@pytest.mark.parametrize("cfw, topic, expected", [
    (ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET, "T", 42),                  # GET_MAX_OFFSET
    (ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET, "%RETRY%CG_fake", 0),      # retry topics from their start
    (ConsumeFromWhere.CONSUME_FROM_MAX_OFFSET, "T", 42),                   # deprecated: as LAST
    (ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET, "T", 0),
    (ConsumeFromWhere.CONSUME_FROM_TIMESTAMP, "T", 5),                     # SEARCH_OFFSET_BY_TIMESTAMP
    (ConsumeFromWhere.CONSUME_FROM_TIMESTAMP, "%RETRY%CG_fake", 42),
])
def test_consume_from_where_applies_when_the_broker_has_no_offset(cfw, topic, expected):
    async def main():
        instance = FakeInstance(ResponseCode.QUERY_NOT_FOUND)
        consumer = FakeConsumer(instance, consume_from_where=cfw, consume_timestamp="20240102030405")
        got = await RebalanceImpl(consumer).compute_pull_from_where(MessageQueue(topic, "broker-a", 1))
        assert got == expected
        assert instance.calls[0] == (RequestCode.QUERY_CONSUMER_OFFSET,
                                     {"consumerGroup": "CG_fake", "topic": topic, "queueId": "1"})
        if cfw is ConsumeFromWhere.CONSUME_FROM_TIMESTAMP and topic == "T":
            assert instance.calls[1][1]["timestamp"] == str(parse_consume_timestamp("20240102030405"))
    trio.run(main)


def test_a_stored_offset_wins_and_a_failed_query_skips_the_queue():
    async def main():
        mq = MessageQueue("T", "broker-a", 0)
        stored = FakeConsumer(FakeInstance(0, offset=7), consume_from_where=ConsumeFromWhere.CONSUME_FROM_FIRST_OFFSET)
        assert await RebalanceImpl(stored).compute_pull_from_where(mq) == 7
        assert stored.offset_store.memory_offset(mq) == 7
        failing = FakeConsumer(FakeInstance(ResponseCode.SYSTEM_ERROR))
        assert await failing.offset_store.read_offset(mq, ReadOffsetType.STORE) == -2
        assert await RebalanceImpl(failing).compute_pull_from_where(mq) == -1
    trio.run(main)
