"""What the benchmark commands share: argument types and stopping their child processes."""
from __future__ import annotations

import argparse
import subprocess
from collections.abc import Callable, Iterable

__all__ = ["positive_int", "parse_sizes", "parse_peers", "stop_child"]


def positive_int(text: str) -> int:
    """An integer above zero; ``_`` may group digits."""
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def parse_sizes(text: str) -> tuple[int, ...]:
    """A comma-separated list of positive sizes, duplicates dropped, order kept."""
    sizes = tuple(positive_int(part.strip()) for part in text.split(",") if part.strip())
    if not sizes:
        raise argparse.ArgumentTypeError("no sizes given")
    return tuple(dict.fromkeys(sizes))


def parse_peers(known: Iterable[str]) -> Callable[[str], tuple[str, ...]]:
    """The argument type of ``--peers``: a comma-separated choice among ``known`` (``none`` or empty: none)."""
    choices = tuple(known)

    def parse(text: str) -> tuple[str, ...]:
        names = [part.strip().lower() for part in text.split(",") if part.strip()]
        if names in ([], ["none"]):
            return ()
        unknown = [name for name in names if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(choices)}")
        return tuple(dict.fromkeys(names))

    return parse


def stop_child(proc: subprocess.Popen, *, graceful_s: float, terminate_s: float) -> None:
    """End a benchmark's child process that exits when its stdin closes: close stdin and wait ``graceful_s``,
    then SIGTERM and wait ``terminate_s``, then SIGKILL; its stdout pipe is closed in every case."""
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=graceful_s)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=terminate_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
