"""The metadata file helper (atomic write, .bak, fallback load, RocketMQ's pretty form), DataVersion and perms."""
from __future__ import annotations

import json
import os

import pytest

from rmq_broker.config_file import ConfigFileError, PersistentTable, dumps_file, load_json_file, write_json_file
from rmq_broker.data_version import DataVersion
from rmq_broker.perm import (PermName, is_inherited, is_readable, is_writeable, perm_to_string, validate_perm)
from rmq_remoting import fastjson

# -- write / load ---------------------------------------------------------------------------------------


def test_write_keeps_the_previous_content_as_bak(tmp_path) -> None:
    path = tmp_path / "config" / "x.json"                   # the directory is created
    write_json_file(path, '{"v":1}')
    assert path.read_text() == '{"v":1}' and not (tmp_path / "config" / "x.json.bak").exists()
    write_json_file(path, '{"v":2}')
    write_json_file(path, b'{"v":3}')
    assert path.read_text() == '{"v":3}'
    assert (tmp_path / "config" / "x.json.bak").read_text() == '{"v":2}'
    assert sorted(os.listdir(tmp_path / "config")) == ["x.json", "x.json.bak"]      # no .tmp left behind


def test_bak_is_a_separate_file_not_a_view_of_the_new_one(tmp_path) -> None:
    path = tmp_path / "x.json"
    write_json_file(path, "old")
    write_json_file(path, "new")
    (tmp_path / "x.json").write_text("edited in place")       # an operator editing the file must not change .bak
    assert (tmp_path / "x.json.bak").read_text() == "old"


def test_load_missing_gives_none(tmp_path) -> None:
    assert load_json_file(tmp_path / "absent.json", fastjson.loads) is None


def test_load_falls_back_to_bak(tmp_path, caplog) -> None:
    path = tmp_path / "x.json"
    write_json_file(path, '{"v":1}')
    write_json_file(path, '{"v":2}')
    path.write_text('{"v":2, trunc')                          # a torn write by some other tool
    assert load_json_file(path, fastjson.loads) == {"v": 1}
    assert any("backup" in r.getMessage() for r in caplog.records)
    path.write_text("")                                       # empty: as RocketMQ, use the .bak
    assert load_json_file(path, fastjson.loads) == {"v": 1}
    path.unlink()                                             # missing: the .bak too
    assert load_json_file(path, fastjson.loads) == {"v": 1}


def test_load_with_both_unreadable_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ConfigFileError) as info:
        load_json_file(path, fastjson.loads)
    assert info.value.path == str(path)
    assert str(path) in str(info.value) and ".bak is missing" in str(info.value)
    (tmp_path / "x.json.bak").write_text("[also not")
    with pytest.raises(ConfigFileError, match="x.json.bak"):
        load_json_file(path, fastjson.loads)


def test_schema_errors_of_the_decoder_count_as_corrupt(tmp_path) -> None:
    path = tmp_path / "x.json"
    write_json_file(path, '{"n":1}')
    write_json_file(path, '{"n":"many"}')

    def decode(data: bytes) -> int:
        n = fastjson.loads(data)["n"]
        if not isinstance(n, int):
            raise ValueError(f"n is not a number: {n!r}")
        return n

    assert load_json_file(path, decode) == 1


def test_a_directory_in_the_way_is_reported(tmp_path) -> None:
    (tmp_path / "x.json").mkdir()
    with pytest.raises(ConfigFileError, match="directory"):
        load_json_file(tmp_path / "x.json", fastjson.loads)


# -- the pretty form ----------------------------------------------------------------------------------


def test_dumps_file_is_rocketmqs_pretty_form() -> None:
    text = dumps_file({"offsetTable": {"T@G": {1: 7, 0: 5}, "A@G": {}}, "skip": None, "list": [1, "a"]})
    assert text == ('{\n'
                    '\t"list":[\n\t\t1,\n\t\t"a"\n\t],\n'
                    '\t"offsetTable":{\n\t\t"A@G":{},\n\t\t"T@G":{0:5,1:7}\n\t}\n'
                    '}\n')
    assert fastjson.loads(text) == {"list": [1, "a"], "offsetTable": {"A@G": {}, "T@G": {0: 5, 1: 7}}}


def test_dumps_file_without_int_keys_is_standard_json() -> None:
    obj = {"b": {"x": True, "y": "ü\"\n"}, "a": [], "c": 1.5}
    assert json.loads(dumps_file(obj)) == obj


def test_dumps_file_refuses_odd_keys() -> None:
    with pytest.raises(TypeError):
        dumps_file({(1, 2): 3})


# -- PersistentTable --------------------------------------------------------------------------------


class _Table(PersistentTable):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.data: dict[str, int] = {}

    def put(self, k: str, v: int) -> None:
        with self._lock:
            self.data[k] = v
            self._changed()

    def _encode_file(self) -> str:
        return dumps_file(self.data)


def test_persistent_table_dirty_tracking(tmp_path) -> None:
    t = _Table(str(tmp_path / "t.json"))
    assert not t.dirty and not t.persist_if_dirty()
    assert not (tmp_path / "t.json").exists()
    t.put("a", 1)
    assert t.dirty
    assert t.persist_if_dirty() and not t.dirty
    assert json.loads((tmp_path / "t.json").read_text()) == {"a": 1}
    assert not t.persist_if_dirty()


def test_persistent_table_failed_write_stays_dirty(tmp_path) -> None:
    (tmp_path / "blocker").write_text("a file where the directory should be")
    t = _Table(str(tmp_path / "blocker" / "t.json"))
    t.put("a", 1)
    with pytest.raises(OSError):
        t.persist()
    assert t.dirty
    t._persist_after_change()                                 # logged, not raised
    assert t.dirty


# -- DataVersion ------------------------------------------------------------------------------------


def test_data_version() -> None:
    v0 = DataVersion(1_700_000_000_000)
    assert v0.counter == 0
    v1 = v0.next_version(1_700_000_000_005)
    assert (v1.timestamp_ms, v1.counter) == (1_700_000_000_005, 1)
    assert v1 != v0 and v0.next_version(1_700_000_000_005) == v1
    assert v0.next_version(v0.timestamp_ms) != v0             # same millisecond: the counter still differs
    assert v1.to_json() == b'{"counter":1,"timestamp":1700000000005}'
    assert DataVersion.from_json(v1.to_json()) == v1
    assert DataVersion.from_json_dict({"counter": 3, "timestamp": 9, "stateVersion": 0}) == DataVersion(9, 3)
    assert DataVersion.from_json_dict({"counter": "3", "timestamp": "9"}) == DataVersion(9, 3)
    for bad in ({"counter": 1}, {"counter": 1.5, "timestamp": 1}, {"counter": "--1", "timestamp": 1}, [1]):
        with pytest.raises(ValueError):
            DataVersion.from_json_dict(bad)              # type: ignore[arg-type]
    with pytest.raises(ValueError):
        DataVersion(1, -1)


# -- PermName ---------------------------------------------------------------------------------------


def test_perm_bits_are_rocketmqs() -> None:
    assert (PermName.PRIORITY, PermName.READ, PermName.WRITE, PermName.INHERIT) == (8, 4, 2, 1)
    assert is_readable(6) and is_writeable(6) and not is_inherited(6)
    assert is_inherited(7) and not is_readable(2) and not is_writeable(4)
    assert [perm_to_string(p) for p in (0, 2, 4, 6, 7)] == ["---", "-W-", "R--", "RW-", "RWX"]
    assert 6 & PermName.WRITE and not 4 & PermName.WRITE
    assert validate_perm(PermName.READ | PermName.WRITE) == 6 and type(validate_perm(PermName.READ)) is int
    for bad in (-1, 16, 32, True, "6"):
        with pytest.raises(ValueError):
            validate_perm(bad)                             # type: ignore[arg-type]
