"""``rmq bench remoting``: the remoting layer's codec and RPC rates, side by side with a bare trio echo.

One run measures

* the codec in this process: frames encoded and decoded per second for JSON and ROCKETMQ headers (a
  SEND_MESSAGE_V2 request with twelve extFields and a ``--body-size`` body), single frames and a batch of frames
  split by ``FrameDecoder`` / ``split_frames`` as the server's reader sees them;
* RPC over loopback with the server in a child process: ping-pong (one request outstanding: req/s, RTT p50/p99)
  and pipelined (``--inflight`` callers on one connection: req/s), for rmq's RemotingServer + RemotingClient and
  for a bare trio echo of the same frames (see ``remoting_runners``).

The targets from the issue are graded on the rmq/echo ratios: pipelined req/s at least half the echo's, ping-pong
RTT (p50) at most 1.5 times the echo's.  The table goes to the terminal and JSON to ``bench/results/`` or
``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from rich.console import Console
from rich.table import Table

from rmq_cli.bench_common import stop_child

if TYPE_CHECKING:
    from rmq_cli.main import SubParsers
    from rmq_cli.remoting_runners import Plan, RpcResult

DEFAULT_DURATION: Final = 3.0
DEFAULT_BODY_SIZE: Final = 128
DEFAULT_INFLIGHT: Final = 128
#: Requests each RPC workload sends before it starts timing (at most --count).
WARMUP: Final = 2000
#: Frames per batch in the batch-decode rows (what one large ``recv`` may hold under pipelining).
BATCH: Final = 256
#: Each codec measurement runs repetitions of about this long and keeps the fastest.
CODEC_SECONDS: Final = 0.25
CODEC_REPEAT: Final = 3
#: The issue's targets.
PIPELINED_MIN_RATIO: Final = 0.5
PING_PONG_MAX_RTT_RATIO: Final = 1.5
RESULTS_DIR: Final = Path(__file__).resolve().parent.parent / "bench" / "results"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


def register(benchmarks: SubParsers) -> None:
    """Add ``remoting`` to ``rmq bench``."""
    parser = benchmarks.add_parser(
        "remoting",
        help="time the remoting codec and RPC against a bare trio echo",
        description=(
            "Encode/decode rates of remoting frames (JSON and ROCKETMQ headers), and ping-pong and pipelined RPC "
            "over loopback with rmq's server and client against a bare trio echo of the same frames, the server "
            "in a child process.  Grades the issue's targets."
        ),
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration", type=_positive_float, default=None,
        help=f"seconds per RPC workload (default {DEFAULT_DURATION:g})",
    )
    amount.add_argument("--count", type=_positive_int, default=None, help="requests per RPC workload instead")
    parser.add_argument(
        "--body-size", type=_non_negative_int, default=DEFAULT_BODY_SIZE,
        help=f"message body bytes (default {DEFAULT_BODY_SIZE})",
    )
    parser.add_argument(
        "--inflight", type=_positive_int, default=DEFAULT_INFLIGHT,
        help=f"requests outstanding in the pipelined workload (default {DEFAULT_INFLIGHT}, at most 256)",
    )
    parser.add_argument(
        "--header", choices=("json", "rocketmq"), default="json",
        help="header serialization of the RPC requests (default json; the codec rows show both)",
    )
    parser.add_argument(
        "--repeat", type=_positive_int, default=1,
        help="run every RPC workload this many times, rmq and the echo alternating, and keep the best (default 1)",
    )
    parser.add_argument("--no-codec", dest="codec", action="store_false", help="skip the codec rows")
    parser.add_argument(
        "--json", type=Path, default=None, dest="json_path", metavar="FILE",
        help="write the results here instead of bench/results/remoting-<UTC timestamp>.json and remoting-latest.json",
    )
    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


# -- codec -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CodecRow:
    op: str
    json_per_s: float
    rocketmq_per_s: float
    note: str


def _rate(work: Callable[[], Any], frames_per_call: int) -> float:
    """Frames per second of ``work``: fastest of a few repetitions of about CODEC_SECONDS each, collector off."""
    calls = 1
    while True:                                      # calibrate
        start = time.perf_counter()
        for _ in range(calls):
            work()
        elapsed = time.perf_counter() - start
        if elapsed >= 0.02:
            break
        calls *= 4
    calls = max(1, int(calls * CODEC_SECONDS / elapsed))
    best = float("inf")
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(CODEC_REPEAT):
            start = time.perf_counter()
            for _ in range(calls):
                work()
            best = min(best, time.perf_counter() - start)
    finally:
        if enabled:
            gc.enable()
    return calls * frames_per_call / best


def measure_codec(body_size: int) -> tuple[list[CodecRow], dict[str, int]]:
    """Encode/decode rates for both header types; also returns the request frame sizes."""
    from rmq_cli.remoting_runners import build_request
    from rmq_remoting import FrameDecoder, RemotingCommand, SerializeType, split_frames

    rates: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for name, st in (("json", SerializeType.JSON), ("rocketmq", SerializeType.ROCKETMQ)):
        request = build_request(body_size, st)
        frame = request.encode()
        sizes[name] = len(frame)
        batch = frame * BATCH
        response = RemotingCommand.decode(frame)

        def decode_batch_decoder(batch: bytes = batch) -> None:
            decoder = FrameDecoder()
            from_frame = RemotingCommand.from_frame
            for header, serialize_type, body in decoder.feed(batch):
                from_frame(header, serialize_type, body)

        def split_batch(batch: bytes = batch) -> None:
            split_frames(batch)

        def reply(response: RemotingCommand = response) -> None:
            response.create_response(0, ext_fields=response.ext_fields, body=response.body).encode_parts()

        rates[name] = {
            "encode": _rate(request.encode_parts, 1),
            "decode": _rate(lambda frame=frame: RemotingCommand.decode(frame), 1),
            "batch": _rate(decode_batch_decoder, BATCH),
            "split": _rate(split_batch, BATCH),
            "reply": _rate(reply, 1),
        }
    notes = {
        "encode": ("encode request", "RemotingCommand.encode_parts(): header + frame prefix, body by reference"),
        "decode": ("decode one frame", "RemotingCommand.decode(frame): split + header parse"),
        "batch": (f"decode batch of {BATCH}", "FrameDecoder.feed + RemotingCommand.from_frame, as the server reads"),
        "split": (f"split batch of {BATCH}", "split_frames only: framing without header parse"),
        "reply": ("build + encode reply", "create_response(ext, body) + encode_parts, as the echo handler answers"),
    }
    rows = [CodecRow(label, rates["json"][key], rates["rocketmq"][key], note) for key, (label, note) in notes.items()]
    return rows, sizes


# -- RPC ---------------------------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


@contextmanager
def server_process(kind: str) -> Iterator[int]:
    """Start ``kind``'s server in a child process; yield its port; always end the child."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [sys.executable, "-m", "rmq_cli.remoting_runners", "serve", kind],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("port "):
            raise BenchError(f"{kind} server did not start (exit status {proc.poll()}, said {line!r})")
        yield int(line.split()[1])
    finally:
        stop_child(proc, graceful_s=5, terminate_s=5)


@dataclass(frozen=True)
class RpcRows:
    """One side's results: the best repetition of each workload, and every repetition's headline number."""

    kind: str
    ping_pong: RpcResult | None
    pipelined: RpcResult | None
    ping_pong_p50_samples: tuple[float, ...] = ()
    pipelined_samples: tuple[float, ...] = ()


#: Which sides run which workloads: the batched echo exists only as the pipelined ceiling.
KIND_WORKLOADS: Final = {"rmq": ("ping-pong", "pipelined"), "echo": ("ping-pong", "pipelined"),
                         "echo-batch": ("pipelined",)}


def measure_rpc(body_size: int, serialize_type: int, plan: Plan, inflight: int, repeat: int,
                status: Callable[[str], Any]) -> tuple[dict[str, RpcRows], list[dict[str, str]]]:
    """Every side's workloads, ``repeat`` times, interleaved so a slow spell of the machine hits both sides.

    All three servers run at once (each idle while another is measured); the order is ping-pong on rmq then
    the echo, then pipelined on rmq, the echo and the batched echo, and again for each repetition. The best
    repetition is kept per side and workload (lowest RTT p50, highest req/s). A side that fails is reported
    and skipped from then on.
    """
    import trio

    from rmq_cli import remoting_runners as rr

    request = rr.build_request(body_size, serialize_type)
    frame = request.encode()
    runners: dict[tuple[str, str], Callable[[int], RpcResult]] = {
        ("rmq", "ping-pong"): lambda port: trio.run(rr.rmq_ping_pong, port, request, plan),
        ("echo", "ping-pong"): lambda port: trio.run(rr.echo_ping_pong, port, frame, plan),
        ("rmq", "pipelined"): lambda port: trio.run(rr.rmq_pipelined, port, request, plan, inflight),
        ("echo", "pipelined"): lambda port: trio.run(rr.echo_pipelined, port, frame, plan, inflight),
        ("echo-batch", "pipelined"): lambda port: trio.run(rr.echo_pipelined_batched, port, frame, plan, inflight),
    }
    samples: dict[tuple[str, str], list[RpcResult]] = {key: [] for key in runners}
    failures: list[dict[str, str]] = []
    failed: set[str] = set()
    with contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        for kind in KIND_WORKLOADS:
            try:
                ports[kind] = stack.enter_context(server_process(kind))
            except Exception as exc:  # one failing side must not hide the other's numbers
                failures.append({"kind": kind, "error": f"{type(exc).__name__}: {exc}"})
                failed.add(kind)
        for repetition in range(repeat):
            for workload in ("ping-pong", "pipelined"):
                for kind, workloads in KIND_WORKLOADS.items():
                    if workload not in workloads or kind in failed:
                        continue
                    status(f"RPC {workload}: {kind} ({repetition + 1}/{repeat})")
                    try:
                        samples[(kind, workload)].append(runners[(kind, workload)](ports[kind]))
                    except Exception as exc:  # noqa: BLE001 - reported with the results
                        failures.append({"kind": kind, "workload": workload, "error": f"{type(exc).__name__}: {exc}"})
                        failed.add(kind)
    rows: dict[str, RpcRows] = {}
    for kind in KIND_WORKLOADS:
        pings = samples.get((kind, "ping-pong"), [])
        pipes = samples[(kind, "pipelined")]
        best_ping = min(pings, key=lambda r: r.rtt_us(0.5) or float("inf")) if pings else None
        best_pipe = max(pipes, key=lambda r: r.req_per_s) if pipes else None
        rows[kind] = RpcRows(kind, best_ping, best_pipe,
                             tuple(r.rtt_us(0.5) or 0.0 for r in pings), tuple(r.req_per_s for r in pipes))
    return rows, failures


# -- report ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    label: str
    ratio: float | None
    limit: float
    higher_is_better: bool

    @property
    def met(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio >= self.limit if self.higher_is_better else self.ratio <= self.limit


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def rpc_metrics(rows: RpcRows) -> dict[str, Any]:
    ping, pipe = rows.ping_pong, rows.pipelined
    return {
        "ping_pong_req_per_s": None if ping is None else ping.req_per_s,
        "ping_pong_rtt_p50_us": None if ping is None else ping.rtt_us(0.50),
        "ping_pong_rtt_p99_us": None if ping is None else ping.rtt_us(0.99),
        "pipelined_req_per_s": None if pipe is None else pipe.req_per_s,
        "ping_pong_requests": None if ping is None else ping.requests,
        "pipelined_requests": None if pipe is None else pipe.requests,
        "ping_pong_rtt_p50_us_samples": list(rows.ping_pong_p50_samples),
        "pipelined_req_per_s_samples": list(rows.pipelined_samples),
    }


METRICS: Final = (
    ("ping_pong_req_per_s", "ping-pong", "req/s", ",.0f"),
    ("ping_pong_rtt_p50_us", "ping-pong", "RTT p50 µs", ",.1f"),
    ("ping_pong_rtt_p99_us", "ping-pong", "RTT p99 µs", ",.1f"),
    ("pipelined_req_per_s", "pipelined", "req/s", ",.0f"),
)


def check_targets(rmq: dict[str, float | None], echo: dict[str, float | None]) -> list[Check]:
    return [
        Check(f"pipelined req/s >= {PIPELINED_MIN_RATIO:g}x bare echo",
              _ratio(rmq["pipelined_req_per_s"], echo["pipelined_req_per_s"]), PIPELINED_MIN_RATIO, True),
        Check(f"ping-pong RTT p50 <= {PING_PONG_MAX_RTT_RATIO:g}x bare echo",
              _ratio(rmq["ping_pong_rtt_p50_us"], echo["ping_pong_rtt_p50_us"]), PING_PONG_MAX_RTT_RATIO, False),
    ]


def batched_ratio(rmq: dict[str, float | None], batched: dict[str, float | None]) -> float | None:
    """rmq's pipelined req/s over the batched echo's (informational: the raw transport ceiling)."""
    return _ratio(rmq.get("pipelined_req_per_s"), batched.get("pipelined_req_per_s"))


def render_codec(console: Console, rows: list[CodecRow], sizes: dict[str, int], body_size: int) -> None:
    table = Table(title=f"rmq bench remoting: codec (SEND_MESSAGE_V2, 12 extFields, {body_size} B body; "
                        f"frame {sizes['json']} B JSON / {sizes['rocketmq']} B ROCKETMQ)",
                  title_justify="left")
    table.add_column("op", no_wrap=True)
    table.add_column("JSON frames/s", justify="right", no_wrap=True)
    table.add_column("ROCKETMQ frames/s", justify="right", no_wrap=True)
    table.add_column("note", overflow="fold")
    for row in rows:
        table.add_row(row.op, f"{row.json_per_s:,.0f}", f"{row.rocketmq_per_s:,.0f}", row.note)
    console.print(table)


def render_rpc(console: Console, rmq: dict[str, float | None], echo: dict[str, float | None],
               batched: dict[str, float | None], title: str) -> None:
    table = Table(title=title, title_justify="left")
    for name, justify in (("workload", "left"), ("metric", "left"), ("rmq", "right"), ("bare echo", "right"),
                          ("rmq/echo", "right")):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for key, workload, metric, spec in METRICS:
        ratio = _ratio(rmq[key], echo[key])
        table.add_row(workload, metric, _fmt(rmq[key], spec), _fmt(echo[key], spec),
                      "n/a" if ratio is None else f"{ratio:.2f}x")
    ratio = batched_ratio(rmq, batched)
    table.add_section()
    table.add_row("pipelined", "req/s vs batched echo (info)", _fmt(rmq.get("pipelined_req_per_s"), ",.0f"),
                  _fmt(batched.get("pipelined_req_per_s"), ",.0f"), "n/a" if ratio is None else f"{ratio:.2f}x",
                  style="dim")
    console.print(table)


def render_targets(console: Console, checks: list[Check]) -> None:
    console.print("[bold]Targets from the issue[/bold] (rmq over the bare echo, same frames, same run)")
    for check in checks:
        if check.met is None:
            verdict = "[dim]not run[/dim]"
        elif check.met:
            verdict = "[green]met[/green]    "
        else:
            verdict = "[red]NOT met[/red]"
        console.print(f"  {verdict}  {check.label:<40} {_fmt(check.ratio, '.2f')}x")
    graded = [c for c in checks if c.met is not None]
    if graded:
        console.print(f"  {sum(bool(c.met) for c in graded)} of {len(graded)} targets met")


def _make_console() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    return console


def _write_results(document: dict[str, Any], json_path: Path | None, stamp: str) -> list[Path]:
    text = json.dumps(document, indent=2) + "\n"
    paths = [json_path] if json_path is not None else [
        RESULTS_DIR / f"remoting-{stamp}.json", RESULTS_DIR / "remoting-latest.json"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return paths


def run(args: argparse.Namespace) -> int:
    """The ``rmq bench remoting`` handler; exit status 1 when a workload failed (not when a target is missed)."""
    from rmq_cli.remoting_runners import Plan
    from rmq_cli.store_report import machine_info
    from rmq_remoting import SerializeType

    console = _make_console()
    if args.inflight > 256:
        console.print("[bold red]--inflight above 256[/bold red] would meet the server's in-flight bound (SYSTEM_BUSY)")
        return 2
    duration = None if args.count else (args.duration or DEFAULT_DURATION)
    plan = Plan(count=args.count, duration=duration, warmup=min(WARMUP, args.count or WARMUP))
    serialize_type = SerializeType.JSON if args.header == "json" else SerializeType.ROCKETMQ
    started = datetime.now(timezone.utc)
    amount = f"{args.count:,} requests" if args.count else f"{duration:g} s"
    console.print(f"rmq bench remoting: body {args.body_size} B, {args.header.upper()} headers, {amount} per RPC "
                  f"workload, pipelined with {args.inflight} in flight, servers in a child process, "
                  f"{os.cpu_count()} CPUs")
    codec_rows: list[CodecRow] = []
    sizes: dict[str, int] = {}
    if args.codec:
        with console.status("codec"):
            codec_rows, sizes = measure_codec(args.body_size)
        render_codec(console, codec_rows, sizes, args.body_size)
    with console.status("RPC") as status:
        rows, failures = measure_rpc(args.body_size, serialize_type, plan, args.inflight, args.repeat,
                                     status.update)
    results = {kind: rpc_metrics(r) for kind, r in rows.items()}
    for failure in failures:
        console.print(f"[bold red]{failure['kind']} failed[/bold red]: {failure['error']}")
    best = "" if args.repeat == 1 else f", best of {args.repeat}"
    title = (f"rmq bench remoting: RPC over loopback ({args.header.upper()} headers, {args.body_size} B body, "
             f"pipelined {args.inflight} in flight{best})")
    render_rpc(console, results["rmq"], results["echo"], results["echo-batch"], title)
    checks = check_targets(results["rmq"], results["echo"])
    render_targets(console, checks)
    ratio = batched_ratio(results["rmq"], results["echo-batch"])
    console.print(f"  [cyan]info[/cyan]     pipelined req/s vs the batched echo (one write per read)  "
                  f"{_fmt(ratio, '.2f')}x")
    document = {
        "benchmark": "remoting",
        "started_utc": started.isoformat(),
        "finished_utc": datetime.now(timezone.utc).isoformat(),
        "config": {"body_size": args.body_size, "header": args.header, "inflight": args.inflight,
                   "repeat": args.repeat, "duration_s": duration, "count": args.count, "batch": BATCH,
                   "frame_bytes": sizes},
        "machine": machine_info(),
        "codec": [asdict(row) for row in codec_rows],
        "rpc": results,
        "targets": [{**asdict(c), "met": c.met} for c in checks],
        "pipelined_vs_batched_echo": batched_ratio(results["rmq"], results["echo-batch"]),
        "failures": failures,
    }
    for path in _write_results(document, args.json_path, started.strftime("%Y%m%dT%H%M%SZ")):
        console.print(f"results: {path}")
    return 1 if failures else 0
