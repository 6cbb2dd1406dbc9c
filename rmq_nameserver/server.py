"""The NameServer: a RemotingServer serving the nameserver codes, plus the broker liveness timer.

RocketMQ's NamesrvController without its thread pools: one trio task per connection (from
RemotingServer), one task for the liveness scan. All timers use trio's clock (``trio.sleep_until``,
``trio.current_time``), and so do the liveness timestamps, so a test can run the 120 s expiry under
``trio.testing.MockClock`` in milliseconds.

A broker's connection ending removes its brokers at once (RocketMQ's BrokerHousekeepingService); the
scan drops brokers that stopped registering while their connection stayed open, and closes that
connection as RocketMQ does.
"""
from __future__ import annotations

import logging

import trio

from rmq_nameserver.config import NamesrvConfig
from rmq_nameserver.kvconfig import KVConfigManager
from rmq_nameserver.processor import NamesrvProcessor
from rmq_nameserver.route_info import RouteInfoManager
from rmq_remoting import Connection, RemotingServer

__all__ = ["NameServer"]

log = logging.getLogger("rmq.nameserver")


def trio_clock_ms() -> int:
    """Milliseconds on trio's clock: monotonic, and mockable in tests."""
    return int(trio.current_time() * 1000)


class NameServer:
    """One nameserver. ``await nursery.start(ns.serve)`` binds and reports it started; ``close()`` stops it.

    The KV store is loaded in the constructor, so a corrupt ``kvConfig.json`` fails before anything
    listens (KVConfigError).
    """

    def __init__(self, config: NamesrvConfig | None = None) -> None:
        self.config = config if config is not None else NamesrvConfig()
        self.kv = KVConfigManager(self.config.kv_config_file)
        self.kv.load()
        self.routes = RouteInfoManager(clock_ms=trio_clock_ms,
                                       expired_time_ms=lambda: self.config.broker_channel_expired_time_ms)
        self.processor = NamesrvProcessor(self.config, self.routes, self.kv)
        self.remoting = RemotingServer(self.config.listen_port, host=self.config.listen_host,
                                       idle_timeout=self.config.idle_timeout_s)
        self.processor.register_on(self.remoting)
        self.remoting.add_close_hook(self._on_connection_closed)
        self._cancel_scope: trio.CancelScope | None = None
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port once ``serve`` has started (the configured one before)."""
        return self.remoting.port

    @property
    def addr(self) -> str:
        """``host:port`` to connect to: the loopback address when listening on every address."""
        host = self.config.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"{host}:{self.port}"

    async def serve(self, *, task_status: trio.TaskStatus[NameServer] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until ``close()`` or cancellation; reports itself once the port is bound."""
        with trio.CancelScope() as self._cancel_scope:
            if self._closed:
                self._cancel_scope.cancel()
            async with trio.open_nursery() as nursery:
                await nursery.start(self.remoting.serve)
                nursery.start_soon(self._scan_loop)
                log.info("The Name Server listening on %s:%d", self.config.listen_host, self.port)
                task_status.started(self)

    def close(self) -> None:
        """Stop listening, close every connection and stop the timer; ``serve()`` returns."""
        self._closed = True
        self.remoting.close()
        if self._cancel_scope is not None:
            self._cancel_scope.cancel()

    async def _scan_loop(self) -> None:
        """Liveness scan at a fixed rate (RocketMQ: first after 5 s, then every 10 s)."""
        deadline = trio.current_time() + self.config.scan_not_active_broker_first_delay_ms / 1000
        while True:
            await trio.sleep_until(deadline)
            self.scan_not_active_brokers()
            # Read the period every time: UPDATE_NAMESRV_CONFIG may have changed it.
            deadline = max(deadline + self.config.scan_not_active_broker_interval_ms / 1000, trio.current_time())

    def scan_not_active_brokers(self) -> int:
        """One scan: drop silent brokers and close their connections; returns how many were dropped."""
        expired = self.routes.scan_not_active_broker()
        for broker in expired:
            if isinstance(broker.channel, Connection) and not broker.channel.closed:
                broker.channel.close(f"broker {broker.broker_addr} silent for {broker.silent_for_ms} ms")
        return len(expired)

    def _on_connection_closed(self, conn: Connection) -> None:
        dropped = self.routes.on_channel_destroy(conn)
        if dropped:
            log.info("connection %s closed (%s): dropped broker(s) %s", conn.remote_addr, conn.close_reason,
                     ", ".join(dropped))
