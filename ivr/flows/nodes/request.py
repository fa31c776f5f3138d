"""`request:` ask the company's HTTP API (an order's status, an outage at an address), keep
its JSON answer in `vars.<save_as>`, and go on to `next`, or to `on_error` when the API is
slow, down, refuses or answers something that is not JSON."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .. import http
from ..model import Flow, Node, Prompt
from .kind import NODE_ID, PROMPT, EnvCheck, NodeKind, RawNode

DEFAULT_TIMEOUT_S = 3.0
LOGGABLE = ("url", "response")  # what `log:` may add to the step log besides status, time, size


@dataclass(frozen=True)
class RequestNode(Node):
    url: str = ""
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    json: Any = field(default=None, hash=False)  # templates in its strings
    form: tuple[tuple[str, str], ...] = ()
    timeout: float = DEFAULT_TIMEOUT_S
    save_as: str | None = None
    say: Prompt | None = None  # None: the engine's "One moment while I look that up."
    hold: Prompt | None = None  # None: the engine's "Still looking..."
    log: tuple[str, ...] = ()
    on_error: str | None = None
    secrets: tuple[str, ...] = ()  # environment variables its templates read

    def edges(self) -> Iterator[tuple[str, str]]:
        if self.next:
            yield ("ok", self.next)
        if self.on_error:
            yield ("error", self.on_error)


def _strings(value: Any, path: tuple) -> Iterator[tuple[tuple, str]]:
    """Every string in a JSON body, with its place in the file."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, path + (i,))


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def load(b, raw: RawNode) -> RequestNode:
    kp = raw.key_path
    v = raw.value
    texts = [b.template(kp + ("url",), v["url"])]
    headers = tuple((str(k), str(h)) for k, h in (v.get("headers") or {}).items())
    form = tuple((str(k), _text(f)) for k, f in (v.get("form") or {}).items())
    texts += [b.template(kp + ("headers", k), h) for k, h in headers]
    texts += [b.template(kp + ("form", k), f) for k, f in form]
    texts += [b.template(p, s) for p, s in _strings(v.get("json"), kp + ("json",))]
    for message in http.url_problems(v["url"]):
        b.error(kp + ("url",), message, code="bad-url")
    has_body = "json" in v or "form" in v
    method = v.get("method", "POST" if has_body else "GET")
    if "json" in v and "form" in v:
        b.error(kp + ("form",), "a request sends 'json' or 'form', not both", code="two-bodies")
    elif has_body and method == "GET":
        b.error(kp + ("method",), "a GET request has no body: use method: POST (or PUT, PATCH) to "
                "send 'json' or 'form'", code="get-with-body")
    return RequestNode(
        **raw.common, url=v["url"], method=method, headers=headers, json=v.get("json"), form=form,
        timeout=float(v.get("timeout", DEFAULT_TIMEOUT_S)), save_as=v.get("save_as"),
        say=b.prompt(kp + ("say",), v["say"]) if "say" in v else None,
        hold=b.prompt(kp + ("hold",), v["hold"]) if "hold" in v else None,
        log=tuple(v.get("log") or ()), on_error=raw.body.get("on_error"),
        secrets=http.secret_names(texts))


def resolve(b, flow: Flow, node: RequestNode) -> None:
    b.target(flow, ("nodes", node.id, "on_error"), node.on_error)


def check(c, node: RequestNode) -> None:
    if not node.on_error:
        c.at(node, f"request '{node.id}' has no 'on_error': where callers go when the API is slow, "
             "down or answers an error (a branch there can look at request.status)", code="no-on-error")
    if not node.next:
        c.at(node, f"the call would stop abruptly after '{node.id}' answers: add 'next'",
             code="dead-end")


def _reads_secrets(node: RequestNode) -> tuple:
    """Where the node first reads a secret, for the warning's line."""
    if http.secret_names([node.url]):
        return ("url",)
    for name, value in node.headers:
        if http.secret_names([value]):
            return ("headers", name)
    return ("json",) if node.json is not None else ("form",)


def env_check(e: EnvCheck, node: RequestNode) -> None:
    for key, message in http.environment_problems(node.url, node.secrets, e.environ, e.hosts,
                                                  f"requests from '{node.id}'"):
        e.at(node, message, sub=("request",) + (_reads_secrets(node) if key == "secrets" else (key,)),
             code="request-environment")


def speaks(flow: Flow, node: RequestNode):
    """The catalogue's sentences it says when the flow gives no words of its own."""
    from ivr.i18n import sentences as S

    if node.say is None:
        yield S.ONE_MOMENT, ("say",)
    if node.hold is None:
        yield S.STILL_LOOKING, ("hold",)


def label(flow: Flow, node: RequestNode) -> str:
    """"GET api.example.com/v1/customers/…/orders/latest": the host when it is written in the
    flow, the path with each value from the call as an ellipsis, no query."""
    url = re.sub(r"^\s*\{\{\s*secrets\.\w+\s*\}\}", "", node.url)  # a base URL from a secret
    parts = urlsplit(url) if url.startswith(("http://", "https://")) else urlsplit("//x" + url)
    where = (parts.netloc if url.startswith("http") else "") + parts.path
    shown = re.sub(r"\{\{.*?\}\}", "…", where) or "/"
    return f"{node.method} {shown}"


SCHEMA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "description": "The URL, a template: values it takes from the call "
                                                 "are percent-encoded."},
        "method": {"enum": list(http.METHODS)},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
        "json": {"description": "A JSON body; its strings are templates."},
        "form": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "timeout": {"type": "number", "minimum": 0.5, "maximum": http.MAX_TIMEOUT_S,
                    "description": "Seconds to wait for the answer (default 3)."},
        "save_as": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$",
                    "description": "Keep the JSON answer in vars.<name>."},
        "say": PROMPT,
        "hold": PROMPT,
        "log": {"type": "array", "items": {"enum": list(LOGGABLE)}},
    },
    "required": ["url"],
    "additionalProperties": False,
}

KIND = NodeKind("request", RequestNode, SCHEMA, load, keys={"on_error": NODE_ID}, resolve=resolve,
                check=check, env_check=env_check, speaks=speaks, waits=True, sets_vars=True,
                mermaid=("[/", "\\]"), dot="trapezium", label=label)
