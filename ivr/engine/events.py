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
class HangUp:
    status: str = "completed"  # Twilio's final CallStatus
    duration: int | None = None


Event = (
    CallStarted | Digits | Speech | NoInput | QueueWait | QueueLeft | RecordingDone | TransferEnded
    | HangUp
)

NAMES = {
    CallStarted: "call_started", Digits: "digits", Speech: "speech", NoInput: "no_input",
    QueueWait: "queue_wait", QueueLeft: "queue_left", RecordingDone: "recording",
    TransferEnded: "transfer_ended", HangUp: "hangup",
}
