"""The message catalogues: what a message is, and finding and reading a language's .mo files.

Three kinds of message, each extracted by `pybabel extract` (the keywords are in
pyproject.toml, [tool.babel.extract_messages]):

- `Sentence("...")`: something said whole ("Sorry, I didn't hear anything."); with a
  second text, its plural (`Sentence("{n} minute", "{n} minutes")`, chosen by `n`).
- `Phrase(context, "...")`: a piece that fills a sentence's placeholder ("in a moment"), or
  a list of words the caller may say; the context names its role for the translator.
- `Setting(context, "...")`: not words but a choice each language makes (its Twilio voice).
"""

from __future__ import annotations

import gettext
import io
import logging
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("ivr.i18n")

LOCALES = Path(__file__).resolve().parent / "locales"  # <lang>/LC_MESSAGES/messages.po and .mo
TEMPLATE = LOCALES / "messages.pot"  # the English source of every message
DOMAIN = "messages"
EXTRA_LOCALES_ENV = "IVR_LOCALES_DIR"  # an operator's own catalogues, searched first

_PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)(?:![rsa])?(?::[^{}]*)?\}(?!\})")


@dataclass(frozen=True)
class Sentence:
    """A sentence said whole: the English text (msgid), and its plural if it has one."""

    msgid: str
    plural: str | None = None

    context = None


@dataclass(frozen=True)
class Phrase:
    """A piece of a sentence or a list of words; `context` names its role."""

    context: str
    msgid: str
    plural: str | None = None


@dataclass(frozen=True)
class Setting:
    """A choice each language makes in its catalogue, e.g. its Twilio voice."""

    context: str
    msgid: str

    plural = None


Message = Sentence | Phrase | Setting


# Values a translation may use that the English does not, by context: a time of day in
# French uses the 24-hour {hour} where English says {hour12} {am_pm}.
EXTRA_VALUES: dict[str, set[str]] = {"time of day": {"hour", "hour12", "minute", "am_pm"}}


def placeholders(text: str) -> set[str]:
    """The `{name}`s in a message."""
    return set(_PLACEHOLDER.findall(text))


def key(message: Message) -> str:
    """The message's key in a gettext catalogue (context EOT msgid)."""
    return f"{message.context}\x04{message.msgid}" if message.context else message.msgid


def tag_to_locales(tag: str) -> list[str]:
    """The catalogue folders a language tag reads, most particular first: fr-FR -> fr_FR, fr."""
    parts = [p for p in re.split(r"[-_]", tag.strip()) if p]
    if not parts:
        return []
    lang = parts[0].lower()
    names = []
    if len(parts) > 1:
        names.append(f"{lang}_{parts[1].upper() if len(parts[1]) == 2 else parts[1]}")
    names.append(lang)
    return names


def folders() -> list[Path]:
    """Where catalogues are looked for: IVR_LOCALES_DIR first (if set), then the package's."""
    extra = os.environ.get(EXTRA_LOCALES_ENV, "").strip()
    return ([Path(extra)] if extra else []) + [LOCALES]


def available() -> list[str]:
    """Every locale with a catalogue (fr, fr_CA...), English, the source, excepted."""
    found = set()
    for folder in folders():
        for path in folder.glob(f"*/LC_MESSAGES/{DOMAIN}.po"):
            found.add(path.parent.parent.name)
        for path in folder.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"):
            found.add(path.parent.parent.name)
    return sorted(found)


def translations_for(tag: str) -> list[gettext.GNUTranslations]:
    """The catalogues a language reads, most particular first (an empty list for English
    without catalogues of its own)."""
    return _translations(tuple(tag_to_locales(tag)), tuple(folders()))


@lru_cache(maxsize=64)
def _translations(locales: tuple[str, ...], places: tuple[Path, ...]) -> list[gettext.GNUTranslations]:
    found = []
    for name in locales:
        for folder in places:
            t = _read(folder / name / "LC_MESSAGES")
            if t is not None:
                found.append(t)
    return found


def _read(folder: Path) -> gettext.GNUTranslations | None:
    """One catalogue: its .mo, or its .po when that is newer (edited in a checkout) or alone."""
    mo, po = folder / f"{DOMAIN}.mo", folder / f"{DOMAIN}.po"
    try:
        if mo.exists() and (not po.exists() or mo.stat().st_mtime >= po.stat().st_mtime):
            with mo.open("rb") as f:
                t = gettext.GNUTranslations(f)
        elif po.exists():
            t = gettext.GNUTranslations(io.BytesIO(compile_po(po)))
        else:
            return None
    except Exception:  # a broken catalogue costs its language, never a call
        log.exception("cannot read the message catalogue in %s; English is said instead", folder)
        return None
    _drop_bad(t, folder)
    return t


def compile_po(po: Path) -> bytes:
    """A .po file as .mo bytes (fuzzy entries left out, as `pybabel compile` does)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with po.open("rb") as f:
        catalog = read_po(f)
    out = io.BytesIO()
    write_mo(out, catalog, use_fuzzy=False)
    return out.getvalue()


def _drop_bad(t: gettext.GNUTranslations, folder: Path) -> None:
    """A translation that names a placeholder the English does not have would fail the call
    that says it: it is left out (English is said instead), and logged."""
    catalog = t._catalog  # noqa: SLF001 - gettext keeps no other view of its entries
    for k in list(catalog):
        plural = isinstance(k, tuple)
        context, _, msgid = (k[0] if plural else k).rpartition("\x04")
        if not msgid:
            continue  # the header
        allowed = placeholders(msgid) | ({"n"} if plural else set()) | EXTRA_VALUES.get(context, set())
        extra = placeholders(catalog[k]) - allowed
        if extra:
            log.warning("%s: the translation of %r uses %s, which the English does not have; "
                        "English is said instead", folder, msgid, ", ".join(sorted(extra)))
            del catalog[k]


def translated(chain: list[gettext.GNUTranslations], message: Message) -> bool:
    """Whether one of the catalogues has a (non-empty) translation of the message."""
    k = key(message)
    for t in chain:
        catalog = t._catalog  # noqa: SLF001
        if catalog.get(k if message.plural is None else (k, 0)):
            return True
    return False
