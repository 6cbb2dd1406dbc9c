"""The peers of ``rmq bench produce|consume|e2e|client``: the same workloads against Redis Streams, in the same run.

Redis is the broker the issue's targets come from (``shared/anchors/README.md``): ``redis-server`` from Debian's
packages, started here on a free loopback port in a temp dir with RDB snapshots off and the append-only file on
(``appendfsync everysec``: the analogue of rmq's ASYNC_FLUSH; ``always`` when rmq runs with SYNC_FLUSH), and
always stopped. The client is redis-py (with hiredis when installed), one connection:

* **produce** — a pipeline (no MULTI) of ``batch`` XADD commands per round trip; the pipeline is Redis's form
  of a batch in flight, so ``--concurrency`` does not apply. Latency is one pipeline sent and answered.
* **consume** — XREAD COUNT ``pull_batch`` from the last id seen until the stream is read. Latency is one XREAD.
* **e2e** — a producer process (``python bench/peers.py e2e-producer``) sends XADDs paced as rmq's producer is
  (message ``i`` at ``start + i / rate``, stamped with CLOCK_MONOTONIC just before it is handed to the client);
  here XREAD BLOCK receives them and the latency is the time of receipt minus the stamp.

When ``redis-server`` is not on PATH (or redis-py is missing) ``RedisPeer.unavailable_reason()`` says why and the
benchmark reports the peer as not run instead of failing.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:                       # run as a script (the e2e producer child)
    sys.path.insert(0, str(_ROOT))

from rmq_cli.client_report import OP_CONSUME, OP_E2E, OP_PRODUCE, Meter, RunResult
from rmq_cli.client_runners import STAMP, E2EPlan, ProducePlan, child_env, e2e_body, pace, payload

REDIS: Final = "redis"
START_TIMEOUT: Final = 20.0
FIELD: Final = b"d"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisPeer:
    """A redis-server child process and the three workloads against it (use as a context manager)."""

    name = REDIS

    @staticmethod
    def unavailable_reason() -> str | None:
        """Why Redis cannot be measured here, or None."""
        if shutil.which("redis-server") is None:
            return "redis-server is not installed (Debian: apt-get install redis-server)"
        if importlib.util.find_spec("redis") is None:
            return "redis-py is not installed (pip install 'redis[hiredis]')"
        return None

    def __init__(self, flush: str = "ASYNC_FLUSH", parent: Path | None = None) -> None:
        self.fsync = "always" if flush == "SYNC_FLUSH" else "everysec"
        self.parent = parent
        self.port = 0
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: Any = None
        self.version = ""

    # -- lifecycle ---------------------------------------------------------------------------------------

    def __enter__(self) -> RedisPeer:
        import redis

        self.dir = Path(tempfile.mkdtemp(prefix="rmq-bench-redis-", dir=self.parent))
        self.port = _free_port()
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--save", "", "--appendonly", "yes", "--appendfsync", self.fsync, "--daemonize", "no",
                "--protected-mode", "yes", "--logfile", str(self.dir / "redis.log")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    self.client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60)
                    self.client.ping()
                    break
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server did not start (exit {self.proc.poll()}): "
                                           f"{self._log_tail()}") from None
                    time.sleep(0.05)
            self.version = str(self.client.info("server").get("redis_version", ""))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _log_tail(self) -> str:
        try:
            return (self.dir / "redis.log").read_text(errors="replace")[-1500:] if self.dir else ""
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        try:
            if self.client is not None:
                self.client.close()
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def description(self) -> str:
        return (f"Redis {self.version} Streams, AOF appendfsync {self.fsync}, no RDB; redis-py "
                f"{_redis_py_version()}{' + hiredis' if _has_hiredis() else ''}, one connection")

    def _key(self, op: str, size: int) -> str:
        key = f"rmq_bench_{op}_{size}_{os.getpid()}_{time.time_ns() % 10**9}"
        self.client.delete(key)
        return key

    def drop(self, key: str) -> None:
        """Free the stream's memory once a workload is done with it."""
        self.client.delete(key)

    # -- produce -----------------------------------------------------------------------------------------

    def _produce(self, key: str, plan: ProducePlan, meter: Meter | None, count: int | None,
                 duration: float | None) -> None:
        body = payload(plan.size)
        client = self.client
        perf = time.perf_counter_ns
        stop = time.perf_counter() + (duration or 0.0)
        remaining = count
        fields = {FIELD: body}
        while True:
            n = plan.batch
            if remaining is not None:
                n = min(n, remaining)
                if n <= 0:
                    return
                remaining -= n
            elif time.perf_counter() >= stop:
                return
            t0 = perf()
            pipe = client.pipeline(transaction=False)
            for _ in range(n):
                pipe.xadd(key, fields)
            pipe.execute()
            if meter is not None:
                meter.add(n, n * plan.size, perf() - t0)

    def produce(self, plan: ProducePlan, meter: Meter) -> tuple[RunResult, str]:
        key = self._key(OP_PRODUCE, plan.size)
        if plan.warmup > 0:
            self._produce(key, plan, None, None, plan.warmup)
        meter.start()
        self._produce(key, plan, meter, plan.count, plan.duration)
        meter.finish()
        note = f"pipeline of {plan.batch} XADD per round trip"
        return RunResult.from_meter(REDIS, OP_PRODUCE, plan.size, meter,
                                    latency_of=f"per pipeline of {plan.batch}", note=note), key

    def fill(self, size: int, count: int, batch: int, meter: Meter) -> str:
        key = self._key(OP_CONSUME, size)
        meter.start()
        self._produce(key, ProducePlan(size, batch, 1, None, count, warmup=0), meter, count, None)
        meter.finish()
        return key

    # -- consume -----------------------------------------------------------------------------------------

    def consume(self, key: str, size: int, pull_batch: int, meter: Meter, produced: int | None = None) -> RunResult:
        client = self.client
        perf = time.perf_counter_ns
        last = b"0-0"
        reads = 0
        meter.start()
        while True:
            t0 = perf()
            reply = client.xread({key: last}, count=pull_batch)
            if not reply:
                break
            entries = reply[0][1]
            n = len(entries)
            if not n:
                break
            last = entries[-1][0]
            reads += 1
            meter.add(n, n * size, perf() - t0)
        meter.finish()
        if produced is not None and meter.count < produced:
            raise RuntimeError(f"redis: consumed {meter.count:,} of the {produced:,} produced")
        self.drop(key)
        return RunResult.from_meter(REDIS, OP_CONSUME, size, meter, latency_of="per XREAD",
                                    note=f"XREAD COUNT {pull_batch}", reads=reads)

    # -- end to end --------------------------------------------------------------------------------------

    def e2e(self, plan: E2EPlan, meter: Meter) -> RunResult:
        import redis

        key = self._key(OP_E2E, plan.size)
        self.client.xadd(key, {FIELD: b"start"})       # the stream exists before the first blocking read
        last = self.client.xrange(key)[-1][0]
        reader = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=60)
        cmd = [sys.executable, str(Path(__file__).resolve()), "e2e-producer", "--port", str(self.port),
               "--key", key, "--size", str(plan.size), "--rate", str(plan.rate), "--count", str(plan.count),
               "--warmup", str(plan.warmup)]
        proc = subprocess.Popen(cmd, env=child_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        unpack = STAMP.unpack_from
        measured = warmup = 0
        try:
            deadline = time.monotonic() + plan.count / plan.rate * 3 + 60
            while measured < plan.count:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis e2e: the messages did not all arrive in time")
                reply = reader.xread({key: last}, count=1000, block=1000)
                now = time.monotonic_ns()
                if not reply:
                    if proc.poll() not in (None, 0):
                        raise RuntimeError(f"redis e2e producer failed: {proc.stderr.read().decode()[-1500:]}"
                                           if proc.stderr else "redis e2e producer failed")
                    continue
                entries = reply[0][1]
                last = entries[-1][0]
                n = 0
                for _, fields in entries:
                    seq, stamp = unpack(fields[FIELD])
                    if seq < 0:
                        warmup += 1
                        continue
                    if not n and not measured:
                        meter.start()
                    n += 1
                    meter.latencies_ns.append(now - stamp)
                if n:
                    measured += n
                    meter.add(n, n * plan.size)
            meter.finish()
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stderr is not None:
                proc.stderr.close()
            reader.close()
            self.drop(key)
        note = f"XADD paced at {plan.rate:,.0f}/s in another process; XREAD BLOCK"
        return RunResult.from_meter(REDIS, OP_E2E, plan.size, meter, latency_of="per message", note=note,
                                    keep_latencies=True, warmup_messages=warmup)


def _redis_py_version() -> str:
    try:
        import redis

        return str(redis.__version__)
    except ImportError:
        return "n/a"


def _has_hiredis() -> bool:
    return importlib.util.find_spec("hiredis") is not None


#: Peers by name, as ``--peers`` takes them.
PEERS: Final = {REDIS: RedisPeer}


# -- the e2e producer child ----------------------------------------------------------------------------------


def _paced_xadds(client: Any, key: str, size: int, rate: float, count: int, measured: bool) -> None:
    """XADD message ``i`` at ``start + i / rate`` (blocking sleeps, as rmq's producer paces), stamped just before."""
    start = time.monotonic()
    for i in range(count):
        pace(start + i / rate)
        client.xadd(key, {FIELD: e2e_body(size, i if measured else -1)})


def main(argv: list[str] | None = None) -> int:
    import redis

    parser = argparse.ArgumentParser(prog="python bench/peers.py")
    sub = parser.add_subparsers(dest="command", required=True)
    prod = sub.add_parser("e2e-producer")
    prod.add_argument("--port", type=int, required=True)
    prod.add_argument("--key", required=True)
    prod.add_argument("--size", type=int, required=True)
    prod.add_argument("--rate", type=float, required=True)
    prod.add_argument("--count", type=int, required=True)
    prod.add_argument("--warmup", type=int, default=0)
    args = parser.parse_args(argv)
    client = redis.Redis(host="127.0.0.1", port=args.port, socket_timeout=60)
    if args.warmup:
        _paced_xadds(client, args.key, args.size, args.rate, args.warmup, measured=False)
    _paced_xadds(client, args.key, args.size, args.rate, args.count, measured=True)
    client.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
