"""What the flow language knows about one kind of node, in one record: `NodeKind`.

Each module of this package describes one kind with a `KIND = NodeKind(...)`; the table in
`ivr.flows.nodes` lists them. The loader, the checker and the diagrams read a node's row
instead of testing its class, so they never name a kind themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ivr.config import AllowedHosts
from ivr.errors import Problem

from ..model import Flow, Node, Settings

if TYPE_CHECKING:  # the loader and the checker import this table; these are only types
    from ..checker import GraphCheck
    from ..loader import Builder

NODE_ID = {"$ref": "#/$defs/node_id"}
PROMPT = {"$ref": "#/$defs/prompt"}


class RawNode(NamedTuple):
    """One node as written in the file (its shape already checked against the schema)."""

    id: str
    kind: str
    body: dict  # the node's whole mapping: {"queue": ..., "next": ..., "description": ...}
    value: Any  # what the kind's key holds: body[kind]
    path: tuple  # ("nodes", id), for positions
    common: dict  # the Node fields every kind has: id, kind, line, next, description
    settings: Settings
    language: str = "en-US"  # the flow's

    @property
    def key_path(self) -> tuple:
        """Where the kind's value is: ("nodes", id, kind)."""
        return self.path + (self.kind,)


class Exit(NamedTuple):
    """A way a caller goes on from a node, for the time-to-destination report."""

    label: str  # "press 1", "say 'billing'", or "" where the caller has no choice
    target: str
    seconds: float  # of prompts heard before leaving the node this way
    menus: int  # menus passed (1 for a choice in a menu)


@dataclass
class EnvCheck:
    """What a node kind's environment check is given: the server's environment variables and
    allowed hosts, and where to report. Its problems are warnings: the flow loads, and the
    server says what will fail until the environment is set."""

    flow: Flow
    environ: Mapping[str, str]
    hosts: AllowedHosts
    problems: list[Problem] = field(default_factory=list)

    def at(self, node: Node, message: str, sub: tuple = (), code: str = "") -> None:
        self.problems.append(self.flow.source.problem(("nodes", node.id) + sub, message,
                                                      severity="warning", code=code))


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one record per kind
class NodeKind:
    """One kind of node: its YAML, its checks, its drawing and its place in the graph."""

    name: str  # the key that gives a node its kind: `say:`, `queue:`...
    node: type[Node]  # its typed object
    schema: dict  # JSON Schema of the value under that key
    load: Callable[[Builder, RawNode], Node]  # YAML -> node, reporting what is wrong
    keys: Mapping[str, dict] = field(default_factory=dict)  # other keys beside it ("else")
    has_next: bool = True  # takes `next:`
    defs: Mapping[str, dict] = field(default_factory=dict)  # more $defs its schema refers to
    # After every node is built: targets that exist, intents declared, hours named...
    resolve: Callable[[Builder, Flow, Node], None] | None = None
    # Problems seen only in the whole graph: dead ends, silence, menus with no way out.
    check: Callable[[GraphCheck, Node], None] | None = None
    # Warnings that depend on where the flow runs: secrets not set, hosts not allowed.
    env_check: Callable[[EnvCheck, Node], None] | None = None
    # Ways on, with the seconds a caller hears before taking them (None: every edge, free).
    exits: Callable[[Node, int, str, bool], list[Exit]] | None = None
    # The intents it routes on (an intent no node routes on is reported as unused).
    intents: Callable[[Node], Iterable[str]] | None = None
    # The catalogue sentences (ivr.i18n.sentences) it says when the flow gives no words of
    # its own, each with the key path under the node where the flow could: ivr flows check
    # warns when the flow's language lacks one.
    speaks: Callable[[Flow, Node], Iterable[tuple[Any, tuple]]] | None = None
    # Where a caller is served, for the path report ("queue billing"); None: not a destination.
    destination: Callable[[Node], str] | None = None
    reaches_a_person: bool = False  # a queue or a transfer: the way out of every menu
    waits: bool = False  # the engine stops here until the caller or Twilio acts
    sets_vars: bool = False  # a loop through it changes something, so it may end
    leaves_flow: bool = False  # the call ends here, or goes on in another flow
    goes_straight_on: bool = False  # only speaks or sets, then goes to `next`
    mermaid: tuple[str, str] = ("[", "]")  # the shape's brackets in a Mermaid chart
    dot: str = "box"  # the Graphviz shape
    label: Callable[[Flow, Node], str] | None = None  # more text in the drawing's box

    def node_schema(self) -> dict:
        """`$defs/node_<name>`: the whole node mapping."""
        properties = {"description": {"type": "string"}, self.name: self.schema, **self.keys}
        if self.has_next:
            properties["next"] = NODE_ID
        return {"type": "object", "properties": properties, "required": [self.name],
                "additionalProperties": False}
