"""Crash-safe replacement of a small file: the JSON and properties files servers rewrite on every change.

``write_file_atomically`` writes ``<path>.tmp``, fsyncs it, renames it over ``path`` and fsyncs the
directory, so after a crash the file holds either the old or the new content, never a mix or nothing.
(RocketMQ's ``MixAll.string2File`` writes a .tmp, copies the old file to .bak and renames, without fsync.)
"""
from __future__ import annotations

import os

__all__ = ["write_file_atomically"]


def write_file_atomically(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` durably; creates missing parent directories. Raises OSError."""
    name = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(name))
    os.makedirs(directory, exist_ok=True)
    tmp = name + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, name)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
