"""Request handlers of every nameserver code (RocketMQ's DefaultRequestProcessor, PROTOCOL.md §2.1).

Each handler decodes its typed header (``rmq_remoting.headers``; a missing mandatory field raises
RemotingCommandError, which the connection answers as SYSTEM_ERROR with RocketMQ's remark), calls the
RouteInfoManager or the KV store, and answers with RocketMQ's codes, remarks and body formats.

Everything runs on the server's trio loop. Route operations are synchronous and take microseconds;
the two that touch the disk (KV writes, persisting an updated configuration) run in a worker thread so
an fsync never stalls broker registrations.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from rmq_common._record import masked_crc
from rmq_common.atomic_file import write_file_atomically
from rmq_common.properties_file import PropertiesFileError, parse_properties
from rmq_nameserver.bodies import BodyError, DataVersion, RegisterBrokerBody, encode_kv_table
from rmq_nameserver.config import PATH_KEYS, RESTART_KEYS, ConfigError, NamesrvConfig
from rmq_nameserver.kvconfig import NAMESPACE_ORDER_TOPIC_CONFIG, KVConfigError, KVConfigManager
from rmq_nameserver.route_info import RouteInfoManager
from rmq_remoting import MQVersion, RemotingCommand, RemotingCommandError, RequestCode, ResponseCode
from rmq_remoting.headers import (AddWritePermOfBrokerRequestHeader, AddWritePermOfBrokerResponseHeader,
                                  DeleteKVConfigRequestHeader, DeleteTopicFromNamesrvRequestHeader,
                                  GetKVConfigRequestHeader, GetKVConfigResponseHeader,
                                  GetKVListByNamespaceRequestHeader, GetRouteInfoRequestHeader,
                                  GetTopicsByClusterRequestHeader, PutKVConfigRequestHeader,
                                  QueryDataVersionRequestHeader, QueryDataVersionResponseHeader,
                                  RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
                                  UnRegisterBrokerRequestHeader, WipeWritePermOfBrokerRequestHeader,
                                  WipeWritePermOfBrokerResponseHeader)

if TYPE_CHECKING:
    from rmq_remoting import Connection, RemotingServer

__all__ = ["NamesrvProcessor", "FAQ_SUGGESTION"]

log = logging.getLogger("rmq.nameserver")

#: FAQUrl.suggestTodo(FAQUrl.APPLY_TOPIC_URL), appended to RocketMQ's TOPIC_NOT_EXIST remark.
FAQ_SUGGESTION = "\nSee http://rocketmq.apache.org/docs/faq/ for further details."


class NamesrvProcessor:
    """The nameserver's request handlers over one RouteInfoManager, KV store and configuration."""

    def __init__(self, config: NamesrvConfig, routes: RouteInfoManager, kv: KVConfigManager) -> None:
        self.config = config
        self.routes = routes
        self.kv = kv
        # Serializes configuration updates so the persisted file is always the latest one.
        self._config_lock = trio.Lock()

    def register_on(self, server: RemotingServer) -> None:
        """Serve every nameserver request code on ``server``."""
        rc = RequestCode
        for code, handler in {
            rc.PUT_KV_CONFIG: self.put_kv_config,
            rc.GET_KV_CONFIG: self.get_kv_config,
            rc.DELETE_KV_CONFIG: self.delete_kv_config,
            rc.QUERY_DATA_VERSION: self.query_data_version,
            rc.REGISTER_BROKER: self.register_broker,
            rc.UNREGISTER_BROKER: self.unregister_broker,
            rc.GET_ROUTEINFO_BY_TOPIC: self.get_route_info_by_topic,
            rc.GET_BROKER_CLUSTER_INFO: self.get_broker_cluster_info,
            rc.WIPE_WRITE_PERM_OF_BROKER: self.wipe_write_perm_of_broker,
            rc.ADD_WRITE_PERM_OF_BROKER: self.add_write_perm_of_broker,
            rc.GET_ALL_TOPIC_LIST_FROM_NAMESERVER: self.get_all_topic_list,
            rc.DELETE_TOPIC_IN_NAMESRV: self.delete_topic_in_namesrv,
            rc.GET_KVLIST_BY_NAMESPACE: self.get_kv_list_by_namespace,
            rc.GET_TOPICS_BY_CLUSTER: self.get_topics_by_cluster,
            rc.GET_SYSTEM_TOPIC_LIST_FROM_NS: self.get_system_topic_list,
            rc.GET_UNIT_TOPIC_LIST: self.get_unit_topic_list,
            rc.GET_HAS_UNIT_SUB_TOPIC_LIST: self.get_has_unit_sub_topic_list,
            rc.GET_HAS_UNIT_SUB_UNUNIT_TOPIC_LIST: self.get_has_unit_sub_un_unit_topic_list,
            rc.UPDATE_NAMESRV_CONFIG: self.update_config,
            rc.GET_NAMESRV_CONFIG: self.get_config,
        }.items():
            server.register(code, handler)

    # -- KV config ----------------------------------------------------------------------------------

    async def put_kv_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = PutKVConfigRequestHeader.decode(cmd.ext_fields)
        await self._kv_write(self.kv.put_kv_config, header.namespace, header.key, header.value)
        return cmd.create_response(ResponseCode.SUCCESS)

    async def get_kv_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = GetKVConfigRequestHeader.decode(cmd.ext_fields)
        value = self.kv.get_kv_config(header.namespace, header.key)
        if value is None:
            return cmd.create_response(ResponseCode.QUERY_NOT_FOUND,
                                       f"No config item, Namespace: {header.namespace} Key: {header.key}")
        return cmd.create_response(ResponseCode.SUCCESS, ext_fields=GetKVConfigResponseHeader(value=value).to_ext())

    async def delete_kv_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = DeleteKVConfigRequestHeader.decode(cmd.ext_fields)
        await self._kv_write(self.kv.delete_kv_config, header.namespace, header.key)
        return cmd.create_response(ResponseCode.SUCCESS)

    async def get_kv_list_by_namespace(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = GetKVListByNamespaceRequestHeader.decode(cmd.ext_fields)
        table = self.kv.get_kv_list_by_namespace(header.namespace)
        if table is None:
            return cmd.create_response(ResponseCode.QUERY_NOT_FOUND, f"No config item, Namespace: {header.namespace}")
        return cmd.create_response(ResponseCode.SUCCESS, body=encode_kv_table(table))

    async def _kv_write(self, fn: Callable[..., None], *args: str) -> None:
        try:
            await trio.to_thread.run_sync(fn, *args)
        except KVConfigError as exc:
            log.error("%s", exc)
            raise RemotingCommandError(str(exc)) from None

    # -- brokers ------------------------------------------------------------------------------------

    async def register_broker(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = RegisterBrokerRequestHeader.decode(cmd.ext_fields)
        body = cmd.body
        if header.body_crc32 != 0 and masked_crc(body if body is not None else b"") != header.body_crc32:
            log.warning("receive registerBroker request, crc32 not match, from %s (%s)",
                        conn.remote_addr, header.broker_addr)
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, "crc32 not match")
        parsed = None
        if body is not None:
            try:
                parsed = RegisterBrokerBody.decode(body, header.compressed)
            except BodyError as exc:
                log.warning("bad REGISTER_BROKER body from %s (%s): %s", conn.remote_addr, header.broker_addr, exc)
                raise RemotingCommandError(f"Failed to decode RegisterBrokerBody: {exc}") from None
        result = self.routes.register_broker(header.cluster_name, header.broker_addr, header.broker_name,
                                             header.broker_id, header.ha_server_addr, parsed, conn)
        response_body = None
        if self.config.return_order_topic_config_to_broker:
            order_conf = self.kv.get_kv_list_by_namespace(NAMESPACE_ORDER_TOPIC_CONFIG)
            if order_conf is not None:
                response_body = encode_kv_table(order_conf)
        ext = RegisterBrokerResponseHeader(ha_server_addr=result.ha_server_addr,
                                           master_addr=result.master_addr).to_ext()
        return cmd.create_response(ResponseCode.SUCCESS, ext_fields=ext, body=response_body)

    async def unregister_broker(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = UnRegisterBrokerRequestHeader.decode(cmd.ext_fields)
        self.routes.unregister_broker(header.cluster_name, header.broker_addr, header.broker_name, header.broker_id)
        return cmd.create_response(ResponseCode.SUCCESS)

    async def query_data_version(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = QueryDataVersionRequestHeader.decode(cmd.ext_fields)
        if cmd.body is None:
            raise RemotingCommandError("QUERY_DATA_VERSION needs the broker's DataVersion as its body")
        try:
            version = DataVersion.decode(cmd.body)
        except BodyError as exc:
            raise RemotingCommandError(f"Failed to decode DataVersion: {exc}") from None
        changed, stored = self.routes.query_data_version(header.broker_addr, version)
        return cmd.create_response(ResponseCode.SUCCESS,
                                   ext_fields=QueryDataVersionResponseHeader(changed=changed).to_ext(),
                                   body=stored.encode() if stored is not None else None)

    async def wipe_write_perm_of_broker(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = WipeWritePermOfBrokerRequestHeader.decode(cmd.ext_fields)
        count = self.routes.wipe_write_perm_of_broker(header.broker_name)
        log.info("wipe write perm of broker[%s], client: %s, %d", header.broker_name, conn.remote_addr, count)
        return cmd.create_response(ResponseCode.SUCCESS,
                                   ext_fields=WipeWritePermOfBrokerResponseHeader(wipe_topic_count=count).to_ext())

    async def add_write_perm_of_broker(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = AddWritePermOfBrokerRequestHeader.decode(cmd.ext_fields)
        count = self.routes.add_write_perm_of_broker(header.broker_name)
        log.info("add write perm of broker[%s], client: %s, %d", header.broker_name, conn.remote_addr, count)
        return cmd.create_response(ResponseCode.SUCCESS,
                                   ext_fields=AddWritePermOfBrokerResponseHeader(add_topic_count=count).to_ext())

    # -- routes and topic lists ---------------------------------------------------------------------

    async def get_route_info_by_topic(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = GetRouteInfoRequestHeader.decode(cmd.ext_fields)
        route = self.routes.pickup_topic_route_data(header.topic)
        if route is None:
            return cmd.create_response(
                ResponseCode.TOPIC_NOT_EXIST,
                f"No topic route info in name server for the topic: {header.topic}{FAQ_SUGGESTION}")
        if self.config.order_message_enable:
            route.order_topic_conf = self.kv.get_kv_config(NAMESPACE_ORDER_TOPIC_CONFIG, header.topic)
        # As upstream: clients from 4.9.4 on, or any client that asks, get standard JSON (quoted keys).
        standard = cmd.version >= MQVersion.V4_9_4 or bool(header.accept_standard_json_only)
        return cmd.create_response(ResponseCode.SUCCESS, body=route.encode(standard_json=standard))

    async def get_broker_cluster_info(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, body=self.routes.get_all_cluster_info().encode())

    async def get_all_topic_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, body=self.routes.get_all_topic_list().encode())

    async def get_topics_by_cluster(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = GetTopicsByClusterRequestHeader.decode(cmd.ext_fields)
        return cmd.create_response(ResponseCode.SUCCESS,
                                   body=self.routes.get_topics_by_cluster(header.cluster).encode())

    async def get_system_topic_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, body=self.routes.get_system_topic_list().encode())

    async def get_unit_topic_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, body=self.routes.get_unit_topics().encode())

    async def get_has_unit_sub_topic_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, body=self.routes.get_has_unit_sub_topic_list().encode())

    async def get_has_unit_sub_un_unit_topic_list(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS,
                                   body=self.routes.get_has_unit_sub_un_unit_topic_list().encode())

    async def delete_topic_in_namesrv(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        header = DeleteTopicFromNamesrvRequestHeader.decode(cmd.ext_fields)
        self.routes.delete_topic(header.topic, header.cluster_name or None)
        log.info("delete topic %s from the routes%s, client: %s", header.topic,
                 f" of cluster {header.cluster_name}" if header.cluster_name else "", conn.remote_addr)
        return cmd.create_response(ResponseCode.SUCCESS)

    # -- configuration ------------------------------------------------------------------------------

    async def update_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        log.info("updateConfig called by %s", conn.remote_addr)
        if cmd.body is None:
            return cmd.create_response(ResponseCode.SUCCESS)
        try:
            props = parse_properties(bytes(cmd.body).decode("utf-8"), "UPDATE_NAMESRV_CONFIG body")
        except (UnicodeDecodeError, PropertiesFileError) as exc:
            return cmd.create_response(ResponseCode.SYSTEM_ERROR, f"string2Properties error: {exc}")
        if any(key in PATH_KEYS for key in props):
            return cmd.create_response(ResponseCode.NO_PERMISSION, "Can not update config path")
        async with self._config_lock:
            try:
                changed = self.config.update_from_properties(props)
            except ConfigError as exc:
                return cmd.create_response(ResponseCode.SYSTEM_ERROR, str(exc))
            if changed:
                log.info("configuration updated by %s: %s", conn.remote_addr,
                         ", ".join(f"{k}={v}" for k, v in self.config.to_properties().items() if k in changed))
            later = sorted(set(changed) & RESTART_KEYS)
            if later:
                log.warning("configuration keys %s take effect after a restart", ", ".join(later))
            path = self.config.config_store_file
            if path is not None:
                data = self.config.to_properties_text().encode()
                try:
                    await trio.to_thread.run_sync(write_file_atomically, path, data)
                except OSError as exc:
                    log.error("cannot persist the configuration to %s: %s", path, exc)
                    return cmd.create_response(ResponseCode.SYSTEM_ERROR,
                                               f"configuration applied but not persisted to {path}: {exc}")
        return cmd.create_response(ResponseCode.SUCCESS)

    async def get_config(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SUCCESS, body=self.config.to_properties_text().encode())
