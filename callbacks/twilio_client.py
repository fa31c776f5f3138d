"""Outbound callback calls through Twilio's REST API (`twilio` library).

The client comes from `ivr.runtime.twilio_api.client`, so TWILIO_API_BASE_URL points it at a
stand-in. Calls are placed with answering-machine detection: Twilio asks the answer URL only
after it has decided who answered (`AnsweredBy`), so a voicemail greeting never hears our
greeting, and the call counts as a machine attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from twilio.base.exceptions import TwilioRestException

from ivr.errors import IvrError

# Twilio error codes that mean the number called (To) cannot be called: retrying will not help.
# Errors about our side (caller ID 21210/21212/21213, the account, a wrong URL) are not here:
# they are fixed by configuration, so the callbacks wait for that instead of failing one by one.
BAD_NUMBER_CODES = {21211, 21214, 21215, 21216, 21217, 21401, 21612}
STATUS_EVENTS = ["initiated", "ringing", "answered", "completed"]


@dataclass(frozen=True)
class Placed:
    sid: str
    status: str


@dataclass(frozen=True)
class SeenCall:
    sid: str
    status: str
    created: datetime | None
    duration: int | None


class Refused(IvrError):
    """Twilio answered the request with an error, so no call was created."""

    def __init__(self, exc: TwilioRestException):
        super().__init__(f"Twilio refused the call: HTTP {exc.status}, code {exc.code}: {exc.msg}")
        self.status = exc.status
        self.code = exc.code
        self.permanent = exc.code in BAD_NUMBER_CODES


def place_call(client: Any, *, to: str, from_: str, url: str, status_callback: str,
               timeout: int, machine_detection: str = "Enable") -> Placed:
    """Start the outbound call. Raises Refused when Twilio says no; any other exception means
    we do not know whether the call exists (the dispatcher then asks Twilio later)."""
    try:
        call = client.calls.create(
            to=to, from_=from_, url=url, method="POST", status_callback=status_callback,
            status_callback_method="POST", status_callback_event=STATUS_EVENTS, timeout=timeout,
            machine_detection=machine_detection,
        )
    except TwilioRestException as exc:
        raise Refused(exc) from exc
    return Placed(call.sid, call.status or "queued")


def calls_to(client: Any, to: str, since: datetime) -> list[SeenCall]:
    """Calls Twilio has to `to` created since `since` (to find a call a dead worker placed)."""
    # Twilio filters by day; the time is checked here.
    found = client.calls.list(to=to, start_time_after=since - timedelta(days=1), limit=50)
    out = []
    for call in found:
        created = call.date_created
        if created is not None and created < since:
            continue
        out.append(SeenCall(call.sid, call.status, created, _int(call.duration)))
    return out


def call_status(client: Any, sid: str) -> SeenCall:
    call = client.calls(sid).fetch()
    return SeenCall(call.sid, call.status, call.date_created, _int(call.duration))


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
