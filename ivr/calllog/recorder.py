"""Drain the Redis log stream into the SQL step log.

Web processes never write SQL on the webhook path: the script that saves a call's state
adds its log records to a Redis stream atomically with it (ivr/state.py). On each host the web
process holding a Redis lease runs the `Recorder` thread (ivr/services.py); recorders on several
hosts, or `ivr recorder`, form one consumer group, so each entry is taken by one of them. An
entry holds one record, or (one entry per webhook) a JSON array of records. An
entry is acknowledged and deleted only after its batch is committed, so while the
database is down entries wait in Redis; entries a dead process read but never
acknowledged are claimed by another after `claim_idle_ms`. Store writes are idempotent,
so an entry recorded twice is stored once.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from datetime import date, datetime
from typing import Any

import orjson
from redis.exceptions import ResponseError
from sqlalchemy.exc import DataError, IntegrityError

log = logging.getLogger(__name__)

STREAM = "ivr:log"
GROUP = "recorder"

# Errors caused by the records themselves rather than by the database being unwell:
# retrying will never help, so the offending entry goes to the dead-letter stream.
BAD_RECORD = (ValueError, IntegrityError, DataError)

# Delete consumers (left by processes that exited) with nothing pending that have been
# idle for longer than ARGV[2] ms. One script, so no consumer reads in between.
PRUNE_CONSUMERS = """
local removed = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if f['name'] ~= ARGV[3] and f['pending'] == 0 and f['idle'] > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], f['name'])
    removed = removed + 1
  end
end
return removed
"""


def encode(record: dict | list[dict]) -> bytes:
    """A log record, or a list of them, as compact JSON (UTF-8); datetimes become ISO 8601
    strings."""
    try:
        return orjson.dumps(record, default=_json_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # what orjson refuses (an integer past 64 bits): the store judges it
        return json.dumps(record, separators=(",", ":"), default=_json_default).encode()


def append(pipe_or_redis: Any, records: list[dict], stream: str = STREAM) -> None:
    """Add log records to the stream as one entry (field ``r``, a JSON array).

    Pass the MULTI pipeline that writes the related state (test calls do), so both are
    stored together or not at all; live calls' records go in with their state in the save
    script of ivr/state.py. The stream is never trimmed here:
    the recorder deletes entries once they are in the database.
    """
    if records:
        pipe_or_redis.xadd(stream, {"r": encode(records)})


class Recorder:
    """Moves log records from the Redis stream into a `Store`, in batches.

    Not thread-safe: run one per thread (`start_thread`), or call `drain`/`flush`
    directly, not both at once.
    """

    def __init__(
        self,
        redis: Any,
        store: Any,
        stream: str = STREAM,
        group: str = GROUP,
        consumer: str | None = None,
        batch: int = 1000,
        claim_idle_ms: int = 30000,
    ) -> None:
        self.redis = redis
        self.store = store
        self.stream = stream
        self.dead_stream = f"{stream}:dead"
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}"
        self.batch = batch
        self.claim_idle_ms = claim_idle_ms
        # Consumers (of exited processes) idle this long with nothing pending are removed.
        self.prune_idle_ms = max(10 * claim_idle_ms, 3_600_000)
        self.stop_event: threading.Event | None = None
        # True when the last drain could not write to the store (run() backs off).
        self.store_failed = False
        self._schema_unsure = False
        self._group_ready = False
        # Entries this consumer read but has not acknowledged (a failed batch, or a
        # previous process with the same name) are re-read with ID 0 before new ones.
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim = 0.0
        self._last_read = 0
        self._prune = redis.register_script(PRUNE_CONSUMERS)

    def ensure_group(self) -> None:
        """Create the stream and the consumer group if they do not exist yet."""
        try:
            # From ID 0: entries appended before any recorder started are recorded too.
            self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._group_ready = True

    def drain(self, block_ms: int | None = None) -> int:
        """Record one batch; return how many records were written to the store.

        Reads this consumer's unacknowledged entries first, then, every
        `claim_idle_ms`/2, entries other consumers left pending too long, then new
        entries (waiting up to `block_ms` for some). If the store fails, the entries
        stay pending for a later try and 0 is returned.
        """
        self.store_failed = False
        self._last_read = 0
        if not self._group_ready:
            self.ensure_group()
        try:
            entries = self._read(block_ms)
        except ResponseError as e:
            if "NOGROUP" not in str(e):
                raise
            # The stream vanished (Redis restarted without persistence): start again.
            self.ensure_group()
            entries = self._read(block_ms)
        self._last_read = len(entries)
        if not entries:
            return 0
        try:
            return self._process(entries)
        except BaseException:
            self._own_pending = True
            raise

    def run(self, stop: threading.Event, block_ms: int = 1000, linger_s: float = 1.0) -> None:
        """Drain until `stop` is set; outlives Redis and database outages.

        After a small batch it waits `linger_s` before reading again, so records arrive in
        batches: a batch's commit and statements cost about as much as a few hundred records,
        so one per batch, not per record.
        """
        delay = 0.0
        while not stop.is_set():
            try:
                self.drain(block_ms=max(block_ms, 1))
                failed = self.store_failed
                if not failed and 0 < self._last_read < self.batch and linger_s:
                    stop.wait(linger_s)
            except Exception:
                log.exception("recorder %s: cannot read the log stream", self.consumer)
                self._group_ready = False
                failed = True
            if failed:
                delay = min(max(delay * 2, 0.5), 30.0)
                stop.wait(delay)
            else:
                delay = 0.0

    def start_thread(self, stop: threading.Event | None = None, block_ms: int = 1000) -> threading.Thread:
        """Run the recorder in a daemon thread; set `self.stop_event` to end it."""
        self.stop_event = stop or threading.Event()
        thread = threading.Thread(
            target=self.run,
            args=(self.stop_event, block_ms),
            name=f"ivr-recorder-{self.consumer}",
            daemon=True,
        )
        thread.start()
        return thread

    def flush(self, timeout_s: float = 5.0) -> int:
        """Drain until nothing is new and nothing is pending; return records written.

        Gives up after `timeout_s` (database down, or another live consumer still
        holding entries) and returns what it managed.
        """
        deadline = time.monotonic() + timeout_s
        total = 0
        while True:
            written = self.drain()
            total += written
            if self._last_read == 0 and self._pending() == 0:
                return total
            if time.monotonic() >= deadline:
                log.warning("recorder %s: flush gave up after %.1fs", self.consumer, timeout_s)
                return total
            if written == 0:
                time.sleep(0.05)

    # -- reading ----------------------------------------------------------------------

    def _read(self, block_ms: int | None) -> list[tuple[str, dict | None]]:
        if self._own_pending:
            entries = self._xreadgroup("0", None)
            if entries:
                return entries
            self._own_pending = False
        if time.monotonic() >= self._next_claim:
            entries = self._claim()
            if entries:
                return entries
        return self._xreadgroup(">", block_ms)

    def _xreadgroup(self, last_id: str, block_ms: int | None) -> list[tuple[str, dict | None]]:
        reply = self.redis.xreadgroup(
            self.group, self.consumer, {self.stream: last_id}, count=self.batch, block=block_ms
        )
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: [[entry, ...]]}
            lists = [entries for nested in reply.values() for entries in nested]
        else:  # RESP2: [[stream, [entry, ...]]]
            lists = [entries for _, entries in reply]
        return [_entry(e) for entries in lists for e in entries]

    def _claim(self) -> list[tuple[str, dict | None]]:
        reply = self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch,
        )
        cursor, entries = _str(reply[0]), reply[1]
        self._claim_cursor = cursor
        if cursor == "0-0":
            # A full pass over the pending list: rest before the next one.
            self._next_claim = time.monotonic() + self.claim_idle_ms / 2000
            self._prune(keys=[self.stream], args=[self.group, self.prune_idle_ms, self.consumer])
        claimed = [_entry(e) for e in entries]
        if claimed:
            log.info("recorder %s: claimed %d stale entries", self.consumer, len(claimed))
        return claimed

    def _pending(self) -> int:
        return int(self.redis.xpending(self.stream, self.group)["pending"])

    # -- writing ----------------------------------------------------------------------

    def _process(self, entries: list[tuple[str, dict | None]]) -> int:
        done: list[str] = []  # entries already deleted: nothing left to record
        good: list[tuple[str, list]] = []
        dead: list[tuple[str, str, str]] = []
        for entry_id, fields in entries:
            if not fields:
                done.append(entry_id)
                continue
            raw = fields.get("r")
            try:
                good.append((entry_id, _records(raw)))
            except ValueError as e:
                dead.append((entry_id, raw if raw is not None else json.dumps(fields), str(e)))

        recorded, failed, written = self._record(good)
        dead += failed
        self._finish(done + recorded, dead)
        return written

    def _record(self, good: list[tuple[str, list]]) -> tuple[list[str], list[tuple[str, str, str]], int]:
        """Write a batch; return the entry IDs done, the (id, raw, error) rejected, and how
        many records were written."""
        records = [record for _, entry in good for record in entry]
        if not records:
            return [entry_id for entry_id, _ in good], [], 0
        try:
            if self._schema_unsure:  # back from an outage: a new database may have no tables yet
                self.store.migrate()
                self._schema_unsure = False
            self.store.record(records)
            return [entry_id for entry_id, _ in good], [], len(records)
        except BAD_RECORD:
            # Somewhere in the batch is a record the store refuses: find it.
            return self._record_one_by_one(good)
        except Exception:
            self._store_down()
            return [], [], 0

    def _record_one_by_one(
        self, good: list[tuple[str, list]]
    ) -> tuple[list[str], list[tuple[str, str, str]], int]:
        """Entry by entry, and within a refused entry record by record: only the records the
        store refuses are dead-lettered, each on its own; the rest of their entry is stored.
        An entry is finished (acknowledged, its refused records dead-lettered) only once all
        its records are through: if the database fails partway, the entry stays pending and
        is tried again whole (writes are idempotent)."""
        recorded: list[str] = []
        dead: list[tuple[str, str, str]] = []
        written = 0
        for entry_id, entry in good:
            refused: list[tuple[str, str, str]] = []
            try:
                try:
                    self.store.record(entry)
                    written += len(entry)
                except BAD_RECORD:
                    for record in entry:
                        try:
                            self.store.record([record])
                            written += 1
                        except BAD_RECORD as e:
                            refused.append((entry_id, _raw(record), f"{type(e).__name__}: {e}"))
            except Exception:
                self._store_down()
                break
            recorded.append(entry_id)
            dead += refused
        return recorded, dead, written

    def _store_down(self) -> None:
        log.exception("recorder %s: cannot write to %r; entries stay pending", self.consumer, self.store)
        self.store_failed = True
        self._schema_unsure = True
        self._own_pending = True

    def _finish(self, ids: list[str], dead: list[tuple[str, str, str]]) -> None:
        """Dead-letter rejected entries, then acknowledge and delete, all in one MULTI."""
        if not ids and not dead:
            return
        pipe = self.redis.pipeline(transaction=True)
        for entry_id, raw, error in dead:
            log.error("recorder %s: entry %s rejected: %s", self.consumer, entry_id, error)
            pipe.xadd(
                self.dead_stream,
                {"r": raw, "error": error, "id": entry_id, "stream": self.stream},
            )
        all_ids = ids + [entry_id for entry_id, _, _ in dead]
        pipe.xack(self.stream, self.group, *all_ids)
        pipe.xdel(self.stream, *all_ids)
        pipe.execute()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _records(raw: str | None) -> list:
    """The records of an entry's field ``r``: one JSON object, or an array of them."""
    try:
        value = orjson.loads(raw) if raw is not None else None
    except ValueError:  # entries of older versions may hold NaN, which json reads
        value = json.loads(raw)
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value  # a member that is not an object is refused by the store, on its own
    raise ValueError("entry has no JSON object or array in field r")


def _raw(record: Any) -> str:
    try:
        return encode(record).decode()
    except (TypeError, ValueError):
        return repr(record)


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry(entry: Any) -> tuple[str, dict | None]:
    """(id, fields) with str keys and values whatever the client's decode_responses."""
    entry_id, fields = entry[0], entry[1]
    if fields is None:
        return _str(entry_id), None
    return _str(entry_id), {_str(k): _str(v) for k, v in fields.items()}
