"""Check a running cluster: what every nameserver lists, and a probe message through each broker group.

    python examples/deployment/check_cluster.py                       # the example's nameservers
    python examples/deployment/check_cluster.py -n "host:port;host:port" --expect broker-a:0,1 --expect broker-b:0,1

For each nameserver it prints the broker groups it knows (brokerId 0 = master, others slaves) and, with
``--expect``, fails unless the listed brokerIds of a group are registered on every nameserver. ``--send TOPIC``
then creates TOPIC (2 queues per master), sends one message to each of its queues and prints each result:
SEND_OK, or FLUSH_SLAVE_TIMEOUT / SLAVE_NOT_AVAILABLE from a SYNC_MASTER whose slave did not confirm it.
Exit status 0 when everything held.
"""
from __future__ import annotations

import argparse
import sys
import time

from rmq_client import make_message
from rmq_client.blocking import Admin, Producer

EXAMPLE_NAMESRV_ADDR = "127.0.0.1:9876;127.0.0.1:9877"


def expectation(text: str) -> tuple[str, set[int]]:
    name, _, ids = text.partition(":")
    try:
        return name, {int(i) for i in ids.split(",") if i}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NAME:ID,ID... got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namesrv-addr", default=EXAMPLE_NAMESRV_ADDR)
    parser.add_argument("--expect", type=expectation, action="append", default=[], metavar="NAME:IDS",
                        help="a broker group and the brokerIds that must be registered, e.g. broker-a:0,1")
    parser.add_argument("--send", metavar="TOPIC", help="send a probe message to every queue of TOPIC")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="retry a send that is not SEND_OK for up to this long (a SYNC_MASTER answers "
                             "SLAVE_NOT_AVAILABLE until its slave has connected)")
    args = parser.parse_args(argv)

    ok = True
    for addr in [a.strip() for a in args.namesrv_addr.split(";") if a.strip()]:
        with Admin(addr) as admin:
            try:
                table = admin.cluster_info().broker_addr_table
            except Exception as exc:        # one dead nameserver is worth reporting, not a traceback
                print(f"nameserver {addr}: unreachable ({type(exc).__name__}: {exc})")
                ok = False
                continue
        print(f"nameserver {addr}:")
        for name in sorted(table):
            members = ", ".join(f"{'master' if broker_id == 0 else f'slave {broker_id}'} {broker_addr}"
                                for broker_id, broker_addr in sorted(table[name].broker_addrs.items()))
            print(f"  {name}: {members}")
        for name, ids in args.expect:
            registered = set(table[name].broker_addrs) if name in table else set()
            if not ids <= registered:
                print(f"  MISSING {name} brokerId(s) {sorted(ids - registered)}")
                ok = False

    if args.send and ok:
        with Admin(args.namesrv_addr) as admin:         # on every master; nothing changes if it exists already
            admin.create_topic(args.send, queue_nums=2)
        with Producer("check_cluster", namesrv_addr=args.namesrv_addr) as producer:
            deadline = time.monotonic() + args.wait
            for queue in producer.publish_queues(args.send):
                while True:
                    result = producer.send(make_message(args.send, b"probe from check_cluster.py"), queue=queue)
                    if result.status.name == "SEND_OK" or time.monotonic() >= deadline:
                        break
                    time.sleep(0.2)
                print(f"send to {queue.broker_name} queue {queue.queue_id}: {result.status.name} "
                      f"(offset {result.queue_offset})")
                ok = ok and result.status.name == "SEND_OK"
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
