from rmq_store._mapped import MappedFile

INDEX_HEADER_SIZE: int
INDEX_ENTRY_SIZE: int

def index_file_size(slot_num: int, index_num: int) -> int: ...

class IndexFile:
    mapped: MappedFile
    slot_num: int
    index_num: int
    begin_timestamp: int
    end_timestamp: int
    begin_phy_offset: int
    end_phy_offset: int
    hash_slot_count: int
    index_count: int
    def __init__(self, mapped: MappedFile, slot_num: int, index_num: int, fresh: bool) -> None: ...
    @property
    def is_full(self) -> bool: ...
    def put(self, key_hash: int, phy: int, store_ts: int) -> bool: ...
    def time_matched(self, begin: int, end: int) -> bool: ...
    def select(self, key_hash: int, max_num: int, begin: int, end: int) -> list[int]: ...
