"""StoreCheckpoint: the 4 KiB ``checkpoint`` file (PROTOCOL.md §6.5).

    0  int64 physicMsgTimestamp   store time of the last record whose bytes are flushed
    8  int64 logicsMsgTimestamp   store time of the last record whose consume-queue unit is flushed
   16  int64 indexMsgTimestamp    store time of the last record whose index entry is flushed

Abnormal recovery starts from the commitlog file whose first record is older than all three (minus 3 s,
as RocketMQ), so everything that might be missing from the derived files is replayed.
"""
from __future__ import annotations

import os
import struct

from rmq_store._mapped import MappedFile

CHECKPOINT_SIZE = 4096
_FIELDS = struct.Struct(">qqq")


class StoreCheckpoint:
    def __init__(self, path: str) -> None:
        fresh = not os.path.exists(path)
        if not fresh and os.path.getsize(path) != CHECKPOINT_SIZE:
            os.unlink(path)  # a torn checkpoint only costs a longer recovery scan
            fresh = True
        self._mf = MappedFile(path, CHECKPOINT_SIZE, create=fresh)
        self.physic_msg_timestamp, self.logics_msg_timestamp, self.index_msg_timestamp = (
            _FIELDS.unpack(self._mf.read(0, _FIELDS.size)))

    def min_timestamp(self, with_index: bool) -> int:
        ts = min(self.physic_msg_timestamp, self.logics_msg_timestamp)
        if with_index:
            ts = min(ts, self.index_msg_timestamp)
        return max(0, ts - 3000)

    def flush(self) -> None:
        self._mf.write(0, _FIELDS.pack(self.physic_msg_timestamp, self.logics_msg_timestamp,
                                       self.index_msg_timestamp))
        self._mf.sync_all()

    def close(self) -> None:
        self._mf.close()
