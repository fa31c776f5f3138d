"""Caller directories served over HTTP: the company's CRM says who is calling.

    directory:
      url: "{{ secrets.CRM_URL }}/v2/contacts?phone={{ phone }}"
      headers: {Authorization: "Bearer {{ secrets.CRM_TOKEN }}"}
      timeout: 2      # seconds, 0.5 to 5
      cache: 300      # seconds a caller found (or not found) is remembered; 0: never
      record: data    # where the caller is in the answer; default: the whole answer

The answer is a JSON object whose keys become `caller.<key>` (first_name, last_name,
customer_id, any other: text, numbers and true/false of up to 200 characters, the first 40),
or a list of such objects (the first is the caller; an empty list
is nobody), at `record`. A 404 or an empty answer is an unknown caller. Whatever else goes
wrong (a timeout, a refused connection, a 5xx, an answer that is not JSON) is an unknown
caller too, logged: the call goes on, as with a CSV file that cannot be read.

The request itself is the shell's (ivr.runtime.crm), with the same secrets, allowed hosts,
timeouts and circuit breaker as `request:` nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ivr.errors import IvrError

from . import http
from .directory import Caller, column_key

DEFAULT_TIMEOUT_S = 2.0
MAX_TIMEOUT_S = 5.0  # the lookup runs in the call's first webhook: the caller hears it ring
# (the schema, with these limits, is flow.base.json's `directory`)
DEFAULT_CACHE_S = 300
MAX_FIELDS = 40  # of the caller's record kept on the call
MAX_VALUE_CHARS = 200

class AnswerError(IvrError):
    """The directory's answer cannot be read as a caller."""


@dataclass(frozen=True)
class DirectoryApi:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    cache: int = DEFAULT_CACHE_S
    record: str = ""
    secrets: tuple[str, ...] = ()

    def describe(self) -> str:
        """What logs and messages call it: the URL as written, without values."""
        return self.url


def load(b: Any, value: dict) -> DirectoryApi:
    """The `directory:` mapping, its templates and URL checked (b is the loader's Builder)."""
    path = ("directory",)
    texts = [b.template(path + ("url",), value["url"])]
    headers = tuple((str(k), str(v)) for k, v in (value.get("headers") or {}).items())
    texts += [b.template(path + ("headers", k), v) for k, v in headers]
    for message in http.url_problems(value["url"]):
        b.error(path + ("url",), message, code="bad-url")
    return DirectoryApi(value["url"], headers, float(value.get("timeout", DEFAULT_TIMEOUT_S)),
                        int(value.get("cache", DEFAULT_CACHE_S)), str(value.get("record", "")),
                        http.secret_names(texts))


def caller_from_answer(api: DirectoryApi, phone: str, status: int | None, body: str | None) -> dict | None:
    """The caller context (as `caller.<name>` reads it) in a directory's answer, None for
    nobody; AnswerError when the answer cannot be read."""
    if status == 404:
        return None
    if status is None or status >= 300:
        raise AnswerError(f"the directory answered with status {status}")
    try:
        data = json.loads(body or "null")
    except ValueError:
        raise AnswerError("the directory's answer is not JSON") from None
    for part in (p for p in api.record.split(".") if p):
        if isinstance(data, list) and part.isdigit():
            data = data[int(part)] if int(part) < len(data) else None
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            data = None
        if data is None:
            return None
    if isinstance(data, list):
        data = data[0] if data else None
    if not data:
        return None
    if not isinstance(data, dict):
        raise AnswerError(f"the directory's answer{' at ' + api.record if api.record else ''} is not "
                          "an object of the caller's fields")
    # What the call keeps of the caller lives in its state in Redis: short values, and not
    # too many of them (a CRM record can be large; the flow reads a few fields).
    fields = {column_key(str(k)): _text(v) for k, v in list(data.items())[:MAX_FIELDS]
              if (v is None or isinstance(v, str | int | float | bool)) and len(_text(v)) <= MAX_VALUE_CHARS}
    caller = Caller(phone=phone, first_name=fields.get("first_name", ""),
                    last_name=fields.get("last_name", ""), customer_id=fields.get("customer_id", ""),
                    fields=fields)
    return caller.as_context()


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
