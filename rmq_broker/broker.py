"""The broker: one object that owns the store, the metadata managers, the remoting server and the timers.

Start-up order matters and is the same every time:

1. bind the listen (and VIP) port — the store host written into every record and offset msgId is
   ``brokerIP1:port``, so with port 0 (tests) the port must be known before the store opens;
2. open the store in a worker thread (recovery may read gigabytes) while requests are answered
   SYSTEM_BUSY "broker is starting";
3. install the request processors, the store's arrival listener (long polling) and the timers
   (offset persistence every 5 s, idle client scan every 10 s, delay levels);
4. register with every nameserver — only now can clients find the broker.

``shutdown`` reverses it: stop registering, unregister, answer held pulls, close the server, persist
offsets and delay progress, close the store. Every background task lives in the broker's nursery,
so cancelling ``serve`` stops them all (trio's structured concurrency) — after the shutdown: the
nursery is shielded from the cancellation until ``_shutdown`` has run (bounded), or the connections
it needs to unregister and to answer held pulls would be cancelled first.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import trio

from rmq_remoting import RemotingClient, RemotingCommand, RemotingServer, ResponseCode
from rmq_store import MessageStore

from rmq_broker.clock import BrokerClock
from rmq_broker.client_manager import ConsumerManager, ProducerManager, notify_consumer_ids_changed
from rmq_broker.config import BrokerConfig
from rmq_broker.consumer_offset import ConsumerOffsetManager
from rmq_broker.dedup import DedupService
from rmq_broker.ha import HAService
from rmq_broker.lock_manager import RebalanceLockManager
from rmq_broker.long_polling import PullHoldService
from rmq_broker.perm import PermName
from rmq_broker.processors.admin import AdminProcessor
from rmq_broker.processors.client_manage import ClientManageProcessor
from rmq_broker.processors.end_transaction import EndTransactionProcessor
from rmq_broker.processors.offsets import OffsetProcessor
from rmq_broker.processors.pull import PullMessageProcessor
from rmq_broker.processors.send import SendMessageProcessor
from rmq_broker.processors.send_back import ConsumerSendMsgBackProcessor
from rmq_broker.registration import NameServerRegistrar
from rmq_broker.schedule import ScheduleService
from rmq_broker.slave_sync import SlaveSynchronizer
from rmq_broker.stats import BrokerStats
from rmq_broker.subscription_group import SubscriptionGroupManager
from rmq_broker.timer import TimerService, checkpoint_path
from rmq_broker.topic_config import TopicConfigManager
from rmq_broker.transaction import TransactionService

__all__ = ["Broker"]

log = logging.getLogger("rmq_broker")

OFFSET_PERSIST_INTERVAL_MS = 5_000
CLIENT_SCAN_INTERVAL_MS = 10_000
SHUTDOWN_DRAIN_S = 2.0                # how long shutdown waits for answers in progress to be written
SHUTDOWN_TIMEOUT_S = 10.0             # bound of the whole graceful shutdown (unregister 5 s + drain 2 s)
BROKER_MAX_INFLIGHT = 4096           # per connection: a consumer holds one pull per queue


class Broker:
    def __init__(self, config: BrokerConfig, *, clock: BrokerClock | None = None) -> None:
        self.config = config
        self.clock = clock or BrokerClock()
        self.stats = BrokerStats(self.clock)
        self.holds = PullHoldService()
        self.server = RemotingServer(config.listen_port, host=config.listen_host,
                                     vip_port=(config.listen_port - 2 if config.listen_port else 0)
                                     if config.vip_channel_enable else None,
                                     max_inflight=BROKER_MAX_INFLIGHT)
        self.client: RemotingClient | None = None
        self.store: MessageStore | None = None
        self.topics: TopicConfigManager | None = None
        self.groups: SubscriptionGroupManager | None = None
        self.offsets: ConsumerOffsetManager | None = None
        self.consumers: ConsumerManager | None = None
        self.producers: ProducerManager | None = None
        self.locks: RebalanceLockManager | None = None
        self.schedule: ScheduleService | None = None
        self.timer: TimerService | None = None
        self.transactions: TransactionService | None = None
        self.dedup = DedupService(self)
        self.registrar = NameServerRegistrar(self)
        self.ha = HAService(self)
        self.slave_sync = SlaveSynchronizer(self)           # a slave's copy of the master's metadata
        self._nursery: trio.Nursery | None = None
        self._started = trio.Event()
        self._stopping = False

    # -- identity -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def broker_addr(self) -> str:
        return f"{self.config.broker_ip1}:{self.server.port}"

    @property
    def store_host(self) -> tuple[str, int]:
        return (self.config.broker_ip1, self.server.port)

    @property
    def ha_addr(self) -> str:
        """The HA address registered with nameservers (slaves replicate from it)."""
        return self.ha.server_addr

    @property
    def is_master(self) -> bool:
        return self.config.is_master

    @property
    def stopping(self) -> bool:
        """Shutting down: no sends taken, no registrations sent, no pulls held."""
        return self._stopping

    @property
    def writable(self) -> bool:
        return self.is_master and bool(self.config.broker_permission & PermName.WRITE) and not self._stopping

    @property
    def readable(self) -> bool:
        return bool(self.config.broker_permission & PermName.READ)

    @property
    def sync_flush(self) -> bool:
        return self.config.flush_disk_type.name == "SYNC_FLUSH"

    # -- lifecycle ------------------------------------------------------------------------------

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the broker until cancelled; reports itself once registered with the nameservers.

        Cancelling ``serve`` (a signal handler, a test leaving its cluster) starts the graceful
        shutdown: the serving tasks — server, connections, the nameserver client — are shielded from
        that cancellation until ``_shutdown`` has unregistered and answered the held pulls (at most
        SHUTDOWN_TIMEOUT_S), and only then cancelled. Without the shield they would be cancelled
        together with ``serve``, before the unregistration and the answers could be written.
        """
        stop = trio.Event()
        async with trio.open_nursery() as outer:
            await outer.start(self._run, stop)
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                stop.set()

    async def _run(self, stop: trio.Event, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with trio.CancelScope() as guard:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    self.server.register_default(self._starting)
                    await nursery.start(self.server.serve)
                    await trio.to_thread.run_sync(self._open_store)
                    self._install()
                    async with RemotingClient(nursery) as client:
                        self.client = client
                        await nursery.start(self.ha.run)
                        if self.is_master:          # a slave's log holds only its master's bytes
                            await nursery.start(self.schedule.run)
                        await nursery.start(self.timer.run)
                        await nursery.start(self.transactions.run)
                        nursery.start_soon(self._persist_loop)
                        nursery.start_soon(self._client_scan_loop)
                        await nursery.start(self.registrar.run)
                        await nursery.start(self.slave_sync.run)
                        log.info("The broker[%s, %s] boot success. serializeType=JSON and name server is %s",
                                 self.config.broker_name, self.broker_addr, self.config.namesrv_addr or "(none)")
                        self._started.set()
                        guard.shield = True         # from now on only ``stop`` ends the broker, gracefully
                        task_status.started()
                        await stop.wait()
                        with trio.move_on_after(SHUTDOWN_TIMEOUT_S):
                            await self._shutdown()
                        nursery.cancel_scope.cancel()
            finally:
                self._close_store()

    def _open_store(self) -> None:
        cfg = self.config
        store_config = cfg.store_config().replace(store_host=self.store_host)
        store = MessageStore(store_config, clock_ms=self.clock.now_ms)
        report = store.open()
        log.info("store opened at %s: %s", store_config.store_path_root_dir, report)
        self.store = store
        config_dir = os.path.join(store_config.store_path_root_dir, "config")
        self.topics = TopicConfigManager(config_dir, cfg, clock_ms=self.clock.now_ms)
        self.groups = SubscriptionGroupManager(config_dir, cfg, clock_ms=self.clock.now_ms)
        self.offsets = ConsumerOffsetManager(config_dir)
        self.schedule = ScheduleService(self, store_config.message_delay_level,
                                        os.path.join(config_dir, "delayOffset.json"))
        self.timer = TimerService(store, self.clock, cfg, checkpoint_path(config_dir))
        self.transactions = TransactionService(self)
        self.transactions.load()
        self.dedup.rebuild()

    def _close_store(self) -> None:
        if self.store is not None and self.store.is_open:
            try:
                self.offsets.persist()
                self.schedule.persist()
            except OSError as exc:
                log.error("persisting offsets at shutdown failed: %s", exc)
            self.store.close()
            log.info("store closed")

    def _install(self) -> None:
        self.consumers = ConsumerManager(clock_ms=self.clock.now_ms, on_ids_changed=self._on_ids_changed)
        self.producers = ProducerManager(clock_ms=self.clock.now_ms)
        self.locks = RebalanceLockManager(clock_ms=self.clock.now_ms)
        self.store.arrival_listeners.append(self.holds.notify)
        self.store.arrival_listeners.append(self.schedule.notify)
        self.topics.on_change.append(lambda *_: self.registrar.request_register())
        self.server.add_close_hook(self._on_connection_closed)
        handlers: dict[int, Any] = {}
        send = SendMessageProcessor(self)
        for code in send.CODES:
            handlers[code] = send.handle
        pull = PullMessageProcessor(self)
        for code in pull.CODES:
            handlers[code] = pull.handle
        handlers.update(OffsetProcessor(self).handlers())
        handlers.update(ClientManageProcessor(self.consumers, self.producers, self.locks,
                                              ensure_group=self.groups.find_or_auto_create,
                                              ensure_retry_topic=self._ensure_retry_topic).handlers())
        handlers.update(AdminProcessor(self).handlers())
        handlers.update(EndTransactionProcessor(self).handlers())
        handlers.update(ConsumerSendMsgBackProcessor(self).handlers())
        for code, handler in handlers.items():
            self.server.register(code, handler)
        self.server.register_default(None)

    async def _starting(self, conn: Any, cmd: RemotingCommand) -> RemotingCommand:
        return cmd.create_response(ResponseCode.SYSTEM_BUSY, "[STARTING] the broker is starting, try again later")

    def _ensure_retry_topic(self, group: str, retry_queue_nums: int) -> None:
        from rmq_common.topic import retry_topic
        self.topics.create_in_send_back(retry_topic(group), retry_queue_nums, PermName.READ | PermName.WRITE, 0)

    def _on_ids_changed(self, group: str, connections: list) -> None:
        config = self.groups.find(group)
        if config is not None and not config.notify_consumer_ids_changed_enable:
            return
        if self._nursery is not None and not self._stopping:
            self._nursery.start_soon(notify_consumer_ids_changed, group, connections)

    def _on_connection_closed(self, conn: Any) -> None:
        if self.consumers is not None:
            self.consumers.do_channel_close(conn)
            self.producers.do_channel_close(conn)

    async def _persist_loop(self) -> None:
        while True:
            await self.clock.sleep_ms(OFFSET_PERSIST_INTERVAL_MS)
            try:
                await trio.to_thread.run_sync(self.offsets.persist_if_dirty)
            except OSError as exc:
                log.error("persisting consumer offsets failed: %s", exc)

    async def _client_scan_loop(self) -> None:
        while True:
            await self.clock.sleep_ms(CLIENT_SCAN_INTERVAL_MS)
            now = self.clock.now_ms()
            self.consumers.scan_not_active(now)
            self.producers.scan_not_active(now)

    async def _shutdown(self) -> None:
        """Stop taking sends, unregister, answer held pulls, stop serving (store closes after)."""
        self._stopping = True
        log.info("broker %s shutting down", self.broker_addr)
        with trio.move_on_after(5):
            await self.registrar.unregister_all()
        self.holds.close()
        self.ha.close()
        # The woken pulls re-run once in their own tasks and answer PULL_NOT_FOUND; closing the server
        # now would cut their answers off (clients would see a dead connection instead). Wait, bounded,
        # until no request is being handled and nothing is queued for writing: a few scheduler passes
        # are normally enough (and need no clock, so a test's frozen MockClock cannot stall them);
        # slower answers (a SYNC_FLUSH send) get SHUTDOWN_DRAIN_S.
        passes = 0
        with trio.move_on_after(SHUTDOWN_DRAIN_S):
            while any(c.inflight or c.write_queue_bytes for c in self.server.connections):
                passes += 1
                if passes <= 100:
                    await trio.lowlevel.checkpoint()
                else:
                    await trio.sleep(0.002)
        self.server.close()

    async def wait_started(self) -> None:
        await self._started.wait()
