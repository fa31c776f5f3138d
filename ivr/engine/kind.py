"""What the engine does with one kind of node, in one record: `NodeKind`.

Each module of ivr.engine.nodes describes one kind with a `KIND = NodeKind(...)`, and the
table there lists them. The runner enters a node, hands it the events it waits for and
repeats its question through that row, never by testing the node's class.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ivr.flows.model import Node

from .states import Wait

if TYPE_CHECKING:  # the runner imports the table; this is only its type
    from .runner import Run


class _Stop:
    def __repr__(self) -> str:
        return "STOP"


STOP: Any = _Stop()  # what `enter` returns when the call now waits for the caller or Twilio

# (run, node, event): what an event the call waits for does
Listener = Callable[["Run", Node, Any], None]


@dataclass(frozen=True, eq=False)
class NodeKind:
    """One kind of node, on a call."""

    # Entering the node: its actions and step, and where the call goes next (a node id,
    # None for nowhere, or STOP to wait for the events below).
    enter: Callable[[Run, Node], Any]
    # What the node waits for once entered: {the call's wait: {event class: listener}}.
    events: Mapping[Wait, Mapping[type, Listener]] = field(default_factory=dict)
    # Say again what the caller should be hearing now, after an event out of place.
    repeat: Callable[[Run, Node, Wait], None] | None = None
    # The caller hangs up while the node waits (before the hang-up is logged).
    hang_up: Callable[[Run, Node, Wait], None] | None = None
