"""What the flow language knows about asking a company's HTTP API: a URL checked before
any call is made, the secrets a flow names, and the checks that depend on the server's
environment (secrets set, hosts in IVR_REQUEST_HOSTS).

Used by `request:` nodes and by caller directories served over HTTP (a CRM).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from ivr.config import AllowedHosts

from . import templates

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_TIMEOUT_S = 10.0  # keeps a slow API well inside Twilio's 15 s for a webhook
SECRET_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_PROBE = "ivrcalldata0"  # what any value read from the call renders as, while checking a URL


class _Probe:
    """Stands for every value a call may hold (`caller.x`, `vars.y`...) while a URL is checked."""

    def __getattr__(self, name: str) -> _Probe:
        if name.startswith("_"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: object) -> _Probe:
        return self

    def __str__(self) -> str:
        return _PROBE


def _probe_context() -> dict:
    probe = _Probe()
    roots = ("caller", "vars", "intent", "call", "flow", "hours", "callback", "request", "phone")
    return {**dict.fromkeys(roots, probe), "secrets": templates.SECRETS}


def secret_names(texts: Iterable[str]) -> tuple[str, ...]:
    """The environment variables `secrets.NAME` reads in these templates, in order, once each."""
    names: dict[str, None] = {}
    for text in texts:
        for name in templates.names_read(text, "secrets"):
            names[name] = None
    return tuple(names)


def url_problems(url: str) -> list[str]:
    """What is wrong with a request URL template before any call: not http(s), credentials
    in it, or a host that depends on the call. A host from a secret is checked with the
    environment (`environment_problems`)."""
    try:
        rendered = templates.render_url(url, _probe_context())
    except Exception:  # noqa: BLE001 - a URL that needs real values is checked when it runs
        return []
    if rendered.startswith("~ivrsecret~"):
        return []
    parts = urlsplit(rendered)
    if parts.scheme not in ("http", "https"):
        return [f"'{url}' is not an http:// or https:// URL"]
    if "@" in parts.netloc:
        return ["no user name or password in the URL: send credentials in a header, from a "
                "secret (Authorization: \"Bearer {{ secrets.API_TOKEN }}\")"]
    if _PROBE in parts.netloc:
        return ["the URL's host must not come from the call: write the host in the flow, or "
                "take the whole base URL from a secret"]
    if not parts.hostname:
        return [f"'{url}' has no host"]
    return []


def environment_problems(url: str, secrets: Iterable[str], environ: Mapping[str, str],
                         hosts: AllowedHosts, what: str) -> list[tuple[str, str]]:
    """Warnings, as (key, message), about one request in this environment: a secret named but
    not set, a host IVR_REQUEST_HOSTS does not allow. `what` names the request in messages
    ("requests from 'order_status'")."""
    out: list[tuple[str, str]] = []
    missing = [name for name in secrets if not environ.get(name)]
    if missing:
        names = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        out.append(("secrets", f"secret{'s' if len(missing) > 1 else ''} {names} "
                               f"{'are' if len(missing) > 1 else 'is'} not set in the environment: "
                               f"{what} will fail until {'they are' if len(missing) > 1 else 'it is'}"))
    context = {**_probe_context(), "secrets": templates.SECRETS}
    try:
        rendered = templates.fill_secrets(templates.render_url(url, context), environ)
    except templates.MissingSecret:
        return out  # the host cannot be known without it; said above
    except Exception:  # noqa: BLE001 - the URL needs values of a real call
        return out
    parts = urlsplit(rendered)
    try:
        port = parts.port
    except ValueError:
        return out + [("url", f"the URL's port is not a number: {what} will be refused")]
    if parts.scheme not in ("http", "https") or not parts.hostname or _PROBE in parts.netloc:
        return out + [("url", f"the URL does not start with http:// or https:// and a host: "
                              f"{what} will be refused")]
    if not hosts.allows(parts.scheme, parts.hostname, port):
        where = parts.hostname + (f":{port}" if port else "")
        listed = "IVR_REQUEST_HOSTS is empty" if not hosts.entries else f"IVR_REQUEST_HOSTS is {hosts}"
        out.append(("url", f"host {where} is not in the allowed hosts ({listed}): {what} will be "
                           f"refused until it is added"))
    return out
