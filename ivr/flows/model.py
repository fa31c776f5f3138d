"""Typed call-flow objects: what a flow file means once it has been loaded and checked.

The nodes themselves live with their kind (ivr/flows/nodes/<kind>.py); here are the parts
every kind shares: the `Node` base, prompts, and the flow around the nodes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


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
    menu_attempts: int = 3  # prompts a menu plays in all (first + retries) before sending the caller on
    max_seconds_to_person: float = 60.0  # worst case: a caller never understood in any menu
    speech: str = "twilio"
    confirm_below: float | None = None


@dataclass(frozen=True)
class FlowCallbacks:
    """What a caller with a pending callback hears when they phone again (flow `callbacks`)."""

    recognise: bool = True
    pending: Prompt = ()  # empty: the engine's default keep-or-cancel question
    kept: Prompt = ()
    cancelled: Prompt = ()


@dataclass(frozen=True)
class FlowSurvey:
    """The post-call survey (flow `survey`): asked when the agent hangs up and the caller is
    still on the line (ivr/flows/survey.py reads it, ivr/engine/survey.py asks it)."""

    share: float = 1.0  # of the calls that qualify, chosen by call id
    queues: tuple[str, ...] | None = None  # only callers answered from these queues (None: all)
    score: Prompt = ()  # empty: the catalogue's question
    solved: bool = False  # then "did we solve it today? yes/no"
    solved_say: Prompt = ()
    comment: bool = False  # then a short spoken comment, recorded and transcribed
    comment_say: Prompt = ()
    comment_max_s: int = 30
    thanks: Prompt = ()


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
    directory: str | None = None  # a CSV file or a database table
    directory_api: Any = None  # ivr.flows.directory_api.DirectoryApi: a directory served over HTTP
    whisper: str | None = None
    # its own words for catalogue sentences: ((catalogue key, text), ...), see ivr.i18n
    messages: tuple[tuple[str, str], ...] = ()
    hours: dict[str, Any] = field(default_factory=dict)  # name -> ivr.flows.hours.BusinessHours
    intents: dict[str, Intent] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    callbacks: FlowCallbacks = field(default_factory=FlowCallbacks)
    survey: FlowSurvey | None = None
    problems: list = field(default_factory=list)  # warnings kept from loading and checking
    caller_fields: tuple = ()  # ((yaml path, column), ...): the directory columns the flow reads
    source: Any = None  # ivr.flows.yamlsource.Source, for positions
    digest: str = ""  # content hash, to tell versions apart in logs

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]
