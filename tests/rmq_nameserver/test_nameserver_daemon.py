"""``rmq nameserver`` as a real process: config file, ready line, a query, SIGTERM, exit status and log file."""
from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from rmq_remoting import RemotingClient, RemotingCommand, RequestCode, ResponseCode

REPO = Path(__file__).resolve().parents[2]
READY = "The Name Server boot success. serializeType=JSON, listening on "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(REPO))
    env.pop("RMQ_HOME", None)
    return env


def read_line_until(proc: subprocess.Popen, prefix: str, deadline_s: float) -> str:
    """The first stdout line starting with ``prefix``, waiting at most ``deadline_s``; fails on exit or timeout."""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    end = time.monotonic() + deadline_s
    buffered = b""
    try:
        while True:
            while b"\n" in buffered:
                line, buffered = buffered.split(b"\n", 1)
                if line.decode().startswith(prefix):
                    return line.decode()
            left = end - time.monotonic()
            assert left > 0, f"no {prefix!r} line within {deadline_s} s"
            if sel.select(left):
                chunk = os.read(proc.stdout.fileno(), 4096)
                assert chunk, f"the process ended (status {proc.wait()}) before printing {prefix!r}"
                buffered += chunk
    finally:
        sel.close()


def test_daemon_serves_until_sigterm(tmp_path):
    port = free_port()
    conf = tmp_path / "namesrv.properties"
    conf.write_text(f"# as for mqnamesrv -c\nlistenPort={port}\nbindAddress=127.0.0.1\norderMessageEnable=true\n"
                    "serverWorkerThreads=8\n")
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "rmq_cli", "nameserver", "-c", str(conf)],
                                cwd=REPO, env=env_for(tmp_path), stdout=subprocess.PIPE, stderr=stderr)
    try:
        ready = read_line_until(proc, READY, 30)
        assert ready == f"{READY}127.0.0.1:{port}"
        addr = f"127.0.0.1:{port}"

        async def query() -> None:
            with trio.fail_after(15):
                await ask()

        async def ask() -> None:
            async with RemotingClient() as client:
                put = RemotingCommand.request(RequestCode.PUT_KV_CONFIG,
                                              {"namespace": "ORDER_TOPIC_CONFIG", "key": "T", "value": "broker-a:4"})
                assert (await client.invoke(addr, put, 5000)).code == ResponseCode.SUCCESS
                missing = await client.invoke(addr, RemotingCommand.request(105, {"topic": "T"}), 5000)
                assert missing.code == ResponseCode.TOPIC_NOT_EXIST
                config = await client.invoke(addr, RemotingCommand.request(RequestCode.GET_NAMESRV_CONFIG), 5000)
                text = bytes(config.body).decode()
                assert f"listenPort={port}\n" in text and "orderMessageEnable=true\n" in text
                assert "serverWorkerThreads=8\n" in text                     # kept, as RocketMQ does
        trio.run(query)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    log_file = tmp_path / "rmq" / "logs" / "namesrv.log"
    log = log_file.read_text()
    assert "boot success" in log and "received SIGTERM: shutting down" in log
    assert "boot success" in stderr_path.read_text()                       # logs go to stderr too
    kv = tmp_path / "rmq" / "namesrv" / "kvConfig.json"
    assert '"T":"broker-a:4"' in kv.read_text()


def test_print_config_and_bad_config(tmp_path):
    env = env_for(tmp_path)
    conf = tmp_path / "namesrv.properties"
    conf.write_text("listenPort=10000\nmadeUpKey=1\n")
    run = [sys.executable, "-m", "rmq_cli", "nameserver"]
    printed = subprocess.run(run + ["-c", str(conf), "-p", "--listen-port", "10001"], check=False, cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert "listenPort=10001" in lines and "madeUpKey=1" in lines
    assert f"configStorePath={conf}" in lines                                # updates persist to the -c file
    assert f"kvConfigPath={tmp_path}/rmq/namesrv/kvConfig.json" in lines
    assert "unknown key madeUpKey=1" in printed.stderr

    conf.write_text("listenPort=soon\n")
    bad = subprocess.run(run + ["-c", str(conf)], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "listenPort must be an integer" in bad.stderr

    corrupt = tmp_path / "rmq" / "namesrv" / "kvConfig.json"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_text("{broken")
    failed = subprocess.run(run + ["--listen-port", "0", "--host", "127.0.0.1"], check=False, cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and "is corrupt" in failed.stderr and "boot success" not in failed.stdout
