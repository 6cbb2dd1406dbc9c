"""Registration with every NameServer (Java ``BrokerOuterAPI.registerBrokerAll``, PROTOCOL.md §3.3, §8).

The broker sends REGISTER_BROKER to all configured nameservers in parallel at start, every
``registerNameServerPeriod`` ms (clamped to 10–60 s as upstream) and right after its topics change;
UNREGISTER_BROKER on shutdown. Each nameserver is independent: one that is down is logged and retried
at the next period, never blocking the others. The body is RegisterBrokerBody with every topic
config and its DataVersion; ``bodyCrc32`` carries its masked CRC-32 so a nameserver can detect
corruption.

A slave learns its master from the replies (Java ``BrokerController.doRegisterBrokerAll``): the first
accepted reply of a round sets ``master_addr`` — to None when the nameserver has no live master of the
group, which stops the metadata sync until the master is back — and, unless ``haMasterAddress`` is
configured (Java's ``updateMasterHAServerAddrPeriodically=false``), ``master_ha_addr`` when the reply
carries one; a reply without an HA address leaves the last one in place, as Java does, so the HA client
keeps retrying the address it knows. Every change is logged.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import orjson
import trio

from rmq_common._record import masked_crc
from rmq_remoting import RemotingCommand, RemotingError, RequestCode, ResponseCode
from rmq_remoting.headers import (RegisterBrokerRequestHeader, RegisterBrokerResponseHeader,
                                  UnRegisterBrokerRequestHeader)

if TYPE_CHECKING:
    from rmq_broker.broker import Broker

__all__ = ["NameServerRegistrar"]

log = logging.getLogger("rmq_broker.registration")

REGISTER_TIMEOUT_MS = 6_000


class NameServerRegistrar:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        #: The group master's remoting address (the metadata sync's source); None = no live master known.
        self.master_addr: str | None = None
        #: Where the slave's HA client connects: ``haMasterAddress`` if configured, else from the replies.
        self.master_ha_addr: str | None = broker.config.ha_master_address
        #: False when ``haMasterAddress`` fixes the HA address (Java ``updateMasterHAServerAddrPeriodically``).
        self.update_master_ha_addr = broker.config.ha_master_address is None
        self.last_results: dict[str, str] = {}       # nameserver → "ok" or the error
        self._kick = trio.Event()

    @property
    def nameservers(self) -> list[str]:
        return self.broker.config.namesrv_addr_list

    def request_register(self) -> None:
        """Register again soon (topics changed); coalesces bursts of changes into one round."""
        self._kick.set()

    def _body(self) -> bytes:
        wrapper = self.broker.topics.registration_wrapper()
        return orjson.dumps({"filterServerList": [], "topicConfigSerializeWrapper": wrapper})

    def _header(self, body: bytes) -> dict[str, str]:
        b = self.broker
        return RegisterBrokerRequestHeader(
            broker_name=b.config.broker_name, broker_addr=b.broker_addr, cluster_name=b.config.broker_cluster_name,
            ha_server_addr=b.ha_addr, broker_id=b.config.broker_id, compressed=False,
            body_crc32=masked_crc(body)).to_ext()

    async def register_all(self) -> int:
        """One round: REGISTER_BROKER to every nameserver at once; returns how many accepted."""
        addrs = self.nameservers
        if not addrs or self.broker.stopping:       # no registration after (or racing) the unregistration
            return 0
        body = self._body()
        ext = self._header(body)
        accepted = 0
        first_reply: RemotingCommand | None = None

        async def one(addr: str) -> None:
            nonlocal accepted, first_reply
            cmd = RemotingCommand.request(RequestCode.REGISTER_BROKER, dict(ext), body)
            try:
                resp = await self.broker.client.invoke(addr, cmd, REGISTER_TIMEOUT_MS)
            except (RemotingError, OSError) as exc:
                self.last_results[addr] = f"failed: {exc}"
                log.warning("register to nameserver %s failed: %s", addr, exc)
                return
            if resp.code != ResponseCode.SUCCESS:
                self.last_results[addr] = f"refused: {resp.code} {resp.remark}"
                log.warning("nameserver %s refused the registration: %s %s", addr, resp.code, resp.remark)
                return
            accepted += 1
            self.last_results[addr] = "ok"
            if first_reply is None:
                first_reply = resp

        async with trio.open_nursery() as nursery:
            for addr in addrs:
                nursery.start_soon(one, addr)
        if first_reply is not None:
            self._apply_reply(first_reply)
        return accepted

    def _apply_reply(self, resp: RemotingCommand) -> None:
        """Take the master addresses from one accepted reply (Java uses the first of the round's results)."""
        try:
            header = RegisterBrokerResponseHeader.decode(resp.ext_fields or {})
        except RemotingError as exc:
            log.warning("registration reply with an unreadable header ignored: %s", exc)
            return
        if self.broker.is_master:
            return          # nameservers only name a master to slaves; a master syncs from nobody
        master_addr = header.master_addr or None
        if master_addr == self.broker.broker_addr:
            master_addr = None          # never sync from ourselves (Java's syncAll skips its own address)
        if master_addr != self.master_addr:
            log.info("master of %s changed: %s -> %s", self.broker.config.broker_name, self.master_addr or "(none)",
                     master_addr or "(none)")
            self.master_addr = master_addr
        ha_addr = header.ha_server_addr or None
        if self.update_master_ha_addr and ha_addr is not None and ha_addr != self.master_ha_addr:
            log.info("master HA address of %s changed: %s -> %s", self.broker.config.broker_name,
                     self.master_ha_addr or "(none)", ha_addr)
            self.master_ha_addr = ha_addr

    async def unregister_all(self) -> None:
        b = self.broker
        ext = UnRegisterBrokerRequestHeader(broker_name=b.config.broker_name, broker_addr=b.broker_addr,
                                            cluster_name=b.config.broker_cluster_name,
                                            broker_id=b.config.broker_id).to_ext()

        async def one(addr: str) -> None:
            try:
                await b.client.invoke(addr, RemotingCommand.request(RequestCode.UNREGISTER_BROKER, dict(ext)), 3000)
            except (RemotingError, OSError) as exc:
                log.info("unregister from nameserver %s failed: %s", addr, exc)

        async with trio.open_nursery() as nursery:
            for addr in self.nameservers:
                nursery.start_soon(one, addr)

    def period_ms(self) -> int:
        return self.broker.config.register_period_ms

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Register now, then every period and whenever ``request_register`` was called."""
        await self.register_all()
        task_status.started()
        while True:
            with trio.move_on_after(self.period_ms() / 1000):
                await self._kick.wait()
            self._kick = trio.Event()
            await self.register_all()
