"""What happens on a call, as the engine sees it. The web layer turns Twilio requests into these."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CallStarted:
    call_sid: str
    from_number: str | None  # E.164, or None when withheld
    to_number: str | None
    caller: dict = field(default_factory=dict)  # the caller's directory record as flow context
    is_test: bool = False
    parent_call_sid: str | None = None
    callback: dict = field(default_factory=dict)  # on a callback call: what the agent needs


@dataclass(frozen=True)
class Digits:
    digits: str


@dataclass(frozen=True)
class Speech:
    text: str
    confidence: float | None = None


@dataclass(frozen=True)
class NoInput:
    pass


@dataclass(frozen=True)
class QueueWait:
    position: int | None = None
    queue_time: int | None = None
    average_time: int | None = None
    size: int | None = None


@dataclass(frozen=True)
class QueueLeft:
    result: str  # Twilio's QueueResult: bridged, leave, hangup, queue-full, error, redirected...
    queue_time: int | None = None


@dataclass(frozen=True)
class RecordingDone:
    url: str | None
    duration: int | None = None
    digits: str | None = None


@dataclass(frozen=True)
class TransferEnded:
    status: str  # Twilio's DialCallStatus: completed, answered, busy, no-answer, failed, canceled
    duration: int | None = None


@dataclass(frozen=True)
class RequestDone:
    """The answer to a `request:` node's call to an API, as the shell that made it saw it.

    `error` is set when no usable HTTP answer came: "timeout", "connection" (refused,
    reset, no such host), "circuit_open" (the host failed too often lately: not tried),
    "host_not_allowed", "secret_missing", "too_large", "lost" (no answer came back in time).
    The engine judges the rest itself (a status of 300 or more, a body that is not JSON)."""

    request: str  # the id of the request (A.Request.id)
    status: int | None = None
    body: str | None = None
    error: str | None = None
    ms: int | None = None  # time from sending to the whole answer
    size: int | None = None  # bytes of the body
    heard_prompt: bool = False  # the answer took long enough that the caller heard the node's prompt


@dataclass(frozen=True)
class RequestWaiting:
    """The request is still running after the caller heard the prompt: say something more."""

    request: str


@dataclass(frozen=True)
class HangUp:
    status: str = "completed"  # Twilio's final CallStatus
    duration: int | None = None


Event = (
    CallStarted | Digits | Speech | NoInput | QueueWait | QueueLeft | RecordingDone | TransferEnded
    | RequestDone | RequestWaiting | HangUp
)

NAMES = {
    CallStarted: "call_started", Digits: "digits", Speech: "speech", NoInput: "no_input",
    QueueWait: "queue_wait", QueueLeft: "queue_left", RecordingDone: "recording",
    TransferEnded: "transfer_ended", RequestDone: "request_done", RequestWaiting: "request_waiting",
    HangUp: "hangup",
}
