"""rmq_client: a RocketMQ 4.x-protocol client in Python (trio-native, with a blocking facade).

It speaks the standard remoting protocol, so it works against rmq brokers and Apache RocketMQ alike.

    import trio
    from rmq_client import Producer, make_message

    async def main():
        async with Producer("PG_orders", namesrv_addr="127.0.0.1:9876") as producer:
            result = await producer.send(make_message("Orders", b"hello", tags="created", keys=["order-42"]))
            print(result.status, result.msg_id, result.message_queue, result.queue_offset)

    trio.run(main)

Consuming: ``PushConsumer`` (a listener per message batch; clustering or broadcasting, concurrent or orderly)
and ``LitePullConsumer`` (the application polls; ``poll_batch`` is the batch-first fast path).

Plain scripts without trio use ``rmq_client.blocking`` (same API, blocking calls; a trio loop runs in a
background thread). See docs/client.md.
"""
from rmq_client.admin import Admin, ConsumeStats, OffsetWrapper, TopicOffset
from rmq_client.compression import CompressionType
from rmq_client.config import ClientConfig, ProducerConfig
from rmq_client.consumer_config import ConsumerConfig, LitePullConsumerConfig, PushConsumerConfig
from rmq_client.errors import (BrokerError, ClientError, NoRouteError, RemotingConnectError, RemotingError,
                               RemotingTimeoutError)
from rmq_client.instance import (ClientInstance, ConsumeFromWhere, ConsumerHooks, ConsumeType, MessageModel,
                                 consumer_data, subscription_data)
from rmq_client.lite_pull_consumer import LitePullConsumer, LitePullConsumerStats, PolledBatch
from rmq_client.message import (Message, MessageExt, make_message, set_delay_ms, set_delay_sec, set_deliver_time_ms,
                                set_sharding_key)
from rmq_client.offset_store import LocalFileOffsetStore, OffsetStore, ReadOffsetType, RemoteBrokerOffsetStore
from rmq_client.producer import (LocalTransactionState, Producer, ProducerStats, SendCallback, SendFuture, SendResult,
                                 SendStatus, TransactionListener, TransactionProducer, TransactionSendResult)
from rmq_client.push_consumer import (ConsumeConcurrentlyContext, ConsumeConcurrentlyStatus, ConsumeOrderlyContext,
                                      ConsumeOrderlyStatus, PushConsumer, PushConsumerStats)
from rmq_client.rebalance import (AllocateMessageQueueAveragely, AllocateMessageQueueAveragelyByCircle,
                                  AllocateMessageQueueByConfig, AllocateMessageQueueConsistentHash, AllocateStrategy)
from rmq_client.routing import (HashSelector, MessageQueue, MessageQueueSelector, RandomSelector,
                                SelectMessageQueueByHash, SelectMessageQueueByRandom)

__all__ = [
    # producing
    "Producer", "TransactionProducer", "SendResult", "TransactionSendResult", "SendStatus", "SendFuture",
    "SendCallback", "LocalTransactionState", "TransactionListener", "ProducerStats",
    # consuming
    "PushConsumer", "ConsumeConcurrentlyStatus", "ConsumeOrderlyStatus", "ConsumeConcurrentlyContext",
    "ConsumeOrderlyContext", "PushConsumerStats", "LitePullConsumer", "PolledBatch", "LitePullConsumerStats",
    "AllocateStrategy", "AllocateMessageQueueAveragely", "AllocateMessageQueueAveragelyByCircle",
    "AllocateMessageQueueConsistentHash", "AllocateMessageQueueByConfig", "OffsetStore", "RemoteBrokerOffsetStore",
    "LocalFileOffsetStore", "ReadOffsetType",
    # administration
    "Admin", "ConsumeStats", "OffsetWrapper", "TopicOffset",
    # messages and queues
    "Message", "MessageExt", "make_message", "set_deliver_time_ms", "set_delay_ms", "set_delay_sec",
    "set_sharding_key", "MessageQueue", "MessageQueueSelector", "SelectMessageQueueByHash",
    "SelectMessageQueueByRandom", "HashSelector", "RandomSelector",
    # configuration and the shared client core
    "ClientConfig", "ProducerConfig", "ConsumerConfig", "PushConsumerConfig", "LitePullConsumerConfig",
    "CompressionType", "ClientInstance", "ConsumerHooks", "ConsumeType",
    "MessageModel", "ConsumeFromWhere", "consumer_data", "subscription_data",
    # errors
    "ClientError", "BrokerError", "NoRouteError", "RemotingError", "RemotingConnectError", "RemotingTimeoutError",
]
