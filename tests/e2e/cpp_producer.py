"""Drive the real RocketMQ C++ client (PyPI ``rocketmq``, Apache rocketmq-client-cpp) to send messages.

Run as a child process by the e2e tests (the C++ library starts its own threads and may hang on
shutdown, so it never runs inside the pytest process):

    python cpp_producer.py --namesrv 127.0.0.1:9876 --topic T --n 1 [--timeout-ms 3000]

For each message it prints one line: ``sent <status> <msgId> <offset>`` or ``error <exception>``.
The exit status is 0 when every send returned SEND_OK.
"""
from __future__ import annotations

import argparse
import os
import sys


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namesrv", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default=f"PG_e2e_{os.getpid()}")
    parser.add_argument("--n", type=int, default=1)
    parser.add_argument("--timeout-ms", type=int, default=3000)
    args = parser.parse_args()

    from rocketmq.client import Message, Producer, SendStatus

    producer = Producer(args.group, timeout=args.timeout_ms)
    producer.set_namesrv_addr(args.namesrv)
    producer.start()
    ok = True
    try:
        for i in range(args.n):
            msg = Message(args.topic)
            msg.set_keys(f"key-{i}")
            msg.set_tags("TagA")
            msg.set_body(f"body-{i}")
            try:
                result = producer.send_sync(msg)
            except Exception as exc:         # the wrapper raises its own exception types
                print(f"error {type(exc).__name__}: {exc}", flush=True)
                ok = False
                continue
            print(f"sent {result.status.name} {result.msg_id} {result.offset}", flush=True)
            ok = ok and result.status == SendStatus.OK
    finally:
        producer.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
