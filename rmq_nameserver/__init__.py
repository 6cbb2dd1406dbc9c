"""rmq_nameserver: RocketMQ's NameServer — the route registry brokers register with and clients ask for routes.

    from rmq_nameserver import NameServer, NamesrvConfig

    ns = NameServer(NamesrvConfig(listen_port=0, listen_host="127.0.0.1", rmq_home="/tmp/rmq"))
    async with trio.open_nursery() as nursery:
        await nursery.start(ns.serve)        # ns.port is the bound port
        ...
        ns.close()

Modules: ``config`` (NamesrvConfig, RocketMQ keys), ``bodies`` (wire bodies), ``route_info`` (the pure
route registry), ``kvconfig`` (the persisted KV store), ``processor`` (request handlers), ``server``
(NameServer). The ``rmq nameserver`` command runs one as a daemon; see docs/nameserver.md.
"""
from rmq_nameserver.bodies import (BodyError, BrokerData, ClusterInfo, DataVersion, QueueData, RegisterBrokerBody,
                                   TopicConfig, TopicList, TopicRouteData)
from rmq_nameserver.config import ConfigError, NamesrvConfig
from rmq_nameserver.kvconfig import NAMESPACE_ORDER_TOPIC_CONFIG, KVConfigError, KVConfigManager
from rmq_nameserver.route_info import RouteInfoManager
from rmq_nameserver.server import NameServer

__all__ = [
    "NameServer", "NamesrvConfig", "ConfigError", "RouteInfoManager", "KVConfigManager", "KVConfigError",
    "NAMESPACE_ORDER_TOPIC_CONFIG", "BodyError", "BrokerData", "ClusterInfo", "DataVersion", "QueueData",
    "RegisterBrokerBody", "TopicConfig", "TopicList", "TopicRouteData",
]
