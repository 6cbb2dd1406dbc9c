"""rmq's side of ``rmq bench produce|consume|e2e|client``: the embedded cluster and the client workloads.

The embedded cluster (nameserver + broker) runs in a child process (``python -m rmq_cli.client_runners serve``)
so that the broker and the client each have a core of a 2-core box; the child prints its addresses and stops
when the benchmark closes its stdin. The workloads run in the benchmark's process with ``rmq_client`` over one
connection to the broker:

* **produce** — ``Producer.send_batch`` (SEND_BATCH_MESSAGE) of ``batch`` fresh messages, ``concurrency``
  batches in flight on the producer's one connection; latency is one batch sent and acknowledged.
* **consume** — PULL_MESSAGE from every queue of the topic, one pull in flight per queue (as a push consumer
  does), ``pull_batch`` messages asked per pull, bodies decoded with ``decode_pull_batch``; the consumer offset
  is committed by the pulls' piggyback, as RocketMQ consumers do. Latency is one pull answered.
* **e2e** — a producer in another child process (``python -m rmq_cli.client_runners e2e-producer``) sends one
  message at a time (``Producer.send``) at a fixed rate, each body starting with its sequence number and the
  CLOCK_MONOTONIC time just before the send (evenly spaced, see ``_paced_sends``); here held pulls (long polling, one per queue) receive them, and the
  latency of a message is the time of receipt minus its stamp.

Every topic is created for the run (UPDATE_AND_CREATE_TOPIC on every master of the cluster, then wait until
the nameserver routes it), so a run against a long-lived cluster (``-n``) starts from empty queues.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from rmq_cli.bench_common import stop_child
from rmq_cli.client_report import OP_CONSUME, OP_E2E, OP_PRODUCE, RMQ, Meter, RunResult

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
#: Broker settings of the embedded cluster on top of ``rmq_testing``'s (which keep test files small).
#: maxTransferCount/BytesOnMessageInMemory are raised from RocketMQ's 32 messages / 256 KiB so one pull can
#: carry ``--pull-batch`` messages.
EMBEDDED_COMMITLOG_BYTES: Final = 256 * 1024 * 1024
EMBEDDED_BROKER_PROPERTIES: Final[dict[str, Any]] = {
    "mappedFileSizeCommitLog": EMBEDDED_COMMITLOG_BYTES,
    "mappedFileSizeConsumeQueue": 300_000 * 20,
    "maxHashSlotNum": 500_000,
    "maxIndexNum": 2_000_000,
}
#: Bytes one pull may carry at most, per message asked (records are ~100 B of header + properties + body).
PULL_BYTES_PER_MESSAGE_OVERHEAD: Final = 256
START_TIMEOUT: Final = 60.0
CALL_TIMEOUT_MS: Final = 30_000.0
#: Held pulls of the end-to-end consumer wait this long at the broker (RocketMQ's push consumer: 15 s).
SUSPEND_MS: Final = 5_000
#: Queues of the e2e topic (per broker): one held pull waits for every message, as the issue's latency workload
#: describes; more queues mean more held pulls on the connection and a slower path through the writer task.
E2E_QUEUES: Final = 1
#: Tasks of the e2e producer taking due messages from the pacer, each sending one at a time (``send``): a
#: message never waits for another's acknowledgement unless this many are unacknowledged.
SENDERS: Final = 16
#: The e2e body starts with (sequence number, CLOCK_MONOTONIC ns at send); warm-up messages have seq -1.
STAMP: Final = struct.Struct("<qq")
PRODUCER_GROUP: Final = "rmq_bench_producer"
CONSUMER_GROUP: Final = "rmq_bench_consumer"
#: PullSysFlag bits (PROTOCOL.md §5).
PULL_COMMIT_OFFSET: Final = 0x1
PULL_SUSPEND: Final = 0x2
PULL_SUBSCRIPTION: Final = 0x4


class BenchError(RuntimeError):
    pass


def child_env() -> dict[str, str]:
    """The environment of a child process: the repository importable even when rmq is not pip-installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def payload(size: int) -> bytes:
    return bytes((i * 31 + 7) & 0xFF for i in range(size))


# -- the embedded cluster (child process) ------------------------------------------------------------------


def embedded_properties(flush: str, pull_batch: int, size: int = 1024) -> dict[str, Any]:
    """Broker properties of the embedded cluster: the store sizes above, the flush mode, pull limits raised."""
    props = dict(EMBEDDED_BROKER_PROPERTIES)
    props["flushDiskType"] = flush
    props["maxTransferCountOnMessageInMemory"] = max(32, pull_batch)
    props["maxTransferBytesOnMessageInMemory"] = max(256 * 1024,
                                                     pull_batch * (size + PULL_BYTES_PER_MESSAGE_OVERHEAD))
    return props


@dataclass(frozen=True)
class ClusterInfo:
    namesrv_addr: str
    broker_addr: str | None
    data_dir: str | None
    properties: dict[str, Any]


@contextmanager
def embedded_cluster_process(properties: Mapping[str, Any], parent: Path | None = None) -> Iterator[ClusterInfo]:
    """Start nameserver + broker in a child process on free ports with a temp data dir; always stop it."""
    data_dir = Path(tempfile.mkdtemp(prefix="rmq-bench-client-", dir=parent))
    args = [sys.executable, "-m", "rmq_cli.client_runners", "serve", "--data-dir", str(data_dir)]
    for key, value in properties.items():
        args += ["--property", f"{key}={value}"]
    log_path = data_dir / "cluster.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=child_env(),
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("cluster "):
            log.flush()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"the embedded cluster did not start (exit status {proc.poll()}): {tail}")
        _, namesrv, broker = line.split()
        yield ClusterInfo(namesrv, broker, str(data_dir), dict(properties))
    finally:
        try:
            stop_child(proc, graceful_s=30, terminate_s=10)
        finally:
            log.close()
            shutil.rmtree(data_dir, ignore_errors=True)


async def _serve(data_dir: str, properties: dict[str, str]) -> None:
    from rmq_testing.cluster import embedded_cluster

    async with embedded_cluster(data_dir, broker_properties=properties) as cluster:
        sys.stdout.write(f"cluster {cluster.namesrv_addr} {cluster.broker.broker_addr}\n")
        sys.stdout.flush()
        # The benchmark closes our stdin when it is done (or dies): then stop, shutting the broker down cleanly.
        await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)


# -- topics ------------------------------------------------------------------------------------------------


async def create_topic(instance: Any, topic: str, queues: int, timeout_s: float = 20.0) -> list[Any]:
    """Create ``topic`` with ``queues`` queues on every master of the cluster; return its routed queues."""
    from rmq_nameserver.bodies import MASTER_ID
    from rmq_nameserver.bodies import ClusterInfo as WireClusterInfo
    from rmq_remoting import RequestCode, ResponseCode
    from rmq_remoting.headers import CreateTopicRequestHeader

    resp = await instance.invoke_namesrv(instance.request(RequestCode.GET_BROKER_CLUSTER_INFO))
    if resp.code != ResponseCode.SUCCESS or not resp.body:
        raise BenchError(f"the nameserver did not answer the cluster info: code {resp.code} {resp.remark}")
    masters = [bd.broker_addrs[MASTER_ID] for bd in WireClusterInfo.decode(resp.body).broker_addr_table.values()
               if MASTER_ID in bd.broker_addrs]
    if not masters:
        raise BenchError("the nameserver knows no master broker")
    header = CreateTopicRequestHeader(topic=topic, default_topic="TBW102", read_queue_nums=queues,
                                      write_queue_nums=queues, perm=6, topic_filter_type="SINGLE_TAG",
                                      topic_sys_flag=0, order=False)
    for addr in masters:
        resp = await instance.invoke(addr, instance.request(RequestCode.UPDATE_AND_CREATE_TOPIC, header.to_ext()))
        if resp.code != ResponseCode.SUCCESS:
            raise BenchError(f"{addr} refused to create {topic}: code {resp.code} {resp.remark}")
    deadline = trio.current_time() + timeout_s
    while True:
        await instance.update_route(topic)
        queues_now = instance.subscribe_queues(topic)
        if len(queues_now) >= queues * len(masters):
            return queues_now
        if trio.current_time() > deadline:
            raise BenchError(f"the nameserver did not route {topic} within {timeout_s:g} s")
        await trio.sleep(0.05)


def topic_name(op: str, size: int) -> str:
    return f"rmq_bench_{op}_{size}_{os.getpid()}_{time.time_ns() // 1_000_000 % 10**8}"


# -- produce -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProducePlan:
    size: int
    batch: int
    concurrency: int
    duration: float | None
    count: int | None
    warmup: float = 0.5


async def produce(namesrv: str, topic: str, plan: ProducePlan, meter: Meter) -> dict[str, Any]:
    """Send batches of fresh messages until the plan is done; the meter counts the timed part."""
    from rmq_client import Producer
    from rmq_common.message import Message

    body = payload(plan.size)
    size, batch = plan.size, plan.batch
    async with Producer(PRODUCER_GROUP, namesrv, send_timeout_ms=CALL_TIMEOUT_MS,
                        retry_times_when_send_failed=0) as producer:
        await producer.publish_queues(topic)
        state = {"stop": 0.0, "remaining": 0, "timed": False}
        #: Timed batches stored without the durability asked for (FLUSH_DISK_TIMEOUT, FLUSH_SLAVE_TIMEOUT,
        #: SLAVE_NOT_AVAILABLE), by status name: an HA run must show that its SYNC_MASTER really had its slave.
        not_ok: dict[str, int] = {}

        async def worker() -> None:
            perf = time.perf_counter_ns
            while True:
                n = batch
                if state["remaining"] is not None:
                    n = min(batch, state["remaining"])
                    if n <= 0:
                        return
                    state["remaining"] -= n
                elif time.perf_counter() >= state["stop"]:
                    return
                msgs = [Message(topic, body) for _ in range(n)]
                t0 = perf()
                result = await producer.send_batch(msgs)
                if state["timed"]:
                    meter.add(n, n * size, perf() - t0)
                    if result.status.name != "SEND_OK":
                        not_ok[result.status.name] = not_ok.get(result.status.name, 0) + 1

        async def run(count: int | None, duration: float | None) -> None:
            state["remaining"] = count
            state["stop"] = time.perf_counter() + (duration or 0.0)
            async with trio.open_nursery() as nursery:
                for _ in range(plan.concurrency):
                    nursery.start_soon(worker)

        if plan.warmup > 0:
            await run(None, plan.warmup)
        state["timed"] = True
        meter.start()
        await run(plan.count, plan.duration)
        meter.finish()
        stats = producer.stats
        return {"batches": stats.batches, "failed": stats.failed, "not_ok_batches": not_ok}


# -- consume -----------------------------------------------------------------------------------------------


def pull_request(instance: Any, topic: str, queue_id: int, offset: int, max_nums: int, *, suspend: bool,
                 commit_offset: int) -> Any:
    from rmq_remoting import RequestCode
    from rmq_remoting.headers import PullMessageRequestHeader

    sys_flag = PULL_SUBSCRIPTION | (PULL_SUSPEND if suspend else 0) | (PULL_COMMIT_OFFSET if commit_offset > 0 else 0)
    header = PullMessageRequestHeader(consumer_group=CONSUMER_GROUP, topic=topic, queue_id=queue_id,
                                      queue_offset=offset, max_msg_nums=max_nums, sys_flag=sys_flag,
                                      commit_offset=max(0, commit_offset), suspend_timeout_millis=SUSPEND_MS,
                                      subscription="*", sub_version=0, expression_type="TAG")
    return instance.request(RequestCode.PULL_MESSAGE, header.to_ext())


async def consume(namesrv: str, topic: str, size: int, pull_batch: int, meter: Meter) -> dict[str, Any]:
    """Pull every queue of ``topic`` from offset 0 to its end, one pull in flight per queue."""
    from rmq_client import ClientConfig, ClientInstance
    from rmq_client.codec import decode_pull_batch
    from rmq_remoting import ResponseCode

    async with ClientInstance(ClientConfig(namesrv_addr=namesrv).with_unique_instance_name()) as instance:
        await instance.update_route(topic)
        queues = instance.subscribe_queues(topic)
        if not queues:
            raise BenchError(f"no route for {topic}")
        ends: dict[int, int] = {}
        pulls = [0]

        async def one_queue(mq: Any) -> None:
            addr = instance.master_addr(mq.broker_name)
            offset = 0
            perf = time.perf_counter_ns
            while True:
                cmd = pull_request(instance, topic, mq.queue_id, offset, pull_batch, suspend=False,
                                   commit_offset=offset)
                t0 = perf()
                resp = await instance.invoke(addr, cmd, CALL_TIMEOUT_MS)
                if resp.code == ResponseCode.SUCCESS:
                    got = decode_pull_batch(resp.body)
                    n = len(got)
                    offset = int(resp.ext_fields["nextBeginOffset"])
                    pulls[0] += 1
                    meter.add(n, n * size, perf() - t0)
                    continue
                if resp.code in (ResponseCode.PULL_NOT_FOUND, ResponseCode.PULL_OFFSET_MOVED):
                    ends[id(mq)] = int((resp.ext_fields or {}).get("maxOffset", offset))
                    return
                if resp.code == ResponseCode.PULL_RETRY_IMMEDIATELY:
                    continue
                raise BenchError(f"pull of {mq} answered code {resp.code} {resp.remark}")

        meter.start()
        async with trio.open_nursery() as nursery:
            for mq in queues:
                nursery.start_soon(one_queue, mq)
        meter.finish()
        return {"queues": len(queues), "pulls": pulls[0], "stored": sum(ends.values())}


# -- end to end --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class E2EPlan:
    size: int
    rate: float
    count: int
    warmup: int


def e2e_body(size: int, seq: int) -> bytes:
    """A body of ``size`` bytes (at least the stamp) with ``seq`` and the CLOCK_MONOTONIC time now."""
    stamp = STAMP.pack(seq, time.monotonic_ns())
    return stamp + b"x" * max(0, size - len(stamp))


def pace(due: float) -> None:
    """Sleep (blocking) until CLOCK_MONOTONIC reaches ``due``, if it has not yet."""
    delay = due - time.monotonic()
    if delay > 0:
        time.sleep(delay)


async def _paced_sends(producer: Any, topic: str, size: int, rate: float, count: int, measured: bool,
                       failures: list[BaseException]) -> None:
    """Send message ``i`` at ``start + i / rate``, each stamped just before ``Producer.send``; SENDERS tasks send
    (so a slow acknowledgement does not delay the next message: the rate holds while the round trip is below
    SENDERS / rate).

    The due times come from ``Pacer`` (a kernel timer the trio loop waits on with its sockets: µs precision,
    no helper thread); each due message goes to an idle sender through a memory channel.
    """
    from rmq_common.message import Message

    from rmq_cli.pacer import Pacer

    ticks_in, ticks = trio.open_memory_channel[int](math.inf)

    async def sender() -> None:
        async for i in ticks:
            try:
                await producer.send(Message(topic, e2e_body(size, i if measured else -1)))
            except Exception as exc:  # counted; the run fails at the end
                failures.append(exc)

    pacer = Pacer(rate, count, time.monotonic_ns() + 2_000_000)
    async with trio.open_nursery() as nursery:
        for _ in range(SENDERS):
            nursery.start_soon(sender)
        async with ticks_in:
            await pacer.run(ticks_in.send_nowait)


async def _e2e_producer(namesrv: str, topic: str, plan: E2EPlan) -> int:
    from rmq_client import Producer

    failures: list[BaseException] = []
    async with Producer(PRODUCER_GROUP + "_e2e", namesrv, send_timeout_ms=CALL_TIMEOUT_MS) as producer:
        await producer.publish_queues(topic)
        await _paced_sends(producer, topic, plan.size, plan.rate, plan.warmup, False, failures)
        await _paced_sends(producer, topic, plan.size, plan.rate, plan.count, True, failures)
    if failures:
        raise BenchError(f"{len(failures)} sends failed, the first: {failures[0]!r}")
    return plan.count


async def e2e(namesrv: str, topic: str, plan: E2EPlan, meter: Meter, producer_cmd: list[str]) -> dict[str, Any]:
    """Held pulls on every queue; the producer child process is ``producer_cmd``; ends when every measured
    message arrived (or 10 s after the producer finished)."""
    from rmq_client import ClientConfig, ClientInstance
    from rmq_client.codec import decode_pull_batch
    from rmq_remoting import ResponseCode

    unpack = STAMP.unpack_from
    async with ClientInstance(ClientConfig(namesrv_addr=namesrv).with_unique_instance_name()) as instance:
        await instance.update_route(topic)
        queues = instance.subscribe_queues(topic)
        if not queues:
            raise BenchError(f"no route for {topic}")
        all_in = trio.Event()
        seen = {"measured": 0, "warmup": 0}

        async def one_queue(mq: Any) -> None:
            addr = instance.master_addr(mq.broker_name)
            offset = 0
            while True:
                cmd = pull_request(instance, topic, mq.queue_id, offset, 1024, suspend=True, commit_offset=offset)
                resp = await instance.invoke(addr, cmd, SUSPEND_MS + CALL_TIMEOUT_MS)
                if resp.code == ResponseCode.SUCCESS:
                    now = time.monotonic_ns()
                    offset = int(resp.ext_fields["nextBeginOffset"])
                    n = 0
                    for body in decode_pull_batch(resp.body).bodies:
                        seq, stamp = unpack(body)
                        if seq < 0:
                            seen["warmup"] += 1
                            continue
                        if not n and not seen["measured"]:
                            meter.start()
                        n += 1
                        meter.latencies_ns.append(now - stamp)
                    if n:
                        seen["measured"] += n
                        meter.add(n, n * plan.size)
                        if seen["measured"] >= plan.count:
                            all_in.set()
                elif resp.code == ResponseCode.PULL_OFFSET_MOVED:
                    offset = int(resp.ext_fields.get("nextBeginOffset", offset))
                elif resp.code not in (ResponseCode.PULL_NOT_FOUND, ResponseCode.PULL_RETRY_IMMEDIATELY):
                    raise BenchError(f"pull of {mq} answered code {resp.code} {resp.remark}")

        async with trio.open_nursery() as nursery:
            for mq in queues:
                nursery.start_soon(one_queue, mq)
            await trio.sleep(0.1)               # the held pulls reach the broker before the first message
            proc = await trio.lowlevel.open_process(producer_cmd, env=child_env(), stdin=subprocess.DEVNULL,
                                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                with trio.move_on_after(plan.count / plan.rate * 3 + 60):
                    await proc.wait()
                if proc.returncode is None:
                    raise BenchError("the e2e producer did not finish in time")
                if proc.returncode != 0:
                    err = b""
                    if proc.stderr is not None:
                        with trio.move_on_after(1):
                            err = await proc.stderr.receive_some(65536)
                    raise BenchError(f"the e2e producer failed (exit {proc.returncode}): "
                                     f"{err.decode(errors='replace')[-1500:]}")
                with trio.move_on_after(10):
                    await all_in.wait()
            finally:
                if proc.returncode is None:
                    proc.kill()
                    with trio.CancelScope(shield=True):
                        await proc.wait()
                if proc.stderr is not None:
                    await proc.stderr.aclose()
            nursery.cancel_scope.cancel()
        meter.finish()
        if seen["measured"] < plan.count:
            raise BenchError(f"the e2e consumer received {seen['measured']:,} of {plan.count:,} messages")
        return {"queues": len(queues), "warmup_messages": seen["warmup"]}


def e2e_producer_cmd(namesrv: str, topic: str, plan: E2EPlan) -> list[str]:
    return [sys.executable, "-m", "rmq_cli.client_runners", "e2e-producer", "--namesrv", namesrv, "--topic", topic,
            "--size", str(plan.size), "--rate", str(plan.rate), "--count", str(plan.count),
            "--warmup", str(plan.warmup)]


# -- what the benchmark calls ------------------------------------------------------------------------------


@dataclass
class RmqSide:
    """rmq's runs against one cluster: each method returns a RunResult (topics made fresh per run)."""

    namesrv: str
    queues: int
    pull_batch: int

    def _topic(self, op: str, size: int, queues: int | None = None) -> str:
        async def make() -> str:
            from rmq_client import ClientConfig, ClientInstance

            name = topic_name(op, size)
            async with ClientInstance(ClientConfig(namesrv_addr=self.namesrv).with_unique_instance_name()) as inst:
                await create_topic(inst, name, queues or self.queues)
            return name

        return trio.run(make)

    def produce(self, plan: ProducePlan, meter: Meter) -> tuple[RunResult, str]:
        topic = self._topic(OP_PRODUCE, plan.size)
        extra = trio.run(produce, self.namesrv, topic, plan, meter)
        note = f"send_batch of {plan.batch}, {plan.concurrency} in flight, {self.queues} queues"
        return RunResult.from_meter(RMQ, OP_PRODUCE, plan.size, meter, latency_of=f"per batch of {plan.batch}",
                                    note=note, **extra), topic

    def fill(self, size: int, count: int, batch: int, concurrency: int, meter: Meter) -> str:
        topic = self._topic(OP_CONSUME, size)
        trio.run(produce, self.namesrv, topic, ProducePlan(size, batch, concurrency, None, count, warmup=0), meter)
        return topic

    def consume(self, topic: str, size: int, meter: Meter, produced: int | None = None) -> RunResult:
        extra = trio.run(consume, self.namesrv, topic, size, self.pull_batch, meter)
        if produced is not None and meter.count < produced:
            raise BenchError(f"consumed {meter.count:,} messages of the {produced:,} produced")
        note = f"up to {self.pull_batch} per pull, one pull in flight per queue ({extra['queues']} queues)"
        return RunResult.from_meter(RMQ, OP_CONSUME, size, meter, latency_of="per pull", note=note, **extra)

    def e2e(self, plan: E2EPlan, meter: Meter) -> RunResult:
        topic = self._topic(OP_E2E, plan.size, E2E_QUEUES)
        cmd = e2e_producer_cmd(self.namesrv, topic, plan)
        extra = trio.run(e2e, self.namesrv, topic, plan, meter, cmd)
        note = (f"send() paced at {plan.rate:,.0f}/s in another process; a long-polling pull per queue "
                f"({extra['queues']} queue{'s' if extra['queues'] != 1 else ''})")
        return RunResult.from_meter(RMQ, OP_E2E, plan.size, meter, latency_of="per message", note=note,
                                    keep_latencies=True, **extra)


# -- child entry points ------------------------------------------------------------------------------------


def child_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmq_cli.client_runners")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="embedded nameserver + broker until stdin closes")
    serve.add_argument("--data-dir", required=True)
    serve.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")
    prod = sub.add_parser("e2e-producer", help="paced sends with a timestamp in the body")
    prod.add_argument("--namesrv", required=True)
    prod.add_argument("--topic", required=True)
    prod.add_argument("--size", type=int, required=True)
    prod.add_argument("--rate", type=float, required=True)
    prod.add_argument("--count", type=int, required=True)
    prod.add_argument("--warmup", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        import logging

        logging.basicConfig(level=logging.WARNING)
        props = dict(item.split("=", 1) for item in args.property)
        try:
            trio.run(_serve, args.data_dir, props)
        except KeyboardInterrupt:
            pass
        return 0
    plan = E2EPlan(args.size, args.rate, args.count, args.warmup)
    trio.run(_e2e_producer, args.namesrv, args.topic, plan)
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main())
