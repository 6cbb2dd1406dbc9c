"""The JSON (and one binary) bodies the nameserver reads and writes (PROTOCOL.md §3.1–§3.3).

Field names on the wire are RocketMQ's getters, in fastjson's sorted order; Python attributes are
snake_case, so every model has an explicit ``to_wire`` (a dict with the wire names, written with
``rmq_remoting.fastjson.dumps``) and, where rmq receives it, a validating ``from_wire``. Decoders
raise ``BodyError`` naming the offending path (``topicConfigTable.TopicA.perm``) instead of a
``KeyError`` deep in the route table, because a broker's body is untrusted input.

The broker (RegisterBrokerBody.encode) and the client (TopicRouteData.decode) will use the other
direction of the same models.
"""
from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rmq_remoting import fastjson

__all__ = [
    "BodyError", "PERM_PRIORITY", "PERM_READ", "PERM_WRITE", "PERM_INHERIT", "TOPIC_SYS_FLAG_UNIT",
    "TOPIC_SYS_FLAG_UNIT_SUB", "MASTER_ID", "DataVersion", "TopicConfig", "RegisterBrokerBody", "QueueData",
    "BrokerData", "TopicRouteData", "ClusterInfo", "TopicList", "encode_kv_table", "decode_kv_table",
    "MAX_INFLATED_REGISTER_BODY_BYTES",
]

# PermName (COM/constant/PermName.java)
PERM_PRIORITY = 0x8
PERM_READ = 0x4
PERM_WRITE = 0x2
PERM_INHERIT = 0x1
# TopicSysFlag (COM/sysflag/TopicSysFlag.java)
TOPIC_SYS_FLAG_UNIT = 0x1
TOPIC_SYS_FLAG_UNIT_SUB = 0x2
#: brokerId of a master (MixAll.MASTER_ID).
MASTER_ID = 0

#: A compressed REGISTER_BROKER body is inflated at most to this size: a broker with 100,000 topics needs
#: about 6 MB, and the cap keeps a hostile few-KiB zlib stream from inflating into gigabytes.
MAX_INFLATED_REGISTER_BODY_BYTES = 64 << 20

_INT32 = struct.Struct(">i")
_TOPIC_FILTER_TYPES = ("SINGLE_TAG", "MULTI_TAG")


class BodyError(ValueError):
    """A body that does not have the expected shape; the message names the path of the bad value."""


# ---------------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------------

def _parse_json(data: bytes | bytearray | memoryview | str, what: str) -> Any:
    try:
        return fastjson.loads(data)
    except (fastjson.FastjsonError, ValueError) as exc:
        raise BodyError(f"{what} is not JSON: {exc}") from None


def _object(value: Any, where: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise BodyError(f"{where} must be a JSON object, got {type(value).__name__}")
    return value


def _optional_object(obj: Mapping, key: str, where: str) -> Mapping:
    """``obj[key]`` as an object; absent or null is an empty one."""
    value = obj.get(key)
    return {} if value is None else _object(value, where)


def _int(obj: Mapping, key: str, where: str, default: int | None = None, *, bits: int = 32) -> int:
    """An int field; numeric strings are accepted as fastjson does, booleans and floats are not."""
    value = obj.get(key)
    if value is None:
        if default is None:
            raise BodyError(f"{where}.{key} is missing")
        return default
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise BodyError(f"{where}.{key} must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BodyError(f"{where}.{key} must be an integer, got {value!r}")
    limit = 1 << (bits - 1)
    if not (-limit <= value < limit):
        raise BodyError(f"{where}.{key} is out of range for a {bits}-bit integer: {value}")
    return value


def _bool(obj: Mapping, key: str, where: str, default: bool) -> bool:
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise BodyError(f"{where}.{key} must be a boolean, got {value!r}")


def _str(obj: Mapping, key: str, where: str, default: str | None = None) -> str:
    value = obj.get(key)
    if value is None:
        if default is None:
            raise BodyError(f"{where}.{key} is missing")
        return default
    if not isinstance(value, str):
        raise BodyError(f"{where}.{key} must be a string, got {value!r}")
    return value


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise BodyError(f"{where} must be a list of strings, got {value!r}")
    return list(value)


# ---------------------------------------------------------------------------------------------------
# DataVersion, TopicConfig, RegisterBrokerBody (§3.3)
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataVersion:
    """A broker's topic-config version: ``{"counter":N,"timestamp":ms}``; equal when both fields are."""

    counter: int = 0
    timestamp: int = 0

    def to_wire(self) -> dict[str, int]:
        return {"counter": self.counter, "timestamp": self.timestamp}

    def encode(self) -> bytes:
        return fastjson.dumps(self.to_wire())

    @classmethod
    def from_wire(cls, value: Any, where: str = "dataVersion") -> DataVersion:
        obj = _object(value, where)
        return cls(_int(obj, "counter", where, 0, bits=64), _int(obj, "timestamp", where, 0, bits=64))

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | str) -> DataVersion:
        return cls.from_wire(_parse_json(data, "DataVersion"))


@dataclass(frozen=True)
class TopicConfig:
    """One topic of a broker (COM/TopicConfig.java); defaults are Java's."""

    topic_name: str
    read_queue_nums: int = 16
    write_queue_nums: int = 16
    perm: int = PERM_READ | PERM_WRITE
    topic_filter_type: str = "SINGLE_TAG"
    topic_sys_flag: int = 0
    order: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"order": self.order, "perm": self.perm, "readQueueNums": self.read_queue_nums,
                "topicFilterType": self.topic_filter_type, "topicName": self.topic_name,
                "topicSysFlag": self.topic_sys_flag, "writeQueueNums": self.write_queue_nums}

    @classmethod
    def from_wire(cls, value: Any, where: str, name: str | None = None) -> TopicConfig:
        obj = _object(value, where)
        topic_name = _str(obj, "topicName", where, name)
        filter_type = _str(obj, "topicFilterType", where, "SINGLE_TAG")
        if filter_type not in _TOPIC_FILTER_TYPES:
            raise BodyError(f"{where}.topicFilterType must be SINGLE_TAG or MULTI_TAG, got {filter_type!r}")
        return cls(topic_name, _int(obj, "readQueueNums", where, 16), _int(obj, "writeQueueNums", where, 16),
                   _int(obj, "perm", where, PERM_READ | PERM_WRITE), filter_type,
                   _int(obj, "topicSysFlag", where, 0), _bool(obj, "order", where, False))

    def encode_compact(self) -> str:
        """The space-separated form of a compressed register body: ``name read write perm filterType``."""
        return f"{self.topic_name} {self.read_queue_nums} {self.write_queue_nums} {self.perm} {self.topic_filter_type}"

    @classmethod
    def decode_compact(cls, text: str, where: str) -> TopicConfig:
        """Inverse of ``encode_compact``; a 6th field (5.x attributes JSON) is ignored.

        The compact form carries no topicSysFlag and no order flag, so both take their defaults, as in Java.
        """
        parts = text.split(" ")
        while parts and parts[-1] == "":
            parts.pop()                      # Java's String.split drops trailing empty strings
        if len(parts) < 5:
            raise BodyError(f"{where} must be 'name read write perm filterType', got {text!r}")
        name, read, write, perm, filter_type = parts[:5]
        if filter_type not in _TOPIC_FILTER_TYPES:
            raise BodyError(f"{where}: topic filter type must be SINGLE_TAG or MULTI_TAG, got {filter_type!r}")
        try:
            numbers = [int(read), int(write), int(perm)]
        except ValueError:
            raise BodyError(f"{where}: queue numbers and perm must be integers, got {text!r}") from None
        if any(not (-(1 << 31) <= n < (1 << 31)) for n in numbers):
            raise BodyError(f"{where}: a number is out of the 32-bit range in {text!r}")
        return cls(name, numbers[0], numbers[1], numbers[2], filter_type)


@dataclass
class RegisterBrokerBody:
    """REGISTER_BROKER's body: the broker's topics with their DataVersion, and its filter servers."""

    data_version: DataVersion = field(default_factory=DataVersion)
    topic_config_table: dict[str, TopicConfig] = field(default_factory=dict)
    filter_server_list: list[str] = field(default_factory=list)

    def to_wire(self) -> dict[str, Any]:
        return {"filterServerList": list(self.filter_server_list),
                "topicConfigSerializeWrapper": {
                    "dataVersion": self.data_version.to_wire(),
                    "topicConfigTable": {name: tc.to_wire() for name, tc in self.topic_config_table.items()}}}

    def encode(self, compress: bool = False) -> bytes:
        """The JSON body, or with ``compress`` the zlib stream of the binary form (broker ``compressedRegister``)."""
        if not compress:
            return fastjson.dumps(self.to_wire())
        parts: list[bytes] = []

        def chunk(data: bytes) -> None:
            parts.append(_INT32.pack(len(data)))
            parts.append(data)

        chunk(self.data_version.encode())
        parts.append(_INT32.pack(len(self.topic_config_table)))
        for tc in self.topic_config_table.values():
            chunk(tc.encode_compact().encode())
        chunk(fastjson.dumps(list(self.filter_server_list)))
        return zlib.compress(b"".join(parts), 9)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview, compressed: bool = False) -> RegisterBrokerBody:
        """Parse and validate a body; BodyError says what is wrong with it."""
        if compressed:
            return cls._decode_compressed(data)
        obj = _object(_parse_json(data, "RegisterBrokerBody"), "RegisterBrokerBody")
        if "topicConfigSerializeWrapper" in obj or "filterServerList" in obj:
            wrapper = _optional_object(obj, "topicConfigSerializeWrapper", "topicConfigSerializeWrapper")
            filters = _str_list(obj.get("filterServerList"), "filterServerList")
        else:
            wrapper = obj                    # brokers before 3.0.11 sent the bare TopicConfigSerializeWrapper
            filters = []
        dv = wrapper.get("dataVersion")
        data_version = DataVersion() if dv is None else DataVersion.from_wire(dv, "dataVersion")
        table_obj = _optional_object(wrapper, "topicConfigTable", "topicConfigTable")
        table: dict[str, TopicConfig] = {}
        for name, value in table_obj.items():
            tc = TopicConfig.from_wire(value, f"topicConfigTable.{name}", str(name))
            table[tc.topic_name] = tc
        return cls(data_version, table, filters)

    @classmethod
    def _decode_compressed(cls, data: bytes | bytearray | memoryview) -> RegisterBrokerBody:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(bytes(data), MAX_INFLATED_REGISTER_BODY_BYTES + 1)
        except zlib.error as exc:
            raise BodyError(f"compressed RegisterBrokerBody is not a zlib stream: {exc}") from None
        if len(raw) > MAX_INFLATED_REGISTER_BODY_BYTES:
            raise BodyError(f"compressed RegisterBrokerBody inflates beyond {MAX_INFLATED_REGISTER_BODY_BYTES} bytes")
        view = memoryview(raw)
        pos = 0

        def take(n: int, what: str) -> memoryview:
            nonlocal pos
            if n < 0 or pos + n > len(view):
                raise BodyError(f"compressed RegisterBrokerBody ends early: {what} needs {n} bytes at offset {pos}, "
                                f"{len(view) - pos} left")
            out = view[pos:pos + n]
            pos += n
            return out

        def int32(what: str) -> int:
            return _INT32.unpack(take(4, what))[0]

        data_version = DataVersion.decode(take(int32("dataVersion length"), "dataVersion"))
        count = int32("topic count")
        if count < 0:
            raise BodyError(f"compressed RegisterBrokerBody has a negative topic count {count}")
        table: dict[str, TopicConfig] = {}
        for i in range(count):
            text = bytes(take(int32(f"topic {i} length"), f"topic {i}")).decode("utf-8", "replace")
            tc = TopicConfig.decode_compact(text, f"topic {i}")
            table[tc.topic_name] = tc
        filters = _str_list(_parse_json(take(int32("filterServerList length"), "filterServerList"),
                                        "filterServerList"), "filterServerList")
        return cls(data_version, table, filters)


# ---------------------------------------------------------------------------------------------------
# Routes (§3.1)
# ---------------------------------------------------------------------------------------------------

@dataclass
class QueueData:
    """One broker's queues of a topic, as routed to clients."""

    broker_name: str
    read_queue_nums: int
    write_queue_nums: int
    perm: int
    topic_sys_flag: int = 0

    @classmethod
    def from_topic_config(cls, broker_name: str, tc: TopicConfig) -> QueueData:
        return cls(broker_name, tc.read_queue_nums, tc.write_queue_nums, tc.perm, tc.topic_sys_flag)

    def copy(self) -> QueueData:
        return QueueData(self.broker_name, self.read_queue_nums, self.write_queue_nums, self.perm,
                         self.topic_sys_flag)

    def to_wire(self) -> dict[str, Any]:
        return {"brokerName": self.broker_name, "perm": self.perm, "readQueueNums": self.read_queue_nums,
                "topicSysFlag": self.topic_sys_flag, "writeQueueNums": self.write_queue_nums}

    @classmethod
    def from_wire(cls, value: Any, where: str) -> QueueData:
        obj = _object(value, where)
        flag = obj.get("topicSysFlag", obj.get("topicSynFlag"))      # spelled topicSynFlag up to 4.7
        return cls(_str(obj, "brokerName", where), _int(obj, "readQueueNums", where),
                   _int(obj, "writeQueueNums", where), _int(obj, "perm", where),
                   _int({"f": flag}, "f", f"{where}.topicSysFlag", 0))


@dataclass
class BrokerData:
    """A broker group: its cluster, its name and the address of each member (id 0 = master)."""

    cluster: str
    broker_name: str
    broker_addrs: dict[int, str] = field(default_factory=dict)

    def copy(self) -> BrokerData:
        return BrokerData(self.cluster, self.broker_name, dict(self.broker_addrs))

    def to_wire(self) -> dict[str, Any]:
        return {"brokerAddrs": dict(sorted(self.broker_addrs.items())), "brokerName": self.broker_name,
                "cluster": self.cluster}

    @classmethod
    def from_wire(cls, value: Any, where: str) -> BrokerData:
        obj = _object(value, where)
        addrs_obj = _optional_object(obj, "brokerAddrs", f"{where}.brokerAddrs")
        addrs: dict[int, str] = {}
        for key, addr in addrs_obj.items():
            try:
                broker_id = int(key)         # bare 0 (fastjson form) or "0" (standard form)
            except (TypeError, ValueError):
                raise BodyError(f"{where}.brokerAddrs key must be a broker id, got {key!r}") from None
            if not isinstance(addr, str):
                raise BodyError(f"{where}.brokerAddrs.{key} must be an address string, got {addr!r}")
            addrs[broker_id] = addr
        return cls(_str(obj, "cluster", where, ""), _str(obj, "brokerName", where), addrs)


@dataclass
class TopicRouteData:
    """GET_ROUTEINFO_BY_TOPIC's answer: the topic's queues per broker and those brokers' addresses."""

    queue_datas: list[QueueData] = field(default_factory=list)
    broker_datas: list[BrokerData] = field(default_factory=list)
    filter_server_table: dict[str, list[str]] = field(default_factory=dict)
    order_topic_conf: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"brokerDatas": [bd.to_wire() for bd in self.broker_datas],
                "filterServerTable": {addr: list(servers) for addr, servers in self.filter_server_table.items()},
                "orderTopicConf": self.order_topic_conf,
                "queueDatas": [qd.to_wire() for qd in self.queue_datas]}

    def encode(self, standard_json: bool = False) -> bytes:
        """fastjson's form (bare integer brokerAddrs keys), or standard JSON (quoted keys, ``\\uXXXX``)."""
        return fastjson.dumps(self.to_wire(), standard=standard_json)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | str) -> TopicRouteData:
        obj = _object(_parse_json(data, "TopicRouteData"), "TopicRouteData")
        queues = obj.get("queueDatas")
        brokers = obj.get("brokerDatas")
        queues = [] if queues is None else queues
        brokers = [] if brokers is None else brokers
        if not isinstance(queues, list) or not isinstance(brokers, list):
            raise BodyError("TopicRouteData.queueDatas and brokerDatas must be lists")
        filters_obj = _optional_object(obj, "filterServerTable", "filterServerTable")
        order = obj.get("orderTopicConf")
        if order is not None and not isinstance(order, str):
            raise BodyError(f"TopicRouteData.orderTopicConf must be a string, got {order!r}")
        return cls([QueueData.from_wire(q, f"queueDatas[{i}]") for i, q in enumerate(queues)],
                   [BrokerData.from_wire(b, f"brokerDatas[{i}]") for i, b in enumerate(brokers)],
                   {str(k): _str_list(v, f"filterServerTable.{k}") for k, v in filters_obj.items()},
                   order)


# ---------------------------------------------------------------------------------------------------
# Small bodies (§3.2)
# ---------------------------------------------------------------------------------------------------

@dataclass
class ClusterInfo:
    """GET_BROKER_CLUSTER_INFO's answer: every broker group, and the broker names of every cluster."""

    broker_addr_table: dict[str, BrokerData] = field(default_factory=dict)
    cluster_addr_table: dict[str, list[str]] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        return {"brokerAddrTable": {name: bd.to_wire() for name, bd in self.broker_addr_table.items()},
                "clusterAddrTable": {cluster: sorted(names) for cluster, names in self.cluster_addr_table.items()}}

    def encode(self) -> bytes:
        return fastjson.dumps(self.to_wire())

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | str) -> ClusterInfo:
        obj = _object(_parse_json(data, "ClusterInfo"), "ClusterInfo")
        brokers = _optional_object(obj, "brokerAddrTable", "brokerAddrTable")
        clusters = _optional_object(obj, "clusterAddrTable", "clusterAddrTable")
        return cls({str(n): BrokerData.from_wire(v, f"brokerAddrTable.{n}") for n, v in brokers.items()},
                   {str(c): _str_list(v, f"clusterAddrTable.{c}") for c, v in clusters.items()})


@dataclass
class TopicList:
    """A list of topic names, with a broker address where the list is of system topics."""

    topic_list: list[str] = field(default_factory=list)
    broker_addr: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {"brokerAddr": self.broker_addr, "topicList": list(self.topic_list)}

    def encode(self) -> bytes:
        return fastjson.dumps(self.to_wire())

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview | str) -> TopicList:
        obj = _object(_parse_json(data, "TopicList"), "TopicList")
        addr = obj.get("brokerAddr")
        if addr is not None and not isinstance(addr, str):
            raise BodyError(f"TopicList.brokerAddr must be a string, got {addr!r}")
        return cls(_str_list(obj.get("topicList"), "topicList"), addr)


def encode_kv_table(table: Mapping[str, str]) -> bytes:
    """KVTable: ``{"table":{k:v}}``."""
    return fastjson.dumps({"table": dict(table)})


def decode_kv_table(data: bytes | bytearray | memoryview | str) -> dict[str, str]:
    obj = _object(_parse_json(data, "KVTable"), "KVTable")
    table = _optional_object(obj, "table", "table")
    out: dict[str, str] = {}
    for key, value in table.items():
        if not isinstance(value, str):
            raise BodyError(f"table.{key} must be a string, got {value!r}")
        out[str(key)] = value
    return out

