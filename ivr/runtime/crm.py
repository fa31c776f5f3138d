"""Callers looked up in an HTTP caller directory (a CRM) when their call starts.

The lookup runs in the call's first webhook, before Twilio has an answer: the caller hears
the phone ring, not silence, for at most the directory's `timeout` (2 s by default, 5 s at
most). Its answer, found or not, is kept in Redis for the directory's `cache` seconds, so a
caller who phones again (or a `lookup:` node) does not wait twice, and every web process
shares it:

    ivr:crm:<flow>:<E.164 number>    the caller's context as JSON ("{}": not found)

Anything that goes wrong (a timeout, the CRM down, an open circuit, a host not allowed, an
answer that is not a caller) makes the caller unknown, is logged, and is not cached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import redis

from ivr.config import AllowedHosts
from ivr.engine import actions as A
from ivr.flows import templates
from ivr.flows.directory_api import AnswerError, DirectoryApi, caller_from_answer
from ivr.flows.model import Flow

from .circuit import Circuit
from .http_requests import perform

log = logging.getLogger("ivr.callers")

PREFIX = "ivr:crm:"


def directory_request(api: DirectoryApi, phone: str) -> A.Request:
    """The request that asks the directory about one number (secrets still markers)."""
    ctx = {"phone": phone, "secrets": templates.SECRETS}
    return A.Request("directory", "directory", "GET", templates.render_url(api.url, ctx),
                     tuple((k, templates.render(v, ctx, squash=False)) for k, v in api.headers),
                     timeout=api.timeout)


class CrmLookup:
    """Looks callers up in flows' HTTP directories; `client` None: no cache (the simulator)."""

    def __init__(self, client: redis.Redis | None, hosts: AllowedHosts, circuit: Circuit | None = None,
                 environ: Mapping[str, str] | None = None):
        self.redis = client
        self.hosts = hosts
        self.circuit = circuit
        self.environ = environ

    def lookup(self, flow: Flow, phone: str) -> dict | None:
        """The caller's context, or None: not found, or the directory could not say."""
        api: DirectoryApi = flow.directory_api
        key = f"{PREFIX}{flow.id}:{phone}"
        cached = self._cached(key)
        if cached is not None:
            return cached or None
        done = perform(directory_request(api, phone), hosts=self.hosts, circuit=self.circuit,
                       environ=self.environ, label=f"caller directory of flow '{flow.id}'")
        if done.error:
            log.warning("flow %s: caller directory %s: %s; the caller is treated as unknown",
                        flow.id, templates.mask_secrets(api.url), done.error)
            return None
        try:
            caller = caller_from_answer(api, phone, done.status, done.body)
        except AnswerError as exc:
            log.warning("flow %s: caller directory %s: %s; the caller is treated as unknown",
                        flow.id, templates.mask_secrets(api.url), exc)
            return None
        if self.redis is not None and api.cache:
            try:
                self.redis.set(key, json.dumps(caller or {}, separators=(",", ":")), ex=api.cache)
            except redis.RedisError:
                log.warning("flow %s: could not keep a caller looked up in Redis", flow.id)
        return caller

    def _cached(self, key: str) -> dict | None:
        if self.redis is None:
            return None
        try:
            raw = self.redis.get(key)
        except redis.RedisError:
            return None
        return json.loads(raw) if raw is not None else None
