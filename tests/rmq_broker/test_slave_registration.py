"""A slave learns its master from the nameserver's REGISTER_BROKER replies (Java
``BrokerController.doRegisterBrokerAll``, PROTOCOL.md §7 "Discovery"), and the route keeps listing the slave
while its master is gone.
"""
from __future__ import annotations

import trio
from broker_wire_support import run
from slave_support import group

from rmq_nameserver.bodies import TopicRouteData
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting import headers as h


async def route(g, topic: str) -> TopicRouteData | None:
    cmd = RemotingCommand.request(RequestCode.GET_ROUTEINFO_BY_TOPIC, h.GetRouteInfoRequestHeader(topic=topic).to_ext())
    resp = await g.client.invoke(g.namesrv, cmd, 5000)
    if resp.code == ResponseCode.TOPIC_NOT_EXIST:
        return None
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return TopicRouteData.decode(bytes(resp.body))


def test_slave_takes_master_and_ha_address_from_the_registration_reply(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path) as g:
            registrar = g.slave.registrar
            assert registrar.master_addr == g.master.broker_addr
            assert registrar.master_ha_addr == g.master.ha_addr
            # a master is never told about a master
            assert g.master.registrar.master_addr is None and g.master.registrar.master_ha_addr is None

            # the master leaves: the next round clears the master address (the sync stops), the HA address
            # stays, as Java keeps retrying the last one it knew
            await g.stop_master()
            assert await g.slave.registrar.register_all() == 1
            assert registrar.master_addr is None
            assert registrar.master_ha_addr == g.master.ha_addr

            # routes keep the group with its slave only, and still list the topic's queues
            r = await route(g, "broker-a")
            assert r is not None
            [bd] = r.broker_datas
            assert bd.broker_addrs == {1: g.slave.broker_addr}

            # it comes back (same port): the next round names it again
            await g.restart_master()
            assert await g.slave.registrar.register_all() == 1
            assert registrar.master_addr == g.master.broker_addr
            r = await route(g, "broker-a")
            assert r.broker_datas[0].broker_addrs == {0: g.master.broker_addr, 1: g.slave.broker_addr}
    run(main)


def test_configured_ha_master_address_is_never_replaced(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path, slave_properties={"haMasterAddress": "127.0.0.1:1"}) as g:
            registrar = g.slave.registrar
            assert registrar.master_addr == g.master.broker_addr          # metadata still from the reply
            assert registrar.master_ha_addr == "127.0.0.1:1"
            await registrar.register_all()
            assert registrar.master_ha_addr == "127.0.0.1:1"
    run(main)


def test_a_reply_naming_the_slave_itself_is_not_taken_as_its_master(tmp_path) -> None:
    async def main() -> None:
        async with group(tmp_path) as g:
            registrar = g.slave.registrar
            own = g.slave.broker_addr
            reply = RemotingCommand.request(RequestCode.REGISTER_BROKER).create_response(
                ResponseCode.SUCCESS, None,
                h.RegisterBrokerResponseHeader(ha_server_addr="127.0.0.1:9", master_addr=own).to_ext())
            registrar._apply_reply(reply)
            assert registrar.master_addr is None
            assert registrar.master_ha_addr == "127.0.0.1:9"
            with trio.fail_after(5):
                await g.slave.slave_sync.sync_all()           # nothing to ask: no error recorded
            assert g.slave.slave_sync.last_errors == {}
    run(main)
