"""Consumer settings, with RocketMQ 4.9's defaults (``DefaultMQPushConsumer``, ``DefaultLitePullConsumer``).

``ConsumerConfig`` holds what both consumers share (group, message model, where to start, allocation,
offset persistence, flow-control thresholds); ``PushConsumerConfig`` and ``LitePullConsumerConfig`` add their
own fields. Names are snake_case versions of the Java ones; ``docs/client.md`` has the table.

Deliberate differences from Java:

* ``await_termination_ms_when_shutdown`` defaults to 5000 (Java 0, whose consume threads then keep running
  after shutdown without committing): here running listener calls may finish and commit during shutdown.
* intervals Java reads from system properties (rebalance every 20 s, lock renewal every 20 s, lock lifetime
  30 s, pull idle time 120 s, the pauses after errors and flow control) are fields, so tests can shorten them.
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from rmq_client.config import ClientConfig
from rmq_client.instance import ConsumeFromWhere, MessageModel
from rmq_client.offset_store import default_local_offset_store_dir
from rmq_client.rebalance import AllocateMessageQueueAveragely, AllocateStrategy, default_consume_timestamp
from rmq_common.topic import DEFAULT_CONSUMER_GROUP

__all__ = ["ConsumerConfig", "PushConsumerConfig", "LitePullConsumerConfig", "check_consumer_group"]

_GROUP_CHARS = frozenset(string.ascii_letters + string.digits + "%|_-")


def check_consumer_group(group: str) -> None:
    """Java ``Validators.checkGroup`` plus the DEFAULT_CONSUMER refusal of ``checkConfig``."""
    if not group:
        raise ValueError("the consumer group is empty: PushConsumer(group=...)")
    if len(group) > 255 or not set(group) <= _GROUP_CHARS:
        raise ValueError(f"the consumer group {group!r} is not legal: at most 255 characters of %|a-zA-Z0-9_-")
    if group == DEFAULT_CONSUMER_GROUP:
        raise ValueError(f"consumerGroup can not equal {DEFAULT_CONSUMER_GROUP}, please specify another one.")


@dataclass
class ConsumerConfig(ClientConfig):
    """What push and lite pull consumers share."""

    #: Consumer group (required; not DEFAULT_CONSUMER).
    group: str = ""
    #: CLUSTERING (each message to one member of the group) or BROADCASTING (to every member).
    message_model: MessageModel = MessageModel.CLUSTERING
    #: Where a queue without a committed offset starts (LAST_OFFSET: new messages only; FIRST_OFFSET: from the
    #: start; TIMESTAMP: from ``consume_timestamp``). rmq brokers, as Java ones, answer offset 0 for a queue
    #: that still holds its first message, so a new group reads young queues from the start.
    consume_from_where: ConsumeFromWhere = ConsumeFromWhere.CONSUME_FROM_LAST_OFFSET
    #: ``yyyyMMddHHmmss`` (local time) for CONSUME_FROM_TIMESTAMP; default half an hour before the consumer was made.
    consume_timestamp: str = field(default_factory=default_consume_timestamp)
    #: Queue allocation among the members of the group (clustering).
    allocate_strategy: AllocateStrategy = field(default_factory=AllocateMessageQueueAveragely)
    #: Period of committing the offsets to the brokers (or the local file) (Java persistConsumerOffsetInterval).
    persist_consumer_offset_interval_ms: int = 5_000
    #: Where broadcasting consumers keep their offsets (Java rocketmq.client.localOffsetStoreDir).
    local_offset_store_dir: str = field(default_factory=default_local_offset_store_dir)
    #: Period of the rebalance (Java rocketmq.client.rebalance.waitInterval); also at once when the group changes.
    rebalance_interval_ms: int = 20_000
    #: Most messages cached per queue before pulling pauses (Java pullThresholdForQueue).
    pull_threshold_for_queue: int = 1000
    #: Most MiB of bodies cached per queue before pulling pauses (Java pullThresholdSizeForQueue).
    pull_threshold_size_for_queue: int = 100
    #: Broker lock lifetime without renewal (orderly), idle time before a queue is rebuilt.
    lock_max_live_time_ms: int = 30_000
    pull_max_idle_time_ms: int = 120_000
    #: Pause after a failed pull (Java PULL_TIME_DELAY_MILLS_WHEN_EXCEPTION).
    pull_time_delay_ms_when_exception: int = 3_000
    #: Pause when flow control stops a pull (Java PULL_TIME_DELAY_MILLS_WHEN_FLOW_CONTROL).
    pull_time_delay_ms_when_flow_control: int = 50
    unit_mode: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.message_model = MessageModel(self.message_model)
        self.consume_from_where = ConsumeFromWhere(self.consume_from_where)
        for name in ("persist_consumer_offset_interval_ms", "rebalance_interval_ms", "pull_threshold_for_queue",
                     "pull_threshold_size_for_queue", "lock_max_live_time_ms", "pull_max_idle_time_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not callable(getattr(self.allocate_strategy, "allocate", None)):
            raise ValueError("allocate_strategy must have an allocate(group, cid, mq_all, cid_all) method")


@dataclass
class PushConsumerConfig(ConsumerConfig):
    """A push consumer's settings (``DefaultMQPushConsumer``)."""

    #: Listener calls running at once (Java consumeThreadMin/Max, 20).
    consume_thread_max: int = 20
    #: Concurrent consumption pauses pulling while the cached offsets of a queue span more than this.
    consume_concurrently_max_span: int = 2000
    #: Most messages cached per topic (-1: no limit); divided among the topic's queues of this consumer.
    pull_threshold_for_topic: int = -1
    pull_threshold_size_for_topic: int = -1
    #: Pause between pulls of one queue (0: pull again at once).
    pull_interval_ms: int = 0
    #: Messages per listener call.
    consume_message_batch_max_size: int = 1
    #: Messages asked per pull (brokers cap it: maxTransferCountOnMessageInMemory, 32 by default).
    pull_batch_size: int = 32
    #: Send the subscription with every pull (Java postSubscriptionWhenPull); else the broker uses the heartbeat's.
    post_subscription_when_pull: bool = False
    #: Attempts before a message goes to the DLQ (-1: 16 for concurrent, unbounded for orderly listeners).
    max_reconsume_times: int = -1
    #: Orderly: pause of a queue after SUSPEND_CURRENT_QUEUE_A_MOMENT (Java suspendCurrentQueueTimeMillis).
    suspend_current_queue_time_ms: int = 1000
    #: Long polling: how long a broker holds a pull (Java BROKER_SUSPEND_MAX_TIME_MILLIS) ...
    broker_suspend_max_time_ms: int = 15_000
    #: ... and the pull's RPC timeout (Java CONSUMER_TIMEOUT_MILLIS_WHEN_SUSPEND).
    consumer_timeout_ms_when_suspend: int = 30_000
    #: Messages whose send-back failed are consumed again after this pause (Java: 5000 ms).
    consume_later_delay_ms: int = 5_000
    #: Orderly: lock renewal period (Java rocketmq.client.rebalance.lockInterval).
    lock_interval_ms: int = 20_000
    #: On shutdown, how long running listener calls may finish (and commit) before they are cancelled.
    await_termination_ms_when_shutdown: int = 5_000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("consume_thread_max", "consume_concurrently_max_span", "consume_message_batch_max_size",
                     "pull_batch_size", "broker_suspend_max_time_ms", "consumer_timeout_ms_when_suspend",
                     "lock_interval_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.consume_message_batch_max_size > 1024:
            raise ValueError("consume_message_batch_max_size must be at most 1024")
        if self.pull_batch_size > 1024 * 64:
            raise ValueError("pull_batch_size must be at most 65536")
        if self.consumer_timeout_ms_when_suspend <= self.broker_suspend_max_time_ms:
            raise ValueError("consumer_timeout_ms_when_suspend must be greater than broker_suspend_max_time_ms")


@dataclass
class LitePullConsumerConfig(ConsumerConfig):
    """A lite pull consumer's settings (``DefaultLitePullConsumer``)."""

    #: Messages asked per pull (raise it, and the broker's transfer caps, for throughput).
    pull_batch_size: int = 10
    #: Most cached pull results of all queues before pulling pauses (Java pullThresholdForAll counts messages
    #: as results × pullBatchSize; so does this).
    pull_threshold_for_all: int = 10_000
    #: Concurrent consumption span limit per queue (cached offsets).
    consume_max_span: int = 2000
    #: Default ``poll`` timeout.
    poll_timeout_ms: int = 5_000
    #: Commit the offsets of polled messages every ``auto_commit_interval_ms`` (checked in ``poll``).
    auto_commit: bool = True
    auto_commit_interval_ms: int = 5_000
    #: Long polling: how long a broker holds a pull, and the pull's RPC timeout.
    broker_suspend_max_time_ms: int = 20_000
    consumer_timeout_ms_when_suspend: int = 30_000
    #: Pause of a paused queue's pull loop (Java PULL_TIME_DELAY_MILLS_WHEN_PAUSE).
    pull_time_delay_ms_when_pause: int = 1000

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pull_batch_size", "pull_threshold_for_all", "consume_max_span", "auto_commit_interval_ms",
                     "broker_suspend_max_time_ms", "consumer_timeout_ms_when_suspend"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.consumer_timeout_ms_when_suspend <= self.broker_suspend_max_time_ms:
            raise ValueError("consumer_timeout_ms_when_suspend must be greater than broker_suspend_max_time_ms")
