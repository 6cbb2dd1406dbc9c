"""Admin and runtime requests: topics, subscription groups, broker config, statistics, message lookup.

These are what ``mqadmin``-style tools and dashboards send (PROTOCOL.md §2.1 "Broker admin"). Bodies use
RocketMQ's JSON forms; maps keyed by a MessageQueue object are written the way fastjson writes them
(an object in key position), which our fastjson writer and every RocketMQ client can read.
"""
from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from rmq_common.topic import InvalidTopicError, validate_topic
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting import fastjson
from rmq_remoting import headers as h
from rmq_remoting.fastjson import FrozenDict
from rmq_store import StoreError

from rmq_broker.config import ConfigError
from rmq_broker.subscription_group import InvalidGroupError, SubscriptionGroupConfig
from rmq_broker.topic_config import DEDUP_WINDOW_KEY, TopicConfig

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_remoting import Connection

__all__ = ["AdminProcessor", "BROKER_VERSION"]

log = logging.getLogger("rmq_broker.admin")

#: Java ``MixAll.UNIQUE_MSG_QUERY_FLAG``: an extFields key of QUERY_MESSAGE; "true" = the key is a UNIQ_KEY.
UNIQUE_KEY_QUERY = "_UNIQUE_KEY_QUERY"
#: Java ``MessageStoreConfig.maxMsgsNumBatch``: the most messages one QUERY_MESSAGE answers.
MAX_MSGS_NUM_BATCH = 64

#: MQVersion ordinal reported as brokerVersion (V4_9_7); clients only compare it for feature switches.
BROKER_VERSION = 401
BROKER_VERSION_DESC = "V4_9_7"


def _mq_key(topic: str, broker_name: str, queue_id: int) -> FrozenDict:
    return FrozenDict({"brokerName": broker_name, "queueId": queue_id, "topic": topic})


def _body_text(cmd: RemotingCommand) -> str:
    return bytes(cmd.body or b"").decode("utf-8")


def _parse_properties_text(text: str) -> dict[str, str]:
    from rmq_common.properties_file import parse_properties
    return parse_properties(text)


class AdminProcessor:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def handlers(self) -> dict[int, Any]:
        rc = RequestCode
        return {
            rc.UPDATE_AND_CREATE_TOPIC: self.update_and_create_topic,
            rc.DELETE_TOPIC_IN_BROKER: self.delete_topic,
            rc.GET_ALL_TOPIC_CONFIG: self.get_all_topic_config,
            rc.UPDATE_AND_CREATE_SUBSCRIPTIONGROUP: self.update_and_create_subscription_group,
            rc.GET_ALL_SUBSCRIPTIONGROUP_CONFIG: self.get_all_subscription_group_config,
            rc.GET_BROKER_RUNTIME_INFO: self.get_broker_runtime_info,
            rc.GET_BROKER_CONFIG: self.get_broker_config,
            rc.UPDATE_BROKER_CONFIG: self.update_broker_config,
            rc.GET_TOPIC_STATS_INFO: self.get_topic_stats_info,
            rc.GET_CONSUME_STATS: self.get_consume_stats,
            rc.GET_CONSUMER_CONNECTION_LIST: self.get_consumer_connection_list,
            rc.QUERY_MESSAGE: self.query_message,
            rc.VIEW_MESSAGE_BY_ID: self.view_message_by_id,
            rc.GET_ALL_DELAY_OFFSET: self.get_all_delay_offset,
        }

    # -- topics ---------------------------------------------------------------------------------

    async def update_and_create_topic(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.CreateTopicRequestHeader.decode(cmd.ext_fields)
        topic = header.topic
        try:
            validate_topic(topic)
        except InvalidTopicError as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        if topic == self.broker.config.broker_cluster_name:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"The topic[{topic}] is conflict with system reserved words.")
        if header.read_queue_nums < 0 or header.write_queue_nums < 0 or \
                max(header.read_queue_nums, header.write_queue_nums) > 1024:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"queue numbers must be within 0..1024, got read {header.read_queue_nums} "
                                       f"write {header.write_queue_nums}")
        filter_type = header.topic_filter_type if header.topic_filter_type in ("SINGLE_TAG", "MULTI_TAG") \
            else "SINGLE_TAG"
        # rmq's extension: an extra extFields key sets the deduplication window (RocketMQ ignores unknown keys);
        # without it an update keeps the topic's window, so mqadmin updateTopic does not turn it off
        previous = self.broker.topics.select(topic)
        dedup_window = previous.dedup_window_ms if previous is not None else 0
        text = (cmd.ext_fields or {}).get(DEDUP_WINDOW_KEY)
        if text is not None:
            try:
                dedup_window = int(text.strip())
            except ValueError:
                return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                           f"{DEDUP_WINDOW_KEY} must be a whole number of ms, got {text!r}")
        try:
            config = TopicConfig(topic_name=topic, read_queue_nums=header.read_queue_nums,
                                 write_queue_nums=header.write_queue_nums, perm=header.perm,
                                 topic_filter_type=filter_type, topic_sys_flag=header.topic_sys_flag or 0,
                                 order=header.order, dedup_window_ms=dedup_window)
        except ValueError as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        self.broker.topics.create_or_update(config)
        log.info("topic %s created/updated by %s: %s", topic, conn.remote_addr, config)
        return cmd.create_response(ResponseCode.SUCCESS)

    async def delete_topic(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.DeleteTopicRequestHeader.decode(cmd.ext_fields)
        broker = self.broker
        broker.topics.delete(header.topic)
        broker.offsets.remove_topic(header.topic)
        broker.store.delete_topic(header.topic)
        broker.dedup.forget_topic(header.topic)
        log.info("topic %s deleted by %s", header.topic, conn.remote_addr)
        return cmd.create_response(ResponseCode.SUCCESS)

    async def get_all_topic_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, None, None, self.broker.topics.encode())

    # -- subscription groups --------------------------------------------------------------------

    async def update_and_create_subscription_group(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        try:
            data = fastjson.loads(bytes(cmd.body or b""))
            config = SubscriptionGroupConfig.from_json_dict(data)
        except (fastjson.FastjsonError, ValueError, TypeError, KeyError, InvalidGroupError) as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"bad subscription group body: {exc}")
        self.broker.groups.update(config)
        return cmd.create_response(ResponseCode.SUCCESS)

    async def get_all_subscription_group_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, None, None, self.broker.groups.encode())

    # -- broker config and runtime --------------------------------------------------------------

    async def get_broker_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        config = self.broker.config
        version = fastjson.dumps(config.data_version.to_json_dict()).decode() \
            if hasattr(config.data_version, "to_json_dict") else str(config.data_version)
        return cmd.create_response(ResponseCode.SUCCESS, None,
                                   h.GetBrokerConfigResponseHeader(version=version).to_ext(),
                                   config.to_properties_text().encode())

    async def update_broker_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        try:
            props = _parse_properties_text(_body_text(cmd))
        except (UnicodeDecodeError, ValueError) as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"bad properties body: {exc}")
        broker = self.broker
        try:
            update = broker.config.update(props, now_ms=broker.clock.now_ms())
        except ConfigError as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
        if update.store_changed:
            broker.store.config = broker.config.store_config().replace(store_host=broker.store_host)
        if update.permission_changed:
            broker.topics.bump_data_version()
            broker.registrar.request_register()
        log.info("broker config updated by %s: applied %s, restart required %s", conn.remote_addr,
                 update.applied, update.restart_required)
        remark = None
        if update.restart_required:
            remark = "takes effect after a restart: " + ", ".join(sorted(update.restart_required))
        return cmd.create_response(ResponseCode.SUCCESS, remark)

    async def get_broker_runtime_info(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        broker = self.broker
        store = broker.store
        stats = broker.stats
        stats.sample()
        st = store.stats()
        disk = os.statvfs(store.config.store_path_root_dir)
        used_ratio = 1 - disk.f_bavail / disk.f_blocks if disk.f_blocks else 0.0
        table = {
            "brokerVersionDesc": BROKER_VERSION_DESC,
            "brokerVersion": str(BROKER_VERSION),
            "bootTimestamp": str(stats.boot_ms),
            "runtime": f"[ {int((broker.clock.now_ms() - stats.boot_ms) / 1000)} seconds ]",
            "msgPutTotalTodayNow": str(stats.put_messages),
            "msgGetTotalTodayNow": str(stats.get_messages),
            "putTps": f"{stats.put_tps:.1f}",
            "getTransferedTps": f"{stats.get_tps:.1f}",
            "commitLogMinOffset": str(store.min_phy_offset),
            "commitLogMaxOffset": str(store.max_phy_offset),
            "commitLogDiskRatio": f"{used_ratio:.4f}",
            "dispatchBehindBytes": "0",
            "pageCacheLockTimeMills": "0",
            "earliestMessageTimeStamp": str(store.earliest_message_time()),
            "putMessageDistributeTime": "",
            "remainHowManyDataToFlush": f"{max(0, store.max_phy_offset - store.flushed_offset)} B",
            "pullThreadPoolQueueSize": "0",
            "sendThreadPoolQueueSize": "0",
            "heldPulls": str(broker.holds.held),
            "brokerRole": str(broker.config.broker_role),
            "scheduleMessageOffset": broker.schedule.text() if broker.schedule else "",
            "storeStats": fastjson.dumps(st).decode(),
        }
        table.update(broker.ha.runtime_info())
        return cmd.create_response(ResponseCode.SUCCESS, None, None, fastjson.dumps({"table": table}))

    # -- statistics -----------------------------------------------------------------------------

    async def get_topic_stats_info(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.GetTopicStatsInfoRequestHeader.decode(cmd.ext_fields)
        broker = self.broker
        topic_config = broker.topics.select(header.topic)
        if topic_config is None:
            return cmd.create_response(ResponseCode.TOPIC_NOT_EXIST, f"topic[{header.topic}] not exist")
        store = broker.store
        table: dict[Any, Any] = {}
        for qid in range(topic_config.write_queue_nums):
            max_o = store.max_offset(header.topic, qid)
            last = store.store_time(header.topic, qid, max_o - 1) if max_o > 0 else 0
            table[_mq_key(header.topic, broker.config.broker_name, qid)] = {
                "minOffset": store.min_offset(header.topic, qid), "maxOffset": max_o,
                "lastUpdateTimestamp": max(0, last)}
        return cmd.create_response(ResponseCode.SUCCESS, None, None, fastjson.dumps({"offsetTable": table}))

    async def get_consume_stats(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.GetConsumeStatsRequestHeader.decode(cmd.ext_fields)
        broker = self.broker
        group = header.consumer_group
        topics = [header.topic] if header.topic else sorted(broker.offsets.topics_of_group(group))
        table: dict[Any, Any] = {}
        for topic in topics:
            topic_config = broker.topics.select(topic)
            if topic_config is None:
                continue
            for qid in range(topic_config.write_queue_nums):
                broker_offset = broker.store.max_offset(topic, qid)
                consumer_offset = broker.offsets.query(group, topic, qid)
                consumer_offset = -1 if consumer_offset is None else consumer_offset
                last = broker.store.store_time(topic, qid, consumer_offset - 1) if consumer_offset > 0 else 0
                table[_mq_key(topic, broker.config.broker_name, qid)] = {
                    "brokerOffset": broker_offset, "consumerOffset": consumer_offset,
                    "lastTimestamp": max(0, last)}
        return cmd.create_response(ResponseCode.SUCCESS, None, None,
                                   fastjson.dumps({"consumeTps": 0.0, "offsetTable": table}))

    async def get_consumer_connection_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.GetConsumerConnectionListRequestHeader.decode(cmd.ext_fields)
        info = self.broker.consumers.consumer_group_info(header.consumer_group)
        if info is None or not info.channels:
            return cmd.create_response(ResponseCode.CONSUMER_NOT_ONLINE,
                                       f"the consumer group[{header.consumer_group}] not online")
        connections = [{"clientAddr": ch.remote_addr, "clientId": ch.client_id, "language": ch.language,
                        "version": ch.version} for ch in info.channels.values()]
        body = {
            "connectionSet": connections,
            "consumeFromWhere": info.consume_from_where.name if info.consume_from_where is not None else None,
            "consumeType": info.consume_type.name if info.consume_type is not None else None,
            "messageModel": info.message_model.name if info.message_model is not None else None,
            "subscriptionTable": {t: s.to_json() for t, s in info.subscriptions.items()},
        }
        return cmd.create_response(ResponseCode.SUCCESS, None, None, fastjson.dumps(body))

    # -- message lookup -------------------------------------------------------------------------

    async def query_message(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.QueryMessageRequestHeader.decode(cmd.ext_fields)
        broker = self.broker
        # Java QueryMessageProcessor: a unique-key query (mqadmin queryMsgByUniqueKey, the clients' viewMessage by
        # msgId) asks for defaultQueryMaxNum whatever maxNum says; IndexService caps every query at maxMsgsNumBatch
        unique = (cmd.ext_fields or {}).get(UNIQUE_KEY_QUERY) == "true"
        if unique or header.max_num <= 0:
            max_num = broker.config.default_query_max_num
        else:
            max_num = header.max_num
        max_num = min(max_num, MAX_MSGS_NUM_BATCH)
        try:
            result = broker.store.query_message(header.topic, header.key, max_num, header.begin_timestamp,
                                                header.end_timestamp, unique=unique)
        except StoreError as exc:           # messageIndexEnable=false
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"querying messages by key failed: {exc}")
        ext = h.QueryMessageResponseHeader(index_last_update_timestamp=result.index_last_update_timestamp,
                                           index_last_update_phyoffset=result.index_last_update_phy_offset).to_ext()
        if not result.records:
            return cmd.create_response(ResponseCode.QUERY_NOT_FOUND, "can not find message, maybe time range not correct",
                                       ext)
        return cmd.create_response(ResponseCode.SUCCESS, None, ext, b"".join(bytes(r) for r in result.records))

    async def view_message_by_id(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.ViewMessageRequestHeader.decode(cmd.ext_fields)
        record = self.broker.store.read_record(header.offset)
        if record is None:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                       f"can not find message by the offset, {header.offset}")
        return cmd.create_response(ResponseCode.SUCCESS, None, None, bytes(record))

    async def get_all_delay_offset(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, None, None, self.broker.schedule.text().encode())

