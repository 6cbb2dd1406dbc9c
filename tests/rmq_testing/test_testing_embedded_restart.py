"""embedded_cluster restarts: a master that cannot get its old port back comes up on free ports, and its slave
finds it at once, even when the slave itself was restarted by hand (stop_broker + start_broker) and so is not
in ``cluster.slaves`` any more."""
from __future__ import annotations

import socket

import trio

from rmq_testing import embedded_cluster

#: Well under the slaves' 30 s registration period: without the immediate re-registration the slave would not know.
DEADLINE_S = 10.0


async def wait_for(predicate, what: str) -> None:
    with trio.fail_after(DEADLINE_S):
        while not predicate():
            await trio.sleep(0.02)


def test_a_master_restarted_on_new_ports_is_found_by_a_slave_restarted_by_hand(tmp_path) -> None:
    async def main() -> None:
        async with embedded_cluster(tmp_path, slaves=1) as cluster:
            master, slave = cluster.broker, cluster.slaves[0]
            await wait_for(lambda: bool(master.ha.slaves), "the slave to connect")

            slave = await cluster.start_broker(await cluster.stop_broker(slave))     # not in cluster.slaves
            await wait_for(lambda: bool(master.ha.slaves), "the restarted slave to connect")

            config = await cluster.stop_broker(master)
            squatter = socket.socket()
            try:
                squatter.bind(("127.0.0.1", config.listen_port))        # someone took the master's old port
                squatter.listen()
                master = await cluster.start_broker(config)
                assert master.port != config.listen_port
                await wait_for(lambda: bool(master.ha.slaves), "the slave to find the master on its new ports")
            finally:
                squatter.close()
            assert slave.registrar.master_addr == master.broker_addr
            assert slave.registrar.master_ha_addr == master.ha_addr

    async def bounded() -> None:
        with trio.fail_after(DEADLINE_S * 2):
            await main()

    trio.run(bounded)
