"""How the engine hears yes and no, and says a wait in words (English defaults; a flow's
own prompts replace the sentences)."""

from __future__ import annotations

from . import events as E

NOT_HEARD = "Sorry, I didn't hear anything."
NOT_UNDERSTOOD = "Sorry, I didn't understand that."
YES_WORDS = {"yes", "yeah", "yep", "right", "correct", "sure", "ok", "okay", "that's right", "yes please"}
NO_WORDS = {"no", "nope", "wrong", "not", "incorrect"}


def words(text: str) -> str:
    """Speech as lower-case words, without the punctuation recognizers add."""
    return " ".join(text.lower().replace(",", " ").replace(".", " ").replace("!", " ").split())


def yes_no(event: E.Event) -> str | None:
    """"yes", "no" or None for a key (1 yes, 2 no) or words."""
    if isinstance(event, E.Digits):
        return {"1": "yes", "2": "no"}.get(event.digits)
    if isinstance(event, E.Speech):
        text = words(event.text)
        found = set(text.split())
        if text in YES_WORDS or "confirm" in found or (found & YES_WORDS and not found & NO_WORDS):
            return "yes"
        if found & NO_WORDS or "different" in found:
            return "no"
    return None


def duration(seconds: float | None) -> str:
    """A wait in words a caller hears: "less than a minute", "about 12 minutes", "about 2 hours"."""
    if seconds is None:
        return ""
    minutes = round(seconds / 60)
    if seconds < 45:
        return "less than a minute"
    if minutes <= 1:
        return "about a minute"
    if minutes < 90:
        return f"about {minutes} minutes"
    hours = round(minutes / 60)
    return f"about {hours} hours"


def when(seconds: float | None) -> str:
    """When something happens, from now: "in a moment", "in about 12 minutes"."""
    if seconds is None:
        return "as soon as an agent is free"
    if seconds < 45:
        return "in a moment"
    return "in " + duration(seconds)


def whole(value: float | None) -> int | None:
    """Seconds as the step log keeps them."""
    return None if value is None else int(round(value))
