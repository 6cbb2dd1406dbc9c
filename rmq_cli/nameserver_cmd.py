"""``rmq nameserver``: run a NameServer as a daemon (RocketMQ's ``mqnamesrv``).

Configuration comes from RocketMQ's defaults, then a RocketMQ-style properties file (``-c``), then the
command-line flags. ``-p`` prints the effective configuration and exits, as ``mqnamesrv -p``.

Logs go to stderr and to a file (default ``<rmqHome>/logs/namesrv.log``, reopened if logrotate moves
it). Once the port is bound, one line is printed to stdout:

    The Name Server boot success. serializeType=JSON, listening on 0.0.0.0:9876

SIGTERM or SIGINT closes every connection and exits with status 0; a configuration that cannot be
used, a corrupt KV file or a port that cannot be bound exits with status 1 and a one-line reason.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING

from rmq_cli.daemon import add_log_file, fail, port_arg, setup_logging

if TYPE_CHECKING:
    from rmq_cli.main import SubParsers
    from rmq_nameserver import NamesrvConfig

log = logging.getLogger("rmq.nameserver")


def register(commands: SubParsers) -> None:
    """Add ``nameserver`` to ``rmq``."""
    parser = commands.add_parser(
        "nameserver",
        help="run a nameserver (RocketMQ's mqnamesrv)",
        description=(
            "Run a RocketMQ-compatible NameServer until SIGTERM/SIGINT. Settings: RocketMQ defaults, then "
            "the -c properties file (RocketMQ key names), then these flags. See docs/nameserver.md."
        ),
    )
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="RocketMQ-style namesrv.properties (listenPort, kvConfigPath, orderMessageEnable, ...)")
    parser.add_argument("--listen-port", type=port_arg, default=None, metavar="PORT",
                        help="TCP port to listen on (default 9876; 0 = any free port); overrides listenPort")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default 0.0.0.0, every IPv4 address); overrides bindAddress")
    parser.add_argument("--rmq-home", default=None, metavar="DIR",
                        help="root of rmq's files (default $RMQ_HOME or ~/rmq); overrides rmqHome")
    parser.add_argument("--log-file", default=None, metavar="FILE",
                        help="log file (default <rmqHome>/logs/namesrv.log); logs also go to stderr")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="least severe level logged (default INFO)")
    parser.add_argument("-p", "--print-config", action="store_true",
                        help="print the effective configuration as properties and exit")
    parser.set_defaults(handler=run)


def build_config(args: argparse.Namespace) -> NamesrvConfig:
    """Defaults, then ``-c``, then flags. As mqnamesrv, configuration updates are persisted to the ``-c``
    file unless it names its own configStorePath. Raises PropertiesFileError or ConfigError."""
    from rmq_common.properties_file import load_properties
    from rmq_nameserver import NamesrvConfig

    props: dict[str, str] = {}
    if args.config:
        props = load_properties(args.config)
        print(f"load config properties file OK, {args.config}", file=sys.stderr)
    overrides: dict[str, object] = {}
    if args.listen_port is not None:
        overrides["listen_port"] = args.listen_port
    if args.host is not None:
        overrides["listen_host"] = args.host
    if args.rmq_home is not None:
        overrides["rmq_home"] = os.path.expanduser(args.rmq_home)
    if args.config and "configStorePath" not in props:
        overrides["config_store_path"] = os.path.abspath(args.config)
    return NamesrvConfig.from_properties(props, **overrides)


def run(args: argparse.Namespace) -> int:
    """The ``rmq nameserver`` handler: 0 after a signal, 1 when the server cannot start."""
    from rmq_common.properties_file import PropertiesFileError
    from rmq_nameserver import ConfigError

    setup_logging(args.log_level)
    try:
        config = build_config(args)
    except (PropertiesFileError, ConfigError) as exc:
        return fail(log, f"bad configuration: {exc}")
    if args.print_config:
        sys.stdout.write(config.to_properties_text())
        return 0
    log_file = os.path.expanduser(args.log_file or os.path.join(config.rmq_home, "logs", "namesrv.log"))
    try:
        add_log_file(log_file)
    except OSError as exc:
        return fail(log, f"cannot open the log file {log_file}: {exc.strerror or exc}")
    for key, value in config.to_properties().items():
        log.info("config %s=%s", key, value)

    import trio

    return trio.run(_serve, config)


async def _serve(config: NamesrvConfig) -> int:
    import trio

    from rmq_nameserver import KVConfigError, NameServer

    # Installed before binding, so a signal during start-up is not lost (and cannot kill us uncleanly).
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        try:
            server = NameServer(config)
        except KVConfigError as exc:
            return fail(log, str(exc))
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(server.serve)
            except OSError as exc:
                return fail(log, f"cannot listen on {config.listen_host}:{config.listen_port}: {exc.strerror or exc}")
            tip = (f"The Name Server boot success. serializeType=JSON, "
                   f"listening on {config.listen_host}:{server.port}")
            log.info("%s", tip)
            print(tip, flush=True)
            async for signum in signals:
                log.info("received %s: shutting down", signal.Signals(signum).name)
                break
            server.close()
    log.info("The Name Server shut down")
    return 0
