"""`queue:` hold the caller in a Twilio queue for the next agent, with an offer to call them
back when the wait is long (`callback:`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ivr.i18n import sentences as S

from ..model import Flow, Node, Prompt, SayText
from .kind import PROMPT, NodeKind, RawNode


@dataclass(frozen=True)
class CallbackOffer:
    """A queue's offer to call the caller back instead of holding (queue.callback)."""

    offer_after: int = 120  # seconds of estimated wait above which the offer is made
    key: str = "1"
    phrases: tuple[str, ...] = ()  # empty: the flow language's ("call me back", "rappelez-moi"...)
    offer: Prompt = ()  # empty: the engine's default wording, which names the key
    confirm: Prompt = ()
    enter_number: Prompt = ()
    read_back: Prompt = ()
    reason: Prompt | None = None  # None: no reason is recorded; () the default question
    reason_max_length: int = 30
    booked: Prompt = ()
    flow: str = "callback"  # the flow that runs when the caller answers the callback
    flow_named: bool = False  # the file names `flow`; if not, a missing one is no mistake
    max_attempts: int = 3
    retry_after: int = 300
    expire_after: int = 4 * 3600
    calling_hours: Any = None  # {day: hours} in the caller's time zone; None: 08:00-21:00 daily


@dataclass(frozen=True)
class QueueNode(Node):
    name: str = ""
    say: Prompt = ()
    wait_say: Prompt = ()
    wait_play: str | None = None
    announce_position: bool = True
    announce_wait: bool = False
    max_wait: int | None = None
    callback: CallbackOffer | None = None


def load(b, raw: RawNode) -> QueueNode:
    kp = raw.key_path
    v = {"name": raw.value} if isinstance(raw.value, str) else raw.value
    offer = v.get("callback")
    return QueueNode(**raw.common, name=v["name"], say=b.prompt(kp + ("say",), v.get("say")),
                     wait_say=b.prompt(kp + ("wait_say",), v.get("wait_say")),
                     wait_play=v.get("wait_play"),
                     announce_position=v.get("announce_position", True),
                     announce_wait=v.get("announce_wait", False),
                     max_wait=v.get("max_wait"),
                     callback=(_callback_offer(b, kp + ("callback",), offer)
                               if offer not in (None, False) else None))


def _callback_offer(b, path: tuple, v: Any) -> CallbackOffer:
    """queue.callback: `true` for every default, or a mapping (the schema checked its shape)."""
    from ..hours import HoursError, parse_hours

    v = {} if v is True else v
    key = str(v.get("key", 1))
    if len(key) != 1:
        b.error(path + ("key",), f"the callback key must be one key (0-9, * or #), got '{key}'",
                code="callback-key")
    hours = v.get("calling_hours")
    if hours is not None:
        try:  # the days and times are checked now; the time zone is the caller's, at dial time
            parse_hours("calling_hours", {"timezone": "UTC", "open": hours})
        except HoursError as exc:
            b.error(path + ("calling_hours",) + tuple(exc.path[1:]), f"calling_hours: {exc.message}",
                    code="hours")
    reason = v.get("reason")
    offer = CallbackOffer(
        offer_after=v.get("offer_after", 120), key=key,
        phrases=tuple(p.lower() for p in v.get("phrases", ())),
        offer=b.prompt(path + ("offer",), v.get("offer")),
        confirm=b.prompt(path + ("confirm",), v.get("confirm")),
        enter_number=b.prompt(path + ("enter_number",), v.get("enter_number")),
        read_back=b.prompt(path + ("read_back",), v.get("read_back")),
        reason=None if reason in (None, False) else b.prompt(path + ("reason",), reason),
        reason_max_length=v.get("reason_max_length", 30),
        booked=b.prompt(path + ("booked",), v.get("booked")),
        flow=v.get("flow", "callback"), flow_named="flow" in v, max_attempts=v.get("max_attempts", 3),
        retry_after=v.get("retry_after", 300), expire_after=v.get("expire_after", 4 * 3600),
        calling_hours=hours,
    )
    texts = [item.text for item in offer.offer if isinstance(item, SayText)]
    named = re.compile(rf"(?<![0-9]){re.escape(key)}(?![0-9])|callback\.key")
    if offer.offer and not any(named.search(t) for t in texts):
        b.warn(path + ("offer",), f"the callback offer never names key {key}: callers hear the offer "
               f"but not what to press; say \"press {key}\"", code="callback-key")
    return offer


def check(c, node: QueueNode) -> None:
    if not node.next:
        c.at(node, f"callers who leave queue '{node.name}' without reaching an agent are cut off: "
             "add 'next' (e.g. voicemail)", "warning", "dead-end")


def speaks(flow: Flow, node: QueueNode):
    """The catalogue's sentences a queue says while the caller holds and when it offers a
    callback, where the flow gives no words of its own."""
    if node.announce_position:
        yield from ((S.NEXT_IN_LINE, ("announce_position",)), (S.POSITION, ("announce_position",)),
                    (S.ALL_BUSY_FIRST, ("announce_position",)))
    yield S.THANKS_FOR_HOLDING, ("wait_say",)
    durations = (S.LESS_THAN_A_MINUTE, S.ABOUT_A_MINUTE, S.ABOUT_MINUTES, S.ABOUT_HOURS)
    if node.announce_wait:
        yield S.WAIT_IS, ("announce_wait",)
        yield from ((d, ("announce_wait",)) for d in durations)
    offer = node.callback
    if offer is None:
        return
    at = ("callback",)
    if not offer.offer:
        yield S.CALLBACK_OFFER_AGAIN, at + ("offer",)
    for field, sentence in (("offer", S.CALLBACK_OFFER), ("confirm", S.CONFIRM_NUMBER),
                            ("enter_number", S.ENTER_NUMBER), ("read_back", S.READ_BACK),
                            ("booked", S.BOOKED)):
        if not getattr(offer, field):
            yield sentence, at + (field,)
    if offer.reason == ():
        yield S.ASK_REASON, at + ("reason",)
    if not offer.phrases:
        yield S.CALL_ME_BACK_WORDS, at + ("phrases",)
    if offer.key in "*#":
        yield (S.KEY_STAR if offer.key == "*" else S.KEY_POUND), at + ("key",)
    for sentence in (S.NOT_A_NUMBER, S.BACK_IN_LINE, S.NO_CALLING_TIME, S.NOT_HEARD, S.NOT_UNDERSTOOD,
                     S.YES_WORDS, S.NO_WORDS, S.PHONE_DIGITS, S.FROM_ABROAD, S.IN_A_MOMENT,
                     S.IN_DURATION, S.AS_SOON_AS_FREE, *durations):
        yield sentence, at


def label(flow: Flow, node: QueueNode) -> str:
    return node.name


SCHEMA = {"anyOf": [
    {"type": "string"},
    {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "say": PROMPT,
            "wait_say": PROMPT,
            "wait_play": {"type": "string"},
            "announce_position": {"type": "boolean"},
            "announce_wait": {
                "type": "boolean",
                "description": "On every wait cycle, say the estimated wait (\"Your estimated wait is "
                               "about 4 minutes.\").",
            },
            "max_wait": {"type": "integer", "minimum": 10},
            "callback": {"$ref": "#/$defs/callback_offer"},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
]}
CALLBACK_OFFER = {
    "description": "Offer callers a callback that keeps their place in line, instead of holding. "
                   "`true` takes every default.",
    "anyOf": [
        {"type": "boolean"},
        {
            "type": "object",
            "properties": {
                "offer_after": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "Offer when the estimated wait is over this many seconds (0: always). "
                                   "With no agent available the wait counts as longer than any threshold.",
                },
                "key": {
                    "type": ["integer", "string"],
                    "pattern": "^[0-9*#]$",
                    "description": "The key that asks for a callback (default 1).",
                },
                "phrases": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "description": "What callers may say to ask for a callback (default: the flow "
                                   "language's words, e.g. call me back, call back, callback; "
                                   "rappelez-moi... in French).",
                },
                "offer": {
                    "$ref": "#/$defs/prompt",
                    "description": "The offer, played on entry and on every wait cycle while the wait "
                                   "is long. Name the key.",
                },
                "confirm": {
                    "$ref": "#/$defs/prompt",
                    "description": "Asks the caller to confirm the number on file or the calling number "
                                   "({{ callback.number_spoken }}).",
                },
                "enter_number": {
                    "$ref": "#/$defs/prompt",
                    "description": "Asks for another number on the keypad.",
                },
                "read_back": {
                    "$ref": "#/$defs/prompt",
                    "description": "Reads the typed number back ({{ callback.number_spoken }}) and asks "
                                   "to confirm.",
                },
                "reason": {
                    "anyOf": [{"type": "boolean"}, {"$ref": "#/$defs/prompt"}],
                    "description": "Record a short reason after the number is confirmed: true for the "
                                   "default question, or the question itself.",
                },
                "reason_max_length": {"type": "integer", "minimum": 3, "maximum": 120},
                "booked": {
                    "$ref": "#/$defs/prompt",
                    "description": "Said before the call ends ({{ callback.number_spoken }}, "
                                   "{{ callback.when }}).",
                },
                "flow": {
                    "type": "string",
                    "pattern": "^[A-Za-z0-9_-]+$",
                    "description": "The flow that runs when the caller answers the callback (default: "
                                   "the flow 'callback' when one is loaded, else a built-in greeting "
                                   "in the flow's language).",
                },
                "max_attempts": {"type": "integer", "minimum": 1, "maximum": 10},
                "retry_after": {
                    "type": "integer",
                    "minimum": 30,
                    "maximum": 86400,
                    "description": "Seconds between attempts after no answer, busy or an answering "
                                   "machine.",
                },
                "expire_after": {
                    "type": "integer",
                    "minimum": 300,
                    "maximum": 604800,
                    "description": "Seconds after the request when an unfinished callback expires.",
                },
                "calling_hours": {
                    "type": "object",
                    "description": "When callers may be called, in their own time zone, e.g. {mon-fri: "
                                   "\"09:00-20:00\", sat: \"10:00-14:00\"} (default: 08:00-21:00 every "
                                   "day).",
                },
            },
            "additionalProperties": False,
        },
    ],
}

KIND = NodeKind("queue", QueueNode, SCHEMA, load, defs={"callback_offer": CALLBACK_OFFER}, check=check,
                speaks=speaks,
                destination=lambda node: f"queue {node.name}", reaches_a_person=True, waits=True,
                mermaid=("[[", "]]"), dot="box3d", label=label)
