"""rmq_testing: test fixtures for code that uses rmq — a public product, documented in docs/testing.md.

    from rmq_testing import embedded_cluster

    async with embedded_cluster(tmp_path) as cluster:      # nameserver + broker on free loopback ports
        cluster.namesrv_addr                                # "127.0.0.1:PORT" for clients

``embedded_cluster`` runs everything inside the current trio run (real sockets, real store files);
``ProcessCluster`` starts ``rmq nameserver`` and ``rmq broker`` as child processes; ``FaultProxy`` (trio) and
``ThreadedFaultProxy`` (plain code) sit between two of them and throttle, delay, stall or cut the link.
"""
from rmq_testing.cluster import Cluster, embedded_cluster, test_broker_config, wait_replicated
from rmq_testing.processes import ProcessCluster
from rmq_testing.proxy import Direction, FaultProxy, ThreadedFaultProxy

__all__ = ["Cluster", "embedded_cluster", "test_broker_config", "wait_replicated", "ProcessCluster", "Direction",
           "FaultProxy", "ThreadedFaultProxy"]
