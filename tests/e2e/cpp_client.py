"""Drive the real RocketMQ C++ client (PyPI ``rocketmq`` 0.4.4 over Apache rocketmq-client-cpp) for the e2e tests.

Always run as a child process (see ``e2e_support.CppChild``): the C++ library owns threads and may
hang at shutdown, and it writes logs and local offsets under ``$HOME``, so each child gets its own
HOME. Every event is one JSON object per line on stdout; the last thing a child does is ``os._exit``.

    produce --namesrv A --topic T --run R --n N [--mode sync|async|oneway|orderly|batch|delay]
            [--first I] [--tags Tag0,Tag1,Tag2] [--shards K] [--delay-level L] [--until-stdin-eof S]
        message i (I <= i < I+N): key "R-i", tag tags[i % len(tags)], body "body-R-i-é✓";
        orderly mode sends message i with sharding argument i % K (the wrapper's hashing selector:
        queue = arg % queue count). One line per message:
            {"event": "sent", "key", "tag", "body", "shard", "t_send", "status", "msg_id", "offset"}
        (``status`` is null for oneway: there is no result), or {"event": "error", "key", "error"};
        then {"event": "done", "ok": bool, "sent": count}. Exit status 0 when every send succeeded.
        ``--until-stdin-eof S``: keep sending one message every S seconds (a probe stream) until the
        parent closes stdin.

    push --namesrv A --topic T --group G [--expression E] [--orderly] [--broadcast]
    pull --namesrv A --topic T --group G [--expression E]
        {"event": "started"} once the consumer runs, then per delivered message
            {"event": "msg", "seq", "key", "tag", "body", "queue", "offset", "reconsume", "msg_id", "t_store",
             "t_recv"}     (t_store: the broker's store timestamp);
        both consume until the parent closes stdin (or ``--max-seconds`` pass), then shut the consumer
        down (given up after 10 s) and print {"event": "stopped"}.

Times are ``time.time()`` (the wall clock every process on the host shares).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

SHUTDOWN_GRACE_S = 10.0
_out_lock = threading.Lock()


def emit(**event: object) -> None:
    line = json.dumps(event, ensure_ascii=False)
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _stdin_closed_event() -> threading.Event:
    """An event set when the parent closes our stdin (or dies)."""
    closed = threading.Event()

    def watch() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        finally:
            closed.set()
    threading.Thread(target=watch, daemon=True).start()
    return closed


def _shutdown(what: object) -> None:
    """``what.shutdown()``, abandoned after SHUTDOWN_GRACE_S (the library can hang there)."""
    t = threading.Thread(target=what.shutdown, daemon=True)      # type: ignore[attr-defined]
    t.start()
    t.join(SHUTDOWN_GRACE_S)


def produce(a: argparse.Namespace) -> int:
    from rocketmq.client import Message, Producer, SendStatus

    tags = a.tags.split(",")

    def message(i: int) -> tuple[Message, dict]:
        info = {"key": f"{a.run}-{i}", "tag": tags[i % len(tags)], "body": f"body-{a.run}-{i}-é✓",
                "shard": i % a.shards if a.mode == "orderly" else None}
        msg = Message(a.topic)
        msg.set_keys(info["key"])
        msg.set_tags(info["tag"])
        msg.set_body(info["body"])
        if a.mode == "delay":
            msg.set_delay_time_level(a.delay_level)
        return msg, info

    producer = Producer(a.group or f"PG_{a.run}", timeout=a.timeout_ms)
    producer.set_namesrv_addr(a.namesrv)
    producer.start()
    ok, sent = True, 0

    def sent_ok(info: dict, result: object | None) -> None:
        nonlocal ok, sent
        if result is None:                              # oneway: no result to check
            emit(event="sent", status=None, msg_id=None, offset=None, **info)
            sent += 1
            return
        status = result.status                          # type: ignore[attr-defined]
        emit(event="sent", status=status.name, msg_id=result.msg_id, offset=result.offset,  # type: ignore[attr-defined]
             **info)
        if status == SendStatus.OK:
            sent += 1
        else:
            ok = False

    def failed(info: dict, exc: object) -> None:
        nonlocal ok
        emit(event="error", key=info["key"], error=f"{type(exc).__name__}: {exc}")
        ok = False

    indices = range(a.first, a.first + a.n)
    if a.until_stdin_eof:
        closed = _stdin_closed_event()
        i = a.first
        while not closed.is_set():
            msg, info = message(i)
            info["t_send"] = time.time()
            try:
                sent_ok(info, producer.send_sync(msg))
            except Exception as exc:     # a probe may fail while the route settles; keep probing
                emit(event="error", key=info["key"], error=f"{type(exc).__name__}: {exc}")
            i += 1
            closed.wait(a.until_stdin_eof)
        ok = True
    elif a.mode == "batch":
        pairs = [message(i) for i in indices]
        t_send = time.time()
        try:
            result = producer.send_batch([m for m, _ in pairs])
        except Exception as exc:
            failed(pairs[0][1], exc)
        else:
            for _, info in pairs:
                sent_ok({**info, "t_send": t_send}, result)
    elif a.mode == "async":
        done = threading.Semaphore(0)
        for i in indices:
            msg, info = message(i)
            info["t_send"] = time.time()

            def on_success(result, info=info):
                sent_ok(info, result)
                done.release()

            def on_exception(exc, info=info):
                failed(info, exc)
                done.release()
            producer.send_async(msg, on_success, on_exception)
        deadline = time.monotonic() + a.timeout_ms / 1000 + 10
        for _ in indices:
            if not done.acquire(timeout=max(0.0, deadline - time.monotonic())):
                emit(event="error", key=None, error="async callbacks missing at the deadline")
                ok = False
                break
    else:
        for i in indices:
            msg, info = message(i)
            info["t_send"] = time.time()
            try:
                if a.mode in ("sync", "delay"):
                    result = producer.send_sync(msg)
                elif a.mode == "orderly":
                    result = producer.send_orderly(msg, info["shard"])
                elif a.mode == "oneway":
                    producer.send_oneway(msg)
                    result = None
                else:
                    raise SystemExit(f"unknown mode {a.mode}")
            except Exception as exc:
                failed(info, exc)
                continue
            sent_ok(info, result)
        if a.mode == "oneway":
            time.sleep(1.0)           # oneway frames are written by the library's own threads
    ok = ok and (bool(a.until_stdin_eof) or sent == a.n)
    emit(event="done", ok=ok, sent=sent)
    _shutdown(producer)
    return 0 if ok else 1


def consume(a: argparse.Namespace) -> int:
    from rocketmq.client import MessageModel, PullConsumer, PushConsumer

    closed = _stdin_closed_event()
    seq = 0
    seq_lock = threading.Lock()

    def record(msg) -> None:
        nonlocal seq
        t_recv = time.time()
        with seq_lock:
            seq += 1
            emit(event="msg", seq=seq, key=_text(msg.keys), tag=_text(msg.tags), body=_text(msg.body),
                 queue=msg.queue_id, offset=msg.queue_offset, reconsume=msg.reconsume_times, msg_id=msg.id,
                 t_store=msg.store_timestamp / 1000, t_recv=t_recv)

    if a.cmd == "push":
        model = MessageModel.BROADCASTING if a.broadcast else MessageModel.CLUSTERING
        consumer = PushConsumer(a.group, orderly=a.orderly, message_model=model)
        consumer.set_namesrv_addr(a.namesrv)
        consumer.set_thread_count(2)
        consumer.subscribe(a.topic, record, a.expression)
        consumer.start()
        emit(event="started")
        closed.wait(a.max_seconds)
    else:
        consumer = PullConsumer(a.group)
        consumer.set_namesrv_addr(a.namesrv)
        consumer.start()
        emit(event="started")
        deadline = time.monotonic() + a.max_seconds
        while not closed.is_set() and time.monotonic() < deadline:
            for msg in consumer.pull(a.topic, a.expression):
                record(msg)
            closed.wait(0.2)
    _shutdown(consumer)
    emit(event="stopped")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--mode", default="sync", choices=("sync", "async", "oneway", "orderly", "batch", "delay"))
    p.add_argument("--run", required=True, help="prefix of every key")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--tags", default="Tag0,Tag1,Tag2")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--delay-level", type=int, default=2)
    p.add_argument("--timeout-ms", type=int, default=5000)
    p.add_argument("--until-stdin-eof", type=float, metavar="S", default=0.0)
    for name in ("push", "pull"):
        c = sub.add_parser(name)
        c.add_argument("--expression", default="*")
        c.add_argument("--max-seconds", type=float, default=120.0)
        if name == "push":
            c.add_argument("--orderly", action="store_true")
            c.add_argument("--broadcast", action="store_true")
    for s in sub.choices.values():
        s.add_argument("--namesrv", required=True)
        s.add_argument("--topic", required=True)
        s.add_argument("--group", required=s is not p)
    a = parser.parse_args()
    rc = produce(a) if a.cmd == "produce" else consume(a)
    sys.stdout.flush()
    os._exit(rc)              # never wait for the library's threads


if __name__ == "__main__":
    main()
