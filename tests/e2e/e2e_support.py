"""Helpers of the e2e tests: the real C++ client (``cpp_client.py``) as child processes, and small wire calls.

``CppChild`` starts one driver process with its own HOME (the library writes logs and local offsets
there), reads its JSON-line events on a thread, and always ends it: ``stop()`` closes its stdin (the
driver shuts the client down and exits) and kills the process group when it does not exit in time.
Every wait has a deadline and fails with the child's events and log tail.
"""
from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode, fastjson
from rmq_remoting import headers as h

DRIVER = Path(__file__).with_name("cpp_client.py")
PRODUCE_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0

Event = dict[str, Any]


def unique(prefix: str) -> str:
    """A fresh topic or group name."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


class CppChild:
    """One ``cpp_client.py`` process; ``events`` fills as it prints."""

    def __init__(self, workdir: Path, name: str, args: list[str]) -> None:
        self.name = name
        self.home = workdir / f"home-{name}"
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.err"
        self.events: list[Event] = []
        self._cond = threading.Condition()
        env = {**os.environ, "HOME": str(self.home), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, str(DRIVER), *args], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, env=env, start_new_session=True)
        self._reader = threading.Thread(target=self._read, name=f"read-{name}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", errors="replace").strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                event = {"event": "text", "text": line}
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    # -- waiting --------------------------------------------------------------------------------

    def messages(self) -> list[Event]:
        with self._cond:
            return [e for e in self.events if e["event"] == "msg"]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float, what: str) -> None:
        """Wait until ``predicate(events)`` holds; fail after ``timeout`` s or when the child has exited."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.events):
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{self.name}: {what} not seen within {timeout} s "
                                         f"(exit status {self.proc.poll()})\n{self.describe()}")
                self._cond.wait(min(left, 0.2))

    def wait_started(self, timeout: float = 30.0) -> None:
        self.wait_for(lambda evs: any(e["event"] == "started" for e in evs), timeout, "'started'")

    def describe(self) -> str:
        with self._cond:
            events = list(self.events)
        try:
            err = self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            err = ""
        shown = "\n".join(json.dumps(e, ensure_ascii=False) for e in events[-30:])
        return f"--- last events ({len(events)}):\n{shown}\n--- stderr tail:\n{err}"

    # -- ending ---------------------------------------------------------------------------------

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Close stdin (the driver shuts down and exits); kill the process group after ``timeout`` s."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reader.join(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def __enter__(self) -> CppChild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop() if exc[0] is None else self.kill()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def produce(workdir: Path, namesrv: str, topic: str, run: str, *, n: int = 10, mode: str = "sync",
            timeout: float = PRODUCE_TIMEOUT_S, name: str | None = None, **options: Any) -> list[Event]:
    """Run the C++ producer to completion and return its ``sent`` events; fails unless every send succeeded."""
    args = ["produce", "--namesrv", namesrv, "--topic", topic, "--run", run, "--n", str(n), "--mode", mode]
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    with CppChild(workdir, name or f"produce-{run}-{mode}", args) as child:
        child.wait_for(lambda evs: any(e["event"] == "done" for e in evs), timeout, "'done'")
        done = next(e for e in child.events if e["event"] == "done")
        assert done["ok"], f"producer failed\n{child.describe()}"
        assert child.stop() == 0, child.describe()
        sent = [e for e in child.events if e["event"] == "sent"]
    assert len(sent) == n, child.describe()
    return sent


def start_consumer(workdir: Path, name: str, kind: str, namesrv: str, topic: str, group: str,
                   *flags: str, expression: str = "*") -> CppChild:
    """Start a ``push`` or ``pull`` consumer child; returns once it reported 'started'."""
    child = CppChild(workdir, name, [kind, "--namesrv", namesrv, "--topic", topic, "--group", group,
                                     "--expression", expression, *flags])
    try:
        child.wait_started()
    except BaseException:
        child.kill()
        raise
    return child


def triple(e: Event) -> tuple[str, str, str]:
    return e["key"], e["tag"], e["body"]


def keys_of(events: Iterable[Event]) -> set[str]:
    return {e["key"] for e in events}


def has_all(keys: set[str]) -> Callable[[list[Event]], bool]:
    """A ``wait_for`` predicate: every key in ``keys`` was delivered."""
    return lambda evs: keys <= {e.get("key") for e in evs if e["event"] == "msg"}


def assert_exactly(received: Iterable[Event], expected: Iterable[Event], what: str) -> None:
    """Received (key, tag, body) triples equal the expected ones as a multiset: nothing lost, extra or doubled."""
    got = collections.Counter(triple(e) for e in received)
    want = collections.Counter(triple(e) for e in expected)
    missing, extra = want - got, got - want
    assert not missing and not extra, (f"{what}: {len(missing)} missing {sorted(missing)[:5]}, "
                                       f"{len(extra)} extra or duplicated {sorted(extra)[:5]}")


# -- wire calls (our remoting client) -------------------------------------------------------------

def run_trio(fn: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
    """``trio.run(fn, *args)`` under a deadline."""
    async def bounded() -> Any:
        with trio.fail_after(timeout):
            return await fn(*args)
    return trio.run(bounded)


async def call(client: RemotingClient, addr: str, code: int, header: h.CommandHeader | None = None,
               body: bytes | None = None, timeout_ms: float = 5000) -> RemotingCommand:
    cmd = RemotingCommand.request(code, header.to_ext() if header is not None else None, body)
    return await client.invoke(addr, cmd, timeout_ms)


async def route(client: RemotingClient, namesrv: str, topic: str) -> dict | None:
    """The nameserver's TopicRouteData for ``topic``, or None when it answers TOPIC_NOT_EXIST."""
    resp = await call(client, namesrv, RequestCode.GET_ROUTEINFO_BY_TOPIC, h.GetRouteInfoRequestHeader(topic=topic))
    if resp.code == ResponseCode.TOPIC_NOT_EXIST:
        return None
    assert resp.code == ResponseCode.SUCCESS, (resp.code, resp.remark)
    return fastjson.loads(bytes(resp.body))


def broker_addrs(route_data: dict | None) -> dict[str, str]:
    """brokerName → master address in a route (empty for None)."""
    if not route_data:
        return {}
    return {b["brokerName"]: b["brokerAddrs"].get(0, b["brokerAddrs"].get("0"))
            for b in route_data.get("brokerDatas", [])}


def read_queue_count(namesrv: str, topic: str) -> int:
    """How many read queues the nameserver routes for ``topic`` (summed over brokers)."""
    async def main() -> int:
        async with RemotingClient() as client:
            data = await route(client, namesrv, topic)
        assert data, f"no route for {topic}"
        return sum(q["readQueueNums"] for q in data["queueDatas"])
    return run_trio(main)
