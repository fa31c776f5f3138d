"""Agents: who takes which queues and how to reach them (a YAML file), and what each one is
doing right now (Redis, agent_state.py).

The file, `flows/agents.yaml` by default (`IVR_AGENTS_FILE`), is written by operators and
checked like a flow, with file, line and column in every error::

    queues:                            # optional, per queue
      billing:
        wrap_up: 30                    # seconds after a call before the agent is offered another
        ring_timeout: 20               # seconds an agent's phone rings before they count as away
    agents:
      alice:
        queues: [billing, general]     # the queues (skills) she takes
        priority: {billing: 1}         # optional: offered billing's callers before agents at 0
        contact: "+15005550021"        # a phone number, sip:user@host or client:name

States follow the calls (agent_state.py); available, away and offline are set through the HTTP
API and `ivr agents status NAME available|away|offline` (busy is another name for away). An
agent the file names but Redis has never heard of is offline.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis as redis_lib

from ivr.errors import FlowError, IvrError, Problem, suggest
from ivr.flows.yamlsource import Source, parse
from ivr.phone import normalize

from . import agent_state

log = logging.getLogger("callbacks.agents")

STATUSES = ("available", "away", "offline", "busy")  # what may be set by hand; busy means away
AGENT_KEYS = ("queues", "contact", "description", "priority")
QUEUE_KEYS = ("wrap_up", "ring_timeout")
DEFAULT_WRAP_UP = 0
DEFAULT_RING_TIMEOUT = 20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_SIP = re.compile(r"^sips?:[^@\s]+@[^@\s]+$")
_CLIENT = re.compile(r"^client:[A-Za-z0-9_.@-]{1,120}$")


@dataclass(frozen=True)
class Agent:
    """One agent from the agents file."""

    name: str
    queues: tuple[str, ...]
    contact: str  # E.164, sip:user@host or client:name
    description: str = ""
    line: int | None = None
    priority: tuple[tuple[str, int], ...] = ()  # (queue, priority): higher is offered first

    def priority_in(self, queue: str) -> int:
        return dict(self.priority).get(queue, 0)


@dataclass(frozen=True)
class QueueSettings:
    """How agents work a queue (the agents file's `queues:`)."""

    wrap_up: int = DEFAULT_WRAP_UP  # seconds
    ring_timeout: int = DEFAULT_RING_TIMEOUT  # seconds


class AgentsError(FlowError):
    """The agents file cannot be used; carries every problem found, with lines."""


class UnknownAgent(IvrError, KeyError):
    """No agent of that name in the agents file."""

    def __init__(self, name: str, known: list[str]):
        super().__init__(name)
        self.name = name
        self.message = f"no agent named '{name}' in the agents file{suggest(name, known)}"

    def __str__(self) -> str:
        return self.message


# -- the file ------------------------------------------------------------------------------


def load_agents(path: str | Path, region: str = "US") -> dict[str, Agent]:
    """Read and check an agents file. Raises AgentsError listing every problem."""
    return load_file(path, region)[0]


def load_file(path: str | Path, region: str = "US") -> tuple[dict[str, Agent], dict[str, QueueSettings]]:
    """The agents and the queue settings of an agents file. Raises AgentsError."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentsError([Problem(str(path), None, None, f"cannot read agents file: {exc}")]) from None
    return parse_file(text, str(path), region)


def parse_agents(text: str, file: str, region: str = "US") -> dict[str, Agent]:
    return parse_file(text, file, region)[0]


def parse_file(text: str, file: str, region: str = "US") -> tuple[dict[str, Agent], dict[str, QueueSettings]]:
    try:
        src = parse(text, file)
    except FlowError as exc:
        raise AgentsError(exc.problems) from None
    problems: list[Problem] = []
    agents = _agents(src, problems, region)
    queues = _queues(src, problems)
    if problems:
        raise AgentsError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    return agents, queues


def _queues(src: Source, problems: list[Problem]) -> dict[str, QueueSettings]:
    data = src.data if isinstance(src.data, dict) else {}
    body = data.get("queues")
    if body is None:
        return {}
    if not isinstance(body, dict):
        problems.append(src.problem(("queues",), "'queues' maps queue names to their settings, e.g. "
                                    "queues: {billing: {wrap_up: 30, ring_timeout: 20}}", code="agents"))
        return {}
    out = {}
    for name, settings in body.items():
        path = ("queues", name)
        if not isinstance(settings, dict):
            problems.append(src.problem(path, f"queue '{name}' needs a mapping of settings: "
                                        f"{', '.join(QUEUE_KEYS)}", code="agents"))
            continue
        values = {}
        for key, value in settings.items():
            if key not in QUEUE_KEYS:
                problems.append(src.problem(path + (key,), f"unknown key '{key}' in queue '{name}'"
                                            f"{suggest(key, QUEUE_KEYS)}; allowed here: "
                                            f"{', '.join(QUEUE_KEYS)}", key=True, code="agents"))
            elif not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 3600:
                problems.append(src.problem(path + (key,), f"{key} is whole seconds from 0 to 3600, "
                                            f"got {value!r}", code="agents"))
            elif key == "ring_timeout" and value < 5:
                problems.append(src.problem(path + (key,), "ring_timeout under 5 s gives agents no "
                                            "time to answer", code="agents"))
            else:
                values[key] = value
        out[str(name)] = QueueSettings(**values)
    return out


def _agents(src: Source, problems: list[Problem], region: str) -> dict[str, Agent]:
    def error(path: tuple, message: str, key: bool = False) -> None:
        problems.append(src.problem(path, message, key=key, code="agents"))

    data = src.data
    if not isinstance(data, dict) or not isinstance(data.get("agents"), dict):
        error((), "an agents file is a mapping with 'agents:', one entry per agent name, e.g. "
                  "agents: {alice: {queues: [billing], contact: '+15005550021'}}")
        return {}
    for key in data:
        if key not in ("agents", "queues"):
            error((key,), f"unknown key '{key}'{suggest(key, ['agents', 'queues'])}; allowed here: "
                          "agents, queues", key=True)
    out: dict[str, Agent] = {}
    for name, body in data["agents"].items():
        path = ("agents", name)
        if not _NAME.match(str(name)):
            error(path, f"'{name}' is not a usable agent name: letters, digits, '_', '.', '@' and "
                        "'-', up to 64 characters", key=True)
        if not isinstance(body, dict):
            error(path, f"agent '{name}' must be a mapping with 'queues' and 'contact'")
            continue
        for key in body:
            if key not in AGENT_KEYS:
                error(path + (key,), f"unknown key '{key}' in agent '{name}'{suggest(key, AGENT_KEYS)}; "
                                     f"allowed here: {', '.join(AGENT_KEYS)}", key=True)
        queues = body.get("queues")
        if isinstance(queues, str):
            queues = [queues]
        if not isinstance(queues, list) or not queues:
            error(path + ("queues",) if "queues" in body else path,
                  f"agent '{name}' needs 'queues': the queues they take, e.g. [billing, general]",
                  key="queues" not in body)
            queues = []
        for i, q in enumerate(queues):
            if not isinstance(q, str) or not q.strip() or len(q) > 64:
                error(path + ("queues", i), f"queue names are text of 1 to 64 characters, got {q!r}")
        contact = body.get("contact")
        reachable = _contact(contact, region)
        if "contact" not in body:
            error(path, f"agent '{name}' needs 'contact': how to reach them (a phone number, "
                        "sip:user@host or client:name)", key=True)
        elif reachable is None:
            error(path + ("contact",), f"contact {contact!r} of agent '{name}' is not a phone number, "
                                       "a sip: address or a client: name")
        description = body.get("description", "")
        if not isinstance(description, str):
            error(path + ("description",), "description must be text")
        priority = body.get("priority") or {}
        if not isinstance(priority, dict):
            error(path + ("priority",), "priority maps queues to a whole number, e.g. priority: "
                                        f"{{{queues[0] if queues else 'billing'}: 1}} (higher first)")
            priority = {}
        for q, n in priority.items():
            if q not in queues:
                error(path + ("priority", q), f"agent '{name}' has a priority in '{q}', which is not "
                                              f"one of their queues{suggest(str(q), list(map(str, queues)))}",
                      key=True)
            elif not isinstance(n, int) or isinstance(n, bool) or not -100 <= n <= 100:
                error(path + ("priority", q), f"priority is a whole number from -100 to 100, got {n!r}")
        out[str(name)] = Agent(str(name), tuple(q for q in queues if isinstance(q, str)),
                               reachable or "", str(description or ""), src.where(path, key=True)[0],
                               tuple((str(q), int(n)) for q, n in priority.items()
                                     if isinstance(n, int) and not isinstance(n, bool)))
    return out


def _contact(value: Any, region: str) -> str | None:
    if not isinstance(value, str | int) or isinstance(value, bool):
        return None
    text = str(value).strip()
    if _SIP.match(text) or _CLIENT.match(text):
        return text
    return normalize(text, region)


class Roster:
    """The agents file, read again when it changes (checked at most once a second).

    A broken new version never replaces a working one: the error is logged and the agents
    loaded before keep working, as with flows.
    """

    def __init__(self, path: str | Path, region: str = "US", interval: float = 1.0):
        self.path = Path(path)
        self.region = region
        self.interval = interval
        self._agents: dict[str, Agent] = {}
        self._queues: dict[str, QueueSettings] = {}
        self._signature: tuple | None = None
        self._checked = -1e9
        self._lock = threading.Lock()
        self.error: AgentsError | None = None

    def agents(self) -> dict[str, Agent]:
        if time.monotonic() - self._checked >= self.interval:
            with self._lock:
                self._reload()
        return self._agents

    def _reload(self) -> None:
        self._checked = time.monotonic()
        try:
            st = self.path.stat()
        except OSError:
            if self._signature != ("missing",):
                log.info("no agents file at %s: nobody takes callbacks until one is written",
                         self.path)
                self._signature, self._agents, self._queues = ("missing",), {}, {}
            return
        signature = (st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            agents, queues = load_file(self.path, self.region)
        except AgentsError as exc:
            self.error = exc
            log.error("agents file %s has errors and was NOT loaded; still using the %d agents loaded "
                      "before:\n%s", self.path, len(self._agents), exc)
            return
        self.error = None
        if self._agents:
            log.warning("reloaded agents file %s: %d agents", self.path, len(agents))
        self._agents, self._queues = agents, queues

    def settings(self, queue: str) -> QueueSettings:
        """The queue's wrap-up and ring timeout (defaults when the file does not name it)."""
        self.agents()
        return self._queues.get(queue) or QueueSettings()

    def get(self, name: str) -> Agent:
        agents = self.agents()
        if name not in agents:
            raise UnknownAgent(name, list(agents))
        return agents[name]


# -- live state ------------------------------------------------------------------------------


class Agents:
    """Agents from the roster with their live state in Redis (agent_state.py)."""

    def __init__(self, redis: redis_lib.Redis, roster: Roster):
        self.redis = redis
        self.roster = roster

    def set_status(self, name: str, status: str, now: float | None = None, by: str = "") -> dict:
        """Set an agent's state by hand (available, away or offline; busy is away); returns
        the agent as `list()` shows it."""
        agent = self.roster.get(name)
        if status not in STATUSES:
            raise ValueError(f"'{status}' is not a status; use one of: {', '.join(STATUSES[:3])}"
                             f"{suggest(status, STATUSES)}")
        agent_state.set_status(self.redis, name, status, by=by, now=now)
        return self.describe(agent, agent_state.state(self.redis, name, now))

    def list(self) -> list[dict]:
        """Every agent in the file with state, since, queues, contact and current call."""
        agents = self.roster.agents()
        live = agent_state.all_states(self.redis, list(agents))
        return [self.describe(a, live[a.name]) for a in agents.values()]

    def get(self, name: str) -> dict:
        agent = self.roster.get(name)
        return self.describe(agent, agent_state.state(self.redis, name))

    def states(self, names: list[str] | None = None, now: float | None = None) -> dict[str, dict]:
        return agent_state.all_states(self.redis, list(self.roster.agents()) if names is None else names, now)

    def available_for(self, queue: str, now: float | None = None) -> list[Agent]:
        """Free agents who take `queue`: the highest priority in it first, then the longest idle."""
        agents = [a for a in self.roster.agents().values() if queue in a.queues]
        live = agent_state.all_states(self.redis, [a.name for a in agents], now)
        free = [a for a in agents if live[a.name]["state"] == "available"]
        return sorted(free, key=lambda a: (-a.priority_in(queue), live[a.name]["idle_since"] or 0.0, a.name))

    def counts(self, queue: str) -> tuple[int, int]:
        """(available, staffed) for a queue; staffed means taking its calls (not away or offline)."""
        agents = [a.name for a in self.roster.agents().values() if queue in a.queues]
        live = agent_state.all_states(self.redis, agents)
        available = sum(1 for n in agents if live[n]["state"] == "available")
        staffed = sum(1 for n in agents if live[n]["state"] in agent_state.WORKING)
        return available, staffed

    def queues(self) -> set[str]:
        return {q for a in self.roster.agents().values() for q in a.queues}

    @staticmethod
    def describe(agent: Agent, live: dict) -> dict:
        """An agent as the API and `ivr agents list --json` show it. `status` is the state in the
        words clients used before states followed calls (available, busy or offline)."""
        since = live.get("since")
        st = live["state"]
        call = None
        if live.get("call_sid") or live.get("callback"):
            call = {"call_sid": live.get("call_sid"), "queue": live.get("queue"),
                    "callback": live.get("callback")}
        return {"name": agent.name, "state": st,
                "status": st if st in ("available", "offline") else "busy",
                "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds") if since else None,
                "queues": list(agent.queues), "contact": agent.contact, "call": call,
                "wrap_until": (datetime.fromtimestamp(live["wrap_until"], UTC).isoformat(timespec="seconds")
                               if live.get("wrap_until") else None),
                "after": live.get("after"),
                "reserved_for": live.get("callback") or live.get("call_sid")}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
