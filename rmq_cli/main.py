"""Entry point of the ``rmq`` command.

Every top-level command lives in its own module and is wired in through COMMANDS: a registrar adds its argparse
sub-parser and sets ``handler`` on it, so adding ``rmq nameserver`` or ``rmq broker`` means adding one registrar
here and nothing else.  Command modules keep heavy imports (the store, LMDB, numpy) inside their handlers, so
``rmq --help`` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from rmq_cli import bench_client, bench_remoting, bench_store, broker_cmd, nameserver_cmd

#: What a registrar receives: the sub-parser collection of its parent command.
SubParsers = argparse._SubParsersAction  # noqa: SLF001 - argparse has no public name for this type
#: A registrar adds one command (and its sub-commands) to the parser it is given.
Registrar = Callable[[SubParsers], None]
#: A handler runs a parsed command and returns the process exit status.
Handler = Callable[[argparse.Namespace], int]


def _register_bench(commands: SubParsers) -> None:
    """``rmq bench ...``: the benchmarks, one sub-command each (store, remoting, produce, consume, e2e, client)."""
    bench = commands.add_parser("bench", help="run a benchmark", description="Benchmarks of rmq against its peers.")
    benchmarks = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    bench_store.register(benchmarks)
    bench_remoting.register(benchmarks)
    bench_client.register(benchmarks)


#: Top-level commands, in the order ``rmq --help`` lists them.
COMMANDS: tuple[Registrar, ...] = (_register_bench, nameserver_cmd.register, broker_cmd.register)


def build_parser() -> argparse.ArgumentParser:
    """The complete ``rmq`` parser; separate from main() so tests can check argument handling without running."""
    parser = argparse.ArgumentParser(
        prog="rmq", description="rmq: a RocketMQ-compatible message broker and durable log."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the chosen command and return its exit status."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)
