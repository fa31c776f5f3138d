"""Checks a flow's graph for the mistakes that hurt callers, and measures its menus.

Schema validation makes sure each node is well formed; this module looks at the flow as a
whole: nodes nobody can reach, menus with no way out when the caller says nothing, loops
that never end, calls that would stop without a word, and how long a caller spends in
prompts before reaching each destination.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field

from ivr.errors import Problem, suggest

from .directory import CALLER_KEYS, column_key
from .model import (
    DESTINATION_KINDS,
    WAITING_KINDS,
    AskNode,
    Flow,
    GotoFlowNode,
    HangupNode,
    Node,
    QueueNode,
    RecordNode,
    SayNode,
    SetNode,
    TransferNode,
)
from .prompts import announcement, prompt_seconds, text_seconds

PERSON_KINDS = ("queue", "transfer")


def check_flow(flow: Flow) -> list[Problem]:
    """Every graph-level error and warning for one flow."""
    src = flow.source
    out: list[Problem] = []

    def at(node: Node, message: str, severity: str = "error", code: str = "", sub: tuple = ()):
        out.append(src.problem(("nodes", node.id) + sub, message, key=not sub, severity=severity,
                               code=code))

    graph = {n.id: [t for _, t in n.edges() if t in flow.nodes] for n in flow.nodes.values()}
    reachable = _reach(graph, flow.start)
    for node in flow.nodes.values():
        if node.id not in reachable:
            at(node, f"node '{node.id}' cannot be reached from the start ('{flow.start}')",
               "warning", "unreachable")

    can_reach_person = _reverse_reach(graph, [n.id for n in flow.nodes.values()
                                              if n.kind in PERSON_KINDS])
    for node in flow.nodes.values():
        if isinstance(node, AskNode):
            silent, unmatched = node.exits()
            if not silent:
                at(node, f"menu '{node.id}' has no way out when the caller says nothing: set "
                   "no_input.goto, or settings.escape for the whole flow", code="silent-menu")
            elif _leads_back(flow, silent, node.id) and node.no_input.goto is None:
                at(node, f"menu '{node.id}' sends a silent caller back to itself through "
                   f"settings.escape ('{silent}'), where the retries start again: they would hear it "
                   "forever. Point settings.escape at a person, or give this menu a no_input.goto "
                   "that leads out", code="silent-menu")
            elif _leads_back(flow, silent, node.id):
                at(node, f"menu '{node.id}' sends a silent caller back to itself, where the retries "
                   "start again: they would hear it forever. Leave no_input.goto out to ask again "
                   "(up to `retries` times), then send them on, e.g. to a person", code="silent-menu")
            elif node.choices and not unmatched:
                at(node, f"menu '{node.id}' has no way out when the caller is not understood: "
                   "set no_match.goto", code="no-match-exit")
            listens = flow.settings.speech != "off" and "speech" in node.input
            for i, c in enumerate(node.choices):
                if c.key is None and not listens:
                    at(node, f"the choice for intent '{c.intent}' has no key, and this menu does not "
                       "listen for speech (settings.speech: off, or input without speech): no caller "
                       "can choose it; give it a key", "warning", "unreachable-choice",
                       sub=(node.kind, "choices", i))
            if not node.choices and not node.next:
                at(node, f"'{node.id}' asks for input but has no choices and no 'next': where does "
                   "the caller go after answering?", code="dead-end")
            if node.id in reachable and node.id not in can_reach_person:
                at(node, f"menu '{node.id}' offers no way to reach a person (no path to a queue "
                   "or transfer); callers stuck here will hang up", "warning", "no-person")
        elif isinstance(node, (SayNode, SetNode)) and not node.next:
            hint = " (to end the call, use a hangup node: `hangup: \"Goodbye.\"`)" if isinstance(
                node, SayNode) else ""
            at(node, f"the call would stop abruptly after '{node.id}': add 'next'{hint}",
               code="dead-end")
        elif isinstance(node, QueueNode) and not node.next:
            at(node, f"callers who leave queue '{node.name}' without reaching an agent are cut off: "
               "add 'next' (e.g. voicemail)", "warning", "dead-end")
        elif isinstance(node, TransferNode) and not node.next:
            at(node, f"if nobody answers the transfer from '{node.id}', the call just ends: add "
               "'next' (e.g. voicemail or a queue)", "warning", "dead-end")
        elif isinstance(node, RecordNode) and not node.next:
            at(node, f"after recording in '{node.id}' the call ends with no goodbye: add 'next'",
               "warning", "dead-end")
        if isinstance(node, SayNode) and not node.prompt:
            at(node, f"'{node.id}' says nothing", "warning", "silence")
        if isinstance(node, RecordNode) and not node.prompt:
            at(node, f"'{node.id}' records without a prompt: callers hear only a beep and may not "
               "know they are being recorded", "warning", "silence")

    for scc in _cycles(graph):
        members = set(scc)
        leaves = any(t not in members for n in scc for t in graph[n])
        ends = any(flow.nodes[n].kind in ("hangup", "goto_flow") for n in scc)
        loop = " -> ".join(scc + [scc[0]])
        first = flow.nodes[scc[0]]
        if not leaves and not ends:
            at(first, f"loop with no exit: callers go round {loop} forever", code="endless-loop")
        elif not any(flow.nodes[n].kind in WAITING_KINDS or flow.nodes[n].kind == "set"
                     for n in scc):
            at(first, f"loop {loop} never waits for the caller and changes nothing, so it can "
               "spin without end", "warning", "busy-loop")

    used = {c.intent for n in flow.nodes.values() if isinstance(n, AskNode) for c in n.choices}
    for name in flow.intents:
        if name not in used:
            out.append(src.problem(("intents", name), f"intent '{name}' is declared but no menu "
                                   "routes on it", key=True, severity="warning",
                                   code="unused-intent"))

    for report in destination_paths(flow):
        limit = flow.settings.max_seconds_to_destination
        for mode, path in (("keypad", report.keypad), ("speech", report.speech)):
            if path and round(path.seconds) > limit:
                at(flow.nodes[report.node], f"callers need {path.seconds:.0f} s of prompts to reach "
                   f"'{report.node}' by {mode} ({' -> '.join(path.route)}), over the "
                   f"{limit:.0f} s limit (settings.max_seconds_to_destination)", "warning",
                   "slow-path")
    return out


# -- paths to destinations -----------------------------------------------------------------


@dataclass
class Path:
    seconds: float
    menus: int
    route: list[str] = field(default_factory=list)  # e.g. ["press 1", "say billing"]
    nodes: list[str] = field(default_factory=list)


@dataclass
class DestinationReport:
    node: str
    kind: str
    what: str  # e.g. "queue billing", "transfer +1..."
    keypad: Path | None
    speech: Path | None


def _exits(node: Node, wpm: int, mode: str, speech: bool = True) -> list[tuple[str, str, float, int]]:
    """(label, target, seconds heard before leaving, menus passed) for the caller's choices."""
    if isinstance(node, AskNode):
        heard = prompt_seconds(node.prompt, wpm)
        out = []
        spoken = 0.0
        for c in node.choices:
            text = announcement(c) if node.announce else None
            if text:
                spoken += text_seconds(text, wpm)
            if mode == "keypad" and c.key is not None and "dtmf" in node.input:
                out.append((f"press {c.key}", c.goto, heard + spoken, 1))
            if mode == "speech" and speech and c.intent and "speech" in node.input:
                out.append((f"say '{c.intent}'", c.goto, heard, 1))
        if node.next:
            out.append(("answer", node.next, heard, 1))
        return out
    if isinstance(node, (HangupNode, GotoFlowNode)) or node.kind in DESTINATION_KINDS:
        return []
    cost = prompt_seconds(node.prompt, wpm) if isinstance(node, SayNode) else 0.0
    return [("", t, cost, 0) for _, t in node.edges()]


def destination_paths(flow: Flow) -> list[DestinationReport]:
    """Shortest path (in seconds of prompts) from the start to every destination, by keypad
    and by speech. Branches count as open both ways: the caller may be known or not."""
    wpm = flow.settings.words_per_minute
    best: dict[str, dict[str, Path]] = {}
    for mode in ("keypad", "speech"):
        dist: dict[str, Path] = {}
        heap: list[tuple[float, int, str, Path]] = [(0.0, 0, flow.start, Path(0.0, 0, [], [flow.start]))]
        tie = 0
        while heap:
            secs, _, nid, path = heapq.heappop(heap)
            if nid in dist:
                continue
            dist[nid] = path
            node = flow.nodes.get(nid)
            if node is None:
                continue
            for label, target, cost, menus in _exits(node, wpm, mode, flow.settings.speech != "off"):
                if target in dist or target not in flow.nodes:
                    continue
                tie += 1
                route = path.route + [label] if label else path.route
                heapq.heappush(heap, (secs + cost, tie, target,
                                      Path(secs + cost, path.menus + menus, route,
                                           path.nodes + [target])))
        best[mode] = dist
    reports = []
    for node in flow.nodes.values():
        if node.kind not in DESTINATION_KINDS:
            continue
        reports.append(DestinationReport(
            node.id, node.kind, _what(node), best["keypad"].get(node.id), best["speech"].get(node.id)
        ))
    return reports


def _what(node: Node) -> str:
    if isinstance(node, QueueNode):
        return f"queue {node.name}"
    if isinstance(node, TransferNode):
        return f"transfer to {node.to}"
    if isinstance(node, GotoFlowNode):
        return f"flow {node.flow}"
    return "voicemail" if isinstance(node, RecordNode) else node.kind


# -- graph helpers -------------------------------------------------------------------------


def _reach(graph: dict[str, list[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        n = stack.pop()
        if n in seen or n not in graph:
            continue
        seen.add(n)
        stack.extend(graph[n])
    return seen


def _reverse_reach(graph: dict[str, list[str]], targets: list[str]) -> set[str]:
    back: dict[str, list[str]] = {n: [] for n in graph}
    for n, outs in graph.items():
        for t in outs:
            back.setdefault(t, []).append(n)
    return _reach_many(back, targets)


def _reach_many(graph: dict[str, list[str]], starts: list[str]) -> set[str]:
    seen: set[str] = set()
    for s in starts:
        seen |= _reach(graph, s) if s not in seen else set()
    return seen


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components that contain a cycle (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    result: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            advanced = False
            for nxt in it:
                if nxt not in graph:
                    continue
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(graph[nxt])))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1 or node in graph[node]:
                    result.append(list(reversed(comp)))
    return result


def _leads_back(flow: Flow, target: str | None, menu: str) -> bool:
    """Whether `target` is the menu, or reaches it through nodes that only speak or set."""
    seen: set[str] = set()
    while target is not None and target not in seen:
        if target == menu:
            return True
        seen.add(target)
        node = flow.nodes.get(target)
        if not isinstance(node, (SayNode, SetNode)):
            return False
        target = node.next
    return False


def caller_field_problems(flow: Flow, columns: Iterable[str] | None, directory: str = "") -> list[Problem]:
    """Warnings for columns the flow reads that its caller directory does not have.

    A misspelt `caller.frist_name` renders as empty text for every caller ("Hi , thanks for
    calling"), and a `lookup` by a missing column never finds anyone; neither fails a call,
    so only the check can tell. `columns` None means the directory cannot say (a directory
    plugged in without `columns`): nothing is checked.
    """
    if columns is None or not flow.directory:
        return []
    known = set(CALLER_KEYS) | {column_key(c) for c in columns}
    problems = []
    name = directory or flow.directory
    for path, field_name in flow.caller_fields:
        is_lookup = path[-2:] == ("lookup", "by")
        # A lookup names its column loosely ("Customer ID"); templates and tests read the key.
        if (column_key(str(field_name)) if is_lookup else field_name) in known:
            continue
        line, col = flow.source.where(path) if flow.source else (None, None)
        effect = ("so this lookup never finds anyone" if is_lookup
                  else f"so caller.{field_name} is always empty")
        problems.append(Problem(
            flow.file, line, col,
            f"caller directory {name} has no column '{field_name}'{suggest(str(field_name), known)}, "
            f"{effect}", "warning", "missing-column"))
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
