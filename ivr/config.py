"""All configuration in one place, read from environment variables.

Every setting has a default that works on a laptop with nothing installed: an embedded
Redis and a SQLite file under IVR_DATA_DIR.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

DEFAULT_HOLD_MUSIC = "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"


def _bool(value: str, name: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class Config:
    """Settings for the server, the workers and the command line."""

    twilio_auth_token: str = ""
    # Twilio Webhook Settings that sign with a SharedKey: "KEY_ID:SECRET,..." (or one bare SECRET)
    twilio_webhook_shared_keys: str = ""
    twilio_account_sid: str = ""
    twilio_api_base_url: str = ""  # a stand-in for Twilio's REST API (tests, staging)
    public_url: str = ""  # the base URL Twilio calls, e.g. https://ivr.example.com
    # Proxies whose X-Forwarded-For/-Proto/-Host are believed (addresses or networks, commas)
    trusted_proxies: str = "127.0.0.1,::1"
    redis_url: str = ""  # empty: start an embedded Redis under data_dir
    database_url: str = ""  # empty: a SQLite file under data_dir
    data_dir: Path = field(default_factory=lambda: Path("var"))
    flows_dir: Path = field(default_factory=lambda: Path("flows"))
    recordings_dir: Path = field(default_factory=lambda: Path("recordings"))
    validate_signatures: bool = True
    fallback_number: str = ""  # where callers go when the system cannot serve them
    default_flow: str = ""
    default_region: str = "US"  # for numbers written without a country code
    state_ttl: int = 4 * 3600  # seconds live call state is kept in Redis
    hold_music_url: str = DEFAULT_HOLD_MUSIC
    recorder: bool = True  # drain the step log into SQL from a thread (one web process per host, by lease)
    log_level: str = "INFO"
    # Let bugs out instead of answering them safely (an apology and a person for the caller),
    # as Flask's PROPAGATE_EXCEPTIONS: for tests, never for a line that takes calls.
    propagate_exceptions: bool = False
    # Callbacks (callbacks/): agents, the agents' HTTP API and the dialling workers.
    agents_file: str = ""  # empty: <flows_dir>/agents.yaml
    api_token: str = ""  # bearer token for /api/agents, /api/callbacks and /metrics; empty: refused
    callback_caller_id: str = ""  # caller ID of callback calls; empty: the number the caller rang
    callback_ring_timeout: int = 25  # seconds a callback call rings before it counts as no answer
    callback_dial_grace: int = 60  # seconds a claimed dial may lack a Twilio call SID before repair
    callback_sweep_interval: int = 30  # seconds between the workers' safety sweeps
    callback_handle_time: int = 300  # assumed handling time (s) until the log has enough calls
    callback_keep_days: int = 7  # days finished callbacks stay in Redis (SQL keeps them for good)
    # Reports and the supervisors' dashboard (ivr/calllog/reports.py, ivr/web/dashboard/).
    display_timezone: str = "UTC"  # IANA zone for times shown to people; the store keeps UTC
    service_level_s: int = 20  # service level: share of queue callers answered within this
    secret_key: str = ""  # signs dashboard sessions; empty: generated once under data_dir
    mask_numbers: bool = True  # mask caller numbers in CSV exports unless asked otherwise
    retention_days: int = 0  # `ivr retention`: delete the step log older than this (0: keep)
    recordings_retention_days: int = 0  # delete recordings older than this (0: retention_days)
    # Self-service: flows asking the company's systems (`request:` nodes, HTTP caller
    # directories) and sending texts (`sms:` nodes).
    request_hosts: str = ""  # the only hosts requests may reach: "api.example.com,10.0.0.5:8080"
    request_quick_ms: int = 300  # a webhook waits this long for an answer before the node's prompt plays
    request_threads: int = 16  # requests running at once in each web process
    request_circuit_failures: int = 5  # failures in a row to one host that open its circuit
    request_circuit_seconds: int = 30  # how long an open circuit refuses requests before one is tried
    sms_from: str = ""  # the number texts are sent from; empty: the number the caller rang

    ENV = {
        "twilio_auth_token": "TWILIO_AUTH_TOKEN",
        "twilio_webhook_shared_keys": "TWILIO_WEBHOOK_SHARED_KEYS",
        "twilio_account_sid": "TWILIO_ACCOUNT_SID",
        "twilio_api_base_url": "TWILIO_API_BASE_URL",
        "public_url": "PUBLIC_URL",
        "trusted_proxies": "IVR_TRUSTED_PROXIES",
        "redis_url": "REDIS_URL",
        "database_url": "DATABASE_URL",
        "data_dir": "IVR_DATA_DIR",
        "flows_dir": "IVR_FLOWS_DIR",
        "recordings_dir": "IVR_RECORDINGS_DIR",
        "validate_signatures": "IVR_VALIDATE_SIGNATURES",
        "fallback_number": "IVR_FALLBACK_NUMBER",
        "default_flow": "IVR_DEFAULT_FLOW",
        "default_region": "IVR_DEFAULT_REGION",
        "state_ttl": "IVR_STATE_TTL",
        "hold_music_url": "IVR_HOLD_MUSIC_URL",
        "recorder": "IVR_RECORDER",
        "log_level": "IVR_LOG_LEVEL",
        "propagate_exceptions": "IVR_PROPAGATE_EXCEPTIONS",
        "agents_file": "IVR_AGENTS_FILE",
        "api_token": "IVR_API_TOKEN",
        "callback_caller_id": "IVR_CALLBACK_CALLER_ID",
        "callback_ring_timeout": "IVR_CALLBACK_RING_TIMEOUT",
        "callback_dial_grace": "IVR_CALLBACK_DIAL_GRACE",
        "callback_sweep_interval": "IVR_CALLBACK_SWEEP_INTERVAL",
        "callback_handle_time": "IVR_CALLBACK_HANDLE_TIME",
        "callback_keep_days": "IVR_CALLBACK_KEEP_DAYS",
        "display_timezone": "IVR_DISPLAY_TIMEZONE",
        "service_level_s": "IVR_SERVICE_LEVEL_SECONDS",
        "secret_key": "IVR_SECRET_KEY",
        "mask_numbers": "IVR_MASK_NUMBERS",
        "retention_days": "IVR_RETENTION_DAYS",
        "recordings_retention_days": "IVR_RECORDINGS_RETENTION_DAYS",
        "request_hosts": "IVR_REQUEST_HOSTS",
        "request_quick_ms": "IVR_REQUEST_QUICK_MS",
        "request_threads": "IVR_REQUEST_THREADS",
        "request_circuit_failures": "IVR_REQUEST_CIRCUIT_FAILURES",
        "request_circuit_seconds": "IVR_REQUEST_CIRCUIT_SECONDS",
        "sms_from": "IVR_SMS_FROM",
    }

    # Smallest sensible values: live state that expires at once would cut every call short.
    MINIMUMS: ClassVar[dict[str, int]] = {
        "state_ttl": 60, "callback_ring_timeout": 1, "callback_dial_grace": 1, "callback_sweep_interval": 1,
        "callback_handle_time": 1, "callback_keep_days": 0, "service_level_s": 1, "retention_days": 0,
        "recordings_retention_days": 0, "request_quick_ms": 0, "request_threads": 1,
        "request_circuit_failures": 1, "request_circuit_seconds": 1,
    }

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Config:
        """Build a Config from environment variables, then apply keyword overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        types = {f.name: f.type for f in fields(cls)}
        for name, var in cls.ENV.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            kind = types[name]
            if kind == "bool":
                values[name] = _bool(raw, var)
            elif kind == "int":
                try:
                    values[name] = int(raw)
                except ValueError:
                    raise ValueError(f"{var} must be a whole number, got {raw!r}") from None
            elif kind == "Path":
                values[name] = Path(raw)
            else:
                values[name] = raw
        for name, least in cls.MINIMUMS.items():
            if name in values and values[name] < least:
                raise ValueError(f"{cls.ENV[name]} must be at least {least}, got {values[name]}")
        cfg = cls(**values)
        return replace(cfg, **overrides) if overrides else cfg

    @property
    def shared_keys(self) -> dict[str, str]:
        """TWILIO_WEBHOOK_SHARED_KEYS as {key id: secret}; a bare secret is filed under "" and
        serves any key id. Raises ValueError for a malformed value (never showing a secret).
        The separator is ':' because secrets are base64, which may end in '='."""
        keys: dict[str, str] = {}
        for i, part in enumerate(p.strip() for p in self.twilio_webhook_shared_keys.split(",")):
            if not part:
                continue
            key_id, sep, secret = part.partition(":")
            key_id, secret = (key_id.strip(), secret.strip()) if sep else ("", key_id)
            if not secret:
                raise ValueError(f"TWILIO_WEBHOOK_SHARED_KEYS, entry {i + 1}: no secret after "
                                 f"'{key_id}:' (write KEY_ID:SECRET, several separated by commas)")
            if key_id in keys:
                raise ValueError(f"TWILIO_WEBHOOK_SHARED_KEYS names {key_id or 'a bare secret'!r} twice")
            keys[key_id] = secret
        return keys

    def check(self, data_dir: bool = False) -> None:
        """Problems a command should refuse to start with, as ValueError with a clear message:
        URLs that cannot be parsed, malformed shared keys and (with `data_dir`, for commands
        that keep files there) a data folder that cannot be created."""
        self.shared_keys  # noqa: B018 - raises for a malformed value
        self.allowed_hosts  # noqa: B018 - raises for a malformed IVR_REQUEST_HOSTS
        self.proxy_networks  # noqa: B018 - raises for a malformed IVR_TRUSTED_PROXIES
        if self.redis_url:
            from redis.connection import parse_url

            try:
                if is_sentinel_url(self.redis_url):
                    SentinelUrl.parse(self.redis_url)
                else:
                    parse_url(self.redis_url)
            except ValueError as exc:
                raise ValueError(f"REDIS_URL {safe_url(self.redis_url)!r}: {exc}") from None
        if self.database_url:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                backend = make_url(self.database_url).get_backend_name()
            except ArgumentError:
                raise ValueError(f"DATABASE_URL {self.database_url!r} is not a database URL: write "
                                 "postgresql://user:password@host/dbname or sqlite:///path/ivr.db") from None
            if backend not in ("sqlite", "postgresql", "postgres"):
                raise ValueError(f"DATABASE_URL: unsupported database {backend!r}: use PostgreSQL or SQLite")
        if data_dir:
            try:
                self.data_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"IVR_DATA_DIR {str(self.data_dir)!r} cannot be created: "
                                 f"{exc.strerror}") from None

    @cached_property
    def allowed_hosts(self) -> AllowedHosts:
        """IVR_REQUEST_HOSTS, parsed (ValueError for an entry that is not a host)."""
        return AllowedHosts.parse(self.request_hosts)

    @cached_property
    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """IVR_TRUSTED_PROXIES as networks: addresses or CIDR blocks separated by commas
        (ValueError, naming the entry, for one that is neither)."""
        found = []
        for entry in (e.strip() for e in self.trusted_proxies.split(",")):
            if not entry:
                continue
            try:
                found.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                raise ValueError(f"IVR_TRUSTED_PROXIES: {entry!r} is not an IP address or a network "
                                 "(write 10.0.0.5 or 10.0.0.0/24, separated by commas)") from None
        return tuple(found)

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{(self.data_dir / 'ivr.db').resolve()}"

    @property
    def effective_database_url(self) -> str:
        return self.database_url or self.sqlite_url

    @property
    def agents_path(self) -> Path:
        """The agents file: IVR_AGENTS_FILE, else agents.yaml in the flows folder."""
        return Path(self.agents_file) if self.agents_file else self.flows_dir / "agents.yaml"


@dataclass(frozen=True)
class AllowedHosts:
    """The hosts a flow's requests may reach (IVR_REQUEST_HOSTS), so that no flow can make
    the server fetch an arbitrary address (its own Redis, a cloud metadata service...).

    Each entry is a host name or an IP address, with a port or without: `api.example.com`
    allows that host on the URL scheme's own port (443 for https, 80 for http) only;
    `api.example.com:8443` that port only; `*.example.com` any host under example.com on
    the scheme's port. Names are compared without regard to case. Empty: no request is
    allowed."""

    entries: tuple[tuple[str, int | None], ...] = ()

    @classmethod
    def parse(cls, text: str) -> AllowedHosts:
        entries = []
        for raw in (part.strip() for part in (text or "").split(",")):
            if not raw:
                continue
            host, port = _host_and_port(raw)
            entries.append((host, port))
        return cls(tuple(entries))

    def allows(self, scheme: str, host: str, port: int | None) -> bool:
        """Whether a URL with this scheme, host and port (None: the scheme's) may be fetched."""
        host = (host or "").lower().rstrip(".")
        default = {"https": 443, "http": 80}.get(scheme)
        if default is None or not host:
            return False
        port = default if port is None else port
        for allowed, allowed_port in self.entries:
            if port != (default if allowed_port is None else allowed_port):
                continue
            if allowed == host or (allowed.startswith("*.") and host.endswith(allowed[1:])):
                return True
        return False

    def __str__(self) -> str:
        return ",".join(h if p is None else f"{_bracketed(h)}:{p}" for h, p in self.entries) or "(empty)"


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _host_and_port(raw: str) -> tuple[str, int | None]:
    """"api.example.com", "api.example.com:8443", "10.0.0.5:80", "[::1]:8080" -> (host, port)."""
    bad = ValueError(f"IVR_REQUEST_HOSTS: {raw!r} is not a host or host:port (write "
                     "api.example.com, api.example.com:8443 or *.example.com, separated by commas)")
    if "/" in raw or "@" in raw or " " in raw:
        raise bad
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise bad
        host, rest = raw[1:end], raw[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise bad
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise bad
        port = int(port)
    host = host.lower().rstrip(".")
    if not host or host == "*." or ("*" in host and not (host.startswith("*.") and "*" not in host[2:])):
        raise bad
    return host, port


def safe_url(url: str) -> str:
    """A database or Redis URL fit for logs: the password hidden."""
    if is_sentinel_url(url):
        scheme, _, rest = url.partition("://")
        userinfo, at, rest = rest.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        rest = re.sub(r"(sentinel_password=)[^&]*", r"\1***", rest)
        return f"{scheme}://{userinfo}{at}{rest}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy reads: hide what looks like a password
        return re.sub(r"(//[^/@:]*:)[^/@]*@", r"\1***@", url)


SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_PORT = 26379


def is_sentinel_url(url: str) -> bool:
    return url.lower().startswith(SENTINEL_SCHEME + "://")


@dataclass(frozen=True)
class SentinelUrl:
    """A REDIS_URL naming a Redis Sentinel set:
    ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``, with
    ``?sentinel_password=...`` when the sentinels themselves ask for one. The password before
    the @ is the Redis servers'."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None

    @classmethod
    def parse(cls, url: str) -> SentinelUrl:
        from urllib.parse import parse_qs, unquote

        if not is_sentinel_url(url):
            raise ValueError(f"a Sentinel URL starts with {SENTINEL_SCHEME}://")
        rest = url.split("://", 1)[1]
        rest, _, query = rest.partition("?")
        userinfo, at, rest = rest.rpartition("@")
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username, password = unquote(user) or None, (unquote(secret) if colon else None)
        hosts, _, path = rest.partition("/")
        parts = [p for p in path.split("/") if p]
        if not parts or len(parts) > 2:
            raise ValueError("name the service after the sentinels, and the database number if not 0: "
                             "redis+sentinel://host:26379,host:26380/mymaster/0")
        try:
            db = int(parts[1]) if len(parts) == 2 else 0
        except ValueError:
            raise ValueError(f"database {parts[1]!r} is not a number") from None
        sentinels = []
        for item in hosts.split(","):
            host, colon, port = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "")
            if not host or (colon and not port.isdigit()):
                raise ValueError(f"sentinel {item!r} is not host or host:port")
            sentinels.append((host.strip("[]"), int(port) if colon else SENTINEL_PORT))
        options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        unknown = set(options) - {"sentinel_password"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} (only sentinel_password)")
        return cls(tuple(sentinels), unquote(parts[0]), db, username, password,
                   options.get("sentinel_password") or None)
