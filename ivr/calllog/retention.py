"""Deleting old calls and recordings: `ivr retention`.

Calls (with their steps, summaries, recordings, text messages and callbacks) that started before the events
cut-off are deleted whole, so no report ever sees half a call. Recordings can be kept for a
shorter time than the rest (their audio holds the caller's voice): rows older than the
recordings cut-off are deleted with the audio file kept under IVR_RECORDINGS_DIR. Work is done
in small transactions so the recorder is never held up for long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .store import (
    Store,
    call_metrics,
    callback_attempts,
    callbacks,
    calls,
    menu_metrics,
    messages,
    recordings,
    service_metrics,
    steps,
)


@dataclass
class Purged:
    """What was (or, in a dry run, would be) deleted."""

    calls: int = 0
    steps: int = 0
    recordings: int = 0
    files: int = 0
    callbacks: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def cutoffs(retention_days: int, recordings_days: int = 0, now: datetime | None = None
            ) -> tuple[datetime | None, datetime | None]:
    """(events cut-off, recordings cut-off); None where nothing is to be deleted."""
    now = now or datetime.now(UTC)
    events = now - timedelta(days=retention_days) if retention_days > 0 else None
    rec_days = recordings_days if recordings_days > 0 else retention_days
    recs = now - timedelta(days=rec_days) if rec_days > 0 else None
    if events is not None and recs is not None:
        recs = max(recs, events)  # a call deleted whole takes its recordings with it
    return events, recs


def purge(store: Store, events_before: datetime | None, recordings_before: datetime | None,
          recordings_dir: Path | None = None, dry_run: bool = False, chunk: int = 1000) -> Purged:
    """Delete calls started before `events_before` and recordings made before `recordings_before`."""
    out = Purged()
    if recordings_before is not None:
        _purge_recordings(store, recordings_before, recordings_dir, dry_run, chunk, out)
    if events_before is not None:
        _purge_calls(store, events_before, recordings_dir, dry_run, chunk, out)
    return out


def _remove_file(path: str | None, root: Path | None) -> bool:
    if not path:
        return False
    file = Path(path)
    if root is not None and not file.is_absolute():
        file = root / file
    try:
        file.unlink()
    except FileNotFoundError:
        return False
    parent = file.parent
    try:
        if root is not None and parent.resolve() != root.resolve() and not any(parent.iterdir()):
            parent.rmdir()  # the call's folder, once empty
    except OSError:
        pass
    return True


def _purge_recordings(store: Store, before: datetime, root: Path | None, dry_run: bool, chunk: int,
                      out: Purged) -> None:
    where = recordings.c.created_at < before
    if dry_run:
        with store.engine.connect() as conn:
            out.recordings += conn.execute(sa.select(sa.func.count()).select_from(recordings)
                                           .where(where)).scalar() or 0
        return
    while True:
        with store.engine.connect() as conn:
            rows = conn.execute(sa.select(recordings.c.id, recordings.c.path).where(where).limit(chunk)).all()
        if not rows:
            return
        for row in rows:
            out.files += _remove_file(row.path, root)
        with store.begin_write() as conn:
            out.recordings += conn.execute(recordings.delete().where(
                recordings.c.id.in_([r.id for r in rows]))).rowcount


def _purge_calls(store: Store, before: datetime, root: Path | None, dry_run: bool, chunk: int,
                 out: Purged) -> None:
    old_calls = calls.c.started_at < before
    old_callbacks = callbacks.c.requested_at < before
    if dry_run:
        with store.engine.connect() as conn:
            out.calls += conn.execute(sa.select(sa.func.count()).select_from(calls)
                                      .where(old_calls)).scalar() or 0
            out.steps += conn.execute(sa.select(sa.func.count()).select_from(steps).where(
                steps.c.call_sid.in_(sa.select(calls.c.call_sid).where(old_calls)))).scalar() or 0
            out.callbacks += conn.execute(sa.select(sa.func.count()).select_from(callbacks)
                                          .where(old_callbacks)).scalar() or 0
        return
    while True:
        with store.engine.connect() as conn:
            sids = [r[0] for r in conn.execute(sa.select(calls.c.call_sid).where(old_calls).limit(chunk))]
            files = [r[0] for r in conn.execute(sa.select(recordings.c.path).where(
                recordings.c.call_sid.in_(sids), recordings.c.path.is_not(None)))] if sids else []
        if not sids:
            break
        for path in files:
            out.files += _remove_file(path, root)
        with store.begin_write() as conn:
            out.steps += conn.execute(steps.delete().where(steps.c.call_sid.in_(sids))).rowcount
            out.recordings += conn.execute(recordings.delete()
                                           .where(recordings.c.call_sid.in_(sids))).rowcount
            for table in (call_metrics, menu_metrics, service_metrics, messages):
                conn.execute(table.delete().where(table.c.call_sid.in_(sids)))
            out.calls += conn.execute(calls.delete().where(calls.c.call_sid.in_(sids))).rowcount
    while True:
        with store.engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.select(callbacks.c.id).where(old_callbacks).limit(chunk))]
        if not ids:
            return
        with store.begin_write() as conn:
            conn.execute(callback_attempts.delete().where(callback_attempts.c.callback_id.in_(ids)))
            out.callbacks += conn.execute(callbacks.delete().where(callbacks.c.id.in_(ids))).rowcount


def describe(result: Purged, dry_run: bool) -> str:
    verb = "would delete" if dry_run else "deleted"
    parts: list[Any] = [f"{result.calls} calls", f"{result.steps} steps", f"{result.recordings} recordings"]
    if not dry_run:
        parts.append(f"{result.files} audio files")
    parts.append(f"{result.callbacks} callbacks")
    return f"{verb} " + ", ".join(str(p) for p in parts)
