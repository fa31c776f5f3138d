"""Phone numbers: turn what callers and operators write into E.164.

Twilio sends the caller's number in ``From``. When the caller hides it, ``From``
is a word ("Anonymous", "Restricted", ...) or one of Twilio's placeholder numbers,
which spell those words on a keypad. Operators write numbers in customer files
however they like: "(415) 555-0100", "+44 20 7946 0958", "0044 20 7946 0958".
Everything is compared in E.164 ("+14155550100").
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

__all__ = ["normalize", "is_withheld", "mask"]

WITHHELD_WORDS = frozenset(
    {"anonymous", "restricted", "unknown", "private", "unavailable", "blocked", "withheld"}
)

# Twilio's placeholders are the words above typed on a keypad
# (266696687 = ANONYMOUS); a few of them are "possible" numbers, so they
# must be caught by value, not by validation.
WITHHELD_NUMBERS = frozenset(
    {
        "+266696687",  # ANONYMOUS
        "+7378742833",  # RESTRICTED
        "+8656696",  # UNKNOWN
        "+7748283",  # PRIVATE
        "+86282452253",  # UNAVAILABLE
        "+2562533",  # BLOCKED
    }
)

# Digits plus the punctuation people put between them. Letters are refused so
# that junk such as "client:alice" or vanity spellings never become numbers.
_DIALLABLE = re.compile(r"^\+?[0-9 ()./\-\u00a0]+$")

MASK_CHAR = "\u2022"  # a bullet: visibly not a digit


def _strip_scheme(raw: str) -> str:
    lowered = raw.lower()
    if lowered.startswith("tel:"):
        return raw[4:]
    if lowered.startswith(("sip:", "sips:")):
        # sip:+14155550100@trunk.example.com carries the number as the user part
        return raw.split(":", 1)[1].split("@", 1)[0].split(";", 1)[0]
    return raw


def is_withheld(raw: str | None) -> bool:
    """Return True when the caller hid their number or none was sent.

    That is: None, an empty string, a word such as "Anonymous" or "Restricted",
    or one of Twilio's placeholder numbers. Malformed numbers are not withheld,
    merely invalid: ``normalize`` returns None for both.
    """
    if raw is None:
        return True
    text = raw.strip()
    if not text:
        return True
    if text.lower() in WITHHELD_WORDS:
        return True
    compact = re.sub(r"[^0-9+]", "", _strip_scheme(text))
    return compact in WITHHELD_NUMBERS


def normalize(raw: str | None, default_region: str = "US") -> str | None:
    """Return ``raw`` as an E.164 number, or None if withheld or not a number.

    Numbers without a country code are read as numbers of ``default_region``.
    A number only has to be *possible* (right length for its country), not
    assigned, so fictional 555-01xx numbers work in samples and tests.
    Never raises for bad input.
    """
    if not isinstance(raw, str):
        return None
    return _normalize(raw, default_region)


@lru_cache(maxsize=8192)  # every webhook of a call normalises the same few numbers
def _normalize(raw: str, default_region: str | None) -> str | None:
    if is_withheld(raw):
        return None
    text = _strip_scheme(raw.strip()).strip()
    if not _DIALLABLE.match(text):
        return None
    # "00" is the international prefix almost everywhere, but phonenumbers only
    # honours the default region's own prefix (011 in the US).
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None if e164 in WITHHELD_NUMBERS else e164


def normalize_typed(raw: str | None, default_region: str = "US") -> str | None:
    """Like `normalize`, for a number a caller types to be called back on: it must be a valid
    number of its country (a local number without its area code is not), because Twilio will
    refuse to call anything less after the caller was told "we'll call you back"."""
    number = normalize(raw, default_region)
    if number is None or not phonenumbers.is_valid_number(phonenumbers.parse(number)):
        return None
    return number


def mask(e164: str | None) -> str:
    """Hide a number for logs and exports: keep the country code and last two digits.

    "+14155550100" becomes "+1••••••••00". Anything that is not a number comes
    back as "withheld", so nothing personal leaks through a malformed value.
    """
    number = normalize(e164) if e164 else None
    if number is None:
        return "withheld"
    country = str(phonenumbers.parse(number).country_code)
    national = number[1 + len(country) :]
    if len(national) <= 2:
        return f"+{country}{MASK_CHAR * len(national)}"
    return f"+{country}{MASK_CHAR * (len(national) - 2)}{national[-2:]}"
