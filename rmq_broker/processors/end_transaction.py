"""END_TRANSACTION (37): a producer commits or rolls back a half message (PROTOCOL.md §9.5).

Java ``EndTransactionProcessor``: a slave answers SLAVE_NOT_AVAILABLE; ``commitOrRollback`` NOT (0, "unknown", the
producer does not know yet) or any other value gets no answer at all; COMMIT (8) and ROLLBACK (12) go to the
transaction service, which checks the half at ``commitLogOffset`` (exists, is a half message, PGROUP equals
``producerGroup``, queue offset equals ``tranStateTableOffset`` — SYSTEM_ERROR with RocketMQ's remarks otherwise),
delivers a commit and records the op. A transaction already committed or rolled back is answered SUCCESS (with a
remark) and nothing is delivered again. Java clients send this request oneway, so the answer is mostly for tools.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rmq_common import sysflag
from rmq_remoting import RemotingCommand, RequestCode, ResponseCode
from rmq_remoting.headers import EndTransactionRequestHeader

if TYPE_CHECKING:
    from rmq_broker.broker import Broker
    from rmq_remoting import Connection

__all__ = ["EndTransactionProcessor"]

log = logging.getLogger("rmq_broker.transaction")

_KINDS = {sysflag.TRANSACTION_COMMIT_TYPE: "commit", sysflag.TRANSACTION_ROLLBACK_TYPE: "rollback"}


class EndTransactionProcessor:
    CODES = (RequestCode.END_TRANSACTION,)

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def handlers(self) -> dict[int, Any]:
        return {RequestCode.END_TRANSACTION: self.handle}

    async def handle(self, conn: Connection, cmd: RemotingCommand) -> RemotingCommand | None:
        header = EndTransactionRequestHeader.decode(cmd.ext_fields)     # RemotingCommandError → SYSTEM_ERROR
        if not self.broker.is_master:
            log.warning("END_TRANSACTION from %s refused: this broker is a slave", conn.remote_addr)
            return cmd.create_response(ResponseCode.SLAVE_NOT_AVAILABLE,
                                       "Message store is slave mode, so end transaction is forbidden.")
        kind = _KINDS.get(header.commit_or_rollback)
        source = "check answer" if header.from_transaction_check else "producer"
        if kind is None:
            # RocketMQ returns null: no response, even to a two-way request.
            log.info("transaction: %s %s left %s (half %d) pending (commitOrRollback=%d)", source, conn.remote_addr,
                     header.msg_id, header.tran_state_table_offset, header.commit_or_rollback)
            return None
        result, code, remark = self.broker.transactions.end_transaction(header)
        log.debug("transaction: %s %s: %s of %s (half %d) → %s %s", source, conn.remote_addr, kind, header.msg_id,
                  header.tran_state_table_offset, result.value, remark or "")
        return cmd.create_response(code, remark)
