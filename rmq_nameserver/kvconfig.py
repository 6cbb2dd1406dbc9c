"""The nameserver's KV store: namespace → {key: value}, persisted on every change (RocketMQ's KVConfigManager).

Admin tools keep small settings here (``mqadmin updateKvConfig``); the one RocketMQ itself reads is the
namespace ORDER_TOPIC_CONFIG (topic → ``brokerName:queueNum;...``), returned to brokers on registration
and added to routes when ``orderMessageEnable`` is on.

The file has RocketMQ's format, ``{"configTable":{namespace:{key:value}}}``, so a RocketMQ
``kvConfig.json`` can be copied in. Every change is written before it becomes visible: the new table
goes to ``<file>.tmp``, is fsync'ed and renamed over the file (then the directory is fsync'ed), so a
crash leaves either the old or the new table, never a torn file; a failed write leaves the in-memory
table unchanged and raises. RocketMQ writes in place (via a .tmp/.bak pair) and only logs a failure.

Reads are lock-free: writers build a new table and swap the reference, so readers on the event loop
never see a half-applied change while a writer persists from a worker thread. Writers serialize on a
lock.

A file that cannot be parsed is an error at start (KVConfigError naming the file), not an empty table:
silently starting empty would drop the order-topic settings and overwrite the file at the next change.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

import orjson

from rmq_common.atomic_file import write_file_atomically
from rmq_remoting import fastjson

__all__ = ["KVConfigManager", "KVConfigError", "NAMESPACE_ORDER_TOPIC_CONFIG"]

log = logging.getLogger("rmq.nameserver.kvconfig")

#: NamesrvUtil.NAMESPACE_ORDER_TOPIC_CONFIG
NAMESPACE_ORDER_TOPIC_CONFIG = "ORDER_TOPIC_CONFIG"

Table = Mapping[str, Mapping[str, str]]


class KVConfigError(Exception):
    """The KV file cannot be read or written; the message names the file."""


class KVConfigManager:
    """Namespaced key/value settings backed by one JSON file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._table: dict[str, dict[str, str]] = {}
        self._write_lock = threading.Lock()

    # -- lifecycle ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the file if it exists (a missing file is an empty table). KVConfigError if it is unusable."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            log.info("no KV config file at %s: starting empty", self.path)
            return
        except OSError as exc:
            raise KVConfigError(f"cannot read the KV config file {self.path}: {exc.strerror or exc}") from None
        self._table = self._parse(data)
        log.info("load KV config table OK: %d namespaces from %s", len(self._table), self.path)

    def _parse(self, data: bytes) -> dict[str, dict[str, str]]:
        def corrupt(why: str) -> KVConfigError:
            return KVConfigError(
                f"the KV config file {self.path} is corrupt ({why}); fix or move it away to start with an "
                "empty KV table")

        if not data.strip():
            return {}                       # RocketMQ's file2String gives "" for an empty file: no table
        try:
            doc = fastjson.loads(data)
        except ValueError as exc:
            raise corrupt(f"not JSON: {exc}") from None
        if not isinstance(doc, Mapping):
            raise corrupt("not a JSON object")
        config_table = doc.get("configTable")
        if config_table is None:
            config_table = {}
        if not isinstance(config_table, Mapping):
            raise corrupt("configTable is not an object")
        table: dict[str, dict[str, str]] = {}
        for namespace, entries in config_table.items():
            if not isinstance(entries, Mapping):
                raise corrupt(f"namespace {namespace!r} is not an object")
            kv: dict[str, str] = {}
            for key, value in entries.items():
                if value is None:
                    continue
                if isinstance(value, (Mapping, list)):
                    raise corrupt(f"{namespace}.{key} is not a string")
                kv[str(key)] = value if isinstance(value, str) else orjson.dumps(value).decode()
            table[str(namespace)] = kv
        return table

    # -- reads (any thread, no lock) ----------------------------------------------------------------

    def get_kv_config(self, namespace: str, key: str) -> str | None:
        entries = self._table.get(namespace)
        return None if entries is None else entries.get(key)

    def get_kv_list_by_namespace(self, namespace: str) -> dict[str, str] | None:
        """A copy of the namespace's entries; None for a namespace never written. A namespace whose
        keys were all deleted stays (empty), as in RocketMQ."""
        entries = self._table.get(namespace)
        return None if entries is None else dict(entries)

    def snapshot(self) -> dict[str, dict[str, str]]:
        return {ns: dict(entries) for ns, entries in self._table.items()}

    # -- writes (persisted before they are visible) -------------------------------------------------

    def put_kv_config(self, namespace: str, key: str, value: str) -> None:
        with self._write_lock:
            entries = dict(self._table.get(namespace, {}))
            previous = entries.get(key)
            entries[key] = value
            self._commit({**self._table, namespace: entries})
        if previous is None:
            log.info("putKVConfig create new config item, Namespace: %s Key: %s Value: %s", namespace, key, value)
        else:
            log.info("putKVConfig update config item, Namespace: %s Key: %s Value: %s", namespace, key, value)

    def delete_kv_config(self, namespace: str, key: str) -> None:
        with self._write_lock:
            entries = self._table.get(namespace)
            if entries is None or key not in entries:
                return
            entries = dict(entries)
            value = entries.pop(key)
            self._commit({**self._table, namespace: entries})
        log.info("deleteKVConfig delete a config item, Namespace: %s Key: %s Value: %s", namespace, key, value)

    def _commit(self, table: dict[str, dict[str, str]]) -> None:
        self._write(table)
        self._table = table

    def _write(self, table: Table) -> None:
        try:
            write_file_atomically(self.path, fastjson.dumps({"configTable": table}))
        except OSError as exc:
            raise KVConfigError(f"cannot write the KV config file {self.path}: {exc.strerror or exc}") from None
