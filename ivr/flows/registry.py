"""The flows a server is running, chosen by the called number, reloaded when files change.

A changed file is loaded and checked before it replaces anything: a file that fails its
check is logged loudly and the last good version keeps answering calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from ivr.errors import FlowError, Problem
from ivr.phone import normalize

from .checker import caller_field_problems, environment_problems
from .directory import Directory, DirectoryError, open_directory
from .loader import load_flow
from .model import Flow

log = logging.getLogger("ivr.flows")

FLOW_SUFFIXES = (".yaml", ".yml")
NOT_FLOWS = ("agents.yaml", "agents.yml")  # the agents file (callbacks/agents.py) lives here too


def flow_files(folder: Path) -> list[Path]:
    """Flow files directly inside `folder` (scenario files live in a tests/ subfolder)."""
    return sorted(p for p in Path(folder).glob("*")
                  if p.suffix in FLOW_SUFFIXES and p.name not in NOT_FLOWS and p.is_file())


@dataclass
class _Loaded:
    flow: Flow
    mtime: float
    size: int
    directory: Directory | None = None


@dataclass
class LoadReport:
    loaded: list[str] = field(default_factory=list)
    failed: dict[str, list[Problem]] = field(default_factory=dict)


class FlowRegistry:
    """Loaded flows for one folder. Thread-safe; checks files at most every `interval` s."""

    def __init__(self, folder: str | Path, default_flow: str = "", default_region: str = "US",
                 interval: float = 1.0, request_hosts=None):
        self.folder = Path(folder)
        self.request_hosts = request_hosts  # AllowedHosts; None: read IVR_REQUEST_HOSTS
        self.default_flow = default_flow
        self.default_region = default_region
        self.interval = interval
        self._lock = threading.Lock()
        self._loaded: dict[str, _Loaded] = {}  # by file path
        self._refused: dict[str, str] = {}  # new files that failed: the errors last logged
        self._failing: dict[str, list[Problem]] = {}  # files whose latest version failed its check
        # Told the path of each file refused (after it is logged), e.g. to count it for monitoring.
        self.on_refused: Callable[[str], None] | None = None
        self._cross_said: set[str] = set()  # problems between flows, logged when they appear
        self._numbers: Mapping[str, str] = MappingProxyType({})  # E.164 -> id of the flow answering
        self._checked = 0.0
        self._flows: Mapping[str, Flow] = MappingProxyType({})
        self.last_report = LoadReport()
        self.reload(force=True)

    # -- loading -------------------------------------------------------------------------

    def reload(self, force: bool = False) -> LoadReport:
        """Load new and changed files; keep the last good version of any that fail."""
        report = LoadReport()
        with self._lock:
            loaded_now: set[str] = set()
            for path in flow_files(self.folder):
                key = str(path)
                try:
                    st = path.stat()
                except OSError:
                    continue
                old = self._loaded.get(key)
                if not force and old and (old.mtime, old.size) == (st.st_mtime, st.st_size):
                    continue
                try:
                    flow = load_flow(path)
                    self._unique_id(flow, key)
                    self._unique_numbers(flow, key, loaded_now)
                    directory = self._directory(flow, path)
                    self._environment(flow)
                except FlowError as exc:
                    report.failed[key] = exc.problems
                    self._failing[key] = exc.problems
                    kept = f"; still serving the version loaded before ({old.flow.digest})" if old else ""
                    errors = "\n".join(str(p) for p in exc.errors)
                    # A number another file holds may be freed by that file's next save: tried
                    # again at each check. Other faults are in these bytes: not retried.
                    if old and any(p.code != "dup-number" for p in exc.errors):
                        old.mtime, old.size = st.st_mtime, st.st_size
                    elif self._refused.get(key) == errors:
                        continue  # a new file still refused for the same reasons: said already
                    else:  # tried again each time: what refused it may be another file
                        self._refused[key] = errors
                    log.error("flow file %s failed its check and was NOT loaded%s:\n%s", key, kept, errors)
                    if self.on_refused is not None:
                        self.on_refused(key)
                    continue
                self._refused.pop(key, None)
                self._failing.pop(key, None)
                # A renamed file: the flow loaded from its old name gives way to it.
                for gone in [k for k, v in self._loaded.items()
                             if k != key and v.flow.id == flow.id and not Path(k).exists()]:
                    del self._loaded[gone]
                    log.warning("flow '%s' now comes from %s (%s is gone)", flow.id, key, gone)
                self._loaded[key] = _Loaded(flow, st.st_mtime, st.st_size, directory)
                loaded_now.add(key)
                report.loaded.append(flow.id)
                if old:
                    log.warning("reloaded flow '%s' from %s (version %s)", flow.id, key, flow.digest)
            # A deleted file keeps serving: removing a live flow by accident must not drop
            # calls. Restart the server to unload it for good.
            self._checked = time.monotonic()
            self._flows = MappingProxyType(self._by_id())
            self._cross_check(report)
        self.last_report = report
        return report

    def _unique_id(self, flow: Flow, key: str) -> None:
        for other_key, other in self._loaded.items():
            if other_key != key and other.flow.id == flow.id and Path(other_key).exists():
                raise FlowError([Problem(key, 1, 1, f"flow id '{flow.id}' is already used by "
                                         f"{other_key}; give each flow its own 'id'", code="dup-id")])

    def _unique_numbers(self, flow: Flow, key: str, loaded_now: set[str]) -> None:
        """A running server does not hand a number a flow answers to another file saved later:
        such a file is refused (and tried again at each check, as the other file may give the
        number up). Files loaded in the same pass (all of them at start) are not refused for
        it: the first by name answers, and the clash is logged (see `_index_numbers`)."""
        mine = {e164: i for i, n in enumerate(flow.numbers) if (e164 := normalize(n, self.default_region))}
        for other_key, other in self._loaded.items():
            if (other_key == key or other_key in loaded_now or other.flow.id == flow.id
                    or not Path(other_key).exists()):
                continue
            for number in other.flow.numbers:
                e164 = normalize(number, self.default_region)
                if e164 and e164 in mine:
                    line, col = flow.source.where(("numbers", mine[e164]))
                    raise FlowError([Problem(key, line, col, f"{e164} is already answered by flow "
                                             f"'{other.flow.id}' ({other_key}); a number can "
                                             "have only one flow", code="dup-number")])

    def _directory(self, flow: Flow, path: Path) -> Directory | None:
        if not flow.directory:
            return None
        try:
            directory = open_directory(flow.directory, path.parent, self.default_region)
        except DirectoryError as exc:
            raise FlowError([Problem(str(path), None, None, f"caller directory: {exc}",
                                     code="directory")]) from None
        for problem in caller_field_problems(flow, getattr(directory, "columns", None)):
            log.warning("%s", problem)
        return directory

    def _environment(self, flow: Flow) -> None:
        """Say what will fail until the environment is set: secrets, allowed hosts."""
        for problem in environment_problems(flow, hosts=self.request_hosts):
            log.warning("%s", problem)

    def _index_numbers(self) -> list[str]:
        """Which flow answers each number: flows whose file is still there before those whose
        file is gone, then by file name; each number to its first claimant. Returns the clashes."""
        numbers: dict[str, str] = {}
        where: dict[str, str] = {}
        clashes = []
        for key, item in sorted(self._loaded.items(), key=lambda kv: (not Path(kv[0]).exists(), kv[0])):
            for number in item.flow.numbers:
                e164 = normalize(number, self.default_region)
                if not e164:
                    continue
                owner = numbers.setdefault(e164, item.flow.id)
                where.setdefault(e164, key)
                if owner != item.flow.id and not Path(key).exists():
                    clashes.append(f"flow '{item.flow.id}' ({key}, file gone) no longer answers "
                                   f"{e164}: flow '{owner}' ({where[e164]}) does")
                elif owner != item.flow.id:
                    clashes.append(f"{e164} is listed by flow '{owner}' ({where[e164]}) and by flow "
                                   f"'{item.flow.id}' ({key}); '{owner}' answers it. A number can "
                                   "have only one flow: fix this before the next restart")
        self._numbers = MappingProxyType(numbers)
        return clashes

    def _cross_check(self, report: LoadReport) -> None:
        flows = self._by_id()
        problems = self._index_numbers()
        for item in self._loaded.values():
            for node in item.flow.nodes.values():
                target = getattr(node, "flow", None)
                if node.kind == "goto_flow" and target not in flows:
                    problems.append(f"flow '{item.flow.id}' node '{node.id}' goes to flow "
                                    f"'{target}', which is not loaded")
                offer = getattr(node, "callback", None)
                if offer is not None and offer.flow_named and offer.flow not in flows:
                    problems.append(f"flow '{item.flow.id}' node '{node.id}' offers callbacks run "
                                    f"by flow '{offer.flow}', which is not loaded; callback calls "
                                    "will use the built-in greeting")
        for problem in problems:
            if problem not in self._cross_said:  # said once, not at every check of the folder
                log.log(logging.WARNING if "file gone" in problem else logging.ERROR, "%s", problem)
        self._cross_said = set(problems)

    @property
    def failing(self) -> Mapping[str, list[Problem]]:
        """Flow files whose latest version failed its check, with their problems (an older
        version of such a file may still be serving)."""
        self.maybe_reload()
        return MappingProxyType({k: v for k, v in self._failing.items() if Path(k).exists()})

    def maybe_reload(self) -> None:
        if time.monotonic() - self._checked >= self.interval:
            self.reload()

    # -- lookups -------------------------------------------------------------------------

    def _by_id(self) -> dict[str, Flow]:
        return {i.flow.id: i.flow for i in self._loaded.values()}

    @property
    def flows(self) -> Mapping[str, Flow]:
        """The loaded flows by id (read-only; every webhook asks, so it is built per load)."""
        self.maybe_reload()
        return self._flows

    def get(self, flow_id: str) -> Flow | None:
        return self.flows.get(flow_id)

    def close_connections(self) -> None:
        """Close the database connections of SQL caller directories (before a fork: each
        process opens its own on the next refresh)."""
        for item in self._loaded.values():
            engine = getattr(item.directory, "engine", None)
            if engine is not None:
                engine.dispose()

    def directory(self, flow: Flow) -> Directory | None:
        for item in self._loaded.values():
            if item.flow.id == flow.id:
                return item.directory
        return None

    def for_number(self, to_number: str | None) -> Flow | None:
        """The flow that answers calls to `to_number`, else the default flow."""
        flows = self.flows
        to = normalize(to_number, self.default_region) if to_number else None
        if to and to in self._numbers and self._numbers[to] in flows:
            return flows[self._numbers[to]]
        if self.default_flow and self.default_flow in flows:
            return flows[self.default_flow]
        defaults = [f for f in flows.values() if f.default]
        if defaults:
            return sorted(defaults, key=lambda f: f.id)[0]
        return next(iter(flows.values())) if len(flows) == 1 else None
