"""RocketMQ-style properties files: Java's syntax rules, the trailing-blank difference, round trips, errors."""
from __future__ import annotations

import pytest

from rmq_common.properties_file import PropertiesFileError, format_properties, load_properties, parse_properties


def test_java_syntax():
    text = (
        "# comment\n"
        "   ! another comment\n"
        "\n"
        "listenPort=9876\n"
        "  kvConfigPath : /data/kv.json\n"
        "orderMessageEnable true\n"
        "long=first \\\n"
        "     second\n"
        "escaped\\=key=a\\tb\\u0041\\\\\n"
        "empty=\n"
        "lonely\n"
        "listenPort=9877\n"
    )
    assert parse_properties(text) == {
        "listenPort": "9877",                 # a later duplicate wins
        "kvConfigPath": "/data/kv.json",
        "orderMessageEnable": "true",
        "long": "first second",
        "escaped=key": "a\tbA\\",
        "empty": "",
        "lonely": "",
    }


def test_trailing_whitespace_of_values_is_dropped():
    assert parse_properties("listenPort=9876  \t\nname = a b \n") == {"listenPort": "9876", "name": "a b"}


def test_crlf_and_continuation_at_the_end():
    assert parse_properties("a=1\r\nb=2\\") == {"a": "1", "b": "2"}


def test_bad_unicode_escape_names_the_line():
    with pytest.raises(PropertiesFileError, match=r"conf:2: malformed \\uXXXX"):
        parse_properties("a=1\nb=\\u12x4\n", "conf")


def test_format_round_trips():
    props = {"a": "1", "key with=sep:": "v", "#hash": "x", "path": "C:\\dir\\file", "multi": "l1\nl2",
             "lead": " space", "flag": "true"}
    assert parse_properties(format_properties(props)) == props
    assert format_properties({"b": True, "n": None, "i": 3}) == "b=true\nn=\ni=3\n"


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.properties"
    with pytest.raises(PropertiesFileError, match="missing.properties does not exist"):
        load_properties(missing)
    binary = tmp_path / "bad.properties"
    binary.write_bytes(b"a=\xff\xfe\n")
    with pytest.raises(PropertiesFileError, match="not UTF-8"):
        load_properties(binary)
    good = tmp_path / "ok.properties"
    good.write_text("listenPort=1\n")
    assert load_properties(good) == {"listenPort": "1"}
