"""What the engine tells the telephony layer to do. Plain data, independent of Twilio."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Say:
    text: str
    voice: str | None = None
    language: str | None = None


@dataclass(frozen=True)
class Play:
    url: str


@dataclass(frozen=True)
class Silence:
    seconds: float


@dataclass(frozen=True)
class Gather:
    """Play the prompts while listening for keypad digits and/or speech."""

    prompts: tuple = ()
    input: tuple[str, ...] = ("dtmf", "speech")
    num_digits: int | None = None
    timeout: int = 5
    speech_timeout: str | int = "auto"
    finish_on_key: str | None = None
    hints: tuple[str, ...] = ()
    language: str | None = None


@dataclass(frozen=True)
class Enqueue:
    queue: str


@dataclass(frozen=True)
class LeaveQueue:
    pass


@dataclass(frozen=True)
class Dial:
    to: str
    timeout: int = 30
    caller_id: str | None = None
    whisper: str | None = None  # said to the agent before the caller is connected


@dataclass(frozen=True)
class Record:
    max_length: int = 120
    finish_on_key: str = "#"
    beep: bool = True
    timeout: int = 5


@dataclass(frozen=True)
class Hangup:
    pass


@dataclass(frozen=True)
class Request:
    """Call an API for a `request:` node, then come back with events.RequestDone. While it
    runs the caller hears `prompts` (the shell plays them only if the answer is slow).

    Secrets are markers here (ivr.flows.templates.SECRET): the shell that sends the request
    puts the values in, so no action, state or log holds them."""

    id: str
    node: str
    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    json: object = None  # a JSON body, or None
    form: tuple[tuple[str, str], ...] = ()
    timeout: float = 3.0
    prompts: tuple = ()


@dataclass(frozen=True)
class SendSms:
    """Send a text message; the call goes on without waiting (a worker sends it, and its
    delivery is reported to the server's /sms/status)."""

    id: str  # the step that asked for it, in its call
    node: str
    to: str  # E.164
    body: str
    sender: str | None = None  # the sending number; None: IVR_SMS_FROM, else `line`
    line: str | None = None  # the number the caller rang
    segments: int = 1


@dataclass(frozen=True)
class AwaitRequest:
    """The request `id` is still running: play `prompts`, then come back with its answer."""

    id: str
    prompts: tuple = ()


@dataclass(frozen=True)
class OfferCallback:
    """In a queue's wait cycle: play `prompts` (then the hold music) while listening for `key`
    or one of `phrases`, which ask for a callback instead of holding."""

    prompts: tuple = ()
    key: str = "1"
    phrases: tuple[str, ...] = ()
    language: str | None = None
    input: tuple[str, ...] = ("dtmf", "speech")  # the flow's `speech: off` leaves only the keypad


@dataclass(frozen=True)
class RequestCallback:
    """Book a callback to `number` for `queue`. It keeps the caller's place: it is ordered by
    `enqueued_at`, when the caller first joined the queue (ISO 8601, UTC)."""

    number: str
    queue: str
    enqueued_at: str
    flow: str = "callback"  # the flow the answered callback call runs
    reason_url: str | None = None  # a short recorded reason, transcribed by a worker
    reason_seq: int | None = None  # the step that recorded it
    max_attempts: int = 3
    retry_after: int = 300
    expire_after: int = 4 * 3600
    calling_hours: object = None  # {day: hours} in the caller's time zone, or None for the default


@dataclass(frozen=True)
class CancelCallback:
    """Cancel a pending callback (the caller phoned again and chose to cancel it)."""

    callback_id: str


Action = (
    Say | Play | Silence | Gather | Enqueue | LeaveQueue | Dial | Record | Hangup | OfferCallback
    | RequestCallback | CancelCallback | Request | AwaitRequest | SendSms
)

# Actions after which the call waits for Twilio (or an API) to come back with an event.
WAITING = (Gather, Enqueue, Dial, Record, Hangup, LeaveQueue, Request, AwaitRequest)


def spoken_text(actions: list) -> str:
    """Everything the caller hears as text, in order (for logs, the simulator and tests)."""
    parts: list[str] = []
    for a in actions:
        if isinstance(a, Say):
            parts.append(a.text)
        elif isinstance(a, Play):
            parts.append(f"[audio {a.url}]")
        elif isinstance(a, (Gather, OfferCallback, AwaitRequest)):  # not Request: heard only if slow
            parts.append(spoken_text(list(a.prompts)))
    return " ".join(p for p in parts if p)
