"""Shared helpers of the nameserver tests: configs in tmp dirs, a running NameServer, broker requests.

Handed to tests through the ``ns`` fixture (test directories are not packages, so helpers cannot be
imported). Everything binds free loopback ports and every run carries a deadline.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from rmq_common._record import masked_crc
from rmq_nameserver import DataVersion, NameServer, NamesrvConfig, RegisterBrokerBody, TopicConfig
from rmq_remoting import RemotingCommand, RequestCode
from rmq_remoting.headers import RegisterBrokerRequestHeader, UnRegisterBrokerRequestHeader


class Helpers:
    """Namespace handed to tests by the ``ns`` fixture."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    @staticmethod
    def run(fn: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
        """Run ``fn`` under trio's real clock with a deadline."""
        async def bounded() -> Any:
            with trio.fail_after(timeout):
                return await fn()
        return trio.run(bounded)

    def config(self, name: str = "ns", **changes: Any) -> NamesrvConfig:
        """A loopback, free-port config whose files live under tmp_path/<name>."""
        kwargs: dict[str, Any] = {"listen_port": 0, "listen_host": "127.0.0.1", "rmq_home": str(self.tmp_path / name)}
        kwargs.update(changes)
        return NamesrvConfig(**kwargs)

    @staticmethod
    @asynccontextmanager
    async def serve(config: NamesrvConfig) -> AsyncIterator[NameServer]:
        server = NameServer(config)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            try:
                yield server
            finally:
                server.close()

    @staticmethod
    def body(*topics: str, counter: int = 1, timestamp: int = 1_700_000_000_000, queues: int = 4,
             filter_servers: tuple[str, ...] = ()) -> RegisterBrokerBody:
        return RegisterBrokerBody(DataVersion(counter, timestamp),
                                  {t: TopicConfig(t, queues, queues) for t in topics}, list(filter_servers))

    @staticmethod
    def register_request(broker_name: str, broker_addr: str, broker_id: int = 0, *,
                         cluster: str = "DefaultCluster", ha_addr: str | None = None,
                         body: RegisterBrokerBody | None = None, compressed: bool = False,
                         crc: bool = True) -> RemotingCommand:
        """A REGISTER_BROKER request as a Java broker sends it (body CRC included unless ``crc`` is False)."""
        raw = body.encode(compress=compressed) if body is not None else None
        header = RegisterBrokerRequestHeader(
            broker_name=broker_name, broker_addr=broker_addr, cluster_name=cluster,
            ha_server_addr=ha_addr or broker_addr.rsplit(":", 1)[0] + ":10912", broker_id=broker_id,
            compressed=compressed, body_crc32=masked_crc(raw) if (crc and raw) else 0)
        return RemotingCommand.request(RequestCode.REGISTER_BROKER, header.to_ext(), raw)

    @staticmethod
    def unregister_request(broker_name: str, broker_addr: str, broker_id: int = 0,
                           cluster: str = "DefaultCluster") -> RemotingCommand:
        header = UnRegisterBrokerRequestHeader(broker_name=broker_name, broker_addr=broker_addr,
                                               cluster_name=cluster, broker_id=broker_id)
        return RemotingCommand.request(RequestCode.UNREGISTER_BROKER, header.to_ext())

    @staticmethod
    def route_request(topic: str, *, version: int | None = None,
                      standard: bool | None = None) -> RemotingCommand:
        ext = {"topic": topic}
        if standard is not None:
            ext["acceptStandardJsonOnly"] = "true" if standard else "false"
        cmd = RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, ext)
        if version is not None:
            cmd.version = version
        return cmd


@pytest.fixture
def ns(tmp_path: Path) -> Helpers:
    return Helpers(tmp_path)
