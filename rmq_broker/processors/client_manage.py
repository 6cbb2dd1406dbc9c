"""Client management requests: HEART_BEAT, UNREGISTER_CLIENT, GET_CONSUMER_LIST_BY_GROUP, LOCK/UNLOCK_BATCH_MQ.

Upstream ``ClientManageProcessor`` (34, 35), ``ConsumerManageProcessor.getConsumerListByGroup`` (38) and
``AdminBrokerProcessor.lockBatchMQ/unlockBatchMQ`` (41, 42), over the managers of
``rmq_broker.client_manager`` and ``rmq_broker.lock_manager``. The processor owns no state; the broker
supplies two callables so this module does not depend on the topic and subscription-group managers:

* ``ensure_group(group) -> config | None`` — the subscription group's config, auto-created when the broker
  allows it (upstream ``findSubscriptionGroupConfig``); None when unknown and not creatable. The config
  is read duck-typed: ``retry_queue_nums`` (default 1) and ``notify_consumer_ids_changed_enable``
  (default True).
* ``ensure_retry_topic(group, retry_queue_nums)`` — create ``%RETRY%<group>`` if missing (upstream
  ``createTopicInSendMessageBackMethod`` with perm RW).

Either may return an awaitable. Behaviour worth knowing:

* HEART_BEAT: a body that does not parse is answered SYSTEM_ERROR with the parser's message (which field,
  what was wrong). For each consumer group: config found → retry topic ensured, notification per the
  config; config None → registered anyway with notification on and no retry topic, as upstream 4.9.x does
  (``skip_unknown_groups=True`` drops such consumers instead, with a warning). A registration refused by a
  manager bound is answered SYSTEM_ERROR naming it, after registering everything else in the heartbeat.
* GET_CONSUMER_LIST_BY_GROUP: ``{"consumerIdList":[...]}``, or SYSTEM_ERROR "no consumer for this group,
  <group>" (upstream's remark) when the group has no member.
* LOCK_BATCH_MQ: ``{"lockOKMQSet":[...]}`` listing only the queues granted (sorted, for stable output);
  UNLOCK_BATCH_MQ: SUCCESS, no body. Bodies are read with the tolerant fastjson reader; a body without
  ``clientId``/``consumerGroup`` or with a malformed queue is answered SYSTEM_ERROR naming the field.

Handlers are ``async def handler(conn, cmd) -> RemotingCommand`` for ``RemotingServer.register``.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from rmq_broker.client_manager import ClientLimitError, ConsumerManager, ProducerManager
from rmq_broker.heartbeat import HeartbeatError, parse_heartbeat
from rmq_broker.lock_manager import MessageQueue, RebalanceLockManager
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting.headers import GetConsumerListByGroupRequestHeader, UnregisterClientRequestHeader

__all__ = ["ClientManageProcessor", "EnsureGroup", "EnsureRetryTopic", "parse_lock_batch_body"]

log = logging.getLogger("rmq_broker.client")


class EnsureGroup(Protocol):
    def __call__(self, group: str) -> Any: ...


class EnsureRetryTopic(Protocol):
    def __call__(self, group: str, retry_queue_nums: int) -> Any: ...


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def parse_lock_batch_body(body: Any) -> tuple[str, str, list[MessageQueue]]:
    """LockBatchRequestBody / UnlockBatchRequestBody → (client id, group, queues); ValueError if unusable."""
    if body is None or len(body) == 0:
        raise ValueError("lock batch request without a body")
    try:
        doc = fastjson.loads(body)
    except (fastjson.FastjsonError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"lock batch body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError("lock batch body must be a JSON object")
    client_id, group, raw = doc.get("clientId"), doc.get("consumerGroup"), doc.get("mqSet")
    if not isinstance(client_id, str) or not client_id:
        raise ValueError(f"lock batch body: clientId must be a non-empty string, got {client_id!r:.80}")
    if not isinstance(group, str) or not group:
        raise ValueError(f"lock batch body: consumerGroup must be a non-empty string, got {group!r:.80}")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ValueError(f"lock batch body: mqSet must be an array, got {raw!r:.80}")
    mqs: dict[MessageQueue, None] = {}
    for i, item in enumerate(raw):
        try:
            mqs[MessageQueue.from_json(item)] = None
        except ValueError as exc:
            raise ValueError(f"lock batch body: mqSet[{i}]: {exc}") from None
    return client_id, group, list(mqs)


class ClientManageProcessor:
    """Handlers for codes 34, 35, 38, 41, 42 (``handlers()`` maps code → handler)."""

    CODES = (RequestCode.HEART_BEAT, RequestCode.UNREGISTER_CLIENT, RequestCode.GET_CONSUMER_LIST_BY_GROUP,
             RequestCode.LOCK_BATCH_MQ, RequestCode.UNLOCK_BATCH_MQ)

    def __init__(self, consumers: ConsumerManager, producers: ProducerManager, locks: RebalanceLockManager, *,
                 ensure_group: EnsureGroup | Callable[[str], Any],
                 ensure_retry_topic: EnsureRetryTopic | Callable[[str, int], Any],
                 skip_unknown_groups: bool = False) -> None:
        self.consumers = consumers
        self.producers = producers
        self.locks = locks
        self.ensure_group = ensure_group
        self.ensure_retry_topic = ensure_retry_topic
        self.skip_unknown_groups = skip_unknown_groups

    def handlers(self) -> dict[int, Any]:
        return {
            RequestCode.HEART_BEAT: self.heart_beat,
            RequestCode.UNREGISTER_CLIENT: self.unregister_client,
            RequestCode.GET_CONSUMER_LIST_BY_GROUP: self.get_consumer_list_by_group,
            RequestCode.LOCK_BATCH_MQ: self.lock_batch_mq,
            RequestCode.UNLOCK_BATCH_MQ: self.unlock_batch_mq,
        }

    def register(self, server: Any) -> None:
        """Register the handlers and the connection-close hook on a RemotingServer."""
        for code, handler in self.handlers().items():
            server.register(code, handler)
        server.add_close_hook(self.on_connection_closed)

    def on_connection_closed(self, conn: Any) -> None:
        """Close hook: forget the connection in both managers (consumers' groups are notified)."""
        self.consumers.do_channel_close(conn)
        self.producers.do_channel_close(conn)

    # -- 34 ------------------------------------------------------------------------------------

    async def heart_beat(self, conn: Any, cmd: RemotingCommand) -> RemotingCommand:
        try:
            data = parse_heartbeat(cmd.body, clock_ms=self.consumers.clock_ms)
        except HeartbeatError as exc:
            log.debug("heartbeat from %s rejected: %s", getattr(conn, "remote_addr", conn), exc)
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        language, version = cmd.language, cmd.version
        errors: list[str] = []
        for consumer in data.consumers:
            group = consumer.group_name
            try:
                config = await _resolve(self.ensure_group(group))
            except Exception:
                log.warning("heartbeat: looking up subscription group %s failed", group, exc_info=True)
                config = None
            notify = True
            if config is None:
                if self.skip_unknown_groups:
                    log.warning("heartbeat: subscription group %s does not exist and cannot be created, "
                                "consumer %s of %s not registered", group, data.client_id,
                                getattr(conn, "remote_addr", conn))
                    continue
            else:
                notify = bool(getattr(config, "notify_consumer_ids_changed_enable", True))
                retry_queue_nums = int(getattr(config, "retry_queue_nums", 1))
                try:
                    await _resolve(self.ensure_retry_topic(group, retry_queue_nums))
                except Exception:
                    log.warning("heartbeat: creating the retry topic of group %s failed", group, exc_info=True)
            try:
                changed = self.consumers.register_consumer(
                    group, conn, data.client_id, consumer.consume_type, consumer.message_model,
                    consumer.consume_from_where, consumer.subscriptions, language=language, version=version,
                    notify=notify)
            except ClientLimitError as exc:
                log.warning("heartbeat: %s", exc)
                errors.append(str(exc))
                continue
            if changed:
                log.info("heartbeat: registerConsumer info changed %r %s", consumer, getattr(conn, "remote_addr", conn))
        for producer in data.producers:
            try:
                self.producers.register_producer(producer.group_name, conn, data.client_id, language=language,
                                                 version=version)
            except ClientLimitError as exc:
                log.warning("heartbeat: %s", exc)
                errors.append(str(exc))
        if errors:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, "; ".join(errors[:3]))
        return cmd.create_response(ResponseCode.SUCCESS)

    # -- 35 ------------------------------------------------------------------------------------

    async def unregister_client(self, conn: Any, cmd: RemotingCommand) -> RemotingCommand:
        header = UnregisterClientRequestHeader.decode(cmd.ext_fields)
        if header.producer_group is not None:
            self.producers.unregister_producer(header.producer_group, conn)
        if header.consumer_group is not None:
            self.consumers.unregister_consumer(header.consumer_group, conn)
        return cmd.create_response(ResponseCode.SUCCESS)

    # -- 38 ------------------------------------------------------------------------------------

    async def get_consumer_list_by_group(self, conn: Any, cmd: RemotingCommand) -> RemotingCommand:
        header = GetConsumerListByGroupRequestHeader.decode(cmd.ext_fields)
        group = header.consumer_group
        ids = self.consumers.all_client_ids(group)
        if ids:
            return cmd.create_response(ResponseCode.SUCCESS, None, None, orjson.dumps({"consumerIdList": ids}))
        log.warning("getConsumerGroupInfo failed, %s %s", group, getattr(conn, "remote_addr", conn))
        return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"no consumer for this group, {group}")

    # -- 41 / 42 -------------------------------------------------------------------------------

    async def lock_batch_mq(self, conn: Any, cmd: RemotingCommand) -> RemotingCommand:
        try:
            client_id, group, mqs = parse_lock_batch_body(cmd.body)
        except ValueError as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        locked = self.locks.try_lock_batch(group, mqs, client_id)
        body = fastjson.dumps({"lockOKMQSet": [mq.to_json() for mq in sorted(locked)]})
        return cmd.create_response(ResponseCode.SUCCESS, None, None, body)

    async def unlock_batch_mq(self, conn: Any, cmd: RemotingCommand) -> RemotingCommand:
        try:
            client_id, group, mqs = parse_lock_batch_body(cmd.body)
        except ValueError as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        self.locks.unlock_batch(group, mqs, client_id)
        return cmd.create_response(ResponseCode.SUCCESS)
