"""``rmq nameserver`` and ``rmq broker`` as child processes: what a deployment runs, for tests that must kill
a process (SIGTERM or SIGKILL) and start it again on the same store and ports.

    with ProcessCluster(str(tmp_path)) as cluster:
        cluster.start_nameservers(2)
        cluster.start_group("broker-a", role="SYNC_MASTER", slaves=1)     # processes broker-a, broker-a-s1
        cluster.wait_registered()                                         # every broker on every nameserver
        cluster.kill("broker-a")                                          # SIGKILL
        cluster.restart("broker-a")                                       # same store, ports and properties

Every process logs to ``<root>/<name>.out`` (appended across restarts) and is always ended: ``close()`` (or
leaving the ``with``) stops the brokers (SIGTERM, SIGKILL after a deadline) and then the nameservers, and an
``atexit`` hook kills whatever a crashed test left behind. All waits have deadlines and fail with the tail of
the process's log.
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BrokerSpec", "ProcessCluster", "free_broker_port", "free_port", "query"]

START_DEADLINE_S = 30.0
STOP_DEADLINE_S = 15.0
REGISTER_DEADLINE_S = 30.0
#: Timeout of one admin request (cluster info, broker config) to a nameserver or broker.
QUERY_TIMEOUT_S = 5.0
#: File sizes of test brokers (RocketMQ keys): 16 MiB commitlog files, small consume-queue and index files.
TEST_STORE_FILE_SIZES = {
    "mappedFileSizeCommitLog": 16 * 1024 * 1024,
    "mappedFileSizeConsumeQueue": 30_000 * 20,
    "maxHashSlotNum": 20_000,
    "maxIndexNum": 80_000,
}
#: Request codes and the response code used by the helpers (PROTOCOL.md, RequestCode / ResponseCode).
_GET_BROKER_CONFIG = 26
_GET_BROKER_CLUSTER_INFO = 106
_SUCCESS = 0
#: A broker uses listenPort - 2 (VIP channel), listenPort and listenPort + 1 (HA).
_BROKER_PORT_OFFSETS = (-2, 0, 1)


def free_port() -> int:
    """A TCP port free on loopback right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_broker_port(avoid: Iterable[int] = ()) -> int:
    """A port p with p-2 (VIP), p and p+1 (HA) all free on loopback now and none of them in ``avoid``."""
    avoided = set(avoid)
    for _ in range(200):
        port = free_port()
        wanted = [port + offset for offset in _BROKER_PORT_OFFSETS]
        if any(p in avoided or not 1024 <= p <= 65535 for p in wanted):
            continue
        holders: list[socket.socket] = []
        try:
            for p in wanted:                    # hold them all at once: each must be free at the same time
                s = socket.socket()
                holders.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in holders:
                s.close()
    raise RuntimeError("found no free broker port triple (VIP, main, HA) on loopback")


def _log_tail(log_path: str, nbytes: int = 4000) -> str:
    try:
        with open(log_path, errors="replace") as f:
            return f.read()[-nbytes:]
    except OSError as exc:
        return f"(no log: {exc})"


def _wait_listening(proc: subprocess.Popen, port: int, log_path: str, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}:\n"
                               + _log_tail(log_path))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listening on {port} after {deadline_s} s:\n"
                                   + _log_tail(log_path)) from None
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
            raise RuntimeError(f"process exited with {proc.returncode} before printing {needle!r}:\n"
                               + _log_tail(log_path))
        time.sleep(0.05)
    raise RuntimeError(f"{needle!r} not seen in {log_path} after {deadline_s} s:\n" + _log_tail(log_path))


def query(addr: str, code: int, ext_fields: Mapping[str, str] | None = None,
          timeout_s: float = QUERY_TIMEOUT_S) -> tuple[int, bytes | None, str | None]:
    """One blocking request to ``host:port`` on a fresh connection: (response code, body, remark).

    Blocking on purpose: the helpers are called from plain tests and, through ``trio.to_thread``, from trio ones.
    """
    from rmq_remoting import RemotingCommand

    host, _, port = addr.rpartition(":")
    request = RemotingCommand.request(code, dict(ext_fields or {}))
    with socket.create_connection((host, int(port)), timeout=timeout_s) as sock:
        sock.sendall(request.encode())
        length_word = _recv_exactly(sock, 4)
        (length,) = struct.unpack(">i", length_word)
        response = RemotingCommand.decode(length_word + _recv_exactly(sock, length))
    body = None if response.body is None else bytes(response.body)
    return response.code, body, response.remark


def _recv_exactly(sock: socket.socket, nbytes: int) -> bytes:
    data = bytearray()
    while len(data) < nbytes:
        chunk = sock.recv(nbytes - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {nbytes} bytes")
        data += chunk
    return bytes(data)


@dataclass
class BrokerSpec:
    """How to (re)start one broker process: restarts reuse all of it, so store and ports stay the same."""

    #: Process name: its log is ``<root>/<name>.out``, its store ``<root>/<name>``.
    name: str
    broker_name: str
    broker_id: int
    port: int
    #: broker.conf keys (RocketMQ names) on top of the small test file sizes.
    properties: dict[str, str] = field(default_factory=dict)
    #: Extra ``rmq broker`` flags.
    flags: tuple[str, ...] = ()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ha_addr(self) -> str:
        """Where this broker serves HA when it is a master: listenPort + 1."""
        return f"127.0.0.1:{self.port + 1}"

    @property
    def role(self) -> str:
        return self.properties.get("brokerRole", "SLAVE" if self.broker_id else "ASYNC_MASTER")


_live_clusters: weakref.WeakSet[ProcessCluster] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: a test that crashed before ``close()`` must not leave brokers running after pytest exits."""
    for cluster in list(_live_clusters):
        for proc in cluster.procs.values():
            if proc.poll() is None:
                proc.kill()


@dataclass(eq=False)      # identity semantics: clusters are tracked in a WeakSet
class ProcessCluster:
    """Nameservers and brokers as child processes of this one, on free loopback ports."""

    root: str
    #: Port of the first nameserver (0 = pick a free one when it starts).
    namesrv_port: int = 0
    #: Running processes by name.
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    #: Every broker ever started here, by process name, and its port.
    broker_ports: dict[str, int] = field(default_factory=dict)
    brokers: dict[str, BrokerSpec] = field(default_factory=dict)
    #: Every nameserver ever started here, in start order, and its port.
    namesrv_ports: dict[str, int] = field(default_factory=dict)
    #: Processes ``close()`` stops after the brokers (nameservers), so brokers can still unregister from them.
    _stop_last: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        _live_clusters.add(self)

    # -- addresses ---------------------------------------------------------------------------------------------

    @property
    def namesrv_addr(self) -> str:
        """Every nameserver of the cluster (running or not), ``;``-separated, as brokers and clients take it."""
        if not self.namesrv_ports:
            return f"127.0.0.1:{self.namesrv_port}"
        return ";".join(f"127.0.0.1:{port}" for port in self.namesrv_ports.values())

    def namesrv_addr_of(self, name: str) -> str:
        return f"127.0.0.1:{self.namesrv_ports[name]}"

    def broker_addr(self, name: str) -> str:
        return self.brokers[name].addr

    def ha_addr(self, name: str) -> str:
        """The HA address of master ``name`` (listenPort + 1): what a slave's haMasterAddress points at."""
        return self.brokers[name].ha_addr

    def is_running(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def _reserved_ports(self) -> set[int]:
        ports = set(self.namesrv_ports.values())
        for spec in self.brokers.values():
            ports.update(spec.port + offset for offset in _BROKER_PORT_OFFSETS)
        return ports

    # -- starting ----------------------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> tuple[subprocess.Popen, str, int]:
        """Start ``rmq_cli args``; returns the process, its log and where this run's output starts in it."""
        if self.is_running(name):
            raise RuntimeError(f"{name} is running already")
        os.makedirs(self.root, exist_ok=True)
        log_path = os.path.join(self.root, f"{name}.out")
        with open(log_path, "ab") as log:          # appended: a restarted process keeps the earlier runs' output
            start = log.tell()
            env = {**os.environ, "RMQ_HOME": os.path.join(self.root, "home"), "PYTHONUNBUFFERED": "1"}
            proc = subprocess.Popen([sys.executable, "-m", "rmq_cli", *args], stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        self.procs[name] = proc
        return proc, log_path, start

    def start_command(self, name: str, args: list[str], *, ready_line: str | None = None,
                      ready_port: int | None = None) -> subprocess.Popen:
        """Run ``rmq <args>`` as managed process ``name`` (ended by ``stop``/``close`` like the others) and wait
        until its output shows ``ready_line`` and/or ``ready_port`` accepts connections.

        For commands this class does not build itself, e.g. ``["broker", "-c", "broker-a.properties"]`` exactly
        as an operator types it. ``restart`` does not know such a process; start it again with this method.
        """
        proc, log_path, start = self._spawn(name, list(args))
        if args and args[0] == "nameserver":
            self._stop_last.add(name)
        try:
            if ready_port is not None:
                _wait_listening(proc, ready_port, log_path, START_DEADLINE_S)
            if ready_line is not None:
                _wait_for_line(log_path, ready_line, proc, START_DEADLINE_S, start)
        except RuntimeError:
            self.stop(name, signal.SIGKILL)
            raise
        return proc

    def start_nameserver(self, name: str | None = None) -> str:
        """Start (or restart, on the same port) a nameserver; returns the cluster's ``namesrv_addr``.

        The first is called ``namesrv``, later ones ``namesrv-1``, ``namesrv-2``, ...
        """
        if name is None:
            name = "namesrv" if not self.namesrv_ports else f"namesrv-{len(self.namesrv_ports)}"
        port = self.namesrv_ports.get(name)
        if port is None:
            port = self.namesrv_port if not self.namesrv_ports and self.namesrv_port else free_port()
            self.namesrv_ports[name] = port
        if not self.namesrv_port:
            self.namesrv_port = port
        proc, log_path, _ = self._spawn(name, [
            "nameserver", "--listen-port", str(port), "--host", "127.0.0.1",
            "--rmq-home", os.path.join(self.root, name), "--log-file", os.path.join(self.root, f"{name}.log")])
        self._stop_last.add(name)
        _wait_listening(proc, port, log_path, START_DEADLINE_S)
        return self.namesrv_addr

    def start_nameservers(self, count: int) -> str:
        """Start ``count`` more nameservers (start them before the brokers: a broker registers with those it is
        given at start); returns ``namesrv_addr``."""
        assert count > 0
        for _ in range(count):
            self.start_nameserver()
        return self.namesrv_addr

    def start_broker(self, name: str = "broker-a", *extra: str, broker_name: str | None = None,
                     broker_id: int | None = None, properties: Mapping[str, Any] | None = None) -> int:
        """Start (or restart, on the same store and port) broker process ``name``; returns its port once it has
        printed "boot success" (it registered with the nameservers).

        ``extra`` are ``rmq broker`` flags; ``properties`` broker.conf keys (brokerRole, slaveReadEnable,
        haMasterAddress, ...). On a restart, what is not given again is taken from the first start.
        """
        spec = self._broker_spec(name, extra, broker_name, broker_id, properties)
        self._wait_booted(spec.name, *self._spawn_broker(spec))
        return spec.port

    def start_group(self, broker_name: str, *, role: str = "ASYNC_MASTER", slaves: int = 1,
                    properties: Mapping[str, Any] | None = None,
                    master_properties: Mapping[str, Any] | None = None,
                    slave_properties: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None) -> list[str]:
        """Start a master (process ``broker_name``, brokerId 0, ``role``), then ``slaves`` slaves at once (processes
        ``<broker_name>-s1``, ... with brokerId 1, ... and brokerRole SLAVE); returns their names.

        ``properties`` go to every member; ``slave_properties`` (one mapping for all, or one per slave) to the
        slaves, e.g. ``{"haMasterAddress": proxy.address}``.
        """
        assert role in ("ASYNC_MASTER", "SYNC_MASTER"), role
        common = dict(properties or {})
        per_slave: list[Mapping[str, Any]]
        if slave_properties is None or isinstance(slave_properties, Mapping):
            per_slave = [slave_properties or {}] * slaves
        else:
            per_slave = list(slave_properties)
            assert len(per_slave) == slaves, "one slave_properties mapping per slave"
        specs = [self._broker_spec(broker_name, (), broker_name, 0,
                                   {**common, "brokerRole": role, **dict(master_properties or {})})]
        for i in range(1, slaves + 1):
            specs.append(self._broker_spec(f"{broker_name}-s{i}", (), broker_name, i,
                                           {**common, "brokerRole": "SLAVE", **dict(per_slave[i - 1])}))
        # The master first: a slave learns its master's HA address from the reply to its registration, and one
        # registered before its master would wait for its next registration (every 30 s) to start replicating.
        self._start_all(specs[:1])
        self._start_all(specs[1:])
        return [spec.name for spec in specs]

    def _broker_spec(self, name: str, extra: tuple[str, ...], broker_name: str | None, broker_id: int | None,
                     properties: Mapping[str, Any] | None) -> BrokerSpec:
        spec = self.brokers.get(name)
        if spec is None:
            spec = BrokerSpec(name=name, broker_name=broker_name or name, broker_id=broker_id or 0,
                              port=self.broker_ports.get(name) or free_broker_port(self._reserved_ports()))
            self.brokers[name] = spec
            self.broker_ports[name] = spec.port
        else:
            if broker_name is not None:
                spec.broker_name = broker_name
            if broker_id is not None:
                spec.broker_id = broker_id
        if properties is not None:
            spec.properties = {k: str(v) for k, v in properties.items()}
        if extra:
            spec.flags = tuple(extra)
        return spec

    def _spawn_broker(self, spec: BrokerSpec) -> tuple[subprocess.Popen, str, int]:
        conf = os.path.join(self.root, f"{spec.name}.conf")
        os.makedirs(self.root, exist_ok=True)
        props = {**TEST_STORE_FILE_SIZES, "brokerName": spec.broker_name, "brokerId": spec.broker_id,
                 "brokerRole": spec.role, **spec.properties}
        with open(conf, "w") as f:          # small files: tests must not fallocate gigabytes per broker
            f.write("".join(f"{k}={v}\n" for k, v in props.items()))
        return self._spawn(spec.name, [
            "broker", "-c", conf, "--namesrv-addr", self.namesrv_addr, "--listen-port", str(spec.port),
            "--host", "127.0.0.1", "--broker-ip", "127.0.0.1", "--store-path", os.path.join(self.root, spec.name),
            "--log-file", os.path.join(self.root, f"{spec.name}.log"), *spec.flags])

    def _wait_booted(self, name: str, proc: subprocess.Popen, log_path: str, start: int) -> None:
        try:
            _wait_for_line(log_path, "boot success", proc, START_DEADLINE_S, start)
        except RuntimeError:
            self.stop(name, signal.SIGKILL)
            raise

    def _start_all(self, specs: list[BrokerSpec]) -> None:
        """Spawn every broker first and then wait for each: starts overlap (interpreter start-up dominates)."""
        spawned = [(spec.name, *self._spawn_broker(spec)) for spec in specs]
        for name, proc, log_path, start in spawned:
            self._wait_booted(name, proc, log_path, start)

    # -- stopping and restarting ---------------------------------------------------------------------------------

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Signal process ``name`` and wait for it; returns its exit status (SIGKILL after the deadline)."""
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
        return self._reap(proc)

    @staticmethod
    def _reap(proc: subprocess.Popen) -> int:
        try:
            proc.wait(STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return proc.returncode

    def kill(self, name: str) -> int:
        """``kill -9``: no unregistering, no flush beyond what the OS already has (returns -9)."""
        return self.stop(name, signal.SIGKILL)

    def terminate(self, name: str) -> int:
        """SIGTERM: a clean shutdown (returns 0)."""
        return self.stop(name, signal.SIGTERM)

    def restart(self, name: str, sig: int | None = None) -> str:
        """Start process ``name`` again with its ports, store and settings, stopping it first with ``sig``
        (SIGTERM by default) if it still runs; returns its address."""
        if self.is_running(name):
            self.stop(name, signal.SIGTERM if sig is None else sig)
        else:
            self.procs.pop(name, None)
        if name in self.namesrv_ports:
            self.start_nameserver(name)
            return self.namesrv_addr_of(name)
        self.start_broker(name)
        return self.broker_addr(name)

    def close(self) -> None:
        """Stop every broker (all signalled at once, then reaped), then every nameserver."""
        late = self._stop_last
        brokers = [n for n in self.procs if n not in late]
        nameservers = [n for n in self.procs if n in late]
        for names in (brokers, nameservers):
            procs = [self.procs.pop(n) for n in names]
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                self._reap(proc)

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- what the nameservers and brokers say ----------------------------------------------------------------------

    def cluster_info(self, namesrv: str | None = None) -> dict[str, dict[int, str]]:
        """GET_BROKER_CLUSTER_INFO of one nameserver (a name or ``host:port``; default the first):
        broker name → {brokerId: address}."""
        from rmq_nameserver.bodies import ClusterInfo

        addr = self._namesrv_address(namesrv)
        code, body, remark = query(addr, _GET_BROKER_CLUSTER_INFO)
        if code != _SUCCESS or body is None:
            raise RuntimeError(f"{addr} answered GET_BROKER_CLUSTER_INFO with code {code}: {remark}")
        table = ClusterInfo.decode(body).broker_addr_table
        return {name: dict(data.broker_addrs) for name, data in table.items()}

    def broker_config(self, name: str) -> dict[str, str]:
        """GET_BROKER_CONFIG of broker process ``name``: its effective settings (brokerRole, brokerId, ...)."""
        from rmq_common.properties_file import parse_properties

        code, body, remark = query(self.broker_addr(name), _GET_BROKER_CONFIG)
        if code != _SUCCESS or body is None:
            raise RuntimeError(f"{name} answered GET_BROKER_CONFIG with code {code}: {remark}")
        return parse_properties(body.decode("utf-8"), f"GET_BROKER_CONFIG of {name}")

    def _namesrv_address(self, namesrv: str | None) -> str:
        if namesrv is None:
            return self.namesrv_addr.split(";")[0]
        if namesrv in self.namesrv_ports:
            return self.namesrv_addr_of(namesrv)
        return namesrv

    def _running_nameservers(self) -> list[str]:
        return [n for n in self.namesrv_ports if self.is_running(n)]

    def wait_registered(self, names: Iterable[str] | None = None, *, nameservers: Iterable[str] | None = None,
                        timeout_s: float = REGISTER_DEADLINE_S) -> None:
        """Wait until every broker in ``names`` (default: every running one) is listed under its brokerName and
        brokerId with its address by every nameserver in ``nameservers`` (default: every running one)."""
        wanted = [self.brokers[n] for n in (names if names is not None else
                                            [n for n in self.brokers if self.is_running(n)])]
        servers = list(nameservers) if nameservers is not None else self._running_nameservers()

        def missing() -> list[str]:
            out = []
            for ns in servers:
                try:
                    table = self.cluster_info(ns)
                except (OSError, RuntimeError) as exc:
                    out.append(f"{ns}: {exc}")
                    continue
                out += [f"{spec.name} on {ns}" for spec in wanted
                        if table.get(spec.broker_name, {}).get(spec.broker_id) != spec.addr]
            return out

        self._wait(missing, timeout_s, "not registered")

    def wait_unregistered(self, name: str, *, nameservers: Iterable[str] | None = None,
                          timeout_s: float = REGISTER_DEADLINE_S) -> None:
        """Wait until no nameserver in ``nameservers`` (default: every running one) lists broker ``name``."""
        spec = self.brokers[name]
        servers = list(nameservers) if nameservers is not None else self._running_nameservers()

        def still_there() -> list[str]:
            return [ns for ns in servers
                    if self.cluster_info(ns).get(spec.broker_name, {}).get(spec.broker_id) == spec.addr]

        self._wait(still_there, timeout_s, f"{name} still registered on")

    @staticmethod
    def _wait(problems: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            left = problems()
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"after {timeout_s:g} s, {what}: {', '.join(left)}")
            time.sleep(0.1)
