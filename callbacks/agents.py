"""Agents: who takes which queues and how to reach them (a YAML file), and whether each one is
available right now (Redis).

The file, `flows/agents.yaml` by default (`IVR_AGENTS_FILE`), is written by operators and
checked like a flow, with file, line and column in every error::

    agents:
      alice:
        queues: [billing, general]     # the queues (skills) she takes
        contact: "+15005550021"        # a phone number, sip:user@host or client:name

Availability changes through the HTTP API and `ivr agents status NAME available|busy|offline`.
An agent the file names but Redis has never heard of is offline.
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

from . import keys

log = logging.getLogger("callbacks.agents")

STATUSES = ("available", "busy", "offline")
AGENT_KEYS = ("queues", "contact", "description")
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
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentsError([Problem(str(path), None, None, f"cannot read agents file: {exc}")]) from None
    return parse_agents(text, str(path), region)


def parse_agents(text: str, file: str, region: str = "US") -> dict[str, Agent]:
    try:
        src = parse(text, file)
    except FlowError as exc:
        raise AgentsError(exc.problems) from None
    problems: list[Problem] = []
    agents = _agents(src, problems, region)
    if problems:
        raise AgentsError(sorted(problems, key=lambda p: (p.line or 0, p.column or 0)))
    return agents


def _agents(src: Source, problems: list[Problem], region: str) -> dict[str, Agent]:
    def error(path: tuple, message: str, key: bool = False) -> None:
        problems.append(src.problem(path, message, key=key, code="agents"))

    data = src.data
    if not isinstance(data, dict) or not isinstance(data.get("agents"), dict):
        error((), "an agents file is a mapping with 'agents:', one entry per agent name, e.g. "
                  "agents: {alice: {queues: [billing], contact: '+15005550021'}}")
        return {}
    for key in data:
        if key != "agents":
            error((key,), f"unknown key '{key}'{suggest(key, ['agents'])}; allowed here: agents", key=True)
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
        out[str(name)] = Agent(str(name), tuple(q for q in queues if isinstance(q, str)),
                               reachable or "", str(description or ""), src.where(path, key=True)[0])
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
                self._signature, self._agents = ("missing",), {}
            return
        signature = (st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return
        self._signature = signature
        try:
            agents = load_agents(self.path, self.region)
        except AgentsError as exc:
            self.error = exc
            log.error("agents file %s has errors and was NOT loaded; still using the %d agents loaded "
                      "before:\n%s", self.path, len(self._agents), exc)
            return
        self.error = None
        if self._agents:
            log.warning("reloaded agents file %s: %d agents", self.path, len(agents))
        self._agents = agents

    def get(self, name: str) -> Agent:
        agents = self.agents()
        if name not in agents:
            raise UnknownAgent(name, list(agents))
        return agents[name]


# -- live status -----------------------------------------------------------------------------

# Set a status by hand; clears any reservation (the agent decides from now on).
_SET_STATUS = """
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'since', ARGV[2], 'reserved_for', '')
return redis.call('HGET', KEYS[1], 'status')
"""


class Agents:
    """Agents from the roster with their live status in Redis."""

    def __init__(self, redis: redis_lib.Redis, roster: Roster):
        self.redis = redis
        self.roster = roster
        self._set = redis.register_script(_SET_STATUS)

    def set_status(self, name: str, status: str, now: float | None = None) -> dict:
        """Change an agent's status; returns the agent as `list()` shows it."""
        agent = self.roster.get(name)
        if status not in STATUSES:
            raise ValueError(f"'{status}' is not a status; use one of: {', '.join(STATUSES)}"
                             f"{suggest(status, STATUSES)}")
        self._set(keys=[keys.agent(name)], args=[status, repr(now if now is not None else time.time())])
        return self.describe(agent, self._live([name])[name])

    def list(self) -> list[dict]:
        """Every agent in the file with status, since, queues, contact and reservation."""
        agents = self.roster.agents()
        live = self._live(list(agents))
        return [self.describe(a, live[a.name]) for a in agents.values()]

    def get(self, name: str) -> dict:
        agent = self.roster.get(name)
        return self.describe(agent, self._live([name])[name])

    def available_for(self, queue: str) -> list[Agent]:
        """Free agents who take `queue`, the longest idle first."""
        agents = [a for a in self.roster.agents().values() if queue in a.queues]
        live = self._live([a.name for a in agents])
        free = [a for a in agents
                if live[a.name]["status"] == "available" and not live[a.name]["reserved_for"]]
        return sorted(free, key=lambda a: live[a.name]["since"] or 0.0)

    def counts(self, queue: str) -> tuple[int, int]:
        """(available, staffed) for a queue; staffed means available or busy."""
        agents = [a.name for a in self.roster.agents().values() if queue in a.queues]
        live = self._live(agents)
        available = sum(1 for n in agents if live[n]["status"] == "available" and not live[n]["reserved_for"])
        staffed = sum(1 for n in agents if live[n]["status"] in ("available", "busy"))
        return available, staffed

    def queues(self) -> set[str]:
        return {q for a in self.roster.agents().values() for q in a.queues}

    def _live(self, names: list[str]) -> dict[str, dict]:
        pipe = self.redis.pipeline(transaction=False)
        for n in names:
            pipe.hmget(keys.agent(n), "status", "since", "reserved_for")
        out = {}
        for n, (status, since, reserved) in zip(names, pipe.execute() if names else [], strict=True):
            out[n] = {"status": _text(status) or "offline", "since": float(since) if since else None,
                      "reserved_for": _text(reserved) or None}
        return out

    @staticmethod
    def describe(agent: Agent, live: dict) -> dict:
        since = live.get("since")
        return {"name": agent.name, "status": live["status"],
                "since": datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds") if since else None,
                "queues": list(agent.queues), "contact": agent.contact,
                "reserved_for": live.get("reserved_for")}


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)
