"""Templates in prompts and conditions: `Hello {{ caller.first_name }}`, `vars.tries > 2`.

A sandboxed Jinja environment, so a flow file can read call data but never reach Python
internals. Missing values render as empty text rather than failing a live call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import quote

from jinja2 import ChainableUndefined, TemplateSyntaxError, nodes
from jinja2.sandbox import SandboxedEnvironment

from ivr.errors import IvrError

_env = SandboxedEnvironment(
    undefined=ChainableUndefined,
    autoescape=False,
    finalize=lambda value: "" if value is None else value,  # None is never read out as 'None'
)


def _spell_digits(value: Any) -> str:
    # "12345" -> "1 2 3 4 5", so text-to-speech reads a number digit by digit
    return " ".join(str(value).replace(" ", ""))


_env.filters["digits"] = _spell_digits

# A request's URL: what each {{ ... }} gives is percent-encoded, so a caller's data cannot
# change the path or the query around it ("C-1/../admin" stays one path segment).
_url_env = SandboxedEnvironment(
    undefined=ChainableUndefined,
    autoescape=False,
    finalize=lambda value: "" if value is None else quote(str(value), safe=""),
)
_url_env.filters["digits"] = _spell_digits

# `secrets.NAME` renders as this marker: the shell that sends a request puts the value of
# the environment variable NAME in its place at the last moment, so neither the engine, the
# call state nor the step log ever holds it. Only unreserved URL characters, so it survives
# the URL's percent-encoding.
SECRET = re.compile(r"~ivrsecret~([A-Za-z_][A-Za-z0-9_]*)~")


class Secrets:
    """`secrets` in templates: `secrets.NAME` is the marker of environment variable NAME."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        return f"~ivrsecret~{name}~"

    def __getitem__(self, name: str) -> str:
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise KeyError(name)
        return f"~ivrsecret~{name}~"


SECRETS = Secrets()


class MissingSecret(IvrError, LookupError):
    """A secret the flow names is not set in the environment."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def fill_secrets(text: str, environ: Mapping[str, str]) -> str:
    """`text` with each secret's marker replaced by its value (MissingSecret when unset)."""
    def value(m: re.Match) -> str:
        found = environ.get(m.group(1))
        if found is None or found == "":
            raise MissingSecret(m.group(1))
        return found

    return SECRET.sub(value, text) if "~ivrsecret~" in text else text


def mask_secrets(text: str) -> str:
    """`text` fit for a log: each secret's marker shown as ***."""
    return SECRET.sub("***", text) if "~ivrsecret~" in text else text


class TemplateError(IvrError, ValueError):
    """A template that cannot compile; `line` is relative to the template text."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


@lru_cache(maxsize=4096)
def _compile(text: str, url: bool = False):
    try:
        return (_url_env if url else _env).from_string(text)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template error: {exc.message}", exc.lineno) from None


@lru_cache(maxsize=1024)
def _compile_expr(text: str):
    try:
        return _env.compile_expression(text, undefined_to_none=True)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"expression error: {exc.message}", exc.lineno) from None


def names_read(text: str, root: str) -> list[str]:
    """The names a template reads under `root`: for root 'hours', `hours.support` and
    `hours['support']` give 'support'. None when it does not parse (that error is reported
    by `check`)."""
    try:
        tree = _env.parse(text)
    except TemplateSyntaxError:
        return []
    names = []
    called = {}  # `caller.get('plan')`: a method of the mapping, reading its first argument
    for call in tree.find_all(nodes.Call):
        called[id(call.node)] = call
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == root:
            if isinstance(node, nodes.Getattr):
                call = called.get(id(node))
                if call is None:
                    names.append(node.attr)
                elif node.attr == "get" and call.args and isinstance(call.args[0], nodes.Const):
                    names.append(str(call.args[0].value))
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                names.append(node.arg.value)
    return names


def hours_names(text: str) -> list[str]:
    """The business-hours names a template reads (`hours.support`, `hours['support']`)."""
    return names_read(text, "hours")


def check(text: str) -> None:
    """Raise TemplateError if `text` is not a valid template."""
    if "{" in text:
        _compile(text)


def check_expression(text: str) -> None:
    _compile_expr(text)


def native(text: str) -> Any:
    """'3' -> 3, '2.5' -> 2.5, 'true' -> True; anything else stays text. So variables set
    from templates compare as numbers in conditions (`vars.tries > 2`)."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if t and (t.lstrip("-").isdigit()) and not (len(t.lstrip("-")) > 1 and t.lstrip("-")[0] == "0"):
        return int(t)
    try:
        return float(t) if any(ch.isdigit() for ch in t) and "." in t else text
    except ValueError:
        return text


def render(text: str, context: dict[str, Any], squash: bool = True) -> str:
    """Render a template; plain text is returned as is without touching Jinja. `squash`
    turns every run of white space into one space (what a prompt needs)."""
    if "{{" not in text and "{%" not in text:
        return text
    out = _compile(text).render(context)
    return " ".join(out.split()) if squash else out


def render_url(text: str, context: dict[str, Any]) -> str:
    """Render a request's URL, each value it puts in percent-encoded."""
    if "{{" not in text and "{%" not in text:
        return text
    return _compile(text, url=True).render(context).strip()


def evaluate(expression: str, context: dict[str, Any]) -> Any:
    """Evaluate a condition expression such as `caller.plan == 'premium'`."""
    return _compile_expr(expression)(**context)
