"""The dashboard in its reader's language and time zone (Flask's test client); the same in a
real browser is in test_dashboard_browser.py."""

from __future__ import annotations

import pytest

from tests.reportutil import scenario
from tests.web.test_dashboard import dash, login, text  # noqa: F401 - the fixture too


@pytest.fixture
def browser_in(dash):  # noqa: F811
    """A logged-in client whose browser asks for the given languages."""
    def make(accept_language: str | None):
        c = dash.test_client()
        if accept_language:
            c.environ_base["HTTP_ACCEPT_LANGUAGE"] = accept_language
        assert login(c).status_code == 302
        return c
    return make


def test_a_french_browser_reads_the_dashboard_in_french(dash, browser_in):  # noqa: F811
    dash.extensions["ivr"].store.record(scenario())
    c = browser_in("fr-FR,fr;q=0.9,en;q=0.5")
    page = c.get("/dashboard/calls/CA_C").get_data(as_text=True)
    assert '<html lang="fr-FR">' in page
    words = text(c.get("/dashboard/calls/CA_C"))
    assert "Vue d'ensemble" in words and "Appels" in words and "Se déconnecter" in words
    assert "Les heures sont données dans le fuseau America/New_York." in words
    assert "24 nov. 2026, 12:00:00" in words  # 17:00 UTC, in New York time, written the French way


def test_the_browser_s_first_served_language_wins_and_english_is_the_default(browser_in):
    # English first and French second: English, although "fr" matches exactly and "en-GB" not.
    assert "Overview" in text(browser_in("en-GB,fr;q=0.5").get("/dashboard/"))
    assert "Overview" in text(browser_in("de-DE,de;q=0.9").get("/dashboard/"))  # no German: English
    assert "Overview" in text(browser_in(None).get("/dashboard/"))
    assert "Vue d'ensemble" in text(browser_in("de-DE,fr-CA;q=0.8").get("/dashboard/"))
