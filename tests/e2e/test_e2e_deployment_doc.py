"""docs/deployment.md works when followed: its example files load, and the cluster they describe starts.

The example files are started exactly as the document says (``rmq nameserver -c FILE``, ``rmq broker -c FILE``)
after rewriting what cannot be shared with other tests on this machine: ports become free ones, store and home
directories move under tmp, commitlog files shrink. The document's check script then has to find every broker
on both nameservers and get SEND_OK from every queue of a probe topic.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rmq_broker.config import BrokerConfig, BrokerRole
from rmq_common.properties_file import format_properties, load_properties
from rmq_nameserver import NamesrvConfig
from rmq_testing.processes import ProcessCluster, free_broker_port, free_port, query

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "deployment"
DOC = REPO / "docs" / "deployment.md"
NAMESERVERS = ("namesrv-a", "namesrv-b")
BROKERS = {  # file stem → (brokerName, brokerId, role), in the document's start order
    "broker-a-master": ("broker-a", 0, BrokerRole.SYNC_MASTER),
    "broker-b-master": ("broker-b", 0, BrokerRole.ASYNC_MASTER),
    "broker-a-slave": ("broker-a", 1, BrokerRole.SLAVE),
    "broker-b-slave": ("broker-b", 1, BrokerRole.SLAVE),
}
CHECK_TIMEOUT_S = 60


def test_every_example_file_loads_and_the_layout_is_consistent() -> None:
    nameservers = {stem: NamesrvConfig.load(EXAMPLES / f"{stem}.properties") for stem in NAMESERVERS}
    assert all(not cfg.extra_properties for cfg in nameservers.values()), "no unknown nameserver keys"
    namesrv_addrs = {f"127.0.0.1:{cfg.listen_port}" for cfg in nameservers.values()}
    assert len(namesrv_addrs) == 2
    assert len({cfg.kv_config_file for cfg in nameservers.values()}) == 2

    brokers = {stem: BrokerConfig.load(EXAMPLES / f"{stem}.properties") for stem in BROKERS}
    used_ports: list[int] = [cfg.listen_port for cfg in nameservers.values()]
    for stem, cfg in brokers.items():
        name, broker_id, role = BROKERS[stem]
        assert (cfg.broker_name, cfg.broker_id, cfg.broker_role) == (name, broker_id, role), stem
        assert not cfg.unknown_keys, f"{stem}: unknown keys {cfg.unknown_keys}"
        assert set(cfg.namesrv_addr_list) == namesrv_addrs, f"{stem} registers with both nameservers"
        used_ports += [cfg.vip_listen_port, cfg.listen_port, cfg.ha_listen_port]
    assert len(set(used_ports)) == len(used_ports), "no port is used twice on the one machine"
    assert len({cfg.store_path_root_dir for cfg in brokers.values()}) == len(brokers), "a store directory each"
    text = DOC.read_text()
    for stem in (*NAMESERVERS, *BROKERS):
        assert f"examples/deployment/{stem}.properties" in text, f"the document starts {stem}"


def _rewrite(stem: str, root: Path, ports: dict[str, int], namesrv_addr: str) -> Path:
    """The example file with this test's ports and directories (the only changes)."""
    props = load_properties(EXAMPLES / f"{stem}.properties")
    props["listenPort"] = str(ports[stem])
    if stem in NAMESERVERS:
        props["rmqHome"] = str(root / stem)
    else:
        props["namesrvAddr"] = namesrv_addr
        props["storePathRootDir"] = str(root / stem)
        props["mappedFileSizeCommitLog"] = str(16 * 1024 * 1024)
        props["maxHashSlotNum"], props["maxIndexNum"] = "20000", "80000"
    path = root / f"{stem}.properties"
    path.write_text(format_properties(props))
    return path


def test_the_documented_cluster_starts_from_the_example_files(tmp_path: Path) -> None:
    ports: dict[str, int] = {stem: free_port() for stem in NAMESERVERS}
    for stem in BROKERS:
        ports[stem] = free_broker_port(set(ports.values()) | {p + d for p in ports.values() for d in (-2, 1)})
    namesrv_addr = ";".join(f"127.0.0.1:{ports[stem]}" for stem in NAMESERVERS)
    with ProcessCluster(str(tmp_path / "run")) as cluster:
        for stem in NAMESERVERS:
            conf = _rewrite(stem, tmp_path, ports, namesrv_addr)
            cluster.start_command(stem, ["nameserver", "-c", str(conf)], ready_port=ports[stem])
        for stem in BROKERS:          # as the document does: masters first, then their slaves
            conf = _rewrite(stem, tmp_path, ports, namesrv_addr)
            cluster.start_command(stem, ["broker", "-c", str(conf)], ready_line="boot success")
        for stem, (_, broker_id, role) in BROKERS.items():
            code, body, _ = query(f"127.0.0.1:{ports[stem]}", 26)      # GET_BROKER_CONFIG
            assert code == 0 and body is not None
            assert f"brokerRole={role.value}" in body.decode() and f"brokerId={broker_id}" in body.decode()
        check = subprocess.run(
            [sys.executable, str(EXAMPLES / "check_cluster.py"), "-n", namesrv_addr, "--expect", "broker-a:0,1",
             "--expect", "broker-b:0,1", "--send", "DeploymentCheck", "--wait", "20"],
            capture_output=True, text=True, timeout=CHECK_TIMEOUT_S, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert check.returncode == 0, check.stdout + check.stderr
        for ns in namesrv_addr.split(";"):
            assert f"nameserver {ns}:" in check.stdout
        assert check.stdout.count("SEND_OK") == 4, check.stdout         # 2 queues on each of the 2 masters
        assert "MISSING" not in check.stdout

