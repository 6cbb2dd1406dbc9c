"""``rmq nameserver`` and ``rmq broker`` as child processes: what a deployment runs, for tests that
must kill a broker (SIGTERM or SIGKILL) and start it again on the same store.

Every process is started with its own log file under the cluster's directory and is always ended by
``stop()`` (SIGTERM, then SIGKILL after a deadline); use it as a context manager.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

__all__ = ["ProcessCluster", "free_port"]

START_DEADLINE_S = 30.0
#: File sizes of test brokers (RocketMQ keys): 16 MiB commitlog files, small consume-queue and index files.
TEST_STORE_FILE_SIZES = {
    "mappedFileSizeCommitLog": 16 * 1024 * 1024,
    "mappedFileSizeConsumeQueue": 30_000 * 20,
    "maxHashSlotNum": 20_000,
    "maxIndexNum": 80_000,
}
STOP_DEADLINE_S = 15.0


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(proc: subprocess.Popen, port: int, log_path: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}:\n"
                               + open(log_path, errors="replace").read()[-4000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listening on {port} after {deadline_s} s:\n"
                                   + open(log_path, errors="replace").read()[-4000:]) from None
            time.sleep(0.05)


def _wait_for_line(log_path: str, needle: str, proc: subprocess.Popen, deadline_s: float, start: int = 0) -> None:
    """Wait for ``needle`` in what was written to ``log_path`` after byte ``start`` (this run's output)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with open(log_path, "rb") as f:
            f.seek(start)
            if needle.encode() in f.read():
                return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{needle!r} not seen in {log_path}:\n" + open(log_path, errors="replace").read()[-4000:])


@dataclass
class ProcessCluster:
    """One nameserver and named brokers as child processes of this one."""

    root: str
    namesrv_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    broker_ports: dict[str, int] = field(default_factory=dict)

    @property
    def namesrv_addr(self) -> str:
        return f"127.0.0.1:{self.namesrv_port}"

    def _spawn(self, name: str, args: list[str]) -> tuple[subprocess.Popen, str, int]:
        """Start ``rmq_cli args``; returns the process, its log and where this run's output starts in it."""
        os.makedirs(self.root, exist_ok=True)
        log_path = os.path.join(self.root, f"{name}.out")
        log = open(log_path, "ab")              # appended: a restarted process keeps the earlier runs' output
        start = log.tell()
        env = {**os.environ, "RMQ_HOME": os.path.join(self.root, "home"), "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen([sys.executable, "-m", "rmq_cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc, log_path, start

    def start_nameserver(self) -> str:
        self.namesrv_port = self.namesrv_port or free_port()
        proc, log_path, _ = self._spawn("namesrv", [
            "nameserver", "--listen-port", str(self.namesrv_port), "--host", "127.0.0.1",
            "--rmq-home", os.path.join(self.root, "namesrv"), "--log-file", os.path.join(self.root, "namesrv.log")])
        _wait_listening(proc, self.namesrv_port, log_path, START_DEADLINE_S)
        return self.namesrv_addr

    def start_broker(self, name: str = "broker-a", *extra: str) -> int:
        """Start (or restart, on the same store and port) broker ``name``; returns once it is registered."""
        port = self.broker_ports.get(name) or free_port()
        self.broker_ports[name] = port
        store = os.path.join(self.root, name)
        conf = os.path.join(self.root, f"{name}.conf")
        os.makedirs(self.root, exist_ok=True)
        with open(conf, "w") as f:          # small files: tests must not fallocate gigabytes per broker
            f.write("".join(f"{k}={v}\n" for k, v in TEST_STORE_FILE_SIZES.items()))
        proc, log_path, start = self._spawn(name, [
            "broker", "-c", conf, "--namesrv-addr", self.namesrv_addr, "--listen-port", str(port), "--host", "127.0.0.1",
            "--broker-ip", "127.0.0.1", "--broker-name", name, "--store-path", store,
            "--log-file", os.path.join(self.root, f"{name}.log"), *extra])
        _wait_for_line(log_path, "boot success", proc, START_DEADLINE_S, start)
        return port

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Signal process ``name`` and wait for it; returns its exit status (SIGKILL after the deadline)."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_DEADLINE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        for name in [n for n in self.procs if n != "namesrv"] + (["namesrv"] if "namesrv" in self.procs else []):
            self.stop(name)

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
