"""RocketMQ-style ``.properties`` files: the format of ``namesrv.properties`` and ``broker.conf``.

RocketMQ reads its configuration files with ``java.util.Properties.load`` and sends the nameserver's
configuration over the wire in the same format (UPDATE_NAMESRV_CONFIG / GET_NAMESRV_CONFIG bodies). The
nameserver and the broker both need a reader, so it lives here rather than in either of them.

Rules (Java's, with one deliberate difference):

* a line whose first non-blank character is ``#`` or ``!`` is a comment; blank lines are skipped;
* the key ends at the first unescaped ``=``, ``:`` or whitespace; whitespace around the separator is
  skipped, so ``key = value``, ``key:value`` and ``key value`` are all the same entry;
* a line ending in an odd number of backslashes continues on the next line (whose leading
  whitespace is dropped);
* escapes ``\\t \\n \\r \\f \\uXXXX`` are decoded and ``\\x`` stands for ``x`` (so ``\\=`` and ``\\\\``);
* a later duplicate key wins;
* **difference**: trailing whitespace of a value is removed. Java keeps it, and then fails to parse
  ``listenPort=9876 `` as a number; nobody means a trailing blank in a configuration value.

Files are read as UTF-8 (Java's ``load(InputStream)`` assumes ISO-8859-1; non-ASCII text in these
files is rare and UTF-8 is what editors write).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

__all__ = ["PropertiesFileError", "parse_properties", "load_properties", "format_properties"]

_SEPARATORS = "=:"
_WHITESPACE = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesFileError(ValueError):
    """A properties text that cannot be read; the message names the source and the line."""


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Yield ``(first line number, logical line)`` with continuations joined and comments dropped."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        start = i
        line = lines[i].lstrip(_WHITESPACE)
        i += 1
        if not line or line[0] in "#!":
            continue
        parts: list[str] = []
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0 or i >= len(lines):
                if trailing % 2:
                    line = line[:-1]        # a continuation at end of input continues into nothing
                parts.append(line)
                break
            parts.append(line[:-1])
            line = lines[i].lstrip(_WHITESPACE)
            i += 1
        yield start + 1, "".join(parts)


def _unescape(raw: str, where: str) -> str:
    if "\\" not in raw:
        return raw
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        c = raw[i]
        i += 1
        if c != "\\" or i >= n:
            out.append(c)
            continue
        c = raw[i]
        i += 1
        if c == "u":
            digits = raw[i:i + 4]
            if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
                bad = "\\u" + digits
                raise PropertiesFileError(f"{where}: malformed \\uXXXX escape {bad!r}")
            out.append(chr(int(digits, 16)))
            i += 4
        else:
            out.append(_ESCAPES.get(c, c))
    return "".join(out)


def _split_entry(line: str) -> tuple[str, str]:
    """Split a logical line into its raw (still escaped) key and value."""
    i = 0
    n = len(line)
    while i < n:
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c in _SEPARATORS or c in _WHITESPACE:
            break
        i += 1
    key = line[:i]
    j = i
    while j < n and line[j] in _WHITESPACE:
        j += 1
    if j < n and line[j] in _SEPARATORS:
        j += 1
        while j < n and line[j] in _WHITESPACE:
            j += 1
    return key, line[j:]


def parse_properties(text: str, source: str = "<properties>") -> dict[str, str]:
    """Parse properties text into an ordered dict (file order; a later duplicate wins).

    ``source`` names the text in error messages (a file path, "request body", ...).
    """
    props: dict[str, str] = {}
    for lineno, line in _logical_lines(text):
        where = f"{source}:{lineno}"
        raw_key, raw_value = _split_entry(line)
        key = _unescape(raw_key, where)
        value = _unescape(raw_value.rstrip(_WHITESPACE), where)
        props[key] = value
    return props


def load_properties(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read and parse a properties file; PropertiesFileError (with the path) if it cannot be read."""
    name = os.fspath(path)
    try:
        with open(name, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise PropertiesFileError(f"config file {name} does not exist") from None
    except UnicodeDecodeError as exc:
        raise PropertiesFileError(f"config file {name} is not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise PropertiesFileError(f"cannot read config file {name}: {exc.strerror or exc}") from None
    return parse_properties(text, name)


def _escape(text: str, is_key: bool) -> str:
    out: list[str] = []
    for i, c in enumerate(text):
        if c == "\\":
            out.append("\\\\")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif c == "\t":
            out.append("\\t")
        elif c == "\f":
            out.append("\\f")
        elif is_key and (c in _SEPARATORS or c == " " or (i == 0 and c in "#!")):
            out.append("\\" + c)
        elif not is_key and i == 0 and c == " ":
            out.append("\\ ")
        else:
            out.append(c)
    return "".join(out)


def format_properties(props: Mapping[str, object]) -> str:
    """``key=value`` lines in the given order, escaped so that ``parse_properties`` reads them back.

    Values are converted with ``str`` except booleans, which are written as Java does (``true``/``false``).
    A value ending in whitespace does not survive the round trip (see the module docstring).
    """
    lines = []
    for key, value in props.items():
        if value is True or value is False:
            text = "true" if value else "false"
        else:
            text = "" if value is None else str(value)
        lines.append(f"{_escape(str(key), True)}={_escape(text, False)}\n")
    return "".join(lines)
