"""Dashboard users (supervisors): names and hashed passwords in the SQL database.

Passwords are hashed with werkzeug's scrypt (a per-password salt, a memory-hard hash); the
plain password is never stored or logged. `ivr users add NAME` creates one.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime

import sqlalchemy as sa
from werkzeug.security import check_password_hash, generate_password_hash

from ivr.calllog.store import Store, users
from ivr.errors import IvrError

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
# Checked against when a name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY_HASH = generate_password_hash("not a real password, only for timing")


class UserError(IvrError, ValueError):
    """A name or password that cannot be used; the message says why."""


def check_username(name: str) -> str:
    name = (name or "").strip()
    if not USERNAME.match(name):
        raise UserError("a user name is 1 to 64 letters, digits, '.', '_', '@' or '-', starting with a "
                        "letter or digit")
    return name


def check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")


def add(store: Store, name: str, password: str) -> None:
    """Create a user; UserError if the name is taken or the password too short."""
    name = check_username(name)
    check_password(password)
    row = {"username": name, "password_hash": generate_password_hash(password),
           "created_at": datetime.now(UTC)}
    with store.begin_write() as conn:
        if conn.execute(sa.select(users.c.id).where(users.c.username == name)).first():
            raise UserError(f"user '{name}' already exists (use `ivr users passwd {name}`)")
        conn.execute(users.insert(), row)


def set_password(store: Store, name: str, password: str) -> None:
    check_password(password)
    with store.begin_write() as conn:
        done = conn.execute(users.update().where(users.c.username == name)
                            .values(password_hash=generate_password_hash(password))).rowcount
    if not done:
        raise UserError(f"no user '{name}'")


def remove(store: Store, name: str) -> None:
    with store.begin_write() as conn:
        done = conn.execute(users.delete().where(users.c.username == name)).rowcount
    if not done:
        raise UserError(f"no user '{name}'")


def all_users(store: Store) -> list[dict]:
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(users.c.username, users.c.created_at, users.c.last_login_at)
                            .order_by(users.c.username))
        return [dict(r._mapping) for r in rows]


def authenticate(store: Store, name: str, password: str) -> bool:
    """True when the name and password match; notes the time of the login."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(users.c.id, users.c.password_hash)
                           .where(users.c.username == (name or "").strip())).first()
    if row is None:
        check_password_hash(_DUMMY_HASH, password or "")
        return False
    if not check_password_hash(row.password_hash, password or ""):
        return False
    with store.begin_write() as conn:
        conn.execute(users.update().where(users.c.id == row.id).values(last_login_at=datetime.now(UTC)))
    return True


def session_stamp(store: Store, name: str) -> str | None:
    """A fingerprint of the user's password hash, kept in their session: a session whose stamp
    no longer matches (password changed) or whose user is gone (removed) is over. None when
    there is no such user."""
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(users.c.password_hash).where(users.c.username == name)).first()
    if row is None:
        return None
    return hashlib.sha256(row.password_hash.encode()).hexdigest()[:32]


def exists(store: Store, name: str) -> bool:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(users.c.id).where(users.c.username == name)).first() is not None
