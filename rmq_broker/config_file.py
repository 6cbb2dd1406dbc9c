"""The broker's JSON metadata files: crash-safe writes with a ``.bak``, loads that fall back to it.

``<storePathRootDir>/config/`` holds topics.json, subscriptionGroup.json, consumerOffset.json and
delayOffset.json (PROTOCOL.md §6.5). Losing one loses every topic definition or every consumer's
progress, so all of them go through this one module:

* **write** (``write_json_file``): the current file is kept as ``<name>.bak`` (RocketMQ's
  ``MixAll.string2File`` keeps the previous content there too), then the new content is written to
  ``<name>.tmp``, fsync'd and renamed over ``<name>``, and the directory is fsync'd
  (``rmq_common.atomic_file``). The .bak is a hard link to the old file (a copy where links are not
  supported), so making it costs no write. After a crash ``<name>`` is the old or the new content,
  never a mix; RocketMQ does not fsync and can leave a truncated file.
* **load** (``load_json_file``): ``<name>`` is decoded; if it is missing, empty or does not decode, the
  ``.bak`` is tried (as RocketMQ's ``ConfigManager.load``). Neither present: ``None`` (first start).
  Present but undecodable, with no usable .bak: ``ConfigFileError`` naming both files and what is
  wrong, so the broker refuses to start instead of silently starting with empty metadata.

``PersistentTable`` is the base of the three managers: one lock for the table, ``dirty`` tracking
(the consumer-offset timer writes only when something changed) and ``persist()``, which encodes under
the lock and writes outside it. Files are written in RocketMQ's pretty fastjson form (``dumps_file``):
tab-indented, keys sorted, integer keys bare, maps with integer keys on one line.
"""
from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import orjson

from rmq_common.atomic_file import write_file_atomically
from rmq_remoting import fastjson

__all__ = ["ConfigFileError", "write_json_file", "load_json_file", "dumps_file", "PersistentTable", "json_int",
           "json_bool"]

log = logging.getLogger("rmq_broker.config_file")

T = TypeVar("T")

#: Exceptions a decoder raises for a file that is not what it should be (orjson and fastjson errors are
#: ValueErrors; KeyError/TypeError come from a well-formed JSON document of the wrong shape).
_DECODE_ERRORS = (ValueError, TypeError, KeyError)


class ConfigFileError(Exception):
    """A metadata file exists but neither it nor its .bak can be read; ``path`` is the main file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot load {path}: {reason}")
        self.path = path
        self.reason = reason


# -- writing -------------------------------------------------------------------------------------------


def _keep_backup(name: str) -> None:
    """Make ``name.bak`` the current content of ``name`` (if it exists), atomically."""
    bak = name + ".bak"
    tmp = bak + ".tmp"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    try:
        os.link(name, tmp)
    except FileNotFoundError:
        return                              # first write: nothing to keep
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            raise
        shutil.copyfile(name, tmp)          # a filesystem without hard links
    os.replace(tmp, bak)


def write_json_file(path: str | os.PathLike[str], text: str | bytes, *, backup: bool = True) -> None:
    """Replace ``path`` with ``text`` durably, first keeping the old content as ``path.bak``. Raises OSError."""
    name = os.fspath(path)
    data = text.encode() if isinstance(text, str) else bytes(text)
    os.makedirs(os.path.dirname(os.path.abspath(name)), exist_ok=True)
    if backup:
        _keep_backup(name)
    write_file_atomically(name, data)


# -- loading -------------------------------------------------------------------------------------------


def _read(name: str) -> bytes | None:
    try:
        with open(name, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise ConfigFileError(name, "it is a directory, not a file") from None
    except OSError as exc:
        raise ConfigFileError(name, exc.strerror or str(exc)) from None


def load_json_file(path: str | os.PathLike[str], decode: Callable[[bytes], T]) -> T | None:
    """Decode ``path`` (falling back to ``path.bak``) with ``decode``; None if neither exists or both are empty.

    ``decode`` receives the raw bytes and raises ValueError (or KeyError/TypeError) for content it cannot
    accept. Raises ConfigFileError when a file exists but no candidate decodes.
    """
    name = os.fspath(path)
    problems: list[str] = []
    for candidate in (name, name + ".bak"):
        data = _read(candidate)
        if data is None:
            continue
        if not data.strip():
            log.warning("%s is empty; ignoring it", candidate)
            continue
        try:
            value = decode(data)
        except _DECODE_ERRORS as exc:
            problems.append(f"{candidate}: {exc}")
            log.error("%s cannot be decoded: %s", candidate, exc)
            continue
        if candidate != name:
            log.warning("loaded %s from its backup %s%s", name, candidate,
                        f" ({'; '.join(problems)})" if problems else " (the file itself is missing or empty)")
        return value
    if problems:
        raise ConfigFileError(name, "; ".join(problems) +
                              ("" if len(problems) > 1 else f"; and {name}.bak is missing or empty"))
    return None


# -- the file form -------------------------------------------------------------------------------------


def _key_text(key: Any) -> str:
    if isinstance(key, str):
        return orjson.dumps(key).decode()
    if isinstance(key, int) and not isinstance(key, bool):
        return str(key)
    raise TypeError(f"cannot write a map key of type {type(key).__name__}")


def _pretty(obj: Any, depth: int, out: list[str]) -> None:
    if isinstance(obj, Mapping):
        items = [(k, v) for k, v in obj.items() if v is not None]
        if not items:
            out.append("{}")
            return
        items.sort(key=lambda kv: (isinstance(kv[0], str), kv[0]))
        if all(isinstance(k, int) and not isinstance(k, (bool, str)) for k, _ in items) and \
                not any(isinstance(v, (Mapping, list, tuple)) for _, v in items):
            out.append("{" + ",".join(f"{k}:{fastjson.dumps(v).decode()}" for k, v in items) + "}")
            return
        inner = "\t" * (depth + 1)
        out.append("{\n")
        for i, (key, value) in enumerate(items):
            out.append(inner + _key_text(key) + ":")
            _pretty(value, depth + 1, out)
            out.append(",\n" if i < len(items) - 1 else "\n")
        out.append("\t" * depth + "}")
    elif isinstance(obj, (list, tuple)):
        if not obj:
            out.append("[]")
            return
        inner = "\t" * (depth + 1)
        out.append("[\n")
        for i, value in enumerate(obj):
            out.append(inner)
            _pretty(value, depth + 1, out)
            out.append(",\n" if i < len(obj) - 1 else "\n")
        out.append("\t" * depth + "]")
    else:
        out.append(fastjson.dumps(obj).decode())


def dumps_file(obj: Any) -> str:
    """``obj`` as RocketMQ's pretty fastjson (what ``ConfigManager.persist`` writes), ending in a newline.

    Readable by ``rmq_remoting.fastjson.loads`` and by RocketMQ; standard JSON unless a map has integer
    keys (consumerOffset.json, delayOffset.json), which are written bare as fastjson does.
    """
    out: list[str] = []
    _pretty(obj, 0, out)
    out.append("\n")
    return "".join(out)


# -- reading fields ------------------------------------------------------------------------------------

_INTEGER = re.compile(r"-?[0-9]+")


def json_int(data: Mapping[str, Any], name: str, default: int, what: str) -> int:
    """Field ``name`` of a JSON object as an int (a numeric string is accepted: some clients quote numbers).

    ``what`` names the object in the ValueError raised for anything else.
    """
    value = data.get(name, default)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value)
    raise ValueError(f"{what}: {name} must be a whole number, got {value!r}")


def json_bool(data: Mapping[str, Any], name: str, default: bool, what: str) -> bool:
    """Field ``name`` of a JSON object as a bool (``"true"``/``"false"`` strings accepted)."""
    value = data.get(name, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{what}: {name} must be true or false, got {value!r}")


# -- the managers' common part -------------------------------------------------------------------------


class PersistentTable:
    """A table kept in memory and saved to one JSON file: lock, dirty flag, persist.

    Subclasses guard every access to their table with ``self._lock`` (an RLock: methods may call each
    other), call ``_changed()`` after each modification, and implement ``_encode_file()`` (called with the
    lock held). All public methods are thread-safe; ``persist()`` does blocking file I/O (an fsync costs
    milliseconds), so an event loop should run it in a worker thread.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._persist_lock = threading.Lock()     # writers in order: a later snapshot is never overwritten
        self._dirty = False

    @property
    def dirty(self) -> bool:
        """True if the table changed since it was last written (or loaded)."""
        return self._dirty

    def _changed(self) -> None:
        self._dirty = True

    def _encode_file(self) -> str:
        raise NotImplementedError

    def persist(self) -> None:
        """Write the table now (atomic, previous file kept as .bak). Raises OSError; the table stays dirty."""
        with self._persist_lock:
            with self._lock:
                text = self._encode_file()
                self._dirty = False
            try:
                write_json_file(self.path, text)
            except OSError:
                self._dirty = True
                raise

    def persist_if_dirty(self) -> bool:
        """``persist()`` if anything changed; returns whether a write happened. For periodic timers."""
        if not self._dirty:
            return False
        self.persist()
        return True

    def _persist_after_change(self) -> None:
        """Write after a change, logging (not raising) a failure: the change stays in memory and dirty,
        so the next persist retries, as RocketMQ keeps serving after a failed ``persist``."""
        try:
            self.persist()
        except OSError as exc:
            log.error("could not write %s (kept in memory, will retry): %s", self.path, exc)
