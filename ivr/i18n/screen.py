"""What one person reads on a screen (the dashboard, `ivr report`): their language, their
time zone, and figures, dates and times written that language's way.

Screens use the same catalogues as calls. Their text is marked the way Flask and Jinja
mark it: `_("...")` / `gettext("...")` in Python, `{{ _("...") }}` in templates, with
`%(name)s` placeholders (a `%` in the text itself is written `%%` in templates). Text kept
in a module until someone reads it (labels in a table) is marked with `N_("...")`, which
only marks it for `pybabel extract`; it is translated where it is shown, with
`screen.gettext(label)`.

A person's language is their own setting, else what their browser (or, for `ivr report`,
their terminal: LANGUAGE, LC_ALL, LC_MESSAGES, LANG) asks for among the languages that
have a catalogue, else English. Their time zone is their own setting, else the
instance's IVR_DISPLAY_TIMEZONE, else UTC.
"""

from __future__ import annotations

import gettext
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel import dates as babel_dates
from babel import numbers as babel_numbers

from .catalogue import available, tag_to_locales, translations_for

log = logging.getLogger("ivr.i18n")

SOURCE = "en"  # the language the code is written in: it has no catalogue of its own
DASH = "–"  # what a figure that cannot be computed (no calls) shows


def N_(text: str) -> str:  # noqa: N802 - gettext's own name for the marker
    """Marks text for the catalogue without translating it now (it is translated where shown)."""
    return text


def languages() -> list[str]:
    """Every language a screen can be read in: English and each one with a catalogue ("fr",
    "fr_CA"...)."""
    return [SOURCE, *(name for name in available() if name != SOURCE)]


def best_language(preferred: Iterable[str]) -> str | None:
    """The first of `preferred` (tags such as "fr-CA", best first) whose language has a
    catalogue (or is English), as a locale name ("fr_CA"): its words come from the most
    particular catalogue there is (fr_CA, else fr), its dates and figures are written the
    region's way. None when no language asked for is served."""
    served = {name.lower() for name in languages()}
    for tag in preferred:
        names = tag_to_locales(tag or "")
        if any(name.lower() in served for name in names) and _known(names[0]):
            return names[0]
    return None


def _known(name: str) -> bool:
    try:
        Locale.parse(name)
        return True
    except (UnknownLocaleError, ValueError):
        return False


def zone(name: str | None) -> ZoneInfo:
    """An IANA time zone; ValueError with a readable message when the name is unknown."""
    try:
        return ZoneInfo((name or "UTC").strip() or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as Europe/Paris") from None


def check_language(tag: str) -> str:
    """A language a screen can be read in, as a locale name ("fr-FR" -> "fr_FR"); ValueError
    naming the choices otherwise."""
    found = best_language([tag])
    if found is None:
        raise ValueError(f"no catalogue for the language {tag!r}: choose one of "
                         f"{', '.join(languages())} (with a region if you like: fr-CA)")
    return found


_PERCENT = re.compile(r"%\((\w+)\)")


def percent_placeholders(text: str) -> set[str]:
    """The `%(name)s` placeholders of a screen's message."""
    return set(_PERCENT.findall(text))


class Translations(gettext.NullTranslations):
    """A language's catalogues as one gettext object, most particular first (fr_CA, then fr),
    English for whatever none of them translates. What Flask-Babel and Jinja's i18n read.

    A translation that names a placeholder its English does not have would break the page
    that shows it: English is shown instead, and the mistake logged once."""

    def __init__(self, chain: list[gettext.GNUTranslations]):
        super().__init__()
        self.chain = chain
        self._bad: set[object] = set()

    def _find(self, key: str, n: int | None = None, english: tuple[str, ...] = ()) -> str | None:
        for t in self.chain:
            found = t._catalog.get(key if n is None else (key, t.plural(n)))  # noqa: SLF001
            if found:
                allowed = set().union(*map(percent_placeholders, english or (key,))) | \
                    ({"num"} if n is not None else set())
                if percent_placeholders(found) <= allowed:
                    return found
                if key not in self._bad:
                    self._bad.add(key)
                    log.warning("the translation of %r uses %s, which the English does not have; "
                                "English is shown instead", key.rpartition("\x04")[2],
                                ", ".join(sorted(percent_placeholders(found) - allowed)))
        return None

    def gettext(self, message: str) -> str:
        return self._find(message) or message

    def ngettext(self, singular: str, plural: str, n: int) -> str:
        return self._find(singular, n, (singular, plural)) or (singular if n == 1 else plural)

    def pgettext(self, context: str, message: str) -> str:
        return self._find(f"{context}\x04{message}", english=(message,)) or message

    def npgettext(self, context: str, singular: str, plural: str, n: int) -> str:
        found = self._find(f"{context}\x04{singular}", n, (singular, plural))
        return found or (singular if n == 1 else plural)

    # The names Flask-Babel and Babel call.
    ugettext, ungettext, upgettext, unpgettext = gettext, ngettext, pgettext, npgettext


@dataclass(frozen=True)
class Screen:
    """One reader's language and time zone, and their way of writing figures and dates."""

    language: str  # a locale name: "en", "fr", "fr_CA" (words from fr_CA's catalogue, else fr's)
    tz: ZoneInfo
    locale: Locale = field(init=False, repr=False, compare=False)
    translations: Translations = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "locale", _locale(self.language))
        object.__setattr__(self, "translations", Translations(translations_for(self.language)))

    @property
    def tag(self) -> str:
        """The language as an HTML lang attribute wants it: "en", "fr", "fr-CA"."""
        return self.language.replace("_", "-")

    # -- text -----------------------------------------------------------------------------------

    def gettext(self, message: str, **values: object) -> str:
        text = self.translations.gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: object) -> str:
        values.setdefault("num", n)
        return self.translations.ngettext(singular, plural, n) % values

    # -- figures --------------------------------------------------------------------------------

    def number(self, value: float | None, digits: int = 0) -> str:
        """A count or a figure: "1,234" in English, "1 234" in French; "–" for None."""
        if value is None:
            return DASH
        pattern = "#,##0" + ("." + "0" * digits if digits else "")
        return babel_numbers.format_decimal(value, pattern, locale=self.locale)

    def percent(self, ratio: float | None, digits: int = 1) -> str:
        """A share (0.812) as the language writes a percentage: "81.2%", "81,2 %"."""
        if ratio is None:
            return DASH
        pattern = self.locale.percent_formats[None].pattern
        if digits:
            pattern = re.sub(r"0(?=[^0#,]*$)", "0." + "0" * digits, pattern, count=1)
        return babel_numbers.format_percent(ratio, pattern, locale=self.locale)

    def seconds(self, value: float | None) -> str:
        """A time span in seconds: "4.5 s", "42 s", "3 min 05 s" ("4,5 s" in French)."""
        if value is None:
            return DASH
        value = float(value)
        if value >= 90:
            minutes, rest = int(value // 60), int(round(value % 60))
            if rest == 60:
                minutes, rest = minutes + 1, 0
            two_digits = str(rest).zfill(2)
            return self.gettext("%(minutes)s min %(seconds)s s", minutes=self.number(minutes),
                                seconds=two_digits)
        return self.gettext("%(seconds)s s", seconds=self.number(value, 0 if value >= 10 else 1))

    # -- dates and times --------------------------------------------------------------------------

    def local(self, moment: datetime) -> datetime:
        """A moment in this reader's time zone (a naive one is taken as UTC, as the store keeps)."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo("UTC"))
        return moment.astimezone(self.tz)

    def datetime(self, moment: datetime | None, width: str = "medium") -> str:
        """A date and time in this reader's zone: "Nov 24, 2026, 3:04:05 PM" /
        "24 nov. 2026, 15:04:05" (medium); "11/24/26, 3:04 PM" / "24/11/2026 15:04" (short)."""
        if moment is None:
            return ""
        return babel_dates.format_datetime(self.local(moment), width, locale=self.locale)

    def date(self, moment: date | datetime | None, width: str = "medium") -> str:
        if moment is None:
            return ""
        if isinstance(moment, datetime):
            moment = self.local(moment)
        return babel_dates.format_date(moment, width, locale=self.locale)

    def time(self, moment: datetime | time | None, width: str = "medium") -> str:
        """A time of day: "3:04:05 PM" / "15:04:05" (medium), "3:04 PM" / "15:04" (short)."""
        if moment is None:
            return ""
        if isinstance(moment, datetime):
            moment = self.local(moment)
        return babel_dates.format_time(moment, width, locale=self.locale)

    def skeleton(self, moment: date | datetime, skeleton: str) -> str:
        """A date written from a CLDR skeleton, the language's order and separators:
        "Md" is "11/24" in English and "24/11" in French; "Hm" is "15:04"."""
        if isinstance(moment, datetime):
            moment = self.local(moment)
        return babel_dates.format_skeleton(skeleton, moment, locale=self.locale)

    def weekdays(self, width: str = "abbreviated") -> list[str]:
        """The days' names, Monday first: "Mon"... / "lun."..."""
        names = self.locale.days["format"][width]
        return [names[i] for i in range(7)]


def _locale(name: str) -> Locale:
    for candidate in tag_to_locales(name):
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse(SOURCE)


@lru_cache(maxsize=256)
def screen(language: str | None = None, tz: str | None = None) -> Screen:
    """The screen of someone who reads `language` (a served one, else English) in the time
    zone `tz` (an IANA name; UTC when unknown, logged)."""
    served = best_language([language]) if language else None
    try:
        zone_info = zone(tz)
    except ValueError as exc:
        log.error("%s; times are shown in UTC", exc)
        zone_info = ZoneInfo("UTC")
    return Screen(served or SOURCE, zone_info)


def terminal_languages(environ: dict[str, str]) -> list[str]:
    """The languages a terminal asks for, best first, as gettext reads them: LANGUAGE (a
    list separated by colons), else LC_ALL, LC_MESSAGES, LANG ("fr_FR.UTF-8" -> "fr_FR")."""
    for var in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = (environ.get(var) or "").strip()
        if not value:
            continue
        if value in ("C", "POSIX") or value.startswith(("C.", "POSIX.")):
            return []  # the C locale asks for no language: English
        return [part.split(".")[0].split("@")[0] for part in value.split(":") if part]
    return []
