"""Caller directories: who is calling, looked up by their phone number.

A directory maps E.164 numbers to customer records so a flow can greet a known
caller by name and never ask who they are. Records come from a CSV file that
operators keep next to their flow, or from a table in an SQL database.

Column names are read case-insensitively, with spaces and hyphens turned into
underscores ("First Name" becomes ``first_name``), so every column can be used
in a flow as ``caller.<column>``.
"""

from __future__ import annotations

import csv
import difflib
import io
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError

from ivr.errors import IvrError
from ivr.phone import normalize

__all__ = [
    "Caller",
    "CsvDirectory",
    "Directory",
    "DirectoryError",
    "SqlDirectory",
    "open_directory",
    "unknown_context",
]

logger = logging.getLogger("ivr.callers")

REQUIRED_COLUMNS = ("phone", "first_name")
# What a flow reads as `caller.<key>` whatever the directory's columns (see Caller.as_context).
CALLER_KEYS = ("known", "phone", "first_name", "last_name", "customer_id", "full_name")


class DirectoryError(IvrError):
    """A caller directory cannot be read; names the file (or table) and line."""

    def __init__(self, path: str | Path, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = Path(self.path).name if isinstance(self.path, Path) else str(self.path)
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Caller:
    """One customer record. ``fields`` holds every column of the row."""

    phone: str
    first_name: str
    last_name: str = ""
    customer_id: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)

    def as_context(self) -> dict[str, Any]:
        """What a flow sees as ``caller.<name>``: every column plus a few fixed keys."""
        context: dict[str, Any] = dict(self.fields)
        context.update(
            known=True,
            phone=self.phone,
            first_name=self.first_name,
            last_name=self.last_name,
            customer_id=self.customer_id,
            full_name=self.full_name,
        )
        return context


def unknown_context(phone: str | None) -> dict[str, Any]:
    """The ``caller`` context for a caller who is not in the directory (or withheld)."""
    return {
        "known": False,
        "phone": phone or "",
        "first_name": "",
        "last_name": "",
        "customer_id": "",
        "full_name": "",
    }


@runtime_checkable
class Directory(Protocol):
    """Anything that can find a caller by phone number or by another column."""

    def lookup(self, phone_e164: str) -> Caller | None:
        """The caller with this E.164 number, or None."""
        ...

    def find(self, field: str, value: str) -> Caller | None:
        """The first caller whose ``field`` equals ``value`` (ignoring case and spaces)."""
        ...

    # A directory may also offer `columns` (a tuple of column names): `ivr flows check` and
    # the server then warn about `caller.<name>` that no column provides.


def column_key(name: str) -> str:
    """The name a column is known by: "First Name" -> "first_name"."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def _missing_columns_message(missing: Iterable[str], found: Iterable[str]) -> str:
    found = list(found)
    parts = []
    for column in missing:
        text = f"missing required column '{column}'"
        close = _close_column(column, found)
        if close:
            text += f" (did you mean '{close}'?)"
        parts.append(text)
    return "; ".join(parts) + f" (found: {', '.join(found) or 'nothing'})"


def _close_column(wanted: str, found: list[str]) -> str | None:
    """A found column that looks like a misspelling or a longer form of ``wanted``."""
    close = difflib.get_close_matches(wanted, found, n=1, cutoff=0.75)
    if close:
        return close[0]
    # "phone_number", "mobile_phone": the right column under a longer name
    return next((column for column in found if wanted in column.split("_")), None)


@dataclass(frozen=True)
class _Snapshot:
    """Everything one load produced; swapped in whole so readers never see half a reload."""

    callers: tuple[Caller, ...]
    by_phone: Mapping[str, Caller]
    warnings: tuple[str, ...]
    default_region: str
    columns: tuple[str, ...] = ()

    def find(self, field_name: str, value: str) -> Caller | None:
        key = column_key(field_name)
        wanted = value.strip().casefold()
        if not wanted:
            return None
        if key == "phone":
            return self.by_phone.get(normalize(value, self.default_region) or "")
        for caller in self.callers:
            if caller.fields.get(key, "").strip().casefold() == wanted:
                return caller
        return None


def _build(
    rows: Iterable[tuple[str, Mapping[str, str]]],
    default_region: str,
    warnings: list[str] | None = None,
    columns: Iterable[str] = (),
) -> _Snapshot:
    """Turn (location, row) pairs into a snapshot; bad rows become warnings."""
    by_phone: dict[str, Caller] = {}
    first_seen: dict[str, str] = {}
    warnings = warnings if warnings is not None else []
    for where, row in rows:
        raw_phone = row.get("phone", "")
        phone = normalize(raw_phone, default_region)
        if phone is None:
            if raw_phone:
                warnings.append(f"{where}: cannot read phone number {raw_phone!r}; row skipped")
            else:
                warnings.append(f"{where}: no phone number; row skipped")
            continue
        if phone in first_seen:
            warnings.append(f"{where}: {phone} is also on {first_seen[phone]}; this row wins")
        first_seen[phone] = where
        caller = Caller(
            phone=phone,
            first_name=row.get("first_name", ""),
            last_name=row.get("last_name", ""),
            customer_id=row.get("customer_id", ""),
            fields=dict(row),
        )
        by_phone[phone] = caller
    return _Snapshot(tuple(by_phone.values()), by_phone, tuple(warnings), default_region,
                     tuple(columns))


class CsvDirectory:
    """Callers from a CSV file with a header row; ``phone`` and ``first_name`` are required.

    The file is re-read when its size or modification time changes (checked at
    most once per ``check_interval`` seconds, on lookup). If the new version is
    broken, the previous good data keeps being served and the error is logged.
    """

    def __init__(self, path: str | Path, default_region: str = "US", check_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.default_region = default_region
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._checked_at = time.monotonic()
        self._signature = self._stat()
        self._snapshot = self._load()
        self._log_warnings()

    @property
    def warnings(self) -> list[str]:
        """Rows skipped or overridden in the data currently served."""
        return list(self._snapshot.warnings)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns of the data currently served, as flows read them (`caller.<column>`)."""
        return self._snapshot.columns

    def __len__(self) -> int:
        return len(self._snapshot.callers)

    def __iter__(self) -> Iterator[Caller]:
        return iter(self._snapshot.callers)

    def lookup(self, phone_e164: str) -> Caller | None:
        self._maybe_reload()
        return self._snapshot.by_phone.get(phone_e164)

    def find(self, field: str, value: str) -> Caller | None:
        self._maybe_reload()
        return self._snapshot.find(field, value)

    def _stat(self) -> tuple[int, int]:
        try:
            stat = self.path.stat()
        except OSError as exc:
            raise DirectoryError(self.path, None, f"cannot open: {exc.strerror}") from None
        return stat.st_mtime_ns, stat.st_size

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < self.check_interval:
            return
        # One thread checks; the others carry on with the current snapshot.
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._checked_at = now
            try:
                signature = self._stat()
                if signature == self._signature:
                    return
                # Remember it even if the load fails, so a broken file is logged once.
                self._signature = signature
                self._snapshot = self._load()
            except DirectoryError as exc:
                logger.error("%s; still using the previous version of the file", exc)
                return
            logger.info("reloaded %s: %d callers", self.path, len(self._snapshot.callers))
            self._log_warnings()
        finally:
            self._lock.release()

    def _log_warnings(self) -> None:
        for warning in self._snapshot.warnings:
            logger.warning(warning)

    def _load(self) -> _Snapshot:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise DirectoryError(self.path, None, f"cannot open: {exc.strerror}") from None
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise DirectoryError(
                self.path, line, "not UTF-8 text; in Excel use 'Save As' > 'CSV UTF-8'"
            ) from None
        warnings: list[str] = []
        columns: list[str] = []
        rows = list(self._rows(text, warnings, columns))
        return _build(rows, self.default_region, warnings, columns)

    def _rows(self, text: str, warnings: list[str],
              header_out: list[str]) -> Iterator[tuple[str, dict[str, str]]]:
        first_line = text.split("\n", 1)[0]
        # Excel in many European locales saves "CSV" with semicolons; some tools save tabs.
        delimiter = ","
        if "," not in first_line:
            delimiter = ";" if ";" in first_line else "\t" if "\t" in first_line else ","
        # strict: a stray quote that is never closed is an error, not every later row read
        # into one value (a quoted value may still span lines, closed further down).
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
        line = 1
        try:
            header = next(reader, None)
            if header is None or not any(cell.strip() for cell in header):
                raise DirectoryError(self.path, 1, "empty file; the first line must be a header")
            columns = [column_key(cell) for cell in header]
            self._check_header(columns)
            header_out.extend(column for column in columns if column)
            name = self.path.name
            line = reader.line_num
            for cells in reader:
                start, line = line + 1, reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) > len(columns):
                    warnings.append(
                        f"{name}:{start}: {len(cells)} values but {len(columns)} columns;"
                        " extra values ignored"
                    )
                # Short rows (trailing empty cells dropped by Excel) read as empty values.
                values = [cell.strip() for cell in cells[: len(columns)]]
                values += [""] * (len(columns) - len(values))
                yield (
                    f"{name}:{start}",
                    {column: value for column, value in zip(columns, values, strict=True) if column},
                )
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise DirectoryError(self.path, line + 1, 'a quote (") opened on this line is never closed, '
                                     "so every line after it would be read as one value; remove the "
                                     "stray quote or close it") from None
            raise DirectoryError(self.path, reader.line_num, f"malformed CSV: {exc}") from None

    def _check_header(self, columns: list[str]) -> None:
        missing = [column for column in REQUIRED_COLUMNS if column not in columns]
        if missing:
            found = [column for column in columns if column]
            raise DirectoryError(self.path, 1, _missing_columns_message(missing, found))
        seen: set[str] = set()
        for column in columns:
            if column and column in seen:
                raise DirectoryError(self.path, 1, f"column '{column}' appears twice")
            seen.add(column)


class SqlDirectory:
    """Callers from a database table, through SQLAlchemy; same columns as the CSV.

    The whole table is read into memory and re-read every ``refresh_seconds``:
    support directories are small (thousands of rows, not millions), phones in
    the table may be stored in any human format and must be normalised before
    they can be matched, and a webhook must not wait on the database for each
    call. If a refresh fails, the previous rows keep being served.
    """

    def __init__(
        self,
        url_or_engine: Any,
        table: str = "customers",
        default_region: str = "US",
        refresh_seconds: float = 60,
    ) -> None:
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
        else:
            try:
                self.engine = sa.create_engine(url_or_engine)
            except (ArgumentError, NoSuchModuleError, ImportError) as exc:
                raise DirectoryError(
                    f"{url_or_engine}#{table}", None, f"cannot use database URL: {exc}"
                ) from None
        self.table_name = table
        self.default_region = default_region
        self.refresh_seconds = refresh_seconds
        self.source = f"{self.engine.url.render_as_string(hide_password=True)}#{table}"
        self._lock = threading.Lock()
        self._loaded_at = time.monotonic()
        self._snapshot = self._load()
        for warning in self._snapshot.warnings:
            logger.warning(warning)

    @property
    def warnings(self) -> list[str]:
        """Rows skipped or overridden in the data currently served."""
        return list(self._snapshot.warnings)

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns of the data currently served, as flows read them (`caller.<column>`)."""
        return self._snapshot.columns

    def __len__(self) -> int:
        return len(self._snapshot.callers)

    def lookup(self, phone_e164: str) -> Caller | None:
        self._maybe_refresh()
        return self._snapshot.by_phone.get(phone_e164)

    def find(self, field: str, value: str) -> Caller | None:
        self._maybe_refresh()
        return self._snapshot.find(field, value)

    def refresh(self) -> None:
        """Re-read the table now; raises DirectoryError and keeps the old rows on failure."""
        with self._lock:
            self._loaded_at = time.monotonic()
            self._snapshot = self._load()

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._loaded_at < self.refresh_seconds:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            # Set before loading so a dead database is retried once per interval, not per call.
            self._loaded_at = time.monotonic()
            self._snapshot = self._load()
        except DirectoryError as exc:
            logger.error("%s; still using the previous rows", exc)
        finally:
            self._lock.release()

    def _load(self) -> _Snapshot:
        try:
            with self.engine.connect() as connection:
                try:
                    table = sa.Table(self.table_name, sa.MetaData(), autoload_with=connection)
                except NoSuchTableError:
                    tables = sa.inspect(connection).get_table_names()
                    message = _no_table_message(self.table_name, tables)
                    raise DirectoryError(self.source, None, message) from None
                keys = {column.name: column_key(column.name) for column in table.columns}
                missing = [c for c in REQUIRED_COLUMNS if c not in keys.values()]
                if missing:
                    message = _missing_columns_message(missing, keys.values())
                    raise DirectoryError(self.source, None, message)
                # Ordered so "first match" in find() and "last row wins" are stable.
                order = list(table.primary_key.columns) or list(table.columns)
                result = connection.execute(sa.select(table).order_by(*order))
                rows = [
                    (
                        f"{self.table_name} row {number}",
                        {keys[name]: _text(value) for name, value in row._mapping.items()},
                    )
                    for number, row in enumerate(result, start=1)
                ]
        except SQLAlchemyError as exc:
            detail = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
            raise DirectoryError(self.source, None, f"cannot read table: {detail}") from None
        return _build(rows, self.default_region, columns=keys.values())


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _no_table_message(table: str, tables: list[str]) -> str:
    text = f"table '{table}' not found"
    close = difflib.get_close_matches(table, tables, n=1)
    if close:
        text += f" (did you mean '{close[0]}'?)"
    return text + f" (tables: {', '.join(sorted(tables)) or 'none'})"


def open_directory(spec: str, base_dir: Path, default_region: str = "US") -> Directory:
    """Open the directory a flow names: a CSV path or a database URL with ``#table``.

    CSV paths and relative SQLite paths are relative to ``base_dir``, the
    folder of the flow file, so a flow works whatever the server's working
    directory is. Examples: ``customers.csv``, ``sqlite:///crm.db#customers``,
    ``postgresql+psycopg://ivr@db/crm#customers``.
    """
    spec = spec.strip()
    if "://" in spec:
        url, _, table = spec.partition("#")
        if not table:
            raise DirectoryError(spec, None, "add the table name after '#', e.g. sqlite:///crm.db#customers")
        return SqlDirectory(_resolve_sqlite(url, Path(base_dir)), table=table,
                            default_region=default_region)
    if spec.lower().endswith(".csv"):
        return CsvDirectory(Path(base_dir) / spec, default_region=default_region)
    raise DirectoryError(
        spec,
        None,
        "unknown directory; use a .csv file (customers.csv) "
        "or a database URL with a table (sqlite:///crm.db#customers)",
    )


def _resolve_sqlite(url: str, base_dir: Path) -> Any:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DirectoryError(url, None, f"cannot read database URL: {exc}") from None
    database = parsed.database
    if parsed.get_backend_name() == "sqlite" and database and database != ":memory:":
        if not database.startswith("file:") and not os.path.isabs(database):
            return parsed.set(database=str(base_dir / database))
    return parsed
