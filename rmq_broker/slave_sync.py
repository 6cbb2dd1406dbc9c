"""A slave's copy of its master's metadata (Java ``SlaveSynchronize``, PROTOCOL.md §7 "Metadata sync").

The HA stream replicates the commitlog only; the tables that say what the log means to consumers live in
JSON files next to it. A slave therefore asks its master (``registrar.master_addr``, learnt from the
nameservers' registration replies) for them, first ``INITIAL_DELAY_MS`` after start and then every
``PERIOD_MS``, in Java's order:

1. GET_ALL_TOPIC_CONFIG (21): taken when its DataVersion differs from ours — the table is replaced (topics
   the master deleted disappear; our built-in system topics stay) and topics.json written;
2. GET_ALL_CONSUMER_OFFSET (43): every (topic@group) entry of the master replaces ours, entries the master
   does not have stay (Java ``putAll``), consumerOffset.json written;
3. GET_ALL_DELAY_OFFSET (45): the delay-level progress replaces ours and delayOffset.json is written (a
   slave does not deliver delayed messages; the file is what it starts from if it is made a master);
4. GET_ALL_SUBSCRIPTIONGROUP_CONFIG (201): as topics, by DataVersion; subscriptionGroup.json written.

Each step fails on its own: a master that is down, slow or answers garbage costs a log line and is asked
again next period. Nothing is fetched while no master is known (the nameservers have none registered) or
when the named master is this broker itself.

Requests go to the master's main port. Java sends GET_ALL_TOPIC_CONFIG to the VIP port (listenPort − 2),
which an rmq master may not serve (``vipChannelEnable=false``); every Java master serves both
(docs/compatibility.md).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from rmq_remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode, fastjson

if TYPE_CHECKING:
    from rmq_broker.broker import Broker

__all__ = ["SlaveSynchronizer", "SyncError"]

log = logging.getLogger("rmq_broker.slave_sync")

#: Java ``handleSlaveSynchronize``: the first round 3 s after start, then every 10 s.
INITIAL_DELAY_MS = 3_000
PERIOD_MS = 10_000
#: Java ``BrokerOuterAPI.getAll*``: 3 s per request.
REQUEST_TIMEOUT_MS = 3_000


class SyncError(Exception):
    """One table could not be fetched or taken from the master."""


class SlaveSynchronizer:
    """Runs on every broker; does nothing on a master.

    ``initial_delay_ms`` / ``period_ms`` may be changed before the broker starts (tests). ``rounds`` counts
    finished rounds and ``last_errors`` holds, per table, the error of the last round (absent = taken or
    unchanged), so operators and tests can see what happened without reading logs.
    """

    def __init__(self, broker: Broker, *, initial_delay_ms: int = INITIAL_DELAY_MS,
                 period_ms: int = PERIOD_MS) -> None:
        assert initial_delay_ms >= 0 and period_ms > 0, (initial_delay_ms, period_ms)
        self.broker = broker
        self.initial_delay_ms = initial_delay_ms
        self.period_ms = period_ms
        self.rounds = 0
        self.last_errors: dict[str, str] = {}
        self._round_done = trio.Event()

    # -- the loop ---------------------------------------------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self.broker.is_master:
            return
        clock = self.broker.clock
        await clock.sleep_ms(self.initial_delay_ms)
        while True:
            await self.sync_all()
            await clock.sleep_ms(self.period_ms)

    async def wait_rounds(self, count: int) -> None:
        """Wait until ``count`` rounds have finished in total (tests; bounded by the caller)."""
        while self.rounds < count:
            await self._round_done.wait()

    def _finish_round(self) -> None:
        self.rounds += 1
        done, self._round_done = self._round_done, trio.Event()
        done.set()

    # -- one round --------------------------------------------------------------------------------------

    async def sync_all(self) -> None:
        """One round: the four tables from the current master, each independently."""
        try:
            for name, step in (("topicConfig", self._sync_topic_config),
                               ("consumerOffset", self._sync_consumer_offset),
                               ("delayOffset", self._sync_delay_offset),
                               ("subscriptionGroup", self._sync_subscription_group)):
                master = self._master()
                if master is None:
                    self.last_errors.pop(name, None)
                    continue
                try:
                    await step(master)
                except SyncError as exc:
                    self.last_errors[name] = str(exc)
                    log.error("sync of %s from master %s failed: %s", name, master, exc)
                else:
                    self.last_errors.pop(name, None)
        finally:
            self._finish_round()

    def _master(self) -> str | None:
        addr = self.broker.registrar.master_addr
        if addr is None or addr == self.broker.broker_addr:
            return None
        return addr

    async def _fetch(self, master: str, code: int) -> bytes:
        client = self.broker.client
        if client is None:
            raise SyncError("the broker's remoting client is not running")
        try:
            resp = await client.invoke(master, RemotingCommand.request(code), REQUEST_TIMEOUT_MS)
        except (RemotingError, OSError) as exc:
            raise SyncError(f"request {code} failed: {exc}") from exc
        if resp.code != ResponseCode.SUCCESS:
            raise SyncError(f"request {code} answered {resp.code} {resp.remark}")
        if not resp.body:
            raise SyncError(f"request {code} answered without a body")
        return bytes(resp.body)

    @staticmethod
    def _decode(what: str, body: bytes) -> Any:
        try:
            doc = fastjson.loads(body)
        except (fastjson.FastjsonError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SyncError(f"{what}: body is not JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise SyncError(f"{what}: body is not a JSON object")
        return doc

    async def _sync_topic_config(self, master: str) -> None:
        doc = self._decode("topic config", await self._fetch(master, RequestCode.GET_ALL_TOPIC_CONFIG))
        try:
            changed = self.broker.topics.replace_all(doc)
        except (ValueError, TypeError, KeyError) as exc:
            raise SyncError(f"topic config: {exc}") from exc
        except OSError as exc:
            raise SyncError(f"topic config taken but not written: {exc}") from exc
        if changed:
            log.info("Update slave topic config from master, %s", master)

    async def _sync_consumer_offset(self, master: str) -> None:
        doc = self._decode("consumer offsets", await self._fetch(master, RequestCode.GET_ALL_CONSUMER_OFFSET))
        table = doc.get("offsetTable") or {}
        if not isinstance(table, dict):
            raise SyncError("consumer offsets: offsetTable is not a JSON object")
        try:
            self.broker.offsets.merge(table)
        except (ValueError, TypeError, KeyError) as exc:
            raise SyncError(f"consumer offsets: {exc}") from exc
        try:
            await trio.to_thread.run_sync(self.broker.offsets.persist)
        except OSError as exc:
            raise SyncError(f"consumer offsets taken but not written: {exc}") from exc
        log.info("Update slave consumer offset from master, %s", master)

    async def _sync_delay_offset(self, master: str) -> None:
        body = await self._fetch(master, RequestCode.GET_ALL_DELAY_OFFSET)
        doc = self._decode("delay offsets", body)
        try:
            self.broker.schedule.replace_offsets(doc)
        except (ValueError, TypeError) as exc:
            raise SyncError(f"delay offsets: {exc}") from exc
        except OSError as exc:
            raise SyncError(f"delay offsets taken but not written: {exc}") from exc
        log.info("Update slave delay offset from master, %s", master)

    async def _sync_subscription_group(self, master: str) -> None:
        doc = self._decode("subscription groups",
                           await self._fetch(master, RequestCode.GET_ALL_SUBSCRIPTIONGROUP_CONFIG))
        try:
            changed = self.broker.groups.replace_all(doc)
        except (ValueError, TypeError, KeyError) as exc:
            raise SyncError(f"subscription groups: {exc}") from exc
        except OSError as exc:
            raise SyncError(f"subscription groups taken but not written: {exc}") from exc
        if changed:
            log.info("Update slave Subscription Group from master, %s", master)
