"""rmq_store: RocketMQ's storage engine — commitlog, consume queues and index over mmap'd files.

Usable alone as a durable log::

    from rmq_store import MessageStore, StoreConfig
    with MessageStore(StoreConfig(store_path_root_dir="/var/lib/mylog")) as store:
        store.put("Orders", b"...", keys="order-1")
        for rec in store.get_messages("Orders", 0, 0).records(): ...
"""
from rmq_store._commitlog import MessageTooLargeError
from rmq_store._mapped import CorruptFileError, DiskFullError, MappedFile, StoreError
from rmq_store.config import FlushDiskType, StoreConfig
from rmq_store.results import GetResult, PutResult, QueryResult, RecoveryReport
from rmq_store.retention import RetentionReport
from rmq_store.status import GetStatus, PutStatus
from rmq_store.store import MessageStore, ReplicaStoreError, ReplicationError, StoreClosedError, StoreLockedError

__all__ = [
    "MessageStore", "StoreConfig", "FlushDiskType", "PutStatus", "GetStatus", "PutResult", "GetResult",
    "QueryResult", "RecoveryReport", "RetentionReport", "StoreError", "StoreClosedError", "StoreLockedError",
    "ReplicationError", "ReplicaStoreError",
    "DiskFullError", "CorruptFileError", "MessageTooLargeError", "MappedFile",
]
