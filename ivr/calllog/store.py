"""The durable step log: calls, steps and recordings in a SQL database.

A SQLite file by default, PostgreSQL when one machine is not enough. Web processes never
write here on the webhook path: they append log records to a Redis stream and
`ivr.calllog.recorder` drains it into `Store.record` in batches. Every write is idempotent on its
keys, so a batch recorded twice (crash between commit and acknowledgement) is stored once.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from ivr.engine.states import Outcome

MIGRATIONS = Path(__file__).parent / "migrations"

# Key for pg_advisory_xact_lock, so processes starting together migrate one at a time.
MIGRATE_LOCK = zlib.crc32(b"ivr.store.migrate")

# How a call ended, from the caller's side (calls.outcome).
OUTCOMES = frozenset(Outcome)
RECORD_TYPES = ("call_started", "step", "call_ended", "recording", "callback", "message", "agent_state")
# A text message's states in the order they happen: a report arriving late never takes a
# text back to an earlier state (Twilio's callbacks may come out of order).
MESSAGE_RANKS = {"queued": 1, "accepted": 1, "sending": 2, "sent": 3, "delivered": 5,
                 "undelivered": 5, "failed": 5, "opted_out": 5, "read": 6}

# Limits that keep a record from failing in the database instead of in `parse_record`
# (where it is rejected alone): identifiers stay well inside PostgreSQL's index row size,
# integers inside its INTEGER.
NAME_MAX = 200
INT_MIN, INT_MAX = -(2**31), 2**31 - 1


class UTCDateTime(sa.TypeDecorator):
    """A timestamp stored in UTC and always returned as an aware UTC datetime.

    SQLite has no time zone type, so values are normalised to UTC before they are
    stored and the zone is put back on the way out.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return as_utc(value)


metadata = sa.MetaData()

# Keep in step with ivr/migrations/versions: migrations create the tables, these
# definitions are only used to build queries.
calls = sa.Table(
    "calls",
    metadata,
    sa.Column("call_sid", sa.String(), primary_key=True),
    sa.Column("parent_call_sid", sa.String(), nullable=True, index=True),
    sa.Column("flow", sa.String(), nullable=True),
    sa.Column("from_number", sa.String(), nullable=True),
    sa.Column("to_number", sa.String(), nullable=True),
    sa.Column("caller_known", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("customer_id", sa.String(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("answered_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("duration_s", sa.Integer(), nullable=True),
    sa.Column("status", sa.String(), nullable=True),
    sa.Column("outcome", sa.String(), nullable=True),
    sa.Column("last_node", sa.String(), nullable=True),
    sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("steps_count", sa.Integer(), nullable=False, server_default="0"),
    sa.Index("ix_calls_from_number_started_at", "from_number", "started_at"),
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("call_sid", sa.String(), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("flow", sa.String(), nullable=True),
    sa.Column("node", sa.String(), nullable=True),
    sa.Column("kind", sa.String(), nullable=True),
    sa.Column("event", sa.String(), nullable=False),
    sa.Column("digits", sa.String(), nullable=True),
    sa.Column("speech", sa.Text(), nullable=True),
    sa.Column("confidence", sa.Float(), nullable=True),
    sa.Column("intent", sa.String(), nullable=True),
    sa.Column("said", sa.Text(), nullable=True),
    sa.Column("action", sa.String(), nullable=True),
    sa.Column("detail", sa.Text(), nullable=True),
    sa.Index("ix_steps_flow_node", "flow", "node"),
)

recordings = sa.Table(
    "recordings",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("call_sid", sa.String(), nullable=False),
    sa.Column("seq", sa.Integer(), nullable=False),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("duration_s", sa.Integer(), nullable=True),
    sa.Column("path", sa.Text(), nullable=True),
    sa.Column("transcript", sa.Text(), nullable=True),
    sa.Column("intent", sa.String(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("call_sid", "seq", name="uq_recordings_call_sid_seq"),
)

# Text messages flows send (sms: nodes), one row per text: the step that sent it, and its
# latest state (queued, sent, delivered, undelivered, failed, opted_out) as Twilio reports it.
messages = sa.Table(
    "messages",
    metadata,
    sa.Column("call_sid", sa.String(), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("flow", sa.String(), nullable=True),
    sa.Column("node", sa.String(), nullable=True),
    sa.Column("to_number", sa.String(), nullable=True),
    sa.Column("message_sid", sa.String(), nullable=True, index=True),
    sa.Column("status", sa.String(), nullable=False),
    sa.Column("rank", sa.Integer(), nullable=False),
    sa.Column("error_code", sa.Integer(), nullable=True),
    sa.Column("segments", sa.Integer(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Callbacks (callbacks/store.py keeps them in Redis; every change is logged as a snapshot with
# a version, and the newest version wins here, whatever order the snapshots arrive in).
callbacks = sa.Table(
    "callbacks",
    metadata,
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("status", sa.String(), nullable=False, index=True),
    sa.Column("queue", sa.String(), nullable=False),
    sa.Column("number", sa.String(), nullable=False),
    sa.Column("call_sid", sa.String(), nullable=True, index=True),
    sa.Column("flow", sa.String(), nullable=True),
    sa.Column("origin_flow", sa.String(), nullable=True),
    sa.Column("customer_id", sa.String(), nullable=True),
    sa.Column("intent", sa.String(), nullable=True),
    sa.Column("reason_url", sa.Text(), nullable=True),
    sa.Column("reason_text", sa.Text(), nullable=True),
    sa.Column("enqueued_at", UTCDateTime(), nullable=False),
    sa.Column("requested_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("max_attempts", sa.Integer(), nullable=True),
    sa.Column("agent", sa.String(), nullable=True),
    sa.Column("last_result", sa.String(), nullable=True),
    sa.Column("closed_reason", sa.Text(), nullable=True),
    sa.Column("callback_call_sid", sa.String(), nullable=True),
    sa.Column("connected_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("wait_s", sa.Float(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=True),
)

callback_attempts = sa.Table(
    "callback_attempts",
    metadata,
    sa.Column("callback_id", sa.String(), primary_key=True),
    sa.Column("attempt", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("call_sid", sa.String(), nullable=True, index=True),
    sa.Column("agent", sa.String(), nullable=True),
    sa.Column("placed_at", UTCDateTime(), nullable=True),
    sa.Column("answered_at", UTCDateTime(), nullable=True),
    sa.Column("answered_by", sa.String(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("result", sa.String(), nullable=True),
    sa.Column("version", sa.Integer(), nullable=False),
)

# Every change of an agent's state (callbacks/agent_state.py), numbered per agent: the
# per-agent reports are made from these.
agent_states = sa.Table(
    "agent_states",
    metadata,
    sa.Column("agent", sa.String(), primary_key=True),
    sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("from_state", sa.String(), nullable=True),
    sa.Column("to_state", sa.String(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False, index=True),
    sa.Column("call_sid", sa.String(), nullable=True),
    sa.Column("queue", sa.String(), nullable=True),
    sa.Column("callback_id", sa.String(), nullable=True),
    sa.Column("by", sa.String(), nullable=True),
)

# Per-call measures (ivr/metrics.py), written when the call ends, so reports never scan steps.
call_metrics = sa.Table(
    "call_metrics",
    metadata,
    sa.Column("call_sid", sa.String(), primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("start_hour", sa.Integer(), nullable=False),  # hours since the epoch, UTC
    sa.Column("flow", sa.String(), nullable=True),
    sa.Column("direction", sa.String(), nullable=False, server_default="inbound"),  # or callback
    sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("from_number", sa.String(), nullable=True),
    sa.Column("caller_known", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("outcome", sa.String(), nullable=True),
    sa.Column("last_node", sa.String(), nullable=True),
    sa.Column("last_kind", sa.String(), nullable=True),
    sa.Column("duration_s", sa.Integer(), nullable=True),
    sa.Column("first_prompt_s", sa.Float(), nullable=True),
    sa.Column("destination", sa.String(), nullable=True),
    sa.Column("destination_kind", sa.String(), nullable=True),
    sa.Column("time_to_destination_s", sa.Float(), nullable=True),
    sa.Column("menu_steps", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("prompt_s", sa.Float(), nullable=False, server_default="0"),
    sa.Column("queue", sa.String(), nullable=True),
    sa.Column("queue_wait_s", sa.Float(), nullable=True),
    sa.Column("answered", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("answer_wait_s", sa.Float(), nullable=True),
    sa.Column("callback", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("spoke", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("intent", sa.String(), nullable=True),
    sa.Column("intent_recognised", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("errors", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("self_service", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("repeat_24h", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("repeat_7d", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("steps_count", sa.Integer(), nullable=False, server_default="0"),
)

# How callers answered each menu (`ask` node) of a call.
menu_metrics = sa.Table(
    "menu_metrics",
    metadata,
    sa.Column("call_sid", sa.String(), primary_key=True),
    sa.Column("flow", sa.String(), primary_key=True),
    sa.Column("node", sa.String(), primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("direction", sa.String(), nullable=False, server_default="inbound"),
    sa.Column("queue", sa.String(), nullable=True),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in (
        "visits", "inputs", "speech_inputs", "speech_recognised", "keypad_inputs",
        "keypad_after_speech", "no_input", "no_match", "confirmations", "confirm_rejected", "escaped")),
)

# How each self-service node (`request`) of a call went: its API's answers, and whether the
# call was resolved in the IVR with them.
service_metrics = sa.Table(
    "service_metrics",
    metadata,
    sa.Column("call_sid", sa.String(), primary_key=True),
    sa.Column("flow", sa.String(), primary_key=True),
    sa.Column("node", sa.String(), primary_key=True),
    sa.Column("started_at", UTCDateTime(), nullable=False, index=True),
    sa.Column("is_test", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("direction", sa.String(), nullable=False, server_default="inbound"),
    sa.Column("queue", sa.String(), nullable=True),
    *(sa.Column(name, sa.Integer(), nullable=False, server_default="0") for name in (
        "requests", "answered", "errors", "waited", "ms_total")),
    sa.Column("resolved", sa.Boolean(), nullable=False, server_default=sa.false()),
)

# Dashboard users (supervisors), ivr/users.py.
users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(), nullable=False),
    sa.Column("password_hash", sa.String(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("last_login_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("username", name="uq_users_username"),
)

# Columns a call_started record owns: a replay or a late arrival overwrites these
# (and only these) on a row that a step or call_ended created first.
STARTED_COLUMNS = (
    "parent_call_sid", "flow", "from_number", "to_number", "caller_known",
    "customer_id", "started_at", "answered_at", "is_test",
)  # fmt: skip


def as_utc(value: datetime) -> datetime:
    """Return `value` as an aware UTC datetime; a naive value is taken to be UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def database_url(url: str) -> sa.URL:
    """Parse a database URL, sending bare PostgreSQL URLs to the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


class Store:
    """The step log database.

    `Store("sqlite:///var/ivr.db")` or `Store("postgresql://user@host/db")`. Call
    `migrate()` once at start (safe in every process), then `record()` batches of log
    records; the query methods return plain dicts.
    """

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.dialect = self.url.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self.url)
            # Take the write lock up front: a deferred transaction that later upgrades
            # to a writer can fail with "database is locked" without waiting.
            self._writer = self.engine.execution_options(ivr_begin="BEGIN IMMEDIATE")
            self._insert = sqlite.insert
        elif self.dialect == "postgresql":
            connect_args = {} if "connect_timeout" in self.url.query else {"connect_timeout": 10}
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
            self._writer = self.engine
            self._insert = postgresql.insert
        else:
            raise ValueError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._plans: dict[tuple[int, tuple[str, ...]], tuple[str, bool, list]] = {}

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    def _insert_many(self, conn: Connection, stmt: Any, rows: list[dict]) -> None:
        """Run the INSERT `stmt` for every row with the driver's executemany.

        SQLAlchemy's handling of each row's parameters cost more CPU than the database's
        insert, and the recorder inserts a few rows per webhook. The statement is compiled
        once per set of columns, and every value goes through its column type's bind
        processor, as SQLAlchemy would send it."""
        groups: dict[tuple[str, ...], list[dict]] = {}
        for row in rows:
            groups.setdefault(tuple(row), []).append(row)
        for keys, group in groups.items():
            plan = self._plans.get((id(stmt), keys))
            if plan is None:
                compiled = stmt.compile(dialect=conn.dialect, column_keys=list(keys))
                names = list(compiled.positiontup) if compiled.positional else list(keys)
                plan = self._plans[(id(stmt), keys)] = (compiled.string, compiled.positional, [
                    (name, stmt.table.c[name].type.dialect_impl(conn.dialect).bind_processor(conn.dialect))
                    for name in names])
            sql, positional, columns = plan
            if positional:
                params: list[Any] = [tuple(row[n] if p is None or row[n] is None else p(row[n])
                                           for n, p in columns) for row in group]
            else:
                params = [{n: row[n] if p is None or row[n] is None else p(row[n]) for n, p in columns}
                          for row in group]
            conn.exec_driver_sql(sql, params)

    @cached_property
    def _sql(self) -> SimpleNamespace:
        """The recorder's statements, built once: building them for every batch cost more
        than running them (a new INSERT ... ON CONFLICT builds its `excluded` columns)."""
        sids = sa.bindparam("sids", expanding=True)

        def upsert(table: sa.Table, key: list[str], columns: Iterable[str], newer: bool = False):
            insert = self._insert(table)
            return insert.on_conflict_do_update(
                index_elements=key, set_={c: insert.excluded[c] for c in columns},
                where=(table.c.version < insert.excluded.version) if newer else None)

        def others(table: sa.Table, key: list[str]) -> list[str]:
            return [c.name for c in table.columns if c.name not in key]

        real = (calls.c.from_number.in_(sa.bindparam("numbers", expanding=True)),
                calls.c.is_test.is_(False), calls.c.parent_call_sid.is_(None))
        count = sa.select(sa.func.count()).where(steps.c.call_sid == calls.c.call_sid).scalar_subquery()
        last_node = (sa.select(steps.c.node)
                     .where(steps.c.call_sid == calls.c.call_sid, steps.c.node.is_not(None))
                     .order_by(steps.c.seq.desc()).limit(1).scalar_subquery())
        return SimpleNamespace(
            call_stubs=self._insert(calls).on_conflict_do_nothing(index_elements=["call_sid"]),
            call_started=upsert(calls, ["call_sid"], STARTED_COLUMNS),
            steps=self._insert(steps).on_conflict_do_nothing(index_elements=["call_sid", "seq"]),
            count_steps=calls.update().where(calls.c.call_sid.in_(sids)).values(
                steps_count=count, last_node=sa.func.coalesce(last_node, calls.c.last_node)),
            recordings=self._insert(recordings).on_conflict_do_nothing(index_elements=["call_sid", "seq"]),
            agent_states=self._insert(agent_states).on_conflict_do_nothing(index_elements=["agent", "seq"]),
            callbacks=upsert(callbacks, ["id"], others(callbacks, ["id"]), newer=True),
            attempts=upsert(callback_attempts, ["callback_id", "attempt"],
                            others(callback_attempts, ["callback_id", "attempt"]), newer=True),
            ended_calls=sa.select(calls).where(calls.c.call_sid.in_(sids), calls.c.ended_at.is_not(None)),
            steps_of=sa.select(steps).where(steps.c.call_sid.in_(sids)),
            metrics=upsert(call_metrics, ["call_sid"], others(call_metrics, ["call_sid"])),
            drop_menus=menu_metrics.delete().where(menu_metrics.c.call_sid.in_(sids)),
            menus=menu_metrics.insert(),
            drop_services=service_metrics.delete().where(service_metrics.c.call_sid.in_(sids)),
            services=service_metrics.insert(),
            latest_before=(sa.select(calls.c.from_number, sa.func.max(calls.c.started_at))
                           .where(*real, calls.c.started_at >= sa.bindparam("since"),
                                  calls.c.started_at < sa.bindparam("first"))
                           .group_by(calls.c.from_number)),
            within=sa.select(calls.c.call_sid, calls.c.from_number, calls.c.started_at).where(
                *real, calls.c.started_at >= sa.bindparam("first"),
                calls.c.started_at < sa.bindparam("last")),
            call_ends={},  # one UPDATE per set of fields a call_ended record knows
        )

    def close(self) -> None:
        """Close all pooled connections."""
        self.engine.dispose()

    def migrate(self) -> None:
        """Bring the schema up to the newest migration; a no-op when it is current.

        Safe to run at every start from several processes at once: PostgreSQL takes an
        advisory lock, SQLite an immediate (write) transaction, for the whole upgrade.
        """
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
        with self._writer.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATE_LOCK})
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def begin_write(self) -> Any:
        """A write transaction; on SQLite it takes the write lock at once (see __init__)."""
        return self._writer.begin()

    def record(self, records: Iterable[dict]) -> None:
        """Apply a batch of log records in one transaction.

        Every record is checked before anything is written: one invalid record raises
        ValueError and nothing from the batch is stored.
        """
        parsed = [parse_record(r) for r in records]
        if parsed:
            with self._writer.begin() as conn:
                self._apply(conn, parsed)

    def _apply(self, conn: Connection, parsed: list[tuple[str, dict]]) -> None:
        by_type: dict[str, list[dict]] = {t: [] for t in RECORD_TYPES}
        for kind, row in parsed:
            by_type[kind].append(row)

        # Records can arrive before their call_started (a claimed batch, a replay):
        # give every call a row first, with a best guess that call_started overwrites.
        stubs: dict[str, dict] = {}
        starting = {row["call_sid"] for row in by_type["call_started"]}  # their upsert makes the row
        for kind, row in parsed:
            if kind in ("call_started", "callback", "agent_state") or row["call_sid"] in starting:
                continue
            guess = _start_guess(kind, row)
            stub = stubs.setdefault(
                row["call_sid"], {"call_sid": row["call_sid"], "flow": None, "started_at": guess}
            )
            stub["started_at"] = min(stub["started_at"], guess)
            stub["flow"] = stub["flow"] or row.get("flow")
        sql = self._sql
        if stubs:
            self._insert_many(conn, sql.call_stubs, list(stubs.values()))

        if by_type["call_started"]:
            self._insert_many(conn, sql.call_started, by_type["call_started"])

        fresh: dict[str, dict[int, dict]] = {}  # this batch's steps, per call and seq
        if by_type["step"]:
            self._insert_many(conn, sql.steps, by_type["step"])
            for row in by_type["step"]:
                fresh.setdefault(row["call_sid"], {}).setdefault(row["seq"], row)
            self._count_steps(conn, set(fresh))

        # Only the fields each record knows (a later duplicate with gaps keeps the rest), in one
        # executemany per set of fields.
        ends: dict[tuple[str, ...], list[dict]] = {}
        for row in by_type["call_ended"]:
            values = {k: v for k, v in row.items() if k != "call_sid" and v is not None}
            if values:
                ends.setdefault(tuple(sorted(values)), []).append({**values, "sid": row["call_sid"]})
        for fields, rows in ends.items():
            update = sql.call_ends.get(fields)
            if update is None:
                update = sql.call_ends[fields] = calls.update().where(
                    calls.c.call_sid == sa.bindparam("sid")).values({f: sa.bindparam(f) for f in fields})
            conn.execute(update, rows)

        if by_type["recording"]:
            conn.execute(sql.recordings, by_type["recording"])

        if by_type["callback"]:
            self._apply_callbacks(conn, by_type["callback"])

        if by_type["message"]:
            self._apply_messages(conn, by_type["message"])

        if by_type["agent_state"]:
            conn.execute(sql.agent_states, by_type["agent_state"])

        # A call's measures are (re)computed whenever something of an ended call arrives:
        # its end, or a step or its start arriving late.
        touched = {row["call_sid"] for kind, row in parsed if kind in ("call_started", "step", "call_ended")}
        if touched:
            self._summarise(conn, touched, fresh)

    def _apply_callbacks(self, conn: Connection, rows: list[dict]) -> None:
        # Newest snapshot per key only: one statement may not update a row twice (PostgreSQL).
        newest: dict[str, dict] = {}
        attempts: dict[tuple[str, int], dict] = {}
        for row in rows:
            cb = row["callback"]
            if cb["id"] not in newest or newest[cb["id"]]["version"] < cb["version"]:
                newest[cb["id"]] = cb
            att = row["attempt"]
            key = (att["callback_id"], att["attempt"]) if att else None
            if att and (key not in attempts or attempts[key]["version"] < att["version"]):
                attempts[key] = att
        for upsert, values in ((self._sql.callbacks, list(newest.values())),
                               (self._sql.attempts, list(attempts.values()))):
            if values:
                conn.execute(upsert, values)

    def _apply_messages(self, conn: Connection, rows: list[dict]) -> None:
        """Each text's row: what any report knows (who, which step, Twilio's id) is kept, and
        its state only moves forward."""
        merged: dict[tuple[str, int], dict] = {}  # one row per text: a statement updates a row once
        for row in sorted(rows, key=lambda r: (r["rank"], r["updated_at"])):
            key = (row["call_sid"], row["seq"])
            old = merged.get(key, {})
            merged[key] = {**row, **{k: v for k, v in old.items() if row.get(k) is None}}
        insert = self._insert(messages)
        newer = insert.excluded.rank >= messages.c.rank
        keep = ("flow", "node", "to_number", "message_sid", "error_code", "segments")
        upsert = insert.on_conflict_do_update(
            index_elements=["call_sid", "seq"],
            set_={**{c: sa.func.coalesce(insert.excluded[c], messages.c[c]) for c in keep},
                  **{c: sa.case((newer, insert.excluded[c]), else_=messages.c[c])
                     for c in ("status", "rank", "updated_at")}})
        conn.execute(upsert, list(merged.values()))

    def messages(self, call_sid: str) -> list[dict]:
        """The texts a call sent, in step order."""
        query = sa.select(messages).where(messages.c.call_sid == call_sid).order_by(messages.c.seq)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _summarise(self, conn: Connection, call_sids: set[str],
                   fresh: dict[str, dict[int, dict]] | None = None) -> int:
        """Write `call_metrics`, `menu_metrics` and `service_metrics` for those of the calls that
        have ended.

        `fresh` are the step rows just written, per call and seq. On SQLite, a call whose
        steps were all in them (the database counted the call's steps in this transaction) is
        summarised from those rows; the others' steps are read back. On PostgreSQL they are
        always read back: two recorders' transactions can overlap there, and a count taken
        while waiting for the other's row lock misses the other's steps."""
        from .metrics import services, summarise

        sql = self._sql
        ended = [dict(r._mapping) for r in conn.execute(sql.ended_calls, {"sids": sorted(call_sids)})]
        if not ended:
            return 0
        sids = [c["call_sid"] for c in ended]
        by_call: dict[str, list[dict]] = {sid: [] for sid in sids}
        unread = []
        for call in ended:
            rows = (fresh or {}).get(call["call_sid"]) if self.dialect == "sqlite" else None
            if rows is not None and len(rows) == call["steps_count"]:
                by_call[call["call_sid"]] = [
                    dict(row, detail=_loads(row["detail"]) if row["detail"] else None)
                    for row in rows.values()]
            else:
                unread.append(call["call_sid"])
        for r in conn.execute(sql.steps_of, {"sids": unread}) if unread else ():
            row = dict(r._mapping)
            row["detail"] = _loads(row["detail"]) if row["detail"] else None
            by_call[row["call_sid"]].append(row)
        earlier = self._earlier_calls(conn, ended)
        metric_rows: list[dict] = []
        menu_rows: list[dict] = []
        service_rows: list[dict] = []
        for call in ended:
            row, menus = summarise(call, by_call[call["call_sid"]])
            service_rows += services(row, by_call[call["call_sid"]])
            number, at = call.get("from_number"), call["started_at"]
            if number and not call.get("is_test") and not call.get("parent_call_sid"):
                times = [t for sid, t in earlier.get(number, ()) if sid != call["call_sid"] and t < at]
                row["repeat_24h"] = any(at - t <= timedelta(hours=24) for t in times)
                row["repeat_7d"] = any(at - t <= timedelta(days=7) for t in times)
            metric_rows.append(row)
            menu_rows += menus
        self._insert_many(conn, sql.metrics, metric_rows)
        conn.execute(sql.drop_menus, {"sids": sids})
        if menu_rows:
            self._insert_many(conn, sql.menus, menu_rows)
        conn.execute(sql.drop_services, {"sids": sids})
        if service_rows:
            self._insert_many(conn, sql.services, service_rows)
        return len(metric_rows)

    def _earlier_calls(self, conn: Connection, ended: list[dict]) -> dict[str, list[tuple[str, datetime]]]:
        """Real inbound calls from the numbers of `ended` that may have come within 7 days before
        one of them: the latest before the first of them, and every one in their own span.

        Whether a call repeats depends only on the latest earlier call from its number, so a
        number that calls all day costs one row here, not one per call."""
        numbers = sorted({c["from_number"] for c in ended if c.get("from_number")})
        if not numbers:
            return {}
        first = min(c["started_at"] for c in ended)
        last = max(c["started_at"] for c in ended)
        out: dict[str, list[tuple[str, datetime]]] = {}
        for number, at in conn.execute(self._sql.latest_before, {
                "numbers": numbers, "since": first - timedelta(days=7), "first": first}):
            out.setdefault(number, []).append(("", at))
        for sid, number, at in conn.execute(self._sql.within, {"numbers": numbers, "first": first,
                                                                "last": last}):
            out.setdefault(number, []).append((sid, at))
        return out

    def rebuild_metrics(self, since: datetime | None = None, batch: int = 500) -> int:
        """Recompute the measures of every ended call (started since `since`); returns how many.

        For calls recorded before the summaries existed, or after a change of definitions.
        """
        done = 0
        after = ""
        while True:
            query = (sa.select(calls.c.call_sid)
                     .where(calls.c.call_sid > after, calls.c.ended_at.is_not(None))
                     .order_by(calls.c.call_sid).limit(batch))
            if since is not None:
                query = query.where(calls.c.started_at >= since)
            with self.engine.connect() as conn:
                sids = [r[0] for r in conn.execute(query)]
            if not sids:
                return done
            with self._writer.begin() as conn:
                done += self._summarise(conn, set(sids))
            after = sids[-1]

    def _count_steps(self, conn: Connection, call_sids: set[str]) -> None:
        # Recounted rather than incremented, so replayed steps are not counted twice.
        conn.execute(self._sql.count_steps, {"sids": sorted(call_sids)})

    def call(self, call_sid: str) -> dict | None:
        """The call's row, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(calls).where(calls.c.call_sid == call_sid)).first()
        return dict(row._mapping) if row else None

    def steps(self, call_sid: str) -> list[dict]:
        """The call's steps in order; `detail` is decoded from JSON."""
        query = sa.select(steps).where(steps.c.call_sid == call_sid).order_by(steps.c.seq)
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(query)]
        for row in rows:
            if row["detail"] is not None:
                row["detail"] = _loads(row["detail"])
        return rows

    def calls(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 100,
    ) -> list[dict]:
        """Calls started in [since, until), newest first."""
        query = sa.select(calls).order_by(calls.c.started_at.desc(), calls.c.call_sid)
        if since is not None:
            query = query.where(calls.c.started_at >= since)
        if until is not None:
            query = query.where(calls.c.started_at < until)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def update_recording(self, call_sid: str, seq: int, url: str, *, path: str | None = None,
                         transcript: str | None = None, intent: str | None = None,
                         duration_s: int | None = None) -> None:
        """Attach what a worker learned from a recording (its file, transcript, intent).

        An upsert: the worker may finish before the recorder has written the recording row.
        """
        values = {"path": path, "transcript": transcript, "intent": intent}
        values = {k: v for k, v in values.items() if v is not None}
        row = {"call_sid": call_sid, "seq": seq, "url": url, "duration_s": duration_s,
               "created_at": datetime.now(UTC), **values}
        insert = self._insert(recordings)
        if values:
            stmt = insert.on_conflict_do_update(index_elements=["call_sid", "seq"], set_=values)
        else:
            stmt = insert.on_conflict_do_nothing(index_elements=["call_sid", "seq"])
        with self.engine.begin() as conn:
            conn.execute(stmt, row)

    def callback(self, callback_id: str) -> dict | None:
        """A callback's row (its latest known state), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(callbacks).where(callbacks.c.id == callback_id)).first()
        return dict(row._mapping) if row else None

    def callback_attempts(self, callback_id: str) -> list[dict]:
        query = (sa.select(callback_attempts).where(callback_attempts.c.callback_id == callback_id)
                 .order_by(callback_attempts.c.attempt))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def callbacks_between(self, since: datetime | None = None, until: datetime | None = None) -> list[dict]:
        """Callbacks requested in [since, until), oldest first."""
        query = sa.select(callbacks).order_by(callbacks.c.requested_at, callbacks.c.id)
        if since is not None:
            query = query.where(callbacks.c.requested_at >= since)
        if until is not None:
            query = query.where(callbacks.c.requested_at < until)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def unprocessed_recordings(self) -> list[dict]:
        """Recordings in the log that no worker has stored yet, oldest first, with their flow."""
        query = (sa.select(recordings.c.call_sid, recordings.c.seq, recordings.c.url,
                           recordings.c.duration_s, calls.c.flow)
                 .select_from(recordings.outerjoin(calls, calls.c.call_sid == recordings.c.call_sid))
                 .where(recordings.c.path.is_(None)).order_by(recordings.c.created_at, recordings.c.id))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def recordings(self, call_sid: str) -> list[dict]:
        """The call's recordings in step order."""
        query = sa.select(recordings).where(recordings.c.call_sid == call_sid).order_by(recordings.c.seq)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]


def _sqlite_engine(url: sa.URL) -> Engine:
    database = url.database or ""
    in_memory = database in ("", ":memory:") or url.query.get("mode") == "memory"
    if in_memory:
        # One shared connection, or every pooled connection would see its own empty
        # database. For tests and trying things out only.
        engine = sa.create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        if not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin,
        # so DDL and the migration lock sit inside real transactions.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        if not in_memory:
            _set_wal(cursor)
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(conn.get_execution_options().get("ivr_begin", "BEGIN"))

    return engine


def _set_wal(cursor: Any) -> None:
    # Switching journal mode ignores busy_timeout: while another process holds a lock on a new
    # database file (migrating it), it fails at once with "database is locked". Try again.
    import sqlite3
    import time

    for attempt in range(200):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 199:
                raise
            time.sleep(0.05)


def _start_guess(kind: str, row: dict) -> datetime:
    """When a call probably started, judged from a record that is not call_started."""
    if kind == "step":
        return row["at"]
    if kind == "recording":
        return row["created_at"]
    if kind == "message":
        return row["updated_at"]
    ended = row.get("ended_at") or row.get("answered_at")
    if ended is None:
        return datetime.now(UTC)
    return ended - timedelta(seconds=row.get("duration_s") or 0)


# -- record checking ------------------------------------------------------------------


def parse_record(record: Any) -> tuple[str, dict]:
    """Check one log record; return its type and the row values to write.

    Raises ValueError naming the field when the record cannot be stored.
    """
    if not isinstance(record, dict):
        raise ValueError(f"log record must be an object, not {type(record).__name__}")
    kind = record.get("type")
    parser = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parser is None:
        raise ValueError(f"unknown log record type {kind!r}")
    return kind, parser(record)


def _call_started(r: dict) -> dict:
    return {
        "call_sid": _text(r, "call_sid", required=True),
        "parent_call_sid": _text(r, "parent_call_sid"),
        "flow": _text(r, "flow"),
        "from_number": _text(r, "from_number"),
        "to_number": _text(r, "to_number"),
        "caller_known": _bool(r, "caller_known"),
        "customer_id": _text(r, "customer_id"),
        "started_at": _time(r, "started_at", required=True),
        # Twilio asks for the flow when the call connects, and our first answer picks it up.
        "answered_at": _time(r, "started_at", required=True),
        "is_test": _bool(r, "is_test"),
    }


def _step(r: dict) -> dict:
    detail = r.get("detail")
    if detail is not None:
        detail = _json(detail)
    seq = _int(r, "seq", required=True)
    if seq < 0:
        raise ValueError(f"seq: must not be negative, got {seq}")
    return {
        "call_sid": _text(r, "call_sid", required=True),
        "seq": seq,
        "at": _time(r, "at", required=True),
        "flow": _text(r, "flow"),
        "node": _text(r, "node"),
        "kind": _text(r, "kind"),
        "event": _text(r, "event", required=True),
        "digits": _text(r, "digits"),
        "speech": _text(r, "speech", long=True),
        "confidence": _float(r, "confidence"),
        "intent": _text(r, "intent"),
        "said": _text(r, "said", long=True),
        "action": _text(r, "action"),
        "detail": detail,
    }


def _json(value: Any) -> str:
    """Compact JSON text; orjson is ten times faster than json for a step's detail, and json
    takes what orjson refuses (keys that are not strings, integers past 64 bits). orjson
    writes NaN and infinities as null (json would write NaN, which is not JSON), and times,
    UUIDs and dataclasses as strings instead of refusing them."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise ValueError(f"detail: not JSON-serialisable: {e}") from None


_LONG_NUMBER = re.compile(r"\d{20}")


def _loads(text: str) -> Any:
    """JSON text back to values as json reads it: orjson reads integers past 64 bits as floats
    (losing digits) and refuses NaN, so text that may hold either goes to json."""
    if _LONG_NUMBER.search(text) is None:
        try:
            return orjson.loads(text)
        except ValueError:  # NaN, which json writes and orjson does not read
            pass
    return json.loads(text)


def _call_ended(r: dict) -> dict:
    outcome = _text(r, "outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise ValueError(f"outcome: {outcome!r} is not one of {', '.join(sorted(OUTCOMES))}")
    return {
        "call_sid": _text(r, "call_sid", required=True),
        "status": _text(r, "status"),
        "duration_s": _int(r, "duration_s"),
        "answered_at": _time(r, "answered_at"),
        "ended_at": _time(r, "ended_at"),
        "outcome": outcome,
        "last_node": _text(r, "last_node"),
    }


def _recording(r: dict) -> dict:
    return {
        "call_sid": _text(r, "call_sid", required=True),
        "seq": _int(r, "seq", required=True),
        "url": _text(r, "url", required=True, long=True),
        "duration_s": _int(r, "duration_s"),
        "created_at": _time(r, "at") or datetime.now(UTC),
    }


def _message(r: dict) -> dict:
    status = _text(r, "status", required=True)
    if status not in MESSAGE_RANKS:
        raise ValueError(f"status: {status!r} is not a text message's state")
    return {
        "call_sid": _text(r, "call_sid", required=True),
        "seq": _int(r, "seq", required=True),
        "flow": _text(r, "flow"),
        "node": _text(r, "node"),
        "to_number": _text(r, "to"),
        "message_sid": _text(r, "sid"),
        "status": status,
        "rank": MESSAGE_RANKS[status],
        "error_code": _int(r, "error_code"),
        "segments": _int(r, "segments"),
        "updated_at": _time(r, "at") or datetime.now(UTC),
    }


def _callback(r: dict) -> dict:
    """A snapshot of a callback from callbacks/store.py: hash fields as text, times in epoch
    seconds. Gives the callbacks row and, once it has been dialled, the current attempt's row."""
    version = _int(r, "v", required=True)
    customer_id = r.get("caller_customer_id")
    row = {
        "id": _text(r, "id", required=True),
        "status": _text(r, "status", required=True),
        "queue": _text(r, "queue", required=True),
        "number": _text(r, "number", required=True),
        "call_sid": _text(r, "call_sid") or None,
        "flow": _text(r, "flow") or None,
        "origin_flow": _text(r, "origin_flow") or None,
        "customer_id": str(customer_id) if customer_id else None,
        "intent": _text(r, "intent") or None,
        "reason_url": _text(r, "reason_url", long=True) or None,
        "reason_text": _text(r, "reason_text", long=True) or None,
        "enqueued_at": _epoch(r, "enqueued_at", required=True),
        "requested_at": _epoch(r, "requested_at", required=True),
        "expires_at": _epoch(r, "expires_at"),
        "attempts": _int(r, "attempts") or 0,
        "max_attempts": _int(r, "max_attempts"),
        "agent": _text(r, "agent") or None,
        "last_result": _text(r, "result") or None,
        "closed_reason": _text(r, "closed_reason", long=True) or None,
        "callback_call_sid": _text(r, "dial_sid") or None,
        "connected_at": _epoch(r, "connected_at"),
        "ended_at": _epoch(r, "ended_at"),
        "wait_s": _float(r, "wait_s") if r.get("wait_s") not in (None, "") else None,
        "version": version,
        "updated_at": _epoch(r, "updated_at"),
    }
    attempt = _int(r, "dial_attempt") if r.get("dial_attempt") not in (None, "") else 0
    current = None
    if attempt:
        current = {
            "callback_id": row["id"], "attempt": attempt, "call_sid": _text(r, "dial_sid") or None,
            "agent": row["agent"], "placed_at": _epoch(r, "claimed_at"),
            "answered_at": _epoch(r, "answered_at"), "answered_by": _text(r, "answered_by") or None,
            "ended_at": _epoch(r, "attempt_ended_at"), "result": row["last_result"], "version": version,
        }
    return {"callback": row, "attempt": current}


def _epoch(r: dict, key: str, required: bool = False) -> datetime | None:
    """A time written as epoch seconds, possibly as text (Redis hash fields are text)."""
    value = _get(r, key, required)
    if value in (None, ""):
        if required:
            raise ValueError(f"{r.get('type')}: missing {key}")
        return None
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        raise ValueError(f"{key}: expected epoch seconds, got {value!r}") from None


def _agent_state(r: dict) -> dict:
    return {
        "agent": _text(r, "agent", required=True),
        "seq": _int(r, "seq", required=True),
        "from_state": _text(r, "from") or None,
        "to_state": _text(r, "to", required=True),
        "at": _epoch(r, "at", required=True),
        "call_sid": _text(r, "call_sid") or None,
        "queue": _text(r, "queue") or None,
        "callback_id": _text(r, "callback") or None,
        "by": _text(r, "by") or None,
    }


_PARSERS = {
    "call_started": _call_started,
    "step": _step,
    "call_ended": _call_ended,
    "recording": _recording,
    "callback": _callback,
    "message": _message,
    "agent_state": _agent_state,
}


def _get(r: dict, key: str, required: bool) -> Any:
    value = r.get(key)
    if value is None and required:
        raise ValueError(f"{r.get('type')}: missing {key}")
    return value


def _text(r: dict, key: str, required: bool = False, long: bool = False) -> str | None:
    value = r.get(key)
    if value.__class__ is str and value and (long or len(value) <= NAME_MAX) and "\x00" not in value:
        return value  # the usual case, all checks at once (this runs for every field of every record)
    value = _get(r, key, required)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{key}: expected a string, got {value!r}")
    value = str(value)
    if required and not value:
        raise ValueError(f"{r.get('type')}: empty {key}")
    return fit(value, None if long else NAME_MAX)


def fit(value: str, limit: int | None = NAME_MAX) -> str:
    """A value as the database can hold it, with a note where it was changed, so a record is
    never refused for what a caller or a request put in it: NUL characters (PostgreSQL text
    cannot hold them) become U+FFFD, the replacement character, and a value past `limit` is
    cut, ending with a note of its length and a digest of the whole (two long values that
    differ after the cut stay different: call ids must)."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if limit is not None and len(value) > limit:
        digest = hashlib.sha1(value.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        note = f"…[{len(value)} characters, cut; sha1 {digest}]"
        value = value[: limit - len(note)] + note
    return value


def _int(r: dict, key: str, required: bool = False) -> int | None:
    value = _get(r, key, required)
    if value is None:
        return None
    number = None
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        try:
            number = int(value.strip())  # Twilio sends numbers as form strings
        except ValueError:
            pass
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    if number is None or not INT_MIN <= number <= INT_MAX:
        raise ValueError(f"{key}: expected a 32-bit integer, got {value!r}")
    return number


def _float(r: dict, key: str) -> float | None:
    value = r.get(key)
    if value is None:
        return None
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"{key}: expected a number, got {value!r}")
    return number


def _bool(r: dict, key: str) -> bool:
    value = r.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ValueError(f"{key}: expected true or false, got {value!r}")
    return value


def _time(r: dict, key: str, required: bool = False) -> datetime | None:
    value = _get(r, key, required)
    if value is None:
        return None
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise ValueError(f"{key}: expected an ISO 8601 time or epoch seconds, got {value!r}")
