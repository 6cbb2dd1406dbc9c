"""The real C++ RocketMQ client gets its routes from the ``rmq nameserver`` daemon.

Nobody here wrote rocketmq-client-cpp (PyPI ``rocketmq``, installed by the Makefile): if it can find a
broker through our nameserver, a RocketMQ user's producer can. The daemon runs as a child process, a
broker entry is registered over the wire with REGISTER_BROKER (the registering connection stays open:
closing it would drop the broker at once), and the broker address points at a listener owned by the
test. The only way the client can learn that address is by parsing our TopicRouteData, so a
SEND_MESSAGE arriving there for the right topic proves the route was served and understood. The
listener only records what arrives; the broker proper is issue 4's.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import trio

from rmq_common._record import masked_crc
from rmq_remoting import FrameDecoder, RemotingClient, RemotingCommand, RequestCode, ResponseCode
from rmq_remoting.headers import RegisterBrokerRequestHeader

import rocketmq.client  # noqa: F401,E402 - the real client, installed by `make test` (pyproject dev extras)

PRODUCER = Path(__file__).with_name("cpp_producer.py")
DEADLINE_S = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def nameserver(tmp_path):
    """``rmq nameserver`` as a daemon on a free port, with its home in tmp_path; stopped by SIGTERM."""
    port = _free_port()
    env = {**os.environ, "HOME": str(tmp_path), "ROCKETMQ_HOME": str(tmp_path)}
    log = open(tmp_path / "namesrv.out", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "rmq_cli", "nameserver", "--listen-port", str(port),
                             "--host", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"nameserver did not start: {(tmp_path / 'namesrv.out').read_text()}")
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _register_broker_request(broker_addr: str, topics: list[str]) -> RemotingCommand:
    table = {t: {"order": False, "perm": 6, "readQueueNums": 4, "topicFilterType": "SINGLE_TAG",
                 "topicName": t, "topicSysFlag": 0, "writeQueueNums": 4} for t in topics}
    body = orjson.dumps({"filterServerList": [], "topicConfigSerializeWrapper": {
        "dataVersion": {"counter": 1, "timestamp": int(time.time() * 1000)}, "topicConfigTable": table}})
    header = RegisterBrokerRequestHeader(broker_name="broker-e2e", broker_addr=broker_addr,
                                         cluster_name="DefaultCluster", ha_server_addr="127.0.0.1:10912",
                                         broker_id=0, body_crc32=masked_crc(body))
    return RemotingCommand.request(RequestCode.REGISTER_BROKER, header.to_ext(), body)


async def _first_send_at_broker(listener: trio.SocketListener, topic: str) -> dict[str, str]:
    """Accept the client's broker connection and return the extFields of its first send for ``topic``."""
    while True:
        stream = await listener.accept()
        decoder = FrameDecoder()
        async with stream:
            while data := await stream.receive_some(65536):
                for header, ser, body in decoder.feed(data):
                    cmd = RemotingCommand.from_frame(header, ser, body)
                    if cmd.code in (RequestCode.SEND_MESSAGE, RequestCode.SEND_MESSAGE_V2) and \
                            topic in (cmd.ext_fields.get("topic"), cmd.ext_fields.get("b")):
                        return cmd.ext_fields


def _route_test(namesrv: str, tmp_path: Path, registered: list[str], send_topic: str) -> tuple[dict, str]:
    async def main():
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        broker_addr = f"127.0.0.1:{listener.socket.getsockname()[1]}"
        async with RemotingClient() as client:
            resp = await client.invoke(namesrv, _register_broker_request(broker_addr, registered))
            assert resp.code == ResponseCode.SUCCESS, resp
            out: dict = {}
            async with trio.open_nursery() as nursery:
                async def producer():
                    env = {**os.environ, "HOME": str(tmp_path)}     # the C++ client logs under $HOME
                    result = await trio.run_process(
                        [sys.executable, str(PRODUCER), "--namesrv", namesrv, "--topic", send_topic],
                        env=env, capture_stdout=True, capture_stderr=True, check=False)
                    out["producer"] = (result.stdout + result.stderr).decode(errors="replace")
                nursery.start_soon(producer)
                with trio.fail_after(DEADLINE_S):
                    out["ext"] = await _first_send_at_broker(listener, send_topic)
                nursery.cancel_scope.cancel()          # kills the producer, which waits for a reply
            await listener.aclose()
            return out["ext"], out.get("producer", "")
    return trio.run(main)


def test_cpp_producer_finds_the_broker_through_our_route(nameserver, tmp_path):
    ext, _ = _route_test(nameserver, tmp_path, ["TBW102", "E2E_Routed"], "E2E_Routed")
    assert ext.get("topic", ext.get("b")) == "E2E_Routed"
    assert ext.get("producerGroup", ext.get("a", "")).startswith("PG_e2e_")


def test_cpp_producer_falls_back_to_the_default_topic_route(nameserver, tmp_path):
    # The topic is unknown (TOPIC_NOT_EXIST): the client asks for TBW102 and sends there to auto-create.
    ext, _ = _route_test(nameserver, tmp_path, ["TBW102"], "E2E_NotYetCreated")
    assert ext.get("defaultTopic", ext.get("c")) == "TBW102"
