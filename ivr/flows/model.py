"""Typed call-flow objects: what a flow file means once it has been loaded and checked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

KINDS = ("say", "ask", "branch", "lookup", "set", "queue", "transfer", "record", "hangup", "goto_flow")
# Nodes that wait for the caller or hand the call over; the engine stops there until an event.
WAITING_KINDS = ("ask", "queue", "transfer", "record")
# Where a caller is served; the path report measures the way to each of them.
DESTINATION_KINDS = ("queue", "transfer", "record", "goto_flow")


@dataclass(frozen=True)
class SayText:
    text: str  # a template


@dataclass(frozen=True)
class PlayAudio:
    url: str
    seconds: float | None = None


@dataclass(frozen=True)
class Pause:
    seconds: float


PromptItem = SayText | PlayAudio | Pause
Prompt = tuple[PromptItem, ...]


@dataclass(frozen=True)
class Node:
    id: str
    kind: str
    line: int | None
    next: str | None = None
    description: str = ""

    def edges(self) -> Iterator[tuple[str, str]]:
        """(label, target) for every way out of this node."""
        if self.next:
            yield ("next", self.next)


@dataclass(frozen=True)
class SayNode(Node):
    prompt: Prompt = ()


@dataclass(frozen=True)
class Choice:
    goto: str
    key: str | None = None
    label: str | None = None
    intent: str | None = None
    say: Prompt = ()


@dataclass(frozen=True)
class Handler:
    say: Prompt = ()
    goto: str | None = None
    retries: int | None = None


@dataclass(frozen=True)
class AskNode(Node):
    prompt: Prompt = ()
    choices: tuple[Choice, ...] = ()
    announce: bool = True
    input: tuple[str, ...] = ("dtmf", "speech")
    num_digits: int | None = None
    finish_on_key: str | None = None
    timeout: int = 5
    speech_timeout: str | int = "auto"
    retries: int = 2
    no_input: Handler = Handler()
    no_match: Handler = Handler()
    save_as: str | None = None
    confirm_below: float | None = None
    escape: str | None = None  # the flow's escape node, filled in by the loader

    def exits(self) -> tuple[str | None, str | None]:
        """Where the caller goes after the last retry on silence and on no match."""
        silent = self.no_input.goto or self.escape
        unmatched = self.no_match.goto or self.no_input.goto or self.escape
        return silent, unmatched

    def edges(self) -> Iterator[tuple[str, str]]:
        for c in self.choices:
            label = f"press {c.key}" if c.key else ""
            if c.intent:
                label = f"{label} / say {c.intent}" if label else f"say {c.intent}"
            yield (label or "choice", c.goto)
        silent, unmatched = self.exits()
        if silent:
            yield ("no input", silent)
        if unmatched and (self.choices or unmatched != silent):
            yield ("no match", unmatched)
        if self.next:
            yield ("answered", self.next)


@dataclass(frozen=True)
class Case:
    condition: Any  # a string expression, a bool, or a structured mapping
    goto: str


@dataclass(frozen=True)
class BranchNode(Node):
    cases: tuple[Case, ...] = ()
    otherwise: str | None = None

    def edges(self) -> Iterator[tuple[str, str]]:
        for c in self.cases:
            yield (describe_condition(c.condition), c.goto)
        if self.otherwise:
            yield ("else", self.otherwise)


@dataclass(frozen=True)
class LookupNode(Node):
    by: str = "phone"
    value: str = "{{ call.from }}"
    found: str = ""
    not_found: str = ""

    def edges(self) -> Iterator[tuple[str, str]]:
        yield ("found", self.found)
        yield ("not found", self.not_found)


@dataclass(frozen=True)
class SetNode(Node):
    values: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class CallbackOffer:
    """A queue's offer to call the caller back instead of holding (queue.callback)."""

    offer_after: int = 120  # seconds of estimated wait above which the offer is made
    key: str = "1"
    phrases: tuple[str, ...] = ("call me back", "call back", "callback")
    offer: Prompt = ()  # empty: the engine's default wording, which names the key
    confirm: Prompt = ()
    enter_number: Prompt = ()
    read_back: Prompt = ()
    reason: Prompt | None = None  # None: no reason is recorded; () the default question
    reason_max_length: int = 30
    booked: Prompt = ()
    flow: str = "callback"  # the flow that runs when the caller answers the callback
    max_attempts: int = 3
    retry_after: int = 300
    expire_after: int = 4 * 3600
    calling_hours: Any = None  # {day: hours} in the caller's time zone; None: 08:00-21:00 daily


@dataclass(frozen=True)
class QueueNode(Node):
    name: str = ""
    say: Prompt = ()
    wait_say: Prompt = ()
    wait_play: str | None = None
    announce_position: bool = True
    announce_wait: bool = False
    max_wait: int | None = None
    callback: CallbackOffer | None = None


@dataclass(frozen=True)
class TransferNode(Node):
    to: str = ""
    say: Prompt = ()
    whisper: str | None = None
    timeout: int = 30
    caller_id: str | None = None


@dataclass(frozen=True)
class RecordNode(Node):
    prompt: Prompt = ()
    max_length: int = 120
    finish_on_key: str = "#"
    beep: bool = True
    timeout: int = 5


@dataclass(frozen=True)
class HangupNode(Node):
    prompt: Prompt = ()


@dataclass(frozen=True)
class GotoFlowNode(Node):
    flow: str = ""
    node: str | None = None


@dataclass(frozen=True)
class Intent:
    name: str
    phrases: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    escape: str | None = None
    fallback_number: str | None = None
    words_per_minute: int = 160
    max_seconds_to_destination: float = 30.0
    speech: str = "twilio"
    confirm_below: float | None = None


@dataclass(frozen=True)
class FlowCallbacks:
    """What a caller with a pending callback hears when they phone again (flow `callbacks`)."""

    recognise: bool = True
    pending: Prompt = ()  # empty: the engine's default keep-or-cancel question
    kept: Prompt = ()
    cancelled: Prompt = ()


@dataclass
class Flow:
    id: str
    file: str
    nodes: dict[str, Node]
    start: str
    description: str = ""
    numbers: tuple[str, ...] = ()
    default: bool = False
    language: str = "en-US"
    voice: str | None = None
    directory: str | None = None
    whisper: str | None = None
    hours: dict[str, Any] = field(default_factory=dict)  # name -> ivr.flows.hours.BusinessHours
    intents: dict[str, Intent] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    callbacks: FlowCallbacks = field(default_factory=FlowCallbacks)
    problems: list = field(default_factory=list)  # warnings kept from loading and checking
    caller_fields: tuple = ()  # ((yaml path, column), ...): the directory columns the flow reads
    source: Any = None  # ivr.flows.yamlsource.Source, for positions
    digest: str = ""  # content hash, to tell versions apart in logs

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]


def describe_condition(cond: Any) -> str:
    """A short human label for a branch condition (diagrams, path reports)."""
    if isinstance(cond, str):
        return cond
    if isinstance(cond, bool):
        return "always" if cond else "never"
    if isinstance(cond, dict):
        parts = []
        for k, v in cond.items():
            if k == "known_caller":
                parts.append("known caller" if v else "unknown caller")
            elif k in ("open", "closed", "holiday"):
                parts.append(f"{k} {v}")
            elif k in ("all", "any"):
                parts.append(f" {'and' if k == 'all' else 'or'} ".join(describe_condition(c) for c in v))
            elif k == "not":
                parts.append(f"not ({describe_condition(v)})")
            elif isinstance(v, dict):
                parts.append(", ".join(f"{k}.{a} = {b}" for a, b in v.items()))
            else:
                parts.append(f"{k} = {v}")
        return " and ".join(parts)
    return str(cond)
