"""Checks a flow's graph for the mistakes that hurt callers, and measures its menus.

Schema validation makes sure each node is well formed; this module looks at the flow as a
whole: nodes nobody can reach, menus with no way out when the caller says nothing, loops
that never end, calls that would stop without a word, and how long a caller spends in
prompts before reaching each destination.

What is particular to one kind of node (a menu with no way out, a say node with no `next`)
is its kind's `check`, in ivr/flows/nodes; this module walks the graph and calls them.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ivr.errors import Problem, suggest
from ivr.i18n import language
from ivr.i18n import sentences as S

from . import survey
from .directory import CALLER_KEYS, column_key
from .model import Flow, Node
from .nodes import KINDS, EnvCheck, Exit
from .prompts import announcements, prompt_seconds, text_seconds


@dataclass
class GraphCheck:
    """What a node kind's check is given: the flow as a graph, and where to report."""

    flow: Flow
    reachable: set[str]  # from the start
    reaches_a_person: set[str]  # nodes with a path to a queue or a transfer
    problems: list[Problem] = field(default_factory=list)

    def at(self, node: Node, message: str, severity: str = "error", code: str = "",
           sub: tuple = ()) -> None:
        """A problem with `node` (at its key, or at `sub` inside it)."""
        self.problems.append(self.flow.source.problem(("nodes", node.id) + sub, message, key=not sub,
                                                      severity=severity, code=code))

    def leads_back(self, target: str | None, menu: str) -> bool:
        """Whether `target` is the menu, or reaches it through nodes that only speak or set."""
        seen: set[str] = set()
        while target is not None and target not in seen:
            if target == menu:
                return True
            seen.add(target)
            node = self.flow.nodes.get(target)
            if node is None or not KINDS[node.kind].goes_straight_on:
                return False
            target = node.next
        return False


def check_flow(flow: Flow) -> list[Problem]:
    """Every graph-level error and warning for one flow."""
    graph = {n.id: [t for _, t in n.edges() if t in flow.nodes] for n in flow.nodes.values()}
    c = GraphCheck(flow, _reach(graph, flow.start),
                   _reverse_reach(graph, [n.id for n in flow.nodes.values()
                                          if KINDS[n.kind].reaches_a_person]))
    at = c.at
    for node in flow.nodes.values():
        if node.id not in c.reachable:
            at(node, f"node '{node.id}' cannot be reached from the start ('{flow.start}')",
               "warning", "unreachable")

    for node in flow.nodes.values():
        check = KINDS[node.kind].check
        if check is not None:
            check(c, node)

    for scc in _cycles(graph):
        members = set(scc)
        kinds = [KINDS[flow.nodes[n].kind] for n in scc]
        leaves = any(t not in members for n in scc for t in graph[n])
        ends = any(k.leaves_flow for k in kinds)
        loop = " -> ".join(scc + [scc[0]])
        first = flow.nodes[scc[0]]
        if not leaves and not ends:
            at(first, f"loop with no exit: callers go round {loop} forever", code="endless-loop")
        elif not any(k.waits or k.sets_vars for k in kinds):
            at(first, f"loop {loop} never waits for the caller and changes nothing, so it can "
               "spin without end", "warning", "busy-loop")

    used = {i for n in flow.nodes.values() if KINDS[n.kind].intents for i in KINDS[n.kind].intents(n)}
    for name in flow.intents:
        if name not in used:
            c.problems.append(flow.source.problem(("intents", name), f"intent '{name}' is declared but "
                                                  "no menu routes on it", key=True, severity="warning",
                                                  code="unused-intent"))

    c.problems += survey.check(flow, {n.name for n in flow.nodes.values() if n.kind == "queue"},
                               any(KINDS[n.kind].reaches_a_person for n in flow.nodes.values()))
    c.problems += untranslated(flow)

    worst = worst_case(flow)
    if worst is not None and round(worst.seconds) > flow.settings.max_seconds_to_person:
        at(flow.nodes[worst.menus[0] if worst.menus else worst.node],
           f"a caller who is never understood hears {worst.seconds:.0f} s of prompts before "
           f"reaching a person ({worst.describe()}), over the "
           f"{flow.settings.max_seconds_to_person:.0f} s limit (settings.max_seconds_to_person): "
           "shorten the menus, or give them fewer attempts", "warning", "slow-worst-case")

    for report in destination_paths(flow):
        limit = flow.settings.max_seconds_to_destination
        for mode, path in (("keypad", report.keypad), ("speech", report.speech)):
            if path and round(path.seconds) > limit:
                at(flow.nodes[report.node], f"callers need {path.seconds:.0f} s of prompts to reach "
                   f"'{report.node}' by {mode} ({' -> '.join(path.route)}), over the "
                   f"{limit:.0f} s limit (settings.max_seconds_to_destination)", "warning",
                   "slow-path")
    return c.problems


# -- the flow's language -------------------------------------------------------------------

# Said on any call when something fails, whatever the flow: the apology and the way to a person.
FAIL_SAFE = (S.SOMETHING_WENT_WRONG, S.PUT_THROUGH, S.LEAVE_A_MESSAGE, S.MESSAGE_TAKEN,
             S.NOBODY_LEAVE_A_MESSAGE, S.WHISPER_AFTER_ERROR, S.TECHNICAL_DIFFICULTIES,
             S.HOLD_FOR_SOMEONE, S.NOBODY_GOODBYE, S.LEAVE_A_MESSAGE_CALL_BACK, S.WILL_CALL_BACK)
OPENING = (S.OPEN_NOW, S.OPEN_TODAY, S.OPEN_TOMORROW, S.OPEN_WEEKDAY, S.OPEN_DATE, S.TIME,
           S.TIME_ON_THE_HOUR, S.BEFORE_NOON, S.AFTER_NOON)
PENDING = (S.PENDING, S.KEPT, S.CANCELLED)
ANSWERS = (S.KEEP_WORDS, S.CANCEL_WORDS, S.YES_WORDS, S.IN_A_MOMENT, S.IN_DURATION,
           S.AS_SOON_AS_FREE, S.LESS_THAN_A_MINUTE, S.ABOUT_A_MINUTE, S.ABOUT_MINUTES, S.ABOUT_HOURS)


def sentences(flow: Flow) -> list[tuple[object, tuple]]:
    """Every catalogue sentence (ivr.i18n.sentences) the server may say on this flow's calls
    because the flow gives no words of its own, with the path where it could."""
    said: list[tuple[object, tuple]] = []
    for node in flow.nodes.values():
        speaks = KINDS[node.kind].speaks
        if speaks is not None:
            said += [(m, ("nodes", node.id, node.kind) + sub) for m, sub in speaks(flow, node)]
    if flow.callbacks.recognise:
        for message, field_ in zip(PENDING, ("pending", "kept", "cancelled"), strict=True):
            if not getattr(flow.callbacks, field_):
                said.append((message, ("callbacks", field_)))
        said += [(m, ("callbacks",)) for m in ANSWERS]
    said += survey.speaks(flow)
    if flow.hours and _mentions(flow.source.data if flow.source else None, "next_open"):
        said += [(m, ("hours",)) for m in OPENING]
    return said + [(m, ("language",)) for m in FAIL_SAFE]


def untranslated(flow: Flow) -> list[Problem]:
    """Warnings for a flow not in English that would say sentences its language's catalogue
    does not translate (the caller would hear them in English), naming each one."""
    lang = language(flow.language, flow.messages)
    if lang.english:
        return []
    missing: dict[object, tuple] = {}
    for message, path in sentences(flow):
        if not lang.has(message):
            missing.setdefault(message, path)
    if not missing:
        return []
    names = {m: name for name, m in S.by_name().items()}
    how = (f"translate it in ivr/i18n/locales/{lang.code}/LC_MESSAGES/messages.po (or a catalogue "
           "in IVR_LOCALES_DIR), or give the flow its own words here or in messages.{name}")
    if not lang.chain:
        names = [f'"{m.msgid}"' for m in missing]
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return [flow.source.problem(("language",), f"there is no message catalogue for '{flow.language}': "
                                    f"callers would hear {len(names)} sentences in English, "
                                    f"{', '.join(names[:3])}{more}; add one with `pybabel init -l "
                                    f"{lang.code}` (docs/languages.md)", severity="warning",
                                    code="untranslated")]
    return [flow.source.problem(path, f"callers of this '{flow.language}' flow would hear "
                                f"\"{message.msgid}\" in English: the '{lang.code}' catalogue has no "
                                f"translation of it; {how.format(name=names.get(message, '?'))}",
                                severity="warning", code="untranslated")
            for message, path in missing.items()]


def _mentions(data: object, word: str) -> bool:
    if isinstance(data, str):
        return word in data
    if isinstance(data, dict):
        return any(_mentions(v, word) for v in data.values())
    if isinstance(data, list):
        return any(_mentions(v, word) for v in data)
    return False


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


def _exits(node: Node, wpm: int, mode: str, speech: bool = True) -> list[Exit]:
    """The caller's ways on from a node, with the seconds heard before taking each."""
    kind = KINDS[node.kind]
    if kind.leaves_flow:
        return []
    if kind.destination is not None:
        # A caller goes on from a destination when it ends without a person (the queue's
        # max_wait, a transfer nobody answers, after a message): the nodes after it are
        # reachable, and the time on hold there is not prompts.
        return [Exit(f"then on from {node.id}", t, 0.0, 0) for _, t in node.edges()]
    if kind.exits is not None:
        return kind.exits(node, wpm, mode, speech)
    return [Exit("", t, 0.0, 0) for _, t in node.edges()]


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
        what = KINDS[node.kind].destination
        if what is None:
            continue
        reports.append(DestinationReport(
            node.id, node.kind, what(node), best["keypad"].get(node.id), best["speech"].get(node.id)
        ))
    return reports


@dataclass
class WorstCase:
    """The longest a caller can hear prompts before a person answers, failing every menu."""

    seconds: float
    node: str  # the queue or transfer they reach
    nodes: list[str]  # the way there
    menus: list[str]  # the menus they failed, in order
    heard: dict[str, int]  # how many times each of those menus was played

    def describe(self) -> str:
        menus = ", ".join(f"'{m}' played {self.heard[m]} time{'s' if self.heard[m] != 1 else ''}"
                          for m in self.menus)
        return f"{menus or 'no menu'}, then '{self.node}'"


def menu_prompts(node: Node) -> int:
    """The most prompts a menu plays before sending a caller on: its attempts, or fewer when
    its retries for silence and for wrong answers run out first."""
    per_kind = [h.retries if h.retries is not None else node.retries
                for h in (node.no_input, node.no_match)]
    if any(r is None for r in per_kind):
        return node.attempts
    return min(node.attempts, 1 + sum(per_kind))


def failing_seconds(flow: Flow, node: Node, wpm: int) -> float:
    """Seconds of prompts a caller hears in a menu before being sent on as never understood:
    every play of the prompt with all its announcements, and the apology before each replay."""
    lang = language(flow.language, flow.messages)
    full = prompt_seconds(node.prompt, wpm) + sum(text_seconds(a, wpm) for a in announcements(node, lang))
    sorry = max(
        prompt_seconds(node.no_input.say, wpm) if node.no_input.say
        else text_seconds(lang.say(S.NOT_HEARD), wpm),
        prompt_seconds(node.no_match.words("spoken"), wpm) if node.no_match.words("spoken")
        else text_seconds(lang.say(S.NOT_UNDERSTOOD), wpm),
        prompt_seconds(node.no_match.words("pressed"), wpm) if node.no_match.words("pressed")
        else text_seconds(lang.say(S.NOT_A_CHOICE, keys="9"), wpm))
    plays = menu_prompts(node)
    return plays * full + (plays - 1) * sorry


def worst_case(flow: Flow) -> WorstCase | None:
    """The longest way to a person for a caller who is never understood (or says nothing): at
    each menu they hear every attempt and take its way out; branches are taken both ways.
    None when no such caller reaches a person (the checker's no-person warnings say where)."""
    wpm = flow.settings.words_per_minute
    memo: dict[str, tuple | None] = {}

    def longest(nid: str, path: frozenset) -> tuple | None:
        # (seconds, nodes, menus) from nid to a person; a loop back is cut where it closes
        if nid in memo:
            return memo[nid]
        node = flow.nodes.get(nid)
        if node is None or nid in path:
            return None
        kind = KINDS[node.kind]
        if kind.reaches_a_person and kind.destination is not None:
            return (0.0, [nid], [])
        if node.kind == "ask":
            silent, unmatched = node.exits()
            cost = failing_seconds(flow, node, wpm)
            ways = [(cost, t, True) for t in dict.fromkeys((silent, unmatched)) if t]
            if not node.choices and node.next:  # a free answer: they may answer it too
                ways.append((prompt_seconds(node.prompt, wpm), node.next, False))
        else:
            ways = [(e.seconds, e.target, False) for e in _exits(node, wpm, "keypad")]
        best = None
        for seconds, target, failed in ways:
            rest = longest(target, path | {nid})
            if rest is None:
                continue
            total = seconds + rest[0]
            if best is None or total > best[0]:
                best = (total, [nid] + rest[1], ([nid] if failed else []) + rest[2])
        memo[nid] = best
        return best

    found = longest(flow.start, frozenset())
    if found is None:
        return None
    seconds, nodes, menus = found
    return WorstCase(seconds, nodes[-1], nodes, menus,
                     {m: menu_prompts(flow.nodes[m]) for m in menus})


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


def environment_problems(flow: Flow, environ: Mapping[str, str] | None = None,
                         hosts=None) -> list[Problem]:
    """Warnings that depend on where the flow runs, not on its file: secrets it names that
    are not set, API hosts that IVR_REQUEST_HOSTS does not allow. `ivr flows check` prints
    them and the server logs them when it loads the flow; they do not stop it loading (the
    requests will take `on_error` until the environment is set)."""
    from ivr.config import AllowedHosts

    environ = os.environ if environ is None else environ
    if hosts is None:
        try:
            hosts = AllowedHosts.parse(environ.get("IVR_REQUEST_HOSTS", ""))
        except ValueError as exc:
            return [Problem(flow.file, None, None, str(exc), "warning", "request-hosts")]
    e = EnvCheck(flow, environ, hosts)
    for node in flow.nodes.values():
        check = KINDS[node.kind].env_check
        if check is not None:
            check(e, node)
    api = flow.directory_api
    if api is not None:
        from . import http

        for key, message in http.environment_problems(api.url, api.secrets, environ, hosts,
                                                      "caller lookups"):
            e.problems.append(flow.source.problem(("directory", "headers" if key == "secrets"
                                                   and not http.secret_names([api.url]) else "url"),
                                                  message, severity="warning", code="request-environment"))
    return sorted(e.problems, key=lambda p: (p.line or 0, p.column or 0))


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
