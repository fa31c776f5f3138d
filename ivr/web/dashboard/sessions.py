"""Dashboard sessions kept on the server, so logging out ends them for good.

The session cookie is signed, which proves it was ours, not that it is still wanted: a
copy saved before logging out stayed valid until it expired. Each login now opens a record
in Redis (ivr:dashboard:session:<id>, as long as a session lasts) that the cookie names;
logging out deletes it, and a cookie whose record is gone is logged out. While Redis cannot
be reached the signed cookie alone is believed, so supervisors can still read the reports
during an outage (a session opened then lasts until Redis is back).
"""

from __future__ import annotations

import hashlib
import logging
import secrets

import redis

log = logging.getLogger("ivr.dashboard")

PREFIX = "ivr:dashboard:session:"


def _key(session_id: str) -> str:
    # the id is a secret in the cookie: Redis keeps only its digest
    return PREFIX + hashlib.sha256(session_id.encode()).hexdigest()[:40]


def open_session(client: redis.Redis, user: str, lifetime_s: int) -> str:
    """A new session id for `user`, recorded for `lifetime_s` seconds when Redis answers."""
    session_id = secrets.token_urlsafe(24)
    try:
        client.set(_key(session_id), user, ex=lifetime_s)
    except redis.RedisError as exc:
        log.warning("dashboard session for %s not recorded in Redis (%s): it ends when Redis "
                    "is back", user, type(exc).__name__)
    return session_id


def is_open(client: redis.Redis, session_id: str, user: str) -> bool:
    """Whether the session is still open for `user`; True when Redis cannot say."""
    if not session_id:
        return False
    try:
        holder = client.get(_key(session_id))
    except redis.RedisError:
        return True
    return holder is not None and holder.decode() == user


def close(client: redis.Redis, session_id: str) -> bool:
    """End the session; False when Redis could not be told (it then lasts until it expires)."""
    if not session_id:
        return True
    try:
        client.delete(_key(session_id))
    except redis.RedisError:
        log.error("could not end a dashboard session in Redis: its cookie stays valid until "
                  "it expires")
        return False
    return True
