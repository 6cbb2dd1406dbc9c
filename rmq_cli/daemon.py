"""What the daemon commands (``rmq nameserver``, ``rmq broker``, ``rmq dev``) share: port arguments,
logging to stderr and a file, and one-line failures."""
from __future__ import annotations

import argparse
import logging
import logging.handlers
import os
import sys

LOG_FORMAT = "%(asctime)s %(levelname)-7s [%(name)s] %(message)s"


def port_arg(text: str) -> int:
    """argparse type of a TCP port (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535: {text!r}")
    return value


def setup_logging(level: str) -> logging.Handler:
    """Log records of ``level`` and above to stderr."""
    root = logging.getLogger()
    root.setLevel(level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(LOG_FORMAT))
    root.addHandler(console)
    return console


def add_log_file(path: str) -> None:
    """Also log to ``path`` (reopened when logrotate moves it)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    handler = logging.handlers.WatchedFileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(handler)


def fail(log: logging.Logger, message: str) -> int:
    """Log why the daemon cannot run and return exit status 1."""
    log.error("%s", message)
    return 1
