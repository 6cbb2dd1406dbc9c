"""``rmq broker`` (RocketMQ's ``mqbroker``) and ``rmq dev`` (nameserver + broker in one process).

``rmq broker -c broker.conf`` reads RocketMQ's key names (brokerClusterName, brokerName, brokerId,
namesrvAddr with ``;`` separators, listenPort, storePathRootDir, flushDiskType, brokerRole, ...);
flags override the file. ``-p`` prints the effective configuration and exits. Logs go to stderr and
to ``<storePathRootDir>/logs/broker.log`` unless ``--log-file`` says otherwise. Once registered, one
line goes to stdout:

    The broker[broker-a, 192.168.1.5:10911] boot success. serializeType=JSON and name server is 127.0.0.1:9876

SIGTERM/SIGINT: stop taking sends, unregister from the nameservers, answer held pulls, persist
offsets, flush and close the store, exit 0. A configuration that cannot be used, a store that
cannot be opened or a port that cannot be bound exits 1 with a one-line reason.

``rmq dev`` starts a nameserver on 9876 and a broker on 10911 with data in ``./rmq-data``: the
quickest way to try rmq with any RocketMQ client (``namesrvAddr=127.0.0.1:9876``).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from rmq_cli.daemon import add_log_file, fail, port_arg, setup_logging

if TYPE_CHECKING:
    from rmq_broker.config import BrokerConfig
    from rmq_cli.main import SubParsers

log = logging.getLogger("rmq.broker")

#: flag dest → RocketMQ key it overrides.
_FLAG_KEYS = {
    "namesrv_addr": "namesrvAddr", "listen_port": "listenPort", "store_path": "storePathRootDir",
    "broker_name": "brokerName", "broker_id": "brokerId", "cluster": "brokerClusterName",
    "broker_ip": "brokerIP1", "host": "bindAddress", "role": "brokerRole", "flush": "flushDiskType",
}


def register(commands: SubParsers) -> None:
    parser = commands.add_parser(
        "broker", help="run a broker (RocketMQ's mqbroker)",
        description="Run a RocketMQ-compatible broker until SIGTERM/SIGINT. Settings: RocketMQ defaults, then the "
                    "-c broker.conf file (RocketMQ key names), then these flags. See docs/broker.md.")
    parser.add_argument("-c", "--config", metavar="FILE", help="RocketMQ broker.conf (key=value properties)")
    _add_broker_flags(parser)
    parser.add_argument("-p", "--print-config", action="store_true",
                        help="print the effective configuration as properties and exit")
    parser.set_defaults(handler=run_broker)

    dev = commands.add_parser(
        "dev", help="nameserver and broker in one process, for trying rmq",
        description="Run a nameserver (default port 9876) and a broker (default 10911) in one process, data in "
                    "./rmq-data. Point any RocketMQ client at namesrvAddr=127.0.0.1:9876.")
    dev.add_argument("--data-dir", default="rmq-data", metavar="DIR", help="where the store lives (default ./rmq-data)")
    dev.add_argument("--namesrv-port", type=port_arg, default=9876, metavar="PORT", help="nameserver port (9876)")
    dev.add_argument("--broker-port", type=port_arg, default=10911, metavar="PORT", help="broker port (10911)")
    dev.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    dev.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    dev.set_defaults(handler=run_dev)


def _add_broker_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namesrv-addr", metavar="ADDRS", help="nameservers, 'host:port;host:port' (namesrvAddr)")
    parser.add_argument("--listen-port", type=port_arg, metavar="PORT", help="broker port (listenPort, default 10911)")
    parser.add_argument("--host", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--store-path", metavar="DIR", help="store root directory (storePathRootDir, default ~/store)")
    parser.add_argument("--broker-name", help="brokerName (default broker-a)")
    parser.add_argument("--broker-id", type=int, help="brokerId: 0 = master, >0 = slave")
    parser.add_argument("--cluster", help="brokerClusterName (default DefaultCluster)")
    parser.add_argument("--broker-ip", help="brokerIP1: the address clients and msgIds use")
    parser.add_argument("--role", choices=("ASYNC_MASTER", "SYNC_MASTER", "SLAVE"), help="brokerRole")
    parser.add_argument("--flush", choices=("ASYNC_FLUSH", "SYNC_FLUSH"), help="flushDiskType")
    parser.add_argument("--log-file", metavar="FILE", help="log file (default <storePathRootDir>/logs/broker.log)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))


def build_broker_config(args: argparse.Namespace) -> BrokerConfig:
    """Defaults, then ``-c``, then flags. Raises PropertiesFileError or ConfigError."""
    from rmq_broker.config import BrokerConfig
    from rmq_common.properties_file import load_properties

    props: dict[str, Any] = {}
    if getattr(args, "config", None):
        props.update(load_properties(args.config))
        print(f"load config properties file OK, {args.config}", file=sys.stderr)
    for dest, key in _FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            props[key] = str(value)
    if props.get("storePathRootDir"):
        props["storePathRootDir"] = os.path.abspath(os.path.expanduser(props["storePathRootDir"]))
    return BrokerConfig.from_properties(props)


def run_broker(args: argparse.Namespace) -> int:
    from rmq_broker.config import ConfigError
    from rmq_common.properties_file import PropertiesFileError

    setup_logging(args.log_level)
    try:
        config = build_broker_config(args)
    except (PropertiesFileError, ConfigError) as exc:
        return fail(log, f"bad configuration: {exc}")
    if args.print_config:
        sys.stdout.write(config.to_properties_text())
        return 0
    log_file = os.path.expanduser(args.log_file or os.path.join(config.store_path_root_dir, "logs", "broker.log"))
    try:
        add_log_file(log_file)
    except OSError as exc:
        return fail(log, f"cannot open the log file {log_file}: {exc.strerror or exc}")
    for key, value in config.to_properties().items():
        log.info("config %s=%s", key, value)
    import trio

    return trio.run(_serve, config, None)


def run_dev(args: argparse.Namespace) -> int:
    from rmq_nameserver import NamesrvConfig
    from rmq_testing.cluster import test_broker_config

    setup_logging(args.log_level)
    data = os.path.abspath(args.data_dir)
    try:
        add_log_file(os.path.join(data, "logs", "rmq-dev.log"))
    except OSError as exc:
        return fail(log, f"cannot use the data directory {data}: {exc.strerror or exc}")
    namesrv = NamesrvConfig(listen_port=args.namesrv_port, listen_host=args.host, rmq_home=os.path.join(data, "namesrv"))
    broker = test_broker_config(os.path.join(data, "store"), f"{args.host}:{args.namesrv_port}",
                                listen_port=args.broker_port, bindAddress=args.host, brokerIP1=args.host,
                                mappedFileSizeCommitLog=128 * 1024 * 1024,
                                mappedFileSizeConsumeQueue=300_000 * 20,
                                maxHashSlotNum=500_000, maxIndexNum=2_000_000)
    import trio

    return trio.run(_serve, broker, namesrv)


async def _serve(config: BrokerConfig, namesrv_config: Any) -> int:
    import trio

    from rmq_broker.broker import Broker
    from rmq_broker.config_file import ConfigFileError
    from rmq_store import StoreError

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            if namesrv_config is not None:
                from rmq_nameserver import NameServer
                nameserver = NameServer(namesrv_config)
                try:
                    await nursery.start(nameserver.serve)
                except OSError as exc:
                    return fail(log, f"cannot listen on {namesrv_config.listen_host}:{namesrv_config.listen_port}: "
                                     f"{exc.strerror or exc}")
                print(f"The Name Server boot success. serializeType=JSON, listening on "
                      f"{namesrv_config.listen_host}:{nameserver.port}", flush=True)
            broker = Broker(config)
            try:
                await nursery.start(broker.serve)
            except OSError as exc:
                return fail(log, f"cannot start the broker on port {config.listen_port}: {exc.strerror or exc}")
            except (StoreError, ConfigFileError) as exc:
                return fail(log, f"cannot open the store: {exc}")
            print(f"The broker[{config.broker_name}, {broker.broker_addr}] boot success. serializeType=JSON and "
                  f"name server is {config.namesrv_addr or '(none)'}", flush=True)
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                break
            nursery.cancel_scope.cancel()
    log.info("The broker shut down")
    return 0
