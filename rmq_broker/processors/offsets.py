"""Offsets: consumer progress (QUERY/UPDATE_CONSUMER_OFFSET, GET_ALL_CONSUMER_OFFSET) and queue bounds
(GET_MAX/MIN_OFFSET, SEARCH_OFFSET_BY_TIMESTAMP, GET_EARLIEST_MSG_STORETIME).

QUERY_CONSUMER_OFFSET for a group that never committed on a queue answers 0 when the queue still
starts at offset 0, so a new group reads a young queue from its first message whatever its
ConsumeFromWhere (PROTOCOL.md §5.5, CAPTURES.md §3.7); otherwise 22 QUERY_NOT_FOUND and the client
applies its ConsumeFromWhere. Java also requires the first message to be in the page cache window
(40 % of RAM); rmq answers 0 for every queue whose minimum offset is 0 (docs/compatibility.md).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting import headers as h
from rmq_remoting.fastjson import dumps as fastjson_dumps

from rmq_broker.consumer_offset import OffsetTableFullError

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_remoting import Connection

__all__ = ["OffsetProcessor"]


class OffsetProcessor:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def handlers(self) -> dict[int, object]:
        return {
            RequestCode.QUERY_CONSUMER_OFFSET: self.query_consumer_offset,
            RequestCode.UPDATE_CONSUMER_OFFSET: self.update_consumer_offset,
            RequestCode.GET_ALL_CONSUMER_OFFSET: self.get_all_consumer_offset,
            RequestCode.GET_MAX_OFFSET: self.get_max_offset,
            RequestCode.GET_MIN_OFFSET: self.get_min_offset,
            RequestCode.SEARCH_OFFSET_BY_TIMESTAMP: self.search_offset_by_timestamp,
            RequestCode.GET_EARLIEST_MSG_STORETIME: self.get_earliest_msg_storetime,
        }

    async def query_consumer_offset(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.QueryConsumerOffsetRequestHeader.decode(cmd.ext_fields)
        offset = self.broker.offsets.query(header.consumer_group, header.topic, header.queue_id)
        if offset is not None and offset >= 0:
            return cmd.create_response(ResponseCode.SUCCESS, None,
                                       h.QueryConsumerOffsetResponseHeader(offset=offset).to_ext())
        if self.broker.store.min_offset(header.topic, header.queue_id) <= 0 or header.set_zero_if_not_found:
            return cmd.create_response(ResponseCode.SUCCESS, None, h.QueryConsumerOffsetResponseHeader(offset=0).to_ext())
        return cmd.create_response(ResponseCode.QUERY_NOT_FOUND,
                                   "Not found, V3_0_6_SNAPSHOT maybe this group consumer boot first")

    async def update_consumer_offset(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.UpdateConsumerOffsetRequestHeader.decode(cmd.ext_fields)
        try:
            self.broker.offsets.commit(header.consumer_group, header.topic, header.queue_id, header.commit_offset)
        except (ValueError, OffsetTableFullError) as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"offset not stored: {exc}")
        return cmd.create_response(ResponseCode.SUCCESS)

    async def get_all_consumer_offset(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        table = self.broker.offsets.table()
        return cmd.create_response(ResponseCode.SUCCESS, None, None, fastjson_dumps({"offsetTable": table}))

    async def get_max_offset(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.GetMaxOffsetRequestHeader.decode(cmd.ext_fields)
        offset = self.broker.store.max_offset(header.topic, header.queue_id)
        return cmd.create_response(ResponseCode.SUCCESS, None, h.GetMaxOffsetResponseHeader(offset=offset).to_ext())

    async def get_min_offset(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.GetMinOffsetRequestHeader.decode(cmd.ext_fields)
        offset = self.broker.store.min_offset(header.topic, header.queue_id)
        return cmd.create_response(ResponseCode.SUCCESS, None, h.GetMinOffsetResponseHeader(offset=offset).to_ext())

    async def search_offset_by_timestamp(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.SearchOffsetRequestHeader.decode(cmd.ext_fields)
        offset = self.broker.store.offset_by_time(header.topic, header.queue_id, header.timestamp)
        return cmd.create_response(ResponseCode.SUCCESS, None, h.SearchOffsetResponseHeader(offset=offset).to_ext())

    async def get_earliest_msg_storetime(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = h.GetEarliestMsgStoretimeRequestHeader.decode(cmd.ext_fields)
        ts = self.broker.store.earliest_message_time(header.topic, header.queue_id)
        return cmd.create_response(ResponseCode.SUCCESS, None,
                                   h.GetEarliestMsgStoretimeResponseHeader(timestamp=ts).to_ext())
