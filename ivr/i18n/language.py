"""A language as a call speaks it: its sentences, and numbers, durations, times, dates and
phone numbers said its way ("dans environ 12 minutes", "demain à 8 h", "0 6, 12, 34")."""

from __future__ import annotations

import datetime as dt
import gettext
import logging
import re
from functools import cached_property, lru_cache

import phonenumbers
from babel import Locale, UnknownLocaleError
from babel.dates import format_date

from ivr.phone import normalize

from . import sentences as S
from .catalogue import Message, key, tag_to_locales, translated, translations_for

log = logging.getLogger("ivr.i18n")

KEY_NAMES = {"*": S.KEY_STAR, "#": S.KEY_POUND}


class Language:
    """What a call in one language (a tag such as "fr-FR") says."""

    def __init__(self, tag: str, chain: list[gettext.GNUTranslations],
                 overrides: tuple[tuple[str, str], ...] = ()):
        self.tag = tag
        self.chain = chain
        self.overrides = dict(overrides)  # a flow's own words: {catalogue key: text}
        names = tag_to_locales(tag)
        self.code = names[-1] if names else "en"  # "fr"
        self.english = self.code == "en"
        self.locale = _locale(names)

    def __repr__(self) -> str:
        return f"Language({self.tag!r})"

    # -- messages -----------------------------------------------------------------------------

    def text(self, message: Message, n: int | None = None) -> str:
        """The message's words in this language, placeholders unfilled (English when it has
        no translation)."""
        k = key(message)
        if k in self.overrides:
            return self.overrides[k]
        for t in self.chain:
            if message.plural is None:
                found = t._catalog.get(k)  # noqa: SLF001
            else:
                found = t._catalog.get((k, t.plural(n if n is not None else 1)))  # noqa: SLF001
            if found:
                return found
        if message.plural is not None and n != 1:
            return message.plural
        return message.msgid

    def say(self, message: Message, n: int | None = None, **values: object) -> str:
        """The message with its placeholders filled (`n` also chooses the plural)."""
        if n is not None:
            values["n"] = n
        text = self.text(message, n)
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):  # a broken translation: say the English
            log.warning("%s: cannot fill in the translation of %r; saying the English",
                        self.tag, message.msgid)
            english = message.plural if message.plural is not None and n != 1 else message.msgid
            return english.format(**values)

    def has(self, message: Message) -> bool:
        """Whether this language says the message in its own words (English always does)."""
        return self.english or key(message) in self.overrides or translated(self.chain, message)

    def words(self, phrase: Message) -> tuple[str, ...]:
        """A list of words from the catalogue ("yes, yeah, ..."), lower case."""
        return tuple(w.strip().lower() for w in self.text(phrase).split(",") if w.strip())

    @property
    def country(self) -> str | None:
        """The country the tag names ("FR" for fr-FR), or None ("fr")."""
        names = tag_to_locales(self.tag)
        region = names[0].partition("_")[2] if len(names) > 1 else ""
        return region if len(region) == 2 and region.isalpha() else None

    @cached_property
    def voice(self) -> str | None:
        """This language's default Twilio voice for its tag, or None (Twilio's default)."""
        want = self.tag.replace("_", "-").lower()
        for pair in self.text(S.VOICE).split(","):
            tag, _, voice = pair.partition(":")
            if tag.strip().lower() == want and voice.strip():
                return voice.strip()
        return None

    # -- numbers, durations, times -------------------------------------------------------------

    def duration(self, seconds: float | None) -> str:
        """A wait in words: "less than a minute", "about 12 minutes", "about 2 hours"."""
        if seconds is None:
            return ""
        minutes = round(seconds / 60)
        if seconds < 45:
            return self.say(S.LESS_THAN_A_MINUTE)
        if minutes <= 1:
            return self.say(S.ABOUT_A_MINUTE)
        if minutes < 90:
            return self.say(S.ABOUT_MINUTES, n=minutes)
        return self.say(S.ABOUT_HOURS, n=round(minutes / 60))

    def when(self, seconds: float | None) -> str:
        """When something happens, from now: "in a moment", "in about 12 minutes"."""
        if seconds is None:
            return self.say(S.AS_SOON_AS_FREE)
        if seconds < 45:
            return self.say(S.IN_A_MOMENT)
        return self.say(S.IN_DURATION, duration=self.duration(seconds))

    def ago(self, seconds: float) -> str:
        """How long ago: "a moment ago", "a minute ago", "12 minutes ago"."""
        minutes = max(0, round(seconds / 60))
        if minutes < 1:
            return self.say(S.A_MOMENT_AGO)
        return self.say(S.MINUTES_AGO, n=minutes)

    def time(self, moment: dt.datetime | dt.time) -> str:
        """A time of day: "8 AM", "1:30 PM"; "8 h", "13 h 30" in French."""
        values = {"hour": moment.hour, "hour12": moment.hour % 12 or 12,
                  "minute": f"{moment.minute:02d}",
                  "am_pm": self.say(S.BEFORE_NOON if moment.hour < 12 else S.AFTER_NOON)}
        return self.say(S.TIME if moment.minute else S.TIME_ON_THE_HOUR, **values)

    def next_time(self, moment: dt.datetime, now: dt.datetime) -> str:
        """A moment to come, from `now` (both in the same time zone): "now", "at 1 PM",
        "tomorrow at 8 AM", "Monday at 9 AM", "Monday, January 4 at 9 AM"."""
        if moment <= now:
            return self.say(S.OPEN_NOW)
        days = (moment.date() - now.date()).days
        time = self.time(moment)
        if days == 0:
            return self.say(S.OPEN_TODAY, time=time)
        if days == 1:
            return self.say(S.OPEN_TOMORROW, time=time)
        if days < 7:
            return self.say(S.OPEN_WEEKDAY, weekday=format_date(moment, "EEEE", locale=self.locale),
                            time=time)
        return self.say(S.OPEN_DATE, date=self.date(moment), time=time)

    def date(self, moment: dt.date) -> str:
        """A day of the year with its weekday: "Monday, January 4", "lundi 4 janvier"."""
        skeletons = self.locale.datetime_skeletons
        pattern = str(skeletons["MMMMEd"]) if "MMMMEd" in skeletons else "EEEE d MMMM"
        return format_date(moment, re.sub(r"(?<!E)E(?!E)", "EEEE", pattern), locale=self.locale)

    # -- phone numbers and keys ------------------------------------------------------------------

    def phone(self, number: str | None, home_region: str) -> str:
        """A phone number read back in the groups its country writes it in: "4 1 5, 5 5 5,
        0 1 0 0" (digit by digit), or "0 6, 12, 34, 56, 78" where the language reads pairs;
        a number from another country than `home_region` starts with "plus" and its
        country code."""
        e164 = normalize(number, home_region) if number else None
        if e164 is None:
            return ""
        parsed = phonenumbers.parse(e164)
        home = phonenumbers.region_code_for_number(parsed) == home_region
        formats = phonenumbers.PhoneNumberFormat
        style = formats.NATIONAL if home else formats.INTERNATIONAL
        pairs = self.text(S.PHONE_DIGITS).strip().lower() == "pairs"
        groups = re.findall(r"\d+", phonenumbers.format_number(parsed, style))
        spoken = ", ".join(_group(g, pairs) for g in groups)
        return spoken if home else self.say(S.FROM_ABROAD, number=spoken)

    def key(self, key: str) -> str:
        """A key's name: "1", "star", "pound" ("étoile", "dièse")."""
        return self.say(KEY_NAMES[key]) if key in KEY_NAMES else key

    def keys(self, keys: str) -> str:
        """Keys to press in turn: "1 2", "star 1"."""
        return " ".join(self.key(k) for k in keys)


def _group(digits: str, pairs: bool) -> str:
    if pairs and len(digits) == 2:
        return f"0 {digits[1]}" if digits[0] == "0" else digits
    return " ".join(digits)


def _locale(names: list[str]) -> Locale:
    for name in names:
        try:
            return Locale.parse(name)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse("en")


@lru_cache(maxsize=256)
def language(tag: str | None, overrides: tuple[tuple[str, str], ...] = ()) -> Language:
    """The language a flow's `language` tag names ("fr-FR"); English for None or "".
    `overrides` are a flow's own words for some messages ((catalogue key, text) pairs, see
    `overrides`), said instead of the catalogue's."""
    tag = (tag or "en-US").strip() or "en-US"
    return Language(tag, translations_for(tag), overrides)


def overrides(messages: dict[Message, str]) -> tuple[tuple[str, str], ...]:
    """A flow's `messages:` as `language` takes them."""
    return tuple(sorted((key(m), text) for m, text in messages.items()))


def clear_cache() -> None:
    """Forget loaded catalogues (after IVR_LOCALES_DIR changed, or a catalogue was edited)."""
    from .catalogue import _translations

    language.cache_clear()
    _translations.cache_clear()
