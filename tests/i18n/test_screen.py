"""What supervisors read: their language among those with a catalogue, their time zone, and
figures and dates written their language's way."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from babel.messages.pofile import read_po

from ivr.i18n import catalogue
from ivr.i18n.language import clear_cache
from ivr.i18n.screen import best_language, check_language, percent_placeholders, screen, terminal_languages

NOON_UTC = datetime(2026, 11, 24, 12, 0, 5, tzinfo=UTC)


def plain(text: str) -> str:
    """The no-break spaces CLDR puts in numbers and times as plain ones."""
    return text.replace("\xa0", " ").replace("\u202f", " ")


def test_the_first_language_asked_for_that_has_a_catalogue_wins():
    assert best_language(["fr-FR", "en"]) == "fr_FR"
    assert best_language(["de-DE", "fr-CA", "en"]) == "fr_CA"  # French words, Canadian dates
    # A British browser that also reads some French gets English (werkzeug's best_match
    # gives French here: an exact "fr" beats "en-GB" against the served "en" and "fr").
    assert best_language(["en-GB", "fr"]) == "en_GB"
    assert best_language(["de", "es"]) is None


def test_a_user_s_language_must_have_a_catalogue():
    assert check_language("fr") == "fr" and check_language("fr-BE") == "fr_BE"
    with pytest.raises(ValueError, match="no catalogue for the language 'de'.*en, fr"):
        check_language("de")


def test_figures_and_times_are_written_the_reader_s_way():
    fr, us = screen("fr_FR", "Europe/Paris"), screen("en", "America/New_York")
    assert plain(fr.percent(0.8125)) == "81,2 %" and us.percent(0.8125) == "81.2%"
    assert plain(fr.number(12345)) == "12 345" and us.number(12345) == "12,345"
    assert fr.seconds(4.5) == "4,5 s" and fr.seconds(185) == "3 min 05 s" and us.seconds(None) == "–"
    assert fr.datetime(NOON_UTC) == "24 nov. 2026, 13:00:05"
    assert plain(us.datetime(NOON_UTC)) == "Nov 24, 2026, 7:00:05 AM"
    assert fr.datetime(NOON_UTC, "short") == "24/11/2026 13:00"
    assert fr.skeleton(NOON_UTC, "Md") == "24/11" and us.skeleton(NOON_UTC, "Md") == "11/24"
    assert fr.weekdays()[0] == "lun." and us.weekdays()[6] == "Sun"
    assert screen("en_GB", "UTC").datetime(NOON_UTC) == "24 Nov 2026, 12:00:05"


def test_words_come_from_the_catalogue_and_english_is_the_source():
    assert screen("fr").gettext("Calls") == "Appels"
    assert screen("fr_CA").gettext("Calls") == "Appels"  # no fr_CA catalogue: French's
    assert screen("en").gettext("Calls") == "Calls"
    assert screen("de").gettext("Calls") == "Calls"  # not served: English
    assert screen("fr").gettext("Times are shown in %(zone)s.", zone="UTC") == \
        "Les heures sont données dans le fuseau UTC."


def test_an_unknown_time_zone_is_utc_and_a_terminal_s_language_is_read_as_gettext_does():
    assert screen("fr", "Mars/Olympus").tz.key == "UTC"
    assert terminal_languages({"LANG": "fr_FR.UTF-8"}) == ["fr_FR"]
    assert terminal_languages({"LANGUAGE": "fr_CA:fr", "LANG": "en_US.UTF-8"}) == ["fr_CA", "fr"]
    assert terminal_languages({"LC_ALL": "C.UTF-8", "LANG": "fr_FR.UTF-8"}) == []  # C: no language
    assert terminal_languages({}) == []


def read(path):
    with path.open("rb") as f:
        return read_po(f)


SHIPPED = sorted(p.parent.parent.name for p in catalogue.LOCALES.glob("*/LC_MESSAGES/messages.po"))


@pytest.mark.parametrize("lang", SHIPPED)
def test_a_shipped_language_fills_in_what_the_english_of_each_screen_message_does(lang):
    """test_catalogue.py checks every message is translated; here, that the page's values go
    in: the same %(name)s placeholders (a missing one would hide a figure, a new one fail)."""
    template = read(catalogue.TEMPLATE)
    po = read(catalogue.LOCALES / lang / "LC_MESSAGES" / "messages.po")
    problems = []
    for m in template:
        if not m.id or "python-format" not in m.flags:
            continue
        ids = m.id if isinstance(m.id, tuple) else (m.id,)
        english = set().union(*map(percent_placeholders, ids))
        t = po.get(m.id, context=m.context)
        for s in (t.string if isinstance(t.string, tuple) else (t.string,)) if t else ():
            if s and percent_placeholders(s) - {"num"} != english - {"num"}:
                problems.append(f"{ids[0]!r}: {s!r}")
    assert problems == []


def test_a_broken_translation_shows_the_english_not_an_error(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "de" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    (folder / "messages.po").write_text(
        'msgid ""\nmsgstr "Content-Type: text/plain; charset=utf-8\\n"\n\n'
        'msgid "Times are shown in %(zone)s."\nmsgstr "Zeiten in %(zeitzone)s."\n\n'
        'msgid "Calls"\nmsgstr "Anrufe"\n', "utf-8")
    monkeypatch.setenv(catalogue.EXTRA_LOCALES_ENV, str(tmp_path))
    clear_cache()
    screen.cache_clear()
    try:
        de = screen("de", "UTC")
        assert de.gettext("Calls") == "Anrufe"
        assert de.gettext("Times are shown in %(zone)s.", zone="UTC") == "Times are shown in UTC."
        assert "uses zeitzone, which the English does not have" in caplog.text
    finally:
        monkeypatch.delenv(catalogue.EXTRA_LOCALES_ENV)
        clear_cache()
        screen.cache_clear()
