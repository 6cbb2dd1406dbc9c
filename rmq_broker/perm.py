"""Permission bits of topics and brokers (Java ``PermName``, PROTOCOL.md §3.1).

The same four bits appear in a topic's ``perm`` (topics.json, REGISTER_BROKER, routes), in
UPDATE_AND_CREATE_TOPIC requests and in the broker's own ``brokerPermission``. Clients read them
from routes to decide where they may send (WRITE) and pull (READ); the broker checks them on every
send and pull. INHERIT marks a *template* topic (``TBW102``) whose settings an auto-created topic
copies, and is never passed on to the copy. PRIORITY is defined by RocketMQ but unused by 4.x.

``PermName`` is an ``IntFlag`` so ``topic_config.perm & PermName.WRITE`` works on the plain ``int``
stored in a TopicConfig; perms travel as plain integers on the wire.
"""
from __future__ import annotations

import enum
from typing import Final

__all__ = ["PermName", "PERM_MASK", "is_readable", "is_writeable", "is_inherited", "perm_to_string",
           "validate_perm"]


class PermName(enum.IntFlag):
    PRIORITY = 0x8
    READ = 0x4
    WRITE = 0x2
    INHERIT = 0x1


#: Every defined bit; a perm outside this mask is refused.
PERM_MASK: Final = int(PermName.PRIORITY | PermName.READ | PermName.WRITE | PermName.INHERIT)


def is_readable(perm: int) -> bool:
    return perm & PermName.READ == PermName.READ


def is_writeable(perm: int) -> bool:
    return perm & PermName.WRITE == PermName.WRITE


def is_inherited(perm: int) -> bool:
    return perm & PermName.INHERIT == PermName.INHERIT


def perm_to_string(perm: int) -> str:
    """``RWX`` form used by RocketMQ's admin tools: R readable, W writeable, X inheritable, ``-`` otherwise."""
    return ("R" if is_readable(perm) else "-") + ("W" if is_writeable(perm) else "-") + \
        ("X" if is_inherited(perm) else "-")


def validate_perm(perm: int, what: str = "perm") -> int:
    """Return ``perm`` as a plain int; ValueError naming ``what`` if it has bits outside PERM_MASK."""
    if isinstance(perm, bool) or not isinstance(perm, int):
        raise ValueError(f"{what} must be an integer, not {perm!r}")
    if perm < 0 or perm & ~PERM_MASK:
        raise ValueError(f"{what} {perm} is not a permission: only the bits PRIORITY 8, READ 4, WRITE 2 and "
                         "INHERIT 1 exist")
    return int(perm)
