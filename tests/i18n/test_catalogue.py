"""The message catalogues: the template matches the code, shipped languages translate every
message with the English's placeholders, and catalogues are found, chained and read."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from babel.messages.pofile import read_po, write_po

from ivr.i18n import catalogue, language
from ivr.i18n import sentences as S
from ivr.i18n.catalogue import EXTRA_VALUES, TEMPLATE, placeholders
from ivr.i18n.language import clear_cache

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent.parent.name for p in catalogue.LOCALES.glob("*/LC_MESSAGES/messages.po"))


def read(path: Path):
    with path.open("rb") as f:
        return read_po(f)


def keys(cat) -> set:
    return {(m.context, m.id) for m in cat if m.id}


def test_the_template_holds_every_message_in_the_code(tmp_path):
    """A sentence added to the code but not to messages.pot would never be translated."""
    out = tmp_path / "fresh.pot"
    pybabel = Path(sys.executable).parent / "pybabel"
    subprocess.run([str(pybabel), "-q", "extract", "-o", str(out)], cwd=ROOT, check=True)
    fresh, stored = keys(read(out)), keys(read(TEMPLATE))
    assert fresh - stored == set(), "run scripts/catalogue"
    assert stored - fresh == set(), "messages.pot has messages the code no longer says"


def test_french_is_shipped():
    assert "fr" in SHIPPED


@pytest.mark.parametrize("lang", SHIPPED)
def test_a_shipped_language_translates_every_message_with_the_same_placeholders(lang):
    template = read(TEMPLATE)
    po = read(catalogue.LOCALES / lang / "LC_MESSAGES" / "messages.po")
    problems = []
    for m in template:
        if not m.id:
            continue
        t = po.get(m.id, context=m.context)
        strings = [] if t is None else (list(t.string) if isinstance(t.string, tuple) else [t.string])
        name = m.id[0] if isinstance(m.id, tuple) else m.id
        if t is None or t.fuzzy or not all(strings):
            problems.append(f"not translated: {name!r}")
            continue
        english = set().union(*(placeholders(i) for i in (m.id if isinstance(m.id, tuple) else [m.id])))
        allowed = english | EXTRA_VALUES.get(m.context or "", set())
        for s in strings:
            if not placeholders(s) <= allowed:
                problems.append(f"{name!r}: {s!r} uses {placeholders(s) - allowed}")
            if "{" in name and not english & placeholders(s) and m.context not in EXTRA_VALUES:
                problems.append(f"{name!r}: {s!r} drops every placeholder")
    assert problems == []


def test_french_says_its_own_words_and_english_stays_the_source():
    fr, en = language("fr-FR"), language("en-US")
    assert fr.say(S.NOT_HEARD) == "Désolé, je n'ai rien entendu."
    assert en.say(S.NOT_HEARD) == "Sorry, I didn't hear anything."
    assert fr.has(S.NOT_HEARD) and en.has(S.NOT_HEARD)
    assert fr.say(S.MENU_CHOICE, label="la facturation", keys="1") == "Pour la facturation, tapez 1."


def test_a_region_reads_its_language_and_an_unknown_language_says_english():
    assert language("fr-CA").say(S.NOT_HEARD) == "Désolé, je n'ai rien entendu."
    de = language("de-DE")
    assert not de.has(S.NOT_HEARD)
    assert de.say(S.NOT_HEARD) == "Sorry, I didn't hear anything."


def test_each_language_has_a_default_twilio_voice_for_its_tags():
    assert language("fr-FR").voice == "Polly.Lea-Neural"
    assert language("fr-CA").voice == "Polly.Gabrielle-Neural"
    assert language("en-US").voice == "Polly.Joanna-Neural"
    assert language("de-DE").voice is None  # not listed: Twilio's own default for the language


def test_numbers_durations_and_times_the_language_s_way():
    import datetime as dt
    from zoneinfo import ZoneInfo

    fr, en = language("fr-FR"), language("en-US")
    assert fr.when(720) == "dans environ 12 minutes"
    assert en.when(720) == "in about 12 minutes"
    assert fr.duration(30) == "moins d'une minute"
    assert fr.duration(3 * 3600) == "environ 3 heures"
    assert fr.ago(60) == "il y a 1 minute" and fr.ago(600) == "il y a 10 minutes"
    paris = ZoneInfo("Europe/Paris")
    now = dt.datetime(2026, 11, 24, 22, 0, tzinfo=paris)  # a Tuesday
    assert fr.next_time(dt.datetime(2026, 11, 25, 8, 0, tzinfo=paris), now) == "demain à 8 h"
    assert fr.next_time(dt.datetime(2026, 11, 30, 9, 0, tzinfo=paris), now) == "lundi à 9 h"
    assert fr.next_time(dt.datetime(2026, 11, 24, 23, 30, tzinfo=paris), now) == "à 23 h 30"
    assert fr.next_time(dt.datetime(2027, 1, 4, 13, 5, tzinfo=paris), now) == "lundi 4 janvier à 13 h 05"
    assert en.next_time(dt.datetime(2026, 11, 25, 8, 0, tzinfo=paris), now) == "tomorrow at 8 AM"
    assert en.next_time(dt.datetime(2027, 1, 4, 13, 5, tzinfo=paris), now) == "Monday, January 4 at 1:05 PM"


def test_phone_numbers_are_read_back_in_the_groups_of_their_country():
    fr, en = language("fr-FR"), language("en-US")
    assert fr.phone("+33612345678", "FR") == "0 6, 12, 34, 56, 78"  # "zéro six, douze, trente-quatre..."
    assert fr.phone("+33612345678", "US") == "plus 33, 6, 12, 34, 56, 78"
    assert fr.phone("+14155550100", "FR") == "plus 1, 4 1 5, 5 5 5, 0 1 0 0"
    assert en.phone("+14155550100", "US") == "4 1 5, 5 5 5, 0 1 0 0"
    assert en.phone("+33612345678", "US") == "plus 3 3, 6, 1 2, 3 4, 5 6, 7 8"
    assert en.phone("Anonymous", "US") == ""
    assert fr.keys("*1#") == "étoile 1 dièse" and en.keys("*1#") == "star 1 pound"


def _write_catalogue(folder: Path, lang: str, entries: dict) -> None:
    """An operator's own catalogue: a .po file only (read as is, no compile step)."""
    cat = read(TEMPLATE)
    cat.locale = lang
    for m in cat:
        if m.id and (m.id if isinstance(m.id, str) else m.id[0]) in entries:
            m.string = entries[m.id if isinstance(m.id, str) else m.id[0]]
    target = folder / lang / "LC_MESSAGES"
    target.mkdir(parents=True)
    with (target / "messages.po").open("wb") as f:
        write_po(f, cat)


@pytest.fixture
def own_catalogues(tmp_path, monkeypatch):
    monkeypatch.setenv(catalogue.EXTRA_LOCALES_ENV, str(tmp_path))
    clear_cache()
    yield tmp_path
    monkeypatch.delenv(catalogue.EXTRA_LOCALES_ENV)
    clear_cache()


def test_an_operator_adds_a_language_and_overrides_a_region_in_their_own_folder(own_catalogues):
    _write_catalogue(own_catalogues, "de", {S.NOT_HEARD.msgid: "Entschuldigung, ich habe nichts gehört."})
    _write_catalogue(own_catalogues, "fr_CA", {S.NOT_UNDERSTOOD.msgid: "Désolé, j'ai pas compris."})
    clear_cache()
    assert language("de-DE").say(S.NOT_HEARD) == "Entschuldigung, ich habe nichts gehört."
    assert not language("de-DE").has(S.NOT_UNDERSTOOD)
    ca = language("fr-CA")
    assert ca.say(S.NOT_UNDERSTOOD) == "Désolé, j'ai pas compris."
    assert ca.say(S.NOT_HEARD) == "Désolé, je n'ai rien entendu."  # the rest from French


def test_a_translation_with_a_wrong_placeholder_is_left_out_and_logged(own_catalogues, caplog):
    _write_catalogue(own_catalogues, "de", {S.POSITION.msgid: "Sie sind Nummer {platz}.",
                                            S.NOT_HEARD.msgid: "Nichts gehört."})
    clear_cache()
    with caplog.at_level(logging.WARNING, "ivr.i18n"):
        de = language("de-DE")
        assert de.say(S.POSITION, position=3) == "You are number 3 in line."
    assert not de.has(S.POSITION) and de.has(S.NOT_HEARD)
    assert "platz" in caplog.text


def test_a_catalogue_edited_after_it_was_compiled_is_read_from_its_po(tmp_path, monkeypatch):
    folder = tmp_path / "fr" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    po = catalogue.LOCALES / "fr" / "LC_MESSAGES" / "messages.po"
    shutil.copy(po, folder / "messages.po")
    (folder / "messages.mo").write_bytes(catalogue.compile_po(po))
    text = (folder / "messages.po").read_text("utf-8")
    (folder / "messages.po").write_text(text.replace('"Désolé, je n\'ai rien entendu."',
                                                     '"Pardon, je n\'ai rien entendu."'), "utf-8")
    mo = (folder / "messages.mo").stat()
    import os

    os.utime(folder / "messages.po", (mo.st_atime + 10, mo.st_mtime + 10))
    monkeypatch.setenv(catalogue.EXTRA_LOCALES_ENV, str(tmp_path))
    clear_cache()
    try:
        assert language("fr-FR").say(S.NOT_HEARD) == "Pardon, je n'ai rien entendu."
    finally:
        monkeypatch.delenv(catalogue.EXTRA_LOCALES_ENV)
        clear_cache()


def test_the_catalogue_command_finds_the_catalogues_up_to_date():
    """scripts/catalogue is how everyone refreshes the catalogues; --check changes nothing."""
    before = TEMPLATE.read_bytes()
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "catalogue"), "--check"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert TEMPLATE.read_bytes() == before
